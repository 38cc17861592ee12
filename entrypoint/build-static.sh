#!/usr/bin/env bash
# Builds the fully static, size-optimised cairn-entrypoint (it must run in an
# image that has nothing but busybox) and prints its path on stdout.
#
#   entrypoint/build-static.sh            # -> target/static/x86_64-unknown-linux-gnu/release/cairn-entrypoint
#
# How:
# - `-C target-feature=+crt-static` on the gnu target links glibc statically
#   into a static-pie binary. glibc >= 2.34 has its DNS and files resolvers
#   inside libc, so name lookups still work without libnss_* at run time.
# - RUSTFLAGS apply to every crate of one cargo invocation, so they cannot be
#   set for this package alone in the workspace build. `--target` keeps them
#   off build scripts and proc-macros (which run on the host), and a separate
#   target dir (target/static) keeps the rest of the workspace's cache valid.
# - Size: cargo allows only opt-level, codegen-units, debug, strip, … per
#   package ([profile.release.package.NAME] rejects lto and panic), and the
#   workspace release profile is shared. The release profile is therefore
#   overridden through CARGO_PROFILE_RELEASE_* variables for this invocation
#   only: it writes only to target/static, so no other build sees it.
#   panic stays "unwind": tokio catches a panicking task instead of
#   aborting the entrypoint (and, as PID 1, the whole container).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
target=x86_64-unknown-linux-gnu
target_dir="${CAIRN_STATIC_TARGET_DIR:-$root/target/static}"

# Run from a test, the environment holds what cargo sets for the test
# (CARGO_MANIFEST_DIR, CARGO_PKG_*…); build scripts that track such variables
# (ring tracks CARGO_MANIFEST_DIR) would rebuild everything every time the
# caller changes. Drop them so every caller gets the same fingerprints.
for var in $(compgen -e); do
  case "$var" in
    CARGO_MANIFEST_*|CARGO_PKG_*|CARGO_CRATE_NAME|CARGO_BIN_NAME|CARGO_BIN_EXE_*|\
    CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|CARGO_RUSTC_CURRENT_DIR|OUT_DIR|NEXTEST_*)
      unset "$var" ;;
  esac
done

export RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_INCREMENTAL=false

cd "$root"
"${CARGO:-cargo}" build --release -p cairn-entrypoint --bin cairn-entrypoint \
  --target "$target" --target-dir "$target_dir" >&2
echo "$target_dir/$target/release/cairn-entrypoint"
