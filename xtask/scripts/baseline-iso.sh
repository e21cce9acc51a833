#!/usr/bin/env bash
# baseline-iso.sh FIXTURE OUT.iso
#
# The conventional pipeline for nixpkgs' live ISO (iso-image.nix), from the fixture's
# `result-iso` toplevel: mksquashfs (make-squashfs.nix's layout), mkfs.vfat + mtools for the
# El Torito EFI image, xorriso -as mkisofs for the hybrid ISO. The reference that proves
# `cargo xtask boot iso` before (and next to) imgbuild's own ISO writer.
#   /nix-store.squashfs   the closure + nix-path-registration
#   /boot/<kernel>, /boot/initrd, /version.txt
#   /isolinux/{isolinux.bin,ldlinux.c32,isolinux.cfg}   x86_64 only (BIOS, El Torito)
#   /boot/efi.img         FAT: EFI/BOOT/BOOT{X64,AA64}.EFI = systemd-boot, loader/loader.conf,
#                         loader/entries/nixos.conf, and the kernel + initrd it loads
# Hybrid (x86_64): isohdpfx.bin as the MBR, the EFI image as a GPT ESP (-isohybrid-gpt-basdat).
# Needs: squashfs-tools xorriso dosfstools mtools.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 FIXTURE OUT.iso"
need mksquashfs xorriso mkfs.vfat mmd mcopy truncate
VARIANT=iso fixture_init "$1"
OUT=$2
t0=$(now)

SYSTEM=$(cat "$TLH/system")
VOLID=$(sed -n 's/^      "volumeID": "\(.*\)"$/\1/p' "$TLH/boot.json")
[ -n "$VOLID" ] || die "boot.json has no org.imgbuild.v1.iso.volumeID"
KERNEL=$(store_link kernel)
INITRD=$(store_link initrd)
SYSTEMD=$(store_link systemd)
KFILE=${KERNEL##*/}
case $SYSTEM in
  x86_64-linux) EFIARCH=x64 ;;
  aarch64-linux) EFIARCH=aa64 ;;
  *) die "unsupported system $SYSTEM" ;;
esac
SDBOOT=$FIX$SYSTEMD/lib/systemd/boot/efi/systemd-boot$EFIARCH.efi
[ -f "$SDBOOT" ] || die "no systemd-boot$EFIARCH.efi in $SYSTEMD"
CMDLINE="init=$TL/init $(cat "$TLH/kernel-params")"
LABEL=$(bootspec_label)

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
WORK=$(mktemp -d "$OUT.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

store_squashfs "$WORK/nix-store.squashfs"
printf '%s' "$(cat "$TLH/nixos-version")" >"$WORK/version.txt"

# --- El Torito EFI image -----------------------------------------------------------------------
printf 'timeout 0\ndefault nixos.conf\n' >"$WORK/loader.conf"
cat >"$WORK/nixos.conf" <<EOC
title $LABEL
linux /boot/$KFILE
initrd /boot/initrd
options $CMDLINE
EOC
kib=$(du -kL --apparent-size "$FIX$KERNEL" "$FIX$INITRD" "$SDBOOT" | awk '{s += $1} END {print s}')
EFI=$WORK/efi.img
truncate -s "$(((kib / 1024 + 2) * 1024))K" "$EFI"
mkfs.vfat -n EFIBOOT -i 12ce0f07 --invariant "$EFI" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$EFI" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/boot
mcopy -i "$EFI" "$SDBOOT" "::/EFI/BOOT/BOOT${EFIARCH^^}.EFI"
mcopy -i "$EFI" "$WORK/loader.conf" ::/loader/loader.conf
mcopy -i "$EFI" "$WORK/nixos.conf" ::/loader/entries/nixos.conf
mcopy -i "$EFI" "$FIX$KERNEL" "::/boot/$KFILE"
mcopy -i "$EFI" "$FIX$INITRD" ::/boot/initrd

GRAFTS=(
  "/nix-store.squashfs=$WORK/nix-store.squashfs"
  "/boot/$KFILE=$FIX$KERNEL"
  "/boot/initrd=$FIX$INITRD"
  "/boot/efi.img=$EFI"
  "/version.txt=$WORK/version.txt"
)
BOOT=()
if [ "$EFIARCH" = x64 ]; then
  SYSLINUX=$(sed -n 's/^      "syslinux": "\(.*\)",$/\1/p' "$TLH/boot.json")
  [ -n "$SYSLINUX" ] || die "boot.json has no org.imgbuild.v1.iso.syslinux"
  S=$FIX$SYSLINUX/share/syslinux
  cat >"$WORK/isolinux.cfg" <<EOC
SERIAL 0 115200
PROMPT 0
DEFAULT nixos
LABEL nixos
  MENU LABEL $LABEL
  LINUX /boot/$KFILE
  INITRD /boot/initrd
  APPEND $CMDLINE
EOC
  GRAFTS+=(
    "/isolinux/isolinux.bin=$S/isolinux.bin"
    "/isolinux/ldlinux.c32=$S/ldlinux.c32"
    "/isolinux/isolinux.cfg=$WORK/isolinux.cfg"
  )
  BOOT+=(-b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4
    -boot-info-table -isohybrid-mbr "$S/isohdpfx.bin" -eltorito-alt-boot)
fi
BOOT+=(-e boot/efi.img -no-emul-boot -isohybrid-gpt-basdat)

rm -f "$OUT.tmp"
SOURCE_DATE_EPOCH=1 xorriso -as mkisofs -o "$OUT.tmp" -iso-level 3 -volid "$VOLID" \
  -appid nixos -publisher nixos -full-iso9660-filenames -joliet -rational-rock \
  "${BOOT[@]}" -graft-points "${GRAFTS[@]}" 2>"$WORK/xorriso.log" ||
  { cat "$WORK/xorriso.log" >&2; die "xorriso failed"; }
mv -f "$OUT.tmp" "$OUT"
log "wrote $OUT ($(($(stat -c %s "$OUT") / 1048576)) MiB, volume id $VOLID, $SYSTEM) in $(since "$t0") s"
