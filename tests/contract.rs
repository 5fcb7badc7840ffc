//! The store contract, run against every store: PostgreSQL (a fresh database per test),
//! memory, and PostgreSQL distributed by Citus (a fresh schema per test). Each test checks
//! one behaviour of `PushedAuthorizationRequestStore`.

mod common;

use chrono::{DateTime, Duration, Utc};
use par_store::{
    MemoryStore, PostgresStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore,
    StoreError,
};
use std::sync::Arc;

/// What the contract needs beyond the trait: one cleanup pass, the lifetime bound, and the
/// operations on client-bound and replaceable requests, which both stores have as inherent
/// methods.
#[async_trait::async_trait]
trait Backend: PushedAuthorizationRequestStore + Clone + 'static {
    async fn delete_expired(&self) -> Result<u64, StoreError>;
    fn max_lifetime(self, lifetime: std::time::Duration) -> Self;
    async fn store_or_replace(
        &self,
        request: &PushedAuthorizationRequest,
    ) -> Result<(), StoreError>;
    async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError>;
    async fn delete_expired_as_of(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
}

macro_rules! backend {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl Backend for $store {
            async fn delete_expired(&self) -> Result<u64, StoreError> {
                <$store>::delete_expired(self).await
            }
            fn max_lifetime(self, lifetime: std::time::Duration) -> Self {
                <$store>::max_lifetime(self, lifetime)
            }
            async fn store_or_replace(
                &self,
                request: &PushedAuthorizationRequest,
            ) -> Result<(), StoreError> {
                <$store>::store_or_replace(self, request).await
            }
            async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError> {
                <$store>::delete_by_client_id(self, client_id).await
            }
            async fn delete_expired_as_of(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
                <$store>::delete_expired_as_of(self, cutoff).await
            }
        }
    };
}
backend!(PostgresStore);
backend!(MemoryStore);

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
        client_id: None,
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

async fn lifetime_beyond_max_lifetime_is_refused<S: Backend>(store: S) {
    // The default bound, 1 hour.
    assert_eq!(par_store::DEFAULT_MAX_LIFETIME.as_secs(), 3600);
    for expires_at in [
        Utc::now() + Duration::seconds(3601),
        Utc::now() + Duration::days(365),
        chrono::DateTime::<Utc>::MAX_UTC,
    ] {
        let request = PushedAuthorizationRequest::new(hash(1), expires_at, "p");
        assert_eq!(invalid_field(store.store(&request).await), "expires_at");
    }
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    let within = Utc::now() + Duration::seconds(3590);
    store
        .store(&PushedAuthorizationRequest::new(hash(1), within, "p"))
        .await
        .unwrap();
    // A store's own bound.
    let store = store.max_lifetime(std::time::Duration::from_secs(30));
    let minute = PushedAuthorizationRequest::new(hash(2), Utc::now() + Duration::seconds(60), "p");
    assert_eq!(invalid_field(store.store(&minute).await), "expires_at");
    let seconds = PushedAuthorizationRequest::new(hash(2), Utc::now() + Duration::seconds(20), "p");
    store.store(&seconds).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(2)).await.unwrap(), Some(seconds));
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

fn bound(n: u32, client_id: &str) -> PushedAuthorizationRequest {
    live(n).with_client_id(client_id)
}

async fn client_binding_is_returned_by_every_read<S: Backend>(store: S) {
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    store.store(&live(2)).await.unwrap();
    let read = store.get_by_hash(&hash(1)).await.unwrap().unwrap();
    assert_eq!(read.client_id.as_deref(), Some("client-a"));
    assert_eq!(read, request);
    let unbound = store.get_by_hash(&hash(2)).await.unwrap().unwrap();
    assert_eq!(unbound.client_id, None);
    assert_eq!(
        store.consume_by_hash(&hash(1)).await.unwrap(),
        Some(request)
    );
    let unbound = store.consume_by_hash(&hash(2)).await.unwrap().unwrap();
    assert_eq!(unbound.client_id, None);
}

async fn bad_client_ids_are_refused_and_nothing_stored<S: Backend>(store: S) {
    let too_long = "c".repeat(par_store::MAX_CLIENT_ID_LEN + 1);
    for client_id in ["", "nul\0", "line\nbreak", too_long.as_str()] {
        let request = bound(1, client_id);
        assert_eq!(invalid_field(store.store(&request).await), "client_id");
        assert_eq!(
            invalid_field(store.store_or_replace(&request).await),
            "client_id"
        );
        assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    }
    let longest = bound(1, &"c".repeat(par_store::MAX_CLIENT_ID_LEN));
    store.store(&longest).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(longest));
}

async fn store_or_replace_inserts_then_replaces<S: Backend>(store: S) {
    let first = bound(1, "client-a");
    store.store_or_replace(&first).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(first));
    let second = PushedAuthorizationRequest::new(
        hash(1),
        Utc::now() + Duration::seconds(900),
        "replaced parameters",
    )
    .with_client_id("client-b");
    store.store_or_replace(&second).await.unwrap();
    assert_eq!(
        store.get_by_hash(&hash(1)).await.unwrap(),
        Some(second.clone())
    );
    // The replacement carries its own binding: it is no longer the first client's.
    assert_eq!(store.delete_by_client_id("client-a").await.unwrap(), 0);
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), Some(second));
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), None);
}

async fn store_or_replace_revives_an_expired_uncleaned_request<S: Backend>(store: S) {
    store.store(&short_lived(1)).await.unwrap();
    wait_until_expired().await;
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    let fresh = live(1);
    store.store_or_replace(&fresh).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(fresh));
}

async fn store_or_replace_applies_the_input_rules<S: Backend>(store: S) {
    let first = live(1);
    store.store(&first).await.unwrap();
    let past = PushedAuthorizationRequest::new(hash(1), Utc::now() - Duration::seconds(1), "p");
    assert_eq!(
        invalid_field(store.store_or_replace(&past).await),
        "expires_at"
    );
    let nul = PushedAuthorizationRequest::new(hash(1), Utc::now() + Duration::seconds(60), "a\0");
    assert_eq!(
        invalid_field(store.store_or_replace(&nul).await),
        "parameters"
    );
    let empty = PushedAuthorizationRequest::new("", Utc::now() + Duration::seconds(60), "p");
    assert_eq!(
        invalid_field(store.store_or_replace(&empty).await),
        "reference_value_hash"
    );
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(first));
}

async fn delete_by_client_id_removes_that_clients_requests_only<S: Backend>(store: S) {
    store.store(&bound(1, "client-a")).await.unwrap();
    store.store(&bound(2, "client-a")).await.unwrap();
    // Expired and not yet cleaned: removed too.
    store
        .store(&short_lived(3).with_client_id("client-a"))
        .await
        .unwrap();
    store.store(&bound(4, "client-b")).await.unwrap();
    store.store(&live(5)).await.unwrap();
    wait_until_expired().await;
    assert_eq!(store.delete_by_client_id("client-a").await.unwrap(), 3);
    for n in [1, 2, 3] {
        assert_eq!(store.consume_by_hash(&hash(n)).await.unwrap(), None, "{n}");
    }
    assert!(store.get_by_hash(&hash(4)).await.unwrap().is_some());
    assert!(store.get_by_hash(&hash(5)).await.unwrap().is_some());
    assert_eq!(store.delete_by_client_id("client-a").await.unwrap(), 0);
    // Matching is exact: no prefix, no case folding.
    assert_eq!(store.delete_by_client_id("client-").await.unwrap(), 0);
    assert_eq!(store.delete_by_client_id("CLIENT-B").await.unwrap(), 0);
    assert_eq!(store.delete_by_client_id("client-b").await.unwrap(), 1);
    assert!(store.get_by_hash(&hash(5)).await.unwrap().is_some());
}

async fn delete_by_unstorable_client_id_removes_nothing<S: Backend>(store: S) {
    // Requests without a binding are never matched, not even by the empty id.
    store.store(&live(1)).await.unwrap();
    store.store(&bound(2, "client-a")).await.unwrap();
    let too_long = "c".repeat(par_store::MAX_CLIENT_ID_LEN + 1);
    for client_id in ["", "client-a\0", too_long.as_str()] {
        assert_eq!(store.delete_by_client_id(client_id).await.unwrap(), 0);
    }
    assert!(store.get_by_hash(&hash(1)).await.unwrap().is_some());
    assert!(store.get_by_hash(&hash(2)).await.unwrap().is_some());
}

async fn delete_expired_as_of_uses_the_given_cutoff<S: Backend>(store: S) {
    let now = Utc::now();
    for (n, seconds) in [(1, 60), (2, 120), (3, 600)] {
        let request =
            PushedAuthorizationRequest::new(hash(n), now + Duration::seconds(seconds), "p");
        store.store(&request).await.unwrap();
    }
    assert_eq!(store.delete_expired_as_of(now).await.unwrap(), 0);
    // Inclusive: a request expiring exactly at the cutoff is removed.
    let cutoff = store
        .get_by_hash(&hash(2))
        .await
        .unwrap()
        .unwrap()
        .expires_at;
    assert_eq!(store.delete_expired_as_of(cutoff).await.unwrap(), 2);
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    assert_eq!(store.get_by_hash(&hash(2)).await.unwrap(), None);
    assert!(store.get_by_hash(&hash(3)).await.unwrap().is_some());
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
        /// On a Citus cluster (tests/common/citus.rs): a schema per test, the table
        /// distributed by `distribute_on_citus`. Skipped with one line where Citus is not
        /// installed, outside CI.
        mod citus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(cluster) = crate::common::citus::citus() else { return };
                    let schema = crate::common::citus::CitusSchema::new(cluster).await;
                    let store = par_store::PostgresStore::new(schema.pool(32).await);
                    assert!(store.distribute_on_citus().await.unwrap());
                    super::$name(store).await;
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
    lifetime_beyond_max_lifetime_is_refused,
    store_works_after_bad_input,
    expired_request_is_never_returned_by_get,
    expired_request_is_not_consumed_but_removed,
    delete_expired_removes_only_expired_requests,
    exactly_one_of_32_concurrent_consumers_wins,
    awkward_text_round_trips_byte_for_byte,
    usable_as_a_trait_object,
    client_binding_is_returned_by_every_read,
    bad_client_ids_are_refused_and_nothing_stored,
    store_or_replace_inserts_then_replaces,
    store_or_replace_revives_an_expired_uncleaned_request,
    store_or_replace_applies_the_input_rules,
    delete_by_client_id_removes_that_clients_requests_only,
    delete_by_unstorable_client_id_removes_nothing,
    delete_expired_as_of_uses_the_given_cutoff,
);
