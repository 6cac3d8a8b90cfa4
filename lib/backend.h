/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HSM backends: one file each (backend-<name>.c), one ops table, one entry in backend.c.
 *
 * Error contract for every op (the token plugin and the CLI rely on it):
 *   -ENODEV       the HSM is absent or unreachable (no TPM, PKCS#11 token/module not found)
 *   -EKEYREJECTED the HSM refused: host binding (or PCR policy) does not match, wrong key
 *   -ENOANO       a PIN is needed and none was given, or the PIN is wrong
 *   -EBADMSG      the backend data in the token is corrupt
 *   -ENOKEY       the key the token refers to does not exist in the HSM
 *   -EINVAL       bad configuration string
 *   -EIO          any other HSM failure
 * Every failure is also logged with what failed and what the user can do.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "secret.h"

struct json_object;

/* What the user asked for with --hsm, plus options. */
struct lr_hsm {
	const struct lr_backend *backend;
	char *config;                 /* after "name:" — TCTI for tpm2, the pkcs11: URI for pkcs11;
	                                 NULL: use what the token stored (unlock) or the default */
	uint32_t pcr_mask;            /* tpm2: PCRs to bind (bit n = PCR n), 0 = none */
	const struct lr_secret *pin;  /* PIN supplied by the caller (NULL: pin-source or none) */
	bool tpm2_fuse;               /* tpm2 lock: seal under lockroot's persistent storage key
	                                 (the "fuse", created when missing), which destroy evicts:
	                                 every key sealed under it is then gone for good */
};

struct lr_backend {
	const char *name;
	/* Lock key (the 32-byte user key) to this HSM and binding digest; write what unlock
	 * needs into obj (a json object owned by the caller). Must not write secrets. */
	int (*lock)(const struct lr_hsm *hsm, const struct lr_secret *key,
		    const uint8_t binding[32], struct json_object *obj);
	/* Unlock the key from obj; *key is a new secret. */
	int (*unlock)(const struct lr_hsm *hsm, struct json_object *obj,
		      const uint8_t binding[32], struct lr_secret **key);
	/* 0 when the HSM is reachable, -ENODEV when not. */
	int (*probe)(const struct lr_hsm *hsm);
	/* Add non-secret, human-readable fields describing obj to out (for status and dump). */
	int (*describe)(struct json_object *obj, struct json_object *out);
	/* Check every field of obj (for the plugin's validate). 0 or -EBADMSG (logged). */
	int (*validate)(struct json_object *obj);
	/* Destroy the key inside the HSM where possible; -EOPNOTSUPP otherwise. May be NULL. */
	int (*destroy)(const struct lr_hsm *hsm, struct json_object *obj);
	/* Create the HSM-side key if it does not exist (pkcs11). 1 created, 0 existed. May be NULL. */
	int (*keygen)(const struct lr_hsm *hsm);
};

/* NULL if unknown or not built. */
const struct lr_backend *lr_backend_find(const char *name);

/* Parse a --hsm spec: "tpm2", "tpm2:TCTI", "pkcs11:URI" (the URI keeps its "pkcs11:" scheme).
 * -EINVAL / -EOPNOTSUPP (backend not built), logged. */
int lr_hsm_parse(const char *spec, struct lr_hsm *hsm);
void lr_hsm_done(struct lr_hsm *hsm);

#if HAVE_TPM2
extern const struct lr_backend lr_backend_tpm2;
#endif
#if HAVE_PKCS11
extern const struct lr_backend lr_backend_pkcs11;
#endif
