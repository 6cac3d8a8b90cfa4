#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# System tests only: installed in the guest as /usr/local/sbin/lockroot-test-gpiosim (and into
# its initramfs). GPIO lines for lockroot tamper from gpio-sim (built out of tree for the guest's
# kernel: build-gpio-sim.sh): one bank of 8 lines, chip label "lockroot-test".
#
#   lockroot-test-gpiosim setup [LINE...]    load gpio-sim, make the bank (once); LINEs pulled up
#   lockroot-test-gpiosim set LINE up|down   pull a line up (high) or down (low)
#   lockroot-test-gpiosim chip               the bank's gpiochipN
set -e
CFG=/sys/kernel/config/gpio-sim/lockroot-test

setup() {
	modprobe configfs 2>/dev/null || true
	grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
	[ -d /sys/kernel/config/gpio-sim ] || modprobe gpio-sim
	if [ ! -d "$CFG" ]; then
		mkdir "$CFG" "$CFG/bank0"
		echo 8 >"$CFG/bank0/num_lines"
		echo lockroot-test >"$CFG/bank0/label"
		echo 1 >"$CFG/live"
	fi
	for l in "$@"; do pull "$l" up; done
}

pull() {
	echo "pull-$2" >"/sys/devices/platform/$(cat "$CFG/dev_name")/$(cat "$CFG/bank0/chip_name")/sim_gpio$1/pull"
}

case ${1:-} in
setup) shift; setup "$@" ;;
set) pull "$2" "$3" ;;
chip) cat "$CFG/bank0/chip_name" ;;
*) echo "usage: lockroot-test-gpiosim setup [LINE...] | set LINE up|down | chip" >&2; exit 2 ;;
esac
