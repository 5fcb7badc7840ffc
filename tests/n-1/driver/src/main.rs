//! The previous release of par-store as a process of its own, for the N-1 test
//! (`tests/n_minus_1.rs`): one server instance of the old release, driven over stdin/stdout.
//!
//! Usage: `par-store-n-1-driver <database_url> <max_connections>`. It connects with the old
//! release's `PostgresStoreOptions` (a pool of its own, as a server instance has), prints
//! `ready` (or `fatal\t<message>` and exits 1), then reads one request per line and answers
//! each on one line, tagged with the request's id. Every request runs as its own task, so
//! many are in flight at once and answers come back in any order. Fields are separated by
//! tabs; a client id of `-` means none.
//!
//! | request | answers |
//! |---|---|
//! | `<id> migrate` | `ok` |
//! | `<id> last_migration` | `ok <version>` (the newest migration this release embeds) |
//! | `<id> store <hash> <expires_unix_ms> <client_id> <params>` | `ok`, `duplicate` |
//! | `<id> get <hash>` | `found <client_id> <params>`, `not_found` |
//! | `<id> consume <hash> <client_id>` | `consumed <client_id> <params>`, `not_found`, `wrong_client <client_id> <params>` |
//! | `<id> delete_expired` | `ok <removed>` |
//!
//!
//! 0.2 has no client-bound consume: like a server on 0.2, the driver consumes by hash and then
//! compares the request's client with the caller's (`wrong_client`: consumed all the same).
//! Any request may instead answer `error <kind> <message>` (the old release's `StoreError`,
//! its kind and its text with tabs and line breaks made spaces). Only the old release's
//! public API is used: what a server built on it would call. When stdin closes, the driver
//! finishes the requests in flight, closes its store and exits.

use par_store::chrono::{TimeZone, Utc};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

// One thread: the requests are tasks of a `LocalSet` (the old store's futures are not all
// `Send` as spawned here, and a second thread buys a driver nothing).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    tokio::task::LocalSet::new().run_until(serve()).await;
}

async fn serve() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(max_connections)) = (args.next(), args.next()) else {
        println!("fatal\tusage: par-store-n-1-driver <database_url> <max_connections>");
        std::process::exit(2);
    };
    let max_connections: u32 = max_connections.parse().unwrap_or(2);
    let store = match PostgresStoreOptions::new()
        .max_connections(max_connections)
        .connect(&url)
        .await
    {
        Ok(store) => Arc::new(store),
        Err(err) => {
            println!("fatal\t{}", one_line(&err.to_string()));
            std::process::exit(1);
        }
    };

    let (answers, mut outbox) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(first) = outbox.recv().await {
            let mut text = first;
            text.push('\n');
            // Whatever else is ready goes out with it, in one write.
            while let Ok(more) = outbox.try_recv() {
                text.push_str(&more);
                text.push('\n');
            }
            if stdout.write_all(text.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let _ = answers.send("ready".to_owned());

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight = tokio::task::JoinSet::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let store = store.clone();
        let answers = answers.clone();
        in_flight.spawn_local(async move {
            let (id, request) = line.split_once('\t').unwrap_or((line.as_str(), ""));
            let answer = answer(&store, request).await;
            let _ = answers.send(format!("{id}\t{answer}"));
        });
        // Reap what has finished, so the set does not grow with the whole run.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    drop(answers);
    let _ = writer.await;
    store.close().await;
}

/// Runs one request on the old release's store and says what it answered.
async fn answer(store: &PostgresStore, request: &str) -> String {
    let fields: Vec<&str> = request.split('\t').collect();
    match fields.as_slice() {
        ["migrate"] => match store.migrate().await {
            Ok(()) => "ok".to_owned(),
            Err(err) => error(&err),
        },
        ["last_migration"] => {
            let newest = PostgresStore::migrator()
                .iter()
                .map(|migration| migration.version)
                .max()
                .unwrap_or(0);
            format!("ok\t{newest}")
        }
        ["store", hash, expires_unix_ms, client_id, params] => {
            let Some(expires_at) = expires_unix_ms
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            else {
                return format!("error\tprotocol\tbad expiry {expires_unix_ms:?}");
            };
            let mut pushed = PushedAuthorizationRequest::new(*hash, expires_at, *params);
            if *client_id != "-" {
                pushed = pushed.with_client_id(*client_id);
            }
            match store.store(&pushed).await {
                Ok(()) => "ok".to_owned(),
                Err(StoreError::Duplicate) => "duplicate".to_owned(),
                Err(err) => error(&err),
            }
        }
        ["get", hash] => match store.get_by_hash(hash).await {
            Ok(Some(found)) => format!("found\t{}", request_fields(&found)),
            Ok(None) => "not_found".to_owned(),
            Err(err) => error(&err),
        },
        ["consume", hash, client_id] => match store.consume_by_hash(hash).await {
            Ok(Some(consumed))
                if consumed
                    .client_id
                    .as_deref()
                    .is_some_and(|bound| bound != *client_id) =>
            {
                format!("wrong_client\t{}", request_fields(&consumed))
            }
            Ok(Some(consumed)) => format!("consumed\t{}", request_fields(&consumed)),
            Ok(None) => "not_found".to_owned(),
            Err(err) => error(&err),
        },
        ["delete_expired"] => match store.delete_expired().await {
            Ok(removed) => format!("ok\t{removed}"),
            Err(err) => error(&err),
        },
        _ => format!("error\tprotocol\tunknown request {:?}", one_line(request)),
    }
}

/// `<client_id> <params>` of a request the old release returned.
fn request_fields(request: &PushedAuthorizationRequest) -> String {
    format!(
        "{}\t{}",
        request.client_id.as_deref().unwrap_or("-"),
        one_line(&request.parameters)
    )
}

/// `error <kind> <message>` for an old release's error.
fn error(err: &StoreError) -> String {
    let kind = match err {
        StoreError::Duplicate => "duplicate",
        StoreError::InvalidInput { .. } => "invalid_input",
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Timeout { .. } => "timeout",
        StoreError::Migration { .. } => "migration",
        StoreError::InvalidDatabaseUrl(_) => "invalid_database_url",
        StoreError::Database { .. } => "database",
        StoreError::NoRuntime => "no_runtime",
        StoreError::Protection { .. } => "protection",
        _ => "other",
    };
    format!("error\t{kind}\t{}", one_line(&err.to_string()))
}

fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}
