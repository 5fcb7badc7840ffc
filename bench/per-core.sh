#!/usr/bin/env bash
# Lifecycles per core on one PostgreSQL node (docs/scaling.md, "Single node"):
#
#   bash bench/run.sh --per-core      (or bash bench/per-core.sh)
#
# A private PostgreSQL cluster with stock settings (autovacuum, fsync, synchronous_commit on;
# shared_buffers 128 MB), started on a free port and removed at exit, so that every server
# process is the benchmark's. For each N in CLIENTS, ROUNDS runs of
# `loadgen lifecycle --mode store --clients N --seconds RUN_SECONDS` (store, get_by_hash,
# consume_by_hash of a fresh 600-byte request, the store's own pool of N connections); over
# the middle WINDOW seconds of each run: the load generator's CPU and the server's (the
# postmaster and all its children, from /proc/<pid>/stat), and pg_stat_wal's records, bytes,
# full-page images and flushes (wal_sync). Per lifecycle = over the window / (lifecycles/s
# of the whole run x WINDOW). About 3 minutes at the defaults.
#
# A run whose load generator has already exited at the window's end (a loaded machine
# samples slowly) is recorded as invalid and left out of the report: the window must lie
# inside the run, while every backend still lives.
#
# Environment: CLIENTS (1 4 16 64), ROUNDS (2), RUN_SECONDS (14), WINDOW (6), PG_BINDIR.
# Writes bench/results/<UTC time>-per-core/{raw.jsonl,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=per-core
# shellcheck source=bench/lib.sh
. bench/lib.sh

CLIENTS="${CLIENTS:-1 4 16 64}"
ROUNDS="${ROUNDS:-2}"
RUN_SECONDS="${RUN_SECONDS:-14}"
WINDOW="${WINDOW:-6}"
[ "$WINDOW" -lt "$RUN_SECONDS" ] || { echo "WINDOW must be shorter than RUN_SECONDS" >&2; exit 2; }
for tool in psql python3 cargo; do
  command -v "$tool" >/dev/null || { echo "bench/per-core.sh needs $tool on PATH" >&2; exit 1; }
done

note "building the load generator (release)"
cargo build --release --quiet -p par-store-demo --example loadgen
loadgen=target/release/examples/loadgen

start_cluster
postmaster=$(head -n 1 "$cluster/data/postmaster.pid")
psql -q "$server" -c "CREATE DATABASE par_store_per_core" >/dev/null
url=$(url_for "$server" par_store_per_core)
$loadgen migrate --url "$url" >/dev/null
env_record "$server" window="$WINDOW"
# Not measured: the new tables' first pages and cold caches.
$loadgen lifecycle --url "$url" --mode store --clients 4 --seconds 3 >/dev/null

# CPU seconds (user + system) of the given pids, and of the postmaster's children when the
# first argument is "server".
cpu_seconds() {
  python3 - "$@" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found
if sys.argv[1] == "server":
    pid = int(sys.argv[2])
    print(cpu(pid) + sum(cpu(child) for child in children(pid)))
else:
    print(cpu(int(sys.argv[1])))
EOF
}

wal() { psql -At -F ' ' "$url" -c "SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal"; }

for n in $CLIENTS; do
  for round in $(seq 1 "$ROUNDS"); do
    psql -q "$url" -c "TRUNCATE pushed_authorization_requests, pushed_authorization_request_markers" -c "CHECKPOINT" >/dev/null
    note "N=$n round $round/$ROUNDS (load $(load_average))"
    $loadgen lifecycle --url "$url" --mode store --clients "$n" --seconds "$RUN_SECONDS" >"$tmp/run.json" &
    client=$!
    sleep $(((RUN_SECONDS - WINDOW) / 2))
    start=$(date +%s.%N) client0=$(cpu_seconds "$client") server0=$(cpu_seconds server "$postmaster") wal0=$(wal)
    sleep "$WINDOW"
    end=$(date +%s.%N) client1=$(cpu_seconds "$client") server1=$(cpu_seconds server "$postmaster") wal1=$(wal)
    valid=true
    kill -0 "$client" 2>/dev/null || valid=false
    wait "$client"
    python3 - "$tmp/run.json" "$start" "$end" "$client0" "$client1" "$server0" "$server1" "$wal0" "$wal1" <<'EOF' \
      | append section=per-core round="$round" clients="$n" valid="$valid"
import json, sys
run = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
start, end, c0, c1, s0, s1 = (float(v) for v in sys.argv[2:8])
w0, w1 = ([float(v) for v in arg.split()] for arg in sys.argv[8:10])
window = end - start
lifecycles = run["per_s"] * window
d = [b - a for a, b in zip(w0, w1)]
print(json.dumps({"cmd": "per-core", "per_s": run["per_s"], "window_s": round(window, 2),
    "client_us": round((c1 - c0) / lifecycles * 1e6, 1),
    "server_us": round((s1 - s0) / lifecycles * 1e6, 1),
    "wal_records": round(d[0] / lifecycles, 2), "wal_fpi": round(d[1] / lifecycles, 3),
    "wal_bytes": round(d[2] / lifecycles), "wal_flushes_per_s": round(d[3] / window),
    "errors": run.get("errors", 0)}))
EOF
  done
done

python3 - "$raw" >"$out/report.md" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
env = rows[0]
runs = [r for r in rows if r.get("cmd") == "per-core" and r.get("valid")]
invalid = sum(1 for r in rows if r.get("cmd") == "per-core" and not r.get("valid"))
def span(values, digits=0):
    lo, hi = min(values), max(values)
    f = (lambda v: f"{v:,.{digits}f}")
    return f(lo) if f(lo) == f(hi) else f"{f(lo)}-{f(hi)}"
print(f"# Lifecycles per core ({env.get('date')}, PostgreSQL {env.get('postgres')}, load before {env.get('load_before')})")
print()
print("| clients | lifecycles/s | client CPU per lifecycle (µs) | server CPU per lifecycle (µs) "
      "| lifecycles per core-second (client + server) | per server core-second | WAL flushes/s "
      "| WAL bytes / records / FPI per lifecycle | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for n in sorted({r["clients"] for r in runs}):
    rs = [r for r in runs if r["clients"] == n]
    print(f"| {n} | {span([r['per_s'] for r in rs])} | {span([r['client_us'] for r in rs])} "
          f"| {span([r['server_us'] for r in rs])} "
          f"| {span([1e6 / (r['client_us'] + r['server_us']) for r in rs])} "
          f"| {span([1e6 / r['server_us'] for r in rs])} | {span([r['wal_flushes_per_s'] for r in rs])} "
          f"| {span([r['wal_bytes'] for r in rs])} / {span([r['wal_records'] for r in rs], 1)} / "
          f"{span([r['wal_fpi'] for r in rs], 2)} | {sum(r.get('errors', 0) or 0 for r in rs)} |")
if invalid:
    print(f"\n{invalid} run(s) left out: the load generator had exited before the window's end.")
EOF
cat "$out/report.md"
echo "raw results: $PWD/$raw; report: $PWD/$out/report.md" >&2
