/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The state of a root migration (lockroot migrate), kept in ROOT/var/lib/lockroot/migrate.json
 * on the old root and on the new one, and the switch-over on a Raspberry Pi's boot partition.
 *
 * The switch-over uses the Pi firmware's tryboot: the new configuration is written beside the
 * old one (tryboot.txt, lockroot-cmdline.txt, lockroot-initrd.img) and config.txt is left as
 * it is, so `reboot '0 tryboot'` boots the new root once and any other boot the old one. Only
 * when the new root is up does lr_migrate_commit() make it the default, in steps that each
 * leave a bootable configuration:
 *   1. config.txt := tryboot.txt             (default boot = new root, through the lockroot files)
 *   2. the initramfs files := the new root's (lockroot-initrd.img, /boot/initrd.img-VERSION)
 *   3. cmdline file := the final command line (unused by step 1's config.txt)
 *   4. config.txt := the final config.txt     (original names, new root)
 *   5. the lockroot files are removed
 * Every step is idempotent, so a power cut anywhere is repaired by committing again.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct json_object;

#define LR_MIGRATE_STATE_PATH "/var/lib/lockroot/migrate.json"
#define LR_TRYBOOT_CONFIG "tryboot.txt"
#define LR_TRIAL_CMDLINE "lockroot-cmdline.txt"
#define LR_TRIAL_INITRD "lockroot-initrd.img"
#define LR_TRIAL_RECORD "lockroot-tryboot.log"
#define LR_MIGRATE_MAX_VOLUMES 8

enum lr_migrate_phase {
	LR_MIGRATE_PREPARING,   /* partitions, LUKS2, file systems */
	LR_MIGRATE_COPYING,     /* rsync of the root */
	LR_MIGRATE_TRIAL,       /* ready: waiting for the tryboot of the new root */
	LR_MIGRATE_COMMITTING,  /* new root up: making it the default */
	LR_MIGRATE_ERASING,     /* committed: erasing the old plaintext root */
	LR_MIGRATE_DONE,
	LR_MIGRATE_FAILED,      /* the trial boot did not come up, or an error: old root in use */
	LR_MIGRATE_INTERRUPTED, /* power cut before the trial: nothing was switched */
	_LR_MIGRATE_PHASE_MAX,
};

struct lr_migrate_volume {
	char role[8];                      /* "root" or "data" */
	char device[64];                   /* "/dev/sda1" */
	unsigned partno;
	bool reused;
	char uuid[40];                     /* LUKS2 UUID */
	char name[64];                     /* /dev/mapper/NAME */
	char mountpoint[256];
	uint64_t size;
};

struct lr_migrate_state {
	enum lr_migrate_phase phase;
	time_t started, updated;
	char source[64];                   /* the old root partition */
	char target[64];                   /* the drive */
	char boot_dir[256];                /* "/boot/firmware" */
	char boot_device[64];              /* what the initramfs mounts to leave a record */
	char cmdline_file[128];            /* file name (in boot_dir) config.txt takes the command line from */
	char initramfs[128];               /* file name (in boot_dir) the final config.txt loads */
	char *final_config;                /* config.txt after the commit */
	char *final_cmdline;               /* the command line file after the commit */
	size_t n_volumes;
	struct lr_migrate_volume volumes[LR_MIGRATE_MAX_VOLUMES];
	bool keep_source;
	uint64_t erase_size, erase_done, erase_discarded, erase_overwritten;
	char *error;                       /* what failed, for lockroot status */
};

const char *lr_migrate_phase_name(enum lr_migrate_phase p);

/* Load ROOT/var/lib/lockroot/migrate.json (root NULL or "/": the running system). -ENOENT when
 * there is none, -EBADMSG (logged) when it cannot be read. */
int lr_migrate_state_load(const char *root, struct lr_migrate_state *st);
/* Write it atomically (updated := now). */
int lr_migrate_state_save(const char *root, struct lr_migrate_state *st);
void lr_migrate_state_done(struct lr_migrate_state *st);
/* Set st->error (printf style). */
void lr_migrate_set_error(struct lr_migrate_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The state as JSON for --json and status (no secrets are in it). */
struct json_object *lr_migrate_state_json(const struct lr_migrate_state *st);

/* Write the trial files to st->boot_dir: tryboot.txt (config.txt + a section naming the
 * lockroot files) and lockroot-cmdline.txt (trial_cmdline). lockroot-initrd.img must
 * already be there. config.txt is not touched. */
int lr_migrate_write_trial(const struct lr_migrate_state *st, const char *trial_cmdline);
/* Steps 1-5 above. new_boot: where the new root's kernels and initramfs files are ("/boot"
 * on the running new root). */
int lr_migrate_commit(const struct lr_migrate_state *st, const char *new_boot);
/* The trial boot did not come up: remove the trial files (config.txt was never changed) and
 * return in *record what the initramfs wrote to lockroot-tryboot.log (NULL if nothing). */
int lr_migrate_abandon_trial(const struct lr_migrate_state *st, char **record);

/* Write a file atomically: temp file in the same directory, fsync, rename, fsync of the
 * directory (on FAT, rename is the best there is). */
int lr_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* Copy a file atomically, as above. */
int lr_copy_file_atomic(const char *from, const char *to);
/* Read a whole file (up to max bytes), NUL-terminated. -errno. */
int lr_read_file(const char *path, size_t max, char **out, size_t *len);
