/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the tpm2 backend shares with its tests: the storage key template they time. */
#pragma once

#include <tss2/tss2_tpm2_types.h>

/* The usual SRK template (TCG EK/SRK profile), ECC P-256 flavour, recreated at every use. */
extern const TPM2B_PUBLIC lr_tpm2_primary_template;
