# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared helpers for the integration tests. Source it; every test gets its own
# scratch directory ($T), removed at exit, and its own swtpm / SoftHSM2 state.
#
# Exit codes, as in cryptsetup's tests: 0 pass, 77 skip (a missing prerequisite), else fail.

set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
LOCKROOT=${LOCKROOT:-$BUILD/src/lockroot}
T=$(mktemp -d "${TMPDIR:-/tmp}/lockroot-test.XXXXXX")
# Tests that check a key file or passphrase against a keyslot pass --disable-external-tokens:
# with lockroot's plugin installed (scripts/demo.sh does), stock cryptsetup would otherwise open
# an enrolled image through the token whatever key file it was given.
# Fast key derivation for the passphrase keyslots the tests create (never in production).
FAST_PBKDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
# Recovery keyslots in tests: Argon2id, but cheap.
FAST_RECOVERY=(--recovery-pbkdf-iterations 4 --recovery-pbkdf-memory 32)
_cleanup_fns=()

at_exit() { _cleanup_fns+=("$*"); }
_run_cleanup() {
	local i
	for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do eval "${_cleanup_fns[$i]}" || true; done
	rm -rf "$T"
}
trap _run_cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
info() { echo "  .. $*" >&2; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not installed"; done; }
need_root() { [ "$(id -u)" = 0 ] || skip "needs root"; }

# Poll until a command succeeds, at most $1 seconds (no fixed sleeps).
wait_for() {
	local timeout=$1; shift
	local end=$((SECONDS + timeout))
	until "$@" 2>/dev/null; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.05
	done
}

# expect_fail EXITCODE PATTERN cmd...: the command must fail with EXITCODE and print PATTERN (ERE) on stderr.
expect_fail() {
	local want=$1 pat=$2; shift 2
	local rc=0
	"$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" = "$want" ] || { cat "$T/out" "$T/err" >&2; fail "'$*' exited $rc, expected $want"; }
	grep -Eq -- "$pat" "$T/err" || { cat "$T/err" >&2; fail "'$*' did not say /$pat/"; }
}
# expect_ok cmd...: run, show output on failure.
expect_ok() {
	"$@" >"$T/out" 2>"$T/err" || { local rc=$?; cat "$T/out" "$T/err" >&2; fail "'$*' exited $rc"; }
}

# make_luks2 IMG [SIZE_MB]: a LUKS2 image with passphrase "test-passphrase" in keyslot 0.
make_luks2() {
	local img=$1 size=${2:-32}
	truncate -s "${size}M" "$img"
	printf '%s' test-passphrase >"$T/pass"
	cryptsetup luksFormat -q --type luks2 "${FAST_PBKDF[@]}" --key-file "$T/pass" "$img" >/dev/null \
		|| fail "luksFormat $img"
}
# header_sum IMG: checksum of the LUKS2 header area (metadata + keyslots), to prove "unchanged".
header_sum() { head -c 16M "$1" | sha256sum | cut -d' ' -f1; }

# start_swtpm: a software TPM with its own state directory and socket. Sets TCTI and HSM.
# The swtpm TCTI finds the control channel at <path>.ctrl; paths must be absolute (swtpm
# --daemon changes to /).
start_swtpm() {
	need swtpm
	local d="$T/swtpm.$RANDOM"
	mkdir -p "$d"
	swtpm socket --tpm2 --tpmstate dir="$d" --server type=unixio,path="$d/sock" \
		--ctrl type=unixio,path="$d/sock.ctrl" --flags startup-clear,not-need-init \
		--pid file="$d/pid" --daemon --log file="$d/log",level=1 || fail "swtpm did not start"
	wait_for 10 test -S "$d/sock" || fail "swtpm socket did not appear"
	wait_for 10 test -s "$d/pid" || fail "swtpm pid file did not appear"
	at_exit "kill $(cat "$d/pid") 2>/dev/null"
	SWTPM_DIR=$d
	TCTI="swtpm:path=$d/sock"
	HSM="tpm2:$TCTI"
}
stop_swtpm() { [ -n "${SWTPM_DIR:-}" ] && kill "$(cat "$SWTPM_DIR/pid")" 2>/dev/null; wait_for 5 sh -c "! test -S $SWTPM_DIR/sock || ! kill -0 \$(cat $SWTPM_DIR/pid)"; true; }

# start_softhsm [LABEL]: a SoftHSM2 token with a private config, user PIN 1234, SO PIN 5678.
# Sets SOFTHSM2_CONF, P11_MODULE, P11_PINFILE, P11_TOKEN.
start_softhsm() {
	local label=${1:-lockroot-test}
	P11_MODULE=$(ls /usr/lib/*/softhsm/libsofthsm2.so /usr/lib/softhsm/libsofthsm2.so 2>/dev/null | head -1)
	[ -n "$P11_MODULE" ] || skip "SoftHSM2 not installed"
	need softhsm2-util
	mkdir -p "$T/softhsm/tokens"
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/softhsm/tokens" >"$T/softhsm/conf"
	export SOFTHSM2_CONF="$T/softhsm/conf"
	softhsm2-util --init-token --free --label "$label" --pin 1234 --so-pin 5678 >/dev/null || fail "softhsm2-util --init-token"
	printf '1234' >"$T/softhsm/pin"
	P11_PINFILE="$T/softhsm/pin"
	P11_TOKEN=$label
}
# p11_uri OBJECT: the --hsm spec for the SoftHSM2 token.
p11_uri() { echo "pkcs11:token=$P11_TOKEN;object=$1?module-path=$P11_MODULE&pin-source=file:$P11_PINFILE"; }

# A fake host for the fingerprint: LOCKROOT_SYSROOT with a Raspberry Pi 4's identity.
make_pi_sysroot() {
	local r=$1
	mkdir -p "$r/proc/device-tree" "$r/sys/block/mmcblk0/device" "$r/sys/firmware/devicetree/base"
	printf 'Raspberry Pi 4 Model B Rev 1.4\0' >"$r/proc/device-tree/model"
	printf '10000000c0ffee42\0' >"$r/proc/device-tree/serial-number"
	printf '035344534331364780b2f2a1a2013e00\n' >"$r/sys/block/mmcblk0/device/cid"
	printf 'SD\n' >"$r/sys/block/mmcblk0/device/type"
}
