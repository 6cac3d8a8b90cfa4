# SPDX-License-Identifier: LGPL-2.1-or-later
"""The system tests' Raspberry Pi firmware, machine and serial console.

QEMU does not read a Pi's boot partition, so this module does what the Pi firmware does: it
reads config.txt and cmdline.txt from partition 1 of the disk image (mtools, at the partition's
offset: no loop device), picks the kernel (kernel=), the initramfs (initramfs FILE followkernel)
and the command line (cmdline=, first line of the file), and boots them with
qemu-system-x86_64 under TCG, the disk on virtio-blk with a serial number, the host identity as an
SMBIOS product UUID, and a TPM from swtpm whose state directory lives as long as the test unit.

The console (ttyS0) is driven with pexpect: every wait has a timeout, nothing sleeps a fixed
time, and every boot's whole console is written to a log file.

Use /usr/bin/python3 (Debian's, where python3-pexpect is installed).
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

try:
    import pexpect
except ImportError:  # the caller maps this to exit 77
    pexpect = None

SECTOR = 512
# The guest's root shell prompt (hostname set by build-guest.sh).
SHELL_PROMPT = r"root@lockroot-guest:[^\r\n]*# "
# Printed to the console by the guest's initramfs (local-bottom script added by build-guest.sh)
# right after the root file system is mounted.
ROOT_MOUNTED = r"lockroot-test: root mounted"
# Anything that means the boot went wrong for good.
BOOT_FAILURE = (r"Kernel panic|end Kernel panic|Gave up waiting for root|invalid opcode: |"
                r"Oops: |BUG: |"
                r"\(initramfs\) |ALERT! |emergency mode|Cannot open access to console")


# The kernel's last line before a restart (kernel/reboot.c), with the command when the reboot
# was asked for with one (systemctl reboot ARG): "0 tryboot" makes the Pi firmware read
# tryboot.txt for the next boot. And its last line before a power-off.
RESTART_LINE = r"reboot: Restarting system(?: with command '([^'\r\n]*)')?"
POWER_DOWN_LINE = r"reboot: Power down"
# What makes a shutdown or restart fail (the boot failure patterns are not used there).
SHUTDOWN_FAILURE = r"Kernel panic|Oops: |BUG: |invalid opcode: "


class TestFailure(Exception):
    """A test's expectation did not hold (exit 1)."""


class TestSkip(Exception):
    """The environment lacks something (exit 77)."""


def log(msg):
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def run_host(argv, **kw):
    """Run a host command; raise TestFailure with its output when it fails."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(argv, **kw)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else p.stderr
        raise TestFailure(f"{' '.join(map(shlex.quote, argv))} exited {p.returncode}: {err}")
    return p


def need(*cmds):
    for c in cmds:
        if shutil.which(c) is None:
            raise TestSkip(f"{c} not installed")
    if pexpect is None:
        raise TestSkip("python3-pexpect not installed (run with /usr/bin/python3)")


# ---------------------------------------------------------------------------------------------
# The disk and its boot partition

def partition_table(path):
    """{partition number: (byte offset, byte size)} from sfdisk --json; {} when the image has no
    partition table (an empty drive)."""
    p = subprocess.run(["sfdisk", "--json", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        if not os.path.exists(path):
            raise TestFailure(f"{path}: no such disk image")
        return {}
    table = json.loads(p.stdout)["partitiontable"]
    ssz = table.get("sectorsize", SECTOR)
    parts = {}
    for e in table.get("partitions", []):
        n = int(re.search(r"(\d+)$", e["node"]).group(1))
        parts[n] = (e["start"] * ssz, e["size"] * ssz)
    return parts


class Disk:
    """A raw disk image with an MBR (or GPT) partition table; partition 1 is the FAT boot.

    An image with no partition table (an empty USB drive) is a Disk too: it has no boot
    partition (the boot file methods fail), search() and partition_sha256() re-read the table."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        table = partition_table(self.path)
        self.parts = [table[n] for n in sorted(table)]
        self.boot_offset = self.parts[0][0] if self.parts else None

    def _img(self):
        if self.boot_offset is None:
            raise TestFailure(f"{self.path}: no partitions (no boot partition)")
        return f"{self.path}@@{self.boot_offset}"

    # -- the image's bytes (host side; QEMU writes through to the file, so after a sync in the
    #    guest, or once QEMU has exited, this is what the drive holds) -------------------------

    def search(self, marker):
        """True when the bytes `marker` occur anywhere in the image file.

        Reads only the image's data extents (SEEK_DATA/SEEK_HOLE: a sparse 1.3 GB image whose
        root was discarded reads in well under a second), 16 MiB at a time, with an overlap so
        a marker across two reads (or next to a hole) is found too."""
        if isinstance(marker, str):
            marker = marker.encode()
        if not marker:
            raise ValueError("empty marker")
        keep = len(marker) - 1
        block = 16 << 20
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            tail = b""
            pos = 0
            while pos < size:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole from here on
                    data = size
                if data > pos:  # a hole reads as zeros
                    zeros = tail + bytes(min(data - pos, keep))
                    if marker in zeros:
                        return True
                    tail = zeros[-keep:] if keep else b""
                    pos = data
                    if pos >= size:
                        break
                try:
                    hole = os.lseek(fd, pos, os.SEEK_HOLE)
                except OSError:
                    hole = size
                os.lseek(fd, pos, os.SEEK_SET)
                while pos < hole:
                    buf = f.read(min(block, hole - pos))
                    if not buf:
                        return False
                    if marker in tail + buf[:keep] or marker in buf:
                        return True
                    if not keep:
                        tail = b""
                    elif len(buf) >= keep:
                        tail = buf[-keep:]
                    else:
                        tail = (tail + buf)[-keep:]
                    pos += len(buf)
        return False

    def partition_sha256(self, n):
        """The sha256 (hex) of partition n's bytes, from the partition table as it is now."""
        table = partition_table(self.path)
        if n not in table:
            raise TestFailure(f"{self.path}: no partition {n} (partitions {sorted(table)})")
        off, size = table[n]
        h = hashlib.sha256()
        with open(self.path, "rb", buffering=0) as f:
            f.seek(off)
            left = size
            while left:
                buf = f.read(min(16 << 20, left))
                if not buf:  # past the end of the image file: the rest reads as zeros
                    buf = bytes(min(16 << 20, left))
                h.update(buf)
                left -= len(buf)
        return h.hexdigest()

    def _mtools_env(self):
        env = dict(os.environ)
        env["MTOOLS_SKIP_CHECK"] = "1"
        return env

    def boot_files(self):
        p = run_host(["mdir", "-b", "-i", self._img(), "::/"], env=self._mtools_env())
        return [os.path.basename(x) for x in p.stdout.decode().split()]

    def read_boot(self, name):
        """The bytes of a file on the boot partition, or None when there is no such file."""
        p = subprocess.run(["mtype", "-i", self._img(), f"::{name}"], env=self._mtools_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            return None
        return p.stdout

    def copy_boot(self, name, dest):
        """Copy a file from the boot partition to a host path (byte for byte)."""
        run_host(["mcopy", "-n", "-o", "-i", self._img(), f"::{name}", dest],
                 env=self._mtools_env())

    def write_boot(self, name, data):
        """Replace (or create) a file on the boot partition, as a user editing the SD card."""
        tmp = f"{self.path}.mcopy.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        try:
            run_host(["mcopy", "-o", "-i", self._img(), tmp, f"::{name}"], env=self._mtools_env())
        finally:
            os.unlink(tmp)


class BootConfig:
    """What the Pi firmware takes from config.txt (or tryboot.txt) and cmdline.txt.

    Honoured: kernel=, cmdline=, initramfs FILE [followkernel|ADDRESS], the [all] and [none]
    conditional sections, board filters (the emulated board is a Pi 4: [pi4] applies, [pi3],
    [pi5], [cm4]... do not), [tryboot] (applies only to a tryboot boot), comments. Everything else
    is ignored as the firmware ignores what it does not know.

    config_name: the file read, "config.txt", or "tryboot.txt" for the one boot after a
    `reboot '0 tryboot'` (Machine does that; [tryboot] sections then apply).
    """

    BOARD_FILTERS = {"all", "pi4", "board-type=0x11"}
    # The filters each emulated machine answers to (Machine's board).
    BOARDS = {"pc": BOARD_FILTERS, "raspi3b": {"all", "pi3", "board-type=0x8"},
              "virt": {"all"}}
    # The device tree the firmware picks when config.txt names none (device_tree=).
    DEFAULT_DTB = {"raspi3b": "bcm2837-rpi-3-b.dtb"}

    def __init__(self, disk, config_name="config.txt", board="pc"):
        self.disk = disk
        self.config_name = config_name
        self.tryboot = config_name == "tryboot.txt"
        filters = self.BOARDS[board] | ({"tryboot"} if self.tryboot else set())
        self.device_tree = self.DEFAULT_DTB.get(board)
        raw = disk.read_boot(config_name)
        if raw is None:
            raise TestFailure(f"no {config_name} on the boot partition")
        self.kernel = "kernel8.img"  # the firmware's default for a 64-bit Pi 4
        self.initramfs = None
        self.cmdline_file = "cmdline.txt"
        active = True
        for line in raw.decode(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"\[(.*)\]", line)
            if m:
                f = m.group(1).strip().lower()
                active = f in filters
                continue
            if not active:
                continue
            if line.startswith("initramfs"):
                words = line.split()
                if len(words) >= 2:
                    self.initramfs = words[1]
                continue
            if "=" in line:
                k, v = (x.strip() for x in line.split("=", 1))
                if k == "kernel":
                    self.kernel = v
                elif k == "device_tree":
                    self.device_tree = v
                elif k == "cmdline":
                    self.cmdline_file = v
        cmd = disk.read_boot(self.cmdline_file)
        if cmd is None:
            raise TestFailure(f"no {self.cmdline_file} on the boot partition")
        lines = cmd.decode(errors="replace").splitlines()
        self.cmdline = lines[0].strip() if lines else ""

    def extract(self, workdir):
        """Copy kernel and initramfs to workdir; return their paths (initramfs may be None)."""
        os.makedirs(workdir, exist_ok=True)
        k = os.path.join(workdir, "kernel")
        self.disk.copy_boot(self.kernel, k)
        i = None
        if self.initramfs:
            i = os.path.join(workdir, "initramfs")
            self.disk.copy_boot(self.initramfs, i)
        return k, i

    def extract_dtb(self, workdir, serial=None):
        """Copy the device tree to workdir and, as the Pi firmware does, write the board's
        serial number into it (/serial-number). Returns its path, or None (no device tree)."""
        if not self.device_tree:
            return None
        d = os.path.join(workdir, "board.dtb")
        self.disk.copy_boot(self.device_tree, d)
        if serial:
            run_host(["fdtput", "-t", "s", d, "/", "serial-number", serial])
        return d


def edit_cmdline(disk, fn):
    """Rewrite cmdline.txt (the file config.txt names) on the boot partition with fn(old) -> new."""
    cfg = BootConfig(disk)
    disk.write_boot(cfg.cmdline_file, fn(cfg.cmdline) + "\n")


def edit_config(disk, fn):
    """Rewrite config.txt on the boot partition with fn(old text) -> new text."""
    disk.write_boot("config.txt", fn(disk.read_boot("config.txt").decode()))


def make_usb_disk(path, size_mib, layout=(), label="dos", label_id=None):
    """A (sparse) drive image made on the host; returns its Disk.

    layout: [(partno, start_mib, size_mib, type, fill)], type as sfdisk takes it ("83", "c",
    "L"...), fill None (zeros), "ext2", "ext3", "ext4" or "vfat" (made in a separate file, a few
    files of random data in it, dd'd in), or "luks2" (an empty LUKS2 header, random passphrase,
    PBKDF2 1000 iterations: cryptsetup formats an image file without device-mapper). Partition numbers may leave gaps (MBR: 1 and 3, no 2). Empty layout:
    no partition table at all, an all-zero drive."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    if not layout:
        return Disk(path)
    script = [f"label: {label}", "unit: sectors"]
    if label_id:
        script.append(f"label-id: {label_id}")
    for partno, start, size, ptype, _ in sorted(layout):
        script.append(f"{path}{partno} : start={start * 2048}, size={size * 2048}, type={ptype}")
    run_host(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
             input="\n".join(script).encode() + b"\n")
    for partno, start, size, _, fill in layout:
        if fill is None:
            continue
        tmp = f"{path}.p{partno}.tmp"
        files = f"{path}.p{partno}.files"
        shutil.rmtree(files, ignore_errors=True)
        os.makedirs(files)
        try:
            with open(os.path.join(files, "README"), "w") as f:
                f.write(f"lockroot system test: data on partition {partno}\n")
            for name, n in (("random-1.bin", 1 << 20), ("random-2.bin", 200 << 10)):
                with open(os.path.join(files, name), "wb") as f:
                    f.write(os.urandom(n))
            with open(tmp, "wb") as f:
                f.truncate(size << 20)
            if fill in ("ext2", "ext3", "ext4"):
                run_host([f"mkfs.{fill}", "-q", "-F", "-L", f"usb-p{partno}", "-d", files, tmp])
            elif fill == "luks2":
                run_host(["cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
                          "--pbkdf-force-iterations", "1000", "--key-file", "-", tmp],
                         input=os.urandom(32).hex().encode())
            elif fill == "vfat":
                run_host(["mkfs.vfat", "-n", f"USBP{partno}", tmp])
                env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
                run_host(["mcopy", "-i", tmp] + [os.path.join(files, x)
                                                 for x in sorted(os.listdir(files))] + ["::/"],
                         env=env)
            else:
                raise ValueError(f"make_usb_disk: unknown fill {fill!r}")
            run_host(["dd", f"if={tmp}", f"of={path}", "bs=1M", f"seek={start}",
                      "conv=notrunc,sparse", "status=none"])
        finally:
            shutil.rmtree(files, ignore_errors=True)
            if os.path.exists(tmp):
                os.unlink(tmp)
    return Disk(path)


# ---------------------------------------------------------------------------------------------
# The TPM

class SoftTPM:
    """One swtpm state directory per test unit; one swtpm process per boot."""

    def __init__(self, statedir):
        self.dir = os.path.abspath(statedir)  # swtpm --daemon changes to /
        os.makedirs(self.dir, exist_ok=True)
        self.ctrl = os.path.join(self.dir, "ctrl")
        self.pidfile = os.path.join(self.dir, "pid")
        self.pid = None

    def start(self):
        for f in (self.ctrl, self.pidfile):
            if os.path.exists(f):
                os.unlink(f)
        run_host(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.dir}",
                  "--ctrl", f"type=unixio,path={self.ctrl}", "--flags", "startup-clear",
                  "--pid", f"file={self.pidfile}", "--log", f"file={self.dir}/log,level=1",
                  "--daemon"])
        wait_until(10, lambda: os.path.exists(self.ctrl) and os.path.getsize(self.pidfile) > 0,
                   "swtpm control socket")
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())

    def stop(self):
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        # swtpm ends by itself when QEMU shuts the TPM down; give it a moment, then end it.
        if not wait_until(5, lambda: not alive(pid), None):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_until(5, lambda: not alive(pid), None)

    def qemu_args(self, device="tpm-tis"):
        """device: tpm-tis (PC), tpm-tis-device (arm64 virt)."""
        return ["-chardev", f"socket,id=chrtpm,path={self.ctrl}",
                "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", f"{device},tpmdev=tpm0"]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(timeout, pred, what):
    """Poll pred() until true or timeout; raise TestFailure naming `what` (None: return False)."""
    end = time.monotonic() + timeout
    delay = 0.01
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            if what is None:
                return False
            raise TestFailure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# ---------------------------------------------------------------------------------------------
# The machine and its console

class StampedLog:
    """The console log: every line prefixed with the host time since QEMU started."""

    def __init__(self, path):
        self.f = open(path, "w", encoding="utf-8", errors="replace")
        self.t0 = time.monotonic()
        self.bol = True
        self.seen = []  # the console text (what QEMU printed), for after the boot

    def write(self, text):
        """What the console printed (pexpect's logfile_read)."""
        self.seen.append(text)
        self._stamp(text)

    def note(self, text):
        """The harness's own lines (firmware header, marks): in the log, not console text."""
        self._stamp(text)

    def _stamp(self, text):
        for piece in text.splitlines(keepends=True):
            if self.bol:
                self.f.write(f"[{time.monotonic() - self.t0:7.2f}] ")
            self.f.write(piece)
            self.bol = piece.endswith("\n")

    def console(self):
        return "".join(self.seen)

    def flush(self):
        self.f.flush()

    def close(self):
        self.f.close()


class Machine:
    """A PC playing the Pi: boots what the disk's boot partition says, as the firmware would.

    disk: Disk; tpm: SoftTPM or None (no TPM attached); smbios_uuid / disk_serial: the host
    identity lockroot binds to; logdir: where each boot's console log goes.
    sd_discard: the SD drive (virtio) passes the guest's discards to the image (holes punched).
    usb_disk: a Disk or an image path, attached as a USB mass-storage drive (qemu-xhci,
    usb-storage) with serial usb_serial; with the SD drive on virtio it is the guest's /dev/sda.

    The firmware's tryboot: when a boot ends with the kernel's "reboot: Restarting system with
    command '0 tryboot'" (systemctl reboot '0 tryboot'), the next power_on() reads tryboot.txt
    instead of config.txt, once (power_on() fails when there is no tryboot.txt); a boot ended
    by kill() (a power cut) never sets it. The partition number in the command is not emulated
    (the boot partition is partition 1).
    """

    def __init__(self, disk, logdir, tpm=None, smbios_uuid=None, disk_serial=None,
                 memory="1G", smp=1, usb_disk=None, usb_serial="LOCKROOT-USB-0001",
                 sd_discard=False, board="pc", board_serial=None, usb_disks=()):
        if board not in BootConfig.BOARDS:
            raise TestFailure(f"unknown board {board!r}")
        self.board = board
        self.board_serial = board_serial  # written into the device tree (raspi3b)
        self.usb_disks = list(usb_disks)  # more USB drives: (Disk or path, serial or None)
        self.disk = disk
        self.logdir = os.path.abspath(logdir)
        self.tpm = tpm
        self.smbios_uuid = smbios_uuid
        self.disk_serial = disk_serial
        self.usb_disk = usb_disk
        self.usb_serial = usb_serial
        self.sd_discard = sd_discard
        self.memory = memory
        self.smp = int(os.environ.get("LOCKROOT_QEMU_SMP", smp))
        # qemu64, not max: under TCG, -cpu max makes Debian's userspace ~3x slower (AVX and
        # friends are emulated: ~80 s to a shell instead of ~33 s here), and a Raspberry Pi 3/4
        # has no AES instructions either, so the guest takes a Pi's generic cipher path.
        self.cpu = os.environ.get("LOCKROOT_QEMU_CPU", "qemu64")
        self.child = None
        self.boots = 0
        self.t0 = None
        self.marks = {}
        self.logfile = None
        self.logpath = None
        self.config_name = None     # what the firmware read for the current (last) boot
        self.tryboot_next = False   # the last boot asked for a tryboot
        self.last_restart = None    # the command of the last boot's restart ('0 tryboot'), if any
        self.last_end = None        # how the last boot ended: "restart", "power-off", "killed"

    # -- firmware and power -----------------------------------------------------------------

    def power_on(self, name="boot", no_tpm=False):
        """Read the boot partition like the Pi firmware and start QEMU. Returns the log path.

        no_tpm: this boot only, the Machine's TPM is not attached (a trial boot made to fail)."""
        if self.child is not None:
            raise TestFailure("power_on: the machine is already running")
        config_name = "tryboot.txt" if self.tryboot_next else "config.txt"
        self.tryboot_next = False  # the firmware clears the flag as it acts on it
        self.boots += 1
        os.makedirs(self.logdir, exist_ok=True)
        fw = BootConfig(self.disk, config_name, self.board)
        self.config_name = config_name
        fwdir = os.path.join(self.logdir, ".firmware")
        kernel, initrd = fw.extract(fwdir)
        argv = self._machine_argv(fw, kernel, fwdir)
        usb = ([(self.usb_disk, self.usb_serial)] if self.usb_disk is not None else []) \
            + self.usb_disks
        if usb and self.board == "pc":
            argv += ["-device", "qemu-xhci,id=xhci"]
        for n, (d, serial) in enumerate(usb):
            path = d.path if isinstance(d, Disk) else os.path.abspath(d)
            # raspi3b: its own USB host (dwc2); pc: the xHCI above.
            argv += ["-drive", f"if=none,id=usb{n},format=raw,file={path},discard=unmap",
                     "-device", f"usb-storage,drive=usb{n}"
                     + (",bus=xhci.0" if self.board == "pc" else "")
                     + (f",serial={serial}" if serial else "")]
        if initrd:
            argv += ["-initrd", initrd]
        if self.smbios_uuid:
            argv += ["-smbios", f"type=1,uuid={self.smbios_uuid}"]
        tpm = self.tpm if not no_tpm else None
        if tpm:
            tpm.start()
            argv += tpm.qemu_args("tpm-tis-device" if self.board == "virt" else "tpm-tis")
        self.logpath = os.path.join(self.logdir, f"{self.boots:02d}-{name}.log")
        self.logfile = StampedLog(self.logpath)
        tpm_note = "" if tpm else (" tpm=detached" if self.tpm else " tpm=none")
        self.logfile.note("# firmware: config=%s kernel=%s initramfs=%s cmdline=%r%s\n# %s\n" % (
            config_name, fw.kernel, fw.initramfs, fw.cmdline, tpm_note,
            " ".join(map(shlex.quote, argv))))
        self.logfile.flush()
        log(f"boot {self.boots} ({name}): config={config_name} kernel={fw.kernel} "
            f"initramfs={fw.initramfs}{tpm_note} log {self.logpath}")
        self.t0 = time.monotonic()
        self.logfile.t0 = self.t0
        self.marks = {}
        self.last_restart = None
        self.last_end = None
        self.child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace",
                                   timeout=60, maxread=65536, searchwindowsize=None,
                                   dimensions=(50, 250))
        self.child.logfile_read = self.logfile
        return self.logpath

    def _machine_argv(self, fw, kernel, fwdir):
        """QEMU's command line for the board, its boot drive and the firmware's choices."""
        if self.board == "raspi3b":
            # The board has what it has (4 Cortex-A53, 1 GiB, the SD slot); the console is the
            # mini UART (ttyS1: QEMU's second serial port), the PL011 belongs to Bluetooth.
            if self.tpm:
                raise TestFailure("raspi3b: QEMU 7.2 has no TPM device for this board")
            dtb = fw.extract_dtb(fwdir, self.board_serial)
            if not dtb:
                raise TestFailure("raspi3b: no device tree on the boot partition")
            return ["qemu-system-aarch64", "-M", "raspi3b",
                    "-accel", os.environ.get("LOCKROOT_RASPI_ACCEL", "tcg,thread=single"),
                    "-display", "none", "-monitor", "none", "-serial", "null", "-serial", "stdio",
                    "-no-reboot", "-kernel", kernel, "-append", fw.cmdline, "-dtb", dtb,
                    "-drive", f"if=sd,format=raw,file={self.disk.path}"]
        drive = f"if=none,id=disk0,format=raw,file={self.disk.path}"
        if self.sd_discard:
            drive += ",discard=unmap"
        # -drive if=none plus the device, with its serial (QEMU 7.2 wants it on the device)
        disk = ["-drive", drive, "-device", "virtio-blk-pci,drive=disk0"
                + (f",serial={self.disk_serial}" if self.disk_serial else "")]
        if self.board == "virt":
            return ["qemu-system-aarch64", "-accel", "tcg", "-M", "virt", "-cpu", "cortex-a72",
                    "-m", self.memory, "-smp", str(self.smp), "-display", "none",
                    "-monitor", "none", "-serial", "stdio", "-nic", "none", "-no-reboot",
                    "-kernel", kernel, "-append", fw.cmdline] + disk
        return ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-cpu", self.cpu,
                "-m", self.memory, "-smp", str(self.smp), "-nographic", "-nic", "none",
                "-no-reboot",  # a reboot (panic, failed boot) ends the run instead of looping
                "-kernel", kernel, "-append", fw.cmdline] + disk

    def _finish(self):
        if self.child is not None:
            # EOF read: QEMU is ending by itself (the guest powered off or restarted: -no-reboot).
            ended = self.child.flag_eof
            if ended:
                wait_until(10, lambda: not self.child.isalive(), None)
            if self.child.isalive():
                self.child.terminate(force=True)
            self.child.close()
            self.child = None
            self._after_exit(ended)
        if self.tpm:
            self.tpm.stop()
        if self.logfile:
            self.logfile.note("\n# marks (s since QEMU start): " + ", ".join(
                f"{k}={v:.1f}" for k, v in self.marks.items()) + "\n")
            if self.last_end:
                self.logfile.note(f"# end: {self.last_end}"
                                  + (f" command={self.last_restart!r}" if self.last_restart else "")
                                  + (" -> next boot reads tryboot.txt" if self.tryboot_next else "")
                                  + "\n")
            log("marks: " + ", ".join(f"{k}={v:.1f}s" for k, v in self.marks.items()))
            self.logfile.close()
            self.logfile = None

    def _after_exit(self, ended):
        """What the firmware keeps from the boot that just ended: the tryboot flag."""
        self.tryboot_next = False
        self.last_restart = None
        if not ended:
            self.last_end = "killed"  # a power cut: the flag is lost
            return
        text = self.logfile.console() if self.logfile else ""
        restarts = list(re.finditer(RESTART_LINE, text))
        if restarts:
            self.last_end = "restart"
            self.last_restart = restarts[-1].group(1)
            if self.last_restart and "tryboot" in self.last_restart.split():
                self.tryboot_next = True
        elif re.search(POWER_DOWN_LINE, text):
            self.last_end = "power-off"
        else:
            self.last_end = "exited"

    def power_off(self, timeout=120):
        """Clean shutdown from the shell; QEMU exits when the guest powers off."""
        self.child.sendline("systemctl poweroff")
        try:
            self.child.expect(pexpect.EOF, timeout=timeout)
        except pexpect.TIMEOUT:
            self._finish()
            raise TestFailure(f"guest did not power off within {timeout}s (log {self.logpath})")
        self.marks["off"] = self.elapsed()
        self._finish()

    def wait_reboot(self, timeout=180):
        """Wait for the guest to go down by itself (QEMU exits: -no-reboot). Returns the command
        the kernel restarted with ("0 tryboot"), None for a restart without one or a power-off
        (last_end says which). Only a kernel crash fails it (no boot-failure patterns here)."""
        if self.child is None:  # already down and finished
            return self.last_restart
        i = self.child.expect([pexpect.EOF, pexpect.TIMEOUT, SHUTDOWN_FAILURE], timeout=timeout)
        if i == 1:
            self._finish()
            raise TestFailure(f"guest did not go down within {timeout}s (log {self.logpath})")
        if i == 2:
            after = self.child.after
            self._finish()
            raise TestFailure(f"shutdown failed ({after!r}) (log {self.logpath})")
        self.marks["down"] = self.elapsed()
        self._finish()
        return self.last_restart

    def reboot(self, cmd=None, timeout=180):
        """systemctl reboot [CMD] from the shell, wait for QEMU to exit; returns what
        wait_reboot() returns. reboot("0 tryboot"): the next power_on() reads tryboot.txt."""
        self.child.sendline("systemctl reboot" + (f" {shlex.quote(cmd)}" if cmd else ""))
        return self.wait_reboot(timeout)

    def kill(self):
        """Power cut."""
        self._finish()

    def elapsed(self):
        return time.monotonic() - self.t0

    # -- console -------------------------------------------------------------------------------

    def expect(self, pattern, timeout, what=None, fail=BOOT_FAILURE):
        """Wait for a regex on the console; a boot failure pattern or EOF fails at once.

        Returns the match; records the time since power-on under `what` (or the pattern)."""
        pats = [pattern, pexpect.EOF, pexpect.TIMEOUT]
        if fail:
            pats.append(fail)
        i = self.child.expect(pats, timeout=timeout)
        what = what or pattern
        if i == 0:
            self.marks[what] = self.elapsed()
            return self.child.match
        if i == 1:
            raise TestFailure(f"QEMU exited while waiting for {what!r} (log {self.logpath})")
        if i == 2:
            raise TestFailure(f"timed out after {timeout}s waiting for {what!r} "
                              f"(log {self.logpath})")
        raise TestFailure(f"boot failed ({self.child.after!r}) while waiting for {what!r} "
                          f"(log {self.logpath})")

    def expect_any(self, patterns, timeout, what, fail=BOOT_FAILURE):
        """Wait for the first of several regexes; returns its index."""
        pats = list(patterns) + [pexpect.EOF, pexpect.TIMEOUT] + ([fail] if fail else [])
        i = self.child.expect(pats, timeout=timeout)
        n = len(patterns)
        if i < n:
            self.marks[what] = self.elapsed()
            return i
        if i == n:
            raise TestFailure(f"QEMU exited while waiting for {what} (log {self.logpath})")
        if i == n + 1:
            raise TestFailure(f"timed out after {timeout}s waiting for {what} (log {self.logpath})")
        raise TestFailure(f"boot failed ({self.child.after!r}) while waiting for {what} "
                          f"(log {self.logpath})")

    def type_secret(self, text):
        """Type a line at a prompt (passphrase, recovery key). Not echoed to our own stderr."""
        self.child.sendline(text)

    def wait_shell(self, timeout=240):
        """Wait for the autologin root shell, then make it scriptable (no echo, quiet printk)."""
        self.expect(SHELL_PROMPT, timeout, "shell")
        self.child.sendline("stty -echo cols 250; dmesg -n 1; export SYSTEMD_PAGER= PAGER=cat")
        self.child.expect(SHELL_PROMPT, timeout=30)

    def sh(self, cmd, timeout=120, check=True):
        """Run a shell command in the guest; return (exit status, output without CRs)."""
        # The markers are printed by printf from split strings, so an echoed command line can
        # never look like them.
        self.child.sendline(f"printf '@@%s@@\\n' S; {cmd}; printf '@@%s=%d@@\\n' E $?")
        self.expect(r"@@S@@\r*\n", timeout, f"start of {cmd!r}", fail=None)
        self.expect(r"@@E=(\d+)@@", timeout, f"end of {cmd!r}", fail=None)
        out = self.child.before.replace("\r", "")
        rc = int(self.child.match.group(1))
        self.child.expect(SHELL_PROMPT, timeout=30)
        if check and rc != 0:
            raise TestFailure(f"guest: {cmd!r} exited {rc}:\n{out}")
        return rc, out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._finish()
        return False


# ---------------------------------------------------------------------------------------------
# Test scaffolding shared by the scenario scripts

_scratch = []  # per-scenario copies, removed when the scenario passes


class State:
    """The system suite's work directory (SYSTEM_STATE): guest.json from build-guest.sh, the
    built disk, and what one scenario hands the next (enrolled disk, TPM state, recovery key)."""

    def __init__(self, d=None, guest="guest/guest.json"):
        """guest: the facts file, relative to the work directory (the arm64 guests':
        arm64/arm64.json, from arm64/build-guest.sh)."""
        d = d or os.environ.get("SYSTEM_STATE")
        if not d:
            raise TestSkip("SYSTEM_STATE not set (run tests/system/run.sh)")
        self.dir = os.path.abspath(d)
        facts = os.path.join(self.dir, guest)
        if not os.path.exists(facts):
            raise TestFailure(f"{facts} missing: the guest was not built")
        with open(facts) as f:
            self.guest = json.load(f)
        self.logdir = os.path.join(self.dir, "logs")

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def copy_disk(self, src, dst, keep=False):
        """A private copy of a disk image for one scenario (sparse, quick). Unless keep, it is
        removed when the scenario passes (kept for a look when it fails)."""
        run_host(["cp", "--sparse=always", self.path(src), self.path(dst)])
        if not keep:
            _scratch.append(self.path(dst))
        return Disk(self.path(dst))

    def copy_tpm(self, src, dst):
        d = self.path(dst)
        shutil.rmtree(d, ignore_errors=True)
        _scratch.append(d)
        shutil.copytree(self.path(src), d, ignore=shutil.ignore_patterns("ctrl", "pid", "log"))
        return SoftTPM(d)

    def read(self, name):
        p = self.path(name)
        if not os.path.exists(p):
            raise TestFailure(f"{name} missing: an earlier scenario did not complete")
        with open(p) as f:
            return f.read().strip()

    def write(self, name, text):
        fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")


def main(fn, tools=("qemu-system-x86_64", "swtpm", "mtype", "mcopy", "sfdisk")):
    """Run a scenario: exit 0 pass, 1 fail, 77 skip (a tool in `tools` is missing)."""
    t = time.monotonic()

    def on_signal(signum, _frame):
        raise TestFailure(f"killed by signal {signum}")  # so QEMU and swtpm are stopped
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        need(*tools)
        fn()
    except TestSkip as e:
        print(f"SKIP: {e}", file=sys.stderr)
        sys.exit(77)
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    for p in _scratch:
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
    log(f"passed in {time.monotonic() - t:.0f}s")
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# What the scenarios share: the host identity, lockroot's console, the checks in the guest

# The enrolled host's identity (scenario "host changed" presents another).
HOST_UUID = "6c6f636b-726f-4f74-8000-0000000000a1"
OTHER_HOST_UUID = "6c6f636b-726f-4f74-8000-0000000000b2"
DISK_SERIAL = "LOCKROOT-SD-0001"
# lockroot's keyscript prompt (askpass) and console lines.
RECOVERY_PROMPT = r"[Rr]ecovery key[^\r\n]*: "
CRYPTSETUP_PROMPT = r"Please unlock disk cryptroot: "
# Recovery-key keyslot cost in the guest: Argon2id, cheap (tests only, as in tests/lib/common.sh).
FAST_RECOVERY = "--recovery-pbkdf-iterations 4 --recovery-pbkdf-memory 32"


def check_root_on_dm_crypt(m, state):
    """Inside the guest: / is the dm-crypt mapping of the LUKS2 partition."""
    _, src = m.sh("findmnt -no SOURCE /")
    if src.strip() != "/dev/mapper/cryptroot":
        raise TestFailure(f"/ is on {src.strip()!r}, not /dev/mapper/cryptroot")
    _, table = m.sh("dmsetup table cryptroot")
    if " crypt " not in f" {table} ":
        raise TestFailure(f"dmsetup table cryptroot is not a crypt target: {table!r}")
    _, uuid = m.sh(f"cryptsetup luksUUID {state.guest['root_device']}")
    if uuid.strip() != state.guest["luks_uuid"]:
        raise TestFailure(f"{state.guest['root_device']} is LUKS {uuid.strip()!r}, "
                          f"expected {state.guest['luks_uuid']}")


def boot_unattended(m, timeout=240):
    """No typing: the root must be mounted without any prompt appearing."""
    i = m.expect_any([ROOT_MOUNTED, RECOVERY_PROMPT, CRYPTSETUP_PROMPT], timeout, "root mounted")
    if i != 0:
        raise TestFailure(f"asked for a key instead of unlocking unattended: {m.child.after!r} "
                          f"(log {m.logpath})")


def boot_with_recovery_key(m, key, timeout=240):
    """The keyscript must ask for the recovery key; type it; the root must be mounted."""
    m.expect(RECOVERY_PROMPT, timeout, "recovery key prompt")
    m.type_secret(key)
    i = m.expect_any([ROOT_MOUNTED, RECOVERY_PROMPT], 120, "root mounted")
    if i != 0:
        raise TestFailure(f"the recovery key was not accepted (log {m.logpath})")


def check_token(m, state):
    _, dump = m.sh(f"cryptsetup luksDump {state.guest['root_device']}")
    if not re.search(r"^\s*\d+: lockroot\s*$", dump, re.M):
        raise TestFailure(f"cryptsetup luksDump shows no lockroot token:\n{dump}")


def enrolled(state):
    """The disk and TPM that scenario (a) left, copied for one scenario."""
    state.read("enrolled.ok")
    if state.guest["plain"]:
        raise TestFailure("the guest was built without lockroot's keyscript "
                          "(/usr/lib/lockroot/keyscript not installed)")


def first_boot_enroll(m, plain, passphrase, root_device):
    """Boot with no token: type the passphrase at the prompt, then enroll the TPM with a
    recovery key from inside the guest and power off. Returns the recovery key."""
    m.expect(r"Linux version", 60, "kernel")
    if plain:
        m.expect(CRYPTSETUP_PROMPT, 120, "cryptsetup prompt")
    else:
        m.expect(r"lockroot: ", 120, "lockroot console line")
        m.expect(RECOVERY_PROMPT, 120, "recovery key prompt")
    m.type_secret(passphrase)
    m.expect(ROOT_MOUNTED, 120, "root mounted")
    m.wait_shell()
    _, out = m.sh(f"lockroot enroll {root_device} --hsm tpm2 --recovery-key {FAST_RECOVERY} "
                  f"--key-file /root/test-passphrase --json", timeout=300)
    j = re.search(r"\{.*\}", out, re.S)
    if not j:
        raise TestFailure(f"lockroot enroll printed no JSON:\n{out}")
    key = json.loads(j.group(0)).get("recovery_key")
    if not key:
        raise TestFailure(f"lockroot enroll --json has no recovery_key:\n{out}")
    return key
