#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the Debian package from this checkout and check it with lintian.
#
#   scripts/build-deb.sh [amd64] [arm64] [armhf]     (default: the build machine's architecture)
#
# The tracked files (git ls-files, as they are in the working tree) are copied to
# build-deb/lockroot/, so the checkout stays clean; packages, .changes and logs land in
# build-deb/ (or $LOCKROOT_DEB_OUT). A foreign architecture is cross-built
# (dpkg-buildpackage -a ARCH -Pcross,nocheck; scripts/setup.sh installs the toolchains).
# Needs debhelper and lintian (scripts/setup.sh). Exit 0 when every package built and lintian
# reported no error or warning.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=${LOCKROOT_DEB_OUT:-$TOP/build-deb}
NATIVE=$(dpkg --print-architecture)
[ $# -gt 0 ] || set -- "$NATIVE"
rm -rf "$OUT/lockroot"
mkdir -p "$OUT/lockroot"
(cd "$TOP" && git ls-files -z | xargs -0 cp --parents -t "$OUT/lockroot")
version=$(dpkg-parsechangelog -l "$TOP/debian/changelog" -S Version)
rc=0
for arch in "$@"; do
	log=$OUT/build-$arch.log
	cross=""
	[ "$arch" = "$NATIVE" ] || cross="-a $arch -Pcross,nocheck"
	# shellcheck disable=SC2086
	if ! (cd "$OUT/lockroot" && dpkg-buildpackage $cross -b -us -uc) >"$log" 2>&1; then
		tail -30 "$log" >&2
		echo "build-deb: $arch: dpkg-buildpackage failed (log $log)" >&2
		rc=1
		continue
	fi
	# --fail-on warning: errors and warnings fail; info and pedantic tags are listed in the log.
	if ! lintian --fail-on error,warning "$OUT/lockroot_${version}_$arch.changes" >"$OUT/lintian-$arch.log" 2>&1; then
		grep -v 'root privileges' "$OUT/lintian-$arch.log" >&2
		echo "build-deb: $arch: lintian reported errors or warnings" >&2
		rc=1
		continue
	fi
	echo "build-deb: $arch: $OUT/lockroot_${version}_$arch.deb, lintian clean"
done
exit $rc
