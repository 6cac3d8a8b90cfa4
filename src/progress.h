/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Progress of long work (copy, erase): a bar on a terminal (stderr), JSON events on stdout
 * with --json ({"event":"progress","phase":...}), otherwise a line every 10 %.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct progress {
	const char *phase;      /* "copy", "erase", ... */
	uint64_t total;         /* bytes, 0 if unknown */
	double t0, last;
	int last_decile;
	bool tty, json, drawn;
};

void progress_start(struct progress *p, const char *phase, uint64_t total);
/* done bytes of total (percent computed), or an explicit percent (>= 0) when total is 0. */
void progress_update(struct progress *p, uint64_t done, double percent);
void progress_end(struct progress *p, bool ok);
/* A JSON event line on stdout (--json): {"event":EVENT, ...fields of obj}; obj is consumed. */
struct json_object;
void progress_event(const char *event, struct json_object *obj);
