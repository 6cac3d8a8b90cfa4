#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(e) lockroot migrate refuses bad input before writing anything: the target is the source
disk or a partition of it, the target (a partition of it) is mounted, -s or the drive is too
small for the root, -p beyond what the partition table can hold, the source is not the running
root, no HSM, a malformed --data. Each error's message and exit status are checked, and the
USB drive is byte-identical at the end (and its table after each case)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    SOURCE, State, TestFailure, boot_plain, fresh_tpm, machine, usb_drive, plain_disk)
from pifw import main, log  # noqa: E402

# (arguments, exit status, words of the message)
CASES = [
    (f"-x /dev/vda -m {SOURCE}", 2, "holds the running root"),
    (f"-x /dev/vda2 -m {SOURCE}", 2, "is a partition"),
    (f"-x /dev/sda -m /dev/vda1", 3, "is not the running root"),
    (f"-x /dev/sda -m /dev/vda2 -p 2", 9, "too small for the root"),
    (f"-x /dev/sda -m /dev/vda2 -p 2 -s 100G", 9, "no free space"),
    (f"-x /dev/sda -m /dev/vda2 -p 7", 3, "partition 7 does not exist"),
    (f"-x /dev/sda -m /dev/vda2 -p 2 --hsm tpm2:device:/dev/tpm-absent", 4, "not available"),
    (f"-x /dev/sda -m /dev/vda2 --data 256M", 2, "SIZE:MOUNTPOINT"),
    (f"-x /dev/sda -m /dev/vda2", 1, "give -p 1 to reuse it"),
    (f"-x /dev/nonexistent -m /dev/vda2", 3, "no such device"),
]


def test():
    st = State()
    disk = plain_disk(st, "migrate-bad.img")
    # 512 MiB: partition 1 holds data, ~200 MiB free, too small for the guest's root.
    usb = usb_drive(st, "migrate-bad-usb.img", 512, [(1, 1, 300, "83", "ext4")])
    tpm = fresh_tpm(st, "migrate-bad.tpm")
    with machine(st, disk, usb, tpm) as m:
        boot_plain(m, "migrate-bad-input")
        _, start = m.sh("sha256sum /dev/sda")
        _, table = m.sh("dd if=/dev/sda bs=1M count=1 status=none | sha256sum")

        failed = []

        def case(args, want_rc, words):
            rc, out = m.sh(f"lockroot migrate --yes {args} </dev/null 2>&1", check=False)
            if rc != want_rc or words not in out:
                failed.append(f"lockroot migrate {args}: exit {rc} (want {want_rc}), "
                              f"message should contain {words!r}:\n{out}")
            if m.sh("dd if=/dev/sda bs=1M count=1 status=none | sha256sum")[1] != table:
                raise TestFailure(f"lockroot migrate {args} changed the partition table")
            log(f"{args}: exit {rc}: {out.strip().splitlines()[0] if out.strip() else ''}")

        for args, rc, words in CASES:
            case(args, rc, words)
        # A mounted partition of the target.
        m.sh("mount -o ro /dev/sda1 /mnt")
        case("-x /dev/sda -m /dev/vda2 -p 2", 1, "mounted at /mnt")
        m.sh("umount /mnt")
        if failed:
            raise TestFailure("\n".join(failed))
        # Nothing was written anywhere on the drive, and no migration state was left.
        _, end = m.sh("sha256sum /dev/sda")
        if end != start:
            raise TestFailure("the USB drive changed during the bad-input cases")
        rc, _ = m.sh("test -e /var/lib/lockroot/migrate.json", check=False)
        if rc == 0:
            raise TestFailure("a refused migration left a state file")
        m.power_off()


main(test)
