//! A host application on sqlx 0.8 with par-store (on sqlx 0.9) beside it: what works and
//! what does not, as docs/sqlx-0.8.md says. Exits non-zero on the first failed check.
//!
//! ```text
//! cargo run --manifest-path tests/sqlx-0.8-host/Cargo.toml
//! ```
//!
//! Takes `DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`) and
//! works in scratch databases of its own, dropped at the end.
//!
//! 1. `code`: the host applies its own migration with its sqlx 0.8 `migrate!` (history in
//!    `_sqlx_migrations`), par-store applies its own with `PostgresStore::connect(..).migrate()`
//!    (history in `_par_store_migrations`); a lifecycle; both restart (migrate again).
//! 2. `cli08`: what sqlx-cli 0.8 does with `sqlx migrate run --source <par-store>/migrations`
//!    (it has no `--config`): sqlx 0.8's `Migrator` on those files, history in the host's
//!    `_sqlx_migrations`. Plain, it refuses (the host's own version is missing from
//!    par-store's files); with `--ignore-missing` it records par-store's versions there. Then
//!    `migrate()` (adopts them), a lifecycle, and the host's own `migrate!` again (refuses
//!    without `ignore_missing`).

use par_store::chrono::{Duration, Utc};
use par_store::prelude::*;
use par_store::{Consumption, PostgresStore, PushedAuthorizationRequest, ReferenceValue};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPool;
use sqlx::{Connection, Executor, PgConnection};
use std::path::Path;

type Error = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// The host's own migrations, embedded by sqlx 0.8.
static HOST_MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The version of the host's one migration (`migrations/20260101000000_host_users.sql`).
const HOST_VERSION: i64 = 20260101000000;

#[tokio::main]
async fn main() {
    if let Err(err) = run().await {
        eprintln!("sqlx-0.8-host: FAIL: {err}");
        std::process::exit(1);
    }
    println!("sqlx-0.8-host: all checks passed");
}

async fn run() -> Result<(), Error> {
    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let par_store_versions = par_store_versions()?;
    for (name, scenario) in [("code", Scenario::Code), ("cli08", Scenario::Cli08)] {
        let db = format!("par_store_sqlx08_{name}_{}", std::process::id());
        let url = scratch(&admin_url, &db).await?;
        let outcome = scenario.run(&url, &par_store_versions).await;
        drop_scratch(&admin_url, &db).await?;
        outcome.map_err(|err| format!("{name}: {err}"))?;
        println!("ok: {name}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Scenario {
    Code,
    Cli08,
}

impl Scenario {
    async fn run(self, url: &str, par_store_versions: &[i64]) -> Result<(), Error> {
        // The host's pool: sqlx 0.8's PgPool. It is not the PgPool `PostgresStore::new` and
        // `PostgresStoreOptions::with_pool` take (sqlx 0.9's): par-store gets a URL instead.
        let host_pool = PgPool::connect(url).await?;
        #[cfg(feature = "pass-sqlx-08-pool")]
        let _ = PostgresStore::new(host_pool.clone());
        HOST_MIGRATOR.run(&host_pool).await?;
        expect_versions(&host_pool, "_sqlx_migrations", &[HOST_VERSION]).await?;

        match self {
            Scenario::Code => {
                let store = PostgresStore::connect(url).await?;
                store.migrate().await?;
                expect_versions(&host_pool, "_sqlx_migrations", &[HOST_VERSION]).await?;
                expect_versions(&host_pool, "_par_store_migrations", par_store_versions).await?;
                lifecycle(&store).await?;

                // A restart: both migrate again, nothing changes.
                HOST_MIGRATOR.run(&host_pool).await?;
                store.migrate().await?;
                expect_versions(&host_pool, "_sqlx_migrations", &[HOST_VERSION]).await?;
                expect_versions(&host_pool, "_par_store_migrations", par_store_versions).await?;
                store.close().await;
            }
            Scenario::Cli08 => {
                // What `sqlx migrate run --source <par-store>/migrations` of sqlx-cli 0.8 runs:
                // sqlx 0.8's Migrator on the files, history in the default `_sqlx_migrations`.
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
                let mut cli = Migrator::new(dir.as_path()).await?;
                // Plain `sqlx migrate run`: the host's own version is missing from par-store's
                // files, so sqlx 0.8 refuses and applies nothing.
                // sqlx-cli runs on one connection of its own, closed when it exits: so here.
                // (On a pool, sqlx 0.8's failed run would keep its advisory lock on the pooled
                // connection, and migrate() below would wait for it until its lock timeout.)
                let mut cli_conn = PgConnection::connect(url).await?;
                match cli.run(&mut cli_conn).await {
                    Err(MigrateError::VersionMissing(HOST_VERSION)) => println!(
                        "cli08: sqlx-cli 0.8 without --ignore-missing refuses: migration \
                         {HOST_VERSION} was previously applied but is missing in the resolved \
                         migrations"
                    ),
                    other => {
                        return Err(format!(
                            "sqlx-cli 0.8's run on a host history gave {other:?}, expected \
                             VersionMissing({HOST_VERSION})"
                        )
                        .into())
                    }
                }
                expect_versions(&host_pool, "_sqlx_migrations", &[HOST_VERSION]).await?;
                // `sqlx migrate run --ignore-missing`: par-store's versions go into the host's
                // `_sqlx_migrations`.
                cli_conn.close().await?;
                cli.set_ignore_missing(true);
                let mut cli_conn = PgConnection::connect(url).await?;
                cli.run(&mut cli_conn).await?;
                cli_conn.close().await?;
                let mut both = par_store_versions.to_vec();
                both.push(HOST_VERSION);
                expect_versions(&host_pool, "_sqlx_migrations", &both).await?;

                // par-store's migrate() adopts them (same versions and checksums): it applies
                // nothing again, and its own history is complete.
                let store = PostgresStore::connect(url).await?;
                store.migrate().await?;
                expect_versions(&host_pool, "_par_store_migrations", par_store_versions).await?;
                expect_versions(&host_pool, "_sqlx_migrations", &both).await?;
                lifecycle(&store).await?;
                store.migrate().await?;
                store.close().await;

                // sqlx-cli 0.8 run again (with --ignore-missing) has nothing left to do.
                let mut cli_conn = PgConnection::connect(url).await?;
                cli.run(&mut cli_conn).await?;
                cli_conn.close().await?;
                expect_versions(&host_pool, "_sqlx_migrations", &both).await?;

                // But the host's own migrator now finds versions it does not know in its
                // history, and refuses to start: sqlx 0.8's VersionMissing.
                // (On its own connection, closed after: a failed run keeps sqlx's advisory lock.)
                let mut host_conn = PgConnection::connect(url).await?;
                match HOST_MIGRATOR.run(&mut host_conn).await {
                    Err(MigrateError::VersionMissing(version))
                        if par_store_versions.contains(&version) =>
                    {
                        println!(
                            "cli08: the host's own migrate! refuses as documented: \
                             migration {version} was previously applied but is missing in \
                             the resolved migrations"
                        );
                    }
                    other => {
                        return Err(format!(
                            "the host's own migrate! after sqlx-cli 0.8 gave {other:?}, \
                             expected VersionMissing for a par-store version"
                        )
                        .into())
                    }
                }
                host_conn.close().await?;
                // With `set_ignore_missing(true)` (sqlx-cli 0.8: `--ignore-missing`) it runs.
                let mut tolerant = Migrator::new(Path::new(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations"
                )))
                .await?;
                tolerant.set_ignore_missing(true);
                tolerant.run(&host_pool).await?;
                expect_versions(&host_pool, "_sqlx_migrations", &both).await?;
            }
        }
        host_pool.close().await;
        Ok(())
    }
}

/// Store, read, consume, consume again: `Consumed`, then `AlreadyConsumed`.
async fn lifecycle(store: &PostgresStore) -> Result<(), Error> {
    let reference = ReferenceValue::generate();
    let hash = reference.hash();
    let request = PushedAuthorizationRequest::new(
        hash.as_str(),
        Utc::now() + Duration::seconds(60),
        "client_id=s6BhdRkqt3&response_type=code",
    )
    .with_client_id("s6BhdRkqt3");
    store.store(&request).await?;
    let read = store.get_by_hash(&hash).await?;
    if read.as_ref().map(|r| r.parameters.as_str()) != Some(request.parameters.as_str()) {
        return Err(format!("get_by_hash gave {read:?}").into());
    }
    match store.consume_for_client(&hash, "s6BhdRkqt3").await? {
        Consumption::Consumed(got) if got.parameters == request.parameters => {}
        other => return Err(format!("first consume gave {other:?}, expected Consumed").into()),
    }
    match store.consume_for_client(&hash, "s6BhdRkqt3").await? {
        Consumption::AlreadyConsumed { .. } => {}
        other => {
            return Err(format!("second consume gave {other:?}, expected AlreadyConsumed").into())
        }
    }
    Ok(())
}

/// The versions of par-store's up migrations, from its `migrations/` folder.
fn par_store_versions() -> Result<Vec<i64>, Error> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".up.sql") {
            let digits = stem.split('_').next().unwrap_or_default();
            versions.push(digits.parse()?);
        }
    }
    versions.sort_unstable();
    if versions.is_empty() {
        return Err("no par-store migrations found".into());
    }
    Ok(versions)
}

/// Fails unless `table` records exactly `expected` (successful, in any order).
async fn expect_versions(pool: &PgPool, table: &str, expected: &[i64]) -> Result<(), Error> {
    let sql = format!("SELECT version FROM {table} WHERE success ORDER BY version");
    let got: Vec<i64> = sqlx::query_scalar(&sql).fetch_all(pool).await?;
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    if got != expected {
        return Err(format!("{table} holds versions {got:?}, expected {expected:?}").into());
    }
    Ok(())
}

async fn scratch(admin_url: &str, db: &str) -> Result<String, Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db}").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await?;
    admin.close().await?;
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let (server, _) = base
        .rsplit_once('/')
        .ok_or("DATABASE_URL has no database name")?;
    Ok(format!("{server}/{db}"))
}

async fn drop_scratch(admin_url: &str, db: &str) -> Result<(), Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await?;
    admin.close().await?;
    Ok(())
}
