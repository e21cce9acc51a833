# shellcheck shell=bash
# Helpers shared by the baseline image scripts. Source, don't execute.

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]}"
}

# fixture_init FIXTURE: sets FIX (absolute), TL (toplevel store path), TLH (its host path),
# CI (its closureInfo dir). VARIANT=iso|netboot picks the live toplevel (result-VARIANT).
fixture_init() {
  FIX=$(cd "$1" && pwd)
  local suffix=${VARIANT:+-$VARIANT}
  CI=$FIX/closure-info$suffix
  [ -L "$FIX/result$suffix" ] || die "$FIX/result$suffix is not a symlink (run: cargo xtask fixtures)"
  [ -s "$CI/store-paths" ] || die "$CI/store-paths missing"
  TL=$(readlink "$FIX/result$suffix")
  case $TL in /nix/store/*) ;; *) die "result does not point into /nix/store: $TL" ;; esac
  TLH=$FIX$TL
  [ -f "$TLH/boot.json" ] || die "$TL/boot.json missing"
}

# store_link NAME: the /nix/store target of toplevel/NAME (a logical path)
store_link() { readlink "$TLH/$1" || die "toplevel has no $1 link"; }

# clean_name /nix/store/<h>-<name>/<file> -> <h>-<name>-<file> (NixOS' ESP / extlinux names)
clean_name() { local p=${1#/nix/store/}; echo "${p//\//-}"; }

# bootspec_label: "label" of org.nixos.bootspec.v1 (jq-style pretty JSON, one key a line)
bootspec_label() { sed -n 's/^    "label": "\(.*\)",$/\1/p' "$TLH/boot.json"; }

# stage_root DIR: DIR/nix/store with exactly the closure, a Nix database holding it (like
# nixos-install leaves it), profiles/system -> system-1-link -> toplevel, /etc/NIXOS
stage_root() {
  local d=$1
  mkdir -p "$d/nix/store" "$d/nix/var/nix/profiles" "$d/etc" "$d/boot"
  sed "s|^|$FIX|" "$FIX/closure-info/store-paths" | xargs -d '\n' cp -a -t "$d/nix/store"
  NIX_CONFIG=$'build-users-group =\nsandbox = false\nsubstituters =\n' \
    nix-store --store "$d" --load-db <"$FIX/closure-info/registration"
  [ -f "$d/nix/var/nix/db/db.sqlite" ] || die "nix-store --load-db wrote no database"
  grep -qF "$TL" "$d/nix/var/nix/db/db.sqlite" || die "toplevel not in the staged database"
  rm -f "$d/nix/var/nix/db/big-lock" "$d/nix/var/nix/db/reserved"
  ln -s system-1-link "$d/nix/var/nix/profiles/system"
  ln -s "$TL" "$d/nix/var/nix/profiles/system-1-link"
  : >"$d/etc/NIXOS"
  chmod 1775 "$d/nix/store"
  chown -R 0:0 "$d"
}

# store_squashfs OUT: the closure of TL as nixpkgs' make-squashfs.nix lays it out (one
# directory per store path at the top, plus nix-path-registration), zstd, root-owned
store_squashfs() {
  local reg paths
  reg=$(mktemp -d "$1.reg.XXXXXX")
  cp "$CI/registration" "$reg/nix-path-registration"
  # BASELINE_OMIT=TEXT leaves out the store paths whose name contains TEXT (negative controls)
  mapfile -t paths < <(sed "s|^|$FIX|" "$CI/store-paths" | { if [ -n "${BASELINE_OMIT:-}" ]; then grep -vF -- "$BASELINE_OMIT"; else cat; fi; })
  mksquashfs "$reg/nix-path-registration" "${paths[@]}" "$1" \
    -keep-as-directory -all-root -no-hardlinks -b 1048576 -comp zstd -noappend -quiet -no-progress \
    -processors 2 -mkfs-time 0 -all-time 1 >/dev/null
  rm -rf "$reg"
}

now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
