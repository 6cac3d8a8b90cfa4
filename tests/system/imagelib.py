# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the fleet-image scenarios (9x-image-*) and bench-image.py share: `lockroot image` run on the
host over the plaintext guest disk, the record drive, units (a disk copy, a TPM, an identity),
the first boot's console lines and the checks of a provisioned unit."""

import json
import os
import re
import subprocess
import tempfile

from pifw import (  # noqa: F401  (re-exported)
    DISK_SERIAL, FAST_RECOVERY, HOST_UUID, OTHER_HOST_UUID, ROOT_MOUNTED, Disk, Machine, State,
    TestFailure, _scratch, boot_unattended, boot_with_recovery_key, log, make_usb_disk, run_host)
from migratelib import fresh_tpm  # noqa: F401

LOCKROOT = os.environ.get("LOCKROOT", os.path.join(os.environ.get("BUILD", "build"), "src", "lockroot"))
ROOT = "/dev/vda2"
RECORD_LABEL = "USBP1"             # make_usb_disk's FAT label of partition 1
RECORD_DIR = "lockroot-records"
KEY_FILE = "lockroot-provision.key"
CONF_FILE = "lockroot-provision.json"
CMDLINE_KEY = "lockroot.provision="
# Units: (name, SMBIOS UUID, SD serial). Their records are named by the DMI UUID.
UNITS = {
    "unit1": (HOST_UUID, DISK_SERIAL),
    "unit2": (OTHER_HOST_UUID, "LOCKROOT-SD-0002"),
    "unit3": ("6c6f636b-726f-4f74-8000-0000000000c3", "LOCKROOT-SD-0003"),
    "unit4": ("6c6f636b-726f-4f74-8000-0000000000d4", "LOCKROOT-SD-0004"),
}

# The first boot (src/cmd-provision.c, lib/provision.c).
PROVISIONING = rf"lockroot: provision: provisioning {ROOT} \((\w+)\)"
ENROLLING = r"lockroot: enrolling this unit's tpm2 and a recovery key"
WRITING_RECORD = r"lockroot: writing the provisioning record"
REMOVING_KEYSLOT = r"lockroot: removing the provisioning keyslot"
PROVISIONED = rf"lockroot: provision: {ROOT} is provisioned"
LEFTOVER = r"lockroot: removed (token|keyslot) \d+ left by an interrupted provisioning"
FAILED = r"lockroot: provision: failed: [^\r\n]*"


def make_image(st, name, extra=()):
    """lockroot image over the plaintext guest disk, on the host. Returns (Disk, plan, seconds)."""
    import time
    out = st.path(name)
    if os.path.exists(out):
        os.unlink(out)
    _scratch.append(out)
    argv = [LOCKROOT, "image", st.path("guest", st.guest["plain_disk"]), "-o", out, "--yes", "--json",
            "--record", f"LABEL={RECORD_LABEL}"] + FAST_RECOVERY.split() + list(extra)
    t = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise TestFailure(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    plan = next((e for e in events if e.get("event") == "plan"), {})
    if not any(e.get("event") == "ready" for e in events):
        raise TestFailure(f"lockroot image printed no ready event:\n{p.stdout}")
    log(f"lockroot image {name}: {secs:.1f} s")
    return Disk(out), plan, secs


def record_drive(st, name):
    d = make_usb_disk(st.path(name), 64, [(1, 1, 60, "c", "vfat")])
    _scratch.append(d.path)
    return d


def unit(st, unit_name, image, record, tpm_name=None, disk_name=None):
    """A unit: its own copy of the image, its own TPM, its identity, the record drive."""
    uuid, serial = UNITS[unit_name]
    disk = st.copy_disk(os.path.basename(image.path), disk_name or f"{unit_name}.img")
    tpm = fresh_tpm(st, tpm_name or f"{unit_name}.tpm")
    return disk, tpm, Machine(disk, st.logdir, tpm=tpm, smbios_uuid=uuid, disk_serial=serial,
                              usb_disk=record, usb_serial="LOCKROOT-REC-0001")


def host_luks(disk, fn):
    """Run fn(loopdev) with the unit's root partition (2) on a read-only loop device."""
    start, size = disk.parts[1][0], disk.parts[1][1]
    dev = subprocess.run(["losetup", "-f", "--show", "-r", "-o", str(start), "--sizelimit", str(size),
                          disk.path], capture_output=True, text=True, check=True).stdout.strip()
    try:
        return fn(dev)
    finally:
        subprocess.run(["losetup", "-d", dev])


def luks_json(disk):
    return host_luks(disk, lambda dev: json.loads(subprocess.run(
        ["cryptsetup", "luksDump", "--dump-json-metadata", dev], capture_output=True, text=True,
        check=True).stdout))


def opens(disk, key):
    """Whether key opens a keyslot of the unit's root (cryptsetup on the host, no dm needed)."""
    with tempfile.NamedTemporaryFile("w") as f:
        f.write(key)
        f.flush()
        return host_luks(disk, lambda dev: subprocess.run(
            ["cryptsetup", "open", "--test-passphrase", "--disable-external-tokens", "--key-file",
             f.name, dev], capture_output=True).returncode == 0)


def volume_key(disk, key):
    """The volume key (hex), through a keyslot key opens."""
    with tempfile.NamedTemporaryFile("w") as f:
        f.write(key)
        f.flush()
        out = host_luks(disk, lambda dev: subprocess.run(
            ["cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--disable-external-tokens",
             "--key-file", f.name, dev], capture_output=True, text=True))
    if out.returncode != 0:
        raise TestFailure(f"cryptsetup luksDump --dump-volume-key failed: {out.stderr}")
    m = re.search(r"MK dump:\s*((?:[0-9a-f]{2}\s*)+)", out.stdout)
    if not m:
        raise TestFailure(f"no volume key in:\n{out.stdout}")
    return "".join(m.group(1).split())


def read_record(record, unit_name):
    uuid, _ = UNITS[unit_name]
    name = f"{RECORD_DIR}/dmi-uuid-{uuid}.json"
    data = record.read_boot(name)
    if data is None:
        raise TestFailure(f"no provisioning record {name} on the record drive")
    return json.loads(data)


def first_boot(m, name, timeout=600):
    """Power on a unit from the image: the initramfs provisions it, the root comes up unattended."""
    m.power_on(name)
    state = m.expect(PROVISIONING, 240, "provisioning starts")
    m.expect(PROVISIONED, timeout, "provisioned", fail=FAILED)
    boot_unattended(m)
    m.wait_shell()
    return state


def check_provisioned(m, disk, record, unit_name):
    """Header, boot partition and record of a provisioned unit (host side, QEMU may still run:
    only the header and the boot partition's files are read)."""
    hdr = luks_json(disk)
    types = sorted(t["type"] for t in hdr["tokens"].values())
    if types != ["lockroot", "lockroot-recovery"]:
        raise TestFailure(f"{unit_name}: tokens after provisioning: {types}")
    if len(hdr["keyslots"]) != 2:
        raise TestFailure(f"{unit_name}: keyslots after provisioning: {sorted(hdr['keyslots'])}")
    files = disk.boot_files()
    for f in (KEY_FILE, CONF_FILE):
        if f in files:
            raise TestFailure(f"{unit_name}: {f} is still on the boot partition")
    if CMDLINE_KEY in (disk.read_boot("cmdline.txt") or b"").decode():
        raise TestFailure(f"{unit_name}: {CMDLINE_KEY} still on the kernel command line")
    rec = read_record(record, unit_name)
    uuid, _ = UNITS[unit_name]
    if rec.get("identity", {}).get("dmi-uuid") != uuid:
        raise TestFailure(f"{unit_name}: the record names another unit: {rec.get('identity')}")
    luks_uuid = host_luks(disk, lambda dev: subprocess.run(["cryptsetup", "luksUUID", dev], capture_output=True,
                                                           text=True).stdout.strip())
    if rec.get("luks_uuid") != luks_uuid:
        raise TestFailure(f"{unit_name}: the record's LUKS UUID {rec.get('luks_uuid')} is not {luks_uuid}")
    if not opens(disk, rec["recovery_key"]):
        raise TestFailure(f"{unit_name}: the recovery key in its record does not open its disk")
    return rec
