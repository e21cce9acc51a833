# The Raspberry Pi firmware directory of an sd-aarch64 image: what nixpkgs'
# sd-image-aarch64.nix `populateFirmwareCommands` puts on the FIRMWARE partition, as a store
# path. Regular files only (copied, never symlinked): imgbuild copies the directory verbatim.
# nixosModules.imgbuild names it in the toplevel's boot.json (`"org.imgbuild.v1".firmware`).
{
  lib,
  runCommand,
  raspberrypifw,
  raspberrypi-armstubs,
  # U-Boot builds by the file name config.txt loads them as (`kernel=u-boot.bin`, or
  # `u-boot-rpi3.bin` / `u-boot-rpi4.bin` per board): each package's u-boot.bin.
  ubootFiles,
  # config.txt text.
  configTxt,
}:
let
  # nixpkgs copies these for Pi 3 (and Zero 2) and Pi 4 (and 400, CM4); all must exist.
  dtbs = [
    "bcm2710-rpi-2-b"
    "bcm2710-rpi-3-b"
    "bcm2710-rpi-3-b-plus"
    "bcm2710-rpi-cm3"
    "bcm2710-rpi-zero-2"
    "bcm2710-rpi-zero-2-w"
    "bcm2711-rpi-4-b"
    "bcm2711-rpi-400"
    "bcm2711-rpi-cm4"
    "bcm2711-rpi-cm4s"
  ];
  # Pi 5 device trees: copied when this raspberrypifw has them (newer releases).
  optionalDtbs = [
    "bcm2712-d-rpi-5-b"
    "bcm2712-rpi-5-b"
    "bcm2712-rpi-500"
    "bcm2712-rpi-cm5-cm4io"
    "bcm2712-rpi-cm5-cm5io"
    "bcm2712-rpi-cm5l-cm4io"
    "bcm2712-rpi-cm5l-cm5io"
  ];
in
runCommand "imgbuild-rpi-firmware"
  {
    inherit configTxt;
    passAsFile = [ "configTxt" ];
    passthru = { inherit ubootFiles; };
  }
  ''
    fw=${raspberrypifw}/share/raspberrypi/boot
    mkdir -p "$out"
    (cd "$fw" && cp bootcode.bin fixup*.dat start*.elf "$out/")
    ${lib.concatStringsSep "\n" (
      map (name: "cp ${ubootFiles.${name}}/u-boot.bin \"$out/${name}\"") (builtins.attrNames ubootFiles)
    )}
    cp ${raspberrypi-armstubs}/armstub8-gic.bin "$out/armstub8-gic.bin"
    for dtb in ${lib.concatStringsSep " " dtbs}; do
      cp "$fw/$dtb.dtb" "$out/"
    done
    for dtb in ${lib.concatStringsSep " " optionalDtbs}; do
      if [ -e "$fw/$dtb.dtb" ]; then cp "$fw/$dtb.dtb" "$out/"; fi
    done
    cp "$configTxtPath" "$out/config.txt"
    chmod -R u+w,go-w "$out"
  ''
