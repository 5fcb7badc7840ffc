//! The PostgreSQL store: one static SQL statement per operation.

use crate::backend::{Backend, Inserted, Reload};
use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::consume_policy::ConsumePolicy;
use crate::consumption::Consumption;
use crate::error::StoreError;
use crate::execution::{Outcome, Protocol, Retry, Returns};
use crate::hosts::{parse_url, TargetSessionAttrs, Targets};
use crate::lookup::Lookup;
use crate::migrations;
use crate::model::PushedAuthorizationRequest;
use crate::pool::{Connections, OwnedSettings};
use crate::sql::{
    CITUS_CONSUME, CITUS_DELETE_EXPIRED_BATCH, CITUS_DISTRIBUTE, CITUS_DISTRIBUTE_FUNCTIONS,
    CITUS_FUNCTIONS_DELEGATED, CITUS_INSERT, CITUS_INSTALLED, CONSUME, DELETE_BY_CLIENT_ID,
    DELETE_EXPIRED_BATCH, INSERT, LOOK_UP, RELOAD, SELECT_LIVE, UPSERT,
};
use crate::telemetry::StoreMetrics;
use crate::validate::{DEFAULT_MAX_PARAMETERS_LEN, DEFAULT_MAX_REQUEST_LIFETIME};
use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::query::Query;
use sqlx::{Decode, FromRow, PgPool, Postgres, Type};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pushed authorization requests in PostgreSQL, table `pushed_authorization_requests`.
///
/// Cheap to clone (clones share the connections). Every operation is one statement, run
/// without an explicit transaction (except in [pooler mode](PostgresStoreOptions::pooler_mode)).
///
/// Two ways to build one, which differ in who owns the connections (see
/// `docs/postgresql.md`):
/// - [`PostgresStore::connect`] / [`PostgresStoreOptions`]: the store's own pool, fair under
///   overload and one round trip per operation. Recommended.
/// - [`PostgresStore::new`] / [`PostgresStoreOptions::with_pool`]: on your `PgPool`, shared with the rest of your application, with
///   sqlx's pool behaviour (two more round trips per operation with sqlx's defaults: a ping
///   before use, `test_before_acquire`, and one when the connection comes back; one more
///   with `test_before_acquire(false)`).
///
/// Every setting (timeouts, the lifetime bound, consumed markers...) is made on
/// [`PostgresStoreOptions`], before the store is built; a store's settings do not change.
///
/// ```no_run
/// use std::sync::Arc;
/// use par_store::{PostgresStore, PushedAuthorizationRequestStore};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
/// store.migrate().await?;
/// let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    connections: Connections,
    protocol: Arc<Protocol>,
    max_parameters_len: usize,
    max_request_lifetime: Duration,
    operation_timeout: Option<Duration>,
    /// Set once Citus refused the plain cleanup batch: the table is distributed, and the
    /// cleanup runs per shard (`src/sql.rs`). Shared by clones.
    citus_cleanup: Arc<AtomicBool>,
    /// How a store and a consumption are sent ([`Route`]), found at the store's first
    /// operation and kept. Shared by clones.
    route: Arc<AtomicU8>,
    migration_lock_timeout: Option<Duration>,
    consumed_markers: bool,
    consume_policy: ConsumePolicy,
    /// Set by [`close`](PostgresStore::close), shared by the clones.
    closed: Arc<AtomicBool>,
    /// Registered at the first operation, shared by the clones.
    metrics: Arc<StoreMetrics>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's own Debug would show connection options; keep to what is useful.
        f.debug_struct("PostgresStore")
            .field("connections", &self.connections)
            .field(
                "pooler_mode",
                &matches!(*self.protocol, Protocol::Pooler { .. }),
            )
            .field("max_parameters_len", &self.max_parameters_len)
            .field("max_request_lifetime", &self.max_request_lifetime)
            .field("operation_timeout", &self.operation_timeout)
            .field("migration_lock_timeout", &self.migration_lock_timeout)
            .field("consumed_markers", &self.consumed_markers)
            .field("consume_policy", &self.consume_policy)
            .field("closed", &self.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The table in which the store's migrations record their history,
    /// `_par_store_migrations`: not sqlx's default `_sqlx_migrations`, so that the store's
    /// migrations and the host application's own never mix. sqlx-cli 0.9 uses it when given
    /// the crate's `sqlx.toml` (`--config`).
    ///
    /// ```
    /// assert_eq!(par_store::PostgresStore::MIGRATIONS_TABLE, "_par_store_migrations");
    /// ```
    pub const MIGRATIONS_TABLE: &'static str = migrations::MIGRATIONS_TABLE;

    /// Creates a store on an existing pool, which it shares with whoever else uses it. Run
    /// [`migrate`](Self::migrate) (or sqlx-cli) once before use.
    ///
    /// The store takes a connection from the pool for each operation and gives it back
    /// right after, so the pool's limits, fairness, lifetimes and `PgPool::close` apply as they
    /// do to your own queries. sqlx's pool pings every connection it takes back, and by
    /// default (`test_before_acquire`) before handing it out: two more round trips per
    /// operation than a store built by [`connect`](Self::connect), one more with
    /// `test_before_acquire(false)`.
    ///
    /// sqlx's pool cannot follow a primary: sqlx 0.9 reads one host per URL (a libpq host
    /// list `h1:5432,h2:5432` is "invalid port number") and ignores `target_session_attrs`,
    /// so after a failover its connections keep reaching the demoted server, whose
    /// read-only refusals (SQLSTATE 25006) the store reports as
    /// [`StoreError::Unavailable`] until the address itself moves (a proxy, a DNS name).
    /// The store's own pool ([`PostgresStoreOptions::connect`] with a host list and
    /// `target_session_attrs=read-write`) does follow it.
    ///
    /// ```no_run
    /// use par_store::{sqlx::PgPool, PostgresStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = PgPool::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// let store = PostgresStore::new(pool.clone());
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// This is [`PostgresStoreOptions::new().with_pool(pool)`](PostgresStoreOptions::with_pool):
    /// the store's other settings (consumed markers, lifetime bound, timeouts...) are set on
    /// [`PostgresStoreOptions`] before `with_pool`.
    pub fn new(pool: PgPool) -> Self {
        PostgresStoreOptions::new().with_pool(pool)
    }

    /// Connects with the recommended settings ([`PostgresStoreOptions::default`]): the store
    /// owns its pool.
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

    /// Runs one statement under the operation timeout; `retry` says whether it may run again
    /// on another connection when the first was found dead, `returns` what is read of it.
    async fn run<'q>(
        &self,
        retry: Retry,
        returns: Returns,
        statement: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<Outcome, StoreError> {
        // Timers and sockets need a runtime: say so rather than panic inside tokio.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::NoRuntime);
        }
        self.check_open()?;
        // Boxed: the attempt (pool, retries, sqlx's query) is tens of kilobytes, which every
        // layer above would otherwise hold and copy again (futures are moved by value).
        let attempt = Box::pin(
            self.connections
                .run(&self.protocol, retry, returns, statement),
        );
        self.within_operation_timeout(attempt).await
    }

    /// Bounds `work` by the operation timeout: each statement (above), and a whole
    /// consumption, which may send more than one.
    async fn within_operation_timeout<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.operation_timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(elapsed) => Err(StoreError::Timeout {
                    source: Box::new(elapsed),
                }),
            },
        }
    }

    /// The caller's pool for a store built by [`new`](Self::new); `None` for a store that
    /// owns its connections.
    pub fn shared_pool(&self) -> Option<&PgPool> {
        self.connections.shared_pool()
    }

    /// Stops the store and every clone of it: later operations (migrations included) fail
    /// with [`StoreError::Unavailable`].
    ///
    /// - A store that owns its connections ([`connect`](Self::connect),
    ///   [`PostgresStoreOptions`]) closes them; operations waiting for a connection fail too.
    /// - A store built by [`new`](Self::new) does **not** close your pool (unlike par-store
    ///   0.2): the pool is yours, and the rest of your application goes on using it.
    ///   Operations already running finish. Close the pool with `PgPool::close` when you
    ///   are done with it.
    ///
    /// ```no_run
    /// use par_store::{sqlx::PgPool, PostgresStore, PushedAuthorizationRequestStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = PgPool::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// let store = PostgresStore::new(pool.clone());
    /// store.close().await;
    /// assert!(store.get_by_hash("h").await.is_err()); // the store is stopped...
    /// assert!(!pool.is_closed()); // ...the pool is not
    /// pool.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if self.connections.shared_pool().is_none() {
            self.connections.close().await;
        }
    }

    /// Fails with [`StoreError::Unavailable`] once [`close`](Self::close) was called.
    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable {
                source: "the store was closed (PostgresStore::close)".into(),
            });
        }
        Ok(())
    }

    /// The store's migrations (embedded from `migrations/`), recording their history in
    /// [`MIGRATIONS_TABLE`](Self::MIGRATIONS_TABLE) so that they coexist with the host
    /// application's own.
    ///
    /// Each migration runs as one statement: its file's statements inside a PL/pgSQL
    /// `DO` block, so that the server sees them one at a time. Citus propagates an `ALTER
    /// TABLE` on a distributed table with the text of the whole query it came in, and
    /// refuses one that came with other statements (sqlx sends a migration file as one
    /// query). The recorded checksums are those of the files, as sqlx-cli records them.
    ///
    /// ```
    /// let migrator = par_store::PostgresStore::migrator();
    /// assert!(migrator.iter().count() >= 1);
    /// ```
    pub fn migrator() -> Migrator {
        migrations::migrator()
    }

    /// Applies the store's migrations. Idempotent, and safe to call from many instances at
    /// once (it takes an advisory lock; the others wait for it, up to
    /// [`migration_lock_timeout`](PostgresStoreOptions::migration_lock_timeout)).
    ///
    /// Converges with sqlx-cli in any order: run with par-store's `sqlx.toml` it shares this
    /// history table; run without it, it records par-store's migrations in the host's
    /// `_sqlx_migrations`, which `migrate()` recognises (by version and checksum) instead of
    /// applying them twice, and which it then keeps up to date with the migrations it
    /// applies itself.
    ///
    /// Runs in a session of its own, closed afterwards: on a store that owns its
    /// connections, a dedicated connection to the store's address (not one of the pool); on
    /// a store built by [`new`](Self::new), a connection of your pool that is closed instead
    /// of given back. That session has no statement timeout (the store's
    /// [`statement_timeout`](PostgresStoreOptions::statement_timeout) does not apply), a
    /// `lock_timeout` of [`migration_lock_timeout`](PostgresStoreOptions::migration_lock_timeout), and the
    /// migrator's "already exists, skipping" notices switched off.
    ///
    /// In [pooler mode](PostgresStoreOptions::pooler_mode) it refuses with
    /// [`StoreError::MigrationNeedsDirectConnection`] and sends nothing: the migrations need a
    /// session of their own (an advisory lock, named statements), which a transaction-mode
    /// pooler does not give. Use [`migrate_with`](Self::migrate_with) and PostgreSQL's own
    /// address there.
    ///
    /// Fails with [`StoreError::Migration`] when a migration cannot be applied (e.g. the role
    /// may not create tables), the history does not match these migrations, or a lock wait
    /// outlasted the migration lock timeout.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
    /// let store = par_store::PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.check_open()?;
        if matches!(*self.protocol, Protocol::Pooler { .. }) {
            return Err(StoreError::MigrationNeedsDirectConnection);
        }
        self.connections
            .migrate(None, self.migration_lock_timeout)
            .await
    }

    /// Like [`migrate`](Self::migrate), on a dedicated connection to `direct`, closed
    /// afterwards: for a store in [pooler mode](PostgresStoreOptions::pooler_mode), whose
    /// own address is the pooler's, give PostgreSQL's own address (or any address that gives
    /// the connection a session of its own, such as a session-mode pool). `direct` is used as
    /// it is: none of the store's settings are added to it. Works in every mode.
    ///
    /// Opening the connection is bounded by the store's acquire timeout (that of your pool
    /// for a store built by [`new`](Self::new)); past it, [`StoreError::Unavailable`].
    ///
    /// ```no_run
    /// use par_store::{sqlx::postgres::PgConnectOptions, PostgresStoreOptions};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // The application's traffic goes through PgBouncer in transaction mode...
    /// let store = PostgresStoreOptions::new()
    ///     .pooler_mode(true)
    ///     .connect("postgres://app@pgbouncer:6432/app")
    ///     .await?;
    /// // ...and the migrations straight to PostgreSQL.
    /// let direct: PgConnectOptions = "postgres://migrator@postgres:5432/app".parse()?;
    /// store.migrate_with(direct).await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate_with(&self, direct: PgConnectOptions) -> Result<(), StoreError> {
        self.check_open()?;
        self.connections
            .migrate(Some(&direct), self.migration_lock_timeout)
            .await
    }

    /// Sets the store up on a [Citus](https://www.citusdata.com/) cluster, through a
    /// connection to its coordinator: applies the migrations ([`migrate`](Self::migrate)),
    /// then distributes both tables by their key (`create_distributed_table(
    /// 'pushed_authorization_requests', 'reference_value_hash')`, the markers colocated with
    /// the requests) and the two functions of migration 0008, the insert and the
    /// consumption (`create_distributed_function('par_store_consume(...)', '$1',
    /// colocate_with => 'pushed_authorization_requests')`, and the same for
    /// `par_store_insert`), each unless it already is. Returns `true` when it distributed
    /// something now (a 0.3 deployment's tables are already distributed: its first run on 0.4
    /// distributes the functions), `false` when everything already was.
    /// Idempotent; run it once at deployment (or at every start), from one instance.
    ///
    /// Every store operation is then routed by Citus to the one shard that holds the key,
    /// and [`delete_expired`](Self::delete_expired) and the [`CleanupJob`](crate::CleanupJob)
    /// clean every shard. A store and a consumption are calls of the distributed functions,
    /// which Citus delegates to the worker holding the key's shard: there the consumption
    /// takes the row, reads the clock and writes the marker, and the store checks for a
    /// marker and inserts, as single-shard statements (`docs/scaling.md`). Every store, on
    /// any instance, finds out once, at its first operation, whether the functions are
    /// distributed (one more round trip then, two on Citus; the answer is kept for the
    /// store's lifetime): a store that started before this ran keeps sending the
    /// one-statement insert and consumption, which are correct on Citus too but several times
    /// slower, until it is restarted. Run this before starting the instances. A store in
    /// [pooler mode](PostgresStoreOptions::pooler_mode) keeps the one-statement forms and
    /// never checks: Citus does not delegate a call inside the transaction block that mode
    /// wraps each operation in.
    ///
    /// The migration history stays a local table on the coordinator, and later migrations
    /// apply to the distributed table. Run this after migrations 0001 to
    /// 0003 (as it does): 0003 changes the key's collation, which Citus refuses on a
    /// distributed table. Rows already in the table are copied into the shards (Citus keeps
    /// the local copy until `truncate_local_data_after_distributing_table`). See
    /// `docs/scaling.md`.
    ///
    /// Fails with [`StoreError::Migration`] as `migrate` does, and with
    /// [`StoreError::Database`] where Citus is not installed in the database.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
    /// let store = par_store::PostgresStore::connect("postgres://postgres@coordinator:5432/postgres").await?;
    /// store.distribute_on_citus().await?;
    /// # Ok(()) }
    /// ```
    pub async fn distribute_on_citus(&self) -> Result<bool, StoreError> {
        self.migrate().await?;
        let tables = self.flag(CITUS_DISTRIBUTE).await?;
        let function = self.flag(CITUS_DISTRIBUTE_FUNCTIONS).await?;
        if !matches!(*self.protocol, Protocol::Pooler { .. }) {
            self.route.store(Route::Delegated as u8, Ordering::Relaxed);
        }
        Ok(tables || function)
    }

    /// Runs a statement that returns one boolean in one row (none: `false`).
    async fn flag(&self, statement: &'static str) -> Result<bool, StoreError> {
        let outcome = self
            .run(Retry::Always, Returns::Row, || sqlx::query(statement))
            .await?;
        Ok(decode::<(bool,)>(&outcome)?.is_some_and(|(flag,)| flag))
    }

    /// Finds out, once per store (the clones share the answer), whether migration 0008's
    /// functions are distributed by Citus ([`Route`]). Plain PostgreSQL answers one
    /// unnamed statement ([`CITUS_INSTALLED`]); Citus a second one. A check that failed is
    /// asked again at the next operation, which meanwhile runs `INSERT` and `CONSUME`,
    /// correct everywhere. Run at the start of each operation (an atomic load once known), so that
    /// the check is not part of any operation's steady state.
    ///
    /// In pooler mode the store keeps `INSERT` and `CONSUME` and asks nothing: each operation runs in
    /// `BEGIN ... COMMIT`, and Citus delegates a function call only outside a transaction
    /// block (`function_call_delegation.c`), so the call would gain nothing.
    async fn find_route(&self) {
        if self.route.load(Ordering::Relaxed) != Route::Unknown as u8 {
            return;
        }
        if matches!(*self.protocol, Protocol::Pooler { .. }) {
            self.route.store(Route::Statement as u8, Ordering::Relaxed);
            return;
        }
        let delegated = match self.unnamed_flag(CITUS_INSTALLED).await {
            Ok(true) => self.unnamed_flag(CITUS_FUNCTIONS_DELEGATED).await,
            other => other,
        };
        match delegated {
            Ok(delegated) => {
                let route = if delegated {
                    tracing::debug!("the store's functions are distributed by Citus: calling them");
                    Route::Delegated
                } else {
                    Route::Statement
                };
                // A concurrent `distribute_on_citus` of this store may have set Delegated.
                let _ = self.route.compare_exchange(
                    Route::Unknown as u8,
                    route as u8,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Err(err) => {
                tracing::debug!(error = %err, "could not check for Citus; asking again later")
            }
        }
    }

    /// [`flag`](Self::flag), unnamed: a check run once leaves no prepared statement behind.
    async fn unnamed_flag(&self, statement: &'static str) -> Result<bool, StoreError> {
        let outcome = self
            .run(Retry::Always, Returns::Row, || {
                sqlx::query(statement).persistent(false)
            })
            .await?;
        Ok(decode::<(bool,)>(&outcome)?.is_some_and(|(flag,)| flag))
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

/// How the store sends a store and a consumption, kept in an `AtomicU8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Route {
    /// Not checked yet (or the check failed): `INSERT` and `CONSUME`.
    Unknown = 0,
    /// Plain PostgreSQL, or Citus without the distributed functions: `INSERT` and `CONSUME`,
    /// one statement each.
    Statement = 1,
    /// The functions are distributed by Citus: `CITUS_INSERT` and `CITUS_CONSUME`, each
    /// call delegated to the shard's worker.
    Delegated = 2,
}

/// A row as the reads return it: the key is the caller's (see `src/sql.rs`).
type Row = (StoredExpiry, String, Option<String>);

/// A row `CONSUME` returns: whether this statement took the request (`taken`), the row's
/// `expires_at`, its parameters (only when taken), its `client_id`, whether it is live by
/// the clock read after the row lock, its `consumed_at` (a marker's), and whether a marker
/// still keeps parameters for a reload.
type ConsumedRow = (
    bool,
    StoredExpiry,
    Option<String>,
    Option<String>,
    bool,
    Option<StoredExpiry>,
    bool,
);

/// What `RELOAD` returns: the marker's `expires_at`, the parameters it keeps, its
/// `client_id`, `consumed_at`, and whether this call is a reload within the window.
type ReloadRow = (
    StoredExpiry,
    Option<String>,
    Option<String>,
    StoredExpiry,
    bool,
);

/// What `CONSUME`'s row says.
enum Consumed {
    /// The answer.
    Decided(Consumption),
    /// A marker keeps parameters for a reload: `RELOAD` decides.
    Kept,
    /// The request the statement's snapshot saw, of the right client, was taken by a
    /// concurrent statement after the snapshot (nothing was taken by this one): ask again.
    Raced,
}

/// Whether a row bound to `bound` may be consumed or read by `caller` (`None`: any client).
fn right_client(bound: Option<&str>, caller: Option<&str>) -> bool {
    match (bound, caller) {
        (Some(bound), Some(caller)) => bound == caller,
        _ => true,
    }
}

/// What a consumption found, from the row `CONSUME` or `CITUS_CONSUME` returned: a request
/// it took, or (only `CITUS_CONSUME`) what the call found instead. `None` is `NotFound` for
/// `CITUS_CONSUME`; the store asks `LOOK_UP` when `CONSUME` returned none.
fn into_consumed(
    reference_value_hash: &str,
    caller: Option<&str>,
    row: Option<ConsumedRow>,
) -> Result<Consumed, StoreError> {
    let Some((taken, expires_at, parameters, client_id, live, consumed_at, kept)) = row else {
        return Ok(Consumed::Decided(Consumption::NotFound));
    };
    if !taken {
        return Ok(missed(caller, client_id.as_deref(), consumed_at, kept));
    }
    match (live, parameters) {
        (false, _) => Ok(Consumed::Decided(Consumption::Expired)),
        (true, Some(parameters)) => Ok(Consumed::Decided(Consumption::Consumed(into_request(
            reference_value_hash,
            (expires_at, parameters, client_id),
        )))),
        // The column is NOT NULL: never report a consumption that returned no request.
        (true, None) => Err(StoreError::from(sqlx::Error::Protocol(
            "the consume statement returned a request without parameters".into(),
        ))),
    }
}

/// What a consumption that took nothing found under the hash, from the row `LOOK_UP`
/// returned (`None`: no row).
fn into_missed(caller: Option<&str>, row: Option<LookedUpRow>) -> Consumed {
    match row {
        None => Consumed::Decided(Consumption::NotFound),
        Some((_, _, client_id, _, consumed_at, kept)) => {
            missed(caller, client_id.as_deref(), consumed_at, kept)
        }
    }
}

/// A consumption that took nothing, by what is under the hash: a row bound to another
/// client, a marker (kept for a reload, or not), or a request of the right client that the
/// consuming statement did not see (stored after its snapshot, or taken by a concurrent
/// statement after the snapshot): ask again.
fn missed(
    caller: Option<&str>,
    client_id: Option<&str>,
    consumed_at: Option<StoredExpiry>,
    kept: bool,
) -> Consumed {
    if !right_client(client_id, caller) {
        return Consumed::Decided(Consumption::WrongClient);
    }
    match consumed_at {
        Some(_) if kept => Consumed::Kept,
        Some(StoredExpiry(consumed_at)) => {
            Consumed::Decided(Consumption::AlreadyConsumed { consumed_at })
        }
        None => Consumed::Raced,
    }
}

/// A row `LOOK_UP` returns: `expires_at`, the parameters (a request's; none for a marker),
/// `client_id`, whether it is live by the database clock, a marker's `consumed_at`, and
/// whether a marker still keeps parameters for a reload.
type LookedUpRow = (
    StoredExpiry,
    Option<String>,
    Option<String>,
    bool,
    Option<StoredExpiry>,
    bool,
);

/// What `get_for_client` answers, from the row `LOOK_UP` returned (`None`: no row).
fn into_lookup(
    reference_value_hash: &str,
    client_id: &str,
    row: Option<LookedUpRow>,
) -> Result<Lookup, StoreError> {
    let Some((expires_at, parameters, bound, live, consumed_at, _)) = row else {
        return Ok(Lookup::NotFound);
    };
    if !right_client(bound.as_deref(), Some(client_id)) {
        return Ok(Lookup::WrongClient);
    }
    Ok(match (consumed_at, live, parameters) {
        (Some(StoredExpiry(consumed_at)), _, _) => Lookup::AlreadyConsumed { consumed_at },
        (None, false, _) => Lookup::Expired,
        (None, true, Some(parameters)) => Lookup::Found(into_request(
            reference_value_hash,
            (expires_at, parameters, bound),
        )),
        // The column is NOT NULL: a request always has its parameters.
        (None, true, None) => {
            return Err(StoreError::from(sqlx::Error::Protocol(
                "the look-up returned a request without parameters".into(),
            )))
        }
    })
}

/// What a consumption that found a marker keeping parameters gets, from `RELOAD`'s row.
fn into_reloaded(
    reference_value_hash: &str,
    row: Option<ReloadRow>,
) -> Result<Consumption, StoreError> {
    Ok(match row {
        // Removed meanwhile (cleanup at expiry, delete_by_client_id).
        None => Consumption::NotFound,
        Some((expires_at, Some(parameters), client_id, _, true)) => Consumption::Consumed(
            into_request(reference_value_hash, (expires_at, parameters, client_id)),
        ),
        Some((_, _, _, StoredExpiry(consumed_at), _)) => {
            Consumption::AlreadyConsumed { consumed_at }
        }
    })
}

/// How many times a consumption asks again after losing a race to a concurrent statement
/// (each time, the request was taken by another caller, so the next run finds its marker).
const CONSUME_RACE_ATTEMPTS: usize = 3;

fn into_request(
    reference_value_hash: &str,
    (StoredExpiry(expires_at), parameters, client_id): Row,
) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest {
        reference_value_hash: reference_value_hash.to_owned(),
        expires_at,
        parameters,
        client_id,
    }
}

/// `expires_at` as read from the table. sqlx's own `DateTime<Utc>` decoder panics on a
/// timestamp beyond chrono's range (`infinity` or a year past 262142, which migrations 0003
/// and 0004 forbid, in a table not yet migrated); this one fails the operation with
/// [`StoreError::Database`] instead.
struct StoredExpiry(DateTime<Utc>);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in microseconds since the Unix epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl Type<Postgres> for StoredExpiry {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for StoredExpiry {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            // Microseconds since PostgreSQL's epoch.
            PgValueFormat::Binary => {
                let micros = <i64 as Decode<Postgres>>::decode(value)?;
                micros
                    .checked_add(POSTGRES_EPOCH_MICROS)
                    .and_then(DateTime::<Utc>::from_timestamp_micros)
                    .map(StoredExpiry)
                    .ok_or_else(|| "expires_at is outside the range the store can represent".into())
            }
            // Parsing text does not panic.
            PgValueFormat::Text => {
                <DateTime<Utc> as Decode<Postgres>>::decode(value).map(StoredExpiry)
            }
        }
    }
}

/// Decodes the row a statement returned, if any.
fn decode<'r, T: FromRow<'r, sqlx::postgres::PgRow>>(
    outcome: &'r Outcome,
) -> Result<Option<T>, StoreError> {
    outcome
        .row
        .as_ref()
        .map(T::from_row)
        .transpose()
        .map_err(StoreError::from)
}

/// Whether `INSERT` refused the request as expired by the database's clock: it turns such an
/// `expires_at` into NULL, which the column's `NOT NULL` constraint refuses (see `src/sql.rs`).
/// The statement binds no other value that can be NULL in a `NOT NULL` column. Citus passes
/// the SQLSTATE on but not the column; where the column is named, it must be `expires_at`.
fn refused_as_expired(err: &StoreError) -> bool {
    if !has_sqlstate(err, "23502") {
        return false;
    }
    let StoreError::Database { source } = err else {
        return false;
    };
    let column = match source.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.column()),
        _ => None,
    };
    column.is_none_or(|column| column == "expires_at")
}

impl PostgresStore {
    /// Runs one cleanup batch: `plain`, or on a Citus-distributed table (which refuses
    /// `plain`'s `FOR UPDATE` across shards, SQLSTATE 0A000) `citus`, the same batch on every
    /// shard (`src/sql.rs`). The switch is remembered; `plain` is tried first only until then,
    /// so plain PostgreSQL never pays for it.
    async fn cleanup_batch<'q>(
        &self,
        plain: impl Fn() -> Query<'q, Postgres, PgArguments>,
        citus: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<u64, StoreError> {
        if !self.citus_cleanup.load(Ordering::Relaxed) {
            match self.count(Retry::Always, plain).await {
                Err(refused) if has_sqlstate(&refused, "0A000") => {
                    let deleted = match self.count(Retry::Always, &citus).await {
                        // No run_command_on_colocated_placements: not Citus, and the refusal stands.
                        Err(err) if has_sqlstate(&err, "42883") => return Err(refused),
                        other => other?,
                    };
                    self.citus_cleanup.store(true, Ordering::Relaxed);
                    tracing::debug!("the table is distributed by Citus: cleaning shard by shard");
                    return Ok(deleted);
                }
                other => return other,
            }
        }
        self.count(Retry::Always, citus).await
    }
}

/// Whether `err` is a database error with this SQLSTATE.
fn has_sqlstate(err: &StoreError, code: &str) -> bool {
    let StoreError::Database { source } = err else {
        return false;
    };
    matches!(
        source.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some(code)
    )
}

/// `INSERT` and `UPSERT` take the same four values.
fn bind_request<'q>(
    sql: &'static str,
    request: &'q PushedAuthorizationRequest,
    expires_at: DateTime<Utc>,
) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(&request.reference_value_hash)
        .bind(expires_at)
        .bind(&request.parameters)
        .bind(&request.client_id)
}

impl PostgresStore {
    /// `consume`'s statements, under its one operation timeout.
    async fn consume_steps(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        reopenable: bool,
        reload: Reload<'_>,
    ) -> Result<Consumption, StoreError> {
        self.find_route().await;
        // The same parameters and columns either way (src/sql.rs); only `CITUS_CONSUME` tells
        // the other outcomes apart in the same call.
        let delegated = self.route.load(Ordering::Relaxed) == Route::Delegated as u8;
        let statement = if delegated { CITUS_CONSUME } else { CONSUME };
        for _ in 0..CONSUME_RACE_ATTEMPTS {
            // A consume that may have run is never run again: the second run would find the
            // request consumed and report `AlreadyConsumed` for the caller's own consumption.
            // Asking again after `Raced` is safe: that run's answer proves it took nothing.
            let outcome = self
                .run(Retry::IfServerAborted, Returns::Row, || {
                    sqlx::query(statement)
                        .bind(reference_value_hash)
                        .bind(client_id)
                        .bind(self.consumed_markers)
                        .bind(reopenable)
                        .bind(reload.binding)
                })
                .await?;
            let row = decode::<ConsumedRow>(&outcome)?;
            let consumed = if row.is_some() || delegated {
                into_consumed(reference_value_hash, client_id, row)?
            } else {
                // Nothing taken: what is under the hash, read without changing anything.
                let outcome = self
                    .run(Retry::Always, Returns::Row, || {
                        sqlx::query(LOOK_UP).bind(reference_value_hash)
                    })
                    .await?;
                into_missed(client_id, decode::<LookedUpRow>(&outcome)?)
            };
            match consumed {
                Consumed::Decided(consumption) => return Ok(consumption),
                Consumed::Raced => continue,
                Consumed::Kept => return self.reload(reference_value_hash, reload).await,
            }
        }
        Err(StoreError::from(sqlx::Error::Protocol(
            "the request kept being taken by concurrent statements".into(),
        )))
    }

    /// `RELOAD`: a consumption that found a marker keeping parameters.
    async fn reload(
        &self,
        reference_value_hash: &str,
        reload: Reload<'_>,
    ) -> Result<Consumption, StoreError> {
        // The window is at most `ConsumePolicy`'s cap of 100 years: it fits.
        let window_micros = i64::try_from(reload.window.as_micros()).unwrap_or(i64::MAX);
        // Clearing the kept parameters twice is harmless, but a reload answered twice is a
        // request handed out twice: run again only when the server proved it did not commit.
        let outcome = self
            .run(Retry::IfServerAborted, Returns::Row, || {
                sqlx::query(RELOAD)
                    .bind(reference_value_hash)
                    .bind(reload.binding)
                    .bind(window_micros)
            })
            .await?;
        into_reloaded(reference_value_hash, decode::<ReloadRow>(&outcome)?)
    }

    /// Runs one statement that returns a count (bigint) in one row.
    async fn count<'q>(
        &self,
        retry: Retry,
        statement: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<u64, StoreError> {
        let outcome = self.run(retry, Returns::Row, statement).await?;
        let (count,): (i64,) = decode(&outcome)?.ok_or_else(|| {
            StoreError::from(sqlx::Error::Protocol(
                "the statement returned no count".into(),
            ))
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl Backend for PostgresStore {
    const NAME: &'static str = "postgres";

    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    fn max_parameters_len(&self) -> usize {
        self.max_parameters_len
    }

    fn max_request_lifetime(&self) -> Duration {
        self.max_request_lifetime
    }

    fn reload_window(&self) -> Option<Duration> {
        self.consume_policy
            .reload_window()
            .filter(|_| self.consumed_markers)
    }

    async fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        self.find_route().await;
        // The same parameters and outcomes either way (src/sql.rs).
        let insert = match self.route.load(Ordering::Relaxed) {
            route if route == Route::Delegated as u8 => CITUS_INSERT,
            _ => INSERT,
        };
        // Run again only when PostgreSQL proved it did not commit: a second run of a
        // committed insert would report the caller's own request as a duplicate.
        let outcome = self
            .run(Retry::IfServerAborted, Returns::Row, || {
                bind_request(insert, request, expires_at)
            })
            .await;
        match outcome {
            Ok(outcome) if outcome.row.is_some() => Ok(Inserted::Stored),
            Ok(_) => Ok(Inserted::Duplicate),
            Err(err) if refused_as_expired(&err) => Ok(Inserted::Expired),
            Err(err) => Err(err),
        }
    }

    async fn look_up(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Lookup, StoreError> {
        self.find_route().await;
        let outcome = self
            .run(Retry::Always, Returns::Row, || {
                sqlx::query(LOOK_UP).bind(reference_value_hash)
            })
            .await?;
        into_lookup(
            reference_value_hash,
            client_id,
            decode::<LookedUpRow>(&outcome)?,
        )
    }

    async fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.find_route().await;
        let outcome = self
            .run(Retry::Always, Returns::Row, || {
                sqlx::query(SELECT_LIVE).bind(reference_value_hash)
            })
            .await?;
        Ok(decode::<Row>(&outcome)?.map(|row| into_request(reference_value_hash, row)))
    }

    async fn consume(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        reopenable: bool,
        reload: Reload<'_>,
    ) -> Result<Consumption, StoreError> {
        // One bound for all of it: a consumption that took nothing reads `LOOK_UP` too, one
        // that found a marker kept for a reload runs `RELOAD`, and one that lost a race asks
        // again. (Boxed, as each statement's attempt: see `run`.)
        self.within_operation_timeout(Box::pin(self.consume_steps(
            reference_value_hash,
            client_id,
            reopenable,
            reload,
        )))
        .await
    }

    async fn upsert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        self.find_route().await;
        // Never run twice: a request consumed between a committed first run and a second
        // one would be put back.
        let outcome = self
            .run(Retry::Never, Returns::Row, || {
                bind_request(UPSERT, request, expires_at)
            })
            .await;
        match outcome {
            Ok(outcome) if outcome.row.is_some() => Ok(Inserted::Stored),
            Ok(_) => Ok(Inserted::Duplicate),
            Err(err) if refused_as_expired(&err) => Ok(Inserted::Expired),
            Err(err) => Err(err),
        }
    }

    async fn delete_bound_to(&self, client_id: &str) -> Result<u64, StoreError> {
        // Not run twice: the second run would count nothing.
        self.count(Retry::IfServerAborted, || {
            sqlx::query(DELETE_BY_CLIENT_ID).bind(client_id)
        })
        .await
    }

    async fn delete_expired_as_of_batch(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> Result<u64, StoreError> {
        self.delete_expired_before(Some(cutoff), batch_size).await
    }
}

crate::backend::store_impls!(PostgresStore);

#[async_trait::async_trait]
impl ExpiredRequestCleaner for PostgresStore {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.delete_expired_before(None, batch_size).await
    }
}

impl PostgresStore {
    /// One cleanup batch: requests and markers expired at `cutoff`, or by the database clock
    /// when `cutoff` is `None`.
    async fn delete_expired_before(
        &self,
        cutoff: Option<DateTime<Utc>>,
        batch_size: u32,
    ) -> Result<u64, StoreError> {
        // Deleting expired rows twice is harmless: the second run finds fewer.
        self.cleanup_batch(
            || {
                sqlx::query(DELETE_EXPIRED_BATCH)
                    .bind(i64::from(batch_size))
                    .bind(cutoff)
            },
            || {
                sqlx::query(CITUS_DELETE_EXPIRED_BATCH)
                    .bind(i64::from(batch_size))
                    .bind(cutoff)
            },
        )
        .await
    }
}

/// Settings for a store that owns its connections ([`PostgresStore::connect`]), with
/// defaults chosen for an authorization server's PAR traffic (short statements, many
/// instances).
///
/// | setting | default | constant | why |
/// |---|---|---|---|
/// | [`max_connections`](Self::max_connections) | 10 | [`DEFAULT_MAX_CONNECTIONS`](Self::DEFAULT_MAX_CONNECTIONS) | sqlx's default; more callers than this wait their turn in FIFO order |
/// | [`acquire_timeout`](Self::acquire_timeout) | 3 s | [`DEFAULT_ACQUIRE_TIMEOUT`](Self::DEFAULT_ACQUIRE_TIMEOUT) | fail fast with [`StoreError::Unavailable`] when no connection can be had, rather than sqlx's 30 s |
/// | [`statement_timeout`](Self::statement_timeout) | 5 s | [`DEFAULT_STATEMENT_TIMEOUT`](Self::DEFAULT_STATEMENT_TIMEOUT) | the server cancels a statement stuck on locks or I/O ([`StoreError::Timeout`]) |
/// | [`operation_timeout`](Self::operation_timeout) | 10 s | [`DEFAULT_OPERATION_TIMEOUT`](Self::DEFAULT_OPERATION_TIMEOUT) | bounds a whole operation even when the network swallows packets |
/// | [`migration_lock_timeout`](PostgresStoreOptions::migration_lock_timeout) | 60 s | [`DEFAULT_MIGRATION_LOCK_TIMEOUT`](Self::DEFAULT_MIGRATION_LOCK_TIMEOUT) | [`migrate`](PostgresStore::migrate) has no statement timeout; this bounds its wait for another instance's run |
/// | [`ping_idle_after`](Self::ping_idle_after) | 1 s | [`DEFAULT_PING_IDLE_AFTER`](Self::DEFAULT_PING_IDLE_AFTER) | a connection idle that long is pinged before use, so one that died while idle is replaced instead of failing a request; busy connections skip the extra round trip |
/// | [`max_connection_lifetime`](Self::max_connection_lifetime) | 30 min | [`DEFAULT_MAX_CONNECTION_LIFETIME`](Self::DEFAULT_MAX_CONNECTION_LIFETIME) | connections are replaced regularly (credential rotation, failover, server-side memory) |
/// | [`idle_timeout`](Self::idle_timeout) | 10 min | [`DEFAULT_IDLE_TIMEOUT`](Self::DEFAULT_IDLE_TIMEOUT) | connections left over from a burst are closed |
/// | [`pooler_mode`](Self::pooler_mode) | `false` | - | `true` for a transaction-mode pooler without prepared-statement support |
/// | [`max_parameters_len`](Self::max_parameters_len) | 64 KiB | [`DEFAULT_MAX_PARAMETERS_LEN`](Self::DEFAULT_MAX_PARAMETERS_LEN) | a request is a URL-encoded set of parameters, a few KiB at most; this refuses a runaway one before it reaches the database |
/// | [`max_request_lifetime`](Self::max_request_lifetime) | 1 hour | [`DEFAULT_MAX_REQUEST_LIFETIME`](Self::DEFAULT_MAX_REQUEST_LIFETIME) | PAR lifetimes are 60-600 s; a longer one is a bug (seconds taken for milliseconds) |
/// | [`consumed_markers`](Self::consumed_markers) | `true` | - | a reused `request_uri` is told apart from an unknown one ([`Consumption::AlreadyConsumed`]) |
/// | [`consume_policy`](Self::consume_policy) | [`ConsumePolicy::Once`] | - | single use; a reload window keeps a consumed request usable by its session (see [`ConsumePolicy`]) |
/// | [`hosts`](Self::hosts) | none | - | the URL's host, or its host list, tried in order |
/// | [`target_session_attrs`](Self::target_session_attrs) | the URL's, else [`TargetSessionAttrs::Any`] | - | with several hosts, [`TargetSessionAttrs::ReadWrite`] follows the primary through a failover |
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
    max_connection_lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
    pooler_mode: bool,
    max_parameters_len: usize,
    max_request_lifetime: Duration,
    migration_lock_timeout: Option<Duration>,
    consumed_markers: bool,
    consume_policy: ConsumePolicy,
    hosts: Vec<(String, u16)>,
    target_session_attrs: Option<TargetSessionAttrs>,
}

impl Default for PostgresStoreOptions {
    fn default() -> Self {
        PostgresStoreOptions {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
            operation_timeout: Some(Self::DEFAULT_OPERATION_TIMEOUT),
            ping_idle_after: Some(Self::DEFAULT_PING_IDLE_AFTER),
            max_connection_lifetime: Some(Self::DEFAULT_MAX_CONNECTION_LIFETIME),
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            pooler_mode: false,
            max_parameters_len: Self::DEFAULT_MAX_PARAMETERS_LEN,
            max_request_lifetime: Self::DEFAULT_MAX_REQUEST_LIFETIME,
            migration_lock_timeout: Some(Self::DEFAULT_MIGRATION_LOCK_TIMEOUT),
            consumed_markers: true,
            consume_policy: ConsumePolicy::Once,
            hosts: Vec::new(),
            target_session_attrs: None,
        }
    }
}

impl PostgresStoreOptions {
    /// Default for [`max_connections`](Self::max_connections): 10, sqlx's default.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

    /// Default for [`Self::acquire_timeout`]: 3 s (sqlx's is 30 s).
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

    /// Default for [`Self::statement_timeout`], the server-side bound on every
    /// statement: 5 s.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Default for [`Self::ping_idle_after`]: a connection idle for 1 s is
    /// pinged before use.
    pub const DEFAULT_PING_IDLE_AFTER: Duration = Duration::from_secs(1);

    /// Default for [`Self::max_connection_lifetime`] (sqlx's `max_lifetime`):
    /// 30 min.
    pub const DEFAULT_MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(30 * 60);

    /// Default for [`Self::idle_timeout`]: 10 min.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

    /// Default bound on one store operation, connection wait included: 10 s.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default bound on each lock wait of [`PostgresStore::migrate`], among them the wait for
    /// another instance's run: 60 s (see [`migration_lock_timeout`](Self::migration_lock_timeout)).
    pub const DEFAULT_MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

    /// Default for [`max_parameters_len`](Self::max_parameters_len), also
    /// [`MemoryStore`](crate::MemoryStore)'s: 64 KiB.
    pub const DEFAULT_MAX_PARAMETERS_LEN: usize = DEFAULT_MAX_PARAMETERS_LEN;

    /// Default for [`max_request_lifetime`](Self::max_request_lifetime), also
    /// [`MemoryStore`](crate::MemoryStore)'s: 1 hour. PAR lifetimes are short (Duende
    /// IdentityServer's default is 600 s, Keycloak's 60 s); a longer one is a bug (e.g. seconds
    /// taken for milliseconds), and the bound also keeps `expires_at` within what every store
    /// can represent.
    pub const DEFAULT_MAX_REQUEST_LIFETIME: Duration = DEFAULT_MAX_REQUEST_LIFETIME;

    /// The defaults (see the table above).
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn new() -> Self {
        Self::default()
    }

    /// Largest number of connections the store opens. Callers beyond it wait in FIFO order,
    /// up to [`acquire_timeout`](Self::acquire_timeout).
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long an operation may take to get a connection before failing with
    /// [`StoreError::Unavailable`]: one bound over the whole checkout, waiting for a free
    /// connection, opening a new one and pinging idle ones included. A ping that gets no
    /// answer within 1 s (or this timeout, if shorter) discards that connection, and the
    /// next one is tried within what is left.
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The server-side `statement_timeout` of every statement (`None`: the server's own).
    /// Sent as a startup parameter, or with `SET LOCAL` in each transaction when
    /// in [`pooler_mode`](Self::pooler_mode) (poolers refuse the startup
    /// parameter).
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Bounds each operation (waiting for a connection included) to `timeout`; past it the
    /// operation fails with [`StoreError::Timeout`]. `None` leaves only the pool's acquire
    /// timeout and the server's `statement_timeout`. Default:
    /// [`DEFAULT_OPERATION_TIMEOUT`](Self::DEFAULT_OPERATION_TIMEOUT) (10 s).
    ///
    /// This is a client-side backstop (for a network that swallows packets): a statement
    /// already sent cannot be taken back, so a timed-out consumption may still consume
    /// the request on the server (see
    /// [docs/failure-behaviour.md](https://github.com/par-store/par-store/blob/main/docs/failure-behaviour.md#the-one-inherent-window)).
    /// The connection of an operation that timed out is closed, never reused (in pooler mode
    /// it is rolled back, its pending replies read, and kept when that succeeds within 1 s:
    /// closing it would close the pooler's server connection too). Keep it above
    /// the server's `statement_timeout`, which cancels the statement itself. Applies to
    /// [`with_pool`](Self::with_pool) too.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = par_store::PostgresStoreOptions::new().operation_timeout(Some(Duration::from_secs(2)));
    /// assert!(format!("{options:?}").contains("operation_timeout: Some(2s)"));
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Ping a connection before use when it has been idle at least this long
    /// (`Some(Duration::ZERO)`: always, like sqlx's `test_before_acquire`; `None`: never).
    ///
    /// A connection the server closed sooner (an `idle_session_timeout`, a
    /// `pg_terminate_backend`) is still not a failed request, except for `store_or_replace`,
    /// which never runs twice: when the server's goodbye is the answer to a statement, the
    /// statement cannot have run, and the store runs it on another connection.
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn ping_idle_after(mut self, idle: Option<Duration>) -> Self {
        self.ping_idle_after = idle;
        self
    }

    /// Connections older than this are closed and replaced (`None`: never).
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn max_connection_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_connection_lifetime = lifetime;
        self
    }

    /// Connections unused for this long are closed (`None`: never).
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// `false` (default): statements are prepared once per connection under a name and
    /// reused, one round trip each. `true`: **pooler mode**, for PgBouncer (before 1.21, or
    /// with `max_prepared_statements = 0`), Supavisor and other transaction-mode poolers
    /// without prepared-statement support. Each operation then runs unnamed inside its own
    /// `BEGIN ... COMMIT` (four round trips), so that no statement can land on another
    /// server connection, and the store sends no startup parameter a pooler refuses.
    /// (sqlx 0.9 sends an unnamed statement in two flights, each ending in Sync; without the
    /// transaction a pooler could bind the second flight to another client's statement:
    /// [docs/postgresql.md](https://github.com/par-store/par-store/blob/main/docs/postgresql.md#behind-pgbouncer-supavisor-or-another-transaction-mode-pooler).)
    ///
    /// ```
    /// let options = par_store::PostgresStoreOptions::new().pooler_mode(true);
    /// assert!(format!("{options:?}").contains("pooler_mode: true"));
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn pooler_mode(mut self, enabled: bool) -> Self {
        self.pooler_mode = enabled;
        self
    }

    /// The largest `parameters` accepted by
    /// [`store`](crate::PushedAuthorizationRequestStore::store), in bytes (default
    /// [`DEFAULT_MAX_PARAMETERS_LEN`](Self::DEFAULT_MAX_PARAMETERS_LEN), 64 KiB). Larger
    /// requests fail with [`StoreError::InvalidInput`]. Applies to
    /// [`with_pool`](Self::with_pool) too.
    ///
    /// ```
    /// let options = par_store::PostgresStoreOptions::new().max_parameters_len(16 * 1024);
    /// assert!(format!("{options:?}").contains("max_parameters_len: 16384"));
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn max_parameters_len(mut self, bytes: usize) -> Self {
        self.max_parameters_len = bytes;
        self
    }

    /// The longest lifetime accepted by [`store`](crate::PushedAuthorizationRequestStore::store)
    /// (`expires_at` minus the application's current time; default
    /// [`DEFAULT_MAX_REQUEST_LIFETIME`](Self::DEFAULT_MAX_REQUEST_LIFETIME), 1 hour). Requests
    /// that expire later fail with [`StoreError::InvalidInput`]. This is the lifetime of a
    /// pushed *request*; the lifetime of a *connection* (sqlx's `max_lifetime`) is
    /// [`max_connection_lifetime`](Self::max_connection_lifetime). Applies to
    /// [`with_pool`](Self::with_pool) too.
    ///
    /// ```
    /// let options = par_store::PostgresStoreOptions::new()
    ///     .max_request_lifetime(std::time::Duration::from_secs(600));
    /// assert!(format!("{options:?}").contains("max_request_lifetime: 600s"));
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn max_request_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_request_lifetime = lifetime;
        self
    }

    /// Bounds each lock wait of [`migrate`](PostgresStore::migrate) to `timeout` (`None`: no
    /// bound). Default: [`DEFAULT_MIGRATION_LOCK_TIMEOUT`](Self::DEFAULT_MIGRATION_LOCK_TIMEOUT)
    /// (60 s). Applies to [`with_pool`](Self::with_pool) too.
    ///
    /// `migrate()` runs without a statement timeout (a migration may rewrite a large table),
    /// so this is what bounds its waits: for the advisory lock another instance holds while
    /// it migrates (past the bound, [`StoreError::Migration`] naming that lock, nothing
    /// applied), for sqlx's migration lock, and for the table locks the migrations take.
    /// Instances that start together wait for the first one's run, however long it is within
    /// this bound, then find nothing left to do.
    ///
    /// ```no_run
    /// # use par_store::{sqlx::PgPool, PostgresStoreOptions};
    /// # use std::time::Duration;
    /// # async fn f(pool: PgPool) -> Result<(), par_store::StoreError> {
    /// let store = PostgresStoreOptions::new()
    ///     .migration_lock_timeout(Some(Duration::from_secs(300)))
    ///     .with_pool(pool);
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn migration_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.migration_lock_timeout = timeout;
        self
    }

    /// Whether a consumed request leaves a marker until it expires (`true`, the default), so
    /// that [`consume_for_client`](crate::PushedAuthorizationRequestStore::consume_for_client)
    /// can answer [`Consumption::AlreadyConsumed`] to a reused `request_uri`. Applies to
    /// [`with_pool`](Self::with_pool) too.
    ///
    /// `false` is par-store 0.2's behaviour: a consumed request's row is deleted, a second
    /// consumption answers [`Consumption::NotFound`], and `AlreadyConsumed` is never
    /// reported; the table then holds only unconsumed requests (a marker costs a row until
    /// `expires_at`). Every store on the same table should use the same setting: a store with
    /// markers off consumes (deletes) a marker's row as it would an expired one.
    ///
    /// ```no_run
    /// # use par_store::{sqlx::PgPool, PostgresStoreOptions};
    /// # fn f(pool: PgPool) {
    /// let store = PostgresStoreOptions::new()
    ///     .consumed_markers(false) // 0.2: delete on consume
    ///     .with_pool(pool);
    /// # }
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn consumed_markers(mut self, enabled: bool) -> Self {
        self.consumed_markers = enabled;
        self
    }

    /// What [`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session)
    /// allows after a first consumption: [`ConsumePolicy::Once`] (the default, single use) or
    /// [`ConsumePolicy::ReloadWithin`], which lets the session that consumed a request consume
    /// it again within a window, keeping its parameters in the table meanwhile (see
    /// [`ConsumePolicy`] for what that costs and why it is off by default). Needs migration
    /// 0006 (`consumed_by`); has no effect with [`consumed_markers`](Self::consumed_markers)
    /// off. Every store on the same table should use the same policy: a store whose window is
    /// shorter clears the kept parameters of a request consumed longer ago than its own
    /// window. Applies to [`with_pool`](Self::with_pool) too.
    ///
    /// ```no_run
    /// # use par_store::{sqlx::PgPool, ConsumePolicy, PostgresStoreOptions};
    /// # fn f(pool: PgPool) {
    /// let store = PostgresStoreOptions::new()
    ///     .consume_policy(ConsumePolicy::ReloadWithin(std::time::Duration::from_secs(30)))
    ///     .with_pool(pool);
    /// # }
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn consume_policy(mut self, policy: ConsumePolicy) -> Self {
        self.consume_policy = policy;
        self
    }

    /// A store on your existing pool, which it shares with whoever else uses it, with these
    /// settings. Run [`migrate`](PostgresStore::migrate) (or sqlx-cli) once before use.
    ///
    /// The settings of the store itself apply: [`operation_timeout`](Self::operation_timeout),
    /// [`migration_lock_timeout`](Self::migration_lock_timeout),
    /// [`max_parameters_len`](Self::max_parameters_len),
    /// [`max_request_lifetime`](Self::max_request_lifetime),
    /// [`consumed_markers`](Self::consumed_markers) and
    /// [`consume_policy`](Self::consume_policy). Those of the connections are your pool's and
    /// are not used here: [`max_connections`](Self::max_connections),
    /// [`acquire_timeout`](Self::acquire_timeout), [`statement_timeout`](Self::statement_timeout),
    /// [`ping_idle_after`](Self::ping_idle_after),
    /// [`max_connection_lifetime`](Self::max_connection_lifetime),
    /// [`idle_timeout`](Self::idle_timeout) and [`pooler_mode`](Self::pooler_mode) (set them on
    /// your `PgPoolOptions` and `PgConnectOptions`). See [`PostgresStore::new`], which is
    /// `PostgresStoreOptions::new().with_pool(pool)`, for how a store on your pool behaves.
    ///
    /// ```no_run
    /// use par_store::{sqlx::PgPool, PostgresStoreOptions};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = PgPool::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// let store = PostgresStoreOptions::new()
    ///     .max_request_lifetime(Duration::from_secs(600))
    ///     .operation_timeout(Some(Duration::from_secs(5)))
    ///     .with_pool(pool.clone());
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn with_pool(&self, pool: PgPool) -> PostgresStore {
        PostgresStore {
            connections: Connections::Shared(pool),
            protocol: Arc::new(Protocol::Prepared),
            max_parameters_len: self.max_parameters_len,
            max_request_lifetime: self.max_request_lifetime,
            operation_timeout: self.operation_timeout,
            citus_cleanup: Arc::default(),
            route: Arc::default(),
            migration_lock_timeout: self.migration_lock_timeout,
            consumed_markers: self.consumed_markers,
            consume_policy: self.consume_policy,
            closed: Arc::new(AtomicBool::new(false)),
            metrics: Arc::default(),
        }
    }

    /// The servers to connect to, tried in order: each new connection goes to the first host
    /// that answers and fits [`target_session_attrs`](Self::target_session_attrs), as
    /// libpq does with `postgres://h1:5432,h2:5432/db`. Replaces the URL's host (or host
    /// list) and the connect options' host and port; everything else (user, password,
    /// database, TLS) comes from the URL or options, for every host. Empty (the default):
    /// the URL's host or host list.
    ///
    /// sqlx's own `PgPool` cannot do this (sqlx 0.9 reads one host); see
    /// `docs/postgresql.md`.
    ///
    /// ```no_run
    /// use par_store::{PostgresStoreOptions, TargetSessionAttrs};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
    /// let store = PostgresStoreOptions::new()
    ///     .hosts([("db1.internal", 5432), ("db2.internal", 5432)])
    ///     .target_session_attrs(TargetSessionAttrs::ReadWrite)
    ///     .connect("postgres://app@db1.internal/app")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn hosts<H: Into<String>>(mut self, hosts: impl IntoIterator<Item = (H, u16)>) -> Self {
        self.hosts = hosts
            .into_iter()
            .map(|(host, port)| (host.into(), port))
            .collect();
        self
    }

    /// Which of the [`hosts`](Self::hosts) the store keeps connections to (see
    /// [`TargetSessionAttrs`]). Overrides the URL's `target_session_attrs`; without either,
    /// [`TargetSessionAttrs::Any`]. With `ReadWrite`, a primary demoted under live
    /// connections is left: a statement that meets its read-only refusal (SQLSTATE 25006)
    /// fails with [`StoreError::Unavailable`] and is not run again, its connection and the
    /// idle ones are closed, and the next operation connects to the host that is writable
    /// now.
    ///
    /// ```
    /// use par_store::{PostgresStoreOptions, TargetSessionAttrs};
    ///
    /// let options = PostgresStoreOptions::new().target_session_attrs(TargetSessionAttrs::ReadWrite);
    /// assert!(format!("{options:?}").contains("ReadWrite"));
    /// ```
    #[must_use = "options do nothing until connect() is called on them"]
    pub fn target_session_attrs(mut self, attrs: TargetSessionAttrs) -> Self {
        self.target_session_attrs = Some(attrs);
        self
    }

    /// Adds the per-connection settings to `options`: the statement timeout as a startup
    /// parameter, or, in pooler mode, no startup parameter a pooler would refuse.
    pub(crate) fn apply_to(&self, options: PgConnectOptions) -> PgConnectOptions {
        if self.pooler_mode {
            return options.extra_float_digits(None).statement_cache_capacity(0);
        }
        match self.statement_timeout {
            Some(timeout) => options.options([("statement_timeout", timeout.as_millis())]),
            None => options,
        }
    }

    /// Connects to `url` and returns a store that owns its connections.
    ///
    /// The URL is read as libpq reads it: `postgres://` or `postgresql://`, one host or a
    /// list tried in order (`postgres://app@h1:5432,h2:5433/app`), and
    /// `target_session_attrs` (`any`, `read-write`, `read-only`, `primary`, `standby`,
    /// `prefer-standby`; see [`TargetSessionAttrs`]); the rest as sqlx reads it.
    ///
    /// Fails with [`StoreError::InvalidDatabaseUrl`] (not transient: a configuration error)
    /// for a malformed URL, another scheme (`mysql://...`), or a URL that asks for TLS
    /// (`sslmode=require`, `verify-ca`, `verify-full`) in a build without TLS (the fix:
    /// par-store's `rustls` feature), before any connection is made; with
    /// [`StoreError::Unavailable`] when no server can be reached (the error names the hosts
    /// and ports).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), par_store::StoreError> {
    /// // The primary, wherever it is now.
    /// let store = par_store::PostgresStoreOptions::new()
    ///     .connect("postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, url: &str) -> Result<PostgresStore, StoreError> {
        let parsed = parse_url(url)?;
        self.connect_targets(self.targets(
            parsed.options,
            &parsed.hosts,
            parsed.target_session_attrs,
        ))
        .await
    }

    /// Like [`connect`](Self::connect), from parsed connect options (one host; give a list
    /// with [`hosts`](Self::hosts)).
    pub async fn connect_with(
        &self,
        options: PgConnectOptions,
    ) -> Result<PostgresStore, StoreError> {
        self.connect_targets(self.targets(options, &[], None)).await
    }

    async fn connect_targets(&self, targets: Targets) -> Result<PostgresStore, StoreError> {
        targets.check()?;
        let store = self.connect_lazy_targets(targets);
        // Open the first connection now, so that a wrong address fails here.
        store
            .run(Retry::Always, Returns::Row, || sqlx::query("SELECT 1"))
            .await?;
        Ok(store)
    }

    /// Where the store's connections go: this store's hosts if any were given, else the
    /// URL's (`url_hosts`), else the options' own; this store's `target_session_attrs`, else
    /// the URL's, else `any`.
    fn targets(
        &self,
        options: PgConnectOptions,
        url_hosts: &[(String, u16)],
        url_attrs: Option<TargetSessionAttrs>,
    ) -> Targets {
        let hosts = if self.hosts.is_empty() {
            url_hosts
        } else {
            &self.hosts
        };
        let attrs = self.target_session_attrs.or(url_attrs).unwrap_or_default();
        Targets::new(self.apply_to(options), hosts, attrs)
    }

    /// Like [`connect_with`](Self::connect_with), but connects on first use: nothing is
    /// checked here, and an unreachable server, a wrong password or options this build
    /// cannot serve (TLS without the `rustls` feature: [`StoreError::InvalidDatabaseUrl`])
    /// show as the first operation's error. Needs no runtime; an operation run without one
    /// fails with [`StoreError::NoRuntime`].
    ///
    /// ```
    /// use par_store::{sqlx::postgres::PgConnectOptions, PostgresStoreOptions};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let options: PgConnectOptions = "postgres://postgres@127.0.0.1:5432/postgres".parse()?;
    /// let store = PostgresStoreOptions::new().connect_lazy_with(options);
    /// # drop(store);
    /// # Ok(()) }
    /// ```
    pub fn connect_lazy_with(&self, options: PgConnectOptions) -> PostgresStore {
        self.connect_lazy_targets(self.targets(options, &[], None))
    }

    fn connect_lazy_targets(&self, targets: Targets) -> PostgresStore {
        let settings = OwnedSettings {
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            ping_idle_after: self.ping_idle_after,
            max_lifetime: self.max_connection_lifetime,
            idle_timeout: self.idle_timeout,
        };
        let protocol = if !self.pooler_mode {
            Protocol::Prepared
        } else {
            let begin = match self.statement_timeout {
                Some(timeout) => format!(
                    "BEGIN; SET LOCAL statement_timeout = {}",
                    timeout.as_millis()
                ),
                None => "BEGIN".to_owned(),
            };
            Protocol::Pooler { begin }
        };
        PostgresStore {
            connections: Connections::owned(targets, settings),
            protocol: Arc::new(protocol),
            max_parameters_len: self.max_parameters_len,
            max_request_lifetime: self.max_request_lifetime,
            operation_timeout: self.operation_timeout,
            citus_cleanup: Arc::default(),
            route: Arc::default(),
            migration_lock_timeout: self.migration_lock_timeout,
            consumed_markers: self.consumed_markers,
            consume_policy: self.consume_policy,
            closed: Arc::new(AtomicBool::new(false)),
            metrics: Arc::default(),
        }
    }
}
