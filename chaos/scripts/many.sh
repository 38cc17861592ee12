#!/usr/bin/env bash
# Run many seeds of a chaos schedule on several lanes side by side.
#   chaos/scripts/many.sh FIRST LAST LANES OUTDIR [extra cairn-chaos run args…]
# e.g. chaos/scripts/many.sh 1 50 4 /tmp/chaos-long --schedule long
# Lane L runs seeds FIRST+L, FIRST+L+LANES, …; each seed's output goes to
# OUTDIR/seed-N.log; OUTDIR/summary.txt gets one line per seed. Uses the
# release binaries (cargo build --release -p cairn-node -p cairn-cli -p cairn-chaos).
set -uo pipefail
first=$1 last=$2 lanes=$3 out=$4
shift 4
root="$(cd "$(dirname "$0")/../.." && pwd)"
chaos="$root/target/release/cairn-chaos"
node="$root/target/release/cairn-node"
cairn="$root/target/release/cairn"
[ -x "$chaos" ] && [ -x "$node" ] && [ -x "$cairn" ] || { echo "build first: cargo build --release -p cairn-node -p cairn-cli -p cairn-chaos" >&2; exit 2; }
mkdir -p "$out"
lane_loop() {
  local lane=$1 seed
  shift
  for ((seed = first + lane; seed <= last; seed += lanes)); do
    "$chaos" run --nodes 3 --seed "$seed" --lane "$lane" --node-bin "$node" "$@" >"$out/seed-$seed.log" 2>&1
    local rc=$?
    local line
    line=$(grep -E "^   ops " "$out/seed-$seed.log" | tail -1)
    local jobs
    jobs=$(grep -E "^   jobs " "$out/seed-$seed.log" | tail -1)
    local cli
    cli=$(grep -E "^   cli commands " "$out/seed-$seed.log" | tail -1)
    echo "seed $seed lane $lane exit $rc |$line |$jobs |$cli" >>"$out/summary.txt"
  done
}
for ((l = 0; l < lanes; l++)); do
  lane_loop "$l" "$@" &
done
wait
echo "done: $(grep -c 'exit 0' "$out/summary.txt") of $((last - first + 1)) passed"
