/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot enroll DEVICE --hsm SPEC: add an HSM-locked keyslot and its token. */
#include <getopt.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot enroll DEVICE --hsm tpm2[:TCTI] | --hsm pkcs11:URI [OPTIONS]\n\n"
	       "Add a keyslot to the LUKS2 volume DEVICE whose random key is locked by the HSM and\n"
	       "bound to this host, and a 'lockroot' token that lets it unlock unattended.\n\n"
	       "  --hsm SPEC                  tpm2 (device /dev/tpmrm0), tpm2:TCTI, or pkcs11:URI (RFC 7512)\n"
	       "  --bind LIST                 host components: board-serial,sd-cid,disk-serial,dmi-uuid,\n"
	       "                              boot-files, 'default' (what this host has) or 'none'\n"
	       "  --boot-dev SPEC             with boot-files: the boot partition (PARTUUID=, UUID=,\n"
	       "                              LABEL=, a device); default: the one mounted at\n"
	       "                              /boot/firmware (or /boot)\n"
	       "  --pcrs LIST                 tpm2: also bind to these PCRs (sha256 bank), e.g. 0,7\n"
	       "  --tpm-fuse                  tpm2: seal under lockroot's persistent TPM key (the fuse),\n"
	       "                              which tamper response destroys (lockroot-tamper(8))\n"
	       "  --key-file F                an existing passphrase that authorises ('-' = stdin);\n"
	       "                              without it the passphrase is asked on the terminal\n"
	       "  --pin-file F                PKCS#11 user PIN (else the URI's pin-source)\n"
	       "  --recovery-key              also create a recovery key (shown once)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "                              Argon2id cost of the recovery keyslot (default: benchmarked,\n"
	       "                              at most 128 MiB so a 512 MiB board can open it)\n"
	       "  --json                      print the result as JSON\n");
}

enum { OPT_HSM = 256, OPT_BIND, OPT_PCRS, OPT_KEY_FILE, OPT_PIN_FILE, OPT_RECOVERY, OPT_RMEM, OPT_RITER, OPT_JSON, OPT_BOOT_DEV, OPT_FUSE };

static const struct option options[] = {
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "recovery-key", no_argument, NULL, OPT_RECOVERY },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "boot-dev", required_argument, NULL, OPT_BOOT_DEV },
	{ "tpm-fuse", no_argument, NULL, OPT_FUSE },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static void report(const struct lr_enroll_params *p, const struct lr_enroll_result *res, bool json)
{
	char bind[128];

	lr_bind_format(res->bind_mask, bind, sizeof(bind));
	if (json) {
		struct json_object *o = json_object_new_object(), *rk;
		const char *text;

		json_object_object_add(o, "device", json_object_new_string(p->device));
		json_object_object_add(o, "keyslot", json_object_new_int(res->keyslot));
		json_object_object_add(o, "token", json_object_new_int(res->token));
		json_object_object_add(o, "backend", json_object_new_string(p->hsm->backend->name));
		json_object_object_add(o, "bind", json_object_new_string(bind));
		if (res->recovery_key) {
			json_object_object_add(o, "recovery_keyslot", json_object_new_int(res->recovery_keyslot));
			json_object_object_add(o, "recovery_key",
					       json_object_new_string((const char *)res->recovery_key->data));
		}
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
		puts(text);
		fflush(stdout);
		/* json-c holds the recovery key twice (the string and the serialised text), in its
		 * own heap buffers: wipe both before they are freed. */
		explicit_bzero((char *)text, strlen(text));
		if (json_object_object_get_ex(o, "recovery_key", &rk))
			explicit_bzero((char *)json_object_get_string(rk), (size_t)json_object_get_string_len(rk));
		json_object_put(o);
		return;
	}
	printf("Enrolled %s: keyslot %d, token %d, locked by %s, bound to %s.\n", p->device, res->keyslot,
	       res->token, p->hsm->backend->name, strcmp(bind, "none") ? bind : "no host component");
	if (res->recovery_key)
		cli_show_recovery_key(res->recovery_key, res->recovery_keyslot);
}

int cmd_enroll(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pass = NULL, *pin = NULL;
	struct lr_enroll_params p = { 0 };
	struct lr_enroll_result res = { 0 };
	struct lr_hsm hsm = { 0 };
	const char *spec = NULL, *pcrs = NULL, *bind = NULL, *key_file = NULL, *pin_file = NULL;
	bool json = false, fuse = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_HSM: spec = optarg; break;
		case OPT_BIND: bind = optarg; break;
		case OPT_PCRS: pcrs = optarg; break;
		case OPT_KEY_FILE: key_file = optarg; break;
		case OPT_PIN_FILE: pin_file = optarg; break;
		case OPT_RECOVERY: p.recovery_key = true; break;
		case OPT_JSON: json = true; break;
		case OPT_BOOT_DEV: p.boot_spec = optarg; break;
		case OPT_FUSE: fuse = true; break;
		case OPT_RMEM:
			if ((r = cli_parse_uint("enroll", "--recovery-pbkdf-memory", optarg, &p.recovery_cost.memory_kb)))
				return r;
			break;
		case OPT_RITER:
			if ((r = cli_parse_uint("enroll", "--recovery-pbkdf-iterations", optarg, &p.recovery_cost.iterations)))
				return r;
			break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("enroll", "expected exactly one DEVICE");
	p.device = argv[optind];
	r = cli_hsm_setup("enroll", spec, pcrs, pin_file, &hsm, &pin);
	if (r)
		goto out;
	r = cli_bind_setup("enroll", bind, &p.bind_mask, &p.bind_default);
	if (r)
		goto out;
	if (fuse && strcmp(hsm.backend->name, "tpm2") != 0) {
		r = cli_usage_error("enroll", "--tpm-fuse is for --hsm tpm2");
		goto out;
	}
	hsm.tpm2_fuse = fuse;
	p.hsm = &hsm;
	r = cli_read_passphrase(key_file, "an existing passphrase of the volume", &pass);
	if (r < 0) {
		r = lr_exit_code(r);
		goto out;
	}
	p.passphrase = pass;
	r = lr_enroll(&p, &res);
	if (r < 0 && res.keyslot < 0) {
		r = lr_exit_code(r);
		goto out;
	}
	report(&p, &res, json);
	r = r < 0 ? lr_exit_code(r) : 0;
out:
	lr_enroll_result_done(&res);
	lr_hsm_done(&hsm);
	return r;
}
