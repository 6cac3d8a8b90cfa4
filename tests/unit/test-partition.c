/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Partition planning and writing on sparse image files in a temporary directory, laid out
 * by sfdisk and read back by sfdisk (an independent reader of what libfdisk wrote). Sizes,
 * names and the sysfs lookup of a partition's disk use a fake /sys. No root needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "partition.h"
#include "util.h"

#include "check.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)
#define LINUX_GPT_TYPE "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

/* Half of PATH_MAX leaves room for the paths built under it. */
static char tmpdir[PATH_MAX / 2];

static char *path_of(const char *rel)
{
	static char buf[4][PATH_MAX];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, rel);
	return buf[k];
}

/* A sparse image file of size bytes; false when the file system cannot hold one that big. */
static bool make_image(const char *img, uint64_t size)
{
	int fd = open(img, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	bool ok;

	if (fd < 0) {
		perror(img);
		exit(1);
	}
	ok = ftruncate(fd, (off_t)size) == 0;
	close(fd);
	return ok;
}

/* Lay out img with an sfdisk script. */
static void sfdisk(const char *img, const char *script)
{
	char cmd[PATH_MAX + 64];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sfdisk --quiet --no-reread --no-tell-kernel '%s' >/dev/null", img);
	p = popen(cmd, "w");
	if (!p) {
		perror("popen sfdisk");
		exit(1);
	}
	fputs(script, p);
	if (pclose(p) != 0) {
		fprintf(stderr, "sfdisk failed on %s with:\n%s", img, script);
		exit(1);
	}
}

struct sf_part {
	unsigned partno;
	uint64_t start, size;           /* sectors */
	char type[40];
	char uuid[40];
};

struct sf_table {
	char label[8];
	char id[40];
	uint64_t lastlba;
	size_t n;
	struct sf_part p[16];
};

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static uint64_t jnum(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

/* What sfdisk --json says about img; false when it finds no table. */
static bool sfdisk_read(const char *img, struct sf_table *t)
{
	char cmd[PATH_MAX + 64], buf[65536];
	json_object *root, *pt, *parts;
	size_t len;
	FILE *p;
	int status;

	memset(t, 0, sizeof(*t));
	snprintf(cmd, sizeof(cmd), "sfdisk --json '%s' 2>/dev/null", img);
	p = popen(cmd, "r");
	if (!p) {
		perror("popen sfdisk");
		exit(1);
	}
	len = fread(buf, 1, sizeof(buf) - 1, p);
	buf[len] = '\0';
	status = pclose(p);
	if (status != 0)
		return false;
	root = json_tokener_parse(buf);
	if (!root || !json_object_object_get_ex(root, "partitiontable", &pt)) {
		fprintf(stderr, "cannot parse sfdisk --json output:\n%s\n", buf);
		exit(1);
	}
	snprintf(t->label, sizeof(t->label), "%s", jstr(pt, "label"));
	snprintf(t->id, sizeof(t->id), "%s", jstr(pt, "id"));
	t->lastlba = jnum(pt, "lastlba");
	if (json_object_object_get_ex(pt, "partitions", &parts)) {
		for (size_t i = 0; i < json_object_array_length(parts) && t->n < LR_ELEMENTSOF(t->p); i++) {
			json_object *e = json_object_array_get_idx(parts, i);
			const char *node = jstr(e, "node");
			size_t k = strlen(node);
			struct sf_part *q = &t->p[t->n++];

			while (k > 0 && node[k - 1] >= '0' && node[k - 1] <= '9')
				k--;
			q->partno = (unsigned)atoi(node + k);
			q->start = jnum(e, "start");
			q->size = jnum(e, "size");
			snprintf(q->type, sizeof(q->type), "%s", jstr(e, "type"));
			snprintf(q->uuid, sizeof(q->uuid), "%s", jstr(e, "uuid"));
		}
	}
	json_object_put(root);
	return true;
}

static const struct sf_part *sf_find(const struct sf_table *t, unsigned partno)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->p[i].partno == partno)
			return &t->p[i];
	return NULL;
}

static bool sf_same(const struct sf_part *a, const struct sf_part *b)
{
	return a && b && a->start == b->start && a->size == b->size && strcmp(a->type, b->type) == 0;
}

/* The checks on a partition sfdisk reads back, in bytes. */
static bool sf_is(const struct sf_table *t, unsigned partno, uint64_t start, uint64_t size, const char *type)
{
	const struct sf_part *p = sf_find(t, partno);

	if (!p) {
		fprintf(stderr, "sfdisk finds no partition %u\n", partno);
		return false;
	}
	if (p->start * 512 != start || p->size * 512 != size || strcmp(p->type, type) != 0) {
		fprintf(stderr, "sfdisk: partition %u at %" PRIu64 "+%" PRIu64 " type %s\n", partno, p->start * 512,
			p->size * 512, p->type);
		return false;
	}
	return true;
}

/* A pattern in the first, a middle and the last MiB of a region, as data in a partition. */
static void write_pattern(const char *img, uint64_t start, uint64_t size, unsigned seed)
{
	static uint8_t buf[MIB];
	uint64_t at[3] = { start, start + size / 2, start + size - MIB };
	int fd = open(img, O_WRONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + seed);
	for (int i = 0; i < 3; i++)
		CHECK(pwrite(fd, buf, sizeof(buf), (off_t)at[i]) == (ssize_t)sizeof(buf));
	close(fd);
}

static void hash_range(const char *img, uint64_t start, uint64_t size, uint8_t out[32])
{
	uint8_t *buf = malloc(size);
	int fd = open(img, O_RDONLY | O_CLOEXEC);

	CHECK(buf && fd >= 0);
	CHECK(pread(fd, buf, size, (off_t)start) == (ssize_t)size);
	CHECK(lr_sha256(buf, size, out) == 0);
	close(fd);
	free(buf);
}

static void read_sector0(const char *img, uint8_t out[512])
{
	int fd = open(img, O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	CHECK(pread(fd, out, 512, 0) == 512);
	close(fd);
}

static int plan1(const struct lr_disk_info *info, const char *img, unsigned partno, uint64_t size,
		 bool reuse_ok, struct lr_disk_slot *slot)
{
	struct lr_disk_want w = { .partno = partno, .size = size, .reuse_ok = reuse_ok };

	return lr_disk_plan(info, img, &w, 1, slot);
}

/* ---- sizes and names ---- */

static void test_parse_size(void)
{
	uint64_t v = 0;

	CHECK(lr_parse_size("512M", &v) == 0 && v == 512 * MIB);
	CHECK(lr_parse_size("1.5G", &v) == 0 && v == 3 * GIB / 2);
	CHECK(lr_parse_size("2GiB", &v) == 0 && v == 2 * GIB);
	CHECK(lr_parse_size("2gib", &v) == 0 && v == 2 * GIB);
	CHECK(lr_parse_size("100", &v) == 0 && v == 100 * MIB);
	CHECK(lr_parse_size("1T", &v) == 0 && v == TIB);
	CHECK(lr_parse_size("64K", &v) == 0 && v == 64 * 1024);
	CHECK(lr_parse_size("0.5", &v) == 0 && v == MIB / 2);
	CHECK(lr_parse_size("16777215T", &v) == 0 && v == 16777215 * TIB);
	/* digits past the sixth are ignored */
	CHECK(lr_parse_size("1.0000019M", &v) == 0 && v == MIB + MIB / 1000000);
	CHECK(lr_parse_size("16777215.999999T", &v) == 0 && v == 16777215 * TIB + TIB * 999999 / 1000000);

	v = 42;
	CHECK(lr_parse_size("", &v) == -EINVAL);
	CHECK(lr_parse_size("abc", &v) == -EINVAL);
	CHECK(lr_parse_size("-1", &v) == -EINVAL);
	CHECK(lr_parse_size("5X", &v) == -EINVAL);
	CHECK(lr_parse_size("5GB", &v) == -EINVAL);
	CHECK(lr_parse_size("1.", &v) == -EINVAL);
	CHECK(lr_parse_size(".5G", &v) == -EINVAL);
	CHECK(lr_parse_size(" 5G", &v) == -EINVAL);
	CHECK(lr_parse_size("5G ", &v) == -EINVAL);
	CHECK(lr_parse_size("16777216T", &v) == -EINVAL);  /* 2^64 bytes */
	CHECK(lr_parse_size("99999999999999999999", &v) == -EINVAL);
	CHECK(lr_parse_size("18446744073709551615", &v) == -EINVAL);
	CHECK(v == 42);
}

static void test_format_size(void)
{
	char s[32];

	lr_format_size(0, s, sizeof(s));
	CHECK_STR(s, "0 B");
	lr_format_size(512, s, sizeof(s));
	CHECK_STR(s, "512 B");
	lr_format_size(800 * MIB, s, sizeof(s));
	CHECK_STR(s, "800 MiB");
	lr_format_size(3 * GIB / 2, s, sizeof(s));
	CHECK_STR(s, "1.5 GiB");
	lr_format_size(1300 * MIB, s, sizeof(s));
	CHECK_STR(s, "1.3 GiB");
	lr_format_size(2150 * MIB, s, sizeof(s));
	CHECK_STR(s, "2.1 GiB");
	lr_format_size(TIB, s, sizeof(s));
	CHECK_STR(s, "1 TiB");
	lr_format_size(UINT64_MAX, s, sizeof(s));
	CHECK_STR(s, "16.0 EiB");    /* not exact: rounded, with its decimal */
}

static void test_partition_name(void)
{
	char s[64];

	lr_disk_partition_name("/dev/sda", 1, s, sizeof(s));
	CHECK_STR(s, "/dev/sda1");
	lr_disk_partition_name("/dev/mmcblk0", 2, s, sizeof(s));
	CHECK_STR(s, "/dev/mmcblk0p2");
	lr_disk_partition_name("/dev/nvme0n1", 3, s, sizeof(s));
	CHECK_STR(s, "/dev/nvme0n1p3");
	lr_disk_partition_name("/dev/loop0", 1, s, sizeof(s));
	CHECK_STR(s, "/dev/loop0p1");
	lr_disk_partition_name("/dev/vdb", 12, s, sizeof(s));
	CHECK_STR(s, "/dev/vdb12");
}

/* A block device in the fake /sys: the class link and the device directory it points to. */
static void fake_block(const char *devpath, const char *name, const char *partition)
{
	char dir[PATH_MAX], link[PATH_MAX], target[PATH_MAX];

	snprintf(dir, sizeof(dir), "sys/devices/%s", devpath);
	snprintf(target, sizeof(target), "%s/partition", path_of(dir));
	for (char *p = target + strlen(tmpdir) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(target, 0755);
		*p = '/';
	}
	if (partition) {
		FILE *f = fopen(target, "w");

		CHECK(f != NULL);
		if (f) {
			fprintf(f, "%s\n", partition);
			fclose(f);
		}
	}
	snprintf(link, sizeof(link), "sys/class/block/%s", name);
	snprintf(target, sizeof(target), "../../devices/%s", devpath);
	CHECK(symlink(target, path_of(link)) == 0);
}

static void test_of_partition(void)
{
	char disk[64];
	unsigned partno = 0;

	CHECK(mkdir(path_of("sys"), 0755) == 0);
	CHECK(mkdir(path_of("sys/class"), 0755) == 0);
	CHECK(mkdir(path_of("sys/class/block"), 0755) == 0);
	fake_block("pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", "sda", NULL);
	fake_block("pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1", "sda1", "1");
	fake_block("platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0", "mmcblk0", NULL);
	fake_block("platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p2",
		   "mmcblk0p2", "2");
	fake_block("pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p3", "nvme0n1p3", "3");
	fake_block("virtual/block/dm-0", "dm-0", NULL);
	setenv("LOCKROOT_SYSROOT", tmpdir, 1);

	CHECK(lr_disk_of_partition("/dev/sda1", disk, sizeof(disk), &partno) == 0);
	CHECK_STR(disk, "/dev/sda");
	CHECK(partno == 1);
	CHECK(lr_disk_of_partition("/dev/mmcblk0p2", disk, sizeof(disk), &partno) == 0);
	CHECK_STR(disk, "/dev/mmcblk0");
	CHECK(partno == 2);
	CHECK(lr_disk_of_partition("/dev/nvme0n1p3", disk, sizeof(disk), &partno) == 0);
	CHECK_STR(disk, "/dev/nvme0n1");
	CHECK(partno == 3);
	CHECK(lr_disk_of_partition("/dev/sda", disk, sizeof(disk), &partno) == -EINVAL);
	CHECK(strstr(last_error, "not a partition"));
	CHECK(lr_disk_of_partition("/dev/dm-0", disk, sizeof(disk), &partno) == -EINVAL);
	CHECK(lr_disk_of_partition("/dev/sdz9", disk, sizeof(disk), &partno) == -ENOENT);
	CHECK(lr_disk_of_partition("/dev/mmcblk0p2", disk, 8, &partno) == -ENAMETOOLONG);
	unsetenv("LOCKROOT_SYSROOT");
}

/* ---- tables ---- */

static void test_empty(void)
{
	const char *img = path_of("empty.img");
	struct lr_disk_info info, again;
	struct lr_disk_want w = { 0 };
	struct lr_disk_slot slot;
	struct sf_table t;
	char dev[PATH_MAX];

	make_image(img, 64 * MIB);
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.label == LR_LABEL_NONE);
	CHECK(info.size == 64 * MIB);
	CHECK(info.sector_size == 512);
	CHECK(info.n_parts == 0);
	CHECK_STR(info.disk_id, "");
	CHECK_STR(info.signature, "");
	CHECK(info.max_partno == 4);
	CHECK(info.free_start == MIB && info.free_size == 63 * MIB && info.free_total == 63 * MIB);

	CHECK(lr_disk_plan(&info, img, &w, 1, &slot) == 0);
	CHECK(slot.partno == 1 && slot.start == MIB && slot.size == 63 * MIB && !slot.reuse);
	snprintf(dev, sizeof(dev), "%s partition 1", img);
	CHECK_STR(slot.device, strlen(dev) < sizeof(slot.device) ? dev : slot.device);

	CHECK(lr_disk_apply(img, &info, &slot, 1) == 0);
	CHECK(sfdisk_read(img, &t));
	CHECK_STR(t.label, "dos");
	CHECK(t.n == 1);
	CHECK(sf_is(&t, 1, MIB, 63 * MIB, "83"));

	CHECK(lr_disk_inspect(img, &again) == 0);
	CHECK(again.label == LR_LABEL_DOS);
	CHECK(again.n_parts == 1 && again.parts[0].partno == 1);
	CHECK(again.free_total == 0);
	CHECK(strncmp(again.disk_id, "0x", 2) == 0);
	CHECK_STR(again.disk_id, t.id);
	/* PARTUUID as the kernel makes it for MBR */
	snprintf(dev, sizeof(dev), "%s-01", t.id + 2);
	CHECK_STR(again.parts[0].uuid, dev);

	/* the same plan again: the table is not the one it was made for */
	CHECK(lr_disk_apply(img, &info, &slot, 1) == -ESTALE);
	CHECK(strstr(last_error, "changed since the plan"));
}

/*
 * 1700 MiB: partition 1 at 1 MiB (64 MiB), a 1300 MiB hole where partition 2 was,
 * partition 3 at 1365 MiB (64 MiB), 271 MiB free at the end.
 */
#define P1_START (1 * MIB)
#define P3_START (1365 * MIB)
#define PX_SIZE (64 * MIB)
#define TAIL (1429 * MIB)

static void make_hole_image(const char *img)
{
	char cmd[PATH_MAX + 64];

	make_image(img, 1700 * MIB);
	sfdisk(img, "label: dos\n"
		    "start=2048, size=131072, type=83\n"
		    "start=133120, size=2662400, type=83\n"
		    "start=2795520, size=131072, type=c\n");
	snprintf(cmd, sizeof(cmd), "sfdisk --quiet --no-reread --no-tell-kernel --delete '%s' 2 >/dev/null", img);
	CHECK(system(cmd) == 0);
}

static void test_hole(void)
{
	const char *img = path_of("hole.img");
	struct lr_disk_want w[2] = { { .partno = 2, .size = 1200 * MIB }, { .partno = 0, .size = 256 * MIB } };
	struct lr_disk_slot s[2];
	struct lr_disk_info info;
	struct sf_table before, after;
	uint8_t h1[32], h3[32], k1[32], k3[32], mbr0[512], mbr1[512];
	char dev[PATH_MAX];

	make_hole_image(img);
	CHECK(sfdisk_read(img, &before));
	CHECK(before.n == 2);
	write_pattern(img, P1_START, PX_SIZE, 1);
	write_pattern(img, P3_START, PX_SIZE, 3);
	hash_range(img, P1_START, PX_SIZE, h1);
	hash_range(img, P3_START, PX_SIZE, h3);
	read_sector0(img, mbr0);

	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.label == LR_LABEL_DOS);
	CHECK(info.n_parts == 2);
	CHECK(info.parts[0].partno == 1 && info.parts[0].start == P1_START && info.parts[0].size == PX_SIZE);
	CHECK_STR(info.parts[0].type, "83");
	CHECK(info.parts[1].partno == 3 && info.parts[1].start == P3_START && info.parts[1].size == PX_SIZE);
	CHECK_STR(info.parts[1].type, "c");
	CHECK(info.n_free == 2);
	CHECK(info.free[0].start == 65 * MIB && info.free[0].size == 1300 * MIB);
	CHECK(info.free[1].start == TAIL && info.free[1].size == 271 * MIB);
	CHECK(info.free_start == 65 * MIB && info.free_size == 1300 * MIB);
	CHECK(info.free_total == 1571 * MIB);

	CHECK(lr_disk_plan(&info, img, w, 2, s) == 0);
	CHECK(s[0].partno == 2 && s[0].start == 65 * MIB && s[0].size == 1200 * MIB && !s[0].reuse);
	/* 100 MiB are left in the hole: the second goes to the end, with the next free number */
	CHECK(s[1].partno == 4 && s[1].start == TAIL && s[1].size == 256 * MIB && !s[1].reuse);
	snprintf(dev, sizeof(dev), "%s partition 4", img);
	if (strlen(dev) < sizeof(s[1].device))
		CHECK_STR(s[1].device, dev);

	CHECK(lr_disk_apply(img, &info, s, 2) == 0);
	CHECK(sfdisk_read(img, &after));
	CHECK_STR(after.label, "dos");
	CHECK_STR(after.id, before.id);
	CHECK(after.n == 4);
	CHECK(sf_same(sf_find(&after, 1), sf_find(&before, 1)));
	CHECK(sf_same(sf_find(&after, 3), sf_find(&before, 3)));
	CHECK(sf_is(&after, 2, 65 * MIB, 1200 * MIB, "83"));
	CHECK(sf_is(&after, 4, TAIL, 256 * MIB, "83"));

	/* byte for byte: boot code, disk identifier and the entries of 1 and 3; data untouched */
	read_sector0(img, mbr1);
	CHECK(memcmp(mbr0, mbr1, 446) == 0);
	CHECK(memcmp(mbr0 + 446, mbr1 + 446, 16) == 0);
	CHECK(memcmp(mbr0 + 446 + 32, mbr1 + 446 + 32, 16) == 0);
	hash_range(img, P1_START, PX_SIZE, k1);
	hash_range(img, P3_START, PX_SIZE, k3);
	CHECK(memcmp(h1, k1, 32) == 0);
	CHECK(memcmp(h3, k3, 32) == 0);
}

static void test_reuse(void)
{
	const char *img = path_of("reuse.img");
	struct lr_disk_want w = { .partno = 2, .reuse_only = true };
	struct lr_disk_info info;
	struct lr_disk_slot slot;
	uint8_t mbr0[512], mbr1[512];

	make_hole_image(img);
	read_sector0(img, mbr0);
	CHECK(lr_disk_inspect(img, &info) == 0);

	CHECK(plan1(&info, img, 3, 0, true, &slot) == 0);
	CHECK(slot.reuse && slot.partno == 3 && slot.start == P3_START && slot.size == PX_SIZE);
	CHECK(strstr(slot.device, "partition 3"));
	CHECK(plan1(&info, img, 3, 32 * MIB, true, &slot) == 0);
	CHECK(slot.reuse && slot.size == PX_SIZE);
	/* reusing leaves the table as it is */
	CHECK(lr_disk_apply(img, &info, &slot, 1) == 0);
	read_sector0(img, mbr1);
	CHECK(memcmp(mbr0, mbr1, 512) == 0);

	CHECK(plan1(&info, img, 3, GIB, true, &slot) == -ENOSPC);
	CHECK(strstr(last_error, "partition 3 is 64 MiB, smaller than the 1 GiB asked for"));
	CHECK(plan1(&info, img, 3, 0, false, &slot) == -EEXIST);
	CHECK(strstr(last_error, "partition 3 already exists (64 MiB)"));
	CHECK(lr_disk_plan(&info, img, &w, 1, &slot) == -ENOENT);
	CHECK(strstr(last_error, ": partition 2 does not exist (partitions: 1, 3); name one of them"));
	/* without reuse_only, the free number 2 is a new partition */
	CHECK(plan1(&info, img, 2, 0, true, &slot) == 0);
	CHECK(!slot.reuse && slot.partno == 2 && slot.start == 65 * MIB && slot.size == 1300 * MIB);
}

static void test_errors(void)
{
	const char *img = path_of("errors.img");
	struct lr_disk_want twice[2] = { { .partno = 2, .size = 10 * MIB }, { .partno = 2, .size = 20 * MIB } };
	struct lr_disk_want rest2[2] = { { .partno = 0 }, { .partno = 0 } };
	struct lr_disk_want many[2] = { { .size = 1200 * MIB }, { .size = 200 * MIB } };
	struct lr_disk_slot s[2];
	struct lr_disk_info info;
	char msg[512];

	make_hole_image(img);
	CHECK(lr_disk_inspect(img, &info) == 0);

	CHECK(plan1(&info, img, 0, 3 * GIB / 2, false, s) == -ENOSPC);
	snprintf(msg, sizeof(msg), "%s: no free space for a 1.5 GiB partition; the largest free region is 1.3 GiB at 65 MiB",
		 img);
	CHECK_STR(last_error, msg);
	/* the largest region named is what is left once the earlier wants are placed */
	CHECK(lr_disk_plan(&info, img, many, 2, s) == 0);
	many[1].size = 300 * MIB;
	CHECK(lr_disk_plan(&info, img, many, 2, s) == -ENOSPC);
	CHECK(strstr(last_error, "a 300 MiB partition; the largest free region is 271 MiB at 1.4 GiB"));

	CHECK(lr_disk_plan(&info, img, twice, 2, s) == -EINVAL);
	CHECK(strstr(last_error, "partition 2 is named twice"));
	CHECK(lr_disk_plan(&info, img, rest2, 2, s) == -EINVAL);
	CHECK(plan1(&info, img, 200, 0, true, s) == -EINVAL);
	CHECK(plan1(&info, img, 0, 1000, false, s) == -EINVAL);
	/* new MBR partitions are primary: 6 could only be an existing logical one */
	CHECK(plan1(&info, img, 6, 0, true, s) == -ENOENT);

	/* four primary partitions: no number left */
	make_image(img, 64 * MIB);
	sfdisk(img, "label: dos\nsize=10MiB\nsize=10MiB\nsize=10MiB\nsize=10MiB\n");
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.n_parts == 4 && info.free_total > 0);
	CHECK(plan1(&info, img, 0, 10 * MIB, false, s) == -E2BIG);
	CHECK(strstr(last_error, "four primary partitions (partitions: 1, 2, 3, 4)"));

	/* a full drive */
	make_image(img, 64 * MIB);
	sfdisk(img, "label: dos\nsize=+\n");
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.n_free == 0);
	CHECK(plan1(&info, img, 0, 0, false, s) == -ENOSPC);
	CHECK(strstr(last_error, "no free space"));

	CHECK(lr_disk_inspect(tmpdir, &info) == -EINVAL);
	CHECK(lr_disk_inspect(path_of("missing.img"), &info) == -ENOENT);
}

/* MBR with an extended partition: new partitions are primary and stay out of it. */
static void test_extended(void)
{
	const char *img = path_of("extended.img");
	struct lr_disk_info info;
	struct lr_disk_slot slot;
	struct sf_table before, after;

	make_image(img, 1024 * MIB);
	sfdisk(img, "label: dos\n"
		    "start=2048, size=131072, type=83\n"
		    "start=133120, size=819200, type=5\n"
		    "start=135168, size=204800, type=83\n");
	CHECK(sfdisk_read(img, &before));
	CHECK(sf_find(&before, 5) != NULL);
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.n_parts == 3);
	/* only the space after the extended partition (465 MiB on) is for a primary */
	CHECK(info.n_free == 1 && info.free[0].start == 465 * MIB);

	CHECK(plan1(&info, img, 2, 0, true, &slot) == -EINVAL);
	CHECK(strstr(last_error, "extended partition"));
	CHECK(plan1(&info, img, 5, 0, true, &slot) == 0);
	CHECK(slot.reuse && slot.start == 66 * MIB && slot.size == 100 * MIB);
	CHECK(plan1(&info, img, 0, 100 * MIB, false, &slot) == 0);
	CHECK(slot.partno == 3 && slot.start == 465 * MIB && slot.size == 100 * MIB);

	CHECK(lr_disk_apply(img, &info, &slot, 1) == 0);
	CHECK(sfdisk_read(img, &after));
	CHECK(after.n == 4);
	CHECK(sf_same(sf_find(&after, 1), sf_find(&before, 1)));
	CHECK(sf_same(sf_find(&after, 2), sf_find(&before, 2)));
	CHECK(sf_same(sf_find(&after, 5), sf_find(&before, 5)));
	CHECK(sf_is(&after, 3, 465 * MIB, 100 * MIB, "83"));
}

static void test_gpt(void)
{
	const char *img = path_of("gpt.img");
	struct lr_disk_info info, again;
	struct lr_disk_slot slot;
	struct sf_table before, after;
	char cmd[PATH_MAX + 64], uuid[40];

	make_image(img, 512 * MIB);
	sfdisk(img, "label: gpt\nstart=2048, size=131072, type=" LINUX_GPT_TYPE "\n");
	CHECK(sfdisk_read(img, &before));
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.label == LR_LABEL_GPT);
	CHECK(info.max_partno == 128);
	CHECK(info.n_parts == 1);
	CHECK_STR(info.parts[0].type, LINUX_GPT_TYPE);
	snprintf(uuid, sizeof(uuid), "%s", before.p[0].uuid);
	for (char *c = uuid; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
	CHECK_STR(info.parts[0].uuid, uuid);
	/* the backup table takes the last sectors: the free space ends a MiB short */
	CHECK(info.n_free == 1 && info.free[0].start == 65 * MIB && info.free[0].size == 446 * MIB);

	CHECK(plan1(&info, img, 0, 100 * MIB, false, &slot) == 0);
	CHECK(slot.partno == 2 && slot.start == 65 * MIB && slot.size == 100 * MIB);
	CHECK(lr_disk_apply(img, &info, &slot, 1) == 0);
	CHECK(sfdisk_read(img, &after));
	CHECK_STR(after.label, "gpt");
	CHECK_STR(after.id, before.id);
	CHECK(after.n == 2);
	CHECK(sf_same(sf_find(&after, 1), sf_find(&before, 1)));
	CHECK_STR(sf_find(&after, 1) ? sf_find(&after, 1)->uuid : "", before.p[0].uuid);
	CHECK(sf_is(&after, 2, 65 * MIB, 100 * MIB, LINUX_GPT_TYPE));
	/* both headers and the entries check out */
	snprintf(cmd, sizeof(cmd), "sfdisk --verify '%s' >/dev/null 2>&1", img);
	CHECK(system(cmd) == 0);

	CHECK(lr_disk_inspect(img, &again) == 0);
	CHECK(again.n_parts == 2 && again.parts[1].partno == 2);
	CHECK(plan1(&again, img, 129, 0, false, &slot) == -EINVAL);
}

/* A drive without a table above 2 TiB gets GPT (sparse, so it costs nothing). */
static void test_big(void)
{
	const char *img = path_of("big.img");
	struct lr_disk_want w = { 0 };
	struct lr_disk_info info;
	struct lr_disk_slot slot;
	struct sf_table t;

	if (!make_image(img, 3 * TIB)) {
		fprintf(stderr, "test_big: skipped, no 3 TiB sparse file on this file system\n");
		return;
	}
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.label == LR_LABEL_NONE && info.max_partno == 128);
	CHECK(lr_disk_plan(&info, img, &w, 1, &slot) == 0);
	CHECK(slot.start == MIB && slot.size == 3 * TIB - 2 * MIB);
	CHECK(lr_disk_apply(img, &info, &slot, 1) == 0);
	CHECK(sfdisk_read(img, &t));
	CHECK_STR(t.label, "gpt");
	CHECK(sf_is(&t, 1, MIB, 3 * TIB - 2 * MIB, LINUX_GPT_TYPE));
	CHECK(t.p[0].start + t.p[0].size - 1 <= t.lastlba);
	unlink(img);
}

/* Nothing is written over a drive that holds something but no table. */
static void test_signature(void)
{
	const char *img = path_of("swap.img");
	struct lr_disk_info info;
	struct lr_disk_slot slot;
	char cmd[PATH_MAX + 64];

	make_image(img, 64 * MIB);
	snprintf(cmd, sizeof(cmd), "mkswap '%s' >/dev/null 2>&1", img);
	if (system(cmd) != 0) {
		fprintf(stderr, "test_signature: skipped, no mkswap\n");
		return;
	}
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(info.label == LR_LABEL_NONE);
	CHECK_STR(info.signature, "swap");
	CHECK(plan1(&info, img, 0, 0, false, &slot) == -EBUSY);
	CHECK(strstr(last_error, "holds swap data") && strstr(last_error, "wipefs -a"));
}

/* The table changed between plan and apply: nothing is written. */
static void test_stale(void)
{
	const char *img = path_of("stale.img");
	struct lr_disk_info info;
	struct lr_disk_slot slot;
	struct sf_table mid, after;
	char cmd[PATH_MAX + 64];

	make_hole_image(img);
	CHECK(lr_disk_inspect(img, &info) == 0);
	CHECK(plan1(&info, img, 2, 100 * MIB, false, &slot) == 0);
	snprintf(cmd, sizeof(cmd), "echo 'start=1495040, size=20480' | sfdisk --quiet --no-reread --no-tell-kernel "
		 "--append '%s' >/dev/null", img);
	CHECK(system(cmd) == 0);
	CHECK(sfdisk_read(img, &mid));
	CHECK(lr_disk_apply(img, &info, &slot, 1) == -ESTALE);
	snprintf(cmd, sizeof(cmd), "the partition table of %s changed since the plan", img);
	CHECK(strstr(last_error, cmd));
	CHECK(sfdisk_read(img, &after));
	CHECK(after.n == mid.n && after.n == 3);
	CHECK(sf_same(sf_find(&after, 2), sf_find(&mid, 2)));
	CHECK(sf_find(&after, 2) && sf_find(&after, 2)->start == 1495040);

	/* slots that do not fit the table they claim to come from */
	CHECK(lr_disk_inspect(img, &info) == 0);
	slot.partno = 4;
	slot.start = P3_START;
	slot.size = 10 * MIB;
	slot.reuse = false;
	CHECK(lr_disk_apply(img, &info, &slot, 1) == -EINVAL);
}

int main(void)
{
	const char *t = getenv("TMPDIR"), *path = getenv("PATH");
	char newpath[4096];

	lr_set_log(check_log_hook, NULL);
	/* sfdisk and mkswap live in sbin, which a user's PATH may lack */
	snprintf(newpath, sizeof(newpath), "/usr/sbin:/sbin:%s", path ? path : "/usr/bin:/bin");
	setenv("PATH", newpath, 1);
	snprintf(tmpdir, sizeof(tmpdir), "%s/lockroot-partition-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_parse_size();
	test_format_size();
	test_partition_name();
	test_of_partition();
	test_empty();
	test_hole();
	test_reuse();
	test_errors();
	test_extended();
	test_gpt();
	test_big();
	test_signature();
	test_stale();
	check_rm_tree(tmpdir);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
