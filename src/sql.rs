//! All of the store's SQL, in one place; the schema itself lives in `migrations/`.
//!
//! Static strings only: values are always bound parameters. `examples/loadgen.rs` includes
//! this file to run the very same statements without the store layer.

// Expiry is checked against the database clock (`now()`), not a time bound from the
// application: every server instance then agrees on what "expired" means even when their
// clocks drift, and the statements need one parameter fewer. `now()` is the start of the
// statement's own (implicit) transaction, and timestamptz comparisons do not depend on the
// session time zone.

/// Inserts a request; `ON CONFLICT DO NOTHING` turns a duplicate into "0 rows" instead of an
/// error, so the first request is never touched and the connection sees no failed statement.
pub(crate) const INSERT: &str = "INSERT INTO pushed_authorization_requests \
     (reference_value_hash, expires_at, parameters) VALUES ($1, $2, $3) \
     ON CONFLICT (reference_value_hash) DO NOTHING";

/// Reads a live request.
pub(crate) const SELECT_LIVE: &str = "SELECT reference_value_hash, expires_at, parameters \
     FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 AND expires_at > now()";

/// Consumes a request in one atomic statement. An expired row is deleted too (it is garbage),
/// but reported as not live so that it is never handed out. Concurrent callers serialise on
/// the row lock: exactly one sees the row in RETURNING.
pub(crate) const CONSUME: &str = "DELETE FROM pushed_authorization_requests \
     WHERE reference_value_hash = $1 \
     RETURNING reference_value_hash, expires_at, parameters, expires_at > now() AS live";

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
