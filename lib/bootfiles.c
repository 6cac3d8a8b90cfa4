/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Boot files: see bootfiles.h. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "bootfiles.h"
#include "fingerprint.h"
#include "log.h"
#include "util.h"

#define CONFIG_MAX (1024 * 1024)

/* Where the boot files are read from: dir; mnt non-empty when we mounted it there. */
struct lr_bootdir {
	char dir[PATH_MAX];
	char mnt[PATH_MAX];
};
#define INCLUDE_DEPTH 8

static const struct {
	const char *kernel, *initramfs;
} default_kernels[] = {
	{ "kernel8.img", "initramfs8" },      { "kernel_2712.img", "initramfs_2712" },
	{ "kernel7l.img", "initramfs7l" },    { "kernel7.img", "initramfs7" },
	{ "kernel.img", "initramfs" },
};

/* What config.txt names, in the order it names it. */
struct names {
	char **v;
	size_t n;
};

static int names_add(struct names *l, const char *s, size_t len)
{
	char **v;

	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->v[i]) == len && strncmp(l->v[i], s, len) == 0)
			return 0;
	v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	v[l->n] = strndup(s, len);
	if (!v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static void names_free(struct names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

struct config {
	struct names includes, kernels, initramfs, cmdline, dtbs, overlays;
	bool auto_initramfs;
};

static void config_free(struct config *c)
{
	names_free(&c->includes);
	names_free(&c->kernels);
	names_free(&c->initramfs);
	names_free(&c->cmdline);
	names_free(&c->dtbs);
	names_free(&c->overlays);
}

static int bootfiles_add(struct lr_bootfiles *bf, const char *dir, const char *rel)
{
	_cleanup_free_ char *path = NULL;
	struct lr_bootfile *f;
	uint8_t md[32];
	unsigned mdlen = 0;
	char buf[65536];
	EVP_MD_CTX *ctx;
	ssize_t n;
	int fd, r = 0;

	for (size_t i = 0; i < bf->n; i++)
		if (strcmp(bf->f[i].path, rel) == 0)
			return 0;
	f = realloc(bf->f, (bf->n + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	bf->f = f;
	f = &bf->f[bf->n];
	memset(f, 0, sizeof(*f));
	f->path = strdup(rel);
	if (!f->path || asprintf(&path, "%s/%s", dir, rel) < 0) {
		free(f->path);
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno != ENOENT) {
			r = lr_error_code(-errno, "cannot read boot file %s: %s", path, strerror(errno));
			free(f->path);
			return r;
		}
		strcpy(f->sha256, "-");
		bf->n++;
		return 0;
	}
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		r = -ENOMEM;
	while (r == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = lr_error_code(-errno, "cannot read boot file %s: %s", path, strerror(errno));
			break;
		}
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			r = -EIO;
	}
	if (r == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (r < 0) {
		free(f->path);
		return r;
	}
	lr_hex(md, sizeof(md), f->sha256);
	bf->n++;
	return 0;
}

/* "dtoverlay=vc4-kms-v3d,cma-512" names overlays/vc4-kms-v3d.dtbo; "dtoverlay=" (reset) none. */
static int add_overlay(struct config *c, const char *v)
{
	size_t len = strcspn(v, ",:");
	char name[300];

	if (len == 0)
		return 0;
	if (snprintf(name, sizeof(name), "overlays/%.*s.dtbo", (int)len, v) >= (int)sizeof(name))
		return 0;
	return names_add(&c->overlays, name, strlen(name));
}

static int parse_config(const char *dir, const char *rel, int depth, struct config *c)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	struct stat st;
	char *save = NULL;
	FILE *f;
	int r = 0;

	if (depth > INCLUDE_DEPTH)
		return lr_error_code(-ELOOP, "config.txt includes are nested deeper than %d (at %s)", INCLUDE_DEPTH, rel);
	if (asprintf(&path, "%s/%s", dir, rel) < 0)
		return -ENOMEM;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : lr_error_code(-errno, "cannot read %s: %s", path, strerror(errno));
	if (fstat(fileno(f), &st) == 0 && st.st_size > CONFIG_MAX) {
		fclose(f);
		return lr_error_code(-EFBIG, "%s is larger than 1 MiB", path);
	}
	text = calloc(1, (size_t)st.st_size + 1);
	if (!text || fread(text, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
		r = text ? -EIO : -ENOMEM;
	fclose(f);
	if (r < 0)
		return r;
	for (char *line = strtok_r(text, "\n", &save); line && r == 0; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strchr(line, '#'), *s, *eq, *v;

		if (hash)
			*hash = '\0';
		s = lr_trim(line);
		if (!*s || *s == '[')
			continue;
		if (strncmp(s, "include", 7) == 0 && isspace((unsigned char)s[7])) {
			v = lr_trim(s + 8);
			r = names_add(&c->includes, v, strlen(v));
			if (r == 0)
				r = parse_config(dir, v, depth + 1, c);
			continue;
		}
		if (strncmp(s, "initramfs", 9) == 0 && isspace((unsigned char)s[9])) {
			v = lr_trim(s + 10);
			r = names_add(&c->initramfs, v, strcspn(v, " \t"));
			continue;
		}
		eq = strchr(s, '=');
		if (!eq)
			continue;
		*eq = '\0';
		v = lr_trim(eq + 1);
		s = lr_trim(s);
		if (strcmp(s, "kernel") == 0 && *v)
			r = names_add(&c->kernels, v, strlen(v));
		else if (strcmp(s, "cmdline") == 0 && *v)
			r = names_add(&c->cmdline, v, strlen(v));
		else if (strcmp(s, "device_tree") == 0 && *v)
			r = names_add(&c->dtbs, v, strlen(v));
		else if (strcmp(s, "dtoverlay") == 0)
			r = add_overlay(c, v);
		else if (strcmp(s, "auto_initramfs") == 0)
			c->auto_initramfs = strcmp(v, "0") != 0;
	}
	return r;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int top_dtbs(const char *dir, struct names *out)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int r = 0;

	if (!d)
		return lr_error_code(-errno, "cannot list %s: %s", dir, strerror(errno));
	while (r == 0 && (e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len > 4 && strcasecmp(e->d_name + len - 4, ".dtb") == 0)
			r = names_add(out, e->d_name, len);
	}
	closedir(d);
	if (r == 0 && out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), cmp_str);
	return r;
}

static bool exists(const char *dir, const char *rel)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	return access(path, F_OK) == 0;
}

int lr_bootfiles_measure(const char *dir, struct lr_bootfiles *out)
{
	struct config c = { 0 };
	int r;

	memset(out, 0, sizeof(*out));
	if (!exists(dir, "config.txt") && !exists(dir, "cmdline.txt"))
		return lr_error_code(-ENOENT, "%s holds neither config.txt nor cmdline.txt: not a boot partition", dir);
	r = parse_config(dir, "config.txt", 0, &c);
	if (r < 0)
		goto out;
	if (c.cmdline.n == 0)
		r = names_add(&c.cmdline, "cmdline.txt", strlen("cmdline.txt"));
	if (r == 0 && c.dtbs.n == 0)
		r = top_dtbs(dir, &c.dtbs);
	if (r == 0 && c.kernels.n == 0)
		for (size_t i = 0; i < LR_ELEMENTSOF(default_kernels) && r == 0; i++) {
			if (!exists(dir, default_kernels[i].kernel))
				continue;
			r = names_add(&c.kernels, default_kernels[i].kernel, strlen(default_kernels[i].kernel));
			if (r == 0 && c.auto_initramfs)
				r = names_add(&c.initramfs, default_kernels[i].initramfs,
					      strlen(default_kernels[i].initramfs));
		}
	if (r == 0 && c.overlays.n > 0 && exists(dir, "overlays/overlay_map.dtb"))
		r = names_add(&c.overlays, "overlays/overlay_map.dtb", strlen("overlays/overlay_map.dtb"));
	if (r < 0)
		goto out;
	r = bootfiles_add(out, dir, "config.txt");
	{
		const struct names *groups[] = { &c.includes, &c.cmdline, &c.kernels, &c.initramfs, &c.dtbs,
						 &c.overlays };

		for (size_t g = 0; g < LR_ELEMENTSOF(groups) && r == 0; g++)
			for (size_t i = 0; i < groups[g]->n && r == 0; i++)
				r = bootfiles_add(out, dir, groups[g]->v[i]);
	}
out:
	config_free(&c);
	if (r < 0)
		lr_bootfiles_done(out);
	return r;
}

void lr_bootfiles_done(struct lr_bootfiles *bf)
{
	if (!bf)
		return;
	for (size_t i = 0; i < bf->n; i++)
		free(bf->f[i].path);
	free(bf->f);
	memset(bf, 0, sizeof(*bf));
}

int lr_bootfiles_value(const struct lr_bootfiles *bf, char out[65])
{
	static const char magic[] = "lockroot-boot-files-v1";
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t md[32];
	unsigned len = 0;
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(ctx, magic, sizeof(magic)) == 1;
	for (size_t i = 0; i < bf->n && ok; i++)
		ok = EVP_DigestUpdate(ctx, bf->f[i].path, strlen(bf->f[i].path) + 1) == 1 &&
		     EVP_DigestUpdate(ctx, bf->f[i].sha256, strlen(bf->f[i].sha256)) == 1 &&
		     EVP_DigestUpdate(ctx, "\n", 1) == 1;
	ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -EIO;
	lr_hex(md, sizeof(md), out);
	return 0;
}

struct json_object *lr_bootfiles_to_json(const struct lr_bootfiles *bf)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; a && i < bf->n; i++) {
		struct json_object *e = json_object_new_object();

		if (!e) {
			json_object_put(a);
			return NULL;
		}
		json_object_object_add(e, "path", json_object_new_string(bf->f[i].path));
		json_object_object_add(e, "sha256", json_object_new_string(bf->f[i].sha256));
		json_object_array_add(a, e);
	}
	return a;
}

static bool valid_digest(const char *s)
{
	return strcmp(s, "-") == 0 || (strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64);
}

int lr_bootfiles_from_json(struct json_object *arr, struct lr_bootfiles *out)
{
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!json_object_is_type(arr, json_type_array) || (n = json_object_array_length(arr)) == 0)
		return lr_error_code(-EBADMSG, "lockroot token is corrupt: \"boot_files\" lists no files");
	out->f = calloc(n, sizeof(*out->f));
	if (!out->f)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(arr, i), *p, *d;

		if (!json_object_object_get_ex(e, "path", &p) || !json_object_is_type(p, json_type_string) ||
		    !json_object_object_get_ex(e, "sha256", &d) || !json_object_is_type(d, json_type_string) ||
		    !*json_object_get_string(p) || !valid_digest(json_object_get_string(d))) {
			lr_bootfiles_done(out);
			return lr_error_code(-EBADMSG, "lockroot token is corrupt: a \"boot_files\" entry needs a "
					     "\"path\" and a \"sha256\" of 64 hex digits (or \"-\")");
		}
		out->f[i].path = strdup(json_object_get_string(p));
		if (!out->f[i].path) {
			lr_bootfiles_done(out);
			return -ENOMEM;
		}
		strcpy(out->f[i].sha256, json_object_get_string(d));
		out->n++;
	}
	return 0;
}

static const struct lr_bootfile *find(const struct lr_bootfiles *bf, const char *path)
{
	for (size_t i = 0; i < bf->n; i++)
		if (strcmp(bf->f[i].path, path) == 0)
			return &bf->f[i];
	return NULL;
}

int lr_bootfiles_explain(const struct lr_bootfiles *then, const struct lr_bootfiles *now)
{
	int n = 0;

	for (size_t i = 0; i < then->n; i++) {
		const struct lr_bootfile *a = &then->f[i], *b = find(now, a->path);
		bool was = strcmp(a->sha256, "-") != 0, is = b && strcmp(b->sha256, "-") != 0;

		if (b && strcmp(a->sha256, b->sha256) == 0)
			continue;
		n++;
		if (!b)
			lr_error("boot file %s is no longer loaded (config.txt changed what the firmware loads)",
				 a->path);
		else if (was && is)
			lr_error("boot file %s changed since the key was locked to the boot files", a->path);
		else if (was)
			lr_error("boot file %s was removed since the key was locked to the boot files", a->path);
		else
			lr_error("boot file %s appeared since the key was locked to the boot files", a->path);
	}
	for (size_t i = 0; i < now->n; i++)
		if (!find(then, now->f[i].path)) {
			n++;
			lr_error("boot file %s is loaded now, and was not when the key was locked", now->f[i].path);
		}
	return n;
}

/* ---- where the boot partition is ---- */

static int resolve(const char *spec, char *out, size_t len)
{
	char buf[PATH_MAX];
	const char *link = lr_spec_link(spec, buf, sizeof(buf));

	if (link != spec) {
		if (!realpath(link, out))
			return lr_error_code(-ENOENT, "the boot partition %s is not there (%s: %s)", spec, link,
					     strerror(errno));
		return 0;
	}
	if (strlen(spec) >= len)
		return -ENAMETOOLONG;
	strcpy(out, spec);
	return 0;
}

/* /proc/self/mountinfo of this system (never LOCKROOT_SYSROOT's: mounts are real). */
static int read_mountinfo(char **out)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	size_t size = 0;
	char *buf = NULL;
	FILE *m;
	int c;

	*out = NULL;
	if (!f)
		return lr_error_code(-errno, "cannot read /proc/self/mountinfo: %s", strerror(errno));
	m = open_memstream(&buf, &size);
	if (!m) {
		fclose(f);
		return -ENOMEM;
	}
	while ((c = getc(f)) != EOF)
		putc(c, m);
	fclose(f);
	if (fclose(m) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	return 0;
}

/* The mount point of the block device dev, from mountinfo. */
static int find_mount(dev_t dev, char *out, size_t len)
{
	_cleanup_free_ char *info = NULL;
	char *save = NULL;
	int r;

	r = read_mountinfo(&info);
	if (r < 0)
		return r;
	for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned maj, min;
		char root[PATH_MAX], mnt[PATH_MAX];

		if (sscanf(line, "%*u %*u %u:%u %4095s %4095s", &maj, &min, root, mnt) != 4)
			continue;
		if (makedev(maj, min) != dev || strcmp(root, "/") != 0 || strlen(mnt) >= len)
			continue;
		strcpy(out, mnt); /* octal escapes (spaces in the path) are not expected here */
		return 0;
	}
	return -ENOENT;
}

void lr_load_vfat(void)
{
	static const char *const mods[] = { "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1" };

	for (size_t i = 0; i < LR_ELEMENTSOF(mods); i++) {
		char *argv[] = { (char *)"modprobe", (char *)"-q", (char *)mods[i], NULL };
		char out[256];

		(void)lr_run_tool(argv, out, sizeof(out));
	}
}

static int bootdir_open(const char *spec, struct lr_bootdir *b)
{
	char dev[PATH_MAX];
	struct stat st;
	int r;

	memset(b, 0, sizeof(*b));
	if (!spec || !*spec)
		return lr_error_code(-EINVAL, "no boot partition was recorded");
	r = resolve(spec, dev, sizeof(dev));
	if (r < 0)
		return r;
	if (stat(dev, &st) < 0)
		return lr_error_code(-errno, "cannot find the boot partition %s: %s", spec, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		snprintf(b->dir, sizeof(b->dir), "%s", dev);
		return 0;
	}
	if (!S_ISBLK(st.st_mode))
		return lr_error_code(-ENOTBLK, "the boot partition %s (%s) is not a block device", spec, dev);
	if (find_mount(st.st_rdev, b->dir, sizeof(b->dir)) == 0)
		return 0;
	(void)mkdir("/run/lockroot", 0700);
	snprintf(b->mnt, sizeof(b->mnt), "/run/lockroot/boot-files.XXXXXX");
	if (!mkdtemp(b->mnt)) {
		r = lr_error_code(-errno, "cannot create a mount point under /run/lockroot: %s", strerror(errno));
		b->mnt[0] = '\0';
		return r;
	}
	lr_load_vfat();
	if (mount(dev, b->mnt, "vfat", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
	    mount(dev, b->mnt, "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		r = lr_error_code(-errno, "cannot mount the boot partition %s (%s) read-only: %s", spec, dev,
				  strerror(errno));
		rmdir(b->mnt);
		b->mnt[0] = '\0';
		return r;
	}
	snprintf(b->dir, sizeof(b->dir), "%s", b->mnt);
	return 0;
}

static void bootdir_close(struct lr_bootdir *b)
{
	if (b->mnt[0]) {
		if (umount2(b->mnt, 0) < 0)
			(void)umount2(b->mnt, MNT_DETACH);
		rmdir(b->mnt);
	}
	memset(b, 0, sizeof(*b));
}

int lr_bootfiles_measure_spec(const char *spec, struct lr_bootfiles *out)
{
	struct lr_bootdir b;
	int r;

	memset(out, 0, sizeof(*out));
	r = bootdir_open(spec, &b);
	if (r < 0)
		return r;
	r = lr_bootfiles_measure(b.dir, out);
	bootdir_close(&b);
	return r;
}

/* "PARTUUID=…" of dev when /dev/disk/by-partuuid has a link to it. */
static char *partuuid_of(const char *dev)
{
	struct dirent *e;
	DIR *d = opendir("/dev/disk/by-partuuid");
	char *out = NULL;

	while (d && !out && (e = readdir(d))) {
		char link[PATH_MAX], real[PATH_MAX];

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/dev/disk/by-partuuid/%s", e->d_name);
		if (realpath(link, real) && strcmp(real, dev) == 0 && asprintf(&out, "PARTUUID=%s", e->d_name) < 0)
			out = NULL;
	}
	if (d)
		closedir(d);
	return out;
}

int lr_bootdir_default_spec(char **spec)
{
	static const char *const dirs[] = { "/boot/firmware", "/boot" };
	_cleanup_free_ char *info = NULL;
	int r;

	*spec = NULL;
	r = read_mountinfo(&info);
	if (r < 0)
		return r;
	for (size_t i = 0; i < LR_ELEMENTSOF(dirs); i++) {
		_cleanup_free_ char *copy = strdup(info);
		char *save = NULL;

		if (!copy)
			return -ENOMEM;
		if (!exists(dirs[i], "config.txt") && !exists(dirs[i], "cmdline.txt"))
			continue;
		for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			char mnt[PATH_MAX], src[PATH_MAX], real[PATH_MAX];
			const char *dash = strstr(line, " - ");

			if (sscanf(line, "%*u %*u %*u:%*u %*s %4095s", mnt) != 1 || strcmp(mnt, dirs[i]) != 0 || !dash ||
			    sscanf(dash + 3, "%*s %4095s", src) != 1 || src[0] != '/')
				continue;
			if (!realpath(src, real))
				snprintf(real, sizeof(real), "%s", src);
			*spec = partuuid_of(real);
			if (!*spec)
				*spec = strdup(real);
			return *spec ? 0 : -ENOMEM;
		}
	}
	return lr_error_code(-ENOENT, "no boot partition with config.txt or cmdline.txt is mounted at /boot/firmware "
			     "or /boot: name it with --boot-dev");
}

int lr_fingerprint_set_boot_files(struct lr_fingerprint *fp, const struct lr_bootfiles *bf, const char *spec)
{
	struct lr_component *c = &fp->comp[LR_COMP_BOOT_FILES];
	char v[65];
	int r;

	r = lr_bootfiles_value(bf, v);
	if (r < 0)
		return r;
	free(c->value);
	free(c->source);
	c->value = strdup(v);
	c->source = strdup(spec ? spec : "");
	c->error = c->value && c->source ? 0 : -ENOMEM;
	return c->error;
}
