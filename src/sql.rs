//! All of the store's SQL, in one place; the schema itself lives in `migrations/`.
//!
//! Static strings only: values are always bound parameters. `demo/examples/loadgen.rs` includes
//! this file to run the very same statements without the store layer.

// Expiry is checked against the database clock (`now()`), not a time bound from the
// application: every server instance then agrees on what "expired" means even when their
// clocks drift, and the statements need one parameter fewer. `now()` is the start of the
// statement's own (implicit) transaction, and timestamptz comparisons do not depend on the
// session time zone.

/// Inserts a request unless it has already expired by the database's clock, and says which
/// happened, in one statement: one row `(inserted, live)`. `live` is false when `$2` is not
/// after `now()` (nothing inserted, whatever the application's clock said); otherwise
/// `inserted` is false only for a duplicate. `ON CONFLICT DO NOTHING` turns a duplicate into
/// "0 rows" instead of an error, so the first request is never touched and the connection
/// sees no failed statement. Both conditions see the same `now()`.
pub(crate) const INSERT: &str = "WITH inserted AS ( \
         INSERT INTO pushed_authorization_requests \
         (reference_value_hash, expires_at, parameters, client_id) \
         SELECT $1, $2, $3, $4 WHERE $2 > now() \
         ON CONFLICT (reference_value_hash) DO NOTHING \
         RETURNING 1) \
     SELECT EXISTS (SELECT FROM inserted) AS inserted, $2 > now() AS live";

// The reads return no key column: the caller has the key. A prepared statement's result
// columns are fixed, collation included, so a statement that returned the key would fail on
// every connection that prepared it before a migration changing the key's collation
// (0003's COLLATE "C"): "cached plan must not change result type".

/// Inserts a request or replaces the one stored under the same hash, live or expired, in one
/// atomic statement (for servers whose storage contract is "insert or replace", such as
/// oauth-as putting a request back after a refused presentation). A consumed request's
/// marker is replaced only when it is `reopenable` (left by oauth-as's take, which oauth-as
/// undoes this way); otherwise the statement returns no row and nothing changes.
pub(crate) const UPSERT: &str = "INSERT INTO pushed_authorization_requests AS r \
     (reference_value_hash, expires_at, parameters, client_id) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (reference_value_hash) DO UPDATE SET \
     expires_at = EXCLUDED.expires_at, parameters = EXCLUDED.parameters, \
     client_id = EXCLUDED.client_id, created_at = EXCLUDED.created_at, \
     consumed_at = NULL, reopenable = false \
     WHERE r.consumed_at IS NULL OR r.reopenable \
     RETURNING 1";

/// Reads a live request: not expired, not consumed.
pub(crate) const SELECT_LIVE: &str = "SELECT expires_at, parameters, client_id \
     FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 AND expires_at > now() AND consumed_at IS NULL";

/// Consumes a request in one atomic statement and returns the row as it was before, with
/// what the statement decided. $1 = hash; $2 = the client that must be bound (NULL: any);
/// $3 = leave a consumed marker (true) or delete the row (false: 0.2's behaviour);
/// $4 = whether the marker is `reopenable` (oauth-as's take).
///
/// `target` locks the row first (`FOR UPDATE`): concurrent consumers queue on that lock, and
/// each one after the first reads the row as the previous one left it (READ COMMITTED
/// re-reads a row that changed while it waited), so exactly one of them sees it live. The
/// `UPDATE` and `DELETE` join `target` so that they run after the lock is taken; their own
/// conditions are re-checked on the newest row version too. They are disjoint: a live
/// request of the right client is marked (or deleted with markers off); an expired row of
/// the right client is deleted (garbage); another client's row is never touched.
/// `now()` appears in the CTEs and the final select list, never in a RETURNING clause
/// (which Citus refuses for non-immutable functions).
pub(crate) const CONSUME: &str = "WITH target AS ( \
         SELECT reference_value_hash, expires_at, parameters, client_id, consumed_at \
         FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 \
         FOR UPDATE), \
     marked AS ( \
         UPDATE pushed_authorization_requests AS r \
         SET consumed_at = now(), parameters = NULL, reopenable = $4 \
         FROM target AS t \
         WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = $1 \
           AND $3 AND r.consumed_at IS NULL AND r.expires_at > now() \
           AND (r.client_id IS NULL OR $2::text IS NULL OR r.client_id = $2::text) \
         RETURNING 1), \
     deleted AS ( \
         DELETE FROM pushed_authorization_requests AS r \
         USING target AS t \
         WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = $1 \
           AND (NOT $3 OR r.expires_at <= now()) \
           AND (r.client_id IS NULL OR $2::text IS NULL OR r.client_id = $2::text) \
         RETURNING 1) \
     SELECT expires_at, parameters, client_id, consumed_at, \
         expires_at > now() AS live, \
         (client_id IS NULL OR $2::text IS NULL OR client_id = $2::text) AS right_client, \
         EXISTS (SELECT FROM marked) OR EXISTS (SELECT FROM deleted) AS taken \
     FROM target";

/// Removes every request bound to one client, live or expired, through the partial
/// `client_id` index.
pub(crate) const DELETE_BY_CLIENT_ID: &str =
    "DELETE FROM pushed_authorization_requests WHERE client_id = $1";

/// Deletes one batch of expired rows, oldest first through the `expires_at` index.
/// `FOR UPDATE SKIP LOCKED` lets many cleaners (one per server instance) and live consumers
/// run at once: a row locked by someone else is skipped, never waited for. The batch is
/// collected into an array first, so the delete itself is a primary-key lookup per row
/// whatever the planner guesses for `LIMIT $1`: a generic plan (which estimates the limit
/// at 10% of the table) cannot turn it into a scan of the whole table.
pub(crate) const DELETE_EXPIRED_BATCH: &str = "DELETE FROM pushed_authorization_requests \
     WHERE reference_value_hash = ANY(ARRAY( \
         SELECT reference_value_hash FROM pushed_authorization_requests \
         WHERE expires_at <= now() \
         ORDER BY expires_at \
         LIMIT $1 \
         FOR UPDATE SKIP LOCKED))";

/// [`DELETE_EXPIRED_BATCH`] against a cutoff instant given by the caller (`$2`) instead of the
/// database clock, for servers whose sweep is driven by their own clock.
pub(crate) const DELETE_EXPIRED_AS_OF_BATCH: &str = "DELETE FROM pushed_authorization_requests \
     WHERE reference_value_hash = ANY(ARRAY( \
         SELECT reference_value_hash FROM pushed_authorization_requests \
         WHERE expires_at <= $2 \
         ORDER BY expires_at \
         LIMIT $1 \
         FOR UPDATE SKIP LOCKED))";

// Migrations (src/migrations.rs). The two history tables are named in full: this file holds
// static strings only. `MIGRATIONS_TABLE` and sqlx's default `_sqlx_migrations` are checked
// against these strings by a unit test in src/migrations.rs.

/// The settings of the session that runs the migrations, for that session only:
/// - `client_min_messages = warning` keeps the migrator's `... already exists, skipping`
///   notices (server severity NOTICE, which sqlx logs at INFO) off it. Warnings still come
///   through.
/// - `statement_timeout = 0`: a migration (an `ALTER TABLE` on a large table) and the wait for
///   another instance's run are not bounded by the store's short statement timeout.
/// - `lock_timeout = $1` (e.g. `'60000ms'`, `'0'` for none) bounds every lock wait of the run
///   instead: the advisory lock below, sqlx's own, and the table locks the migrations take.
pub(crate) const MIGRATION_SESSION: &str = "SELECT \
     set_config('client_min_messages', 'warning', false), \
     set_config('statement_timeout', '0', false), \
     set_config('lock_timeout', $1, false)";

/// Serialises par-store's migration runs (history adoption, migrator, mirroring) across
/// instances; session-level, released explicitly or when the connection closes. The key is
/// an arbitrary constant of par-store's own (sqlx's migrator takes its own lock inside).
pub(crate) const LOCK_MIGRATIONS: &str = "SELECT pg_advisory_lock(7236905154372315439)";

/// Releases [`LOCK_MIGRATIONS`].
pub(crate) const UNLOCK_MIGRATIONS: &str = "SELECT pg_advisory_unlock(7236905154372315439)";

/// Whether the host application's sqlx history table (sqlx's default name) exists.
pub(crate) const HOST_HISTORY_EXISTS: &str = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";

/// Copies into par-store's history the par-store migrations that a host applied with
/// sqlx-cli into its own `_sqlx_migrations` (same version and checksum, applied
/// successfully), so that `migrate()` does not run them a second time.
/// $1 = versions, $2 = checksums of par-store's up migrations.
pub(crate) const ADOPT_HOST_HISTORY: &str = "INSERT INTO _par_store_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
     SELECT version, description, installed_on, success, checksum, execution_time \
     FROM _sqlx_migrations \
     WHERE success AND (version, checksum) IN (SELECT * FROM unnest($1::bigint[], $2::bytea[])) \
     ON CONFLICT (version) DO NOTHING";

/// The reverse of [`ADOPT_HOST_HISTORY`]: where the host's `_sqlx_migrations` already records
/// par-store migrations (the host applies them with sqlx-cli), records there too the ones
/// `migrate()` applied, so that the host's next `sqlx migrate run` has nothing to re-run.
/// A `_sqlx_migrations` without any par-store migration is never written to.
pub(crate) const MIRROR_INTO_HOST_HISTORY: &str = "INSERT INTO _sqlx_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
     SELECT version, description, installed_on, success, checksum, execution_time \
     FROM _par_store_migrations \
     WHERE success AND (version, checksum) IN (SELECT * FROM unnest($1::bigint[], $2::bytea[])) \
       AND EXISTS (SELECT 1 FROM _sqlx_migrations AS host \
                   WHERE host.success \
                     AND (host.version, host.checksum) IN \
                         (SELECT * FROM unnest($1::bigint[], $2::bytea[]))) \
     ON CONFLICT (version) DO NOTHING";

// Pooler mode (src/execution.rs): each operation runs inside an explicit transaction, opened
// by a `BEGIN; SET LOCAL statement_timeout = ...` the options build from a number.

/// Ends a pooler-mode operation's transaction.
pub(crate) const COMMIT: &str = "COMMIT";

/// Ends a pooler-mode transaction whose statement failed, so that its connection (and the
/// pooler's server connection behind it) can serve the next operation.
pub(crate) const ROLLBACK: &str = "ROLLBACK";
