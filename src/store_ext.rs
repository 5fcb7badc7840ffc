//! The operations on client-bound and replaceable requests, beyond the Duende contract.

use crate::error::StoreError;
use crate::model::PushedAuthorizationRequest;
use crate::store::PushedAuthorizationRequestStore;
use chrono::{DateTime, Utc};

/// The operations a server needs beyond [`PushedAuthorizationRequestStore`] when its own
/// storage contract has them: insert-or-replace, removal of a client's requests, and a sweep
/// up to a given instant (oauth-as's `put_pushed_authorization_request`, `delete_client` and
/// `sweep_expired`, for example).
///
/// Implemented by [`PostgresStore`](crate::PostgresStore),
/// [`MemoryStore`](crate::MemoryStore), and [`ProtectedStore<S>`](crate::ProtectedStore)
/// over any `S` that implements it. Like the base trait it is object safe, so generic code
/// and `dyn` code reach these operations on every store:
///
/// ```
/// use std::sync::Arc;
/// use par_store::chrono::{Duration, Utc};
/// use par_store::protect::{KeyRing, ProtectionKey};
/// use par_store::{
///     MemoryStore, ProtectedStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore,
///     PushedAuthorizationRequestStoreExt, StoreError,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = KeyRing::new(ProtectionKey::generate("k1")?);
/// let stores: Vec<Arc<dyn PushedAuthorizationRequestStoreExt>> = vec![
///     Arc::new(MemoryStore::new()),
///     Arc::new(ProtectedStore::new(MemoryStore::new(), keys)),
///     // Arc::new(PostgresStore::connect(url).await?),
/// ];
/// for store in stores {
///     let expires_at = Utc::now() + Duration::seconds(600);
///     let request = PushedAuthorizationRequest::new("hash-1", expires_at, "p=1").with_client_id("a");
///     store.store_or_replace(&request).await?;
///     store.store_or_replace(&PushedAuthorizationRequest::new("hash-1", expires_at, "p=2")).await?;
///     assert_eq!(store.get_by_hash("hash-1").await?.map(|r| r.parameters), Some("p=2".into()));
///     assert!(matches!(store.store(&request).await, Err(StoreError::Duplicate)));
///     store.store_or_replace(&request).await?;
///     assert_eq!(store.delete_by_client_id("a").await?, 1);
///     assert_eq!(store.delete_expired_as_of(Utc::now()).await?, 0);
/// }
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait PushedAuthorizationRequestStoreExt: PushedAuthorizationRequestStore {
    /// Stores the request, or replaces the one stored under the same hash (live or
    /// expired: its parameters, expiry and client binding), in one atomic step.
    ///
    /// A consumed request is never brought back: over its consumed marker this fails
    /// with [`StoreError::Duplicate`] and changes nothing. (The one exception is the marker
    /// left by the oauth-as adapter's take, which oauth-as's put-back replaces: see
    /// `par_store::oauth_as`.)
    ///
    /// For servers whose storage contract is "insert or replace", such as oauth-as
    /// putting a request back after a client presented someone else's
    /// `request_uri`. The input rules are those of
    /// [`store`](PushedAuthorizationRequestStore::store); only the duplicate
    /// check differs. A server that mints reference values should keep using `store`,
    /// which refuses a collision instead of overwriting.
    ///
    /// On PostgreSQL this is `INSERT ... ON CONFLICT DO UPDATE`, which needs `UPDATE`
    /// on `expires_at`, `parameters` and `client_id` (step 4 of `docs/roles.sql`).
    /// [`ProtectedStore`](crate::ProtectedStore) seals the parameters first; its input
    /// rules and errors are those of its `store`.
    async fn store_or_replace(
        &self,
        request: &PushedAuthorizationRequest,
    ) -> Result<(), StoreError>;

    /// Removes every request bound to `client_id`
    /// ([`PushedAuthorizationRequest::with_client_id`]), live or expired, and returns how
    /// many were removed.
    ///
    /// For a server deleting a client: RFC 9126 section 2.2 binds a `request_uri`
    /// to the client that pushed it, so a deleted client's requests can never be
    /// used. Requests stored without a client id are never removed by this. An id no
    /// request could be bound to (empty, over
    /// [`MAX_CLIENT_ID_LEN`](crate::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN) bytes, control characters)
    /// removes nothing. The client id is stored in clear, so a
    /// [`ProtectedStore`](crate::ProtectedStore) decrypts nothing.
    async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError>;

    /// Removes every request that expires at or before `cutoff`, in batches, and
    /// returns how many were removed.
    ///
    /// `delete_expired` and the [`CleanupJob`](crate::CleanupJob) judge expiry by the
    /// store's clock (the database's, for PostgreSQL); this is for servers whose
    /// sweep passes the instant itself, such as oauth-as's `sweep_expired(now)`. A
    /// `cutoff` in the future removes requests that are still live: pass the present.
    async fn delete_expired_as_of(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
}
