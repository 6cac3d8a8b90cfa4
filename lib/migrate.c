/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Migration state and the tryboot switch-over: see migrate.h. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "migrate.h"
#include "util.h"

/* The section tryboot.txt adds to config.txt: later lines win in config.txt. */
#define TRIAL_SECTION_MARK "# lockroot migrate: trial boot of the encrypted root"

static const char *const phase_names[_LR_MIGRATE_PHASE_MAX] = {
	[LR_MIGRATE_PREPARING] = "preparing",
	[LR_MIGRATE_COPYING] = "copying",
	[LR_MIGRATE_TRIAL] = "trial",
	[LR_MIGRATE_COMMITTING] = "committing",
	[LR_MIGRATE_ERASING] = "erasing",
	[LR_MIGRATE_DONE] = "done",
	[LR_MIGRATE_FAILED] = "failed",
	[LR_MIGRATE_INTERRUPTED] = "interrupted",
};

const char *lr_migrate_phase_name(enum lr_migrate_phase p)
{
	return p < _LR_MIGRATE_PHASE_MAX ? phase_names[p] : "unknown";
}

static char *state_path(const char *root)
{
	char *p;

	if (asprintf(&p, "%s%s", root && strcmp(root, "/") ? root : "", LR_MIGRATE_STATE_PATH) < 0)
		return NULL;
	return p;
}

int lr_read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	n = read(fd, buf, (size_t)st.st_size);
	if (n < 0) {
		r = -errno;
		goto out;
	}
	buf[n] = '\0';
	if (len)
		*len = (size_t)n;
	*out = buf;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}

static int write_all_fd(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int lr_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	_cleanup_free_ char *tmp = NULL;
	int fd, r;

	if (asprintf(&tmp, "%s.lockroot-tmp", path) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return lr_error_code(-errno, "cannot create %s: %s", tmp, strerror(errno));
	r = write_all_fd(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return lr_error_code(r, "cannot write %s: %s", path, strerror(-r));
	}
	return lr_sync_renamed(path);
}

int lr_copy_file_atomic(const char *from, const char *to)
{
	_cleanup_free_ char *tmp = NULL;
	char buf[1 << 16];
	int in, out, r = 0;

	if (asprintf(&tmp, "%s.lockroot-tmp", to) < 0)
		return -ENOMEM;
	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return lr_error_code(-errno, "cannot open %s: %s", from, strerror(errno));
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (out < 0) {
		r = lr_error_code(-errno, "cannot create %s: %s", tmp, strerror(errno));
		close(in);
		return r;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		r = write_all_fd(out, buf, (size_t)n);
		if (r < 0)
			break;
	}
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	close(in);
	close(out);
	if (r == 0 && rename(tmp, to) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return lr_error_code(r, "cannot copy %s to %s: %s", from, to, strerror(-r));
	}
	return lr_sync_renamed(to);
}

/* ---- state file ---- */

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		json_object_get_string(v) : NULL;
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

#define COPY_STR(dst, o, key) copy_str((dst), sizeof(dst), jstr((o), (key)))

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int lr_migrate_state_load(const char *root, struct lr_migrate_state *st)
{
	_cleanup_free_ char *path = state_path(root), *text = NULL;
	struct json_object *o = NULL, *vols;
	const char *ph;
	int r;

	memset(st, 0, sizeof(*st));
	if (!path)
		return -ENOMEM;
	r = lr_read_file(path, 1 << 20, &text, NULL);
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", path, strerror(-r));
	o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		r = lr_error_code(-EBADMSG, "%s is not a lockroot migration state (JSON object)", path);
		goto out;
	}
	ph = jstr(o, "phase");
	st->phase = _LR_MIGRATE_PHASE_MAX;
	for (int i = 0; ph && i < _LR_MIGRATE_PHASE_MAX; i++)
		if (strcmp(ph, phase_names[i]) == 0)
			st->phase = (enum lr_migrate_phase)i;
	if (st->phase == _LR_MIGRATE_PHASE_MAX) {
		r = lr_error_code(-EBADMSG, "%s: unknown phase '%s'", path, ph ? ph : "(none)");
		goto out;
	}
	st->started = (time_t)jint(o, "started");
	st->updated = (time_t)jint(o, "updated");
	COPY_STR(st->source, o, "source");
	COPY_STR(st->target, o, "target");
	COPY_STR(st->boot_dir, o, "boot_dir");
	COPY_STR(st->boot_device, o, "boot_device");
	COPY_STR(st->cmdline_file, o, "cmdline_file");
	COPY_STR(st->initramfs, o, "initramfs");
	st->final_config = dup_or_null(jstr(o, "final_config"));
	st->final_cmdline = dup_or_null(jstr(o, "final_cmdline"));
	st->error = dup_or_null(jstr(o, "error"));
	st->keep_source = jint(o, "keep_source") != 0;
	st->erase_size = (uint64_t)jint(o, "erase_size");
	st->erase_done = (uint64_t)jint(o, "erase_done");
	st->erase_discarded = (uint64_t)jint(o, "erase_discarded");
	st->erase_overwritten = (uint64_t)jint(o, "erase_overwritten");
	if (json_object_object_get_ex(o, "volumes", &vols) && json_object_is_type(vols, json_type_array))
		for (size_t i = 0; i < json_object_array_length(vols) && i < LR_MIGRATE_MAX_VOLUMES; i++) {
			struct json_object *v = json_object_array_get_idx(vols, i);
			struct lr_migrate_volume *mv = &st->volumes[st->n_volumes++];

			COPY_STR(mv->role, v, "role");
			COPY_STR(mv->device, v, "device");
			COPY_STR(mv->uuid, v, "uuid");
			COPY_STR(mv->name, v, "name");
			COPY_STR(mv->mountpoint, v, "mountpoint");
			mv->partno = (unsigned)jint(v, "partno");
			mv->reused = jint(v, "reused") != 0;
			mv->size = (uint64_t)jint(v, "size");
		}
	r = 0;
out:
	json_object_put(o);
	if (r < 0)
		lr_migrate_state_done(st);
	return r;
}

static void add_str(struct json_object *o, const char *key, const char *s)
{
	if (s && *s)
		json_object_object_add(o, key, json_object_new_string(s));
}

static void add_int(struct json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

static struct json_object *state_json(const struct lr_migrate_state *st, bool with_texts)
{
	struct json_object *o = json_object_new_object(), *vols = json_object_new_array();

	json_object_object_add(o, "version", json_object_new_int(1));
	add_str(o, "phase", lr_migrate_phase_name(st->phase));
	add_int(o, "started", st->started);
	add_int(o, "updated", st->updated);
	add_str(o, "source", st->source);
	add_str(o, "target", st->target);
	add_str(o, "boot_dir", st->boot_dir);
	add_str(o, "boot_device", st->boot_device);
	add_str(o, "cmdline_file", st->cmdline_file);
	add_str(o, "initramfs", st->initramfs);
	if (with_texts) {
		add_str(o, "final_config", st->final_config);
		add_str(o, "final_cmdline", st->final_cmdline);
	}
	for (size_t i = 0; i < st->n_volumes; i++) {
		const struct lr_migrate_volume *mv = &st->volumes[i];
		struct json_object *v = json_object_new_object();

		add_str(v, "role", mv->role);
		add_str(v, "device", mv->device);
		add_int(v, "partno", mv->partno);
		add_int(v, "reused", mv->reused);
		add_str(v, "uuid", mv->uuid);
		add_str(v, "name", mv->name);
		add_str(v, "mountpoint", mv->mountpoint);
		add_int(v, "size", (int64_t)mv->size);
		json_object_array_add(vols, v);
	}
	json_object_object_add(o, "volumes", vols);
	add_int(o, "keep_source", st->keep_source);
	add_int(o, "erase_size", (int64_t)st->erase_size);
	add_int(o, "erase_done", (int64_t)st->erase_done);
	add_int(o, "erase_discarded", (int64_t)st->erase_discarded);
	add_int(o, "erase_overwritten", (int64_t)st->erase_overwritten);
	add_str(o, "error", st->error);
	return o;
}

struct json_object *lr_migrate_state_json(const struct lr_migrate_state *st)
{
	return state_json(st, false);
}

int lr_migrate_state_save(const char *root, struct lr_migrate_state *st)
{
	_cleanup_free_ char *path = state_path(root);
	struct json_object *o;
	const char *text;
	int r;

	if (!path)
		return -ENOMEM;
	st->updated = time(NULL);
	if (!st->started)
		st->started = st->updated;
	r = lr_mkdir_parents(path);
	if (r < 0)
		return lr_error_code(r, "cannot create the directory of %s: %s", path, strerror(-r));
	o = state_json(st, true);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = lr_write_file_atomic(path, text, strlen(text), 0600);
	json_object_put(o);
	return r;
}

void lr_migrate_state_done(struct lr_migrate_state *st)
{
	free(st->final_config);
	free(st->final_cmdline);
	free(st->error);
	st->final_config = st->final_cmdline = st->error = NULL;
}

void lr_migrate_set_error(struct lr_migrate_state *st, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	free(st->error);
	st->error = s;
}

/* ---- boot partition ---- */

static char *boot_file(const struct lr_migrate_state *st, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", st->boot_dir, name) < 0)
		return NULL;
	return p;
}

static int write_boot_text(const struct lr_migrate_state *st, const char *name, const char *text)
{
	_cleanup_free_ char *p = boot_file(st, name);

	return p ? lr_write_file_atomic(p, text, strlen(text), 0644) : -ENOMEM;
}

int lr_migrate_write_trial(const struct lr_migrate_state *st, const char *trial_cmdline)
{
	_cleanup_free_ char *config = boot_file(st, "config.txt"), *initrd = boot_file(st, LR_TRIAL_INITRD);
	_cleanup_free_ char *text = NULL, *tryboot = NULL, *cmdline = NULL;
	size_t len;
	int r;

	if (!config || !initrd)
		return -ENOMEM;
	if (access(initrd, R_OK) < 0)
		return lr_error_code(-ENOENT, "%s is missing: the trial boot needs the new root's initramfs", initrd);
	r = lr_read_file(config, 1 << 20, &text, &len);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", config, strerror(-r));
	if (asprintf(&tryboot, "%s%s\n" TRIAL_SECTION_MARK " (lockroot migrate writes it; "
		     "config.txt is the old root's)\n[all]\ncmdline=" LR_TRIAL_CMDLINE "\ninitramfs "
		     LR_TRIAL_INITRD " followkernel\n",
		     text, len && text[len - 1] != '\n' ? "\n" : "") < 0)
		return -ENOMEM;
	if (asprintf(&cmdline, "%s\n", trial_cmdline) < 0)
		return -ENOMEM;
	/* The command line first: tryboot.txt is what makes the trial possible at all. */
	r = write_boot_text(st, LR_TRIAL_CMDLINE, cmdline);
	if (r == 0)
		r = write_boot_text(st, LR_TRYBOOT_CONFIG, tryboot);
	return r;
}

static int unlink_boot(const struct lr_migrate_state *st, const char *name)
{
	_cleanup_free_ char *p = boot_file(st, name);

	if (!p)
		return -ENOMEM;
	if (unlink(p) < 0 && errno != ENOENT)
		return lr_error_code(-errno, "cannot remove %s: %s", p, strerror(errno));
	return 0;
}

/* tryboot.txt first, so that no later tryboot uses files that are gone */
static int remove_trial_files(const struct lr_migrate_state *st)
{
	static const char *const names[] = { LR_TRYBOOT_CONFIG, LR_TRIAL_CMDLINE, LR_TRIAL_INITRD, LR_TRIAL_RECORD };
	int r = 0;

	for (size_t i = 0; i < LR_ELEMENTSOF(names) && r == 0; i++)
		r = unlink_boot(st, names[i]);
	return r;
}

/* Step 2: the new root's initramfs files over the ones the boot partition has. */
static int commit_initramfs(const struct lr_migrate_state *st, const char *new_boot)
{
	_cleanup_free_ char *trial = boot_file(st, LR_TRIAL_INITRD), *final = boot_file(st, st->initramfs);
	_cleanup_free_ char *pattern = boot_file(st, "initrd.img-*");
	glob_t g = { 0 };
	int r = 0;

	if (!trial || !final || !pattern)
		return -ENOMEM;
	if (access(trial, R_OK) == 0) {
		r = lr_copy_file_atomic(trial, final);
		if (r < 0)
			return r;
	}
	/* Copies of every kernel's initramfs (what raspi-firmware keeps there) */
	if (glob(pattern, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc && r == 0; i++) {
			const char *base = strrchr(g.gl_pathv[i], '/') + 1;
			_cleanup_free_ char *src = NULL;

			if (strstr(base, ".lockroot-tmp") || asprintf(&src, "%s/%s", new_boot, base) < 0)
				continue;
			if (access(src, R_OK) == 0)
				r = lr_copy_file_atomic(src, g.gl_pathv[i]);
			else
				lr_warn("%s has no counterpart in the new root (%s): left as it is", g.gl_pathv[i], src);
		}
	globfree(&g);
	return r;
}

int lr_migrate_commit(const struct lr_migrate_state *st, const char *new_boot)
{
	_cleanup_free_ char *tryboot = boot_file(st, LR_TRYBOOT_CONFIG), *config = boot_file(st, "config.txt");
	int r;

	if (!tryboot || !config)
		return -ENOMEM;
	if (!st->final_config || !st->final_cmdline || !*st->cmdline_file || !*st->initramfs)
		return lr_error_code(-EBADMSG, "the migration state lacks the final boot configuration");
	/* 1 */
	if (access(tryboot, R_OK) == 0) {
		r = lr_copy_file_atomic(tryboot, config);
		if (r < 0)
			return r;
	}
	/* 2, 3, 4 */
	r = commit_initramfs(st, new_boot);
	if (r == 0)
		r = write_boot_text(st, st->cmdline_file, st->final_cmdline);
	if (r == 0)
		r = write_boot_text(st, "config.txt", st->final_config);
	if (r < 0)
		return r;
	/* 5 */
	return remove_trial_files(st);
}

int lr_migrate_abandon_trial(const struct lr_migrate_state *st, char **record)
{
	_cleanup_free_ char *rec = boot_file(st, LR_TRIAL_RECORD);
	char *text = NULL;

	*record = NULL;
	if (!rec)
		return -ENOMEM;
	if (lr_read_file(rec, 64 * 1024, &text, NULL) == 0) {
		size_t n = strlen(text);

		while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
			text[--n] = '\0';
		if (n)
			*record = text;
		else
			free(text);
	}
	return remove_trial_files(st);
}
