/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot format DEVICE --hsm SPEC: a new LUKS2 volume whose first keyslot is HSM-locked. */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot format DEVICE --hsm SPEC [OPTIONS]\n\n"
	       "Create a new LUKS2 volume on DEVICE (destroying what it holds) whose key is locked by\n"
	       "the HSM and bound to this host.\n\n"
	       "  --hsm SPEC            tpm2[:TCTI] or pkcs11:URI\n"
	       "  --bind LIST           host components (see lockroot enroll --help)\n"
	       "  --pcrs LIST           tpm2: also bind to these PCRs\n"
	       "  --pin-file F          PKCS#11 user PIN\n"
	       "  --recovery-key        also create a recovery key (shown once)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "  --cipher C            default aes-xts-plain64; xchacha12,aes-adiantum-plain64 without AES instructions\n"
	       "  --key-size BITS       volume key size (default 512 for XTS, else 256)\n"
	       "  --label L             LUKS2 label\n"
	       "  --key-file F          also add this passphrase (a keyslot a person can use)\n"
	       "  -y, --yes             do not ask before destroying DEVICE's contents\n");
}

enum { OPT_HSM = 256, OPT_BIND, OPT_PCRS, OPT_PIN_FILE, OPT_RECOVERY, OPT_RMEM, OPT_RITER, OPT_CIPHER,
       OPT_KEY_SIZE, OPT_LABEL, OPT_KEY_FILE };

static const struct option options[] = {
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "recovery-key", no_argument, NULL, OPT_RECOVERY },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "cipher", required_argument, NULL, OPT_CIPHER },
	{ "key-size", required_argument, NULL, OPT_KEY_SIZE },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

int cmd_format(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pass = NULL, *pin = NULL;
	struct lr_format_params p = { 0 };
	struct lr_enroll_result res = { 0 };
	struct lr_hsm hsm = { 0 };
	const char *spec = NULL, *pcrs = NULL, *bind = NULL, *key_file = NULL, *pin_file = NULL;
	bool yes = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "yh", options, NULL)) >= 0) {
		switch (c) {
		case OPT_HSM: spec = optarg; break;
		case OPT_BIND: bind = optarg; break;
		case OPT_PCRS: pcrs = optarg; break;
		case OPT_PIN_FILE: pin_file = optarg; break;
		case OPT_RECOVERY: p.recovery_key = true; break;
		case OPT_CIPHER: p.cipher = optarg; break;
		case OPT_LABEL: p.label = optarg; break;
		case OPT_KEY_FILE: key_file = optarg; break;
		case OPT_KEY_SIZE:
			if ((r = cli_parse_uint("format", "--key-size", optarg, &p.key_bits)))
				return r;
			break;
		case OPT_RMEM:
			if ((r = cli_parse_uint("format", "--recovery-pbkdf-memory", optarg, &p.recovery_cost.memory_kb)))
				return r;
			break;
		case OPT_RITER:
			if ((r = cli_parse_uint("format", "--recovery-pbkdf-iterations", optarg, &p.recovery_cost.iterations)))
				return r;
			break;
		case 'y': yes = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("format", "expected exactly one DEVICE");
	p.device = argv[optind];
	r = cli_hsm_setup("format", spec, pcrs, pin_file, &hsm, &pin);
	if (r)
		goto out;
	r = cli_bind_setup("format", bind, &p.bind_mask, &p.bind_default);
	if (r)
		goto out;
	p.hsm = &hsm;
	if (key_file) {
		r = cli_read_passphrase(key_file, "a passphrase", &pass);
		if (r < 0) {
			r = lr_exit_code(r);
			goto out;
		}
		p.passphrase = pass;
	}
	if (!yes) {
		char question[512];

		snprintf(question, sizeof(question), "This destroys everything on %s. Type YES to go on:", p.device);
		if (!cli_confirm("format", question, "YES"))
			r = LR_EXIT_FAILURE;
	}
	if (r) {
		r = LR_EXIT_FAILURE;
		goto out;
	}
	r = lr_format(&p, &res);
	if (r < 0) {
		r = lr_exit_code(r);
		goto out;
	}
	printf("Formatted %s as LUKS2: HSM keyslot %d, token %d.\n", p.device, res.keyslot, res.token);
	if (res.recovery_key)
		cli_show_recovery_key(res.recovery_key, res.recovery_keyslot);
	r = 0;
out:
	lr_enroll_result_done(&res);
	lr_hsm_done(&hsm);
	return r;
}
