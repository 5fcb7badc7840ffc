//! The two endpoints of an OAuth 2.0 authorization server that use par-store: the pushed
//! authorization request endpoint (RFC 9126) and the authorization endpoint that resolves its
//! `request_uri`s, on PostgreSQL, with the cleanup job running beside them.
//!
//! ```text
//! cargo run -p par-store-demo --example par_server
//! ```
//!
//! Environment (a `.env` file is honoured):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres:postgres@127.0.0.1:5432/postgres` | the PostgreSQL to store requests in (migrated at start) |
//! | `PAR_LIFETIME_SECS` | `600` | lifetime of a pushed request, in seconds (Duende IdentityServer's default) |
//! | `PAR_SERVER_ADDR` | `127.0.0.1:3000` | address to listen on |
//! | `RUST_LOG` | `info,par_store=debug` | log filter |
//!
//! Endpoints:
//!
//! - `POST /par` (form-encoded) authenticates the client (`client_secret_post` against the
//!   demo clients in [`CLIENTS`]), validates `response_type` and `redirect_uri`, stores the
//!   request under the hash of a fresh [`ReferenceValue`] and answers `201 Created` with
//!   `{"request_uri": "...", "expires_in": N}` (RFC 9126, section 2.2); errors as in section 2.3.
//! - `GET /authorize?client_id=...&request_uri=...` reads the pushed request for the client
//!   ([`get_for_client`](PushedAuthorizationRequestStore::get_for_client), as login and consent
//!   would), then consumes it only if it was pushed by the same client, in one atomic step
//!   ([`consume_for_client`](PushedAuthorizationRequestStore::consume_for_client)), and answers
//!   as an authorization server would after a successful login: `302 Found` to the pushed `redirect_uri` with `code` (a random
//!   stand-in: this example issues no real codes) and the pushed `state`. An unknown, expired,
//!   already used or malformed `request_uri`, and one pushed by another client, all get the
//!   same `400` with `invalid_request_uri` as JSON (RFC 9126, sections 2.2 and 7: whoever
//!   holds a leaked `request_uri` must not learn that it is live): the redirect URI is only
//!   trusted once the request is resolved, so errors are not redirected. A `request_uri`
//!   presented again after it was used is logged as a security event (`warn`, with the first
//!   characters of its hash, when it was consumed and the step, `read` or `consume`, that
//!   found it, never the `request_uri`); a server that
//!   issues real codes would also revoke what it issued from that request (see
//!   `docs/security.md`, "A reused request_uri").
//!
//! Errors follow the table in `StoreError`'s documentation.
//!
//! The stored parameters are the form-encoded authorization request, client secret removed.
//! A production server would also protect (encrypt) them before they reach the store.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use par_store::{
    error::{InputField, ProtectionErrorKind},
    CleanupJob, CleanupOptions, Consumption, Lookup, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, ReferenceValue, StoreError,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[path = "shared/server.rs"]
mod shared;
use shared::shutdown_signal;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// Lifetime of a pushed request unless `PAR_LIFETIME_SECS` says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// Largest accepted request body. Pushed requests are small; the store's own bound on the
/// parameters (64 KiB by default) is the same.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How often to draw a new reference value when one collides with a stored request: with 256
/// random bits a collision does not happen, but the store reports it and this is the answer.
const STORE_ATTEMPTS: usize = 3;

/// A client registered with the authorization server.
#[derive(Debug)]
pub struct RegisteredClient {
    /// The `client_id`.
    pub client_id: &'static str,
    /// The secret for `client_secret_post`. A real server keeps only a hash of it.
    pub client_secret: &'static str,
    /// The redirect URIs the client may use, compared exactly.
    pub redirect_uris: &'static [&'static str],
}

/// The demo clients (identifiers and secret from the examples in RFC 6749 and RFC 9126).
/// A real server reads its clients from its own configuration or database.
pub const CLIENTS: &[RegisteredClient] = &[
    RegisteredClient {
        client_id: "s6BhdRkqt3",
        client_secret: "7Fjfp0ZBr1KtDRbnfVdmIw",
        redirect_uris: &["https://client.example.org/cb"],
    },
    RegisteredClient {
        client_id: "other-client",
        client_secret: "other-secret",
        redirect_uris: &["https://other.example.com/cb"],
    },
];

#[derive(Clone)]
struct AppState {
    store: Arc<dyn PushedAuthorizationRequestStore>,
    lifetime: TimeDelta,
    /// `expires_in`: the lifetime in whole seconds, rounded up.
    expires_in: u64,
}

/// The PAR endpoint (`POST /par`) and the authorization endpoint (`GET /authorize`) on
/// `store`, giving pushed requests `lifetime`. Other methods on these paths get `405`.
///
/// # Panics
///
/// If `lifetime` is zero or beyond what `chrono` can add to the current time.
pub fn router(store: Arc<dyn PushedAuthorizationRequestStore>, lifetime: Duration) -> Router {
    assert!(!lifetime.is_zero(), "the PAR lifetime must be positive");
    let state = AppState {
        store,
        lifetime: TimeDelta::from_std(lifetime).expect("the PAR lifetime fits in a TimeDelta"),
        expires_in: lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0),
    };
    Router::new()
        .route("/par", post(push))
        .route("/authorize", get(authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An OAuth error response (RFC 6749, section 5.2; RFC 9126, sections 2.3 and 4).
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    /// The one answer for every `request_uri` that does not resolve to a request of this
    /// client: malformed, unknown, expired, used, pushed by another client, or unreadable.
    fn unusable_request_uri() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_uri",
            "request_uri is unknown, expired or used",
        )
    }

    /// What the client may learn from a store failure: whether to retry, never the details,
    /// which go to the log. As in `StoreError`'s table.
    fn from_store(err: StoreError) -> Self {
        match err {
            // The only input the client controls: the size (or NUL bytes) of its parameters.
            StoreError::InvalidInput {
                field: InputField::Parameters,
                ..
            } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the pushed request is too large",
            ),
            StoreError::Protection { kind, .. }
                if kind != ProtectionErrorKind::RandomUnavailable =>
            {
                tracing::error!(error = %kind, "stored PAR parameters cannot be opened");
                Self::unusable_request_uri()
            }
            err if err.is_transient() => {
                tracing::warn!(error = %err, "PAR store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the authorization server is temporarily unavailable; retry later",
                )
            }
            err => {
                tracing::error!(error = %err, "PAR store failed");
                Self::server_error()
            }
        }
    }

    fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the authorization server encountered an unexpected condition",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({
            "error": self.error,
            "error_description": self.description,
        }));
        let mut response = (self.status, no_store(), body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"par_server\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Responses that carry or refer to credentials must not be cached (RFC 9126, section 2.2).
fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    )]
}

/// Request parameters, each present at most once (RFC 6749, section 3.1).
struct Params(Vec<(String, String)>);

impl Params {
    /// Refuses repeated parameters, empty occurrences included, and then drops empty ones,
    /// which RFC 6749 (section 3.1) says to treat as omitted.
    fn new(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        if let Some(name) = repeated_name(&pairs) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} is included more than once"
            )));
        }
        Ok(Params(
            pairs
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .collect(),
        ))
    }

    /// Reads back what [`encode`](Self::encode) stored.
    fn decode(stored: &str) -> Result<Self, OAuthError> {
        let pairs = serde_urlencoded::from_str(stored).map_err(|err| {
            tracing::error!(error = %err, "stored PAR parameters are not form-encoded");
            OAuthError::server_error()
        })?;
        Self::new(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(seen, _)| seen == name)
            .map(|(_, value)| value.as_str())
    }

    /// The parameters as `application/x-www-form-urlencoded` text, without `left_out`.
    fn encode(&self, left_out: &[&str]) -> Result<String, OAuthError> {
        let kept: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(name, _)| !left_out.contains(&name.as_str()))
            .collect();
        serde_urlencoded::to_string(kept).map_err(|err| {
            tracing::error!(error = %err, "cannot form-encode PAR parameters");
            OAuthError::server_error()
        })
    }
}

/// The first parameter name that occurs more than once, empty values counted.
fn repeated_name(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .enumerate()
        .find(|(i, (name, _))| pairs[..*i].iter().any(|(seen, _)| seen == name))
        .map(|(_, (name, _))| name.as_str())
}

/// The one non-empty value of `name`, for client authentication: absent, empty or repeated
/// credentials all fail it alike.
fn credential<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut values = pairs.iter().filter(|(seen, _)| seen == name);
    match (values.next(), values.next()) {
        (Some((_, value)), None) if !value.is_empty() => Some(value),
        _ => None,
    }
}

/// Client authentication, where a real server would accept its registered methods
/// (`client_secret_basic`, `private_key_jwt`, mutual TLS, ...). This example knows only
/// `client_secret_post`: `client_id` and `client_secret` in the form body.
fn authenticate_client(
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<&'static RegisteredClient, OAuthError> {
    let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
        return Err(OAuthError::invalid_client());
    };
    CLIENTS
        .iter()
        .find(|client| client.client_id == client_id)
        .filter(|client| constant_time_eq(client.client_secret, client_secret))
        .ok_or_else(OAuthError::invalid_client)
}

/// Compares secrets without stopping at the first difference, so the time taken does not
/// reveal how much of a guess was right.
fn constant_time_eq(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// `POST /par`: RFC 9126, section 2.
async fn push(
    State(app): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Form(pairs) = form.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the pushed request is too large",
            )
        } else {
            OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded parameters",
            )
        }
    })?;
    // Authenticate first: a caller that cannot do so learns nothing about the request rules.
    let client = authenticate_client(
        credential(&pairs, "client_id"),
        credential(&pairs, "client_secret"),
    )?;
    let params = Params::new(pairs)?;

    if params.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request(
            "request_uri must not be used in a pushed authorization request",
        ));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
        None => return Err(OAuthError::invalid_request("response_type is required")),
    }
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    if !client.redirect_uris.contains(&redirect_uri) {
        return Err(OAuthError::invalid_request(
            "redirect_uri is not registered for this client",
        ));
    }

    // The authorization request as pushed, less the client's credentials.
    let parameters = params.encode(&["client_secret"])?;
    for _ in 0..STORE_ATTEMPTS {
        let reference_value = ReferenceValue::generate();
        // Bound to the client (RFC 9126, section 2.2), so that the authorization endpoint
        // consumes it only for that client.
        let request = PushedAuthorizationRequest::new(
            reference_value.hash(),
            Utc::now() + app.lifetime,
            parameters.as_str(),
        )
        .with_client_id(client.client_id);
        match app.store.store(&request).await {
            Ok(()) => {
                tracing::info!(
                    client_id = client.client_id,
                    expires_in = app.expires_in,
                    "pushed authorization request stored"
                );
                let body = Json(json!({
                    "request_uri": reference_value.request_uri(),
                    "expires_in": app.expires_in,
                }));
                return Ok((StatusCode::CREATED, no_store(), body).into_response());
            }
            Err(StoreError::Duplicate) => continue,
            Err(err) => return Err(OAuthError::from_store(err)),
        }
    }
    tracing::error!("PAR store reported a duplicate reference value {STORE_ATTEMPTS} times");
    Err(OAuthError::server_error())
}

/// A `request_uri` presented again after it was used, at the read or at the consume: a
/// security event (a replayed or leaked `request_uri`, or a form sent twice), logged with the
/// first characters of the hash and when it was consumed, never the `request_uri`.
fn reused(hash: &str, consumed_at: DateTime<Utc>, client_id: &str, step: &str) -> OAuthError {
    tracing::warn!(
        hash = hash.get(..6).unwrap_or_default(),
        %consumed_at,
        client_id,
        step,
        "request_uri presented again after it was used"
    );
    OAuthError::unusable_request_uri()
}

/// A `request_uri` presented by a client it was not pushed by.
fn wrong_client(client_id: &str) -> OAuthError {
    tracing::info!(client_id, "request_uri presented by another client");
    OAuthError::unusable_request_uri()
}

/// `GET /authorize` with a `request_uri`: RFC 9126, section 4.
async fn authorize(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, OAuthError> {
    let Query(pairs) =
        query.map_err(|_| OAuthError::invalid_request("the query string is malformed"))?;
    let params = Params::new(pairs)?;
    let client_id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let request_uri = params
        .get("request_uri")
        .ok_or_else(|| OAuthError::invalid_request("request_uri is required"))?;
    let reference_value = ReferenceValue::from_request_uri(request_uri).map_err(|err| {
        tracing::debug!(error = %err, "malformed request_uri");
        OAuthError::unusable_request_uri()
    })?;
    let hash = reference_value.hash();
    let unusable = OAuthError::unusable_request_uri;

    // A real server authenticates the user and asks for consent here, reading the request
    // at every step with get_for_client, which changes nothing. A replayed request_uri shows
    // up at the first read: it is the same security event as at the consume. Every refusal
    // gets the answer an unknown request_uri gets (no oracle).
    match app
        .store
        .get_for_client(&hash, client_id)
        .await
        .map_err(OAuthError::from_store)?
    {
        Lookup::Found(_) => {}
        Lookup::AlreadyConsumed { consumed_at } => {
            return Err(reused(&hash, consumed_at, client_id, "read"))
        }
        Lookup::WrongClient => return Err(wrong_client(client_id)),
        // Unknown or expired.
        _ => return Err(unusable()),
    }
    // The response is produced now, so the request is consumed now, and only for the client
    // it was pushed by: a mismatch leaves it in place (whoever learnt someone else's
    // request_uri must not be able to burn it).
    let consumed = match app
        .store
        .consume_for_client(&hash, client_id)
        .await
        .map_err(OAuthError::from_store)?
    {
        Consumption::Consumed(request) => request,
        // Another browser tab won the race since the read.
        Consumption::AlreadyConsumed { consumed_at } => {
            return Err(reused(&hash, consumed_at, client_id, "consume"))
        }
        Consumption::WrongClient => return Err(wrong_client(client_id)),
        // Unknown, expired.
        _ => return Err(unusable()),
    };
    let pushed = Params::decode(&consumed.parameters)?;
    let redirect_uri = pushed.get("redirect_uri").ok_or_else(|| {
        tracing::error!("stored PAR parameters have no redirect_uri");
        OAuthError::server_error()
    })?;

    // Stand-in for an authorization code: a real server stores one bound to the client, the
    // redirect URI and the PKCE challenge, and redeems it at its token endpoint.
    let code = uuid::Uuid::new_v4().simple().to_string();
    let mut response_params = vec![("code", code.as_str())];
    if let Some(state) = pushed.get("state") {
        response_params.push(("state", state));
    }
    let query = serde_urlencoded::to_string(&response_params).map_err(|err| {
        tracing::error!(error = %err, "cannot form-encode the authorization response");
        OAuthError::server_error()
    })?;
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = HeaderValue::try_from(format!("{redirect_uri}{separator}{query}"))
        .map_err(|_| OAuthError::server_error())?;
    tracing::info!(client_id, "pushed authorization request used");
    Ok((
        StatusCode::FOUND,
        no_store(),
        [(header::LOCATION, location)],
    )
        .into_response())
}

/// `PAR_LIFETIME_SECS`, or [`DEFAULT_LIFETIME`].
fn lifetime_from_env() -> Result<Duration, String> {
    match std::env::var("PAR_LIFETIME_SECS") {
        Err(_) => Ok(DEFAULT_LIFETIME),
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(u64::from(secs))),
            _ => Err(format!(
                "PAR_LIFETIME_SECS must be a positive number of seconds, not {text:?}"
            )),
        },
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lifetime = lifetime_from_env()?;
    let addr = std::env::var("PAR_SERVER_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let store = shared::start().await?;

    let cleanup = CleanupJob::spawn(store.clone(), CleanupOptions::new());

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        lifetime_secs = lifetime.as_secs(),
        "PAR server listening: POST /par, GET /authorize"
    );
    let served = axum::serve(listener, router(Arc::new(store), lifetime))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // Stop the cleanup job whether or not serving ended in an error.
    cleanup.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}
