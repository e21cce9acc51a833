# The imgbuild CLI, built from this workspace with the committed Cargo.lock.
{
  lib,
  rustPlatform,
  stdenv,
  installShellFiles,
}:
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
      ../vendor # ext4-view with one fix, through [patch.crates-io]
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "imgbuild"
  ];

  # Shell completions and the manual page, from the binary itself (clap_complete,
  # clap_mangen); skipped when cross-compiling (the binary cannot run on the build machine).
  nativeBuildInputs = [ installShellFiles ];
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd imgbuild \
      --bash <($out/bin/imgbuild completions bash) \
      --zsh <($out/bin/imgbuild completions zsh) \
      --fish <($out/bin/imgbuild completions fish)
    $out/bin/imgbuild man > imgbuild.1
    installManPage imgbuild.1
  '';

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
