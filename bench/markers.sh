#!/usr/bin/env bash
# The price of consumed markers (issue 18 item 5), with pgbench only (no cargo build):
#
#   bash bench/run.sh --markers       (or bash bench/markers.sh) both parts below
#   PARTS=pairs  bash bench/markers.sh   a. 0.2's delete lifecycle (bench/lifecycle-0.2.sql)
#                against 0.3's marker lifecycle (bench/lifecycle.sql), pgbench -M prepared,
#                interleaved pairs (the order alternates by round), N = 1, 4, 16, 64, the table
#                truncated and checkpointed before every run: ratio markers / delete-0.2 per
#                round and its median. MODES may add `markers-off`: 0.3's lifecycle with
#                consumed_markers(false) (CONSUME deletes), to tell the marker from 0.3's other
#                changes. About 3 min at the defaults (2 modes x 4 N x 3 rounds x 10 s + setup).
#   PARTS=steady bash bench/markers.sh   b. steady state with a 600 s lifetime: pgbench -R RATE
#                lifecycles/s (each request expires LIFETIME s after its insert, ABANDON_PCT %
#                stored and never read) for STEADY_SECONDS, a cleaner running the store's
#                DELETE_EXPIRED_BATCH (read from src/sql.rs) at the CleanupJob's defaults
#                (a pass every 60 s after a random first delay, batches of 1,000 until a short
#                one), a sample every SAMPLE_EVERY s: rows live / consumed markers / expired,
#                pg_total_relation_size, rows cleaned per second, dead tuples, autovacuums;
#                at the end n_tup_hot_upd / n_tup_upd (HOT share) and pgbench's schedule lag
#                (the run is valid while pgbench keeps its rate). 11.5 minutes by default;
#                SHORT=1: 2 minutes with a 60 s lifetime, to try the script.
#                It runs on a private cluster with stock settings (autovacuum on), started
#                and removed by this script (the shared server runs with autovacuum off),
#                unless STEADY_URL names a server to use instead.
#
# Environment: DATABASE_URL (pairs), BENCH_DB (par_store_bench_markers), CLIENTS (1 4 16 64),
# ROUNDS (3), RUN_SECONDS (10), MODES (delete-0.2 markers), RATE (300), LIFETIME (600),
# ABANDON_PCT (5), STEADY_CLIENTS (16), STEADY_SECONDS (690), SAMPLE_EVERY (30),
# LATENCY_LIMIT_MS (1000), STEADY_URL, PG_BINDIR.
# Writes bench/results/<UTC time>-markers/{raw.jsonl,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=markers
# shellcheck source=bench/lib.sh
. bench/lib.sh

BENCH_DB="${BENCH_DB:-par_store_bench_markers}"
PARTS="${PARTS:-pairs steady}"
CLIENTS="${CLIENTS:-1 4 16 64}"
ROUNDS="${ROUNDS:-3}"
RUN_SECONDS="${RUN_SECONDS:-10}"
MODES="${MODES:-delete-0.2 markers}"
RATE="${RATE:-300}"
ABANDON_PCT="${ABANDON_PCT:-5}"
STEADY_CLIENTS="${STEADY_CLIENTS:-16}"
LATENCY_LIMIT_MS="${LATENCY_LIMIT_MS:-1000}"
CLEANUP_INTERVAL=60 # CleanupJob's DEFAULT_INTERVAL (src/cleanup.rs)
CLEANUP_BATCH=1000  # CleanupJob's DEFAULT_BATCH_SIZE
if [ "${SHORT:-0}" = 1 ]; then
  LIFETIME="${LIFETIME:-60}"; STEADY_SECONDS="${STEADY_SECONDS:-120}"; SAMPLE_EVERY="${SAMPLE_EVERY:-10}"
else
  LIFETIME="${LIFETIME:-600}"; STEADY_SECONDS="${STEADY_SECONDS:-690}"; SAMPLE_EVERY="${SAMPLE_EVERY:-30}"
fi

for tool in psql pgbench python3; do
  command -v "$tool" >/dev/null || { echo "bench/markers.sh needs $tool on PATH" >&2; exit 1; }
done

# A fresh database with par-store's schema: migrations/*.up.sql in order (what migrate()
# applies; the bookkeeping table is left out).
fresh_db() { # server-url database
  psql -q -v ON_ERROR_STOP=1 "$1" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $2 WITH (FORCE)" -c "CREATE DATABASE $2" >/dev/null
  for file in migrations/*.up.sql; do
    psql -q -v ON_ERROR_STOP=1 "$(url_for "$1" "$2")" -f "$file" >/dev/null
  done
}

# 0.3's lifecycle with consumed_markers(false): CONSUME's $3 (markers) false.
# (Migration 0007's CONSUME: $3 gates only the marker's INSERT.)
sed -e 's/ WHERE expires_at > decided_at AND true ON CONFLICT / WHERE expires_at > decided_at AND false ON CONFLICT /' \
    bench/lifecycle.sql >"$tmp/lifecycle-off.sql"
grep -q ' WHERE expires_at > decided_at AND false ON CONFLICT ' "$tmp/lifecycle-off.sql" \
  || { echo "bench/lifecycle.sql changed: cannot derive the markers-off lifecycle" >&2; exit 1; }

script_for() {
  case "$1" in
    delete-0.2) echo bench/lifecycle-0.2.sql ;;
    markers) echo bench/lifecycle.sql ;;
    markers-off) echo "$tmp/lifecycle-off.sql" ;;
    *) echo "unknown mode $1 (delete-0.2, markers, markers-off)" >&2; exit 2 ;;
  esac
}

for mode in $MODES; do script_for "$mode" >/dev/null; done
env_record "$DATABASE_URL" parts="$PARTS"

pairs() {
  local url; url=$(url_for "$DATABASE_URL" "$BENCH_DB")
  fresh_db "$DATABASE_URL" "$BENCH_DB"
  for n in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      # shellcheck disable=SC2086 # MODES is a list
      for mode in $(round_order "$round" $MODES); do
        empty_table "$url"
        note "pairs: N=$n round $round/$ROUNDS: $mode (load $(load_average))"
        local expires load
        expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
        load=$(load_average)
        mkdir -p "$tmp/pglog"
        if pgbench -M prepared -n -c "$n" -j "$n" -T "$RUN_SECONDS" -f "$(script_for "$mode")" \
             -D params="$PARAMS" -D expires_at="$expires" "$url" >"$tmp/pgbench.out" 2>&1; then
          python3 bench/report.py pgbench "$tmp/pglog" "$tmp/pgbench.out" "$n"
        else
          cat "$tmp/pgbench.out" >&2
          echo '{"cmd":"lifecycle","errors":-1}'
        fi | append section=pairs mode="$mode" round="$round" clients="$n" \
               run_seconds="$RUN_SECONDS" load="$load"
      done
    done
  done
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null
}


# The store's cleanup statement, from src/sql.rs, with the batch size in place of $1.
delete_expired_sql() {
  python3 - "$CLEANUP_BATCH" <<'EOF'
import re, sys
source = open("src/sql.rs").read()
found = re.search(r'const DELETE_EXPIRED_BATCH: &str = "((?:[^"\\]|\\.)*)";', source, re.S)
if not found:
    sys.exit("src/sql.rs: DELETE_EXPIRED_BATCH not found")
sql = re.sub(r"\\\n\s*", "", found.group(1))
print(sql.replace("$1", sys.argv[1]).replace("$2", "NULL"))
EOF
}

# The CleanupJob at its defaults: the first pass after a random delay within the interval,
# then a pass every interval; a pass deletes batches until one comes back short. Each
# batch is one autocommitted statement, as the store runs it. Writes "<epoch> <rows>".
cleaner() {
  local url="$1" sql="$2" log="$3" rows
  sleep $((RANDOM % CLEANUP_INTERVAL))
  while :; do
    rows=$CLEANUP_BATCH
    while [ "$rows" -ge "$CLEANUP_BATCH" ]; do
      rows=$(psql -At "$url" -c "$sql" 2>>"$log.errors" | awk '/^DELETE/ {print $2}')
      rows=${rows:-0}
      echo "$(date +%s.%N) $rows" >>"$log"
    done
    sleep "$CLEANUP_INTERVAL"
  done
}

sample() { # url t -> one JSON line
  psql -At -F ' ' "$1" -c "SELECT
      count(*) FILTER (WHERE consumed_at IS NULL AND expires_at > now()),
      count(*) FILTER (WHERE consumed_at IS NOT NULL AND expires_at > now()),
      count(*) FILTER (WHERE expires_at <= now()),
      pg_total_relation_size('pushed_authorization_requests'),
      (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'pushed_authorization_requests'),
      (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'pushed_authorization_requests')
    FROM pushed_authorization_requests" | python3 -c '
import json, sys
t, log = float(sys.argv[1]), sys.argv[2]
live, markers, expired, size, dead, autovacuums = (int(v) for v in sys.stdin.read().split())
cleaned = 0
try:
    cleaned = sum(int(line.split()[1]) for line in open(log))
except FileNotFoundError:
    pass
print(json.dumps({"cmd": "sample", "t": round(t), "live": live, "markers": markers,
                  "expired": expired, "table_bytes": size, "dead_tuples": dead,
                  "autovacuums": autovacuums, "cleaned_total": cleaned,
                  "load": " ".join(open("/proc/loadavg").read().split()[:3])}))' "$2" "$tmp/cleaned.log"
}

steady() {
  local server url
  if [ -n "${STEADY_URL:-}" ]; then
    server=$STEADY_URL
  else
    note "steady: starting a private cluster (stock settings)"
    start_cluster
  fi
  fresh_db "$server" par_store_steady
  url=$(url_for "$server" par_store_steady)
  psql -At "$url" -c "SELECT json_build_object('cmd', 'settings', 'settings', json_object_agg(name, current_setting(name))) FROM pg_settings WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_scale_factor', 'shared_buffers', 'server_version', 'synchronous_commit', 'fsync')" | append section=steady
  # 0.3's lifecycle with a per-request expiry: expires_at = now() + LIFETIME, read by the
  # database before the INSERT (\gset: one more statement per lifecycle); ABANDON_PCT % of
  # the requests are stored and never read or consumed.
  {
    grep '^\\set key' bench/lifecycle.sql
    echo '\set stay random(1, 100)'
    echo "SELECT (now() + make_interval(secs => $LIFETIME))::text AS expires_at \\gset"
    grep '^INSERT' bench/lifecycle.sql
    echo "\\if :stay > $ABANDON_PCT"
    grep '^SELECT' bench/lifecycle.sql
    grep '^WITH' bench/lifecycle.sql
    echo '\endif'
  } >"$tmp/steady.sql"
  local sql; sql=$(delete_expired_sql)
  note "steady: $RATE lifecycles/s for $STEADY_SECONDS s, lifetime $LIFETIME s, $ABANDON_PCT % abandoned, cleaner every $CLEANUP_INTERVAL s"
  local started; started=$(date +%s.%N)
  pgbench -M prepared -n -c "$STEADY_CLIENTS" -j "$STEADY_CLIENTS" -R "$RATE" \
    --latency-limit="$LATENCY_LIMIT_MS" -T "$STEADY_SECONDS" -P "$SAMPLE_EVERY" \
    -f "$tmp/steady.sql" -D params="$PARAMS" "$url" >"$tmp/steady.out" 2>&1 &
  local bench_pid=$!
  on_exit+=("kill $bench_pid 2>/dev/null")
  cleaner "$url" "$sql" "$tmp/cleaned.log" &
  on_exit+=("kill $! 2>/dev/null")
  local next=$SAMPLE_EVERY now
  while kill -0 "$bench_pid" 2>/dev/null; do
    now=$(python3 -c "import time; print(time.time() - $started)")
    if python3 -c "import sys; sys.exit(0 if $now >= $next else 1)"; then
      sample "$url" "$now" | append section=steady
      next=$((next + SAMPLE_EVERY))
    fi
    sleep 1
  done
  local rc=0; wait "$bench_pid" || rc=$?
  [ "$rc" = 0 ] || { cat "$tmp/steady.out" >&2; echo "steady: pgbench failed ($rc)" >&2; exit 1; }
  sample "$url" "$(python3 -c "import time; print(time.time() - $started)")" | append section=steady final=true
  psql -At "$url" -c "SELECT json_build_object('cmd', 'hot', 'n_tup_upd', n_tup_upd, 'n_tup_hot_upd', n_tup_hot_upd, 'n_tup_ins', n_tup_ins, 'n_tup_del', n_tup_del) FROM pg_stat_user_tables WHERE relname = 'pushed_authorization_requests'" \
    | append section=steady
  [ -s "$tmp/cleaned.log.errors" ] && { note "cleaner errors:"; cat "$tmp/cleaned.log.errors" >&2; }
  python3 bench/summary.py pgbench-rate "$tmp/steady.out" "$RATE" "$STEADY_SECONDS" \
    | append section=steady lifetime="$LIFETIME" abandon_pct="$ABANDON_PCT" clients="$STEADY_CLIENTS" \
        batches="$(wc -l <"$tmp/cleaned.log" 2>/dev/null || echo 0)"
  cp "$tmp/steady.out" "$out/pgbench-steady.out"
  cp "$tmp/cleaned.log" "$out/cleanup-batches.log" 2>/dev/null || true
}

for part in $PARTS; do
  case "$part" in
    pairs) pairs ;;
    steady) steady ;;
    *) echo "unknown part $part (pairs, steady)" >&2; exit 2 ;;
  esac
done
python3 bench/summary.py markdown "$raw" >"$out/report.md"
cat "$out/report.md"
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
