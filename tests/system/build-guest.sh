#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the system-test guest disk: Debian 12 amd64 laid out like a Raspberry Pi SD card, with
# the current lockroot installed and its root encrypted with LUKS2.
#
#   tests/system/build-guest.sh [--plain] [--keyfile-initrd] [OUTDIR]
#     OUTDIR            default ${BUILD:-build}/system/guest
#     --plain           crypttab without lockroot's keyscript (cryptsetup's own passphrase prompt)
#                       -- automatic while lockroot installs no /usr/lib/lockroot/keyscript
#     --keyfile-initrd  also build initrd-keyfile.img: a keyscript that cats a key file baked into
#                       the initramfs (bench/boot.sh's comparison, never a way to deploy)
#
# Disk (MBR): partition 1 FAT32 "boot" with config.txt, cmdline.txt, vmlinuz, initrd.img and every
# kernel's vmlinuz-VER / initrd.img-VER (what raspi-firmware would copy there); partition 2 the
# LUKS2 root (test passphrase in keyslot 0, PBKDF2 1000 iterations), ext4 inside.
# Writes OUTDIR/disk.img, OUTDIR/guest.json (facts the tests need), OUTDIR/test-passphrase, and
# OUTDIR/plain-disk.img: the same tree on a plaintext ext4 root (partition 2 of the same size,
# fixed MBR label-id; empty crypttab, fstab and cmdline.txt by PARTUUID, its own initramfs for
# the main kernel), what `lockroot migrate` starts from; OUTDIR/test-tree.manifest:
# lockroot-test-manifest's output for the test tree /srv/lockroot-test (guest-test-tree.sh).
#
# The base tree comes from make-base.sh (cached). Then, each run, in a chroot on the host:
# lockroot installed by meson, guest configuration written, the test tree made, initramfs built
# with MODULES=list, linux-image-cloud-amd64 installed after lockroot (so its kernel hooks run),
# root file system made with mkfs.ext4 -d and encrypted offline with cryptsetup reencrypt (no
# device-mapper needed). Then the plain variant: configuration switched, the main kernel's
# initramfs rebuilt, mkfs.ext4 -d again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
SRC=${LOCKROOT_SRC:-$TOP}  # the lockroot source tree to install into the guest
PLAIN=0 KEYFILE_INITRD=0
while [ $# -gt 0 ]; do
	case $1 in
	--plain) PLAIN=1; shift ;;
	--keyfile-initrd) KEYFILE_INITRD=1; shift ;;
	-h|--help) sed -n '3,27p' "$0"; exit 0 ;;
	-*) echo "build-guest: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
SYSBUILD=${BUILD:-$TOP/build}/system
OUT=$(realpath -m "${1:-$SYSBUILD/guest}")
W=$OUT/work
tree=$W/tree
step_t=$SECONDS
step() { echo "build-guest: [$((SECONDS - step_t))s] $*" >&2; }
. "$HERE/guest-lib.sh"

# Guest facts (also in guest.json).
HOSTNAME=lockroot-guest
PASSPHRASE=lockroot-system-test-passphrase
ROOT_MB=${LOCKROOT_GUEST_ROOT_MB:-1024}
BOOT_MB=256
HEADER=32M
MODULES="virtio_pci virtio_blk virtio_scsi ext4 crc32c_generic dm_mod dm_crypt xts aes_generic aesni_intel cbc sha256_generic tpm_tis tpm_crb"
# A root on a USB disk (qemu-xhci + usb-storage), and the FAT boot partition from the initramfs.
MODULES+=" xhci_pci xhci_hcd usb_storage uas sd_mod scsi_mod vfat nls_cp437 nls_ascii nls_iso8859_1"
# The plain disk's MBR label-id, fixed: its PARTUUIDs are 6c72706c-01 and -02 (the encrypted
# disk's label-id is random, never this one).
PLAIN_LABEL_ID=0x6c72706c
TEST_TREE=/srv/lockroot-test

# ---------------------------------------------------------------------------------------------
cleanup_mounts() {
	local m
	for m in dev/pts dev proc sys; do
		mountpoint -q "$tree/$m" 2>/dev/null && umount -l "$tree/$m"
	done
	return 0
}
trap cleanup_mounts EXIT

base=$("$HERE/make-base.sh")
step "base tree $base"
cleanup_mounts
rm -rf "$OUT"
mkdir -p "$tree"
tar -C "$tree" --numeric-owner -xpf "$base"

# ---------------------------------------------------------------------------------------------
# lockroot, as a distribution package would install it. Own build dir (prefix /usr), kept
# between runs so only what changed is rebuilt.
LB=$SYSBUILD/lockroot-build
[ -f "$LB/build.ninja" ] && ! grep -qF "$SRC" "$LB/build.ninja" && rm -rf "$LB"
if [ ! -f "$LB/build.ninja" ]; then
	rm -rf "$LB"
	meson setup "$LB" "$SRC" --prefix=/usr >"$SYSBUILD/lockroot-setup.log" 2>&1 \
		|| { cat "$SYSBUILD/lockroot-setup.log" >&2; exit 1; }
fi
ninja -C "$LB" >"$SYSBUILD/lockroot-ninja.log" 2>&1 || { cat "$SYSBUILD/lockroot-ninja.log" >&2; exit 1; }
DESTDIR=$tree meson install -C "$LB" --no-rebuild --quiet >"$SYSBUILD/lockroot-install.log" 2>&1 \
	|| { cat "$SYSBUILD/lockroot-install.log" >&2; exit 1; }
step "lockroot installed into the tree"
KEYSCRIPT=/usr/lib/lockroot/keyscript
if [ ! -x "$tree$KEYSCRIPT" ]; then
	[ $PLAIN = 1 ] || echo "build-guest: lockroot installs no $KEYSCRIPT yet: plain passphrase crypttab" >&2
	PLAIN=1
fi

# ---------------------------------------------------------------------------------------------
# Guest configuration.
LUKS_UUID=$(cat /proc/sys/kernel/random/uuid)
FS_UUID=$(cat /proc/sys/kernel/random/uuid)
LABEL_ID=$PLAIN_LABEL_ID
while [ "$LABEL_ID" = "$PLAIN_LABEL_ID" ]; do LABEL_ID=0x$(od -An -N4 -tx4 /dev/urandom | tr -d ' '); done
BOOT_PARTUUID=${LABEL_ID#0x}-01
PLAIN_FS_UUID=$(cat /proc/sys/kernel/random/uuid)
PLAIN_BOOT_PARTUUID=${PLAIN_LABEL_ID#0x}-01
PLAIN_ROOT_PARTUUID=${PLAIN_LABEL_ID#0x}-02

guest_config "$tree" "$HOSTNAME" "$PASSPHRASE" "$OUT"
if [ $PLAIN = 1 ]; then
	echo "cryptroot UUID=$LUKS_UUID none luks,discard,initramfs" >"$tree/etc/crypttab"
else
	echo "cryptroot UUID=$LUKS_UUID none luks,discard,initramfs,keyscript=$KEYSCRIPT" >"$tree/etc/crypttab"
fi
cat >"$tree/etc/fstab" <<EOF
/dev/mapper/cryptroot / ext4 errors=remount-ro,noatime 0 1
PARTUUID=$BOOT_PARTUUID /boot/firmware vfat defaults,noatime 0 2
EOF
mkdir -p "$tree/boot/firmware"

# The tests' manifest of a tree (content, owners, modes, xattrs, ACLs, hard links).
install -m 755 "$HERE/guest-manifest.sh" "$tree/usr/local/sbin/lockroot-test-manifest"
# initramfs: only the modules a q35 guest needs (MODULES=most would take many minutes). In a
# chroot the cryptsetup hook cannot see the root's cipher: CRYPTSETUP=y and the crypttab
# "initramfs" option make it include the volume anyway.
# zstd -1: the default level 9 costs tens of seconds per image under TCG (each migrate and
# convert scenario rebuilds the initramfs in the guest).
printf 'MODULES=list\nCOMPRESSLEVEL=1\n' >"$tree/etc/initramfs-tools/conf.d/lockroot-test"
# shellcheck disable=SC2086 # a list of words
printf '%s\n' $MODULES >>"$tree/etc/initramfs-tools/modules"
mkdir -p "$tree/etc/cryptsetup-initramfs"
echo CRYPTSETUP=y >>"$tree/etc/cryptsetup-initramfs/conf-hook"
# The tests' marker on the console: the root file system is mounted (guest uptime included).
cat >"$tree/etc/initramfs-tools/scripts/local-bottom/lockroot-test-marker" <<'EOF'
#!/bin/sh
# System tests only: tell the harness (serial console) that the root file system is mounted.
case $1 in prereqs) exit 0 ;; esac
read -r up _ </proc/uptime
echo "lockroot-test: root mounted, uptime ${up}s"
EOF
chmod 755 "$tree/etc/initramfs-tools/scripts/local-bottom/lockroot-test-marker"

# ---------------------------------------------------------------------------------------------
# initramfs for the installed kernel, then the second kernel installed after lockroot.
mount --bind /dev "$tree/dev"
mount --bind /dev/pts "$tree/dev/pts"
mount -t proc proc "$tree/proc"
mount -t sysfs sysfs "$tree/sys"
# The migrate checks' tree (made with the guest's own tools), and its manifest as built.
chroot "$tree" bash -s "$TEST_TREE" <"$HERE/guest-test-tree.sh" >"$W/test-tree.log" 2>&1 \
	|| { cat "$W/test-tree.log" >&2; exit 1; }
chroot "$tree" env TMPDIR=/tmp /usr/local/sbin/lockroot-test-manifest "$TEST_TREE" \
	>"$OUT/test-tree.manifest"
step "test tree $TEST_TREE ($(grep -c . "$OUT/test-tree.manifest") manifest lines)"
KVER=
for d in "$tree"/usr/lib/modules/*-amd64; do [[ $d == *-cloud-amd64 ]] || KVER=${d##*/}; done
[ -n "$KVER" ] || { echo "build-guest: no amd64 kernel in the base tree" >&2; exit 1; }
# GPIO lines for lockroot tamper: gpio-sim built out of tree for this kernel (cached in the build
# directory), the tests' helper, and a test-only initramfs step: with lockroot.test_gpiosim=N[,M]
# on the command line it makes the bank and pulls those lines up before lockroot's keyscript runs
# (a latched tamper line seen at boot). Without gpio-sim (sources missing) scenario 92 skips.
if GPIO_SIM=$(bash "$HERE/build-gpio-sim.sh" "$KVER" "$SYSBUILD/gpio-sim"); then
	install -D -m 644 "$GPIO_SIM" "$tree/usr/lib/modules/$KVER/extra/gpio-sim.ko"
	chroot "$tree" depmod "$KVER"
	install -m 755 "$HERE/guest-gpiosim.sh" "$tree/usr/local/sbin/lockroot-test-gpiosim"
	cat >"$tree/etc/initramfs-tools/hooks/lockroot-test-gpiosim" <<'EOT'
#!/bin/sh
# System tests only: gpio-sim and its helper in the initramfs (lockroot.test_gpiosim=).
case $1 in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules configfs gpio-sim
copy_exec /usr/local/sbin/lockroot-test-gpiosim
EOT
	cat >"$tree/etc/initramfs-tools/scripts/init-premount/lockroot-test-gpiosim" <<'EOT'
#!/bin/sh
# System tests only: lockroot.test_gpiosim=N[,M...] pulls gpio-sim lines up before unlocking.
case $1 in prereqs) exit 0 ;; esac
lines=
for w in $(cat /proc/cmdline); do
	case $w in lockroot.test_gpiosim=*) lines=${w#*=} ;; esac
done
[ -n "$lines" ] || exit 0
# shellcheck disable=SC2046 # a list of line numbers
/usr/local/sbin/lockroot-test-gpiosim setup $(echo "$lines" | tr , ' ') \
	&& echo "lockroot-test: gpio-sim lines $lines pulled up"
EOT
	chmod 755 "$tree/etc/initramfs-tools/hooks/lockroot-test-gpiosim" \
		"$tree/etc/initramfs-tools/scripts/init-premount/lockroot-test-gpiosim"
	step "gpio-sim for $KVER"
else
	echo "build-guest: no gpio-sim for $KVER (see above): the tamper scenario will skip" >&2
fi
chroot "$tree" update-initramfs -c -k "$KVER" >"$W/initramfs-$KVER.log" 2>&1 \
	|| { cat "$W/initramfs-$KVER.log" >&2; exit 1; }
step "initramfs for $KVER"
DEBIAN_FRONTEND=noninteractive chroot "$tree" sh -c 'dpkg -i /var/cache/lockroot-debs/*.deb' \
	>"$W/install-cloud-kernel.log" 2>&1 || { cat "$W/install-cloud-kernel.log" >&2; exit 1; }
rm -rf "$tree/var/cache/lockroot-debs"
CLOUD_KVER=
for d in "$tree"/usr/lib/modules/*-cloud-amd64; do [ -d "$d" ] && CLOUD_KVER=${d##*/}; done
[ -n "$CLOUD_KVER" ] || { cat "$W/install-cloud-kernel.log" >&2; exit 1; }
[ -f "$tree/boot/initrd.img-$CLOUD_KVER" ] || { cat "$W/install-cloud-kernel.log" >&2; \
	echo "build-guest: no initramfs built for $CLOUD_KVER by the kernel hooks" >&2; exit 1; }
step "second kernel $CLOUD_KVER installed (kernel hooks ran)"

if [ $KEYFILE_INITRD = 1 ]; then
	# Comparison only: the same volume unlocked by a key baked into the initramfs.
	mkdir -p "$tree/usr/lib/lockroot-test"
	install -m 600 "$OUT/test-passphrase" "$tree/usr/lib/lockroot-test/key"
	printf '#!/bin/sh\nexec cat /usr/lib/lockroot-test/key\n' >"$tree/usr/lib/lockroot-test/keyfile-keyscript"
	chmod 755 "$tree/usr/lib/lockroot-test/keyfile-keyscript"
	cat >"$tree/etc/initramfs-tools/hooks/lockroot-test-key" <<'EOF'
#!/bin/sh
case $1 in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
mkdir -p "$DESTDIR/usr/lib/lockroot-test"
cp -p /usr/lib/lockroot-test/key "$DESTDIR/usr/lib/lockroot-test/key"
EOF
	chmod 755 "$tree/etc/initramfs-tools/hooks/lockroot-test-key"
	cp "$tree/etc/crypttab" "$W/crypttab.real"
	echo "cryptroot UUID=$LUKS_UUID none luks,discard,initramfs,keyscript=/usr/lib/lockroot-test/keyfile-keyscript" \
		>"$tree/etc/crypttab"
	chroot "$tree" mkinitramfs -o /boot/initrd-keyfile.img "$KVER" >"$W/initramfs-keyfile.log" 2>&1 \
		|| { cat "$W/initramfs-keyfile.log" >&2; exit 1; }
	cp "$W/crypttab.real" "$tree/etc/crypttab"
	rm -rf "$tree/etc/initramfs-tools/hooks/lockroot-test-key" "$tree/usr/lib/lockroot-test"
	step "keyfile initramfs (bench comparison)"
fi
cleanup_mounts

# ---------------------------------------------------------------------------------------------
# Boot partition: what the Pi firmware reads.
boot=$W/boot
mkdir -p "$boot"
cp "$tree/boot/vmlinuz-$KVER" "$boot/vmlinuz"
cp "$tree/boot/initrd.img-$KVER" "$boot/initrd.img"
for k in "$tree"/boot/vmlinuz-*; do
	v=${k##*/vmlinuz-}
	cp "$k" "$boot/vmlinuz-$v"
	[ -f "$tree/boot/initrd.img-$v" ] && cp "$tree/boot/initrd.img-$v" "$boot/initrd.img-$v"
done
[ -f "$tree/boot/initrd-keyfile.img" ] && mv "$tree/boot/initrd-keyfile.img" "$boot/"
# Whatever the system itself put on the boot partition (kernel hooks) wins.
[ -n "$(ls -A "$tree/boot/firmware")" ] && cp -r "$tree/boot/firmware/." "$boot/"
rm -rf "${tree:?}/boot/firmware/"*
cat >"$boot/config.txt" <<'EOF'
# lockroot system-test guest: the test harness plays the Pi firmware and reads this file.
arm_64bit=1
kernel=vmlinuz
initramfs initrd.img followkernel
EOF
echo "console=ttyS0,115200 root=/dev/mapper/cryptroot rootfstype=ext4 ro" >"$boot/cmdline.txt"
truncate -s "${BOOT_MB}M" "$W/boot.img"
mkfs.vfat -F 32 -n BOOT "$W/boot.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$W/boot.img" "$boot"/* ::/
step "boot partition"

# ---------------------------------------------------------------------------------------------
# Root: ext4 from the tree, encrypted offline. The file system leaves the last $HEADER free:
# reencrypt --reduce-device-size moves the data up to make room for the LUKS2 header.
used_mb=$(du -sm "$tree" | cut -f1)
[ $((used_mb * 13 / 10 + 64)) -le "$ROOT_MB" ] || ROOT_MB=$((used_mb * 13 / 10 + 64))
truncate -s "${ROOT_MB}M" "$W/root.img"
mkfs.ext4 -q -F -L root -U "$FS_UUID" -d "$tree" "$W/root.img" $((ROOT_MB - ${HEADER%M}))M
step "root file system (${used_mb} MiB in ${ROOT_MB} MiB)"
cryptsetup reencrypt -q --encrypt --type luks2 --reduce-device-size "$HEADER" --uuid "$LUKS_UUID" \
	--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$OUT/test-passphrase" \
	--resilience none "$W/root.img"
step "root encrypted (LUKS2 $LUKS_UUID)"

# ---------------------------------------------------------------------------------------------
# The plain variant, what lockroot migrate starts from: the same tree with its configuration
# switched to a plaintext root by PARTUUID, the second kernel removed (it is scenario 50's, on
# disk.img), the main kernel's initramfs rebuilt for it, a full-size ext4, no encryption.
# Nothing made for the encrypted disk reads the tree after this point.
cat >"$tree/etc/crypttab" <<'EOF'
# <target name>	<source device>		<key file>	<options>
EOF
cat >"$tree/etc/fstab" <<EOF
PARTUUID=$PLAIN_ROOT_PARTUUID / ext4 errors=remount-ro,noatime 0 1
PARTUUID=$PLAIN_BOOT_PARTUUID /boot/firmware vfat defaults,noatime 0 2
EOF
mount --bind /dev "$tree/dev"
mount --bind /dev/pts "$tree/dev/pts"
mount -t proc proc "$tree/proc"
mount -t sysfs sysfs "$tree/sys"
# One kernel on the plain disk: migrate and convert rebuild every kernel's initramfs in the
# guest (minutes each under TCG); the second kernel's hooks are scenario 50's, on disk.img.
DEBIAN_FRONTEND=noninteractive chroot "$tree" dpkg --purge linux-image-cloud-amd64 "linux-image-$CLOUD_KVER" \
	>"$W/purge-cloud.log" 2>&1 || { cat "$W/purge-cloud.log" >&2; exit 1; }
# With nothing in crypttab the cryptsetup hook only warns; CRYPTSETUP=y stays (cryptsetup in the
# initramfs anyway, as a migration wants it).
chroot "$tree" update-initramfs -u -k "$KVER" >"$W/initramfs-plain.log" 2>&1 \
	|| { cat "$W/initramfs-plain.log" >&2; exit 1; }
chroot "$tree" lsinitramfs "/boot/initrd.img-$KVER" >"$W/initramfs-plain.list"
cleanup_mounts
grep -q 'scripts/local-bottom/lockroot-test-marker$' "$W/initramfs-plain.list" \
	|| { echo "build-guest: lockroot-test-marker not in the plain initramfs" >&2; exit 1; }
step "plain variant: initramfs for $KVER"
cp -a "$boot" "$W/boot-plain"
rm -f "$W/boot-plain/vmlinuz-$CLOUD_KVER" "$W/boot-plain/initrd.img-$CLOUD_KVER"
cp "$tree/boot/initrd.img-$KVER" "$W/boot-plain/initrd.img"
cp "$tree/boot/initrd.img-$KVER" "$W/boot-plain/initrd.img-$KVER"
echo "console=ttyS0,115200 root=PARTUUID=$PLAIN_ROOT_PARTUUID rootfstype=ext4 ro" \
	>"$W/boot-plain/cmdline.txt"
truncate -s "${BOOT_MB}M" "$W/boot-plain.img"
mkfs.vfat -F 32 -n BOOT "$W/boot-plain.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$W/boot-plain.img" "$W/boot-plain"/* ::/
truncate -s "${ROOT_MB}M" "$W/plain-root.img"
mkfs.ext4 -q -F -L root -U "$PLAIN_FS_UUID" -d "$tree" "$W/plain-root.img"
step "plain variant: boot partition, root file system (${ROOT_MB} MiB, ext4 $PLAIN_FS_UUID)"

# ---------------------------------------------------------------------------------------------
# The disks: MBR, partitions at fixed offsets, dd'd in (no loop partition scanning here).
boot_sectors=$((BOOT_MB * 2048)) root_sectors=$((ROOT_MB * 2048))
root_start=$((2048 + boot_sectors))
make_disk() { # IMAGE LABEL-ID BOOT-IMG ROOT-IMG ROOT-DD-CONV
	truncate -s $(((root_start + root_sectors) * 512)) "$1"
	sfdisk -q "$1" <<-EOF
	label: dos
	label-id: $2
	unit: sectors
	2048, $boot_sectors, c, *
	$root_start, $root_sectors, 83
	EOF
	dd if="$3" of="$1" bs=1M seek=1 conv=notrunc,sparse status=none
	dd if="$4" of="$1" bs=1M seek=$((root_start / 2048)) conv="$5" status=none
}
make_disk "$OUT/disk.img" "$LABEL_ID" "$W/boot.img" "$W/root.img" notrunc
make_disk "$OUT/plain-disk.img" "$PLAIN_LABEL_ID" "$W/boot-plain.img" "$W/plain-root.img" notrunc,sparse
cat >"$OUT/guest.json" <<EOF
{
  "disk": "disk.img",
  "passphrase_file": "test-passphrase",
  "plain": $([ $PLAIN = 1 ] && echo true || echo false),
  "luks_uuid": "$LUKS_UUID",
  "boot_partuuid": "$BOOT_PARTUUID",
  "kernel": "$KVER",
  "cloud_kernel": "$CLOUD_KVER",
  "keyfile_initrd": $([ $KEYFILE_INITRD = 1 ] && echo true || echo false),
  "root_device": "/dev/vda2",
  "label_id": "$LABEL_ID",
  "root_mb": $ROOT_MB,
  "plain_disk": "plain-disk.img",
  "plain_label_id": "$PLAIN_LABEL_ID",
  "plain_boot_partuuid": "$PLAIN_BOOT_PARTUUID",
  "plain_root_partuuid": "$PLAIN_ROOT_PARTUUID",
  "plain_fs_uuid": "$PLAIN_FS_UUID",
  "test_tree": "$TEST_TREE",
  "test_tree_manifest": "test-tree.manifest"
}
EOF
rm -rf "$W"
step "done: $OUT/disk.img, $OUT/plain-disk.img ($(du -h --apparent-size "$OUT/disk.img" | cut -f1) each)"
