//! The `metrics` feature: what a store records through the `metrics` facade, read back from
//! `metrics-util`'s `DebuggingRecorder` installed for the test's own thread (each test runs
//! on a current-thread runtime, so tests do not see each other's metrics).
#![cfg(feature = "metrics")]

mod common;

use chrono::{Duration, Utc};
use common::{hash, TestDb};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use par_store::sqlx;
use par_store::{
    Consumption, MemoryStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, PushedAuthorizationRequestStoreExt, StoreError,
};
use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

/// name and sorted labels -> value
type Recorded = BTreeMap<(String, Vec<(String, String)>), DebugValue>;

fn recorded(snapshotter: &Snapshotter) -> Recorded {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

/// The samples of `db.client.operation.duration` for one operation (and error type).
fn durations(
    recorded: &Recorded,
    system: &str,
    operation: &str,
    error_type: Option<&str>,
) -> Vec<f64> {
    let mut pairs = vec![
        ("db.system.name", system),
        ("db.operation.name", operation),
        ("db.collection.name", "pushed_authorization_requests"),
    ];
    if let Some(error_type) = error_type {
        pairs.push(("error.type", error_type));
    }
    match recorded.get(&("db.client.operation.duration".to_owned(), labels(&pairs))) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        Some(other) => panic!("{operation}: not a histogram: {other:?}"),
        None => Vec::new(),
    }
}

fn counter(recorded: &Recorded, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match recorded.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        Some(other) => panic!("{name}: not a counter: {other:?}"),
        None => 0,
    }
}

fn gauge(recorded: &Recorded, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    match recorded.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        Some(other) => panic!("{name}: not a gauge: {other:?}"),
        None => None,
    }
}

fn request(n: u32, client: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash(n), Utc::now() + Duration::seconds(600), "p")
        .with_client_id(client)
}

/// store, get, a wrong client, the right client, a reuse, an unknown hash, a duplicate, and
/// an expired request (`expired`, stored by the caller), on any store.
async fn sequence<S: PushedAuthorizationRequestStore>(store: &S, expired: &str) {
    let a = request(1, "client-a");
    store.store(&a).await.unwrap();
    store.store(&request(2, "client-a")).await.unwrap();
    let hash_a = &a.reference_value_hash;
    assert!(store.get_by_hash(hash_a).await.unwrap().is_some());
    assert_eq!(
        store.consume_for_client(hash_a, "client-b").await.unwrap(),
        Consumption::WrongClient
    );
    assert_eq!(
        store.consume_for_client(hash_a, "client-a").await.unwrap(),
        Consumption::Consumed(a.clone())
    );
    assert!(matches!(
        store.consume_for_client(hash_a, "client-a").await.unwrap(),
        Consumption::AlreadyConsumed { .. }
    ));
    // consume_by_hash answers only an Option, but its outcome is counted as well.
    assert_eq!(store.consume_by_hash(hash_a).await.unwrap(), None);
    assert_eq!(store.consume_by_hash(&hash(99)).await.unwrap(), None);
    assert!(matches!(store.store(&a).await, Err(StoreError::Duplicate)));
    assert_eq!(
        store.consume_for_client(expired, "client-a").await.unwrap(),
        Consumption::Expired
    );
}

/// What both stores must have recorded after `sequence`, `stored` successful stores in all
/// and a cleanup of `cleaned` rows.
fn check(recorded: &Recorded, system: &str, stored: u64, cleaned: u64) {
    let system_label = [("db.system.name", system)];
    let samples = |operation, error_type| durations(recorded, system, operation, error_type);
    // One sample per operation, with error.type only on the failed one.
    assert_eq!(samples("store", None).len() as u64, stored, "{recorded:#?}");
    assert_eq!(samples("store", Some("duplicate")).len(), 1);
    assert_eq!(samples("get_by_hash", None).len(), 1);
    assert_eq!(samples("consume_for_client", None).len(), 4);
    assert_eq!(samples("consume_by_hash", None).len(), 2);
    for operation in [
        "store",
        "get_by_hash",
        "consume_for_client",
        "consume_by_hash",
    ] {
        for seconds in samples(operation, None) {
            assert!(
                seconds.is_finite() && (0.0..60.0).contains(&seconds),
                "{operation}: {seconds}"
            );
        }
    }
    let count = |name| counter(recorded, name, &system_label);
    assert_eq!(count("par_store.requests.stored"), stored);
    assert_eq!(count("par_store.requests.wrong_client"), 1);
    assert_eq!(count("par_store.requests.consumed"), 1);
    // consume_for_client, then consume_by_hash of the same request
    assert_eq!(count("par_store.requests.already_consumed"), 2);
    assert_eq!(count("par_store.requests.not_found"), 1);
    assert_eq!(count("par_store.requests.expired"), 1);
    assert_eq!(
        counter(recorded, "par_store.requests.cleaned", &[]),
        cleaned
    );
}

#[tokio::test]
async fn memory_store_records_durations_and_counters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let store = MemoryStore::new();
    // Expires in one second; consumed after it has passed.
    let expired = PushedAuthorizationRequest::new(hash(50), Utc::now() + Duration::seconds(1), "p");
    store.store(&expired).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(1100)).await;
    sequence(&store, &expired.reference_value_hash).await;
    // Removes everything left: request 1's marker, request 2 and the extra one.
    store.store(&request(3, "client-c")).await.unwrap();
    let removed = store
        .delete_expired_as_of(Utc::now() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(removed, 3);

    let recorded = recorded(&snapshotter);
    // the expiring request, requests 1 and 2, request 3
    check(&recorded, "memory", 4, 3);
}

#[tokio::test]
async fn postgres_store_records_durations_counters_and_pool_gauges() {
    let db = TestDb::new().await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    // The store's own pool, whose gauges it records.
    let store = PostgresStoreOptions::new()
        .max_connections(4)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    // Three requests that expired a minute ago, inserted behind the store's back.
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'expired-' || n, now() - interval '1 minute', 'p' FROM generate_series(1, 3) AS n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sequence(&store, "expired-1").await;
    // The other two expired rows.
    assert_eq!(store.delete_expired().await.unwrap(), 2);

    let recorded = recorded(&snapshotter);
    check(&recorded, "postgresql", 2, 2);

    let pool = ("db.client.connection.pool.name", "par_store");
    let connections = |state| {
        gauge(
            &recorded,
            "db.client.connection.count",
            &[pool, ("db.client.connection.state", state)],
        )
    };
    // Sampled last when the last operation gave its connection back.
    assert_eq!(connections("used"), Some(0.0), "{recorded:#?}");
    assert!(connections("idle").is_some_and(|idle| idle >= 1.0));
    assert_eq!(
        gauge(&recorded, "db.client.connection.pending_requests", &[pool]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_store_registers_its_metrics_with_the_recorder_of_its_first_operation() {
    // src/metrics.rs: "A store registers its metrics with the recorder at its first
    // operation (the durations of successful operations and the request counters; a
    // failure's duration is looked up each time): install the recorder before the store
    // serves. Clones share the registration; a store built later registers with the
    // recorder of its own first operation." And: "Each pool registers them [the connection
    // gauges] with the recorder at its first operation".
    let db = TestDb::new().await;
    let options = PostgresStoreOptions::new().max_connections(2);
    let store = options.connect_with(db.options.clone()).await.unwrap();
    // The first operation, with no recorder for this thread.
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let clone = store.clone();
    assert_eq!(store.get_by_hash(&hash(2)).await.unwrap(), None);
    clone.store(&request(3, "client-a")).await.unwrap();
    assert_eq!(
        clone
            .consume_for_client(&hash(3), "client-a")
            .await
            .unwrap()
            .as_str(),
        "consumed"
    );
    // A failure is looked up in the recorder of the moment: the recorder works on this
    // thread.
    let expired = PushedAuthorizationRequest::new(hash(4), Utc::now() - Duration::seconds(1), "p");
    assert!(matches!(
        store.store(&expired).await,
        Err(StoreError::InvalidInput { .. })
    ));
    // A store built now registers with this recorder.
    let later = options.connect_with(db.options.clone()).await.unwrap();
    assert_eq!(later.get_by_hash(&hash(5)).await.unwrap(), None);

    let recorded = recorded(&snapshotter);
    assert_eq!(
        durations(&recorded, "postgresql", "store", Some("invalid_input")).len(),
        1,
        "{recorded:#?}"
    );
    assert_eq!(
        durations(&recorded, "postgresql", "get_by_hash", None).len(),
        1,
        "only the later store's: {recorded:#?}"
    );
    // The first store's successes, its counters and its pool's gauges went to the recorder of
    // its first operation (none), not this one; the later store's pool registered here.
    assert!(
        durations(&recorded, "postgresql", "store", None).is_empty()
            && durations(&recorded, "postgresql", "consume_for_client", None).is_empty(),
        "{recorded:#?}"
    );
    // (The later store registered its counters too, at 0.)
    let system = [("db.system.name", "postgresql")];
    assert_eq!(
        counter(&recorded, "par_store.requests.stored", &system)
            + counter(&recorded, "par_store.requests.consumed", &system),
        0,
        "{recorded:#?}"
    );
    let pool = ("db.client.connection.pool.name", "par_store");
    let used = gauge(
        &recorded,
        "db.client.connection.count",
        &[pool, ("db.client.connection.state", "used")],
    );
    assert_eq!(used, Some(0.0), "the later store's pool: {recorded:#?}");
}
