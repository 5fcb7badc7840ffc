# Sourced by bench/citus.sh and bench/citus-worker-failure.sh (not run on its own):
# throwaway PostgreSQL 15 nodes in one temporary directory, each on a free port on 127.0.0.1
# - a Citus cluster (coordinator + 2 workers), as tests/common/citus.rs starts one;
# - a plain node with the same settings but no Citus, to compare against.
# Server binaries refuse to run as root: as root, every server command runs as user postgres
# (runuser). The caller sets `trap nodes_stop EXIT`: every node started here is stopped
# (immediate) and the directory removed, whatever way the script ends.
#
# Environment: PG_BIN (/usr/lib/postgresql/15/bin: Citus is built for the system
# PostgreSQL 15 by .ci/install-citus), NODE_SHARED_BUFFERS (128MB, as the system server).

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
CITUS_CONTROL_VERSION=13.2-1 # .ci/install-citus's Citus 13.2.2
nodes_dir=$(mktemp -d /tmp/par-store-nodes.XXXXXX)
chmod 755 "$nodes_dir"

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Why Citus cannot be used here (nothing when it can).
citus_missing() {
  local control
  control="$("$PG_BIN/pg_config" --sharedir 2>/dev/null)/extension/citus.control" || true
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "no initdb in $PG_BIN"
  elif ! grep -qs "^default_version = '$CITUS_CONTROL_VERSION'" "$control"; then
    echo "Citus $CITUS_CONTROL_VERSION is not installed in $PG_BIN (run .ci/install-citus)"
  fi
}

node_port() { cat "$nodes_dir/$1/port"; }
node_url() { echo "postgres://postgres:postgres@127.0.0.1:$(node_port "$1")/postgres?sslmode=disable"; }

# node_init NAME citus|plain: initdb, settings, start.
node_init() {
  local name="$1" flavour="$2" dir="$nodes_dir/$1" port
  port=$(free_port)
  mkdir -p "$dir"
  echo "$port" >"$dir/port"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  as_server "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "shared_buffers = ${NODE_SHARED_BUFFERS:-128MB}"
    echo "max_connections = 300"
    echo "logging_collector = off"
    if [ "$flavour" = citus ]; then
      echo "shared_preload_libraries = 'citus'"
      echo "citus.log_distributed_deadlock_detection = off"
    fi
  } | as_server tee -a "$dir/data/postgresql.conf" >/dev/null
  node_start "$name"
}

node_start() {
  local dir="$nodes_dir/$1"
  as_server "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 60 >/dev/null \
    || { tail -n 20 "$dir/server.log" >&2; return 1; }
}

# node_stop NAME [MODE]: pg_ctl stop -m MODE (fast).
node_stop() {
  as_server "$PG_BIN/pg_ctl" stop -D "$nodes_dir/$1/data" -m "${2:-fast}" -w >/dev/null
}

nodes_stop() {
  local pidfile
  for pidfile in "$nodes_dir"/*/data/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    as_server "$PG_BIN/pg_ctl" stop -D "$(dirname "$pidfile")" -m immediate -w >/dev/null 2>&1 || true
  done
  rm -rf "$nodes_dir"
}

# A coordinator and workers worker1, worker2, as tests/common/citus.rs sets them up.
citus_cluster_start() {
  local node
  for node in coordinator worker1 worker2; do
    node_init "$node" citus
    psql -q -v ON_ERROR_STOP=1 "$(node_url "$node")" -c "CREATE EXTENSION citus" >/dev/null
  done
  psql -q -v ON_ERROR_STOP=1 "$(node_url coordinator)" \
    -c "SELECT citus_set_coordinator_host('127.0.0.1', $(node_port coordinator))" \
    -c "SELECT citus_add_node('127.0.0.1', $(node_port worker1))" \
    -c "SELECT citus_add_node('127.0.0.1', $(node_port worker2))" >/dev/null
  echo "==> Citus: coordinator on 127.0.0.1:$(node_port coordinator), workers on" \
    "$(node_port worker1) and $(node_port worker2) ($nodes_dir, removed at exit)" >&2
}
