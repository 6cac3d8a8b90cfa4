/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static inline void lr_freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ __attribute__((cleanup(lr_freep)))

#define LR_ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Base64 (RFC 4648, with padding) of non-secret data. Returns malloc'd string or NULL. */
char *lr_base64_encode(const uint8_t *in, size_t len);
/* Decode; -EBADMSG on bad input. *out is malloc'd. */
int lr_base64_decode(const char *in, uint8_t **out, size_t *out_len);
/* s without leading and trailing white space (trailing removed in place). */
char *lr_trim(char *s);
/* Lowercase hex of data into out (2*len+1 bytes). */
void lr_hex(const uint8_t *in, size_t len, char *out);
/* SHA-256. */
int lr_sha256(const void *data, size_t len, uint8_t out[32]);
/* HMAC-SHA-256. */
int lr_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t out[32]);
/* Read a small text file under LOCKROOT_SYSROOT (path is absolute, e.g. "/proc/cpuinfo").
 * Returns malloc'd contents (NUL-terminated, may contain NULs before the end, *len says how
 * many bytes). -errno. */
int lr_sysroot_read(const char *path, char **out, size_t *len);
/* Build the real path of an absolute path under LOCKROOT_SYSROOT. malloc'd. */
char *lr_sysroot_path(const char *path);
/* Parse a list like "1,2,7" of numbers < max into a bitmask. -EINVAL. */
int lr_parse_uint_list(const char *s, unsigned max, uint32_t *mask);

/* Run a tool (stdin /dev/null), its stdout and stderr collected in out (NUL-terminated,
 * truncated). Returns its exit status, or -errno when it could not run or was killed. */
int lr_run_tool(char *const argv[], char *out, size_t outsz);
/* Create the directories above path (0755). -errno. */
int lr_mkdir_parents(const char *path);
/* The udev link a PARTUUID=, UUID=, LABEL= or PARTLABEL= spec names
 * (/dev/disk/by-partuuid/..., written into buf), or spec itself when it is a path. */
const char *lr_spec_link(const char *spec, char *buf, size_t len);
/* fsync the directory holding path. -errno. */
int lr_fsync_dir_of(const char *path);
/* Make a file just renamed into place durable: fsync the file itself, sync its file system,
 * fsync its directory. The fsync of the file is what vfat needs: its rename writes the new
 * directory entry with size 0 and only marks the inode dirty, which a directory fsync does
 * not write, so without it a power cut in the next seconds leaves an empty file. -errno. */
int lr_sync_renamed(const char *path);
