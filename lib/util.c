/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "log.h"
#include "util.h"

char *lr_base64_encode(const uint8_t *in, size_t len)
{
	size_t n = 4 * ((len + 2) / 3) + 1;
	char *out = malloc(n);

	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

int lr_base64_decode(const char *in, uint8_t **out, size_t *out_len)
{
	size_t n = strlen(in), pad = 0;
	uint8_t *buf;
	int r;

	if (n == 0 || n % 4 != 0 || n > INT_MAX)
		return -EBADMSG;
	buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	r = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
	if (r < 0) {
		free(buf);
		return -EBADMSG;
	}
	/* EVP_DecodeBlock counts padding as zero bytes. */
	if (in[n - 1] == '=')
		pad++;
	if (in[n - 2] == '=')
		pad++;
	*out = buf;
	*out_len = (size_t)r - pad;
	return 0;
}

void lr_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int lr_sha256(const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

int lr_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	if (key_len > INT_MAX)
		return -EINVAL;
	return HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &n) ? 0 : -EIO;
}

char *lr_sysroot_path(const char *path)
{
	const char *root = getenv("LOCKROOT_SYSROOT");
	char *p;

	if (!root || !*root)
		return strdup(path);
	if (asprintf(&p, "%s%s", root, path) < 0)
		return NULL;
	return p;
}

int lr_sysroot_read(const char *path, char **out, size_t *len)
{
	_cleanup_free_ char *real = lr_sysroot_path(path);
	size_t n = 0, cap = 64 * 1024;
	char *buf = NULL;
	int fd, r = 0;

	if (!real)
		return -ENOMEM;
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	buf = malloc(cap + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, cap - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n == cap) /* sysfs and procfs files we read are small */
			break;
	}
	buf[n] = '\0';
	*out = buf;
	buf = NULL;
	if (len)
		*len = n;
out:
	free(buf);
	close(fd);
	return r;
}

int lr_parse_uint_list(const char *s, unsigned max, uint32_t *mask)
{
	uint32_t m = 0;

	if (!s || !*s)
		return -EINVAL;
	while (*s) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(s, &end, 10);
		if (errno || end == s || v >= max || v >= 32)
			return -EINVAL;
		m |= UINT32_C(1) << v;
		if (*end == ',' || *end == '+')
			end++;
		else if (*end)
			return -EINVAL;
		s = end;
	}
	*mask = m;
	return 0;
}

int lr_fsync_dir_of(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);
	int fd, r = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0 && errno != EINVAL)
		r = -errno;
	close(fd);
	return r;
}

int lr_sync_renamed(const char *path)
{
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0 || syncfs(fd) < 0)
		r = -errno;
	close(fd);
	return r < 0 ? r : lr_fsync_dir_of(path);
}

char *lr_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Run a tool, its stdout and stderr collected in out (NUL-terminated, truncated). Returns
 * its exit status, or -errno when it could not run or was killed. */
int lr_run_tool(char *const argv[], char *out, size_t outsz)
{
	int pipefd[2], status;
	size_t n = 0;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -errno;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pipefd[1]);
	for (;;) {
		char sink[4096];
		ssize_t k = n + 1 < outsz ? read(pipefd[0], out + n, outsz - 1 - n) : read(pipefd[0], sink, sizeof(sink));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (n + 1 < outsz)
			n += (size_t)k;
	}
	out[n] = 0;
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(status))
		return -EINTR;
	if (WEXITSTATUS(status) == 127)
		return lr_error_code(-ENOENT, "cannot run %s (not in PATH?)", argv[0]);
	return WEXITSTATUS(status);
}

int lr_mkdir_parents(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);

	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

const char *lr_spec_link(const char *spec, char *buf, size_t len)
{
	static const char *const tags[][2] = {
		{ "PARTUUID=", "/dev/disk/by-partuuid/" },
		{ "UUID=", "/dev/disk/by-uuid/" },
		{ "LABEL=", "/dev/disk/by-label/" },
		{ "PARTLABEL=", "/dev/disk/by-partlabel/" },
	};

	for (size_t i = 0; i < LR_ELEMENTSOF(tags); i++) {
		size_t k = strlen(tags[i][0]);

		if (strncmp(spec, tags[i][0], k) == 0) {
			snprintf(buf, len, "%s%s", tags[i][1], spec + k);
			return buf;
		}
	}
	return spec;
}
