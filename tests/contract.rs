//! The store contract, run against every store: PostgreSQL (a fresh database per test) and
//! memory. Each test checks one behaviour of `PushedAuthorizationRequestStore`.

mod common;

use chrono::{Duration, Utc};
use par_store::{
    MemoryStore, PostgresStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore,
    StoreError,
};
use std::sync::Arc;

/// What the contract needs beyond the trait: one cleanup pass.
#[async_trait::async_trait]
trait Backend: PushedAuthorizationRequestStore + Clone + 'static {
    async fn delete_expired(&self) -> Result<u64, StoreError>;
}

#[async_trait::async_trait]
impl Backend for PostgresStore {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        PostgresStore::delete_expired(self).await
    }
}

#[async_trait::async_trait]
impl Backend for MemoryStore {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        MemoryStore::delete_expired(self).await
    }
}

use common::hash;

fn live(n: u32) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash(n),
        Utc::now() + Duration::seconds(600),
        format!("client_id=client-{n}&response_type=code&scope=openid"),
    )
}

/// A request that expires shortly: stored while live, expired after `wait_until_expired`.
fn short_lived(n: u32) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash(n), Utc::now() + Duration::milliseconds(300), "p=1")
}

async fn wait_until_expired() {
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
}

fn invalid_field(result: Result<(), StoreError>) -> &'static str {
    match result {
        Err(StoreError::InvalidInput { field, .. }) => field.as_str(),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

async fn round_trip_returns_what_was_stored<S: Backend>(store: S) {
    let request = live(1);
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .get_by_hash(&request.reference_value_hash)
            .await
            .unwrap(),
        Some(request.clone())
    );
    assert_eq!(
        store
            .consume_by_hash(&request.reference_value_hash)
            .await
            .unwrap(),
        Some(request)
    );
}

async fn expiry_is_kept_to_the_microsecond<S: Backend>(store: S) {
    let expires_at = Utc::now() + Duration::seconds(600) + Duration::nanoseconds(123_456_789);
    // Built without `new`, which would already truncate.
    let request = PushedAuthorizationRequest {
        reference_value_hash: hash(1),
        expires_at,
        parameters: "p".into(),
    };
    store.store(&request).await.unwrap();
    let read = store.get_by_hash(&hash(1)).await.unwrap().unwrap();
    assert_eq!(
        read.expires_at.timestamp_micros(),
        expires_at.timestamp_micros()
    );
    assert_eq!(read.expires_at.timestamp_subsec_nanos() % 1_000, 0);
}

async fn get_does_not_consume<S: Backend>(store: S) {
    let request = live(1);
    store.store(&request).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            store.get_by_hash(&hash(1)).await.unwrap(),
            Some(request.clone())
        );
    }
    assert_eq!(
        store.consume_by_hash(&hash(1)).await.unwrap(),
        Some(request)
    );
}

async fn consume_is_single_use<S: Backend>(store: S) {
    store.store(&live(1)).await.unwrap();
    assert!(store.consume_by_hash(&hash(1)).await.unwrap().is_some());
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), None);
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn unknown_hash_is_not_found<S: Backend>(store: S) {
    store.store(&live(1)).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(2)).await.unwrap(), None);
    assert_eq!(store.consume_by_hash(&hash(2)).await.unwrap(), None);
    assert!(store.get_by_hash(&hash(1)).await.unwrap().is_some());
}

async fn duplicate_is_refused_and_the_first_kept<S: Backend>(store: S) {
    let first = live(1);
    store.store(&first).await.unwrap();
    let second =
        PushedAuthorizationRequest::new(hash(1), Utc::now() + Duration::seconds(900), "other");
    assert!(matches!(
        store.store(&second).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(first));
}

async fn duplicate_of_an_expired_uncleaned_request_is_refused<S: Backend>(store: S) {
    store.store(&short_lived(1)).await.unwrap();
    wait_until_expired().await;
    assert!(matches!(
        store.store(&live(1)).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn bad_hashes_are_refused_and_nothing_stored<S: Backend>(store: S) {
    let too_long = "h".repeat(129);
    for bad in [
        "",
        "nul\0inside",
        "line\nbreak",
        "\u{7f}",
        too_long.as_str(),
    ] {
        let request = PushedAuthorizationRequest::new(bad, Utc::now() + Duration::seconds(60), "p");
        assert_eq!(
            invalid_field(store.store(&request).await),
            "reference_value_hash",
            "{bad:?}"
        );
        // Look-ups with a hash that can never be stored: not found, never a database error.
        assert_eq!(store.get_by_hash(bad).await.unwrap(), None, "{bad:?}");
        assert_eq!(store.consume_by_hash(bad).await.unwrap(), None, "{bad:?}");
    }
    let longest = "h".repeat(128);
    store
        .store(&PushedAuthorizationRequest::new(
            longest.as_str(),
            Utc::now() + Duration::seconds(60),
            "p",
        ))
        .await
        .unwrap();
    assert!(store.get_by_hash(&longest).await.unwrap().is_some());
}

async fn parameters_with_nul_are_refused<S: Backend>(store: S) {
    let request =
        PushedAuthorizationRequest::new(hash(1), Utc::now() + Duration::seconds(60), "a=1\0b=2");
    assert_eq!(invalid_field(store.store(&request).await), "parameters");
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn oversized_parameters_are_refused<S: Backend>(store: S) {
    let at_limit = "p".repeat(par_store::DEFAULT_MAX_PARAMETERS_LEN);
    let over = "p".repeat(par_store::DEFAULT_MAX_PARAMETERS_LEN + 1);
    let future = Utc::now() + Duration::seconds(60);
    let refused = store
        .store(&PushedAuthorizationRequest::new(hash(1), future, over))
        .await;
    assert_eq!(invalid_field(refused), "parameters");
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    store
        .store(&PushedAuthorizationRequest::new(
            hash(2),
            future,
            at_limit.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_by_hash(&hash(2))
            .await
            .unwrap()
            .unwrap()
            .parameters,
        at_limit
    );
}

async fn expiry_not_in_the_future_is_refused<S: Backend>(store: S) {
    for expires_at in [
        Utc::now(),
        Utc::now() - Duration::seconds(1),
        chrono::DateTime::<Utc>::MIN_UTC,
    ] {
        let request = PushedAuthorizationRequest::new(hash(1), expires_at, "p");
        assert_eq!(invalid_field(store.store(&request).await), "expires_at");
    }
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn store_works_after_bad_input<S: Backend>(store: S) {
    let bad = PushedAuthorizationRequest::new(hash(1), Utc::now() + Duration::seconds(60), "\0");
    assert!(store.store(&bad).await.is_err());
    let good = live(1);
    store.store(&good).await.unwrap();
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), Some(good));
}

async fn expired_request_is_never_returned_by_get<S: Backend>(store: S) {
    store.store(&short_lived(1)).await.unwrap();
    assert!(store.get_by_hash(&hash(1)).await.unwrap().is_some());
    wait_until_expired().await;
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn expired_request_is_not_consumed_but_removed<S: Backend>(store: S) {
    store.store(&short_lived(1)).await.unwrap();
    store.store(&short_lived(2)).await.unwrap();
    wait_until_expired().await;
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), None);
    // consume removed the expired #1; only #2 is left for cleanup.
    assert_eq!(store.delete_expired().await.unwrap(), 1);
}

async fn delete_expired_removes_only_expired_requests<S: Backend>(store: S) {
    for n in 0..5 {
        store.store(&short_lived(n)).await.unwrap();
    }
    for n in 10..13 {
        store.store(&live(n)).await.unwrap();
    }
    wait_until_expired().await;
    assert_eq!(store.delete_expired().await.unwrap(), 5);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    for n in 10..13 {
        assert!(store.get_by_hash(&hash(n)).await.unwrap().is_some());
    }
}

async fn exactly_one_of_32_concurrent_consumers_wins<S: Backend>(store: S) {
    for round in 0..100 {
        store.store(&live(round)).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let consumers: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.consume_by_hash(&hash(round)).await.unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for consumer in consumers {
            if consumer.await.unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

async fn awkward_text_round_trips_byte_for_byte<S: Backend>(store: S) {
    let cases = [
        (
            "'; DROP TABLE pushed_authorization_requests; --",
            "a'b\"c\\d$1$$ /* x */ -- y",
        ),
        ("$1", "%s %d {0} \\x00 \\\\"),
        (
            "h\u{e9}\u{4e2d}\u{1f600}",
            "\u{202e}right-to-left \u{feff} \u{1f600} \u{7}bell",
        ),
        ("back\\slash\"quote`tick", "line\r\nbreak\ttab"),
    ];
    for (n, (hash, parameters)) in cases.iter().enumerate() {
        let has_control = hash.chars().any(char::is_control);
        assert!(!has_control, "case {n} must be a storable hash");
        let request =
            PushedAuthorizationRequest::new(*hash, Utc::now() + Duration::seconds(60), *parameters);
        store.store(&request).await.unwrap();
        assert_eq!(
            store.get_by_hash(hash).await.unwrap(),
            Some(request.clone()),
            "case {n}"
        );
    }
    for (hash, parameters) in cases {
        let read = store.consume_by_hash(hash).await.unwrap().unwrap();
        assert_eq!(read.parameters.as_bytes(), parameters.as_bytes());
    }
}

async fn usable_as_a_trait_object<S: Backend>(store: S) {
    let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(store);
    store.store(&live(1)).await.unwrap();
    assert!(store.consume_by_hash(&hash(1)).await.unwrap().is_some());
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::common::TestDb::with_pool(
                        par_store::sqlx::postgres::PgPoolOptions::new().max_connections(32),
                    )
                    .await;
                    super::$name(db.store()).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(par_store::MemoryStore::new()).await;
                }
            )*
        }
    };
}

contract!(
    round_trip_returns_what_was_stored,
    expiry_is_kept_to_the_microsecond,
    get_does_not_consume,
    consume_is_single_use,
    unknown_hash_is_not_found,
    duplicate_is_refused_and_the_first_kept,
    duplicate_of_an_expired_uncleaned_request_is_refused,
    bad_hashes_are_refused_and_nothing_stored,
    parameters_with_nul_are_refused,
    oversized_parameters_are_refused,
    expiry_not_in_the_future_is_refused,
    store_works_after_bad_input,
    expired_request_is_never_returned_by_get,
    expired_request_is_not_consumed_but_removed,
    delete_expired_removes_only_expired_requests,
    exactly_one_of_32_concurrent_consumers_wins,
    awkward_text_round_trips_byte_for_byte,
    usable_as_a_trait_object,
);
