//! Protected parameters: authenticated encryption at rest, as a decorator over any store.
//!
//! [`ProtectedStore`] seals `parameters` with XChaCha20-Poly1305 before they reach the inner
//! store and opens them on the way out. The request's `reference_value_hash` is the AEAD's
//! associated data, so an envelope only opens on the row it was written for.
//!
//! # Envelope format, version 1
//!
//! ```text
//! v1.<key id>.<nonce>.<ciphertext>
//! ```
//!
//! - `v1`: the format version.
//! - `<key id>`: the id of the [`ProtectionKey`] that sealed it, 1-32 characters of
//!   `A-Z a-z 0-9 _ -` (so it never contains a `.`).
//! - `<nonce>`: the 24-byte (192-bit) random nonce, base64url without padding (32 characters).
//! - `<ciphertext>`: XChaCha20-Poly1305 of the UTF-8 parameters, with the 16-byte tag
//!   appended, base64url without padding. Associated data: the UTF-8 bytes of the
//!   `reference_value_hash`.
//!
//! Its length is [`envelope_len`]`(parameters_len, key_id_len)`
//! `= 37 + key_id_len + ceil(4 * (parameters_len + 16) / 3)` bytes.

use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::consumption::Consumption;
use crate::error::{InputField, ProtectionErrorKind, StoreError};
use crate::memory::MemoryStore;
use crate::model::{HashPrefix, PushedAuthorizationRequest};
use crate::postgres::PostgresStore;
use crate::store::PushedAuthorizationRequestStore;
use crate::telemetry::error_kind;
use crate::validate::check_request;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroize;

/// The envelope format version this crate writes (and the only one it reads).
pub const ENVELOPE_VERSION: &str = "v1";

/// Longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Nonce length in bytes (XChaCha20-Poly1305: 192 bits).
const NONCE_LEN: usize = 24;

/// Authentication tag length in bytes (Poly1305).
const TAG_LEN: usize = 16;

/// Characters of base64 (no padding) needed for `bytes` bytes: `ceil(4 * bytes / 3)`.
const fn base64_len(bytes: usize) -> usize {
    bytes.saturating_mul(4).saturating_add(2) / 3
}

/// Bytes of an envelope that do not depend on the parameters, besides the key id:
/// `v1` and three dots (5) and the base64 nonce (32) = 37.
const FIXED_LEN: usize = ENVELOPE_VERSION.len() + 3 + base64_len(NONCE_LEN);

/// Exact length in bytes of the envelope that [`ProtectedStore`] stores for `parameters_len`
/// bytes of parameters sealed under a key id of `key_id_len` characters:
/// `37 + key_id_len + ceil(4 * (parameters_len + 16) / 3)`.
///
/// The inner store's size limit (`max_parameters_len`) applies to this length. The
/// overhead is 59 bytes plus the key id plus a third of the parameters.
///
/// ```
/// use par_store::envelope_len;
///
/// assert_eq!(envelope_len(0, 2), 61);
/// assert_eq!(envelope_len(600, 2), 861);
/// assert_eq!(envelope_len(16 * 1024, 2), 21_906);
/// ```
pub const fn envelope_len(parameters_len: usize, key_id_len: usize) -> usize {
    FIXED_LEN
        .saturating_add(key_id_len)
        .saturating_add(base64_len(parameters_len.saturating_add(TAG_LEN)))
}

/// The largest parameters, in bytes, whose envelope fits in `store_limit` bytes under a key
/// id of `key_id_len` characters; `None` if not even empty parameters fit. The inverse of
/// [`envelope_len`], for sizing a server's own limit on what it accepts.
///
/// ```
/// use par_store::{envelope_len, max_parameters_len_within, DEFAULT_MAX_PARAMETERS_LEN, MAX_KEY_ID_LEN};
///
/// // With the default 64 KiB store limit and the longest key id:
/// let most = max_parameters_len_within(DEFAULT_MAX_PARAMETERS_LEN, MAX_KEY_ID_LEN).unwrap();
/// assert_eq!(most, 49_084);
/// assert!(envelope_len(most, MAX_KEY_ID_LEN) <= DEFAULT_MAX_PARAMETERS_LEN);
/// assert!(envelope_len(most + 1, MAX_KEY_ID_LEN) > DEFAULT_MAX_PARAMETERS_LEN);
/// ```
pub const fn max_parameters_len_within(store_limit: usize, key_id_len: usize) -> Option<usize> {
    let fixed = FIXED_LEN.saturating_add(key_id_len);
    if store_limit < fixed {
        return None;
    }
    // Largest m with ceil(4m / 3) <= available is floor(3 * available / 4).
    let sealed = (store_limit - fixed).saturating_mul(3) / 4;
    sealed.checked_sub(TAG_LEN)
}

/// Accepts standard Base64 (what `openssl rand -base64 32` prints) in [`KeyRing::parse`],
/// padded or not.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Accepts base64url in [`KeyRing::parse`], padded or not.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A 256-bit secret key for [`ProtectedStore`], with the id that envelopes sealed under it
/// carry.
///
/// The secret never appears in `Debug` output, and is wiped from memory when the key is
/// dropped.
///
/// ```
/// use par_store::ProtectionKey;
///
/// let key = ProtectionKey::new("2026-05", [7u8; 32])?;
/// assert_eq!(key.id(), "2026-05");
/// assert_eq!(format!("{key:?}"), r#"ProtectionKey { id: "2026-05", .. }"#);
/// assert!(ProtectionKey::new("no spaces", [7u8; 32]).is_err());
/// # Ok::<(), par_store::KeyRingError>(())
/// ```
#[derive(Clone)]
pub struct ProtectionKey {
    id: String,
    // Holds the only copy of the secret; zeroised on drop (the crate's `zeroize` feature).
    cipher: XChaCha20Poly1305,
}

impl ProtectionKey {
    /// A key from its id and 32 secret bytes.
    ///
    /// The id is 1-32 characters of `A-Z a-z 0-9 _ -`; anything else fails with
    /// [`KeyRingError::InvalidKeyId`]. Ids are not secret: they are stored in every envelope
    /// and appear in errors.
    pub fn new(id: impl Into<String>, secret: [u8; 32]) -> Result<Self, KeyRingError> {
        let mut secret = secret;
        let id = id.into();
        if !is_valid_key_id(&id) {
            secret.zeroize();
            return Err(KeyRingError::InvalidKeyId { entry: None });
        }
        let mut key = Key::from(secret);
        let cipher = XChaCha20Poly1305::new(&key);
        key.as_mut_slice().zeroize();
        secret.zeroize();
        Ok(ProtectionKey { id, cipher })
    }

    /// A new random key from the operating system's CSPRNG.
    ///
    /// It lives only in this process: requests sealed under it cannot be read once the
    /// process ends. For keys shared by several instances or kept across restarts, use
    /// [`KeyRing::from_env`].
    ///
    /// Fails with [`KeyRingError::InvalidKeyId`] for a bad id, and with
    /// [`KeyRingError::RandomUnavailable`] if the OS random source fails.
    pub fn generate(id: impl Into<String>) -> Result<Self, KeyRingError> {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            return Err(KeyRingError::RandomUnavailable);
        }
        ProtectionKey::new(id, secret)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` under this key with the given nonce. The only place an envelope
    /// is written; the nonce is a parameter so that a known-answer test can pin it.
    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        reference_value_hash: &str,
        plaintext: &str,
    ) -> Result<String, StoreError> {
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: reference_value_hash.as_bytes(),
                },
            )
            // Only for inputs of 256 GiB or more, far beyond any store limit.
            .map_err(|_| StoreError::invalid(InputField::Parameters, "too long to encrypt"))?;
        let mut envelope = String::with_capacity(envelope_len(plaintext.len(), self.id.len()));
        envelope.push_str(ENVELOPE_VERSION);
        envelope.push('.');
        envelope.push_str(&self.id);
        envelope.push('.');
        URL_SAFE_NO_PAD.encode_string(nonce, &mut envelope);
        envelope.push('.');
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut envelope);
        Ok(envelope)
    }
}

impl fmt::Debug for ProtectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The format [`KeyRing::parse`] reads, repeated in its errors.
const KEY_RING_FORMAT: &str = "expected <key id>:<base64 32-byte secret>[,<key id>:<secret>...]";

/// Why a [`ProtectionKey`] or a [`KeyRing`] was refused. Never carries a secret; an entry is
/// named by its position in the text (from 1) and, once its id is known to be valid, its id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The key ring text is empty or blank.
    #[error("the key ring is empty; {KEY_RING_FORMAT}")]
    Empty,
    /// An entry is empty (a stray comma?).
    #[error("key ring entry {entry} is empty (a stray comma?); {KEY_RING_FORMAT}")]
    EmptyEntry {
        /// Position of the entry, from 1.
        entry: usize,
    },
    /// An entry has no `:` between the key id and the secret.
    #[error(
        "key ring entry {entry} has no ':' between the key id and the secret; {KEY_RING_FORMAT}"
    )]
    MissingColon {
        /// Position of the entry, from 1.
        entry: usize,
    },
    /// A key id is not 1-32 characters of `A-Z a-z 0-9 _ -` (it is not repeated: it may be a
    /// secret pasted in the wrong place).
    #[error("{}the key id must be 1-{MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ -", entry_prefix(*.entry))]
    InvalidKeyId {
        /// Position of the entry, from 1, when parsing a ring.
        entry: Option<usize>,
    },
    /// A key id appears twice in a ring.
    #[error("{}key id \"{key_id}\" appears more than once in the key ring", entry_prefix(*.entry))]
    DuplicateKeyId {
        /// Position of the second entry, from 1, when parsing a ring.
        entry: Option<usize>,
        /// The repeated id (ids are not secret).
        key_id: String,
    },
    /// A secret is not valid Base64 (standard or base64url, padded or not).
    #[error("key ring entry {entry} (key id \"{key_id}\"): the secret is not valid Base64")]
    SecretNotBase64 {
        /// Position of the entry, from 1.
        entry: usize,
        /// Its key id.
        key_id: String,
    },
    /// A secret does not decode to 32 bytes.
    #[error("key ring entry {entry} (key id \"{key_id}\"): the secret is {len} bytes long, 32 are required")]
    SecretWrongLength {
        /// Position of the entry, from 1.
        entry: usize,
        /// Its key id.
        key_id: String,
        /// The decoded length.
        len: usize,
    },
    /// [`KeyRing::from_env`]: the variable is not set.
    #[error("environment variable {var} is not set")]
    VariableNotSet {
        /// The variable's name.
        var: String,
    },
    /// [`KeyRing::from_env`]: the variable's value is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    VariableNotUnicode {
        /// The variable's name.
        var: String,
    },
    /// [`KeyRing::from_env`]: the variable's value is refused by [`KeyRing::parse`].
    #[error("environment variable {var}: {error}")]
    InVariable {
        /// The variable's name.
        var: String,
        /// Why its value was refused.
        error: Box<KeyRingError>,
    },
    /// [`ProtectionKey::generate`]: the operating system's random source failed.
    #[error("the operating system's random source failed")]
    RandomUnavailable,
}

fn entry_prefix(entry: Option<usize>) -> String {
    entry.map_or_else(String::new, |n| format!("key ring entry {n}: "))
}

/// The keys of a [`ProtectedStore`]: one current key, which seals every new request, and
/// any number of previous keys, which only open requests sealed before a rotation.
///
/// # Rotation
///
/// 1. Deploy the new key `B` as a *previous* key everywhere (`A` stays current), so that
///    every instance can read what `B` will seal.
/// 2. Make `B` current and `A` previous (`"B:...,A:..."`).
/// 3. Once the longest PAR lifetime (e.g. 600 s) has passed, drop `A`. A request still
///    sealed under `A` then fails with [`ProtectionErrorKind::UnknownKey`].
///
/// ```
/// use par_store::{KeyRing, ProtectionKey};
///
/// let ring = KeyRing::new(ProtectionKey::generate("b")?)
///     .with_previous(ProtectionKey::generate("a")?)?;
/// assert_eq!(ring.current_key_id(), "b");
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["b", "a"]);
/// assert_eq!(format!("{ring:?}"), r#"KeyRing { current: "b", previous: ["a"] }"#);
/// # Ok::<(), par_store::KeyRingError>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    current: ProtectionKey,
    /// Ids are unique across `current` and `previous`.
    previous: Vec<ProtectionKey>,
}

impl KeyRing {
    /// A ring with `current` as its only key.
    pub fn new(current: ProtectionKey) -> Self {
        KeyRing {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a previous key, used only to open requests sealed under it.
    ///
    /// Ids are unique within a ring: a key whose id is already present is refused with
    /// [`KeyRingError::DuplicateKeyId`] (two keys with one id would open each other's
    /// envelopes as [`Tampered`](ProtectionErrorKind::Tampered)).
    ///
    /// ```
    /// use par_store::{KeyRing, KeyRingError, ProtectionKey};
    ///
    /// let ring = KeyRing::new(ProtectionKey::generate("b")?);
    /// let err = ring.with_previous(ProtectionKey::generate("b")?).unwrap_err();
    /// assert!(matches!(err, KeyRingError::DuplicateKeyId { ref key_id, .. } if key_id == "b"));
    /// # Ok::<(), KeyRingError>(())
    /// ```
    pub fn with_previous(mut self, key: ProtectionKey) -> Result<Self, KeyRingError> {
        if self.find(&key.id).is_some() {
            return Err(KeyRingError::DuplicateKeyId {
                entry: None,
                key_id: key.id,
            });
        }
        self.previous.push(key);
        Ok(self)
    }

    /// Reads a key ring from the environment variable `var`, in the format of
    /// [`parse`](Self::parse).
    ///
    /// ```
    /// std::env::set_var("DOC_PAR_STORE_KEYS", "b:fkVOqkMvnP7gsxbejQmlHX+g+CVfbVyhO7WIcHdNZIM=");
    /// let ring = par_store::KeyRing::from_env("DOC_PAR_STORE_KEYS")?;
    /// assert_eq!(ring.current_key_id(), "b");
    /// assert!(par_store::KeyRing::from_env("DOC_PAR_STORE_NOT_SET").is_err());
    /// # Ok::<(), par_store::KeyRingError>(())
    /// ```
    pub fn from_env(var: &str) -> Result<Self, KeyRingError> {
        match std::env::var(var) {
            Ok(text) => KeyRing::parse(&text).map_err(|err| KeyRingError::InVariable {
                var: var.to_owned(),
                error: Box::new(err),
            }),
            Err(std::env::VarError::NotPresent) => Err(KeyRingError::VariableNotSet {
                var: var.to_owned(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyRingError::VariableNotUnicode {
                var: var.to_owned(),
            }),
        }
    }

    /// Parses a key ring from text: comma-separated `<key id>:<secret>` entries, the first
    /// being the current key and the others previous keys.
    ///
    /// - key id: 1-32 characters of `A-Z a-z 0-9 _ -`, unique within the ring;
    /// - secret: 32 bytes in standard Base64 (as `openssl rand -base64 32` prints it) or
    ///   base64url, with or without padding.
    ///
    /// Spaces around entries are ignored. Any other deviation fails with a [`KeyRingError`]
    /// that names the entry by position (from 1) and id, never by its secret.
    ///
    /// ```
    /// use par_store::{KeyRing, KeyRingError};
    ///
    /// let ring = KeyRing::parse(
    ///     "b:fkVOqkMvnP7gsxbejQmlHX+g+CVfbVyhO7WIcHdNZIM=, a:rrpxdufk5uKc5GVhTrb5BbhXx82kViKLGXYhBK08-f4",
    /// )?;
    /// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["b", "a"]);
    /// assert!(matches!( // 9 bytes, not 32
    ///     KeyRing::parse("b:dG9vIHNob3J0"),
    ///     Err(KeyRingError::SecretWrongLength { entry: 1, len: 9, .. })
    /// ));
    /// # Ok::<(), KeyRingError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        if text.trim().is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut keys: Vec<ProtectionKey> = Vec::new();
        for (index, entry_text) in text.split(',').enumerate() {
            let entry = index + 1;
            let entry_text = entry_text.trim();
            if entry_text.is_empty() {
                return Err(KeyRingError::EmptyEntry { entry });
            }
            let Some((id, secret)) = entry_text.split_once(':') else {
                return Err(KeyRingError::MissingColon { entry });
            };
            let id = id.trim();
            // An invalid id is not echoed: it may be a secret pasted in the wrong place.
            if !is_valid_key_id(id) {
                return Err(KeyRingError::InvalidKeyId { entry: Some(entry) });
            }
            if keys.iter().any(|key| key.id == id) {
                return Err(KeyRingError::DuplicateKeyId {
                    entry: Some(entry),
                    key_id: id.to_owned(),
                });
            }
            let secret = secret.trim();
            let Ok(mut bytes) = STANDARD_LENIENT
                .decode(secret)
                .or_else(|_| URL_SAFE_LENIENT.decode(secret))
            else {
                return Err(KeyRingError::SecretNotBase64 {
                    entry,
                    key_id: id.to_owned(),
                });
            };
            let secret: Result<[u8; 32], _> = bytes.as_slice().try_into();
            let len = bytes.len();
            bytes.zeroize();
            let Ok(secret) = secret else {
                return Err(KeyRingError::SecretWrongLength {
                    entry,
                    key_id: id.to_owned(),
                    len,
                });
            };
            keys.push(ProtectionKey::new(id, secret)?);
        }
        let mut keys = keys.into_iter();
        let Some(current) = keys.next() else {
            // Unreachable: a non-blank text has at least one entry, and each entry either
            // becomes a key or fails above.
            return Err(KeyRingError::Empty);
        };
        Ok(KeyRing {
            current,
            previous: keys.collect(),
        })
    }

    /// The id of the key that seals new requests.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Every key id in the ring, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys().map(|key| key.id.as_str())
    }

    fn keys(&self) -> impl Iterator<Item = &ProtectionKey> + '_ {
        std::iter::once(&self.current).chain(&self.previous)
    }

    fn find(&self, id: &str) -> Option<&ProtectionKey> {
        self.keys().find(|key| key.id == id)
    }

    /// Seals `plaintext` under the current key with a fresh random nonce.
    fn seal(&self, reference_value_hash: &str, plaintext: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| StoreError::Protection {
            kind: ProtectionErrorKind::RandomUnavailable,
            consumed: false,
        })?;
        self.current
            .seal_with_nonce(nonce, reference_value_hash, plaintext)
    }

    /// Opens an envelope stored for `reference_value_hash`. The whole envelope is checked
    /// before any key is looked up, and nothing but an authenticated, complete plaintext is
    /// ever returned.
    fn open(
        &self,
        reference_value_hash: &str,
        envelope: &str,
    ) -> Result<String, ProtectionErrorKind> {
        use ProtectionErrorKind::MalformedEnvelope;
        let mut parts = envelope.split('.');
        let (Some(version), Some(key_id), Some(nonce), Some(sealed), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(MalformedEnvelope);
        };
        if version != ENVELOPE_VERSION || !is_valid_key_id(key_id) {
            return Err(MalformedEnvelope);
        }
        // Strict decoding: no padding, and no stray bits in the last character, so every
        // envelope has exactly one spelling.
        let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(MalformedEnvelope)?;
        let sealed = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| MalformedEnvelope)?;
        if sealed.len() < TAG_LEN {
            return Err(MalformedEnvelope);
        }
        let key = self
            .find(key_id)
            .ok_or_else(|| ProtectionErrorKind::UnknownKey {
                key_id: key_id.to_owned(),
            })?;
        let plaintext = key
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: reference_value_hash.as_bytes(),
                },
            )
            .map_err(|_| ProtectionErrorKind::Tampered)?;
        // Authentic but not UTF-8: sealed by something other than this crate.
        String::from_utf8(plaintext).map_err(|err| {
            let mut bytes = err.into_bytes();
            bytes.zeroize();
            MalformedEnvelope
        })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<&str> = self.key_ids().skip(1).collect();
        f.debug_struct("KeyRing")
            .field("current", &self.current_key_id())
            .field("previous", &previous)
            .finish()
    }
}

/// A store that keeps `parameters` encrypted: a decorator over any
/// [`PushedAuthorizationRequestStore`].
///
/// - [`store`](PushedAuthorizationRequestStore::store) checks the request with the same
///   rules as every store (hash, NUL characters, expiry), then seals the parameters with
///   XChaCha20-Poly1305 under the ring's current key, a fresh random 192-bit nonce, and the
///   `reference_value_hash` as associated data, and stores the envelope (see
///   [`envelope_len`] for its size; the inner store's size limit applies to it).
/// - [`get_by_hash`](PushedAuthorizationRequestStore::get_by_hash) and
///   [`consume_by_hash`](PushedAuthorizationRequestStore::consume_by_hash) return exactly
///   the parameters that were stored, or [`StoreError::Protection`] when the envelope does
///   not open (unknown key, tampered or copied from another row, malformed). A
///   `consume_by_hash` that fails this way has still removed the request, and says so
///   (`consumed: true`).
/// - [`consume`](PushedAuthorizationRequestStore::consume),
///   [`consume_for_client`](PushedAuthorizationRequestStore::consume_for_client) and
///   [`consume_in_session`](PushedAuthorizationRequestStore::consume_in_session) (under the
///   inner store's [`ConsumePolicy`](crate::ConsumePolicy)) are the inner store's, with the
///   same outcomes; only a
///   [`Consumed`](Consumption::Consumed) request is opened (with the same error when it does
///   not open, `consumed: true`).
///
/// Expiry and the hash are stored in clear, as before: someone who can write to the
/// database can still delete a request or change when it expires, but can neither read
/// nor forge parameters, nor move them to another request.
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::{
///     KeyRing, MemoryStore, ProtectedStore, ProtectionKey, PushedAuthorizationRequest,
///     PushedAuthorizationRequestStore,
/// };
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
/// assert!(at_rest.parameters.starts_with("v1.k1."));
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
        let envelope = self
            .keys
            .seal(&request.reference_value_hash, &request.parameters)?;
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
    fn open_consumed(
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
        // Bound to the hash the caller asked for: an envelope opens only for its own request.
        match self.keys.open(reference_value_hash, &request.parameters) {
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

/// Adds the operations on client-bound and replaceable requests of a store to
/// `ProtectedStore` over it, so that a server whose contract needs them (such as oauth-as,
/// through `OauthAsStorage::with_protection`) can keep its parameters sealed.
macro_rules! impl_client_binding_for_protected {
    ($store:ty) => {
        impl ProtectedStore<$store> {
            /// Seals the parameters, then stores the request or replaces the one stored under
            /// the same hash, in one atomic step: see the inner store's `store_or_replace`.
            /// The input rules and errors are those of `store`.
            pub async fn store_or_replace(
                &self,
                request: &PushedAuthorizationRequest,
            ) -> Result<(), StoreError> {
                let (sealed, explain) = self.seal(request)?;
                self.inner.store_or_replace(&sealed).await.map_err(explain)
            }

            /// Removes every request bound to `client_id`, live or expired, and returns how
            /// many were removed: see the inner store's `delete_by_client_id`. The client id
            /// is not sealed, so nothing is decrypted.
            pub async fn delete_by_client_id(&self, client_id: &str) -> Result<u64, StoreError> {
                self.inner.delete_by_client_id(client_id).await
            }

            /// Removes every request that expires at or before `cutoff`, in batches: see the
            /// inner store's `delete_expired_as_of`. Nothing is decrypted.
            pub async fn delete_expired_as_of(
                &self,
                cutoff: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                self.inner.delete_expired_as_of(cutoff).await
            }

            /// oauth-as's take on the inner store, the envelope opened: see the inner store's
            /// `take`.
            // The adapter takes through `PostgresStore` (sealed or not); the memory twins exist
            // so that the macro stays one.
            #[cfg(feature = "oauth-as")]
            #[allow(dead_code)]
            pub(crate) async fn take(
                &self,
                reference_value_hash: &str,
            ) -> Result<Consumption, StoreError> {
                let taken = self.inner.take(reference_value_hash).await?;
                self.open_consumed(reference_value_hash, taken)
            }
        }
    };
}
impl_client_binding_for_protected!(PostgresStore);
impl_client_binding_for_protected!(MemoryStore);

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

    async fn consume(&self, reference_value_hash: &str) -> Result<Consumption, StoreError> {
        let consumed = self.inner.consume(reference_value_hash).await?;
        self.open_consumed(reference_value_hash, consumed)
    }

    async fn consume_for_client(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Consumption, StoreError> {
        // The client binding is stored in clear: the inner store checks it in its own
        // single atomic step, and nothing is decrypted unless it consumed the request.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed inputs of the known-answer test; `tests/protected.rs` opens the same
    /// envelope through the public API.
    const KAT_KEY: [u8; 32] = [
        0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e,
        0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d,
        0x9e, 0x9f,
    ];
    const KAT_NONCE: [u8; 24] = [
        0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e,
        0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57,
    ];
    const KAT_HASH: &str = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
    const KAT_PARAMETERS: &str = "client_id=s6BhdRkqt3&response_type=code&scope=openid";
    /// Cross-checked with two independent implementations: libsodium
    /// (`crypto_aead_xchacha20poly1305_ietf_encrypt`, through PyNaCl) and HChaCha20 written
    /// from draft-irtf-cfrg-xchacha in Python over pyca/cryptography's ChaCha20Poly1305.
    const KAT_ENVELOPE: &str = "v1.kat-1.QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX.kmAakTWEqzOfLwTltMb5B1k2Bl0jNvmfutWbfycKebFwWS0eRAn6W0KwjjkLrjEqpH_DcECPpu9BiVre88KhHLbzx7U";

    #[test]
    fn known_answer_envelope() {
        let key = ProtectionKey::new("kat-1", KAT_KEY).unwrap();
        let envelope = key
            .seal_with_nonce(KAT_NONCE, KAT_HASH, KAT_PARAMETERS)
            .unwrap();
        assert_eq!(envelope, KAT_ENVELOPE);
        assert_eq!(
            envelope.len(),
            envelope_len(KAT_PARAMETERS.len(), "kat-1".len())
        );
        let ring = KeyRing::new(key);
        assert_eq!(ring.open(KAT_HASH, &envelope).unwrap(), KAT_PARAMETERS);
    }

    #[test]
    fn envelope_len_is_exact_and_its_inverse_is_tight() {
        let key = ProtectionKey::new("abc", [1; 32]).unwrap();
        for n in 0..200 {
            let plaintext = "x".repeat(n);
            let envelope = key.seal_with_nonce([0; 24], "h", &plaintext).unwrap();
            assert_eq!(envelope.len(), envelope_len(n, 3), "n = {n}");
        }
        for limit in 0..400 {
            match max_parameters_len_within(limit, 3) {
                Some(n) => {
                    assert!(envelope_len(n, 3) <= limit, "limit = {limit}");
                    assert!(envelope_len(n + 1, 3) > limit, "limit = {limit}");
                }
                None => assert!(envelope_len(0, 3) > limit, "limit = {limit}"),
            }
        }
    }

    #[test]
    fn key_ids_are_checked() {
        for good in ["a", "A-z_09", &"k".repeat(32)] {
            assert!(ProtectionKey::new(good, [0; 32]).is_ok(), "{good:?}");
        }
        for bad in ["", "a.b", "a:b", "a b", "é", &"k".repeat(33)] {
            assert!(ProtectionKey::new(bad, [0; 32]).is_err(), "{bad:?}");
        }
    }
}
