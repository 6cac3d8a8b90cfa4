#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# lockroot-test-manifest DIR [EXCLUDE-GLOB...]
#
# System tests only (installed into the guest as /usr/local/sbin/lockroot-test-manifest by
# build-guest.sh). Prints a deterministic, sorted manifest of everything under DIR on DIR's file
# system (find -xdev), so that the manifests of a tree and of a copy of it on another file system
# (other inode numbers, other block layout) are equal exactly when names, types, content, owners,
# modes, mtimes (not of directories), symlink targets, device numbers, xattrs (ACLs and security.*
# included) and the hard-link structure are.
#
# EXCLUDE-GLOB: find -path globs relative to DIR ('var/log/*' drops what is under var/log, not
# var/log itself; '*' also matches '/'). Excluded directories are not descended.
#
# One line per fact, "PATH<TAB>FACT", PATH relative to DIR ("." is DIR itself), sorted (LC_ALL=C):
#   PATH  TYPE mode=MODE owner=UID:GID [size=N mtime=SECONDS.NS] [target=SYMLINK-TARGET]
#         TYPE is find's %y (f d l b c p s), MODE 4 octal digits; size and mtime for everything
#         but directories; LOCKROOT_MANIFEST_MTIME=s: whole seconds, =none: no mtime (rsync -a
#         leaves a symlink's, FIFO's or device's copy with its creation time when that falls in
#         the same second as the original's mtime)
#   PATH  sha256 HASH                   regular files
#   PATH  rdev MAJOR:MINOR              device nodes (hex, as stat %t:%T)
#   PATH  xattr NAME=0xHEX              every xattr (getfattr -d -m - -h -e hex): user.*,
#                                       system.posix_acl_access/default, security.*, trusted.*
#   PATH  hardlinks PATH1<TAB>PATH2...  once per inode with more than one name under DIR (on its
#                                       first name), all its names, sorted
# Names are escaped as getfattr does it (backslash \134, newline \012, CR \015) and tab as \011.
# Not compared: directory sizes and mtimes, atime/ctime, inode numbers, link counts (the
# hard-link lines say it), allocated blocks (sparseness).
#
# Its own work directory ($TMPDIR or /tmp) is left out when it is under DIR.
# Uses coreutils, findutils, attr (getfattr), sed and mawk; sha256sum and getfattr run in batches
# (xargs -P${LOCKROOT_MANIFEST_JOBS:-2}). Exit status 0, or 1 when something could not be read
# (the manifest is still printed, with what could be read), 2 on a usage error.
# shellcheck disable=SC2016 # sh -c scripts in single quotes on purpose
set -u -o pipefail
export LC_ALL=C
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	sed -n '3,34p' "$0" >&2
	exit 2
fi
dir=$1
shift
cd -- "$dir" || exit 2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/manifest.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
rc=0
PAR=${LOCKROOT_MANIFEST_JOBS:-2}
MTIME=${LOCKROOT_MANIFEST_MTIME:-ns}
BATCH=512

prune=()
# Our own work directory, when it is under DIR (lockroot-test-manifest / with /tmp on the root).
here=$(pwd -P) mine=$(cd "$tmp" && pwd -P)
case $mine in
"$here"/*) prune+=(-path "./${mine#"$here"/}" -o) ;;
esac
[ "$here" = / ] && prune+=(-path ".${mine}" -o)
for g in "$@"; do
	g=${g#./}
	prune+=(-path "./$g" -o)
done
if [ ${#prune[@]} -gt 0 ]; then
	unset 'prune[${#prune[@]}-1]'
	prune=(\( "${prune[@]}" \) -prune -o)
fi

# NUL-terminated records in, one escaped line each out.
esc() { sed -z 's/\\/\\134/g; s/\n/\\012/g; s/\r/\\015/g; s/\t/\\011/g'; }

# One walk: metadata (three NUL fields: stat words, path, symlink target), all paths, regular files,
# device nodes.
find . -xdev "${prune[@]}" \( \
	-printf '%y %m %U %G %s %T@ %n %i\0%p\0%l\0' \
	-fprint0 "$tmp/all" \
	\( -type f -fprint0 "$tmp/reg" -o \( -type b -o -type c \) -fprint0 "$tmp/dev" -o -true \) \
	\) >"$tmp/meta0" || rc=1

# Regular files' content, in batches, each batch to its own file (no interleaving).
: >"$tmp/sum.0"
xargs -0 -r -P "$PAR" -n "$BATCH" sh -c 'exec sha256sum --zero -- "$@" >"$0.$$"' "$tmp/sum" \
	<"$tmp/reg" || rc=1
# Every xattr of everything (symlinks themselves, not their targets).
: >"$tmp/xattr.0"
xargs -0 -r -P "$PAR" -n "$BATCH" sh -c \
	'exec getfattr --absolute-names -h -d -m - -e hex -- "$@" >"$0.$$"' "$tmp/xattr" \
	<"$tmp/all" || rc=1

# stat lines; "ino<TAB>path" of multiply linked non-directories to $tmp/links
esc <"$tmp/meta0" | paste -z -d '\t' - - - | tr '\0' '\n' | mawk -F '\t' -v OFS='\t' \
	-v links="$tmp/links" -v mt="$MTIME" '
	{
		split($1, m, " ")  # type mode uid gid size mtime links inode
		p = $2; if (p != ".") p = substr(p, 3)
		md = m[2]; while (length(md) < 4) md = "0" md
		line = m[1] " mode=" md " owner=" m[3] ":" m[4]
		if (m[1] != "d") line = line " size=" m[5] (mt == "none" ? "" : " mtime=" \
			(mt == "s" ? substr(m[6], 1, index(m[6], ".") - 1) : m[6]))
		if (m[1] == "l") line = line " target=" $3
		print p, line
		if (m[1] != "d" && m[7] > 1) print m[8], p >links
	}' >"$tmp/out.stat" || rc=1
: >>"$tmp/links"
# content: "HASH  ./PATH"
cat "$tmp"/sum.* | esc | tr '\0' '\n' | mawk '
	{ h = substr($0, 1, 64); p = substr($0, 67); sub(/^\.\//, "", p); print p "\tsha256 " h }' \
	>"$tmp/out.sum" || rc=1
# device numbers
if [ -s "$tmp/dev" ]; then
	xargs -0 -r stat --printf '%t:%T\t%n\0' -- <"$tmp/dev" | esc | tr '\0' '\n' | mawk '
		{ i = index($0, "\\011"); p = substr($0, i + 4); sub(/^\.\//, "", p)
		  print p "\trdev " substr($0, 1, i - 1) }' >"$tmp/out.dev" || rc=1
fi
# xattrs: "# file: NAME" then NAME=VALUE lines, a blank line
cat "$tmp"/xattr.* | mawk '
	/^# file: / { p = substr($0, 9); gsub(/\t/, "\\011", p); sub(/^\.\//, "", p); next }
	/^$/ { next }
	{ print p "\txattr " $0 }' >"$tmp/out.xattr" || rc=1
# hard-link groups: on the first name, every name
sort -t '	' -k1,1n -k2,2 "$tmp/links" | mawk -F '\t' '
	function flush() { if (n > 1) print first "\thardlinks" names; n = 0; names = "" }
	$1 != ino { flush(); ino = $1; first = $2 }
	{ n++; names = names "\t" $2 }
	END { flush() }' >"$tmp/out.links" || rc=1
sort "$tmp"/out.* || rc=1
exit $rc
