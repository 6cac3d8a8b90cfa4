/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the LUKS2 files of the library (not part of its API). */
#pragma once

#include <json-c/json.h>
#include <libcryptsetup.h>

#include "fingerprint.h"
#include "token.h"

/* Marks a recovery keyslot: a token without secrets that only names the keyslot. */
#define LR_RECOVERY_TOKEN_TYPE "lockroot-recovery"
#define LR_PROVISION_TOKEN_TYPE "lockroot-provision"

static inline void crypt_freep(struct crypt_device **cd)
{
	crypt_free(*cd);
}
#define _cleanup_crypt_ __attribute__((cleanup(crypt_freep)))

static inline void json_putp(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ __attribute__((cleanup(json_putp)))

static inline void token_donep(struct lr_token *t)
{
	lr_token_done(t);
}
#define _cleanup_token_ __attribute__((cleanup(token_donep)))

static inline void fingerprint_donep(struct lr_fingerprint *fp)
{
	lr_fingerprint_done(fp);
}
#define _cleanup_fingerprint_ __attribute__((cleanup(fingerprint_donep)))

int lr_count_active_keyslots(struct crypt_device *cd);
/* crypt_init() with libcryptsetup's messages routed to lockroot's log hook. */
int lr_crypt_init(const char *device, struct crypt_device **cd);
/* The PBKDF of an HSM keyslot (its key is random: the cheapest PBKDF2) and of a recovery keyslot. */
int lr_set_pbkdf_minimal(struct crypt_device *cd);
int lr_set_pbkdf_recovery(struct crypt_device *cd, const struct lr_pbkdf_cost *c);
/* Compare the host (and the boot files, unless boot_as_recorded: then the token's record of
 * them stands in) with the token's checks, naming what changed; the binding digest. */
int lr_binding_verify(const char *device, const struct lr_token *t, bool boot_as_recorded, uint8_t digest[32]);
