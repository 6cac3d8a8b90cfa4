/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot provision: the first boot of a unit made from a fleet image (lockroot image).
 *
 *   --boot  (initramfs, scripts/init-premount/lockroot-convert, before cryptroot): the kernel
 *           command line has lockroot.provision=ROOT,BOOT. The boot partition holds the settings
 *           (lockroot-provision.json) and, unless the image was made with --key-out, the
 *           provisioning key; the record device (settings "record") receives the record and may
 *           hold the key instead. lr_provision() runs the steps still to do; then the key on the
 *           boot partition is wiped, the settings and lockroot.provision= removed, and the boot
 *           goes on: cryptroot opens the root through the HSM just enrolled.
 *   DEVICE --key-file K --record-dir DIR: the same steps on a volume named by hand.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "convert.h"
#include "migrate.h"
#include "provision.h"

#define CMDLINE_KEY "lockroot.provision="
#define BOOT_MNT "/run/lockroot/boot"
#define RECORD_MNT "/run/lockroot/record"
#define SAY(...) fprintf(stderr, "lockroot: provision: " __VA_ARGS__)

static void help(void)
{
	printf("Usage: lockroot provision DEVICE --key-file K --record-dir DIR [OPTIONS]\n"
	       "       lockroot provision --boot\n\n"
	       "Give a unit made from a fleet image (lockroot image) its own key: enroll this host's HSM and\n"
	       "a recovery key, write the provisioning record (host identity, recovery key) to DIR, remove\n"
	       "the provisioning keyslot; re-key the volume when the image asks for it. Resumes whatever\n"
	       "an interrupted run left.\n\n"
	       "  --key-file K           the provisioning key\n"
	       "  --record-dir DIR       where the record goes (a directory on the record device)\n"
	       "  --hsm SPEC             tpm2[:TCTI] (default) or pkcs11:URI\n"
	       "  --bind LIST, --pcrs LIST, --pin-file F   as for lockroot enroll\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "  --boot                 (initramfs) provision as lockroot.provision= on the kernel command\n"
	       "                         line says\n");
}

enum { OPT_KEY_FILE = 256, OPT_RECORD_DIR, OPT_HSM, OPT_BIND, OPT_PCRS, OPT_PIN_FILE, OPT_RMEM, OPT_RITER,
       OPT_BOOT };

static const struct option options[] = {
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "record-dir", required_argument, NULL, OPT_RECORD_DIR },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "boot", no_argument, NULL, OPT_BOOT },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct settings {
	const char *hsm, *bind, *pcrs, *pin_file, *key_file, *record_dir;
	struct lr_pbkdf_cost cost;
};

static uint64_t now_ms(void);

struct attempt {
	struct lr_provision_params *p;
	struct lr_provision_result *res;
};

static int try_provision(void *userdata)
{
	struct attempt *a = userdata;

	return lr_provision(a->p, a->res);
}

static int run(const char *device, const struct settings *s, const struct lr_secret *key, uint32_t timeout_s,
	       struct lr_provision_result *res)
{
	struct lr_provision_params p = { .device = device, .key = key, .record_dir = s->record_dir,
					 .recovery_cost = s->cost };
	struct lr_hsm hsm = { 0 };
	struct lr_secret *pin = NULL;
	struct attempt a = { &p, res };
	int r;

	r = cli_hsm_setup("provision", s->hsm, s->pcrs, s->pin_file, &hsm, &pin);
	if (r)
		return r > 0 ? -EINVAL : r;
	r = cli_bind_setup("provision", s->bind, &p.bind_mask, &p.bind_default);
	if (r) {
		r = -EINVAL;
		goto out;
	}
	p.hsm = &hsm;
	cli_load_tpm_drivers();
	if (timeout_s && strcmp(s->hsm, "tpm2") == 0) {
		/* the TPM's driver may still be probing: wait for its device, then provision with the
		 * steps shown as they happen (cli_hsm_wait() holds messages back until the end) */
		uint64_t end = now_ms() + (uint64_t)timeout_s * 1000;
		bool said = false;

		while (access("/dev/tpmrm0", F_OK) < 0 && access("/dev/tpm0", F_OK) < 0 && now_ms() < end) {
			if (!said)
				SAY("waiting for the TPM (up to %u s)\n", timeout_s);
			said = true;
			usleep(250000);
		}
		r = lr_provision(&p, res);
	} else {
		r = timeout_s ? cli_hsm_wait(device, timeout_s, try_provision, &a) : lr_provision(&p, res);
	}
out:
	lr_hsm_done(&hsm);
	lr_secret_free(pin);
	return r;
}

/* ---- --boot ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int wait_spec(const char *spec, char *dev, size_t len, uint32_t timeout_s)
{
	uint64_t end = now_ms() + (uint64_t)timeout_s * 1000;
	bool said = false;

	while (cli_resolve_spec(spec, dev, len) < 0) {
		if (now_ms() >= end)
			return -ENOENT;
		if (!said)
			SAY("waiting for %s (up to %u s)\n", spec, timeout_s);
		said = true;
		usleep(250000);
	}
	return 0;
}

/* A directory stands for a mounted partition (tests); else vfat or ext4 at mnt. */
static int mount_at(const char *dev, const char *mnt, char *dir, size_t len)
{
	static const char *const mods[] = { "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "ext4" };
	static const char *const types[] = { "vfat", "ext4" };
	struct stat st;

	if (stat(dev, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(dir, len, "%s", dev);
		return 0;
	}
	for (size_t i = 0; i < LR_ELEMENTSOF(mods); i++) {
		char *argv[] = { (char *)"modprobe", (char *)"-q", (char *)mods[i], NULL };

		(void)cli_run(argv, true);
	}
	mkdir("/run/lockroot", 0700);
	mkdir(mnt, 0700);
	for (size_t i = 0; i < LR_ELEMENTSOF(types); i++)
		if (mount(dev, mnt, types[i], MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
			snprintf(dir, len, "%s", mnt);
			return 1;
		}
	return lr_error_code(-errno, "cannot mount %s: %s", dev, strerror(errno));
}

static void path_join(char *out, size_t len, const char *a, const char *b)
{
	int n = snprintf(out, len, "%s/%s", a, b);

	if (n < 0 || (size_t)n >= len)
		*out = '\0'; /* an empty path: every use of it fails */
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : NULL;
}

/* The boot partition back to normal: key wiped, settings and lockroot.provision= gone. */
static int boot_cleanup(const char *boot_dir)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	int r = 0;

	path_join(path, sizeof(path), boot_dir, LR_PROVISION_KEY_FILE);
	if (access(path, F_OK) == 0)
		r = lr_convert_wipe_file(path);
	path_join(path, sizeof(path), boot_dir, "cmdline.txt");
	if (r == 0 && lr_read_file(path, 1 << 20, &text, NULL) == 0 && strstr(text, CMDLINE_KEY)) {
		cli_drop_word(text, CMDLINE_KEY);
		r = lr_write_file_atomic(path, text, strlen(text), 0644);
	}
	/* the settings last: while they are there, the next boot looks again */
	path_join(path, sizeof(path), boot_dir, LR_PROVISION_CONF_FILE);
	if (r == 0 && unlink(path) < 0 && errno != ENOENT)
		r = -errno;
	sync();
	return r;
}

static int boot_step(void)
{
	char root_spec[160], boot_spec[160], dev[PATH_MAX], boot_dev[PATH_MAX], rec_dev[PATH_MAX];
	char boot_dir[PATH_MAX], rec_dir[PATH_MAX] = "", path[PATH_MAX], records[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	struct json_object *conf = NULL, *v;
	struct lr_secret *key = NULL;
	struct lr_provision_result res;
	struct settings s = { 0 };
	enum lr_provision_state st;
	uint32_t timeout_s = cli_cmdline_timeout();
	int boot_mounted = 0, rec_mounted = 0, slot, r;

	if (!cli_cmdline_pair(CMDLINE_KEY, root_spec, boot_spec, sizeof(root_spec)))
		return 0;
	if (wait_spec(root_spec, dev, sizeof(dev), timeout_s) < 0 || wait_spec(boot_spec, boot_dev, sizeof(boot_dev),
									   timeout_s) < 0) {
		SAY("%s or %s did not appear: not provisioned\n", root_spec, boot_spec);
		return -ENOENT;
	}
	r = boot_mounted = mount_at(boot_dev, BOOT_MNT, boot_dir, sizeof(boot_dir));
	if (r < 0)
		return r;
	r = lr_provision_examine(dev, &st, &slot);
	if (r < 0)
		goto out;
	if (st == LR_PROVISION_NONE) {
		SAY("%s is provisioned; cleaning up the boot partition\n", dev);
		r = boot_cleanup(boot_dir);
		goto out;
	}
	path_join(path, sizeof(path), boot_dir, LR_PROVISION_CONF_FILE);
	r = lr_read_file(path, 1 << 16, &text, NULL);
	if (r < 0 || !(conf = json_tokener_parse(text))) {
		r = lr_error_code(r < 0 ? r : -EBADMSG, "cannot read the provisioning settings %s", path);
		goto out;
	}
	s.hsm = jstr(conf, "hsm") ? jstr(conf, "hsm") : "tpm2";
	s.bind = jstr(conf, "bind");
	s.pcrs = jstr(conf, "pcrs");
	s.pin_file = jstr(conf, "pin_file");
	if (json_object_object_get_ex(conf, "recovery_pbkdf_iterations", &v))
		s.cost.iterations = (uint32_t)json_object_get_int(v);
	if (json_object_object_get_ex(conf, "recovery_pbkdf_memory", &v))
		s.cost.memory_kb = (uint32_t)json_object_get_int(v);
	if (st == LR_PROVISION_PENDING || st == LR_PROVISION_REKEY) {
		/* the record is written (PENDING) or read back (REKEY after a cut); not needed after */
		const char *rec = jstr(conf, "record") ? jstr(conf, "record") : "LABEL=LRRECORDS";

		if (wait_spec(rec, rec_dev, sizeof(rec_dev), timeout_s) < 0) {
			r = lr_error_code(-ENOENT, "the provisioning record device %s is not there: not provisioned", rec);
			goto out;
		}
		r = rec_mounted = mount_at(rec_dev, RECORD_MNT, rec_dir, sizeof(rec_dir));
		if (r < 0)
			goto out;
		path_join(records, sizeof(records), rec_dir, LR_PROVISION_RECORD_DIR);
		mkdir(records, 0700);
		s.record_dir = records;
	} else {
		s.record_dir = "/run";
	}
	if (st == LR_PROVISION_PENDING) {
		path_join(path, sizeof(path), boot_dir, LR_PROVISION_KEY_FILE);
		if (access(path, R_OK) < 0 && *rec_dir)
			path_join(path, sizeof(path), rec_dir, LR_PROVISION_KEY_FILE);
		if (lr_secret_read_file(path, 4096, &key) < 0)
			key = NULL;
	}
	SAY("provisioning %s (%s)\n", dev, lr_provision_state_name(st));
	r = run(dev, &s, key, timeout_s, &res);
	if (r < 0) {
		SAY("failed: %s; the unit is not provisioned, its next boot tries again\n", strerror(-r));
		goto out;
	}
	if (*res.record_path && st == LR_PROVISION_PENDING)
		SAY("record written: %s\n", res.record_path);
	if (res.rekey_started)
		SAY("the volume is re-encrypted to its own key once the system runs (lockroot convert --status)\n");
	r = boot_cleanup(boot_dir);
	if (r == 0)
		SAY("%s is provisioned\n", dev);
out:
	sync();
	if (rec_mounted > 0 && umount(RECORD_MNT) < 0)
		umount2(RECORD_MNT, MNT_DETACH);
	if (boot_mounted > 0 && umount(BOOT_MNT) < 0)
		umount2(BOOT_MNT, MNT_DETACH);
	json_object_put(conf);
	lr_secret_free(key);
	return r;
}

int cmd_provision(int argc, char **argv)
{
	struct settings s = { .hsm = "tpm2" };
	struct lr_secret *key = NULL;
	struct lr_provision_result res;
	bool boot = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (c) {
		case OPT_KEY_FILE: s.key_file = optarg; break;
		case OPT_RECORD_DIR: s.record_dir = optarg; break;
		case OPT_HSM: s.hsm = optarg; break;
		case OPT_BIND: s.bind = optarg; break;
		case OPT_PCRS: s.pcrs = optarg; break;
		case OPT_PIN_FILE: s.pin_file = optarg; break;
		case OPT_RMEM:
			if (cli_parse_uint("provision", "--recovery-pbkdf-memory", optarg, &s.cost.memory_kb))
				return LR_EXIT_USAGE;
			break;
		case OPT_RITER:
			if (cli_parse_uint("provision", "--recovery-pbkdf-iterations", optarg, &s.cost.iterations))
				return LR_EXIT_USAGE;
			break;
		case OPT_BOOT: boot = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (boot)
		return optind == argc ? lr_exit_code(boot_step()) : cli_usage_error("provision", "--boot takes no DEVICE");
	if (optind != argc - 1 || !s.record_dir)
		return cli_usage_error("provision", "expected DEVICE and --record-dir DIR");
	if (s.key_file && (r = lr_secret_read_file(s.key_file, 4096, &key)) < 0)
		return lr_exit_code(r);
	r = run(argv[optind], &s, key, 0, &res);
	lr_secret_free(key);
	if (r < 0)
		return lr_exit_code(r);
	if (cli.json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "device", json_object_new_string(argv[optind]));
		json_object_object_add(o, "before", json_object_new_string(lr_provision_state_name(res.before)));
		json_object_object_add(o, "record", json_object_new_string(res.record_path));
		json_object_object_add(o, "rekey_started", json_object_new_boolean(res.rekey_started));
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	} else {
		printf("%s: provisioned (was %s); record %s%s\n", argv[optind], lr_provision_state_name(res.before),
		       res.record_path, res.rekey_started ? "; re-encryption to its own volume key initialised" : "");
	}
	return 0;
}
