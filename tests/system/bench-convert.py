#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark, not a test (run by bench/convert.sh): what lockroot convert costs in the guest,
for two sizes of the same root (the plain guest disk, and a copy whose root partition and ext4
were grown offline on the host). Per size: lockroot convert itself, the downtime of the reboot
after it (systemctl reboot -> the shell usable again), the initramfs step (checking ->
header written) and the online encryption rate (lockroot convert --status, over a window).
The downtime must not grow with the size: only the encryption, which runs with the system up,
does. Times are under TCG on this host: compare sizes, not absolute seconds with a Pi."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convertlib import (  # noqa: E402
    CHECKING, MiB, WRITING, WRITTEN, State, boot_plain, boot_unattended,
    check_converting_root, convert, expect_step, fresh_tpm, grown_disk, log, machine, plain_disk, wait_status)
from pifw import main  # noqa: E402

GROW_MIB = int(os.environ.get("LOCKROOT_BENCH_GROW_MIB", 2048))  # the second root: this much bigger
WINDOW = int(os.environ.get("LOCKROOT_BENCH_WINDOW", 180))       # seconds of online encryption measured


def measure(st, disk, label):
    tpm = fresh_tpm(st, f"bench-convert-{label}.tpm")
    r = {"label": label}
    with machine(st, disk, None, tpm) as m:
        boot_plain(m, f"bench-convert-{label}-plain")
        _, size = m.sh("blockdev --getsize64 /dev/vda2")
        r["part_mib"] = int(size) / MiB
        _, used = m.sh("df -B1 --output=used / | tail -1")
        r["used_mib"] = int(used) / MiB
        t = time.monotonic()
        plan, _ = convert(m)
        r["cipher"] = plan.get("cipher")
        r["convert"] = time.monotonic() - t
        t_reboot = time.monotonic()
        m.reboot()
        r["shutdown"] = time.monotonic() - t_reboot
        m.power_on(f"bench-convert-{label}-initramfs")
        expect_step(m, CHECKING, 240, "checking")
        t_check = m.elapsed()
        expect_step(m, WRITING, 600, "writing")
        t_write = m.elapsed()
        expect_step(m, WRITTEN, 600, "written")
        t_written = m.elapsed()
        boot_unattended(m)
        t_mounted = m.marks["root mounted"]
        m.wait_shell()
        r["downtime"] = time.monotonic() - t_reboot
        r["to_checking"] = t_check
        r["fsck_shrink"] = t_write - t_check
        r["header"] = t_written - t_write
        r["to_mounted"] = t_mounted - t_written
        r["to_shell"] = m.elapsed() - t_mounted
        check_converting_root(m, need_crypt=False)
        s0 = wait_status(m, 0)
        s1 = wait_status(m, 101, timeout=WINDOW, interval=1)
        r["total_mib"] = (s1.get("total") or s0.get("total") or 0) / MiB
        r["window"] = s1["t"] - s0["t"]
        r["window_mib"] = ((s1.get("done") or 0) - (s0.get("done") or 0)) / MiB
        r["rate"] = r["window_mib"] / r["window"] if r["window"] > 0 else 0
        r["phase"] = s1.get("phase")
        r["at_shell_pct"] = s0.get("percent", 0)
        if s1.get("phase") == "done" and s1.get("seconds"):
            r["encrypt_seconds"] = s1["seconds"]
        log(f"{label}: {r}")
        m.power_off()
    return r


def bench():
    st = State(os.environ.get("BENCH_STATE"))
    results = [measure(st, plain_disk(st, "bench-convert-small.img"), "small")]
    results.append(measure(st, grown_disk(st, "bench-convert-big.img", GROW_MIB), "big"))
    cipher = results[0].get("cipher")
    print(f"\n(b) guest under TCG (-cpu qemu64: no AES instructions; convert chose {cipher}); "
          f"online rate over up to {WINDOW} s\n")
    print("| root partition | used | lockroot convert | downtime (reboot -> shell) | shutdown | power-on -> "
          "checking | e2fsck + resize2fs | header write | -> root mounted | -> shell | online rate | "
          "encryption (est.) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        est = r["total_mib"] / r["rate"] if r["rate"] else 0
        print(f"| {r['part_mib']:.0f} MiB | {r['used_mib']:.0f} MiB | {r['convert']:.0f} s | "
              f"**{r['downtime']:.0f} s** | {r['shutdown']:.0f} s | {r['to_checking']:.1f} s | "
              f"{r['fsck_shrink']:.1f} s | {r['header']:.1f} s | {r['to_mounted']:.1f} s | "
              f"{r['to_shell']:.1f} s | {r['rate']:.1f} MiB/s ({r['window_mib']:.0f} MiB in "
              f"{r['window']:.0f} s{', done' if r['phase'] == 'done' else ''}) | "
              f"{est:.0f} s for {r['total_mib']:.0f} MiB |")


main(bench)
