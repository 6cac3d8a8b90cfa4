/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The unit tests' checks: count failures, say where, and go on (the test exits non-zero). */
#pragma once

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

static int failures;

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: %s: failed: %s\n", __FILE__, __LINE__,  \
				__func__, #cond);                                       \
			failures++;                                                     \
		}                                                                       \
	} while (0)

#define CHECK_STR(a, b)                                                                 \
	do {                                                                            \
		const char *a_ = (a), *b_ = (b);                                        \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                \
			fprintf(stderr, "%s:%d: %s: failed: %s ==\n\"%s\"\ngot\n\"%s\"\n", \
				__FILE__, __LINE__, __func__, #a, b_ ? b_ : "(null)",   \
				a_ ? a_ : "(null)");                                    \
			failures++;                                                     \
		}                                                                       \
	} while (0)

/* The last error the library logged, for tests that check what a failure says. Install with
 * lr_set_log(check_log_hook, NULL); TEST_VERBOSE=1 shows every message. */
static char last_error[1024];

static inline void check_log_hook(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (level >= LR_LOG_ERROR)
		snprintf(last_error, sizeof(last_error), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
}

static inline int check_rm_one_(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0; /* clean up the rest even if one entry resists */
}

/* Remove dir and everything below it (a test's scratch directory). */
static inline void check_rm_tree(const char *dir)
{
	nftw(dir, check_rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write text to path, creating the directories below base on the way (base itself exists):
 * files of a fake sysroot. Exits on failure. */
static inline void check_put_file(const char *base, const char *path, const char *text)
{
	char p[4096];
	FILE *f;

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = strchr(p + strlen(base) + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		mkdir(p, 0755);
		*s = '/';
	}
	f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

/* A fresh fake sysroot dir/name, made the LOCKROOT_SYSROOT of the library. Exits on failure. */
static inline void check_sysroot_new(const char *dir, const char *name)
{
	char root[4096];

	snprintf(root, sizeof(root), "%s/%s", dir, name);
	if (mkdir(root, 0755) < 0) {
		perror(root);
		exit(1);
	}
	setenv("LOCKROOT_SYSROOT", root, 1);
}
