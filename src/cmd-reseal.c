/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot reseal [DEVICE...]: lock the key again to the boot files as they are now, after a
 * kernel or initramfs update on the running system (called by the kernel and initramfs hooks).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot reseal [DEVICE...] [OPTIONS]\n\n"
	       "Lock the key of every lockroot token bound to the boot files (--bind ...,boot-files)\n"
	       "again, to the kernel, initramfs, cmdline.txt, config.txt and device trees as they are\n"
	       "now. Run by lockroot's kernel and initramfs hooks after an update, so that an update\n"
	       "made on the running system never locks the board out. The HSM gives the key back only\n"
	       "for the boot files the token recorded; a token whose files are unchanged is left alone.\n"
	       "Without DEVICE: every volume in /etc/crypttab.\n\n"
	       "  --key-file F   the boot files were changed elsewhere and the change is to be kept:\n"
	       "                 a new key, authorised by this passphrase or recovery key ('-' = stdin)\n"
	       "  --hsm SPEC     another TCTI / PKCS#11 URI than the token's\n"
	       "  --pin-file F   PKCS#11 user PIN\n"
	       "  --if-bound     no error when no volume binds the boot files (for hooks)\n");
}

enum { OPT_KEY_FILE = 256, OPT_HSM, OPT_PIN_FILE, OPT_IF_BOUND };

static const struct option options[] = {
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "if-bound", no_argument, NULL, OPT_IF_BOUND },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

int cmd_reseal(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pass = NULL, *pin = NULL;
	const char *key_file = NULL, *spec = NULL, *pin_file = NULL;
	struct lr_hsm hsm = { 0 };
	bool if_bound = false;
	char **devs = NULL;
	size_t ndev = 0;
	int c, r, rc = 0, bound = 0;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_KEY_FILE: key_file = optarg; break;
		case OPT_HSM: spec = optarg; break;
		case OPT_PIN_FILE: pin_file = optarg; break;
		case OPT_IF_BOUND: if_bound = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (spec) {
		r = cli_hsm_setup("reseal", spec, NULL, pin_file, &hsm, &pin);
		if (r)
			return r;
	} else if (pin_file) {
		r = cli_read_pin(pin_file, &pin);
		if (r < 0)
			return lr_exit_code(r);
		hsm.pin = pin; /* the backend and its TCTI / URI: the token's */
	}
	if (key_file) {
		r = cli_read_passphrase(key_file, "a passphrase or the recovery key of the volume", &pass);
		if (r < 0) {
			rc = lr_exit_code(r);
			goto out;
		}
	}
	if (optind < argc) {
		devs = calloc((size_t)(argc - optind), sizeof(*devs));
		if (!devs) {
			rc = LR_EXIT_FAILURE;
			goto out;
		}
		for (int i = optind; i < argc; i++)
			devs[ndev++] = strdup(argv[i]);
	} else {
		struct json_object *list = json_object_new_array();

		if (!list || cli_crypttab_devices(list) < 0 ||
		    !(devs = calloc(json_object_array_length(list) + 1, sizeof(*devs)))) {
			json_object_put(list);
			rc = LR_EXIT_FAILURE;
			goto out;
		}
		for (size_t i = 0; i < json_object_array_length(list); i++)
			devs[ndev++] = strdup(json_object_get_string(json_object_array_get_idx(list, i)));
		json_object_put(list);
	}
	for (size_t i = 0; i < ndev; i++) {
		int n = 0;

		if (!devs[i]) {
			rc = LR_EXIT_FAILURE;
			continue;
		}
		r = pass ? lr_reseal_with_passphrase(devs[i], &hsm, pass, &n) : lr_reseal(devs[i], &hsm, &n);
		/* From crypttab: a volume that cannot even be read as LUKS2 binds nothing (a kernel
		 * update must not fail for it). */
		if (r == -ENOMSG || (optind >= argc && (r == -EMEDIUMTYPE || r == -ENOENT || r == -ENXIO ||
							 r == -ENOTBLK || r == -EACCES || r == -EINVAL))) {
			lr_debug("%s: nothing bound to the boot files", devs[i]);
			continue;
		}
		bound++;
		if (r < 0) {
			rc = rc ? rc : lr_exit_code(r);
			continue;
		}
		if (!cli.quiet)
			printf(n ? "%s: locked again to the boot files as they are now (%d token%s).\n"
				 : "%s: the boot files are as the key was locked to them: nothing to do.\n",
			       devs[i], n, n == 1 ? "" : "s");
	}
	if (bound == 0 && !if_bound && rc == 0) {
		lr_error("no volume%s binds the boot files (enroll with --bind ...,boot-files)",
			 optind < argc ? " given" : " in /etc/crypttab");
		rc = LR_EXIT_NOT_ENROLLED;
	}
out:
	for (size_t i = 0; i < ndev; i++)
		free(devs[i]);
	free(devs);
	lr_hsm_done(&hsm);
	return rc;
}
