#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(j) lockroot convert encrypts the running root in place, and survives a power cut at every
step. The populated plaintext root (test tree: hard links, symlinks, xattrs, ACLs, sparse files,
device nodes) gets a marker written and deleted (its bytes stay in free blocks), a manifest, then
`lockroot convert --yes --json` and a reboot. The power is cut (QEMU SIGKILL) in the initramfs
while the file system is checked, while it shrinks (resize2fs running: e2fsck's superblock is on
the image), right after "writing the LUKS2 header", in the middle of the header write (the
record on the boot partition, 100000 bytes of the header on the image: lockroot.test_cut=header:N
stops the write there), right after "header written"; then, with the system up, during the online
encryption at >= 10/30/50/70/90 %, and in the finalisation window (lockroot.test_cut=final: the
service kills itself after libcryptsetup's last chunk, before its metadata is final; the power is
cut then). Every power-on must resume where the last one stopped (the cut header write is
repaired, the unfinished last step finished by the initramfs), and every boot after the header
exists comes up unattended through the TPM with / on /dev/mapper/cryptroot. At the end: phase
done, the manifest equal, the marker nowhere on the SD image, the template, record and
lockroot.convert= gone from the boot partition, no reencryption requirement left in the header,
convert refuses to run again (already), and one more power cycle boots unattended."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import (  # noqa: E402
    CHECKING, CMDLINE_KEY, FINISHED_LAST, MARKER, RECORD, MiB, NAME, REDUCE, REPAIRED,
    SHRINKING, SOURCE, TEMPLATE, WRITING, WRITTEN, State, TestFailure, boot_plain,
    boot_unattended, check_converted_root, check_converting_root, compare_manifest, console,
    convert, disk_state, expect_step, ext4_superblock, fresh_tpm, log, luks_dump, machine,
    manifest, plain_disk, poll_host, power_cut, status, wait_phase, wait_status, write_marker)
from pifw import (  # noqa: E402
    BootConfig, edit_cmdline, main)

# Kill points during the online encryption (percent); the last one as close to the end as the
# progress reports allow (libcryptsetup's last step finalises the metadata).
TARGETS = (10, 30, 50, 70, 90, "final")
# Bytes of the header written before the cut: inside the first keyslot area (it starts at 32
# KiB, after the two 16 KiB header copies, and holds 125 KiB or more of key material), so the
# header loads but no key opens it. (At 300000 bytes the keyslots of a 256-bit Adiantum key are
# whole already: a usable header, rightly not repaired.) tests/integration/convert-engine.sh
# cuts at several points.
HEADER_CUT = 100000
HEADER_CUT_LINE = r"lockroot: convert: TEST CUT: the header write stopped short"
# A resumed encryption may redo at most the hotzone that was under way (libcryptsetup commits
# its metadata after each one); it never starts over.
RESUME_SLACK = 64 * MiB


def test():
    st = State()
    disk = plain_disk(st, "convert.img")
    tpm = fresh_tpm(st, "convert.tpm")
    cuts = []      # (kill point, what the image held afterwards)
    times = {}

    def cut(m, point):
        power_cut(m)
        s = disk_state(disk)
        cuts.append((point, s))
        log(f"power cut {len(cuts)} ({point}): image {s}")
        return s

    with machine(st, disk, None, tpm) as m:
        # -- the plaintext root, the marker, the manifest, lockroot convert ------------------
        boot_plain(m, "convert-plain")
        write_marker(m, disk)
        _, used = m.sh(f"dumpe2fs {SOURCE} 2>/dev/null | awk '/^Block count:/ {{n = $3}} "
                       "/^Block size:/ {bs = $3} /^Free blocks:/ {f = $3} "
                       "END {printf \"%d blocks of %d, %d free\", n, bs, f}'")
        log(f"root file system: {used.strip()}")
        manifest(m, "/root/manifest-before")
        cmdline_before = BootConfig(disk).cmdline
        plan, ready = convert(m)
        if plan.get("device") != SOURCE or plan.get("name") != NAME:
            raise TestFailure(f"unexpected plan: {plan}")
        if not plan.get("new_fs_size") or plan["new_fs_size"] > plan["part_size"] - REDUCE:
            raise TestFailure(f"the plan does not shrink the file system by 32 MiB: {plan}")
        m.sh("sync")
        if TEMPLATE not in disk.boot_files():
            raise TestFailure(f"no {TEMPLATE} on the boot partition after lockroot convert")
        cmdline = BootConfig(disk).cmdline
        if CMDLINE_KEY not in cmdline or f"root=/dev/mapper/{NAME}" not in cmdline.split():
            raise TestFailure(f"cmdline.txt after lockroot convert: {cmdline!r}")
        if status(m).get("phase") != "prepared":
            raise TestFailure(f"phase after lockroot convert: {status(m)}")
        _, out = m.sh("lockroot status")
        if f"Conversion of {SOURCE} to /dev/mapper/{NAME}: prepared" not in out:
            raise TestFailure(f"lockroot status does not show the prepared conversion:\n{out}")
        t_reboot = time.monotonic()
        m.reboot()
        times["shutdown"] = time.monotonic() - t_reboot

        # -- initramfs: power cuts before and during the header write ------------------------
        # (1) while checking the file system (e2fsck -fy: about a second here)
        m.power_on("convert-cut-1-fsck")
        expect_step(m, CHECKING, 180, "checking")
        times["power-on to checking"] = m.elapsed()
        cut(m, "1 checking the file system")

        # (2) while shrinking: e2fsck has written its superblock (last check), resize2fs runs
        sb0 = ext4_superblock(disk)
        m.power_on("convert-cut-2-shrink")
        expect_step(m, CHECKING, 180, "checking")
        t = m.elapsed()
        mib = int(expect_step(m, SHRINKING, 30, "shrinking").group(1))
        if mib < 32:
            raise TestFailure(f"shrinking by {mib} MiB, less than 32 MiB")
        poll_host(lambda: ext4_superblock(disk) is None or ext4_superblock(disk)[:2] != sb0[:2],
                  120, "e2fsck to write the superblock")
        times["e2fsck"] = m.elapsed() - t
        s = cut(m, "2 shrinking (e2fsck done, resize2fs running)")
        if s["ext4"] is None:
            raise TestFailure("no ext4 superblock after a cut during the shrink")

        # (3a) right after "writing the LUKS2 header" (the first segment is being moved)
        m.power_on("convert-cut-3-header-start")
        t = m.elapsed()
        expect_step(m, WRITING, 240, "writing the header")
        c = console(m)
        if s["ext4"][0] == sb0[0]:  # resize2fs had not finished: it runs again
            if CHECKING not in c:
                raise TestFailure("the cut shrink was not redone (no 'checking' line)")
            times["e2fsck + resize2fs"] = m.elapsed() - t
        s = cut(m, "3a header write started")

        # (3b) in the middle of the header write: lockroot.test_cut=header:N makes the initramfs
        # write the record and then only the first N bytes of the header (a LUKS2 header that
        # loads, with its keyslot areas cut short: no key opens it), and wait for the cut.
        # Timing the cut from the host instead missed the write (16 MiB, about a second) in
        # most runs.
        edit_cmdline(disk, lambda c: f"{c} lockroot.test_cut=header:{HEADER_CUT}")
        m.power_on("convert-cut-3-header-write")
        expect_step(m, WRITING, 240, "writing the header")
        t = m.elapsed()
        expect_step(m, HEADER_CUT_LINE, 120, "the header write cut short")
        times["header write start (to the cut)"] = m.elapsed() - t
        s = cut(m, f"3b header write cut after {HEADER_CUT} bytes")
        edit_cmdline(disk, lambda c: c.replace(f" lockroot.test_cut=header:{HEADER_CUT}", ""))
        rec = disk.read_boot(RECORD) or b""
        if not rec.startswith(b"moved "):
            raise TestFailure(f"the record on the boot partition after the cut: {rec[:80]!r} "
                              "(it must be on disk before the header write starts)")
        if not s["luks_magic"] or s["ext4"]:
            raise TestFailure(f"the image after the cut header write: {s}")

        # (4) right after "header written"; the cut header write is repaired first
        m.power_on("convert-cut-4-header-written")
        expect_step(m, REPAIRED, 240, "repaired header write")
        expect_step(m, WRITING, 240, "writing the header")
        t = m.elapsed()
        expect_step(m, WRITTEN, 240, "header written")
        times["header write (writing -> written)"] = m.elapsed() - t
        cut(m, "4 header written")
        running = False

        # -- the system up, encrypting online: cuts at 10 ... 98 % ---------------------------
        last = None
        shell_first = None
        boots = 0
        for target in TARGETS + (None,):
            boots += 1
            if target == "final":
                edit_cmdline(disk, lambda c: f"{c} lockroot.test_cut=final")
            if not running:
                m.power_on(f"convert-encrypt-{boots}")
                boot_unattended(m)
            running = False
            t_mounted = m.marks["root mounted"]
            m.wait_shell()
            if shell_first is None:
                shell_first = time.monotonic()
                times["downtime incl. the cuts (reboot -> shell)"] = shell_first - t_reboot
            times.setdefault("power-on -> root mounted (TPM unlock)", t_mounted)
            times.setdefault("root mounted -> shell", m.elapsed() - t_mounted)
            lines = re.findall(r"lockroot: convert: [^\r\n]*", console(m))
            after_final = last is not None and last.get("final")
            allowed = re.compile(FINISHED_LAST) if after_final else None
            bad = [x for x in lines if not (allowed and allowed.search(x))]
            if bad:
                raise TestFailure(f"lockroot initramfs lines in a boot after the header was "
                                  f"written: {bad} (log {m.logpath})")
            if after_final and not lines:
                raise TestFailure(f"the boot after the cut in the finalisation window did not say "
                                  f"'finished the interrupted last step' (log {m.logpath})")
            if lines:
                log(f"boot {boots}: {lines}")
            stack = check_converting_root(m, need_crypt=False)
            log(f"boot {boots}: dm stack at the shell: " + " | ".join(stack.splitlines()))
            # The service's first progress report (until then --status shows 0 of 0; after a
            # cut its first report is where the header says the encryption stands).
            first = wait_status(m, 0.001)
            log(f"boot {boots}: {first.get('phase')} {first.get('percent', 0):.1f} % "
                f"({first.get('done')} of {first.get('total')})")
            if last is not None and first.get("phase") != "done":
                if first.get("done", 0) < last["done"] - RESUME_SLACK:
                    raise TestFailure(f"the encryption did not resume: {first.get('done')} bytes "
                                      f"done after the cut at {last['done']}")
            if target is None:
                break
            if target == "final":
                # The service kills itself after its last chunk, before libcryptsetup makes
                # the metadata final; then the power is cut.
                m.sh("until ! systemctl -q is-active lockroot-convert.service; do sleep 0.2; done",
                     timeout=1500)
                _, out = m.sh("journalctl -b -o cat -u lockroot-convert.service | grep -c 'TEST CUT: killed'",
                              check=False)
                if out.strip() != "1":
                    raise TestFailure("the service stopped without the cut after its last chunk:\n"
                                      + m.sh("journalctl -b -o cat -u lockroot-convert.service | tail -20",
                                             check=False)[1])
                s = cut(m, "finalisation window (after the last chunk, metadata not final)")
                edit_cmdline(disk, lambda c: c.replace(" lockroot.test_cut=final", ""))
                if not s["luks_loads"] or not s["reencrypt"]:
                    raise TestFailure(f"after the cut in the finalisation window the header shows no "
                                      f"reencryption in progress: {s}")
                last = {"final": True, "done": 0, "percent": 100.0}
                continue
            cur = wait_status(m, target)
            if cur.get("phase") == "done":
                log(f"the encryption finished before {target} %")
                break
            if cur.get("phase") != "encrypting":
                raise TestFailure(f"conversion phase {cur.get('phase')!r}: {cur}")
            stack = check_converting_root(m, need_crypt=True)
            if last is None:
                log("dm stack while encrypting: " + " | ".join(stack.splitlines()))
            if last is None:
                _, out = m.sh("lockroot status")
                if f"Conversion of {SOURCE} to /dev/mapper/{NAME}: encrypting" not in out:
                    raise TestFailure(f"lockroot status does not show the encryption:\n{out}")
            last = cur
            cut(m, f"encrypting at {cur['percent']:.1f} % ({cur['rate'] / MiB:.1f} MiB/s)")

        # -- done -----------------------------------------------------------------------------
        t0 = wait_status(m, 0)
        done = wait_phase(m, "done", 1500)
        if t0.get("phase") == "encrypting" and done["t"] > t0["t"]:
            times["online encryption rate, last boot (MiB/s)"] = (
                (done["total"] - t0["done"]) / MiB / (done["t"] - t0["t"]))
        log(f"done: {done}")
        if not done.get("total") or done.get("done") != done.get("total"):
            raise TestFailure(f"the finished conversion reports {done.get('done')} of "
                              f"{done.get('total')} bytes")
        _, out = m.sh("lockroot status")
        if f"Conversion of {SOURCE} to /dev/mapper/{NAME}: done" not in out:
            raise TestFailure(f"lockroot status does not show the finished conversion:\n{out}")
        dump = luks_dump(m)
        if re.search("reencrypt", dump, re.I):
            raise TestFailure(f"the LUKS2 header still has a reencryption requirement:\n{dump}")
        check_converted_root(m)
        _, grown = m.sh(f"echo $(($(blockdev --getsize64 /dev/mapper/{NAME}) / 1048576)) "
                        f"$(($(dumpe2fs -h /dev/mapper/{NAME} 2>/dev/null | awk '/^Block count:/ {{print $3}}') "
                        "* 4096 / 1048576))")
        log(f"/dev/mapper/{NAME} MiB, file system MiB: {grown.strip()}")
        compare_manifest(m, "/root/manifest-before")
        rc, out = m.sh(f"lockroot convert -m {SOURCE} --yes </dev/null 2>&1", check=False)
        if rc != 3 or "already" not in out:
            raise TestFailure(f"lockroot convert on the converted root: exit {rc}, want 3 "
                              f"'already':\n{out}")
        m.power_off()
        if disk.search(MARKER.encode()):
            raise TestFailure("the marker is still on the SD image after the conversion")
        left = [f for f in disk.boot_files() if f.startswith("lockroot-convert")]
        if left:
            raise TestFailure(f"left on the boot partition: {left}")
        cmdline = BootConfig(disk).cmdline
        if CMDLINE_KEY in cmdline or f"root=/dev/mapper/{NAME}" not in cmdline.split():
            raise TestFailure(f"cmdline.txt after the conversion: {cmdline!r} "
                              f"(before: {cmdline_before!r})")

        # -- one more power cycle ---------------------------------------------------------------
        m.power_on("convert-after")
        boot_unattended(m)
        m.wait_shell()
        check_converted_root(m)
        if status(m).get("phase") != "done":
            raise TestFailure(f"phase after a power cycle: {status(m)}")
        m.power_off()

    for k, v in times.items():
        log(f"timing: {k}: {v:.1f}")
    log("cuts: " + "; ".join(
        f"{p} -> {'LUKS2' if s['luks_loads'] else 'ext4' if s['ext4'] else 'neither'}"
        f"{' +record' if s['record'] else ''}" for p, s in cuts))
    if len(cuts) < 10:
        raise TestFailure(f"only {len(cuts)} power cuts happened (want 10 or more)")


main(test)
