#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck disable=SC2016 # mmdebstrap runs the hooks with the tree as $1: single quotes on purpose
# The system-test guest's base root tree: Debian 12 amd64 by mmdebstrap, packed as a tarball in
# the cache (never in git), keyed by a hash of guest-packages and this script, reused while
# neither changes. Prints the tarball's path on stdout; progress and mmdebstrap's log on stderr.
#
#   tests/system/make-base.sh        (as root; cache: ${LOCKROOT_CACHE:-/var/cache/lockroot-tests})
#
# No initramfs is built here (update-initramfs is diverted to a no-op while packages install):
# build-guest.sh builds it after lockroot is installed, with MODULES=list. The .debs of the
# second kernel (linux-image-cloud-amd64) are downloaded into the tree's /var/cache/lockroot-debs
# for build-guest.sh to install later.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${LOCKROOT_CACHE:-/var/cache/lockroot-tests}
. "$HERE/guest-lib.sh"

key=$(cat "$HERE/guest-packages" "$HERE/make-base.sh" "$HERE/guest-lib.sh" | sha256sum | cut -c1-16)
out=$CACHE/base-$key.tar
if [ -s "$out" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$CACHE"
pkgs=$(grep -v '^#' "$HERE/guest-packages" | xargs | tr ' ' ,)
echo "make-base: mmdebstrap bookworm amd64 -> $out (a few minutes, once)" >&2

# Modules the guest never needs: dropped to keep the root near 1 GiB (depmod is rerun).
TRIM='for k in "$1"/usr/lib/modules/*; do
	(cd "$k/kernel" && rm -rf sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband \
		drivers/staging drivers/bluetooth drivers/iio drivers/hid drivers/input/misc drivers/isdn \
		drivers/usb/gadget drivers/net/ethernet net/wireless net/bluetooth net/mac80211 fs/ocfs2 fs/gfs2 fs/nfs fs/xfs fs/btrfs)
	chroot "$1" depmod "${k##*/}"
done'

tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
debian_base amd64 "$tmp" "$pkgs" "$TRIM" linux-image-cloud-amd64
mv "$tmp" "$out"
trap - EXIT
# Older bases (another package list) are of no further use.
find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name 'base-arm64-*' ! -name "base-$key.tar" -delete
echo "$out"
