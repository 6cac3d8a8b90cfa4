/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared by the command files: exit codes, printing, passphrase input. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "lockroot.h"

/* Exit codes: documented in lockroot(8); the only place errors become exit codes is
 * lr_exit_code(). */
enum {
	LR_EXIT_OK = 0,
	LR_EXIT_FAILURE = 1,       /* anything not listed below */
	LR_EXIT_USAGE = 2,         /* bad command line */
	LR_EXIT_DEVICE = 3,        /* no such device, not LUKS2 (LUKS1, plain) */
	LR_EXIT_HSM_ABSENT = 4,    /* TPM / PKCS#11 token not found */
	LR_EXIT_REFUSED = 5,       /* HSM refused: host binding or PCRs differ, key not in HSM */
	LR_EXIT_PIN = 6,           /* PIN needed or wrong */
	LR_EXIT_PASSPHRASE = 7,    /* authorising passphrase or recovery key wrong */
	LR_EXIT_TOKEN = 8,         /* token corrupt or from a newer lockroot */
	LR_EXIT_NO_SLOT = 9,       /* no free keyslot or token */
	LR_EXIT_READONLY = 10,     /* device read-only */
	LR_EXIT_NOT_ENROLLED = 11, /* no lockroot token on the device */
};

/* Map a library error (-errno) to an exit code. */
int lr_exit_code(int r);

struct cli {
	bool verbose;
	bool quiet;
	bool json;
};
extern struct cli cli;

/* Log hook: messages to stderr, "lockroot: ..." prefix, debug only with --verbose. */
void cli_log(int level, const char *msg, void *userdata);
/* Print a usage error and return LR_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A passphrase from --key-file F ("-" = stdin) or, when F is NULL, from the terminal with
 * echo off ("prompt"). -errno, logged. */
int cli_read_passphrase(const char *key_file, const char *prompt, struct lr_secret **out);
/* Ask on terminal tty (opened, not made controlling) with echo off; at most max bytes, up
 * to a newline. An empty answer is a secret of length 0. */
int cli_read_tty(const char *tty, const char *prompt, size_t max, struct lr_secret **out);
/* A PIN from --pin-file F. NULL F: *out = NULL, 0. */
int cli_read_pin(const char *pin_file, struct lr_secret **out);

/* Commands: argc/argv start at the verb. Return an exit code. */
int cmd_enroll(int argc, char **argv);
int cmd_format(int argc, char **argv);
int cmd_unlock(int argc, char **argv);
int cmd_unenroll(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_fingerprint(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_setup_boot(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_provision(int argc, char **argv);
int cmd_reseal(int argc, char **argv);
int cmd_tamper(int argc, char **argv);
/* lockroot convert --via DEV ... (src/cmd-convert-via.c): argc/argv as for cmd_convert; also
 * --via-finish (lockroot-convert-via.service) and --via-status. */
int convert_via(int argc, char **argv);
/* The devices of /etc/crypttab (under LOCKROOT_SYSROOT; UUID= etc. as /dev/disk/by-* paths),
 * appended to list (a json array of strings). */
struct json_object;
int cli_crypttab_devices(struct json_object *list);
/* lockroot status: the state of the last migration, if any (text). */
void cli_print_migration(void);
/* lockroot status / convert --status: the state of a conversion through a staging drive, if
 * any (text, or JSON with cli.json). Prints nothing when there is none. */
void cli_print_conversion_via(void);
/* true when there is such a state */
bool cli_has_conversion_via(void);
/* lockroot status: the conversion in progress or last finished (text), if any. */
void cli_print_conversion(void);
/* The same as JSON (state + progress, as lockroot convert --status --json), or NULL. */
struct json_object *cli_conversion_json(void);

/* --hsm SPEC [--pcrs LIST] [--pin-file F] into an lr_hsm; *pin owns the PIN. Exit code. */
int cli_hsm_setup(const char *cmd, const char *spec, const char *pcrs, const char *pin_file,
		  struct lr_hsm *hsm, struct lr_secret **pin);
/* --bind LIST. Exit code. */
int cli_bind_setup(const char *cmd, const char *list, uint32_t *mask, bool *is_default);
/* Parse a non-negative number option. Exit code. */
int cli_parse_uint(const char *cmd, const char *opt, const char *s, uint32_t *out);
/* Ask question on the terminal; true when the answer is yes: exactly the string yes, or for
 * yes = "y" also Y/yes in any case. No terminal: false, with a hint to use --yes. */
bool cli_confirm(const char *cmd, const char *question, const char *yes);
/* Run a command with stdin from /dev/null; quiet: its stdout and stderr too (with --json its
 * stdout always: ours carries the JSON events). Returns its exit status (127: it could not be
 * started, 128+N: killed by signal N) or -errno when fork/wait failed. Logs nothing. */
int cli_run(char *const argv[], bool quiet);
/* cli_run(), with "not found" and a non-zero status logged: 0 or -ENOENT / -EIO. */
int cli_run_ok(char *const argv[], bool quiet);
/* Two names of one block device (st_rdev; udev links resolve), or of one file (images). */
bool cli_same_device(const char *a, const char *b);
/* Print the recovery key once, framed, on stdout. */
void cli_show_recovery_key(const struct lr_secret *key, int keyslot);
/* Print the JSON event o (consumed) with "recovery_key" (if any) on one line of stdout, then
 * wipe json-c's copies of the key. */
struct json_object;
void cli_print_ready(struct json_object *o, const struct lr_secret *recovery);
/* Enable / disable UNIT (in LOCKROOT_UNIT_DIR) for multi-user.target in the system at root
 * ("" or "/": the running one) by its wants/ link, as systemctl enable would. -errno, logged. */
int cli_enable_unit(const char *root, const char *unit);
int cli_disable_unit(const char *root, const char *unit);

/* Boot (cmd-unlock.c): load the TPM drivers that are modules; lockroot.timeout= from the
 * kernel command line (default 30 s); call attempt(userdata) until it returns anything but
 * -ENODEV (HSM absent) or timeout_s has passed, printing that it waits and, at the end, only
 * the last attempt's messages. what names the device waited for. */
void cli_load_tpm_drivers(void);
uint32_t cli_cmdline_timeout(void);
int cli_hsm_wait(const char *what, uint32_t timeout_s, int (*attempt)(void *userdata), void *userdata);

/* initramfs (cmd-setup-boot.c): run cmd ("update-initramfs -u -k all", split at spaces) in the
 * system at root (chroot unless "/"); check every ROOT/boot/initrd.img-* lists each of want
 * (substrings of lsinitramfs lines). -errno, logged. */
int cli_initramfs_rebuild(const char *root, const char *cmd);
/* cmd-convert.c: PARTUUID=, UUID=, LABEL= or a path, to the device node that has it now. */
int cli_resolve_spec(const char *spec, char *out, size_t len);
/* KEY=A,B on the kernel command line: its two halves (plain words). */
bool cli_cmdline_pair(const char *key, char *a, char *b, size_t len);
/* Remove every word starting with key from a command line (in place). */
void cli_drop_word(char *line, const char *key);
int cli_initramfs_verify(const char *root, const char *const *want, size_t n_want);
/* Each planned boot file change: "change PATH (original kept ...)" and its -/+ lines. */
struct lr_bootcfg_change;
void cli_print_changes(const struct lr_bootcfg_change *c, size_t n);
