#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(o) A fleet image for the Raspberry Pi, made on the amd64 host: `lockroot image` takes the arm64
Pi SD image (Debian 12 arm64, lockroot's arm64 package), configures it in a chroot through
qemu-user binfmt (the image's own update-initramfs, running arm64 binaries) and encrypts its root
offline. The unit's HSM is SoftHSM2 on the USB drive, as in (l): its token and key are made on the
host (SoftHSM2's file store is the same on both 64-bit little-endian architectures) before the
first boot, as a facility prepares each unit's HSM; the same drive takes the provisioning record
(QEMU's raspi3b has one USB port; a facility would use a drive of its own). The emulated Pi 3
boots the image: the initramfs provisions it (PKCS#11 key bound to this board's serial and card),
the record names the board serial from the device tree, and the root comes up unattended; its
recovery key from the record opens the card (checked on the host)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    FAST_RECOVERY, Disk, Machine, State, TestFailure, _scratch, boot_unattended, log, main)
from migratelib import check_crypt_mount  # noqa: E402
from imagelib import (  # noqa: E402
    LOCKROOT, PROVISIONED, PROVISIONING, KEY_FILE, luks_json, opens)

PI_SERIAL = "00000000c0ffee43"
SOURCE = "/dev/mmcblk0p2"
TOKEN = "pi-hsm"
PIN = "4711"  # arm64/build-guest.sh: /etc/lockroot/hsm.pin
GUEST_SOFTHSM = "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"
HOST_SOFTHSM = next((p for p in ("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/softhsm/libsofthsm2.so")
                     if os.path.exists(p)), None)


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise TestFailure(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return p


def hsm_on_host(st, hsm):
    """The unit's HSM prepared in the facility: token and key, made on the host, copied to the drive."""
    if not HOST_SOFTHSM:
        raise TestFailure("SoftHSM2 is not installed on the host")
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/tokens")
        with open(f"{d}/conf", "w") as f:
            f.write(f"directories.tokendir = {d}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
        with open(f"{d}/pin", "w") as f:
            f.write(PIN)
        env = dict(os.environ, SOFTHSM2_CONF=f"{d}/conf")
        run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "12345678"],
            env=env)
        run([LOCKROOT, "keygen", "--hsm",
             f"pkcs11:token={TOKEN};object=lockroot?module-path={HOST_SOFTHSM}&pin-source=file:{d}/pin"], env=env)
        tok = os.listdir(f"{d}/tokens")
        menv = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        run(["mcopy", "-s", "-i", hsm.path, f"{d}/tokens/{tok[0]}", "::/tokens/"], env=menv)


def test():
    st = State(guest="arm64/arm64.json")
    g = st.guest
    hsm = st.copy_disk(os.path.join("arm64", g["hsm"]), "pi3-image-hsm.img")
    hsm_on_host(st, hsm)
    uri = (f"pkcs11:token={TOKEN};object=lockroot?module-path={GUEST_SOFTHSM}"
           f"&pin-source=file:{g['hsm_pin_file']}")
    out = st.path("pi3-fleet.img")
    if os.path.exists(out):
        os.unlink(out)
    _scratch.append(out)
    import time
    t = time.monotonic()
    p = run([LOCKROOT, "image", st.path("arm64", g["sd"]), "-o", out, "--yes", "--json", "--hsm", uri,
             "--record", "LABEL=LRHSM"] + FAST_RECOVERY.split())
    log(f"lockroot image of the arm64 Pi image (chroot through qemu-user): {time.monotonic() - t:.0f} s")
    if not any(json.loads(x).get("event") == "ready" for x in p.stdout.splitlines() if x.startswith("{")):
        raise TestFailure(f"no ready event:\n{p.stdout}")
    image = Disk(out)
    if KEY_FILE not in image.boot_files():
        raise TestFailure("no provisioning key on the Pi image's boot partition")
    disk = st.copy_disk("pi3-fleet.img", "pi3-unit.img")
    with Machine(disk, st.logdir, board="raspi3b", board_serial=PI_SERIAL,
                 usb_disks=[(hsm, "LRHSM-0001")]) as m:
        m.power_on("pi3-fleet-first")
        m.expect(PROVISIONING.replace("/dev/vda2", SOURCE), 900, "provisioning starts")
        m.expect(PROVISIONED.replace("/dev/vda2", SOURCE), 900, "provisioned")
        boot_unattended(m, 600)
        m.wait_shell(600)
        check_crypt_mount(m, "/", "cryptroot", SOURCE)
        _, out2 = m.sh("uname -m; lockroot status --json " + SOURCE)
        if not out2.startswith("aarch64"):
            raise TestFailure(f"not the arm64 Pi: {out2[:200]!r}")
        m.power_off(timeout=300)
    hdr = luks_json(disk)
    types = sorted(t["type"] for t in hdr["tokens"].values())
    if types != ["lockroot", "lockroot-recovery"]:
        raise TestFailure(f"tokens after provisioning: {types}")
    backend = [t for t in hdr["tokens"].values() if t["type"] == "lockroot"][0].get("backend")
    if backend != "pkcs11":
        raise TestFailure(f"the unit's key is locked by {backend!r}, not pkcs11")
    # the drive is one FAT file system, no partition table
    p = subprocess.run(["mtype", "-i", hsm.path, f"::lockroot-records/board-serial-{PI_SERIAL}.json"],
                       capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    if p.returncode != 0:
        raise TestFailure(f"no record for board {PI_SERIAL} on the drive: {p.stderr.decode()}")
    rec = json.loads(p.stdout)
    if rec.get("board_serial") != PI_SERIAL or "sd-cid" not in rec.get("identity", {}):
        raise TestFailure(f"record identity: {rec.get('identity')}")
    if not opens(disk, rec["recovery_key"]):
        raise TestFailure("the recorded recovery key does not open the Pi's card")
    if KEY_FILE in disk.boot_files():
        raise TestFailure("the provisioning key is still on the Pi's boot partition")
    log(f"Pi 3 unit provisioned from a fleet image made on amd64: bound to {rec['bound_to']}, "
        f"provisioning {m.marks.get('provisioned', 0) - m.marks.get('provisioning starts', 0):.0f} s")


main(test, tools=("qemu-system-aarch64", "fdtput", "mtype", "mcopy", "sfdisk", "softhsm2-util"))
