/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "secret.h"

struct lr_secret *lr_secret_new(size_t cap)
{
	long page = sysconf(_SC_PAGESIZE);
	struct lr_secret *s;
	size_t size;
	void *p;

	if (cap == 0)
		cap = 1;
	size = (cap + (size_t)page - 1) / (size_t)page * (size_t)page;
	/* Its own mapping: mlock()ed (best effort, it may exceed RLIMIT_MEMLOCK) and kept out
	 * of core dumps and of a forked child. */
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	(void)mlock(p, size);
	(void)madvise(p, size, MADV_DONTDUMP);
	(void)madvise(p, size, MADV_WIPEONFORK);
	s = calloc(1, sizeof(*s));
	if (!s) {
		munmap(p, size);
		return NULL;
	}
	s->data = p;
	s->cap = size;
	return s;
}

void lr_secret_free(struct lr_secret *s)
{
	if (!s)
		return;
	explicit_bzero(s->data, s->cap);
	munlock(s->data, s->cap);
	munmap(s->data, s->cap);
	free(s);
}

void lr_secret_freep(struct lr_secret **s)
{
	lr_secret_free(*s);
	*s = NULL;
}

struct lr_secret *lr_secret_dup(const void *p, size_t len)
{
	struct lr_secret *s = lr_secret_new(len + 1);

	if (!s)
		return NULL;
	memcpy(s->data, p, len);
	s->len = len;
	return s;
}

int lr_secret_random(size_t len, struct lr_secret **out)
{
	struct lr_secret *s = lr_secret_new(len);
	size_t n = 0;

	if (!s)
		return -ENOMEM;
	while (n < len) {
		ssize_t k = getrandom(s->data + n, len - n, 0);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;

			lr_secret_free(s);
			return r;
		}
		n += (size_t)k;
	}
	s->len = len;
	*out = s;
	return 0;
}

int lr_secret_read_fd(int fd, size_t max, struct lr_secret **out)
{
	struct lr_secret *s = lr_secret_new(max + 1);

	if (!s)
		return -ENOMEM;
	for (;;) {
		ssize_t k = read(fd, s->data + s->len, max + 1 - s->len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;

			lr_secret_free(s);
			return r;
		}
		if (k == 0)
			break;
		s->len += (size_t)k;
		if (s->len > max) {
			lr_secret_free(s);
			return -EFBIG;
		}
	}
	*out = s;
	return 0;
}

int lr_secret_read_file(const char *path, size_t max, struct lr_secret **out)
{
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	r = lr_secret_read_fd(fd, max, out);
	close(fd);
	return r;
}

int lr_secret_cmp(const struct lr_secret *a, const struct lr_secret *b)
{
	if (a->len != b->len)
		return 1;
	return CRYPTO_memcmp(a->data, b->data, a->len) ? 1 : 0;
}

int lr_secret_base64(const struct lr_secret *in, struct lr_secret **out)
{
	struct lr_secret *s = lr_secret_new(4 * ((in->len + 2) / 3) + 1);
	int n;

	if (!s)
		return -ENOMEM;
	n = EVP_EncodeBlock(s->data, in->data, (int)in->len);
	if (n < 0) {
		lr_secret_free(s);
		return -EIO;
	}
	s->len = (size_t)n;
	*out = s;
	return 0;
}
