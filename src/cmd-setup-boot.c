/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lockroot setup-boot [DEVICE] --hsm SPEC: turn on unattended HSM unlock at boot for a root
 * that is already LUKS2: enroll (unless a lockroot token exists), crypttab with lockroot's
 * keyscript, fstab, cmdline.txt/config.txt on a Pi, then the initramfs of every kernel,
 * checked to contain lockroot. --dry-run prints every change and stops.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bootcfg.h"
#include "cli.h"
#include "rootdev.h"

#define KEYSCRIPT "/usr/lib/lockroot/keyscript"

static void help(void)
{
	printf("Usage: lockroot setup-boot [DEVICE] --hsm SPEC [OPTIONS]\n\n"
	       "Make the LUKS2 root DEVICE (default: the one under the running /) unlock at boot\n"
	       "through the HSM: enroll it unless it has a lockroot token, point /etc/crypttab at\n"
	       "lockroot's keyscript, root= in cmdline.txt and the initramfs line in config.txt\n"
	       "(Raspberry Pi), and rebuild the initramfs of every kernel.\n\n"
	       "  --hsm SPEC          tpm2[:TCTI] or pkcs11:URI (see lockroot enroll)\n"
	       "  --bind LIST, --pcrs LIST, --pin-file F, --recovery-key, --key-file F\n"
	       "                      as for lockroot enroll\n"
	       "  --name NAME         /dev/mapper/NAME (default: the current name, else cryptroot)\n"
	       "  --root DIR          the system to configure is mounted at DIR (default /)\n"
	       "  --no-initramfs      do not rebuild the initramfs (print the command instead)\n"
	       "  --dry-run           print what would be done, change nothing\n"
	       "  -y, --yes           do not ask before changing anything\n");
}

enum { OPT_HSM = 256, OPT_BIND, OPT_PCRS, OPT_PIN_FILE, OPT_RECOVERY, OPT_KEY_FILE, OPT_NAME, OPT_ROOT,
       OPT_NO_INITRAMFS, OPT_DRY_RUN };

static const struct option options[] = {
	{ "hsm", required_argument, NULL, OPT_HSM },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "pcrs", required_argument, NULL, OPT_PCRS },
	{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
	{ "recovery-key", no_argument, NULL, OPT_RECOVERY },
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "root", required_argument, NULL, OPT_ROOT },
	{ "no-initramfs", no_argument, NULL, OPT_NO_INITRAMFS },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "yes", no_argument, NULL, 'y' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

struct setup {
	const char *device, *name, *root, *hsm_spec, *pcrs, *bind, *pin_file, *key_file;
	bool recovery, no_initramfs, dry_run, yes;
	char *owned_device, *owned_name;
	char uuid[64];
	int token;              /* existing lockroot token, -1: enroll */
	char *initramfs_cmd;    /* shell-free argv joined for display */
};

/* DEVICE and NAME from the running root when not given. */
static int find_root(struct setup *s)
{
	struct lr_rootdev rd;
	int r;

	if (s->device && s->name)
		return 0;
	r = lr_rootdev_find(&rd);
	if (r < 0)
		return r;
	if (!s->device) {
		if (!rd.dm_name || !rd.backing) {
			r = lr_error_code(-EMEDIUMTYPE, "/ is mounted from %s, which is not an encrypted volume: "
					  "encrypt it first (lockroot convert, lockroot migrate) or name the LUKS2 DEVICE",
					  rd.source);
			goto out;
		}
		s->device = s->owned_device = strdup(rd.backing);
	}
	if (!s->name && rd.dm_name && rd.backing && strcmp(rd.backing, s->device) == 0)
		s->name = s->owned_name = strdup(rd.dm_name);
out:
	lr_rootdev_done(&rd);
	if (!s->name)
		s->name = "cryptroot";
	return r;
}

/* UUID and an existing lockroot token, from the header. */
static int inspect_volume(struct setup *s)
{
	struct json_object *st = NULL, *v, *tokens;
	int r;

	r = lr_status(s->device, &st);
	if (r < 0)
		return r;
	s->token = -1;
	if (json_object_object_get_ex(st, "uuid", &v))
		snprintf(s->uuid, sizeof(s->uuid), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(st, "tokens", &tokens))
		for (size_t i = 0; i < json_object_array_length(tokens) && s->token < 0; i++) {
			struct json_object *t = json_object_array_get_idx(tokens, i), *type, *id;

			if (json_object_object_get_ex(t, "type", &type) &&
			    strcmp(json_object_get_string(type), LR_TOKEN_TYPE) == 0 &&
			    json_object_object_get_ex(t, "id", &id))
				s->token = json_object_get_int(id);
		}
	json_object_put(st);
	return 0;
}

static char *root_path(const struct setup *s, const char *path)
{
	char *p;

	if (asprintf(&p, "%s%s", strcmp(s->root, "/") ? s->root : "", path) < 0)
		return NULL;
	return p;
}

static bool root_has(const struct setup *s, const char *path)
{
	_cleanup_free_ char *p = root_path(s, path);

	return p && access(p, F_OK) == 0;
}

/* Which initramfs tool the system uses, and that lockroot's hook is there for it. */
static int choose_initramfs(struct setup *s)
{
	if (root_has(s, "/usr/sbin/update-initramfs")) {
		if (!root_has(s, "/usr/share/initramfs-tools/hooks/lockroot"))
			return lr_error_code(-ENOPKG, "lockroot's initramfs-tools hook is not installed in %s "
					     "(/usr/share/initramfs-tools/hooks/lockroot): install the lockroot package",
					     s->root);
		s->initramfs_cmd = strdup("update-initramfs -u -k all");
	} else if (root_has(s, "/usr/bin/dracut")) {
		if (!root_has(s, "/usr/lib/dracut/modules.d/90lockroot/module-setup.sh"))
			return lr_error_code(-ENOPKG, "lockroot's dracut module is not installed in %s", s->root);
		s->initramfs_cmd = strdup("dracut --regenerate-all --force");
	} else {
		return lr_error_code(-ENOPKG, "%s has neither initramfs-tools nor dracut: the root cannot be "
				     "unlocked at boot without an initramfs", s->root);
	}
	if (!root_has(s, KEYSCRIPT))
		return lr_error_code(-ENOPKG, "%s is missing in %s: install the lockroot package", KEYSCRIPT, s->root);
	return s->initramfs_cmd ? 0 : -ENOMEM;
}

/* Lines of a that are not in b, printed with a prefix: enough of a diff for small files. */
static void print_lines_missing(const char *a, const char *b, char mark)
{
	const char *line = a;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		const char *p = b;
		bool found = false;

		while (p && *p && !found) {
			const char *e = strchr(p, '\n');
			size_t m = e ? (size_t)(e - p) : strlen(p);

			found = m == n && strncmp(p, line, n) == 0;
			p = e ? e + 1 : NULL;
		}
		if (!found)
			printf("      %c %.*s\n", mark, (int)n, line);
		line = end ? end + 1 : NULL;
	}
}

void cli_print_changes(const struct lr_bootcfg_change *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		printf("  - %s %s%s\n", c[i].old_text ? "change" : "create", c[i].path,
		       c[i].old_text ? " (original kept as " LR_BOOTCFG_BACKUP_SUFFIX ")" : "");
		print_lines_missing(c[i].old_text ? c[i].old_text : "", c[i].new_text, '-');
		print_lines_missing(c[i].new_text, c[i].old_text ? c[i].old_text : "", '+');
	}
}

static void print_plan(const struct setup *s, const struct lr_bootcfg_change *c, size_t n)
{
	printf("Plan for %s (/dev/mapper/%s, UUID %s):\n", s->device, s->name, s->uuid);
	if (s->token >= 0)
		printf("  - keep lockroot token %d (already enrolled)\n", s->token);
	else
		printf("  - enroll: new keyslot locked by %s, lockroot token in the header%s\n", s->hsm_spec,
		       s->recovery ? ", and a recovery key" : "");
	cli_print_changes(c, n);
	if (n == 0)
		printf("  - boot configuration already points at /dev/mapper/%s: no file changes\n", s->name);
	if (strcmp(s->root, "/") == 0)
		printf("  - %s: %s\n", s->no_initramfs ? "then run yourself" : "rebuild the initramfs", s->initramfs_cmd);
	else
		printf("  - %s: chroot %s %s\n", s->no_initramfs ? "then run yourself" : "rebuild the initramfs",
		       s->root, s->initramfs_cmd);
}

static int plan_files(const struct setup *s, struct lr_bootcfg_change **c, size_t *n)
{
	struct lr_bootcfg_info info = { 0 };
	_cleanup_free_ char *source = NULL;
	struct lr_bootcfg cfg = {
		.root = s->root,
		.name = s->name,
		.crypttab_options = "luks,discard,initramfs,keyscript=" KEYSCRIPT,
		.firmware_optional = true,
	};
	int r;

	if (asprintf(&source, "UUID=%s", s->uuid) < 0)
		return -ENOMEM;
	cfg.source = source;
	r = lr_bootcfg_inspect(s->root, &info);
	if (r < 0)
		return r;
	/* A Pi boots the initramfs config.txt names; keep the name already there. */
	if (info.boot_dir && !info.auto_initramfs)
		cfg.initramfs = info.initramfs ? info.initramfs : "initrd.img";
	r = lr_bootcfg_plan(&cfg, c, n);
	lr_bootcfg_info_done(&info);
	return r;
}

int cli_initramfs_rebuild(const char *root, const char *command)
{
	_cleanup_free_ char *cmd = strdup(command);
	char *argv[12];
	int argc = 0, status;
	pid_t pid;

	if (!cmd)
		return -ENOMEM;
	if (strcmp(root, "/")) {
		argv[argc++] = (char *)"chroot";
		argv[argc++] = (char *)root;
	}
	for (char *w = strtok(cmd, " "); w && argc < 11; w = strtok(NULL, " "))
		argv[argc++] = w;
	argv[argc] = NULL;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = cli.json ? open("/dev/null", O_WRONLY) : -1;

		/* --json: our stdout carries the JSON events */
		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return lr_error_code(-EIO, "'%s' failed (exit status %d)", command,
				     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}

static int run_initramfs(const struct setup *s)
{
	return cli_initramfs_rebuild(s->root, s->initramfs_cmd);
}

/* Every initramfs must carry lockroot: a board whose initramfs lacks it cannot unlock. */
int cli_initramfs_verify(const char *root, const char *const *want, size_t n_want)
{
	_cleanup_free_ char *pattern = NULL;
	bool chroot_tool = false;
	glob_t g = { 0 };
	int r = 0;

	if (asprintf(&pattern, "%s/boot/initrd.img-*", strcmp(root, "/") ? root : "") < 0)
		return -ENOMEM;
	if (glob(pattern, 0, NULL, &g) != 0)
		return lr_error_code(-ENOENT, "no initramfs found (%s)", pattern);
	if (strcmp(root, "/")) {
		_cleanup_free_ char *tool = NULL;

		chroot_tool = asprintf(&tool, "%s/usr/bin/lsinitramfs", root) > 0 && access(tool, X_OK) == 0;
	}
	for (size_t i = 0; i < g.gl_pathc && r == 0; i++) {
		char cmd[2 * PATH_MAX + 64], line[512];
		bool found[16] = { 0 };
		FILE *f;

		/* another system's root (an image): its own lsinitramfs, which knows its compressors */
		if (strcmp(root, "/") && chroot_tool)
			snprintf(cmd, sizeof(cmd), "chroot '%s' lsinitramfs '%s' 2>/dev/null", root,
				 g.gl_pathv[i] + strlen(root));
		else
			snprintf(cmd, sizeof(cmd), "lsinitramfs '%s' 2>/dev/null", g.gl_pathv[i]);
		f = popen(cmd, "r");
		while (f && fgets(line, sizeof(line), f))
			for (size_t k = 0; k < n_want && k < LR_ELEMENTSOF(found); k++)
				found[k] |= strstr(line, want[k]) != NULL;
		if (f)
			pclose(f);
		for (size_t k = 0; k < n_want && k < LR_ELEMENTSOF(found) && r == 0; k++)
			if (!found[k])
				r = lr_error_code(-EIO, "%s does not contain %s: this kernel could not boot the root",
						  g.gl_pathv[i], want[k]);
		if (r == 0)
			lr_info("%s contains lockroot", g.gl_pathv[i]);
	}
	globfree(&g);
	return r;
}

static int verify_initramfs(const struct setup *s)
{
	static const char *const want[] = { "lockroot" };

	return cli_initramfs_verify(s->root, want, LR_ELEMENTSOF(want));
}

static int do_enroll(const struct setup *s)
{
	_cleanup_secret_ struct lr_secret *pass = NULL, *pin = NULL;
	struct lr_enroll_params p = { .device = s->device, .recovery_key = s->recovery };
	struct lr_enroll_result res = { 0 };
	struct lr_hsm hsm = { 0 };
	int r;

	r = cli_hsm_setup("setup-boot", s->hsm_spec, s->pcrs, s->pin_file, &hsm, &pin);
	if (r)
		return -EINVAL;
	if (cli_bind_setup("setup-boot", s->bind, &p.bind_mask, &p.bind_default))
		return -EINVAL;
	p.hsm = &hsm;
	r = cli_read_passphrase(s->key_file, "an existing passphrase of the volume", &pass);
	if (r < 0)
		goto out;
	p.passphrase = pass;
	r = lr_enroll(&p, &res);
	if (res.keyslot >= 0)
		printf("Enrolled %s: keyslot %d, token %d.\n", s->device, res.keyslot, res.token);
	if (res.recovery_key)
		cli_show_recovery_key(res.recovery_key, res.recovery_keyslot);
out:
	lr_enroll_result_done(&res);
	lr_hsm_done(&hsm);
	return r;
}

static int act(struct setup *s, const struct lr_bootcfg_change *c, size_t n)
{
	int r;

	if (s->token < 0) {
		r = do_enroll(s);
		if (r < 0)
			return r;
	}
	r = lr_bootcfg_apply(c, n);
	if (r < 0)
		return r;
	if (s->no_initramfs) {
		printf("Boot configuration written. Now run: %s\n", s->initramfs_cmd);
		return 0;
	}
	r = run_initramfs(s);
	if (r == 0)
		r = verify_initramfs(s);
	if (r < 0) {
		/* The old initramfs and the old files still boot (with a passphrase): put them back. */
		lr_error("the initramfs could not be made ready: restoring the original boot files");
		lr_bootcfg_restore(s->root);
		return r;
	}
	printf("Done: %s unlocks at boot through the HSM as /dev/mapper/%s.\n", s->device, s->name);
	return 0;
}

static int parse(struct setup *s, int argc, char **argv)
{
	int c;

	while ((c = getopt_long(argc, argv, "yh", options, NULL)) >= 0) {
		switch (c) {
		case OPT_HSM: s->hsm_spec = optarg; break;
		case OPT_BIND: s->bind = optarg; break;
		case OPT_PCRS: s->pcrs = optarg; break;
		case OPT_PIN_FILE: s->pin_file = optarg; break;
		case OPT_RECOVERY: s->recovery = true; break;
		case OPT_KEY_FILE: s->key_file = optarg; break;
		case OPT_NAME: s->name = optarg; break;
		case OPT_ROOT: s->root = optarg; break;
		case OPT_NO_INITRAMFS: s->no_initramfs = true; break;
		case OPT_DRY_RUN: s->dry_run = true; break;
		case 'y': s->yes = true; break;
		case 'h': help(); return -1;
		default: return LR_EXIT_USAGE;
		}
	}
	if (argc - optind > 1)
		return cli_usage_error("setup-boot", "expected at most one DEVICE");
	if (optind < argc)
		s->device = argv[optind];
	if (!s->hsm_spec)
		return cli_usage_error("setup-boot", "--hsm is required (tpm2[:TCTI] or pkcs11:URI)");
	return 0;
}

int cmd_setup_boot(int argc, char **argv)
{
	struct setup s = { .root = "/" };
	struct lr_bootcfg_change *changes = NULL;
	size_t n = 0;
	int r;

	r = parse(&s, argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	r = find_root(&s);
	if (r == 0)
		r = inspect_volume(&s);
	if (r == 0)
		r = choose_initramfs(&s);
	if (r == 0)
		r = plan_files(&s, &changes, &n);
	if (r < 0)
		goto out;
	print_plan(&s, changes, n);
	if (s.dry_run)
		goto out;
	if (!s.yes && !cli_confirm("setup-boot", "Go ahead? [y/N]", "y")) {
		r = -ECANCELED;
		goto out;
	}
	r = act(&s, changes, n);
out:
	lr_bootcfg_changes_free(changes, n);
	free(s.owned_device);
	free(s.owned_name);
	free(s.initramfs_cmd);
	return r < 0 ? lr_exit_code(r) : 0;
}
