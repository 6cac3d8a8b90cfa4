/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "progress.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A number with one decimal, printed as such (not 75.099999999999994). */
static struct json_object *tenths(double v)
{
	char text[32];

	snprintf(text, sizeof(text), "%.1f", v);
	return json_object_new_double_s(strtod(text, NULL), text);
}

void progress_event(const char *event, struct json_object *obj)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "event", json_object_new_string(event));
	if (obj) {
		json_object_object_foreach(obj, k, v)
			json_object_object_add(o, k, json_object_get(v));
		json_object_put(obj);
	}
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(stdout);
	json_object_put(o);
}

void progress_start(struct progress *p, const char *phase, uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->phase = phase;
	p->total = total;
	p->t0 = p->last = now_s();
	p->json = cli.json;
	p->tty = !cli.json && !cli.quiet && isatty(STDERR_FILENO);
	p->last_decile = -1;
}

static void draw(struct progress *p, double pct, uint64_t done, bool final)
{
	double el = now_s() - p->t0;
	double rate = el > 0 ? (double)done / el : 0;
	char eta[32] = "";
	int w = 30, fill = (int)(pct / 100.0 * w + 0.5);

	if (pct > 0 && pct < 100 && el > 1) {
		double left = el * (100.0 - pct) / pct;

		snprintf(eta, sizeof(eta), " %d:%02d left", (int)left / 60, (int)left % 60);
	}
	fprintf(stderr, "\r%-6s [", p->phase);
	for (int i = 0; i < w; i++)
		fputc(i < fill ? '#' : '.', stderr);
	fprintf(stderr, "] %5.1f%%", pct);
	if (rate > 0)
		fprintf(stderr, " %6.1f MB/s", rate / 1e6);
	fprintf(stderr, "%-16s%s", eta, final ? "\n" : "");
	fflush(stderr);
	p->drawn = !final;
}

void progress_update(struct progress *p, uint64_t done, double percent)
{
	double pct = p->total ? (double)done * 100.0 / (double)p->total : percent;
	double t = now_s();

	if (pct < 0)
		pct = 0;
	if (pct > 100)
		pct = 100;
	if (p->json) {
		struct json_object *o;

		if (t - p->last < 1.0 && pct < 100)
			return;
		o = json_object_new_object();
		json_object_object_add(o, "phase", json_object_new_string(p->phase));
		json_object_object_add(o, "percent", tenths(pct));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)done));
		if (p->total)
			json_object_object_add(o, "total", json_object_new_int64((int64_t)p->total));
		json_object_object_add(o, "elapsed", tenths(t - p->t0));
		progress_event("progress", o);
	} else if (p->tty) {
		if (t - p->last < 0.2 && pct < 100)
			return;
		draw(p, pct, done, false);
	} else if (!cli.quiet && (int)(pct / 10) > p->last_decile) {
		p->last_decile = (int)(pct / 10);
		fprintf(stderr, "lockroot: %s %d%%\n", p->phase, p->last_decile * 10);
	}
	p->last = t;
}

void progress_end(struct progress *p, bool ok)
{
	if (p->tty && p->drawn) {
		fprintf(stderr, "%s\n", ok ? "" : " (stopped)");
		p->drawn = false;
	}
	if (!cli.quiet && !p->json)
		fprintf(stderr, "lockroot: %s %s in %.0f s\n", p->phase, ok ? "finished" : "stopped", now_s() - p->t0);
}
