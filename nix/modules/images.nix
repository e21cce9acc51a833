# nixosModules.images: `nixos-rebuild build-image --image-variant <variant>` builds with
# imgbuild, without a VM, for every variant imgbuild has a format for.
#
# nixpkgs (nixos/modules/image/images.nix) turns each `image.modules.<variant>` into a
# configuration of its own (`extendModules` of this system with that module) and publishes
# that configuration's `system.build.image`, plus `passthru.filePath = config.image.filePath`,
# as `system.build.images.<variant>`. `nixos-rebuild build-image` lists the names of
# `system.build.images`, reads `system.build.images.<variant>.passthru.filePath`, builds the
# variant and prints `<out>/<filePath>`.
#
# This module replaces nixpkgs' module of the variants imgbuild has a format for (lib.
# imageVariants: raw-efi, qemu-efi, amazon, azure, google-compute, hyperv, vmware, virtualbox, proxmox,
# sd-card, the PC BIOS ones raw, qemu, digital-ocean, linode, and iso, iso-installer, kexec)
# with:
# this system + `imgbuild.format = <format>` (the same configuration `nixosModules.imgbuild`
# gives a machine installed from that image; for iso-installer also the all-hardware, base and
# installation-device profiles, as nixpkgs' variant has them), imaged by `lib.mkImage`. Only
# the variants whose format is for this system's platform are replaced (sd-card on
# aarch64-linux, iso, iso-installer and kexec on both, the others on x86_64-linux); every
# other variant stays nixpkgs'.
#
# File names follow nixpkgs' options (nixos/modules/image/file-options.nix, imported into each
# variant as nixpkgs' own image modules do): the image is `$out/<image.filePath>`, by default
# `<image.baseName>.<image.extension>` (`sd-image/...` for sd-card); `image.extension`
# defaults to nixpkgs' extension for the variant, and for raw-efi and sd-card a name ending in
# `.zst` means a zstd-compressed image (sd-card's default `img.zst`, as nixpkgs).
#
# The variant modules are defined with `lib.mkForce`, which is what removes nixpkgs' module for
# the name; to add settings to an imgbuild variant, define yours with `lib.mkForce` too:
#   image.modules.qemu-efi = lib.mkForce { image.baseName = "web"; };
{
  config,
  lib,
  pkgs,
  ...
}:
let
  imgbuildLib = import ../lib.nix { };
  inherit (lib) mkDefault mkForce mkIf;

  variantModule =
    name: v:
    {
      config,
      lib,
      pkgs,
      modulesPath,
      ...
    }:
    let
      f = imgbuildLib.formats.${v.format};
      zst = lib.hasSuffix ".zst" config.image.extension;
      # A plain disk (`.img`) may be zstd-compressed; `qemu` is its own base but writes a
      # qcow2 container.
      compress =
        if f.base == v.format && f.extension == "img" then
          (if zst then "zstd" else "none")
        # A container's own extension may end in .zst (proxmox's `vma.zst`): it compresses itself.
        else if zst && config.image.extension != f.extension then
          throw "imgbuild: image variant ${name}: image.extension `${config.image.extension}` ends in .zst, but ${v.format} writes a ${f.extension} container, which imgbuild does not compress"
        else
          null;
    in
    {
      _file = "imgbuild nixosModules.images, variant ${name}";
      imports = [
        (modulesPath + "/image/file-options.nix")
      ]
      ++ map (p: modulesPath + "/${p}") (v.profiles or [ ]);

      # The variant decides the format, over a configuration's own (even a mkForce'd one).
      imgbuild.format = lib.mkOverride 10 v.format;
      image.extension = mkDefault v.extension;
      image.filePath = mkIf (v ? directory) (mkDefault "${v.directory}/${config.image.fileName}");
      # As nixpkgs' iso-image.nix names its ISO.
      image.baseName = mkIf (v.isoBaseName or false) (
        mkDefault "nixos${
          lib.optionalString (config.imgbuild.iso.edition != "") "-${config.imgbuild.iso.edition}"
        }-${config.system.nixos.label}-${pkgs.stdenv.hostPlatform.system}"
      );

      system.build.image = imgbuildLib.mkImage {
        nixosConfiguration = { inherit config; };
        inherit (v) format;
        inherit compress;
        # The image is built on the build platform: its package set, its imgbuild.
        pkgs = pkgs.buildPackages;
        imgbuild = config.imgbuild.package;
        inherit (config.image) filePath;
      };
    };
in
{
  _file = "imgbuild nixosModules.images";
  imports = [ ./imgbuild.nix ];

  options.imgbuild.package = lib.mkOption {
    type = lib.types.package;
    default = pkgs.buildPackages.callPackage ../package.nix { };
    defaultText = lib.literalExpression "pkgs.buildPackages.callPackage <imgbuild>/nix/package.nix { } (the flake's nixosModules.images: the flake's own imgbuild package)";
    description = ''
      The imgbuild that builds the `system.build.images` variants, for the platform that
      builds the image (nixpkgs' `buildPackages`).
    '';
  };

  config.image.modules = lib.mkMerge (
    lib.mapAttrsToList (
      name: v:
      mkIf (builtins.elem pkgs.stdenv.hostPlatform.system (imgbuildLib.systemsOf imgbuildLib.formats.${v.format})) {
        ${name} = mkForce (variantModule name v);
      }
    ) imgbuildLib.imageVariants
  );
}
