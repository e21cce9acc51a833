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

# the root filesystem, by label, like NixOS' fileSystems."/".device = "/dev/disk/by-label/..."
dev=""
deadline=$(($(date +%s) + 30))
while :; do
  dev=$(findfs "LABEL=$ROOT_LABEL" 2>/dev/null) && [ -n "$dev" ] && break
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
mkdir -p /mnt/root
mount -t ext4 -o ro "$dev" /mnt/root || fail "mount -t ext4 -o ro $dev failed"

TOPLEVEL=${INIT%/init}
[ -f "/mnt/root$INIT" ] && [ -x "/mnt/root$INIT" ] ||
  fail "init $INIT is missing or not executable on the root filesystem"
DB=/mnt/root/nix/var/nix/db/db.sqlite
[ -f "$DB" ] || fail "no Nix database /nix/var/nix/db/db.sqlite on the root filesystem"
# (busybox grep stops each "line" at a NUL byte, so split the binary file at NULs first)
tr '\000' '\n' <"$DB" | grep -qF "$TOPLEVEL" || fail "toplevel $TOPLEVEL is not registered in /nix/var/nix/db/db.sqlite"
umount /mnt/root 2>/dev/null
echo "IMGBUILD-BOOT-OK toplevel=$TOPLEVEL"
sync
poweroff -f
sleep 10
