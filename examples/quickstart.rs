//! Stores, reads and consumes one pushed authorization request in the PostgreSQL at
//! `DATABASE_URL` (default: the docker-compose server).
//!
//! ```text
//! cargo run --example quickstart
//! ```

use chrono::{Duration, Utc};
use par_store::{
    PostgresStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore, ReferenceValue,
};
use std::sync::Arc;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = dotenvy::dotenv();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());

    let store = PostgresStore::connect(&url).await.map_err(|err| {
        format!("cannot use the PostgreSQL at DATABASE_URL ({err}); start one with `docker compose up -d`")
    })?;
    store.migrate().await?;
    println!("connected and migrated");

    // What an authorization server holds: any store behind the trait.
    let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(store);

    // At the PAR endpoint: a fresh random reference value; the client gets its request_uri,
    // the store gets only its hash.
    let reference = ReferenceValue::generate();
    println!("request_uri for the client: {}", reference.request_uri());
    let reference_value_hash = reference.hash();
    let request = PushedAuthorizationRequest::new(
        reference_value_hash.as_str(),
        Utc::now() + Duration::seconds(600),
        "client_id=s6BhdRkqt3&response_type=code&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb",
    );
    store.store(&request).await?;
    println!("stored   {request:?}");

    // At the authorize endpoint: parse the request_uri, hash the reference value, and read
    // the request (as often as login and consent need)...
    let reference = ReferenceValue::from_request_uri(&reference.request_uri())?;
    let reference_value_hash = reference.hash();
    let read = store.get_by_hash(&reference_value_hash).await?;
    println!("read     {:?}", read.as_ref().map(|r| &r.parameters));

    // ...then consume it when the response is produced: the request_uri is single use.
    let consumed = store.consume_by_hash(&reference_value_hash).await?;
    println!("consumed {}", consumed.is_some());
    let again = store.consume_by_hash(&reference_value_hash).await?;
    println!("consumed again: {} (single use)", again.is_some());
    Ok(())
}
