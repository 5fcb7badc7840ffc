#!/usr/bin/env bash
# A host application on sqlx 0.8 beside par-store (tests/sqlx-0.8-host, docs/sqlx-0.8.md):
# its own migration with its sqlx 0.8 migrate!, par-store's with migrate(), a lifecycle, and
# what sqlx-cli 0.8 (sqlx 0.8's Migrator on par-store's files) does to its _sqlx_migrations.
# Usage: .ci/sqlx-0.8-host.sh   (needs DATABASE_URL or the default; creates and drops
# scratch databases of its own)
set -euo pipefail
cd "$(dirname "$0")/.."
# Its own target directory: the host's lock resolves par-store's dependencies with other
# features than the workspace, so little of target/debug would be reused.
CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" timeout 1800 \
  cargo run --quiet --manifest-path tests/sqlx-0.8-host/Cargo.toml --target-dir target/sqlx-0.8-host
