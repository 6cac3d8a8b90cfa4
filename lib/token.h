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
 *   "boot_files": { "device": "PARTUUID=…", "files": [ { "path": "config.txt", "sha256": "…" }, … ] },
 *                 only when "bind" names "boot-files" (then lockroot_version is 2)
 *   "tpm2" | "pkcs11": { backend-specific, see backend-*.c }
 * }
 */
#pragma once

#include <stdint.h>

#include "bootfiles.h"
#include "fingerprint.h"

struct json_object;

#define LR_TOKEN_TYPE "lockroot"
/* The newest version this build reads; it writes 1 unless the token binds the boot files. */
#define LR_TOKEN_VERSION 2

struct lr_token {
	int version;
	int keyslot;
	char backend[16];
	uint32_t bind_mask;
	char bind_check[LR_COMP_MAX][5];
	uint8_t bind_salt[16];
	char *boot_spec;                  /* with LR_COMP_BOOT_FILES: where the boot files are */
	struct lr_bootfiles boot_files;   /* ... and what they were when the key was locked */
	struct json_object *backend_data; /* owned reference to the backend's object */
};

/* Parse and validate every field. -EBADMSG (corrupt, logged with the reason),
 * -EPROTONOSUPPORT (lockroot_version newer than this build), -EMEDIUMTYPE (not our type). */
int lr_token_parse(const char *json, struct lr_token *t);
/* Serialise; *json is malloc'd. */
int lr_token_format(const struct lr_token *t, char **json);
void lr_token_done(struct lr_token *t);
