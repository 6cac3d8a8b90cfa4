#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(k) lockroot convert --via: the SD root encrypted in place through a staging copy on a USB
drive, for two units with one staging drive.

Unit 1 (plain guest disk, empty USB drive, its own TPM): `convert --via /dev/sda` creates the
staging partition and copies the root to it; the trial boot (tryboot) comes up on the staging
root, lockroot-convert-via.service makes it the default, copies the SD root again, erases it,
makes it LUKS2 (TPM), copies the root back and reboots into a trial of the encrypted root,
which it then commits. / is /dev/mapper/cryptroot on /dev/vda2, unlocked unattended; every file
matches the old root; a marker written to the old root is nowhere in plaintext on the SD image;
the staging partition still holds its copy.
Unit 2 (a fresh plain disk, the SAME USB drive, another TPM): the staging partition is reused
and rsync transfers almost nothing; then the same conversion."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migratelib import (  # noqa: E402
    FAST_RECOVERY, MANIFEST_EXCLUDES, MARKER, SOURCE, State, TestFailure, boot_plain,
    boot_unattended, check_crypt_mount, events, fresh_tpm, log, machine, plain_disk, usb_drive,
    write_marker)
from pifw import main  # noqa: E402

CONVERT = f"lockroot convert --via /dev/sda -m {SOURCE} --yes --json {FAST_RECOVERY}"
EXCLUDES = MANIFEST_EXCLUDES + [
    "etc/systemd/system/multi-user.target.wants/lockroot-convert-via.service"]
# unit 2: what may differ between two units booted from the same image (logs, the manifest
# file, systemd's state) is all rsync may transfer
REUSE_MAX_BYTES = 64 << 20


class Clock:
    def __init__(self, unit):
        self.unit, self.t = unit, time.monotonic()
        self.steps = []

    def step(self, what):
        now = time.monotonic()
        self.steps.append((what, now - self.t))
        log(f"unit {self.unit}: {what}: {now - self.t:.0f} s")
        self.t = now


def manifest(m, path):
    excl = " ".join(f"'{e}'" for e in EXCLUDES)
    m.sh(f"lockroot-test-manifest / {excl} >{path}", timeout=900)


def status(m):
    import json
    _, out = m.sh("lockroot convert --via-status --json")
    return json.loads(out[out.index("{"):])


def service_log(m):
    rc, out = m.sh("journalctl -b -u lockroot-convert-via --no-pager | tail -40", check=False)
    return out


def convert(m):
    rc, out = m.sh(CONVERT, timeout=1500, check=False)
    ev = events(out)
    if rc != 0:
        raise TestFailure(f"lockroot convert --via exited {rc}:\n{out[-4000:]}")
    plan = [e for e in ev if e["event"] == "plan"]
    ready = [e for e in ev if e["event"] == "ready"]
    if not plan or not ready:
        raise TestFailure(f"no plan/ready event:\n{out[-4000:]}")
    if not ready[0].get("recovery_key"):
        raise TestFailure("the ready event has no recovery key")
    if ready[0].get("reboot") != "systemctl reboot '0 tryboot'":
        raise TestFailure(f"unexpected reboot command {ready[0].get('reboot')!r}")
    return plan[0], ready[0]


def unit(st, n, usb, reuse):
    c = Clock(n)
    disk = plain_disk(st, f"convert-via-{n}.img")
    tpm = fresh_tpm(st, f"convert-via-{n}.tpm")
    with machine(st, disk, usb, tpm, sd_discard=True) as m:
        boot_plain(m, f"convert-via-{n}-old-root")
        c.step("boot of the plain root")
        write_marker(m, disk)
        manifest(m, "/root/manifest-before")
        c.step("manifest")
        if not reuse:
            _, dry = m.sh("lockroot convert --via /dev/sda -m /dev/vda2 --dry-run")
            for want in ("create partition /dev/sda1", "NOT ENCRYPTED", "tryboot.txt", "ERASE /dev/vda2"):
                if want not in dry:
                    raise TestFailure(f"--dry-run plan lacks {want!r}:\n{dry}")
            if m.sh("lsblk -no NAME /dev/sda | wc -l")[1].strip() != "1":
                raise TestFailure("--dry-run wrote a partition")
        config_before = disk.read_boot("config.txt")
        plan, ready = convert(m)
        c.step(f"convert --via (staging copy: {ready.get('staged_bytes')} bytes of file data, "
               f"{ready.get('staged_sent')} sent)")
        if plan.get("staging") != "/dev/sda1" or bool(plan.get("staging_reused")) != reuse:
            raise TestFailure(f"unexpected plan (reuse expected: {reuse}): {plan}")
        if reuse and ready["staged_bytes"] > REUSE_MAX_BYTES:
            raise TestFailure(f"the reused staging partition took {ready['staged_bytes']} bytes "
                              f"(at most {REUSE_MAX_BYTES} expected)")
        if disk.read_boot("config.txt") != config_before:
            raise TestFailure("config.txt changed before the trial boot")

        # Trial boot of the staging root; its service takes over and reboots by itself.
        if m.reboot("0 tryboot") != "0 tryboot":
            raise TestFailure("the kernel did not restart with '0 tryboot'")
        m.power_on(f"convert-via-{n}-staging")
        boot_unattended(m)
        m.wait_shell()
        _, src = m.sh("readlink -f $(findmnt -no SOURCE /)")
        if src.strip() != "/dev/sda1":
            raise TestFailure(f"the staging trial boot has / on {src.strip()}, not /dev/sda1")
        c.step("staging trial boot")
        # The service prints to the console: fail at once on an error, not after the timeout.
        i = m.expect_any(["it is retried at the next boot", r"reboot: Restarting system"], 1800,
                         "service on the staging root", fail=None)
        if i == 0:
            raise TestFailure(f"the service on the staging root failed:\n{service_log(m)}")
        cmd = m.wait_reboot(120)
        if cmd != "0 tryboot":
            raise TestFailure(f"the service ended the staging boot with {cmd!r}, not a tryboot "
                              f"(log {m.logpath})")
        c.step("service on the staging root (resync, erase, LUKS2, copy back, initramfs)")

        m.power_on(f"convert-via-{n}-encrypted")
        boot_unattended(m)
        m.wait_shell()
        check_crypt_mount(m, "/", "cryptroot", SOURCE)
        _, out = m.sh("for i in $(seq 300); do lockroot convert --via-status --json | "
                      "grep -Eq '\"phase\": *\"done\"' && break; sleep 1; done", timeout=400)
        state = status(m)
        if state.get("phase") != "done":
            raise TestFailure(f"conversion phase {state.get('phase')!r}: {state}\n{service_log(m)}")
        log(f"unit {n}: erase {state.get('erase_discarded')} bytes discarded, "
            f"{state.get('erase_overwritten')} overwritten; resync {state.get('resync_bytes')} bytes")
        c.step("encrypted trial boot, committed")
        manifest(m, "/root/manifest-after")
        rc, diff = m.sh("diff /root/manifest-before /root/manifest-after | head -40", check=False)
        if diff.strip():
            raise TestFailure(f"the encrypted root differs from the old one:\n{diff}")
        _, lines = m.sh("wc -l </root/manifest-before")
        log(f"unit {n}: manifest {lines.strip()} lines identical")
        # The staging partition keeps its copy.
        _, label = m.sh("blkid -o value -s LABEL /dev/sda1")
        if label.strip() != "lockroot-stage":
            raise TestFailure(f"/dev/sda1 is labelled {label.strip()!r}, not lockroot-stage")
        m.sh("mkdir -p /mnt/stage && mount -o ro /dev/sda1 /mnt/stage && "
             "(cmp /mnt/stage/root/lockroot-marker /root/lockroot-marker && "
             "test -d /mnt/stage/srv/lockroot-test; rc=$?; umount /mnt/stage; exit $rc)")
        c.step("checks")
        m.power_off()
    if disk.search(MARKER.encode()):
        raise TestFailure("the marker is still in plaintext on the SD image")
    files = disk.boot_files()
    for gone in ("tryboot.txt", "lockroot-cmdline.txt", "lockroot-initrd.img"):
        if gone in files:
            raise TestFailure(f"{gone} is still on the boot partition after the commit")
    if b"root=/dev/mapper/cryptroot" not in disk.read_boot("cmdline.txt"):
        raise TestFailure(f"cmdline.txt: {disk.read_boot('cmdline.txt')!r}")
    return c, ready


def test():
    st = State()
    usb = usb_drive(st, "convert-via-usb.img", 2048, [])
    c1, _ = unit(st, 1, usb, reuse=False)
    c2, ready2 = unit(st, 2, usb, reuse=True)
    for c in (c1, c2):
        log(f"unit {c.unit} total {sum(t for _, t in c.steps):.0f} s: " +
            ", ".join(f"{w.split(' (')[0]} {t:.0f}" for w, t in c.steps))
    log(f"unit 2 staging copy: {ready2['staged_bytes']} bytes of file data transferred "
        f"({ready2['staged_sent']} bytes sent)")


main(test)
