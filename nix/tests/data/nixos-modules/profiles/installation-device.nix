# Test stand-in for nixpkgs' nixos/modules/profiles/installation-device.nix (written for these tests; nixpkgs'
# file is not copied): a marker option, so real-modules.nix can see which configurations
# import the profile (the iso-installer variant and mkNodes' iso-installer nodes, as nixpkgs'
# installation-cd-base.nix does) and which do not.
{ lib, ... }:
{
  options.test.profiles.installation-device = lib.mkOption {
    type = lib.types.bool;
    default = true;
  };
}
