//! All of the store's SQL, in one place; the schema itself lives in `migrations/`.
//!
//! Static strings only: values are always bound parameters. `demo/examples/loadgen.rs` includes
//! this file to run the very same statements without the store layer.

// Expiry is checked against the database clock, not a time bound from the application: every
// server instance then agrees on what "expired" means even when their clocks drift, and the
// statements need one parameter fewer. The clock is `clock_timestamp()`, read when the
// expression is evaluated, never `now()`: `now()` is the start of the statement's (implicit)
// transaction, fixed before any wait for a lock, so a statement that waited for a row or a
// table (a migration's) would decide on an instant from before the wait. Where a statement
// locks a row, its clock is read in a step that consumes the locked row (see `CONSUME`), so
// the decision is made on the row it holds with the time at which it holds it.
// timestamptz comparisons do not depend on the session time zone.
//
// Two tables (migration 0007): `pushed_authorization_requests` holds the requests that are
// not consumed, in 0.2's shape; `pushed_authorization_request_markers` holds the consumed
// markers. A consumption moves a request from the first to the second in one statement. An
// older release, whose statements know the first table only, never sees a marker: it neither
// decodes one nor hands out a request a second time (docs/upgrading.md).

/// Inserts a request unless it has already expired by the database's clock, or its hash is
/// taken by a request or by a consumed marker; returns one row when it inserted, none for a
/// duplicate (`ON CONFLICT DO NOTHING`: the first request is never touched and the connection
/// sees no failed statement).
///
/// An `expires_at` that is not after the clock becomes NULL, which the `NOT NULL` constraint
/// refuses (SQLSTATE 23502 on `expires_at`) before the duplicate check: nothing is stored,
/// whatever the application's clock said, and an expired duplicate is reported as expired.
/// The store reads that error as "already expired".
///
/// Where `distribute_on_citus` distributed migration 0008's functions, the store sends
/// [`CITUS_INSERT`] instead: these steps as statements of a function that Citus runs on the
/// shard's worker (Citus plans this `INSERT ... SELECT` through the coordinator).
pub(crate) const INSERT: &str = "INSERT INTO pushed_authorization_requests \
     (reference_value_hash, expires_at, parameters, client_id) \
     SELECT $1, CASE WHEN $2 > clock_timestamp() THEN $2 END, $3, $4 \
     WHERE NOT EXISTS (SELECT FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = $1) \
     ON CONFLICT (reference_value_hash) DO NOTHING \
     RETURNING 1";

// The reads return no key column: the caller has the key. A prepared statement's result
// columns are fixed, collation included, so a statement that returned the key would fail on
// every connection that prepared it before a migration changing the key's collation
// (0003's COLLATE "C"): "cached plan must not change result type".

/// Inserts a request or replaces the one stored under the same hash, live or expired, in one
/// atomic statement (for servers whose storage contract is "insert or replace", such as
/// oauth-as putting a request back after a refused presentation). The expiry rule is
/// `INSERT`'s: a request already expired by the database's clock is refused (23502 on
/// `expires_at`) before it could replace anything, so a live request is never replaced by a
/// dead one.
///
/// A consumed request's marker is replaced (removed) only when it is `reopenable` (left by
/// oauth-as's take, which oauth-as undoes this way); otherwise the statement returns no row
/// and nothing changes. `locked` takes the stored request's row lock first: a consumption
/// that comes later waits and then consumes the replaced request. A request that the
/// statement's snapshot saw but that is gone once it is locked (`seen` without `locked`) was
/// consumed or removed meanwhile: its marker may not be visible to this statement yet, so
/// nothing is written rather than bring a consumed request back.
pub(crate) const UPSERT: &str = "WITH locked AS ( \
         SELECT 1 FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 FOR UPDATE), \
     reopened AS ( \
         DELETE FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = $1 AND reopenable \
         RETURNING 1) \
     INSERT INTO pushed_authorization_requests AS r \
     (reference_value_hash, expires_at, parameters, client_id) \
     SELECT $1, CASE WHEN $2 > clock_timestamp() THEN $2 END, $3, $4 \
     WHERE NOT EXISTS (SELECT FROM pushed_authorization_request_markers \
             WHERE reference_value_hash = $1 AND NOT reopenable) \
       AND (EXISTS (SELECT FROM locked) \
           OR NOT EXISTS (SELECT FROM pushed_authorization_requests \
               WHERE reference_value_hash = $1)) \
     ON CONFLICT (reference_value_hash) DO UPDATE SET \
     expires_at = EXCLUDED.expires_at, parameters = EXCLUDED.parameters, \
     client_id = EXCLUDED.client_id, created_at = EXCLUDED.created_at \
     RETURNING 1";

/// Reads a live request: not expired, not consumed (a consumed request is a marker in the
/// other table).
pub(crate) const SELECT_LIVE: &str = "SELECT expires_at, parameters, client_id \
     FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 AND expires_at > clock_timestamp()";

/// Reads what the store knows of a hash, for `get_for_client` and for a consumption that
/// [`CONSUME`] took nothing for, without changing anything: the request (`consumed_at` NULL,
/// with its parameters) or its consumed marker (no parameters; `kept`: whether it still
/// keeps them for a reload), each with whether it is live by the database clock. At most one
/// row each; one snapshot, so a consumption committing meanwhile is seen either before or
/// after, never as neither.
pub(crate) const LOOK_UP: &str = "SELECT expires_at, parameters, client_id, \
         expires_at > clock_timestamp() AS live, NULL::timestamptz AS consumed_at, \
         false AS kept \
     FROM pushed_authorization_requests WHERE reference_value_hash = $1 \
     UNION ALL \
     SELECT expires_at, NULL, client_id, expires_at > clock_timestamp(), consumed_at, \
         kept_parameters IS NOT NULL \
     FROM pushed_authorization_request_markers WHERE reference_value_hash = $1";

/// Consumes a request in one atomic statement. $1 = hash; $2 = the client that must be bound
/// (NULL: any); $3 = leave a consumed marker (true) or only delete (false: 0.2's behaviour);
/// $4 = whether the marker is `reopenable` (oauth-as's take); $5 = the session binding of a
/// `consume_in_session` under a reload window (NULL otherwise), for which the marker keeps
/// the parameters.
///
/// This is the hot path and nothing else: `taken`, one `DELETE` of the row, bound to the
/// caller's client or to none, and the marker's insert. Concurrent consumers queue on the
/// row's lock; the first deletes it, every later one finds it gone and takes nothing.
/// `decided` reads the clock on each row `taken` returns, that is after the row lock is held,
/// however long the wait was: a request that expired while its consumer waited is `Expired`
/// (and removed as garbage), never handed out. (Not in `RETURNING`: Citus refuses a volatile
/// function there, and a store on Citus runs this statement until the functions of
/// migration 0008 are distributed, and always in pooler mode.) `marked` moves a live request
/// into the markers table (a marker already there, which only SQL written by hand can leave
/// beside a request, is kept as it is).
///
/// It returns one row when it took the request (`taken` is always true: the columns are
/// [`CITUS_CONSUME`]'s), none otherwise. Only then does the store tell the other outcomes
/// apart, with [`LOOK_UP`] in a second round trip (not found, bound to another client,
/// already consumed, a marker kept for a reload, or a request stored after this statement's
/// snapshot: the store then asks again). A consume that succeeds pays for no read it does
/// not need.
///
/// Where `distribute_on_citus` distributed migration 0008's functions, the store sends
/// [`CITUS_CONSUME`] instead: these steps as statements of a function that Citus runs on the
/// shard's worker, which also tells the other outcomes apart in the same call (Citus plans
/// this CTE in distributed subplans through the coordinator).
pub(crate) const CONSUME: &str = "WITH taken AS ( \
         DELETE FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 \
           AND (client_id IS NULL OR $2::text IS NULL OR client_id = $2::text) \
         RETURNING expires_at, parameters, client_id), \
     decided AS ( \
         SELECT expires_at, parameters, client_id, clock_timestamp() AS decided_at \
         FROM taken), \
     marked AS ( \
         INSERT INTO pushed_authorization_request_markers AS m \
         (reference_value_hash, expires_at, client_id, consumed_at, reopenable, consumed_by, \
          kept_parameters) \
         SELECT $1, expires_at, client_id, decided_at, $4, $5::text, \
             CASE WHEN $5::text IS NOT NULL THEN parameters END \
         FROM decided WHERE expires_at > decided_at AND $3 \
         ON CONFLICT (reference_value_hash) DO NOTHING) \
     SELECT true AS taken, expires_at, parameters, client_id, expires_at > decided_at, \
         NULL::timestamptz AS consumed_at, false AS kept \
     FROM decided";

/// A consumption that found a marker still keeping parameters (reload tolerance,
/// `ConsumePolicy::ReloadWithin`): decides on the marker it locks, with the clock read after
/// the lock, whether this is a reload by the session that consumed it, within the window and
/// before expiry (the kept parameters are returned, nothing is written), or a consumption
/// after the window (the kept parameters are cleared). $1 = hash; $2 = the caller's session
/// binding (NULL: none); $3 = the store's reload window in microseconds.
///
/// `MATERIALIZED` keeps `locked` (with its `FOR UPDATE`) a step of its own below `decided`,
/// so `decided` reads the clock on the row the lock returned.
pub(crate) const RELOAD: &str = "WITH locked AS MATERIALIZED ( \
         SELECT expires_at, client_id, consumed_at, consumed_by, kept_parameters \
         FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = $1 FOR UPDATE), \
     decided AS MATERIALIZED ( \
         SELECT expires_at, client_id, consumed_at, consumed_by, kept_parameters, \
             clock_timestamp() AS decided_at \
         FROM locked), \
     judged AS ( \
         SELECT expires_at, client_id, consumed_at, consumed_by, kept_parameters, \
             expires_at > decided_at \
                 AND decided_at - consumed_at < $3::int8 * interval '1 microsecond' AS open \
         FROM decided), \
     cleared AS ( \
         UPDATE pushed_authorization_request_markers AS m SET kept_parameters = NULL \
         FROM judged AS j \
         WHERE m.reference_value_hash = $1 AND m.kept_parameters IS NOT NULL AND NOT j.open \
         RETURNING 1) \
     SELECT expires_at, kept_parameters, client_id, consumed_at, \
         coalesce(open AND consumed_by = $2::text, false) AS reloaded \
     FROM judged";

/// Removes every request bound to one client, live or expired, and their consumed markers,
/// through the partial `client_id` indexes; one row: how many requests and markers.
pub(crate) const DELETE_BY_CLIENT_ID: &str = "WITH requests AS ( \
         DELETE FROM pushed_authorization_requests WHERE client_id = $1 RETURNING 1), \
     markers AS ( \
         DELETE FROM pushed_authorization_request_markers WHERE client_id = $1 RETURNING 1) \
     SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM markers)";

/// Deletes one batch of expired requests and one of expired markers, oldest first through
/// the `expires_at` indexes; one row: how many rows it removed in all. $1 = the batch size;
/// $2 = the cutoff instant (a row expired when `expires_at` is not after it), NULL for the
/// database clock (`CleanupJob`), a time for servers whose sweep is driven by their own clock.
///
/// The clock is read once, by the statement, in an uncorrelated subquery: the cutoff is then a
/// run-time parameter that the index scan on `expires_at` uses as its bound (with
/// `clock_timestamp()` in the `WHERE` itself, which is volatile, the scan would read every live
/// row in the index and filter them one by one). Unlike a consume, the batch never waits for a
/// row lock (`SKIP LOCKED`), so there is no wait for the clock to be read before; and the cutoff
/// is read no later than any row is locked, so it is never later than the instant of the
/// deletion: a row live then is never removed.
///
/// `FOR UPDATE SKIP LOCKED` lets many cleaners (one per server instance) and live consumers run
/// at once: a row locked by someone else is skipped, never waited for. Each batch is collected
/// into an array first, so the delete itself is a primary-key lookup per row whatever the
/// planner guesses for `LIMIT $1`: a generic plan (which estimates the limit at 10% of the
/// table) cannot turn it into a scan of the whole table.
pub(crate) const DELETE_EXPIRED_BATCH: &str = "WITH requests AS ( \
         DELETE FROM pushed_authorization_requests \
         WHERE reference_value_hash = ANY(ARRAY( \
             SELECT reference_value_hash FROM pushed_authorization_requests \
             WHERE expires_at <= coalesce($2::timestamptz, (SELECT clock_timestamp())) \
             ORDER BY expires_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED)) \
         RETURNING 1), \
     markers AS ( \
         DELETE FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = ANY(ARRAY( \
             SELECT reference_value_hash FROM pushed_authorization_request_markers \
             WHERE expires_at <= coalesce($2::timestamptz, (SELECT clock_timestamp())) \
             ORDER BY expires_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED)) \
         RETURNING 1) \
     SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM markers)";

// Citus (docs/scaling.md). Citus refuses `FOR UPDATE` in a query over many shards, so the
// cleanup batches above cannot run on a distributed table; the store switches to the two
// statements below when Citus refuses them (src/postgres.rs). Each runs the same batch on
// every shard, on the shard itself (`run_command_on_colocated_placements`: a requests shard and
// the markers shard beside it, one pair after another), where
// `FOR UPDATE SKIP LOCKED` works as on one PostgreSQL: many cleaners and live consumers never
// wait for each other, and a row is removed by exactly one cleaner. `$1` is the batch size
// per shard (so a short total means every shard was short); each shard's command is sent as
// text with its values as literals (planned afresh each time: no generic plan). Expiry is
// judged by each worker's clock. A shard whose command failed (a worker down) makes the
// statement fail: its `result` is the error message, which is not a number.
// `%%1$s` and `%%2$s` become `%1$s` and `%2$s` after `format`, which
// `run_command_on_colocated_placements` replaces with the names of a requests shard and of
// the markers shard colocated with it.

/// [`DELETE_EXPIRED_BATCH`] on every pair of colocated shards of the two Citus-distributed
/// tables (one command per pair, as many as the requests table has shards); one row: how many
/// were removed in all. The cutoff ($2, NULL for each worker's clock) travels as an ISO 8601
/// literal in UTC, which every `DateStyle` reads back the same (`%L` writes NULL unquoted).
pub(crate) const CITUS_DELETE_EXPIRED_BATCH: &str = "SELECT coalesce(sum(result::int8), 0)::int8 \
     FROM run_command_on_colocated_placements('pushed_authorization_requests', \
         'pushed_authorization_request_markers', format( \
         'WITH requests AS (DELETE FROM %%1$s \
             WHERE reference_value_hash = ANY(ARRAY( \
                 SELECT reference_value_hash FROM %%1$s \
                 WHERE expires_at <= coalesce(%2$L::timestamptz, (SELECT clock_timestamp())) \
                 ORDER BY expires_at \
                 LIMIT %1$s \
                 FOR UPDATE SKIP LOCKED)) \
             RETURNING 1), \
         markers AS (DELETE FROM %%2$s \
             WHERE reference_value_hash = ANY(ARRAY( \
                 SELECT reference_value_hash FROM %%2$s \
                 WHERE expires_at <= coalesce(%2$L::timestamptz, (SELECT clock_timestamp())) \
                 ORDER BY expires_at \
                 LIMIT %1$s \
                 FOR UPDATE SKIP LOCKED)) \
             RETURNING 1) \
         SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM markers)', \
         $1::int8, \
         to_char($2::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), false)";

/// Distributes both tables by their key with Citus (`create_distributed_table`), the markers
/// colocated with the requests (a request and its marker on one shard, so that a consumption
/// is one single-shard statement), unless they are already distributed; one row: whether it
/// distributed a table now. Fails where Citus is not installed (no `pg_dist_partition`).
pub(crate) const CITUS_DISTRIBUTE: &str = "SELECT count(create_distributed_table( \
         t.tab, 'reference_value_hash', colocate_with => t.colocate)) > 0 \
     FROM (VALUES \
         (1, 'pushed_authorization_requests'::regclass, 'default'), \
         (2, 'pushed_authorization_request_markers'::regclass, 'pushed_authorization_requests') \
     ) AS t(n, tab, colocate) \
     WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = t.tab)";

/// Distributes migration 0008's two functions (`par_store_insert`, `par_store_consume`) with
/// Citus (`create_distributed_function`), colocated with the requests table, the hash ($1 of
/// each call) as their distribution argument, each unless it already is: Citus then runs each
/// call on the worker that holds the hash's shard, where the function's statements are
/// single-shard statements on local shards. One row: whether it distributed one now. Run
/// after [`CITUS_DISTRIBUTE`] (the colocation is the requests table's).
pub(crate) const CITUS_DISTRIBUTE_FUNCTIONS: &str = "SELECT count(create_distributed_function( \
         f.signature::regprocedure, '$1', \
         colocate_with => 'pushed_authorization_requests')) > 0 \
     FROM (VALUES ('par_store_insert(text, timestamptz, text, text)'), \
                  ('par_store_consume(text, text, boolean, boolean, text)')) AS f(signature) \
     WHERE NOT EXISTS (SELECT FROM pg_dist_object \
         WHERE classid = 'pg_proc'::regclass \
           AND objid = to_regprocedure(f.signature) \
           AND distribution_argument_index IS NOT NULL)";

/// Whether Citus is installed in the database: the first half of the store's check for
/// delegated writes, which plain PostgreSQL answers without an error (it has no Citus
/// catalog to ask [`CITUS_FUNCTIONS_DELEGATED`]).
pub(crate) const CITUS_INSTALLED: &str =
    "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')";

/// Whether both functions of migration 0008 (the ones on the connection's `search_path`) are
/// distributed by Citus with a distribution argument ([`CITUS_DISTRIBUTE_FUNCTIONS`]), so
/// that Citus delegates their calls to the shard's worker; only where Citus is installed.
pub(crate) const CITUS_FUNCTIONS_DELEGATED: &str = "SELECT count(*) = 2 FROM pg_dist_object \
     WHERE classid = 'pg_proc'::regclass \
       AND objid IN (to_regprocedure('par_store_insert(text, timestamptz, text, text)'), \
           to_regprocedure('par_store_consume(text, text, boolean, boolean, text)')) \
       AND distribution_argument_index IS NOT NULL";

/// [`INSERT`] on Citus: a call of migration 0008's `par_store_insert` with `INSERT`'s
/// parameters; one row when it stored the request, none for a duplicate, SQLSTATE 23502 for
/// a request expired by the worker's clock (Citus passes the SQLSTATE on, not the column).
/// The call is in Citus's delegated form (a function in `FROM`, nothing else), so Citus sends
/// the whole call to the worker holding the hash's shard.
pub(crate) const CITUS_INSERT: &str = "SELECT * FROM par_store_insert($1, $2, $3, $4)";

/// [`CONSUME`] on Citus: a call of migration 0008's `par_store_consume` with `CONSUME`'s
/// parameters, returning `CONSUME`'s columns in its order (one decoding for both). The
/// function takes the row (`DELETE ... RETURNING`), then reads the clock, then writes the
/// marker, each a statement of its own; when it took nothing it returns in the same call
/// what [`LOOK_UP`] would (a row with `taken` false), so Citus needs no second round trip.
/// The call is in Citus's delegated form, as [`CITUS_INSERT`]'s.
pub(crate) const CITUS_CONSUME: &str = "SELECT * FROM par_store_consume($1, $2, $3, $4, $5)";

/// Reads a session's state for `target_session_attrs` (src/hosts.rs): whether it is read-only
/// and whether the server is a standby, in one round trip. Run unnamed: it leaves no prepared
/// statement behind, which matters behind a transaction-mode pooler.
pub(crate) const SESSION_STATE: &str =
    "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()";

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

/// Whether the schema has its compatibility record (migration 0007 creates it).
pub(crate) const COMPATIBILITY_EXISTS: &str =
    "SELECT to_regclass('_par_store_compatibility') IS NOT NULL";

/// The compatibility record (docs/upgrading.md): for each migration that older releases
/// cannot serve, the oldest release that can.
pub(crate) const COMPATIBILITY: &str =
    "SELECT migration_version, oldest_release FROM _par_store_compatibility";

// Pooler mode (src/execution.rs): each operation runs inside an explicit transaction, opened
// by a `BEGIN; SET LOCAL statement_timeout = ...` the options build from a number.

/// Ends a pooler-mode operation's transaction.
pub(crate) const COMMIT: &str = "COMMIT";

/// Ends a pooler-mode transaction whose statement failed, so that its connection (and the
/// pooler's server connection behind it) can serve the next operation.
pub(crate) const ROLLBACK: &str = "ROLLBACK";
