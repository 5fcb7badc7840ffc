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
use par_store::sqlx::postgres::{PgConnectOptions, PgSslMode};
use par_store::sqlx::{self, PgConnection, PgPool, Row};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, PushedAuthorizationRequestStoreExt,
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
    /// The statement name of every Parse message, in order (`""`: unnamed).
    parse_names: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    async fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Messages::default()));
        let counts = Arc::clone(&seen);
        let parse_names = Arc::new(Mutex::new(Vec::new()));
        let names = Arc::clone(&parse_names);
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
                tokio::spawn(forward(
                    client,
                    server,
                    Arc::clone(&counts),
                    Arc::clone(&names),
                ));
            }
        });
        CountingProxy {
            address,
            seen,
            parse_names,
        }
    }

    fn parse_names(&self) -> Vec<String> {
        self.parse_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

async fn forward(
    client: TcpStream,
    server: TcpStream,
    seen: Arc<Mutex<Messages>>,
    parse_names: Arc<Mutex<Vec<String>>>,
) {
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
                    if kind == 'P' {
                        // Parse: the statement name is the first NUL-terminated string.
                        let body = &buffer[5..total];
                        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                        parse_names
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(String::from_utf8_lossy(&body[..end]).into_owned());
                    }
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

    // The rows really went through: one insert and one delete per lifecycle (since migration
    // 0007 the consume moves the request to the markers table), no update.
    let pool = PgPool::connect_with(db.options.clone())
        .await
        .expect("connect to the test database");
    let (inserted, deleted, updated) = tuples(&pool).await;
    let lifecycles = i64::try_from(2 * LIFECYCLES).expect("small");
    assert_eq!((inserted, deleted, updated), (lifecycles, lifecycles, 0));

    // The store has had a single connection throughout: one startup message on the wire.
    assert_eq!(proxy.connections(), 1, "connections opened by the store");
    pool.close().await;
    store.close().await;
}

/// A test database with nothing connected to it but what the test opens through a
/// [`CountingProxy`], and the connect options that go through that proxy.
async fn behind_a_counting_proxy() -> (TestDb, CountingProxy, PgConnectOptions) {
    let db = TestDb::new().await;
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
    (db, proxy, through_proxy)
}

/// Named statements the store prepares over every operation it has, counted on the wire:
/// the figure docs/postgresql.md and the README give for PgBouncer's
/// `max_prepared_statements` ("at least 8").
const PREPARED_STATEMENTS: usize = 8;

/// Every operation of the store, twice each, on the store's single connection.
async fn every_operation(store: &PostgresStore) {
    for round in 0..2 {
        let request = PushedAuthorizationRequest::new(
            format!("every-operation-{round}"),
            Utc::now() + Duration::seconds(600),
            "p".repeat(600),
        )
        .with_client_id("client-a");
        store.store(&request).await.expect("store");
        store
            .get_by_hash(&request.reference_value_hash)
            .await
            .expect("get_by_hash");
        store
            .consume_by_hash(&request.reference_value_hash)
            .await
            .expect("consume_by_hash");
        // A reuse: the consume takes nothing and asks `LOOK_UP` what is under the hash.
        assert!(store
            .consume_by_hash(&request.reference_value_hash)
            .await
            .expect("consume_by_hash of a consumed request")
            .is_none());
        // A consumed request's marker is not replaced: another key.
        let replacing = PushedAuthorizationRequest::new(
            format!("every-operation-{round}-replaced"),
            Utc::now() + Duration::seconds(600),
            "p".repeat(600),
        )
        .with_client_id("client-a");
        store
            .store_or_replace(&replacing)
            .await
            .expect("store_or_replace");
        store
            .delete_by_client_id("client-a")
            .await
            .expect("delete_by_client_id");
        store
            .delete_expired_as_of(Utc::now())
            .await
            .expect("delete_expired_as_of");
        store.delete_expired().await.expect("delete_expired");
    }
}

#[tokio::test]
async fn over_every_operation_the_store_prepares_eight_named_statements_once_each() {
    let (db, proxy, through_proxy) = behind_a_counting_proxy().await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(through_proxy)
        .await
        .expect("connect the store's pool");
    every_operation(&store).await;
    let names = proxy.parse_names();
    let named: Vec<&String> = names.iter().filter(|name| !name.is_empty()).collect();
    let distinct: std::collections::BTreeSet<&String> = named.iter().copied().collect();
    eprintln!("Parse messages: {names:?}");
    assert_eq!(
        named.len(),
        distinct.len(),
        "each statement is prepared once on the connection: {names:?}"
    );
    assert_eq!(
        distinct.len(),
        PREPARED_STATEMENTS,
        "distinct named statements over every operation (connect's check included): {names:?}"
    );
    assert_eq!(proxy.connections(), 1, "connections opened by the store");

    // What the documentation tells PgBouncer users, from that count.
    let guidance = format!("at least {PREPARED_STATEMENTS}");
    for path in ["README.md", "docs/postgresql.md"] {
        let text = std::fs::read_to_string(path).expect("read the documentation");
        let said: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("max_prepared_statements"))
            .collect();
        assert!(!said.is_empty(), "{path} names max_prepared_statements");
        for line in text
            .split("\n\n")
            .filter(|p| p.contains("max_prepared_statements"))
        {
            assert!(
                !line.contains("at least 3") && !line.contains(">= 3"),
                "{path}: outdated guidance: {line}"
            );
        }
        assert!(
            text.contains(&guidance),
            "{path} gives max_prepared_statements as {guidance:?}"
        );
    }
    store.close().await;
    db.pool.close().await;
}

/// Round trips per operation, counted on the wire: a client waits for the server once per
/// Sync (extended protocol) and once per simple Query.
fn round_trips(sent: &Messages) -> i64 {
    sent.get('S') + sent.get('Q')
}

/// `store`, `get_by_hash` and `consume_by_hash` of `count` fresh requests, each kind in a
/// batch of its own, and the messages each batch sent. The connection is warmed up first
/// (its statements prepared), so that only the steady state is counted. `caller_pool`: the
/// caller's `PgPool` under the store, whose ping on return runs on a task of its own after
/// the operation returned; each count waits until the connection is back in it.
async fn messages_per_operation(
    store: &PostgresStore,
    proxy: &CountingProxy,
    tag: &str,
    caller_pool: Option<&PgPool>,
) -> [(&'static str, Messages); 3] {
    const COUNT: usize = 20;
    let requests: Vec<PushedAuthorizationRequest> = (0..=COUNT)
        .map(|i| {
            PushedAuthorizationRequest::new(
                format!("round-trips-{tag}-{i}"),
                Utc::now() + Duration::seconds(600),
                "p".repeat(600),
            )
        })
        .collect();
    // Warm-up: every statement once.
    let first = &requests[COUNT];
    store.store(first).await.expect("store");
    store
        .get_by_hash(&first.reference_value_hash)
        .await
        .expect("get");
    store
        .consume_by_hash(&first.reference_value_hash)
        .await
        .expect("consume");
    // sqlx's ping on return may still be on its way: wait until the connection is back.
    let pause = || async {
        if let Some(pool) = caller_pool {
            let mut waited = 0;
            while pool.num_idle() < 1 {
                waited += 1;
                assert!(
                    waited < 2000,
                    "the connection did not come back to the pool"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    pause().await;
    let mut counted = Vec::new();
    for op in ["store", "get_by_hash", "consume_by_hash"] {
        let before = proxy.seen();
        for request in &requests[..COUNT] {
            match op {
                "store" => store.store(request).await.expect("store"),
                "get_by_hash" => {
                    assert!(store
                        .get_by_hash(&request.reference_value_hash)
                        .await
                        .expect("get")
                        .is_some());
                }
                _ => {
                    assert!(store
                        .consume_by_hash(&request.reference_value_hash)
                        .await
                        .expect("consume")
                        .is_some());
                }
            }
        }
        pause().await;
        let mut sent = proxy.seen().since(&before);
        let count = i64::try_from(COUNT).expect("small");
        for value in sent.0.values_mut() {
            assert_eq!(
                *value % count,
                0,
                "{tag} {op}: not the same per operation: {sent:?}"
            );
            *value /= count;
        }
        counted.push((op, sent));
    }
    counted.try_into().expect("three operations")
}

#[tokio::test]
async fn round_trips_per_operation_in_every_mode() {
    // The store's own pool, default mode: one round trip (Bind, Execute, Sync). A connection
    // idle for over `ping_idle_after` (1 s) is pinged first; the threshold is raised here so
    // that a loaded machine's pause between two operations cannot add that ping.
    let (db, proxy, through_proxy) = behind_a_counting_proxy().await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .ping_idle_after(Some(std::time::Duration::from_secs(60)))
        .connect_with(through_proxy.clone())
        .await
        .expect("connect the store's pool");
    for (op, sent) in messages_per_operation(&store, &proxy, "owned", None).await {
        eprintln!("owned pool, {op}: {sent:?}");
        assert_eq!(round_trips(&sent), 1, "owned pool, {op}: {sent:?}");
        assert_eq!((sent.get('B'), sent.get('E'), sent.get('P')), (1, 1, 0));
    }
    // A consume that takes nothing (here each a reuse of a request consumed above) tells the
    // outcomes apart with a second statement, `LOOK_UP`: two round trips, and only then.
    // The warm-up request first, so that `LOOK_UP` is prepared before counting.
    assert!(store
        .consume_by_hash("round-trips-owned-20")
        .await
        .expect("consume a consumed request")
        .is_none());
    let before = proxy.seen();
    for i in 0..20 {
        assert!(store
            .consume_by_hash(&format!("round-trips-owned-{i}"))
            .await
            .expect("consume a consumed request")
            .is_none());
    }
    let sent = proxy.seen().since(&before);
    eprintln!("owned pool, 20 reuses: {sent:?}");
    assert_eq!(
        (round_trips(&sent), sent.get('B'), sent.get('E')),
        (40, 40, 40),
        "owned pool, a consume that takes nothing: {sent:?}"
    );
    store.close().await;

    // The caller's PgPool with sqlx's defaults: its ping before use (test_before_acquire)
    // and its ping when the connection comes back, around the statement.
    let proxy = CountingProxy::start(
        tokio::net::lookup_host((db.options.get_host(), db.options.get_port()))
            .await
            .expect("resolve")
            .next()
            .expect("an address"),
    )
    .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            through_proxy
                .clone()
                .host(&proxy.address.ip().to_string())
                .port(proxy.address.port()),
        )
        .await
        .expect("connect the caller's pool");
    let store = PostgresStore::new(pool.clone());
    for (op, sent) in messages_per_operation(&store, &proxy, "shared", Some(&pool)).await {
        eprintln!("caller's PgPool (sqlx defaults), {op}: {sent:?}");
        assert_eq!(round_trips(&sent), 3, "caller's pool, {op}: {sent:?}");
        assert_eq!((sent.get('B'), sent.get('E'), sent.get('P')), (1, 1, 0));
    }
    pool.close().await;

    // The caller's PgPool without the ping before use: the ping on release stays.
    let proxy = CountingProxy::start(
        tokio::net::lookup_host((db.options.get_host(), db.options.get_port()))
            .await
            .expect("resolve")
            .next()
            .expect("an address"),
    )
    .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(
            through_proxy
                .clone()
                .host(&proxy.address.ip().to_string())
                .port(proxy.address.port()),
        )
        .await
        .expect("connect the caller's pool");
    let store = PostgresStore::new(pool.clone());
    for (op, sent) in messages_per_operation(&store, &proxy, "shared-no-test", Some(&pool)).await {
        eprintln!("caller's PgPool, test_before_acquire(false), {op}: {sent:?}");
        assert_eq!(round_trips(&sent), 2, "caller's pool, {op}: {sent:?}");
    }
    pool.close().await;

    // Pooler mode: `BEGIN; SET LOCAL statement_timeout` (one simple Query); the statement
    // unnamed, which sqlx sends in two round trips (Parse, Describe, Sync to learn its
    // types, then Bind, Execute, Sync); `COMMIT` (one simple Query): four round trips.
    // Without the transaction it would be two, and a transaction-mode pooler could run the
    // Bind on a server connection where another client's unnamed statement waits
    // (tests/pgbouncer.rs, an_unnamed_statement_outside_a_transaction_can_run_another_...).
    let proxy = CountingProxy::start(
        tokio::net::lookup_host((db.options.get_host(), db.options.get_port()))
            .await
            .expect("resolve")
            .next()
            .expect("an address"),
    )
    .await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .ping_idle_after(Some(std::time::Duration::from_secs(60)))
        .pooler_mode(true)
        .connect_with(
            through_proxy
                .host(&proxy.address.ip().to_string())
                .port(proxy.address.port()),
        )
        .await
        .expect("connect the store in pooler mode");
    for (op, sent) in messages_per_operation(&store, &proxy, "pooler", None).await {
        eprintln!("pooler mode, {op}: {sent:?}");
        assert_eq!(round_trips(&sent), 4, "pooler mode, {op}: {sent:?}");
        assert_eq!(
            sent.get('Q'),
            2,
            "BEGIN and COMMIT, pooler mode, {op}: {sent:?}"
        );
        assert_eq!(
            sent.get('P'),
            1,
            "an unnamed Parse each time, {op}: {sent:?}"
        );
    }
    assert!(
        proxy.parse_names().iter().all(String::is_empty),
        "pooler mode prepares no named statement: {:?}",
        proxy.parse_names()
    );
    store.close().await;
    db.pool.close().await;
}
