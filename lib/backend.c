/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log.h"

static const struct lr_backend *const backends[] = {
#if HAVE_TPM2
	&lr_backend_tpm2,
#endif
#if HAVE_PKCS11
	&lr_backend_pkcs11,
#endif
};

const struct lr_backend *lr_backend_find(const char *name)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

int lr_hsm_parse(const char *spec, struct lr_hsm *hsm)
{
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
	char name[16];

	memset(hsm, 0, sizeof(*hsm));
	if (n == 0 || n >= sizeof(name))
		return lr_error_code(-EINVAL, "invalid --hsm '%s': expected tpm2[:TCTI] or pkcs11:URI", spec);
	memcpy(name, spec, n);
	name[n] = '\0';
	hsm->backend = lr_backend_find(name);
	if (!hsm->backend) {
		if (strcmp(name, "tpm2") == 0 || strcmp(name, "pkcs11") == 0)
			return lr_error_code(-EOPNOTSUPP, "the %s backend is not built into this lockroot", name);
		return lr_error_code(-EINVAL, "unknown HSM backend '%s' (expected tpm2[:TCTI] or pkcs11:URI)", name);
	}
	/* A PKCS#11 URI keeps its scheme: "pkcs11:token=...". */
	if (strcmp(name, "pkcs11") == 0) {
		if (!colon || !colon[1])
			return lr_error_code(-EINVAL, "--hsm pkcs11 needs a URI: pkcs11:token=...;object=...");
		hsm->config = strdup(spec);
	} else if (colon && colon[1]) {
		hsm->config = strdup(colon + 1);
	}
	if (colon && colon[1] && !hsm->config)
		return -ENOMEM;
	return 0;
}

void lr_hsm_done(struct lr_hsm *hsm)
{
	/* A PKCS#11 URI may carry pin-value=. */
	if (hsm->config)
		explicit_bzero(hsm->config, strlen(hsm->config));
	free(hsm->config);
	hsm->config = NULL;
}
