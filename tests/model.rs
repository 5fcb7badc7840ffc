//! Model-based test: random sequences of operations run against `PostgresStore`,
//! `MemoryStore`, `PostgresStore` on a Citus-distributed table (where Citus is installed:
//! tests/common/citus.rs) and a reference model (a `HashMap` with the documented semantics);
//! every step must give the same result on all of them.
//!
//! The sequences mix valid requests on a small pool of colliding hashes (bound to one of two
//! clients or to none), bad input (bad hashes, NUL or oversize parameters, expiry not in the
//! future), look-ups with hashes that could never have been stored, the three consumptions
//! (`consume_by_hash`, `consume`, `consume_for_client` with the right, a wrong or an
//! unstorable client) and `consume_in_session` (two sessions and an unstorable binding, the
//! stores under a `ConsumePolicy::ReloadWithin(RELOAD_WINDOW)`), `store_or_replace` over live, expired and consumed requests, cleanup
//! passes, short sleeps, and expiries close to now.
//!
//! Expiry and determinism: a request expires either in the far future or `MARGIN` + 0..200 ms
//! after it is stored. Before each step the runner waits until no request expires within
//! `MARGIN` of now, so a step that takes less than `MARGIN` (all of them, normally: a few
//! milliseconds) cannot see an expiry flip while it runs: the model decides the outcome.
//! Should a step ever run longer (a stalled CI machine), the runner notices, accepts the
//! outcome either way for the requests whose expiry passed during the step, and settles the
//! state (waits until they are clearly expired and cleans them up everywhere) before going on.
//! The end of a reload window is treated like an expiry, as an interval: each store's
//! consumption instant lies within its step, so its window ends somewhere in
//! `[step start, step end] + RELOAD_WINDOW`, and the runner keeps that whole interval out of
//! the next steps' margin.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 48 here); a failure prints the
//! shrunk sequence and the seed to rerun it (`PROPTEST_RNG_SEED`).

mod common;

use chrono::{DateTime, Utc};
use common::TestDb;
use par_store::sqlx;
use par_store::{
    ConsumePolicy, Consumption, MemoryStore, PostgresStore, PostgresStoreOptions,
    PushedAuthorizationRequest, PushedAuthorizationRequestStoreExt, StoreError,
};

const MAX_REFERENCE_VALUE_HASH_LEN: usize =
    PushedAuthorizationRequest::MAX_REFERENCE_VALUE_HASH_LEN;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// No expiry comes closer than this to the start of a step.
const MARGIN: Duration = Duration::from_millis(150);
/// Clock tolerance between the test process and the database server.
const SKEW: Duration = Duration::from_millis(5);
/// A small limit, so that oversize parameters are cheap to generate.
const MAX_PARAMETERS_LEN: usize = 64;
const DEFAULT_CASES: u32 = 48;
/// The stores' reload window: short enough that sequences pass it, long enough that a step
/// never sees it close (it is kept out of the margin like an expiry).
const RELOAD_WINDOW: Duration = Duration::from_millis(300);

/// The colliding hashes: short, Duende-shaped, the longest allowed, and awkward text.
fn pool_hash(key: usize) -> String {
    match key % 4 {
        0 => "k0".to_owned(),
        1 => "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".to_owned(),
        2 => "\u{e9}".repeat(MAX_REFERENCE_VALUE_HASH_LEN / 2), // 128 bytes
        _ => "it's \"q\" \\ $1 -- /* \u{1f600}".to_owned(),
    }
}

/// Hashes that could never have been stored.
#[derive(Clone, Copy, Debug)]
enum BadHash {
    Empty,
    Overlong,
    Nul,
    Tab,
    NextLine,
}

impl BadHash {
    fn text(self) -> String {
        match self {
            BadHash::Empty => String::new(),
            BadHash::Overlong => "h".repeat(MAX_REFERENCE_VALUE_HASH_LEN + 1),
            BadHash::Nul => "k0\0".to_owned(),
            BadHash::Tab => "k\t0".to_owned(),
            BadHash::NextLine => "k0\u{85}".to_owned(),
        }
    }
}

#[derive(Clone, Debug)]
enum Key {
    Pool(usize),
    Bad(BadHash),
}

impl Key {
    fn hash(&self) -> String {
        match self {
            Key::Pool(key) => pool_hash(*key),
            Key::Bad(bad) => bad.text(),
        }
    }
}

/// When a valid request expires, relative to the start of its `store` step.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// `MARGIN` + this many milliseconds.
    Soon(u64),
    /// An hour.
    Later,
}

/// The one thing wrong with an otherwise valid request.
#[derive(Clone, Debug)]
enum Bad {
    Hash(BadHash),
    ParametersWithNul,
    /// `MAX_PARAMETERS_LEN` + this many bytes.
    ParametersTooLong(usize),
    /// This many milliseconds before the step starts (0: exactly then).
    ExpiryPast(u64),
}

/// The sessions a consumption may come from, and a binding no store accepts.
fn session(binding: usize) -> &'static str {
    match binding {
        0 => "session-1",
        1 => "session-2",
        _ => "",
    }
}

/// The clients a request may be bound to, and a client id no request could be bound to.
fn client_id(client: usize) -> &'static str {
    match client {
        0 => "client-a",
        1 => "client-b",
        _ => "",
    }
}

#[derive(Clone)]
enum Step {
    Store {
        key: usize,
        expiry: Expiry,
        parameters: String,
        client: Option<usize>,
        /// `store_or_replace` instead of `store`.
        replace: bool,
    },
    StoreBad {
        key: usize,
        bad: Bad,
    },
    Get(Key),
    Consume(Key),
    /// `consume_for_client` with `client_id(client)`.
    ConsumeForClient(Key, usize),
    /// `consume_in_session` with `client_id(client)` and `session(binding)`.
    ConsumeInSession(Key, usize, usize),
    DeleteExpired,
    Sleep(u64),
}

impl fmt::Debug for Step {
    // Hashes shown as text, so that a failing sequence reads as what it does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Store {
                key,
                expiry,
                parameters,
                client,
                replace,
            } => write!(
                f,
                "{}({:?}, {expiry:?}, {parameters:?}, {:?})",
                if *replace { "StoreOrReplace" } else { "Store" },
                pool_hash(*key),
                client.map(client_id)
            ),
            Step::StoreBad { key, bad } => write!(f, "StoreBad({:?}, {bad:?})", pool_hash(*key)),
            Step::Get(key) => write!(f, "Get({:?})", key.hash()),
            Step::Consume(key) => write!(f, "ConsumeByHash({:?})", key.hash()),
            Step::ConsumeForClient(key, client) => write!(
                f,
                "ConsumeForClient({:?}, {:?})",
                key.hash(),
                client_id(*client)
            ),
            Step::ConsumeInSession(key, client, binding) => write!(
                f,
                "ConsumeInSession({:?}, {:?}, {:?})",
                key.hash(),
                client_id(*client),
                session(*binding)
            ),
            Step::DeleteExpired => write!(f, "DeleteExpired"),
            Step::Sleep(ms) => write!(f, "Sleep({ms} ms)"),
        }
    }
}

fn bad_hash() -> impl Strategy<Value = BadHash> {
    prop_oneof![
        Just(BadHash::Empty),
        Just(BadHash::Overlong),
        Just(BadHash::Nul),
        Just(BadHash::Tab),
        Just(BadHash::NextLine),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        5 => (0..4usize).prop_map(Key::Pool),
        1 => bad_hash().prop_map(Key::Bad),
    ]
}

fn parameters() -> impl Strategy<Value = String> {
    prop_oneof![
        // At most 16 characters of at most 4 bytes: never over the limit.
        4 => "[a-z0-9=&%'\"\\\\$;*/ \u{e9}\u{4e2d}\u{1f600}\r\n-]{0,16}",
        1 => Just("p".repeat(MAX_PARAMETERS_LEN)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            0..4usize,
            prop_oneof![(0..=200u64).prop_map(Expiry::Soon), Just(Expiry::Later)],
            parameters(),
            prop_oneof![1 => Just(None), 3 => (0..2usize).prop_map(Some)],
            prop_oneof![Just(false), Just(true)],
        )
            .prop_map(|(key, expiry, parameters, client, replace)| Step::Store {
                key,
                expiry,
                parameters,
                client,
                replace,
            }),
        1 => (
            0..4usize,
            prop_oneof![
                bad_hash().prop_map(Bad::Hash),
                Just(Bad::ParametersWithNul),
                (1..=40usize).prop_map(Bad::ParametersTooLong),
                (0..=1_000u64).prop_map(Bad::ExpiryPast),
            ]
        )
            .prop_map(|(key, bad)| Step::StoreBad { key, bad }),
        3 => key().prop_map(Step::Get),
        2 => key().prop_map(Step::Consume),
        5 => (key(), prop_oneof![4 => 0..2usize, 1 => Just(2usize)])
            .prop_map(|(key, client)| Step::ConsumeForClient(key, client)),
        5 => (
            key(),
            prop_oneof![6 => 0..2usize, 1 => Just(2usize)],
            prop_oneof![6 => 0..2usize, 1 => Just(2usize)],
        )
            .prop_map(|(key, client, binding)| Step::ConsumeInSession(key, client, binding)),
        1 => Just(Step::DeleteExpired),
        2 => (0..=200u64).prop_map(Step::Sleep),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..=20)
}

/// What one step returned, comparable across stores.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Stored,
    Duplicate,
    Invalid(&'static str),
    /// Hash, expiry, parameters and client in full (the request's own `Debug` hides them).
    Found(String, DateTime<Utc>, String, Option<String>),
    NotFound,
    /// `consume` / `consume_for_client`: `Consumed` is `Found`, `NotFound` is `NotFound`.
    /// The instant of `AlreadyConsumed` is each store's own clock: not compared.
    AlreadyConsumed,
    Expired,
    WrongClient,
    Deleted(u64),
    Slept,
    /// Any other error: never expected.
    Failed(String),
}

fn stored(result: Result<(), StoreError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Stored,
        Err(StoreError::Duplicate) => Outcome::Duplicate,
        Err(StoreError::InvalidInput { field, .. }) => Outcome::Invalid(field.as_str()),
        Err(other) => Outcome::Failed(format!("{other:?}")),
    }
}

fn found(request: PushedAuthorizationRequest) -> Outcome {
    Outcome::Found(
        request.reference_value_hash,
        request.expires_at,
        request.parameters,
        request.client_id,
    )
}

fn consumed(result: Result<Consumption, StoreError>) -> Outcome {
    match result {
        Ok(Consumption::Consumed(request)) => found(request),
        Ok(Consumption::AlreadyConsumed { .. }) => Outcome::AlreadyConsumed,
        Ok(Consumption::Expired) => Outcome::Expired,
        Ok(Consumption::NotFound) => Outcome::NotFound,
        Ok(Consumption::WrongClient) => Outcome::WrongClient,
        Ok(other) => Outcome::Failed(format!("{other:?}")),
        Err(StoreError::InvalidInput { field, .. }) => Outcome::Invalid(field.as_str()),
        Err(other) => Outcome::Failed(format!("{other:?}")),
    }
}

fn looked_up(result: Result<Option<PushedAuthorizationRequest>, StoreError>) -> Outcome {
    match result {
        Ok(Some(request)) => found(request),
        Ok(None) => Outcome::NotFound,
        Err(other) => Outcome::Failed(format!("{other:?}")),
    }
}

fn deleted(result: Result<u64, StoreError>) -> Outcome {
    match result {
        Ok(rows) => Outcome::Deleted(rows),
        Err(other) => Outcome::Failed(format!("{other:?}")),
    }
}

/// The request a step stores, built once at the step's start and given to every store.
fn request_of(step: &Step, start: DateTime<Utc>) -> Option<PushedAuthorizationRequest> {
    let ms = |ms: u64| chrono::Duration::milliseconds(ms as i64);
    let margin = ms(MARGIN.as_millis() as u64);
    match step {
        Step::Store {
            key,
            expiry,
            parameters,
            client,
            ..
        } => {
            let expires_at = match expiry {
                Expiry::Soon(extra) => start + margin + ms(*extra),
                Expiry::Later => start + chrono::Duration::hours(1),
            };
            let request =
                PushedAuthorizationRequest::new(pool_hash(*key), expires_at, parameters.clone());
            Some(match client {
                Some(client) => request.with_client_id(client_id(*client)),
                None => request,
            })
        }
        Step::StoreBad { key, bad } => {
            let later = start + chrono::Duration::hours(1);
            let (hash, expires_at, parameters) = match bad {
                Bad::Hash(bad) => (bad.text(), later, "p".to_owned()),
                Bad::ParametersWithNul => (pool_hash(*key), later, "a\0b".to_owned()),
                Bad::ParametersTooLong(extra) => (
                    pool_hash(*key),
                    later,
                    "p".repeat(MAX_PARAMETERS_LEN + extra),
                ),
                Bad::ExpiryPast(before) => (pool_hash(*key), start - ms(*before), "p".to_owned()),
            };
            Some(PushedAuthorizationRequest::new(
                hash, expires_at, parameters,
            ))
        }
        _ => None,
    }
}

/// A consumption as the model records it: the step it happened in (each store's own
/// instant lies between `start` and `end`) and the session that may reload it.
#[derive(Clone, Debug)]
struct Consumed {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    session: Option<&'static str>,
}

/// The reference model: the documented contract, written as plainly as possible.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Each request, and its consumption if any (then it is a marker until it expires).
    requests: HashMap<String, (PushedAuthorizationRequest, Option<Consumed>)>,
}

fn window() -> chrono::Duration {
    chrono::Duration::from_std(RELOAD_WINDOW).unwrap()
}

fn storable(hash: &str) -> bool {
    !hash.is_empty()
        && hash.len() <= MAX_REFERENCE_VALUE_HASH_LEN
        && !hash.chars().any(char::is_control)
}

impl Model {
    /// The outcome of `step` if it ran entirely at `now`, and its effect on the model; a
    /// consumption is recorded as having happened within `span` (the step's start and end).
    fn apply(
        &mut self,
        step: &Step,
        request: Option<&PushedAuthorizationRequest>,
        now: DateTime<Utc>,
        span: (DateTime<Utc>, DateTime<Utc>),
    ) -> Outcome {
        match (step, request) {
            (Step::Store { .. } | Step::StoreBad { .. }, Some(request)) => {
                if !storable(&request.reference_value_hash) {
                    Outcome::Invalid("reference_value_hash")
                } else if request.parameters.len() > MAX_PARAMETERS_LEN
                    || request.parameters.contains('\0')
                {
                    Outcome::Invalid("parameters")
                } else if request.expires_at <= now {
                    Outcome::Invalid("expires_at")
                } else {
                    let replace = matches!(step, Step::Store { replace: true, .. });
                    match self.requests.get(&request.reference_value_hash) {
                        // A consumed request is never brought back.
                        Some((_, Some(_))) => Outcome::Duplicate,
                        // Expired or not: `store` never overwrites; `store_or_replace` does.
                        Some((_, None)) if !replace => Outcome::Duplicate,
                        _ => {
                            self.requests.insert(
                                request.reference_value_hash.clone(),
                                (request.clone(), None),
                            );
                            Outcome::Stored
                        }
                    }
                }
            }
            (Step::Get(key), _) => match self.requests.get(&key.hash()) {
                Some((request, None)) if request.expires_at > now => found(request.clone()),
                _ => Outcome::NotFound,
            },
            (Step::Consume(key), _) => match self.consume(&key.hash(), None, None, now, span) {
                found @ Outcome::Found(..) => found,
                _ => Outcome::NotFound,
            },
            (Step::ConsumeForClient(key, client), _) => {
                let client = client_id(*client);
                if client.is_empty() {
                    Outcome::Invalid("client_id")
                } else {
                    self.consume(&key.hash(), Some(client), None, now, span)
                }
            }
            (Step::ConsumeInSession(key, client, binding), _) => {
                let (client, binding) = (client_id(*client), session(*binding));
                if client.is_empty() {
                    Outcome::Invalid("client_id")
                } else if binding.is_empty() {
                    Outcome::Invalid("session_binding")
                } else {
                    self.consume(&key.hash(), Some(client), Some(binding), now, span)
                }
            }
            (Step::DeleteExpired, _) => {
                let before = self.requests.len();
                self.requests
                    .retain(|_, (request, _)| request.expires_at > now);
                Outcome::Deleted((before - self.requests.len()) as u64)
            }
            (Step::Sleep(_), _) => Outcome::Slept,
            (Step::Store { .. } | Step::StoreBad { .. }, None) => unreachable!("built above"),
        }
    }

    /// `consume` (`client` `None`), `consume_for_client` or (with `session`)
    /// `consume_in_session`, as `Consumption` and `ConsumePolicy::ReloadWithin` describe it.
    fn consume(
        &mut self,
        hash: &str,
        client: Option<&str>,
        session: Option<&'static str>,
        now: DateTime<Utc>,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
    ) -> Outcome {
        let Some((request, consumption)) = self.requests.get_mut(hash) else {
            return Outcome::NotFound;
        };
        if let (Some(caller), Some(bound)) = (client, request.client_id.as_deref()) {
            if caller != bound {
                // Left untouched, whatever its state.
                return Outcome::WrongClient;
            }
        }
        if request.expires_at <= now {
            // A consumed one is reported as such until cleanup removes its marker; an
            // expired request is removed.
            if consumption.is_some() {
                return Outcome::AlreadyConsumed;
            }
            self.requests.remove(hash);
            return Outcome::Expired;
        }
        if let Some(consumed) = consumption {
            // A reload: the same session, within the window (and live, checked above).
            if session.is_some() && consumed.session == session && now < consumed.start + window() {
                return found(request.clone());
            }
            return Outcome::AlreadyConsumed;
        }
        *consumption = Some(Consumed {
            start,
            end,
            session,
        });
        found(request.clone())
    }

    /// When an outcome may change, as intervals: each expiry (an instant), and the end of
    /// each reload window (somewhere within the consuming step, plus the window).
    fn expiries(&self) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        self.requests.values().flat_map(|(request, consumption)| {
            let window_end = consumption
                .as_ref()
                .filter(|consumed| consumed.session.is_some())
                .map(|consumed| (consumed.start + window(), consumed.end + window()));
            std::iter::once((request.expires_at, request.expires_at)).chain(window_end)
        })
    }
}

/// A store under test: the extension trait has `store_or_replace`; one cleanup pass is the
/// stores' own method.
#[async_trait::async_trait]
trait Subject: PushedAuthorizationRequestStoreExt {
    async fn delete_expired(&self) -> Result<u64, StoreError>;
}

#[async_trait::async_trait]
impl Subject for PostgresStore {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        PostgresStore::delete_expired(self).await
    }
}

#[async_trait::async_trait]
impl Subject for MemoryStore {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        MemoryStore::delete_expired(self).await
    }
}

async fn execute(
    store: &dyn Subject,
    step: &Step,
    request: Option<&PushedAuthorizationRequest>,
) -> Outcome {
    match (step, request) {
        (Step::Store { replace: true, .. }, Some(request)) => {
            stored(store.store_or_replace(request).await)
        }
        (_, Some(request)) => stored(store.store(request).await),
        (Step::Get(key), None) => looked_up(store.get_by_hash(&key.hash()).await),
        (Step::Consume(key), None) => looked_up(store.consume_by_hash(&key.hash()).await),
        (Step::ConsumeForClient(key, client), None) => consumed(
            store
                .consume_for_client(&key.hash(), client_id(*client))
                .await,
        ),
        (Step::ConsumeInSession(key, client, binding), None) => consumed(
            store
                .consume_in_session(&key.hash(), client_id(*client), session(*binding))
                .await,
        ),
        (Step::DeleteExpired, None) => deleted(store.delete_expired().await),
        (Step::Sleep(ms), None) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Outcome::Slept
        }
        (Step::Store { .. } | Step::StoreBad { .. }, None) => unreachable!("built above"),
    }
}

fn std_duration(delta: chrono::Duration) -> Duration {
    delta.to_std().unwrap_or(Duration::ZERO)
}

/// Waits until no request of the model expires (and no reload window ends) within
/// (now - SKEW, now + MARGIN].
async fn wait_for_clear_expiries(model: &Model) {
    loop {
        let now = Utc::now();
        let low = now - chrono::Duration::from_std(SKEW).unwrap();
        let high = now + chrono::Duration::from_std(MARGIN).unwrap();
        match model
            .expiries()
            .filter(|(first, last)| *last > low && *first <= high)
            .map(|(_, last)| last)
            .max()
        {
            None => return,
            Some(latest) => {
                tokio::time::sleep(std_duration(latest - now) + SKEW + Duration::from_millis(1))
                    .await;
            }
        }
    }
}

/// Runs one sequence against a fresh memory store, the (truncated) PostgreSQL store and the
/// model; the first disagreement ends it with a description.
///
/// With `citus` (a pool on a schema of the Citus cluster whose table is distributed), the
/// same sequence also runs on PostgreSQL distributed by Citus.
async fn run_sequence(
    db: &TestDb,
    citus: Option<&sqlx::PgPool>,
    steps: &[Step],
) -> Result<(), String> {
    for pool in std::iter::once(&db.pool).chain(citus) {
        sqlx::query("TRUNCATE pushed_authorization_requests, pushed_authorization_request_markers")
            .execute(pool)
            .await
            .map_err(|err| format!("truncate: {err}"))?;
    }
    let policy = ConsumePolicy::ReloadWithin(RELOAD_WINDOW);
    let options = PostgresStoreOptions::new()
        .max_parameters_len(MAX_PARAMETERS_LEN)
        .consume_policy(policy);
    let postgres = options.with_pool(db.pool.clone());
    let memory = MemoryStore::new()
        .max_parameters_len(MAX_PARAMETERS_LEN)
        .consume_policy(policy);
    let distributed = citus.map(|pool| options.with_pool(pool.clone()));
    let mut subjects: Vec<(&str, &dyn Subject)> =
        vec![("memory", &memory), ("postgres", &postgres)];
    if let Some(distributed) = &distributed {
        subjects.push(("citus", distributed));
    }
    let mut model = Model::default();

    // Finally, every hash of the pool is read: what the model holds live is readable from
    // both stores, and nothing else.
    let final_reads: Vec<Step> = (0..4).map(|key| Step::Get(Key::Pool(key))).collect();
    for (index, step) in steps.iter().chain(&final_reads).enumerate() {
        if !matches!(step, Step::Sleep(_)) {
            wait_for_clear_expiries(&model).await;
        }
        let start = Utc::now();
        let request = request_of(step, start);
        let mut actual = Vec::new();
        for &(name, subject) in &subjects {
            actual.push((name, execute(subject, step, request.as_ref()).await));
        }
        let end = Utc::now();

        // Did an expiry that matters fall inside the step (it took longer than MARGIN)?
        let skew = chrono::Duration::from_std(SKEW).unwrap();
        let borderline = |(first, last): (DateTime<Utc>, DateTime<Utc>)| {
            last > start - skew && first <= end + skew
        };
        // (A request refused for its past expiry is refused whenever the step runs.)
        let new_expiry = match step {
            Step::Store { .. } => request.as_ref().map(|r| (r.expires_at, r.expires_at)),
            _ => None,
        };
        let flipped =
            !matches!(step, Step::Sleep(_)) && model.expiries().chain(new_expiry).any(borderline);

        let mut at_start = model.clone();
        let expected = at_start.apply(step, request.as_ref(), start, (start, end));
        if !flipped {
            for (name, outcome) in &actual {
                if *outcome != expected {
                    return Err(format!(
                        "step {index} {step:?}: {name} returned {outcome:?}, the model expects {expected:?}"
                    ));
                }
            }
            model = at_start;
            continue;
        }

        // A slow step: the outcome may be either side of the expiry that passed meanwhile.
        let mut at_end = model.clone();
        let expected_late = at_end.apply(step, request.as_ref(), end + skew, (start, end + skew));
        println!(
            "step {index} {step:?} took {} ms, longer than the {} ms margin: accepting either \
             side of an expiry and settling",
            (end - start).num_milliseconds(),
            MARGIN.as_millis()
        );
        for (name, outcome) in &actual {
            let acceptable = match (outcome, &expected, &expected_late) {
                (Outcome::Deleted(n), Outcome::Deleted(low), Outcome::Deleted(high)) => {
                    low <= n && n <= high
                }
                _ => *outcome == expected || *outcome == expected_late,
            };
            if !acceptable {
                return Err(format!(
                    "step {index} {step:?} (slow, {} ms): {name} returned {outcome:?}, the \
                     model expects {expected:?} or {expected_late:?}",
                    (end - start).num_milliseconds()
                ));
            }
        }
        // Settle: once everything that expired during the step is clearly expired, remove
        // every expired request everywhere; both readings of the step then agree.
        tokio::time::sleep(std_duration(end + skew * 2 - Utc::now())).await;
        model = at_end;
        wait_for_clear_expiries(&model).await;
        let now = Utc::now();
        model.requests.retain(|_, (r, _)| r.expires_at > now);
        for &(name, subject) in &subjects {
            if let Err(err) = subject.delete_expired().await {
                return Err(format!("settling after step {index}: {name}: {err:?}"));
            }
        }
    }

    Ok(())
}

#[test]
fn postgres_and_memory_stores_follow_the_reference_model() {
    let mut config = Config::default(); // honours PROPTEST_CASES, PROPTEST_RNG_SEED, ...
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        ),
    };
    config.rng_seed = RngSeed::Fixed(seed);
    // Failing sequences are saved beside this file and replayed first on the next run.
    config.source_file = Some(file!());
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    // Shrinking reruns sequences against PostgreSQL, sleeps included: bound it.
    config.max_shrink_time = 120_000;
    let cases = config.cases;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::new());
    // Citus too, where it is installed (tests/common/citus.rs; skipped with a line elsewhere).
    let citus = runtime.block_on(async {
        let schema = common::citus::CitusSchema::new(common::citus::citus()?).await;
        let pool = schema.pool(4).await;
        let store = PostgresStore::new(pool.clone());
        assert!(store.distribute_on_citus().await.unwrap());
        Some((schema, pool))
    });
    let citus_pool = citus.as_ref().map(|(_, pool)| pool);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&sequence(), |steps| {
        runtime
            .block_on(run_sequence(&db, citus_pool, &steps))
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => println!(
            "{cases} random sequences agreed with the model in {} ms (seed {seed}; Citus {})",
            started.elapsed().as_millis(),
            if citus.is_some() {
                "included"
            } else {
                "not installed"
            }
        ),
        Err(TestError::Fail(reason, steps)) => panic!(
            "the stores disagree with the model: {reason}\n\
             minimal failing sequence ({} steps):\n{steps:#?}\n\
             rerun with PROPTEST_RNG_SEED={seed} PROPTEST_CASES={cases}",
            steps.len()
        ),
        Err(TestError::Abort(reason)) => {
            panic!("proptest aborted: {reason} (PROPTEST_RNG_SEED={seed})")
        }
    }
    drop(runtime);
}
