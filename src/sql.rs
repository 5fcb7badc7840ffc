//! All of the store's SQL, in one place; the schema itself lives in `migrations/`.
//!
//! Static strings only: values are always bound parameters. `examples/loadgen.rs` includes
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
         (reference_value_hash, expires_at, parameters) \
         SELECT $1, $2, $3 WHERE $2 > now() \
         ON CONFLICT (reference_value_hash) DO NOTHING \
         RETURNING 1) \
     SELECT EXISTS (SELECT FROM inserted) AS inserted, $2 > now() AS live";

// The reads return no key column: the caller has the key. A prepared statement's result
// columns are fixed, collation included, so a statement that returned the key would fail on
// every connection that prepared it before a migration changing the key's collation
// (0003's COLLATE "C"): "cached plan must not change result type".

/// Reads a live request.
pub(crate) const SELECT_LIVE: &str = "SELECT expires_at, parameters \
     FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 AND expires_at > now()";

/// Consumes a request in one atomic statement. An expired row is deleted too (it is garbage),
/// but reported as not live so that it is never handed out. Concurrent callers serialise on
/// the row lock: exactly one sees the row in RETURNING.
pub(crate) const CONSUME: &str = "DELETE FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 \
     RETURNING expires_at, parameters, expires_at > now() AS live";

/// Deletes one batch of expired rows, oldest first through the `expires_at` index.
/// `FOR UPDATE SKIP LOCKED` lets many cleaners (one per server instance) and live consumers
/// run at once: a row locked by someone else is skipped, never waited for. The CTE is
/// always materialised (it locks rows), so the LIMIT holds.
pub(crate) const DELETE_EXPIRED_BATCH: &str = "WITH batch AS ( \
         SELECT reference_value_hash FROM pushed_authorization_requests \
         WHERE expires_at <= now() \
         ORDER BY expires_at \
         LIMIT $1 \
         FOR UPDATE SKIP LOCKED) \
     DELETE FROM pushed_authorization_requests AS r \
     USING batch WHERE r.reference_value_hash = batch.reference_value_hash";
