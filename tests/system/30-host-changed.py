#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(c) Host changed: the same TPM, another machine (another SMBIOS product UUID). The keyscript
says which component differs, asks for the recovery key, and the recovery key opens the root."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, Machine, OTHER_HOST_UUID, State, boot_with_recovery_key,
    check_root_on_dm_crypt, enrolled, main)


def test():
    st = State()
    enrolled(st)
    key = st.read("recovery-key")
    disk = st.copy_disk("enrolled.img", "host-changed.img")
    tpm = st.copy_tpm("tpm", "host-changed.tpm")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=OTHER_HOST_UUID,
                 disk_serial=DISK_SERIAL) as m:
        m.power_on("host-changed")
        m.expect(r"lockroot: [^\r\n]*DMI product UUID differs from enrolment", 240,
                 "DMI UUID mismatch explained")
        boot_with_recovery_key(m, key)
        m.wait_shell()
        check_root_on_dm_crypt(m, st)
        m.power_off()


main(test)
