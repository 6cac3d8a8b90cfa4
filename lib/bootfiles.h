/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Boot files: what the Raspberry Pi firmware loads from the unencrypted boot partition, measured
 * so that a key can be bound to it (the "boot-files" component of --bind).
 *
 * Measured, in this order: config.txt and every file it includes; the kernel command line file
 * (cmdline= or cmdline.txt); every kernel named by a kernel= line, else the firmware's default
 * kernels that exist (kernel8.img, kernel_2712.img, kernel7l.img, kernel7.img, kernel.img); every
 * initramfs named by an "initramfs FILE" line, and with auto_initramfs=1 the initramfs that goes
 * with each measured default kernel; every device tree named by device_tree=, else every *.dtb
 * at the top of the partition; every overlay named by a dtoverlay= line (overlays/NAME.dtbo) and
 * overlays/overlay_map.dtb. Lines of every [section] count (the firmware picks sections by
 * board; measuring all of them is the safe superset). A named file that does not exist is
 * measured as absent, so that adding it later is a change too.
 *
 * The component's value is the hex SHA-256 over "lockroot-boot-files-v1\0" and, for each file,
 * "PATH\0" + (its hex SHA-256, or "-" when absent) + "\n". The token records every file's
 * digest (boot files are not secret), so that a refusal can name the changed file.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct lr_fingerprint;

struct lr_bootfile {
	char *path;      /* relative to the boot partition's root, "/"-separated */
	char sha256[65]; /* lowercase hex, or "-" when the file does not exist */
};

struct lr_bootfiles {
	struct lr_bootfile *f;
	size_t n;
};

/* Measure the boot files in dir (the root of the boot partition). -ENOENT when dir has no
 * config.txt and no cmdline.txt (logged), -EFBIG for a config.txt over 1 MiB, -ELOOP for
 * includes nested deeper than 8. */
int lr_bootfiles_measure(const char *dir, struct lr_bootfiles *out);
void lr_bootfiles_done(struct lr_bootfiles *bf);
#define _cleanup_bootfiles_ __attribute__((cleanup(lr_bootfiles_done)))
/* The component value (64 hex digits + NUL). */
int lr_bootfiles_value(const struct lr_bootfiles *bf, char out[65]);
/* [ { "path": "...", "sha256": "..." }, ... ] and back (-EBADMSG, logged). */
struct json_object *lr_bootfiles_to_json(const struct lr_bootfiles *bf);
int lr_bootfiles_from_json(struct json_object *arr, struct lr_bootfiles *out);
/* Log, as errors, each file that differs between then (enrolment) and now: "boot file
 * cmdline.txt changed since the key was locked". Returns how many differ. */
int lr_bootfiles_explain(const struct lr_bootfiles *then, const struct lr_bootfiles *now);

/* Measure the boot files of the boot partition spec: "PARTUUID=…", "UUID=…", "LABEL=…", a block
 * device or a directory (the partition's contents, mounted elsewhere). A device that is mounted is
 * read through its mount point; otherwise it is mounted read-only (vfat, else ext4) on a private
 * directory under /run/lockroot, the vfat modules loaded first, and unmounted again. */
int lr_bootfiles_measure_spec(const char *spec, struct lr_bootfiles *out);
/* modprobe the vfat file system and its code pages (whichever are modules). */
void lr_load_vfat(void);
/* The running system's boot partition: the file system mounted at /boot/firmware, else at /boot
 * when it holds config.txt or cmdline.txt, as "PARTUUID=…" when the partition has one, else its
 * device path. malloc'd. -ENOENT (logged) when there is none. */
int lr_bootdir_default_spec(char **spec);
/* Put the component value of bf into fp (comp[LR_COMP_BOOT_FILES], source = spec). */
int lr_fingerprint_set_boot_files(struct lr_fingerprint *fp, const struct lr_bootfiles *bf, const char *spec);
