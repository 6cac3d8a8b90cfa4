#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(h) Power cut during the copy: the board boots the old root (nothing the firmware reads was
changed), lockroot status says the migration was interrupted, and running it again reuses the
partition. Then a trial boot that fails (no TPM attached): the initramfs records why on the boot
partition and reboots, the firmware boots the old root by itself, and lockroot status says what
failed; the trial files are gone."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    MIGRATE, State, TestFailure, boot_plain, fresh_tpm, log, machine, usb_drive, migrate,
    plain_disk, trial_boot)
from pifw import main  # noqa: E402

# lockroot-migrate.service runs at boot; run it once more and wait for it (Type=exec: start
# returns at once), then ask lockroot status.
FINISH_AND_STATUS = ("systemctl start lockroot-migrate.service; "
                     "while systemctl is-active -q lockroot-migrate.service; do sleep 1; done; "
                     "lockroot status")


def test():
    st = State()
    disk = plain_disk(st, "migrate-cut.img")
    usb = usb_drive(st, "migrate-cut-usb.img", 2048, [])
    tpm = fresh_tpm(st, "migrate-cut.tpm")
    with machine(st, disk, usb, tpm) as m:
        boot_plain(m, "migrate-cut-old-root")
        config_before = disk.read_boot("config.txt")
        # Start the migration and cut the power once the copy is under way.
        m.child.sendline(f"{MIGRATE} -x /dev/sda")
        m.expect(r'"phase":"copy","percent":([1-9]\d*)', 900, "copy under way", fail=None)
        log(f"power cut at {m.child.match.group(1)}% of the copy")
        m.kill()
        if disk.read_boot("config.txt") != config_before:
            raise TestFailure("config.txt changed before the copy finished")
        if "tryboot.txt" in disk.boot_files():
            raise TestFailure("tryboot.txt written before the copy finished")
        boot_plain(m, "migrate-cut-after-power-cut")
        # lockroot-migrate.service has looked at the state by the time the shell is up
        _, status = m.sh(FINISH_AND_STATUS)
        if "interrupted" not in status:
            raise TestFailure(f"lockroot status does not say the migration was interrupted:\n{status}")
        # Again: the partition of the interrupted run is reused.
        plan, ready = migrate(m, "-x /dev/sda")
        if plan["volumes"][0]["device"] != "/dev/sda1" or not plan["volumes"][0]["reused"]:
            raise TestFailure(f"the partition of the interrupted run was not reused: {plan}")
        # The trial boot without the TPM: the keyscript cannot unlock, records, reboots.
        t = time.monotonic()
        trial_boot(m, "migrate-cut-trial-no-tpm", ready, no_tpm=True)
        m.expect(r"trial boot failed: rebooting", 240, "trial failure")
        cmd = m.wait_reboot(120)
        log(f"trial failed and rebooted {time.monotonic() - t:.0f}s after the reboot (command {cmd!r})")
        # The firmware boots config.txt again: the old root.
        boot_plain(m, "migrate-cut-back-on-old-root")
        _, status = m.sh(FINISH_AND_STATUS)
        for want in ("failed", "did not come up", "no TPM"):
            if want not in status:
                raise TestFailure(f"lockroot status lacks {want!r}:\n{status}")
        m.power_off()
    left = [f for f in disk.boot_files() if f in ("tryboot.txt", "lockroot-cmdline.txt",
                                                  "lockroot-initrd.img")]
    if left:
        raise TestFailure(f"trial files left on the boot partition: {left}")


main(test)
