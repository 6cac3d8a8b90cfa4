/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The conversion engine (lib/convert.h) on image files and devices, for
 * tests/integration/convert-engine.sh:
 *   test-convert template DEV HDR --hsm SPEC [--recovery-key-file F] [--recovery-iterations N]
 *                                 [--cipher SPEC]
 *   test-convert examine  DEV [RECORD]      one JSON line: state, sizes, progress
 *   test-convert shrink   DEV               one JSON line: rc, fs_size
 *   test-convert init     DEV HDR RECORD    key from the token in HDR
 *   test-convert undo-cut DEV RECORD
 *   test-convert run      DEV [--stop-after N] [--crash-at-end]
 *   test-convert finalize DEV
 * init, run and finalize unlock the key through the HSM named by the header's lockroot token
 * (HDR, or DEV itself), or take it from --key-file F. --stop-after N stops cleanly after N
 * chunks (exit 3); --crash-at-end kills the process with SIGKILL in the callback after the
 * last chunk, before libcryptsetup finalises the metadata.
 * Exit: 0 done, 1 error, 2 usage, 3 stopped.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "lockroot.h"

static void log_hook(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (level >= LR_LOG_WARN || getenv("TEST_VERBOSE"))
		fprintf(stderr, "test-convert: %s\n", msg);
}

static int usage(void)
{
	fprintf(stderr, "usage: test-convert template DEV HDR --hsm SPEC [--recovery-key-file F] "
		"[--recovery-iterations N] [--cipher SPEC]\n"
		"       test-convert examine DEV [RECORD] | shrink DEV | init DEV HDR RECORD | undo-cut DEV RECORD\n"
		"       test-convert run DEV [--stop-after N] [--crash-at-end] | finalize DEV\n"
		"       (init, run, finalize: [--key-file F])\n");
	return 2;
}

struct opts {
	const char *pos[3];
	int npos;
	const char *hsm, *cipher, *recovery_file, *key_file;
	uint32_t recovery_iterations;
	uint64_t stop_after;
	bool crash_at_end;
};

static int parse(int argc, char **argv, struct opts *o)
{
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--crash-at-end") == 0) {
			o->crash_at_end = true;
			continue;
		}
		if (a[0] != '-') {
			if (o->npos == 3)
				return -EINVAL;
			o->pos[o->npos++] = a;
			continue;
		}
		if (!v)
			return -EINVAL;
		i++;
		if (strcmp(a, "--hsm") == 0)
			o->hsm = v;
		else if (strcmp(a, "--cipher") == 0)
			o->cipher = v;
		else if (strcmp(a, "--recovery-key-file") == 0)
			o->recovery_file = v;
		else if (strcmp(a, "--key-file") == 0)
			o->key_file = v;
		else if (strcmp(a, "--recovery-iterations") == 0)
			o->recovery_iterations = (uint32_t)strtoul(v, NULL, 10);
		else if (strcmp(a, "--stop-after") == 0)
			o->stop_after = strtoull(v, NULL, 10);
		else
			return -EINVAL;
	}
	return 0;
}

static int get_key(const struct opts *o, const char *header, const char *device, struct lr_secret **pass)
{
	if (o->key_file)
		return lr_secret_read_file(o->key_file, 4096, pass);
	return lr_convert_unlock(header, device, pass);
}

static int cmd_template(const struct opts *o)
{
	_cleanup_secret_ struct lr_secret *rk = NULL;
	struct lr_hsm hsm = { 0 };
	struct lr_enroll_result res;
	struct lr_convert_template_params p = {
		.device = o->pos[0],
		.path = o->pos[1],
		.cipher = o->cipher,
		.hsm = &hsm,
		.bind_default = true,
		.recovery_key = true,
		.recovery_cost = { .iterations = o->recovery_iterations, .memory_kb = 32, .parallel = 1 },
	};
	int r;

	if (o->npos != 2 || !o->hsm)
		return usage();
	if (o->recovery_file) {
		_cleanup_secret_ struct lr_secret *typed = NULL;

		r = lr_secret_read_file(o->recovery_file, 256, &typed);
		if (r < 0)
			return r;
		typed->data[typed->len] = 0;
		r = lr_recovery_key_normalize((const char *)typed->data, &rk);
		if (r < 0)
			return r;
		p.recovery_key_value = rk;
	}
	r = lr_hsm_parse(o->hsm, &hsm);
	if (r < 0)
		return r;
	r = lr_convert_template(&p, &res);
	if (r == 0)
		printf("{\"keyslot\": %d, \"token\": %d, \"recovery_keyslot\": %d}\n", res.keyslot, res.token,
		       res.recovery_keyslot);
	lr_enroll_result_done(&res);
	lr_hsm_done(&hsm);
	return r;
}

static int cmd_examine(const struct opts *o)
{
	struct lr_convert_info info;
	int r;

	if (o->npos < 1 || o->npos > 2)
		return usage();
	r = lr_convert_examine(o->pos[0], o->npos > 1 ? o->pos[1] : NULL, &info);
	if (r < 0)
		return r;
	printf("{\"state\": \"%s\", \"part_size\": %" PRIu64 ", \"fs_size\": %" PRIu64 ", \"fs_uuid\": \"%s\", "
	       "\"total\": %" PRIu64 ", \"done\": %" PRIu64 ", \"cipher\": \"%s\"}\n",
	       lr_convert_state_name(info.state), info.part_size, info.fs_size, info.fs_uuid, info.total, info.done,
	       info.cipher);
	return 0;
}

struct run_ctl {
	uint64_t left;
	bool crash_at_end;
	uint64_t calls;
};

static int on_progress(uint64_t done, uint64_t total, void *userdata)
{
	struct run_ctl *c = userdata;

	c->calls++;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "test-convert: progress %" PRIu64 "/%" PRIu64 "\n", done, total);
	if (c->crash_at_end && done == total) {
		fflush(NULL);
		kill(getpid(), SIGKILL);
	}
	return c->left && --c->left == 0;
}

static int cmd_run(const struct opts *o)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	struct run_ctl c = { .left = o->stop_after, .crash_at_end = o->crash_at_end };
	int r;

	if (o->npos != 1)
		return usage();
	r = get_key(o, o->pos[0], o->pos[0], &pass);
	if (r < 0)
		return r;
	r = lr_convert_run(o->pos[0], NULL, pass, on_progress, &c);
	printf("{\"rc\": %d, \"calls\": %" PRIu64 "}\n", r, c.calls);
	return r;
}

static int dispatch(const char *cmd, const struct opts *o)
{
	_cleanup_secret_ struct lr_secret *pass = NULL;
	uint64_t fs_size = 0;
	int r;

	if (strcmp(cmd, "template") == 0)
		return cmd_template(o);
	if (strcmp(cmd, "examine") == 0)
		return cmd_examine(o);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(o);
	if (strcmp(cmd, "shrink") == 0) {
		if (o->npos != 1)
			return usage();
		r = lr_convert_shrink(o->pos[0], &fs_size, NULL, NULL);
		printf("{\"rc\": %d, \"fs_size\": %" PRIu64 "}\n", r, fs_size);
		return r;
	}
	if (strcmp(cmd, "init") == 0) {
		if (o->npos != 3)
			return usage();
		r = get_key(o, o->pos[1], o->pos[0], &pass);
		return r < 0 ? r : lr_convert_init(o->pos[0], o->pos[1], o->pos[2], pass);
	}
	if (strcmp(cmd, "undo-cut") == 0)
		return o->npos != 2 ? usage() : lr_convert_undo_cut(o->pos[0], o->pos[1]);
	if (strcmp(cmd, "finalize") == 0) {
		if (o->npos != 1)
			return usage();
		r = get_key(o, o->pos[0], o->pos[0], &pass);
		return r < 0 ? r : lr_convert_finalize_stuck(o->pos[0], pass);
	}
	return usage();
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	int r;

	if (argc < 3 || parse(argc, argv, &o) < 0)
		return usage();
	lr_set_log(log_hook, NULL);
	r = dispatch(argv[1], &o);
	if (r == 2)
		return 2; /* usage (lr_convert_run returns 0 or 1) */
	if (r < 0) {
		fprintf(stderr, "test-convert: %s: %s\n", argv[1], strerror(-r));
		return 1;
	}
	return r == 1 ? 3 : 0;
}
