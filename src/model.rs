//! The stored record.

use chrono::{DateTime, SubsecRound, Utc};
use std::fmt;

/// A pushed authorization request as the store keeps it.
///
/// The field names follow Duende IdentityServer's `PushedAuthorizationRequest`
/// (`ReferenceValueHash`, `ExpiresAtUtc`, `Parameters`), plus an optional binding to the
/// client that pushed the request ([`with_client_id`](Self::with_client_id)), which lets a
/// server remove every outstanding request of a client at once (`delete_by_client_id` on
/// [`PostgresStore`](crate::PostgresStore) and [`MemoryStore`](crate::MemoryStore)).
///
/// `Debug` never prints `parameters` (only its length) nor the full hash (only a short
/// prefix), so a request can be logged with `{:?}` without leaking it.
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::PushedAuthorizationRequest;
///
/// let request = PushedAuthorizationRequest::new(
///     "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
///     Utc::now() + Duration::seconds(600),
///     "client_id=s6BhdRkqt3&response_type=code",
/// );
/// let shown = format!("{request:?}");
/// assert!(!shown.contains("s6BhdRkqt3"));
/// assert!(shown.contains("parameters_len: 39"));
/// ```
///
/// The fields are public for reading; the struct is `#[non_exhaustive]`, so that a field can
/// be added without breaking callers: build a request with [`new`](Self::new) and
/// [`with_client_id`](Self::with_client_id), which set every field.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushedAuthorizationRequest {
    /// Hash of the reference value carried in the `request_uri` (the store's key).
    ///
    /// 1 to 128 bytes, no control characters. The reference value itself is a secret
    /// and must never be stored; see `ReferenceValue::hash` for the recommended hash.
    pub reference_value_hash: String,
    /// The instant after which the request is never returned again.
    ///
    /// Stores keep it at microsecond precision (PostgreSQL's), so what is read back
    /// equals what was stored after truncation to whole microseconds.
    pub expires_at: DateTime<Utc>,
    /// The server's protected request parameters; opaque text to the store.
    ///
    /// Must not contain NUL characters; at most the store's `max_parameters_len` bytes.
    pub parameters: String,
    /// The client the request is bound to (RFC 9126 section 2.2), if any; `None` unless set
    /// with [`with_client_id`](Self::with_client_id).
    ///
    /// 1 to [`MAX_CLIENT_ID_LEN`](Self::MAX_CLIENT_ID_LEN) bytes, no control characters. The
    /// stores keep it beside the request (not inside the parameters, so it stays readable
    /// when [`ProtectedStore`](crate::ProtectedStore) encrypts them) and return it from
    /// every read; it is what `delete_by_client_id` matches.
    pub client_id: Option<String>,
}

impl PushedAuthorizationRequest {
    /// Longest accepted [`reference_value_hash`](Self::reference_value_hash), in bytes. The
    /// migration's CHECK constraint enforces the same bound in the database.
    ///
    /// ```
    /// assert_eq!(par_store::PushedAuthorizationRequest::MAX_REFERENCE_VALUE_HASH_LEN, 128);
    /// ```
    pub const MAX_REFERENCE_VALUE_HASH_LEN: usize = 128;

    /// Longest accepted [`client_id`](Self::client_id), in bytes: room for the URL-shaped
    /// client ids of client ID metadata documents. The migration's CHECK constraint enforces
    /// the same bound.
    ///
    /// ```
    /// assert_eq!(par_store::PushedAuthorizationRequest::MAX_CLIENT_ID_LEN, 1024);
    /// ```
    pub const MAX_CLIENT_ID_LEN: usize = 1024;

    /// Creates a request from its three parts, bound to no client.
    ///
    /// `expires_at` is truncated to whole microseconds, the precision both stores keep, so
    /// that a request read back compares equal to the one created here.
    pub fn new(
        reference_value_hash: impl Into<String>,
        expires_at: DateTime<Utc>,
        parameters: impl Into<String>,
    ) -> Self {
        PushedAuthorizationRequest {
            reference_value_hash: reference_value_hash.into(),
            expires_at: expires_at.trunc_subsecs(6),
            parameters: parameters.into(),
            client_id: None,
        }
    }

    /// Binds the request to the client that pushed it.
    ///
    /// ```
    /// use par_store::chrono::{Duration, Utc};
    /// use par_store::PushedAuthorizationRequest;
    ///
    /// let request = PushedAuthorizationRequest::new("hash", Utc::now() + Duration::seconds(60), "p")
    ///     .with_client_id("s6BhdRkqt3");
    /// assert_eq!(request.client_id.as_deref(), Some("s6BhdRkqt3"));
    /// ```
    #[must_use = "this returns the changed request and leaves the original as it was"]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }
}

impl fmt::Debug for PushedAuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushedAuthorizationRequest")
            .field(
                "reference_value_hash",
                &HashPrefix(&self.reference_value_hash),
            )
            .field("expires_at", &self.expires_at)
            .field("parameters_len", &self.parameters.len())
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// How many characters of a reference value hash may appear in logs and `Debug` output:
/// enough to correlate log lines, far too few to be the key.
const HASH_PREFIX_CHARS: usize = 6;

/// Shows only the first few characters of a reference value hash, followed by `…`.
///
/// Used for `Debug` output and for `tracing` fields.
#[derive(Clone, Copy)]
pub(crate) struct HashPrefix<'a>(pub(crate) &'a str);

impl fmt::Debug for HashPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HashPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never more than half of a (short) hash either.
        let shown = HASH_PREFIX_CHARS.min(self.0.chars().count() / 2);
        let prefix: String = self
            .0
            .chars()
            .take(shown)
            .filter(|c| !c.is_control())
            .collect();
        write!(f, "{prefix}…")
    }
}
