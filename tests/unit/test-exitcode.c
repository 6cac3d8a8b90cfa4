/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The one mapping from library errors to the exit codes documented in lockroot(8). */
#include <errno.h>
#include <stdio.h>

#include "cli.h"

int main(void)
{
	static const struct { int err, code; } map[] = {
		{ 0, 0 },
		{ -ENOENT, 3 }, { -EMEDIUMTYPE, 3 },
		{ -ENODEV, 4 },
		{ -EKEYREJECTED, 5 }, { -ENOKEY, 5 },
		{ -ENOANO, 6 },
		{ -EPERM, 7 },
		{ -EBADMSG, 8 }, { -EPROTONOSUPPORT, 8 },
		{ -ENOSPC, 9 },
		{ -EROFS, 10 },
		{ -ENOMSG, 11 },
		{ -EINVAL, 2 },
		{ -EIO, 1 }, { -ENOMEM, 1 }, { -EBUSY, 1 },
	};
	int failures = 0;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		int got = lr_exit_code(map[i].err);

		if (got != map[i].code) {
			fprintf(stderr, "error %d: exit %d, expected %d\n", map[i].err, got, map[i].code);
			failures++;
		}
	}
	return failures ? 1 : 0;
}
