#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The in-place conversion engine (lib/convert.c) through tests/tools/test-convert, offline on
# image files: template -> shrink -> init -> run, each state seen by examine, and the data
# checked by decrypting it here (AES-XTS in python3-cryptography with the volume key) and
# comparing with the shrunk plaintext image, bit for bit. Power cuts: a run stopped and
# resumed; a run killed after its last chunk (STUCK_FINAL) then finalised; the header write
# cut at several points (MOVED_CUT) then undone and redone; an undo cut short. Refusals: a full
# file system is not shrunk (image unchanged); random data is UNKNOWN, a plain LUKS2 is DONE.
# Keys: the HSM token (swtpm) for init/run/finalize; a known recovery key for cryptsetup.
. "$(dirname "$0")/../lib/common.sh"
need_root
need cryptsetup jq python3 mkfs.ext4 e2fsck resize2fs debugfs sha256sum cmp
PROG=$BUILD/tests/tools/test-convert
[ -x "$PROG" ] || skip "$PROG not built"
python3 -c 'import cryptography.hazmat.primitives.ciphers' 2>/dev/null || skip "python3-cryptography not installed"
start_swtpm
export LOCKROOT_SYSROOT=$T/host LOCKROOT_RUNDIR=$T/run
make_pi_sysroot "$LOCKROOT_SYSROOT"

CASE=
case_() { CASE=$*; info "$*"; }
fail() { echo "FAIL${CASE:+ [$CASE]}: $*" >&2; exit 1; }

MiB=$((1024 * 1024))
SIZE=$((160 * MiB))
SEG=$((16 * MiB))
RK=$T/rk
printf '%s' 0123-4567-89AB-CDEF-GHJK-MNPQ-RSTV-WXYZ >"$RK"

# tc ARGS...: run test-convert; RC is its exit code, stdout in $T/json, stderr in $T/err.
tc() {
	RC=0
	# In a subshell with stderr closed: bash's own "Killed" for --crash-at-end is noise.
	("$PROG" "$@" >"$T/json" 2>"$T/err"; exit $?) 2>/dev/null || RC=$?
}
ok() { tc "$@"; [ "$RC" = 0 ] || { cat "$T/json" "$T/err" >&2; fail "test-convert $* exited $RC"; }; }
field() { jq -r ".$1" "$T/json"; }
# state IMG [RECORD] WANT
state() {
	local want=${*: -1}
	ok examine "${@:1:$#-1}"
	[ "$(field state)" = "$want" ] || fail "state is $(field state), expected $want: $(cat "$T/json")"
}
now() { date +%s%N; }
ms() { echo "$((($2 - $1) / 1000000)) ms"; }
head_sum() { head -c "$SEG" "$1" | sha256sum | cut -d' ' -f1; }

# A populated ext4 over the whole image: text with a marker, random files, a deep tree.
make_fs() {
	local img=$1 d=$T/tree
	rm -rf "$d"
	mkdir -p "$d/etc" "$d/var/lib/deep/er/still"
	yes 'lockroot convert test: known plaintext 7e3c' | head -c $((20 * MiB)) >"$d/pattern.txt"
	head -c $((30 * MiB)) /dev/urandom >"$d/random.bin"
	for i in $(seq 1 200); do head -c $((RANDOM * 3)) /dev/urandom >"$d/var/lib/deep/er/still/f$i"; done
	echo "root:x:0:0:root:/root:/bin/sh" >"$d/etc/passwd"
	truncate -s "$SIZE" "$img"
	mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 -d "$d" "$img" >/dev/null || fail "mkfs.ext4"
	(cd "$d" && find . -type f | sort | xargs sha256sum) >"$T/files.sum"
}
# files_ok IMG: every file reads back with its checksum (debugfs, no mount).
files_ok() {
	local f sum got
	while read -r sum f; do
		got=$(debugfs -R "cat /${f#./}" "$1" 2>/dev/null | sha256sum | cut -d' ' -f1)
		[ "$got" = "$sum" ] || fail "$f changed in $1"
	done <"$T/files.sum"
}
# verify IMG: the volume decrypts to the shrunk plaintext image, over the file system.
verify() {
	cryptsetup luksDump --dump-volume-key --batch-mode --disable-external-tokens --key-file "$RK" "$1" >"$T/vk" 2>&1 \
		|| { cat "$T/vk" >&2; fail "no volume key from the recovery key"; }
	python3 - "$1" "$T/vk" "$T/ref.img" "$FS_SIZE" <<'EOF' || fail "the decrypted volume differs from the plaintext"
import os, re, sys
from multiprocessing import Pool
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, vkdump, ref, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(vkdump).read().split("MK dump:")[1]
key = bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", text)))
assert len(key) == 64, len(key)
CHUNK = 8 << 20

def check(off):
    """Decrypt CHUNK bytes of the volume at off (IV: 512-byte sector number from the data offset)."""
    aes = algorithms.AES(key)
    n = min(CHUNK, length - off)
    with open(img, "rb") as f, open(ref, "rb") as g:
        f.seek((16 << 20) + off)
        g.seek(off)
        c, p = f.read(n), g.read(n)
    for i in range(0, n, 512):
        sector = (off + i) // 512
        d = Cipher(aes, modes.XTS(sector.to_bytes(16, "little"))).decryptor().update(c[i:i + 512])
        if d != p[i:i + 512]:
            return f"sector {sector} differs"
    return None

with Pool(os.cpu_count()) as pool:
    bad = [e for e in pool.map(check, range(0, length, CHUNK)) if e]
if bad:
    sys.exit(bad[0])
EOF
}

# ---- the whole path on one image ----
case_ "template: a header file, the image untouched"
IMG=$T/disk.img
make_fs "$IMG"
BEFORE=$(sha256sum <"$IMG")
t0=$(now)
ok template "$IMG" "$T/hdr" --hsm "$HSM" --recovery-key-file "$RK" --recovery-iterations 4 \
	--cipher aes-xts-plain64
info "template: $(ms "$t0" "$(now)")"
[ "$(sha256sum <"$IMG")" = "$BEFORE" ] || fail "template changed the image"
[ "$(stat -c %a "$T/hdr")" = 600 ] || fail "header file mode $(stat -c %a "$T/hdr")"
[ "$(stat -c %s "$T/hdr")" = "$SEG" ] || fail "header file size $(stat -c %s "$T/hdr")"
cryptsetup luksDump "$T/hdr" | grep -q 'offset: 16777216 \[bytes\]' || fail "data offset is not 16 MiB"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$RK" --header "$T/hdr" "$IMG" \
	|| fail "the recovery key does not open the template"
tc template "$IMG" "$T/hdr" --hsm "$HSM" --recovery-iterations 4
[ "$RC" = 1 ] && grep -q 'File exists' "$T/err" || fail "an existing header file was not refused: $RC $(cat "$T/err")"

case_ "examine PLAIN, shrink, SHRUNK: fsck clean, files unchanged"
state "$IMG" plain
[ "$(field part_size)" = "$SIZE" ] && [ "$(field fs_size)" = "$SIZE" ] || fail "sizes: $(cat "$T/json")"
UUID=$(field fs_uuid)
[ "$UUID" = "$(blkid -p -o value -s UUID "$IMG")" ] || fail "fs_uuid $UUID"
t0=$(now)
ok shrink "$IMG"
info "shrink: $(ms "$t0" "$(now)")"
FS_SIZE=$(field fs_size)
[ "$FS_SIZE" -le $((SIZE - 32 * MiB)) ] || fail "fs_size $FS_SIZE leaves less than 32 MiB"
[ "$(stat -c %s "$IMG")" = "$SIZE" ] || fail "the image size changed"
state "$IMG" shrunk
[ "$(field fs_size)" = "$FS_SIZE" ] && [ "$(field fs_uuid)" = "$UUID" ] || fail "after shrink: $(cat "$T/json")"
e2fsck -fn "$IMG" >"$T/fsck" 2>&1 || { cat "$T/fsck" >&2; fail "e2fsck -fn after shrink"; }
files_ok "$IMG"
ok shrink "$IMG"
[ "$(field fs_size)" = "$FS_SIZE" ] || fail "a second shrink changed the size"
cp "$IMG" "$T/ref.img"       # the plaintext every decryption is compared with
cp "$IMG" "$T/shrunk.img"

case_ "init: ENCRYPTING, record written, temporary header wiped"
t0=$(now)
ok init "$IMG" "$T/hdr" "$T/rec"
info "init: $(ms "$t0" "$(now)")"
state "$IMG" "$T/rec" encrypting
[ "$(field total)" = $((SIZE - SEG)) ] && [ "$(field done)" = 0 ] || fail "progress: $(cat "$T/json")"
[ "$(field cipher)" = aes-xts-plain64 ] || fail "cipher: $(cat "$T/json")"
read -r word seg_sha off part ks_sha <"$T/rec"
[ "$word" = moved ] && [ "$off" = $((SIZE - SEG)) ] && [ "$part" = "$SIZE" ] && [ ${#ks_sha} = 64 ] \
	|| fail "record: $(cat "$T/rec")"
[ "$seg_sha" = "$(head_sum "$T/shrunk.img")" ] || fail "the record does not hold the first segment's checksum"
[ -z "$(ls -A "$T/run")" ] || fail "left in the run directory: $(ls "$T/run")"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$RK" "$IMG" || fail "recovery key on the device"
cp "$IMG" "$T/init.img"

case_ "run offline: DONE, the data decrypts to the plaintext"
t0=$(now)
ok run "$IMG"
info "run ($(((SIZE - SEG) / MiB)) MiB): $(ms "$t0" "$(now)")"
state "$IMG" "$T/rec" done
cryptsetup luksDump --dump-json-metadata "$IMG" >"$T/normal.json" || fail "luksDump"
t0=$(now)
verify "$IMG"
info "verify: $(ms "$t0" "$(now)")"
tc run "$IMG"
[ "$RC" = 1 ] && grep -q 'no encryption in progress' "$T/err" || fail "run on a finished volume: $RC $(cat "$T/err")"

case_ "interrupted run: stopped after 2 chunks, resumed"
cp "$T/init.img" "$IMG"
tc run "$IMG" --stop-after 2
[ "$RC" = 3 ] || { cat "$T/err"; fail "run --stop-after exited $RC"; }
state "$IMG" "$T/rec" encrypting
DONE=$(field done)
[ "$DONE" -gt 0 ] && [ "$DONE" -lt $((SIZE - SEG)) ] || fail "done after a stop: $(cat "$T/json")"
tc run "$IMG" --stop-after 3
[ "$RC" = 3 ] || { cat "$T/err"; fail "resumed run --stop-after exited $RC"; }
state "$IMG" "$T/rec" encrypting
[ "$(field done)" -gt "$DONE" ] || fail "no progress on resume: $(cat "$T/json")"
ok run "$IMG"
state "$IMG" done
verify "$IMG"

case_ "killed after the last chunk: STUCK_FINAL, finalised"
cp "$T/init.img" "$IMG"
tc run "$IMG" --crash-at-end
[ "$RC" = 137 ] || { cat "$T/err"; fail "run --crash-at-end exited $RC, expected SIGKILL"; }
state "$IMG" "$T/rec" stuck-final
[ "$(field done)" = "$(field total)" ] || fail "stuck with done != total: $(cat "$T/json")"
cryptsetup luksDump --dump-json-metadata "$IMG" >"$T/stuck.json"
jq -e '.config.requirements.mandatory == ["online-reencrypt-v2"] and
	([.segments[] | select(.flags == null)] | length) == 1 and .segments["0"].type == "crypt" and
	([.segments[].flags // [] | .[]] | sort) == ["backup-final", "backup-moved-segment", "backup-previous"] and
	([.keyslots[] | select(.type == "reencrypt")] | length) == 1' "$T/stuck.json" >/dev/null \
	|| fail "not the stuck layout: $(jq -c .segments "$T/stuck.json")"
SUM=$(sha256sum <"$IMG")
tc run "$IMG"
[ "$RC" = 1 ] || fail "libcryptsetup resumed a stuck reencryption (exit $RC): the case may be fixed upstream"
[ "$(sha256sum <"$IMG")" = "$SUM" ] || fail "the failed resume changed the image"
cryptsetup repair --batch-mode "$IMG" >/dev/null 2>&1
state "$IMG" stuck-final
printf wrong >"$T/wrong"
tc finalize "$IMG" --key-file "$T/wrong"
[ "$RC" = 1 ] && [ "$(sha256sum <"$IMG")" = "$SUM" ] || fail "finalize with a wrong key: exit $RC, or the image changed"
ok finalize "$IMG"
state "$IMG" "$T/rec" done
cryptsetup luksDump "$IMG" >/dev/null || fail "luksDump after finalize"
cryptsetup repair --batch-mode "$IMG" >"$T/out" 2>&1 || { cat "$T/out"; fail "cryptsetup repair after finalize"; }
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$RK" "$IMG" || fail "recovery key after finalize"
cryptsetup luksDump --dump-json-metadata "$IMG" >"$T/final.json"
# The same metadata a normal finish leaves, but for salts and digests.
shape() { jq -S 'del(.keyslots[].kdf.salt, .digests[].salt, .digests[].digest, .tokens["0"].tpm2, .tokens["0"].bind, .tokens["0"].bind_salt)' "$1"; }
diff <(shape "$T/normal.json") <(shape "$T/final.json") >"$T/diff" || { cat "$T/diff"; fail "finalised metadata differs"; }
verify "$IMG"
tc finalize "$IMG"
[ "$RC" = 1 ] || fail "finalize on a finished volume was not refused"

case_ "header write cut: MOVED_CUT at cut points up to the end of the last keyslot, undone"
dd if="$T/shrunk.img" of="$T/orig16" bs=1M count=16 status=none
ORIG=$(head_sum "$T/shrunk.img")
# cut IMG K: the header write reached byte K; the rest of the first segment is still the file system.
cut_at() {
	cp "$T/init.img" "$1"
	dd if="$T/orig16" of="$1" bs=4096 iflag=skip_bytes oflag=seek_bytes skip="$2" seek="$2" conv=notrunc status=none \
		|| fail "dd"
}
for K in 512 8192 20480 65536 300000 500000; do
	info "cut at $K"
	cut_at "$IMG" $K
	SUM=$(sha256sum <"$IMG")
	state "$IMG" "$T/rec" moved-cut
	[ "$(sha256sum <"$IMG")" = "$SUM" ] || fail "K=$K: examine wrote to the image"
	# Without the record it cannot be told: never MOVED_CUT.
	ok examine "$IMG"
	[ "$(field state)" != moved-cut ] || fail "K=$K: MOVED_CUT without a record"
	cp "$T/rec" "$T/rec.saved"
	ok undo-cut "$IMG" "$T/rec"
	state "$IMG" shrunk
	[ "$(head_sum "$IMG")" = "$ORIG" ] || fail "K=$K: the first segment is not back"
	[ ! -e "$T/rec" ] || fail "K=$K: record not removed"
	cmp -s -n $((SIZE - SEG)) "$IMG" "$T/shrunk.img" || fail "K=$K: the file system differs from before init"
	mv "$T/rec.saved" "$T/rec"
done
info "a header write that reached every keyslot is a usable header: ENCRYPTING"
cut_at "$IMG" $((SEG - 4096))
state "$IMG" "$T/rec" encrypting

case_ "undo cut short: still MOVED_CUT, undone again"
cut_at "$IMG" 500000
dd if="$T/orig16" of="$IMG" bs=65536 count=1 conv=notrunc status=none   # the undo reached 64 KiB
state "$IMG" "$T/rec" moved-cut
ok undo-cut "$IMG" "$T/rec"
state "$IMG" shrunk
[ "$(head_sum "$IMG")" = "$ORIG" ] || fail "the first segment is not back"
e2fsck -fn "$IMG" >"$T/fsck" 2>&1 || { cat "$T/fsck" >&2; fail "e2fsck -fn after undo"; }
files_ok "$IMG"

case_ "after an undo: init again, run, identical"
ok init "$IMG" "$T/hdr" "$T/rec"
state "$IMG" "$T/rec" encrypting
ok run "$IMG"
state "$IMG" done
verify "$IMG"
tc undo-cut "$IMG" "$T/rec"
[ "$RC" = 1 ] || fail "undo-cut on a finished volume was not refused"

case_ "init refuses what is not SHRUNK"
cp "$T/shrunk.img" "$T/p.img"
truncate -s $((SIZE - 16 * MiB)) "$T/p.img"   # now the file system leaves only 16 MiB
state "$T/p.img" plain
SUM=$(sha256sum <"$T/p.img")
tc init "$T/p.img" "$T/hdr" "$T/rec2"
[ "$RC" = 1 ] && [ ! -e "$T/rec2" ] && [ "$(sha256sum <"$T/p.img")" = "$SUM" ] || fail "init on PLAIN: $RC $(cat "$T/err")"
rm -f "$T/p.img"

case_ "shrink refused when the file system is full: -ENOSPC, image unchanged"
F=$T/full.img
rm -rf "$T/tree" && mkdir -p "$T/tree"
head -c $((132 * MiB)) /dev/urandom >"$T/tree/big"
truncate -s "$SIZE" "$F"
mkfs.ext4 -q -F -b 4096 -d "$T/tree" "$F" >/dev/null || fail "mkfs.ext4 full"
SUM=$(sha256sum <"$F")
tc shrink "$F"
[ "$RC" = 1 ] && [ "$(field rc)" = -28 ] || fail "shrink of a full file system: exit $RC $(cat "$T/json")"
grep -q 'free some space' "$T/err" || fail "message: $(cat "$T/err")"
[ "$(sha256sum <"$F")" = "$SUM" ] || fail "a refused shrink changed the image"
state "$F" plain
rm -f "$F"

case_ "shrink of a file system not cleanly unmounted (power cut before the reboot): e2fsck, then shrink"
# resize2fs -P refuses such a file system ("Please run 'e2fsck -f' first"); the emulated Pi's
# shutdown left one. Cleared "valid" flag = what a mount without a clean unmount leaves.
F=$T/dirty.img
make_fs "$F"
debugfs -w -R "ssv state 0" "$F" >/dev/null 2>&1 || fail "debugfs ssv state 0"
resize2fs -P "$F" >"$T/p" 2>&1 && fail "resize2fs -P accepted the unclean file system (test broken)"
grep -q "Please run 'e2fsck -f" "$T/p" || fail "resize2fs -P: $(cat "$T/p")"
ok shrink "$F"
[ "$(field fs_size)" -le $((SIZE - 32 * MiB)) ] || fail "fs_size $(field fs_size) after the unclean shrink"
e2fsck -fn "$F" >"$T/fsck" 2>&1 || { cat "$T/fsck" >&2; fail "e2fsck -fn after the unclean shrink"; }
files_ok "$F"
rm -f "$F"

case_ "examine: UNKNOWN on random data, DONE on a plain LUKS2, a stale record ignored"
head -c $((64 * MiB)) /dev/urandom >"$T/rand.img"
state "$T/rand.img" unknown
state "$T/rand.img" "$T/rec" unknown
make_luks2 "$T/luks.img" 64
state "$T/luks.img" done
[ "$(field cipher)" = aes-xts-plain64 ] || fail "cipher: $(cat "$T/json")"
tc examine "$T/no-such.img"
[ "$RC" = 1 ] || fail "examine of a missing file: exit $RC"
exit 0
