//! Security: least privilege (the roles of docs/roles.sql), TLS with `sslmode=verify-full`
//! (feature `rustls`), nothing secret in logs or `Debug` output, and SQL injection.

mod common;

use chrono::Utc;
use common::{Captured, TestDb};
use par_store::sqlx::postgres::PgConnectOptions;
use par_store::sqlx::{self, PgPool};
use par_store::{
    CleanupJob, CleanupOptions, MemoryStore, PostgresStore, PostgresStoreOptions,
    PushedAuthorizationRequest, PushedAuthorizationRequestStore,
    PushedAuthorizationRequestStoreExt, ReferenceValue, StoreError,
};
use std::time::Duration;
use tracing_subscriber::fmt::format::FmtSpan;

fn request(hash: &str, parameters: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash,
        Utc::now() + chrono::Duration::seconds(600),
        parameters,
    )
}

/// The log test sets a `tracing` subscriber as its thread's default. Other tests running at
/// the same time register the store's callsites concurrently, and tracing-core can then cache
/// them as uninteresting: the log test would see nothing. It runs alone (write lock); the
/// others run side by side (read lock).
static LOG_CAPTURE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

// ---------------------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------------------

/// The documented role setup, with role names unique to one test.
const ROLES_SQL: &str = include_str!("../docs/roles.sql");

/// An owner and a runtime role created from docs/roles.sql; dropped (after the test's
/// database, which holds everything they own) when this goes out of scope.
struct Roles {
    owner: String,
    owner_password: String,
    runtime: String,
    runtime_password: String,
}

impl Roles {
    fn new() -> Roles {
        let suffix = random_suffix();
        Roles {
            owner: format!("par_owner_{suffix}"),
            owner_password: format!("owner-{}", random_suffix()),
            runtime: format!("par_runtime_{suffix}"),
            runtime_password: format!("runtime-{}", random_suffix()),
        }
    }

    /// The statements of one step of docs/roles.sql, with this test's names and passwords.
    fn step(&self, number: u32) -> Vec<String> {
        let mut in_step = false;
        let mut sql = String::new();
        for line in ROLES_SQL.lines() {
            if let Some(rest) = line.strip_prefix("-- Step ") {
                in_step = rest.starts_with(&format!("{number},"));
            } else if in_step && !line.trim_start().starts_with("--") {
                sql.push_str(line);
                sql.push('\n');
            }
        }
        sql.replace("par_store_owner", &self.owner)
            .replace("par_store_runtime", &self.runtime)
            .replace("change-me-owner", &self.owner_password)
            .replace("change-me-runtime", &self.runtime_password)
            .split(';')
            .map(str::trim)
            .filter(|statement| !statement.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn owner_options(&self, db: &TestDb) -> PgConnectOptions {
        db.options
            .clone()
            .username(&self.owner)
            .password(&self.owner_password)
    }

    fn runtime_options(&self, db: &TestDb) -> PgConnectOptions {
        db.options
            .clone()
            .username(&self.runtime)
            .password(&self.runtime_password)
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        common::admin_cleanup(
            [&self.owner, &self.runtime]
                .map(|role| format!("DROP ROLE IF EXISTS {role}"))
                .to_vec(),
        );
    }
}

async fn run_all(pool: &PgPool, statements: &[String]) {
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(pool)
            .await
            .unwrap_or_else(|err| panic!("docs/roles.sql: {statement}: {err}"));
    }
}

async fn as_owner(pool: &PgPool, statement: &str) {
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|err| panic!("{statement}: {err}"));
}

/// A store and, for the test's own statements, a pool that logs in as the same role (the
/// store owns its connections).
struct AsRole {
    store: PostgresStore,
    pool: PgPool,
}

/// Steps 1 to 3 of docs/roles.sql on `db`: the owner (who applied the migrations) and the
/// runtime role.
async fn owner_and_runtime(roles: &Roles, db: &TestDb) -> (AsRole, AsRole) {
    run_all(&db.pool, &roles.step(1)).await;
    let owner = PostgresStoreOptions::new()
        .connect_with(roles.owner_options(db))
        .await
        .expect("connect as the owner");
    owner
        .migrate()
        .await
        .expect("the owner applies the migrations");
    let owner_pool = PgPool::connect_with(roles.owner_options(db)).await.unwrap();
    run_all(&owner_pool, &roles.step(3)).await;
    let runtime = PostgresStoreOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(roles.runtime_options(db))
        .await
        .expect("connect as the runtime role");
    let runtime_pool = PgPool::connect_with(roles.runtime_options(db))
        .await
        .unwrap();
    (
        AsRole {
            store: owner,
            pool: owner_pool,
        },
        AsRole {
            store: runtime,
            pool: runtime_pool,
        },
    )
}

/// Asserts that `err` is the database refusing a privilege (SQLSTATE 42501), and that the
/// store's mapping makes it a non-transient `StoreError::Database`.
fn assert_permission_denied(what: &str, err: StoreError) {
    assert!(
        matches!(err, StoreError::Database { .. }),
        "{what}: expected StoreError::Database, got {err:?}"
    );
    assert!(!err.is_transient(), "{what}");
    let code = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<sqlx::Error>())
        .and_then(|err| err.as_database_error())
        .and_then(|db| db.code().map(|code| code.into_owned()));
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "{what}: expected insufficient_privilege, got {err}"
    );
}

#[tokio::test]
async fn store_or_replace_needs_step_4_of_the_roles_and_the_key_stays_out_of_reach() {
    let _shared = LOG_CAPTURE.read().await;
    let roles = Roles::new();
    let db = TestDb::empty().await;
    let (owner, runtime) = owner_and_runtime(&roles, &db).await;
    let store = runtime.store.clone();

    let first = request("replaced", "first").with_client_id("client-a");
    let err = store.store_or_replace(&first).await.unwrap_err();
    assert_permission_denied("store_or_replace without step 4", err);

    run_all(&owner.pool, &roles.step(4)).await;
    store.store_or_replace(&first).await.unwrap();
    let second = request("replaced", "second").with_client_id("client-b");
    store.store_or_replace(&second).await.unwrap();
    assert_eq!(store.get_by_hash("replaced").await.unwrap(), Some(second));
    assert_eq!(store.delete_by_client_id("client-b").await.unwrap(), 1);
    let err =
        sqlx::query("UPDATE pushed_authorization_requests SET reference_value_hash = 'other'")
            .execute(&runtime.pool)
            .await
            .expect_err("the key");
    assert_permission_denied("updating the key after step 4", StoreError::from(err));
}

#[tokio::test]
async fn the_runtime_role_runs_every_operation_and_cannot_change_the_schema() {
    let _shared = LOG_CAPTURE.read().await;
    // Declared first, dropped last: after the database that holds what the owner owns.
    let roles = Roles::new();
    let db = TestDb::empty().await;
    let (owner, runtime) = owner_and_runtime(&roles, &db).await;
    let store = runtime.store.clone();
    let (owner_pool, runtime_pool) = (owner.pool.clone(), runtime.pool.clone());
    let owner = owner.store;

    // The server never writes the runtime role's bind parameters to its log.
    let logged: String = sqlx::query_scalar("SHOW log_parameter_max_length")
        .fetch_one(&runtime_pool)
        .await
        .unwrap();
    assert_eq!(logged, "0");

    // Every operation works.
    let live = request("runtime-1", "client_id=a");
    store.store(&live).await.unwrap();
    assert!(matches!(
        store.store(&live).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(
        store.get_by_hash("runtime-1").await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(
        store.consume_by_hash("runtime-1").await.unwrap(),
        Some(live)
    );
    assert_eq!(store.consume_by_hash("runtime-1").await.unwrap(), None);
    as_owner(
        &owner_pool,
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('expired-1', now() - interval '1 second', 'p'), \
                ('expired-2', now() - interval '1 second', 'p')",
    )
    .await;
    assert_eq!(store.consume_by_hash("expired-1").await.unwrap(), None);
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    let cleanup = CleanupJob::spawn(
        store.clone(),
        CleanupOptions::new()
            .first_run_jitter(false)
            .interval(Duration::from_millis(20)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = cleanup.stats();
    cleanup.shutdown().await;
    assert!(stats.passes >= 1 && stats.failed_passes == 0, "{stats:?}");

    // The schema, the migration history and other tables are out of reach.
    let refused = [
        "ALTER TABLE pushed_authorization_requests ADD COLUMN extra text",
        "ALTER TABLE pushed_authorization_requests DROP CONSTRAINT pushed_authorization_requests_hash_length",
        "DROP TABLE pushed_authorization_requests",
        "TRUNCATE pushed_authorization_requests",
        "CREATE TABLE stolen (data text)",
        "CREATE INDEX stolen_idx ON pushed_authorization_requests (parameters)",
        "UPDATE pushed_authorization_requests SET expires_at = now() + interval '1 year'",
        "UPDATE pushed_authorization_requests SET client_id = 'other'",
        "UPDATE pushed_authorization_requests SET reference_value_hash = 'other'",
        "SELECT * FROM _par_store_migrations",
        "DELETE FROM _par_store_migrations",
        // docs/security.md, "Edges": a consumed marker cannot be revived or moved by the
        // runtime role (only its kept parameters can be cleared, which RELOAD does).
        "UPDATE pushed_authorization_request_markers SET consumed_at = now()",
        "UPDATE pushed_authorization_request_markers SET consumed_by = 'other'",
        "UPDATE pushed_authorization_request_markers SET expires_at = now() + interval '1 year'",
        "UPDATE pushed_authorization_request_markers SET client_id = 'other'",
        "UPDATE pushed_authorization_request_markers SET reopenable = true",
        "DELETE FROM _par_store_compatibility",
    ];
    for statement in refused {
        let err = sqlx::query(statement)
            .execute(&runtime_pool)
            .await
            .expect_err(statement);
        assert_permission_denied(statement, StoreError::from(err));
    }
    assert!(
        matches!(store.migrate().await, Err(StoreError::Migration { .. })),
        "the runtime role must not be able to run migrations, and gets a Migration error"
    );

    // A privilege missing at run time is a database error, not a transient one.
    as_owner(
        &owner_pool,
        &format!(
            "REVOKE INSERT ON pushed_authorization_requests FROM {}",
            roles.runtime
        ),
    )
    .await;
    let err = store.store(&request("runtime-2", "p")).await.unwrap_err();
    assert_permission_denied("store without INSERT", err);
    // And cleanup needs the column grant of docs/roles.sql for its row locks.
    as_owner(
        &owner_pool,
        &format!(
            "REVOKE UPDATE (created_at) ON pushed_authorization_requests FROM {}",
            roles.runtime
        ),
    )
    .await;
    let err = store.delete_expired().await.unwrap_err();
    assert_permission_denied("delete_expired without step 3's UPDATE grant", err);

    store.close().await;
    owner.close().await;
    runtime_pool.close().await;
    owner_pool.close().await;
    drop(db);
    drop(roles);
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[cfg(feature = "rustls")]
mod tls {
    use super::*;
    use crate::common::cluster::TempCluster;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// A self-signed test CA: its issuer (to sign with) and its certificate in PEM.
    fn certificate_authority(name: &str) -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        (Issuer::new(params, key), certificate.pem())
    }

    /// A server certificate for `localhost` (only) and its private key, in PEM.
    fn server_certificate(issuer: &Issuer<'static, KeyPair>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStoreOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
    }

    fn assert_certificate_refused(what: &str, result: Result<PostgresStore, StoreError>) {
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: the connection must be refused"));
        let message = err.to_string();
        println!("{what}: {message}");
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{what}: expected Unavailable, got {err:?}"
        );
        assert!(
            message.to_lowercase().contains("certificate"),
            "{what}: the message must say the certificate was refused: {message}"
        );
    }

    #[tokio::test]
    async fn verify_full_accepts_the_servers_ca_and_refuses_another() {
        let test = "security::tls::verify_full_accepts_the_servers_ca_and_refuses_another";
        if crate::common::require_server_bindir(test).is_none() {
            return;
        }
        let _shared = LOG_CAPTURE.read().await;
        let (ca, ca_pem) = certificate_authority("par-store test CA");
        let (_other_ca, other_ca_pem) = certificate_authority("some other CA");
        let (certificate_pem, key_pem) = server_certificate(&ca);

        let cluster = TempCluster::init().await;
        let certificate = cluster.write_file("server.crt", certificate_pem.as_bytes(), 0o644);
        let key = cluster.write_file("server.key", key_pem.as_bytes(), 0o600);
        let ca_file = cluster.write_file("ca.pem", ca_pem.as_bytes(), 0o644);
        let other_ca_file = cluster.write_file("other-ca.pem", other_ca_pem.as_bytes(), 0o644);
        cluster.append_config(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            certificate.display(),
            key.display()
        ));
        // TCP connections must use TLS.
        cluster.write_hba("local all all trust\nhostssl all all 127.0.0.1/32 trust\n");
        cluster.start().await;
        let port = cluster.port();
        let url = |host: &str, mode: &str, root: &std::path::Path| {
            format!(
                "postgres://postgres@{host}:{port}/postgres?sslmode={mode}&sslrootcert={}",
                root.display()
            )
        };

        // The right CA and the name in the certificate: a verified, encrypted connection.
        let store = connect(&url("localhost", "verify-full", &ca_file))
            .await
            .expect("verify-full with the server's CA");
        // Every client session, the store's included, is encrypted.
        let observer = PgPool::connect(&url("localhost", "verify-full", &ca_file))
            .await
            .unwrap();
        let (sessions, all_ssl, version): (i64, bool, Option<String>) = sqlx::query_as(
            "SELECT count(*), bool_and(s.ssl), max(s.version) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'client backend'",
        )
        .fetch_one(&observer)
        .await
        .unwrap();
        observer.close().await;
        assert!(
            sessions >= 2,
            "the store's session and the observer's: {sessions}"
        );
        assert!(all_ssl, "a session is not encrypted");
        println!("verify-full with the right CA: connected over {version:?}");
        store.migrate().await.unwrap();
        let stored = request("tls-1", "client_id=a");
        store.store(&stored).await.unwrap();
        assert_eq!(store.consume_by_hash("tls-1").await.unwrap(), Some(stored));

        // Another CA: refused, and the error says why.
        assert_certificate_refused(
            "verify-full with another CA",
            connect(&url("localhost", "verify-full", &other_ca_file)).await,
        );
        // The right CA but a host name the certificate does not name.
        assert_certificate_refused(
            "verify-full to 127.0.0.1 (the certificate names localhost)",
            connect(&url("127.0.0.1", "verify-full", &ca_file)).await,
        );
        // Without TLS the server refuses (hostssl only).
        let err = connect(&url("localhost", "disable", &ca_file))
            .await
            .expect_err("a plain connection must be refused");
        assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
        println!("sslmode=disable: {err}");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// Nothing secret in logs or Debug output
// ---------------------------------------------------------------------------------------

/// Secrets of one test: request parameters and reference value hashes as a server makes them.
struct Secrets {
    hashes: Vec<String>,
    parameters: Vec<String>,
}

impl Secrets {
    fn hash(&mut self) -> String {
        let hash = ReferenceValue::generate().hash();
        self.hashes.push(hash.clone());
        hash
    }

    fn parameters(&mut self) -> String {
        let secret = ReferenceValue::generate().hash();
        let parameters = format!("client_id=s6BhdRkqt3&code_challenge={secret}");
        self.parameters.push(secret);
        parameters
    }

    fn request(&mut self, ttl: chrono::Duration) -> PushedAuthorizationRequest {
        let hash = self.hash();
        let parameters = self.parameters();
        PushedAuthorizationRequest::new(hash, Utc::now() + ttl, parameters)
    }
}

/// Every store operation on `store`, successful and not, with every result's `Debug` logged
/// too.
async fn exercise<S>(store: &S, secrets: &mut Secrets, max_parameters_len: usize)
where
    S: PushedAuthorizationRequestStore,
{
    let long = chrono::Duration::seconds(600);
    let live = secrets.request(long);
    tracing::info!(request = ?live, "storing");
    let results = vec![
        format!("{:?}", store.store(&live).await),
        // Duplicate
        format!("{:?}", store.store(&live).await),
        format!("{:?}", store.get_by_hash(&live.reference_value_hash).await),
        format!("{:?}", store.get_by_hash(&secrets.hash()).await),
        format!(
            "{:?}",
            store.consume_by_hash(&live.reference_value_hash).await
        ),
        format!(
            "{:?}",
            store.consume_by_hash(&live.reference_value_hash).await
        ),
    ];
    // Bad input that carries secrets.
    let mut bad = Vec::new();
    let hash = secrets.hash();
    bad.push(PushedAuthorizationRequest::new(
        format!("{hash}{hash}{hash}"),
        Utc::now() + long,
        secrets.parameters(),
    ));
    bad.push(PushedAuthorizationRequest::new(
        format!("{}\n", secrets.hash()),
        Utc::now() + long,
        secrets.parameters(),
    ));
    bad.push(PushedAuthorizationRequest::new(
        secrets.hash(),
        Utc::now() + long,
        format!("{}\0", secrets.parameters()),
    ));
    bad.push(PushedAuthorizationRequest::new(
        secrets.hash(),
        Utc::now() + long,
        secrets.parameters().repeat(max_parameters_len),
    ));
    bad.push(PushedAuthorizationRequest::new(
        secrets.hash(),
        Utc::now() - long,
        secrets.parameters(),
    ));
    let mut outcomes = results;
    for request in &bad {
        let result = store.store(request).await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput { .. })),
            "{result:?}"
        );
        outcomes.push(format!("{result:?}"));
        outcomes.push(format!(
            "{:?}",
            store.get_by_hash(&request.reference_value_hash).await
        ));
        outcomes.push(format!(
            "{:?}",
            store.consume_by_hash(&request.reference_value_hash).await
        ));
    }
    // Consume of an expired request.
    let expiring = secrets.request(chrono::Duration::milliseconds(100));
    outcomes.push(format!("{:?}", store.store(&expiring).await));
    tokio::time::sleep(Duration::from_millis(150)).await;
    outcomes.push(format!(
        "{:?}",
        store.get_by_hash(&expiring.reference_value_hash).await
    ));
    outcomes.push(format!(
        "{:?}",
        store.consume_by_hash(&expiring.reference_value_hash).await
    ));
    for outcome in outcomes {
        tracing::info!(%outcome, "result");
    }
}

/// Stores a request that expires at once, then runs a cleanup job until it removed it.
async fn clean_up<S>(store: S, secrets: &mut Secrets)
where
    S: PushedAuthorizationRequestStore + par_store::ExpiredRequestCleaner + Clone + 'static,
{
    store
        .store(&secrets.request(chrono::Duration::milliseconds(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let job = CleanupJob::spawn(
        store,
        CleanupOptions::new()
            .first_run_jitter(false)
            .interval(Duration::from_millis(20)),
    );
    for _ in 0..250 {
        if job.stats().rows_removed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = job.stats();
    tracing::info!(?stats, ?job, "cleanup");
    job.shutdown().await;
    assert!(stats.rows_removed > 0, "{stats:?}");
}

/// src/telemetry.rs: a span no subscriber wants (here, at INFO: the span is a DEBUG one) is
/// not entered or filled in, but failures from the database side are still logged at WARN,
/// with the error and without the request.
#[tokio::test(flavor = "current_thread")]
async fn a_failure_is_logged_at_warn_when_the_operation_span_is_off() {
    let _alone = LOG_CAPTURE.write().await;
    let (captured, _default) = Captured::install(tracing::Level::INFO, FmtSpan::NONE);

    let unreachable = PostgresStoreOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with("postgres://postgres@127.0.0.1:9/postgres".parse().unwrap());
    let parameters = format!("secret-parameters-{}", random_suffix());
    let live = request(&common::hash(1), &parameters);
    let result = unreachable.store(&live).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    let text = captured.text();
    assert!(
        text.contains("WARN") && text.contains("pushed authorization request store failed"),
        "{text}"
    );
    assert!(text.contains("error="), "{text}");
    assert!(!text.contains(&parameters), "{text}");
    // The operation span is DEBUG: off at INFO.
    assert!(!text.contains("par_store.operation"), "{text}");
}

#[tokio::test]
async fn nothing_secret_reaches_the_logs_or_debug_output() {
    let _alone = LOG_CAPTURE.write().await;
    // Everything below runs on this thread (a current-thread runtime), spawned tasks included.
    let (captured, _default) = Captured::install(tracing::Level::TRACE, FmtSpan::FULL);

    let mut secrets = Secrets {
        hashes: Vec::new(),
        parameters: Vec::new(),
    };
    let max_parameters_len = 256;

    let db = TestDb::new().await;
    let postgres = PostgresStoreOptions::new()
        .max_parameters_len(max_parameters_len)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    tracing::info!(store = ?postgres, options = ?PostgresStoreOptions::new(), "postgres store");
    exercise(&postgres, &mut secrets, max_parameters_len).await;
    assert!(postgres.delete_expired().await.is_ok());
    clean_up(postgres.clone(), &mut secrets).await;

    let memory = MemoryStore::new().max_parameters_len(max_parameters_len);
    tracing::info!(store = ?memory, "memory store");
    exercise(&memory, &mut secrets, max_parameters_len).await;
    assert!(memory.delete_expired().await.is_ok());
    clean_up(memory.clone(), &mut secrets).await;

    // Failures from the database side: unreachable (with a password in the URL), and a
    // database without the schema.
    let unreachable = PostgresStoreOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(
            "postgres://postgres:PASSWORD-NOT-TO-BE-LOGGED@127.0.0.1:9/postgres"
                .parse()
                .unwrap(),
        );
    let live = secrets.request(chrono::Duration::seconds(600));
    let results = [
        format!("{:?}", unreachable.store(&live).await),
        format!(
            "{:?}",
            unreachable.get_by_hash(&live.reference_value_hash).await
        ),
        format!(
            "{:?}",
            unreachable
                .consume_by_hash(&live.reference_value_hash)
                .await
        ),
        format!("{:?}", unreachable.delete_expired().await),
    ];
    let empty = TestDb::empty().await;
    let unmigrated = PostgresStore::new(empty.pool.clone());
    let missing_table = [
        format!("{:?}", unmigrated.store(&live).await),
        format!(
            "{:?}",
            unmigrated.consume_by_hash(&live.reference_value_hash).await
        ),
    ];
    for outcome in results.iter().chain(&missing_table) {
        tracing::info!(%outcome, "result");
    }

    let log = captured.text();
    // The capture is real: spans, events and sqlx's statement log are all there.
    for expected in [
        "par_store.operation",
        "outcome=\"duplicate\"",
        "outcome=\"invalid_input\"",
        "outcome=\"unavailable\"",
        "outcome=\"database_error\"",
        "par_store.cleanup",
        "sqlx::query",
        "pushed_authorization_requests",
        &secrets.hashes[0][..6],
    ] {
        assert!(
            log.contains(expected),
            "the captured log lacks {expected:?}: is the capture working?"
        );
    }
    // No secret appears, not even ten characters of one: a hash shows as its first six only.
    let mut leaks = Vec::new();
    for secret in secrets.hashes.iter().chain(&secrets.parameters) {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(10) {
            let piece: String = window.iter().collect();
            if log.contains(&piece) {
                leaks.push(format!("{piece:?} of {secret:?}"));
                break;
            }
        }
    }
    assert!(
        !log.contains("PASSWORD-NOT-TO-BE-LOGGED"),
        "the connection password was logged"
    );
    println!(
        "{} bytes of TRACE output, {} secrets checked",
        log.len(),
        secrets.hashes.len() + secrets.parameters.len()
    );
    assert!(leaks.is_empty(), "secrets in the log: {leaks:#?}");
}

// ---------------------------------------------------------------------------------------
// SQL injection
// ---------------------------------------------------------------------------------------

/// Text that breaks naive SQL: quotes, backslashes, placeholders, comments, dollar quoting,
/// format strings and Unicode (bidi overrides, zero-width, emoji, combining marks).
const HOSTILE: &[&str] = &[
    "'; DROP TABLE pushed_authorization_requests; --",
    "' OR '1'='1",
    "\\'; SELECT pg_sleep(10); --",
    "$1",
    "$2::text) --",
    "$$ $tag$ ; $tag$ $$",
    "/* comment */ -- line comment",
    "*/ /*",
    "E'\\x27' || chr(39)",
    "\\\\ \\0 \\x00 \\n",
    "\"quoted identifier\"",
    "%s %n %x {0} {{}} ${jndi:ldap://x}",
    "\u{1f600} \u{e9}\u{301} \u{4e2d}\u{6587} \u{202e}txt.exe \u{200b}\u{feff}",
    "a\u{2028}b\u{2029}c",
    "; COMMIT; BEGIN;",
    "\\",
];

async fn round_trip(store: &PostgresStore, hash: &str, parameters: &str) -> Result<(), String> {
    let stored = request(hash, parameters);
    store
        .store(&stored)
        .await
        .map_err(|err| format!("store {hash:?}: {err}"))?;
    let read = store
        .get_by_hash(hash)
        .await
        .map_err(|err| format!("get {hash:?}: {err}"))?
        .ok_or_else(|| format!("get {hash:?}: not found"))?;
    if read.reference_value_hash.as_bytes() != hash.as_bytes()
        || read.parameters.as_bytes() != parameters.as_bytes()
    {
        return Err(format!(
            "{hash:?} / {parameters:?} read back as {:?} / {:?}",
            read.reference_value_hash, read.parameters
        ));
    }
    let consumed = store
        .consume_by_hash(hash)
        .await
        .map_err(|err| format!("consume {hash:?}: {err}"))?;
    if consumed.map(|r| r.parameters.into_bytes()) != Some(parameters.as_bytes().to_vec()) {
        return Err(format!(
            "consume {hash:?} did not return the parameters byte for byte"
        ));
    }
    // Its consumed marker is found under the same hostile key, and removed by a sweep
    // (every request here expires within the hour), so that the next round may reuse the key.
    match store.consume_for_client(hash, "client-a").await {
        Ok(par_store::Consumption::AlreadyConsumed { .. }) => {}
        other => return Err(format!("consume {hash:?} again: {other:?}")),
    }
    store
        .delete_expired_as_of(chrono::Utc::now() + chrono::Duration::hours(2))
        .await
        .map_err(|err| format!("sweep after {hash:?}: {err}"))?;
    Ok(())
}

async fn table_is_intact(db: &TestDb) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
        .fetch_one(&db.pool)
        .await
        .expect("the table is still there");
    assert_eq!(rows, 0, "every round trip consumed its request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_stored_and_read_back_byte_for_byte() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::new().await;
    let store = db.store();
    for (n, hostile) in HOSTILE.iter().enumerate() {
        // As the hash, as the parameters, and both together.
        round_trip(&store, hostile, &format!("client_id=c{n}"))
            .await
            .unwrap();
        round_trip(&store, &format!("h{n}"), hostile).await.unwrap();
        round_trip(&store, hostile, hostile).await.unwrap();
    }
    // All of them at once, and at the size limits.
    let all = HOSTILE.concat();
    round_trip(&store, "all", &all.repeat(100)).await.unwrap();
    round_trip(&store, &"'".repeat(128), &"\\".repeat(64 * 1024))
        .await
        .unwrap();
    round_trip(&store, &"\u{1f600}".repeat(32), &all)
        .await
        .unwrap();
    table_is_intact(&db).await;
}

#[test]
fn generated_hostile_text_is_stored_and_read_back_byte_for_byte() {
    let _shared = LOG_CAPTURE.blocking_read();
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    // Pieces of SQL syntax and awkward characters, in any order: up to 128 bytes for a hash
    // (no control characters), up to 2 KB for the parameters (any character but NUL).
    let piece = prop_oneof![
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("$1".to_owned()),
        Just("$$".to_owned()),
        Just("--".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just(";".to_owned()),
        Just("%".to_owned()),
        Just("E'".to_owned()),
        "[a-zA-Z0-9 ]{1,3}",
        "[\u{e9}\u{301}\u{4e2d}\u{1f600}\u{202e}\u{200b}\u{feff}]",
    ];
    let hash = proptest::collection::vec(piece.clone(), 1..24)
        .prop_map(|pieces| pieces.concat())
        .prop_filter("a storable hash", |hash| hash.len() <= 128);
    let parameters = proptest::collection::vec(
        prop_oneof![4 => piece, 1 => "[\t\r\n\u{1}\u{7f}\u{85}]"],
        0..200,
    )
    .prop_map(|pieces| pieces.concat());

    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config.failure_persistence = None;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::new());
    let store = db.store();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(hash, parameters), |(hash, parameters)| {
        runtime
            .block_on(round_trip(&store, &hash, &parameters))
            .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    runtime.block_on(table_is_intact(&db));
}
