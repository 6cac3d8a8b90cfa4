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
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need_root
need mmdebstrap meson ninja tar unshare
CACHE=${LOCKROOT_CACHE:-/var/cache/lockroot-tests}
# What the initramfs needs at run time besides the kernel: lockroot's own libraries.
RUNTIME_LIBS="libtss2-esys-3.0.2-0 libtss2-tcti-device0 libtss2-tctildr0 libjson-c5 libp11-kit0 libcryptsetup12 libssl3"
# MODULES=list: a "most" initramfs per kernel costs minutes; the test checks our additions.
# conf.d, not initramfs.conf, so dpkg meets no modified conffile.
IT_SETUP='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list >"$1/etc/initramfs-tools/conf.d/lockroot-test"'
DRACUT_SETUP='mkdir -p "$1/etc/dracut.conf.d" && echo hostonly=no >"$1/etc/dracut.conf.d/10-lockroot-test.conf"'
# The second kernel is downloaded while the cache is built, so that a warm run needs no network.
SECOND_KERNEL=linux-image-cloud-amd64
SAVE_DEBS='chroot "$1" apt-get install -y --download-only '$SECOND_KERNEL' && mkdir -p "$1/var/cache/lockroot-debs" && mv "$1"/var/cache/apt/archives/*.deb "$1/var/cache/lockroot-debs/"'

# cached_root NAME PACKAGES SETUP_HOOK CUSTOMIZE_HOOK: prints the path of a cached tarball of a
# bookworm chroot with PACKAGES, building it when missing.
cached_root() {
	local name=$1 pkgs=$2 setup=$3 custom=$4 key tar
	key=$(printf 'v1\n%s\n%s\n%s\n%s\n' "$(uname -m)" "$pkgs" "$setup" "$custom" | sha256sum | cut -c1-16)
	tar=$CACHE/$name-$key.tar
	if [ ! -s "$tar" ]; then
		mkdir -p "$CACHE"
		info "building the $name chroot into $tar (once; a few minutes)"
		# Build under another name, rename when complete: an interrupted build is never reused.
		mmdebstrap --variant=apt --include="$pkgs" --setup-hook "$setup" --customize-hook "$custom" \
			bookworm "$tar.tmp" >"$T/mmdebstrap-$name.log" 2>&1 \
			|| { tail -30 "$T/mmdebstrap-$name.log" >&2; rm -f "$tar.tmp"; fail "mmdebstrap $name"; }
		mv "$tar.tmp" "$tar"
	fi
	echo "$tar"
}
