/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unlocking through a lockroot token, and removing tokens. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lockroot.h"
#include "luks-internal.h"
#include "util.h"

/* Compare the host with the checks in the token, so that a refusal names what changed
 * ("SD card CID differs from enrolment") instead of a bare "HSM refused". */
int lr_binding_verify(const char *device, const struct lr_token *t, bool boot_as_recorded, uint8_t digest[32])
{
	_cleanup_fingerprint_ struct lr_fingerprint fp = { 0 };
	int r, changed = 0;

	r = lr_fingerprint_read(device, &fp);
	if (r < 0)
		return r;
	if ((t->bind_mask & (1u << LR_COMP_BOOT_FILES)) && boot_as_recorded) {
		r = lr_fingerprint_set_boot_files(&fp, &t->boot_files, t->boot_spec);
		if (r < 0)
			return r;
	} else if (t->bind_mask & (1u << LR_COMP_BOOT_FILES)) {
		_cleanup_bootfiles_ struct lr_bootfiles now = { 0 };

		r = lr_bootfiles_measure_spec(t->boot_spec, &now);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			lr_error("the key is bound to the boot files, which cannot be read on this host");
			changed++;
		} else {
			r = lr_fingerprint_set_boot_files(&fp, &now, t->boot_spec);
			if (r < 0)
				return r;
			if (lr_bootfiles_explain(&t->boot_files, &now) > 0)
				changed++;
		}
	}
	for (int i = 0; i < LR_COMP_MAX; i++) {
		char check[5];

		if (!(t->bind_mask & (1u << i)) || i == LR_COMP_BOOT_FILES)
			continue;
		if (!fp.comp[i].value) {
			lr_error("the key is bound to the %s, which cannot be read on this host", lr_component_description(i));
			changed++;
			continue;
		}
		r = lr_component_check(t->bind_salt, i, fp.comp[i].value, check);
		if (r < 0)
			return r;
		if (strcmp(check, t->bind_check[i]) != 0) {
			lr_error("%s differs from enrolment", lr_component_description(i));
			changed++;
		}
	}
	if (changed && (t->bind_mask & (1u << LR_COMP_BOOT_FILES)))
		return lr_error_code(-EKEYREJECTED, "this is not the host, or not the boot files, the key was locked "
				     "to: unlock with the recovery key; if the change was yours, run 'lockroot reseal "
				     "--key-file' (or enroll again)");
	if (changed)
		return lr_error_code(-EKEYREJECTED, "this is not the host the key was enrolled on: "
				     "unlock with the recovery key, then enroll again");
	r = lr_fingerprint_digest(&fp, t->bind_mask, digest);
	return r < 0 ? -EKEYREJECTED : 0;
}

int lr_token_unlock(const char *json, const char *device, const struct lr_hsm *override,
		    struct lr_secret **passphrase, int *keyslot)
{
	_cleanup_token_ struct lr_token t = { 0 };
	_cleanup_secret_ struct lr_secret *key = NULL;
	struct lr_hsm hsm = { 0 };
	uint8_t digest[32];
	int r;

	r = lr_token_parse(json, &t);
	if (r < 0)
		return r;
	hsm.backend = lr_backend_find(t.backend);
	if (!hsm.backend)
		return lr_error_code(-ENODEV, "the token needs the '%s' HSM backend, which this lockroot lacks", t.backend);
	if (override) {
		if (override->backend && override->backend != hsm.backend)
			return lr_error_code(-EINVAL, "--hsm names %s but the token was made with %s",
					     override->backend->name, t.backend);
		hsm.config = override->config;
		hsm.pin = override->pin;
	}
	r = lr_binding_verify(device, &t, false, digest);
	if (r < 0)
		return r;
	r = hsm.backend->unlock(&hsm, t.backend_data, digest, &key);
	if (r < 0)
		return r;
	if (key->len != LR_USER_KEY_BYTES)
		return lr_error_code(-EBADMSG, "the HSM returned a key of %zu bytes, expected %d", key->len,
				     LR_USER_KEY_BYTES);
	r = lr_secret_base64(key, passphrase);
	if (r < 0)
		return r;
	if (keyslot)
		*keyslot = t.keyslot;
	return 0;
}

/* Which error to report when several tokens fail: the most telling one, in the order
 * libcryptsetup uses (real errors first, then PIN, HSM absent, refused). */
static int error_rank(int r)
{
	switch (r) {
	case -ENOMSG:
		return 0;
	case -EKEYREJECTED:
	case -ENOKEY:
		return 1;
	case -ENODEV:
		return 2;
	case -ENOANO:
		return 3;
	default:
		return 4;
	}
}

static int no_token(const char *device, int token)
{
	if (token >= 0)
		return lr_error_code(-ENOMSG, "%s has no lockroot token %d", device, token);
	return lr_error_code(-ENOMSG, "%s has no lockroot token: enroll one with 'lockroot enroll'", device);
}

/* A token names two keyslots only while the volume is re-encrypted to a new volume key (one
 * keyslot for each key, lib/provision.c); otherwise it is corrupt. */
static int check_keyslot_count(struct crypt_device *cd, const char *json, const char *device)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(json);
	struct json_object *ks;

	if (!o || !json_object_object_get_ex(o, "keyslots", &ks) || !json_object_is_type(ks, json_type_array) ||
	    json_object_array_length(ks) != 2 || crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
		return 0;
	return lr_error_code(-EBADMSG, "lockroot token is corrupt: \"keyslots\" names two keyslots, but %s is not "
			     "being re-encrypted", device);
}

static int try_token(struct crypt_device *cd, const struct lr_unlock_params *p, int id,
		     struct lr_secret **out)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	const char *json;
	uint32_t flags = 0;
	int r, slot;

	r = crypt_token_json_get(cd, id, &json);
	if (r < 0)
		return r;
	r = check_keyslot_count(cd, json, p->device);
	if (r < 0)
		return r;
	r = lr_token_unlock(json, p->device, p->hsm_override, &pass, &slot);
	if (r < 0)
		return r;
	if (p->readonly)
		flags |= CRYPT_ACTIVATE_READONLY;
	if (p->discard)
		flags |= CRYPT_ACTIVATE_ALLOW_DISCARDS;
	/* During a re-encryption the key opens a keyslot of each volume key: libcryptsetup
	 * picks them when no keyslot is named. */
	r = crypt_activate_by_passphrase(cd, p->name,
					 crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE ? CRYPT_ANY_SLOT : slot,
					 (const char *)pass->data, pass->len, flags);
	if (r == -EPERM)
		return lr_error_code(-EKEYREJECTED, "the key from token %d does not open keyslot %d of %s "
				     "(the keyslot was changed?)", id, slot, p->device);
	if (r < 0)
		return lr_error_code(r, "cannot %s %s: %s", p->name ? "activate" : "check", p->device, strerror(-r));
	if (out) {
		*out = pass;
		pass = NULL;
	}
	return r;
}

int lr_unlock(const struct lr_unlock_params *p, struct lr_secret **passphrase)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r, best = -ENOMSG;

	r = lr_luks2_load(p->device, true, &cd);
	if (r < 0)
		return r;
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2); id++) {
		const char *type;

		if (p->token >= 0 && id != p->token)
			continue;
		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type ||
		    strcmp(type, LR_TOKEN_TYPE) != 0)
			continue;
		r = try_token(cd, p, id, passphrase);
		if (r >= 0)
			return r;
		if (error_rank(r) >= error_rank(best))
			best = r;
	}
	if (best == -ENOMSG)
		return no_token(p->device, p->token);
	return best;
}

/* ---- unenroll ---- */

static int token_keyslot(struct crypt_device *cd, int id)
{
	_cleanup_token_ struct lr_token t = { 0 };
	const char *json;
	int r;

	r = crypt_token_json_get(cd, id, &json);
	if (r < 0)
		return r;
	r = lr_token_parse(json, &t);
	return r < 0 ? r : t.keyslot;
}

int lr_unenroll(const char *device, int token, bool force)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int ids[32], slots[32], n = 0, r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2) && n < 32; id++) {
		const char *type;

		if (token >= 0 && id != token)
			continue;
		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type ||
		    strcmp(type, LR_TOKEN_TYPE) != 0)
			continue;
		ids[n] = id;
		/* A corrupt token is removed too, but its keyslot cannot be known. */
		slots[n] = token_keyslot(cd, id);
		n++;
	}
	if (n == 0)
		return no_token(device, token);
	{
		int removing = 0;

		for (int i = 0; i < n; i++)
			if (slots[i] >= 0 && crypt_keyslot_status(cd, slots[i]) >= CRYPT_SLOT_ACTIVE)
				removing++;
		if (!force && lr_count_active_keyslots(cd) - removing <= 0)
			return lr_error_code(-EBUSY, "removing this would leave %s without any keyslot, and its data "
					     "could never be read again: add a passphrase or recovery key first "
					     "(or use --force); nothing was changed", device);
	}
	/* Token first, then its keyslot: never a token that points at nothing. */
	for (int i = 0; i < n; i++) {
		r = crypt_token_json_set(cd, ids[i], NULL);
		if (r < 0)
			return lr_error_code(r, "cannot remove token %d: %s", ids[i], strerror(-r));
		if (slots[i] >= 0 && crypt_keyslot_status(cd, slots[i]) >= CRYPT_SLOT_ACTIVE) {
			r = crypt_keyslot_destroy(cd, slots[i]);
			if (r < 0)
				return lr_error_code(r, "cannot remove keyslot %d: %s", slots[i], strerror(-r));
		}
		lr_info("removed token %d and keyslot %d", ids[i], slots[i]);
	}
	return n;
}
