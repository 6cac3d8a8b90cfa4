#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The system tests: a Debian 12 guest laid out like a Raspberry Pi SD card, booted under QEMU
# (TCG) with a TPM from swtpm, the harness playing the Pi firmware (pifw.py). Builds the guest
# (base tree cached in ${LOCKROOT_CACHE:-/var/cache/lockroot-tests}), then runs the scenarios in
# order on it; each scenario hands the next what it made (enrolled disk, TPM state, recovery key).
#
#   tests/system/run.sh                 build the guest, run every scenario, one line each
#   tests/system/run.sh --build         only build the guest           (tests/run calls these two
#   tests/system/run.sh --scenario F    only run scenario file F        forms, one line per step)
#   tests/system/run.sh --build-arm64   only build the arm64 guests (emulated Pi 3, arm64 virt:
#                                       arm64/build-guest.sh; the 8x scenarios use them)
#   tests/system/run.sh PATTERN...      build, then the scenarios whose name contains a PATTERN
#
# Work directory: ${BUILD:-build}/system (console logs of every boot in logs/). Exit 0 pass,
# 77 skip (a tool is missing: see scripts/setup.sh), 1 fail. Needs root.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
export BUILD=${BUILD:-$TOP/build}
export SYSTEM_STATE=${SYSTEM_STATE:-$BUILD/system}
PY=(/usr/bin/python3 -B) # Debian's: python3-pexpect is installed for it

missing() {
	[ "$(id -u)" = 0 ] || { echo "needs root"; return 0; }
	local c
	for c in qemu-system-x86_64 swtpm mmdebstrap mcopy mtype mkfs.vfat sfdisk mkfs.ext4 cryptsetup meson ninja; do
		command -v "$c" >/dev/null 2>&1 || { echo "$c not installed"; return 0; }
	done
	"${PY[@]}" -c 'import pexpect' 2>/dev/null || { echo "python3-pexpect not installed"; return 0; }
	return 1
}

missing_arm64() {
	local c
	for c in qemu-system-aarch64 fdtput update-binfmts aarch64-linux-gnu-gcc dpkg-buildpackage lintian; do
		command -v "$c" >/dev/null 2>&1 || { echo "$c not installed"; return 0; }
	done
	[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] \
		|| { echo "qemu-user-static not installed"; return 0; }
	return 1
}

build_guest() {
	mkdir -p "$SYSTEM_STATE"
	# What the scenarios made from the previous guest is of no use with a new one.
	rm -rf "$SYSTEM_STATE"/logs "$SYSTEM_STATE"/tpm "$SYSTEM_STATE"/*.tpm "$SYSTEM_STATE"/*.img \
		"$SYSTEM_STATE"/recovery-key "$SYSTEM_STATE"/enrolled.ok
	bash "$HERE/build-guest.sh" "$SYSTEM_STATE/guest"
}

run_scenario() {
	local f=$1
	[ -f "$f" ] || f=$HERE/$1
	mkdir -p "$SYSTEM_STATE/logs"
	"${PY[@]}" "$f"
}

case ${1:-} in
--build-arm64)
	if why=$(missing) || why=$(missing_arm64); then echo "SKIP: $why" >&2; exit 77; fi
	mkdir -p "$SYSTEM_STATE"
	bash "$HERE/arm64/build-guest.sh" "$SYSTEM_STATE/arm64"
	exit
	;;
--build|--scenario)
	if why=$(missing); then echo "SKIP: $why" >&2; exit 77; fi
	if [ "$1" = --build ]; then build_guest; else run_scenario "$2"; fi
	exit
	;;
-h|--help) sed -n '3,17p' "$0"; exit 0 ;;
esac

PATTERNS=("$@")
selected() {
	[ ${#PATTERNS[@]} = 0 ] && return 0
	local p; for p in "${PATTERNS[@]}"; do [[ $1 == *$p* ]] && return 0; done; return 1
}
if why=$(missing); then
	echo "skip    system: $why"
	exit 77
fi
pass=0 failed=0
line() { # STATUS NAME SECONDS LOG RC
	if [ "$1" = 0 ]; then
		pass=$((pass + 1)); printf 'ok      %-44s %3ss\n' "system/$2" "$3"
	else
		failed=$((failed + 1)); printf 'FAIL    %-44s %3ss (exit %s)\n' "system/$2" "$3" "$1"
		sed 's/^/    | /' "$4" | tail -30
	fi
}
mkdir -p "$SYSTEM_STATE/test-logs"
start=$SECONDS rc=0
build_guest >"$SYSTEM_STATE/test-logs/build-guest.log" 2>&1 || rc=$?
line $rc build-guest $((SECONDS - start)) "$SYSTEM_STATE/test-logs/build-guest.log"
if [ $rc = 0 ] && ls "$HERE"/8[0-9]-*.py >/dev/null 2>&1; then
	start=$SECONDS rc=0
	"$0" --build-arm64 >"$SYSTEM_STATE/test-logs/build-arm64.log" 2>&1 || rc=$?
	line $rc build-arm64 $((SECONDS - start)) "$SYSTEM_STATE/test-logs/build-arm64.log"
	rc=0
fi
if [ $rc = 0 ]; then
	for t in "$HERE"/[0-9]*.py; do
		name=$(basename "$t" .py)
		# The first boot enrols: every other scenario starts from what it left.
		[[ $name == 10-* ]] || selected "$name" || continue
		start=$SECONDS rc=0
		run_scenario "$t" >"$SYSTEM_STATE/test-logs/$name.log" 2>&1 </dev/null || rc=$?
		line $rc "$name" $((SECONDS - start)) "$SYSTEM_STATE/test-logs/$name.log"
	done
fi
echo "$pass passed, $failed failed"
[ $failed = 0 ]
