//! The keys of a [`ProtectedStore`](crate::ProtectedStore): one key, a ring of them for
//! rotation, and reading a ring from the environment.

use crate::envelope::{self, is_valid_key_id, MAX_KEY_ID_LEN, NONCE_LEN};
use crate::error::{ProtectionErrorKind, StoreError};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use std::fmt;
use zeroize::Zeroize;

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

/// A 256-bit secret key for [`ProtectedStore`](crate::ProtectedStore), with the id that envelopes sealed under it
/// carry.
///
/// The secret never appears in `Debug` output, and is wiped from memory when the key is
/// dropped.
///
/// ```
/// use par_store::protect::ProtectionKey;
///
/// let key = ProtectionKey::new("2026-05", [7u8; 32])?;
/// assert_eq!(key.id(), "2026-05");
/// assert_eq!(format!("{key:?}"), r#"ProtectionKey { id: "2026-05", .. }"#);
/// assert!(ProtectionKey::new("no spaces", [7u8; 32]).is_err());
/// # Ok::<(), par_store::protect::KeyRingError>(())
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

/// The keys of a [`ProtectedStore`](crate::ProtectedStore): one current key, which seals every new request, and
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
/// use par_store::protect::{KeyRing, ProtectionKey};
///
/// let ring = KeyRing::new(ProtectionKey::generate("b")?)
///     .with_previous(ProtectionKey::generate("a")?)?;
/// assert_eq!(ring.current_key_id(), "b");
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["b", "a"]);
/// assert_eq!(format!("{ring:?}"), r#"KeyRing { current: "b", previous: ["a"] }"#);
/// # Ok::<(), par_store::protect::KeyRingError>(())
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
    /// use par_store::protect::{KeyRing, KeyRingError, ProtectionKey};
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
    /// let ring = par_store::protect::KeyRing::from_env("DOC_PAR_STORE_KEYS")?;
    /// assert_eq!(ring.current_key_id(), "b");
    /// assert!(par_store::protect::KeyRing::from_env("DOC_PAR_STORE_NOT_SET").is_err());
    /// # Ok::<(), par_store::protect::KeyRingError>(())
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
    /// use par_store::protect::{KeyRing, KeyRingError};
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

    /// Seals `plaintext` under the current key with a fresh random nonce, bound to the
    /// request's hash and client binding.
    pub(crate) fn seal(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        plaintext: &str,
    ) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| StoreError::Protection {
            kind: ProtectionErrorKind::RandomUnavailable,
            consumed: false,
        })?;
        envelope::seal(
            &self.current.cipher,
            &self.current.id,
            nonce,
            reference_value_hash,
            client_id,
            plaintext,
        )
    }

    /// Opens an envelope stored on the row of `reference_value_hash` and `client_id` with the
    /// key it names (the current one or a previous one: rotation).
    pub(crate) fn open(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        envelope: &str,
    ) -> Result<String, ProtectionErrorKind> {
        envelope::open(reference_value_hash, client_id, envelope, |key_id| {
            self.find(key_id).map(|key| &key.cipher)
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

#[cfg(test)]
mod tests {
    use super::*;

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
