#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Cross-build lockroot for Raspberry Pi OS / Debian on arm64 and armhf with Debian's cross
# toolchains and multiarch -dev packages (scripts/setup.sh installs them).
#
#   scripts/cross-build.sh [arm64] [armhf]      (default: both)
#
# Builds into build-ARCH/ with cross/ARCH.ini (TPM2 and PKCS#11 backends on, -Werror as for the
# native build) and checks that what came out is an ELF for ARCH. Exit 0 when every build did.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- arm64 armhf
rc=0
for arch in "$@"; do
	case $arch in
	arm64) want="ARM aarch64" ;;
	armhf) want="ARM, EABI5" ;;
	*) echo "cross-build: unknown architecture $arch (arm64, armhf)" >&2; exit 2 ;;
	esac
	b=$TOP/build-$arch
	if [ ! -f "$b/build.ninja" ]; then
		meson setup "$b" "$TOP" --cross-file "$TOP/cross/$arch.ini" -Dtpm2=enabled -Dpkcs11=enabled -Dgpiod=enabled \
			>"$b.setup.log" 2>&1 || { cat "$b.setup.log" >&2; echo "cross-build: $arch: meson setup failed (scripts/setup.sh?)" >&2; rc=1; continue; }
	fi
	if ! ninja -C "$b" >"$b.ninja.log" 2>&1; then
		cat "$b.ninja.log" >&2; echo "cross-build: $arch: build failed" >&2; rc=1; continue
	fi
	for f in src/lockroot token/libcryptsetup-token-lockroot.so; do
		[ -e "$b/$f" ] || continue
		file -b "$b/$f" | grep -q "$want" || { echo "cross-build: $arch: $f is $(file -b "$b/$f")" >&2; rc=1; }
	done
	echo "cross-build: $arch: ok ($(file -b "$b/src/lockroot" | cut -d, -f1-2))"
done
exit $rc
