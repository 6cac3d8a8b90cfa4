/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "log.h"
#include "token.h"
#include "util.h"

static int bad(const char *field, const char *why)
{
	return lr_error_code(-EBADMSG, "lockroot token is corrupt: %s %s", field, why);
}

static int parse_keyslot(struct json_object *root, struct lr_token *t)
{
	struct json_object *ks, *k;
	const char *s;
	char *end;
	long v;

	if (!json_object_object_get_ex(root, "keyslots", &ks) || !json_object_is_type(ks, json_type_array))
		return bad("\"keyslots\"", "is missing");
	/* Two while the volume is re-encrypted to a new volume key (lockroot image
	 * --unique-volume-key): the same key opens one keyslot for each volume key. */
	if (json_object_array_length(ks) != 1 && json_object_array_length(ks) != 2)
		return bad("\"keyslots\"", "must name one keyslot (two while re-encrypting)");
	for (size_t i = json_object_array_length(ks); i-- > 0;) {
		k = json_object_array_get_idx(ks, i);
		if (!json_object_is_type(k, json_type_string))
			return bad("\"keyslots\"", "is not a list of strings");
		s = json_object_get_string(k);
		errno = 0;
		v = strtol(s, &end, 10);
		if (errno || end == s || *end || v < 0 || v > 31)
			return bad("\"keyslots\"", "names no valid keyslot");
		t->keyslot = (int)v; /* the first */
	}
	return 0;
}

static int parse_bind(struct json_object *root, struct lr_token *t)
{
	struct json_object *bind, *salt;
	uint8_t *raw = NULL;
	size_t n = 0, len;

	if (!json_object_object_get_ex(root, "bind", &bind) || !json_object_is_type(bind, json_type_array))
		return bad("\"bind\"", "is missing");
	len = json_object_array_length(bind);
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(bind, i), *name, *check;
		const char *c;
		int id;

		if (!json_object_is_type(e, json_type_object) ||
		    !json_object_object_get_ex(e, "name", &name) || !json_object_is_type(name, json_type_string) ||
		    !json_object_object_get_ex(e, "check", &check) || !json_object_is_type(check, json_type_string))
			return bad("\"bind\"", "entry needs \"name\" and \"check\" strings");
		id = lr_component_from_name(json_object_get_string(name));
		if (id < 0)
			return bad("\"bind\"", "names an unknown component");
		c = json_object_get_string(check);
		if (strlen(c) != 4 || strspn(c, "0123456789abcdef") != 4)
			return bad("\"bind\"", "check is not 4 hex digits");
		t->bind_mask |= 1u << id;
		memcpy(t->bind_check[id], c, 5);
	}
	if (!json_object_object_get_ex(root, "bind_salt", &salt) || !json_object_is_type(salt, json_type_string))
		return bad("\"bind_salt\"", "is missing");
	if (lr_base64_decode(json_object_get_string(salt), &raw, &n) < 0 || n != sizeof(t->bind_salt)) {
		free(raw);
		return bad("\"bind_salt\"", "is not 16 bytes of base64");
	}
	memcpy(t->bind_salt, raw, n);
	free(raw);
	return 0;
}

static int parse_boot_files(struct json_object *root, struct lr_token *t)
{
	struct json_object *bf, *dev, *files;
	int r;

	if (!json_object_object_get_ex(root, "boot_files", &bf)) {
		if (t->bind_mask & (1u << LR_COMP_BOOT_FILES))
			return bad("\"boot_files\"", "is missing, and \"bind\" names boot-files");
		return 0;
	}
	if (!(t->bind_mask & (1u << LR_COMP_BOOT_FILES)))
		return bad("\"boot_files\"", "is there, but \"bind\" does not name boot-files");
	if (!json_object_is_type(bf, json_type_object) || !json_object_object_get_ex(bf, "device", &dev) ||
	    !json_object_is_type(dev, json_type_string) || !*json_object_get_string(dev) ||
	    !json_object_object_get_ex(bf, "files", &files))
		return bad("\"boot_files\"", "needs a \"device\" and \"files\"");
	t->boot_spec = strdup(json_object_get_string(dev));
	if (!t->boot_spec)
		return -ENOMEM;
	r = lr_bootfiles_from_json(files, &t->boot_files);
	return r;
}

static int parse_root(struct json_object *root, struct lr_token *t)
{
	struct json_object *o;
	int64_t v;
	int r;

	if (!json_object_is_type(root, json_type_object))
		return bad("JSON", "is not an object");
	if (!json_object_object_get_ex(root, "type", &o) || !json_object_is_type(o, json_type_string))
		return bad("\"type\"", "is missing");
	if (strcmp(json_object_get_string(o), LR_TOKEN_TYPE) != 0)
		return -EMEDIUMTYPE;
	if (!json_object_object_get_ex(root, "lockroot_version", &o) || !json_object_is_type(o, json_type_int))
		return bad("\"lockroot_version\"", "is missing");
	v = json_object_get_int64(o);
	if (v < 1)
		return bad("\"lockroot_version\"", "is not a version");
	if (v > LR_TOKEN_VERSION)
		return lr_error_code(-EPROTONOSUPPORT,
				     "the lockroot token has version %lld, newer than this lockroot understands (%d): "
				     "update lockroot, or use the recovery key", (long long)v, LR_TOKEN_VERSION);
	t->version = (int)v;
	r = parse_keyslot(root, t);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(root, "backend", &o) || !json_object_is_type(o, json_type_string) ||
	    strlen(json_object_get_string(o)) >= sizeof(t->backend) || !*json_object_get_string(o))
		return bad("\"backend\"", "is missing");
	strcpy(t->backend, json_object_get_string(o));
	r = parse_bind(root, t);
	if (r < 0)
		return r;
	r = parse_boot_files(root, t);
	if (r < 0)
		return r;
	/* The backend's own object is named after it: "tpm2": {...}. Its fields are checked by
	 * the backend's validate op. */
	if (!json_object_object_get_ex(root, t->backend, &o) || !json_object_is_type(o, json_type_object))
		return bad("backend object", "is missing");
	t->backend_data = json_object_get(o);
	return 0;
}

int lr_token_parse(const char *json, struct lr_token *t)
{
	struct json_tokener *tok;
	struct json_object *root;
	int r;

	memset(t, 0, sizeof(*t));
	t->keyslot = -1;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, json, -1);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)strlen(json)) {
		json_object_put(root);
		json_tokener_free(tok);
		return bad("JSON", "does not parse");
	}
	json_tokener_free(tok);
	r = parse_root(root, t);
	json_object_put(root);
	if (r < 0)
		lr_token_done(t);
	return r;
}

int lr_token_format(const struct lr_token *t, char **json)
{
	struct json_object *root = json_object_new_object(), *ks = json_object_new_array(),
			   *bind = json_object_new_array();
	char slot[16];
	char *salt = lr_base64_encode(t->bind_salt, sizeof(t->bind_salt));
	int r = -ENOMEM;

	if (!root || !ks || !bind || !salt || !t->backend_data)
		goto out;
	snprintf(slot, sizeof(slot), "%d", t->keyslot);
	json_object_array_add(ks, json_object_new_string(slot));
	for (int i = 0; i < LR_COMP_MAX; i++) {
		struct json_object *e;

		if (!(t->bind_mask & (1u << i)))
			continue;
		e = json_object_new_object();
		json_object_object_add(e, "name", json_object_new_string(lr_component_name(i)));
		json_object_object_add(e, "check", json_object_new_string(t->bind_check[i]));
		json_object_array_add(bind, e);
	}
	json_object_object_add(root, "type", json_object_new_string(LR_TOKEN_TYPE));
	json_object_object_add(root, "keyslots", ks);
	ks = NULL;
	json_object_object_add(root, "lockroot_version",
			       json_object_new_int(t->bind_mask & (1u << LR_COMP_BOOT_FILES) ? 2 : 1));
	json_object_object_add(root, "backend", json_object_new_string(t->backend));
	json_object_object_add(root, "bind", bind);
	bind = NULL;
	json_object_object_add(root, "bind_salt", json_object_new_string(salt));
	if (t->bind_mask & (1u << LR_COMP_BOOT_FILES)) {
		struct json_object *bf = json_object_new_object(), *files = lr_bootfiles_to_json(&t->boot_files);

		if (!bf || !files || !t->boot_spec) {
			json_object_put(bf);
			json_object_put(files);
			goto out;
		}
		json_object_object_add(bf, "device", json_object_new_string(t->boot_spec));
		json_object_object_add(bf, "files", files);
		json_object_object_add(root, "boot_files", bf);
	}
	json_object_object_add(root, t->backend, json_object_get(t->backend_data));
	*json = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	r = *json ? 0 : -ENOMEM;
out:
	free(salt);
	json_object_put(ks);
	json_object_put(bind);
	json_object_put(root);
	return r;
}

void lr_token_done(struct lr_token *t)
{
	json_object_put(t->backend_data);
	t->backend_data = NULL;
	free(t->boot_spec);
	t->boot_spec = NULL;
	lr_bootfiles_done(&t->boot_files);
}
