/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The unit tests' checks: count failures, say where, and go on (the test exits non-zero). */
#pragma once

#include <stdio.h>
#include <string.h>

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
