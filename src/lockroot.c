/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot: HSM-locked LUKS2 keys bound to one host. Dispatches to src/cmd-<verb>.c. */
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "cli.h"

static const struct {
	const char *verb;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "enroll", cmd_enroll, "lock a new LUKS2 keyslot with an HSM bound to this host" },
	{ "format", cmd_format, "create a new LUKS2 volume whose key is HSM-locked" },
	{ "unlock", cmd_unlock, "activate (or --test) a volume through its lockroot token" },
	{ "unenroll", cmd_unenroll, "remove lockroot tokens and their keyslots" },
	{ "status", cmd_status, "show keyslots, tokens, backends and bindings" },
	{ "fingerprint", cmd_fingerprint, "show the host identity a key is bound to" },
	{ "keygen", cmd_keygen, "create the HSM key (PKCS#11) if it does not exist" },
	{ "setup-boot", cmd_setup_boot, "unlock an encrypted root at boot through the HSM" },
	{ "migrate", cmd_migrate, "move the running root to an encrypted external drive" },
	{ "convert", cmd_convert, "encrypt the running root in place" },
	{ "image", cmd_image, "encrypt a disk image once for a fleet of units" },
	{ "provision", cmd_provision, "give a unit made from a fleet image its own key (first boot)" },
	{ "reseal", cmd_reseal, "lock the key again to updated boot files (kernel, initramfs)" },
	{ "tamper", cmd_tamper, "tamper response: GPIO lines that destroy the keys or notify" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: lockroot [-v|--verbose] [-q|--quiet] COMMAND [ARGS]\n\nCommands:\n");
	for (size_t i = 0; i < LR_ELEMENTSOF(commands); i++)
		fprintf(f, "  %-12s %s\n", commands[i].verb, commands[i].summary);
	fprintf(f, "\n'lockroot COMMAND --help' for a command's options; man lockroot(8) for exit codes.\n");
}

int main(int argc, char **argv)
{
	const struct rlimit no_core = { 0, 0 };
	int i = 1;

	/* Keys pass through this process: never into a core dump. */
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0);
	lr_set_log(cli_log, NULL);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			cli.verbose = true;
		else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			cli.quiet = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--version")) {
			printf("lockroot %s\n", LOCKROOT_VERSION);
			return 0;
		} else {
			usage(stderr);
			return LR_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return LR_EXIT_USAGE;
	}
	for (size_t c = 0; c < LR_ELEMENTSOF(commands); c++)
		if (strcmp(argv[i], commands[c].verb) == 0)
			return commands[c].run(argc - i, argv + i);
	fprintf(stderr, "lockroot: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return LR_EXIT_USAGE;
}
