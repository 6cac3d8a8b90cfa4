/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* First-boot provisioning of a fleet-image unit: see provision.h for the steps and their order. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "convert.h"
#include "fingerprint.h"
#include "log.h"
#include "luks-internal.h"
#include "migrate.h"
#include "provision.h"
#include "secret.h"
#include "util.h"

#define SAY(...) lr_info(__VA_ARGS__)

const char *lr_provision_state_name(enum lr_provision_state s)
{
	switch (s) {
	case LR_PROVISION_NONE: return "none";
	case LR_PROVISION_PENDING: return "pending";
	case LR_PROVISION_REKEY: return "rekey";
	case LR_PROVISION_REKEYING: return "rekeying";
	case LR_PROVISION_CLEANUP: return "cleanup";
	}
	return "?";
}

/* The first token of type, its id (or -1) and its JSON parsed. */
static int find_token(struct crypt_device *cd, const char *type, struct json_object **obj)
{
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2); id++) {
		const char *t, *json;

		if (crypt_token_status(cd, id, &t) == CRYPT_TOKEN_INACTIVE || !t || strcmp(t, type))
			continue;
		if (obj) {
			*obj = NULL;
			if (crypt_token_json_get(cd, id, &json) >= 0)
				*obj = json_tokener_parse(json);
		}
		return id;
	}
	return -1;
}

/* keyslots[0] of a token, -1 when it names none. */
static int token_first_keyslot(struct json_object *tok)
{
	struct json_object *ks;

	if (!tok || !json_object_object_get_ex(tok, "keyslots", &ks) || !json_object_is_type(ks, json_type_array) ||
	    json_object_array_length(ks) < 1)
		return -1;
	return atoi(json_object_get_string(json_object_array_get_idx(ks, 0)));
}

static bool token_flag(struct json_object *tok, const char *key)
{
	struct json_object *v;

	return tok && json_object_object_get_ex(tok, key, &v) && json_object_get_boolean(v);
}

/* The "digest" of the volume key when the header has exactly one: it names the volume key. */
static bool single_digest(struct crypt_device *cd, char *out, size_t len)
{
	_cleanup_json_ struct json_object *root = NULL;
	struct json_object *digests, *d, *v;
	const char *json;

	if (crypt_dump_json(cd, &json, 0) < 0 || !(root = json_tokener_parse(json)) ||
	    !json_object_object_get_ex(root, "digests", &digests) || json_object_object_length(digests) != 1)
		return false;
	{
		struct json_object_iterator it = json_object_iter_begin(digests);

		d = json_object_iter_peek_value(&it);
	}
	if (!json_object_object_get_ex(d, "digest", &v) || !json_object_is_type(v, json_type_string))
		return false;
	snprintf(out, len, "%s", json_object_get_string(v));
	return true;
}

static int examine_cd(struct crypt_device *cd, enum lr_provision_state *state, int *keyslot, int *token)
{
	_cleanup_json_ struct json_object *tok = NULL;
	int id = find_token(cd, LR_PROVISION_TOKEN_TYPE, &tok), slot;

	*state = LR_PROVISION_NONE;
	*keyslot = -1;
	if (token)
		*token = id;
	if (id < 0)
		return 0;
	slot = token_first_keyslot(tok);
	if (slot >= 0 && crypt_keyslot_status(cd, slot) >= CRYPT_SLOT_ACTIVE) {
		*state = LR_PROVISION_PENDING;
		*keyslot = slot;
	} else if (crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE) {
		/* libcryptsetup refuses token changes now: the token goes when it is finished */
		*state = LR_PROVISION_REKEYING;
	} else if (token_flag(tok, "unique_volume_key")) {
		/* re-keyed once the volume key is no longer the one noted before the re-key began */
		struct json_object *v;
		const char *old = json_object_object_get_ex(tok, "old_digest", &v) ? json_object_get_string(v) : NULL;
		char now[256];

		*state = old && single_digest(cd, now, sizeof(now)) && strcmp(now, old) ? LR_PROVISION_CLEANUP :
			 LR_PROVISION_REKEY;
	} else {
		*state = LR_PROVISION_CLEANUP;
	}
	return 0;
}

int lr_provision_examine(const char *device, enum lr_provision_state *state, int *keyslot)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r = lr_luks2_load(device, true, &cd);

	if (r < 0)
		return r;
	return examine_cd(cd, state, keyslot, NULL);
}

/* ---- the record ---- */

static void name_safe(char *s)
{
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '-' ||
		      *s == '_' || *s == '.'))
			*s = '_';
}

/* The unit's name in the facility: its board serial, else the DMI UUID, the disk serial, the
 * SD card CID, else the LUKS UUID of the volume. */
static int record_name(const char *device, struct lr_fingerprint *fp, char *out, size_t len)
{
	static const int order[] = { LR_COMP_BOARD_SERIAL, LR_COMP_DMI_UUID, LR_COMP_DISK_SERIAL, LR_COMP_SD_CID };
	_cleanup_crypt_ struct crypt_device *cd = NULL;

	for (size_t i = 0; i < LR_ELEMENTSOF(order); i++)
		if (fp->comp[order[i]].value && *fp->comp[order[i]].value) {
			snprintf(out, len, "%s-%s.json", lr_component_name(order[i]), fp->comp[order[i]].value);
			name_safe(out);
			return 0;
		}
	if (lr_luks2_load(device, true, &cd) < 0 || !crypt_get_uuid(cd))
		return lr_error_code(-ENODATA, "this host has no identity to name its provisioning record by");
	snprintf(out, len, "luks-%s.json", crypt_get_uuid(cd));
	name_safe(out);
	return 0;
}

int lr_provision_record_path(const char *device, const char *dir, char *out, size_t len)
{
	_cleanup_fingerprint_ struct lr_fingerprint fp = { 0 };
	char name[256];
	int r;

	r = lr_fingerprint_read(device, &fp);
	if (r < 0)
		return r;
	r = record_name(device, &fp, name, sizeof(name));
	if (r < 0)
		return r;
	if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int record_write(const struct lr_provision_params *p, const struct lr_enroll_result *e, const char *path)
{
	_cleanup_fingerprint_ struct lr_fingerprint fp = { 0 };
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *o = json_object_new_object(), *ids = json_object_new_object();
	_cleanup_free_ char *back = NULL;
	const char *text;
	char bound[128];
	int r;

	if (!o || !ids)
		return -ENOMEM;
	r = lr_fingerprint_read(p->device, &fp);
	if (r == 0)
		r = lr_luks2_load(p->device, true, &cd);
	if (r < 0)
		return r;
	json_object_object_add(o, "version", json_object_new_int(1));
	for (int i = 0; i < LR_COMP_MAX; i++)
		if (fp.comp[i].value)
			json_object_object_add(ids, lr_component_name(i), json_object_new_string(fp.comp[i].value));
	json_object_object_add(o, "identity", json_object_get(ids));
	if (fp.comp[LR_COMP_BOARD_SERIAL].value)
		json_object_object_add(o, "board_serial", json_object_new_string(fp.comp[LR_COMP_BOARD_SERIAL].value));
	json_object_object_add(o, "luks_uuid", json_object_new_string(crypt_get_uuid(cd) ? crypt_get_uuid(cd) : ""));
	json_object_object_add(o, "device", json_object_new_string(p->device));
	json_object_object_add(o, "hsm", json_object_new_string(p->hsm->backend->name));
	lr_bind_format(e->bind_mask, bound, sizeof(bound));
	json_object_object_add(o, "bound_to", json_object_new_string(bound));
	json_object_object_add(o, "hsm_keyslot", json_object_new_int(e->keyslot));
	json_object_object_add(o, "recovery_keyslot", json_object_new_int(e->recovery_keyslot));
	json_object_object_add(o, "recovery_key", json_object_new_string((const char *)e->recovery_key->data));
	json_object_object_add(o, "unique_volume_key", json_object_new_boolean(p->unique_volume_key));
	json_object_object_add(o, "provisioned", json_object_new_int64((int64_t)time(NULL)));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = lr_write_file_atomic(path, text, strlen(text), 0600);
	if (r < 0)
		return r;
	/* The record is the only copy of the recovery key: read it back before the provisioning
	 * keyslot goes. */
	r = lr_read_file(path, 1 << 20, &back, NULL);
	if (r < 0 || strcmp(back, text) != 0) {
		if (back)
			explicit_bzero(back, strlen(back));
		return lr_error_code(r < 0 ? r : -EIO, "the provisioning record %s does not read back as written", path);
	}
	explicit_bzero(back, strlen(back));
	return 0;
}

/* The recovery key from this host's record (step 5 after a power cut). */
static int record_recovery_key(const char *path, struct lr_secret **out)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *v;
	int r;

	r = lr_read_file(path, 1 << 20, &text, NULL);
	if (r < 0)
		return lr_error_code(r, "cannot read the provisioning record %s: %s", path, strerror(-r));
	o = json_tokener_parse(text);
	explicit_bzero(text, strlen(text));
	if (!o || !json_object_object_get_ex(o, "recovery_key", &v) || !json_object_is_type(v, json_type_string))
		return lr_error_code(-EBADMSG, "the provisioning record %s has no recovery key", path);
	*out = lr_secret_dup(json_object_get_string(v), (size_t)json_object_get_string_len(v));
	return *out ? 0 : -ENOMEM;
}

/* ---- steps ---- */

/* Step 1: what an interrupted attempt left (every keyslot and token but the provisioning ones). */
static int remove_leftovers(const char *device, int pslot, int ptoken)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r = lr_luks2_load(device, false, &cd);

	if (r < 0)
		return r;
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2); id++) {
		if (id == ptoken || crypt_token_status(cd, id, NULL) == CRYPT_TOKEN_INACTIVE)
			continue;
		r = crypt_token_json_set(cd, id, NULL);
		if (r < 0)
			return lr_error_code(r, "cannot remove token %d left by an earlier attempt: %s", id, strerror(-r));
		SAY("removed token %d left by an interrupted provisioning", id);
	}
	for (int s = 0; s < crypt_keyslot_max(CRYPT_LUKS2); s++) {
		crypt_keyslot_info ki = crypt_keyslot_status(cd, s);

		if (s == pslot || (ki != CRYPT_SLOT_ACTIVE && ki != CRYPT_SLOT_ACTIVE_LAST && ki != CRYPT_SLOT_UNBOUND))
			continue;
		r = crypt_keyslot_destroy(cd, s);
		if (r < 0)
			return lr_error_code(r, "cannot remove keyslot %d left by an earlier attempt: %s", s, strerror(-r));
		SAY("removed keyslot %d left by an interrupted provisioning", s);
	}
	return 0;
}

static int destroy_keyslot(const char *device, int slot)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r = lr_luks2_load(device, false, &cd);

	if (r == 0)
		r = crypt_keyslot_destroy(cd, slot);
	if (r < 0)
		return lr_error_code(r, "cannot remove the provisioning keyslot %d of %s: %s", slot, device, strerror(-r));
	return 0;
}

static int pending(const struct lr_provision_params *p, int pslot, int ptoken, struct lr_provision_result *res,
		   struct lr_secret **recovery)
{
	struct lr_enroll_params e = {
		.device = p->device, .hsm = p->hsm, .bind_mask = p->bind_mask, .bind_default = p->bind_default,
		.passphrase = p->key, .recovery_key = true, .recovery_cost = p->recovery_cost,
	};
	struct lr_enroll_result er = { .recovery_keyslot = -1 };
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r;

	if (!p->key)
		return lr_error_code(-EPERM, "%s waits for provisioning, but the provisioning key (%s) was not found",
				     p->device, LR_PROVISION_KEY_FILE);
	r = lr_luks2_load(p->device, true, &cd);
	if (r < 0)
		return r;
	r = crypt_activate_by_passphrase(cd, NULL, pslot, (const char *)p->key->data, p->key->len, 0);
	if (r < 0)
		return lr_error_code(r == -ENOENT ? -EPERM : r, "the provisioning key does not open keyslot %d of %s",
				     pslot, p->device);
	r = remove_leftovers(p->device, pslot, ptoken);
	if (r < 0)
		return r;
	SAY("enrolling this unit's %s and a recovery key", p->hsm->backend->name);
	r = lr_enroll(&e, &er);
	if (r < 0)
		goto out;
	SAY("writing the provisioning record %s", res->record_path);
	r = record_write(p, &er, res->record_path);
	if (r < 0)
		goto out;
	SAY("removing the provisioning keyslot %d", pslot);
	r = destroy_keyslot(p->device, pslot);
	if (r == 0) {
		*recovery = er.recovery_key;
		er.recovery_key = NULL;
	}
out:
	lr_enroll_result_done(&er);
	return r;
}

/* The keyslot a passphrase opens (-errno when none). */
static int keyslot_of(struct crypt_device *cd, const struct lr_secret *pass)
{
	int r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, (const char *)pass->data, pass->len, 0);

	return r == -ENOENT ? -EPERM : r;
}

/* Before the re-key starts: the provisioning token notes which volume key is the old one (the
 * header alone then tells whether the re-key is to do or done; tokens cannot change while
 * libcryptsetup re-encrypts). */
static int note_old_digest(struct crypt_device *cd)
{
	_cleanup_json_ struct json_object *tok = NULL;
	_cleanup_json_ struct json_object *root = NULL;
	struct json_object *digests, *seg0 = NULL;
	const char *json;
	int id = find_token(cd, LR_PROVISION_TOKEN_TYPE, &tok), r;

	if (id < 0 || !tok)
		return 0;
	/* the digest of segment 0 (the data), with the new key's unbound digest beside it now */
	if (crypt_dump_json(cd, &json, 0) < 0 || !(root = json_tokener_parse(json)) ||
	    !json_object_object_get_ex(root, "digests", &digests))
		return lr_error_code(-EINVAL, "cannot read the header's digests");
	json_object_object_foreach(digests, key, d) {
		struct json_object *segs;

		(void)key;
		if (json_object_object_get_ex(d, "segments", &segs) && json_object_array_length(segs) > 0 &&
		    strcmp(json_object_get_string(json_object_array_get_idx(segs, 0)), "0") == 0)
			seg0 = json_object_object_get(d, "digest");
	}
	if (!seg0)
		return lr_error_code(-EINVAL, "the header has no digest for its data segment");
	json_object_object_add(tok, "old_digest", json_object_get(seg0));
	r = crypt_token_json_set(cd, id, json_object_to_json_string_ext(tok, JSON_C_TO_STRING_PLAIN));
	return r < 0 ? lr_error_code(r, "cannot update the provisioning token: %s", strerror(-r)) : 0;
}

/* Step 5: new volume key, HSM and recovery passphrases for it, re-encryption initialised. */
static int rekey(const struct lr_provision_params *p, const struct lr_secret *recovery_known, const char *record)
{
	_cleanup_secret_ struct lr_secret *hpass = NULL, *rpass = NULL, *vk = NULL;
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct crypt_params_luks2 luks2 = { 0 };
	struct crypt_params_reencrypt params = {
		.mode = CRYPT_REENCRYPT_REENCRYPT,
		.direction = CRYPT_REENCRYPT_FORWARD,
		.resilience = "checksum",
		.hash = "sha256",
		.luks2 = &luks2,
		.flags = CRYPT_REENCRYPT_INITIALIZE_ONLY,
	};
	char cipher[64], mode[64];
	int r, hslot, rslot, hnew, rnew, htok, rtok, vk_size;

	if (recovery_known)
		rpass = lr_secret_dup(recovery_known->data, recovery_known->len);
	else if ((r = record_recovery_key(record, &rpass)) < 0)
		return r;
	if (!rpass)
		return -ENOMEM;
	r = lr_convert_unlock(p->device, p->device, &hpass);
	if (r < 0)
		return r;
	r = lr_luks2_load(p->device, false, &cd);
	if (r < 0)
		return r;
	hslot = keyslot_of(cd, hpass);
	rslot = keyslot_of(cd, rpass);
	if (hslot < 0 || rslot < 0)
		return lr_error_code(-EPERM, "the %s key does not open %s: cannot change its volume key",
				     hslot < 0 ? "HSM" : "recovery", p->device);
	htok = find_token(cd, LR_TOKEN_TYPE, NULL);
	rtok = find_token(cd, LR_RECOVERY_TOKEN_TYPE, NULL);
	/* unbound keyslots of an attempt cut before the re-encryption was initialised */
	for (int s = 0; s < crypt_keyslot_max(CRYPT_LUKS2); s++)
		if (crypt_keyslot_status(cd, s) == CRYPT_SLOT_UNBOUND && (r = crypt_keyslot_destroy(cd, s)) < 0)
			return lr_error_code(r, "cannot remove the unbound keyslot %d: %s", s, strerror(-r));
	vk_size = crypt_get_volume_key_size(cd);
	if (vk_size <= 0)
		return -EINVAL;
	r = lr_set_pbkdf_minimal(cd);
	if (r < 0)
		return r;
	hnew = crypt_keyslot_add_by_key(cd, CRYPT_ANY_SLOT, NULL, (size_t)vk_size, (const char *)hpass->data, hpass->len,
					CRYPT_VOLUME_KEY_NO_SEGMENT);
	if (hnew < 0)
		return lr_error_code(hnew, "cannot add a keyslot for the new volume key: %s", strerror(-hnew));
	vk = lr_secret_new((size_t)vk_size);
	if (!vk)
		return -ENOMEM;
	vk->len = (size_t)vk_size;
	r = crypt_volume_key_get(cd, hnew, (char *)vk->data, &vk->len, (const char *)hpass->data, hpass->len);
	if (r < 0)
		return lr_error_code(r, "cannot read the new volume key back: %s", strerror(-r));
	r = lr_set_pbkdf_recovery(cd, &p->recovery_cost);
	if (r < 0)
		return r;
	rnew = crypt_keyslot_add_by_key(cd, CRYPT_ANY_SLOT, (const char *)vk->data, vk->len, (const char *)rpass->data,
					rpass->len, CRYPT_VOLUME_KEY_NO_SEGMENT | CRYPT_VOLUME_KEY_DIGEST_REUSE);
	if (rnew < 0)
		return lr_error_code(rnew, "cannot add the recovery keyslot for the new volume key: %s", strerror(-rnew));
	/* The tokens name both keyslots while the data is re-encrypted; libcryptsetup drops the
	 * old ones when it is finished. */
	if (htok >= 0 && (r = crypt_token_assign_keyslot(cd, htok, hnew)) < 0)
		return lr_error_code(r, "cannot assign token %d to keyslot %d: %s", htok, hnew, strerror(-r));
	if (rtok >= 0 && (r = crypt_token_assign_keyslot(cd, rtok, rnew)) < 0)
		return lr_error_code(r, "cannot assign token %d to keyslot %d: %s", rtok, rnew, strerror(-r));
	r = note_old_digest(cd);
	if (r < 0)
		return r;
	r = lr_set_pbkdf_minimal(cd);
	if (r < 0)
		return r;
	snprintf(cipher, sizeof(cipher), "%s", crypt_get_cipher(cd));
	snprintf(mode, sizeof(mode), "%s", crypt_get_cipher_mode(cd));
	luks2.sector_size = (uint32_t)crypt_get_sector_size(cd);
	r = crypt_reencrypt_init_by_passphrase(cd, NULL, (const char *)hpass->data, hpass->len, hslot, hnew, cipher,
					       mode, &params);
	if (r < 0)
		return lr_error_code(r, "cannot initialise the re-encryption of %s to its own volume key: %s",
				     p->device, strerror(-r));
	SAY("%s: re-encryption to a volume key of its own initialised (keyslots %d, %d)", p->device, hnew, rnew);
	return 0;
}

static int cleanup(const char *device)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r = lr_luks2_load(device, false, &cd), id;

	if (r < 0)
		return r;
	id = find_token(cd, LR_PROVISION_TOKEN_TYPE, NULL);
	if (id >= 0 && (r = crypt_token_json_set(cd, id, NULL)) < 0)
		return lr_error_code(r, "cannot remove the provisioning token %d: %s", id, strerror(-r));
	return 0;
}

int lr_provision(const struct lr_provision_params *p, struct lr_provision_result *res)
{
	_cleanup_secret_ struct lr_secret *recovery = NULL;
	enum lr_provision_state st;
	int r, slot, token;

	memset(res, 0, sizeof(*res));
	r = lr_provision_record_path(p->device, p->record_dir, res->record_path, sizeof(res->record_path));
	if (r < 0)
		return r;
	for (int round = 0; round < 4; round++) {
		_cleanup_crypt_ struct crypt_device *cd = NULL;

		r = lr_luks2_load(p->device, true, &cd);
		if (r < 0)
			return r;
		r = examine_cd(cd, &st, &slot, &token);
		crypt_free(cd);
		cd = NULL;
		if (round == 0)
			res->before = st;
		switch (st) {
		case LR_PROVISION_NONE:
			return 0;
		case LR_PROVISION_PENDING:
			r = pending(p, slot, token, res, &recovery);
			break;
		case LR_PROVISION_REKEY:
			r = rekey(p, recovery, res->record_path);
			if (r == 0)
				res->rekey_started = true;
			break;
		case LR_PROVISION_REKEYING:
			return 0;
		case LR_PROVISION_CLEANUP:
			r = cleanup(p->device);
			break;
		}
		if (r < 0)
			return r;
	}
	return lr_error_code(-ELOOP, "the provisioning of %s does not come to an end", p->device);
}

/* Mark the provisioning token (lockroot image): re-key at first boot or not. */
int lr_provision_mark(const char *device, bool unique_volume_key)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *tok = NULL;
	int r = lr_luks2_load(device, false, &cd), id;

	if (r < 0)
		return r;
	id = find_token(cd, LR_PROVISION_TOKEN_TYPE, &tok);
	if (id < 0 || !tok)
		return lr_error_code(-ENOENT, "%s has no provisioning token", device);
	json_object_object_add(tok, "unique_volume_key", json_object_new_boolean(unique_volume_key));
	r = crypt_token_json_set(cd, id, json_object_to_json_string_ext(tok, JSON_C_TO_STRING_PLAIN));
	return r < 0 ? lr_error_code(r, "cannot update the provisioning token: %s", strerror(-r)) : 0;
}

int lr_provision_finish(const char *device)
{
	enum lr_provision_state st;
	int r, slot;

	r = lr_provision_examine(device, &st, &slot);
	if (r < 0 || st != LR_PROVISION_CLEANUP)
		return r;
	return cleanup(device);
}
