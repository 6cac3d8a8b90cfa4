#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot convert, measured (a benchmark, not a test: it passes or fails nothing).
#
#   sudo bench/convert.sh [--host-only | --guest-only] [-r RUNS] [-s SIZE_MIB] [-f FILL_PCT]
#
# (a) host, offline, one ext4 image file (SIZE_MIB, default 1024, FILL_PCT (default 50) % full of
#     random files: from 55 % on, resize2fs -P puts the minimum size of such an mkfs.ext4 -d image
#     above the partition minus 32 MiB, and the engine, like resize2fs itself, refuses to shrink),
#     AES-XTS (aes-xts-plain64, 512-bit key; Adiantum needs the kernel's crypto, which this host's
#     libcryptsetup cannot reach without AF_ALG/device-mapper: it is measured in the guest only):
#       - lockroot's engine (build/tests/tools/test-convert): template (HSM keyslot on swtpm,
#         recovery keyslot), shrink (e2fsck -fy + resize2fs), init (first segment moved, record,
#         header written), run (the encryption pass);
#       - cryptsetup reencrypt --encrypt --reduce-device-size 32M on the same image, after the
#         same e2fsck + resize2fs;
#       - the floor: dd reading and writing the image in place (conv=notrunc,fsync).
#     Each step RUNS times (default 3) on a fresh copy, page cache dropped before each when the
#     kernel lets us; the table shows the median.
# (b) guest (tests/system/bench-convert.py, QEMU TCG): downtime of the reboot after convert
#     (reboot -> shell usable) and the initramfs step, for two root sizes, and the online
#     encryption rate.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
export BUILD=${BUILD:-$TOP/build}
RUNS=3 SIZE_MIB=1024 FILL_PCT=50 HOST=1 GUEST=1
while [ $# -gt 0 ]; do
	case $1 in
	--host-only) GUEST=0; shift ;;
	--guest-only) HOST=0; shift ;;
	-r) RUNS=$2; shift 2 ;;
	-s) SIZE_MIB=$2; shift 2 ;;
	-f) FILL_PCT=$2; shift 2 ;;
	-h|--help) sed -n '3,20p' "$0"; exit 0 ;;
	*) echo "usage: bench/convert.sh [--host-only|--guest-only] [-r RUNS] [-s SIZE_MIB] [-f FILL_PCT]" >&2; exit 2 ;;
	esac
done

host_bench() {
	# common.sh: scratch directory $T (removed at exit), swtpm, a fake Pi for the host binding.
	# shellcheck source=../tests/lib/common.sh
	. "$TOP/tests/lib/common.sh"
	need_root
	need cryptsetup mkfs.ext4 e2fsck resize2fs swtpm
	local prog=$BUILD/tests/tools/test-convert
	[ -x "$prog" ] || { echo "bench: $prog not built (ninja -C $BUILD)" >&2; exit 1; }
	start_swtpm
	export LOCKROOT_SYSROOT=$T/host LOCKROOT_RUNDIR=$T/run
	make_pi_sysroot "$LOCKROOT_SYSROOT"
	mkdir -p "$LOCKROOT_RUNDIR"
	local MiB=$((1024 * 1024)) size=$((SIZE_MIB * 1024 * 1024))
	local base=$T/base.img img=$T/img key=$T/key tree=$T/tree i
	# FILL_PCT % of the file system in random files of 1-16 MiB.
	mkdir -p "$tree"
	local left=$((SIZE_MIB * FILL_PCT / 100)) n=0 sz
	while [ $left -gt 0 ]; do
		sz=$((1 + n % 16)); [ $sz -gt $left ] && sz=$left
		head -c $((sz * MiB)) /dev/urandom >"$tree/f$n"
		left=$((left - sz)) n=$((n + 1))
	done
	truncate -s "$size" "$base"
	mkfs.ext4 -q -F -b 4096 -d "$tree" "$base"
	rm -rf "$tree"
	head -c 64 /dev/urandom >"$key"
	local drop=yes
	sync; echo 3 2>/dev/null >/proc/sys/vm/drop_caches || drop=no

	local -A t
	now() { date +%s%N; }
	# timed NAME cmd...: appends the seconds to t[NAME]
	timed() {
		local name=$1 a b; shift
		sync; [ $drop = yes ] && echo 3 >/proc/sys/vm/drop_caches
		a=$(now)
		"$@" >"$T/out" 2>&1 || { cat "$T/out" >&2; echo "bench: $* failed" >&2; exit 1; }
		b=$(now)
		t[$name]="${t[$name]:-} $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
	}
	for i in $(seq "$RUNS"); do
		echo "bench: host run $i of $RUNS" >&2
		cp --sparse=always "$base" "$img"; rm -f "$T/hdr" "$T/rec"
		timed e_template "$prog" template "$img" "$T/hdr" --hsm "$HSM" --recovery-iterations 4 --cipher aes-xts-plain64
		timed e_shrink "$prog" shrink "$img"
		timed e_init "$prog" init "$img" "$T/hdr" "$T/rec"
		timed e_run "$prog" run "$img"
		"$prog" examine "$img" | grep -q '"state": "done"' || { echo "bench: the engine did not finish" >&2; exit 1; }

		cp --sparse=always "$base" "$img"
		timed c_shrink sh -c "e2fsck -fy '$img' && resize2fs '$img' $(((size - 32 * MiB) / 4096))"
		timed c_run cryptsetup reencrypt -q --encrypt --type luks2 --cipher aes-xts-plain64 --key-size 512 \
			--reduce-device-size 32M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$key" "$img"
		cryptsetup luksDump "$img" | grep -q online-reencrypt && { echo "bench: cryptsetup did not finish" >&2; exit 1; }

		cp --sparse=always "$base" "$img"
		timed dd dd if="$img" of="$img" bs=1M conv=notrunc,fsync status=none
	done
	med() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
	local k
	local -A m
	for k in "${!t[@]}"; do m[$k]=$(med "${t[$k]}"); done
	local pass=$((SIZE_MIB - 16))
	rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
	sum() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) s += ARGV[i]; printf "%.2f", s }' "$@"; }
	echo
	echo "(a) host, offline: one $SIZE_MIB MiB ext4 image, $((SIZE_MIB * FILL_PCT / 100)) MiB of random files (resize2fs -P: $(resize2fs -P "$base" 2>/dev/null | sed -n 's/.*: //p') blocks); aes-xts-plain64 512-bit;"
	echo "    median of $RUNS runs; page cache dropped before each step: $drop"
	echo "    $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); cryptsetup $(cryptsetup --version | cut -d' ' -f2)"
	echo
	echo "| step | lockroot engine (test-convert) | cryptsetup reencrypt | dd read+write (floor) |"
	echo "|---|--:|--:|--:|"
	echo "| header template (HSM + recovery keyslot) | ${m[e_template]} s | | |"
	echo "| shrink (e2fsck -fy + resize2fs, -32 MiB) | ${m[e_shrink]} s | ${m[c_shrink]} s | |"
	echo "| init (first 16 MiB moved, record, header written) | ${m[e_init]} s | (in the pass) | |"
	echo "| encryption pass over $pass MiB | ${m[e_run]} s | ${m[c_run]} s | ${m[dd]} s ($SIZE_MIB MiB) |"
	echo "| pass throughput | $(rate $pass "${m[e_run]}") MiB/s | $(rate $pass "${m[c_run]}") MiB/s | $(rate "$SIZE_MIB" "${m[dd]}") MiB/s |"
	echo "| whole (shrink + init + pass) | $(sum "${m[e_shrink]}" "${m[e_init]}" "${m[e_run]}") s | $(sum "${m[c_shrink]}" "${m[c_run]}") s | |"
	echo
	for k in $(tr ' ' '\n' <<<"${!t[@]}" | sort); do echo "    raw $k:${t[$k]}"; done
}

if [ $HOST = 1 ]; then
	(host_bench)
fi
if [ $GUEST = 1 ]; then
	export BENCH_STATE=$BUILD/system
	[ -f "$BENCH_STATE/guest/guest.json" ] && grep -q plain_disk "$BENCH_STATE/guest/guest.json" ||
		bash "$TOP/tests/system/run.sh" --build >&2
	mkdir -p "$BENCH_STATE/logs"
	/usr/bin/python3 -B "$TOP/tests/system/bench-convert.py"
fi
