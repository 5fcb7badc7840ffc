//! The execution policy (src/execution.rs) against real middleboxes between the store and
//! PostgreSQL, where a statement can commit and its answer never arrive:
//! - a TCP proxy (tests/common/fault.rs) that holds a committed `store_or_replace`'s reply
//!   while another instance consumes the request, then cuts the connection;
//! - PgBouncer 1.18 in session mode with `query_timeout = 1`, whose own `FATAL 08P01 query
//!   timeout` arrives before CommandComplete of a statement that then commits;
//! - PgBouncer 1.18 in transaction mode under a storm of statement timeouts in pooler mode:
//!   the store keeps its connections, and PgBouncer its server connections.
//!
//! Each test prints its figures with the prefix `middlebox:` (`--nocapture` to see them).

mod common;

use chrono::Utc;
use common::fault::FaultProxy;
use common::pgbouncer::{Flavor, PgBouncer, Settings};
use common::{error_kind, hash, TestDb};
use par_store::sqlx;
use par_store::{
    PostgresStoreOptions, PushedAuthorizationRequest, PushedAuthorizationRequestStore,
    PushedAuthorizationRequestStoreExt, StoreError,
};
use std::time::{Duration, Instant};

/// PgBouncer and timing-sensitive set-ups: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn request(n: u32, parameters: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash(n),
        Utc::now() + chrono::Duration::seconds(600),
        parameters,
    )
}

/// The store's defaults on one connection, never pinged: each operation runs on a pooled
/// (not freshly opened) connection, the case in which the store may run a statement again.
fn one_connection() -> PostgresStoreOptions {
    PostgresStoreOptions::new()
        .max_connections(1)
        .ping_idle_after(None)
        .operation_timeout(Some(Duration::from_secs(10)))
}

/// Waits until `condition` (a SQL boolean over the request) holds on the direct pool.
async fn wait_until(db: &TestDb, sql: &'static str, hash: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let holds: bool = sqlx::query_scalar(sql)
            .bind(hash)
            .fetch_one(&db.pool)
            .await
            .expect("poll the table");
        if holds {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_store_or_replace_whose_reply_is_lost_does_not_resurrect_a_consumed_request() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let proxy = FaultProxy::in_front_of(&db.options).await;
    let proxied = one_connection()
        .connect_with(proxy.route(&db.options))
        .await
        .expect("connect through the proxy");
    let other_instance = db.store();
    let original = request(1, "first");
    proxied.store(&original).await.expect("store");
    // Prepared once with its replies flowing: held, the preparation would never finish.
    proxied
        .store_or_replace(&request(100, "warm-up"))
        .await
        .expect("store_or_replace");
    other_instance
        .consume_by_hash(&hash(100))
        .await
        .expect("consume");

    // The replacement reaches the server and commits; its reply is held.
    proxy.hold_replies();
    let replacement = request(1, "replaced");
    let replacing = tokio::spawn({
        let proxied = proxied.clone();
        let replacement = replacement.clone();
        async move { proxied.store_or_replace(&replacement).await }
    });
    wait_until(
        &db,
        "SELECT EXISTS (SELECT FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 AND parameters = 'replaced')",
        &hash(1),
    )
    .await;
    // Another instance consumes the replaced request: the one use of its request_uri.
    let consumed = other_instance
        .consume_by_hash(&hash(1))
        .await
        .expect("consume");
    assert_eq!(consumed, Some(replacement.clone()));
    // Then the connection of the replacement breaks, its reply unsent.
    proxy.sever();
    let replaced = replacing.await.expect("the replacing task");
    let after = other_instance.get_by_hash(&hash(1)).await.expect("get");
    println!(
        "middlebox: proxy: store_or_replace answered {:?}, request afterwards {:?}",
        replaced.as_ref().map_err(error_kind),
        after.as_ref().map(|r| &r.parameters)
    );
    let err = replaced.expect_err("the replacement's outcome is unknown: an error, not Ok");
    assert!(err.is_transient(), "a transient error: {err:?}");
    assert_eq!(after, None, "the consumed request was put back");
    assert_eq!(db.unconsumed_row_count().await, 0);
}

/// PgBouncer in session mode with `query_timeout = 1` (as docs/postgresql.md says, the
/// default mode needs nothing special there), and connect options through it that it
/// accepts.
async fn session_bouncer(db: &TestDb) -> (PgBouncer, sqlx::postgres::PgConnectOptions) {
    let bouncer = PgBouncer::start_with(Settings {
        pool_mode: "session",
        query_timeout_secs: 1,
        ..Settings::default()
    })
    .await;
    let options = bouncer.route(&db.options).extra_float_digits(None);
    (bouncer, options)
}

/// How long a lock is held against the statement under test: past PgBouncer's
/// `query_timeout` (1 s, checked every third of a second), and short enough that a second
/// attempt (0.2 made one) ends before its own `query_timeout`.
const HOLD_FOR: Duration = Duration::from_millis(1_600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_that_pgbouncer_times_out_after_it_ran_is_an_error_never_not_found() {
    if Flavor::Stock
        .require("a_consume_that_pgbouncer_times_out_after_it_ran_is_an_error_never_not_found")
        .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (bouncer, through) = session_bouncer(&db).await;
    let store = one_connection()
        .statement_timeout(None)
        .connect_with(through)
        .await
        .expect("connect through PgBouncer");
    let pushed = request(2, "slow consume");
    store.store(&pushed).await.expect("store");

    // A direct transaction holds the row's lock past PgBouncer's query_timeout: PgBouncer
    // gives up on the consume, which then marks the row consumed and commits once the lock is
    // freed.
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind(hash(2))
    .fetch_one(&mut *holder)
    .await
    .expect("lock the row");
    let release = tokio::spawn(async move {
        tokio::time::sleep(HOLD_FOR).await;
        holder.commit().await.expect("release the lock");
    });
    let consumed = store.consume_by_hash(&hash(2)).await;
    release.await.expect("the lock holder");
    // The first attempt's consume, freed from the lock, commits (it leaves a consumed marker).
    wait_until(
        &db,
        "SELECT EXISTS (SELECT FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = $1)",
        &hash(2),
    )
    .await;
    println!(
        "middlebox: pgbouncer session query_timeout: consume answered {:?}",
        consumed.as_ref().map(Option::is_some).map_err(error_kind)
    );
    match consumed {
        Ok(Some(found)) => assert_eq!(found, pushed),
        Ok(None) => panic!(
            "Ok(None) for a request the consume itself consumed\n{}",
            bouncer.log()
        ),
        Err(err) => assert!(err.is_transient(), "a transient error: {err:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_pgbouncer_times_out_after_it_ran_is_never_a_duplicate_of_itself() {
    if Flavor::Stock
        .require("a_store_that_pgbouncer_times_out_after_it_ran_is_never_a_duplicate_of_itself")
        .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (bouncer, through) = session_bouncer(&db).await;
    let store = one_connection()
        .statement_timeout(None)
        .connect_with(through)
        .await
        .expect("connect through PgBouncer");

    // A direct transaction inserts the same key and holds it past PgBouncer's query_timeout,
    // then rolls back: the store's insert waits for it, then inserts and commits.
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO pushed_authorization_requests \
         (reference_value_hash, expires_at, parameters) VALUES ($1, now() + interval '1 minute', 'held')",
    )
    .bind(hash(3))
    .execute(&mut *holder)
    .await
    .expect("insert the key in an open transaction");
    let release = tokio::spawn(async move {
        tokio::time::sleep(HOLD_FOR).await;
        holder.rollback().await.expect("roll back");
    });
    let pushed = request(3, "slow store");
    let stored = store.store(&pushed).await;
    release.await.expect("the key holder");
    wait_until(
        &db,
        "SELECT EXISTS (SELECT FROM pushed_authorization_requests \
         WHERE reference_value_hash = $1 AND parameters = 'slow store')",
        &hash(3),
    )
    .await;
    println!(
        "middlebox: pgbouncer session query_timeout: store answered {:?}",
        stored.as_ref().map_err(error_kind)
    );
    match stored {
        Ok(()) => {}
        Err(StoreError::Duplicate) => {
            panic!("Duplicate for the caller's own request\n{}", bouncer.log())
        }
        Err(err) => assert!(err.is_transient(), "a transient error: {err:?}"),
    }
}

/// Lines of PgBouncer's log (with `log_connections`) that contain `what`.
fn log_lines(bouncer: &PgBouncer, what: &str) -> usize {
    bouncer
        .log()
        .lines()
        .filter(|line| line.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_mode_keeps_its_connections_through_a_storm_of_statement_timeouts() {
    keeps_its_connections_through_a_storm(
        "pooler_mode_keeps_its_connections_through_a_storm_of_statement_timeouts",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_mode_keeps_its_connections_when_callers_give_up_mid_statement() {
    keeps_its_connections_through_a_storm(
        "pooler_mode_keeps_its_connections_when_callers_give_up_mid_statement",
        Some(Duration::from_millis(10)),
    )
    .await;
}

/// 200 consumes through PgBouncer (transaction mode) in pooler mode, each waiting on a row
/// lock until the server's 50 ms `statement_timeout` cancels it, or, with `give_up`, dropped
/// by its caller after that long (mid-statement): the store's connections and PgBouncer's
/// server connections are kept, not reopened per operation, and nothing is consumed.
async fn keeps_its_connections_through_a_storm(test: &str, give_up: Option<Duration>) {
    if Flavor::Stock.require(test).is_none() {
        return;
    }
    const CONNECTIONS: u32 = 4;
    const OPERATIONS: u32 = 200;
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start_with(Settings {
        log_connections: true,
        ..Settings::default()
    })
    .await;
    let store = PostgresStoreOptions::new()
        .pooler_mode(true)
        .max_connections(CONNECTIONS)
        .statement_timeout(Some(Duration::from_millis(50)))
        .connect_with(bouncer.route(&db.options))
        .await
        .expect("pooler mode connects through PgBouncer");
    let pushed = request(4, "locked");
    store.store(&pushed).await.expect("store");

    // Every consume waits on the row's lock until the server cancels it (or its caller
    // gives up first).
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind(hash(4))
    .fetch_one(&mut *holder)
    .await
    .expect("lock the row");
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut interrupted = 0u32;
                let locked = hash(4);
                for _ in 0..OPERATIONS / CONNECTIONS {
                    let consume = store.consume_by_hash(&locked);
                    let outcome = match give_up {
                        None => consume.await,
                        Some(limit) => match tokio::time::timeout(limit, consume).await {
                            Err(_gave_up) => {
                                interrupted += 1;
                                continue;
                            }
                            Ok(outcome) => outcome,
                        },
                    };
                    match outcome {
                        Err(StoreError::Timeout { .. }) if give_up.is_none() => interrupted += 1,
                        other => panic!("an interrupted consume, got {other:?}"),
                    }
                }
                interrupted
            })
        })
        .collect();
    let mut interrupted = 0;
    for task in tasks {
        interrupted += task.await.expect("a consumer");
    }
    holder.rollback().await.expect("release the lock");
    assert_eq!(
        store.consume_by_hash(&hash(4)).await.expect("consume"),
        Some(pushed),
        "the interrupted consumes took nothing"
    );

    let client_logins = log_lines(&bouncer, "login attempt");
    let server_connections = log_lines(&bouncer, "new connection to server");
    println!(
        "middlebox: pooler mode, {interrupted} consumes interrupted ({}) through PgBouncer \
         (transaction mode): {client_logins} client connections, {server_connections} server \
         connections opened",
        if give_up.is_some() {
            "callers gave up mid-statement"
        } else {
            "statement timeouts"
        }
    );
    assert_eq!(interrupted, OPERATIONS);
    assert!(
        client_logins <= CONNECTIONS as usize,
        "the store reopened its connections: {client_logins} logins"
    );
    assert!(
        server_connections <= PgBouncer::POOL_SIZE as usize,
        "PgBouncer reopened its server connections: {server_connections}\n{}",
        bouncer.log()
    );
}
