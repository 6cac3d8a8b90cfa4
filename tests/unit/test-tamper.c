/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tamper.conf: defaults and per-line keys, the token's "lines" round trip, and what a broken
 * configuration or token says. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "lockroot.h"
#include "tamper.h"

#include "check.h"

static void test_parse(void)
{
	struct lr_tamper_config c;
	const char *text =
		"# defaults\n"
		"  mode = self-destruct  \n"
		"debounce-ms=5\n"
		"\n"
		"line = gpiochip0:17\n"
		"active = low\n"
		"latched = yes\n"
		"line = /dev/gpiochip1:3\n"
		"mode = notify\n"
		"command = /usr/local/bin/alert --loud # not a comment\n"
		"line = pinctrl-bcm2711:4\n"
		"destroy-recovery = yes\n"
		"poweroff = no\n";
	char name[96];

	CHECK(lr_tamper_config_parse_text("t.conf", text, &c) == 0);
	CHECK(c.n_lines == 3);
	CHECK_STR(c.line[0].chip, "gpiochip0");
	CHECK(c.line[0].offset == 17 && c.line[0].active_low && c.line[0].latched);
	CHECK(c.line[0].mode == LR_TAMPER_SELF_DESTRUCT && c.line[0].debounce_ms == 5);
	CHECK(c.line[0].poweroff && !c.line[0].destroy_recovery && !c.line[0].command[0]);
	CHECK_STR(c.line[1].chip, "/dev/gpiochip1");
	CHECK(c.line[1].mode == LR_TAMPER_NOTIFY && !c.line[1].active_low && !c.line[1].latched);
	CHECK_STR(c.line[1].command, "/usr/local/bin/alert --loud # not a comment");
	CHECK(c.line[2].destroy_recovery && !c.line[2].poweroff && c.line[2].mode == LR_TAMPER_SELF_DESTRUCT);
	lr_tamper_line_name(&c.line[2], name, sizeof(name));
	CHECK_STR(name, "pinctrl-bcm2711:4");

	/* defaults when nothing is said */
	CHECK(lr_tamper_config_parse_text("t.conf", "line = gpiochip0:1", &c) == 0);
	CHECK(c.line[0].debounce_ms == LR_TAMPER_DEBOUNCE_DEFAULT && c.line[0].mode == LR_TAMPER_NOTIFY);
	CHECK(c.line[0].poweroff && !c.line[0].destroy_recovery && !c.line[0].latched && !c.line[0].active_low);
}

static void test_errors(void)
{
	static const struct {
		const char *text, *msg;
		int r;
	} bad[] = {
		{ "line = gpiochip0", "t.conf:1: line must be CHIP:OFFSET", -EINVAL },
		{ "line = :4", "t.conf:1: line must be CHIP:OFFSET", -EINVAL },
		{ "line = gpiochip0:4x", "t.conf:1: line must be CHIP:OFFSET", -EINVAL },
		{ "\n\nline = a:1\nactive = 1", "t.conf:4: active: active must be high or low", -EINVAL },
		{ "line = a:1\ndebounce-ms = 60001", "t.conf:2: debounce-ms:", -EINVAL },
		{ "line = a:1\nfoo = bar", "t.conf:2: foo: unknown key", -EINVAL },
		{ "line = a:1\njust words", "t.conf:2: expected 'key = value'", -EINVAL },
		{ "line = a:1\nline = a:1", "t.conf:2: line a:1 is configured twice", -EINVAL },
		{ "mode = notify", "t.conf: no 'line = CHIP:OFFSET'", -ENOMSG },
	};

	lr_set_log(check_log_hook, NULL);
	for (size_t i = 0; i < LR_ELEMENTSOF(bad); i++) {
		struct lr_tamper_config c;

		last_error[0] = '\0';
		CHECK(lr_tamper_config_parse_text("t.conf", bad[i].text, &c) == bad[i].r);
		if (strncmp(last_error, bad[i].msg, strlen(bad[i].msg)) != 0) {
			fprintf(stderr, "case %zu: expected \"%s...\", got \"%s\"\n", i, bad[i].msg, last_error);
			failures++;
		}
	}
}

static void test_json(void)
{
	struct lr_tamper_config c, d;
	struct json_object *arr, *o;

	CHECK(lr_tamper_config_parse_text("t.conf", "line = gpiochip0:17\nactive = low\nlatched = yes\n"
					  "mode = self-destruct\ncommand = /bin/true\nline = x:2\n", &c) == 0);
	arr = lr_tamper_config_json(&c);
	CHECK(lr_tamper_config_from_json(arr, &d) == 0);
	CHECK(d.n_lines == 2);
	for (unsigned i = 0; i < 2; i++) {
		CHECK_STR(d.line[i].chip, c.line[i].chip);
		CHECK_STR(d.line[i].command, c.line[i].command);
		CHECK(d.line[i].offset == c.line[i].offset && d.line[i].active_low == c.line[i].active_low);
		CHECK(d.line[i].debounce_ms == c.line[i].debounce_ms && d.line[i].latched == c.line[i].latched);
		CHECK(d.line[i].mode == c.line[i].mode && d.line[i].destroy_recovery == c.line[i].destroy_recovery);
		CHECK(d.line[i].poweroff == c.line[i].poweroff);
	}
	/* a token line without a field it needs is corrupt */
	o = json_object_array_get_idx(arr, 1);
	json_object_object_del(o, "latched");
	CHECK(lr_tamper_config_from_json(arr, &d) == -EBADMSG);
	json_object_put(arr);
	CHECK(lr_tamper_config_from_json(NULL, &d) == -EBADMSG);
}

int main(void)
{
	test_parse();
	test_errors();
	test_json();
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
