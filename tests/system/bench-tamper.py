#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark, not a test (run by bench/tamper.sh): how long a self-destruct takes from the GPIO
edge. The plain guest disk boots under QEMU (TCG) with a swtpm; in the guest a LUKS2 image file
is enrolled with the TPM (lockroot enroll --hsm tpm2 --recovery-key) and armed (not the root),
`lockroot tamper watch` runs, and each trial pulls a gpio-sim line up: the daemon logs the time
from the kernel's edge timestamp to "keys destroyed" (keyslots destroyed, header on disk) and to
"HSM keys done"; the line goes down, the image is enrolled again. Prints a table over
LOCKROOT_BENCH_TRIALS trials (default 7) and their median. Times under TCG on this host: a real
Pi is faster at the CPU work and slower at the SD card."""
import os
import re
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, FAST_RECOVERY, HOST_UUID, Machine, SoftTPM, State, TestFailure, _scratch, boot_unattended,
    log, main)

TRIALS = int(os.environ.get("LOCKROOT_BENCH_TRIALS", 7))
IMG = "/root/bench.img"
DONE = r"keys destroyed ([0-9.]+) ms after the edge \((\d+) keyslots.*\n.*HSM keys done ([0-9.]+) ms"


def bench():
    st = State()
    disk = st.copy_disk(os.path.join("guest", st.guest["plain_disk"]), "bench-tamper.img")
    d = st.path("bench-tamper.tpm")  # a new TPM: the plain disk has no enrolment
    shutil.rmtree(d, ignore_errors=True)
    _scratch.append(d)
    tpm = SoftTPM(d)
    rows = []
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        m.power_on("bench-tamper")
        boot_unattended(m)
        m.wait_shell()
        m.sh("lockroot-test-gpiosim setup")
        m.sh(f"truncate -s 32M {IMG} && printf bench >/root/bench.pass && "
             f"cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
             f"--key-file /root/bench.pass {IMG}")
        m.sh("mkdir -p /etc/lockroot && printf 'line = lockroot-test:5\\nmode = self-destruct\\n"
             "poweroff = no\\n' >/etc/lockroot/tamper.conf")
        for trial in range(1, TRIALS + 1):
            m.sh(f"lockroot enroll {IMG} --hsm tpm2 --recovery-key {FAST_RECOVERY} "
                 f"--key-file /root/bench.pass >/dev/null", timeout=300)
            if trial == 1:
                m.sh(f"lockroot tamper arm --no-start {IMG} >/dev/null && "
                     "(setsid lockroot tamper watch >/root/watch.log 2>&1 &) && "
                     "for i in $(seq 100); do grep -q watching /root/watch.log && break; sleep 0.1; done")
            m.sh("lockroot-test-gpiosim set 5 up; "
                 f"for i in $(seq 300); do [ $(grep -c 'HSM keys done' /root/watch.log) -ge {trial} ] && break; "
                 "sleep 0.1; done; lockroot-test-gpiosim set 5 down")
            _, logtext = m.sh("cat /root/watch.log")
            found = re.findall(DONE, logtext)
            if len(found) < trial:
                raise TestFailure(f"trial {trial}: no 'keys destroyed' line:\n{logtext}")
            ks, n, hsm = found[trial - 1]
            if n != "1":
                raise TestFailure(f"trial {trial}: {n} keyslots destroyed, expected 1")
            m.sh(f"lockroot unlock --test {IMG}", check=False)
            rows.append((trial, float(ks), float(hsm)))
            log(f"trial {trial}: edge -> keys destroyed {ks} ms, -> HSM done {hsm} ms")
        m.power_off()
    print("\n| trial | edge -> keyslots destroyed and synced (ms) | edge -> HSM step done (ms) |")
    print("|---:|---:|---:|")
    for t, ks, hsm in rows:
        print(f"| {t} | {ks:.1f} | {hsm:.1f} |")
    print(f"| median | {statistics.median(r[1] for r in rows):.1f} | {statistics.median(r[2] for r in rows):.1f} |")
    print(f"\n(debounce 20 ms included; tpm2 backend: nothing to destroy inside the TPM; "
          f"guest under TCG, {os.cpu_count()} host cores)")


main(bench)
