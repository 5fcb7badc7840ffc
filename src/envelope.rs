//! The envelope that [`ProtectedStore`](crate::ProtectedStore) stores in place of the
//! parameters: its format, its length, and how it is sealed and opened.
//!
//! # Envelope format, version 2 (written since 0.3.0)
//!
//! ```text
//! v2.<key id>.<nonce>.<ciphertext>
//! ```
//!
//! - `v2`: the format version.
//! - `<key id>`: the id of the [`ProtectionKey`](crate::protect::ProtectionKey) that sealed it, 1-32 characters of
//!   `A-Z a-z 0-9 _ -` (so it never contains a `.`).
//! - `<nonce>`: the 24-byte (192-bit) random nonce, base64url without padding (32 characters).
//! - `<ciphertext>`: XChaCha20-Poly1305 of the UTF-8 parameters, with the 16-byte tag
//!   appended, base64url without padding.
//!
//! Associated data: the request's `reference_value_hash` and its client binding
//! (`client_id`, which may be absent), each length-prefixed so that no two rows share it:
//!
//! ```text
//! u64be(len(hash)) || hash                           then, without a client binding:
//! 0x00
//!                                                    or, with one:
//! 0x01 || u64be(len(client_id)) || client_id
//! ```
//!
//! (lengths in bytes, big-endian; strings as UTF-8). An envelope therefore opens only on a
//! row with the same hash *and* the same client binding: a `client_id` rewritten, added or
//! removed behind the store's back fails to open with
//! [`ProtectionErrorKind::Tampered`](crate::error::ProtectionErrorKind). The
//! version itself is not in the associated data, but cannot be downgraded either: version 1's
//! associated data is the bare hash, which never contains a NUL byte, while version 2's
//! always starts with one.
//!
//! # Envelope format, version 1 (written by 0.2 and 0.3 pre-releases; still opened)
//!
//! ```text
//! v1.<key id>.<nonce>.<ciphertext>
//! ```
//!
//! The same parts, but the associated data is only the UTF-8 bytes of the
//! `reference_value_hash`: a version 1 envelope is bound to its request but **not** to its
//! client binding, so it still opens after its row's `client_id` is rewritten. Such rows keep
//! opening (they are read, never rewritten); they are gone once the requests they hold
//! expire, within the inner store's longest lifetime after the upgrade.
//!
//! # Length
//!
//! Both versions have the same length, [`envelope_len`]`(parameters_len, key_id_len)`
//! `= 37 + key_id_len + ceil(4 * (parameters_len + 16) / 3)` bytes.

use crate::error::{InputField, ProtectionErrorKind, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

/// The envelope format version this crate writes. It also reads version 1 (`"v1"`), whose
/// associated data does not bind the client (docs/security.md, "The envelope and its size").
///
/// ```
/// assert_eq!(par_store::protect::ENVELOPE_VERSION, "v2");
/// ```
pub const ENVELOPE_VERSION: &str = "v2";

/// The version written by 0.2 and the 0.3 pre-releases: associated data = the hash alone.
const ENVELOPE_VERSION_1: &str = "v1";

// `envelope_len` counts the version's length once for every version it reads.
const _: () = assert!(ENVELOPE_VERSION.len() == ENVELOPE_VERSION_1.len());

/// Longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Nonce length in bytes (XChaCha20-Poly1305: 192 bits).
pub(crate) const NONCE_LEN: usize = 24;

/// Authentication tag length in bytes (Poly1305).
const TAG_LEN: usize = 16;

/// Characters of base64 (no padding) needed for `bytes` bytes: `ceil(4 * bytes / 3)`.
const fn base64_len(bytes: usize) -> usize {
    bytes.saturating_mul(4).saturating_add(2) / 3
}

/// Bytes of an envelope that do not depend on the parameters, besides the key id:
/// the version (`v2`, as long as `v1`) and three dots (5) and the base64 nonce (32) = 37.
const FIXED_LEN: usize = ENVELOPE_VERSION.len() + 3 + base64_len(NONCE_LEN);

/// Exact length in bytes of the envelope that [`ProtectedStore`](crate::ProtectedStore) stores for `parameters_len`
/// bytes of parameters sealed under a key id of `key_id_len` characters:
/// `37 + key_id_len + ceil(4 * (parameters_len + 16) / 3)`.
///
/// The inner store's size limit (`max_parameters_len`) applies to this length. The
/// overhead is 59 bytes plus the key id plus a third of the parameters.
///
/// ```
/// use par_store::protect::envelope_len;
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
/// use par_store::protect::{envelope_len, max_parameters_len_within, MAX_KEY_ID_LEN};
///
/// // With the default 64 KiB store limit and the longest key id:
/// const DEFAULT_MAX_PARAMETERS_LEN: usize = par_store::PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN;
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

/// A key id fits in an envelope: it never contains the `.` that separates the parts.
pub(crate) fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The associated data of a version 2 envelope: the hash and the client binding,
/// length-prefixed (see the module docs). Never equal to a version 1 associated data (a
/// hash, which holds no NUL), since it starts with the high byte of a length.
fn associated_data_v2(reference_value_hash: &str, client_id: Option<&str>) -> Vec<u8> {
    let client_len = client_id.map_or(0, |client| 8 + client.len());
    let mut aad = Vec::with_capacity(8 + reference_value_hash.len() + 1 + client_len);
    aad.extend_from_slice(&(reference_value_hash.len() as u64).to_be_bytes());
    aad.extend_from_slice(reference_value_hash.as_bytes());
    match client_id {
        None => aad.push(0x00),
        Some(client) => {
            aad.push(0x01);
            aad.extend_from_slice(&(client.len() as u64).to_be_bytes());
            aad.extend_from_slice(client.as_bytes());
        }
    }
    aad
}

/// Seals `plaintext` with `cipher`, the key of id `key_id`, and the given nonce, bound to
/// the request's hash and client binding (version 2). The only place an envelope is
/// written; the nonce is a parameter so that a known-answer test can pin it.
pub(crate) fn seal(
    cipher: &XChaCha20Poly1305,
    key_id: &str,
    nonce: [u8; NONCE_LEN],
    reference_value_hash: &str,
    client_id: Option<&str>,
    plaintext: &str,
) -> Result<String, StoreError> {
    let aad = associated_data_v2(reference_value_hash, client_id);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        )
        // Only for inputs of 256 GiB or more, far beyond any store limit.
        .map_err(|_| StoreError::invalid(InputField::Parameters, "too long to encrypt"))?;
    let mut envelope = String::with_capacity(envelope_len(plaintext.len(), key_id.len()));
    envelope.push_str(ENVELOPE_VERSION);
    envelope.push('.');
    envelope.push_str(key_id);
    envelope.push('.');
    URL_SAFE_NO_PAD.encode_string(nonce, &mut envelope);
    envelope.push('.');
    URL_SAFE_NO_PAD.encode_string(&sealed, &mut envelope);
    Ok(envelope)
}

/// Opens an envelope stored on the row of `reference_value_hash` and `client_id` (the row's
/// own client binding, as stored) with the key that `find` returns for its key id. Version 2
/// is bound to both, version 1 to the hash only. The whole envelope is checked before any
/// key is looked up, and nothing but an authenticated, complete plaintext is ever returned.
pub(crate) fn open<'k>(
    reference_value_hash: &str,
    client_id: Option<&str>,
    envelope: &str,
    find: impl FnOnce(&str) -> Option<&'k XChaCha20Poly1305>,
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
    let aad = match version {
        ENVELOPE_VERSION => associated_data_v2(reference_value_hash, client_id),
        // Written before the client binding was sealed: bound to the hash alone.
        ENVELOPE_VERSION_1 => reference_value_hash.as_bytes().to_vec(),
        _ => return Err(MalformedEnvelope),
    };
    if !is_valid_key_id(key_id) {
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
    let cipher = find(key_id).ok_or_else(|| ProtectionErrorKind::UnknownKey {
        key_id: key_id.to_owned(),
    })?;
    let plaintext = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::{Key, KeyInit};

    /// The fixed inputs of the known-answer tests; `tests/protected.rs` opens the same
    /// envelopes through the public API.
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
    /// Version 1 (written by 0.2; associated data: the hash alone). Cross-checked with two
    /// independent implementations: libsodium
    /// (`crypto_aead_xchacha20poly1305_ietf_encrypt`, through PyNaCl) and HChaCha20 written
    /// from draft-irtf-cfrg-xchacha in Python over pyca/cryptography's ChaCha20Poly1305.
    const KAT_ENVELOPE: &str = "v1.kat-1.QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX.kmAakTWEqzOfLwTltMb5B1k2Bl0jNvmfutWbfycKebFwWS0eRAn6W0KwjjkLrjEqpH_DcECPpu9BiVre88KhHLbzx7U";

    /// A client binding for the version 2 known-answer test.
    const KAT_CLIENT: &str = "s6BhdRkqt3";
    /// Version 2 of the same inputs, bound to [`KAT_CLIENT`]: produced by this code, and
    /// cross-checked with libsodium (`crypto_aead_xchacha20poly1305_ietf_encrypt`, through
    /// PyNaCl 1.6.2) over the associated data written out by hand in Python:
    /// `struct.pack(">Q", 44) + hash + b"\x01" + struct.pack(">Q", 10) + client`.
    const KAT_ENVELOPE_V2: &str = "v2.kat-1.QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX.kmAakTWEqzOfLwTltMb5B1k2Bl0jNvmfutWbfycKebFwWS0eRAn6W0KwjjkLrjEqpH_DcDmgbmCmuh6oKTG_D1auErk";
    /// Version 2 of the same inputs without a client binding, cross-checked the same way
    /// (associated data `struct.pack(">Q", 44) + hash + b"\x00"`).
    const KAT_ENVELOPE_V2_UNBOUND: &str = "v2.kat-1.QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX.kmAakTWEqzOfLwTltMb5B1k2Bl0jNvmfutWbfycKebFwWS0eRAn6W0KwjjkLrjEqpH_DcP8m4yBcnBjU95dFt47rXC0";

    fn kat_cipher() -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(KAT_KEY))
    }

    fn open_kat(
        cipher: &XChaCha20Poly1305,
        client_id: Option<&str>,
        envelope: &str,
    ) -> Result<String, ProtectionErrorKind> {
        open(KAT_HASH, client_id, envelope, |id| {
            (id == "kat-1").then_some(cipher)
        })
    }

    #[test]
    fn known_answer_envelope_v2() -> Result<(), StoreError> {
        let cipher = kat_cipher();
        for (client_id, expected) in [
            (Some(KAT_CLIENT), KAT_ENVELOPE_V2),
            (None, KAT_ENVELOPE_V2_UNBOUND),
        ] {
            let envelope = seal(
                &cipher,
                "kat-1",
                KAT_NONCE,
                KAT_HASH,
                client_id,
                KAT_PARAMETERS,
            )?;
            assert_eq!(envelope, expected, "{client_id:?}");
            assert_eq!(
                envelope.len(),
                envelope_len(KAT_PARAMETERS.len(), "kat-1".len())
            );
            assert_eq!(
                open_kat(&cipher, client_id, &envelope),
                Ok(KAT_PARAMETERS.to_owned())
            );
        }
        Ok(())
    }

    #[test]
    fn known_answer_envelope_v1_still_opens_for_any_client_binding() {
        let cipher = kat_cipher();
        assert_eq!(
            KAT_ENVELOPE.len(),
            envelope_len(KAT_PARAMETERS.len(), "kat-1".len())
        );
        // Version 1 binds the hash only: whatever the row's client binding says.
        for client_id in [None, Some(KAT_CLIENT), Some("someone-else")] {
            assert_eq!(
                open_kat(&cipher, client_id, KAT_ENVELOPE),
                Ok(KAT_PARAMETERS.to_owned())
            );
        }
        let other_hash = open(
            "x4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
            None,
            KAT_ENVELOPE,
            |_| Some(&cipher),
        );
        assert_eq!(other_hash, Err(ProtectionErrorKind::Tampered));
    }

    #[test]
    fn v2_is_bound_to_the_client_binding() -> Result<(), StoreError> {
        let cipher = kat_cipher();
        for (sealed_for, opened_for) in [
            (Some(KAT_CLIENT), Some("attacker")),
            (Some(KAT_CLIENT), None),
            (None, Some(KAT_CLIENT)),
            (Some(KAT_CLIENT), Some("s6BhdRkqt")),
            (Some(""), None),
        ] {
            let envelope = seal(
                &cipher,
                "kat-1",
                KAT_NONCE,
                KAT_HASH,
                sealed_for,
                KAT_PARAMETERS,
            )?;
            assert_eq!(
                open_kat(&cipher, opened_for, &envelope),
                Err(ProtectionErrorKind::Tampered),
                "sealed for {sealed_for:?}, opened for {opened_for:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn v2_cannot_be_relabelled_v1_or_an_unknown_version() -> Result<(), StoreError> {
        let cipher = kat_cipher();
        for client_id in [Some(KAT_CLIENT), None] {
            let envelope = seal(
                &cipher,
                "kat-1",
                KAT_NONCE,
                KAT_HASH,
                client_id,
                KAT_PARAMETERS,
            )?;
            let as_v1 = envelope.replacen("v2.", "v1.", 1);
            assert_eq!(
                open_kat(&cipher, client_id, &as_v1),
                Err(ProtectionErrorKind::Tampered)
            );
            let as_v3 = envelope.replacen("v2.", "v3.", 1);
            assert_eq!(
                open_kat(&cipher, client_id, &as_v3),
                Err(ProtectionErrorKind::MalformedEnvelope)
            );
        }
        Ok(())
    }

    #[test]
    fn v2_associated_data_is_unambiguous() {
        // Moving bytes between the hash and the client binding changes the associated data.
        assert_ne!(
            associated_data_v2("ab", Some("c")),
            associated_data_v2("a", Some("bc"))
        );
        assert_ne!(
            associated_data_v2("a", None),
            associated_data_v2("a", Some(""))
        );
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 1, b'h', 1, 0, 0, 0, 0, 0, 0, 0, 2];
        expected.extend_from_slice(b"c1");
        assert_eq!(associated_data_v2("h", Some("c1")), expected);
        assert_eq!(
            associated_data_v2("h", None),
            vec![0, 0, 0, 0, 0, 0, 0, 1, b'h', 0]
        );
    }

    #[test]
    fn envelope_len_is_exact_and_its_inverse_is_tight() -> Result<(), StoreError> {
        let cipher = XChaCha20Poly1305::new(&Key::from([1; 32]));
        for n in 0..200 {
            let plaintext = "x".repeat(n);
            let envelope = seal(&cipher, "abc", [0; 24], "h", Some("c"), &plaintext)?;
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
        Ok(())
    }
}
