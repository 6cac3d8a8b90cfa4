#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark, not a test: lockroot migrate's copy throughput in the guest against the floor, a
raw dd of the same number of bytes from the SD partition to the USB drive, and dd into a
dm-crypt mapping of the new volume (the floor with the encryption). Run by bench-migrate.sh.
Times are under TCG on this host: compare ratios, not MB/s (a Pi's SD card and USB differ)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    State, TestFailure, boot_plain, events, fresh_tpm, machine, usb_drive, plain_disk, MIGRATE,
    log)
from pifw import main  # noqa: E402


def timed(m, cmd, timeout=1800):
    _, out = m.sh(f"s=$(date +%s.%N); {cmd}; e=$(date +%s.%N); awk \"BEGIN {{ print \\\"T=\\\" $e - $s }}\"",
                  timeout=timeout)
    for line in out.splitlines():
        if line.startswith("T="):
            return float(line[2:])
    raise TestFailure(f"no time from {cmd!r}: {out}")


def bench():
    st = State(os.environ.get("BENCH_STATE"))
    disk = plain_disk(st, "bench-migrate.img")
    usb = usb_drive(st, "bench-migrate-usb.img", 2048, [])
    tpm = fresh_tpm(st, "bench-migrate.tpm")
    with machine(st, disk, usb, tpm) as m:
        boot_plain(m, "bench-migrate")
        total = timed(m, f"{MIGRATE} -x /dev/sda >/root/migrate.json")
        _, out = m.sh("cat /root/migrate.json")
        ev = events(out)
        copy = [e for e in ev if e["event"] == "progress" and e["phase"] == "copy"][-1]
        sync = [e for e in ev if e["event"] == "progress" and e["phase"] == "sync"]
        nbytes, copy_s = copy["bytes"], copy["elapsed"]
        mib = nbytes / 2**20
        count = nbytes // 2**20
        # The floor: the same bytes read from the SD partition, written raw to the USB drive.
        m.sh("sync; echo 3 >/proc/sys/vm/drop_caches")
        dd_raw = timed(m, f"dd if=/dev/vda2 of=/dev/sda bs=1M count={count} conv=fsync status=none")
        # With the encryption: into a dm-crypt mapping of the new volume (its LUKS2 header is
        # at the start of sda1, which the raw dd overwrote: make a fresh one with the TPM).
        m.sh("lockroot format /dev/sda --hsm tpm2 --yes >/dev/null 2>&1 && "
             "lockroot unlock /dev/sda benchcrypt", timeout=300)
        m.sh("sync; echo 3 >/proc/sys/vm/drop_caches")
        dd_crypt = timed(m, f"dd if=/dev/vda2 of=/dev/mapper/benchcrypt bs=1M count={count} "
                            "conv=fsync status=none")
        _, cipher = m.sh("dmsetup table benchcrypt | cut -d' ' -f4")
        m.sh("cryptsetup close benchcrypt")
        m.power_off()
    print(f"\nlockroot migrate vs dd, guest under TCG (-cpu qemu64, no AES instructions: cipher "
          f"{cipher.strip()}), {mib:.0f} MiB of the root's files\n")
    print("| step | time | MiB/s | ratio to raw dd |")
    print("|---|---:|---:|---:|")
    print(f"| dd SD → USB raw (floor) | {dd_raw:.1f} s | {mib / dd_raw:.1f} | 1.00 |")
    print(f"| dd SD → dm-crypt on USB | {dd_crypt:.1f} s | {mib / dd_crypt:.1f} | {dd_crypt / dd_raw:.2f} |")
    print(f"| migrate: rsync copy pass | {copy_s:.1f} s | {mib / copy_s:.1f} | {copy_s / dd_raw:.2f} |")
    if sync:
        print(f"| migrate: second (sync) pass | {sync[-1]['elapsed']:.1f} s | | |")
    print(f"| migrate: whole command (partitions, LUKS2, mkfs, copy, initramfs, fsck) | {total:.1f} s "
          f"| {mib / total:.1f} | {total / dd_raw:.2f} |")
    log(json.dumps({"bytes": nbytes, "copy_s": copy_s, "total_s": total, "dd_raw_s": dd_raw,
                    "dd_crypt_s": dd_crypt}))


main(bench)
