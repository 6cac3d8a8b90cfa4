/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tamper lines through libgpiod (the v1 API of Debian 12's libgpiod 1.6). */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "tamper.h"
#include "util.h"

#if HAVE_GPIOD
#include <gpiod.h>

#define CONSUMER "lockroot-tamper"

static int line_open(const struct lr_tamper_line *l, struct gpiod_chip **chip, struct gpiod_line **line)
{
	char name[96];

	lr_tamper_line_name(l, name, sizeof(name));
	/* a name (gpiochip0), a path (/dev/gpiochip0), a number or the chip's label */
	*chip = gpiod_chip_open_lookup(l->chip);
	if (!*chip)
		return lr_error_code(errno ? -errno : -ENODEV, "GPIO chip %s not found (line %s): %s; "
				     "is its driver loaded? (gpiodetect lists the chips)", l->chip, name,
				     strerror(errno ? errno : ENODEV));
	*line = gpiod_chip_get_line(*chip, l->offset);
	if (!*line) {
		int r = errno ? -errno : -EINVAL;

		gpiod_chip_close(*chip);
		*chip = NULL;
		return lr_error_code(r, "GPIO chip %s has no line %u", l->chip, l->offset);
	}
	return 0;
}

int lr_tamper_line_exists(const struct lr_tamper_line *l)
{
	struct gpiod_chip *chip;
	struct gpiod_line *line;
	int r = line_open(l, &chip, &line);

	if (r == 0)
		gpiod_chip_close(chip);
	return r;
}

int lr_tamper_line_read(const struct lr_tamper_line *l)
{
	struct gpiod_chip *chip;
	struct gpiod_line *line;
	int r, v;

	r = line_open(l, &chip, &line);
	if (r < 0)
		return r;
	r = gpiod_line_request_input_flags(line, CONSUMER, l->active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0);
	if (r < 0) {
		r = lr_error_code(-errno, "cannot request GPIO %s:%u: %s (in use by another program?)", l->chip,
				  l->offset, strerror(errno));
		goto out;
	}
	/* with ACTIVE_LOW the value is the logical one: 1 is the tampered level either way */
	v = gpiod_line_get_value(line);
	r = v < 0 ? lr_error_code(-errno, "cannot read GPIO %s:%u: %s", l->chip, l->offset, strerror(errno)) : v;
out:
	gpiod_chip_close(chip);
	return r;
}

struct watched {
	struct gpiod_chip *chip;
	struct gpiod_line *line;
	bool pending;              /* active, waiting for the debounce time to pass */
	bool fired;                /* acted on; again only after it went inactive */
	struct timespec edge;      /* when it became active (the kernel's event time) */
	struct timespec deadline;
};

static struct timespec ts_add_ms(struct timespec t, unsigned ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static long ms_until(const struct timespec *t)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000L;
	/* round up: never wake before the deadline and spin */
	if ((t->tv_nsec - now.tv_nsec) % 1000000L > 0)
		ms++;
	return ms < 0 ? 0 : ms;
}

static void become_active(struct watched *w, const struct lr_tamper_line *l, const struct timespec *when)
{
	if (w->pending || w->fired)
		return;
	w->pending = true;
	w->edge = *when;
	w->deadline = ts_add_ms(*when, l->debounce_ms);
}

int lr_tamper_watch(const struct lr_tamper_config *c, lr_tamper_fire_fn fn, void *userdata)
{
	struct watched w[LR_TAMPER_LINES_MAX] = { 0 };
	struct pollfd pfd[LR_TAMPER_LINES_MAX];
	unsigned n = c->n_lines;
	int r = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct lr_tamper_line *l = &c->line[i];
		int flags = l->active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;

		r = line_open(l, &w[i].chip, &w[i].line);
		if (r < 0)
			goto out;
		if (gpiod_line_request_both_edges_events_flags(w[i].line, CONSUMER, flags) < 0) {
			r = lr_error_code(-errno, "cannot watch GPIO %s:%u: %s (in use by another program?)", l->chip,
					  l->offset, strerror(errno));
			goto out;
		}
		pfd[i].fd = gpiod_line_event_get_fd(w[i].line);
		pfd[i].events = POLLIN | POLLPRI;
	}
	/* a line that is active already counts from now: a board opened while the daemon was down */
	for (unsigned i = 0; i < n; i++) {
		int v = gpiod_line_get_value(w[i].line);
		struct timespec now;

		if (v < 0) {
			r = lr_error_code(-errno, "cannot read GPIO %s:%u: %s", c->line[i].chip, c->line[i].offset,
					  strerror(errno));
			goto out;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (v == 1) {
			lr_warn("GPIO %s:%u is at its tamper level already", c->line[i].chip, c->line[i].offset);
			become_active(&w[i], &c->line[i], &now);
		}
	}
	for (;;) {
		long timeout = -1;
		int k;

		for (unsigned i = 0; i < n; i++)
			if (w[i].pending) {
				long t = ms_until(&w[i].deadline);

				if (timeout < 0 || t < timeout)
					timeout = t;
			}
		k = poll(pfd, n, (int)timeout);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = lr_error_code(-errno, "poll: %s", strerror(errno));
			goto out;
		}
		for (unsigned i = 0; i < n; i++) {
			struct gpiod_line_event ev;

			if (!(pfd[i].revents & (POLLIN | POLLPRI)))
				continue;
			if (gpiod_line_event_read(w[i].line, &ev) < 0) {
				r = lr_error_code(-errno, "cannot read an event of GPIO %s:%u: %s", c->line[i].chip,
						  c->line[i].offset, strerror(errno));
				goto out;
			}
			/* libgpiod v1 reports the logical edge: rising = towards the tamper level */
			lr_debug("GPIO %s:%u: %s edge", c->line[i].chip, c->line[i].offset,
				 ev.event_type == GPIOD_LINE_EVENT_RISING_EDGE ? "active" : "inactive");
			if (ev.event_type == GPIOD_LINE_EVENT_RISING_EDGE) {
				become_active(&w[i], &c->line[i], &ev.ts);
			} else {
				w[i].pending = false;
				w[i].fired = false;
			}
		}
		for (unsigned i = 0; i < n; i++) {
			int v;

			if (!w[i].pending || ms_until(&w[i].deadline) > 0)
				continue;
			w[i].pending = false;
			/* the level must still be active after the debounce time: re-read it */
			v = gpiod_line_get_value(w[i].line);
			if (v != 1) {
				lr_debug("GPIO %s:%u: not active after %u ms: a glitch, ignored", c->line[i].chip,
					 c->line[i].offset, c->line[i].debounce_ms);
				continue;
			}
			w[i].fired = true;
			r = fn(i, &w[i].edge, userdata);
			if (r != 0)
				goto out;
		}
	}
out:
	for (unsigned i = 0; i < n; i++)
		if (w[i].chip)
			gpiod_chip_close(w[i].chip);
	return r;
}

#else

int lr_tamper_line_exists(const struct lr_tamper_line *l)
{
	return lr_tamper_line_read(l);
}

int lr_tamper_line_read(const struct lr_tamper_line *l)
{
	(void)l;
	return lr_error_code(-EOPNOTSUPP, "this lockroot was built without libgpiod: it cannot read GPIO lines");
}

int lr_tamper_watch(const struct lr_tamper_config *c, lr_tamper_fire_fn fn, void *userdata)
{
	(void)c;
	(void)fn;
	(void)userdata;
	return lr_error_code(-EOPNOTSUPP, "this lockroot was built without libgpiod: it cannot watch GPIO lines");
}

#endif
