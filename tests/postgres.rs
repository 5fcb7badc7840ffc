//! PostgreSQL-specific behaviour: what the shared contract cannot reach (rows written behind
//! the store's back, migrations, server-side errors and timeouts).

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use par_store::sqlx::{self, migrate::Migrator, postgres::PgPoolOptions};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::time::{Duration as StdDuration, Instant};

fn request(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(600), "client_id=a")
}

#[tokio::test]
async fn expired_row_not_yet_cleaned_is_never_returned_and_consume_removes_it() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('old', now() - interval '1 second', 'p')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let store = db.store();
    assert_eq!(store.get_by_hash("old").await.unwrap(), None);
    assert_eq!(db.row_count().await, 1, "get must not remove anything");
    assert_eq!(store.consume_by_hash("old").await.unwrap(), None);
    assert_eq!(db.row_count().await, 0, "consume removes the expired row");
}

#[tokio::test]
async fn concurrent_stores_of_one_hash_have_exactly_one_winner() {
    let db = TestDb::new().await;
    let store = db.store();
    let attempts: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let request = PushedAuthorizationRequest::new(
                    "same",
                    Utc::now() + Duration::seconds(600),
                    format!("attempt={n}"),
                );
                store.store(&request).await
            })
        })
        .collect();
    let mut stored = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StoreError::Duplicate) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(db.row_count().await, 1);
}

#[tokio::test]
async fn migrate_is_idempotent_and_keeps_its_own_history_table() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM _par_store_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let up_migrations = PostgresStore::migrator()
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count();
    assert_eq!(ours as usize, up_migrations);
    let host_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        host_table, None,
        "the host application's history table is left alone"
    );
}

#[tokio::test]
async fn migrations_coexist_with_the_host_applications_own() {
    let db = TestDb::empty().await;
    // A host application whose first migration has the same version number as ours.
    let dir = std::env::temp_dir().join(format!("par-store-host-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0001_host.sql"),
        "CREATE TABLE host_things (id int PRIMARY KEY);",
    )
    .unwrap();
    let host = Migrator::new(dir.as_path()).await.unwrap();

    host.run(&db.pool).await.unwrap();
    let host_history = "SELECT version, checksum FROM _sqlx_migrations ORDER BY version";
    let before: Vec<(i64, Vec<u8>)> = sqlx::query_as(host_history)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    db.store().migrate().await.unwrap();
    host.run(&db.pool).await.unwrap();
    db.store().migrate().await.unwrap();
    let after: Vec<(i64, Vec<u8>)> = sqlx::query_as(host_history)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "a host history without par-store's is never written"
    );

    for table in [
        "host_things",
        "_sqlx_migrations",
        "pushed_authorization_requests",
        "_par_store_migrations",
    ] {
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(table));
    }
    db.store().store(&request("h")).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn migrations_revert_and_apply_again() {
    let db = TestDb::new().await;
    let migrator = PostgresStore::migrator();
    migrator.undo(&db.pool, 0).await.unwrap();
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('pushed_authorization_requests')::text")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(table, None);
    db.store().migrate().await.unwrap();
    db.store().store(&request("h")).await.unwrap();
}

#[tokio::test]
async fn schema_rejects_what_the_store_would_refuse() {
    let db = TestDb::new().await;
    for hash in [String::new(), "h".repeat(129)] {
        let inserted = sqlx::query(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             VALUES ($1, now() + interval '1 minute', 'p')",
        )
        .bind(&hash)
        .execute(&db.pool)
        .await;
        assert!(inserted.is_err(), "hash of {} bytes", hash.len());
    }
}

#[tokio::test]
async fn missing_schema_is_a_database_error() {
    let db = TestDb::empty().await;
    let err = db.store().store(&request("h")).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_the_acquire_timeout() {
    // Port 9 (discard) on loopback: nothing listens there.
    let options = "postgres://postgres@127.0.0.1:9/postgres".parse().unwrap();
    let store = PostgresStoreOptions::new()
        .acquire_timeout(StdDuration::from_millis(500))
        .connect_lazy_with(options);
    let started = Instant::now();
    let err = store.get_by_hash("h").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() < StdDuration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Holds the row lock of `hash` in another transaction while `run` goes on.
async fn with_row_locked<F, T>(db: &TestDb, hash: &str, run: F) -> T
where
    F: std::future::Future<Output = T>,
{
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .execute(&mut *tx)
    .await
    .unwrap();
    let result = run.await;
    tx.rollback().await.unwrap();
    result
}

#[tokio::test]
async fn statement_timeout_is_a_timeout_error() {
    let db = TestDb::new().await;
    db.store().store(&request("h")).await.unwrap();
    let store = PostgresStoreOptions::new()
        .statement_timeout(Some(StdDuration::from_millis(200)))
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let err = with_row_locked(&db, "h", store.consume_by_hash("h"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    // Nothing was consumed: the statement was cancelled.
    assert!(store.consume_by_hash("h").await.unwrap().is_some());
}

#[tokio::test]
async fn operation_timeout_bounds_an_operation() {
    let db = TestDb::new().await;
    db.store().store(&request("h")).await.unwrap();
    let store = PostgresStoreOptions::new()
        .statement_timeout(None)
        .operation_timeout(Some(StdDuration::from_millis(200)))
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let started = Instant::now();
    let err = with_row_locked(&db, "h", store.consume_by_hash("h"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < StdDuration::from_secs(2));
    // Unlike a server-side statement timeout, a client-side timeout cannot take back a
    // statement already sent: once the lock was released the DELETE went through. That is the
    // documented ambiguity of a failed consume; the request is never handed out twice.
    assert_eq!(store.consume_by_hash("h").await.unwrap(), None);
    // The store keeps working afterwards.
    store.store(&request("h2")).await.unwrap();
    assert!(store.consume_by_hash("h2").await.unwrap().is_some());
}

#[tokio::test]
async fn malformed_database_url_is_invalid_database_url() {
    let err = PostgresStore::connect("postgres://user:hunter2@host:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidDatabaseUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn kept_connections_go_back_to_a_shared_pool_when_idle() {
    // One connection, shared by the store and the application.
    let db = TestDb::with_pool(
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(StdDuration::from_secs(10)),
    )
    .await;
    let store = db.store();
    store.store(&request("h")).await.unwrap();
    assert!(store.get_by_hash("h").await.unwrap().is_some());
    // The store keeps the connection while busy, and hands it back within about two idle
    // seconds, so the application's own queries and close() still get it.
    let started = Instant::now();
    let mut conn = db.pool.acquire().await.unwrap();
    let waited = started.elapsed();
    assert!(waited < StdDuration::from_secs(4), "{waited:?}");
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    drop(conn);
    // And the store takes it again when it needs it.
    assert!(store.consume_by_hash("h").await.unwrap().is_some());
    tokio::time::timeout(StdDuration::from_secs(5), db.pool.close())
        .await
        .expect("close() completes once the store has handed its connection back");
    assert!(matches!(
        store.get_by_hash("h").await.unwrap_err(),
        StoreError::Unavailable { .. }
    ));
}
