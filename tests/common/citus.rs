//! A throwaway Citus cluster for the tests: a coordinator and two workers, each a
//! [`TempCluster`] on a free port on 127.0.0.1 with `shared_preload_libraries = 'citus'`,
//! started once per test binary and stopped and removed when the binary exits.
//!
//! Each test gets a schema of its own on the coordinator ([`CitusSchema`]): its connections
//! set `search_path` to it, so par-store's unqualified table names (the table and its
//! migration history) land there, and dropping the schema drops the shards on the workers.
//!
//! Citus is built by `.ci/install-citus` into the system PostgreSQL 15. Where it is missing,
//! [`citus`] returns `None` after one line saying so ("skipped: Citus not installed"), unless
//! `CI=true`, where a missing Citus fails the test (but for servers chosen by `PG_BINDIR`, as
//! `.ci/pg-matrix` does: Citus is built for the system PostgreSQL 15 only).

use super::cluster::{server_bindir, TempCluster};
use par_store::sqlx::postgres::{PgConnectOptions, PgSslMode};
use par_store::sqlx::{self, Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The Citus version `.ci/install-citus` installs (`citus.control`'s `default_version`).
const CONTROL_VERSION: &str = "13.2-1";

/// The running cluster: the coordinator's connect options (database `postgres`, user
/// `postgres`) and the workers' ports.
#[derive(Clone, Debug)]
pub struct Citus {
    pub coordinator: PgConnectOptions,
    pub worker_ports: Vec<u16>,
}

/// Why Citus cannot be used here, if it cannot.
fn missing() -> Option<String> {
    let bindir = server_bindir();
    let sharedir = std::process::Command::new(bindir.join("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let Some(sharedir) = sharedir else {
        return Some(format!("no pg_config in {}", bindir.display()));
    };
    let control = sharedir.join("extension/citus.control");
    match std::fs::read_to_string(&control) {
        Ok(text) if text.contains(&format!("default_version = '{CONTROL_VERSION}'")) => None,
        Ok(_) => Some(format!(
            "{} is not Citus {CONTROL_VERSION}",
            control.display()
        )),
        Err(_) => Some(format!("no {}", control.display())),
    }
}

/// The cluster of this test binary, started on first use; `None` (after one line) when Citus
/// is not installed and `CI` is not `true`. Panics when the cluster cannot be started, or
/// when Citus is missing under `CI=true` (`.ci/run` installs it).
pub fn citus() -> Option<&'static Citus> {
    static CLUSTER: OnceLock<Option<Citus>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if let Some(why) = missing() {
                // .ci/pg-matrix points PG_BINDIR at other PostgreSQL builds, for which Citus
                // is not built: the Citus tests run in .ci/run's own test step instead.
                let other_server = std::env::var_os("PG_BINDIR").is_some();
                if std::env::var("CI").as_deref() == Ok("true") && !other_server {
                    panic!(
                        "Citus is not installed ({why}); CI=true: .ci/install-citus must run first"
                    );
                }
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "par-store tests: SKIPPED every Citus test of this binary: skipped: Citus not \
                     installed ({why}; run .ci/install-citus)"
                );
                return None;
            }
            // On a thread and runtime of its own: this may be called inside any test's runtime.
            let started = std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(start())
            })
            .join()
            .expect("starting the Citus cluster failed (see the panic above)");
            Some(started)
        })
        .as_ref()
}

/// Starts a node with Citus preloaded; enough connections for the coordinator's connections
/// to the workers (up to one per shard per statement) beside the tests' own.
async fn node() -> TempCluster {
    let node = TempCluster::init().await;
    node.append_config(
        "shared_preload_libraries = 'citus'\n\
         max_connections = 300\n\
         citus.log_distributed_deadlock_detection = off\n",
    );
    node.start().await;
    node
}

async fn start() -> Citus {
    let coordinator = node().await;
    let workers = [node().await, node().await];
    for node in std::iter::once(&coordinator).chain(&workers) {
        let mut conn = connect(&node.connect_options()).await;
        sqlx::raw_sql("CREATE EXTENSION citus")
            .execute(&mut conn)
            .await
            .expect("CREATE EXTENSION citus");
        let _ = conn.close().await;
    }
    let mut conn = connect(&coordinator.connect_options()).await;
    sqlx::query("SELECT citus_set_coordinator_host('127.0.0.1', $1)")
        .bind(i32::from(coordinator.port()))
        .execute(&mut conn)
        .await
        .expect("citus_set_coordinator_host");
    for worker in &workers {
        sqlx::query("SELECT citus_add_node('127.0.0.1', $1)")
            .bind(i32::from(worker.port()))
            .execute(&mut conn)
            .await
            .expect("citus_add_node");
    }
    let _ = conn.close().await;
    let worker_ports = workers.iter().map(TempCluster::port).collect();
    let (options, dir) = coordinator.keep_until_process_exit();
    for worker in workers {
        worker.keep_until_process_exit();
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "par-store tests: a throwaway Citus cluster: coordinator on 127.0.0.1:{} ({}), \
         workers on {worker_ports:?}; removed when this test binary exits",
        options.get_port(),
        dir.display()
    );
    Citus {
        coordinator: plain(options),
        worker_ports,
    }
}

/// Citus switches TLS on with a self-signed certificate that rustls refuses; these
/// clusters listen on 127.0.0.1 only.
fn plain(options: PgConnectOptions) -> PgConnectOptions {
    options.ssl_mode(PgSslMode::Disable)
}

async fn connect(options: &PgConnectOptions) -> PgConnection {
    let options = plain(options.clone());
    tokio::time::timeout(
        Duration::from_secs(30),
        PgConnection::connect_with(&options),
    )
    .await
    .expect("connecting to a Citus node timed out")
    .expect("connect to a Citus node")
}

/// A schema of one test on the coordinator, dropped (with its shards) at the end.
pub struct CitusSchema {
    pub name: String,
    /// Connect options whose connections use the schema (`search_path`).
    pub options: PgConnectOptions,
}

impl CitusSchema {
    /// A new, empty schema on `cluster`'s coordinator.
    pub async fn new(cluster: &Citus) -> CitusSchema {
        let name = format!(
            "par_store_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = connect(&cluster.coordinator).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE SCHEMA");
        let _ = conn.close().await;
        let options = cluster
            .coordinator
            .clone()
            .options([("search_path", name.as_str())]);
        CitusSchema { name, options }
    }

    /// A pool of `max_connections` on the schema.
    pub async fn pool(&self, max_connections: u32) -> PgPool {
        par_store::sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options.clone())
            .await
            .expect("connect to the coordinator")
    }

    /// One connection on the schema.
    pub async fn connection(&self) -> PgConnection {
        connect(&self.options).await
    }
}

impl Drop for CitusSchema {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let Some(cluster) = citus() else { return };
        let options = cluster.coordinator.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    if let Ok(mut conn) = PgConnection::connect_with(&plain(options)).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {name} CASCADE"
                        )))
                        .execute(&mut conn)
                        .await;
                        let _ = conn.close().await;
                    }
                });
        })
        .join();
    }
}
