#!/usr/bin/env bash
# par-store on Citus (issue 17), and the INSERT forms behind it, against pgbench running the
# same statements at the same moment (see BENCHMARKS.md, "Citus (issue 17)").
#
#   bash bench/run.sh --citus      (or bash bench/citus.sh --citus)
#       a throwaway Citus 13.2.2 cluster (coordinator + 2 workers) and a plain PostgreSQL
#       node with the same settings, all in a temporary directory on free ports; the table
#       migrated and distributed (PostgresStore::distribute_on_citus) on the coordinator.
#       Lifecycles (store, get_by_hash, consume_by_hash) through the store (loadgen --mode
#       store) vs pgbench -M prepared running the store's statements (on the coordinator
#       bench/lifecycle-citus.sql, with the consume delegated as the store sends it; on the
#       plain node bench/lifecycle.sql), on the coordinator and on the plain node, N = 1, 4, 16, in ROUNDS interleaved rounds of RUN_SECONDS: the ratio
#       store/pgbench on Citus, and Citus/plain. All nodes share this machine: that measures
#       Citus's overhead, not scale-out. About 9 minutes.
#   bash bench/run.sh --sql-forms  (or bash bench/citus.sh --sql-forms)
#       on a throwaway plain PostgreSQL node: 0.2's INSERT (INSERT ... SELECT ... WHERE
#       $2 > now() in a CTE) vs today's (INSERT ... VALUES ... ON CONFLICT DO NOTHING
#       RETURNING 1), pgbench -M prepared, interleaved pairs (the order alternates by round),
#       N = 1, 4, 16; the insert alone and in the whole lifecycle: the ratio new/old.
#       About 6 minutes. Needs no Citus.
#
# Needs the PostgreSQL 15 server binaries (PG_BIN), Citus from .ci/install-citus for
# --citus, psql, pgbench, python3 and cargo. Run as root, the servers run as user postgres.
# Writes bench/results/<UTC time>-<kind>/{raw.jsonl,report.md}.
# Environment: ROUNDS (3), RUN_SECONDS (10), CLIENTS ("1 4 16"), PG_BIN; for --citus, MODES
# ("store pgbench"; add conn for one sqlx connection per client running the store's SQL,
# pgbench-least for pgbench running bench/lifecycle-least.sql).
set -euo pipefail
cd "$(dirname "$0")/.."

kind=citus
for arg in "$@"; do
  case "$arg" in
    --citus) kind=citus ;;
    --sql-forms) kind=sql-forms ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
ROUNDS="${ROUNDS:-3}"
RUN_SECONDS="${RUN_SECONDS:-10}"
CLIENTS="${CLIENTS:-1 4 16}"
for tool in psql pgbench python3 cargo; do
  command -v "$tool" >/dev/null || { echo "bench/citus.sh needs $tool on PATH" >&2; exit 1; }
done

# shellcheck source=bench/citus-cluster.sh
. bench/citus-cluster.sh
if [ "$kind" = citus ] && [ -n "$(citus_missing)" ]; then
  echo "bench/citus.sh --citus: $(citus_missing)" >&2
  exit 1
fi
# The results directory, $tmp, append, note, load_average and PARAMS.
# shellcheck source=bench/lib.sh
. bench/lib.sh
on_exit+=(nodes_stop)
loadavg() { load_average; }

note "building the load generator (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
loadgen=target/release/examples/loadgen

# pgbench_json URL CLIENTS SCRIPT: one JSON line (report.py pgbench), -M prepared, RUN_SECONDS.
pgbench_json() {
  local url="$1" n="$2" script expires
  script=$(realpath "$3") # pgbench runs in the log directory
  rm -rf "$tmp/pglog"; mkdir -p "$tmp/pglog"
  expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
  if (cd "$tmp/pglog" && pgbench -M prepared -n -c "$n" -j "$n" -T "$RUN_SECONDS" -r --log \
       -f "$script" -D params="$PARAMS" -D expires_at="$expires" "$url") >"$tmp/pgbench.out" 2>&1; then
    python3 bench/report.py pgbench "$tmp/pglog" "$tmp/pgbench.out" "$n"
  else
    cat "$tmp/pgbench.out" >&2
    echo '{"cmd":"lifecycle","mode":"pgbench","errors":-1}'
  fi
}

# The store's statements as pgbench runs them on a target: on the coordinator the consume is
# the delegated call (migration 0008, distributed by distribute_on_citus), on the plain node
# CONSUME.
store_script() {
  if [ "$1" = coordinator ]; then echo bench/lifecycle-citus.sql; else echo bench/lifecycle.sql; fi
}

# Before every measured run: no dead rows left by the previous run, no checkpoint due.
settle() {
  local node
  for node in "$@"; do
    psql -q "$(node_url "$node")" -c "VACUUM pushed_authorization_requests" -c "CHECKPOINT" \
      >/dev/null 2>&1 || true
  done
}

env_line() {
  python3 -c 'import json, os, sys, datetime
print(json.dumps({"cmd": "env", "kind": sys.argv[1], "nproc": os.cpu_count(),
  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  "postgres": sys.argv[2], "citus": sys.argv[3].split(" on ")[0], "rounds": int(sys.argv[4]),
  "run_seconds": float(sys.argv[5]), "load_before": sys.argv[6]}))' \
    "$kind" "$("$PG_BIN/postgres" --version)" "$1" "$ROUNDS" "$RUN_SECONDS" "$(loadavg)"
}

citus_bench() {
  citus_cluster_start
  node_init plain plain
  $loadgen migrate --citus --url "$(node_url coordinator)" >/dev/null
  $loadgen migrate --url "$(node_url plain)" >/dev/null
  env_line "$(psql -At "$(node_url coordinator)" -c "SELECT citus_version()")" | append
  # Not measured: a few seconds of each client on each node, so that the first measured run
  # does not pay alone for extending the new tables (round 1 of the store on the plain node
  # measured 0.23 of pgbench at N = 1 without it, the other rounds 0.88).
  local target
  for target in coordinator plain; do
    $loadgen lifecycle --url "$(node_url "$target")" --mode store --clients 4 --seconds 3 >/dev/null 2>&1 || true
    RUN_SECONDS=3 pgbench_json "$(node_url "$target")" 4 "$(store_script "$target")" >/dev/null
  done
  for n in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      for target in coordinator plain; do
        for mode in ${MODES:-store pgbench}; do
          if [ "$target" = coordinator ]; then
            settle coordinator worker1 worker2
          else
            settle plain
          fi
          note "N=$n round $round/$ROUNDS: $mode on $target (load $(loadavg))"
          if [ "$mode" = pgbench ]; then
            pgbench_json "$(node_url "$target")" "$n" "$(store_script "$target")"
          elif [ "$mode" = pgbench-least ]; then
            pgbench_json "$(node_url "$target")" "$n" bench/lifecycle-least.sql \
              | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["mode"] = "pgbench-least"; print(json.dumps(r))'
          else
            $loadgen lifecycle --url "$(node_url "$target")" --mode "$mode" --clients "$n" \
              --seconds "$RUN_SECONDS" || echo "{\"cmd\":\"lifecycle\",\"mode\":\"$mode\",\"errors\":-1}"
          fi | append section=citus target="$target" round="$round" clients="$n" \
                 load="\"$(loadavg)\""
        done
      done
    done
  done
}

# 0.2's INSERT (src/sql.rs before f6f1063), with pgbench's variables for its binds; today's
# is bench/lifecycle.sql's INSERT line.
OLD_INSERT="WITH inserted AS (INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) SELECT :key, :expires_at::timestamptz, :params, NULL::text WHERE :expires_at::timestamptz > now() ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1) SELECT EXISTS (SELECT FROM inserted) AS inserted, :expires_at::timestamptz > now() AS live;"

sql_forms_bench() {
  local new_insert key_line
  new_insert=$(grep '^INSERT INTO pushed_authorization_requests' bench/lifecycle.sql)
  key_line=$(grep '^\\set key' bench/lifecycle.sql)
  [ -n "$new_insert" ] && [ -n "$key_line" ] || { echo "bench/lifecycle.sql has no INSERT line" >&2; exit 1; }
  printf '%s\n%s\n' "$key_line" "$OLD_INSERT" >"$tmp/insert-old.sql"
  printf '%s\n%s\n' "$key_line" "$new_insert" >"$tmp/insert-new.sql"
  # The lifecycle with 0.2's INSERT in place of today's.
  python3 -c 'import sys
old = sys.argv[1]
for line in open("bench/lifecycle.sql").read().splitlines():
    print(old if line.startswith("INSERT INTO pushed_authorization_requests") else line)' \
    "$OLD_INSERT" >"$tmp/lifecycle-old.sql"
  cp bench/lifecycle.sql "$tmp/lifecycle-new.sql"
  node_init plain plain
  $loadgen migrate --url "$(node_url plain)" >/dev/null
  env_line "" | append
  for n in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      for workload in insert lifecycle; do
        local order="old new"
        [ $((round % 2)) = 0 ] && order="new old"
        for form in $order; do
          settle plain
          note "N=$n round $round/$ROUNDS: $workload, $form INSERT (load $(loadavg))"
          pgbench_json "$(node_url plain)" "$n" "$tmp/$workload-$form.sql" \
            | append section=sql-forms workload="$workload" form="$form" round="$round" \
                clients="$n" load="\"$(loadavg)\""
        done
      done
    done
  done
}

case "$kind" in
  citus) citus_bench ;;
  sql-forms) sql_forms_bench ;;
esac
python3 bench/citus_report.py "$raw" "$(loadavg)" >"$out/report.md"
cat "$out/report.md"
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
