/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "config.h"

struct cli cli;

int lr_exit_code(int r)
{
	switch (r) {
	case 0:
		return LR_EXIT_OK;
	case -ENOENT:
	case -ENOTBLK:
	case -EMEDIUMTYPE:
		return LR_EXIT_DEVICE;
	case -ENODEV:
		return LR_EXIT_HSM_ABSENT;
	case -EKEYREJECTED:
	case -ENOKEY:
		return LR_EXIT_REFUSED;
	case -ENOANO:
		return LR_EXIT_PIN;
	case -EPERM:
		return LR_EXIT_PASSPHRASE;
	case -EBADMSG:
	case -EPROTONOSUPPORT:
		return LR_EXIT_TOKEN;
	case -ENOSPC:
		return LR_EXIT_NO_SLOT;
	case -EROFS:
		return LR_EXIT_READONLY;
	case -ENOMSG:
		return LR_EXIT_NOT_ENROLLED;
	case -EINVAL:
		return LR_EXIT_USAGE;
	default:
		return LR_EXIT_FAILURE;
	}
}

void cli_log(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (level == LR_LOG_DEBUG && !cli.verbose)
		return;
	if (level == LR_LOG_INFO && cli.quiet)
		return;
	fprintf(stderr, "lockroot: %s%s\n", level == LR_LOG_WARN ? "warning: " : "", msg);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "lockroot %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'lockroot %s --help'.\n", cmd);
	return LR_EXIT_USAGE;
}

int cli_read_tty(const char *tty, const char *prompt, size_t max, struct lr_secret **out)
{
	_cleanup_secret_ struct lr_secret *s = lr_secret_new(max + 1);
	struct termios old, quiet;
	bool restore = false;
	char c = 0;
	int fd;

	if (!s)
		return -ENOMEM;
	fd = open(tty, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return lr_error_code(-errno, "cannot open %s to ask: %s", tty, strerror(errno));
	if (tcgetattr(fd, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ICANON;
		restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
	}
	dprintf(fd, "%s", prompt);
	for (;;) {
		ssize_t k = read(fd, &c, 1);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || c == '\n' || c == '\r')
			break;
		if (s->len < max)
			s->data[s->len++] = (uint8_t)c;
	}
	c = 0;
	dprintf(fd, "\n");
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &old);
	close(fd);
	*out = s;
	s = NULL;
	return 0;
}

static int read_tty(const char *what, size_t max, struct lr_secret **out)
{
	char prompt[128];
	int r;

	if (access("/dev/tty", R_OK | W_OK) < 0)
		return lr_error_code(-ENOTTY, "no terminal to ask for %s: use --key-file", what);
	snprintf(prompt, sizeof(prompt), "Enter %s: ", what);
	r = cli_read_tty("/dev/tty", prompt, max, out);
	if (r == 0 && (*out)->len == 0) {
		lr_secret_freep(out);
		return lr_error_code(-EPERM, "no %s given", what);
	}
	return r;
}

int cli_read_passphrase(const char *key_file, const char *prompt, struct lr_secret **out)
{
	int r;

	if (!key_file)
		return read_tty(prompt, 512, out);
	if (strcmp(key_file, "-") == 0)
		r = lr_secret_read_fd(STDIN_FILENO, 8192, out);
	else
		r = lr_secret_read_file(key_file, 8192, out);
	if (r < 0)
		return lr_error_code(r == -ENOENT ? -EINVAL : r, "cannot read key file %s: %s", key_file, strerror(-r));
	return 0;
}

int cli_read_pin(const char *pin_file, struct lr_secret **out)
{
	int r;

	*out = NULL;
	if (!pin_file)
		return 0;
	r = lr_secret_read_file(pin_file, 256, out);
	if (r < 0)
		return lr_error_code(-EINVAL, "cannot read PIN file %s: %s", pin_file, strerror(-r));
	/* A PIN file written by echo has a newline that is not part of the PIN. */
	if ((*out)->len && (*out)->data[(*out)->len - 1] == '\n')
		(*out)->data[--(*out)->len] = 0;
	return 0;
}

int cli_hsm_setup(const char *cmd, const char *spec, const char *pcrs, const char *pin_file,
		  struct lr_hsm *hsm, struct lr_secret **pin)
{
	int r;

	if (!spec)
		return cli_usage_error(cmd, "--hsm is required (tpm2[:TCTI] or pkcs11:URI)");
	r = lr_hsm_parse(spec, hsm);
	if (r < 0)
		return lr_exit_code(r);
	if (strstr(spec, "pin-value="))
		lr_warn("a pin-value= on the command line can be read by other users (ps, /proc); "
			"prefer pin-source=file:PATH or --pin-file");
	if (pcrs) {
		if (strcmp(hsm->backend->name, "tpm2") != 0)
			return cli_usage_error(cmd, "--pcrs only applies to --hsm tpm2");
		if (lr_parse_uint_list(pcrs, 24, &hsm->pcr_mask) < 0)
			return cli_usage_error(cmd, "invalid --pcrs '%s' (e.g. 0,7)", pcrs);
	}
	r = cli_read_pin(pin_file, pin);
	if (r < 0)
		return lr_exit_code(r);
	hsm->pin = *pin;
	return 0;
}

int cli_bind_setup(const char *cmd, const char *list, uint32_t *mask, bool *is_default)
{
	(void)cmd;
	if (!list) {
		*is_default = true;
		*mask = 0;
		return 0;
	}
	return lr_bind_parse(list, mask, is_default) < 0 ? LR_EXIT_USAGE : 0;
}

int cli_parse_uint(const char *cmd, const char *opt, const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > UINT32_MAX)
		return cli_usage_error(cmd, "%s needs a number, not '%s'", opt, s);
	*out = (uint32_t)v;
	return 0;
}

void cli_show_recovery_key(const struct lr_secret *key, int keyslot)
{
	printf("\nRecovery key (keyslot %d). Write it down now: it is shown only this once and\n"
	       "is not stored anywhere. It opens the volume when the HSM cannot.\n\n"
	       "    %.*s\n\n", keyslot, (int)key->len, (const char *)key->data);
	fflush(stdout);
}

bool cli_confirm(const char *cmd, const char *question, const char *yes)
{
	char answer[16] = "";
	FILE *tty = fopen("/dev/tty", "r+");

	if (!tty) {
		fprintf(stderr, "lockroot %s: no terminal to confirm on; use --yes\n", cmd);
		return false;
	}
	fprintf(tty, "%s ", question);
	fflush(tty);
	if (!fgets(answer, sizeof(answer), tty))
		answer[0] = '\0';
	fclose(tty);
	answer[strcspn(answer, "\n")] = '\0';
	/* "y": y or yes in any case. Anything else (YES before destroying data) exactly. */
	if (strcmp(yes, "y") == 0)
		return strcasecmp(answer, "y") == 0 || strcasecmp(answer, "yes") == 0;
	return strcmp(answer, yes) == 0;
}

int cli_run(char *const argv[], bool quiet)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);

		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			if (quiet || cli.json)
				dup2(fd, STDOUT_FILENO);
			if (quiet)
				dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int cli_run_ok(char *const argv[], bool quiet)
{
	int r = cli_run(argv, quiet);

	if (r == 127)
		return lr_error_code(-ENOENT, "%s: command not found", argv[0]);
	if (r > 0)
		return lr_error_code(-EIO, "%s failed (exit status %d)", argv[0], r);
	return r;
}

/* json-c copies the key into its own buffers (the object's string and the printed text):
 * wipe both before they are freed. */
void cli_print_ready(struct json_object *o, const struct lr_secret *recovery)
{
	struct json_object *rk;
	const char *text;

	if (recovery)
		json_object_object_add(o, "recovery_key", json_object_new_string((const char *)recovery->data));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	printf("%s\n", text);
	fflush(stdout);
	explicit_bzero((char *)text, strlen(text));
	if (json_object_object_get_ex(o, "recovery_key", &rk))
		explicit_bzero((char *)json_object_get_string(rk), (size_t)json_object_get_string_len(rk));
	json_object_put(o);
}

#define WANTS_DIR "/etc/systemd/system/multi-user.target.wants"

int cli_enable_unit(const char *root, const char *unit)
{
	char path[PATH_MAX], target[PATH_MAX], dir[PATH_MAX];
	const char *r = root && strcmp(root, "/") ? root : "";

	/* another system (an image) has the unit where its package put it, not where ours is */
	static const char *const dirs[] = { LOCKROOT_UNIT_DIR, "/usr/lib/systemd/system", "/lib/systemd/system" };
	size_t i;

	for (i = 0; i < (*r ? LR_ELEMENTSOF(dirs) : 1); i++) {
		snprintf(target, sizeof(target), "%s/%s", dirs[i], unit);
		snprintf(path, sizeof(path), "%s%s", r, target);
		if (access(path, R_OK) == 0)
			break;
	}
	if (i == (*r ? LR_ELEMENTSOF(dirs) : 1)) {
		snprintf(path, sizeof(path), "%s%s/%s", r, LOCKROOT_UNIT_DIR, unit);
		return lr_error_code(-ENOPKG, "%s is missing: install the lockroot package", path);
	}
	snprintf(dir, sizeof(dir), "%s" WANTS_DIR, r);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", dir, strerror(errno));
	if (snprintf(path, sizeof(path), "%s/%s", dir, unit) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (symlink(target, path) < 0 && errno != EEXIST)
		return lr_error_code(-errno, "cannot create %s: %s", path, strerror(errno));
	return 0;
}

int cli_disable_unit(const char *root, const char *unit)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s" WANTS_DIR "/%s", root && strcmp(root, "/") ? root : "", unit);
	if (unlink(path) < 0 && errno != ENOENT)
		return lr_error_code(-errno, "cannot remove %s: %s", path, strerror(errno));
	return 0;
}

bool cli_same_device(const char *a, const char *b)
{
	struct stat x, y;

	if (stat(a, &x) < 0 || stat(b, &y) < 0)
		return false;
	if (S_ISBLK(x.st_mode) && S_ISBLK(y.st_mode))
		return x.st_rdev == y.st_rdev;
	return !S_ISBLK(x.st_mode) && !S_ISBLK(y.st_mode) && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}
