#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot keygen/enroll/unlock/status/unenroll with a real SoftHSM2 token on LUKS2 image files,
# on a host presented as a Raspberry Pi 4 through LOCKROOT_SYSROOT: PINs, an absent token, a
# destroyed key and a changed host.
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq pkcs11-tool
start_softhsm lockroot-test
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
IMG=$T/disk.img
make_luks2 "$IMG"
HSM=$(p11_uri lockroot-key)
# The same key, named without a PIN: the PIN must then come from --pin-file.
HSM_NOPIN="pkcs11:token=$P11_TOKEN;object=lockroot-key?module-path=$P11_MODULE"
printf '1234\n' >"$T/pin.right"
printf '4321' >"$T/pin.wrong"

info "keygen creates the token key, then says it exists"
expect_ok "$LOCKROOT" keygen --hsm "$HSM"
grep -q 'Created a non-extractable AES-256 key' "$T/err" || fail "keygen did not say it created the key: $(cat "$T/err")"
expect_ok "$LOCKROOT" keygen --hsm "$HSM"
grep -q 'exists already' "$T/out" || fail "a second keygen did not say the key exists: $(cat "$T/out")"
pkcs11-tool --module "$P11_MODULE" --token-label "$P11_TOKEN" --login --pin 1234 --list-objects --type secrkey \
	2>/dev/null | grep -c 'label: *lockroot-key$' | grep -qx 1 || fail "not exactly one key lockroot-key in the token"

info "enroll with a recovery key, default binding on a Pi"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --bind default --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}"
grep -q 'locked by pkcs11, bound to board-serial,sd-cid' "$T/out" || fail "enroll report: $(cat "$T/out")"
RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
[ -n "$RK" ] || fail "no recovery key shown"

info "unlock --test through the token"
expect_ok "$LOCKROOT" unlock "$IMG" --test
grep -q 'unlocks through its lockroot token (keyslot 1)' "$T/err" || fail "unlock message: $(cat "$T/err")"

info "status --json: backend pkcs11 and the URI"
"$LOCKROOT" status "$IMG" --json >"$T/status.json" || fail "status --json"
tok='.[0].tokens[] | select(.type=="lockroot")'
[ "$(jq -r "$tok | .backend" "$T/status.json")" = pkcs11 ] || fail "backend: $(jq -c "$tok" "$T/status.json")"
uri=$(jq -r "$tok | .uri" "$T/status.json")
[[ $uri == pkcs11:* && $uri == *"token=$P11_TOKEN"* && $uri == *object=lockroot-key* ]] || fail "status uri: $uri"
# No PIN anywhere: the URI names where the PIN is (pin-source), never the PIN itself.
jq -c "$tok" "$T/status.json" | grep -Eq 'pin-value|1234' && fail "status --json shows a PIN"
[ "$(jq -r "$tok | .bind | join(\",\")" "$T/status.json")" = board-serial,sd-cid ] || fail "status bind"
[ "$(jq -r '[.[0].keyslots[] | .use] | join(",")' "$T/status.json")" = passphrase,hsm,recovery ] \
	|| fail "keyslot uses: $(jq -c '.[0].keyslots' "$T/status.json")"

info "the recovery key opens the volume with stock cryptsetup"
printf '%s' "$RK" >"$T/rk"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" --key-slot 2 "$IMG" || fail "recovery key does not open keyslot 2"

info "PIN: enroll with --pin-file, then unlock needs the PIN"
IMG2=$T/disk2.img
make_luks2 "$IMG2"
expect_ok "$LOCKROOT" enroll "$IMG2" --hsm "$HSM_NOPIN" --pin-file "$T/pin.right" --bind default --key-file "$T/pass"
cryptsetup token export --token-id 0 "$IMG2" | jq -r .pkcs11.uri | grep -Eq 'pin-value|1234' && fail "the token holds the PIN"
before=$(header_sum "$IMG2")
expect_fail 6 'PIN is needed' "$LOCKROOT" unlock "$IMG2" --test </dev/null
expect_fail 6 'PIN wrong' "$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.wrong" </dev/null
expect_ok "$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.right" </dev/null
[ "$(header_sum "$IMG2")" = "$before" ] || fail "unlocking changed the header"

info "token absent: another token label, or a SoftHSM2 with no token at all"
expect_fail 4 'No PKCS#11 token' "$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.right" \
	--hsm "pkcs11:token=not-plugged-in;object=lockroot-key?module-path=$P11_MODULE"
mkdir -p "$T/softhsm-empty/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/softhsm-empty/tokens" \
	>"$T/softhsm-empty/conf"
expect_fail 4 'No PKCS#11 token' env SOFTHSM2_CONF="$T/softhsm-empty/conf" \
	"$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.right"
expect_fail 4 'No PKCS#11 token' env SOFTHSM2_CONF="$T/softhsm-empty/conf" "$LOCKROOT" unlock "$IMG" --test
expect_ok "$LOCKROOT" unlock "$IMG" --test

info "a changed SD card CID is refused and named"
before=$(header_sum "$IMG")
printf '0353445343313647800000000000ffff\n' >"$LOCKROOT_SYSROOT/sys/block/mmcblk0/device/cid"
expect_fail 5 'SD card CID differs from enrolment' "$LOCKROOT" unlock "$IMG" --test
grep -q 'board serial' "$T/err" && fail "the unchanged board serial was blamed"
expect_fail 5 'SD card CID differs from enrolment' "$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.right"
make_pi_sysroot "$LOCKROOT_SYSROOT"
expect_ok "$LOCKROOT" unlock "$IMG" --test
[ "$(header_sum "$IMG")" = "$before" ] || fail "a refused unlock changed the header"

info "the key destroyed in the token is refused"
pkcs11-tool --module "$P11_MODULE" --token-label "$P11_TOKEN" --login --pin 1234 \
	--delete-object --type secrkey --label lockroot-key >"$T/p11.out" 2>&1 || { cat "$T/p11.out" >&2; fail "pkcs11-tool --delete-object"; }
expect_fail 5 'No AES key "lockroot-key"' "$LOCKROOT" unlock "$IMG" --test
expect_fail 5 'No AES key "lockroot-key"' "$LOCKROOT" unlock "$IMG2" --test --pin-file "$T/pin.right"
[ "$(header_sum "$IMG")" = "$before" ] || fail "a refused unlock changed the header"

info "unenroll removes the keyslot and the token, keeps the recovery key"
expect_ok "$LOCKROOT" unenroll "$IMG"
"$LOCKROOT" status "$IMG" --json >"$T/status.json" || fail "status --json"
[ "$(jq '[.[0].tokens[] | select(.type=="lockroot")] | length' "$T/status.json")" = 0 ] || fail "token left"
[ "$(jq -r '[.[0].keyslots[] | .id] | join(",")' "$T/status.json")" = 0,2 ] || fail "keyslot 1 left"
expect_fail 11 'no lockroot token' "$LOCKROOT" unlock "$IMG" --test
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" "$IMG" || fail "recovery key lost by unenroll"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/pass" "$IMG" || fail "passphrase lost by unenroll"
expect_ok "$LOCKROOT" unenroll "$IMG2"
expect_fail 11 'no lockroot token' "$LOCKROOT" unlock "$IMG2" --test

info "a PIN given in the URI (pin-value=) enrolls, is not stored, and unlocking then needs the PIN"
expect_ok "$LOCKROOT" keygen --hsm "pkcs11:token=$P11_TOKEN;object=pv-key?module-path=$P11_MODULE&pin-value=1234"
make_luks2 "$T/pv.img"
expect_ok "$LOCKROOT" enroll "$T/pv.img" --hsm "pkcs11:token=$P11_TOKEN;object=pv-key?module-path=$P11_MODULE&pin-value=1234" \
	--key-file "$T/pass" --bind none
grep -q 'can be read by other users' "$T/err" || fail "no warning about pin-value in argv"
grep -q 'will not boot unattended' "$T/err" || fail "no warning that unlocking needs a PIN"
cryptsetup token export --token-id 0 "$T/pv.img" | grep -q 'pin-value' && fail "pin-value stored in the token"
expect_fail 6 'PIN' "$LOCKROOT" unlock "$T/pv.img" --test </dev/null
expect_ok "$LOCKROOT" unlock "$T/pv.img" --test --pin-file "$T/pin.right"
exit 0
