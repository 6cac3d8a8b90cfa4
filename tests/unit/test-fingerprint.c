/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fingerprint unit tests: fake hosts (Raspberry Pi, PC) built as sysroots in a temporary
 * directory and presented through LOCKROOT_SYSROOT. No root needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fingerprint.h"
#include "log.h"
#include "util.h"

#include "check.h"

/* Half of PATH_MAX leaves room for the paths built under it. */
static char tmpdir[PATH_MAX / 2];
static char image[PATH_MAX / 2 + 16];



#define BIT(id) (1u << (id))

static void mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(buf, 0755);
		*p = '/';
	}
	mkdir(buf, 0755);
}

/* root/rel with parents created. */
static const char *prepare(const char *root, const char *rel)
{
	static char path[PATH_MAX];
	char *slash;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	slash = strrchr(path, '/');
	*slash = '\0';
	mkdir_p(path);
	*slash = '/';
	return path;
}

static void put(const char *root, const char *rel, const void *data, size_t len)
{
	const char *path = prepare(root, rel);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
		fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
		exit(1);
	}
	close(fd);
}

static void puts_file(const char *root, const char *rel, const char *text)
{
	put(root, rel, text, strlen(text));
}

static void link_to(const char *root, const char *rel, const char *target)
{
	const char *path = prepare(root, rel);

	unlink(path);
	if (symlink(target, path) < 0) {
		fprintf(stderr, "cannot link %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* The sysfs entry the volume image's file system maps to: sys/dev/block/MAJ:MIN. */
static const char *dev_entry(const char *file)
{
	static char rel[64];
	struct stat st;

	if (stat(file, &st) < 0) {
		fprintf(stderr, "cannot stat %s: %s\n", file, strerror(errno));
		exit(1);
	}
	snprintf(rel, sizeof(rel), "sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	return rel;
}

static const char *new_host(const char *name)
{
	static char root[PATH_MAX];

	snprintf(root, sizeof(root), "%s/%s", tmpdir, name);
	mkdir_p(root);
	setenv("LOCKROOT_SYSROOT", root, 1);
	return root;
}

static void test_canonical(void)
{
	static const char dt[] = "10000000c0ffee42\0";
	char *a = lr_component_canonical(LR_COMP_BOARD_SERIAL, dt, sizeof(dt));
	char *b = lr_component_canonical(LR_COMP_BOARD_SERIAL, " 10000000C0FFEE42 \n", 19);
	char *c = lr_component_canonical(LR_COMP_BOARD_SERIAL, "0x10000000c0ffee42\n", 19);
	char *d = lr_component_canonical(LR_COMP_DISK_SERIAL, "\t WD-WX12 Ab \n\0\0", 16);
	char *e = lr_component_canonical(LR_COMP_DMI_UUID, "4C4C4544-0042-3510-8051-B4C04F564E32\n", 37);
	char *f = lr_component_canonical(LR_COMP_SD_CID, "035344534331364780A1B2C3D40143E1", 32);

	CHECK_STR(a, "10000000c0ffee42");
	CHECK_STR(b, "10000000c0ffee42");
	CHECK_STR(c, "10000000c0ffee42");
	CHECK_STR(d, "WD-WX12 Ab");
	CHECK_STR(e, "4c4c4544-0042-3510-8051-b4c04f564e32");
	CHECK_STR(f, "035344534331364780a1b2c3d40143e1");
	CHECK(!lr_component_canonical(LR_COMP_BOARD_SERIAL, "\0\0", 2));
	CHECK(!lr_component_canonical(LR_COMP_DISK_SERIAL, " \n\t", 3));
	CHECK(!lr_component_canonical(LR_COMP_MAX, "x", 1));
	free(a);
	free(b);
	free(c);
	free(d);
	free(e);
	free(f);
}

#define PI4_MMC "sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0"
#define PI_CID "035344534331364780a1b2c3d40143e1"

/* A Raspberry Pi 4 booted from its SD card, the volume on mmcblk0p2. */
static void test_pi4(void)
{
	const char *root = new_host("pi4");
	struct lr_fingerprint fp;

	put(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4", 31);
	put(root, "proc/device-tree/serial-number", "10000000c0ffee42", 17);
	puts_file(root, PI4_MMC "/device/cid", "035344534331364780A1B2C3D40143E1\n");
	puts_file(root, PI4_MMC "/device/type", "SD\n");
	puts_file(root, PI4_MMC "/device/serial", "0x80a1b2c3\n");
	puts_file(root, PI4_MMC "/mmcblk0p2/partition", "2\n");
	link_to(root, "sys/block/mmcblk0",
		"../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0");
	link_to(root, dev_entry(image),
		"../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2");

	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK(fp.is_pi);
	CHECK_STR(fp.comp[LR_COMP_BOARD_SERIAL].value, "10000000c0ffee42");
	CHECK_STR(fp.comp[LR_COMP_BOARD_SERIAL].source, "/proc/device-tree/serial-number");
	CHECK_STR(fp.comp[LR_COMP_SD_CID].value, PI_CID);
	CHECK_STR(fp.comp[LR_COMP_SD_CID].source, "/sys/block/mmcblk0/device/cid");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "0x80a1b2c3");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, "/sys/block/mmcblk0/device/serial");
	CHECK(!fp.comp[LR_COMP_DMI_UUID].value);
	CHECK(fp.comp[LR_COMP_DMI_UUID].error == -ENOENT);
	/* The volume is on the card: its serial is part of the CID already. */
	CHECK(lr_fingerprint_default_mask(&fp) == (BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID)));
	lr_fingerprint_done(&fp);

	CHECK(lr_fingerprint_read(NULL, &fp) == 0);
	CHECK(fp.comp[LR_COMP_DISK_SERIAL].error == -ENODEV);
	CHECK_STR(fp.comp[LR_COMP_SD_CID].value, PI_CID);
	CHECK(lr_fingerprint_default_mask(&fp) == (BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID)));
	lr_fingerprint_done(&fp);
	lr_fingerprint_done(&fp); /* idempotent */
}

static const char cpuinfo[] =
	"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
	"CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
	"processor\t: 1\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n\n"
	"Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000C0FFEE42\n"
	"Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n";

static void add_mmc(const char *root, unsigned n, const char *type, const char *cid)
{
	char rel[PATH_MAX], target[256];

	snprintf(target, sizeof(target), "../devices/platform/mmc%u/block/mmcblk%u", n, n);
	snprintf(rel, sizeof(rel), "sys/block/mmcblk%u", n);
	link_to(root, rel, target);
	snprintf(rel, sizeof(rel), "sys/devices/platform/mmc%u/block/mmcblk%u/device/type", n, n);
	puts_file(root, rel, type);
	snprintf(rel, sizeof(rel), "sys/devices/platform/mmc%u/block/mmcblk%u/device/cid", n, n);
	puts_file(root, rel, cid);
}

#define USB_DISK "sys/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-2/" \
	"2-2:1.0/host0/target0:0:0/0:0:0:0/block/sda"
#define EMMC_CID "150100444a54443452102a5b3c4d5e00"

/* A Pi whose kernel has no device tree serial-number: /proc/cpuinfo only. Root on a USB disk. */
static void test_pi_cpuinfo(void)
{
	static const char vpd[] = "\x00\x80\x00\x11" "    ABC123xyz    " "JUNK";
	const char *root = new_host("pi-cpuinfo");
	struct lr_fingerprint fp;

	put(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4", 31);
	puts_file(root, "proc/cpuinfo", cpuinfo);
	add_mmc(root, 0, "SDIO\n", "00000000000000000000000000000001\n");
	add_mmc(root, 2, "MMC\n", EMMC_CID "\n");
	add_mmc(root, 1, "SD\n", PI_CID "\n");
	puts_file(root, "sys/block/mmcblk1boot0/device/type", "MMC\n");
	puts_file(root, "sys/block/mmcblk1boot0/device/cid", EMMC_CID "\n");
	put(root, USB_DISK "/device/vpd_pg80", vpd, sizeof(vpd) - 1);
	puts_file(root, USB_DISK "/sda2/partition", "2\n");
	link_to(root, dev_entry(image), "../../devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/"
		"0000:01:00.0/usb2/2-2/2-2:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda2");

	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK(fp.is_pi);
	/* Same serial as the device tree form of test_pi4(). */
	CHECK_STR(fp.comp[LR_COMP_BOARD_SERIAL].value, "10000000c0ffee42");
	CHECK_STR(fp.comp[LR_COMP_BOARD_SERIAL].source, "/proc/cpuinfo");
	/* Lowest card of type SD or MMC: mmcblk0 is SDIO, mmcblk1boot0 is not a card. */
	CHECK_STR(fp.comp[LR_COMP_SD_CID].value, PI_CID);
	CHECK_STR(fp.comp[LR_COMP_SD_CID].source, "/sys/block/mmcblk1/device/cid");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "ABC123xyz");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, "/sys/block/sda/device/vpd_pg80");
	CHECK(lr_fingerprint_default_mask(&fp) ==
	      (BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID) | BIT(LR_COMP_DISK_SERIAL)));
	lr_fingerprint_done(&fp);

	/* Volume on the eMMC (mmcblk2): that card's CID, and no separate disk serial. */
	puts_file(root, "sys/devices/platform/mmc2/block/mmcblk2/device/serial", "0x2a5b3c4d\n");
	puts_file(root, "sys/devices/platform/mmc2/block/mmcblk2/mmcblk2p2/partition", "2\n");
	link_to(root, dev_entry(image), "../../devices/platform/mmc2/block/mmcblk2/mmcblk2p2");
	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK_STR(fp.comp[LR_COMP_SD_CID].value, EMMC_CID);
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, "/sys/block/mmcblk2/device/serial");
	CHECK(lr_fingerprint_default_mask(&fp) == (BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID)));
	lr_fingerprint_done(&fp);
}

#define VIRTIO_DISK "sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"

static void test_pc(void)
{
	const char *root = new_host("pc");
	struct lr_fingerprint fp;
	uint8_t digest[32];

	puts_file(root, "sys/class/dmi/id/product_uuid", "4C4C4544-0042-3510-8051-B4C04F564E32\n");
	puts_file(root, VIRTIO_DISK "/serial", "  QM00001 \n");
	puts_file(root, VIRTIO_DISK "/device/wwid", "not-this-one\n");
	link_to(root, dev_entry(image), "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda");

	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK(!fp.is_pi);
	CHECK_STR(fp.comp[LR_COMP_DMI_UUID].value, "4c4c4544-0042-3510-8051-b4c04f564e32");
	CHECK_STR(fp.comp[LR_COMP_DMI_UUID].source, "/sys/class/dmi/id/product_uuid");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "QM00001");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, "/sys/block/vda/serial");
	CHECK(fp.comp[LR_COMP_BOARD_SERIAL].error == -ENOENT);
	CHECK(fp.comp[LR_COMP_SD_CID].error == -ENOENT);
	CHECK(!fp.comp[LR_COMP_BOARD_SERIAL].value && !fp.comp[LR_COMP_BOARD_SERIAL].source);
	CHECK(lr_fingerprint_default_mask(&fp) == (BIT(LR_COMP_DMI_UUID) | BIT(LR_COMP_DISK_SERIAL)));
	CHECK(lr_fingerprint_digest(&fp, lr_fingerprint_default_mask(&fp), digest) == 0);

	/* Absent selected components are refused with words and places. */
	last_error[0] = '\0';
	CHECK(lr_fingerprint_digest(&fp, BIT(LR_COMP_SD_CID) | BIT(LR_COMP_DMI_UUID), digest) == -ENOENT);
	CHECK_STR(last_error, "cannot bind to the SD card CID: /sys/block/mmcblk*/device/cid not found; "
		  "choose other components with --bind");
	CHECK(lr_fingerprint_digest(&fp, BIT(LR_COMP_BOARD_SERIAL), digest) == -ENOENT);
	CHECK(strstr(last_error, "board serial") && strstr(last_error, "/proc/device-tree/serial-number") &&
	      strstr(last_error, "/proc/cpuinfo"));
	lr_fingerprint_done(&fp);

	/* The sysfs entry as a plain directory (no disk name), serial only in device/wwid. */
	unlink(prepare(root, dev_entry(image)));
	puts_file(root, "sys/class/dmi/id/product_uuid", "00000000-0000-0000-0000-000000000000\n");
	char rel[128], want[160];
	snprintf(rel, sizeof(rel), "%s/device/wwid", dev_entry(image));
	puts_file(root, rel, "t10.ATA     QEMU HARDDISK   QM00005\n");
	snprintf(want, sizeof(want), "/%s", rel);
	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "t10.ATA     QEMU HARDDISK   QM00005");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, want);
	/* A placeholder UUID identifies nothing. */
	CHECK(fp.comp[LR_COMP_DMI_UUID].error == -ENODATA);
	CHECK(lr_fingerprint_default_mask(&fp) == BIT(LR_COMP_DISK_SERIAL));
	lr_fingerprint_done(&fp);

	/* Not on any disk we know: disk-serial absent, not a failure. */
	CHECK(lr_fingerprint_read("/proc/version", &fp) == 0);
	CHECK(!fp.comp[LR_COMP_DISK_SERIAL].value);
	CHECK(fp.comp[LR_COMP_DISK_SERIAL].error < 0);
	lr_fingerprint_done(&fp);
	CHECK(lr_fingerprint_read("/nonexistent/device", &fp) == 0);
	CHECK(fp.comp[LR_COMP_DISK_SERIAL].error == -ENOENT);
	lr_fingerprint_done(&fp);
}

#define SDB "devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdb"
#define SDC "devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdc"

/* Device mapper over a partition, and a loop device over a file on another disk. */
static void test_stacked(void)
{
	const char *root = new_host("stacked");
	struct lr_fingerprint fp;
	char backing[PATH_MAX + 16];
	struct stat st_img, st_proc;

	puts_file(root, "sys/devices/virtual/block/dm-0/dm/name", "vg-root\n");
	puts_file(root, "sys/devices/virtual/block/dm-0/slaves/sdb2", "");
	puts_file(root, "sys/class/block/sdb2/dev", "8:18\n");
	puts_file(root, "sys/" SDB "/sdb2/partition", "2\n");
	puts_file(root, "sys/" SDB "/device/wwid", "naa.5000c500a1b2c3d4\n");
	link_to(root, "sys/dev/block/8:18", "../../" SDB "/sdb2");
	link_to(root, dev_entry(image), "../../devices/virtual/block/dm-0");
	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "naa.5000c500a1b2c3d4");
	CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].source, "/sys/block/sdb/device/wwid");
	lr_fingerprint_done(&fp);

	/* Loop device: follow backing_file to its file system (/proc here: surely another one). */
	CHECK(stat(image, &st_img) == 0 && stat("/proc/version", &st_proc) == 0);
	if (st_img.st_dev != st_proc.st_dev) {
		puts_file(root, "sys/devices/virtual/block/loop0/loop/backing_file", "/proc/version\n");
		puts_file(root, "sys/" SDC "/serial", "LOOPDISK\n");
		link_to(root, dev_entry("/proc/version"), "../../" SDC);
		link_to(root, dev_entry(image), "../../devices/virtual/block/loop0");
		CHECK(lr_fingerprint_read(image, &fp) == 0);
		CHECK_STR(fp.comp[LR_COMP_DISK_SERIAL].value, "LOOPDISK");
		lr_fingerprint_done(&fp);
	}

	/* A loop device backed by a file on itself must not hang. */
	snprintf(backing, sizeof(backing), "%s\n", image);
	puts_file(root, "sys/devices/virtual/block/loop0/loop/backing_file", backing);
	link_to(root, dev_entry(image), "../../devices/virtual/block/loop0");
	CHECK(lr_fingerprint_read(image, &fp) == 0);
	CHECK(fp.comp[LR_COMP_DISK_SERIAL].error == -ELOOP);
	lr_fingerprint_done(&fp);
}

/* QEMU's raspi machines and unprogrammed boards report a zero serial. */
static void test_zero_serial(void)
{
	const char *root = new_host("zero");
	struct lr_fingerprint fp;
	uint8_t digest[32];

	put(root, "proc/device-tree/model", "Raspberry Pi 3 Model B", 23);
	put(root, "proc/device-tree/serial-number", "0x0000000000000000", 19);
	puts_file(root, "proc/cpuinfo", "Hardware\t: BCM2835\nSerial\t\t: 0000000000000000\n");
	CHECK(lr_fingerprint_read(NULL, &fp) == 0);
	CHECK(fp.is_pi);
	CHECK(!fp.comp[LR_COMP_BOARD_SERIAL].value);
	CHECK(fp.comp[LR_COMP_BOARD_SERIAL].error == -ENODATA);
	CHECK(lr_fingerprint_default_mask(&fp) == 0);
	last_error[0] = '\0';
	CHECK(lr_fingerprint_digest(&fp, BIT(LR_COMP_BOARD_SERIAL), digest) == -ENOENT);
	CHECK(strstr(last_error, "board serial") && strstr(last_error, "no usable value"));
	lr_fingerprint_done(&fp);

	/* A zero device tree serial falls through to a real one in /proc/cpuinfo. */
	puts_file(root, "proc/cpuinfo", cpuinfo);
	CHECK(lr_fingerprint_read(NULL, &fp) == 0);
	CHECK_STR(fp.comp[LR_COMP_BOARD_SERIAL].value, "10000000c0ffee42");
	lr_fingerprint_done(&fp);
}

static void fake_fp(struct lr_fingerprint *fp, char *values[LR_COMP_MAX])
{
	memset(fp, 0, sizeof(*fp));
	for (int i = 0; i < LR_COMP_MAX; i++)
		fp->comp[i].value = values[i];
}

static void hex(const uint8_t d[32], char out[65])
{
	lr_hex(d, 32, out);
}

static void test_digest(void)
{
	char board[] = "10000000c0ffee42", cid[] = PI_CID, disk[] = "ABC123xyz";
	char uuid[] = "4c4c4544-0042-3510-8051-b4c04f564e32", other[] = "10000000c0ffee43";
	char *values[LR_COMP_MAX] = { board, cid, disk, uuid };
	uint32_t pi = BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID);
	struct lr_fingerprint fp;
	uint8_t d1[32], d2[32], d3[32];
	char h[65];

	fake_fp(&fp, values);
	/* Known answers, computed once (and cross-checked with Python's hashlib). */
	CHECK(lr_fingerprint_digest(&fp, pi, d1) == 0);
	hex(d1, h);
	CHECK_STR(h, "a5ca0753adf8c9f1bc0d0eda52136965721ba7b3042a54559ca1e76c3a84438d");
	CHECK(lr_fingerprint_digest(&fp, LR_BIND_ALL & ~BIT(LR_COMP_BOOT_FILES), d2) == 0);
	hex(d2, h);
	CHECK_STR(h, "153202447dcee59ef84e0054f8878f298ed658d66bd455efe8efc2eee46a0dec");
	CHECK(lr_fingerprint_digest(&fp, LR_BIND_NONE, d3) == 0);
	CHECK(lr_sha256("lockroot-fingerprint-v1", 24, d2) == 0);
	CHECK(memcmp(d2, d3, 32) == 0);
	CHECK(memcmp(d1, d3, 32) != 0);

	/* An unselected component does not matter, a selected one does. */
	fp.comp[LR_COMP_DMI_UUID].value = NULL;
	fp.comp[LR_COMP_DISK_SERIAL].value = other;
	CHECK(lr_fingerprint_digest(&fp, pi, d2) == 0);
	CHECK(memcmp(d1, d2, 32) == 0);
	fp.comp[LR_COMP_BOARD_SERIAL].value = other;
	CHECK(lr_fingerprint_digest(&fp, pi, d2) == 0);
	CHECK(memcmp(d1, d2, 32) != 0);
	/* Moving bytes between fields changes the encoding, hence the digest. */
	char b2[] = "10000000c0ffee4", c2[] = "2" PI_CID;
	fp.comp[LR_COMP_BOARD_SERIAL].value = b2;
	fp.comp[LR_COMP_SD_CID].value = c2;
	CHECK(lr_fingerprint_digest(&fp, pi, d2) == 0);
	CHECK(memcmp(d1, d2, 32) != 0);

	CHECK(lr_fingerprint_digest(&fp, BIT(LR_COMP_MAX), d2) == -EINVAL);
	fp.comp[LR_COMP_DMI_UUID].error = -EACCES;
	last_error[0] = '\0';
	CHECK(lr_fingerprint_digest(&fp, BIT(LR_COMP_DMI_UUID), d2) == -ENOENT);
	CHECK(strstr(last_error, "DMI product UUID") && strstr(last_error, "Permission denied"));
}

static void test_bind(void)
{
	uint32_t mask = 0xdead;
	bool def = true;
	char buf[128];

	CHECK(lr_bind_parse("board-serial,sd-cid", &mask, &def) == 0);
	CHECK(mask == (BIT(LR_COMP_BOARD_SERIAL) | BIT(LR_COMP_SD_CID)) && !def);
	CHECK(lr_bind_parse("dmi-uuid,disk-serial,dmi-uuid", &mask, &def) == 0);
	CHECK(mask == (BIT(LR_COMP_DMI_UUID) | BIT(LR_COMP_DISK_SERIAL)) && !def);
	CHECK(lr_bind_parse("none", &mask, &def) == 0);
	CHECK(mask == 0 && !def);
	CHECK(lr_bind_parse("default", &mask, &def) == 0);
	CHECK(def);
	def = false;
	CHECK(lr_bind_parse("", &mask, &def) == 0);
	CHECK(def);

	mask = 7;
	def = false;
	last_error[0] = '\0';
	CHECK(lr_bind_parse("sd-cid,tpm", &mask, &def) == -EINVAL);
	CHECK_STR(last_error, "unknown component 'tpm' (known: board-serial, sd-cid, disk-serial, dmi-uuid, boot-files)");
	CHECK(mask == 7 && !def);
	CHECK(lr_bind_parse("Board-Serial", &mask, &def) == -EINVAL);
	CHECK(lr_bind_parse(",", &mask, &def) == -EINVAL);
	CHECK(lr_bind_parse("none,sd-cid", &mask, &def) == -EINVAL);

	lr_bind_format(LR_BIND_ALL, buf, sizeof(buf));
	CHECK_STR(buf, "board-serial,sd-cid,disk-serial,dmi-uuid,boot-files");
	CHECK(lr_bind_parse(buf, &mask, &def) == 0 && mask == LR_BIND_ALL);
	lr_bind_format(BIT(LR_COMP_SD_CID) | BIT(LR_COMP_DMI_UUID), buf, sizeof(buf));
	CHECK_STR(buf, "sd-cid,dmi-uuid");
	lr_bind_format(0, buf, sizeof(buf));
	CHECK_STR(buf, "none");
	lr_bind_format(LR_BIND_ALL, buf, 8);
	CHECK_STR(buf, "board-s");

	for (int i = 0; i < LR_COMP_MAX; i++)
		CHECK(lr_component_from_name(lr_component_name(i)) == i);
	CHECK(lr_component_from_name("nope") == -EINVAL);
	CHECK_STR(lr_component_description(LR_COMP_SD_CID), "SD card CID");
	CHECK_STR(lr_component_description(LR_COMP_DMI_UUID), "DMI product UUID");
}

static void test_check(void)
{
	uint8_t salt[16], salt2[16];
	char a[5], b[5], c[5], d[5];

	for (int i = 0; i < 16; i++) {
		salt[i] = (uint8_t)i;
		salt2[i] = (uint8_t)(i + 1);
	}
	CHECK(lr_component_check(salt, LR_COMP_SD_CID, PI_CID, a) == 0);
	CHECK(lr_component_check(salt, LR_COMP_SD_CID, PI_CID, b) == 0);
	CHECK_STR(a, b);
	CHECK_STR(a, "a77b");
	CHECK(strlen(a) == 4 && strspn(a, "0123456789abcdef") == 4);
	CHECK(lr_component_check(salt, LR_COMP_SD_CID, EMMC_CID, c) == 0);
	CHECK(strcmp(a, c) != 0);
	CHECK(lr_component_check(salt2, LR_COMP_SD_CID, PI_CID, d) == 0);
	CHECK(strcmp(a, d) != 0);
	CHECK(lr_component_check(salt, LR_COMP_MAX, PI_CID, d) == -EINVAL);
	CHECK(lr_component_check(salt, LR_COMP_SD_CID, NULL, d) == -EINVAL);
}

int main(void)
{
	const char *base = getenv("TMPDIR");
	int fd;

	lr_set_log(check_log_hook, NULL);
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-fingerprint.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* The volume: an image file outside the fake hosts, on the real file system. */
	snprintf(image, sizeof(image), "%s/volume.img", tmpdir);
	fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror(image);
		return 1;
	}
	close(fd);

	test_canonical();
	test_pi4();
	test_pi_cpuinfo();
	test_pc();
	test_stacked();
	test_zero_serial();
	test_digest();
	test_bind();
	test_check();

	check_rm_tree(tmpdir);
	if (failures) {
		fprintf(stderr, "test-fingerprint: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test-fingerprint: all checks passed\n");
	return 0;
}
