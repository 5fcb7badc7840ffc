//! The previous release of par-store as a process of its own, for the N-1 test
//! (`tests/n_minus_1.rs`): one server instance of the old release (0.3.0, `.ci/previous-release`),
//! driven over stdin/stdout.
//!
//! Usage: `par-store-n-1-driver <database_url> <max_connections> [--markers on|off]
//! [--reload-within-ms <ms>]`. It connects with the old release's `PostgresStoreOptions` (a
//! pool of its own, as a server instance has), with `consumed_markers` and
//! `ConsumePolicy::ReloadWithin` as given (default: markers on, `ConsumePolicy::Once`), so that
//! old and new instances of one fleet run with the same configuration, as a deploy would. It
//! prints `ready` (or `fatal\t<message>` and exits 1; 2 for a bad command line), then reads one
//! request per line and answers each on one line, tagged with the request's id. Every request
//! runs as its own task, so many are in flight at once and answers come back in any order.
//! Fields are separated by tabs; a client id of `-` means none.
//!
//! | request | calls | answers |
//! |---|---|---|
//! | `<id> migrate` | `migrate()` | `ok` |
//! | `<id> last_migration` | `PostgresStore::migrator()` | `ok <version>` (the newest migration this release embeds) |
//! | `<id> store <hash> <expires_unix_ms> <client_id> <params>` | `store` | `ok`, `duplicate` |
//! | `<id> get <hash>` | `get_by_hash` | `found <client_id> <params>`, `not_found` |
//! | `<id> get_for_client <hash> <client_id>` | `get_for_client` | `found <client_id> <params>`, `already_consumed`, `expired`, `not_found`, `wrong_client` |
//! | `<id> consume <hash> <client_id>` | `consume_for_client` | `consumed <client_id> <params>`, `already_consumed`, `expired`, `not_found`, `wrong_client` |
//! | `<id> consume_in_session <hash> <client_id> <session>` | `consume_in_session` | as `consume` |
//! | `<id> delete_expired` | `delete_expired` | `ok <removed>` |
//!
//! The outcomes are the old release's own names (`Consumption::as_str`, `Lookup::as_str`); in
//! 0.3.0 a `wrong_client` consumes nothing. Any request may instead answer
//! `error <kind> <message>` (the old release's `StoreError`, its kind and its text with tabs
//! and line breaks made spaces). Only the old release's public API is used: what a server
//! built on it would call. When stdin closes, the driver finishes the requests in flight,
//! closes its store and exits.

use par_store::chrono::{TimeZone, Utc};
use par_store::{
    ConsumePolicy, Consumption, Lookup, PostgresStore, PostgresStoreOptions,
    PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const USAGE: &str = "usage: par-store-n-1-driver <database_url> <max_connections> \
                     [--markers on|off] [--reload-within-ms <ms>]";

// One thread: the requests are tasks of a `LocalSet` (a second thread buys a driver nothing).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    tokio::task::LocalSet::new().run_until(serve()).await;
}

/// The command line: where to connect and the store's options.
struct Config {
    url: String,
    options: PostgresStoreOptions,
}

fn config() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(max_connections)) = (args.next(), args.next()) else {
        return Err(USAGE.to_owned());
    };
    let max_connections: u32 = max_connections
        .parse()
        .map_err(|_| format!("bad max_connections {max_connections:?}; {USAGE}"))?;
    let mut options = PostgresStoreOptions::new().max_connections(max_connections);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        options = match (flag.as_str(), value.as_str()) {
            ("--markers", "on") => options.consumed_markers(true),
            ("--markers", "off") => options.consumed_markers(false),
            ("--reload-within-ms", ms) => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("bad --reload-within-ms {ms:?}; {USAGE}"))?;
                options.consume_policy(ConsumePolicy::ReloadWithin(Duration::from_millis(ms)))
            }
            _ => return Err(format!("unknown option {flag} {value}; {USAGE}")),
        };
    }
    Ok(Config { url, options })
}

async fn serve() {
    let config = match config() {
        Ok(config) => config,
        Err(usage) => {
            println!("fatal\t{}", one_line(&usage));
            std::process::exit(2);
        }
    };
    let store = match config.options.connect(&config.url).await {
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
        ["get_for_client", hash, client_id] => lookup(store.get_for_client(hash, client_id).await),
        ["consume", hash, client_id] => {
            consumption(store.consume_for_client(hash, client_id).await)
        }
        ["consume_in_session", hash, client_id, session] => {
            consumption(store.consume_in_session(hash, client_id, session).await)
        }
        ["delete_expired"] => match store.delete_expired().await {
            Ok(removed) => format!("ok\t{removed}"),
            Err(err) => error(&err),
        },
        _ => format!("error\tprotocol\tunknown request {:?}", one_line(request)),
    }
}

/// `found <client_id> <params>`, or the other outcome's name.
fn lookup(looked_up: Result<Lookup, StoreError>) -> String {
    match looked_up {
        Ok(Lookup::Found(found)) => format!("found\t{}", request_fields(&found)),
        Ok(other) => other.as_str().to_owned(),
        Err(err) => error(&err),
    }
}

/// `consumed <client_id> <params>`, or the other outcome's name.
fn consumption(consumed: Result<Consumption, StoreError>) -> String {
    match consumed {
        Ok(Consumption::Consumed(request)) => format!("consumed\t{}", request_fields(&request)),
        Ok(other) => other.as_str().to_owned(),
        Err(err) => error(&err),
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
        StoreError::MigrationNeedsDirectConnection => "migration_needs_direct_connection",
        StoreError::InvalidDatabaseUrl(_) => "invalid_database_url",
        StoreError::Database { .. } => "database",
        StoreError::IncompatibleSchema { .. } => "incompatible_schema",
        StoreError::NoRuntime => "no_runtime",
        StoreError::Protection { .. } => "protection",
        _ => "other",
    };
    format!("error\t{kind}\t{}", one_line(&err.to_string()))
}

fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}
