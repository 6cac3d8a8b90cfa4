/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tpm2 backend: the user key is the sensitive data of a sealed (keyedHash) object under a
 * transient ECC P-256 storage primary in the owner hierarchy, recreated on every use.
 * The object's auth value is derived from the host binding digest; the object is noDA
 * because that auth is not a human secret and a changed host must not lock the TPM out.
 * With PCRs, the policy is PolicyPCR + PolicyAuthValue. Commands that carry the key run in
 * sessions salted with the primary and encrypted with AES-128-CFB.
 *
 * With the fuse (lr_hsm.tpm2_fuse: tamper response), the sealed object's parent is not the
 * primary but an ordinary ECC storage key created under it and made persistent at
 * LR_TPM2_FUSE_HANDLE; its private part exists only inside the TPM. Evicting it (destroy)
 * makes every object sealed under it unloadable, including copies of the token in old
 * copies of the header: the primary can be recreated from the seed, the fuse cannot.
 *
 * Token object (no secrets):
 *   { "tcti": "device:/dev/tpmrm0", "primary": "ecc-p256-srk",
 *     "public": "<base64 TPM2B_PUBLIC>", "private": "<base64 TPM2B_PRIVATE>",
 *     "pcrs": [7], "pcr_bank": "sha256", "fuse": "0x81004c52" (only with the fuse) }
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "backend.h"
#include "backend-tpm2.h"
#include "log.h"
#include "secret.h"
#include "util.h"

#define TPM2_DEFAULT_TCTI "device:/dev/tpmrm0"
#define TPM2_PRIMARY_NAME "ecc-p256-srk"
#define TPM2_PCR_BANK "sha256"
#define TPM2_AUTH_LABEL "lockroot-tpm2-auth-v1"
#define TPM2_PCR_COUNT 24
#define TPM2_SEAL_MAX 128  /* MAX_SYM_DATA of the TPM spec (tpm2-tss's buffer is larger) */
#define LR_TPM2_FUSE_HANDLE 0x81004c52u /* owner persistent range; "LR" */

struct tpm2 {
	const char *tcti_conf;
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	ESYS_TR primary;
	ESYS_TR session;  /* salted HMAC session */
	ESYS_TR policy;   /* salted policy session (unlock with PCRs) */
	ESYS_TR object;
	ESYS_TR parent;   /* the primary, or the fuse (persistent: never flushed) */
};

#define TPM2_INIT { .primary = ESYS_TR_NONE, .session = ESYS_TR_NONE, \
		    .policy = ESYS_TR_NONE, .object = ESYS_TR_NONE, .parent = ESYS_TR_NONE }

/* ECC rather than RSA: fast to recreate each time (docs/decisions.md). */
const TPM2B_PUBLIC lr_tpm2_primary_template = {
	.publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
			TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
			TPMA_OBJECT_NODA,
		.parameters.eccDetail = {
			.symmetric = {
				.algorithm = TPM2_ALG_AES,
				.keyBits.aes = 128,
				.mode.aes = TPM2_ALG_CFB,
			},
			.scheme.scheme = TPM2_ALG_NULL,
			.curveID = TPM2_ECC_NIST_P256,
			.kdf.scheme = TPM2_ALG_NULL,
		},
	},
};

static const TPMT_SYM_DEF session_symmetric = {
	.algorithm = TPM2_ALG_AES,
	.keyBits.aes = 128,
	.mode.aes = TPM2_ALG_CFB,
};

/* tpm2-tss logs to stderr on its own; the library must not print. The user can still
 * ask for it with TSS2_LOG. */
static void tpm2_quiet(void)
{
	setenv("TSS2_LOG", "all+NONE", 0);
}

/* The TPM error without the handle/session/parameter number, so it compares with TPM2_RC_*. */
static TSS2_RC tpm2_rc_base(TSS2_RC rc)
{
	TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;

	if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER)
		return rc;
	rc &= ~TSS2_RC_LAYER_MASK;
	if (rc & TPM2_RC_FMT1)
		return rc & (TPM2_RC_FMT1 | 0x3f);
	return rc;
}

/* The TPM (or the path to it) went away rather than refusing. */
static bool tpm2_rc_is_absent(TSS2_RC rc)
{
	TSS2_RC base = rc & ~TSS2_RC_LAYER_MASK;

	if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER)
		return true;
	return (rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER &&
		(base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_NO_CONNECTION);
}

/* Log a failed TPM command; -ENODEV when the TPM stopped answering, else r. */
static int tpm2_fail(const struct tpm2 *t, TSS2_RC rc, const char *what, int r)
{
	if (tpm2_rc_is_absent(rc))
		return lr_error_code(-ENODEV, "TPM at %s does not answer (%s): %s",
				     t->tcti_conf, what, Tss2_RC_Decode(rc));
	return lr_error_code(r, "TPM %s failed: %s", what, Tss2_RC_Decode(rc));
}

static void tpm2_flush(struct tpm2 *t, ESYS_TR *h)
{
	if (*h != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->esys, *h);
	*h = ESYS_TR_NONE;
}

static void tpm2_close(struct tpm2 *t)
{
	if (t->esys) {
		tpm2_flush(t, &t->object);
		tpm2_flush(t, &t->policy);
		tpm2_flush(t, &t->session);
		tpm2_flush(t, &t->primary);
		Esys_Finalize(&t->esys);
	}
	if (t->tcti)
		Tss2_TctiLdr_Finalize(&t->tcti);
}

static int tpm2_open(struct tpm2 *t, const char *tcti)
{
	TSS2_RC rc;

	tpm2_quiet();
	t->tcti_conf = tcti ? tcti : TPM2_DEFAULT_TCTI;
	rc = Tss2_TctiLdr_Initialize(t->tcti_conf, &t->tcti);
	if (rc != TSS2_RC_SUCCESS)
		return lr_error_code(-ENODEV, "no TPM found at %s: %s", t->tcti_conf, Tss2_RC_Decode(rc));
	rc = Esys_Initialize(&t->esys, t->tcti, NULL);
	if (rc != TSS2_RC_SUCCESS)
		return lr_error_code(-ENODEV, "no TPM found at %s: %s", t->tcti_conf, Tss2_RC_Decode(rc));
	return 0;
}

static int tpm2_create_primary(struct tpm2 *t)
{
	const TPM2B_SENSITIVE_CREATE sens = { 0 };
	const TPM2B_DATA outside = { 0 };
	const TPML_PCR_SELECTION creation_pcr = { 0 };
	TSS2_RC rc;

	rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				&sens, &lr_tpm2_primary_template, &outside, &creation_pcr, &t->primary,
				NULL, NULL, NULL, NULL);
	if (rc == TSS2_RC_SUCCESS)
		return 0;
	t->primary = ESYS_TR_NONE;
	switch (tpm2_rc_base(rc)) {
	case TPM2_RC_BAD_AUTH:
	case TPM2_RC_AUTH_FAIL:
		return lr_error_code(-EIO, "TPM at %s: the owner hierarchy has a password; lockroot "
				     "needs an empty owner auth to create its storage key", t->tcti_conf);
	case TPM2_RC_LOCKOUT:
		return lr_error_code(-EIO, "TPM at %s is in dictionary-attack lockout; wait or "
				     "reset it with tpm2_dictionarylockout -c", t->tcti_conf);
	}
	return tpm2_fail(t, rc, "CreatePrimary (ECC P-256 storage key)", -EIO);
}

/* A session salted with the primary (only this TPM can know its key), AES-128-CFB. */
static int tpm2_start_session(struct tpm2 *t, TPM2_SE type, ESYS_TR *session)
{
	TSS2_RC rc;

	rc = Esys_StartAuthSession(t->esys, t->primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				   ESYS_TR_NONE, NULL, type, &session_symmetric, TPM2_ALG_SHA256, session);
	if (rc != TSS2_RC_SUCCESS) {
		*session = ESYS_TR_NONE;
		return tpm2_fail(t, rc, "StartAuthSession", -EIO);
	}
	return 0;
}

static int tpm2_session_attrs(struct tpm2 *t, ESYS_TR session, TPMA_SESSION attrs)
{
	TSS2_RC rc;

	rc = Esys_TRSess_SetAttributes(t->esys, session, attrs | TPMA_SESSION_CONTINUESESSION, 0xff);
	if (rc != TSS2_RC_SUCCESS)
		return tpm2_fail(t, rc, "session setup", -EIO);
	return 0;
}

static void pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel)
{
	memset(sel, 0, sizeof(*sel));
	sel->count = 1;
	sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel->pcrSelections[0].sizeofSelect = 3;
	for (unsigned i = 0; i < TPM2_PCR_COUNT; i++)
		if (mask & (1u << i))
			sel->pcrSelections[0].pcrSelect[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* "7,16" for messages. */
static void pcr_list(uint32_t mask, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < TPM2_PCR_COUNT && n < size; i++)
		if (mask & (1u << i))
			n += (size_t)snprintf(buf + n, size - n, "%s%u", n ? "," : "", i);
}

static int tpm2_pcr_mismatch(uint32_t mask)
{
	char list[80];

	pcr_list(mask, list, sizeof(list));
	return lr_error_code(-EKEYREJECTED, "TPM refused to unseal the key: PCR values differ from "
			     "enrolment (PCRs %s); re-enrol after a deliberate firmware or boot change",
			     list);
}

/* PolicyPCR (current values) then PolicyAuthValue, on a trial or a real policy session. */
static int tpm2_policy(struct tpm2 *t, ESYS_TR session, uint32_t mask)
{
	const TPM2B_DIGEST any = { 0 };
	TPML_PCR_SELECTION sel;
	TSS2_RC rc;

	pcr_selection(mask, &sel);
	rc = Esys_PolicyPCR(t->esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &any, &sel);
	if (rc != TSS2_RC_SUCCESS) {
		switch (tpm2_rc_base(rc)) {
		case TPM2_RC_VALUE:
		case TPM2_RC_POLICY_FAIL:
		case TPM2_RC_PCR_CHANGED:
			return tpm2_pcr_mismatch(mask);
		}
		return tpm2_fail(t, rc, "PolicyPCR", -EIO);
	}
	rc = Esys_PolicyAuthValue(t->esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE);
	if (rc != TSS2_RC_SUCCESS)
		return tpm2_fail(t, rc, "PolicyAuthValue", -EIO);
	return 0;
}

static int tpm2_policy_digest(struct tpm2 *t, uint32_t mask, TPM2B_DIGEST *digest)
{
	const TPMT_SYM_DEF none = { .algorithm = TPM2_ALG_NULL };
	ESYS_TR trial = ESYS_TR_NONE;
	TPM2B_DIGEST *d = NULL;
	TSS2_RC rc;
	int r;

	rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				   ESYS_TR_NONE, NULL, TPM2_SE_TRIAL, &none, TPM2_ALG_SHA256, &trial);
	if (rc != TSS2_RC_SUCCESS) {
		trial = ESYS_TR_NONE;
		r = tpm2_fail(t, rc, "StartAuthSession (trial)", -EIO);
		goto out;
	}
	r = tpm2_policy(t, trial, mask);
	if (r < 0)
		goto out;
	rc = Esys_PolicyGetDigest(t->esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &d);
	if (rc != TSS2_RC_SUCCESS) {
		r = tpm2_fail(t, rc, "PolicyGetDigest", -EIO);
		goto out;
	}
	*digest = *d;
	r = 0;
out:
	Esys_Free(d);
	tpm2_flush(t, &trial);
	return r;
}

/* auth = SHA-256(label || binding): the object opens only on the enrolled host. */
static int derive_auth(const uint8_t binding[32], TPM2B_AUTH *auth)
{
	uint8_t buf[sizeof(TPM2_AUTH_LABEL) - 1 + 32];
	int r;

	memcpy(buf, TPM2_AUTH_LABEL, sizeof(TPM2_AUTH_LABEL) - 1);
	memcpy(buf + sizeof(TPM2_AUTH_LABEL) - 1, binding, 32);
	auth->size = 32;
	r = lr_sha256(buf, sizeof(buf), auth->buffer);
	explicit_bzero(buf, sizeof(buf));
	if (r < 0)
		explicit_bzero(auth, sizeof(*auth));
	return r;
}

static int obj_add(struct json_object *obj, const char *key, struct json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_object_add(obj, key, val) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static struct json_object *pcrs_to_json(uint32_t mask)
{
	struct json_object *a = json_object_new_array();

	for (unsigned i = 0; a && i < TPM2_PCR_COUNT; i++) {
		if (!(mask & (1u << i)))
			continue;
		if (json_object_array_add(a, json_object_new_int((int)i)) < 0) {
			json_object_put(a);
			return NULL;
		}
	}
	return a;
}

static int add_base64(struct json_object *obj, const char *key, const uint8_t *buf, size_t len)
{
	_cleanup_free_ char *s = lr_base64_encode(buf, len);

	if (!s)
		return -ENOMEM;
	return obj_add(obj, key, json_object_new_string(s));
}

static int store_blobs(struct json_object *obj, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv)
{
	uint8_t buf[sizeof(TPM2B_PUBLIC) > sizeof(TPM2B_PRIVATE) ? sizeof(TPM2B_PUBLIC) : sizeof(TPM2B_PRIVATE)];
	size_t off = 0;
	int r;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS)
		return lr_error_code(-EIO, "cannot marshal the sealed object's public area");
	r = add_base64(obj, "public", buf, off);
	if (r < 0)
		return r;
	off = 0;
	if (Tss2_MU_TPM2B_PRIVATE_Marshal(priv, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS)
		return lr_error_code(-EIO, "cannot marshal the sealed object's private area");
	return add_base64(obj, "private", buf, off);
}

static int store_obj(struct json_object *obj, const char *tcti, uint32_t mask,
		     const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv)
{
	int r;

	r = obj_add(obj, "tcti", json_object_new_string(tcti));
	if (r >= 0)
		r = obj_add(obj, "primary", json_object_new_string(TPM2_PRIMARY_NAME));
	if (r >= 0)
		r = obj_add(obj, "pcrs", pcrs_to_json(mask));
	if (r >= 0)
		r = obj_add(obj, "pcr_bank", json_object_new_string(TPM2_PCR_BANK));
	if (r >= 0)
		r = store_blobs(obj, pub, priv);
	if (r == -ENOMEM)
		lr_error("out of memory writing the tpm2 token data");
	return r;
}

static int tpm2_seal(struct tpm2 *t, const struct lr_secret *key, const uint8_t binding[32],
		     uint32_t mask, TPM2B_PUBLIC **pub, TPM2B_PRIVATE **priv)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_PUBLIC tmpl = {
		.publicArea = {
			.type = TPM2_ALG_KEYEDHASH,
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA,
			.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL,
		},
	};
	const TPM2B_DATA outside = { 0 };
	const TPML_PCR_SELECTION creation_pcr = { 0 };
	TSS2_RC rc;
	int r;

	if (mask) {
		r = tpm2_policy_digest(t, mask, &tmpl.publicArea.authPolicy);
		if (r < 0)
			goto out;
	} else {
		tmpl.publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
	}
	r = derive_auth(binding, &sens.sensitive.userAuth);
	if (r < 0)
		goto out;
	memcpy(sens.sensitive.data.buffer, key->data, key->len);
	sens.sensitive.data.size = (UINT16)key->len;
	/* The key travels in the command: encrypt it. */
	r = tpm2_session_attrs(t, t->session, TPMA_SESSION_DECRYPT);
	if (r < 0)
		goto out;
	rc = Esys_Create(t->esys, t->parent != ESYS_TR_NONE ? t->parent : t->primary, t->session, ESYS_TR_NONE,
			 ESYS_TR_NONE, &sens, &tmpl, &outside, &creation_pcr, priv, pub, NULL, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS)
		r = tpm2_fail(t, rc, "Create (sealed object)", -EIO);
out:
	explicit_bzero(&sens, sizeof(sens));
	return r;
}

/* The fuse at its persistent handle: 0 (t->parent set), -ENOKEY when it is not there. */
static int fuse_find(struct tpm2 *t)
{
	TSS2_RC rc;

	rc = Esys_TR_FromTPMPublic(t->esys, LR_TPM2_FUSE_HANDLE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &t->parent);
	if (rc == TSS2_RC_SUCCESS)
		return 0;
	t->parent = ESYS_TR_NONE;
	if (tpm2_rc_is_absent(rc))
		return tpm2_fail(t, rc, "ReadPublic (fuse)", -EIO);
	return -ENOKEY;
}

/* A new storage key under the primary, random (sensitiveDataOrigin), made persistent; its
 * private blob is dropped: the TPM holds the only copy. */
static int fuse_create(struct tpm2 *t)
{
	const TPM2B_SENSITIVE_CREATE sens = { 0 };
	const TPM2B_DATA outside = { 0 };
	const TPML_PCR_SELECTION creation_pcr = { 0 };
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	ESYS_TR loaded = ESYS_TR_NONE;
	TSS2_RC rc;
	int r = 0;

	r = tpm2_session_attrs(t, t->session, 0);
	if (r < 0)
		return r;
	rc = Esys_Create(t->esys, t->primary, t->session, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
			 &lr_tpm2_primary_template, &outside, &creation_pcr, &priv, &pub, NULL, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS)
		return tpm2_fail(t, rc, "Create (fuse storage key)", -EIO);
	rc = Esys_Load(t->esys, t->primary, t->session, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &loaded);
	if (priv)
		explicit_bzero(priv, sizeof(*priv));
	Esys_Free(priv);
	Esys_Free(pub);
	if (rc != TSS2_RC_SUCCESS)
		return tpm2_fail(t, rc, "Load (fuse storage key)", -EIO);
	rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			       LR_TPM2_FUSE_HANDLE, &t->parent);
	tpm2_flush(t, &loaded);
	if (rc != TSS2_RC_SUCCESS) {
		t->parent = ESYS_TR_NONE;
		if (tpm2_rc_base(rc) == TPM2_RC_NV_SPACE)
			return lr_error_code(-ENOSPC, "TPM at %s has no room for another persistent key", t->tcti_conf);
		return tpm2_fail(t, rc, "EvictControl (make the fuse persistent)", -EIO);
	}
	lr_info("created the TPM fuse key at persistent handle 0x%08x", LR_TPM2_FUSE_HANDLE);
	return r;
}

static int tpm2_lock(const struct lr_hsm *hsm, const struct lr_secret *key,
		     const uint8_t binding[32], struct json_object *obj)
{
	struct tpm2 t = TPM2_INIT;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	uint32_t mask = hsm->pcr_mask;
	int r;

	if (!key || key->len == 0 || key->len > TPM2_SEAL_MAX)
		return lr_error_code(-EINVAL, "tpm2: the key to seal must be 1 to %d bytes", TPM2_SEAL_MAX);
	if (mask >> TPM2_PCR_COUNT)
		return lr_error_code(-EINVAL, "tpm2: PCRs are numbered 0 to %d", TPM2_PCR_COUNT - 1);
	r = tpm2_open(&t, hsm->config);
	if (r < 0)
		goto out;
	r = tpm2_create_primary(&t);
	if (r < 0)
		goto out;
	r = tpm2_start_session(&t, TPM2_SE_HMAC, &t.session);
	if (r < 0)
		goto out;
	if (hsm->tpm2_fuse) {
		r = fuse_find(&t);
		if (r == -ENOKEY)
			r = fuse_create(&t);
		if (r < 0)
			goto out;
	}
	r = tpm2_seal(&t, key, binding, mask, &pub, &priv);
	if (r < 0)
		goto out;
	r = store_obj(obj, t.tcti_conf, mask, pub, priv);
	if (r >= 0 && hsm->tpm2_fuse) {
		char h[16];

		snprintf(h, sizeof(h), "0x%08x", LR_TPM2_FUSE_HANDLE);
		r = obj_add(obj, "fuse", json_object_new_string(h));
	}
out:
	Esys_Free(pub);
	Esys_Free(priv);
	tpm2_close(&t);
	return r;
}

static int get_string(struct json_object *obj, const char *key, const char **s)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return lr_error_code(-EBADMSG, "tpm2 token data: \"%s\" is missing or not a string", key);
	*s = json_object_get_string(v);
	return 0;
}

static int get_pcrs(struct json_object *obj, uint32_t *mask)
{
	struct json_object *a;
	size_t n;

	if (!json_object_object_get_ex(obj, "pcrs", &a) || !json_object_is_type(a, json_type_array))
		return lr_error_code(-EBADMSG, "tpm2 token data: \"pcrs\" is missing or not an array");
	*mask = 0;
	n = json_object_array_length(a);
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = json_object_array_get_idx(a, i);
		int64_t pcr;

		if (!json_object_is_type(v, json_type_int))
			return lr_error_code(-EBADMSG, "tpm2 token data: \"pcrs\" holds a non-integer");
		pcr = json_object_get_int64(v);
		if (pcr < 0 || pcr >= TPM2_PCR_COUNT)
			return lr_error_code(-EBADMSG, "tpm2 token data: PCR %lld in \"pcrs\" is out of range",
					     (long long)pcr);
		*mask |= 1u << pcr;
	}
	return 0;
}

static int get_expected(struct json_object *obj, const char *key, const char *want)
{
	const char *s;
	int r;

	r = get_string(obj, key, &s);
	if (r < 0)
		return r;
	if (strcmp(s, want) != 0)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"%s\" is \"%s\", this lockroot knows "
				     "only \"%s\"", key, s, want);
	return 0;
}

static int get_blob(struct json_object *obj, const char *key, uint8_t **buf, size_t *len)
{
	const char *s;
	int r;

	r = get_string(obj, key, &s);
	if (r < 0)
		return r;
	r = lr_base64_decode(s, buf, len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"%s\" is not valid base64", key);
	return 0;
}

static int get_public(struct json_object *obj, TPM2B_PUBLIC *pub)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len, off = 0;
	int r;

	r = get_blob(obj, "public", &buf, &len);
	if (r < 0)
		return r;
	memset(pub, 0, sizeof(*pub));
	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, pub) != TSS2_RC_SUCCESS || off != len)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"public\" is not a TPM2B_PUBLIC");
	if (pub->publicArea.type != TPM2_ALG_KEYEDHASH)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"public\" is not a sealed data object");
	return 0;
}

static int get_private(struct json_object *obj, TPM2B_PRIVATE *priv)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len, off = 0;
	int r;

	r = get_blob(obj, "private", &buf, &len);
	if (r < 0)
		return r;
	memset(priv, 0, sizeof(*priv));
	if (Tss2_MU_TPM2B_PRIVATE_Unmarshal(buf, len, &off, priv) != TSS2_RC_SUCCESS || off != len)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"private\" is not a TPM2B_PRIVATE");
	return 0;
}

/* "fuse": absent (sealed under the primary) or lockroot's fuse handle. */
static int get_fuse(struct json_object *obj, bool *fuse)
{
	struct json_object *v;
	char h[16];

	*fuse = false;
	if (!json_object_object_get_ex(obj, "fuse", &v))
		return 0;
	snprintf(h, sizeof(h), "0x%08x", LR_TPM2_FUSE_HANDLE);
	if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), h) != 0)
		return lr_error_code(-EBADMSG, "tpm2 token data: \"fuse\" is not lockroot's fuse handle %s", h);
	*fuse = true;
	return 0;
}

/* Every field, as unlock needs it. *tcti may be NULL (not an error here). */
static int parse_obj(struct json_object *obj, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv,
		     uint32_t *mask, const char **tcti)
{
	int r;

	if (!obj || !json_object_is_type(obj, json_type_object))
		return lr_error_code(-EBADMSG, "tpm2 token data is missing or not a JSON object");
	r = get_string(obj, "tcti", tcti);
	if (r >= 0)
		r = get_expected(obj, "primary", TPM2_PRIMARY_NAME);
	if (r >= 0)
		r = get_expected(obj, "pcr_bank", TPM2_PCR_BANK);
	if (r >= 0)
		r = get_pcrs(obj, mask);
	if (r >= 0)
		r = get_public(obj, pub);
	if (r >= 0)
		r = get_private(obj, priv);
	return r;
}

static int tpm2_load(struct tpm2 *t, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv)
{
	TSS2_RC rc;
	int r;

	r = tpm2_session_attrs(t, t->session, 0);
	if (r < 0)
		return r;
	rc = Esys_Load(t->esys, t->parent != ESYS_TR_NONE ? t->parent : t->primary, t->session, ESYS_TR_NONE,
		       ESYS_TR_NONE, priv, pub, &t->object);
	if (rc == TSS2_RC_SUCCESS)
		return 0;
	t->object = ESYS_TR_NONE;
	if (tpm2_rc_is_absent(rc))
		return tpm2_fail(t, rc, "Load", -EIO);
	/* A blob wrapped by another TPM's (or a cleared TPM's) storage key fails its
	 * integrity check or decrypts to garbage: a parameter error (INTEGRITY, SIZE, ...). */
	if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1) && (rc & TPM2_RC_P))
		return lr_error_code(-EKEYREJECTED, "TPM at %s refused the sealed key: it was sealed by "
				     "another TPM, or this TPM was cleared since enrolment (%s)",
				     t->tcti_conf, Tss2_RC_Decode(rc));
	return tpm2_fail(t, rc, "Load (sealed object)", -EIO);
}

static int unseal_error(struct tpm2 *t, TSS2_RC rc, uint32_t mask)
{
	switch (tpm2_rc_base(rc)) {
	case TPM2_RC_AUTH_FAIL:
	case TPM2_RC_BAD_AUTH:
		return lr_error_code(-EKEYREJECTED, "TPM refused to unseal the key: the host binding "
				     "does not match enrolment (%s)", Tss2_RC_Decode(rc));
	case TPM2_RC_POLICY_FAIL:
	case TPM2_RC_PCR_CHANGED:
		return tpm2_pcr_mismatch(mask);
	case TPM2_RC_LOCKOUT:
		return lr_error_code(-EIO, "TPM at %s is in dictionary-attack lockout; wait or reset "
				     "it with tpm2_dictionarylockout -c", t->tcti_conf);
	}
	return tpm2_fail(t, rc, "Unseal", -EIO);
}

/* tpm2-tss decrypts the Unseal response in place and frees that buffer unwiped: overwrite
 * it with a longer harmless response. */
static void tpm2_scrub_response(struct tpm2 *t)
{
	TPM2B_DIGEST *rnd = NULL;

	if (Esys_GetRandom(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 48, &rnd) == TSS2_RC_SUCCESS)
		Esys_Free(rnd);
}

static int tpm2_unseal(struct tpm2 *t, const uint8_t binding[32], uint32_t mask, struct lr_secret **key)
{
	TPM2B_SENSITIVE_DATA *data = NULL;
	TPM2B_AUTH auth = { 0 };
	ESYS_TR session = t->session;
	TSS2_RC rc;
	int r;

	if (mask) {
		r = tpm2_start_session(t, TPM2_SE_POLICY, &t->policy);
		if (r < 0)
			goto out;
		r = tpm2_policy(t, t->policy, mask);
		if (r < 0)
			goto out;
		session = t->policy;
	}
	r = derive_auth(binding, &auth);
	if (r < 0)
		goto out;
	rc = Esys_TR_SetAuth(t->esys, t->object, &auth);
	if (rc != TSS2_RC_SUCCESS) {
		r = tpm2_fail(t, rc, "SetAuth", -EIO);
		goto out;
	}
	/* The key travels back in the response: encrypt it. */
	r = tpm2_session_attrs(t, session, TPMA_SESSION_ENCRYPT);
	if (r < 0)
		goto out;
	rc = Esys_Unseal(t->esys, t->object, session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
	if (rc != TSS2_RC_SUCCESS) {
		data = NULL;
		r = unseal_error(t, rc, mask);
		goto out;
	}
	*key = lr_secret_dup(data->buffer, data->size);
	r = *key ? 0 : -ENOMEM;
	tpm2_scrub_response(t);
out:
	if (data) {
		explicit_bzero(data, sizeof(*data));
		Esys_Free(data);
	}
	/* ESYS keeps its own copy of the auth with the object: overwrite it. */
	explicit_bzero(&auth, sizeof(auth));
	if (t->object != ESYS_TR_NONE)
		(void)Esys_TR_SetAuth(t->esys, t->object, &auth);
	return r;
}

static int tpm2_unlock(const struct lr_hsm *hsm, struct json_object *obj,
		       const uint8_t binding[32], struct lr_secret **key)
{
	struct tpm2 t = TPM2_INIT;
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
	const char *tcti = NULL;
	uint32_t mask = 0;
	bool fuse = false;
	int r;

	r = parse_obj(obj, &pub, &priv, &mask, &tcti);
	if (r >= 0)
		r = get_fuse(obj, &fuse);
	if (r < 0)
		goto out;
	if (hsm && hsm->config)
		tcti = hsm->config;
	r = tpm2_open(&t, tcti);
	if (r < 0)
		goto out;
	r = tpm2_create_primary(&t);
	if (r < 0)
		goto out;
	r = tpm2_start_session(&t, TPM2_SE_HMAC, &t.session);
	if (r < 0)
		goto out;
	if (fuse) {
		r = fuse_find(&t);
		if (r == -ENOKEY)
			r = lr_error_code(-ENOKEY, "the TPM at %s no longer has the fuse key (persistent handle 0x%08x) "
					  "this key was sealed under: it was destroyed (tamper response?); unlock with the "
					  "recovery key", t.tcti_conf, LR_TPM2_FUSE_HANDLE);
		if (r < 0)
			goto out;
	}
	r = tpm2_load(&t, &pub, &priv);
	if (r < 0)
		goto out;
	r = tpm2_unseal(&t, binding, mask, key);
out:
	tpm2_close(&t);
	return r;
}

static int tpm2_probe(const struct lr_hsm *hsm)
{
	struct tpm2 t = TPM2_INIT;
	TPMS_CAPABILITY_DATA *cap = NULL;
	TSS2_RC rc;
	int r;

	r = tpm2_open(&t, hsm ? hsm->config : NULL);
	if (r < 0)
		goto out;
	rc = Esys_GetCapability(t.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_TPM_PROPERTIES, TPM2_PT_MANUFACTURER, 1, NULL, &cap);
	if (rc != TSS2_RC_SUCCESS)
		r = lr_error_code(-ENODEV, "no TPM answers at %s: %s", t.tcti_conf, Tss2_RC_Decode(rc));
out:
	Esys_Free(cap);
	tpm2_close(&t);
	return r;
}

static int copy_field(struct json_object *obj, struct json_object *out, const char *key, json_type type)
{
	struct json_object *v, *copy = NULL;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, type))
		return 0;
	if (json_object_deep_copy(v, &copy, NULL) < 0)
		return -ENOMEM;
	return obj_add(out, key, copy);
}

static int tpm2_describe(struct json_object *obj, struct json_object *out)
{
	int r;

	r = copy_field(obj, out, "tcti", json_type_string);
	if (r >= 0)
		r = copy_field(obj, out, "pcrs", json_type_array);
	if (r >= 0)
		r = copy_field(obj, out, "pcr_bank", json_type_string);
	if (r >= 0)
		r = copy_field(obj, out, "primary", json_type_string);
	if (r >= 0)
		r = copy_field(obj, out, "fuse", json_type_string);
	return r;
}

/* Evict the fuse: every key sealed under it (this token's, and any copy of it) is gone. A token
 * sealed under the primary has nothing inside the TPM: -EOPNOTSUPP. */
static int tpm2_destroy(const struct lr_hsm *hsm, struct json_object *obj)
{
	struct tpm2 t = TPM2_INIT;
	ESYS_TR out = ESYS_TR_NONE;
	const char *tcti = NULL;
	bool fuse = false;
	TSS2_RC rc;
	int r;

	r = get_fuse(obj, &fuse);
	if (r < 0)
		return r;
	if (!fuse)
		return -EOPNOTSUPP;
	if (hsm && hsm->config)
		tcti = hsm->config;
	else if (get_string(obj, "tcti", &tcti) < 0)
		tcti = NULL;
	r = tpm2_open(&t, tcti);
	if (r < 0)
		goto out;
	r = fuse_find(&t);
	if (r == -ENOKEY) {
		lr_info("the TPM fuse key (0x%08x) is already gone", LR_TPM2_FUSE_HANDLE);
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	rc = Esys_EvictControl(t.esys, ESYS_TR_RH_OWNER, t.parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			       LR_TPM2_FUSE_HANDLE, &out);
	if (rc != TSS2_RC_SUCCESS)
		r = tpm2_fail(&t, rc, "EvictControl (destroy the fuse)", -EIO);
	else
		lr_info("destroyed the TPM fuse key (0x%08x): keys sealed under it can never be unsealed again",
			LR_TPM2_FUSE_HANDLE);
	t.parent = ESYS_TR_NONE; /* evicted: the handle is stale */
out:
	tpm2_close(&t);
	return r;
}

static int tpm2_validate(struct json_object *obj)
{
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
	const char *tcti;
	uint32_t mask;
	bool fuse;
	int r;

	r = parse_obj(obj, &pub, &priv, &mask, &tcti);
	return r < 0 ? r : get_fuse(obj, &fuse);
}

const struct lr_backend lr_backend_tpm2 = {
	.name = "tpm2",
	.lock = tpm2_lock,
	.unlock = tpm2_unlock,
	.probe = tpm2_probe,
	.describe = tpm2_describe,
	.validate = tpm2_validate,
	.destroy = tpm2_destroy,
	.keygen = NULL,
};
