#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(a) First boot: no lockroot token yet, so the keyscript says so and asks (the prompt names the
recovery key); the test passphrase is typed, the system comes up on dm-crypt, and lockroot
enrolls the TPM with a recovery key from inside the guest. Hands on to the other scenarios: the
enrolled disk, the TPM state and the recovery key."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, SoftTPM, State, check_root_on_dm_crypt, check_token,
    first_boot_enroll, main)


def test():
    st = State()
    disk = st.copy_disk("guest/disk.img", "enrolled.img", keep=True)
    shutil.rmtree(st.path("tpm"), ignore_errors=True)
    for f in ("recovery-key", "enrolled.ok"):
        if os.path.exists(st.path(f)):
            os.unlink(st.path(f))
    with Machine(disk, st.logdir, tpm=SoftTPM(st.path("tpm")), smbios_uuid=HOST_UUID,
                 disk_serial=DISK_SERIAL) as m:
        m.power_on("first-boot")
        key = first_boot_enroll(m, st.guest["plain"], st.read("guest/test-passphrase"),
                                st.guest["root_device"])
        check_root_on_dm_crypt(m, st)
        check_token(m, st)
        m.sh("sync")
        m.power_off()
    st.write("recovery-key", key)
    st.write("enrolled.ok", "yes")


main(test)
