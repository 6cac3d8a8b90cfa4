/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lr_cipher_default() on fake /proc and /lib/modules (LOCKROOT_SYSROOT in a temporary
 * directory): AES-XTS with the CPU's AES instructions (x86 "flags", arm64 "Features"),
 * Adiantum without them when the kernel has it (loaded, a module, built in), AES-XTS with a
 * warning when it has not. No root needed.
 */
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockroot.h"
#include "log.h"

#include "check.h"

#define ADIANTUM "xchacha12,aes-adiantum-plain64"
#define XTS "aes-xts-plain64"

static char tmpdir[PATH_MAX / 2];
static char last_warning[1024];

static void log_hook(int level, const char *msg, void *userdata)
{
	if (level >= LR_LOG_WARN)
		snprintf(last_warning, sizeof(last_warning), "%s", msg);
	check_log_hook(level, msg, userdata);
}

/* Write text to rel under the current sysroot, making its directories. */
static void put(const char *rel, const char *text)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s%s", getenv("LOCKROOT_SYSROOT"), rel);
	check_put_file(getenv("LOCKROOT_SYSROOT"), p, text);
}

static void new_root(const char *name)
{
	check_sysroot_new(tmpdir, name);
	put("/proc/sys/kernel/osrelease", "6.1.0-rpi7-rpi-v8\n");
	last_warning[0] = '\0';
}

static const char *const X86_AES = "processor\t: 0\nflags\t\t: fpu vme sse2 aes avx\n";
static const char *const X86_NO_AES = "processor\t: 0\nflags\t\t: fpu vme sse2 avx\n";
/* A Raspberry Pi 4 (Cortex-A72: no crypto extensions) and a Pi 5 (Cortex-A76: aes). */
static const char *const PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n";
static const char *const PI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n";

static void test_aes_instructions(void)
{
	new_root("x86-aes");
	put("/proc/cpuinfo", X86_AES);
	CHECK_STR(lr_cipher_default(), XTS);
	new_root("pi5");
	put("/proc/cpuinfo", PI5);
	CHECK_STR(lr_cipher_default(), XTS);
	/* "aes" last on the line */
	new_root("aes-last");
	put("/proc/cpuinfo", "Features\t: fp asimd aes\n");
	CHECK_STR(lr_cipher_default(), XTS);
	CHECK_STR(last_warning, "");
}

static void test_adiantum_module(void)
{
	new_root("pi4-module");
	put("/proc/cpuinfo", PI4);
	put("/proc/crypto", "name         : sha256\ndriver       : sha256-generic\n");
	put("/lib/modules/6.1.0-rpi7-rpi-v8/modules.dep",
	    "kernel/crypto/chacha_generic.ko:\nkernel/crypto/adiantum.ko: kernel/crypto/nhpoly1305.ko\n");
	CHECK_STR(lr_cipher_default(), ADIANTUM);
	CHECK_STR(last_warning, "");
	/* "aes" inside another word (e.g. "vaes") is not the flag */
	new_root("x86-vaes-only");
	put("/proc/cpuinfo", "flags\t\t: fpu vaesx sse2\n");
	put("/proc/crypto", "name         : adiantum(xchacha12,aes)\n");
	CHECK_STR(lr_cipher_default(), ADIANTUM);
}

static void test_adiantum_builtin_or_loaded(void)
{
	new_root("builtin");
	put("/proc/cpuinfo", X86_NO_AES);
	put("/lib/modules/6.1.0-rpi7-rpi-v8/modules.builtin", "kernel/crypto/adiantum.ko\n");
	CHECK_STR(lr_cipher_default(), ADIANTUM);
	new_root("loaded");
	put("/proc/cpuinfo", PI4);
	put("/proc/crypto", "name         : adiantum(xchacha12,aes)\ndriver       : adiantum(xchacha12-neon,aes-arm64,nhpoly1305-neon)\n");
	CHECK_STR(lr_cipher_default(), ADIANTUM);
	CHECK_STR(last_warning, "");
}

static void test_no_adiantum(void)
{
	new_root("no-adiantum");
	put("/proc/cpuinfo", PI4);
	put("/proc/crypto", "name         : xts(aes)\n");
	/* another kernel's modules do not count */
	put("/lib/modules/5.10.0-other/modules.dep", "kernel/crypto/adiantum.ko:\n");
	put("/lib/modules/6.1.0-rpi7-rpi-v8/modules.dep", "kernel/crypto/xts.ko:\n");
	CHECK_STR(lr_cipher_default(), XTS);
	CHECK(strstr(last_warning, "no Adiantum") != NULL);
}

static void test_unreadable_cpuinfo(void)
{
	new_root("no-cpuinfo");
	CHECK_STR(lr_cipher_default(), XTS);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/lockroot-cipher-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	lr_set_log(log_hook, NULL);
	test_aes_instructions();
	test_adiantum_module();
	test_adiantum_builtin_or_loaded();
	test_no_adiantum();
	test_unreadable_cpuinfo();
	check_rm_tree(tmpdir);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
