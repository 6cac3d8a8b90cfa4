/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * LUKS2 side of lockroot: enroll, format, unlock, unenroll, status.
 * Order that keeps a volume safe (after systemd-cryptenroll): prove the HSM lock before
 * touching the header, add the keyslot before the token that points at it, and remove a
 * token before its keyslot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libcryptsetup.h>

#include "lockroot.h"
#include "luks-internal.h"
#include "util.h"

/* libcryptsetup prints to stderr unless told otherwise; the library never prints. */
static void crypt_log_cb(int level, const char *msg, void *usrptr)
{
	size_t n = strlen(msg);

	(void)usrptr;
	while (n > 0 && msg[n - 1] == '\n')
		n--;
	switch (level) {
	case CRYPT_LOG_ERROR:
		lr_log(LR_LOG_ERROR, "%.*s", (int)n, msg);
		break;
	case CRYPT_LOG_NORMAL:
		lr_log(LR_LOG_INFO, "%.*s", (int)n, msg);
		break;
	default:
		lr_log(LR_LOG_DEBUG, "%.*s", (int)n, msg);
		break;
	}
}

int lr_crypt_init(const char *device, struct crypt_device **cd)
{
	int r = crypt_init(cd, device);

	if (r < 0)
		return lr_error_code(r, "cannot open %s: %s", device, strerror(-r));
	crypt_set_log_callback(*cd, crypt_log_cb, NULL);
	return 0;
}

static int check_writable(const char *device)
{
	int fd = open(device, O_RDWR | O_CLOEXEC), ro = 0;
	struct stat st;

	if (fd >= 0) {
		/* Many kernels open a read-only block device (losetup -r, a locked SD card) for
		 * writing and fail only the write, deep inside libcryptsetup. */
		if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(fd, BLKROGET, &ro) == 0 && ro) {
			close(fd);
			return lr_error_code(-EROFS, "%s is read-only: nothing was changed", device);
		}
		close(fd);
		return 0;
	}
	if (errno == EROFS || errno == EACCES || errno == EPERM)
		return lr_error_code(-EROFS, "%s is read-only: nothing was changed", device);
	return lr_error_code(-errno, "cannot open %s for writing: %s", device, strerror(errno));
}

int lr_luks2_load(const char *device, bool readonly, struct crypt_device **cdp)
{
	struct crypt_device *cd = NULL;
	const char *type;
	int r;

	if (access(device, F_OK) < 0)
		return lr_error_code(-ENOENT, "%s: no such device or file", device);
	if (!readonly) {
		r = check_writable(device);
		if (r < 0)
			return r;
	}
	r = lr_crypt_init(device, &cd);
	if (r < 0)
		return r;
	r = crypt_load(cd, CRYPT_LUKS, NULL);
	if (r < 0) {
		crypt_free(cd);
		return lr_error_code(-EMEDIUMTYPE, "%s is not a LUKS device (or its header is damaged)", device);
	}
	type = crypt_get_type(cd);
	if (!type || strcmp(type, CRYPT_LUKS2) != 0) {
		/* type points into cd: log before crypt_free(). */
		r = lr_error_code(-EMEDIUMTYPE, "%s is %s, lockroot needs LUKS2 "
				  "(convert it with: cryptsetup convert --type luks2 %s)",
				  device, type ? type : "not LUKS", device);
		crypt_free(cd);
		return r;
	}
	*cdp = cd;
	return 0;
}

/* ---- keyslot helpers ---- */

static int count_free_keyslots(struct crypt_device *cd)
{
	int n = 0, max = crypt_keyslot_max(CRYPT_LUKS2);

	for (int i = 0; i < max; i++)
		if (crypt_keyslot_status(cd, i) == CRYPT_SLOT_INACTIVE)
			n++;
	return n;
}

/* Whether 'need' more keyslots fit in the keyslot area. A header made with a small
 * --luks2-keyslots-size fills up before all 32 keyslots are used, and libcryptsetup only says
 * so (as -EINVAL) when asked to add one; this is its first-fit search (LUKS2_find_area_gap),
 * run ahead of time. Every new keyslot holds the volume key: 4000 AF stripes, 4 KiB aligned. */
static bool keyslot_area_fits(struct crypt_device *cd, int need)
{
	enum { MAX = 32 + 2 };
	uint64_t off[MAX], len[MAX], metadata = 0, keyslots = 0, end, size, at;
	int n = 0, key_size = crypt_get_volume_key_size(cd), max = crypt_keyslot_max(CRYPT_LUKS2);

	if (key_size <= 0 || crypt_get_metadata_size(cd, &metadata, &keyslots) < 0 || !metadata || !keyslots)
		return true; /* cannot tell: libcryptsetup will say */
	end = 2 * metadata + keyslots;
	size = ((uint64_t)key_size * 4000 + 4095) / 4096 * 4096;
	for (int i = 0; i < max && n < MAX - 2; i++) {
		uint64_t o, l;
		int j;

		if (crypt_keyslot_status(cd, i) == CRYPT_SLOT_INACTIVE || crypt_keyslot_area(cd, i, &o, &l) < 0)
			continue;
		/* Insert sorted by offset. */
		for (j = n++; j > 0 && off[j - 1] > o; j--) {
			off[j] = off[j - 1];
			len[j] = len[j - 1];
		}
		off[j] = o;
		len[j] = l;
	}
	for (int k = 0; k < need; k++) {
		int j;

		at = 2 * metadata;
		for (j = 0; j < n; j++) {
			if (at + size <= off[j])
				break;
			if (off[j] + len[j] > at)
				at = off[j] + len[j];
		}
		if (at + size > end)
			return false;
		/* Take the gap before area j, as the next keyslot would. */
		for (int m = n++; m > j; m--) {
			off[m] = off[m - 1];
			len[m] = len[m - 1];
		}
		off[j] = at;
		len[j] = size;
	}
	return true;
}

int lr_count_active_keyslots(struct crypt_device *cd)
{
	int n = 0, max = crypt_keyslot_max(CRYPT_LUKS2);

	for (int i = 0; i < max; i++) {
		crypt_keyslot_info ki = crypt_keyslot_status(cd, i);

		if (ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST)
			n++;
	}
	return n;
}

static int has_free_token(struct crypt_device *cd)
{
	for (int i = 0; i < crypt_token_max(CRYPT_LUKS2); i++)
		if (crypt_token_status(cd, i, NULL) == CRYPT_TOKEN_INACTIVE)
			return 1;
	return 0;
}

int lr_set_pbkdf_minimal(struct crypt_device *cd)
{
	/* The user key is 256 random bits: stretching it buys nothing, so the cheapest
	 * PBKDF2 libcryptsetup accepts keeps unlocking fast and memory-free on a small board. */
	const struct crypt_pbkdf_type pbkdf = {
		.type = CRYPT_KDF_PBKDF2,
		.hash = "sha256",
		.iterations = 1000,
		.flags = CRYPT_PBKDF_NO_BENCHMARK,
	};

	return crypt_set_pbkdf_type(cd, &pbkdf);
}

int lr_set_pbkdf_recovery(struct crypt_device *cd, const struct lr_pbkdf_cost *c)
{
	struct crypt_pbkdf_type pbkdf = {
		.type = CRYPT_KDF_ARGON2ID,
		.hash = "sha256",
		.time_ms = LR_RECOVERY_TIME_MS,
		.max_memory_kb = c->memory_kb ? c->memory_kb : LR_RECOVERY_MEMORY_KB,
		.parallel_threads = c->parallel ? c->parallel : 4,
	};

	if (c->iterations) {
		pbkdf.iterations = c->iterations;
		pbkdf.time_ms = 0;
		pbkdf.flags = CRYPT_PBKDF_NO_BENCHMARK;
	}
	return crypt_set_pbkdf_type(cd, &pbkdf);
}

/* ---- recovery key ---- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int recovery_format(const uint8_t *bits, struct lr_secret **out)
{
	struct lr_secret *s = lr_secret_new(64);

	if (!s)
		return -ENOMEM;
	/* 160 bits -> 32 characters of 5 bits, in groups of 4. */
	for (int i = 0; i < 32; i++) {
		int bit = i * 5, v = 0;

		for (int b = 0; b < 5; b++, bit++)
			v = (v << 1) | ((bits[bit / 8] >> (7 - bit % 8)) & 1);
		if (i > 0 && i % 4 == 0)
			s->data[s->len++] = '-';
		s->data[s->len++] = (uint8_t)crockford[v];
	}
	s->data[s->len] = '\0';
	*out = s;
	return 0;
}

int lr_recovery_key_generate(struct lr_secret **out)
{
	_cleanup_secret_ struct lr_secret *raw = NULL;
	int r;

	r = lr_secret_random(20, &raw);
	if (r < 0)
		return r;
	return recovery_format(raw->data, out);
}

int lr_recovery_key_normalize(const char *typed, struct lr_secret **out)
{
	struct lr_secret *s = lr_secret_new(64);
	size_t n = 0;

	if (!s)
		return -ENOMEM;
	for (const char *p = typed; *p; p++) {
		char c = *p;

		if (c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c == 'O')
			c = '0';
		else if (c == 'I' || c == 'L')
			c = '1';
		if (!strchr(crockford, c) || n >= 32) {
			lr_secret_free(s);
			return -EINVAL;
		}
		if (n > 0 && n % 4 == 0)
			s->data[s->len++] = '-';
		s->data[s->len++] = (uint8_t)c;
		n++;
	}
	if (n != 32) {
		lr_secret_free(s);
		return -EINVAL;
	}
	s->data[s->len] = '\0';
	*out = s;
	return 0;
}

/* ---- enroll ---- */

struct lock_result {
	struct lr_token token;
	struct lr_secret *passphrase; /* base64 of the user key: the keyslot passphrase */
};

static void lock_result_done(struct lock_result *l)
{
	lr_token_done(&l->token);
	lr_secret_free(l->passphrase);
	l->passphrase = NULL;
}

/* Boot files: measured where boot_spec says, else on the running system's boot partition. */
static int boot_files_measure(const char *boot_spec, struct lr_fingerprint *fp, struct lr_token *t)
{
	_cleanup_free_ char *spec = NULL;
	int r;

	if (boot_spec)
		spec = strdup(boot_spec);
	else {
		r = lr_bootdir_default_spec(&spec);
		if (r < 0)
			return r == -ENOENT ? -EINVAL : r;
	}
	if (!spec)
		return -ENOMEM;
	r = lr_bootfiles_measure_spec(spec, &t->boot_files);
	if (r < 0)
		return r == -ENOENT ? -EINVAL : r;
	r = lr_fingerprint_set_boot_files(fp, &t->boot_files, spec);
	if (r < 0)
		return r;
	t->boot_spec = spec;
	spec = NULL;
	return 0;
}

static int binding_measure(const char *device, uint32_t mask, bool use_default, const char *boot_spec,
			   struct lr_token *t, uint8_t digest[32])
{
	_cleanup_fingerprint_ struct lr_fingerprint fp = { 0 };
	_cleanup_secret_ struct lr_secret *salt = NULL;
	int r;

	r = lr_fingerprint_read(device, &fp);
	if (r < 0)
		return r;
	if (!use_default && (mask & (1u << LR_COMP_BOOT_FILES))) {
		r = boot_files_measure(boot_spec, &fp, t);
		if (r < 0)
			return r;
	}
	if (use_default) {
		mask = lr_fingerprint_default_mask(&fp);
		if (mask == 0)
			lr_warn("this host has none of the components lockroot binds to (see 'lockroot "
				"fingerprint'): the key is bound to the HSM alone");
	}
	r = lr_fingerprint_digest(&fp, mask, digest);
	/* -ENOENT: --bind names a component this host lacks (logged, naming it). That is a bad
	 * option value, not "no such device". */
	if (r == -ENOENT)
		return -EINVAL;
	if (r < 0)
		return r;
	r = lr_secret_random(sizeof(t->bind_salt), &salt);
	if (r < 0)
		return r;
	memcpy(t->bind_salt, salt->data, sizeof(t->bind_salt));
	t->bind_mask = mask;
	for (int i = 0; i < LR_COMP_MAX; i++) {
		if (!(mask & (1u << i)))
			continue;
		r = lr_component_check(t->bind_salt, i, fp.comp[i].value, t->bind_check[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Unlock the way a later boot will: from what the token stored, with no PIN typed. When
 * that needs a PIN, say so (boot will ask for it) and prove the lock with the PIN given now. */
static int prove_unlock(const struct lr_hsm *hsm, struct json_object *obj, const uint8_t digest[32],
			struct lr_secret **back)
{
	struct lr_hsm boot = { .backend = hsm->backend, .pcr_mask = hsm->pcr_mask };
	int r;

	lr_log_demote(1);
	r = hsm->backend->unlock(&boot, obj, digest, back);
	lr_log_demote(-1);
	if (r != -ENOANO) {
		if (r < 0)
			lr_log_replay();
		return r;
	}
	lr_warn("the %s HSM needs a PIN that the token does not name (no pin-source=file: in the URI): "
		"unlocking will ask for it, so a board will not boot unattended", hsm->backend->name);
	return hsm->backend->unlock(hsm, obj, digest, back);
}

/* Random user key, locked by the HSM, unlocked again and compared: nothing reaches a
 * header unless this round trip works. */
static int lock_and_prove(const char *device, struct lr_hsm *hsm, uint32_t mask, bool use_default,
			  const char *boot_spec, struct lock_result *l)
{
	_cleanup_secret_ struct lr_secret *key = NULL, *back = NULL;
	uint8_t digest[32];
	int r;

	memset(l, 0, sizeof(*l));
	r = binding_measure(device, mask, use_default, boot_spec, &l->token, digest);
	if (r < 0)
		return r;
	r = lr_secret_random(LR_USER_KEY_BYTES, &key);
	if (r < 0)
		return lr_error_code(r, "cannot read the kernel random number generator: %s", strerror(-r));
	l->token.version = LR_TOKEN_VERSION;
	snprintf(l->token.backend, sizeof(l->token.backend), "%s", hsm->backend->name);
	l->token.backend_data = json_object_new_object();
	if (!l->token.backend_data)
		return -ENOMEM;
	r = hsm->backend->lock(hsm, key, digest, l->token.backend_data);
	if (r < 0)
		return r;
	r = prove_unlock(hsm, l->token.backend_data, digest, &back);
	if (r < 0)
		return lr_error_code(r, "the %s HSM locked the key but cannot unlock it again: nothing was changed",
				     hsm->backend->name);
	if (lr_secret_cmp(key, back) != 0)
		return lr_error_code(-EIO, "the %s HSM returned a different key: nothing was changed", hsm->backend->name);
	return lr_secret_base64(key, &l->passphrase);
}

static int add_token(struct crypt_device *cd, struct lr_token *t, int keyslot)
{
	_cleanup_free_ char *json = NULL;
	int r;

	t->keyslot = keyslot;
	r = lr_token_format(t, &json);
	if (r < 0)
		return r;
	r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
	if (r < 0)
		return lr_error_code(r, "cannot write the lockroot token: %s", strerror(-r));
	return r;
}

static int add_recovery_marker(struct crypt_device *cd, int keyslot)
{
	char json[128];

	snprintf(json, sizeof(json), "{\"type\":\"%s\",\"keyslots\":[\"%d\"]}", LR_RECOVERY_TOKEN_TYPE, keyslot);
	return crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
}

/* Recovery keyslot, from an unlocked volume key or from a passphrase. */
static int add_recovery(struct crypt_device *cd, const struct lr_pbkdf_cost *cost,
			const struct lr_secret *vk, const struct lr_secret *pass,
			const struct lr_secret *given, struct lr_enroll_result *res)
{
	_cleanup_secret_ struct lr_secret *rk = NULL;
	int r, slot;

	if (given) {
		/* The display form is NUL-terminated, like a generated one. */
		rk = lr_secret_dup(given->data, given->len);
		r = rk ? 0 : -ENOMEM;
	} else {
		r = lr_recovery_key_generate(&rk);
	}
	if (r < 0)
		return r;
	r = lr_set_pbkdf_recovery(cd, cost);
	if (r < 0)
		return lr_error_code(r, "cannot set the recovery key's PBKDF: %s", strerror(-r));
	if (vk)
		slot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, (const char *)vk->data, vk->len,
						       (const char *)rk->data, rk->len);
	else
		slot = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, (const char *)pass->data, pass->len,
						       (const char *)rk->data, rk->len);
	if (slot < 0)
		return lr_error_code(slot, "cannot add the recovery keyslot: %s", strerror(-slot));
	r = add_recovery_marker(cd, slot);
	if (r < 0)
		lr_warn("recovery keyslot %d added, but not marked as such: %s", slot, strerror(-r));
	res->recovery_keyslot = slot;
	if (!given) {
		res->recovery_key = rk;
		rk = NULL;
	}
	return 0;
}

static int enroll_checks(struct crypt_device *cd, const struct lr_enroll_params *p)
{
	int need = p->recovery_key ? 2 : 1, r;

	if (count_free_keyslots(cd) < need)
		return lr_error_code(-ENOSPC, "%s has no free keyslot%s: remove one with cryptsetup luksKillSlot "
				     "first; nothing was changed", p->device, need > 1 ? "s (2 needed)" : "");
	if (!keyslot_area_fits(cd, need))
		return lr_error_code(-ENOSPC, "%s has no free keyslot%s: its keyslot area is full; remove one with "
				     "cryptsetup luksKillSlot first; nothing was changed", p->device,
				     need > 1 ? "s (2 needed)" : "");
	if (!has_free_token(cd))
		return lr_error_code(-ENOSPC, "%s has no free token slot; nothing was changed", p->device);
	r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, (const char *)p->passphrase->data,
					 p->passphrase->len, 0);
	if (r == -EPERM || r == -ENOENT)
		return lr_error_code(-EPERM, "no keyslot of %s opens with that passphrase; nothing was changed",
				     p->device);
	if (r < 0)
		return lr_error_code(r, "cannot check the passphrase on %s: %s", p->device, strerror(-r));
	return 0;
}

int lr_enroll(const struct lr_enroll_params *p, struct lr_enroll_result *res)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct lock_result l = { 0 };
	int r, slot;

	memset(res, 0, sizeof(*res));
	res->keyslot = res->token = res->recovery_keyslot = -1;
	r = lr_luks2_load(p->device, false, &cd);
	if (r < 0)
		return r;
	r = enroll_checks(cd, p);
	if (r < 0)
		return r;
	r = lock_and_prove(p->device, p->hsm, p->bind_mask, p->bind_default, p->boot_spec, &l);
	if (r < 0)
		goto out;
	/* Header writes start here: keyslot, then the token that points at it. */
	r = lr_set_pbkdf_minimal(cd);
	if (r < 0)
		goto out;
	slot = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, (const char *)p->passphrase->data,
					       p->passphrase->len, (const char *)l.passphrase->data,
					       l.passphrase->len);
	if (slot < 0) {
		r = lr_error_code(slot, "cannot add a keyslot to %s: %s", p->device, strerror(-slot));
		goto out;
	}
	r = add_token(cd, &l.token, slot);
	if (r < 0) {
		crypt_keyslot_destroy(cd, slot);
		goto out;
	}
	res->keyslot = slot;
	res->token = r;
	res->bind_mask = l.token.bind_mask;
	r = 0;
	if (p->recovery_key)
		r = add_recovery(cd, &p->recovery_cost, NULL, p->passphrase, NULL, res);
out:
	lock_result_done(&l);
	return r;
}

/* ---- format ---- */

static int split_cipher(const char *spec, char *cipher, size_t csize, char *mode, size_t msize)
{
	const char *dash = strrchr(spec, '-');

	/* "aes-xts-plain64" -> aes + xts-plain64; "xchacha12,aes-adiantum-plain64" ->
	 * xchacha12,aes + adiantum-plain64: the mode is the last two dash-separated words. */
	if (!dash || dash == spec)
		return -EINVAL;
	for (dash--; dash > spec && *dash != '-'; dash--)
		;
	if (dash == spec || (size_t)(dash - spec) >= csize || strlen(dash + 1) >= msize)
		return -EINVAL;
	memcpy(cipher, spec, (size_t)(dash - spec));
	cipher[dash - spec] = '\0';
	strcpy(mode, dash + 1);
	return 0;
}

static int format_header(struct crypt_device *cd, const struct lr_format_params *p)
{
	const char *spec = p->cipher ? p->cipher : "aes-xts-plain64";
	char cipher[64], mode[64];
	uint32_t bits = p->key_bits;
	struct crypt_params_luks2 params = { .label = p->label, .sector_size = 512 };
	int r;

	if (split_cipher(spec, cipher, sizeof(cipher), mode, sizeof(mode)) < 0)
		return lr_error_code(-EINVAL, "invalid cipher '%s' (e.g. aes-xts-plain64)", spec);
	if (!bits)
		bits = strstr(mode, "xts") ? 512 : 256;
	r = crypt_format(cd, CRYPT_LUKS2, cipher, mode, p->uuid, NULL, bits / 8, &params);
	if (r < 0)
		return lr_error_code(r, "cannot create a LUKS2 header on %s with %s: %s", p->device, spec,
				     strerror(-r));
	return 0;
}

static int format_keyslots(struct crypt_device *cd, const struct lr_format_params *p,
			   struct lock_result *l, struct lr_enroll_result *res)
{
	_cleanup_secret_ struct lr_secret *vk = NULL;
	size_t vk_size;
	int r, slot;

	r = crypt_get_volume_key_size(cd);
	vk_size = r > 0 ? (size_t)r : 64;
	vk = lr_secret_new(vk_size);
	if (!vk)
		return -ENOMEM;
	vk->len = vk_size;
	/* The volume key was generated by crypt_format(); take it once to add every keyslot. */
	r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *)vk->data, &vk->len, NULL, 0);
	if (r < 0)
		return lr_error_code(r, "cannot read the new volume key: %s", strerror(-r));
	r = lr_set_pbkdf_minimal(cd);
	if (r < 0)
		return r;
	if (l->passphrase) {
		slot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, (const char *)vk->data, vk->len,
						       (const char *)l->passphrase->data, l->passphrase->len);
		if (slot < 0)
			return lr_error_code(slot, "cannot add the HSM keyslot: %s", strerror(-slot));
		r = add_token(cd, &l->token, slot);
		if (r < 0)
			return r;
		res->keyslot = slot;
		res->token = r;
		res->bind_mask = l->token.bind_mask;
	}
	if (p->provisioning) {
		char json[128];

		/* random key: the minimal PBKDF set above, as for the HSM keyslot */
		slot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, (const char *)vk->data, vk->len,
						       (const char *)p->passphrase->data, p->passphrase->len);
		if (slot < 0)
			return lr_error_code(slot, "cannot add the provisioning keyslot: %s", strerror(-slot));
		snprintf(json, sizeof(json), "{\"type\":\"%s\",\"keyslots\":[\"%d\"]}", LR_PROVISION_TOKEN_TYPE, slot);
		r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
		if (r < 0)
			return lr_error_code(r, "cannot mark the provisioning keyslot: %s", strerror(-r));
		res->keyslot = slot;
		return 0;
	}
	if (p->recovery_key) {
		r = add_recovery(cd, &p->recovery_cost, vk, NULL, p->recovery_key_value, res);
		if (r < 0)
			return r;
	}
	if (p->passphrase) {
		r = crypt_set_pbkdf_type(cd, crypt_get_pbkdf_default(CRYPT_LUKS2));
		if (r < 0)
			return r;
		r = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, (const char *)vk->data, vk->len,
						    (const char *)p->passphrase->data, p->passphrase->len);
		if (r < 0)
			return lr_error_code(r, "cannot add the passphrase keyslot: %s", strerror(-r));
	}
	return 0;
}

/* A detached header file: created empty (libcryptsetup needs an existing file of at least
 * one block), never over an existing one. */
static int create_header_file(const char *path)
{
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600), r = 0;

	if (fd < 0)
		return lr_error_code(-errno, "cannot create the header file %s: %s", path, strerror(errno));
	if (ftruncate(fd, 4096) < 0)
		r = lr_error_code(-errno, "cannot write the header file %s: %s", path, strerror(errno));
	close(fd);
	if (r < 0)
		unlink(path);
	return r;
}

static int format_init(const struct lr_format_params *p, struct crypt_device **cd, bool *created)
{
	int r;

	if (!p->header)
		return lr_crypt_init(p->device, cd);
	r = create_header_file(p->header);
	if (r < 0)
		return r;
	*created = true;
	r = crypt_init_data_device(cd, p->header, p->device);
	if (r < 0)
		return lr_error_code(r, "cannot open %s with the header %s: %s", p->device, p->header, strerror(-r));
	crypt_set_log_callback(*cd, crypt_log_cb, NULL);
	if (p->data_offset) {
		r = crypt_set_data_offset(*cd, p->data_offset / 512);
		if (r < 0)
			return lr_error_code(r, "invalid data offset %" PRIu64 ": %s", p->data_offset, strerror(-r));
	}
	return 0;
}

int lr_format(const struct lr_format_params *p, struct lr_enroll_result *res)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct lock_result l = { 0 };
	bool created = false;
	int r;

	memset(res, 0, sizeof(*res));
	res->keyslot = res->token = res->recovery_keyslot = -1;
	if (access(p->device, F_OK) < 0)
		return lr_error_code(-ENOENT, "%s: no such device or file", p->device);
	if (!p->header) {
		r = check_writable(p->device);
		if (r < 0)
			return r;
	}
	if (p->provisioning ? !p->passphrase || p->hsm : !p->hsm)
		return lr_error_code(-EINVAL, "a volume needs an HSM, or a provisioning key and no HSM");
	if (p->hsm) {
		r = lock_and_prove(p->device, p->hsm, p->bind_mask, p->bind_default, p->boot_spec, &l);
		if (r < 0)
			goto out;
	}
	r = format_init(p, &cd, &created);
	if (r < 0)
		goto out;
	r = format_header(cd, p);
	if (r < 0)
		goto out;
	r = format_keyslots(cd, p, &l, res);
out:
	lock_result_done(&l);
	if (r < 0 && created)
		unlink(p->header); /* a half-made header file is of no use */
	return r;
}

void lr_enroll_result_done(struct lr_enroll_result *res)
{
	lr_secret_free(res->recovery_key);
	res->recovery_key = NULL;
}

int lr_deactivate(const char *name)
{
	int r = crypt_deactivate(NULL, name);

	if (r < 0)
		return lr_error_code(r, "cannot close /dev/mapper/%s: %s", name, strerror(-r));
	return 0;
}

/* Does the running kernel have the crypto algorithm name, loaded (/proc/crypto) or as a module
 * or built in (modules.dep, modules.builtin of /proc/sys/kernel/osrelease)? */
static bool kernel_has_crypto(const char *name)
{
	static const char *const lists[] = { "modules.builtin", "modules.dep" };
	_cleanup_free_ char *crypto = NULL, *release = NULL;
	char module[64];

	snprintf(module, sizeof(module), "/%s.ko", name);
	if (lr_sysroot_read("/proc/crypto", &crypto, NULL) == 0) {
		for (char *save = NULL, *l = strtok_r(crypto, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
			if (strncmp(l, "name", 4) == 0 && strstr(l, name))
				return true;
	}
	if (lr_sysroot_read("/proc/sys/kernel/osrelease", &release, NULL) < 0)
		return false;
	release[strcspn(release, "\n")] = '\0';
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		_cleanup_free_ char *path = NULL, *text = NULL;

		if (asprintf(&path, "/lib/modules/%s/%s", release, lists[i]) < 0) {
			path = NULL;
			return false;
		}
		if (lr_sysroot_read(path, &text, NULL) == 0 && strstr(text, module))
			return true;
	}
	return false;
}

/* AES-XTS where the CPU has AES instructions (x86 "aes" flag, arm64 "aes" feature), else
 * Adiantum, which is fast without them (Raspberry Pi 3 and 4), if the kernel has it. */
const char *lr_cipher_default(void)
{
	_cleanup_free_ char *info = NULL;
	size_t len;

	if (lr_sysroot_read("/proc/cpuinfo", &info, &len) < 0)
		return "aes-xts-plain64";
	for (char *line = strtok(info, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "flags", 5) && strncmp(line, "Features", 8))
			continue;
		if (strstr(line, " aes ") || (strlen(line) > 4 && strcmp(line + strlen(line) - 4, " aes") == 0))
			return "aes-xts-plain64";
		if (kernel_has_crypto("adiantum"))
			return "xchacha12,aes-adiantum-plain64";
		lr_warn("this CPU has no AES instructions and the kernel no Adiantum: aes-xts-plain64 "
			"(slow here; --cipher chooses another)");
		return "aes-xts-plain64";
	}
	return "aes-xts-plain64";
}
