#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# What lockroot installs for the boot really ends up in the initramfs: a Debian 12 chroot with
# a kernel and cryptsetup-initramfs, lockroot installed into it by `meson install`
# (--prefix=/usr, as the system tests do), the crypttab line of the interface, then
# update-initramfs and lsinitramfs. Then a second kernel package: zz-lockroot must have made
# its initramfs, with lockroot inside. Then the same for dracut in a second chroot.
#
# The chroots are built once by mmdebstrap (a few minutes) into
# ${LOCKROOT_CACHE:-/var/cache/lockroot-tests}, keyed by a hash of what goes into them, and
# reused (each run unpacks a fresh copy).
#
# It builds lockroot itself (meson setup in its scratch directory), so tests/run runs it in the
# normal pass only:
# lockroot-test: own-build
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need_root
need mmdebstrap meson ninja tar unshare dpkg
# The chroots hold amd64 kernels (linux-image-amd64, linux-image-cloud-amd64).
[ "$(dpkg --print-architecture)" = amd64 ] || skip "the chroots of this test are amd64"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/chroot.sh"

# unpack_root TAR DIR: a fresh chroot from the cache, with lockroot installed as the system
# tests install it and the interface's crypttab line.
unpack_root() {
	mkdir -p "$2"
	tar -C "$2" -xf "$1" || fail "unpacking $1"
	DESTDIR=$2 meson install -C "$T/build" --no-rebuild --quiet >>"$T/meson.log" 2>&1 \
		|| { tail -20 "$T/meson.log" >&2; fail "meson install into $2"; }
	echo "$CRYPTTAB_LINE" >>"$2/etc/crypttab"
	# A PKCS#11 token's PIN for boot (pin-source=file:/etc/lockroot/NAME.pin): the hooks copy it.
	mkdir -p "$2/etc/lockroot"
	(umask 022; echo 4711 >"$2/etc/lockroot/boot.pin")
}

# Both chroots at once: on a cold cache their builds are most of the test's time.
cached_root dracut "$DRACUT_PKGS" "$DRACUT_SETUP" true >"$T/dracut-tar" &
dracut_job=$!
# On an early failure, let it finish (it fills the cache) rather than leave mmdebstrap running.
at_exit "wait $dracut_job"

info "lockroot built with --prefix=/usr"
meson setup "$T/build" "$TOP" --prefix=/usr >"$T/meson.log" 2>&1 || { cat "$T/meson.log" >&2; fail "meson setup"; }
ninja -C "$T/build" >>"$T/meson.log" 2>&1 || { tail -30 "$T/meson.log" >&2; fail "ninja"; }

# ---- initramfs-tools ------------------------------------------------------------------
IT_TAR=$(cached_root initramfs-tools "$IT_PKGS" "$IT_SETUP" "$SAVE_DEBS")
R=$T/it
unpack_root "$IT_TAR" "$R"
KVER=$(basename "$(ls -d "$R"/lib/modules/*)")

info "update-initramfs -u -k all in the chroot ($KVER)"
in_root "$R" update-initramfs -u -k all >"$T/update.log" 2>&1 || { cat "$T/update.log" >&2; fail "update-initramfs"; }
in_root "$R" lsinitramfs "/boot/initrd.img-$KVER" >"$T/it.list" || fail "lsinitramfs"
has "$T/it.list" "${LOCKROOT_FILES[@]}" sbin/cryptsetup 'lib/cryptsetup/askpass'

info "cryptsetup-initramfs took the crypttab entry with our keyscript (no root detection in a chroot)"
in_root "$R" unmkinitramfs "/boot/initrd.img-$KVER" /tmp/unpacked >/dev/null 2>&1 || fail "unmkinitramfs"
IR=$R/tmp/unpacked
[ -d "$IR/main" ] && IR=$IR/main
has "$T/it.list" etc/lockroot/boot\.pin
[ "$(stat -c %a "$IR/etc/lockroot/boot.pin")" = 600 ] \
	|| fail "the PIN file in the initramfs is mode $(stat -c %a "$IR/etc/lockroot/boot.pin" 2>&1), not 600"
grep -qF "keyscript=/usr/lib/lockroot/keyscript" "$IR/cryptroot/crypttab" \
	|| fail "cryptroot/crypttab lacks our entry: $(cat "$IR/cryptroot/crypttab" 2>&1)"

info "inside the unpacked initramfs: lockroot enrolls and unlocks with swtpm, its plugin works in stock cryptsetup"
# Only what the initramfs holds is used: its loader, libraries, TCTIs and plugin. swtpm's
# socket is put inside it, so the TCTI path stored in the token is valid there.
need swtpm
mkdir -p "$IR/run/swtpm" "$IR/run/cryptsetup" "$IR/tmp" "$IR/proc" "$IR/dev"
swtpm socket --tpm2 --tpmstate dir="$IR/run/swtpm" --server type=unixio,path="$IR/run/swtpm/sock" \
	--ctrl type=unixio,path="$IR/run/swtpm/sock.ctrl" --flags startup-clear,not-need-init \
	--pid file="$IR/run/swtpm/pid" --daemon || fail "swtpm"
wait_for 10 test -s "$IR/run/swtpm/pid" || fail "swtpm pid"
at_exit "kill $(cat "$IR/run/swtpm/pid") 2>/dev/null"
truncate -s 32M "$IR/tmp/disk.img"
printf '%s' test-passphrase >"$IR/tmp/pass"
cryptsetup luksFormat -q --type luks2 "${FAST_PBKDF[@]}" --key-file "$IR/tmp/pass" "$IR/tmp/disk.img" || fail "luksFormat"
in_root "$IR" /usr/sbin/lockroot enroll /tmp/disk.img --hsm tpm2:swtpm:path=/run/swtpm/sock --bind none \
	--key-file /tmp/pass >"$T/enroll.log" 2>&1 || { cat "$T/enroll.log" >&2; fail "lockroot enroll inside the initramfs"; }
in_root "$IR" cryptsetup open --test-passphrase --token-only /tmp/disk.img \
	|| fail "the initramfs's cryptsetup did not unlock through the lockroot plugin"
in_root "$IR" sh -c 'CRYPTTAB_SOURCE=/tmp/disk.img CRYPTTAB_NAME=cryptroot CRYPTTAB_TRIED=0 /usr/lib/lockroot/keyscript none |
	cryptsetup open --test-passphrase --disable-external-tokens --key-file - /tmp/disk.img' \
	|| fail "the initramfs's keyscript did not unlock"
rm -rf "$R/tmp/unpacked"

info "zz-lockroot fails loudly when an initramfs lacks lockroot"
chmod -x "$R/usr/share/initramfs-tools/hooks/lockroot"   # initramfs-tools skips it
touch "$R/etc/crypttab"                                  # and the initramfs is now stale
rc=0
in_root "$R" /etc/kernel/postinst.d/zz-lockroot "$KVER" >"$T/zz.log" 2>&1 || rc=$?
[ $rc != 0 ] || { cat "$T/zz.log" >&2; fail "zz-lockroot succeeded with an initramfs without lockroot"; }
grep -q "^lockroot: ERROR: /boot/initrd.img-$KVER lacks /usr/sbin/lockroot" "$T/zz.log" || { cat "$T/zz.log" >&2; fail "zz-lockroot did not say why"; }
chmod +x "$R/usr/share/initramfs-tools/hooks/lockroot"

info "a second kernel package ($SECOND_KERNEL): zz-lockroot makes and checks its initramfs"
in_root "$R" sh -c 'dpkg -i /var/cache/lockroot-debs/*.deb' >"$T/dpkg.log" 2>&1 || { tail -30 "$T/dpkg.log" >&2; fail "dpkg -i $SECOND_KERNEL"; }
KVER2=$(basename "$(ls -d "$R"/lib/modules/*cloud*)")
grep -q '^lockroot: 2 initramfs image(s) contain lockroot' "$T/dpkg.log" || { tail -30 "$T/dpkg.log" >&2; fail "zz-lockroot did not check both kernels"; }
in_root "$R" lsinitramfs "/boot/initrd.img-$KVER2" >"$T/it2.list" || fail "no initramfs for $KVER2"
has "$T/it2.list" sbin/lockroot lib/lockroot/keyscript 'lib/[^/]+/cryptsetup/libcryptsetup-token-lockroot\.so'
in_root "$R" lsinitramfs "/boot/initrd.img-$KVER" >"$T/it.list" || fail "lsinitramfs"
has "$T/it.list" sbin/lockroot

# ---- dracut ---------------------------------------------------------------------------
wait $dracut_job || fail "building the dracut chroot"
DRACUT_TAR=$(cat "$T/dracut-tar")
R=$T/dracut
unpack_root "$DRACUT_TAR" "$R"
KVER=$(basename "$(ls -d "$R"/lib/modules/*)")
info "dracut in the chroot ($KVER): the lockroot module is picked by its check() from crypttab"
in_root "$R" dracut -f "/boot/initrd.img-$KVER" "$KVER" >"$T/dracut.log" 2>&1 || { tail -30 "$T/dracut.log" >&2; fail "dracut"; }
grep -q "Including module: lockroot" "$T/dracut.log" || { cat "$T/dracut.log" >&2; fail "dracut did not include lockroot"; }
in_root "$R" lsinitrd "/boot/initrd.img-$KVER" >"$T/dracut.list" || fail "lsinitrd"
has "$T/dracut.list" "${LOCKROOT_FILES[@]}" etc/lockroot/boot\.pin
grep -Eq '^-rw------- .* etc/lockroot/boot\.pin$' "$T/dracut.list" \
	|| fail "the PIN file in the dracut initramfs is not mode 600: $(grep boot.pin "$T/dracut.list")"
exit 0
