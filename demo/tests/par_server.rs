//! End to end: the example PAR server's router on 127.0.0.1, on a fresh PostgreSQL database,
//! driven over HTTP by a real client.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

#[path = "../examples/par_server.rs"]
#[allow(dead_code)] // the example's `main` and the parts only it uses
mod par_server;

use common::TestDb;
use par_store::{PostgresStore, PushedAuthorizationRequestStore, ReferenceValue};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::Serving;

const CLIENT_ID: &str = "s6BhdRkqt3";
const CLIENT_SECRET: &str = "7Fjfp0ZBr1KtDRbnfVdmIw";
const REDIRECT_URI: &str = "https://client.example.org/cb";
const OTHER_CLIENT_ID: &str = "other-client";

/// A running server: its base URL, its database and a client that does not follow redirects.
struct Server {
    web: Serving,
    db: TestDb,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(par_server::DEFAULT_LIFETIME).await
    }

    async fn start_with(lifetime: Duration) -> Server {
        let db = TestDb::new().await;
        let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(db.store());
        Server::serve(db, store, lifetime).await
    }

    async fn serve(
        db: TestDb,
        store: Arc<dyn PushedAuthorizationRequestStore>,
        lifetime: Duration,
    ) -> Server {
        let (listener, base) = support::bind().await;
        Server {
            web: Serving::start(listener, base, par_server::router(store, lifetime)),
            db,
        }
    }

    async fn push_form(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.web
            .http
            .post(format!("{}/par", self.web.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Pushes a valid request for the demo client and returns its `request_uri`.
    async fn push(&self) -> String {
        let response = self.push_form(&valid_push()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["request_uri"].as_str().unwrap().to_owned()
    }

    async fn authorize(&self, client_id: &str, request_uri: &str) -> reqwest::Response {
        self.web.authorize(client_id, request_uri).await
    }
}

fn valid_push() -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid profile"),
        ("state", "af0ifjsldkj"),
        (
            "code_challenge",
            "K2-ltc83acc4h0c9w6ESC_rEMTJ3bww-uCHaoeK1t8U",
        ),
        ("code_challenge_method", "S256"),
    ]
}

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    valid_push()
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect()
}

/// Asserts an OAuth error response and returns its `error_description`.
async fn assert_oauth_error(
    response: reqwest::Response,
    status: StatusCode,
    error: &str,
) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/json",
        "error responses are JSON"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    body["error_description"]
        .as_str()
        .expect("an error_description")
        .to_owned()
}

#[tokio::test]
async fn push_answers_201_with_request_uri_and_expires_in() {
    let server = Server::start().await;
    let response = server.push_form(&valid_push()).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-cache, no-store");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    let fields = body.as_object().unwrap();
    assert_eq!(fields.len(), 2, "{body}");
    assert_eq!(body["expires_in"], 600);
    let request_uri = body["request_uri"].as_str().unwrap();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    assert!(ReferenceValue::from_request_uri(request_uri).is_ok());
}

#[tokio::test]
async fn push_stores_the_parameters_under_the_hash_without_the_client_secret() {
    let server = Server::start().await;
    let request_uri = server.push().await;

    let hash = ReferenceValue::from_request_uri(&request_uri)
        .unwrap()
        .hash();
    let stored = server.db.store().get_by_hash(&hash).await.unwrap().unwrap();
    let parameters: Vec<(String, String)> = serde_urlencoded::from_str(&stored.parameters).unwrap();
    assert!(parameters.contains(&("client_id".into(), CLIENT_ID.into())));
    assert!(parameters.contains(&("scope".into(), "openid profile".into())));
    assert!(parameters.iter().all(|(name, _)| name != "client_secret"));
    assert!(!stored.parameters.contains(CLIENT_SECRET));
    // The store never holds the reference value itself.
    let value = request_uri.rsplit(':').next().unwrap();
    assert_ne!(stored.reference_value_hash, value);
    assert!(!stored.parameters.contains(value));
}

#[tokio::test]
async fn authorize_once_redirects_with_a_code_and_the_pushed_state() {
    let server = Server::start().await;
    let request_uri = server.push().await;

    let response = server.authorize(CLIENT_ID, &request_uri).await;

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-cache, no-store");
    let location = response.headers()[LOCATION].to_str().unwrap();
    let query = location
        .strip_prefix(&format!("{REDIRECT_URI}?"))
        .unwrap_or_else(|| panic!("redirects to the pushed redirect_uri: {location}"));
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    assert_eq!(params[0].0, "code");
    assert!(!params[0].1.is_empty());
    assert_eq!(params[1], ("state".into(), "af0ifjsldkj".into()));
    assert_eq!(
        server.db.unconsumed_row_count().await,
        0,
        "the request is consumed"
    );
}

#[tokio::test]
async fn authorize_again_with_the_same_request_uri_is_refused() {
    let server = Server::start().await;
    let request_uri = server.push().await;
    let first = server.authorize(CLIENT_ID, &request_uri).await;
    assert_eq!(first.status(), StatusCode::FOUND);

    let second = server.authorize(CLIENT_ID, &request_uri).await;

    assert_oauth_error(second, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
}

#[tokio::test]
async fn a_reused_request_uri_gets_the_answer_of_an_unknown_one_and_is_logged_as_a_warning() {
    let (logs, _logging) = support::capture_logs();
    let server = Server::start().await;
    let request_uri = server.push().await;
    assert_eq!(
        server.authorize(CLIENT_ID, &request_uri).await.status(),
        StatusCode::FOUND
    );
    let never_pushed = ReferenceValue::generate().request_uri();

    let reused = answer(server.authorize(CLIENT_ID, &request_uri).await).await;
    let unknown = answer(server.authorize(CLIENT_ID, &never_pushed).await).await;

    assert_eq!(reused.2["error"], "invalid_request_uri");
    assert_eq!(reused, unknown, "no oracle");
    let logs = logs.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("presented again after it was used"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    let hash = ReferenceValue::from_request_uri(&request_uri)
        .unwrap()
        .hash();
    let value = request_uri.rsplit(':').next().unwrap();
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains(&hash[..6]), "{}", warnings[0]);
    assert!(warnings[0].contains("consumed_at="), "{}", warnings[0]);
    // A replay is reported at the authorization endpoint's first read, before any consume.
    assert!(warnings[0].contains("step=\"read\""), "{}", warnings[0]);
    assert!(!logs.contains(value), "the reference value is logged");
    assert!(!logs.contains(&hash), "the whole hash is logged");
}

#[tokio::test]
async fn push_without_a_required_parameter_is_invalid_request() {
    let server = Server::start().await;
    for missing in ["response_type", "redirect_uri"] {
        let response = server.push_form(&without(missing)).await;
        let description =
            assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(description.contains(missing), "{description}");
    }
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn push_with_a_body_that_is_not_a_form_is_invalid_request() {
    let server = Server::start().await;
    let response = server
        .web
        .http
        .post(format!("{}/par", server.web.base))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"client_id":"s6BhdRkqt3","response_type":"code"}"#)
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn push_with_a_repeated_parameter_is_invalid_request() {
    let server = Server::start().await;
    let mut form = valid_push();
    form.push(("redirect_uri", "https://attacker.example.com/cb"));
    let response = server.push_form(&form).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn push_with_a_repeated_empty_parameter_is_invalid_request() {
    let server = Server::start().await;
    // An empty value counts as omitted, but a repeat is refused all the same (RFC 6749, 3.1).
    let mut empty_first = vec![("redirect_uri", "")];
    empty_first.extend(valid_push());
    let mut empty_last = valid_push();
    empty_last.push(("state", ""));
    for form in [empty_first, empty_last] {
        let response = server.push_form(&form).await;
        let description =
            assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(description.contains("more than once"), "{description}");
    }
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn push_checks_repeated_parameters_only_after_client_authentication() {
    let server = Server::start().await;
    let mut form = without("client_secret");
    form.push(("client_secret", "not-the-secret"));
    form.push(("redirect_uri", "https://attacker.example.com/cb"));
    let response = server.push_form(&form).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // Repeated credentials fail authentication itself.
    let mut form = valid_push();
    form.push(("client_secret", CLIENT_SECRET));
    let response = server.push_form(&form).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn push_carrying_a_request_uri_is_invalid_request() {
    let server = Server::start().await;
    let earlier = server.push().await;
    let mut form = valid_push();
    form.push(("request_uri", &earlier));
    let response = server.push_form(&form).await;
    let description =
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(description.contains("request_uri"), "{description}");
    assert_eq!(server.db.row_count().await, 1, "only the earlier request");
}

#[tokio::test]
async fn push_with_an_unregistered_redirect_uri_is_invalid_request() {
    let server = Server::start().await;
    let mut form = without("redirect_uri");
    form.push(("redirect_uri", "https://attacker.example.com/cb"));
    let response = server.push_form(&form).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn push_with_another_response_type_is_unsupported_response_type() {
    let server = Server::start().await;
    let mut form = without("response_type");
    form.push(("response_type", "token"));
    let response = server.push_form(&form).await;
    assert_oauth_error(
        response,
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
    )
    .await;
}

#[tokio::test]
async fn push_with_a_wrong_or_missing_secret_is_invalid_client() {
    let server = Server::start().await;
    let mut wrong = without("client_secret");
    wrong.push(("client_secret", "not-the-secret"));
    let mut unknown = without("client_id");
    unknown.push(("client_id", "unknown-client"));
    for form in [
        wrong,
        unknown,
        without("client_secret"),
        without("client_id"),
    ] {
        let response = server.push_form(&form).await;
        assert!(response.headers().contains_key("www-authenticate"));
        assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    assert_eq!(server.db.row_count().await, 0);
}

#[tokio::test]
async fn par_endpoint_accepts_only_post() {
    let server = Server::start().await;
    let response = server
        .web
        .http
        .get(format!("{}/par", server.web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

/// Status, headers that matter and body of a response, to compare two answers whole.
async fn answer(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let cache = response
        .headers()
        .get(CACHE_CONTROL)
        .map(|value| value.to_str().unwrap().to_owned());
    (status, cache, response.json().await.unwrap())
}

#[tokio::test]
async fn another_clients_request_uri_gets_the_answer_of_an_unknown_one() {
    let server = Server::start().await;
    let request_uri = server.push().await;
    let never_pushed = ReferenceValue::generate().request_uri();

    let wrong_client = answer(server.authorize(OTHER_CLIENT_ID, &request_uri).await).await;
    let unknown = answer(server.authorize(OTHER_CLIENT_ID, &never_pushed).await).await;
    let malformed = answer(server.authorize(OTHER_CLIENT_ID, "urn:x").await).await;

    assert_eq!(wrong_client.0, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_client.2["error"], "invalid_request_uri");
    assert_eq!(wrong_client, unknown);
    assert_eq!(wrong_client, malformed);
}

#[tokio::test]
async fn authorize_with_another_client_id_is_refused_and_keeps_the_request() {
    let server = Server::start().await;
    let request_uri = server.push().await;

    let response = server.authorize(OTHER_CLIENT_ID, &request_uri).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request_uri").await;

    // The client that pushed it can still use it.
    let response = server.authorize(CLIENT_ID, &request_uri).await;
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn authorize_after_the_lifetime_is_refused() {
    let server = Server::start_with(Duration::from_millis(300)).await;
    let response = server.push_form(&valid_push()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 1, "whole seconds, rounded up");
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = server.authorize(CLIENT_ID, &request_uri).await;

    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
}

#[tokio::test]
async fn authorize_with_a_malformed_request_uri_is_refused() {
    let server = Server::start().await;
    let request_uri = server.push().await;
    let value = request_uri.rsplit(':').next().unwrap().to_owned();
    for malformed in [
        request_uri.to_lowercase(),
        format!(" {request_uri}"),
        format!("{request_uri}0"),
        value.clone(),
        format!("urn:ietf:params:oauth:request_uri:{}", &value[..63]),
        format!("https://server.example.com/requests/{value}"),
    ] {
        let response = server.authorize(CLIENT_ID, &malformed).await;
        let description =
            assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
        assert!(!description.contains(&value), "{description}");
    }
    assert_eq!(
        server.db.row_count().await,
        1,
        "the real request is untouched"
    );
}

#[tokio::test]
async fn authorize_with_an_unknown_request_uri_is_refused() {
    let server = Server::start().await;
    let never_pushed = ReferenceValue::generate().request_uri();
    let response = server.authorize(CLIENT_ID, &never_pushed).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request_uri").await;
}

#[tokio::test]
async fn authorize_without_request_uri_or_client_id_is_invalid_request() {
    let server = Server::start().await;
    let request_uri = server.push().await;
    for query in [
        vec![("client_id", CLIENT_ID)],
        vec![("request_uri", request_uri.as_str())],
    ] {
        let response = server
            .web
            .http
            .get(format!("{}/authorize", server.web.base))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_store_that_is_down_gives_503_temporarily_unavailable() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let store: Arc<dyn PushedAuthorizationRequestStore> =
        Arc::new(PostgresStore::new(pool.clone()));
    let server = Server::serve(db, store, par_server::DEFAULT_LIFETIME).await;
    pool.close().await;

    let response = server.push_form(&valid_push()).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_oauth_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;

    let never_pushed = ReferenceValue::generate().request_uri();
    let response = server.authorize(CLIENT_ID, &never_pushed).await;
    assert_oauth_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
}
