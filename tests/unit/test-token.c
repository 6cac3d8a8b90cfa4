/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Token JSON: round trip, and every way a token can be broken is refused with its reason. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "lockroot.h"

#include "check.h"

static char last_log[1024];


static void capture(int level, const char *msg, void *u)
{
	(void)level;
	(void)u;
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

static const char good[] =
	"{\"type\":\"lockroot\",\"keyslots\":[\"3\"],\"lockroot_version\":1,\"backend\":\"tpm2\","
	"\"bind\":[{\"name\":\"board-serial\",\"check\":\"a1b2\"},{\"name\":\"sd-cid\",\"check\":\"0f0e\"}],"
	"\"bind_salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\"tpm2\":{\"tcti\":\"device:/dev/tpmrm0\"}}";

static void test_roundtrip(void)
{
	struct lr_token t, u;
	char *json = NULL;

	CHECK(lr_token_parse(good, &t) == 0);
	CHECK(t.version == 1);
	CHECK(t.keyslot == 3);
	CHECK(strcmp(t.backend, "tpm2") == 0);
	CHECK(t.bind_mask == ((1u << LR_COMP_BOARD_SERIAL) | (1u << LR_COMP_SD_CID)));
	CHECK(strcmp(t.bind_check[LR_COMP_SD_CID], "0f0e") == 0);
	CHECK(t.bind_salt[15] == 15);
	CHECK(lr_token_format(&t, &json) == 0);
	CHECK(json && lr_token_parse(json, &u) == 0);
	CHECK(u.keyslot == 3 && u.bind_mask == t.bind_mask && memcmp(u.bind_salt, t.bind_salt, 16) == 0);
	CHECK(strcmp(json_object_get_string(json_object_object_get(u.backend_data, "tcti")), "device:/dev/tpmrm0") == 0);
	lr_token_done(&u);
	lr_token_done(&t);
	free(json);
}

/* Replace the first occurrence of from with to in good and expect err and a log naming what. */
static void expect_broken(const char *from, const char *to, int err, const char *what)
{
	char buf[2048], *p;
	struct lr_token t;
	int r;

	snprintf(buf, sizeof(buf), "%s", good);
	p = strstr(buf, from);
	if (!p) {
		fprintf(stderr, "test bug: '%s' not in token\n", from);
		failures++;
		return;
	}
	memmove(p + strlen(to), p + strlen(from), strlen(p + strlen(from)) + 1);
	memcpy(p, to, strlen(to));
	last_log[0] = '\0';
	r = lr_token_parse(buf, &t);
	if (r != err || (what && !strstr(last_log, what))) {
		fprintf(stderr, "token with '%s'->'%s': got %d (%s), log '%s', expected %d and '%s'\n", from, to, r,
			strerror(-r), last_log, err, what ? what : "");
		failures++;
	}
	if (r == 0)
		lr_token_done(&t);
}

static const char boot[] =
	"{\"type\":\"lockroot\",\"keyslots\":[\"1\"],\"lockroot_version\":2,\"backend\":\"tpm2\","
	"\"bind\":[{\"name\":\"dmi-uuid\",\"check\":\"a1b2\"},{\"name\":\"boot-files\",\"check\":\"0f0e\"}],"
	"\"bind_salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\"boot_files\":{\"device\":\"PARTUUID=6c72706c-01\",\"files\":["
	"{\"path\":\"config.txt\",\"sha256\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"},"
	"{\"path\":\"overlays/x.dtbo\",\"sha256\":\"-\"}]},\"tpm2\":{\"tcti\":\"device:/dev/tpmrm0\"}}";

/* A token bound to the boot files: version 2, the record of the files round-trips; a token
 * without boot files is still written as version 1 (older lockroots read it). */
static void test_boot_files(void)
{
	struct lr_token t, u;
	char *json = NULL;

	CHECK(lr_token_parse(boot, &t) == 0);
	CHECK(t.version == 2 && (t.bind_mask & (1u << LR_COMP_BOOT_FILES)));
	CHECK(t.boot_spec && strcmp(t.boot_spec, "PARTUUID=6c72706c-01") == 0);
	CHECK(t.boot_files.n == 2 && strcmp(t.boot_files.f[1].path, "overlays/x.dtbo") == 0 &&
	      strcmp(t.boot_files.f[1].sha256, "-") == 0);
	CHECK(lr_token_format(&t, &json) == 0);
	CHECK(json && strstr(json, "\"lockroot_version\":2") && lr_token_parse(json, &u) == 0);
	CHECK(u.boot_files.n == 2 && strcmp(u.boot_files.f[0].sha256, t.boot_files.f[0].sha256) == 0);
	lr_token_done(&u);
	lr_token_done(&t);
	free(json);
	CHECK(lr_token_parse(good, &t) == 0);
	CHECK(lr_token_format(&t, &json) == 0);
	CHECK(json && strstr(json, "\"lockroot_version\":1"));
	lr_token_done(&t);
	free(json);
}

static void test_broken(void)
{
	expect_broken("{\"type\"", "[\"type\"", -EBADMSG, "JSON");
	expect_broken("}}", "}", -EBADMSG, "JSON");
	expect_broken("\"lockroot_version\":1", "\"lockroot_version\":3", -EPROTONOSUPPORT, "newer");
	/* boot-files in "bind" and a "boot_files" record go together */
	expect_broken("\"sd-cid\"", "\"boot-files\"", -EBADMSG, "boot_files");
	expect_broken("\"bind_salt\"", "\"boot_files\":{\"device\":\"/b\",\"files\":[]},\"bind_salt\"", -EBADMSG,
		      "boot_files");
	expect_broken("\"lockroot_version\":1", "\"lockroot_version\":\"1\"", -EBADMSG, "lockroot_version");
	expect_broken("\"lockroot_version\":1", "\"lockroot_version\":0", -EBADMSG, "lockroot_version");
	expect_broken("[\"3\"]", "[\"3\",\"4\",\"5\"]", -EBADMSG, "keyslots");
	expect_broken("[\"3\"]", "[\"3\",\"x\"]", -EBADMSG, "keyslots");
	expect_broken("[\"3\"]", "[\"x\"]", -EBADMSG, "keyslots");
	expect_broken("[\"3\"]", "[3]", -EBADMSG, "keyslots");
	expect_broken("[\"3\"]", "[\"99\"]", -EBADMSG, "keyslots");
	expect_broken("\"backend\":\"tpm2\"", "\"backend\":\"\"", -EBADMSG, "backend");
	expect_broken("\"backend\":\"tpm2\"", "\"backend\":\"pkcs11\"", -EBADMSG, "backend object");
	expect_broken("board-serial", "board-colour", -EBADMSG, "unknown component");
	expect_broken("a1b2", "a1b", -EBADMSG, "check");
	expect_broken("a1b2", "A1B2", -EBADMSG, "check");
	expect_broken("AAECAwQFBgcICQoLDA0ODw==", "AAECAwQF", -EBADMSG, "bind_salt");
	expect_broken("AAECAwQFBgcICQoLDA0ODw==", "!!!!", -EBADMSG, "bind_salt");
	expect_broken("\"type\":\"lockroot\"", "\"type\":\"systemd-tpm2\"", -EMEDIUMTYPE, NULL);
	expect_broken("\"bind\":[", "\"bond\":[", -EBADMSG, "bind");
}

static void test_recovery_key(void)
{
	struct lr_secret *k = NULL, *n = NULL, *k2 = NULL;
	char typed[64];

	CHECK(lr_recovery_key_generate(&k) == 0);
	CHECK(k->len == 39);
	CHECK(k->data[4] == '-' && k->data[34] == '-');
	CHECK(lr_recovery_key_generate(&k2) == 0);
	CHECK(lr_secret_cmp(k, k2) != 0);
	/* What a person types: lower case, spaces for dashes. */
	snprintf(typed, sizeof(typed), "%s", (const char *)k->data);
	for (char *p = typed; *p; p++)
		*p = *p == '-' ? ' ' : (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
	CHECK(lr_recovery_key_normalize(typed, &n) == 0);
	CHECK(n && lr_secret_cmp(k, n) == 0);
	lr_secret_free(n);
	n = NULL;
	CHECK(lr_recovery_key_normalize("oooo-iiii-llll-0000-1111-2222-3333-4444", &n) == 0);
	CHECK(n && strcmp((const char *)n->data, "0000-1111-1111-0000-1111-2222-3333-4444") == 0);
	lr_secret_free(n);
	n = NULL;
	CHECK(lr_recovery_key_normalize("0000-1111", &n) == -EINVAL);
	CHECK(lr_recovery_key_normalize("UUUU-1111-1111-0000-1111-2222-3333-4444", &n) == -EINVAL);
	CHECK(lr_recovery_key_normalize("0000-1111-1111-0000-1111-2222-3333-44445", &n) == -EINVAL);
	lr_secret_free(k);
	lr_secret_free(k2);
}

int main(void)
{
	lr_set_log(capture, NULL);
	test_roundtrip();
	test_boot_files();
	test_broken();
	test_recovery_key();
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
