//! The test support itself: where nothing answers at `DATABASE_URL`, a test binary runs on a
//! throwaway cluster of its own, which is gone once the binary has exited.

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use par_store::{PushedAuthorizationRequest, PushedAuthorizationRequestStore};
use std::process::Command;

/// An ordinary test on whatever server the support picked; the test below runs it again in a
/// child process where nothing answers at `DATABASE_URL`.
#[tokio::test]
async fn a_test_database_stores_and_reads_a_request() {
    let db = TestDb::new().await;
    let request =
        PushedAuthorizationRequest::new("h", Utc::now() + Duration::seconds(60), "client_id=a");
    db.store().store(&request).await.unwrap();
    assert!(db.store().get_by_hash("h").await.unwrap().is_some());
}

#[test]
fn without_a_server_the_binary_runs_on_a_throwaway_cluster_and_removes_it() {
    let test =
        "test_support::without_a_server_the_binary_runs_on_a_throwaway_cluster_and_removes_it";
    if common::require_server_bindir(test).is_none() {
        return;
    }
    // A port where nothing listens: bound a moment ago, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_test_database_stores_and_reads_a_request"])
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    let line = stderr
        .lines()
        .find(|line| line.contains("throwaway PostgreSQL cluster"))
        .unwrap_or_else(|| panic!("one line says so: {stderr}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let dir = line
        .split(['(', ')'])
        .find(|part| part.contains("par-store-cluster-"))
        .unwrap_or_else(|| panic!("the line names the directory: {line}"));
    // The watchdog polls once a second, then stops the server and removes the directory.
    let gone = (0..30).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        !std::path::Path::new(dir).exists()
    });
    assert!(gone, "{dir} is still there 15 s after the binary exited");
}
