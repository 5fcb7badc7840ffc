//! Connections the PostgreSQL store keeps checked out between operations.
//!
//! sqlx's pool pings every connection it takes back (`PoolConnection::return_to_pool`): one
//! extra round trip per operation, which no pool setting turns off, and the main reason a
//! store on a bare `PgPool` ran at 0.6-0.8 of `pgbench` (BENCHMARKS.md). So the store keeps
//! the connections of a busy period checked out and reuses them directly, last used first.
//! A connection idle for `keep_idle` goes back to the pool: at the next checkout, or through
//! a sweeper task when no operation comes, so that the pool's own limits, idle timeouts and
//! `close()` keep working, and other users of a shared pool are not starved.

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgPool, Postgres};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// A stack of checked-out connections with the instant each was last released.
pub(crate) struct Connections {
    pool: PgPool,
    keep_idle: Duration,
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("kept", &self.lock().len())
            .field("keep_idle", &self.keep_idle)
            .finish()
    }
}

impl Connections {
    /// Keeps connections of `pool` for up to `keep_idle` between operations. Without a tokio
    /// runtime to run the sweeper on, nothing is kept: every operation uses the pool.
    pub(crate) fn new(pool: PgPool, keep_idle: Duration) -> Arc<Connections> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let connections = Arc::new(Connections {
            pool,
            keep_idle: if runtime.is_some() {
                keep_idle
            } else {
                Duration::ZERO
            },
            idle: Mutex::new(Vec::new()),
        });
        if let Some(runtime) = runtime {
            if !keep_idle.is_zero() {
                runtime.spawn(sweep(Arc::downgrade(&connections), keep_idle));
            }
        }
        connections
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection for one operation: the most recently released one, pinged first when it
    /// may have died meanwhile (idle longer than `verify_after`), else one from the pool.
    pub(crate) async fn checkout(
        &self,
        verify_after: Duration,
    ) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        loop {
            let popped = self.lock().pop();
            let Some((mut conn, released)) = popped else {
                break;
            };
            if self.pool.is_closed() {
                continue; // dropping it closes it
            }
            if released.elapsed() < verify_after {
                return Ok(conn);
            }
            if conn.ping().await.is_ok() {
                return Ok(conn);
            }
            conn.close_on_drop();
        }
        self.pool.acquire().await
    }

    /// Takes a connection back after an operation. A connection whose operation failed for
    /// any reason but an error reported by the server may be broken: it is closed, not kept.
    pub(crate) fn release<T>(
        &self,
        mut conn: PoolConnection<Postgres>,
        outcome: &Result<T, sqlx::Error>,
    ) {
        let healthy = matches!(outcome, Ok(_) | Err(sqlx::Error::Database(_)));
        if !healthy {
            conn.close_on_drop();
        } else if !self.keep_idle.is_zero() && !self.pool.is_closed() {
            self.lock().push((conn, Instant::now()));
        }
    }

    /// Hands connections idle for `keep_idle` or longer back to the pool.
    fn return_idle(&self) {
        let keep_idle = self.keep_idle;
        let stale: Vec<_> = {
            let mut idle = self.lock();
            // Oldest first: the stack's bottom.
            let fresh_from = idle
                .iter()
                .position(|(_, released)| released.elapsed() < keep_idle)
                .unwrap_or(idle.len());
            idle.drain(..fresh_from).collect()
        };
        drop(stale); // outside the lock: each goes back to the pool
    }
}

/// Returns idle connections to the pool every `keep_idle`, until the store is gone.
async fn sweep(connections: Weak<Connections>, keep_idle: Duration) {
    let mut ticks = tokio::time::interval(keep_idle);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match connections.upgrade() {
            Some(connections) => connections.return_idle(),
            None => return,
        }
    }
}
