#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# TPM drivers that are modules rather than built in, loaded before the LUKS devices are
# unlocked so that /dev/tpmrm0 is there when the token plugin asks for it.
for lockroot_mod in tpm_tis tpm_crb tpm_tis_spi tpm_tis_i2c; do
	modprobe -q "$lockroot_mod" 2>/dev/null
done
unset lockroot_mod
