//! The execution policy (src/execution.rs), driven against a scripted fake PostgreSQL
//! (tests/common/fake_backend.rs): for each way a connection can fail under a statement, is
//! the statement run again, and what does the caller get? The fake counts the executions.
//!
//! The rules: a write (`store`, `consume_by_hash`, `delete_by_client_id`) runs again only
//! when PostgreSQL itself said, at FATAL and before CommandComplete, that it ended the session
//! (57P01, 57P02, 57P03, 57P05, 55000); `store_or_replace` never runs again; reads and cleanup
//! batches run again after any connection loss; a read-only server (25006) is `Unavailable`
//! and its connection is not reused.

mod common;

use chrono::Utc;
use common::fake_backend::{FakeBackend, Fault, Kind};
use common::hash;
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, PushedAuthorizationRequestStoreExt, StoreError,
};
use std::time::Duration;

/// One connection, never pinged: each operation runs on the connection the previous one
/// used (not a fresh one), so that a scripted fault meets a pooled connection.
fn options() -> PostgresStoreOptions {
    PostgresStoreOptions::new()
        .max_connections(1)
        .ping_idle_after(None)
        .acquire_timeout(Duration::from_secs(2))
        .operation_timeout(Some(Duration::from_secs(5)))
}

async fn store_on(fake: &FakeBackend, options: PostgresStoreOptions) -> PostgresStore {
    options
        .connect_with(fake.options())
        .await
        .expect("connect to the fake backend")
}

fn request(n: u32) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash(n),
        Utc::now() + chrono::Duration::seconds(60),
        "scope=openid",
    )
}

/// The SQLSTATEs PostgreSQL sends at FATAL when it ends a session before a statement
/// completed.
const SERVER_ABORTS: [&str; 5] = ["57P01", "57P02", "57P03", "57P05", "55000"];

/// What a proxy (PgBouncer: `query_timeout`, "server conn crashed?") sends at FATAL, possibly
/// after the server committed.
const PROXY_FATALS: [&str; 2] = ["08P01", "08006"];

#[tokio::test]
async fn store_runs_again_once_when_the_server_ended_the_session_before_completion() {
    for code in SERVER_ABORTS {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options()).await;
        fake.fail_next(Kind::Insert, Fault::FatalBeforeComplete(code));
        let result = store.store(&request(1)).await;
        assert!(result.is_ok(), "{code}: {result:?}");
        assert_eq!(fake.executions(Kind::Insert), 2, "{code}");
    }
}

#[tokio::test]
async fn consume_runs_again_once_when_the_server_ended_the_session_before_completion() {
    for code in SERVER_ABORTS {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options()).await;
        fake.fail_next(Kind::Consume, Fault::FatalBeforeComplete(code));
        let consumed = store.consume_by_hash(&hash(1)).await;
        assert!(matches!(consumed, Ok(Some(_))), "{code}: {consumed:?}");
        assert_eq!(fake.executions(Kind::Consume), 2, "{code}");
    }
}

#[tokio::test]
async fn delete_by_client_id_runs_again_when_the_server_ended_the_session_before_completion() {
    let fake = FakeBackend::start().await;
    let store = store_on(&fake, options()).await;
    fake.fail_next(Kind::DeleteByClient, Fault::FatalBeforeComplete("57P01"));
    let deleted = store.delete_by_client_id("client").await;
    assert_eq!(deleted.ok(), Some(1));
    assert_eq!(fake.executions(Kind::DeleteByClient), 2);
}

/// Asserts that the next `kind` operation, failed by `fault`, is executed once and fails.
async fn ran_once_and_failed(kind: Kind, fault: Fault) -> StoreError {
    let fake = FakeBackend::start().await;
    let store = store_on(&fake, options()).await;
    fake.fail_next(kind, fault);
    let error = match kind {
        Kind::Insert => store.store(&request(1)).await.err(),
        Kind::Consume => store.consume_by_hash(&hash(1)).await.err(),
        Kind::Upsert => store.store_or_replace(&request(1)).await.err(),
        Kind::DeleteByClient => store.delete_by_client_id("client").await.err(),
        other => unreachable!("not a write: {other:?}"),
    };
    assert_eq!(
        fake.executions(kind),
        1,
        "{kind:?} under {fault:?} ran again"
    );
    error.unwrap_or_else(|| panic!("{kind:?} under {fault:?} answered Ok"))
}

#[tokio::test]
async fn writes_do_not_run_again_after_a_fatal_that_follows_command_complete() {
    for kind in [Kind::Insert, Kind::Consume, Kind::DeleteByClient] {
        let error = ran_once_and_failed(kind, Fault::FatalAfterComplete("57P01")).await;
        assert!(error.is_transient(), "{kind:?}: {error:?}");
    }
}

#[tokio::test]
async fn writes_do_not_run_again_after_a_proxys_fatal_before_command_complete() {
    for code in PROXY_FATALS {
        for kind in [Kind::Insert, Kind::Consume, Kind::DeleteByClient] {
            let error = ran_once_and_failed(kind, Fault::FatalBeforeComplete(code)).await;
            assert!(error.is_transient(), "{kind:?} {code}: {error:?}");
        }
    }
}

#[tokio::test]
async fn writes_do_not_run_again_after_eof_following_command_complete() {
    for kind in [Kind::Insert, Kind::Consume, Kind::DeleteByClient] {
        let error = ran_once_and_failed(kind, Fault::EofAfterComplete).await;
        assert!(error.is_transient(), "{kind:?}: {error:?}");
    }
}

#[tokio::test]
async fn writes_do_not_run_again_when_the_reply_is_lost_after_sync() {
    for kind in [Kind::Insert, Kind::Consume, Kind::DeleteByClient] {
        let error = ran_once_and_failed(kind, Fault::EofAfterSync).await;
        assert!(error.is_transient(), "{kind:?}: {error:?}");
    }
}

#[tokio::test]
async fn store_or_replace_never_runs_again() {
    for fault in [
        Fault::FatalBeforeComplete("57P01"),
        Fault::FatalBeforeComplete("08P01"),
        Fault::FatalAfterComplete("57P01"),
        Fault::EofAfterComplete,
        Fault::EofAfterSync,
    ] {
        let error = ran_once_and_failed(Kind::Upsert, fault).await;
        assert!(error.is_transient(), "{fault:?}: {error:?}");
    }
}

#[tokio::test]
async fn reads_run_again_after_any_connection_loss() {
    for fault in [
        Fault::FatalBeforeComplete("08P01"),
        Fault::FatalAfterComplete("57P01"),
        Fault::EofAfterComplete,
        Fault::EofAfterSync,
    ] {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options()).await;
        fake.fail_next(Kind::SelectLive, fault);
        let found = store.get_by_hash(&hash(1)).await;
        assert!(matches!(found, Ok(Some(_))), "{fault:?}: {found:?}");
        assert_eq!(fake.executions(Kind::SelectLive), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn cleanup_batches_run_again_after_any_connection_loss() {
    for fault in [Fault::FatalBeforeComplete("08P01"), Fault::EofAfterSync] {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options()).await;
        fake.fail_next(Kind::DeleteExpired, fault);
        let removed = store.delete_expired().await;
        assert_eq!(removed.ok(), Some(0), "{fault:?}");
        assert_eq!(fake.executions(Kind::DeleteExpired), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn a_read_only_server_is_unavailable_and_its_connection_is_not_reused() {
    for pooler_mode in [false, true] {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options().pooler_mode(pooler_mode)).await;
        assert_eq!(fake.connections(), 1);
        fake.fail_next(Kind::Insert, Fault::Error("25006"));
        let error = store.store(&request(1)).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Unavailable { .. }),
            "pooler mode {pooler_mode}: {error:?}"
        );
        assert_eq!(fake.executions(Kind::Insert), 1, "not run again");
        store.get_by_hash(&hash(1)).await.expect("a read after");
        assert_eq!(
            fake.connections(),
            2,
            "pooler mode {pooler_mode}: the read-only server's connection was reused"
        );
    }
}

#[tokio::test]
async fn pooler_mode_rolls_back_a_failed_statement_and_keeps_its_connection() {
    let fake = FakeBackend::start().await;
    let store = store_on(&fake, options().pooler_mode(true)).await;
    fake.fail_next(Kind::Consume, Fault::Error("57014"));
    let error = store.consume_by_hash(&hash(1)).await.unwrap_err();
    assert!(matches!(error, StoreError::Timeout { .. }), "{error:?}");
    let queries = fake.simple_queries();
    assert_eq!(
        queries.last().map(String::as_str),
        Some("ROLLBACK"),
        "{queries:?}"
    );
    store.get_by_hash(&hash(1)).await.expect("a read after");
    assert_eq!(fake.connections(), 1, "the connection was closed");
}

#[tokio::test]
async fn pooler_mode_runs_writes_again_after_any_loss_before_commit() {
    for fault in [
        Fault::FatalBeforeComplete("08P01"),
        Fault::EofAfterComplete,
        Fault::EofAfterSync,
    ] {
        for kind in [Kind::Insert, Kind::Consume, Kind::DeleteByClient] {
            let fake = FakeBackend::start().await;
            let store = store_on(&fake, options().pooler_mode(true)).await;
            fake.fail_next(kind, fault);
            let ok = match kind {
                Kind::Insert => store.store(&request(1)).await.is_ok(),
                Kind::Consume => matches!(store.consume_by_hash(&hash(1)).await, Ok(Some(_))),
                _ => store.delete_by_client_id("client").await.is_ok(),
            };
            assert!(ok, "{kind:?} under {fault:?}");
            assert_eq!(fake.executions(kind), 2, "{kind:?} under {fault:?}");
        }
    }
}

#[tokio::test]
async fn pooler_mode_never_runs_store_or_replace_again() {
    let fake = FakeBackend::start().await;
    let store = store_on(&fake, options().pooler_mode(true)).await;
    fake.fail_next(Kind::Upsert, Fault::EofAfterSync);
    let error = store.store_or_replace(&request(1)).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(fake.executions(Kind::Upsert), 1);
}

#[tokio::test]
async fn pooler_mode_does_not_run_a_write_again_when_commit_fails() {
    for fault in [Fault::FatalBeforeComplete("57P01"), Fault::EofAfterSync] {
        let fake = FakeBackend::start().await;
        let store = store_on(&fake, options().pooler_mode(true)).await;
        // The first COMMIT is `connect_with`'s `SELECT 1`.
        assert_eq!(fake.executions(Kind::Commit), 1);
        fake.fail_next(Kind::Commit, fault);
        let error = store.consume_by_hash(&hash(1)).await.unwrap_err();
        assert!(error.is_transient(), "{fault:?}: {error:?}");
        assert_eq!(fake.executions(Kind::Consume), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn a_read_only_server_closes_the_idle_connections_of_the_stores_own_pool() {
    let fake = FakeBackend::start().await;
    let store = store_on(&fake, options().max_connections(2)).await;
    // Two operations at once: the pool holds two connections.
    let (one, two) = (hash(1), hash(2));
    let (first, second) = tokio::join!(store.get_by_hash(&one), store.get_by_hash(&two));
    first.expect("get");
    second.expect("get");
    assert_eq!(fake.connections(), 2);
    fake.fail_next(Kind::Insert, Fault::Error("25006"));
    store.store(&request(1)).await.unwrap_err();
    // The idle sibling is not reused: the next operations open one new connection.
    store.get_by_hash(&hash(1)).await.expect("get");
    store.get_by_hash(&hash(1)).await.expect("get");
    assert_eq!(fake.connections(), 3, "the idle sibling was reused");
}
