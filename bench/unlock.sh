#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark, not a test (never run by tests/run): how long it takes to check the key of ONE
# LUKS2 image file through each way in -- the lockroot token (tpm2 on swtpm, pkcs11 on
# SoftHSM2), the same tokens through stock cryptsetup and our token plugin, a passphrase
# keyslot at cryptsetup's default Argon2id cost, and a keyfile keyslot at PBKDF2 minimum cost
# -- then the cost of a lockroot enroll. Prints Markdown tables on stdout, progress on stderr.
#
#   bench/unlock.sh [-r RUNS] [-w WARMUP]     (as root; defaults: 20 runs, 3 warm-up runs)
#
# Timing by hyperfine (-N, no shell in between) when installed, else a date +%s%N loop
# (forced with LOCKROOT_BENCH_NO_HYPERFINE=1); peak RSS is the largest GNU time %M of 3 runs.
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/common.sh"
trap 'exit 130' INT TERM HUP # so the EXIT trap (swtpm, SoftHSM, plugin restore) always runs

RUNS=20 WARMUP=3
while getopts r:w:h o; do
	case $o in
	r) RUNS=$OPTARG ;;
	w) WARMUP=$OPTARG ;;
	*) sed -n '3,12p' "$0" >&2; exit 2 ;;
	esac
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 2 && $WARMUP =~ ^[0-9]+$ ]] || fail "-r needs a number >= 2, -w a number"

need cryptsetup jq swtpm
[ -x /usr/bin/time ] || fail "/usr/bin/time (GNU time, Debian package 'time') is needed for peak RSS"
[ -x "$LOCKROOT" ] || fail "$LOCKROOT not built (ninja -C build)"
HYPERFINE=0
command -v hyperfine >/dev/null && [ "${LOCKROOT_BENCH_NO_HYPERFINE:-0}" != 1 ] && HYPERFINE=1
PREPARE=() # a command run untimed before every timed run (enroll needs a fresh image)
ROWS=$T/rows NOTES=()
: >"$ROWS"

# shq ARGS...: one command line that hyperfine -N splits back into ARGS (POSIX single quotes).
shq() {
	local a out=
	for a in "$@"; do out+=" '${a//\'/\'\\\'\'}'"; done
	printf '%s' "${out# }"
}

# measure KEY LABEL CMD...: check CMD succeeds, time it, record "key label mean min max rss".
measure() {
	local key=$1 label=$2; shift 2
	local stats rss=0 m i s e
	info "$label"
	[ ${#PREPARE[@]} = 0 ] || "${PREPARE[@]}"
	"$@" </dev/null >"$T/check.out" 2>&1 || { cat "$T/check.out" >&2; fail "$label: '$*' failed"; }
	if [ $HYPERFINE = 1 ]; then
		local hf=(hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$T/$key.json")
		[ ${#PREPARE[@]} = 0 ] || hf+=(--prepare "$(shq "${PREPARE[@]}")")
		"${hf[@]}" "$(shq "$@")" >"$T/$key.hyperfine" 2>&1 || { cat "$T/$key.hyperfine" >&2; fail "hyperfine: $label"; }
		stats=$(jq -r '.results[0] | [.mean, .min, .max] | map(. * 1000) | @tsv' "$T/$key.json")
	else
		for ((i = 0; i < WARMUP; i++)); do
			[ ${#PREPARE[@]} = 0 ] || "${PREPARE[@]}"
			"$@" </dev/null >/dev/null 2>&1
		done
		: >"$T/times"
		for ((i = 0; i < RUNS; i++)); do
			[ ${#PREPARE[@]} = 0 ] || "${PREPARE[@]}"
			s=$(date +%s%N)
			"$@" </dev/null >/dev/null 2>"$T/run.err" || { cat "$T/run.err" >&2; fail "$label failed during the timed runs"; }
			e=$(date +%s%N)
			echo $((e - s)) >>"$T/times"
		done
		stats=$(awk '{ v = $1 / 1e6; t += v; if (NR == 1 || v < lo) lo = v; if (v > hi) hi = v }
			END { printf "%f\t%f\t%f", t / NR, lo, hi }' "$T/times")
	fi
	for i in 1 2 3; do
		[ ${#PREPARE[@]} = 0 ] || "${PREPARE[@]}"
		/usr/bin/time -f %M -o "$T/rss" "$@" </dev/null >/dev/null 2>&1 || fail "$label failed under /usr/bin/time"
		m=$(tail -1 "$T/rss")
		[ "$m" -gt "$rss" ] && rss=$m
	done
	printf '%s\t%s\t%s\t%s\n' "$key" "$label" "$stats" "$rss" >>"$ROWS"
}
skip_row() { printf '%s\t%s\t-\t-\t-\t-\n' "$1" "$2" >>"$ROWS"; NOTES+=("$2: $3"); info "skipped: $2: $3"; }

# --- the image: keyslot 0 passphrase (PBKDF2, authorises), then one keyslot per method -----
export LOCKROOT_SYSROOT=$T/host # a Raspberry Pi 4 identity, so the default binding has something to read
make_pi_sysroot "$LOCKROOT_SYSROOT"
start_swtpm
start_softhsm lockroot-bench
URI=$(p11_uri lockroot-bench-key)
IMG=$T/disk.img
make_luks2 "$IMG"
info "enrolling: tpm2 token, pkcs11 token, Argon2id passphrase, keyfile (same image)"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass"
expect_ok "$LOCKROOT" keygen --hsm "$URI"
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$URI" --key-file "$T/pass"
"$LOCKROOT" status "$IMG" --json >"$T/status.json" || fail "lockroot status"
TOK_TPM=$(jq -r '.[0].tokens[] | select(.type == "lockroot" and .backend == "tpm2") | .id' "$T/status.json" | head -1)
TOK_P11=$(jq -r '.[0].tokens[] | select(.type == "lockroot" and .backend == "pkcs11") | .id' "$T/status.json")
BIND=$(jq -r '.[0].tokens[0].bind | join(",")' "$T/status.json")
[ -n "$TOK_TPM" ] && [ -n "$TOK_P11" ] || fail "enroll did not leave a tpm2 and a pkcs11 token"
# Passphrase at cryptsetup's default cost: no pbkdf options, exactly what luksAddKey does in production.
printf '%s' 'correct horse battery staple' >"$T/argon-pass"
expect_ok cryptsetup luksAddKey -q --key-slot 3 --key-file "$T/pass" "$IMG" "$T/argon-pass"
head -c 4096 /dev/urandom >"$T/keyfile"
expect_ok cryptsetup luksAddKey -q --key-slot 4 "${FAST_PBKDF[@]}" --key-file "$T/pass" "$IMG" "$T/keyfile"
ARGON=$(cryptsetup luksDump "$IMG" | awk '/^  3: luks2/ { s = 1 } s && /^  4: / { s = 0 }
	s && /Time cost:/ { t = $3 } s && /Memory:/ { m = $2 } s && /Threads:/ { p = $2 }
	END { printf "Argon2id t=%s, m=%d MiB, p=%s", t, m / 1024, p }')

# A boot partition the size of Raspberry Pi OS's (kernel8.img ~9 MiB, initramfs8 ~25 MiB, one
# device tree): a tpm2 token also bound to it (--bind ...,boot-files) measures these files first.
B=$T/boot
mkdir -p "$B"
printf 'auto_initramfs=1\ndtoverlay=vc4-kms-v3d\n' >"$B/config.txt"
printf 'console=serial0,115200 root=/dev/mapper/cryptroot\n' >"$B/cmdline.txt"
head -c 9M /dev/urandom >"$B/kernel8.img"
head -c 25M /dev/urandom >"$B/initramfs8"
head -c 60K /dev/urandom >"$B/bcm2711-rpi-4-b.dtb"
BOOT_MIB=$(du -sm "$B" | cut -f1)
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pass" --bind board-serial,sd-cid,boot-files --boot-dev "$B"
TOK_BOOT=$("$LOCKROOT" status "$IMG" --json | jq -r '.[0].tokens[] | select(.type == "lockroot" and (.bind | index("boot-files"))) | .id')
[ -n "$TOK_BOOT" ] || fail "no token bound to the boot files"

# --- check the key, six ways ----------------------------------------------------------------
measure tpm2 "lockroot unlock --test, tpm2 (swtpm)" "$LOCKROOT" unlock "$IMG" --test --token "$TOK_TPM"
measure tpm2-boot "lockroot unlock --test, tpm2 + boot files ($BOOT_MIB MiB, page cache)" \
	"$LOCKROOT" unlock "$IMG" --test --token "$TOK_BOOT"
measure p11 "lockroot unlock --test, pkcs11 (SoftHSM2)" "$LOCKROOT" unlock "$IMG" --test --token "$TOK_P11"

# Stock cryptsetup with our plugin, installed where it looks (it cannot be pointed elsewhere),
# under the lock tests/integration/token-plugin.sh takes, restored as soon as the rows are done.
PLUGIN=$BUILD/token/libcryptsetup-token-lockroot.so
TOKEN_DIR=$(cryptsetup --help | sed -n 's/.*token plugin path: \(.*\)\./\1/p')
DEST=$TOKEN_DIR/libcryptsetup-token-lockroot.so BACKUP=$TOKEN_DIR/libcryptsetup-token-lockroot.so.lockroot-test-backup
PLUGIN_INSTALLED=0
restore_plugin() {
	[ $PLUGIN_INSTALLED = 1 ] || return 0
	if [ -e "$BACKUP" ]; then mv -f "$BACKUP" "$DEST"; else rm -f "$DEST"; fi
	PLUGIN_INSTALLED=0
}
at_exit restore_plugin
why=
if [ -z "$TOKEN_DIR" ]; then why="this cryptsetup loads no external token plugins"
elif [ "$(id -u)" != 0 ]; then why="installing the plugin in $TOKEN_DIR needs root"
elif [ ! -f "$PLUGIN" ]; then why="$PLUGIN not built"
elif ! { exec 9>/run/lockroot-token-plugin.lock && flock -w 300 9; }; then why="/run/lockroot-token-plugin.lock held by a test for 5 min"
elif [ -e "$BACKUP" ]; then why="$BACKUP exists: an earlier run died; restore it by hand"
else
	mkdir -p "$TOKEN_DIR"
	if { [ ! -e "$DEST" ] || cp -a "$DEST" "$BACKUP"; } && PLUGIN_INSTALLED=1 &&
		cp "$PLUGIN" "$DEST.tmp.$$" && mv -f "$DEST.tmp.$$" "$DEST"; then
		:
	else
		restore_plugin
		why="cannot install $DEST"
	fi
fi
if [ -z "$why" ]; then
	measure cs-tpm2 "cryptsetup --token-only + plugin, tpm2" \
		cryptsetup open --test-passphrase --token-only --token-id "$TOK_TPM" "$IMG"
	measure cs-p11 "cryptsetup --token-only + plugin, pkcs11" \
		cryptsetup open --test-passphrase --token-only --token-id "$TOK_P11" "$IMG"
	restore_plugin
	flock -u 9
else
	skip_row cs-tpm2 "cryptsetup --token-only + plugin, tpm2" "$why"
	skip_row cs-p11 "cryptsetup --token-only + plugin, pkcs11" "$why"
fi

# cryptsetup open tries every token before the key file: with a lockroot plugin in its path
# (ours, or one someone installed) these rows would time the token. Prove a wrong key fails.
KS=(cryptsetup open --test-passphrase --disable-external-tokens)
printf 'wrong' >"$T/wrong"
for ks in 3 4; do
	"${KS[@]}" --key-slot $ks --key-file "$T/wrong" "$IMG" </dev/null >/dev/null 2>&1 &&
		fail "keyslot $ks opened with a wrong key: the row would not measure the keyslot"
done
measure argon "passphrase, default $ARGON" "${KS[@]}" --key-slot 3 --key-file "$T/argon-pass" "$IMG"
measure keyfile "4 KiB keyfile, PBKDF2 1000 iterations" "${KS[@]}" --key-slot 4 --key-file "$T/keyfile" "$IMG"

# --- enroll: lock, unlock proof, keyslot + token written, on a fresh copy every run ----------
make_luks2 "$T/enroll-base.img"
PREPARE=(cp --sparse=always "$T/enroll-base.img" "$T/enroll.img")
measure enroll-tpm2 "lockroot enroll, tpm2 (swtpm)" "$LOCKROOT" enroll "$T/enroll.img" --hsm "$HSM" --key-file "$T/pass"
measure enroll-p11 "lockroot enroll, pkcs11 (SoftHSM2)" "$LOCKROOT" enroll "$T/enroll.img" --hsm "$URI" --key-file "$T/pass"
PREPARE=()

# --- report ---------------------------------------------------------------------------------
first() { "$@" 2>/dev/null | head -1; }
echo "## lockroot unlock benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
	"$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)" \
	"$(command -v systemd-detect-virt >/dev/null && printf '(%s)' "$(systemd-detect-virt 2>/dev/null)")"
echo "- versions: $(first cryptsetup --version | cut -d" " -f1,2); swtpm $(first swtpm --version | sed 's/.*version \([^,]*\),.*/\1/');" \
	"SoftHSM2 $(first softhsm2-util --version); $(first "$LOCKROOT" --version);" \
	"$([ $HYPERFINE = 1 ] && first hyperfine --version || echo 'date +%s%N loop')"
echo "- one image, keyslots: 0 PBKDF2 passphrase (authorises enroll), 1 tpm2 token $TOK_TPM, 2 pkcs11 token $TOK_P11," \
	"3 $ARGON, 4 keyfile, 5 tpm2 token $TOK_BOOT also bound to the boot files; tokens bound to $BIND" \
	"(a Raspberry Pi 4 identity via LOCKROOT_SYSROOT)"
echo "- $RUNS runs after $WARMUP warm-up runs per row; peak RSS = largest of 3 runs"
echo
base=$(awk -F'\t' '$1 == "argon" { print $3 }' "$ROWS")
echo "| method | mean ms | min | max | peak RSS MiB | vs Argon2id passphrase |"
echo "|---|--:|--:|--:|--:|--:|"
awk -F'\t' -v base="$base" '$1 !~ /^enroll/ {
	if ($3 == "-") { printf "| %s | - | - | - | - | skipped |\n", $2; next }
	printf "| %s | %.1f | %.1f | %.1f | %.1f | %.3g |\n", $2, $3, $4, $5, $6 / 1024, $3 / base }' "$ROWS"
echo
echo "| enroll (lock + unlock proof + keyslot and token written) | mean ms | min | max | peak RSS MiB |"
echo "|---|--:|--:|--:|--:|"
awk -F'\t' '$1 ~ /^enroll/ { printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", $2, $3, $4, $5, $6 / 1024 }' "$ROWS"
for n in "${NOTES[@]}"; do echo; echo "Skipped: $n"; done
exit 0
