#!/usr/bin/env bash
# A Citus worker fails under load (issue 17 item 6; docs/scaling.md, "A worker fails").
#
#   bash bench/citus-worker-failure.sh
#
# Starts a throwaway Citus 13.2.2 cluster (coordinator + 2 workers, bench/citus-cluster.sh),
# migrates and distributes the table (PostgresStore::distribute_on_citus), then runs
# `loadgen worker-failure` through the coordinator: CLIENTS loops of store, get_by_hash and
# two consumes racing for the request, for BEFORE + DOWN + AFTER seconds. BEFORE seconds in,
# worker1 is stopped with `pg_ctl stop -m immediate` (a crash: no shutdown, no checkpoint),
# and DOWN seconds later started again. Afterwards the load generator reads every
# acknowledged store back from the table: lost ones, ones handed out twice, errors by kind
# with when they came. Writes bench/results/<UTC time>-worker-failure/{raw.jsonl,report.md}.
# Needs Citus (.ci/install-citus), psql, python3, cargo. About 1.5 minutes.
# Environment: CLIENTS (8), BEFORE (10), DOWN (10), AFTER (20), PG_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown option $1" >&2; exit 2 ;;
esac
CLIENTS="${CLIENTS:-8}"
BEFORE="${BEFORE:-10}"
DOWN="${DOWN:-10}"
AFTER="${AFTER:-20}"

# shellcheck source=bench/citus-cluster.sh
. bench/citus-cluster.sh
loadgen_pid=""
finish() {
  [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null || true
  nodes_stop
}
trap finish EXIT
trap 'exit 130' INT TERM
if [ -n "$(citus_missing)" ]; then
  echo "bench/citus-worker-failure.sh: $(citus_missing)" >&2
  exit 1
fi
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-worker-failure"
mkdir -p "$out"
echo "==> results go to $PWD/$out (raw.jsonl, report.md; bench/results/ is not committed)" >&2
raw="$out/raw.jsonl"
note() { echo "==> $*" >&2; }
now() { python3 -c 'import time; print(round(time.time(), 3))'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

note "building the load generator (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
loadgen=target/release/examples/loadgen

citus_cluster_start
coordinator=$(node_url coordinator)
$loadgen migrate --citus --url "$coordinator" >/dev/null
python3 -c 'import json, os, sys, datetime
print(json.dumps({"cmd": "env", "kind": "worker-failure", "nproc": os.cpu_count(),
  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  "postgres": sys.argv[1], "citus": sys.argv[2].split(" on ")[0], "load_before": sys.argv[3]}))' \
  "$("$PG_BIN/postgres" --version)" "$(psql -At "$coordinator" -c "SELECT citus_version()")" \
  "$(loadavg)" >"$raw"

seconds=$((BEFORE + DOWN + AFTER))
note "load: $CLIENTS clients for $seconds s; worker1 down from $BEFORE s for $DOWN s"
$loadgen worker-failure --url "$coordinator" --clients "$CLIENTS" --seconds "$seconds" \
  >"$out/loadgen.json" &
loadgen_pid=$!
sleep "$BEFORE"
stopped=$(now)
node_stop worker1 immediate
note "worker1 stopped (immediate)"
sleep "$DOWN"
started=$(now)
node_start worker1
up=$(now)
note "worker1 started again (accepting connections after $(python3 -c "print(round($up - $started, 1))") s)"
wait "$loadgen_pid"
loadgen_pid=""

python3 - "$out/loadgen.json" "$raw" "$stopped" "$started" "$up" <<'EOF'
import json, sys
source, raw, stopped, started, up = sys.argv[1:]
record = json.loads(open(source).read().strip().splitlines()[-1])
record.update(worker="worker1", worker_stopped_unix=float(stopped),
              worker_started_unix=float(started), worker_up_unix=float(up))
with open(raw, "a") as out:
    out.write(json.dumps(record, sort_keys=True) + "\n")
EOF
rm -f "$out/loadgen.json"
python3 bench/citus_report.py "$raw" "$(loadavg)" >"$out/report.md"
cat "$out/report.md"
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
