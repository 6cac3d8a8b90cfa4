/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot tamper arm|disarm|status|watch|check|trigger: GPIO tamper lines, and what is done
 * when one fires (lib/tamper.c). The daemon (watch) and the test entry point (trigger) act
 * through the same function, act().
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "migrate.h"
#include "config.h"
#include "tamper.h"

#define UNIT "lockroot-tamper.service"

static void help(void)
{
	printf("Usage: lockroot tamper COMMAND [OPTIONS]\n\n"
	       "Tamper response: GPIO lines that mean the enclosure was opened. man lockroot-tamper(8).\n\n"
	       "  arm [--config FILE] [--force] [--no-start] [DEVICE...]\n"
	       "        write the configuration (default " LR_TAMPER_CONFIG_PATH ") into a\n"
	       "        lockroot-tamper token of each DEVICE (default: the volumes in /etc/crypttab\n"
	       "        that have a lockroot token) and arm it; start the daemon under systemd\n"
	       "  disarm [DEVICE...]          disarm (the configuration stays in the header)\n"
	       "  status [--config FILE] [--json] [DEVICE...]\n"
	       "        configuration, armed volumes, the level of each line, the daemon\n"
	       "  watch [--config FILE]       the daemon (lockroot-tamper.service)\n"
	       "  check DEVICE                initramfs: act on latched lines before DEVICE is unlocked\n"
	       "  trigger [--config FILE] [--line CHIP:OFFSET] [--no-poweroff]\n"
	       "        act now as if a line fired (the first, or --line): tests a setup; root only.\n"
	       "        In self-destruct mode this DESTROYS the keys of every armed volume.\n");
}

/* ---- shared ---- */

static bool daemon_mode;  /* watch: timestamps on every line; key lines also to the kernel log */

static void tamper_log(int level, const char *msg, void *userdata)
{
	struct timespec ts;
	struct tm tm;
	char when[40];

	(void)userdata;
	if (!daemon_mode) {
		cli_log(level, msg, NULL);
		return;
	}
	if (level == LR_LOG_DEBUG && !cli.verbose)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ lockroot-tamper: %s%s\n", when, ts.tv_nsec / 1000000L,
		level == LR_LOG_WARN ? "warning: " : level == LR_LOG_ERROR ? "error: " : "", msg);
}

/* A warning; from the daemon also in the kernel log (and so on the console): what must be seen
 * even when the journal is lost to an immediate power-off. */
static void kmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void kmsg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int fd, n;

	va_start(ap, fmt);
	n = vsnprintf(line + 3, sizeof(line) - 3, fmt, ap);
	va_end(ap);
	lr_warn("%s", line + 3);
	if (n < 0 || !daemon_mode)
		return;
	memcpy(line, "<4>", 3);  /* warning: shown on the console at the default log level */
	fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, line, strlen(line)) < 0) {
		/* nothing more to do: it is in our own log already */
	}
	close(fd);
}

static bool have_systemd(void)
{
	struct stat st;

	return !getenv("LOCKROOT_SYSROOT") && stat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

static int systemctl(const char *a, const char *b, const char *c)
{
	char *argv[] = { (char *)"systemctl", (char *)a, (char *)b, (char *)c, NULL };

	return cli_run(argv, true);
}

/* ---- the state file: which volumes are armed (for the daemon) ---- */

static struct json_object *state_load(void)
{
	_cleanup_free_ char *path = lr_sysroot_path(LR_TAMPER_STATE_PATH);
	struct json_object *o = path ? json_object_from_file(path) : NULL, *v;

	if (o && json_object_object_get_ex(o, "volumes", &v) && json_object_is_type(v, json_type_array))
		return o;
	json_object_put(o);
	o = json_object_new_object();
	json_object_object_add(o, "volumes", json_object_new_array());
	return o;
}

static int state_save(struct json_object *o)
{
	_cleanup_free_ char *path = lr_sysroot_path(LR_TAMPER_STATE_PATH);
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	int r;

	if (!path)
		return -ENOMEM;
	r = lr_mkdir_parents(path);
	if (r < 0)
		return lr_error_code(r, "cannot create the directory of %s: %s", path, strerror(-r));
	return lr_write_file_atomic(path, text, strlen(text), 0644);
}

/* The volume's device now: its stable udev name if there is one, else the name it was armed by. */
static const char *volume_device(struct json_object *vol, char *buf, size_t len)
{
	struct json_object *u, *d;

	if (json_object_object_get_ex(vol, "uuid", &u)) {
		snprintf(buf, len, "/dev/disk/by-uuid/%s", json_object_get_string(u));
		if (access(buf, F_OK) == 0)
			return buf;
	}
	return json_object_object_get_ex(vol, "device", &d) ? json_object_get_string(d) : "";
}

static void state_update(struct json_object *st, const char *device, const char *uuid, bool armed)
{
	struct json_object *vols, *keep = json_object_new_array(), *v;

	json_object_object_get_ex(st, "volumes", &vols);
	for (size_t i = 0; i < json_object_array_length(vols); i++) {
		struct json_object *vol = json_object_array_get_idx(vols, i);

		if (json_object_object_get_ex(vol, "uuid", &v) && !strcmp(json_object_get_string(v), uuid))
			continue;
		json_object_array_add(keep, json_object_get(vol));
	}
	if (armed) {
		v = json_object_new_object();
		json_object_object_add(v, "uuid", json_object_new_string(uuid));
		json_object_object_add(v, "device", json_object_new_string(device));
		json_object_array_add(keep, v);
	}
	json_object_object_add(st, "volumes", keep);
}

/* uuid and whether device holds a lockroot token. */
static int volume_info(const char *device, char *uuid, size_t len, bool *enrolled)
{
	struct json_object *o = NULL, *v, *toks;
	int r = lr_status(device, &o);

	if (r < 0)
		return r;
	snprintf(uuid, len, "%s", json_object_object_get_ex(o, "uuid", &v) ? json_object_get_string(v) : "");
	*enrolled = false;
	if (json_object_object_get_ex(o, "tokens", &toks))
		for (size_t i = 0; i < json_object_array_length(toks); i++) {
			struct json_object *t = json_object_array_get_idx(toks, i);

			if (json_object_object_get_ex(t, "type", &v) && !strcmp(json_object_get_string(v), LR_TOKEN_TYPE))
				*enrolled = true;
		}
	json_object_put(o);
	return 0;
}

/* ---- acting on a fired line: the daemon's and trigger's one code path ---- */

struct actor {
	const struct lr_tamper_config *c;
	bool poweroff_allowed;  /* trigger --no-poweroff: false */
	bool wait_command;      /* trigger waits for the command; the daemon does not */
	bool daemon;
	int result;             /* exit code of the last action */
};

static void run_command(const struct lr_tamper_line *l, bool wait)
{
	char name[96];
	pid_t pid;

	if (!l->command[0])
		return;
	lr_tamper_line_name(l, name, sizeof(name));
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		lr_error("cannot run %s: %s", l->command, strerror(errno));
		return;
	}
	if (pid == 0) {
		int fd = open("/dev/null", O_RDONLY);

		if (fd >= 0)
			dup2(fd, STDIN_FILENO);
		setenv("LOCKROOT_TAMPER_LINE", name, 1);
		setenv("LOCKROOT_TAMPER_MODE", lr_tamper_mode_name(l->mode), 1);
		signal(SIGCHLD, SIG_DFL);
		execl("/bin/sh", "sh", "-c", l->command, (char *)NULL);
		_exit(127);
	}
	lr_info("started %s (pid %d)", l->command, (int)pid);
	if (wait) {
		int status;

		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			lr_warn("%s exited with status %d", l->command, WEXITSTATUS(status));
	}
}

/* The armed volumes (state file), as device names. */
static unsigned armed_devices(char devs[][PATH_MAX], unsigned max)
{
	struct json_object *st = state_load(), *vols;
	unsigned n = 0;

	json_object_object_get_ex(st, "volumes", &vols);
	for (size_t i = 0; i < json_object_array_length(vols) && n < max; i++) {
		char buf[PATH_MAX];

		snprintf(devs[n++], PATH_MAX, "%s", volume_device(json_object_array_get_idx(vols, i), buf, sizeof(buf)));
	}
	json_object_put(st);
	return n;
}

static void power_off(bool daemon)
{
	kmsg("powering off now");
	sync();
	if (daemon || access("/run/systemd/system", F_OK) < 0) {
		reboot(RB_POWER_OFF);
		lr_error("cannot power off: %s", strerror(errno));
	}
	if (systemctl("poweroff", NULL, NULL) != 0)
		lr_error("systemctl poweroff failed");
}

static int act(unsigned idx, const struct timespec *edge, void *userdata)
{
	struct actor *a = userdata;
	const struct lr_tamper_line *l = &a->c->line[idx];
	char devs[16][PATH_MAX], name[96];
	const char *ptrs[16];
	unsigned n = armed_devices(devs, 16);
	struct lr_tamper_report rep;
	int r;

	lr_tamper_line_name(l, name, sizeof(name));
	for (unsigned i = 0; i < n; i++)
		ptrs[i] = devs[i];
	if (l->mode == LR_TAMPER_NOTIFY) {
		kmsg("TAMPER: line %s is active (%.1f ms after its edge): notify", name, lr_tamper_ms_since(edge));
		run_command(l, a->wait_command);
		for (unsigned i = 0; i < n; i++)
			lr_tamper_record(devs[i], l, a->daemon ? "daemon" : "trigger");
		a->result = 0;
		return 0;
	}
	kmsg("TAMPER: line %s is active: SELF-DESTRUCT of the keys of %u armed volume%s", name, n, n == 1 ? "" : "s");
	run_command(l, false);
	r = lr_tamper_destroy(ptrs, n, l->destroy_recovery, edge, &rep);
	kmsg("TAMPER: keys destroyed %.1f ms after the edge (%u keyslots, %u tokens on %u volumes; %u left alone: "
	     "not armed)", rep.ms_keyslots, rep.keyslots, rep.tokens, rep.volumes, rep.skipped);
	kmsg("TAMPER: HSM keys done %.1f ms after the edge (%u destroyed, %u backends without a key to destroy)%s",
	     rep.ms_hsm, rep.hsm_keys, rep.hsm_skipped, rep.failures ? "; SOME STEPS FAILED, see above" : "");
	for (unsigned i = 0; i < n; i++) {
		lr_log_demote(1);  /* an unarmed volume's token may be absent: nothing to record then */
		lr_tamper_record(devs[i], l, a->daemon ? "daemon" : "trigger");
		lr_log_demote(-1);
	}
	a->result = r < 0 ? LR_EXIT_FAILURE : 0;
	if (l->poweroff && a->poweroff_allowed)
		power_off(a->daemon);
	return 0;
}

/* ---- subcommands ---- */

static int load_config(const char *path, struct lr_tamper_config *c)
{
	_cleanup_free_ char *p = path ? NULL : lr_sysroot_path(LR_TAMPER_CONFIG_PATH);
	int r = lr_tamper_config_parse(path ? path : p, c);

	return r < 0 ? (r == -EINVAL || r == -ENOMSG || r == -EPERM ? LR_EXIT_USAGE : lr_exit_code(r)) : 0;
}

/* Devices to act on: the arguments, else every volume in /etc/crypttab that has a lockroot token. */
static int target_devices(int argc, char **argv, struct json_object *out)
{
	struct json_object *tab = json_object_new_array();

	for (int i = optind; i < argc; i++)
		json_object_array_add(out, json_object_new_string(argv[i]));
	if (optind < argc) {
		json_object_put(tab);
		return 0;
	}
	cli_crypttab_devices(tab);
	for (size_t i = 0; i < json_object_array_length(tab); i++) {
		const char *dev = json_object_get_string(json_object_array_get_idx(tab, i));
		char uuid[64];
		bool enrolled = false;

		lr_log_demote(1);
		if (volume_info(dev, uuid, sizeof(uuid), &enrolled) == 0 && enrolled)
			json_object_array_add(out, json_object_new_string(dev));
		lr_log_demote(-1);
	}
	json_object_put(tab);
	return 0;
}

enum { OPT_CONFIG = 256, OPT_FORCE, OPT_NO_START, OPT_JSON, OPT_LINE, OPT_NO_POWEROFF };
static const struct option options[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "no-start", no_argument, NULL, OPT_NO_START },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "line", required_argument, NULL, OPT_LINE },
	{ "no-poweroff", no_argument, NULL, OPT_NO_POWEROFF },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct opts {
	const char *config;
	const char *line;
	bool force, no_start, json, no_poweroff;
};

static void print_consequences(const struct lr_tamper_config *c)
{
	for (unsigned i = 0; i < c->n_lines; i++) {
		const struct lr_tamper_line *l = &c->line[i];
		char name[96];

		lr_tamper_line_name(l, name, sizeof(name));
		printf("  line %s: active %s, debounce %u ms, %s%s%s\n", name, l->active_low ? "low" : "high",
		       l->debounce_ms, lr_tamper_mode_name(l->mode), l->latched ? ", latched (checked at boot)" : "",
		       l->command[0] ? ", runs a command" : "");
		if (l->mode != LR_TAMPER_SELF_DESTRUCT)
			continue;
		if (l->destroy_recovery)
			printf("    when it fires, every lockroot keyslot AND every recovery keyslot of the armed volumes\n"
			       "    is destroyed: a volume with no other passphrase becomes UNREADABLE FOREVER.\n");
		else
			printf("    when it fires, every lockroot keyslot and the HSM keys are destroyed: the volumes\n"
			       "    then open only with their recovery key or another passphrase.\n");
		printf("    %s\n", l->poweroff ? "then the board powers off." : "the board stays on (poweroff = no).");
	}
}

static bool self_destruct(const struct lr_tamper_config *c)
{
	for (unsigned i = 0; i < c->n_lines; i++)
		if (c->line[i].mode == LR_TAMPER_SELF_DESTRUCT)
			return true;
	return false;
}

static int tamper_arm(int argc, char **argv, const struct opts *o)
{
	struct lr_tamper_config c;
	struct json_object *devs = json_object_new_array(), *st = NULL;
	int r, armed = 0;

	r = load_config(o->config, &c);
	if (r)
		goto out;
	for (unsigned i = 0; i < c.n_lines && !o->force; i++)
		if (lr_tamper_line_exists(&c.line[i]) < 0) {
			fprintf(stderr, "lockroot tamper arm: line %s:%u does not exist on this host; nothing was armed "
				"(--force arms anyway, for lines that appear later)\n", c.line[i].chip, c.line[i].offset);
			r = LR_EXIT_DEVICE;
			goto out;
		}
	target_devices(argc, argv, devs);
	if (json_object_array_length(devs) == 0) {
		fprintf(stderr, "lockroot tamper arm: no DEVICE given and no volume in /etc/crypttab has a lockroot token\n");
		r = LR_EXIT_NOT_ENROLLED;
		goto out;
	}
	st = state_load();
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		const char *dev = json_object_get_string(json_object_array_get_idx(devs, i));
		char uuid[64];
		bool enrolled;
		int k = volume_info(dev, uuid, sizeof(uuid), &enrolled);

		if (k == 0)
			k = lr_tamper_set(dev, &c, true);
		if (k < 0) {
			r = lr_exit_code(k);
			continue;
		}
		if (!enrolled)
			lr_warn("%s has no lockroot token: a self-destruct would find no HSM key to destroy there", dev);
		if (enrolled && self_destruct(&c)) {
			/* A TPM key sealed under the storage key derived from the TPM's seed cannot be
			 * destroyed inside the TPM; under lockroot's fuse it can (lockroot-enroll(8)). */
			int n = 0, f = lr_fuse_arm(dev, NULL, &n);

			if (f < 0)
				lr_warn("%s: its TPM keys could not be sealed under the TPM fuse: a self-destruct will "
					"destroy its keyslots and tokens but not the key inside the TPM", dev);
			else if (n > 0)
				printf("%s: %d TPM key%s sealed again under the TPM fuse (destroyed by a self-destruct).\n",
				       dev, n, n == 1 ? "" : "s");
		}
		state_update(st, dev, uuid, true);
		printf("Armed %s (LUKS UUID %s).\n", dev, uuid);
		armed++;
	}
	if (armed && state_save(st) < 0)
		r = LR_EXIT_FAILURE;
	if (armed) {
		printf("Tamper response:\n");
		print_consequences(&c);
	}
	if (armed && !o->no_start && have_systemd()) {
		/* a unit that failed while its GPIO chip was missing may be rate-limited: reset it */
		systemctl("reset-failed", UNIT, NULL);
		if (systemctl("enable", UNIT, NULL) != 0 || systemctl("restart", UNIT, NULL) != 0)
			lr_warn("could not enable and start %s: start it yourself (systemctl enable --now %s)", UNIT, UNIT);
		else
			printf("%s enabled and (re)started.\n", UNIT);
	} else if (armed && !o->no_start) {
		printf("Start the daemon: systemctl enable --now %s\n", UNIT);
	}
out:
	json_object_put(st);
	json_object_put(devs);
	return r;
}

/* The DEVICEs given, else the volumes of the state file (by their device names now). */
static void named_or_armed(int argc, char **argv, struct json_object *st, struct json_object *devs)
{
	struct json_object *vols = NULL;

	if (optind < argc) {
		for (int i = optind; i < argc; i++)
			json_object_array_add(devs, json_object_new_string(argv[i]));
		return;
	}
	if (!json_object_object_get_ex(st, "volumes", &vols))
		return;
	for (size_t i = 0; i < json_object_array_length(vols); i++) {
		char buf[PATH_MAX];

		json_object_array_add(devs, json_object_new_string(
			volume_device(json_object_array_get_idx(vols, i), buf, sizeof(buf))));
	}
}

static int tamper_disarm(int argc, char **argv)
{
	struct json_object *st = state_load(), *devs = json_object_new_array(), *vols;
	int r = 0;

	named_or_armed(argc, argv, st, devs);
	if (json_object_array_length(devs) == 0)
		printf("No armed volume.\n");
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		const char *dev = json_object_get_string(json_object_array_get_idx(devs, i));
		char uuid[64];
		bool enrolled;
		int k = volume_info(dev, uuid, sizeof(uuid), &enrolled);

		if (k == 0)
			k = lr_tamper_set(dev, NULL, false);
		if (k < 0) {
			r = lr_exit_code(k);
			continue;
		}
		state_update(st, dev, uuid, false);
		printf("Disarmed %s (the configuration stays in its header).\n", dev);
	}
	if (state_save(st) < 0)
		r = LR_EXIT_FAILURE;
	json_object_object_get_ex(st, "volumes", &vols);
	if (json_object_array_length(vols) == 0 && have_systemd()) {
		systemctl("disable", "--now", UNIT);
		printf("No armed volume left: %s stopped.\n", UNIT);
	}
	json_object_put(st);
	json_object_put(devs);
	return r;
}

static int daemon_pid(void)
{
	_cleanup_free_ char *path = lr_sysroot_path(LR_TAMPER_PID_PATH);
	FILE *f = path ? fopen(path, "re") : NULL;
	int pid = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1 || pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		pid = 0;
	fclose(f);
	return pid;
}

static const char *level_name(int v)
{
	return v == 1 ? "active" : v == 0 ? "inactive" : "unknown";
}

static int tamper_status(int argc, char **argv, const struct opts *o)
{
	struct json_object *out = json_object_new_object(), *lines = json_object_new_array();
	struct json_object *vols = json_object_new_array(), *devs = json_object_new_array(), *st = state_load(), *sv;
	_cleanup_free_ char *defpath = lr_sysroot_path(LR_TAMPER_CONFIG_PATH);
	const char *cpath = o->config ? o->config : defpath;
	struct lr_tamper_config c;
	int pid = daemon_pid(), r = 0;
	bool have_conf;

	lr_log_demote(o->config ? 0 : 1);  /* no configuration file is a state, not an error */
	have_conf = lr_tamper_config_parse(cpath, &c) == 0;
	lr_log_demote(o->config ? 0 : -1);
	if (o->config && !have_conf) {
		r = LR_EXIT_USAGE;
		goto out;
	}
	json_object_object_add(out, "config", json_object_new_string(cpath));
	json_object_object_add(out, "daemon", json_object_new_boolean(pid > 0));
	if (pid > 0)
		json_object_object_add(out, "daemon_pid", json_object_new_int(pid));
	if (have_conf) {
		struct json_object *arr = lr_tamper_config_json(&c);

		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			struct json_object *l = json_object_get(json_object_array_get_idx(arr, i));
			int v;

			lr_log_demote(1);
			/* a line the daemon holds cannot be requested again: it is "busy", not unknown */
			v = lr_tamper_line_read(&c.line[i]);
			lr_log_demote(-1);
			json_object_object_add(l, "level", json_object_new_string(v == -EBUSY ? "busy (held by the daemon)" :
										  level_name(v)));
			json_object_array_add(lines, l);
		}
		json_object_put(arr);
	}
	json_object_object_add(out, "lines", lines);
	lines = NULL;
	named_or_armed(argc, argv, st, devs);
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		const char *dev = json_object_get_string(json_object_array_get_idx(devs, i));
		struct json_object *v = json_object_new_object(), *tok = NULL, *x;
		bool armed = false;
		int k = lr_tamper_get(dev, &armed, NULL, &tok);

		json_object_object_add(v, "device", json_object_new_string(dev));
		if (k == -ENODATA) {
			json_object_object_add(v, "armed", json_object_new_boolean(false));
			json_object_object_add(v, "configured", json_object_new_boolean(false));
		} else if (k < 0) {
			json_object_object_add(v, "error", json_object_new_string(strerror(-k)));
			r = lr_exit_code(k);
		} else {
			json_object_object_add(v, "armed", json_object_new_boolean(armed));
			json_object_object_add(v, "configured", json_object_new_boolean(true));
			if (json_object_object_get_ex(tok, "lines", &x))
				json_object_object_add(v, "lines", json_object_get(x));
			if (json_object_object_get_ex(tok, "last_event", &x))
				json_object_object_add(v, "last_event", json_object_get(x));
		}
		json_object_put(tok);
		json_object_array_add(vols, v);
	}
	json_object_object_add(out, "volumes", vols);
	vols = NULL;
	if (o->json) {
		puts(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY));
		goto out;
	}
	printf("configuration: %s%s\n", cpath, have_conf ? "" : " (none)");
	json_object_object_get_ex(out, "lines", &sv);
	for (size_t i = 0; i < json_object_array_length(sv); i++) {
		struct json_object *l = json_object_array_get_idx(sv, i), *f;

		printf("  line %s:", json_object_get_string(json_object_object_get_ex(l, "line", &f) ? f : NULL));
		json_object_object_foreach(l, key, val)
			if (strcmp(key, "line"))
				printf(" %s=%s", key, json_object_get_string(val));
		printf("\n");
	}
	printf("daemon: %s\n", pid > 0 ? "running" : "not running");
	json_object_object_get_ex(out, "volumes", &sv);
	if (json_object_array_length(sv) == 0)
		printf("no armed volume\n");
	for (size_t i = 0; i < json_object_array_length(sv); i++) {
		struct json_object *v = json_object_array_get_idx(sv, i), *f, *e;

		json_object_object_get_ex(v, "device", &f);
		printf("%s: ", json_object_get_string(f));
		if (json_object_object_get_ex(v, "error", &e))
			printf("error: %s\n", json_object_get_string(e));
		else if (json_object_object_get_ex(v, "configured", &e) && !json_object_get_boolean(e))
			printf("no tamper configuration\n");
		else
			printf("%s\n", json_object_object_get_ex(v, "armed", &e) && json_object_get_boolean(e) ?
			       "armed" : "disarmed");
		if (json_object_object_get_ex(v, "last_event", &e))
			printf("  last event: %s\n", json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
	}
out:
	json_object_put(lines);
	json_object_put(vols);
	json_object_put(devs);
	json_object_put(st);
	json_object_put(out);
	return r;
}

static int write_pid(void)
{
	_cleanup_free_ char *path = lr_sysroot_path(LR_TAMPER_PID_PATH);
	FILE *f;

	if (!path)
		return -ENOMEM;
	(void)lr_mkdir_parents(path);
	f = fopen(path, "we");
	if (!f)
		return lr_error_code(-errno, "cannot write %s: %s", path, strerror(errno));
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	return 0;
}

static int tamper_watch(const struct opts *o)
{
	struct lr_tamper_config c;
	char devs[16][PATH_MAX];
	struct actor a = { .c = &c, .poweroff_allowed = true, .daemon = true };
	_cleanup_free_ char *pidpath = lr_sysroot_path(LR_TAMPER_PID_PATH);
	unsigned n;
	int r;

	daemon_mode = true;
	r = load_config(o->config, &c);
	if (r)
		return r;
	n = armed_devices(devs, 16);
	if (n == 0) {
		lr_info("no armed volume (lockroot tamper arm): nothing to watch for");
		return 0;
	}
	/* commands run in the background and are reaped by the kernel */
	signal(SIGCHLD, SIG_IGN);
	write_pid();
	for (unsigned i = 0; i < c.n_lines; i++) {
		char name[96];

		lr_tamper_line_name(&c.line[i], name, sizeof(name));
		lr_info("watching %s (active %s, debounce %u ms, %s) for %u armed volume%s", name,
			c.line[i].active_low ? "low" : "high", c.line[i].debounce_ms, lr_tamper_mode_name(c.line[i].mode),
			n, n == 1 ? "" : "s");
	}
	r = lr_tamper_watch(&c, act, &a);
	if (pidpath)
		unlink(pidpath);
	return r < 0 ? lr_exit_code(r) : 0;
}

static int tamper_trigger(const struct opts *o)
{
	struct lr_tamper_config c;
	struct actor a = { .c = &c, .poweroff_allowed = !o->no_poweroff, .wait_command = true };
	struct timespec now;
	unsigned idx = 0;
	int r;

	if (geteuid() != 0) {
		fprintf(stderr, "lockroot tamper trigger: root only\n");
		return LR_EXIT_USAGE;
	}
	r = load_config(o->config, &c);
	if (r)
		return r;
	if (o->line) {
		for (idx = 0; idx < c.n_lines; idx++) {
			char name[96];

			lr_tamper_line_name(&c.line[idx], name, sizeof(name));
			if (!strcmp(name, o->line))
				break;
		}
		if (idx == c.n_lines)
			return cli_usage_error("tamper trigger", "--line %s is not in the configuration", o->line);
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	act(idx, &now, &a);
	return a.result;
}

/* Exit codes of check (lockroot-tamper(8)). */
enum {
	CHECK_NOTHING = 0,       /* not armed, no latched line, or none active */
	CHECK_NOTIFIED = 20,     /* a notify line was active: recorded, unlocking goes on */
	CHECK_DESTROYED = 21,    /* a self-destruct line was active: the keys are destroyed */
	CHECK_UNREADABLE = 22,   /* a latched line could not be read: unlocking goes on */
};

static int tamper_check(int argc, char **argv)
{
	struct lr_tamper_config c;
	const char *dev;
	bool armed = false, unreadable = false;
	int r;

	if (optind + 1 != argc)
		return cli_usage_error("tamper check", "expected exactly one DEVICE");
	dev = argv[optind];
	lr_log_demote(1);
	r = lr_tamper_get(dev, &armed, &c, NULL);
	lr_log_demote(-1);
	if (r == -ENODATA || (r == 0 && !armed))
		return CHECK_NOTHING;
	if (r < 0) {
		lr_log_replay();
		return lr_exit_code(r);
	}
	for (unsigned i = 0; i < c.n_lines; i++) {
		const struct lr_tamper_line *l = &c.line[i];
		struct lr_tamper_report rep;
		char name[96];
		int v;

		if (!l->latched)
			continue;
		lr_tamper_line_name(l, name, sizeof(name));
		v = lr_tamper_line_read(l);
		if (v < 0) {
			lr_warn("TAMPER: the latched line %s of %s cannot be read (see above): not checked", name, dev);
			unreadable = true;
			continue;
		}
		if (v == 0)
			continue;
		if (l->mode == LR_TAMPER_NOTIFY) {
			lr_warn("**************************************************************");
			lr_warn("TAMPER: latched line %s is active: the enclosure was opened", name);
			lr_warn("**************************************************************");
			lr_tamper_record(dev, l, "boot");
			return CHECK_NOTIFIED;
		}
		lr_warn("TAMPER: latched line %s is active: SELF-DESTRUCT of the keys of %s", name, dev);
		{
			const char *one[] = { dev };

			r = lr_tamper_destroy(one, 1, l->destroy_recovery, NULL, &rep);
		}
		lr_tamper_record(dev, l, "boot");
		lr_warn("TAMPER: %u keyslots destroyed in %.1f ms, %u HSM keys destroyed%s: %s will not be unlocked "
			"by its HSM%s", rep.keyslots, rep.ms_keyslots, rep.hsm_keys,
			r < 0 ? " (SOME STEPS FAILED)" : "", dev,
			l->destroy_recovery ? ", nor by a recovery key" : "; only a recovery key or passphrase opens it");
		if (l->poweroff && rep.keyslots > 0) {
			lr_warn("TAMPER: powering off");
			sync();
			reboot(RB_POWER_OFF);
			lr_error("cannot power off: %s", strerror(errno));
		}
		return CHECK_DESTROYED;
	}
	return unreadable ? CHECK_UNREADABLE : CHECK_NOTHING;
}

int cmd_tamper(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *verb;
	int c;

	lr_set_log(tamper_log, NULL);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		help();
		return argc < 2 ? LR_EXIT_USAGE : 0;
	}
	verb = argv[1];
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_CONFIG: o.config = optarg; break;
		case OPT_FORCE: o.force = true; break;
		case OPT_NO_START: o.no_start = true; break;
		case OPT_JSON: o.json = true; break;
		case OPT_LINE: o.line = optarg; break;
		case OPT_NO_POWEROFF: o.no_poweroff = true; break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (!strcmp(verb, "arm"))
		return tamper_arm(argc, argv, &o);
	if (!strcmp(verb, "disarm"))
		return tamper_disarm(argc, argv);
	if (!strcmp(verb, "status"))
		return tamper_status(argc, argv, &o);
	if (optind < argc && (!strcmp(verb, "watch") || !strcmp(verb, "trigger")))
		return cli_usage_error("tamper", "%s takes no DEVICE", verb);
	if (!strcmp(verb, "watch"))
		return tamper_watch(&o);
	if (!strcmp(verb, "trigger"))
		return tamper_trigger(&o);
	if (!strcmp(verb, "check"))
		return tamper_check(argc, argv);
	return cli_usage_error("tamper", "unknown command '%s' (arm, disarm, status, watch, check, trigger)", verb);
}
