/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tamper response (lockroot tamper): GPIO lines that mean "the enclosure was opened", and what
 * is done then: notify (log, a command) or self-destruct (every lockroot keyslot and token of
 * every armed volume destroyed, optionally the recovery keyslots, then the key inside the HSM).
 *
 * The configuration lives in /etc/lockroot/tamper.conf for the daemon, and its effective form
 * in a LUKS2 token of type "lockroot-tamper" (no keyslots) in each armed volume, where the
 * initramfs reads it before the root is open:
 *
 * {
 *   "type": "lockroot-tamper", "keyslots": [],
 *   "lockroot_version": 1,
 *   "armed": true,
 *   "lines": [ { "line": "gpiochip0:3", "active": "high", "debounce_ms": 20, "latched": true,
 *                "mode": "self-destruct", "command": "/usr/local/bin/x", "destroy_recovery": false,
 *                "poweroff": true } ],
 *   "last_event": { "time": "2026-12-05T04:00:00Z", "line": "gpiochip0:3", "mode": "notify",
 *                   "where": "daemon" }       (when there was one)
 * }
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct crypt_device;
struct json_object;

#define LR_TAMPER_TOKEN_TYPE "lockroot-tamper"
#define LR_TAMPER_CONFIG_PATH "/etc/lockroot/tamper.conf"
#define LR_TAMPER_STATE_PATH "/var/lib/lockroot/tamper.json"
#define LR_TAMPER_PID_PATH "/run/lockroot/tamper.pid"
#define LR_TAMPER_LINES_MAX 16
#define LR_TAMPER_DEBOUNCE_DEFAULT 20

enum lr_tamper_mode {
	LR_TAMPER_NOTIFY = 0,
	LR_TAMPER_SELF_DESTRUCT,
};

struct lr_tamper_line {
	char chip[64];            /* gpiochipN, /dev/gpiochipN or a chip label */
	unsigned offset;
	bool active_low;          /* the tampered level is low */
	unsigned debounce_ms;
	bool latched;             /* also read once at boot, before unlocking */
	enum lr_tamper_mode mode;
	char command[512];        /* "" none; run through /bin/sh -c */
	bool destroy_recovery;
	bool poweroff;
};

struct lr_tamper_config {
	struct lr_tamper_line line[LR_TAMPER_LINES_MAX];
	unsigned n_lines;
};

const char *lr_tamper_mode_name(enum lr_tamper_mode m);
/* "gpiochip0:3" for messages and the environment of the command. */
void lr_tamper_line_name(const struct lr_tamper_line *l, char *out, size_t len);

/* Parse tamper.conf. Keys before the first "line" are defaults for every line; keys after a
 * "line" apply to that line. -EINVAL with "FILE:LINE: what" logged, -ENOENT / -errno when the
 * file cannot be read, -EPERM when others than root (or the caller) may write it, -ENOMSG when
 * it names no line. */
int lr_tamper_config_parse(const char *path, struct lr_tamper_config *c);
/* The same from a string (path is only used in messages). */
int lr_tamper_config_parse_text(const char *path, const char *text, struct lr_tamper_config *c);

/* The config as the token's "lines" array, and back (-EBADMSG, logged, when corrupt). */
struct json_object *lr_tamper_config_json(const struct lr_tamper_config *c);
int lr_tamper_config_from_json(struct json_object *lines, struct lr_tamper_config *c);

/* The tamper token of a loaded header: its id (-ENODATA when there is none) and its JSON
 * parsed (*obj, owned by the caller; may be NULL). */
int lr_tamper_token_find(struct crypt_device *cd, struct json_object **obj);

/* Write (create or replace) the tamper token of device: config c (NULL: keep the stored one)
 * and armed. -ENODATA when c is NULL and there is no token yet. */
int lr_tamper_set(const char *device, const struct lr_tamper_config *c, bool armed);
/* Read device's tamper token: armed, config, and the whole token (*obj, may be NULL).
 * -ENODATA when there is none (-ENOENT: no such device). */
int lr_tamper_get(const char *device, bool *armed, struct lr_tamper_config *c, struct json_object **obj);
/* Record an event in device's tamper token ("last_event"). */
int lr_tamper_record(const char *device, const struct lr_tamper_line *l, const char *where);

/* What a self-destruct did. Times are from edge (CLOCK_MONOTONIC) when it is non-zero. */
struct lr_tamper_report {
	unsigned volumes;          /* armed volumes acted on */
	unsigned skipped;          /* not armed: left alone */
	unsigned keyslots;         /* keyslots destroyed */
	unsigned tokens;           /* lockroot (and recovery) tokens removed */
	unsigned hsm_keys;         /* keys destroyed inside an HSM */
	unsigned hsm_skipped;      /* backends that cannot destroy (tpm2: nothing inside the TPM) */
	unsigned failures;
	double ms_keyslots;        /* edge -> every keyslot destroyed and synced */
	double ms_hsm;             /* edge -> the HSM keys too */
};

/* Self-destruct: for each armed device (its tamper token armed), destroy every keyslot named by
 * a lockroot token and remove those tokens (with destroy_recovery also the recovery keyslots
 * and their markers), across all devices first; then each token's HSM key through its
 * backend's destroy (once per distinct key); sync. Devices whose token is not armed are not
 * touched. edge: when the tamper edge was seen (CLOCK_MONOTONIC; zero: now). Goes on past
 * failures (counted); returns 0 when everything was destroyed, -EIO when something failed. */
int lr_tamper_destroy(const char *const *devices, unsigned n, bool destroy_recovery,
		      const struct timespec *edge, struct lr_tamper_report *rep);

/* Milliseconds from a (CLOCK_MONOTONIC) to now. */
double lr_tamper_ms_since(const struct timespec *a);

/* GPIO (libgpiod; -EOPNOTSUPP when lockroot was built without it). */
/* 0 when the line's chip exists and has the line (not requested: the daemon may hold it). */
int lr_tamper_line_exists(const struct lr_tamper_line *l);
/* Read a line's level once: 1 tampered (at its active level), 0 not. -errno, logged. */
int lr_tamper_line_read(const struct lr_tamper_line *l);
/* Watch lines: call fn(line index, edge time, userdata) for each line that became active and
 * stayed active for its debounce time (re-read after the delay), and for a line already active
 * when watching starts. Returns when fn returns non-zero (that value) or on an error (-errno).
 * log_edge: also log every raw edge at debug level. */
typedef int (*lr_tamper_fire_fn)(unsigned idx, const struct timespec *edge, void *userdata);
int lr_tamper_watch(const struct lr_tamper_config *c, lr_tamper_fire_fn fn, void *userdata);
