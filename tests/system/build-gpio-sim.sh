#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# gpio-sim for the guest's kernel, built out of tree (Debian's kernels do not build it; facts in
# docs/decisions.md, "Groundwork for tamper response"): drivers/gpio/gpio-sim.c and
# kernel/irq/irq_sim.c (Debian lacks CONFIG_IRQ_SIM too) from linux-source-6.1, in one module,
# against linux-headers-KVER. Only those two files and the private header gpio-sim.c includes
# (drivers/gpio/gpiolib.h) are extracted from the source tarball. The
# module is cached: built once per kernel version, never committed.
#
#   tests/system/build-gpio-sim.sh KVER OUTDIR   -> OUTDIR/KVER/gpio-sim.ko (path on stdout)
#
# Exit 77 when the headers or the source are not installed (scripts/setup.sh installs them).
set -euo pipefail
KVER=$1
OUT=$(realpath -m "$2")/$KVER
SRC_TAR=/usr/src/linux-source-6.1.tar.xz
HEADERS=/usr/src/linux-headers-$KVER
if [ -s "$OUT/gpio-sim.ko" ]; then
	echo "$OUT/gpio-sim.ko"
	exit 0
fi
[ -f "$SRC_TAR" ] || { echo "SKIP: $SRC_TAR missing (apt-get install linux-source-6.1)" >&2; exit 77; }
[ -d "$HEADERS" ] || { echo "SKIP: $HEADERS missing (apt-get install linux-headers-$KVER)" >&2; exit 77; }
rm -rf "$OUT"
mkdir -p "$OUT/src"
tar -C "$OUT/src" --strip-components=3 -xJf "$SRC_TAR" \
	linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h \
	linux-source-6.1/kernel/irq/irq_sim.c
mv "$OUT/src/gpio-sim.c" "$OUT/src/gpio-sim-main.c"
# irq_to_desc() is not exported to modules; the descriptor's handler is handle_simple_irq anyway.
sed -i 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' "$OUT/src/irq_sim.c"
grep -q 'generic_handle_irq(irqnum)' "$OUT/src/irq_sim.c" \
	|| { echo "build-gpio-sim: irq_sim.c is not what docs/decisions.md describes" >&2; exit 1; }
cat >"$OUT/src/Kbuild" <<'EOF'
obj-m := gpio-sim.o
gpio-sim-objs := gpio-sim-main.o irq_sim.o
EOF
make -s -C "$HEADERS" M="$OUT/src" modules >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
cp "$OUT/src/gpio-sim.ko" "$OUT/gpio-sim.ko"
echo "$OUT/gpio-sim.ko"
