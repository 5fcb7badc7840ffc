#!/usr/bin/env bash
# A host application on sqlx 0.8 beside par-store (tests/sqlx-0.8-host, docs/sqlx-0.8.md):
# its own migration with its sqlx 0.8 migrate!, par-store's with migrate(), a lifecycle, and
# what sqlx-cli 0.8 (sqlx 0.8's Migrator on par-store's files) does to its _sqlx_migrations;
# and that its sqlx 0.8 PgPool cannot be passed to PostgresStore::new.
# Usage: .ci/sqlx-0.8-host.sh   (needs DATABASE_URL or the default; creates and drops
# scratch databases of its own)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
manifest=tests/sqlx-0.8-host/Cargo.toml
# The main target directory, where .ci/run's earlier steps built par-store: measured on a
# loaded 2-core machine after `cargo build --example quickstart`, 36 crates and 1 min 48 s
# (+0.5 GB), against 169 crates and 6 min 43 s (1.3 GB) in a target directory of its own.
target="${CARGO_TARGET_DIR:-target}"
timeout 1800 cargo run --quiet --locked --manifest-path "$manifest" --target-dir "$target"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if cargo build --quiet --locked --manifest-path "$manifest" --target-dir "$target" \
  --features pass-sqlx-08-pool >"$log" 2>&1; then
  echo "FAIL: a sqlx 0.8 PgPool was accepted by PostgresStore::new" >&2; exit 1
fi
grep -q 'multiple different versions of crate `sqlx_core`' "$log" \
  || { cat "$log" >&2; echo "FAIL: the sqlx 0.8 PgPool build failed for another reason" >&2; exit 1; }
echo "ok: a sqlx 0.8 PgPool does not compile as PostgresStore::new's pool (E0308)"
