{
  description = "imgbuild: rootless, reproducible NixOS disk images built in the Nix sandbox, and a flake library that turns a list of machines into rebuildable configurations, images and GitOps";

  # rustc >= 1.89 (rusqlite 0.43): nixos-25.11 or newer.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  # Written with builtins only, so nix/tests/ can evaluate these outputs against stub
  # nixpkgs (Debian's Nix has no nixpkgs to fetch).
  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system nixpkgs.legacyPackages.${system};
          }) systems
        );
      # imgbuild for a build platform's package set: this flake's own build when it has one
      # for that system (pinned by this flake's nixpkgs), else built with the given pkgs.
      imgbuildFor =
        pkgs:
        let
          system = pkgs.stdenv.buildPlatform.system;
        in
        if builtins.elem system systems then
          self.packages.${system}.imgbuild
        else
          pkgs.callPackage ./nix/package.nix { };
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          imgbuild = pkgs.callPackage ./nix/package.nix { };
          default = self.packages.${system}.imgbuild;
        }
      );

      apps = forAllSystems (
        system: pkgs: {
          default = {
            type = "app";
            program = "${self.packages.${system}.imgbuild}/bin/imgbuild";
          };
        }
      );

      nixosModules = {
        imgbuild = {
          imports = [ ./nix/modules/imgbuild.nix ];
        };
        gitops = {
          imports = [ ./nix/modules/gitops.nix ];
        };
        # `nixos-rebuild build-image --image-variant <raw-efi|qemu-efi|...|sd-card>` built by
        # imgbuild, no VM (nix/modules/images.nix); imports `imgbuild`. Opt-in: it replaces
        # nixpkgs' builders of those variants, which `imgbuild` alone leaves alone.
        images =
          { lib, pkgs, ... }:
          {
            _file = "imgbuild flake.nix, nixosModules.images";
            imports = [ ./nix/modules/images.nix ];
            # This flake's imgbuild, for the platform that builds the image.
            imgbuild.package = lib.mkDefault (imgbuildFor pkgs.buildPackages);
          };
        default = self.nixosModules.imgbuild;
      };

      # mkNodes, mkImage, imgbuildArgs, commandLine, formats, ... (see nix/lib.nix).
      lib = import ./nix/lib.nix {
        inherit nixpkgs imgbuildFor;
        modules = {
          inherit (self.nixosModules) imgbuild gitops;
        };
      };

      templates.default = {
        path = ./templates/default;
        description = "Two machines (a Raspberry Pi 4 and an x86_64 PC) as NixOS configurations, their disk images, GitOps upgrades, Renovate and a CI workflow";
      };

      checks = forAllSystems (
        system: pkgs: {
          imgbuild = self.packages.${system}.imgbuild;
          # The wiring tests of nix/tests/eval.nix, run at evaluation time.
          lib =
            let
              r = import ./nix/tests/eval.nix { };
            in
            if r.failures == [ ] then
              pkgs.runCommand "imgbuild-lib-tests" { } "echo ${toString r.passed} passed > $out"
            else
              throw "imgbuild lib tests failed: ${builtins.toJSON r.failures}";
        }
      );
    };
}
