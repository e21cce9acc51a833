#!/usr/bin/env bash
# baseline-raw-efi.sh FIXTURE OUT.img
#
# The conventional, rootless shell pipeline for a NixOS raw-efi image (nixpkgs' systemd-boot
# image variant): the baseline imgbuild is benchmarked against, and the reference image that
# proves the QEMU boot harness. Run via `cargo xtask baseline raw-efi FIXTURE OUT.img`.
#   GPT (fixed GUIDs): p1 ESP  8 MiB .. 257 MiB, type EF00, FAT32 "ESP":
#                          systemd-boot (EFI/systemd + EFI/BOOT), kernel + initrd in EFI/nixos,
#                          loader.conf + loader/entries/nixos-generation-1.conf
#                      p2 "primary" type 8300, ext4 label nixos (ROOT_LABEL): the closure,
#                          /nix/var/nix/db, profiles/system, /etc/NIXOS
# Needs: dosfstools mtools e2fsprogs gdisk fdisk nix-bin coreutils (run as root: chown 0:0).
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 FIXTURE OUT.img"
need mkfs.vfat mmd mcopy mkfs.ext4 sgdisk sfdisk nix-store dd truncate
[ "$(id -u)" = 0 ] || die "run as root (the root filesystem must be owned by 0:0)"
fixture_init "$1"
OUT=$2
ROOT_LABEL=${ROOT_LABEL:-nixos}
ESP_START_MIB=8
ESP_MIB=249      # nixpkgs: bootSize 256M -> ESP ends at 257 MiB
t0=$(now)

[ "$(cat "$TLH/system")" = x86_64-linux ] || die "closure is not x86_64-linux"
KERNEL=$(store_link kernel)
INITRD=$(store_link initrd)
SYSTEMD=$(store_link systemd)
SDBOOT=$FIX$SYSTEMD/lib/systemd/boot/efi/systemd-bootx64.efi
[ -f "$SDBOOT" ] || die "no systemd-bootx64.efi in $SYSTEMD"
KEFI=$(clean_name "$KERNEL").efi
IEFI=$(clean_name "$INITRD").efi
LABEL=$(bootspec_label)
[ -n "$LABEL" ] || die "cannot read the bootspec label"

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
WORK=$(mktemp -d "$OUT.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- ESP -------------------------------------------------------------------------------
ESP=$WORK/esp.img
truncate -s "${ESP_MIB}M" "$ESP"
mkfs.vfat -F 32 -n ESP -i 2178694e --invariant "$ESP" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/nixos ::/EFI/Linux ::/loader ::/loader/entries
mcopy -i "$ESP" "$SDBOOT" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$ESP" "$SDBOOT" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP" "$FIX$KERNEL" "::/EFI/nixos/$KEFI"
mcopy -i "$ESP" "$FIX$INITRD" "::/EFI/nixos/$IEFI"
printf 'timeout 0\ndefault nixos-generation-1.conf\nconsole-mode keep\n' >"$WORK/loader.conf"
printf 'type1\n' >"$WORK/entries.srel"
cat >"$WORK/entry.conf" <<EOC
title NixOS
sort-key nixos
version Generation 1 $LABEL, built on 1970-01-01
linux /EFI/nixos/$KEFI
initrd /EFI/nixos/$IEFI
options init=$TL/init $(cat "$TLH/kernel-params")
EOC
mcopy -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
mcopy -i "$ESP" "$WORK/entries.srel" ::/loader/entries.srel
mcopy -i "$ESP" "$WORK/entry.conf" ::/loader/entries/nixos-generation-1.conf

# --- root ext4 (mkfs.ext4 -d) --------------------------------------------------------------
STAGE=$WORK/root
stage_root "$STAGE"
used_kib=$(du -sk --apparent-size "$STAGE" | cut -f1)
ROOT_MIB=$(((used_kib * 12 / 10) / 1024 + 64))
ROOTIMG=$WORK/root.img
truncate -s "${ROOT_MIB}M" "$ROOTIMG"
E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L "$ROOT_LABEL" -U f222513b-ded1-49fa-b591-20ce86a2fe7f \
  -E root_owner=0:0,hash_seed=f222513b-ded1-49fa-b591-20ce86a2fe7f -d "$STAGE" "$ROOTIMG"

# --- GPT disk ----------------------------------------------------------------------------------
ROOT_START_MIB=$((ESP_START_MIB + ESP_MIB))
TOTAL_MIB=$((ROOT_START_MIB + ROOT_MIB + 1))
rm -f "$OUT.tmp"
truncate -s "${TOTAL_MIB}M" "$OUT.tmp"
# NB: no -q: sgdisk 1.0.9 with -q silently writes nothing
sgdisk -U 97fd5997-d90b-4aa3-8d16-c1723aea73c1 \
  -n "1:${ESP_START_MIB}M:+${ESP_MIB}M" -t 1:ef00 -c 1:ESP -u 1:1c06f03b-704e-4657-b9cd-681a087a2fdc \
  -n "2:${ROOT_START_MIB}M:+${ROOT_MIB}M" -t 2:8300 -c 2:primary -u 2:f222513b-ded1-49fa-b591-20ce86a2fe7f \
  "$OUT.tmp" >"$WORK/sgdisk.log" 2>&1 || { cat "$WORK/sgdisk.log" >&2; die "sgdisk failed"; }
sfdisk -d "$OUT.tmp" >/dev/null 2>&1 || die "no partition table written"
dd if="$ESP" of="$OUT.tmp" bs=1M seek="$ESP_START_MIB" conv=notrunc,sparse status=none
dd if="$ROOTIMG" of="$OUT.tmp" bs=1M seek="$ROOT_START_MIB" conv=notrunc,sparse status=none
mv -f "$OUT.tmp" "$OUT"
log "wrote $OUT ($TOTAL_MIB MiB, root label $ROOT_LABEL) in $(since "$t0") s"
