#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# --bind ...,boot-files and lockroot reseal, with a real software TPM (swtpm) and SoftHSM2 on
# LUKS2 image files: the key unlocks only for the boot files it was locked to, a refusal names
# the changed file, reseal locks it again to updated files (the TPM gives the key back only for
# the recorded ones), reseal --key-file with the recovery key after a change made elsewhere;
# the boot partition as a directory and as a block device (mounted, or mounted by lockroot).
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq losetup mkfs.ext4
need_root
start_swtpm
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
IMG=$T/disk.img
make_luks2 "$IMG"
B=$T/boot
mkdir -p "$B/overlays"
printf 'arm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\ndtoverlay=tpm-slb9670\n' >"$B/config.txt"
printf 'console=serial0,115200 root=/dev/mapper/cryptroot ro\n' >"$B/cmdline.txt"
head -c 200000 /dev/urandom >"$B/vmlinuz"
head -c 300000 /dev/urandom >"$B/initrd.img"
printf 'dtb' >"$B/bcm2711-rpi-4-b.dtb"
printf 'overlay' >"$B/overlays/tpm-slb9670.dtbo"

info "enroll bound to the board and the boot files"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --bind board-serial,boot-files --boot-dev "$B" \
	--recovery-key "${FAST_RECOVERY[@]}"
grep -q 'bound to board-serial,boot-files' "$T/out" || fail "binding not reported: $(cat "$T/out")"
RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
printf '%s' "$RK" >"$T/rk"
cryptsetup token export --token-id 0 "$IMG" >"$T/token.json"
jq -en 'input | .lockroot_version == 2 and .boot_files.device == "'"$B"'"' "$T/token.json" >/dev/null || fail "token: $(cat "$T/token.json")"
[ "$(jq -r '[.boot_files.files[].path] | join(" ")' "$T/token.json")" = \
	"config.txt cmdline.txt vmlinuz initrd.img bcm2711-rpi-4-b.dtb overlays/tpm-slb9670.dtbo" ] \
	|| fail "measured files: $(jq -c '.boot_files.files' "$T/token.json")"
[ "$(jq -r '.boot_files.files[] | select(.path=="vmlinuz") | .sha256' "$T/token.json")" = \
	"$(sha256sum "$B/vmlinuz" | cut -d' ' -f1)" ] || fail "the kernel's digest is not what sha256sum says"
"$LOCKROOT" status "$IMG" --json >"$T/status.json" || fail "status --json"
[ "$(jq -r '.[0].tokens[] | select(.type=="lockroot") | .bind | join(",")' "$T/status.json")" = board-serial,boot-files ] \
	|| fail "status does not show the binding: $(jq -c '.[0].tokens' "$T/status.json")"
expect_ok "$LOCKROOT" unlock "$IMG" --test

info "a changed cmdline.txt is refused, naming it; the header is not touched"
before=$(header_sum "$IMG")
cp "$B/cmdline.txt" "$T/cmdline.orig"
printf 'console=serial0,115200 root=/dev/mapper/cryptroot ro init=/bin/sh\n' >"$B/cmdline.txt"
expect_fail 5 'boot file cmdline.txt changed' "$LOCKROOT" unlock "$IMG" --test
grep -q 'vmlinuz\|initrd.img' "$T/err" && fail "unchanged files were blamed: $(cat "$T/err")"
grep -q 'recovery key' "$T/err" || fail "no hint at the recovery key: $(cat "$T/err")"
[ "$(header_sum "$IMG")" = "$before" ] || fail "a refused unlock changed the header"
cp "$T/cmdline.orig" "$B/cmdline.txt"
expect_ok "$LOCKROOT" unlock "$IMG" --test

info "a new initramfs and an added overlay file are refused, each named"
head -c 300000 /dev/urandom >"$B/initrd.img"
expect_fail 5 'boot file initrd.img changed' "$LOCKROOT" unlock "$IMG" --test
printf 'dtoverlay=extra\n' >>"$B/config.txt"
expect_fail 5 'boot file overlays/extra.dtbo is loaded now' "$LOCKROOT" unlock "$IMG" --test
grep -q 'boot file config.txt changed' "$T/err" || fail "config.txt not named: $(cat "$T/err")"

info "reseal (what the kernel hook does after an update): locked again, same keyslot, one token"
keyslots_before=$(cryptsetup luksDump "$IMG" | grep -c ': luks2')
expect_ok "$LOCKROOT" reseal "$IMG"
grep -q 'locked again to the boot files as they are now (1 token)' "$T/out" || fail "reseal said: $(cat "$T/out")"
expect_ok "$LOCKROOT" unlock "$IMG" --test
"$LOCKROOT" status "$IMG" --json >"$T/status.json"
[ "$(jq '[.[0].tokens[] | select(.type=="lockroot")] | length' "$T/status.json")" = 1 ] || fail "tokens after reseal"
[ "$(cryptsetup luksDump "$IMG" | grep -c ': luks2')" = "$keyslots_before" ] || fail "keyslots changed"
# lockroot_token IMG: the id of its (one) lockroot token
lockroot_token() {
	local id json
	for id in 0 1 2 3 4 5 6 7; do
		json=$(cryptsetup token export --token-id $id "$1" 2>/dev/null) || continue
		[ "$(jq -r .type <<<"$json")" = lockroot ] && { echo $id; return; }
	done
	fail "no lockroot token in $1"
}
TID=$(lockroot_token "$IMG")
[ "$TID" != 0 ] || fail "reseal did not write a new token (the old one first, then removed): $(cryptsetup luksDump "$IMG" | sed -n "/Tokens/,/Digests/p")"
cryptsetup token export --token-id "$TID" "$IMG" >"$T/t1.json"
jq -en "input | .keyslots == [\"1\"]" "$T/t1.json" >/dev/null || fail "the new token does not name keyslot 1: $(cat "$T/t1.json")"
expect_ok "$LOCKROOT" reseal "$IMG"
grep -q 'nothing to do' "$T/out" || fail "second reseal: $(cat "$T/out")"
# The recorded files are what the TPM was given: a token whose record is edited is refused.
cryptsetup token export --token-id "$TID" "$IMG" \
	| jq -c '(.boot_files.files[] | select(.path=="vmlinuz") | .sha256) = "'"$(printf 0%.0s {1..64})"'"' >"$T/forged.json"
cryptsetup token remove --token-id "$TID" "$IMG"
cryptsetup token import --token-id "$TID" "$IMG" <"$T/forged.json"
head -c 200000 /dev/urandom >"$B/vmlinuz"
expect_fail 5 'does not give the key|refused' "$LOCKROOT" reseal "$IMG"

info "reseal --key-file: a change made elsewhere is kept with the recovery key"
expect_fail 5 'boot file vmlinuz changed' "$LOCKROOT" unlock "$IMG" --test
expect_ok "$LOCKROOT" reseal "$IMG" --key-file "$T/rk"
expect_ok "$LOCKROOT" unlock "$IMG" --test
"$LOCKROOT" status "$IMG" --json >"$T/status.json"
[ "$(jq '[.[0].tokens[] | select(.type=="lockroot")] | length' "$T/status.json")" = 1 ] || fail "tokens after reseal --key-file"
printf 'not-the-passphrase' >"$T/wrong"
printf 'x' >>"$B/cmdline.txt"
expect_fail 7 'no keyslot' "$LOCKROOT" reseal "$IMG" --key-file "$T/wrong"
cp "$T/cmdline.orig" "$B/cmdline.txt"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" "$IMG" || fail "the recovery key no longer opens"

info "without DEVICE: the volumes of crypttab; one that is not there is skipped, not an error"
mkdir -p "$LOCKROOT_SYSROOT/etc"
printf '# comment\ncryptroot %s none luks\ngone /nonexistent/disk none luks\nplain %s none luks\n' "$IMG" "$B/config.txt" \
	>"$LOCKROOT_SYSROOT/etc/crypttab"
expect_ok "$LOCKROOT" reseal
grep -q "^$IMG: the boot files are as the key was locked to them" "$T/out" || fail "crypttab reseal: $(cat "$T/out" "$T/err")"
printf 'x' >>"$B/cmdline.txt"
expect_ok "$LOCKROOT" reseal --if-bound
grep -q "^$IMG: locked again" "$T/out" || fail "crypttab reseal after a change: $(cat "$T/out" "$T/err")"
expect_ok "$LOCKROOT" unlock "$IMG" --test

rm "$LOCKROOT_SYSROOT/etc/crypttab"

info "the boot partition as a block device: read where it is mounted, else mounted by lockroot"
IMG2=$T/disk2.img
make_luks2 "$IMG2"
truncate -s 16M "$T/boot.ext4"
mkfs.ext4 -q -F -d "$B" "$T/boot.ext4"
LOOP=$(losetup --show -f "$T/boot.ext4") || fail "losetup"
at_exit "umount $T/mnt 2>/dev/null; losetup -d $LOOP"
expect_ok "$LOCKROOT" enroll "$IMG2" --hsm "$HSM" --key-file "$T/pass" --bind board-serial,boot-files --boot-dev "$LOOP"
expect_ok "$LOCKROOT" unlock "$IMG2" --test
grep -q "$LOOP" /proc/self/mountinfo && fail "lockroot left the boot partition mounted"
ls /run/lockroot/boot-files.* >/dev/null 2>&1 && fail "lockroot left a mount point behind"
mkdir -p "$T/mnt"
mount "$LOOP" "$T/mnt"
expect_ok "$LOCKROOT" unlock "$IMG2" --test
echo 'dtparam=spi=on' >>"$T/mnt/config.txt"
expect_fail 5 'boot file config.txt changed' "$LOCKROOT" unlock "$IMG2" --test
expect_ok "$LOCKROOT" reseal "$IMG2"
umount "$T/mnt"
expect_ok "$LOCKROOT" unlock "$IMG2" --test

info "a volume not bound to the boot files: reseal says so, --if-bound is quiet"
IMG3=$T/disk3.img
make_luks2 "$IMG3"
expect_ok "$LOCKROOT" enroll "$IMG3" --hsm "$HSM" --key-file "$T/pass" --bind board-serial
expect_fail 11 'binds the boot files' "$LOCKROOT" reseal "$IMG3"
expect_ok "$LOCKROOT" reseal "$IMG3" --if-bound

info "PKCS#11: the same, the token's URI used to lock again"
start_softhsm lockroot-test
expect_ok "$LOCKROOT" keygen --hsm "$(p11_uri lockroot)"
IMG4=$T/disk4.img
make_luks2 "$IMG4"
expect_ok "$LOCKROOT" enroll "$IMG4" --hsm "$(p11_uri lockroot)" --key-file "$T/pass" --bind board-serial,boot-files \
	--boot-dev "$B"
expect_ok "$LOCKROOT" unlock "$IMG4" --test
head -c 300000 /dev/urandom >"$B/initrd.img"
expect_fail 5 'boot file initrd.img changed' "$LOCKROOT" unlock "$IMG4" --test
expect_ok "$LOCKROOT" reseal "$IMG4"
expect_ok "$LOCKROOT" unlock "$IMG4" --test
info "all checks passed"
