/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Boot configuration for an encrypted root: config.txt (initramfs line), cmdline.txt
 * (root=/dev/mapper/NAME), /etc/crypttab and /etc/fstab, all under an explicit root
 * prefix ("/" for the running system, or a mounted image's root).
 *
 * Plan first, then apply: lr_bootcfg_plan() reads everything and computes the new contents
 * without writing; lr_bootcfg_apply() writes them. Every file is written atomically (temp
 * file in the same directory, fsync, rename, fsync of the directory) with the original's
 * mode and owner, after its original has been kept as FILE.lockroot-orig (never
 * overwritten: a second run keeps the true original). Planning again after an apply gives
 * no changes. lr_bootcfg_restore() puts every original back.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define LR_BOOTCFG_BACKUP_SUFFIX ".lockroot-orig"
/* Includes followed in config.txt, counting from the top-level file. */
#define LR_BOOTCFG_MAX_INCLUDE_DEPTH 8

/* A further /etc/crypttab entry: NAME SOURCE none OPTIONS. */
struct lr_bootcfg_crypt {
	const char *name;
	const char *source;                 /* "UUID=...", "PARTUUID=...", "/dev/sda3" */
	const char *options;                /* NULL: "luks" */
};

/* A further /etc/fstab entry: DEVICE MOUNTPOINT FSTYPE OPTIONS 0 PASSNO. An existing entry
 * for the mount point gets DEVICE, FSTYPE and OPTIONS replaced, its dump/pass kept. */
struct lr_bootcfg_mount {
	const char *device;                 /* "/dev/mapper/data" */
	const char *mountpoint;
	const char *fstype;                 /* NULL: "auto" */
	const char *options;                /* NULL: "defaults" */
	unsigned passno;                    /* for a new entry: 0, 1 or 2 */
};

struct lr_bootcfg {
	const char *root;                   /* NULL or "/": the running system */
	const char *name;                   /* root=/dev/mapper/NAME, crypttab NAME */
	const char *source;                 /* crypttab SOURCE of the root volume */
	const char *crypttab_options;       /* NULL: "luks" */
	const char *initramfs;              /* config.txt "initramfs FILE followkernel";
					     * NULL: config.txt is not edited */
	bool remove_rootfstype;             /* drop rootfstype= from the kernel command line */
	bool firmware_optional;             /* no config.txt/cmdline.txt (a PC) is no error:
					     * only crypttab and fstab are edited */
	bool etc_only;                      /* only crypttab and fstab, whatever the boot
					     * directory holds (a copied root, whose boot
					     * partition is not mounted in it) */
	const struct lr_bootcfg_crypt *crypts;
	size_t n_crypts;
	const struct lr_bootcfg_mount *mounts;
	size_t n_mounts;
};

/* One file that would change. old_text is NULL when the file does not exist yet. */
struct lr_bootcfg_change {
	char *path;                         /* real path, root prefix included */
	char *old_text;
	char *new_text;
};

/* What the boot partition says, without changing anything. */
struct lr_bootcfg_info {
	char *boot_dir;                     /* NULL: no Pi firmware files (firmware_optional) */
	char *config_path;                  /* top-level config.txt (may not exist) */
	char *cmdline_path;                 /* effective kernel command line file (cmdline=) */
	bool auto_initramfs;                /* auto_initramfs=1 active: config.txt left alone */
	char *initramfs;                    /* file of the last active initramfs line, or NULL */
};

/*
 * Compute the changes; *changes lists only files whose contents would change (*n may be 0).
 * Nothing is written. Errors: -EINVAL bad cfg (missing name/source, whitespace in a value)
 * or a file that is not a regular file; -ENOENT no boot directory, or no config.txt or
 * cmdline.txt in it (unless firmware_optional), or no kernel command line file;
 * -EBADMSG a command line file with more than one non-empty line, or a file with NUL bytes;
 * -ELOOP an include loop in config.txt or includes nested too deep; -EFBIG a file over 1 MiB.
 */
int lr_bootcfg_plan(const struct lr_bootcfg *cfg, struct lr_bootcfg_change **changes, size_t *n);

/*
 * Write planned changes, in order. Every file is first checked against old_text: -ESTALE,
 * and nothing written, if one changed since the plan (plan again). A later failure (a write
 * error) leaves the files before it changed; their originals are kept and
 * lr_bootcfg_restore() undoes them. Other errors: -errno of
 * open/write/fsync/rename.
 */
int lr_bootcfg_apply(const struct lr_bootcfg_change *changes, size_t n);

void lr_bootcfg_changes_free(struct lr_bootcfg_change *changes, size_t n);

/*
 * Put every FILE.lockroot-orig in ROOT/boot/firmware, ROOT/boot and ROOT/etc back in place
 * of FILE (atomically, by rename; the backup is consumed). A file that did not exist before
 * lockroot created it comes back empty. Returns the number of files restored, or -errno.
 */
int lr_bootcfg_restore(const char *root);

/* Find the boot directory and read config.txt (following includes). Errors as for plan. */
int lr_bootcfg_inspect(const char *root, struct lr_bootcfg_info *info);
void lr_bootcfg_info_done(struct lr_bootcfg_info *info);
