/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-place encryption of a root partition (lockroot convert): the engine.
 *
 * Layout, as cryptsetup's `reencrypt --encrypt --reduce-device-size 32M`: the ext4 file system
 * gives up LR_CONVERT_REDUCE bytes at its end; the LUKS2 header (+ keyslots) takes the first
 * LR_CONVERT_DATA_OFFSET bytes of the partition; the first LR_CONVERT_DATA_OFFSET bytes of the
 * file system are moved to the end of the partition (libcryptsetup's "move first segment"),
 * then the data is encrypted backwards by libcryptsetup's reencryption engine, offline or
 * online (device active, file system mounted).
 *
 * Sequence and what a power cut leaves:
 *   1. lr_convert_template() on the running system: a detached LUKS2 header file (cipher,
 *      volume key, HSM keyslot + token, recovery keyslot) kept on the boot partition.
 *   2. initramfs: lr_convert_shrink(): e2fsck -fy, resize2fs to <= partition - REDUCE.
 *      resize2fs copies moved blocks before it changes the references and writes the new size
 *      last; a cut is repaired by the e2fsck of the next attempt, which then shrinks again.
 *   3. initramfs: lr_convert_init(): reencryption initialised on a copy of the template in
 *      /run (this moves the first segment to the tail of the partition), the moved copy is
 *      read back and compared, a record "moved <sha256 of the segment>" is written to the
 *      boot partition, then the header is written to the partition (crypt_header_restore).
 *      A cut during the header write leaves neither ext4 nor a usable LUKS2 header: the
 *      record lets lr_convert_undo_cut() copy the segment back (state LR_CONVERT_MOVED_CUT).
 *   4. boot continues: the volume is opened through the HSM by the normal crypttab path
 *      (libcryptsetup activates a volume in reencryption and recovers its hotzone).
 *   5. online: lr_convert_run() until done; a cut resumes at the next boot.
 *   6. libcryptsetup 2.6.1 can be cut after the last chunk but before the metadata is
 *      finalised; it then neither resumes nor activates (LR_CONVERT_STUCK_FINAL).
 *      lr_convert_finalize_stuck() proves the volume key and rewrites the metadata as the
 *      finished reencryption would have.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "lockroot.h"

#define LR_CONVERT_DATA_OFFSET (UINT64_C(16) << 20) /* LUKS2 header + keyslots; data shift */
#define LR_CONVERT_REDUCE (UINT64_C(32) << 20)      /* what the file system gives up */
/* On the boot partition (FAT) until the conversion is finished. */
#define LR_CONVERT_TEMPLATE "lockroot-convert.hdr"
#define LR_CONVERT_RECORD "lockroot-convert.rec"

enum lr_convert_disk_state {
	LR_CONVERT_PLAIN,       /* ext4 larger than partition - REDUCE: shrink first */
	LR_CONVERT_SHRUNK,      /* ext4 that leaves REDUCE free at the end: ready for the header */
	LR_CONVERT_MOVED_CUT,   /* header write cut: the record matches the segment at the tail */
	LR_CONVERT_ENCRYPTING,  /* LUKS2, reencryption in progress (resumable) */
	LR_CONVERT_STUCK_FINAL, /* LUKS2, every chunk encrypted, metadata not finalised */
	LR_CONVERT_DONE,        /* LUKS2, no reencryption in progress */
	LR_CONVERT_UNKNOWN,     /* none of these: nothing is touched */
};
const char *lr_convert_state_name(enum lr_convert_disk_state s);

struct lr_convert_info {
	enum lr_convert_disk_state state;
	uint64_t part_size;          /* bytes */
	uint64_t fs_size;            /* ext4: block count * block size; 0 otherwise */
	char fs_uuid[40];            /* ext4 UUID, "" otherwise */
	uint64_t total;              /* LUKS2 in reencryption: bytes to encrypt */
	uint64_t done;               /* ... and already encrypted */
	char cipher[64];             /* LUKS2: the (new) cipher spec */
};

/* What the partition holds now. record_path: the boot partition's LR_CONVERT_RECORD, or NULL
 * (then MOVED_CUT is never reported). -errno only when the device cannot be read. */
int lr_convert_examine(const char *device, const char *record_path, struct lr_convert_info *info);

struct lr_convert_template_params {
	const char *device;          /* the partition to convert: the HSM binding measures it */
	const char *path;            /* header file to create (O_EXCL, 0600) */
	const char *cipher;          /* NULL: lr_cipher_default() */
	uint32_t key_bits;           /* 0: 512 for xts, 256 otherwise */
	struct lr_hsm *hsm;
	uint32_t bind_mask;
	bool bind_default;
	bool recovery_key;
	struct lr_pbkdf_cost recovery_cost;
	const struct lr_secret *recovery_key_value; /* NULL: a new key (returned in res) */
};
/* Step 1: lock a new key in the HSM (lock, unlock, compare first), then a LUKS2 header file
 * for device with data offset LR_CONVERT_DATA_OFFSET, the HSM keyslot and token, and the
 * recovery keyslot. Nothing is written to device. */
int lr_convert_template(const struct lr_convert_template_params *p, struct lr_enroll_result *res);

/* The passphrase of the first lockroot token in header (a header file or the device itself)
 * unlocked through its HSM; device is what the host binding measures. */
int lr_convert_unlock(const char *header, const char *device, struct lr_secret **passphrase);

/* What lr_convert_shrink() is about to do, for a console line: LR_SHRINK_CHECK before
 * e2fsck, LR_SHRINK_RESIZE before resize2fs (new_size: the size it shrinks to). */
enum lr_shrink_step { LR_SHRINK_CHECK, LR_SHRINK_RESIZE };
typedef void (*lr_shrink_step_fn)(enum lr_shrink_step step, uint64_t new_size, void *userdata);

/* Step 2: e2fsck -fy, then resize2fs so that the file system ends at least LR_CONVERT_REDUCE
 * before the end of the partition (nothing when it already does). Needs e2fsck and resize2fs
 * in PATH. -ENOSPC when the file system cannot shrink that far. *fs_size: the size after.
 * step (may be NULL) is called before each of the two tools runs. */
int lr_convert_shrink(const char *device, uint64_t *fs_size, lr_shrink_step_fn step, void *userdata);

/* Fault injection for the system test (kernel command line lockroot.test_cut=header:N, read
 * by lockroot convert --boot): lr_convert_init() writes the record and then only the first
 * bytes bytes of the header, as a power cut in the middle of the header write leaves them, and
 * returns -ECANCELED. 0 turns it off. */
void lr_convert_test_cut_header(uint64_t bytes);

/* Step 3: state SHRUNK -> ENCRYPTING. passphrase opens a keyslot of the template. */
int lr_convert_init(const char *device, const char *template_path, const char *record_path,
		    const struct lr_secret *passphrase);

/* State MOVED_CUT -> SHRUNK: copy the moved segment back to the start (checked against the
 * record before and after), then remove the record. */
int lr_convert_undo_cut(const char *device, const char *record_path);

/* State STUCK_FINAL -> DONE. passphrase opens a keyslot of the device's header. */
int lr_convert_finalize_stuck(const char *device, const struct lr_secret *passphrase);

/* Called after every chunk with bytes encrypted so far and the total; non-zero stops the
 * reencryption cleanly (resumable). */
typedef int (*lr_convert_progress_fn)(uint64_t done, uint64_t total, void *userdata);

/* Step 5: encrypt the rest. name: the active /dev/mapper/NAME of device (online), NULL for
 * offline. Returns 0 when finished, 1 when stopped by progress (still ENCRYPTING), -errno. */
int lr_convert_run(const char *device, const char *name, const struct lr_secret *passphrase,
		   lr_convert_progress_fn progress, void *userdata);

/* Overwrite a file with zeros, fsync, unlink (the template holds keyslots). */
int lr_convert_wipe_file(const char *path);
