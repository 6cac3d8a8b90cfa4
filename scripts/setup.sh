#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install everything lockroot needs to build, run and test, from Debian 12's archive only.
# Run as root. Idempotent.
#   scripts/setup.sh            everything: the native build, the arm64 and armhf cross toolchains
#                               and multiarch -dev packages (adds the dpkg architectures), the
#                               test suite's tools (QEMU for amd64 and arm64, qemu-user for arm64
#                               chroots, swtpm, SoftHSM2, mmdebstrap, debhelper, lintian)
#   scripts/setup.sh --native   only what the native build and the amd64 tests need
set -eu
CROSS=1
for a in "$@"; do
	case $a in
	--cross) CROSS=1 ;;  # the default; kept for older instructions
	--native) CROSS=0 ;;
	*) echo "usage: scripts/setup.sh [--native]" >&2; exit 2 ;;
	esac
done
PACKAGES="
  meson ninja-build pkg-config gcc libc6-dev
  libcryptsetup-dev cryptsetup-bin libjson-c-dev libssl-dev libfdisk-dev
  libtss2-dev swtpm tpm2-tools
  libp11-kit-dev p11-kit softhsm2 opensc
  libgpiod-dev gpiod
  jq util-linux procps expect mmdebstrap python3-cryptography
  qemu-system-x86 mtools dosfstools fdisk e2fsprogs python3-pexpect
  debhelper dpkg-dev fakeroot lintian
  linux-source-6.1 linux-headers-amd64
"
# linux-source-6.1 and linux-headers-amd64 (the headers of the kernel the amd64 guest gets from the
# same archive): gpio-sim built out of tree for the tamper scenario (tests/system/build-gpio-sim.sh).
if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (it installs Debian packages)" >&2
	exit 1
fi
CROSS_DEV="libcryptsetup-dev libjson-c-dev libssl-dev libfdisk-dev libtss2-dev libp11-kit-dev libgpiod-dev"
if [ $CROSS = 1 ]; then
	for a in arm64 armhf; do
		dpkg --print-foreign-architectures | grep -qx $a || dpkg --add-architecture $a
		PACKAGES="$PACKAGES crossbuild-essential-$a pkgconf:$a"
		for d in $CROSS_DEV; do PACKAGES="$PACKAGES $d:$a"; done
	done
	# file: cross-build.sh checks the ELF; the arm64 guests: QEMU's arm64 machines, arm64
	# chroots through qemu-user (binfmt), the Pi's device tree edited (fdtput).
	PACKAGES="$PACKAGES file qemu-system-arm qemu-user-static binfmt-support arch-test device-tree-compiler"
fi
missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup.sh: installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
echo "setup.sh: all build and test dependencies are installed"
