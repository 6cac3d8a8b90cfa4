/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot keygen --hsm pkcs11:URI: create the token key lockroot encrypts with. */
#include <getopt.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot keygen --hsm pkcs11:URI [--pin-file F]\n\n"
	       "Create the non-extractable AES-256 key named by the URI's object= in the PKCS#11\n"
	       "token, unless it exists. (The tpm2 backend needs no key: it derives its storage\n"
	       "key from the TPM's owner seed on every use.)\n");
}

static const struct option options[] = {
	{ "hsm", required_argument, NULL, 'H' },
	{ "pin-file", required_argument, NULL, 'p' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

int cmd_keygen(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pin = NULL;
	struct lr_hsm hsm = { 0 };
	const char *spec = NULL, *pin_file = NULL;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'H': spec = optarg; break;
		case 'p': pin_file = optarg; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
	r = cli_hsm_setup("keygen", spec, NULL, pin_file, &hsm, &pin);
	if (r)
		goto out;
	if (!hsm.backend->keygen) {
		printf("The %s backend needs no key to be created.\n", hsm.backend->name);
		goto out;
	}
	r = hsm.backend->keygen(&hsm);
	if (r < 0) {
		r = lr_exit_code(r);
		goto out;
	}
	/* The backend has said which key it created; only "nothing to do" needs saying here. */
	if (r == 0)
		printf("The key exists already; nothing changed.\n");
	r = 0;
out:
	lr_hsm_done(&hsm);
	return r;
}
