//! Metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade (cargo feature
//! `metrics`): the application installs the recorder or exporter it wants
//! (`metrics-exporter-prometheus`, an OpenTelemetry bridge, ...), as it picks the `tracing`
//! subscriber for logs. With no recorder installed, recording does nothing.
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `db.client.operation.duration` | histogram | seconds | `db.system.name`, `db.operation.name`, `db.collection.name`, `error.type` (on failure only) |
//! | `par_store.requests.stored` | counter | requests | `db.system.name` |
//! | `par_store.requests.consumed` | counter | requests | `db.system.name` |
//! | `par_store.requests.already_consumed` | counter | requests | `db.system.name` |
//! | `par_store.requests.expired` | counter | requests | `db.system.name` |
//! | `par_store.requests.not_found` | counter | requests | `db.system.name` |
//! | `par_store.requests.wrong_client` | counter | requests | `db.system.name` |
//! | `par_store.requests.cleaned` | counter | requests (rows) | none |
//! | `db.client.connection.count` | gauge | connections | `db.client.connection.pool.name` = `par_store`, `db.client.connection.state` = `used` or `idle` |
//! | `db.client.connection.pending_requests` | gauge | callers | `db.client.connection.pool.name` = `par_store` |
//!
//! - **`db.client.operation.duration`** is OpenTelemetry's database client metric: one
//!   sample per store operation (`store`, `store_or_replace`, `get_by_hash`,
//!   `consume_by_hash`, `consume_for_client`, `consume_in_session`,
//!   `delete_by_client_id`, and with the
//!   `oauth-as` feature `take_pushed_authorization_request`), from the call to its result,
//!   input checks included. `db.system.name` is `postgresql` for
//!   [`PostgresStore`](crate::PostgresStore) and `memory` for
//!   [`MemoryStore`](crate::MemoryStore) (not an OpenTelemetry value: there is no database);
//!   `db.collection.name` is `pushed_authorization_requests`. On failure `error.type` is a
//!   short, stable name of the [`StoreError`](crate::StoreError) kind: `duplicate`,
//!   `invalid_input`, `unavailable`, `timeout`, `database_error`, `no_runtime`,
//!   `protection_*`, ... (the same names as the `outcome` of the `par_store.operation` span).
//!   A [`ProtectedStore`](crate::ProtectedStore) records through the store it wraps.
//! - **A store registers its metrics with the recorder at its first operation** (the
//!   durations of successful operations and the request counters; a failure's duration is
//!   looked up each time): install the recorder before the store serves. Clones share the
//!   registration; a store built later registers with the recorder of its own first
//!   operation.
//! - **The request counters** count what the store did: `stored` for each successful `store`
//!   and `store_or_replace`; the others for each outcome of a consumption
//!   ([`Consumption`]) by `consume_for_client`, `consume_in_session` (a reload
//!   within a [`ConsumePolicy::ReloadWithin`](crate::ConsumePolicy::ReloadWithin) window
//!   counts as `consumed` again), `consume_by_hash` (which sees the same outcomes, though it answers only the request) and
//!   oauth-as's take. `already_consumed` is a reused `request_uri`: worth an alert.
//! - **`par_store.requests.cleaned`** adds the rows removed by every cleanup pass:
//!   [`CleanupJob`](crate::CleanupJob) and `delete_expired` / `delete_expired_as_of`.
//! - **The connection gauges** describe the store's own pool (not a `PgPool` the application
//!   passed in, whose figures sqlx keeps): connections checked out for an operation (`used`),
//!   open and idle (`idle`), and callers waiting for one. They are sampled when a connection
//!   is checked out and when an operation gives it back, not continuously. Each pool
//!   registers them with the recorder at its first operation: install the recorder before
//!   the store serves.
//!
//! ```
//! use par_store::chrono::{Duration, Utc};
//! use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), par_store::StoreError> {
//! // The application installs a recorder once, e.g.
//! // metrics_exporter_prometheus::PrometheusBuilder::new().install()?;
//! let store = MemoryStore::new();
//! let request = PushedAuthorizationRequest::new("hash-1", Utc::now() + Duration::seconds(600), "p");
//! store.store(&request).await?; // db.client.operation.duration, par_store.requests.stored
//! assert_eq!(par_store::metrics::REQUESTS_STORED, "par_store.requests.stored");
//! # Ok(())
//! # }
//! ```

use crate::consumption::Consumption;
use crate::operation::Operation;
use std::time::Duration;

/// The operation duration histogram, in seconds.
///
/// ```
/// assert_eq!(par_store::metrics::OPERATION_DURATION, "db.client.operation.duration");
/// ```
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// Requests stored by `store` and `store_or_replace`.
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_STORED, "par_store.requests.stored");
/// ```
pub const REQUESTS_STORED: &str = "par_store.requests.stored";
/// Consumptions that handed a request out ([`Consumption::Consumed`]).
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_CONSUMED, "par_store.requests.consumed");
/// ```
pub const REQUESTS_CONSUMED: &str = "par_store.requests.consumed";
/// Consumptions of a request consumed before ([`Consumption::AlreadyConsumed`]).
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_ALREADY_CONSUMED, "par_store.requests.already_consumed");
/// ```
pub const REQUESTS_ALREADY_CONSUMED: &str = "par_store.requests.already_consumed";
/// Consumptions of an expired request ([`Consumption::Expired`]).
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_EXPIRED, "par_store.requests.expired");
/// ```
pub const REQUESTS_EXPIRED: &str = "par_store.requests.expired";
/// Consumptions of an unknown request ([`Consumption::NotFound`]).
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_NOT_FOUND, "par_store.requests.not_found");
/// ```
pub const REQUESTS_NOT_FOUND: &str = "par_store.requests.not_found";
/// Consumptions refused to another client ([`Consumption::WrongClient`]).
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_WRONG_CLIENT, "par_store.requests.wrong_client");
/// ```
pub const REQUESTS_WRONG_CLIENT: &str = "par_store.requests.wrong_client";
/// Rows removed by cleanup passes.
///
/// ```
/// assert_eq!(par_store::metrics::REQUESTS_CLEANED, "par_store.requests.cleaned");
/// ```
pub const REQUESTS_CLEANED: &str = "par_store.requests.cleaned";
/// Open connections of the store's own pool, by `db.client.connection.state`.
///
/// ```
/// assert_eq!(par_store::metrics::CONNECTION_COUNT, "db.client.connection.count");
/// ```
pub const CONNECTION_COUNT: &str = "db.client.connection.count";
/// Callers waiting for a connection of the store's own pool.
///
/// ```
/// assert_eq!(par_store::metrics::CONNECTION_PENDING_REQUESTS, "db.client.connection.pending_requests");
/// ```
pub const CONNECTION_PENDING_REQUESTS: &str = "db.client.connection.pending_requests";

const COLLECTION: &str = "pushed_authorization_requests";
const POOL_NAME: &str = "par_store";

/// `db.system.name` for a backend's `NAME`.
fn system_name(backend: &'static str) -> &'static str {
    match backend {
        "postgres" => "postgresql",
        other => other,
    }
}

/// The metrics of one store (and its clones), registered with the recorder at the store's
/// first operation: registering looks the name and its labels up in the recorder's
/// registry, which cost more client CPU than the rest of an operation's metrics together
/// (callgrind, `bench/run.sh`'s lifecycle). Failures, with their `error.type`, are looked up
/// each time: they are rare, and their labels vary.
#[derive(Default)]
pub(crate) struct StoreMetrics {
    handles: std::sync::OnceLock<Handles>,
}

/// The handles of a store's successful operations and request counters.
struct Handles {
    /// One `db.client.operation.duration` histogram per operation, in `Operation::ALL`'s
    /// order.
    durations: Vec<::metrics::Histogram>,
    stored: ::metrics::Counter,
    consumed: ::metrics::Counter,
    already_consumed: ::metrics::Counter,
    expired: ::metrics::Counter,
    not_found: ::metrics::Counter,
    wrong_client: ::metrics::Counter,
}

impl Handles {
    fn register(backend: &'static str) -> Self {
        let system = system_name(backend);
        let counter = |name: &'static str| ::metrics::counter!(name, "db.system.name" => system);
        Handles {
            durations: Operation::ALL
                .iter()
                .map(|operation| {
                    ::metrics::histogram!(
                        OPERATION_DURATION,
                        "db.system.name" => system,
                        "db.operation.name" => operation.as_str(),
                        "db.collection.name" => COLLECTION,
                    )
                })
                .collect(),
            stored: counter(REQUESTS_STORED),
            consumed: counter(REQUESTS_CONSUMED),
            already_consumed: counter(REQUESTS_ALREADY_CONSUMED),
            expired: counter(REQUESTS_EXPIRED),
            not_found: counter(REQUESTS_NOT_FOUND),
            wrong_client: counter(REQUESTS_WRONG_CLIENT),
        }
    }
}

impl StoreMetrics {
    fn handles(&self, backend: &'static str) -> &Handles {
        self.handles.get_or_init(|| Handles::register(backend))
    }

    /// One `db.client.operation.duration` sample.
    pub(crate) fn record_operation(
        &self,
        operation: Operation,
        backend: &'static str,
        elapsed: Duration,
        error_type: Option<&'static str>,
    ) {
        let seconds = elapsed.as_secs_f64();
        let Some(error_type) = error_type else {
            if let Some(histogram) = self.handles(backend).durations.get(operation as usize) {
                histogram.record(seconds);
            }
            return;
        };
        ::metrics::histogram!(
            OPERATION_DURATION,
            "db.system.name" => system_name(backend),
            "db.operation.name" => operation.as_str(),
            "db.collection.name" => COLLECTION,
            "error.type" => error_type,
        )
        .record(seconds);
    }

    /// A request stored.
    pub(crate) fn record_stored(&self, backend: &'static str) {
        self.handles(backend).stored.increment(1);
    }

    /// The outcome of one consumption.
    pub(crate) fn record_consumption(&self, backend: &'static str, outcome: &Consumption) {
        let handles = self.handles(backend);
        let counter = match outcome {
            Consumption::Consumed(_) => &handles.consumed,
            Consumption::AlreadyConsumed { .. } => &handles.already_consumed,
            Consumption::Expired => &handles.expired,
            Consumption::NotFound => &handles.not_found,
            Consumption::WrongClient => &handles.wrong_client,
        };
        counter.increment(1);
    }
}

/// Rows removed by one cleanup pass.
pub(crate) fn record_cleaned(rows: u64) {
    if rows > 0 {
        ::metrics::counter!(REQUESTS_CLEANED).increment(rows);
    }
}

/// The connection gauges of one pool of the store's own, registered with the recorder once,
/// at the pool's first sample: registering looks the key and its labels up in the
/// recorder's registry, which on every checkout and return cost more client CPU than the
/// rest of the metrics together (callgrind, `bench/run.sh`'s lifecycle).
pub(crate) struct PoolGauges {
    used: ::metrics::Gauge,
    idle: ::metrics::Gauge,
    waiting: ::metrics::Gauge,
}

impl PoolGauges {
    /// The gauges of the recorder installed now (globally, or for this thread).
    pub(crate) fn register() -> Self {
        PoolGauges {
            used: ::metrics::gauge!(
                CONNECTION_COUNT,
                "db.client.connection.pool.name" => POOL_NAME,
                "db.client.connection.state" => "used",
            ),
            idle: ::metrics::gauge!(
                CONNECTION_COUNT,
                "db.client.connection.pool.name" => POOL_NAME,
                "db.client.connection.state" => "idle",
            ),
            waiting: ::metrics::gauge!(
                CONNECTION_PENDING_REQUESTS,
                "db.client.connection.pool.name" => POOL_NAME,
            ),
        }
    }

    /// The pool as `deadpool` sees it now.
    pub(crate) fn record(&self, status: deadpool::Status) {
        let used = status.size.saturating_sub(status.available);
        // Gauges take f64: pool sizes are far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let (used, idle, waiting) = (used as f64, status.available as f64, status.waiting as f64);
        self.used.set(used);
        self.idle.set(idle);
        self.waiting.set(waiting);
    }
}
