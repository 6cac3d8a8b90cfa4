#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Boot time with TPM unlock vs a key file in the initramfs: see tests/system/bench-boot.sh.
exec "$(dirname "$0")/../tests/system/bench-boot.sh" "$@"
