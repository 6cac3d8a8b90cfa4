#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot image and a fleet unit's first boot, measured (a benchmark: it passes or fails nothing).
#
#   sudo bench/image.sh
#
# For two sizes of the same root (the plain system-test guest disk, 1 GiB root, and a copy grown
# by LOCKROOT_BENCH_GROW_MIB, default 2048): (a) `lockroot image` on the host, the whole command
# and its offline encryption pass (throughput); (b) one unit made from that image booted under
# QEMU (TCG) with its own swtpm: power-on -> provisioned -> root mounted -> shell (in service).
# The time per unit must not grow with the root. Needs the system-test guest
# (tests/system/run.sh --build; built here when missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
export BUILD=${BUILD:-$TOP/build}
case ${1:-} in -h|--help) sed -n '3,12p' "$0"; exit 0 ;; esac
export SYSTEM_STATE=${SYSTEM_STATE:-$BUILD/system}
[ -f "$SYSTEM_STATE/guest/guest.json" ] && grep -q plain_disk "$SYSTEM_STATE/guest/guest.json" ||
	bash "$TOP/tests/system/run.sh" --build >&2
mkdir -p "$SYSTEM_STATE/logs"
/usr/bin/python3 -B "$TOP/tests/system/bench-image.py"
