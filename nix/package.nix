# The imgbuild CLI, built from this workspace with the committed Cargo.lock.
{ lib, rustPlatform }:
let
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "imgbuild";
  inherit (cargoToml.workspace.package) version;

  # Only what cargo reads: editing nix/, templates/ or the README does not rebuild imgbuild.
  # (`tests/` is listed because crates/cli declares its e2e test target there.)
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../xtask
      ../formats
      ../tests
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "imgbuild"
  ];

  # The tests need e2fsprogs, dosfstools, mtools, gdisk, a Nix store, root (loop mounts) and
  # QEMU; `cargo xtask ci` runs them. The package build only compiles.
  doCheck = false;

  meta = {
    description = "Rootless, bit-for-bit reproducible NixOS disk images (raw-efi, Raspberry Pi SD)";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "imgbuild";
    platforms = lib.platforms.linux;
  };
}
