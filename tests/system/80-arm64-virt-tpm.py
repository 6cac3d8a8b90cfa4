#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""arm64 with a TPM: QEMU's arm64 virt machine (Cortex-A72, linux-image-cloud-arm64, which has
tpm_tis) with swtpm as tpm-tis-device, the disk from arm64/build-guest.sh: Debian 12 arm64 with
lockroot's arm64 package, the root LUKS2 with a passphrase. The first boot takes the passphrase
and enrolls the TPM with a recovery key, and runs the arm64 package build's unit tests on this
arm64 kernel; the next boot unlocks unattended; with another TPM
the keyscript asks for the recovery key, which opens the root."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    Machine, State, TestFailure, boot_unattended, boot_with_recovery_key, first_boot_enroll,
    log, main)
from migratelib import check_crypt_mount, fresh_tpm  # noqa: E402

VIRT_SERIAL = "LOCKROOT-VIRT-0001"


def check_arm64_package(m):
    _, out = m.sh("uname -m; dpkg-query -W -f '${Architecture} ${Version}\\n' lockroot")
    if out.split()[:2] != ["aarch64", "arm64"]:
        raise TestFailure(f"not lockroot's arm64 package on an aarch64 kernel: {out!r}")


def test():
    st = State(guest="arm64/arm64.json")
    g = st.guest
    disk = st.copy_disk(os.path.join("arm64", g["virt"]), "arm64-virt.img")
    tpm = fresh_tpm(st, "arm64-virt.tpm")
    dev = g["virt_root_device"]
    with Machine(disk, st.logdir, board="virt", tpm=tpm, disk_serial=VIRT_SERIAL) as m:
        m.power_on("arm64-virt-enroll")
        passphrase = open(st.path("arm64", g["passphrase_file"])).read()
        key = first_boot_enroll(m, False, passphrase, dev)
        check_arm64_package(m)
        # The unit tests of the arm64 package build, on an arm64 kernel (MADV_WIPEONFORK too).
        _, out = m.sh("n=0; for t in /usr/local/libexec/lockroot-unit/test-*; do "
                      "TMPDIR=/tmp $t >/tmp/unit.log 2>&1 || { echo \"FAILED $t\"; cat /tmp/unit.log; }; "
                      "n=$((n + 1)); done; echo \"ran $n\"", timeout=600)
        ran = re.search(r"ran (\d+)", out)
        if "FAILED" in out or not ran or int(ran.group(1)) < 9:
            raise TestFailure(f"arm64 unit tests in the guest:\n{out}")
        log(f"arm64 unit tests on the guest's kernel: {ran.group(1)} passed")
        _, dump = m.sh(f"cryptsetup luksDump {dev}")
        if not re.search(r"^\s*\d+: lockroot\s*$", dump, re.M):
            raise TestFailure(f"no lockroot token after enroll:\n{dump}")
        _, st_out = m.sh(f"lockroot status {dev} --json")
        if '"tpm2"' not in st_out:
            raise TestFailure(f"lockroot status shows no tpm2 enrolment:\n{st_out}")
        m.power_off()

        m.power_on("arm64-virt-unattended")
        boot_unattended(m, 300)
        m.wait_shell()
        check_crypt_mount(m, "/", "cryptroot", dev)
        m.power_off()

    # The same disk with another TPM: its seeds differ, the sealed key cannot be loaded.
    other = fresh_tpm(st, "arm64-virt-other.tpm")
    with Machine(disk, st.logdir, board="virt", tpm=other, disk_serial=VIRT_SERIAL) as m:
        m.power_on("arm64-virt-other-tpm")
        m.expect(r"lockroot: TPM at [^\r\n]*refused the sealed key: it was sealed by another TPM",
                 240, "another TPM explained")
        boot_with_recovery_key(m, key)
        m.wait_shell()
        check_crypt_mount(m, "/", "cryptroot", dev)
        m.power_off()
    log("arm64 virt: enrolled, unlocked unattended through the TPM; another TPM: recovery key")


main(test, tools=("qemu-system-aarch64", "swtpm", "mtype", "mcopy", "sfdisk"))
