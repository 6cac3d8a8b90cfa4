#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The main job on a built-in default: a LUKS2 disk image and a software TPM (swtpm).
# Builds and installs lockroot, encrypts a fresh image, enrolls the TPM with a recovery key,
# unlocks through stock cryptsetup and lockroot's token plugin, and prints `lockroot status`.
#
#   scripts/demo.sh [WORKDIR]      (default: /var/tmp/lockroot-demo; kept for you to look at)
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/var/tmp/lockroot-demo}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build and install lockroot (meson, into /usr/local; the token plugin into libcryptsetup's directory)"
[ -f "$TOP/build/build.ninja" ] || meson setup "$TOP/build" "$TOP" >/dev/null
ninja -C "$TOP/build" >/dev/null
meson install -C "$TOP/build" --quiet
LOCKROOT=/usr/local/sbin/lockroot

step "a 64 MiB LUKS2 disk image in $WORK with a passphrase in keyslot 0"
if [ -f "$WORK/swtpm/pid" ]; then kill "$(cat "$WORK/swtpm/pid")" 2>/dev/null || true; fi
rm -rf "$WORK"
mkdir -p "$WORK/swtpm"
truncate -s 64M "$WORK/disk.img"
umask 077
printf 'demo passphrase' >"$WORK/passphrase"
cryptsetup luksFormat -q --type luks2 --key-file "$WORK/passphrase" "$WORK/disk.img"

step "a software TPM 2.0 (swtpm), state in $WORK/swtpm"
swtpm socket --tpm2 --tpmstate dir="$WORK/swtpm" --server type=unixio,path="$WORK/swtpm/sock" \
	--ctrl type=unixio,path="$WORK/swtpm/sock.ctrl" --flags startup-clear \
	--pid file="$WORK/swtpm/pid" --daemon
for _ in $(seq 100); do [ -S "$WORK/swtpm/sock" ] && break; sleep 0.1; done
HSM="tpm2:swtpm:path=$WORK/swtpm/sock"

step "what this host looks like to lockroot"
"$LOCKROOT" fingerprint --device "$WORK/disk.img"

step "lockroot enroll: random key, sealed by the TPM, bound to this host, plus a recovery key"
"$LOCKROOT" enroll "$WORK/disk.img" --hsm "$HSM" --key-file "$WORK/passphrase" --recovery-key

step "stock cryptsetup unlocks through the token plugin (no passphrase asked)"
cryptsetup open --test-passphrase --token-only -v "$WORK/disk.img"

step "lockroot unlock --test (the same, through lockroot itself)"
"$LOCKROOT" unlock "$WORK/disk.img" --test

step "another TPM (a second swtpm) cannot unseal the key: refused, exit code 5"
mkdir -p "$WORK/other-tpm"
swtpm socket --tpm2 --tpmstate dir="$WORK/other-tpm" --server type=unixio,path="$WORK/other-tpm/sock" \
	--ctrl type=unixio,path="$WORK/other-tpm/sock.ctrl" --flags startup-clear \
	--pid file="$WORK/other-tpm/pid" --daemon
for _ in $(seq 100); do [ -S "$WORK/other-tpm/sock" ] && break; sleep 0.1; done
rc=0
"$LOCKROOT" unlock "$WORK/disk.img" --test --hsm "tpm2:swtpm:path=$WORK/other-tpm/sock" || rc=$?
kill "$(cat "$WORK/other-tpm/pid")"
[ $rc = 5 ] || { echo "demo: expected the other TPM to refuse (exit 5), got $rc" >&2; exit 1; }

step "lockroot status"
"$LOCKROOT" status "$WORK/disk.img"

step "cryptsetup luksDump shows the token without secrets"
cryptsetup luksDump "$WORK/disk.img" | sed -n '/^Tokens:/,/^Digests:/p'

kill "$(cat "$WORK/swtpm/pid")"
printf '\nDone. The image and TPM state stay in %s; the software TPM was stopped.\n' "$WORK"
