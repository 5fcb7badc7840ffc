//! The background cleanup job against real PostgreSQL (and memory): removal, many jobs at
//! once under live traffic, an outage, and prompt shutdown.

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use par_store::sqlx::{self, postgres::PgPoolOptions};
use par_store::{
    CleanupJob, CleanupOptions, CleanupStats, MemoryStore, PostgresStore,
    PushedAuthorizationRequest, PushedAuthorizationRequestStore,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

fn fast_options() -> CleanupOptions {
    CleanupOptions::new()
        .interval(StdDuration::from_millis(100))
        .first_run_jitter(false)
        .retry_delay(StdDuration::from_millis(50))
}

/// Inserts `count` rows that expired a minute ago, behind the store's back (the store
/// itself refuses to store an expired request).
async fn insert_expired(db: &TestDb, prefix: &str, count: i64) {
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT $1 || n, now() - interval '1 minute' - n * interval '1 millisecond', 'expired' \
         FROM generate_series(1, $2) AS n",
    )
    .bind(prefix)
    .bind(count)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn expired_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE expires_at <= now()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: StdDuration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return true;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    false
}

async fn shuts_down_within_a_second(job: CleanupJob) {
    let started = Instant::now();
    job.shutdown().await;
    assert!(
        started.elapsed() < StdDuration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

fn live(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(600), "live")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_job_removes_expired_rows_and_keeps_live_ones_postgres() {
    let db = TestDb::new().await;
    let store = db.store();
    insert_expired(&db, "old-", 250).await;
    for n in 0..10 {
        store.store(&live(&format!("live-{n}"))).await.unwrap();
    }
    let job = CleanupJob::spawn(store.clone(), fast_options().batch_size(100));
    assert!(
        eventually(StdDuration::from_secs(10), || async {
            expired_rows(&db).await == 0
        })
        .await
    );
    for n in 0..10 {
        assert!(store
            .get_by_hash(&format!("live-{n}"))
            .await
            .unwrap()
            .is_some());
    }
    let stats = counted_rows_removed(&job, 250).await;
    assert_eq!(stats.rows_removed, 250);
    assert_eq!(stats.failed_passes, 0);
    assert!(stats.batches >= 3, "250 rows in batches of 100: {stats:?}");
    job.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_job_removes_expired_requests_and_keeps_live_ones_memory() {
    let store = MemoryStore::new();
    for n in 0..50 {
        let request = PushedAuthorizationRequest::new(
            format!("old-{n}"),
            Utc::now() + Duration::milliseconds(200),
            "soon expired",
        );
        store.store(&request).await.unwrap();
    }
    for n in 0..10 {
        store.store(&live(&format!("live-{n}"))).await.unwrap();
    }
    let job = CleanupJob::spawn(store.clone(), fast_options().batch_size(20));
    assert!(eventually(StdDuration::from_secs(10), || async { store.len() == 10 }).await);
    for n in 0..10 {
        assert!(store
            .get_by_hash(&format!("live-{n}"))
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(counted_rows_removed(&job, 50).await.rows_removed, 50);
    job.shutdown().await;
}

/// Waits (up to 10 s) until the job's figures count `rows` removed rows: a batch is counted
/// when its statement returns, a moment after its rows are gone from the table.
async fn counted_rows_removed(job: &CleanupJob, rows: u64) -> CleanupStats {
    eventually(StdDuration::from_secs(10), || async {
        job.stats().rows_removed >= rows
    })
    .await;
    job.stats()
}

/// Live traffic: store, get, consume of fresh requests until told to stop. Returns the
/// number of lifecycles; any error fails the test.
fn spawn_traffic(store: PostgresStore, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut lifecycles = 0;
        while !stop.load(Ordering::Relaxed) {
            let hash = format!("traffic-{}", uuid::Uuid::new_v4());
            store
                .store(&live(&hash))
                .await
                .expect("store during cleanup");
            assert!(store
                .get_by_hash(&hash)
                .await
                .expect("get during cleanup")
                .is_some());
            assert!(store
                .consume_by_hash(&hash)
                .await
                .expect("consume during cleanup")
                .is_some());
            lifecycles += 1;
        }
        lifecycles
    })
}

async fn concurrent_jobs_remove_every_row_exactly_once(jobs: usize) {
    const EXPIRED: i64 = 100_000;
    let db = TestDb::with_pool(PgPoolOptions::new().max_connections(12)).await;
    let store = db.store();
    insert_expired(&db, "old-", EXPIRED).await;
    for n in 0..100 {
        store.store(&live(&format!("live-{n}"))).await.unwrap();
    }
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..4)
        .map(|_| spawn_traffic(store.clone(), Arc::clone(&stop_traffic)))
        .collect();

    let started = Instant::now();
    let cleaners: Vec<CleanupJob> = (0..jobs)
        .map(|_| CleanupJob::spawn(store.clone(), fast_options().batch_size(1_000)))
        .collect();
    assert!(
        eventually(StdDuration::from_secs(60), || async {
            expired_rows(&db).await == 0
        })
        .await,
        "expired rows left: {}",
        expired_rows(&db).await
    );
    let elapsed = started.elapsed();
    // Figures are live: each job counts a batch as soon as it returns, so while the jobs still
    // run at most one committed batch per job (1,000 rows) can be missing from them.
    let live: u64 = cleaners.iter().map(|job| job.stats().rows_removed).sum();
    assert!(
        live + jobs as u64 * 1_000 >= EXPIRED as u64,
        "live figures lag by more than one batch per job: {live}"
    );
    stop_traffic.store(true, Ordering::Relaxed);
    let mut lifecycles = 0;
    for task in traffic {
        lifecycles += task.await.unwrap();
    }
    // The batch each job had in flight is counted as soon as it returns.
    eventually(StdDuration::from_secs(10), || async {
        cleaners
            .iter()
            .map(|job| job.stats().rows_removed)
            .sum::<u64>()
            >= EXPIRED as u64
    })
    .await;
    let stats: Vec<CleanupStats> = cleaners.iter().map(CleanupJob::stats).collect();
    for job in cleaners {
        job.shutdown().await;
    }

    let removed: u64 = stats.iter().map(|s| s.rows_removed).sum();
    println!(
        "{jobs} jobs removed {removed} rows in {elapsed:?} (per job: {:?}) beside {lifecycles} live lifecycles",
        stats.iter().map(|s| s.rows_removed).collect::<Vec<_>>()
    );
    assert_eq!(
        removed, EXPIRED as u64,
        "every expired row removed exactly once"
    );
    assert!(stats.iter().all(|s| s.failed_passes == 0), "{stats:?}");
    assert!(lifecycles > 0);
    for n in 0..100 {
        assert!(store
            .get_by_hash(&format!("live-{n}"))
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_four_jobs_at_once_remove_every_expired_row_exactly_once_beside_live_traffic() {
    concurrent_jobs_remove_every_row_exactly_once(2).await;
    concurrent_jobs_remove_every_row_exactly_once(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_an_outage_and_resumes_afterwards() {
    let db = TestDb::new().await;
    // The job's own pool, marked so that its backends can be found and terminated.
    let job_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(StdDuration::from_millis(300))
        .test_before_acquire(false)
        .connect_with(
            db.options
                .clone()
                .application_name("par-store-cleanup-under-test"),
        )
        .await
        .unwrap();
    let job = CleanupJob::spawn(PostgresStore::new(job_pool), fast_options());
    insert_expired(&db, "before-", 10).await;
    assert!(
        eventually(StdDuration::from_secs(10), || async {
            expired_rows(&db).await == 0
        })
        .await
    );

    // Outage: the database refuses new connections and the job's connections are killed.
    db.allow_connections(false).await;
    let mut admin = common::admin_connection().await;
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'par-store-cleanup-under-test'";
    let failures_before = job.stats().failed_passes;
    let deadline = Instant::now() + StdDuration::from_secs(10);
    let mut outage = false;
    while !outage && Instant::now() < deadline {
        sqlx::query(terminate).execute(&mut admin).await.unwrap();
        outage = job.stats().failed_passes >= failures_before + 3;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert!(
        outage,
        "the job should record failed passes: {:?}",
        job.stats()
    );
    let during = job.stats();
    assert!(during.last_error.is_some());
    println!("during the outage: {during:?}");

    // Restored: rows that expire after the outage are removed by the same job.
    db.allow_connections(true).await;
    insert_expired(&db, "after-", 25).await;
    assert!(
        eventually(StdDuration::from_secs(10), || async {
            expired_rows(&db).await == 0
        })
        .await,
        "job did not resume: {:?}",
        job.stats()
    );
    let after = counted_rows_removed(&job, 35).await;
    assert_eq!(after.rows_removed, 35);
    shuts_down_within_a_second(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_long_interval_is_prompt() {
    let db = TestDb::new().await;
    let job = CleanupJob::spawn(
        db.store(),
        CleanupOptions::new()
            .interval(StdDuration::from_secs(3_600))
            .first_run_jitter(false),
    );
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            job.stats().passes == 1
        })
        .await
    );
    shuts_down_within_a_second(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_the_first_run_jitter_is_prompt() {
    let job = CleanupJob::spawn(
        MemoryStore::new(),
        CleanupOptions::new().interval(StdDuration::from_secs(3_600)),
    );
    shuts_down_within_a_second(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_pass_stops_at_the_next_batch_boundary() {
    const EXPIRED: i64 = 100_000;
    let db = TestDb::new().await;
    insert_expired(&db, "old-", EXPIRED).await;
    // Small batches with a pause: the pass takes far longer than the test waits.
    let job = CleanupJob::spawn(
        db.store(),
        fast_options()
            .batch_size(50)
            .pause_between_batches(StdDuration::from_millis(5)),
    );
    let seen = Arc::new(AtomicU64::new(0));
    assert!(
        eventually(StdDuration::from_secs(10), || {
            let seen = Arc::clone(&seen);
            let db = &db;
            async move {
                let left = expired_rows(db).await;
                seen.store(left as u64, Ordering::Relaxed);
                left < EXPIRED
            }
        })
        .await
    );
    shuts_down_within_a_second(job).await;
    let left = expired_rows(&db).await;
    assert!(left > 0, "the pass was interrupted, not finished");
    // Nothing runs any more.
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(expired_rows(&db).await, left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_job_stops_its_task() {
    let db = TestDb::new().await;
    let job = CleanupJob::spawn(db.store(), fast_options());
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            job.stats().passes >= 1
        })
        .await
    );
    drop(job);
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    insert_expired(&db, "after-drop-", 10).await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_eq!(
        expired_rows(&db).await,
        10,
        "no orphaned task keeps cleaning"
    );
}

#[tokio::test]
async fn delete_expired_once_from_cron_removes_everything_in_batches() {
    let db = TestDb::new().await;
    insert_expired(&db, "old-", 2_500).await;
    let store = db.store();
    store.store(&live("live")).await.unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 2_500);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    assert_eq!(db.row_count().await, 1);
}
