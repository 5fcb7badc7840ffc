//! `ReferenceValue`: the format, the hash and the strict parsing of `request_uri`s.
//!
//! The hash vectors below were computed independently of this crate, with Python's standard
//! library:
//!
//! ```text
//! python3 -c "import hashlib,base64;v='0123456789ABCDEF'*4;print(base64.b64encode(hashlib.sha256(v.encode('utf-8')).digest()).decode())"
//! ```

use par_store::{
    MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore, ReferenceValue,
};

const REQUEST_URI_PREFIX: &str = ReferenceValue::REQUEST_URI_PREFIX;
use std::collections::HashSet;

/// (reference value, Base64(SHA-256(UTF-8 bytes of the value))), from `python3` as above.
const VECTORS: [(&str, &str); 4] = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "YOBb0bGVry+UES+nGXpciCiQWIQM58bflpN1a8YlD1U=",
    ),
    (
        "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
        "DqN8JD9gl0sNVMay12zs4/THQkkszkjq+B81eTHW1p4=",
    ),
    (
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "C39Et+UvpHx3nYDVEInu8bvDrYDK4S7Ooat8qcBfyRo=",
    ),
    (
        "7D3F0E2A9B1C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6",
        "JzCsMXM0W1/QuR4p+aMrt3IrrpvHjrvKC+rAzJRfWtk=",
    ),
];

const VALID: &str = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";

fn uri(value: &str) -> String {
    format!("{REQUEST_URI_PREFIX}{value}")
}

fn is_uppercase_hex(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn assert_refused(request_uri: &str) {
    match ReferenceValue::from_request_uri(request_uri) {
        Err(err) => {
            let reason = err.to_string();
            // The reason is about the shape of the input and never echoes the secret part.
            for secret in [
                &VALID[..16],
                &VALID.to_lowercase()[..16],
                "AAAAAAAAAAAAAAAA",
            ] {
                assert!(!reason.contains(secret), "{reason}");
            }
        }
        other => panic!("{request_uri:?} must be refused, got {other:?}"),
    }
}

#[test]
fn hash_matches_independently_computed_vectors() {
    for (value, expected) in VECTORS {
        let parsed = ReferenceValue::from_request_uri(&uri(value)).unwrap();
        assert_eq!(parsed.hash(), expected, "hash of {value}");
    }
}

#[test]
fn hash_is_padded_standard_base64_of_44_characters() {
    for _ in 0..100 {
        let hash = ReferenceValue::generate().hash();
        assert_eq!(hash.len(), 44);
        assert!(hash.ends_with('='), "{hash}");
        assert!(
            hash[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "{hash}"
        );
    }
}

#[test]
fn generated_values_are_64_uppercase_hex_characters() {
    for _ in 0..100 {
        let value = ReferenceValue::generate();
        assert_eq!(value.as_str().len(), 64);
        assert!(is_uppercase_hex(value.as_str()), "{}", value.as_str());
    }
}

#[test]
fn generated_values_do_not_repeat() {
    let values: HashSet<String> = (0..1_000)
        .map(|_| ReferenceValue::generate().as_str().to_owned())
        .collect();
    assert_eq!(values.len(), 1_000);
}

#[test]
fn generated_values_use_every_hex_digit() {
    // 100 values hold 6,400 digits: a digit missing from all of them would mean a broken
    // encoder, not bad luck (probability about 16 * (15/16)^6400).
    let digits: HashSet<char> = (0..100)
        .flat_map(|_| {
            ReferenceValue::generate()
                .as_str()
                .chars()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(digits.len(), 16, "{digits:?}");
}

#[test]
fn request_uri_is_the_prefix_followed_by_the_value() {
    let value = ReferenceValue::generate();
    let request_uri = value.request_uri();
    assert_eq!(
        request_uri,
        format!("urn:ietf:params:oauth:request_uri:{}", value.as_str())
    );
    assert_eq!(REQUEST_URI_PREFIX, "urn:ietf:params:oauth:request_uri:");
}

#[test]
fn parsing_the_request_uri_gives_back_the_same_value_and_hash() {
    let value = ReferenceValue::generate();
    let parsed = ReferenceValue::from_request_uri(&value.request_uri()).unwrap();
    assert_eq!(parsed.as_str(), value.as_str());
    assert_eq!(parsed.hash(), value.hash());
    assert_eq!(parsed.request_uri(), value.request_uri());
}

#[test]
fn parsing_refuses_a_wrong_or_missing_prefix() {
    for bad in [
        String::new(),
        VALID.to_owned(),
        REQUEST_URI_PREFIX.to_owned(),
        format!("URN:IETF:PARAMS:OAUTH:REQUEST_URI:{VALID}"),
        format!("urn:ietf:params:oauth:request-uri:{VALID}"),
        format!("urn:ietf:params:oauth:request_uri{VALID}"),
        format!("urn:example:request_uri:{VALID}"),
        format!("https://server.example.com/request_uri/{VALID}"),
    ] {
        assert_refused(&bad);
    }
}

#[test]
fn parsing_refuses_a_value_of_the_wrong_length() {
    for len in [0, 1, 32, 63, 65, 128] {
        assert_refused(&uri(&"A".repeat(len)));
    }
}

#[test]
fn parsing_refuses_anything_but_uppercase_hex() {
    let lowercase = VALID.to_lowercase();
    let with_g = format!("{}G", &VALID[..63]);
    let with_dash = format!("{}-", &VALID[..63]);
    let base64ish = format!("{}+/", &VALID[..62]);
    // 62 ASCII characters plus one two-byte character: 64 bytes, but not hex.
    let non_ascii = format!("{}é", &VALID[..62]);
    let with_nul = format!("{}\0", &VALID[..63]);
    for bad in [
        &lowercase, &with_g, &with_dash, &base64ish, &non_ascii, &with_nul,
    ] {
        assert_refused(&uri(bad));
    }
}

#[test]
fn parsing_tolerates_no_whitespace() {
    for bad in [
        format!(" {}", uri(VALID)),
        format!("{} ", uri(VALID)),
        format!("{}\n", uri(VALID)),
        format!("{}\t", uri(VALID)),
        uri(&format!("{} ", &VALID[..63])),
        uri(&format!(" {}", &VALID[..63])),
        format!("urn:ietf:params:oauth:request_uri: {}", &VALID[..63]),
    ] {
        assert_refused(&bad);
    }
}

#[test]
fn debug_never_shows_the_value() {
    let value = ReferenceValue::generate();
    let shown = format!("{value:?} {value:#?}");
    assert!(!shown.contains(value.as_str()), "{shown}");
    assert!(!shown.contains(&value.as_str()[..8]), "{shown}");
    assert_eq!(format!("{value:?}"), "ReferenceValue(<redacted>)");
}

#[tokio::test]
async fn the_hash_is_a_key_every_store_accepts() {
    let store = MemoryStore::new();
    let value = ReferenceValue::generate();
    let request = PushedAuthorizationRequest::new(
        value.hash(),
        chrono::Utc::now() + chrono::Duration::seconds(60),
        "client_id=s6BhdRkqt3",
    );
    store.store(&request).await.unwrap();
    let parsed = ReferenceValue::from_request_uri(&value.request_uri()).unwrap();
    assert_eq!(
        store.get_by_hash(&parsed.hash()).await.unwrap(),
        Some(request)
    );
}
