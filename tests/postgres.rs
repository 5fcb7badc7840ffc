//! PostgreSQL-specific behaviour: what the shared contract cannot reach (rows written behind
//! the store's back, migrations, server-side errors and timeouts).

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use par_store::sqlx::{self, migrate::Migrator};
use par_store::{
    error::InputField, PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, PushedAuthorizationRequestStoreExt, StoreError,
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

/// Migration 0005 both ways over rows of every kind: applied over 0.2's rows it keeps them
/// live; the schema refuses a live request without parameters; reverted, it removes the
/// consumed markers, keeps every other row and restores `parameters NOT NULL`; and applied
/// again, the store works.
#[tokio::test]
async fn consumed_markers_migrate_both_ways() {
    let db = TestDb::new().await;
    let migrator = PostgresStore::migrator();
    let version = |name: &str| {
        migrator
            .iter()
            .find(|m| m.description.contains(name) && m.migration_type.is_up_migration())
            .map(|m| m.version)
            .expect("migration 0005")
    };
    let markers = version("consumed markers");
    let before = migrator
        .iter()
        .filter(|m| m.version < markers && m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap();
    // 0.2's rows, written before 0005.
    migrator.undo(&db.pool, before).await.unwrap();
    let store_02 = "INSERT INTO pushed_authorization_requests \
         (reference_value_hash, expires_at, parameters) VALUES ($1, now() + interval '1 hour', 'p')";
    for hash in ["old-1", "old-2"] {
        sqlx::query(store_02)
            .bind(hash)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    db.store().migrate().await.unwrap();
    let store = db.store();
    assert!(store.get_by_hash("old-1").await.unwrap().is_some());
    assert!(matches!(
        store.consume_for_client("old-1", "client-a").await.unwrap(),
        par_store::Consumption::Consumed(_)
    ));
    let refused = sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('no-parameters', now() + interval '1 minute', NULL)",
    )
    .execute(&db.pool)
    .await;
    assert!(refused.is_err(), "a live request without parameters");

    migrator.undo(&db.pool, before).await.unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT reference_value_hash FROM pushed_authorization_requests ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, ["old-2"], "the marker is gone, the live request kept");
    let nullable: String = sqlx::query_scalar(
        "SELECT is_nullable FROM information_schema.columns \
         WHERE table_name = 'pushed_authorization_requests' AND column_name = 'parameters'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(nullable, "NO");

    db.store().migrate().await.unwrap();
    assert!(store.get_by_hash("old-2").await.unwrap().is_some());
    store.store(&request("new")).await.unwrap();
    assert!(store.consume_by_hash("new").await.unwrap().is_some());
}

/// What a reload window keeps in the markers table: the parameters and the binding after the
/// first consumption in a session; the parameters cleared by the first consumption after the
/// window (the binding stays until cleanup, like the client id).
#[tokio::test]
async fn a_reload_window_keeps_the_parameters_until_the_first_consumption_after_it() {
    let db = TestDb::new().await;
    let window = StdDuration::from_millis(300);
    let store = PostgresStoreOptions::new()
        .consume_policy(par_store::ConsumePolicy::ReloadWithin(window))
        .with_pool(db.pool.clone());
    let row = |hash: &'static str| {
        sqlx::query_as::<_, (Option<String>, Option<String>)>(
            "SELECT kept_parameters, consumed_by FROM pushed_authorization_request_markers \
             WHERE reference_value_hash = $1",
        )
        .bind(hash)
        .fetch_one(&db.pool)
    };
    for hash in ["in-session", "plain"] {
        store
            .store(&request(hash).with_client_id("client-a"))
            .await
            .unwrap();
    }
    store
        .consume_in_session("in-session", "client-a", "session-1")
        .await
        .unwrap();
    store.consume_for_client("plain", "client-a").await.unwrap();
    let kept = (Some("client_id=a".to_owned()), Some("session-1".to_owned()));
    assert_eq!(row("in-session").await.unwrap(), kept);
    assert_eq!(row("plain").await.unwrap(), (None, None));
    // Within the window another session's attempt clears nothing.
    store
        .consume_in_session("in-session", "client-a", "session-2")
        .await
        .unwrap();
    assert_eq!(row("in-session").await.unwrap(), kept);
    tokio::time::sleep(window + StdDuration::from_millis(200)).await;
    // After it, still kept until a consumption comes...
    assert_eq!(row("in-session").await.unwrap(), kept);
    assert!(matches!(
        store
            .consume_for_client("in-session", "client-a")
            .await
            .unwrap(),
        par_store::Consumption::AlreadyConsumed { .. }
    ));
    // ... which clears the parameters.
    assert_eq!(
        row("in-session").await.unwrap(),
        (None, Some("session-1".to_owned()))
    );
}

/// Migration 0006 both ways: reverted, the bindings go and a request kept for reloads keeps
/// only its marker; applied again, the store works; the schema refuses an oversize binding.
#[tokio::test]
async fn reload_tolerance_migrates_both_ways() {
    let db = TestDb::new().await;
    let migrator = PostgresStore::migrator();
    let policy = par_store::ConsumePolicy::ReloadWithin(StdDuration::from_secs(600));
    let store = PostgresStoreOptions::new()
        .consume_policy(policy)
        .with_pool(db.pool.clone());
    store.store(&request("kept")).await.unwrap();
    store
        .consume_in_session("kept", "client-a", "session-1")
        .await
        .unwrap();
    let oversize = sqlx::query(
        "UPDATE pushed_authorization_request_markers SET consumed_by = repeat('s', 129) \
         WHERE reference_value_hash = 'kept'",
    )
    .execute(&db.pool)
    .await;
    assert!(oversize.is_err(), "a binding over 128 bytes");

    // 0007 moves the markers back into the requests table, then 0006 goes.
    migrator.undo(&db.pool, 5).await.unwrap();
    let (parameters, consumed): (Option<String>, bool) = sqlx::query_as(
        "SELECT parameters, consumed_at IS NOT NULL FROM pushed_authorization_requests",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (parameters, consumed),
        (None, true),
        "only the marker is left"
    );
    let column: Option<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'pushed_authorization_requests' AND column_name = 'consumed_by'",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert_eq!(column, None);

    db.store().migrate().await.unwrap();
    let store = PostgresStoreOptions::new()
        .consume_policy(policy)
        .with_pool(db.pool.clone());
    assert!(matches!(
        store
            .consume_in_session("kept", "client-a", "session-1")
            .await
            .unwrap(),
        par_store::Consumption::AlreadyConsumed { .. }
    ));
    store.store(&request("new")).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            store
                .consume_in_session("new", "client-a", "session-1")
                .await
                .unwrap(),
            par_store::Consumption::Consumed(_)
        ));
    }
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
    // The message leads somewhere: which server, and why.
    let message = err.to_string();
    println!("{message}");
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
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

/// Waits until `count` sessions wait for a lock on the markers table.
async fn until_waiting_for_the_markers(db: &TestDb, count: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted \
             AND relation = 'pushed_authorization_request_markers'::regclass",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting >= count {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("fewer than {count} sessions wait for the markers table");
}

#[tokio::test]
async fn operation_timeout_bounds_a_consume_that_takes_nothing_as_a_whole() {
    // A consume that takes nothing sends two statements, `CONSUME` then `LOOK_UP`. Each waits
    // here for a table lock on the markers (0.6 s, then 0.7 s), each within the 1 s timeout;
    // the operation as a whole is not, so it fails at 1 s rather than answer at 1.3 s.
    let db = TestDb::new().await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .statement_timeout(None)
        .operation_timeout(Some(StdDuration::from_secs(1)))
        .connect_with(db.options.clone())
        .await
        .unwrap();
    // The connection open and the first operation's checks done.
    assert_eq!(store.consume_by_hash("warm").await.unwrap(), None);
    let lock = "LOCK TABLE pushed_authorization_request_markers IN ACCESS EXCLUSIVE MODE";
    let mut first = db.pool.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *first).await.unwrap();
    let started = Instant::now();
    let consume = tokio::spawn({
        let store = store.clone();
        async move { store.consume_by_hash("never-stored").await }
    });
    until_waiting_for_the_markers(&db, 1).await;
    // Queued behind the consume: it gets the table once `CONSUME` is done with it, and holds
    // it while `LOOK_UP` waits.
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let mut second = pool.begin().await.unwrap();
        sqlx::query(lock).execute(&mut *second).await.unwrap();
        let held = started + StdDuration::from_millis(1_300);
        tokio::time::sleep_until(held.into()).await;
        second.commit().await.unwrap();
    });
    until_waiting_for_the_markers(&db, 2).await;
    tokio::time::sleep_until((started + StdDuration::from_millis(600)).into()).await;
    first.commit().await.unwrap();
    let outcome = consume.await.unwrap();
    let took = started.elapsed();
    second.await.unwrap();
    assert!(
        matches!(outcome, Err(StoreError::Timeout { .. })),
        "{outcome:?} after {took:?}"
    );
    assert!(took < StdDuration::from_millis(1_300), "{took:?}");
    // The store keeps working afterwards.
    store.store(&request("h")).await.unwrap();
    assert!(store.consume_by_hash("h").await.unwrap().is_some());
}

#[tokio::test]
async fn malformed_database_url_is_invalid_database_url() {
    let err = PostgresStore::connect("postgres://user:hunter2@host:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidDatabaseUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

// The store's own statements, to look at their plans.
#[path = "../src/sql.rs"]
#[allow(dead_code)]
mod sql;

/// Prepares the store's cleanup batch on `conn` as `batch(batch_size, cutoff)`.
async fn prepare_cleanup_batch(conn: &mut sqlx::PgConnection) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE batch(int8, timestamptz) AS {}",
        sql::DELETE_EXPIRED_BATCH
    )))
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_cleanup_batch_uses_the_indexes_even_under_a_generic_plan() {
    let db = TestDb::new().await;
    // 200k rows, half of them expired, with fresh statistics.
    sqlx::raw_sql(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'plan-' || i, now() + CASE WHEN i % 2 = 0 THEN interval '-1 hour' ELSE interval '1 hour' END, 'p' \
         FROM generate_series(1, 200000) AS i; \
         ANALYZE pushed_authorization_requests",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    prepare_cleanup_batch(&mut conn).await;
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE batch(1000, NULL)")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    println!("{plan}");
    assert!(plan.contains("$0") || plan.contains("InitPlan"), "{plan}");
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("Hash Join"),
        "the generic plan scans the table:\n{plan}"
    );
    // And it removes exactly one batch, quickly.
    let began = Instant::now();
    let deleted: i64 = sqlx::query_scalar("EXECUTE batch(1000, NULL)")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    println!(
        "one batch of 1000 under a generic plan: {:?}",
        began.elapsed()
    );
    assert_eq!(deleted, 1000);
    drop(conn);
}

/// With no expired row, a cleanup batch must not read the live ones: the cutoff (the clock,
/// or the caller's instant) bounds the `expires_at` index scans of both tables. A volatile
/// `clock_timestamp()` in the `WHERE` cannot bound an index scan: it becomes a filter, and a
/// batch then reads every live row in the index, one by one, each time the job runs.
#[tokio::test]
async fn a_cleanup_batch_bounds_its_index_scans_by_the_cutoff() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'live-' || i, now() + interval '1 hour', 'p' FROM generate_series(1, 20000) AS i; \
         INSERT INTO pushed_authorization_request_markers \
             (reference_value_hash, expires_at, consumed_at) \
         SELECT 'used-' || i, now() + interval '1 hour', now() FROM generate_series(1, 20000) AS i; \
         ANALYZE pushed_authorization_requests; ANALYZE pushed_authorization_request_markers",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    prepare_cleanup_batch(&mut conn).await;
    for (plan_cache_mode, cutoff) in [
        ("force_generic_plan", "NULL"),
        ("force_custom_plan", "NULL"),
        ("force_generic_plan", "now()"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET plan_cache_mode = {plan_cache_mode}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE batch(1000, {cutoff})"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        println!("{plan_cache_mode}, cutoff {cutoff}:\n{plan}");
        let bounds = plan
            .lines()
            .filter(|line| line.trim_start().starts_with("Index Cond: (expires_at <="))
            .count();
        assert_eq!(bounds, 2, "both scans bounded by the cutoff:\n{plan}");
        assert!(
            !plan.contains("Rows Removed by Filter"),
            "a scan read rows it did not delete:\n{plan}"
        );
    }
    drop(conn);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pushed_authorization_requests) \
             + (SELECT count(*) FROM pushed_authorization_request_markers)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, 40000, "nothing live was removed");
}

#[tokio::test]
async fn a_migration_cut_off_by_a_lost_connection_is_transient() {
    // sqlx reports a statement of a migration that failed with the migration's version;
    // when the cause is a lost connection, the error is worth retrying, not a broken schema.
    let lost = sqlx::migrate::MigrateError::ExecuteMigration(
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        1,
    );
    let err = StoreError::from(lost);
    assert!(err.is_transient(), "{err:?}");
    let broken = sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::RowNotFound, 1);
    assert!(matches!(
        StoreError::from(broken),
        StoreError::Migration { .. }
    ));
}

/// Whether the table has a `client_id` column and its index, as the catalogue says.
async fn client_binding_schema(db: &TestDb) -> (bool, bool) {
    sqlx::query_as(
        "SELECT \
           EXISTS (SELECT 1 FROM information_schema.columns \
                   WHERE table_name = 'pushed_authorization_requests' AND column_name = 'client_id'), \
           to_regclass('pushed_authorization_requests_client_id_idx') IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn client_binding_migration_reverts_to_the_first_schema_and_applies_again() {
    let db = TestDb::new().await;
    assert_eq!(client_binding_schema(&db).await, (true, true));
    let migrator = PostgresStore::migrator();
    migrator.undo(&db.pool, 1).await.unwrap();
    assert_eq!(client_binding_schema(&db).await, (false, false));
    // A request written under the first schema...
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('before', now() + interval '10 minutes', 'p')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db.store().migrate().await.unwrap();
    assert_eq!(client_binding_schema(&db).await, (true, true));
    // ...reads back unbound after the upgrade.
    let read = db.store().get_by_hash("before").await.unwrap().unwrap();
    assert_eq!(read.client_id, None);
    let bound = request("after").with_client_id("client-a");
    db.store().store(&bound).await.unwrap();
    assert_eq!(db.store().delete_by_client_id("client-a").await.unwrap(), 1);
}

#[tokio::test]
async fn database_refuses_a_client_id_the_store_would_refuse() {
    let db = TestDb::new().await;
    for client_id in [
        String::new(),
        "c".repeat(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN + 1),
    ] {
        let err = sqlx::query(
            "INSERT INTO pushed_authorization_requests \
             (reference_value_hash, expires_at, parameters, client_id) \
             VALUES ('h', now() + interval '1 minute', 'p', $1)",
        )
        .bind(&client_id)
        .execute(&db.pool)
        .await
        .unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code().map(|c| c.into_owned()));
        assert_eq!(code.as_deref(), Some("23514"), "{} bytes", client_id.len());
    }
}

#[tokio::test]
async fn delete_by_client_id_uses_the_client_id_index() {
    let db = TestDb::new().await;
    // Enough unbound and bound rows that a sequential scan is not the cheap choice.
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) \
         SELECT 'h' || n, now() + interval '10 minutes', 'p', \
                CASE WHEN n % 10 = 0 THEN 'client-' || (n / 10) END \
         FROM generate_series(1, 5000) AS n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE pushed_authorization_requests")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    // A generic plan, as a prepared statement reused many times gets.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "PREPARE by_client(text) AS DELETE FROM pushed_authorization_requests WHERE client_id = $1",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE by_client('client-7')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("pushed_authorization_requests_client_id_idx"),
        "{plan}"
    );
}

/// The constraint migration 0003 adds.
const FINITE_EXPIRY: &str = "pushed_authorization_requests_expires_at_finite";

fn constraint_of(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.constraint())
        .map(str::to_owned)
}

#[tokio::test]
async fn an_operator_cannot_make_a_request_never_expire() {
    let db = TestDb::new().await;
    let store = db.store();
    store.store(&request("h")).await.unwrap();
    for odd in ["infinity", "-infinity"] {
        let err = sqlx::query(
            "UPDATE pushed_authorization_requests SET expires_at = $1::timestamptz \
             WHERE reference_value_hash = 'h'",
        )
        .bind(odd)
        .execute(&db.pool)
        .await
        .unwrap_err();
        assert_eq!(
            constraint_of(&err).as_deref(),
            Some(FINITE_EXPIRY),
            "{odd}: {err}"
        );
    }
    // The row is as the store wrote it, and still live.
    let kept = store.consume_by_hash("h").await.unwrap().unwrap();
    assert_eq!(kept.parameters, "client_id=a");
}

/// An odd stored value fails the operation with a database error (not a panic).
fn assert_database_error<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Database { .. }) => {}
        other => panic!("expected StoreError::Database, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expiry_beyond_what_the_store_can_represent_is_an_error_not_a_panic() {
    // A finite timestamp past chrono's range (year 262143), written by hand into a table
    // without 0004's CHECK (dropped here, as on a table whose owner removed it; PostgreSQL
    // goes to year 294276): the store's decoder must not panic on it.
    let db = TestDb::new().await;
    db.store().store(&request("h")).await.unwrap();
    sqlx::query(
        "ALTER TABLE pushed_authorization_requests \
         DROP CONSTRAINT pushed_authorization_requests_expires_at_readable",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE pushed_authorization_requests SET expires_at = '290000-01-01 00:00:00+00'")
        .execute(&db.pool)
        .await
        .unwrap();
    let store = db.store();
    assert_database_error(store.get_by_hash("h").await);
    assert_database_error(store.consume_by_hash("h").await);
    // The store keeps working.
    store.store(&request("h2")).await.unwrap();
    assert!(store.consume_by_hash("h2").await.unwrap().is_some());
}

/// The constraint migration 0004 adds.
const READABLE_EXPIRY: &str = "pushed_authorization_requests_expires_at_readable";

#[tokio::test]
async fn the_schema_refuses_an_expiry_beyond_what_the_store_can_read() {
    let db = TestDb::new().await;
    let store = db.store();
    store.store(&request("h")).await.unwrap();
    let set_expiry = |expiry: &'static str| {
        sqlx::query(
            "UPDATE pushed_authorization_requests SET expires_at = $1::timestamptz \
             WHERE reference_value_hash = 'h'",
        )
        .bind(expiry)
        .execute(&db.pool)
    };
    for beyond in ["290000-01-01 00:00:00+00", "262143-01-01 00:00:00+00"] {
        let err = set_expiry(beyond).await.unwrap_err();
        assert_eq!(
            constraint_of(&err).as_deref(),
            Some(READABLE_EXPIRY),
            "{beyond}: {err}"
        );
    }
    // The bound is the decoder's own: chrono's last instant is accepted and read back.
    let last = chrono::DateTime::from_timestamp_micros(
        chrono::DateTime::<Utc>::MAX_UTC.timestamp_micros(),
    )
    .unwrap();
    assert_eq!(last.to_rfc3339(), "+262142-12-31T23:59:59.999999+00:00");
    sqlx::query("UPDATE pushed_authorization_requests SET expires_at = $1")
        .bind(last)
        .execute(&db.pool)
        .await
        .unwrap();
    let read = store.get_by_hash("h").await.unwrap().expect("live");
    assert_eq!(read.expires_at, last);
    assert!(store.consume_by_hash("h").await.unwrap().is_some());
}

#[tokio::test]
async fn migration_0004_expires_rows_beyond_the_range_and_reverts() {
    let db = TestDb::empty().await;
    let migrator = PostgresStore::migrator();
    migrator.run_to(3, &db.pool).await.unwrap();
    for (hash, expiry) in [
        ("live", "now() + interval '10 minutes'"),
        ("far", "'290000-01-01 00:00:00+00'"),
    ] {
        let insert = format!(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             VALUES ($1, {expiry}, 'p')"
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(hash)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    db.store().migrate().await.unwrap();
    let rows = rows_of(&db).await;
    assert_eq!(
        rows,
        [
            ("far".to_owned(), "p".to_owned(), true, false),
            ("live".to_owned(), "p".to_owned(), true, true),
        ],
        "every row kept; the one beyond the range made expired"
    );
    let store = db.store();
    assert_eq!(store.get_by_hash("far").await.unwrap(), None);
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert!(store.get_by_hash("live").await.unwrap().is_some());

    // Down: the constraint is gone, rows kept; up again.
    migrator.undo(&db.pool, 3).await.unwrap();
    sqlx::query(
        "UPDATE pushed_authorization_requests SET expires_at = '290000-01-01 00:00:00+00' \
         WHERE reference_value_hash = 'live'",
    )
    .execute(&db.pool)
    .await
    .expect("0.2's schema has no upper bound");
    db.store().migrate().await.unwrap();
    assert_eq!(
        rows_of(&db).await,
        [("live".to_owned(), "p".to_owned(), true, false)]
    );
}

#[tokio::test]
async fn an_infinite_expiry_in_a_table_without_the_check_is_an_error_not_a_panic() {
    // The schema before 0003 (no CHECK yet) holding what 0.1 let operators write, with the
    // consumed markers of 0005 and the session bindings of 0006 that the store's statements
    // need.
    let db = TestDb::empty().await;
    PostgresStore::migrator().run_to(2, &db.pool).await.unwrap();
    for later in [
        include_str!("../migrations/0005_consumed_markers.up.sql"),
        include_str!("../migrations/0006_reload_tolerance.up.sql"),
    ] {
        sqlx::raw_sql(later).execute(&db.pool).await.unwrap();
    }
    for (hash, expiry) in [("inf", "infinity"), ("neg", "-infinity")] {
        sqlx::query(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             VALUES ($1, $2::timestamptz, 'p')",
        )
        .bind(hash)
        .bind(expiry)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let store = db.store();
    assert_database_error(store.get_by_hash("inf").await);
    // '-infinity' is not live: never returned, and consume removes it.
    assert_eq!(store.get_by_hash("neg").await.unwrap(), None);
    assert_database_error(store.consume_by_hash("neg").await);
}

/// Rows of the table, as a tuple per row, in byte order of the key. Not kept prepared: its
/// result has the key column, whose collation the migrations change.
async fn rows_of(db: &TestDb) -> Vec<(String, String, bool, bool)> {
    sqlx::query_as(
        "SELECT reference_value_hash, parameters, isfinite(expires_at), expires_at > now() \
         FROM pushed_authorization_requests ORDER BY convert_to(reference_value_hash, 'UTF8')",
    )
    .persistent(false)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn key_collation(db: &TestDb) -> Option<String> {
    sqlx::query_scalar(
        "SELECT collation_name::text FROM information_schema.columns \
         WHERE table_name = 'pushed_authorization_requests' \
         AND column_name = 'reference_value_hash'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrating_a_populated_0_1_table_and_reverting_keep_every_row() {
    let db = TestDb::empty().await;
    let migrator = PostgresStore::migrator();
    migrator.run_to(1, &db.pool).await.unwrap();
    // What 0.1 holds: live and expired rows, non-ASCII keys, and a hand-made 'infinity'.
    let rows = [
        ("live-1", "now() + interval '10 minutes'"),
        ("live-\u{e9}\u{4e2d}", "now() + interval '10 minutes'"),
        ("expired", "now() - interval '1 minute'"),
        ("forever", "'infinity'"),
    ];
    for (n, (hash, expiry)) in rows.iter().enumerate() {
        let insert = format!(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             VALUES ($1, {expiry}, $2)"
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(*hash)
            .bind(format!("p={n}"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let before = rows_of(&db).await;
    assert_eq!(before.len(), 4);

    db.store().migrate().await.unwrap();
    let after = rows_of(&db).await;
    assert_eq!(after.len(), 4, "{after:?}");
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(
            (&old.0, &old.1),
            (&new.0, &new.1),
            "key and parameters kept"
        );
        if old.0 == "forever" {
            assert_eq!((new.2, new.3), (true, false), "made finite and expired");
        } else {
            assert_eq!((old.2, old.3), (new.2, new.3), "{old:?}");
        }
    }
    assert_eq!(key_collation(&db).await.as_deref(), Some("C"));
    let store = db.store();
    assert!(store.get_by_hash("live-1").await.unwrap().is_some());
    assert!(store
        .get_by_hash("live-\u{e9}\u{4e2d}")
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.get_by_hash("forever").await.unwrap(), None);
    assert_eq!(
        store.delete_expired().await.unwrap(),
        2,
        "expired and forever"
    );

    // Revert to 0.1: rows kept, collation and constraint gone.
    store.store(&request("new")).await.unwrap();
    migrator.undo(&db.pool, 1).await.unwrap();
    let reverted = rows_of(&db).await;
    let keys: Vec<&str> = reverted.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(keys, ["live-1", "live-\u{e9}\u{4e2d}", "new"]);
    assert_eq!(key_collation(&db).await, None, "the database default again");
    sqlx::query("UPDATE pushed_authorization_requests SET expires_at = 'infinity' WHERE reference_value_hash = 'new'")
        .execute(&db.pool)
        .await
        .expect("0.1 has no CHECK on expires_at");
    // And forward again.
    sqlx::query("DELETE FROM pushed_authorization_requests WHERE reference_value_hash = 'new'")
        .execute(&db.pool)
        .await
        .unwrap();
    db.store().migrate().await.unwrap();
    assert_eq!(rows_of(&db).await.len(), 2);
}

/// Stores a request that expires 300 ms from now through a link held for a second: it passes
/// the application's clock check and reaches the database after it expired.
async fn store_arriving_expired(
    proxy: &common::fault::FaultProxy,
    store: &PostgresStore,
    hash: &str,
) -> Result<(), StoreError> {
    let late = PushedAuthorizationRequest::new(hash, Utc::now() + Duration::milliseconds(300), "p");
    proxy.stall();
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.store(&late).await }
    });
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    proxy.restore();
    pending.await.unwrap()
}

#[tokio::test]
async fn a_request_already_expired_by_the_database_clock_is_refused() {
    // The application checks expires_at against its own clock, then the request travels to
    // the database. Here the trip takes a second (the proxy holds the bytes), so the request
    // leaves the application 300 ms before it expires and reaches the database after: from
    // the database's point of view, exactly an application whose clock is behind by 700 ms
    // more than the lifetime. The database's clock decides: InvalidInput, nothing stored.
    // (Without the check in the INSERT this stores an expired request and returns Ok.)
    let db = TestDb::new().await;
    let proxy = common::fault::FaultProxy::in_front_of(&db.options).await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(proxy.route(&db.options))
        .await
        .unwrap();
    // Warm up: the connection is open and the INSERT prepared.
    store.store(&request("warm")).await.unwrap();

    match store_arriving_expired(&proxy, &store, "late").await {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, InputField::ExpiresAt),
        other => panic!("expected InvalidInput for expires_at, got {other:?}"),
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE reference_value_hash = 'late'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "nothing stored");

    // Expired wins over duplicate, and a duplicate that is live is still a duplicate.
    assert!(matches!(
        store_arriving_expired(&proxy, &store, "warm").await,
        Err(StoreError::InvalidInput {
            field: InputField::ExpiresAt,
            ..
        })
    ));
    assert!(matches!(
        store.store(&request("warm")).await,
        Err(StoreError::Duplicate)
    ));
}

#[tokio::test]
async fn store_or_replace_of_a_request_already_expired_by_the_database_clock_replaces_nothing() {
    // As for `store`: the request leaves the application 300 ms before it expires and
    // reaches the database after. Over a live request it must not replace it with a dead one.
    // (Without the expiry check in UPSERT this returns Ok and the live request is gone.)
    let db = TestDb::new().await;
    let proxy = common::fault::FaultProxy::in_front_of(&db.options).await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(proxy.route(&db.options))
        .await
        .unwrap();
    let live = request("live");
    store.store_or_replace(&live).await.unwrap();
    for hash in ["live", "new"] {
        let late =
            PushedAuthorizationRequest::new(hash, Utc::now() + Duration::milliseconds(300), "dead");
        proxy.stall();
        let pending = tokio::spawn({
            let store = store.clone();
            async move { store.store_or_replace(&late).await }
        });
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        proxy.restore();
        match pending.await.unwrap() {
            Err(StoreError::InvalidInput { field, .. }) => {
                assert_eq!(field, InputField::ExpiresAt)
            }
            other => panic!("{hash}: expected InvalidInput for expires_at, got {other:?}"),
        }
    }
    assert_eq!(store.get_by_hash("live").await.unwrap(), Some(live));
    assert_eq!(store.get_by_hash("new").await.unwrap(), None);
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// A consume decides on the row it locked, with a clock read after the lock (issue 29)
// ---------------------------------------------------------------------------------------

/// Another session holds `sql`'s row lock (`SELECT ... FOR UPDATE`, committed without a
/// change) from before `deadline` until 400 ms after it; a consume started 300 ms before
/// `deadline` waits for it (its statements prepared beforehand, as on a running server). Returns what the consume answered and what `get_by_hash` said
/// while it waited (after `deadline`).
async fn consume_waiting_across(
    db: &TestDb,
    store: &PostgresStore,
    lock_sql: &'static str,
    hash: &str,
    deadline: chrono::DateTime<Utc>,
    consume: impl std::future::Future<Output = par_store::Consumption> + Send + 'static,
) -> (par_store::Consumption, Option<PushedAuthorizationRequest>) {
    let until = |instant: chrono::DateTime<Utc>| {
        tokio::time::sleep((instant - Utc::now()).to_std().unwrap_or_default())
    };
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(lock_sql)
        .bind(hash)
        .execute(&mut *holder)
        .await
        .unwrap();
    until(deadline - Duration::milliseconds(300)).await;
    let consuming = tokio::spawn(consume);
    until(deadline + Duration::milliseconds(100)).await;
    assert!(!consuming.is_finished(), "the consume waits for the lock");
    let read_meanwhile = store.get_by_hash(hash).await.unwrap();
    until(deadline + Duration::milliseconds(400)).await;
    holder.commit().await.unwrap();
    (consuming.await.unwrap(), read_meanwhile)
}

#[tokio::test]
async fn a_consume_that_waited_for_the_row_past_expiry_answers_expired() {
    let db = TestDb::new().await;
    let store = db.store();
    let expires_at = Utc::now() + Duration::milliseconds(1500);
    let request =
        PushedAuthorizationRequest::new("h", expires_at, "p=1").with_client_id("client-a");
    store.store(&request).await.unwrap();
    // The consume statement prepared on the store's connections, as on a running server.
    let warm = store.consume_for_client("warm", "client-a").await.unwrap();
    assert_eq!(warm, par_store::Consumption::NotFound);
    let consume = {
        let store = store.clone();
        async move { store.consume_for_client("h", "client-a").await.unwrap() }
    };
    let (answer, read_meanwhile) = consume_waiting_across(
        &db,
        &store,
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
        "h",
        expires_at,
        consume,
    )
    .await;
    assert_eq!(read_meanwhile, None, "expired while the consume waited");
    assert_eq!(answer, par_store::Consumption::Expired);
    // Removed as garbage, never marked.
    assert_eq!(
        store.consume_for_client("h", "client-a").await.unwrap(),
        par_store::Consumption::NotFound
    );
}

#[tokio::test]
async fn a_consume_that_waited_for_a_table_lock_past_expiry_answers_expired() {
    // A migration's ACCESS EXCLUSIVE lock: the statement waits before it reads anything.
    let db = TestDb::new().await;
    let store = db.store();
    let expires_at = Utc::now() + Duration::milliseconds(1500);
    store
        .store(&PushedAuthorizationRequest::new("h", expires_at, "p=1"))
        .await
        .unwrap();
    // The consume statement prepared on the store's connection before the lock, as on a
    // running server: then its transaction starts before the wait (sqlx prepares a new
    // statement in a transaction of its own).
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    assert_eq!(
        store.consume_for_client("warm", "client-a").await.unwrap(),
        par_store::Consumption::NotFound
    );
    let consume = {
        let store = store.clone();
        async move { store.consume_for_client("h", "client-a").await.unwrap() }
    };
    let until = |instant: chrono::DateTime<Utc>| {
        tokio::time::sleep((instant - Utc::now()).to_std().unwrap_or_default())
    };
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE pushed_authorization_requests IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    until(expires_at - Duration::milliseconds(300)).await;
    let consuming = tokio::spawn(consume);
    until(expires_at + Duration::milliseconds(400)).await;
    assert!(!consuming.is_finished(), "the consume waits for the lock");
    holder.commit().await.unwrap();
    assert_eq!(consuming.await.unwrap(), par_store::Consumption::Expired);
}

#[tokio::test]
async fn a_reload_that_waited_for_the_marker_past_its_window_finds_it_consumed() {
    let db = TestDb::new().await;
    let window = StdDuration::from_millis(1500);
    let store = PostgresStoreOptions::new()
        .consume_policy(par_store::ConsumePolicy::ReloadWithin(window))
        .with_pool(db.pool.clone());
    store
        .store(&request("h").with_client_id("client-a"))
        .await
        .unwrap();
    let consumed = store
        .consume_in_session("h", "client-a", "session-1")
        .await
        .unwrap();
    assert!(matches!(consumed, par_store::Consumption::Consumed(_)));
    let window_closes = Utc::now() + Duration::from_std(window).unwrap();
    // Both statements prepared, as on a running server.
    store
        .store(&request("warm").with_client_id("client-a"))
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .consume_in_session("warm", "client-a", "session-1")
            .await
            .unwrap();
    }
    let reload = {
        let store = store.clone();
        async move {
            store
                .consume_in_session("h", "client-a", "session-1")
                .await
                .unwrap()
        }
    };
    let (answer, _) = consume_waiting_across(
        &db,
        &store,
        "SELECT 1 FROM pushed_authorization_request_markers WHERE reference_value_hash = $1 \
         FOR UPDATE",
        "h",
        window_closes,
        reload,
    )
    .await;
    assert!(
        matches!(answer, par_store::Consumption::AlreadyConsumed { .. }),
        "past the window: {answer:?}"
    );
    // The first consumption after the window cleared the kept parameters.
    let kept: Option<String> = sqlx::query_scalar(
        "SELECT kept_parameters FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = 'h'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(kept, None);
}

/// docs/security.md, "Edges": a window under a microsecond keeps no parameters (it once
/// rounded to a zero window in SQL yet kept them).
#[tokio::test]
async fn a_window_under_a_microsecond_keeps_no_parameters() {
    let db = TestDb::new().await;
    let store = PostgresStoreOptions::new()
        .consume_policy(par_store::ConsumePolicy::ReloadWithin(
            StdDuration::from_nanos(999),
        ))
        .with_pool(db.pool.clone());
    store
        .store(&request("h").with_client_id("client-a"))
        .await
        .unwrap();
    store
        .consume_in_session("h", "client-a", "session-1")
        .await
        .unwrap();
    let (kept, binding): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT kept_parameters, consumed_by FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = 'h'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((kept, binding), (None, None));
}

/// `PostgresStoreOptions::with_pool`: the store settings of the options apply to a store on
/// the caller's pool ("Applies to `with_pool` too"), and `PostgresStore::new(pool)` is
/// `PostgresStoreOptions::new().with_pool(pool)`.
#[tokio::test]
async fn with_pool_applies_the_store_settings_of_the_options() {
    let db = TestDb::new().await;
    let store = PostgresStoreOptions::new()
        .max_parameters_len(8)
        .max_request_lifetime(StdDuration::from_secs(120))
        .consumed_markers(false)
        .consume_policy(par_store::ConsumePolicy::ReloadWithin(
            StdDuration::from_secs(30),
        ))
        .operation_timeout(Some(StdDuration::from_secs(4)))
        .migration_lock_timeout(Some(StdDuration::from_secs(7)))
        .with_pool(db.pool.clone());
    assert!(store.shared_pool().is_some());
    let shown = format!("{store:?}");
    for setting in [
        "max_parameters_len: 8,",
        "max_request_lifetime: 120s,",
        "consumed_markers: false,",
        "consume_policy: ReloadWithin(30s),",
        "operation_timeout: Some(4s),",
        "migration_lock_timeout: Some(7s),",
    ] {
        assert!(shown.contains(setting), "{setting} in {shown}");
    }
    // What they do: 9 bytes are refused, 8 stored; 10 minutes ahead is beyond the bound;
    // without markers a consumed request is gone.
    let sized = |hash: &str, parameters: &str| {
        PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(60), parameters)
    };
    assert!(matches!(
        store.store(&sized("long", "123456789")).await,
        Err(StoreError::InvalidInput {
            field: InputField::Parameters,
            ..
        })
    ));
    let far = PushedAuthorizationRequest::new("far", Utc::now() + Duration::seconds(600), "p");
    assert!(matches!(
        store.store(&far).await,
        Err(StoreError::InvalidInput {
            field: InputField::ExpiresAt,
            ..
        })
    ));
    store.store(&sized("fits", "12345678")).await.unwrap();
    assert!(store.consume_by_hash("fits").await.unwrap().is_some());
    assert_eq!(
        store.consume_for_client("fits", "client-a").await.unwrap(),
        par_store::Consumption::NotFound
    );
    assert_eq!(db.row_count().await, 0);

    assert_eq!(
        format!("{:?}", PostgresStore::new(db.pool.clone())),
        format!(
            "{:?}",
            PostgresStoreOptions::new().with_pool(db.pool.clone())
        )
    );
}
