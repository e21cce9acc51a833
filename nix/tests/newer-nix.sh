#!/usr/bin/env bash
# A Nix newer than Debian 12's (nix-bin 2.8), for the tests that need one (nix/tests/run.sh,
# step 5: unsafeDiscardReferences is honoured from Nix 2.18 on): Debian 13's nix-bin.
#
# Downloads nix-bin and the libraries it links with from the `trixie` suite of the Debian
# archive this machine already uses, with a private apt configuration (nothing is installed,
# the host's apt state is untouched), unpacks them under DIR (default .cache/nix-trixie) and
# writes DIR/bin/{nix,nix-build,nix-instantiate,nix-store}: nix run with trixie's own loader
# and libraries (its glibc is newer than the host's). Prints DIR/bin. A second run reuses it.
#
# Usage: nix/tests/newer-nix.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-$PWD/.cache/nix-trixie}
suite=trixie

if [ -x "$dir/bin/nix" ] && "$dir/bin/nix" --version >/dev/null 2>&1; then
    echo "$dir/bin"
    exit 0
fi

arch=$(dpkg --print-architecture)
# The URI of the Debian archive this machine's own release comes from.
# shellcheck source=/dev/null
. /etc/os-release
uri=$(apt-cache policy | awk -v s="$VERSION_CODENAME/main" -v a="$arch" '$3 == s && $4 == a { print $2; exit }')
[ -n "$uri" ] || { echo "newer-nix: no Debian archive for $VERSION_CODENAME/main in apt's sources" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"/apt/lists/partial "$dir"/apt/cache/archives/partial "$dir"/apt/preferences.d \
    "$dir"/debs "$dir"/root "$dir"/bin
touch "$dir/apt/status"
echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" \
    >"$dir/apt/sources.list"
apt=(
    -o "Dir::Etc::SourceList=$dir/apt/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$dir/apt/preferences.d"
    -o "Dir::State::Lists=$dir/apt/lists"
    -o "Dir::State::Status=$dir/apt/status"
    -o "Dir::Cache=$dir/apt/cache"
    -o "APT::Architectures=$arch"
)
apt-get "${apt[@]}" update -q >"$dir/apt/update.log" 2>&1 ||
    { cat "$dir/apt/update.log" >&2; exit 1; }
# nix-bin and the shared libraries under it (the empty status file makes apt list all of them,
# glibc included); perl and the command-line tools are not needed to run nix.
mapfile -t pkgs < <(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances nix-bin |
    grep -v '^[ <]' | grep -v ':' | grep -E '^(nix-bin|lib)' | grep -v perl | sort -u)
[ "${#pkgs[@]}" -gt 10 ] || { echo "newer-nix: nix-bin's dependencies: ${pkgs[*]}" >&2; exit 1; }
(cd "$dir/debs" && apt-get "${apt[@]}" download -q "${pkgs[@]}" >"$dir/apt/download.log" 2>&1) ||
    { cat "$dir/apt/download.log" >&2; exit 1; }
for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dir/root"
done
loader=$(find "$dir/root" -name 'ld-linux*.so.*' -type f | head -1)
if [ -z "$loader" ] || [ ! -x "$dir/root/usr/bin/nix" ]; then
    echo "newer-nix: no loader or no nix in the packages" >&2
    exit 1
fi
libs=$(dirname "$loader")
for name in nix nix-build nix-instantiate nix-store; do
    # nix is one binary that acts by the name it is called by.
    printf '#!/bin/sh\nexec %q --library-path %q --argv0 %q %q "$@"\n' \
        "$loader" "$libs" "$name" "$dir/root/usr/bin/nix" >"$dir/bin/$name"
    chmod +x "$dir/bin/$name"
done
"$dir/bin/nix" --version >&2
echo "$dir/bin"
