//! The store contract every backend implements.

use crate::consumption::Consumption;
use crate::error::StoreError;
use crate::lookup::Lookup;
use crate::model::PushedAuthorizationRequest;

/// Storage for pushed authorization requests (RFC 9126), keyed by the hash of their
/// reference value.
///
/// # Contract
///
/// Every implementation in this crate ([`PostgresStore`](crate::PostgresStore),
/// [`MemoryStore`](crate::MemoryStore)) behaves identically; one contract test suite
/// runs against each. What the crate promises as a whole (concurrency, clocks, outages,
/// failover) is stated once, in the README's
/// [Guarantees](https://github.com/par-store/par-store#guarantees); here, each method's
/// contract.
///
/// - [`store`](Self::store) inserts and never overwrites: a second request with the same
///   hash fails with [`StoreError::Duplicate`] (whether or not the first has expired) and the
///   first is left untouched.
/// - [`get_for_client`](Self::get_for_client) reads the request for a client without changing
///   it and says what it found ([`Lookup`]): [`Found`](Lookup::Found) while it is live and
///   bound to that client or to none, [`WrongClient`](Lookup::WrongClient) when it is bound
///   to another client, and otherwise why there is nothing.
/// - [`get_by_hash`](Self::get_by_hash) returns the request while it is live
///   (`expires_at` in the future) and never an expired one, whether or not cleanup has run.
///   It does not consume: call it as often as login and consent need.
/// - [`consume_for_client`](Self::consume_for_client) atomically consumes the request and
///   says what it found ([`Consumption`]), but only for a request bound to that client (or to
///   none): a request bound to another client is left untouched and answered
///   [`WrongClient`](Consumption::WrongClient). Of any number of concurrent callers exactly
///   one gets
///   [`Consumed`](Consumption::Consumed); the others get
///   [`AlreadyConsumed`](Consumption::AlreadyConsumed) with the instant it was consumed. The
///   consumed request leaves a marker (its hash, expiry, client binding and `consumed_at`, no
///   parameters) until its `expires_at`, when cleanup removes it like any expired request.
///   An expired request is answered [`Expired`](Consumption::Expired) and removed.
/// - [`consume_by_hash`](Self::consume_by_hash) is the seed's consume (Duende's), without a
///   client check and seen as an `Option`: `Some` only for
///   [`Consumed`](Consumption::Consumed), `None` otherwise.
/// - [`consume_in_session`](Self::consume_in_session) is `consume_for_client`, except under a
///   store's opt-in [`ConsumePolicy::ReloadWithin`](crate::ConsumePolicy::ReloadWithin):
///   then the session that consumed a request gets it again within the window (never past
///   `expires_at`), and nobody else does.
/// - A consumed request is never returned again: `get_by_hash` does not see it, `store` of
///   its hash fails with [`StoreError::Duplicate`], and
///   [`store_or_replace`](crate::PushedAuthorizationRequestStoreExt::store_or_replace)
///   refuses to bring it back, with [`StoreError::Duplicate`] too.
/// - Input is checked before anything is stored: a bad request fails with
///   [`StoreError::InvalidInput`] naming the field, and nothing is written. A look-up with a
///   hash that could never have been stored (empty, over 128 bytes, control characters)
///   answers `Ok(None)`.
/// - [`PostgresStore`](crate::PostgresStore) runs each operation as one statement; the round
///   trips around it depend on how it is connected (one on its own pool, more on a caller's
///   `PgPool` and in pooler mode, which wraps it in a transaction: `docs/postgresql.md`).
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

    /// Consumes the request and returns it if it was live; `None` otherwise (unknown, already
    /// consumed, expired, without saying which): the contract of Duende IdentityServer's store
    /// and of par-store 0.2. Every PAR request has a client, so a server should rather call
    /// [`consume_for_client`](Self::consume_for_client), which checks it and tells a reused
    /// `request_uri` apart.
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

    /// Reads the request for the client that presents its `request_uri`, without changing
    /// anything, and says what was found: see [`Lookup`]. This is the read of the
    /// authorization endpoint: call it as often as login and consent need, and consume with
    /// [`consume_for_client`](Self::consume_for_client) when the authorization response is
    /// produced. Unlike [`get_by_hash`](Self::get_by_hash) it makes RFC 9126 section 4's
    /// client check: a request bound to another client is
    /// [`WrongClient`](Lookup::WrongClient), and is left as it was.
    ///
    /// The default implementation, for other stores, is built on
    /// [`get_by_hash`](Self::get_by_hash): [`Found`](Lookup::Found) for a live request bound
    /// to `client_id` or to no client, `WrongClient` for one bound to another client,
    /// [`NotFound`](Lookup::NotFound) otherwise; it never answers
    /// [`AlreadyConsumed`](Lookup::AlreadyConsumed) or [`Expired`](Lookup::Expired).
    ///
    /// ```
    /// # use par_store::chrono::{Duration, Utc};
    /// # use par_store::{Lookup, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), par_store::StoreError> {
    /// let store = MemoryStore::new();
    /// let request = PushedAuthorizationRequest::new("h", Utc::now() + Duration::seconds(60), "p")
    ///     .with_client_id("a");
    /// store.store(&request).await?;
    /// assert_eq!(store.get_for_client("h", "b").await?, Lookup::WrongClient);
    /// assert_eq!(store.get_for_client("h", "a").await?, Lookup::Found(request.clone()));
    /// assert_eq!(store.get_for_client("h", "a").await?, Lookup::Found(request)); // not consumed
    /// # Ok(())
    /// # }
    /// ```
    async fn get_for_client(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Lookup, StoreError> {
        Ok(match self.get_by_hash(reference_value_hash).await? {
            Some(request)
                if request
                    .client_id
                    .as_deref()
                    .is_some_and(|bound| bound != client_id) =>
            {
                Lookup::WrongClient
            }
            Some(request) => Lookup::Found(request),
            None => Lookup::NotFound,
        })
    }

    /// Consumes the request only if it is bound to `client_id` (or to no client), in one
    /// atomic step; a request bound to another client is left untouched and answered
    /// [`WrongClient`](Consumption::WrongClient). This is RFC 9126 section 4's check that the
    /// `request_uri` was pushed by the client named in the authorization request, done
    /// before anything is consumed.
    ///
    /// The stores of this crate do it in one statement, and refuse a `client_id` no request
    /// could be bound to (empty, over [`MAX_CLIENT_ID_LEN`](crate::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN) bytes,
    /// control characters) with [`StoreError::InvalidInput`], consuming nothing. The default implementation, for
    /// other stores, is only best effort: it reads the request
    /// ([`get_by_hash`](Self::get_by_hash)), answers `WrongClient` if it is bound to another
    /// client, and otherwise calls [`consume_by_hash`](Self::consume_by_hash): two steps, so a
    /// request replaced in between by one bound to another client is consumed all the same
    /// (and then answered `WrongClient`), and it never answers
    /// [`AlreadyConsumed`](Consumption::AlreadyConsumed) or [`Expired`](Consumption::Expired).
    ///
    /// ```
    /// # use par_store::chrono::{Duration, Utc};
    /// # use par_store::{Consumption, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), par_store::StoreError> {
    /// let store = MemoryStore::new();
    /// let request = PushedAuthorizationRequest::new("h", Utc::now() + Duration::seconds(60), "p")
    ///     .with_client_id("a");
    /// store.store(&request).await?;
    /// assert_eq!(store.consume_for_client("h", "b").await?, Consumption::WrongClient);
    /// assert_eq!(store.consume_for_client("h", "a").await?, Consumption::Consumed(request));
    /// # Ok(())
    /// # }
    /// ```
    async fn consume_for_client(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Consumption, StoreError> {
        let bound_elsewhere = |request: &PushedAuthorizationRequest| {
            request
                .client_id
                .as_deref()
                .is_some_and(|bound| bound != client_id)
        };
        if let Some(request) = self.get_by_hash(reference_value_hash).await? {
            if bound_elsewhere(&request) {
                return Ok(Consumption::WrongClient);
            }
        }
        Ok(match self.consume_by_hash(reference_value_hash).await? {
            Some(request) if bound_elsewhere(&request) => Consumption::WrongClient,
            Some(request) => Consumption::Consumed(request),
            None => Consumption::NotFound,
        })
    }

    /// [`consume_for_client`](Self::consume_for_client) by one browser session: under a
    /// store's [`ConsumePolicy::ReloadWithin`](crate::ConsumePolicy::ReloadWithin), the
    /// session that consumed a request may consume it again (a page reload) within the
    /// window, and never once the request has expired; see [`ConsumePolicy`](crate::ConsumePolicy)
    /// for what that costs and why it is off by default.
    ///
    /// `session_binding` is what the server passes to tie the consumption to its session,
    /// e.g. a hash of its session id (never the id itself: with a reload window it is kept
    /// beside the request until the request expires). Under the default
    /// [`ConsumePolicy::Once`](crate::ConsumePolicy::Once) it is ignored and this is exactly
    /// `consume_for_client`.
    ///
    /// Under `ReloadWithin(window)`, in one atomic step as ever:
    /// - the first consumption answers [`Consumed`](Consumption::Consumed) and records the
    ///   binding;
    /// - a consumption with the same binding while less than `window` has passed since the
    ///   first and the request is live answers `Consumed` again, with the same request;
    /// - another binding, a consumption after the window, or any
    ///   `consume_for_client` or [`consume_by_hash`](Self::consume_by_hash) answers
    ///   [`AlreadyConsumed`](Consumption::AlreadyConsumed) (or `None`); another client, as
    ///   ever, [`WrongClient`](Consumption::WrongClient) with nothing changed;
    /// - [`get_by_hash`](Self::get_by_hash) never returns the consumed request.
    ///
    /// The stores of this crate refuse a binding that is empty, over
    /// [`MAX_SESSION_BINDING_LEN`](crate::ConsumePolicy::MAX_SESSION_BINDING_LEN) bytes or holds control
    /// characters with [`StoreError::InvalidInput`]
    /// ([`InputField::SessionBinding`](crate::error::InputField::SessionBinding)), whatever their
    /// policy, consuming nothing. The default implementation, for other stores, is
    /// `consume_for_client`: the binding is ignored and a request is never consumed twice.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use par_store::chrono::Utc;
    /// # use par_store::{ConsumePolicy, Consumption, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), par_store::StoreError> {
    /// let once = MemoryStore::new(); // ConsumePolicy::Once
    /// once.store(&PushedAuthorizationRequest::new("h", Utc::now() + par_store::chrono::Duration::seconds(60), "p")).await?;
    /// assert!(matches!(once.consume_in_session("h", "client-a", "session-1").await?, Consumption::Consumed(_)));
    /// assert!(matches!(once.consume_in_session("h", "client-a", "session-1").await?, Consumption::AlreadyConsumed { .. }));
    ///
    /// let reload = MemoryStore::new().consume_policy(ConsumePolicy::ReloadWithin(Duration::from_secs(30)));
    /// reload.store(&PushedAuthorizationRequest::new("h", Utc::now() + par_store::chrono::Duration::seconds(60), "p")).await?;
    /// assert!(matches!(reload.consume_in_session("h", "client-a", "session-1").await?, Consumption::Consumed(_)));
    /// assert!(matches!(reload.consume_in_session("h", "client-a", "session-1").await?, Consumption::Consumed(_)));
    /// # Ok(())
    /// # }
    /// ```
    async fn consume_in_session(
        &self,
        reference_value_hash: &str,
        client_id: &str,
        session_binding: &str,
    ) -> Result<Consumption, StoreError> {
        let _ = session_binding;
        self.consume_for_client(reference_value_hash, client_id)
            .await
    }
}
