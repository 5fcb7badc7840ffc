//! The PostgreSQL store: one static SQL statement per operation, run on the caller's pool.

use crate::backend::{impl_store_for_backend, Backend};
use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::connections::Connections;
use crate::error::{InvalidDatabaseUrl, StoreError};
use crate::model::PushedAuthorizationRequest;
use crate::sql::{CONSUME, DELETE_EXPIRED_BATCH, INSERT, SELECT_LIVE};
use crate::validate::DEFAULT_MAX_PARAMETERS_LEN;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The table in which par-store records its applied migrations, apart from the host
/// application's `_sqlx_migrations`. `sqlx.toml` names the same table for sqlx-cli.
pub const MIGRATIONS_TABLE: &str = "_par_store_migrations";

/// Pushed authorization requests in PostgreSQL, table `pushed_authorization_requests`.
///
/// Cheap to clone (the pool is reference counted). Every operation is one statement,
/// prepared once per connection and run without an explicit transaction.
///
/// ```no_run
/// use std::sync::Arc;
/// use par_store::{sqlx::PgPool, PostgresStore, PushedAuthorizationRequestStore};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPool::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
/// let store = PostgresStore::new(pool);
/// store.migrate().await?;
/// let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    connections: Arc<Connections>,
    max_parameters_len: usize,
    operation_timeout: Option<Duration>,
    /// Kept connections idle at least this long are pinged before use (`None`: never).
    ping_idle_after: Option<Duration>,
    failures: FailureSignal,
}

/// Default for [`PostgresStoreOptions::ping_idle_after`], and how long the store keeps an
/// idle connection checked out before handing it back to the pool.
const DEFAULT_PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Default bound on one store operation, connection wait included: 10 s.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's own Debug would show connection options; keep to what is useful.
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.pool().size())
            .field("connections", &self.connections)
            .field("max_parameters_len", &self.max_parameters_len)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Creates a store on an existing pool. Run [`migrate`](Self::migrate) (or sqlx-cli) once
    /// before use.
    ///
    /// Between operations the store keeps the connections of a busy period checked out of
    /// the pool and reuses them directly, which saves the round trip sqlx's pool spends
    /// pinging every connection it takes back. A connection idle for a second goes back to
    /// the pool, so the pool's limits, idle timeout and `close()` keep working; call `new`
    /// inside a tokio runtime (which runs the task that hands idle connections back), or
    /// every operation goes through the pool.
    pub fn new(pool: PgPool) -> Self {
        PostgresStore::on(pool, Some(DEFAULT_PING_IDLE_AFTER), FailureSignal::new())
    }

    fn on(pool: PgPool, ping_idle_after: Option<Duration>, failures: FailureSignal) -> Self {
        let keep_idle = ping_idle_after.unwrap_or(DEFAULT_PING_IDLE_AFTER);
        PostgresStore {
            connections: Connections::new(pool, keep_idle),
            max_parameters_len: DEFAULT_MAX_PARAMETERS_LEN,
            operation_timeout: Some(DEFAULT_OPERATION_TIMEOUT),
            ping_idle_after,
            failures,
        }
    }

    /// Connects with the recommended pool settings ([`PostgresStoreOptions::default`]).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
    /// let store = par_store::PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        PostgresStoreOptions::new().connect(url).await
    }

    /// Bounds each operation (waiting for a connection included) to `timeout`; past it the
    /// operation fails with [`StoreError::Timeout`]. `None` leaves only the pool's acquire
    /// timeout and the server's `statement_timeout`. Default: [`DEFAULT_OPERATION_TIMEOUT`].
    ///
    /// This is a client-side backstop (for a network that swallows packets): a statement
    /// already sent cannot be taken back, so a timed-out `consume_by_hash` may still consume
    /// the request on the server (see
    /// [docs/failure-behaviour.md](https://github.com/par-store/par-store/blob/main/docs/failure-behaviour.md#the-one-inherent-window)). Keep it above the
    /// server's `statement_timeout`, which cancels the statement itself.
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Runs one database round trip on a connection of the store, under the operation
    /// timeout.
    async fn round_trip<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        let attempt = async {
            // Just after a connection failed, its siblings probably died with it: check
            // every kept connection before use, not only those idle for a while.
            let verify_after = match self.ping_idle_after {
                None => Duration::MAX,
                Some(idle) if self.failures.within(idle) => Duration::ZERO,
                Some(idle) => idle,
            };
            let mut conn = self.connections.checkout(verify_after).await?;
            let outcome = run(&mut conn).await;
            self.connections.release(conn, &outcome);
            outcome
        };
        let result = match self.operation_timeout {
            None => attempt.await.map_err(StoreError::from),
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result.map_err(StoreError::from),
                Err(elapsed) => Err(StoreError::Timeout {
                    source: Box::new(elapsed),
                }),
            },
        };
        if let Err(StoreError::Unavailable { .. }) = result {
            self.failures.record();
        }
        result
    }

    /// Sets the largest `parameters` accepted by [`store`](crate::PushedAuthorizationRequestStore::store),
    /// in bytes (default 64 KiB). Larger requests fail with [`StoreError::InvalidInput`].
    ///
    /// ```no_run
    /// # use par_store::{sqlx::PgPool, PostgresStore};
    /// # fn f(pool: PgPool) {
    /// let store = PostgresStore::new(pool).max_parameters_len(16 * 1024);
    /// # }
    /// ```
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn max_parameters_len(mut self, bytes: usize) -> Self {
        self.max_parameters_len = bytes;
        self
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &PgPool {
        self.connections.pool()
    }

    /// The store's migrations (embedded from `migrations/`), recording their history in
    /// [`MIGRATIONS_TABLE`] so that they coexist with the host application's own.
    ///
    /// ```
    /// let migrator = par_store::PostgresStore::migrator();
    /// assert!(migrator.iter().count() >= 1);
    /// ```
    pub fn migrator() -> Migrator {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator
    }

    /// Applies the store's migrations. Idempotent, and safe to call from many instances at
    /// once (it takes an advisory lock).
    ///
    /// Converges with sqlx-cli in any order: run with par-store's `sqlx.toml` it shares this
    /// history table; run without it, it records par-store's migrations in the host's
    /// `_sqlx_migrations`, which `migrate()` recognises (by version and checksum) instead of
    /// applying them twice, and which it then keeps up to date with the migrations it
    /// applies itself. Runs on one connection of its own, with the migrator's
    /// "already exists, skipping" notices switched off.
    ///
    /// Fails with [`StoreError::Migration`] when a migration cannot be applied (e.g. the role
    /// may not create tables) or the history does not match these migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::run(self.pool()).await
    }

    /// Removes every expired request, in batches of the default size (one statement per
    /// batch, until a batch comes back short), and returns how many were removed.
    ///
    /// Safe to run from many instances at once; meant for a cron-style call. For a
    /// background task, see [`CleanupJob`](crate::CleanupJob).
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        delete_expired_in_batches(self, DEFAULT_BATCH_SIZE).await
    }
}

/// When a connection of one pool last failed, shared by the store and the `before_acquire`
/// check of the pool [`PostgresStoreOptions`] built for it.
///
/// One dead connection usually means its siblings died with it (a server restart, a network
/// cut), yet those idle for less than `ping_idle_after` are handed out unchecked and would
/// each fail a request. So for `ping_idle_after` after a failure every connection is pinged
/// before use. That catches every dead one: a connection idle for less than that was released
/// (alive) before the outage began, so less than that before the first failure.
#[derive(Clone, Debug)]
struct FailureSignal {
    origin: Instant,
    /// Milliseconds from `origin` to the latest failure, plus one; 0 while none happened.
    latest: Arc<AtomicU64>,
}

impl FailureSignal {
    fn new() -> Self {
        FailureSignal {
            origin: Instant::now(),
            latest: Arc::new(AtomicU64::new(0)),
        }
    }

    fn millis_since_origin(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn record(&self) {
        self.latest
            .store(self.millis_since_origin(), Ordering::Relaxed);
    }

    fn within(&self, window: Duration) -> bool {
        let latest = self.latest.load(Ordering::Relaxed);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        latest != 0 && self.millis_since_origin().saturating_sub(latest) <= window
    }
}

type Row = (String, DateTime<Utc>, String);

fn into_request((reference_value_hash, expires_at, parameters): Row) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest {
        reference_value_hash,
        expires_at,
        parameters,
    }
}

impl Backend for PostgresStore {
    const NAME: &'static str = "postgres";

    fn max_parameters_len(&self) -> usize {
        self.max_parameters_len
    }

    async fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .round_trip(async |conn| {
                sqlx::query(INSERT)
                    .bind(&request.reference_value_hash)
                    .bind(expires_at)
                    .bind(&request.parameters)
                    .execute(conn)
                    .await
            })
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    async fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let row: Option<Row> = self
            .round_trip(async |conn| {
                sqlx::query_as(SELECT_LIVE)
                    .bind(reference_value_hash)
                    .fetch_optional(conn)
                    .await
            })
            .await?;
        Ok(row.map(into_request))
    }

    async fn delete_returning_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let row: Option<(String, DateTime<Utc>, String, bool)> = self
            .round_trip(async |conn| {
                sqlx::query_as(CONSUME)
                    .bind(reference_value_hash)
                    .fetch_optional(conn)
                    .await
            })
            .await?;
        Ok(row.and_then(|(hash, expires_at, parameters, live)| {
            live.then(|| into_request((hash, expires_at, parameters)))
        }))
    }
}

impl_store_for_backend!(PostgresStore);

#[async_trait::async_trait]
impl ExpiredRequestCleaner for PostgresStore {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        let deleted = self
            .round_trip(async |conn| {
                sqlx::query(DELETE_EXPIRED_BATCH)
                    .bind(i64::from(batch_size))
                    .execute(conn)
                    .await
            })
            .await?
            .rows_affected();
        Ok(deleted)
    }
}

/// Pool and timeout settings for [`PostgresStore::connect`], with defaults chosen for an
/// authorization server's PAR traffic (short statements, many instances).
///
/// | setting | default | why |
/// |---|---|---|
/// | [`max_connections`](Self::max_connections) | 10 | sqlx's default; size it to your instance's concurrency |
/// | [`acquire_timeout`](Self::acquire_timeout) | 3 s | fail fast with [`StoreError::Unavailable`] when the database is unreachable, rather than sqlx's 30 s |
/// | [`statement_timeout`](Self::statement_timeout) | 5 s | the server cancels a statement stuck on locks or I/O ([`StoreError::Timeout`]) |
/// | [`operation_timeout`](Self::operation_timeout) | 10 s | bounds a whole operation even when the network swallows packets |
/// | [`ping_idle_after`](Self::ping_idle_after) | 1 s | a connection idle that long is pinged before use, so connections killed during an outage are replaced instead of failing a request; busy connections skip the extra round trip, except for that long after a connection failed |
/// | [`max_parameters_len`](Self::max_parameters_len) | 64 KiB | see [`PostgresStore::max_parameters_len`] |
///
/// ```no_run
/// use std::time::Duration;
/// use par_store::PostgresStoreOptions;
///
/// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
/// let store = PostgresStoreOptions::new()
///     .max_connections(32)
///     .acquire_timeout(Duration::from_secs(2))
///     .connect("postgres://postgres:postgres@127.0.0.1:5432/postgres")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "options do nothing until connect() is called on them"]
pub struct PostgresStoreOptions {
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    ping_idle_after: Option<Duration>,
    max_parameters_len: usize,
}

impl Default for PostgresStoreOptions {
    fn default() -> Self {
        PostgresStoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Some(Duration::from_secs(5)),
            operation_timeout: Some(DEFAULT_OPERATION_TIMEOUT),
            ping_idle_after: Some(DEFAULT_PING_IDLE_AFTER),
            max_parameters_len: DEFAULT_MAX_PARAMETERS_LEN,
        }
    }
}

impl PostgresStoreOptions {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Largest number of connections in the pool.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long an operation waits for a connection before failing with
    /// [`StoreError::Unavailable`].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The server-side `statement_timeout` of every connection (`None`: the server's own).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// See [`PostgresStore::operation_timeout`].
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Ping a connection before use when it has been idle at least this long
    /// (`Some(Duration::ZERO)`: always, like sqlx's `test_before_acquire`; `None`: never).
    ///
    /// For the same time after an operation of a store built by these options failed with
    /// [`StoreError::Unavailable`], every connection is pinged before use: the other pooled
    /// connections probably died with the one that failed, and are replaced rather than each
    /// failing a request.
    pub fn ping_idle_after(mut self, idle: Option<Duration>) -> Self {
        self.ping_idle_after = idle;
        self
    }

    /// See [`PostgresStore::max_parameters_len`].
    pub fn max_parameters_len(mut self, bytes: usize) -> Self {
        self.max_parameters_len = bytes;
        self
    }

    /// The pool settings, for building a pool yourself.
    pub fn pool_options(&self) -> PgPoolOptions {
        // No store reports failures to a pool built elsewhere: only the idle-time check.
        self.pool_options_reporting_to(FailureSignal::new())
    }

    fn pool_options_reporting_to(&self, failures: FailureSignal) -> PgPoolOptions {
        let options = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // Replaced by the idle-time check below: a ping on every acquire is one more
            // round trip per operation.
            .test_before_acquire(false);
        match self.ping_idle_after {
            None => options,
            Some(threshold) => options.before_acquire(move |conn, meta| {
                let recent_failure = failures.within(threshold);
                Box::pin(async move {
                    if meta.idle_for >= threshold || recent_failure {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            }),
        }
    }

    /// Adds the per-connection settings (the statement timeout) to `options`.
    pub fn apply_to(&self, options: PgConnectOptions) -> PgConnectOptions {
        match self.statement_timeout {
            Some(timeout) => options.options([("statement_timeout", timeout.as_millis())]),
            None => options,
        }
    }

    /// Connects to `url` and returns a store on the new pool. Fails with
    /// [`StoreError::InvalidDatabaseUrl`] for a malformed URL and [`StoreError::Unavailable`] when
    /// the server cannot be reached.
    pub async fn connect(&self, url: &str) -> Result<PostgresStore, StoreError> {
        let options = InvalidDatabaseUrl::parse(url)?;
        self.connect_with(options).await
    }

    /// Like [`connect`](Self::connect), from parsed connect options.
    pub async fn connect_with(
        &self,
        options: PgConnectOptions,
    ) -> Result<PostgresStore, StoreError> {
        let failures = FailureSignal::new();
        let pool = self
            .pool_options_reporting_to(failures.clone())
            .connect_with(self.apply_to(options))
            .await?;
        Ok(self.store_on(pool, failures))
    }

    /// Like [`connect_with`](Self::connect_with), but connects on first use.
    pub fn connect_lazy_with(&self, options: PgConnectOptions) -> PostgresStore {
        let failures = FailureSignal::new();
        let pool = self
            .pool_options_reporting_to(failures.clone())
            .connect_lazy_with(self.apply_to(options));
        self.store_on(pool, failures)
    }

    fn store_on(&self, pool: PgPool, failures: FailureSignal) -> PostgresStore {
        PostgresStore::on(pool, self.ping_idle_after, failures)
            .max_parameters_len(self.max_parameters_len)
            .operation_timeout(self.operation_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_signal_holds_for_its_window_only() {
        let failures = FailureSignal::new();
        assert!(!failures.within(Duration::from_secs(1)), "no failure yet");
        failures.clone().record();
        assert!(failures.within(Duration::from_secs(1)), "clones share it");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!failures.within(Duration::from_millis(10)));
        assert!(failures.within(Duration::from_secs(1)));
    }
}
