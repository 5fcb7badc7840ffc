//! A runnable OAuth 2.1 authorization server: [oauth-as](https://docs.rs/oauth-as)'s HTTP
//! surface with pushed authorization requests (RFC 9126) required, and par-store on
//! PostgreSQL as their storage (`par_store::oauth_as::OauthAsStorage`). Everything else
//! oauth-as stores (clients, codes, tokens) stays in its in-memory `MemoryStorage`.
//!
//! ```text
//! cargo run -p par-store-demo --example oauth_as_server
//! ```
//!
//! **Demo only**: one confidential client with a secret that has a default, and a login that
//! approves every request for the user `demo-user` without asking anyone. A real server
//! authenticates its users, asks for their consent and provisions its own clients; see
//! oauth-as's `examples/production_server.rs` for every obligation.
//!
//! Environment (a `.env` file is honoured); every value is printed at start:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres:postgres@127.0.0.1:5432/postgres` | the PostgreSQL the pushed requests are stored in (migrated at start) |
//! | `OAUTH_AS_ADDR` | `127.0.0.1:3001` | address to listen on |
//! | `OAUTH_AS_ISSUER` | `http://<OAUTH_AS_ADDR>` | the issuer (and base of every endpoint) |
//! | `OAUTH_AS_CLIENT_ID` | `demo-client` | the demo confidential client |
//! | `OAUTH_AS_CLIENT_SECRET` | `demo-secret` | its secret (`client_secret_basic` or `client_secret_post`) |
//! | `OAUTH_AS_REDIRECT_URI` | `http://127.0.0.1:8080/cb` | its one registered redirect URI |
//! | `PAR_STORE_KEYS` | unset: records in clear | a key ring (`KeyRing::from_env`, docs/security.md, "Encryption at rest"): the pushed requests' records are sealed at rest (`OauthAsStorage::with_protection`) |
//! | `RUST_LOG` | `info,par_store=debug` | log filter |
//!
//! Endpoints (all oauth-as's own):
//!
//! - `GET /.well-known/oauth-authorization-server`: server metadata (RFC 8414), naming the
//!   endpoints below and `require_pushed_authorization_requests: true`;
//! - `POST /par`: the pushed authorization request endpoint (RFC 9126), `201` with
//!   `request_uri` and `expires_in`;
//! - `GET /authorize?client_id=...&request_uri=...`: resolves (and consumes) the pushed
//!   request, and with the demo login redirects to the client with a `code`; any request not
//!   pushed first is refused;
//! - `POST /token`: exchanges the code, with the PKCE `code_verifier`, for tokens;
//!
//! and the server's own `GET /metrics`: par-store's metrics (`par_store::metrics`: operation
//! durations as a histogram, request counters, pool gauges) in Prometheus text format,
//! through `metrics-exporter-prometheus` (built with the demo's default feature `metrics`).
//!
//! docs/oauth-as.md drives all of it with curl. Expired pushed requests are removed by a
//! par-store [`CleanupJob`] and by oauth-as's `sweep_expired` (once a minute each); Ctrl-C or
//! SIGTERM stops the server after the requests in flight, then both.

use metrics_exporter_prometheus::PrometheusHandle;
use oauth_as::client::{Client, ClientAuth, ClientId, SecretHash};
use oauth_as::grant::GrantType;
use oauth_as::http::{ApprovalDecision, ServiceBuilder};
use oauth_as::par::ParConfig;
use oauth_as::scope::ScopeSet;
use oauth_as::server::{AuthorizationServer, ServerConfig};
use oauth_as::store::Storage;
use oauth_as::MemoryStorage;
use par_store::oauth_as::OauthAsStorage;
use par_store::{
    protect::{KeyRing, KeyRingError},
    CleanupJob, CleanupOptions, PostgresStore,
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

#[path = "shared/prometheus.rs"]
mod prometheus;
#[path = "shared/server.rs"]
mod shared;
use shared::shutdown_signal;

const DEFAULT_ADDR: &str = "127.0.0.1:3001";

/// The demo user every request is approved for, without a login.
pub const DEMO_SUBJECT: &str = "demo-user";

/// The storage of this server: pushed requests in PostgreSQL, the rest in memory.
pub type DemoStorage = OauthAsStorage<MemoryStorage>;

/// The demo client and where the server lives.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The issuer; every endpoint is under it.
    pub issuer: String,
    /// The demo confidential client's id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Its one registered redirect URI.
    pub redirect_uri: String,
    /// When set, the pushed requests' records are sealed at rest with these keys.
    pub keys: Option<KeyRing>,
}

impl DemoConfig {
    /// The configuration from the environment, for a server listening on `addr`; an error
    /// when `PAR_STORE_KEYS` is set but is not a key ring.
    pub fn from_env(addr: &str) -> Result<DemoConfig, KeyRingError> {
        let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
        let keys = match std::env::var_os(KEYS_VAR) {
            Some(_) => Some(KeyRing::from_env(KEYS_VAR)?),
            None => None,
        };
        Ok(DemoConfig {
            issuer: var("OAUTH_AS_ISSUER", format!("http://{addr}")),
            client_id: var("OAUTH_AS_CLIENT_ID", "demo-client".to_owned()),
            client_secret: var("OAUTH_AS_CLIENT_SECRET", "demo-secret".to_owned()),
            redirect_uri: var(
                "OAUTH_AS_REDIRECT_URI",
                "http://127.0.0.1:8080/cb".to_owned(),
            ),
            keys,
        })
    }
}

/// The variable that holds the key ring sealing the records, when it is set.
const KEYS_VAR: &str = "PAR_STORE_KEYS";

/// The authorization server on `pushed` (a migrated store) and its axum router.
pub async fn build(
    config: &DemoConfig,
    pushed: PostgresStore,
) -> Result<(Arc<AuthorizationServer<DemoStorage>>, axum::Router), Box<dyn std::error::Error>> {
    // The recorder, before the store records anything.
    let _ = prometheus();
    let issuer = config.issuer.trim_end_matches('/').to_owned();
    let mut server_config = ServerConfig::new(issuer.clone(), format!("{issuer}/device"));
    let mut par = ParConfig::new();
    par.require_pushed_authorization_requests = true;
    server_config.par = Some(Box::new(par));
    server_config.scopes_supported = Some(vec!["read".to_owned(), "write".to_owned()]);

    let storage = OauthAsStorage::new(pushed, MemoryStorage::new());
    let storage = match &config.keys {
        Some(keys) => storage.with_protection(keys.clone()),
        None => storage,
    };
    let server = Arc::new(AuthorizationServer::new(server_config, storage));
    server
        .register_client(Client {
            client_id: ClientId::new(config.client_id.clone()),
            auth: ClientAuth::ConfidentialSecretHash {
                hash: SecretHash::sha256(&config.client_secret),
            },
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            redirect_uris: vec![config.redirect_uri.clone()],
            allowed_scopes: ScopeSet::from_tokens(["read", "write"])?,
            default_scopes: ScopeSet::from_tokens(["read"])?,
            name: Some("par-store demo client".to_owned()),
            registration: None,
        })
        .await?;

    let service = ServiceBuilder::new(Arc::clone(&server))
        // DEMO LOGIN: every browser is `demo-user`, and every request is approved without a
        // consent screen. A real server resolves the subject from its own session and asks.
        .with_subject_resolver(|_headers| Some(DEMO_SUBJECT.to_owned()))
        .with_approval_resolver(|_request| ApprovalDecision::Approve)
        .build()?;
    let router =
        axum::Router::from(service).route("/metrics", axum::routing::get(prometheus_metrics));
    Ok((server, router))
}

/// The process's Prometheus recorder, installed as the `metrics` facade's global recorder
/// on first use (there is one per process); `None` if another recorder was installed first.
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match prometheus::install_recorder() {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(error = %err, "no Prometheus recorder: /metrics stays empty");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`: everything recorded so far, in Prometheus text format.
async fn prometheus_metrics() -> impl axum::response::IntoResponse {
    let body = prometheus().map_or_else(String::new, |handle| {
        // Drains the histograms' buffers; nothing else runs it in this server.
        handle.run_upkeep();
        handle.render()
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// oauth-as's `sweep_expired` once a minute: it runs nothing on a timer itself. It removes
/// expired codes and tokens from memory and expired pushed requests from PostgreSQL.
fn spawn_sweeper(server: Arc<AuthorizationServer<DemoStorage>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            ticker.tick().await;
            match server.store().sweep_expired(SystemTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "sweep removed expired records"),
                Err(err) => tracing::warn!(error = %err, "sweep failed; retrying in a minute"),
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pushed = shared::start().await?;
    let addr = std::env::var("OAUTH_AS_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let config = DemoConfig::from_env(&addr)?;

    let cleanup = CleanupJob::spawn(pushed.clone(), CleanupOptions::new());
    let (server, router) = build(&config, pushed).await?;
    let sweeper = spawn_sweeper(server);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "oauth-as with par-store listening on {}",
        listener.local_addr()?
    );
    println!("  issuer        {}", config.issuer);
    println!(
        "  metadata      {}/.well-known/oauth-authorization-server",
        config.issuer
    );
    println!(
        "  DEMO client   id {}  secret {}",
        config.client_id, config.client_secret
    );
    println!("  redirect URI  {}", config.redirect_uri);
    match &config.keys {
        Some(keys) => println!(
            "  records       sealed at rest, current key `{}` ({KEYS_VAR})",
            keys.current_key_id()
        ),
        None => println!("  records       in clear at rest (set {KEYS_VAR} to seal them)"),
    }
    println!("  metrics       {}/metrics", config.issuer);
    println!("  DEMO login    every request is approved for `{DEMO_SUBJECT}`");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // Stop the background work whether or not serving ended in an error.
    sweeper.abort();
    cleanup.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}
