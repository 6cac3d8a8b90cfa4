/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tamper response: the configuration, its header token, and the self-destruct (tamper.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockroot.h"
#include "luks-internal.h"
#include "tamper.h"

const char *lr_tamper_mode_name(enum lr_tamper_mode m)
{
	return m == LR_TAMPER_SELF_DESTRUCT ? "self-destruct" : "notify";
}

void lr_tamper_line_name(const struct lr_tamper_line *l, char *out, size_t len)
{
	snprintf(out, len, "%s:%u", l->chip, l->offset);
}

double lr_tamper_ms_since(const struct timespec *a)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - a->tv_sec) * 1e3 + (double)(now.tv_nsec - a->tv_nsec) / 1e6;
}

/* ---- tamper.conf ---- */

static int parse_bool(const char *v, bool *out)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

static int parse_line_spec(const char *v, struct lr_tamper_line *l)
{
	const char *colon = strrchr(v, ':');
	char *end;
	unsigned long off;

	if (!colon || colon == v || !colon[1])
		return -EINVAL;
	errno = 0;
	off = strtoul(colon + 1, &end, 10);
	if (errno || *end || off > 4095 || !isdigit((unsigned char)colon[1]))
		return -EINVAL;
	if ((size_t)(colon - v) >= sizeof(l->chip))
		return -EINVAL;
	memcpy(l->chip, v, (size_t)(colon - v));
	l->chip[colon - v] = '\0';
	l->offset = (unsigned)off;
	return 0;
}

/* One "key = value" into l (a line's settings, or the defaults). Returns a message or NULL. */
static const char *set_key(struct lr_tamper_line *l, const char *key, const char *v)
{
	if (!strcmp(key, "active")) {
		if (!strcmp(v, "high"))
			l->active_low = false;
		else if (!strcmp(v, "low"))
			l->active_low = true;
		else
			return "active must be high or low";
	} else if (!strcmp(key, "debounce-ms")) {
		char *end;
		unsigned long ms;

		errno = 0;
		ms = strtoul(v, &end, 10);
		if (errno || !*v || *end || ms > 60000 || !isdigit((unsigned char)*v))
			return "debounce-ms must be a number of milliseconds from 0 to 60000";
		l->debounce_ms = (unsigned)ms;
	} else if (!strcmp(key, "latched")) {
		if (parse_bool(v, &l->latched) < 0)
			return "latched must be yes or no";
	} else if (!strcmp(key, "mode")) {
		if (!strcmp(v, "notify"))
			l->mode = LR_TAMPER_NOTIFY;
		else if (!strcmp(v, "self-destruct"))
			l->mode = LR_TAMPER_SELF_DESTRUCT;
		else
			return "mode must be notify or self-destruct";
	} else if (!strcmp(key, "command")) {
		if (v[0] != '/')
			return "command must start with an absolute path";
		if (strlen(v) >= sizeof(l->command))
			return "command is too long";
		snprintf(l->command, sizeof(l->command), "%s", v);
	} else if (!strcmp(key, "destroy-recovery")) {
		if (parse_bool(v, &l->destroy_recovery) < 0)
			return "destroy-recovery must be yes or no";
	} else if (!strcmp(key, "poweroff")) {
		if (parse_bool(v, &l->poweroff) < 0)
			return "poweroff must be yes or no";
	} else {
		return "unknown key (line, active, debounce-ms, latched, mode, command, destroy-recovery, poweroff)";
	}
	return NULL;
}

int lr_tamper_config_parse_text(const char *path, const char *text, struct lr_tamper_config *c)
{
	struct lr_tamper_line defaults = { .debounce_ms = LR_TAMPER_DEBOUNCE_DEFAULT, .poweroff = true };
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL, *s;
	unsigned lineno = 0;

	memset(c, 0, sizeof(*c));
	if (!copy)
		return -ENOMEM;
	/* strtok_r would skip empty lines and miscount: split by hand */
	for (s = copy; s; ) {
		char *nl = strchr(s, '\n'), *eq, *key, *val;
		struct lr_tamper_line *target;
		const char *why;

		if (nl)
			*nl = '\0';
		lineno++;
		save = nl ? nl + 1 : NULL;
		key = lr_trim(s);
		s = save;
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq)
			return lr_error_code(-EINVAL, "%s:%u: expected 'key = value'", path, lineno);
		*eq = '\0';
		val = lr_trim(eq + 1);
		key = lr_trim(key);
		if (!*val)
			return lr_error_code(-EINVAL, "%s:%u: %s has no value", path, lineno, key);
		if (!strcmp(key, "line")) {
			if (c->n_lines == LR_TAMPER_LINES_MAX)
				return lr_error_code(-EINVAL, "%s:%u: more than %d lines", path, lineno,
						     LR_TAMPER_LINES_MAX);
			c->line[c->n_lines] = defaults;
			if (parse_line_spec(val, &c->line[c->n_lines]) < 0)
				return lr_error_code(-EINVAL, "%s:%u: line must be CHIP:OFFSET (gpiochip0:17, "
						     "/dev/gpiochip0:17 or LABEL:17), not '%s'", path, lineno, val);
			for (unsigned i = 0; i < c->n_lines; i++)
				if (!strcmp(c->line[i].chip, c->line[c->n_lines].chip) &&
				    c->line[i].offset == c->line[c->n_lines].offset)
					return lr_error_code(-EINVAL, "%s:%u: line %s is configured twice", path,
							     lineno, val);
			c->n_lines++;
			continue;
		}
		/* before the first line: defaults for every line; after: that line's own */
		target = c->n_lines ? &c->line[c->n_lines - 1] : &defaults;
		why = set_key(target, key, val);
		if (why)
			return lr_error_code(-EINVAL, "%s:%u: %s: %s", path, lineno, key, why);
	}
	if (c->n_lines == 0)
		return lr_error_code(-ENOMSG, "%s: no 'line = CHIP:OFFSET': nothing to watch", path);
	return 0;
}

int lr_tamper_config_parse(const char *path, struct lr_tamper_config *c)
{
	_cleanup_free_ char *text = NULL;
	char buf[4096];
	size_t len = 0;
	FILE *f = fopen(path, "re");
	struct stat st;
	int r = 0;

	if (!f)
		return lr_error_code(-errno, "cannot read %s: %s", path, strerror(errno));
	/* it names a command that runs as root, and says what gets destroyed */
	if (fstat(fileno(f), &st) == 0 && ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022))) {
		fclose(f);
		return lr_error_code(-EPERM, "%s may be changed by other users (owner %u, mode %04o): it names a "
				     "command run as root; chown root and chmod go-w it", path, (unsigned)st.st_uid,
				     (unsigned)(st.st_mode & 07777));
	}
	for (;;) {
		size_t k = fread(buf, 1, sizeof(buf), f);
		char *t;

		if (k == 0)
			break;
		if (len + k > 256 * 1024) {
			r = lr_error_code(-EFBIG, "%s is too large for a tamper configuration", path);
			break;
		}
		t = realloc(text, len + k + 1);
		if (!t) {
			r = -ENOMEM;
			break;
		}
		text = t;
		memcpy(text + len, buf, k);
		len += k;
	}
	fclose(f);
	if (r < 0)
		return r;
	if (memchr(text ? text : "", '\0', len))
		return lr_error_code(-EINVAL, "%s is not a text file", path);
	return lr_tamper_config_parse_text(path, text ? (text[len] = '\0', text) : "", c);
}

/* ---- the token ---- */

struct json_object *lr_tamper_config_json(const struct lr_tamper_config *c)
{
	struct json_object *arr = json_object_new_array();

	for (unsigned i = 0; arr && i < c->n_lines; i++) {
		const struct lr_tamper_line *l = &c->line[i];
		struct json_object *o = json_object_new_object();
		char name[96];

		lr_tamper_line_name(l, name, sizeof(name));
		json_object_object_add(o, "line", json_object_new_string(name));
		json_object_object_add(o, "active", json_object_new_string(l->active_low ? "low" : "high"));
		json_object_object_add(o, "debounce_ms", json_object_new_int((int)l->debounce_ms));
		json_object_object_add(o, "latched", json_object_new_boolean(l->latched));
		json_object_object_add(o, "mode", json_object_new_string(lr_tamper_mode_name(l->mode)));
		if (l->command[0])
			json_object_object_add(o, "command", json_object_new_string(l->command));
		json_object_object_add(o, "destroy_recovery", json_object_new_boolean(l->destroy_recovery));
		json_object_object_add(o, "poweroff", json_object_new_boolean(l->poweroff));
		json_object_array_add(arr, o);
	}
	return arr;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : NULL;
}

static int jbool(struct json_object *o, const char *key, bool *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean))
		return -EBADMSG;
	*out = json_object_get_boolean(v);
	return 0;
}

int lr_tamper_config_from_json(struct json_object *lines, struct lr_tamper_config *c)
{
	memset(c, 0, sizeof(*c));
	if (!lines || !json_object_is_type(lines, json_type_array) ||
	    json_object_array_length(lines) > LR_TAMPER_LINES_MAX)
		return lr_error_code(-EBADMSG, "the lockroot-tamper token is corrupt: no list of lines");
	for (size_t i = 0; i < json_object_array_length(lines); i++) {
		struct json_object *o = json_object_array_get_idx(lines, i), *v;
		struct lr_tamper_line *l = &c->line[i];
		const char *name = jstr(o, "line"), *active = jstr(o, "active"), *mode = jstr(o, "mode");
		const char *cmd = jstr(o, "command");

		if (!name || parse_line_spec(name, l) < 0 || !active || !mode ||
		    (strcmp(active, "high") && strcmp(active, "low")) ||
		    (strcmp(mode, "notify") && strcmp(mode, "self-destruct")) ||
		    !json_object_object_get_ex(o, "debounce_ms", &v) || !json_object_is_type(v, json_type_int) ||
		    json_object_get_int(v) < 0 || jbool(o, "latched", &l->latched) < 0 ||
		    jbool(o, "destroy_recovery", &l->destroy_recovery) < 0 || jbool(o, "poweroff", &l->poweroff) < 0 ||
		    (cmd && strlen(cmd) >= sizeof(l->command)))
			return lr_error_code(-EBADMSG, "the lockroot-tamper token is corrupt: line %zu", i);
		l->debounce_ms = (unsigned)json_object_get_int(v);
		l->active_low = !strcmp(active, "low");
		l->mode = strcmp(mode, "notify") ? LR_TAMPER_SELF_DESTRUCT : LR_TAMPER_NOTIFY;
		snprintf(l->command, sizeof(l->command), "%s", cmd ? cmd : "");
	}
	c->n_lines = (unsigned)json_object_array_length(lines);
	return 0;
}

int lr_tamper_token_find(struct crypt_device *cd, struct json_object **obj)
{
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2); id++) {
		const char *type, *json;

		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type ||
		    strcmp(type, LR_TAMPER_TOKEN_TYPE))
			continue;
		if (obj) {
			*obj = NULL;
			if (crypt_token_json_get(cd, id, &json) >= 0)
				*obj = json_tokener_parse(json);
			if (!*obj)
				return lr_error_code(-EBADMSG, "the lockroot-tamper token %d is not JSON", id);
		}
		return id;
	}
	return -ENODATA;
}

static int token_write(struct crypt_device *cd, const char *device, int id, struct json_object *tok)
{
	int r = crypt_token_json_set(cd, id >= 0 ? id : CRYPT_ANY_TOKEN,
				     json_object_to_json_string_ext(tok, JSON_C_TO_STRING_PLAIN));

	if (r < 0)
		return lr_error_code(r, "cannot write the lockroot-tamper token of %s: %s", device, strerror(-r));
	return 0;
}

int lr_tamper_set(const char *device, const struct lr_tamper_config *c, bool armed)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *old = NULL, *tok = NULL;
	struct json_object *v;
	int id, r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	id = lr_tamper_token_find(cd, &old);
	if (id < 0 && id != -ENODATA)
		return id;
	if (!c && id < 0)
		return lr_error_code(-ENODATA, "%s has no tamper configuration: arm it first (lockroot tamper arm)",
				     device);
	tok = json_object_new_object();
	if (!tok)
		return -ENOMEM;
	json_object_object_add(tok, "type", json_object_new_string(LR_TAMPER_TOKEN_TYPE));
	json_object_object_add(tok, "keyslots", json_object_new_array());
	json_object_object_add(tok, "lockroot_version", json_object_new_int(1));
	json_object_object_add(tok, "armed", json_object_new_boolean(armed));
	if (c) {
		json_object_object_add(tok, "lines", lr_tamper_config_json(c));
	} else {
		struct lr_tamper_config stored;

		if (!json_object_object_get_ex(old, "lines", &v) || lr_tamper_config_from_json(v, &stored) < 0)
			return -EBADMSG;
		json_object_object_add(tok, "lines", json_object_get(v));
	}
	if (old && json_object_object_get_ex(old, "last_event", &v))
		json_object_object_add(tok, "last_event", json_object_get(v));
	return token_write(cd, device, id, tok);
}

int lr_tamper_get(const char *device, bool *armed, struct lr_tamper_config *c, struct json_object **obj)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *tok = NULL;
	struct json_object *lines = NULL;
	int r;

	if (obj)
		*obj = NULL;
	r = lr_luks2_load(device, true, &cd);
	if (r < 0)
		return r;
	r = lr_tamper_token_find(cd, &tok);
	if (r < 0)
		return r;
	if (jbool(tok, "armed", armed) < 0)
		return lr_error_code(-EBADMSG, "the lockroot-tamper token of %s is corrupt: no 'armed'", device);
	json_object_object_get_ex(tok, "lines", &lines);
	if (c && (r = lr_tamper_config_from_json(lines, c)) < 0)
		return r;
	if (obj) {
		*obj = tok;
		tok = NULL;
	}
	return 0;
}

int lr_tamper_record(const char *device, const struct lr_tamper_line *l, const char *where)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *tok = NULL;
	struct json_object *ev;
	char name[96], when[32];
	time_t now = time(NULL);
	struct tm tm;
	int id, r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	id = lr_tamper_token_find(cd, &tok);
	if (id < 0)
		return id;
	lr_tamper_line_name(l, name, sizeof(name));
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	ev = json_object_new_object();
	json_object_object_add(ev, "time", json_object_new_string(when));
	json_object_object_add(ev, "line", json_object_new_string(name));
	json_object_object_add(ev, "mode", json_object_new_string(lr_tamper_mode_name(l->mode)));
	json_object_object_add(ev, "where", json_object_new_string(where));
	json_object_object_add(tok, "last_event", ev);
	return token_write(cd, device, id, tok);
}

/* ---- self-destruct ---- */

struct doomed_token {
	char *json;        /* the lockroot token as it was: its backend data names the HSM key */
	const char *device;
};

/* Phase 1 on one device: keyslots first (what an attacker with the card and the HSM needs),
 * then the tokens. The lockroot tokens' JSON is kept for phase 2. */
static int destroy_keyslots(const char *device, bool destroy_recovery, struct doomed_token *doomed,
			    unsigned max, unsigned *n_doomed, struct lr_tamper_report *rep)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_json_ struct json_object *tamper = NULL;
	int ids[64], n = 0, r, fd;
	bool armed = false;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	if (lr_tamper_token_find(cd, &tamper) < 0 || jbool(tamper, "armed", &armed) < 0 || !armed) {
		lr_info("%s: tamper response not armed: left alone", device);
		rep->skipped++;
		return 0;
	}
	rep->volumes++;
	for (int id = 0; id < crypt_token_max(CRYPT_LUKS2) && n < (int)LR_ELEMENTSOF(ids); id++) {
		const char *type, *json;
		_cleanup_json_ struct json_object *o = NULL;
		struct json_object *slots;
		bool ours;

		if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type)
			continue;
		ours = !strcmp(type, LR_TOKEN_TYPE);
		if (!ours && !(destroy_recovery && !strcmp(type, LR_RECOVERY_TOKEN_TYPE)))
			continue;
		if (crypt_token_json_get(cd, id, &json) < 0 || !(o = json_tokener_parse(json)))
			continue;
		if (ours && *n_doomed < max) {
			doomed[*n_doomed].json = strdup(json);
			doomed[*n_doomed].device = device;
			if (doomed[*n_doomed].json)
				(*n_doomed)++;
		}
		ids[n++] = id;
		if (!json_object_object_get_ex(o, "keyslots", &slots) || !json_object_is_type(slots, json_type_array))
			continue;
		for (size_t i = 0; i < json_object_array_length(slots); i++) {
			int slot = atoi(json_object_get_string(json_object_array_get_idx(slots, i)));

			if (crypt_keyslot_status(cd, slot) < CRYPT_SLOT_ACTIVE)
				continue;
			/* crypt_keyslot_destroy overwrites the keyslot's key material on disk */
			r = crypt_keyslot_destroy(cd, slot);
			if (r < 0) {
				lr_error("%s: cannot destroy keyslot %d: %s", device, slot, strerror(-r));
				rep->failures++;
				continue;
			}
			rep->keyslots++;
			lr_info("%s: destroyed keyslot %d (%s)", device, slot, ours ? "HSM" : "recovery");
		}
	}
	for (int i = 0; i < n; i++) {
		r = crypt_token_json_set(cd, ids[i], NULL);
		if (r < 0) {
			lr_error("%s: cannot remove token %d: %s", device, ids[i], strerror(-r));
			rep->failures++;
			continue;
		}
		rep->tokens++;
	}
	if (n == 0)
		lr_info("%s: no lockroot keyslot left to destroy", device);
	/* the header writes must be on the medium before anything else happens */
	fd = open(device, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) < 0)
			lr_warn("%s: fsync: %s", device, strerror(errno));
		close(fd);
	}
	return 0;
}

/* Phase 2: the key inside the HSM, through the backend that made the token. */
static void destroy_hsm_key(const struct doomed_token *d, struct lr_tamper_report *rep)
{
	_cleanup_token_ struct lr_token t = { 0 };
	struct lr_hsm hsm = { 0 };
	int r;

	if (lr_token_parse(d->json, &t) < 0) {
		lr_warn("%s: a corrupt lockroot token was removed; its HSM key cannot be named", d->device);
		rep->failures++;
		return;
	}
	hsm.backend = lr_backend_find(t.backend);
	r = -EOPNOTSUPP;
	if (hsm.backend && hsm.backend->destroy) {
		lr_log_demote(1);
		r = hsm.backend->destroy(&hsm, t.backend_data);
		lr_log_demote(-1);
	}
	if (r == -EOPNOTSUPP) {
		/* tpm2 without a fuse: the sealed key lived only in the token */
		lr_info("%s: the %s backend has no key of its own inside the HSM to destroy for this token (the "
			"locked key lived in the token, removed with it)", d->device, t.backend);
		rep->hsm_skipped++;
	} else if (r == -ENOKEY) {
		lr_info("%s: the %s key is gone already (destroyed for another volume, or before)", d->device,
			t.backend);
	} else if (r < 0) {
		lr_log_replay();
		lr_error("%s: the %s key could not be destroyed: %s", d->device, t.backend, strerror(-r));
		rep->failures++;
	} else {
		lr_info("%s: destroyed the %s key inside the HSM", d->device, t.backend);
		rep->hsm_keys++;
	}
}

int lr_tamper_destroy(const char *const *devices, unsigned n, bool destroy_recovery,
		      const struct timespec *edge, struct lr_tamper_report *rep)
{
	struct doomed_token doomed[64];
	unsigned n_doomed = 0;
	struct timespec start;

	memset(rep, 0, sizeof(*rep));
	if (edge && (edge->tv_sec || edge->tv_nsec))
		start = *edge;
	else
		clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned i = 0; i < n; i++) {
		int r = destroy_keyslots(devices[i], destroy_recovery, doomed, LR_ELEMENTSOF(doomed), &n_doomed, rep);

		if (r < 0) {
			lr_error("%s: cannot destroy its keys: %s", devices[i], strerror(-r));
			rep->failures++;
		}
	}
	rep->ms_keyslots = lr_tamper_ms_since(&start);
	for (unsigned i = 0; i < n_doomed; i++) {
		destroy_hsm_key(&doomed[i], rep);
		explicit_bzero(doomed[i].json, strlen(doomed[i].json));
		free(doomed[i].json);
	}
	sync();
	rep->ms_hsm = lr_tamper_ms_since(&start);
	return rep->failures ? -EIO : 0;
}
