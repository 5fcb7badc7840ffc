//! Test support: a fresh PostgreSQL database per test, on the server at `DATABASE_URL`.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod citus;
#[path = "../../examples/support/cluster.rs"]
pub mod cluster;
pub mod fake_backend;
pub mod fault;
pub mod load;
pub mod n_minus_1;
pub mod patroni;
pub mod pgbouncer;

use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use par_store::sqlx::{Connection, PgConnection, PgPool};
use par_store::{PostgresStore, StoreError};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
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

/// The server the tests use, decided once per test binary:
///
/// 1. the one at `DATABASE_URL` (default: the docker-compose one) when it accepts TCP
///    connections;
/// 2. else, where PostgreSQL's server binaries are installed, a throwaway cluster of this
///    test binary's own, started on first use, shared by its tests, and stopped and removed
///    by a watchdog once the binary has exited (so test binaries run one after another each
///    get a fresh one, and none is left behind);
/// 3. else the binary stops with one line that says what to do.
pub fn server_options() -> &'static PgConnectOptions {
    static SERVER: OnceLock<PgConnectOptions> = OnceLock::new();
    SERVER.get_or_init(|| {
        let url = database_url();
        let options = PgConnectOptions::from_str(&url).unwrap_or_else(|err| {
            fail_once(&format!("DATABASE_URL is not a PostgreSQL URL ({err})"))
        });
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        if cluster::answers(&host, port) {
            return options;
        }
        let (options, dir) = cluster::start_until_process_exit().unwrap_or_else(|why| match why {
            cluster::NotStarted::NoServerBinaries => fail_once(&format!(
                "no PostgreSQL answers at {host}:{port} (DATABASE_URL) and no PostgreSQL server \
                 binaries are installed to start one: run `docker compose up -d --wait`, or set \
                 DATABASE_URL to a server that runs"
            )),
            cluster::NotStarted::Failed => {
                fail_once("starting a throwaway PostgreSQL cluster failed")
            }
        });
        print_once(&format!(
            "nothing answers at {host}:{port} (DATABASE_URL): running on a throwaway PostgreSQL \
             cluster on 127.0.0.1:{} ({}), removed when this test binary exits",
            options.get_port(),
            dir.display()
        ));
        options
    })
}

/// Connects to the server's maintenance database (see [`server_options`]). When that fails,
/// the whole test binary stops with one line that says why, instead of one panic per test.
pub async fn admin_connection() -> PgConnection {
    let options = server_options();
    let at = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(options)).await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(par_store::sqlx::Error::Database(err))) if err.code().as_deref() == Some("3D000") => {
            fail_once(&format!(
                "PostgreSQL at {at} answers, but the database {:?} of DATABASE_URL does not exist: \
                 create it (`createdb -h {} -p {} -U {} {}`) or point DATABASE_URL at one that does",
                options.get_database().unwrap_or("postgres"),
                options.get_host(),
                options.get_port(),
                options.get_username(),
                options.get_database().unwrap_or("postgres"),
            ))
        }
        Ok(Err(err)) => fail_once(&format!(
            "PostgreSQL at {at} refused the connection of DATABASE_URL ({err})"
        )),
        Err(_) => fail_once(&format!(
            "PostgreSQL at {at} accepted TCP but did not complete a connection within 10 s"
        )),
    }
}

/// What a test does when an optional binary (PgBouncer, ...) it needs is `missing` (`Err`
/// says which and how to get it): outside CI, prints one line saying the test is skipped and
/// why, and returns `None` (the test then returns and cargo counts it as passed, hence the
/// explicit line); with `CI=true`, fails the test, since CI installs every optional binary.
pub fn require_optional<T>(found: Result<T, String>, test: &str) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(missing) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {missing} (CI=true: CI must install it)")
        }
        Err(missing) => {
            print_once(&format!("SKIPPED {test}: {missing}"));
            None
        }
    }
}

/// Writes one line to the real stderr: the test harness captures `eprintln!`, and its
/// capture is lost when the process exits.
fn print_once(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "par-store tests: {message}");
}

fn fail_once(message: &str) -> ! {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    PRINTED.call_once(|| print_once(message));
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
        let options = server_options().clone().database(&name);
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

    /// Switches new connections to this database on or off (`ALTER DATABASE ...
    /// ALLOW_CONNECTIONS`), as an administrator does for maintenance. Open connections stay.
    pub async fn allow_connections(&self, allow: bool) {
        let mut admin = admin_connection().await;
        par_store::sqlx::query(par_store::sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("ALTER DATABASE ... ALLOW_CONNECTIONS");
        let _ = admin.close().await;
    }

    /// Number of rows in the table, expired ones included.
    pub async fn row_count(&self) -> i64 {
        par_store::sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Rows of requests not consumed (consumed markers, in a table of their own, left out),
    /// expired or not.
    pub async fn unconsumed_row_count(&self) -> i64 {
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

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's logs at `level` and above as plain text (with the spans'
    /// opening and closing as `span_events` says) until the guard is dropped. Callsites
    /// first hit on another test's thread may have cached "never": they are asked again.
    pub fn install(
        level: tracing::Level,
        span_events: tracing_subscriber::fmt::format::FmtSpan,
    ) -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_span_events(span_events)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        (captured, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The server binaries' directory, or `None` when the test is to be skipped for want of
/// them (see [`require_optional`]: outside CI a line says so; under
/// `CI=true` the test fails). `test` names the test in that line.
pub fn require_server_bindir(test: &str) -> Option<PathBuf> {
    require_server_tools(test, &[])
}

/// Like [`require_server_bindir`], for a test that also runs `tools` (e.g. `pg_basebackup`,
/// which some builds of the server binaries lack) from the same directory.
pub fn require_server_tools(test: &str, tools: &[&str]) -> Option<PathBuf> {
    let found = match cluster::find_server_bindir() {
        None => Err(
            "starts its own PostgreSQL cluster and needs the server binaries (initdb, \
             pg_ctl), which are not in $PG_BINDIR, /usr/lib/postgresql/*/bin, `pg_config \
             --bindir` or PATH: install the PostgreSQL server package (`.ci/run` does: apt-get \
             install postgresql) or set PG_BINDIR"
                .to_owned(),
        ),
        Some(dir) => match tools.iter().find(|tool| !dir.join(tool).is_file()) {
            Some(tool) => Err(format!(
                "needs {tool} beside initdb in {}, which lacks it: install the PostgreSQL \
                 server package (`.ci/run` does: apt-get install postgresql) or set PG_BINDIR",
                dir.display()
            )),
            None => Ok(dir),
        },
    };
    require_optional(found, test)
}
