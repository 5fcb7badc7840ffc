//! The N-1 test: the previous release (0.3.0, `.ci/previous-release`, built from this
//! repository's history by `tests/common/n_minus_1.rs`) and main serving one database under
//! concurrent traffic, through a whole deploy and back:
//!
//! 1. **roll forward**: old instances serve on a schema their own `migrate()` made; main's
//!    instances start during that traffic, each running `migrate()` at start-up as the README
//!    recommends, then serve beside the old ones;
//! 2. **mixed fleet**: old and new instances serve together; one old instance restarts
//!    meanwhile, and its own `migrate()` at start-up, on a schema main has migrated, must
//!    succeed (0.3.0's `migrate()` accepts a later release's additive migrations);
//! 3. **rollback**: main's instances stop; during old traffic main's migrations are reverted
//!    down to the previous release's newest one with sqlx's `Migrator::undo` (what
//!    `sqlx migrate revert --target-version` does), then every old instance is restarted
//!    (its own `migrate()` at start-up) and the old release serves alone;
//! 4. **roll forward again**, as in 1.
//!
//! Every request is stored by one side, read by an old and a new instance at once, consumed
//! by each as the wrong client (one after the other: each must answer `wrong_client` and
//! consume nothing), consumed by an old and a new instance at once (under a reload window
//! the winning session then reloads it on the other side and must get it back), then
//! consumed again by each as another caller, one after the other (in a phase without main's
//! instances, two old instances play both parts). Both releases consume as a 0.3 server
//! does: `consume_for_client`, or `consume_in_session` under a reload window. Counted per
//! phase: requests handed out twice (to two callers), acknowledged stores lost (handed out
//! to nobody), reads that missed an acknowledged request or returned other data,
//! wrong-client consumes not refused, reloads refused, and errors on either version. Each
//! mode runs the whole deploy on a database of its own, old and new instances with the same
//! options: markers on (the default), markers off (`consumed_markers(false)`), and reload
//! tolerance (`ConsumePolicy::ReloadWithin(30 s)` with `consume_in_session`).
//!
//! [`MODES`] and [`PHASES`] are the tables to adjust: in which phases of a mode the docs
//! allow the mix (there every error fails the test), which steps may fail in a mode, and
//! what happens in each phase. A request handed out twice, a lost one, a missed or wrong
//! read, a wrong-client consume not refused and a refused reload fail the test in every phase
//! of every mode. Each test prints its table of counts, with what each release answered to a
//! reuse, and fails with it.

mod common;

use common::n_minus_1::{database_url_for, previous_release, OldInstance, PreviousRelease};
use common::{error_kind, hash, join_within, TestDb};
use par_store::chrono::{Duration as ChronoDuration, Utc};
use par_store::sqlx::{Connection, PgConnection};
use par_store::{
    ConsumePolicy, Consumption, PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const OLD_INSTANCES: usize = 3;
const NEW_INSTANCES: usize = 3;
/// Each instance's pool, old and new (three modes run at once on the shared server).
const CONNECTIONS_PER_INSTANCE: u32 = 2;
/// Request lifecycles per phase, at least; a phase with steps during its traffic goes on
/// until [`AFTER_STEPS`] more have started after its last step.
const REQUESTS_PER_PHASE: u32 = 300;
/// The steps of a phase start once this many of its lifecycles have started.
const STEPS_AFTER: u32 = REQUESTS_PER_PHASE / 3;
const AFTER_STEPS: u32 = REQUESTS_PER_PHASE / 3;
/// Lifecycles in flight at once.
const CONCURRENCY: usize = 8;
/// A request's lifetime: far beyond the test, within both releases' default bound (1 h).
const LIFETIME_SECONDS: i64 = 600;
/// Lifecycle numbers of phase `p` start at `p * PHASE_STRIDE` (unique hashes per database).
const PHASE_STRIDE: u32 = 1_000_000;

/// One option mode of main, run through every phase on a database of its own.
#[derive(Debug)]
struct Mode {
    name: &'static str,
    /// `PostgresStore::consumed_markers`.
    markers: bool,
    /// `Some`: `ConsumePolicy::ReloadWithin` and main consumes with `consume_in_session`;
    /// `None`: `consume_for_client`. The same for the old instances (their driver's flags).
    reload_within: Option<Duration>,
    /// The phases in which the docs allow this mix of releases: there, an error on either
    /// version fails the test. Elsewhere errors are counted and shown but allowed.
    errors_fail_in: &'static [Phase],
    /// The steps (migrations, restarts) the docs allow to fail in this mode; any other
    /// failed step fails the test.
    steps_may_fail: &'static [Step],
}

impl Mode {
    /// The driver's flags for the same options on the previous release.
    fn driver_options(&self) -> Vec<String> {
        let mut options = vec![
            "--markers".to_owned(),
            if self.markers { "on" } else { "off" }.to_owned(),
        ];
        if let Some(window) = self.reload_within {
            options.push("--reload-within-ms".to_owned());
            options.push(window.as_millis().to_string());
        }
        options
    }
}

const ALL_PHASES: &[Phase] = &[
    Phase::RollForward,
    Phase::Mixed,
    Phase::Rollback,
    Phase::RollForwardAgain,
];

/// The modes, and where each is allowed beside the previous release (all three, through the
/// whole deploy).
const MODES: &[Mode] = &[
    Mode {
        name: "markers on (default)",
        markers: true,
        reload_within: None,
        errors_fail_in: ALL_PHASES,
        steps_may_fail: &[],
    },
    Mode {
        name: "markers off",
        markers: false,
        reload_within: None,
        errors_fail_in: ALL_PHASES,
        steps_may_fail: &[],
    },
    Mode {
        name: "reload within 30 s",
        markers: true,
        reload_within: Some(Duration::from_secs(30)),
        errors_fail_in: ALL_PHASES,
        steps_may_fail: &[],
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    RollForward,
    Mixed,
    Rollback,
    RollForwardAgain,
}

/// A change to the fleet or the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The old instances start on an empty database, each running its own `migrate()`.
    StartOld,
    /// Main's instances start one after another, each running `migrate()` at start-up; an
    /// instance whose `migrate()` fails does not serve (it would not start).
    StartNew,
    /// One old instance is replaced by a new process of the old release, which runs its own
    /// `migrate()` at start-up, while main's instances serve (a crash, a scaling event, a
    /// host's reboot during the deploy). That `migrate()` must succeed: 0.3.0's accepts a
    /// history with a later release's migrations (docs/upgrading.md).
    RestartOneOld,
    /// Main's instances stop (they finish what they are doing).
    StopNew,
    /// Main's migrations are reverted down to the previous release's newest one:
    /// `PostgresStore::migrator().undo(conn, target)`, what `sqlx migrate revert
    /// --target-version <target>` does.
    RevertToOld,
    /// Each old instance in turn is replaced by a new process of the old release, which runs
    /// its own `migrate()` at start-up (the replacement serves whatever that says: a real
    /// one that crash-loops is shown by the failure).
    RestartOld,
}

struct PhaseSpec {
    phase: Phase,
    title: &'static str,
    /// Steps before the phase's traffic starts.
    before: &'static [Step],
    /// Steps during its traffic, in order, once [`STEPS_AFTER`] lifecycles have started.
    during: &'static [Step],
}

const PHASES: &[PhaseSpec] = &[
    PhaseSpec {
        phase: Phase::RollForward,
        title: "1 roll forward",
        before: &[Step::StartOld],
        during: &[Step::StartNew],
    },
    PhaseSpec {
        phase: Phase::Mixed,
        title: "2 mixed fleet",
        before: &[],
        during: &[Step::RestartOneOld],
    },
    PhaseSpec {
        phase: Phase::Rollback,
        title: "3 rollback",
        before: &[Step::StopNew],
        during: &[Step::RevertToOld, Step::RestartOld],
    },
    PhaseSpec {
        phase: Phase::RollForwardAgain,
        title: "4 roll forward again",
        before: &[],
        during: &[Step::StartNew],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_release_and_main_through_a_deploy_markers_on() {
    run_mode(&MODES[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_release_and_main_through_a_deploy_markers_off() {
    run_mode(&MODES[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_release_and_main_through_a_deploy_reload_within_30_s() {
    run_mode(&MODES[2]).await;
}

/// The instances serving at a moment.
#[derive(Default)]
struct Fleet {
    old: Vec<Arc<OldInstance>>,
    new: Vec<PostgresStore>,
}

struct Deploy {
    mode: &'static Mode,
    release: &'static PreviousRelease,
    db: TestDb,
    url: String,
    fleet: RwLock<Fleet>,
    /// Old instances started so far (for their names).
    old_started: AtomicU32,
}

/// What one phase saw.
#[derive(Default)]
struct Counts {
    lifecycles: u32,
    stored: u32,
    handed_out_twice: u32,
    lost: u32,
    reads_missed: u32,
    wrong_data: u32,
    /// Consumes as the wrong client that handed the request out or answered anything but
    /// `wrong_client`.
    wrong_client_not_refused: u32,
    /// Under a reload window: reloads by the winning session on the other side that got the
    /// request back, and those that did not.
    reloads_served: u32,
    reloads_refused: u32,
    errors_old: u32,
    errors_main: u32,
    /// (side, operation, kind) -> (count, first message).
    errors: BTreeMap<(&'static str, &'static str, String), (u32, String)>,
    /// What main answered to a reuse (a consumption after the race, as another caller).
    main_reuse: BTreeMap<&'static str, u32>,
    /// What the old release answered to a reuse.
    old_reuse: BTreeMap<String, u32>,
}

/// A step's outcome, in the order they ran.
struct StepOutcome {
    what: String,
    failure: Option<String>,
}

struct PhaseReport {
    spec: &'static PhaseSpec,
    counts: Counts,
    steps: Vec<(Step, StepOutcome)>,
}

async fn run_mode(mode: &'static Mode) {
    let release = previous_release();
    let db = TestDb::empty().await;
    let url = database_url_for(&db.name);
    let deploy = Arc::new(Deploy {
        mode,
        release,
        db,
        url,
        fleet: RwLock::default(),
        old_started: AtomicU32::new(0),
    });
    let mut reports = Vec::new();
    for (index, spec) in PHASES.iter().enumerate() {
        reports.push(run_phase(&deploy, index as u32, spec).await);
    }
    let fleet = std::mem::take(&mut *deploy.fleet.write().unwrap());
    for old in fleet.old {
        stop_old(old).await;
    }
    drop(fleet.new);

    let (table, failures) = report(mode, release, &reports);
    print_real_stderr(&table);
    assert!(
        failures.is_empty(),
        "N-1, {}: {} failure(s):\n- {}\n{table}",
        mode.name,
        failures.len(),
        failures.join("\n- ")
    );
}

async fn run_phase(deploy: &Arc<Deploy>, index: u32, spec: &'static PhaseSpec) -> PhaseReport {
    let mut steps = Vec::new();
    for step in spec.before {
        let outcomes = run_step(deploy, *step).await;
        steps.extend(outcomes.into_iter().map(|outcome| (*step, outcome)));
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let next = Arc::new(AtomicU32::new(0));
    let stop_at = Arc::new(AtomicU32::new(if spec.during.is_empty() {
        REQUESTS_PER_PHASE
    } else {
        u32::MAX
    }));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (deploy, counts, next, stop_at) = (
                Arc::clone(deploy),
                Arc::clone(&counts),
                Arc::clone(&next),
                Arc::clone(&stop_at),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= stop_at.load(Ordering::SeqCst) {
                        break;
                    }
                    lifecycle(&deploy, index * PHASE_STRIDE + i, &counts).await;
                }
            })
        })
        .collect();
    if !spec.during.is_empty() {
        while next.load(Ordering::SeqCst) < STEPS_AFTER {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for step in spec.during {
            let outcomes = run_step(deploy, *step).await;
            steps.extend(outcomes.into_iter().map(|outcome| (*step, outcome)));
        }
        let now = next.load(Ordering::SeqCst);
        stop_at.store(REQUESTS_PER_PHASE.max(now + AFTER_STEPS), Ordering::SeqCst);
    }
    join_within(workers, Duration::from_secs(300), "a lifecycle worker").await;
    let counts = std::mem::take(&mut *counts.lock().unwrap());
    PhaseReport {
        spec,
        counts,
        steps,
    }
}

async fn run_step(deploy: &Deploy, step: Step) -> Vec<StepOutcome> {
    match step {
        Step::StartOld => {
            let started = futures::future::join_all(
                (0..OLD_INSTANCES).map(|_| start_old(deploy, "migrate() on an empty database")),
            )
            .await;
            let mut outcomes = Vec::new();
            for (instance, outcome) in started {
                outcomes.push(outcome);
                if let Some(instance) = instance {
                    deploy.fleet.write().unwrap().old.push(Arc::new(instance));
                }
            }
            outcomes
        }
        Step::StartNew => {
            let mut outcomes = Vec::new();
            for i in 0..NEW_INSTANCES {
                let options = PostgresStoreOptions::new()
                    .max_connections(CONNECTIONS_PER_INSTANCE)
                    .consumed_markers(deploy.mode.markers)
                    .consume_policy(match deploy.mode.reload_within {
                        Some(window) => ConsumePolicy::ReloadWithin(window),
                        None => ConsumePolicy::Once,
                    });
                let name = format!("main-{i}");
                let store = match options
                    .connect_with(deploy.db.options.clone().application_name(&name))
                    .await
                {
                    Ok(store) => store,
                    Err(err) => {
                        outcomes.push(StepOutcome {
                            what: format!("{name} connects"),
                            failure: Some(err.to_string()),
                        });
                        continue;
                    }
                };
                let started = Instant::now();
                let migrated = store.migrate().await;
                let what = format!(
                    "{name}: main's migrate() at start-up ({:.2} s)",
                    started.elapsed().as_secs_f64()
                );
                match migrated {
                    Ok(()) => {
                        outcomes.push(StepOutcome {
                            what,
                            failure: None,
                        });
                        deploy.fleet.write().unwrap().new.push(store);
                    }
                    Err(err) => outcomes.push(StepOutcome {
                        what,
                        failure: Some(err.to_string()),
                    }),
                }
            }
            outcomes
        }
        Step::StopNew => {
            let stopped = std::mem::take(&mut deploy.fleet.write().unwrap().new);
            let count = stopped.len();
            drop(stopped);
            vec![StepOutcome {
                what: format!("main's {count} instances stopped"),
                failure: None,
            }]
        }
        Step::RevertToOld => vec![revert_to_old(deploy).await],
        Step::RestartOneOld => {
            vec![restart_old(deploy, 0, "migrate() at restart in the mixed fleet").await]
        }
        Step::RestartOld => {
            let mut outcomes = Vec::new();
            let count = deploy.fleet.read().unwrap().old.len();
            for slot in 0..count {
                outcomes.push(
                    restart_old(deploy, slot, "migrate() at restart after the rollback").await,
                );
            }
            outcomes
        }
    }
}

/// Starts an old instance and runs its `migrate()`; the instance is returned when its
/// process runs, whatever `migrate()` said (the outcome says that).
async fn start_old(deploy: &Deploy, what: &str) -> (Option<OldInstance>, StepOutcome) {
    let n = deploy.old_started.fetch_add(1, Ordering::SeqCst);
    let name = format!("old-{n}");
    let instance = match OldInstance::start(
        deploy.release,
        &name,
        &deploy.url,
        CONNECTIONS_PER_INSTANCE,
        &deploy.mode.driver_options(),
    )
    .await
    {
        Ok(instance) => instance,
        Err(err) => {
            return (
                None,
                StepOutcome {
                    what: format!("{name} starts"),
                    failure: Some(err),
                },
            )
        }
    };
    let started = Instant::now();
    let answer = instance.request(&["migrate"]).await;
    let what = format!(
        "{name}: the previous release's {what} ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let failure = match answer.as_slice() {
        [ok] if ok == "ok" => None,
        [error, kind, message] if error == "error" => Some(format!("{kind} error: {message}")),
        _ => Some(answer.join(" ")),
    };
    (Some(instance), StepOutcome { what, failure })
}

/// Replaces the old instance in `slot` by a new process, which runs `migrate()` first; the
/// replacement serves whatever that says (a real one would crash-loop on a failure: the
/// outcome shows it).
async fn restart_old(deploy: &Deploy, slot: usize, what: &str) -> StepOutcome {
    let (instance, outcome) = start_old(deploy, what).await;
    if let Some(instance) = instance {
        let replaced = std::mem::replace(
            &mut deploy.fleet.write().unwrap().old[slot],
            Arc::new(instance),
        );
        stop_old(replaced).await;
    }
    outcome
}

/// Takes an old instance out of service: waits until no lifecycle holds it, then stops it.
async fn stop_old(mut instance: Arc<OldInstance>) {
    loop {
        match Arc::try_unwrap(instance) {
            Ok(instance) => return instance.stop().await,
            Err(shared) => {
                instance = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn revert_to_old(deploy: &Deploy) -> StepOutcome {
    let old = deploy.fleet.read().unwrap().old.first().cloned();
    let Some(old) = old else {
        return StepOutcome {
            what: "revert: no old instance to ask for its newest migration".into(),
            failure: Some("no old instance".into()),
        };
    };
    let answer = old.request(&["last_migration"]).await;
    drop(old);
    let target = match answer.as_slice() {
        [ok, version] if ok == "ok" => version.parse::<i64>().ok(),
        _ => None,
    };
    let Some(target) = target else {
        return StepOutcome {
            what: "revert: the previous release's newest migration".into(),
            failure: Some(answer.join(" ")),
        };
    };
    let started = Instant::now();
    // The newest applied version before and after: the revert must end at `target`.
    let newest = "SELECT max(version) FROM _par_store_migrations WHERE success";
    let reverted = async {
        let mut conn = PgConnection::connect_with(&deploy.db.options)
            .await
            .map_err(|err| err.to_string())?;
        let before: Option<i64> = par_store::sqlx::query_scalar(newest)
            .fetch_one(&mut conn)
            .await
            .map_err(|err| err.to_string())?;
        let undone = PostgresStore::migrator()
            .undo(&mut conn, target)
            .await
            .map_err(|err| err.to_string());
        let after: Result<Option<i64>, String> = par_store::sqlx::query_scalar(newest)
            .fetch_one(&mut conn)
            .await
            .map_err(|err| err.to_string());
        let _ = conn.close().await;
        undone?;
        match after? {
            Some(after) if after == target => Ok(before.unwrap_or(0)),
            other => Err(format!(
                "the newest applied migration is {other:?} after the revert"
            )),
        }
    }
    .await;
    let from = match &reverted {
        Ok(before) => format!("from {before} "),
        Err(_) => String::new(),
    };
    StepOutcome {
        what: format!(
            "main's migrations reverted {from}to {target} (Migrator::undo, {:.2} s)",
            started.elapsed().as_secs_f64()
        ),
        failure: reverted.err(),
    }
}

/// One side of a race.
#[derive(Clone)]
enum Racer {
    Old(Arc<OldInstance>),
    New(PostgresStore),
}

/// What a consumption or a read answered.
enum Answered {
    /// The request (its client, its parameters).
    Request(Option<String>, String),
    /// Nothing handed out: the outcome's name.
    Nothing(String),
    /// An error: its kind and message.
    Error(String, String),
}

impl Racer {
    fn side(&self) -> &'static str {
        match self {
            Racer::Old(_) => "old",
            Racer::New(_) => "main",
        }
    }

    async fn store(&self, request: &PushedAuthorizationRequest) -> Answered {
        match self {
            Racer::Old(old) => {
                let expires = request.expires_at.timestamp_millis().to_string();
                let client = request.client_id.as_deref().unwrap_or("-");
                let answer = old
                    .request(&[
                        "store",
                        &request.reference_value_hash,
                        &expires,
                        client,
                        &request.parameters,
                    ])
                    .await;
                old_answer(answer)
            }
            Racer::New(store) => match store.store(request).await {
                Ok(()) => Answered::Nothing("ok".into()),
                Err(err) => main_error(&err),
            },
        }
    }

    async fn get(&self, hash: &str) -> Answered {
        match self {
            Racer::Old(old) => old_answer(old.request(&["get", hash]).await),
            Racer::New(store) => match store.get_by_hash(hash).await {
                Ok(Some(found)) => Answered::Request(found.client_id, found.parameters),
                Ok(None) => Answered::Nothing("not_found".into()),
                Err(err) => main_error(&err),
            },
        }
    }

    /// Consumes as the caller `session` (its session binding under a reload window), as a
    /// 0.3 server does on either release.
    async fn consume(&self, mode: &Mode, hash: &str, client: &str, session: &str) -> Answered {
        match self {
            Racer::Old(old) => old_answer(match mode.reload_within {
                Some(_) => {
                    old.request(&["consume_in_session", hash, client, session])
                        .await
                }
                None => old.request(&["consume", hash, client]).await,
            }),
            Racer::New(store) => {
                let consumed = match mode.reload_within {
                    Some(_) => store.consume_in_session(hash, client, session).await,
                    None => store.consume_for_client(hash, client).await,
                };
                match consumed {
                    Ok(Consumption::Consumed(request)) => {
                        Answered::Request(request.client_id, request.parameters)
                    }
                    Ok(other) => Answered::Nothing(other.as_str().into()),
                    Err(err) => main_error(&err),
                }
            }
        }
    }
}

fn old_answer(answer: Vec<String>) -> Answered {
    let client = |field: &str| (field != "-").then(|| field.to_owned());
    match answer.as_slice() {
        [kind, bound, params] if kind == "found" || kind == "consumed" => {
            Answered::Request(client(bound), params.clone())
        }
        [error, kind, message] if error == "error" => {
            Answered::Error(kind.clone(), message.clone())
        }
        [outcome] => Answered::Nothing(outcome.clone()),
        _ => Answered::Error("protocol".into(), format!("{answer:?}")),
    }
}

fn main_error(err: &StoreError) -> Answered {
    Answered::Error(error_kind(err).into(), err.to_string())
}

impl Counts {
    fn error(&mut self, side: &'static str, operation: &'static str, kind: &str, message: &str) {
        match side {
            "old" => self.errors_old += 1,
            _ => self.errors_main += 1,
        }
        self.errors
            .entry((side, operation, kind.to_owned()))
            .or_insert_with(|| (0, message.to_owned()))
            .0 += 1;
    }
}

/// One request's life: stored by one side, read by both at once, consumed by both at once,
/// then consumed again by each as another caller.
async fn lifecycle(deploy: &Deploy, n: u32, counts: &Mutex<Counts>) {
    let (a, b) = {
        let fleet = deploy.fleet.read().unwrap();
        if fleet.old.is_empty() {
            drop(fleet);
            counts.lock().unwrap().lifecycles += 1;
            counts
                .lock()
                .unwrap()
                .error("old", "start", "no_instance", "no old instance");
            return;
        }
        let a = Racer::Old(Arc::clone(&fleet.old[n as usize % fleet.old.len()]));
        let b = if fleet.new.is_empty() {
            Racer::Old(Arc::clone(&fleet.old[(n as usize + 1) % fleet.old.len()]))
        } else {
            Racer::New(fleet.new[(n as usize / 2) % fleet.new.len()].clone())
        };
        (a, b)
    };
    counts.lock().unwrap().lifecycles += 1;
    let mode = deploy.mode;
    let client = format!("client-{}", n % 5);
    let params = format!("response_type=code&client_id={client}&state=s{n}&scope=openid");
    let request = PushedAuthorizationRequest::new(
        hash(n),
        Utc::now() + ChronoDuration::seconds(LIFETIME_SECONDS),
        params.clone(),
    )
    .with_client_id(client.clone());
    let key = request.reference_value_hash.clone();
    let expected = (Some(client.clone()), params);

    let storer = if n.is_multiple_of(2) { &a } else { &b };
    match storer.store(&request).await {
        Answered::Nothing(ok) if ok == "ok" => {}
        Answered::Error(kind, message) => {
            counts
                .lock()
                .unwrap()
                .error(storer.side(), "store", &kind, &message);
            return;
        }
        Answered::Nothing(other) => {
            counts
                .lock()
                .unwrap()
                .error(storer.side(), "store", &other, "not stored");
            return;
        }
        Answered::Request(..) => {
            counts
                .lock()
                .unwrap()
                .error(storer.side(), "store", "protocol", "a request");
            return;
        }
    }
    counts.lock().unwrap().stored += 1;

    let (read_a, read_b) = tokio::join!(a.get(&key), b.get(&key));
    for (racer, read) in [(&a, read_a), (&b, read_b)] {
        let mut counts = counts.lock().unwrap();
        match read {
            Answered::Request(bound, params) => {
                if (bound, params) != expected {
                    counts.wrong_data += 1;
                }
            }
            Answered::Nothing(_) => counts.reads_missed += 1,
            Answered::Error(kind, message) => counts.error(racer.side(), "get", &kind, &message),
        }
    }

    // Each as the wrong client, one after the other: refused, nothing consumed (0.3 and
    // main), so the race below still has the request to hand out.
    let intruder = format!("client-{}", (n + 1) % 5);
    for (racer, session) in [(&a, "session-wa"), (&b, "session-wb")] {
        let answered = racer.consume(mode, &key, &intruder, session).await;
        let mut counts = counts.lock().unwrap();
        match answered {
            Answered::Nothing(outcome) if outcome == "wrong_client" => {}
            Answered::Error(kind, message) => {
                counts.error(racer.side(), "wrong client", &kind, &message)
            }
            Answered::Nothing(_) | Answered::Request(..) => counts.wrong_client_not_refused += 1,
        }
    }

    let (session_a, session_b) = (format!("session-a-{n}"), format!("session-b-{n}"));
    let (race_a, race_b) = tokio::join!(
        a.consume(mode, &key, &client, &session_a),
        b.consume(mode, &key, &client, &session_b),
    );
    // Under a reload window, the session that won reloads on the other side (the other
    // release, where both serve): it must get the request back. A reload is not a second
    // caller, so it is not counted as handed out.
    if mode.reload_within.is_some() {
        let winner = match (&race_a, &race_b) {
            (Answered::Request(..), Answered::Request(..)) => None,
            (Answered::Request(..), _) => Some((&b, &session_a)),
            (_, Answered::Request(..)) => Some((&a, &session_b)),
            _ => None,
        };
        if let Some((other, session)) = winner {
            let reloaded = other.consume(mode, &key, &client, session).await;
            let mut counts = counts.lock().unwrap();
            match reloaded {
                Answered::Request(bound, params) => {
                    if (bound, params) == expected {
                        counts.reloads_served += 1
                    } else {
                        counts.wrong_data += 1
                    }
                }
                Answered::Nothing(_) => counts.reloads_refused += 1,
                Answered::Error(kind, message) => {
                    counts.error(other.side(), "reload", &kind, &message)
                }
            }
        }
    }
    // Each again, one after the other, as another caller (another session: a reload is not
    // a second caller); which goes first alternates, so that each release's answer to a
    // reuse is seen both before and after the other's.
    let (session_a, session_b) = (format!("session-a2-{n}"), format!("session-b2-{n}"));
    let (reuse_a, reuse_b) = if n % 4 < 2 {
        let reuse_a = a.consume(mode, &key, &client, &session_a).await;
        (reuse_a, b.consume(mode, &key, &client, &session_b).await)
    } else {
        let reuse_b = b.consume(mode, &key, &client, &session_b).await;
        (a.consume(mode, &key, &client, &session_a).await, reuse_b)
    };

    let mut counts = counts.lock().unwrap();
    let mut handed_out = 0;
    for (racer, answered, reuse) in [
        (&a, race_a, false),
        (&b, race_b, false),
        (&a, reuse_a, true),
        (&b, reuse_b, true),
    ] {
        let operation = if reuse { "reuse" } else { "consume" };
        match answered {
            Answered::Request(bound, params) => {
                handed_out += 1;
                if (bound, params) != expected {
                    counts.wrong_data += 1;
                }
                if reuse {
                    match racer {
                        Racer::New(_) => *counts.main_reuse.entry("consumed").or_default() += 1,
                        Racer::Old(_) => {
                            *counts.old_reuse.entry("consumed".into()).or_default() += 1
                        }
                    }
                }
            }
            Answered::Nothing(outcome) => {
                if reuse {
                    match racer {
                        Racer::New(_) => {
                            let outcome = match outcome.as_str() {
                                "already_consumed" => "already_consumed",
                                "not_found" => "not_found",
                                "expired" => "expired",
                                "wrong_client" => "wrong_client",
                                _ => "other",
                            };
                            *counts.main_reuse.entry(outcome).or_default() += 1
                        }
                        Racer::Old(_) => *counts.old_reuse.entry(outcome).or_default() += 1,
                    }
                }
            }
            Answered::Error(kind, message) => {
                counts.error(racer.side(), operation, &kind, &message)
            }
        }
    }
    match handed_out {
        0 => counts.lost += 1,
        1 => {}
        _ => counts.handed_out_twice += 1,
    }
}

/// The table of one mode's counts, and its failures.
fn report(
    mode: &Mode,
    release: &PreviousRelease,
    reports: &[PhaseReport],
) -> (String, Vec<String>) {
    let mut table = String::new();
    let mut failures = Vec::new();
    let _ = writeln!(
        table,
        "N-1 test, main in mode \"{}\" beside the previous release {} (built in {:.1} s in \
         this process):",
        mode.name,
        &release.commit[..7],
        release.build_time.as_secs_f64()
    );
    let _ = writeln!(
        table,
        "| phase | lifecycles | stored | handed out twice | lost | reads missed | wrong data \
         | wrong client not refused | reloads served / refused | errors old | errors main \
         | main's answers to a reuse | old's answers to a reuse |"
    );
    let _ = writeln!(
        table,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for report in reports {
        let c = &report.counts;
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            report.spec.title,
            c.lifecycles,
            c.stored,
            c.handed_out_twice,
            c.lost,
            c.reads_missed,
            c.wrong_data,
            c.wrong_client_not_refused,
            match mode.reload_within {
                Some(_) => format!("{} / {}", c.reloads_served, c.reloads_refused),
                None => "-".to_owned(),
            },
            c.errors_old,
            c.errors_main,
            listing(c.main_reuse.iter().map(|(k, v)| (k.to_string(), *v))),
            listing(c.old_reuse.iter().map(|(k, v)| (k.clone(), *v))),
        );
    }
    for report in reports {
        let title = report.spec.title;
        let c = &report.counts;
        for (step, outcome) in &report.steps {
            match &outcome.failure {
                None => {
                    let _ = writeln!(table, "{title}: {}: ok", outcome.what);
                }
                Some(failure) if mode.steps_may_fail.contains(step) => {
                    let _ = writeln!(
                        table,
                        "{title}: {}: failed (allowed in this mode): {failure}",
                        outcome.what
                    );
                }
                Some(failure) => {
                    let _ = writeln!(table, "{title}: {}: FAILED: {failure}", outcome.what);
                    failures.push(format!("{title}: {} failed: {failure}", outcome.what));
                }
            }
        }
        for ((side, operation, kind), (count, message)) in &c.errors {
            let _ = writeln!(
                table,
                "{title}: {count} x {side} {operation} error {kind}: {message}"
            );
        }
        let mut must_be_zero = vec![
            ("requests handed out twice", c.handed_out_twice),
            ("acknowledged stores lost", c.lost),
            ("reads that missed an acknowledged request", c.reads_missed),
            ("answers with other data than stored", c.wrong_data),
            (
                "wrong-client consumes not refused",
                c.wrong_client_not_refused,
            ),
            (
                "reloads by the consuming session refused",
                c.reloads_refused,
            ),
        ];
        if mode.errors_fail_in.contains(&report.spec.phase) {
            must_be_zero.push(("errors on the previous release", c.errors_old));
            must_be_zero.push(("errors on main", c.errors_main));
        }
        for (what, count) in must_be_zero {
            if count > 0 {
                failures.push(format!("{title}: {count} {what} (of {} stored)", c.stored));
            }
        }
    }
    (table, failures)
}

fn listing(counts: impl Iterator<Item = (String, u32)>) -> String {
    let parts: Vec<String> = counts.map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The harness captures `eprintln!` of a passing test; the counts are wanted in CI's log
/// either way.
fn print_real_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}
