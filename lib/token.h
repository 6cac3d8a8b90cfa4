/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "lockroot" LUKS2 token: what is needed to unlock the user key, and no secret.
 *
 * {
 *   "type": "lockroot", "keyslots": ["1"],
 *   "lockroot_version": 1,
 *   "backend": "tpm2" | "pkcs11",
 *   "bind": [ { "name": "board-serial", "check": "a1b2" }, ... ],
 *   "bind_salt": "<base64 16 bytes>",
 *   "tpm2" | "pkcs11": { backend-specific, see backend-*.c }
 * }
 */
#pragma once

#include <stdint.h>

#include "fingerprint.h"

struct json_object;

#define LR_TOKEN_TYPE "lockroot"
#define LR_TOKEN_VERSION 1

struct lr_token {
	int version;
	int keyslot;
	char backend[16];
	uint32_t bind_mask;
	char bind_check[LR_COMP_MAX][5];
	uint8_t bind_salt[16];
	struct json_object *backend_data; /* owned reference to the backend's object */
};

/* Parse and validate every field. -EBADMSG (corrupt, logged with the reason),
 * -EPROTONOSUPPORT (lockroot_version newer than this build), -EMEDIUMTYPE (not our type). */
int lr_token_parse(const char *json, struct lr_token *t);
/* Serialise; *json is malloc'd. */
int lr_token_format(const struct lr_token *t, char **json);
void lr_token_done(struct lr_token *t);
