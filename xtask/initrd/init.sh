#!/bin/sh
# imgbuild fixture stage-1 init (busybox-static only; packed into the fixture initrd by
# `cargo xtask fixtures`, see xtask/src/initrd.rs). It checks what a NixOS stage 1 would
# need from the image, prints one marker line and powers off:
#   IMGBUILD-BOOT-OK toplevel=<path>    or    IMGBUILD-BOOT-FAIL <reason>
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

ROOT_LABEL='@ROOT_LABEL@'
say() { echo "imgbuild-initrd: $*"; }
fail() {
  echo "IMGBUILD-BOOT-FAIL $*"
  sync
  poweroff -f
  sleep 10
}

say "$(uname -m) kernel $(uname -r); cmdline: $(cat /proc/cmdline)"

# kernel modules, in dependency order (resolved from .modinfo depends= at fixture time)
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err ||
    grep -q 'File exists' /tmp/insmod.err || say "insmod $m: $(cat /tmp/insmod.err)"
done </etc/imgbuild/modules

INIT=""
for arg in $(cat /proc/cmdline); do
  case $arg in
    init=*) INIT=${arg#init=} ;;
  esac
done
[ -n "$INIT" ] || fail "no init= on the kernel command line"

# The store to check, by how the system was booted:
#   netboot: /nix-store.squashfs is in the initramfs (netboot.nix: `../nix-store.squashfs`)
#   iso:     root=LABEL=<volumeID> on the command line names the ISO (iso-image.nix)
#   disk:    the ext4 root file system labelled @ROOT_LABEL@
# Live boots mount as iso-image.nix's fileSystems do: the ISO at /iso, the squashfs (loop)
# at /nix/.ro-store, a tmpfs at /nix/.rw-store and the overlay of both at /nix/store.
#   verity:  usrhash=<root hash> (an appliance): the ext4 root as for a disk, the store on the
#            dm-verity device made of the two GPT partitions whose UUIDs are the root hash's
#            first and last 128 bits (as systemd-veritysetup-generator finds them), mounted
#            read-only at /nix/store
LIVE_LABEL=""
USRHASH=""
for arg in $(cat /proc/cmdline); do
  case $arg in
    root=LABEL=*) LIVE_LABEL=${arg#root=LABEL=} ;;
    usrhash=*) USRHASH=${arg#usrhash=} ;;
  esac
done
if [ -f /nix-store.squashfs ]; then
  MODE=netboot
elif [ -n "$LIVE_LABEL" ]; then
  MODE=iso
  ROOT_LABEL=$LIVE_LABEL
elif [ -n "$USRHASH" ]; then
  MODE=verity
else
  MODE=disk
fi
say "boot mode: $MODE"

# iso9660 volume id of a device (bytes 32808..32839 of its first session), blanks trimmed
iso_label() {
  dd if="$1" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=32 2>/dev/null | tr -d ' \000'
}

# the device labelled ROOT_LABEL: findfs, else (iso) any device whose ISO volume id matches
find_labelled() {
  findfs "LABEL=$ROOT_LABEL" 2>/dev/null && return 0
  [ "$MODE" = iso ] || return 1
  for d in /dev/sr* /dev/vd* /dev/sd* /dev/nvme*n* /dev/hd*; do
    [ -b "$d" ] && [ "$(iso_label "$d")" = "$ROOT_LABEL" ] && { echo "$d"; return 0; }
  done
  return 1
}

# hex bytes of a file range: hexbytes FILE OFFSET COUNT -> "b0 b1 ..." (lowercase)
hexbytes() {
  od -A n -t x1 -v -j "$2" -N "$3" "$1" | tr -s ' \n' '  ' | sed 's/^ *//; s/ *$//'
}
# little-endian unsigned number from FILE at OFFSET, COUNT bytes
le() {
  v=0
  for b in $(hexbytes "$1" "$2" "$3" | tr ' ' '\n' | sed -n '1!G;h;$p'); do v=$((v * 256 + 0x$b)); done
  echo "$v"
}
# /dev/<partition> whose GPT unique partition GUID, in RFC 4122 byte order without dashes,
# is $1 (32 lowercase hex digits), searched on every disk's primary GPT (512-byte sectors)
dev_by_partuuid() {
  want=$1
  for sys in /sys/block/*; do
    disk=${sys##*/}
    [ -b "/dev/$disk" ] || continue
    [ "$(dd if="/dev/$disk" bs=1 skip=512 count=8 2>/dev/null)" = "EFI PART" ] || continue
    lba=$(le "/dev/$disk" 584 8)
    count=$(le "/dev/$disk" 592 4)
    size=$(le "/dev/$disk" 596 4)
    [ "$count" -le 256 ] && [ "$size" -ge 128 ] && [ "$size" -le 4096 ] || continue
    dd if="/dev/$disk" of=/tmp/gpt.entries bs=512 skip="$lba" count=$(((count * size + 511) / 512)) 2>/dev/null
    i=0
    while [ "$i" -lt "$count" ]; do
      set -- $(hexbytes /tmp/gpt.entries $((i * size + 16)) 16)
      guid=$4$3$2$1$6$5$8$7$9${10}${11}${12}${13}${14}${15}${16}
      if [ "$guid" = "$want" ]; then
        for part in "$sys"/"$disk"*; do
          [ "$(sed -n 's/^PARTN=//p' "$part/uevent")" = "$((i + 1))" ] && { echo "/dev/${part##*/}"; return 0; }
        done
      fi
      i=$((i + 1))
    done
  done
  return 1
}

mount_live_store() {
  squashfs=$1
  mkdir -p /nix/.ro-store /nix/.rw-store /nix/store
  mount -t squashfs -o ro,loop "$squashfs" /nix/.ro-store || fail "mount -t squashfs -o loop $squashfs /nix/.ro-store failed"
  mount -t tmpfs -o mode=0755 tmpfs /nix/.rw-store || fail "mount tmpfs /nix/.rw-store failed"
  mkdir -p /nix/.rw-store/store /nix/.rw-store/work
  mount -t overlay overlay -o lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work /nix/store ||
    fail "mount -t overlay /nix/store failed"
  say "store: $squashfs on /nix/.ro-store, overlay on /nix/store"
}

if [ "$MODE" = netboot ]; then
  mount_live_store /nix-store.squashfs
  R=""
else
  dev=""
  deadline=$(($(date +%s) + 30))
  while :; do
    dev=$(find_labelled) && [ -n "$dev" ] && break
    dev=""
    [ "$(date +%s)" -lt "$deadline" ] || break
    [ -n "$waiting" ] || say "waiting up to 30 s for LABEL=$ROOT_LABEL ..."
    waiting=1
    sleep 0.2
  done
  if [ -z "$dev" ]; then
    say "block devices: $(tail -n +3 /proc/partitions | awk '{print $4}' | tr '\n' ' ')"
    fail "root filesystem LABEL=$ROOT_LABEL not found after 30 s"
  fi
  say "LABEL=$ROOT_LABEL is $dev"
  if [ "$MODE" = iso ]; then
    mkdir -p /iso
    mount -t iso9660 -o ro "$dev" /iso || fail "mount -t iso9660 -o ro $dev /iso failed"
    [ -f /iso/nix-store.squashfs ] || fail "no /nix-store.squashfs on the ISO ($dev)"
    mount_live_store /iso/nix-store.squashfs
    R=""
  else
    mkdir -p /mnt/root
    mount -t ext4 -o ro "$dev" /mnt/root || fail "mount -t ext4 -o ro $dev failed"
    R=/mnt/root
  fi
  if [ "$MODE" = verity ]; then
    command -v veritysetup >/dev/null ||
      fail "usrhash= given but this initrd has no veritysetup (cryptsetup-bin was missing when the fixture was built)"
    [ "${#USRHASH}" -eq 64 ] || fail "usrhash=$USRHASH is not a SHA-256 root hash (64 hex digits)"
    target=${USRHASH:0:32}
    data=$(dev_by_partuuid "$target") || fail "no GPT partition with UUID $target (usrhash's first 128 bits)"
    target=${USRHASH:32:32}
    hash=$(dev_by_partuuid "$target") || fail "no GPT partition with UUID $target (usrhash's last 128 bits)"
    say "verity: data $data, hash $hash"
    mkdir -p /run/cryptsetup
    veritysetup open "$data" usr "$hash" "$USRHASH" >/tmp/verity.out 2>&1 ||
      fail "veritysetup open $data usr $hash failed: $(tr '\n' ' ' </tmp/verity.out)"
    [ -b /dev/mapper/usr ] || fail "veritysetup made no /dev/mapper/usr"
    # dm-verity checks a block when it is read: read them all (a corrupt one is an I/O error)
    t0=$(date +%s)
    dd if=/dev/mapper/usr of=/dev/null bs=1M 2>/tmp/verity.dd ||
      fail "reading /dev/mapper/usr failed: dm-verity refused a block: $(grep -v records /tmp/verity.dd | head -n 2 | tr '\n' ' ')"
    say "verity: every block of $data verified against the root hash in $(($(date +%s) - t0)) s"
    # nixpkgs' verity store (image.repart.verityStore): the usr partition holds nix/store/<path>,
    # mounted at /usr, /nix/store bound to /usr/nix/store
    mkdir -p /sysusr
    mount -t squashfs -o ro /dev/mapper/usr /sysusr ||
      fail "mount -t squashfs /dev/mapper/usr /usr failed"
    [ -d /sysusr/nix/store ] || fail "the usr partition has no nix/store directory"
    mount --bind /sysusr/nix/store /mnt/root/nix/store ||
      fail "mount --bind /usr/nix/store /nix/store failed"
    say "store: /dev/mapper/usr (dm-verity, root hash $USRHASH) on /usr, /usr/nix/store on /nix/store"
  fi
fi

TOPLEVEL=${INIT%/init}
[ -f "$R$INIT" ] && [ -x "$R$INIT" ] ||
  fail "init $INIT is missing or not executable on the root filesystem"
if [ "$MODE" = disk ] || [ "$MODE" = verity ]; then
  DB=/mnt/root/nix/var/nix/db/db.sqlite
  [ -f "$DB" ] || fail "no Nix database /nix/var/nix/db/db.sqlite on the root filesystem"
  # (busybox grep stops each "line" at a NUL byte, so split the binary file at NULs first)
  if tr '\000' '\n' <"$DB" | grep -qF "$TOPLEVEL"; then
    say "database: toplevel $TOPLEVEL is registered in /nix/var/nix/db/db.sqlite"
  elif [ "$MODE" = verity ]; then
    # An A/B update (systemd-sysupdate) replaces the store partitions, not the root: the
    # root's database describes the store the image was built with. The toplevel was found
    # in the verified store above.
    say "database: toplevel $TOPLEVEL is not registered in /nix/var/nix/db/db.sqlite (the store was updated after the root was written)"
  else
    fail "toplevel $TOPLEVEL is not registered in /nix/var/nix/db/db.sqlite"
  fi
else
  REG=/nix/store/nix-path-registration
  [ -f "$REG" ] || fail "no $REG in the store image"
  grep -qxF "$TOPLEVEL" "$REG" || fail "toplevel $TOPLEVEL is not named in $REG"
fi

# The store's contents: every file of the manifest by sha256, every symlink by target
# (required for live boots, where the squashfs is what is being tested; checked on disks
# whose toplevel has one)
# (the toplevel's link is absolute: resolve it below the mounted root, R)
MAN=""
if [ -L "$R$TOPLEVEL/imgbuild-store-manifest" ]; then
  MAN=$R$(readlink "$R$TOPLEVEL/imgbuild-store-manifest")
  [ -d "$MAN" ] || fail "store manifest $MAN (linked from the toplevel) is missing"
fi
if [ -n "$MAN" ]; then
  sed "s|  /nix/store/|  $R/nix/store/|" "$MAN/sha256" >/tmp/sha256
  sha256sum -c /tmp/sha256 >/tmp/sha256.out 2>&1 ||
    fail "store files differ: $(grep -v ': OK$' /tmp/sha256.out | head -n 3 | tr '\n' ' ')"
  files=$(grep -c ': OK$' /tmp/sha256.out)
  links=0
  tab=$(printf '\t')
  while IFS= read -r line; do
    l=${line%%"$tab"*}
    t=${line#*"$tab"}
    [ -L "$R$l" ] || fail "store symlink $l is missing or not a symlink"
    [ "$(readlink "$R$l")" = "$t" ] || fail "store symlink $l points to $(readlink "$R$l"), want $t"
    links=$((links + 1))
  done <"$MAN/symlinks"
  [ "$files" -gt 0 ] && [ "$links" -gt 0 ] || fail "store manifest $MAN is empty"
  say "store manifest: $files files (sha256) and $links symlinks match"
elif [ "$MODE" != disk ]; then
  fail "toplevel $TOPLEVEL has no imgbuild-store-manifest"
fi
[ "$MODE" = verity ] && umount /mnt/root/nix/store /sysusr 2>/dev/null
[ -n "$R" ] && umount "$R" 2>/dev/null
echo "IMGBUILD-BOOT-OK toplevel=$TOPLEVEL"
sync
# let the serial line drain: poweroff -f does not wait for the tty (a slow TCG PL011 once
# cut the marker line short)
sleep 1
poweroff -f
sleep 10
