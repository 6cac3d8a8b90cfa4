/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Partitions of a target drive through libfdisk (util-linux): read the table (MBR or GPT),
 * plan new partitions in free space or the reuse of an existing one, and write them without
 * touching any partition the plan does not name. Works on block devices and on image files.
 *
 * Plan first, then apply (as bootcfg.h): lr_disk_plan() only reads; lr_disk_apply() writes
 * the planned new partitions (and a new MBR when the drive has no table), then asks the
 * kernel to add them (BLKPG, so other partitions of the drive stay as they are) and waits for
 * their device nodes.
 *
 * All sizes and offsets are in bytes; partitions are aligned to 1 MiB.
 */
#pragma once
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LR_DISK_MAX_PARTS 128
#define LR_DISK_ALIGN (1024 * 1024)

enum lr_disk_label { LR_LABEL_NONE, LR_LABEL_DOS, LR_LABEL_GPT };

struct lr_disk_part {
	unsigned partno;                   /* 1-based, as in /dev/sda1 */
	uint64_t start, size;              /* bytes */
	char type[40];                     /* "83", "c", GPT type GUID, ... */
	char uuid[40];                     /* PARTUUID as the kernel shows it ("1234abcd-02", GUID) */
};

struct lr_disk_region {
	uint64_t start, size;              /* bytes, aligned */
};

struct lr_disk_info {
	enum lr_disk_label label;
	uint64_t size;                     /* whole drive */
	unsigned sector_size;
	char disk_id[40];                  /* MBR "0x1234abcd" or GPT disk GUID; "" without a table */
	size_t n_parts;
	struct lr_disk_part parts[LR_DISK_MAX_PARTS];
	/* Largest aligned free region (bytes), where a new partition could go. */
	uint64_t free_start, free_size;
	uint64_t free_total;               /* all aligned free space together */
	/* Every aligned free region a new partition can use, in disk order (on MBR: outside
	 * the extended partition, since new partitions are primary). */
	size_t n_free;
	struct lr_disk_region free[LR_DISK_MAX_PARTS + 1];
	unsigned max_partno;               /* highest number a new partition can get (MBR: 4) */
	char signature[32];                /* no table: what blkid finds on the whole drive
					    * instead ("ext4", "crypto_LUKS"), "" for nothing */
};

/* Read the partition table of path (block device or image file). A drive without a
 * table is LR_LABEL_NONE with all its space free (after the first 1 MiB). -errno, logged:
 * -EINVAL for a partition given as the drive, -ENOTSUP for a table other than MBR or GPT. */
int lr_disk_inspect(const char *path, struct lr_disk_info *info);

/* One partition wanted by the caller. */
struct lr_disk_want {
	unsigned partno;                   /* 0: the lowest free number */
	uint64_t size;                     /* 0: all the free space left (at most one want) */
	bool reuse_ok;                     /* partno may name an existing partition: reuse it */
	bool reuse_only;                   /* partno must name an existing partition (implies
					    * reuse_ok) */
};

/* What will be done for one want. */
struct lr_disk_slot {
	unsigned partno;
	uint64_t start, size;
	bool reuse;                        /* an existing partition, contents to be destroyed */
	char device[PATH_MAX + 32];        /* "/dev/sda1" (for an image file: "IMAGE partition N") */
};

/*
 * Place wants[0..n) on the drive: an existing partition named by partno with reuse_ok is
 * reused (its size is what it is; a want's size, if given, must not be larger: -ENOSPC);
 * others get a new partition in free space, in order, each in the first free region that
 * fits (a want of size 0 takes the largest region after the sized ones are placed).
 * Errors, each logged with what to do: -ENOENT partno names no partition but a reuse was
 * required (reuse_only, or an MBR number above 4: new MBR partitions are primary);
 * -EEXIST partno exists and reuse_ok is false; -ENOSPC no free region is large enough
 * (the message gives the largest); -E2BIG no free partition number (MBR: four primary
 * partitions); -EINVAL a partno out of range or named twice, a size below 1 MiB, two wants
 * of size 0, or a reuse of an MBR extended partition; -EBUSY the drive has no table but
 * holds a signature (info->signature), which partitioning would destroy. Sizes of new
 * partitions are rounded down to whole MiB.
 */
int lr_disk_plan(const struct lr_disk_info *info, const char *path,
		 const struct lr_disk_want *wants, size_t n, struct lr_disk_slot *slots);

/* Write the new partitions of slots (reused ones are left as they are). A drive without a
 * table first gets an MBR (GPT above 2 TiB). Then, on a block device, the kernel is told
 * about each new partition (BLKPG_ADD_PARTITION) and its device node is waited for (up to
 * 10 s). -errno, logged: -ESTALE when the table on the drive is no longer the one info
 * describes (nothing is written then), -EINVAL when slots do not fit info. */
int lr_disk_apply(const char *path, const struct lr_disk_info *info,
		  const struct lr_disk_slot *slots, size_t n);

/* "/dev/sda" + 1 -> "/dev/sda1", "/dev/mmcblk0" + 2 -> "/dev/mmcblk0p2" (also nvme, loop). */
void lr_disk_partition_name(const char *disk, unsigned partno, char *out, size_t len);

/* The whole-disk device of a partition device ("/dev/mmcblk0p2" -> "/dev/mmcblk0") and its
 * partition number, through /sys/class/block (LOCKROOT_SYSROOT). -ENOENT, -EINVAL when dev is
 * not a partition. */
int lr_disk_of_partition(const char *dev, char *disk, size_t len, unsigned *partno);

/* Parse "512M", "1.5G", "2GiB", "100" (a bare number is MiB): bytes. Units K, M, G, T, in
 * either case, with or without "iB", all powers of 1024. -EINVAL. */
int lr_parse_size(const char *s, uint64_t *bytes);

/* "1.5 GiB" style, for plans and messages. */
void lr_format_size(uint64_t bytes, char *out, size_t len);
