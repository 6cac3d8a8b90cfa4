# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash disable=SC2016 # mmdebstrap runs the hooks with the tree as $1
# What the system-test guest builders share (sourced by make-base.sh and build-guest.sh, and
# their arm64 twins under arm64/). A change here rebuilds both cached base trees.

# debian_base ARCH OUT PACKAGES TRIM_HOOK SECOND_KERNEL: a Debian 12 root as a tarball: no
# recommends, no docs/man/locales/firmware, update-initramfs a no-op while packages install
# (the builders make the initramfs later, with MODULES=list), TRIM_HOOK run on the tree (kernel
# modules the guests never load), and the .debs of SECOND_KERNEL downloaded into
# /var/cache/lockroot-debs (installed later, after lockroot, so that its hooks run).
debian_base() {
	local arch=$1 out=$2 pkgs=$3 trim=$4 second=$5
	local mirror=${LOCKROOT_MIRROR:-http://deb.debian.org/debian}
	mmdebstrap --variant=apt --architectures="$arch" --format=tar \
		--aptopt='APT::Install-Recommends "false"' \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/lib/firmware/*' \
		--essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
			printf "#!/bin/sh\nexit 0\n" >"$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
		--customize-hook='rm -f "$1/usr/sbin/update-initramfs"
			chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
		--customize-hook="$trim" \
		--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb
			chroot "$1" apt-get install -y -qq --download-only '"$second"' >/dev/null
			mkdir -p "$1/var/cache/lockroot-debs"; mv "$1"/var/cache/apt/archives/*.deb "$1/var/cache/lockroot-debs/"' \
		--include="$pkgs" \
		bookworm "$out" \
		"deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
		"deb ${mirror%/debian}/debian-security bookworm-security main" >&2
}

# guest_config TREE HOSTNAME PASSPHRASE OUTDIR: what every test guest has: its host name (the
# harness's shell prompt), root without a password and logged in on every serial console,
# systemd's timeouts for two guests on two cores, no units a test never needs, the passphrase
# of keyslot 0 in /root/test-passphrase (and OUTDIR/test-passphrase for the harness).
guest_config() {
	local tree=$1 hostname=$2 passphrase=$3 out=$4 u
	echo "$hostname" >"$tree/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$hostname" >"$tree/etc/hosts"
	chroot "$tree" passwd -dq root
	mkdir -p "$tree/etc/systemd/system/serial-getty@.service.d" "$tree/etc/systemd/system.conf.d"
	cat >"$tree/etc/systemd/system/serial-getty@.service.d/autologin.conf" <<'EOT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM
EOT
	: >"$tree/etc/motd"
	# Two guests share two cores in the test run: under that load udev can take longer than
	# systemd's default 90 s to announce a device, and the guest would fall into emergency mode.
	# RebootWatchdogSec=0: QEMU 7.2's raspi3b resets the board the moment bcm2835_wdt arms its
	# watchdog, so systemd arming it for the reboot cut every shutdown short before / was
	# remounted read-only (a real Pi counts the timeout down; the PC guest has no watchdog).
	cat >"$tree/etc/systemd/system.conf.d/lockroot-test-timeouts.conf" <<'EOT'
[Manager]
DefaultTimeoutStartSec=300s
DefaultDeviceTimeoutSec=300s
RebootWatchdogSec=0
EOT
	# Units a test guest never needs (each costs seconds under TCG): VGA gettys, periodic jobs.
	for u in getty-static.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
		dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		systemd-tmpfiles-clean.timer; do
		ln -sf /dev/null "$tree/etc/systemd/system/$u"
	done
	install -m 600 /dev/null "$tree/root/test-passphrase"
	printf '%s' "$passphrase" >"$tree/root/test-passphrase"
	mkdir -p "$out"
	install -m 600 /dev/null "$out/test-passphrase"
	printf '%s' "$passphrase" >"$out/test-passphrase"
}
