//! Failover, for real: a primary and a streaming standby (two temporary clusters of the
//! test's own, the standby made with `pg_basebackup -R`, or
//! a cold copy of the primary where the server build lacks it), a mixed load of stores, gets and
//! consumes from several tasks through the fault proxy; mid-load the primary is stopped with
//! `pg_ctl stop -m immediate`, the standby is promoted and the proxy pointed at it, as a
//! virtual IP or a load balancer would be. Then, on the new primary, the test counts
//! acknowledged stores that are missing (lost), acknowledged consumes whose request is
//! readable again (resurrected: a single-use `request_uri` usable twice), and the operations
//! that failed, from the first failure to the last.
//!
//! The standby streams from the primary through a second proxy, the replication link, which a
//! scenario can cut shortly before the crash: a standby that has fallen behind, the case in
//! which asynchronous replication loses what it acknowledged.
//!
//! With asynchronous replication the figures are reported, not asserted (beyond showing that
//! the counting finds what a lagging standby lacks). With synchronous replication, for every
//! role or for the store's role only, nothing acknowledged may be lost or resurrected. With
//! asynchronous replication but a PAR lifetime shorter than the time until the new primary
//! takes traffic, nothing resurrected may be readable. docs/failure-behaviour.md, "Failover",
//! reports the figures.
//! Every run prints one line starting with `failover figures:` (run with `--nocapture`).

mod common;

use chrono::Utc;
use common::cluster::TempCluster;
use common::fault::FaultProxy;
use common::join_within;
use common::load::{self, Load, LoadPlan};
use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use par_store::sqlx::{self, Connection, PgConnection};
use par_store::{PostgresStore, PostgresStoreOptions, PushedAuthorizationRequestStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The runs measure time and start two clusters each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The standby's `application_name`, the name `synchronous_standby_names` refers to.
const STANDBY: &str = "par_standby";
/// The role the store connects as when only its sessions commit synchronously.
const STORE_ROLE: &str = "par_store_runtime";
/// Concurrent load tasks.
const CLIENTS: usize = 8;
/// Load before the crash (or before the replication link is cut).
const LOAD_BEFORE: Duration = Duration::from_millis(1_500);
/// Load after the first success on the new primary.
const LOAD_AFTER: Duration = Duration::from_millis(700);
/// "Right before the crash": acknowledged writes in this window are the ones at risk.
const AT_RISK: Duration = Duration::from_millis(200);
/// A synchronous run only proves something if the load was writing when the primary died.
const MIN_WRITES_AT_RISK: usize = 10;
/// How long the replication link is down before the crash in the lagging-standby runs.
const PARTITION: Duration = Duration::from_millis(300);
/// A commit the standby confirmed just before the cut may be acknowledged a little after it:
/// writes "during the partition" are counted from this long after the cut.
const CUT_GRACE: Duration = Duration::from_millis(100);
/// A hang is reported as such rather than waited for.
const HANG: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replication {
    /// PostgreSQL's default: no `synchronous_standby_names`; a commit waits for the
    /// primary's own WAL flush only.
    Async,
    /// `synchronous_standby_names` names the standby and `synchronous_commit = on` (the
    /// default) applies to every session: a commit waits until the standby has flushed it.
    Sync,
    /// `synchronous_standby_names` names the standby, but the server's default is
    /// `synchronous_commit = local`; only the store's role has `ALTER ROLE ... SET
    /// synchronous_commit = remote_apply` (a commit waits until the standby has applied it):
    /// the mitigation for a server that keeps asynchronous replication for everything else.
    SyncForStoreRole,
}

impl Replication {
    fn label(self) -> &'static str {
        match self {
            Replication::Async => "async",
            Replication::Sync => "sync",
            Replication::SyncForStoreRole => "sync-store-role",
        }
    }

    /// What `pg_stat_replication.sync_state` must say about the standby.
    fn expected_sync_state(self) -> &'static str {
        match self {
            Replication::Async => "async",
            Replication::Sync | Replication::SyncForStoreRole => "sync",
        }
    }
}

/// Builds the store under test on `options`: the one place that does.
async fn connect_store(options: PgConnectOptions) -> PostgresStore {
    // Small timeouts, so that operations against the dead primary fail fast. Plain TCP: with
    // `--all-features` sqlx would try TLS first, which these clusters do not offer.
    PostgresStoreOptions::new()
        .max_connections(CLIENTS as u32)
        .acquire_timeout(Duration::from_millis(500))
        .statement_timeout(Some(Duration::from_secs(1)))
        .operation_timeout(Some(Duration::from_secs(2)))
        .connect_with(options.ssl_mode(PgSslMode::Disable))
        .await
        .expect("connect the store through the proxy")
}

fn admin_options(cluster: &TempCluster) -> PgConnectOptions {
    cluster.connect_options().ssl_mode(PgSslMode::Disable)
}

async fn admin(cluster: &TempCluster) -> PgConnection {
    PgConnection::connect_with(&admin_options(cluster))
        .await
        .expect("admin connection to a temporary cluster")
}

/// Runs statements one by one over the simple protocol (`ALTER SYSTEM` refuses to run in a
/// transaction block).
async fn execute(conn: &mut PgConnection, statements: &[&'static str]) {
    for statement in statements {
        sqlx::raw_sql(*statement)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
}

/// The standby's row in the primary's `pg_stat_replication`: (state, sync_state).
async fn replication_state(primary: &mut PgConnection) -> Option<(String, String)> {
    sqlx::query_as("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1")
        .bind(STANDBY)
        .fetch_optional(primary)
        .await
        .expect("read pg_stat_replication")
}

/// A primary, migrated and configured for `replication`, and its standby streaming from it
/// through the replication link.
struct Pair {
    primary: TempCluster,
    standby: TempCluster,
    replication_link: FaultProxy,
}

async fn start_pair(replication: Replication) -> Pair {
    let primary = TempCluster::init().await;
    // PostgreSQL's defaults allow streaming replication (wal_level = replica, 10 WAL senders,
    // replication connections trusted from 127.0.0.1 by initdb --auth=trust).
    primary.start().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_options(&primary))
        .await
        .expect("connect to the primary");
    PostgresStore::new(pool.clone())
        .migrate()
        .await
        .expect("migrations apply");
    pool.close().await;
    let mut conn = admin(&primary).await;
    if replication == Replication::SyncForStoreRole {
        // docs/roles.sql's runtime grants, and synchronous commits for this role only.
        execute(
            &mut conn,
            &[
                "CREATE ROLE par_store_runtime LOGIN",
                "GRANT SELECT, INSERT, DELETE ON pushed_authorization_requests, \
                 pushed_authorization_request_markers TO par_store_runtime",
                "GRANT UPDATE (created_at) ON pushed_authorization_requests TO par_store_runtime",
                "GRANT UPDATE (kept_parameters) ON pushed_authorization_request_markers \
                 TO par_store_runtime",
                "ALTER ROLE par_store_runtime SET synchronous_commit = remote_apply",
                "ALTER SYSTEM SET synchronous_commit = local",
                "SELECT pg_reload_conf()",
            ],
        )
        .await;
    }
    // Without pg_basebackup the standby is a cold copy, for which the primary restarts.
    let _ = conn.close().await;
    let replication_link = FaultProxy::start(primary.address()).await;
    let standby = TempCluster::standby_of(&primary, replication_link.address(), STANDBY).await;
    standby.start().await;
    let mut conn = admin(&primary).await;
    wait_for_replication(&mut conn, "streaming", "async").await;
    if replication != Replication::Async {
        // Only now: with a synchronous standby named before it exists, every commit waits.
        execute(
            &mut conn,
            &[
                "ALTER SYSTEM SET synchronous_standby_names = 'par_standby'",
                "SELECT pg_reload_conf()",
            ],
        )
        .await;
        wait_for_replication(&mut conn, "streaming", "sync").await;
    }
    let _ = conn.close().await;
    Pair {
        primary,
        standby,
        replication_link,
    }
}

async fn wait_for_replication(primary: &mut PgConnection, state: &str, sync_state: &str) {
    let started = Instant::now();
    loop {
        let now = replication_state(primary).await;
        if now
            .as_ref()
            .is_some_and(|(s, sync)| s == state && sync == sync_state)
        {
            return;
        }
        assert!(
            started.elapsed() < HANG,
            "the standby did not reach {state}/{sync_state} within {HANG:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One failover run: how the pair replicates, and what the server does.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    replication: Replication,
    /// Cut the replication link this long before the crash (a standby that fell behind).
    partition: Option<Duration>,
    /// The lifetime of every request the load stores.
    lifetime: Duration,
    /// How long after the crash the new primary takes traffic (detection and promotion take
    /// this long at least; the standby is promoted at once, the proxy redirected then).
    serve_after: Duration,
}

impl Scenario {
    /// A PAR lifetime of 600 s (Duende's default) and traffic to the new primary as soon as
    /// it is promoted.
    fn new(replication: Replication) -> Scenario {
        Scenario {
            replication,
            partition: None,
            lifetime: Duration::from_secs(600),
            serve_after: Duration::ZERO,
        }
    }

    fn partition(self, partition: Duration) -> Scenario {
        Scenario {
            partition: Some(partition),
            ..self
        }
    }
}

/// What one run found on the new primary.
struct Outcome {
    /// Acknowledged stores, never consumed, missing on the new primary.
    lost: usize,
    /// Acknowledged consumes whose request was readable on the new primary (still there at
    /// the end, or consumed a second time after the failover).
    resurrected: usize,
    /// Of those, live (not expired) when the new primary took traffic.
    resurrected_live: usize,
    /// Of those, consumed a second time through the store after the load (when still live):
    /// handed out twice.
    consumed_twice: usize,
    /// `pg_stat_replication.sync_state` of the standby right before the crash or the cut.
    sync_state: String,
    /// Acknowledged writes in the `AT_RISK` window before the crash (or the cut).
    writes_at_risk: usize,
    /// Acknowledged writes from `CUT_GRACE` after the replication link was cut until the
    /// primary was gone (lagging-standby runs).
    writes_during_partition: usize,
}

/// One failover run; prints its figures and returns what the assertions need.
async fn failover_run(scenario: Scenario) -> Outcome {
    let Scenario {
        replication,
        partition,
        lifetime,
        serve_after,
    } = scenario;
    let run_started = Instant::now();
    let pair = start_pair(replication).await;
    let setup = run_started.elapsed();
    let proxy = FaultProxy::start(pair.primary.address()).await;
    let mut store_options = proxy.route(&pair.primary.connect_options());
    if replication == Replication::SyncForStoreRole {
        store_options = store_options.username(STORE_ROLE);
    }
    let store = connect_store(store_options).await;
    let mut primary_admin = admin(&pair.primary).await;
    if replication == Replication::SyncForStoreRole {
        // Sessions of the store's role commit synchronously; everyone else's do not.
        let mut as_store_role =
            PgConnection::connect_with(&admin_options(&pair.primary).username(STORE_ROLE))
                .await
                .unwrap();
        for (conn, expected) in [
            (&mut as_store_role, "remote_apply"),
            (&mut primary_admin, "local"),
        ] {
            let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(conn)
                .await
                .unwrap();
            assert_eq!(setting, expected);
        }
        let _ = as_store_role.close().await;
    }

    let running = Arc::new(AtomicBool::new(true));
    let plan = LoadPlan {
        tasks: CLIENTS,
        prefix: String::new(),
        lifetime,
        backoff: Duration::from_millis(10),
    };
    let Load { journal, tasks } = load::spawn(&store, &plan, &running);
    let load_started = Instant::now();
    tokio::time::sleep(LOAD_BEFORE).await;

    // Right before the crash (or the cut): the standby is streaming, as sync as configured.
    let (state, sync_state) = replication_state(&mut primary_admin)
        .await
        .expect("the standby is connected to the primary");
    assert_eq!(state, "streaming");
    let _ = primary_admin.close().await;
    let partition_began = Instant::now();
    if let Some(partition) = partition {
        pair.replication_link.cut();
        tokio::time::sleep(partition).await;
    }
    let crash_began = Instant::now();
    pair.primary.stop_immediate().await;
    let crashed = Instant::now();
    // Whatever was in flight to the standby is gone with the primary's host.
    pair.replication_link.cut();
    pair.standby.promote().await;
    let promoted = Instant::now();
    tokio::time::sleep(serve_after.saturating_sub(crash_began.elapsed())).await;
    proxy.redirect(pair.standby.address());
    let redirected = Instant::now();
    let serving_since = Utc::now();

    // The load runs on until it has worked on the new primary for a while.
    let recovered = loop {
        let last = journal.lock().unwrap().succeeded.last().copied();
        if let Some(at) = last.filter(|at| *at > redirected) {
            break at;
        }
        assert!(
            redirected.elapsed() < HANG,
            "no operation succeeded on the new primary within {HANG:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(LOAD_AFTER).await;
    running.store(false, Ordering::Relaxed);
    join_within(tasks, HANG, "a load task").await;
    let load_time = load_started.elapsed();

    // Count on the new primary, directly.
    let mut new_primary = admin(&pair.standby).await;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut new_primary)
        .await
        .unwrap();
    assert!(!in_recovery, "the standby was promoted");
    // Requests not consumed: a consumed request's marker is not a request.
    let rows: HashMap<String, chrono::DateTime<Utc>> = sqlx::query_as(
        "SELECT reference_value_hash, expires_at FROM pushed_authorization_requests",
    )
    .fetch_all(&mut new_primary)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let _ = new_primary.close().await;
    let mut journal = std::mem::take(&mut *journal.lock().unwrap());
    // What an attacker holding a used request_uri would try: consume it again, through the
    // store, on the new primary.
    let back: Vec<String> = journal
        .consumed
        .keys()
        .filter(|hash| rows.contains_key(*hash))
        .cloned()
        .collect();
    for hash in back {
        if store.consume_by_hash(&hash).await.unwrap().is_some() {
            journal
                .consumed
                .get_mut(&hash)
                .unwrap()
                .push(Instant::now());
        }
    }

    let mut lost_ages = Vec::new();
    let mut ambiguous = 0;
    for (hash, at) in &journal.stored {
        if journal.consumed.contains_key(hash) || rows.contains_key(hash) {
            continue;
        }
        match journal.consume_failed.get(hash) {
            // A consume that failed may have consumed it: not evidence of a loss. Unless it
            // ran entirely while the old primary was down and before the proxy led to the
            // new one: then it reached no server.
            Some((began, ended)) if !(*began > crashed && *ended < redirected) => ambiguous += 1,
            _ => lost_ages.push(age_at(*at, crashed)),
        }
    }
    let mut resurrected_ages = Vec::new();
    let (mut consumed_twice, mut resurrected_live) = (0, 0);
    for (hash, acks) in &journal.consumed {
        let live = rows.get(hash).map(|expires_at| *expires_at > serving_since);
        if acks.len() > 1 {
            consumed_twice += 1;
        }
        if acks.len() > 1 || live.is_some() {
            resurrected_ages.push(age_at(acks[0], crashed));
        }
        if acks.len() > 1 || live == Some(true) {
            resurrected_live += 1;
        }
    }
    let strangers = rows
        .keys()
        .filter(|hash| !journal.stored.contains_key(*hash) && !journal.store_failed.contains(*hash))
        .count();
    assert_eq!(strangers, 0, "rows in the table that no task stored");
    assert!(
        journal.unexpected.is_empty(),
        "unexpected errors or parameters: {:?}",
        &journal.unexpected[..journal.unexpected.len().min(10)]
    );

    let ok_before_crash = journal
        .succeeded
        .iter()
        .filter(|at| **at < partition_began)
        .count();
    let writes_at_risk = journal.writes_between(partition_began - AT_RISK, crashed);
    let writes_during_partition = match partition {
        Some(_) => journal.writes_between(partition_began + CUT_GRACE, crashed),
        None => 0,
    };
    let mut failures_by_kind: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (_, op, kind) in &journal.failed {
        *failures_by_kind.entry((op, kind)).or_default() += 1;
    }
    let failing = match (journal.failed.first(), journal.failed.last()) {
        (Some((first, ..)), Some((last, ..))) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    let before = partition_began.duration_since(load_started);
    println!(
        "failover figures: mode={} partition_ms={} lifetime_s={} serve_after_ms={} | setup {} ms, load {} ms | before the crash: \
         {ok_before_crash} operations ok in {} ms ({:.0}/s), sync_state={sync_state}, \
         {writes_at_risk} writes acknowledged in the {} ms before it{} | stop -m immediate {} ms, \
         promote {} ms, first success on the new primary {} ms after the crash | failed \
         operations: {} {failures_by_kind:?}, first to last failure {} ms | acknowledged stores \
         {}, lost {} (acknowledged {}); acknowledged consumes {}, resurrected {} (acknowledged \
         {}), of which live when the new primary took traffic {resurrected_live} and consumed \
         again {consumed_twice}; unclear after a failed consume: {ambiguous}",
        replication.label(),
        partition.map_or(0, |p| p.as_millis()),
        lifetime.as_secs(),
        serve_after.as_millis(),
        setup.as_millis(),
        load_time.as_millis(),
        before.as_millis(),
        ok_before_crash as f64 / before.as_secs_f64(),
        AT_RISK.as_millis(),
        match partition {
            Some(_) => format!(
                ", {writes_during_partition} from {} ms after the replication link was cut",
                CUT_GRACE.as_millis()
            ),
            None => String::new(),
        },
        crashed.duration_since(crash_began).as_millis(),
        promoted.duration_since(crashed).as_millis(),
        recovered.duration_since(crash_began).as_millis(),
        journal.failed.len(),
        failing.as_millis(),
        journal.stored.len(),
        lost_ages.len(),
        describe_ages(&lost_ages),
        journal.consumed.len(),
        resurrected_ages.len(),
        describe_ages(&resurrected_ages),
    );
    assert!(
        !journal.failed.is_empty(),
        "the crash must have been noticed"
    );
    Outcome {
        lost: lost_ages.len(),
        resurrected: resurrected_ages.len(),
        resurrected_live,
        consumed_twice,
        sync_state,
        writes_at_risk,
        writes_during_partition,
    }
}

/// How long before the primary died `at` was, in ms (negative: after the stop returned).
fn age_at(at: Instant, crashed: Instant) -> i64 {
    match crashed.checked_duration_since(at) {
        Some(age) => age.as_millis() as i64,
        None => -(at.duration_since(crashed).as_millis() as i64),
    }
}

fn describe_ages(ages: &[i64]) -> String {
    match (ages.iter().min(), ages.iter().max()) {
        (Some(newest), Some(oldest)) => {
            format!("{newest} to {oldest} ms before the stop returned")
        }
        _ => "-".to_owned(),
    }
}

/// The synchronous guarantee, and that the run could have shown a breach of it.
fn assert_nothing_lost_or_resurrected(replication: Replication, outcome: &Outcome) {
    assert_eq!(outcome.sync_state, replication.expected_sync_state());
    assert!(
        outcome.writes_at_risk >= MIN_WRITES_AT_RISK,
        "only {} writes were acknowledged right before the crash: the run proves nothing",
        outcome.writes_at_risk
    );
    assert_eq!(outcome.lost, 0, "acknowledged stores lost");
    assert_eq!(outcome.resurrected, 0, "acknowledged consumes resurrected");
    assert_eq!(outcome.consumed_twice, 0, "requests handed out twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_figures() {
    if common::require_server_bindir("failover::asynchronous_replication_figures").is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outcome = failover_run(Scenario::new(Replication::Async)).await;
    // Reported, not asserted: what a crash costs depends on how far behind the standby is.
    assert_eq!(outcome.sync_state, "async");
    assert!(
        outcome.writes_at_risk > 0,
        "the load was writing at the crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_with_a_lagging_standby_loses_and_resurrects() {
    if common::require_server_bindir(
        "failover::asynchronous_replication_with_a_lagging_standby_loses_and_resurrects",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outcome = failover_run(Scenario::new(Replication::Async).partition(PARTITION)).await;
    assert_eq!(outcome.sync_state, "async");
    // The primary went on acknowledging what the standby never received: the counting above
    // finds it (the same counting finds nothing in the synchronous runs).
    assert!(outcome.writes_during_partition > 0);
    assert!(
        outcome.lost + outcome.resurrected > 0,
        "writes acknowledged while the standby was cut off must be missing after the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_replication_loses_nothing_and_resurrects_nothing() {
    if common::require_server_bindir(
        "failover::synchronous_replication_loses_nothing_and_resurrects_nothing",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outcome = failover_run(Scenario::new(Replication::Sync)).await;
    assert_nothing_lost_or_resurrected(Replication::Sync, &outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_replication_acknowledges_nothing_a_lagging_standby_lacks() {
    if common::require_server_bindir(
        "failover::synchronous_replication_acknowledges_nothing_a_lagging_standby_lacks",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outcome = failover_run(Scenario::new(Replication::Sync).partition(PARTITION)).await;
    // Commits wait for the standby: while it is cut off, nothing is acknowledged (but what it
    // confirmed just before the cut).
    assert_eq!(outcome.writes_during_partition, 0);
    assert_nothing_lost_or_resurrected(Replication::Sync, &outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_commit_for_the_store_role_only_loses_nothing_and_resurrects_nothing() {
    if common::require_server_bindir(
        "failover::synchronous_commit_for_the_store_role_only_loses_nothing_and_resurrects_nothing",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outcome = failover_run(Scenario::new(Replication::SyncForStoreRole)).await;
    assert_nothing_lost_or_resurrected(Replication::SyncForStoreRole, &outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_shorter_than_the_failover_leaves_nothing_resurrected_to_read() {
    if common::require_server_bindir(
        "failover::a_lifetime_shorter_than_the_failover_leaves_nothing_resurrected_to_read",
    )
    .is_none()
    {
        return;
    }
    let _serial = SERIAL.lock().await;
    // Asynchronous replication and a standby that fell behind, as above; but requests live
    // 1 s, and the new primary takes traffic 1 s after the crash.
    let outcome = failover_run(Scenario {
        lifetime: Duration::from_secs(1),
        serve_after: Duration::from_secs(1),
        ..Scenario::new(Replication::Async).partition(PARTITION)
    })
    .await;
    assert!(outcome.writes_during_partition > 0);
    // Requests consumed before the crash are back in the table, but expired: no one can read
    // or consume them again.
    assert_eq!(outcome.resurrected_live, 0);
    assert_eq!(outcome.consumed_twice, 0);
}
