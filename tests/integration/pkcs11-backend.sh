#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The pkcs11 backend against a real SoftHSM2 token: keygen, lock/unlock, every refusal, destroy.
. "$(dirname "$0")/../lib/common.sh"

PROG=$BUILD/tests/test-backend-pkcs11
[ -x "$PROG" ] || skip "$PROG not built (p11-kit missing?)"
start_softhsm lockroot-test

"$PROG" "$P11_MODULE" "$P11_TOKEN" "$P11_PINFILE" || fail "test-backend-pkcs11 (see above)"

# The key the backend created is visible to a stock tool, but its value is not.
need pkcs11-tool
pkcs11-tool --module "$P11_MODULE" --token-label "$P11_TOKEN" --login --pin "$(cat "$P11_PINFILE")" \
	--list-objects --type secrkey >"$T/objects" 2>&1 || { cat "$T/objects" >&2; fail "pkcs11-tool --list-objects"; }
grep -q 'label: *with-id' "$T/objects" || { cat "$T/objects" >&2; fail "pkcs11-tool does not see the key"; }
grep -q 'label: *lockroot-test-key' "$T/objects" && fail "the destroyed key is still in the token"
if pkcs11-tool --module "$P11_MODULE" --token-label "$P11_TOKEN" --login --pin "$(cat "$P11_PINFILE")" \
	--read-object --type secrkey --label with-id >"$T/value" 2>/dev/null && [ -s "$T/value" ]; then
	fail "the key value could be read out of the token"
fi
exit 0
