//! Test support: a fresh PostgreSQL database per test, on the server at `DATABASE_URL`.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cluster;
pub mod fault;
pub mod pgbouncer;

use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use par_store::sqlx::{Connection, PgConnection, PgPool};
use par_store::{PostgresStore, StoreError};
use std::str::FromStr;
use std::time::Duration;

/// A distinct reference value hash per `n`, shaped like Base64(SHA-256(value)): 44 characters.
pub fn hash(n: u32) -> String {
    format!("{n:0>43}=")
}

/// A short name for the kind of a store error, for the tests' figures.
pub fn error_kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Timeout { .. } => "timeout",
        StoreError::Duplicate => "duplicate",
        StoreError::InvalidInput { .. } => "invalid_input",
        StoreError::Database { .. } => "database",
        StoreError::Migration { .. } => "migration",
        _ => "other",
    }
}

/// Waits for every task; fails the test when one panicked or is still running after `limit`
/// (`what` names a task in the message: "a client").
pub async fn join_within<T>(tasks: Vec<tokio::task::JoinHandle<T>>, limit: Duration, what: &str) {
    for task in tasks {
        tokio::time::timeout(limit, task)
            .await
            .unwrap_or_else(|_| panic!("{what} hung"))
            .unwrap_or_else(|err| panic!("{what} panicked: {err}"));
    }
}

/// The default matches `docker-compose.yml` and `.env.example`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// `DATABASE_URL` from the environment (or `.env`), else the docker-compose default.
pub fn database_url() -> String {
    let _ = dotenvy::dotenv();
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// Connects to the server's maintenance database. When nothing answers, the whole test
/// binary stops with one line that says how to start PostgreSQL, instead of one panic per test.
pub async fn admin_connection() -> PgConnection {
    let url = database_url();
    let options = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|err| fail_once(&format!("DATABASE_URL is not a PostgreSQL URL ({err})")));
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => fail_once(&format!(
            "no PostgreSQL answers at {}:{} ({err}); start one with `docker compose up -d` or set DATABASE_URL",
            options.get_host(),
            options.get_port()
        )),
        Err(_) => fail_once(&format!(
            "no PostgreSQL answered at {}:{} within 5 s; start one with `docker compose up -d` or set DATABASE_URL",
            options.get_host(),
            options.get_port()
        )),
    }
}

fn fail_once(message: &str) -> ! {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    // Written to the real stderr: the test harness captures `eprintln!`, and its capture is
    // lost when the process exits.
    PRINTED.call_once(|| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "par-store tests: {message}");
    });
    std::process::exit(1);
}

/// A database created for one test and dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh database with the par-store migrations applied.
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        PostgresStore::new(db.pool.clone())
            .migrate()
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh database without any migrations.
    pub async fn empty() -> TestDb {
        TestDb::empty_with_pool(PgPoolOptions::new().max_connections(8)).await
    }

    /// A fresh, migrated database whose pool is built from `pool_options`.
    pub async fn with_pool(pool_options: PgPoolOptions) -> TestDb {
        let db = TestDb::empty_with_pool(pool_options).await;
        PostgresStore::new(db.pool.clone())
            .migrate()
            .await
            .expect("migrations apply");
        db
    }

    async fn empty_with_pool(pool_options: PgPoolOptions) -> TestDb {
        let name = format!("par_store_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection().await;
        par_store::sqlx::query(par_store::sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        )))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE (the role needs CREATEDB)");
        let _ = admin.close().await;
        let options = PgConnectOptions::from_str(&database_url())
            .expect("valid DATABASE_URL")
            .database(&name);
        let pool = pool_options
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        TestDb {
            name,
            options,
            pool,
        }
    }

    /// A store on this database's pool.
    pub fn store(&self) -> PostgresStore {
        PostgresStore::new(self.pool.clone())
    }

    /// Number of rows in the table, expired ones included.
    pub async fn row_count(&self) -> i64 {
        par_store::sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // WITH (FORCE) ends the pool's remaining connections.
        let name = std::mem::take(&mut self.name);
        admin_cleanup(vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]);
    }
}

/// Runs clean-up statements on the maintenance database from a `Drop` impl, which runs
/// inside the test's runtime: on a thread and a runtime of their own. Errors are ignored.
pub fn admin_cleanup(statements: Vec<String>) {
    let cleaned = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut admin = admin_connection().await;
            for statement in statements {
                let _ = par_store::sqlx::query(par_store::sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await;
            }
            let _ = admin.close().await;
        });
    });
    let _ = cleaned.join();
}
