#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(g) lockroot migrate to a pre-partitioned drive whose other partitions hold data: -p 2 -s
creates the root partition in the free space between them, --data 256M:/var/log adds an
encrypted partition for the logs; --keep-source keeps the old root (with a warning). The
untouched partitions are byte-identical before and after; /var/log is its own dm-crypt volume,
mounted at boot."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    MARKER, State, TestFailure, boot_plain, boot_unattended, check_new_root, fresh_tpm, log,
    machine, usb_drive, migrate, check_crypt_mount, plain_disk, trial_boot, wait_phase, write_marker)
from pifw import main  # noqa: E402


def test():
    st = State()
    disk = plain_disk(st, "migrate-parts.img")
    # 3 GiB: p1 ext4 (300 MiB) and p3 vfat (400 MiB) hold someone's data; between them, free.
    usb = usb_drive(st, "migrate-parts-usb.img", 3072,
                        [(1, 1, 300, "83", "ext4"), (3, 2600, 400, "c", "vfat")])
    before = {n: usb.partition_sha256(n) for n in (1, 3)}
    tpm = fresh_tpm(st, "migrate-parts.tpm")
    with machine(st, disk, usb, tpm) as m:
        boot_plain(m, "migrate-parts-old-root")
        write_marker(m, disk)
        m.sh("echo lockroot-log-line >/var/log/lockroot-test.log")
        plan, ready = migrate(m, "-x /dev/sda -p 2 -s 1800M --data 256M:/var/log --keep-source")
        vols = {v["mountpoint"]: v for v in plan["volumes"]}
        if vols["/"]["device"] != "/dev/sda2" or vols["/var/log"]["device"] != "/dev/sda4":
            raise TestFailure(f"unexpected plan: {plan}")
        if abs(vols["/"]["size"] - 1800 * 2**20) > 2**20:
            raise TestFailure(f"root partition size {vols['/']['size']}, asked for 1800M")
        trial_boot(m, "migrate-parts-trial", ready)
        boot_unattended(m)
        m.wait_shell()
        check_new_root(m, device="/dev/sda2")
        check_crypt_mount(m, "/var/log", "crypt-var-log", "/dev/sda4", token=False)
        m.sh("grep -q lockroot-log-line /var/log/lockroot-test.log")
        state = wait_phase(m, "done")
        if state.get("erase_done"):
            raise TestFailure(f"--keep-source, but the old root was erased: {state}")
        _, status = m.sh("lockroot status")
        if "NOT encrypted" not in status:
            raise TestFailure(f"lockroot status does not warn about the kept plaintext root:\n{status}")
        m.power_off()
    after = {n: usb.partition_sha256(n) for n in (1, 3)}
    if before != after:
        raise TestFailure(f"partitions not named were changed: {before} -> {after}")
    log("partitions 1 and 3 unchanged: " + ", ".join(f"{k}={v[:12]}" for k, v in after.items()))
    if not disk.search(MARKER.encode()):
        raise TestFailure("--keep-source: the old root's marker should still be on the SD image")


main(test)
