//! # par-store
//!
//! Durable, correct storage for OAuth 2.0 **Pushed Authorization Requests**
//! ([RFC 9126](https://www.rfc-editor.org/rfc/rfc9126)), for authorization servers written in
//! Rust.
//!
//! ## Overview
//!
//! At its PAR endpoint a server protects the request parameters, picks a random reference
//! value, and stores the request under the **hash** of that value; the client receives
//! `request_uri = urn:ietf:params:oauth:request_uri:<reference value>`. At the authorize
//! endpoint the server hashes the reference from the `request_uri`, reads the request for the
//! client that presents it with
//! [`get_for_client`](PushedAuthorizationRequestStore::get_for_client) (as often as login and
//! consent need) and finally consumes it with
//! [`consume_for_client`](PushedAuthorizationRequestStore::consume_for_client), so that the
//! `request_uri` is single use and bound to the client that pushed it. The [`Lookup`] and
//! the [`Consumption`] they answer tell a reused `request_uri` (a security event) from an
//! unknown one. [`prelude`] brings the traits into scope. What the
//! crate promises is stated once, in the README's
//! [Guarantees](https://github.com/par-store/par-store#guarantees).
//!
//! - [`PushedAuthorizationRequestStore`] is the contract (modelled on Duende IdentityServer's
//!   `IPushedAuthorizationRequestStore`); it is object safe, for
//!   `Arc<dyn PushedAuthorizationRequestStore>`. [`PushedAuthorizationRequestStoreExt`] adds
//!   insert-or-replace, removal by client and a sweep up to a given instant.
//! - [`PostgresStore`] keeps requests in PostgreSQL through `sqlx`: one static statement per
//!   operation, expiry checked in SQL, consumption as one atomic statement that leaves a
//!   consumed marker until the request expires.
//! - [`MemoryStore`] has exactly the same semantics, in process memory.
//! - [`CleanupJob`] removes expired requests in the background, in batches that many
//!   instances can run at once; `delete_expired` does one pass, e.g. from cron.
//! - [`ReferenceValue`] mints and parses `request_uri`s and computes the hash to store them
//!   under, in Duende IdentityServer's format.
//! - [`ProtectedStore`] wraps any store and keeps the parameters encrypted at rest
//!   (XChaCha20-Poly1305, bound to the request's hash, with key rotation through a [`KeyRing`](protect::KeyRing); the `protect` module has the keys and the
//!   envelope's size).
//! - Every error is a [`StoreError`]; bad input is refused before it reaches the database.
//! - With the cargo feature `oauth-as`, `oauth_as::OauthAsStorage` makes a [`PostgresStore`]
//!   the pushed-request storage of the [oauth-as](https://docs.rs/oauth-as) authorization
//!   server (see `docs/oauth-as.md`).
//! - With the cargo feature `metrics`, every store operation records OpenTelemetry's
//!   `db.client.operation.duration`, request counters and pool gauges through the `metrics`
//!   facade; `par_store::metrics` lists them.
//!
//! ## Quick example
//!
//! ```
//! use par_store::chrono::{Duration, Utc};
//! use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), par_store::StoreError> {
//! let store = MemoryStore::new(); // or PostgresStore::connect(url).await?
//! let request = PushedAuthorizationRequest::new(
//!     "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
//!     Utc::now() + Duration::seconds(600),
//!     "protected parameters",
//! );
//! store.store(&request).await?;
//! assert!(store.get_by_hash(&request.reference_value_hash).await?.is_some());
//! assert!(store.consume_by_hash(&request.reference_value_hash).await?.is_some());
//! assert!(store.consume_by_hash(&request.reference_value_hash).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! ## Schema and migrations
//!
//! The schema is one table, `pushed_authorization_requests`, created by the reversible sqlx
//! migrations in the crate's `migrations/` folder, whose history is kept in
//! [`PostgresStore::MIGRATIONS_TABLE`] (`_par_store_migrations`) beside the application's own
//! `_sqlx_migrations`. Apply them either way, in any order:
//!
//! - from code, at start-up: [`PostgresStore::migrate`] (idempotent, safe from many instances
//!   at once; [`PostgresStore::migrator`] for the sqlx `Migrator` itself);
//! - with sqlx-cli 0.9 from the application's directory, pointing at this crate's folder
//!   (find it with `cargo metadata`) and at its `sqlx.toml`, which names the history table:
//!
//! ```text
//! sqlx migrate run --source <par-store>/migrations --config <par-store>/sqlx.toml
//! ```
//!
//! Run without `--config`, sqlx-cli records the migrations in `_sqlx_migrations`;
//! `migrate()` recognises them there and does not apply them twice (see the
//! [README](https://github.com/par-store/par-store#migrations)).
//!
//! ## TLS
//!
//! Enable the `rustls` feature (sqlx's `tls-rustls`) and connect with
//! `sslmode=verify-full&sslrootcert=<CA file>`; without it `connect` refuses a URL that asks
//! for TLS with [`StoreError::InvalidDatabaseUrl`], which names the feature. See [docs/security.md](https://github.com/par-store/par-store/blob/main/docs/security.md#tls).
//!
//! ## Errors
//!
//! Store operations return [`StoreError`], whose documentation holds the table of what a
//! server answers over HTTP for each error; parsing has its own error types
//! ([`error::InvalidRequestUri`], [`protect::KeyRingError`]); the [`error`] module has them
//! all. `chrono` and `uuid`, which appear in the API,
//! are re-exported as [`par_store::chrono`](chrono) and [`par_store::uuid`](uuid), like
//! [`par_store::sqlx`](sqlx).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod backend;
mod cleanup;
mod consume_policy;
mod consumption;
mod envelope;
pub mod error;
mod execution;
mod hosts;
mod key_ring;
mod lookup;
mod memory;
#[cfg(feature = "metrics")]
pub mod metrics;
mod migrations;
mod model;
#[cfg(feature = "oauth-as")]
pub mod oauth_as;
mod operation;
mod pool;
mod postgres;
pub mod prelude;
pub mod protect;
mod reference;
mod sql;
mod store;
mod store_ext;
mod telemetry;
mod validate;

pub use cleanup::{CleanupJob, CleanupOptions, CleanupStats, ExpiredRequestCleaner};
pub use consume_policy::ConsumePolicy;
pub use consumption::Consumption;
pub use error::StoreError;
pub use hosts::TargetSessionAttrs;
pub use lookup::Lookup;
pub use memory::MemoryStore;
pub use model::PushedAuthorizationRequest;
pub use postgres::{PostgresStore, PostgresStoreOptions};
pub use protect::ProtectedStore;
pub use reference::ReferenceValue;
pub use store::PushedAuthorizationRequestStore;
pub use store_ext::PushedAuthorizationRequestStoreExt;

/// The `sqlx` this crate is built on, so that applications build their `PgPool` with the
/// same version.
pub use sqlx;

/// The `chrono` of this crate's public API ([`PushedAuthorizationRequest::expires_at`]), so
/// that applications name the same `DateTime<Utc>` without a dependency of their own.
pub use chrono;

/// The `uuid` of this crate's public API ([`CleanupJob::id`]).
pub use uuid;

/// The README's Rust examples, compiled by `cargo test --doc` so that the first snippet a
/// newcomer copies keeps compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
