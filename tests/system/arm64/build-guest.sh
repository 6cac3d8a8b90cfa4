#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the arm64 guests' disks: an emulated Raspberry Pi 3's SD card and an arm64 virt
# machine's disk, both Debian 12 arm64 with lockroot's arm64 Debian package installed.
#
#   tests/system/arm64/build-guest.sh [OUTDIR]       (as root; OUTDIR default ${BUILD:-build}/system/arm64)
#
# sd.img (512 MiB: QEMU wants a power of two): partition 1 FAT "boot" with config.txt,
# cmdline.txt, vmlinuz, initrd.img, bcm2837-rpi-3-b.dtb (what the Pi firmware loads; the harness
# reads it), partition 2 a plaintext ext4 root by PARTUUID, what `lockroot convert` starts from.
# virt.img: the same tree with linux-image-cloud-arm64 (it has tpm_tis), its root encrypted
# offline with LUKS2 (test passphrase in keyslot 0, as the amd64 guest's disk.img) and the
# keyscript in crypttab: the first boot enrolls the TPM.
# hsm.img: a small FAT drive labelled LRHSM, the emulated Pi's "USB HSM": a test-only initramfs
# script mounts it at /run/lockroot-test-hsm and SoftHSM2 keeps its tokens there (QEMU has no TPM
# for the raspi3b machine, so SoftHSM2 through lockroot's PKCS#11 backend stands in for the HSM).
# OUTDIR/arm64.json has the facts the tests need.
#
# The base tree comes from make-base.sh (cached). Each run, in a chroot through qemu-user: the
# arm64 .deb built by scripts/build-deb.sh arm64 (cross, lintian clean) installed with dpkg, the
# guest configured, initramfs built with MODULES=list.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../../.." && pwd)
SYSBUILD=${BUILD:-$TOP/build}/system
OUT=$(realpath -m "${1:-$SYSBUILD/arm64}")
W=$OUT/work
tree=$W/tree
step_t=$SECONDS
step() { echo "build-arm64: [$((SECONDS - step_t))s] $*" >&2; }
. "$HERE/../guest-lib.sh"

HOSTNAME=lockroot-guest     # the harness's shell prompt
PASSPHRASE=lockroot-system-test-passphrase
SD_MB=512 BOOT_MB=96 VIRT_ROOT_MB=640 HEADER=32M
PI_LABEL_ID=0x6c727069      # "lrpi": sd.img's PARTUUIDs are 6c727069-01/-02
VIRT_LABEL_ID=0x6c727672
HSM_MNT=/run/lockroot-test-hsm
# MODULES=list: the emulated Pi's SD host (sdhci-iproc; bcm2835 sdhost), its USB (dwc2) and
# storage; the virt machine's virtio; the rest lockroot's hook adds.
MODULES="sdhci_iproc bcm2835 mmc_block dwc2 usb_storage sd_mod ext4 virtio_blk virtio_mmio virtio_pci dax"

cleanup_mounts() {
	local m
	for m in dev/pts dev proc sys; do
		mountpoint -q "$tree/$m" 2>/dev/null && umount -l "$tree/$m"
	done
	return 0
}
trap cleanup_mounts EXIT
mount_chroot() {
	mount --bind /dev "$tree/dev"; mount --bind /dev/pts "$tree/dev/pts"
	mount -t proc proc "$tree/proc"; mount -t sysfs sysfs "$tree/sys"
}

base=$("$HERE/make-base.sh")
step "base tree $base"
# The package: cross-built from this checkout, lintian clean.
DEBS=$SYSBUILD/arm64-deb
LOCKROOT_DEB_OUT=$DEBS "$TOP/scripts/build-deb.sh" arm64 >&2
deb=$(ls "$DEBS"/lockroot_*_arm64.deb)
step "package $deb"

cleanup_mounts
rm -rf "$OUT"
mkdir -p "$tree"
tar -C "$tree" --numeric-owner -xpf "$base"
KVER=$(basename "$(ls -d "$tree"/usr/lib/modules/*-arm64 | head -n 1)")
# Room on the small SD root (the conversion needs free space to shrink into): every device tree
# but the Pi 3's, iconv's converters; the virt kernel's .debs wait outside the tree.
find "$tree/usr/lib/linux-image-$KVER" -name '*.dtb' ! -name bcm2837-rpi-3-b.dtb -delete
rm -rf "$tree/usr/lib/aarch64-linux-gnu/gconv"
mkdir -p "$W/debs"
mv "$tree"/var/cache/lockroot-debs/*.deb "$W/debs/"

# ---------------------------------------------------------------------------------------------
# Guest configuration (before lockroot is installed: its trigger builds the initramfs).
guest_config "$tree" "$HOSTNAME" "$PASSPHRASE" "$OUT"

mkdir -p "$tree/etc/initramfs-tools/conf.d" "$tree/etc/cryptsetup-initramfs"
# zstd -1: the default level costs minutes under TCG (and through qemu-user here).
printf "MODULES=list\nCOMPRESSLEVEL=1\n" >"$tree/etc/initramfs-tools/conf.d/lockroot-test"
# shellcheck disable=SC2086 # a list of words
printf '%s\n' $MODULES >>"$tree/etc/initramfs-tools/modules"
echo CRYPTSETUP=y >>"$tree/etc/cryptsetup-initramfs/conf-hook"
cat >"$tree/etc/initramfs-tools/scripts/local-bottom/lockroot-test-marker" <<'EOT'
#!/bin/sh
# System tests only: tell the harness (serial console) that the root file system is mounted.
case $1 in prereqs) exit 0 ;; esac
read -r up _ </proc/uptime
echo "lockroot-test: root mounted, uptime ${up}s"
EOT
# The emulated Pi's "USB HSM": SoftHSM2's token directory on a USB drive labelled LRHSM,
# mounted under /run before anything unlocks (initramfs-tools moves /run into the root). Named
# to run before lockroot-convert (init-premount scripts without prerequisites run in name
# order): the conversion step unlocks the key before it writes the header. Test only.
cat >"$tree/etc/initramfs-tools/scripts/init-premount/hsm-drive" <<EOT
#!/bin/sh
# System tests only: mount the drive that stands in for a USB HSM (SoftHSM2's tokens).
case \$1 in prereqs) exit 0 ;; esac
grep -q lockroot.test_hsm /proc/cmdline || exit 0
modprobe -q dwc2; modprobe -q usb_storage; modprobe -q sd_mod; modprobe -q vfat
modprobe -q nls_cp437; modprobe -q nls_ascii
i=0
while [ \$i -lt 120 ]; do
	dev=\$(blkid -l -t LABEL=LRHSM -o device 2>/dev/null) && [ -n "\$dev" ] && break
	sleep 0.5; i=\$((i + 1))
done
if [ -z "\${dev:-}" ]; then echo "lockroot-test: no LRHSM drive"; exit 0; fi
mkdir -p $HSM_MNT
mount -t vfat -o fmask=0077,dmask=0077 "\$dev" $HSM_MNT && echo "lockroot-test: HSM drive \$dev mounted"
EOT
cat >"$tree/etc/initramfs-tools/hooks/hsm-drive" <<'EOT'
#!/bin/sh
case $1 in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
copy_exec /sbin/blkid
for m in dwc2 usb_storage sd_mod vfat nls_cp437 nls_ascii; do manual_add_modules $m; done
EOT
chmod 755 "$tree/etc/initramfs-tools/scripts/local-bottom/lockroot-test-marker" \
	"$tree/etc/initramfs-tools/scripts/init-premount/hsm-drive" "$tree/etc/initramfs-tools/hooks/hsm-drive"
mkdir -p "$tree/etc/softhsm"
cat >"$tree/etc/softhsm/softhsm2.conf" <<EOT
# lockroot system test: the tokens live on the USB drive that stands in for the HSM.
directories.tokendir = $HSM_MNT/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOT
# The PIN the PKCS#11 URI names (pin-source=file:...): lockroot's hook copies /etc/lockroot/*.pin.
mkdir -p "$tree/etc/lockroot"
install -m 600 /dev/null "$tree/etc/lockroot/hsm.pin"
printf '4711\n' >"$tree/etc/lockroot/hsm.pin"
# The Pi: plaintext root by PARTUUID.
cat >"$tree/etc/fstab" <<EOT
PARTUUID=${PI_LABEL_ID#0x}-02 / ext4 errors=remount-ro,noatime 0 1
PARTUUID=${PI_LABEL_ID#0x}-01 /boot/firmware vfat defaults,noatime 0 2
EOT
printf '# <target name>\t<source device>\t<key file>\t<options>\n' >"$tree/etc/crypttab"
mkdir -p "$tree/boot/firmware"

# ---------------------------------------------------------------------------------------------
mount_chroot
cp "$deb" "$tree/tmp/"
DEBIAN_FRONTEND=noninteractive chroot "$tree" dpkg -i "/tmp/${deb##*/}" >"$W/dpkg-lockroot.log" 2>&1 \
	|| { cat "$W/dpkg-lockroot.log" >&2; exit 1; }
rm -f "$tree/tmp/${deb##*/}"
[ -f "$tree/boot/initrd.img-$KVER" ] || chroot "$tree" update-initramfs -c -k "$KVER" >"$W/initramfs.log" 2>&1 \
	|| { cat "$W/initramfs.log" >&2; exit 1; }
chroot "$tree" lsinitramfs "/boot/initrd.img-$KVER" >"$W/initramfs.list"
# What the unlock needs, from the arm64 package and the system (as deb-package.sh checks the
# amd64 one): helper, keyscript, token plugin, TCTIs, p11-kit and SoftHSM2, the PIN, dm-crypt
# and the Pi's cipher.
for want in usr/sbin/lockroot usr/lib/lockroot/keyscript scripts/init-premount/lockroot-convert \
	'lib/aarch64-linux-gnu/cryptsetup/libcryptsetup-token-lockroot\.so' \
	'lib/aarch64-linux-gnu/libtss2-tcti-device\.so\.0' 'lib/aarch64-linux-gnu/libp11-kit\.so\.0' \
	'.*/libsofthsm2\.so' etc/softhsm/softhsm2\.conf etc/lockroot/hsm\.pin \
	'.*/dm-crypt\.ko(\.xz|\.zst)?' '.*/adiantum\.ko(\.xz|\.zst)?' '.*/nhpoly1305\.ko(\.xz|\.zst)?' \
	scripts/init-premount/hsm-drive; do
	grep -Eq "(^|/)${want#usr/}\$" "$W/initramfs.list" \
		|| { echo "build-arm64: $want not in the Pi's initramfs" >&2; exit 1; }
done
chroot "$tree" unmkinitramfs "/boot/initrd.img-$KVER" /tmp/unpacked >/dev/null 2>&1
order=$(cat "$tree"/tmp/unpacked/main/scripts/init-premount/ORDER "$tree"/tmp/unpacked/scripts/init-premount/ORDER \
	2>/dev/null | grep -o 'init-premount/[a-z0-9-]*' | tr '\n' ' ' || true)
rm -rf "$tree/tmp/unpacked"
case $order in
*hsm-drive*lockroot-convert*) ;;
*) echo "build-arm64: the HSM drive's script must run before lockroot-convert: $order" >&2; exit 1 ;;
esac
cleanup_mounts
step "lockroot $(dpkg-deb -f "$deb" Version) installed, initramfs for $KVER"

# The Pi's boot partition and SD card.
boot=$W/boot
mkdir -p "$boot"
cp "$tree/boot/vmlinuz-$KVER" "$boot/vmlinuz"
cp "$tree/boot/initrd.img-$KVER" "$boot/initrd.img"
cp "$tree/usr/lib/linux-image-$KVER/broadcom/bcm2837-rpi-3-b.dtb" "$boot/"
cat >"$boot/config.txt" <<'EOT'
# lockroot system test (emulated Raspberry Pi 3): the harness plays the firmware.
arm_64bit=1
kernel=vmlinuz
initramfs initrd.img followkernel
device_tree=bcm2837-rpi-3-b.dtb
EOT
# ttyS1: the mini UART, the Pi 3's console (the PL011 belongs to Bluetooth).
echo "console=ttyS1,115200 root=PARTUUID=${PI_LABEL_ID#0x}-02 rootfstype=ext4 rootwait ro lockroot.test_hsm" \
	>"$boot/cmdline.txt"
truncate -s "${BOOT_MB}M" "$W/boot.img"
mkfs.vfat -F 32 -n BOOT "$W/boot.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$W/boot.img" "$boot"/* ::/
used_mb=$(du -sm "$tree" | cut -f1)
root_mb=$((SD_MB - BOOT_MB - 1))
FS_UUID=$(cat /proc/sys/kernel/random/uuid)
truncate -s "${root_mb}M" "$W/root.img"
# -T default: a Pi's root is formatted with 4 KiB blocks; mke2fs's "small" type (1 KiB blocks,
# an inode per 4 KiB) would spend 26 MiB on inode tables that the conversion must keep.
mkfs.ext4 -q -F -T default -L root -U "$FS_UUID" -d "$tree" "$W/root.img"
truncate -s "${SD_MB}M" "$OUT/sd.img"
sfdisk -q "$OUT/sd.img" <<EOT
label: dos
label-id: $PI_LABEL_ID
unit: sectors
2048, $((BOOT_MB * 2048)), c, *
$((2048 + BOOT_MB * 2048)), $((root_mb * 2048)), 83
EOT
dd if="$W/boot.img" of="$OUT/sd.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$W/root.img" of="$OUT/sd.img" bs=1M seek=$((1 + BOOT_MB)) conv=notrunc,sparse status=none
step "sd.img: ${used_mb} MiB of files in a ${root_mb} MiB root"

# The USB HSM drive: empty FAT, the guest initialises the token.
truncate -s 16M "$OUT/hsm.img"
mkfs.vfat -n LRHSM "$OUT/hsm.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i "$OUT/hsm.img" ::/tokens

# ---------------------------------------------------------------------------------------------
# virt: the cloud kernel, an encrypted root, the keyscript in crypttab.
LUKS_UUID=$(cat /proc/sys/kernel/random/uuid)
echo "cryptroot UUID=$LUKS_UUID none luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript" \
	>>"$tree/etc/crypttab"
cat >"$tree/etc/fstab" <<EOT
/dev/mapper/cryptroot / ext4 errors=remount-ro,noatime 0 1
PARTUUID=${VIRT_LABEL_ID#0x}-01 /boot/firmware vfat defaults,noatime 0 2
EOT
mount_chroot
cp "$W"/debs/*.deb "$tree/var/cache/lockroot-debs/"
DEBIAN_FRONTEND=noninteractive chroot "$tree" sh -c 'dpkg -i /var/cache/lockroot-debs/*.deb' \
	>"$W/install-cloud-kernel.log" 2>&1 || { cat "$W/install-cloud-kernel.log" >&2; exit 1; }
rm -rf "$tree/var/cache/lockroot-debs"
CLOUD_KVER=$(basename "$(ls -d "$tree"/usr/lib/modules/*-cloud-arm64 | head -n 1)")
# The package build's arm64 unit tests, for scenario 80 to run on an arm64 kernel (under
# qemu-user on the build machine MADV_WIPEONFORK is not emulated).
mkdir -p "$tree/usr/local/libexec/lockroot-unit"
n=0
for t in "$DEBS"/lockroot/obj-aarch64-linux-gnu/tests/test-*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	case ${t##*/} in test-backend-*) continue ;; esac
	install -m 755 "$t" "$tree/usr/local/libexec/lockroot-unit/"
	n=$((n + 1))
done
[ $n -ge 9 ] || { echo "build-arm64: only $n arm64 unit tests in the package build" >&2; exit 1; }
# Only the cloud kernel on this disk (the kernel hooks built its initramfs).
chroot "$tree" dpkg --purge linux-image-arm64 "linux-image-$KVER" >"$W/purge.log" 2>&1 \
	|| { cat "$W/purge.log" >&2; exit 1; }
chroot "$tree" lsinitramfs "/boot/initrd.img-$CLOUD_KVER" >"$W/initramfs-virt.list"
cleanup_mounts
grep -Eq '(^|/)lib/lockroot/keyscript$' "$W/initramfs-virt.list" \
	|| { echo "build-arm64: no keyscript in the virt initramfs" >&2; exit 1; }
step "virt: $CLOUD_KVER installed, initramfs by the kernel hooks"
vboot=$W/vboot
mkdir -p "$vboot"
cp "$tree/boot/vmlinuz-$CLOUD_KVER" "$vboot/vmlinuz"
cp "$tree/boot/initrd.img-$CLOUD_KVER" "$vboot/initrd.img"
cat >"$vboot/config.txt" <<'EOT'
# lockroot system test (arm64 virt): the harness plays the firmware.
arm_64bit=1
kernel=vmlinuz
initramfs initrd.img followkernel
EOT
echo "console=ttyAMA0,115200 root=/dev/mapper/cryptroot rootfstype=ext4 ro" >"$vboot/cmdline.txt"
truncate -s 64M "$W/vboot.img"
mkfs.vfat -n BOOT "$W/vboot.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$W/vboot.img" "$vboot"/* ::/
truncate -s "${VIRT_ROOT_MB}M" "$W/vroot.img"
mkfs.ext4 -q -F -L root -d "$tree" "$W/vroot.img" $((VIRT_ROOT_MB - ${HEADER%M}))M
cryptsetup reencrypt -q --encrypt --type luks2 --reduce-device-size "$HEADER" --uuid "$LUKS_UUID" \
	--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$OUT/test-passphrase" \
	--resilience none "$W/vroot.img"
truncate -s $(((1 + 64 + VIRT_ROOT_MB) * 1024 * 1024)) "$OUT/virt.img"
sfdisk -q "$OUT/virt.img" <<EOT
label: dos
label-id: $VIRT_LABEL_ID
unit: sectors
2048, $((64 * 2048)), c, *
$((2048 + 64 * 2048)), $((VIRT_ROOT_MB * 2048)), 83
EOT
dd if="$W/vboot.img" of="$OUT/virt.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$W/vroot.img" of="$OUT/virt.img" bs=1M seek=65 conv=notrunc status=none
step "virt.img: LUKS2 $LUKS_UUID"

cat >"$OUT/arm64.json" <<EOT
{
  "sd": "sd.img",
  "hsm": "hsm.img",
  "virt": "virt.img",
  "passphrase_file": "test-passphrase",
  "kernel": "$KVER",
  "cloud_kernel": "$CLOUD_KVER",
  "pi_root_partuuid": "${PI_LABEL_ID#0x}-02",
  "pi_boot_partuuid": "${PI_LABEL_ID#0x}-01",
  "virt_luks_uuid": "$LUKS_UUID",
  "virt_root_device": "/dev/vda2",
  "hsm_mount": "$HSM_MNT",
  "hsm_pin_file": "/etc/lockroot/hsm.pin"
}
EOT
rm -rf "$W"
step "done: $OUT"
