//! What a read found: the outcome of
//! [`get_for_client`](crate::PushedAuthorizationRequestStore::get_for_client).

use crate::model::PushedAuthorizationRequest;
use chrono::{DateTime, Utc};

/// What a server found when it read a request for a client, without changing it: the
/// outcome of [`get_for_client`](crate::PushedAuthorizationRequestStore::get_for_client), the
/// read of the authorization endpoint.
///
/// Only [`Found`](Self::Found) hands out a request. The other outcomes tell the server *why*
/// there is nothing, as [`Consumption`](crate::Consumption) does at the consume step: a
/// client should be answered the same `invalid_request_uri` for all of them (no oracle), but
/// [`AlreadyConsumed`](Self::AlreadyConsumed) is a security event for the server itself: a
/// `request_uri` presented again after it was used (a replayed or leaked authorization
/// request), which almost always shows at this first read. Record it as the same event as a
/// reuse at the consume step (see `docs/security.md`, "A reused request_uri").
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::{Lookup, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), par_store::StoreError> {
/// let store = MemoryStore::new();
/// let request = PushedAuthorizationRequest::new("hash-1", Utc::now() + Duration::seconds(600), "p")
///     .with_client_id("client-a");
/// store.store(&request).await?;
///
/// assert_eq!(store.get_for_client("hash-1", "client-a").await?, Lookup::Found(request.clone()));
/// // Another client presenting it is told so; the request is left as it was.
/// assert_eq!(store.get_for_client("hash-1", "client-b").await?, Lookup::WrongClient);
/// assert_eq!(store.get_for_client("hash-2", "client-a").await?, Lookup::NotFound);
/// assert_eq!(store.get_for_client("hash-1", "client-a").await?.into_found(), Some(request));
/// # Ok(())
/// # }
/// ```
///
/// At the authorization endpoint, a whole `match`. The enum is `#[non_exhaustive]` (a later
/// release may add an outcome), so code outside this crate needs the last `_` arm; treat it
/// like the other refusals:
///
/// ```
/// use par_store::{Lookup, PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError};
///
/// /// The request to show for login and consent, or the OAuth error to send back.
/// async fn read(
///     store: &dyn PushedAuthorizationRequestStore,
///     reference_value_hash: &str,
///     client_id: &str,
/// ) -> Result<Result<PushedAuthorizationRequest, &'static str>, StoreError> {
///     Ok(match store.get_for_client(reference_value_hash, client_id).await? {
///         Lookup::Found(request) => Ok(request),
///         Lookup::AlreadyConsumed { consumed_at } => {
///             // A security event: the request_uri was used before.
///             tracing::warn!(%consumed_at, client_id, "reused request_uri");
///             Err("invalid_request_uri")
///         }
///         Lookup::Expired | Lookup::NotFound | Lookup::WrongClient => Err("invalid_request_uri"),
///         // Required outside par-store: Lookup is #[non_exhaustive].
///         _ => Err("invalid_request_uri"),
///     })
/// }
/// # let _ = read;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// The request is live and bound to this client (or to none); it is not consumed.
    Found(PushedAuthorizationRequest),
    /// The request was consumed at `consumed_at` (the store's clock: the database's, for
    /// PostgreSQL). Reported until the request's `expires_at`, when cleanup removes its
    /// marker; never reported by a store whose consumed markers are turned off, nor by the
    /// trait's default implementation.
    AlreadyConsumed {
        /// When the request was consumed.
        consumed_at: DateTime<Utc>,
    },
    /// The request exists but has expired (a read removes nothing: cleanup does). Not
    /// reported by the trait's default implementation, which answers
    /// [`NotFound`](Self::NotFound) instead.
    Expired,
    /// No request is stored under this hash (never pushed, or removed by cleanup or
    /// `delete_by_client_id`), or the hash could never have been stored.
    NotFound,
    /// The request is bound to another client. It is left exactly as it was.
    WrongClient,
}

impl Lookup {
    /// The request, for [`Found`](Self::Found) only: the
    /// [`get_by_hash`](crate::PushedAuthorizationRequestStore::get_by_hash) view.
    ///
    /// ```
    /// use par_store::Lookup;
    ///
    /// assert_eq!(Lookup::WrongClient.into_found(), None);
    /// ```
    pub fn into_found(self) -> Option<PushedAuthorizationRequest> {
        match self {
            Lookup::Found(request) => Some(request),
            _ => None,
        }
    }

    /// A short, stable name for the outcome (`found`, `already_consumed`, `expired`,
    /// `not_found`, `wrong_client`), for logs and metrics.
    ///
    /// ```
    /// assert_eq!(par_store::Lookup::NotFound.as_str(), "not_found");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Lookup::Found(_) => "found",
            Lookup::AlreadyConsumed { .. } => "already_consumed",
            Lookup::Expired => "expired",
            Lookup::NotFound => "not_found",
            Lookup::WrongClient => "wrong_client",
        }
    }
}
