//! One `tracing` span per store operation, with the fields an operator needs and no secrets.

use crate::error::{ProtectionErrorKind, StoreError};
use crate::model::HashPrefix;
use crate::operation::Operation;
use std::future::Future;
use std::time::Instant;
use tracing::{field, Instrument};

/// The metrics of one store (the `metrics` feature), shared by its clones.
#[cfg(feature = "metrics")]
pub(crate) use crate::metrics::StoreMetrics;

/// Without the `metrics` feature, nothing is recorded.
#[cfg(not(feature = "metrics"))]
#[derive(Default)]
pub(crate) struct StoreMetrics;

/// A short, stable name for an error, used as the span's `outcome`.
pub(crate) fn error_kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::Duplicate => "duplicate",
        StoreError::InvalidInput { .. } => "invalid_input",
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Timeout { .. } => "timeout",
        StoreError::Migration { .. } => "migration_failed",
        StoreError::MigrationNeedsDirectConnection => "migration_needs_direct_connection",
        StoreError::IncompatibleSchema { .. } => "incompatible_schema",
        StoreError::InvalidDatabaseUrl(_) => "invalid_database_url",
        StoreError::Database { .. } => "database_error",
        StoreError::NoRuntime => "no_runtime",
        StoreError::Protection { kind, .. } => match kind {
            ProtectionErrorKind::UnknownKey { .. } => "protection_unknown_key",
            ProtectionErrorKind::Tampered => "protection_tampered",
            ProtectionErrorKind::MalformedEnvelope => "protection_malformed_envelope",
            ProtectionErrorKind::RandomUnavailable => "protection_random_unavailable",
        },
    }
}

/// Runs one store operation inside a `par_store.operation` span that records
/// `operation`, `backend`, a short `hash` prefix (never the full hash) when the operation has
/// one, `outcome` and `duration_us`. Parameters are never recorded.
///
/// Failures that point at the database (not at the caller's input) are logged at warn.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) async fn traced<T, F>(
    metrics: &StoreMetrics,
    operation: Operation,
    backend: &'static str,
    hash: Option<&str>,
    outcome: fn(&T) -> &'static str,
    run: F,
) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let span = tracing::debug_span!(
        "par_store.operation",
        operation = operation.as_str(),
        backend,
        hash = field::Empty,
        outcome = field::Empty,
        duration_us = field::Empty,
    );
    // A span no subscriber wants (the common case in production, at `info`) is neither
    // entered on each poll nor given its fields: with `tracing`'s `log` feature (which sqlx
    // turns on) each of those asks `log` first, about a tenth of the store's own client CPU
    // per operation (callgrind, `bench/run.sh`'s lifecycle).
    let enabled = !span.is_disabled();
    if let Some(hash) = hash.filter(|_| enabled) {
        span.record("hash", field::display(HashPrefix(hash)));
    }
    let started = Instant::now();
    let result = if enabled {
        run.instrument(span.clone()).await
    } else {
        run.await
    };
    let elapsed = started.elapsed();
    let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let outcome = match &result {
        Ok(value) => outcome(value),
        Err(err) => error_kind(err),
    };
    #[cfg(feature = "metrics")]
    metrics.record_operation(
        operation,
        backend,
        elapsed,
        result.as_ref().err().map(error_kind),
    );
    if enabled {
        span.record("outcome", outcome);
        span.record("duration_us", duration_us);
    }
    match &result {
        Err(err @ (StoreError::Duplicate | StoreError::InvalidInput { .. })) => {
            tracing::debug!(parent: &span, error = %err, "pushed authorization request refused");
        }
        Err(err) => {
            tracing::warn!(parent: &span, error = %err, "pushed authorization request store failed");
        }
        Ok(_) => tracing::trace!(parent: &span, outcome, duration_us, "done"),
    }
    result
}

/// Counts a stored request (the `metrics` feature's `par_store.requests.stored`).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn count_stored(metrics: &StoreMetrics, backend: &'static str) {
    #[cfg(feature = "metrics")]
    metrics.record_stored(backend);
}

/// Counts the outcome of a consumption (the `metrics` feature's `par_store.requests.*`).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn count_consumption(
    metrics: &StoreMetrics,
    backend: &'static str,
    outcome: &crate::consumption::Consumption,
) {
    #[cfg(feature = "metrics")]
    metrics.record_consumption(backend, outcome);
}

/// Outcome of `store` on success.
pub(crate) fn stored(_: &()) -> &'static str {
    "stored"
}

/// Outcome of a deletion on success.
pub(crate) fn removed(rows: &u64) -> &'static str {
    if *rows > 0 {
        "removed"
    } else {
        "none"
    }
}

/// Outcome of a look-up on success.
pub(crate) fn found_or_not<T>(value: &Option<T>) -> &'static str {
    if value.is_some() {
        "found"
    } else {
        "not_found"
    }
}

/// Outcome of `get_for_client` on success.
pub(crate) fn lookup(value: &crate::lookup::Lookup) -> &'static str {
    value.as_str()
}

/// Outcome of `consume_for_client`, `consume_in_session` and oauth-as's take on success.
pub(crate) fn consumption(value: &crate::consumption::Consumption) -> &'static str {
    value.as_str()
}
