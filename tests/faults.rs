//! Database faults, injected for real: a TCP proxy between the pool and PostgreSQL that cuts
//! every connection (tests/common/fault.rs), and a temporary cluster of the test's own that is
//! crashed with `pg_ctl stop -m immediate` and started again (tests/common/cluster.rs).
//!
//! What they show: during an outage every operation fails fast with a typed, transient
//! `StoreError`; afterwards the same store works again by itself; no acknowledged request
//! is lost and none is handed to two callers, under load as across a server crash.
//! Each test prints its figures (run with `--nocapture` to see them).

mod common;

use chrono::Utc;
use common::cluster::TempCluster;
use common::fault::FaultProxy;
use common::{error_kind as kind, join_within, TestDb};
use par_store::sqlx;
use par_store::sqlx::postgres::PgSslMode;
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests measure time: run them one at a time, not beside each other's load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one operation may take while the database is unreachable: the operation timeout
/// bounds it; the rest is slack for a busy CI machine.
const FAIL_FAST_BOUND: Duration = Duration::from_millis(2_500);
/// A hang is reported as such rather than waited for.
const HANG: Duration = Duration::from_secs(10);

/// The store's defaults with the timeouts made small, as the issue asks.
fn options() -> PostgresStoreOptions {
    PostgresStoreOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .statement_timeout(Some(STATEMENT_TIMEOUT))
        .operation_timeout(Some(OPERATION_TIMEOUT))
}

fn request(hash: &str, parameters: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash,
        Utc::now() + chrono::Duration::seconds(600),
        parameters,
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Store,
    Get,
    Consume,
    DeleteExpired,
}

const ALL_OPS: [Op; 4] = [Op::Store, Op::Get, Op::Consume, Op::DeleteExpired];

/// Runs one operation on a fresh or known hash; only the error matters to the callers.
async fn run(store: &PostgresStore, op: Op, hash: &str) -> Result<(), StoreError> {
    match op {
        Op::Store => store.store(&request(hash, "client_id=fault")).await,
        Op::Get => store.get_by_hash(hash).await.map(drop),
        Op::Consume => store.consume_by_hash(hash).await.map(drop),
        Op::DeleteExpired => store.delete_expired().await.map(drop),
    }
}

/// Runs `op` and returns its error and how long it took; fails the test on success, on an
/// error that is not transient, and on a hang.
async fn expect_transient_failure(store: &PostgresStore, op: Op, hash: &str) -> (String, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG, run(store, op, hash))
        .await
        .unwrap_or_else(|_| panic!("{op:?} hung for {HANG:?} during the outage"));
    let elapsed = started.elapsed();
    let err = match result {
        Ok(()) => panic!("{op:?} succeeded during the outage"),
        Err(err) => err,
    };
    assert!(
        matches!(
            err,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        ),
        "{op:?} during the outage must fail with Unavailable or Timeout, got {err:?}"
    );
    assert!(err.is_transient());
    assert!(
        elapsed < FAIL_FAST_BOUND,
        "{op:?} took {elapsed:?} to fail, more than {FAIL_FAST_BOUND:?}"
    );
    (kind(&err).to_owned(), elapsed)
}

async fn proxied_store(db: &TestDb) -> (FaultProxy, PostgresStore) {
    let proxy = FaultProxy::in_front_of(&db.options).await;
    // With `--all-features`, sqlx's default `sslmode=prefer` negotiates TLS with the local
    // server, and rustls in a debug build spends about 90 ms per handshake: that would
    // dominate the recovery times measured here, so these connections stay plain.
    let routed = proxy.route(&db.options).ssl_mode(PgSslMode::Disable);
    let store = options()
        .connect_with(routed)
        .await
        .expect("connect through the proxy");
    (proxy, store)
}

/// Opens several pooled connections, so that a cut finds idle connections to kill, and
/// prepares the store's statements on them.
async fn warm_up(store: &PostgresStore, tag: &str) {
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let store = store.clone();
            let hash = format!("{tag}-warm-{n}");
            tokio::spawn(async move {
                round(&store, &hash).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_fails_fast_with_a_typed_error_during_a_cut() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (proxy, store) = proxied_store(&db).await;
    warm_up(&store, "cut").await;
    db.store().store(&request("known", "p")).await.unwrap();

    proxy.cut();
    // Right after the cut the first operation meets a dead pooled connection (idle for less
    // than the ping threshold); from then on, and once idle past the threshold, pooled
    // connections are pinged first; once none is left, every new connection is closed during
    // the handshake.
    let phases = [
        ("pooled connections just cut", Duration::ZERO),
        (
            "pooled connections idle past the ping threshold",
            Duration::from_millis(1_100),
        ),
        ("no pooled connection left", Duration::from_millis(100)),
    ];
    let mut slowest = Duration::ZERO;
    for (phase, pause) in phases {
        tokio::time::sleep(pause).await;
        let mut line = Vec::new();
        for op in ALL_OPS {
            let (kind, elapsed) = expect_transient_failure(&store, op, "known").await;
            slowest = slowest.max(elapsed);
            line.push(format!("{op:?}={kind} in {} ms", elapsed.as_millis()));
        }
        println!("during a cut, {phase}: {}", line.join(", "));
    }
    println!(
        "slowest failure {} ms (bound {} ms); proxy: {:?}",
        slowest.as_millis(),
        FAIL_FAST_BOUND.as_millis(),
        proxy.counts()
    );

    proxy.restore();
    // Nothing sent during the cut reached the server (the consume of "known" included).
    let found = retry_until_ok(Duration::from_secs(5), || async {
        store.get_by_hash("known").await
    })
    .await;
    assert!(found.0.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_stall_every_operation_times_out_within_the_operation_timeout() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (proxy, store) = proxied_store(&db).await;
    warm_up(&store, "stall").await;
    db.store().store(&request("known", "p")).await.unwrap();

    // The network swallows packets: connections stay open, nothing comes back. Only the
    // operation timeout (or the acquire timeout, for a new connection) can end a call.
    proxy.stall();
    let calls = ALL_OPS.map(|op| {
        let store = store.clone();
        tokio::spawn(async move { (op, expect_transient_failure(&store, op, "known").await) })
    });
    let mut line = Vec::new();
    for call in calls {
        let (op, (kind, elapsed)) = call.await.unwrap();
        line.push(format!("{op:?}={kind} in {} ms", elapsed.as_millis()));
    }
    println!(
        "during a stall (operation timeout {} ms): {}",
        OPERATION_TIMEOUT.as_millis(),
        line.join(", ")
    );

    proxy.restore();
    let ((), recovery, failures) = retry_until_ok(Duration::from_secs(5), || {
        let store = store.clone();
        async move { round(&store, "after-stall").await }
    })
    .await;
    println!(
        "after the stall every operation succeeded after {} ms ({failures} failed rounds first)",
        recovery.as_millis()
    );
    assert!(recovery < Duration::from_secs(1), "{recovery:?}");
    // The statements held during the stall reached the server once it ended: the consume
    // that timed out may well have consumed (the documented ambiguity of a failed consume).
    let known = db.store().get_by_hash("known").await.unwrap();
    println!(
        "the request whose consume timed out during the stall is {}",
        if known.is_some() {
            "still there"
        } else {
            "gone: consumed after all"
        }
    );
}

/// After a network black hole, the idle connections (idle past `ping_idle_after`) are pinged
/// before use and never answer: the operation fails with `Unavailable` within one
/// `acquire_timeout` (every ping, wait and connection attempt together), not after one
/// `acquire_timeout` per idle connection and then the operation timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_black_hole_a_checkout_fails_unavailable_within_the_acquire_timeout() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let proxy = FaultProxy::in_front_of(&db.options).await;
    let acquire_timeout = Duration::from_secs(3);
    let store = PostgresStoreOptions::new()
        .max_connections(8)
        .acquire_timeout(acquire_timeout)
        .ping_idle_after(Some(Duration::from_millis(100)))
        .connect_with(proxy.route(&db.options).ssl_mode(PgSslMode::Disable))
        .await
        .unwrap();
    warm_up(&store, "black-hole").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.stall();
    let started = Instant::now();
    let result = tokio::time::timeout(HANG * 2, store.get_by_hash("black-hole-warm-0")).await;
    let elapsed = started.elapsed();
    let err = result
        .expect("the operation hung")
        .expect_err("succeeded through a black hole");
    println!(
        "through a black hole: {} after {} ms (acquire_timeout {} ms): {err}",
        kind(&err),
        elapsed.as_millis(),
        acquire_timeout.as_millis()
    );
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "expected Unavailable, got {err:?} after {elapsed:?}"
    );
    // Generous slack for a loaded machine; without the bound it took about 10 s.
    assert!(
        elapsed < acquire_timeout + Duration::from_secs(3),
        "{elapsed:?}"
    );
    proxy.restore();
    let (_, recovery, _) = retry_until_ok(Duration::from_secs(10), || {
        let store = store.clone();
        async move { round(&store, "after-black-hole").await }
    })
    .await;
    println!("works again {} ms after the restore", recovery.as_millis());
}

/// Calls `attempt` every 10 ms until it succeeds; returns its value, the time it took and the
/// number of failed attempts. Fails the test after `limit`, and on errors that are not
/// transient.
async fn retry_until_ok<T, F, Fut>(limit: Duration, mut attempt: F) -> (T, Duration, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return (value, started.elapsed(), failures),
            Err(err) if err.is_transient() && started.elapsed() < limit => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!(
                "still failing after {:?} ({failures} failures): {err:?}",
                started.elapsed()
            ),
        }
    }
}

/// One round of every operation; the first error ends it.
async fn round(store: &PostgresStore, hash: &str) -> Result<(), StoreError> {
    store.store(&request(hash, "client_id=round")).await?;
    store.get_by_hash(hash).await?;
    store.delete_expired().await?;
    store.consume_by_hash(hash).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_succeed_again_within_a_second_after_restore() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (proxy, store) = proxied_store(&db).await;
    let scenarios = [
        // No traffic during a short cut: the pool's connections die idle, and are used
        // again less than a second later.
        ("short cut, idle pool", Duration::from_millis(300), false),
        // Traffic keeps failing during a longer cut.
        ("2 s cut under traffic", Duration::from_secs(2), true),
    ];
    for (number, (scenario, length, traffic)) in scenarios.into_iter().enumerate() {
        warm_up(&store, &format!("restore-{number}")).await;
        proxy.cut();
        let cut_started = Instant::now();
        let mut failed_during_cut = 0;
        while cut_started.elapsed() < length {
            if traffic {
                let hash = format!("during-cut-{number}-{failed_during_cut}");
                expect_transient_failure(&store, ALL_OPS[failed_during_cut % 4], &hash).await;
                failed_during_cut += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.restore();
        let mut attempt = 0;
        let ((), recovery, failures) = retry_until_ok(Duration::from_secs(5), || {
            attempt += 1;
            let hash = format!("after-restore-{number}-{attempt}");
            let store = store.clone();
            async move { round(&store, &hash).await }
        })
        .await;
        println!(
            "{scenario}: {failed_during_cut} operations failed during the cut; after restore \
             every operation succeeded after {} ms ({failures} failed rounds first)",
            recovery.as_millis()
        );
        assert!(
            recovery < Duration::from_secs(1),
            "{scenario}: operations recovered only after {recovery:?}"
        );
        // The first request on a connection killed by the cut fails; the store then has the
        // pool ping every connection before use, so the other dead ones are replaced instead
        // of failing a request each.
        assert!(
            failures <= 1,
            "{scenario}: {failures} rounds failed after the restore; stale pooled connections \
             must be replaced, not fail one request each"
        );
        // From then on nothing fails: 8 clients, 25 rounds each.
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        round(&store, &format!("steady-{number}-{client}-{n}"))
                            .await
                            .unwrap_or_else(|err| panic!("a round failed after recovery: {err:?}"));
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    }
    println!("proxy: {:?}", proxy.counts());
}

/// What the load test's clients saw, for the final check.
#[derive(Default)]
struct Ledger {
    /// Stored and acknowledged (`Ok`), with their parameters.
    acked: HashMap<String, String>,
    /// `store` failed: the request may or may not exist.
    store_failed: HashSet<String>,
    /// How many callers got `Some` from `consume_by_hash`, per hash.
    winners: HashMap<String, u32>,
    /// `consume_by_hash` failed: the request may or may not have been consumed.
    consume_failed: HashSet<String>,
    /// `consume_by_hash` answered `None` for an acknowledged request.
    consumed_none: HashSet<String>,
    ops: BTreeMap<Op, u64>,
    errors: BTreeMap<(Op, &'static str), u64>,
    /// When each failed operation started and ended.
    error_spans: Vec<(Instant, Instant)>,
    /// Anything that must never happen (wrong parameters, a non-transient error).
    unexpected: Vec<String>,
}

impl Ledger {
    fn failed(&mut self, op: Op, err: &StoreError, began: Instant) {
        *self.errors.entry((op, kind(err))).or_default() += 1;
        self.error_spans.push((began, Instant::now()));
        if !err.is_transient() {
            self.unexpected.push(format!("{op:?}: {err:?}"));
        }
    }
}

/// A small xorshift generator: the clients only need to pick among recent hashes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Recently acknowledged hashes that clients read and race to consume.
const RECENT: usize = 8;

async fn load_client(
    client: usize,
    store: PostgresStore,
    ledger: Arc<Mutex<Ledger>>,
    recent: Arc<Mutex<VecDeque<String>>>,
    running: Arc<AtomicBool>,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) * 0x2545_f491));
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        n += 1;
        let hash = format!("load-{client}-{n}");
        let parameters = format!("client_id=c{client}&n={n}&state=x%27y");
        let mut failed = false;

        let began = Instant::now();
        let stored = store.store(&request(&hash, &parameters)).await;
        {
            let mut ledger = ledger.lock().unwrap();
            *ledger.ops.entry(Op::Store).or_default() += 1;
            match &stored {
                Ok(()) => {
                    ledger.acked.insert(hash.clone(), parameters);
                }
                Err(err) => {
                    ledger.failed(Op::Store, err, began);
                    ledger.store_failed.insert(hash.clone());
                    failed = true;
                }
            }
        }
        if stored.is_ok() {
            let mut recent = recent.lock().unwrap();
            recent.push_back(hash);
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }

        let pick = |rng: &mut Rng| {
            let recent = recent.lock().unwrap();
            (!recent.is_empty()).then(|| recent[rng.below(recent.len())].clone())
        };
        if let Some(target) = pick(&mut rng) {
            let began = Instant::now();
            let read = store.get_by_hash(&target).await;
            let mut ledger = ledger.lock().unwrap();
            *ledger.ops.entry(Op::Get).or_default() += 1;
            match read {
                Ok(Some(found)) => {
                    if ledger.acked.get(&target) != Some(&found.parameters) {
                        ledger
                            .unexpected
                            .push(format!("get {target} returned other parameters"));
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    ledger.failed(Op::Get, &err, began);
                    failed = true;
                }
            }
        }
        if let Some(target) = pick(&mut rng) {
            let began = Instant::now();
            let consumed = store.consume_by_hash(&target).await;
            let mut ledger = ledger.lock().unwrap();
            *ledger.ops.entry(Op::Consume).or_default() += 1;
            match consumed {
                Ok(Some(found)) => {
                    if ledger.acked.get(&target) != Some(&found.parameters) {
                        ledger
                            .unexpected
                            .push(format!("consume {target} returned other parameters"));
                    }
                    *ledger.winners.entry(target).or_default() += 1;
                }
                Ok(None) => {
                    ledger.consumed_none.insert(target);
                }
                Err(err) => {
                    ledger.failed(Op::Consume, &err, began);
                    ledger.consume_failed.insert(target);
                    failed = true;
                }
            }
        }
        if failed {
            // What a well-behaved server does: do not hammer a database that is away.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_through_three_cuts_loses_nothing_and_never_hands_out_twice() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (proxy, store) = proxied_store(&db).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let recent = Arc::new(Mutex::new(VecDeque::new()));
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..16)
        .map(|client| {
            tokio::spawn(load_client(
                client,
                store.clone(),
                Arc::clone(&ledger),
                Arc::clone(&recent),
                Arc::clone(&running),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut cuts = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let cut_at = Instant::now();
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.restore();
        cuts.push((cut_at, Instant::now()));
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    running.store(false, Ordering::Relaxed);
    join_within(clients, HANG, "a client").await;
    let load_time = started.elapsed();

    // Everything in the table now, read directly (not through the proxy).
    let rows: HashMap<String, String> = sqlx::query_as(
        "SELECT reference_value_hash, parameters FROM pushed_authorization_requests",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // Every client has finished: the ledger is complete.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut problems = ledger.unexpected.clone();
    let (mut consumed, mut ambiguous_gone, mut ambiguous_kept, mut kept) = (0, 0, 0, 0);
    for (hash, parameters) in &ledger.acked {
        let winners = ledger.winners.get(hash).copied().unwrap_or(0);
        let present = rows.get(hash);
        if winners > 1 {
            problems.push(format!("{hash} was consumed by {winners} callers"));
        } else if winners == 1 {
            consumed += 1;
            if present.is_some() {
                problems.push(format!("{hash} was consumed and is still there"));
            }
        } else if ledger.consume_failed.contains(hash) {
            // The documented ambiguity: a consume that failed may have consumed.
            match present {
                Some(_) => ambiguous_kept += 1,
                None => ambiguous_gone += 1,
            }
        } else {
            match present {
                Some(found) if found == parameters => kept += 1,
                Some(_) => problems.push(format!("{hash} holds other parameters")),
                None => problems.push(format!(
                    "{hash} was acknowledged, never consumed, and is gone{}",
                    if ledger.consumed_none.contains(hash) {
                        " (a consume answered None)"
                    } else {
                        ""
                    }
                )),
            }
        }
    }
    let (mut failed_stores_kept, mut failed_stores_gone) = (0, 0);
    for hash in &ledger.store_failed {
        if rows.contains_key(hash) {
            failed_stores_kept += 1;
        } else {
            failed_stores_gone += 1;
        }
    }
    for hash in rows.keys() {
        if !ledger.acked.contains_key(hash) && !ledger.store_failed.contains(hash) {
            problems.push(format!("{hash} is in the table but was never stored"));
        }
    }

    let total_ops: u64 = ledger.ops.values().sum();
    let total_errors: u64 = ledger.errors.values().sum();
    println!(
        "16 clients, {} ms, 3 cuts of 500 ms: {total_ops} operations {:?}",
        load_time.as_millis(),
        ledger.ops
    );
    println!(
        "errors: {total_errors} in total, by operation and kind: {:?}",
        ledger.errors
    );
    println!(
        "acknowledged stores {}: {consumed} consumed by exactly one caller, {kept} still there, \
         {} after a failed consume ({ambiguous_gone} gone, {ambiguous_kept} still there)",
        ledger.acked.len(),
        ambiguous_gone + ambiguous_kept
    );
    println!(
        "failed stores {}: {failed_stores_kept} written nonetheless, {failed_stores_gone} not",
        ledger.store_failed.len()
    );
    println!("proxy: {:?}", proxy.counts());
    assert!(
        problems.is_empty(),
        "{} problems, first ones: {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
    // An error belongs to a cut when its operation overlapped it; on a healthy database,
    // between the cuts, nothing fails.
    let overlaps_a_cut = |(began, ended): &(Instant, Instant)| {
        cuts.iter()
            .any(|(cut_at, restored_at)| began <= restored_at && ended >= cut_at)
    };
    let (inside, outside): (Vec<_>, Vec<_>) = ledger
        .error_spans
        .iter()
        .partition(|span| overlaps_a_cut(span));
    println!(
        "errors inside the cut windows: {}; outside them: {}",
        inside.len(),
        outside.len()
    );
    assert!(!inside.is_empty(), "the cuts must have been noticed");
    assert!(
        outside.is_empty(),
        "{} operations failed outside the cuts, e.g. started {:?} after the load began",
        outside.len(),
        outside
            .first()
            .map(|(began, _)| began.duration_since(started))
    );
    assert!(
        consumed > 0 && kept > 0,
        "the load must have done something"
    );

    // The same store works on.
    round(&store, "after-the-load").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_requests_survive_a_server_crash_and_the_same_store_recovers() {
    if common::require_server_bindir(
        "faults::acknowledged_requests_survive_a_server_crash_and_the_same_store_recovers",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = TempCluster::start_new().await;
    let store = options()
        .connect_with(cluster.connect_options())
        .await
        .expect("connect to the temporary cluster");
    store.migrate().await.unwrap();

    // 200 requests, 50 of them consumed before the crash.
    let mut acked: HashMap<String, String> = HashMap::new();
    for n in 0..200 {
        let hash = format!("before-{n}");
        let parameters = format!("client_id=c&n={n}");
        store.store(&request(&hash, &parameters)).await.unwrap();
        acked.insert(hash, parameters);
    }
    let mut consumed = HashSet::new();
    for n in (0..200).step_by(4) {
        let hash = format!("before-{n}");
        assert!(store.consume_by_hash(&hash).await.unwrap().is_some());
        consumed.insert(hash);
    }

    // Four writers keep storing through the crash; what they saw acknowledged must survive.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let running = Arc::new(AtomicBool::new(true));
    let last_success = Arc::new(Mutex::new(Instant::now()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, ledger, running, last_success) = (
                store.clone(),
                Arc::clone(&ledger),
                Arc::clone(&running),
                Arc::clone(&last_success),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while running.load(Ordering::Relaxed) {
                    n += 1;
                    let hash = format!("during-{writer}-{n}");
                    let parameters = format!("client_id=w{writer}&n={n}");
                    let began = Instant::now();
                    let result = store.store(&request(&hash, &parameters)).await;
                    let failed = {
                        let mut ledger = ledger.lock().unwrap();
                        *ledger.ops.entry(Op::Store).or_default() += 1;
                        match result {
                            Ok(()) => {
                                ledger.acked.insert(hash, parameters);
                                *last_success.lock().unwrap() = Instant::now();
                                false
                            }
                            Err(err) => {
                                ledger.failed(Op::Store, &err, began);
                                ledger.store_failed.insert(hash);
                                true
                            }
                        }
                    };
                    if failed {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let crashed = Instant::now();
    cluster.stop_immediate().await;
    let stop_took = crashed.elapsed();
    // While the server is down, every operation fails fast and typed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut down = Vec::new();
    for op in ALL_OPS {
        let (kind, elapsed) = expect_transient_failure(&store, op, "before-1").await;
        down.push(format!("{op:?}={kind} in {} ms", elapsed.as_millis()));
    }
    let start_began = Instant::now();
    cluster.start().await;
    let start_took = start_began.elapsed();
    let restarted = Instant::now();
    let (_, recovery, failures) = retry_until_ok(Duration::from_secs(10), || {
        let store = store.clone();
        async move { round(&store, "probe-after-restart").await }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    join_within(writers, HANG, "a writer").await;
    assert!(
        *last_success.lock().unwrap() > restarted,
        "the writers never stored anything after the restart"
    );

    // Every client has finished: the ledger is complete.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    acked.extend(ledger.acked.clone());
    use sqlx::Connection as _;
    let mut check = sqlx::PgConnection::connect_with(&cluster.connect_options())
        .await
        .unwrap();
    let rows: HashMap<String, String> = sqlx::query_as(
        "SELECT reference_value_hash, parameters FROM pushed_authorization_requests",
    )
    .fetch_all(&mut check)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut lost = Vec::new();
    for (hash, parameters) in &acked {
        match (consumed.contains(hash), rows.get(hash)) {
            (true, None) => {}
            (true, Some(_)) => panic!("{hash} was consumed before the crash and came back"),
            (false, Some(found)) => assert_eq!(found, parameters, "{hash}"),
            (false, None) => lost.push(hash.clone()),
        }
    }
    println!(
        "server crash: pg_ctl stop -m immediate took {} ms, start (crash recovery) {} ms; \
         while down: {}",
        stop_took.as_millis(),
        start_took.as_millis(),
        down.join(", ")
    );
    println!(
        "the same store worked again {} ms after the server was up ({failures} failed rounds \
         first); writers: {:?} operations, errors {:?}; {} acknowledged requests checked, \
         {} failed stores ({} written nonetheless)",
        recovery.as_millis(),
        ledger.ops,
        ledger.errors,
        acked.len(),
        ledger.store_failed.len(),
        ledger
            .store_failed
            .iter()
            .filter(|hash| rows.contains_key(*hash))
            .count()
    );
    assert!(
        lost.is_empty(),
        "acknowledged requests lost in the crash: {lost:?}"
    );
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    assert!(
        recovery < Duration::from_secs(5),
        "the store took {recovery:?} to work again"
    );
    // Back to normal: a request stored now can be consumed once.
    store.store(&request("after", "p")).await.unwrap();
    assert!(store.consume_by_hash("after").await.unwrap().is_some());
    assert!(store.consume_by_hash("after").await.unwrap().is_none());
}
