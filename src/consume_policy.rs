//! Whether a consumed request may be consumed again by the same browser session (a reload).

use std::time::Duration;

/// What [`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session)
/// allows after a request's first consumption.
///
/// RFC 9126 section 4 lets a server treat a `request_uri` as one-time use but allows a
/// reload; some servers consume it when the authorization page loads and must survive the
/// user pressing "refresh" (Keycloak issue 36830). [`ReloadWithin`](Self::ReloadWithin) is
/// for them: the session that consumed the request may consume it again, and only that
/// session, only for a short while.
///
/// # Why it is off by default
///
/// With [`Once`](Self::Once) a consumed request is gone: its parameters are cleared in the
/// same statement that consumes it, and every later attempt is
/// [`AlreadyConsumed`](crate::Consumption::AlreadyConsumed). With
/// [`ReloadWithin`](Self::ReloadWithin):
///
/// - a consumed request stays usable, for the whole window, by whoever presents its
///   `request_uri` together with the session binding that consumed it: a stolen session
///   cookie (or whatever the binding is derived from) plus the `request_uri` replays it;
/// - its parameters stay in the table (or in memory) after the first consumption: they are
///   cleared by the first consume of any kind that comes after the window closes, and in any
///   case removed with the row at `expires_at` by cleanup
///   ([`CleanupJob`](crate::CleanupJob) / `delete_expired`). Nothing clears them at the
///   instant the window closes: a request consumed in a session and never presented again
///   keeps its parameters until cleanup removes it;
/// - FAPI 2.0 (Security Profile section 5.3.2.2, note 3) asks for one-time use to be
///   enforced at the point of authorization: a server that needs this policy consumes too
///   early and should move its consumption to when the authorization response is produced.
///
/// A reload is never answered past the request's `expires_at`; another session (another
/// binding), and every `consume_for_client` and `consume_by_hash`, gets
/// [`AlreadyConsumed`](crate::Consumption::AlreadyConsumed) as before;
/// [`get_by_hash`](crate::PushedAuthorizationRequestStore::get_by_hash) never returns a
/// consumed request. With consumed markers turned off (`consumed_markers(false)`, 0.2's
/// delete on consume) there is nothing to reload from: the policy has no effect and
/// `consume_in_session` consumes exactly as `consume_for_client` does.
///
/// ```
/// use std::time::Duration;
/// use par_store::chrono::Utc;
/// use par_store::{ConsumePolicy, Consumption, MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), par_store::StoreError> {
/// assert_eq!(ConsumePolicy::default(), ConsumePolicy::Once);
/// let store = MemoryStore::new().consume_policy(ConsumePolicy::ReloadWithin(Duration::from_secs(30)));
/// let request = PushedAuthorizationRequest::new("h", Utc::now() + par_store::chrono::Duration::seconds(60), "p")
///     .with_client_id("client-a");
/// store.store(&request).await?;
///
/// // The binding is the server's: e.g. a hash of its session id, never the id itself.
/// let session = "sha256-of-session-1";
/// assert_eq!(store.consume_in_session("h", "client-a", session).await?, Consumption::Consumed(request.clone()));
/// // The same session reloads the page: the same request again.
/// assert_eq!(store.consume_in_session("h", "client-a", session).await?, Consumption::Consumed(request));
/// // Any other session, or any other way of consuming, finds it consumed.
/// assert!(matches!(
///     store.consume_in_session("h", "client-a", "sha256-of-session-2").await?,
///     Consumption::AlreadyConsumed { .. }
/// ));
/// assert!(matches!(store.consume_for_client("h", "client-a").await?, Consumption::AlreadyConsumed { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConsumePolicy {
    /// Single use (the default, par-store 0.3's behaviour): `consume_in_session` is exactly
    /// `consume_for_client`, and the session binding is ignored.
    #[default]
    Once,
    /// The session that consumed a request may consume it again while less than this
    /// duration has passed since its first consumption (by the store's clock: the
    /// database's, for PostgreSQL), and never once the request has expired. A window under
    /// one microsecond (the databases' resolution) is no window: it acts as `Once`, and no
    /// parameters are kept.
    ReloadWithin(Duration),
}

/// The shortest window that is a window at all: PostgreSQL's clock counts microseconds.
const SMALLEST_WINDOW: Duration = Duration::from_micros(1);

/// Longest window the stores pass on: far beyond any request's lifetime, and small enough
/// that `consumed_at` plus the window stays a valid PostgreSQL timestamp.
const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

impl ConsumePolicy {
    /// Longest accepted session binding
    /// ([`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session)), in
    /// bytes: room for a hash of the server's session id in any common encoding (SHA-512 as
    /// hex is 128). Migration 0006's CHECK constraint enforces the same bound.
    ///
    /// ```
    /// assert_eq!(par_store::ConsumePolicy::MAX_SESSION_BINDING_LEN, 128);
    /// ```
    pub const MAX_SESSION_BINDING_LEN: usize = 128;

    /// The reload window, if any (a zero window allows no reload).
    pub(crate) fn reload_window(self) -> Option<Duration> {
        match self {
            ConsumePolicy::Once => None,
            // The databases count time in microseconds: a shorter window could never answer a
            // reload, yet would keep the parameters.
            ConsumePolicy::ReloadWithin(window) if window < SMALLEST_WINDOW => None,
            ConsumePolicy::ReloadWithin(window) => Some(window.min(MAX_WINDOW)),
        }
    }
}
