//! The input rules, written once and applied by every store before anything reaches storage.

use crate::consume_policy::ConsumePolicy;
use crate::error::{InputField, StoreError};
use crate::model::PushedAuthorizationRequest;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use std::time::Duration;

const MAX_REFERENCE_VALUE_HASH_LEN: usize =
    PushedAuthorizationRequest::MAX_REFERENCE_VALUE_HASH_LEN;
const MAX_CLIENT_ID_LEN: usize = PushedAuthorizationRequest::MAX_CLIENT_ID_LEN;
const MAX_SESSION_BINDING_LEN: usize = ConsumePolicy::MAX_SESSION_BINDING_LEN;

/// [`PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN`](crate::PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN),
/// also `MemoryStore`'s default.
pub(crate) const DEFAULT_MAX_PARAMETERS_LEN: usize = 64 * 1024;

/// [`PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME`](crate::PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME),
/// also `MemoryStore`'s default.
pub(crate) const DEFAULT_MAX_REQUEST_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The error for an `expires_at` that is not in the future when the request is stored, by
/// the store's clock (the application's, or the database's for `PostgresStore`).
pub(crate) fn already_expired() -> StoreError {
    StoreError::invalid(
        InputField::ExpiresAt,
        "must be in the future when the request is stored",
    )
}

/// The rule shared by the keys a request is found by (its hash, its client id, and the
/// session binding of a reload):
/// 1 to `max_len` bytes, no control characters (NUL included).
fn check_key(field: InputField, value: &str, max_len: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(StoreError::invalid(
            field,
            format!(
                "is {} bytes long, at most {max_len} are allowed",
                value.len()
            ),
        ));
    }
    if has_control_character(value) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters (NUL included)",
        ));
    }
    Ok(())
}

/// True when `value` holds a control character (Unicode's `Cc`, what [`char::is_control`]
/// finds: U+0000 to U+001F and U+007F to U+009F), found without decoding the characters:
/// in UTF-8 these are the bytes below 0x20, 0x7F, and the pairs C2 80 to C2 9F. Every
/// operation checks its hash this way; decoding cost 500 instructions per operation.
fn has_control_character(value: &str) -> bool {
    let bytes = value.as_bytes();
    // Without an early exit the compiler vectorises the check (a hash is 43 bytes or more):
    // 40 % of the instructions of `any` (callgrind, `bench/run.sh`'s lifecycle).
    bytes
        .iter()
        .fold(false, |found, &byte| found | (byte < 0x20) | (byte == 0x7f))
        || (!value.is_ascii()
            && bytes
                .windows(2)
                .any(|pair| pair[0] == 0xc2 && (0x80..=0x9f).contains(&pair[1])))
}

/// Checks a reference value hash given to `store`.
pub(crate) fn check_hash(hash: &str) -> Result<(), StoreError> {
    check_key(
        InputField::ReferenceValueHash,
        hash,
        MAX_REFERENCE_VALUE_HASH_LEN,
    )
}

/// Checks the client id a request is bound to.
pub(crate) fn check_client_id(client_id: &str) -> Result<(), StoreError> {
    check_key(InputField::ClientId, client_id, MAX_CLIENT_ID_LEN)
}

/// Checks the session binding given to `consume_in_session` (the rule of the other keys).
pub(crate) fn check_session_binding(binding: &str) -> Result<(), StoreError> {
    check_key(InputField::SessionBinding, binding, MAX_SESSION_BINDING_LEN)
}

/// True when requests could have been stored bound to this client id at all; deletions by
/// any other id remove nothing, without a round trip.
pub(crate) fn is_storable_client_id(client_id: &str) -> bool {
    check_client_id(client_id).is_ok()
}

/// True when a look-up key could have been stored at all. Look-ups with any other key
/// answer "not found" without a round trip: such a request cannot exist.
pub(crate) fn is_storable_hash(hash: &str) -> bool {
    check_hash(hash).is_ok()
}

/// Checks a whole request given to `store` and returns it as it will be kept:
/// `expires_at` truncated to whole microseconds (PostgreSQL's precision), so that both
/// stores return exactly the same value.
///
/// `now` is the application's clock. `expires_at` must lie in `(now, now + max_request_lifetime]`;
/// a backend with a clock of its own checks the lower bound again against that clock.
pub(crate) fn check_request(
    request: &PushedAuthorizationRequest,
    max_parameters_len: usize,
    max_request_lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    check_hash(&request.reference_value_hash)?;
    if let Some(client_id) = &request.client_id {
        check_client_id(client_id)?;
    }
    const PARAMETERS: InputField = InputField::Parameters;
    if request.parameters.len() > max_parameters_len {
        return Err(StoreError::invalid(
            PARAMETERS,
            format!(
                "is {} bytes long, at most {max_parameters_len} are allowed",
                request.parameters.len()
            ),
        ));
    }
    if request.parameters.contains('\0') {
        return Err(StoreError::invalid(
            PARAMETERS,
            "must not contain NUL characters (PostgreSQL text cannot hold them)",
        ));
    }
    let expires_at = request.expires_at.trunc_subsecs(6);
    if expires_at <= now {
        return Err(already_expired());
    }
    // A bound beyond chrono's range (about 262,000 years) bounds nothing.
    let latest = TimeDelta::from_std(max_request_lifetime)
        .ok()
        .and_then(|lifetime| now.checked_add_signed(lifetime));
    if latest.is_some_and(|latest| expires_at > latest) {
        return Err(StoreError::invalid(
            InputField::ExpiresAt,
            format!(
                "is more than the store's max_request_lifetime ({} s) ahead",
                max_request_lifetime.as_secs()
            ),
        ));
    }
    Ok(expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn request(hash: &str, parameters: &str, ttl: Duration) -> PushedAuthorizationRequest {
        PushedAuthorizationRequest::new(hash, Utc::now() + ttl, parameters)
    }

    fn field_of(err: StoreError) -> &'static str {
        match err {
            StoreError::InvalidInput { field, .. } => field.as_str(),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn control_characters_are_what_char_is_control_finds() {
        // Every code point up to U+0800 (all one- and two-byte sequences), alone and between
        // other characters, and a few longer ones.
        let wide = ['\u{800}', '\u{2028}', '\u{feff}', '\u{10ffff}', 'é', 'a'];
        for c in (0..0x800_u32).filter_map(char::from_u32).chain(wide) {
            for text in [
                c.to_string(),
                format!("é{c}a"),
                format!("\u{2028}{c}\u{10ffff}"),
            ] {
                let expected = text.chars().any(char::is_control);
                assert_eq!(has_control_character(&text), expected, "{text:?}");
            }
        }
    }

    #[test]
    fn accepts_a_normal_request() {
        let r = request("abc", "client_id=x", Duration::seconds(60));
        assert!(check_request(&r, 100, DEFAULT_MAX_REQUEST_LIFETIME, Utc::now()).is_ok());
    }

    #[test]
    fn rejects_each_bad_field() {
        let now = Utc::now();
        let ttl = Duration::seconds(60);
        for hash in ["", "a\0b", "tab\there", "\u{85}", &"h".repeat(129)] {
            let err = check_request(
                &request(hash, "p", ttl),
                100,
                DEFAULT_MAX_REQUEST_LIFETIME,
                now,
            )
            .unwrap_err();
            assert_eq!(field_of(err), "reference_value_hash", "{hash:?}");
        }
        assert!(check_hash(&"h".repeat(128)).is_ok());
        let err = check_request(
            &request("h", "a\0", ttl),
            100,
            DEFAULT_MAX_REQUEST_LIFETIME,
            now,
        )
        .unwrap_err();
        assert_eq!(field_of(err), "parameters");
        let err = check_request(
            &request("h", &"p".repeat(101), ttl),
            100,
            DEFAULT_MAX_REQUEST_LIFETIME,
            now,
        )
        .unwrap_err();
        assert_eq!(field_of(err), "parameters");
        assert!(check_request(
            &request("h", &"p".repeat(100), ttl),
            100,
            DEFAULT_MAX_REQUEST_LIFETIME,
            now
        )
        .is_ok());
        let past = PushedAuthorizationRequest::new("h", now, "p");
        assert_eq!(
            field_of(check_request(&past, 100, DEFAULT_MAX_REQUEST_LIFETIME, now).unwrap_err()),
            "expires_at"
        );
    }

    #[test]
    fn checks_the_client_id_when_there_is_one() {
        let now = Utc::now();
        let ttl = Duration::seconds(60);
        for client_id in [
            "",
            "a\0b",
            "line\nbreak",
            &"c".repeat(MAX_CLIENT_ID_LEN + 1),
        ] {
            let bound = request("h", "p", ttl).with_client_id(client_id);
            let err = check_request(&bound, 100, DEFAULT_MAX_REQUEST_LIFETIME, now).unwrap_err();
            assert_eq!(field_of(err), "client_id", "{client_id:?}");
            assert!(!is_storable_client_id(client_id));
        }
        for client_id in [
            "s6BhdRkqt3",
            "https://app.example/client.json",
            &"c".repeat(MAX_CLIENT_ID_LEN),
        ] {
            let bound = request("h", "p", ttl).with_client_id(client_id);
            assert!(
                check_request(&bound, 100, DEFAULT_MAX_REQUEST_LIFETIME, now).is_ok(),
                "{client_id:?}"
            );
            assert!(is_storable_client_id(client_id));
        }
        assert!(check_request(
            &request("h", "p", ttl),
            100,
            DEFAULT_MAX_REQUEST_LIFETIME,
            now
        )
        .is_ok());
    }

    #[test]
    fn bounds_the_lifetime() {
        let now = Utc::now();
        let minute = std::time::Duration::from_secs(60);
        let at = |expires_at| PushedAuthorizationRequest::new("h", expires_at, "p");
        assert!(check_request(&at(now + Duration::seconds(60)), 100, minute, now).is_ok());
        let late = at(now + Duration::seconds(60) + Duration::microseconds(1));
        assert_eq!(
            field_of(check_request(&late, 100, minute, now).unwrap_err()),
            "expires_at"
        );
        let far = at(DateTime::<Utc>::MAX_UTC);
        let refused = check_request(&far, 100, DEFAULT_MAX_REQUEST_LIFETIME, now).unwrap_err();
        assert_eq!(field_of(refused), "expires_at");
        // A bound too large to add to `now` is no bound.
        let unbounded = std::time::Duration::MAX;
        assert!(check_request(&far, 100, unbounded, now).is_ok());
    }

    #[test]
    fn truncates_expiry_to_microseconds() -> Result<(), StoreError> {
        let r = request("h", "p", Duration::nanoseconds(60_000_000_123));
        let kept = check_request(&r, 100, DEFAULT_MAX_REQUEST_LIFETIME, Utc::now())?;
        assert_eq!(kept.timestamp_subsec_nanos() % 1_000, 0);
        Ok(())
    }
}
