#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(i) lockroot convert refuses bad input before writing anything: a missing device, the boot
partition, a partition that is not the running root, one that is already LUKS2, one that is not
ext4 (points at --via), bad usage, a root too full to give up 32 MiB, and (second boot) no TPM.
Each case's exit status and message are checked, and the regions of the root partition that a
conversion writes and the running ext4 does not (first KiB, reserved GDT blocks, last 32 MiB)
read the same before and after it. --dry-run prints the plan and changes nothing either. After all of
them: the boot files, crypttab, fstab, the initramfs images, the first KiB and the ext4
superblock's UUID and size are unchanged, there is no header template, record or state file,
and the USB drive holding the foreign partitions is byte-identical."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import (  # noqa: E402
    FAST_RECOVERY, SOURCE, State, TestFailure, boot_plain, boot_unattended, checked_run,
    diff_state, events, fresh_tpm, guest_state, log, machine, plain_disk, stable_regions,
    usb_drive)
from pifw import main  # noqa: E402

# The USB drive: what -m must not accept. sda1 ext3 (not ext4: shrinking in place is ext4's
# only), sda2 a LUKS2 header (already encrypted), sda3 ext4 (fine, but not the running root).
USB_LAYOUT = [(1, 1, 64, "83", "ext3"), (2, 65, 64, "83", "luks2"), (3, 129, 64, "83", "ext4")]

# (what, arguments after "lockroot convert", exit status, words of the message)
CASES = [
    ("missing device", f"-m /dev/vda9 {FAST_RECOVERY}", 3, "no such device"),
    ("the boot partition", "-m /dev/vda1", 3, "boot partition"),
    ("not the running root", "-m /dev/sda3", 3, "not the running root"),
    ("already LUKS", "-m /dev/sda2", 3, "already"),
    ("not ext4", "-m /dev/sda1", 3, "--via"),
    ("unknown option", f"-m {SOURCE} --frobnicate", 2, "frobnicate"),
    ("extra argument", f"-m {SOURCE} /dev/sda3", 2, "/dev/sda3"),
    ("option without its value", f"-m {SOURCE} --cipher", 2, "cipher"),
    ("bad --name", f"-m {SOURCE} --name 'a/b'", 2, "--name"),
]


def test():
    st = State()
    disk = plain_disk(st, "convert-bad.img")
    usb = usb_drive(st, "convert-bad-usb.img", 256, USB_LAYOUT)
    tpm = fresh_tpm(st, "convert-bad.tpm")
    failed = []
    with machine(st, disk, usb, tpm) as m:
        boot_plain(m, "convert-bad-input")
        usb_before = m.sh("sha256sum </dev/sda")[1]
        before = guest_state(m)

        h = stable_regions(m)

        def case(what, args, want_rc, words):
            rc, out, same = checked_run(m, h, f"lockroot convert --yes {args}")
            first = out.strip().splitlines()[0] if out.strip() else ""
            log(f"{what}: exit {rc}: {first}")
            if not same:
                failed.append(f"{what}: lockroot convert {args} wrote to the first KiB, the reserved "
                              f"GDT blocks or the last 32 MiB of {SOURCE}")
            if rc != want_rc or words not in out:
                failed.append(f"{what}: lockroot convert {args}: exit {rc} (want {want_rc}), "
                              f"message should contain {words!r}:\n{out}")
            return rc, out

        for what, args, rc, words in CASES:
            case(what, args, rc, words)

        # --dry-run: the plan, nothing else (a dry run passes every check, the TPM's too).
        rc, out = case("--dry-run", f"-m {SOURCE} --dry-run", 0, f"encrypt the running root {SOURCE}")
        for want in ("shrink it", "LUKS2 header", "lockroot.convert="):
            if want not in out:
                failed.append(f"--dry-run: the plan lacks {want!r}:\n{out}")
        rc, out = case("--dry-run --json", f"-m {SOURCE} --dry-run --json {FAST_RECOVERY}",
                       0, '"event":"plan"')
        ev = [e.get("event") for e in events(out)]
        if ev != ["plan"]:
            failed.append(f"--dry-run --json: events {ev}, want only a plan:\n{out}")

        # Too full to give up 32 MiB: a file holding all but 16 MiB of the free blocks
        # (fallocate: no data written; root may use the reserved blocks).
        m.sh("rm -f /root/convert-fill; sync; "
             "free=$(($(stat -f -c %f /) * $(stat -f -c %S /))); "
             "fallocate -l $((free - 16 * 1048576)) /root/convert-fill; sync; "
             "stat -f -c 'free blocks %f of %S bytes' /")
        case("no room", f"-m {SOURCE}", 9, "no room")
        m.sh("rm /root/convert-fill; sync")

        after = guest_state(m)
        if after != before:
            failed.append("the refused conversions changed the system:\n"
                          + "\n".join(diff_state(before, after)))
        if m.sh("sha256sum </dev/sda")[1] != usb_before:
            failed.append("the USB drive changed during the bad-input cases")
        m.power_off()

        # No TPM: every check passes but the HSM's; nothing is written.
        m.power_on("convert-bad-no-tpm", no_tpm=True)
        boot_unattended(m)
        m.wait_shell()
        h = stable_regions(m)
        before = guest_state(m)
        case("no TPM", f"-m {SOURCE}", 4, "not available")
        after = guest_state(m)
        if after != before:
            failed.append("lockroot convert without a TPM changed the system:\n"
                          + "\n".join(diff_state(before, after)))
        m.power_off()
    if failed:
        raise TestFailure(f"{len(failed)} problem(s):\n" + "\n".join(failed))


main(test)
