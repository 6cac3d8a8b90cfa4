/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Which block device holds the running root, through LOCKROOT_SYSROOT like every sysfs read. */
#pragma once

struct lr_rootdev {
	char *source;     /* what / is mounted from, e.g. "/dev/mapper/cryptroot" or "/dev/mmcblk0p2" */
	char *dm_name;    /* device-mapper name when / is on dm, else NULL */
	char *backing;    /* the one device under that dm device ("/dev/mmcblk0p2"), else NULL */
};

/* Read /proc/self/mountinfo for "/" and, for a device-mapper root, /sys/dev/block/M:m/dm/name
 * and slaves/. -ENOENT (logged) when / is not found. */
int lr_rootdev_find(struct lr_rootdev *rd);
void lr_rootdev_done(struct lr_rootdev *rd);
