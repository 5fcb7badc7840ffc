//! All of the store's SQL, in one place; the schema itself lives in `migrations/`.
//!
//! Static strings only: values are always bound parameters. `demo/examples/loadgen.rs` includes
//! this file to run the very same statements without the store layer.

// Expiry is checked against the database clock (`now()`), not a time bound from the
// application: every server instance then agrees on what "expired" means even when their
// clocks drift, and the statements need one parameter fewer. `now()` is the start of the
// statement's own (implicit) transaction, and timestamptz comparisons do not depend on the
// session time zone.

/// Inserts a request unless it has already expired by the database's clock; returns one row
/// when it inserted, none for a duplicate (`ON CONFLICT DO NOTHING`: the first request is
/// never touched and the connection sees no failed statement).
///
/// An `expires_at` that is not after `now()` becomes NULL, which the `NOT NULL` constraint
/// refuses (SQLSTATE 23502 on `expires_at`) before the duplicate check: nothing is stored,
/// whatever the application's clock said, and an expired duplicate is reported as expired.
/// The store reads that error as "already expired". An `INSERT ... VALUES` with the key as a
/// parameter is what Citus routes to the one shard that holds the key (an `INSERT ...
/// SELECT ... WHERE` is pulled through the coordinator); on Citus, `now()` in `VALUES` is the
/// coordinator's clock.
pub(crate) const INSERT: &str = "INSERT INTO pushed_authorization_requests \
     (reference_value_hash, expires_at, parameters, client_id) \
     VALUES ($1, CASE WHEN $2 > now() THEN $2 END, $3, $4) \
     ON CONFLICT (reference_value_hash) DO NOTHING \
     RETURNING 1";

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
/// $4 = whether the marker is `reopenable` (oauth-as's take); $5 = the session binding of a
/// `consume_in_session` under a reload window (NULL otherwise); $6 = the store's reload
/// window in microseconds (0: `ConsumePolicy::Once`).
///
/// `target` locks the row first (`FOR UPDATE`): concurrent consumers queue on that lock, and
/// each one after the first reads the row as the previous one left it (READ COMMITTED
/// re-reads a row that changed while it waited), so exactly one of them sees it live. The
/// `UPDATE`s and the `DELETE` join `target` so that they run after the lock is taken; their
/// own conditions are re-checked on the newest row version too. They are disjoint: a live
/// request of the right client is marked (or deleted with markers off); a live marker of the
/// right client that still holds parameters after the reload window has them cleared; an
/// expired row of the right client is deleted (garbage); another client's row is never
/// touched.
///
/// Reload tolerance (`ConsumePolicy::ReloadWithin`): with a binding in $5, `marked` keeps the
/// parameters and records the binding in `consumed_by`; a later call with the same binding
/// finds a live marker, still within the window and holding parameters, and is answered the
/// request again (`reloaded`) without writing anything. Any consumption of the right client
/// after the window clears the parameters (`cleared`); cleanup removes the row at
/// `expires_at` in any case. Without a binding and with a zero window this is exactly the
/// single-use statement: `marked` clears the parameters, `cleared` finds nothing to clear,
/// `reloaded` is false.
///
/// Liveness and the window are decided once, in `target` (on the newest row version, after
/// the lock), and the `UPDATE`s, the `DELETE` and the answer all use that decision. On one
/// PostgreSQL every `now()` of a statement is the same instant anyway; on Citus the `now()`
/// of a modifying part is evaluated on the coordinator and that of a read on the worker,
/// whose clocks may differ, so separate comparisons could mark a request that the answer
/// then calls expired. No `now()` in a RETURNING clause (which Citus refuses for
/// non-immutable functions). Citus routes the whole statement to the one shard that holds
/// `$1`.
pub(crate) const CONSUME: &str = "WITH target AS ( \
         SELECT reference_value_hash, expires_at, parameters, client_id, consumed_at, \
             consumed_by, expires_at > now() AS live, \
             now() - consumed_at < $6::int8 * interval '1 microsecond' AS in_window \
         FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 \
         FOR UPDATE), \
     marked AS ( \
         UPDATE pushed_authorization_requests AS r \
         SET consumed_at = now(), reopenable = $4, consumed_by = $5::text, \
             parameters = CASE WHEN $5::text IS NULL THEN NULL ELSE r.parameters END \
         FROM target AS t \
         WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = $1 \
           AND $3 AND r.consumed_at IS NULL AND t.live \
           AND (r.client_id IS NULL OR $2::text IS NULL OR r.client_id = $2::text) \
         RETURNING 1), \
     cleared AS ( \
         UPDATE pushed_authorization_requests AS r \
         SET parameters = NULL \
         FROM target AS t \
         WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = $1 \
           AND $3 AND r.consumed_at IS NOT NULL AND r.parameters IS NOT NULL \
           AND t.live AND NOT t.in_window \
           AND (r.client_id IS NULL OR $2::text IS NULL OR r.client_id = $2::text) \
         RETURNING 1), \
     deleted AS ( \
         DELETE FROM pushed_authorization_requests AS r \
         USING target AS t \
         WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = $1 \
           AND (NOT $3 OR NOT t.live) \
           AND (r.client_id IS NULL OR $2::text IS NULL OR r.client_id = $2::text) \
         RETURNING 1) \
     SELECT expires_at, parameters, client_id, consumed_at, live, \
         (client_id IS NULL OR $2::text IS NULL OR client_id = $2::text) AS right_client, \
         EXISTS (SELECT FROM marked) OR EXISTS (SELECT FROM deleted) AS taken, \
         coalesce(consumed_at IS NOT NULL AND live AND in_window AND parameters IS NOT NULL \
             AND consumed_by = $5::text, false) AS reloaded \
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

// Citus (docs/scaling.md). Citus refuses `FOR UPDATE` in a query over many shards, so the
// cleanup batches above cannot run on a distributed table; the store switches to the two
// statements below when Citus refuses them (src/postgres.rs). Each runs the same batch on
// every shard, on the shard itself (`run_command_on_shards`, one shard after another), where
// `FOR UPDATE SKIP LOCKED` works as on one PostgreSQL: many cleaners and live consumers never
// wait for each other, and a row is removed by exactly one cleaner. `$1` is the batch size
// per shard (so a short total means every shard was short); each shard's command is sent as
// text with its values as literals (planned afresh each time: no generic plan). Expiry is
// judged by each worker's clock. A shard whose command failed (a worker down) makes the
// statement fail: its `result` is the error message, which is not a number.
// `%%1$s` becomes `%1$s` after `format`, which `run_command_on_shards` replaces with the
// shard's name.

/// [`DELETE_EXPIRED_BATCH`] on every shard of a Citus-distributed table; one row: how many
/// were removed in all.
pub(crate) const CITUS_DELETE_EXPIRED_BATCH: &str = "SELECT coalesce(sum(result::int8), 0)::int8 \
     FROM run_command_on_shards('pushed_authorization_requests', format( \
         'WITH deleted AS (DELETE FROM %%1$s \
             WHERE reference_value_hash = ANY(ARRAY( \
                 SELECT reference_value_hash FROM %%1$s \
                 WHERE expires_at <= now() \
                 ORDER BY expires_at \
                 LIMIT %1$s \
                 FOR UPDATE SKIP LOCKED)) \
             RETURNING 1) \
         SELECT count(*) FROM deleted', $1::int8), false)";

/// [`DELETE_EXPIRED_AS_OF_BATCH`] on every shard of a Citus-distributed table. The cutoff
/// travels as an ISO 8601 literal in UTC, which every `DateStyle` reads back the same.
pub(crate) const CITUS_DELETE_EXPIRED_AS_OF_BATCH: &str =
    "SELECT coalesce(sum(result::int8), 0)::int8 \
     FROM run_command_on_shards('pushed_authorization_requests', format( \
         'WITH deleted AS (DELETE FROM %%1$s \
             WHERE reference_value_hash = ANY(ARRAY( \
                 SELECT reference_value_hash FROM %%1$s \
                 WHERE expires_at <= %2$L::timestamptz \
                 ORDER BY expires_at \
                 LIMIT %1$s \
                 FOR UPDATE SKIP LOCKED)) \
             RETURNING 1) \
         SELECT count(*) FROM deleted', \
         $1::int8, \
         to_char($2::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), false)";

/// Distributes the table by its key with Citus (`create_distributed_table`), unless it is
/// already distributed; one row: whether it distributed the table now. Fails where Citus is
/// not installed (no `pg_dist_partition`).
pub(crate) const CITUS_DISTRIBUTE: &str = "SELECT count(create_distributed_table( \
         'pushed_authorization_requests', 'reference_value_hash')) > 0 \
     FROM (SELECT) AS once \
     WHERE NOT EXISTS (SELECT FROM pg_dist_partition \
         WHERE logicalrelid = 'pushed_authorization_requests'::regclass)";

/// Opens the PL/pgSQL block that each migration file runs in ([`PostgresStore::migrator`](crate::PostgresStore::migrator)):
/// one statement for the server, whose parts run one at a time. A migration's statements
/// must therefore be valid in PL/pgSQL (DDL and DML; `PERFORM` rather than a bare `SELECT`).
pub(crate) const MIGRATION_BLOCK_START: &str = "DO $par_store_migration$ BEGIN\n";

/// Closes [`MIGRATION_BLOCK_START`]'s block.
pub(crate) const MIGRATION_BLOCK_END: &str = "\nEND $par_store_migration$";

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
