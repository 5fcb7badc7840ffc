//! What the store sends to PostgreSQL, counted by the server: exactly one statement per
//! operation, no transaction wrapper, each statement prepared once per connection.
//!
//! Counted on both sides of the wire, with nothing to install on the server:
//! - the client's messages, by a small TCP proxy in front of the server that reads the
//!   frontend protocol: one Bind + Execute per operation, Parse only on first use, and no
//!   simple Query (sqlx sends `BEGIN`/`COMMIT` that way, so there is no transaction wrapper);
//! - the server's `pg_stat_database.xact_commit` for the test's own database: exactly one
//!   committed transaction per operation (and one per Parse);
//! - `pg_stat_user_tables` (one row inserted and one deleted per lifecycle) and
//!   `pg_prepared_statements` of the single pooled connection (the three statements, once).
//!
//! Statistics reach the shared counters when a backend flushes them; the workload's
//! connection is made to flush with `pg_stat_force_next_flush()` (PostgreSQL 15+), which
//! takes effect before the server answers, and nothing else connects to the test database
//! while counting. No timing is measured.

mod common;

use chrono::{Duration, Utc};
use common::{admin_connection, TestDb};
use par_store::sqlx::postgres::PgSslMode;
use par_store::sqlx::{self, PgConnection, PgPool, Row};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIFECYCLES: usize = 50;

/// Transactions of one database, as the server counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transactions {
    commits: i64,
    rollbacks: i64,
}

impl std::ops::Sub for Transactions {
    type Output = Transactions;
    fn sub(self, before: Transactions) -> Transactions {
        Transactions {
            commits: self.commits - before.commits,
            rollbacks: self.rollbacks - before.rollbacks,
        }
    }
}

/// Makes the workload connection publish its statistics. This statement is itself one
/// committed transaction, flushed with the rest.
async fn flush_stats(pool: &PgPool) {
    sqlx::raw_sql("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .expect("pg_stat_force_next_flush (PostgreSQL 15 or later)");
}

/// The test database's transactions, read from a connection to another database so that
/// reading adds nothing to them.
async fn transactions(admin: &mut PgConnection, database: &str) -> Transactions {
    let (commits, rollbacks): (i64, i64) = sqlx::query_as(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(&mut *admin)
    .await
    .expect("read pg_stat_database");
    Transactions { commits, rollbacks }
}

/// Rows inserted, deleted and updated in the store's table, as the server counted them.
/// Read through the workload connection in one simple-protocol statement, which is not
/// prepared and so leaves pg_prepared_statements alone; it commits one transaction.
async fn tuples(pool: &PgPool) -> (i64, i64, i64) {
    let rows = sqlx::raw_sql(
        "SELECT n_tup_ins, n_tup_del, n_tup_upd FROM pg_stat_user_tables \
         WHERE relname = 'pushed_authorization_requests'",
    )
    .fetch_all(pool)
    .await
    .expect("read pg_stat_user_tables");
    let row = rows.first().expect("the table has statistics");
    (row.get(0), row.get(1), row.get(2))
}

/// Frontend (client to server) protocol messages seen by a [`CountingProxy`], by type byte:
/// `P` Parse, `B` Bind, `E` Execute, `S` Sync, `Q` simple Query, `D` Describe, `C` Close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Messages(HashMap<char, i64>);

impl Messages {
    fn get(&self, kind: char) -> i64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    fn since(&self, before: &Messages) -> Messages {
        let mut delta = self.clone();
        for (kind, count) in &before.0 {
            *delta.0.entry(*kind).or_default() -= count;
        }
        delta.0.retain(|_, count| *count != 0);
        delta
    }
}

/// Forwards connections to the server and counts the messages clients send.
struct CountingProxy {
    address: SocketAddr,
    seen: Arc<Mutex<Messages>>,
}

impl CountingProxy {
    async fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Messages::default()));
        let counts = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream)
                    .await
                    .expect("connect upstream");
                tokio::spawn(forward(client, server, Arc::clone(&counts)));
            }
        });
        CountingProxy { address, seen }
    }

    fn seen(&self) -> Messages {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn forward(client: TcpStream, server: TcpStream, seen: Arc<Mutex<Messages>>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let mut buffer = Vec::new();
        let mut startup_done = false;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_server.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            buffer.extend_from_slice(&chunk[..n]);
            // Whole messages: the untyped startup message first, then type byte + length.
            loop {
                let header = if startup_done { 5 } else { 4 };
                if buffer.len() < header {
                    break;
                }
                let at = header - 4;
                let len = u32::from_be_bytes([
                    buffer[at],
                    buffer[at + 1],
                    buffer[at + 2],
                    buffer[at + 3],
                ]);
                let total = at + usize::try_from(len).expect("length");
                if buffer.len() < total {
                    break;
                }
                if startup_done {
                    let kind = char::from(buffer[0]);
                    *seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                        .entry(kind)
                        .or_default() += 1;
                }
                startup_done = true;
                buffer.drain(..total);
            }
        }
    };
    let downstream = async { tokio::io::copy(&mut from_server, &mut to_client).await };
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
}

async fn run_lifecycles(store: &PostgresStore, tag: &str) {
    for i in 0..LIFECYCLES {
        let request = PushedAuthorizationRequest::new(
            format!("statements-{tag}-{i}"),
            Utc::now() + Duration::seconds(600),
            "p".repeat(600),
        );
        store.store(&request).await.expect("store");
        assert!(store
            .get_by_hash(&request.reference_value_hash)
            .await
            .expect("get_by_hash")
            .is_some());
        assert!(store
            .consume_by_hash(&request.reference_value_hash)
            .await
            .expect("consume_by_hash")
            .is_some());
    }
}

#[tokio::test]
async fn each_operation_is_one_autocommitted_statement_prepared_once_per_connection() {
    let db = TestDb::new().await;
    let mut admin = admin_connection().await;
    // Only the store's connection may touch the test database while counting: close the
    // migration pool and wait until its backends are gone (a backend publishes its last
    // statistics before it leaves pg_stat_activity).
    db.pool.close().await;
    let mut waited = 0;
    loop {
        let others: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(&db.name)
                .fetch_one(&mut admin)
                .await
                .expect("read pg_stat_activity");
        if others == 0 {
            break;
        }
        waited += 1;
        assert!(waited < 1000, "the migration pool's backends did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let upstream = tokio::net::lookup_host((db.options.get_host(), db.options.get_port()))
        .await
        .expect("resolve the PostgreSQL host")
        .next()
        .expect("the PostgreSQL host has an address");
    let proxy = CountingProxy::start(upstream).await;
    let through_proxy = db
        .options
        .clone()
        .host(&proxy.address.ip().to_string())
        .port(proxy.address.port())
        // The proxy reads the protocol: keep it in clear text.
        .ssl_mode(PgSslMode::Disable);
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(through_proxy)
        .await
        .expect("connect the store's pool");
    let pool = store.pool().clone();

    flush_stats(&pool).await;
    let before = transactions(&mut admin, &db.name).await;
    let (ins0, del0, upd0) = tuples(&pool).await;

    // First round on a fresh connection: the three statements are prepared here.
    let sent = proxy.seen();
    run_lifecycles(&store, "first").await;
    let first_messages = proxy.seen().since(&sent);
    flush_stats(&pool).await;
    let first = transactions(&mut admin, &db.name).await - before;

    // Second round on the same connection: nothing is prepared again.
    let before_second = transactions(&mut admin, &db.name).await;
    let sent = proxy.seen();
    run_lifecycles(&store, "second").await;
    let second_messages = proxy.seen().since(&sent);
    flush_stats(&pool).await;
    let second = transactions(&mut admin, &db.name).await - before_second;

    let per_round = i64::try_from(3 * LIFECYCLES).expect("small");

    eprintln!("messages sent, first round: {first_messages:?}; second: {second_messages:?}");
    eprintln!("server transactions, first round: {first:?}; second: {second:?}");

    // The wire: one Bind + Execute per operation, no simple query (no BEGIN/COMMIT), and
    // the three Parse messages on first use only.
    for (round, sent, parses) in [
        ("first", &first_messages, 3),
        ("second", &second_messages, 0),
    ] {
        assert_eq!(sent.get('B'), per_round, "{round} round Binds: {sent:?}");
        assert_eq!(sent.get('E'), per_round, "{round} round Executes: {sent:?}");
        assert_eq!(sent.get('Q'), 0, "{round} round simple queries: {sent:?}");
        assert_eq!(sent.get('P'), parses, "{round} round Parses: {sent:?}");
        // Each operation ends with one Sync: one round trip. The store keeps its connection
        // between operations, so sqlx's pool does not ping it on release (a Sync alone);
        // only a ping of a connection idle for over a second may add one.
        let syncs = sent.get('S');
        assert!(
            (per_round + parses..=per_round + parses + 2).contains(&syncs),
            "{round} round Syncs: {sent:?}"
        );
    }
    // One committed transaction per operation, plus this test's own statements between the
    // reads: tuples (first round only) and flush_stats.
    assert_eq!(
        second.commits,
        per_round + 1,
        "second round: one commit per operation (3 x {LIFECYCLES}) and the flush, nothing else: {second:?}"
    );
    // The first round adds the three Parse messages (each commits a transaction of its
    // own); the statement-count difference between the rounds is exactly the prepares.
    assert_eq!(
        first.commits,
        per_round + 1 + 1 + 3,
        "first round: operations, tuples, flush and the 3 prepares: {first:?}"
    );
    assert_eq!(first.rollbacks, 0);
    assert_eq!(second.rollbacks, 0);

    // The rows really went through: one insert and one delete per lifecycle, no update.
    let (ins1, del1, upd1) = tuples(&pool).await;
    let lifecycles = i64::try_from(2 * LIFECYCLES).expect("small");
    assert_eq!(
        (ins1 - ins0, del1 - del0, upd1 - upd0),
        (lifecycles, lifecycles, 0)
    );

    // The connection holds exactly the store's three statements, prepared once each at the
    // protocol level; the pool has had a single connection throughout.
    let prepared =
        sqlx::raw_sql("SELECT statement, from_sql FROM pg_prepared_statements ORDER BY statement")
            .fetch_all(&pool)
            .await
            .expect("read pg_prepared_statements");
    let statements: Vec<String> = prepared.iter().map(|row| row.get::<String, _>(0)).collect();
    assert_eq!(statements.len(), 3, "prepared statements: {statements:#?}");
    assert!(statements[0].starts_with("DELETE FROM pushed_authorization_requests"));
    assert!(statements[1].starts_with("SELECT expires_at, parameters"));
    // The insert, with the database's clock check, in one statement.
    assert!(
        statements[2].starts_with("WITH inserted AS ( INSERT INTO pushed_authorization_requests")
    );
    assert!(prepared.iter().all(|row| !row.get::<bool, _>(1)));
    assert_eq!(pool.size(), 1);
    pool.close().await;
}
