# The image derivation lib.mkImage makes for a Nix-built fixture closure (cargo xtask
# fixtures): its imgbuild argument list, command line and builder script. The stub package
# set's closureInfo returns the fixture's closure-info directory (made from the fixture store's
# `nix-store --dump-db`, the same format as nixpkgs' closureInfo); everything else is mkImage's
# own code. nix/tests/run.sh runs the result with the real imgbuild.
#   nix-instantiate --eval --strict --json -E \
#     'import ./nix/tests/fixture.nix { fixtureDir = "/abs/target/fixtures/x86_64"; }'
{ fixtureDir }:
let
  stubs = import ./stubs.nix { };
  lib = import ../lib.nix { };
  info = builtins.fromJSON (builtins.readFile "${fixtureDir}/fixture.json");
  format =
    {
      x86_64-linux = "raw-efi";
      aarch64-linux = "sd-aarch64";
    }
    .${info.system};
  # A string, not a path: nothing is copied into a store.
  closureInfoDir = "${fixtureDir}/closure-info";
  pkgs = stubs.pkgsFor "x86_64-linux" // {
    closureInfo =
      { rootPaths }:
      if rootPaths == [ info.toplevel ] then
        closureInfoDir
      else
        throw "fixture.nix: closureInfo asked for ${builtins.toJSON rootPaths}, not the fixture toplevel";
  };
  img = lib.mkImage {
    nixosConfiguration = stubs.nixosConfiguration {
      name = "fixture";
      inherit (info) system toplevel;
      inherit format;
    };
    inherit pkgs;
  };
in
{
  inherit format;
  inherit (img) imgbuildArgs commandLine file;
  placeholder = builtins.placeholder "out";
  script = img.script;
  scriptRunsCommandLine = stubs.lib.hasInfix "\n${img.commandLine} \"\${threads[@]}\"\n" img.script;
}
