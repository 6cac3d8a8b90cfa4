/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The activity LED on a fake sysfs (LOCKROOT_SYSROOT in a temporary directory): blink saves
 * the trigger in brackets and sets "timer", restore puts it back; ACT before led0; no LED or a
 * broken one never fails and never creates anything. No root needed.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "erase.h"
#include "log.h"

#include "check.h"

static char tmpdir[PATH_MAX / 2];
static char last_warning[1024];

static void log_hook(int level, const char *msg, void *userdata)
{
	if (level >= LR_LOG_WARN)
		snprintf(last_warning, sizeof(last_warning), "%s", msg);
	check_log_hook(level, msg, userdata);
}

/* A fresh sysroot per case, so that no case sees another's LEDs. */
static void new_root(const char *name)
{
	check_sysroot_new(tmpdir, name);
	last_warning[0] = '\0';
}

static char *path_of(const char *rel)
{
	static char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s%s", getenv("LOCKROOT_SYSROOT"), rel);
	return buf;
}

static void put_led(const char *name, const char *trigger)
{
	char rel[256];

	snprintf(rel, sizeof(rel), "/sys/class/leds/%s/trigger", name);
	check_put_file(getenv("LOCKROOT_SYSROOT"), path_of(rel), trigger);
}

/* Contents of an LED's trigger file, "(none)" when it does not exist. */
static const char *trigger_of(const char *name)
{
	static char buf[256];
	char rel[256];
	size_t n;
	FILE *f;

	snprintf(rel, sizeof(rel), "/sys/class/leds/%s/trigger", name);
	f = fopen(path_of(rel), "r");
	if (!f)
		return "(none)";
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static void test_act(void)
{
	struct lr_led led;

	new_root("act");
	put_led("ACT", "none [mmc0] timer heartbeat\n");
	CHECK(lr_led_blink(&led) == 0);
	CHECK(ends_with(led.path, "/sys/class/leds/ACT/trigger"));
	CHECK_STR(led.saved, "mmc0");
	CHECK_STR(trigger_of("ACT"), "timer");
	CHECK(lr_led_restore(&led) == 0);
	CHECK_STR(trigger_of("ACT"), "mmc0");
	CHECK_STR(led.path, "");
	/* A second restore does nothing. */
	put_led("ACT", "none mmc0 [heartbeat]\n");
	CHECK(lr_led_restore(&led) == 0);
	CHECK_STR(trigger_of("ACT"), "none mmc0 [heartbeat]\n");
	CHECK_STR(last_warning, "");
}

static void test_led0_fallback(void)
{
	struct lr_led led;

	new_root("led0");
	put_led("led0", "[none] mmc0 timer\n");
	CHECK(lr_led_blink(&led) == 0);
	CHECK(ends_with(led.path, "/sys/class/leds/led0/trigger"));
	CHECK_STR(trigger_of("led0"), "timer");
	CHECK(lr_led_restore(&led) == 0);
	CHECK_STR(trigger_of("led0"), "none");
	CHECK_STR(trigger_of("ACT"), "(none)");
}

static void test_act_first(void)
{
	struct lr_led led;

	new_root("both");
	put_led("ACT", "none [actpwr] timer\n");
	put_led("led0", "none [mmc0] timer\n");
	CHECK(lr_led_blink(&led) == 0);
	CHECK_STR(trigger_of("ACT"), "timer");
	CHECK_STR(trigger_of("led0"), "none [mmc0] timer\n");
	CHECK(lr_led_restore(&led) == 0);
	CHECK_STR(trigger_of("ACT"), "actpwr");
}

static void test_no_led(void)
{
	struct lr_led led;
	struct stat st;

	new_root("none");
	CHECK(lr_led_blink(&led) == 0);
	CHECK_STR(led.path, "");
	CHECK(lr_led_restore(&led) == 0);
	CHECK(stat(path_of("/sys"), &st) < 0 && errno == ENOENT);
	CHECK_STR(last_warning, "");
}

static void test_broken_led(void)
{
	struct lr_led led;

	/* No trigger in brackets: we cannot put it back, so we do not touch it. */
	new_root("nobrackets");
	put_led("ACT", "none mmc0 timer\n");
	CHECK(lr_led_blink(&led) == 0);
	CHECK_STR(led.path, "");
	CHECK(strstr(last_warning, "cannot tell the current LED trigger") != NULL);
	CHECK(lr_led_restore(&led) == 0);
	CHECK_STR(trigger_of("ACT"), "none mmc0 timer\n");

	/* The LED went away while we worked: a warning, not a failure, and nothing created. */
	new_root("vanished");
	put_led("ACT", "none [mmc0] timer\n");
	CHECK(lr_led_blink(&led) == 0);
	CHECK(unlink(path_of("/sys/class/leds/ACT/trigger")) == 0);
	CHECK(lr_led_restore(&led) == 0);
	CHECK(strstr(last_warning, "cannot restore the LED trigger 'mmc0'") != NULL);
	CHECK_STR(trigger_of("ACT"), "(none)");
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	lr_set_log(log_hook, NULL);
	snprintf(tmpdir, sizeof(tmpdir), "%s/lockroot-led-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_act();
	test_led0_fallback();
	test_act_first();
	test_no_led();
	test_broken_led();
	check_rm_tree(tmpdir);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
