//! The errors: [`StoreError`], the one error type every store operation returns (also at the
//! crate root), the details it carries ([`InputField`], [`InvalidDatabaseUrl`],
//! [`ProtectionErrorKind`], [`BoxError`]), and [`InvalidRequestUri`], the error of parsing a
//! `request_uri`. The key ring's own error is
//! [`protect::KeyRingError`](crate::protect::KeyRingError).
//!
//! ```
//! use par_store::error::{InputField, StoreError};
//! use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let past = par_store::chrono::Utc::now() - par_store::chrono::Duration::seconds(1);
//! let err = MemoryStore::new().store(&PushedAuthorizationRequest::new("h", past, "p")).await.unwrap_err();
//! assert!(matches!(err, StoreError::InvalidInput { field: InputField::ExpiresAt, .. }));
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;

pub use crate::reference::InvalidRequestUri;

/// A boxed, opaque error from the layer below (the database driver, the migrator).
///
/// Kept as a trait object so that matching on [`StoreError`] never requires naming a
/// `sqlx` type; the driver's error is still there for logs through
/// [`std::error::Error::source`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in a [`PushedAuthorizationRequestStore`](crate::PushedAuthorizationRequestStore).
///
/// # Errors and HTTP responses
///
/// The one table of what a server answers for each error (RFC 9126 sections 2.3 and 4,
/// RFC 6749 section 5.2). `demo/examples/par_server.rs` implements it and its tests check it.
///
/// | error | cause | PAR endpoint (`POST /par`) | authorization endpoint (`request_uri`) |
/// |---|---|---|---|
/// | [`InvalidRequestUri`] (from [`ReferenceValue::from_request_uri`](crate::ReferenceValue::from_request_uri)) | a malformed `request_uri` from the browser: client input | - | `400 invalid_request_uri`, the same answer as an unknown one |
/// | `Ok(None)` from `get_by_hash` / `consume_by_hash` | unknown, expired or already used | - | `400 invalid_request_uri`; so is a `request_uri` pushed by another client |
/// | [`InvalidInput`](Self::InvalidInput) with [`InputField::Parameters`] | the client's parameters are too large (or hold NUL) | `413` (or `400`) `invalid_request` | - |
/// | [`InvalidInput`](Self::InvalidInput), other fields | the server built a bad hash or expiry: a bug in the server | `500 server_error`, log it | `500 server_error` |
/// | [`Duplicate`](Self::Duplicate) | a request with this hash exists | generate a new reference value and store again; `500 server_error` if it repeats | - |
/// | [`Unavailable`](Self::Unavailable), [`Timeout`](Self::Timeout) ([`is_transient`](Self::is_transient)) | no connection, connection lost, too slow | `503 temporarily_unavailable` with `Retry-After` | the same |
/// | [`Protection`](Self::Protection) with `UnknownKey`, `Tampered`, `MalformedEnvelope` | the stored request cannot be opened (see [`ProtectionErrorKind`]) | - | `400 invalid_request_uri` (the request is unusable), and alert: keys or data are wrong |
/// | [`Protection`](Self::Protection) with `RandomUnavailable` | the OS random source failed | `500 server_error` | - |
/// | [`Database`](Self::Database) | any other database error (permissions, schema missing, ...) | `500 server_error`, log it | `500 server_error` |
/// | [`Migration`](Self::Migration), [`MigrationNeedsDirectConnection`](Self::MigrationNeedsDirectConnection), [`IncompatibleSchema`](Self::IncompatibleSchema), [`InvalidDatabaseUrl`](Self::InvalidDatabaseUrl) | at start-up: `migrate()` failed (e.g. the role may not create tables, or another instance's run held the lock past the migration lock timeout), was called in pooler mode without a direct address, found a schema only a newer release can serve, or a bad URL | not a request error: fix the deployment, do not serve | - |
///
/// ```
/// use par_store::error::{InputField, ProtectionErrorKind};
/// use par_store::StoreError;
///
/// /// Status and OAuth error code at the PAR endpoint, for a failed `store`.
/// fn par_endpoint_answer(err: &StoreError) -> (u16, &'static str) {
///     match err {
///         StoreError::InvalidInput { field: InputField::Parameters, .. } => (413, "invalid_request"),
///         err if err.is_transient() => (503, "temporarily_unavailable"),
///         _ => (500, "server_error"), // Duplicate: once a new reference value failed too
///     }
/// }
///
/// /// Status and OAuth error code at the authorization endpoint, for a failed
/// /// `get_by_hash` or `consume_by_hash`.
/// fn authorization_endpoint_answer(err: &StoreError) -> (u16, &'static str) {
///     match err {
///         StoreError::Protection { .. } => (400, "invalid_request_uri"),
///         err if err.is_transient() => (503, "temporarily_unavailable"),
///         _ => (500, "server_error"),
///     }
/// }
///
/// let too_large = StoreError::InvalidInput { field: InputField::Parameters, reason: "too large".into() };
/// assert_eq!(par_endpoint_answer(&too_large), (413, "invalid_request"));
/// assert_eq!(par_endpoint_answer(&StoreError::Duplicate), (500, "server_error"));
/// let tampered = StoreError::Protection { kind: ProtectionErrorKind::Tampered, consumed: false };
/// assert_eq!(authorization_endpoint_answer(&tampered), (400, "invalid_request_uri"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A request with this reference value hash already exists; the stored one was left untouched.
    #[error("a pushed authorization request with this reference value hash already exists")]
    Duplicate,

    /// The input was refused before it reached the database, and nothing was stored.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field of the [`PushedAuthorizationRequest`](crate::PushedAuthorizationRequest).
        field: InputField,
        /// Why it was refused (never contains the value itself).
        reason: String,
    },

    /// The database could not be reached, the connection was lost during the operation, or
    /// the server is read-only (SQLSTATE 25006: a standby, or a primary demoted by a failover).
    ///
    /// For `consume_by_hash` this is ambiguous: the request may or may not have been
    /// consumed (see [docs/failure-behaviour.md](https://github.com/par-store/par-store/blob/main/docs/failure-behaviour.md#the-one-inherent-window)).
    #[error("the database is unavailable: {source}")]
    Unavailable {
        /// The underlying driver error.
        #[source]
        source: BoxError,
    },

    /// The operation did not finish in time (statement timeout or the store's operation timeout).
    #[error("the database operation timed out: {source}")]
    Timeout {
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// Applying the store's migrations failed.
    #[error("applying the par-store migrations failed: {source}")]
    Migration {
        /// The underlying migrator error.
        #[source]
        source: BoxError,
    },

    /// [`PostgresStore::migrate`](crate::PostgresStore::migrate) was called on a store in
    /// [pooler mode](crate::PostgresStoreOptions::pooler_mode), whose address is a
    /// transaction-mode pooler's: the migrations need a session of their own (an advisory
    /// lock held across statements, named statements), which such a pooler does not give.
    /// Nothing was sent. Use [`PostgresStore::migrate_with`](crate::PostgresStore::migrate_with)
    /// with PostgreSQL's own address.
    #[error(
        "migrate() does not run through a transaction-mode pooler (this store is in pooler \
         mode): call migrate_with() with PostgreSQL's own address"
    )]
    MigrationNeedsDirectConnection,

    /// The database URL given to [`PostgresStoreOptions::connect`](crate::PostgresStoreOptions::connect)
    /// (or the connect options) cannot be used: malformed, of another scheme than
    /// `postgres://` / `postgresql://` (`mysql://...` is refused, not sent to port 5432), or
    /// asking for TLS (`sslmode=require`, `verify-ca`, `verify-full`) in a build without TLS
    /// (enable par-store's `rustls` feature). A configuration error, found before any
    /// connection is made, and not transient: retrying cannot help.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = par_store::PostgresStore::connect("mysql://app@127.0.0.1/app").await.unwrap_err();
    /// assert!(matches!(err, par_store::StoreError::InvalidDatabaseUrl(_)));
    /// assert!(!err.is_transient());
    /// assert!(err.to_string().contains("`mysql`"));
    /// # }
    /// ```
    #[error(transparent)]
    InvalidDatabaseUrl(#[from] InvalidDatabaseUrl),

    /// Any other error reported by the database.
    #[error("database error: {source}")]
    Database {
        /// The underlying driver error.
        #[source]
        source: BoxError,
    },

    /// At start-up: [`migrate`](crate::PostgresStore::migrate) found a schema that a later
    /// par-store release changed in a way this release cannot serve (that release recorded
    /// so in the schema's `_par_store_compatibility` table; docs/upgrading.md). Nothing was
    /// applied. Deploy `oldest_release` or later, or roll the schema back to this release's
    /// migrations first.
    #[error(
        "the database schema (par-store migration {schema_version}) can be served only by \
         par-store {oldest_release} or later, not by this par-store {this_release}: deploy a \
         newer release, or roll the schema back first (docs/upgrading.md)"
    )]
    IncompatibleSchema {
        /// The newest migration applied to the database.
        schema_version: i64,
        /// The oldest par-store release that can serve that schema.
        oldest_release: String,
        /// This release (`CARGO_PKG_VERSION`).
        this_release: &'static str,
    },

    /// A [`PostgresStore`](crate::PostgresStore) operation was polled outside a tokio runtime.
    /// Nothing was sent to the database. Run it inside a runtime with timers enabled
    /// (`#[tokio::main]`, `Runtime::block_on`).
    #[error("PostgresStore operations need a tokio runtime; none is running on this thread")]
    NoRuntime,

    /// A [`ProtectedStore`](crate::ProtectedStore) could not protect or unprotect the
    /// parameters. Never carries key material, parameters or the envelope.
    ///
    /// No partial or unauthenticated value is ever returned in place of this error.
    #[error("protected parameters: {kind}{}", consumed_note(*consumed))]
    Protection {
        /// What went wrong.
        kind: ProtectionErrorKind,
        /// True when the request was consumed all the same: a consume (`consume_by_hash`,
        /// `consume_for_client`, `consume_in_session`) consumes the row before it can decrypt it, so a
        /// request that fails to open there is gone (its `request_uri` is spent). Always
        /// false for `store` and `get_by_hash`.
        consumed: bool,
    },
}

/// The field of a [`PushedAuthorizationRequest`](crate::PushedAuthorizationRequest) that a
/// [`StoreError::InvalidInput`] refers to.
///
/// ```
/// use par_store::error::InputField;
/// use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new().max_parameters_len(4);
/// let request = PushedAuthorizationRequest::new("h", par_store::chrono::Utc::now() + par_store::chrono::Duration::seconds(60), "too long");
/// let err = store.store(&request).await.unwrap_err();
/// assert!(matches!(err, StoreError::InvalidInput { field: InputField::Parameters, .. }));
/// assert_eq!(InputField::Parameters.to_string(), "parameters");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputField {
    /// `reference_value_hash`: empty, too long, or with control characters.
    ReferenceValueHash,
    /// `expires_at`: not in the future when stored (by the application's clock or the
    /// database's), or further ahead than the store's `max_request_lifetime`.
    ExpiresAt,
    /// `parameters`: larger than the store accepts, or with NUL characters.
    Parameters,
    /// `client_id`: empty, too long, or with control characters.
    ClientId,
    /// The session binding given to
    /// [`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session):
    /// empty, over [`MAX_SESSION_BINDING_LEN`](crate::ConsumePolicy::MAX_SESSION_BINDING_LEN) bytes, or
    /// with control characters. Not a field of the request: it is recorded only when a
    /// [`ConsumePolicy::ReloadWithin`](crate::ConsumePolicy::ReloadWithin) store consumes.
    SessionBinding,
}

impl InputField {
    /// The field's name in [`PushedAuthorizationRequest`](crate::PushedAuthorizationRequest).
    pub fn as_str(self) -> &'static str {
        match self {
            InputField::ReferenceValueHash => "reference_value_hash",
            InputField::ExpiresAt => "expires_at",
            InputField::Parameters => "parameters",
            InputField::ClientId => "client_id",
            InputField::SessionBinding => "session_binding",
        }
    }
}

impl fmt::Display for InputField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL (or connect options) the store cannot use, from
/// [`PostgresStoreOptions::connect`](crate::PostgresStoreOptions::connect) and its
/// siblings: malformed, not a `postgres://` or `postgresql://` URL (the scheme is named), or
/// asking for TLS in a build without it (the fix, par-store's `rustls` feature, is named).
/// The message never repeats the URL, which may hold a password.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let err = par_store::PostgresStore::connect("postgres://app:secret@db:notaport/app").await.unwrap_err();
/// let par_store::StoreError::InvalidDatabaseUrl(invalid) = err else { panic!() };
/// assert!(!invalid.reason().contains("secret"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the database URL cannot be used: {reason}")]
pub struct InvalidDatabaseUrl {
    reason: String,
}

impl InvalidDatabaseUrl {
    pub(crate) fn new(reason: String) -> Self {
        InvalidDatabaseUrl { reason }
    }

    /// Parses `url` as PostgreSQL connect options.
    pub(crate) fn parse(url: &str) -> Result<sqlx::postgres::PgConnectOptions, InvalidDatabaseUrl> {
        url.parse().map_err(|err: sqlx::Error| InvalidDatabaseUrl {
            reason: format!(
                "not a PostgreSQL URL ({})",
                match err {
                    sqlx::Error::Configuration(cause) => cause.to_string(),
                    other => other.to_string(),
                }
            ),
        })
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

fn consumed_note(consumed: bool) -> &'static str {
    if consumed {
        "; the request was consumed nonetheless"
    } else {
        ""
    }
}

/// Why a [`ProtectedStore`](crate::ProtectedStore) failed, in [`StoreError::Protection`].
///
/// | kind | cause | what to do |
/// |---|---|---|
/// | [`UnknownKey`](Self::UnknownKey) | the envelope names a key id that is not in the [`KeyRing`](crate::protect::KeyRing) | a key was dropped while requests sealed under it were still live, or instances run with different rings: restore the key as a previous key |
/// | [`Tampered`](Self::Tampered) | authentication failed: the envelope was altered, copied onto another request's row, or sealed by a different key that has the same id | treat as an attack or a key mix-up; the request is unusable |
/// | [`MalformedEnvelope`](Self::MalformedEnvelope) | the stored text is not a well-formed envelope of a supported version (e.g. plaintext written before protection was enabled) | unusable; such requests disappear when they expire |
/// | [`RandomUnavailable`](Self::RandomUnavailable) | the operating system's random source failed (nonce or key generation) | nothing was stored; retry, and check the host |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectionErrorKind {
    /// The envelope was sealed under a key id the key ring does not hold.
    UnknownKey {
        /// The key id named by the envelope (key ids are not secret).
        key_id: String,
    },
    /// The envelope failed authentication: altered, copied from another request (the
    /// reference value hash is authenticated with it), or sealed by another key with the same id.
    Tampered,
    /// The stored text is not a well-formed envelope of a version this crate reads.
    MalformedEnvelope,
    /// The operating system's random source failed.
    RandomUnavailable,
}

impl fmt::Display for ProtectionErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtectionErrorKind::UnknownKey { key_id } => write!(
                f,
                "the envelope was sealed under key id \"{key_id}\", which is not in the key ring"
            ),
            ProtectionErrorKind::Tampered => f.write_str(
                "the envelope failed authentication (altered, copied from another request, or sealed by another key with the same id)",
            ),
            ProtectionErrorKind::MalformedEnvelope => {
                f.write_str("the stored value is not a well-formed protected envelope")
            }
            ProtectionErrorKind::RandomUnavailable => {
                f.write_str("the operating system's random source failed")
            }
        }
    }
}

/// A failure to open a connection, with where it was going.
#[derive(Debug)]
struct ConnectError {
    /// `host:port`, or several of them.
    address: String,
    source: BoxError,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not connect to PostgreSQL at {}: {}",
            self.address, self.source
        )
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

impl StoreError {
    /// The same error, saying which servers (`host:port`, or a list of them) a failed
    /// connection attempt was for.
    pub(crate) fn connecting_to(self, address: String) -> Self {
        let wrap = |source| -> BoxError { Box::new(ConnectError { address, source }) };
        match self {
            StoreError::Unavailable { source } => StoreError::Unavailable {
                source: wrap(source),
            },
            StoreError::Timeout { source } => StoreError::Timeout {
                source: wrap(source),
            },
            StoreError::Database { source } => StoreError::Database {
                source: wrap(source),
            },
            other => other,
        }
    }

    pub(crate) fn invalid(field: InputField, reason: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// While migrating, a database error (other than a transient one) is a [`Migration`](Self::Migration) error.
    pub(crate) fn in_migration(self) -> Self {
        match self {
            StoreError::Database { source } => StoreError::Migration { source },
            other => other,
        }
    }

    /// True for errors worth retrying later: [`Unavailable`](Self::Unavailable) and
    /// [`Timeout`](Self::Timeout).
    ///
    /// ```
    /// assert!(!par_store::StoreError::Duplicate.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }
}

/// SQLSTATE classes and codes that mean "the server is not there for us right now".
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now
        || code == "57P04" // database_dropped
        || code == "57P05" // idle_session_timeout
        || code == "53300" // too_many_connections
        // read_only_sql_transaction: a standby or a demoted primary after a failover; the
        // primary is elsewhere for now (the connection is discarded, see src/execution.rs)
        || code == READ_ONLY
}

/// SQLSTATE `read_only_sql_transaction`.
pub(crate) const READ_ONLY: &str = "25006";

/// True for an error PostgreSQL reported at severity FATAL: it ended (or refused) the session.
fn is_fatal(err: &dyn sqlx::error::DatabaseError) -> bool {
    err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), sqlx::postgres::PgSeverity::Fatal))
}

/// How a driver error is reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DriverErrorKind {
    Unavailable,
    Timeout,
    Database,
    /// A configuration the store refused ([`InvalidDatabaseUrl`], carried through the pool).
    InvalidDatabaseUrl,
}

impl DriverErrorKind {
    /// How `err` is reported (see `From<sqlx::Error> for StoreError`).
    pub(crate) fn of(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DriverErrorKind::Unavailable,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => DriverErrorKind::Timeout,
                Some(code) if is_unavailable_sqlstate(code) => DriverErrorKind::Unavailable,
                // FATAL "database ... is not currently accepting connections": connections
                // to it are switched off (`ALTER DATABASE ... ALLOW_CONNECTIONS false`, as
                // during maintenance). The server is there, but not for us right now, like
                // 57P03 while it starts. Only the FATAL one: 55000 from a statement is a
                // request the server will keep refusing.
                Some("55000") if is_fatal(db.as_ref()) => DriverErrorKind::Unavailable,
                _ => DriverErrorKind::Database,
            },
            sqlx::Error::Configuration(cause) if cause.is::<InvalidDatabaseUrl>() => {
                DriverErrorKind::InvalidDatabaseUrl
            }
            _ => DriverErrorKind::Database,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match DriverErrorKind::of(&err) {
            DriverErrorKind::Unavailable => StoreError::Unavailable {
                source: Box::new(err),
            },
            DriverErrorKind::Timeout => StoreError::Timeout {
                source: Box::new(err),
            },
            DriverErrorKind::Database => StoreError::Database {
                source: Box::new(err),
            },
            DriverErrorKind::InvalidDatabaseUrl => match err {
                sqlx::Error::Configuration(cause) => match cause.downcast::<InvalidDatabaseUrl>() {
                    Ok(invalid) => StoreError::InvalidDatabaseUrl(*invalid),
                    Err(cause) => StoreError::Database { source: cause },
                },
                other => StoreError::Database {
                    source: Box::new(other),
                },
            },
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            // A migration that failed because the connection was lost is worth retrying
            // (`in_migration` keeps transient errors as they are).
            sqlx::migrate::MigrateError::Execute(inner)
            | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
                StoreError::from(inner).in_migration()
            }
            other => StoreError::Migration {
                source: Box::new(other),
            },
        }
    }
}
