//! Serving an example server's router on 127.0.0.1 for an end-to-end test.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod oauth_as_records;

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A free loopback address to serve on, and its base URL (known before the router is built:
/// the oauth-as server names itself by it).
pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

/// A router being served, with a client that does not follow redirects; stopped when dropped.
pub struct Serving {
    pub base: String,
    pub http: reqwest::Client,
    task: JoinHandle<()>,
}

impl Serving {
    pub fn start(listener: TcpListener, base: String, router: axum::Router) -> Serving {
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Serving { base, http, task }
    }

    /// `GET /authorize` with `client_id` and `request_uri`, as a browser arrives there.
    pub async fn authorize(&self, client_id: &str, request_uri: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/authorize", self.base))
            .query(&[("client_id", client_id), ("request_uri", request_uri)])
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Log lines written while a test runs on its own thread (a current-thread runtime: the
/// server's tasks run on it too).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Captures the log lines of the current thread at INFO and above, until the guard drops.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish(),
    );
    // Callsites first hit on another test's thread, with no subscriber there, may have
    // cached "never": make them ask again, this subscriber included.
    tracing::callsite::rebuild_interest_cache();
    (logs, guard)
}
