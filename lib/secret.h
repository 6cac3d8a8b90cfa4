/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one secret type. Every key, passphrase and PIN lives in an lr_secret:
 * its own anonymous mapping, locked in memory (best effort), excluded from
 * core dumps, and wiped before it is unmapped. Never copy secret bytes into
 * a plain buffer that outlives the call that needs them.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct lr_secret {
	uint8_t *data;
	size_t len;  /* bytes in use */
	size_t cap;  /* bytes available (mapping size) */
};

/* Allocate a zeroed secret with room for cap bytes (len = 0). NULL on ENOMEM. */
struct lr_secret *lr_secret_new(size_t cap);
/* Wipe and free; NULL is fine. */
void lr_secret_free(struct lr_secret *s);
void lr_secret_freep(struct lr_secret **s);
#define _cleanup_secret_ __attribute__((cleanup(lr_secret_freep)))

/* New secret holding a copy of len bytes at p. */
struct lr_secret *lr_secret_dup(const void *p, size_t len);
/* New secret of len bytes from the kernel RNG (getrandom). -errno on failure. */
int lr_secret_random(size_t len, struct lr_secret **out);
/* Read a whole file (at most max bytes) into a secret. One trailing newline is kept:
 * a key file is used as it is, like cryptsetup --key-file. -errno. */
int lr_secret_read_file(const char *path, size_t max, struct lr_secret **out);
/* Read from an fd until EOF (at most max bytes). */
int lr_secret_read_fd(int fd, size_t max, struct lr_secret **out);
/* Constant-time comparison; 0 when equal. */
int lr_secret_cmp(const struct lr_secret *a, const struct lr_secret *b);
/* Base64 of a secret, as a new NUL-terminated secret (len excludes the NUL). */
int lr_secret_base64(const struct lr_secret *in, struct lr_secret **out);
