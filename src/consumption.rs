//! What a consumption found: the outcome of
//! [`consume_for_client`](crate::PushedAuthorizationRequestStore::consume_for_client) and
//! [`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session).

use crate::model::PushedAuthorizationRequest;
use chrono::{DateTime, Utc};

/// What became of a request a server tried to consume, decided in one atomic step.
///
/// Only [`Consumed`](Self::Consumed) hands out a request, and of any number of concurrent
/// callers exactly one gets it. The other outcomes tell the server *why* there is nothing:
/// a client should be answered the same `invalid_request_uri` for all of them (no oracle),
/// but [`AlreadyConsumed`](Self::AlreadyConsumed) is a security event for the server itself:
/// a `request_uri` presented again after it was used (a replayed or leaked authorization
/// request, a double-submitted form, an attacker racing the user). See the README's
/// "Guarantees" and `docs/security.md` ("A reused request_uri") for what to do then.
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::{Consumption, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), par_store::StoreError> {
/// let store = MemoryStore::new();
/// let request = PushedAuthorizationRequest::new("hash-1", Utc::now() + Duration::seconds(600), "p")
///     .with_client_id("client-a");
/// store.store(&request).await?;
///
/// // Another client presenting it consumes nothing.
/// assert_eq!(store.consume_for_client("hash-1", "client-b").await?, Consumption::WrongClient);
/// assert_eq!(store.consume_for_client("hash-1", "client-a").await?, Consumption::Consumed(request));
/// // A second use is told apart from an unknown request_uri.
/// assert!(matches!(
///     store.consume_for_client("hash-1", "client-a").await?,
///     Consumption::AlreadyConsumed { .. }
/// ));
/// assert_eq!(store.consume_for_client("hash-2", "client-a").await?, Consumption::NotFound);
/// # Ok(())
/// # }
/// ```
///
/// At the authorization endpoint, a whole `match`. The enum is `#[non_exhaustive]` (a later
/// release may add an outcome), so code outside this crate needs the last `_` arm; treat it
/// like the other refusals:
///
/// ```
/// use par_store::{Consumption, PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError};
///
/// /// The request to answer, or the OAuth error to send back to the client.
/// async fn authorize(
///     store: &dyn PushedAuthorizationRequestStore,
///     reference_value_hash: &str,
///     client_id: &str,
/// ) -> Result<Result<PushedAuthorizationRequest, &'static str>, StoreError> {
///     Ok(match store.consume_for_client(reference_value_hash, client_id).await? {
///         Consumption::Consumed(request) => Ok(request),
///         Consumption::AlreadyConsumed { consumed_at } => {
///             // A security event: the request_uri was used before.
///             tracing::warn!(%consumed_at, client_id, "reused request_uri");
///             Err("invalid_request_uri")
///         }
///         Consumption::Expired | Consumption::NotFound | Consumption::WrongClient => {
///             Err("invalid_request_uri")
///         }
///         // Required outside par-store: Consumption is #[non_exhaustive].
///         _ => Err("invalid_request_uri"),
///     })
/// }
/// # let _ = authorize;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consumption {
    /// The request was live and is now consumed: this caller, and no other, has it.
    Consumed(PushedAuthorizationRequest),
    /// The request was consumed before, at `consumed_at` (the store's clock: the database's,
    /// for PostgreSQL). Reported until the request's `expires_at`, when cleanup removes its
    /// marker; never reported by a store whose consumed markers are turned off.
    AlreadyConsumed {
        /// When the request was consumed.
        consumed_at: DateTime<Utc>,
    },
    /// The request exists but has expired; nothing is handed out (the expired row is removed).
    Expired,
    /// No request is stored under this hash (never pushed, or removed by cleanup or
    /// `delete_by_client_id`), or the hash could never have been stored.
    NotFound,
    /// [`consume_for_client`](crate::PushedAuthorizationRequestStore::consume_for_client)
    /// only: the request is bound to another client. It is left exactly as it was.
    WrongClient,
}

impl Consumption {
    /// The request, for [`Consumed`](Self::Consumed) only: the
    /// [`consume_by_hash`](crate::PushedAuthorizationRequestStore::consume_by_hash) view.
    ///
    /// ```
    /// use par_store::Consumption;
    ///
    /// assert_eq!(Consumption::NotFound.into_consumed(), None);
    /// ```
    pub fn into_consumed(self) -> Option<PushedAuthorizationRequest> {
        match self {
            Consumption::Consumed(request) => Some(request),
            _ => None,
        }
    }

    /// A short, stable name for the outcome (`consumed`, `already_consumed`, `expired`,
    /// `not_found`, `wrong_client`), for logs and metrics.
    ///
    /// ```
    /// assert_eq!(par_store::Consumption::WrongClient.as_str(), "wrong_client");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Consumption::Consumed(_) => "consumed",
            Consumption::AlreadyConsumed { .. } => "already_consumed",
            Consumption::Expired => "expired",
            Consumption::NotFound => "not_found",
            Consumption::WrongClient => "wrong_client",
        }
    }
}
