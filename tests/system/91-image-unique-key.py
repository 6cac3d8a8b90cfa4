#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(n) A fleet image made with `lockroot image --unique-volume-key`: two units (own TPM, own
identity) provision at their first boot as in (m), and each then re-encrypts itself online to a
volume key of its own (lockroot-convert.service, libcryptsetup's re-encryption, resumable). After
the re-encryption (phase done, no reencryption requirement left in the header, exactly one HSM and
one recovery keyslot, tokens still pointing at them): the two units' volume keys differ from each
other and from the image's (read on the host through each unit's recorded recovery key and the
image's provisioning key), their files are the same (checksums of the test tree and /usr), and each
boots unattended again. While a unit re-encrypts, a power cut: the next boot opens the volume in
mid-re-encryption through the TPM, and the service resumes to the end."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import power_cut, wait_phase, wait_status  # noqa: E402
from imagelib import (  # noqa: E402
    KEY_FILE, State, TestFailure, boot_unattended, check_provisioned, first_boot, log, luks_json,
    make_image, record_drive, unit, volume_key)
from pifw import main  # noqa: E402

CHECKSUMS = ("cd / && find srv/lockroot-test usr/bin usr/lib/x86_64-linux-gnu -xdev -type f -print0 | sort -z | "
             "xargs -0 sha256sum | sha256sum")


def test():
    st = State()
    image, plan, _ = make_image(st, "fleet-unique.img", ["--unique-volume-key"])
    if not plan.get("unique_volume_key"):
        raise TestFailure(f"the plan does not say unique_volume_key: {plan}")
    image_key = volume_key(image, image.read_boot(KEY_FILE).decode())
    record = record_drive(st, "records-unique.img")
    keys, sums = {}, {}
    for name in ("unit3", "unit4"):
        disk, tpm, m = unit(st, name, image, record)
        with m:
            first_boot(m, f"{name}-first")
            if name == "unit3":
                # a power cut in the middle of the online re-encryption
                wait_status(m, 30, timeout=900)
                power_cut(m)
                log(f"{name}: power cut during the re-encryption")
                m.power_on(f"{name}-resumed")
                boot_unattended(m)
                m.wait_shell()
            wait_phase(m, "done", timeout=1500)
            _, dump = m.sh("cryptsetup luksDump /dev/vda2")
            if "online-reencrypt" in dump:
                raise TestFailure(f"{name}: a reencryption requirement is left:\n{dump}")
            _, sums[name] = m.sh(CHECKSUMS, timeout=600)
            m.power_off()
        check_provisioned(m, disk, record, name)
        hdr = luks_json(disk)
        if len(hdr["digests"]) != 1:
            raise TestFailure(f"{name}: {len(hdr['digests'])} volume key digests after the re-encryption")
        for t in hdr["tokens"].values():
            if [k for k in t["keyslots"] if k not in hdr["keyslots"]]:
                raise TestFailure(f"{name}: token {t['type']} points at a keyslot that is gone: {t['keyslots']}")
        from imagelib import read_record
        keys[name] = volume_key(disk, read_record(record, name)["recovery_key"])
        with m:
            m.power_on(f"{name}-after")
            boot_unattended(m)
            m.wait_shell()
            m.power_off()
        log(f"{name}: re-encrypted to its own volume key; unattended after")
    if len({image_key, keys["unit3"], keys["unit4"]}) != 3:
        raise TestFailure("the units' volume keys are not all different from each other and the image's")
    if sums["unit3"].strip() != sums["unit4"].strip():
        raise TestFailure(f"the units' files differ: {sums}")
    log("two units: three different volume keys (image, unit3, unit4), the same files")


if __name__ == "__main__":
    main(test)
