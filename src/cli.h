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
/* lockroot status: the state of the last migration, if any (text). */
void cli_print_migration(void);

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
/* Print the recovery key once, framed, on stdout. */
void cli_show_recovery_key(const struct lr_secret *key, int keyslot);
