#!/usr/bin/env bash
# Compares two builds by alternating them, run for run, with benches/measure.sh:
#   [BATCH=N] benches/ab.sh OLD_BIN_DIR NEW_BIN_DIR [MODE] [RUNS]
# e.g. after `git worktree add /tmp/old REV && (cd /tmp/old && cargo build --release --bins)`:
#   benches/ab.sh /tmp/old/target/release target/release saturation 4
# Each run prints the load generator's summary and the daemon's CPU and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old binary dir}
new=${2:?new binary dir}
mode=${3:-saturation}
runs=${4:-3}
for i in $(seq "$runs"); do
  for which in old new; do
    dir=$old
    [ "$which" = new ] && dir=$new
    echo "== $mode run $i: $which ($dir)"
    SPANWIRE_BIN=$dir benches/measure.sh "$mode" | grep -E '^(sent|daemon|sink)'
    sleep 2
  done
done
