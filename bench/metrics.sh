#!/usr/bin/env bash
# The cost of par-store's `metrics` feature (issue 19 item 5):
#
#   bash bench/run.sh --metrics      (or bash bench/metrics.sh)
#
# Builds the load generator twice in release: with the demo's default feature `metrics`
# (par-store's `metrics` on, recorded into the metrics-exporter-prometheus recorder that
# loadgen installs, upkeep every second: what a server exporting them pays) and with
# --no-default-features (the feature off: no `metrics` dependency at all). Then
# `loadgen lifecycle --mode store` (PostgresStore with its own pool) with each, N = 1 and 16,
# ROUNDS interleaved rounds of RUN_SECONDS (the order alternates by round), the table
# truncated and checkpointed before every run: lifecycles/s, ratio on / off per round and
# the median. About 4 minutes at the defaults after the builds.
#
# Environment: DATABASE_URL, BENCH_DB (par_store_bench_metrics), CLIENTS (1 16), ROUNDS (5),
# RUN_SECONDS (10), MODE (store). Writes bench/results/<UTC time>-metrics/{raw.jsonl,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=metrics
# shellcheck source=bench/lib.sh
. bench/lib.sh

BENCH_DB="${BENCH_DB:-par_store_bench_metrics}"
CLIENTS="${CLIENTS:-1 16}"
ROUNDS="${ROUNDS:-5}"
RUN_SECONDS="${RUN_SECONDS:-10}"
MODE="${MODE:-store}"

for tool in psql python3 cargo /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench/metrics.sh needs $tool on PATH" >&2; exit 1; }
done

# Both builds write target/release/examples/loadgen: each is copied away before the next.
note "building the load generator with the feature metrics (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
cp target/release/examples/loadgen "$tmp/loadgen-on"
note "building the load generator without it (--no-default-features)"
cargo build --release --quiet -p par-store-demo --example loadgen --no-default-features
cp target/release/examples/loadgen "$tmp/loadgen-off"
# The metric's name is in the binary only when the feature is on.
grep -q 'db.client.operation.duration' "$tmp/loadgen-on" \
  && ! grep -q 'db.client.operation.duration' "$tmp/loadgen-off" \
  || { echo "bench/metrics.sh: the two builds do not differ in the metrics feature" >&2; exit 1; }

url=$(url_for "$DATABASE_URL" "$BENCH_DB")
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB" >/dev/null
on_exit+=("psql -q '$DATABASE_URL' -c 'DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)' >/dev/null 2>&1")
"$tmp/loadgen-off" migrate --url "$url" >/dev/null
env_record "$DATABASE_URL" mode="$MODE"

for n in $CLIENTS; do
  for round in $(seq 1 "$ROUNDS"); do
    for feature in $(round_order "$round" off on); do
      empty_table "$url"
      load=$(load_average)
      note "metrics $feature: N=$n round $round/$ROUNDS (load $load)"
      # The load generator's own CPU time (user + system): what the feature adds per
      # lifecycle, which the noise of a shared machine moves far less than the throughput.
      { /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$tmp/loadgen-$feature" lifecycle --url "$url" \
          --mode "$MODE" --clients "$n" --seconds "$RUN_SECONDS" \
          || echo '{"cmd":"lifecycle","errors":-1}'; } >"$tmp/run.json"
      append section=metrics mode="$feature" round="$round" clients="$n" \
        run_seconds="$RUN_SECONDS" load="$load" \
        client_cpu_s="$(awk '{print $1 + $2}' "$tmp/cpu")" <"$tmp/run.json"
    done
  done
done

python3 bench/summary.py markdown "$raw" >"$out/report.md"
cat "$out/report.md"
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
