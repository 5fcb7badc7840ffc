//! End to end: the oauth-as example server (`demo/examples/oauth_as_server.rs`) on 127.0.0.1, its
//! pushed requests in a fresh PostgreSQL database, driven over HTTP by a real client:
//! push, authorize with the `request_uri`, exchange the code with the PKCE verifier.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

#[path = "../examples/oauth_as_server.rs"]
#[allow(dead_code)] // the example's `main` and the parts only it uses
mod oauth_as_server;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::TestDb;
use oauth_as_server::DemoConfig;
use par_store::protect::{KeyRing, ProtectionKey};
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::Serving;

const REDIRECT_URI: &str = "https://client.example.org/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A running server: its base URL, its configuration, its database and a client that does
/// not follow redirects.
struct Server {
    web: Serving,
    config: DemoConfig,
    db: TestDb,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(None).await
    }

    /// With `keys`, the records are sealed at rest.
    async fn start_with(keys: Option<KeyRing>) -> Server {
        let db = TestDb::new().await;
        let (listener, base) = support::bind().await;
        let config = DemoConfig {
            issuer: base.clone(),
            client_id: "demo-client".to_owned(),
            client_secret: "a demo secret".to_owned(),
            redirect_uri: REDIRECT_URI.to_owned(),
            keys,
        };
        let (_server, router) = oauth_as_server::build(&config, db.store()).await.unwrap();
        Server {
            web: Serving::start(listener, base, router),
            config,
            db,
        }
    }

    /// Pushes an authorization request for the demo client (authenticated with
    /// `client_secret_basic`) carrying the S256 challenge of [`VERIFIER`].
    async fn push(&self) -> reqwest::Response {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
        self.web
            .http
            .post(format!("{}/par", self.web.base))
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .form(&[
                ("response_type", "code"),
                ("client_id", self.config.client_id.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "read write"),
                ("state", "af0ifjsldkj"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Pushes, checks the RFC 9126 answer and returns the `request_uri`.
    async fn pushed_request_uri(&self) -> String {
        let response = self.push().await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert!(body["expires_in"].as_u64().unwrap() > 0, "{body}");
        let request_uri = body["request_uri"].as_str().unwrap().to_owned();
        assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
        request_uri
    }

    async fn authorize(&self, client_id: &str, request_uri: &str) -> reqwest::Response {
        self.web.authorize(client_id, request_uri).await
    }

    async fn token(&self, code: &str, verifier: &str) -> reqwest::Response {
        self.web
            .http
            .post(format!("{}/token", self.web.base))
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Rows of requests not consumed in `pushed_authorization_requests` (consumed markers
    /// left out), read through the test's own pool.
    async fn rows(&self) -> Vec<(String, Option<String>)> {
        par_store::sqlx::query_as(
            "SELECT reference_value_hash, client_id FROM pushed_authorization_requests",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

/// The `code` of a successful authorization response, after checking where it goes.
fn code_from(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = reqwest::Url::parse(location).unwrap();
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let value = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value("state").as_deref(), Some("af0ifjsldkj"));
    value("code").expect("a code in the redirect")
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_authorize_and_exchange_the_code_with_the_pkce_verifier() {
    let server = Server::start().await;
    let request_uri = server.pushed_request_uri().await;

    // Stored by par-store under the SHA-256 of the request_uri, bound to the client, and the
    // request_uri itself (the bearer secret) appears nowhere in the row.
    let rows = server.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].0,
        STANDARD.encode(Sha256::digest(request_uri.as_bytes()))
    );
    assert_eq!(rows[0].1.as_deref(), Some("demo-client"));
    let secret = request_uri.rsplit(':').next().unwrap();
    let leaks: i64 = par_store::sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests AS r WHERE strpos(r::text, $1) > 0",
    )
    .bind(secret)
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0, "the request_uri is stored in clear");

    let response = server.authorize("demo-client", &request_uri).await;
    let code = code_from(&response);
    // Consumed: only its marker is left in PostgreSQL (no parameters).
    assert!(server.rows().await.is_empty());

    let response = server.token(&code, VERIFIER).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert!(tokens["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "read write");

    // Single use: the same request_uri a second time is refused.
    let again = server.authorize("demo-client", &request_uri).await;
    assert_oauth_error(again, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
}

/// With a key ring (`PAR_STORE_KEYS` when run), the row holds an envelope: none of what the
/// client pushed is readable in PostgreSQL, and the whole flow works the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_the_pushed_request_is_sealed_at_rest_and_the_flow_is_unchanged() {
    let keys = KeyRing::new(ProtectionKey::new("demo", [3; 32]).unwrap());
    let server = Server::start_with(Some(keys)).await;
    let request_uri = server.pushed_request_uri().await;
    let parameters: String =
        par_store::sqlx::query_scalar("SELECT parameters FROM pushed_authorization_requests")
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
    assert!(parameters.starts_with("v2.demo."), "{parameters}");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    for pushed in [
        "af0ifjsldkj",
        REDIRECT_URI,
        "read write",
        "S256",
        &challenge,
    ] {
        assert!(!parameters.contains(pushed), "{pushed} in {parameters}");
    }
    let code = code_from(&server.authorize("demo-client", &request_uri).await);
    assert!(server.rows().await.is_empty());
    assert_eq!(server.token(&code, VERIFIER).await.status(), StatusCode::OK);
}

/// A sealed record that does not open (here: altered in SQL) fails the authorization with
/// oauth-as's `server_error`, never a code, and the request is consumed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_that_does_not_open_is_a_server_error_and_is_consumed() {
    let keys = KeyRing::new(ProtectionKey::new("demo", [3; 32]).unwrap());
    let server = Server::start_with(Some(keys)).await;
    let request_uri = server.pushed_request_uri().await;
    // Flip one character of the ciphertext: the tag no longer matches.
    par_store::sqlx::query(
        "UPDATE pushed_authorization_requests SET parameters = \
         left(parameters, length(parameters) - 1) || \
         CASE WHEN right(parameters, 1) = 'A' THEN 'B' ELSE 'A' END",
    )
    .execute(&server.db.pool)
    .await
    .unwrap();
    let response = server.authorize("demo-client", &request_uri).await;
    assert!(
        response.headers().get(LOCATION).is_none(),
        "no redirect, no code"
    );
    assert_oauth_error(response, StatusCode::INTERNAL_SERVER_ERROR, "server_error").await;
    assert!(
        server.rows().await.is_empty(),
        "the request was not consumed"
    );
    let again = server.authorize("demo-client", &request_uri).await;
    assert_oauth_error(again, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_is_refused_without_consuming_the_request() {
    let server = Server::start().await;
    let request_uri = server.pushed_request_uri().await;
    let before = server.rows().await;

    let stranger = server.authorize("someone-else", &request_uri).await;
    assert_oauth_error(stranger, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
    // Taken, found to be another client's, and put back: still there, still bound.
    assert_eq!(server.rows().await, before);

    let response = server.authorize("demo-client", &request_uri).await;
    code_from(&response);
    assert!(server.rows().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pkce_verifier_gets_no_tokens() {
    let server = Server::start().await;
    let request_uri = server.pushed_request_uri().await;
    let code = code_from(&server.authorize("demo-client", &request_uri).await);
    let wrong = "x".repeat(43);
    assert_oauth_error(
        server.token(&code, &wrong).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_was_not_pushed_is_refused() {
    let server = Server::start().await;
    let response = server
        .web
        .http
        .get(format!("{}/authorize", server.web.base))
        .query(&[
            ("client_id", "demo-client"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(server.rows().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_names_the_par_endpoint_and_requires_it() {
    let server = Server::start().await;
    let metadata: Value = server
        .web
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.web.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], server.web.base);
    assert_eq!(
        metadata["pushed_authorization_request_endpoint"],
        format!("{}/par", server.web.base)
    );
    assert_eq!(metadata["require_pushed_authorization_requests"], true);
    assert_eq!(
        metadata["authorization_endpoint"],
        format!("{}/authorize", server.web.base)
    );
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/token", server.web.base)
    );
    assert_eq!(metadata["code_challenge_methods_supported"][0], "S256");
}

/// `GET /metrics` shows par-store's metrics in Prometheus format once a request was pushed:
/// the operation duration histogram of the push's write (OpenTelemetry's buckets), and the
/// stored counter.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_store_operations_in_prometheus_format() {
    let server = Server::start().await;
    server.pushed_request_uri().await;
    let response = server
        .web
        .http
        .get(format!("{}/metrics", server.web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.text().await.unwrap();
    let line = body
        .lines()
        .find(|line| {
            line.starts_with("db_client_operation_duration_count{")
                && line.contains(r#"db_system_name="postgresql""#)
                && line.contains(r#"db_operation_name="store_or_replace""#)
        })
        .unwrap_or_else(|| panic!("no store_or_replace duration in:\n{body}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "{line}");
    // A histogram with OpenTelemetry's buckets (demo/examples/shared/prometheus.rs), not the
    // exporter's default summary.
    assert!(
        body.lines().any(
            |line| line.starts_with("db_client_operation_duration_bucket{")
                && line.contains(r#"le="0.005""#)
        ),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|line| line
                .starts_with(r#"par_store_requests_stored{db_system_name="postgresql"}"#)),
        "{body}"
    );
}
