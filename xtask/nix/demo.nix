# The small demo closures committed under fixtures/demo (x86_64, for raw-efi) and
# fixtures/demo-aarch64 (for sd-aarch64); regenerate: cargo xtask fixtures --demo [--arch ARCH].
# Same shape as a NixOS toplevel, but kernel, initrd, systemd-boot and the Pi firmware are
# tiny, clearly fake placeholder files: an image built from it has the right layout but does
# not boot. (Every builder is the host's busybox: the contents say aarch64, the builds run
# wherever Nix runs.)
# Built with real Nix (busybox builders) so hashes, references and NAR hashes are genuine.
{ params }:
let
  P = builtins.fromJSON (builtins.readFile params);
  bb = builtins.path { name = "busybox-static-1.35.0"; path = /. + P.builder; };
  mk = name: script: derivation {
    inherit name;
    system = "x86_64-linux";
    builder = "${bb}/bin/sh";
    args = [ "-c" (''
      set -e
      umask 022
      # fake NAME SIZE: a placeholder file that says what it is, padded to SIZE bytes
      fake() {
        mkdir -p "$(dirname "$1")"
        i=0
        while [ $i -lt $(( $2 / 64 )) ]; do
          printf 'IMGBUILD DEMO PLACEHOLDER, NOT A REAL %-30s\n' "$3" | cut -c1-63
          i=$((i + 1))
        done > "$1"
      }
    '' + script) ];
    PATH = "${bb}/bin";
  };
  arm = (P.arch or "x86_64") == "aarch64";
  system = if arm then "aarch64-linux" else "x86_64-linux";
  kernelFile = if arm then "Image" else "bzImage";
  kver = "6.1.0";
  kernel = mk "linux-${kver}-imgbuild-demo" ''
    fake $out/${kernelFile} 4096 KERNEL
    printf 'CONFIG_IMGBUILD_DEMO=y\n' > $out/config
  '';
  initrd = mk "initrd-linux-${kver}-imgbuild-demo" ''
    fake $out/initrd 2048 INITRD
  '';
  systemd = mk "systemd-252-imgbuild-demo" ''
    fake $out/lib/systemd/boot/efi/systemd-bootx64.efi 3072 SYSTEMD-BOOT
    fake $out/lib/systemd/systemd 1024 SYSTEMD
    chmod 755 $out/lib/systemd/systemd
  '';
  bash = mk "bash-5.2p26-imgbuild-demo" ''
    fake $out/bin/bash 1024 BASH
    chmod 755 $out/bin/bash
    ln -s bash $out/bin/sh
  '';
  hello = mk "hello-2.12.1" ''
    mkdir -p $out/bin $out/share/doc/hello
    printf '#!${bash}/bin/bash\necho "Hello, world!"\n' > $out/bin/hello
    chmod 755 $out/bin/hello
    printf 'GNU hello (imgbuild demo)\n' > $out/share/doc/hello/README
  '';
  unit = mk "unit-hello.service" ''
    mkdir -p $out
    printf '[Unit]\nDescription=hello\n[Service]\nExecStart=${hello}/bin/hello\n' > $out/hello.service
  '';
  etc = mk "etc" ''
    mkdir -p $out/etc/systemd/system
    printf 'demo\n' > $out/etc/hostname
    printf 'ID=nixos\nNAME=NixOS\nVERSION_ID="24.05"\n' > $out/etc/os-release
    # What nixosModules.imgbuild sets for the format (imgbuild checks it).
    printf '# This is a generated file.  Do not edit!\n\n# Filesystems.\n${fstab}' > $out/etc/fstab
    ln -s ${unit}/hello.service $out/etc/systemd/system/hello.service
  '';
  systemPath = mk "system-path" ''
    mkdir -p $out/bin
    ln -s ${hello}/bin/hello $out/bin/hello
    ln -s ${bash}/bin/bash $out/bin/bash
  '';
  modules = mk "kernel-modules" ''
    mkdir -p $out/lib/modules/${kver}
    printf 'kernel/drivers/block/virtio_blk.ko\n' > $out/lib/modules/${kver}/modules.order
  '';
  firmware = mk "firmware" ''
    mkdir -p $out/lib/firmware
    printf 'no firmware in the demo\n' > $out/lib/firmware/README
  '';
  fstab =
    if arm then
      "/dev/disk/by-label/NIXOS_SD / ext4 x-initrd.mount 0 1\\n/dev/disk/by-label/FIRMWARE /boot/firmware vfat nofail,noauto 0 2\\n"
    else
      "/dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1\\n/dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2\\n";
  # The Raspberry Pi firmware directory (placeholders of what nixpkgs' config.txt loads).
  rpiFirmware = mk "imgbuild-demo-rpi-firmware" ''
    mkdir -p $out
    for f in u-boot.bin armstub8-gic.bin bootcode.bin start.elf fixup.dat start4.elf fixup4.dat \
             bcm2710-rpi-3-b.dtb bcm2710-rpi-3-b-plus.dtb bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb \
             bcm2711-rpi-cm4.dtb bcm2712-rpi-5-b.dtb; do
      fake $out/$f 256 "$f"
    done
  '';
  console = if arm then "ttyAMA0" else "ttyS0";
  kparams = "console=${console},115200 panic=1 loglevel=4";
  label = "NixOS ${P.codeName} ${P.nixosVersion} (Linux ${kver})";
  bootJson = builtins.concatStringsSep "\n" ([
    "{"
    "  \"org.nixos.bootspec.v1\": {"
    "    \"init\": \"$out/init\","
    "    \"initrd\": \"${initrd}/initrd\","
    "    \"kernel\": \"${kernel}/${kernelFile}\","
    "    \"kernelParams\": ["
    "      \"console=${console},115200\","
    "      \"panic=1\","
    "      \"loglevel=4\""
    "    ],"
    "    \"label\": \"${label}\","
    "    \"system\": \"${system}\","
    "    \"toplevel\": \"$out\""
    "  },"
    "  \"org.nixos.specialisation.v1\": {},"
  ]
  ++ (
    if arm then
      [
        "  \"org.imgbuild.v1\": {"
        "    \"firmware\": \"${rpiFirmware}\""
        "  }"
      ]
    else
      [
        "  \"org.nixos.systemd-boot\": {"
        "    \"sortKey\": \"nixos\""
        "  }"
      ]
  )
  ++ [
    "}"
    ""
  ]);
in
(mk "nixos-system-demo-${P.nixosVersion}" ''
  mkdir -p $out
  ln -s ${kernel}/${kernelFile} $out/kernel
  ln -s ${initrd}/initrd $out/initrd
  ln -s ${modules} $out/kernel-modules
  ln -s ${etc}/etc $out/etc
  ln -s ${systemPath} $out/sw
  ln -s ${firmware}/lib/firmware $out/firmware
  ln -s ${systemd} $out/systemd
  printf '#! ${bash}/bin/bash\nsystemConfig=%s\nexec ${systemd}/lib/systemd/systemd "$@"\n' $out > $out/init
  chmod 755 $out/init
  printf '%s' '${kparams}' > $out/kernel-params
  printf '%s' '${P.nixosVersion}' > $out/nixos-version
  printf '%s' ${system} > $out/system
  printf '%s' systemd > $out/init-interface-version
  cat > $out/boot.json <<EOF
  ${bootJson}EOF
'')
