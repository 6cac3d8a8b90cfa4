#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot format: a new LUKS2 volume whose only way in is the HSM (plus an optional recovery
# key); unenroll refuses to remove the last keyslot.
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq
start_swtpm
IMG=$T/new.img
truncate -s 32M "$IMG"

expect_ok "$LOCKROOT" format "$IMG" --hsm "$HSM" --bind none --yes
cryptsetup isLuks --type luks2 "$IMG" || fail "not LUKS2 after format"
expect_ok "$LOCKROOT" unlock "$IMG" --test
"$LOCKROOT" status "$IMG" --json >"$T/s.json"
[ "$(jq '.[0].keyslots | length' "$T/s.json")" = 1 ] || fail "format made more than one keyslot"
[ "$(jq -r '.[0].cipher' "$T/s.json")" = aes-xts-plain64 ] || fail "cipher"

info "the only keyslot is not removed without --force"
before=$(header_sum "$IMG")
expect_fail 1 'without any keyslot' "$LOCKROOT" unenroll "$IMG"
[ "$(header_sum "$IMG")" = "$before" ] || fail "refused unenroll changed the header"
expect_ok "$LOCKROOT" unenroll "$IMG" --force
[ "$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq '.keyslots | length')" = 0 ] || fail "--force did not remove"

info "format with a recovery key and a passphrase"
printf 'a passphrase' >"$T/pass"
expect_ok "$LOCKROOT" format "$IMG" --hsm "$HSM" --bind none --yes --recovery-key "${FAST_RECOVERY[@]}" --key-file "$T/pass"
RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
printf '%s' "$RK" >"$T/rk"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" "$IMG" || fail "recovery key"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/pass" "$IMG" || fail "passphrase"
expect_ok "$LOCKROOT" unlock "$IMG" --test
expect_ok "$LOCKROOT" unenroll "$IMG"

info "format asks before destroying data, and needs a terminal or --yes"
expect_fail 1 'use --yes' setsid "$LOCKROOT" format "$IMG" --hsm "$HSM" --bind none </dev/null
exit 0
