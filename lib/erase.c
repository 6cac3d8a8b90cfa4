/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Erasing a partition chunk by chunk (discard, verify, else overwrite), and the activity LED
 * that shows the work is under way.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "erase.h"
#include "log.h"
#include "util.h"

#define ERASE_ALIGN 4096

struct eraser {
	const char *device;
	int fd;                 /* O_EXCL: holds off mounts while we work */
	int dfd;                /* O_DIRECT, for reading back after a discard; -1: none */
	bool blk;
	bool discard;           /* still worth trying BLKDISCARD */
	uint8_t *zeros;
	uint8_t *buf;
};

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	size_t n = 0;

	while (n < len) {
		ssize_t k = pread(fd, buf + n, len - n, (off_t)(off + n));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO; /* the device shrank under us */
		n += (size_t)k;
	}
	return 0;
}

static int pwrite_full(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	size_t n = 0;

	while (n < len) {
		ssize_t k = pwrite(fd, buf + n, len - n, (off_t)(off + n));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		n += (size_t)k;
	}
	return 0;
}

/*
 * Read a discarded range back as the device returns it. BLKDISCARD drops the range from the
 * page cache, but a read through the cache could still be served from pages someone else
 * brought in meanwhile, and POSIX_FADV_DONTNEED is only advice (it keeps dirty or mapped
 * pages). O_DIRECT asks the device itself, which is what the check is about; the buffered
 * read after DONTNEED is the fallback for a device that refuses O_DIRECT.
 * Returns 1 if the range reads as zeros, 0 if not, -errno.
 */
static int read_back_zeros(struct eraser *e, uint64_t off, size_t len)
{
	int r;

	if (e->dfd >= 0) {
		r = pread_full(e->dfd, e->buf, len, off);
		if (r == -EINVAL) {
			lr_debug("%s: O_DIRECT read refused, reading back through the page cache", e->device);
			close(e->dfd);
			e->dfd = -1;
		} else if (r < 0) {
			return r;
		}
	}
	if (e->dfd < 0) {
		(void)posix_fadvise(e->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
		r = pread_full(e->fd, e->buf, len, off);
		if (r < 0)
			return r;
	}
	return memcmp(e->buf, e->zeros, len) == 0;
}

/* Discard the chunk if we can and it then reads as zeros; else write zeros over it. Either way
 * it is flushed before we report it done: a discard can sit in a volatile device cache too. */
static int erase_chunk(struct eraser *e, uint64_t off, size_t len, struct lr_erase_stats *st)
{
	bool zeroed = false;
	int r;

	if (e->discard) {
		uint64_t range[2] = { off, len };

		if (ioctl(e->fd, BLKDISCARD, range) < 0) {
			lr_debug("%s: discard not supported (%s): overwriting with zeros", e->device,
				 strerror(errno));
			e->discard = false;
		} else {
			r = read_back_zeros(e, off, len);
			if (r < 0)
				return lr_error_code(-EIO, "cannot read %s at offset %llu: %s", e->device,
						     (unsigned long long)off, strerror(-r));
			zeroed = r > 0;
		}
	}
	if (!zeroed) {
		r = pwrite_full(e->fd, e->zeros, len, off);
		if (r < 0)
			return lr_error_code(-EIO, "cannot write zeros to %s at offset %llu: %s", e->device,
					     (unsigned long long)off, strerror(-r));
	}
	if (fdatasync(e->fd) < 0)
		return lr_error_code(-EIO, "cannot flush %s: %s", e->device, strerror(errno));
	if (zeroed)
		st->discarded += len;
	else
		st->overwritten += len;
	return 0;
}

static int erase_open(struct eraser *e, uint64_t *size)
{
	struct stat s;

	/* On a block device O_EXCL fails with EBUSY while it is mounted or claimed by another
	 * holder (dm, md, another exclusive opener), and keeps them off until we are done. */
	e->fd = open(e->device, O_RDWR | O_EXCL | O_CLOEXEC | O_NOCTTY);
	if (e->fd < 0 && errno == EBUSY)
		return lr_error_code(-EBUSY, "%s is in use (mounted, or held by another program or device "
				     "mapper): unmount or close it first", e->device);
	if (e->fd < 0 && errno == ENOENT)
		return lr_error_code(-ENOENT, "%s: no such device or file", e->device);
	if (e->fd < 0)
		return lr_error_code(-errno, "cannot open %s: %s", e->device, strerror(errno));
	if (fstat(e->fd, &s) < 0)
		return lr_error_code(-errno, "cannot stat %s: %s", e->device, strerror(errno));
	if (S_ISBLK(s.st_mode)) {
		e->blk = true;
		if (ioctl(e->fd, BLKGETSIZE64, size) < 0)
			return lr_error_code(-errno, "cannot get the size of %s: %s", e->device, strerror(errno));
		/* Not O_EXCL: the first descriptor holds the claim, and a second exclusive open
		 * would compete with it. */
		e->dfd = open(e->device, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY);
		if (e->dfd < 0)
			lr_debug("%s: no O_DIRECT (%s), reading back through the page cache", e->device,
				 strerror(errno));
	} else if (S_ISREG(s.st_mode)) {
		*size = (uint64_t)s.st_size;
	} else {
		return lr_error_code(-EINVAL, "%s is neither a block device nor a regular file", e->device);
	}
	return 0;
}

int lr_erase(const char *device, uint64_t start, bool no_discard,
	     lr_erase_progress_fn progress, void *userdata, struct lr_erase_stats *stats)
{
	struct eraser e = { .device = device, .fd = -1, .dfd = -1 };
	struct lr_erase_stats st = { 0 };
	int r;

	if (start % ERASE_ALIGN) {
		r = lr_error_code(-EINVAL, "cannot erase %s from offset %llu: not a multiple of %d",
				  device, (unsigned long long)start, ERASE_ALIGN);
		goto out;
	}
	r = erase_open(&e, &st.size);
	if (r < 0)
		goto out;
	if (start > st.size) {
		r = lr_error_code(-EINVAL, "cannot erase %s from offset %llu: it ends at %llu", device,
				  (unsigned long long)start, (unsigned long long)st.size);
		goto out;
	}
	e.discard = e.blk && !no_discard;
	e.zeros = aligned_alloc(ERASE_ALIGN, LR_ERASE_CHUNK);
	e.buf = aligned_alloc(ERASE_ALIGN, LR_ERASE_CHUNK);
	if (!e.zeros || !e.buf) {
		r = lr_error_code(-ENOMEM, "cannot erase %s: out of memory", device);
		goto out;
	}
	memset(e.zeros, 0, LR_ERASE_CHUNK);

	for (st.done = start; st.done < st.size;) {
		size_t len = st.size - st.done < LR_ERASE_CHUNK ? (size_t)(st.size - st.done) : LR_ERASE_CHUNK;

		r = erase_chunk(&e, st.done, len, &st);
		if (r < 0)
			goto out;
		st.done += len;
		if (progress && progress(&st, userdata) != 0) {
			r = lr_error_code(-EINTR, "erase of %s stopped at offset %llu of %llu", device,
					  (unsigned long long)st.done, (unsigned long long)st.size);
			goto out;
		}
	}
	if (fsync(e.fd) < 0) {
		r = lr_error_code(-EIO, "cannot flush %s: %s", device, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (e.dfd >= 0)
		close(e.dfd);
	if (e.fd >= 0)
		close(e.fd);
	free(e.zeros);
	free(e.buf);
	if (stats)
		*stats = st;
	return r;
}

/* ---- activity LED ---- */

static const char *const led_triggers[] = {
	"/sys/class/leds/ACT/trigger",
	"/sys/class/leds/led0/trigger",
};

/* sysfs wants the whole value in one write. */
static int write_trigger(const char *path, const char *value)
{
	size_t len = strlen(value);
	ssize_t k;
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	k = write(fd, value, len);
	if (k < 0)
		r = -errno;
	else if ((size_t)k != len)
		r = -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* The current trigger is the one in brackets: "none [mmc0] timer heartbeat". */
static int parse_trigger(const char *content, char *out, size_t out_size)
{
	const char *open_br = strchr(content, '['), *close_br;
	size_t len;

	if (!open_br)
		return -EBADMSG;
	close_br = strchr(open_br + 1, ']');
	if (!close_br)
		return -EBADMSG;
	len = (size_t)(close_br - open_br - 1);
	if (len == 0 || len >= out_size)
		return -EBADMSG;
	memcpy(out, open_br + 1, len);
	out[len] = '\0';
	return 0;
}

int lr_led_blink(struct lr_led *led)
{
	_cleanup_free_ char *real = NULL, *content = NULL;
	const char *rel = NULL;
	size_t len;
	int r;

	memset(led, 0, sizeof(*led));
	for (size_t i = 0; i < LR_ELEMENTSOF(led_triggers) && !rel; i++) {
		free(real);
		real = lr_sysroot_path(led_triggers[i]);
		if (real && access(real, F_OK) == 0)
			rel = led_triggers[i];
	}
	if (!rel)
		return 0;

	/* From here on every failure leaves led->path empty, so that restore does nothing. */
	if (strlen(real) >= sizeof(led->path)) {
		lr_warn("the LED trigger path %s is too long: LED left alone", real);
		return 0;
	}
	r = lr_sysroot_read(rel, &content, &len);
	if (r < 0) {
		lr_warn("cannot read the LED trigger %s: %s", real, strerror(-r));
		return 0;
	}
	if (parse_trigger(content, led->saved, sizeof(led->saved)) < 0) {
		lr_warn("cannot tell the current LED trigger from %s: LED left alone", real);
		return 0;
	}
	r = write_trigger(real, "timer");
	if (r < 0) {
		lr_warn("cannot make the LED blink (%s): %s", real, strerror(-r));
		return 0;
	}
	strcpy(led->path, real);
	return 0;
}

int lr_led_restore(struct lr_led *led)
{
	int r;

	if (!led->path[0])
		return 0;
	r = write_trigger(led->path, led->saved);
	if (r < 0)
		lr_warn("cannot restore the LED trigger '%s' (%s): %s", led->saved, led->path, strerror(-r));
	led->path[0] = '\0';
	return 0;
}
