#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck disable=SC2016 # mmdebstrap runs the hooks with the tree as $1: single quotes on purpose
# The arm64 guests' base root tree: Debian 12 arm64 by mmdebstrap through qemu-user (binfmt),
# packed as a tarball in the cache (never in git), keyed by a hash of guest-packages and this
# script, reused while neither changes. Prints the tarball's path on stdout; progress and
# mmdebstrap's log on stderr.
#
#   tests/system/arm64/make-base.sh    (as root; cache: ${LOCKROOT_CACHE:-/var/cache/lockroot-tests})
#
# The Pi's kernel (linux-image-arm64) is installed with update-initramfs diverted to a no-op, and
# its modules are trimmed to what an emulated Pi 3 or arm64 virt machine can use (the root must
# stay small: the emulated SD card writes a few MB/s). linux-image-cloud-arm64's .debs (the
# kernel with tpm_tis, for the virt machine) are downloaded into /var/cache/lockroot-debs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${LOCKROOT_CACHE:-/var/cache/lockroot-tests}
. "$HERE/../guest-lib.sh"

key=$(cat "$HERE/guest-packages" "$HERE/make-base.sh" "$HERE/../guest-lib.sh" | sha256sum | cut -c1-16)
out=$CACHE/base-arm64-$key.tar
if [ -s "$out" ]; then
	echo "$out"
	exit 0
fi
# qemu-user runs the arm64 maintainer scripts: binfmt_misc must be mounted and the handler on.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
	mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	update-binfmts --enable qemu-aarch64
fi
mkdir -p "$CACHE"
pkgs=$(grep -v '^#' "$HERE/guest-packages" | xargs | tr ' ' ,)
echo "make-base: mmdebstrap bookworm arm64 -> $out (several minutes, once)" >&2

# Kernel modules: only what the two machines and the tests use (about 1/8 of the generic
# kernel's). Top level: keep arch crypto lib block drivers fs; fs: keep ext4, FAT, NLS;
# drivers: drop the classes no guest has.
TRIM='for k in "$1"/usr/lib/modules/*; do
	cd "$k/kernel"
	find . -mindepth 1 -maxdepth 1 ! -name arch ! -name crypto ! -name lib ! -name block \
		! -name drivers ! -name fs -exec rm -rf {} +
	find fs -mindepth 1 -maxdepth 1 ! -name ext4 ! -name jbd2 ! -name fat ! -name nls \
		! -name "mbcache.ko*" -exec rm -rf {} +
	(cd drivers && rm -rf gpu media net infiniband staging bluetooth iio isdn hwmon \
		input hid video thermal rtc edac target vhost vfio mtd atm memstick w1 fpga ata nvme \
		net misc power interconnect perf remoteproc rpmsg soundwire accel bus/mhi crypto/ccp \
		crypto/hisilicon platform/chrome platform/x86 scsi/qla2xxx scsi/lpfc scsi/mpt3sas \
		scsi/megaraid scsi/qedf scsi/qedi scsi/bnx2fc scsi/be2iscsi scsi/bfa scsi/csiostor \
		scsi/cxgbi scsi/fnic scsi/hisi_sas scsi/smartpqi scsi/aacraid scsi/aic7xxx scsi/aic94xx \
		scsi/pm8001 scsi/mpi3mr scsi/elx scsi/arcmsr md/bcache md/persistent-data ufs)
	chroot "$1" depmod "${k##*/}"
done'

tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
debian_base arm64 "$tmp" "linux-image-arm64,$pkgs" "$TRIM" linux-image-cloud-arm64
mv "$tmp" "$out"
trap - EXIT
find "$CACHE" -maxdepth 1 -name 'base-arm64-*.tar' ! -name "base-arm64-$key.tar" -delete
echo "$out"
