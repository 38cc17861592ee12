#!/usr/bin/env bash
# Writes the golden files of a release (tests/fixtures/<tag>/, see the README
# there) with that release's own binaries: a snapshot file, a whole data dir,
# the user token and the CLI's files. Run it once, when tagging the release.
#
#   tests/upgrade/make-fixtures.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds the release's cairn and cairn-node (for a listed release:
# `tests/upgrade/build-release.sh TAG`; for HEAD: target/debug). OUT_DIR must
# not exist yet. The keys and tokens written belong to a throwaway cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(cd "${1:?usage: make-fixtures.sh BIN_DIR OUT_DIR}" && pwd)"
out="$(realpath -m "${2:?usage: make-fixtures.sh BIN_DIR OUT_DIR}")"
[ -e "$out" ] && { echo "make-fixtures.sh: $out exists" >&2; exit 2; }

work="$(mktemp -d)"
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  if [ -d "$work/app" ]; then
    CAIRN_HOME="$work/home" "$bin/cairn" -C "$work/app" destroy >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export CAIRN_HOME="$work/home"
unset CAIRN_CONTEXT

cd "$work"
"$bin/cairn-node" --data-dir data --listen 127.0.0.1:0 --no-ingress \
  --bootstrap-file boot --ready-file ready.json >node.log 2>&1 &
node_pid=$!
for _ in $(seq 1 300); do [ -s ready.json ] && break; sleep 0.1; done
[ -s ready.json ] || { cat node.log >&2; exit 1; }
addr="$(python3 -c 'import json;print(json.load(open("ready.json"))["addr"])')"
fp="$(python3 -c 'import json;print(json.load(open("ready.json"))["ca_fingerprint"])')"

"$bin/cairn" context create fx --address "$addr" --ca-fingerprint "$fp" \
  --bootstrap-token "$(cat boot)" --use >/dev/null
"$bin/cairn" config set --project fixture A=1 B=two >/dev/null
"$bin/cairn" config set --project fixture --app web --secret TOKEN=s3cret >/dev/null
mkdir app && cp "$root"/examples/hello/* app/
"$bin/cairn" -C app up >/dev/null
"$bin/cairn" -C app destroy >/dev/null || true
"$bin/cairn" server snapshot save state.snap >/dev/null
kill -TERM "$node_pid"; wait "$node_pid" || true; node_pid=""

mkdir -p "$out"
cp state.snap "$out/state.snap"
tar czf "$out/data-dir.tar.gz" data
python3 -c 'import json;print(json.load(open("home/config/contexts/fx.json"))["token"])' >"$out/user.token"
(cd home && tar czf "$out/cli-home.tar.gz" config/contexts/fx.json config/current data/reach/fx.json)
echo "fixtures of $("$bin/cairn" --version 2>/dev/null || echo "$bin") written to $out"
