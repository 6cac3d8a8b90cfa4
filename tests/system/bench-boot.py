#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark, not a test: how long a boot takes to get the root mounted when the key comes from
the TPM (lockroot's keyscript) and when it comes from a key file baked into the initramfs (a
keyscript that cats it: for comparison only, never a way to deploy). Same disk, same kernel,
same host; only config.txt's initramfs line differs. Run by bench-boot.sh, which builds the
guest with --keyfile-initrd first.

Times are host wall clock under TCG (the guest is much slower than real hardware, so compare
the ratio, not the seconds): from QEMU start and from the kernel's first line to the
"root mounted" marker, and the unlock stage (initramfs local-top to root mounted).
"""
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, Machine, SoftTPM, State, TestFailure, boot_unattended,
    edit_config, first_boot_enroll, log, main)


def one_boot(st, disk, tpm, name):
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on(name)
        m.expect(r"Linux version", 60, "kernel")
        m.expect(r"Running /scripts/local-top", 120, "local-top")
        boot_unattended(m)
        m.expect(r"uptime ([0-9.]+)s", 10, "uptime")
        up = float(m.child.match.group(1))
        r = {"qemu": m.marks["root mounted"], "kernel": m.marks["root mounted"] - m.marks["kernel"],
             "unlock": m.marks["root mounted"] - m.marks["local-top"], "uptime": up}
        # No need for the rest of the boot: the disk copy is thrown away at the end.
    return r


def main_bench():
    st = State(os.environ["BENCH_STATE"])
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    if not st.guest.get("keyfile_initrd") or st.guest["plain"]:
        raise TestFailure("guest built without --keyfile-initrd or without lockroot's keyscript")
    disk = st.copy_disk("guest/disk.img", "bench.img")
    shutil.rmtree(st.path("tpm"), ignore_errors=True)
    tpm = SoftTPM(st.path("tpm"))
    log("enrolling the TPM (first boot)")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("enroll")
        first_boot_enroll(m, False, st.read("guest/test-passphrase"), st.guest["root_device"])
        m.sh("sync")
        m.power_off()

    def use_initrd(name):
        edit_config(disk, lambda t: "\n".join(
            f"initramfs {name} followkernel" if line.startswith("initramfs ") else line
            for line in t.splitlines()) + "\n")

    results = {"tpm": [], "keyfile": []}
    for i in range(runs):
        for kind, initrd in (("tpm", "initrd.img"), ("keyfile", "initrd-keyfile.img")):
            use_initrd(initrd)
            # The TPM stays attached for both: same machine, only the initramfs differs.
            r = one_boot(st, disk, tpm, f"{kind}-{i + 1}")
            log(f"{kind} run {i + 1}: " + ", ".join(f"{k}={v:.2f}s" for k, v in r.items()))
            results[kind].append(r)

    def med(kind, k):
        return statistics.median(r[k] for r in results[kind])

    cols = [("qemu", "QEMU start → root mounted"), ("kernel", "kernel start → root mounted"),
            ("uptime", "guest uptime at root mounted"), ("unlock", "local-top → root mounted (unlock)")]
    print(f"\nBoot to root mounted, median of {runs} run(s) each, TCG on this host "
          f"(guest {st.guest['kernel']})\n")
    print("| measure | TPM (lockroot keyscript) | key file in initramfs | ratio TPM/key file |")
    print("|---|---:|---:|---:|")
    for k, label in cols:
        t, f = med("tpm", k), med("keyfile", k)
        print(f"| {label} | {t:.2f} s | {f:.2f} s | {t / f:.2f} |")
    print(f"\nconsole logs: {st.logdir}")


main(main_bench)
