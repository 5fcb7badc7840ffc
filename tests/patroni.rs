//! Failover under a real HA engine: Patroni 3.0 with etcd 3.4, three PostgreSQL 15 nodes and
//! HAProxy 2.6 on loopback ports (tests/common/patroni.rs), the store reaching the leader two
//! ways at once: through HAProxy (Patroni's REST check `GET /primary`) and through a
//! multi-host URL (`postgres://...@h:p1,h:p2,h:p3/postgres?target_session_attrs=read-write`).
//!
//! Under live load (tasks storing, reading with `get_by_hash` and consuming with
//! `consume_for_client`, on each path), three faults in turn, Patroni deciding for itself:
//!
//! 1. `switchover`: a planned `patronictl switchover` to a replica (in synchronous mode, the
//!    synchronous standby);
//! 2. `kill`: the leader crashes (`SIGKILL` of its Patroni, its postmaster and the
//!    postmaster's children); Patroni promotes another node once the leader key expires;
//! 3. `rejoin`: the crashed node's Patroni is started again and the node comes back as a
//!    replica (`use_pg_rewind: true`: pg_rewind when its timeline diverged).
//!
//! Each fault waits until the replicas stream from the leader. Under load a replica can
//! still be more than `maximum_lag_on_failover` (1 MB, Patroni's default, kept here) behind
//! the leader's last position Patroni recorded when the leader dies; Patroni then promotes
//! none. The `kill` case records that (and starts the old leader again, which leads once
//! more), and `rejoin` is not run.
//!
//! After each fault the load runs on until every path has succeeded again, then a little
//! longer; then, on the leader, directly, the test counts acknowledged stores that are
//! missing (lost) and acknowledged consumes whose request is readable again (resurrected),
//! as tests/failover.rs does, and every failed operation by kind. Each case prints one line
//! starting with `patroni figures:` (run with `--nocapture`).
//!
//! Asserted in both modes: every failure is `Unavailable` or `Timeout` (never `Database`),
//! and the store serves again after each fault (within a generous bound). With
//! `synchronous_mode: true`: 0 acknowledged stores lost, 0 consumed requests brought back.
//! With `synchronous_mode: false` the losses are measured and printed, not asserted.

mod common;

use common::join_within;
use common::load::{self, Journal, LoadPlan, CLIENT};
use common::patroni::{Patroni, Settings};
use par_store::sqlx::postgres::{PgConnectOptions, PgSslMode};
use par_store::sqlx::{self, Connection, PgConnection};
use par_store::{
    Consumption, PostgresStore, PostgresStoreOptions, PushedAuthorizationRequestStore,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The two runs measure time and start a cluster each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Load tasks per path.
const TASKS: usize = 4;
/// Load before each fault.
const LOAD_BEFORE: Duration = Duration::from_millis(2_000);
/// Load after every path has succeeded again.
const LOAD_AFTER: Duration = Duration::from_millis(1_000);
/// The run only proves something if each path was writing right before the fault.
const AT_RISK: Duration = Duration::from_millis(1_000);
/// Bound on Patroni's own steps (a new leader, a rejoined replica) and on the store's
/// recovery after them: generous, for two loaded cores. Not a figure: a hang.
const HANG: Duration = Duration::from_secs(90);
/// What Patroni 3.0 logs when it will not promote a node because the node's WAL position is
/// more than `maximum_lag_on_failover` behind the leader's last one it recorded.
const LAGGING: &str = "My wal position exceeds maximum replication lag";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    HaProxy,
    MultiHost,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::HaProxy => "haproxy",
            Path::MultiHost => "multi-host",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Switchover,
    Kill,
    Rejoin,
    /// The leader crashes while every replica lags more than `maximum_lag_on_failover`.
    KillLagging,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Switchover => "switchover",
            Fault::Kill => "kill",
            Fault::Rejoin => "rejoin",
            Fault::KillLagging => "kill-lagging",
        }
    }
}

fn store_options() -> PostgresStoreOptions {
    // Small timeouts, as tests/failover.rs: an operation against a dead leader fails fast.
    PostgresStoreOptions::new()
        .max_connections(TASKS as u32)
        .acquire_timeout(Duration::from_millis(500))
        .statement_timeout(Some(Duration::from_secs(1)))
        .operation_timeout(Some(Duration::from_secs(2)))
}

async fn connect(cluster: &Patroni, path: Path) -> PostgresStore {
    match path {
        Path::HaProxy => store_options()
            .connect_with(
                PgConnectOptions::new()
                    .host("127.0.0.1")
                    .port(cluster.haproxy_port())
                    .username("postgres")
                    .database("postgres")
                    .ssl_mode(PgSslMode::Disable),
            )
            .await
            .expect("connect through HAProxy"),
        Path::MultiHost => {
            let hosts: Vec<String> = cluster
                .pg_ports()
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect();
            store_options()
                .connect(&format!(
                    "postgres://postgres@{}/postgres?sslmode=disable&target_session_attrs=read-write",
                    hosts.join(",")
                ))
                .await
                .expect("connect with a multi-host URL")
        }
    }
}

/// One path's load: its store, journal and tasks.
struct Load {
    path: Path,
    store: PostgresStore,
    journal: Arc<Mutex<Journal>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    prefix: String,
}

/// What one (mode, path, fault) case found.
struct Figures {
    lost: usize,
    resurrected: usize,
    consumed_twice: usize,
    failed: usize,
    writes_at_risk: usize,
    /// Patroni promoted no replica after the crash; the old leader was started again.
    no_failover: bool,
}

async fn leader_connection(cluster: &Patroni) -> PgConnection {
    cluster
        .wait_until(
            HANG,
            "a leader",
            |c| async move { c.leader().await.is_some() },
        )
        .await;
    let leader = cluster.leader().await.expect("a leader");
    PgConnection::connect_with(&cluster.node_options(leader))
        .await
        .expect("connect to the leader")
}

/// Runs the load on both paths, injects `fault` (on `victim`), waits until Patroni has
/// handled it and every path has succeeded again, and counts. Returns the figures per path.
async fn run_case(
    cluster: &mut Patroni,
    mode: &str,
    fault: Fault,
    victim: usize,
    candidate: usize,
    stores: &[(Path, PostgresStore)],
) -> Vec<(Path, Figures)> {
    let running = Arc::new(AtomicBool::new(true));
    let mut loads: Vec<Load> = stores
        .iter()
        .map(|(path, store)| {
            let prefix = format!("{mode}-{}-{}-", fault.label(), path.label());
            let plan = LoadPlan {
                tasks: TASKS,
                prefix: prefix.clone(),
                lifetime: Duration::from_secs(600),
                backoff: Duration::from_millis(20),
            };
            let load::Load { journal, tasks } = load::spawn(store, &plan, &running);
            Load {
                path: *path,
                store: store.clone(),
                journal,
                tasks,
                prefix,
            }
        })
        .collect();
    let load_started = Instant::now();
    tokio::time::sleep(LOAD_BEFORE).await;

    // Patroni's refusals to promote so far, per node.
    let lagging_before: Vec<usize> = (0..3).map(|i| cluster.log_count(i, LAGGING)).collect();
    let mut paused = Vec::new();
    if fault == Fault::KillLagging {
        // The replicas stop receiving WAL until Patroni has decided: they fall 4 MB behind
        // while the leader writes on, then two Patroni loops record the leader's position.
        paused = cluster.pause_receivers(victim);
        cluster
            .wait_until(HANG, "the replicas 4 MB behind", |c| async move {
                c.replica_lag(victim).await.is_some_and(|lag| lag > 4 << 20)
            })
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let fault_at = Instant::now();
    match fault {
        Fault::Switchover => cluster.switchover(victim, candidate).await,
        Fault::Kill | Fault::KillLagging => cluster.kill_node(victim),
        Fault::Rejoin => cluster.start_node(victim),
    }
    let injected = Instant::now();
    // Patroni's part: a new leader (not the victim), or the victim back as a replica; or,
    // after a crash, every other node refusing to be promoted because it lags.
    let survivors = cluster.running();
    let refused_by_all = |c: &Patroni| {
        survivors
            .iter()
            .all(|i| c.log_count(*i, LAGGING) > lagging_before[*i])
    };
    cluster
        .wait_until(HANG, "Patroni handles the fault", |c| async move {
            match fault {
                Fault::Switchover => c.leader().await.is_some_and(|leader| leader != victim),
                Fault::Kill | Fault::KillLagging => {
                    c.leader().await.is_some_and(|leader| leader != victim) || refused_by_all(c)
                }
                Fault::Rejoin => c.replicas().await.contains(&victim),
            }
        })
        .await;
    cluster.resume_receivers(&paused);
    let refused = matches!(fault, Fault::Kill | Fault::KillLagging)
        && cluster.leader().await.is_none()
        && refused_by_all(cluster);
    if refused {
        // No replica had the leader's last recorded position within
        // `maximum_lag_on_failover`: Patroni keeps the cluster without a leader rather than
        // lose more. What brings it back is the old leader: start it, as an operator would.
        println!(
            "patroni figures: mode={mode} fault={} on {}: Patroni promoted no replica \
             (every one lagged more than maximum_lag_on_failover); {} started again",
            fault.label(),
            cluster.name(victim),
            cluster.name(victim)
        );
        cluster.start_node(victim);
        cluster
            .wait_until(HANG, "a leader after the old one is back", |c| async move {
                c.leader().await.is_some()
            })
            .await;
    }
    let handled = Instant::now();
    let leader_now = cluster
        .leader()
        .await
        .map_or("none", |i| cluster.name(i))
        .to_owned();
    let rewound = fault == Fault::Rejoin && cluster.log_contains(victim, "pg_rewind exit code=0");
    println!(
        "patroni figures: mode={mode} fault={} on {}: leader now {leader_now}{}",
        fault.label(),
        cluster.name(victim),
        match fault {
            Fault::Rejoin => format!(
                ", {} back as a replica, {}",
                cluster.name(victim),
                if rewound {
                    "after pg_rewind"
                } else {
                    "without pg_rewind"
                }
            ),
            _ => String::new(),
        }
    );
    // The store's part: every path succeeds again, after its last failure.
    let started = Instant::now();
    loop {
        let recovered = loads.iter().all(|load| {
            let journal = load.journal.lock().unwrap();
            let since = journal
                .failed
                .last()
                .map_or(handled, |(at, ..)| (*at).max(handled));
            journal.succeeded.last().is_some_and(|at| *at > since)
        });
        if recovered {
            break;
        }
        assert!(
            started.elapsed() < HANG,
            "{mode} {}: the store did not serve again within {HANG:?} after Patroni handled \
             the fault\n{}",
            fault.label(),
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(LOAD_AFTER).await;
    running.store(false, Ordering::Relaxed);
    for load in &mut loads {
        join_within(std::mem::take(&mut load.tasks), HANG, "a load task").await;
    }
    let load_time = load_started.elapsed();

    let mut figures = Vec::new();
    for load in &loads {
        let mut leader = leader_connection(cluster).await;
        let rows: HashSet<String> = sqlx::query_scalar(
            "SELECT reference_value_hash FROM pushed_authorization_requests \
             WHERE reference_value_hash LIKE $1",
        )
        .bind(format!("{}%", load.prefix))
        .fetch_all(&mut leader)
        .await
        .expect("read the requests on the leader")
        .into_iter()
        .collect();
        let _ = leader.close().await;
        let mut journal = std::mem::take(&mut *load.journal.lock().unwrap());
        // What an attacker holding a used request_uri would try: consume it again.
        let back: Vec<String> = journal
            .consumed
            .keys()
            .filter(|hash| rows.contains(*hash))
            .cloned()
            .collect();
        for hash in &back {
            if let Consumption::Consumed(_) = load
                .store
                .consume_for_client(hash, CLIENT)
                .await
                .expect("consume again on the new leader")
            {
                journal.consumed.get_mut(hash).unwrap().push(Instant::now());
            }
        }
        let (mut lost, mut unclear) = (0, 0);
        for hash in journal.stored.keys() {
            if journal.consumed.contains_key(hash) || rows.contains(hash) {
                continue;
            }
            if journal.consume_failed.contains_key(hash) {
                unclear += 1; // the failed consume may have consumed it
            } else {
                lost += 1;
            }
        }
        let resurrected = journal
            .consumed
            .iter()
            .filter(|(hash, acks)| acks.len() > 1 || rows.contains(*hash))
            .count();
        let consumed_twice = journal.consumed.values().filter(|a| a.len() > 1).count();
        let strangers = rows
            .iter()
            .filter(|hash| {
                !journal.stored.contains_key(*hash) && !journal.store_failed.contains(*hash)
            })
            .count();
        assert_eq!(strangers, 0, "rows in the table that no task stored");

        let mut by_kind: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (_, op, kind) in &journal.failed {
            *by_kind.entry((op, kind)).or_default() += 1;
        }
        let ms = |d: Duration| d.as_millis();
        let since_fault = |at: Instant| ms(at.saturating_duration_since(fault_at));
        let outage = match (journal.failed.first(), journal.failed.last()) {
            (Some((first, ..)), Some((last, ..))) => {
                let back = journal
                    .succeeded
                    .iter()
                    .find(|at| **at > *last)
                    .copied()
                    .unwrap_or(*last);
                format!(
                    "first failure {} ms after the fault, last {} ms, first success after it {} ms",
                    since_fault(*first),
                    since_fault(*last),
                    since_fault(back)
                )
            }
            _ => "no operation failed".to_owned(),
        };
        let ok_before = journal
            .succeeded
            .iter()
            .filter(|at| **at < fault_at)
            .count();
        let writes_at_risk = journal.writes_between(fault_at - AT_RISK, fault_at);
        println!(
            "patroni figures: mode={mode} path={} fault={} | load {} ms, {ok_before} operations \
             ok in the {} ms before the fault, {writes_at_risk} writes acknowledged in its last \
             {} ms | fault injected in {} ms, handled by Patroni {} ms after it | failed \
             operations {} {by_kind:?}; {outage} | acknowledged stores {}, lost {lost}; \
             acknowledged consumes {}, resurrected {resurrected}, consumed twice \
             {consumed_twice}; unclear after a failed consume {unclear}",
            load.path.label(),
            fault.label(),
            ms(load_time),
            ms(fault_at - load_started),
            ms(AT_RISK),
            ms(injected - fault_at),
            ms(handled - fault_at),
            journal.failed.len(),
            journal.stored.len(),
            journal.consumed.len(),
        );
        let mut causes: Vec<(&String, &usize)> = journal.causes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1));
        for (cause, count) in causes.iter().take(5) {
            println!(
                "patroni errors: mode={mode} path={} fault={} | {count} x {cause}",
                load.path.label(),
                fault.label()
            );
        }
        assert!(
            journal.unexpected.is_empty(),
            "{mode} {} {}: failures other than Unavailable/Timeout, or wrong answers: {:?}",
            load.path.label(),
            fault.label(),
            &journal.unexpected[..journal.unexpected.len().min(10)]
        );
        figures.push((
            load.path,
            Figures {
                lost,
                resurrected,
                consumed_twice,
                failed: journal.failed.len(),
                writes_at_risk,
                no_failover: refused,
            },
        ));
    }
    figures
}

/// Starts a cluster in `synchronous_mode` (or not) and runs the three faults on both paths.
async fn run_all(test: &str, synchronous_mode: bool) -> Option<Vec<(Fault, Path, Figures)>> {
    let tools = common::require_optional(common::patroni::missing(), test)?;
    let _serial = SERIAL.lock().await;
    let mode = if synchronous_mode { "sync" } else { "async" };
    let setup_started = Instant::now();
    let mut cluster = Patroni::start(tools, Settings { synchronous_mode }).await;
    let setup = setup_started.elapsed();
    let haproxy = connect(&cluster, Path::HaProxy).await;
    haproxy.migrate().await.expect("migrations apply");
    let multi_host = connect(&cluster, Path::MultiHost).await;
    let stores = [(Path::HaProxy, haproxy), (Path::MultiHost, multi_host)];
    let mut all = Vec::new();

    // 1. A planned switchover, to the synchronous standby in synchronous mode.
    let leader = cluster.wait_healthy(synchronous_mode, HANG).await;
    let candidate = if synchronous_mode {
        cluster.sync_standby().await.expect("a synchronous standby")
    } else {
        cluster.replicas().await[0]
    };
    for (path, figures) in run_case(
        &mut cluster,
        mode,
        Fault::Switchover,
        leader,
        candidate,
        &stores,
    )
    .await
    {
        all.push((Fault::Switchover, path, figures));
    }
    assert_eq!(
        cluster.leader().await,
        Some(candidate),
        "the switchover's candidate leads"
    );

    // 2. The leader crashes: Patroni and PostgreSQL killed.
    let leader = cluster.wait_healthy(synchronous_mode, HANG).await;
    for (path, figures) in run_case(&mut cluster, mode, Fault::Kill, leader, leader, &stores).await
    {
        all.push((Fault::Kill, path, figures));
    }

    // 3. The crashed node comes back, as a replica (unless Patroni promoted none and the
    // crashed node was started again as the leader in step 2).
    let killed = leader;
    if all.iter().any(|(_, _, figures)| figures.no_failover) {
        println!("patroni figures: mode={mode} fault=rejoin: not run, no replica was promoted");
    } else {
        for (path, figures) in
            run_case(&mut cluster, mode, Fault::Rejoin, killed, killed, &stores).await
        {
            all.push((Fault::Rejoin, path, figures));
        }
    }

    // 4. Asynchronous mode: the leader crashes while every replica lags (their WAL receivers
    // stopped), and Patroni promotes none; the old leader is started again.
    if !synchronous_mode {
        let leader = cluster.wait_healthy(synchronous_mode, HANG).await;
        for (path, figures) in run_case(
            &mut cluster,
            mode,
            Fault::KillLagging,
            leader,
            leader,
            &stores,
        )
        .await
        {
            all.push((Fault::KillLagging, path, figures));
        }
    }
    cluster.wait_healthy(synchronous_mode, HANG).await;
    println!(
        "patroni figures: mode={mode} cluster setup {} ms, whole run {} ms",
        setup.as_millis(),
        setup_started.elapsed().as_millis()
    );
    for (_, store) in stores {
        store.close().await;
    }
    drop(cluster);
    Some(all)
}

/// Nothing acknowledged lost, no consumed request brought back or handed out twice.
fn assert_single_use(case: &str, figures: &Figures) {
    assert_eq!(figures.lost, 0, "{case}: acknowledged stores lost");
    assert_eq!(
        figures.resurrected, 0,
        "{case}: consumed requests brought back"
    );
    assert_eq!(
        figures.consumed_twice, 0,
        "{case}: requests handed out twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_loses_nothing_and_resurrects_nothing() {
    let Some(all) = run_all(
        "patroni::synchronous_mode_loses_nothing_and_resurrects_nothing",
        true,
    )
    .await
    else {
        return;
    };
    for (fault, path, figures) in &all {
        let case = format!("sync {} {}", path.label(), fault.label());
        assert_single_use(&case, figures);
        assert!(
            figures.writes_at_risk > 0,
            "{case}: nothing was acknowledged right before the fault: the run proves nothing"
        );
    }
    // The crash was noticed: the faults really happened under the load.
    assert!(
        all.iter()
            .any(|(fault, _, figures)| *fault == Fault::Kill && figures.failed > 0),
        "the leader's crash must have failed some operations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_mode_figures() {
    let Some(all) = run_all("patroni::asynchronous_mode_figures", false).await else {
        return;
    };
    // Reported, not asserted: asynchronous replication may lose what it acknowledged. The
    // failures were typed (asserted per case) and the store served again after each fault.
    for (fault, path, figures) in &all {
        assert!(
            figures.writes_at_risk > 0,
            "async {} {}: nothing was acknowledged right before the fault",
            path.label(),
            fault.label()
        );
    }
    assert!(
        all.iter()
            .any(|(fault, _, figures)| *fault == Fault::Kill && figures.failed > 0),
        "the leader's crash must have failed some operations"
    );
    // With every replica lagging, Patroni promotes none: the old leader comes back with
    // everything it acknowledged, and nothing is lost or brought back.
    for (fault, path, figures) in all.iter().filter(|(f, ..)| *f == Fault::KillLagging) {
        let case = format!("async {} {}", path.label(), fault.label());
        assert!(
            figures.no_failover,
            "{case}: Patroni promoted a lagging replica"
        );
        assert!(figures.failed > 0, "{case}: the crash failed no operation");
        assert_single_use(&case, figures);
    }
    assert!(
        all.iter().any(|(fault, ..)| *fault == Fault::KillLagging),
        "the lagging case ran"
    );
}
