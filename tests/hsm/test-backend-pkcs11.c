/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pkcs11 backend against a real SoftHSM2 token (no mocks).
 *   test-backend-pkcs11 MODULE_PATH TOKEN_LABEL PIN_FILE
 * SOFTHSM2_CONF must point at the token's private configuration; the user PIN is in PIN_FILE.
 * Driven by tests/integration/pkcs11-backend.sh.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "lockroot.h"
#include "util.h"

#define OBJ "lockroot-test-key"

static const char *module, *token, *pinfile;
static char last_error[1024];
static int failures;

static void log_hook(int level, const char *msg, void *userdata)
{
	(void)userdata;
	fprintf(stderr, "    log[%d]: %s\n", level, msg);
	if (level >= LR_LOG_ERROR)
		snprintf(last_error, sizeof(last_error), "%s", msg);
}

/* got must be want; when pattern is set, the last error logged must contain it. */
static void expect(const char *what, int got, int want, const char *pattern)
{
	bool ok = got == want && (!pattern || strstr(last_error, pattern));

	printf("%s %s: got %d (%s), want %d (%s)%s%s\n", ok ? "ok  " : "FAIL", what, got,
	       got < 0 ? strerror(-got) : "-", want, want < 0 ? strerror(-want) : "-",
	       pattern ? ", message contains: " : "", pattern ? pattern : "");
	if (!ok)
		failures++;
	last_error[0] = 0;
}

static char *uri_for(const char *tok, const char *obj, bool mod, bool pin_source, const char *pin_value)
{
	char *s = NULL;

	if (asprintf(&s, "pkcs11:token=%s%s%s%s%s%s%s%s%s%s%s", tok, obj ? ";object=" : "", obj ? obj : "",
		     mod || pin_source || pin_value ? "?" : "", mod ? "module-path=" : "", mod ? module : "",
		     mod && (pin_source || pin_value) ? "&" : "", pin_source ? "pin-source=file:" : "",
		     pin_source ? pinfile : "", pin_value ? "pin-value=" : "", pin_value ? pin_value : "") < 0)
		abort();
	return s;
}

/* Our own session on the token, to look at the key the backend created. */
static CK_FUNCTION_LIST *open_token(CK_SESSION_HANDLE *session)
{
	_cleanup_free_ char *uri_s = uri_for(token, NULL, false, false, NULL);
	P11KitUri *uri = p11_kit_uri_new();
	CK_FUNCTION_LIST *m = p11_kit_module_load(module, 0);
	CK_SLOT_ID slots[16];
	CK_ULONG n = LR_ELEMENTSOF(slots);
	CK_TOKEN_INFO ti;

	if (!uri || !m || p11_kit_uri_parse(uri_s, P11_KIT_URI_FOR_TOKEN, uri) != P11_KIT_URI_OK ||
	    p11_kit_module_initialize(m) != CKR_OK || m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		abort();
	for (CK_ULONG i = 0; i < n; i++) {
		if (m->C_GetTokenInfo(slots[i], &ti) != CKR_OK || !p11_kit_uri_match_token_info(uri, &ti))
			continue;
		if (m->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, session) != CKR_OK ||
		    m->C_Login(*session, CKU_USER, (CK_UTF8CHAR *)"1234", 4) != CKR_OK)
			abort();
		p11_kit_uri_free(uri);
		return m;
	}
	abort();
}

static void check_key_attributes(void)
{
	CK_SESSION_HANDLE s;
	CK_FUNCTION_LIST *m = open_token(&s);
	CK_BBOOL extractable = CK_TRUE, sensitive = CK_FALSE;
	CK_BYTE value[64];
	CK_ATTRIBUTE find = { CKA_LABEL, (void *)OBJ, strlen(OBJ) };
	CK_ATTRIBUTE attrs[] = {
		{ CKA_EXTRACTABLE, &extractable, sizeof(extractable) },
		{ CKA_SENSITIVE, &sensitive, sizeof(sensitive) },
	};
	CK_ATTRIBUTE val = { CKA_VALUE, value, sizeof(value) };
	CK_OBJECT_HANDLE k;
	CK_ULONG count = 0;

	if (m->C_FindObjectsInit(s, &find, 1) != CKR_OK || m->C_FindObjects(s, &k, 1, &count) != CKR_OK ||
	    m->C_FindObjectsFinal(s) != CKR_OK)
		abort();
	expect("exactly one key object", (int)count, 1, NULL);
	expect("C_GetAttributeValue EXTRACTABLE/SENSITIVE", (int)m->C_GetAttributeValue(s, k, attrs, 2), CKR_OK, NULL);
	expect("CKA_EXTRACTABLE is false", extractable, CK_FALSE, NULL);
	expect("CKA_SENSITIVE is true", sensitive, CK_TRUE, NULL);
	expect("CKA_VALUE cannot be read", (int)m->C_GetAttributeValue(s, k, &val, 1), CKR_ATTRIBUTE_SENSITIVE, NULL);
	m->C_Logout(s);
	m->C_CloseSession(s);
	p11_kit_module_finalize(m);
	p11_kit_module_release(m);
}

/* Replace a field of obj by a string. */
static void set_field(struct json_object *obj, const char *key, const char *val)
{
	json_object_object_add(obj, key, json_object_new_string(val));
}

/* ciphertext with one bit flipped, and cut short. */
static void check_corrupt(struct json_object *obj, struct lr_hsm *hsm, const uint8_t binding[32])
{
	struct json_object *bad = NULL;
	struct lr_secret *key = NULL;
	_cleanup_free_ uint8_t *ct = NULL;
	_cleanup_free_ char *flipped = NULL, *shorter = NULL;
	size_t len;

	json_object_deep_copy(obj, &bad, NULL);
	if (lr_base64_decode(json_object_get_string(json_object_object_get(obj, "ciphertext")), &ct, &len) < 0)
		abort();
	ct[3] ^= 0x10;
	flipped = lr_base64_encode(ct, len);
	shorter = lr_base64_encode(ct, len - 1);
	set_field(bad, "ciphertext", flipped);
	expect("validate accepts a flipped bit (only the HSM can tell)", lr_backend_pkcs11.validate(bad), 0, NULL);
	expect("unlock: flipped ciphertext bit", lr_backend_pkcs11.unlock(hsm, bad, binding, &key), -EKEYREJECTED,
	       "host binding differs from enrolment");
	set_field(bad, "ciphertext", shorter);
	expect("validate: short ciphertext", lr_backend_pkcs11.validate(bad), -EBADMSG, "\"ciphertext\"");
	expect("unlock: short ciphertext", lr_backend_pkcs11.unlock(hsm, bad, binding, &key), -EBADMSG, NULL);
	set_field(bad, "ciphertext", "not base64!");
	expect("validate: ciphertext not base64", lr_backend_pkcs11.validate(bad), -EBADMSG, NULL);
	json_object_object_add(bad, "ciphertext", json_object_get(json_object_object_get(obj, "ciphertext")));
	json_object_object_add(bad, "iv", json_object_new_int(12));
	expect("validate: iv not a string", lr_backend_pkcs11.validate(bad), -EBADMSG, "\"iv\"");
	set_field(bad, "iv", "AAAA");
	expect("validate: iv of 3 bytes", lr_backend_pkcs11.validate(bad), -EBADMSG, "\"iv\"");
	json_object_object_add(bad, "iv", json_object_get(json_object_object_get(obj, "iv")));
	set_field(bad, "uri", "http://example.com/");
	expect("validate: uri not pkcs11", lr_backend_pkcs11.validate(bad), -EBADMSG, "\"uri\"");
	json_object_object_del(bad, "uri");
	expect("validate: uri missing", lr_backend_pkcs11.validate(bad), -EBADMSG, "\"uri\"");
	set_field(bad, "uri", "pkcs11:object=x");
	set_field(bad, "mechanism", "aes-128-cbc");
	expect("validate: unknown mechanism", lr_backend_pkcs11.validate(bad), -EBADMSG, "mechanism");
	json_object_put(bad);
}

/* Lock, unlock, compare; then the ways unlocking must fail. */
static void check_lock_unlock(struct json_object *obj)
{
	_cleanup_free_ char *good = uri_for(token, OBJ, true, true, NULL);
	_cleanup_free_ char *nopin = uri_for(token, OBJ, true, false, NULL);
	_cleanup_free_ char *notoken = uri_for("no-such-token", OBJ, true, true, NULL);
	_cleanup_free_ char *noobj = uri_for(token, "no-such-key", true, true, NULL);
	_cleanup_free_ char *nomod = uri_for(token, OBJ, false, true, NULL);
	struct lr_secret *key = NULL, *out = NULL, *wrong = lr_secret_dup("0000", 4);
	struct lr_hsm hsm = { .backend = &lr_backend_pkcs11, .config = good };
	uint8_t binding[32], other[32];
	struct json_object *obj2 = json_object_new_object();

	memset(binding, 0xb1, sizeof(binding));
	memcpy(other, binding, sizeof(other));
	other[31] ^= 1;
	if (lr_secret_random(LR_USER_KEY_BYTES, &key) < 0 || !wrong)
		abort();
	expect("lock", lr_backend_pkcs11.lock(&hsm, key, binding, obj), 0, NULL);
	printf("     token data: %s\n", json_object_to_json_string(obj));
	expect("validate", lr_backend_pkcs11.validate(obj), 0, NULL);
	hsm.config = NULL;  /* from here on, the stored URI unless overridden */
	expect("unlock with the stored URI", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), 0, NULL);
	expect("unlocked key equals the locked key", out ? lr_secret_cmp(key, out) : -1, 0, NULL);
	lr_secret_free(out);
	out = NULL;
	expect("unlock: other binding", lr_backend_pkcs11.unlock(&hsm, obj, other, &out), -EKEYREJECTED,
	       "host binding differs from enrolment");
	hsm.pin = wrong;
	expect("unlock: wrong PIN", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENOANO, "PIN wrong");
	hsm.pin = NULL;
	hsm.config = nopin;
	expect("unlock: no PIN at all", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENOANO, "PIN is needed");
	hsm.config = notoken;
	expect("unlock: no such token", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENODEV,
	       "No PKCS#11 token matching");
	expect("probe: no such token", lr_backend_pkcs11.probe(&hsm), -ENODEV, "No PKCS#11 token matching");
	hsm.config = noobj;
	expect("unlock: no such key", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENOKEY, "no-such-key");
	expect("lock: no such key", lr_backend_pkcs11.lock(&hsm, key, binding, obj2), -ENOKEY, NULL);
	hsm.config = nomod;  /* every registered module: softhsm2.module */
	expect("unlock: without module-path", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), 0, NULL);
	expect("unlocked key equals the locked key", out ? lr_secret_cmp(key, out) : -1, 0, NULL);
	hsm.config = NULL;
	check_corrupt(obj, &hsm, binding);
	lr_secret_free(out);
	lr_secret_free(key);
	lr_secret_free(wrong);
	json_object_put(obj2);
}

/* A pin-value in the URI is used, but never stored nor shown. */
static void check_pin_value(void)
{
	_cleanup_free_ char *withpin = uri_for(token, OBJ, true, false, "1234");
	struct json_object *obj = json_object_new_object(), *desc = json_object_new_object();
	struct lr_hsm hsm = { .backend = &lr_backend_pkcs11, .config = withpin };
	struct lr_secret *key = NULL, *out = NULL, *pin = lr_secret_dup("1234", 4);
	uint8_t binding[32] = { 7 };
	const char *stored, *label;

	if (lr_secret_random(LR_USER_KEY_BYTES, &key) < 0 || !pin)
		abort();
	expect("lock with pin-value=", lr_backend_pkcs11.lock(&hsm, key, binding, obj), 0, NULL);
	stored = json_object_get_string(json_object_object_get(obj, "uri"));
	printf("     stored uri: %s\n", stored ? stored : "(none)");
	expect("stored uri has no pin-value", stored && !strstr(stored, "pin-value") && !strstr(stored, "1234"), 1, NULL);
	expect("stored uri keeps module-path", stored && strstr(stored, "module-path=") != NULL, 1, NULL);
	expect("describe", lr_backend_pkcs11.describe(obj, desc), 0, NULL);
	printf("     describe: %s\n", json_object_to_json_string(desc));
	label = json_object_get_string(json_object_object_get(desc, "token"));
	expect("describe: token label", label && !strcmp(label, token), 1, NULL);
	expect("describe: no pin-value", !strstr(json_object_to_json_string(desc), "pin-value"), 1, NULL);
	hsm.config = NULL;
	expect("unlock from stored uri: PIN needed", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENOANO, NULL);
	hsm.pin = pin;
	expect("unlock from stored uri with a PIN", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), 0, NULL);
	expect("unlocked key equals the locked key", out ? lr_secret_cmp(key, out) : -1, 0, NULL);
	lr_secret_free(out);
	lr_secret_free(key);
	lr_secret_free(pin);
	json_object_put(obj);
	json_object_put(desc);
}

static void check_keygen(void)
{
	_cleanup_free_ char *good = uri_for(token, OBJ, true, true, NULL);
	_cleanup_free_ char *noobj = uri_for(token, NULL, true, true, NULL);
	_cleanup_free_ char *badmod = NULL;
	struct lr_hsm hsm = { .backend = &lr_backend_pkcs11, .config = good };

	if (asprintf(&badmod, "pkcs11:token=%s;object=%s?module-path=/nonexistent/libnone.so", token, OBJ) < 0)
		abort();
	expect("probe", lr_backend_pkcs11.probe(&hsm), 0, NULL);
	expect("keygen creates", lr_backend_pkcs11.keygen(&hsm), 1, NULL);
	expect("keygen finds", lr_backend_pkcs11.keygen(&hsm), 0, NULL);
	check_key_attributes();
	hsm.config = noobj;
	expect("keygen: URI without object=", lr_backend_pkcs11.keygen(&hsm), -EINVAL, "object=");
	hsm.config = badmod;
	expect("probe: module that cannot load", lr_backend_pkcs11.probe(&hsm), -ENODEV, "Cannot load");
	hsm.config = (char *)"pkcs11:token=%zz";
	expect("keygen: bad URI", lr_backend_pkcs11.keygen(&hsm), -EINVAL, NULL);
}

/* A key named by label and id, next to the label-only one. */
static void check_id(void)
{
	char *uri = NULL;
	struct lr_hsm hsm = { .backend = &lr_backend_pkcs11 };
	struct json_object *obj = json_object_new_object();
	struct lr_secret *key = NULL, *out = NULL;
	uint8_t binding[32] = { 1 };

	if (asprintf(&uri, "pkcs11:token=%s;object=with-id;id=%%01%%02?module-path=%s&pin-source=file:%s", token,
		     module, pinfile) < 0 || lr_secret_random(LR_USER_KEY_BYTES, &key) < 0)
		abort();
	hsm.config = uri;
	expect("keygen with id=", lr_backend_pkcs11.keygen(&hsm), 1, NULL);
	expect("lock with id=", lr_backend_pkcs11.lock(&hsm, key, binding, obj), 0, NULL);
	hsm.config = NULL;
	expect("unlock with id=", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), 0, NULL);
	expect("unlocked key equals the locked key", out ? lr_secret_cmp(key, out) : -1, 0, NULL);
	lr_secret_free(out);
	lr_secret_free(key);
	json_object_put(obj);
	free(uri);
}

static void check_destroy(struct json_object *obj)
{
	struct lr_hsm hsm = { .backend = &lr_backend_pkcs11 };
	struct lr_secret *out = NULL;
	uint8_t binding[32];

	memset(binding, 0xb1, sizeof(binding));
	expect("destroy", lr_backend_pkcs11.destroy(&hsm, obj), 0, NULL);
	expect("unlock after destroy", lr_backend_pkcs11.unlock(&hsm, obj, binding, &out), -ENOKEY, NULL);
	expect("destroy again", lr_backend_pkcs11.destroy(&hsm, obj), -ENOKEY, NULL);
}

int main(int argc, char **argv)
{
	struct json_object *obj;

	if (argc != 4) {
		fprintf(stderr, "usage: %s MODULE_PATH TOKEN_LABEL PIN_FILE\n", argv[0]);
		return 2;
	}
	module = argv[1];
	token = argv[2];
	pinfile = argv[3];
	lr_set_log(log_hook, NULL);
	obj = json_object_new_object();
	check_keygen();
	check_lock_unlock(obj);
	check_pin_value();
	check_id();
	check_destroy(obj);
	json_object_put(obj);
	printf("%s: %d failure(s)\n", argv[0], failures);
	return failures ? 1 : 0;
}
