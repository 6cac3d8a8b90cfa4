# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the migration scenarios (6x-migrate-*) share: the plaintext guest with a USB drive, the
migrate command line, the trial boot, and the checks in the guest."""

import json
import os
import re

from pifw import (  # noqa: F401  (re-exported for the scenarios)
    DISK_SERIAL, FAST_RECOVERY, HOST_UUID, ROOT_MOUNTED, Machine, SoftTPM, State, TestFailure,
    boot_unattended, log, make_usb_disk, run_host)

USB_SERIAL = "LOCKROOT-USB-0001"
SOURCE = "/dev/vda2"  # the guest's SD root; on a Pi it is /dev/mmcblk0p2, the default of -m
MIGRATE = f"lockroot migrate -m {SOURCE} --yes --json {FAST_RECOVERY}"
# What changes on a running system between the manifest and the copy, or is changed by the
# migration itself on purpose (crypttab, fstab, the service link, the new initramfs files).
MANIFEST_EXCLUDES = [
    "var/log/*", "var/lib/systemd/*", "var/lib/lockroot", "var/lib/lockroot/*",
    "var/lib/initramfs-tools/*",
    "var/tmp/*", "tmp/*", "var/cache/*", "root/.bash_history", "root/manifest-*",
    "etc/crypttab*", "etc/fstab*", "boot/initrd.img-*",
    "etc/systemd/system/multi-user.target.wants/lockroot-migrate.service",
]
# Written to a file on the old root before the migration; must be gone from the SD image
# after the old root is erased. Built here, so the console never shows it whole.
MARKER = "LOCKROOT-MIGRATE-MARKER-" + os.urandom(8).hex()


def plain_disk(st, name):
    """A private copy of the plaintext guest disk (root on /dev/vda2, no LUKS)."""
    return st.copy_disk(os.path.join("guest", st.guest["plain_disk"]), name)


def usb_drive(st, name, size_mib, layout=()):
    """A USB drive image for one scenario (removed when it passes)."""
    from pifw import _scratch
    d = make_usb_disk(st.path(name), size_mib, layout)
    _scratch.append(d.path)
    return d


def fresh_tpm(st, name):
    tpm_dir = st.path(name)
    run_host(["rm", "-rf", tpm_dir])
    from pifw import _scratch
    _scratch.append(tpm_dir)
    return SoftTPM(tpm_dir)


def machine(st, disk, usb, tpm, sd_discard=False):
    return Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL,
                   usb_disk=usb, usb_serial=USB_SERIAL, sd_discard=sd_discard)


def boot_plain(m, name):
    """Boot the old (plaintext) root: no prompt, / on the SD card's partition 2."""
    m.power_on(name)
    boot_unattended(m)
    m.wait_shell()
    _, src = m.sh("findmnt -no SOURCE /")
    _, dev = m.sh(f"readlink -f {src.strip()}")
    if dev.strip() != SOURCE:
        raise TestFailure(f"expected the old root on {SOURCE}, / is on {src.strip()} ({dev.strip()})")


def write_marker(m, disk):
    """A file on the old root holding MARKER; checked to be on the SD image."""
    half = len(MARKER) // 2
    m.sh(f"printf '%s%s\\n' '{MARKER[:half]}' '{MARKER[half:]}' >/root/lockroot-marker; sync")
    if not disk.search(MARKER.encode()):
        raise TestFailure("the marker written in the guest is not on the SD image (test broken)")


def events(out):
    """The JSON event lines of lockroot migrate --json."""
    ev = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"event"' in line:
            try:
                ev.append(json.loads(line))
            except ValueError:
                pass
    return ev


def migrate(m, args, timeout=1500):
    """Run lockroot migrate in the guest; returns (plan, ready) events. Fails on error."""
    rc, out = m.sh(f"{MIGRATE} {args}", timeout=timeout, check=False)
    ev = events(out)
    if rc != 0:
        raise TestFailure(f"lockroot migrate {args} exited {rc}:\n{out[-4000:]}")
    plan = [e for e in ev if e["event"] == "plan"]
    ready = [e for e in ev if e["event"] == "ready"]
    progress = [e for e in ev if e["event"] == "progress"]
    if not plan or not ready:
        raise TestFailure(f"lockroot migrate --json printed no plan/ready event:\n{out[-4000:]}")
    if not any(p.get("phase") == "copy" for p in progress):
        raise TestFailure(f"no copy progress events:\n{out[-4000:]}")
    if not ready[0].get("recovery_key"):
        raise TestFailure("the ready event has no recovery key")
    copy = [p for p in progress if p.get("phase") == "copy"]
    log(f"copy: {copy[-1].get('elapsed')} s for {copy[-1].get('bytes')} bytes; "
        f"{len(progress)} progress events")
    return plan[0], ready[0]


def trial_boot(m, name, ready, no_tpm=False):
    """Reboot as lockroot said, into the firmware's tryboot; returns after power-on."""
    if ready.get("reboot") != "systemctl reboot '0 tryboot'":
        raise TestFailure(f"unexpected reboot command {ready.get('reboot')!r}")
    cmd = m.reboot("0 tryboot")
    if cmd != "0 tryboot":
        raise TestFailure(f"the kernel restarted with command {cmd!r}, not '0 tryboot'")
    m.power_on(name, no_tpm=no_tpm)


def check_crypt_mount(m, mountpoint, name, device, token=True):
    """mountpoint is mounted from /dev/mapper/name, a dm-crypt target on device (with a
    lockroot token in its header when token)."""
    _, src = m.sh(f"findmnt -no SOURCE {mountpoint}")
    if src.strip() != f"/dev/mapper/{name}":
        raise TestFailure(f"{mountpoint} is on {src.strip()!r}, not /dev/mapper/{name}")
    _, table = m.sh(f"dmsetup table {name}")
    if " crypt " not in f" {table} ":
        raise TestFailure(f"dmsetup table {name}: not a crypt target: {table!r}")
    deps = slaves(m, name)
    if deps != [os.path.basename(device)]:
        raise TestFailure(f"/dev/mapper/{name} is on {deps}, not {device}")
    if token:
        _, dump = m.sh(f"cryptsetup luksDump {device}")
        if not re.search(r"^\s*\d+: lockroot\s*$", dump, re.M):
            raise TestFailure(f"{device} has no lockroot token:\n{dump}")


def check_new_root(m, name="cryptroot", device="/dev/sda1"):
    check_crypt_mount(m, "/", name, device)


def slaves(m, name):
    """The block devices under /dev/mapper/name."""
    _, deps = m.sh(f"ls /sys/class/block/$(basename $(readlink -f /dev/mapper/{name}))/slaves")
    return deps.split()


def wait_phase(m, want, timeout=900):
    """Poll lockroot migrate --status --json in the guest until the phase is want."""
    _, out = m.sh(
        f"for i in $(seq {timeout}); do p=$(lockroot migrate --status --json | "
        f"sed -n 's/.*\"phase\": *\"\\([a-z]*\\)\".*/\\1/p'); "
        f"[ \"$p\" = {want} ] && break; case $p in failed) break ;; esac; sleep 1; done; "
        f"lockroot migrate --status --json", timeout=timeout + 60)
    j = json.loads(out[out.index("{"):])
    if j.get("phase") != want:
        raise TestFailure(f"migration phase {j.get('phase')!r}, expected {want!r}: {j}")
    return j


def manifest(m, path):
    excl = " ".join(f"'{e}'" for e in MANIFEST_EXCLUDES)
    m.sh(f"lockroot-test-manifest / {excl} >{path}", timeout=900)


def compare_manifest(m, before):
    """The new root's manifest equals the old root's (taken before the migration)."""
    manifest(m, "/root/manifest-after")
    rc, diff = m.sh(f"diff {before} /root/manifest-after | head -40", check=False)
    _, n = m.sh(f"wc -l <{before}")
    if diff.strip():
        raise TestFailure(f"the new root differs from the old one:\n{diff}")
    log(f"manifest: {n.strip()} lines identical")
