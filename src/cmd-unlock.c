/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lockroot unlock DEVICE [NAME]: activate through the lockroot token, check it, or act as a
 * crypttab keyscript (--stdout, or --keyscript at boot: wait for the HSM, else ask a person). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Debian's askpass knows plymouth, the console and the passfifo of remote unlocking. */
#define ASKPASS "/lib/cryptsetup/askpass"
#define DEFAULT_TIMEOUT_S 30
#define POLL_MS 250
#define TYPED_MAX 512

static void help(void)
{
	printf("Usage: lockroot unlock DEVICE [NAME] [OPTIONS]\n\n"
	       "Unlock the LUKS2 volume DEVICE through its lockroot token and activate it as\n"
	       "/dev/mapper/NAME.\n\n"
	       "  --test           only check that the token unlocks the volume (no NAME, no device-mapper)\n"
	       "  --stdout         keyscript mode for /etc/crypttab: write the key to standard output,\n"
	       "                   which must be a pipe\n"
	       "  --keyscript      boot mode (/usr/lib/lockroot/keyscript): as --stdout, but wait for the\n"
	       "                   HSM, and when it cannot unlock say why and ask for the recovery key or\n"
	       "                   a passphrase instead; with CRYPTTAB_TRIED > 0 ask at once\n"
	       "  --timeout S      --keyscript: wait at most S seconds for the HSM (default: lockroot.timeout=\n"
	       "                   on the kernel command line, else %d)\n"
	       "  --prompt-tty TTY --keyscript: ask on TTY instead of through %s or /dev/console\n"
	       "  --token ID       use only this token\n"
	       "  --hsm SPEC       use this TCTI / PKCS#11 URI instead of the one stored in the token\n"
	       "  --pin-file F     PKCS#11 user PIN (asked on the terminal when needed and none is given)\n"
	       "  --readonly       activate read-only\n"
	       "  --allow-discards pass discards through to the device\n", DEFAULT_TIMEOUT_S, ASKPASS);
}

enum {
	OPT_TEST = 256, OPT_STDOUT, OPT_KEYSCRIPT, OPT_TIMEOUT, OPT_PROMPT_TTY, OPT_TOKEN, OPT_HSM,
	OPT_PIN_FILE, OPT_READONLY, OPT_DISCARD,
};

static const struct option options[] = {
	{ "test", no_argument, NULL, OPT_TEST },
	{ "stdout", no_argument, NULL, OPT_STDOUT },
	{ "keyscript", no_argument, NULL, OPT_KEYSCRIPT },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "prompt-tty", required_argument, NULL, OPT_PROMPT_TTY },
	{ "token", required_argument, NULL, OPT_TOKEN },
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "readonly", no_argument, NULL, OPT_READONLY },
	{ "allow-discards", no_argument, NULL, OPT_DISCARD },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct keyscript {
	bool on;
	bool have_timeout;
	uint32_t timeout;          /* seconds */
	const char *prompt_tty;    /* NULL: askpass, else /dev/console */
};

static int write_key(const struct lr_secret *key)
{
	size_t n = 0;

	while (n < key->len) {
		ssize_t k = write(STDOUT_FILENO, key->data + n, key->len - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return LR_EXIT_FAILURE;
		n += (size_t)k;
	}
	return 0;
}

/* The key goes to a pipe (cryptsetup reading a keyscript) and nowhere else: not to a
 * terminal, where it would be shown, nor to a file, where it would outlive the boot. */
static int stdout_is_pipe(void)
{
	struct stat st;

	return fstat(STDOUT_FILENO, &st) == 0 && S_ISFIFO(st.st_mode);
}

/* ---- keyscript: waiting for the HSM ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* lockroot.timeout=N from the kernel command line (the last one wins, as for the kernel's
 * own parameters); read through LOCKROOT_SYSROOT so that tests can present one. */
uint32_t cli_cmdline_timeout(void)
{
	_cleanup_free_ char *cmdline = NULL;
	uint32_t t = DEFAULT_TIMEOUT_S;
	size_t len;
	char *save = NULL;

	if (lr_sysroot_read("/proc/cmdline", &cmdline, &len) < 0)
		return t;
	for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		char *end;
		unsigned long v;

		if (strncmp(w, "lockroot.timeout=", 17) != 0)
			continue;
		errno = 0;
		v = strtoul(w + 17, &end, 10);
		if (errno || end == w + 17 || *end || v > 3600)
			fprintf(stderr, "lockroot: ignoring '%s' (seconds, at most 3600)\n", w);
		else
			t = (uint32_t)v;
	}
	return t;
}

/* Run a helper with nothing of ours: its output must never reach the key pipe. */
static int run_quiet(char *const argv[])
{
	return cli_run(argv, true) == 0 ? 0 : -EIO;
}

/* TPM drivers that are modules rather than built in; whichever is absent just fails. */
void cli_load_tpm_drivers(void)
{
	static const char *const drivers[] = { "tpm_tis", "tpm_crb", "tpm_tis_spi", "tpm_tis_i2c" };

	for (size_t i = 0; i < LR_ELEMENTSOF(drivers); i++) {
		char *argv[] = { (char *)"modprobe", (char *)"-q", (char *)drivers[i], NULL };

		(void)run_quiet(argv);
	}
}

/* While polling (this log hook is installed only then), each attempt's messages are held
 * back and only the last attempt's are printed, so that a wait of 30 s does not fill the
 * console with "no TPM found". */
static struct {
	size_t n;
	int level[16];
	char *msg[16];
} held;

static void held_log(int level, const char *msg, void *userdata)
{
	(void)userdata;
	if (held.n < LR_ELEMENTSOF(held.msg) && (held.msg[held.n] = strdup(msg)))
		held.level[held.n++] = level;
}

/* The last error or warning shown: the reason a trial boot records. */
static char last_reason[512];

static void held_drop(bool print)
{
	for (size_t i = 0; i < held.n; i++) {
		if (print)
			cli_log(held.level[i], held.msg[i], NULL);
		if (print && held.level[i] >= LR_LOG_WARN)
			snprintf(last_reason, sizeof(last_reason), "%s", held.msg[i]);
		free(held.msg[i]);
	}
	held.n = 0;
}

int cli_hsm_wait(const char *what, uint32_t timeout_s, int (*attempt)(void *userdata), void *userdata)
{
	uint64_t end = now_ms() + (uint64_t)timeout_s * 1000;
	bool waited = false;
	int r;

	lr_set_log(held_log, NULL);
	for (;;) {
		uint64_t now;

		r = attempt(userdata);
		now = now_ms();
		if (r != -ENODEV || now >= end)
			break;
		if (!waited) {
			fprintf(stderr, "lockroot: waiting for the TPM/HSM of %s (up to %u s) ...\n", what, timeout_s);
			waited = true;
		}
		held_drop(false);
		nap_ms(end - now < POLL_MS ? end - now : POLL_MS);
	}
	lr_set_log(cli_log, NULL);
	held_drop(true);
	if (r == -ENODEV && waited)
		fprintf(stderr, "lockroot: gave up waiting for the TPM/HSM after %u s\n", timeout_s);
	return r;
}

struct unlock_attempt {
	const struct lr_unlock_params *p;
	struct lr_secret **key;
};

static int try_unlock(void *userdata)
{
	struct unlock_attempt *a = userdata;

	return lr_unlock(a->p, a->key);
}

/* Unlock, retrying while the HSM is absent (-ENODEV) until timeout_s has passed. */
static int unlock_waiting(const struct lr_unlock_params *p, uint32_t timeout_s, struct lr_secret **key)
{
	struct unlock_attempt a = { p, key };

	return cli_hsm_wait(p->device, timeout_s, try_unlock, &a);
}

/* ---- keyscript: asking a person ---- */

static void strip_newline(struct lr_secret *s)
{
	while (s->len && (s->data[s->len - 1] == '\n' || s->data[s->len - 1] == '\r'))
		s->data[--s->len] = 0;
}

static int ask_askpass(const char *prompt, struct lr_secret **out)
{
	_cleanup_secret_ struct lr_secret *s = NULL;
	int fd[2], status, r;
	pid_t pid;

	if (pipe2(fd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(fd[0]);
		close(fd[1]);
		return r;
	}
	if (pid == 0) {
		dup2(fd[1], STDOUT_FILENO);
		execl(ASKPASS, ASKPASS, prompt, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	r = lr_secret_read_fd(fd[0], TYPED_MAX, &s);
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (r < 0)
		return lr_error_code(r, "cannot read from %s: %s", ASKPASS, strerror(-r));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return lr_error_code(-EPERM, "%s failed: nothing was typed", ASKPASS);
	strip_newline(s);
	*out = s;
	s = NULL;
	return 0;
}

/* Ask, and write to stdout the normalised recovery key or the passphrase as typed. */
static int ask_and_write(const struct keyscript *ks, const char *name)
{
	_cleanup_secret_ struct lr_secret *typed = NULL, *key = NULL;
	char prompt[256];
	int r;

	snprintf(prompt, sizeof(prompt), "Enter the recovery key or a passphrase for %s: ", name);
	if (!ks->prompt_tty && access(ASKPASS, X_OK) == 0)
		r = ask_askpass(prompt, &typed);
	else
		/* The console of the initramfs is nobody's controlling terminal: not /dev/tty. */
		r = cli_read_tty(ks->prompt_tty ? ks->prompt_tty : "/dev/console", prompt, TYPED_MAX, &typed);
	if (r < 0)
		return r;
	if (typed->len == 0)
		return lr_error_code(-EPERM, "no recovery key or passphrase was typed for %s", name);
	/* typed is NUL-terminated: its capacity is one more than it may hold, and zeroed. */
	if (lr_recovery_key_normalize((const char *)typed->data, &key) < 0) {
		key = typed;
		typed = NULL;
	}
	return write_key(key) == 0 ? 0 : -EIO;
}

/* lockroot.tryboot=DEV on the kernel command line: the trial boot of a migrated root
 * (lockroot migrate). Nobody is at the keyboard, and the firmware boots the old root next
 * time: so record why on the boot partition DEV and reboot instead of asking. */
static bool cmdline_tryboot(char *dev, size_t len)
{
	_cleanup_free_ char *cmdline = NULL;
	char *save = NULL;
	size_t n;
	bool found = false;

	if (lr_sysroot_read("/proc/cmdline", &cmdline, &n) < 0)
		return false;
	for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
		if (strncmp(w, "lockroot.tryboot=", 17) == 0) {
			snprintf(dev, len, "%s", w + 17);
			found = true;
		}
	return found;
}

static void tryboot_record(const char *dev, const char *line)
{
	const char *dir = "/run/lockroot-tryboot";
	char path[256];
	int fd;

	lr_load_vfat();
	mkdir(dir, 0700);
	if (strcmp(dev, "none") == 0 || mount(dev, dir, "vfat", 0, NULL) < 0) {
		fprintf(stderr, "lockroot: cannot record the failure on %s: %s\n", dev, strerror(errno));
		return;
	}
	snprintf(path, sizeof(path), "%s/lockroot-tryboot.log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write(fd, line, strlen(line)) < 0 || fsync(fd) < 0)
			fprintf(stderr, "lockroot: cannot write %s: %s\n", path, strerror(errno));
		close(fd);
	}
	umount(dir);
}

static int tryboot_fail(const char *dev, const char *name, const char *why)
{
	char line[1024];

	snprintf(line, sizeof(line), "%s was not unlocked in the trial boot: %s\n", name, why);
	fprintf(stderr, "lockroot: %s", line);
	tryboot_record(dev, line);
	fprintf(stderr, "lockroot: trial boot failed: rebooting (the firmware starts the old root)\n");
	sync();
	reboot(RB_AUTOBOOT);
	return lr_error_code(-EIO, "cannot reboot: %s", strerror(errno));
}

static int run_keyscript(const struct keyscript *ks, const struct lr_unlock_params *p)
{
	char tryboot_dev[128];
	bool tryboot = cmdline_tryboot(tryboot_dev, sizeof(tryboot_dev));
	_cleanup_secret_ struct lr_secret *key = NULL;
	const char *name = getenv("CRYPTTAB_NAME");
	const char *tried = getenv("CRYPTTAB_TRIED");
	int r;

	if (!name || !*name)
		name = p->device;
	/* cryptroot calls us again after cryptsetup rejected a key: what the HSM said will
	 * not have changed, so only a person can help now. */
	if (tried && strtoul(tried, NULL, 10) > 0) {
		if (tryboot)
			return tryboot_fail(tryboot_dev, name, "cryptsetup rejected the key from the TPM/HSM");
		fprintf(stderr, "lockroot: the previous key for %s was rejected; not asking the TPM/HSM again\n", name);
		return ask_and_write(ks, name);
	}
	cli_load_tpm_drivers();
	r = unlock_waiting(p, ks->have_timeout ? ks->timeout : cli_cmdline_timeout(), &key);
	if (r >= 0)
		return write_key(key) == 0 ? 0 : -EIO;
	if (tryboot)
		return tryboot_fail(tryboot_dev, name, *last_reason ? last_reason : strerror(-r));
	fprintf(stderr, "lockroot: %s was not unlocked by its TPM/HSM (see above); "
		"falling back to the recovery key\n", name);
	return ask_and_write(ks, name);
}

int cmd_unlock(int argc, char **argv)
{
	_cleanup_secret_ struct lr_secret *pin = NULL, *key = NULL;
	struct lr_unlock_params p = { .token = -1 };
	struct keyscript ks = { 0 };
	struct lr_hsm hsm = { 0 };
	const char *spec = NULL, *pin_file = NULL;
	bool test = false, to_stdout = false;
	uint32_t token;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case OPT_TEST: test = true; break;
		case OPT_STDOUT: to_stdout = true; break;
		case OPT_KEYSCRIPT: ks.on = to_stdout = true; break;
		case OPT_PROMPT_TTY: ks.prompt_tty = optarg; break;
		case OPT_HSM: spec = optarg; break;
		case OPT_PIN_FILE: pin_file = optarg; break;
		case OPT_READONLY: p.readonly = true; break;
		case OPT_DISCARD: p.discard = true; break;
		case OPT_TIMEOUT:
			if ((r = cli_parse_uint("unlock", "--timeout", optarg, &ks.timeout)))
				return r;
			ks.have_timeout = true;
			break;
		case OPT_TOKEN:
			if ((r = cli_parse_uint("unlock", "--token", optarg, &token)))
				return r;
			p.token = (int)token;
			break;
		case 'h': help(); return 0;
		default: return LR_EXIT_USAGE;
		}
	}
	if (optind >= argc || argc - optind > 2)
		return cli_usage_error("unlock", "expected DEVICE [NAME]");
	p.device = argv[optind];
	p.name = argc - optind == 2 ? argv[optind + 1] : NULL;
	if (!*p.device)
		return cli_usage_error("unlock", "DEVICE is empty (is CRYPTTAB_SOURCE set?)");
	if (test && to_stdout)
		return cli_usage_error("unlock", "--test excludes --stdout and --keyscript");
	if ((test || to_stdout) && p.name)
		return cli_usage_error("unlock", "NAME makes no sense with --test, --stdout or --keyscript");
	if (!test && !to_stdout && !p.name)
		return cli_usage_error("unlock", "NAME is needed to activate (or use --test)");
	if (!ks.on && (ks.have_timeout || ks.prompt_tty))
		return cli_usage_error("unlock", "--timeout and --prompt-tty only apply to --keyscript");
	if (to_stdout && !stdout_is_pipe()) {
		fprintf(stderr, "lockroot unlock: --stdout writes the key only to a pipe (a crypttab keyscript), "
			"and standard output is not one\n");
		return LR_EXIT_USAGE;
	}
	if (spec) {
		r = lr_hsm_parse(spec, &hsm);
		if (r < 0)
			return lr_exit_code(r);
	}
	r = cli_read_pin(pin_file, &pin);
	if (r < 0)
		goto out;
	hsm.pin = pin;
	p.hsm_override = &hsm;
	if (ks.on) {
		r = run_keyscript(&ks, &p);
		goto out;
	}
	r = lr_unlock(&p, to_stdout ? &key : NULL);
	if (r == -ENOANO && !pin_file && !to_stdout && isatty(STDIN_FILENO)) {
		r = cli_read_passphrase(NULL, "the HSM PIN", &pin);
		if (r >= 0) {
			hsm.pin = pin;
			r = lr_unlock(&p, NULL);
		}
	}
	if (r < 0)
		goto out;
	if (to_stdout) {
		r = write_key(key);
		goto out;
	}
	if (!cli.quiet && p.name)
		fprintf(stderr, "lockroot: %s activated as /dev/mapper/%s (keyslot %d)\n", p.device, p.name, r);
	else if (!cli.quiet)
		fprintf(stderr, "lockroot: %s unlocks through its lockroot token (keyslot %d)\n", p.device, r);
	r = 0;
out:
	lr_hsm_done(&hsm);
	return r < 0 ? lr_exit_code(r) : r;
}
