/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcryptsetup token plugin for the "lockroot" token type, so that stock
 * `cryptsetup open --token-only` and systemd-cryptsetup unlock a lockroot volume.
 * A thin caller of liblockroot: all the work is lr_token_unlock().
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libcryptsetup.h>

#include "lockroot.h"
#include "util.h"

/* The token ABI (libcryptsetup.h has only the function types). */
int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len,
			  void *usrptr);
int cryptsetup_token_open_pin(struct crypt_device *cd, int token, const char *pin, size_t pin_size,
			      char **buffer, size_t *buffer_len, void *usrptr);
void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len);
int cryptsetup_token_validate(struct crypt_device *cd, const char *json);
void cryptsetup_token_dump(struct crypt_device *cd, const char *json);
const char *cryptsetup_token_version(void);

/* The device whose call is running: library messages go to its log. crypt_logf() ends
 * error and debug messages with a newline itself, normal ones not. */
static _Thread_local struct crypt_device *log_cd;

static void log_to_cryptsetup(int level, const char *msg, void *userdata)
{
	(void)userdata;
	switch (level) {
	case LR_LOG_DEBUG:
		crypt_logf(log_cd, CRYPT_LOG_DEBUG, "lockroot: %s", msg);
		break;
	case LR_LOG_INFO:
		crypt_logf(log_cd, CRYPT_LOG_NORMAL, "lockroot: %s\n", msg);
		break;
	default:
		crypt_logf(log_cd, CRYPT_LOG_ERROR, "lockroot: %s", msg);
		break;
	}
}

static void log_begin(struct crypt_device *cd)
{
	log_cd = cd;
	lr_set_log(log_to_cryptsetup, NULL);
}

static void log_end(void)
{
	log_cd = NULL;
}

/* libcryptsetup goes on to the next token only for -EAGAIN, -EPERM, -ENOANO (and -ENOENT);
 * 2.6 itself turns an external token's -EPERM and -EINVAL into -ENOENT. */
static int token_errno(int r)
{
	switch (r) {
	case -ENODEV:
		return -EAGAIN;
	case -EKEYREJECTED:
	case -ENOKEY:
		return -EPERM;
	case -ENOANO:
		return -ENOANO;
	default:
		return -EINVAL;
	}
}

/* The passphrase handed to libcryptsetup: its own locked mapping, not in core dumps,
 * wiped and unmapped by cryptsetup_token_buffer_free(). */
static size_t buffer_map_size(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (len / page + 1) * page;
}

static int buffer_from_secret(const struct lr_secret *s, char **buffer, size_t *buffer_len)
{
	size_t size = buffer_map_size(s->len);
	void *p;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	(void)mlock(p, size);
	(void)madvise(p, size, MADV_DONTDUMP);
	(void)madvise(p, size, MADV_WIPEONFORK);
	memcpy(p, s->data, s->len);
	*buffer = p;
	*buffer_len = s->len;
	return 0;
}

void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len)
{
	size_t size = buffer_map_size(buffer_len);

	if (!buffer)
		return;
	explicit_bzero(buffer, size);
	munlock(buffer, size);
	munmap(buffer, size);
}

int cryptsetup_token_open_pin(struct crypt_device *cd, int token, const char *pin, size_t pin_size,
			      char **buffer, size_t *buffer_len, void *usrptr)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	_cleanup_secret_ struct lr_secret *pin_secret = NULL;
	struct lr_hsm override = { 0 };
	const char *json = NULL, *device;
	int r;

	(void)usrptr;
	log_begin(cd);
	r = crypt_token_json_get(cd, token, &json);
	if (r < 0) {
		lr_error("cannot read LUKS2 token %d: %s", token, strerror(-r));
		r = -EINVAL;
		goto out;
	}
	device = crypt_get_device_name(cd);
	if (pin) {
		pin_secret = lr_secret_dup(pin, pin_size);
		if (!pin_secret) {
			r = -ENOMEM;
			goto out;
		}
		override.pin = pin_secret;
	}
	r = lr_token_unlock(json, device, pin ? &override : NULL, &pass, NULL);
	if (r < 0) {
		lr_debug("token %d on %s: %s", token, device ? device : "?", strerror(-r));
		r = token_errno(r);
		goto out;
	}
	r = buffer_from_secret(pass, buffer, buffer_len);
out:
	log_end();
	return r;
}

int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len,
			  void *usrptr)
{
	return cryptsetup_token_open_pin(cd, token, NULL, 0, buffer, buffer_len, usrptr);
}

int cryptsetup_token_validate(struct crypt_device *cd, const char *json)
{
	const struct lr_backend *b;
	struct lr_token t;
	int r;

	log_begin(cd);
	r = lr_token_parse(json, &t);
	if (r < 0)
		goto out;
	b = lr_backend_find(t.backend);
	if (!b) {
		r = lr_error_code(-EINVAL, "the lockroot token uses the %s backend, which this plugin does not have",
				  t.backend);
		goto out;
	}
	r = b->validate ? b->validate(t.backend_data) : 0;
out:
	lr_token_done(&t);
	log_end();
	return r < 0 ? -EINVAL : 0;
}

static void dump_field(struct crypt_device *cd, const char *key, const char *value)
{
	char label[32];

	snprintf(label, sizeof(label), "%s:", key);
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\t%-11s %s\n", label, value);
}

/* Defence in depth: describe() returns no secrets, and these names are never shown anyway. */
static int is_secret_field(const char *key)
{
	static const char *const names[] = { "blob", "private", "ciphertext", "iv", "tag", "pin", "key" };

	for (size_t i = 0; i < LR_ELEMENTSOF(names); i++)
		if (strcmp(key, names[i]) == 0)
			return 1;
	return 0;
}

/* A describe() value: a string, or an array shown as "a, b, c". */
static void dump_value(struct crypt_device *cd, const char *key, struct json_object *v)
{
	char line[512] = "";
	size_t n;

	if (!json_object_is_type(v, json_type_array)) {
		dump_field(cd, key, json_object_get_string(v));
		return;
	}
	n = json_object_array_length(v);
	if (n == 0) {
		dump_field(cd, key, "none");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		size_t used = strlen(line);

		snprintf(line + used, sizeof(line) - used, "%s%s", i ? ", " : "",
			 json_object_get_string(json_object_array_get_idx(v, i)));
	}
	dump_field(cd, key, line);
}

static void dump_bind(struct crypt_device *cd, uint32_t mask)
{
	char line[128] = "";

	for (int i = 0; i < LR_COMP_MAX; i++) {
		size_t used = strlen(line);

		if (mask & (1u << i))
			snprintf(line + used, sizeof(line) - used, "%s%s", used ? ", " : "", lr_component_name(i));
	}
	dump_field(cd, "bound to", mask ? line : "nothing (any host)");
}

static void dump_backend(struct crypt_device *cd, const struct lr_token *t)
{
	const struct lr_backend *b = lr_backend_find(t->backend);
	struct json_object *out;

	if (!b || !b->describe) {
		dump_field(cd, "note", "backend not built into this plugin");
		return;
	}
	out = json_object_new_object();
	if (out && b->describe(t->backend_data, out) >= 0) {
		json_object_object_foreach(out, key, v) {
			if (!is_secret_field(key))
				dump_value(cd, key, v);
		}
	}
	json_object_put(out);
}

void cryptsetup_token_dump(struct crypt_device *cd, const char *json)
{
	struct lr_token t;
	char version[16];
	int r;

	log_begin(cd);
	r = lr_token_parse(json, &t);
	if (r < 0) {
		dump_field(cd, "error", "corrupt or unsupported lockroot token");
		goto out;
	}
	snprintf(version, sizeof(version), "%d", t.version);
	dump_field(cd, "version", version);
	dump_field(cd, "backend", t.backend);
	dump_bind(cd, t.bind_mask);
	dump_backend(cd, &t);
out:
	lr_token_done(&t);
	log_end();
}

const char *cryptsetup_token_version(void)
{
	/* libcryptsetup prints "lockroot-<this>": the version alone, as its header asks. */
	return LOCKROOT_VERSION;
}
