//! oauth-as records and clients the oauth-as tests share.

use oauth_as::client::{Client, ClientAuth, ClientId};
use oauth_as::grant::GrantType;
use oauth_as::par::PushedAuthorizationRequest;
use oauth_as::scope::ScopeSet;
use std::time::{Duration, SystemTime};

pub fn client(id: &str) -> Client {
    Client {
        client_id: ClientId::new(id),
        auth: ClientAuth::Public,
        grant_types: vec![GrantType::AuthorizationCode],
        redirect_uris: vec!["https://app.example/cb".to_string()],
        allowed_scopes: ScopeSet::empty(),
        default_scopes: ScopeSet::empty(),
        name: None,
        registration: None,
    }
}

/// The key the adapter stores a record under: the SHA-256 of its `request_uri`, Base64.
pub fn key_of(request_uri: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(request_uri.as_bytes()))
}

pub fn record(uri: &str, client_id: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        uri,
        ClientId::new(client_id),
        SystemTime::now() + Duration::from_secs(60),
    )
}
