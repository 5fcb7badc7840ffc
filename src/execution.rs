//! How one statement runs on the store's connections: whether it may have taken effect
//! when its connection fails, and when it may run again on another connection.
//!
//! [`pool`](crate::pool) hands out connections (leases); this module decides what a failure
//! on one of them means.

use futures_util::StreamExt;
use sqlx::postgres::{PgDatabaseError, PgRow, PgSeverity};
use sqlx::{Either, Executor, PgConnection, Postgres};

use crate::error::StoreError;
use crate::pool::Connections;

/// What one statement returned: its first row and the number of rows it affected.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) row: Option<PgRow>,
    pub(crate) rows_affected: u64,
}

/// Whether a statement may run a second time after its connection failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retry {
    /// A read: running it again changes nothing.
    Always,
    /// A write: only when the server said, before the statement completed, that the
    /// connection was gone (so it cannot have committed).
    IfNotRun,
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

/// A failed attempt, and whether its statement may have taken effect.
struct Failure {
    error: sqlx::Error,
    may_have_run: bool,
}

impl Connections {
    /// Runs one statement on a connection of the store, once more on another connection
    /// when the first was found dead and `retry` allows it.
    pub(crate) async fn run<'q>(
        &self,
        protocol: &Protocol,
        retry: Retry,
        statement: impl Fn() -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Outcome, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut lease = self.lease().await?;
            let conn = lease.conn()?;
            let result = match protocol {
                Protocol::Prepared => run_statement(conn, statement()).await,
                Protocol::Pooler { begin } => in_transaction(conn, begin, statement()).await,
            };
            match result {
                Ok(outcome) => {
                    lease.finish();
                    return Ok(outcome);
                }
                Err(failure) if !connection_lost(&failure.error) => {
                    // The server refused the statement; the connection itself is fine,
                    // except inside a pooler transaction, which is now aborted.
                    if matches!(protocol, Protocol::Prepared) {
                        lease.finish();
                    }
                    return Err(failure.error.into());
                }
                Err(failure) => {
                    let fresh = lease.fresh;
                    drop(lease); // discarded
                    if let Connections::Owned(owned) = self {
                        owned.pool.manager().record_loss();
                    }
                    let again = retry == Retry::Always
                        || (retry == Retry::IfNotRun && !failure.may_have_run);
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

/// Runs one statement, noting whether it completed before any failure.
async fn run_statement(
    conn: &mut PgConnection,
    statement: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> Result<Outcome, Failure> {
    let mut outcome = Outcome::default();
    let mut completed = false;
    let mut results = conn.fetch_many(statement);
    while let Some(item) = results.next().await {
        match item {
            Ok(Either::Left(done)) => {
                completed = true;
                outcome.rows_affected += done.rows_affected();
            }
            Ok(Either::Right(row)) => {
                if outcome.row.is_none() {
                    outcome.row = Some(row);
                }
            }
            Err(error) => {
                // In the extended protocol the implicit transaction commits at Sync, after
                // CommandComplete. An error the server reported before that means nothing
                // committed; a broken connection after it, or at any point without a word
                // from the server, leaves it open.
                let server_said_so = matches!(error, sqlx::Error::Database(_));
                return Err(Failure {
                    may_have_run: completed || !server_said_so,
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
) -> Result<Outcome, Failure> {
    let not_run = |error| Failure {
        error,
        may_have_run: false,
    };
    // `begin` is built from a number by the options, never from input.
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(begin.to_owned())))
        .await
        .map_err(not_run)?;
    let outcome = run_statement(conn, statement.persistent(false))
        .await
        .map_err(|failure| Failure {
            // Nothing commits before COMMIT.
            may_have_run: false,
            ..failure
        })?;
    conn.execute(sqlx::raw_sql("COMMIT"))
        .await
        .map_err(|error| Failure {
            may_have_run: true,
            error,
        })?;
    Ok(outcome)
}

/// True when the connection cannot serve another statement: an I/O or protocol failure, or
/// a FATAL error from the server (it closes the session after one).
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}
