//! Reference values: the secret carried in a `request_uri`, and the hash the store keys on.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// [`ReferenceValue::REQUEST_URI_PREFIX`].
const REQUEST_URI_PREFIX: &str = ReferenceValue::REQUEST_URI_PREFIX;

/// Random bytes in a reference value: 256 bits, so a `request_uri` cannot be guessed.
const RANDOM_BYTES: usize = 32;

/// Length of a reference value: two uppercase hex digits per random byte.
const VALUE_LEN: usize = 2 * RANDOM_BYTES;

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Why [`ReferenceValue::from_request_uri`] refused a `request_uri`. The messages never
/// repeat the input (it may be a live bearer secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequestUri {
    /// It does not start with [`ReferenceValue::REQUEST_URI_PREFIX`] (compared exactly, case included).
    #[error("the request_uri must start with {REQUEST_URI_PREFIX}")]
    WrongPrefix,
    /// The reference value after the prefix is not 64 characters long.
    #[error("the request_uri's reference value must be {VALUE_LEN} characters long, not {len}")]
    WrongLength {
        /// Its length in bytes.
        len: usize,
    },
    /// The reference value holds characters other than `0-9` and `A-F`.
    #[error(
        "the request_uri's reference value must consist of uppercase hexadecimal digits (0-9, A-F)"
    )]
    NotUppercaseHex,
}

/// The random reference value in a `request_uri`, in Duende IdentityServer's format.
///
/// A reference value is a bearer secret: whoever holds the `request_uri` can start the
/// authorization with the pushed parameters. The server gives it to the client and keeps only
/// its [`hash`](Self::hash), which is what a [`PushedAuthorizationRequestStore`] is keyed on;
/// a leaked database therefore does not reveal usable `request_uri`s.
///
/// The format is Duende IdentityServer's, so that a server migrating from it keeps resolving
/// the requests it already issued: 32 random bytes written as 64 uppercase hexadecimal
/// characters, hashed with SHA-256 over the value's UTF-8 bytes and encoded as standard,
/// padded Base64 (44 characters).
///
/// `Debug` never shows the value. There is deliberately no `Display` and no `PartialEq`:
/// use [`as_str`](Self::as_str) or [`request_uri`](Self::request_uri) where the value is
/// really meant to be written out, and compare [`hash`](Self::hash)es through the store.
///
/// ```
/// use par_store::ReferenceValue;
///
/// # fn main() -> Result<(), par_store::error::InvalidRequestUri> {
/// // At the PAR endpoint: mint a value, store the request under its hash, return the URI.
/// let value = ReferenceValue::generate();
/// let request_uri = value.request_uri();
/// let key = value.hash();
///
/// // At the authorize endpoint: parse the URI the client sent and look the request up.
/// let received = ReferenceValue::from_request_uri(&request_uri)?;
/// assert_eq!(received.hash(), key);
/// assert_eq!(format!("{received:?}"), "ReferenceValue(<redacted>)");
/// # Ok(())
/// # }
/// ```
///
/// [`PushedAuthorizationRequestStore`]: crate::PushedAuthorizationRequestStore
#[derive(Clone)]
pub struct ReferenceValue {
    // Invariant: exactly VALUE_LEN characters, each one of HEX_DIGITS.
    value: String,
}

impl ReferenceValue {
    /// The prefix of every `request_uri` issued by a PAR endpoint (RFC 9126, section 2.2).
    ///
    /// ```
    /// use par_store::ReferenceValue;
    ///
    /// assert_eq!(ReferenceValue::REQUEST_URI_PREFIX, "urn:ietf:params:oauth:request_uri:");
    /// ```
    pub const REQUEST_URI_PREFIX: &'static str = "urn:ietf:params:oauth:request_uri:";

    /// A new reference value: 32 bytes from the operating system's random number generator.
    ///
    /// ```
    /// let value = par_store::ReferenceValue::generate();
    /// assert_eq!(value.as_str().len(), 64);
    /// assert!(value.as_str().bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    /// ```
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot provide random bytes at all, which does not happen
    /// on the platforms this crate supports (see below).
    // Why a panic rather than an error or a fallback: `getrandom` reads the kernel's CSPRNG
    // (`getrandom(2)` on Linux, falling back to `/dev/urandom`), retries interrupted calls
    // itself, and blocks until the pool is seeded; once it works in a process it keeps
    // working. It fails only on a platform without any OS random source or in a sandbox that
    // forbids both syscall and device, where no secret could be produced at all. Any value
    // returned then (zeros, a time-seeded PRNG) would make request_uris guessable, so the
    // call fails closed instead. Inside a server, a panic in a request handler ends that
    // request's task only; the process keeps serving what does not need a new secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; RANDOM_BYTES];
        if let Err(err) = getrandom::fill(&mut bytes) {
            panic!("the operating system's random number generator failed ({err}); refusing to mint a guessable request_uri");
        }
        let mut value = String::with_capacity(VALUE_LEN);
        for byte in bytes {
            value.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            value.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        ReferenceValue { value }
    }

    /// Parses a `request_uri` of the form `urn:ietf:params:oauth:request_uri:<value>`.
    ///
    /// Parsing is strict: the prefix must be exactly [`ReferenceValue::REQUEST_URI_PREFIX`] (same case), and
    /// the value exactly 64 characters from `0-9A-F`; no whitespace, lowercase hex or other
    /// characters are accepted. Anything else fails with an [`InvalidRequestUri`], which
    /// never repeats the input. The `request_uri` comes from a browser: this is client input,
    /// answered like an unknown `request_uri` (see [`StoreError`](crate::StoreError)'s table).
    ///
    /// ```
    /// use par_store::{error::InvalidRequestUri, ReferenceValue};
    ///
    /// let uri = format!("urn:ietf:params:oauth:request_uri:{}", "0123456789ABCDEF".repeat(4));
    /// let value = ReferenceValue::from_request_uri(&uri).unwrap();
    /// assert_eq!(value.hash(), "DqN8JD9gl0sNVMay12zs4/THQkkszkjq+B81eTHW1p4=");
    ///
    /// let lowercase = uri.replace("ABCDEF", "abcdef");
    /// assert!(matches!(
    ///     ReferenceValue::from_request_uri(&lowercase),
    ///     Err(InvalidRequestUri::NotUppercaseHex)
    /// ));
    /// ```
    pub fn from_request_uri(request_uri: &str) -> Result<Self, InvalidRequestUri> {
        let Some(value) = request_uri.strip_prefix(REQUEST_URI_PREFIX) else {
            return Err(InvalidRequestUri::WrongPrefix);
        };
        if value.len() != VALUE_LEN {
            return Err(InvalidRequestUri::WrongLength { len: value.len() });
        }
        if !value.bytes().all(|byte| HEX_DIGITS.contains(&byte)) {
            return Err(InvalidRequestUri::NotUppercaseHex);
        }
        Ok(ReferenceValue {
            value: value.to_owned(),
        })
    }

    /// The `request_uri` to give the client: [`ReferenceValue::REQUEST_URI_PREFIX`] followed by the value.
    ///
    /// ```
    /// let value = par_store::ReferenceValue::generate();
    /// let uri = value.request_uri();
    /// assert_eq!(uri, format!("urn:ietf:params:oauth:request_uri:{}", value.as_str()));
    /// ```
    pub fn request_uri(&self) -> String {
        format!("{REQUEST_URI_PREFIX}{}", self.value)
    }

    /// The key to store the request under: SHA-256 of the value's UTF-8 bytes, as standard
    /// padded Base64 (44 characters), exactly as Duende IdentityServer computes it.
    ///
    /// ```
    /// # fn main() -> Result<(), par_store::error::InvalidRequestUri> {
    /// let uri = format!("urn:ietf:params:oauth:request_uri:{}", "0".repeat(64));
    /// let value = par_store::ReferenceValue::from_request_uri(&uri)?;
    /// assert_eq!(value.hash(), "YOBb0bGVry+UES+nGXpciCiQWIQM58bflpN1a8YlD1U=");
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash(&self) -> String {
        hash_secret(&self.value)
    }

    /// The value itself (64 uppercase hex characters), without the `request_uri` prefix.
    ///
    /// It is a secret: never log it and never store it; store its [`hash`](Self::hash).
    ///
    /// ```
    /// let value = par_store::ReferenceValue::generate();
    /// assert!(value.request_uri().ends_with(value.as_str()));
    /// ```
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// SHA-256 of `secret`'s UTF-8 bytes as standard padded Base64 (44 characters): the key a
/// request is stored under, for a reference value or for any other secret handle.
pub(crate) fn hash_secret(secret: &str) -> String {
    STANDARD.encode(Sha256::digest(secret.as_bytes()))
}

impl fmt::Debug for ReferenceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReferenceValue(<redacted>)")
    }
}
