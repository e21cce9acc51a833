#!/usr/bin/env bash
# baseline-netboot.sh FIXTURE OUTDIR
#
# The conventional pipeline for nixpkgs' netboot (netboot.nix), from the fixture's
# `result-netboot` toplevel: OUTDIR/<kernel>, OUTDIR/initrd = the closure's initrd, zeros to a
# multiple of 4 bytes, then an uncompressed newc cpio holding nix-store.squashfs (mksquashfs, make-squashfs.nix's
# layout; Linux unpacks concatenated initramfs archives), and OUTDIR/netboot.ipxe.
# Needs: squashfs-tools cpio.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 FIXTURE OUTDIR"
need mksquashfs cpio
VARIANT=netboot fixture_init "$1"
OUT=$2
t0=$(now)

KERNEL=$(store_link kernel)
INITRD=$(store_link initrd)
KFILE=${KERNEL##*/}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir "$WORK/cpio"
store_squashfs "$WORK/cpio/nix-store.squashfs"
touch -d @1 "$WORK/cpio/nix-store.squashfs"
cp "$FIX$INITRD" "$WORK/initrd"
# the kernel looks for the next archive at a 4-byte boundary after the compressed one
pad=$(((4 - $(stat -c %s "$WORK/initrd") % 4) % 4))
head -c "$pad" /dev/zero >>"$WORK/initrd"
(cd "$WORK/cpio" && echo nix-store.squashfs | cpio -o -H newc -R 0:0 --reproducible --quiet) >>"$WORK/initrd"
cp "$FIX$KERNEL" "$OUT/$KFILE"
mv -f "$WORK/initrd" "$OUT/initrd"
cat >"$OUT/netboot.ipxe" <<EOC
#!ipxe
# Use the cmdline variable to allow the user to specify custom kernel params
# when chainloading this script from other iPXE scripts like netboot.xyz
kernel $KFILE init=$TL/init initrd=initrd $(cat "$TLH/kernel-params") \${cmdline}
initrd initrd
boot
EOC
log "wrote $OUT ($KFILE, initrd $(($(stat -c %s "$OUT/initrd") / 1048576)) MiB, netboot.ipxe) in $(since "$t0") s"
