#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot enroll/unlock/status/unenroll with a real software TPM (swtpm) on LUKS2 image files,
# on a host presented as a Raspberry Pi 4 through LOCKROOT_SYSROOT.
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq
start_swtpm
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
IMG=$T/disk.img
make_luks2 "$IMG"

info "enroll with a recovery key, default binding on a Pi"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}"
grep -q 'bound to board-serial,sd-cid' "$T/out" || fail "default Pi binding not reported: $(cat "$T/out")"
RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
[ -n "$RK" ] || fail "no recovery key shown"
"$LOCKROOT" status "$IMG" --json >"$T/status.json" || fail "status --json"
[ "$(jq -r '.[0].tokens[] | select(.type=="lockroot") | .bind | join(",")' "$T/status.json")" = board-serial,sd-cid ] \
	|| fail "status does not show the binding"
[ "$(jq -r '.[0].tokens[] | select(.type=="lockroot") | .backend' "$T/status.json")" = tpm2 ] || fail "backend"
[ "$(jq -r '[.[0].keyslots[] | .use] | join(",")' "$T/status.json")" = passphrase,hsm,recovery ] \
	|| fail "keyslot uses: $(jq -c '.[0].keyslots' "$T/status.json")"
# The HSM keyslot is cheap PBKDF2, the recovery keyslot Argon2id.
[ "$(jq -r '.[0].keyslots[] | select(.use=="hsm") | .pbkdf' "$T/status.json")" = pbkdf2 ] || fail "hsm keyslot pbkdf"
[ "$(jq -r '.[0].keyslots[] | select(.use=="recovery") | .pbkdf' "$T/status.json")" = argon2id ] || fail "recovery pbkdf"
# The token holds no secret: the only base64 blobs are the TPM's public/private parts and the salt.
cryptsetup token export --token-id 0 "$IMG" | jq -e '.tpm2.private and .tpm2.public and (.tpm2|has("key")|not)' >/dev/null \
	|| fail "token content"

info "unlock --test through the TPM"
expect_ok "$LOCKROOT" unlock "$IMG" --test
grep -q 'unlocks through its lockroot token (keyslot 1)' "$T/err" || fail "unlock message: $(cat "$T/err")"

info "the recovery key opens the volume; what a person types is normalised by lockroot only"
printf '%s' "$RK" >"$T/rk"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" --key-slot 2 "$IMG" || fail "recovery key does not open keyslot 2"

info "keyscript mode writes the key only to a pipe"
"$LOCKROOT" unlock "$IMG" --stdout | cryptsetup open --test-passphrase --disable-external-tokens --key-file - --key-slot 1 "$IMG" \
	|| fail "keyscript output does not open keyslot 1"
expect_fail 2 'not one' "$LOCKROOT" unlock "$IMG" --stdout
[ -s "$T/out" ] && fail "the key was written to a file"

info "a changed host component is refused and named"
before=$(header_sum "$IMG")
printf '0353445343313647800000000000ffff\n' >"$LOCKROOT_SYSROOT/sys/block/mmcblk0/device/cid"
expect_fail 5 'SD card CID differs from enrolment' "$LOCKROOT" unlock "$IMG" --test
grep -q 'board serial' "$T/err" && fail "the unchanged board serial was blamed"
make_pi_sysroot "$LOCKROOT_SYSROOT"
printf '10000000deadbeef\0' >"$LOCKROOT_SYSROOT/proc/device-tree/serial-number"
expect_fail 5 'board serial differs from enrolment' "$LOCKROOT" unlock "$IMG" --test
rm "$LOCKROOT_SYSROOT/proc/device-tree/serial-number"
expect_fail 5 'board serial, which cannot be read' "$LOCKROOT" unlock "$IMG" --test
make_pi_sysroot "$LOCKROOT_SYSROOT"
expect_ok "$LOCKROOT" unlock "$IMG" --test
[ "$(header_sum "$IMG")" = "$before" ] || fail "a refused unlock changed the header"

info "the same sealed key on another TPM is refused"
saved_hsm=$HSM saved_dir=$SWTPM_DIR
start_swtpm
expect_fail 5 'another TPM|refused|differs' "$LOCKROOT" unlock "$IMG" --test --hsm "$HSM"
HSM=$saved_hsm SWTPM_DIR=$saved_dir

info "TPM absent"
stop_swtpm
expect_fail 4 'no TPM' "$LOCKROOT" unlock "$IMG" --test
IMG2=$T/disk2.img
make_luks2 "$IMG2"
before=$(header_sum "$IMG2")
expect_fail 4 'no TPM' "$LOCKROOT" enroll "$IMG2" --hsm "$HSM" --key-file "$T/pass"
[ "$(header_sum "$IMG2")" = "$before" ] || fail "enroll without a TPM changed the header"
start_swtpm

info "unenroll removes the keyslot and the token, keeps the recovery key"
expect_ok "$LOCKROOT" unenroll "$IMG"
"$LOCKROOT" status "$IMG" --json >"$T/status.json"
[ "$(jq '[.[0].tokens[] | select(.type=="lockroot")] | length' "$T/status.json")" = 0 ] || fail "token left"
[ "$(jq -r '[.[0].keyslots[] | .id] | join(",")' "$T/status.json")" = 0,2 ] || fail "keyslot 1 left"
expect_fail 11 'no lockroot token' "$LOCKROOT" unlock "$IMG" --test
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" "$IMG" || fail "recovery key lost by unenroll"

info "enroll --json reports the recovery key, and it opens its keyslot"
make_luks2 "$T/json.img"
"$LOCKROOT" enroll "$T/json.img" --hsm "$HSM" --bind none --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}" \
	--json >"$T/enroll.json" || fail "enroll --json"
jq -j .recovery_key "$T/enroll.json" >"$T/json.rk" || fail "no JSON: $(cat "$T/enroll.json")"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/json.rk" \
	--key-slot "$(jq .recovery_keyslot "$T/enroll.json")" "$T/json.img" || fail "the recovery key from --json does not open"

info "without --key-file the passphrase is asked on the terminal, not echoed"
need expect
make_luks2 "$T/tty.img"
expect -c "set timeout 60
spawn $LOCKROOT enroll $T/tty.img --hsm $HSM --bind none
expect {an existing passphrase of the volume: } { send \"test-passphrase\\r\" } timeout { exit 2 }
expect eof
lassign [wait] pid spawnid os rc
exit \$rc" >"$T/tty.out" 2>&1 || { cat "$T/tty.out" >&2; fail "enroll with a typed passphrase"; }
grep -q "test-passphrase" "$T/tty.out" && fail "the typed passphrase was echoed"
grep -q Enrolled "$T/tty.out" || fail "no enrolment: $(cat "$T/tty.out")"

info "PCR policy: extending a bound PCR refuses the key"
need tpm2_pcrextend
make_luks2 "$IMG2"
expect_ok "$LOCKROOT" enroll "$IMG2" --hsm "$HSM" --key-file "$T/pass" --pcrs 16 --bind none
expect_ok "$LOCKROOT" unlock "$IMG2" --test
tpm2_pcrextend -T "$TCTI" 16:sha256=0000000000000000000000000000000000000000000000000000000000000001 \
	|| fail "tpm2_pcrextend"
expect_fail 5 'PCR' "$LOCKROOT" unlock "$IMG2" --test

info "--tpm-fuse: sealed under lockroot's persistent TPM key; once it is evicted the key is gone"
need tpm2_evictcontrol tpm2_getcap
make_luks2 "$IMG2"
expect_ok "$LOCKROOT" enroll "$IMG2" --hsm "$HSM" --key-file "$T/pass" --bind board-serial --tpm-fuse
tpm2_getcap -T "$TCTI" handles-persistent | grep -q 0x81004C52 || fail "no persistent fuse key in the TPM"
"$LOCKROOT" status "$IMG2" --json | jq -en 'input | .[0].tokens[] | select(.type=="lockroot") | .fuse == "0x81004c52"' >/dev/null \
	|| fail "status does not show the fuse"
expect_ok "$LOCKROOT" unlock "$IMG2" --test
expect_fail 2 'tpm-fuse is for --hsm tpm2' "$LOCKROOT" enroll "$IMG2" --hsm pkcs11:token=x --key-file "$T/pass" --tpm-fuse
tpm2_evictcontrol -T "$TCTI" -C o -c 0x81004c52 >/dev/null || fail "tpm2_evictcontrol"
expect_fail 5 'no longer has the fuse key' "$LOCKROOT" unlock "$IMG2" --test
exit 0
