#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot tamper: the time from a GPIO edge to "keys destroyed", measured (a benchmark: it
# passes or fails nothing).
#
#   sudo bench/tamper.sh        (LOCKROOT_BENCH_TRIALS=N, default 7)
#
# The plain system-test guest under QEMU (TCG) with a swtpm and gpio-sim; in the guest a LUKS2
# image file enrolled with the TPM and armed, `lockroot tamper watch` running, one edge per
# trial (tests/system/bench-tamper.py). Needs the system-test guest (tests/system/run.sh
# --build; built here when missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
export BUILD=${BUILD:-$TOP/build}
case ${1:-} in -h|--help) sed -n '3,11p' "$0"; exit 0 ;; esac
export SYSTEM_STATE=${SYSTEM_STATE:-$BUILD/system}
[ -f "$SYSTEM_STATE/guest/guest.json" ] && grep -q plain_disk "$SYSTEM_STATE/guest/guest.json" ||
	bash "$TOP/tests/system/run.sh" --build >&2
mkdir -p "$SYSTEM_STATE/logs"
/usr/bin/python3 -B "$TOP/tests/system/bench-tamper.py"
