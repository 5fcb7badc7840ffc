# Shared by bench/markers.sh, bench/metrics.sh and bench/citus.sh (sourced, not run): the results directory,
# a temporary directory removed at exit, and small helpers. The caller sets `kind` first.
DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"

out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$kind"
mkdir -p "$out"
echo "==> results go to $PWD/$out (raw.jsonl, report.md; bench/results/ is not committed)" >&2
raw="$out/raw.jsonl"
tmp=$(mktemp -d)
chmod 755 "$tmp"
# Commands run at exit, last added first, before $tmp is removed.
on_exit=()
finish() {
  local i
  for ((i = ${#on_exit[@]} - 1; i >= 0; i--)); do eval "${on_exit[i]}" || true; done
  if [ ! -s "$raw" ]; then rm -rf "$out"; echo "==> nothing measured: $PWD/$out removed" >&2; fi
  rm -rf "$tmp"
}
trap finish EXIT
trap "exit 143" TERM INT

append() { python3 bench/report.py append "$raw" "$@"; }
note() { echo "==> $*" >&2; }
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# A URL with another database name (query string kept).
url_for() { # url database
  python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$1" "$2"
}

# PostgreSQL's server binaries refuse to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# 600 bytes of form-encoded parameters, as bench/run.sh and the load generator store.
PARAMS=$(python3 -c '
b = ("client_id=s6BhdRkqt3&response_type=code&scope=openid%20profile%20email"
     "&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&state=af0ifjsldkj"
     "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
     "&code_challenge_method=S256&nonce=n-0S6_WzA2Mj&")
print((b * 10)[:600])')

# The first line of raw.jsonl: when, where, how loaded.
env_record() { # server-url [key=value...]
  local url="$1"; shift
  python3 - "$url" "$kind" "$@" <<'EOF' | append
import datetime, json, os, subprocess, sys
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
record = {
    "cmd": "env", "kind": sys.argv[2],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "nproc": os.cpu_count(), "postgres": sh(f"psql -At '{sys.argv[1]}' -c 'SHOW server_version'"),
    "pgbench": sh("pgbench --version"), "rustc": sh("rustc --version"),
    "load_before": open("/proc/loadavg").read().split()[:3],
}
record.update(pair.split("=", 1) for pair in sys.argv[3:])
print(json.dumps(record, sort_keys=True))
EOF
}

# Empties the table and writes a checkpoint: every measured run starts from the same state.
empty_table() { # database-url
  psql -q "$1" -c "TRUNCATE pushed_authorization_requests, pushed_authorization_request_markers" -c "CHECKPOINT" >/dev/null
}

# The modes in the order of one round: as given in odd rounds, reversed in even ones, so
# that no mode always runs first.
round_order() { # round modes...
  local round="$1"; shift
  if [ $((round % 2)) = 1 ]; then echo "$@"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}

# A private cluster with stock settings on a free port, stopped on exit (needs $tmp and
# on_exit); sets $PG_BINDIR, $cluster and $server.
start_cluster() {
  PG_BINDIR="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
  [ -x "$PG_BINDIR/initdb" ] || { echo "no initdb in PG_BINDIR ($PG_BINDIR)" >&2; exit 1; }
  cluster="$tmp/cluster"
  mkdir -p "$cluster"
  [ "$(id -u)" = 0 ] && chown postgres: "$cluster"
  on_exit+=("as_postgres '$PG_BINDIR/pg_ctl' -D '$cluster/data' -m fast stop >/dev/null 2>&1")
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_postgres "$PG_BINDIR/initdb" -D "$cluster/data" -U postgres -A trust --no-sync >/dev/null
  as_postgres "$PG_BINDIR/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w \
    -o "-p $port -k $cluster -c listen_addresses=127.0.0.1" start >/dev/null
  server="postgres://postgres@127.0.0.1:$port/postgres"
}
