//! Protected parameters: authenticated encryption at rest, as a decorator over any store.
//!
//! [`ProtectedStore`] (also at the crate root) seals `parameters` with XChaCha20-Poly1305
//! before they reach the inner store and opens them on the way out. The request's
//! `reference_value_hash` and its client binding (`client_id`, or its absence) are the AEAD's
//! associated data, so an envelope only opens on the row it was written for, bound to the
//! client it was pushed by. The keys are a [`KeyRing`] of [`ProtectionKey`]s; the envelope's format
//! and size are described at [`envelope_len`], for sizing the inner store's limit.
//!
//! ```
//! use par_store::protect::{KeyRing, ProtectionKey};
//! use par_store::{MemoryStore, ProtectedStore};
//!
//! # fn main() -> Result<(), par_store::protect::KeyRingError> {
//! let keys = KeyRing::new(ProtectionKey::generate("k1")?); // or KeyRing::from_env("PAR_STORE_KEYS")?
//! let store = ProtectedStore::new(MemoryStore::new(), keys);
//! # drop(store);
//! # Ok(()) }
//! ```

use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::consumption::Consumption;
use crate::error::{InputField, StoreError};
use crate::lookup::Lookup;
use crate::model::{HashPrefix, PushedAuthorizationRequest};
use crate::store::PushedAuthorizationRequestStore;
use crate::store_ext::PushedAuthorizationRequestStoreExt;
use crate::telemetry::error_kind;
use crate::validate::check_request;
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::Arc;

pub use crate::envelope::{
    envelope_len, max_parameters_len_within, ENVELOPE_VERSION, MAX_KEY_ID_LEN,
};
pub use crate::key_ring::{KeyRing, KeyRingError, ProtectionKey};

/// A store that keeps `parameters` encrypted: a decorator over any
/// [`PushedAuthorizationRequestStore`].
///
/// - [`store`](PushedAuthorizationRequestStore::store) checks the request with the same
///   rules as every store (hash, NUL characters, expiry), then seals the parameters with
///   XChaCha20-Poly1305 under the ring's current key, a fresh random 192-bit nonce, and the
///   `reference_value_hash` and `client_id` (or its absence) as associated data, and stores
///   the envelope (see
///   [`envelope_len`] for its size; the inner store's size limit
///   applies to it).
/// - [`get_by_hash`](PushedAuthorizationRequestStore::get_by_hash) and
///   [`consume_by_hash`](PushedAuthorizationRequestStore::consume_by_hash) return exactly
///   the parameters that were stored, or [`StoreError::Protection`] when the envelope does
///   not open (unknown key, tampered or copied from another row, its row's `client_id`
///   rewritten, malformed). A
///   `consume_by_hash` that fails this way has still removed the request, and says so
///   (`consumed: true`).
/// - [`get_for_client`](PushedAuthorizationRequestStore::get_for_client) is the inner
///   store's, with the same outcomes; only a [`Found`](Lookup::Found) request is opened (a
///   request bound to another client is never decrypted), with the same error when it does
///   not open (`consumed: false`).
/// - [`consume_for_client`](PushedAuthorizationRequestStore::consume_for_client) and
///   [`consume_in_session`](PushedAuthorizationRequestStore::consume_in_session) (under the
///   inner store's [`ConsumePolicy`](crate::ConsumePolicy)) are the inner store's, with the
///   same outcomes; only a
///   [`Consumed`](Consumption::Consumed) request is opened (with the same error when it does
///   not open, `consumed: true`).
///
/// Expiry, the hash and the client binding are stored in clear, as before: someone who can
/// write to the database can still delete a request or change when it expires, but can
/// neither read nor forge parameters, nor move them to another request or (envelope version
/// 2, written since 0.3.0) to another client. Envelopes of version 1, written by 0.2, still
/// open and are bound to the hash only (docs/security.md describes both formats).
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::protect::{KeyRing, ProtectionKey};
/// use par_store::{MemoryStore, ProtectedStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inner = MemoryStore::new();
/// let keys = KeyRing::new(ProtectionKey::generate("k1")?); // or KeyRing::from_env("PAR_STORE_KEYS")?
/// let store = ProtectedStore::new(inner.clone(), keys);
///
/// let request = PushedAuthorizationRequest::new(
///     "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
///     Utc::now() + Duration::seconds(600),
///     "client_id=s6BhdRkqt3&response_type=code",
/// );
/// store.store(&request).await?;
///
/// // The inner store only ever sees the envelope.
/// let at_rest = inner.get_by_hash(&request.reference_value_hash).await?.unwrap();
/// assert!(at_rest.parameters.starts_with("v2.k1."));
/// assert!(!at_rest.parameters.contains("s6BhdRkqt3"));
///
/// assert_eq!(store.get_by_hash(&request.reference_value_hash).await?, Some(request.clone()));
/// assert_eq!(store.consume_by_hash(&request.reference_value_hash).await?, Some(request));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProtectedStore<S> {
    inner: S,
    keys: Arc<KeyRing>,
}

impl<S> ProtectedStore<S> {
    /// Wraps `inner` so that it only ever holds parameters sealed with `keys`.
    pub fn new(inner: S, keys: KeyRing) -> Self {
        ProtectedStore {
            inner,
            keys: Arc::new(keys),
        }
    }

    /// The wrapped store, which holds envelopes (e.g. for `PostgresStore::migrate`).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The request with its parameters sealed, for the inner store, and what turns the inner
    /// store's refusal of the envelope's length into one that names the parameters' length.
    fn seal(
        &self,
        request: &PushedAuthorizationRequest,
    ) -> Result<
        (
            PushedAuthorizationRequest,
            impl FnOnce(StoreError) -> StoreError,
        ),
        StoreError,
    > {
        // The inner store checks the envelope, which never contains NUL: check the
        // plaintext here. Its size and lifetime are checked by the inner store.
        check_request(request, usize::MAX, std::time::Duration::MAX, Utc::now())?;
        let envelope = self.keys.seal(
            &request.reference_value_hash,
            request.client_id.as_deref(),
            &request.parameters,
        )?;
        let envelope_len = envelope.len();
        let parameters_len = request.parameters.len();
        let sealed = PushedAuthorizationRequest {
            reference_value_hash: request.reference_value_hash.clone(),
            expires_at: request.expires_at,
            parameters: envelope,
            client_id: request.client_id.clone(),
        };
        let explain = move |err| match err {
            // Only the envelope's length can be refused here: say what was measured.
            StoreError::InvalidInput {
                field: InputField::Parameters,
                reason,
            } => StoreError::InvalidInput {
                field: InputField::Parameters,
                reason: format!(
                    "{parameters_len} bytes of parameters become a {envelope_len}-byte \
                     envelope, which the store refuses: {reason}"
                ),
            },
            other => other,
        };
        Ok((sealed, explain))
    }

    /// Opens the envelope of a request the inner store consumed; every other outcome passes
    /// through as it is (a marker holds no envelope).
    pub(crate) fn open_consumed(
        &self,
        reference_value_hash: &str,
        consumption: Consumption,
    ) -> Result<Consumption, StoreError> {
        match consumption {
            Consumption::Consumed(request) => Ok(self
                .open(reference_value_hash, Some(request), true)?
                .map_or(Consumption::NotFound, Consumption::Consumed)),
            other => Ok(other),
        }
    }

    /// Opens the envelope of a request read from the inner store; on failure, logs it (no
    /// secret, no envelope) and says whether the request was consumed.
    fn open(
        &self,
        reference_value_hash: &str,
        found: Option<PushedAuthorizationRequest>,
        consumed: bool,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let Some(mut request) = found else {
            return Ok(None);
        };
        // Bound to the hash the caller asked for and to the client binding of the row the
        // inner store returned: an envelope opens only for its own request, and only while
        // that request is bound to the client it was pushed by.
        match self.keys.open(
            reference_value_hash,
            request.client_id.as_deref(),
            &request.parameters,
        ) {
            Ok(parameters) => {
                request.parameters = parameters;
                Ok(Some(request))
            }
            Err(kind) => {
                let err = StoreError::Protection { kind, consumed };
                tracing::warn!(
                    hash = %HashPrefix(reference_value_hash),
                    outcome = error_kind(&err),
                    consumed,
                    error = %err,
                    "par-store: protected parameters could not be opened"
                );
                Err(err)
            }
        }
    }
}

impl<S: ExpiredRequestCleaner> ProtectedStore<S> {
    /// Removes every expired request from the inner store, in batches, and returns how many
    /// were removed. Nothing is decrypted.
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        delete_expired_in_batches(self, DEFAULT_BATCH_SIZE).await
    }
}

impl<S: fmt::Debug> fmt::Debug for ProtectedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedStore")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .finish()
    }
}

/// The operations on client-bound and replaceable requests of the inner store, so that a
/// server whose contract needs them (such as oauth-as, through
/// `OauthAsStorage::with_protection`) can keep its parameters sealed.
#[async_trait::async_trait]
impl<S: PushedAuthorizationRequestStoreExt> PushedAuthorizationRequestStoreExt
    for ProtectedStore<S>
{
    /// Seals the parameters, then stores the request or replaces the one stored under the
    /// same hash, in one atomic step: see the inner store's `store_or_replace`. The input
    /// rules and errors are those of `store`.
    async fn store_or_replace(
        &self,
        request: &PushedAuthorizationRequest,
    ) -> Result<(), StoreError> {
        let (sealed, explain) = self.seal(request)?;
        self.inner.store_or_replace(&sealed).await.map_err(explain)
    }

    /// The inner store's `delete_by_client_id`: the client id is stored in clear (it is
    /// authenticated, not encrypted), so nothing is decrypted.
    async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError> {
        self.inner.delete_by_client_id(client_id).await
    }

    /// The inner store's `delete_expired_as_of`: nothing is decrypted.
    async fn delete_expired_as_of(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.delete_expired_as_of(cutoff).await
    }
}

#[async_trait::async_trait]
impl<S: PushedAuthorizationRequestStore> PushedAuthorizationRequestStore for ProtectedStore<S> {
    async fn store(&self, request: &PushedAuthorizationRequest) -> Result<(), StoreError> {
        let (sealed, explain) = self.seal(request)?;
        self.inner.store(&sealed).await.map_err(explain)
    }

    async fn consume_by_hash(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let found = self.inner.consume_by_hash(reference_value_hash).await?;
        self.open(reference_value_hash, found, true)
    }

    async fn get_by_hash(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let found = self.inner.get_by_hash(reference_value_hash).await?;
        self.open(reference_value_hash, found, false)
    }

    async fn get_for_client(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Lookup, StoreError> {
        // The client binding is stored in clear: the inner store checks it, and nothing is
        // decrypted unless it found the request for this client.
        match self
            .inner
            .get_for_client(reference_value_hash, client_id)
            .await?
        {
            Lookup::Found(request) => Ok(self
                .open(reference_value_hash, Some(request), false)?
                .map_or(Lookup::NotFound, Lookup::Found)),
            other => Ok(other),
        }
    }

    async fn consume_for_client(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Consumption, StoreError> {
        // The client binding is stored in clear: the inner store checks it in its own
        // single atomic step, and nothing is decrypted unless it consumed the request. The
        // envelope is bound to the row's binding, so a rewritten one fails to open.
        let consumed = self
            .inner
            .consume_for_client(reference_value_hash, client_id)
            .await?;
        self.open_consumed(reference_value_hash, consumed)
    }

    async fn consume_in_session(
        &self,
        reference_value_hash: &str,
        client_id: &str,
        session_binding: &str,
    ) -> Result<Consumption, StoreError> {
        // The inner store's policy decides; a reload hands out the same envelope again,
        // opened like the first time.
        let consumed = self
            .inner
            .consume_in_session(reference_value_hash, client_id, session_binding)
            .await?;
        self.open_consumed(reference_value_hash, consumed)
    }
}

#[async_trait::async_trait]
impl<S: ExpiredRequestCleaner> ExpiredRequestCleaner for ProtectedStore<S> {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.inner.delete_expired_batch(batch_size).await
    }
}
