/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What a volume holds, as JSON without secrets: the data behind `lockroot status`. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lockroot.h"
#include "luks-internal.h"
#include "provision.h"

static const char *keyslot_state(crypt_keyslot_info ki)
{
	switch (ki) {
	case CRYPT_SLOT_ACTIVE:
	case CRYPT_SLOT_ACTIVE_LAST:
		return "active";
	case CRYPT_SLOT_UNBOUND:
		return "unbound";
	default:
		return NULL;
	}
}

static struct json_object *describe_lockroot_token(const char *json)
{
	_cleanup_token_ struct lr_token t = { 0 };
	struct json_object *o = json_object_new_object(), *bind;
	const struct lr_backend *b;
	int r;

	if (!o)
		return NULL;
	r = lr_token_parse(json, &t);
	if (r < 0) {
		json_object_object_add(o, "error", json_object_new_string(r == -EPROTONOSUPPORT ?
					"from a newer lockroot" : "corrupt"));
		return o;
	}
	json_object_object_add(o, "backend", json_object_new_string(t.backend));
	bind = json_object_new_array();
	for (int i = 0; i < LR_COMP_MAX; i++)
		if (t.bind_mask & (1u << i))
			json_object_array_add(bind, json_object_new_string(lr_component_name(i)));
	json_object_object_add(o, "bind", bind);
	if (t.boot_spec) {
		struct json_object *files = json_object_new_array();

		json_object_object_add(o, "boot_device", json_object_new_string(t.boot_spec));
		for (size_t i = 0; files && i < t.boot_files.n; i++)
			json_object_array_add(files, json_object_new_string(t.boot_files.f[i].path));
		json_object_object_add(o, "boot_files", files);
	}
	b = lr_backend_find(t.backend);
	if (b && b->describe)
		b->describe(t.backend_data, o);
	return o;
}

/* Which keyslot each token points at, to name the use of a keyslot. */
static const char *keyslot_use(struct crypt_device *cd, int slot)
{
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2); id++) {
		const char *type;

		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type)
			continue;
		if (crypt_token_is_assigned(cd, id, slot) != 0)
			continue;
		if (strcmp(type, LR_TOKEN_TYPE) == 0)
			return "hsm";
		if (strcmp(type, LR_RECOVERY_TOKEN_TYPE) == 0)
			return "recovery";
		if (strcmp(type, LR_PROVISION_TOKEN_TYPE) == 0)
			return "provisioning";
		return "token";
	}
	return "passphrase";
}

static struct json_object *keyslots_json(struct crypt_device *cd)
{
	struct json_object *arr = json_object_new_array();

	for (int i = 0; arr && i < crypt_keyslot_max(CRYPT_LUKS2); i++) {
		const char *state = keyslot_state(crypt_keyslot_status(cd, i));
		struct crypt_pbkdf_type pbkdf;
		struct json_object *k;

		if (!state)
			continue;
		k = json_object_new_object();
		json_object_object_add(k, "id", json_object_new_int(i));
		json_object_object_add(k, "state", json_object_new_string(state));
		json_object_object_add(k, "use", json_object_new_string(keyslot_use(cd, i)));
		if (crypt_keyslot_get_pbkdf(cd, i, &pbkdf) == 0)
			json_object_object_add(k, "pbkdf", json_object_new_string(pbkdf.type));
		json_object_array_add(arr, k);
	}
	return arr;
}

static struct json_object *tokens_json(struct crypt_device *cd)
{
	struct json_object *arr = json_object_new_array();

	for (int id = 0; arr && id < crypt_token_max(CRYPT_LUKS2); id++) {
		const char *type, *json;
		struct json_object *t, *slots = json_object_new_array();

		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type) {
			json_object_put(slots);
			continue;
		}
		if (strcmp(type, LR_TOKEN_TYPE) == 0 && crypt_token_json_get(cd, id, &json) >= 0)
			t = describe_lockroot_token(json);
		else
			t = json_object_new_object();
		json_object_object_add(t, "id", json_object_new_int(id));
		json_object_object_add(t, "type", json_object_new_string(type));
		for (int s = 0; s < crypt_keyslot_max(CRYPT_LUKS2); s++)
			if (crypt_token_is_assigned(cd, id, s) == 0)
				json_object_array_add(slots, json_object_new_int(s));
		json_object_object_add(t, "keyslots", slots);
		json_object_array_add(arr, t);
	}
	return arr;
}

int lr_status(const char *device, struct json_object **out)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct json_object *o;
	char cipher[128];
	int r;

	r = lr_luks2_load(device, true, &cd);
	if (r < 0)
		return r;
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	snprintf(cipher, sizeof(cipher), "%s-%s", crypt_get_cipher(cd), crypt_get_cipher_mode(cd));
	json_object_object_add(o, "device", json_object_new_string(device));
	json_object_object_add(o, "type", json_object_new_string(crypt_get_type(cd)));
	json_object_object_add(o, "uuid", json_object_new_string(crypt_get_uuid(cd) ? crypt_get_uuid(cd) : ""));
	json_object_object_add(o, "cipher", json_object_new_string(cipher));
	json_object_object_add(o, "keyslots", keyslots_json(cd));
	json_object_object_add(o, "tokens", tokens_json(cd));
	{
		/* a unit made from a fleet image (lockroot image): how far its provisioning is */
		enum lr_provision_state st;
		int slot;

		if (lr_provision_examine(device, &st, &slot) == 0 && st != LR_PROVISION_NONE)
			json_object_object_add(o, "provisioning", json_object_new_string(lr_provision_state_name(st)));
	}
	*out = o;
	return 0;
}
