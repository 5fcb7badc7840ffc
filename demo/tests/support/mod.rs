//! Serving an example server's router on 127.0.0.1 for an end-to-end test.
#![allow(dead_code)] // each test binary uses a different part of this module

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
