/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host fingerprint: the identity of the board, card and disk a volume is bound to.
 *
 * All reads go through lr_sysroot_*(), so LOCKROOT_SYSROOT=/some/dir presents another
 * host (a Raspberry Pi 3/4 with a given serial and card, say) to the tests.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum lr_component_id {
	LR_COMP_BOARD_SERIAL = 0, /* device tree serial-number, else /proc/cpuinfo Serial */
	LR_COMP_SD_CID,           /* /sys/block/mmcblkN/device/cid */
	LR_COMP_DISK_SERIAL,      /* serial of the disk that holds the volume */
	LR_COMP_DMI_UUID,         /* /sys/class/dmi/id/product_uuid */
	LR_COMP_BOOT_FILES,       /* what the firmware loads from the boot partition (bootfiles.h);
	                             never measured by lr_fingerprint_read(), never in the default */
	LR_COMP_MAX,
};

#define LR_BIND_NONE 0u
#define LR_BIND_ALL ((1u << LR_COMP_MAX) - 1)

struct lr_component {
	char *value;   /* canonical value, NULL when absent */
	char *source;  /* where it was read (path shown to the user), NULL when absent */
	int error;     /* 0, or -errno why it is absent */
};

struct lr_fingerprint {
	bool is_pi;   /* a Raspberry Pi (or other device-tree board) was detected */
	struct lr_component comp[LR_COMP_MAX];
};

/* "board-serial", "sd-cid", "disk-serial", "dmi-uuid", "boot-files" */
const char *lr_component_name(int id);
/* Human words for messages: "board serial", "SD card CID", "disk serial", "DMI product UUID", "boot files" */
const char *lr_component_description(int id);
/* -EINVAL for an unknown name. */
int lr_component_from_name(const char *name);

/* Parse "board-serial,sd-cid", "none" or "default" (*is_default = true). -EINVAL, logged. */
int lr_bind_parse(const char *list, uint32_t *mask, bool *is_default);
/* Comma-separated names of mask into buf. */
void lr_bind_format(uint32_t mask, char *buf, size_t size);

/* Canonical form of a raw component value: trailing NULs/whitespace removed, surrounding
 * whitespace trimmed, hex-like values lower-cased; for the board serial leading "0x" removed.
 * malloc'd, or NULL if nothing is left. */
char *lr_component_canonical(int id, const char *raw, size_t len);

/* Measure every component for the volume on device (block device or image file; may be NULL,
 * then disk-serial is absent). Never fails for a missing component: see comp[i].error. */
int lr_fingerprint_read(const char *device, struct lr_fingerprint *fp);
void lr_fingerprint_done(struct lr_fingerprint *fp);

/* Components used when --bind is not given: on a Pi board-serial + sd-cid (+ disk-serial
 * when the volume is not on the SD card), on a PC dmi-uuid + disk-serial; only those present. */
uint32_t lr_fingerprint_default_mask(const struct lr_fingerprint *fp);

/* SHA-256 over the canonical encoding of the components in mask. -ENOENT (logged, naming the
 * component) when one of them is absent. mask 0 gives the digest of the empty set. */
int lr_fingerprint_digest(const struct lr_fingerprint *fp, uint32_t mask, uint8_t out[32]);

/* Short salted check of one component value, stored in the token so that a mismatch can be
 * named without storing the value: 4 hex digits (16 bits) of HMAC-SHA-256(salt, name || 0 || value). */
int lr_component_check(const uint8_t salt[16], int id, const char *value, char out[5]);
