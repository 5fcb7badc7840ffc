//! Multi-host connection strings in the store's own pool, against real servers: libpq's
//! `postgres://h1:p1,h2:p2/db?target_session_attrs=...` (hosts tried in order, a connection
//! kept only where the server fits), and a store that follows the primary when the roles of
//! two servers flip under it.
//!
//! Two clusters of the test's own stand for a primary and a demoted one: a server is made
//! read-only with `ALTER SYSTEM SET default_transaction_read_only = on` and a reload, which
//! reaches its open sessions too (their next statement meets SQLSTATE 25006), as a primary
//! demoted by an HA manager does. No replication is needed for what is tested here: which
//! server the store writes to, and what an operation that met the demoted one reports.

mod common;

use chrono::Utc;
use common::cluster::TempCluster;
use common::TestDb;
use par_store::sqlx::postgres::PgSslMode;
use par_store::sqlx::{self, Connection, PgConnection};
use par_store::{
    PostgresStoreOptions, PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError,
    TargetSessionAttrs,
};
use std::time::Duration;

fn request(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash,
        Utc::now() + chrono::Duration::seconds(300),
        "parameters",
    )
}

/// A loopback port nothing listens on (bound, then released): a connection to it is refused
/// at once, like a server that is down.
fn closed_port() -> u16 {
    common::cluster::free_port()
}

async fn admin(cluster: &TempCluster) -> PgConnection {
    PgConnection::connect_with(&cluster.connect_options().ssl_mode(PgSslMode::Disable))
        .await
        .expect("admin connection to a temporary cluster")
}

/// Makes a server's sessions read-only (`true`) or writable, its open sessions included
/// (from their next statement), and waits until a new session sees it. The postmaster
/// signals its children in the same step in which it rereads the configuration, so once a
/// new session sees the value, every open session has been told.
async fn set_read_only(cluster: &TempCluster, read_only: bool) {
    let mut conn = admin(cluster).await;
    let statement = if read_only {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    sqlx::raw_sql("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let expected = if read_only { "on" } else { "off" };
    for _ in 0..200 {
        let mut probe = admin(cluster).await;
        let seen: String = sqlx::query_scalar("SHOW default_transaction_read_only")
            .fetch_one(&mut probe)
            .await
            .unwrap();
        let _ = probe.close().await;
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("default_transaction_read_only never became {expected}");
}

/// Whether the request is stored on this server (read directly, not through the store).
async fn stored_on(cluster: &TempCluster, hash: &str) -> bool {
    let mut conn = admin(cluster).await;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE reference_value_hash = $1",
    )
    .bind(hash)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    count == 1
}

/// Two migrated clusters; the first is read-only when `first_read_only`.
async fn two_servers(first_read_only: bool) -> (TempCluster, TempCluster) {
    let (a, b) = tokio::join!(TempCluster::start_new(), TempCluster::start_new());
    for cluster in [&a, &b] {
        let store = PostgresStoreOptions::new()
            .connect_with(cluster.connect_options().ssl_mode(PgSslMode::Disable))
            .await
            .expect("connect to a temporary cluster");
        store.migrate().await.expect("migrate");
        store.close().await;
    }
    if first_read_only {
        set_read_only(&a, true).await;
    }
    (a, b)
}

/// `postgres://postgres@127.0.0.1:<a>,127.0.0.1:<b>/postgres?...&sslmode=disable`.
fn url(ports: [u16; 2], query: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?sslmode=disable{query}",
        ports[0], ports[1]
    )
}

#[tokio::test]
async fn the_first_host_down_the_second_is_used() {
    let db = TestDb::new().await;
    let (host, port) = (db.options.get_host(), db.options.get_port());
    let down = closed_port();

    // As a URL, libpq's way.
    let store = PostgresStoreOptions::new()
        .connect(&format!(
            "postgres://{}@{host}:{down},{host}:{port}/{}?sslmode=disable",
            db.options.get_username(),
            db.name
        ))
        .await
        .expect("the second host answers");
    store.store(&request("url")).await.unwrap();
    assert!(store.get_by_hash("url").await.unwrap().is_some());
    store.close().await;

    // Through the options, on the test database's own connect options.
    let store = PostgresStoreOptions::new()
        .hosts([(host.to_owned(), down), (host.to_owned(), port)])
        .connect_with(db.options.clone().ssl_mode(PgSslMode::Disable))
        .await
        .expect("the second host answers");
    store.store(&request("options")).await.unwrap();
    store.close().await;
    assert_eq!(db.row_count().await, 2);

    // Every host down: one transient error that names each of them.
    let other_down = closed_port();
    let err = PostgresStoreOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(&format!(
            "postgres://postgres@127.0.0.1:{down},127.0.0.1:{other_down}/postgres?sslmode=disable"
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains(&format!("127.0.0.1:{down}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{other_down}")), "{text}");
}

#[tokio::test]
async fn read_write_picks_the_writable_server() {
    if common::require_server_bindir("multi_host::read_write_picks_the_writable_server").is_none() {
        return;
    }
    let (a, b) = two_servers(true).await;
    let ports = [a.port(), b.port()];

    // `any` (the default) keeps the first server that answers: the read-only one, which
    // refuses the write (25006: transient, the primary is elsewhere).
    let store = PostgresStoreOptions::new()
        .connect(&url(ports, ""))
        .await
        .unwrap();
    let err = store.store(&request("any")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    store.close().await;

    // `read-write` skips it, in the URL or through the options.
    let store = PostgresStoreOptions::new()
        .connect(&url(ports, "&target_session_attrs=read-write"))
        .await
        .unwrap();
    store.store(&request("url")).await.unwrap();
    store.close().await;
    let store = PostgresStoreOptions::new()
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .connect(&url(ports, ""))
        .await
        .unwrap();
    store.store(&request("options")).await.unwrap();
    // migrate() goes where the store writes, too.
    store.migrate().await.unwrap();
    store.close().await;
    for hash in ["url", "options"] {
        assert!(
            stored_on(&b, hash).await,
            "{hash} is on the writable server"
        );
        assert!(!stored_on(&a, hash).await);
    }

    // `primary` keeps both (neither is in recovery): the first.
    let store = PostgresStoreOptions::new()
        .connect(&url(ports, "&target_session_attrs=primary"))
        .await
        .unwrap();
    assert!(store.store(&request("primary")).await.is_err());
    store.close().await;

    // No writable server at all: connect fails, transient, saying why each was passed over.
    set_read_only(&b, true).await;
    let err = PostgresStoreOptions::new()
        .connect(&url(ports, "&target_session_attrs=read-write"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let text = std::error::Error::source(&err).unwrap().to_string();
    assert!(text.contains("not read-write"), "{text}");
}

#[tokio::test]
async fn the_store_follows_the_primary_when_the_roles_flip() {
    if common::require_server_bindir(
        "multi_host::the_store_follows_the_primary_when_the_roles_flip",
    )
    .is_none()
    {
        return;
    }
    // The first server is the primary, the second read-only.
    let (a, b) = two_servers(false).await;
    set_read_only(&b, true).await;
    let store = PostgresStoreOptions::new()
        .max_connections(4)
        // No ping before use: what the store does about a demoted server is shown by the
        // statements themselves (the recycle check has a test of its own below).
        .ping_idle_after(None)
        .connect(&url(
            [a.port(), b.port()],
            "&target_session_attrs=read-write",
        ))
        .await
        .unwrap();
    // Several pooled connections, all to the primary.
    let stored = futures::future::join_all((0..4).map(|i| {
        let store = store.clone();
        async move { store.store(&request(&format!("before-{i}"))).await }
    }))
    .await;
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    assert!(stored_on(&a, "before-0").await);

    // The roles flip under the live store.
    set_read_only(&a, true).await;
    set_read_only(&b, false).await;

    // The next write meets the demoted primary on a pooled connection: 25006, reported as
    // Unavailable (transient), never Database, and not run again on another connection
    // (which would have reached the new primary and stored it there).
    let err = store.store(&request("met-25006")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("read-only"), "{source}");
    assert!(!stored_on(&a, "met-25006").await);
    assert!(!stored_on(&b, "met-25006").await, "the write was run again");

    // Its connection and its idle siblings were closed: the next operations connect anew,
    // pass over the demoted server and reach the new primary.
    for i in 0..4 {
        store
            .store(&request(&format!("after-{i}")))
            .await
            .unwrap_or_else(|err| panic!("write {i} after the flip: {err:?}"));
        assert!(stored_on(&b, &format!("after-{i}")).await);
        assert!(!stored_on(&a, &format!("after-{i}")).await);
    }
    assert!(store.consume_by_hash("after-0").await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn an_idle_connection_to_a_demoted_primary_is_replaced_before_use() {
    if common::require_server_bindir(
        "multi_host::an_idle_connection_to_a_demoted_primary_is_replaced_before_use",
    )
    .is_none()
    {
        return;
    }
    let (a, b) = two_servers(false).await;
    set_read_only(&b, true).await;
    // Every checkout checks the server first (as after `ping_idle_after` of idleness).
    let store = PostgresStoreOptions::new()
        .ping_idle_after(Some(Duration::ZERO))
        .connect(&url(
            [a.port(), b.port()],
            "&target_session_attrs=read-write",
        ))
        .await
        .unwrap();
    store.store(&request("on-a")).await.unwrap();
    set_read_only(&a, true).await;
    set_read_only(&b, false).await;
    // A read would succeed on the demoted server (and see its data, stale after a real
    // failover); the check before use finds it read-only and the read goes to the new
    // primary, which does not have the request.
    assert_eq!(store.get_by_hash("on-a").await.unwrap(), None);
    store.store(&request("on-b")).await.unwrap();
    assert!(stored_on(&b, "on-b").await);
    store.close().await;
}

#[tokio::test]
async fn sessions_ended_on_the_old_primary_reconnect_to_the_new_one() {
    if common::require_server_bindir(
        "multi_host::sessions_ended_on_the_old_primary_reconnect_to_the_new_one",
    )
    .is_none()
    {
        return;
    }
    let (a, b) = two_servers(false).await;
    set_read_only(&b, true).await;
    let store = PostgresStoreOptions::new()
        .max_connections(2)
        .ping_idle_after(None)
        .connect(&url(
            [a.port(), b.port()],
            "&target_session_attrs=read-write",
        ))
        .await
        .unwrap();
    store.store(&request("before")).await.unwrap();
    set_read_only(&a, true).await;
    set_read_only(&b, false).await;
    // An HA manager ends the demoted server's sessions.
    let mut conn = admin(&a).await;
    sqlx::raw_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    // PostgreSQL's own FATAL 57P01 proves the write did not commit: it runs once more, on
    // a new connection, which goes to the new primary.
    store.store(&request("after")).await.unwrap();
    assert!(stored_on(&b, "after").await);
    assert!(!stored_on(&a, "after").await);
    store.close().await;
}

/// The store's sessions (by `application_name`) on a server.
async fn sessions_on(cluster: &TempCluster, application_name: &str) -> i64 {
    let mut conn = admin(cluster).await;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(application_name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    count
}

/// Whether the store keeps sessions on `kept` and none on `passed_over`. A connection
/// passed over was closed, but its server process may take a moment to leave
/// `pg_stat_activity`: waited for, up to a generous bound.
async fn connected_to(kept: &TempCluster, passed_over: &TempCluster, application_name: &str) {
    assert!(
        sessions_on(kept, application_name).await > 0,
        "{application_name}: no session where expected"
    );
    for _ in 0..400 {
        if sessions_on(passed_over, application_name).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{application_name}: a session stayed on the server passed over");
}

#[tokio::test]
async fn primary_standby_and_prefer_standby_on_a_real_standby() {
    if common::require_server_bindir(
        "multi_host::primary_standby_and_prefer_standby_on_a_real_standby",
    )
    .is_none()
    {
        return;
    }
    let primary = TempCluster::start_new().await;
    let store = PostgresStoreOptions::new()
        .connect_with(primary.connect_options().ssl_mode(PgSslMode::Disable))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let standby = TempCluster::standby_of(&primary, primary.address(), "multi_host_standby").await;
    standby.start().await;
    // The standby first, so that `primary` has to pass it over.
    let ports = [standby.port(), primary.port()];
    let connect = |attrs: &'static str| {
        let url = url(
            ports,
            &format!("&application_name=mh_{attrs}&target_session_attrs={attrs}"),
        );
        async move { PostgresStoreOptions::new().connect(&url).await }
    };

    let store = connect("primary").await.unwrap();
    connected_to(&primary, &standby, "mh_primary").await;
    store.store(&request("via-primary")).await.unwrap();
    store.close().await;

    for attrs in ["standby", "prefer-standby", "read-only"] {
        let store = connect(attrs).await.unwrap();
        connected_to(&standby, &primary, &format!("mh_{attrs}")).await;
        // A standby serves reads and refuses writes (25006: Unavailable).
        let err = store.store(&request(attrs)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{attrs}: {err:?}"
        );
        store.close().await;
    }

    // Without a standby, `prefer-standby` takes the primary and `standby` finds nothing.
    standby.stop_fast().await;
    let store = connect("prefer-standby").await.unwrap();
    assert!(sessions_on(&primary, "mh_prefer-standby").await > 0);
    store
        .store(&request("preferred-standby-gone"))
        .await
        .unwrap();
    store.close().await;
    let err = connect("standby").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}
