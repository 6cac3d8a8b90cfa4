#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# guest-test-tree.sh DIR — fill DIR (created; must not exist) with the system tests' awkward
# tree for the migrate checks: what a root copy (rsync -aHAX) must carry over.
#
# build-guest.sh runs it in the guest tree's chroot (so it needs only the guest's tools: bash,
# coreutils, attr, acl) for /srv/lockroot-test. Deterministic except for the *.rand files: every
# mtime is set (whole seconds: mkfs.ext4 -d keeps no nanoseconds anyway).
# Not here because mkfs.ext4 -d (e2fsprogs 1.47.0) cannot carry it into the image: a hard-linked
# symlink (it makes two symlinks), sub-second mtimes. A test wanting those makes them at run time.
#
#   tree/dNN/sM/fK     2000 small files (20 x 10 x 10), sizes 0..~4 KiB, some with older mtimes
#   deep/…             a 12-level nested path; empty/ an empty directory
#   links/             hard links (groups of 2 and 3, across directories, one with xattrs),
#                      symlinks: relative, absolute (into the tree and to /etc/hostname),
#                      dangling, to a directory
#   sparse/sparse.img  64 MiB apparent, a few KiB of data at 0, 1 MiB, 32 MiB and the last 4 KiB
#   xattr/             user.* xattrs (text, binary, 900-byte, several on one file, on a
#                      directory), trusted.* (also on a symlink), security.lockroot-test
#   acl/               a file with an access ACL, a directory with access and default ACLs,
#                      a file created inside it (inherited ACL)
#   owner/             files and a directory owned by 1234:5678, 1234:0, 0:5678, 65534:65534
#   modes/             setuid 4755, setgid 2755, both 6711, sticky dir 1777, setgid dir 2775,
#                      mode 000 file, 0400, 0604
#   special/           a FIFO, a char device (1:3, like /dev/null), a block device (7:200)
#   names/             a name with spaces, a UTF-8 name, a leading-dash name, a 200-byte name
#   random/*.rand      a few files of random data (64 KiB .. 1 MiB)
set -euo pipefail
D=${1:?usage: guest-test-tree.sh DIR}
[ ! -e "$D" ] || { echo "guest-test-tree: $D exists" >&2; exit 1; }
mkdir -p "$D"
cd "$D"
umask 022
MTIME=@1700000000    # every mtime (touch -d)
OLD=202001020304.05  # touch -t: some older ones

# 2000 small files; contents and sizes from the index (bash builtins only: fast in a chroot).
pad=$(printf '%4096s' '')
mkdir tree
for d in $(seq -w 0 19); do
	for s in 0 1 2 3 4 5 6 7 8 9; do
		mkdir -p "tree/d$d/s$s"
		for f in 0 1 2 3 4 5 6 7 8 9; do
			n=$((10#$d * 100 + s * 10 + f))
			size=$(((n * 397) % 4100))
			[ $((n % 97)) = 0 ] && size=0
			printf 'lockroot test file %d\n%s' "$n" "${pad:0:size}" >"tree/d$d/s$s/f$f"
		done
	done
done

mkdir -p deep/a/b/c/d/e/f/g/h/i/j/k/l empty
echo deep >deep/a/b/c/d/e/f/g/h/i/j/k/l/file

# Hard links and symlinks.
mkdir links
ln tree/d00/s0/f1 links/h2-a                               # group of 2
ln tree/d02/s2/f2 links/h3-a; ln tree/d02/s2/f2 tree/d03/s3/h3-b  # group of 3
echo "hard link with xattrs" >links/hx-a
setfattr -n user.lockroot.link -v shared links/hx-a
ln links/hx-a links/hx-b                                   # group of 2 sharing xattrs
ln -s ../tree/d00/s0/f2 links/rel
ln -s "/srv/lockroot-test/tree/d01/s1/f1" links/abs
ln -s /etc/hostname links/abs-etc
ln -s nowhere/missing links/dangling
ln -s ../tree/d04 links/dir

# A sparse file: 64 MiB apparent, 16 KiB of data.
mkdir sparse
truncate -s 64M sparse/sparse.img
for off in 0 256 8192 16383; do  # in 4 KiB blocks: 0, 1 MiB, 32 MiB, the last block
	printf 'sparse block %d\n' "$off" | dd of=sparse/sparse.img bs=4096 seek="$off" conv=notrunc status=none
done

# xattrs.
mkdir xattr
echo text >xattr/text
setfattr -n user.lockroot -v "hello world" xattr/text
printf 'binary\n' >xattr/binary
setfattr -n user.bin -v 0x00ff10207f80fe xattr/binary
echo big >xattr/big
big=
for i in $(seq 0 899); do big+=$(printf '%02x' $((i % 251))); done
setfattr -n user.big -v "0x$big" xattr/big  # 900 bytes: fits a 1 KiB-block ext4 too
echo several >xattr/several
for i in 1 2 3 4 5; do setfattr -n "user.n$i" -v "value $i" xattr/several; done
setfattr -n user.empty xattr/several
mkdir xattr/dir
setfattr -n user.on-dir -v yes xattr/dir
setfattr -n trusted.lockroot -v trusted-value xattr/text
ln -s text xattr/symlink
setfattr -h -n trusted.on-symlink -v yes xattr/symlink
setfattr -n security.lockroot-test -v security-value xattr/binary

# POSIX ACLs.
mkdir acl
echo acl >acl/file
setfacl -m u:1234:rw-,g:5678:r--,m::rw- acl/file
mkdir acl/dir
setfacl -m u:1234:rwx,g:5678:r-x acl/dir
setfacl -d -m u:1234:rwx,g::r-x,o::--- acl/dir
echo inherited >acl/dir/inherited

# Owners.
mkdir owner owner/dir
for o in 1234:5678 1234:0 0:5678 65534:65534; do
	echo "$o" >"owner/f-${o/:/-}"
	chown "$o" "owner/f-${o/:/-}"
done
chown 1234:5678 owner/dir
echo in-dir >owner/dir/file
chown 1234:5678 owner/dir/file
ln -s f-1234-5678 owner/symlink
chown -h 1234:5678 owner/symlink

# Modes.
mkdir modes
for m in 4755 2755 6711 0000 0400 0604; do
	printf '#!/bin/sh\necho %s\n' "$m" >"modes/m$m"
	chmod "$m" "modes/m$m"
done
chown 1234:5678 modes/m2755
chmod 2755 modes/m2755  # chown clears setgid
mkdir modes/sticky modes/setgid-dir
chmod 1777 modes/sticky
chown 0:5678 modes/setgid-dir
chmod 2775 modes/setgid-dir

# Special files.
mkdir special
mkfifo special/fifo
mknod special/char c 1 3
mknod special/block b 7 200
chmod 0620 special/char

# Names.
mkdir names
echo spaces >"names/with spaces"
echo utf8 >"names/ünïcødé-名前"
echo dash >names/-leading-dash
echo long >"names/$(printf 'x%.0s' $(seq 1 200))"

# Random data.
mkdir random
for k in 64 256 1024; do
	head -c "${k}K" /dev/urandom >"random/$k.rand"
done

# Deterministic mtimes: all the same, then some older ones.
find . -exec touch -h -d "$MTIME" {} +
for d in 00 05 10 15; do touch -h -t "$OLD" tree/d$d/s3/*; done
touch -h -t "$OLD" links/rel links/abs special/fifo xattr/big
