/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Re-lock the key of every token bound to the boot files to the boot files as they are now
 * (after a kernel or initramfs update on the running system).
 *
 * The HSM gives the key back only for the binding it was locked to: the host as it is and
 * the boot files as the token recorded them. The key is then locked again to the boot files
 * as they are, proven to unlock, and the new token written before the old one is removed:
 * a power cut in between leaves two tokens, each good for its own boot files.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lockroot.h"
#include "luks-internal.h"

/* What the backend needs to lock again: the TCTI / URI and PCRs the token was made with. */
static int hsm_from_token(const struct lr_token *t, const struct lr_hsm *override, struct lr_hsm *hsm)
{
	struct json_object *v, *pcr;

	memset(hsm, 0, sizeof(*hsm));
	hsm->backend = lr_backend_find(t->backend);
	if (!hsm->backend)
		return lr_error_code(-ENODEV, "the token needs the '%s' HSM backend, which this lockroot lacks", t->backend);
	if (override && override->backend && override->backend != hsm->backend)
		return lr_error_code(-EINVAL, "--hsm names %s but the token was made with %s", override->backend->name,
				     t->backend);
	if (override && override->config)
		hsm->config = override->config;
	else if (json_object_object_get_ex(t->backend_data, strcmp(t->backend, "tpm2") == 0 ? "tcti" : "uri", &v) &&
		 json_object_is_type(v, json_type_string))
		hsm->config = (char *)json_object_get_string(v);
	if (override)
		hsm->pin = override->pin;
	/* A key sealed under the TPM fuse stays under it. */
	hsm->tpm2_fuse = strcmp(t->backend, "tpm2") == 0 && json_object_object_get_ex(t->backend_data, "fuse", NULL);
	if (json_object_object_get_ex(t->backend_data, "pcrs", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			pcr = json_object_array_get_idx(v, i);
			if (json_object_is_type(pcr, json_type_int) && json_object_get_int(pcr) >= 0 &&
			    json_object_get_int(pcr) < 32)
				hsm->pcr_mask |= 1u << json_object_get_int(pcr);
		}
	return 0;
}

/* Lock the key of token id again, to the boot files as they are now (now non-NULL; consumed)
 * and/or under the TPM fuse (fuse), and replace the token: the new one first. */
static int relock(struct crypt_device *cd, const char *device, int id, struct lr_token *t,
		  struct lr_bootfiles *now, bool fuse, const struct lr_hsm *override)
{
	_cleanup_token_ struct lr_token nt = { 0 };
	_cleanup_secret_ struct lr_secret *key = NULL, *back = NULL;
	_cleanup_free_ char *json = NULL;
	struct lr_hsm hsm;
	uint8_t digest[32];
	char value[65];
	int r, nid;

	r = hsm_from_token(t, override, &hsm);
	if (r < 0)
		return r;
	r = lr_binding_verify(device, t, now != NULL, digest);
	if (r < 0)
		return r;
	r = hsm.backend->unlock(&hsm, t->backend_data, digest, &key);
	explicit_bzero(digest, sizeof(digest));
	if (r < 0)
		return lr_error_code(r, now ? "the %s HSM does not give the key of token %d back for the boot files "
				     "it recorded: nothing was changed" : "the %s HSM does not give the key of token %d "
				     "back: nothing was changed", t->backend, id);
	if (fuse)
		hsm.tpm2_fuse = true;

	/* The new token: the same keyslot, bindings and salt; the boot files as they are now. */
	nt.version = t->version;
	nt.keyslot = t->keyslot;
	memcpy(nt.backend, t->backend, sizeof(nt.backend));
	nt.bind_mask = t->bind_mask;
	memcpy(nt.bind_check, t->bind_check, sizeof(nt.bind_check));
	memcpy(nt.bind_salt, t->bind_salt, sizeof(nt.bind_salt));
	nt.backend_data = json_object_new_object();
	if (!nt.backend_data)
		return -ENOMEM;
	if (t->boot_spec) {
		nt.boot_spec = strdup(t->boot_spec);
		if (!nt.boot_spec)
			return -ENOMEM;
		if (now) {
			nt.boot_files = *now;
			memset(now, 0, sizeof(*now));
		} else {
			nt.boot_files = t->boot_files;
			memset(&t->boot_files, 0, sizeof(t->boot_files));
		}
	}
	r = 0;
	if (now) {
		r = lr_bootfiles_value(&nt.boot_files, value);
		if (r >= 0)
			r = lr_component_check(nt.bind_salt, LR_COMP_BOOT_FILES, value, nt.bind_check[LR_COMP_BOOT_FILES]);
	}
	if (r >= 0)
		r = lr_binding_verify(device, &nt, true, digest);
	if (r < 0)
		return r;
	r = hsm.backend->lock(&hsm, key, digest, nt.backend_data);
	if (r >= 0) {
		struct lr_hsm boot = { .backend = hsm.backend, .config = NULL, .pin = hsm.pin };

		r = hsm.backend->unlock(&boot, nt.backend_data, digest, &back);
		if (r >= 0 && lr_secret_cmp(key, back) != 0)
			r = lr_error_code(-EIO, "the %s HSM returned a different key: nothing was changed", t->backend);
	}
	explicit_bzero(digest, sizeof(digest));
	if (r < 0)
		return r;
	r = lr_token_format(&nt, &json);
	if (r < 0)
		return r;
	/* New token first, then the old one goes. */
	nid = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
	if (nid < 0)
		return lr_error_code(nid, "cannot write the new lockroot token: %s; nothing was changed", strerror(-nid));
	r = crypt_token_json_set(cd, id, NULL);
	if (r < 0)
		return lr_error_code(r, "cannot remove the old token %d (token %d holds the new lock): %s", id, nid,
				     strerror(-r));
	lr_info("token %d (keyslot %d) locked again%s%s (now token %d)", id, t->keyslot,
		now ? " to the boot files as they are now" : "", fuse ? " under the TPM fuse" : "", nid);
	return nid;
}

/* The ids of the lockroot tokens, collected before any is replaced (relocking adds tokens). */
static int lockroot_tokens(struct crypt_device *cd, int *ids, int max)
{
	int n = 0;

	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2) && n < max; id++) {
		const char *type;

		if (crypt_token_status(cd, id, &type) != CRYPT_TOKEN_INACTIVE && type && strcmp(type, LR_TOKEN_TYPE) == 0)
			ids[n++] = id;
	}
	return n;
}

static int read_token(struct crypt_device *cd, const char *device, int id, struct lr_token *t)
{
	const char *json;
	int r;

	r = crypt_token_json_get(cd, id, &json);
	if (r < 0)
		return lr_error_code(r, "cannot read token %d of %s: %s", id, device, strerror(-r));
	return lr_token_parse(json, t);
}

/* Measure the boot files of token t now (into *now): 1 when they differ from its record, 0 when not. */
static int boot_files_changed(const struct lr_token *t, struct lr_bootfiles *now)
{
	char was[65], is[65];
	int r;

	r = lr_bootfiles_measure_spec(t->boot_spec, now);
	if (r >= 0)
		r = lr_bootfiles_value(&t->boot_files, was);
	if (r >= 0)
		r = lr_bootfiles_value(now, is);
	return r < 0 ? r : strcmp(was, is) != 0;
}

int lr_reseal(const char *device, const struct lr_hsm *override, int *resealed)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r, bound = 0, done = 0, ids[32], n = 0;

	if (resealed)
		*resealed = 0;
	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	n = lockroot_tokens(cd, ids, (int)LR_ELEMENTSOF(ids));
	for (int i = 0; i < n; i++) {
		_cleanup_token_ struct lr_token t = { 0 };
		_cleanup_bootfiles_ struct lr_bootfiles now = { 0 };

		r = read_token(cd, device, ids[i], &t);
		if (r < 0)
			return r;
		if (!(t.bind_mask & (1u << LR_COMP_BOOT_FILES)))
			continue;
		bound++;
		if (crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
			return lr_error_code(-EBUSY, "%s is being re-encrypted: reseal when that has finished", device);
		r = boot_files_changed(&t, &now);
		if (r < 0)
			return r;
		if (r == 0) {
			lr_debug("token %d: the boot files are as recorded", ids[i]);
			continue;
		}
		lr_log_demote(1);
		(void)lr_bootfiles_explain(&t.boot_files, &now); /* what changed, as information */
		lr_log_demote(-1);
		r = relock(cd, device, ids[i], &t, &now, false, override);
		if (r < 0)
			return r;
		done++;
	}
	if (bound == 0)
		return lr_error_code(-ENOMSG, "%s has no lockroot token bound to the boot files", device);
	if (resealed)
		*resealed = done;
	return 0;
}

/* The boot files changed behind lockroot's back (or the HSM no longer gives the key back):
 * a new key for the boot files as they are now, authorised by a passphrase (the recovery key),
 * then the old token and its keyslot go. */
int lr_reseal_with_passphrase(const char *device, const struct lr_hsm *override, const struct lr_secret *pass,
			      int *resealed)
{
	int done = 0, r;

	if (resealed)
		*resealed = 0;
	for (;;) {
		_cleanup_crypt_ struct crypt_device *cd = NULL;
		_cleanup_token_ struct lr_token t = { 0 };
		struct lr_enroll_params p = { 0 };
		struct lr_enroll_result res = { 0 };
		struct lr_hsm hsm;
		int id = -1, new_token, new_slot, ids[32], n;

		r = lr_luks2_load(device, false, &cd);
		if (r < 0)
			return r;
		/* The next token whose boot files changed (those made by this run carry the present files). */
		n = lockroot_tokens(cd, ids, (int)LR_ELEMENTSOF(ids));
		for (int i = 0; i < n && id < 0; i++) {
			_cleanup_bootfiles_ struct lr_bootfiles now = { 0 };

			lr_token_done(&t);
			if (read_token(cd, device, ids[i], &t) < 0 || !(t.bind_mask & (1u << LR_COMP_BOOT_FILES)))
				continue;
			r = boot_files_changed(&t, &now);
			if (r < 0)
				return r;
			if (r)
				id = ids[i];
		}
		if (id < 0)
			break;
		r = hsm_from_token(&t, override, &hsm);
		if (r < 0)
			return r;
		p.device = device;
		p.hsm = &hsm;
		p.bind_mask = t.bind_mask;
		p.boot_spec = t.boot_spec;
		p.passphrase = pass;
		crypt_free(cd);
		cd = NULL;
		r = lr_enroll(&p, &res);
		new_token = res.token;
		new_slot = res.keyslot;
		lr_enroll_result_done(&res);
		if (r < 0)
			return r;
		r = lr_unenroll(device, id, false);
		if (r < 0)
			return r;
		lr_info("token %d and keyslot %d replaced by token %d, keyslot %d, locked to the boot files as they "
			"are now", id, t.keyslot, new_token, new_slot);
		done++;
	}
	if (resealed)
		*resealed = done;
	return 0;
}

int lr_fuse_arm(const char *device, const struct lr_hsm *override, int *changed)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r, ids[32], n = 0, done = 0;

	if (changed)
		*changed = 0;
	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	if (crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
		return lr_error_code(-EBUSY, "%s is being re-encrypted: arm when that has finished", device);
	n = lockroot_tokens(cd, ids, (int)LR_ELEMENTSOF(ids));
	for (int i = 0; i < n; i++) {
		_cleanup_token_ struct lr_token t = { 0 };

		r = read_token(cd, device, ids[i], &t);
		if (r < 0)
			return r;
		if (strcmp(t.backend, "tpm2") != 0 || json_object_object_get_ex(t.backend_data, "fuse", NULL))
			continue;
		r = relock(cd, device, ids[i], &t, NULL, true, override);
		if (r < 0)
			return r;
		done++;
	}
	if (changed)
		*changed = done;
	return 0;
}
