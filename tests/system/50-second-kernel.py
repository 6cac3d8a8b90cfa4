#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(e) Second kernel: linux-image-cloud-amd64 was installed after lockroot, so its initramfs was
built by the kernel post-install hooks. config.txt's kernel= and initramfs point at it; the
root unlocks unattended through the TPM under that kernel."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    BootConfig, DISK_SERIAL, HOST_UUID, Machine, State, TestFailure, boot_unattended,
    check_root_on_dm_crypt, edit_config, enrolled, main)


def test():
    st = State()
    enrolled(st)
    kver = st.guest["cloud_kernel"]
    disk = st.copy_disk("enrolled.img", "second-kernel.img")
    tpm = st.copy_tpm("tpm", "second-kernel.tpm")
    files = disk.boot_files()
    for f in (f"vmlinuz-{kver}", f"initrd.img-{kver}"):
        if f not in files:
            raise TestFailure(f"{f} not on the boot partition: {files}")

    def point_at_cloud(text):
        out = []
        for line in text.splitlines():
            if line.startswith("kernel="):
                line = f"kernel=vmlinuz-{kver}"
            elif line.startswith("initramfs "):
                line = f"initramfs initrd.img-{kver} followkernel"
            out.append(line)
        return "\n".join(out) + "\n"

    edit_config(disk, point_at_cloud)
    if BootConfig(disk).kernel != f"vmlinuz-{kver}":
        raise TestFailure("config.txt edit did not stick")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("second-kernel")
        boot_unattended(m)
        m.wait_shell()
        _, uname = m.sh("uname -r")
        if uname.strip() != kver:
            raise TestFailure(f"booted {uname.strip()!r}, not {kver}")
        check_root_on_dm_crypt(m, st)
        m.power_off()


main(test)
