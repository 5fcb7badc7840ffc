//! The store contract every backend implements.

use crate::error::StoreError;
use crate::model::PushedAuthorizationRequest;

/// Storage for pushed authorization requests (RFC 9126), keyed by the hash of their
/// reference value.
///
/// # Contract
///
/// Every implementation in this crate ([`PostgresStore`](crate::PostgresStore),
/// [`MemoryStore`](crate::MemoryStore)) behaves identically; one contract test suite
/// runs against each.
///
/// - [`store`](Self::store) inserts and never overwrites: a second request with the same
///   hash fails with [`StoreError::Duplicate`] (whether or not the first has expired) and the
///   first is left untouched.
/// - [`get_by_hash`](Self::get_by_hash) returns the request while it is live
///   (`expires_at` in the future) and never an expired one, whether or not cleanup has run.
///   It does not consume: call it as often as login and consent need.
/// - [`consume_by_hash`](Self::consume_by_hash) atomically removes the request and returns it
///   if it was live. It returns `None` if the request never existed, was already consumed or
///   had expired (an expired request it finds is removed too). Of any number of concurrent
///   callers, exactly one gets `Some`.
/// - Input is checked before anything is stored: a bad request fails with
///   [`StoreError::InvalidInput`] naming the field, and nothing is written. A look-up with a
///   hash that could never have been stored (empty, over 128 bytes, control characters)
///   answers `Ok(None)`.
/// - [`PostgresStore`](crate::PostgresStore) runs each operation as one statement; the round
///   trips around it depend on how it is connected (one on its own pool, more on a caller's
///   `PgPool` and in pooler mode, which wraps it in a transaction: `docs/connections.md`).
///
/// The trait is object safe, so a server can hold any store as
/// `Arc<dyn PushedAuthorizationRequestStore>`:
///
/// ```
/// use std::sync::Arc;
/// use par_store::chrono::{Duration, Utc};
/// use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), par_store::StoreError> {
/// let store: Arc<dyn PushedAuthorizationRequestStore> = Arc::new(MemoryStore::new());
/// let request = PushedAuthorizationRequest::new("hash-1", Utc::now() + Duration::seconds(600), "client_id=a");
/// store.store(&request).await?;
/// assert_eq!(store.get_by_hash("hash-1").await?, Some(request.clone()));
/// assert_eq!(store.consume_by_hash("hash-1").await?, Some(request));
/// assert_eq!(store.consume_by_hash("hash-1").await?, None); // single use
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait PushedAuthorizationRequestStore: Send + Sync {
    /// Stores a new pushed authorization request.
    ///
    /// Fails with [`StoreError::Duplicate`] if a request with the same hash exists, and with
    /// [`StoreError::InvalidInput`] if the hash, the parameters or the expiry are refused.
    async fn store(&self, request: &PushedAuthorizationRequest) -> Result<(), StoreError>;

    /// Removes the request and returns it if it was live; `None` otherwise.
    ///
    /// This is what makes a `request_uri` single use: call it when the authorization
    /// response is produced.
    async fn consume_by_hash(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError>;

    /// Returns the request if it is live, without consuming it.
    async fn get_by_hash(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError>;
}
