//! Applying the schema from the host application: sqlx-cli (reproduced here with sqlx's own
//! `Migrator`, which is what the CLI runs) and `PostgresStore::migrate()` in every order end
//! in the same schema, and `migrate()` logs nothing at INFO on a routine start.

mod common;

use chrono::{Duration, Utc};
use common::{Captured, TestDb};
use par_store::sqlx::postgres::PgPoolOptions;
use par_store::sqlx::{self, migrate::Migrator, Connection, PgConnection, PgPool};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::path::Path;
use std::time::Duration as StdDuration;

/// The log test sets a thread-default `tracing` subscriber; tests running beside it would
/// register sqlx's notice callsite without one, and tracing-core could cache it as
/// uninteresting. It runs alone (write lock), the others side by side (read lock).
static LOG_CAPTURE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// par-store's migrations as sqlx-cli sees them from a host application's directory when run
/// with `--source <par-store>/migrations` but without par-store's `sqlx.toml`: history in the
/// host's `_sqlx_migrations`.
async fn host_cli_without_config() -> Migrator {
    let migrator = Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations"
    )))
    .await
    .unwrap();
    assert_eq!(migrator.table_name, "_sqlx_migrations");
    migrator
}

/// The same with `--config <par-store>/sqlx.toml`: history in `_par_store_migrations`.
async fn host_cli_with_config() -> Migrator {
    let mut migrator = host_cli_without_config().await;
    migrator.dangerous_set_table_name(par_store::PostgresStore::MIGRATIONS_TABLE);
    migrator
}

/// Runs `migrator` the way sqlx-cli does: on a connection of its own that ends with the run
/// (a failed sqlx migration leaves the migrator's advisory lock held by its session).
async fn cli_run(
    migrator: &Migrator,
    db: &TestDb,
    target: Option<i64>,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = PgConnection::connect_with(&db.options).await.unwrap();
    let result = match target {
        Some(version) => migrator.run_to(version, &mut conn).await,
        None => migrator.run(&mut conn).await,
    };
    conn.close().await.unwrap();
    result
}

fn up_versions() -> Vec<i64> {
    PostgresStore::migrator()
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

async fn history(pool: &PgPool, table: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every column, constraint and index of the application tables (history tables excluded).
async fn schema(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('column %s.%s %s null=%s default=%s', table_name, column_name, data_type, \
                is_nullable, column_default) \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_%' \
         UNION ALL \
         SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid)) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
           AND conrelid::regclass::text NOT LIKE '\\_%' \
         UNION ALL \
         SELECT format('index %s', indexdef) FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename NOT LIKE '\\_%' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The schema `migrate()` alone makes.
async fn reference_schema() -> Vec<String> {
    let db = TestDb::new().await;
    let schema = schema(&db.pool).await;
    assert!(
        schema
            .iter()
            .any(|line| line.contains("pushed_authorization_requests")),
        "{schema:?}"
    );
    schema
}

fn request(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(600), "client_id=a")
}

/// `migrate()` embeds `migrations/` file by file (no `sqlx::migrate!`): every file sqlx-cli
/// reads there is embedded, with the same version, description, type, transaction mode and
/// checksum, and its statement is the file's SQL; a file added to the directory but not to
/// the list in src/migrations.rs, or a list entry without its file, fails here.
#[tokio::test]
async fn the_embedded_migrations_are_the_directory_as_sqlx_cli_reads_it() {
    let cli = host_cli_without_config().await;
    let embedded = PostgresStore::migrator();
    let summary = |migrator: &Migrator| -> Vec<String> {
        migrator
            .iter()
            .map(|m| {
                format!(
                    "{} {:?} {:?} no_tx={} checksum={:02x?}",
                    m.version, m.description, m.migration_type, m.no_tx, m.checksum
                )
            })
            .collect()
    };
    assert_eq!(summary(&embedded), summary(&cli));
    for (embedded, file) in embedded.iter().zip(cli.iter()) {
        assert!(
            embedded.sql.as_str().contains(file.sql.as_str()),
            "migration {} {:?}: the embedded statement is not the file's SQL",
            file.version,
            file.migration_type
        );
    }
    assert_eq!(embedded.table_name, PostgresStore::MIGRATIONS_TABLE);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count();
    assert_eq!(
        embedded.iter().count(),
        files,
        "every .sql file is embedded"
    );
}

#[tokio::test]
async fn host_cli_into_sqlx_migrations_then_migrate() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::empty().await;
    cli_run(&host_cli_without_config().await, &db, None)
        .await
        .unwrap();
    db.store().store(&request("kept")).await.unwrap();

    db.store().migrate().await.unwrap();
    db.store().migrate().await.unwrap();

    assert_eq!(schema(&db.pool).await, reference_schema().await);
    assert_eq!(
        history(&db.pool, "_par_store_migrations").await,
        up_versions()
    );
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, up_versions());
    assert!(
        db.store().get_by_hash("kept").await.unwrap().is_some(),
        "nothing was applied twice"
    );
}

#[tokio::test]
async fn host_cli_applies_the_first_migration_then_migrate_the_rest_then_host_cli_again() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::empty().await;
    let host = host_cli_without_config().await;
    cli_run(&host, &db, Some(up_versions()[0])).await.unwrap();
    // A row written on the first schema (the store itself needs the later migrations).
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('kept', now() + interval '10 minutes', 'p')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    db.store().migrate().await.unwrap();
    // migrate() recorded what it applied in the host's history too: nothing left to re-run.
    cli_run(&host, &db, None).await.unwrap();
    db.store().migrate().await.unwrap();

    assert_eq!(schema(&db.pool).await, reference_schema().await);
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, up_versions());
    assert_eq!(
        history(&db.pool, "_par_store_migrations").await,
        up_versions()
    );
    assert!(db.store().get_by_hash("kept").await.unwrap().is_some());
}

#[tokio::test]
async fn migrate_then_host_cli_with_par_store_config_and_the_reverse() {
    let _shared = LOG_CAPTURE.read().await;
    let reference = reference_schema().await;
    for migrate_first in [true, false] {
        let db = TestDb::empty().await;
        let host = host_cli_with_config().await;
        if migrate_first {
            db.store().migrate().await.unwrap();
        } else {
            cli_run(&host, &db, None).await.unwrap();
        }
        db.store().store(&request("kept")).await.unwrap();
        if migrate_first {
            cli_run(&host, &db, None).await.unwrap();
        } else {
            db.store().migrate().await.unwrap();
        }

        assert_eq!(
            schema(&db.pool).await,
            reference,
            "migrate first: {migrate_first}"
        );
        assert_eq!(
            history(&db.pool, "_par_store_migrations").await,
            up_versions()
        );
        assert!(db.store().get_by_hash("kept").await.unwrap().is_some());
        let host_table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(host_table, None, "migrate first: {migrate_first}");
    }
}

/// The one order `migrate()` cannot reach: it ran on a fresh database, then a host runs
/// sqlx-cli without par-store's `sqlx.toml` for the first time. The CLI re-runs 0001, which
/// fails inside its transaction and changes nothing; the documented command (with
/// `--config`) then has nothing to do.
#[tokio::test]
async fn migrate_then_first_host_cli_run_without_config_fails_and_changes_nothing() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::new().await;
    db.store().store(&request("kept")).await.unwrap();

    let err = cli_run(&host_cli_without_config().await, &db, None)
        .await
        .unwrap_err();
    let code = match &err {
        sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db_err), 1) => {
            db_err.code()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(code.as_deref(), Some("42P07"), "relation already exists");
    assert!(db.store().get_by_hash("kept").await.unwrap().is_some());
    assert_eq!(
        history(&db.pool, "_sqlx_migrations").await,
        Vec::<i64>::new()
    );

    cli_run(&host_cli_with_config().await, &db, None)
        .await
        .unwrap();
    db.store().migrate().await.unwrap();
    assert_eq!(schema(&db.pool).await, reference_schema().await);
    assert!(db.store().get_by_hash("kept").await.unwrap().is_some());
}

/// The README's advice for a host with sqlx migrations of its own: run par-store's with
/// `--config` (or `migrate()`). Without it, par-store's versions land in the host's
/// `_sqlx_migrations`, and the host's own `sqlx migrate run` then stops on a version it does
/// not know; with it, the host's run goes through.
#[tokio::test]
async fn host_cli_without_config_breaks_the_hosts_own_migrations_and_with_config_does_not() {
    let _shared = LOG_CAPTURE.read().await;
    let dir =
        std::env::temp_dir().join(format!("par_store_host_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("20260101000000_host_users.sql"),
        "CREATE TABLE host_users (id bigint PRIMARY KEY);",
    )
    .unwrap();
    let hosts_own = Migrator::new(dir.as_path()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let without_config = TestDb::empty().await;
    cli_run(&host_cli_without_config().await, &without_config, None)
        .await
        .unwrap();
    let err = cli_run(&hosts_own, &without_config, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sqlx::migrate::MigrateError::VersionMissing(1)),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("migration 1 was previously applied but is missing in the resolved migrations"));

    let with_config = TestDb::empty().await;
    cli_run(&host_cli_with_config().await, &with_config, None)
        .await
        .unwrap();
    cli_run(&hosts_own, &with_config, None).await.unwrap();
    with_config.store().migrate().await.unwrap();
    assert_eq!(
        history(&with_config.pool, "_sqlx_migrations").await,
        vec![20260101000000]
    );
}

/// Every start calls `migrate()`: the migrator's "already exists, skipping" notices, which
/// sqlx logs at INFO, read like an error and must not appear. The same capture does see
/// them from sqlx's plain migrator, so the check can fail.
#[tokio::test(flavor = "current_thread")]
async fn migrate_logs_no_notice_on_a_routine_start() {
    let _alone = LOG_CAPTURE.write().await;
    let db = TestDb::new().await;
    let (captured, _default) = Captured::install(
        tracing::Level::INFO,
        tracing_subscriber::fmt::format::FmtSpan::NONE,
    );

    db.store().migrate().await.unwrap();
    let text = captured.text();
    assert!(!text.contains("already exists"), "{text}");

    // Asked up to three times: once in a full PostgreSQL 17 matrix run (of many) the capture
    // saw nothing of the plain migrator's first run; what matters here is that it can.
    let mut text = String::new();
    for _ in 0..3 {
        PostgresStore::migrator().run(&db.pool).await.unwrap();
        text = captured.text();
        if text.contains("already exists, skipping") {
            break;
        }
    }
    assert!(
        text.contains("already exists, skipping"),
        "the capture sees sqlx's notices: {text}"
    );
}

/// par-store's migration lock (src/sql.rs), as another instance's `migrate()` holds it.
const LOCK_MIGRATIONS: &str = "SELECT pg_advisory_lock(7236905154372315439)";

/// A session that holds par-store's migration lock until `release`.
async fn hold_the_migration_lock(db: &TestDb) -> PgConnection {
    let mut holder = PgConnection::connect_with(&db.options).await.unwrap();
    sqlx::query(LOCK_MIGRATIONS)
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

async fn release(mut holder: PgConnection) {
    sqlx::query("SELECT pg_advisory_unlock(7236905154372315439)")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
}

/// The tables of the public schema.
async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The error and its sources, as one line.
fn error_chain(err: &StoreError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(" <- ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Two instances start while a third holds the migration lock for longer than their
/// `statement_timeout`: both wait (the migration session has no statement timeout) and both
/// succeed once the lock is released. One owns its connections, the other is on a pool whose
/// connections carry the same short `statement_timeout`.
#[tokio::test]
async fn migrations_wait_for_the_lock_longer_than_the_statement_timeout() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::empty().await;
    let statement_timeout = StdDuration::from_millis(300);
    let owned = PostgresStoreOptions::new()
        .statement_timeout(Some(statement_timeout))
        .connect_lazy_with(db.options.clone());
    let shared = PostgresStore::new(
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(db.options.clone().options([("statement_timeout", "300")]))
            .await
            .unwrap(),
    );
    let holder = hold_the_migration_lock(&db).await;

    let waiters: Vec<_> = [owned.clone(), shared.clone()]
        .into_iter()
        .map(|store| tokio::spawn(async move { store.migrate().await }))
        .collect();
    tokio::time::sleep(statement_timeout * 3).await;
    for waiter in &waiters {
        assert!(
            !waiter.is_finished(),
            "a migrate() gave up while the lock was held"
        );
    }
    release(holder).await;
    for waiter in waiters {
        tokio::time::timeout(StdDuration::from_secs(30), waiter)
            .await
            .expect("migrate() finished once the lock was free")
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        history(&db.pool, "_par_store_migrations").await,
        up_versions()
    );
    // The stores' own statements keep their short timeout.
    let err = sqlx::query("SELECT pg_sleep(1)")
        .execute(shared.shared_pool().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014")
    );
    owned.store(&request("after")).await.unwrap();
}

/// Past `migration_lock_timeout`, a waiting `migrate()` fails with an error that names the
/// lock and applies nothing; on an owned pool and on a caller's pool.
#[tokio::test]
async fn a_migration_waiting_past_its_lock_timeout_names_the_lock() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::empty().await;
    let limit = StdDuration::from_millis(300);
    let owned = PostgresStoreOptions::new()
        .migration_lock_timeout(Some(limit))
        .connect_lazy_with(db.options.clone());
    let shared = PostgresStoreOptions::new()
        .migration_lock_timeout(Some(limit))
        .with_pool(db.pool.clone());
    let holder = hold_the_migration_lock(&db).await;
    for store in [&owned, &shared] {
        let err = tokio::time::timeout(StdDuration::from_secs(20), store.migrate())
            .await
            .expect("migrate() gave up at its lock timeout")
            .unwrap_err();
        let chain = error_chain(&err);
        assert!(matches!(err, StoreError::Migration { .. }), "{chain}");
        assert!(!err.is_transient(), "{chain}");
        assert!(
            chain.contains("migration lock") && chain.contains("7236905154372315439"),
            "{chain}"
        );
        println!("past the lock timeout: {chain}");
    }
    assert_eq!(
        tables(&db.pool).await,
        Vec::<String>::new(),
        "nothing applied"
    );
    release(holder).await;
    owned.migrate().await.unwrap();
    shared.migrate().await.unwrap();
}

/// In pooler mode, `migrate()` refuses (nothing reaches PgBouncer), and `migrate_with` applies
/// the migrations over a direct connection; the store then works through PgBouncer.
#[tokio::test]
async fn in_pooler_mode_migrate_needs_a_direct_address() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::empty().await;
    let bouncer = common::pgbouncer::PgBouncer::start().await;
    let store = PostgresStoreOptions::new()
        .pooler_mode(true)
        .connect_lazy_with(bouncer.route(&db.options));

    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::MigrationNeedsDirectConnection),
        "{err:?}"
    );
    assert!(err.to_string().contains("migrate_with"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        tables(&db.pool).await,
        Vec::<String>::new(),
        "nothing applied"
    );

    store.migrate_with(db.options.clone()).await.unwrap();
    assert_eq!(
        history(&db.pool, "_par_store_migrations").await,
        up_versions()
    );
    assert_eq!(schema(&db.pool).await, reference_schema().await);
    store.store(&request("through-pgbouncer")).await.unwrap();
    assert!(store
        .consume_by_hash("through-pgbouncer")
        .await
        .unwrap()
        .is_some());
    // Idempotent, like migrate().
    store.migrate_with(db.options.clone()).await.unwrap();
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// A schema migrated by a later release (docs/upgrading.md): expand/contract across releases
// ---------------------------------------------------------------------------------------

/// Records a later release's migration in par-store's history, as sqlx does when it applies
/// one, after running its SQL.
async fn apply_a_later_migration(pool: &PgPool, version: i64, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _par_store_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES ($1, 'a later release', true, '\\x00'::bytea, 0)",
    )
    .bind(version)
    .execute(pool)
    .await
    .unwrap();
}

async fn one_lifecycle(store: &PostgresStore, hash: &str) {
    let request = PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(60), "p")
        .with_client_id("client-a");
    store.store(&request).await.unwrap();
    assert_eq!(
        store.get_by_hash(hash).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(
        store.consume_for_client(hash, "client-a").await.unwrap(),
        par_store::Consumption::Consumed(request)
    );
}

/// Rolled back below a later release whose migration only added what this release can
/// ignore (a nullable column), `migrate()` starts and the store serves: Flyway's
/// `ignoreFutureMigrations`, not sqlx's "previously applied but is missing".
#[tokio::test]
async fn migrate_accepts_a_later_releases_additive_migration_and_serves() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    apply_a_later_migration(
        &db.pool,
        99_999,
        "ALTER TABLE pushed_authorization_requests ADD COLUMN dpop_jkt text",
    )
    .await;
    // Without the compatibility check sqlx refuses the history outright.
    let mut conn = PgConnection::connect_with(&db.options).await.unwrap();
    let plain = PostgresStore::migrator().run(&mut conn).await;
    // A failed sqlx run leaves its advisory lock with its session.
    conn.close().await.unwrap();
    assert!(
        matches!(
            plain,
            Err(sqlx::migrate::MigrateError::VersionMissing(99_999))
        ),
        "{plain:?}"
    );
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    one_lifecycle(&store, "later-additive").await;
    assert_eq!(
        history(&db.pool, PostgresStore::MIGRATIONS_TABLE)
            .await
            .last(),
        Some(&99_999)
    );
}

/// A later release whose migration this release cannot serve records the oldest release
/// that can; `migrate()` refuses to start with `IncompatibleSchema`, naming both, and
/// applies nothing.
#[tokio::test]
async fn migrate_refuses_a_schema_only_a_later_release_can_serve() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    let before = history(&db.pool, PostgresStore::MIGRATIONS_TABLE).await;
    apply_a_later_migration(
        &db.pool,
        99_999,
        "INSERT INTO _par_store_compatibility (migration_version, oldest_release, reason) \
         VALUES (99999, '99.0.0', 'the consume statement reads a column 99.0 adds')",
    )
    .await;
    // A migration of this release missing from the database, to see that nothing runs.
    sqlx::query("DELETE FROM _par_store_migrations WHERE version = $1")
        .bind(before[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    match &err {
        StoreError::IncompatibleSchema {
            schema_version,
            oldest_release,
            this_release,
        } => {
            assert_eq!(*schema_version, 99_999);
            assert_eq!(oldest_release, "99.0.0");
            assert_eq!(*this_release, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("expected IncompatibleSchema, got {other:?}"),
    }
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("99.0.0") && message.contains("99999"),
        "{message}"
    );
    let mut after = history(&db.pool, PostgresStore::MIGRATIONS_TABLE).await;
    after.insert(0, before[0]);
    assert_eq!(
        after,
        [before.clone(), vec![99_999]].concat(),
        "nothing applied"
    );
}

/// An applied version that is neither this release's nor later than its newest is a
/// removed or renamed migration: still refused, as sqlx does.
#[tokio::test]
async fn migrate_still_refuses_a_missing_earlier_migration() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    apply_a_later_migration(&db.pool, 0, "SELECT 1").await;
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { .. }) && err.to_string().contains("missing"),
        "{err}"
    );
}
