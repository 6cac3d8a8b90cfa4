/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tpm2 backend against a real (software) TPM: test-backend-tpm2 TCTI [TCTI2]
 * TCTI2, when given, is a second TPM: a key sealed by the first must not load there.
 * Exits 0 when every check passes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "backend.h"
#include "log.h"
#include "secret.h"
#include "util.h"
#include "backend-tpm2.h"

static int failures;
static char last_log[4096];

static void log_hook(int level, const char *msg, void *userdata)
{
	size_t n = strlen(last_log);

	(void)userdata;
	printf("     log[%d]: %s\n", level, msg);
	snprintf(last_log + n, sizeof(last_log) - n, "%s\n", msg);
}

static void expect(bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs(ok ? "ok   " : "FAIL ", stdout);
	vprintf(fmt, ap);
	putchar('\n');
	fflush(stdout);
	va_end(ap);
	if (!ok)
		failures++;
}

static bool logged(const char *needle)
{
	return strstr(last_log, needle) != NULL;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Our own ESYS connection, for what the backend does not do: PCRs and timing. */
struct esys {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *ctx;
};

static int esys_open(const char *tcti, struct esys *e)
{
	memset(e, 0, sizeof(*e));
	if (Tss2_TctiLdr_Initialize(tcti, &e->tcti) != TSS2_RC_SUCCESS)
		return -ENODEV;
	if (Esys_Initialize(&e->ctx, e->tcti, NULL) != TSS2_RC_SUCCESS) {
		Tss2_TctiLdr_Finalize(&e->tcti);
		return -ENODEV;
	}
	return 0;
}

static void esys_close(struct esys *e)
{
	Esys_Finalize(&e->ctx);
	Tss2_TctiLdr_Finalize(&e->tcti);
}

static TSS2_RC pcr16(const char *tcti, bool extend)
{
	TPML_DIGEST_VALUES d = { .count = 1, .digests[0].hashAlg = TPM2_ALG_SHA256 };
	struct esys e;
	TSS2_RC rc;

	if (esys_open(tcti, &e) < 0)
		return TSS2_BASE_RC_IO_ERROR;
	memset(d.digests[0].digest.sha256, 0x5a, 32);
	if (extend)
		rc = Esys_PCR_Extend(e.ctx, ESYS_TR_PCR16, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d);
	else
		rc = Esys_PCR_Reset(e.ctx, ESYS_TR_PCR16, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
	esys_close(&e);
	return rc;
}

/* CreatePrimary with the backend's own template, as every lock and unlock does it. */
static void time_create_primary(const char *tcti)
{
	const TPM2B_SENSITIVE_CREATE sens = { 0 };
	const TPM2B_DATA outside = { 0 };
	const TPML_PCR_SELECTION pcr = { 0 };
	double min = 1e9, sum = 0;
	const int runs = 10;
	struct esys e;
	int ok = 0;

	if (esys_open(tcti, &e) < 0) {
		expect(false, "open %s for timing", tcti);
		return;
	}
	for (int i = 0; i < runs; i++) {
		ESYS_TR h = ESYS_TR_NONE;
		double t0 = now_ms(), dt;
		TSS2_RC rc;

		rc = Esys_CreatePrimary(e.ctx, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					ESYS_TR_NONE, &sens, &lr_tpm2_primary_template, &outside, &pcr, &h,
					NULL, NULL, NULL, NULL);
		dt = now_ms() - t0;
		if (rc != TSS2_RC_SUCCESS) {
			expect(false, "CreatePrimary: %s", Tss2_RC_Decode(rc));
			break;
		}
		Esys_FlushContext(e.ctx, h);
		ok++;
		sum += dt;
		if (dt < min)
			min = dt;
	}
	esys_close(&e);
	if (ok)
		printf("time CreatePrimary (ECC P-256 SRK) on %s: min %.2f ms, mean %.2f ms over %d runs\n",
		       tcti, min, sum / ok, ok);
}

static int do_lock(struct lr_hsm *hsm, const struct lr_secret *key, const uint8_t *binding,
		   struct json_object **obj)
{
	double t0 = now_ms();
	int r;

	last_log[0] = '\0';
	*obj = json_object_new_object();
	r = lr_backend_tpm2.lock(hsm, key, binding, *obj);
	printf("time lock: %.2f ms\n", now_ms() - t0);
	return r;
}

/* Unlock and compare with key; returns the unlock result, 1 when it unlocked another key. */
static int do_unlock(const struct lr_hsm *hsm, struct json_object *obj, const uint8_t *binding,
		     const struct lr_secret *key)
{
	struct lr_secret *out = NULL;
	int r;

	last_log[0] = '\0';
	r = lr_backend_tpm2.unlock(hsm, obj, binding, &out);
	if (r == 0 && lr_secret_cmp(out, key) != 0)
		r = 1;
	lr_secret_free(out);
	return r;
}

static struct json_object *copy_with(struct json_object *obj, const char *key, struct json_object *val)
{
	struct json_object *c = NULL;

	json_object_deep_copy(obj, &c, NULL);
	if (val)
		json_object_object_add(c, key, val);
	else
		json_object_object_del(c, key);
	return c;
}

static void test_basic(struct lr_hsm *hsm, const struct lr_secret *key, const uint8_t *good,
		       const uint8_t *bad)
{
	struct json_object *obj = NULL, *out = json_object_new_object(), *v;
	_cleanup_free_ char *key64 = lr_base64_encode(key->data, key->len);
	struct lr_hsm stored = *hsm;
	int r, rejected = 0;
	double t0;

	r = do_lock(hsm, key, good, &obj);
	expect(r == 0, "lock (r=%d)", r);
	if (r < 0)
		goto out;
	printf("     token data: %s\n", json_object_to_json_string(obj));
	expect(!strstr(json_object_to_json_string(obj), key64), "token data does not hold the key");
	expect(lr_backend_tpm2.validate(obj) == 0, "validate a fresh token");
	r = lr_backend_tpm2.describe(obj, out);
	expect(r == 0 && json_object_object_get_ex(out, "tcti", &v) && strcmp(json_object_get_string(v), hsm->config) == 0 &&
	       json_object_object_get_ex(out, "pcrs", &v) && json_object_array_length(v) == 0 &&
	       json_object_object_get_ex(out, "primary", &v) &&
	       strcmp(json_object_get_string(v), "ecc-p256-srk") == 0 &&
	       !json_object_object_get_ex(out, "private", NULL),
	       "describe: %s", json_object_to_json_string(out));

	t0 = now_ms();
	r = do_unlock(hsm, obj, good, key);
	printf("time unlock: %.2f ms\n", now_ms() - t0);
	expect(r == 0, "unlock gives the same key (r=%d)", r);
	stored.config = NULL;
	r = do_unlock(&stored, obj, good, key);
	expect(r == 0, "unlock with the TCTI stored in the token (r=%d)", r);

	r = do_unlock(hsm, obj, bad, key);
	expect(r == -EKEYREJECTED && logged("host binding"), "another binding digest: -EKEYREJECTED (r=%d)", r);
	for (int i = 0; i < 5; i++)
		rejected += do_unlock(hsm, obj, bad, key) == -EKEYREJECTED;
	expect(rejected == 5, "5 more wrong unlocks: -EKEYREJECTED each time (%d)", rejected);
	r = do_unlock(hsm, obj, good, key);
	expect(r == 0, "noDA: the right binding still unlocks after 6 failures (r=%d)", r);
out:
	json_object_put(out);
	json_object_put(obj);
}

static void test_pcr(struct lr_hsm *hsm, const struct lr_secret *key, const uint8_t *good,
		     const uint8_t *bad)
{
	struct lr_hsm pcr_hsm = *hsm;
	struct json_object *obj = NULL, *v;
	TSS2_RC rc;
	int r;

	rc = pcr16(hsm->config, false);
	expect(rc == TSS2_RC_SUCCESS, "reset PCR 16 (%s)", Tss2_RC_Decode(rc));
	pcr_hsm.pcr_mask = 1u << 16;
	r = do_lock(&pcr_hsm, key, good, &obj);
	expect(r == 0, "lock with PCR 16 (r=%d)", r);
	if (r < 0)
		goto out;
	printf("     token data: %s\n", json_object_to_json_string(obj));
	expect(json_object_object_get_ex(obj, "pcrs", &v) && json_object_array_length(v) == 1 &&
	       json_object_get_int(json_object_array_get_idx(v, 0)) == 16, "token records pcrs [16]");
	expect(lr_backend_tpm2.validate(obj) == 0, "validate a PCR token");
	r = do_unlock(hsm, obj, good, key);
	expect(r == 0, "unlock under PCR policy (r=%d)", r);
	r = do_unlock(hsm, obj, bad, key);
	expect(r == -EKEYREJECTED, "PCR policy, another binding digest: -EKEYREJECTED (r=%d)", r);
	rc = pcr16(hsm->config, true);
	expect(rc == TSS2_RC_SUCCESS, "extend PCR 16 (%s)", Tss2_RC_Decode(rc));
	r = do_unlock(hsm, obj, good, key);
	expect(r == -EKEYREJECTED && logged("PCR values differ from enrolment (PCRs 16)"),
	       "changed PCR 16: -EKEYREJECTED naming the PCR (r=%d)", r);
	rc = pcr16(hsm->config, false);
	r = do_unlock(hsm, obj, good, key);
	expect(rc == TSS2_RC_SUCCESS && r == 0, "PCR 16 reset to its enrolled value: unlocks again (r=%d)", r);
out:
	json_object_put(obj);
}

static void check_corrupt(const struct lr_hsm *hsm, struct json_object *obj, const char *key,
			  struct json_object *val, int want, const char *field, const uint8_t *binding,
			  const struct lr_secret *secret)
{
	struct json_object *c = copy_with(obj, key, val);
	int r, v;

	r = do_unlock(hsm, c, binding, secret);
	expect(r == want && logged(field), "%s=%s: unlock %d (r=%d)", key,
	       val ? json_object_to_json_string(val) : "(missing)", want, r);
	if (want == -EBADMSG) {
		last_log[0] = '\0';
		v = lr_backend_tpm2.validate(c);
		expect(v == -EBADMSG && logged(field), "%s: validate -EBADMSG naming %s (r=%d)", key, field, v);
	}
	json_object_put(c);
}

/* A private blob that unmarshals but was not wrapped by this TPM's storage key. */
static struct json_object *flipped_private(struct json_object *obj)
{
	struct json_object *v;
	uint8_t *buf = NULL;
	size_t len;
	char *s;

	json_object_object_get_ex(obj, "private", &v);
	if (lr_base64_decode(json_object_get_string(v), &buf, &len) < 0)
		return NULL;
	buf[len - 5] ^= 0x01;
	s = lr_base64_encode(buf, len);
	v = json_object_new_string(s);
	free(s);
	free(buf);
	return v;
}

static void test_corrupt(struct lr_hsm *hsm, const struct lr_secret *key, const uint8_t *good,
			 const char *other_tcti)
{
	struct json_object *obj = NULL, *pcrs;
	int r;

	r = do_lock(hsm, key, good, &obj);
	expect(r == 0, "lock (r=%d)", r);
	if (r < 0)
		goto out;
	check_corrupt(hsm, obj, "private", json_object_new_string("!!not base64!!"), -EBADMSG, "\"private\"", good, key);
	check_corrupt(hsm, obj, "private", json_object_new_string("AAE="), -EBADMSG, "\"private\"", good, key);
	check_corrupt(hsm, obj, "private", json_object_new_int(3), -EBADMSG, "\"private\"", good, key);
	check_corrupt(hsm, obj, "public", NULL, -EBADMSG, "\"public\"", good, key);
	check_corrupt(hsm, obj, "public", json_object_new_string("AAAA"), -EBADMSG, "\"public\"", good, key);
	check_corrupt(hsm, obj, "primary", json_object_new_string("rsa-2048"), -EBADMSG, "\"primary\"", good, key);
	check_corrupt(hsm, obj, "pcr_bank", json_object_new_string("sha1"), -EBADMSG, "\"pcr_bank\"", good, key);
	check_corrupt(hsm, obj, "tcti", NULL, -EBADMSG, "\"tcti\"", good, key);
	pcrs = json_object_new_array();
	json_object_array_add(pcrs, json_object_new_int(24));
	check_corrupt(hsm, obj, "pcrs", pcrs, -EBADMSG, "\"pcrs\"", good, key);
	pcrs = json_object_new_array();
	json_object_array_add(pcrs, json_object_new_string("7"));
	check_corrupt(hsm, obj, "pcrs", pcrs, -EBADMSG, "\"pcrs\"", good, key);
	check_corrupt(hsm, obj, "private", flipped_private(obj), -EKEYREJECTED, "sealed by another TPM", good, key);
	if (other_tcti) {
		struct lr_hsm other = *hsm;

		other.config = (char *)other_tcti;
		r = do_unlock(&other, obj, good, key);
		expect(r == -EKEYREJECTED && logged("sealed by another TPM"),
		       "unlock on another TPM: -EKEYREJECTED, sealed by another TPM (r=%d)", r);
	}
out:
	json_object_put(obj);
}

static void test_absent(const struct lr_secret *key, const uint8_t *good)
{
	struct lr_hsm none = { .backend = &lr_backend_tpm2, .config = (char *)"swtpm:path=/nonexistent/lockroot.sock" };
	struct json_object *obj = NULL;
	int r;

	r = do_lock(&none, key, good, &obj);
	expect(r == -ENODEV && logged("no TPM found at swtpm:path=/nonexistent/lockroot.sock"),
	       "lock, TCTI to a missing socket: -ENODEV (r=%d)", r);
	json_object_put(obj);
	last_log[0] = '\0';
	r = lr_backend_tpm2.probe(&none);
	expect(r == -ENODEV, "probe a missing socket: -ENODEV (r=%d)", r);
	/* The default TCTI, when this machine has no TPM of its own. */
	if (access("/dev/tpmrm0", F_OK) < 0) {
		none.config = NULL;
		last_log[0] = '\0';
		r = lr_backend_tpm2.probe(&none);
		expect(r == -ENODEV && logged("no TPM found at device:/dev/tpmrm0"),
		       "probe the default TCTI without a TPM: -ENODEV (r=%d)", r);
	}
	none.config = (char *)"nosuchtcti";
	last_log[0] = '\0';
	r = lr_backend_tpm2.probe(&none);
	expect(r == -ENODEV, "probe an unknown TCTI: -ENODEV (r=%d)", r);
}

/* Run through the pcap TCTI (TCTI_PCAP_FILE), the capture must not hold the key: the
 * sessions encrypt it both ways. */
static void check_wire(const char *pcap, const struct lr_secret *key)
{
	static uint8_t buf[1 << 22];
	size_t len = 0;
	FILE *f = fopen(pcap, "rb");

	if (f) {
		len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
	}
	expect(len > 0 && !memmem(buf, len, key->data, key->len),
	       "the key never crosses the wire in clear (%zu bytes captured)", len);
}

/* The fuse (tamper response): keys sealed under lockroot's persistent storage key; evicting
 * it (destroy) makes them unloadable for good, a copy of the token included, and a new fuse
 * does not bring them back. A token sealed under the primary has nothing to destroy. */
static void test_fuse(struct lr_hsm *hsm, const struct lr_secret *key, const uint8_t *good)
{
	struct lr_hsm fused = *hsm;
	struct json_object *a = NULL, *b = NULL, *plain = NULL, *v;
	double t0;
	int r;

	fused.tpm2_fuse = true;
	r = do_lock(&fused, key, good, &a);
	expect(r == 0 && json_object_object_get_ex(a, "fuse", &v) && strcmp(json_object_get_string(v), "0x81004c52") == 0,
	       "lock under the fuse (r=%d): %s", r, a ? json_object_to_json_string(a) : "");
	if (r < 0)
		goto out;
	last_log[0] = '\0';
	r = do_lock(&fused, key, good, &b);
	expect(r == 0 && !logged("created the TPM fuse"), "a second key under the same fuse (r=%d)", r);
	expect(lr_backend_tpm2.validate(a) == 0, "validate a fused token");
	expect(do_unlock(hsm, a, good, key) == 0 && do_unlock(hsm, b, good, key) == 0, "both unlock");
	r = do_lock(hsm, key, good, &plain);
	expect(r == 0 && lr_backend_tpm2.destroy(hsm, plain) == -EOPNOTSUPP,
	       "destroy of a token sealed under the primary: -EOPNOTSUPP");
	t0 = now_ms();
	r = lr_backend_tpm2.destroy(hsm, a);
	printf("time destroy (evict the fuse): %.2f ms\n", now_ms() - t0);
	expect(r == 0, "destroy evicts the fuse (r=%d)", r);
	last_log[0] = '\0';
	r = do_unlock(hsm, a, good, key);
	expect(r == -ENOKEY && logged("no longer has the fuse"), "the destroyed key: -ENOKEY (r=%d)", r);
	expect(do_unlock(hsm, b, good, key) == -ENOKEY, "the other key under it: -ENOKEY");
	expect(do_unlock(hsm, plain, good, key) == 0, "a key sealed under the primary is not affected");
	expect(lr_backend_tpm2.destroy(hsm, b) == 0, "destroy again: nothing left, no error");
	/* Re-arming creates another fuse at the same handle: the old blobs do not load under it. */
	json_object_put(b);
	b = NULL;
	r = do_lock(&fused, key, good, &b);
	expect(r == 0 && logged("created the TPM fuse"), "lock again: a new fuse (r=%d)", r);
	r = do_unlock(hsm, a, good, key);
	expect(r == -EKEYREJECTED, "the old token under the new fuse: -EKEYREJECTED (r=%d)", r);
	expect(do_unlock(hsm, b, good, key) == 0, "the new key unlocks");
	expect(lr_backend_tpm2.destroy(hsm, b) == 0, "clean up: destroy the new fuse");
out:
	json_object_put(a);
	json_object_put(b);
	json_object_put(plain);
}

int main(int argc, char **argv)
{
	struct lr_hsm hsm = { .backend = &lr_backend_tpm2 };
	struct lr_secret *key = NULL;
	uint8_t good[32], bad[32];
	struct json_object *obj;
	int r;

	if (argc < 2) {
		fprintf(stderr, "usage: %s TCTI [TCTI2]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	lr_set_log(log_hook, NULL);
	hsm.config = argv[1];
	for (int i = 0; i < 32; i++)
		good[i] = (uint8_t)i;
	memcpy(bad, good, 32);
	bad[31] ^= 0x80;
	r = lr_secret_random(32, &key);
	if (r < 0) {
		fprintf(stderr, "lr_secret_random: %s\n", strerror(-r));
		return 1;
	}
	expect(lr_backend_tpm2.probe(&hsm) == 0, "probe %s", argv[1]);
	test_basic(&hsm, key, good, bad);
	test_pcr(&hsm, key, good, bad);
	test_corrupt(&hsm, key, good, argc > 2 ? argv[2] : NULL);
	test_fuse(&hsm, key, good);
	test_absent(key, good);
	obj = json_object_new_string("x");
	expect(lr_backend_tpm2.validate(obj) == -EBADMSG, "validate a non-object");
	json_object_put(obj);
	time_create_primary(argv[1]);
	if (getenv("TCTI_PCAP_FILE") && strncmp(argv[1], "pcap:", 5) == 0)
		check_wire(getenv("TCTI_PCAP_FILE"), key);
	lr_secret_free(key);
	printf("%s: %d failure(s)\n", argv[0], failures);
	return failures ? 1 : 0;
}
