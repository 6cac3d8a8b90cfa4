/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot migrate -x DEV [-p N] [-s SIZE] [-m SRC] [--data SIZE:MOUNTPOINT]...: move the
 * running plaintext root of a Pi to LUKS2 volumes on an external drive, HSM-locked.
 *
 * parse -> validate (nothing written) -> plan (printed) -> act:
 *   partitions (libfdisk) -> LUKS2 + HSM keyslot + recovery key -> ext4 -> rsync twice ->
 *   crypttab/fstab of the new root -> its initramfs (chroot) -> file system check ->
 *   trial files on the boot partition (tryboot.txt; config.txt untouched).
 * Then `systemctl reboot '0 tryboot'`: lockroot-migrate.service (`lockroot migrate --finish`)
 * commits on the new root and erases the old one, or on the old root records the failure.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bootcfg.h"
#include "config.h"
#include "cli.h"
#include "migrate-util.h"
#include "erase.h"
#include "migrate.h"
#include "partition.h"
#include "progress.h"
#include "rootdev.h"

#define KEYSCRIPT "/usr/lib/lockroot/keyscript"
#define CRYPTTAB_OPTIONS "luks,discard,initramfs,keyscript=" KEYSCRIPT
#define WORK_DIR "/run/lockroot/migrate"
#define SERVICE "lockroot-migrate.service"
#define REBOOT_CMD "systemctl reboot '0 tryboot'"
#define MAX_DATA (LR_MIGRATE_MAX_VOLUMES - 1)
#define MiB (1024ULL * 1024)

static void help(void)
{
	printf("Usage: lockroot migrate [-x DEV] [-p N] [-s SIZE] [-m SRC] [--data SIZE:MOUNTPOINT]...\n"
	       "                        [--hsm SPEC] [OPTIONS]\n\n"
	       "Copy the running root file system to a new LUKS2 volume on an external drive whose\n"
	       "key is locked by the HSM, and switch the Raspberry Pi's boot to it safely: the new\n"
	       "root is tried once (firmware tryboot); only when it comes up does it become the\n"
	       "default, and then the old plaintext root is erased.\n\n"
	       "  -x DEV                 the external drive (default /dev/sda)\n"
	       "  -p N                   root partition number on DEV (default 1); an existing\n"
	       "                         partition named with -p is reused: ITS CONTENTS ARE DESTROYED\n"
	       "  -s SIZE                size of a new root partition (default: the free space);\n"
	       "                         K, M, G, T (powers of 1024); a bare number is MiB\n"
	       "  -m SRC                 the running root partition (default /dev/mmcblk0p2; a number N\n"
	       "                         is /dev/mmcblk0pN)\n"
	       "  --data SIZE:MOUNTPOINT one more encrypted partition for MOUNTPOINT (e.g. 256M:/var/log);\n"
	       "                         repeatable\n"
	       "  --name NAME            /dev/mapper/NAME of the new root (default cryptroot)\n"
	       "  --hsm SPEC             tpm2[:TCTI] (default) or pkcs11:URI\n"
	       "  --bind LIST, --pcrs LIST, --pin-file F   as for lockroot enroll\n"
	       "  --cipher C             default: aes-xts-plain64 with AES instructions, else Adiantum\n"
	       "  --no-recovery-key      no recovery key (not advised: a changed board cannot unlock)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N\n"
	       "  --keep-source          do not erase the old plaintext root (it stays readable!)\n"
	       "  --reboot               reboot into the new root when ready\n"
	       "  --dry-run              print the plan, change nothing\n"
	       "  -y, --yes              do not ask before writing\n"
	       "  --json                 JSON events on stdout (plan, progress, result)\n"
	       "  --status               show the state of the last migration\n"
	       "  --abort                give up a migration waiting for its trial boot\n"
	       "  --finish               (lockroot-migrate.service at boot) commit or record the trial\n");
}

enum { OPT_DATA = 256, OPT_NAME, OPT_HSM, OPT_BIND, OPT_PCRS, OPT_PIN_FILE, OPT_CIPHER, OPT_NO_RECOVERY,
       OPT_RMEM, OPT_RITER, OPT_KEEP, OPT_REBOOT, OPT_DRY_RUN, OPT_JSON, OPT_STATUS, OPT_ABORT, OPT_FINISH };

static const struct option options[] = {
	{ "data", required_argument, NULL, OPT_DATA },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "cipher", required_argument, NULL, OPT_CIPHER },
	{ "no-recovery-key", no_argument, NULL, OPT_NO_RECOVERY },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "keep-source", no_argument, NULL, OPT_KEEP },
	{ "reboot", no_argument, NULL, OPT_REBOOT },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "status", no_argument, NULL, OPT_STATUS },
	{ "abort", no_argument, NULL, OPT_ABORT },
	{ "finish", no_argument, NULL, OPT_FINISH },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct data_req {
	uint64_t size;
	char mountpoint[256];
	uint64_t used;               /* bytes under the mount point now */
};

struct migrate {
	/* options */
	const char *target, *source_arg, *name, *hsm_spec, *bind, *pcrs, *pin_file, *cipher;
	unsigned partno;             /* 0: default */
	uint64_t root_size;
	struct data_req data[MAX_DATA];
	size_t n_data;
	bool recovery, keep_source, reboot, dry_run, yes;
	struct lr_pbkdf_cost recovery_cost;
	/* found */
	char source[64];
	uint64_t root_used;          /* bytes that go to the root volume */
	struct lr_disk_info disk;
	struct lr_disk_slot slots[LR_MIGRATE_MAX_VOLUMES];
	size_t n_slots;
	struct lr_bootcfg_info boot;
	struct lr_migrate_state st;  /* what will be saved */
	char trial_cmdline[4096];
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

/* Where a mount point is mounted from (/proc/self/mountinfo), or "" */
void migrate_mount_source(const char *mountpoint, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];

	out[0] = '\0';
	while (f && fgets(line, sizeof(line), f)) {
		char mp[1024], src[1024];
		const char *sep = strstr(line, " - ");

		if (!sep || sscanf(line, "%*s %*s %*s %*s %1023s", mp) != 1 ||
		    sscanf(sep + 3, "%*s %1023s", src) != 1)
			continue;
		if (strcmp(mp, mountpoint) == 0 && strlen(src) < len)
			memcpy(out, src, strlen(src) + 1);
	}
	if (f)
		fclose(f);
}

/* The mount point of a block device dev_t, if mounted anywhere (else -1). */
static int find_mount_of(dev_t dev, char *mp, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int found = -1;

	while (f && fgets(line, sizeof(line), f) && found < 0) {
		unsigned ma, mi;
		char where[1024];

		if (sscanf(line, "%*s %*s %u:%u %*s %1023s", &ma, &mi, where) == 3 &&
		    makedev(ma, mi) == dev) {
			snprintf(mp, len, "%s", where);
			found = 0;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static uint64_t du_total;
static int du_add(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)flag;
	(void)ftw;
	du_total += (uint64_t)sb->st_blocks * 512;
	return 0;
}

/* Bytes used under dir on its file system (du -x). */
static uint64_t disk_usage(const char *dir)
{
	du_total = 0;
	nftw(dir, du_add, 64, FTW_PHYS | FTW_MOUNT);
	return du_total;
}

/* Room a file system needs for used bytes: ext4's metadata and journal, a margin to live in,
 * the LUKS2 header. */
static uint64_t room_for(uint64_t used)
{
	return used + used / 8 + 96 * MiB;
}

/* ---- parse ---- */

static int parse_data(struct migrate *m, const char *arg)
{
	const char *colon = strchr(arg, ':');
	char size[64];
	struct data_req *d;

	if (m->n_data >= MAX_DATA)
		return cli_usage_error("migrate", "at most %d --data partitions", MAX_DATA);
	if (!colon || (size_t)(colon - arg) >= sizeof(size) || colon[1] != '/')
		return cli_usage_error("migrate", "--data %s: expected SIZE:MOUNTPOINT, e.g. 256M:/var/log", arg);
	d = &m->data[m->n_data];
	snprintf(size, sizeof(size), "%.*s", (int)(colon - arg), arg);
	if (lr_parse_size(size, &d->size) < 0 || d->size == 0)
		return cli_usage_error("migrate", "--data %s: '%s' is not a size (e.g. 256M, 2G)", arg, size);
	if (strlen(colon + 1) >= sizeof(d->mountpoint) || strcmp(colon + 1, "/") == 0 ||
	    strpbrk(colon + 1, " \t\n\\"))
		return cli_usage_error("migrate", "--data %s: bad mount point", arg);
	snprintf(d->mountpoint, sizeof(d->mountpoint), "%s", colon + 1);
	/* no trailing slash, for fstab and comparisons */
	for (size_t n = strlen(d->mountpoint); n > 1 && d->mountpoint[n - 1] == '/'; n--)
		d->mountpoint[n - 1] = '\0';
	for (size_t i = 0; i < m->n_data; i++)
		if (strcmp(m->data[i].mountpoint, d->mountpoint) == 0)
			return cli_usage_error("migrate", "--data: %s given twice", d->mountpoint);
	m->n_data++;
	return 0;
}

enum mode { MODE_MIGRATE, MODE_STATUS, MODE_ABORT, MODE_FINISH };

static int parse(struct migrate *m, enum mode *mode, int argc, char **argv)
{
	uint32_t v;
	int c, r;

	while ((c = getopt_long(argc, argv, "x:p:s:m:yh", options, NULL)) >= 0) {
		switch (c) {
		case 'x': m->target = optarg; break;
		case 'p':
			if (cli_parse_uint("migrate", "-p", optarg, &v) || v == 0 || v > LR_DISK_MAX_PARTS)
				return cli_usage_error("migrate", "-p %s: a partition number from 1 to %d",
						       optarg, LR_DISK_MAX_PARTS);
			m->partno = v;
			break;
		case 's':
			if (lr_parse_size(optarg, &m->root_size) < 0 || m->root_size == 0)
				return cli_usage_error("migrate", "-s %s: not a size (e.g. 16G, 512M)", optarg);
			break;
		case 'm': m->source_arg = optarg; break;
		case OPT_DATA:
			r = parse_data(m, optarg);
			if (r)
				return r;
			break;
		case OPT_NAME: m->name = optarg; break;
		case OPT_HSM: m->hsm_spec = optarg; break;
		case OPT_BIND: m->bind = optarg; break;
		case OPT_PCRS: m->pcrs = optarg; break;
		case OPT_PIN_FILE: m->pin_file = optarg; break;
		case OPT_CIPHER: m->cipher = optarg; break;
		case OPT_NO_RECOVERY: m->recovery = false; break;
		case OPT_RMEM:
			if (cli_parse_uint("migrate", "--recovery-pbkdf-memory", optarg, &m->recovery_cost.memory_kb))
				return LR_EXIT_USAGE;
			break;
		case OPT_RITER:
			if (cli_parse_uint("migrate", "--recovery-pbkdf-iterations", optarg, &m->recovery_cost.iterations))
				return LR_EXIT_USAGE;
			break;
		case OPT_KEEP: m->keep_source = true; break;
		case OPT_REBOOT: m->reboot = true; break;
		case OPT_DRY_RUN: m->dry_run = true; break;
		case OPT_JSON: cli.json = true; break;
		case OPT_STATUS: *mode = MODE_STATUS; break;
		case OPT_ABORT: *mode = MODE_ABORT; break;
		case OPT_FINISH: *mode = MODE_FINISH; break;
		case 'y': m->yes = true; break;
		case 'h': help(); return -1;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage_error("migrate", "unexpected argument '%s'", argv[optind]);
	if (strlen(m->name) >= 48 || strpbrk(m->name, "/ \t"))
		return cli_usage_error("migrate", "--name %s: a device-mapper name without '/' or spaces", m->name);
	return 0;
}

/* ---- validate: nothing is written ---- */

int migrate_check_source(const char *arg, char *source, size_t len)
{
	struct lr_rootdev rd = { 0 };
	struct stat root, src;
	int r;

	if (!arg)
		snprintf(source, len, "/dev/mmcblk0p2");
	else if (strspn(arg, "0123456789") == strlen(arg))
		snprintf(source, len, "/dev/mmcblk0p%s", arg);
	else
		snprintf(source, len, "%s", arg);
	r = lr_rootdev_find(&rd);
	if (r < 0)
		return r;
	if (rd.dm_name) {
		r = lr_error_code(-EMEDIUMTYPE, "the running root is already on /dev/mapper/%s: nothing to migrate",
				  rd.dm_name);
		goto out;
	}
	if (stat("/", &root) < 0) {
		r = -errno;
		goto out;
	}
	if (stat(source, &src) < 0 || !S_ISBLK(src.st_mode)) {
		r = lr_error_code(-ENOENT, "-m %s: no such block device (the running root is %s; name it with -m)",
				  source, rd.source);
		goto out;
	}
	if (src.st_rdev != root.st_dev) {
		r = lr_error_code(-ENOENT, "-m %s is not the running root (/ is mounted from %s): lockroot copies "
				  "the running system; use -m %s", source, rd.source, rd.source);
		goto out;
	}
	r = 0;
out:
	lr_rootdev_done(&rd);
	return r;
}

static int check_source(struct migrate *m)
{
	return migrate_check_source(m->source_arg, m->source, sizeof(m->source));
}

/* sysfs directory of a block device, e.g. /sys/dev/block/8:0 */
static void sysfs_dev(dev_t d, char *out, size_t len)
{
	snprintf(out, len, "/sys/dev/block/%u:%u", major(d), minor(d));
}

/* Is anything on the drive or one of its partitions mounted, a swap, or held by dm? */
static int check_target_unused(const char *target, dev_t disk)
{
	char dir[128], path[PATH_MAX], mp[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int r = 0;

	if (find_mount_of(disk, mp, sizeof(mp)) == 0)
		return lr_error_code(-EBUSY, "%s is mounted at %s: unmount it first", target, mp);
	sysfs_dev(disk, dir, sizeof(dir));
	d = opendir(dir);
	while (d && (e = readdir(d)) && r == 0) {
		unsigned ma, mi;
		char devtext[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/dev", dir, e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(devtext, sizeof(devtext), f) && sscanf(devtext, "%u:%u", &ma, &mi) == 2) {
			if (find_mount_of(makedev(ma, mi), mp, sizeof(mp)) == 0)
				r = lr_error_code(-EBUSY, "/dev/%s (on %s) is mounted at %s: unmount it first "
						  "(nothing was written)", e->d_name, target, mp);
			snprintf(path, sizeof(path), "%s/%s/holders", dir, e->d_name);
			DIR *h = opendir(path);
			struct dirent *he;

			while (r == 0 && h && (he = readdir(h)))
				if (he->d_name[0] != '.')
					r = lr_error_code(-EBUSY, "/dev/%s (on %s) is in use by /dev/%s (device-mapper, "
							  "RAID...): stop that first", e->d_name, target, he->d_name);
			if (h)
				closedir(h);
		}
		fclose(f);
	}
	if (d)
		closedir(d);
	if (r == 0) {
		FILE *f = fopen("/proc/swaps", "re");
		char line[512];
		size_t tl = strlen(target);

		while (f && fgets(line, sizeof(line), f) && r == 0)
			if (strncmp(line, target, tl) == 0 && (line[tl] == ' ' || line[tl] == '\t' || isdigit(line[tl]) ||
								line[tl] == 'p'))
				r = lr_error_code(-EBUSY, "%.*s is a swap area on %s: swapoff it first",
						  (int)strcspn(line, " \t"), line, target);
		if (f)
			fclose(f);
	}
	return r;
}

int migrate_check_drive(const char *opt, const char *target, const char *source, struct lr_disk_info *disk)
{
	char srcdisk[64], tdir[128], path[PATH_MAX];
	struct stat t, s;
	unsigned srcpart;
	int r;

	if (stat(target, &t) < 0)
		return lr_error_code(-ENOENT, "%s %s: no such device (is the drive plugged in? see lsblk)", opt, target);
	if (!S_ISBLK(t.st_mode))
		return lr_error_code(-ENOTBLK, "%s %s is not a block device", opt, target);
	sysfs_dev(t.st_rdev, tdir, sizeof(tdir));
	snprintf(path, sizeof(path), "%s/partition", tdir);
	if (access(path, F_OK) == 0)
		return lr_error_code(-EINVAL, "%s %s is a partition: name the whole drive (e.g. /dev/sda) and the "
				     "partition number with -p", opt, target);
	r = lr_disk_of_partition(source, srcdisk, sizeof(srcdisk), &srcpart);
	if (r == 0 && stat(srcdisk, &s) == 0 && s.st_rdev == t.st_rdev)
		return lr_error_code(-EINVAL, "%s %s holds the running root (%s): the target must be another drive",
				     opt, target, source);
	r = check_target_unused(target, t.st_rdev);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/ro", tdir);
	{
		FILE *f = fopen(path, "re");
		int ro = 0;

		if (f) {
			if (fscanf(f, "%d", &ro) != 1)
				ro = 0;
			fclose(f);
		}
		if (ro)
			return lr_error_code(-EROFS, "%s is read-only (write-protect switch?)", target);
	}
	return lr_disk_inspect(target, disk);
}

static int check_target(struct migrate *m)
{
	return migrate_check_drive("-x", m->target, m->source, &m->disk);
}

/* A previous migration to this drive that did not finish: its partitions may be reused. */
static const struct lr_migrate_volume *previous_volume(const struct lr_migrate_state *prev, const char *target,
						       const char *mountpoint)
{
	if (prev->phase != LR_MIGRATE_FAILED && prev->phase != LR_MIGRATE_INTERRUPTED)
		return NULL;
	if (strcmp(prev->target, target))
		return NULL;
	for (size_t i = 0; i < prev->n_volumes; i++)
		if (strcmp(prev->volumes[i].mountpoint, mountpoint) == 0)
			return &prev->volumes[i];
	return NULL;
}

static bool disk_has_part(const struct lr_disk_info *d, unsigned partno)
{
	for (size_t i = 0; i < d->n_parts; i++)
		if (d->parts[i].partno == partno)
			return true;
	return false;
}

static int check_state(struct migrate *m, struct lr_migrate_state *prev)
{
	int r = lr_migrate_state_load("/", prev);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	switch (prev->phase) {
	case LR_MIGRATE_TRIAL:
		return lr_error_code(-EBUSY, "a migration to %s is ready and waiting for its trial boot: reboot with "
				     "\"%s\", or give it up with lockroot migrate --abort", prev->target, REBOOT_CMD);
	case LR_MIGRATE_PREPARING:
	case LR_MIGRATE_COPYING:
		/* running now, or cut off: only a process of ours could tell; /run says it */
		if (access(WORK_DIR "/running", F_OK) == 0)
			return lr_error_code(-EBUSY, "another lockroot migrate is running (%s exists)", WORK_DIR "/running");
		prev->phase = LR_MIGRATE_INTERRUPTED;
		return 0;
	default:
		(void)m;
		return 0;
	}
}

static int plan_partitions(struct migrate *m, const struct lr_migrate_state *prev)
{
	struct lr_disk_want wants[LR_MIGRATE_MAX_VOLUMES] = { 0 };
	char a[32], b[32], c[32];
	const struct lr_migrate_volume *pv;
	size_t n = 0;
	int r;

	wants[n].size = m->root_size;
	if (m->partno) {
		wants[n].partno = m->partno;
		wants[n].reuse_ok = true;
	} else if ((pv = previous_volume(prev, m->target, "/")) && disk_has_part(&m->disk, pv->partno)) {
		wants[n].partno = pv->partno;
		wants[n].reuse_ok = true;
		lr_info("reusing %s from the migration that did not finish", pv->device);
	} else if (disk_has_part(&m->disk, 1)) {
		char list[256] = "";

		for (size_t i = 0, o = 0; i < m->disk.n_parts && o < sizeof(list); i++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%u", i ? ", " : "", m->disk.parts[i].partno);
		return lr_error_code(-EEXIST, "%s already has partition 1 (partitions: %s): give -p 1 to reuse it "
				     "(its contents are destroyed), or -p N with a free number to create a new one",
				     m->target, list);
	} else {
		wants[n].partno = 1;
	}
	if (wants[n].reuse_ok && disk_has_part(&m->disk, wants[n].partno))
		wants[n].size = 0; /* an existing partition is what it is; -s does not apply */
	n++;
	for (size_t i = 0; i < m->n_data; i++, n++) {
		wants[n].size = m->data[i].size;
		pv = previous_volume(prev, m->target, m->data[i].mountpoint);
		if (pv && disk_has_part(&m->disk, pv->partno)) {
			wants[n].partno = pv->partno;
			wants[n].reuse_ok = true;
			wants[n].size = 0;
		}
	}
	/* lr_disk_plan places the sized wants first; a size-0 root takes the largest region left. */
	r = lr_disk_plan(&m->disk, m->target, wants, n, m->slots);
	if (r < 0)
		return r;
	m->n_slots = n;
	if (m->slots[0].size < room_for(m->root_used))
		return lr_error_code(-ENOSPC, "%s is too small for the root: %s used on / needs at least %s, "
				     "the root partition would be %s", m->target, size_str(m->root_used, a, sizeof(a)),
				     size_str(room_for(m->root_used), b, sizeof(b)),
				     size_str(m->slots[0].size, c, sizeof(c)));
	for (size_t i = 0; i < m->n_data; i++)
		if (m->slots[i + 1].size < room_for(m->data[i].used) - 64 * MiB)
			return lr_error_code(-ENOSPC, "--data for %s: %s is too small for the %s now there",
					     m->data[i].mountpoint, size_str(m->slots[i + 1].size, a, sizeof(a)),
					     size_str(m->data[i].used, b, sizeof(b)));
	return 0;
}

static int check_sizes(struct migrate *m)
{
	struct statvfs sv;

	if (statvfs("/", &sv) < 0)
		return -errno;
	m->root_used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
	for (size_t i = 0; i < m->n_data; i++) {
		struct stat st;

		if (stat(m->data[i].mountpoint, &st) == 0 && S_ISDIR(st.st_mode))
			m->data[i].used = disk_usage(m->data[i].mountpoint);
		m->root_used -= m->data[i].used < m->root_used ? m->data[i].used : 0;
	}
	return 0;
}

int migrate_check_tools(void)
{
	static const char *const need[][2] = {
		{ "/usr/bin/rsync", "rsync" },
		{ "/usr/sbin/update-initramfs", "initramfs-tools" },
		{ "/usr/share/initramfs-tools/hooks/lockroot", "lockroot (its initramfs hook)" },
		{ KEYSCRIPT, "lockroot (its keyscript)" },
		{ "/usr/sbin/cryptsetup", "cryptsetup" },
		{ "/usr/sbin/mkfs.ext4", "e2fsprogs" },
	};

	for (size_t i = 0; i < LR_ELEMENTSOF(need); i++)
		if (access(need[i][0], X_OK) < 0 && access(need[i][0], R_OK) < 0)
			return lr_error_code(-ENOPKG, "%s is missing: install %s first (nothing was written)",
					     need[i][0], need[i][1]);
	return 0;
}

static int check_hsm(struct migrate *m)
{
	int r;

	if (cli_hsm_setup("migrate", m->hsm_spec, m->pcrs, m->pin_file, &m->hsm, &m->pin))
		return -EINVAL;
	if (cli_bind_setup("migrate", m->bind, &m->bind_mask, &m->bind_default))
		return -EINVAL;
	r = m->hsm.backend->probe(&m->hsm);
	if (r < 0)
		return lr_error_code(r, "the HSM (%s) is not available: %s; nothing was written", m->hsm_spec,
				     r == -ENODEV ? "not found" : strerror(-r));
	return 0;
}

/* ---- the boot configuration: final texts and the trial command line ---- */

static char *read_or_null(const char *path)
{
	char *t = NULL;

	return lr_read_file(path, 1 << 20, &t, NULL) == 0 ? t : NULL;
}

static void data_name(const struct migrate *m, size_t i, char *out, size_t len)
{
	size_t o = (size_t)snprintf(out, len, "%s", "crypt");

	for (const char *p = m->data[i].mountpoint; *p && o + 1 < len; p++)
		out[o++] = *p == '/' ? '-' : *p;
	out[o] = '\0';
}

int migrate_plan_boot(const char *name, const char *luks_uuid, struct lr_bootcfg_info *boot,
		      struct lr_migrate_state *st, char *trial_cmdline, size_t trial_len)
{
	struct lr_bootcfg_change *c = NULL;
	_cleanup_free_ char *source = NULL;
	struct lr_bootcfg cfg = { .root = "/", .name = name, .crypttab_options = CRYPTTAB_OPTIONS };
	const char *slash;
	size_t n = 0;
	int r;

	r = lr_bootcfg_inspect("/", boot);
	if (r < 0)
		return r;
	if (!boot->boot_dir)
		return lr_error_code(-ENOENT, "no Raspberry Pi boot partition (config.txt and cmdline.txt in "
				     "/boot/firmware or /boot): lockroot switches a Pi's boot");
	snprintf(st->boot_dir, sizeof(st->boot_dir), "%s", boot->boot_dir);
	migrate_mount_source(boot->boot_dir, st->boot_device, sizeof(st->boot_device));
	slash = strrchr(boot->cmdline_path, '/');
	snprintf(st->cmdline_file, sizeof(st->cmdline_file), "%s", slash ? slash + 1 : boot->cmdline_path);
	if (boot->initramfs)
		snprintf(st->initramfs, sizeof(st->initramfs), "%s", boot->initramfs);
	else
		snprintf(st->initramfs, sizeof(st->initramfs), "initrd.img");
	if (!boot->auto_initramfs)
		cfg.initramfs = st->initramfs;
	if (asprintf(&source, "UUID=%s", luks_uuid) < 0)
		return -ENOMEM;
	cfg.source = source;
	r = lr_bootcfg_plan(&cfg, &c, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(c[i].path, boot->cmdline_path) == 0)
			st->final_cmdline = strdup(c[i].new_text);
		else if (strcmp(c[i].path, boot->config_path) == 0)
			st->final_config = strdup(c[i].new_text);
		else if (strncmp(c[i].path, boot->boot_dir, strlen(boot->boot_dir)) == 0)
			r = lr_error_code(-EOPNOTSUPP, "%s would have to change too: config.txt includes other "
					  "files in a way lockroot does not handle; simplify config.txt",
					  c[i].path);
	}
	lr_bootcfg_changes_free(c, n);
	if (r < 0)
		return r;
	if (!st->final_config)
		st->final_config = read_or_null(boot->config_path);
	if (!st->final_cmdline)
		st->final_cmdline = read_or_null(boot->cmdline_path);
	if (!st->final_config || !st->final_cmdline)
		return lr_error_code(-EIO, "cannot read %s or %s", boot->config_path, boot->cmdline_path);
	snprintf(trial_cmdline, trial_len, "%.*s panic=10 lockroot.tryboot=%s",
		 (int)strcspn(st->final_cmdline, "\n"), st->final_cmdline,
		 *st->boot_device ? st->boot_device : "none");
	return 0;
}

static int plan_boot(struct migrate *m)
{
	return migrate_plan_boot(m->name, m->st.volumes[0].uuid, &m->boot, &m->st, m->trial_cmdline,
				 sizeof(m->trial_cmdline));
}

/* The state to be saved: volumes, UUIDs chosen now so the plan can show every file. */
static int plan_state(struct migrate *m)
{
	m->st.phase = LR_MIGRATE_PREPARING;
	snprintf(m->st.source, sizeof(m->st.source), "%s", m->source);
	snprintf(m->st.target, sizeof(m->st.target), "%s", m->target);
	m->st.keep_source = m->keep_source;
	m->st.n_volumes = m->n_slots;
	for (size_t i = 0; i < m->n_slots; i++) {
		struct lr_migrate_volume *v = &m->st.volumes[i];
		FILE *f = fopen("/proc/sys/kernel/random/uuid", "re");

		if (!f || !fgets(v->uuid, sizeof(v->uuid), f)) {
			if (f)
				fclose(f);
			return lr_error_code(-EIO, "cannot read a random UUID");
		}
		fclose(f);
		v->uuid[strcspn(v->uuid, "\n")] = '\0';
		snprintf(v->role, sizeof(v->role), "%s", i ? "data" : "root");
		lr_disk_partition_name(m->target, m->slots[i].partno, v->device, sizeof(v->device));
		v->partno = m->slots[i].partno;
		v->reused = m->slots[i].reuse;
		v->size = m->slots[i].size;
		if (i == 0) {
			snprintf(v->name, sizeof(v->name), "%s", m->name);
			snprintf(v->mountpoint, sizeof(v->mountpoint), "/");
		} else {
			data_name(m, i - 1, v->name, sizeof(v->name));
			snprintf(v->mountpoint, sizeof(v->mountpoint), "%s", m->data[i - 1].mountpoint);
		}
	}
	return 0;
}

/* ---- plan output ---- */

static void print_plan(const struct migrate *m)
{
	char a[32], b[32];

	if (cli.json) {
		struct json_object *o = lr_migrate_state_json(&m->st);

		json_object_object_add(o, "cipher", json_object_new_string(m->cipher));
		json_object_object_add(o, "root_used", json_object_new_int64((int64_t)m->root_used));
		json_object_object_add(o, "trial_cmdline", json_object_new_string(m->trial_cmdline));
		progress_event("plan", o);
		return;
	}
	printf("Plan: move the running root %s (%s used) to %s (%s, %s):\n", m->source,
	       size_str(m->root_used, a, sizeof(a)), m->target, size_str(m->disk.size, b, sizeof(b)),
	       m->disk.label == LR_LABEL_GPT ? "GPT" : m->disk.label == LR_LABEL_DOS ? "MBR" : "no partition table");
	if (m->disk.label == LR_LABEL_NONE)
		printf("  - create an MBR partition table on %s\n", m->target);
	for (size_t i = 0; i < m->n_slots; i++) {
		const struct lr_migrate_volume *v = &m->st.volumes[i];

		if (m->slots[i].reuse)
			printf("  - reuse partition %s (%s): ALL ITS CONTENTS ARE DESTROYED\n", v->device,
			       size_str(v->size, a, sizeof(a)));
		else
			printf("  - create partition %s: %s at %s\n", v->device, size_str(v->size, a, sizeof(a)),
			       size_str(m->slots[i].start, b, sizeof(b)));
		printf("      LUKS2 (%s, UUID %s), key locked by %s%s, ext4, /dev/mapper/%s -> %s\n", m->cipher,
		       v->uuid, m->hsm_spec, m->recovery ? " + recovery key" : "", v->name, v->mountpoint);
	}
	for (size_t i = 0; i < m->disk.n_parts; i++) {
		bool used = false;

		for (size_t j = 0; j < m->n_slots; j++)
			used |= m->slots[j].reuse && m->slots[j].partno == m->disk.parts[i].partno;
		if (!used) {
			char dev[64];

			lr_disk_partition_name(m->target, m->disk.parts[i].partno, dev, sizeof(dev));
			printf("  - leave %s (%s) alone\n", dev, size_str(m->disk.parts[i].size, a, sizeof(a)));
		}
	}
	printf("  - copy / with rsync -aHAX (hard links, ACLs, xattrs, one file system), then a second pass\n");
	printf("  - new root: /etc/crypttab and /etc/fstab for the encrypted volumes, initramfs rebuilt\n");
	printf("  - %s: create %s, %s, %s (config.txt is not changed yet)\n", m->st.boot_dir, LR_TRYBOOT_CONFIG,
	       LR_TRIAL_CMDLINE, LR_TRIAL_INITRD);
	printf("      trial command line: %s\n", m->trial_cmdline);
	printf("  - then reboot with: %s\n", REBOOT_CMD);
	printf("      the new root is tried once; when it comes up it becomes the default (config.txt,\n"
	       "      %s, initramfs), otherwise the board comes back on the old root\n", m->st.cmdline_file);
	if (m->keep_source)
		printf("  - WARNING: the old root %s is kept (--keep-source): a plaintext copy of everything stays "
		       "readable on it\n", m->source);
	else
		printf("  - after the first successful boot of the new root: erase the old root %s\n", m->source);
}

/* ---- act ---- */

struct act {
	char names[LR_MIGRATE_MAX_VOLUMES][64];   /* active mappings */
	size_t n_active;
	char mounts[LR_MIGRATE_MAX_VOLUMES + 8][PATH_MAX];
	size_t n_mounts;
	struct lr_led led;
};

static int do_mount(struct act *a, const char *src, const char *dst, const char *type, unsigned long flags)
{
	if (mkdir(dst, 0755) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", dst, strerror(errno));
	if (mount(src, dst, type, flags, NULL) < 0)
		return lr_error_code(-errno, "cannot mount %s on %s: %s", src, dst, strerror(errno));
	snprintf(a->mounts[a->n_mounts++], PATH_MAX, "%s", dst);
	return 0;
}

static void undo_mounts(struct act *a)
{
	while (a->n_mounts > 0) {
		const char *mp = a->mounts[--a->n_mounts];

		if (umount(mp) < 0 && umount2(mp, MNT_DETACH) < 0)
			lr_warn("cannot unmount %s: %s", mp, strerror(errno));
	}
}

static void undo_mappings(struct act *a)
{
	while (a->n_active > 0)
		lr_deactivate(a->names[--a->n_active]);
}

static int make_volumes(struct migrate *m, struct act *a, struct lr_secret *recovery)
{
	int r;

	for (size_t i = 0; i < m->n_slots; i++) {
		struct lr_migrate_volume *v = &m->st.volumes[i];
		struct lr_format_params p = {
			.device = v->device, .cipher = m->cipher, .hsm = &m->hsm, .bind_mask = m->bind_mask,
			.bind_default = m->bind_default, .recovery_key = recovery != NULL,
			.recovery_cost = m->recovery_cost, .uuid = v->uuid, .recovery_key_value = recovery,
			.label = i ? "lockroot-data" : "lockroot-root",
		};
		struct lr_enroll_result res = { 0 };
		struct lr_unlock_params u = { .device = v->device, .token = -1, .hsm_override = NULL };
		char mapped[128];
		char *mkfs[] = { (char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-L",
				 (char *)(i ? "data" : "rootfs"), mapped, NULL };

		lr_info("%s: LUKS2 volume %s", v->device, v->uuid);
		r = lr_format(&p, &res);
		lr_enroll_result_done(&res);
		if (r < 0)
			return r;
		snprintf(a->names[a->n_active], sizeof(a->names[0]), "lockroot-migrate-%zu", i);
		u.name = a->names[a->n_active];
		u.hsm_override = m->pin ? &m->hsm : NULL;
		/* Opened through the HSM, as the board will at boot */
		r = lr_unlock(&u, NULL);
		if (r < 0)
			return lr_error_code(r, "the new volume %s does not open through the HSM: %s", v->device,
					     strerror(-r));
		a->n_active++;
		snprintf(mapped, sizeof(mapped), "/dev/mapper/%s", u.name);
		r = cli_run_ok(mkfs, false);
		if (r < 0)
			return r;
	}
	return 0;
}

/* "Literal data: 1,234 bytes" -> 1234 */
static bool stats_number(const char *line, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);
	const char *c = line + kl;
	uint64_t v = 0;

	if (strncmp(line, key, kl) != 0)
		return false;
	while (*c == ' ')
		c++;
	for (; isdigit((unsigned char)*c) || *c == ','; c++)
		if (*c != ',')
			v = v * 10 + (uint64_t)(*c - '0');
	*out = v;
	return true;
}

/* rsync -aHAX with --info=progress2 parsed into our progress display, --stats into stats. */
int migrate_rsync(const char *src, const char *dst, bool delete, const char *phase, const char *exclude,
		  struct migrate_rsync_stats *stats)
{
	char *argv[] = { (char *)"rsync", (char *)"-aHAX", (char *)"--numeric-ids", (char *)"--one-file-system",
			 (char *)"--info=progress2", (char *)"--no-inc-recursive", (char *)"--stats", (char *)"--exclude",
			 (char *)LR_MIGRATE_STATE_PATH, (char *)(delete ? "--delete" : "--partial"),
			 (char *)src, (char *)dst, NULL, NULL, NULL };
	struct migrate_rsync_stats dummy;
	struct progress p;
	int pipefd[2], status;
	char buf[4096], line[512];
	size_t ll = 0;
	pid_t pid;

	if (!stats)
		stats = &dummy;
	memset(stats, 0, sizeof(*stats));
	if (exclude) {
		/* before the paths: rsync takes the last two arguments as source and destination */
		argv[10] = (char *)"--exclude";
		argv[11] = (char *)exclude;
		argv[12] = (char *)src;
		argv[13] = (char *)dst;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pipefd[1]);
	progress_start(&p, phase, 0);
	for (;;) {
		ssize_t n = read(pipefd[0], buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\r' && buf[i] != '\n') {
				if (ll + 1 < sizeof(line))
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = '\0';
			ll = 0;
			if (stats_number(line, "Literal data:", &stats->literal) ||
			    stats_number(line, "Total bytes sent:", &stats->sent) ||
			    stats_number(line, "Number of regular files transferred:", &stats->files))
				continue;
			/* "  1,234,567  45%   12.34MB/s    0:00:12 (xfr#12, to-chk=100/200)" */
			char num[64];
			unsigned pct;
			size_t k = 0;

			const char *c = line;

			while (*c == ' ')
				c++;
			for (; isdigit((unsigned char)*c) || *c == ','; c++)
				if (isdigit((unsigned char)*c) && k + 1 < sizeof(num))
					num[k++] = *c;
			num[k] = '\0';
			if (k && sscanf(line, "%*s %u%%", &pct) == 1)
				progress_update(&p, strtoull(num, NULL, 10), pct);
		}
	}
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	progress_end(&p, WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 24));
	if (!WIFEXITED(status))
		return lr_error_code(-EIO, "rsync was killed by signal %d", WTERMSIG(status));
	/* 24: files vanished while copying (a live system); the next pass or the running system
	 * makes them again */
	if (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 24)
		return lr_error_code(-EIO, "rsync %s -> %s failed (exit status %d)", src, dst, WEXITSTATUS(status));
	return 0;
}

static int configure_new_root(struct migrate *m, const char *newroot)
{
	struct lr_bootcfg_crypt crypts[MAX_DATA];
	struct lr_bootcfg_mount mounts[MAX_DATA];
	char sources[MAX_DATA][64], devs[MAX_DATA][128], root_source[64];
	struct lr_bootcfg cfg = { .root = newroot, .name = m->name, .crypttab_options = CRYPTTAB_OPTIONS,
				  .firmware_optional = true, .etc_only = true, .crypts = crypts, .n_crypts = m->n_data,
				  .mounts = mounts, .n_mounts = m->n_data };
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;
	int r;

	snprintf(root_source, sizeof(root_source), "UUID=%s", m->st.volumes[0].uuid);
	cfg.source = root_source;
	for (size_t i = 0; i < m->n_data; i++) {
		const struct lr_migrate_volume *v = &m->st.volumes[i + 1];

		snprintf(sources[i], sizeof(sources[i]), "UUID=%s", v->uuid);
		snprintf(devs[i], sizeof(devs[i]), "/dev/mapper/%s", v->name);
		crypts[i] = (struct lr_bootcfg_crypt){ .name = v->name, .source = sources[i], .options = CRYPTTAB_OPTIONS };
		mounts[i] = (struct lr_bootcfg_mount){ .device = devs[i], .mountpoint = v->mountpoint, .fstype = "ext4",
						       .options = "defaults,noatime", .passno = 2 };
	}
	r = lr_bootcfg_plan(&cfg, &c, &n);
	if (r == 0)
		r = lr_bootcfg_apply(c, n);
	lr_bootcfg_changes_free(c, n);
	return r;
}

/* The new root's initramfs, built in a chroot (as fast as it gets: in the running system's
 * own kernel, no emulation), and checked. */
int migrate_build_initramfs(const char *newroot, const char *boot_dir)
{
	static const char *const binds[] = { "/dev", "/proc", "/sys" };
	char path[PATH_MAX], initrd[PATH_MAX], dst[PATH_MAX];
	struct act binds_act = { 0 }, *a = &binds_act;
	struct utsname u;
	pid_t pid;
	int r, status;
	size_t mark = 0;

	if (uname(&u) < 0)
		return -errno;
	for (size_t i = 0; i < LR_ELEMENTSOF(binds); i++) {
		snprintf(path, sizeof(path), "%s%s", newroot, binds[i]);
		r = do_mount(a, binds[i], path, NULL, MS_BIND | MS_REC);
		if (r < 0)
			goto out;
	}
	lr_info("building the new root's initramfs (update-initramfs -u -k all in a chroot)");
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out;
	}
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);

		if (fd >= 0 && cli.json)
			dup2(fd, STDOUT_FILENO);
		if (chroot(newroot) < 0 || chdir("/") < 0)
			_exit(126);
		execl("/usr/sbin/update-initramfs", "update-initramfs", "-u", "-k", "all", (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			r = -errno;
			goto out;
		}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		r = lr_error_code(-EIO, "update-initramfs in the new root failed (exit status %d)",
				  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		goto out;
	}
	snprintf(initrd, sizeof(initrd), "%s/boot/initrd.img-%s", newroot, u.release);
	{
		char cmd[PATH_MAX + 64], line[512];
		bool conf = false, tool = false;
		FILE *p;

		snprintf(cmd, sizeof(cmd), "lsinitramfs '%s' 2>/dev/null", initrd);
		p = popen(cmd, "r");
		while (p && fgets(line, sizeof(line), p)) {
			conf |= strstr(line, "cryptroot/crypttab") != NULL;
			tool |= strstr(line, "sbin/lockroot") != NULL;
		}
		if (p)
			pclose(p);
		if (!conf || !tool) {
			r = lr_error_code(-EIO, "%s lacks %s: it could not unlock the new root", initrd,
					  !conf ? "the crypttab of the new root" : "lockroot");
			goto out;
		}
	}
	snprintf(dst, sizeof(dst), "%s/%s", boot_dir, LR_TRIAL_INITRD);
	r = lr_copy_file_atomic(initrd, dst);
out:
	while (a->n_mounts > mark) {
		const char *mp = a->mounts[--a->n_mounts];

		if (umount2(mp, MNT_DETACH) < 0)
			lr_warn("cannot unmount %s: %s", mp, strerror(errno));
	}
	return r;
}

static int copy_root(struct migrate *m, struct act *a)
{
	char newroot[] = WORK_DIR "/new", src[] = WORK_DIR "/src", path[PATH_MAX], srcs[PATH_MAX], dsts[PATH_MAX];
	int r;

	r = do_mount(a, "/", src, NULL, MS_BIND);
	if (r < 0)
		return r;
	if (mount(NULL, src, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		lr_warn("cannot make %s read-only: %s", src, strerror(errno));
	snprintf(path, sizeof(path), "/dev/mapper/%s", a->names[0]);
	r = do_mount(a, path, newroot, "ext4", 0);
	if (r < 0)
		return r;
	for (size_t i = 1; i < m->n_slots; i++) {
		char mp[PATH_MAX], dev[128], cmd[PATH_MAX + 16];

		snprintf(mp, sizeof(mp), "%s%s", newroot, m->st.volumes[i].mountpoint);
		snprintf(cmd, sizeof(cmd), "%s", mp);
		for (char *p = cmd + strlen(newroot) + 1; *p; p++)
			if (*p == '/') {
				*p = '\0';
				mkdir(cmd, 0755);
				*p = '/';
			}
		snprintf(dev, sizeof(dev), "/dev/mapper/%s", a->names[i]);
		r = do_mount(a, dev, mp, "ext4", 0);
		if (r < 0)
			return r;
	}
	snprintf(srcs, sizeof(srcs), "%s/", src);
	snprintf(dsts, sizeof(dsts), "%s/", newroot);
	r = migrate_rsync(srcs, dsts, false, "copy", NULL, NULL);
	if (r == 0)
		r = migrate_rsync(srcs, dsts, true, "sync", NULL, NULL);
	if (r < 0)
		return r;
	r = configure_new_root(m, newroot);
	if (r < 0)
		return r;
	m->st.phase = LR_MIGRATE_TRIAL;
	r = lr_migrate_state_save(newroot, &m->st);
	if (r == 0)
		r = cli_enable_unit(newroot, SERVICE);
	if (r == 0)
		r = migrate_build_initramfs(newroot, m->st.boot_dir);
	return r;
}

static int fsck_volumes(struct act *a)
{
	for (size_t i = 0; i < a->n_active; i++) {
		char dev[128];
		char *argv[] = { (char *)"e2fsck", (char *)"-fn", dev, NULL };
		int r;

		snprintf(dev, sizeof(dev), "/dev/mapper/%s", a->names[i]);
		r = cli_run(argv, true);
		if (r != 0)
			return lr_error_code(-EIO, "the new file system on %s does not check clean (e2fsck -fn exit %d)",
					     dev, r);
	}
	return 0;
}

static void print_ready_json(const struct migrate *m, const struct lr_secret *recovery)
{
	struct json_object *o = json_object_new_object(), *st = lr_migrate_state_json(&m->st);

	json_object_object_add(o, "event", json_object_new_string("ready"));
	json_object_object_foreach(st, k, v)
		json_object_object_add(o, k, json_object_get(v));
	json_object_put(st);
	json_object_object_add(o, "reboot", json_object_new_string(REBOOT_CMD));
	cli_print_ready(o, recovery);
}

static int act(struct migrate *m)
{
	_cleanup_secret_ struct lr_secret *recovery = NULL;
	struct act a = { 0 };
	int r, fd;

	mkdir("/run/lockroot", 0700);
	mkdir(WORK_DIR, 0700);
	fd = open(WORK_DIR "/running", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return lr_error_code(-EBUSY, "another lockroot migrate is running (%s exists)", WORK_DIR "/running");
	close(fd);
	lr_led_blink(&a.led);
	if (m->recovery) {
		r = lr_recovery_key_generate(&recovery);
		if (r < 0)
			goto out;
	}
	m->st.phase = LR_MIGRATE_PREPARING;
	r = lr_migrate_state_save("/", &m->st);
	if (r < 0)
		goto out;
	r = cli_enable_unit("", SERVICE);
	if (r < 0)
		goto out;
	r = lr_disk_apply(m->target, &m->disk, m->slots, m->n_slots);
	if (r < 0)
		goto out;
	r = make_volumes(m, &a, recovery);
	if (r < 0)
		goto out;
	m->st.phase = LR_MIGRATE_COPYING;
	r = lr_migrate_state_save("/", &m->st);
	if (r < 0)
		goto out;
	r = copy_root(m, &a);
	undo_mounts(&a);
	if (r == 0)
		r = fsck_volumes(&a);
	if (r < 0)
		goto out;
	undo_mappings(&a);
	/* Everything is in place and checked: only now does the boot partition learn of it. */
	r = lr_migrate_write_trial(&m->st, m->trial_cmdline);
	if (r < 0)
		goto out;
	m->st.phase = LR_MIGRATE_TRIAL;
	r = lr_migrate_state_save("/", &m->st);
	if (r < 0)
		goto out;
	sync();
	if (cli.json) {
		print_ready_json(m, recovery);
	} else {
		if (recovery)
			cli_show_recovery_key(recovery, -1);
		printf("Ready. Reboot into the new root with: %s\n", REBOOT_CMD);
	}
out:
	undo_mounts(&a);
	undo_mappings(&a);
	lr_led_restore(&a.led);
	if (r < 0) {
		m->st.phase = LR_MIGRATE_FAILED;
		lr_migrate_set_error(&m->st, "migration to %s stopped before the switch-over (the old root is in use, "
				     "nothing was switched); run lockroot migrate again", m->target);
		lr_migrate_state_save("/", &m->st);
		/* The partially written trial files must not be booted */
		{
			char *rec = NULL;

			lr_migrate_abandon_trial(&m->st, &rec);
			free(rec);
		}
	}
	unlink(WORK_DIR "/running");
	if (r == 0 && m->reboot) {
		char *argv[] = { (char *)"systemctl", (char *)"reboot", (char *)"0 tryboot", NULL };

		r = cli_run_ok(argv, false);
	}
	return r;
}

/* ---- --status, --abort, --finish ---- */

static void print_state(const struct lr_migrate_state *st)
{
	char a[32], b[32], c[32], d[32];

	if (cli.json) {
		struct json_object *o = lr_migrate_state_json(st);

		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
		json_object_put(o);
		return;
	}
	printf("Migration of %s to %s: %s\n", st->source, st->target, lr_migrate_phase_name(st->phase));
	for (size_t i = 0; i < st->n_volumes; i++)
		printf("  %s %s -> /dev/mapper/%s on %s\n", st->volumes[i].role, st->volumes[i].device,
		       st->volumes[i].name, st->volumes[i].mountpoint);
	if (st->phase == LR_MIGRATE_ERASING || (st->phase == LR_MIGRATE_DONE && st->erase_size))
		printf("  old root erased: %s of %s (%s discarded, %s overwritten)\n",
		       size_str(st->erase_done, a, sizeof(a)), size_str(st->erase_size, b, sizeof(b)),
		       size_str(st->erase_discarded, c, sizeof(c)), size_str(st->erase_overwritten, d, sizeof(d)));
	if (st->phase == LR_MIGRATE_DONE && st->keep_source)
		printf("  WARNING: the old root %s was kept (--keep-source) and is NOT encrypted\n", st->source);
	if (st->phase == LR_MIGRATE_TRIAL)
		printf("  waiting for the trial boot: %s\n", REBOOT_CMD);
	if (st->error)
		printf("  %s\n", st->error);
}

struct erase_ctx {
	struct lr_migrate_state *st;
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
	/* Saved after every chunk: a power cut resumes here */
	return lr_migrate_state_save("/", e->st) < 0;
}

static int erase_source(struct lr_migrate_state *st)
{
	struct erase_ctx e = { .st = st };
	struct lr_erase_stats s = { 0 };
	struct lr_led led;
	int r;

	lr_info("erasing the old plaintext root %s%s", st->source, st->erase_done ? " (resuming)" : "");
	lr_led_blink(&led);
	progress_start(&e.p, "erase", st->erase_size);
	r = lr_erase(st->source, st->erase_done, false, erase_progress, &e, &s);
	progress_end(&e.p, r == 0);
	lr_led_restore(&led);
	return r;
}

static int on_new_root(struct lr_migrate_state *st)
{
	int r;

	if (st->phase == LR_MIGRATE_TRIAL || st->phase == LR_MIGRATE_COMMITTING) {
		st->phase = LR_MIGRATE_COMMITTING;
		r = lr_migrate_state_save("/", st);
		if (r < 0)
			return r;
		r = lr_migrate_commit(st, "/boot");
		if (r < 0) {
			lr_migrate_set_error(st, "the new root is up, but making it the default failed (%s); "
					     "it is retried at the next boot", strerror(-r));
			lr_migrate_state_save("/", st);
			return r;
		}
		free(st->error);
		st->error = NULL;
		st->phase = st->keep_source ? LR_MIGRATE_DONE : LR_MIGRATE_ERASING;
		r = lr_migrate_state_save("/", st);
		if (r < 0)
			return r;
		lr_info("the new root on %s is now the default", st->volumes[0].device);
		if (st->keep_source)
			lr_warn("the old root %s is kept (--keep-source): a plaintext copy of the system stays on it",
				st->source);
	}
	if (st->phase == LR_MIGRATE_ERASING) {
		r = erase_source(st);
		if (r < 0) {
			lr_migrate_set_error(st, "erasing the old root %s failed (%s): it resumes at the next boot",
					     st->source, strerror(-r));
			lr_migrate_state_save("/", st);
			return r;
		}
		free(st->error);
		st->error = NULL;
		st->phase = LR_MIGRATE_DONE;
		r = lr_migrate_state_save("/", st);
		if (r < 0)
			return r;
		lr_info("the old root %s is erased", st->source);
	}
	return 0;
}

static int on_old_root(struct lr_migrate_state *st, bool aborting)
{
	char *record = NULL;
	int r = 0;

	switch (st->phase) {
	case LR_MIGRATE_TRIAL:
		r = lr_migrate_abandon_trial(st, &record);
		st->phase = LR_MIGRATE_FAILED;
		if (aborting)
			lr_migrate_set_error(st, "given up (lockroot migrate --abort); the old root stays in use");
		else
			lr_migrate_set_error(st, "the trial boot of the new root on %s did not come up, so the board "
					     "is back on the old root: %s", st->volumes[0].device,
					     record ? record : "no record from the initramfs (the failure happened "
					     "before or after unlocking: see the boot console)");
		free(record);
		break;
	case LR_MIGRATE_PREPARING:
	case LR_MIGRATE_COPYING:
		st->phase = LR_MIGRATE_INTERRUPTED;
		lr_migrate_set_error(st, "interrupted while %s (power cut?); nothing was switched: run lockroot "
				     "migrate again", st->phase == LR_MIGRATE_PREPARING ? "preparing" : "copying");
		break;
	default:
		if (aborting)
			return lr_error_code(-EINVAL, "no migration is waiting for its trial boot (phase %s)",
					     lr_migrate_phase_name(st->phase));
		return 0;
	}
	if (st->phase == LR_MIGRATE_FAILED && !aborting)
		lr_error("%s", st->error);
	return r < 0 ? r : lr_migrate_state_save("/", st);
}

static int finish(bool aborting)
{
	struct lr_migrate_state st;
	struct lr_rootdev rd = { 0 };
	int r;

	r = lr_migrate_state_load("/", &st);
	if (r == -ENOENT) {
		if (aborting)
			return lr_error_code(-ENOENT, "no migration to give up");
		return 0;
	}
	if (r < 0)
		return r;
	r = lr_rootdev_find(&rd);
	if (r < 0)
		goto out;
	if (rd.dm_name && st.n_volumes && strcmp(rd.dm_name, st.volumes[0].name) == 0) {
		if (aborting) {
			r = lr_error_code(-EINVAL, "the new root is running: nothing to give up");
			goto out;
		}
		r = on_new_root(&st);
	} else {
		r = on_old_root(&st, aborting);
	}
out:
	lr_rootdev_done(&rd);
	lr_migrate_state_done(&st);
	return r;
}

void cli_print_migration(void)
{
	struct lr_migrate_state st;

	lr_log_demote(1);
	if (lr_migrate_state_load("/", &st) == 0) {
		printf("\n");
		print_state(&st);
		lr_migrate_state_done(&st);
	}
	lr_log_demote(-1);
}

static int show_status(void)
{
	struct lr_migrate_state st;
	int r = lr_migrate_state_load("/", &st);

	if (r == -ENOENT) {
		if (cli.json)
			puts("{}");
		else
			printf("No migration.\n");
		return 0;
	}
	if (r < 0)
		return r;
	print_state(&st);
	lr_migrate_state_done(&st);
	return 0;
}

int cmd_migrate(int argc, char **argv)
{
	struct migrate m = { .target = "/dev/sda", .name = "cryptroot", .hsm_spec = "tpm2", .recovery = true };
	struct lr_migrate_state prev = { 0 };
	enum mode mode = MODE_MIGRATE;
	int r;

	r = parse(&m, &mode, argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	if (mode == MODE_STATUS)
		return lr_exit_code(show_status());
	if (mode == MODE_FINISH || mode == MODE_ABORT)
		return lr_exit_code(finish(mode == MODE_ABORT));
	if (!m.cipher)
		m.cipher = lr_cipher_default();
	r = check_source(&m);
	if (r == 0)
		r = check_target(&m);
	if (r == 0)
		r = check_state(&m, &prev);
	if (r == 0)
		r = migrate_check_tools();
	if (r == 0)
		r = check_hsm(&m);
	if (r == 0)
		r = check_sizes(&m);
	if (r == 0)
		r = plan_partitions(&m, &prev);
	if (r == 0)
		r = plan_state(&m);
	if (r == 0)
		r = plan_boot(&m);
	if (r < 0)
		goto out;
	print_plan(&m);
	if (m.dry_run)
		goto out;
	if (!m.yes && !cli_confirm("migrate", "Go ahead? Type yes:", "yes")) {
		r = -ECANCELED;
		goto out;
	}
	r = act(&m);
out:
	lr_migrate_state_done(&prev);
	lr_migrate_state_done(&m.st);
	lr_bootcfg_info_done(&m.boot);
	lr_hsm_done(&m.hsm);
	lr_secret_free(m.pin);
	return r < 0 ? lr_exit_code(r) : 0;
}
