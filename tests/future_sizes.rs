//! Every operation's future stays small: a future is moved by value through each layer that
//! awaits it (the trait's boxed future, tracing, the operation timeout), so a large one is
//! copied again and again on every call. The PostgreSQL stores box the database attempt
//! (pool, retries, sqlx's query), which without that box made `get_by_hash` 46 KB and the
//! others about 19 KB in a release build; the copies were about 5 % of the client's CPU in
//! `bench/run.sh`'s lifecycle (`perf`), and half its instructions under callgrind.
//!
//! No database is needed: the futures are created, measured and dropped, never polled.

use par_store::chrono::{Duration, Utc};
use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use par_store::{
    protect::{KeyRing, ProtectionKey},
    MemoryStore, PostgresStore, PostgresStoreOptions, ProtectedStore, PushedAuthorizationRequest,
    PushedAuthorizationRequestStoreExt,
};

/// Far above what each operation needs now (at most 1.3 KB in debug and release builds),
/// far below what an unboxed database attempt costs (14 KB and more).
const LIMIT: usize = 4096;

fn sizes<S: PushedAuthorizationRequestStoreExt>(store: &S) -> Vec<(&'static str, usize)> {
    let request =
        PushedAuthorizationRequest::new("h".repeat(43), Utc::now() + Duration::minutes(1), "p=1")
            .with_client_id("client");
    let hash = request.reference_value_hash.clone();
    let sizes = vec![
        ("store", size_of_val(&*store.store(&request))),
        ("get_by_hash", size_of_val(&*store.get_by_hash(&hash))),
        (
            "consume_by_hash",
            size_of_val(&*store.consume_by_hash(&hash)),
        ),
        (
            "consume_for_client",
            size_of_val(&*store.consume_for_client(&hash, "client")),
        ),
        (
            "consume_in_session",
            size_of_val(&*store.consume_in_session(&hash, "client", "session")),
        ),
        (
            "store_or_replace",
            size_of_val(&*store.store_or_replace(&request)),
        ),
        (
            "delete_by_client_id",
            size_of_val(&*store.delete_by_client_id("client")),
        ),
    ];
    sizes
}

fn assert_small(name: &str, sizes: Vec<(&'static str, usize)>) {
    println!("{name}: {sizes:?}");
    for (operation, size) in sizes {
        assert!(
            size <= LIMIT,
            "{name}: the future of {operation} is {size} bytes (limit {LIMIT})"
        );
    }
}

fn options() -> PgConnectOptions {
    // Never connected to: the futures are not polled.
    PgConnectOptions::new().host("127.0.0.1").port(9)
}

fn keys() -> KeyRing {
    KeyRing::new(ProtectionKey::new("k1", [7; 32]).unwrap())
}

#[tokio::test]
async fn every_operation_future_is_small_in_every_store() {
    let owned = PostgresStoreOptions::new().connect_lazy_with(options());
    assert_small("PostgresStore (own pool)", sizes(&owned));
    let shared = PostgresStore::new(PgPoolOptions::new().connect_lazy_with(options()));
    assert_small("PostgresStore::new(PgPool)", sizes(&shared));
    let pooler = PostgresStoreOptions::new()
        .pooler_mode(true)
        .connect_lazy_with(options());
    assert_small("PostgresStore (pooler mode)", sizes(&pooler));
    assert_small(
        "ProtectedStore<PostgresStore>",
        sizes(&ProtectedStore::new(owned, keys())),
    );
    assert_small("MemoryStore", sizes(&MemoryStore::new()));
}
