{
  description = "My machines: NixOS configurations that become disk images, then follow this repository";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # Where you took this template from (`nix flake init -t <this url>`).
    imgbuild.url = "github:OWNER/imgbuild";
    imgbuild.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs =
    { nixpkgs, imgbuild, ... }:
    imgbuild.lib.mkNodes {
      inherit nixpkgs;
      # Every node: nixosModules.imgbuild (file systems and bootloader of its image format) and
      # nixosModules.gitops come with mkNodes; these are yours.
      modules = [ ./hosts/common.nix ];
      nodes = [
        {
          name = "pi4";
          system = "aarch64-linux";
          format = "sd-aarch64";
          modules = [ ./hosts/pi4.nix ];
        }
        {
          name = "x86";
          system = "x86_64-linux";
          format = "raw-efi";
          modules = [ ./hosts/x86.nix ];
        }
      ];
    };
  # Outputs: nixosConfigurations.{pi4,x86} (what the machines rebuild from),
  # packages.<system>.{pi4,x86} (their images: `nix build .#pi4`), ciMatrix (for CI).
}
