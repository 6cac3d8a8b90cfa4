/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot image IN -o OUT: encrypt the root partition of a Raspberry-Pi-style disk image once,
 * on a workstation, for a fleet; lockroot provision --boot: give each unit its own key at its
 * first boot (lib/provision.h).
 *
 * image: parse -> inspect IN (partitions, ext4 root, FAT boot) -> plan (printed) -> copy IN to
 * OUT -> in a private mount namespace: the root partition of OUT on a loop device, mounted;
 * the boot partition's files copied in with mtools (no vfat driver needed) -> crypttab, fstab,
 * cmdline.txt (+ lockroot.provision=ROOT,BOOT), config.txt; the provisioning settings; with
 * --unique-volume-key the online re-encryption service -> initramfs rebuilt in a chroot (through
 * qemu-user binfmt for a foreign architecture) -> changed boot files written back with mtools
 * -> the root unmounted, shrunk, encrypted offline by the conversion engine (lib/convert.h)
 * with a provisioning keyslot instead of an HSM keyslot -> the provisioning key on the boot
 * partition (or --key-out FILE). OUT is removed when anything fails; IN is only read.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <linux/loop.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bootcfg.h"
#include "cli.h"
#include "convert.h"
#include "migrate.h"
#include "partition.h"
#include "progress.h"
#include "provision.h"

#define KEYSCRIPT "/usr/lib/lockroot/keyscript"
#define CRYPTTAB_OPTIONS "luks,discard,keyscript=" KEYSCRIPT ",initramfs"
#define CMDLINE_KEY "lockroot.provision="
#define INITRAMFS_CMD "update-initramfs -u -k all"
#define CONVERT_STATE "/var/lib/lockroot/convert.json"
#define CONVERT_SERVICE "lockroot-convert.service"
#define DEFAULT_RECORD "LABEL=LRRECORDS"
#define MiB (UINT64_C(1) << 20)

static void help(void)
{
	printf("Usage: lockroot image IN.img -o OUT.img [OPTIONS]\n\n"
	       "Encrypt the root partition of a disk image once (LUKS2, offline), for a fleet. Each unit\n"
	       "written from OUT.img enrolls its own HSM, bound to itself, at its first boot, writes its\n"
	       "recovery key to the provisioning record device, and forgets the one-time provisioning key.\n\n"
	       "  -o, --output OUT       the encrypted image to create (IN is only read)\n"
	       "  --root-part N          the root partition (default: the ext4 partition after the boot one)\n"
	       "  --boot-part N          the FAT boot partition (default: the first FAT partition)\n"
	       "  --cipher C             default aes-xts-plain64; xchacha12,aes-adiantum-plain64 for boards\n"
	       "                         without AES instructions (Pi 3 and older, Pi Zero)\n"
	       "  --unique-volume-key    each unit re-encrypts itself online to a volume key of its own\n"
	       "                         (without: the units of one image share one volume key)\n"
	       "  --hsm SPEC             the units' HSM: tpm2[:TCTI] (default) or pkcs11:URI\n"
	       "  --bind LIST, --pcrs LIST, --pin-file F   as for lockroot enroll, applied at first boot\n"
	       "  --record SPEC          where each unit writes its provisioning record (serial, recovery\n"
	       "                         key): a device or partition, LABEL=, UUID=, PARTUUID= (default %s)\n"
	       "  --key-out FILE         write the provisioning key to FILE instead of the boot partition\n"
	       "                         (put it on the record device as %s)\n"
	       "  --name NAME            /dev/mapper/NAME of the root (default cryptroot)\n"
	       "  --recovery-pbkdf-memory KIB, --recovery-pbkdf-iterations N   the units' recovery keyslots\n"
	       "  --dry-run              print the plan, write nothing\n"
	       "  -y, --yes              do not ask before writing\n"
	       "  --json                 JSON events on stdout (plan, progress, ready)\n",
	       DEFAULT_RECORD, LR_PROVISION_KEY_FILE);
}

enum { OPT_ROOT_PART = 256, OPT_BOOT_PART, OPT_CIPHER, OPT_UNIQUE, OPT_HSM, OPT_BIND, OPT_PCRS, OPT_PIN_FILE,
       OPT_RECORD, OPT_KEY_OUT, OPT_NAME, OPT_DRY_RUN, OPT_JSON, OPT_RMEM, OPT_RITER };

static const struct option options[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "root-part", required_argument, NULL, OPT_ROOT_PART },
	{ "boot-part", required_argument, NULL, OPT_BOOT_PART },
	{ "cipher", required_argument, NULL, OPT_CIPHER },
	{ "unique-volume-key", no_argument, NULL, OPT_UNIQUE },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "record", required_argument, NULL, OPT_RECORD },
	{ "key-out", required_argument, NULL, OPT_KEY_OUT },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "recovery-pbkdf-memory", required_argument, NULL, OPT_RMEM },
	{ "recovery-pbkdf-iterations", required_argument, NULL, OPT_RITER },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct image {
	const char *in, *out, *cipher, *hsm, *bind, *pcrs, *pin_file, *record, *key_out, *name;
	uint32_t root_part, boot_part, rmem, riter;
	bool unique, dry_run, yes;
	/* found */
	struct lr_disk_info disk;
	const struct lr_disk_part *root, *boot;
	char work[PATH_MAX];              /* temporary directory */
	char mnt[PATH_MAX];               /* the image's root, mounted */
	char boot_rel[128];               /* where the image mounts its boot partition ("/boot/firmware") */
	char boot_orig[PATH_MAX];         /* the boot partition's files as they were */
	char loop[64];
	int loop_fd;
	struct lr_secret *key;
	bool out_created;
};

static void path_join(char *out, size_t len, const char *a, const char *b)
{
	int n = snprintf(out, len, "%s/%s", a, b[0] == '/' ? b + 1 : b);

	if (n < 0 || (size_t)n >= len)
		*out = '\0'; /* an empty path: every use of it fails */
}

static const char *size_str(uint64_t b, char *buf, size_t len)
{
	lr_format_size(b, buf, len);
	return buf;
}

/* ---- loop devices, mtools ---- */

/* A loop device over [offset, offset+size) of path, cleared when its last user closes it. */
static int loop_attach(const char *path, uint64_t offset, uint64_t size, bool ro, char *dev, size_t len,
		       int *dev_fd)
{
	struct loop_config cfg = { 0 };
	int ctl, fd, file, n, r;

	file = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (file < 0)
		return lr_error_code(-errno, "cannot open %s: %s", path, strerror(errno));
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		r = -errno;
		close(file);
		return lr_error_code(r, "cannot open /dev/loop-control: %s", strerror(-r));
	}
	for (int tries = 0;; tries++) {
		n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			r = lr_error_code(-errno, "no free loop device: %s", strerror(errno));
			break;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		fd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (fd < 0) {
			r = lr_error_code(-errno, "cannot open %s: %s", dev, strerror(errno));
			break;
		}
		cfg.fd = (uint32_t)file;
		cfg.info.lo_offset = offset;
		cfg.info.lo_sizelimit = size;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (ro ? LO_FLAGS_READ_ONLY : 0);
		if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
			*dev_fd = fd;
			r = 0;
			break;
		}
		r = -errno;
		close(fd);
		if (r != -EBUSY || tries > 8) {
			r = lr_error_code(r, "cannot set up %s over %s: %s", dev, path, strerror(-r));
			break;
		}
	}
	close(ctl);
	close(file);
	return r;
}

static void mtools_target(char *out, size_t len, const struct image *im)
{
	snprintf(out, len, "%s@@%llu", im->out, (unsigned long long)im->boot->start);
}

/* The boot partition's files into dir (mtools: no vfat driver needed on the workstation). */
static int boot_extract(const struct image *im, const char *dir)
{
	char target[PATH_MAX + 32], dest[PATH_MAX + 2];
	char *argv[] = { (char *)"mcopy", (char *)"-s", (char *)"-p", (char *)"-n", (char *)"-Q", (char *)"-i", target,
			 (char *)"::/*", dest, NULL };

	mtools_target(target, sizeof(target), im);
	snprintf(dest, sizeof(dest), "%s/", dir);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", dir, strerror(errno));
	return cli_run_ok(argv, true) < 0 ? lr_error_code(-EIO, "cannot read the boot partition of %s (mcopy)", im->out) : 0;
}

static const struct image *sync_im;
static const char *sync_dir;
static int sync_err;

static bool same_file(const char *a, const char *b)
{
	_cleanup_free_ char *x = NULL, *y = NULL;
	size_t nx = 0, ny = 0;

	if (lr_read_file(a, 1 << 30, &x, &nx) < 0 || lr_read_file(b, 1 << 30, &y, &ny) < 0)
		return false;
	return nx == ny && memcmp(x, y, nx) == 0;
}

static int sync_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	char target[PATH_MAX + 32], orig[PATH_MAX * 2], dst[PATH_MAX + 4];
	const char *rel = path + strlen(sync_dir);
	(void)st;
	(void)ftw;

	if (!*rel)
		return 0;
	mtools_target(target, sizeof(target), sync_im);
	snprintf(dst, sizeof(dst), "::%s", rel);
	snprintf(orig, sizeof(orig), "%s%s", sync_im->boot_orig, rel);
	if (type == FTW_D) {
		char *argv[] = { (char *)"mmd", (char *)"-i", target, dst, NULL };

		if (access(orig, F_OK) < 0 && cli_run_ok(argv, true) < 0)
			sync_err = -EIO;
		return 0;
	}
	if (type != FTW_F || strstr(rel, LR_BOOTCFG_BACKUP_SUFFIX) || same_file(path, orig))
		return 0;
	{
		char *argv[] = { (char *)"mcopy", (char *)"-o", (char *)"-n", (char *)"-Q", (char *)"-i", target,
				 (char *)path, dst, NULL };

		lr_info("boot partition: %s", rel + 1);
		if (cli_run_ok(argv, true) < 0) {
			sync_err = lr_error_code(-EIO, "cannot write %s to the boot partition (mcopy)", rel + 1);
			return 1;
		}
	}
	return 0;
}

/* Files new or changed in dir (against boot_orig) written to the boot partition. */
static int boot_write_back(const struct image *im, const char *dir)
{
	sync_im = im;
	sync_dir = dir;
	sync_err = 0;
	if (nftw(dir, sync_one, 16, FTW_PHYS) < 0)
		return lr_error_code(-errno, "cannot walk %s: %s", dir, strerror(errno));
	return sync_err;
}

/* ---- inspect and plan ---- */

static bool is_fat_type(const char *t)
{
	static const char *const fat[] = { "b", "c", "e", "ef", "6", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
					   "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" };

	for (size_t i = 0; i < LR_ELEMENTSOF(fat); i++)
		if (strcasecmp(t, fat[i]) == 0)
			return true;
	return false;
}

static const struct lr_disk_part *part_no(const struct lr_disk_info *d, uint32_t n)
{
	for (size_t i = 0; i < d->n_parts; i++)
		if (d->parts[i].partno == n)
			return &d->parts[i];
	return NULL;
}

static int inspect(struct image *im)
{
	struct stat st;
	int r;

	if (stat(im->in, &st) < 0)
		return lr_error_code(-errno, "%s: %s", im->in, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return lr_error_code(-EINVAL, "%s is not an image file (write the image to cards afterwards)", im->in);
	if (access(im->out, F_OK) == 0)
		return lr_error_code(-EEXIST, "%s exists: choose another name or remove it; nothing was written", im->out);
	r = lr_disk_inspect(im->in, &im->disk);
	if (r < 0)
		return r;
	if (im->disk.label == LR_LABEL_NONE)
		return lr_error_code(-EINVAL, "%s has no partition table", im->in);
	if (im->boot_part)
		im->boot = part_no(&im->disk, im->boot_part);
	else
		for (size_t i = 0; i < im->disk.n_parts && !im->boot; i++)
			if (is_fat_type(im->disk.parts[i].type))
				im->boot = &im->disk.parts[i];
	if (!im->boot)
		return lr_error_code(-ENOENT, im->boot_part ? "%s has no partition %u" :
				     "%s has no FAT boot partition: name it with --boot-part N", im->in, im->boot_part);
	if (im->root_part)
		im->root = part_no(&im->disk, im->root_part);
	else
		for (size_t i = 0; i < im->disk.n_parts && !im->root; i++)
			if (im->disk.parts[i].partno > im->boot->partno && !is_fat_type(im->disk.parts[i].type))
				im->root = &im->disk.parts[i];
	if (!im->root)
		return lr_error_code(-ENOENT, im->root_part ? "%s has no partition %u" :
				     "%s has no root partition after the boot partition: name it with --root-part N",
				     im->in, im->root_part);
	if (im->root == im->boot)
		return lr_error_code(-EINVAL, "the root and the boot partition are the same");
	if (!*im->root->uuid || !*im->boot->uuid)
		return lr_error_code(-EINVAL, "%s has partitions without a PARTUUID (no disk identifier): the units "
				     "could not find them", im->in);
	return 0;
}

static int check_root_fs(struct image *im, struct lr_convert_info *info)
{
	int r = lr_convert_examine(im->loop, NULL, info);

	if (r < 0)
		return r;
	if (info->state == LR_CONVERT_DONE || info->state == LR_CONVERT_ENCRYPTING)
		return lr_error_code(-EEXIST, "partition %u of %s is LUKS2 already", im->root->partno, im->in);
	if (info->state != LR_CONVERT_PLAIN && info->state != LR_CONVERT_SHRUNK)
		return lr_error_code(-EMEDIUMTYPE, "partition %u of %s is not an ext4 file system", im->root->partno,
				     im->in);
	if (info->part_size < 4 * LR_CONVERT_REDUCE)
		return lr_error_code(-ENOSPC, "partition %u of %s is too small", im->root->partno, im->in);
	return 0;
}

/* Whether this workstation's libcryptsetup can encrypt with the cipher (Adiantum needs the
 * kernel's through AF_ALG): a throw-away header file made as the real one will be. */
static int check_cipher(const struct image *im)
{
	_cleanup_secret_ struct lr_secret *key = NULL;
	struct lr_enroll_result res = { 0 };
	char path[PATH_MAX];
	int fd, r;

	snprintf(path, sizeof(path), "%s/lockroot-image-check.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		return lr_error_code(-errno, "cannot create a temporary file: %s", strerror(errno));
	close(fd);
	unlink(path); /* lr_format creates it (O_EXCL) */
	r = lr_secret_random(32, &key);
	if (r == 0) {
		struct lr_format_params f = { .device = im->loop, .cipher = im->cipher, .passphrase = key,
					      .provisioning = true, .header = path,
					      .data_offset = LR_CONVERT_DATA_OFFSET };

		lr_log_demote(1);
		r = lr_format(&f, &res);
		lr_log_demote(-1);
		lr_enroll_result_done(&res);
	}
	unlink(path);
	if (r < 0)
		return lr_error_code(-ENOTSUP, "this machine cannot encrypt with %s (libcryptsetup: %s); Adiantum "
				     "needs the kernel's crypto API (AF_ALG) and its adiantum module. Nothing was "
				     "written", im->cipher, strerror(-r));
	return 0;
}

static void print_plan(const struct image *im, const struct lr_convert_info *info)
{
	char a[32], b[32];

	if (cli.json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "input", json_object_new_string(im->in));
		json_object_object_add(o, "output", json_object_new_string(im->out));
		json_object_object_add(o, "root_part", json_object_new_int((int)im->root->partno));
		json_object_object_add(o, "boot_part", json_object_new_int((int)im->boot->partno));
		json_object_object_add(o, "root_partuuid", json_object_new_string(im->root->uuid));
		json_object_object_add(o, "part_size", json_object_new_int64((int64_t)info->part_size));
		json_object_object_add(o, "fs_size", json_object_new_int64((int64_t)info->fs_size));
		json_object_object_add(o, "cipher", json_object_new_string(im->cipher));
		json_object_object_add(o, "hsm", json_object_new_string(im->hsm));
		json_object_object_add(o, "record", json_object_new_string(im->record));
		json_object_object_add(o, "unique_volume_key", json_object_new_boolean(im->unique));
		json_object_object_add(o, "key", json_object_new_string(im->key_out ? im->key_out : "boot partition"));
		progress_event("plan", o);
		return;
	}
	printf("Plan: a fleet image %s from %s:\n", im->out, im->in);
	printf("  - copy %s (%s) to %s\n", im->in, size_str(im->disk.size, a, sizeof(a)), im->out);
	printf("  - root partition %u (%s, ext4 of %s): crypttab, fstab, cmdline.txt, config.txt for "
	       "/dev/mapper/%s, initramfs rebuilt in the image\n", im->root->partno,
	       size_str(info->part_size, a, sizeof(a)), size_str(info->fs_size, b, sizeof(b)), im->name);
	printf("  - shrink its file system by %llu MiB, encrypt it (LUKS2, %s) with a one-time provisioning key\n",
	       (unsigned long long)(LR_CONVERT_REDUCE / MiB), im->cipher);
	if (im->key_out)
		printf("  - the provisioning key goes to %s: put it on the record device as %s\n", im->key_out,
		       LR_PROVISION_KEY_FILE);
	else
		printf("  - the provisioning key goes on the boot partition (%s): keep %s as secret as the data\n",
		       LR_PROVISION_KEY_FILE, im->out);
	printf("  - first boot of each unit: enroll its %s bound to it, write its recovery key to %s, remove the "
	       "provisioning key%s\n", im->hsm, im->record,
	       im->unique ? ", then re-encrypt online to a volume key of its own" : "");
	if (!im->unique)
		printf("    (all units of this image share one volume key: see --unique-volume-key)\n");
}

/* ---- configure the image's root ---- */

static int bind_mounts(const char *root)
{
	static const char *const dirs[] = { "/dev", "/proc", "/sys" };
	char path[PATH_MAX];

	for (size_t i = 0; i < LR_ELEMENTSOF(dirs); i++) {
		path_join(path, sizeof(path), root, dirs[i]);
		if (mount(dirs[i], path, NULL, MS_BIND | MS_REC, NULL) < 0)
			return lr_error_code(-errno, "cannot bind %s into the image: %s", dirs[i], strerror(errno));
	}
	return 0;
}

static void unbind_mounts(const char *root)
{
	static const char *const dirs[] = { "/sys", "/proc", "/dev" };
	char path[PATH_MAX];

	for (size_t i = 0; i < LR_ELEMENTSOF(dirs); i++) {
		path_join(path, sizeof(path), root, dirs[i]);
		umount2(path, MNT_DETACH);
	}
}

/* Where the image mounts its boot partition: its fstab's line for the boot PARTUUID (or
 * vfat), else /boot/firmware when that directory exists, else /boot. */
static void find_boot_dir(struct image *im)
{
	char path[PATH_MAX];
	_cleanup_free_ char *tab = NULL;
	struct stat st;

	snprintf(im->boot_rel, sizeof(im->boot_rel), "/boot");
	path_join(path, sizeof(path), im->mnt, "/boot/firmware");
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(im->boot_rel, sizeof(im->boot_rel), "/boot/firmware");
	path_join(path, sizeof(path), im->mnt, "/etc/fstab");
	if (lr_read_file(path, 1 << 20, &tab, NULL) < 0)
		return;
	for (char *save = NULL, *l = strtok_r(tab, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char src[256], mp[128], type[32];

		if (l[0] == '#' || sscanf(l, "%255s %127s %31s", src, mp, type) != 3)
			continue;
		if ((strncmp(src, "PARTUUID=", 9) == 0 && strcasecmp(src + 9, im->boot->uuid) == 0) ||
		    strcmp(type, "vfat") == 0) {
			snprintf(im->boot_rel, sizeof(im->boot_rel), "%s", mp);
			return;
		}
	}
}

static int write_json(const char *path, struct json_object *o, unsigned mode)
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	int r = lr_write_file_atomic(path, text, strlen(text), mode);

	json_object_put(o);
	return r;
}

static int configure(struct image *im, const char *boot_dir)
{
	static const char *const want[] = { "sbin/lockroot", "init-premount/lockroot-convert", "cryptroot/crypttab" };
	struct lr_bootcfg_change *changes = NULL;
	size_t n = 0;
	char source[96], path[PATH_MAX];
	struct lr_bootcfg cfg = { .root = im->mnt, .name = im->name, .source = source,
				  .crypttab_options = CRYPTTAB_OPTIONS };
	struct lr_bootcfg_info info = { 0 };
	struct json_object *o;
	bool cmdline_done = false;
	int r;

	path_join(path, sizeof(path), im->mnt, "/usr/sbin/lockroot");
	if (access(path, X_OK) < 0)
		return lr_error_code(-ENOENT, "lockroot is not installed in the image (no /usr/sbin/lockroot): install "
				     "its package in the image first");
	snprintf(source, sizeof(source), "PARTUUID=%s", im->root->uuid);
	r = lr_bootcfg_inspect(im->mnt, &info);
	if (r < 0)
		return r;
	if (!info.auto_initramfs)
		cfg.initramfs = info.initramfs ? info.initramfs : "initrd.img";
	r = lr_bootcfg_plan(&cfg, &changes, &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		char *text;
		size_t len;

		if (strcmp(changes[i].path, info.cmdline_path))
			continue;
		cli_drop_word(changes[i].new_text, CMDLINE_KEY);
		len = strcspn(changes[i].new_text, "\n");
		if (asprintf(&text, "%.*s " CMDLINE_KEY "PARTUUID=%s,PARTUUID=%s%s", (int)len, changes[i].new_text,
			     im->root->uuid, im->boot->uuid, changes[i].new_text + len) < 0) {
			r = -ENOMEM;
			break;
		}
		free(changes[i].new_text);
		changes[i].new_text = text;
		cmdline_done = true;
	}
	if (r == 0 && !cmdline_done)
		r = lr_error_code(-EINVAL, "the image's kernel command line (%s) would not change: is it encrypted "
				  "already?", info.cmdline_path ? info.cmdline_path : "cmdline.txt");
	if (r == 0) {
		cli_print_changes(changes, n);
		r = lr_bootcfg_apply(changes, n);
	}
	lr_bootcfg_changes_free(changes, n);
	lr_bootcfg_info_done(&info);
	if (r < 0)
		return r;
	/* what the first boot needs, next to cmdline.txt */
	o = json_object_new_object();
	json_object_object_add(o, "version", json_object_new_int(1));
	json_object_object_add(o, "hsm", json_object_new_string(im->hsm));
	if (im->bind)
		json_object_object_add(o, "bind", json_object_new_string(im->bind));
	if (im->pcrs)
		json_object_object_add(o, "pcrs", json_object_new_string(im->pcrs));
	if (im->pin_file)
		json_object_object_add(o, "pin_file", json_object_new_string(im->pin_file));
	json_object_object_add(o, "record", json_object_new_string(im->record));
	json_object_object_add(o, "unique_volume_key", json_object_new_boolean(im->unique));
	json_object_object_add(o, "name", json_object_new_string(im->name));
	if (im->riter)
		json_object_object_add(o, "recovery_pbkdf_iterations", json_object_new_int((int)im->riter));
	if (im->rmem)
		json_object_object_add(o, "recovery_pbkdf_memory", json_object_new_int((int)im->rmem));
	path_join(path, sizeof(path), boot_dir, LR_PROVISION_CONF_FILE);
	r = write_json(path, o, 0644);
	if (r < 0)
		return r;
	if (im->unique) {
		/* lockroot-convert.service re-encrypts online, as for an in-place conversion */
		char dir[PATH_MAX];

		o = json_object_new_object();
		json_object_object_add(o, "version", json_object_new_int(1));
		json_object_object_add(o, "kind", json_object_new_string("rekey"));
		json_object_object_add(o, "phase", json_object_new_string("prepared"));
		snprintf(source, sizeof(source), "PARTUUID=%s", im->root->uuid);
		json_object_object_add(o, "device", json_object_new_string(source));
		json_object_object_add(o, "name", json_object_new_string(im->name));
		json_object_object_add(o, "root_partuuid", json_object_new_string(im->root->uuid));
		json_object_object_add(o, "boot_partuuid", json_object_new_string(im->boot->uuid));
		json_object_object_add(o, "cipher", json_object_new_string(im->cipher));
		json_object_object_add(o, "hsm", json_object_new_string(im->hsm));
		json_object_object_add(o, "started", json_object_new_int64((int64_t)time(NULL)));
		path_join(dir, sizeof(dir), im->mnt, "/var/lib/lockroot");
		mkdir(dir, 0700);
		path_join(path, sizeof(path), im->mnt, CONVERT_STATE);
		r = write_json(path, o, 0600);
		if (r == 0)
			r = cli_enable_unit(im->mnt, CONVERT_SERVICE);
		if (r < 0)
			return r;
	}
	lr_info("rebuilding the image's initramfs (%s, in a chroot)", INITRAMFS_CMD);
	{
		/* the image's own programs must run here: another architecture's need qemu-user */
		char *argv[] = { (char *)"chroot", im->mnt, (char *)"/bin/true", NULL };

		if (cli_run_ok(argv, true) < 0)
			return lr_error_code(-ENOEXEC, "the image's programs do not run on this machine: for an "
					     "image of another architecture install qemu-user-static and "
					     "binfmt-support");
	}
	r = bind_mounts(im->mnt);
	if (r == 0)
		r = cli_initramfs_rebuild(im->mnt, INITRAMFS_CMD);
	unbind_mounts(im->mnt);
	if (r == 0)
		r = cli_initramfs_verify(im->mnt, want, LR_ELEMENTSOF(want));
	return r;
}

/* The initramfs files on the boot partition: each initrd.img-VERSION there := /boot's; the
 * file config.txt names := the newest /boot/initrd.img-*. */
static int boot_initramfs_copy(struct image *im, const char *boot_dir)
{
	_cleanup_free_ char *newest = NULL;
	struct lr_bootcfg_info info = { 0 };
	char pattern[PATH_MAX], dst[PATH_MAX];
	glob_t g = { 0 };
	int r = 0;

	path_join(pattern, sizeof(pattern), im->mnt, "/boot/initrd.img-*");
	if (glob(pattern, 0, NULL, &g) != 0)
		return lr_error_code(-ENOENT, "the image has no /boot/initrd.img-*");
	for (size_t i = 0; i < g.gl_pathc && r == 0; i++) {
		const char *base = strrchr(g.gl_pathv[i], '/') + 1;

		if (strstr(base, ".lockroot-") || strstr(base, ".dpkg-") || strstr(base, ".bak"))
			continue;
		free(newest);
		newest = strdup(g.gl_pathv[i]); /* glob sorts: the last is the newest version */
		path_join(dst, sizeof(dst), boot_dir, base);
		if (access(dst, F_OK) == 0)
			r = lr_copy_file_atomic(g.gl_pathv[i], dst);
	}
	globfree(&g);
	if (r == 0 && lr_bootcfg_inspect(im->mnt, &info) == 0 && !info.auto_initramfs && newest) {
		const char *name = info.initramfs ? info.initramfs : "initrd.img";

		if (!strchr(name, '/')) {
			path_join(dst, sizeof(dst), boot_dir, name);
			r = lr_copy_file_atomic(newest, dst);
		}
	}
	lr_bootcfg_info_done(&info);
	return r;
}

/* ---- encrypt ---- */

struct enc_progress {
	struct progress p;
};

static int enc_progress(uint64_t done, uint64_t total, void *userdata)
{
	struct enc_progress *e = userdata;

	e->p.total = total;
	progress_update(&e->p, done, -1);
	return 0;
}

static int encrypt_root(struct image *im)
{
	struct lr_format_params f = {
		.device = im->loop, .cipher = im->cipher, .passphrase = im->key, .provisioning = true,
		.data_offset = LR_CONVERT_DATA_OFFSET,
	};
	struct lr_enroll_result res = { 0 };
	struct enc_progress e = { 0 };
	struct lr_convert_info info;
	char hdr[PATH_MAX], rec[PATH_MAX];
	uint64_t fs_size = 0;
	struct timespec t0, t1;
	int r;

	path_join(hdr, sizeof(hdr), im->work, "template.hdr");
	path_join(rec, sizeof(rec), im->work, "convert.rec");
	f.header = hdr;
	lr_info("shrinking the root file system by %llu MiB", (unsigned long long)(LR_CONVERT_REDUCE / MiB));
	r = lr_convert_shrink(im->loop, &fs_size, NULL, NULL);
	if (r == -ENOSPC)
		return lr_error_code(r, "the root file system of %s is too full to give up %llu MiB", im->in,
				     (unsigned long long)(LR_CONVERT_REDUCE / MiB));
	if (r < 0)
		return r;
	r = lr_format(&f, &res);
	lr_enroll_result_done(&res);
	if (r == 0)
		r = lr_provision_mark(hdr, im->unique);
	if (r == 0)
		r = lr_convert_init(im->loop, hdr, rec, im->key);
	if (access(hdr, F_OK) == 0)
		lr_convert_wipe_file(hdr);
	if (r < 0)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	progress_start(&e.p, "encrypt", 0);
	r = lr_convert_run(im->loop, NULL, im->key, enc_progress, &e);
	progress_end(&e.p, r == 0);
	unlink(rec);
	if (r < 0)
		return r;
	r = lr_convert_examine(im->loop, NULL, &info);
	if (r == 0 && info.state != LR_CONVERT_DONE)
		r = lr_error_code(-EIO, "the root partition is in state %s after the encryption",
				  lr_convert_state_name(info.state));
	/* on the disk, not in the page cache: the throughput includes the writes */
	if (r == 0 && fsync(im->loop_fd) < 0)
		r = lr_error_code(-errno, "cannot sync the root partition: %s", strerror(errno));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r == 0) {
		double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		uint64_t bytes = info.part_size - LR_CONVERT_DATA_OFFSET;

		lr_info("encrypted %s in %.2f s (%.0f MiB/s)", size_str(bytes, hdr, 32), s,
			s > 0 ? (double)bytes / (double)MiB / s : 0.0);
	}
	return r;
}

static int write_key(struct image *im, const char *boot_dir)
{
	char path[PATH_MAX];
	int fd, r = 0;

	if (!im->key_out) {
		path_join(path, sizeof(path), boot_dir, LR_PROVISION_KEY_FILE);
		return lr_write_file_atomic(path, im->key->data, im->key->len, 0600);
	}
	fd = open(im->key_out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return lr_error_code(-errno, "cannot create %s: %s", im->key_out, strerror(errno));
	if (write(fd, im->key->data, im->key->len) != (ssize_t)im->key->len || fsync(fd) < 0)
		r = lr_error_code(-EIO, "cannot write %s", im->key_out);
	close(fd);
	return r;
}

static int copy_image(const struct image *im)
{
	char *argv[] = { (char *)"cp", (char *)"--sparse=always", (char *)"--reflink=auto", (char *)im->in,
			 (char *)im->out, NULL };

	lr_info("copying %s to %s", im->in, im->out);
	return cli_run_ok(argv, false) < 0 ? lr_error_code(-EIO, "cannot copy %s to %s", im->in, im->out) : 0;
}

static int rm_tree(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP) {
		rmdir(path);
		return 0;
	}
	if (strstr(path, "/" LR_PROVISION_KEY_FILE))
		lr_convert_wipe_file(path);
	else
		unlink(path);
	return 0;
}

static int act(struct image *im)
{
	char boot_dir[PATH_MAX];
	int r;

	r = copy_image(im);
	if (r < 0)
		return r;
	im->out_created = true;
	r = loop_attach(im->out, im->root->start, im->root->size, false, im->loop, sizeof(im->loop), &im->loop_fd);
	if (r < 0)
		return r;
	path_join(im->mnt, sizeof(im->mnt), im->work, "root");
	path_join(im->boot_orig, sizeof(im->boot_orig), im->work, "boot-orig");
	mkdir(im->mnt, 0755);
	if (mount(im->loop, im->mnt, "ext4", 0, NULL) < 0)
		return lr_error_code(-errno, "cannot mount the root partition of %s: %s", im->out, strerror(errno));
	find_boot_dir(im);
	path_join(boot_dir, sizeof(boot_dir), im->mnt, im->boot_rel);
	r = boot_extract(im, im->boot_orig);
	if (r == 0) {
		/* the boot files inside the root, where the image's tools expect them */
		mkdir(boot_dir, 0755);
		r = boot_extract(im, boot_dir);
	}
	if (r == 0)
		r = configure(im, boot_dir);
	if (r == 0)
		r = boot_initramfs_copy(im, boot_dir);
	if (r == 0 && !im->key_out)
		r = write_key(im, boot_dir);
	if (r == 0)
		r = boot_write_back(im, boot_dir);
	/* the boot partition's files out of the root again (it was an empty mount point) */
	nftw(boot_dir, rm_tree, 16, FTW_DEPTH | FTW_PHYS);
	mkdir(boot_dir, 0755);
	if (umount(im->mnt) < 0 && r == 0)
		r = lr_error_code(-errno, "cannot unmount the image's root: %s", strerror(errno));
	if (r == 0)
		r = encrypt_root(im);
	if (r == 0 && im->key_out)
		r = write_key(im, NULL);
	if (r == 0) {
		int fd = open(im->out, O_RDWR | O_CLOEXEC);

		if (fd < 0 || fsync(fd) < 0)
			r = lr_error_code(-errno, "cannot sync %s: %s", im->out, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	return r;
}

int cmd_image(int argc, char **argv)
{
	struct image im = { .name = "cryptroot", .hsm = "tpm2", .record = DEFAULT_RECORD, .loop_fd = -1 };
	struct lr_convert_info info;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:yh", options, NULL)) != -1) {
		switch (c) {
		case 'o': im.out = optarg; break;
		case OPT_ROOT_PART:
			if ((r = cli_parse_uint("image", "--root-part", optarg, &im.root_part)))
				return r;
			break;
		case OPT_BOOT_PART:
			if ((r = cli_parse_uint("image", "--boot-part", optarg, &im.boot_part)))
				return r;
			break;
		case OPT_CIPHER: im.cipher = optarg; break;
		case OPT_UNIQUE: im.unique = true; break;
		case OPT_HSM: im.hsm = optarg; break;
		case OPT_BIND: im.bind = optarg; break;
		case OPT_PCRS: im.pcrs = optarg; break;
		case OPT_PIN_FILE: im.pin_file = optarg; break;
		case OPT_RECORD: im.record = optarg; break;
		case OPT_KEY_OUT: im.key_out = optarg; break;
		case OPT_NAME: im.name = optarg; break;
		case OPT_RMEM:
			if ((r = cli_parse_uint("image", "--recovery-pbkdf-memory", optarg, &im.rmem)))
				return r;
			break;
		case OPT_RITER:
			if ((r = cli_parse_uint("image", "--recovery-pbkdf-iterations", optarg, &im.riter)))
				return r;
			break;
		case OPT_DRY_RUN: im.dry_run = true; break;
		case OPT_JSON: cli.json = true; break;
		case 'y': im.yes = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || !im.out)
		return cli_usage_error("image", "expected IN.img and -o OUT.img");
	im.in = argv[optind];
	if (!im.cipher)
		im.cipher = "aes-xts-plain64";
	/* the settings the units will use are checked now, not at their first boot */
	if (strcmp(im.hsm, "tpm2") && strncmp(im.hsm, "tpm2:", 5) && strncmp(im.hsm, "pkcs11:", 7))
		return cli_usage_error("image", "--hsm: tpm2[:TCTI] or pkcs11:URI");
	if (im.bind) {
		uint32_t mask;
		bool def;

		if ((r = cli_bind_setup("image", im.bind, &mask, &def)))
			return r;
	}
	if (strchr(im.record, ' ') || strchr(im.name, '/') || strchr(im.name, ' '))
		return cli_usage_error("image", "--record and --name take one word");
	if (geteuid() != 0 && !im.dry_run)
		return lr_exit_code(lr_error_code(-EPERM, "lockroot image needs root (loop devices, mounts)"));
	r = inspect(&im);
	if (r < 0)
		return lr_exit_code(r);
	/* a private mount namespace: every mount (and so every loop device) goes with us */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return lr_exit_code(lr_error_code(-errno, "cannot make a private mount namespace: %s", strerror(errno)));
	r = loop_attach(im.in, im.root->start, im.root->size, true, im.loop, sizeof(im.loop), &im.loop_fd);
	if (r == 0)
		r = check_root_fs(&im, &info);
	if (r == 0)
		r = check_cipher(&im);
	if (im.loop_fd >= 0)
		close(im.loop_fd);
	im.loop_fd = -1;
	if (r < 0)
		return lr_exit_code(r);
	print_plan(&im, &info);
	if (im.dry_run)
		return 0;
	if (!im.yes && !cli_confirm("image", "Go ahead? Type yes:", "yes"))
		return lr_exit_code(-ECANCELED);
	snprintf(im.work, sizeof(im.work), "%s/lockroot-image.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(im.work))
		return lr_exit_code(lr_error_code(-errno, "cannot create a work directory: %s", strerror(errno)));
	setenv("MTOOLS_SKIP_CHECK", "1", 1);
	r = lr_recovery_key_generate(&im.key);
	if (r == 0)
		r = act(&im);
	if (im.loop_fd >= 0)
		close(im.loop_fd);
	umount2(im.mnt, MNT_DETACH);
	nftw(im.work, rm_tree, 16, FTW_DEPTH | FTW_PHYS);
	if (r < 0 && im.out_created) {
		lr_error("removing %s (%s is unchanged)", im.out, im.in);
		unlink(im.out);
	}
	if (r == 0) {
		if (cli.json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "event", json_object_new_string("ready"));
			json_object_object_add(o, "output", json_object_new_string(im.out));
			json_object_object_add(o, "key", json_object_new_string(im.key_out ? im.key_out : "boot partition"));
			puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
			json_object_put(o);
		} else {
			printf("Ready: %s. Write it to each unit's card; at its first boot a unit needs its %s and the "
			       "record device %s%s.\n", im.out, im.hsm, im.record,
			       im.key_out ? " with the provisioning key on it" : "");
		}
	}
	lr_secret_free(im.key);
	return r < 0 ? lr_exit_code(r) : 0;
}
