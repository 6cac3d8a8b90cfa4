#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(b2) Stock systemd-cryptsetup unlocks a lockroot volume through the token plugin, with no
key file and no one to type: the path a systemd-based initrd (dracut) takes. A second LUKS2
volume on a loop device inside the booted guest, enrolled with the guest's TPM."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, State, TestFailure, boot_unattended, enrolled, main)


def test():
    st = State()
    enrolled(st)
    disk = st.copy_disk("enrolled.img", "systemd-cryptsetup.img")
    tpm = st.copy_tpm("tpm", "systemd-cryptsetup.tpm")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("systemd-cryptsetup")
        boot_unattended(m)
        m.wait_shell()
        m.sh("truncate -s 32M /root/data.img && printf data-pass >/root/data.pass && "
             "cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
             "--key-file /root/data.pass /root/data.img && LOOP=$(losetup -f --show /root/data.img) && "
             "echo $LOOP >/root/data.loop")
        m.sh("lockroot enroll $(cat /root/data.loop) --hsm tpm2 --key-file /root/data.pass")
        # No key file ('-'), no terminal: only a token can open it. headless: never ask.
        m.sh("timeout 120 /lib/systemd/systemd-cryptsetup attach data $(cat /root/data.loop) - "
             "headless=true </dev/null", timeout=180)
        _, table = m.sh("dmsetup table data")
        if " crypt " not in f" {table} ":
            raise TestFailure(f"/dev/mapper/data is not dm-crypt: {table}")
        m.sh("/lib/systemd/systemd-cryptsetup detach data")
        m.power_off()


main(test)
