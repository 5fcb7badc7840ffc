//! The input rules, written once and applied by every store before anything reaches storage.

use crate::error::{InputField, StoreError};
use crate::model::PushedAuthorizationRequest;
use chrono::{DateTime, SubsecRound, Utc};

/// Longest accepted reference value hash, in bytes. The migration's CHECK constraint
/// enforces the same bound in the database.
pub const MAX_REFERENCE_VALUE_HASH_LEN: usize = 128;

/// Default largest accepted `parameters`, in bytes (64 KiB).
pub const DEFAULT_MAX_PARAMETERS_LEN: usize = 64 * 1024;

/// Checks a reference value hash given to `store`.
pub(crate) fn check_hash(hash: &str) -> Result<(), StoreError> {
    const FIELD: InputField = InputField::ReferenceValueHash;
    if hash.is_empty() {
        return Err(StoreError::invalid(FIELD, "must not be empty"));
    }
    if hash.len() > MAX_REFERENCE_VALUE_HASH_LEN {
        return Err(StoreError::invalid(
            FIELD,
            format!(
                "is {} bytes long, at most {MAX_REFERENCE_VALUE_HASH_LEN} are allowed",
                hash.len()
            ),
        ));
    }
    if hash.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            FIELD,
            "must not contain control characters (NUL included)",
        ));
    }
    Ok(())
}

/// True when a look-up key could have been stored at all. Look-ups with any other key
/// answer "not found" without a round trip: such a request cannot exist.
pub(crate) fn is_storable_hash(hash: &str) -> bool {
    check_hash(hash).is_ok()
}

/// Checks a whole request given to `store` and returns it as it will be kept:
/// `expires_at` truncated to whole microseconds (PostgreSQL's precision), so that both
/// stores return exactly the same value.
pub(crate) fn check_request(
    request: &PushedAuthorizationRequest,
    max_parameters_len: usize,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    check_hash(&request.reference_value_hash)?;
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
        return Err(StoreError::invalid(
            InputField::ExpiresAt,
            "must be in the future when the request is stored",
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
    fn accepts_a_normal_request() {
        let r = request("abc", "client_id=x", Duration::seconds(60));
        assert!(check_request(&r, 100, Utc::now()).is_ok());
    }

    #[test]
    fn rejects_each_bad_field() {
        let now = Utc::now();
        let ttl = Duration::seconds(60);
        for hash in ["", "a\0b", "tab\there", "\u{85}", &"h".repeat(129)] {
            let err = check_request(&request(hash, "p", ttl), 100, now).unwrap_err();
            assert_eq!(field_of(err), "reference_value_hash", "{hash:?}");
        }
        assert!(check_hash(&"h".repeat(128)).is_ok());
        let err = check_request(&request("h", "a\0", ttl), 100, now).unwrap_err();
        assert_eq!(field_of(err), "parameters");
        let err = check_request(&request("h", &"p".repeat(101), ttl), 100, now).unwrap_err();
        assert_eq!(field_of(err), "parameters");
        assert!(check_request(&request("h", &"p".repeat(100), ttl), 100, now).is_ok());
        let past = PushedAuthorizationRequest::new("h", now, "p");
        assert_eq!(
            field_of(check_request(&past, 100, now).unwrap_err()),
            "expires_at"
        );
    }

    #[test]
    fn truncates_expiry_to_microseconds() {
        let r = request("h", "p", Duration::nanoseconds(60_000_000_123));
        let kept = check_request(&r, 100, Utc::now()).unwrap();
        assert_eq!(kept.timestamp_subsec_nanos() % 1_000, 0);
    }
}
