#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(f) Boot files: the key bound to what the firmware loads (--bind ...,boot-files).

1. Unattended boot; in the guest the TPM token is replaced by one bound to the DMI UUID, the
   disk serial and the boot files (the boot partition found where it is mounted,
   /boot/firmware); test hooks that copy a kernel and initramfs to the boot partition, as
   raspi-firmware's z50 hooks do on a Pi, are installed.
2. From outside (the host, as someone with the SD card): a parameter is added to cmdline.txt
   and a cpio archive is appended to the initramfs. The boot is refused with both files
   named, the recovery key boots; in the guest the change is kept with
   `lockroot reseal --key-file` (the recovery key). Then the second kernel package's installation scripts run in the guest
   (dpkg-reconfigure: its postinst runs the kernel hooks: the initramfs is rebuilt, both are
   copied to the boot partition, lockroot's hooks reseal).
3. The next boot unlocks unattended, under the new kernel."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, State, TestFailure, boot_unattended, boot_with_recovery_key,
    check_root_on_dm_crypt, edit_cmdline, enrolled, log, main)

# What raspi-firmware's kernel and initramfs hooks do on a Pi (copy to fixed names on the boot
# partition), for this guest's config.txt (kernel=vmlinuz, initramfs initrd.img).
FIRMWARE_HOOKS = (
    "mkdir -p /etc/initramfs/post-update.d && "
    "printf '%s\\n' '#!/bin/sh' 'cp /boot/vmlinuz-$1 /boot/firmware/vmlinuz.new && "
    "mv /boot/firmware/vmlinuz.new /boot/firmware/vmlinuz && sync' >/etc/kernel/postinst.d/z50-test-firmware && "
    "printf '%s\\n' '#!/bin/sh' 'cp \"$2\" /boot/firmware/initrd.img.new && "
    "mv /boot/firmware/initrd.img.new /boot/firmware/initrd.img && sync' "
    ">/etc/initramfs/post-update.d/z50-test-firmware && "
    "chmod 755 /etc/kernel/postinst.d/z50-test-firmware /etc/initramfs/post-update.d/z50-test-firmware && "
    "cat /etc/kernel/postinst.d/z50-test-firmware /etc/initramfs/post-update.d/z50-test-firmware")


def newc_cpio(files):
    """A cpio archive in the kernel's initramfs format (newc), what one appends to an initramfs
    to add or override files in it."""
    out = b""

    def entry(name, data, mode):
        nonlocal out
        n = name.encode() + b"\0"
        fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0]
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        out += hdr + n + b"\0" * ((4 - (len(hdr) + len(n)) % 4) % 4)
        out += data + b"\0" * ((4 - len(data) % 4) % 4)

    for name, data in files.items():
        entry(name, data, 0o100644)
    entry("TRAILER!!!", b"", 0)
    return out


def tokens(m, dev):
    _, out = m.sh(f"lockroot status {dev} --json")
    return re.findall(r'"type"\s*:\s*"lockroot"', out), out


def test():
    st = State()
    enrolled(st)
    key = st.read("recovery-key")
    dev = st.guest["root_device"]
    cloud = st.guest["cloud_kernel"]
    disk = st.copy_disk("enrolled.img", "boot-files.img")
    tpm = st.copy_tpm("tpm", "boot-files.tpm")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("boot-files-enroll")
        boot_unattended(m)
        m.wait_shell()
        _, before = m.sh(f"cryptsetup luksDump {dev} | sed -n '/^Tokens:/,/^Digests:/p'")
        m.sh(f"lockroot enroll {dev} --hsm tpm2 --bind dmi-uuid,disk-serial,boot-files "
             f"--key-file /root/test-passphrase", timeout=300)
        m.sh(f"lockroot unenroll {dev} --token 0")
        _, status = m.sh(f"lockroot status {dev} --json")
        if "boot-files" not in status:
            raise TestFailure(f"status shows no boot-files binding:\n{status}")
        _, tok = m.sh(f"for i in 0 1 2 3; do cryptsetup token export --token-id $i {dev} 2>/dev/null; "
                      f"echo; done | grep '\"type\":\"lockroot\"'")
        want = f'"device":"PARTUUID={st.guest["boot_partuuid"]}"'
        if want not in tok or '"path":"initrd.img"' not in tok or '"path":"cmdline.txt"' not in tok:
            raise TestFailure(f"the token does not record the boot partition and its files "
                              f"({want}):\n{tok}\n(before: {before})")
        _, hooks = m.sh(FIRMWARE_HOOKS)
        if "/boot/firmware/initrd.img.new" not in hooks or "vmlinuz-$1" not in hooks:
            raise TestFailure(f"the test's firmware hooks were not written as meant:\n{hooks}")
        m.power_off()

    # From outside: a kernel command line with a shell, an initramfs with something appended.
    # (A harmless parameter: with init=/bin/sh the recovery boot would end in that shell.)
    edit_cmdline(disk, lambda old: old + " lockroot.outside=1")
    extra = newc_cpio({"planted": b"planted by someone with the card\n"})
    disk.write_boot("initrd.img", disk.read_boot("initrd.img") + extra)

    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("boot-files-changed")
        m.expect(r"lockroot: [^\r\n]*boot file (cmdline\.txt|initrd\.img) changed", 240, "changed file named")
        first = m.child.after
        m.expect(r"lockroot: [^\r\n]*boot file (cmdline\.txt|initrd\.img) changed", 30, "the other file named")
        if ("cmdline.txt" in first) == ("cmdline.txt" in m.child.after):
            raise TestFailure("not both changed files were named")
        boot_with_recovery_key(m, key)
        m.wait_shell()
        check_root_on_dm_crypt(m, st)
        # The change was the owner's: kept with the recovery key.
        # (the recovery key through a shell builtin into tmpfs, removed whatever reseal says)
        _, out = m.sh(f"printf %s '{key}' >/run/rk; lockroot reseal --key-file /run/rk; r=$?; rm -f /run/rk; "
                      f"[ $r = 0 ]", timeout=300)
        found, status = tokens(m, dev)
        if len(found) != 1 or "boot-files" not in status:
            raise TestFailure(f"after reseal --key-file: {status}")
        # A kernel package installed (its maintainer scripts run): hooks rebuild the initramfs,
        # copy kernel and initramfs to the boot partition, and lockroot reseals.
        log(f"dpkg-reconfigure linux-image-{cloud} (the kernel package's postinst and hooks)")
        rc, out = m.sh(f"DEBIAN_FRONTEND=noninteractive dpkg-reconfigure linux-image-{cloud} 2>&1; "
                       f"echo rc=$?", timeout=1500)
        if "rc=0" not in out:
            raise TestFailure(f"the kernel package's postinst failed:\n{out}")
        if "lockroot" not in out:
            raise TestFailure(f"lockroot's hooks did not run:\n{out}")
        m.sh(f"cmp /boot/vmlinuz-{cloud} /boot/firmware/vmlinuz && cmp /boot/initrd.img-{cloud} /boot/firmware/initrd.img")
        _, out = m.sh("lockroot reseal")
        if "nothing to do" not in out:
            raise TestFailure(f"the hooks did not reseal: {out}")
        m.power_off()

    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("boot-files-new-kernel")
        boot_unattended(m)
        m.wait_shell()
        _, uname = m.sh("uname -r")
        if uname.strip() != cloud:
            raise TestFailure(f"booted {uname.strip()!r}, not the new kernel {cloud}")
        _, cmdline = m.sh("cat /proc/cmdline")
        if "lockroot.outside=1" not in cmdline:
            raise TestFailure(f"the command line kept with the recovery key is not the one booted: {cmdline}")
        check_root_on_dm_crypt(m, st)
        m.power_off()


main(test)
