/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot convert --via DEV: encrypt the SD root in place through a staging copy on another
 * drive, for roots that cannot be shrunk (any file system). Built on lockroot migrate's
 * pieces (migrate-util.h) and its tryboot switch-over (migrate.h).
 *
 * Run by the user on the SD root (phase "staging"):
 *   staging partition on DEV (created in free space, or an ext4 labelled "lockroot-stage"
 *   reused) -> rsync of / (a reused copy of the same root transfers almost nothing) -> its
 *   fstab names the staging partition -> the recovery key sealed by the HSM into the state ->
 *   trial files for the staging root (tryboot.txt) -> "staging-trial".
 * Then lockroot-convert-via.service (`lockroot convert --via-finish`), booted from staging:
 *   staging-trial: staging made the default boot (a power cut from here on resumes on it)
 *   resync:        the quiescent SD root (read-only) rsynced onto staging once more
 *   erasing:       the SD root partition erased (discard + zeros), resumable by offset
 *   formatting:    LUKS2 on it: HSM keyslot + token, the recovery key unsealed again
 *   copying:       opened through the HSM, ext4, rsync staging -> encrypted, crypttab/fstab,
 *                  initramfs (chroot), trial files -> "trial", reboot '0 tryboot'
 *   trial:         on the encrypted root: committed as the default (lr_migrate_commit);
 *                  back on staging: the trial is retried once, then "failed"
 * The state is /var/lib/lockroot/convert-via.json on the running root (and on the roots it
 * prepares). The staging partition keeps its copy: it is never erased by lockroot.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "config.h"
#include "erase.h"
#include "migrate-util.h"
#include "progress.h"
#include "rootdev.h"

#define VIA_STATE_PATH "/var/lib/lockroot/convert-via.json"
#define VIA_WORK_DIR "/run/lockroot/convert-via"
#define VIA_SERVICE "lockroot-convert-via.service"
#define VIA_SERVICE_UNIT LOCKROOT_UNIT_DIR "/" VIA_SERVICE
#define VIA_SERVICE_WANTS "/etc/systemd/system/multi-user.target.wants/" VIA_SERVICE
#define STAGE_LABEL "lockroot-stage"
#define MAPPED_NAME "lockroot-via"
#define REBOOT_CMD "systemctl reboot '0 tryboot'"
#define MAX_TRIALS 2
#define MiB (1024ULL * 1024)

enum via_phase {
	VIA_STAGING, VIA_STAGING_TRIAL, VIA_RESYNC, VIA_ERASING, VIA_FORMATTING, VIA_COPYING, VIA_TRIAL,
	VIA_COMMITTING, VIA_DONE, VIA_FAILED, VIA_INTERRUPTED, _VIA_PHASE_MAX,
};

static const char *const phase_names[_VIA_PHASE_MAX] = {
	[VIA_STAGING] = "staging", [VIA_STAGING_TRIAL] = "staging-trial", [VIA_RESYNC] = "resync",
	[VIA_ERASING] = "erasing", [VIA_FORMATTING] = "formatting", [VIA_COPYING] = "copying",
	[VIA_TRIAL] = "trial", [VIA_COMMITTING] = "committing", [VIA_DONE] = "done", [VIA_FAILED] = "failed",
	[VIA_INTERRUPTED] = "interrupted",
};

/* Everything the continuation needs; no secret (the recovery key is sealed by the HSM). */
struct via_state {
	enum via_phase phase;
	int64_t started, updated;
	char source[64], target[64], staging[64], staging_partuuid[40], name[64], uuid[40];
	bool staging_reused, recovery;
	char cipher[64], hsm[512], bind[128];
	uint32_t rec_iterations, rec_memory;
	/* boot partition, shared by the three configurations */
	char boot_dir[256], boot_device[64], cmdline_file[128], initramfs[128];
	char *stage_config, *stage_cmdline, *final_config, *final_cmdline, *final_trial;
	struct json_object *sealed;        /* the recovery key locked by the HSM (until formatted) */
	uint32_t sealed_mask;
	int trials;
	uint64_t staged_bytes, staged_sent, resync_bytes;
	uint64_t erase_size, erase_done, erase_discarded, erase_overwritten;
	char *error;
};

static void via_state_done(struct via_state *st)
{
	free(st->stage_config);
	free(st->stage_cmdline);
	free(st->final_config);
	free(st->final_cmdline);
	free(st->final_trial);
	free(st->error);
	json_object_put(st->sealed);
	memset(st, 0, sizeof(*st));
}

static void set_error(struct via_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct via_state *st, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	free(st->error);
	st->error = s;
}

/* ---- state file ---- */

static char *state_path(const char *root)
{
	char *p;

	return asprintf(&p, "%s%s", root && strcmp(root, "/") ? root : "", VIA_STATE_PATH) < 0 ? NULL : p;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		json_object_get_string(v) : NULL;
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

#define GET_STR(o, st, f) snprintf((st)->f, sizeof((st)->f), "%s", jstr((o), #f) ? jstr((o), #f) : "")
#define GET_DUP(o, st, f) ((st)->f = jstr((o), #f) ? strdup(jstr((o), #f)) : NULL)

static int via_state_load(const char *root, struct via_state *st)
{
	_cleanup_free_ char *path = state_path(root), *text = NULL;
	struct json_object *o, *sealed;
	const char *ph;
	int r;

	memset(st, 0, sizeof(*st));
	if (!path)
		return -ENOMEM;
	r = lr_read_file(path, 1 << 20, &text, NULL);
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", path, strerror(-r));
	o = json_tokener_parse(text);
	ph = o ? jstr(o, "phase") : NULL;
	st->phase = _VIA_PHASE_MAX;
	for (int i = 0; ph && i < _VIA_PHASE_MAX; i++)
		if (strcmp(ph, phase_names[i]) == 0)
			st->phase = (enum via_phase)i;
	if (st->phase == _VIA_PHASE_MAX) {
		json_object_put(o);
		return lr_error_code(-EBADMSG, "%s is not a lockroot convert --via state", path);
	}
	st->started = jint(o, "started");
	st->updated = jint(o, "updated");
	GET_STR(o, st, source);
	GET_STR(o, st, target);
	GET_STR(o, st, staging);
	GET_STR(o, st, staging_partuuid);
	GET_STR(o, st, name);
	GET_STR(o, st, uuid);
	GET_STR(o, st, cipher);
	GET_STR(o, st, hsm);
	GET_STR(o, st, bind);
	GET_STR(o, st, boot_dir);
	GET_STR(o, st, boot_device);
	GET_STR(o, st, cmdline_file);
	GET_STR(o, st, initramfs);
	GET_DUP(o, st, stage_config);
	GET_DUP(o, st, stage_cmdline);
	GET_DUP(o, st, final_config);
	GET_DUP(o, st, final_cmdline);
	GET_DUP(o, st, final_trial);
	GET_DUP(o, st, error);
	st->staging_reused = jint(o, "staging_reused") != 0;
	st->recovery = jint(o, "recovery") != 0;
	st->rec_iterations = (uint32_t)jint(o, "recovery_pbkdf_iterations");
	st->rec_memory = (uint32_t)jint(o, "recovery_pbkdf_memory");
	if (json_object_object_get_ex(o, "sealed_recovery_key", &sealed))
		st->sealed = json_object_get(sealed);
	st->sealed_mask = (uint32_t)jint(o, "sealed_bind_mask");
	st->trials = (int)jint(o, "trials");
	st->staged_bytes = (uint64_t)jint(o, "staged_bytes");
	st->staged_sent = (uint64_t)jint(o, "staged_sent");
	st->resync_bytes = (uint64_t)jint(o, "resync_bytes");
	st->erase_size = (uint64_t)jint(o, "erase_size");
	st->erase_done = (uint64_t)jint(o, "erase_done");
	st->erase_discarded = (uint64_t)jint(o, "erase_discarded");
	st->erase_overwritten = (uint64_t)jint(o, "erase_overwritten");
	json_object_put(o);
	return 0;
}

static void put_str(struct json_object *o, const char *key, const char *s)
{
	if (s && *s)
		json_object_object_add(o, key, json_object_new_string(s));
}

static void put_int(struct json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

/* full: the texts and the sealed key too (the file), else what status shows */
static struct json_object *via_state_json(const struct via_state *st, bool full)
{
	struct json_object *o = json_object_new_object();

	put_int(o, "version", 1);
	put_str(o, "method", "via");
	put_str(o, "phase", phase_names[st->phase]);
	put_int(o, "started", st->started);
	put_int(o, "updated", st->updated);
	put_str(o, "source", st->source);
	put_str(o, "target", st->target);
	put_str(o, "staging", st->staging);
	put_str(o, "staging_partuuid", st->staging_partuuid);
	put_int(o, "staging_reused", st->staging_reused);
	put_str(o, "name", st->name);
	put_str(o, "uuid", st->uuid);
	put_str(o, "cipher", st->cipher);
	put_str(o, "hsm", st->hsm);
	put_str(o, "bind", st->bind);
	put_int(o, "recovery", st->recovery);
	put_str(o, "boot_dir", st->boot_dir);
	put_str(o, "boot_device", st->boot_device);
	put_str(o, "cmdline_file", st->cmdline_file);
	put_str(o, "initramfs", st->initramfs);
	put_int(o, "trials", st->trials);
	put_int(o, "staged_bytes", (int64_t)st->staged_bytes);
	put_int(o, "staged_sent", (int64_t)st->staged_sent);
	put_int(o, "resync_bytes", (int64_t)st->resync_bytes);
	put_int(o, "erase_size", (int64_t)st->erase_size);
	put_int(o, "erase_done", (int64_t)st->erase_done);
	put_int(o, "erase_discarded", (int64_t)st->erase_discarded);
	put_int(o, "erase_overwritten", (int64_t)st->erase_overwritten);
	put_str(o, "error", st->error);
	if (full) {
		put_int(o, "recovery_pbkdf_iterations", st->rec_iterations);
		put_int(o, "recovery_pbkdf_memory", st->rec_memory);
		put_str(o, "stage_config", st->stage_config);
		put_str(o, "stage_cmdline", st->stage_cmdline);
		put_str(o, "final_config", st->final_config);
		put_str(o, "final_cmdline", st->final_cmdline);
		put_str(o, "final_trial", st->final_trial);
		if (st->sealed) {
			json_object_object_add(o, "sealed_recovery_key", json_object_get(st->sealed));
			put_int(o, "sealed_bind_mask", st->sealed_mask);
		}
	}
	return o;
}

static int mkdir_parents(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);

	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int via_state_save(const char *root, struct via_state *st)
{
	_cleanup_free_ char *path = state_path(root);
	struct json_object *o;
	const char *text;
	int r;

	if (!path)
		return -ENOMEM;
	st->updated = time(NULL);
	if (!st->started)
		st->started = st->updated;
	r = mkdir_parents(path);
	if (r < 0)
		return lr_error_code(r, "cannot create the directory of %s: %s", path, strerror(-r));
	o = via_state_json(st, true);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = lr_write_file_atomic(path, text, strlen(text), 0600);
	json_object_put(o);
	return r;
}

/* Saved and logged: what the service could not do; it is retried at the next boot. */
static int fail_step(struct via_state *st, int r, const char *what)
{
	set_error(st, "%s failed (%s); it is retried at the next boot (lockroot-convert-via.service)", what,
		  strerror(-r));
	lr_error("%s", st->error);
	via_state_save("/", st);
	return r;
}

/* The migrate state view of one boot configuration, for lr_migrate_write_trial/commit/abandon
 * (texts borrowed: never passed to lr_migrate_state_done). */
static struct lr_migrate_state boot_view(const struct via_state *st, bool staging)
{
	struct lr_migrate_state m = { 0 };

	snprintf(m.boot_dir, sizeof(m.boot_dir), "%s", st->boot_dir);
	snprintf(m.boot_device, sizeof(m.boot_device), "%s", st->boot_device);
	snprintf(m.cmdline_file, sizeof(m.cmdline_file), "%s", st->cmdline_file);
	snprintf(m.initramfs, sizeof(m.initramfs), "%s", st->initramfs);
	m.final_config = staging ? st->stage_config : st->final_config;
	m.final_cmdline = staging ? st->stage_cmdline : st->final_cmdline;
	return m;
}

/* ---- options ---- */

enum { OPT_VIA = 256, OPT_NAME, OPT_HSM, OPT_BIND, OPT_CIPHER, OPT_NO_RECOVERY, OPT_RMEM, OPT_RITER,
       OPT_REBOOT, OPT_DRY_RUN, OPT_JSON, OPT_FINISH, OPT_STATUS };

static const struct option options[] = {
	{ "via", required_argument, NULL, OPT_VIA },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "cipher", required_argument, NULL, OPT_CIPHER },
	{ "no-recovery-key", no_argument, NULL, OPT_NO_RECOVERY },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "reboot", no_argument, NULL, OPT_REBOOT },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "via-finish", no_argument, NULL, OPT_FINISH },
	{ "via-status", no_argument, NULL, OPT_STATUS },
	{ "status", no_argument, NULL, OPT_STATUS },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static void help(void)
{
	printf("Usage: lockroot convert --via DEV [-m SRC] [-p N] [-s SIZE] [--hsm SPEC] [OPTIONS]\n\n"
	       "Encrypt the running root partition in place through a staging copy on another drive,\n"
	       "for file systems that cannot be shrunk: the root is copied to a PLAIN (not encrypted)\n"
	       "ext4 staging partition on DEV, the board boots it once (firmware tryboot), then\n"
	       "lockroot-convert-via.service makes it the default, copies the now quiescent root again,\n"
	       "erases the root partition, makes it LUKS2 (HSM-locked key), copies the root back and\n"
	       "tries the encrypted root once before making it the default. The staging partition keeps\n"
	       "its copy (a plaintext copy of the system!) to convert further boards faster.\n\n"
	       "  --via DEV              the staging drive (a whole drive, e.g. /dev/sda)\n"
	       "  -p N                   staging partition number (default: the ext4 partition labelled\n"
	       "                         " STAGE_LABEL " on DEV, reused; else the lowest free number)\n"
	       "  -s SIZE                size of a new staging partition (default: the free space)\n"
	       "  -m SRC                 the running root partition (default /dev/mmcblk0p2)\n"
	       "  --name NAME            /dev/mapper/NAME of the encrypted root (default cryptroot)\n"
	       "  --hsm SPEC             tpm2[:TCTI] (default) or pkcs11:URI\n"
	       "  --bind LIST            as for lockroot enroll\n"
	       "  --cipher C             default: aes-xts-plain64 with AES instructions, else Adiantum\n"
	       "  --no-recovery-key      no recovery key (not advised)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "  --reboot               reboot into the staging root when ready\n"
	       "  --dry-run              print the plan, change nothing\n"
	       "  -y, --yes              do not ask before writing\n"
	       "  --json                 JSON events on stdout (plan, progress, ready)\n"
	       "  --via-status           the state of the conversion\n"
	       "  --via-finish           (lockroot-convert-via.service at boot) continue the conversion\n");
}

struct via {
	const char *target, *source_arg, *name, *hsm_spec, *bind, *cipher;
	unsigned partno;
	uint64_t size;
	bool recovery, reboot, dry_run, yes;
	struct lr_pbkdf_cost cost;
	/* found */
	char source[64];
	uint64_t root_used, source_size;
	struct lr_disk_info disk;
	struct lr_disk_slot slot;
	bool reuse;
	char stage_fs[32];             /* what blkid says is on a partition -p names */
	struct lr_bootcfg_info boot;
	struct lr_hsm hsm;
	uint32_t bind_mask;
	bool bind_default;
	struct via_state st;
};

enum mode { MODE_CONVERT, MODE_FINISH, MODE_STATUS };

static int parse(struct via *v, enum mode *mode, int argc, char **argv)
{
	uint32_t n;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "p:s:m:yh", options, NULL)) >= 0) {
		switch (c) {
		case OPT_VIA: v->target = optarg; break;
		case 'p':
			if (cli_parse_uint("convert", "-p", optarg, &n) || n == 0 || n > LR_DISK_MAX_PARTS)
				return cli_usage_error("convert", "-p %s: a partition number from 1 to %d", optarg,
						       LR_DISK_MAX_PARTS);
			v->partno = n;
			break;
		case 's':
			if (lr_parse_size(optarg, &v->size) < 0 || v->size == 0)
				return cli_usage_error("convert", "-s %s: not a size (e.g. 16G, 512M)", optarg);
			break;
		case 'm': v->source_arg = optarg; break;
		case OPT_NAME: v->name = optarg; break;
		case OPT_HSM: v->hsm_spec = optarg; break;
		case OPT_BIND: v->bind = optarg; break;
		case OPT_CIPHER: v->cipher = optarg; break;
		case OPT_NO_RECOVERY: v->recovery = false; break;
		case OPT_RMEM:
			if (cli_parse_uint("convert", "--recovery-pbkdf-memory", optarg, &v->cost.memory_kb))
				return LR_EXIT_USAGE;
			break;
		case OPT_RITER:
			if (cli_parse_uint("convert", "--recovery-pbkdf-iterations", optarg, &v->cost.iterations))
				return LR_EXIT_USAGE;
			break;
		case OPT_REBOOT: v->reboot = true; break;
		case OPT_DRY_RUN: v->dry_run = true; break;
		case OPT_JSON: cli.json = true; break;
		case OPT_FINISH: *mode = MODE_FINISH; break;
		case OPT_STATUS: *mode = MODE_STATUS; break;
		case 'y': v->yes = true; break;
		case 'h': help(); return -1;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage_error("convert", "unexpected argument '%s'", argv[optind]);
	if (*mode == MODE_CONVERT && !v->target)
		return cli_usage_error("convert", "--via DEV names the staging drive");
	if (strlen(v->name) >= 48 || strpbrk(v->name, "/ \t"))
		return cli_usage_error("convert", "--name %s: a device-mapper name without '/' or spaces", v->name);
	if (strlen(v->hsm_spec) >= sizeof(v->st.hsm) || (v->bind && strlen(v->bind) >= sizeof(v->st.bind)) ||
	    (v->cipher && strlen(v->cipher) >= sizeof(v->st.cipher)))
		return cli_usage_error("convert", "--hsm, --bind or --cipher too long");
	return 0;
}

/* ---- small helpers ---- */

static int run_ok(char *const argv[], bool quiet)
{
	int r = cli_run(argv, quiet);

	if (r == 127)
		return lr_error_code(-ENOENT, "%s: command not found", argv[0]);
	if (r > 0)
		return lr_error_code(-EIO, "%s failed (exit status %d)", argv[0], r);
	return r;
}

static const char *size_str(uint64_t b, char *buf, size_t len)
{
	lr_format_size(b, buf, len);
	return buf;
}

static int device_size(const char *dev, uint64_t *size)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return lr_error_code(-errno, "cannot open %s: %s", dev, strerror(errno));
	if (ioctl(fd, BLKGETSIZE64, size) < 0)
		r = lr_error_code(-errno, "cannot read the size of %s: %s", dev, strerror(errno));
	close(fd);
	return r;
}

/* "TYPE LABEL" of a partition through blkid ("" when nothing is recognised). */
static void probe_fs(const char *dev, char *type, size_t tlen, char *label, size_t llen)
{
	char cmd[256], line[256];
	FILE *p;

	type[0] = label[0] = '\0';
	snprintf(cmd, sizeof(cmd), "blkid -p -o export '%s' 2>/dev/null", dev);
	p = popen(cmd, "r");
	while (p && fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "TYPE=", 5) == 0 && strlen(line + 5) < tlen)
			memcpy(type, line + 5, strlen(line + 5) + 1);
		else if (strncmp(line, "LABEL=", 6) == 0 && strlen(line + 6) < llen)
			memcpy(label, line + 6, strlen(line + 6) + 1);
	}
	if (p)
		pclose(p);
}

/* Is root's file system the one on dev? */
static bool running_on(const char *dev)
{
	struct stat r, d;

	return *dev && stat("/", &r) == 0 && stat(dev, &d) == 0 && S_ISBLK(d.st_mode) && d.st_rdev == r.st_dev;
}

/* cmdline with its root= replaced (or added) */
static char *with_root(const char *cmdline, const char *root)
{
	size_t len = strcspn(cmdline, "\n");
	char *out = malloc(len + strlen(root) + 8), *o = out;
	const char *p = cmdline, *end = cmdline + len;

	if (!out)
		return NULL;
	while (p < end) {
		const char *w = p;
		size_t wl;

		while (w < end && *w == ' ')
			w++;
		wl = strcspn(w, " \n");
		if (w + wl > end)
			wl = (size_t)(end - w);
		if (wl && strncmp(w, "root=", 5) != 0) {
			if (o != out)
				*o++ = ' ';
			memcpy(o, w, wl);
			o += wl;
		}
		p = w + wl;
		if (!wl)
			break;
	}
	o += sprintf(o, "%sroot=%s", o != out ? " " : "", root);
	*o = '\0';
	return out;
}

/* ROOT/etc/fstab: the "/" line names spec, ext4 (other lines as they are). */
static int set_fstab_root(const char *root, const char *spec)
{
	_cleanup_free_ char *path = NULL, *text = NULL, *out = NULL;
	size_t len = 0, o = 0;
	bool found = false;
	int r;

	if (asprintf(&path, "%s/etc/fstab", root) < 0)
		return -ENOMEM;
	r = lr_read_file(path, 1 << 20, &text, &len);
	if (r < 0 && r != -ENOENT)
		return lr_error_code(r, "cannot read %s: %s", path, strerror(-r));
	out = malloc(len + 256);
	if (!out)
		return -ENOMEM;
	for (char *line = text, *next; line && *line; line = next) {
		char dev[256], mp[256], type[64], opts[256];
		int pass = 1;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (line[0] != '#' && sscanf(line, "%255s %255s %63s %255s %*d %d", dev, mp, type, opts, &pass) >= 3 &&
		    strcmp(mp, "/") == 0) {
			if (strcmp(type, "ext4") != 0)
				snprintf(opts, sizeof(opts), "errors=remount-ro,noatime");
			o += (size_t)sprintf(out + o, "%s / ext4 %s 0 1\n", spec, opts);
			found = true;
			continue;
		}
		o += (size_t)sprintf(out + o, "%s\n", line);
	}
	if (!found)
		o += (size_t)sprintf(out + o, "%s / ext4 errors=remount-ro,noatime 0 1\n", spec);
	return lr_write_file_atomic(path, out, o, 0644);
}

static int enable_service(const char *root)
{
	char unit[PATH_MAX], wants[PATH_MAX];

	snprintf(unit, sizeof(unit), "%s" VIA_SERVICE_UNIT, root);
	if (access(unit, R_OK) < 0)
		return lr_error_code(-ENOPKG, "%s is missing: install the lockroot package", unit);
	snprintf(wants, sizeof(wants), "%s" VIA_SERVICE_WANTS, root);
	mkdir_parents(wants);
	if (symlink(VIA_SERVICE_UNIT, wants) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", wants, strerror(errno));
	return 0;
}

/* Mounts made under VIA_WORK_DIR, undone in reverse order. */
struct mounts {
	char path[8][PATH_MAX];
	size_t n;
};

static int do_mount(struct mounts *ms, const char *src, const char *dst, const char *type, unsigned long flags)
{
	if (mkdir(dst, 0755) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", dst, strerror(errno));
	if (mount(src, dst, type, flags, NULL) < 0)
		return lr_error_code(-errno, "cannot mount %s on %s: %s", src, dst, strerror(errno));
	if (flags & MS_BIND && flags & MS_RDONLY && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		lr_warn("cannot make %s read-only: %s", dst, strerror(errno));
	snprintf(ms->path[ms->n++], PATH_MAX, "%s", dst);
	return 0;
}

static void undo_mounts(struct mounts *ms)
{
	while (ms->n > 0) {
		const char *mp = ms->path[--ms->n];

		if (umount(mp) < 0 && umount2(mp, MNT_DETACH) < 0)
			lr_warn("cannot unmount %s: %s", mp, strerror(errno));
	}
}

/* ---- the recovery key, sealed by the HSM between the two runs ---- */

static int binding_digest(const char *device, uint32_t *mask, bool choose, uint8_t digest[32])
{
	struct lr_fingerprint fp = { 0 };
	int r = lr_fingerprint_read(device, &fp);

	if (r == 0 && choose)
		*mask = lr_fingerprint_default_mask(&fp);
	if (r == 0)
		r = lr_fingerprint_digest(&fp, *mask, digest);
	lr_fingerprint_done(&fp);
	return r;
}

/* The display form without dashes is exactly LR_USER_KEY_BYTES characters: what every
 * backend locks. Locked, unlocked and compared before anything is written. */
static int seal_recovery(struct via *v, const struct lr_secret *key)
{
	_cleanup_secret_ struct lr_secret *plain = lr_secret_new(64), *back = NULL;
	uint8_t digest[32];
	int r;

	if (!plain)
		return -ENOMEM;
	for (size_t i = 0; i < key->len; i++)
		if (key->data[i] != '-' && plain->len < LR_USER_KEY_BYTES)
			plain->data[plain->len++] = key->data[i];
	r = binding_digest(v->source, &v->st.sealed_mask, true, digest);
	if (r < 0)
		return r;
	v->st.sealed = json_object_new_object();
	r = v->hsm.backend->lock(&v->hsm, plain, digest, v->st.sealed);
	if (r == 0)
		r = v->hsm.backend->unlock(&v->hsm, v->st.sealed, digest, &back);
	if (r == 0 && lr_secret_cmp(plain, back) != 0)
		r = -EIO;
	explicit_bzero(digest, sizeof(digest));
	if (r < 0)
		return lr_error_code(r, "the %s HSM cannot keep the recovery key until the root is encrypted: %s; "
				     "nothing was written", v->hsm_spec, strerror(-r));
	return 0;
}

static int unseal_recovery(const struct via_state *st, const struct lr_hsm *hsm, struct lr_secret **key)
{
	_cleanup_secret_ struct lr_secret *plain = NULL, *text = NULL;
	uint32_t mask = st->sealed_mask;
	uint8_t digest[32];
	int r;

	if (!st->sealed)
		return lr_error_code(-ENOKEY, "the state has no sealed recovery key");
	r = binding_digest(st->source, &mask, false, digest);
	if (r == 0)
		r = hsm->backend->unlock(hsm, st->sealed, digest, &plain);
	explicit_bzero(digest, sizeof(digest));
	if (r < 0)
		return lr_error_code(r, "the HSM does not give back the sealed recovery key: %s", strerror(-r));
	text = lr_secret_new(plain->len + 1);
	if (!text)
		return -ENOMEM;
	memcpy(text->data, plain->data, plain->len);
	text->data[plain->len] = '\0';
	return lr_recovery_key_normalize((const char *)text->data, key);
}

/* ---- validate and plan (nothing written) ---- */

static int check_state(void)
{
	struct via_state prev;
	int r = via_state_load("/", &prev);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	switch (prev.phase) {
	case VIA_DONE:
	case VIA_FAILED:
	case VIA_INTERRUPTED:
		r = 0;
		break;
	case VIA_STAGING:
		r = access(VIA_WORK_DIR "/running", F_OK) == 0 ?
			lr_error_code(-EBUSY, "another lockroot convert --via is running") : 0;
		break;
	default:
		r = lr_error_code(-EBUSY, "a conversion through %s is under way (phase %s): see lockroot convert "
				  "--via-status", prev.staging, phase_names[prev.phase]);
	}
	via_state_done(&prev);
	return r;
}

/* The staging partition: an ext4 labelled lockroot-stage is reused (copied over, not
 * formatted); otherwise a new partition in free space (as migrate -p/-s). */
static int plan_staging(struct via *v)
{
	struct lr_disk_want want = { .partno = v->partno, .size = v->size };
	unsigned found = 0;
	char a[32], b[32], c[32];
	int r;

	for (size_t i = 0; i < v->disk.n_parts; i++) {
		char dev[64], type[32], label[64];

		lr_disk_partition_name(v->target, v->disk.parts[i].partno, dev, sizeof(dev));
		probe_fs(dev, type, sizeof(type), label, sizeof(label));
		if (strcmp(type, "ext4") == 0 && strcmp(label, STAGE_LABEL) == 0 && !found)
			found = v->disk.parts[i].partno;
		else if (v->partno == v->disk.parts[i].partno)
			snprintf(v->stage_fs, sizeof(v->stage_fs), "%s", *type ? type : "no file system");
	}
	if (v->partno && found && found != v->partno)
		return lr_error_code(-EEXIST, "%s already has a staging partition (%s%u, labelled " STAGE_LABEL "): "
				     "leave out -p to reuse it", v->target, v->target, found);
	if (v->partno && *v->stage_fs)
		return lr_error_code(-EEXIST, "partition %u of %s holds %s, not a staging partition (ext4 labelled "
				     STAGE_LABEL "): it is never overwritten; give -p a free number", v->partno,
				     v->target, v->stage_fs);
	if (found) {
		want.partno = found;
		want.reuse_only = want.reuse_ok = true;
		want.size = 0;
	}
	r = lr_disk_plan(&v->disk, v->target, &want, 1, &v->slot);
	if (r < 0)
		return r;
	v->reuse = v->slot.reuse;
	if (v->slot.size < v->root_used + v->root_used / 10 + 64 * MiB)
		return lr_error_code(-ENOSPC, "the staging partition on %s would be %s: too small for the %s used on /"
				     " (at least %s)", v->target, size_str(v->slot.size, a, sizeof(a)),
				     size_str(v->root_used, b, sizeof(b)),
				     size_str(v->root_used + v->root_used / 10 + 64 * MiB, c, sizeof(c)));
	return 0;
}

static int check_sizes(struct via *v)
{
	struct statvfs sv;
	char a[32], b[32];
	int r;

	if (statvfs("/", &sv) < 0)
		return -errno;
	v->root_used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
	r = device_size(v->source, &v->source_size);
	if (r < 0)
		return r;
	if (v->source_size < v->root_used + v->root_used / 8 + 96 * MiB)
		return lr_error_code(-ENOSPC, "%s (%s) cannot hold the %s used on / once encrypted (ext4 and the "
				     "LUKS2 header need more); free some space first", v->source,
				     size_str(v->source_size, a, sizeof(a)), size_str(v->root_used, b, sizeof(b)));
	return 0;
}

static int check_hsm(struct via *v)
{
	struct lr_secret *pin = NULL;
	int r;

	if (cli_hsm_setup("convert", v->hsm_spec, NULL, NULL, &v->hsm, &pin))
		return -EINVAL;
	if (cli_bind_setup("convert", v->bind, &v->bind_mask, &v->bind_default))
		return -EINVAL;
	r = v->hsm.backend->probe(&v->hsm);
	if (r < 0)
		return lr_error_code(r, "the HSM (%s) is not available: %s; nothing was written", v->hsm_spec,
				     r == -ENODEV ? "not found" : strerror(-r));
	return 0;
}

static int plan_state(struct via *v)
{
	struct via_state *st = &v->st;
	struct lr_migrate_state ms = { 0 };
	char trial[4096];
	FILE *f;
	int r;

	st->phase = VIA_STAGING;
	snprintf(st->source, sizeof(st->source), "%s", v->source);
	snprintf(st->target, sizeof(st->target), "%s", v->target);
	lr_disk_partition_name(v->target, v->slot.partno, st->staging, sizeof(st->staging));
	st->staging_reused = v->reuse;
	snprintf(st->name, sizeof(st->name), "%s", v->name);
	snprintf(st->cipher, sizeof(st->cipher), "%s", v->cipher);
	snprintf(st->hsm, sizeof(st->hsm), "%s", v->hsm_spec);
	snprintf(st->bind, sizeof(st->bind), "%s", v->bind ? v->bind : "");
	st->recovery = v->recovery;
	st->rec_iterations = v->cost.iterations;
	st->rec_memory = v->cost.memory_kb;
	f = fopen("/proc/sys/kernel/random/uuid", "re");
	if (!f || !fgets(st->uuid, sizeof(st->uuid), f)) {
		if (f)
			fclose(f);
		return lr_error_code(-EIO, "cannot read a random UUID");
	}
	fclose(f);
	st->uuid[strcspn(st->uuid, "\n")] = '\0';
	/* the encrypted root's configuration, as migrate plans it */
	r = migrate_plan_boot(v->name, st->uuid, &v->boot, &ms, trial, sizeof(trial));
	if (r == 0) {
		snprintf(st->boot_dir, sizeof(st->boot_dir), "%s", ms.boot_dir);
		snprintf(st->boot_device, sizeof(st->boot_device), "%s", ms.boot_device);
		snprintf(st->cmdline_file, sizeof(st->cmdline_file), "%s", ms.cmdline_file);
		snprintf(st->initramfs, sizeof(st->initramfs), "%s", ms.initramfs);
		st->final_config = ms.final_config;
		st->final_cmdline = ms.final_cmdline;
		ms.final_config = ms.final_cmdline = NULL;
		st->final_trial = strdup(trial);
		/* the staging root boots with today's config.txt and initramfs */
		r = lr_read_file(v->boot.config_path, 1 << 20, &st->stage_config, NULL);
	}
	lr_migrate_state_done(&ms);
	return r;
}

static void print_plan(const struct via *v)
{
	char a[32], b[32];

	if (cli.json) {
		struct json_object *o = via_state_json(&v->st, false);

		put_int(o, "root_used", (int64_t)v->root_used);
		put_int(o, "staging_size", (int64_t)v->slot.size);
		progress_event("plan", o);
		return;
	}
	printf("Plan: encrypt the running root %s (%s used) in place, through a staging copy on %s:\n",
	       v->source, size_str(v->root_used, a, sizeof(a)), v->target);
	if (v->reuse)
		printf("  - reuse the staging partition %s (%s, ext4 labelled " STAGE_LABEL "): it is brought up to "
		       "date, not reformatted\n", v->st.staging, size_str(v->slot.size, a, sizeof(a)));
	else
		printf("  - %screate partition %s: %s at %s, ext4 labelled " STAGE_LABEL "\n",
		       v->disk.label == LR_LABEL_NONE ? "create an MBR partition table on the drive, " : "",
		       v->st.staging, size_str(v->slot.size, a, sizeof(a)), size_str(v->slot.start, b, sizeof(b)));
	for (size_t i = 0; i < v->disk.n_parts; i++)
		if (!v->reuse || v->disk.parts[i].partno != v->slot.partno) {
			char dev[64];

			lr_disk_partition_name(v->target, v->disk.parts[i].partno, dev, sizeof(dev));
			printf("  - leave %s (%s) alone\n", dev, size_str(v->disk.parts[i].size, a, sizeof(a)));
		}
	printf("  - copy / to it with rsync -aHAX --delete: a PLAIN, NOT ENCRYPTED copy of the system, which\n"
	       "    stays on %s afterwards (keep that drive safe; it speeds up converting the next board)\n",
	       v->st.staging);
	printf("  - %s: %s, %s, %s: boot the staging root once (config.txt is not changed yet)\n",
	       v->st.boot_dir, LR_TRYBOOT_CONFIG, LR_TRIAL_CMDLINE, LR_TRIAL_INITRD);
	printf("  - then reboot with: %s; on the staging root, %s:\n", REBOOT_CMD, VIA_SERVICE);
	printf("      make the staging root the default boot, copy %s (read-only) onto it again,\n", v->source);
	printf("      ERASE %s (discard + zeros), LUKS2 on it (%s, UUID %s, key locked by %s%s),\n", v->source,
	       v->cipher, v->st.uuid, v->hsm_spec, v->recovery ? " + recovery key" : "");
	printf("      ext4, copy the root back, crypttab/fstab, initramfs, and boot it once (tryboot);\n"
	       "      when it comes up it becomes the default (root=/dev/mapper/%s)\n", v->name);
}

/* ---- run 1: on the SD root ---- */

static void print_ready(const struct via *v, const struct lr_secret *recovery)
{
	char a[32];

	if (cli.json) {
		struct json_object *o = via_state_json(&v->st, false), *rk;
		const char *text;

		json_object_object_add(o, "event", json_object_new_string("ready"));
		put_str(o, "reboot", REBOOT_CMD);
		if (recovery)
			put_str(o, "recovery_key", (const char *)recovery->data);
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		printf("%s\n", text);
		fflush(stdout);
		explicit_bzero((char *)text, strlen(text));
		if (json_object_object_get_ex(o, "recovery_key", &rk))
			explicit_bzero((char *)json_object_get_string(rk), (size_t)json_object_get_string_len(rk));
		json_object_put(o);
		return;
	}
	printf("Staging copy on %s: %s transferred%s.\n", v->st.staging, size_str(v->st.staged_bytes, a, sizeof(a)),
	       v->reuse ? " (the partition held a copy already)" : "");
	if (recovery)
		cli_show_recovery_key(recovery, -1);
	printf("Ready. Reboot into the staging root with: %s\n", REBOOT_CMD);
}

static int stage(struct via *v, const struct lr_secret *recovery)
{
	struct via_state *st = &v->st;
	struct mounts ms = { 0 };
	struct migrate_rsync_stats stats;
	struct lr_disk_info after;
	char spec[64], *mkfs[] = { (char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-L",
				   (char *)STAGE_LABEL, st->staging, NULL };
	struct lr_migrate_state bv;
	_cleanup_free_ char *trial = NULL, *initrd = NULL, *trial_initrd = NULL, *cmdline = NULL;
	int r;

	if (!v->reuse) {
		r = lr_disk_apply(v->target, &v->disk, &v->slot, 1);
		if (r == 0)
			r = run_ok(mkfs, true);
		if (r < 0)
			return r;
	}
	r = lr_disk_inspect(v->target, &after);
	for (size_t i = 0; r == 0 && i < after.n_parts; i++)
		if (after.parts[i].partno == v->slot.partno)
			snprintf(st->staging_partuuid, sizeof(st->staging_partuuid), "%s", after.parts[i].uuid);
	if (r == 0 && !*st->staging_partuuid)
		r = lr_error_code(-ENOENT, "%s has no PARTUUID: the staging root could not be named on the kernel "
				  "command line", st->staging);
	if (r < 0)
		return r;
	snprintf(spec, sizeof(spec), "PARTUUID=%s", st->staging_partuuid);
	r = lr_read_file(v->boot.cmdline_path, 1 << 20, &cmdline, NULL);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", v->boot.cmdline_path, strerror(-r));
	st->stage_cmdline = with_root(cmdline, spec);
	if (!st->stage_cmdline || asprintf(&trial, "%s panic=10", st->stage_cmdline) < 0)
		return -ENOMEM;
	/* the service runs on whichever root boots next: the staging copy, or this one */
	r = enable_service("");
	if (r < 0)
		return r;
	r = do_mount(&ms, "/", VIA_WORK_DIR "/src", NULL, MS_BIND | MS_RDONLY);
	if (r == 0)
		r = do_mount(&ms, st->staging, VIA_WORK_DIR "/stage", "ext4", 0);
	if (r == 0)
		r = migrate_rsync(VIA_WORK_DIR "/src/", VIA_WORK_DIR "/stage/", true, "copy", VIA_STATE_PATH, &stats);
	if (r < 0)
		goto out;
	st->staged_bytes = stats.literal;
	st->staged_sent = stats.sent;
	lr_info("staging copy: %" PRIu64 " bytes of file data transferred (%" PRIu64 " files, %" PRIu64
		" bytes sent)", stats.literal, stats.files, stats.sent);
	r = set_fstab_root(VIA_WORK_DIR "/stage", spec);
	if (r < 0)
		goto out;
	st->phase = VIA_STAGING_TRIAL;
	r = via_state_save(VIA_WORK_DIR "/stage", st);
	st->phase = VIA_STAGING;
	if (r == 0)
		r = enable_service(VIA_WORK_DIR "/stage");
	undo_mounts(&ms);
	if (r < 0)
		goto out;
	/* the staging root boots through today's initramfs: root= by PARTUUID, nothing to unlock */
	if (asprintf(&initrd, "%s/%s", st->boot_dir, st->initramfs) < 0 ||
	    asprintf(&trial_initrd, "%s/%s", st->boot_dir, LR_TRIAL_INITRD) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = lr_copy_file_atomic(initrd, trial_initrd);
	bv = boot_view(st, true);
	if (r == 0)
		r = lr_migrate_write_trial(&bv, trial);
	if (r < 0)
		goto out;
	st->phase = VIA_STAGING_TRIAL;
	r = via_state_save("/", st);
	sync();
	if (r == 0)
		print_ready(v, recovery);
out:
	undo_mounts(&ms);
	return r;
}

static int act(struct via *v)
{
	_cleanup_secret_ struct lr_secret *recovery = NULL;
	struct lr_led led;
	int r, fd;

	mkdir("/run/lockroot", 0700);
	mkdir(VIA_WORK_DIR, 0700);
	fd = open(VIA_WORK_DIR "/running", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return lr_error_code(-EBUSY, "another lockroot convert --via is running (%s exists)",
				     VIA_WORK_DIR "/running");
	close(fd);
	lr_led_blink(&led);
	if (v->recovery) {
		r = lr_recovery_key_generate(&recovery);
		if (r == 0)
			r = seal_recovery(v, recovery);
		if (r < 0)
			goto out;
	}
	v->st.phase = VIA_STAGING;
	r = via_state_save("/", &v->st);
	if (r == 0)
		r = stage(v, recovery);
out:
	lr_led_restore(&led);
	if (r < 0 && v->st.phase == VIA_STAGING) {
		struct lr_migrate_state bv = boot_view(&v->st, true);
		char *rec = NULL;

		v->st.phase = VIA_FAILED;
		set_error(&v->st, "staging on %s stopped (nothing was switched; the root is untouched): run lockroot "
			  "convert --via again", v->target);
		via_state_save("/", &v->st);
		lr_migrate_abandon_trial(&bv, &rec);
		free(rec);
	}
	unlink(VIA_WORK_DIR "/running");
	if (r == 0 && v->reboot) {
		char *argv[] = { (char *)"systemctl", (char *)"reboot", (char *)"0 tryboot", NULL };

		r = run_ok(argv, false);
	}
	return r;
}

/* ---- run 2: lockroot-convert-via.service ---- */

struct erase_ctx {
	struct via_state *st;
	struct progress p;
};

static int erase_progress(const struct lr_erase_stats *s, void *userdata)
{
	struct erase_ctx *e = userdata;

	e->st->erase_size = s->size;
	e->st->erase_done = s->done;
	e->st->erase_discarded = s->discarded;
	e->st->erase_overwritten = s->overwritten;
	e->p.total = s->size;
	progress_update(&e->p, s->done, -1);
	return via_state_save("/", e->st) < 0;
}

/* The SD root, read-only, onto the running staging root (a bind mount: never its submounts). */
static int resync(struct via_state *st)
{
	struct mounts ms = { 0 };
	struct migrate_rsync_stats stats;
	char spec[64], type[32], label[64];
	int r;

	lr_info("copying %s (read-only) onto the staging root again", st->source);
	probe_fs(st->source, type, sizeof(type), label, sizeof(label));
	if (!*type)
		return lr_error_code(-EMEDIUMTYPE, "%s holds no file system blkid knows: is it still the old root?",
				     st->source);
	r = do_mount(&ms, st->source, VIA_WORK_DIR "/old", type, MS_RDONLY);
	if (r == 0)
		r = do_mount(&ms, "/", VIA_WORK_DIR "/stage", NULL, MS_BIND);
	if (r == 0)
		r = migrate_rsync(VIA_WORK_DIR "/old/", VIA_WORK_DIR "/stage/", true, "sync", VIA_STATE_PATH, &stats);
	snprintf(spec, sizeof(spec), "PARTUUID=%s", st->staging_partuuid);
	if (r == 0)
		r = set_fstab_root("/", spec);
	undo_mounts(&ms);
	if (r == 0) {
		st->resync_bytes = stats.literal;
		lr_info("resync: %" PRIu64 " bytes of file data transferred", stats.literal);
	}
	return r;
}

static int format_source(struct via_state *st, struct lr_hsm *hsm)
{
	_cleanup_secret_ struct lr_secret *recovery = NULL;
	struct lr_enroll_result res = { 0 };
	struct lr_format_params p = {
		.device = st->source, .cipher = st->cipher, .hsm = hsm, .recovery_key = st->recovery,
		.recovery_cost = { .iterations = st->rec_iterations, .memory_kb = st->rec_memory },
		.uuid = st->uuid, .label = "lockroot-root",
	};
	int r;

	if (lr_bind_parse(*st->bind ? st->bind : "default", &p.bind_mask, &p.bind_default) < 0)
		return -EINVAL;
	if (st->recovery) {
		r = unseal_recovery(st, hsm, &recovery);
		if (r < 0)
			return r;
		p.recovery_key_value = recovery;
	}
	lr_info("%s: LUKS2 volume %s", st->source, st->uuid);
	r = lr_format(&p, &res);
	lr_enroll_result_done(&res);
	return r;
}

static int configure_root(const struct via_state *st, const char *newroot)
{
	char source[64], mapped[128];
	struct lr_bootcfg cfg = { .root = newroot, .name = st->name, .crypttab_options = MIGRATE_CRYPTTAB_OPTIONS,
				  .firmware_optional = true, .etc_only = true };
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;
	int r;

	snprintf(source, sizeof(source), "UUID=%s", st->uuid);
	cfg.source = source;
	r = lr_bootcfg_plan(&cfg, &c, &n);
	if (r == 0)
		r = lr_bootcfg_apply(c, n);
	lr_bootcfg_changes_free(c, n);
	snprintf(mapped, sizeof(mapped), "/dev/mapper/%s", st->name);
	return r < 0 ? r : set_fstab_root(newroot, mapped);
}

/* Open the new volume through the HSM, ext4, the staging root copied onto it, configured,
 * its initramfs, checked; then the trial files. */
static int copy_back(struct via_state *st)
{
	struct lr_unlock_params u = { .device = st->source, .name = MAPPED_NAME, .token = -1 };
	char mapped[] = "/dev/mapper/" MAPPED_NAME, newroot[] = VIA_WORK_DIR "/new";
	char *mkfs[] = { (char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-L", (char *)"rootfs", mapped, NULL };
	char *fsck[] = { (char *)"e2fsck", (char *)"-fn", mapped, NULL };
	struct mounts ms = { 0 };
	struct lr_migrate_state bv = boot_view(st, false);
	enum via_phase saved = st->phase;
	int r;

	lr_deactivate(MAPPED_NAME); /* left by a cut */
	r = lr_unlock(&u, NULL);
	if (r < 0)
		return lr_error_code(r, "the new volume %s does not open through the HSM: %s", st->source, strerror(-r));
	r = run_ok(mkfs, true);
	if (r == 0)
		r = do_mount(&ms, "/", VIA_WORK_DIR "/src", NULL, MS_BIND | MS_RDONLY);
	if (r == 0)
		r = do_mount(&ms, mapped, newroot, "ext4", 0);
	if (r == 0)
		r = migrate_rsync(VIA_WORK_DIR "/src/", VIA_WORK_DIR "/new/", true, "copy", VIA_STATE_PATH, NULL);
	if (r == 0)
		r = configure_root(st, newroot);
	if (r == 0) {
		/* what the encrypted root reads when it comes up */
		st->phase = VIA_TRIAL;
		r = via_state_save(newroot, st);
		st->phase = saved;
	}
	if (r == 0)
		r = enable_service(newroot);
	if (r == 0)
		r = migrate_build_initramfs(newroot, st->boot_dir);
	undo_mounts(&ms);
	if (r == 0 && cli_run(fsck, true) != 0)
		r = lr_error_code(-EIO, "the new file system on %s does not check clean", st->source);
	lr_deactivate(MAPPED_NAME);
	if (r == 0)
		r = lr_migrate_write_trial(&bv, st->final_trial);
	return r;
}

static int reboot_trial(void)
{
	char *argv[] = { (char *)"systemctl", (char *)"--no-block", (char *)"reboot", (char *)"0 tryboot", NULL };

	lr_info("rebooting into the encrypted root once (tryboot)");
	sync();
	return run_ok(argv, false);
}

/* Booted from the staging root. */
static int on_staging(struct via_state *st)
{
	struct lr_migrate_state bv;
	struct lr_hsm hsm = { 0 };
	struct lr_led led;
	int r = 0;

	mkdir("/run/lockroot", 0700);
	mkdir(VIA_WORK_DIR, 0700);
	lr_led_blink(&led);
	if (st->phase == VIA_STAGING_TRIAL) {
		/* first of all: a power cut from here on boots this root again and resumes */
		bv = boot_view(st, true);
		r = lr_migrate_commit(&bv, "/boot");
		if (r < 0) {
			r = fail_step(st, r, "making the staging root the default boot");
			goto out;
		}
		lr_info("the staging root %s is now the default boot", st->staging);
		st->phase = VIA_RESYNC;
		r = via_state_save("/", st);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_RESYNC) {
		r = resync(st);
		if (r < 0) {
			r = fail_step(st, r, "copying the old root onto the staging root again");
			goto out;
		}
		st->phase = VIA_ERASING;
		r = via_state_save("/", st);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_ERASING) {
		struct erase_ctx e = { .st = st };
		struct lr_erase_stats s = { 0 };

		lr_info("erasing the plaintext root %s%s", st->source, st->erase_done ? " (resuming)" : "");
		progress_start(&e.p, "erase", st->erase_size);
		r = lr_erase(st->source, st->erase_done, false, erase_progress, &e, &s);
		progress_end(&e.p, r == 0);
		if (r < 0) {
			r = fail_step(st, r, "erasing the old root");
			goto out;
		}
		st->phase = VIA_FORMATTING;
		r = via_state_save("/", st);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_FORMATTING || st->phase == VIA_COPYING) {
		r = lr_hsm_parse(st->hsm, &hsm);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_FORMATTING) {
		r = format_source(st, &hsm);
		if (r < 0) {
			r = fail_step(st, r, "making the LUKS2 volume");
			goto out;
		}
		/* the recovery key is in its keyslot now: nothing keeps it any more */
		json_object_put(st->sealed);
		st->sealed = NULL;
		st->phase = VIA_COPYING;
		r = via_state_save("/", st);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_COPYING) {
		r = copy_back(st);
		if (r < 0) {
			r = fail_step(st, r, "copying the root onto the encrypted volume");
			goto out;
		}
		free(st->error);
		st->error = NULL;
		st->phase = VIA_TRIAL;
		st->trials = 0;
		r = via_state_save("/", st);
		if (r < 0)
			goto out;
	}
	if (st->phase == VIA_TRIAL) {
		/* back here: the trial boot did not come up, or a cut came before it */
		if (st->trials >= MAX_TRIALS) {
			char *rec = NULL;

			bv = boot_view(st, false);
			lr_migrate_abandon_trial(&bv, &rec);
			st->phase = VIA_FAILED;
			set_error(st, "the encrypted root on %s did not come up in %d trial boots; the board runs the "
				  "staging root: %s", st->source, st->trials, rec ? rec : "see the boot console");
			free(rec);
			lr_error("%s", st->error);
			via_state_save("/", st);
			r = -EIO;
			goto out;
		}
		st->trials++;
		r = via_state_save("/", st);
		if (r == 0)
			r = reboot_trial();
	}
out:
	lr_led_restore(&led);
	lr_hsm_done(&hsm);
	return r;
}

/* Booted from the encrypted root: make it the default. */
static int on_encrypted(struct via_state *st)
{
	struct lr_migrate_state bv = boot_view(st, false);
	int r;

	if (st->phase != VIA_TRIAL && st->phase != VIA_COMMITTING)
		return 0;
	st->phase = VIA_COMMITTING;
	r = via_state_save("/", st);
	if (r < 0)
		return r;
	r = lr_migrate_commit(&bv, "/boot");
	if (r < 0)
		return fail_step(st, r, "making the encrypted root the default boot");
	free(st->error);
	st->error = NULL;
	st->phase = VIA_DONE;
	r = via_state_save("/", st);
	if (r == 0)
		lr_info("the encrypted root %s (/dev/mapper/%s) is now the default; the staging copy on %s is kept",
			st->source, st->name, st->staging);
	return r;
}

/* Booted from the SD root while a conversion was under way: the staging trial did not come
 * up (or was never started). */
static int on_source(struct via_state *st)
{
	struct lr_migrate_state bv = boot_view(st, true);
	char *rec = NULL;

	if (st->phase == VIA_STAGING) {
		st->phase = VIA_INTERRUPTED;
		set_error(st, "interrupted while staging (power cut?); nothing was switched: run lockroot convert "
			  "--via again");
	} else if (st->phase == VIA_STAGING_TRIAL) {
		lr_migrate_abandon_trial(&bv, &rec);
		st->phase = VIA_FAILED;
		set_error(st, "the staging root on %s did not come up, so the board is back on %s (untouched): %s",
			  st->staging, st->source, rec ? rec : "see the boot console");
		free(rec);
		lr_error("%s", st->error);
	} else {
		return 0;
	}
	return via_state_save("/", st);
}

static int finish(void)
{
	struct via_state st;
	struct lr_rootdev rd = { 0 };
	int r = via_state_load("/", &st);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = lr_rootdev_find(&rd);
	if (r < 0)
		goto out;
	if (rd.dm_name && strcmp(rd.dm_name, st.name) == 0)
		r = on_encrypted(&st);
	else if (running_on(st.staging))
		r = on_staging(&st);
	else if (running_on(st.source))
		r = on_source(&st);
	else
		lr_warn("/ is on %s, neither %s nor the staging root %s: nothing to do", rd.source, st.source,
			st.staging);
out:
	lr_rootdev_done(&rd);
	via_state_done(&st);
	return r;
}

/* ---- status ---- */

static void print_state(const struct via_state *st)
{
	char a[32], b[32];

	if (cli.json) {
		struct json_object *o = via_state_json(st, false);

		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
		json_object_put(o);
		return;
	}
	printf("Conversion of %s through the staging partition %s: %s\n", st->source, st->staging,
	       phase_names[st->phase]);
	printf("  staging copy: %s transferred%s\n", size_str(st->staged_bytes, a, sizeof(a)),
	       st->staging_reused ? " (reused partition)" : "");
	if (st->erase_size)
		printf("  old root erased: %s of %s\n", size_str(st->erase_done, a, sizeof(a)),
		       size_str(st->erase_size, b, sizeof(b)));
	if (st->phase == VIA_STAGING_TRIAL)
		printf("  waiting for the trial boot of the staging root: %s\n", REBOOT_CMD);
	if (st->phase == VIA_DONE)
		printf("  /dev/mapper/%s; %s still holds a PLAIN copy of the system\n", st->name, st->staging);
	if (st->error)
		printf("  %s\n", st->error);
}

bool cli_has_conversion_via(void)
{
	struct via_state st;
	bool has;

	lr_log_demote(1);
	has = via_state_load("/", &st) == 0;
	if (has)
		via_state_done(&st);
	lr_log_demote(-1);
	return has;
}

void cli_print_conversion_via(void)
{
	struct via_state st;

	lr_log_demote(1);
	if (via_state_load("/", &st) == 0) {
		if (!cli.json)
			printf("\n");
		print_state(&st);
		via_state_done(&st);
	}
	lr_log_demote(-1);
}

static int show_status(void)
{
	struct via_state st;
	int r = via_state_load("/", &st);

	if (r == -ENOENT) {
		puts(cli.json ? "{}" : "No conversion through a staging drive.");
		return 0;
	}
	if (r < 0)
		return r;
	print_state(&st);
	via_state_done(&st);
	return 0;
}

int convert_via(int argc, char **argv)
{
	struct via v = { .name = "cryptroot", .hsm_spec = "tpm2", .recovery = true };
	enum mode mode = MODE_CONVERT;
	int r;

	r = parse(&v, &mode, argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	if (mode == MODE_STATUS)
		return lr_exit_code(show_status());
	if (mode == MODE_FINISH)
		return lr_exit_code(finish());
	if (!v.cipher)
		v.cipher = lr_cipher_default();
	r = migrate_check_source(v.source_arg, v.source, sizeof(v.source));
	if (r == 0)
		r = migrate_check_drive("--via", v.target, v.source, &v.disk);
	if (r == 0)
		r = check_state();
	if (r == 0)
		r = migrate_check_tools();
	if (r == 0 && access(VIA_SERVICE_UNIT, R_OK) < 0)
		r = lr_error_code(-ENOPKG, "%s is missing: install the lockroot package", VIA_SERVICE_UNIT);
	if (r == 0)
		r = check_hsm(&v);
	if (r == 0)
		r = check_sizes(&v);
	if (r == 0)
		r = plan_staging(&v);
	if (r == 0)
		r = plan_state(&v);
	if (r < 0)
		goto out;
	print_plan(&v);
	if (v.dry_run)
		goto out;
	if (!v.yes && !cli_confirm("convert", "Go ahead? Type yes:", "yes")) {
		r = -ECANCELED;
		goto out;
	}
	r = act(&v);
out:
	via_state_done(&v.st);
	lr_bootcfg_info_done(&v.boot);
	lr_hsm_done(&v.hsm);
	return r < 0 ? lr_exit_code(r) : 0;
}
