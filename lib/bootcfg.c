/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Boot configuration editing. Each file is read whole into a doc (its lines), edited in
 * memory, and joined again: only docs whose text differs from what was read become changes,
 * so the edits are idempotent by construction and lines we do not touch stay byte for byte.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootcfg.h"
#include "log.h"
#include "util.h"

#define MAX_FILE_SIZE (1024 * 1024)
#define MAX_FIELDS 8
#define BLANKS " \t\r"

struct lines {
	char **v;
	size_t n;
	bool final_nl;          /* the text ended with a newline */
	bool crlf;              /* lines end with \r: lines we write get one too */
};

struct doc {
	char *path;
	char *old;              /* contents as read; NULL: the file does not exist */
	struct lines l;
	dev_t dev;
	ino_t ino;
};

struct plan {
	const struct lr_bootcfg *cfg;
	const char *root;
	char *boot;             /* NULL: no firmware files (firmware_optional) */
	struct doc *docs;
	size_t n_docs;
};

enum section { SEC_NONE, SEC_ALL, SEC_OTHER };

struct line_ref {
	size_t doc, line;
};

/* What config.txt (with its includes) says; the section state runs on through includes,
 * since the firmware reads an included file as if it were inserted in place. */
struct cfgscan {
	enum section sec;
	char *cmdline;          /* last active cmdline= */
	bool auto_initramfs;    /* last active auto_initramfs= */
	char *initramfs;        /* file of the last active initramfs line */
	struct line_ref *refs;  /* every active initramfs line */
	size_t n_refs;
	dev_t dev[LR_BOOTCFG_MAX_INCLUDE_DEPTH + 1]; /* files being read, to find loops */
	ino_t ino[LR_BOOTCFG_MAX_INCLUDE_DEPTH + 1];
};

struct field {
	size_t off, len;
};

static const char *skip_blank(const char *s)
{
	return s + strspn(s, BLANKS);
}

static bool is_comment_or_empty(const char *line)
{
	line = skip_blank(line);
	return *line == '\0' || *line == '#';
}

static char *strndup_trim(const char *s, size_t len)
{
	while (len > 0 && strchr(BLANKS, *s)) {
		s++;
		len--;
	}
	while (len > 0 && strchr(BLANKS, s[len - 1]))
		len--;
	return strndup(s, len);
}

static char *path_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	char *p;

	while (la > 0 && a[la - 1] == '/')
		la--;
	while (*b == '/')
		b++;
	if (asprintf(&p, "%.*s/%s", (int)la, a, b) < 0)
		return NULL;
	return p;
}

/* ---- files ---- */

static int read_fd(int fd, const char *path, char **out)
{
	size_t n = 0;
	char *buf = malloc(MAX_FILE_SIZE + 1);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k = read(fd, buf + n, MAX_FILE_SIZE + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			free(buf);
			return lr_error_code(-errno, "cannot read %s: %s", path, strerror(errno));
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > MAX_FILE_SIZE) {
			free(buf);
			return lr_error_code(-EFBIG, "%s is larger than 1 MiB: not a boot configuration file", path);
		}
	}
	if (memchr(buf, '\0', n)) {
		free(buf);
		return lr_error_code(-EBADMSG, "%s contains NUL bytes: not a text file", path);
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* Read a regular file (never through a symlink). -ENOENT without a message. */
static int read_text(const char *path, char **out, struct stat *st)
{
	int fd, r;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP)
			return lr_error_code(-EINVAL, "%s is a symbolic link: lockroot edits only regular files", path);
		if (r != -ENOENT)
			lr_error("cannot open %s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, st) < 0) {
		r = lr_error_code(-errno, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		r = lr_error_code(-EINVAL, "%s is not a regular file", path);
		goto out;
	}
	r = read_fd(fd, path, out);
out:
	close(fd);
	return r;
}

static int match_owner_mode(int fd, const struct stat *want)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if ((st.st_uid != want->st_uid || st.st_gid != want->st_gid) &&
	    fchown(fd, want->st_uid, want->st_gid) < 0)
		return -errno;
	if ((st.st_mode & 07777) != (want->st_mode & 07777) && fchmod(fd, want->st_mode & 07777) < 0)
		return -errno;
	return 0;
}

/* A new file .BASE.lockroot-XXXXXXXX beside BASE, with want's owner and mode. */
static int create_temp(int dfd, const char *base, const struct stat *want, int *fd, char **name)
{
	uint32_t rnd;
	int r;

	for (int i = 0; i < 16; i++) {
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -errno;
		if (asprintf(name, ".%s.lockroot-%08x", base, (unsigned)rnd) < 0)
			return -ENOMEM;
		*fd = openat(dfd, *name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			     want->st_mode & 07777);
		if (*fd >= 0) {
			r = match_owner_mode(*fd, want);
			if (r == 0)
				return 0;
			close(*fd);
			unlinkat(dfd, *name, 0);
		} else {
			r = -errno;
		}
		free(*name);
		*name = NULL;
		if (r != -EEXIST)
			return r;
	}
	return -EEXIST;
}

static int write_all(int fd, const char *text)
{
	size_t len = strlen(text);

	while (len > 0) {
		ssize_t k = write(fd, text, len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		text += k;
		len -= (size_t)k;
	}
	return 0;
}

/* RENAME_NOREPLACE where the file system has it; a check before rename elsewhere. */
static int rename_into(int dfd, const char *from, const char *to, bool noreplace)
{
	struct stat st;

	if (!noreplace)
		return renameat(dfd, from, dfd, to) < 0 ? -errno : 0;
	if (renameat2(dfd, from, dfd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	if (fstatat(dfd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	return renameat(dfd, from, dfd, to) < 0 ? -errno : 0;
}

/* Temp file in the same directory, fsync, rename over PATH, fsync the directory.
 * noreplace: -EEXIST (no message) if PATH exists. */
static int write_atomic(const char *path, const char *text, const struct stat *want, bool noreplace)
{
	_cleanup_free_ char *dir = strdup(path);
	char *tmp = NULL, *slash;
	const char *base;
	int dfd = -1, fd = -1, r;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return lr_error_code(-EINVAL, "%s: not a path under a directory", path);
	*slash = '\0';
	base = slash + 1;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return lr_error_code(-errno, "cannot open directory %s: %s", dir, strerror(errno));
	r = create_temp(dfd, base, want, &fd, &tmp);
	if (r < 0) {
		r = lr_error_code(r, "cannot create a temporary file in %s: %s", dir, strerror(-r));
		goto out;
	}
	r = write_all(fd, text);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0)
		r = rename_into(dfd, tmp, base, noreplace);
	if (r < 0) {
		if (r != -EEXIST)
			lr_error("cannot write %s: %s", path, strerror(-r));
		unlinkat(dfd, tmp, 0);
		goto out;
	}
	if (fsync(dfd) < 0 && errno != EINVAL)
		r = lr_error_code(-errno, "cannot sync directory %s: %s", dir, strerror(errno));
out:
	free(tmp);
	close(dfd);
	return r;
}

/* ---- lines ---- */

static void lines_done(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	*l = (struct lines){ 0 };
}

/* Insert a line (taking ownership of s). */
static int lines_insert(struct lines *l, size_t at, char *s)
{
	char **v;

	if (!s)
		return -ENOMEM;
	v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v) {
		free(s);
		return -ENOMEM;
	}
	l->v = v;
	memmove(v + at + 1, v + at, (l->n - at) * sizeof(*v));
	v[at] = s;
	l->n++;
	return 0;
}

static void lines_delete(struct lines *l, size_t at)
{
	free(l->v[at]);
	memmove(l->v + at, l->v + at + 1, (l->n - at - 1) * sizeof(*l->v));
	l->n--;
}

/* Replace a line with s (taking ownership) unless it is the same text. */
static int lines_set(struct lines *l, size_t at, char *s)
{
	if (!s)
		return -ENOMEM;
	if (strcmp(l->v[at], s) == 0) {
		free(s);
		return 0;
	}
	free(l->v[at]);
	l->v[at] = s;
	return 0;
}

/* A line as written by us: with \r in a CRLF file. */
static char *lines_new(const struct lines *l, const char *s)
{
	char *p;

	if (asprintf(&p, "%s%s", s, l->crlf ? "\r" : "") < 0)
		return NULL;
	return p;
}

static int lines_append(struct lines *l, const char *s)
{
	l->final_nl = true;
	return lines_insert(l, l->n, lines_new(l, s));
}

static int lines_split(const char *text, struct lines *l)
{
	const char *p = text;
	int r;

	*l = (struct lines){ 0 };
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		r = lines_insert(l, l->n, strndup(p, len));
		if (r < 0)
			return r;
		if (!nl)
			break;
		p = nl + 1;
	}
	l->final_nl = *text && text[strlen(text) - 1] == '\n';
	l->crlf = l->n > 0 && *l->v[0] && l->v[0][strlen(l->v[0]) - 1] == '\r';
	return 0;
}

static char *lines_join(const struct lines *l)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (!f)
		return NULL;
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%s%s", l->v[i], i + 1 < l->n || l->final_nl ? "\n" : "");
	if (fclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* ---- fields (crypttab, fstab) ---- */

static size_t split_fields(const char *line, struct field *f, size_t max)
{
	size_t n = 0, i = 0;

	for (;;) {
		i += strspn(line + i, BLANKS);
		if (!line[i] || n == max)
			return n;
		f[n].off = i;
		f[n].len = strcspn(line + i, BLANKS);
		i += f[n].len;
		n++;
	}
}

static bool field_is(const char *line, const struct field *f, const char *s)
{
	return s && f->len == strlen(s) && strncmp(line + f->off, s, f->len) == 0;
}

/* line with field i replaced by vals[i] (NULL: kept), missing fields appended; the blanks
 * between fields and at the end are kept. */
static char *fields_set(const char *line, const char *const *vals, size_t nvals)
{
	struct field f[MAX_FIELDS];
	size_t nf = split_fields(line, f, MAX_FIELDS), end = 0;
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);

	if (!m)
		return NULL;
	for (size_t i = 0; i < nf; i++) {
		fwrite(line + end, 1, f[i].off - end, m);
		if (i < nvals && vals[i])
			fputs(vals[i], m);
		else
			fwrite(line + f[i].off, 1, f[i].len, m);
		end = f[i].off + f[i].len;
	}
	for (size_t i = nf; i < nvals; i++)
		fprintf(m, "%s%s", nf == 0 && i == 0 ? "" : " ", vals[i] ? vals[i] : "-");
	fputs(line + end, m);
	if (fclose(m) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* ---- the plan ---- */

static void doc_done(struct doc *d)
{
	free(d->path);
	free(d->old);
	lines_done(&d->l);
}

static void plan_done(struct plan *p)
{
	for (size_t i = 0; i < p->n_docs; i++)
		doc_done(&p->docs[i]);
	free(p->docs);
	free(p->boot);
}

static int find_doc(const struct plan *p, const char *path, const struct stat *st, bool exists, size_t *idx)
{
	for (size_t i = 0; i < p->n_docs; i++) {
		const struct doc *d = &p->docs[i];

		if (strcmp(d->path, path) == 0 ||
		    (exists && d->old && d->dev == st->st_dev && d->ino == st->st_ino)) {
			*idx = i;
			return 0;
		}
	}
	return -ENOENT;
}

/* The doc for path, read on first use. create: a missing file is an empty doc, else -ENOENT
 * (without a message). */
static int plan_load(struct plan *p, const char *path, bool create, size_t *idx)
{
	_cleanup_free_ char *text = NULL;
	struct stat st = { 0 };
	struct doc *docs, *d;
	int r;

	if (find_doc(p, path, &st, false, idx) == 0)
		return 0;
	r = read_text(path, &text, &st);
	if (r < 0 && !(r == -ENOENT && create))
		return r;
	if (text && find_doc(p, path, &st, true, idx) == 0)
		return 0;
	docs = realloc(p->docs, (p->n_docs + 1) * sizeof(*docs));
	if (!docs)
		return -ENOMEM;
	p->docs = docs;
	d = &docs[p->n_docs];
	*d = (struct doc){ .dev = st.st_dev, .ino = st.st_ino, .path = strdup(path) };
	r = lines_split(text ? text : "", &d->l);
	if (!d->path || r < 0) {
		doc_done(d);
		return -ENOMEM;
	}
	d->old = text;
	text = NULL;
	*idx = p->n_docs++;
	return 0;
}

static bool doc_changed(const struct doc *d, const char *new_text)
{
	return d->old ? strcmp(d->old, new_text) != 0 : *new_text != '\0';
}

static int collect_changes(struct plan *p, struct lr_bootcfg_change **changes, size_t *n)
{
	struct lr_bootcfg_change *c = calloc(p->n_docs ? p->n_docs : 1, sizeof(*c));
	size_t k = 0;

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_docs; i++) {
		struct doc *d = &p->docs[i];
		char *text = lines_join(&d->l);

		if (!text) {
			lr_bootcfg_changes_free(c, k);
			return -ENOMEM;
		}
		if (!doc_changed(d, text)) {
			free(text);
			continue;
		}
		c[k++] = (struct lr_bootcfg_change){ .path = d->path, .old_text = d->old, .new_text = text };
		d->path = NULL;
		d->old = NULL;
	}
	*changes = c;
	*n = k;
	return 0;
}

/* ---- config.txt ---- */

/* The rest of line after WORD and a blank, or NULL. */
static const char *after_word(const char *line, const char *word)
{
	size_t n = strlen(word);

	if (strncmp(line, word, n) != 0 || !line[n] || !strchr(BLANKS, line[n]))
		return NULL;
	return skip_blank(line + n);
}

/* The value of KEY=VALUE (untrimmed), or NULL. */
static const char *value_of(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n) != 0)
		return NULL;
	line = skip_blank(line + n);
	return *line == '=' ? line + 1 : NULL;
}

static int set_str(char **dst, const char *s, size_t len)
{
	char *v = strndup_trim(s, len);

	if (!v)
		return -ENOMEM;
	free(*dst);
	*dst = v;
	return 0;
}

static int note_initramfs(struct cfgscan *s, size_t di, size_t li, const char *args)
{
	struct line_ref *refs = realloc(s->refs, (s->n_refs + 1) * sizeof(*refs));

	if (!refs)
		return -ENOMEM;
	s->refs = refs;
	refs[s->n_refs++] = (struct line_ref){ di, li };
	return set_str(&s->initramfs, args, strcspn(args, BLANKS));
}

static int scan_doc(struct plan *p, struct cfgscan *s, size_t di, unsigned depth);

static int scan_include(struct plan *p, struct cfgscan *s, const char *name, unsigned depth)
{
	_cleanup_free_ char *file = strndup_trim(name, strlen(name)), *path = NULL;
	size_t di;
	int r;

	if (!file || !(path = path_join(p->boot, file)))
		return -ENOMEM;
	/* The firmware reads only the boot partition: never follow an include out of it. */
	if (strstr(file, "..")) {
		lr_warn("include %s in the boot configuration leaves %s: not followed", file, p->boot);
		return 0;
	}
	r = plan_load(p, path, false, &di);
	if (r == -ENOENT) {
		lr_debug("%s does not exist: include skipped, as the firmware does", path);
		return 0;
	}
	if (r < 0)
		return r;
	for (unsigned i = 0; i <= depth; i++)
		if (s->dev[i] == p->docs[di].dev && s->ino[i] == p->docs[di].ino)
			return lr_error_code(-ELOOP, "include loop in the boot configuration: %s is included "
					     "again from within itself", path);
	if (depth + 1 > LR_BOOTCFG_MAX_INCLUDE_DEPTH)
		return lr_error_code(-ELOOP, "%s: config.txt includes nested more than %d deep", path,
				     LR_BOOTCFG_MAX_INCLUDE_DEPTH);
	return scan_doc(p, s, di, depth + 1);
}

/* Lines under a conditional section other than [all] do not count: only what every board
 * reads is relied on (and an include under such a section is not followed). */
static int scan_line(struct plan *p, struct cfgscan *s, size_t di, size_t li, unsigned depth)
{
	const char *line = skip_blank(p->docs[di].l.v[li]), *v;

	if (*line == '\0' || *line == '#')
		return 0;
	if (*line == '[') {
		s->sec = strncasecmp(line, "[all]", 5) == 0 ? SEC_ALL : SEC_OTHER;
		return 0;
	}
	if (s->sec == SEC_OTHER)
		return 0;
	if ((v = after_word(line, "include")))
		return scan_include(p, s, v, depth);
	if ((v = after_word(line, "initramfs")))
		return note_initramfs(s, di, li, v);
	if ((v = value_of(line, "cmdline")))
		return set_str(&s->cmdline, v, strlen(v));
	if ((v = value_of(line, "auto_initramfs")))
		s->auto_initramfs = strtol(skip_blank(v), NULL, 0) != 0;
	return 0;
}

static int scan_doc(struct plan *p, struct cfgscan *s, size_t di, unsigned depth)
{
	int r;

	s->dev[depth] = p->docs[di].dev;
	s->ino[depth] = p->docs[di].ino;
	for (size_t i = 0; i < p->docs[di].l.n; i++) {
		r = scan_line(p, s, di, i, depth);
		if (r < 0)
			return r;
	}
	return 0;
}

static void cfgscan_done(struct cfgscan *s)
{
	free(s->cmdline);
	free(s->initramfs);
	free(s->refs);
}

static int scan_config(struct plan *p, struct cfgscan *s, size_t *top)
{
	_cleanup_free_ char *path = path_join(p->boot, "config.txt");
	int r;

	if (!path)
		return -ENOMEM;
	r = plan_load(p, path, true, top);
	if (r < 0)
		return r;
	return scan_doc(p, s, *top, 0);
}

/* Replace every active initramfs line that names another file. */
static int replace_initramfs(struct plan *p, const struct cfgscan *s, const char *want)
{
	int r;

	for (size_t i = 0; i < s->n_refs; i++) {
		struct lines *l = &p->docs[s->refs[i].doc].l;
		const char *args = after_word(skip_blank(l->v[s->refs[i].line]), "initramfs");
		size_t len;

		if (!args)
			continue;
		len = strcspn(args, BLANKS);
		if (len == strlen(p->cfg->initramfs) && strncmp(args, p->cfg->initramfs, len) == 0)
			continue;
		r = lines_set(l, s->refs[i].line, lines_new(l, want));
		if (r < 0)
			return r;
	}
	return 0;
}

static int edit_config(struct plan *p, const struct cfgscan *s, size_t top)
{
	_cleanup_free_ char *want = NULL;
	struct lines *l = &p->docs[top].l;
	int r;

	if (!p->cfg->initramfs)
		return 0;
	if (s->auto_initramfs) {
		lr_info("auto_initramfs=1 is set in the boot configuration (%s): the firmware loads the "
			"initramfs itself; config.txt left alone", p->docs[top].path);
		return 0;
	}
	if (asprintf(&want, "initramfs %s followkernel", p->cfg->initramfs) < 0)
		return -ENOMEM;
	if (s->n_refs > 0)
		return replace_initramfs(p, s, want);
	if (s->sec == SEC_OTHER) {
		if (l->n > 0 && !is_comment_or_empty(l->v[l->n - 1])) {
			r = lines_append(l, "");
			if (r < 0)
				return r;
		}
		r = lines_append(l, "[all]");
		if (r < 0)
			return r;
	}
	return lines_append(l, want);
}

/* ---- cmdline.txt ---- */

static const char *arg_end(const char *p)
{
	bool quoted = false;

	for (; *p; p++) {
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && strchr(BLANKS, *p))
			break;
	}
	return p;
}

static bool arg_is(const char *arg, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && strncmp(arg, prefix, n) == 0;
}

/* The command line with every root= set, rootfstype= dropped if asked, root= appended if
 * missing; the other arguments and the blanks between them kept. */
static char *cmdline_edit(const char *line, const char *root_arg, bool drop_fstype)
{
	const char *p = line, *sep, *arg;
	size_t lead = strspn(line, BLANKS), len = 0;
	bool first = true, have_root = false;
	char *out = NULL;
	FILE *m = open_memstream(&out, &len);

	if (!m)
		return NULL;
	for (;;) {
		sep = p;
		p = skip_blank(p);
		if (!*p)
			break;
		arg = p;
		p = arg_end(p);
		if (drop_fstype && arg_is(arg, (size_t)(p - arg), "rootfstype="))
			continue;
		/* The first argument kept takes the line's leading blanks. */
		if (first)
			fwrite(line, 1, lead, m);
		else
			fwrite(sep, 1, (size_t)(arg - sep), m);
		first = false;
		if (arg_is(arg, (size_t)(p - arg), "root=")) {
			fputs(root_arg, m);
			have_root = true;
		} else {
			fwrite(arg, 1, (size_t)(p - arg), m);
		}
	}
	if (!have_root)
		fprintf(m, "%s%s", first ? "" : " ", root_arg);
	fputs(sep, m);
	if (fclose(m) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

static int edit_cmdline(struct plan *p, const char *file)
{
	_cleanup_free_ char *path = path_join(p->boot, file), *root_arg = NULL;
	size_t di, at = 0, nonempty = 0;
	struct lines *l;
	int r;

	if (!path || asprintf(&root_arg, "root=/dev/mapper/%s", p->cfg->name) < 0)
		return -ENOMEM;
	r = plan_load(p, path, false, &di);
	if (r == -ENOENT)
		return lr_error_code(-ENOENT, "kernel command line file %s does not exist", path);
	if (r < 0)
		return r;
	l = &p->docs[di].l;
	for (size_t i = 0; i < l->n; i++)
		if (*skip_blank(l->v[i]) && nonempty++ == 0)
			at = i;
	if (nonempty > 1)
		return lr_error_code(-EBADMSG, "%s has %zu non-empty lines: the kernel command line must "
				     "be one line; join them and try again", path, nonempty);
	if (l->n == 0) {
		r = lines_insert(l, 0, strdup(""));
		if (r < 0)
			return r;
	}
	return lines_set(l, at, cmdline_edit(l->v[at], root_arg, p->cfg->remove_rootfstype));
}

/* ---- /etc/crypttab, /etc/fstab ---- */

static bool crypttab_matches(const char *line, const char *name, const char *source)
{
	struct field f[2];

	if (is_comment_or_empty(line))
		return false;
	switch (split_fields(line, f, 2)) {
	case 2:
		if (field_is(line, &f[1], source))
			return true;
		/* fall through */
	case 1:
		return field_is(line, &f[0], name);
	default:
		return false;
	}
}

/* NAME SOURCE none OPTIONS: the first line with the same name or source is rewritten (its
 * column layout kept), any further one removed, or the line is added. */
static int crypttab_set(struct lines *l, const char *name, const char *source, const char *options)
{
	const char *vals[4] = { name, source, "none", options ? options : "luks" };
	_cleanup_free_ char *line = NULL;
	bool found = false;
	int r;

	for (size_t i = 0; i < l->n;) {
		if (!crypttab_matches(l->v[i], name, source)) {
			i++;
		} else if (found) {
			lines_delete(l, i);
		} else {
			found = true;
			r = lines_set(l, i, fields_set(l->v[i], vals, 4));
			if (r < 0)
				return r;
			i++;
		}
	}
	if (found)
		return 0;
	if (asprintf(&line, "%s %s %s %s", vals[0], vals[1], vals[2], vals[3]) < 0)
		return -ENOMEM;
	return lines_append(l, line);
}

static int edit_crypttab(struct plan *p)
{
	_cleanup_free_ char *path = path_join(p->root, "etc/crypttab");
	const struct lr_bootcfg *cfg = p->cfg;
	size_t di;
	int r;

	if (!path)
		return -ENOMEM;
	r = plan_load(p, path, true, &di);
	if (r < 0)
		return r;
	r = crypttab_set(&p->docs[di].l, cfg->name, cfg->source, cfg->crypttab_options);
	for (size_t i = 0; r == 0 && i < cfg->n_crypts; i++)
		r = crypttab_set(&p->docs[di].l, cfg->crypts[i].name, cfg->crypts[i].source,
				 cfg->crypts[i].options);
	return r;
}

/* Set fields vals on every entry for mountpoint; -ENOENT if there is none. */
static int fstab_set(struct lines *l, const char *mountpoint, const char *const *vals, size_t nvals)
{
	struct field f[2];
	int r = -ENOENT, k;

	for (size_t i = 0; i < l->n; i++) {
		if (is_comment_or_empty(l->v[i]) || split_fields(l->v[i], f, 2) < 2 ||
		    !field_is(l->v[i], &f[1], mountpoint))
			continue;
		k = lines_set(l, i, fields_set(l->v[i], vals, nvals));
		if (k < 0)
			return k;
		r = 0;
	}
	return r;
}

static int fstab_mount(struct lines *l, const struct lr_bootcfg_mount *m)
{
	const char *vals[4] = { m->device, NULL, m->fstype ? m->fstype : "auto",
				m->options ? m->options : "defaults" };
	_cleanup_free_ char *line = NULL;
	int r;

	r = fstab_set(l, m->mountpoint, vals, 4);
	if (r != -ENOENT)
		return r;
	if (asprintf(&line, "%s %s %s %s 0 %u", vals[0], m->mountpoint, vals[2], vals[3], m->passno) < 0)
		return -ENOMEM;
	return lines_append(l, line);
}

static int edit_fstab(struct plan *p)
{
	_cleanup_free_ char *path = path_join(p->root, "etc/fstab"), *dev = NULL;
	const char *vals[1];
	size_t di;
	int r;

	if (!path || asprintf(&dev, "/dev/mapper/%s", p->cfg->name) < 0)
		return -ENOMEM;
	r = plan_load(p, path, true, &di);
	if (r < 0)
		return r;
	vals[0] = dev;
	r = fstab_set(&p->docs[di].l, "/", vals, 1);
	if (r == -ENOENT) {
		lr_info("%s has no entry for /: the root is mounted from the kernel's root=", path);
		r = 0;
	}
	for (size_t i = 0; r == 0 && i < p->cfg->n_mounts; i++)
		r = fstab_mount(&p->docs[di].l, &p->cfg->mounts[i]);
	return r;
}

/* ---- the boot directory ---- */

static bool has_firmware_files(const char *dir)
{
	_cleanup_free_ char *a = path_join(dir, "config.txt"), *b = path_join(dir, "cmdline.txt");

	return (a && access(a, F_OK) == 0) || (b && access(b, F_OK) == 0);
}

static bool is_empty_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool empty = true;

	if (!d)
		return false;
	while (empty && (e = readdir(d)))
		empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
	closedir(d);
	return empty;
}

/* ROOT/boot/firmware if it has config.txt or cmdline.txt, else ROOT/boot. An empty
 * ROOT/boot/firmware is an unmounted boot partition, not a reason to edit ROOT/boot. */
static int find_boot_dir(const char *root, bool optional, char **out)
{
	_cleanup_free_ char *fw = path_join(root, "boot/firmware"), *boot = path_join(root, "boot");
	struct stat st;

	*out = NULL;
	if (!fw || !boot)
		return -ENOMEM;
	if (has_firmware_files(fw)) {
		*out = fw;
		fw = NULL;
		return 0;
	}
	if (is_empty_dir(fw))
		return lr_error_code(-ENOENT, "%s is empty: is the boot partition mounted?", fw);
	if (has_firmware_files(boot)) {
		*out = boot;
		boot = NULL;
		return 0;
	}
	if (stat(boot, &st) < 0 || !S_ISDIR(st.st_mode))
		return lr_error_code(-ENOENT, "no boot directory: looked for config.txt and cmdline.txt "
				     "in %s and %s", fw, boot);
	if (optional)
		return 0;
	return lr_error_code(-ENOENT, "no config.txt or cmdline.txt in %s or %s: is the boot "
			     "partition mounted?", fw, boot);
}

/* ---- public ---- */

static int check_word(const char *what, const char *s, bool optional)
{
	if (!s && optional)
		return 0;
	if (s && *s && *s != '#') {
		const char *c = s;

		while (*c && !isspace((unsigned char)*c) && !iscntrl((unsigned char)*c))
			c++;
		if (!*c)
			return 0;
	}
	return lr_error_code(-EINVAL, "invalid %s \"%s\": it must be one word without blanks",
			     what, s ? s : "");
}

static int check_crypt(const char *name, const char *source, const char *options)
{
	int r;

	if (name && strchr(name, '/'))
		return lr_error_code(-EINVAL, "invalid volume name \"%s\": no '/' allowed", name);
	r = check_word("volume name", name, false);
	if (r == 0)
		r = check_word("crypttab source", source, false);
	if (r == 0)
		r = check_word("crypttab options", options, true);
	return r;
}

static int check_mount(const struct lr_bootcfg_mount *m)
{
	int r;

	r = check_word("fstab device", m->device, false);
	if (r == 0)
		r = check_word("mount point", m->mountpoint, false);
	if (r == 0)
		r = check_word("file system type", m->fstype, true);
	if (r == 0)
		r = check_word("mount options", m->options, true);
	return r;
}

static int check_cfg(const struct lr_bootcfg *cfg)
{
	int r;

	r = check_crypt(cfg->name, cfg->source, cfg->crypttab_options);
	if (r == 0)
		r = check_word("initramfs file", cfg->initramfs, true);
	for (size_t i = 0; r == 0 && i < cfg->n_crypts; i++)
		r = check_crypt(cfg->crypts[i].name, cfg->crypts[i].source, cfg->crypts[i].options);
	for (size_t i = 0; r == 0 && i < cfg->n_mounts; i++)
		r = check_mount(&cfg->mounts[i]);
	return r;
}

static int plan_firmware(struct plan *p)
{
	struct cfgscan s = { 0 };
	size_t top;
	int r;

	r = scan_config(p, &s, &top);
	if (r < 0)
		goto out;
	r = edit_config(p, &s, top);
	if (r < 0)
		goto out;
	r = edit_cmdline(p, s.cmdline ? s.cmdline : "cmdline.txt");
out:
	cfgscan_done(&s);
	return r;
}

int lr_bootcfg_plan(const struct lr_bootcfg *cfg, struct lr_bootcfg_change **changes, size_t *n)
{
	struct plan p = { .cfg = cfg, .root = cfg->root ? cfg->root : "/" };
	int r;

	*changes = NULL;
	*n = 0;
	r = check_cfg(cfg);
	if (r < 0)
		return r;
	r = cfg->etc_only ? 0 : find_boot_dir(p.root, cfg->firmware_optional, &p.boot);
	if (r < 0)
		goto out;
	if (p.boot) {
		r = plan_firmware(&p);
		if (r < 0)
			goto out;
	}
	r = edit_crypttab(&p);
	if (r < 0)
		goto out;
	r = edit_fstab(&p);
	if (r < 0)
		goto out;
	r = collect_changes(&p, changes, n);
out:
	plan_done(&p);
	return r;
}

void lr_bootcfg_changes_free(struct lr_bootcfg_change *changes, size_t n)
{
	for (size_t i = 0; changes && i < n; i++) {
		free(changes[i].path);
		free(changes[i].old_text);
		free(changes[i].new_text);
	}
	free(changes);
}

/* Read the file as it is now: -ESTALE if it is not what the plan was made from. */
static int read_unchanged(const struct lr_bootcfg_change *c, char **cur, struct stat *st)
{
	int r;

	r = read_text(c->path, cur, st);
	if (r < 0 && r != -ENOENT)
		return r;
	if (*cur ? !c->old_text || strcmp(*cur, c->old_text) != 0 : c->old_text != NULL)
		return lr_error_code(-ESTALE, "%s changed since the plan was made: nothing written; "
				     "plan again", c->path);
	return 0;
}

static int apply_one(const struct lr_bootcfg_change *c)
{
	_cleanup_free_ char *cur = NULL, *backup = NULL;
	struct stat st = { .st_mode = S_IFREG | 0644, .st_uid = geteuid(), .st_gid = getegid() };
	int r;

	r = read_unchanged(c, &cur, &st);
	if (r < 0)
		return r;
	if (asprintf(&backup, "%s%s", c->path, LR_BOOTCFG_BACKUP_SUFFIX) < 0)
		return -ENOMEM;
	/* The first original is the true one: an existing backup is never replaced. */
	r = write_atomic(backup, cur ? cur : "", &st, true);
	if (r == -EEXIST)
		lr_debug("%s exists: the earlier original is kept", backup);
	else if (r < 0)
		return r;
	return write_atomic(c->path, c->new_text, &st, false);
}

int lr_bootcfg_apply(const struct lr_bootcfg_change *changes, size_t n)
{
	struct stat st;
	int r;

	/* Every file checked before the first is written, so a stale plan writes nothing. */
	for (size_t i = 0; i < n; i++) {
		char *cur = NULL;

		r = read_unchanged(&changes[i], &cur, &st);
		free(cur);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < n; i++) {
		r = apply_one(&changes[i]);
		if (r < 0)
			return r;
		lr_debug("%s written", changes[i].path);
	}
	return 0;
}

static int restore_dir(const char *dir)
{
	const size_t sl = strlen(LR_BOOTCFG_BACKUP_SUFFIX);
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat st;
	int n = 0, r = 0;

	if (!d)
		return errno == ENOENT ? 0 : lr_error_code(-errno, "cannot read %s: %s", dir, strerror(errno));
	while (r == 0 && (e = readdir(d))) {
		size_t len = strlen(e->d_name);
		_cleanup_free_ char *target = NULL;

		if (len <= sl || strcmp(e->d_name + len - sl, LR_BOOTCFG_BACKUP_SUFFIX) != 0 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		target = strndup(e->d_name, len - sl);
		if (!target)
			r = -ENOMEM;
		else if (renameat(dirfd(d), e->d_name, dirfd(d), target) < 0)
			r = lr_error_code(-errno, "cannot restore %s/%s: %s", dir, target, strerror(errno));
		else
			n++;
	}
	if (r == 0 && n > 0 && fsync(dirfd(d)) < 0 && errno != EINVAL)
		r = lr_error_code(-errno, "cannot sync directory %s: %s", dir, strerror(errno));
	closedir(d);
	return r < 0 ? r : n;
}

int lr_bootcfg_restore(const char *root)
{
	static const char *const dirs[] = { "boot/firmware", "boot", "etc" };
	int total = 0, r;

	for (size_t i = 0; i < LR_ELEMENTSOF(dirs); i++) {
		_cleanup_free_ char *dir = path_join(root ? root : "/", dirs[i]);

		if (!dir)
			return -ENOMEM;
		r = restore_dir(dir);
		if (r < 0)
			return r;
		total += r;
	}
	return total;
}

int lr_bootcfg_inspect(const char *root, struct lr_bootcfg_info *info)
{
	struct plan p = { .root = root ? root : "/" };
	struct cfgscan s = { 0 };
	size_t top;
	int r;

	*info = (struct lr_bootcfg_info){ 0 };
	r = find_boot_dir(p.root, true, &p.boot);
	if (r < 0 || !p.boot)
		goto out;
	r = scan_config(&p, &s, &top);
	if (r < 0)
		goto out;
	info->config_path = strdup(p.docs[top].path);
	info->cmdline_path = path_join(p.boot, s.cmdline ? s.cmdline : "cmdline.txt");
	info->auto_initramfs = s.auto_initramfs;
	info->initramfs = s.initramfs;
	s.initramfs = NULL;
	info->boot_dir = p.boot;
	p.boot = NULL;
	if (!info->config_path || !info->cmdline_path)
		r = -ENOMEM;
out:
	if (r < 0)
		lr_bootcfg_info_done(info);
	cfgscan_done(&s);
	plan_done(&p);
	return r;
}

void lr_bootcfg_info_done(struct lr_bootcfg_info *info)
{
	free(info->boot_dir);
	free(info->config_path);
	free(info->cmdline_path);
	free(info->initramfs);
	*info = (struct lr_bootcfg_info){ 0 };
}
