#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot setup-boot on an image file and a Raspberry Pi OS file tree: --dry-run lists every
# change and writes nothing; the real run enrolls and edits crypttab, fstab, cmdline.txt and
# config.txt (originals kept); a second run changes nothing. Rebuilding the initramfs for real
# is left to the system tests (it needs a guest root); here it is --no-initramfs.
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq
start_swtpm
IMG=$T/root.img
make_luks2 "$IMG"
UUID=$(cryptsetup luksUUID "$IMG")
R=$T/root
mkdir -p "$R/boot/firmware" "$R/etc" "$R/usr/sbin" "$R/usr/share/initramfs-tools/hooks" "$R/usr/lib/lockroot"
cat >"$R/boot/firmware/config.txt" <<'CFG'
# Raspberry Pi OS
dtparam=audio=on
[pi4]
arm_boost=1
[all]
enable_uart=1
CFG
echo 'console=serial0,115200 console=tty1 root=PARTUUID=abcd1234-02 rootfstype=ext4 fsck.repair=yes rootwait quiet' \
	>"$R/boot/firmware/cmdline.txt"
printf 'proc /proc proc defaults 0 0\nPARTUUID=abcd1234-01 /boot/firmware vfat defaults 0 2\nPARTUUID=abcd1234-02 / ext4 defaults,noatime 0 1\n' >"$R/etc/fstab"
# A root with initramfs-tools and lockroot installed: only their presence is checked here.
touch "$R/usr/sbin/update-initramfs" "$R/usr/share/initramfs-tools/hooks/lockroot" "$R/usr/lib/lockroot/keyscript"
snapshot() { (cd "$R" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

info "--dry-run prints the plan and changes nothing"
before=$(snapshot) hbefore=$(header_sum "$IMG")
expect_ok "$LOCKROOT" setup-boot "$IMG" --root "$R" --hsm "$HSM" --bind none --key-file "$T/pass" --dry-run
for f in etc/crypttab etc/fstab boot/firmware/cmdline.txt boot/firmware/config.txt; do
	grep -q "$R/$f" "$T/out" || fail "plan does not list $f: $(cat "$T/out")"
done
grep -q "enroll: new keyslot locked by $HSM" "$T/out" || fail "plan does not say it enrolls"
grep -q "+ cryptroot UUID=$UUID none luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript" "$T/out" \
	|| fail "plan does not show the crypttab line"
grep -q 'update-initramfs -u -k all' "$T/out" || fail "plan does not name the initramfs rebuild"
[ "$(snapshot)" = "$before" ] || fail "--dry-run changed files"
[ "$(header_sum "$IMG")" = "$hbefore" ] || fail "--dry-run changed the header"

info "the real run: enroll + boot files"
expect_ok "$LOCKROOT" setup-boot "$IMG" --root "$R" --hsm "$HSM" --bind none --key-file "$T/pass" --yes --no-initramfs
expect_ok "$LOCKROOT" unlock "$IMG" --test
grep -qx "cryptroot UUID=$UUID none luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript" "$R/etc/crypttab" \
	|| fail "crypttab: $(cat "$R/etc/crypttab")"
grep -q '^/dev/mapper/cryptroot / ext4 defaults,noatime 0 1$' "$R/etc/fstab" || fail "fstab: $(cat "$R/etc/fstab")"
[ "$(cat "$R/boot/firmware/cmdline.txt")" = 'console=serial0,115200 console=tty1 root=/dev/mapper/cryptroot rootfstype=ext4 fsck.repair=yes rootwait quiet' ] \
	|| fail "cmdline.txt: $(cat "$R/boot/firmware/cmdline.txt")"
grep -qx 'initramfs initrd.img followkernel' "$R/boot/firmware/config.txt" || fail "config.txt: $(cat "$R/boot/firmware/config.txt")"
grep -q 'root=PARTUUID=abcd1234-02' "$R/boot/firmware/cmdline.txt.lockroot-orig" || fail "original cmdline.txt not kept"

info "a second run keeps the token and changes no file"
after=$(snapshot) hafter=$(header_sum "$IMG")
expect_ok "$LOCKROOT" setup-boot "$IMG" --root "$R" --hsm "$HSM" --key-file "$T/pass" --yes --no-initramfs
grep -q 'keep lockroot token 0' "$T/out" || fail "second run: $(cat "$T/out")"
grep -q 'no file changes' "$T/out" || fail "second run plans file changes"
[ "$(snapshot)" = "$after" ] || fail "second run changed files"
[ "$(header_sum "$IMG")" = "$hafter" ] || fail "second run changed the header"

info "a root that is not encrypted is refused, naming it"
mkdir -p "$T/sys/proc/self"
echo '25 1 179:2 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw' >"$T/sys/proc/self/mountinfo"
LOCKROOT_SYSROOT=$T/sys expect_fail 3 '/dev/mmcblk0p2, which is not an encrypted volume' \
	"$LOCKROOT" setup-boot --root "$R" --hsm "$HSM" --dry-run

info "a root without lockroot's initramfs hook is refused before anything changes"
rm "$R/usr/share/initramfs-tools/hooks/lockroot"
before=$(snapshot)
expect_fail 1 'initramfs-tools hook is not installed' "$LOCKROOT" setup-boot "$IMG" --root "$R" --hsm "$HSM" --yes
[ "$(snapshot)" = "$before" ] || fail "refused run changed files"
exit 0
