/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lr_erase() on a real file or block device, for tests/integration/erase.sh:
 *   test-erase DEVICE [--start N] [--stop-after CHUNKS] [--no-discard]
 * Prints one JSON line {"rc":…, "size":…, "done":…, "discarded":…, "overwritten":…}; exits 0
 * when the erase finished, 3 when --stop-after stopped it (-EINTR), 1 on an error, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "erase.h"
#include "log.h"

static void log_hook(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (level >= LR_LOG_WARN || getenv("TEST_VERBOSE"))
		fprintf(stderr, "test-erase: %s\n", msg);
}

static int stop_after(const struct lr_erase_stats *st, void *userdata)
{
	uint64_t *left = userdata;

	(void)st;
	if (*left == 0)
		return 0; /* no --stop-after */
	return --*left == 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || end == s || *end || *s == '-' ? -EINVAL : 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: test-erase DEVICE [--start N] [--stop-after CHUNKS] [--no-discard]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct lr_erase_stats st = { 0 };
	const char *device = NULL;
	uint64_t start = 0, left = 0;
	bool no_discard = false;
	int r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--no-discard") == 0) {
			no_discard = true;
		} else if (strcmp(argv[i], "--start") == 0 && i + 1 < argc) {
			if (parse_u64(argv[++i], &start) < 0)
				return usage();
		} else if (strcmp(argv[i], "--stop-after") == 0 && i + 1 < argc) {
			if (parse_u64(argv[++i], &left) < 0 || left == 0)
				return usage();
		} else if (argv[i][0] != '-' && !device) {
			device = argv[i];
		} else {
			return usage();
		}
	}
	if (!device)
		return usage();

	lr_set_log(log_hook, NULL);
	r = lr_erase(device, start, no_discard, stop_after, &left, &st);
	printf("{\"rc\": %d, \"size\": %" PRIu64 ", \"done\": %" PRIu64 ", \"discarded\": %" PRIu64
	       ", \"overwritten\": %" PRIu64 "}\n", r, st.size, st.done, st.discarded, st.overwritten);
	if (r == 0)
		return 0;
	return r == -EINTR ? 3 : 1;
}
