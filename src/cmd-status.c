/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot status [DEVICE] [--json]: keyslots, tokens, backends and bindings. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: lockroot status [DEVICE...] [--json]\n\n"
	       "Show the keyslots and tokens of each LUKS2 DEVICE: which keyslot the HSM opens, the\n"
	       "backend, the host components it is bound to, recovery keyslots. Without DEVICE, the\n"
	       "devices listed in /etc/crypttab. No secret is shown.\n\n"
	       "  --json   machine-readable output (stable field names)\n");
}

static const struct option options[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

/* A value for people: arrays as "a, b", an empty array as "none". */
static void print_value(const char *label, struct json_object *v)
{
	size_t n;

	printf("      %-10s ", label);
	if (!json_object_is_type(v, json_type_array)) {
		printf("%s\n", json_object_get_string(v));
		return;
	}
	n = json_object_array_length(v);
	if (n == 0)
		printf("none");
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i ? ", " : "", json_object_get_string(json_object_array_get_idx(v, i)));
	printf("\n");
}

static const char *keyslot_list(struct json_object *t, char *buf, size_t size)
{
	struct json_object *arr;
	size_t off = 0;

	buf[0] = '\0';
	if (!json_object_object_get_ex(t, "keyslots", &arr))
		return buf;
	for (size_t i = 0; i < json_object_array_length(arr) && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? "," : "",
					json_object_get_string(json_object_array_get_idx(arr, i)));
	return buf;
}

static void print_token(struct json_object *t)
{
	struct json_object *v;
	char slots[128];

	printf("    token %s: %s", str(t, "id"), str(t, "type"));
	keyslot_list(t, slots, sizeof(slots));
	if (strcmp(str(t, "type"), LR_TOKEN_TYPE) == 0) {
		if (json_object_object_get_ex(t, "error", &v)) {
			printf(" (%s)\n", json_object_get_string(v));
			return;
		}
		printf(", backend %s, keyslot %s\n", str(t, "backend"), slots);
		if (json_object_object_get_ex(t, "bind", &v))
			print_value("bound to:", v);
		json_object_object_foreach(t, key, val) {
			char label[64];

			if (!strcmp(key, "id") || !strcmp(key, "type") || !strcmp(key, "backend") ||
			    !strcmp(key, "keyslots") || !strcmp(key, "bind"))
				continue;
			snprintf(label, sizeof(label), "%s:", key);
			print_value(label, val);
		}
		return;
	}
	printf(", keyslot%s %s\n", strchr(slots, ',') ? "s" : "", slots);
}

static void print_text(struct json_object *o)
{
	struct json_object *arr;

	printf("%s: %s, %s, uuid %s\n", str(o, "device"), str(o, "type"), str(o, "cipher"), str(o, "uuid"));
	if (json_object_object_get_ex(o, "provisioning", &arr))
		printf("  provisioning: %s (a fleet unit: lockroot image, lockroot provision)\n",
		       json_object_get_string(arr));
	printf("  keyslots:\n");
	if (json_object_object_get_ex(o, "keyslots", &arr))
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			struct json_object *k = json_object_array_get_idx(arr, i);

			printf("    %s: %s (%s)\n", str(k, "id"), str(k, "use"), str(k, "pbkdf"));
		}
	printf("  tokens:\n");
	if (json_object_object_get_ex(o, "tokens", &arr))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			print_token(json_object_array_get_idx(arr, i));
}

/* Devices from /etc/crypttab (second field), for 'status' without arguments (cli.h). */
int cli_crypttab_devices(struct json_object *list)
{
	_cleanup_free_ char *path = lr_sysroot_path("/etc/crypttab");
	char line[1024];
	FILE *f = path ? fopen(path, "re") : NULL;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char name[256], dev[512], link[600];

		if (line[0] == '#' || sscanf(line, "%255s %511s", name, dev) != 2)
			continue;
		/* crypttab names devices as fstab does: udev's links resolve the tags */
		json_object_array_add(list, json_object_new_string(lr_spec_link(dev, link, sizeof(link))));
	}
	fclose(f);
	return 0;
}

int cmd_status(int argc, char **argv)
{
	struct json_object *devices = json_object_new_array(), *all = json_object_new_array();
	struct json_object *conv = NULL, *conv_dev;
	const char *conv_device = NULL;
	bool json = false;
	int c, r = 0;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'j': json = true; break;
		case 'h': help(); r = 0; goto out;
		default: r = LR_EXIT_USAGE; goto out;
		}
	}
	for (int i = optind; i < argc; i++)
		json_object_array_add(devices, json_object_new_string(argv[i]));
	if (optind == argc)
		cli_crypttab_devices(devices);
	conv = cli_conversion_json();
	if (conv && json_object_object_get_ex(conv, "device", &conv_dev))
		conv_device = json_object_get_string(conv_dev);
	for (size_t i = 0; i < json_object_array_length(devices); i++) {
		const char *dev = json_object_get_string(json_object_array_get_idx(devices, i));
		struct json_object *o = NULL;
		bool converting = conv_device && cli_same_device(dev, conv_device);
		int k;

		/* a device under conversion may not be LUKS2 yet: its state is what there is */
		lr_log_demote(converting ? 1 : 0);
		k = lr_status(dev, &o);
		lr_log_demote(converting ? -1 : 0);
		if (k < 0 && converting) {
			o = json_object_new_object();
			json_object_object_add(o, "device", json_object_new_string(dev));
		} else if (k < 0) {
			r = lr_exit_code(k);
			continue;
		}
		if (converting)
			json_object_object_add(o, "conversion", json_object_get(conv));
		if (k < 0) {
			json_object_array_add(all, o);
			continue;
		}
		if (!json)
			print_text(o);
		json_object_array_add(all, o);
	}
	if (json)
		puts(json_object_to_json_string_ext(all, JSON_C_TO_STRING_PRETTY));
	else if (json_object_array_length(devices) == 0)
		printf("No device given and none in /etc/crypttab.\n");
	if (!json && optind == argc) {
		cli_print_migration();
		cli_print_conversion();
		cli_print_conversion_via();
	}
out:
	json_object_put(conv);
	json_object_put(devices);
	json_object_put(all);
	return r;
}
