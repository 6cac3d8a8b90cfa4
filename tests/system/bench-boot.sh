#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark, not a test (never run by tests/run): boot time to "root mounted" with the root key
# from the TPM (lockroot's keyscript) against a key file baked into the initramfs, on the same
# guest disk under QEMU/TCG. Prints a Markdown table (medians and the ratio) on stdout.
#
#   tests/system/bench-boot.sh [-r RUNS]     (as root; default 3 runs of each; ~1 min a run)
#
# Work directory ${BUILD:-build}/system-bench (its own guest, built with --keyfile-initrd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
RUNS=3
while getopts r:h o; do
	case $o in
	r) RUNS=$OPTARG ;;
	*) sed -n '3,9p' "$0" >&2; exit 2 ;;
	esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench-boot: -r needs a number >= 1" >&2; exit 2; }
export BUILD=${BUILD:-$TOP/build}
export BENCH_STATE=$BUILD/system-bench BENCH_RUNS=$RUNS
rm -rf "$BENCH_STATE"
mkdir -p "$BENCH_STATE"
echo "bench-boot: building the guest (with the keyfile initramfs)" >&2
bash "$HERE/build-guest.sh" --keyfile-initrd "$BENCH_STATE/guest" >"$BENCH_STATE/build-guest.log" 2>&1 \
	|| { cat "$BENCH_STATE/build-guest.log" >&2; exit 1; }
exec /usr/bin/python3 -B "$HERE/bench-boot.py"
