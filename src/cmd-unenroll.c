/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot unenroll DEVICE [--token ID | --all]: remove tokens and the keyslots they open. */
#include <getopt.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot unenroll DEVICE [--token ID | --all] [--force]\n\n"
	       "Remove lockroot tokens and their keyslots from DEVICE. Recovery and passphrase\n"
	       "keyslots stay. With one lockroot token, --token and --all may be left out.\n\n"
	       "  --token ID   remove this token\n"
	       "  --all        remove every lockroot token\n"
	       "  --force      even if no keyslot would be left (the data becomes unreadable)\n");
}

enum { OPT_TOKEN = 256, OPT_ALL, OPT_FORCE };

static const struct option options[] = {
	{ "token", required_argument, NULL, OPT_TOKEN },
	{ "all", no_argument, NULL, OPT_ALL },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

int cmd_unenroll(int argc, char **argv)
{
	bool all = false, force = false;
	uint32_t token;
	int id = -1, c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_TOKEN:
			if ((r = cli_parse_uint("unenroll", "--token", optarg, &token)))
				return r;
			id = (int)token;
			break;
		case OPT_ALL: all = true; break;
		case OPT_FORCE: force = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("unenroll", "expected exactly one DEVICE");
	if (all && id >= 0)
		return cli_usage_error("unenroll", "--token and --all exclude each other");
	r = lr_unenroll(argv[optind], id, force);
	if (r < 0)
		return lr_exit_code(r);
	printf("Removed %d lockroot token%s from %s.\n", r, r == 1 ? "" : "s", argv[optind]);
	return 0;
}
