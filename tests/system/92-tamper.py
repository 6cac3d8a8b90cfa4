#!/usr/bin/python3 -B
# SPDX-License-Identifier: LGPL-2.1-or-later
"""(p) Tamper response with GPIO lines from gpio-sim (built out of tree for the guest's kernel,
build-gpio-sim.sh; bank label "lockroot-test"), on a copy of the enrolled disk and TPM:

1. notify: `lockroot tamper arm` (the root from crypttab) starts lockroot-tamper.service; an edge
   on line 2 runs the configured command (it writes a file with the line and mode it was given),
   and so does the line being active when the daemon starts; the event is recorded in the header,
   the keys stay: the next boot unlocks unattended.
2. self-destruct: an edge on line 3 destroys the keys (the time from the edge is printed on the
   console) and powers the guest off; the next boot cannot unlock through the TPM, the recovery
   prompt appears and the recovery key (destroy-recovery = no) boots.
3. latched: re-enrolled, a latched self-destruct line 4 armed, then pulled up in the initramfs
   (lockroot.test_gpiosim=4): the keyscript's check destroys the keys before unlocking, and the
   recovery key boots."""
import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pifw import (  # noqa: E402
    DISK_SERIAL, HOST_UUID, RECOVERY_PROMPT, ROOT_MOUNTED, Machine, State, TestFailure, TestSkip,
    boot_unattended, boot_with_recovery_key, check_token, edit_cmdline, enrolled, log, main)

CHIP = "lockroot-test"


def write_config(m, *lines):
    """/etc/lockroot/tamper.conf in the guest, as given (base64: quotes and $ stay literal)."""
    body = base64.b64encode(("\n".join(lines) + "\n").encode()).decode()
    m.sh(f"mkdir -p /etc/lockroot && echo {body} | base64 -d >/etc/lockroot/tamper.conf")


def header_tokens(m, dev):
    """The header's tokens (from its JSON metadata), as a list of dicts."""
    _, meta = m.sh(f"cryptsetup luksDump --dump-json-metadata {dev}")
    return list(json.loads(meta[meta.index("{"):])["tokens"].values())


def token_types(tokens):
    return sorted(t["type"] for t in tokens)


def last_event(tokens):
    tamper = [t for t in tokens if t["type"] == "lockroot-tamper"]
    if len(tamper) != 1:
        raise TestFailure(f"expected one lockroot-tamper token: {tokens}")
    return tamper[0].get("last_event", {})


def check_event(tokens, mode, where):
    ev = last_event(tokens)
    if ev.get("mode") != mode or ev.get("where") != where or ev.get("line", "").split(":")[0] != CHIP:
        raise TestFailure(f"the header's last event is {ev}, expected a {mode} event from the {where}")


def test():
    st = State()
    enrolled(st)
    key = st.read("recovery-key")
    dev = st.guest["root_device"]
    disk = st.copy_disk("enrolled.img", "tamper.img")
    tpm = st.copy_tpm("tpm", "tamper.tpm")
    with Machine(disk, st.logdir, tpm=tpm, smbios_uuid=HOST_UUID, disk_serial=DISK_SERIAL) as m:
        # -- 1. notify ------------------------------------------------------------------------
        m.power_on("tamper-notify")
        boot_unattended(m)
        m.wait_shell()
        rc, _ = m.sh("command -v lockroot-test-gpiosim", check=False)
        if rc != 0:
            raise TestSkip("the guest has no gpio-sim (build-guest.sh could not build it: install "
                           "linux-source-6.1 and the guest kernel's linux-headers, scripts/setup.sh)")
        m.sh("lockroot-test-gpiosim setup && gpiodetect")
        write_config(m, f"line = {CHIP}:2", "mode = notify", "debounce-ms = 20",
                     "command = /bin/sh -c 'echo \"$LOCKROOT_TAMPER_LINE $LOCKROOT_TAMPER_MODE\" >/root/notified'")
        _, out = m.sh("lockroot tamper arm")
        if "Armed /dev/disk/by-uuid/" not in out or "lockroot-tamper.service enabled" not in out:
            raise TestFailure(f"tamper arm (root from crypttab, service started):\n{out}")
        m.sh("for i in $(seq 100); do [ -s /run/lockroot/tamper.pid ] && break; sleep 0.1; done; "
             "systemctl is-active lockroot-tamper.service")
        _, status = m.sh("lockroot tamper status --json")
        if '"daemon":true' not in status.replace(" ", "") or '"armed":true' not in status.replace(" ", ""):
            raise TestFailure(f"tamper status: daemon running and root armed expected:\n{status}")
        m.sh(f"lockroot-test-gpiosim set 2 up; for i in $(seq 100); do [ -s /root/notified ] && break; "
             "sleep 0.1; done")
        _, notified = m.sh("cat /root/notified")
        if notified.strip() != f"{CHIP}:2 notify":
            raise TestFailure(f"the notify command got {notified.strip()!r}")
        # a line already active when the daemon starts counts too
        m.sh("rm /root/notified; systemctl stop lockroot-tamper.service; lockroot-test-gpiosim set 2 down; "
             "lockroot-test-gpiosim set 2 up; systemctl start lockroot-tamper.service; "
             "for i in $(seq 100); do [ -s /root/notified ] && break; sleep 0.1; done")
        _, notified = m.sh("cat /root/notified")
        if notified.strip() != f"{CHIP}:2 notify":
            raise TestFailure(f"a line active at the daemon's start: the command got {notified.strip()!r}")
        m.sh("lockroot-test-gpiosim set 2 down")
        _, journal = m.sh("journalctl -b -u lockroot-tamper.service --no-pager -o cat")
        if f"TAMPER: line {CHIP}:2 is active" not in journal:
            raise TestFailure(f"the daemon did not log the event:\n{journal}")
        m.sh(f"lockroot unlock --test {dev}")
        check_event(header_tokens(m, dev), "notify", "daemon")
        m.reboot()
        # -- 2. self-destruct on an edge ----------------------------------------------------------
        m.power_on("tamper-self-destruct")
        boot_unattended(m)  # notify kept the keys
        m.wait_shell()
        m.sh("lockroot-test-gpiosim setup")
        write_config(m, f"line = {CHIP}:3", "mode = self-destruct", "destroy-recovery = no", "poweroff = yes")
        _, out = m.sh("lockroot tamper arm")
        if "open only with their recovery key" not in out:
            raise TestFailure(f"tamper arm does not say what a self-destruct leaves:\n{out}")
        m.sh("for i in $(seq 100); do [ -s /run/lockroot/tamper.pid ] && "
             "journalctl -u lockroot-tamper.service -o cat | grep -q 'watching lockroot-test:3' && break; "
             "sleep 0.1; done; systemctl is-active lockroot-tamper.service")
        # the daemon's lines reach the console through the kernel log
        m.child.sendline("dmesg -n 5; lockroot-test-gpiosim set 3 up")
        ms = m.expect(r"TAMPER: keys destroyed ([0-9.]+) ms after the edge \((\d+) keyslots", 60,
                      "keys destroyed")
        log(f"self-destruct: keys destroyed {ms.group(1)} ms after the edge ({ms.group(2)} keyslots)")
        if int(ms.group(2)) != 1:
            raise TestFailure(f"expected the one TPM keyslot destroyed, got {ms.group(2)}")
        m.expect(r"TAMPER: HSM keys done", 30, "hsm done")
        m.wait_reboot(60)
        if m.last_end != "power-off":
            raise TestFailure(f"the guest did not power off after the self-destruct ({m.last_end})")
        m.power_on("tamper-after-self-destruct")
        i = m.expect_any([RECOVERY_PROMPT, ROOT_MOUNTED], 240, "recovery prompt after self-destruct")
        if i != 0:
            raise TestFailure("the root was unlocked without the recovery key after the self-destruct")
        m.type_secret(key)
        m.expect(ROOT_MOUNTED, 120, "root mounted with the recovery key")
        m.wait_shell()
        tokens = header_tokens(m, dev)
        if token_types(tokens) != ["lockroot-recovery", "lockroot-tamper"]:
            raise TestFailure(f"tokens after the self-destruct: {tokens}")
        check_event(tokens, "self-destruct", "daemon")
        # -- 3. a latched line at boot ------------------------------------------------------------
        m.sh(f"lockroot enroll {dev} --hsm tpm2 --key-file /root/test-passphrase", timeout=300)
        check_token(m, st)
        write_config(m, f"line = {CHIP}:4", "mode = self-destruct", "latched = yes", "poweroff = no")
        m.sh("lockroot-test-gpiosim setup && lockroot tamper arm --no-start")
        # only the boot check acts on line 4 next time: the daemon would act again once the
        # root is up (and overwrite the header's last event)
        m.sh("systemctl disable --now lockroot-tamper.service")
        m.power_off()
        edit_cmdline(disk, lambda c: c + " lockroot.test_gpiosim=4")
        m.power_on("tamper-latched")
        m.expect(r"lockroot-test: gpio-sim lines 4 pulled up", 120, "gpio-sim in the initramfs")
        m.expect(rf"TAMPER: latched line {CHIP}:4 is active: SELF-DESTRUCT", 120, "latched line acted on")
        m.expect(r"TAMPER: 1 keyslots destroyed", 60, "latched: keys destroyed")
        i = m.expect_any([RECOVERY_PROMPT, ROOT_MOUNTED], 240, "recovery prompt after the latched line")
        if i != 0:
            raise TestFailure("the root was unlocked through the TPM although the latched line was active")
        m.type_secret(key)
        m.expect(ROOT_MOUNTED, 120, "root mounted with the recovery key")
        m.wait_shell()
        tokens = header_tokens(m, dev)
        if token_types(tokens) != ["lockroot-recovery", "lockroot-tamper"]:
            raise TestFailure(f"tokens after the latched self-destruct: {tokens}")
        check_event(tokens, "self-destruct", "boot")
        m.power_off()


main(test)
