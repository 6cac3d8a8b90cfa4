#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot migrate's copy throughput vs a raw dd of the same data (the floor), in the QEMU guest
# of the system tests (builds it first if needed). Prints a table. Needs root.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
export BUILD=${BUILD:-$TOP/build}
export BENCH_STATE=$BUILD/system
[ -f "$BENCH_STATE/guest/guest.json" ] && grep -q plain_disk "$BENCH_STATE/guest/guest.json" ||
	bash "$TOP/tests/system/run.sh" --build >&2
mkdir -p "$BENCH_STATE/logs"
exec /usr/bin/python3 -B "$TOP/tests/system/bench-migrate.py"
