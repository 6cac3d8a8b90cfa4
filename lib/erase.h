/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Erase a plaintext partition (the old root after a migration): chunk by chunk, discard
 * (BLKDISCARD) where the device supports it and then read the chunk back; a chunk that does
 * not read back as zeros (a device that ignores or only hints discards, an image file) is
 * overwritten with zeros and fsync'd. Resumable: the caller keeps the offset the progress
 * callback reports and passes it back as start.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define LR_ERASE_CHUNK (16 * 1024 * 1024)

struct lr_erase_stats {
	uint64_t size;             /* bytes of the device */
	uint64_t done;             /* offset reached: everything below is erased */
	uint64_t discarded;        /* bytes that read back as zeros after a discard */
	uint64_t overwritten;      /* bytes written with zeros */
};

/* Called after every chunk, once it is on stable storage. Return non-zero to stop (the
 * erase returns -EINTR; resume from stats->done). */
typedef int (*lr_erase_progress_fn)(const struct lr_erase_stats *stats, void *userdata);

/*
 * Erase device (block device or regular file) from byte offset start to its end.
 * no_discard: always overwrite. -errno, logged: -ENOENT, -EBUSY (the device is mounted or
 * open exclusively by someone: opened O_EXCL), -EINVAL start beyond the end or not a
 * multiple of 4096, -EIO a write or read failed, -EINTR stopped by the callback.
 */
int lr_erase(const char *device, uint64_t start, bool no_discard,
	     lr_erase_progress_fn progress, void *userdata, struct lr_erase_stats *stats);

/*
 * The board's activity LED (/sys/class/leds/ACT, else led0, under LOCKROOT_SYSROOT):
 * lr_led_blink() saves its trigger and sets "timer" so it blinks while work is under way;
 * lr_led_restore() puts the saved trigger back. No LED: both do nothing and return 0.
 */
struct lr_led {
	char path[256];            /* the trigger file, "" when there is no LED */
	char saved[64];
};
int lr_led_blink(struct lr_led *led);
int lr_led_restore(struct lr_led *led);
