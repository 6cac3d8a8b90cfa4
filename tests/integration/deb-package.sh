#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Debian package: scripts/build-deb.sh builds it from this checkout (dpkg-buildpackage,
# its unit tests included) and lintian must report no error or warning; then it is installed
# with apt into a clean Debian 12 chroot that has a kernel and cryptsetup-initramfs but no
# lockroot and none of its other dependencies: apt must find every declared dependency in the
# archive (a wrong name is the "unable to locate package" failure), dpkg's trigger must rebuild
# the initramfs, and that initramfs must hold everything the unlock needs (lib/chroot.sh's list).
# Needs the Debian archive (apt in the chroot), like scripts/setup.sh.
#
# It builds lockroot itself, so tests/run runs it in the normal pass only:
# lockroot-test: own-build
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need_root
need mmdebstrap dpkg-buildpackage lintian tar unshare
[ "$(dpkg --print-architecture)" = amd64 ] || skip "the chroot of this test is amd64"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/chroot.sh"
ARCH=amd64

info "scripts/build-deb.sh $ARCH (dpkg-buildpackage, lintian --fail-on error,warning)"
LOCKROOT_DEB_OUT=$T/deb "$TOP/scripts/build-deb.sh" $ARCH >"$T/build-deb.log" 2>&1 \
	|| { cat "$T/build-deb.log" >&2; fail "build-deb.sh"; }
DEB=$(ls "$T"/deb/lockroot_*_$ARCH.deb)
grep -Ev 'root privileges' "$T/deb/lintian-$ARCH.log" | grep -E '^[EW]: ' && fail "lintian errors or warnings"

info "what the package holds"
dpkg-deb -c "$DEB" | awk '{print $6}' >"$T/contents"
for f in ./usr/sbin/lockroot ./usr/lib/lockroot/keyscript \
	./lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-lockroot.so \
	./usr/share/initramfs-tools/hooks/lockroot ./usr/share/initramfs-tools/scripts/init-premount/lockroot-convert \
	./usr/lib/dracut/modules.d/90lockroot/module-setup.sh ./etc/kernel/postinst.d/zz-lockroot \
	./etc/initramfs/post-update.d/zz-lockroot ./usr/share/man/man8/lockroot-reseal.8.gz \
	./usr/lib/systemd/system/lockroot-convert.service ./usr/lib/systemd/system/lockroot-migrate.service \
	./usr/share/bash-completion/completions/lockroot ./usr/share/man/man8/lockroot.8.gz; do
	grep -qxF "$f" "$T/contents" || fail "the package lacks $f"
done
# One man page per command of `lockroot --help`.
for c in $("$LOCKROOT" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}'); do
	grep -qxF "./usr/share/man/man8/lockroot-$c.8.gz" "$T/contents" || fail "no man page for lockroot $c"
done

IT_TAR=$(cached_root initramfs-tools "$IT_PKGS" "$IT_SETUP" "$SAVE_DEBS")
R=$T/root
mkdir -p "$R"
tar -C "$R" -xf "$IT_TAR" || fail "unpacking $IT_TAR"
in_root "$R" dpkg -s lockroot >/dev/null 2>&1 && fail "the chroot already has lockroot"
in_root "$R" dpkg -s rsync >/dev/null 2>&1 && fail "the chroot already has rsync: it would not show a missing dependency"
echo "$CRYPTTAB_LINE" >>"$R/etc/crypttab"
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp "$DEB" "$R/tmp/"

info "apt-get install ./$(basename "$DEB") in the chroot"
in_root "$R" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/'"$(basename "$DEB")" \
	>"$T/apt.log" 2>&1 || { tail -40 "$T/apt.log" >&2; fail "apt-get install of the package"; }
in_root "$R" dpkg -s lockroot | grep -qx 'Status: install ok installed' || fail "lockroot is not installed"
grep -q 'update-initramfs' "$T/apt.log" || { tail -40 "$T/apt.log" >&2; fail "installing did not rebuild the initramfs"; }
# Services shipped, none enabled by the package.
ls "$R"/etc/systemd/system/*.wants/lockroot-* 2>/dev/null && fail "the package enabled a lockroot service"

KVER=$(basename "$(ls -d "$R"/lib/modules/*)")
in_root "$R" lsinitramfs "/boot/initrd.img-$KVER" >"$T/it.list" || fail "lsinitramfs"
has "$T/it.list" "${LOCKROOT_FILES[@]}" sbin/cryptsetup

info "the installed lockroot runs in the chroot"
in_root "$R" lockroot --help >/dev/null || fail "lockroot --help in the chroot"
exit 0
