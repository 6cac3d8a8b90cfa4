/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Boot files: what config.txt makes the firmware load, measured in a fixed order; any change
 * to one of them changes the value and is named; other files do not matter. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bootfiles.h"
#include "lockroot.h"

#include "check.h"

static char dir[64];

static void put(const char *rel, const char *text)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	check_put_file(dir, p, text);
}

static char *paths(const struct lr_bootfiles *bf)
{
	static char buf[2048];

	buf[0] = '\0';
	for (size_t i = 0; i < bf->n; i++) {
		strcat(buf, i ? " " : "");
		strcat(buf, bf->f[i].path);
		if (strcmp(bf->f[i].sha256, "-") == 0)
			strcat(buf, "(absent)");
	}
	return buf;
}

static void value(char out[65])
{
	struct lr_bootfiles bf;

	CHECK(lr_bootfiles_measure(dir, &bf) == 0);
	CHECK(lr_bootfiles_value(&bf, out) == 0);
	lr_bootfiles_done(&bf);
}

static void test_pi_os(void)
{
	struct lr_bootfiles bf, back;
	struct json_object *j;
	char v1[65], v2[65];

	/* Raspberry Pi OS bookworm: no kernel= line, auto_initramfs, overlays, sections. */
	put("config.txt", "# comment\ndtparam=audio=on\ncamera_auto_detect=1\nauto_initramfs=1\n"
			  "dtoverlay=vc4-kms-v3d\n[cm4]\notg_mode=1\n[pi4]\ndtoverlay=disable-bt,foo=1 # x\n"
			  "[all]\ninclude extra.txt\n");
	put("extra.txt", "dtoverlay=missing-overlay\n");
	put("cmdline.txt", "console=serial0,115200 root=/dev/mapper/cryptroot\n");
	put("kernel8.img", "k8");
	put("kernel_2712.img", "k2712");
	put("initramfs8", "i8");
	put("bcm2711-rpi-4-b.dtb", "dtb4");
	put("bcm2710-rpi-3-b.dtb", "dtb3");
	put("overlays/vc4-kms-v3d.dtbo", "o1");
	put("overlays/disable-bt.dtbo", "o2");
	put("overlays/unused.dtbo", "o3");
	put("overlays/overlay_map.dtb", "map");
	put("unrelated.txt", "x");
	CHECK(lr_bootfiles_measure(dir, &bf) == 0);
	CHECK_STR(paths(&bf), "config.txt extra.txt cmdline.txt kernel8.img kernel_2712.img initramfs8 "
			      "initramfs_2712(absent) bcm2710-rpi-3-b.dtb bcm2711-rpi-4-b.dtb overlays/vc4-kms-v3d.dtbo "
			      "overlays/disable-bt.dtbo overlays/missing-overlay.dtbo(absent) overlays/overlay_map.dtb");
	/* sha256("k8"), as sha256sum says */
	CHECK_STR(bf.f[3].sha256, "5a3df89da7bf23d71ec63f111d9171c3f05047380a17812f20248e63cfded4fb");
	CHECK(lr_bootfiles_value(&bf, v1) == 0 && strlen(v1) == 64);

	/* JSON round trip keeps the value. */
	j = lr_bootfiles_to_json(&bf);
	CHECK(j && lr_bootfiles_from_json(j, &back) == 0);
	CHECK(lr_bootfiles_value(&back, v2) == 0);
	CHECK_STR(v1, v2);
	json_object_put(j);
	lr_bootfiles_done(&back);

	/* An unrelated file does not matter; each measured one does, and is named. */
	put("unrelated.txt", "y");
	put("overlays/unused.dtbo", "changed");
	value(v2);
	CHECK_STR(v1, v2);
	put("cmdline.txt", "console=serial0,115200 root=/dev/mapper/cryptroot init=/bin/sh\n");
	value(v2);
	CHECK(strcmp(v1, v2) != 0);
	CHECK(lr_bootfiles_measure(dir, &back) == 0);
	last_error[0] = '\0';
	CHECK(lr_bootfiles_explain(&bf, &back) == 1);
	CHECK_STR(last_error, "boot file cmdline.txt changed since the key was locked to the boot files");
	lr_bootfiles_done(&back);
	put("overlays/missing-overlay.dtbo", "now here");
	CHECK(lr_bootfiles_measure(dir, &back) == 0);
	CHECK(lr_bootfiles_explain(&bf, &back) == 2);
	CHECK_STR(last_error, "boot file overlays/missing-overlay.dtbo appeared since the key was locked to the boot files");
	lr_bootfiles_done(&back);
	lr_bootfiles_done(&bf);
}

static void test_named(void)
{
	struct lr_bootfiles bf, later;

	/* kernel=, initramfs and device_tree= name exactly what is loaded; cmdline= another file. */
	put("config.txt", "kernel=vmlinuz\ninitramfs initrd.img followkernel\ndevice_tree=my.dtb\ncmdline=cmd2.txt\n");
	put("vmlinuz", "v");
	put("initrd.img", "i");
	put("my.dtb", "d");
	put("cmd2.txt", "c");
	CHECK(lr_bootfiles_measure(dir, &bf) == 0);
	CHECK_STR(paths(&bf), "config.txt cmd2.txt vmlinuz initrd.img my.dtb");
	/* config.txt pointing at another kernel is a change of config.txt and of the file list. */
	put("config.txt", "kernel=vmlinuz-new\ninitramfs initrd.img followkernel\ndevice_tree=my.dtb\ncmdline=cmd2.txt\n");
	put("vmlinuz-new", "v");
	CHECK(lr_bootfiles_measure(dir, &later) == 0);
	last_error[0] = '\0';
	CHECK(lr_bootfiles_explain(&bf, &later) == 3);
	lr_bootfiles_done(&later);
	lr_bootfiles_done(&bf);

	/* Include loops are refused; a directory without config.txt and cmdline.txt is no boot partition. */
	put("config.txt", "include config.txt\n");
	CHECK(lr_bootfiles_measure(dir, &bf) == -ELOOP);
	check_rm_tree(dir);
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(lr_bootfiles_measure(dir, &bf) == -ENOENT);
	CHECK(strstr(last_error, "not a boot partition") != NULL);
}

int main(void)
{
	lr_set_log(check_log_hook, NULL);
	snprintf(dir, sizeof(dir), "/tmp/lockroot-bootfiles.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	test_pi_os();
	check_rm_tree(dir);
	CHECK(mkdir(dir, 0700) == 0);
	test_named();
	check_rm_tree(dir);
	if (failures)
		fprintf(stderr, "test-bootfiles: %d check(s) failed\n", failures);
	else
		fprintf(stderr, "test-bootfiles: all checks passed\n");
	return failures ? 1 : 0;
}
