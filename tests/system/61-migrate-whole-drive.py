#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(f) lockroot migrate to a whole, empty USB drive: the plaintext root on the SD card is copied
to a new LUKS2 volume on /dev/sda1 (MBR created), the trial boot (firmware tryboot) comes up
unattended through the TPM, lockroot-migrate.service makes it the default and erases the old
root (the SD drive passes discards to the image). Every file of the old root matches the new
root (content, owner, mode, xattrs, ACLs, hard links); a marker written to the old root is
nowhere on the SD image afterwards; the committed configuration boots the new root again."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    MARKER, State, TestFailure, boot_plain, boot_unattended, check_new_root, compare_manifest,
    fresh_tpm, machine, usb_drive, manifest, migrate, plain_disk, trial_boot, wait_phase,
    write_marker, log)
from pifw import main  # noqa: E402


def test():
    st = State()
    disk = plain_disk(st, "migrate-whole.img")
    usb = usb_drive(st, "migrate-whole-usb.img", 2048, [])
    tpm = fresh_tpm(st, "migrate-whole.tpm")
    with machine(st, disk, usb, tpm, sd_discard=True) as m:
        boot_plain(m, "migrate-whole-old-root")
        write_marker(m, disk)
        manifest(m, "/root/manifest-before")
        _, dry = m.sh("lockroot migrate -m /dev/vda2 --dry-run")
        for want in ("create an MBR partition table on /dev/sda", "create partition /dev/sda1",
                     "tryboot.txt", "erase the old root /dev/vda2"):
            if want not in dry:
                raise TestFailure(f"--dry-run plan lacks {want!r}:\n{dry}")
        if m.sh("lsblk -no NAME /dev/sda | wc -l")[1].strip() != "1":
            raise TestFailure("--dry-run wrote a partition")
        config_before = disk.read_boot("config.txt")
        plan, ready = migrate(m, "")
        if [v["device"] for v in plan["volumes"]] != ["/dev/sda1"]:
            raise TestFailure(f"unexpected plan: {plan}")
        # Nothing the normal boot reads has changed yet
        if disk.read_boot("config.txt") != config_before:
            raise TestFailure("config.txt changed before the trial boot")
        trial_boot(m, "migrate-whole-trial", ready)
        boot_unattended(m)
        m.wait_shell()
        check_new_root(m)
        state = wait_phase(m, "done")
        if not state.get("erase_done") or state["erase_done"] != state.get("erase_size"):
            raise TestFailure(f"old root not fully erased: {state}")
        log(f"erase: {state.get('erase_discarded')} bytes discarded, "
            f"{state.get('erase_overwritten')} overwritten")
        _, status = m.sh("lockroot status")
        if "Migration of /dev/vda2 to /dev/sda: done" not in status:
            raise TestFailure(f"lockroot status does not report the migration:\n{status}")
        compare_manifest(m, "/root/manifest-before")
        m.power_off()
        if disk.search(MARKER.encode()):
            raise TestFailure("the marker is still on the SD image after the old root was erased")
        boot_files = disk.boot_files()
        for gone in ("tryboot.txt", "lockroot-cmdline.txt", "lockroot-initrd.img"):
            if gone in boot_files:
                raise TestFailure(f"{gone} is still on the boot partition after the commit")
        # The committed configuration (config.txt, cmdline.txt) boots the new root.
        m.power_on("migrate-whole-committed")
        boot_unattended(m)
        m.wait_shell()
        check_new_root(m)
        m.power_off()


main(test)
