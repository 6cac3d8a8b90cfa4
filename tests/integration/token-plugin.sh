#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The token plugin loaded by stock cryptsetup: `open --token-only` through the TPM and
# PKCS#11 backends, the error codes libcryptsetup sees, a PIN typed to cryptsetup, luksDump
# without secrets, and validate rejecting a corrupt token on import.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need_root
need cryptsetup jq timeout
PLUGIN=$BUILD/token/libcryptsetup-token-lockroot.so
[ -f "$PLUGIN" ] || fail "$PLUGIN not built"
[ -x "$LOCKROOT" ] || fail "$LOCKROOT not built"

# Every cryptsetup that may load the plugin runs through $CS. Stock cryptsetup is not built
# with ASan: on the sanitizer build the ASan runtime must come first for it to dlopen() our
# ASan-built plugin. Leak checking is off for that process (cryptsetup's own allocations at
# exit are not ours to judge); overflows and undefined behaviour still abort.
CS=$T/cryptsetup
if [ "${LOCKROOT_SANITIZE:-0}" = 1 ]; then
	ASAN_RT=$(gcc -print-file-name=libasan.so)
	[ -f "$ASAN_RT" ] || fail "no ASan runtime at $ASAN_RT"
	printf '#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:exitcode=99 exec timeout 120 cryptsetup "$@"\n' "$ASAN_RT" >"$CS"
else
	printf '#!/bin/sh\nexec timeout 120 cryptsetup "$@"\n' >"$CS"
fi
chmod +x "$CS"
cs() { "$CS" "$@"; }

# --- the plugin exports exactly the token ABI -------------------------------------------
if command -v nm >/dev/null; then
	syms=$(nm -D --defined-only "$PLUGIN" | awk '{print $3}' | sort | tr '\n' ' ')
	want="CRYPTSETUP_TOKEN_1.0 cryptsetup_token_buffer_free@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_dump@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_open@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_open_pin@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_validate@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_version@@CRYPTSETUP_TOKEN_1.0 "
	[ "$syms" = "$want" ] || fail "plugin exports: $syms"
fi

# --- install the plugin where stock cryptsetup looks, restore at exit -------------------
# Stock cryptsetup 2.6 cannot be pointed at another plugin directory. A lock keeps two
# tests that swap the system plugin from stepping on each other.
TOKEN_DIR=$(cryptsetup --help | sed -n 's/.*token plugin path: \(.*\)\./\1/p')
[ -n "$TOKEN_DIR" ] || skip "this cryptsetup loads no external token plugins"
DEST=$TOKEN_DIR/libcryptsetup-token-lockroot.so
BACKUP=$DEST.lockroot-test-backup
exec 9>/run/lockroot-token-plugin.lock
flock -w 600 9 || fail "another test holds /run/lockroot-token-plugin.lock"
restore_plugin() {
	if [ -e "$BACKUP" ]; then
		mv -f "$BACKUP" "$DEST"
	else
		rm -f "$DEST"
	fi
}
mkdir -p "$TOKEN_DIR"
[ -e "$BACKUP" ] && fail "$BACKUP exists: an earlier run died; restore it by hand"
[ -e "$DEST" ] && { cp -a "$DEST" "$BACKUP" || fail "cannot back up $DEST"; }
at_exit restore_plugin
cp "$PLUGIN" "$DEST.tmp.$$" && mv -f "$DEST.tmp.$$" "$DEST" || fail "cannot install $DEST"

# lockroot_token IMG: the id of the (first) lockroot token.
lockroot_token() {
	local i
	for i in $(seq 0 31); do
		cryptsetup token export --token-id "$i" "$1" 2>/dev/null | jq -e '.type == "lockroot"' >/dev/null \
			&& { echo "$i"; return 0; }
	done
	return 1
}
# token_secrets IMG ID: the values of every secret-bearing field of the token, one a line.
token_secrets() {
	cryptsetup token export --token-id "$2" "$1" |
		jq -r '.. | objects | to_entries[] | select(.key | test("^(private|public|ciphertext|iv|tag|blob)$")) | .value | strings'
}
# expect_dump_clean IMG ID BACKEND: luksDump shows the token and none of its secrets.
expect_dump_clean() {
	local img=$1 id=$2 backend=$3 n=0 v
	expect_ok cs luksDump "$img"
	grep -Eq "^  $id: lockroot$" "$T/out" || { cat "$T/out" >&2; fail "luksDump does not list token $id as lockroot"; }
	grep -Eq "^	backend: +$backend$" "$T/out" || { cat "$T/out" >&2; fail "luksDump has no 'backend: $backend' line"; }
	grep -Eq "^	bound to: +" "$T/out" || { cat "$T/out" >&2; fail "luksDump has no 'bound to:' line"; }
	while IFS= read -r v; do
		[ ${#v} -ge 8 ] || continue
		n=$((n + 1))
		if grep -Fq -- "$v" "$T/out" || grep -Fq -- "${v:0:12}" "$T/out"; then
			fail "luksDump shows a secret field of token $id"
		fi
	done < <(token_secrets "$img" "$id")
	[ $n -gt 0 ] || fail "token $id has no private/ciphertext/iv field: nothing was checked"
	grep -Eiq 'pin-value|1234' "$T/out" && fail "luksDump shows a PIN"
	true
}
# open_debug IMG ARGS...: `cryptsetup --debug open --test-passphrase --token-only`, stdin empty;
# must fail; the debug log (stdout) is left in $T/out.
open_fails() {
	local img=$1; shift
	local rc=0
	cs --debug open --test-passphrase --token-only "$@" "$img" </dev/null >"$T/out" 2>"$T/err" || rc=$?
	[ $rc != 0 ] || fail "cryptsetup open --token-only $* $img succeeded"
}
# What libcryptsetup got from the plugin, after its own translation (-EPERM/-EINVAL -> -ENOENT).
expect_open_errno() {
	grep -Eq "Token $1 \(lockroot\) open failed with $2\." "$T/out" ||
		{ grep -E 'Token|lockroot' "$T/out" "$T/err" >&2; fail "token $1 did not fail with $2"; }
}

# --- TPM 2.0 -----------------------------------------------------------------------------
info "tpm2: enroll, then cryptsetup open --token-only"
IMG=$T/tpm.img
make_luks2 "$IMG"
start_swtpm
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --bind none --key-file "$T/pass"
ID=$(lockroot_token "$IMG") || fail "enroll left no lockroot token"
expect_ok cs open --test-passphrase --token-only "$IMG" </dev/null
expect_ok cs open --test-passphrase --token-only --token-type lockroot "$IMG" </dev/null
expect_ok cs open --test-passphrase --token-only --token-id "$ID" "$IMG" </dev/null
expect_ok cs --debug open --test-passphrase --token-only "$IMG" </dev/null
grep -q "Token handler lockroot-[0-9]" "$T/out" || fail "cryptsetup did not report loading the lockroot plugin"
grep -Eq "Token $ID \(lockroot\) open failed" "$T/out" && fail "token $ID failed in the successful run"

info "tpm2: luksDump shows the token, no secrets"
expect_dump_clean "$IMG" "$ID" tpm2
grep -Eq "^	bound to: +nothing" "$T/out" || fail "luksDump: --bind none not shown"
grep -Eq "^	tcti: +swtpm:" "$T/out" || fail "luksDump: the backend's describe fields are missing"

info "tpm2: host binding checked by the plugin"
make_pi_sysroot "$T/pi"
cp -a "$T/pi" "$T/pi-other"
printf '10000000deadbeef\0' >"$T/pi-other/proc/device-tree/serial-number"
IMGB=$T/bound.img
make_luks2 "$IMGB"
expect_ok env LOCKROOT_SYSROOT="$T/pi" "$LOCKROOT" enroll "$IMGB" --hsm "$HSM" --bind board-serial --key-file "$T/pass"
IDB=$(lockroot_token "$IMGB") || fail "enroll left no lockroot token"
expect_ok env LOCKROOT_SYSROOT="$T/pi" "$CS" open --test-passphrase --token-only "$IMGB" </dev/null
expect_ok cs luksDump "$IMGB"
grep -Eq "^	bound to: +board-serial$" "$T/out" || { cat "$T/out" >&2; fail "luksDump: binding not shown"; }
LOCKROOT_SYSROOT=$T/pi-other open_fails "$IMGB"
expect_open_errno "$IDB" -2   # -EPERM: libcryptsetup moves on
grep -qi "board serial" "$T/err" || { cat "$T/err" >&2; fail "the binding mismatch was not explained"; }

info "tpm2: HSM absent"
stop_swtpm
open_fails "$IMG"
expect_open_errno "$ID" -11   # -EAGAIN
grep -q "lockroot:" "$T/err" || { cat "$T/err" >&2; fail "the plugin's message did not reach cryptsetup"; }
expect_ok cs open --test-passphrase --key-file "$T/pass" "$IMG"

# --- validate: a corrupt token is refused on import, the header stays as it was ----------
info "validate: corrupt tokens are refused"
cryptsetup token export --token-id "$ID" "$IMG" >"$T/good.json" || fail "token export"
jq -c 'del(.bind_salt)' "$T/good.json" >"$T/bad-salt.json"
jq -c '.lockroot_version = 99' "$T/good.json" >"$T/bad-version.json"
jq -c '.tpm2.private = "!!not base64!!"' "$T/good.json" >"$T/bad-private.json"
jq -c 'del(.tpm2.public)' "$T/good.json" >"$T/bad-public.json"
jq -c '.backend = "nosuch"' "$T/good.json" >"$T/bad-backend.json"
for bad in salt version private public backend; do
	sum=$(header_sum "$IMG")
	rc=0
	cs --debug token import --token-id 7 --json-file "$T/bad-$bad.json" "$IMG" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc != 0 ] || fail "token import accepted a token with a bad $bad"
	grep -q "Token type lockroot validation failed" "$T/out" || { cat "$T/out" "$T/err" >&2; fail "import of bad $bad not refused by validate"; }
	[ "$(header_sum "$IMG")" = "$sum" ] || fail "a refused import (bad $bad) changed the header"
done
# The same import with the good token succeeds: the refusals were the plugin's doing.
expect_ok cs token import --token-id 7 --json-file "$T/good.json" "$IMG"
expect_ok cs token remove --token-id 7 "$IMG"

# --- PKCS#11 -------------------------------------------------------------------------------
info "pkcs11: enroll with pin-source, cryptsetup open --token-only"
start_softhsm
URI=$(p11_uri lockroot-key)
expect_ok "$LOCKROOT" keygen --hsm "$URI"
IMGP=$T/p11.img
make_luks2 "$IMGP"
expect_ok "$LOCKROOT" enroll "$IMGP" --hsm "$URI" --bind none --key-file "$T/pass"
IDP=$(lockroot_token "$IMGP") || fail "enroll left no lockroot token"
expect_ok cs open --test-passphrase --token-only "$IMGP" </dev/null
expect_dump_clean "$IMGP" "$IDP" pkcs11
grep -Eq "^	uri: +pkcs11:" "$T/out" || fail "luksDump: the pkcs11 URI is missing"

info "pkcs11: no PIN source -> cryptsetup asks for the PIN"
rm -f "$P11_PINFILE"
open_fails "$IMGP"
expect_open_errno "$IDP" -55   # -ENOANO
# cryptsetup reads "Enter token PIN:" from stdin when it is not a terminal.
expect_ok sh -c 'printf 1234 | "$2" open --test-passphrase --token-only "$1"' sh "$IMGP" "$CS"
rc=0
printf 9999 | cs --debug open --test-passphrase --token-only "$IMGP" >"$T/out" 2>"$T/err" || rc=$?
[ $rc != 0 ] || fail "a wrong PIN opened the volume"
expect_open_errno "$IDP" -55

info "pkcs11: token absent"
export SOFTHSM2_CONF=$T/softhsm/empty.conf
mkdir -p "$T/softhsm/empty"
printf 'directories.tokendir = %s\nobjectstore.backend = file\n' "$T/softhsm/empty" >"$SOFTHSM2_CONF"
open_fails "$IMGP"
expect_open_errno "$IDP" -11
echo "token-plugin: ok"
