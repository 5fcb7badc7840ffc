//! How one statement runs on the store's connections: whether it may have taken effect
//! when its connection fails, and when it may run again on another connection.
//!
//! [`pool`](crate::pool) hands out connections (leases); this module decides what a failure
//! on one of them means. It may use `pool`; `pool` never uses it.
//!
//! # When a statement runs again
//!
//! A statement runs at most twice, the second time on another connection, and only when the
//! first connection was a pooled one (not opened for this operation) that turned out dead.
//! Whether the second run is allowed depends on the statement ([`Retry`]):
//!
//! | statement | [`Retry`] | runs again after a lost connection when |
//! |---|---|---|
//! | reads (`get_by_hash`), cleanup batches, `SELECT 1` | [`Always`](Retry::Always) | always: a second run changes nothing a first run did not |
//! | `store`, `consume_by_hash`, `delete_by_client_id` | [`IfServerAborted`](Retry::IfServerAborted) | PostgreSQL itself proved that nothing committed (below) |
//! | `store_or_replace` | [`Never`](Retry::Never) | never |
//!
//! **`store_or_replace` never runs again** once it may have been sent: if its first run
//! committed and another caller consumed the request before the second run, the second run
//! would put the consumed request back (a `request_uri` usable twice). Its caller gets the
//! (transient) error and decides.
//!
//! **A write runs again only on PostgreSQL's own word.** In the extended protocol the
//! implicit transaction commits at Sync, after CommandComplete has been queued, and
//! PostgreSQL sends nothing after a commit but CommandComplete and ReadyForQuery. So an
//! ErrorResponse at severity FATAL *from PostgreSQL*, received *before* CommandComplete, means
//! the session ended with the transaction aborted. Only SQLSTATEs that PostgreSQL itself
//! sends at FATAL when it ends a session count, and none that a proxy sends:
//!
//! | SQLSTATE | sent by PostgreSQL at FATAL when | why nothing committed |
//! |---|---|---|
//! | `57P01` admin_shutdown | `pg_terminate_backend`, a smart or fast shutdown | the interrupt is taken between statements or inside one, never inside the commit (interrupts are held there); the transaction is aborted |
//! | `57P02` crash_shutdown | another backend crashed and the server resets | the session dies with its transaction, which crash recovery does not commit (PostgreSQL 14 and later send it at WARNING, which does not count: then only the end of the connection is seen, and the write does not run again) |
//! | `57P03` cannot_connect_now | the server is starting, stopping or in recovery | sent instead of serving a session: nothing ran |
//! | `57P05` idle_session_timeout | the session sat idle past `idle_session_timeout` | sent while idle, before the statement arrived: it never ran |
//! | `55000` (at FATAL) | the database no longer accepts connections (`ALLOW_CONNECTIONS false`) | sent at session start, before any statement |
//!
//! Never on anything else, in particular:
//! - **not on `08xxx`** (`08P01`, `08006`, ...) nor any other FATAL a proxy can send:
//!   PgBouncer labels its own errors FATAL (`08P01 query timeout` from `query_timeout`,
//!   "server conn crashed?" when it loses the server link) and sends them whenever it gives
//!   up, also after the server committed: a re-run would then answer `Ok(None)` to a consume
//!   that succeeded, or `Duplicate` to a `store` of the caller's own request;
//! - not on the end of the connection (EOF, I/O or TLS errors) without a FATAL: the server
//!   may have committed and its reply been lost;
//! - not after CommandComplete: the statement completed and commits at Sync.
//!
//! In pooler mode a statement runs inside `BEGIN ... COMMIT` (sqlx sends an unnamed
//! statement in two flights, Parse then Bind, each ending in Sync; only the transaction keeps
//! a transaction-mode pooler from binding the second to another client's statement, so the
//! default mode's rule above cannot serve there): whatever fails before COMMIT
//! is sent cannot have committed, whoever reports it, and a write runs again after it as it
//! would after PostgreSQL's word (`store_or_replace` still never does); a failure during
//! COMMIT leaves the outcome open and nothing runs again.
//!
//! # Errors that keep or discard the connection
//!
//! - A lost connection (an I/O, TLS or protocol failure, or FATAL) is discarded.
//! - A read-only server (`25006`, a demoted primary after a failover, or a standby) fails
//!   the operation with [`StoreError::Unavailable`], and the connection is discarded: the
//!   next one may reach the new primary. In the store's own pool its idle siblings are
//!   closed too (they were opened to the same address before the failover); a caller's
//!   `PgPool` keeps them until each fails once or sqlx retires it.
//! - Any other error the server reports (a statement timeout, a constraint) leaves the
//!   connection usable; in pooler mode the store sends `ROLLBACK` first (so that the
//!   pooler's server connection is freed too), and discards the connection only when that
//!   fails.

use futures_util::StreamExt;
use sqlx::postgres::{PgDatabaseError, PgRow, PgSeverity};
use sqlx::{Either, Executor, PgConnection, Postgres};

use crate::error::{StoreError, READ_ONLY};
use crate::pool::Connections;
use crate::sql::{COMMIT, ROLLBACK};

/// What one statement returned: its first row, if any. Every statement of the store that
/// changes rows says what it did in that row.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) row: Option<PgRow>,
}

/// Whether a statement may run a second time after its connection was lost (see the
/// module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retry {
    /// Reads and cleanup batches: running them again changes nothing.
    Always,
    /// `store`, `consume_by_hash`, `delete_by_client_id`: only when PostgreSQL proved that
    /// nothing committed (or, in pooler mode, COMMIT was not sent).
    IfServerAborted,
    /// `store_or_replace`: a second run could resurrect a request consumed in between.
    Never,
}

/// What the caller reads of a statement's result.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Returns {
    /// Its first row, if any ([`Outcome::row`]).
    Row,
}

/// How statements are sent.
#[derive(Clone, Debug)]
pub(crate) enum Protocol {
    /// Named prepared statements, cached per connection: one round trip per statement.
    Prepared,
    /// For transaction-mode poolers (PgBouncer, Supavisor) without prepared-statement support:
    /// unnamed statements inside an explicit transaction, which pins one server connection
    /// from parse to commit; `begin` opens it (and sets `statement_timeout` for it).
    Pooler { begin: String },
}

/// A failed attempt.
struct Failure {
    error: sqlx::Error,
    /// The statement may have taken effect.
    may_have_run: bool,
    /// A pooler-mode transaction was left open (aborted) on the connection.
    open_transaction: bool,
}

impl Connections {
    /// Runs one statement on a connection of the store, once more on another connection
    /// when the first was found dead and `retry` allows it (see the module documentation).
    pub(crate) async fn run<'q>(
        &self,
        protocol: &Protocol,
        retry: Retry,
        returns: Returns,
        statement: impl Fn() -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Outcome, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut lease = self.lease().await?;
            if matches!(protocol, Protocol::Pooler { .. }) {
                lease.roll_back_if_dropped();
            }
            let conn = lease.conn()?;
            let result = match protocol {
                Protocol::Prepared => run_statement(conn, statement(), retry, returns).await,
                Protocol::Pooler { begin } => {
                    in_transaction(conn, begin, statement(), retry, returns).await
                }
            };
            match result {
                Ok(outcome) => {
                    lease.finish();
                    return Ok(outcome);
                }
                Err(failure) if !connection_lost(&failure.error) => {
                    // The server refused the statement; the connection itself is fine,
                    // unless the server is read-only (the next connection may reach the
                    // new primary). A pooler transaction is rolled back first.
                    if read_only(&failure.error) {
                        lease.discard();
                        // Its idle siblings reach the same server: replaced before their
                        // next use rather than each failing a request of its own.
                        if let Connections::Owned(owned) = self {
                            drop(owned.pool.retain(|_, _| false));
                        }
                    } else if !failure.open_transaction {
                        lease.finish();
                    } else if let Ok(conn) = lease.conn() {
                        if conn.execute(sqlx::raw_sql(ROLLBACK)).await.is_ok() {
                            lease.finish();
                        } else {
                            lease.discard();
                        }
                    }
                    return Err(failure.error.into());
                }
                Err(failure) => {
                    let fresh = lease.fresh;
                    lease.discard();
                    if let Connections::Owned(owned) = self {
                        owned.pool.manager().record_loss();
                    }
                    let again = match retry {
                        Retry::Always => true,
                        Retry::IfServerAborted => !failure.may_have_run,
                        Retry::Never => false,
                    };
                    if attempts > 1 || fresh || !again {
                        return Err(failure.error.into());
                    }
                    tracing::debug!(
                        error = %failure.error,
                        "a pooled connection was found dead; running the statement on another"
                    );
                }
            }
        }
    }
}

/// Runs one statement, noting whether it may have taken effect when it fails.
async fn run_statement(
    conn: &mut PgConnection,
    statement: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    retry: Retry,
    returns: Returns,
) -> Result<Outcome, Failure> {
    if returns == Returns::Row && retry != Retry::IfServerAborted {
        // Neither the row count nor whether CommandComplete came before a failure matters
        // here: sqlx's `fetch_optional` reads the replies to the end as `fetch_many` does,
        // through one stream where `fetch_many` nests a second (about 1,200 instructions a
        // statement, callgrind). Whether it may have run is then unknown: assumed.
        return match conn.fetch_optional(statement).await {
            Ok(row) => Ok(Outcome { row }),
            Err(error) => Err(Failure {
                may_have_run: true,
                open_transaction: false,
                error,
            }),
        };
    }
    let mut outcome = Outcome::default();
    let mut completed = false;
    let mut results = conn.fetch_many(statement);
    while let Some(item) = results.next().await {
        match item {
            Ok(Either::Left(_done)) => {
                completed = true;
            }
            Ok(Either::Right(row)) => {
                if outcome.row.is_none() {
                    outcome.row = Some(row);
                }
            }
            Err(error) => {
                // The implicit transaction commits at Sync, after CommandComplete. Before
                // that, an ordinary error aborts it (the session goes on), and so does a
                // session PostgreSQL itself ended; anything else (a proxy's FATAL, the end
                // of the connection) may have come after the commit.
                let not_run = !completed && (!connection_lost(&error) || server_aborted(&error));
                return Err(Failure {
                    may_have_run: !not_run,
                    open_transaction: false,
                    error,
                });
            }
        }
    }
    Ok(outcome)
}

/// Runs one statement inside `BEGIN ... COMMIT`, unnamed: behind a transaction-mode pooler
/// this keeps parse, bind and execute on one server connection.
async fn in_transaction(
    conn: &mut PgConnection,
    begin: &str,
    statement: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    retry: Retry,
    returns: Returns,
) -> Result<Outcome, Failure> {
    // Nothing commits before COMMIT is sent.
    let not_run = |error| Failure {
        error,
        may_have_run: false,
        open_transaction: true,
    };
    // `begin` is built from a number by the options, never from input.
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(begin.to_owned())))
        .await
        .map_err(not_run)?;
    let outcome = run_statement(conn, statement.persistent(false), retry, returns)
        .await
        .map_err(|failure| not_run(failure.error))?;
    conn.execute(sqlx::raw_sql(COMMIT))
        .await
        .map_err(|error| Failure {
            error,
            may_have_run: true,
            // A COMMIT that failed ended the transaction all the same.
            open_transaction: false,
        })?;
    Ok(outcome)
}

/// True when the connection cannot serve another statement: an I/O or protocol failure, or
/// a FATAL error (the server, or a proxy, closes the session after one).
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}

/// The SQLSTATEs with which PostgreSQL itself ends a session at FATAL without committing
/// anything of the statement in flight (justified one by one in the module documentation).
const SERVER_ABORTS: [&str; 5] = ["57P01", "57P02", "57P03", "57P05", "55000"];

/// True for an ErrorResponse at severity FATAL whose SQLSTATE only PostgreSQL sends when it
/// aborts a session: proof that the statement in flight did not commit, when it came before
/// CommandComplete.
fn server_aborted(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| pg.severity() == PgSeverity::Fatal && SERVER_ABORTS.contains(&pg.code()))
}

/// True for `25006` (read_only_sql_transaction): the server is a standby or a demoted
/// primary.
pub(crate) fn read_only(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(READ_ONLY))
}
