/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot convert [-m SRC] ...: encrypt the running plaintext ext4 root in place (LUKS2,
 * libcryptsetup's reencryption engine, lib/convert.h), with no external disk.
 *
 * parse -> validate (nothing written) -> plan (printed) -> act:
 *   LUKS2 header template on the boot partition (HSM keyslot + token, recovery keyslot) ->
 *   state /var/lib/lockroot/convert.json -> crypttab/fstab/cmdline.txt/config.txt (+
 *   lockroot.convert=ROOT,BOOT) -> lockroot-convert.service -> initramfs, checked.
 * Then, at the next boot:
 *   --boot   (initramfs, scripts/init-premount/lockroot-convert): shrink the file system, write
 *            the header; or, when that cannot start, boot the plaintext root as before;
 *   --resume (lockroot-convert.service): encrypt the rest online, grow the file system, clean
 *            the boot partition up.
 * --status shows the phase and the progress.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bootcfg.h"
#include "cli.h"
#include "convert.h"
#include "erase.h"
#include "migrate.h"
#include "partition.h"
#include "progress.h"
#include "provision.h"
#include "rootdev.h"

#define KEYSCRIPT "/usr/lib/lockroot/keyscript"
/* PARTUUID names the partition both as plain ext4 and as LUKS2 (a UUID would change). */
#define CRYPTTAB_OPTIONS "luks,discard,keyscript=" KEYSCRIPT ",initramfs"
#define STATE_PATH "/var/lib/lockroot/convert.json"
#define PROGRESS_PATH "/run/lockroot/convert-progress.json"
#define RUNNING_PATH "/run/lockroot/convert.running"
#define BOOT_MNT "/run/lockroot/boot"
/* On the boot partition: why the initramfs did not start the conversion (for --resume). */
#define REASON_FILE "lockroot-convert.err"
#define CMDLINE_KEY "lockroot.convert="
#define SERVICE "lockroot-convert.service"
#define REBOOT_CMD "systemctl reboot"
#define INITRAMFS_CMD "update-initramfs -u -k all"
#define IT_DIR "/usr/share/initramfs-tools"
#define MiB (UINT64_C(1) << 20)
#define SAY(...) fprintf(stderr, "lockroot: convert: " __VA_ARGS__)

static void help(void)
{
	printf("Usage: lockroot convert [-m SRC] [--hsm SPEC] [OPTIONS]\n"
	       "       lockroot convert --via DEV [-m SRC] [OPTIONS]\n"
	       "       lockroot convert --status [--json]\n\n"
	       "Encrypt the running root file system in place (LUKS2), with its key locked by the HSM.\n"
	       "Prepared now; at the next boot the initramfs shrinks the ext4 file system by 32 MiB and\n"
	       "writes the LUKS2 header, then the data is encrypted while the system runs\n"
	       "(lockroot-convert.service). Resumable after a power cut at any point.\n\n"
	       "  -m SRC                 the running root partition (default /dev/mmcblk0p2; a number N\n"
	       "                         is /dev/mmcblk0pN)\n"
	       "  --via DEV              copy out to the drive DEV, reformat, copy back (file systems\n"
	       "                         that cannot shrink)\n"
	       "  --name NAME            /dev/mapper/NAME of the root (default cryptroot)\n"
	       "  --hsm SPEC             tpm2[:TCTI] (default) or pkcs11:URI\n"
	       "  --bind LIST, --pcrs LIST, --pin-file F   as for lockroot enroll\n"
	       "  --cipher C             default: aes-xts-plain64 with AES instructions, else Adiantum\n"
	       "  --no-recovery-key      no recovery key (not advised: a changed board cannot unlock)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "  --reboot               reboot when ready\n"
	       "  --dry-run              print the plan, change nothing\n"
	       "  -y, --yes              do not ask before writing\n"
	       "  --json                 JSON events on stdout (plan, ready)\n"
	       "  --status               show the state and progress of the conversion\n"
	       "  --boot                 (initramfs) start or repair the conversion\n"
	       "  --resume               (lockroot-convert.service) encrypt the rest, then clean up\n");
}

enum { OPT_NAME = 256, OPT_HSM, OPT_BIND, OPT_PCRS, OPT_PIN_FILE, OPT_CIPHER, OPT_NO_RECOVERY, OPT_RMEM,
       OPT_RITER, OPT_REBOOT, OPT_DRY_RUN, OPT_JSON, OPT_STATUS, OPT_BOOT, OPT_RESUME };

static const struct option options[] = {
	{ "name", required_argument, NULL, OPT_NAME },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "cipher", required_argument, NULL, OPT_CIPHER },
	{ "no-recovery-key", no_argument, NULL, OPT_NO_RECOVERY },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "reboot", no_argument, NULL, OPT_REBOOT },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "status", no_argument, NULL, OPT_STATUS },
	{ "boot", no_argument, NULL, OPT_BOOT },
	{ "resume", no_argument, NULL, OPT_RESUME },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct convert {
	/* options */
	const char *source_arg, *name, *hsm_spec, *bind, *pcrs, *pin_file, *cipher;
	bool recovery, reboot, dry_run, yes;
	struct lr_pbkdf_cost recovery_cost;
	/* found */
	const char *root;                 /* "/", or LOCKROOT_SYSROOT (tests) */
	char device[PATH_MAX];
	struct lr_convert_info info;
	uint64_t new_fs_size, min_size;
	char root_partuuid[64], boot_partuuid[64], boot_source[PATH_MAX];
	char template_path[PATH_MAX], cmdline_file[128];
	const char *cmdline;              /* the new command line (in changes) */
	struct lr_bootcfg_info boot;
	struct lr_bootcfg_change *changes;
	size_t n_changes;
	struct lr_hsm hsm;
	struct lr_secret *pin;
	uint32_t bind_mask;
	bool bind_default;
};

/* ---- small helpers ---- */

static const char *size_str(uint64_t b, char *buf, size_t len)
{
	lr_format_size(b, buf, len);
	return buf;
}

/* dir/name; a path too long names nothing (""), so that it is never a different file. */
static void path_in(char *out, size_t len, const char *dir, const char *name)
{
	if (snprintf(out, len, "%s/%s", dir, name) >= (int)len)
		out[0] = '\0';
}

static const char *sysroot(void)
{
	const char *r = getenv("LOCKROOT_SYSROOT");

	return r && *r && strcmp(r, "/") ? r : "/";
}

/* Under LOCKROOT_SYSROOT; "" prefix for the running system. */
static void rpath(char *out, size_t len, const char *path)
{
	snprintf(out, len, "%s%s", strcmp(sysroot(), "/") ? sysroot() : "", path);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What is mounted at mountpoint, from /proc/self/mountinfo (under LOCKROOT_SYSROOT), or "". */
static void mounted_from(const char *mountpoint, char *out, size_t len)
{
	_cleanup_free_ char *info = NULL;
	char *save = NULL;

	out[0] = '\0';
	if (lr_sysroot_read("/proc/self/mountinfo", &info, NULL) < 0)
		return;
	for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char mp[1024], src[1024];
		const char *sep = strstr(line, " - ");

		if (sep && sscanf(line, "%*s %*s %*s %*s %1023s", mp) == 1 && sscanf(sep + 3, "%*s %1023s", src) == 1 &&
		    strcmp(mp, mountpoint) == 0)
			snprintf(out, len, "%s", src);
	}
}

static int read_at(const char *dev, void *buf, size_t len, off_t off)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, buf, len, off);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

static bool has_luks_magic(const char *dev)
{
	unsigned char m[6];

	return read_at(dev, m, sizeof(m), 0) == 0 && memcmp(m, "LUKS\xba\xbe", 6) == 0;
}

static bool is_vfat(const char *dev)
{
	unsigned char b[512];

	return read_at(dev, b, sizeof(b), 0) == 0 && b[510] == 0x55 && b[511] == 0xaa &&
	       (memcmp(b + 0x36, "FAT", 3) == 0 || memcmp(b + 0x52, "FAT32", 5) == 0);
}

/* ext4 block size from the superblock (s_log_block_size). */
static uint64_t ext4_block_size(const char *dev)
{
	uint32_t log;

	if (read_at(dev, &log, sizeof(log), 1024 + 24) < 0 || log > 6)
		return 4096;
	return UINT64_C(1024) << log;
}

static bool safe_word(const char *s)
{
	return *s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=_./:-") == strlen(s);
}

/* A one-line answer of a command (blkid, resize2fs -P): argv run with no shell. */
static int capture(char *const argv[], const char *prefix, char *out, size_t len)
{
	int fd[2], status;
	char buf[4096];
	size_t n = 0;
	pid_t pid;
	int r = -ENOENT;

	if (pipe2(fd, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		return -errno;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(fd[1], STDOUT_FILENO);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fd[1]);
	for (;;) {
		ssize_t k = read(fd[0], buf + n, sizeof(buf) - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
		if (n == sizeof(buf) - 1)
			break;
	}
	buf[n] = '\0';
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return lr_error_code(-ENOENT, "%s: command not found", argv[0]);
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		if (strncmp(l, prefix, strlen(prefix)) == 0 && strlen(l + strlen(prefix)) < len) {
			snprintf(out, len, "%s", l + strlen(prefix));
			r = 0;
		}
	return r;
}

/* The PARTUUID of a partition: udev's /dev/disk/by-partuuid (under LOCKROOT_SYSROOT), else
 * blkid. */
static int partuuid_of(const char *dev, char *out, size_t len)
{
	_cleanup_free_ char *dir = lr_sysroot_path("/dev/disk/by-partuuid");
	char *argv[] = { (char *)"blkid", (char *)"-s", (char *)"PARTUUID", (char *)"-o", (char *)"value",
			 (char *)dev, NULL };
	DIR *d = dir ? opendir(dir) : NULL;
	struct dirent *e;
	int r = -ENOENT;

	while (d && (e = readdir(d)) && r < 0) {
		char link[PATH_MAX];

		if (e->d_name[0] == '.')
			continue;
		path_in(link, sizeof(link), dir, e->d_name);
		if (cli_same_device(link, dev) && strlen(e->d_name) < len) {
			snprintf(out, len, "%s", e->d_name);
			r = 0;
		}
	}
	if (d)
		closedir(d);
	if (r < 0)
		r = capture(argv, "", out, len);
	if (r == 0 && !safe_word(out))
		r = -EINVAL;
	return r;
}

/* PARTUUID=x, UUID=x, LABEL=x or a path to a device node (or, in tests, a file or directory)
 * that exists now. */
int cli_resolve_spec(const char *spec, char *out, size_t len)
{
	char buf[PATH_MAX], link[PATH_MAX], spec_arg[160];
	const char *path = lr_spec_link(spec, buf, sizeof(buf));
	char *argv[] = { (char *)"blkid", (char *)"-l", (char *)"-o", (char *)"device", (char *)"-t", spec_arg, NULL };

	if (path != spec) {
		rpath(link, sizeof(link), path);
		if (access(link, F_OK) == 0 && realpath(link, out) && strlen(out) < len)
			return 0;
		snprintf(spec_arg, sizeof(spec_arg), "%s", spec);
		return capture(argv, "/", out + 1, len - 1) == 0 ? (out[0] = '/', 0) : -ENOENT;
	}
	if (access(spec, F_OK) < 0)
		return -ENOENT;
	snprintf(out, len, "%s", spec);
	return 0;
}

/* ---- the state file ---- */

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		json_object_get_string(v) : "";
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static void set_str(struct json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v));
}

static void set_int(struct json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

/* -ENOENT when there is none. */
static int state_load(struct json_object **out)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	struct json_object *o;
	int r;

	rpath(path, sizeof(path), STATE_PATH);
	r = lr_read_file(path, 1 << 20, &text, NULL);
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", path, strerror(-r));
	o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object) || !*jstr(o, "phase")) {
		json_object_put(o);
		return lr_error_code(-EBADMSG, "%s is not a lockroot conversion state", path);
	}
	*out = o;
	return 0;
}

/* Pretty printed: one field a line, which the initramfs hook greps. */
static int state_save(struct json_object *o)
{
	char path[PATH_MAX];
	const char *text;

	set_int(o, "updated", time(NULL));
	rpath(path, sizeof(path), "/var/lib/lockroot");
	for (char *p = path + 1; ; p++) {
		bool last = *p == '\0';

		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return lr_error_code(-errno, "cannot create %s: %s", path, strerror(errno));
		if (last)
			break;
		*p = '/';
	}
	rpath(path, sizeof(path), STATE_PATH);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	return lr_write_file_atomic(path, text, strlen(text), 0644);
}

static void state_phase(struct json_object *o, const char *phase, const char *error)
{
	set_str(o, "phase", phase);
	if (error)
		set_str(o, "error", error);
	else
		json_object_object_del(o, "error");
}

static bool phase_is(struct json_object *o, const char *phase)
{
	return strcmp(jstr(o, "phase"), phase) == 0;
}

/* ---- parse ---- */

enum mode { MODE_CONVERT, MODE_STATUS, MODE_BOOT, MODE_RESUME };

static int parse(struct convert *c, enum mode *mode, int argc, char **argv)
{
	int o;

	while ((o = getopt_long(argc, argv, "m:yh", options, NULL)) >= 0) {
		switch (o) {
		case 'm': c->source_arg = optarg; break;
		case OPT_NAME: c->name = optarg; break;
		case OPT_HSM: c->hsm_spec = optarg; break;
		case OPT_BIND: c->bind = optarg; break;
		case OPT_PCRS: c->pcrs = optarg; break;
		case OPT_PIN_FILE: c->pin_file = optarg; break;
		case OPT_CIPHER: c->cipher = optarg; break;
		case OPT_NO_RECOVERY: c->recovery = false; break;
		case OPT_RMEM:
			if (cli_parse_uint("convert", "--recovery-pbkdf-memory", optarg, &c->recovery_cost.memory_kb))
				return LR_EXIT_USAGE;
			break;
		case OPT_RITER:
			if (cli_parse_uint("convert", "--recovery-pbkdf-iterations", optarg, &c->recovery_cost.iterations))
				return LR_EXIT_USAGE;
			break;
		case OPT_REBOOT: c->reboot = true; break;
		case OPT_DRY_RUN: c->dry_run = true; break;
		case OPT_JSON: cli.json = true; break;
		case OPT_STATUS: *mode = MODE_STATUS; break;
		case OPT_BOOT: *mode = MODE_BOOT; break;
		case OPT_RESUME: *mode = MODE_RESUME; break;
		case 'y': c->yes = true; break;
		case 'h': help(); return -1;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage_error("convert", "unexpected argument '%s'", argv[optind]);
	if (strlen(c->name) >= 48 || !safe_word(c->name) || strchr(c->name, '/'))
		return cli_usage_error("convert", "--name %s: a device-mapper name without '/' or spaces", c->name);
	return 0;
}

/* ---- validate: nothing is written ---- */

static int check_device(struct convert *c)
{
	struct stat st;

	if (!c->source_arg)
		snprintf(c->device, sizeof(c->device), "/dev/mmcblk0p2");
	else if (strspn(c->source_arg, "0123456789") == strlen(c->source_arg))
		snprintf(c->device, sizeof(c->device), "/dev/mmcblk0p%s", c->source_arg);
	else
		snprintf(c->device, sizeof(c->device), "%s", c->source_arg);
	if (stat(c->device, &st) < 0)
		return lr_error_code(-ENOENT, "-m %s: no such device (name the root partition with -m; see lsblk)",
				     c->device);
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return lr_error_code(-ENOTBLK, "-m %s is not a block device", c->device);
	return 0;
}

static int check_not_boot(struct convert *c)
{
	static const char *const dirs[] = { "/boot/firmware", "/boot" };
	char src[PATH_MAX];

	for (size_t i = 0; i < LR_ELEMENTSOF(dirs); i++) {
		mounted_from(dirs[i], src, sizeof(src));
		if (*src && cli_same_device(src, c->device))
			return lr_error_code(-EMEDIUMTYPE, "-m %s is the boot partition (mounted at %s): name the root "
					     "partition with -m (see lsblk)", c->device, dirs[i]);
	}
	if (is_vfat(c->device))
		return lr_error_code(-EMEDIUMTYPE, "-m %s is a FAT file system, like the boot partition: name the "
				     "root partition with -m (see lsblk)", c->device);
	return 0;
}

static int check_running_root(struct convert *c)
{
	struct lr_rootdev rd = { 0 };
	struct stat root, src;
	int r;

	r = lr_rootdev_find(&rd);
	if (r < 0)
		return r;
	if (rd.dm_name && rd.backing && cli_same_device(rd.backing, c->device)) {
		r = lr_error_code(-EMEDIUMTYPE, "%s is already encrypted: / is on /dev/mapper/%s%s", c->device,
				  rd.dm_name, access(STATE_PATH, F_OK) == 0 ? " (see lockroot convert --status)" : "");
		goto out;
	}
	/* The kernel's word (st_dev of /), else what mountinfo says / is mounted from. */
	if (stat("/", &root) == 0 && stat(c->device, &src) == 0 && S_ISBLK(src.st_mode) && src.st_rdev == root.st_dev)
		r = 0;
	else if (!rd.dm_name && cli_same_device(rd.source, c->device))
		r = 0;
	else
		r = lr_error_code(-EMEDIUMTYPE, "-m %s is not the running root (/ is mounted from %s): convert "
				  "encrypts the root of the system it runs on; boot that system, or name its root "
				  "partition with -m", c->device, rd.source);
out:
	lr_rootdev_done(&rd);
	return r;
}

static int check_contents(struct convert *c)
{
	int r;

	if (has_luks_magic(c->device))
		return lr_error_code(-EMEDIUMTYPE, "%s is already LUKS-encrypted: nothing to convert (lockroot "
				     "setup-boot makes it unlock through the HSM)", c->device);
	r = lr_convert_examine(c->device, NULL, &c->info);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", c->device, strerror(-r));
	if (c->info.state == LR_CONVERT_ENCRYPTING || c->info.state == LR_CONVERT_DONE ||
	    c->info.state == LR_CONVERT_STUCK_FINAL)
		return lr_error_code(-EMEDIUMTYPE, "%s is already LUKS2 (%s)", c->device,
				     lr_convert_state_name(c->info.state));
	if (c->info.state != LR_CONVERT_PLAIN && c->info.state != LR_CONVERT_SHRUNK)
		return lr_error_code(-EMEDIUMTYPE, "%s does not hold an ext4 file system, which convert needs to "
				     "shrink in place: use lockroot convert --via DEV (copies out to the drive DEV "
				     "and back)", c->device);
	/* ext2 and ext3 share ext4's superblock: blkid tells them apart. Only ext4 is what the
	 * in-place method is made and tested for. */
	{
		char *argv[] = { (char *)"blkid", (char *)"-p", (char *)"-s", (char *)"TYPE", (char *)"-o",
				 (char *)"value", c->device, NULL };
		char type[32] = "";

		if (capture(argv, "", type, sizeof(type)) == 0 && *type && strcmp(type, "ext4") != 0)
			return lr_error_code(-EMEDIUMTYPE, "%s holds %s, not ext4, which convert needs to shrink "
					     "in place: use lockroot convert --via DEV (copies out to the drive DEV and "
					     "back)", c->device, type);
	}
	return 0;
}

static int check_room(struct convert *c)
{
	uint64_t bs = ext4_block_size(c->device), limit, margin, blocks;
	char *argv[] = { (char *)"resize2fs", (char *)"-P", c->device, NULL };
	char est[64], a[32], b[32], d[32];
	int r;

	if (c->info.part_size < LR_CONVERT_REDUCE * 2)
		return lr_error_code(-ENOSPC, "no room: %s is too small to convert", c->device);
	limit = (c->info.part_size - LR_CONVERT_REDUCE) / bs * bs;
	if (c->info.state == LR_CONVERT_SHRUNK || c->info.fs_size <= limit) {
		c->new_fs_size = c->info.fs_size;
		return 0;
	}
	r = capture(argv, "Estimated minimum size of the filesystem: ", est, sizeof(est));
	if (r < 0 || (blocks = strtoull(est, NULL, 10)) == 0)
		return lr_error_code(r < 0 ? r : -EIO, "resize2fs -P %s gave no estimate of the smallest size of the "
				     "file system", c->device);
	c->min_size = blocks * bs;
	/* The system keeps writing until the reboot; resize2fs also needs some room to move. */
	margin = c->min_size / 20 + 16 * MiB;
	if (c->min_size + margin > limit)
		return lr_error_code(-ENOSPC, "no room on %s: the file system needs at least %s (resize2fs -P, plus "
				     "%s to spare) but must fit in %s, 32 MiB less than the partition, for the "
				     "LUKS2 header: free some space, or use lockroot convert --via DEV",
				     c->device, size_str(c->min_size, a, sizeof(a)), size_str(margin, b, sizeof(b)),
				     size_str(limit, d, sizeof(d)));
	c->new_fs_size = limit;
	return 0;
}

static int check_hsm(struct convert *c)
{
	int r;

	if (cli_hsm_setup("convert", c->hsm_spec, c->pcrs, c->pin_file, &c->hsm, &c->pin))
		return -EINVAL;
	if (cli_bind_setup("convert", c->bind, &c->bind_mask, &c->bind_default))
		return -EINVAL;
	r = c->hsm.backend->probe(&c->hsm);
	if (r < 0)
		return lr_error_code(r, "the HSM (%s) is not available: %s; nothing was written", c->hsm_spec,
				     r == -ENODEV ? "not found" : strerror(-r));
	return 0;
}

static int check_boot(struct convert *c)
{
	const char *rel;
	char src[PATH_MAX];
	int r;

	r = lr_bootcfg_inspect(c->root, &c->boot);
	if (r < 0)
		return r == -ENOENT ? -ENXIO : r;
	if (!c->boot.boot_dir)
		return lr_error_code(-ENXIO, "no Raspberry Pi boot partition (config.txt and cmdline.txt in "
				     "/boot/firmware or /boot): lockroot convert starts from a Pi's boot files");
	rel = c->boot.boot_dir + (strcmp(c->root, "/") ? strlen(c->root) : 0);
	mounted_from(rel, src, sizeof(src));
	if (!*src)
		return lr_error_code(-ENXIO, "%s is not a mount point: the boot files must be on the boot partition, "
				     "which the initramfs mounts", c->boot.boot_dir);
	snprintf(c->boot_source, sizeof(c->boot_source), "%s", src);
	if (partuuid_of(src, c->boot_partuuid, sizeof(c->boot_partuuid)) < 0)
		return lr_error_code(-ENXIO, "cannot find the PARTUUID of the boot partition %s (blkid)", src);
	if (partuuid_of(c->device, c->root_partuuid, sizeof(c->root_partuuid)) < 0)
		return lr_error_code(-ENXIO, "cannot find the PARTUUID of %s (blkid): convert needs a partition "
				     "table entry to name the root by", c->device);
	path_in(c->template_path, sizeof(c->template_path), c->boot.boot_dir, LR_CONVERT_TEMPLATE);
	rel = strrchr(c->boot.cmdline_path, '/');
	snprintf(c->cmdline_file, sizeof(c->cmdline_file), "%s", rel ? rel + 1 : c->boot.cmdline_path);
	return 0;
}

static int check_tools(struct convert *c)
{
	static const char *const need[][2] = {
		{ "/usr/sbin/update-initramfs", "initramfs-tools" },
		{ IT_DIR "/hooks/cryptroot", "cryptsetup-initramfs" },
		{ IT_DIR "/hooks/lockroot", "lockroot (its initramfs hook)" },
		{ IT_DIR "/scripts/init-premount/lockroot-convert", "lockroot (its initramfs script)" },
		{ KEYSCRIPT, "lockroot (its keyscript)" },
		{ "/usr/sbin/resize2fs", "e2fsprogs" },
		{ "/usr/sbin/e2fsck", "e2fsprogs" },
	};

	(void)c;
	for (size_t i = 0; i < LR_ELEMENTSOF(need); i++) {
		char p[PATH_MAX], alt[PATH_MAX];

		rpath(p, sizeof(p), need[i][0]);
		/* e2fsprogs is in /sbin on a system without merged /usr */
		snprintf(alt, sizeof(alt), "%s", p);
		if (strstr(need[i][0], "/usr/sbin/") == need[i][0])
			rpath(alt, sizeof(alt), need[i][0] + 4);
		if (access(p, F_OK) < 0 && access(alt, F_OK) < 0)
			return lr_error_code(-ENOPKG, "%s is missing: install %s first (nothing was written)",
					     need[i][0], need[i][1]);
	}
	return 0;
}

static int check_memory(void)
{
	_cleanup_free_ char *info = NULL;
	const char *p;
	uint64_t kb, want = LR_RECOVERY_MEMORY_KB + 64 * 1024;

	if (lr_sysroot_read("/proc/meminfo", &info, NULL) < 0 || !(p = strstr(info, "MemAvailable:")))
		return 0;
	kb = strtoull(p + 13, NULL, 10);
	if (kb < want)
		return lr_error_code(-ENOMEM, "only %llu MiB of memory is available, and %llu MiB are needed (the "
				     "recovery keyslot's Argon2id): stop some services and try again",
				     (unsigned long long)kb / 1024, (unsigned long long)want / 1024);
	return 0;
}

static int check_state(void)
{
	struct json_object *st = NULL;
	int r = state_load(&st);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (phase_is(st, "prepared") || phase_is(st, "postponed"))
		r = lr_error_code(-EBUSY, "a conversion of %s is already prepared (%s): reboot to start it (%s), "
				  "see lockroot convert --status", jstr(st, "device"), jstr(st, "phase"), REBOOT_CMD);
	else if (phase_is(st, "encrypting"))
		r = lr_error_code(-EBUSY, "a conversion of %s is running: see lockroot convert --status",
				  jstr(st, "device"));
	else if (access(RUNNING_PATH, F_OK) == 0)
		r = lr_error_code(-EBUSY, "another lockroot convert is running (%s exists)", RUNNING_PATH);
	json_object_put(st);
	return r;
}

/* ---- plan ---- */

/* The initramfs file config.txt loads (the one it will name), or NULL (auto_initramfs: the
 * firmware picks initramfs8 etc., which the distribution's hook keeps up to date). */
static const char *boot_initramfs(const struct convert *c)
{
	if (c->boot.initramfs)
		return strchr(c->boot.initramfs, '/') ? NULL : c->boot.initramfs;
	return c->boot.auto_initramfs ? NULL : "initrd.img";
}

/* Remove every word starting with key from a command line (in place). */
void cli_drop_word(char *line, const char *key)
{
	char *w = line;

	while ((w = strstr(w, key))) {
		if (w != line && w[-1] != ' ') {
			w++;
			continue;
		}
		size_t n = strcspn(w, " \n");

		while (w[n] == ' ')
			n++;
		memmove(w, w + n, strlen(w + n) + 1);
	}
	/* no trailing blank before the newline */
	for (size_t n = strcspn(line, "\n"); n > 0 && line[n - 1] == ' '; n--)
		memmove(line + n - 1, line + n, strlen(line + n) + 1);
}

static int plan_boot(struct convert *c)
{
	char source[96];
	struct lr_bootcfg cfg = { .root = c->root, .name = c->name, .source = source,
				  .crypttab_options = CRYPTTAB_OPTIONS };
	int r;

	snprintf(source, sizeof(source), "PARTUUID=%s", c->root_partuuid);
	if (!c->boot.auto_initramfs)
		cfg.initramfs = boot_initramfs(c);
	r = lr_bootcfg_plan(&cfg, &c->changes, &c->n_changes);
	if (r < 0)
		return r;
	for (size_t i = 0; i < c->n_changes; i++) {
		struct lr_bootcfg_change *ch = &c->changes[i];
		char *text;
		size_t n;

		if (strcmp(ch->path, c->boot.cmdline_path))
			continue;
		cli_drop_word(ch->new_text, CMDLINE_KEY);
		n = strcspn(ch->new_text, "\n");
		if (asprintf(&text, "%.*s " CMDLINE_KEY "PARTUUID=%s,PARTUUID=%s%s", (int)n, ch->new_text,
			     c->root_partuuid, c->boot_partuuid, ch->new_text + n) < 0)
			return -ENOMEM;
		free(ch->new_text);
		ch->new_text = text;
		c->cmdline = text;
	}
	if (!c->cmdline)
		return lr_error_code(-EINVAL, "%s would not change: does it already name /dev/mapper/%s?",
				     c->boot.cmdline_path, c->name);
	return 0;
}

static void print_plan(const struct convert *c)
{
	char a[32], b[32], d[32];

	if (cli.json) {
		struct json_object *o = json_object_new_object(), *files = json_object_new_array();

		set_str(o, "device", c->device);
		set_int(o, "part_size", (int64_t)c->info.part_size);
		set_int(o, "fs_size", (int64_t)c->info.fs_size);
		set_int(o, "new_fs_size", (int64_t)c->new_fs_size);
		if (c->min_size)
			set_int(o, "min_size", (int64_t)c->min_size);
		set_str(o, "cipher", c->cipher);
		set_str(o, "name", c->name);
		set_str(o, "hsm", c->hsm_spec);
		json_object_object_add(o, "recovery_key", json_object_new_boolean(c->recovery));
		set_str(o, "template", c->template_path);
		set_str(o, "root_partuuid", c->root_partuuid);
		set_str(o, "boot_partuuid", c->boot_partuuid);
		for (size_t i = 0; i < c->n_changes; i++)
			json_object_array_add(files, json_object_new_string(c->changes[i].path));
		json_object_object_add(o, "boot_files", files);
		json_object_object_add(o, "cmdline", json_object_new_string_len(c->cmdline, (int)strcspn(c->cmdline, "\n")));
		set_str(o, "initramfs", INITRAMFS_CMD);
		set_str(o, "reboot", REBOOT_CMD);
		progress_event("plan", o);
		return;
	}
	printf("Plan: encrypt the running root %s in place (LUKS2, %s) as /dev/mapper/%s:\n", c->device, c->cipher,
	       c->name);
	printf("  - key locked by %s%s; LUKS2 header prepared in %s\n", c->hsm_spec,
	       c->recovery ? " + a recovery key (shown once)" : ", NO recovery key", c->template_path);
	cli_print_changes(c->changes, c->n_changes);
	printf("  - enable %s; rebuild the initramfs: %s%s%s\n", SERVICE, INITRAMFS_CMD,
	       boot_initramfs(c) ? ", copied to " : "", boot_initramfs(c) ? boot_initramfs(c) : "");
	if (c->new_fs_size < c->info.fs_size)
		printf("  - at the next boot (initramfs): check the file system, shrink it from %s to %s (%s of %s "
		       "partition), write the LUKS2 header\n", size_str(c->info.fs_size, a, sizeof(a)),
		       size_str(c->new_fs_size, b, sizeof(b)), size_str(c->info.part_size, d, sizeof(d)), c->device);
	else
		printf("  - at the next boot (initramfs): write the LUKS2 header (the file system is small enough)\n");
	printf("  - then, while the system runs: encrypt the data (%s), grow the file system to fill the\n"
	       "    volume, remove the header template and %s from %s\n", "lockroot convert --status", CMDLINE_KEY,
	       c->cmdline_file);
	printf("  - reboot to start: %s\n", REBOOT_CMD);
}

/* ---- act ---- */

/* The initramfs files on the boot partition (what raspi-firmware copies there; the Pi firmware
 * loads those, not /boot's): the one config.txt names := the running kernel's, and each
 * initrd.img-VERSION := /boot's. */
static int sync_boot_initramfs(const struct convert *c)
{
	char src[PATH_MAX], dst[PATH_MAX], pattern[PATH_MAX];
	struct utsname u;
	glob_t g = { 0 };
	int r = 0;

	if (uname(&u) < 0)
		return -errno;
	if (boot_initramfs(c)) {
		char rel[PATH_MAX];

		snprintf(rel, sizeof(rel), "/boot/initrd.img-%s", u.release);
		rpath(src, sizeof(src), rel);
		path_in(dst, sizeof(dst), c->boot.boot_dir, boot_initramfs(c));
		if (access(src, R_OK) == 0 && *dst)
			r = lr_copy_file_atomic(src, dst);
	}
	path_in(pattern, sizeof(pattern), c->boot.boot_dir, "initrd.img-*");
	if (r == 0 && glob(pattern, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc && r == 0; i++) {
			const char *base = strrchr(g.gl_pathv[i], '/') + 1;
			char rel[PATH_MAX];

			if (strstr(base, ".lockroot-") || snprintf(rel, sizeof(rel), "/boot/%s", base) >= (int)sizeof(rel))
				continue;
			rpath(src, sizeof(src), rel);
			if (access(src, R_OK) == 0)
				r = lr_copy_file_atomic(src, g.gl_pathv[i]);
		}
	globfree(&g);
	return r;
}

enum stage { ST_NONE, ST_TEMPLATE, ST_STATE, ST_BOOTCFG, ST_SERVICE, ST_INITRAMFS };

static void undo(struct convert *c, enum stage reached)
{
	char path[PATH_MAX];

	lr_error("the conversion could not be prepared: putting everything back");
	if (reached >= ST_SERVICE)
		cli_disable_unit(c->root, SERVICE);
	if (reached >= ST_BOOTCFG) {
		struct stat st;

		if (lr_bootcfg_restore(c->root) < 0)
			lr_error("restoring the boot files failed: check %s and /etc/crypttab, /etc/fstab (originals "
				 "are *" LR_BOOTCFG_BACKUP_SUFFIX ")", c->boot.boot_dir);
		/* a file that was not there (crypttab) comes back empty: not there again */
		for (size_t i = 0; i < c->n_changes; i++)
			if (!c->changes[i].old_text && stat(c->changes[i].path, &st) == 0 && st.st_size == 0)
				unlink(c->changes[i].path);
	}
	if (reached >= ST_STATE) {
		rpath(path, sizeof(path), STATE_PATH);
		unlink(path);
	}
	/* An initramfs that sets up the root volume would ask for a key at the next boot. */
	if (reached >= ST_INITRAMFS &&
	    (cli_initramfs_rebuild(c->root, INITRAMFS_CMD) < 0 || sync_boot_initramfs(c) < 0))
		lr_error("rebuilding the initramfs without the conversion failed: run %s (and copy it to %s) "
			 "before rebooting", INITRAMFS_CMD, c->boot.boot_dir);
	if (reached >= ST_TEMPLATE)
		lr_convert_wipe_file(c->template_path);
}

static int act(struct convert *c)
{
	static const char *const want[] = { "sbin/lockroot", "resize2fs", "e2fsck", "init-premount/lockroot-convert",
					    "cryptroot/crypttab" };
	struct lr_convert_template_params p = {
		.device = c->device, .path = c->template_path, .cipher = c->cipher, .hsm = &c->hsm,
		.bind_mask = c->bind_mask, .bind_default = c->bind_default, .recovery_key = c->recovery,
		.recovery_cost = c->recovery_cost,
	};
	struct lr_enroll_result res = { .recovery_keyslot = -1 };
	struct json_object *st = json_object_new_object();
	enum stage reached = ST_NONE;
	int r, fd;

	mkdir("/run/lockroot", 0700);
	fd = open(RUNNING_PATH, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		json_object_put(st);
		return lr_error_code(-EBUSY, "another lockroot convert is running (%s exists)", RUNNING_PATH);
	}
	close(fd);
	/* left by an attempt that was cut off before its state was saved */
	if (access(c->template_path, F_OK) == 0)
		lr_convert_wipe_file(c->template_path);
	lr_info("%s: LUKS2 header template with a key locked by %s", c->template_path, c->hsm_spec);
	r = lr_convert_template(&p, &res);
	if (r < 0)
		goto out;
	reached = ST_TEMPLATE;
	set_int(st, "version", 1);
	set_str(st, "phase", "prepared");
	set_str(st, "device", c->device);
	set_str(st, "name", c->name);
	set_str(st, "root_partuuid", c->root_partuuid);
	set_str(st, "boot_partuuid", c->boot_partuuid);
	set_str(st, "cmdline_file", c->cmdline_file);
	set_str(st, "cipher", c->cipher);
	set_str(st, "hsm", c->hsm_spec);
	set_int(st, "part_size", (int64_t)c->info.part_size);
	set_int(st, "fs_size", (int64_t)c->info.fs_size);
	set_int(st, "new_fs_size", (int64_t)c->new_fs_size);
	set_int(st, "started", time(NULL));
	r = state_save(st);
	if (r < 0)
		goto out;
	reached = ST_STATE;
	r = lr_bootcfg_apply(c->changes, c->n_changes);
	reached = ST_BOOTCFG; /* a failed apply may have written some files */
	if (r < 0)
		goto out;
	r = cli_enable_unit(c->root, SERVICE);
	if (r < 0)
		goto out;
	reached = ST_SERVICE;
	lr_info("rebuilding the initramfs (%s)", INITRAMFS_CMD);
	reached = ST_INITRAMFS;
	r = cli_initramfs_rebuild(c->root, INITRAMFS_CMD);
	if (r == 0)
		r = cli_initramfs_verify(c->root, want, LR_ELEMENTSOF(want));
	if (r == 0)
		r = sync_boot_initramfs(c);
	if (r < 0)
		goto out;
	sync();
	if (cli.json) {
		struct json_object *o = json_object_new_object();

		set_str(o, "event", "ready");
		set_str(o, "device", c->device);
		set_str(o, "name", c->name);
		set_str(o, "template", c->template_path);
		set_str(o, "reboot", REBOOT_CMD);
		cli_print_ready(o, res.recovery_key);
	} else {
		if (res.recovery_key)
			cli_show_recovery_key(res.recovery_key, res.recovery_keyslot);
		printf("Ready. Reboot to encrypt %s: %s\n", c->device, REBOOT_CMD);
	}
out:
	if (r < 0 && reached > ST_NONE)
		undo(c, reached);
	unlink(RUNNING_PATH);
	lr_enroll_result_done(&res);
	json_object_put(st);
	if (r == 0 && c->reboot) {
		char *argv[] = { (char *)"systemctl", (char *)"reboot", NULL };

		r = cli_run_ok(argv, false);
	}
	return r;
}

/* ---- --boot: the initramfs step ---- */

/* KEY=A,B on the kernel command line (lockroot.convert=ROOT,BOOT, lockroot.provision=ROOT,BOOT):
 * its two halves, each a plain word (a device spec); the last such word counts. */
bool cli_cmdline_pair(const char *key, char *a, char *b, size_t len)
{
	_cleanup_free_ char *cmdline = NULL;
	char *save = NULL;
	bool found = false;

	if (lr_sysroot_read("/proc/cmdline", &cmdline, NULL) < 0)
		return false;
	for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		const char *v = w + strlen(key), *comma;

		if (strncmp(w, key, strlen(key)) || !(comma = strchr(v, ',')) || (size_t)(comma - v) >= len ||
		    strlen(comma + 1) >= len)
			continue;
		snprintf(a, len, "%.*s", (int)(comma - v), v);
		snprintf(b, len, "%s", comma + 1);
		found = safe_word(a) && safe_word(b);
	}
	return found;
}

/* Fault injection for the system test (tests/system/71-convert.py): lockroot.test_cut=
 * header:N (the initramfs writes the first N bytes of the header, then waits for the power to
 * be cut) or final (the service kills itself after the last chunk, before libcryptsetup makes
 * its metadata final). Someone who can edit cmdline.txt can stop the boot anyway; neither
 * point loses data: they are the states a power cut can leave, and the next boot repairs them. */
static const char *cmdline_test_cut(char *buf, size_t len)
{
	_cleanup_free_ char *cmdline = NULL;
	char *save = NULL;

	*buf = '\0';
	if (lr_sysroot_read("/proc/cmdline", &cmdline, NULL) < 0)
		return buf;
	for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
		if (strncmp(w, "lockroot.test_cut=", 18) == 0)
			snprintf(buf, len, "%s", w + 18);
	return buf;
}

struct boot_step {
	char root_spec[128], boot_spec[128];
	char dev[PATH_MAX], boot_dev[PATH_MAX];
	char boot_dir[PATH_MAX], template_path[PATH_MAX], record_path[PATH_MAX];
	bool mounted;
};

/* Whatever made the conversion not start, while the partition is still plain ext4: boot it
 * as it was. init sources /conf/param.conf after each init-premount script, so ROOT= there
 * replaces root=/dev/mapper/NAME; cryptroot must not try to open the plain partition. */
static void boot_plain(const struct boot_step *b, const char *reason)
{
	char path[PATH_MAX], line[256];
	_cleanup_free_ char *tab = NULL;
	FILE *f;

	SAY("cannot start (%s); booting the unencrypted root\n", reason);
	rpath(path, sizeof(path), "/conf/param.conf");
	f = fopen(path, "ae");
	if (!f || fprintf(f, "ROOT=%s\n", b->root_spec) < 0)
		SAY("cannot write %s: %s\n", path, strerror(errno));
	if (f)
		fclose(f);
	rpath(path, sizeof(path), "/cryptroot/crypttab");
	if (lr_read_file(path, 1 << 20, &tab, NULL) == 0) {
		size_t o = 0;

		for (char *save = NULL, *l = strtok_r(tab, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char name[128], src[256];

			if (sscanf(l, "%127s %255s", name, src) == 2 && strcmp(src, b->root_spec) == 0)
				continue;
			memmove(tab + o, l, strlen(l));
			o += strlen(l);
			tab[o++] = '\n';
		}
		lr_write_file_atomic(path, tab, o, 0644);
	}
	if (*b->boot_dir) {
		path_in(path, sizeof(path), b->boot_dir, REASON_FILE);
		snprintf(line, sizeof(line), "%s\n", reason);
		lr_write_file_atomic(path, line, strlen(line), 0644);
	}
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int boot_wait_devices(struct boot_step *b, uint32_t timeout_s)
{
	uint64_t end = now_ms() + (uint64_t)timeout_s * 1000;
	bool said = false;

	for (;;) {
		bool root_ok = cli_resolve_spec(b->root_spec, b->dev, sizeof(b->dev)) == 0;
		bool boot_ok = cli_resolve_spec(b->boot_spec, b->boot_dev, sizeof(b->boot_dev)) == 0;

		if (root_ok && boot_ok)
			return 0;
		if (now_ms() >= end)
			return root_ok ? -ENXIO : -ENOENT;
		if (!said)
			SAY("waiting for %s and %s (up to %u s)\n", b->root_spec, b->boot_spec, timeout_s);
		said = true;
		nap_ms(250);
	}
}

static int boot_mount(struct boot_step *b)
{
	struct stat st;

	/* tests: a directory stands for the mounted boot partition */
	if (stat(b->boot_dev, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(b->boot_dir, sizeof(b->boot_dir), "%s", b->boot_dev);
		return 0;
	}
	lr_load_vfat();
	mkdir("/run/lockroot", 0700);
	mkdir(BOOT_MNT, 0700);
	if (mount(b->boot_dev, BOOT_MNT, "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return lr_error_code(-errno, "cannot mount the boot partition %s: %s", b->boot_dev, strerror(errno));
	b->mounted = true;
	snprintf(b->boot_dir, sizeof(b->boot_dir), "%s", BOOT_MNT);
	return 0;
}

struct unlock_try {
	const char *header, *device;
	struct lr_secret **pass;
};

static int try_convert_unlock(void *userdata)
{
	struct unlock_try *t = userdata;

	return lr_convert_unlock(t->header, t->device, t->pass);
}

static int unlock_waiting(const char *header, const char *device, uint32_t timeout_s, struct lr_secret **pass)
{
	struct unlock_try t = { header, device, pass };

	cli_load_tpm_drivers();
	return cli_hsm_wait(device, timeout_s, try_convert_unlock, &t);
}

struct shrink_say {
	const char *dev;
	uint64_t fs_size;
};

static void shrink_step(enum lr_shrink_step step, uint64_t new_size, void *userdata)
{
	const struct shrink_say *s = userdata;

	if (step == LR_SHRINK_CHECK)
		SAY("checking the file system on %s\n", s->dev);
	else
		SAY("shrinking the file system on %s by %llu MiB\n", s->dev,
		    (unsigned long long)((s->fs_size - new_size + MiB - 1) / MiB));
}

/* The conversion, from whatever state a previous boot left. 0 when the boot may go on with
 * the encrypted root (or the plain one, after boot_plain()). */
static int boot_convert(struct boot_step *b, uint32_t timeout_s)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	struct lr_convert_info info;
	char reason[256] = "";
	int r = 0;

	for (int round = 0; round < 4; round++) {
		r = lr_convert_examine(b->dev, b->record_path, &info);
		if (r < 0) {
			SAY("cannot read %s: %s\n", b->dev, strerror(-r));
			return r;
		}
		switch (info.state) {
		case LR_CONVERT_PLAIN:
		case LR_CONVERT_SHRUNK:
			if (!pass) {
				if (access(b->template_path, R_OK) < 0) {
					snprintf(reason, sizeof(reason), "no LUKS2 header template %s", LR_CONVERT_TEMPLATE);
					goto plain;
				}
				r = unlock_waiting(b->template_path, b->dev, timeout_s, &pass);
				if (r < 0) {
					snprintf(reason, sizeof(reason), "the TPM/HSM did not unlock the key: %s",
						 r == -ENODEV ? "not found" : strerror(-r));
					goto plain;
				}
			}
			if (info.state == LR_CONVERT_PLAIN) {
				struct shrink_say say = { b->dev, info.fs_size };
				uint64_t after = 0;

				r = lr_convert_shrink(b->dev, &after, shrink_step, &say);
				if (r < 0) {
					snprintf(reason, sizeof(reason), "the file system could not shrink: %s",
						 r == -ENOSPC ? "it is too full" : strerror(-r));
					goto plain;
				}
				continue;
			}
			SAY("writing the LUKS2 header on %s\n", b->dev);
			r = lr_convert_init(b->dev, b->template_path, b->record_path, pass);
			if (r == -ECANCELED) {
				SAY("TEST CUT: the header write stopped short (lockroot.test_cut=): cut the power now\n");
				for (;;)
					pause();
			}
			if (r < 0) {
				snprintf(reason, sizeof(reason), "writing the header failed: %s", strerror(-r));
				goto examine_again;
			}
			SAY("header written; encryption continues after boot\n");
			return 0;
		case LR_CONVERT_MOVED_CUT:
			r = lr_convert_undo_cut(b->dev, b->record_path);
			if (r < 0) {
				SAY("cannot repair the interrupted header write on %s: %s; leaving it as it is\n",
				    b->dev, strerror(-r));
				return r;
			}
			SAY("repaired an interrupted header write on %s\n", b->dev);
			continue;
		case LR_CONVERT_STUCK_FINAL:
			r = unlock_waiting(b->dev, b->dev, timeout_s, &pass);
			if (r == 0)
				r = lr_convert_finalize_stuck(b->dev, pass);
			if (r < 0) {
				SAY("cannot finish the interrupted last step on %s: %s\n", b->dev, strerror(-r));
				return r;
			}
			SAY("finished the interrupted last step on %s\n", b->dev);
			return 0;
		case LR_CONVERT_ENCRYPTING:
		case LR_CONVERT_DONE:
			/* cryptroot opens it; libcryptsetup recovers the hotzone */
			return 0;
		default:
			SAY("%s holds neither the ext4 file system nor a LUKS2 header it should: leaving "
			    "it alone\n", b->dev);
			return -EMEDIUMTYPE;
		}
	}
	return 0;
examine_again:
	/* A failed header write leaves SHRUNK (nothing written) or MOVED_CUT (the next boot
	 * repairs it): only the first can boot now. */
	if (lr_convert_examine(b->dev, b->record_path, &info) == 0 &&
	    (info.state == LR_CONVERT_PLAIN || info.state == LR_CONVERT_SHRUNK))
		goto plain;
	SAY("%s\n", reason);
	return r;
plain:
	boot_plain(b, reason);
	return 0;
}

static int boot_step(void)
{
	struct boot_step b = { 0 };
	uint32_t timeout_s;
	int r;

	if (!cli_cmdline_pair(CMDLINE_KEY, b.root_spec, b.boot_spec, sizeof(b.root_spec)))
		return 0;
	timeout_s = cli_cmdline_timeout();
	{
		char cut[64];

		if (strncmp(cmdline_test_cut(cut, sizeof(cut)), "header:", 7) == 0)
			lr_convert_test_cut_header(strtoull(cut + 7, NULL, 10));
	}
	r = boot_wait_devices(&b, timeout_s);
	if (r == -ENOENT) {
		SAY("%s did not appear in %u s: leaving it to the normal boot\n", b.root_spec, timeout_s);
		return r;
	}
	if (r < 0) {
		boot_plain(&b, "the boot partition did not appear");
		return 0;
	}
	r = boot_mount(&b);
	if (r < 0) {
		struct lr_convert_info info;

		if (lr_convert_examine(b.dev, NULL, &info) == 0 &&
		    (info.state == LR_CONVERT_PLAIN || info.state == LR_CONVERT_SHRUNK))
			boot_plain(&b, "the boot partition could not be mounted");
		return 0;
	}
	path_in(b.template_path, sizeof(b.template_path), b.boot_dir, LR_CONVERT_TEMPLATE);
	path_in(b.record_path, sizeof(b.record_path), b.boot_dir, LR_CONVERT_RECORD);
	r = boot_convert(&b, timeout_s);
	sync();
	if (b.mounted && umount(BOOT_MNT) < 0 && umount2(BOOT_MNT, MNT_DETACH) < 0)
		SAY("cannot unmount %s: %s\n", BOOT_MNT, strerror(errno));
	return r;
}

/* ---- --resume: lockroot-convert.service ---- */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

struct run_ctx {
	const char *device;
	time_t started;
	uint64_t t0_ms, done0;
	struct progress p;
	char progress_path[PATH_MAX];
	bool test_cut_final;
};

static int run_progress(uint64_t done, uint64_t total, void *userdata)
{
	struct run_ctx *x = userdata;
	struct json_object *o = json_object_new_object();
	double el = (double)(now_ms() - x->t0_ms) / 1000.0;
	double rate = el > 0.5 && done > x->done0 ? (double)(done - x->done0) / el : 0;
	const char *text;

	set_str(o, "device", x->device);
	set_int(o, "done", (int64_t)done);
	set_int(o, "total", (int64_t)total);
	json_object_object_add(o, "percent", json_object_new_double(total ? (double)done * 100.0 / (double)total : 0));
	set_int(o, "rate", (int64_t)rate);
	set_int(o, "eta", rate > 0 ? (int64_t)((double)(total - done) / rate) : -1);
	set_int(o, "started", x->started);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	lr_write_file_atomic(x->progress_path, text, strlen(text), 0644);
	json_object_put(o);
	x->p.total = total;
	progress_update(&x->p, done, -1);
	if (x->test_cut_final && total && done == total) {
		SAY("TEST CUT: killed after the last chunk (lockroot.test_cut=final): cut the power now\n");
		raise(SIGKILL);
	}
	return stop_requested ? 1 : 0;
}

/* The boot partition, mounted by the system or by us. */
static int boot_dir_for(struct json_object *st, char *dir, size_t len, bool *mounted)
{
	struct lr_bootcfg_info info;
	char spec[96], dev[PATH_MAX];

	*mounted = false;
	if (lr_bootcfg_inspect(sysroot(), &info) == 0 && info.boot_dir) {
		snprintf(dir, len, "%s", info.boot_dir);
		lr_bootcfg_info_done(&info);
		return 0;
	}
	lr_bootcfg_info_done(&info);
	snprintf(spec, sizeof(spec), "PARTUUID=%s", jstr(st, "boot_partuuid"));
	if (cli_resolve_spec(spec, dev, sizeof(dev)) < 0)
		return lr_error_code(-ENOENT, "the boot partition %s is not there", spec);
	mkdir("/run/lockroot", 0700);
	mkdir(BOOT_MNT, 0700);
	if (mount(dev, BOOT_MNT, "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return lr_error_code(-errno, "cannot mount the boot partition %s: %s", dev, strerror(errno));
	*mounted = true;
	snprintf(dir, len, "%s", BOOT_MNT);
	return 0;
}

/* Why the initramfs did not start (its file on the boot partition), consumed. */
static void take_reason(const char *boot_dir, char *out, size_t len)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;

	path_in(path, sizeof(path), boot_dir, REASON_FILE);
	if (lr_read_file(path, 4096, &text, NULL) == 0) {
		snprintf(out, len, "%.*s", (int)strcspn(text, "\n"), text);
		unlink(path);
	}
}

/* The boot partition back to normal: no template, no record, no lockroot.convert=. */
static int cleanup_boot(struct json_object *st)
{
	char dir[PATH_MAX], path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	bool mounted;
	int r;

	r = boot_dir_for(st, dir, sizeof(dir), &mounted);
	if (r < 0)
		return r;
	path_in(path, sizeof(path), dir, LR_CONVERT_TEMPLATE);
	if (access(path, F_OK) == 0)
		r = lr_convert_wipe_file(path);
	path_in(path, sizeof(path), dir, LR_CONVERT_RECORD);
	unlink(path);
	path_in(path, sizeof(path), dir, REASON_FILE);
	unlink(path);
	path_in(path, sizeof(path), dir, *jstr(st, "cmdline_file") ? jstr(st, "cmdline_file") : "cmdline.txt");
	if (r == 0 && lr_read_file(path, 1 << 20, &text, NULL) == 0 && strstr(text, CMDLINE_KEY)) {
		cli_drop_word(text, CMDLINE_KEY);
		r = lr_write_file_atomic(path, text, strlen(text), 0644);
	}
	sync();
	if (mounted && umount(BOOT_MNT) < 0)
		lr_warn("cannot unmount %s: %s", BOOT_MNT, strerror(errno));
	return r;
}

static int finish(struct json_object *st)
{
	char mapped[128];
	char *grow[] = { (char *)"resize2fs", mapped, NULL };
	int r;

	snprintf(mapped, sizeof(mapped), "/dev/mapper/%s", jstr(st, "name"));
	lr_info("%s is encrypted; growing its file system to fill %s", jstr(st, "device"), mapped);
	if (cli_run_ok(grow, true) < 0)
		lr_warn("the file system on %s did not grow (resize2fs %s): it works, 32 MiB smaller", mapped, mapped);
	r = cleanup_boot(st);
	/* a fleet unit re-keyed after its first boot (lockroot image --unique-volume-key): the
	 * provisioning token, which libcryptsetup kept unchanged while it re-encrypted, goes */
	if (r == 0 && lr_provision_finish(jstr(st, "device")) < 0)
		lr_warn("the provisioning token of %s could not be removed (lockroot status shows it)", jstr(st, "device"));
	if (r < 0) {
		state_phase(st, "encrypting", NULL);
		set_str(st, "error", "encrypted; cleaning up the boot partition failed, retried at the next boot");
		state_save(st);
		return r;
	}
	set_int(st, "finished", time(NULL));
	if (jint(st, "encrypt_started"))
		set_int(st, "seconds", jint(st, "finished") - jint(st, "encrypt_started"));
	state_phase(st, "done", NULL);
	r = state_save(st);
	cli_disable_unit(sysroot(), SERVICE);
	lr_info("the conversion of %s is finished", jstr(st, "device"));
	return r;
}

static int encrypt_online(struct json_object *st, const struct lr_convert_info *info)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	struct run_ctx x = { .device = jstr(st, "device"), .started = time(NULL), .t0_ms = now_ms(),
			     .done0 = info->done };
	struct sigaction sa = { .sa_handler = on_signal };
	struct lr_led led;
	char msg[512];
	int r;

	char cut[64];

	x.test_cut_final = strcmp(cmdline_test_cut(cut, sizeof(cut)), "final") == 0;
	rpath(x.progress_path, sizeof(x.progress_path), PROGRESS_PATH);
	r = unlock_waiting(x.device, x.device, 30, &pass);
	if (r < 0)
		return lr_error_code(r, "the TPM/HSM did not unlock %s: %s", x.device, strerror(-r));
	state_phase(st, "encrypting", NULL);
	if (!jint(st, "encrypt_started"))
		set_int(st, "encrypt_started", time(NULL));
	set_int(st, "total", (int64_t)info->total);
	state_save(st);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	lr_led_blink(&led);
	progress_start(&x.p, "encrypt", info->total);
	run_progress(info->done, info->total, &x);
	r = lr_convert_run(x.device, jstr(st, "name"), pass, run_progress, &x);
	progress_end(&x.p, r == 0);
	lr_led_restore(&led);
	if (r == 1) {
		lr_info("stopped; the encryption of %s resumes at the next boot", x.device);
		return 0;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "encrypting %s failed (%s); it resumes at the next boot", x.device,
			 strerror(-r));
		state_phase(st, "failed", msg);
		state_save(st);
		return r;
	}
	set_int(st, "bytes", (int64_t)info->total);
	return finish(st);
}

static int resume(void)
{
	struct json_object *st = NULL;
	struct lr_rootdev rd = { 0 };
	struct lr_convert_info info;
	int r;

	r = state_load(&st);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (phase_is(st, "done"))
		goto out;
	/* lockroot image --unique-volume-key names the partition by PARTUUID: the device node
	 * is the unit's own (mmcblk0p2, sda2, ...). */
	if (strchr(jstr(st, "device"), '=')) {
		char dev[PATH_MAX];

		r = cli_resolve_spec(jstr(st, "device"), dev, sizeof(dev));
		if (r < 0) {
			r = lr_error_code(r, "%s is not there", jstr(st, "device"));
			goto out;
		}
		set_str(st, "device", dev);
	}
	r = lr_rootdev_find(&rd);
	if (r < 0)
		goto out;
	if (!rd.dm_name || strcmp(rd.dm_name, jstr(st, "name"))) {
		/* The initramfs did not start it: the plain root is up again. */
		char dir[PATH_MAX], reason[512] = "", msg[768];
		bool mounted;

		if (boot_dir_for(st, dir, sizeof(dir), &mounted) == 0) {
			take_reason(dir, reason, sizeof(reason));
			if (mounted)
				umount(BOOT_MNT);
		}
		snprintf(msg, sizeof(msg), "the conversion did not start at boot (%s); it is tried again at the next "
			 "boot", *reason ? reason : "the initramfs left no reason: see the boot console");
		state_phase(st, "postponed", msg);
		lr_warn("%s", msg);
		r = state_save(st);
		goto out;
	}
	r = lr_convert_examine(jstr(st, "device"), NULL, &info);
	if (r < 0)
		goto out;
	if (info.state == LR_CONVERT_ENCRYPTING)
		r = encrypt_online(st, &info);
	else if (info.state == LR_CONVERT_DONE) {
		/* finished by the initramfs (the last step after a cut): all of it is encrypted */
		if (!jint(st, "bytes") && info.part_size > LR_CONVERT_DATA_OFFSET)
			set_int(st, "bytes", (int64_t)(info.part_size - LR_CONVERT_DATA_OFFSET));
		r = finish(st);
	}
	else
		r = lr_error_code(-EMEDIUMTYPE, "%s is in state %s, which the running system cannot continue",
				  jstr(st, "device"), lr_convert_state_name(info.state));
out:
	lr_rootdev_done(&rd);
	json_object_put(st);
	return r;
}

/* ---- --status ---- */

struct json_object *cli_conversion_json(void)
{
	_cleanup_free_ char *text = NULL;
	struct json_object *st = NULL, *pr = NULL;
	char path[PATH_MAX];
	double percent = 0;
	int64_t done = 0, total = 0, rate = 0, eta = -1;

	lr_log_demote(1);
	if (state_load(&st) < 0) {
		lr_log_demote(-1);
		return NULL;
	}
	lr_log_demote(-1);
	rpath(path, sizeof(path), PROGRESS_PATH);
	if (phase_is(st, "encrypting") && lr_read_file(path, 4096, &text, NULL) == 0 &&
	    (pr = json_tokener_parse(text)) && strcmp(jstr(pr, "device"), jstr(st, "device")) == 0) {
		struct json_object *v;

		done = jint(pr, "done");
		total = jint(pr, "total");
		rate = jint(pr, "rate");
		eta = jint(pr, "eta");
		if (json_object_object_get_ex(pr, "percent", &v))
			percent = json_object_get_double(v);
	} else if (phase_is(st, "done")) {
		done = total = jint(st, "bytes");
		percent = 100;
		eta = 0;
	} else if (*jstr(st, "device")) {
		/* No progress from the service yet (it is starting, or stopped): the header says
		 * how far the encryption is. */
		struct lr_convert_info info;

		lr_log_demote(1);
		if (lr_convert_examine(jstr(st, "device"), NULL, &info) == 0 &&
		    (info.state == LR_CONVERT_ENCRYPTING || info.state == LR_CONVERT_STUCK_FINAL) && info.total) {
			done = (int64_t)info.done;
			total = (int64_t)info.total;
			percent = 100.0 * (double)info.done / (double)info.total;
			if (phase_is(st, "prepared"))
				json_object_object_add(st, "phase", json_object_new_string("encrypting"));
		}
		lr_log_demote(-1);
	}
	json_object_put(pr);
	set_int(st, "done", done);
	set_int(st, "total", total);
	json_object_object_add(st, "percent", json_object_new_double(percent));
	set_int(st, "rate", rate);
	set_int(st, "eta", eta);
	return st;
}

void cli_print_conversion(void)
{
	struct json_object *st = cli_conversion_json();
	char a[32], b[32];
	int64_t eta;

	if (!st)
		return;
	printf("\nConversion of %s to /dev/mapper/%s: %s\n", jstr(st, "device"), jstr(st, "name"), jstr(st, "phase"));
	if (phase_is(st, "encrypting") && jint(st, "total")) {
		struct json_object *v;

		json_object_object_get_ex(st, "percent", &v);
		printf("  %.1f %% (%s of %s)", json_object_get_double(v), size_str((uint64_t)jint(st, "done"), a, sizeof(a)),
		       size_str((uint64_t)jint(st, "total"), b, sizeof(b)));
		if (jint(st, "rate"))
			printf(", %.1f MiB/s", (double)jint(st, "rate") / (double)MiB);
		eta = jint(st, "eta");
		if (eta >= 0)
			printf(", %lld:%02lld left", (long long)eta / 60, (long long)eta % 60);
		printf("\n");
	} else if (phase_is(st, "prepared")) {
		printf("  waiting for the reboot: %s\n", REBOOT_CMD);
	} else if (phase_is(st, "done") && jint(st, "seconds")) {
		printf("  %s encrypted in %lld s\n", size_str((uint64_t)jint(st, "bytes"), a, sizeof(a)),
		       (long long)jint(st, "seconds"));
	}
	if (*jstr(st, "error"))
		printf("  %s\n", jstr(st, "error"));
	json_object_put(st);
}

static int show_status(void)
{
	struct json_object *st = cli_conversion_json();

	if (!st) {
		/* a conversion through a staging drive has its own state (convert --via-status) */
		if (cli_has_conversion_via())
			cli_print_conversion_via();
		else
			puts(cli.json ? "{}" : "No conversion.");
		return 0;
	}
	if (cli.json)
		puts(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
	else
		cli_print_conversion();
	json_object_put(st);
	return 0;
}

/* ---- main ---- */

int cmd_convert(int argc, char **argv)
{
	struct convert c = { .name = "cryptroot", .hsm_spec = "tpm2", .recovery = true };
	enum mode mode = MODE_CONVERT;
	int r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--via") == 0 || strncmp(argv[i], "--via=", 6) == 0 ||
		    strcmp(argv[i], "--via-finish") == 0 || strcmp(argv[i], "--via-status") == 0)
			return convert_via(argc, argv);
	}
	r = parse(&c, &mode, argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	if (mode == MODE_STATUS)
		return lr_exit_code(show_status());
	if (mode == MODE_BOOT)
		return lr_exit_code(boot_step());
	if (mode == MODE_RESUME)
		return lr_exit_code(resume());
	c.root = sysroot();
	if (!c.cipher)
		c.cipher = lr_cipher_default();
	r = check_device(&c);
	if (r == 0)
		r = check_not_boot(&c);
	/* What the partition holds first: a file system that cannot shrink is told about --via
	 * wherever it is. */
	if (r == 0)
		r = check_contents(&c);
	if (r == 0)
		r = check_running_root(&c);
	if (r == 0)
		r = check_room(&c);
	if (r == 0)
		r = check_hsm(&c);
	if (r == 0)
		r = check_boot(&c);
	if (r == 0)
		r = check_tools(&c);
	if (r == 0)
		r = check_memory();
	if (r == 0)
		r = check_state();
	if (r == 0)
		r = plan_boot(&c);
	if (r < 0)
		goto out;
	print_plan(&c);
	if (c.dry_run)
		goto out;
	if (!c.yes && !cli_confirm("convert", "Go ahead? Type yes:", "yes")) {
		r = -ECANCELED;
		goto out;
	}
	r = act(&c);
out:
	lr_bootcfg_changes_free(c.changes, c.n_changes);
	lr_bootcfg_info_done(&c.boot);
	lr_hsm_done(&c.hsm);
	lr_secret_free(c.pin);
	return r < 0 ? lr_exit_code(r) : 0;
}
