# lib.mkImage's reference handling in miniature, for Nix itself to build (nix/tests/run.sh,
# step 5): a two-path "closure" and an "image" whose build reads the closure and whose output
# names its store paths (as imgbuild's manifest and the image's own Nix store do), with the
# attributes mkImage sets: `__structuredAttrs = true; unsafeDiscardReferences.out = true;`.
# `discard = false` is the control: the same image without them.
#
# Builders are a static busybox (a directory with bin/sh), imported with builtins.path, so
# Debian's Nix builds this offline in a chroot store. Output paths are named through
# `placeholder` in the arguments, which Nix substitutes with and without structured attrs.
{
  busybox,
  discard ? true,
}:
let
  bb = builtins.path {
    name = "busybox-static";
    path = /. + busybox;
  };
  out = builtins.placeholder "out";
  mk =
    name: attrs: script:
    derivation (
      {
        inherit name;
        system = builtins.currentSystem;
        builder = "${bb}/bin/sh";
        args = [
          "-c"
          "export PATH=${bb}/bin; set -e; ${script}"
        ];
      }
      // attrs
    );
  dep = mk "closure-dep" { } "echo dep > ${out}";
  toplevel = mk "closure-toplevel" { } "mkdir ${out}; echo ${dep} > ${out}/dep";
  image =
    mk (if discard then "image" else "image-keeping-references")
      (
        {
          __structuredAttrs = true;
        }
        // (if discard then { unsafeDiscardReferences.out = true; } else { })
      )
      ''
        mkdir ${out}
        # The build reads the closure (imgbuild copies it into the image) ...
        cat ${toplevel}/dep > ${out}/read-from-closure
        # ... and the output names its store paths, as the manifest does.
        echo ${toplevel} > ${out}/manifest
        echo ${dep} >> ${out}/manifest
      '';
in
{
  inherit image dep toplevel;
}
