# Test stand-in for nixpkgs' nixos/modules/profiles/all-hardware.nix (written for these tests; nixpkgs'
# file is not copied): a marker option, so real-modules.nix can see which configurations
# import the profile (the iso-installer variant and mkNodes' iso-installer nodes, as nixpkgs'
# installation-cd-base.nix does) and which do not.
{ lib, ... }:
{
  options.test.profiles.all-hardware = lib.mkOption {
    type = lib.types.bool;
    default = true;
  };
}
