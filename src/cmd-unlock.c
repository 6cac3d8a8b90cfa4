/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot unlock DEVICE [NAME]: activate through the lockroot token, check it, or act as a
 * crypttab keyscript. */
#include <errno.h>
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot unlock DEVICE [NAME] [OPTIONS]\n\n"
	       "Unlock the LUKS2 volume DEVICE through its lockroot token and activate it as\n"
	       "/dev/mapper/NAME.\n\n"
	       "  --test           only check that the token unlocks the volume (no NAME, no device-mapper)\n"
	       "  --stdout         keyscript mode for /etc/crypttab: write the key to standard output,\n"
	       "                   which must be a pipe\n"
	       "  --token ID       use only this token\n"
	       "  --hsm SPEC       use this TCTI / PKCS#11 URI instead of the one stored in the token\n"
	       "  --pin-file F     PKCS#11 user PIN (asked on the terminal when needed and none is given)\n"
	       "  --readonly       activate read-only\n"
	       "  --allow-discards pass discards through to the device\n");
}

enum { OPT_TEST = 256, OPT_STDOUT, OPT_TOKEN, OPT_HSM, OPT_PIN_FILE, OPT_READONLY, OPT_DISCARD };

static const struct option options[] = {
	{ "test", no_argument, NULL, OPT_TEST },
	{ "stdout", no_argument, NULL, OPT_STDOUT },
	{ "token", required_argument, NULL, OPT_TOKEN },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "readonly", no_argument, NULL, OPT_READONLY },
	{ "allow-discards", no_argument, NULL, OPT_DISCARD },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static int write_key(const struct lr_secret *key)
{
	size_t n = 0;

	while (n < key->len) {
		ssize_t k = write(STDOUT_FILENO, key->data + n, key->len - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return LR_EXIT_FAILURE;
		n += (size_t)k;
	}
	return 0;
}

/* The key goes to a pipe (cryptsetup reading a keyscript) and nowhere else: not to a
 * terminal, where it would be shown, nor to a file, where it would outlive the boot. */
static int stdout_is_pipe(void)
{
	struct stat st;

	return fstat(STDOUT_FILENO, &st) == 0 && S_ISFIFO(st.st_mode);
}

int cmd_unlock(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pin = NULL, *key = NULL;
	struct lr_unlock_params p = { .token = -1 };
	struct lr_hsm hsm = { 0 };
	const char *spec = NULL, *pin_file = NULL;
	bool test = false, to_stdout = false;
	uint32_t token;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_TEST: test = true; break;
		case OPT_STDOUT: to_stdout = true; break;
		case OPT_HSM: spec = optarg; break;
		case OPT_PIN_FILE: pin_file = optarg; break;
		case OPT_READONLY: p.readonly = true; break;
		case OPT_DISCARD: p.discard = true; break;
		case OPT_TOKEN:
			if ((r = cli_parse_uint("unlock", "--token", optarg, &token)))
				return r;
			p.token = (int)token;
			break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind >= argc || argc - optind > 2)
		return cli_usage_error("unlock", "expected DEVICE [NAME]");
	p.device = argv[optind];
	p.name = argc - optind == 2 ? argv[optind + 1] : NULL;
	if (test && to_stdout)
		return cli_usage_error("unlock", "--test and --stdout exclude each other");
	if ((test || to_stdout) && p.name)
		return cli_usage_error("unlock", "NAME makes no sense with --test or --stdout");
	if (!test && !to_stdout && !p.name)
		return cli_usage_error("unlock", "NAME is needed to activate (or use --test)");
	if (to_stdout && !stdout_is_pipe()) {
		fprintf(stderr, "lockroot unlock: --stdout writes the key only to a pipe (a crypttab keyscript), "
			"and standard output is not one\n");
		return LR_EXIT_USAGE;
	}
	if (spec) {
		r = lr_hsm_parse(spec, &hsm);
		if (r < 0)
			return lr_exit_code(r);
	}
	r = cli_read_pin(pin_file, &pin);
	if (r < 0)
		goto out;
	hsm.pin = pin;
	p.hsm_override = &hsm;
	r = lr_unlock(&p, to_stdout ? &key : NULL);
	if (r == -ENOANO && !pin_file && !to_stdout && isatty(STDIN_FILENO)) {
		r = cli_read_passphrase(NULL, "the HSM PIN", &pin);
		if (r >= 0) {
			hsm.pin = pin;
			r = lr_unlock(&p, NULL);
		}
	}
	if (r < 0)
		goto out;
	if (to_stdout) {
		r = write_key(key);
		goto out;
	}
	if (!cli.quiet && p.name)
		fprintf(stderr, "lockroot: %s activated as /dev/mapper/%s (keyslot %d)\n", p.device, p.name, r);
	else if (!cli.quiet)
		fprintf(stderr, "lockroot: %s unlocks through its lockroot token (keyslot %d)\n", p.device, r);
	r = 0;
out:
	lr_hsm_done(&hsm);
	return r < 0 ? lr_exit_code(r) : r;
}
