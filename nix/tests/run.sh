#!/usr/bin/env bash
# Tests of imgbuild's flake, Nix library, NixOS modules and template with Debian's Nix, which
# has no nixpkgs (and no network to fetch one):
#   1. every .nix file of the repository parses (nix-instantiate --parse);
#   2. nix/tests/eval.nix (wiring tests against stub nixpkgs) passes, and fails in every test
#      when its expectations are sabotaged (so the comparison can fail); 2b. the same for
#      nix/tests/real-modules.nix: the modules and mkNodes through the real nixpkgs lib
#      (vendored in nix/tests/nixpkgs-lib) with the NixOS options they set declared;
#      2b also lists, with `nix eval`, the `nixos-rebuild build-image` variants of a raw-efi
#      and a sd-aarch64 system under nixosModules.images: who builds each, and its file path;
#   3. the flake and the template evaluate through Nix's own flake machinery (nix flake show,
#      nix eval) with nixpkgs overridden by the stub flake nix/tests/flake.nix;
#   4. for each Nix-built fixture closure (`cargo xtask fixtures`: target/fixtures/x86_64 and
#      aarch64), the builder script lib.mkImage generates runs as Nix would run it ($out for
#      the placeholder), with `imgbuild` on PATH being target/release/imgbuild plus
#      `--store-root <fixture>`, and the image passes sgdisk/sfdisk, fsck.fat and e2fsck.
#      --store-root is the only addition: the fixture is a chroot store (`nix-build --store
#      DIR`), its /nix/store paths live under DIR/nix/store; in the Nix build sandbox they are
#      at /nix/store and imgbuild's default store root `/` is right;
#   5. references: nix/tests/references.nix (mkImage's derivation in miniature) built by the
#      installed Nix in a chroot store: the image derivation has structured attrs and
#      `unsafeDiscardReferences.out = true` in its .drv; its build reads the closure; its output
#      has no references where the Nix honours the attribute (2.18 on), and the closure's
#      references where it does not (Debian's 2.8: said so in the log); the control without
#      the attribute keeps the references on every Nix. Run with the installed Nix and with
#      Debian 13's (2.26, unpacked under .cache by nix/tests/newer-nix.sh), under which the
#      evaluation tests of step 2 run again.
#
# Usage: nix/tests/run.sh [IMGBUILD]   (default: target/release/imgbuild, built by
#        `cargo build --release -p imgbuild`). Needs nix-bin, jq, gdisk, fdisk, e2fsprogs,
#        dosfstools, mtools, zstd.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
# Debian's nix-bin run as root, without the nixbld group: keep it quiet.
export NIX_CONFIG="build-users-group ="

imgbuild=$(realpath "${1:-target/release/imgbuild}")
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
for tool in nix nix-instantiate git jq sgdisk sfdisk e2fsck debugfs fsck.fat mdir zstd sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
[ -x "$imgbuild" ] || fail "$imgbuild: not built (cargo build --release -p imgbuild)"

work=$(mktemp -d "${TMPDIR:-/tmp}/imgbuild-nix-tests.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 1. parse ---------------------------------------------------------------------------
echo "== 1. nix-instantiate --parse"
n=0
while IFS= read -r -d '' f; do
    nix-instantiate --parse "$f" >/dev/null || fail "$f does not parse"
    n=$((n + 1))
done < <(find . \( -path ./target -o -path ./.git -o -path ./.cache \) -prune -o -name '*.nix' -print0 | sort -z)
[ "$n" -gt 0 ] || fail "no .nix files found"
for f in flake.nix nix/lib.nix nix/modules/imgbuild.nix nix/modules/gitops.nix templates/default/flake.nix; do
    [ -f "$f" ] || fail "$f is missing"
done
echo "parsed $n .nix files"

# --- 2. eval -----------------------------------------------------------------------------
echo "== 2. nix-instantiate --eval --strict nix/tests/eval.nix"
eval_json() {
    nix-instantiate --eval --strict --json -E "import ./nix/tests/eval.nix { sabotage = $1; }"
}
res=$(eval_json false)
passed=$(jq .passed <<<"$res")
failed=$(jq .failed <<<"$res")
if [ "$failed" != 0 ]; then
    jq .failures <<<"$res" >&2
    fail "$failed eval test(s) failed ($passed passed)"
fi
[ "$passed" -ge 25 ] || fail "only $passed eval tests ran"
echo "eval tests: $passed passed, 0 failed"
jq -r '.commandLines | to_entries[] | "  \(.key): \(.value)"' <<<"$res"
sab=$(eval_json true)
[ "$(jq .passed <<<"$sab")" = 0 ] && [ "$(jq .failed <<<"$sab")" = "$passed" ] ||
    fail "sabotaged expectations: $(jq -c '{passed, failed}' <<<"$sab"), expected all $passed to fail"
echo "sabotaged run: all $passed tests fail, as they must"

# --- 2b. the modules through the real module system -------------------------------------
echo "== 2b. nix/tests/real-modules.nix: the modules and mkNodes with the real nixpkgs lib"
real_json() {
    nix-instantiate --eval --strict --json -E "import ./nix/tests/real-modules.nix { sabotage = $1; }"
}
res=$(real_json false)
rpassed=$(jq .passed <<<"$res")
if [ "$(jq .failed <<<"$res")" != 0 ]; then
    jq .failures <<<"$res" >&2
    fail "real module system tests failed ($rpassed passed)"
fi
[ "$rpassed" -ge 11 ] || fail "only $rpassed real module system tests ran"
sab=$(real_json true)
[ "$(jq .passed <<<"$sab")" = 0 ] && [ "$(jq .failed <<<"$sab")" = "$rpassed" ] ||
    fail "real module system tests: sabotaged expectations did not all fail"
echo "real module system tests: $rpassed passed, 0 failed (sabotaged: all fail)"
echo "nix eval -f nix/tests/real-modules.nix buildImage (variant: builder: path under the output):"
variants=$(nix --extra-experimental-features nix-command eval --json -f nix/tests/real-modules.nix buildImage) ||
    fail "nix eval buildImage"
jq -r 'to_entries[] | "  \(.key)", (.value | to_entries[] | "    \(.key): \(.value)")' <<<"$variants"
# Every imgbuild format with a build-image variant is a variant of the systems it is for, built
# by imgbuild: seventeen x86_64 disks (linode among them), sd-card, and iso, iso-installer,
# kexec, lxc, lxc-metadata, proxmox-lxc on both systems.
[ "$(jq '[.[][] | select(startswith("imgbuild "))] | length' <<<"$variants")" = 30 ] ||
    fail "expected 30 imgbuild variants: $variants"

# --- 3. the flake and the template through Nix's flake machinery -------------------------
# nixpkgs is overridden by the stub flake nix/tests/flake.nix (no network); sources are copied
# into a scratch chroot store, never the host's /nix/store.
echo "== 3. nix flake show / nix eval with nixpkgs = nix/tests (stub)"
nixf() {
    nix --extra-experimental-features 'nix-command flakes' --store "$work/store" "$@" 2>"$work/nix.err" ||
        { cat "$work/nix.err" >&2; return 1; }
}
# The flake as git would give it (tracked and new unignored files), copied first: Nix reading
# a dirty work tree directly would race with other jobs' scratch directories under target/.
src=$work/src
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$src"
stub=(--no-write-lock-file --override-input nixpkgs "path:$src/nix/tests")
show=$(nixf flake show --json "${stub[@]}" "path:$src") || fail "nix flake show"
want='{"apps":["aarch64-linux","x86_64-linux"],"checks":{"aarch64-linux":["imgbuild","lib"],"x86_64-linux":["imgbuild","lib"]},"modules":{"default":"nixos-module","gitops":"nixos-module","images":"nixos-module","imgbuild":"nixos-module"},"packages":{"aarch64-linux":{"default":"imgbuild-0.1.0","imgbuild":"imgbuild-0.1.0"},"x86_64-linux":{"default":"imgbuild-0.1.0","imgbuild":"imgbuild-0.1.0"}},"templates":["default"]}'
want=${want//0.1.0/$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
# (checks.<system>.lib only evaluates when every eval.nix test passes inside the flake.)
got=$(jq -cS '{apps: (.apps | keys), checks: (.checks | map_values(keys)), modules: (.nixosModules | map_values(.type)), packages: (.packages | map_values(map_values(.name))), templates: (.templates | keys)}' <<<"$show")
[ "$got" = "$(jq -cS . <<<"$want")" ] || fail "nix flake show: got $got"
echo "flake show: $got"
tmpl=(--no-write-lock-file --override-input imgbuild "path:$src" --override-input nixpkgs "path:$src/nix/tests")
matrix=$(nixf eval --json "${tmpl[@]}" "path:$src/templates/default#ciMatrix") || fail "template ciMatrix"
[ "$(jq -cS . <<<"$matrix")" = '{"include":[{"name":"pi4","runner":"ubuntu-24.04-arm","system":"aarch64-linux"},{"name":"x86","runner":"ubuntu-latest","system":"x86_64-linux"}]}' ] ||
    fail "template ciMatrix: $matrix"
echo "template ciMatrix: $matrix"
for node in pi4 x86; do
    cl=$(nixf eval --raw "${tmpl[@]}" "path:$src/templates/default#packages.x86_64-linux.$node.commandLine") ||
        fail "template $node commandLine"
    [[ $cl =~ ^imgbuild\ \'(sd-aarch64|raw-efi)\'\ \'--closure\'\ \'/nix/store/[0-9a-f]{32}-nixos-system-$node-[^\']*\'\ \'--closure-info\'\ \'/nix/store/[0-9a-f]{32}-closure-info\'\ \'-o\'\ \'/[0-9a-z]{52}/$node\.img(\.zst)?\'\ \'--json\'$ ]] ||
        fail "template $node command line: $cl"
    echo "template packages.x86_64-linux.$node: $cl"
done

# --- 4. the mkImage command on the fixture closures --------------------------------------
part() { # IMAGE MANIFEST LABEL OUT: copy one partition out of IMAGE
    local start size
    start=$(jq -r --arg l "$3" '.partitions[] | select(.filesystem.label == $l) | .start' "$2")
    size=$(jq -r --arg l "$3" '.partitions[] | select(.filesystem.label == $l) | .size' "$2")
    [ -n "$start" ] && [ -n "$size" ] || fail "$2: no partition labelled $3"
    dd if="$1" of="$4" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$size" conv=sparse status=none
}

run_fixture() {
    local arch=$1
    local dir=$repo/target/fixtures/$arch
    [ -f "$dir/fixture.json" ] || fail "no fixture in $dir: run cargo xtask fixtures --arch $arch"
    echo "== 4. mkImage's command on the $arch fixture ($dir)"
    local fx toplevel js
    fx=$(nix-instantiate --eval --strict --json -E "import ./nix/tests/fixture.nix { fixtureDir = \"$dir\"; }")
    toplevel=$(jq -r .toplevel "$dir/fixture.json")
    [ "$(jq -r .scriptRunsCommandLine <<<"$fx")" = true ] || fail "the builder script does not run commandLine"
    echo "mkImage command line: $(jq -r .commandLine <<<"$fx")"

    # What Nix does: $out replaces the placeholder; imgbuild is on PATH (here, plus the
    # fixture's store root); NIX_BUILD_CORES and SOURCE_DATE_EPOCH as stdenv sets them.
    local out=$work/$arch/out
    mkdir -p "$work/$arch/bin"
    cat >"$work/$arch/bin/imgbuild" <<EOF
#!/usr/bin/env bash
echo "+ imgbuild \$* --store-root $dir" >&2
exec "$imgbuild" "\$@" --store-root "$dir"
EOF
    chmod +x "$work/$arch/bin/imgbuild"
    local script
    script=$(jq -r .script <<<"$fx")
    script=${script//"$(jq -r .placeholder <<<"$fx")"/"$out"}
    (
        export PATH="$work/$arch/bin:$PATH" out="$out" NIX_BUILD_CORES=2 SOURCE_DATE_EPOCH=315532800
        bash -euo pipefail -c "$script"
    ) >"$work/$arch/stdout" || fail "the mkImage builder script failed on the $arch fixture"

    local file img manifest
    file=$(jq -r .file <<<"$fx")
    img=$out/$file
    manifest=$img.json
    [ -f "$img" ] && [ -f "$manifest" ] || fail "$img or its manifest is missing"
    cmp <(jq -S . "$manifest") <(jq -S . "$work/$arch/stdout") || fail "--json output differs from $manifest"
    # hydra-build-products names files that exist.
    while read -r _ type path; do
        [ -f "$path" ] || fail "hydra-build-products: $type $path does not exist"
    done <"$out/nix-support/hydra-build-products"
    echo "hydra-build-products: $(tr '\n' ';' <"$out/nix-support/hydra-build-products" | sed "s|$out|\$out|g")"

    [ "$(jq -r .toplevel "$manifest")" = "$toplevel" ] || fail "manifest toplevel"
    [ "$(jq -r .closure_source "$manifest")" = closure-info ] || fail "imgbuild did not use --closure-info"
    [ "$(jq -r .store_paths "$manifest")" = "$(wc -l <"$dir/closure-info/store-paths")" ] || fail "store path count"
    [ "$(sha256sum "$img" | cut -d' ' -f1)" = "$(jq -r .sha256 "$manifest")" ] || fail "sha256 of $img"

    local disk=$img
    if [[ $file == *.zst ]]; then
        zstd -q -t "$img" || fail "zstd -t $img"
        disk=$work/$arch/disk.img
        zstd -q -d "$img" -o "$disk"
    fi

    local root=$work/$arch/root.ext4 boot=$work/$arch/boot.fat rootlabel bootlabel
    rootlabel=$(jq -r '.partitions[] | select(.mount_point == "/") | .filesystem.label' "$manifest")
    bootlabel=$(jq -r '.partitions[] | select(.mount_point != "/") | .filesystem.label' "$manifest")
    part "$disk" "$manifest" "$rootlabel" "$root"
    part "$disk" "$manifest" "$bootlabel" "$boot"

    if [ "$(jq -r .table "$manifest")" = gpt ]; then
        sgdisk -v "$disk" | tee "$work/$arch/sgdisk"
        grep -q "No problems found" "$work/$arch/sgdisk" || fail "sgdisk -v"
    else
        sfdisk -V "$disk" || fail "sfdisk -V"
        echo "sfdisk -V: ok"
    fi
    fsck.fat -n "$boot" || fail "fsck.fat -n $bootlabel"
    e2fsck -fn "$root" || fail "e2fsck -fn $rootlabel"

    # The system is in it, and boots the way the module expects.
    local bootjson=$work/$arch/boot.json
    debugfs -R "dump $toplevel/boot.json $bootjson" "$root" 2>/dev/null
    cmp "$bootjson" "$dir$toplevel/boot.json" || fail "boot.json in the root file system"
    if [ "$bootlabel" = ESP ]; then
        mdir -i "$boot" ::/EFI/BOOT | grep -q BOOTX64 || fail "no EFI/BOOT/BOOTX64.EFI"
        mdir -i "$boot" ::/loader/entries | grep -q "nixos-generation-1" || fail "no generation 1 entry"
    else
        for f in config.txt u-boot.bin armstub8-gic.bin; do
            mdir -i "$boot" "::/$f" >/dev/null || fail "no $f on $bootlabel"
        done
        debugfs -R "stat /boot/extlinux/extlinux.conf" "$root" 2>/dev/null | grep -q "Type: regular" ||
            fail "no /boot/extlinux/extlinux.conf"
        debugfs -R "stat /nix-path-registration" "$root" 2>/dev/null | grep -q "Type: regular" ||
            fail "no /nix-path-registration for the first-boot units"
    fi
    echo "$arch: $(jq -r '"\(.format) \(.image | split("/") | last) \(.image_size) bytes, disk \(.disk_size), sha256 \(.sha256)"' "$manifest")"
    echo "$arch: OK"
}

run_fixture x86_64
run_fixture aarch64

# --- 5. the image derivation keeps no references ----------------------------------------
echo "== 5. references of the image output (nix/tests/references.nix)"
# The fixture build's static busybox (a store path of the fixture's chroot store).
bb=$(find "$repo/target/fixtures/x86_64/nix/store" -maxdepth 1 -name '*-busybox-static-*' -type d | head -1)
[ -x "$bb/bin/sh" ] || fail "no busybox-static in the x86_64 fixture store"
export NIX_CONFIG="build-users-group =
sandbox = false
sandbox-paths =
substituters =
builders ="
refcheck() { # BINDIR [NIX_CONFIG LINE]: the nix-build and nix-store of one Nix; a chroot store of its own
    local bin=$1 ver store img ctl top dep refs ctlrefs want
    local NIX_CONFIG="$NIX_CONFIG${2:+
$2}"
    ver=$("$bin/nix-store" --version | awk '{print $NF}')
    store=$work/refstore-$ver
    build_ref() { # DISCARD: prints the image output path
        "$bin/nix-build" --store "$store" nix/tests/references.nix -A image --argstr busybox "$bb" \
            --arg discard "$1" --no-out-link --quiet 2>"$work/ref.err" || { cat "$work/ref.err" >&2; return 1; }
    }
    img=$(build_ref true) || fail "Nix $ver: building the references image"
    ctl=$(build_ref false) || fail "Nix $ver: building the control image"
    top=$("$bin/nix-instantiate" --eval --strict --json nix/tests/references.nix -A toplevel.outPath --argstr busybox "$bb" | jq -r .)
    dep=$("$bin/nix-instantiate" --eval --strict --json nix/tests/references.nix -A dep.outPath --argstr busybox "$bb" | jq -r .)
    # The build read the closure, and the output names it.
    [ "$(cat "$store$img/read-from-closure")" = "$dep" ] || fail "Nix $ver: the image build did not read the closure"
    grep -qx "$top" "$store$img/manifest" || fail "Nix $ver: the image output does not name the toplevel"
    refs=$("$bin/nix-store" --store "$store" -q --references "$img" | sort | tr '\n' ' ')
    ctlrefs=$("$bin/nix-store" --store "$store" -q --references "$ctl" | sort | tr '\n' ' ')
    want=$(printf '%s\n' "$top" "$dep" | sort | tr '\n' ' ')
    echo "Nix $ver: nix-store -q --references <image>: [${refs% }]; the control without the attribute: [${ctlrefs% }]"
    [ "$ctlrefs" = "$want" ] || fail "Nix $ver: the control image should reference the closure: [$ctlrefs]"
    if [ "$(printf '%s\n' 2.18 "$ver" | sort -V | head -1)" = 2.18 ]; then
        [ -z "$refs" ] || fail "Nix $ver: the image output has references: $refs"
        echo "Nix $ver honours unsafeDiscardReferences: the image output has no references"
    else
        [ "$refs" = "$want" ] || fail "Nix $ver: unexpected references [$refs]"
        echo "Nix $ver predates unsafeDiscardReferences (experimental from 2.14, stable from 2.18): it builds the image and keeps the references"
    fi
    # What the derivation asks for, in the .drv (as every Nix version reads it).
    if [ "$bin" = "$(dirname "$(command -v nix-build)")" ]; then
        local drv attrs
        drv=$("$bin/nix-store" --store "$store" -q --deriver "$img")
        attrs=$(nix --store "$store" --extra-experimental-features nix-command show-derivation "$drv" |
            jq -c '.[].env | {structuredAttrs: has("__json"), unsafeDiscardReferences: (.__json // "{}" | fromjson | .unsafeDiscardReferences)}')
        echo "image .drv: $attrs"
        [ "$attrs" = '{"structuredAttrs":true,"unsafeDiscardReferences":{"out":true}}' ] || fail "image .drv: $attrs"
    fi
}
refcheck "$(dirname "$(command -v nix-build)")"
# Debian 13's Nix, unpacked under .cache by newer-nix.sh: the Nix that drops the references.
newer=$(nix/tests/newer-nix.sh) || fail "nix/tests/newer-nix.sh: no newer Nix"
# (No build hook: this nix runs through its loader, and re-executing itself for the hook fails.)
refcheck "$newer" "build-hook ="
# The evaluation tests of step 2 under this Nix as well.
for t in eval real-modules; do
    res=$("$newer/nix-instantiate" --eval --strict --json -E "import ./nix/tests/$t.nix { }") ||
        fail "nix/tests/$t.nix under $("$newer/nix-instantiate" --version)"
    [ "$(jq .failed <<<"$res")" = 0 ] || { jq .failures <<<"$res" >&2; fail "nix/tests/$t.nix under the newer Nix"; }
    echo "nix/tests/$t.nix under $("$newer/nix-instantiate" --version | awk '{print $NF}'): $(jq .passed <<<"$res") passed, 0 failed"
done
echo "== all nix tests passed"
