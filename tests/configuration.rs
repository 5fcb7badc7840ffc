//! Configuration mistakes are configuration errors, not outages: a URL the store cannot
//! serve is refused at `connect` with [`StoreError::InvalidDatabaseUrl`] (not transient: a
//! server must not answer 503 and retry forever) that names the fix, before any connection
//! is made. Each test points the URL at a listener of its own and checks that nothing
//! connected to it.
//!
//! TLS without the `rustls` feature: CI builds with `--all-features`, where TLS is there and
//! the URL is served. The decision itself is unit-tested with the build's TLS as a
//! parameter (`src/hosts.rs`, `tls_is_refused_only_where_it_is_required_and_missing`); the
//! test here checks what the build at hand does end to end, whichever it is (run
//! `cargo test --test configuration` without features for the refusal).

use par_store::{PostgresStore, PostgresStoreOptions, StoreError};
use std::net::TcpListener;

/// A listener on a loopback port, and whether anything connected to it so far.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Listener(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn contacted(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(err) => panic!("accept: {err}"),
        }
    }
}

#[tokio::test]
async fn another_scheme_is_refused_naming_it() {
    let listener = Listener::new();
    for scheme in ["mysql", "mariadb", "redis", "http"] {
        let url = format!("{scheme}://x:hunter2@127.0.0.1:{}/x", listener.port());
        let err = PostgresStore::connect(&url).await.unwrap_err();
        let StoreError::InvalidDatabaseUrl(invalid) = &err else {
            panic!("{scheme}: {err:?}")
        };
        assert!(!err.is_transient());
        assert!(invalid.reason().contains(&format!("`{scheme}`")), "{err}");
        assert!(err.to_string().contains("postgres://"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Through the options, the same.
        let err = PostgresStoreOptions::new().connect(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidDatabaseUrl(_)), "{err:?}");
    }
    assert!(!listener.contacted(), "a connection was attempted");
    // Both of libpq's schemes are PostgreSQL's (here: nothing answers the handshake in
    // time, which is an outage, not a configuration error).
    for scheme in ["postgres", "postgresql", "PostgreSQL"] {
        let url = format!(
            "{scheme}://x@127.0.0.1:{}/x?sslmode=disable",
            listener.port()
        );
        let err = PostgresStoreOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(300))
            .connect(&url)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{scheme}: {err:?}"
        );
        assert!(
            listener.contacted(),
            "{scheme}: no connection was attempted"
        );
    }
}

#[tokio::test]
async fn a_tls_url_without_tls_in_the_build_is_refused_naming_the_feature() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let listener = Listener::new();
        let url = format!(
            "postgres://x:hunter2@127.0.0.1:{}/x?sslmode={mode}",
            listener.port()
        );
        let result = PostgresStoreOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(300))
            .connect(&url)
            .await;
        let err = result.unwrap_err();
        if cfg!(feature = "rustls") {
            // TLS is built in: the URL is served (nothing answers here: an outage).
            assert!(
                matches!(err, StoreError::Unavailable { .. }),
                "{mode}: {err:?}"
            );
            assert!(listener.contacted());
        } else {
            let StoreError::InvalidDatabaseUrl(invalid) = &err else {
                panic!("{mode}: {err:?}")
            };
            assert!(!err.is_transient());
            assert!(invalid.reason().contains("`rustls` cargo feature"), "{err}");
            assert!(
                invalid.reason().contains(&format!("sslmode={mode}")),
                "{err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!listener.contacted(), "{mode}: a connection was attempted");
            // connect_with and connect_lazy_with refuse the same options.
            let options: par_store::sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let err = PostgresStoreOptions::new()
                .connect_with(options.clone())
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidDatabaseUrl(_)), "{err:?}");
            let lazy = PostgresStoreOptions::new().connect_lazy_with(options);
            let err = par_store::PushedAuthorizationRequestStore::get_by_hash(&lazy, "h")
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidDatabaseUrl(_)), "{err:?}");
            assert!(!listener.contacted(), "{mode}: a connection was attempted");
        }
    }
}
