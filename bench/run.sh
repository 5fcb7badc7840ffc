#!/usr/bin/env bash
# par-store benchmark: the store against pgbench running the same statements, on the same
# database at the same moment (see BENCHMARKS.md).
#
#   bash bench/run.sh            lifecycles (N = 1, 4, 16, 64; store, pgbench, shared, and
#                                conn, pool, protected at N = 1 and 16; 3 interleaved
#                                rounds of 10 s; modes: see demo/examples/loadgen.rs),
#                                system calls per lifecycle, cleanup (1,000,000 expired rows
#                                at batch sizes 100, 1000, 10000): about 13 minutes
#   bash bench/run.sh --quick    the same, 1 round of 3 s, 100,000 rows: about 3 minutes
#   bash bench/run.sh --soak     10 minutes of lifecycles with the CleanupJob, a report a minute
#   bash bench/run.sh --lifecycles-only   only the lifecycle comparison (e.g. with CLIENTS="1 4"
#                                ROUNDS=5 RUN_SECONDS=5 MODES="store pgbench protected")
#   bash bench/run.sh --overload-only   only the overload case: 4x more callers than
#                                connections (OVERLOAD="4:16 16:64", connections:callers),
#                                store and shared against pgbench with as many clients as
#                                connections
#   bash bench/run.sh --scale    get_by_hash with 1,000 vs 10,000,000 live rows (loads ~9 GB
#                                once into database par_store_bench_scale, kept for reruns)
#
# Needs PostgreSQL at DATABASE_URL (default: the docker-compose server), whose role may
# create databases; psql, pgbench, python3 and cargo on PATH; strace for the syscall counts
# (skipped without it). Writes bench/results/<UTC time>-<kind>/{raw.jsonl,report.md}.
# Environment: DATABASE_URL, BENCH_DB (par_store_bench), ROUNDS, RUN_SECONDS, CLIENTS,
# CLEANUP_ROWS, SOAK_SECONDS, SOAK_CLIENTS, SCALE_ROWS.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=full
for arg in "$@"; do
  case "$arg" in
    --quick) kind=quick ;;
    --soak) kind=soak ;;
    --scale) kind=scale ;;
    --lifecycles-only) kind=lifecycles ;;
    --overload-only) kind=overload ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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
CLIENTS="${CLIENTS:-1 4 16 64}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_CLIENTS="${SOAK_CLIENTS:-16}"
SCALE_ROWS="${SCALE_ROWS:-10000000}"

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
raw="$out/raw.jsonl"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
append() { python3 bench/report.py append "$raw" "$@"; }
note() { echo "==> $*" >&2; }

note "building the load generator (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
loadgen=target/release/examples/loadgen

fresh_db() {
  psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  $loadgen migrate --url "$(url_for "$1")" >/dev/null
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

# Before every measured run: the same starting point for store and pgbench alike (no dead
# rows left by the previous run, no checkpoint due in the middle of the run).
settle() {
  psql -q "$1" -c "VACUUM pushed_authorization_requests" -c "CHECKPOINT" >/dev/null 2>&1 || true
}

PARAMS=$(python3 -c '
b = ("client_id=s6BhdRkqt3&response_type=code&scope=openid%20profile%20email"
     "&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&state=af0ifjsldkj"
     "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
     "&code_challenge_method=S256&nonce=n-0S6_WzA2Mj&")
print((b * 10)[:600])')

run_pgbench() { # url clients seconds|-t count  -> one JSON line
  local url="$1" n="$2"; shift 2
  rm -rf "$tmp/pglog"; mkdir -p "$tmp/pglog"
  local expires
  expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=600)).isoformat())')
  (cd "$tmp/pglog" && pgbench -M prepared -n -c "$n" -j "$n" "$@" -r --log \
     -f "$OLDPWD/bench/lifecycle.sql" -D params="$PARAMS" -D expires_at="$expires" "$url") \
     >"$tmp/pgbench.out" 2>&1 || { cat "$tmp/pgbench.out" >&2; echo '{"cmd":"lifecycle","mode":"pgbench","errors":-1}'; return 0; }
  python3 bench/report.py pgbench "$tmp/pglog" "$tmp/pgbench.out" "$n"
}

lifecycles() {
  local url; url=$(url_for "$BENCH_DB")
  fresh_db "$BENCH_DB"
  for n in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      modes="store pgbench shared"
      case " 1 16 " in *" $n "*) modes="store pgbench shared conn pool protected" ;; esac
      modes="${MODES:-$modes}"
      for mode in $modes; do
        settle "$url"
        note "N=$n round $round/$ROUNDS: $mode"
        if [ "$mode" = pgbench ]; then
          run_pgbench "$url" "$n" -T "$RUN_SECONDS"
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
# database does the same work, the store's extra callers only wait their turn.
overload() {
  local url; url=$(url_for "$BENCH_DB")
  fresh_db "$BENCH_DB"
  for pair in ${OVERLOAD:-4:16 16:64}; do
    local connections=${pair%%:*} callers=${pair#*:}
    for round in $(seq 1 "$ROUNDS"); do
      for mode in store pgbench shared; do
        settle "$url"
        note "overload $callers callers on $connections connections, round $round/$ROUNDS: $mode"
        if [ "$mode" = pgbench ]; then
          run_pgbench "$url" "$connections" -T "$RUN_SECONDS"
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
  full|quick) lifecycles; overload; syscalls; cleanup_bench ;;
  soak) soak ;;
  scale) scale ;;
  lifecycles) lifecycles; overload ;;
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
echo "raw results: $raw; report: $out/report.md" >&2
if [ "$kind" != soak ] && [ "$kind" != scale ]; then
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null || true
fi
