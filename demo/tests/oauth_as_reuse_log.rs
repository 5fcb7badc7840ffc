//! The oauth-as adapter's record of a reused `request_uri`, in a test binary of its own: it
//! reads the log through a subscriber of its thread, and a callsite that other tests of a
//! shared binary hit on their threads (oauth-as's conformance suite takes requests twice) could
//! miss it.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::TestDb;
use oauth_as::store::{Storage, WriteOutcome};
use oauth_as::MemoryStorage;
use par_store::oauth_as::OauthAsStorage;
use support::oauth_as_records::{client, key_of, record};

/// oauth-as's trait cannot report a reuse: the adapter records it, as a warning that names the
/// start of the row's hash and when it was consumed, never the `request_uri`.
#[tokio::test]
async fn a_second_take_is_recorded_as_a_reuse() {
    let (logs, _logging) = support::capture_logs();
    let db = TestDb::new().await;
    let storage = OauthAsStorage::new(db.store(), MemoryStorage::new());
    storage.put_client(client("client-a")).await.unwrap();
    let uri = "urn:ietf:params:oauth:request_uri:taken-twice";
    let put = storage
        .put_pushed_authorization_request(record(uri, "client-a"))
        .await
        .unwrap();
    assert_eq!(put, WriteOutcome::Applied);
    assert!(storage
        .take_pushed_authorization_request(uri)
        .await
        .unwrap()
        .is_some());
    assert!(!logs.text().contains("presented again"), "{}", logs.text());
    assert!(storage
        .take_pushed_authorization_request(uri)
        .await
        .unwrap()
        .is_none());
    // An unknown one is not a reuse.
    assert!(storage
        .take_pushed_authorization_request("urn:ietf:params:oauth:request_uri:unknown")
        .await
        .unwrap()
        .is_none());
    let logs = logs.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("presented again after it was consumed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    let key = key_of(uri);
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains(&key[..6]), "{}", warnings[0]);
    assert!(warnings[0].contains("consumed_at="), "{}", warnings[0]);
    assert!(!logs.contains("taken-twice"), "the request_uri is logged");
    assert!(!logs.contains(&key), "the whole hash is logged");
}
