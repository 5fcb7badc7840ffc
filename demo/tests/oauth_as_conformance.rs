//! oauth-as's own storage conformance harness, run against `OauthAsStorage` with its pushed
//! requests in PostgreSQL (a fresh schema for every store the harness asks for) and
//! oauth-as's `MemoryStorage` for the rest; and the cross-store race the harness cannot
//! stage: a client deletion against a pushed request being put back.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use support::oauth_as_records::{client, key_of, record};

use common::TestDb;
use oauth_as::client::ClientId;
use oauth_as::par::PushedAuthorizationRequest;
use oauth_as::storage_conformance::{StorageConformance, Task, CHECKS};
use oauth_as::store::{RevocationWindow, Storage, WriteOutcome};
use oauth_as::MemoryStorage;
use par_store::oauth_as::OauthAsStorage;
use par_store::sqlx::postgres::PgPoolOptions;
use par_store::{
    protect::{KeyRing, ProtectionKey},
    Consumption, PostgresStore, PostgresStoreOptions, PushedAuthorizationRequestStore,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime};

/// A fresh, migrated schema of `db` for one store: the harness asks for a new, empty store
/// for every check (33 of them), and a schema is much cheaper to create than a database. The
/// store's pool names the schema in its `search_path`, so the store, its table and its
/// migration history live there alone. Small pools that let go of idle connections, so that
/// the stores of finished checks do not hold the server's connections.
async fn fresh_store(db: &TestDb, n: usize) -> PostgresStore {
    let schema = format!("conformance_{n}");
    par_store::sqlx::query(par_store::sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .idle_timeout(Duration::from_secs(1))
        .connect_with(
            db.options
                .clone()
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    // The harness's records are dated a year or more ahead (a fixed synthetic clock); a real
    // PAR lifetime is far below the store's default one-hour cap, which stays on elsewhere.
    let store = PostgresStoreOptions::new()
        .max_request_lifetime(Duration::from_secs(10 * 366 * 24 * 3600))
        .with_pool(pool);
    store.migrate().await.unwrap();
    store
}

/// oauth-as's harness builds deep futures: unoptimised, they can overflow the default 2 MiB
/// stack of a test thread (seen once in CI). The suite runs with room to run.
fn on_a_big_stack<F, Fut>(suite: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    const STACK: usize = 32 << 20;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .unwrap()
                .block_on(suite())
        })
        .unwrap()
        .join()
        .expect("the conformance suite failed");
}

#[test]
fn oauth_as_storage_conformance_passes_with_pushed_requests_in_postgres() {
    on_a_big_stack(|| conformance_suite_against_postgres(None));
}

/// The same suite with the records sealed (`with_protection`): every pushed request the
/// checks left behind is an envelope at rest.
#[test]
fn oauth_as_storage_conformance_passes_with_sealed_pushed_requests_in_postgres() {
    on_a_big_stack(|| conformance_suite_against_postgres(Some(keys("k1", [7; 32]))));
}

/// The harness's spawner, made deterministic on a loaded machine.
///
/// The harness hands its racers (8 per race) to the spawner one after another, in one
/// synchronous loop, and each racer's first step is a rendezvous gate that counts its own
/// re-polls: after 10,000 of them without all racers having arrived it gives up and the run
/// reports `harness/race_setup`. With a plain `tokio::spawn`, the first racer spins on another
/// worker while the harness's thread is still spawning the rest, and on two loaded cores an
/// OS preemption of that thread is enough to spend the budget (1 run in 10 beside two
/// CPU-burning loops).
///
/// Here the spawner polls each racer once on the harness's own task, where it arrives at the
/// gate (the gate is the racer's first await), and holds it; [`run`](Self::run) spawns the
/// held racers onto the runtime each time the harness's future returns from a poll, that is
/// after its spawning loop. So every racer has arrived, and the gate is open, before any of
/// them runs on its own: the gate's count no longer depends on scheduling. The takes past the
/// gate still run as separate tasks on the multi-threaded runtime, a parallel race.
#[derive(Clone, Default)]
struct RacersStartTogether {
    held: Arc<std::sync::Mutex<Vec<Task>>>,
}

impl RacersStartTogether {
    fn spawner(&self) -> impl Fn(Task) + Send + Sync + 'static {
        let held = Arc::clone(&self.held);
        move |mut task: Task| {
            // A no-op waker: the task is spawned (and so polled again) right after this poll
            // of the harness, which is what wakes it for real.
            let mut context = Context::from_waker(Waker::noop());
            if task.as_mut().poll(&mut context).is_pending() {
                held.lock().unwrap().push(task);
            }
        }
    }

    /// Runs `harness`, spawning the racers it handed over after each of its polls.
    async fn run<T>(&self, harness: impl Future<Output = T>) -> T {
        let mut harness = std::pin::pin!(harness);
        std::future::poll_fn(|context| {
            let polled = harness.as_mut().poll(context);
            for task in self.held.lock().unwrap().drain(..) {
                tokio::spawn(task);
            }
            polled
        })
        .await
    }
}

fn keys(id: &str, secret: [u8; 32]) -> KeyRing {
    KeyRing::new(ProtectionKey::new(id, secret).unwrap())
}

async fn conformance_suite_against_postgres(protection: Option<KeyRing>) {
    let db = Arc::new(TestDb::new().await);
    let stores = Arc::new(AtomicUsize::new(0));
    let sealed = protection.is_some();
    let factory = {
        let (db, stores) = (Arc::clone(&db), Arc::clone(&stores));
        move || {
            let (db, stores, protection) =
                (Arc::clone(&db), Arc::clone(&stores), protection.clone());
            async move {
                let n = stores.fetch_add(1, Ordering::SeqCst);
                let storage = OauthAsStorage::new(fresh_store(&db, n).await, MemoryStorage::new());
                match protection {
                    Some(keys) => storage.with_protection(keys),
                    None => storage,
                }
            }
        }
    };
    let racers = RacersStartTogether::default();
    let violations = racers
        .run(
            StorageConformance::new(factory)
                .with_spawn(racers.spawner())
                .run(),
        )
        .await;
    let stores = stores.load(Ordering::SeqCst);
    println!(
        "oauth-as storage conformance (sealed: {sealed}): {} check names, {} stores (fresh schemas) used, {} violations",
        CHECKS.len(),
        stores,
        violations.len()
    );
    for violation in &violations {
        println!("  {violation}");
    }
    assert!(violations.is_empty(), "{violations:#?}");
    // The harness really ran against PostgreSQL: one fresh schema per store it asked for,
    // and the checks left pushed requests behind in some of them.
    assert!(stores >= 30, "only {stores} stores were asked for");
    let left: i64 = par_store::sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = 'pushed_authorization_requests' AND n.nspname LIKE 'conformance_%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(usize::try_from(left).unwrap(), stores);
    // What the checks left behind, as it is at rest.
    let mut rows = Vec::new();
    for n in 0..stores {
        let parameters: Vec<String> =
            par_store::sqlx::query_scalar(par_store::sqlx::AssertSqlSafe(format!(
                "SELECT parameters FROM conformance_{n}.pushed_authorization_requests \
                 WHERE parameters IS NOT NULL"
            )))
            .fetch_all(&db.pool)
            .await
            .unwrap();
        rows.extend(parameters);
    }
    assert!(
        !rows.is_empty(),
        "the checks left no pushed request to look at"
    );
    for parameters in &rows {
        assert_eq!(
            parameters.starts_with("v2.k1."),
            sealed,
            "sealed: {sealed}, at rest: {parameters}"
        );
        assert_eq!(parameters.contains("client_id"), !sealed, "{parameters}");
    }
    println!(
        "{} pushed requests left at rest, sealed: {sealed}",
        rows.len()
    );
}

/// oauth-as takes a pushed request before it can see which client presented it, and puts it
/// back when that was the wrong client. A `delete_client` landing in between must win: after
/// both have finished, in whatever order they ran, the deleted client's request is not in
/// PostgreSQL. This is the window the adapter's second barrier probe closes (a single check
/// before the write leaves it open). Many rounds, the two operations released together on a
/// multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_back_racing_a_client_deletion_never_leaves_the_request_behind() {
    let db = TestDb::new().await;
    let storage = Arc::new(OauthAsStorage::new(db.store(), MemoryStorage::new()));
    let rounds = 200;
    let (mut refused, mut applied) = (0, 0);
    for round in 0..rounds {
        let id = format!("client-{round}");
        storage.put_client(client(&id)).await.unwrap();
        let mut record = PushedAuthorizationRequest::new(
            format!("urn:ietf:params:oauth:request_uri:race-{round}"),
            ClientId::new(id.clone()),
            SystemTime::now() + Duration::from_secs(60),
        );
        record.pushed_at = SystemTime::now();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let put = tokio::spawn({
            let (storage, barrier) = (Arc::clone(&storage), Arc::clone(&barrier));
            async move {
                barrier.wait().await;
                storage.put_pushed_authorization_request(record).await
            }
        });
        let delete = tokio::spawn({
            let (storage, barrier) = (Arc::clone(&storage), Arc::clone(&barrier));
            let id = ClientId::new(id.clone());
            async move {
                barrier.wait().await;
                let now = SystemTime::now();
                storage
                    .delete_client(
                        &id,
                        RevocationWindow {
                            recorded_at: now,
                            until: now + Duration::from_secs(3600),
                        },
                    )
                    .await
            }
        });
        match put.await.unwrap().unwrap() {
            WriteOutcome::RefusedRevoked => refused += 1,
            WriteOutcome::Applied => applied += 1,
        }
        assert!(delete.await.unwrap().unwrap());
        let left: i64 = par_store::sqlx::query_scalar(
            "SELECT count(*) FROM pushed_authorization_requests WHERE client_id = $1",
        )
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            left, 0,
            "round {round}: a deleted client's request survived"
        );
    }
    println!(
        "{rounds} rounds: put refused {refused} times, applied (then cascaded) {applied} times"
    );
    assert_eq!(refused + applied, rounds);
}

/// A record put back after it expired (the server took it, then its deadline passed before
/// the put-back) is not stored: par-store never stores an expired request, and a take would
/// not return it anyway. The put answers `Applied`, the take `None`, and no row is left.
#[tokio::test]
async fn an_expired_record_is_applied_without_a_row() {
    let db = TestDb::new().await;
    let storage = OauthAsStorage::new(db.store(), MemoryStorage::new());
    storage.put_client(client("client-a")).await.unwrap();
    let record = PushedAuthorizationRequest::new(
        "urn:ietf:params:oauth:request_uri:expired",
        ClientId::new("client-a"),
        SystemTime::now() - Duration::from_secs(1),
    );
    let outcome = storage
        .put_pushed_authorization_request(record)
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    assert_eq!(db.row_count().await, 0);
    assert!(storage
        .take_pushed_authorization_request("urn:ietf:params:oauth:request_uri:expired")
        .await
        .unwrap()
        .is_none());
}

/// With `with_protection`, PostgreSQL holds an envelope: none of the record's fields (the
/// redirect URI, the client id inside the record, the PKCE challenge...) is readable in the
/// row, and the take opens it back into the same record. A take with a key ring that cannot
/// open it is an error, never a forged or empty record, and the request stays consumed.
#[tokio::test]
async fn sealed_records_are_envelopes_at_rest_and_open_only_with_their_keys() {
    let db = TestDb::new().await;
    let storage =
        OauthAsStorage::new(db.store(), MemoryStorage::new()).with_protection(keys("k1", [7; 32]));
    storage.put_client(client("client-a")).await.unwrap();
    let uri = "urn:ietf:params:oauth:request_uri:sealed";
    let mut record = PushedAuthorizationRequest::new(
        uri,
        ClientId::new("client-a"),
        SystemTime::now() + Duration::from_secs(60),
    );
    record.redirect_uri = Some("https://app.example/cb-secret-path".to_string());
    record.state = Some("state-value-xyz".to_string());
    assert_eq!(
        storage
            .put_pushed_authorization_request(record.clone())
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let (parameters, client_id): (String, Option<String>) = par_store::sqlx::query_as(
        "SELECT parameters, client_id FROM pushed_authorization_requests",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(parameters.starts_with("v2.k1."), "{parameters}");
    for secret in ["cb-secret-path", "state-value-xyz", "client-a", "sealed"] {
        assert!(!parameters.contains(secret), "{secret} in {parameters}");
    }
    // The binding column stays readable: it is what delete_client cascades on.
    assert_eq!(client_id.as_deref(), Some("client-a"));
    let taken = storage
        .take_pushed_authorization_request(uri)
        .await
        .unwrap()
        .expect("the sealed record");
    assert!(taken == record, "the record opened differently: {taken:?}");

    // Put again, taken by a server with other keys: an error, and the request is gone.
    assert_eq!(
        storage
            .put_pushed_authorization_request(record)
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let stranger =
        OauthAsStorage::new(db.store(), MemoryStorage::new()).with_protection(keys("k2", [9; 32]));
    let err = stranger
        .take_pushed_authorization_request(uri)
        .await
        .expect_err("a key ring without k1 cannot open the record");
    assert!(err.to_string().contains("par-store"), "{err}");
    assert_eq!(db.unconsumed_row_count().await, 0);
    assert!(format!("{stranger:?}").contains("k2"));
    assert!(!format!("{stranger:?}").contains("[9,"));
}

/// oauth-as puts a request back after a stranger presented it: the put replaces the marker
/// the take left, and the request is live again for its client.
#[tokio::test]
async fn a_put_back_after_a_take_makes_the_request_usable_again() {
    let db = TestDb::new().await;
    let storage = OauthAsStorage::new(db.store(), MemoryStorage::new());
    storage.put_client(client("client-a")).await.unwrap();
    let uri = "urn:ietf:params:oauth:request_uri:put-back";
    let pushed = record(uri, "client-a");
    let put = storage
        .put_pushed_authorization_request(pushed.clone())
        .await
        .unwrap();
    assert_eq!(put, WriteOutcome::Applied);
    let taken = storage
        .take_pushed_authorization_request(uri)
        .await
        .unwrap()
        .expect("taken");
    assert_eq!(
        storage
            .put_pushed_authorization_request(taken)
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let again = storage
        .take_pushed_authorization_request(uri)
        .await
        .unwrap()
        .expect("live again after the put-back");
    assert!(again == pushed, "{again:?}");
}

/// A request consumed through `consume_for_client` or `consume_by_hash` by its client is final: a put
/// of the same record fails (oauth-as answers `server_error`) and nothing is brought back.
#[tokio::test]
async fn a_request_consumed_by_its_client_is_never_brought_back_by_a_put() {
    let db = TestDb::new().await;
    let storage = OauthAsStorage::new(db.store(), MemoryStorage::new());
    storage.put_client(client("client-a")).await.unwrap();
    for (n, for_client) in [(1, true), (2, false)] {
        let uri = format!("urn:ietf:params:oauth:request_uri:final-{n}");
        let pushed = record(&uri, "client-a");
        let put = storage
            .put_pushed_authorization_request(pushed.clone())
            .await
            .unwrap();
        assert_eq!(put, WriteOutcome::Applied);
        let outcome = if for_client {
            storage
                .pushed()
                .consume_for_client(&key_of(&uri), "client-a")
                .await
        } else {
            storage
                .pushed()
                .consume_by_hash(&key_of(&uri))
                .await
                .map(|found| found.map_or(Consumption::NotFound, Consumption::Consumed))
        };
        assert!(matches!(outcome.unwrap(), Consumption::Consumed(_)));
        let err = storage
            .put_pushed_authorization_request(pushed)
            .await
            .expect_err("a consumed request cannot be put back");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(storage
            .take_pushed_authorization_request(&uri)
            .await
            .unwrap()
            .is_none());
        assert_eq!(db.unconsumed_row_count().await, 0);
    }
}
