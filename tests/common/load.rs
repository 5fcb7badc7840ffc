//! The failover tests' load (`tests/failover.rs`, `tests/patroni.rs`): tasks that store, read
//! and consume requests as an authorization server's endpoints do, and a [`Journal`] of every
//! acknowledgement and failure, to count afterwards against what the new primary holds.

use chrono::Utc;
use par_store::prelude::*;
use par_store::{Consumption, PostgresStore, PushedAuthorizationRequest, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client every request of the load is bound to and consumed for.
pub const CLIENT: &str = "failover-client";

/// How long an acknowledged request waits before it is consumed (the user's login between
/// the authorize endpoint's read and the consume): a consume just before a fault is of a
/// request stored well before it.
pub const CONSUME_AFTER: Duration = Duration::from_millis(150);

/// The parameters stored under `hash`: each read and consume checks it got its own.
pub fn parameters(hash: &str) -> String {
    format!("client_id={CLIENT}&hash={hash}")
}

/// What the load tasks saw, with the time of every acknowledgement and failure.
#[derive(Default)]
pub struct Journal {
    /// Stores answered `Ok`, and when.
    pub stored: HashMap<String, Instant>,
    /// Stores that failed: the request may or may not exist.
    pub store_failed: HashSet<String>,
    /// Consumes that handed the request out, and when (two for one hash: handed out twice).
    pub consumed: HashMap<String, Vec<Instant>>,
    /// Consumes that failed, when each began and ended: the request may or may not have been
    /// consumed.
    pub consume_failed: HashMap<String, (Instant, Instant)>,
    /// Successful operations, and when.
    pub succeeded: Vec<Instant>,
    /// Failed operations: when, which, what kind.
    pub failed: Vec<(Instant, &'static str, &'static str)>,
    /// Errors other than `Unavailable` and `Timeout`, and wrong answers.
    pub unexpected: Vec<String>,
    /// What the failures said, digits masked (ports and PIDs differ from run to run).
    pub causes: BTreeMap<String, usize>,
}

impl Journal {
    fn failure(&mut self, op: &'static str, err: &StoreError) {
        self.failed
            .push((Instant::now(), op, super::error_kind(err)));
        let mut cause = String::new();
        let mut digits = false;
        for c in err.to_string().chars().take(240) {
            if c.is_ascii_digit() {
                if !digits {
                    cause.push('N');
                }
                digits = true;
            } else {
                digits = false;
                cause.push(c);
            }
        }
        *self.causes.entry(cause).or_default() += 1;
        if !err.is_transient() {
            self.unexpected.push(format!("{op}: {err:?}"));
        }
    }

    /// Acknowledged writes (stores, and consumes that handed a request out) in `from..=to`.
    pub fn writes_between(&self, from: Instant, to: Instant) -> usize {
        let within = |at: &Instant| *at >= from && *at <= to;
        self.stored.values().filter(|at| within(at)).count()
            + self
                .consumed
                .values()
                .flatten()
                .filter(|at| within(at))
                .count()
    }
}

/// How a load runs.
#[derive(Clone)]
pub struct LoadPlan {
    /// Concurrent tasks.
    pub tasks: usize,
    /// Put before every hash, to tell one load's requests from another's.
    pub prefix: String,
    /// The lifetime of every request stored.
    pub lifetime: Duration,
    /// How long a task waits after a round with a failure: a well-behaved server does not
    /// hammer a database that is away.
    pub backoff: Duration,
}

/// A running load: its journal and tasks. Stop it by clearing the `running` flag given to
/// [`spawn`], then join the tasks.
pub struct Load {
    pub journal: Arc<Mutex<Journal>>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `plan.tasks` tasks on `store` that run until `running` is cleared.
pub fn spawn(store: &PostgresStore, plan: &LoadPlan, running: &Arc<AtomicBool>) -> Load {
    let journal = Arc::new(Mutex::new(Journal::default()));
    let pending: Pending = Arc::new(Mutex::new(VecDeque::new()));
    let tasks = (0..plan.tasks)
        .map(|task| {
            tokio::spawn(load_task(
                plan.clone(),
                task,
                store.clone(),
                Arc::clone(&journal),
                Arc::clone(&pending),
                Arc::clone(running),
            ))
        })
        .collect();
    Load { journal, tasks }
}

/// Acknowledged requests waiting to be consumed, oldest first, with the time of their store.
type Pending = Arc<Mutex<VecDeque<(String, Instant)>>>;

/// Each round stores a fresh request, reads one of the newest (the authorize endpoint), and
/// consumes the oldest pending one once it has waited [`CONSUME_AFTER`].
async fn load_task(
    plan: LoadPlan,
    task: usize,
    store: PostgresStore,
    journal: Arc<Mutex<Journal>>,
    pending: Pending,
    running: Arc<AtomicBool>,
) {
    let lifetime = chrono::Duration::from_std(plan.lifetime).unwrap();
    let mut round = 0usize;
    while running.load(Ordering::Relaxed) {
        round += 1;
        let hash = format!("{}t{task}-{round}", plan.prefix);
        let mut failed = false;
        let request =
            PushedAuthorizationRequest::new(&hash, Utc::now() + lifetime, parameters(&hash))
                .with_client_id(CLIENT);
        let result = store.store(&request).await;
        {
            let mut journal = journal.lock().unwrap();
            match result {
                Ok(()) => {
                    journal.stored.insert(hash.clone(), Instant::now());
                    journal.succeeded.push(Instant::now());
                    pending.lock().unwrap().push_back((hash, Instant::now()));
                }
                Err(err) => {
                    journal.failure("store", &err);
                    journal.store_failed.insert(hash);
                    failed = true;
                }
            }
        }
        let newest = {
            let pending = pending.lock().unwrap();
            let choices = pending.len().min(2 * plan.tasks);
            (choices > 0).then(|| {
                pending[pending.len() - 1 - (round * 7 + task) % choices]
                    .0
                    .clone()
            })
        };
        if let Some(target) = newest {
            let result = store.get_by_hash(&target).await;
            let mut journal = journal.lock().unwrap();
            match result {
                Ok(found) => {
                    journal.succeeded.push(Instant::now());
                    if found.is_some_and(|found| found.parameters != parameters(&target)) {
                        journal
                            .unexpected
                            .push(format!("get {target}: other parameters"));
                    }
                }
                Err(err) => {
                    journal.failure("get", &err);
                    failed = true;
                }
            }
        }
        let oldest = {
            let mut pending = pending.lock().unwrap();
            match pending.front() {
                Some((_, at)) if at.elapsed() >= CONSUME_AFTER => pending.pop_front(),
                _ => None,
            }
        };
        if let Some((target, _)) = oldest {
            let began = Instant::now();
            let result = store.consume_for_client(&target, CLIENT).await;
            let mut journal = journal.lock().unwrap();
            match result {
                Ok(consumption) => {
                    journal.succeeded.push(Instant::now());
                    // Anything but Consumed (NotFound for a request whose store was
                    // acknowledged: a lost store) is what the counting after the run reports.
                    if let Consumption::Consumed(found) = consumption {
                        if found.parameters != parameters(&target) {
                            journal
                                .unexpected
                                .push(format!("consume {target}: other parameters"));
                        }
                        journal
                            .consumed
                            .entry(target)
                            .or_default()
                            .push(Instant::now());
                    }
                }
                Err(err) => {
                    journal.failure("consume", &err);
                    journal
                        .consume_failed
                        .insert(target, (began, Instant::now()));
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(plan.backoff).await;
        }
    }
}
