#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot provision (the first boot of a fleet unit, lib/provision.c) on LUKS2 image files with a
# real software TPM, on a host presented as a Raspberry Pi 4: a volume shaped as lockroot image
# leaves it (one keyslot for the provisioning key, marked by a lockroot-provision token) gets the
# unit's TPM keyslot and a recovery keyslot, a record, and loses the provisioning keyslot; what an
# interrupted attempt left is removed; --unique-volume-key's re-key is initialised, re-encrypted
# offline here, and finished (new volume key, tokens on the new keyslots, provisioning token gone).
# Then lockroot image's refusals on bad input (the whole image path boots in scenario 90).
. "$(dirname "$0")/../lib/common.sh"
need_root
need cryptsetup jq mkfs.vfat mkfs.ext4 sfdisk mcopy
start_swtpm
export LOCKROOT_SYSROOT=$T/host
make_pi_sysroot "$LOCKROOT_SYSROOT"
REC=$T/records
mkdir -p "$REC"

# provisioning_volume IMG UNIQUE: what lockroot image leaves (PBKDF2 keyslot 0 + the token).
provisioning_volume() {
	make_luks2 "$1" 64
	printf '%s' 0000-1111-2222-3333-4444-5555-6666-7777 >"$T/pkey"
	cryptsetup luksChangeKey -q "${FAST_PBKDF[@]}" --key-file "$T/pass" "$1" "$T/pkey" || fail "luksChangeKey"
	printf '{"type":"lockroot-provision","keyslots":["0"],"unique_volume_key":%s}' "$2" |
		cryptsetup token import "$1" || fail "token import"
}
vk() { # IMG KEYFILE: the volume key
	cryptsetup luksDump --dump-volume-key --batch-mode --disable-external-tokens --key-file "$2" "$1" |
		sed -n '/MK dump/,$p' | tr -d ' \t\n' | sed 's/MKdump://'
}
provision() { "$LOCKROOT" provision "$1" --key-file "$T/pkey" --record-dir "$REC" --hsm "$HSM" "${FAST_RECOVERY[@]}"; }

info "a unit's first boot: TPM and recovery keyslots, record, provisioning keyslot gone"
IMG=$T/unit.img
provisioning_volume "$IMG" false
"$LOCKROOT" status "$IMG" --json | jq -e '.[0].keyslots[0].use == "provisioning" and .[0].provisioning == "pending"' >/dev/null \
	|| fail "status: provisioning: $("$LOCKROOT" status "$IMG" --json)"
"$LOCKROOT" status "$IMG" | grep -q '^  provisioning: pending' || fail "status text: $("$LOCKROOT" status "$IMG")"
expect_ok provision "$IMG"
grep -q 'provisioned (was pending)' "$T/out" || fail "provision output: $(cat "$T/out")"
RECORD=$REC/board-serial-10000000c0ffee42.json
[ -f "$RECORD" ] || fail "no record $RECORD: $(ls "$REC")"
[ "$(stat -c %a "$RECORD")" = 600 ] || fail "record mode $(stat -c %a "$RECORD")"
jq -e '.board_serial == "10000000c0ffee42" and .identity["sd-cid"] and .hsm == "tpm2" and (.recovery_key | test("^[0-9A-Z]{4}(-[0-9A-Z]{4}){7}$"))' \
	"$RECORD" >/dev/null || fail "record content: $(jq -c 'del(.recovery_key)' "$RECORD")"
[ "$(jq -r .luks_uuid "$RECORD")" = "$(cryptsetup luksUUID "$IMG")" ] || fail "record LUKS UUID"
jq -j .recovery_key "$RECORD" >"$T/rk"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/rk" "$IMG" || fail "the recorded recovery key does not open"
cryptsetup open --test-passphrase --disable-external-tokens --key-file "$T/pkey" "$IMG" 2>/dev/null && fail "the provisioning key still opens"
"$LOCKROOT" status "$IMG" --json >"$T/st.json"
[ "$(jq -r '[.[0].keyslots[] | .use] | join(",")' "$T/st.json")" = hsm,recovery ] || fail "keyslots: $(jq -c '.[0].keyslots' "$T/st.json")"
[ "$(jq -r '[.[0].tokens[] | .type] | sort | join(",")' "$T/st.json")" = lockroot,lockroot-recovery ] || fail "tokens"
jq -e '.[0] | has("provisioning") | not' "$T/st.json" >/dev/null || fail "status still shows provisioning"
expect_ok "$LOCKROOT" unlock "$IMG" --test
info "again: nothing to do, the record stays"
sum=$(sha256sum <"$RECORD")
expect_ok provision "$IMG"
grep -q 'was none' "$T/out" || fail "second run: $(cat "$T/out")"
[ "$(sha256sum <"$RECORD")" = "$sum" ] || fail "a second run rewrote the record"

info "what a cut attempt left (a TPM keyslot and token, no record) is removed, then provisioned"
IMG=$T/cut.img
rm -f "$RECORD"
provisioning_volume "$IMG" false
expect_ok "$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pkey"
expect_ok provision "$IMG"
grep -q 'removed token [0-9]* left by an interrupted provisioning' "$T/err" || fail "leftover token not removed: $(cat "$T/err")"
grep -q 'removed keyslot [0-9]* left by an interrupted provisioning' "$T/err" || fail "leftover keyslot not removed"
[ "$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq '.keyslots | length')" = 2 ] || fail "keyslots after the resumed provisioning"
[ -f "$RECORD" ] || fail "no record after the resumed provisioning"
info "without the provisioning key: refused, nothing changed"
IMG=$T/nokey.img
provisioning_volume "$IMG" false
before=$(header_sum "$IMG")
expect_fail 7 'provisioning key .* was not found' "$LOCKROOT" provision "$IMG" --record-dir "$REC" --hsm "$HSM"
printf wrong >"$T/wrong"
expect_fail 7 'does not open keyslot 0' "$LOCKROOT" provision "$IMG" --key-file "$T/wrong" --record-dir "$REC" --hsm "$HSM"
[ "$(header_sum "$IMG")" = "$before" ] || fail "a refused provisioning changed the header"

info "--unique-volume-key: the re-key is initialised, runs, and is finished"
IMG=$T/unique.img
rm -f "$RECORD"
provisioning_volume "$IMG" true
vk0=$(vk "$IMG" "$T/pkey")
[ -n "$vk0" ] || fail "no volume key read"
expect_ok provision "$IMG"
grep -q 're-encryption to its own volume key initialised' "$T/out" || fail "no re-key: $(cat "$T/out")"
cryptsetup luksDump "$IMG" | grep -q 'online-reencrypt' || fail "no re-encryption in progress"
# during it: the token names a keyslot of each volume key, the TPM unlocks, tokens are frozen
[ "$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq '[.tokens[] | select(.type == "lockroot")][0].keyslots | length')" = 2 ] || fail "the lockroot token does not name two keyslots"
expect_ok "$LOCKROOT" unlock "$IMG" --test
"$LOCKROOT" status "$IMG" --json | jq -e '.[0].provisioning == "rekeying"' >/dev/null || fail "status during the re-key"
expect_ok provision "$IMG"
grep -q 'was rekeying' "$T/out" || fail "run during the re-encryption: $(cat "$T/out")"
# the online service's part, offline here: the data to the new key
"$LOCKROOT" unlock "$IMG" --stdout | cat >"$T/hsmpass"; [ -s "$T/hsmpass" ] || fail "unlock --stdout"
cryptsetup reencrypt --resume-only --force-offline-reencrypt -q --disable-external-tokens --key-file "$T/hsmpass" "$IMG" \
	|| fail "offline re-encryption"
cryptsetup luksDump "$IMG" | grep -q 'online-reencrypt' && fail "the re-encryption did not finish"
expect_ok provision "$IMG"
grep -q 'was cleanup' "$T/out" || fail "after the re-encryption: $(cat "$T/out")"
J=$(cryptsetup luksDump --dump-json-metadata "$IMG")
[ "$(jq '.keyslots | length' <<<"$J")" = 2 ] || fail "keyslots after the re-key: $(jq -c '.keyslots | keys' <<<"$J")"
[ "$(jq -r '[.tokens[] | .type] | sort | join(",")' <<<"$J")" = lockroot,lockroot-recovery ] || fail "tokens after the re-key"
jq -e '[.tokens[] | .keyslots[]] as $t | ($t | length) == 2 and all($t[]; . as $k | $J.keyslots | has($k))' --argjson J "$J" <<<"$J" >/dev/null \
	|| fail "a token points at a keyslot that is gone: $(jq -c '.tokens' <<<"$J")"
expect_ok "$LOCKROOT" unlock "$IMG" --test
jq -j .recovery_key "$RECORD" >"$T/rk"
vk1=$(vk "$IMG" "$T/rk")
[ -n "$vk1" ] && [ "$vk1" != "$vk0" ] || fail "the volume key did not change"

info "--unique-volume-key cut after the provisioning keyslot went, before the re-key began"
# What that cut leaves: the unit's TPM and recovery keyslots, its record, no provisioning keyslot,
# and an unbound keyslot of the re-key's new volume key. The recovery key is read back from the
# record (the provisioning run that knew it was cut off).
IMG=$T/unique-cut.img
rm -f "$RECORD"
provisioning_volume "$IMG" true
vk0=$(vk "$IMG" "$T/pkey")
"$LOCKROOT" enroll "$IMG" --hsm "$HSM" --key-file "$T/pkey" --recovery-key "${FAST_RECOVERY[@]}" --json >"$T/enroll.json" \
	|| fail "enroll"
jq -n --arg rk "$(jq -r .recovery_key "$T/enroll.json")" '{version: 1, recovery_key: $rk}' >"$RECORD"
jq -j .recovery_key "$RECORD" >"$T/rk"
cryptsetup luksKillSlot -q "$IMG" 0 || fail "luksKillSlot 0"
printf 'stray' >"$T/stray"
cryptsetup luksAddKey -q --unbound "${FAST_PBKDF[@]}" --key-size 512 --key-file "$T/rk" "$IMG" "$T/stray" || fail "unbound keyslot"
"$LOCKROOT" status "$IMG" --json | jq -e '.[0].keyslots | map(select(.state == "unbound")) | length == 1' >/dev/null \
	|| fail "no unbound keyslot set up: $("$LOCKROOT" status "$IMG" --json | jq -c '.[0].keyslots')"
expect_ok provision "$IMG"
grep -q 'was rekey' "$T/out" || fail "the cut re-key was not resumed: $(cat "$T/out")"
grep -q 're-encryption to its own volume key initialised' "$T/out" || fail "no re-key: $(cat "$T/out")"
cryptsetup luksDump "$IMG" | grep -q 'online-reencrypt' || fail "no re-encryption in progress"
# the unit's two keyslots, their two for the new key, libcryptsetup's reencrypt keyslot: no stray one
[ "$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq '.keyslots | length')" = 5 ] \
	|| fail "keyslots during the resumed re-key: $(cryptsetup luksDump --dump-json-metadata "$IMG" | jq -c '.keyslots | map_values(.type)')"
"$LOCKROOT" unlock "$IMG" --stdout | cat >"$T/hsmpass"; [ -s "$T/hsmpass" ] || fail "unlock --stdout"
cryptsetup reencrypt --resume-only --force-offline-reencrypt -q --disable-external-tokens --key-file "$T/hsmpass" "$IMG" \
	|| fail "offline re-encryption"
expect_ok provision "$IMG"
[ "$(cryptsetup luksDump --dump-json-metadata "$IMG" | jq '.keyslots | length')" = 2 ] || fail "keyslots after the resumed re-key"
[ "$(vk "$IMG" "$T/rk")" != "$vk0" ] || fail "the resumed re-key did not change the volume key"

info "lockroot image refuses bad input and leaves nothing behind"
mkdir -p "$T/tree/etc"
echo 'PARTUUID=1234abcd-02 / ext4 defaults 0 1' >"$T/tree/etc/fstab"
truncate -s 80M "$T/p1"; truncate -s 160M "$T/p2"
mkfs.vfat -n BOOT "$T/p1" >/dev/null
printf 'console=ttyS0 root=PARTUUID=1234abcd-02 rootwait\n' >"$T/cmdline.txt"
MTOOLS_SKIP_CHECK=1 mcopy -i "$T/p1" "$T/cmdline.txt" ::/
mkfs.ext4 -q -F -d "$T/tree" "$T/p2"
truncate -s 250M "$T/in.img"
printf 'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=163840, type=c\nstart=165888, size=327680, type=83\n' |
	sfdisk -q "$T/in.img"
dd if="$T/p1" of="$T/in.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$T/p2" of="$T/in.img" bs=512 seek=165888 conv=notrunc,sparse status=none
sum=$(sha256sum <"$T/in.img")
expect_fail 2 'expected IN.img and -o OUT.img' "$LOCKROOT" image "$T/in.img"
expect_fail 3 'No such file' "$LOCKROOT" image "$T/missing.img" -o "$T/out.img" --yes
expect_ok "$LOCKROOT" image "$T/in.img" -o "$T/out.img" --dry-run
grep -q 'root partition 2' "$T/out" || fail "plan: $(cat "$T/out")"
[ -e "$T/out.img" ] && fail "--dry-run wrote $T/out.img"
expect_fail 3 'lockroot is not installed in the image' "$LOCKROOT" image "$T/in.img" -o "$T/out.img" --yes
[ -e "$T/out.img" ] && fail "a failed lockroot image left $T/out.img"
: >"$T/exists.img"
expect_fail 1 'exists' "$LOCKROOT" image "$T/in.img" -o "$T/exists.img" --yes
expect_fail 3 'no partition 5' "$LOCKROOT" image "$T/in.img" -o "$T/out.img" --root-part 5 --yes
expect_fail 3 'not an ext4 file system' "$LOCKROOT" image "$T/in.img" -o "$T/out.img" --root-part 1 --boot-part 2 --yes
[ "$(sha256sum <"$T/in.img")" = "$sum" ] || fail "lockroot image changed its input"
losetup -a | grep -q "$T" && fail "a loop device was left: $(losetup -a | grep "$T")"
exit 0
