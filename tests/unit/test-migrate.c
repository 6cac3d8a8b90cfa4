/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The migration state file and the tryboot switch-over, on a boot directory in a temp dir. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "check.h"
#include "migrate.h"
#include "util.h"

static char tmp[] = "/tmp/lockroot-migrate-XXXXXX";

static void put(const char *name, const char *text)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmp, name);
	check_put_file(tmp, p, text);
}

static char *get(const char *name)
{
	char p[512], *t = NULL;

	snprintf(p, sizeof(p), "%s/%s", tmp, name);
	if (lr_read_file(p, 1 << 20, &t, NULL) < 0)
		return NULL;
	return t;
}

static bool exists(const char *name)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmp, name);
	return access(p, F_OK) == 0;
}

static void fill_state(struct lr_migrate_state *st)
{
	memset(st, 0, sizeof(*st));
	st->phase = LR_MIGRATE_TRIAL;
	snprintf(st->source, sizeof(st->source), "/dev/mmcblk0p2");
	snprintf(st->target, sizeof(st->target), "/dev/sda");
	snprintf(st->boot_dir, sizeof(st->boot_dir), "%s/boot", tmp);
	snprintf(st->boot_device, sizeof(st->boot_device), "/dev/mmcblk0p1");
	snprintf(st->cmdline_file, sizeof(st->cmdline_file), "cmdline.txt");
	snprintf(st->initramfs, sizeof(st->initramfs), "initrd.img");
	st->final_config = strdup("kernel=vmlinuz\ninitramfs initrd.img followkernel\n");
	st->final_cmdline = strdup("console=ttyS0 root=/dev/mapper/cryptroot ro\n");
	st->n_volumes = 2;
	snprintf(st->volumes[0].role, sizeof(st->volumes[0].role), "root");
	snprintf(st->volumes[0].device, sizeof(st->volumes[0].device), "/dev/sda1");
	snprintf(st->volumes[0].uuid, sizeof(st->volumes[0].uuid), "11111111-2222-3333-4444-555555555555");
	snprintf(st->volumes[0].name, sizeof(st->volumes[0].name), "cryptroot");
	snprintf(st->volumes[0].mountpoint, sizeof(st->volumes[0].mountpoint), "/");
	st->volumes[0].partno = 1;
	st->volumes[0].size = 1ULL << 33;
	snprintf(st->volumes[1].role, sizeof(st->volumes[1].role), "data");
	snprintf(st->volumes[1].mountpoint, sizeof(st->volumes[1].mountpoint), "/var/log");
	st->volumes[1].reused = true;
	st->keep_source = true;
	st->erase_size = 1000;
	st->erase_done = 16;
}

static void test_state_roundtrip(void)
{
	struct lr_migrate_state st, back;
	char root[512];

	fill_state(&st);
	snprintf(root, sizeof(root), "%s/root", tmp);
	CHECK(lr_migrate_state_load(root, &back) == -ENOENT);
	lr_migrate_set_error(&st, "the %s failed", "trial");
	CHECK(lr_migrate_state_save(root, &st) == 0);
	CHECK(st.updated != 0 && st.started != 0);
	CHECK(lr_migrate_state_load(root, &back) == 0);
	CHECK(back.phase == LR_MIGRATE_TRIAL);
	CHECK_STR(back.source, "/dev/mmcblk0p2");
	CHECK_STR(back.boot_dir, st.boot_dir);
	CHECK_STR(back.final_config, st.final_config);
	CHECK_STR(back.final_cmdline, st.final_cmdline);
	CHECK_STR(back.error, "the trial failed");
	CHECK(back.n_volumes == 2);
	CHECK_STR(back.volumes[0].uuid, st.volumes[0].uuid);
	CHECK(back.volumes[0].size == 1ULL << 33 && back.volumes[0].partno == 1);
	CHECK(back.volumes[1].reused && !back.volumes[0].reused);
	CHECK_STR(back.volumes[1].mountpoint, "/var/log");
	CHECK(back.keep_source && back.erase_size == 1000 && back.erase_done == 16);
	/* The public JSON has no boot file texts */
	{
		struct json_object *o = lr_migrate_state_json(&back), *v;

		CHECK(!json_object_object_get_ex(o, "final_config", &v));
		CHECK(json_object_object_get_ex(o, "phase", &v) && strcmp(json_object_get_string(v), "trial") == 0);
		json_object_put(o);
	}
	lr_migrate_state_done(&back);
	/* Not ours: a clear error */
	put("root/var/lib/lockroot/migrate.json", "{\"phase\": \"sideways\"}");
	CHECK(lr_migrate_state_load(root, &back) == -EBADMSG);
	CHECK(strstr(last_error, "unknown phase") != NULL);
	put("root/var/lib/lockroot/migrate.json", "not json");
	CHECK(lr_migrate_state_load(root, &back) == -EBADMSG);
	lr_migrate_state_done(&st);
}

static const char *CONFIG = "# the user's\narm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n";

static void boot_setup(void)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/boot", tmp);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/newboot", tmp);
	mkdir(p, 0755);
	put("boot/config.txt", CONFIG);
	put("boot/cmdline.txt", "console=ttyS0 root=PARTUUID=abcd-02 ro\n");
	put("boot/initrd.img", "old initramfs");
	put("boot/initrd.img-6.1.0-1", "old initramfs 1");
	put("boot/initrd.img-6.1.0-2", "old initramfs 2");
	put("newboot/initrd.img-6.1.0-1", "new initramfs 1");
	put("newboot/initrd.img-6.1.0-2", "new initramfs 2");
}

static void test_trial_and_commit(void)
{
	struct lr_migrate_state st;
	char newboot[512];
	_cleanup_free_ char *tryboot = NULL, *cmd = NULL, *cfg = NULL;

	boot_setup();
	fill_state(&st);
	snprintf(newboot, sizeof(newboot), "%s/newboot", tmp);
	/* No trial initramfs yet: refused, nothing written */
	CHECK(lr_migrate_write_trial(&st, "console=ttyS0 root=/dev/mapper/cryptroot ro panic=10") == -ENOENT);
	CHECK(!exists("boot/tryboot.txt") && !exists("boot/lockroot-cmdline.txt"));
	put("boot/lockroot-initrd.img", "new initramfs 1");
	CHECK(lr_migrate_write_trial(&st, "console=ttyS0 root=/dev/mapper/cryptroot ro panic=10") == 0);
	cfg = get("boot/config.txt");
	CHECK_STR(cfg, CONFIG); /* the old root's boot is untouched */
	tryboot = get("boot/tryboot.txt");
	CHECK(tryboot && strncmp(tryboot, CONFIG, strlen(CONFIG)) == 0);
	CHECK(tryboot && strstr(tryboot, "\n[all]\ncmdline=lockroot-cmdline.txt\ninitramfs lockroot-initrd.img "
				"followkernel\n"));
	cmd = get("boot/lockroot-cmdline.txt");
	CHECK_STR(cmd, "console=ttyS0 root=/dev/mapper/cryptroot ro panic=10\n");
	free(cfg);

	/* Commit, twice: the second run (a power cut after the first) changes nothing more */
	for (int round = 0; round < 2; round++) {
		char *c, *i1, *i2, *ir, *cl;

		CHECK(lr_migrate_commit(&st, newboot) == 0);
		c = get("boot/config.txt");
		cl = get("boot/cmdline.txt");
		ir = get("boot/initrd.img");
		i1 = get("boot/initrd.img-6.1.0-1");
		i2 = get("boot/initrd.img-6.1.0-2");
		CHECK_STR(c, st.final_config);
		CHECK_STR(cl, st.final_cmdline);
		CHECK_STR(ir, "new initramfs 1");
		CHECK_STR(i1, "new initramfs 1");
		CHECK_STR(i2, "new initramfs 2");
		free(c), free(cl), free(ir), free(i1), free(i2);
		CHECK(!exists("boot/tryboot.txt") && !exists("boot/lockroot-cmdline.txt") &&
		      !exists("boot/lockroot-initrd.img"));
		CHECK(!exists("boot/config.txt.lockroot-tmp"));
	}
	/* A cut between step 1 and 4: config.txt is tryboot.txt, the trial files are there */
	put("boot/config.txt", "from tryboot\ncmdline=lockroot-cmdline.txt\n");
	put("boot/tryboot.txt", "from tryboot\ncmdline=lockroot-cmdline.txt\n");
	put("boot/lockroot-cmdline.txt", "trial\n");
	CHECK(lr_migrate_commit(&st, newboot) == 0);
	cfg = get("boot/config.txt");
	CHECK_STR(cfg, st.final_config);
	free(cfg);
	cfg = NULL;
	/* Without the final texts, nothing is done */
	free(st.final_config);
	st.final_config = NULL;
	CHECK(lr_migrate_commit(&st, newboot) == -EBADMSG);
	lr_migrate_state_done(&st);
}

static void test_abandon(void)
{
	struct lr_migrate_state st;
	char *rec = NULL, *cfg;

	boot_setup();
	fill_state(&st);
	put("boot/lockroot-initrd.img", "x");
	CHECK(lr_migrate_write_trial(&st, "root=/dev/mapper/cryptroot") == 0);
	put("boot/lockroot-tryboot.log", "cryptroot was not unlocked in the trial boot: no TPM found\n\n");
	CHECK(lr_migrate_abandon_trial(&st, &rec) == 0);
	CHECK_STR(rec, "cryptroot was not unlocked in the trial boot: no TPM found");
	free(rec);
	CHECK(!exists("boot/tryboot.txt") && !exists("boot/lockroot-cmdline.txt") &&
	      !exists("boot/lockroot-initrd.img") && !exists("boot/lockroot-tryboot.log"));
	cfg = get("boot/config.txt");
	CHECK_STR(cfg, CONFIG);
	free(cfg);
	/* No record: NULL, and again is fine */
	CHECK(lr_migrate_abandon_trial(&st, &rec) == 0 && rec == NULL);
	lr_migrate_state_done(&st);
}

int main(void)
{
	char cmd[600];

	lr_set_log(check_log_hook, NULL);
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		return 1;
	}
	test_state_roundtrip();
	test_trial_and_commit();
	test_abandon();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmp);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
