# Test stand-in for nixpkgs' nixos/modules/image/file-options.nix: the four image file name
# options with the types and defaults nixpkgs gives them (written for these tests; nixpkgs'
# file is not copied). real-modules.nix passes this directory as `modulesPath`, so
# nixosModules.images imports it as it imports nixpkgs' file in a real system.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  str = lib.types.str;
in
{
  options.image = {
    # nixpkgs: `nixos-image-<system.nixos.label>-<host platform>`.
    baseName = lib.mkOption {
      type = str;
      default = "nixos-image-${config.system.nixos.label}-${pkgs.stdenv.hostPlatform.system}";
    };
    # nixpkgs: no default; every image module sets it.
    extension = lib.mkOption { type = str; };
    fileName = lib.mkOption {
      type = str;
      default = "${config.image.baseName}.${config.image.extension}";
    };
    # Relative to the image derivation's $out; what `nixos-rebuild build-image` appends.
    filePath = lib.mkOption {
      type = str;
      default = config.image.fileName;
    };
  };
}
