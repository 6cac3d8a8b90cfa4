#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark, not a test (run by bench/image.sh): a fleet image, for two sizes of the same root
(the plain guest disk, and a copy whose root partition and ext4 were grown offline on the host).
Per size: `lockroot image` on the host (the whole command, and its encryption pass: throughput),
then one unit's first boot under QEMU (TCG): power-on -> provisioning starts -> provisioned ->
root mounted -> shell (in service). The time per unit must not grow with the size of the root
(the older golden-disk method copies the whole root to every unit). Times under TCG on this host:
compare the sizes, not the absolute seconds with a Pi."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import grown_disk, plain_disk  # noqa: E402
from imagelib import (  # noqa: E402
    FAST_RECOVERY, LOCKROOT, PROVISIONED, PROVISIONING, RECORD_LABEL, State, TestFailure,
    boot_unattended, log, record_drive, unit)
from pifw import _scratch, main  # noqa: E402

GROW_MIB = int(os.environ.get("LOCKROOT_BENCH_GROW_MIB", 2048))


def image(st, src, out):
    if os.path.exists(out):
        os.unlink(out)
    _scratch.append(out)
    t = time.monotonic()
    p = subprocess.run([LOCKROOT, "image", src.path, "-o", out, "--yes", "--record", f"LABEL={RECORD_LABEL}"]
                       + FAST_RECOVERY.split(), capture_output=True, text=True)
    total = time.monotonic() - t
    if p.returncode != 0:
        raise TestFailure(f"lockroot image failed:\n{p.stderr[-2000:]}")
    m = re.search(r"encrypted ([\d.]+) (\w+) in ([\d.]+) s \((\d+) MiB/s\)", p.stderr)
    if not m:
        raise TestFailure(f"no encryption line in:\n{p.stderr[-2000:]}")
    return total, float(m.group(3)), int(m.group(4))


def measure(st, src, label):
    from pifw import Disk
    out = st.path(f"bench-image-{label}.img")
    r = {"label": label, "root_mib": src.parts[1][1] / (1 << 20)}
    r["image_s"], r["encrypt_s"], r["rate"] = image(st, src, out)
    record = record_drive(st, f"bench-records-{label}.img")
    img = Disk(out)
    disk, tpm, m = unit(st, "unit1", img, record, tpm_name=f"bench-image-{label}.tpm",
                         disk_name=f"bench-image-{label}-unit.img")
    with m:
        m.power_on(f"bench-image-{label}")
        m.expect(PROVISIONING, 240, "provisioning starts")
        m.expect(PROVISIONED, 600, "provisioned")
        boot_unattended(m)
        m.wait_shell()
        r.update({k: m.marks[k] for k in ("provisioning starts", "provisioned", "root mounted", "shell")})
        m.power_off()
    log(f"{label}: {r}")
    return r


def bench():
    st = State()
    results = [measure(st, plain_disk(st, "bench-image-small-src.img"), "small")]
    results.append(measure(st, grown_disk(st, "bench-image-large-src.img", GROW_MIB), "large"))
    print("\n(a) lockroot image on the host (copy, configure, initramfs in a chroot, shrink, encrypt "
          "offline with AES-XTS: this host's libcryptsetup cannot reach Adiantum without AF_ALG)")
    print("| root partition | lockroot image (whole) | encryption pass | throughput |")
    print("|--:|--:|--:|--:|")
    for r in results:
        print(f"| {r['root_mib']:.0f} MiB | {r['image_s']:.1f} s | {r['encrypt_s']:.2f} s | {r['rate']} MiB/s |")
    print("\n(b) one unit's first boot under TCG (s since power-on): the provisioning, and the unit in service")
    print("| root partition | provisioning starts | provisioned | root mounted | shell (in service) | provisioning step |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in results:
        print(f"| {r['root_mib']:.0f} MiB | {r['provisioning starts']:.1f} | {r['provisioned']:.1f} | "
              f"{r['root mounted']:.1f} | {r['shell']:.1f} | {r['provisioned'] - r['provisioning starts']:.1f} |")


if __name__ == "__main__":
    main(bench)
