//! The connections behind a [`PostgresStore`](crate::PostgresStore). How one statement runs
//! on them, and when it runs again, is [`execution`](crate::execution)'s.
//!
//! Two owners, one discipline:
//! - **The store's own pool** (built by `PostgresStore::connect` / `PostgresStoreOptions`): a
//!   `deadpool` pool of sqlx `PgConnection`s. Waiters queue on a fair (FIFO) semaphore, so more
//!   callers than connections all progress. A connection is pinged only when it has sat idle
//!   for `ping_idle_after`, so a busy store spends one round trip per operation, where sqlx's
//!   `PgPool` spends two (it pings every connection it takes back). Lifetime and idle limits are
//!   applied when a connection is handed out and by a reaper task.
//! - **The caller's `PgPool`** (`PostgresStore::new`): used as it is, with all of sqlx's pool
//!   promises (and its release ping).
//!
//! Either way, a connection whose operation did not finish (its future was dropped: a caller
//! that gave up, an operation timeout) or that failed at the connection level is discarded,
//! never handed to the next caller with unread replies.

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, WeakPool};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Either, Executor, PgConnection, PgPool, Postgres};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Id as RuntimeId};

use crate::error::StoreError;
use crate::hosts::Targets;
use crate::sql::ROLLBACK;

/// Settings of the store's own pool.
#[derive(Clone, Debug)]
pub(crate) struct OwnedSettings {
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) ping_idle_after: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

/// Where the store's connections come from.
#[derive(Clone)]
pub(crate) enum Connections {
    Shared(PgPool),
    Owned(Arc<OwnedPool>),
}

pub(crate) struct OwnedPool {
    pub(crate) pool: managed::Pool<Manager>,
    settings: OwnedSettings,
    /// True while a reaper task exists; its task clears it when it ends, or when its
    /// runtime shuts down and drops it, so the next operation starts another.
    reaper_running: Arc<AtomicBool>,
}

/// The longest a recycle ping may take before the connection is discarded and the next one
/// tried (or a new one opened); shorter when `acquire_timeout` is.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection of the store's own pool, with what the pool needs to know about it.
pub(crate) struct PooledConnection {
    conn: PgConnection,
    /// Sockets are registered with the runtime that opened them, which may not be driven
    /// while another runtime uses the store: such a connection is replaced, not used.
    runtime: RuntimeId,
    /// When its last operation finished.
    idle_since: Instant,
}

pub(crate) struct Manager {
    /// Where connections go: one host, or a list tried in order, and what a server must be
    /// (`target_session_attrs`).
    targets: Targets,
    settings: OwnedSettings,
    /// When a pooled connection was last found dead, in nanoseconds after `epoch` (0:
    /// never). Its siblings released before then probably died with it (a restart, a
    /// network cut): each is pinged before its next use, rather than failing a request of
    /// its own. An atomic, not a lock: every checkout reads it.
    last_loss: AtomicU64,
    epoch: Instant,
    /// Its connection gauges, registered at its first sample.
    #[cfg(feature = "metrics")]
    gauges: std::sync::OnceLock<crate::metrics::PoolGauges>,
}

impl Manager {
    pub(crate) fn record_loss(&self) {
        // At least 1: 0 means no loss.
        let lost = self.nanos_since_epoch(Instant::now()).max(1);
        self.last_loss.fetch_max(lost, Ordering::Relaxed);
    }

    fn released_before_a_loss(&self, pooled: &PooledConnection) -> bool {
        let lost = self.last_loss.load(Ordering::Relaxed);
        lost != 0 && self.nanos_since_epoch(pooled.idle_since) <= lost
    }

    /// `at` in nanoseconds after the manager was made (584 years fit).
    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl managed::Manager for Manager {
    type Type = PooledConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PooledConnection, sqlx::Error> {
        // Boxed, like the ping below: deadpool's checkout future holds this future inline,
        // and every operation allocates and copies its attempt, checkout included, whole.
        // Hosts are tried in order, each new connection kept only where the server fits
        // `target_session_attrs`; `lease` bounds the whole checkout.
        let conn = Box::pin(self.targets.open(self.settings.acquire_timeout)).await?;
        Ok(PooledConnection {
            conn,
            runtime: Handle::current().id(),
            idle_since: Instant::now(),
        })
    }

    async fn recycle(
        &self,
        pooled: &mut PooledConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        // One clock read for every limit: each checkout pays for it.
        let now = Instant::now();
        if outlived(&self.settings, pooled, metrics, now) {
            return Err(RecycleError::message("past its lifetime or idle timeout"));
        }
        if pooled.runtime != Handle::current().id() {
            return Err(RecycleError::message("opened on another runtime"));
        }
        let idle = now.saturating_duration_since(pooled.idle_since);
        let idle_long = self
            .settings
            .ping_idle_after
            .is_some_and(|threshold| idle >= threshold);
        if idle_long || self.released_before_a_loss(pooled) {
            // A ping that gets no answer (a network that swallows packets) is a dead
            // connection too: it must not use up the caller's whole acquire_timeout.
            // With `target_session_attrs`, the check of the server's state is the ping: a
            // primary demoted while the connection sat idle is found here, and the
            // connection (and, through the recorded loss, its idle siblings) replaced.
            let limit = PING_TIMEOUT.min(self.settings.acquire_timeout);
            let ping = async {
                match self.targets.still_fits(&mut pooled.conn).await {
                    None => pooled.conn.ping().await.map(|()| true),
                    Some(fits) => fits,
                }
            };
            match tokio::time::timeout(limit, Box::pin(ping)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    self.record_loss();
                    return Err(RecycleError::message(
                        "the server no longer fits target_session_attrs",
                    ));
                }
                Ok(Err(err)) => {
                    self.record_loss();
                    return Err(err.into());
                }
                Err(_) => {
                    self.record_loss();
                    return Err(RecycleError::message("no answer to a ping in time"));
                }
            }
        }
        Ok(())
    }
}

/// True when a connection must not be handed out again at `now`: older than
/// `max_lifetime`, or idle for longer than `idle_timeout`.
fn outlived(
    settings: &OwnedSettings,
    pooled: &PooledConnection,
    metrics: &Metrics,
    now: Instant,
) -> bool {
    settings
        .max_lifetime
        .is_some_and(|max| now.saturating_duration_since(metrics.created) >= max)
        || settings
            .idle_timeout
            .is_some_and(|max| now.saturating_duration_since(pooled.idle_since) >= max)
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connections::Shared(pool) => f
                .debug_struct("SharedPool")
                .field("size", &pool.size())
                .field("idle", &pool.num_idle())
                .finish(),
            Connections::Owned(owned) => {
                let status = owned.pool.status();
                f.debug_struct("OwnedPool")
                    .field("max_size", &status.max_size)
                    .field("size", &status.size)
                    .field("available", &status.available)
                    .field("waiting", &status.waiting)
                    .finish()
            }
        }
    }
}

/// A connection checked out for one operation. Dropped before [`finish`](Lease::finish)
/// (the operation's future was dropped, or it failed at the connection level), it is
/// discarded: its replies may still be on the wire, or the connection may be dead; except
/// a pooler-mode lease of the store's own pool that was merely dropped (a caller that gave
/// up, an operation timeout): see [`roll_back_if_dropped`](Lease::roll_back_if_dropped).
pub(crate) struct Lease {
    conn: Option<Either<PoolConnection<Postgres>, Object<Manager>>>,
    /// Freshly opened for this operation (a retry on it would meet the same fault).
    pub(crate) fresh: bool,
    /// The runtime the lease was taken on: a caller's connection dropped outside any
    /// runtime is closed by a task there.
    runtime: Handle,
    /// Dropped unfinished, the connection is rolled back and kept rather than closed.
    roll_back_if_dropped: bool,
}

impl Lease {
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        match &mut self.conn {
            Some(Either::Left(pooled)) => Ok(&mut **pooled),
            Some(Either::Right(object)) => Ok(&mut object.conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Marks a lease whose operation runs inside an explicit transaction (pooler mode): if
    /// it is dropped before it finished, its connection is not closed (behind a transaction
    /// pooler, closing a client connection in a transaction closes the pooler's server
    /// connection too) but rolled back by a task, which first reads whatever replies are
    /// still due, and given back to the pool; discarded when that does not succeed within
    /// the ping timeout. Nothing of the operation commits: the transaction had not reached
    /// `COMMIT`, or its outcome was already unknown to the caller who gave up.
    pub(crate) fn roll_back_if_dropped(&mut self) {
        self.roll_back_if_dropped = matches!(self.conn, Some(Either::Right(_)));
    }

    /// Discards the connection (lost, or not fit for another operation).
    pub(crate) fn discard(mut self) {
        self.roll_back_if_dropped = false;
        drop(self);
    }

    /// The operation finished and the connection is fit for the next one.
    pub(crate) fn finish(mut self) {
        if let Some(Either::Right(object)) = &mut self.conn {
            object.idle_since = Instant::now();
        }
        #[cfg(feature = "metrics")]
        let pool = match &self.conn {
            Some(Either::Right(object)) => Object::pool(object),
            _ => None,
        };
        // Dropping the handle gives the connection back to its pool.
        drop(self.conn.take());
        #[cfg(feature = "metrics")]
        if let Some(pool) = pool {
            record_pool(&pool);
        }
    }
}

/// Samples the pool's connection gauges.
#[cfg(feature = "metrics")]
fn record_pool(pool: &managed::Pool<Manager>) {
    pool.manager()
        .gauges
        .get_or_init(crate::metrics::PoolGauges::register)
        .record(pool.status());
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.conn.take() {
            None => {}
            Some(Either::Right(object)) if self.roll_back_if_dropped => {
                let runtime = Handle::try_current().unwrap_or_else(|_| self.runtime.clone());
                // The slot stays taken until the task gives the connection back or closes
                // it; if the runtime has shut down, the task is dropped and so is the
                // connection.
                drop(runtime.spawn(roll_back_and_return(object)));
            }
            // Taking it out of the pool frees its slot; dropping it closes the socket.
            Some(Either::Right(object)) => drop(Object::take(object)),
            // Closed, not given back: sqlx sends Terminate from a task, keeps the pool's
            // permit until the connection is closed (so `max_connections` holds), then
            // refills `min_connections`. Its drop spawns that task, which needs a runtime:
            // outside any, the one the lease was taken on. If that runtime has shut down,
            // the task is dropped at once, which closes the socket and frees the slot.
            Some(Either::Left(mut pooled)) => {
                pooled.close_on_drop();
                let _entered = Handle::try_current().is_err().then(|| self.runtime.enter());
                drop(pooled);
            }
        }
    }
}

/// Rolls back the transaction a dropped pooler-mode lease left open and gives its connection
/// back to the pool; closes it when that fails or takes longer than the ping timeout.
async fn roll_back_and_return(mut object: Object<Manager>) {
    let rolled_back = tokio::time::timeout(PING_TIMEOUT, async {
        // Before the ROLLBACK, sqlx reads the replies still due; an error among them (the
        // interrupted statement's, e.g. its statement timeout) is reported in its place and
        // the ROLLBACK is sent again. A lost connection fails every attempt.
        for _ in 0..3 {
            match object.conn.execute(sqlx::raw_sql(ROLLBACK)).await {
                Ok(_) => return true,
                Err(sqlx::Error::Database(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    })
    .await;
    if rolled_back == Ok(true) {
        object.idle_since = Instant::now();
        drop(object); // back to the pool
    } else {
        drop(Object::take(object));
    }
}

impl Connections {
    pub(crate) fn owned(targets: Targets, settings: OwnedSettings) -> Self {
        // deadpool bounds the wait, each creation and each recycle separately, and moves on
        // to the next idle connection after a failed recycle: one checkout could take
        // wait + n x recycle. `lease` bounds the whole checkout by `acquire_timeout`
        // instead, and `recycle` its pings by `PING_TIMEOUT`.
        let timeouts = managed::Timeouts {
            wait: None,
            create: None,
            recycle: None,
        };
        let manager = Manager {
            targets,
            settings: settings.clone(),
            last_loss: AtomicU64::new(0),
            epoch: Instant::now(),
            #[cfg(feature = "metrics")]
            gauges: std::sync::OnceLock::new(),
        };
        let builder = managed::Pool::builder(manager)
            .max_size(usize::try_from(settings.max_connections).unwrap_or(usize::MAX))
            .timeouts(timeouts)
            .runtime(deadpool::Runtime::Tokio1)
            .queue_mode(managed::QueueMode::Lifo);
        let pool = match builder.build() {
            Ok(pool) => pool,
            // deadpool 0.13 refuses only a timeout without a runtime (`PoolBuilder::build`);
            // every deadpool timeout is off here, and the runtime is named all the same.
            // Building needs no running runtime: an operation without one fails with
            // `StoreError::NoRuntime` (`PostgresStore::run`).
            Err(managed::BuildError::NoRuntimeSpecified) => {
                unreachable!("deadpool refused a pool without timeouts")
            }
        };
        Connections::Owned(Arc::new(OwnedPool {
            pool,
            settings,
            reaper_running: Arc::new(AtomicBool::new(false)),
        }))
    }

    pub(crate) fn shared_pool(&self) -> Option<&PgPool> {
        match self {
            Connections::Shared(pool) => Some(pool),
            Connections::Owned(_) => None,
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Connections::Shared(pool) => pool.close().await,
            Connections::Owned(owned) => owned.pool.close(),
        }
    }

    /// Checks a connection out: from the caller's pool, or from the store's own (in FIFO
    /// order of the waiters, pinged first when it sat idle a while), within
    /// `acquire_timeout` all told: waiting, opening and pinging.
    pub(crate) async fn lease(&self) -> Result<Lease, StoreError> {
        let runtime = Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        match self {
            Connections::Shared(pool) => Ok(Lease {
                // Boxed: sqlx's acquire future (7.5 KB, connecting included) would otherwise
                // set the size of every checkout, the store's own pool's too.
                conn: Some(Either::Left(Box::pin(pool.acquire()).await?)),
                fresh: false,
                runtime,
                roll_back_if_dropped: false,
            }),
            Connections::Owned(owned) => {
                owned.start_reaper();
                let object =
                    match tokio::time::timeout(owned.settings.acquire_timeout, owned.pool.get())
                        .await
                    {
                        Ok(got) => got.map_err(|err| owned.pool_error(err))?,
                        Err(_) => return Err(owned.checkout_timed_out()),
                    };
                #[cfg(feature = "metrics")]
                record_pool(&owned.pool);
                let fresh = Object::metrics(&object).recycle_count == 0;
                Ok(Lease {
                    conn: Some(Either::Right(object)),
                    fresh,
                    runtime,
                    roll_back_if_dropped: false,
                })
            }
        }
    }

    /// Applies the migrations on a session of their own, closed afterwards (its settings and
    /// the advisory lock of the run must not outlive it): a dedicated connection to `direct`
    /// when given, else to the store's own address; on a caller's pool, one of its
    /// connections (opened with the pool's options and hooks), closed instead of given back.
    pub(crate) async fn migrate(
        &self,
        direct: Option<&PgConnectOptions>,
        lock_timeout: Option<Duration>,
    ) -> Result<(), StoreError> {
        if Handle::try_current().is_err() {
            return Err(StoreError::NoRuntime);
        }
        let connect_timeout = self.acquire_timeout();
        // To `direct`, or to the store's own hosts, in order, where the server fits the
        // store's `target_session_attrs` (with `read-write`, the primary).
        let (address, opened) = match (direct, self) {
            (Some(options), _) => (
                format!("{}:{}", options.get_host(), options.get_port()),
                tokio::time::timeout(
                    connect_timeout,
                    Box::pin(PgConnection::connect_with(options)),
                )
                .await,
            ),
            (None, Connections::Owned(owned)) => {
                let targets = &owned.pool.manager().targets;
                (
                    targets.addresses(),
                    tokio::time::timeout(connect_timeout, Box::pin(targets.open(connect_timeout)))
                        .await,
                )
            }
            (None, Connections::Shared(_)) => {
                let mut lease = self.lease().await?;
                let result = crate::migrations::run(lease.conn()?, lock_timeout).await;
                drop(lease); // not finished: closed
                return result;
            }
        };
        let mut conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => return Err(StoreError::from(err).connecting_to(address)),
            Err(_) => {
                return Err(StoreError::Unavailable {
                    source: format!("connecting to {address} took longer than {connect_timeout:?}")
                        .into(),
                })
            }
        };
        let result = crate::migrations::run(&mut conn, lock_timeout).await;
        // A polite goodbye; the session, its settings and its locks end with the socket anyway.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        result
    }

    /// How long a checkout may take: the store's `acquire_timeout`, or the caller's pool's.
    fn acquire_timeout(&self) -> Duration {
        match self {
            Connections::Shared(pool) => pool.options().get_acquire_timeout(),
            Connections::Owned(owned) => owned.settings.acquire_timeout,
        }
    }
}

impl OwnedPool {
    /// Closes connections past their lifetime or idle timeout while nobody asks for them,
    /// from a task on the runtime of the operation that started it; it ends with the pool.
    /// When that runtime shuts down the task goes with it, and the next operation (on
    /// another runtime) starts a new one.
    fn start_reaper(&self) {
        let period = [self.settings.max_lifetime, self.settings.idle_timeout]
            .into_iter()
            .flatten()
            .min();
        let Some(period) = period else { return };
        if self.reaper_running.load(Ordering::Acquire)
            || self.reaper_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let running = ReaperRunning(Arc::clone(&self.reaper_running));
        let period = (period / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        let pool = self.pool.weak();
        tokio::spawn(async move {
            let _running = running;
            reap(pool, period).await;
        });
    }

    /// The whole checkout took longer than `acquire_timeout`.
    fn checkout_timed_out(&self) -> StoreError {
        let status = self.pool.status();
        let manager = self.pool.manager();
        let message = if status.size >= status.max_size && status.available == 0 {
            format!(
                "no connection became free within {:?} (all {} in use)",
                self.settings.acquire_timeout, self.settings.max_connections
            )
        } else {
            format!(
                "no working connection to {} within {:?} (idle ones did not answer a ping \
                 in time, or opening a new one took too long)",
                manager.targets.addresses(),
                self.settings.acquire_timeout
            )
        };
        StoreError::Unavailable {
            source: message.into(),
        }
    }

    fn pool_error(&self, err: PoolError<sqlx::Error>) -> StoreError {
        let manager = self.pool.manager();
        let message = match err {
            PoolError::Backend(err) => {
                return StoreError::from(err).connecting_to(manager.targets.addresses())
            }
            // deadpool's own timeouts are off: `lease` bounds the whole checkout.
            PoolError::Closed => "the store was closed".to_owned(),
            other => other.to_string(),
        };
        StoreError::Unavailable {
            source: message.into(),
        }
    }
}

/// Clears [`OwnedPool::reaper_running`] when the reaper's task ends or is dropped.
struct ReaperRunning(Arc<AtomicBool>);

impl Drop for ReaperRunning {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn reap(pool: WeakPool<Manager>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let settings = pool.manager().settings.clone();
        let now = Instant::now();
        let retired = pool.retain(|pooled, metrics| !outlived(&settings, pooled, &metrics, now));
        drop(pool);
        let here = Handle::current().id();
        for pooled in retired.removed {
            if pooled.runtime == here {
                let _ = tokio::time::timeout(Duration::from_secs(1), pooled.conn.close()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkout is part of every operation's attempt, which is allocated and copied whole
    /// on each operation: sqlx's `acquire` and `connect` futures and the recycle ping are
    /// boxed so that it stays small (8.7 KB without those boxes).
    #[tokio::test]
    async fn a_checkout_future_is_small() {
        let options = PgConnectOptions::new().host("127.0.0.1").port(9);
        let owned = Connections::owned(
            Targets::new(options.clone(), &[], crate::hosts::TargetSessionAttrs::Any),
            OwnedSettings {
                max_connections: 1,
                acquire_timeout: Duration::from_secs(1),
                ping_idle_after: None,
                max_lifetime: None,
                idle_timeout: None,
            },
        );
        let shared =
            Connections::Shared(sqlx::postgres::PgPoolOptions::new().connect_lazy_with(options));
        for connections in [owned, shared] {
            let checkout = connections.lease();
            let size = size_of_val(&checkout);
            assert!(size <= 2048, "{connections:?}: {size} bytes");
        }
    }
}
