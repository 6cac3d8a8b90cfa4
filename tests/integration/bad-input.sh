#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every bad input gets a clear error, its documented exit code (lockroot(8), src/cli.h), and
# leaves the device byte-for-byte unchanged: the LUKS2 header area (header_sum), or the whole
# file when it is not LUKS2. enroll with the TPM (swtpm) unless a case says otherwise.
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq
start_swtpm
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"

# Each case names itself, so that a failure says which one.
CASE=
case_() { CASE=$*; info "$*"; }
fail() { echo "FAIL${CASE:+ [$CASE]}: $*" >&2; exit 1; }
file_sum() { sha256sum "$1" | cut -d' ' -f1; }
# refused SUM FILE EXIT REGEX cmd...: the command fails with EXIT saying REGEX, and FILE is
# unchanged by the measure SUM (header_sum or file_sum).
refused() {
	local sum=$1 file=$2 before
	shift 2
	before=$($sum "$file")
	expect_fail "$@"
	[ "$($sum "$file")" = "$before" ] || fail "$file was changed"
}
enroll() { "$LOCKROOT" enroll "$@"; }

IMG=$T/disk.img
make_luks2 "$IMG"
printf 'not-the-passphrase' >"$T/wrong"

case_ "not a LUKS device: a file of zeros"
truncate -s 32M "$T/zeros.img"
refused file_sum "$T/zeros.img" 3 'zeros.img is not a LUKS device' enroll "$T/zeros.img" --hsm "$HSM" --key-file "$T/pass"

case_ "a LUKS1 device: needs LUKS2, says how to convert"
truncate -s 32M "$T/luks1.img"
cryptsetup luksFormat -q --type luks1 "${FAST_PBKDF[@]}" --key-file "$T/pass" "$T/luks1.img" >/dev/null \
	|| fail "luksFormat --type luks1"
refused file_sum "$T/luks1.img" 3 'LUKS1.*cryptsetup convert --type luks2' \
	enroll "$T/luks1.img" --hsm "$HSM" --key-file "$T/pass"

case_ "no such file"
expect_fail 3 'no-such\.img: no such device or file' enroll "$T/no-such.img" --hsm "$HSM" --key-file "$T/pass"
[ -e "$T/no-such.img" ] && fail "enroll created the missing device"

case_ "wrong authorising passphrase"
refused header_sum "$IMG" 7 'no keyslot .* opens with that passphrase' enroll "$IMG" --hsm "$HSM" --key-file "$T/wrong"

case_ "TPM absent"
refused header_sum "$IMG" 4 'no TPM' enroll "$IMG" --hsm "tpm2:swtpm:path=$T/no-tpm/sock" --key-file "$T/pass"

case_ "--bind with an unknown component"
refused header_sum "$IMG" 2 "unknown component 'serial-nr'" \
	enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --bind board-serial,serial-nr

case_ "--bind sd-cid on a host without an SD card"
mkdir -p "$T/no-sd"
refused header_sum "$IMG" 2 'cannot bind to the SD card CID: .*not found' \
	env LOCKROOT_SYSROOT="$T/no-sd" "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --bind sd-cid

case_ "--hsm foo"
refused header_sum "$IMG" 2 "unknown HSM backend 'foo'" enroll "$IMG" --hsm foo --key-file "$T/pass"

case_ "no free keyslot: all 32 LUKS2 keyslots used"
FULL=$T/full.img
make_luks2 "$FULL"
for i in $(seq 1 31); do
	printf 'extra-%d' "$i" >"$T/extra"
	cryptsetup luksAddKey -q "${FAST_PBKDF[@]}" --key-file "$T/pass" "$FULL" "$T/extra" \
		|| fail "luksAddKey of keyslot $i"
done
[ "$(cryptsetup luksDump --dump-json-metadata "$FULL" | jq '.keyslots | length')" = 32 ] || fail "not 32 keyslots"
refused header_sum "$FULL" 9 'has no free keyslot' enroll "$FULL" --hsm "$HSM" --key-file "$T/pass"

case_ "no free keyslot: the keyslot area is full before the 32 keyslots are"
AREA=$T/area.img
truncate -s 32M "$AREA"
# A 1 MiB keyslot area holds four keyslots of a 512-bit volume key.
cryptsetup luksFormat -q --type luks2 "${FAST_PBKDF[@]}" --luks2-keyslots-size 1M --key-file "$T/pass" "$AREA" \
	>/dev/null 2>&1 || fail "luksFormat --luks2-keyslots-size 1M"
for i in 1 2; do
	printf 'extra-%d' "$i" >"$T/extra"
	cryptsetup luksAddKey -q "${FAST_PBKDF[@]}" --key-file "$T/pass" "$AREA" "$T/extra" || fail "luksAddKey $i"
done
# Room for one: an HSM keyslot and a recovery keyslot do not fit, and nothing is half done.
refused header_sum "$AREA" 9 'has no free keyslots \(2 needed\).*keyslot area is full' \
	enroll "$AREA" --hsm "$HSM" --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}"
printf 'extra-3' >"$T/extra"
cryptsetup luksAddKey -q "${FAST_PBKDF[@]}" --key-file "$T/pass" "$AREA" "$T/extra" || fail "luksAddKey 3"
if cryptsetup luksAddKey -q "${FAST_PBKDF[@]}" --key-file "$T/pass" "$AREA" "$T/extra" 2>/dev/null; then
	fail "the keyslot area was expected to hold only four keyslots"
fi
refused header_sum "$AREA" 9 'has no free keyslot.*keyslot area is full' enroll "$AREA" --hsm "$HSM" --key-file "$T/pass"

case_ "host fingerprint changed: unlock refused, header unchanged"
expect_ok enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --bind default
expect_ok "$LOCKROOT" unlock "$IMG" --test
printf '0353445343313647800000000000ffff\n' >"$LOCKROOT_SYSROOT/sys/block/mmcblk0/device/cid"
refused header_sum "$IMG" 5 'SD card CID differs from enrolment' "$LOCKROOT" unlock "$IMG" --test
make_pi_sysroot "$LOCKROOT_SYSROOT"
expect_ok "$LOCKROOT" unlock "$IMG" --test

# The token plugin may be installed in libcryptsetup's directory by another test: keep it out of
# the import, which would otherwise validate (and refuse) the broken tokens.
TOKEN_ID=$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq -r '.tokens | to_entries[] | select(.value.type=="lockroot") | .key')
cryptsetup token export --token-id "$TOKEN_ID" "$IMG" >"$T/token.json" || fail "token export"
token_replace() {
	jq -c "$1" "$T/token.json" >"$T/token.new" || fail "jq '$1'"
	cryptsetup token import --token-id "$TOKEN_ID" --token-replace --disable-external-tokens \
		--json-file "$T/token.new" "$IMG" || fail "token import of $1"
}

case_ "token JSON corrupt: a field broken"
token_replace '.bind_salt = "not base64!"'
refused header_sum "$IMG" 8 'corrupt: "bind_salt"' "$LOCKROOT" unlock "$IMG" --test
token_replace '.keyslots = ["0", "1"]'
refused header_sum "$IMG" 8 'corrupt: "keyslots"' "$LOCKROOT" unlock "$IMG" --test
token_replace '.tpm2.private = 42'
refused header_sum "$IMG" 8 '"private"' "$LOCKROOT" unlock "$IMG" --test
token_replace 'del(.backend)'
refused header_sum "$IMG" 8 'corrupt: "backend"' "$LOCKROOT" unlock "$IMG" --test

case_ "a token of a future version"
token_replace '.lockroot_version = 99'
refused header_sum "$IMG" 8 'version 99, newer than this lockroot' "$LOCKROOT" unlock "$IMG" --test
token_replace '.'
expect_ok "$LOCKROOT" unlock "$IMG" --test

case_ "PKCS#11 token absent (pkcs11 backend)"
need pkcs11-tool
start_softhsm lockroot-test
expect_ok "$LOCKROOT" keygen --hsm "$(p11_uri lockroot-key)"
P11_IMG=$T/p11.img
make_luks2 "$P11_IMG"
refused header_sum "$P11_IMG" 4 'No PKCS#11 token matching' enroll "$P11_IMG" --key-file "$T/pass" \
	--hsm "pkcs11:token=not-plugged-in;object=lockroot-key?module-path=$P11_MODULE&pin-source=file:$P11_PINFILE"

case_ "PKCS#11 PIN wrong (pkcs11 backend)"
printf '4321' >"$T/pin.wrong"
refused header_sum "$P11_IMG" 6 'PIN wrong' enroll "$P11_IMG" --key-file "$T/pass" --pin-file "$T/pin.wrong" \
	--hsm "pkcs11:token=$P11_TOKEN;object=lockroot-key?module-path=$P11_MODULE"

case_ "device read-only (a read-only loop device)"
[ "$(id -u)" = 0 ] || skip "losetup needs root (every other case passed)"
RO_IMG=$T/ro.img
make_luks2 "$RO_IMG"
LOOP=$(losetup -r -f --show "$RO_IMG") || skip "no loop device (every other case passed)"
at_exit "losetup -d $LOOP"
refused header_sum "$LOOP" 10 'is read-only' enroll "$LOOP" --hsm "$HSM" --key-file "$T/pass"
refused header_sum "$RO_IMG" 10 'is read-only' "$LOCKROOT" unenroll "$LOOP"
exit 0
