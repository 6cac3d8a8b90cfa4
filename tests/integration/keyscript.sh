#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# `lockroot unlock --keyscript`, what /usr/lib/lockroot/keyscript runs at boot, on a LUKS2 image
# with swtpm: the key goes into cryptsetup through a pipe; with the TPM gone it waits (polling)
# for the time asked, says why it failed, then asks for the recovery key or a passphrase.
#
# The prompt: at boot lockroot asks through /lib/cryptsetup/askpass, or on /dev/console when
# that is absent. Neither can be driven from a test without taking over the machine's console,
# so the test passes --prompt-tty /dev/tty, and runs lockroot under expect, whose pty is then
# that tty: the same reading code (echo off, one line) as on /dev/console, on another terminal.
# Where no person is meant to answer, --prompt-tty /dev/null makes a prompt fail at once
# instead of waiting on the console.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
need cryptsetup expect timeout
start_swtpm
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
IMG=$T/disk.img
make_luks2 "$IMG"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --recovery-key "${FAST_RECOVERY[@]}"
RK=$(grep -Eo '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' "$T/out")
[ -n "$RK" ] || fail "no recovery key shown"
# What a person might type: lower case, groups separated by spaces.
RK_TYPED=$(printf '%s' "$RK" | tr 'A-Z-' 'a-z ')
# Every cryptsetup here reads only the key we pipe in: were it to load lockroot's token plugin
# (installed on this machine by a demo, say), it would open the volume through the TPM itself,
# whatever we wrote, and race us for the TPM's object slots.
printf '' | cryptsetup open --test-passphrase --disable-external-tokens --key-file - "$IMG" 2>/dev/null \
	&& fail "cryptsetup opened the volume without our key"
# The environment cryptroot gives a keyscript.
export CRYPTTAB_NAME=cryptroot CRYPTTAB_SOURCE=$IMG CRYPTTAB_TRIED=0 LOCKROOT

# keyscript_expect NAME TIMEOUT_S TEXT_TO_TYPE [lockroot options]: run the keyscript piped into
# `cryptsetup open --test-passphrase` under expect, answer the prompt with TEXT_TO_TYPE. Leaves
# the console transcript in $T/NAME.log and the milliseconds until the prompt in $T/NAME.ms;
# fails unless the prompt came and cryptsetup accepted the key.
keyscript_expect() {
	local name=$1 limit=$2 typed=$3
	shift 3
	cat >"$T/$name.exp" <<'EXP'
set timeout $env(LIMIT)
log_user 0
log_file -a -noappend $env(LOG)
set t0 [clock milliseconds]
spawn sh -c {"$LOCKROOT" unlock --keyscript "$@" --prompt-tty /dev/tty "$CRYPTTAB_SOURCE" | cryptsetup open --test-passphrase --disable-external-tokens --key-file - "$CRYPTTAB_SOURCE"; echo "rc=$?"} sh {*}$argv
expect {
	"recovery key or a passphrase for cryptroot: " {}
	timeout { puts "no prompt"; exit 2 }
	eof { puts "ended without a prompt"; exit 2 }
}
set f [open $env(MS) w]; puts $f [expr {[clock milliseconds] - $t0}]; close $f
send -- "$env(TYPED)\r"
expect {
	-re {rc=([0-9]+)} { exit $expect_out(1,string) }
	timeout { puts "no result"; exit 3 }
}
EXP
	LIMIT=$limit LOG=$T/$name.log MS=$T/$name.ms TYPED=$typed expect "$T/$name.exp" "$@" \
		|| { cat "$T/$name.log" >&2; fail "$name: the typed key did not open the volume"; }
}

# What the console showed from the prompt on (the spawn line before it names the command).
after_prompt() { sed -n '/^Enter the recovery key/,$p' "$T/$1.log"; }

info "the TPM unlocks: the key goes through the pipe into cryptsetup, nothing is asked"
timeout 60 "$LOCKROOT" unlock --keyscript --prompt-tty /dev/null "$IMG" 2>"$T/err" \
	| cryptsetup open --test-passphrase --disable-external-tokens --key-file - --key-slot 1 "$IMG" || { cat "$T/err" >&2; fail "keyscript key"; }
grep -q 'waiting\|recovery key' "$T/err" && fail "waited or asked although the TPM was there: $(cat "$T/err")"
expect_fail 2 'not one' "$LOCKROOT" unlock --keyscript "$IMG"

info "CRYPTTAB_TRIED=1 (cryptsetup rejected our last key): the TPM, which would unlock, is not asked"
CRYPTTAB_TRIED=1 keyscript_expect tried 30 "$RK"
grep -q 'not asking the TPM/HSM again' "$T/tried.log" || fail "no word about skipping the HSM"
[ "$(cat "$T/tried.ms")" -lt 1900 ] || fail "the retry did not prompt at once"

info "TPM gone, --timeout 2: waits about 2 s, says why, then the recovery key typed loosely opens it"
stop_swtpm
keyscript_expect absent 30 "$RK_TYPED" --timeout 2
ms=$(cat "$T/absent.ms")
[ "$ms" -ge 1900 ] || fail "prompted after ${ms} ms: it did not wait for the TPM"
[ "$ms" -le 10000 ] || fail "prompted after ${ms} ms: it waited far longer than --timeout 2"
[ "$(grep -c '^lockroot: waiting for the TPM' "$T/absent.log")" = 1 ] || fail "not one 'waiting' line"
grep -q '^lockroot: no TPM' "$T/absent.log" || fail "the console was not told why"
grep -q '^lockroot: gave up waiting for the TPM/HSM after 2 s' "$T/absent.log" || fail "no give-up line"
after_prompt absent | grep -qiF -e "$RK" -e "$RK_TYPED" && fail "the recovery key was echoed on the console"

info "a passphrase is passed through unchanged"
keyscript_expect passphrase 30 test-passphrase --timeout 0
after_prompt passphrase | grep -qF 'test-passphrase' && fail "the passphrase was echoed"

info "lockroot.timeout= on the kernel command line, when --timeout is not given"
echo 'root=/dev/mapper/cryptroot lockroot.timeout=1 quiet' >"$LOCKROOT_SYSROOT/proc/cmdline"
start=$(date +%s%N)
timeout 30 "$LOCKROOT" unlock --keyscript --prompt-tty /dev/null "$IMG" 2>"$T/err" | cat >"$T/key"
ms=$((($(date +%s%N) - start) / 1000000))
grep -q 'waiting for the TPM/HSM of .* (up to 1 s)' "$T/err" || fail "lockroot.timeout=1 not used: $(cat "$T/err")"
[ "$ms" -ge 900 ] && [ "$ms" -le 10000 ] || fail "took ${ms} ms with lockroot.timeout=1"
grep -q 'no recovery key or passphrase was typed' "$T/err" || fail "an empty answer was not refused: $(cat "$T/err")"
[ -s "$T/key" ] && fail "a key was written although nothing unlocked"
exit 0
