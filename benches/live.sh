#!/usr/bin/env bash
# The live exporter's cost at saturation: alternates runs without it
# (benches/bench.yaml) and with it and 100 WebSocket subscribers, 10 of them
# never reading (benches/bench-live.yaml), one build, pinned as measure.sh.
#   [BATCH=N] [WATCH_ARGS=--firehose] benches/live.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --bins --locked -q
for i in $(seq "$runs"); do
  for mode in saturation live; do
    echo "== run $i: $mode (BATCH=${BATCH:-100})"
    SPANWIRE_BIN=target/release benches/measure.sh "$mode" \
      | grep -E '^(sent|daemon|sink|watch|spanwire_live)'
    sleep 2
  done
done
