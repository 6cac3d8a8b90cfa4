/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-place conversion engine (see convert.h for the layout and what a power cut leaves).
 * libcryptsetup does the data work; this file decides what state a partition is in, does
 * the steps around libcryptsetup's (shrink, header placement with a record to undo a cut
 * write) and finishes the one state libcryptsetup 2.6 cannot leave by itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libcryptsetup.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "convert.h"
#include "luks-internal.h"
#include "util.h"

#define SEG_SIZE LR_CONVERT_DATA_OFFSET  /* the moved first segment = the data shift */
#define BIN_HDR 4096                     /* LUKS2 binary header, before its JSON area */
#define CSUM_OFF 448                     /* struct luks2_hdr_disk: csum[64] */
#define SEQID_OFF 16
#define HDR_SIZE_OFF 8
#define HDR_OFFSET_OFF 256

const char *lr_convert_state_name(enum lr_convert_disk_state s)
{
	switch (s) {
	case LR_CONVERT_PLAIN: return "plain";
	case LR_CONVERT_SHRUNK: return "shrunk";
	case LR_CONVERT_MOVED_CUT: return "moved-cut";
	case LR_CONVERT_ENCRYPTING: return "encrypting";
	case LR_CONVERT_STUCK_FINAL: return "stuck-final";
	case LR_CONVERT_DONE: return "done";
	case LR_CONVERT_UNKNOWN: return "unknown";
	}
	return "unknown";
}

/* ---- I/O helpers ---- */

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_close_ __attribute__((cleanup(closep)))

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	for (size_t n = 0; n < len;) {
		ssize_t k = pread(fd, (uint8_t *)buf + n, len - n, (off_t)(off + n));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		n += (size_t)k;
	}
	return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	for (size_t n = 0; n < len;) {
		ssize_t k = pwrite(fd, (const uint8_t *)buf + n, len - n, (off_t)(off + n));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		n += (size_t)k;
	}
	return 0;
}

static int fd_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	if (!S_ISREG(st.st_mode))
		return -ENOTBLK;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int open_device(const char *device, int flags, uint64_t *size)
{
	int fd = open(device, flags | O_CLOEXEC), r;

	if (fd < 0)
		return lr_error_code(-errno, "cannot open %s: %s", device, strerror(errno));
	r = fd_size(fd, size);
	if (r < 0) {
		close(fd);
		return lr_error_code(r, "cannot get the size of %s: %s", device, strerror(-r));
	}
	return fd;
}

static void hex32(const uint8_t in[32], char out[65])
{
	lr_hex(in, 32, out);
}

/* sha256 of len bytes of fd at off, read in 1 MiB pieces. */
static int sha256_range(int fd, uint64_t off, uint64_t len, uint8_t out[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	_cleanup_free_ uint8_t *buf = malloc(1 << 20);
	int r = 0;

	if (!ctx || !buf) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		r = -EIO;
	while (r == 0 && len > 0) {
		size_t n = len < (1 << 20) ? (size_t)len : (1 << 20);

		r = pread_full(fd, buf, n, off);
		if (r == 0 && EVP_DigestUpdate(ctx, buf, n) != 1)
			r = -EIO;
		off += n;
		len -= n;
	}
	if (r == 0 && EVP_DigestFinal_ex(ctx, out, NULL) != 1)
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	return r;
}

/* 1 when len bytes at a in fd_a equal len bytes at b in fd_b, 0 when not, -errno. */
static int ranges_equal(int fd_a, uint64_t a, int fd_b, uint64_t b, uint64_t len)
{
	_cleanup_free_ uint8_t *x = malloc(1 << 20), *y = malloc(1 << 20);
	int r;

	if (!x || !y)
		return -ENOMEM;
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < (1 << 20) ? (size_t)(len - done) : (1 << 20);

		if ((r = pread_full(fd_a, x, n, a + done)) < 0 || (r = pread_full(fd_b, y, n, b + done)) < 0)
			return r;
		if (memcmp(x, y, n) != 0)
			return 0;
		done += n;
	}
	return 1;
}

/* ---- the LUKS2 header as it is on disk (struct luks2_hdr_disk + JSON area) ---- */

struct raw_hdr {
	uint8_t bin[BIN_HDR];
	uint64_t hdr_size;             /* binary header + JSON area */
	uint64_t seqid;
	struct json_object *json;
};

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void raw_hdr_done(struct raw_hdr *h)
{
	json_object_put(h->json);
	h->json = NULL;
}

/* sha256 over the binary header with its checksum field zeroed, then the JSON area: what
 * libcryptsetup's hdr_checksum_calculate() computes. */
static int hdr_checksum(const uint8_t bin[BIN_HDR], const uint8_t *area, size_t area_len, uint8_t out[32])
{
	uint8_t copy[BIN_HDR];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -ENOMEM;
	memcpy(copy, bin, BIN_HDR);
	memset(copy + CSUM_OFF, 0, 64);
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(ctx, copy, BIN_HDR) == 1 &&
	     EVP_DigestUpdate(ctx, area, area_len) == 1 && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

/* Read and verify one header copy at off. -EBADMSG when it is not a valid LUKS2 header. */
static int raw_hdr_read(int fd, uint64_t off, struct raw_hdr *h)
{
	static const char magic1[6] = { 'L', 'U', 'K', 'S', (char)0xba, (char)0xbe };
	static const char magic2[6] = { 'S', 'K', 'U', 'L', (char)0xba, (char)0xbe };
	_cleanup_free_ uint8_t *area = NULL;
	uint8_t csum[32];
	size_t area_len;
	int r;

	memset(h, 0, sizeof(*h));
	r = pread_full(fd, h->bin, BIN_HDR, off);
	if (r < 0)
		return r;
	if (memcmp(h->bin, off ? magic2 : magic1, 6) != 0 || h->bin[6] != 0 || h->bin[7] != 2 ||
	    be64(h->bin + HDR_OFFSET_OFF) != off || strcmp((char *)h->bin + 72, "sha256") != 0)
		return -EBADMSG;
	h->hdr_size = be64(h->bin + HDR_SIZE_OFF);
	h->seqid = be64(h->bin + SEQID_OFF);
	if (h->hdr_size < 0x4000 || h->hdr_size > 0x400000 || h->hdr_size % 4096)
		return -EBADMSG;
	area_len = (size_t)(h->hdr_size - BIN_HDR);
	area = malloc(area_len + 1);
	if (!area)
		return -ENOMEM;
	r = pread_full(fd, area, area_len, off + BIN_HDR);
	if (r < 0)
		return r;
	r = hdr_checksum(h->bin, area, area_len, csum);
	if (r < 0)
		return r;
	if (memcmp(csum, h->bin + CSUM_OFF, 32) != 0)
		return -EBADMSG;
	area[area_len] = 0;
	h->json = json_tokener_parse((char *)area);
	return h->json ? 0 : -EBADMSG;
}

/* Write one header copy the way libcryptsetup does: JSON area first, then the binary header
 * that makes it valid, so a cut leaves the old copy's checksum failing, not a mix. */
static int raw_hdr_write(int fd, uint64_t off, struct raw_hdr *h, const char *json)
{
	size_t area_len = (size_t)(h->hdr_size - BIN_HDR), len = strlen(json);
	_cleanup_free_ uint8_t *area = NULL;
	uint8_t csum[32];
	int r;

	if (len + 1 > area_len)
		return -ENOSPC;
	area = calloc(1, area_len);
	if (!area)
		return -ENOMEM;
	memcpy(area, json, len);
	put_be64(h->bin + SEQID_OFF, h->seqid);
	memset(h->bin + CSUM_OFF, 0, 64);
	r = hdr_checksum(h->bin, area, area_len, csum);
	if (r < 0)
		return r;
	memcpy(h->bin + CSUM_OFF, csum, 32);
	if ((r = pwrite_full(fd, area, area_len, off + BIN_HDR)) < 0 || (fsync(fd) < 0 && (r = -errno)))
		return r;
	if ((r = pwrite_full(fd, h->bin, BIN_HDR, off)) < 0 || (fsync(fd) < 0 && (r = -errno)))
		return r;
	return 0;
}

/* Both copies, valid and in step (crypt_load() has repaired a stale one by then). */
static int raw_hdr_read_both(int fd, struct raw_hdr *h1, struct raw_hdr *h2)
{
	int r = raw_hdr_read(fd, 0, h1);

	if (r == 0)
		r = raw_hdr_read(fd, h1->hdr_size, h2);
	if (r == 0 && h1->seqid != h2->seqid)
		r = -EBADMSG;
	return r;
}

static uint64_t json_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	return strtoull(json_object_get_string(v), NULL, 10);
}

/* "" when absent. */
static const char *json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static bool json_has_flag(struct json_object *seg, const char *flag)
{
	struct json_object *flags;

	if (!json_object_object_get_ex(seg, "flags", &flags) || !json_object_is_type(flags, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(flags); i++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(flags, i)), flag) == 0)
			return true;
	return false;
}

static struct json_object *json_section(struct json_object *root, const char *name)
{
	struct json_object *o;

	return json_object_object_get_ex(root, name, &o) ? o : NULL;
}

/* The segment with this flag; its id in *id (may be NULL). */
static struct json_object *segment_flagged(struct json_object *root, const char *flag, const char **id)
{
	struct json_object *segs = json_section(root, "segments");

	if (!segs)
		return NULL;
	json_object_object_foreach(segs, key, seg) {
		if (json_has_flag(seg, flag)) {
			if (id)
				*id = key;
			return seg;
		}
	}
	return NULL;
}

/* sha256 over the areas of the real (type luks2) keyslots, in id order: what makes a
 * header usable. The JSON metadata changes as reencryption goes on; these areas do not. */
static int keyslot_areas_sha256(int fd, struct json_object *root, uint8_t out[32])
{
	struct json_object *ks = json_section(root, "keyslots");
	EVP_MD_CTX *ctx;
	uint8_t part[32];
	int r = 0, n = 0;

	if (!ks)
		return -EBADMSG;
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	for (int i = 0; i < 32 && r == 0; i++) {
		struct json_object *slot, *area;
		char key[8];

		snprintf(key, sizeof(key), "%d", i);
		if (!json_object_object_get_ex(ks, key, &slot) || strcmp(json_str(slot, "type"), "luks2") ||
		    !json_object_object_get_ex(slot, "area", &area))
			continue;
		r = sha256_range(fd, json_u64(area, "offset"), json_u64(area, "size"), part);
		if (r == 0 && EVP_DigestUpdate(ctx, part, 32) != 1)
			r = -EIO;
		n++;
	}
	if (r == 0 && (n == 0 || EVP_DigestFinal_ex(ctx, out, NULL) != 1))
		r = -EBADMSG;
	EVP_MD_CTX_free(ctx);
	return r;
}

/* ---- the record on the boot partition ---- */

struct record {
	char seg_sha[65];     /* the moved segment */
	uint64_t offset;      /* where it is */
	uint64_t part_size;
	char ks_sha[65];      /* keyslot areas of the header that was being written */
};

static int record_read(const char *path, struct record *rec)
{
	char line[512];
	FILE *f;
	int n;

	memset(rec, 0, sizeof(*rec));
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -EBADMSG;
	}
	fclose(f);
	n = sscanf(line, "moved %64[0-9a-f] %" SCNu64 " %" SCNu64 " %64[0-9a-f]", rec->seg_sha, &rec->offset,
		   &rec->part_size, rec->ks_sha);
	if (n < 3 || strlen(rec->seg_sha) != 64 || (n == 4 && strlen(rec->ks_sha) != 64))
		return lr_error_code(-EBADMSG, "%s is not a lockroot conversion record", path);
	return 0;
}

/* Write tmp, fsync, rename, lr_sync_renamed(): the record is either old or new, and on disk
 * when this returns. Without the fsync after the rename, vfat (the boot partition, where the
 * record lives) left an empty record when the system test cut the power during the header
 * write, and nothing could tell how to undo the cut. */
static int record_write(const char *path, const struct record *rec)
{
	_cleanup_free_ char *tmp = NULL;
	char line[256];
	int fd, n, r;

	if (asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	n = snprintf(line, sizeof(line), "moved %s %" PRIu64 " %" PRIu64 " %s\n", rec->seg_sha, rec->offset,
		     rec->part_size, rec->ks_sha);
	unlink(tmp);
	fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return lr_error_code(-errno, "cannot create %s: %s", tmp, strerror(errno));
	r = pwrite_full(fd, line, (size_t)n, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r == 0)
		r = lr_sync_renamed(path);
	if (r < 0) {
		unlink(tmp);
		return lr_error_code(r, "cannot write the conversion record %s: %s", path, strerror(-r));
	}
	return 0;
}

/* 1 when the record names a segment that is where it says, with its checksum; 0 when not. */
static int record_matches(int fd, uint64_t part_size, const struct record *rec)
{
	uint8_t sha[32];
	char hex[65];
	int r;

	if (rec->part_size != part_size || rec->offset < SEG_SIZE || rec->offset + SEG_SIZE > part_size)
		return 0;
	r = sha256_range(fd, rec->offset, SEG_SIZE, sha);
	if (r < 0)
		return r;
	hex32(sha, hex);
	return strcmp(hex, rec->seg_sha) == 0;
}

/* ---- ext4 ---- */

/* 1 with the size and UUID when an ext4 (or ext2/3) superblock is at 1024, 0 when not. */
static int ext4_probe(int fd, uint64_t *fs_size, uint32_t *block_size, char uuid[40])
{
	uint8_t sb[1024];
	uint64_t blocks;
	uint32_t log;
	int r = pread_full(fd, sb, sizeof(sb), 1024);

	if (r == -EIO)
		return 0; /* shorter than a superblock */
	if (r < 0)
		return r;
	if (sb[0x38] != 0x53 || sb[0x39] != 0xef)
		return 0;
	log = sb[0x18] | (uint32_t)sb[0x19] << 8 | (uint32_t)sb[0x1a] << 16 | (uint32_t)sb[0x1b] << 24;
	if (log > 6)
		return 0;
	blocks = sb[4] | (uint64_t)sb[5] << 8 | (uint64_t)sb[6] << 16 | (uint64_t)sb[7] << 24;
	if (sb[0x60] & 0x80) /* INCOMPAT_64BIT: s_blocks_count_hi */
		blocks |= ((uint64_t)sb[0x150] | (uint64_t)sb[0x151] << 8 | (uint64_t)sb[0x152] << 16 |
			   (uint64_t)sb[0x153] << 24) << 32;
	*block_size = 1024u << log;
	*fs_size = blocks * *block_size;
	snprintf(uuid, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 sb[0x68], sb[0x69], sb[0x6a], sb[0x6b], sb[0x6c], sb[0x6d], sb[0x6e], sb[0x6f],
		 sb[0x70], sb[0x71], sb[0x72], sb[0x73], sb[0x74], sb[0x75], sb[0x76], sb[0x77]);
	return 1;
}

/* ---- examine ---- */

struct luks_view {
	bool loaded;
	crypt_reencrypt_info ri;
	bool stuck;
	uint64_t total, done;
};

/* Is every chunk encrypted but the metadata still that of a reencryption? Exactly: the one
 * non-backup segment is "0", the same crypt segment as backup-final. */
static bool json_array_has(struct json_object *arr, const char *s)
{
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(arr, i)), s) == 0)
			return true;
	return false;
}

/* The digest that covers segment id. */
static struct json_object *digest_for_segment(struct json_object *root, const char *id)
{
	struct json_object *digests = json_section(root, "digests");

	if (!digests)
		return NULL;
	json_object_object_foreach(digests, key, d) {
		(void)key;
		if (json_array_has(json_object_object_get(d, "segments"), id))
			return d;
	}
	return NULL;
}

static bool stuck_final(struct json_object *root)
{
	struct json_object *segs = json_section(root, "segments"), *seg0 = NULL, *fin;
	const char *fin_id = NULL;
	int plain = 0;

	fin = segment_flagged(root, "backup-final", &fin_id);
	if (!segs || !fin || !fin_id)
		return false;
	/* Segment 0 under the final volume key: a re-encryption to a new key (same cipher) at
	 * its start has the same segments, under the old key. */
	if (digest_for_segment(root, "0") != digest_for_segment(root, fin_id))
		return false;
	json_object_object_foreach(segs, key, seg) {
		if (json_object_object_get_ex(seg, "flags", NULL) && json_object_array_length(
		    json_object_object_get(seg, "flags")) > 0)
			continue;
		plain++;
		if (strcmp(key, "0") == 0)
			seg0 = seg;
	}
	if (plain != 1 || !seg0)
		return false;
	return strcmp(json_str(seg0, "type"), "crypt") == 0 && strcmp(json_str(fin, "type"), "crypt") == 0 &&
	       *json_str(fin, "offset") && strcmp(json_str(seg0, "offset"), json_str(fin, "offset")) == 0 &&
	       strcmp(json_str(seg0, "size"), "dynamic") == 0 &&
	       strcmp(json_str(fin, "size"), "dynamic") == 0 &&
	       *json_str(fin, "encryption") && strcmp(json_str(seg0, "encryption"), json_str(fin, "encryption")) == 0 &&
	       json_u64(seg0, "sector_size") == json_u64(fin, "sector_size");
}

static void reencrypt_progress(struct json_object *root, uint64_t part_size, struct luks_view *v)
{
	struct json_object *segs = json_section(root, "segments"), *fin;

	fin = segment_flagged(root, "backup-final", NULL);
	if (!segs || !fin)
		return;
	v->total = part_size - json_u64(fin, "offset");
	json_object_object_foreach(segs, key, seg) {
		const char *size = json_str(seg, "size");

		(void)key;
		if (json_object_object_get_ex(seg, "flags", NULL) || strcmp(json_str(seg, "type"), "crypt"))
			continue;
		v->done += strcmp(size, "dynamic") == 0 ? part_size - json_u64(seg, "offset") : strtoull(size, NULL, 10);
	}
}

static int luks_examine(const char *device, int fd, uint64_t part_size, struct lr_convert_info *info,
			struct luks_view *v)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct crypt_params_reencrypt params = { 0 };
	struct raw_hdr h1 = { 0 }, h2 = { 0 };
	const char *cipher, *mode;
	int r;

	memset(v, 0, sizeof(*v));
	if (crypt_init(&cd, device) < 0)
		return 0;
	lr_log_demote(1);
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	lr_log_demote(-1);
	if (r < 0)
		return 0;
	v->loaded = true;
	cipher = crypt_get_cipher(cd);
	mode = crypt_get_cipher_mode(cd);
	if (cipher && mode)
		snprintf(info->cipher, sizeof(info->cipher), "%s-%s", cipher, mode);
	v->ri = crypt_reencrypt_status(cd, &params);
	if (raw_hdr_read_both(fd, &h1, &h2) < 0)
		goto out;
	if (v->ri == CRYPT_REENCRYPT_CLEAN || v->ri == CRYPT_REENCRYPT_CRASH) {
		struct json_object *fin = segment_flagged(h1.json, "backup-final", NULL);

		if (fin && *json_str(fin, "encryption"))
			snprintf(info->cipher, sizeof(info->cipher), "%s", json_str(fin, "encryption"));
		v->stuck = v->ri == CRYPT_REENCRYPT_CLEAN && stuck_final(h1.json);
		reencrypt_progress(h1.json, part_size, v);
	}
out:
	raw_hdr_done(&h1);
	raw_hdr_done(&h2);
	return 0;
}

/* The header a cut write left is not the whole one that was being written: a copy is
 * invalid, or the keyslot areas differ from the record. */
static int header_cut(int fd, const struct record *rec)
{
	struct raw_hdr h1 = { 0 }, h2 = { 0 };
	uint8_t sha[32];
	char hex[65];
	int r = raw_hdr_read_both(fd, &h1, &h2);

	if (r == -EBADMSG) {
		r = 1;
	} else if (r == 0 && rec->ks_sha[0]) {
		r = keyslot_areas_sha256(fd, h1.json, sha);
		if (r == 0) {
			hex32(sha, hex);
			r = strcmp(hex, rec->ks_sha) != 0;
		} else if (r == -EBADMSG || r == -EIO) {
			r = 1;
		}
	}
	raw_hdr_done(&h1);
	raw_hdr_done(&h2);
	return r;
}

/* MOVED_CUT: the recorded segment is at the tail, the start of the device is not that
 * segment (an undo finished) and not a whole header. Decided before crypt_load(), which
 * would "repair" a half-written header by writing its other copy. */
static int moved_cut(int fd, uint64_t part_size, const char *record_path)
{
	struct record rec;
	int r;

	if (!record_path || record_read(record_path, &rec) < 0)
		return 0;
	r = record_matches(fd, part_size, &rec);
	if (r <= 0)
		return r;
	r = ranges_equal(fd, 0, fd, rec.offset, SEG_SIZE);
	if (r != 0)
		return r < 0 ? r : 0;
	return header_cut(fd, &rec);
}

int lr_convert_examine(const char *device, const char *record_path, struct lr_convert_info *info)
{
	_cleanup_close_ int fd = -1;
	struct luks_view v;
	uint32_t bs = 0;
	int r;

	memset(info, 0, sizeof(*info));
	info->state = LR_CONVERT_UNKNOWN;
	fd = open_device(device, O_RDONLY, &info->part_size);
	if (fd < 0)
		return fd;
	r = moved_cut(fd, info->part_size, record_path);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", device, strerror(-r));
	if (r > 0) {
		info->state = LR_CONVERT_MOVED_CUT;
		return 0;
	}
	r = luks_examine(device, fd, info->part_size, info, &v);
	if (r < 0)
		return r;
	if (v.loaded) {
		if (v.ri == CRYPT_REENCRYPT_NONE)
			info->state = LR_CONVERT_DONE;
		else if (v.ri == CRYPT_REENCRYPT_CLEAN || v.ri == CRYPT_REENCRYPT_CRASH)
			info->state = v.stuck ? LR_CONVERT_STUCK_FINAL : LR_CONVERT_ENCRYPTING;
		info->total = v.total;
		info->done = v.done;
		return 0;
	}
	r = ext4_probe(fd, &info->fs_size, &bs, info->fs_uuid);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", device, strerror(-r));
	if (r > 0)
		info->state = info->fs_size + LR_CONVERT_REDUCE <= info->part_size ? LR_CONVERT_SHRUNK : LR_CONVERT_PLAIN;
	return 0;
}

/* ---- template ---- */

int lr_convert_template(const struct lr_convert_template_params *p, struct lr_enroll_result *res)
{
	struct lr_format_params f = {
		.device = p->device,
		.cipher = p->cipher ? p->cipher : lr_cipher_default(),
		.key_bits = p->key_bits,
		.hsm = p->hsm,
		.bind_mask = p->bind_mask,
		.bind_default = p->bind_default,
		.recovery_key = p->recovery_key,
		.recovery_cost = p->recovery_cost,
		.recovery_key_value = p->recovery_key_value,
		.header = p->path,
		.data_offset = LR_CONVERT_DATA_OFFSET,
	};

	return lr_format(&f, res);
}

/* ---- unlock ---- */

int lr_convert_unlock(const char *header, const char *device, struct lr_secret **passphrase)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r, slot;

	r = lr_luks2_load(header, true, &cd);
	if (r < 0)
		return r;
	for (int i = 0; i < crypt_token_max(CRYPT_LUKS2); i++) {
		const char *type, *json;

		if (crypt_token_status(cd, i, &type) == CRYPT_TOKEN_INACTIVE || !type || strcmp(type, LR_TOKEN_TYPE))
			continue;
		r = crypt_token_json_get(cd, i, &json);
		if (r < 0)
			return lr_error_code(r, "cannot read token %d of %s: %s", i, header, strerror(-r));
		return lr_token_unlock(json, device, NULL, passphrase, &slot);
	}
	return lr_error_code(-ENOMSG, "%s has no lockroot token", header);
}

/* ---- shrink ---- */


/* resize2fs -P's minimum size in blocks. -EUCLEAN (nothing logged): the file system was not
 * unmounted cleanly (a power cut, a shutdown that could not remount / read-only), and
 * resize2fs wants e2fsck first. */
static int fs_min_blocks(const char *device, uint64_t *blocks)
{
	char out[4096], *p;
	char *argv[] = { "resize2fs", "-P", (char *)device, NULL };
	int r = lr_run_tool(argv, out, sizeof(out));

	if (r < 0)
		return r;
	if (r != 0 && strstr(out, "Please run 'e2fsck -f")) {
		lr_debug("resize2fs -P %s: %s", device, out);
		return -EUCLEAN;
	}
	p = strstr(out, "minimum size of the filesystem:");
	if (r != 0 || !p)
		return lr_error_code(-EIO, "resize2fs -P %s failed: %s", device, out);
	*blocks = strtoull(p + strlen("minimum size of the filesystem:"), NULL, 10);
	return 0;
}

static int fs_info(const char *device, uint64_t *part, uint64_t *fs_size, uint32_t *bs)
{
	_cleanup_close_ int fd = open_device(device, O_RDONLY, part);
	char uuid[40];
	int r;

	if (fd < 0)
		return fd;
	r = ext4_probe(fd, fs_size, bs, uuid);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", device, strerror(-r));
	if (r == 0)
		return lr_error_code(-EMEDIUMTYPE, "%s holds no ext4 file system: nothing to shrink", device);
	return 0;
}

/* resize2fs truncates an image file to the new file system size; the partition it stands
 * for keeps its size. */
static int keep_file_size(const char *device, uint64_t part)
{
	struct stat st;

	if (stat(device, &st) < 0)
		return lr_error_code(-errno, "cannot stat %s: %s", device, strerror(errno));
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size == part)
		return 0;
	if (truncate(device, (off_t)part) < 0)
		return lr_error_code(-errno, "cannot restore the size of %s: %s", device, strerror(errno));
	return 0;
}

static int fs_check(const char *device, uint64_t target, lr_shrink_step_fn step, void *userdata)
{
	char out[8192];
	char *fsck[] = { "e2fsck", "-fy", (char *)device, NULL };
	int r;

	if (step)
		step(LR_SHRINK_CHECK, target, userdata);
	r = lr_run_tool(fsck, out, sizeof(out));
	lr_debug("e2fsck -fy %s: %s", device, out);
	if (r < 0)
		return r;
	if (r >= 4)
		return lr_error_code(-EIO, "e2fsck -fy %s failed (exit %d): %s", device, r, out);
	return 0;
}

int lr_convert_shrink(const char *device, uint64_t *fs_size, lr_shrink_step_fn step, void *userdata)
{
	char out[8192], size_arg[32];
	char *resize[] = { "resize2fs", (char *)device, size_arg, NULL };
	uint64_t part = 0, size = 0, target, min_blocks = 0;
	uint32_t bs = 0;
	bool checked = false;
	int r;

	r = fs_info(device, &part, &size, &bs);
	if (r < 0)
		return r;
	if (part < LR_CONVERT_REDUCE + SEG_SIZE)
		return lr_error_code(-ENOSPC, "%s is too small to convert", device);
	target = (part - LR_CONVERT_REDUCE) / bs * bs;
	if (size <= target) {
		*fs_size = size;
		return 0;
	}
	/* Refuse before e2fsck writes anything (resize2fs -P only reads), unless the file system
	 * was not unmounted cleanly: then e2fsck first, as the boot's fsck would, and ask again. */
	r = fs_min_blocks(device, &min_blocks);
	if (r == -EUCLEAN) {
		r = fs_check(device, target, step, userdata);
		if (r < 0)
			return r;
		checked = true;
		r = fs_min_blocks(device, &min_blocks);
	}
	if (r == -EUCLEAN)
		return lr_error_code(-EIO, "resize2fs -P %s still asks for e2fsck after e2fsck -fy", device);
	if (r < 0)
		return r;
	if (min_blocks * bs > target)
		return lr_error_code(-ENOSPC, "the file system on %s needs at least %" PRIu64 " MiB, but has to fit in %"
				     PRIu64 " MiB to leave %" PRIu64 " MiB for the LUKS2 header: free some space "
				     "first; nothing %s", device, (min_blocks * bs + (1 << 20) - 1) >> 20,
				     target >> 20, LR_CONVERT_REDUCE >> 20,
				     checked ? "else was changed (e2fsck -fy ran: it was not cleanly unmounted)"
					     : "was changed");
	if (!checked) {
		r = fs_check(device, target, step, userdata);
		if (r < 0)
			return r;
	}
	snprintf(size_arg, sizeof(size_arg), "%" PRIu64 "K", target / 1024);
	if (step)
		step(LR_SHRINK_RESIZE, target, userdata);
	r = lr_run_tool(resize, out, sizeof(out));
	lr_debug("resize2fs %s %s: %s", device, size_arg, out);
	if (r < 0)
		return r;
	if (r != 0)
		return lr_error_code(-EIO, "resize2fs %s %s failed (exit %d): %s", device, size_arg, r, out);
	r = keep_file_size(device, part);
	if (r < 0)
		return r;
	r = fs_info(device, &part, &size, &bs);
	if (r < 0)
		return r;
	if (size > target)
		return lr_error_code(-EIO, "resize2fs left the file system on %s at %" PRIu64 " bytes, more than %" PRIu64,
				     device, size, target);
	*fs_size = size;
	return 0;
}

/* ---- init ---- */

static char *rundir_path(const char *name)
{
	const char *dir = getenv("LOCKROOT_RUNDIR");
	char *p;

	if (!dir || !*dir)
		dir = "/run/lockroot";
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return NULL;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

/* Copy the template to a new 0600 file. */
static int copy_file(const char *from, const char *to)
{
	_cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int out = -1;
	_cleanup_free_ uint8_t *buf = malloc(1 << 20);
	uint64_t off = 0;
	ssize_t k;
	int r;

	if (in < 0)
		return lr_error_code(-errno, "cannot open %s: %s", from, strerror(errno));
	if (!buf)
		return -ENOMEM;
	out = open(to, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return lr_error_code(-errno, "cannot create %s: %s", to, strerror(errno));
	while ((k = read(in, buf, 1 << 20)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return lr_error_code(-errno, "cannot read %s: %s", from, strerror(errno));
		r = pwrite_full(out, buf, (size_t)k, off);
		if (r < 0)
			return lr_error_code(r, "cannot write %s: %s", to, strerror(-r));
		off += (uint64_t)k;
	}
	return 0;
}

/* Reencryption initialised as cryptsetup reencrypt --encrypt --reduce-device-size does it:
 * on the detached copy, which moves the first segment of device to its tail. */
static int init_on_copy(const char *device, const char *hdr, const struct lr_secret *pass)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	const struct crypt_params_luks2 luks2 = { .sector_size = 512 };
	struct crypt_params_reencrypt params = {
		.mode = CRYPT_REENCRYPT_ENCRYPT,
		.direction = CRYPT_REENCRYPT_BACKWARD,
		.resilience = "datashift",
		.hash = "sha256",
		.data_shift = SEG_SIZE / 512,
		.luks2 = &luks2,
		.flags = CRYPT_REENCRYPT_INITIALIZE_ONLY | CRYPT_REENCRYPT_MOVE_FIRST_SEGMENT,
	};
	char cipher[64], mode[64];
	int r, slot;

	r = crypt_init_data_device(&cd, hdr, device);
	if (r < 0)
		return lr_error_code(r, "cannot open %s with the header %s: %s", device, hdr, strerror(-r));
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	if (r < 0)
		return lr_error_code(r, "the template %s is not a LUKS2 header: %s", hdr, strerror(-r));
	if (crypt_get_data_offset(cd) != SEG_SIZE / 512 || crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
		return lr_error_code(-EINVAL, "the template %s was not made for a conversion (data offset %" PRIu64
				     " sectors)", hdr, crypt_get_data_offset(cd));
	slot = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, (const char *)pass->data, pass->len, 0);
	if (slot < 0)
		return lr_error_code(slot == -ENOENT ? -EPERM : slot, "no keyslot of the template %s opens with that key",
				     hdr);
	/* The reencrypt keyslot's digest is over the volume key: random, so no benchmark (the
	 * CLI reuses the keyslot's PBKDF the same way); saves seconds on a small board. */
	r = crypt_set_pbkdf_type(cd, &(struct crypt_pbkdf_type){ .type = CRYPT_KDF_PBKDF2, .hash = "sha256",
		.iterations = 1000, .flags = CRYPT_PBKDF_NO_BENCHMARK });
	if (r < 0)
		return lr_error_code(r, "cannot set the PBKDF for %s: %s", hdr, strerror(-r));
	snprintf(cipher, sizeof(cipher), "%s", crypt_get_cipher(cd));
	snprintf(mode, sizeof(mode), "%s", crypt_get_cipher_mode(cd));
	r = crypt_reencrypt_init_by_passphrase(cd, NULL, (const char *)pass->data, pass->len, CRYPT_ANY_SLOT, slot,
					       cipher, mode, &params);
	if (r < 0)
		return lr_error_code(r, "cannot initialise the encryption of %s: %s", device, strerror(-r));
	return 0;
}

/* What the init left: the moved segment (read back, compared with the start of device)
 * and the keyslot areas of the header to be written. */
static int init_record(const char *device, const char *hdr, uint64_t part_size, struct record *rec)
{
	_cleanup_close_ int dfd = -1, hfd = -1;
	struct raw_hdr h = { 0 };
	struct json_object *moved;
	uint8_t sha[32];
	uint64_t size;
	int r;

	memset(rec, 0, sizeof(*rec));
	hfd = open(hdr, O_RDONLY | O_CLOEXEC);
	dfd = open_device(device, O_RDONLY, &size);
	if (hfd < 0 || dfd < 0)
		return hfd < 0 ? -errno : dfd;
	r = raw_hdr_read(hfd, 0, &h);
	if (r < 0)
		return lr_error_code(r, "cannot read back the header %s", hdr);
	moved = segment_flagged(h.json, "backup-moved-segment", NULL);
	r = -EINVAL;
	if (!moved || json_u64(moved, "size") != SEG_SIZE || json_u64(moved, "offset") + SEG_SIZE > part_size) {
		lr_error("the initialised header %s has no moved segment of %" PRIu64 " bytes", hdr, SEG_SIZE);
		goto out;
	}
	rec->offset = json_u64(moved, "offset");
	rec->part_size = part_size;
	posix_fadvise(dfd, 0, 0, POSIX_FADV_DONTNEED);
	r = ranges_equal(dfd, 0, dfd, rec->offset, SEG_SIZE);
	if (r <= 0) {
		r = lr_error_code(r < 0 ? r : -EIO, "the first %" PRIu64 " MiB of %s, moved to offset %" PRIu64
				  ", do not read back the same: nothing else was changed", SEG_SIZE >> 20, device,
				  rec->offset);
		goto out;
	}
	r = sha256_range(dfd, rec->offset, SEG_SIZE, sha);
	if (r == 0) {
		hex32(sha, rec->seg_sha);
		r = keyslot_areas_sha256(hfd, h.json, sha);
	}
	if (r == 0)
		hex32(sha, rec->ks_sha);
out:
	raw_hdr_done(&h);
	return r;
}

static int header_place(const char *device, const char *hdr)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r, fd;

	r = lr_crypt_init(device, &cd);
	if (r < 0)
		return r;
	r = crypt_header_restore(cd, CRYPT_LUKS2, hdr);
	if (r < 0)
		return lr_error_code(r, "cannot write the LUKS2 header to %s: %s", device, strerror(-r));
	fd = open(device, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	return r < 0 ? lr_error_code(r, "cannot sync %s: %s", device, strerror(-r)) : 0;
}

/* The header on device is what it should be now: its reencryption status is want, and the
 * key opens a keyslot. what: the header, for the messages. */
static int header_verify(const char *device, const struct lr_secret *pass, crypt_reencrypt_info want,
			 const char *what)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	int r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	if (crypt_reencrypt_status(cd, NULL) != want)
		return lr_error_code(-EIO, "%s of %s %s", what, device, want == CRYPT_REENCRYPT_NONE ?
				     "still shows an encryption in progress" : "shows no encryption in progress");
	r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, (const char *)pass->data, pass->len, 0);
	if (r < 0)
		return lr_error_code(r, "%s of %s does not open with the key: %s", what, device, strerror(-r));
	return 0;
}

static uint64_t test_cut_header;

void lr_convert_test_cut_header(uint64_t bytes)
{
	test_cut_header = bytes;
}

/* The first len bytes of the header file hdr on device, synced: a header write cut short. */
static int header_place_prefix(const char *device, const char *hdr, uint64_t len)
{
	_cleanup_close_ int hfd = open(hdr, O_RDONLY | O_CLOEXEC), dfd = -1;
	uint8_t *buf;
	int r;

	if (hfd < 0 || len > LR_CONVERT_DATA_OFFSET || !(buf = malloc(len)))
		return hfd < 0 ? -errno : -EINVAL;
	r = pread_full(hfd, buf, len, 0);
	if (r == 0) {
		dfd = open(device, O_RDWR | O_CLOEXEC);
		r = dfd < 0 ? -errno : pwrite_full(dfd, buf, len, 0);
	}
	if (r == 0 && fsync(dfd) < 0)
		r = -errno;
	/* keyslot areas, like the header file this came from (wiped after use) */
	OPENSSL_cleanse(buf, len);
	free(buf);
	return r;
}

int lr_convert_init(const char *device, const char *template_path, const char *record_path,
		    const struct lr_secret *passphrase)
{
	_cleanup_free_ char *tmp = NULL;
	struct lr_convert_info info;
	struct record rec;
	char name[64];
	int r;

	r = lr_convert_examine(device, NULL, &info);
	if (r < 0)
		return r;
	if (info.state != LR_CONVERT_SHRUNK)
		return lr_error_code(info.state == LR_CONVERT_PLAIN ? -ENOSPC : -EMEDIUMTYPE,
				     "%s is %s, not a shrunk ext4 file system: nothing was changed", device,
				     lr_convert_state_name(info.state));
	snprintf(name, sizeof(name), "convert-%ld.hdr", (long)getpid());
	tmp = rundir_path(name);
	if (!tmp)
		return lr_error_code(-errno ? -errno : -ENOMEM, "cannot create the run directory: %s", strerror(errno));
	r = copy_file(template_path, tmp);
	if (r < 0)
		goto out;
	r = init_on_copy(device, tmp, passphrase);
	if (r < 0)
		goto out;
	r = init_record(device, tmp, info.part_size, &rec);
	if (r < 0)
		goto out;
	/* From here a cut leaves the device neither ext4 nor LUKS2: the record says how back. */
	r = record_write(record_path, &rec);
	if (r < 0)
		goto out;
	if (test_cut_header) {
		r = header_place_prefix(device, tmp, test_cut_header);
		if (r == 0)
			r = -ECANCELED;
		goto out;
	}
	r = header_place(device, tmp);
	if (r < 0)
		goto out;
	r = header_verify(device, passphrase, CRYPT_REENCRYPT_CLEAN, "the header written");
out:
	if (access(tmp, F_OK) == 0)
		lr_convert_wipe_file(tmp);
	return r;
}

/* ---- undo a cut header write ---- */

int lr_convert_undo_cut(const char *device, const char *record_path)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ uint8_t *buf = NULL;
	struct lr_convert_info info;
	struct record rec;
	uint64_t size;
	int r;

	r = lr_convert_examine(device, record_path, &info);
	if (r < 0)
		return r;
	if (info.state != LR_CONVERT_MOVED_CUT)
		return lr_error_code(-EINVAL, "%s is %s, not a cut header write: nothing was changed", device,
				     lr_convert_state_name(info.state));
	r = record_read(record_path, &rec);
	if (r < 0)
		return lr_error_code(r, "cannot read %s: %s", record_path, strerror(-r));
	fd = open_device(device, O_RDWR, &size);
	if (fd < 0)
		return fd;
	buf = malloc(SEG_SIZE);
	if (!buf)
		return -ENOMEM;
	r = pread_full(fd, buf, SEG_SIZE, rec.offset);
	if (r == 0)
		r = pwrite_full(fd, buf, SEG_SIZE, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0)
		return lr_error_code(r, "cannot copy the first segment back to %s: %s", device, strerror(-r));
	posix_fadvise(fd, 0, SEG_SIZE, POSIX_FADV_DONTNEED);
	r = ranges_equal(fd, 0, fd, rec.offset, SEG_SIZE);
	if (r == 1)
		r = record_matches(fd, size, &rec);
	if (r <= 0)
		return lr_error_code(r < 0 ? r : -EIO, "the first segment of %s does not read back as recorded in %s",
				     device, record_path);
	if (unlink(record_path) < 0 || lr_fsync_dir_of(record_path) < 0)
		return lr_error_code(-errno, "cannot remove %s: %s", record_path, strerror(errno));
	return 0;
}

/* ---- run ---- */

struct progress_adapter {
	lr_convert_progress_fn fn;
	void *userdata;
};

static int progress_cb(uint64_t size, uint64_t offset, void *usrptr)
{
	struct progress_adapter *a = usrptr;

	return a->fn ? a->fn(offset, size, a->userdata) : 0;
}

int lr_convert_run(const char *device, const char *name, const struct lr_secret *passphrase,
		   lr_convert_progress_fn progress, void *userdata)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	struct crypt_params_reencrypt params = { .flags = CRYPT_REENCRYPT_RESUME_ONLY };
	struct progress_adapter a = { progress, userdata };
	crypt_reencrypt_info ri;
	int r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	ri = crypt_reencrypt_status(cd, NULL);
	if (ri == CRYPT_REENCRYPT_NONE)
		return lr_error_code(-EINVAL, "%s has no encryption in progress", device);
	r = crypt_reencrypt_init_by_passphrase(cd, name, (const char *)passphrase->data, passphrase->len,
					       CRYPT_ANY_SLOT, CRYPT_ANY_SLOT, NULL, NULL, &params);
	if (r < 0)
		return lr_error_code(r == -ENOENT ? -EPERM : r, "cannot resume the encryption of %s: %s", device,
				     strerror(-r));
	r = crypt_reencrypt_run(cd, progress_cb, &a);
	if (r < 0)
		return lr_error_code(r, "the encryption of %s failed: %s (it resumes where it stopped)", device,
				     strerror(-r));
	ri = crypt_reencrypt_status(cd, NULL);
	if (ri == CRYPT_REENCRYPT_NONE)
		return 0;
	if (ri == CRYPT_REENCRYPT_CLEAN)
		return 1;
	return lr_error_code(-EIO, "the encryption of %s stopped in an unclean state", device);
}

/* ---- finalize a reencryption cut after its last chunk ---- */

static int digest_verify(struct json_object *digest, const struct lr_secret *vk)
{
	_cleanup_free_ uint8_t *salt = NULL, *want = NULL;
	const char *hash = json_str(digest, "hash");
	uint8_t got[64];
	size_t salt_len, want_len;
	const EVP_MD *md;
	struct json_object *it;
	int iter;

	if (strcmp(json_str(digest, "type"), "pbkdf2") || !*hash || !(md = EVP_get_digestbyname(hash)) ||
	    !json_object_object_get_ex(digest, "iterations", &it) || (iter = json_object_get_int(it)) <= 0 ||
	    lr_base64_decode(json_str(digest, "salt"), &salt, &salt_len) < 0 ||
	    lr_base64_decode(json_str(digest, "digest"), &want, &want_len) < 0 || want_len > sizeof(got))
		return -EBADMSG;
	if (PKCS5_PBKDF2_HMAC((const char *)vk->data, (int)vk->len, salt, (int)salt_len, iter, md, (int)want_len,
			      got) != 1)
		return -EIO;
	return CRYPTO_memcmp(got, want, want_len) == 0 ? 0 : -EPERM;
}

static struct json_object *string_array_filtered(struct json_object *arr, struct json_object *keep,
						 const char *from, const char *to)
{
	struct json_object *out = json_object_new_array();

	for (size_t i = 0; out && arr && i < json_object_array_length(arr); i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(arr, i));

		if (from && strcmp(s, from) == 0)
			json_object_array_add(out, json_object_new_string(to));
		else if (keep && json_object_object_get_ex(keep, s, NULL))
			json_object_array_add(out, json_object_new_string(s));
	}
	return out;
}

/* The metadata a finished encryption leaves: the final segment as "0", no reencrypt
 * keyslot, digests of what remains, no online-reencrypt requirement. */
static int finished_json(struct json_object *old, struct json_object **out)
{
	_cleanup_json_ struct json_object *root = NULL;
	struct json_object *keyslots, *segs, *digests, *tokens, *config, *reqs, *mand, *fin, *fin_copy = NULL;
	const char *fin_id = NULL;

	if (json_object_deep_copy(old, &root, NULL) < 0)
		return -ENOMEM;
	fin = segment_flagged(root, "backup-final", &fin_id);
	keyslots = json_section(root, "keyslots");
	digests = json_section(root, "digests");
	config = json_section(root, "config");
	if (!fin || !keyslots || !digests || !config)
		return -EBADMSG;
	/* Keyslots: all but the reencrypt one. */
	{
		char drop[32][8];
		int n = 0;

		json_object_object_foreach(keyslots, key, ks)
			if (strcmp(json_str(ks, "type"), "reencrypt") == 0 && n < 32)
				snprintf(drop[n++], sizeof(drop[0]), "%s", key);
		for (int i = 0; i < n; i++)
			json_object_object_del(keyslots, drop[i]);
	}
	/* Segments: only the final one, as "0", without its backup flag. */
	if (json_object_deep_copy(fin, &fin_copy, NULL) < 0)
		return -ENOMEM;
	json_object_object_del(fin_copy, "flags");
	segs = json_object_new_object();
	json_object_object_add(segs, "0", fin_copy);
	/* Digests: referencing remaining keyslots, the final segment as "0"; unused ones go. */
	{
		char drop[32][8];
		int n = 0;

		json_object_object_foreach(digests, key, d) {
			struct json_object *ks = string_array_filtered(json_object_object_get(d, "keyslots"), keyslots,
								       NULL, NULL);
			struct json_object *sg = string_array_filtered(json_object_object_get(d, "segments"), NULL,
								       fin_id, "0");

			if (json_object_array_length(ks) == 0 && json_object_array_length(sg) == 0 && n < 32)
				snprintf(drop[n++], sizeof(drop[0]), "%s", key);
			json_object_object_add(d, "keyslots", ks);
			json_object_object_add(d, "segments", sg);
		}
		for (int i = 0; i < n; i++)
			json_object_object_del(digests, drop[i]);
	}
	json_object_object_add(root, "segments", segs);
	/* Tokens keep only keyslots that remain. */
	tokens = json_section(root, "tokens");
	if (tokens) {
		json_object_object_foreach(tokens, key, t) {
			(void)key;
			if (json_object_object_get_ex(t, "keyslots", NULL))
				json_object_object_add(t, "keyslots", string_array_filtered(
					json_object_object_get(t, "keyslots"), keyslots, NULL, NULL));
		}
	}
	/* Requirements: online-reencrypt* removed; empty containers removed as libcryptsetup does. */
	if (json_object_object_get_ex(config, "requirements", &reqs)) {
		if (json_object_object_get_ex(reqs, "mandatory", &mand)) {
			struct json_object *keep = json_object_new_array();

			for (size_t i = 0; i < json_object_array_length(mand); i++) {
				const char *s = json_object_get_string(json_object_array_get_idx(mand, i));

				if (strncmp(s, "online-reencrypt", 16) != 0)
					json_object_array_add(keep, json_object_new_string(s));
			}
			if (json_object_array_length(keep) > 0)
				json_object_object_add(reqs, "mandatory", keep);
			else {
				json_object_put(keep);
				json_object_object_del(reqs, "mandatory");
			}
		}
		if (json_object_object_length(reqs) == 0)
			json_object_object_del(config, "requirements");
	}
	*out = root;
	root = NULL;
	return 0;
}

/* Volume key from the passphrase, checked against the digest of the final segment. */
static int stuck_volume_key(struct crypt_device *cd, struct json_object *root, const struct lr_secret *pass,
			    struct lr_secret **out)
{
	_cleanup_secret_ struct lr_secret *vk = NULL;
	const char *fin_id = NULL;
	struct json_object *digest;
	int r, size = crypt_get_volume_key_size(cd);

	if (!segment_flagged(root, "backup-final", &fin_id) || !(digest = digest_for_segment(root, fin_id)))
		return -EBADMSG;
	vk = lr_secret_new(size > 0 ? (size_t)size : 64);
	if (!vk)
		return -ENOMEM;
	vk->len = vk->cap;
	r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *)vk->data, &vk->len, (const char *)pass->data, pass->len);
	if (r < 0)
		return r == -ENOENT ? -EPERM : r;
	r = digest_verify(digest, vk);
	if (r < 0)
		return r;
	*out = vk;
	vk = NULL;
	return 0;
}

static int stuck_check(const char *device, const struct lr_secret *pass, struct json_object *root)
{
	_cleanup_crypt_ struct crypt_device *cd = NULL;
	_cleanup_secret_ struct lr_secret *vk = NULL;
	struct crypt_params_reencrypt params = { 0 };
	uint32_t reqs = 0;
	int r;

	r = lr_luks2_load(device, false, &cd);
	if (r < 0)
		return r;
	if (crypt_reencrypt_status(cd, &params) != CRYPT_REENCRYPT_CLEAN || params.mode != CRYPT_REENCRYPT_ENCRYPT ||
	    crypt_persistent_flags_get(cd, CRYPT_FLAGS_REQUIREMENTS, &reqs) < 0 ||
	    !(reqs & CRYPT_REQUIREMENT_ONLINE_REENCRYPT) || !stuck_final(root))
		return lr_error_code(-EINVAL, "%s is not an encryption stopped after its last chunk: nothing was changed",
				     device);
	r = stuck_volume_key(cd, root, pass, &vk);
	if (r == -EPERM)
		return lr_error_code(r, "no keyslot of %s opens with that key: nothing was changed", device);
	if (r < 0)
		return lr_error_code(r, "cannot prove the volume key of %s: %s; nothing was changed", device,
				     strerror(-r));
	return 0;
}

int lr_convert_finalize_stuck(const char *device, const struct lr_secret *passphrase)
{
	_cleanup_close_ int fd = -1;
	_cleanup_json_ struct json_object *fin = NULL;
	struct raw_hdr h1 = { 0 }, h2 = { 0 };
	const char *json;
	uint64_t size;
	int r;

	fd = open_device(device, O_RDWR, &size);
	if (fd < 0)
		return fd;
	r = raw_hdr_read_both(fd, &h1, &h2);
	if (r < 0) {
		r = lr_error_code(r == -EBADMSG ? -EMEDIUMTYPE : r, "%s has no valid pair of LUKS2 headers", device);
		goto out;
	}
	r = stuck_check(device, passphrase, h1.json);
	if (r < 0)
		goto out;
	r = finished_json(h1.json, &fin);
	if (r < 0) {
		r = lr_error_code(r, "cannot build the finished metadata of %s", device);
		goto out;
	}
	json = json_object_to_json_string_ext(fin, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	h1.seqid++;
	h2.seqid = h1.seqid;
	r = raw_hdr_write(fd, 0, &h1, json);
	if (r == 0)
		r = raw_hdr_write(fd, h1.hdr_size, &h2, json);
	if (r < 0) {
		r = lr_error_code(r, "cannot write the LUKS2 header of %s: %s", device, strerror(-r));
		goto out;
	}
	close(fd);
	fd = -1;
	r = header_verify(device, passphrase, CRYPT_REENCRYPT_NONE, "the finished header");
	if (r == 0)
		lr_info("%s: encryption finalised", device);
out:
	raw_hdr_done(&h1);
	raw_hdr_done(&h2);
	return r;
}

/* ---- wipe ---- */

int lr_convert_wipe_file(const char *path)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_free_ uint8_t *zeros = calloc(1, 1 << 20);
	uint64_t size, off = 0;
	int r = 0;

	if (fd < 0)
		return lr_error_code(-errno, "cannot open %s: %s", path, strerror(errno));
	if (!zeros)
		return -ENOMEM;
	r = fd_size(fd, &size);
	while (r == 0 && off < size) {
		size_t n = size - off < (1 << 20) ? (size_t)(size - off) : (1 << 20);

		r = pwrite_full(fd, zeros, n, off);
		off += n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0)
		lr_warn("cannot overwrite %s: %s", path, strerror(-r));
	if (unlink(path) < 0)
		return lr_error_code(-errno, "cannot remove %s: %s", path, strerror(errno));
	lr_fsync_dir_of(path);
	return r;
}
