#!/usr/bin/env bash
# The live exporter's cost at saturation, one build, pinned as measure.sh,
# runs alternating three ways:
#   without   benches/bench.yaml (no live exporter)
#   store     benches/bench-live.yaml, no subscriber
#   watched   the same, 100 WebSocket subscribers: 10 on every session that
#             never read, 90 readers each on one session sess-0..sess-89
#   [BATCH=N] [SESSIONS=N] [SKIP_BUILD=1] benches/live.sh [RUNS]
# SESSIONS (default 97) spreads the load over that many sessions, so the
# readers watch 90 of them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bins --locked -q
for i in $(seq "$runs"); do
  for how in without store watched; do
    echo "== run $i: $how (BATCH=${BATCH:-100}, SESSIONS=${SESSIONS:-97})"
    case "$how" in
      without) mode=saturation; watch="" ;;
      store) mode=live; watch="--subscribers 0 --stalled 0" ;;
      watched) mode=live; watch="" ;;
    esac
    SPANWIRE_BIN=target/release WATCH_ARGS="$watch" benches/measure.sh "$mode" --sessions "${SESSIONS:-97}" \
      | grep -E '^(sent|daemon|sink|watch|spanwire_live_(subscribers_lagged|sessions_evicted|store_bytes))'
    sleep 2
  done
done
