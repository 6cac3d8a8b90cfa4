/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot fingerprint [--bind LIST] [--device DEV] [--json]: the host identity. */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot fingerprint [--bind LIST] [--device DEV] [--json]\n\n"
	       "Show the host components a key can be bound to, where each was read, which are used\n"
	       "by default, and the digest of the chosen set.\n\n"
	       "  --bind LIST    components: board-serial,sd-cid,disk-serial,dmi-uuid, default, none\n"
	       "  --device DEV   the volume whose disk serial counts (default: none)\n"
	       "  --json         machine-readable output\n");
}

static const struct option options[] = {
	{ "bind", required_argument, NULL, 'b' },
	{ "device", required_argument, NULL, 'd' },
	{ "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static struct json_object *to_json(const struct lr_fingerprint *fp, uint32_t mask, const char *digest)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

	for (int i = 0; i < LR_COMP_MAX; i++) {
		const struct lr_component *c = &fp->comp[i];
		struct json_object *e = json_object_new_object();

		json_object_object_add(e, "name", json_object_new_string(lr_component_name(i)));
		json_object_object_add(e, "description", json_object_new_string(lr_component_description(i)));
		json_object_object_add(e, "present", json_object_new_boolean(c->value != NULL));
		json_object_object_add(e, "selected", json_object_new_boolean(!!(mask & (1u << i))));
		if (c->value) {
			json_object_object_add(e, "value", json_object_new_string(c->value));
			json_object_object_add(e, "source", json_object_new_string(c->source ? c->source : ""));
		} else {
			json_object_object_add(e, "error", json_object_new_string(strerror(-c->error)));
		}
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "board", json_object_new_string(fp->is_pi ? "device-tree" : "pc"));
	json_object_object_add(o, "components", arr);
	json_object_object_add(o, "digest", digest ? json_object_new_string(digest) : NULL);
	return o;
}

static void print_text(const struct lr_fingerprint *fp, uint32_t mask, const char *digest)
{
	printf("host: %s\n", fp->is_pi ? "device-tree board (Raspberry Pi or similar)" : "PC (DMI)");
	for (int i = 0; i < LR_COMP_MAX; i++) {
		const struct lr_component *c = &fp->comp[i];

		printf("  %c %-13s %-34s %s\n", mask & (1u << i) ? '*' : ' ', lr_component_name(i),
		       c->value ? c->value : "(absent)", c->value && c->source ? c->source : "");
	}
	printf("* = bound; digest: %s\n", digest ? digest : "(a selected component is absent)");
}

int cmd_fingerprint(int argc, char **argv)
{
	struct lr_fingerprint fp = { 0 };
	const char *bind = NULL, *device = NULL;
	uint32_t mask = 0;
	bool json = false, def = false;
	uint8_t digest[32];
	char hex[65];
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'b': bind = optarg; break;
		case 'd': device = optarg; break;
		case 'j': json = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_usage_error("fingerprint", "unexpected argument '%s'", argv[optind]);
	r = cli_bind_setup("fingerprint", bind, &mask, &def);
	if (r)
		return r;
	r = lr_fingerprint_read(device, &fp);
	if (r < 0)
		return lr_exit_code(r);
	{
		/* The boot files of the running system, where they are mounted (best effort: an
		 * error only when --bind names them, through the digest below). */
		_cleanup_free_ char *spec = NULL;
		struct lr_bootfiles bf = { 0 };

		lr_log_demote(1);
		if (lr_bootdir_default_spec(&spec) == 0 && lr_bootfiles_measure_spec(spec, &bf) == 0)
			(void)lr_fingerprint_set_boot_files(&fp, &bf, spec);
		lr_log_demote(-1);
		lr_bootfiles_done(&bf);
	}
	if (def)
		mask = lr_fingerprint_default_mask(&fp);
	r = lr_fingerprint_digest(&fp, mask, digest);
	if (r == 0)
		lr_hex(digest, sizeof(digest), hex);
	if (json) {
		struct json_object *o = to_json(&fp, mask, r == 0 ? hex : NULL);

		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
		json_object_put(o);
	} else {
		print_text(&fp, mask, r == 0 ? hex : NULL);
	}
	lr_fingerprint_done(&fp);
	/* -ENOENT: --bind names a component this host lacks: a bad option value, not a device. */
	return r < 0 ? lr_exit_code(r == -ENOENT ? -EINVAL : r) : 0;
}
