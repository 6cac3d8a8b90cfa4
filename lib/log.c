/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static lr_log_fn log_fn;
static void *log_userdata;
static int log_demoted;
static char log_last_demoted[1024];

void lr_log_demote(int delta)
{
	log_demoted += delta;
	if (delta > 0)
		log_last_demoted[0] = '\0';
}

void lr_log_replay(void)
{
	if (log_fn && log_last_demoted[0])
		log_fn(LR_LOG_ERROR, log_last_demoted, log_userdata);
	log_last_demoted[0] = '\0';
}

void lr_set_log(lr_log_fn fn, void *userdata)
{
	log_fn = fn;
	log_userdata = userdata;
}

static void lr_vlog(int level, const char *fmt, va_list ap)
{
	char msg[1024];

	if (!log_fn)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_demoted > 0 && level > LR_LOG_INFO) {
		if (level == LR_LOG_ERROR)
			snprintf(log_last_demoted, sizeof(log_last_demoted), "%s", msg);
		level = LR_LOG_DEBUG;
	}
	log_fn(level, msg, log_userdata);
}

void lr_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lr_vlog(level, fmt, ap);
	va_end(ap);
}

int lr_error_code(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lr_vlog(LR_LOG_ERROR, fmt, ap);
	va_end(ap);
	return r;
}
