#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(b) Unattended unlock through the TPM: the enrolled disk on the enrolled host boots with no
typing; / is /dev/mapper/cryptroot on dm-crypt, and the header carries a lockroot token."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, State, boot_unattended, check_root_on_dm_crypt,
    check_token, enrolled, main)


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
        m.power_off()


main(test)
