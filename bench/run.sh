#!/usr/bin/env bash
# par-store benchmark: the store against pgbench running the same statements, on the same
# database at the same moment (see BENCHMARKS.md).
#
#   bash bench/run.sh            lifecycles (N = 1, 4, 16, 64; store, pgbench, pgbench-least,
#                                shared, and conn, pool, protected at N = 1 and 16; 3
#                                interleaved rounds of 10 s; pgbench runs the store's SQL,
#                                bench/lifecycle.sql, pgbench-least the least SQL,
#                                bench/lifecycle-least.sql; other modes: see
#                                demo/examples/loadgen.rs),
#                                system calls per lifecycle, cleanup (1,000,000 expired rows
#                                at batch sizes 100, 1000, 10000): about 13 minutes
#   bash bench/run.sh --quick    the same, 1 round of 3 s, 100,000 rows: about 3 minutes
#   bash bench/run.sh --soak     10 minutes of lifecycles with the CleanupJob, a report a minute
#   bash bench/run.sh --plain    BENCHMARKS.md's plain rows: the store, pgbench (store's SQL)
#                                and pgbench-least in interleaved rounds at N = 1, 4, 16 and
#                                16 callers on 4 connections (CLIENTS="1 4 16",
#                                OVERLOAD="4:16"), both ratios per round
#   bash bench/run.sh --lifecycles-only   only the lifecycle comparison and the overload
#                                case (e.g. with CLIENTS="1 4" ROUNDS=5 RUN_SECONDS=5
#                                MODES="store pgbench protected"; markers off:
#                                MODES="markers-off pgbench-markers-off", the store with
#                                consumed_markers(false) and bench/lifecycle-markers-off.sql;
#                                what the marker costs: MODES="store pgbench-least
#                                pgbench-least-marker", bench/lifecycle-least-marker.sql)
#   bash bench/run.sh --overload-only   only the overload case: 4x more callers than
#                                connections (OVERLOAD="4:16 16:64", connections:callers),
#                                store, shared and lite against pgbench and pgbench-least
#                                with as many clients as connections (OVERLOAD_MODES)
#   bash bench/run.sh --pooler   only the lifecycle through PgBouncer in transaction mode
#                                (POOLER_CLIENTS="4 16"): the store's default mode vs
#                                pgbench -M prepared through PgBouncer 1.25.2
#                                (max_prepared_statements = 100), and pooler mode
#                                (pooler_mode(true)) vs pgbench -M extended through
#                                PgBouncer 1.18; part of the full run when they are found
#                                (POOLER_PAIRS="1.25:store 1.25:conn 1.25:pgbench" picks
#                                PgBouncer:client pairs, a client being a loadgen mode or
#                                pgbench, pgbench-least, pgbench-markers-off; default: all
#                                four above)
#   bash bench/run.sh --per-core lifecycles per core (client and server CPU, WAL) on a private
#                                cluster with stock settings: docs/scaling.md's single node
#   bash bench/run.sh --scale    get_by_hash with 1,000 vs 10,000,000 live rows (loads ~9 GB
#                                once into database par_store_bench_scale, kept for reruns)
#
# Needs PostgreSQL at DATABASE_URL (default: the docker-compose server), whose role may
# create databases; psql, pgbench, python3 and cargo on PATH; strace for the syscall counts
# (skipped without it). Writes bench/results/<UTC time>-<kind>/{raw.jsonl,report.md}.
# PgBouncers: PGBOUNCER_1_25 (else .ci/build-pgbouncer's binary), PGBOUNCER_1_18 (else
# /usr/sbin/pgbouncer); the script starts them on free ports (as user postgres when run as
# root: PgBouncer refuses root) and stops them on exit.
# Environment: DATABASE_URL, BENCH_DB (par_store_bench), ROUNDS, RUN_SECONDS, CLIENTS,
# MODES, OVERLOAD, OVERLOAD_MODES, CLEANUP_ROWS, SOAK_SECONDS, SOAK_CLIENTS, SCALE_ROWS,
# POOLER_CLIENTS, POOLER_PAIRS.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=full
for arg in "$@"; do
  case "$arg" in
    --quick) kind=quick ;;
    --soak) kind=soak ;;
    --scale) kind=scale ;;
    --pooler) kind=pooler ;;
    --plain) kind=plain ;;
    --lifecycles-only) kind=lifecycles ;;
    --overload-only) kind=overload ;;
    --citus|--sql-forms) exec bash bench/citus.sh "$arg" ;; # Citus, INSERT forms: bench/citus.sh
    --markers) exec bash bench/markers.sh ;;
    --metrics) exec bash bench/metrics.sh ;;
    --per-core) exec bash bench/per-core.sh ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
BENCH_DB="${BENCH_DB:-par_store_bench}"
if [ "$kind" = quick ]; then
  ROUNDS="${ROUNDS:-1}"; RUN_SECONDS="${RUN_SECONDS:-3}"; CLEANUP_ROWS="${CLEANUP_ROWS:-100000}"
else
  ROUNDS="${ROUNDS:-3}"; RUN_SECONDS="${RUN_SECONDS:-10}"; CLEANUP_ROWS="${CLEANUP_ROWS:-1000000}"
fi
if [ "$kind" = plain ]; then
  CLIENTS="${CLIENTS:-1 4 16}"; OVERLOAD="${OVERLOAD:-4:16}"
  MODES="${MODES:-store pgbench pgbench-least}"
  OVERLOAD_MODES="${OVERLOAD_MODES:-store pgbench pgbench-least}"
fi
CLIENTS="${CLIENTS:-1 4 16 64}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_CLIENTS="${SOAK_CLIENTS:-16}"
SCALE_ROWS="${SCALE_ROWS:-10000000}"
POOLER_CLIENTS="${POOLER_CLIENTS:-4 16}"

for tool in psql pgbench python3 cargo; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool on PATH" >&2; exit 1; }
done

# DATABASE_URL with another database name (query string kept).
url_for() {
  python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$1"
}

out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$kind"
mkdir -p "$out"
echo "==> results go to $PWD/$out (raw.jsonl, report.md; bench/results/ is not committed)" >&2
raw="$out/raw.jsonl"
tmp=$(mktemp -d)
# Stops the PgBouncers this script started (by the pids they wrote), then removes $tmp.
finish() {
  if [ -f "$tmp/bouncer.pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$tmp/bouncer.pids"
    sleep 0.2
  fi
  rm -rf "$tmp"
}
trap finish EXIT
append() { python3 bench/report.py append "$raw" "$@"; }
note() { echo "==> $*" >&2; }

note "building the load generator (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
loadgen=target/release/examples/loadgen

fresh_db() {
  psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  $loadgen migrate --url "$(url_for "$1")" >/dev/null
  # Not measured: a few seconds of each client, so that the first measured run does not
  # pay alone for extending a new table and index, and for cold caches (it was the store,
  # first in every round: its first round measured 0.58-0.63 of pgbench at N = 1, the next
  # ones 0.89-1.04).
  $loadgen lifecycle --url "$(url_for "$1")" --mode store --clients 4 --seconds 3 >/dev/null 2>&1 || true
  run_pgbench "$(url_for "$1")" 4 -T 3 >/dev/null
}

# Machine and server, for the report.
env_record() {
  local url="$1"
  python3 - "$url" "$kind" <<'EOF'
import json, os, subprocess, sys, datetime
url, kind = sys.argv[1], sys.argv[2]
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
settings = sh(f"psql -At '{url}' -c \"SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','synchronous_commit','fsync','wal_level','max_wal_size','checkpoint_timeout','autovacuum','autovacuum_naptime','autovacuum_vacuum_scale_factor','autovacuum_vacuum_insert_scale_factor','autovacuum_vacuum_cost_delay','autovacuum_vacuum_cost_limit','max_connections','work_mem','effective_cache_size','full_page_writes','wal_compression','huge_pages','jit')\"")
model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or sh("lscpu | grep 'Model name' | cut -d: -f2").strip()
print(json.dumps({
    "cmd": "env", "kind": kind,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "nproc": os.cpu_count(), "cpu": model,
    "mem": sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
    "kernel": sh("uname -r"),
    "postgres": sh(f"psql -At '{url}' -c 'SHOW server_version'"),
    "settings": settings,
    "rustc": sh("rustc --version"),
    "load_before": sh("cut -d' ' -f1-3 /proc/loadavg"),
}))
EOF
}

# Before every measured run: the same starting point for store and pgbench alike (both
# tables empty, no checkpoint due in the middle of the run). The markers table is emptied
# too: the consumed markers of every earlier run (none expires within a benchmark) made each
# later marker-writing run insert into a larger primary key, whose pages each cost a full
# page image in the WAL at their first change after the CHECKPOINT (measured: 9,570 full
# page images in an 8 s run of bench/lifecycle-least-marker.sql after 1.47 million markers,
# 15 with the table emptied), so a mode paid for where it came in the order.
settle() {
  psql -q "$1" -c "TRUNCATE pushed_authorization_requests, pushed_authorization_request_markers" \
    -c "CHECKPOINT" >/dev/null 2>&1 || true
}

PARAMS=$(python3 -c '
b = ("client_id=s6BhdRkqt3&response_type=code&scope=openid%20profile%20email"
     "&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&state=af0ifjsldkj"
     "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
     "&code_challenge_method=S256&nonce=n-0S6_WzA2Mj&")
print((b * 10)[:600])')

# The pgbench modes and their scripts: the store's SQL, the least SQL that does the job, the
# least SQL with the consumed marker (what the marker alone costs), and the store's SQL with
# consumed markers off (against loadgen --mode markers-off).
pgbench_script() {
  case "$1" in
    pgbench) echo bench/lifecycle.sql ;;
    pgbench-least) echo bench/lifecycle-least.sql ;;
    pgbench-least-marker) echo bench/lifecycle-least-marker.sql ;;
    pgbench-markers-off) echo bench/lifecycle-markers-off.sql ;;
    *) return 1 ;;
  esac
}

run_pgbench() { # url clients seconds|-t count  -> one JSON line; -M $PGBENCH_PROTOCOL
  run_pgbench_mode pgbench "$@"
}

run_pgbench_mode() { # mode url clients seconds|-t count  -> one JSON line
  local mode="$1" url="$2" n="$3"; shift 3
  local script; script=$(pgbench_script "$mode")
  rm -rf "$tmp/pglog"; mkdir -p "$tmp/pglog"
  local expires
  expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
  (cd "$tmp/pglog" && pgbench -M "${PGBENCH_PROTOCOL:-prepared}" -n -c "$n" -j "$n" "$@" -r --log \
     -f "$OLDPWD/$script" -D params="$PARAMS" -D expires_at="$expires" "$url") \
     >"$tmp/pgbench.out" 2>&1 || { cat "$tmp/pgbench.out" >&2; echo "{\"cmd\":\"lifecycle\",\"mode\":\"$mode\",\"errors\":-1}"; return 0; }
  python3 bench/report.py pgbench "$tmp/pglog" "$tmp/pgbench.out" "$n" "$mode"
}

lifecycles() {
  local url; url=$(url_for "$BENCH_DB")
  fresh_db "$BENCH_DB"
  for n in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      modes="store pgbench pgbench-least shared"
      case " 1 16 " in *" $n "*) modes="store pgbench pgbench-least shared conn pool protected" ;; esac
      modes="${MODES:-$modes}"
      for mode in $modes; do
        settle "$url"
        note "N=$n round $round/$ROUNDS: $mode"
        if pgbench_script "$mode" >/dev/null; then
          run_pgbench_mode "$mode" "$url" "$n" -T "$RUN_SECONDS"
        else
          $loadgen lifecycle --url "$url" --mode "$mode" --clients "$n" --seconds "$RUN_SECONDS" \
            || echo "{\"cmd\":\"lifecycle\",\"mode\":\"$mode\",\"errors\":-1}"
        fi | append section=lifecycle round="$round" clients="$n" run_seconds="$RUN_SECONDS"
      done
    done
  done
}

# Overload: 4x more callers than connections. The store (own pool, and PostgresStore::new on
# a sqlx PgPool) against pgbench with as many clients as the store has connections: the
# database does the same work, the store's extra callers only wait their turn. `lite` (a
# bare tokio semaphore over connections, no timeouts, no tracing) shows what any waiting
# queue costs the client, apart from the store.
overload() {
  local url; url=$(url_for "$BENCH_DB")
  fresh_db "$BENCH_DB"
  for pair in ${OVERLOAD:-4:16 16:64}; do
    local connections=${pair%%:*} callers=${pair#*:}
    for round in $(seq 1 "$ROUNDS"); do
      for mode in ${OVERLOAD_MODES:-store pgbench pgbench-least shared lite}; do
        settle "$url"
        note "overload $callers callers on $connections connections, round $round/$ROUNDS: $mode"
        if pgbench_script "$mode" >/dev/null; then
          run_pgbench_mode "$mode" "$url" "$connections" -T "$RUN_SECONDS"
        else
          $loadgen lifecycle --url "$url" --mode "$mode" --clients "$callers" \
            --connections "$connections" --seconds "$RUN_SECONDS" \
            || echo "{\"cmd\":\"lifecycle\",\"mode\":\"$mode\",\"errors\":-1}"
        fi | append section=overload round="$round" connections="$connections" \
               callers="$callers" run_seconds="$RUN_SECONDS"
      done
    done
  done
}

# A PgBouncer in transaction mode in front of DATABASE_URL's server, on a free port, as user
# postgres when run as root. Prints the port; the process is stopped on exit.
#   start_bouncer BINARY POOL_SIZE EXTRA_SETTINGS
start_bouncer() {
  local binary="$1" pool_size="$2" extra="$3"
  local dir port user password host server_port
  dir=$(mktemp -d "$tmp/pgbouncer.XXXX")
  read -r user password host server_port < <(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(p.username or "postgres", p.password or "postgres", p.hostname or "127.0.0.1", p.port or 5432)' "$DATABASE_URL")
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '"%s" "%s"\n' "$user" "$password" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=$host port=$server_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 400
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
$extra
EOF
  cp "$binary" "$dir/pgbouncer"
  chmod 755 "$tmp" "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$dir"
    runuser -u postgres -- "$dir/pgbouncer" -d "$dir/pgbouncer.ini" >/dev/null 2>&1
  else
    "$dir/pgbouncer" -d "$dir/pgbouncer.ini" >/dev/null 2>&1
  fi
  local waited=0
  until [ -s "$dir/pgbouncer.pid" ] \
      && psql -At "postgres://$user:$password@127.0.0.1:$port/postgres" -c 'SELECT 1' >/dev/null 2>&1; do
    waited=$((waited + 1))
    if [ "$waited" -gt 100 ]; then
      echo "PgBouncer ($binary) did not start; its log:" >&2
      cat "$dir/pgbouncer.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  cat "$dir/pgbouncer.pid" >>"$tmp/bouncer.pids"
  echo "$port"
}

bouncer_version() { "$1" --version 2>/dev/null | head -n 1 | awk '{print $2}'; }

# PGBOUNCER_1_25, else what .ci/build-pgbouncer builds (or has built); PGBOUNCER_1_18, else
# Debian's /usr/sbin/pgbouncer.
find_bouncers() {
  bouncer_125="${PGBOUNCER_1_25:-}"
  if [ -z "$bouncer_125" ] && [ -x .ci/build-pgbouncer ]; then
    bouncer_125=$(.ci/build-pgbouncer 2>/dev/null | tail -n 1) || bouncer_125=""
  fi
  bouncer_118="${PGBOUNCER_1_18:-/usr/sbin/pgbouncer}"
  [ -n "$bouncer_125" ] && [ -x "$bouncer_125" ] || bouncer_125=""
  [ -n "$bouncer_118" ] && [ -x "$bouncer_118" ] || bouncer_118=""
}

# The lifecycle through PgBouncer in transaction mode: the store's default mode (named
# prepared statements) vs pgbench -M prepared through PgBouncer 1.25.2 with
# max_prepared_statements; pooler mode (pooler_mode(true): BEGIN + SET LOCAL, the
# statement, COMMIT) vs pgbench -M extended (unnamed statements, autocommit) through
# PgBouncer 1.18. One PgBouncer per version and N, with N server connections, so that the
# store's pool (N connections) and pgbench (N clients) each get N server connections.
pooler() {
  find_bouncers
  if [ -z "$bouncer_125" ] && [ -z "$bouncer_118" ]; then
    note "pooler: no PgBouncer found (PGBOUNCER_1_25, .ci/build-pgbouncer, /usr/sbin/pgbouncer): skipped"
    return 0
  fi
  local db_url user password
  db_url=$(url_for "$BENCH_DB")
  fresh_db "$BENCH_DB"
  read -r user password < <(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(p.username or "postgres", p.password or "postgres")' "$DATABASE_URL")
  for n in $POOLER_CLIENTS; do
    local port_125="" port_118=""
    if [ -n "$bouncer_125" ]; then
      port_125=$(start_bouncer "$bouncer_125" "$n" "max_prepared_statements = 100
ignore_startup_parameters = extra_float_digits,options")
    fi
    if [ -n "$bouncer_118" ]; then
      port_118=$(start_bouncer "$bouncer_118" "$n" "")
    fi
    for round in $(seq 1 "$ROUNDS"); do
      for pair in ${POOLER_PAIRS:-1.25:store 1.25:pgbench 1.18:pooler 1.18:pgbench}; do
        local version=${pair%%:*} mode=${pair#*:} port protocol binary
        if [ "$version" = 1.25 ]; then
          port=$port_125 protocol=prepared binary=$bouncer_125
        else
          port=$port_118 protocol=extended binary=$bouncer_118
        fi
        [ -n "$port" ] || continue
        local url="postgres://$user:$password@127.0.0.1:$port/$BENCH_DB"
        settle "$db_url"
        note "pooler: PgBouncer $version N=$n round $round/$ROUNDS: $mode"
        if pgbench_script "$mode" >/dev/null; then
          PGBENCH_PROTOCOL=$protocol run_pgbench_mode "$mode" "$url" "$n" -T "$RUN_SECONDS"
        else
          $loadgen lifecycle --url "$url" --mode "$mode" --clients "$n" --seconds "$RUN_SECONDS" \
            || echo "{\"cmd\":\"lifecycle\",\"mode\":\"$mode\",\"errors\":-1}"
        fi | append section=pooler round="$round" clients="$n" run_seconds="$RUN_SECONDS" \
               bouncer="$(bouncer_version "$binary")" protocol="$protocol"
      done
    done
  done
}

# System calls (strace -c -f) and client CPU (getrusage) per lifecycle, N = 4.
syscalls() {
  local url; url=$(url_for "$BENCH_DB")
  local count=10000
  [ "$kind" = quick ] && count=4000
  for who in store lite conn pgbench; do
    settle "$url"
    note "client CPU per lifecycle: $who ($count lifecycles)"
    if [ "$who" = pgbench ]; then
      local expires
      expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
      python3 bench/report.py cpu -- pgbench -M prepared -n -c 4 -j 4 -t $((count / 4)) \
        -f bench/lifecycle.sql -D params="$PARAMS" -D expires_at="$expires" "$url"
    else
      python3 bench/report.py cpu -- $loadgen lifecycle --url "$url" --mode "$who" --clients 4 --count "$count"
    fi | append section=cpu who="$who" count="$count"
    if command -v strace >/dev/null; then
      settle "$url"
      note "system calls per lifecycle: $who"
      if [ "$who" = pgbench ]; then
        local expires
        expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
        strace -f -c -o "$tmp/strace.txt" pgbench -M prepared -n -c 4 -j 4 -t $((count / 4)) \
          -f bench/lifecycle.sql -D params="$PARAMS" -D expires_at="$expires" "$url" >/dev/null 2>&1
      else
        strace -f -c -o "$tmp/strace.txt" $loadgen lifecycle --url "$url" --mode "$who" --clients 4 --count "$count" >/dev/null
      fi
      python3 bench/report.py strace "$tmp/strace.txt" "$count" | append section=strace who="$who"
    fi
  done
}

cleanup_bench() {
  local db="${BENCH_DB}_cleanup"
  fresh_db "$db"
  note "cleanup: $CLEANUP_ROWS expired rows per batch size, beside lifecycle traffic"
  $loadgen cleanup --url "$(url_for "$db")" --rows "$CLEANUP_ROWS" --batch-sizes 100,1000,10000 \
    --clients 4 --rate 1000 --seconds "$(( RUN_SECONDS > 5 ? 5 : RUN_SECONDS ))" | append section=cleanup rate=1000
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}

soak() {
  local db="${BENCH_DB}_soak" url
  url=$(url_for "$db")
  fresh_db "$db"
  note "soak: $SOAK_SECONDS s at full rate, N=$SOAK_CLIENTS, 5% of requests abandoned (60 s), CleanupJob on"
  $loadgen lifecycle --url "$url" --clients "$SOAK_CLIENTS" --seconds "$SOAK_SECONDS" \
    --abandon-pct 5 --ttl 60 --cleanup-job --report-every 60 | append section=soak
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}

scale() {
  local small="${BENCH_DB}_scale_small" big="${BENCH_DB}_scale"
  fresh_db "$small"
  $loadgen load --url "$(url_for "$small")" --rows 1000 | append section=scale-load
  local have
  have=$(psql -At "$(url_for "$big")" -c "SELECT count(*) FROM pushed_authorization_requests" 2>/dev/null || echo 0)
  if [ "$have" != "$SCALE_ROWS" ]; then
    note "scale: loading $SCALE_ROWS live rows into $big (once; drop it with: DROP DATABASE $big)"
    [ "$have" -gt 0 ] 2>/dev/null && [ "$have" -gt "$SCALE_ROWS" ] && have=0
    [ "$have" = 0 ] && fresh_db "$big"
    $loadgen load --url "$(url_for "$big")" --rows "$SCALE_ROWS" | append section=scale-load
  fi
  # The big table is read once before measuring, as a server's would be after running a while.
  psql -q "$(url_for "$big")" -c "SELECT count(*) FROM pushed_authorization_requests" >/dev/null
  for n in 1 4; do
    for round in $(seq 1 "$ROUNDS"); do
      for pair in "$small:1000" "$big:$SCALE_ROWS"; do
        note "scale: N=$n round $round, ${pair#*:} rows"
        $loadgen get-only --url "$(url_for "${pair%%:*}")" --rows "${pair#*:}" --clients "$n" \
          --seconds "$RUN_SECONDS" | append section=scale round="$round"
      done
    done
  done
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $small WITH (FORCE)" >/dev/null
}

env_record "$DATABASE_URL" | append
case "$kind" in
  full|quick) lifecycles; overload; pooler; syscalls; cleanup_bench ;;
  pooler) pooler ;;
  soak) soak ;;
  scale) scale ;;
  lifecycles|plain) lifecycles; overload ;;
  overload) overload ;;
esac
python3 - "$raw" <<'EOF'
import json, sys
path = sys.argv[1]
lines = open(path).read().splitlines()
env = json.loads(lines[0])
env["load_after"] = open("/proc/loadavg").read().split()[:3]
env["load_after"] = " ".join(env["load_after"])
lines[0] = json.dumps(env, sort_keys=True)
open(path, "w").write("\n".join(lines) + "\n")
EOF
python3 bench/report.py markdown "$raw" > "$out/report.md"
cat "$out/report.md"
echo
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
if [ "$kind" != soak ] && [ "$kind" != scale ]; then
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null || true
fi
