#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# dracut module: lockroot's unlock helper and keyscript, the token plugin, and what the HSM
# backends dlopen() at run time. dracut's crypt module does the unlocking: in a systemd initrd
# systemd-cryptsetup, and otherwise cryptroot-ask's `cryptsetup luksOpen`, both try the LUKS2
# tokens through libcryptsetup's plugins before asking for a passphrase, so the plugin is what
# unlocks there (dracut does not run crypttab keyscripts).

lockroot=@SBINDIR@/lockroot
keyscript=@KEYSCRIPT@
token_plugin=@TOKEN_DIR@/libcryptsetup-token-lockroot.so

# The crypttab source (UUID=, PARTUUID=, a path) as a device path.
lockroot_source_path() {
	case $1 in
	UUID=*) echo "/dev/disk/by-uuid/${1#UUID=}" ;;
	PARTUUID=*) echo "/dev/disk/by-partuuid/${1#PARTUUID=}" ;;
	LABEL=*) echo "/dev/disk/by-label/${1#LABEL=}" ;;
	*) echo "$1" ;;
	esac
}

# called by dracut
check() {
	local crypttab=$dracutsysrootdir/etc/crypttab name dev rest path
	require_binaries "$lockroot" || return 1
	[[ -f $token_plugin ]] || return 1
	[[ -f $crypttab ]] || return 255
	grep -Eq '^[[:space:]]*[^#].*keyscript=[^[:space:],]*lockroot' "$crypttab" && return 0
	# A LUKS2 device in crypttab that has a lockroot token.
	while read -r name dev rest || [[ $name ]]; do
		[[ $name && $name != \#* && $dev ]] || continue
		path=$(lockroot_source_path "$dev")
		[[ -b $path ]] || continue
		cryptsetup luksDump "$path" 2>/dev/null | grep -Eq '^[[:space:]]+[0-9]+: lockroot$' && return 0
	done <"$crypttab"
	return 255
}

# called by dracut
depends() {
	echo crypt
	return 0
}

# called by dracut
installkernel() {
	hostonly='' instmods tpm_tis tpm_tis_core tpm_crb tpm_tis_spi tpm_tis_i2c tpm_tis_i2c_cr50 \
		spi_bcm2835 i2c_bcm2835 dm_crypt aes aes_generic aesni_intel aes_neon_blk aes_neon_bs \
		xts cbc essiv adiantum nhpoly1305 nhpoly1305_sse2 nhpoly1305_avx2 nhpoly1305_neon \
		chacha_generic chacha_x86_64 chacha_neon sha256_generic sha256_ssse3 sha256_arm64 \
		vfat nls_cp437 nls_ascii nls_iso8859_1
	return 0
}

# called by dracut
install() {
	local libdir lib conf mod

	inst_binary "$lockroot"
	inst_script "$keyscript"
	inst_library "$token_plugin"

	# The native library directory is where lockroot's own libraries come from.
	libdir=$(ldd "$lockroot" | sed -n 's|.*=> \(/[^ ]*\)/libjson-c\.so.*|\1|p')
	# Every TCTI but tabrmd, which needs D-Bus and its daemon.
	for lib in "$libdir"/libtss2-tcti*.so.[0-9]*; do
		[[ -e $lib && $lib != */libtss2-tcti-tabrmd.so* ]] && inst_library "$lib"
	done
	# p11-kit loads the modules its configuration names (relative: in its module directory).
	for conf in /usr/share/p11-kit/modules/*.module /etc/pkcs11/modules/*.module /etc/pkcs11/pkcs11.conf; do
		[[ -f $dracutsysrootdir$conf ]] || continue
		inst_simple "$conf"
		while read -r mod; do
			[[ $mod == /* ]] || mod=$libdir/pkcs11/$mod
			[[ -f $dracutsysrootdir$mod ]] && inst_library "$mod"
		done < <(sed -n 's/^[[:space:]]*module:[[:space:]]*//p' "$dracutsysrootdir$conf")
	done
	# SoftHSM's configuration, not its tokens: they hold keys.
	[[ -f $dracutsysrootdir/etc/softhsm/softhsm2.conf ]] && inst_simple /etc/softhsm/softhsm2.conf
	# The PINs of PKCS#11 tokens that unlock at boot (pin-source=file:/etc/lockroot/NAME.pin).
	local pin
	for pin in "$dracutsysrootdir"/etc/lockroot/*.pin; do
		[[ -f $pin ]] || continue
		inst_simple "${pin#"$dracutsysrootdir"}"
		chmod 600 "${initdir}${pin#"$dracutsysrootdir"}"
	done
	inst_hook pre-trigger 10 "$moddir/lockroot-tpm.sh"
}
