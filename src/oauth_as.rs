//! par-store as the pushed-request storage of the [`oauth-as`](https://docs.rs/oauth-as)
//! authorization server (cargo feature `oauth-as`).
//!
//! oauth-as leaves persistence to its host through one trait, [`Storage`]. [`OauthAsStorage`]
//! implements it by sending the RFC 9126 pushed authorization requests to a
//! [`PostgresStore`] and every other record (clients, codes, tokens, revocation barriers, ...)
//! to an inner [`Storage`] of the host's choice, for example oauth-as's own `MemoryStorage`:
//!
//! ```no_run
//! use par_store::oauth_as::OauthAsStorage;
//! use par_store::PostgresStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pushed = PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
//! pushed.migrate().await?;
//! let storage = OauthAsStorage::new(pushed, oauth_as::MemoryStorage::new());
//! // oauth_as::AuthorizationServer::new(config, storage) ...
//! # let _ = storage; Ok(()) }
//! ```
//!
//! # How each pushed-request obligation of the trait is met
//!
//! | `Storage` method | what happens in par-store |
//! |---|---|
//! | `put_pushed_authorization_request` | the record, serialized as JSON without its `request_uri`, becomes the request's `parameters`; it is stored under the SHA-256 of its `request_uri` (Base64, as [`ReferenceValue::hash`](crate::ReferenceValue::hash) computes it) with its `expires_at` and bound to its `client_id`, replacing any request stored under the same `request_uri` ([`store_or_replace`](crate::PushedAuthorizationRequestStoreExt::store_or_replace)). The `request_uri` itself, a bearer secret, is never stored. A record that has already expired is not stored (the put answers `Applied`; a take would not return it anyway) |
//! | `take_pushed_authorization_request` | a consumption as [`consume_by_hash`](crate::PushedAuthorizationRequestStore::consume_by_hash) does it, without a client check (oauth-as's take is given no `client_id`) but telling a reuse apart: one atomic statement, so exactly one of any number of concurrent takers gets the record, on any number of server instances; an expired request is never returned. The request leaves a consumed marker until it expires; a second take finds it and logs the reuse (below). Unlike a marker left by `consume_for_client` or `consume_by_hash`, this one may be replaced by the next `put_pushed_authorization_request`: oauth-as puts a request back after a stranger presented its `request_uri`, and that put-back must succeed |
//! | `delete_client` | the inner store deletes the client, cascades and records its revocation barrier; then [`delete_by_client_id`](crate::PushedAuthorizationRequestStoreExt::delete_by_client_id) removes the client's pushed requests |
//! | `sweep_expired(now)` | the inner store's sweep, plus [`delete_expired_as_of`](crate::PushedAuthorizationRequestStoreExt::delete_expired_as_of)`(now)`; the count returned is the sum |
//!
//! # The revocation barrier across two stores
//!
//! oauth-as requires `put_pushed_authorization_request` to refuse a record that a client
//! deletion covers ([`WriteOutcome::RefusedRevoked`]), because the server puts a request back
//! after a stranger presented its `request_uri`, and a `delete_client` may run in between.
//! The barrier is recorded by the inner store's `delete_client`, and the trait has no method to
//! ask whether one stands. So the adapter asks the inner store the only way the trait allows:
//! it puts the record into the inner store and takes it straight back out. The inner store
//! refuses the probe exactly when its barrier covers the record, by the inner store's own
//! rule (for `MemoryStorage`: the client was deleted at or after `pushed_at`, or it was deleted
//! and not provisioned again).
//!
//! A check before the write alone would leave a window: a deletion that records its barrier
//! and cascades after the check but before the write would find nothing to remove, and the
//! write would then restore a deleted client's request. So the barrier is asked again after
//! the write. Either that second probe sees the barrier (the adapter removes the row it wrote
//! and answers `RefusedRevoked`), or it ran before the barrier was recorded, and then the
//! write also came before the deletion's cascade, which removes the row. No order of the two
//! operations leaves the request behind; oauth-as's conformance suite passes in full
//! (`demo/tests/oauth_as_conformance.rs`).
//!
//! What this costs: two put-and-take probes on the inner store per pushed request (for
//! `MemoryStorage`, four map operations under its mutex). An inner store in a database pays
//! four round trips for them; keep that store's `put/take_pushed_authorization_request`
//! cheap, and never store pushed requests there otherwise.
//!
//! # A reused `request_uri`
//!
//! oauth-as's `take_pushed_authorization_request` returns `Option`: it cannot tell oauth-as
//! that a `request_uri` was presented again after it was consumed (oauth-as answers
//! `invalid_request_uri`, as for an unknown one). The adapter records such a reuse itself, as a
//! `tracing` warning with the first characters of the row's hash and `consumed_at` (never the
//! `request_uri`): route those warnings to your security monitoring, and see `docs/security.md`
//! ("A reused request_uri") for what to do about one. A reuse is recorded until the request's
//! `expires_at`, and not at all on a store with
//! [`consumed_markers(false)`](crate::PostgresStoreOptions::consumed_markers).
//!
//! # What the host still owes
//!
//! - Run [`PostgresStore::migrate`] (or sqlx-cli) once: the client binding needs migration
//!   `0002`.
//! - Connecting as the least-privilege runtime role of `docs/roles.sql`, grant its step 4
//!   too: the insert-or-replace is an `INSERT ... ON CONFLICT DO UPDATE`, which needs `UPDATE`
//!   on the columns it sets; without it every push fails with a permission error.
//! - Call `sweep_expired` on a schedule (oauth-as runs nothing on a timer), or run a
//!   [`CleanupJob`](crate::CleanupJob) on the [`PostgresStore`] as well; either removes expired
//!   pushed requests.
//! - A failure in par-store reaches oauth-as as a [`StorageError`] carrying the
//!   [`StoreError`]'s message (never parameters), which oauth-as answers with `server_error`.
//! - `delete_client` is two steps in two stores, not one transaction: if the inner deletion
//!   succeeds and par-store's fails, the call fails but the client is gone. Its pushed requests
//!   then stay in PostgreSQL until they expire; they cannot be used, because the client they
//!   are bound to no longer exists in the inner store and the barrier refuses them being put
//!   back. Retrying `delete_client` removes them.
//! - The records are stored in clear text (JSON) unless the host turns on
//!   [`OauthAsStorage::with_protection`]: then they are sealed like
//!   [`ProtectedStore`]'s parameters, and the table holds envelopes.

use crate::backend::take;
use crate::consumption::Consumption;
use crate::error::StoreError;
use crate::key_ring::KeyRing;
use crate::model::{HashPrefix, PushedAuthorizationRequest as StoredRequest};
use crate::postgres::PostgresStore;
use crate::protect::ProtectedStore;
use crate::reference::hash_secret;
use crate::store_ext::PushedAuthorizationRequestStoreExt;
use chrono::{DateTime, Utc};
use oauth_as::client::ClientId;
use oauth_as::par::PushedAuthorizationRequest;
use oauth_as::store::{RevocationWindow, Storage, StorageError, WriteOutcome};
use std::fmt;
use std::time::SystemTime;

/// oauth-as's [`Storage`] with pushed authorization requests in par-store's
/// [`PostgresStore`] and everything else in `inner`. See the [module docs](self) for how each
/// obligation is met.
///
/// `Clone` when `S` is (the [`PostgresStore`] is a cheap handle); oauth-as takes its store by
/// value, so a host that needs the store elsewhere too wraps it in an `Arc` first.
#[derive(Clone)]
pub struct OauthAsStorage<S> {
    pushed: Pushed,
    inner: S,
}

/// Where the pushed requests go: the store itself, or the store behind a key ring.
#[derive(Clone)]
enum Pushed {
    Clear(PostgresStore),
    Sealed(ProtectedStore<PostgresStore>),
}

impl Pushed {
    /// The PostgreSQL store underneath: for what needs no record opened (cascade, sweep,
    /// removing a row unread).
    fn postgres(&self) -> &PostgresStore {
        match self {
            Pushed::Clear(store) => store,
            Pushed::Sealed(protected) => protected.inner(),
        }
    }

    async fn store_or_replace(&self, request: &StoredRequest) -> Result<(), StoreError> {
        match self {
            Pushed::Clear(store) => store.store_or_replace(request).await,
            Pushed::Sealed(protected) => protected.store_or_replace(request).await,
        }
    }

    async fn take(&self, hash: &str) -> Result<Consumption, StoreError> {
        match self {
            Pushed::Clear(store) => take(store, hash).await,
            Pushed::Sealed(protected) => {
                // The inner store's take, then the envelope opened.
                let taken = take(protected.inner(), hash).await?;
                protected.open_consumed(hash, taken)
            }
        }
    }
}

impl<S> fmt::Debug for OauthAsStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OauthAsStorage")
            .field("pushed", self.pushed.postgres())
            .field(
                "keys",
                &match &self.pushed {
                    Pushed::Clear(_) => None,
                    Pushed::Sealed(protected) => Some(protected.keys()),
                },
            )
            .finish_non_exhaustive()
    }
}

impl<S> OauthAsStorage<S> {
    /// Pushed authorization requests in `pushed` (migrated), the rest in `inner`.
    pub fn new(pushed: PostgresStore, inner: S) -> Self {
        OauthAsStorage {
            pushed: Pushed::Clear(pushed),
            inner,
        }
    }

    /// Seals each pushed request's record with `keys` before it reaches PostgreSQL, as
    /// [`ProtectedStore`] does (XChaCha20-Poly1305, bound to the row's hash): the table then
    /// holds envelopes, not the client's redirect URI, scope, state or PKCE challenge.
    /// Requests stored before this was turned on cannot be opened and are answered with an
    /// error; keep the keys of [`KeyRing::from_env`] across restarts and rotations.
    ///
    /// ```no_run
    /// use par_store::oauth_as::OauthAsStorage;
    /// use par_store::{protect::KeyRing, PostgresStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pushed = PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
    /// let storage = OauthAsStorage::new(pushed, oauth_as::MemoryStorage::new())
    ///     .with_protection(KeyRing::from_env("PAR_STORE_KEYS")?);
    /// # let _ = storage; Ok(()) }
    /// ```
    pub fn with_protection(mut self, keys: KeyRing) -> Self {
        self.pushed = Pushed::Sealed(ProtectedStore::new(self.pushed.postgres().clone(), keys));
        self
    }

    /// The store the pushed authorization requests are in.
    pub fn pushed(&self) -> &PostgresStore {
        self.pushed.postgres()
    }

    /// The store everything else is in.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// The key a pushed request is stored under: its `request_uri`, hashed like a reference value.
/// oauth-as mints its own `request_uri`s (lowercase hex), so the whole URI is hashed rather
/// than parsed as a [`ReferenceValue`](crate::ReferenceValue).
fn key_of(request_uri: &str) -> String {
    hash_secret(request_uri)
}

fn storage_error(err: StoreError) -> StorageError {
    StorageError::new(format!("par-store: {err}"))
}

/// The field of oauth-as's record that holds the `request_uri`. It is left out of what is
/// stored: the `request_uri` is the bearer secret, and like a reference value it is kept
/// only as the hash the row is keyed on, so a leaked table yields no usable `request_uri`.
const REQUEST_URI_FIELD: &str = "request_uri";

fn serialization_error(what: &str, err: serde_json::Error) -> StorageError {
    StorageError::new(format!(
        "par-store: a pushed request could not be {what} ({err})"
    ))
}

fn to_stored(record: &PushedAuthorizationRequest) -> Result<StoredRequest, StorageError> {
    let mut fields = match serde_json::to_value(record) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => {
            return Err(StorageError::new(
                "par-store: a pushed request is not a JSON object",
            ))
        }
        Err(err) => return Err(serialization_error("serialized", err)),
    };
    fields.remove(REQUEST_URI_FIELD);
    let parameters = serde_json::Value::Object(fields).to_string();
    Ok(StoredRequest::new(
        key_of(&record.request_uri),
        DateTime::<Utc>::from(record.expires_at),
        parameters,
    )
    .with_client_id(record.client_id.as_str()))
}

fn from_stored(
    stored: &StoredRequest,
    request_uri: &str,
) -> Result<PushedAuthorizationRequest, StorageError> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&stored.parameters)
            .map_err(|err| serialization_error("read back", err))?;
    // The row was found under the hash of this very request_uri.
    fields.insert(REQUEST_URI_FIELD.to_owned(), request_uri.into());
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|err| serialization_error("read back", err))
}

impl<S: Storage> OauthAsStorage<S> {
    /// True when the inner store's revocation barrier refuses `record`: the probe described in
    /// the module docs.
    async fn barrier_refuses(
        &self,
        record: &PushedAuthorizationRequest,
    ) -> Result<bool, StorageError> {
        match self
            .inner
            .put_pushed_authorization_request(record.clone())
            .await?
        {
            WriteOutcome::RefusedRevoked => Ok(true),
            WriteOutcome::Applied => {
                self.inner
                    .take_pushed_authorization_request(&record.request_uri)
                    .await?;
                Ok(false)
            }
        }
    }
}

impl<S: Storage> Storage for OauthAsStorage<S> {
    async fn put_pushed_authorization_request(
        &self,
        record: PushedAuthorizationRequest,
    ) -> Result<WriteOutcome, StorageError> {
        if self.barrier_refuses(&record).await? {
            return Ok(WriteOutcome::RefusedRevoked);
        }
        if record.expires_at <= SystemTime::now() {
            // Already dead: par-store refuses to store an expired request, and a take would
            // not return it anyway. What the caller asked for is in effect.
            return Ok(WriteOutcome::Applied);
        }
        let stored = to_stored(&record)?;
        self.pushed
            .store_or_replace(&stored)
            .await
            .map_err(storage_error)?;
        // Asked again after the write; see the module docs for why this closes the window.
        if self.barrier_refuses(&record).await? {
            // Removed unread: nothing to open. Taken like oauth-as's own take, so that the
            // marker does not outlive what oauth-as's put-back may undo.
            take(self.pushed.postgres(), &stored.reference_value_hash)
                .await
                .map_err(storage_error)?;
            return Ok(WriteOutcome::RefusedRevoked);
        }
        Ok(WriteOutcome::Applied)
    }

    async fn take_pushed_authorization_request(
        &self,
        request_uri: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StorageError> {
        let key = key_of(request_uri);
        match self.pushed.take(&key).await.map_err(storage_error)? {
            Consumption::Consumed(stored) => from_stored(&stored, request_uri).map(Some),
            Consumption::AlreadyConsumed { consumed_at } => {
                // A security event oauth-as's trait has no way to report: recorded here.
                tracing::warn!(
                    hash = %HashPrefix(&key),
                    %consumed_at,
                    "par-store: a pushed authorization request was presented again after it \
                     was consumed"
                );
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    async fn delete_client(
        &self,
        client_id: &ClientId,
        window: RevocationWindow,
    ) -> Result<bool, StorageError> {
        // The inner store first: it refuses an empty id before anything is removed, and it
        // records the barrier that refuses a pushed request racing this cascade.
        let existed = self.inner.delete_client(client_id, window).await?;
        self.pushed
            .postgres()
            .delete_by_client_id(client_id.as_str())
            .await
            .map_err(storage_error)?;
        Ok(existed)
    }

    async fn sweep_expired(&self, now: SystemTime) -> Result<u64, StorageError> {
        let inner = self.inner.sweep_expired(now).await?;
        let pushed = self
            .pushed
            .postgres()
            .delete_expired_as_of(DateTime::<Utc>::from(now))
            .await
            .map_err(storage_error)?;
        Ok(inner.saturating_add(pushed))
    }

    oauth_as::delegate_storage! {
        to inner;
        get_client, put_client, compare_and_swap_client,
        put_device_grant, get_device_grant, find_device_grant_by_user_code,
        take_device_grant, compare_and_swap_device_grant,
        put_authorization_code, compare_and_swap_authorization_code, take_authorization_code,
        put_token, get_token, delete_token,
        put_refresh_token, get_refresh_token, take_refresh_token, rotate_refresh_token,
        revoke_token_family,
        put_consent, compare_and_swap_consent, get_consent, find_consent,
        consents_for_subject, revoke_consent,
        claim_replay_id,
    }
}
