#!/usr/bin/env bash
# The quickstart's fallbacks, as a new user meets them (issue 19):
# - nothing answers at DATABASE_URL: it runs on a throwaway cluster, says so in one line, works,
#   and leaves neither the cluster's directory nor a server process behind;
# - nor are server binaries installed (hidden in a mount namespace, where one can be made): one
#   line on stderr, its Display text, naming `docker compose up -d --wait`;
# - the package holds the file the quickstart includes.
# Usage: .ci/quickstart.sh   (needs PostgreSQL's server binaries)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --manifest-path "$repo/Cargo.toml" --example quickstart
quickstart="$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/quickstart"
nothing="postgres://postgres:postgres@127.0.0.1:1/postgres"   # port 1: nothing listens

out=""
fail() { echo "quickstart: $*" >&2; echo "$out" >&2; exit 1; }

out="$(cd "$repo" && DATABASE_URL="$nothing" "$quickstart" 2>&1)" \
  || fail "failed with nothing at DATABASE_URL"
grep -q '^nothing answers at 127.0.0.1:1 (DATABASE_URL): using a throwaway PostgreSQL cluster on 127.0.0.1:[0-9]* (.*), removed when this example exits$' <<<"$out" \
  || fail "no line saying it runs on a throwaway cluster"
grep -q "^created par-store's tables (if missing) in the database at 127.0.0.1:[0-9]*/postgres (the throwaway cluster)$" <<<"$out" \
  || fail "no line saying where it created its tables"
grep -qx 'consumed again: false (single use)' <<<"$out" || fail "did not run to its end"
dir="$(sed -n 's/^nothing answers .* cluster on 127\.0\.0\.1:[0-9]* (\(.*\)), removed .*/\1/p' <<<"$out")"
[ -n "$dir" ] || fail "no cluster directory named"
for _ in $(seq 1 30); do
  if [ ! -e "$dir" ] && ! pgrep -f -- "$dir" >/dev/null; then break; fi
  sleep 1
done
[ ! -e "$dir" ] || fail "left $dir behind 30 s after it exited"
! pgrep -af -- "$dir" || fail "left a server of $dir running"
echo "quickstart: nothing at DATABASE_URL: ran on a throwaway cluster, removed after exit"

if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
  set +e
  err="$(cd "$repo" && env -u PG_BINDIR DATABASE_URL="$nothing" unshare -m sh -c \
    'mount -t tmpfs none /usr/lib/postgresql && exec "$0"' "$quickstart" 2>&1 >/dev/null)"
  rc=$?
  set -e
  out="$err"
  [ "$rc" = 1 ] || fail "exit status $rc without server binaries, not 1"
  [ "$(wc -l <<<"$err")" = 1 ] || fail "more than one line without server binaries"
  grep -q '^quickstart: nothing answers at 127.0.0.1:1 (DATABASE_URL) and no PostgreSQL server binaries are installed .*`docker compose up -d --wait`' <<<"$err" \
    || fail "the line without server binaries does not name docker compose up -d --wait"
  echo "quickstart: no server binaries either: one line naming docker compose up -d --wait"
else
  echo "quickstart: the case without server binaries is not checked here (needs root and unshare -m)"
fi

(cd "$repo" && cargo package --list --allow-dirty --quiet) | grep -qx examples/support/cluster.rs \
  || fail "the package lacks examples/support/cluster.rs, which the quickstart includes"
