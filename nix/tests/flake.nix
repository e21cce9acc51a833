# The stub nixpkgs of nix/tests/stubs.nix as a flake, for evaluating imgbuild's flake and the
# template through Nix's own flake machinery offline (nix/tests/run.sh, step 4):
#   nix eval --override-input nixpkgs path:nix/tests .#lib.formats
{
  description = "Stub nixpkgs (lib.nixosSystem, legacyPackages) for imgbuild's offline flake tests";
  outputs = _: (import ./stubs.nix { }).nixpkgs;
}
