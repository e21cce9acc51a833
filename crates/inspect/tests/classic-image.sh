#!/usr/bin/env bash
# classic-image.sh KIND FIXTURE OUT.img
#
# Builds a small nixpkgs-style image of FIXTURE (a closure directory like fixtures/demo) with
# the classic tools nixpkgs uses, for the inspect tests:
#   sd   nixpkgs sd-image.nix + make-ext4-fs.nix: MBR (label-id 0x2178694e, sfdisk),
#        p1 FAT "FIRMWARE" (mkfs.vfat + mtools: config.txt, placeholder firmware),
#        p2 ext4 "NIXOS_SD", bootable (mkfs.ext4 -d): /nix/store, /nix-path-registration,
#        /boot/extlinux/extlinux.conf + /boot/nixos/{kernel,initrd}; no Nix database.
#   efi  nixpkgs make-disk-image.nix (efi, systemd-boot): GPT (sfdisk), p1 FAT32 "ESP"
#        (mkfs.vfat -F 32 + mtools: systemd-boot, loader.conf, one entry, kernel, initrd),
#        p2 ext4 "nixos" (mkfs.ext4 -d): /nix/store, /nix/var/nix/db (nix-store --load-db),
#        profiles/system -> system-1-link -> toplevel, /etc/NIXOS.
# EXT4_FEATURES (e.g. ^metadata_csum) is passed to mkfs.ext4 -O.
# Needs: e2fsprogs, dosfstools, mtools, fdisk (sfdisk), nix-bin (efi only), coreutils.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 sd|efi FIXTURE OUT.img" >&2; exit 2; }
KIND=$1
FIX=$(cd "$2" && pwd)
OUT=$3
TL=$(readlink "$FIX/result")
TLH=$FIX$TL
KERNEL=$(readlink "$TLH/kernel")
INITRD=$(readlink "$TLH/initrd")
clean_name() { local p=${1#/nix/store/}; echo "${p//\//-}"; }
WORK=$(mktemp -d "${OUT}.work.XXXXXX")
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export MTOOLS_SKIP_CHECK=1 E2FSPROGS_FAKE_TIME=1 SOURCE_DATE_EPOCH=1

ROOT=$WORK/root
mkdir -p "$ROOT/nix/store"
while read -r p; do cp -a "$FIX$p" "$ROOT/nix/store/"; done <"$FIX/closure-info/store-paths"
chmod -R u+w "$ROOT/nix/store"

ext4() { # ext4 LABEL UUID IMG
  truncate -s 32M "$3"
  mkfs.ext4 -q -F -L "$1" -U "$2" -E root_owner=0:0,hash_seed=66666666-6666-6666-6666-666666666666 \
    ${EXT4_FEATURES:+-O "$EXT4_FEATURES"} -d "$ROOT" "$3"
}

case $KIND in
sd)
  cp "$FIX/closure-info/registration" "$ROOT/nix-path-registration"
  mkdir -p "$ROOT/boot/extlinux" "$ROOT/boot/nixos"
  KN=$(clean_name "$KERNEL"); IN=$(clean_name "$INITRD")
  cp "$FIX$KERNEL" "$ROOT/boot/nixos/$KN"
  cp "$FIX$INITRD" "$ROOT/boot/nixos/$IN"
  cat >"$ROOT/boot/extlinux/extlinux.conf" <<EOC
# Generated file, all changes will be lost on nixos-rebuild!

# Change this to e.g. nixos-42 to temporarily boot to an older configuration.
DEFAULT nixos-default

MENU TITLE ------------------------------------------------------------
TIMEOUT 50

LABEL nixos-default
  MENU LABEL NixOS - Default
  LINUX ../nixos/$KN
  INITRD ../nixos/$IN
  APPEND init=$TL/init $(cat "$TLH/kernel-params")
EOC
  ext4 NIXOS_SD 44444444-4444-4444-8888-888888888888 "$WORK/root.img"
  FW=$WORK/fw.img
  truncate -s 30M "$FW"
  mkfs.vfat --invariant -i 2178694e -n FIRMWARE "$FW" >/dev/null
  printf '[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n[all]\narm_64bit=1\nenable_uart=1\n' >"$WORK/config.txt"
  for f in bootcode.bin start4.elf fixup4.dat u-boot-rpi4.bin armstub8-gic.bin bcm2711-rpi-4-b.dtb; do
    echo "placeholder $f" >"$WORK/$f"
    mcopy -i "$FW" "$WORK/$f" "::/$f"
  done
  mcopy -i "$FW" "$WORK/config.txt" ::/config.txt
  truncate -s $((8 + 30 + 32))M "$OUT"
  sfdisk --no-reread --no-tell-kernel -q "$OUT" <<EOC
label: dos
label-id: 0x2178694e

start=8M, size=30M, type=b
start=38M, type=83, bootable
EOC
  dd if="$FW" of="$OUT" bs=1M seek=8 conv=notrunc,sparse status=none
  dd if="$WORK/root.img" of="$OUT" bs=1M seek=38 conv=notrunc,sparse status=none
  ;;
efi)
  mkdir -p "$ROOT/nix/var/nix/profiles" "$ROOT/etc"
  NIX_CONFIG=$'build-users-group =\nsandbox = false\nsubstituters =\n' \
    nix-store --store "$ROOT" --load-db <"$FIX/closure-info/registration"
  rm -f "$ROOT/nix/var/nix/db/big-lock" "$ROOT/nix/var/nix/db/reserved"
  ln -s system-1-link "$ROOT/nix/var/nix/profiles/system"
  ln -s "$TL" "$ROOT/nix/var/nix/profiles/system-1-link"
  : >"$ROOT/etc/NIXOS"
  ext4 nixos f222513b-ded1-49fa-b591-20ce86a2fe7f "$WORK/root.img"
  ESP=$WORK/esp.img
  truncate -s 40M "$ESP"
  mkfs.vfat -F 32 -s 1 -n ESP -i 2178694e --invariant "$ESP" >/dev/null
  mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/nixos ::/loader ::/loader/entries
  SDBOOT=$FIX$(readlink "$TLH/systemd")/lib/systemd/boot/efi/systemd-bootx64.efi
  mcopy -i "$ESP" "$SDBOOT" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$ESP" "$SDBOOT" ::/EFI/systemd/systemd-bootx64.efi
  KE=$(clean_name "$KERNEL").efi; IE=$(clean_name "$INITRD").efi
  mcopy -i "$ESP" "$FIX$KERNEL" "::/EFI/nixos/$KE"
  mcopy -i "$ESP" "$FIX$INITRD" "::/EFI/nixos/$IE"
  printf 'timeout 5\ndefault nixos-generation-1.conf\nconsole-mode keep\n' >"$WORK/loader.conf"
  printf 'title NixOS\nversion Generation 1\nlinux /EFI/nixos/%s\ninitrd /EFI/nixos/%s\noptions init=%s/init %s\n' \
    "$KE" "$IE" "$TL" "$(cat "$TLH/kernel-params")" >"$WORK/entry.conf"
  mcopy -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
  mcopy -i "$ESP" "$WORK/entry.conf" ::/loader/entries/nixos-generation-1.conf
  truncate -s $((8 + 40 + 32 + 1))M "$OUT"
  sfdisk --no-reread --no-tell-kernel -q "$OUT" <<EOC
label: gpt
label-id: 97FD5997-D90B-4AA3-8D16-C1723AEA73C1

start=8M, size=40M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=1C06F03B-704E-4657-B9CD-681A087A2FDC, name=ESP
start=48M, size=32M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=F222513B-DED1-49FA-B591-20CE86A2FE7F, name=primary
EOC
  dd if="$ESP" of="$OUT" bs=1M seek=8 conv=notrunc,sparse status=none
  dd if="$WORK/root.img" of="$OUT" bs=1M seek=48 conv=notrunc,sparse status=none
  ;;
*)
  echo "unknown kind $KIND" >&2
  exit 2
  ;;
esac
