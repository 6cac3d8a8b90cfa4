# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the conversion scenarios (7x-convert-*) and bench-convert.py share: the plaintext guest
(no USB drive), the convert command line, lockroot's initramfs console lines, the state that a
refused conversion must leave alone, kill points found on the host side, and the checks in the
guest. Built on migratelib (same plain disk, TPM and machine)."""

import json
import os
import re
import struct
import subprocess
import tempfile
import time

from migratelib import MANIFEST_EXCLUDES as _MIGRATE_EXCLUDES
from pifw import Disk, run_host
from migratelib import (  # noqa: F401  (re-exported for the scenarios)
    FAST_RECOVERY, State, TestFailure, boot_plain, boot_unattended, check_crypt_mount, events,
    fresh_tpm, log, machine, plain_disk, usb_drive)

SOURCE = "/dev/vda2"   # the guest's root (a Pi's /dev/mmcblk0p2, convert's default -m)
BOOT = "/dev/vda1"     # the boot partition, mounted at /boot/firmware
NAME = "cryptroot"
CONVERT = f"lockroot convert -m {SOURCE} {FAST_RECOVERY}"
TEMPLATE = "lockroot-convert.hdr"   # on the boot partition until the conversion is done
RECORD = "lockroot-convert.rec"
CMDLINE_KEY = "lockroot.convert="
STATE_FILE = "/var/lib/lockroot/convert.json"
MiB = 1 << 20
REDUCE = 32 * MiB                   # what the file system gives up (lib/convert.h)
DATA_OFFSET = 16 * MiB              # LUKS2 header + keyslots

# lockroot's initramfs step on the console (src/cmd-convert.c, boot_convert()).
CHECKING = rf"lockroot: convert: checking the file system on {SOURCE}"
SHRINKING = rf"lockroot: convert: shrinking the file system on {SOURCE} by (\d+) MiB"
WRITING = rf"lockroot: convert: writing the LUKS2 header on {SOURCE}"
WRITTEN = r"lockroot: convert: header written; encryption continues after boot"
REPAIRED = rf"lockroot: convert: repaired an interrupted header write on {SOURCE}"
FINISHED_LAST = rf"lockroot: convert: finished the interrupted last step on {SOURCE}"
# The initramfs gave up and booted the plaintext root: never expected in these scenarios.
NOT_STARTED = r"lockroot: convert: cannot [^\r\n]*"

# Changed by the conversion on purpose (crypttab, fstab, initramfs, its state, the service
# link), or by the running system between two manifests: migrate's list, with convert's service.
MANIFEST_EXCLUDES = [
    e.replace("lockroot-migrate.service", "lockroot-convert.service") for e in _MIGRATE_EXCLUDES]
# Written to a file on the plaintext root, then deleted: its bytes stay in free blocks, which
# the in-place encryption must cover too. Built here, so the console never shows it whole.
MARKER = "LOCKROOT-CONVERT-MARKER-" + os.urandom(8).hex()


# ---------------------------------------------------------------------------------------------
# In the guest

def convert(m, args="", timeout=1500):
    """lockroot convert --yes --json in the guest; returns (plan, ready). Fails on an error."""
    t = time.monotonic()
    rc, out = m.sh(f"{CONVERT} --yes --json {args} </dev/null", timeout=timeout, check=False)
    ev = events(out)
    if rc != 0:
        raise TestFailure(f"lockroot convert {args} exited {rc}:\n{out[-4000:]}")
    plan = [e for e in ev if e.get("event") == "plan"]
    ready = [e for e in ev if e.get("event") == "ready"]
    if len(plan) != 1 or len(ready) != 1:
        raise TestFailure(f"lockroot convert --json: want one plan and one ready event:\n{out[-4000:]}")
    if not ready[0].get("recovery_key"):
        raise TestFailure(f"the ready event has no recovery key: {ready[0]}")
    if ready[0].get("reboot") != "systemctl reboot":
        raise TestFailure(f"unexpected reboot command {ready[0].get('reboot')!r}")
    log(f"lockroot convert took {time.monotonic() - t:.0f}s; plan: "
        + json.dumps({k: v for k, v in plan[0].items() if k != "event"}))
    return plan[0], ready[0]


def status(m):
    """lockroot convert --status --json ({} when there is no conversion)."""
    _, out = m.sh("lockroot convert --status --json")
    return _json(out, "lockroot convert --status --json")


def _json(out, what):
    i = out.find("{")
    if i < 0:
        raise TestFailure(f"{what} printed no JSON:\n{out}")
    try:
        return json.loads(out[i:out.rindex("}") + 1])
    except ValueError as e:
        raise TestFailure(f"{what}: bad JSON ({e}):\n{out}")


def wait_status(m, target, timeout=900, interval=0.3):
    """Poll lockroot convert --status --json in the guest (a loop in the guest: no round trip
    per poll) until percent >= target or the phase is done or failed; returns the last status
    and the guest's monotonic seconds when it was read ('t')."""
    n = int(timeout / interval) + 1
    cmd = (f"i=0; while [ $i -lt {n} ]; do s=$(lockroot convert --status --json 2>/dev/null); "
           "p=$(printf '%s' \"$s\" | sed -n 's/.*\"percent\": *\\([0-9.e+-]*\\).*/\\1/p'); "
           "ph=$(printf '%s' \"$s\" | sed -n 's/.*\"phase\": *\"\\([a-z]*\\)\".*/\\1/p'); "
           "case $ph in done|failed) break ;; esac; "
           f"[ -n \"$p\" ] && awk -v p=\"$p\" 'BEGIN {{ exit !(p >= {target}) }}' && break; "
           f"sleep {interval}; i=$((i + 1)); done; "
           "cut -d' ' -f1 /proc/uptime; printf '%s\\n' \"$s\"")
    _, out = m.sh(cmd, timeout=timeout + 120)
    lines = out.strip().splitlines()
    st = _json("\n".join(lines[1:]), "lockroot convert --status --json")
    st["t"] = float(lines[0])
    return st


def wait_phase(m, want, timeout=1500):
    st = wait_status(m, 101, timeout)
    if st.get("phase") != want:
        raise TestFailure(f"conversion phase {st.get('phase')!r}, expected {want!r}: {st}")
    return st


def check_converted_root(m):
    """/ on /dev/mapper/cryptroot, a dm-crypt target on the SD root, lockroot token."""
    check_crypt_mount(m, "/", NAME, SOURCE)


def check_converting_root(m, need_crypt=True):
    """While libcryptsetup reencrypts online, /dev/mapper/cryptroot is a stack of segments
    (the moved first segment, plaintext ones linear, encrypted ones crypt; with -overlay and
    -hotzone-* devices while the reencryption runs): / on /dev/mapper/cryptroot, every leaf the
    SD root, a lockroot token, and (need_crypt: once some data is encrypted) a crypt target in
    the stack. Before the first chunk, all of it is linear (seen right after the header write)."""
    _, src = m.sh("findmnt -no SOURCE /")
    if src.strip() != f"/dev/mapper/{NAME}":
        raise TestFailure(f"/ is on {src.strip()!r}, not /dev/mapper/{NAME}")
    _, out = m.sh(
        "walk() { for s in /sys/class/block/$1/slaves/*; do [ -e \"$s\" ] || continue; "
        "b=${s##*/}; case $b in dm-*) n=$(cat /sys/class/block/$b/dm/name); "
        "echo \"table $n: $(dmsetup table $n | tr '\\n' ';')\"; walk $b ;; *) echo \"leaf $b\" ;; "
        "esac; done; }; "
        f"t=$(readlink -f /dev/mapper/{NAME}); t=${{t##*/}}; "
        f"echo \"table {NAME}: $(dmsetup table {NAME} | tr '\\n' ';')\"; walk $t")
    leaves = {x.split()[1] for x in out.splitlines() if x.startswith("leaf ")}
    if leaves != {os.path.basename(SOURCE)} or (need_crypt and " crypt " not in out):
        raise TestFailure(f"/dev/mapper/{NAME} is not dm-crypt on {SOURCE}:\n{out}")
    _, dump = m.sh(f"cryptsetup luksDump {SOURCE}")
    if not re.search(r"^\s*\d+: lockroot\s*$", dump, re.M):
        raise TestFailure(f"{SOURCE} has no lockroot token:\n{dump}")
    return out


def luks_dump(m):
    _, dump = m.sh(f"cryptsetup luksDump {SOURCE}")
    return dump


def write_marker(m, disk):
    """MARKER in a file on the plaintext root, synced, found on the SD image; then the file is
    deleted (its blocks are free, still holding the marker)."""
    half = len(MARKER) // 2
    m.sh(f"printf '%s%s\\n' '{MARKER[:half]}' '{MARKER[half:]}' >/root/lockroot-marker; sync")
    if not disk.search(MARKER.encode()):
        raise TestFailure("the marker written in the guest is not on the SD image (test broken)")
    m.sh("rm /root/lockroot-marker; sync")
    if not disk.search(MARKER.encode()):
        raise TestFailure("the deleted marker's bytes left the SD image (test cannot check anything)")


def manifest(m, path):
    excl = " ".join(f"'{e}'" for e in MANIFEST_EXCLUDES)
    t = time.monotonic()
    m.sh(f"lockroot-test-manifest / {excl} >{path}", timeout=900)
    log(f"manifest of / in {time.monotonic() - t:.0f}s")


def compare_manifest(m, before):
    manifest(m, "/root/manifest-after")
    _, diff = m.sh(f"diff {before} /root/manifest-after | head -40", check=False)
    _, n = m.sh(f"wc -l <{before}")
    if diff.strip():
        raise TestFailure(f"the root differs from before the conversion:\n{diff}")
    log(f"manifest: {n.strip()} lines identical")


# What a refused conversion must leave alone, as one line per fact (compared as text).
_STATE_SCRIPT = (
    "for f in /boot/firmware/cmdline.txt /boot/firmware/config.txt /etc/crypttab /etc/fstab; do "
    "  printf '%s %s\\n' \"$f\" \"$(sha256sum <$f | cut -c1-16)\"; done; "
    f"for f in /boot/firmware/{TEMPLATE} /boot/firmware/{RECORD} {STATE_FILE} "
    "  /etc/systemd/system/multi-user.target.wants/lockroot-convert.service; do "
    "  [ -e \"$f\" ] && echo \"present $f\"; done; "
    f"printf 'first-KiB %s\\n' \"$(dd if={SOURCE} bs=1024 count=1 iflag=direct status=none | sha256sum | cut -c1-16)\"; "
    f"printf 'type %s\\n' \"$(blkid -p -o value -s TYPE {SOURCE})\"; "
    f"dumpe2fs -h {SOURCE} 2>/dev/null | grep -E '^(Filesystem UUID|Filesystem magic number|Block count|Block size|Filesystem features):'; "
    "ls -1 /boot/firmware | LC_ALL=C sort | tr '\\n' ' '; echo; "
    "ls -1 /boot | grep '^initrd' | while read -r f; do printf '%s %s\\n' \"$f\" \"$(sha256sum </boot/$f | cut -c1-16)\"; done")


def guest_state(m):
    """The boot files, crypttab, fstab, initramfs images, the conversion's files (template,
    record, state, service link: listed when present), the first KiB of the root partition and
    its ext4 superblock's identity and size. The first KiB is never written by ext4; a LUKS2
    header would start there."""
    _, out = m.sh(_STATE_SCRIPT)
    if "Block count:" not in out or "Filesystem UUID:" not in out:
        raise TestFailure(f"dumpe2fs -h {SOURCE} shows no ext4 superblock:\n{out}")
    return out


def diff_state(before, after):
    a, b = before.splitlines(), after.splitlines()
    return [f"- {x}" for x in a if x not in b] + [f"+ {x}" for x in b if x not in a]


# The regions of the root partition that a refused conversion could write and the running
# ext4 never does: the first KiB (boot block: a LUKS2 header starts there), the reserved GDT
# blocks of group 0 (only an online resize touches them; the LUKS2 header and keyslot area cover
# them), and the last 32 MiB (free space on the test root; where the first segment is moved to).
# Read directly from the device (O_DIRECT) before and after each command. The rest of the first
# MiB holds bitmaps, descriptors and inodes that the running system changes any time.
# (A freeze of / would make the whole first MiB comparable, but resize2fs -P, which convert
# runs, does not return while / is frozen.)
def stable_regions(m):
    """A shell function h() printing one checksum of the regions above."""
    _, out = m.sh(f"dumpe2fs {SOURCE} 2>/dev/null | sed -n '/^Group 0:/,/^Group 1:/p'; "
                  f"dumpe2fs -h {SOURCE} 2>/dev/null | grep '^Block size:'")
    bs = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    mt = re.search(r"Reserved GDT blocks at (\d+)-(\d+)", out)
    if not mt:
        raise TestFailure(f"no reserved GDT blocks in group 0 of {SOURCE}:\n{out}")
    r0, r1 = int(mt.group(1)), int(mt.group(2))
    log(f"compared regions of {SOURCE}: bytes 0-1023, blocks {r0}-{r1} of {bs} bytes, last 32 MiB")
    return ("h() { n=$(($(blockdev --getsize64 " + SOURCE + ") / 1048576)); "
            "{ dd if=" + SOURCE + " bs=1024 count=1 iflag=direct status=none; "
            f"dd if={SOURCE} bs={bs} skip={r0} count={r1 - r0 + 1} iflag=direct status=none; "
            "dd if=" + SOURCE + " bs=1M skip=$((n - 32)) count=32 iflag=direct status=none; } "
            "| sha256sum | cut -c1-16; }")


def checked_run(m, h, cmd, timeout=300):
    """Run cmd in the guest (stdin /dev/null); returns (exit status, output, the regions of
    stable_regions() unchanged)."""
    _, out = m.sh(f"{h}; a=$(h); ( {cmd} ) >/run/lr-case.out 2>&1 </dev/null; rc=$?; b=$(h); "
                  "printf '@@RC=%s SAME=%s@@\\n' $rc $([ \"$a\" = \"$b\" ] && echo 1 || echo 0); "
                  "cat /run/lr-case.out; rm -f /run/lr-case.out", timeout=timeout)
    mt = re.search(r"@@RC=(\d+) SAME=(\d)@@\n?", out)
    if not mt:
        raise TestFailure(f"{cmd!r}: no result line:\n{out}")
    return int(mt.group(1)), out[mt.end():], mt.group(2) == "1"


# ---------------------------------------------------------------------------------------------
# On the host: the SD image while the guest runs (QEMU writes through to the file)

def part_offset(disk, n=2):
    return disk.parts[n - 1][0]


def ext4_superblock(disk):
    """(block count, last check time, mount count) of partition 2's ext4 superblock, or None
    when there is none (a LUKS2 header)."""
    with open(disk.path, "rb", buffering=0) as f:
        f.seek(part_offset(disk) + 1024)
        sb = f.read(1024)
    if sb[0x38:0x3a] != b"\x53\xef":
        return None
    blocks_lo, = struct.unpack_from("<I", sb, 0x04)
    mnt_count, = struct.unpack_from("<H", sb, 0x34)
    lastcheck, = struct.unpack_from("<I", sb, 0x40)
    blocks_hi, = struct.unpack_from("<I", sb, 0x150)
    return (blocks_hi << 32 | blocks_lo, lastcheck, mnt_count)


def luks_magic(disk):
    with open(disk.path, "rb", buffering=0) as f:
        f.seek(part_offset(disk))
        return f.read(6) == b"LUKS\xba\xbe"


def poll_host(pred, timeout, what, interval=0.002):
    """Poll a host-side predicate (the guest keeps running); TestFailure after timeout."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TestFailure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def disk_state(disk):
    """What the SD image holds now (guest off): ext4 superblock, LUKS2 header (loadable,
    reencryption requirement), the record and template on the boot partition. For the log,
    and for deciding what the next boot must say."""
    s = {"ext4": ext4_superblock(disk), "luks_magic": luks_magic(disk), "luks_loads": False,
         "reencrypt": None}
    files = disk.boot_files()
    s["record"] = RECORD in files
    s["template"] = TEMPLATE in files
    if s["luks_magic"]:
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(disk.path), prefix=".hdr-") as tmp:
            with open(disk.path, "rb", buffering=0) as f:
                f.seek(part_offset(disk))
                tmp.write(f.read(DATA_OFFSET))
                tmp.flush()
            p = subprocess.run(["cryptsetup", "luksDump", tmp.name], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            s["luks_loads"] = p.returncode == 0
            if p.returncode == 0:
                s["reencrypt"] = "online-reencrypt" in p.stdout.decode(errors="replace")
    return s


# ---------------------------------------------------------------------------------------------
# Power cuts and the initramfs step

# lockroot's initramfs step went wrong or gave up (booting the plaintext root instead).
STEP_FAILED = (r"lockroot: convert: (?:cannot |exit status |[^\r\n]*holds neither)[^\r\n]*")


def power_cut(m):
    """Cut the power now: SIGKILL to QEMU (no orderly QEMU exit that would let the guest run
    on for another moment), then the usual clean-up (swtpm stopped, log closed)."""
    import signal
    if m.child is not None and m.child.isalive():
        os.kill(m.child.pid, signal.SIGKILL)
    m.kill()


def console(m):
    """The current boot's console text so far."""
    return m.logfile.console() if m.logfile else ""


def expect_step(m, pattern, timeout, what):
    """Wait for one of lockroot's initramfs lines; fails when the step reports a failure."""
    i = m.expect_any([pattern, STEP_FAILED], timeout, what)
    if i != 0:
        raise TestFailure(f"lockroot's initramfs step failed while waiting for {what}: "
                          f"{m.child.after!r} (log {m.logpath})")
    return m.child.match


def grown_disk(st, name, extra_mib):
    """A copy of the plain disk with partition 2 and its ext4 extra_mib bigger (offline, host)."""
    d = plain_disk(st, name)
    run_host(["truncate", "-s", f"+{extra_mib}M", d.path])
    run_host(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "-N", "2", d.path],
             input=b", +\n")
    d = Disk(d.path)
    off, size = d.parts[1]
    loop = run_host(["losetup", "-f", "--show", "-o", str(off), "--sizelimit", str(size),
                     d.path]).stdout.decode().strip()
    try:
        run_host(["e2fsck", "-fy", loop])
        run_host(["resize2fs", loop])
    finally:
        run_host(["losetup", "-d", loop])
    return d
