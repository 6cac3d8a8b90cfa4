#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The tpm2 backend against swtpm: lock/unlock, wrong binding, no DA lockout, PCR policy,
# corrupt token data, a key sealed by another TPM, a missing TPM; then once more through
# the pcap TCTI to prove the key never crosses the wire in clear.
. "$(dirname "$0")/../lib/common.sh"

PROG=$BUILD/tests/test-backend-tpm2
[ -x "$PROG" ] || skip "$PROG not built (tpm2 backend disabled?)"

# tpm2-tss's swtpm TCTI looks for the control socket at "<path>.ctrl".
swtpm_tcti() {
	start_swtpm
	[ -S "$SWTPM_DIR/sock.ctrl" ] || ln -s ctrl "$SWTPM_DIR/sock.ctrl"
}
swtpm_tcti
TCTI1=$TCTI
swtpm_tcti
TCTI2=$TCTI

"$PROG" "$TCTI1" "$TCTI2" || fail "test-backend-tpm2 reported failures"
TCTI_PCAP_FILE="$T/tpm.pcap" "$PROG" "pcap:$TCTI1" || fail "test-backend-tpm2 through pcap reported failures"
