#!/usr/bin/env bash
# Builds the binaries (cairn, cairn-node, cairn-entrypoint) of an earlier
# release into a cache outside the checkout, once, and prints the folder that
# holds them. The upgrade harness and the cross-release tests run them.
#
#   tests/upgrade/build-release.sh v0.1.0     # -> ~/.cache/cairn/releases/v0.1.0-a87f0c4b…
#
# The release's commit comes from tests/fixtures/RELEASES (so a clone without
# tags works); its source is taken with `git archive` (no work tree is
# touched). CAIRN_RELEASE_CACHE moves the cache. Debug builds: they are what
# the tests run at HEAD too, and they build in about half the time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
release="${1:?usage: build-release.sh RELEASE (see tests/fixtures/RELEASES)}"

short="$(awk -v r="$release" '$1 == r { print $2 }' "$root/tests/fixtures/RELEASES")"
if [ -z "$short" ]; then
  echo "build-release.sh: $release is not in tests/fixtures/RELEASES" >&2
  exit 2
fi
commit="$(git -C "$root" rev-parse --verify --quiet "$short^{commit}" || true)"
if [ -z "$commit" ]; then
  echo "build-release.sh: commit $short of $release is not in this clone's history (clone without --depth)" >&2
  exit 2
fi

cache="${CAIRN_RELEASE_CACHE:-${HOME:-/root}/.cache/cairn/releases}"
out="$cache/$release-$commit"
bins=(cairn cairn-node cairn-entrypoint)
have_all() { for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done; }
if have_all; then
  echo "$out/bin"
  exit 0
fi

mkdir -p "$out"
# One builder at a time per release (tests may ask in parallel).
exec 9>"$out/.lock"
flock 9
if have_all; then
  echo "$out/bin"
  exit 0
fi

echo "building $release ($commit) into $out (once; several minutes)" >&2
rm -rf "$out/src"
mkdir -p "$out/src"
git -C "$root" archive --format=tar "$commit" | tar -x -C "$out/src"
# Cargo variables of a calling test would change fingerprints for nothing.
for var in $(compgen -e); do
  case "$var" in
    CARGO_MANIFEST_*|CARGO_PKG_*|CARGO_CRATE_NAME|CARGO_BIN_NAME|CARGO_BIN_EXE_*|\
    CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|CARGO_RUSTC_CURRENT_DIR|OUT_DIR|NEXTEST_*|RUSTFLAGS)
      unset "$var" ;;
  esac
done
(cd "$out/src" && "${CARGO:-cargo}" build --locked --bins \
  -p cairn-node -p cairn-cli -p cairn-entrypoint --target-dir "$out/target" >&2)
mkdir -p "$out/bin.tmp"
for b in "${bins[@]}"; do cp "$out/target/debug/$b" "$out/bin.tmp/$b"; done
rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
# The sources and intermediate files are not needed any more.
rm -rf "$out/src" "$out/target"
echo "$out/bin"
