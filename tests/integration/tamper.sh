#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot tamper on LUKS2 image files, with a real software TPM (swtpm) and SoftHSM2: the
# configuration's errors (file:line), arm/disarm/status and the lockroot-tamper header token,
# the boot check of an armed volume whose line cannot be read, and the self-destruct (through
# `tamper trigger`, the daemon's own code path, since this host has no GPIO): afterwards no
# lockroot keyslot or token is left, unlocking fails, the PKCS#11 key is gone from the token,
# the recovery keyslot stays (destroy-recovery = no) or is gone (yes), an unarmed volume is
# untouched. Notify mode runs the command and keeps the keys. The GPIO side is the system
# test's (tests/system/93-tamper.py, gpio-sim in a guest).
. "$(dirname "$0")/../lib/common.sh"
need cryptsetup jq pkcs11-tool
need_root
start_swtpm
start_softhsm lockroot-test
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
P11=$(p11_uri tamper-key)
expect_ok "$LOCKROOT" keygen --hsm "$P11"

# enroll_img IMG tpm2|pkcs11: passphrase keyslot 0, HSM keyslot 1, recovery keyslot 2; sets RK.
enroll_img() {
	make_luks2 "$1"
	local hsm=$HSM
	[ "$2" = pkcs11 ] && hsm=$P11
	expect_ok "$LOCKROOT" enroll "$1" --hsm "$hsm" --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}"
	RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
	[ -n "$RK" ] || fail "no recovery key shown for $1"
	expect_ok "$LOCKROOT" unlock "$1" --test
}
token_types() { cryptsetup luksDump --dump-json-metadata "$1" | jq -r '[.tokens[].type] | sort | join(",")'; }
keyslots() { cryptsetup luksDump --dump-json-metadata "$1" | jq -r '.keyslots | keys | sort | join(",")'; }
tamper_token() { cryptsetup luksDump --dump-json-metadata "$1" | jq -c '.tokens[] | select(.type=="lockroot-tamper")'; }
p11_keys() {
	pkcs11-tool --module "$P11_MODULE" --token-label "$P11_TOKEN" --login --pin 1234 --list-objects --type secrkey \
		2>/dev/null | grep -c 'label: *tamper-key$' || true
}
opens_with() { # IMG KEYFILE SLOT
	cryptsetup open --test-passphrase --disable-external-tokens --key-file "$2" --key-slot "$3" "$1" 2>/dev/null
}

info "configuration errors name the file and line"
conf_error() { # EXPECTED-MESSAGE (ERE) then the file's text on stdin
	cat >"$T/bad.conf"
	expect_fail 2 "$1" "$LOCKROOT" tamper arm --force --config "$T/bad.conf" "$T/none.img"
}
printf 'line = gpiochip0\n' | conf_error 'bad.conf:1: line must be CHIP:OFFSET'
printf '# c\n\nline = gpiochip0:x\n' | conf_error 'bad.conf:3: line must be CHIP:OFFSET'
printf 'line = gpiochip0:1\nactive = sideways\n' | conf_error 'bad.conf:2: active: active must be high or low'
printf 'line = gpiochip0:1\nmode = explode\n' | conf_error 'bad.conf:2: mode: mode must be notify or self-destruct'
printf 'debounce-ms = -3\nline = gpiochip0:1\n' | conf_error 'bad.conf:1: debounce-ms: .*number'
printf 'line = gpiochip0:1\nlatched = perhaps\n' | conf_error 'bad.conf:2: latched: latched must be yes or no'
printf 'line = gpiochip0:1\ncommand = tamper-alert\n' | conf_error 'bad.conf:2: command: .*absolute path'
printf 'line = gpiochip0:1\ncolour = red\n' | conf_error 'bad.conf:2: colour: unknown key'
printf 'line = gpiochip0:1\nmode\n' | conf_error "bad.conf:2: expected 'key = value'"
printf 'line = gpiochip0:1\nline = gpiochip0:1\n' | conf_error 'bad.conf:2: line gpiochip0:1 is configured twice'
printf 'line = gpiochip0:1\ndestroy-recovery =\n' | conf_error 'bad.conf:2: destroy-recovery has no value'
printf '# nothing\nmode = notify\n' | conf_error 'no .line = CHIP:OFFSET.'
expect_fail 3 'cannot read .*missing.conf' "$LOCKROOT" tamper arm --force --config "$T/missing.conf" "$T/none.img"
printf 'line = gpiochip0:1\n' >"$T/open.conf"
chmod 666 "$T/open.conf"
expect_fail 2 'open.conf may be changed by other users .*mode 0666.*command run as root' \
	"$LOCKROOT" tamper arm --force --config "$T/open.conf" "$T/none.img"

info "arm: refuses lines this host does not have, writes the token with --force"
A=$T/a.img
enroll_img "$A" tpm2
RK_A=$RK
cat >"$T/sd.conf" <<'EOF'
# defaults for every line
mode = self-destruct
poweroff = no
line = gpiochip0:5
latched = yes
line = pinctrl-test:17
active = low
debounce-ms = 50
EOF
before=$(header_sum "$A")
expect_fail 3 'line gpiochip0:5 does not exist on this host; nothing was armed' \
	"$LOCKROOT" tamper arm --config "$T/sd.conf" "$A"
[ "$(header_sum "$A")" = "$before" ] || fail "a refused arm changed the header"
expect_ok "$LOCKROOT" tamper arm --force --config "$T/sd.conf" "$A"
grep -q "Armed $A (LUKS UUID $(cryptsetup luksUUID "$A"))" "$T/out" || fail "arm report: $(cat "$T/out")"
grep -q 'every lockroot keyslot and the HSM keys are destroyed' "$T/out" || fail "arm does not say what happens"
# self-destruct mode: the TPM key is sealed again under lockroot's fuse, which can be destroyed
grep -q "$A: 1 TPM key sealed again under the TPM fuse" "$T/out" || fail "arm did not fuse the TPM key: $(cat "$T/out")"
fuse=$("$LOCKROOT" status "$A" --json | jq -r '.[0].tokens[] | select(.type == "lockroot") | .fuse')
[ "$fuse" = 0x81004c52 ] || fail "the tpm2 token is not under the fuse: $("$LOCKROOT" status "$A" --json)"
expect_ok "$LOCKROOT" unlock "$A" --test
tok=$(tamper_token "$A")
[ -n "$tok" ] || fail "no lockroot-tamper token"
jq -en 'input | .armed == true and .keyslots == [] and (.lines | length) == 2
	and .lines[0] == {"line":"gpiochip0:5","active":"high","debounce_ms":20,"latched":true,"mode":"self-destruct","destroy_recovery":false,"poweroff":false}
	and .lines[1].line == "pinctrl-test:17" and .lines[1].active == "low" and .lines[1].debounce_ms == 50
	and .lines[1].latched == false' <<<"$tok" >/dev/null || fail "token content: $tok"
jq -en --arg u "$(cryptsetup luksUUID "$A")" --arg d "$A" 'input | .volumes == [{"uuid":$u,"device":$d}]' \
	"$LOCKROOT_SYSROOT/var/lib/lockroot/tamper.json" >/dev/null || fail "state file: $(cat "$LOCKROOT_SYSROOT/var/lib/lockroot/tamper.json")"
# the tamper token opens nothing and does not disturb unlocking
expect_ok "$LOCKROOT" unlock "$A" --test
[ "$(keyslots "$A")" = 0,1,2 ] || fail "arming changed the keyslots: $(keyslots "$A")"

info "status (text and --json): armed, stored lines, daemon not running, levels unknown here"
mkdir -p "$LOCKROOT_SYSROOT/etc/lockroot"
cp "$T/sd.conf" "$LOCKROOT_SYSROOT/etc/lockroot/tamper.conf"
expect_ok "$LOCKROOT" tamper status
grep -q "^$A: armed$" "$T/out" || fail "status text: $(cat "$T/out")"
grep -q '^daemon: not running$' "$T/out" || fail "status daemon: $(cat "$T/out")"
"$LOCKROOT" tamper status --json >"$T/st.json" || fail "status --json"
jq -en --arg d "$A" 'input | .daemon == false and (.lines | length) == 2 and .lines[0].level == "unknown"
	and .volumes[0].device == $d and .volumes[0].armed == true and (.volumes[0].lines | length) == 2' \
	"$T/st.json" >/dev/null || fail "status --json: $(cat "$T/st.json")"

info "disarm keeps the configuration; arm again re-arms"
expect_ok "$LOCKROOT" tamper disarm "$A"
jq -en 'input | .armed == false and (.lines | length) == 2' <<<"$(tamper_token "$A")" >/dev/null || fail "disarm: $(tamper_token "$A")"
jq -en 'input | .volumes == []' "$LOCKROOT_SYSROOT/var/lib/lockroot/tamper.json" >/dev/null || fail "state after disarm"
"$LOCKROOT" tamper status --json "$A" | jq -en 'input | .volumes[0].armed == false and .volumes[0].configured == true' \
	>/dev/null || fail "status after disarm"
[ "$(token_types "$A")" = lockroot,lockroot-recovery,lockroot-tamper ] || fail "tokens: $(token_types "$A")"

info "check at boot: not armed -> nothing; armed with a latched line this host cannot read -> 22, said loudly"
expect_ok "$LOCKROOT" tamper check "$A"
expect_ok "$LOCKROOT" tamper arm --force --no-start --config "$T/sd.conf" "$A"
before=$(header_sum "$A")
expect_fail 22 'latched line gpiochip0:5 of .* cannot be read' "$LOCKROOT" tamper check "$A"
[ "$(header_sum "$A")" = "$before" ] || fail "an unreadable line changed the header"
grep -q pinctrl-test "$T/err" && fail "check read a line that is not latched"
expect_fail 3 'none.img' "$LOCKROOT" tamper check "$T/none.img"

info "arm without DEVICE: the crypttab volumes that have a lockroot token"
B=$T/b.img
enroll_img "$B" pkcs11
RK_B=$RK
C=$T/c.img                   # enrolled, never armed: must stay untouched
enroll_img "$C" tpm2
PLAIN=$T/plain.img           # in crypttab, no lockroot token: not armed
make_luks2 "$PLAIN"
printf '# name dev key opts\nroot-a %s none luks\nroot-b %s none luks\nplain %s none luks\n' "$A" "$B" "$PLAIN" \
	>"$LOCKROOT_SYSROOT/etc/crypttab"
sum_plain=$(header_sum "$PLAIN")
expect_ok "$LOCKROOT" tamper arm --force --no-start --config "$T/sd.conf"
[ "$(header_sum "$PLAIN")" = "$sum_plain" ] || fail "arm changed the plain volume"
grep -q "Armed $A " "$T/out" && grep -q "Armed $B " "$T/out" || fail "arm from crypttab: $(cat "$T/out")"
grep -q "$PLAIN" "$T/out" && fail "a volume without a lockroot token was armed"
[ -z "$(tamper_token "$PLAIN")" ] || fail "the plain volume got a tamper token"
jq -en 'input | .volumes | length == 2' "$LOCKROOT_SYSROOT/var/lib/lockroot/tamper.json" >/dev/null || fail "state: 2 volumes"

info "trigger in notify mode: the command runs with the line and mode, the keys stay, the event is recorded"
cat >"$T/notify.conf" <<EOF
line = gpiochip0:5
mode = notify
command = /bin/sh -c 'echo "\$LOCKROOT_TAMPER_LINE \$LOCKROOT_TAMPER_MODE" >>$T/notified'
EOF
sum_c=$(header_sum "$C")
expect_ok "$LOCKROOT" tamper trigger --config "$T/notify.conf"
[ "$(cat "$T/notified")" = "gpiochip0:5 notify" ] || fail "notify command: $(cat "$T/notified" 2>/dev/null)"
grep -q 'TAMPER: line gpiochip0:5 is active' "$T/err" || fail "notify message: $(cat "$T/err")"
expect_ok "$LOCKROOT" unlock "$A" --test
expect_ok "$LOCKROOT" unlock "$B" --test
jq -en 'input | .last_event.line == "gpiochip0:5" and .last_event.mode == "notify" and .last_event.where == "trigger"
	and (.last_event.time | test("^20[0-9-]+T[0-9:]+Z$"))' <<<"$(tamper_token "$A")" >/dev/null \
	|| fail "notify event not recorded: $(tamper_token "$A")"
[ "$(p11_keys)" = 1 ] || fail "notify touched the PKCS#11 key"

info "trigger as a user other than root is refused"
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	expect_fail 2 'root only' setpriv --reuid=nobody --regid=nogroup --clear-groups "$LOCKROOT" tamper trigger \
		--config "$T/sd.conf"
fi

info "self-destruct (destroy-recovery = no): tpm2 and pkcs11 volumes lose every lockroot keyslot, token and key"
[ "$(p11_keys)" = 1 ] || fail "the PKCS#11 key is not there before"
# A copy of A's header as someone who cloned the card before the event would have it.
cryptsetup luksHeaderBackup "$A" --header-backup-file "$T/a-header.copy"
cp --sparse=always "$A" "$T/a-copy.img"
# the HSM keyslot's key material, to show it is overwritten and not only unreferenced
area() { # IMG SLOT: offset and size of the keyslot's area
	cryptsetup luksDump --dump-json-metadata "$1" | jq -r ".keyslots[\"$2\"].area | \"\(.offset) \(.size)\""
}
read -r ks_off ks_size <<<"$(area "$A" 1)"
[ -n "$ks_off" ] && [ "$ks_size" -gt 0 ] || fail "no area for keyslot 1 of $A"
ks_before=$(tail -c +$((ks_off + 1)) "$A" | head -c "$ks_size" | sha256sum)
expect_ok "$LOCKROOT" tamper trigger --config "$T/sd.conf" --no-poweroff
grep -Eq 'TAMPER: keys destroyed [0-9.]+ ms after the edge \(2 keyslots, 2 tokens on 2 volumes' "$T/err" \
	|| fail "self-destruct report: $(cat "$T/err")"
grep -q 'destroyed the TPM fuse key' "$T/err" || fail "the TPM fuse was not destroyed: $(cat "$T/err")"
grep -q 'destroyed the pkcs11 key inside the HSM' "$T/err" || fail "pkcs11 key not reported destroyed: $(cat "$T/err")"
grep -Eq 'HSM keys done [0-9.]+ ms after the edge \(2 destroyed, 0 backends' "$T/err" || fail "HSM report: $(cat "$T/err")"
# The copy taken before: its token is intact, but the TPM no longer has the key it needs.
expect_fail 5 'no longer has the fuse key' "$LOCKROOT" unlock "$T/a-copy.img" --test
for img in "$A" "$B"; do
	[ "$(token_types "$img")" = lockroot-recovery,lockroot-tamper ] || fail "$img tokens left: $(token_types "$img")"
	[ "$(keyslots "$img")" = 0,2 ] || fail "$img keyslots left: $(keyslots "$img")"
	expect_fail 11 'no lockroot token' "$LOCKROOT" unlock "$img" --test
	jq -en 'input | .armed == true and .last_event.mode == "self-destruct"' <<<"$(tamper_token "$img")" >/dev/null \
		|| fail "$img: event not recorded: $(tamper_token "$img")"
done
[ "$(p11_keys)" = 0 ] || fail "the PKCS#11 key is still in the token"
printf '%s' "$RK_A" >"$T/rk-a"
printf '%s' "$RK_B" >"$T/rk-b"
opens_with "$A" "$T/rk-a" 2 || fail "the recovery key of $A no longer opens it"
opens_with "$B" "$T/rk-b" 2 || fail "the recovery key of $B no longer opens it"
cryptsetup luksDump --dump-json-metadata "$A" | jq -en 'input | .keyslots | has("1") | not' >/dev/null || fail "keyslot 1 left"
[ "$(tail -c +$((ks_off + 1)) "$A" | head -c "$ks_size" | sha256sum)" != "$ks_before" ] \
	|| fail "the key material of keyslot 1 of $A is still on disk"
[ "$(header_sum "$C")" = "$sum_c" ] || fail "the unarmed volume $C was changed"
expect_ok "$LOCKROOT" unlock "$C" --test
[ "$(header_sum "$PLAIN")" = "$sum_plain" ] || fail "the plain volume was changed"

info "a second trigger finds nothing left to destroy and says so"
expect_ok "$LOCKROOT" tamper trigger --config "$T/sd.conf" --no-poweroff
grep -q 'no lockroot keyslot left to destroy' "$T/err" || fail "second trigger: $(cat "$T/err")"
opens_with "$A" "$T/rk-a" 2 || fail "recovery key after a second trigger"

info "self-destruct with destroy-recovery = yes: the recovery keyslots go too; the passphrase keyslot is not ours"
expect_ok "$LOCKROOT" tamper disarm
expect_ok "$LOCKROOT" keygen --hsm "$P11"  # the old key is gone: D gets a new one
D=$T/d.img
enroll_img "$D" pkcs11
RK_D=$RK
E=$T/e.img
enroll_img "$E" tpm2
RK_E=$RK
printf 'line = gpiochip0:5\nmode = self-destruct\ndestroy-recovery = yes\npoweroff = no\n' >"$T/all.conf"
expect_ok "$LOCKROOT" tamper arm --force --no-start --config "$T/all.conf" "$D" "$E"
grep -q 'AND every recovery keyslot' "$T/out" && grep -q 'UNREADABLE FOREVER' "$T/out" \
	|| fail "arm does not warn about destroy-recovery: $(cat "$T/out")"
sum_a=$(header_sum "$A")
[ "$(p11_keys)" = 1 ] || fail "no PKCS#11 key for D"
expect_ok "$LOCKROOT" tamper trigger --config "$T/all.conf"
grep -Eq 'keys destroyed [0-9.]+ ms after the edge \(4 keyslots, 4 tokens on 2 volumes' "$T/err" \
	|| fail "destroy-recovery report: $(cat "$T/err")"
for img in "$D" "$E"; do
	[ "$(token_types "$img")" = lockroot-tamper ] || fail "$img tokens left: $(token_types "$img")"
	[ "$(keyslots "$img")" = 0 ] || fail "$img keyslots left: $(keyslots "$img")"
	opens_with "$img" "$T/pass" 0 || fail "$img: the passphrase keyslot was destroyed"
done
printf '%s' "$RK_D" >"$T/rk-d"
printf '%s' "$RK_E" >"$T/rk-e"
opens_with "$D" "$T/rk-d" 2 && fail "the recovery key of $D still opens it"
opens_with "$E" "$T/rk-e" 2 && fail "the recovery key of $E still opens it"
[ "$(p11_keys)" = 0 ] || fail "the PKCS#11 key of $D is still there"
[ "$(header_sum "$A")" = "$sum_a" ] || fail "the disarmed volume $A was changed"
[ "$(header_sum "$C")" = "$sum_c" ] || fail "the unarmed volume $C was changed"

info "the keyscript runs the check before unlocking (once per boot)"
ks=$BUILD/initramfs/keyscript
[ -f "$ks" ] || fail "no built keyscript"
grep -q 'lockroot tamper check "\$CRYPTTAB_SOURCE" >&2' "$ks" || fail "keyscript does not run tamper check: $(cat "$ks")"
echo "tamper: ok"
