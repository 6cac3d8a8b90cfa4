/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Boot configuration editing on real files in a temporary tree laid out like Raspberry Pi
 * OS (bookworm and older), Ubuntu and a PC. No root needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootcfg.h"
#include "log.h"
#include "util.h"

static int failures;
static char tmpdir[PATH_MAX / 2];
static char last_error[1024];

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: %s: failed: %s\n", __FILE__, __LINE__,  \
				__func__, #cond);                                       \
			failures++;                                                     \
		}                                                                       \
	} while (0)

#define CHECK_STR(a, b)                                                                 \
	do {                                                                            \
		const char *a_ = (a), *b_ = (b);                                        \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                \
			fprintf(stderr, "%s:%d: %s: failed: %s ==\n\"%s\"\ngot\n\"%s\"\n", \
				__FILE__, __LINE__, __func__, #a, b_ ? b_ : "(null)",   \
				a_ ? a_ : "(null)");                                    \
			failures++;                                                     \
		}                                                                       \
	} while (0)

#define KEYSCRIPT_OPTS "luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript"

static void log_hook(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (level >= LR_LOG_ERROR)
		snprintf(last_error, sizeof(last_error), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
}

static char *path_of(const char *rel)
{
	static char buf[4][PATH_MAX];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, rel);
	return buf[k];
}

static void mkdir_p(const char *rel)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path_of(rel));
	for (char *p = buf + strlen(tmpdir) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(buf, 0755);
		*p = '/';
	}
	mkdir(buf, 0755);
}

static void put(const char *rel, const char *text, mode_t mode)
{
	char dir[PATH_MAX];
	char *slash;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s", rel);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		mkdir_p(dir);
	}
	unlink(path_of(rel));
	f = fopen(path_of(rel), "w");
	if (!f) {
		perror(path_of(rel));
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	chmod(path_of(rel), mode);
}

/* Contents of a file under the tree, or NULL; valid until the next call with the same slot. */
static char *get(const char *rel)
{
	static char *slots[4];
	static int k;
	char *text = NULL;
	size_t len = 0;
	FILE *f = fopen(path_of(rel), "r"), *m;
	int c;

	k = (k + 1) % 4;
	free(slots[k]);
	slots[k] = NULL;
	if (!f)
		return NULL;
	m = open_memstream(&text, &len);
	while ((c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(m);
	fclose(f);
	slots[k] = text;
	return text;
}

static bool exists(const char *rel)
{
	return access(path_of(rel), F_OK) == 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void fresh_tree(void)
{
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	CHECK(mkdir(tmpdir, 0755) == 0);
}

static const struct lr_bootcfg_change *find_change(const struct lr_bootcfg_change *c, size_t n, const char *rel)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(c[i].path, path_of(rel)) == 0)
			return &c[i];
	return NULL;
}

/* New text of rel in the plan, or NULL when it does not change. */
static const char *planned(const struct lr_bootcfg_change *c, size_t n, const char *rel)
{
	const struct lr_bootcfg_change *x = find_change(c, n, rel);

	return x ? x->new_text : NULL;
}

static struct lr_bootcfg base_cfg(void)
{
	return (struct lr_bootcfg){
		.root = tmpdir,
		.name = "cryptroot",
		.source = "UUID=11111111-2222-3333-4444-555555555555",
		.crypttab_options = KEYSCRIPT_OPTS,
		.initramfs = "initrd.img",
	};
}

/* ---- fixtures ---- */

static const char bookworm_config[] =
	"# For more options and information see\n"
	"# http://rptl.io/configtxt\n"
	"dtparam=audio=on\n"
	"camera_auto_detect=1\n"
	"\n"
	"# Automatically load initramfs files, if found\n"
	"#auto_initramfs=1\n"
	"\n"
	"dtoverlay=vc4-kms-v3d\n"
	"arm_64bit=1\n"
	"\n"
	"[pi4]\n"
	"arm_boost=1\n"
	"initramfs initramfs-pi4 followkernel\n"
	"\n"
	"[all]\n";
static const char bookworm_cmdline[] =
	"console=serial0,115200 console=tty1 root=PARTUUID=abcd1234-02 rootfstype=ext4 "
	"fsck.repair=yes rootwait quiet\n";
static const char crypttab_orig[] =
	"# <target name>\t<source device>\t\t<key file>\t<options>\n"
	"swap\t/dev/sda3\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=512\n"
	"\n"
	"# data UUID=dead none luks\n";
static const char fstab_orig[] =
	"proc            /proc           proc    defaults          0       0\n"
	"PARTUUID=abcd1234-01  /boot/firmware  vfat    defaults          0       2\n"
	"PARTUUID=abcd1234-02  /               ext4    defaults,noatime  0       1\n"
	"# a swapfile is not a swap partition, no line here for that\n"
	"#PARTUUID=abcd1234-03  /  ext4  defaults  0  1\n";

static void bookworm_tree(void)
{
	fresh_tree();
	put("boot/firmware/config.txt", bookworm_config, 0755);
	put("boot/firmware/cmdline.txt", bookworm_cmdline, 0600);
	put("boot/config.txt", "# DO NOT EDIT THIS FILE\n# moved to /boot/firmware/config.txt\n", 0644);
	put("etc/crypttab", crypttab_orig, 0640);
	put("etc/fstab", fstab_orig, 0644);
}

static const char *const bookworm_files[] = {
	"boot/firmware/config.txt", "boot/firmware/cmdline.txt", "etc/crypttab", "etc/fstab",
};

/* ---- tests ---- */

static void check_bookworm_result(const struct lr_bootcfg_change *c, size_t n)
{
	CHECK(n == 4);
	CHECK_STR(planned(c, n, "boot/firmware/config.txt"), "# For more options and information see\n"
		  "# http://rptl.io/configtxt\n"
		  "dtparam=audio=on\n"
		  "camera_auto_detect=1\n"
		  "\n"
		  "# Automatically load initramfs files, if found\n"
		  "#auto_initramfs=1\n"
		  "\n"
		  "dtoverlay=vc4-kms-v3d\n"
		  "arm_64bit=1\n"
		  "\n"
		  "[pi4]\n"
		  "arm_boost=1\n"
		  "initramfs initramfs-pi4 followkernel\n"
		  "\n"
		  "[all]\n"
		  "initramfs initrd.img followkernel\n");
	CHECK_STR(planned(c, n, "boot/firmware/cmdline.txt"),
		  "console=serial0,115200 console=tty1 root=/dev/mapper/cryptroot rootfstype=ext4 "
		  "fsck.repair=yes rootwait quiet\n");
	CHECK_STR(planned(c, n, "etc/crypttab"), "# <target name>\t<source device>\t\t<key file>\t<options>\n"
		  "swap\t/dev/sda3\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=512\n"
		  "\n"
		  "# data UUID=dead none luks\n"
		  "cryptroot UUID=11111111-2222-3333-4444-555555555555 none " KEYSCRIPT_OPTS "\n");
	CHECK_STR(planned(c, n, "etc/fstab"),
		  "proc            /proc           proc    defaults          0       0\n"
		  "PARTUUID=abcd1234-01  /boot/firmware  vfat    defaults          0       2\n"
		  "/dev/mapper/cryptroot  /               ext4    defaults,noatime  0       1\n"
		  "# a swapfile is not a swap partition, no line here for that\n"
		  "#PARTUUID=abcd1234-03  /  ext4  defaults  0  1\n");
	CHECK(find_change(c, n, "boot/firmware/config.txt") &&
	      strcmp(find_change(c, n, "boot/firmware/config.txt")->old_text, bookworm_config) == 0);
}

/* Plan (writes nothing), apply, apply again (no change), restore. */
static void test_bookworm(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	struct stat before[4], after, backup;
	char *texts[4];
	size_t n = 0;

	bookworm_tree();
	for (size_t i = 0; i < 4; i++) {
		CHECK(stat(path_of(bookworm_files[i]), &before[i]) == 0);
		texts[i] = strdup(get(bookworm_files[i]));
	}
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	check_bookworm_result(c, n);
	for (size_t i = 0; i < 4; i++) {
		CHECK(stat(path_of(bookworm_files[i]), &after) == 0);
		CHECK(after.st_mtim.tv_sec == before[i].st_mtim.tv_sec &&
		      after.st_mtim.tv_nsec == before[i].st_mtim.tv_nsec);
		CHECK_STR(get(bookworm_files[i]), texts[i]);
	}
	CHECK(!exists("boot/firmware/cmdline.txt.lockroot-orig"));

	CHECK(lr_bootcfg_apply(c, n) == 0);
	for (size_t i = 0; i < n; i++) {
		char rel[256];

		CHECK_STR(get(c[i].path + strlen(tmpdir) + 1), c[i].new_text);
		snprintf(rel, sizeof(rel), "%s.lockroot-orig", bookworm_files[i]);
		CHECK_STR(get(rel), texts[i]);
		CHECK(stat(path_of(bookworm_files[i]), &after) == 0);
		CHECK((after.st_mode & 07777) == (before[i].st_mode & 07777));
		CHECK(stat(path_of(rel), &after) == 0);
		CHECK((after.st_mode & 07777) == (before[i].st_mode & 07777));
	}
	CHECK(!exists("boot/config.txt.lockroot-orig"));
	lr_bootcfg_changes_free(c, n);

	/* Second run: nothing to do, nothing written. */
	CHECK(stat(path_of("boot/firmware/cmdline.txt.lockroot-orig"), &backup) == 0);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 0);
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	CHECK(stat(path_of("boot/firmware/cmdline.txt.lockroot-orig"), &after) == 0);
	CHECK(after.st_ino == backup.st_ino && after.st_mtim.tv_nsec == backup.st_mtim.tv_nsec);

	CHECK(lr_bootcfg_restore(tmpdir) == 4);
	for (size_t i = 0; i < 4; i++) {
		char rel[256];

		CHECK_STR(get(bookworm_files[i]), texts[i]);
		CHECK(stat(path_of(bookworm_files[i]), &after) == 0);
		CHECK((after.st_mode & 07777) == (before[i].st_mode & 07777));
		snprintf(rel, sizeof(rel), "%s.lockroot-orig", bookworm_files[i]);
		CHECK(!exists(rel));
		free(texts[i]);
	}
	CHECK(lr_bootcfg_restore(tmpdir) == 0);
}

/* A later, different edit keeps the first original as the backup. */
static void test_backup_kept(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	bookworm_tree();
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	cfg.name = "root_crypt";
	cfg.remove_rootfstype = true;
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 3); /* config.txt already right */
	CHECK_STR(planned(c, n, "boot/firmware/cmdline.txt"),
		  "console=serial0,115200 console=tty1 root=/dev/mapper/root_crypt "
		  "fsck.repair=yes rootwait quiet\n");
	/* Same source: the line is replaced, not added. */
	CHECK_STR(planned(c, n, "etc/crypttab"), "# <target name>\t<source device>\t\t<key file>\t<options>\n"
		  "swap\t/dev/sda3\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=512\n"
		  "\n"
		  "# data UUID=dead none luks\n"
		  "root_crypt UUID=11111111-2222-3333-4444-555555555555 none " KEYSCRIPT_OPTS "\n");
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	CHECK_STR(get("boot/firmware/cmdline.txt.lockroot-orig"), bookworm_cmdline);
	CHECK_STR(get("etc/crypttab.lockroot-orig"), crypttab_orig);
	CHECK(lr_bootcfg_restore(tmpdir) == 4);
	CHECK_STR(get("boot/firmware/cmdline.txt"), bookworm_cmdline);
}

/* A file changed between plan and apply is not overwritten. */
static void test_stale(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	bookworm_tree();
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	put("etc/fstab", "# changed behind our back\n", 0644);
	CHECK(lr_bootcfg_apply(c, n) == -ESTALE);
	CHECK(strstr(last_error, "etc/fstab") != NULL);
	CHECK_STR(get("etc/fstab"), "# changed behind our back\n");
	CHECK(!exists("etc/fstab.lockroot-orig"));
	/* Checked before anything is written: the other files are untouched too. */
	CHECK_STR(get("boot/firmware/cmdline.txt"), bookworm_cmdline);
	CHECK(!exists("boot/firmware/cmdline.txt.lockroot-orig"));
	lr_bootcfg_changes_free(c, n);
}

static void test_auto_initramfs(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	struct lr_bootcfg_info info;
	size_t n = 0;

	bookworm_tree();
	put("boot/firmware/config.txt", "dtparam=audio=on\nauto_initramfs=1\n[pi4]\narm_boost=1\n[all]\n", 0755);
	CHECK(lr_bootcfg_inspect(tmpdir, &info) == 0);
	CHECK(info.auto_initramfs);
	CHECK_STR(info.boot_dir, path_of("boot/firmware"));
	CHECK_STR(info.cmdline_path, path_of("boot/firmware/cmdline.txt"));
	CHECK(info.initramfs == NULL);
	lr_bootcfg_info_done(&info);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 3);
	CHECK(planned(c, n, "boot/firmware/config.txt") == NULL);
	lr_bootcfg_changes_free(c, n);

	/* Under [pi4] it is not active for every board: add our line. */
	put("boot/firmware/config.txt", "[pi4]\nauto_initramfs=1\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK_STR(planned(c, n, "boot/firmware/config.txt"),
		  "[pi4]\nauto_initramfs=1\n\n[all]\ninitramfs initrd.img followkernel\n");
	lr_bootcfg_changes_free(c, n);
}

/* Older Raspberry Pi OS: everything in /boot; no sections; another initramfs replaced. */
static void test_old_boot(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	struct lr_bootcfg_info info;
	size_t n = 0;

	fresh_tree();
	put("boot/config.txt", "dtparam=audio=on\ninitramfs initrd.img-6.1.0-rpi7-rpi-v8 followkernel\n"
	    "gpu_mem=64", 0755);
	put("boot/cmdline.txt", "console=tty1 root=/dev/mmcblk0p2 rootfstype=ext4 elevator=deadline rootwait", 0755);
	put("etc/fstab", "/dev/mmcblk0p1 /boot vfat defaults 0 2\n/dev/mmcblk0p2 / ext4 defaults,noatime 0 1\n", 0644);
	CHECK(lr_bootcfg_inspect(tmpdir, &info) == 0);
	CHECK_STR(info.boot_dir, path_of("boot"));
	CHECK_STR(info.initramfs, "initrd.img-6.1.0-rpi7-rpi-v8");
	lr_bootcfg_info_done(&info);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 4);
	CHECK_STR(planned(c, n, "boot/config.txt"),
		  "dtparam=audio=on\ninitramfs initrd.img followkernel\ngpu_mem=64");
	CHECK_STR(planned(c, n, "boot/cmdline.txt"),
		  "console=tty1 root=/dev/mapper/cryptroot rootfstype=ext4 elevator=deadline rootwait");
	CHECK_STR(planned(c, n, "etc/fstab"),
		  "/dev/mmcblk0p1 /boot vfat defaults 0 2\n/dev/mapper/cryptroot / ext4 defaults,noatime 0 1\n");
	/* crypttab did not exist: created. */
	CHECK(find_change(c, n, "etc/crypttab") && find_change(c, n, "etc/crypttab")->old_text == NULL);
	CHECK_STR(planned(c, n, "etc/crypttab"),
		  "cryptroot UUID=11111111-2222-3333-4444-555555555555 none " KEYSCRIPT_OPTS "\n");
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	CHECK_STR(get("etc/crypttab.lockroot-orig"), "");
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0 && n == 0);
	lr_bootcfg_changes_free(c, n);

	/* A config.txt without any section: the line is appended without a header. */
	put("boot/config.txt", "dtparam=audio=on\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK_STR(planned(c, n, "boot/config.txt"), "dtparam=audio=on\ninitramfs initrd.img followkernel\n");
	lr_bootcfg_changes_free(c, n);
}

static const char ubuntu_config[] =
	"# Please DO NOT modify this file\n"
	"[pi4]\n"
	"kernel=uboot_rpi_4.bin\n"
	"max_framebuffers=2\n"
	"\n"
	"[pi3]\n"
	"kernel=uboot_rpi_3.bin\n"
	"\n"
	"[all]\n"
	"arm_64bit=1\n"
	"device_tree_address=0x03000000\n"
	"\n"
	"enable_uart=1\n"
	"cmdline=cmdline.txt\n"
	"\n"
	"include syscfg.txt\n"
	"include usercfg.txt\n";

static void ubuntu_tree(const char *syscfg_cmdline)
{
	char syscfg[256];

	fresh_tree();
	snprintf(syscfg, sizeof(syscfg), "# modified by pibootctl\nenable_uart=1\ndtparam=audio=on\n"
		 "cmdline=%s\n", syscfg_cmdline);
	put("boot/firmware/config.txt", ubuntu_config, 0755);
	put("boot/firmware/syscfg.txt", syscfg, 0755);
	put("boot/firmware/usercfg.txt", "# Place \"config.txt\" changes (dtparam, dtoverlay, disable_overscan, etc.) in\n", 0755);
	put("boot/firmware/cmdline.txt", "dwc_otg.lpm_enable=0 console=serial0,115200 console=tty1 "
	    "root=LABEL=writable rootfstype=ext4 elevator=deadline rootwait fixrtc\n", 0755);
	put("boot/firmware/nobtcmd.txt", "dwc_otg.lpm_enable=0 console=tty1 root=LABEL=writable "
	    "rootfstype=ext4 rootwait fixrtc quiet splash\n", 0755);
	put("etc/fstab", "LABEL=writable\t/\t ext4\tdefaults\t0 0\nLABEL=system-boot       /boot/firmware  vfat    defaults        0       1\n", 0644);
}

static void test_ubuntu(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	struct lr_bootcfg_info info;
	size_t n = 0;

	ubuntu_tree("cmdline.txt");
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 4);
	CHECK_STR(planned(c, n, "boot/firmware/config.txt"), "# Please DO NOT modify this file\n"
		  "[pi4]\nkernel=uboot_rpi_4.bin\nmax_framebuffers=2\n\n[pi3]\nkernel=uboot_rpi_3.bin\n\n"
		  "[all]\narm_64bit=1\ndevice_tree_address=0x03000000\n\nenable_uart=1\ncmdline=cmdline.txt\n\n"
		  "include syscfg.txt\ninclude usercfg.txt\ninitramfs initrd.img followkernel\n");
	CHECK_STR(planned(c, n, "boot/firmware/cmdline.txt"), "dwc_otg.lpm_enable=0 console=serial0,115200 "
		  "console=tty1 root=/dev/mapper/cryptroot rootfstype=ext4 elevator=deadline rootwait fixrtc\n");
	CHECK_STR(planned(c, n, "etc/fstab"), "/dev/mapper/cryptroot\t/\t ext4\tdefaults\t0 0\n"
		  "LABEL=system-boot       /boot/firmware  vfat    defaults        0       1\n");
	lr_bootcfg_changes_free(c, n);

	/* syscfg.txt (included) redirects the command line. */
	ubuntu_tree("nobtcmd.txt");
	CHECK(lr_bootcfg_inspect(tmpdir, &info) == 0);
	CHECK_STR(info.cmdline_path, path_of("boot/firmware/nobtcmd.txt"));
	lr_bootcfg_info_done(&info);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 4);
	CHECK(planned(c, n, "boot/firmware/cmdline.txt") == NULL);
	CHECK_STR(planned(c, n, "boot/firmware/nobtcmd.txt"), "dwc_otg.lpm_enable=0 console=tty1 "
		  "root=/dev/mapper/cryptroot rootfstype=ext4 rootwait fixrtc quiet splash\n");
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	CHECK(!exists("boot/firmware/cmdline.txt.lockroot-orig"));
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0 && n == 0);
	lr_bootcfg_changes_free(c, n);

	/* An initramfs line in an included file is replaced there. */
	ubuntu_tree("cmdline.txt");
	put("boot/firmware/usercfg.txt", "# user\ninitramfs initrd.img-old followkernel\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(planned(c, n, "boot/firmware/config.txt") == NULL);
	CHECK_STR(planned(c, n, "boot/firmware/usercfg.txt"), "# user\ninitramfs initrd.img followkernel\n");
	lr_bootcfg_changes_free(c, n);

	/* A missing included file is skipped, as the firmware does. */
	ubuntu_tree("cmdline.txt");
	unlink(path_of("boot/firmware/usercfg.txt"));
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0 && n == 4);
	lr_bootcfg_changes_free(c, n);
}

static char *cmdline_result(const char *orig, bool remove_fstype)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	const char *p;
	char *out;
	size_t n = 0;

	fresh_tree();
	put("boot/firmware/cmdline.txt", orig, 0755);
	cfg.initramfs = NULL;
	cfg.remove_rootfstype = remove_fstype;
	if (lr_bootcfg_plan(&cfg, &c, &n) < 0)
		return NULL;
	p = planned(c, n, "boot/firmware/cmdline.txt");
	out = strdup(p ? p : orig);
	lr_bootcfg_changes_free(c, n);
	return out;
}

static void check_cmdline(const char *orig, bool remove_fstype, const char *want)
{
	char *got = cmdline_result(orig, remove_fstype);

	CHECK_STR(got, want);
	free(got);
}

static void test_cmdline(void)
{
	check_cmdline("console=tty1 root=UUID=0b7b5b8e-1d0b-4c55-9b7e-2a3f5d7c9e11 ro quiet\n", false,
		      "console=tty1 root=/dev/mapper/cryptroot ro quiet\n");
	check_cmdline("console=tty1 rootwait quiet\n", false, "console=tty1 rootwait quiet root=/dev/mapper/cryptroot\n");
	check_cmdline("console=tty1 rootwait", false, "console=tty1 rootwait root=/dev/mapper/cryptroot");
	check_cmdline("rootfstype=ext4 root=/dev/mmcblk0p2 rootwait\n", true, "root=/dev/mapper/cryptroot rootwait\n");
	check_cmdline("root=/dev/sda2  rootflags=noload   rootfstype=ext4\r\n", true,
		      "root=/dev/mapper/cryptroot  rootflags=noload\r\n");
	check_cmdline("root=/dev/mapper/cryptroot rootwait\n", false, "root=/dev/mapper/cryptroot rootwait\n");
	check_cmdline("\n  dyndbg=\"file a.c +p\" root=/dev/sda1 unknown.opt=1\n\n", false,
		      "\n  dyndbg=\"file a.c +p\" root=/dev/mapper/cryptroot unknown.opt=1\n\n");
	check_cmdline("", false, "root=/dev/mapper/cryptroot");
}

static void test_crypttab_fstab(void)
{
	static const struct lr_bootcfg_mount mounts[] = {
		{ "/dev/mapper/data", "/srv", "ext4", "defaults,nofail", 2 },
		{ "/dev/mapper/logs", "/var/log", NULL, NULL, 2 },
	};
	static const struct lr_bootcfg_crypt crypts[] = {
		{ "data", "PARTUUID=abcd1234-03", "luks,discard" },
	};
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	bookworm_tree();
	put("etc/crypttab", "# comment\n"
	    "cryptroot  UUID=old-uuid  none  luks\n"
	    "other UUID=11111111-2222-3333-4444-555555555555 /key luks\n"
	    "swap /dev/sda3 /dev/urandom swap\n"
	    "data\tPARTUUID=abcd1234-03\tnone\tluks,discard\n", 0640);
	put("etc/fstab", "PARTUUID=abcd1234-02 / ext4 defaults 0 1\n"
	    "tmpfs /var/log tmpfs defaults,size=16m 0 0\n", 0644);
	cfg.mounts = mounts;
	cfg.n_mounts = 2;
	cfg.crypts = crypts;
	cfg.n_crypts = 1;
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK_STR(planned(c, n, "etc/crypttab"), "# comment\n"
		  "cryptroot  UUID=11111111-2222-3333-4444-555555555555  none  " KEYSCRIPT_OPTS "\n"
		  "swap /dev/sda3 /dev/urandom swap\n"
		  "data\tPARTUUID=abcd1234-03\tnone\tluks,discard\n");
	CHECK_STR(planned(c, n, "etc/fstab"), "/dev/mapper/cryptroot / ext4 defaults 0 1\n"
		  "/dev/mapper/logs /var/log auto defaults 0 0\n"
		  "/dev/mapper/data /srv ext4 defaults,nofail 0 2\n");
	CHECK(lr_bootcfg_apply(c, n) == 0);
	lr_bootcfg_changes_free(c, n);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0 && n == 0);
	lr_bootcfg_changes_free(c, n);
}

/* A PC: no firmware files. */
static void test_pc(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	fresh_tree();
	mkdir_p("boot/grub");
	put("etc/fstab", "UUID=aaaa / ext4 errors=remount-ro 0 1\n", 0644);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ENOENT);
	CHECK(strstr(last_error, path_of("boot/firmware")) && strstr(last_error, path_of("boot")));
	cfg.firmware_optional = true;
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 2);
	CHECK_STR(planned(c, n, "etc/fstab"), "/dev/mapper/cryptroot / ext4 errors=remount-ro 0 1\n");
	lr_bootcfg_changes_free(c, n);
}

static void test_errors(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = (void *)1;
	size_t n = 99;

	fresh_tree();
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ENOENT);
	CHECK(c == NULL && n == 0);
	CHECK(strstr(last_error, path_of("boot")) != NULL);

	/* An empty /boot/firmware is an unmounted boot partition. */
	mkdir_p("boot/firmware");
	put("boot/cmdline.txt", "root=/dev/sda2\n", 0644);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ENOENT);
	CHECK(strstr(last_error, "mounted") != NULL);

	bookworm_tree();
	put("boot/firmware/cmdline.txt", "console=tty1 root=/dev/sda2\nquiet\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -EBADMSG);
	CHECK(strstr(last_error, "cmdline.txt") != NULL);
	unlink(path_of("boot/firmware/cmdline.txt"));
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ENOENT);
}

static void test_includes(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;
	char buf[64];

	bookworm_tree();
	/* The same file included twice, one after the other, is no loop. */
	put("boot/firmware/config.txt", "include a.txt\ninclude a.txt\n", 0755);
	put("boot/firmware/a.txt", "initramfs initrd.img 0x01f00000\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(n == 3 && planned(c, n, "boot/firmware/config.txt") == NULL);
	CHECK(planned(c, n, "boot/firmware/a.txt") == NULL);
	lr_bootcfg_changes_free(c, n);

	/* Never out of the boot partition. */
	put("boot/firmware/config.txt", "include ../../etc/outside.txt\n", 0755);
	put("etc/outside.txt", "initramfs other.img followkernel\n", 0644);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK(planned(c, n, "etc/outside.txt") == NULL);
	CHECK_STR(planned(c, n, "boot/firmware/config.txt"),
		  "include ../../etc/outside.txt\ninitramfs initrd.img followkernel\n");
	lr_bootcfg_changes_free(c, n);

	put("boot/firmware/config.txt", "include a.txt\n", 0755);
	put("boot/firmware/a.txt", "include b.txt\n", 0755);
	put("boot/firmware/b.txt", "include a.txt\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ELOOP);
	CHECK(strstr(last_error, "a.txt") && strstr(last_error, "loop"));
	put("boot/firmware/config.txt", "include config.txt\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ELOOP);
	/* A loop only under a board filter is never read. */
	put("boot/firmware/config.txt", "[pi3]\ninclude config.txt\n[all]\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	lr_bootcfg_changes_free(c, n);

	/* 8 nested includes are fine, 9 are not. */
	for (int i = 1; i <= 9; i++) {
		char name[32];

		snprintf(name, sizeof(name), "boot/firmware/i%d.txt", i);
		if (i < 9)
			snprintf(buf, sizeof(buf), "include i%d.txt\n", i + 1);
		else
			snprintf(buf, sizeof(buf), "# end\n");
		put(name, buf, 0644);
	}
	put("boot/firmware/config.txt", "include i2.txt\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	lr_bootcfg_changes_free(c, n);
	put("boot/firmware/config.txt", "include i1.txt\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -ELOOP);
	CHECK(strstr(last_error, "nested") != NULL);
}

static void test_bad_input(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	bookworm_tree();
	cfg.name = "crypt root";
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -EINVAL);
	cfg.name = "a/b";
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -EINVAL);
	cfg.name = "cryptroot";
	cfg.source = NULL;
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -EINVAL);

	/* Symbolic links are not edited. */
	bookworm_tree();
	CHECK(symlink("fstab.real", path_of("etc/fstab.link")) == 0);
	rename(path_of("etc/fstab"), path_of("etc/fstab.real"));
	rename(path_of("etc/fstab.link"), path_of("etc/fstab"));
	cfg.source = "UUID=x";
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == -EINVAL);
}

static void test_crlf(void)
{
	struct lr_bootcfg cfg = base_cfg();
	struct lr_bootcfg_change *c = NULL;
	size_t n = 0;

	bookworm_tree();
	put("boot/firmware/config.txt", "arm_64bit=1\r\n[pi4]\r\narm_boost=1\r\n", 0755);
	CHECK(lr_bootcfg_plan(&cfg, &c, &n) == 0);
	CHECK_STR(planned(c, n, "boot/firmware/config.txt"),
		  "arm_64bit=1\r\n[pi4]\r\narm_boost=1\r\n\r\n[all]\r\ninitramfs initrd.img followkernel\r\n");
	lr_bootcfg_changes_free(c, n);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	lr_set_log(log_hook, NULL);
	snprintf(tmpdir, sizeof(tmpdir), "%s/lockroot-bootcfg-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	umask(022);
	test_bookworm();
	test_backup_kept();
	test_stale();
	test_auto_initramfs();
	test_old_boot();
	test_ubuntu();
	test_cmdline();
	test_crypttab_fstab();
	test_pc();
	test_errors();
	test_includes();
	test_bad_input();
	test_crlf();
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
