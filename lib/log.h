/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The library never prints: everything it has to say goes through one hook.
 * The CLI prints to stderr, the token plugin forwards to crypt_log().
 */
#pragma once

enum lr_log_level {
	LR_LOG_DEBUG = 0,
	LR_LOG_INFO,
	LR_LOG_WARN,
	LR_LOG_ERROR,
};

typedef void (*lr_log_fn)(int level, const char *msg, void *userdata);

/* Install the log hook (NULL: discard). Not thread-safe; call once at start. */
void lr_set_log(lr_log_fn fn, void *userdata);

void lr_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define lr_debug(...) lr_log(LR_LOG_DEBUG, __VA_ARGS__)
#define lr_info(...)  lr_log(LR_LOG_INFO, __VA_ARGS__)
#define lr_warn(...)  lr_log(LR_LOG_WARN, __VA_ARGS__)
#define lr_error(...) lr_log(LR_LOG_ERROR, __VA_ARGS__)

/* While > 0, errors and warnings are logged as debug messages: for an attempt whose failure is
 * expected and handled by the caller. Calls nest. The last demoted error is kept, and
 * lr_log_replay() logs it as an error after all, when the failure turned out to matter. */
void lr_log_demote(int delta);
void lr_log_replay(void);

/* Log an error message and return the (negative) error code, for one-line error exits. */
int lr_error_code(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
