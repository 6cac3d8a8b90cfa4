/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * liblockroot: LUKS2 volumes whose key is locked by an HSM bound to one host.
 *
 * Every call returns 0 (or a non-negative id) on success and -errno on failure, and
 * explains a failure through the log hook (log.h). Nothing here prints or exits.
 * Common errors: -ENOENT no such device/file, -EMEDIUMTYPE not LUKS2 (LUKS1 or plain),
 * -EPERM wrong passphrase, -ENOSPC no free keyslot/token, -EROFS device read-only,
 * plus the backend errors of backend.h.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "fingerprint.h"
#include "log.h"
#include "secret.h"
#include "token.h"
#include "util.h"

struct crypt_device;
struct json_object;

#define LR_USER_KEY_BYTES 32

/* Cost of the recovery keyslot (Argon2id). Zero fields: defaults that fit a 512 MiB board
 * (LR_RECOVERY_MEMORY_KB, 4 threads, benchmarked for LR_RECOVERY_TIME_MS). */
#define LR_RECOVERY_MEMORY_KB (128 * 1024)
#define LR_RECOVERY_TIME_MS 2000
struct lr_pbkdf_cost {
	uint32_t iterations;  /* >0: fixed, no benchmark (tests) */
	uint32_t memory_kb;
	uint32_t parallel;
};

struct lr_enroll_params {
	const char *device;
	struct lr_hsm *hsm;
	uint32_t bind_mask;
	bool bind_default;                  /* ignore bind_mask, use lr_fingerprint_default_mask() */
	const char *boot_spec;              /* with boot-files in bind_mask: the boot partition
					     * (bootfiles.h); NULL: the running system's */
	const struct lr_secret *passphrase; /* authorises: any existing keyslot */
	bool recovery_key;                  /* also add a recovery keyslot */
	struct lr_pbkdf_cost recovery_cost;
};

struct lr_enroll_result {
	int keyslot;
	int token;
	int recovery_keyslot;               /* -1 when none */
	uint32_t bind_mask;                 /* components bound */
	struct lr_secret *recovery_key;     /* NUL-terminated display form; caller frees */
};

/* Enroll: random user key -> HSM lock -> unlock -> compare, then keyslot, then token. */
int lr_enroll(const struct lr_enroll_params *p, struct lr_enroll_result *res);

struct lr_format_params {
	const char *device;
	const char *cipher;                 /* "aes-xts-plain64" (default), "xchacha12,aes-adiantum-plain64" */
	uint32_t key_bits;                  /* 0: 512 for xts, 256 otherwise */
	const char *label;
	struct lr_hsm *hsm;
	uint32_t bind_mask;
	bool bind_default;
	const char *boot_spec;              /* as in lr_enroll_params */
	bool recovery_key;
	struct lr_pbkdf_cost recovery_cost;
	const struct lr_secret *passphrase; /* optional extra passphrase keyslot */
	const char *uuid;                   /* NULL: a random one */
	const struct lr_secret *recovery_key_value; /* with recovery_key: this key (display form,
					     * several volumes sharing one) instead of a new one;
					     * the result's recovery_key is then NULL */
	const char *header;                 /* non-NULL: a detached header FILE, created here
					     * (O_EXCL, 0600); device is then only the data device
					     * and is not written */
	uint64_t data_offset;               /* bytes, multiple of 4096; 0: libcryptsetup's default */
	bool provisioning;                  /* no HSM (hsm NULL): passphrase is a random one-time
					     * provisioning key (lockroot image), its keyslot gets the
					     * minimal PBKDF and a "lockroot-provision" token; no
					     * recovery keyslot */
};
/* Create a new LUKS2 volume whose first keyslot is HSM-locked. Destroys what is on device
 * (or, with header, creates that file and leaves device alone). */
int lr_format(const struct lr_format_params *p, struct lr_enroll_result *res);

void lr_enroll_result_done(struct lr_enroll_result *res);

/* Unlock the user key from one lockroot token (JSON). device is used for the fingerprint
 * (disk-serial). hsm_override: non-NULL to replace the TCTI/URI stored in the token, and/or
 * to pass a PIN. *passphrase: the keyslot passphrase. Mismatches are explained in the log
 * ("SD card CID differs from enrolment") and give -EKEYREJECTED. */
int lr_token_unlock(const char *json, const char *device, const struct lr_hsm *hsm_override,
		    struct lr_secret **passphrase, int *keyslot);

struct lr_unlock_params {
	const char *device;
	const char *name;                   /* NULL: only test */
	int token;                          /* -1: any lockroot token */
	const struct lr_hsm *hsm_override;  /* may be NULL */
	bool readonly;
	bool discard;
};
/* Activate (or test) through the first lockroot token that works. If passphrase is
 * non-NULL the keyslot passphrase is returned there instead of being discarded
 * (keyscript mode). Returns the keyslot used. */
int lr_unlock(const struct lr_unlock_params *p, struct lr_secret **passphrase);

/* Remove a lockroot token (token >= 0) or all (token < 0) and their keyslots. Refuses with
 * -EBUSY when that would leave the volume without any keyslot, unless force. */
int lr_unenroll(const char *device, int token, bool force);

/* Everything about a device as JSON (no secrets): keyslots, tokens, bindings. */
int lr_status(const char *device, struct json_object **out);

/* The recovery key: 160 bits as 8 groups of 4 Crockford base32 characters. */
int lr_recovery_key_generate(struct lr_secret **out);
/* Normalise what a person typed (case, spaces, dashes, O/0, I/L/1) to the display form.
 * -EINVAL if it is not a recovery key. */
int lr_recovery_key_normalize(const char *typed, struct lr_secret **out);

/* Close /dev/mapper/NAME. */
int lr_deactivate(const char *name);
/* The cipher for a new volume on this CPU: "aes-xts-plain64" with AES instructions,
 * "xchacha12,aes-adiantum-plain64" without when the kernel has Adiantum (/proc/crypto, or
 * modules.builtin / modules.dep of the running kernel), else "aes-xts-plain64" with a warning.
 * Read under LOCKROOT_SYSROOT. */
const char *lr_cipher_default(void);
/* Load a LUKS2 header; -EMEDIUMTYPE with a message for LUKS1 or non-LUKS. */
int lr_luks2_load(const char *device, bool readonly, struct crypt_device **cd);

/* Lock the key of every lockroot token of device that binds the boot files again, to the boot
 * files as they are now (reseal.c); a token whose boot files are unchanged is left alone.
 * *resealed: how many were locked again. -ENOMSG when no token binds the boot files,
 * -EKEYREJECTED when the host differs or the HSM refuses. */
int lr_reseal(const char *device, const struct lr_hsm *override, int *resealed);
/* The same when the HSM cannot give the key back (the boot files were changed behind
 * lockroot's back, and the change is to be kept): a new key for the boot files as they are
 * now, authorised by passphrase (the recovery key); the old token and keyslot are removed. */
int lr_reseal_with_passphrase(const char *device, const struct lr_hsm *override, const struct lr_secret *pass,
			      int *resealed);
/* Seal the key of every tpm2 lockroot token of device that is not yet under the TPM fuse again,
 * under it (the same binding; the new token first), so that destroying the fuse (tamper
 * response) destroys the key inside the TPM. *changed: how many. */
int lr_fuse_arm(const char *device, const struct lr_hsm *override, int *changed);
