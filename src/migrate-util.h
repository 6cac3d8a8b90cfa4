/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Pieces of lockroot migrate (cmd-migrate.c) that lockroot convert --via (cmd-convert-via.c)
 * uses too. Each logs what failed and returns -errno. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "bootcfg.h"
#include "migrate.h"
#include "partition.h"

#define MIGRATE_CRYPTTAB_OPTIONS "luks,discard,initramfs,keyscript=/usr/lib/lockroot/keyscript"

/* -m ARG (NULL: /dev/mmcblk0p2, N: /dev/mmcblk0pN) into source; it must be the running,
 * unencrypted root. */
int migrate_check_source(const char *arg, char *source, size_t len);
/* target (named by option opt in messages) is a whole drive, not the one holding source,
 * nothing on it mounted, swapped on or held, not read-only; its table into disk. */
int migrate_check_drive(const char *opt, const char *target, const char *source, struct lr_disk_info *disk);
/* rsync, initramfs-tools, lockroot's hook and keyscript, cryptsetup, mkfs.ext4 are there. */
int migrate_check_tools(void);
/* Where mountpoint is mounted from (/proc/self/mountinfo), "" when it is not. */
void migrate_mount_source(const char *mountpoint, char *out, size_t len);

/* The boot partition (boot) and the final boot configuration for a root on LUKS2 volume
 * luks_uuid opened as /dev/mapper/name: st->boot_dir, boot_device, cmdline_file, initramfs,
 * final_config, final_cmdline, and the command line of its trial boot. */
int migrate_plan_boot(const char *name, const char *luks_uuid, struct lr_bootcfg_info *boot,
		      struct lr_migrate_state *st, char *trial_cmdline, size_t trial_len);

struct migrate_rsync_stats {
	uint64_t literal;  /* file data transferred (rsync --stats "Literal data") */
	uint64_t sent;     /* everything sent, file list included */
	uint64_t files;    /* regular files transferred */
};
/* rsync -aHAX --numeric-ids --one-file-system SRC/ DST/ (--delete, else --partial), without
 * LR_MIGRATE_STATE_PATH and exclude (may be NULL); progress events under phase. stats may be
 * NULL. */
int migrate_rsync(const char *src, const char *dst, bool delete, const char *phase, const char *exclude,
		  struct migrate_rsync_stats *stats);
/* update-initramfs -u -k all in a chroot of newroot (/dev, /proc, /sys bound), checked to
 * carry the crypttab and lockroot, copied to boot_dir/lockroot-initrd.img. */
int migrate_build_initramfs(const char *newroot, const char *boot_dir);
