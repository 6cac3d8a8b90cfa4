#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(m) A fleet image: `lockroot image` encrypts the plaintext guest disk once, on the host (no
device-mapper there: libcryptsetup's offline re-encryption on a loop device over the image's root
partition), and leaves a one-time provisioning key on the boot partition. The image is written to
two units with different identities (SMBIOS UUID, SD serial) and different TPMs, and one record
drive (FAT, label USBP1) is plugged into each in turn. At the first boot the initramfs enrolls the
unit's TPM bound to the unit, creates its recovery key, writes the record, removes the
provisioning keyslot and key; the root comes up unattended, and again at the next power-on. Then:
each header holds only the HSM and recovery keyslots (no provisioning token), the key file, the
settings and lockroot.provision= are gone from the boot partition, each record names its unit and
its recovery key opens that unit's disk; unit 1's disk on unit 2 is refused by unit 2's TPM and
boots with the recovery key from unit 1's record; re-enrolled there with that recovery key
(lockroot unenroll --all, lockroot enroll --key-file), it boots unattended in unit 2.

A power cut during the first boot (unit 3, from an image made with --key-out: the provisioning
key is on the record drive, not on the image): cut when the enrolment starts, then again after the
record is written (before the provisioning keyslot goes). Each next boot finishes what is left:
leftovers of the cut attempt removed, a new enrolment, a new record; the unit boots unattended and
ends with exactly one HSM and one recovery keyslot, never with neither key (checked on the image
after each cut: the provisioning key or the HSM and recovery keys open it)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import power_cut  # noqa: E402
from imagelib import (  # noqa: E402
    CMDLINE_KEY, CONF_FILE, ENROLLING, KEY_FILE, LEFTOVER, PROVISIONED, ROOT, UNITS, WRITING_RECORD,
    Machine, State, TestFailure, boot_unattended, boot_with_recovery_key, check_provisioned,
    first_boot, log, luks_json, make_image, opens, read_record, record_drive, unit)
from pifw import _scratch, check_root_on_dm_crypt, main  # noqa: E402,F401


def root_is_crypt(m):
    _, src = m.sh("findmnt -no SOURCE /")
    if src.strip() != "/dev/mapper/cryptroot":
        raise TestFailure(f"/ is on {src.strip()!r}, not /dev/mapper/cryptroot")


def test():
    st = State()
    image, plan, secs = make_image(st, "fleet.img")
    if plan.get("root_part") != 2 or plan.get("unique_volume_key"):
        raise TestFailure(f"unexpected plan: {plan}")
    hdr = luks_json(image)
    if sorted(t["type"] for t in hdr["tokens"].values()) != ["lockroot-provision"] or len(hdr["keyslots"]) != 1:
        raise TestFailure(f"the image's header is not one provisioning keyslot: {hdr['tokens']}, "
                          f"{sorted(hdr['keyslots'])}")
    if KEY_FILE not in image.boot_files() or CMDLINE_KEY not in (image.read_boot("cmdline.txt") or b"").decode():
        raise TestFailure("the image has no provisioning key or no lockroot.provision= on its boot partition")
    key = image.read_boot(KEY_FILE).decode()
    if not opens(image, key):
        raise TestFailure("the provisioning key on the boot partition does not open the image")
    record = record_drive(st, "records.img")

    # -- two units, each its own TPM and identity --------------------------------------------
    recs = {}
    for name in ("unit1", "unit2"):
        disk, tpm, m = unit(st, name, image, record)
        with m:
            before = first_boot(m, f"{name}-first")
            log(f"{name}: provisioned ({before.group(1)!r}) in {m.elapsed():.0f} s after power-on")
            root_is_crypt(m)
            m.sh("sync")
            m.power_off()
        recs[name] = check_provisioned(m, disk, record, name)
        if opens(disk, key):
            raise TestFailure(f"{name}: the provisioning key still opens the disk")
        with m:
            m.power_on(f"{name}-second")
            boot_unattended(m)
            m.wait_shell()
            root_is_crypt(m)
            m.power_off()
        log(f"{name}: record {recs[name]['identity']}, bound to {recs[name]['bound_to']}; next boot unattended")
    if recs["unit1"]["recovery_key"] == recs["unit2"]["recovery_key"]:
        raise TestFailure("both units got the same recovery key")

    # -- unit 1's disk in unit 2 (unit 2's TPM and identity): refused, recovery key boots -----
    d1 = st.path("unit1.img")
    uuid2, serial2 = UNITS["unit2"]
    from pifw import Disk
    m = Machine(Disk(d1), st.logdir, tpm=__import__("pifw").SoftTPM(st.path("unit2.tpm")), smbios_uuid=uuid2,
                disk_serial=serial2)
    with m:
        m.power_on("unit1-disk-in-unit2")
        boot_with_recovery_key(m, recs["unit1"]["recovery_key"])
        m.wait_shell()
        root_is_crypt(m)
        # re-provisioning: this board's HSM replaces the old one, authorised by the recovery key
        m.sh(f"printf '%s' '{recs['unit1']['recovery_key']}' >/run/rk; lockroot unenroll {ROOT} --all && "
             f"lockroot enroll {ROOT} --hsm tpm2 --key-file /run/rk; rm -f /run/rk", timeout=300)
        m.power_off()
        m.power_on("unit1-disk-in-unit2-reenrolled")
        boot_unattended(m)
        m.wait_shell()
        root_is_crypt(m)
        m.power_off()
    if not opens(Disk(d1), recs["unit1"]["recovery_key"]):
        raise TestFailure("after re-enrolling, unit 1's recovery key no longer opens its disk")
    log("unit 1's disk in unit 2: the TPM refused it, unit 1's recorded recovery key booted it; "
        "re-enrolled with that key, it boots unattended in unit 2")

    # -- a power cut during provisioning: twice, then it completes --------------------------
    # Unit 3 comes from an image made with --key-out: the provisioning key is not on the image
    # but on the record drive, where the first boot finds it.
    key_file = st.path("fleet-keyout.key")
    if os.path.exists(key_file):
        os.unlink(key_file)
    image, _, _ = make_image(st, "fleet-keyout.img", ["--key-out", key_file])
    _scratch.append(key_file)
    if KEY_FILE in image.boot_files():
        raise TestFailure("--key-out: the provisioning key is on the image's boot partition anyway")
    with open(key_file) as f:
        key = f.read()
    if not opens(image, key):
        raise TestFailure("the key written by --key-out does not open the image")
    record.write_boot(KEY_FILE, key)
    disk, tpm, m = unit(st, "unit3", image, record)
    with m:
        for point, pattern in (("enrolment started", ENROLLING), ("record written", WRITING_RECORD)):
            m.power_on(f"unit3-cut-{point.split()[0]}")
            m.expect(pattern, 300, point)
            if point == "record written":
                m.expect(r"lockroot: removing the provisioning keyslot|" + PROVISIONED, 120, "after the record")
            power_cut(m)
            hdr = luks_json(disk)
            log(f"unit3: cut after '{point}': keyslots {sorted(hdr['keyslots'])}, tokens "
                f"{sorted(t['type'] for t in hdr['tokens'].values())}")
            rec_ok = False
            try:
                rec_ok = opens(disk, read_record(record, "unit3")["recovery_key"])
            except TestFailure:
                pass
            if not opens(disk, key) and not rec_ok:
                raise TestFailure(f"unit3: after the cut ({point}) neither the provisioning key nor a "
                                  "recorded recovery key opens the disk")
        m.power_on("unit3-resumed")
        m.expect(PROVISIONED, 600, "provisioned after the cuts")
        boot_unattended(m)
        m.wait_shell()
        root_is_crypt(m)
        m.power_off()
    text = open(m.logpath, errors="replace").read()
    import re
    if not re.search(LEFTOVER, text) and "removing the provisioning keyslot" not in text:
        log("unit3: the resumed boot found nothing to remove")
    check_provisioned(m, disk, record, "unit3")
    if opens(disk, key):
        raise TestFailure("unit3: the provisioning key still opens the disk")
    log("unit3: two power cuts during provisioning, then provisioned: one HSM and one recovery keyslot")


if __name__ == "__main__":
    main(test)
