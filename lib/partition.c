/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Partition tables through libfdisk. lr_disk_inspect() reads the table into a plain struct,
 * lr_disk_plan() works on that struct alone, and lr_disk_apply() reads the table again and
 * writes only if it is still the one that was planned on, so the user confirms what is
 * actually written. libfdisk prints nothing here: without an ask callback its messages
 * and questions go nowhere (a question fails, which we see as an error).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libfdisk.h>
#include <limits.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "partition.h"
#include "util.h"

#define MIB (UINT64_C(1) << 20)
#define TIB (UINT64_C(1) << 40)
#define GPT_ABOVE (2 * TIB)                /* a drive without a table gets GPT above this */
#define MBR_MAX_PRIMARY 4
#define SETTLE_MS 10000                    /* for the lock and the device nodes */
#define POLL_MS 20
#define LIST_LEN (LR_DISK_MAX_PARTS * 5)

static uint64_t align_up(uint64_t v)
{
	return (v + LR_DISK_ALIGN - 1) / LR_DISK_ALIGN * LR_DISK_ALIGN;
}

static uint64_t align_down(uint64_t v)
{
	return v / LR_DISK_ALIGN * LR_DISK_ALIGN;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void sleep_poll(void)
{
	struct timespec d = { 0, POLL_MS * 1000000L };

	nanosleep(&d, NULL);
}

/* The table new partitions go in, for messages; not for MBR, whose numbers are special. */
static const char *table_name(const struct lr_disk_info *info)
{
	if (info->label == LR_LABEL_GPT)
		return "the GPT";
	return info->max_partno == MBR_MAX_PRIMARY ? "the new MBR table" : "the new GPT";
}

/* "1, 3, 5" or "none". */
static void part_list(const struct lr_disk_info *info, char *out, size_t len)
{
	size_t k = 0;

	snprintf(out, len, "none");
	for (size_t i = 0; i < info->n_parts && k < len; i++) {
		int w = snprintf(out + k, len - k, "%s%u", i ? ", " : "", info->parts[i].partno);

		if (w < 0)
			break;
		k += (size_t)w;
	}
}

static const struct lr_disk_part *find_part(const struct lr_disk_info *info, unsigned partno)
{
	for (size_t i = 0; i < info->n_parts; i++)
		if (info->parts[i].partno == partno)
			return &info->parts[i];
	return NULL;
}

static bool is_mbr_extended(const struct lr_disk_info *info, const struct lr_disk_part *p)
{
	return info->label == LR_LABEL_DOS &&
	       (strcmp(p->type, "5") == 0 || strcmp(p->type, "f") == 0 || strcmp(p->type, "85") == 0);
}

static void lowercase(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* The kernel's name of a block device given by any path (/dev/disk/by-id/...). */
static void kernel_path(const char *path, char *out, size_t len)
{
	_cleanup_free_ char *real = realpath(path, NULL);

	snprintf(out, len, "%s", real ? real : path);
}

/* ---- reading ---- */

static int open_disk(const char *path, bool readonly, struct fdisk_context **out)
{
	struct fdisk_context *cxt = fdisk_new_context();
	int r;

	if (!cxt)
		return -ENOMEM;
	r = fdisk_assign_device(cxt, path, readonly);
	if (r < 0) {
		fdisk_unref_context(cxt);
		return lr_error_code(r, "cannot open %s: %s%s", path, strerror(-r),
				     r == -EACCES || r == -EPERM ? "; partitioning a drive needs root" : "");
	}
	*out = cxt;
	return 0;
}

static int cmp_region(const void *a, const void *b)
{
	const struct lr_disk_region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void add_region(struct lr_disk_info *info, uint64_t start, uint64_t end)
{
	start = align_up(start);
	end = align_down(end);
	if (end <= start || info->n_free >= LR_ELEMENTSOF(info->free))
		return;
	info->free[info->n_free].start = start;
	info->free[info->n_free].size = end - start;
	info->n_free++;
}

/* Free space as libfdisk sees it, aligned; on MBR without the space inside an extended
 * partition (only logical partitions go there) and below 2^32 sectors (what MBR can
 * address). */
static int read_free(struct fdisk_context *cxt, const char *path, struct lr_disk_info *info)
{
	struct fdisk_table *tb = NULL;
	uint64_t ss = info->sector_size;
	uint64_t limit = info->label == LR_LABEL_DOS ? (UINT64_C(1) << 32) * ss : UINT64_MAX;
	int r;

	r = fdisk_get_freespaces(cxt, &tb);
	if (r < 0) {
		r = lr_error_code(r, "cannot find the free space of %s: %s", path, strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < fdisk_table_get_nents(tb); i++) {
		struct fdisk_partition *pa = fdisk_table_get_partition(tb, i);
		uint64_t start, end;

		if (!pa || fdisk_partition_is_nested(pa) || !fdisk_partition_has_start(pa) ||
		    !fdisk_partition_has_size(pa))
			continue;
		start = fdisk_partition_get_start(pa) * ss;
		end = start + fdisk_partition_get_size(pa) * ss;
		add_region(info, start, end < limit ? end : limit);
	}
out:
	fdisk_unref_table(tb);
	return r;
}

static void type_string(struct fdisk_partition *pa, char *out, size_t len)
{
	struct fdisk_parttype *t = fdisk_partition_get_type(pa);
	const char *s = t ? fdisk_parttype_get_string(t) : NULL;

	if (s)
		snprintf(out, len, "%s", s);
	else if (t)
		snprintf(out, len, "%x", fdisk_parttype_get_code(t));
	else
		out[0] = '\0';
}

static int read_parts(struct fdisk_context *cxt, const char *path, struct lr_disk_info *info)
{
	struct fdisk_table *tb = NULL;
	uint64_t ss = info->sector_size;
	int r;

	r = fdisk_get_partitions(cxt, &tb);
	if (r < 0) {
		r = lr_error_code(r, "cannot read the partitions of %s: %s", path, strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < fdisk_table_get_nents(tb); i++) {
		struct fdisk_partition *pa = fdisk_table_get_partition(tb, i);
		struct lr_disk_part *p;
		const char *uuid;

		if (!pa || !fdisk_partition_has_partno(pa) || !fdisk_partition_has_start(pa))
			continue;
		if (info->n_parts == LR_DISK_MAX_PARTS) {
			r = lr_error_code(-E2BIG, "%s has more than %d partitions: lockroot does not handle that many",
					  path, LR_DISK_MAX_PARTS);
			goto out;
		}
		p = &info->parts[info->n_parts++];
		p->partno = (unsigned)fdisk_partition_get_partno(pa) + 1;
		p->start = fdisk_partition_get_start(pa) * ss;
		p->size = fdisk_partition_has_size(pa) ? fdisk_partition_get_size(pa) * ss : 0;
		type_string(pa, p->type, sizeof(p->type));
		uuid = fdisk_partition_get_uuid(pa);
		if (info->label == LR_LABEL_GPT && uuid) {
			snprintf(p->uuid, sizeof(p->uuid), "%s", uuid);
			lowercase(p->uuid);
		} else if (info->label == LR_LABEL_DOS && strlen(info->disk_id) > 2) {
			/* the kernel's PARTUUID for MBR: disk identifier and partition number */
			snprintf(p->uuid, sizeof(p->uuid), "%.8s-%02x", info->disk_id + 2, p->partno);
		}
	}
out:
	fdisk_unref_table(tb);
	return r;
}

static int read_info(struct fdisk_context *cxt, const char *path, struct lr_disk_info *info)
{
	_cleanup_free_ char *id = NULL;
	int r;

	memset(info, 0, sizeof(*info));
	info->sector_size = (unsigned)fdisk_get_sector_size(cxt);
	info->size = fdisk_get_nsectors(cxt) * info->sector_size;

	if (!fdisk_has_label(cxt)) {
		const char *sig = fdisk_get_collision(cxt);
		/* GPT keeps a backup of its entries (16 KiB) and header in the last sectors */
		uint64_t reserve = info->size > GPT_ABOVE ? 16384 + info->sector_size : 0;

		info->label = LR_LABEL_NONE;
		info->max_partno = info->size > GPT_ABOVE ? LR_DISK_MAX_PARTS : MBR_MAX_PRIMARY;
		snprintf(info->signature, sizeof(info->signature), "%s", sig ? sig : "");
		if (info->size > reserve)
			add_region(info, LR_DISK_ALIGN, info->size - reserve);
		return 0;
	}
	if (fdisk_is_label(cxt, DOS)) {
		info->label = LR_LABEL_DOS;
		info->max_partno = MBR_MAX_PRIMARY;
	} else if (fdisk_is_label(cxt, GPT)) {
		size_t n = fdisk_get_npartitions(cxt);

		info->label = LR_LABEL_GPT;
		info->max_partno = n < LR_DISK_MAX_PARTS ? (unsigned)n : LR_DISK_MAX_PARTS;
	} else {
		struct fdisk_label *lb = fdisk_get_label(cxt, NULL);

		return lr_error_code(-ENOTSUP, "%s has a %s partition table: lockroot handles MBR (dos) and GPT only",
				     path, lb ? fdisk_label_get_name(lb) : "unknown");
	}
	r = fdisk_get_disklabel_id(cxt, &id);
	if (r < 0)
		return lr_error_code(r, "cannot read the disk identifier of %s: %s", path, strerror(-r));
	snprintf(info->disk_id, sizeof(info->disk_id), "%s", id ? id : "");
	lowercase(info->disk_id);

	r = read_parts(cxt, path, info);
	if (r < 0)
		return r;
	return read_free(cxt, path, info);
}

static void sum_free(struct lr_disk_info *info)
{
	qsort(info->free, info->n_free, sizeof(info->free[0]), cmp_region);
	info->free_start = info->free_size = info->free_total = 0;
	for (size_t i = 0; i < info->n_free; i++) {
		info->free_total += info->free[i].size;
		if (info->free[i].size > info->free_size) {
			info->free_start = info->free[i].start;
			info->free_size = info->free[i].size;
		}
	}
}

/* A partition given as the drive is an easy mistake with a bad end: refuse it by name. */
static int check_whole_disk(const char *path, const struct stat *st)
{
	char rel[64], disk[PATH_MAX];
	unsigned partno;
	int r;

	snprintf(rel, sizeof(rel), "/sys/dev/block/%u:%u/partition", major(st->st_rdev), minor(st->st_rdev));
	{
		_cleanup_free_ char *p = lr_sysroot_path(rel);

		if (!p)
			return -ENOMEM;
		if (access(p, F_OK) < 0)
			return 0;
	}
	lr_log_demote(1);
	r = lr_disk_of_partition(path, disk, sizeof(disk), &partno);
	lr_log_demote(-1);
	if (r < 0)
		return lr_error_code(-EINVAL, "%s is a partition, not a whole drive; name the drive it is on", path);
	return lr_error_code(-EINVAL, "%s is partition %u of %s, not a whole drive; name the drive (%s)",
			     path, partno, disk, disk);
}

int lr_disk_inspect(const char *path, struct lr_disk_info *info)
{
	struct fdisk_context *cxt = NULL;
	struct stat st;
	int r;

	memset(info, 0, sizeof(*info));
	if (stat(path, &st) < 0)
		return lr_error_code(-errno, "cannot find %s: %s", path, strerror(errno));
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return lr_error_code(-EINVAL, "%s is neither a block device nor an image file", path);
	if (S_ISBLK(st.st_mode)) {
		r = check_whole_disk(path, &st);
		if (r < 0)
			return r;
	}
	r = open_disk(path, true, &cxt);
	if (r < 0)
		return r;
	r = read_info(cxt, path, info);
	if (r == 0)
		sum_free(info);
	fdisk_unref_context(cxt);
	return r;
}

/* ---- planning ---- */

static void slot_device(const char *path, bool blk, unsigned partno, char *out, size_t len)
{
	char disk[PATH_MAX];

	if (!blk) {
		snprintf(out, len, "%s partition %u", path, partno);
		return;
	}
	kernel_path(path, disk, sizeof(disk));
	lr_disk_partition_name(disk, partno, out, len);
}

static int no_space(const char *path, uint64_t size, const struct lr_disk_region *room, size_t n_room)
{
	const struct lr_disk_region *best = NULL;
	char want[32], sz[32], at[32];

	for (size_t i = 0; i < n_room; i++)
		if (room[i].size >= LR_DISK_ALIGN && (!best || room[i].size > best->size))
			best = &room[i];
	if (size)
		lr_format_size(size, want, sizeof(want));
	if (!best)
		return lr_error_code(-ENOSPC, "%s: no free space for a%s%s new partition; the drive has none left: "
				     "name an existing partition to reuse it, or make room first",
				     path, size ? " " : "", size ? want : "");
	lr_format_size(best->size, sz, sizeof(sz));
	lr_format_size(best->start, at, sizeof(at));
	return lr_error_code(-ENOSPC, "%s: no free space for a%s%s partition; the largest free region is %s at %s",
			     path, size ? " " : " new", size ? want : "", sz, at);
}

/* Check want i on its own and against the earlier ones; *size is its size in whole MiB. */
static int plan_check(const struct lr_disk_info *info, const char *path, const struct lr_disk_want *w,
		      size_t i, uint64_t *size)
{
	const struct lr_disk_part *p;
	char list[LIST_LEN], a[32], b[32];

	*size = w[i].size / LR_DISK_ALIGN * LR_DISK_ALIGN;
	if (w[i].size && !*size)
		return lr_error_code(-EINVAL, "%s: a partition of %" PRIu64 " bytes is too small: the smallest is 1 MiB",
				     path, w[i].size);
	/* on MBR, numbers above 4 are logical partitions: existing ones can be reused */
	part_list(info, list, sizeof(list));
	if (info->label == LR_LABEL_DOS && w[i].partno > LR_DISK_MAX_PARTS)
		return lr_error_code(-EINVAL, "%s: there is no partition %u (partitions: %s); a new MBR partition is "
				     "1 to 4", path, w[i].partno, list);
	if (info->label != LR_LABEL_DOS && w[i].partno > info->max_partno)
		return lr_error_code(-EINVAL, "%s: there is no partition number %u: %s holds 1 to %u",
				     path, w[i].partno, table_name(info), info->max_partno);
	if (w[i].reuse_only && !w[i].partno)
		return lr_error_code(-EINVAL, "%s: a partition to reuse needs its number", path);
	for (size_t j = 0; j < i; j++)
		if (w[i].partno && w[j].partno == w[i].partno)
			return lr_error_code(-EINVAL, "%s: partition %u is named twice", path, w[i].partno);
	if (!w[i].partno)
		return 0;

	p = find_part(info, w[i].partno);
	if (!p && (w[i].reuse_only || w[i].partno > info->max_partno))
		return lr_error_code(-ENOENT, "%s: partition %u does not exist (partitions: %s); name one of them "
				     "with -p to reuse it, or a free number%s to create it", path, w[i].partno, list,
				     info->max_partno == MBR_MAX_PRIMARY ? " from 1 to 4 (MBR)" : "");
	if (!p)
		return 0;
	lr_format_size(p->size, a, sizeof(a));
	if (!w[i].reuse_ok && !w[i].reuse_only)
		return lr_error_code(-EEXIST, "%s: partition %u already exists (%s); reuse it only if its contents "
				     "may be destroyed, or name a free number to create a new partition "
				     "(partitions: %s)", path, w[i].partno, a, list);
	if (is_mbr_extended(info, p))
		return lr_error_code(-EINVAL, "%s: partition %u is an extended partition, which holds the logical "
				     "partitions; it cannot be reused (partitions: %s)", path, w[i].partno, list);
	if (*size > p->size) {
		lr_format_size(*size, b, sizeof(b));
		return lr_error_code(-ENOSPC, "%s: partition %u is %s, smaller than the %s asked for; reuse a larger "
				     "partition or create a new one", path, w[i].partno, a, b);
	}
	return 0;
}

static bool number_taken(const struct lr_disk_info *info, const struct lr_disk_want *w, size_t n,
			 const struct lr_disk_slot *slots, size_t done, unsigned partno)
{
	if (find_part(info, partno))
		return true;
	for (size_t i = 0; i < n; i++)
		if (w[i].partno == partno)
			return true;
	for (size_t i = 0; i < done; i++)
		if (slots[i].partno == partno)
			return true;
	return false;
}

static void take(struct lr_disk_region *r, struct lr_disk_slot *s, uint64_t size)
{
	s->start = r->start;
	s->size = size;
	r->start += size;
	r->size -= size;
}

int lr_disk_plan(const struct lr_disk_info *info, const char *path,
		 const struct lr_disk_want *wants, size_t n, struct lr_disk_slot *slots)
{
	struct lr_disk_region room[LR_ELEMENTSOF(info->free)];  /* what is left as wants are placed */
	uint64_t size[LR_DISK_MAX_PARTS];
	size_t n_room = info->n_free, rest = SIZE_MAX;
	struct stat st;
	char list[LIST_LEN];
	int r;

	if (n > LR_DISK_MAX_PARTS)
		return lr_error_code(-EINVAL, "%s: %zu partitions asked for, more than a table holds", path, n);
	if (info->label == LR_LABEL_NONE && info->signature[0] && n > 0)
		return lr_error_code(-EBUSY, "%s has no partition table but holds %s data (a file system or volume on "
				     "the whole drive), which partitioning would destroy; if it is not needed, "
				     "erase it first (wipefs -a %s)", path, info->signature, path);
	if (stat(path, &st) < 0)
		return lr_error_code(-errno, "cannot find %s: %s", path, strerror(errno));
	memcpy(room, info->free, n_room * sizeof(room[0]));
	memset(slots, 0, n * sizeof(slots[0]));

	for (size_t i = 0; i < n; i++) {
		const struct lr_disk_part *p;

		r = plan_check(info, path, wants, i, &size[i]);
		if (r < 0)
			return r;
		p = wants[i].partno ? find_part(info, wants[i].partno) : NULL;
		if (p) {
			slots[i].partno = p->partno;
			slots[i].start = p->start;
			slots[i].size = p->size;
			slots[i].reuse = true;
		} else if (size[i] == 0) {
			if (rest != SIZE_MAX)
				return lr_error_code(-EINVAL, "%s: only one new partition can take all the free space; "
						     "give the others a size", path);
			rest = i;
		}
	}

	/* numbers first, so that a want of number 0 does not take one named by a later want */
	for (size_t i = 0; i < n; i++) {
		if (slots[i].reuse)
			continue;
		slots[i].partno = wants[i].partno;
		for (unsigned k = 1; !slots[i].partno && k <= info->max_partno; k++)
			if (!number_taken(info, wants, n, slots, i, k))
				slots[i].partno = k;
		if (!slots[i].partno) {
			part_list(info, list, sizeof(list));
			if (info->max_partno == MBR_MAX_PRIMARY)
				return lr_error_code(-E2BIG, "%s: no free partition number: an MBR table holds four primary "
						     "partitions (partitions: %s); reuse one of them, or delete one first",
						     path, list);
			return lr_error_code(-E2BIG, "%s: no free partition number: all %u entries of the table are used; "
					     "reuse a partition, or delete one first", path, info->max_partno);
		}
	}

	/* then the sized ones, each in the first region that fits, in order */
	for (size_t i = 0; i < n; i++) {
		size_t k;

		if (slots[i].reuse || i == rest)
			continue;
		for (k = 0; k < n_room && room[k].size < size[i]; k++)
			;
		if (k == n_room)
			return no_space(path, size[i], room, n_room);
		take(&room[k], &slots[i], size[i]);
	}

	/* and the one that takes what is left: the largest region */
	if (rest != SIZE_MAX) {
		size_t best = SIZE_MAX;

		for (size_t k = 0; k < n_room; k++)
			if (room[k].size >= LR_DISK_ALIGN && (best == SIZE_MAX || room[k].size > room[best].size))
				best = k;
		if (best == SIZE_MAX)
			return no_space(path, 0, room, n_room);
		take(&room[best], &slots[rest], room[best].size);
	}

	for (size_t i = 0; i < n; i++)
		slot_device(path, S_ISBLK(st.st_mode), slots[i].partno, slots[i].device, sizeof(slots[i].device));
	return 0;
}

/* ---- applying ---- */

static bool same_table(const struct lr_disk_info *a, const struct lr_disk_info *b)
{
	if (a->label != b->label || a->size != b->size || a->sector_size != b->sector_size ||
	    strcmp(a->disk_id, b->disk_id) != 0 || strcmp(a->signature, b->signature) != 0 ||
	    a->n_parts != b->n_parts)
		return false;
	for (size_t i = 0; i < a->n_parts; i++) {
		const struct lr_disk_part *x = &a->parts[i], *y = &b->parts[i];

		if (x->partno != y->partno || x->start != y->start || x->size != y->size ||
		    strcmp(x->type, y->type) != 0 || strcmp(x->uuid, y->uuid) != 0)
			return false;
	}
	return true;
}

static bool inside(uint64_t start, uint64_t size, uint64_t rstart, uint64_t rsize)
{
	return start >= rstart && size <= rsize && start - rstart <= rsize - size;
}

/* The slots must be what lr_disk_plan() could have made of info: a guard against writing a
 * partition over another because of a caller's mistake. */
static int check_slots(const char *path, const struct lr_disk_info *info,
		       const struct lr_disk_slot *slots, size_t n, size_t *n_new)
{
	*n_new = 0;
	for (size_t i = 0; i < n; i++) {
		const struct lr_disk_slot *s = &slots[i];
		const struct lr_disk_part *p = find_part(info, s->partno);
		bool ok = false;

		if (s->reuse) {
			ok = p && p->start == s->start && p->size == s->size;
		} else if (!p && s->partno >= 1 && s->partno <= info->max_partno && s->size > 0 &&
			   s->start % LR_DISK_ALIGN == 0 && s->size % LR_DISK_ALIGN == 0) {
			for (size_t k = 0; k < info->n_free && !ok; k++)
				ok = inside(s->start, s->size, info->free[k].start, info->free[k].size);
			for (size_t j = 0; j < i && ok; j++)
				ok = slots[j].partno != s->partno &&
				     (slots[j].reuse || s->start >= slots[j].start + slots[j].size ||
				      slots[j].start >= s->start + s->size);
			(*n_new)++;
		}
		if (!ok)
			return lr_error_code(-EINVAL, "%s: the planned partition %u does not fit the partition table "
					     "it was planned on", path, s->partno);
	}
	if (*n_new && info->label == LR_LABEL_NONE && info->signature[0])
		return lr_error_code(-EBUSY, "%s holds %s data and no partition table: not partitioning over it",
				     path, info->signature);
	return 0;
}

static int add_one(struct fdisk_context *cxt, const char *path, const struct lr_disk_slot *s)
{
	struct fdisk_partition *pa = fdisk_new_partition(), *got = NULL;
	uint64_t ss = fdisk_get_sector_size(cxt);
	size_t partno = 0;
	int r;

	if (!pa)
		return -ENOMEM;
	r = fdisk_partition_set_partno(pa, s->partno - 1);
	if (r == 0)
		r = fdisk_partition_set_start(pa, s->start / ss);
	if (r == 0)
		r = fdisk_partition_set_size(pa, s->size / ss);
	if (r == 0)
		r = fdisk_partition_start_follow_default(pa, 0);
	if (r == 0)
		r = fdisk_partition_end_follow_default(pa, 0);
	if (r == 0)
		r = fdisk_partition_size_explicit(pa, 1);
	if (r == 0)
		r = fdisk_add_partition(cxt, pa, &partno);
	if (r < 0) {
		r = lr_error_code(r, "%s: cannot add partition %u: %s; nothing was written", path, s->partno,
				  strerror(-r));
		goto out;
	}
	/* libfdisk may align on its own; what is written must be what was planned */
	r = fdisk_get_partition(cxt, partno, &got);
	if (r < 0 || partno + 1 != s->partno || fdisk_partition_get_start(got) * ss != s->start ||
	    fdisk_partition_get_size(got) * ss != s->size) {
		r = lr_error_code(-EIO, "%s: libfdisk placed partition %u elsewhere than planned; nothing was written",
				  path, s->partno);
		goto out;
	}
out:
	fdisk_unref_partition(got);
	fdisk_unref_partition(pa);
	return r;
}

/* udev keeps off a drive with a BSD lock on it while its table changes. */
static int lock_disk(int fd, const char *path)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return lr_error_code(-errno, "cannot lock %s: %s", path, strerror(errno));
		if (ms_since(&t0) >= SETTLE_MS)
			return lr_error_code(-EBUSY, "%s is locked by another program (a partitioning tool?); "
					     "try again when it is done", path);
		sleep_poll();
	}
	return 0;
}

static int read_sys_u64(const char *dir, const char *file, uint64_t *v)
{
	_cleanup_free_ char *text = NULL;
	char rel[PATH_MAX];
	char *end;
	int r;

	snprintf(rel, sizeof(rel), "/sys/class/block/%s/%s", dir, file);
	r = lr_sysroot_read(rel, &text, NULL);
	if (r < 0)
		return r;
	errno = 0;
	*v = strtoull(text, &end, 10);
	return errno || end == text ? -EINVAL : 0;
}

/* BLKPG adds one partition and leaves the others alone, where BLKRRPART would fail (or drop
 * them) while one of them is mounted. */
static int tell_kernel(int fd, const char *disk, const struct lr_disk_slot *s)
{
	struct blkpg_partition part = {
		.start = (long long)s->start,
		.length = (long long)s->size,
		.pno = (int)s->partno,
	};
	struct blkpg_ioctl_arg arg = {
		.op = BLKPG_ADD_PARTITION,
		.datalen = sizeof(part),
		.data = &part,
	};
	char node[PATH_MAX];
	const char *name;
	uint64_t start = 0, size = 0;

	if (ioctl(fd, BLKPG, &arg) == 0)
		return 0;
	if (errno != EBUSY)
		return lr_error_code(-errno, "%s: partition %u was written, but the kernel refused it: %s; "
				     "re-read the table (partprobe %s) or reboot", disk, s->partno,
				     strerror(errno), disk);
	/* it is there already (udev re-read the table): fine if it is the same */
	lr_disk_partition_name(disk, s->partno, node, sizeof(node));
	name = strrchr(node, '/') ? strrchr(node, '/') + 1 : node;
	if (read_sys_u64(name, "start", &start) == 0 && read_sys_u64(name, "size", &size) == 0 &&
	    start * 512 == s->start && size * 512 == s->size)
		return 0;
	return lr_error_code(-EBUSY, "%s: partition %u was written, but the kernel still has another partition "
			     "in its place; reboot to have the new table read", disk, s->partno);
}

static int wait_for_node(const char *node, const char *disk)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (access(node, F_OK) < 0) {
		if (ms_since(&t0) >= SETTLE_MS)
			return lr_error_code(-ETIMEDOUT, "%s: the kernel has the new partition, but %s did not appear "
					     "within %d s; is udev running?", disk, node, SETTLE_MS / 1000);
		sleep_poll();
	}
	return 0;
}

int lr_disk_apply(const char *path, const struct lr_disk_info *info,
		  const struct lr_disk_slot *slots, size_t n)
{
	struct fdisk_context *cxt = NULL;
	struct lr_disk_info *now = NULL;
	char disk[PATH_MAX], node[PATH_MAX];
	struct stat st;
	size_t n_new;
	bool blk;
	int fd, r;

	r = check_slots(path, info, slots, n, &n_new);
	if (r < 0)
		return r;
	now = malloc(sizeof(*now));
	if (!now)
		return -ENOMEM;
	r = open_disk(path, n_new == 0, &cxt);
	if (r < 0)
		goto out;
	fd = fdisk_get_devfd(cxt);
	if (fstat(fd, &st) < 0) {
		r = lr_error_code(-errno, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	blk = S_ISBLK(st.st_mode);
	if (blk && n_new) {
		r = lock_disk(fd, path);
		if (r < 0)
			goto out;
	}
	/* the table libfdisk holds now is what is written back: it must be the planned one */
	r = read_info(cxt, path, now);
	if (r < 0)
		goto out;
	if (!same_table(info, now)) {
		r = lr_error_code(-ESTALE, "the partition table of %s changed since the plan; nothing was written: "
				  "look at the drive again and make a new plan", path);
		goto out;
	}
	if (n_new == 0)
		goto out;

	if (info->label == LR_LABEL_NONE) {
		r = fdisk_create_disklabel(cxt, info->size > GPT_ABOVE ? "gpt" : "dos");
		if (r < 0) {
			r = lr_error_code(r, "%s: cannot create a partition table: %s", path, strerror(-r));
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (slots[i].reuse)
			continue;
		r = add_one(cxt, path, &slots[i]);
		if (r < 0)
			goto out;
	}
	r = fdisk_write_disklabel(cxt);
	if (r < 0) {
		r = lr_error_code(r, "%s: cannot write the partition table: %s", path, strerror(-r));
		goto out;
	}
	if (fsync(fd) < 0) {
		r = lr_error_code(-errno, "%s: cannot flush the partition table: %s", path, strerror(errno));
		goto out;
	}
	if (!blk)
		goto out;

	kernel_path(path, disk, sizeof(disk));
	for (size_t i = 0; i < n && r == 0; i++)
		if (!slots[i].reuse)
			r = tell_kernel(fd, disk, &slots[i]);
	if (r < 0)
		goto out;
	/* closing drops the lock: udev may then make the nodes */
	r = fdisk_deassign_device(cxt, 1);
	if (r < 0) {
		r = lr_error_code(r, "%s: cannot close the drive: %s", path, strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		if (slots[i].reuse)
			continue;
		lr_disk_partition_name(disk, slots[i].partno, node, sizeof(node));
		r = wait_for_node(node, disk);
	}
out:
	fdisk_unref_context(cxt);
	free(now);
	return r;
}

/* ---- names and sizes ---- */

void lr_disk_partition_name(const char *disk, unsigned partno, char *out, size_t len)
{
	size_t l = strlen(disk);

	/* the kernel puts a "p" between a name ending in a digit and the number */
	snprintf(out, len, "%s%s%u", disk, l && isdigit((unsigned char)disk[l - 1]) ? "p" : "", partno);
}

int lr_disk_of_partition(const char *dev, char *disk, size_t len, unsigned *partno)
{
	_cleanup_free_ char *real_dev = realpath(dev, NULL);
	_cleanup_free_ char *sys = NULL, *real_sys = NULL, *text = NULL;
	const char *name = strrchr(real_dev ? real_dev : dev, '/');
	char rel[PATH_MAX], *slash, *end;
	unsigned long v;
	int r;

	name = name ? name + 1 : (real_dev ? real_dev : dev);
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return lr_error_code(-EINVAL, "%s is not a block device name", dev);
	snprintf(rel, sizeof(rel), "/sys/class/block/%s", name);
	sys = lr_sysroot_path(rel);
	if (!sys)
		return -ENOMEM;
	real_sys = realpath(sys, NULL);
	if (!real_sys)
		return lr_error_code(-ENOENT, "%s: the kernel has no block device %s", dev, name);

	snprintf(rel, sizeof(rel), "/sys/class/block/%s/partition", name);
	r = lr_sysroot_read(rel, &text, NULL);
	if (r == -ENOENT)
		return lr_error_code(-EINVAL, "%s is not a partition", dev);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", rel, strerror(-r));
	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || v == 0 || v > UINT_MAX)
		return lr_error_code(-EINVAL, "%s: bad partition number in %s", dev, rel);

	/* .../block/sda/sda1: the directory above a partition is its disk */
	slash = strrchr(real_sys, '/');
	if (slash)
		*slash = '\0';
	slash = strrchr(real_sys, '/');
	if (!slash || !slash[1])
		return lr_error_code(-EINVAL, "%s: cannot find the disk of %s in /sys", dev, name);
	if ((size_t)snprintf(disk, len, "/dev/%s", slash + 1) >= len)
		return -ENAMETOOLONG;
	*partno = (unsigned)v;
	return 0;
}

int lr_parse_size(const char *s, uint64_t *bytes)
{
	static const char units[] = "KMGT";
	uint64_t whole = 0, frac = 0, frac_div = 1, mult = MIB, v;
	const char *u;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	for (; isdigit((unsigned char)*s); s++) {
		if (whole > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		whole = whole * 10 + (uint64_t)(*s - '0');
	}
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return -EINVAL;
		/* six digits are more than a partition size needs; they keep frac * mult in range */
		for (; isdigit((unsigned char)*s); s++)
			if (frac_div < 1000000) {
				frac = frac * 10 + (uint64_t)(*s - '0');
				frac_div *= 10;
			}
	}
	if (*s) {
		u = strchr(units, toupper((unsigned char)*s));
		if (!u)
			return -EINVAL;
		mult = UINT64_C(1) << (10 * (u - units + 1));
		s++;
		if (*s && strcasecmp(s, "iB") != 0)
			return -EINVAL;
	}
	if (whole > UINT64_MAX / mult)
		return -EINVAL;
	v = whole * mult;
	if (v > UINT64_MAX - frac * mult / frac_div)
		return -EINVAL;
	*bytes = v + frac * mult / frac_div;
	return 0;
}

void lr_format_size(uint64_t bytes, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	uint64_t unit = 1, whole, tenths;
	size_t i = 0;

	while (i + 1 < LR_ELEMENTSOF(units) && bytes / 1024 >= unit) {
		unit *= 1024;
		i++;
	}
	whole = bytes / unit;
	if (bytes % unit == 0) {
		snprintf(out, len, "%" PRIu64 " %s", whole, units[i]);
		return;
	}
	tenths = (bytes % unit * 10 + unit / 2) / unit;
	if (tenths == 10) {
		whole++;
		tenths = 0;
	}
	snprintf(out, len, "%" PRIu64 ".%" PRIu64 " %s", whole, tenths, units[i]);
}
