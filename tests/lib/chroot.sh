# SPDX-License-Identifier: LGPL-2.1-or-later
# Debian 12 chroots for the tests that build initramfs images (initramfs-contents.sh,
# deb-package.sh): cached tarballs, running commands inside, and what a lockroot initramfs
# must hold. Sourced after common.sh.
CACHE=${LOCKROOT_CACHE:-/var/cache/lockroot-tests}
# What the initramfs needs at run time besides the kernel: lockroot's own libraries.
RUNTIME_LIBS="libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-tcti-device0 libtss2-tctildr0 libjson-c5 libp11-kit0 libcryptsetup12 libssl3 libfdisk1 libgpiod2"
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
# cryptsetup, the TCTIs the TPM backend dlopen()s, p11-kit and the PKCS#11 module it names,
# libgpiod (the keyscript's tamper check reads latched lines).
LOCKROOT_FILES=(sbin/lockroot lib/lockroot/keyscript 'lib/[^/]+/cryptsetup/libcryptsetup-token-lockroot\.so'
	'lib/[^/]+/libgpiod\.so\.2'
	'lib/[^/]+/libtss2-tcti-device\.so\.0' 'lib/[^/]+/libtss2-tctildr\.so\.0' 'lib/[^/]+/libtss2-esys\.so\.0'
	'lib/[^/]+/libp11-kit\.so\.0' 'share/p11-kit/modules/softhsm2\.module' '.*/libsofthsm2\.so'
	etc/softhsm/softhsm2\.conf '.*/dm-crypt\.ko(\.xz|\.zst)?' '.*/adiantum\.ko(\.xz|\.zst)?'
	'.*/tpm_tis_spi\.ko(\.xz|\.zst)?' '.*/tpm_tis_i2c_cr50\.ko(\.xz|\.zst)?')
