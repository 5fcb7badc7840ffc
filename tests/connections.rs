//! The promises a connection pool makes, kept by the store past its limits: more callers than
//! connections, a pool shared with the application, connection lifetimes, cancelled
//! operations, stores dropped or used outside their runtime, and connections the server
//! closes while they sit idle.

mod common;

use chrono::Utc;
use common::TestDb;
use par_store::sqlx::postgres::PgPoolOptions;
use par_store::sqlx::{self, Connection, PgPool};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn request(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash,
        Utc::now() + chrono::Duration::seconds(600),
        format!("parameters of {hash}"),
    )
}

/// One full lifecycle: store, two reads, consume; every answer checked.
async fn lifecycle(store: &PostgresStore, hash: &str) -> Result<(), StoreError> {
    let stored = request(hash);
    store.store(&stored).await?;
    for _ in 0..2 {
        assert_eq!(store.get_by_hash(hash).await?.as_ref(), Some(&stored));
    }
    assert_eq!(store.consume_by_hash(hash).await?, Some(stored));
    Ok(())
}

fn owned_store(db: &TestDb, connections: u32) -> PostgresStore {
    PostgresStoreOptions::new()
        .max_connections(connections)
        .connect_lazy_with(db.options.clone())
}

/// Backends connected to the test database, other than the asking one.
async fn backends(db: &TestDb, admin: &PgPool) -> Vec<(i32, f64)> {
    sqlx::query_as(
        "SELECT pid, extract(epoch FROM now() - backend_start)::float8 FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .bind(&db.name)
    .fetch_all(admin)
    .await
    .expect("read pg_stat_activity")
}

struct Overload {
    per_caller: Vec<u64>,
    errors: u64,
    worst: Duration,
}

/// `callers` tasks run lifecycles on `store` for `length`.
async fn overload(store: &PostgresStore, callers: usize, length: Duration) -> Overload {
    let errors = Arc::new(AtomicU64::new(0));
    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let started = Instant::now();
    // A label per run: a consumed request's hash stays taken until it expires.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (store, errors, worst) = (store.clone(), errors.clone(), worst.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < length {
                    let began = Instant::now();
                    let hash = format!("overload-{run}-{caller}-{done}");
                    if let Err(err) = lifecycle(&store, &hash).await {
                        eprintln!("caller {caller}: {err}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let took = began.elapsed();
                    let mut worst = worst.lock().unwrap();
                    *worst = (*worst).max(took);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut per_caller = Vec::new();
    for task in tasks {
        per_caller.push(task.await.expect("a caller panicked"));
    }
    let worst = *worst.lock().unwrap();
    Overload {
        per_caller,
        errors: errors.load(Ordering::Relaxed),
        worst,
    }
}

fn assert_fair(label: &str, result: &Overload) {
    let total: u64 = result.per_caller.iter().sum();
    let mean = total as f64 / result.per_caller.len() as f64;
    let slowest = *result.per_caller.iter().min().unwrap() as f64;
    println!(
        "{label}: {total} lifecycles, per caller {:?}, slowest/mean {:.2}, worst lifecycle {:?}, {} errors",
        result.per_caller,
        slowest / mean,
        result.worst,
        result.errors
    );
    assert_eq!(result.errors, 0, "{label}: errors on a healthy database");
    assert!(
        slowest >= 0.2 * mean,
        "{label}: a caller starved: {:?}",
        result.per_caller
    );
    assert!(
        result.worst < Duration::from_secs(2),
        "{label}: a lifecycle took {:?}",
        result.worst
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_callers_than_connections_all_progress_without_errors() {
    let db = TestDb::new().await;
    for (connections, callers) in [(2u32, 12usize), (4, 48)] {
        let store = owned_store(&db, connections);
        let result = overload(&store, callers, Duration::from_secs(3)).await;
        assert_fair(
            &format!("own pool, {connections} connections, {callers} callers"),
            &result,
        );
        let open = backends(&db, &db.pool).await.len();
        store.close().await;
        // The migration pool of the test database holds at most 8 of its own.
        assert!(
            open <= connections as usize + 8,
            "{open} backends for {connections} store connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_shared_pool_is_fair_too() {
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone());
    let result = overload(&store, 12, Duration::from_secs(3)).await;
    assert_fair("shared PgPool, 2 connections, 12 callers", &result);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_keeps_its_share_of_a_pool_the_store_saturates() {
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone());
    let running = Arc::new(AtomicBool::new(true));
    let saturating = {
        let (store, running) = (store.clone(), running.clone());
        tokio::spawn(async move {
            let workers: Vec<_> = (0..8)
                .map(|worker| {
                    let (store, running) = (store.clone(), running.clone());
                    tokio::spawn(async move {
                        let mut n = 0;
                        while running.load(Ordering::Relaxed) {
                            lifecycle(&store, &format!("busy-{worker}-{n}"))
                                .await
                                .expect("store traffic");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for worker in workers {
                total += worker.await.expect("worker");
            }
            total
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The application's own queries, four tasks of them, on the same pool.
    let app: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut done, mut worst) = (0, Duration::ZERO);
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(2) {
                    let began = Instant::now();
                    let one: i32 = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .expect("the application's query");
                    assert_eq!(one, 1);
                    worst = worst.max(began.elapsed());
                    done += 1;
                }
                (done, worst)
            })
        })
        .collect();
    let mut app_results = Vec::new();
    for task in app {
        app_results.push(task.await.expect("application task"));
    }
    running.store(false, Ordering::Relaxed);
    let store_lifecycles = saturating.await.expect("store traffic");
    println!("application tasks (queries, worst wait): {app_results:?}; store lifecycles: {store_lifecycles}");
    for (done, worst) in &app_results {
        assert!(*done >= 10, "an application task ran only {done} queries");
        assert!(
            *worst < Duration::from_secs(1),
            "an application query waited {worst:?}"
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_replaced_after_their_lifetime_under_steady_traffic() {
    let db = TestDb::new().await;
    let store = PostgresStoreOptions::new()
        .max_connections(2)
        .max_connection_lifetime(Some(Duration::from_secs(1)))
        .connect_with(db.options.clone().application_name("lifetime-test"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut n = 0;
    let mut oldest_seen = 0.0f64;
    while started.elapsed() < Duration::from_secs(4) {
        lifecycle(&store, &format!("lifetime-{n}")).await.unwrap();
        n += 1;
        if n % 50 == 0 {
            let ages: Vec<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM now() - backend_start)::float8 FROM pg_stat_activity \
                 WHERE application_name = 'lifetime-test'",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            assert!(!ages.is_empty(), "the store has no connection");
            oldest_seen = ages.into_iter().fold(oldest_seen, f64::max);
        }
    }
    println!("{n} lifecycles; oldest store backend seen: {oldest_seen:.2} s");
    // Replaced at its next checkout past one second (or by the reaper): never much older.
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "ran long enough to see replacements"
    );
    assert!(
        oldest_seen < 1.6,
        "a store connection lived {oldest_seen:.2} s"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cancelled_operations_leaves_no_wrong_answer_and_no_leaked_connection() {
    let db = TestDb::new().await;
    let store = owned_store(&db, 4);
    // What an acknowledged operation established, per hash.
    #[derive(Default)]
    struct Ledger {
        stored: HashMap<String, PushedAuthorizationRequest>,
        consumed: Vec<String>,
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let timeouts = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (store, ledger, timeouts) = (store.clone(), ledger.clone(), timeouts.clone());
            tokio::spawn(async move {
                for n in 0..250u64 {
                    // 0 to 2 ms: many operations are cut off mid-flight; every fifth has
                    // time enough to open a connection (a cut-off one is never reused).
                    let limit =
                        Duration::from_micros([0, 300, 700, 2_000, 5_000_000][(n % 5) as usize]);
                    let hash = format!("storm-{task}-{n}");
                    let stored = request(&hash);
                    match tokio::time::timeout(limit, store.store(&stored)).await {
                        Ok(Ok(())) => {
                            ledger
                                .lock()
                                .unwrap()
                                .stored
                                .insert(hash.clone(), stored.clone());
                        }
                        Ok(Err(err)) => panic!("store {hash}: {err}"),
                        Err(_) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    match tokio::time::timeout(limit, store.get_by_hash(&hash)).await {
                        Ok(found) => {
                            assert_eq!(found.unwrap().as_ref(), Some(&stored), "get {hash}")
                        }
                        Err(_) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if n.is_multiple_of(2) {
                        match tokio::time::timeout(limit, store.consume_by_hash(&hash)).await {
                            Ok(found) => {
                                assert_eq!(found.unwrap(), Some(stored), "consume {hash}");
                                ledger.lock().unwrap().consumed.push(hash);
                            }
                            Err(_) => {
                                timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a storm task panicked: wrong answer");
    }
    let cancelled = timeouts.load(Ordering::Relaxed);
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    println!(
        "cancellation storm: {} acknowledged stores, {} acknowledged consumes, {cancelled} operations cancelled",
        ledger.stored.len(),
        ledger.consumed.len()
    );
    assert!(
        cancelled > 100,
        "the storm cancelled only {cancelled} operations"
    );
    assert!(
        ledger.stored.len() > 100 && ledger.consumed.len() > 50,
        "too few operations completed to check anything"
    );
    // No leaked connection: the pool holds at most its four, and serves right away.
    let began = Instant::now();
    lifecycle(&store, "after-the-storm").await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = backends(&db, &db.pool).await.len();
    assert!(open <= 4 + 8, "{open} backends: leaked connections");
    // No lost acknowledged store: each one is there unless a consume was acknowledged
    // (a cancelled consume may or may not have run: both are allowed for it).
    let consumed: std::collections::HashSet<_> = ledger.consumed.iter().cloned().collect();
    let unacknowledged_consumes: std::collections::HashSet<String> = ledger
        .stored
        .keys()
        .filter(|hash| {
            let n: u64 = hash.rsplit('-').next().unwrap().parse().unwrap();
            n.is_multiple_of(2) && !consumed.contains(*hash)
        })
        .cloned()
        .collect();
    for (hash, stored) in &ledger.stored {
        let found = store.get_by_hash(hash).await.unwrap();
        if consumed.contains(hash) {
            assert_eq!(found, None, "{hash} was consumed and came back");
        } else if !unacknowledged_consumes.contains(hash) {
            assert_eq!(
                found.as_ref(),
                Some(stored),
                "{hash} was acknowledged and lost"
            );
        }
    }
    store.close().await;
}

/// Runs `work` on a current-thread runtime of its own and returns what it built.
fn in_runtime<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

#[test]
fn stores_dropped_outside_any_runtime_do_not_panic() {
    let db = in_runtime(TestDb::new());
    let (owned, shared) = in_runtime(async {
        let owned = owned_store(&db, 2);
        let shared = PostgresStore::new(
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(db.options.clone())
                .await
                .unwrap(),
        );
        // One hash each: a consumed request's hash stays taken until it expires.
        for (n, store) in [&owned, &shared].into_iter().enumerate() {
            lifecycle(store, &format!("drop-{n}")).await.unwrap();
        }
        (owned, shared)
    });
    // Right after an operation, on a thread without a runtime.
    std::thread::spawn(move || {
        drop(owned);
        drop(shared);
    })
    .join()
    .expect("dropping a store outside a runtime panicked");
    drop(db);
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;

/// A consume that waits on the server for a row lock held by `blocker`: it holds a lease.
async fn in_flight(store: &PostgresStore, blocker: &mut sqlx::PgConnection, hash: &str) -> Pending {
    store.store(&request(hash)).await.unwrap();
    sqlx::query("BEGIN").execute(&mut *blocker).await.unwrap();
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .execute(&mut *blocker)
    .await
    .unwrap();
    let (store, hash) = (store.clone(), hash.to_owned());
    let mut pending: Pending =
        Box::pin(async move { store.consume_by_hash(&hash).await.map(drop) });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "the consume did not wait for the row lock"
    );
    pending
}

/// An operation in flight on a caller's pool with `min_connections > 0`, its future dropped
/// on a thread without a runtime: no panic (sqlx's `PoolConnection` drop spawns a task), the
/// connection is closed rather than given back with its reply unread, and the pool's slot is
/// free again. Then the same after the operation's runtime has shut down.
#[test]
fn an_operation_dropped_mid_statement_outside_any_runtime_does_not_panic() {
    let db = in_runtime(TestDb::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let drop_without_runtime = |pending: Pending| {
        std::thread::spawn(move || drop(pending))
            .join()
            .expect("dropping an operation outside a runtime panicked");
    };

    let (store, mut blocker, pending) = runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(db.options.clone())
            .await
            .unwrap();
        let store = PostgresStore::new(pool);
        let mut blocker = sqlx::PgConnection::connect_with(&db.options).await.unwrap();
        let pending = in_flight(&store, &mut blocker, "dropped-1").await;
        (store, blocker, pending)
    });
    drop_without_runtime(pending);
    runtime.block_on(async {
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
        // The pool's only slot is free again. (The dropped consume itself may still have
        // run on the server once the lock was released: the documented ambiguity.)
        tokio::time::timeout(
            Duration::from_secs(10),
            lifecycle(&store, "after-the-dropped-one"),
        )
        .await
        .expect("the pool's slot was not given back")
        .unwrap();
    });

    // Dropped after its runtime has shut down.
    let pending = runtime.block_on(in_flight(&store, &mut blocker, "dropped-2"));
    drop(runtime);
    drop_without_runtime(pending);
    drop(blocker);
    drop(store);
    drop(db);
}

#[test]
fn an_operation_outside_any_runtime_fails_with_a_clear_error() {
    let db = in_runtime(TestDb::new());
    let store = owned_store(&db, 2);
    let err = futures::executor::block_on(store.get_by_hash("no-runtime")).unwrap_err();
    assert!(matches!(err, StoreError::NoRuntime), "{err:?}");
    println!("outside a runtime: {err}");
    drop(db);
}

#[test]
fn a_store_works_from_a_second_runtime() {
    let db = in_runtime(TestDb::new());
    // Built and used on runtime A, which is then no longer driven (this thread blocks in
    // join below), and used from runtime B on another thread.
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = first.block_on(async {
        let store = owned_store(&db, 2);
        lifecycle(&store, "runtime-a").await.unwrap();
        store
    });
    let used = store.clone();
    std::thread::spawn(move || {
        in_runtime(async move {
            let began = Instant::now();
            for n in 0..5 {
                lifecycle(&used, &format!("runtime-b-{n}")).await.unwrap();
            }
            assert!(
                began.elapsed() < Duration::from_secs(3),
                "{:?}",
                began.elapsed()
            );
        })
    })
    .join()
    .expect("the store failed on the second runtime");
    // And back on the first.
    first
        .block_on(lifecycle(&store, "runtime-a-again"))
        .unwrap();
    drop(store);
    drop(first);
    drop(db);
}

/// Operations spaced out past the server's idle limit, on a store that pings only after a
/// long idle time, all succeed: the dead connection is replaced and the statement run again
/// (it cannot have run: the server's goodbye was its answer).
#[tokio::test]
async fn connections_closed_by_idle_session_timeout_fail_no_request() {
    let db = TestDb::new().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET idle_session_timeout = '300ms'",
        db.name
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let store = PostgresStoreOptions::new()
        .max_connections(2)
        .ping_idle_after(None)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let mut failures = Vec::new();
    for n in 0..8 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        // Each step alone, so each operation meets a connection that died idle.
        let hash = format!("idle-{n}");
        let stored = request(&hash);
        let steps: [Result<bool, StoreError>; 3] = [
            store.store(&stored).await.map(|()| true),
            {
                tokio::time::sleep(Duration::from_millis(450)).await;
                store
                    .get_by_hash(&hash)
                    .await
                    .map(|found| found == Some(stored.clone()))
            },
            {
                tokio::time::sleep(Duration::from_millis(450)).await;
                store
                    .consume_by_hash(&hash)
                    .await
                    .map(|found| found == Some(stored.clone()))
            },
        ];
        for (step, outcome) in steps.into_iter().enumerate() {
            match outcome {
                Ok(true) => {}
                other => failures.push(format!("{hash} step {step}: {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    store.close().await;
}

#[tokio::test]
async fn connections_terminated_while_idle_fail_no_request() {
    let db = TestDb::new().await;
    let store = owned_store(&db, 4);
    for round in 0..5 {
        // Open a few connections, let them go idle, terminate every one of them.
        futures::future::try_join_all((0..4).map(|n| {
            let store = store.clone();
            async move { lifecycle(&store, &format!("terminate-{round}-{n}")).await }
        }))
        .await
        .unwrap();
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
             AND state = 'idle'",
        )
        .bind(&db.name)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert!(!terminated.is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Every operation kind, right away, concurrently: none fails.
        futures::future::try_join_all((0..4).map(|n| {
            let store = store.clone();
            async move { lifecycle(&store, &format!("after-terminate-{round}-{n}")).await }
        }))
        .await
        .unwrap_or_else(|err| panic!("round {round}: a request failed: {err}"));
    }
    store.close().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_by_close() {
    let db = TestDb::new().await;
    // The store's connections carry a name of their own, so the count sees only them.
    let store = PostgresStoreOptions::new()
        .max_connections(3)
        .idle_timeout(Some(Duration::from_millis(300)))
        .connect_lazy_with(db.options.clone().application_name("idle-timeout-test"));
    let open = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-timeout-test'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    futures::future::try_join_all((0..3).map(|n| {
        let store = store.clone();
        async move { lifecycle(&store, &format!("idle-timeout-{n}")).await }
    }))
    .await
    .unwrap();
    let busy = open().await;
    assert!(busy > 0, "the store opened no connection");
    // The reaper runs every quarter of the timeout.
    let waited = Instant::now();
    while open().await > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(3),
            "idle connections still open after {:?}",
            waited.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{busy} idle store connections closed {:?} after the last use (idle_timeout 300 ms)",
        waited.elapsed()
    );
    // The store opens new ones when needed, and close() ends them and later operations.
    lifecycle(&store, "after-idle").await.unwrap();
    assert!(open().await > 0);
    store.close().await;
    let err = store.get_by_hash("closed").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let waited = Instant::now();
    while open().await > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(3),
            "close() left connections open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reaper runs on the runtime of an operation: when that runtime ends, the next
/// operation, on another runtime, starts it again, and idle connections past `idle_timeout`
/// are still closed without any further operation.
#[test]
fn the_reaper_restarts_on_a_later_runtime() {
    let db = in_runtime(TestDb::new());
    let store = PostgresStoreOptions::new()
        .max_connections(3)
        .idle_timeout(Some(Duration::from_millis(300)))
        .connect_lazy_with(db.options.clone().application_name("reaper-restart-test"));
    // The first runtime starts the reaper and ends with it.
    in_runtime(lifecycle(&store, "reaper-first-runtime")).unwrap();
    in_runtime(async {
        let mut admin = sqlx::PgConnection::connect_with(&db.options).await.unwrap();
        async fn open(admin: &mut sqlx::PgConnection) -> i64 {
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'reaper-restart-test'",
            )
            .fetch_one(admin)
            .await
            .unwrap()
        }
        futures::future::try_join_all((0..3).map(|n| {
            let store = store.clone();
            async move { lifecycle(&store, &format!("reaper-second-runtime-{n}")).await }
        }))
        .await
        .unwrap();
        assert!(open(&mut admin).await > 0, "the store opened no connection");
        let waited = Instant::now();
        while open(&mut admin).await > 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "idle connections still open after {:?}: no reaper on this runtime",
                waited.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "on the second runtime, idle connections closed {:?} after the last use \
             (idle_timeout 300 ms)",
            waited.elapsed()
        );
    });
    drop(store);
    drop(db);
}

/// The error and its sources, as one line.
fn error_chain(err: &StoreError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(" <- ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A database whose connections are switched off (`ALTER DATABASE ... ALLOW_CONNECTIONS
/// false`, as during maintenance) refuses every new connection with FATAL 55000. For a store
/// on its own pool and for one on a caller's pool that is a transient `Unavailable` (a
/// server should answer 503 and retry), not a `Database` error; once connections are
/// allowed again, the same stores work by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_closed_to_new_connections_is_unavailable_and_then_works_again() {
    let db = TestDb::new().await;
    // Lazy: neither store has a connection when connections are switched off.
    let owned = owned_store(&db, 2);
    let shared = PostgresStore::new(
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(db.options.clone()),
    );
    db.allow_connections(false).await;
    for (name, store) in [("owned pool", &owned), ("caller's pool", &shared)] {
        let err = store
            .get_by_hash(&common::hash(1))
            .await
            .expect_err("no connection can be opened");
        let chain = error_chain(&err);
        assert!(
            matches!(err, StoreError::Unavailable { .. }) && err.is_transient(),
            "{name}: {chain}"
        );
        assert!(
            chain.contains("not currently accepting connections"),
            "{name}: {chain}"
        );
    }
    db.allow_connections(true).await;
    for (n, store) in [&owned, &shared].into_iter().enumerate() {
        lifecycle(store, &format!("after-maintenance-{n}"))
            .await
            .unwrap();
    }
    owned.close().await;
}

/// `close()` on both owners: the store and its clones stop (operations and migrations fail
/// with `Unavailable`); a store that owns its connections closes them, a store on the
/// caller's pool leaves that pool open and usable.
#[tokio::test]
async fn close_stops_the_store_and_closes_only_the_connections_it_owns() {
    let db = TestDb::new().await;
    let count = |name: &'static str| {
        let admin = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(name)
            .fetch_one(&admin)
            .await
            .unwrap()
        }
    };
    let assert_stopped = |label: &'static str, store: PostgresStore| async move {
        let err = store.get_by_hash("after-close").await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{label}: {err:?}"
        );
        let err = store.migrate().await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{label}, migrate: {err:?}"
        );
        println!("{label} after close(): {err}");
    };

    // The caller's pool: the store stops, the pool stays open.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.options.clone().application_name("close-callers-pool"))
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone());
    let clone = store.clone();
    lifecycle(&store, "close-shared").await.unwrap();
    store.close().await;
    assert!(!pool.is_closed(), "close() closed the caller's pool");
    assert_stopped("store on the caller's pool", store).await;
    assert_stopped("its clone", clone).await;
    let answer: i32 = sqlx::query_scalar("SELECT 7")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(answer, 7, "the caller's pool no longer works");
    assert!(count("close-callers-pool").await > 0);
    pool.close().await;

    // The store's own connections: closed.
    let store = PostgresStoreOptions::new()
        .max_connections(2)
        .connect_lazy_with(db.options.clone().application_name("close-owned"));
    let clone = store.clone();
    lifecycle(&store, "close-owned").await.unwrap();
    assert!(count("close-owned").await > 0);
    store.close().await;
    assert_stopped("store with its own connections", store).await;
    assert_stopped("its clone", clone).await;
    let waited = Instant::now();
    while count("close-owned").await > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "close() left the store's own connections open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
