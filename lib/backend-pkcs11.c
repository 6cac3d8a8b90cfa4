/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PKCS#11 backend. The user key is encrypted with AES-256-GCM by a non-extractable secret
 * key that never leaves the token; the host binding digest is the associated data, so the
 * token itself refuses (the tag does not verify) on any other host. Token and key are named
 * by an RFC 7512 URI; modules are loaded through p11-kit.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>

#include <json-c/json.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "backend.h"
#include "lockroot.h"
#include "log.h"
#include "secret.h"
#include "util.h"

#define P11_IV_BYTES 12
#define P11_TAG_BYTES 16
#define P11_CT_BYTES (LR_USER_KEY_BYTES + P11_TAG_BYTES)
#define P11_MECHANISM "aes-256-gcm"
#define P11_PIN_MAX 256

/* One open token: the parsed URI, the modules we loaded, and our session on the token. */
struct p11 {
	P11KitUri *uri;              /* pin-value removed right after parsing */
	char *safe_uri;              /* the URI without pin-value: for messages and the token */
	struct lr_secret *uri_pin;   /* pin-value= from the URI, if any */
	CK_FUNCTION_LIST **modules;  /* registered modules (no module-path) */
	CK_FUNCTION_LIST *module;    /* loaded from module-path */
	bool module_initialized;
	CK_FUNCTION_LIST *fn;        /* the module that holds the token */
	CK_SLOT_ID slot;
	CK_TOKEN_INFO token;
	CK_SESSION_HANDLE session;
	bool have_session;
	bool logged_in;
};

static int ckr_errno(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_HOST_MEMORY:
		return -ENOMEM;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_SLOT_ID_INVALID:
		return -ENODEV;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
	case CKR_USER_NOT_LOGGED_IN:
		return -ENOANO;
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return -ENOKEY;
	default:
		return -EIO;
	}
}

/* What modules return when the GCM tag does not verify: SoftHSM2 2.6 says CKR_GENERAL_ERROR,
 * others CKR_ENCRYPTED_DATA_INVALID or, since PKCS#11 3.0, CKR_AEAD_DECRYPT_FAILED. */
static bool ckr_tag_failure(CK_RV rv)
{
#ifdef CKR_AEAD_DECRYPT_FAILED
	if (rv == CKR_AEAD_DECRYPT_FAILED)  /* PKCS#11 3.0 */
		return true;
#endif
	return rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED ||
	       rv == CKR_DATA_INVALID;
}

static void p11_close(struct p11 *p)
{
	/* Only log out what we logged in: CKR_USER_ALREADY_LOGGED_IN means someone else's login. */
	if (p->logged_in)
		(void)p->fn->C_Logout(p->session);
	if (p->have_session)
		(void)p->fn->C_CloseSession(p->session);
	if (p->module) {
		if (p->module_initialized)
			(void)p11_kit_module_finalize(p->module);
		p11_kit_module_release(p->module);
	}
	if (p->modules)
		p11_kit_modules_finalize_and_release(p->modules);
	free(p->safe_uri);
	lr_secret_free(p->uri_pin);
	if (p->uri)
		p11_kit_uri_free(p->uri);
	memset(p, 0, sizeof(*p));
}

/* Parse; move any pin-value out of the URI into a secret, and keep a printable copy. */
static int p11_parse(const char *s, struct p11 *p)
{
	const char *pv;
	int k;

	p->uri = p11_kit_uri_new();
	if (!p->uri)
		return -ENOMEM;
	/* Never echo s: it may hold a pin-value. */
	k = p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, p->uri);
	if (k != P11_KIT_URI_OK)
		return lr_error_code(-EINVAL, "Not a valid PKCS#11 URI (RFC 7512, \"pkcs11:token=...;object=...\"): %s",
				     p11_kit_uri_message(k));
	pv = p11_kit_uri_get_pin_value(p->uri);
	if (pv) {
		p->uri_pin = lr_secret_dup(pv, strlen(pv));
		if (!p->uri_pin)
			return -ENOMEM;
		/* p11-kit frees it without wiping; the string is its own malloc'd copy. */
		explicit_bzero((char *)pv, strlen(pv));
		p11_kit_uri_set_pin_value(p->uri, NULL);
	}
	k = p11_kit_uri_format(p->uri, P11_KIT_URI_FOR_ANY, &p->safe_uri);
	if (k != P11_KIT_URI_OK)
		return lr_error_code(-EINVAL, "Cannot format the PKCS#11 URI: %s", p11_kit_uri_message(k));
	return 0;
}

/* 1 and p->fn/slot/token set when module m has a token matching the URI, 0 when not. */
static int p11_find_token_in(struct p11 *p, CK_FUNCTION_LIST *m)
{
	_cleanup_free_ CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_INFO info;
	CK_RV rv;

	if (m->C_GetInfo(&info) != CKR_OK || !p11_kit_uri_match_module_info(p->uri, &info))
		return 0;
	rv = m->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv != CKR_OK || n == 0)
		return 0;
	slots = calloc(n, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	if (m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return 0;
	for (i = 0; i < n; i++) {
		CK_SLOT_INFO si;

		if (m->C_GetSlotInfo(slots[i], &si) != CKR_OK || !p11_kit_uri_match_slot_info(p->uri, &si))
			continue;
		if (p11_kit_uri_get_slot_id(p->uri) != (CK_SLOT_ID)-1 && p11_kit_uri_get_slot_id(p->uri) != slots[i])
			continue;
		if (m->C_GetTokenInfo(slots[i], &p->token) != CKR_OK ||
		    !p11_kit_uri_match_token_info(p->uri, &p->token))
			continue;
		p->fn = m;
		p->slot = slots[i];
		return 1;
	}
	return 0;
}

/* Load the module of module-path=, or every registered one, and find the token. */
static int p11_load(struct p11 *p)
{
	const char *path = p11_kit_uri_get_module_path(p->uri);
	const char *name = p11_kit_uri_get_module_name(p->uri);
	CK_RV rv;
	int r = 0;

	if (path) {
		p->module = p11_kit_module_load(path, 0);
		if (!p->module)
			return lr_error_code(-ENODEV, "Cannot load PKCS#11 module %s: %s", path,
					     p11_kit_message() ? p11_kit_message() : "unknown error");
		rv = p11_kit_module_initialize(p->module);
		if (rv != CKR_OK)
			return lr_error_code(-ENODEV, "Cannot initialise PKCS#11 module %s: %s", path,
					     p11_kit_strerror(rv));
		p->module_initialized = true;
		r = p11_find_token_in(p, p->module);
	} else {
		p->modules = p11_kit_modules_load_and_initialize(0);
		if (!p->modules)
			return lr_error_code(-ENODEV, "Cannot load the registered PKCS#11 modules: %s",
					     p11_kit_message() ? p11_kit_message() : "unknown error");
		for (CK_FUNCTION_LIST **m = p->modules; *m && r == 0; m++) {
			_cleanup_free_ char *mname = name ? p11_kit_module_get_name(*m) : NULL;

			if (name && (!mname || strcmp(mname, name) != 0))
				continue;
			r = p11_find_token_in(p, *m);
		}
	}
	if (r < 0)
		return r;
	if (r == 0)
		return lr_error_code(-ENODEV, "No PKCS#11 token matching %s; is the HSM plugged in? "
				     "(p11-kit list-modules shows the tokens)", p->safe_uri);
	return 0;
}

/* The PIN: the caller's, else pin-source=file:PATH, else pin-value=. *out NULL if none. */
static int p11_pin(struct p11 *p, const struct lr_secret *given, struct lr_secret **out)
{
	const char *src = p11_kit_uri_get_pin_source(p->uri);
	int r;

	*out = NULL;
	if (given) {
		*out = lr_secret_dup(given->data, given->len);
		return *out ? 0 : -ENOMEM;
	}
	if (src) {
		if (strncmp(src, "file://", 7) == 0)
			src += 7;
		else if (strncmp(src, "file:", 5) == 0)
			src += 5;
		else if (src[0] != '/')
			return lr_error_code(-EINVAL, "Unsupported pin-source \"%s\": use pin-source=file:PATH", src);
		r = lr_secret_read_file(src, P11_PIN_MAX, out);
		if (r < 0)
			return lr_error_code(-ENOANO, "Cannot read the PIN for token %s from %s: %s",
					     p->safe_uri, src, strerror(-r));
		/* A PIN file written by echo ends in a newline that is not part of the PIN. */
		if ((*out)->len > 0 && (*out)->data[(*out)->len - 1] == '\n')
			(*out)->data[--(*out)->len] = 0;
		return 0;
	}
	if (p->uri_pin) {
		*out = lr_secret_dup(p->uri_pin->data, p->uri_pin->len);
		return *out ? 0 : -ENOMEM;
	}
	return 0;
}

static int p11_login(struct p11 *p, const struct lr_secret *given)
{
	_cleanup_secret_ struct lr_secret *pin = NULL;
	CK_RV rv;
	int r;

	r = p11_pin(p, given, &pin);
	if (r < 0)
		return r;
	if (!pin && (p->token.flags & CKF_PROTECTED_AUTHENTICATION_PATH))
		rv = p->fn->C_Login(p->session, CKU_USER, NULL, 0);  /* PIN pad on the reader */
	else if (!pin && (p->token.flags & CKF_LOGIN_REQUIRED))
		return lr_error_code(-ENOANO, "A PIN is needed for token %s: pass one, or add "
				     "pin-source=file:PATH to the URI", p->safe_uri);
	else if (!pin)
		return 0;
	else
		rv = p->fn->C_Login(p->session, CKU_USER, pin->data, pin->len);
	if (rv == CKR_OK)
		p->logged_in = true;
	else if (rv == CKR_PIN_LOCKED)
		return lr_error_code(-ENOANO, "The PIN of token %s is locked (too many wrong PINs); "
				     "unlock it with the SO PIN", p->safe_uri);
	else if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE)
		return lr_error_code(-ENOANO, "PIN wrong for token %s (%s)", p->safe_uri, p11_kit_strerror(rv));
	else if (rv != CKR_USER_ALREADY_LOGGED_IN)
		return lr_error_code(ckr_errno(rv), "Cannot log in to token %s: %s", p->safe_uri,
				     p11_kit_strerror(rv));
	return 0;
}

/* Load, find the token, open a session and (when login) log in. */
static int p11_connect(struct p11 *p, const struct lr_hsm *hsm, bool rw, bool login)
{
	CK_FLAGS flags = CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0);
	CK_RV rv;
	int r;

	r = p11_load(p);
	if (r < 0)
		return r;
	if (!login)
		return 0;
	rv = p->fn->C_OpenSession(p->slot, flags, NULL, NULL, &p->session);
	if (rv != CKR_OK)
		return lr_error_code(ckr_errno(rv), "Cannot open a session on token %s: %s", p->safe_uri,
				     p11_kit_strerror(rv));
	p->have_session = true;
	return p11_login(p, hsm ? hsm->pin : NULL);
}

/* Parse and connect. p11_close() on every path, also after a failure. */
static int p11_open(const char *uri, const struct lr_hsm *hsm, bool rw, bool login, struct p11 *p)
{
	int r;

	r = p11_parse(uri, p);
	if (r < 0)
		return r;
	return p11_connect(p, hsm, rw, login);
}

/* The AES key named by object= (and id=). -ENOKEY when absent (logged if must_exist),
 * -EINVAL when ambiguous. */
static int p11_find_key(struct p11 *p, bool must_exist, CK_OBJECT_HANDLE *key)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ATTRIBUTE t[4] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
	};
	CK_ATTRIBUTE *label = p11_kit_uri_get_attribute(p->uri, CKA_LABEL);
	CK_ATTRIBUTE *id = p11_kit_uri_get_attribute(p->uri, CKA_ID);
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 2, count = 0;
	CK_RV rv;

	if (!label)
		return lr_error_code(-EINVAL, "The PKCS#11 URI %s names no key: add object=LABEL", p->safe_uri);
	t[n++] = *label;
	if (id)
		t[n++] = *id;
	rv = p->fn->C_FindObjectsInit(p->session, t, n);
	if (rv == CKR_OK) {
		rv = p->fn->C_FindObjects(p->session, found, LR_ELEMENTSOF(found), &count);
		(void)p->fn->C_FindObjectsFinal(p->session);
	}
	if (rv != CKR_OK)
		return lr_error_code(ckr_errno(rv), "Cannot search token %s: %s", p->safe_uri, p11_kit_strerror(rv));
	if (count == 0 && !must_exist)
		return -ENOKEY;
	if (count == 0)
		return lr_error_code(-ENOKEY, "No AES key \"%.*s\" in token %s (was it destroyed, or never created?)",
				     (int)label->ulValueLen, (const char *)label->pValue, p->safe_uri);
	if (count > 1)
		return lr_error_code(-EINVAL, "Several AES keys \"%.*s\" in token %s: add id= to the URI",
				     (int)label->ulValueLen, (const char *)label->pValue, p->safe_uri);
	*key = found[0];
	return 0;
}

static CK_RV p11_gcm_init(struct p11 *p, bool encrypt, CK_OBJECT_HANDLE key,
			  const uint8_t iv[P11_IV_BYTES], const uint8_t binding[32])
{
	CK_BYTE iv_copy[P11_IV_BYTES], aad[32];
	CK_GCM_PARAMS gcm = {
		.pIv = iv_copy, .ulIvLen = P11_IV_BYTES, .ulIvBits = P11_IV_BYTES * 8,
		.pAAD = aad, .ulAADLen = sizeof(aad), .ulTagBits = P11_TAG_BYTES * 8,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };

	/* Copies: the API takes non-const pointers. */
	memcpy(iv_copy, iv, P11_IV_BYTES);
	memcpy(aad, binding, sizeof(aad));
	return encrypt ? p->fn->C_EncryptInit(p->session, &mech, key) :
			 p->fn->C_DecryptInit(p->session, &mech, key);
}

static int json_add_string(struct json_object *obj, const char *key, const char *val)
{
	struct json_object *v = val ? json_object_new_string(val) : NULL;

	if (!v || json_object_object_add(obj, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int json_add_base64(struct json_object *obj, const char *key, const uint8_t *data, size_t len)
{
	_cleanup_free_ char *b64 = lr_base64_encode(data, len);

	return json_add_string(obj, key, b64);
}

static int p11_lock(const struct lr_hsm *hsm, const struct lr_secret *key,
		    const uint8_t binding[32], struct json_object *obj)
{
	struct p11 p = { 0 };
	uint8_t iv[P11_IV_BYTES], ct[P11_CT_BYTES];
	CK_ULONG ct_len = sizeof(ct);
	CK_OBJECT_HANDLE k;
	CK_RV rv;
	int r;

	if (!hsm->config || key->len != LR_USER_KEY_BYTES)
		return lr_error_code(-EINVAL, "pkcs11: a URI and a %d-byte key are needed to lock",
				     LR_USER_KEY_BYTES);
	if (getrandom(iv, sizeof(iv), 0) != (ssize_t)sizeof(iv))
		return lr_error_code(-EIO, "Cannot get random bytes for the IV: %s", strerror(errno));
	r = p11_open(hsm->config, hsm, false, true, &p);
	if (r < 0)
		goto out;
	r = p11_find_key(&p, true, &k);
	if (r < 0)
		goto out;
	rv = p11_gcm_init(&p, true, k, iv, binding);
	if (rv == CKR_OK)
		rv = p.fn->C_Encrypt(p.session, key->data, key->len, ct, &ct_len);
	if (rv != CKR_OK) {
		r = lr_error_code(ckr_errno(rv), "Token %s cannot encrypt with AES-256-GCM: %s", p.safe_uri,
				  p11_kit_strerror(rv));
		goto out;
	}
	if (ct_len != P11_CT_BYTES) {
		r = lr_error_code(-EIO, "Token %s returned %lu bytes of AES-GCM output, expected %d", p.safe_uri,
				  (unsigned long)ct_len, P11_CT_BYTES);
		goto out;
	}
	r = json_add_string(obj, "uri", p.safe_uri);
	if (r >= 0)
		r = json_add_base64(obj, "iv", iv, sizeof(iv));
	if (r >= 0)
		r = json_add_base64(obj, "ciphertext", ct, sizeof(ct));
	if (r >= 0)
		r = json_add_string(obj, "mechanism", P11_MECHANISM);
out:
	p11_close(&p);
	return r;
}

static int field_string(struct json_object *obj, const char *key, const char **out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return lr_error_code(-EBADMSG, "pkcs11 token data: \"%s\" is missing or not a string", key);
	*out = json_object_get_string(v);
	return 0;
}

static int field_base64(struct json_object *obj, const char *key, uint8_t *out, size_t want)
{
	_cleanup_free_ uint8_t *buf = NULL;
	const char *s;
	size_t len;
	int r;

	r = field_string(obj, key, &s);
	if (r < 0)
		return r;
	if (lr_base64_decode(s, &buf, &len) < 0 || len != want)
		return lr_error_code(-EBADMSG, "pkcs11 token data: \"%s\" is not %zu bytes of base64", key, want);
	memcpy(out, buf, want);
	return 0;
}

/* Every field of the token data; uri/iv/ct may be NULL when not wanted. -EBADMSG. */
static int blob_parse(struct json_object *obj, const char **uri, uint8_t *iv, uint8_t *ct)
{
	uint8_t iv_buf[P11_IV_BYTES], ct_buf[P11_CT_BYTES];
	P11KitUri *u = NULL;
	const char *s, *mech;
	int r;

	if (!obj || !json_object_is_type(obj, json_type_object))
		return lr_error_code(-EBADMSG, "pkcs11 token data is not a JSON object");
	r = field_string(obj, "mechanism", &mech);
	if (r < 0)
		return r;
	if (strcmp(mech, P11_MECHANISM) != 0)
		return lr_error_code(-EBADMSG, "pkcs11 token data: unsupported \"mechanism\" \"%s\"", mech);
	r = field_base64(obj, "iv", iv ? iv : iv_buf, P11_IV_BYTES);
	if (r < 0)
		return r;
	r = field_base64(obj, "ciphertext", ct ? ct : ct_buf, P11_CT_BYTES);
	if (r < 0)
		return r;
	r = field_string(obj, "uri", &s);
	if (r < 0)
		return r;
	u = p11_kit_uri_new();
	if (!u)
		return -ENOMEM;
	if (p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, u) != P11_KIT_URI_OK || !p11_kit_uri_get_attribute(u, CKA_LABEL))
		r = lr_error_code(-EBADMSG, "pkcs11 token data: \"uri\" is not a PKCS#11 URI with object=");
	p11_kit_uri_free(u);
	if (r >= 0 && uri)
		*uri = s;
	return r;
}

static int p11_unlock(const struct lr_hsm *hsm, struct json_object *obj,
		      const uint8_t binding[32], struct lr_secret **key)
{
	_cleanup_secret_ struct lr_secret *s = NULL;
	struct p11 p = { 0 };
	uint8_t iv[P11_IV_BYTES], ct[P11_CT_BYTES];
	const char *uri;
	CK_OBJECT_HANDLE k;
	CK_ULONG len;
	CK_RV rv;
	int r;

	r = blob_parse(obj, &uri, iv, ct);
	if (r < 0)
		return r;
	s = lr_secret_new(P11_CT_BYTES);
	if (!s)
		return -ENOMEM;
	r = p11_open(hsm && hsm->config ? hsm->config : uri, hsm, false, true, &p);
	if (r < 0)
		goto out;
	r = p11_find_key(&p, true, &k);
	if (r < 0)
		goto out;
	rv = p11_gcm_init(&p, false, k, iv, binding);
	if (rv != CKR_OK) {
		r = lr_error_code(ckr_errno(rv), "Token %s cannot decrypt with AES-256-GCM: %s", p.safe_uri,
				  p11_kit_strerror(rv));
		goto out;
	}
	/* Straight into the secret's own buffer (its capacity exceeds the ciphertext length). */
	len = s->cap;
	rv = p.fn->C_Decrypt(p.session, ct, sizeof(ct), s->data, &len);
	if (ckr_tag_failure(rv)) {
		r = lr_error_code(-EKEYREJECTED, "The HSM refused: host binding differs from enrolment, "
				  "or the locked key was altered (token %s: %s, CKR 0x%lx)", p.safe_uri,
				  p11_kit_strerror(rv), (unsigned long)rv);
		goto out;
	}
	if (rv != CKR_OK || len != LR_USER_KEY_BYTES) {
		r = lr_error_code(rv != CKR_OK ? ckr_errno(rv) : -EIO, "Token %s cannot decrypt the key: %s",
				  p.safe_uri, rv != CKR_OK ? p11_kit_strerror(rv) : "wrong length");
		goto out;
	}
	s->len = len;
	*key = s;
	s = NULL;
	r = 0;
out:
	p11_close(&p);
	return r;
}

static int p11_probe(const struct lr_hsm *hsm)
{
	struct p11 p = { 0 };
	int r;

	/* No URI: any token at all in the registered modules. */
	r = p11_open(hsm && hsm->config ? hsm->config : "pkcs11:", hsm, false, false, &p);
	p11_close(&p);
	return r;
}

static int p11_describe(struct json_object *obj, struct json_object *out)
{
	struct p11 p = { 0 };
	const char *uri;
	CK_TOKEN_INFO *ti;
	char label[sizeof(ti->label) + 1];
	size_t n;
	int r;

	r = blob_parse(obj, &uri, NULL, NULL);
	if (r < 0)
		return r;
	/* Re-format rather than copy: a tampered token must not get a pin-value printed. */
	r = p11_parse(uri, &p);
	if (r < 0)
		goto out;
	r = json_add_string(out, "uri", p.safe_uri);
	if (r >= 0)
		r = json_add_string(out, "mechanism", P11_MECHANISM);
	ti = p11_kit_uri_get_token_info(p.uri);
	if (r < 0 || !ti || ti->label[0] == 0)  /* no token= in the URI */
		goto out;
	memcpy(label, ti->label, sizeof(ti->label));
	for (n = sizeof(ti->label); n > 0 && label[n - 1] == ' '; n--)
		;
	label[n] = 0;
	r = json_add_string(out, "token", label);
out:
	p11_close(&p);
	return r;
}

static int p11_validate(struct json_object *obj)
{
	return blob_parse(obj, NULL, NULL, NULL);
}

static int p11_destroy(const struct lr_hsm *hsm, struct json_object *obj)
{
	struct p11 p = { 0 };
	const char *uri = hsm ? hsm->config : NULL;
	CK_OBJECT_HANDLE k;
	CK_RV rv;
	int r;

	if (!uri && (!obj || field_string(obj, "uri", &uri) < 0))
		return lr_error_code(-EINVAL, "pkcs11: no URI for the key to destroy");
	r = p11_open(uri, hsm, true, true, &p);
	if (r < 0)
		goto out;
	r = p11_find_key(&p, true, &k);
	if (r < 0)
		goto out;
	rv = p.fn->C_DestroyObject(p.session, k);
	if (rv != CKR_OK) {
		r = lr_error_code(ckr_errno(rv), "Cannot destroy the key in token %s: %s", p.safe_uri,
				  p11_kit_strerror(rv));
		goto out;
	}
	lr_info("Destroyed the key in token %s", p.safe_uri);
	r = 0;
out:
	p11_close(&p);
	return r;
}

static int p11_generate(struct p11 *p)
{
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ULONG len = 32;
	CK_ATTRIBUTE t[11] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },  /* the key never leaves the token */
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
	};
	CK_ATTRIBUTE *id = p11_kit_uri_get_attribute(p->uri, CKA_ID);
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_ULONG n = 9;
	CK_OBJECT_HANDLE k;
	CK_RV rv;

	t[n++] = *p11_kit_uri_get_attribute(p->uri, CKA_LABEL);  /* checked by the caller */
	if (id)
		t[n++] = *id;
	rv = p->fn->C_GenerateKey(p->session, &mech, t, n, &k);
	if (rv != CKR_OK)
		return lr_error_code(ckr_errno(rv), "Cannot create an AES-256 key in token %s: %s", p->safe_uri,
				     p11_kit_strerror(rv));
	lr_info("Created a non-extractable AES-256 key in token %s", p->safe_uri);
	return 1;
}

static int p11_keygen(const struct lr_hsm *hsm)
{
	struct p11 p = { 0 };
	CK_OBJECT_HANDLE k;
	int r;

	if (!hsm || !hsm->config)
		return lr_error_code(-EINVAL, "pkcs11: a URI with object= is needed to create a key");
	r = p11_parse(hsm->config, &p);
	if (r < 0)
		goto out;
	if (!p11_kit_uri_get_attribute(p.uri, CKA_LABEL)) {
		r = lr_error_code(-EINVAL, "The PKCS#11 URI %s names no key: add object=LABEL", p.safe_uri);
		goto out;
	}
	r = p11_connect(&p, hsm, true, true);
	if (r < 0)
		goto out;
	r = p11_find_key(&p, false, &k);
	if (r == -ENOKEY)
		r = p11_generate(&p);
out:
	p11_close(&p);
	return r;
}

const struct lr_backend lr_backend_pkcs11 = {
	.name = "pkcs11",
	.lock = p11_lock,
	.unlock = p11_unlock,
	.probe = p11_probe,
	.describe = p11_describe,
	.validate = p11_validate,
	.destroy = p11_destroy,
	.keygen = p11_keygen,
};
