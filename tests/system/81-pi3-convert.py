#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""An emulated Raspberry Pi 3 (QEMU raspi3b: Debian's arm64 kernel, the bcm2837-rpi-3-b device
tree with the board serial the harness writes into it, as the Pi firmware does) boots its SD
card: Debian 12 arm64 with lockroot's arm64 package, a plaintext root. QEMU has no TPM for this
board, so the HSM is SoftHSM2 through lockroot's PKCS#11 backend, its token on a USB drive (a
stand-in for a USB HSM; a test-only initramfs script mounts it).

The fingerprint comes from the Pi's own sources (board serial from the device tree, the SD
card's CID from /sys/block/mmcblk0/device/cid). `lockroot convert` encrypts the SD root in
place; the board reboots and comes up unattended with / on /dev/mapper/cryptroot, a file
written before is intact. The same SD card and HSM on another board (another serial): the
unlock is refused, the console names the board serial, the recovery key boots."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    FAST_RECOVERY, ROOT_MOUNTED, Machine, State, TestFailure, boot_unattended,
    boot_with_recovery_key, log, main)
from migratelib import check_crypt_mount, events  # noqa: E402
from convertlib import NOT_STARTED, WRITTEN, wait_phase  # noqa: E402

PI_SERIAL = "00000000c0ffee42"
OTHER_SERIAL = "00000000b0a4d017"
QEMU_CID = "aa585951454d552101deadbeef006219"  # QEMU 7.2 hard-codes the emulated card's CID
SOURCE = "/dev/mmcblk0p2"
TOKEN = "pi-hsm"
SOFTHSM = "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"
ADIANTUM = "xchacha12,aes-adiantum-plain64"


def pi(st, disk, hsm, serial):
    return Machine(disk, st.logdir, board="raspi3b", board_serial=serial,
                   usb_disks=[(hsm, "LRHSM-0001")])


def check_fingerprint(m):
    """board-serial and sd-cid, from the device tree and the card, are what lockroot binds."""
    _, out = m.sh("lockroot fingerprint --json")
    fp = {c["name"]: c for c in json.loads(out[out.index("{"):])["components"]}
    want = {"board-serial": (PI_SERIAL, "/proc/device-tree/serial-number"),
            "sd-cid": (QEMU_CID, "/sys/block/mmcblk0/device/cid")}
    for name, (value, source) in want.items():
        c = fp.get(name, {})
        if c.get("value") != value or c.get("source") != source or not c.get("selected"):
            raise TestFailure(f"fingerprint {name}: want {value} from {source}, selected: {c}")


def test():
    st = State(guest="arm64/arm64.json")
    g = st.guest
    disk = st.copy_disk(os.path.join("arm64", g["sd"]), "pi3-sd.img")
    hsm = st.copy_disk(os.path.join("arm64", g["hsm"]), "pi3-hsm.img")
    uri = (f"pkcs11:token={TOKEN};object=lockroot?module-path={SOFTHSM}"
           f"&pin-source=file:{g['hsm_pin_file']}")
    marker = os.urandom(8).hex()
    with pi(st, disk, hsm, PI_SERIAL) as m:
        m.power_on("pi3-plain")
        m.expect(ROOT_MOUNTED, 600, "root mounted")
        m.wait_shell(600)
        _, out = m.sh("uname -m; dpkg-query -W -f '${Architecture}\\n' lockroot; "
                      f"findmnt -no SOURCE /; findmnt -no FSTYPE {g['hsm_mount']}")
        if out.split() != ["aarch64", "arm64", SOURCE, "vfat"]:
            raise TestFailure(f"not the Pi guest expected (arch, package, root, HSM drive): {out!r}")
        check_fingerprint(m)
        m.sh(f"softhsm2-util --init-token --free --label {TOKEN} --pin \"$(cat {g['hsm_pin_file']})\" "
             "--so-pin 12345678 >/dev/null")
        m.sh(f"lockroot keygen --hsm '{uri}'")
        m.sh(f"head -c 4M /dev/urandom >/root/data; echo {marker} >>/root/data; "
             "sha256sum /root/data >/root/data.sha256; sync")
        t = time.monotonic()
        # What a Pi 3 gets by default (it has no AES instructions; QEMU's Cortex-A53 has them,
        # so the default here would be AES-XTS): Adiantum, from the arm64 kernel's modules.
        rc, out = m.sh(f"lockroot convert --hsm '{uri}' --cipher {ADIANTUM} {FAST_RECOVERY} "
                       "--yes --json </dev/null", timeout=2400, check=False)
        ready = [e for e in events(out) if e.get("event") == "ready"]
        if rc != 0 or len(ready) != 1 or not ready[0].get("recovery_key"):
            raise TestFailure(f"lockroot convert exited {rc}:\n{out[-4000:]}")
        key = ready[0]["recovery_key"]
        log(f"lockroot convert (plan, header template, initramfs) took {time.monotonic() - t:.0f}s")
        m.reboot(timeout=300)

        # The initramfs writes the header; the service encrypts the rest online.
        m.power_on("pi3-converting")
        if m.expect_any([WRITTEN, NOT_STARTED], 900, "header written") != 0:
            raise TestFailure(f"the initramfs did not convert: {m.child.after!r} (log {m.logpath})")
        boot_unattended(m, 600)
        m.wait_shell(600)
        done = wait_phase(m, "done", timeout=2400)
        log(f"conversion done: {done}")
        m.reboot(timeout=300)

        m.power_on("pi3-encrypted")
        boot_unattended(m, 600)
        m.wait_shell(600)
        check_crypt_mount(m, "/", "cryptroot", SOURCE)
        _, table = m.sh("dmsetup table cryptroot")
        if f" crypt {ADIANTUM} " not in f" {table} ":
            raise TestFailure(f"cryptroot is not {ADIANTUM}: {table!r}")
        m.sh("sha256sum -c /root/data.sha256")
        _, dump = m.sh(f"cryptsetup luksDump {SOURCE}")
        if "reencrypt" in dump.split("Requirements:")[-1].split("\n")[0]:
            raise TestFailure(f"a reencryption requirement is left in the header:\n{dump}")
        m.power_off(timeout=300)
    if disk.search(marker.encode()):
        raise TestFailure("the file's bytes are on the SD image in plaintext")

    # The same card and HSM drive on another board.
    with pi(st, disk, hsm, OTHER_SERIAL) as m:
        m.power_on("pi3-other-board")
        m.expect(r"lockroot: [^\r\n]*board serial differs from enrolment", 900,
                 "board serial mismatch explained")
        boot_with_recovery_key(m, key, 600)
        m.wait_shell(600)
        check_crypt_mount(m, "/", "cryptroot", SOURCE)
        _, dt = m.sh("tr -d '\\0' </proc/device-tree/serial-number")
        if dt.strip() != OTHER_SERIAL:
            raise TestFailure(f"the other board's serial is {dt.strip()!r}")
        m.power_off(timeout=300)
    log("Pi 3: SD root converted in place, unattended through the PKCS#11 HSM; "
        "another board refused, recovery key booted")


main(test, tools=("qemu-system-aarch64", "fdtput", "mtype", "mcopy", "sfdisk"))
