#!/usr/bin/env bash
# baseline-sd-aarch64.sh FIXTURE OUT.img[.zst]
#
# The conventional, rootless shell pipeline for a NixOS sd-image-aarch64, modelled on nixpkgs
# sd-image.nix + make-ext4-fs.nix + generic-extlinux-compatible. Run via
# `cargo xtask baseline sd-aarch64 FIXTURE OUT.img[.zst]`.
#   MBR label-id 0x2178694e
#     p1 8 MiB, 30 MiB, type 0x0b, FAT (mkfs.vfat picks FAT16 at this size, as in nixpkgs)
#        label FIRMWARE: every file of the closure's firmware dir (boot.json
#        "org.imgbuild.v1".firmware) + config.txt
#     p2 rest, type 0x83, bootable, ext4 label NIXOS_SD (ROOT_LABEL): /boot/extlinux/extlinux.conf,
#        /boot/nixos/<kernel,initrd,dtbs>, the closure, /nix/var/nix/db, /nix-path-registration
#   OUT ending in .zst: compressed with zstd (nixpkgs: compressImage).
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 FIXTURE OUT.img[.zst]"
need mkfs.vfat mmd mcopy fsck.vfat mkfs.ext4 fsck.ext4 resize2fs dumpe2fs sfdisk partx nix-store zstd dd truncate
[ "$(id -u)" = 0 ] || die "run as root (the root filesystem must be owned by 0:0)"
fixture_init "$1"
OUT=$2
ROOT_LABEL=${ROOT_LABEL:-NIXOS_SD}
FW_OFFSET_MIB=8
FW_MIB=30
FW_ID=2178694e
t0=$(now)

[ "$(cat "$TLH/system")" = aarch64-linux ] || die "closure is not aarch64-linux"
FIRMWARE=$(sed -n 's/^    "firmware": "\(.*\)"$/\1/p' "$TLH/boot.json")
[ -n "$FIRMWARE" ] && [ -d "$FIX$FIRMWARE" ] || die "boot.json has no org.imgbuild.v1 firmware dir"
KERNEL=$(store_link kernel)
INITRD=$(store_link initrd)
DTBS=$(store_link dtbs)

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
IMG=${OUT%.zst}
WORK=$(mktemp -d "$IMG.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- root fs contents, /boot populated like extlinux-conf-builder.sh ---------------------------
STAGE=$WORK/rootImage
stage_root "$STAGE"
cp "$FIX/closure-info/registration" "$STAGE/nix-path-registration"
mkdir -p "$STAGE/boot/extlinux" "$STAGE/boot/nixos"
KNAME=$(clean_name "$KERNEL"); INAME=$(clean_name "$INITRD"); DNAME=$(clean_name "$DTBS")
cp "$FIX$KERNEL" "$STAGE/boot/nixos/$KNAME"
cp "$FIX$INITRD" "$STAGE/boot/nixos/$INAME"
cp -r "$FIX$DTBS" "$STAGE/boot/nixos/$DNAME"
chmod -R u+w "$STAGE/boot/nixos"
cat >"$STAGE/boot/extlinux/extlinux.conf" <<EOC
# Generated file, all changes will be lost on nixos-rebuild!

# Change this to e.g. nixos-42 to temporarily boot to an older configuration.
DEFAULT nixos-default

MENU TITLE ------------------------------------------------------------
TIMEOUT 50

LABEL nixos-default
  MENU LABEL NixOS - Default
  LINUX ../nixos/$KNAME
  INITRD ../nixos/$INAME
  APPEND init=$TL/init $(cat "$TLH/kernel-params")
  FDTDIR ../nixos/$DNAME
EOC
chown -R 0:0 "$STAGE/boot" "$STAGE/nix-path-registration"

# --- ext4, sized like make-ext4-fs.nix, shrunk, then +16 MiB ------------------------------------
ROOTIMG=$WORK/root-fs.img
numInodes=$(find "$STAGE" | wc -l)
numDataBlocks=$(du -s -c -B 4096 --apparent-size "$STAGE" | tail -1 | awk '{ print int($1 * 1.20) }')
truncate -s $((2 * 4096 * numInodes + 4096 * numDataBlocks)) "$ROOTIMG"
E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L "$ROOT_LABEL" -U 44444444-4444-4444-8888-888888888888 \
  -E root_owner=0:0,hash_seed=66666666-6666-6666-6666-666666666666 -d "$STAGE" "$ROOTIMG"
export EXT2FS_NO_MTAB_OK=yes
fsck.ext4 -n -f "$ROOTIMG" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; die "fsck.ext4 failed"; }
resize2fs -M "$ROOTIMG" >/dev/null 2>&1
new_size=$(dumpe2fs -h "$ROOTIMG" 2>/dev/null | awk -F: '/Block count/{count=$2} /Block size/{size=$2} END{printf "%d", (count*size+16*1048576)/size}')
resize2fs "$ROOTIMG" "$new_size" >/dev/null 2>&1

# --- firmware partition --------------------------------------------------------------------------
FW=$WORK/firmware
cp -r "$FIX$FIRMWARE" "$FW"
chmod -R u+w "$FW"
cat >"$FW/config.txt" <<'EOC'
[pi3]
kernel=u-boot.bin

[pi02]
kernel=u-boot.bin

[pi4]
kernel=u-boot.bin
enable_gic=1
armstub=armstub8-gic.bin

# Otherwise the resolution will be weird in most cases, compared to
# what the pi3 firmware does by default.
disable_overscan=1

# Supported in newer board revisions
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
otg_mode=1

[all]
# Boot in 64-bit mode.
arm_64bit=1

# U-Boot needs this to work, regardless of whether UART is actually used or not.
enable_uart=1

# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
# when attempting to show low-voltage or overtemperature warnings.
avoid_warnings=1
EOC
find "$FW" -exec touch --date=2000-01-01 {} +

# --- MBR image ----------------------------------------------------------------------------------------
rootSizeBlocks=$(du -B 512 --apparent-size "$ROOTIMG" | awk '{ print $1 }')
fwSizeBlocks=$((FW_MIB * 1024 * 1024 / 512))
imageSize=$((rootSizeBlocks * 512 + fwSizeBlocks * 512 + FW_OFFSET_MIB * 1024 * 1024))
rm -f "$IMG.tmp"
truncate -s "$imageSize" "$IMG.tmp"
sfdisk --no-reread --no-tell-kernel -q "$IMG.tmp" <<EOC
label: dos
label-id: 0x$FW_ID

start=${FW_OFFSET_MIB}M, size=$fwSizeBlocks, type=b
start=$((FW_OFFSET_MIB + FW_MIB))M, type=83, bootable
EOC
eval "$(partx "$IMG.tmp" -o START,SECTORS --nr 2 --pairs)"
dd conv=notrunc,sparse if="$ROOTIMG" of="$IMG.tmp" seek="$START" count="$SECTORS" status=none
eval "$(partx "$IMG.tmp" -o START,SECTORS --nr 1 --pairs)"
FWIMG=$WORK/firmware_part.img
truncate -s $((SECTORS * 512)) "$FWIMG"
mkfs.vfat --invariant -i "$FW_ID" -n FIRMWARE "$FWIMG" >/dev/null
export MTOOLS_SKIP_CHECK=1
(
  cd "$FW"
  find . -mindepth 1 -type d | LC_ALL=C sort | while read -r d; do mmd -i "$FWIMG" "::/${d#./}"; done
  find . -type f | LC_ALL=C sort | while read -r f; do mcopy -pm -i "$FWIMG" "$f" "::/${f#./}"; done
)
fsck.vfat -n "$FWIMG" >"$WORK/fsck.vfat.log" 2>&1 || { cat "$WORK/fsck.vfat.log" >&2; die "fsck.vfat failed"; }
dd conv=notrunc if="$FWIMG" of="$IMG.tmp" seek="$START" count="$SECTORS" status=none
mv -f "$IMG.tmp" "$IMG"
if [ "$OUT" != "$IMG" ]; then
  zstd -q -T0 -f --rm "$IMG" -o "$OUT"
fi
log "wrote $OUT ($((imageSize / 1048576)) MiB, root label $ROOT_LABEL) in $(since "$t0") s"
