/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host fingerprint. Every sysfs/procfs access goes through lr_sysroot_*() so the tests can
 * present a fake host; only stat() of the volume itself (and of a loop device's backing file)
 * looks at the real file system, because those paths are real.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fingerprint.h"
#include "log.h"
#include "util.h"

/* Loop devices and device-mapper stacks we follow down to a physical disk. */
#define MAX_LOWER_DEPTH 8

static const struct {
	const char *name;
	const char *description;
	const char *looked; /* where it is searched, for "not found" messages */
} components[LR_COMP_MAX] = {
	[LR_COMP_BOARD_SERIAL] = { "board-serial", "board serial",
		"/proc/device-tree/serial-number (or /sys/firmware/devicetree/base/serial-number, "
		"or the Serial line of /proc/cpuinfo)" },
	[LR_COMP_SD_CID] = { "sd-cid", "SD card CID", "/sys/block/mmcblk*/device/cid" },
	[LR_COMP_DISK_SERIAL] = { "disk-serial", "disk serial",
		"serial (or device/serial, device/vpd_pg80, device/wwid) of the volume's disk "
		"under /sys/dev/block" },
	[LR_COMP_DMI_UUID] = { "dmi-uuid", "DMI product UUID", "/sys/class/dmi/id/product_uuid" },
	[LR_COMP_BOOT_FILES] = { "boot-files", "boot files",
		"the boot partition (config.txt, cmdline.txt, kernel, initramfs, device trees)" },
};

static const char disk_serial_files[][16] = { "serial", "device/serial", "device/vpd_pg80", "device/wwid" };

const char *lr_component_name(int id)
{
	if (id < 0 || id >= LR_COMP_MAX)
		return "unknown";
	return components[id].name;
}

const char *lr_component_description(int id)
{
	if (id < 0 || id >= LR_COMP_MAX)
		return "unknown component";
	return components[id].description;
}

int lr_component_from_name(const char *name)
{
	for (int i = 0; i < LR_COMP_MAX; i++)
		if (name && strcmp(name, components[i].name) == 0)
			return i;
	return -EINVAL;
}

int lr_bind_parse(const char *list, uint32_t *mask, bool *is_default)
{
	_cleanup_free_ char *copy = NULL;
	char *tok, *save = NULL;
	uint32_t m = 0;

	if (!list || !*list || strcmp(list, "default") == 0) {
		*mask = 0;
		*is_default = true;
		return 0;
	}
	if (strcmp(list, "none") == 0) {
		*mask = LR_BIND_NONE;
		*is_default = false;
		return 0;
	}
	copy = strdup(list);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int id = lr_component_from_name(tok);

		if (id < 0)
			return lr_error_code(-EINVAL, "unknown component '%s' (known: board-serial, sd-cid, "
					     "disk-serial, dmi-uuid, boot-files)", tok);
		m |= 1u << id;
	}
	/* "," alone must not silently mean "none". */
	if (!m)
		return lr_error_code(-EINVAL, "empty component list '%s'; use 'none' to bind to nothing", list);
	*mask = m;
	*is_default = false;
	return 0;
}

void lr_bind_format(uint32_t mask, char *buf, size_t size)
{
	size_t off = 0;

	if (!size)
		return;
	buf[0] = '\0';
	if (!(mask & LR_BIND_ALL)) {
		snprintf(buf, size, "none");
		return;
	}
	for (int i = 0; i < LR_COMP_MAX && off < size; i++) {
		int n;

		if (!(mask & (1u << i)))
			continue;
		n = snprintf(buf + off, size - off, "%s%s", off ? "," : "", components[i].name);
		if (n < 0)
			return;
		off += (size_t)n;
	}
}

char *lr_component_canonical(int id, const char *raw, size_t len)
{
	size_t start = 0;
	char *v;

	if (id < 0 || id >= LR_COMP_MAX || !raw)
		return NULL;
	/* Device tree strings end with a NUL; whatever follows it is not part of the value. */
	len = strnlen(raw, len);
	while (len > 0 && isspace((unsigned char)raw[len - 1]))
		len--;
	while (start < len && isspace((unsigned char)raw[start]))
		start++;
	if (id == LR_COMP_BOARD_SERIAL && len - start > 2 && raw[start] == '0' &&
	    tolower((unsigned char)raw[start + 1]) == 'x')
		start += 2;
	if (start == len)
		return NULL;
	v = strndup(raw + start, len - start);
	if (!v)
		return NULL;
	/* Disk serials are opaque strings whose case may matter; the others are hex. */
	if (id != LR_COMP_DISK_SERIAL)
		for (char *p = v; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	return v;
}

static bool only_chars(const char *s, const char *set)
{
	return s[strspn(s, set)] == '\0';
}

/* Values that are present but identify nothing: unprogrammed serials, placeholder UUIDs. */
static bool is_unusable(int id, const char *v)
{
	switch (id) {
	case LR_COMP_BOARD_SERIAL:
		return only_chars(v, "0");
	case LR_COMP_SD_CID:
		return strlen(v) != 32 || !only_chars(v, "0123456789abcdef") || only_chars(v, "0");
	case LR_COMP_DMI_UUID:
		return only_chars(v, "0-") || only_chars(v, "f-");
	default:
		return false;
	}
}

/* Keep the first error that says more than "not there". */
static int worse(int err, int r)
{
	return err == -ENOENT ? r : err;
}

static int set_component(struct lr_component *c, int id, const char *raw, size_t len, const char *source)
{
	char *v = lr_component_canonical(id, raw, len);

	if (!v || is_unusable(id, v)) {
		lr_debug("%s: %s holds no usable value", components[id].name, source);
		free(v);
		return -ENODATA;
	}
	c->source = strdup(source);
	if (!c->source) {
		free(v);
		return -ENOMEM;
	}
	free(c->value);
	c->value = v;
	return 0;
}

static int read_component(struct lr_component *c, int id, const char *path)
{
	_cleanup_free_ char *raw = NULL;
	size_t len = 0;
	int r;

	r = lr_sysroot_read(path, &raw, &len);
	if (r < 0) {
		lr_debug("%s: cannot read %s: %s", components[id].name, path, strerror(-r));
		return r;
	}
	return set_component(c, id, raw, len, path);
}

static bool sys_exists(const char *path)
{
	_cleanup_free_ char *real = lr_sysroot_path(path);
	struct stat st;

	return real && stat(real, &st) == 0;
}

/* The value of "Key<blanks>: value" in /proc/cpuinfo, not NUL-terminated. */
static const char *cpuinfo_field(const char *text, const char *key, size_t *len)
{
	size_t klen = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *p = l + klen;

		if (strncmp(l, key, klen) != 0)
			continue;
		p += strspn(p, " \t");
		if (*p != ':')
			continue;
		p++;
		*len = strcspn(p, "\n");
		return p;
	}
	return NULL;
}

static int read_board_serial(struct lr_component *c)
{
	static const char *const dt[] = {
		"/proc/device-tree/serial-number",
		"/sys/firmware/devicetree/base/serial-number",
	};
	_cleanup_free_ char *cpuinfo = NULL;
	const char *v;
	size_t len = 0;
	int r, err = -ENOENT;

	for (size_t i = 0; i < LR_ELEMENTSOF(dt); i++) {
		r = read_component(c, LR_COMP_BOARD_SERIAL, dt[i]);
		if (r == 0 || r == -ENOMEM)
			return r;
		err = worse(err, r);
	}
	r = lr_sysroot_read("/proc/cpuinfo", &cpuinfo, &len);
	if (r < 0)
		return r == -ENOMEM ? r : worse(err, r);
	v = cpuinfo_field(cpuinfo, "Serial", &len);
	if (!v)
		return err;
	r = set_component(c, LR_COMP_BOARD_SERIAL, v, len, "/proc/cpuinfo");
	return r == 0 || r == -ENOMEM ? r : worse(err, r);
}

/* "mmcblk3" → 3; partitions and boot/rpmb areas (mmcblk0p1, mmcblk0boot0) do not match. */
static bool parse_mmcblk(const char *name, unsigned *n)
{
	int end = 0;

	if (strncmp(name, "mmcblk", 6) != 0 || !isdigit((unsigned char)name[6]))
		return false;
	return sscanf(name, "mmcblk%u%n", n, &end) == 1 && name[end] == '\0';
}

static bool mmcblk_is_card(unsigned n)
{
	_cleanup_free_ char *type = NULL;
	char path[64];

	snprintf(path, sizeof(path), "/sys/block/mmcblk%u/device/type", n);
	if (lr_sysroot_read(path, &type, NULL) < 0)
		return false;
	type[strcspn(type, " \t\n")] = '\0';
	return strcmp(type, "SD") == 0 || strcmp(type, "MMC") == 0;
}

/* The lowest-numbered SD card or eMMC: mmcblk0 on a Pi booted from its card slot. */
static int find_sd_card(unsigned *n)
{
	_cleanup_free_ char *path = lr_sysroot_path("/sys/block");
	struct dirent *de;
	bool found = false;
	DIR *d;

	if (!path)
		return -ENOMEM;
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		unsigned k;

		if (!parse_mmcblk(de->d_name, &k) || (found && k >= *n) || !mmcblk_is_card(k))
			continue;
		*n = k;
		found = true;
	}
	closedir(d);
	return found ? 0 : -ENOENT;
}

static int read_sd_cid(const char *disk_name, struct lr_component *c)
{
	char path[64];
	unsigned n;
	int r;

	if (!disk_name || !parse_mmcblk(disk_name, &n)) {
		r = find_sd_card(&n);
		if (r < 0)
			return r;
	}
	snprintf(path, sizeof(path), "/sys/block/mmcblk%u/device/cid", n);
	return read_component(c, LR_COMP_SD_CID, path);
}

/* The device number the volume lives on: the block device itself, or the file system holding
 * an image file (or a loop device's backing file). */
static int dev_of_path(const char *path, dev_t *dev)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		*dev = st.st_rdev;
	else if (S_ISREG(st.st_mode))
		*dev = st.st_dev;
	else
		return -ENOTBLK;
	return 0;
}

/* real is a resolved path under the sysroot; give it back as the host would see it. */
static int strip_sysroot(const char *real, char **out)
{
	_cleanup_free_ char *root = lr_sysroot_path("/");
	_cleanup_free_ char *rroot = NULL;
	size_t n;

	if (!root)
		return -ENOMEM;
	rroot = realpath(root, NULL);
	if (!rroot)
		return -errno;
	n = strlen(rroot);
	if (strcmp(rroot, "/") == 0)
		n = 0;
	else if (strncmp(real, rroot, n) != 0 || real[n] != '/')
		return -ENOENT; /* a link leading out of the fake host */
	*out = strdup(real + n);
	return *out ? 0 : -ENOMEM;
}

/* The sysfs directory of the whole disk holding dev, e.g. /sys/devices/.../block/sda. */
static int disk_dir_of(dev_t dev, char **out)
{
	_cleanup_free_ char *link = NULL, *real = NULL, *dir = NULL, *part = NULL;
	char path[64];
	char *slash;
	int r;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	link = lr_sysroot_path(path);
	if (!link)
		return -ENOMEM;
	real = realpath(link, NULL);
	if (!real)
		return -errno;
	r = strip_sysroot(real, &dir);
	if (r < 0)
		return r;
	/* A partition's directory sits inside its disk's. */
	if (asprintf(&part, "%s/partition", dir) < 0)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (sys_exists(part) && slash && slash != dir)
		*slash = '\0';
	*out = dir;
	dir = NULL;
	return 0;
}

/* A dm/md device with exactly one slave: the device number of that slave. */
static int single_slave(const char *dir, dev_t *dev)
{
	_cleanup_free_ char *sub = NULL, *path = NULL, *devno = NULL, *name = NULL;
	unsigned maj, min, count = 0;
	struct dirent *de;
	DIR *d;
	int r;

	if (asprintf(&sub, "%s/slaves", dir) < 0)
		return -ENOMEM;
	path = lr_sysroot_path(sub);
	if (!path)
		return -ENOMEM;
	d = opendir(path);
	if (!d)
		return -ENOENT;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && count++ == 0)
			name = strdup(de->d_name);
	closedir(d);
	if (count != 1)
		return -ENOENT;
	if (!name)
		return -ENOMEM;
	free(sub);
	sub = NULL;
	if (asprintf(&sub, "/sys/class/block/%s/dev", name) < 0)
		return -ENOMEM;
	r = lr_sysroot_read(sub, &devno, NULL);
	if (r < 0)
		return r;
	if (sscanf(devno, "%u:%u", &maj, &min) != 2)
		return -EBADMSG;
	*dev = makedev(maj, min);
	return 0;
}

/* Step from a loop device to its backing file, or from a dm/md device to its one slave.
 * 1 when dev was changed, 0 when dir is a disk of its own. */
static int lower_device(const char *dir, dev_t *dev)
{
	_cleanup_free_ char *sub = NULL, *backing = NULL;
	int r;

	if (asprintf(&sub, "%s/loop/backing_file", dir) < 0)
		return -ENOMEM;
	r = lr_sysroot_read(sub, &backing, NULL);
	if (r == 0) {
		backing[strcspn(backing, "\n")] = '\0';
		r = dev_of_path(backing, dev);
		if (r < 0)
			lr_debug("disk-serial: cannot stat loop backing file %s: %s", backing, strerror(-r));
		return r < 0 ? r : 1;
	}
	if (r == -ENOMEM)
		return r;
	r = single_slave(dir, dev);
	if (r == -ENOMEM || r == -EBADMSG)
		return r;
	return r == 0 ? 1 : 0;
}

/* The sysfs directory of the physical disk the volume on device lives on. */
static int find_disk(const char *device, char **out)
{
	_cleanup_free_ char *dir = NULL;
	dev_t dev;
	int r;

	r = dev_of_path(device, &dev);
	if (r < 0) {
		lr_debug("disk-serial: cannot stat %s: %s", device, strerror(-r));
		return r;
	}
	for (int depth = 0; depth < MAX_LOWER_DEPTH; depth++) {
		free(dir);
		dir = NULL;
		r = disk_dir_of(dev, &dir);
		if (r < 0) {
			lr_debug("disk-serial: no sysfs entry for %s (%u:%u): %s", device,
				 major(dev), minor(dev), strerror(-r));
			return r;
		}
		r = lower_device(dir, &dev);
		if (r < 0)
			return r;
		if (r == 0) {
			*out = dir;
			dir = NULL;
			return 0;
		}
	}
	return -ELOOP;
}

static int read_disk_file(const char *dir, const char *file, struct lr_component *c)
{
	_cleanup_free_ char *path = NULL, *raw = NULL, *shown = NULL;
	const char *base = strrchr(dir, '/') + 1;
	const char *v;
	size_t len = 0;
	int r;

	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	r = lr_sysroot_read(path, &raw, &len);
	if (r < 0)
		return r;
	v = raw;
	/* SCSI VPD page 0x80: 4-byte header, the length of the serial in bytes 2-3. */
	if (strcmp(file, "device/vpd_pg80") == 0) {
		size_t n;

		if (len < 4)
			return -ENODATA;
		n = (size_t)(uint8_t)raw[2] << 8 | (uint8_t)raw[3];
		len = n < len - 4 ? n : len - 4;
		v = raw + 4;
	}
	/* Show the short name the user knows (/sys/block/sda is a link to dir). */
	if (strchr(base, ':'))
		r = asprintf(&shown, "%s", path);
	else
		r = asprintf(&shown, "/sys/block/%s/%s", base, file);
	if (r < 0)
		return -ENOMEM;
	return set_component(c, LR_COMP_DISK_SERIAL, v, len, shown);
}

static int read_disk_serial(const char *dir, struct lr_component *c)
{
	int r, err = -ENOENT;

	for (size_t i = 0; i < LR_ELEMENTSOF(disk_serial_files); i++) {
		r = read_disk_file(dir, disk_serial_files[i], c);
		if (r == 0 || r == -ENOMEM)
			return r;
		err = worse(err, r);
	}
	lr_debug("disk-serial: no serial in %s", dir);
	return err;
}

int lr_fingerprint_read(const char *device, struct lr_fingerprint *fp)
{
	_cleanup_free_ char *disk = NULL;
	struct lr_component *c = fp->comp;
	int r;

	memset(fp, 0, sizeof(*fp));
	/* Not only Raspberry Pis: any device-tree board gets the board-serial + card defaults,
	 * which are the components such boards have. */
	fp->is_pi = sys_exists("/proc/device-tree/model") || sys_exists("/sys/firmware/devicetree/base/model");

	c[LR_COMP_BOARD_SERIAL].error = read_board_serial(&c[LR_COMP_BOARD_SERIAL]);
	if (!device)
		c[LR_COMP_DISK_SERIAL].error = -ENODEV;
	else {
		r = find_disk(device, &disk);
		c[LR_COMP_DISK_SERIAL].error = r < 0 ? r : read_disk_serial(disk, &c[LR_COMP_DISK_SERIAL]);
	}
	c[LR_COMP_SD_CID].error = read_sd_cid(disk ? strrchr(disk, '/') + 1 : NULL, &c[LR_COMP_SD_CID]);
	c[LR_COMP_DMI_UUID].error = read_component(&c[LR_COMP_DMI_UUID], LR_COMP_DMI_UUID,
						   "/sys/class/dmi/id/product_uuid");
	c[LR_COMP_BOOT_FILES].error = -ENOENT; /* measured by lr_fingerprint_set_boot_files() */

	r = 0;
	for (int i = 0; i < LR_COMP_MAX; i++)
		if (c[i].error == -ENOMEM)
			r = -ENOMEM;
	if (r < 0)
		lr_fingerprint_done(fp);
	return r;
}

void lr_fingerprint_done(struct lr_fingerprint *fp)
{
	if (!fp)
		return;
	for (int i = 0; i < LR_COMP_MAX; i++) {
		free(fp->comp[i].value);
		free(fp->comp[i].source);
		fp->comp[i].value = fp->comp[i].source = NULL;
	}
}

/* The serial of an SD card is a field of its CID: when the volume is on the bound card,
 * binding the disk serial too adds nothing. Both sources then name the same
 * /sys/block/mmcblkN directory. */
static bool disk_is_sd_card(const struct lr_fingerprint *fp)
{
	const char *sd = fp->comp[LR_COMP_SD_CID].source;
	const char *disk = fp->comp[LR_COMP_DISK_SERIAL].source;
	const char *end;

	if (!sd || !disk)
		return false;
	end = strstr(sd, "/device/cid");
	return end && strncmp(disk, sd, (size_t)(end - sd) + 1) == 0;
}

uint32_t lr_fingerprint_default_mask(const struct lr_fingerprint *fp)
{
	uint32_t want, mask = 0;

	if (fp->is_pi) {
		want = 1u << LR_COMP_BOARD_SERIAL | 1u << LR_COMP_SD_CID;
		if (!disk_is_sd_card(fp))
			want |= 1u << LR_COMP_DISK_SERIAL;
	} else
		want = 1u << LR_COMP_DMI_UUID | 1u << LR_COMP_DISK_SERIAL;
	for (int i = 0; i < LR_COMP_MAX; i++)
		if ((want & (1u << i)) && fp->comp[i].value)
			mask |= 1u << i;
	return mask;
}

static int absent_error(const struct lr_fingerprint *fp, int id)
{
	const char *what = components[id].description, *where = components[id].looked;
	int e = fp->comp[id].error;

	if (e == -ENODEV)
		lr_error("cannot bind to the %s: no volume device given; choose other components with --bind",
			 what);
	else if (e == -ENODATA)
		lr_error("cannot bind to the %s: %s holds no usable value (empty, all zeros or malformed); "
			 "choose other components with --bind", what, where);
	else if (e == -ENOENT || e == 0)
		lr_error("cannot bind to the %s: %s not found; choose other components with --bind", what, where);
	else
		lr_error("cannot bind to the %s: reading %s failed: %s; choose other components with --bind",
			 what, where, strerror(-e));
	return -ENOENT;
}

int lr_fingerprint_digest(const struct lr_fingerprint *fp, uint32_t mask, uint8_t out[32])
{
	static const char magic[] = "lockroot-fingerprint-v1"; /* hashed with its NUL */
	uint8_t *buf = NULL;
	size_t size = sizeof(magic), off = 0;
	int r;

	if (mask & ~LR_BIND_ALL)
		return lr_error_code(-EINVAL, "invalid component mask 0x%x", mask);
	for (int i = 0; i < LR_COMP_MAX; i++) {
		if (!(mask & (1u << i)))
			continue;
		if (!fp->comp[i].value)
			return absent_error(fp, i);
		size += strlen(components[i].name) + 1 + 4 + strlen(fp->comp[i].value);
	}
	buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, magic, sizeof(magic));
	off = sizeof(magic);
	for (int i = 0; i < LR_COMP_MAX; i++) {
		size_t nl, vl;

		if (!(mask & (1u << i)))
			continue;
		nl = strlen(components[i].name) + 1;
		vl = strlen(fp->comp[i].value);
		memcpy(buf + off, components[i].name, nl);
		off += nl;
		buf[off++] = (uint8_t)(vl >> 24);
		buf[off++] = (uint8_t)(vl >> 16);
		buf[off++] = (uint8_t)(vl >> 8);
		buf[off++] = (uint8_t)vl;
		memcpy(buf + off, fp->comp[i].value, vl);
		off += vl;
	}
	r = lr_sha256(buf, off, out);
	/* The digest becomes an auth value: do not leave its preimage lying around. */
	explicit_bzero(buf, size);
	free(buf);
	return r;
}

int lr_component_check(const uint8_t salt[16], int id, const char *value, char out[5])
{
	_cleanup_free_ char *msg = NULL;
	uint8_t mac[32];
	size_t nl, vl;
	int r;

	if (id < 0 || id >= LR_COMP_MAX || !value)
		return -EINVAL;
	nl = strlen(components[id].name) + 1;
	vl = strlen(value);
	msg = malloc(nl + vl);
	if (!msg)
		return -ENOMEM;
	memcpy(msg, components[id].name, nl);
	memcpy(msg + nl, value, vl);
	r = lr_hmac_sha256(salt, 16, msg, nl + vl, mac);
	if (r < 0)
		return r;
	lr_hex(mac, 2, out);
	return 0;
}
