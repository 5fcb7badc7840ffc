//! What the store sends to PostgreSQL, counted by the server: exactly one statement per
//! operation, no transaction wrapper, each statement prepared once per connection.
//!
//! Counted on both sides of the wire, with nothing to install on the server:
//! - the client's messages, by a small TCP proxy in front of the server that reads the
//!   frontend protocol: one Bind + Execute per operation, Parse only on first use, and no
//!   simple Query (sqlx sends `BEGIN`/`COMMIT` that way, so there is no transaction wrapper);
//! - the server's `pg_stat_database.xact_commit` for the test's own database: exactly one
//!   committed transaction per operation (and one per Parse);
//! - `pg_stat_user_tables` (one row inserted and one updated, the consumed marker, per lifecycle) and
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
                // '^' counts accepted connections beside the message types.
                *counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
                    .entry('^')
                    .or_default() += 1;
                let server = TcpStream::connect(upstream)
                    .await
                    .expect("connect upstream");
                tokio::spawn(forward(client, server, Arc::clone(&counts)));
            }
        });
        CountingProxy { address, seen }
    }

    fn connections(&self) -> i64 {
        self.seen().get('^')
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

    // A backend publishes its statistics at the end of a transaction when its last flush
    // is over a second old: so after each round, wait a second and run one more read (one
    // more commit). The counts are read from the admin connection, in another database.
    let settle = || async {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        store.get_by_hash("settle").await.expect("settle");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // Twice: the first settling read prepares its statement (a commit of its own) and may
    // leave that unpublished; the second publishes everything so far.
    settle().await;
    settle().await;
    let before = transactions(&mut admin, &db.name).await;

    // First round on a fresh connection: the insert and the delete are prepared here (the
    // settling reads prepared the select).
    let sent = proxy.seen();
    run_lifecycles(&store, "first").await;
    let first_messages = proxy.seen().since(&sent);
    settle().await;
    let first = transactions(&mut admin, &db.name).await - before;

    // Second round on the same connection: nothing is prepared again.
    let before_second = transactions(&mut admin, &db.name).await;
    let sent = proxy.seen();
    run_lifecycles(&store, "second").await;
    let second_messages = proxy.seen().since(&sent);
    settle().await;
    let second = transactions(&mut admin, &db.name).await - before_second;

    let per_round = i64::try_from(3 * LIFECYCLES).expect("small");

    eprintln!("messages sent, first round: {first_messages:?}; second: {second_messages:?}");
    eprintln!("server transactions, first round: {first:?}; second: {second:?}");

    // The wire: one Bind + Execute per operation, no simple query (no BEGIN/COMMIT), and
    // the Parse messages on first use only.
    for (round, sent, parses) in [
        ("first", &first_messages, 2),
        ("second", &second_messages, 0),
    ] {
        assert_eq!(sent.get('B'), per_round, "{round} round Binds: {sent:?}");
        assert_eq!(sent.get('E'), per_round, "{round} round Executes: {sent:?}");
        assert_eq!(sent.get('Q'), 0, "{round} round simple queries: {sent:?}");
        assert_eq!(sent.get('P'), parses, "{round} round Parses: {sent:?}");
        // Each operation ends with one Sync: one round trip. The store's pool does not ping
        // a connection it takes back; only a connection idle for over a second (the first
        // operation of a round, after the pause that lets statistics settle) is pinged
        // (a Sync alone) before use.
        let syncs = sent.get('S');
        assert!(
            (per_round + parses..=per_round + parses + 1).contains(&syncs),
            "{round} round Syncs: {sent:?}"
        );
    }
    // One committed transaction per operation, and the settling read, nothing else.
    assert_eq!(
        second.commits,
        per_round + 1,
        "second round: one commit per operation (3 x {LIFECYCLES}) and the settling read: {second:?}"
    );
    // The first round adds the two Parse messages (each commits a transaction of its
    // own); the statement-count difference between the rounds is exactly the prepares.
    // (A statistics flush boundary may move one commit of the connection's warm-up into
    // this window: the wire counts above are the exact proof.)
    assert!(
        (per_round + 2 + 1..=per_round + 2 + 2).contains(&first.commits),
        "first round: operations, the 2 prepares and the settling read: {first:?}"
    );
    assert_eq!(first.rollbacks, 0);
    assert_eq!(second.rollbacks, 0);

    // The rows really went through: one insert and one update (the consumed marker) per
    // lifecycle, no delete.
    let pool = PgPool::connect_with(db.options.clone())
        .await
        .expect("connect to the test database");
    let (inserted, deleted, updated) = tuples(&pool).await;
    let lifecycles = i64::try_from(2 * LIFECYCLES).expect("small");
    assert_eq!((inserted, deleted, updated), (lifecycles, 0, lifecycles));

    // The store has had a single connection throughout: one startup message on the wire.
    assert_eq!(proxy.connections(), 1, "connections opened by the store");
    pool.close().await;
    store.close().await;
}
