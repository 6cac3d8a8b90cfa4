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
CACHE=${LOCKROOT_CACHE:-/var/cache/lockroot-tests}
# What the initramfs needs at run time besides the kernel: lockroot's own libraries.
RUNTIME_LIBS="libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-tcti-device0 libtss2-tctildr0 libjson-c5 libp11-kit0 libcryptsetup12 libssl3 libfdisk1"
# MODULES=list: a "most" initramfs per kernel costs minutes; the test checks our additions.
# conf.d, not initramfs.conf, so dpkg meets no modified conffile.
IT_SETUP='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list >"$1/etc/initramfs-tools/conf.d/lockroot-test"'
DRACUT_SETUP='mkdir -p "$1/etc/dracut.conf.d" && echo hostonly=no >"$1/etc/dracut.conf.d/10-lockroot-test.conf"'
# The second kernel is downloaded while the cache is built, so that a warm run needs no network.
SECOND_KERNEL=linux-image-cloud-amd64
SAVE_DEBS='chroot "$1" apt-get install -y --download-only '$SECOND_KERNEL' && mkdir -p "$1/var/cache/lockroot-debs" && mv "$1"/var/cache/apt/archives/linux-image-*cloud*.deb "$1/var/cache/lockroot-debs/"'

# cached_root NAME PACKAGES SETUP_HOOK CUSTOMIZE_HOOK: prints the path of a cached tarball of a
# bookworm chroot with PACKAGES, building it when missing.
cached_root() {
	local name=$1 pkgs=$2 setup=$3 custom=$4 key tar
	key=$(printf 'v1\n%s\n%s\n%s\n' "$pkgs" "$setup" "$custom" | sha256sum | cut -c1-16)
	tar=$CACHE/$name-$key.tar
	if [ ! -s "$tar" ]; then
		mkdir -p "$CACHE"
		info "building the $name chroot into $tar (once; a few minutes)"
		# Build under another name, rename when complete: an interrupted build is never reused.
		mmdebstrap --variant=apt --format=tar --include="$pkgs" --setup-hook "$setup" --customize-hook "$custom" \
			bookworm "$tar.tmp" >"$T/mmdebstrap-$name.log" 2>&1 \
			|| { tail -30 "$T/mmdebstrap-$name.log" >&2; rm -f "$tar.tmp"; fail "mmdebstrap $name"; }
		mv "$tar.tmp" "$tar"
	fi
	echo "$tar"
}

IT_PKGS="linux-image-amd64,cryptsetup-initramfs,softhsm2,${RUNTIME_LIBS// /,}"
DRACUT_PKGS="linux-image-amd64,dracut,cryptsetup,softhsm2,${RUNTIME_LIBS// /,}"
LUKS_UUID=5f0c3b1e-8d4a-4c2e-9b7f-0a1b2c3d4e5f
CRYPTTAB_LINE="cryptroot UUID=$LUKS_UUID none luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript"

# in_root ROOT CMD...: run CMD in the chroot, with its own /proc and the host's /dev, in a
# private mount namespace so that nothing stays mounted when the test ends, however it ends.
in_root() {
	local root=$1
	shift
	unshare -m --propagation private sh -c 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" &&
		exec chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"' "$root" "$@"
}

# unpack_root TAR DIR: a fresh chroot from the cache, with lockroot installed as the system
# tests install it and the interface's crypttab line.
unpack_root() {
	mkdir -p "$2"
	tar -C "$2" -xf "$1" || fail "unpacking $1"
	DESTDIR=$2 meson install -C "$T/build" --no-rebuild --quiet >>"$T/meson.log" 2>&1 \
		|| { tail -20 "$T/meson.log" >&2; fail "meson install into $2"; }
	echo "$CRYPTTAB_LINE" >>"$2/etc/crypttab"
}

# has LISTING REGEX...: every extended regex matches a whole path in LISTING (lsinitramfs: one
# path a line; lsinitrd: `ls -l` lines, "-> target" after a link; leading ./ and usr/ optional,
# for merged and split /usr).
has() {
	local listing=$1 re
	shift
	for re in "$@"; do
		grep -Eq "(^|[[:space:]])(\./)?(usr/)?$re( -> .*)?\$" "$listing" || fail "$re is not in the initramfs ($listing)"
	done
}
# What any lockroot initramfs holds: the helper, the keyscript, the token plugin for stock
# cryptsetup, the TCTIs the TPM backend dlopen()s, p11-kit and the PKCS#11 module it names.
LOCKROOT_FILES=(sbin/lockroot lib/lockroot/keyscript 'lib/[^/]+/cryptsetup/libcryptsetup-token-lockroot\.so'
	'lib/[^/]+/libtss2-tcti-device\.so\.0' 'lib/[^/]+/libtss2-tctildr\.so\.0' 'lib/[^/]+/libtss2-esys\.so\.0'
	'lib/[^/]+/libp11-kit\.so\.0' 'share/p11-kit/modules/softhsm2\.module' '.*/libsofthsm2\.so'
	etc/softhsm/softhsm2\.conf '.*/dm-crypt\.ko(\.xz|\.zst)?' '.*/adiantum\.ko(\.xz|\.zst)?'
	'.*/tpm_tis_spi\.ko(\.xz|\.zst)?' '.*/tpm_tis_i2c_cr50\.ko(\.xz|\.zst)?')

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
has "$T/dracut.list" "${LOCKROOT_FILES[@]}"
exit 0
