#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(b) Unattended unlock through the TPM: the enrolled disk on the enrolled host boots with no
typing; / is /dev/mapper/cryptroot on dm-crypt, and the header carries a lockroot token."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, State, boot_unattended, check_root_on_dm_crypt,
    check_token, enrolled, main, TestFailure)


def test():
    st = State()
    enrolled(st)
    disk = st.copy_disk("enrolled.img", "tpm-unlock.img")
    tpm = st.copy_tpm("tpm", "tpm-unlock.tpm")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("tpm-unlock")
        boot_unattended(m)
        m.wait_shell()
        check_root_on_dm_crypt(m, st)
        check_token(m, st)
        # setup-boot finds the LUKS device under the running / by itself, and on this already
        # configured guest plans nothing but the initramfs rebuild.
        _, plan = m.sh("lockroot setup-boot --hsm tpm2 --dry-run")
        dev = st.guest["root_device"]
        for want in (f"Plan for {dev} (/dev/mapper/cryptroot", "keep lockroot token",
                     "no file changes", "update-initramfs -u -k all"):
            if want not in plan:
                raise TestFailure(f"setup-boot --dry-run: no {want!r} in:\n{plan}")
        m.power_off()


main(test)
