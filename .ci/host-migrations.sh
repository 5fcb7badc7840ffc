#!/usr/bin/env bash
# par-store's migrations applied from a host application's directory with the real sqlx-cli,
# in every order with PostgresStore::migrate() (run through `cargo run --example quickstart`):
# each sequence must succeed and leave par-store's history complete.
# Usage: .ci/host-migrations.sh   (needs sqlx-cli 0.9, psql, DATABASE_URL or the default)
set -euo pipefail
export PGOPTIONS="--client-min-messages=warning"
repo="$(cd "$(dirname "$0")/.." && pwd)"
admin_url="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
if ! command -v sqlx >/dev/null && [ -x "$HOME/.cargo/bin/sqlx" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
host="$(mktemp -d)"   # the host application's directory: no sqlx.toml, no migrations
trap 'rm -rf "$host"' EXIT
cargo build --quiet --manifest-path "$repo/Cargo.toml" --example quickstart
quickstart="$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/quickstart"

cli_with_config() { (cd "$host" && sqlx migrate run --no-dotenv --database-url "$1" \
  --source "$repo/migrations" --config "$repo/sqlx.toml"); }
cli_without_config() { (cd "$host" && sqlx migrate run --no-dotenv --database-url "$1" \
  --source "$repo/migrations"); }
migrate() { DATABASE_URL="$1" "$quickstart" >/dev/null; }

ups=$(ls "$repo"/migrations/*.up.sql | wc -l)
check() { # url, table, expected count
  local got
  got=$(psql "$1" -tAq -c "SELECT count(*) FROM $2 WHERE success")
  [ "$got" = "$3" ] || { echo "FAIL: $2 holds $got migrations, expected $3" >&2; exit 1; }
}

host_history_complete() { check "$1" _sqlx_migrations "$ups"; }

run_sequence() { # name, steps...
  local name="$1"; shift
  local db="par_store_host_${name}_$$"
  local url="${admin_url%/*}/$db"
  psql "$admin_url" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  for step in "$@"; do "$step" "$url"; done
  check "$url" _par_store_migrations "$ups"
  echo "ok: $name: $*"
  psql "$admin_url" -q -c "DROP DATABASE $db WITH (FORCE)"
}

run_sequence config_then_migrate cli_with_config migrate cli_with_config
run_sequence migrate_then_config migrate cli_with_config migrate
run_sequence no_config_then_migrate cli_without_config migrate cli_without_config migrate \
  host_history_complete
echo "host migrations: all sequences converge"
