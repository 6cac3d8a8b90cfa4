#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(d) No TPM attached: lockroot.timeout=5 added to cmdline.txt on the boot partition (as one
would on a Pi); the keyscript waits about 5 s, says there is no TPM, asks for the recovery key,
and the recovery key opens the root."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    BootConfig, DISK_SERIAL, HOST_UUID, Machine, RECOVERY_PROMPT, ROOT_MOUNTED, State,
    TestFailure, check_root_on_dm_crypt, edit_cmdline, enrolled, log, main)

TIMEOUT = 5


def test():
    st = State()
    enrolled(st)
    key = st.read("recovery-key")
    disk = st.copy_disk("enrolled.img", "no-tpm.img")
    edit_cmdline(disk, lambda c: f"{c} lockroot.timeout={TIMEOUT}")
    if f"lockroot.timeout={TIMEOUT}" not in BootConfig(disk).cmdline:
        raise TestFailure("cmdline.txt edit did not stick")
    with Machine(disk, st.logdir, tpm=None, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("no-tpm")
        m.expect(r"lockroot: [^\r\n]*waiting for the TPM", 240, "wait")
        m.expect(r"lockroot: [^\r\n]*[Nn]o TPM", 60, "no TPM")
        m.expect(RECOVERY_PROMPT, 60, "prompt")
        waited = m.marks["prompt"] - m.marks["wait"]
        log(f"waited {waited:.1f}s for the TPM before asking (lockroot.timeout={TIMEOUT})")
        if not TIMEOUT * 0.6 <= waited <= TIMEOUT + 20:
            raise TestFailure(f"asked after {waited:.1f}s: lockroot.timeout={TIMEOUT} not honoured")
        m.type_secret(key)
        i = m.expect_any([ROOT_MOUNTED, RECOVERY_PROMPT], 120, "root mounted")
        if i != 0:
            raise TestFailure(f"the recovery key was not accepted (log {m.logpath})")
        m.wait_shell()
        check_root_on_dm_crypt(m, st)
        m.power_off()


main(test)
