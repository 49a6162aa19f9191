#!/usr/bin/env bash
# Reproduces the numbers in BENCHMARKS.md.
#   benches/measure.sh saturation   # as fast as possible, OTLP gRPC -> batch -> OTLP gRPC
#   benches/measure.sh fixed        # 10k spans/s at concurrency 1: CPU share, RSS, latency
#   benches/measure.sh http         # saturation over OTLP/HTTP protobuf
#   benches/measure.sh otlphttp     # saturation, exporting with otlphttp (gzip), unsigned
#   benches/measure.sh sigv4        # the same, every request signed by sigv4auth
#   benches/measure.sh attributes   # saturation with an `attributes` processor (decoded path)
#   benches/measure.sh durable      # wait_for_delivery: durable, 5k spans/s from 2 senders:
#                                   # sender latency with an fsync per group (BENCH_WAIT=true:
#                                   # answer after delivery instead; RATE=0: as fast as possible)
#   benches/measure.sh tail         # saturation through tail_sampling (fresh trace ids,
#                                   # 10 spans per trace, >100k traces held; TRACE_SPANS=N)
#   benches/measure.sh direct       # the same load without it (OTLP in -> OTLP out)
#   benches/measure.sh kinesis      # saturation exporting with awskinesis (session keys, KPL)
#                                   # to the load generator's Kinesis stand-in
#   benches/measure.sh agentmetrics # saturation with the `agentmetrics` connector beside
#                                   # the otlp exporter (the agent-trace model), metrics
#                                   # served by a prometheus exporter
#   benches/measure.sh live         # saturation with the `live` exporter beside the
#                                   # otlp one, 100 WebSocket subscribers (10 never
#                                   # reading; WATCH_ARGS adds to `spanwire-loadgen watch`)
# The daemon is pinned to CPU 0 and the load generator and sink to CPU 1, so the
# daemon's numbers are not disturbed by its load (the machine has 2 cores).
# Extra arguments go to `spanwire-loadgen send`.
# BATCH=N sends N spans per request (default 100); SENDERS=N sets the load
# generator's concurrent senders at saturation (default 8).
# SPANWIRE_BIN=DIR runs the binaries in DIR instead of building this tree
# (benches/ab.sh uses it to alternate two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-saturation}
shift || true
if [ -n "${SPANWIRE_BIN:-}" ]; then
  bin=$SPANWIRE_BIN
else
  cargo build --release --bins --locked -q
  bin=target/release
fi
for port in 4317 4321 14317 14318 14319 13133; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is busy" >&2; exit 1; fi
done
config=benches/bench.yaml
case "$mode" in
  otlphttp) config=benches/bench-otlphttp.yaml ;;
  sigv4) config=benches/bench-sigv4.yaml ;;
  live) config=benches/bench-live.yaml ;;
  agentmetrics) config=benches/bench-agentmetrics.yaml ;;
  attributes) config=benches/bench-attributes.yaml ;;
  durable) config=benches/bench-durable.yaml; rm -rf /tmp/spanwire-bench-wal ;;
  tail) config=benches/bench-tail.yaml ;;
  direct) config=benches/bench-direct.yaml ;;
  kinesis) config=benches/bench-kinesis.yaml ;;
esac
taskset -c 1 $bin/spanwire-loadgen sink --listen 127.0.0.1:14317 --http-listen 127.0.0.1:14318 --kinesis-listen 127.0.0.1:14319 2>/tmp/spanwire-bench-sink.log &
sink=$!
# Static credentials for sigv4auth; nothing is sent to AWS.
AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true \
  taskset -c 0 $bin/spanwire run --config $config 2>/tmp/spanwire-bench-daemon.log &
daemon=$!
watcher=""
trap 'kill $daemon $sink $watcher 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:13133/ >/dev/null && break
  sleep 0.1
done
if [ "$mode" = live ]; then
  taskset -c 1 $bin/spanwire-loadgen watch --live 127.0.0.1:4321 --duration 23 ${WATCH_ARGS:-} &
  watcher=$!
  sleep 1
fi
case "$mode" in
  tail|direct) taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency ${SENDERS:-8} --batch ${BATCH:-100} --duration 20 --trace-spans ${TRACE_SPANS:-10} --pid $daemon "$@"
              curl -s http://127.0.0.1:8888/metrics | grep -E '^spanwire_processor_tail_sampling_(held|held_bytes|decisions_total|early_decisions_total)' || true ;;
  kinesis) taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency ${SENDERS:-8} --batch ${BATCH:-100} --duration 20 --pid $daemon "$@"
              curl -s http://127.0.0.1:8888/metrics | grep -E '^spanwire_kinesis_(records|user_records|bytes)_put_total|^spanwire_kinesis_records_retried_total' || true ;;
  saturation|otlphttp|sigv4|live|attributes|agentmetrics) taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency ${SENDERS:-8} --batch ${BATCH:-100} --duration 20 --pid $daemon "$@" ;;
  fixed)      taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency 1 --batch ${BATCH:-100} --rate 10000 --duration 30 --pid $daemon "$@" ;;
  durable)    taskset -c 1 $bin/spanwire-loadgen send --grpc 127.0.0.1:4317 --concurrency ${SENDERS:-2} --batch ${BATCH:-100} --rate ${RATE:-5000} --duration 30 --pid $daemon "$@"
              curl -s http://127.0.0.1:8888/metrics | grep -E '^spanwire_receiver_wal_(appends|fsyncs)_total' || true ;;
  http)       taskset -c 1 $bin/spanwire-loadgen send --http http://127.0.0.1:4318 --concurrency ${SENDERS:-8} --batch ${BATCH:-100} --duration 20 --pid $daemon "$@" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
sleep 1
echo "sink: $(tail -n 1 /tmp/spanwire-bench-sink.log)"
if [ "$mode" = agentmetrics ]; then
  curl -s http://127.0.0.1:9464/metrics | grep -E '^agent_(tokens|invocations)_total' | head -n 4 || true
fi
if [ -n "$watcher" ]; then
  wait $watcher || true
  curl -s http://127.0.0.1:8888/metrics | grep -E '^spanwire_live_(subscribers|sessions|store_bytes|subscribers_lagged_total|sessions_evicted_total)' || true
fi
