/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "rootdev.h"
#include "util.h"

/* mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
static int parse_root_line(const char *line, unsigned *maj, unsigned *min, char **source)
{
	char mnt[512], src[512];
	const char *dash;

	if (sscanf(line, "%*u %*u %u:%u %*s %511s", maj, min, mnt) != 3 || strcmp(mnt, "/") != 0)
		return 0;
	dash = strstr(line, " - ");
	if (!dash || sscanf(dash + 3, "%*s %511s", src) != 1)
		return 0;
	*source = strdup(src);
	return *source ? 1 : -ENOMEM;
}

static char *read_trimmed(const char *path)
{
	char *s = NULL;
	size_t n = 0;

	if (lr_sysroot_read(path, &s, &n) < 0)
		return NULL;
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
	return s;
}

/* The single slave of a dm device: a LUKS volume has exactly one. */
static char *dm_backing(unsigned maj, unsigned min)
{
	_cleanup_free_ char *dir = NULL;
	char rel[64], *out = NULL;
	struct dirent *e;
	DIR *d;

	snprintf(rel, sizeof(rel), "/sys/dev/block/%u:%u/slaves", maj, min);
	dir = lr_sysroot_path(rel);
	d = dir ? opendir(dir) : NULL;
	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (out) { /* more than one: not a plain LUKS mapping */
			free(out);
			out = NULL;
			break;
		}
		if (asprintf(&out, "/dev/%s", e->d_name) < 0)
			out = NULL;
	}
	closedir(d);
	return out;
}

int lr_rootdev_find(struct lr_rootdev *rd)
{
	_cleanup_free_ char *info = NULL;
	unsigned maj = 0, min = 0;
	char path[64];
	int r = 0;

	memset(rd, 0, sizeof(*rd));
	r = lr_sysroot_read("/proc/self/mountinfo", &info, NULL);
	if (r < 0)
		return lr_error_code(r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
	for (char *line = strtok(info, "\n"); line && r == 0; line = strtok(NULL, "\n"))
		r = parse_root_line(line, &maj, &min, &rd->source);
	if (r < 0)
		return r;
	if (!rd->source)
		return lr_error_code(-ENOENT, "no file system is mounted on / in /proc/self/mountinfo");
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/dm/name", maj, min);
	rd->dm_name = read_trimmed(path);
	if (rd->dm_name)
		rd->backing = dm_backing(maj, min);
	return 0;
}

void lr_rootdev_done(struct lr_rootdev *rd)
{
	free(rd->source);
	free(rd->dm_name);
	free(rd->backing);
	memset(rd, 0, sizeof(*rd));
}
