#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lr_erase() through tests/tools/test-erase, checked on the bytes on disk: image files are
# overwritten, a loop device is discarded (loop punches holes in its backing file) and reads
# back as zeros, an erase stopped after one chunk resumes from where it stopped, a mounted
# device is refused and left as it was, bad offsets are refused.
# A case that cannot run (no loop device, no ext4) is reported and makes the test fail: a
# skipped case is not a pass. Exit 77 only when nothing can run (not root, tool not built).
. "$(dirname "$0")/../lib/common.sh"
need_root
need jq cmp sha256sum
PROG=$BUILD/tests/tools/test-erase
[ -x "$PROG" ] || skip "$PROG not built"

CASE=
case_() { CASE=$*; info "$*"; }
fail() { echo "FAIL${CASE:+ [$CASE]}: $*" >&2; exit 1; }
SKIPPED=()
skip_case() { echo "SKIP [$CASE]: $*" >&2; SKIPPED+=("$CASE"); }

MiB=$((1024 * 1024))
CHUNK=$((16 * MiB))
MARK=LOCKROOT-ERASE-MARKER-5b1e

# pattern FILE SIZE: text without a zero byte, with MARK at the start, inside each chunk and
# in the last 4 KiB.
pattern() {
	local f=$1 size=$2 off
	yes 'lockroot erase test pattern: no zero bytes here' | head -c "$size" >"$f"
	for off in 0 $((5 * MiB + 77)) $((17 * MiB + 4096)) $((33 * MiB + 1)) $((size - 4096 + 100)); do
		[ "$off" -le $((size - ${#MARK})) ] || continue
		printf '%s' "$MARK" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none || fail "dd $f"
	done
}
# markers FILE|DEVICE [SKIP_BYTES]: how many lines hold MARK, from SKIP_BYTES on. Devices are
# read O_DIRECT: what the device returns, not what the page cache remembers.
markers() {
	local n
	if [ -b "$1" ]; then
		n=$(dd if="$1" bs=1M iflag=direct,skip_bytes skip="${2:-0}" status=none | grep -ac -- "$MARK")
	else
		n=$(tail -c +$((${2:-0} + 1)) "$1" | grep -ac -- "$MARK")
	fi
	echo "${n:-0}"
}
# zeros FILE|DEVICE LEN: the first LEN bytes are all zeros.
zeros() {
	if [ -b "$1" ]; then
		dd if="$1" bs=1M iflag=direct,count_bytes count="$2" status=none | cmp -s -n "$2" - /dev/zero
	else
		cmp -s -n "$2" "$1" /dev/zero
	fi
}
# erase ARGS...: run test-erase; RC is its exit code, its JSON line in $T/json.
erase() {
	RC=0
	"$PROG" "$@" >"$T/json" 2>"$T/err" || RC=$?
}
# expect RC KEY=VALUE...: test-erase exited RC and printed these values.
expect() {
	local want=$1 kv got
	shift
	[ "$RC" = "$want" ] || { cat "$T/json" "$T/err" >&2; fail "test-erase exited $RC, expected $want"; }
	for kv in "$@"; do
		got=$(jq -r ".${kv%%=*}" "$T/json") || fail "bad JSON: $(cat "$T/json")"
		[ "$got" = "${kv#*=}" ] || fail "${kv%%=*} is $got, expected ${kv#*=}: $(cat "$T/json")"
	done
}
field() { jq -r ".$1" "$T/json"; }
sum() { if [ -b "$1" ]; then dd if="$1" bs=1M iflag=direct status=none | sha256sum; else sha256sum <"$1"; fi; }

case_ "image file of 40 MiB (2.5 chunks): overwritten, marker gone, all zeros"
F=$T/a.img
SIZE=$((40 * MiB))
pattern "$F" $SIZE
[ "$(markers "$F")" = 5 ] || fail "the pattern does not hold 5 markers"
erase "$F"
expect 0 rc=0 size=$SIZE done=$SIZE overwritten=$SIZE discarded=0
[ "$(markers "$F")" = 0 ] || fail "a marker is left"
[ "$(stat -c %s "$F")" = $SIZE ] || fail "the size changed"
zeros "$F" $SIZE || fail "not all zeros"

case_ "image file whose size is not a multiple of 4096"
SIZE=$((5 * MiB + 1234))
pattern "$F" $SIZE
erase "$F"
expect 0 size=$SIZE done=$SIZE overwritten=$SIZE discarded=0
[ "$(markers "$F")" = 0 ] || fail "a marker is left"
zeros "$F" $SIZE || fail "not all zeros"

case_ "resumable: stopped after one chunk, then resumed from done"
SIZE=$((40 * MiB))
pattern "$F" $SIZE
erase "$F" --stop-after 1
expect 3 rc=-4 done=$CHUNK overwritten=$CHUNK
grep -q 'stopped at offset 16777216' "$T/err" || fail "no message on stopping: $(cat "$T/err")"
zeros "$F" $CHUNK || fail "the first chunk is not zeros"
[ "$(markers "$F" $CHUNK)" = 3 ] || fail "markers beyond the first chunk were touched"
erase "$F" --start "$CHUNK"
expect 0 done=$SIZE overwritten=$((SIZE - CHUNK)) discarded=0
[ "$(markers "$F")" = 0 ] || fail "a marker is left"
zeros "$F" $SIZE || fail "not all zeros"
erase "$F" --start $SIZE
expect 0 done=$SIZE overwritten=0 discarded=0

case_ "bad input: refused, file unchanged"
pattern "$F" $SIZE
BEFORE=$(sum "$F")
erase "$F" --start 1000
expect 1 rc=-22
grep -q 'offset 1000: not a multiple of 4096' "$T/err" || fail "message: $(cat "$T/err")"
erase "$F" --start $((SIZE + 4096))
expect 1 rc=-22
grep -q 'it ends at' "$T/err" || fail "message: $(cat "$T/err")"
erase "$T/no-such.img"
expect 1 rc=-2
grep -q 'no-such.img: no such device or file' "$T/err" || fail "message: $(cat "$T/err")"
[ -e "$T/no-such.img" ] && fail "the missing file was created"
mkdir "$T/dir"
erase "$T/dir"
expect 1
[ "$(sum "$F")" = "$BEFORE" ] || fail "$F was changed"

case_ "loop device: discarded, reads back as zeros"
LSIZE=$((48 * MiB))
pattern "$T/pattern" $LSIZE
cp "$T/pattern" "$T/loop.img"
LOOP=
if ! LOOP=$(losetup -f --show "$T/loop.img" 2>"$T/err"); then
	skip_case "losetup failed, so the discard, --no-discard and mounted cases cannot run: $(cat "$T/err")"
	LOOP=
fi
if [ -n "$LOOP" ]; then
	at_exit "losetup -d $LOOP"
	[ "$(markers "$LOOP")" = 5 ] || fail "the loop device does not show the pattern"
	erase "$LOOP"
	expect 0 size=$LSIZE done=$LSIZE
	[ "$(field discarded)" -gt 0 ] || fail "nothing discarded: $(cat "$T/json")"
	[ $(($(field discarded) + $(field overwritten))) = $LSIZE ] || fail "discarded + overwritten != size"
	[ "$(markers "$LOOP")" = 0 ] || fail "a marker is left on the device"
	zeros "$LOOP" $LSIZE || fail "the device does not read as zeros"
	[ "$(markers "$T/loop.img")" = 0 ] || fail "a marker is left in the backing file"

	case_ "loop device, --no-discard: overwritten"
	dd if="$T/pattern" of="$LOOP" bs=1M oflag=direct conv=fsync status=none || fail "refill $LOOP"
	[ "$(markers "$LOOP")" = 5 ] || fail "the loop device does not show the pattern"
	erase "$LOOP" --no-discard
	expect 0 size=$LSIZE done=$LSIZE overwritten=$LSIZE discarded=0
	[ "$(markers "$LOOP")" = 0 ] || fail "a marker is left on the device"
	zeros "$LOOP" $LSIZE || fail "the device does not read as zeros"

	case_ "loop device mounted: refused, file system unchanged"
	if ! command -v mkfs.ext4 >/dev/null; then
		skip_case "mkfs.ext4 not installed"
	elif ! mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP" 2>"$T/err"; then
		skip_case "mkfs.ext4 failed: $(cat "$T/err")"
	elif mkdir -p "$T/mnt" && ! mount "$LOOP" "$T/mnt" 2>"$T/err"; then
		skip_case "mount failed: $(cat "$T/err")"
	else
		at_exit "umount $T/mnt 2>/dev/null"
		echo "kept by lockroot erase test $RANDOM" >"$T/mnt/keep.txt"
		cp "$T/mnt/keep.txt" "$T/keep.txt"
		sync -f "$T/mnt/keep.txt"
		expect_fail 1 'in use|mounted' "$PROG" "$LOOP"
		cmp -s "$T/mnt/keep.txt" "$T/keep.txt" || fail "the file changed on the mounted file system"
		umount "$T/mnt" || fail "umount"
		# Read-only and without the journal, the mount writes nothing: byte for byte unchanged.
		BEFORE=$(sum "$LOOP")
		mount -o ro,noload "$LOOP" "$T/mnt" || fail "mount -o ro"
		expect_fail 1 'in use|mounted' "$PROG" "$LOOP"
		cmp -s "$T/mnt/keep.txt" "$T/keep.txt" || fail "the file changed on the mounted file system"
		umount "$T/mnt" || fail "umount"
		[ "$(sum "$LOOP")" = "$BEFORE" ] || fail "$LOOP was changed"
	fi
fi

# Not a check: how fast each path is here, for the record (256 MiB each).
case_ "throughput"
rate() { echo "$((256 * 1000000000 / ($2 - $1))) MiB/s"; }
BIG=$T/big.img
pattern "$BIG" $((256 * MiB))
t0=$(date +%s%N)
erase "$BIG"
t1=$(date +%s%N)
expect 0 overwritten=$((256 * MiB))
info "overwrite (image file): $(rate "$t0" "$t1")"
pattern "$BIG" $((256 * MiB))
if [ -n "$LOOP" ] && BIG_LOOP=$(losetup -f --show "$BIG"); then
	at_exit "losetup -d $BIG_LOOP"
	t0=$(date +%s%N)
	erase "$BIG_LOOP"
	t1=$(date +%s%N)
	expect 0 discarded=$((256 * MiB))
	info "discard (loop device): $(rate "$t0" "$t1")"
fi

if [ ${#SKIPPED[@]} -gt 0 ]; then
	printf 'FAIL: %d case(s) could not run, which is not a pass:' ${#SKIPPED[@]} >&2
	printf ' [%s]' "${SKIPPED[@]}" >&2
	echo >&2
	exit 1
fi
exit 0
