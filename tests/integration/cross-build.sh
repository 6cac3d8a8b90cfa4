#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Cross builds for the Pi's architectures with Debian's cross toolchains and multiarch -dev
# packages: scripts/cross-build.sh (meson, -Werror, both HSM backends) must give an arm64 and an
# armhf ELF of the CLI and the token plugin; scripts/build-deb.sh armhf must give a lintian-clean
# armhf package whose token plugin is in the armhf libcryptsetup's plugin directory
# (/lib/arm-linux-gnueabihf/cryptsetup), not the build machine's. Both builds' unit tests run
# under qemu-user. The arm64 package is built and booted by the system tests
# (tests/system/arm64/build-guest.sh; scenario 80 runs the arm64 unit tests on an arm64 kernel).
#
# It builds lockroot itself, so tests/run runs it in the normal pass only:
# lockroot-test: own-build
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need arm-linux-gnueabihf-gcc aarch64-linux-gnu-gcc dpkg-buildpackage lintian file git
git -C "$TOP" rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout (build-deb.sh copies the tracked files)"

info "scripts/cross-build.sh arm64 armhf"
W=$T/src
mkdir -p "$W"
(cd "$TOP" && git ls-files -z | xargs -0 cp --parents -t "$W")
"$W/scripts/cross-build.sh" arm64 armhf >"$T/cross.log" 2>&1 || { cat "$T/cross.log" >&2; fail "cross-build.sh"; }
file -b "$W/build-arm64/src/lockroot" | grep -q 'ARM aarch64' || fail "build-arm64/src/lockroot: $(file -b "$W/build-arm64/src/lockroot")"
file -b "$W/build-armhf/src/lockroot" | grep -q 'ARM, EABI5' || fail "build-armhf/src/lockroot: $(file -b "$W/build-armhf/src/lockroot")"

info "the unit tests of both cross builds under qemu-user (armhf: 32-bit size_t and time_t)"
# qemu-user gives qemu-aarch64, qemu-user-static (what setup.sh installs) qemu-aarch64-static.
qemu_for() { command -v "qemu-$1" || command -v "qemu-$1-static" || skip "neither qemu-$1 nor qemu-$1-static is installed"; }
for a in arm64:aarch64:aarch64-linux-gnu armhf:arm:arm-linux-gnueabihf; do
	IFS=: read -r arch q triplet <<<"$a"
	qemu=$(qemu_for "$q") || exit 77
	n=0
	for t in "$W/build-$arch"/tests/test-*; do
		[ -f "$t" ] && [ -x "$t" ] || continue
		case ${t##*/} in test-backend-*) continue ;; esac  # programs for the integration tests
		LOCKROOT_TEST_QEMU_USER=1 QEMU_LD_PREFIX=/usr/$triplet TMPDIR=$T timeout 300 "$qemu" "$t" \
			>"$T/unit.log" 2>&1 || { cat "$T/unit.log" >&2; fail "$arch ${t##*/} under ${qemu##*/}"; }
		n=$((n + 1))
	done
	[ $n -ge 9 ] || fail "$arch: only $n unit tests found in build-$arch/tests"
done

info "scripts/build-deb.sh armhf (dpkg-buildpackage -a armhf, lintian --fail-on error,warning)"
LOCKROOT_DEB_OUT=$T/deb "$TOP/scripts/build-deb.sh" armhf >"$T/build-deb.log" 2>&1 \
	|| { cat "$T/build-deb.log" >&2; fail "build-deb.sh armhf"; }
DEB=$(ls "$T"/deb/lockroot_*_armhf.deb)
[ "$(dpkg-deb -f "$DEB" Architecture)" = armhf ] || fail "$DEB is not armhf"
dpkg-deb -c "$DEB" | awk '{print $6}' >"$T/contents"
grep -qx './lib/arm-linux-gnueabihf/cryptsetup/libcryptsetup-token-lockroot.so' "$T/contents" \
	|| fail "the armhf token plugin is not in /lib/arm-linux-gnueabihf/cryptsetup: $(grep token "$T/contents")"
grep -q 'x86_64' "$T/contents" && fail "the armhf package holds x86_64 paths: $(grep x86_64 "$T/contents")"
dpkg-deb -x "$DEB" "$T/x"
file -b "$T/x/usr/sbin/lockroot" | grep -q 'ARM, EABI5' || fail "the armhf package's lockroot is $(file -b "$T/x/usr/sbin/lockroot")"
exit 0
