#!/usr/bin/env bash
# Side by side with rotel (a Rust OpenTelemetry collector, `pip install rotel`):
# the same load generator, the same counting OTLP sink, the same pipeline
# (OTLP/gRPC in -> batch 8192 / 200 ms -> OTLP/gRPC out, no compression),
# one collector after the other. The collector is pinned to CPU 0, the load
# generator and the sink to CPU 1.
#
#   benches/vs-rotel.sh            # saturation at 4 senders x 100 spans, 1 x 1000 and
#                                  # 64 x 100, and a fixed 10k spans/s (1 sender), each
#                                  # for spanwire, rotel and the decode-only ceiling
#   MODES="saturation fixed" benches/vs-rotel.sh   # a subset (saturation = 8 x 100)
#   ROTEL_AGENT=/path/to/rotel-agent benches/vs-rotel.sh
#
# Prints one line per run and a summary table (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-20}
cargo build --release --bins --locked -q
bin=target/release
if [ -z "${ROTEL_AGENT:-}" ]; then
  if [ ! -x target/rotel-venv/bin/python ]; then
    python3 -m venv target/rotel-venv
    target/rotel-venv/bin/pip install -q rotel
  fi
  ROTEL_AGENT=$(target/rotel-venv/bin/python -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
fi
echo "rotel: $($ROTEL_AGENT --version)"
echo "spanwire: $($bin/spanwire --version)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  return 1
}

free_ports() {
  for port in 4317 14317 13133; do
    for _ in $(seq 100); do
      (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || break
      sleep 0.1
    done
  done
}

# start_collector NAME -> sets $cpid
start_collector() {
  case "$1" in
    spanwire)
      taskset -c 0 $bin/spanwire run --config benches/bench.yaml 2>/tmp/vs-spanwire.log &
      cpid=$! ;;
    rotel)
      taskset -c 0 "$ROTEL_AGENT" start --otlp-grpc-endpoint 127.0.0.1:4317 \
        --otlp-http-endpoint 127.0.0.1:4318 \
        --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:14317 \
        --otlp-exporter-compression none \
        --traces-batch-max-size 8192 --batch-timeout 200ms \
        --pid-file /tmp/vs-rotel.pid >/tmp/vs-rotel.log 2>&1 &
      cpid=$! ;;
    ceiling)
      taskset -c 0 $bin/spanwire-loadgen sink --listen 127.0.0.1:4317 --decode 2>/tmp/vs-ceiling.log &
      cpid=$! ;;
  esac
  pids+=("$cpid")
  wait_port 4317
}

# run NAME MODE -> prints the load generator's output and the sink's total
run() {
  local name=$1 mode=$2 out
  free_ports
  taskset -c 1 $bin/spanwire-loadgen sink --listen 127.0.0.1:14317 2>/tmp/vs-sink.log &
  local spid=$!
  pids+=("$spid")
  wait_port 14317
  start_collector "$name"
  sleep 1
  case "$mode" in
    saturation) out=$(taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 8 --batch 100 --duration "$secs" --pid "$cpid") ;;
    4x100) out=$(taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 4 --batch 100 --duration "$secs" --pid "$cpid") ;;
    1x1000) out=$(taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 1 --batch 1000 --duration "$secs" --pid "$cpid") ;;
    saturation64) out=$(taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 64 --batch 100 --duration "$secs" --pid "$cpid") ;;
    fixed)      out=$(taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 1 --batch 100 --rate 10000 --duration "$secs" --pid "$cpid") ;;
  esac
  sleep 1.5
  local sunk
  sunk=$(grep -o 'sink: [0-9]* spans total' /tmp/vs-sink.log | tail -n 1 | grep -o '[0-9]*' || echo 0)
  [ "$name" = ceiling ] && sunk=$(grep -o 'sink: [0-9]* spans total' /tmp/vs-ceiling.log | tail -n 1 | grep -o '[0-9]*' || echo 0)
  kill "$cpid" "$spid" 2>/dev/null || true
  wait "$cpid" "$spid" 2>/dev/null || true
  local rate cpu rss p50 p99
  rate=$(echo "$out" | grep -o '= [0-9]* spans/s' | grep -o '[0-9]*')
  p50=$(echo "$out" | grep -o 'p50 [0-9.]*' | grep -o '[0-9.]*$')
  p99=$(echo "$out" | grep -o 'p99 [0-9.]*' | grep -o '[0-9.]*$')
  cpu=$(echo "$out" | grep -o 'cpu [0-9.]*%' | grep -o '[0-9.]*')
  rss=$(echo "$out" | grep -o 'peak RSS [0-9.]* MiB' | grep -o '[0-9.]*')
  echo "$name $mode: sent $rate spans/s, p50 $p50 ms, p99 $p99 ms, cpu $cpu%, peak RSS $rss MiB, received by the sink $sunk" >&2
  echo "$name $mode $rate $p50 $p99 $cpu $rss $sunk"
}

results=()
for mode in ${MODES:-4x100 1x1000 saturation64 fixed}; do
  for name in spanwire rotel ceiling; do
    results+=("$(run "$name" "$mode")")
  done
done

echo
echo "| run | spans/s sent | p50 / p99 ms | CPU (one core) | peak RSS MiB | spans at the sink |"
echo "|---|---|---|---|---|---|"
for r in "${results[@]}"; do
  set -- $r
  echo "| $1 $2 | $3 | $4 / $5 | $6% | $7 | $8 |"
done
