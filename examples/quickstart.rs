//! Stores, reads and consumes one pushed authorization request.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It creates par-store's tables (`PostgresStore::migrate`) in the database at `DATABASE_URL`
//! (default: the docker-compose server, `postgres://postgres:postgres@127.0.0.1:5432/postgres`).
//! When nothing answers there, it runs on a throwaway PostgreSQL cluster of its own instead,
//! as the tests do (where PostgreSQL's server binaries are installed), and removes it at exit.

#[allow(dead_code)] // the tests use more of it
#[path = "support/cluster.rs"]
mod cluster;

use par_store::chrono::{Duration, Utc};
use par_store::sqlx::postgres::PgConnectOptions;
use par_store::{
    PostgresStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore, ReferenceValue,
};
use std::str::FromStr;
use std::sync::Arc;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

#[tokio::main]
async fn main() {
    // Errors as one line of text (their `Display`), not `main`'s `Debug` output.
    if let Err(err) = run().await {
        eprintln!("quickstart: {err}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let _ = dotenvy::dotenv();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let (url, which) = server(url)?;

    let store = PostgresStore::connect(&url)
        .await
        .map_err(|err| format!("cannot connect to the PostgreSQL at DATABASE_URL: {err}"))?;
    store.migrate().await?;
    println!(
        "created par-store's tables (if missing) in the database at {} ({which})",
        redacted(&url)?
    );

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

/// `url` when something answers there; else the URL of a throwaway cluster started for this
/// run (removed when it exits); else an error that says what to start. With a name for it.
fn server(url: String) -> Result<(String, &'static str), String> {
    let options = PgConnectOptions::from_str(&url)
        .map_err(|err| format!("DATABASE_URL is not a PostgreSQL URL: {err}"))?;
    let (host, port) = (options.get_host(), options.get_port());
    if cluster::answers(host, port) {
        return Ok((url, "DATABASE_URL"));
    }
    match cluster::start_until_process_exit() {
        Ok((cluster, dir)) => {
            println!(
                "nothing answers at {host}:{port} (DATABASE_URL): using a throwaway PostgreSQL \
                 cluster on 127.0.0.1:{} ({}), removed when this example exits",
                cluster.get_port(),
                dir.display()
            );
            let url = format!(
                "postgres://postgres@127.0.0.1:{}/postgres",
                cluster.get_port()
            );
            Ok((url, "the throwaway cluster"))
        }
        Err(cluster::NotStarted::NoServerBinaries) => Err(format!(
            "nothing answers at {host}:{port} (DATABASE_URL) and no PostgreSQL server binaries \
             are installed to start a throwaway one: run `docker compose up -d --wait`, or set \
             DATABASE_URL to a PostgreSQL that runs"
        )),
        Err(cluster::NotStarted::Failed) => {
            Err("starting a throwaway PostgreSQL cluster failed (see above)".to_owned())
        }
    }
}

/// Host, port and database of `url`, without user or password.
fn redacted(url: &str) -> Result<String, par_store::sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    ))
}
