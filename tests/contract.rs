//! The store contract, run against every way the store runs (one module per mode, each with
//! the same tests; `cargo test --test contract MODE::` runs one):
//!
//! | mode | store |
//! |---|---|
//! | `memory` | `MemoryStore` |
//! | `owned_pool` | `PostgresStoreOptions::connect_with` (the store's own pool, as the README recommends) |
//! | `caller_pool` | `PostgresStoreOptions::with_pool(PgPool)` (`PostgresStore::new`) |
//! | `bouncer_pooler_mode` | pooler mode (`pooler_mode(true)`) through PgBouncer 1.18 in transaction mode |
//! | `bouncer_prepared` | the default mode (named prepared statements) through PgBouncer 1.25.2 in transaction mode, `max_prepared_statements = 100` |
//! | `protected_memory` | `ProtectedStore` over `MemoryStore` |
//! | `protected_owned_pool` | `ProtectedStore` over the store's own pool |
//! | `citus` | the store's own pool to a Citus coordinator (tests/common/citus.rs), the table distributed by `distribute_on_citus`, a schema per test |
//!
//! Every PostgreSQL mode gets a fresh database per test, migrated directly (never through a
//! pooler). The PgBouncer modes share one PgBouncer per flavour per test binary
//! (tests/common/pgbouncer.rs); without its binary they are skipped outside CI, each with a
//! line saying so, and fail under `CI=true`; so does the `citus` mode without Citus. Each
//! test checks one behaviour of `PushedAuthorizationRequestStore` and the operations of
//! `Backend` below.

mod common;

use chrono::{DateTime, Duration, Utc};
use par_store::protect::{KeyRing, ProtectionKey};
use par_store::{
    ConsumePolicy, Consumption, ExpiredRequestCleaner, Lookup, MemoryStore, PostgresStore,
    PostgresStoreOptions, ProtectedStore, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, PushedAuthorizationRequestStoreExt, StoreError,
};
use std::sync::Arc;

/// What the contract needs beyond the traits (`PushedAuthorizationRequestStoreExt` has the
/// operations on client-bound and replaceable requests): one cleanup pass, the lifetime
/// bound, the longest parameters the store takes, the consumed markers setting.
#[async_trait::async_trait]
trait Backend: PushedAuthorizationRequestStoreExt + Clone + 'static {
    async fn delete_expired(&self) -> Result<u64, StoreError>;
    fn max_request_lifetime(self, lifetime: std::time::Duration) -> Self;
    /// The longest `parameters` the store accepts as it is set up.
    fn parameters_limit(&self) -> usize {
        par_store::PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN
    }
    fn consumed_markers(self, enabled: bool) -> Self;
    fn consume_policy(self, policy: ConsumePolicy) -> Self;
}

#[async_trait::async_trait]
impl Backend for MemoryStore {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        MemoryStore::delete_expired(self).await
    }
    fn max_request_lifetime(self, lifetime: std::time::Duration) -> Self {
        MemoryStore::max_request_lifetime(self, lifetime)
    }
    fn consumed_markers(self, enabled: bool) -> Self {
        MemoryStore::consumed_markers(self, enabled)
    }
    fn consume_policy(self, policy: ConsumePolicy) -> Self {
        MemoryStore::consume_policy(self, policy)
    }
}

/// A `PostgresStore` and how it was made: its settings live on `PostgresStoreOptions` only,
/// so a test that changes one makes another store on the same database with the changed
/// options. Every operation is the store's own (forwarded, none left to a default).
#[derive(Clone, Debug)]
struct Pg {
    store: PostgresStore,
    options: PostgresStoreOptions,
    to: To,
}

// Built once per test: the size difference does not matter (clippy flags it in a build of
// sqlx without its `macros` and `sqlx-toml` features).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum To {
    /// The store's own pool, to this address.
    Connect(Box<par_store::sqlx::postgres::PgConnectOptions>),
    /// The caller's pool.
    Pool(par_store::sqlx::PgPool),
}

impl Pg {
    fn new(options: PostgresStoreOptions, store: PostgresStore, to: To) -> Self {
        Pg { store, options, to }
    }

    fn with(self, change: impl FnOnce(PostgresStoreOptions) -> PostgresStoreOptions) -> Self {
        let options = change(self.options);
        let store = match &self.to {
            To::Connect(to) => options.connect_lazy_with(to.as_ref().clone()),
            To::Pool(pool) => options.with_pool(pool.clone()),
        };
        Pg::new(options, store, self.to)
    }
}

#[async_trait::async_trait]
impl PushedAuthorizationRequestStore for Pg {
    async fn store(&self, request: &PushedAuthorizationRequest) -> Result<(), StoreError> {
        self.store.store(request).await
    }
    async fn consume_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.store.consume_by_hash(hash).await
    }
    async fn get_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.store.get_by_hash(hash).await
    }
    async fn get_for_client(&self, hash: &str, client_id: &str) -> Result<Lookup, StoreError> {
        self.store.get_for_client(hash, client_id).await
    }
    async fn consume_for_client(
        &self,
        hash: &str,
        client_id: &str,
    ) -> Result<Consumption, StoreError> {
        self.store.consume_for_client(hash, client_id).await
    }
    async fn consume_in_session(
        &self,
        hash: &str,
        client_id: &str,
        session_binding: &str,
    ) -> Result<Consumption, StoreError> {
        self.store
            .consume_in_session(hash, client_id, session_binding)
            .await
    }
}

#[async_trait::async_trait]
impl PushedAuthorizationRequestStoreExt for Pg {
    async fn store_or_replace(
        &self,
        request: &PushedAuthorizationRequest,
    ) -> Result<(), StoreError> {
        self.store.store_or_replace(request).await
    }
    async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError> {
        self.store.delete_by_client_id(client_id).await
    }
    async fn delete_expired_as_of(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.store.delete_expired_as_of(cutoff).await
    }
}

#[async_trait::async_trait]
impl ExpiredRequestCleaner for Pg {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.store.delete_expired_batch(batch_size).await
    }
}

#[async_trait::async_trait]
impl Backend for Pg {
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.store.delete_expired().await
    }
    fn max_request_lifetime(self, lifetime: std::time::Duration) -> Self {
        self.with(|options| options.max_request_lifetime(lifetime))
    }
    fn consumed_markers(self, enabled: bool) -> Self {
        self.with(|options| options.consumed_markers(enabled))
    }
    fn consume_policy(self, policy: ConsumePolicy) -> Self {
        self.with(|options| options.consume_policy(policy))
    }
}

/// The protected stores' key id; the key is fixed, so that a store rebuilt with another
/// lifetime bound opens what it sealed before.
const KEY_ID: &str = "contract";

fn keys() -> KeyRing {
    KeyRing::new(ProtectionKey::new(KEY_ID, [7; 32]).unwrap())
}

macro_rules! protected_backend {
    ($inner:ty) => {
        #[async_trait::async_trait]
        impl Backend for ProtectedStore<$inner> {
            async fn delete_expired(&self) -> Result<u64, StoreError> {
                ProtectedStore::<$inner>::delete_expired(self).await
            }
            fn max_request_lifetime(self, lifetime: std::time::Duration) -> Self {
                ProtectedStore::new(
                    self.inner().clone().max_request_lifetime(lifetime),
                    self.keys().clone(),
                )
            }
            /// The inner store's default limit applies to the envelope: the parameters may
            /// be as long as fits in it.
            fn parameters_limit(&self) -> usize {
                par_store::protect::max_parameters_len_within(
                    par_store::PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN,
                    KEY_ID.len(),
                )
                .unwrap()
            }
            fn consumed_markers(self, enabled: bool) -> Self {
                ProtectedStore::new(
                    self.inner().clone().consumed_markers(enabled),
                    self.keys().clone(),
                )
            }
            fn consume_policy(self, policy: ConsumePolicy) -> Self {
                ProtectedStore::new(
                    self.inner().clone().consume_policy(policy),
                    self.keys().clone(),
                )
            }
        }
    };
}
protected_backend!(Pg);
protected_backend!(MemoryStore);

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
    // `new` would already truncate: the expiry is set afterwards.
    let mut request = PushedAuthorizationRequest::new(hash(1), expires_at, "p");
    request.expires_at = expires_at;
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
    let at_limit = "p".repeat(store.parameters_limit());
    let over = "p".repeat(store.parameters_limit() + 1);
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

async fn lifetime_beyond_max_request_lifetime_is_refused<S: Backend>(store: S) {
    // The default bound, 1 hour.
    assert_eq!(
        par_store::PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME.as_secs(),
        3600
    );
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
    let store = store.max_request_lifetime(std::time::Duration::from_secs(30));
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

/// Generic and `dyn` code reach the client-bound, replace and cutoff operations of every
/// store (the protected modes: of `ProtectedStore` over it).
async fn usable_as_an_extension_trait_object<S: Backend>(store: S) {
    let store: Arc<dyn PushedAuthorizationRequestStoreExt> = Arc::new(store);
    store.store_or_replace(&bound(1, "client-a")).await.unwrap();
    let replacing = bound(1, "client-b");
    store.store_or_replace(&replacing).await.unwrap();
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), Some(replacing));
    assert_eq!(store.delete_by_client_id("client-a").await.unwrap(), 0);
    assert_eq!(store.delete_by_client_id("client-b").await.unwrap(), 1);
    store.store(&live(2)).await.unwrap();
    assert_eq!(store.delete_expired_as_of(Utc::now()).await.unwrap(), 0);
    let after_expiry = Utc::now() + Duration::seconds(601);
    assert_eq!(store.delete_expired_as_of(after_expiry).await.unwrap(), 1);
}

/// The client every test's bound requests are bound to (`bound(n, CLIENT)`); a request stored
/// without a client is consumed by any.
const CLIENT: &str = "client-a";

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
    let too_long = "c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN + 1);
    for client_id in ["", "nul\0", "line\nbreak", too_long.as_str()] {
        let request = bound(1, client_id);
        assert_eq!(invalid_field(store.store(&request).await), "client_id");
        assert_eq!(
            invalid_field(store.store_or_replace(&request).await),
            "client_id"
        );
        assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
    }
    let longest = bound(
        1,
        &"c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN),
    );
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
    let too_long = "c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN + 1);
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

// Consumed markers and consumption outcomes (issue 18).

/// `consume_in_session` of request `n`, which must not fail.
async fn in_session<S: PushedAuthorizationRequestStore>(
    store: &S,
    n: u32,
    client_id: &str,
    session: &str,
) -> Consumption {
    store
        .consume_in_session(&hash(n), client_id, session)
        .await
        .unwrap()
}

/// The instant of an `AlreadyConsumed`, or a panic naming what came instead.
fn consumed_at(outcome: Consumption) -> DateTime<Utc> {
    match outcome {
        Consumption::AlreadyConsumed { consumed_at } => consumed_at,
        other => panic!("expected AlreadyConsumed, got {other:?}"),
    }
}

async fn a_second_consume_is_told_apart_from_an_unknown_request<S: Backend>(store: S) {
    let request = live(1);
    store.store(&request).await.unwrap();
    let before = Utc::now() - Duration::seconds(5);
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(request)
    );
    let after = Utc::now() + Duration::seconds(5);
    // The database's clock, within a generous margin of the test's.
    let first = consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap());
    assert!(before <= first && first <= after, "{first}");
    // The same instant every time: when it was consumed, not when it was asked.
    assert_eq!(
        consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap()),
        first
    );
    assert_eq!(
        consumed_at(store.consume_for_client(&hash(1), "anyone").await.unwrap()),
        first
    );
    assert_eq!(
        store.consume_for_client(&hash(2), CLIENT).await.unwrap(),
        Consumption::NotFound
    );
    assert_eq!(
        store.consume_for_client("", CLIENT).await.unwrap(),
        Consumption::NotFound
    );
}

async fn consume_by_hash_leaves_a_marker_too<S: Backend>(store: S) {
    let request = live(1);
    store.store(&request).await.unwrap();
    assert_eq!(
        store.consume_by_hash(&hash(1)).await.unwrap(),
        Some(request)
    );
    consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap());
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), None);
}

async fn a_consumed_request_is_never_returned_or_brought_back<S: Backend>(store: S) {
    for (n, by_client) in [(1, false), (2, true)] {
        let request = bound(n, "client-a");
        store.store(&request).await.unwrap();
        let consumed = if by_client {
            store
                .consume_for_client(&hash(n), "client-a")
                .await
                .unwrap()
                .into_consumed()
        } else {
            store.consume_by_hash(&hash(n)).await.unwrap()
        };
        assert_eq!(consumed, Some(request.clone()));
        assert_eq!(store.get_by_hash(&hash(n)).await.unwrap(), None);
        assert!(matches!(
            store.store(&request).await,
            Err(StoreError::Duplicate)
        ));
        // Not by insert-or-replace either, whatever it carries.
        assert!(matches!(
            store.store_or_replace(&request).await,
            Err(StoreError::Duplicate)
        ));
        let other = PushedAuthorizationRequest::new(
            hash(n),
            Utc::now() + Duration::seconds(900),
            "other parameters",
        );
        assert!(matches!(
            store.store_or_replace(&other).await,
            Err(StoreError::Duplicate)
        ));
        assert_eq!(store.get_by_hash(&hash(n)).await.unwrap(), None);
        consumed_at(store.consume_for_client(&hash(n), CLIENT).await.unwrap());
    }
}

async fn get_for_client_finds_a_live_request_of_that_client_or_of_none<S: Backend>(store: S) {
    let mine = bound(1, CLIENT);
    let unbound = live(2);
    store.store(&mine).await.unwrap();
    store.store(&unbound).await.unwrap();
    // As often as login and consent need: a read changes nothing.
    for _ in 0..3 {
        assert_eq!(
            store.get_for_client(&hash(1), CLIENT).await.unwrap(),
            Lookup::Found(mine.clone())
        );
        assert_eq!(
            store.get_for_client(&hash(2), "client-b").await.unwrap(),
            Lookup::Found(unbound.clone())
        );
    }
    assert_eq!(
        store.get_for_client(&hash(3), CLIENT).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(mine)
    );
    assert_eq!(
        store.consume_for_client(&hash(2), CLIENT).await.unwrap(),
        Consumption::Consumed(unbound)
    );
}

async fn get_for_client_answers_another_client_wrong_client_and_changes_nothing<S: Backend>(
    store: S,
) {
    let request = bound(1, CLIENT);
    store.store(&request).await.unwrap();
    for wrong in ["client-b", "client-", "CLIENT-A", "client-a "] {
        assert_eq!(
            store.get_for_client(&hash(1), wrong).await.unwrap(),
            Lookup::WrongClient,
            "{wrong:?}"
        );
    }
    assert_eq!(
        store.get_by_hash(&hash(1)).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(request)
    );
}

/// A reuse is reported at the first read (issue 28): a replayed `request_uri` reaches the
/// authorization endpoint's read, not its consume. The read changes nothing.
async fn get_for_client_reports_a_reuse_at_the_read<S: Backend>(store: S) {
    let request = bound(1, CLIENT);
    store.store(&request).await.unwrap();
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(request)
    );
    let consumed_at = consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap());
    for _ in 0..2 {
        assert_eq!(
            store.get_for_client(&hash(1), CLIENT).await.unwrap(),
            Lookup::AlreadyConsumed { consumed_at }
        );
    }
    // Another client learns nothing about it.
    assert_eq!(
        store.get_for_client(&hash(1), "client-b").await.unwrap(),
        Lookup::WrongClient
    );
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

/// An expired request is `Expired` at the read, and the read removes nothing: the consume
/// still finds it (and removes it).
async fn get_for_client_reports_an_expired_request_and_changes_nothing<S: Backend>(store: S) {
    store
        .store(&short_lived(1).with_client_id(CLIENT))
        .await
        .unwrap();
    wait_until_expired().await;
    for _ in 0..2 {
        assert_eq!(
            store.get_for_client(&hash(1), CLIENT).await.unwrap(),
            Lookup::Expired
        );
    }
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Expired
    );
    assert_eq!(
        store.get_for_client(&hash(1), CLIENT).await.unwrap(),
        Lookup::NotFound
    );
}

/// A client id that no request could be bound to is refused, as by `consume_for_client`.
async fn get_for_client_refuses_a_client_id_no_request_could_be_bound_to<S: Backend>(store: S) {
    store.store(&live(1)).await.unwrap();
    let too_long = "c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN + 1);
    for client_id in ["", "client-a\0", too_long.as_str()] {
        assert!(matches!(
            store.get_for_client(&hash(1), client_id).await,
            Err(StoreError::InvalidInput { .. })
        ));
    }
}

async fn consume_for_client_leaves_another_clients_request_untouched<S: Backend>(store: S) {
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    for wrong in ["client-b", "client-", "CLIENT-A", "client-a "] {
        assert_eq!(
            store.consume_for_client(&hash(1), wrong).await.unwrap(),
            Consumption::WrongClient,
            "{wrong:?}"
        );
    }
    assert_eq!(
        store.get_by_hash(&hash(1)).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(request)
    );
    // Once consumed, another client is still told WrongClient (it learns nothing new).
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-b")
            .await
            .unwrap(),
        Consumption::WrongClient
    );
    consumed_at(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
    );
}

async fn consume_for_client_consumes_a_request_stored_without_a_client<S: Backend>(store: S) {
    let request = live(1);
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(request)
    );
    consumed_at(
        store
            .consume_for_client(&hash(1), "client-b")
            .await
            .unwrap(),
    );
}

async fn consume_for_client_refuses_a_client_id_no_request_could_be_bound_to<S: Backend>(store: S) {
    store.store(&live(1)).await.unwrap();
    let too_long = "c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN + 1);
    for client_id in ["", "client-a\0", too_long.as_str()] {
        assert!(matches!(
            store.consume_for_client(&hash(1), client_id).await,
            Err(StoreError::InvalidInput { .. })
        ));
    }
    assert!(store.get_by_hash(&hash(1)).await.unwrap().is_some());
}

async fn an_expired_request_is_reported_expired_and_removed<S: Backend>(store: S) {
    store.store(&short_lived(1)).await.unwrap();
    store
        .store(&short_lived(2).with_client_id("client-a"))
        .await
        .unwrap();
    wait_until_expired().await;
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Expired
    );
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::NotFound
    );
    // Another client's expired request is left to cleanup.
    assert_eq!(
        store
            .consume_for_client(&hash(2), "client-b")
            .await
            .unwrap(),
        Consumption::WrongClient
    );
    assert_eq!(
        store
            .consume_for_client(&hash(2), "client-a")
            .await
            .unwrap(),
        Consumption::Expired
    );
    assert_eq!(store.delete_expired().await.unwrap(), 0);
}

async fn a_consumed_marker_lasts_until_expiry_and_cleanup_removes_it<S: Backend>(store: S) {
    // Cleanup against a cutoff given by the test, so that no clock or load decides it.
    let expires_at = Utc::now() + Duration::seconds(600);
    for n in 1..=2 {
        let request = PushedAuthorizationRequest::new(hash(n), expires_at, "p=1");
        store.store(&request).await.unwrap();
    }
    store
        .store(&PushedAuthorizationRequest::new(
            hash(3),
            expires_at + Duration::seconds(600),
            "p=3",
        ))
        .await
        .unwrap();
    for n in 1..=3 {
        assert!(matches!(
            store.consume_for_client(&hash(n), CLIENT).await.unwrap(),
            Consumption::Consumed(_)
        ));
    }
    // Cleanup leaves a marker alone until it expires.
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    let just_before = expires_at - Duration::milliseconds(1);
    assert_eq!(store.delete_expired_as_of(just_before).await.unwrap(), 0);
    assert_eq!(store.delete_expired_as_of(expires_at).await.unwrap(), 2);
    for n in 1..=2 {
        assert_eq!(
            store.consume_for_client(&hash(n), CLIENT).await.unwrap(),
            Consumption::NotFound
        );
    }
    consumed_at(store.consume_for_client(&hash(3), CLIENT).await.unwrap());
    // delete_by_client_id removes a client's markers as well.
    store.store(&bound(4, "client-a")).await.unwrap();
    store.consume_for_client(&hash(4), CLIENT).await.unwrap();
    assert_eq!(store.delete_by_client_id("client-a").await.unwrap(), 1);
    assert_eq!(
        store.consume_for_client(&hash(4), CLIENT).await.unwrap(),
        Consumption::NotFound
    );
}

async fn an_expired_marker_is_still_reported_until_cleanup<S: Backend>(store: S) {
    // Long enough to be consumed while live on a loaded machine; then waited out.
    let expires_at = Utc::now() + Duration::seconds(2);
    let request = PushedAuthorizationRequest::new(hash(1), expires_at, "p=1");
    store.store(&request).await.unwrap();
    assert!(matches!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(_)
    ));
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    // Consumed, then expired: the reuse is what matters, every time, until cleanup.
    consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap());
    consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap());
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::NotFound
    );
}

async fn with_markers_off_a_consumed_request_is_removed<S: Backend>(store: S) {
    let store = store.consumed_markers(false);
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-b")
            .await
            .unwrap(),
        Consumption::WrongClient
    );
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::Consumed(request.clone())
    );
    // 0.2's behaviour: gone, so a second consumption finds nothing, and the hash is free.
    assert_eq!(
        store.consume_for_client(&hash(1), CLIENT).await.unwrap(),
        Consumption::NotFound
    );
    store.store(&request).await.unwrap();
    assert_eq!(
        store.consume_by_hash(&hash(1)).await.unwrap(),
        Some(request)
    );
    assert_eq!(store.delete_expired().await.unwrap(), 0);
}

async fn of_32_concurrent_consumers_one_consumes_and_31_find_it_consumed<S: Backend>(store: S) {
    for round in 0..50 {
        store.store(&bound(round, "client-a")).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let consumers: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    if i % 2 == 0 {
                        store
                            .consume_for_client(&hash(round), CLIENT)
                            .await
                            .unwrap()
                    } else {
                        store
                            .consume_for_client(&hash(round), "client-a")
                            .await
                            .unwrap()
                    }
                })
            })
            .collect();
        let (mut consumed, mut already) = (0, 0);
        for consumer in consumers {
            match consumer.await.unwrap() {
                Consumption::Consumed(_) => consumed += 1,
                Consumption::AlreadyConsumed { .. } => already += 1,
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!((consumed, already), (1, 31), "round {round}");
    }
}

/// A store of another crate that implements only the three required methods:
/// `consume_for_client` and `consume_in_session` have default implementations over them (best effort: `Consumed` /
/// `NotFound` / `WrongClient` only).
struct ThreeMethods(MemoryStore);

#[async_trait::async_trait]
impl PushedAuthorizationRequestStore for ThreeMethods {
    async fn store(&self, request: &PushedAuthorizationRequest) -> Result<(), StoreError> {
        self.0.store(request).await
    }
    async fn consume_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.0.consume_by_hash(hash).await
    }
    async fn get_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.0.get_by_hash(hash).await
    }
}

#[tokio::test]
async fn the_default_consumptions_work_over_the_three_required_methods() {
    let store = ThreeMethods(MemoryStore::new());
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-b")
            .await
            .unwrap(),
        Consumption::WrongClient
    );
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(request)
    );
    // The defaults cannot tell a reuse from an unknown request.
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::NotFound
    );
    let unbound = live(2);
    store.store(&unbound).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(2), "client-b")
            .await
            .unwrap(),
        Consumption::Consumed(unbound)
    );
    // get_for_client's default reads through get_by_hash: it cannot tell a consumed request
    // from an unknown one either.
    let fourth = bound(4, "client-a");
    store.store(&fourth).await.unwrap();
    assert_eq!(
        store.get_for_client(&hash(4), "client-b").await.unwrap(),
        Lookup::WrongClient
    );
    assert_eq!(
        store.get_for_client(&hash(4), "client-a").await.unwrap(),
        Lookup::Found(fourth.clone())
    );
    assert_eq!(
        store.get_for_client(&hash(2), "client-b").await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(
        store.get_for_client(&hash(5), "client-a").await.unwrap(),
        Lookup::NotFound
    );
    // consume_in_session's default is consume_for_client: the binding is ignored and nothing
    // is consumed twice.
    let third = bound(3, "client-a");
    store.store(&third).await.unwrap();
    assert_eq!(
        in_session(&store, 3, "client-b", "session-1").await,
        Consumption::WrongClient
    );
    assert_eq!(
        in_session(&store, 3, "client-a", "session-1").await,
        Consumption::Consumed(third)
    );
    assert_eq!(
        in_session(&store, 3, "client-a", "session-1").await,
        Consumption::NotFound
    );
}

// Reload tolerance (issue 18 item 6): `consume_in_session` under `ConsumePolicy`.

/// A window no test outlives: what happens within it never depends on the machine's load.
fn long_window() -> ConsumePolicy {
    ConsumePolicy::ReloadWithin(std::time::Duration::from_secs(600))
}

async fn a_reload_within_the_window_by_the_same_session_gets_the_request_again<S: Backend>(
    store: S,
) {
    let store = store.consume_policy(long_window());
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            in_session(&store, 1, "client-a", "session-1").await,
            Consumption::Consumed(request.clone())
        );
        // Consumed all the same: never read, never stored again.
        assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
        assert!(matches!(
            store.store(&request).await,
            Err(StoreError::Duplicate)
        ));
        assert!(matches!(
            store.store_or_replace(&request).await,
            Err(StoreError::Duplicate)
        ));
    }
}

async fn within_the_window_every_other_consumption_finds_it_consumed<S: Backend>(store: S) {
    let store = store.consume_policy(long_window());
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(request.clone())
    );
    let first = consumed_at(in_session(&store, 1, "client-a", "session-2").await);
    assert_eq!(
        consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap()),
        first
    );
    assert_eq!(
        consumed_at(
            store
                .consume_for_client(&hash(1), "client-a")
                .await
                .unwrap()
        ),
        first
    );
    assert_eq!(store.consume_by_hash(&hash(1)).await.unwrap(), None);
    // Another client: untouched, as ever.
    assert_eq!(
        in_session(&store, 1, "client-b", "session-1").await,
        Consumption::WrongClient
    );
    // None of them ended the session's window.
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(request)
    );
    // A request consumed without a session cannot be reloaded by any.
    let plain = bound(2, "client-a");
    store.store(&plain).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(2), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(plain)
    );
    consumed_at(in_session(&store, 2, "client-a", "session-1").await);
}

async fn another_client_cannot_consume_in_a_session_and_changes_nothing<S: Backend>(store: S) {
    let store = store.consume_policy(long_window());
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        in_session(&store, 1, "client-b", "session-1").await,
        Consumption::WrongClient
    );
    assert_eq!(
        store.get_by_hash(&hash(1)).await.unwrap(),
        Some(request.clone())
    );
    // The binding the wrong client passed was not recorded: the right client's session is
    // the one that may reload.
    assert_eq!(
        in_session(&store, 1, "client-a", "session-2").await,
        Consumption::Consumed(request.clone())
    );
    consumed_at(in_session(&store, 1, "client-a", "session-1").await);
    assert_eq!(
        in_session(&store, 1, "client-a", "session-2").await,
        Consumption::Consumed(request)
    );
}

async fn after_the_window_a_reload_finds_it_consumed<S: Backend>(store: S) {
    let window = std::time::Duration::from_millis(300);
    let store = store.consume_policy(ConsumePolicy::ReloadWithin(window));
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    let first = in_session(&store, 1, "client-a", "session-1").await;
    assert_eq!(first, Consumption::Consumed(request));
    // Only what happens after the window is asserted (a loaded machine may be slow).
    tokio::time::sleep(window + std::time::Duration::from_millis(200)).await;
    let consumed = consumed_at(in_session(&store, 1, "client-a", "session-1").await);
    // And stays so, whoever asks.
    assert_eq!(
        consumed_at(in_session(&store, 1, "client-a", "session-1").await),
        consumed
    );
    assert_eq!(
        consumed_at(store.consume_for_client(&hash(1), CLIENT).await.unwrap()),
        consumed
    );
    assert_eq!(store.get_by_hash(&hash(1)).await.unwrap(), None);
}

async fn a_reload_is_never_answered_past_expiry<S: Backend>(store: S) {
    let store = store.consume_policy(long_window());
    // Long enough to be consumed while live on a loaded machine; then waited out.
    let expires_at = Utc::now() + Duration::seconds(2);
    let request =
        PushedAuthorizationRequest::new(hash(1), expires_at, "p=1").with_client_id("client-a");
    store.store(&request).await.unwrap();
    assert!(matches!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(_)
    ));
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    consumed_at(in_session(&store, 1, "client-a", "session-1").await);
    consumed_at(in_session(&store, 1, "client-a", "session-1").await);
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::NotFound
    );
}

async fn a_reload_marker_is_removed_by_cleanup_at_expiry<S: Backend>(store: S) {
    let store = store.consume_policy(long_window());
    let expires_at = Utc::now() + Duration::seconds(600);
    let request =
        PushedAuthorizationRequest::new(hash(1), expires_at, "p=1").with_client_id("client-a");
    store.store(&request).await.unwrap();
    in_session(&store, 1, "client-a", "session-1").await;
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    assert_eq!(store.delete_expired_as_of(expires_at).await.unwrap(), 1);
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::NotFound
    );
}

async fn with_policy_once_consume_in_session_is_consume_for_client<S: Backend>(store: S) {
    // The default policy.
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        in_session(&store, 1, "client-b", "session-1").await,
        Consumption::WrongClient
    );
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(request)
    );
    let first = consumed_at(in_session(&store, 1, "client-a", "session-1").await);
    assert_eq!(
        consumed_at(
            store
                .consume_for_client(&hash(1), "client-a")
                .await
                .unwrap()
        ),
        first
    );
    assert_eq!(
        in_session(&store, 2, "client-a", "session-1").await,
        Consumption::NotFound
    );
    // A zero window is no window.
    let store = store.consume_policy(ConsumePolicy::ReloadWithin(std::time::Duration::ZERO));
    let zero = bound(3, "client-a");
    store.store(&zero).await.unwrap();
    assert_eq!(
        in_session(&store, 3, "client-a", "session-1").await,
        Consumption::Consumed(zero)
    );
    consumed_at(in_session(&store, 3, "client-a", "session-1").await);
}

async fn with_markers_off_the_reload_window_has_no_effect<S: Backend>(store: S) {
    let store = store.consumed_markers(false).consume_policy(long_window());
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(request)
    );
    assert_eq!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::NotFound
    );
}

/// docs/security.md, "Edges": a marker lasts until cleanup removes it at `expires_at` (or
/// `delete_by_client_id`); after that the hash is free again, as a hash never stored. Safe
/// because a reference value is 256 random bits that no server mints twice.
async fn once_its_marker_is_gone_the_hash_can_be_stored_again<S: Backend>(store: S) {
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(request.clone())
    );
    assert!(matches!(
        store.store(&request).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(
        store
            .delete_expired_as_of(request.expires_at)
            .await
            .unwrap(),
        1
    );
    store.store(&request).await.unwrap();
    assert_eq!(
        store
            .consume_for_client(&hash(1), "client-a")
            .await
            .unwrap(),
        Consumption::Consumed(request)
    );
}

/// docs/security.md, "Edges": a request pushed without a client binding is reloaded for
/// any client that presents the session binding that consumed it (there is no client to
/// compare with); a bound one only for its client.
async fn an_unbound_request_is_reloaded_for_any_client_in_the_same_session<S: Backend>(store: S) {
    let store = store.consume_policy(long_window());
    store.store(&live(1)).await.unwrap();
    store.store(&bound(2, "client-a")).await.unwrap();
    for n in [1, 2] {
        assert!(matches!(
            in_session(&store, n, "client-a", "session-1").await,
            Consumption::Consumed(_)
        ));
    }
    assert!(matches!(
        in_session(&store, 1, "client-b", "session-1").await,
        Consumption::Consumed(_)
    ));
    assert_eq!(
        in_session(&store, 2, "client-b", "session-1").await,
        Consumption::WrongClient
    );
}

/// A window under a microsecond (the databases' resolution) is no window: nothing is
/// reloaded, as with `ConsumePolicy::Once`.
async fn a_window_under_a_microsecond_is_no_window<S: Backend>(store: S) {
    let store = store.consume_policy(ConsumePolicy::ReloadWithin(
        std::time::Duration::from_nanos(999),
    ));
    store.store(&bound(1, "client-a")).await.unwrap();
    assert!(matches!(
        in_session(&store, 1, "client-a", "session-1").await,
        Consumption::Consumed(_)
    ));
    consumed_at(in_session(&store, 1, "client-a", "session-1").await);
}

async fn bad_session_bindings_are_refused_and_nothing_consumed<S: Backend>(store: S) {
    let too_long = "s".repeat(par_store::ConsumePolicy::MAX_SESSION_BINDING_LEN + 1);
    let request = bound(1, "client-a");
    store.store(&request).await.unwrap();
    for policy in [ConsumePolicy::Once, long_window()] {
        let store = store.clone().consume_policy(policy);
        for binding in ["", "session\0", "line\nbreak", too_long.as_str()] {
            match store
                .consume_in_session(&hash(1), "client-a", binding)
                .await
            {
                Err(StoreError::InvalidInput { field, .. }) => {
                    assert_eq!(field.as_str(), "session_binding", "{binding:?}")
                }
                other => panic!("{binding:?}: expected InvalidInput, got {other:?}"),
            }
        }
        assert_eq!(
            store.get_by_hash(&hash(1)).await.unwrap(),
            Some(request.clone())
        );
    }
    let store = store.consume_policy(long_window());
    let longest = "s".repeat(par_store::ConsumePolicy::MAX_SESSION_BINDING_LEN);
    for _ in 0..2 {
        assert_eq!(
            store
                .consume_in_session(&hash(1), "client-a", &longest)
                .await
                .unwrap(),
            Consumption::Consumed(request.clone())
        );
    }
}

/// How each mode's store is made: `None` when the test is skipped (an optional binary is
/// missing; a line says so). The database, if any, lives as long as the test.
mod modes {
    use crate::common::citus::CitusSchema;
    use crate::common::pgbouncer::{route, Flavor, PgBouncer};
    use crate::common::TestDb;
    use crate::{Pg, To};
    use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use par_store::{MemoryStore, PostgresStoreOptions, ProtectedStore};

    /// The store, and what must live as long as the test (its database or schema).
    pub type Running<S> = Option<(S, Option<Box<dyn Send>>)>;

    pub async fn memory(_test: &str) -> Running<MemoryStore> {
        Some((MemoryStore::new(), None))
    }

    pub async fn owned_pool(_test: &str) -> Running<Pg> {
        let db = TestDb::new().await;
        let store = connect(PostgresStoreOptions::new(), db.options.clone()).await;
        Some((store, Some(Box::new(db))))
    }

    pub async fn caller_pool(_test: &str) -> Running<Pg> {
        let db = TestDb::with_pool(PgPoolOptions::new().max_connections(32)).await;
        let options = PostgresStoreOptions::new();
        let store = Pg::new(
            options.clone(),
            options.with_pool(db.pool.clone()),
            To::Pool(db.pool.clone()),
        );
        Some((store, Some(Box::new(db))))
    }

    pub async fn bouncer_pooler_mode(test: &str) -> Running<Pg> {
        Flavor::Stock.require(test)?;
        let port = PgBouncer::shared(Flavor::Stock);
        let db = TestDb::new().await;
        let options = PostgresStoreOptions::new().pooler_mode(true);
        let store = connect(options, route(port, &db.options)).await;
        Some((store, Some(Box::new(db))))
    }

    pub async fn bouncer_prepared(test: &str) -> Running<Pg> {
        Flavor::Prepared.require(test)?;
        let port = PgBouncer::shared(Flavor::Prepared);
        let db = TestDb::new().await;
        let store = connect(PostgresStoreOptions::new(), route(port, &db.options)).await;
        Some((store, Some(Box::new(db))))
    }

    pub async fn protected_memory(test: &str) -> Running<ProtectedStore<MemoryStore>> {
        let (inner, db) = memory(test).await?;
        Some((ProtectedStore::new(inner, super::keys()), db))
    }

    pub async fn protected_owned_pool(test: &str) -> Running<ProtectedStore<Pg>> {
        let (inner, db) = owned_pool(test).await?;
        Some((ProtectedStore::new(inner, super::keys()), db))
    }

    /// On the throwaway Citus cluster (tests/common/citus.rs): a schema per test, the table
    /// distributed by `distribute_on_citus`, the store's own pool to the coordinator.
    /// Without Citus, skipped outside CI with one line; fails under `CI=true`.
    pub async fn citus(_test: &str) -> Running<Pg> {
        let schema = CitusSchema::new(crate::common::citus::citus()?).await;
        let store = connect(PostgresStoreOptions::new(), schema.options.clone()).await;
        assert!(store.store.distribute_on_citus().await.unwrap());
        // Warm up, so that the tests' short lifetimes (300 ms) are not spent on first uses
        // (connections, the coordinator's planning, the cleanup's switch to shards); then
        // leave the table empty.
        use par_store::PushedAuthorizationRequestStore;
        let warm = par_store::PushedAuthorizationRequest::new(
            "warm-up",
            chrono::Utc::now() + chrono::Duration::seconds(60),
            "p",
        );
        store.store(&warm).await.unwrap();
        store.get_by_hash("warm-up").await.unwrap();
        store.consume_by_hash("warm-up").await.unwrap();
        store.store.delete_expired().await.unwrap();
        let mut conn = schema.connection().await;
        for table in [
            "DELETE FROM pushed_authorization_requests",
            "DELETE FROM pushed_authorization_request_markers",
        ] {
            par_store::sqlx::query(table)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Some((store, Some(Box::new(schema))))
    }

    async fn connect(options: PostgresStoreOptions, to: PgConnectOptions) -> Pg {
        let at = format!("{}:{}", to.get_host(), to.get_port());
        let store = options
            .connect_with(to.clone())
            .await
            .unwrap_or_else(|err| panic!("connect to {at}: {err}"));
        Pg::new(options, store, To::Connect(Box::new(to)))
    }
}

/// One module of tests for one mode: each test makes the mode's store and runs the contract
/// test of the same name on it.
macro_rules! contract_for {
    ($mode:ident: $($name:ident),*) => {
        mod $mode {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let test = concat!("contract::", stringify!($mode), "::", stringify!($name));
                    let Some((store, _db)) = crate::modes::$mode(test).await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        contract_for!(memory: $($name),*);
        contract_for!(owned_pool: $($name),*);
        contract_for!(caller_pool: $($name),*);
        contract_for!(bouncer_pooler_mode: $($name),*);
        contract_for!(bouncer_prepared: $($name),*);
        contract_for!(protected_memory: $($name),*);
        contract_for!(protected_owned_pool: $($name),*);
        contract_for!(citus: $($name),*);
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
    lifetime_beyond_max_request_lifetime_is_refused,
    store_works_after_bad_input,
    expired_request_is_never_returned_by_get,
    expired_request_is_not_consumed_but_removed,
    delete_expired_removes_only_expired_requests,
    exactly_one_of_32_concurrent_consumers_wins,
    awkward_text_round_trips_byte_for_byte,
    usable_as_a_trait_object,
    usable_as_an_extension_trait_object,
    client_binding_is_returned_by_every_read,
    bad_client_ids_are_refused_and_nothing_stored,
    store_or_replace_inserts_then_replaces,
    store_or_replace_revives_an_expired_uncleaned_request,
    store_or_replace_applies_the_input_rules,
    delete_by_client_id_removes_that_clients_requests_only,
    delete_by_unstorable_client_id_removes_nothing,
    delete_expired_as_of_uses_the_given_cutoff,
    a_second_consume_is_told_apart_from_an_unknown_request,
    consume_by_hash_leaves_a_marker_too,
    a_consumed_request_is_never_returned_or_brought_back,
    consume_for_client_leaves_another_clients_request_untouched,
    get_for_client_finds_a_live_request_of_that_client_or_of_none,
    get_for_client_answers_another_client_wrong_client_and_changes_nothing,
    consume_for_client_consumes_a_request_stored_without_a_client,
    consume_for_client_refuses_a_client_id_no_request_could_be_bound_to,
    an_expired_request_is_reported_expired_and_removed,
    a_consumed_marker_lasts_until_expiry_and_cleanup_removes_it,
    an_expired_marker_is_still_reported_until_cleanup,
    with_markers_off_a_consumed_request_is_removed,
    of_32_concurrent_consumers_one_consumes_and_31_find_it_consumed,
    a_reload_within_the_window_by_the_same_session_gets_the_request_again,
    within_the_window_every_other_consumption_finds_it_consumed,
    another_client_cannot_consume_in_a_session_and_changes_nothing,
    after_the_window_a_reload_finds_it_consumed,
    a_reload_is_never_answered_past_expiry,
    a_reload_marker_is_removed_by_cleanup_at_expiry,
    with_policy_once_consume_in_session_is_consume_for_client,
    with_markers_off_the_reload_window_has_no_effect,
    bad_session_bindings_are_refused_and_nothing_consumed,
    once_its_marker_is_gone_the_hash_can_be_stored_again,
    get_for_client_reports_a_reuse_at_the_read,
    get_for_client_reports_an_expired_request_and_changes_nothing,
    get_for_client_refuses_a_client_id_no_request_could_be_bound_to,
    an_unbound_request_is_reloaded_for_any_client_in_the_same_session,
    a_window_under_a_microsecond_is_no_window,
);
