#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot convert without device-mapper: a faked Pi (LOCKROOT_SYSROOT: mountinfo, boot files,
# /dev/disk/by-partuuid links to image files). Every refusal has its exit code and message and
# changes nothing; --dry-run plans; a run whose initramfs cannot be built puts everything back;
# `convert --boot` (the initramfs step) shrinks an image and writes the header through the TPM,
# and without a TPM boots the plain root instead (ROOT= in conf/param.conf, crypttab entry gone).
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq mkfs.ext4 mkfs.vfat resize2fs e2fsck
start_swtpm
TC=$BUILD/tests/tools/test-convert
[ -x "$TC" ] || skip "$TC not built"
CASE=
case_() { CASE=$*; info "$*"; }
fail() { echo "FAIL${CASE:+ [$CASE]}: $*" >&2; exit 1; }
file_sum() { sha256sum "$1" | cut -d' ' -f1; }

S=$T/sys
export LOCKROOT_SYSROOT=$S
make_pi_sysroot "$S"
mkdir -p "$S/proc/self" "$S/boot/firmware" "$S/etc/systemd/system" "$S/dev/disk/by-partuuid" \
	"$S/usr/sbin" "$S/usr/lib/lockroot" "$S/usr/lib/systemd/system" \
	"$S/usr/share/initramfs-tools/hooks" "$S/usr/share/initramfs-tools/scripts/init-premount"
ROOT=$T/root.img BOOT=$T/boot.img
truncate -s 128M "$ROOT" && mkfs.ext4 -q -F "$ROOT" || fail "mkfs.ext4"
truncate -s 32M "$BOOT" && mkfs.vfat "$BOOT" >/dev/null || fail "mkfs.vfat"
ln -s "$ROOT" "$S/dev/disk/by-partuuid/6c72706c-02"
ln -s "$BOOT" "$S/dev/disk/by-partuuid/6c72706c-01"
# mountinfo ROOTSOURCE: / mounted from ROOTSOURCE, the boot partition at /boot/firmware
mountinfo() {
	printf '25 1 179:2 / / rw,relatime shared:1 - ext4 %s rw\n26 25 179:1 / /boot/firmware rw shared:2 - vfat %s rw\n' \
		"$1" "$BOOT" >"$S/proc/self/mountinfo"
}
mountinfo "$ROOT"
printf 'MemTotal: 1000000 kB\nMemAvailable: 800000 kB\n' >"$S/proc/meminfo"
echo 'console=serial0,115200 console=tty1 root=PARTUUID=6c72706c-02 rootfstype=ext4 fsck.repair=yes rootwait' \
	>"$S/boot/firmware/cmdline.txt"
printf '# Raspberry Pi OS\ndtparam=audio=on\n[all]\nenable_uart=1\n' >"$S/boot/firmware/config.txt"
printf 'proc /proc proc defaults 0 0\nPARTUUID=6c72706c-01 /boot/firmware vfat defaults 0 2\nPARTUUID=6c72706c-02 / ext4 defaults,noatime 0 1\n' \
	>"$S/etc/fstab"
# What convert checks is installed (presence only; the initramfs is built in the system tests).
TOOLS="usr/sbin/update-initramfs usr/share/initramfs-tools/hooks/cryptroot usr/share/initramfs-tools/hooks/lockroot
usr/share/initramfs-tools/scripts/init-premount/lockroot-convert usr/lib/lockroot/keyscript usr/sbin/resize2fs
usr/sbin/e2fsck usr/lib/systemd/system/lockroot-convert.service"
for f in $TOOLS; do touch "$S/$f"; done
snapshot() { (cd "$S" && find . -type f -print0 | sort -z | xargs -0 sha256sum); file_sum "$ROOT"; }
conv() { "$LOCKROOT" convert -m "$ROOT" --hsm "$HSM" "${FAST_RECOVERY[@]}" "$@"; }
# refused EXIT REGEX cmd...: fails so, and neither the sysroot nor the root image changed
refused() {
	local before
	before=$(snapshot)
	expect_fail "$@"
	[ "$(snapshot)" = "$before" ] || fail "something was changed"
}

case_ "--dry-run: the plan, nothing written"
before=$(snapshot)
expect_ok conv --dry-run
grep -q "^Plan: encrypt the running root $ROOT in place" "$T/out" || fail "plan: $(cat "$T/out")"
grep -q '+ cryptroot PARTUUID=6c72706c-02 none luks,discard,keyscript=/usr/lib/lockroot/keyscript,initramfs' "$T/out" \
	|| fail "plan lacks the crypttab line: $(cat "$T/out")"
grep -q 'root=/dev/mapper/cryptroot .*lockroot.convert=PARTUUID=6c72706c-02,PARTUUID=6c72706c-01' "$T/out" \
	|| fail "plan lacks the command line"
grep -q 'shrink it from 128 MiB to 96 MiB' "$T/out" || fail "plan lacks the shrink"
expect_ok conv --dry-run --json
jq -e 'select(.event == "plan") | .device == "'"$ROOT"'" and .fs_size == 134217728 and .new_fs_size == 100663296
	and .name == "cryptroot" and (.boot_files | length) == 4 and (.template | endswith("/boot/firmware/lockroot-convert.hdr"))' \
	"$T/out" >/dev/null || fail "plan event: $(cat "$T/out")"
[ "$(snapshot)" = "$before" ] || fail "--dry-run changed something"

case_ "-m that does not exist"
refused 3 'no-such\.img: no such device' "$LOCKROOT" convert -m "$T/no-such.img" --dry-run
case_ "-m the boot partition"
refused 3 'boot partition' "$LOCKROOT" convert -m "$BOOT" --dry-run
case_ "-m another ext4, not the running root"
truncate -s 64M "$T/other.img" && mkfs.ext4 -q -F "$T/other.img"
refused 3 'is not the running root \(/ is mounted from '"$ROOT"'\)' "$LOCKROOT" convert -m "$T/other.img" --dry-run
case_ "already LUKS"
make_luks2 "$T/luks.img" 64
mountinfo "$T/luks.img"
refused 3 'already' "$LOCKROOT" convert -m "$T/luks.img" --dry-run
case_ "not ext4: the --via hint"
truncate -s 64M "$T/zeros.img"
mountinfo "$T/zeros.img"
refused 3 'lockroot convert --via' "$LOCKROOT" convert -m "$T/zeros.img" --dry-run
case_ "ext3 (ext4's superblock, not ext4): the --via hint, even as the running root"
truncate -s 64M "$T/ext3.img" && mkfs.ext3 -q -F "$T/ext3.img"
mountinfo "$T/ext3.img"
refused 3 'holds ext3, not ext4.*lockroot convert --via' "$LOCKROOT" convert -m "$T/ext3.img" --dry-run
case_ "no room: a full file system"
truncate -s 64M "$T/full.img" && mkfs.ext4 -q -F "$T/full.img"
head -c 48M /dev/urandom >"$T/big"
debugfs -w -R "write $T/big big" "$T/full.img" >/dev/null 2>&1 || fail "debugfs write"
mountinfo "$T/full.img"
refused 9 'no room on .*full\.img' "$LOCKROOT" convert -m "$T/full.img" --dry-run
mountinfo "$ROOT"
case_ "no TPM"
refused 4 'not available' "$LOCKROOT" convert -m "$ROOT" --hsm "tpm2:swtpm:path=$T/no-tpm/sock" --dry-run
case_ "no Raspberry Pi boot files"
mv "$S/boot/firmware" "$T/firmware"
mkdir "$S/boot/firmware"
refused 1 'boot partition' conv --dry-run
rmdir "$S/boot/firmware" && mv "$T/firmware" "$S/boot/firmware"
case_ "initramfs tooling missing"
mv "$S/usr/share/initramfs-tools/hooks/cryptroot" "$T/"
refused 1 'hooks/cryptroot is missing: install cryptsetup-initramfs' conv --dry-run
mv "$T/cryptroot" "$S/usr/share/initramfs-tools/hooks/"
case_ "too little memory"
printf 'MemTotal: 200000 kB\nMemAvailable: 150000 kB\n' >"$S/proc/meminfo"
refused 1 'memory' conv --dry-run
printf 'MemTotal: 1000000 kB\nMemAvailable: 800000 kB\n' >"$S/proc/meminfo"
case_ "a conversion already prepared"
mkdir -p "$S/var/lib/lockroot"
printf '{ "phase": "prepared", "device": "%s", "name": "cryptroot" }\n' "$ROOT" >"$S/var/lib/lockroot/convert.json"
refused 1 'already prepared' conv --dry-run
case_ "--status --json of a conversion under way"
printf '{ "phase": "encrypting", "device": "%s", "name": "cryptroot" }\n' "$ROOT" >"$S/var/lib/lockroot/convert.json"
mkdir -p "$S/run/lockroot"
printf '{"device":"%s","done":1048576,"total":4194304,"percent":25.0,"rate":524288,"eta":6,"started":1}\n' "$ROOT" \
	>"$S/run/lockroot/convert-progress.json"
expect_ok "$LOCKROOT" convert --status --json
jq -e '.phase == "encrypting" and .percent == 25 and .done == 1048576 and .total == 4194304 and .rate == 524288 and .eta == 6' \
	"$T/out" >/dev/null || fail "status: $(cat "$T/out")"
expect_ok "$LOCKROOT" convert --status
grep -q '25.0 % (1 MiB of 4 MiB), 0.5 MiB/s, 0:06 left' "$T/out" || fail "status text: $(cat "$T/out")"
rm -r "$S/var/lib/lockroot" "$S/run/lockroot"

case_ "a run whose initramfs cannot be built puts everything back"
before=$(snapshot)
expect_fail 1 'putting everything back' conv --yes
[ "$(snapshot)" = "$before" ] || fail "the failed run left changes"
[ -e "$S/boot/firmware/lockroot-convert.hdr" ] && fail "the template was left"
[ -e "$S/var/lib/lockroot/convert.json" ] && fail "the state was left"
[ -e "$S/etc/systemd/system/multi-user.target.wants/lockroot-convert.service" ] && fail "the service link was left"

# ---- the initramfs step on image files (a directory stands for the mounted boot partition) ----
BD=$T/bootdir
mkdir -p "$BD" "$S/conf" "$S/cryptroot"
ln -sfn "$BD" "$S/dev/disk/by-partuuid/6c72706c-01"
echo 'testdata' >"$T/marker"
debugfs -w -R "write $T/marker marker" "$ROOT" >/dev/null 2>&1 || fail "debugfs write"
CRYPTTAB_LINE='cryptroot PARTUUID=6c72706c-02 none luks,discard,keyscript=/usr/lib/lockroot/keyscript,initramfs'
initramfs_files() {
	: >"$S/conf/param.conf"
	printf '%s\n' "$CRYPTTAB_LINE" >"$S/cryptroot/crypttab"
	echo "console=ttyS0 root=/dev/mapper/cryptroot lockroot.timeout=${1:-5} lockroot.convert=PARTUUID=6c72706c-02,PARTUUID=6c72706c-01" \
		>"$S/proc/cmdline"
}

case_ "--boot without lockroot.convert= does nothing"
echo 'console=ttyS0 root=/dev/mapper/cryptroot' >"$S/proc/cmdline"
before=$(snapshot)
expect_ok "$LOCKROOT" convert --boot
[ "$(snapshot)" = "$before" ] || fail "changed something"

case_ "--boot: no template: boots the plain root"
initramfs_files
expect_ok "$LOCKROOT" convert --boot
grep -q 'lockroot: convert: cannot start (no LUKS2 header template lockroot-convert.hdr); booting the unencrypted root' \
	"$T/err" || fail "$(cat "$T/err")"
grep -qx 'ROOT=PARTUUID=6c72706c-02' "$S/conf/param.conf" || fail "param.conf: $(cat "$S/conf/param.conf")"
[ -s "$S/cryptroot/crypttab" ] && fail "crypttab still has the root: $(cat "$S/cryptroot/crypttab")"
grep -q 'no LUKS2 header template' "$BD/lockroot-convert.err" || fail "no reason left on the boot partition"
"$TC" examine "$ROOT" | jq -e '.state == "plain"' >/dev/null || fail "the root was changed"

case_ "--boot: the TPM absent: boots the plain root, the file system untouched"
"$TC" template "$ROOT" "$BD/lockroot-convert.hdr" --hsm "$HSM" --recovery-iterations 4 >/dev/null 2>&1 \
	|| fail "test-convert template"
stop_swtpm
initramfs_files 1
sum=$(file_sum "$ROOT")
expect_ok "$LOCKROOT" convert --boot
grep -q 'cannot start (the TPM/HSM did not unlock the key: .*); booting the unencrypted root' "$T/err" || fail "$(cat "$T/err")"
grep -qx 'ROOT=PARTUUID=6c72706c-02' "$S/conf/param.conf" || fail "param.conf: $(cat "$S/conf/param.conf")"
[ "$(file_sum "$ROOT")" = "$sum" ] || fail "the root image was changed"

case_ "--boot: shrink, header through the TPM"
SWTPM_DIR_OLD=$SWTPM_DIR
swtpm socket --tpm2 --tpmstate dir="$SWTPM_DIR_OLD" --server type=unixio,path="$SWTPM_DIR_OLD/sock" \
	--ctrl type=unixio,path="$SWTPM_DIR_OLD/sock.ctrl" --flags startup-clear,not-need-init \
	--pid file="$SWTPM_DIR_OLD/pid" --daemon || fail "swtpm restart"
wait_for 10 test -S "$SWTPM_DIR_OLD/sock" || fail "swtpm socket"
at_exit "kill \$(cat $SWTPM_DIR_OLD/pid) 2>/dev/null"
initramfs_files
expect_ok "$LOCKROOT" convert --boot
for msg in "checking the file system on $ROOT" "shrinking the file system on $ROOT by 32 MiB" \
	"writing the LUKS2 header on $ROOT" "header written; encryption continues after boot"; do
	grep -qF "lockroot: convert: $msg" "$T/err" || fail "no '$msg': $(cat "$T/err")"
done
[ -s "$S/conf/param.conf" ] && fail "param.conf written: $(cat "$S/conf/param.conf")"
grep -qxF "$CRYPTTAB_LINE" "$S/cryptroot/crypttab" || fail "crypttab entry dropped"
"$TC" examine "$ROOT" | jq -e '.state == "encrypting"' >/dev/null || fail "not encrypting: $("$TC" examine "$ROOT")"

case_ "--boot again: encryption in progress: nothing to do"
sum=$(file_sum "$ROOT")
expect_ok "$LOCKROOT" convert --boot
[ "$(file_sum "$ROOT")" = "$sum" ] || fail "the root image was changed"
[ -s "$S/conf/param.conf" ] && fail "param.conf written"

case_ "the rest, offline, and the data is there"
"$TC" run "$ROOT" >/dev/null 2>&1 || fail "test-convert run"
"$TC" examine "$ROOT" | jq -e '.state == "done"' >/dev/null || fail "not done"
"$LOCKROOT" unlock "$ROOT" --test 2>/dev/null || fail "the token does not unlock the converted image"
exit 0
