//! Removing expired requests: the batch loop shared by `delete_expired` and the background
//! [`CleanupJob`].

use crate::error::StoreError;
use crate::telemetry::error_kind;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{field, Instrument};

/// [`CleanupOptions::DEFAULT_BATCH_SIZE`], for the stores' `delete_expired`.
pub(crate) const DEFAULT_BATCH_SIZE: u32 = CleanupOptions::DEFAULT_BATCH_SIZE;

/// A store whose expired requests can be deleted in batches. Implemented by
/// [`PostgresStore`](crate::PostgresStore) and [`MemoryStore`](crate::MemoryStore); implement it
/// for your own store to run a [`CleanupJob`] on it.
#[async_trait::async_trait]
pub trait ExpiredRequestCleaner: Send + Sync {
    /// Deletes at most `batch_size` expired requests in one statement and returns how many
    /// it deleted. Must never delete a live request, and must not block on (or fail because
    /// of) concurrent cleaners.
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError>;
}

#[async_trait::async_trait]
impl<T: ExpiredRequestCleaner + ?Sized> ExpiredRequestCleaner for Arc<T> {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        (**self).delete_expired_batch(batch_size).await
    }
}

/// What one pass did, including the rows removed before a failure.
#[derive(Debug)]
pub(crate) struct PassReport {
    pub(crate) rows: u64,
    pub(crate) batches: u64,
    pub(crate) error: Option<StoreError>,
}

impl PassReport {
    fn into_result(self) -> Result<Self, StoreError> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self),
        }
    }
}

/// One cleanup pass inside a `par_store.cleanup.pass` span that records `batch_size`, and when
/// the pass ends its `outcome` (`completed` or the error's kind), `rows`, `batches` and
/// `duration_ms`: the job's passes and `delete_expired` calls alike.
async fn run_pass<C: ExpiredRequestCleaner + ?Sized>(
    cleaner: &C,
    batch_size: u32,
    pause: Duration,
    job: Option<JobContext<'_>>,
) -> PassReport {
    let batch_size = batch_size.max(1);
    let span = tracing::debug_span!(
        "par_store.cleanup.pass",
        batch_size,
        outcome = field::Empty,
        rows = field::Empty,
        batches = field::Empty,
        duration_ms = field::Empty,
    );
    let started = Instant::now();
    let report = run_batches(cleaner, batch_size, pause, job)
        .instrument(span.clone())
        .await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let outcome = report.error.as_ref().map_or("completed", error_kind);
    span.record("outcome", outcome);
    span.record("rows", report.rows);
    span.record("batches", report.batches);
    span.record("duration_ms", duration_ms);
    #[cfg(feature = "metrics")]
    crate::metrics::record_cleaned(report.rows);
    report
}

/// What a pass run by a [`CleanupJob`] has beside the store: its stop signal, and its
/// figures, which count each batch as soon as it is done.
struct JobContext<'a> {
    stop: &'a mut watch::Receiver<bool>,
    stats: &'a Mutex<CleanupStats>,
}

/// Deletes expired requests batch after batch until a batch comes back short, the stop
/// signal is raised (checked between batches) or a batch fails.
async fn run_batches<C: ExpiredRequestCleaner + ?Sized>(
    cleaner: &C,
    batch_size: u32,
    pause: Duration,
    mut job: Option<JobContext<'_>>,
) -> PassReport {
    let mut report = PassReport {
        rows: 0,
        batches: 0,
        error: None,
    };
    loop {
        match cleaner.delete_expired_batch(batch_size).await {
            Ok(rows) => {
                report.rows += rows;
                report.batches += 1;
                if let Some(job) = &job {
                    let mut stats = job.stats.lock().unwrap_or_else(PoisonError::into_inner);
                    stats.rows_removed += rows;
                    stats.batches += 1;
                }
                if rows < u64::from(batch_size) {
                    return report;
                }
            }
            Err(err) => {
                report.error = Some(err);
                return report;
            }
        }
        if let Some(JobContext { stop, .. }) = job.as_mut() {
            if stop_requested(stop) || (!pause.is_zero() && sleep_or_stop(pause, stop).await) {
                return report;
            }
        }
    }
}

/// One full pass without a stop signal: what `delete_expired` on each store runs.
pub(crate) async fn delete_expired_in_batches<C: ExpiredRequestCleaner + ?Sized>(
    cleaner: &C,
    batch_size: u32,
) -> Result<u64, StoreError> {
    Ok(run_pass(cleaner, batch_size, Duration::ZERO, None)
        .await
        .into_result()?
        .rows)
}

/// Configuration of a [`CleanupJob`], in the style of sqlx's `PgPoolOptions`.
///
/// | setting | default | constant | why |
/// |---|---|---|---|
/// | [`interval`](Self::interval) | 60 s | [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL) | PAR lifetimes are 60-600 s; a minute keeps the table small at the cost of one cheap query per instance |
/// | [`batch_size`](Self::batch_size) | 1,000 rows | [`DEFAULT_BATCH_SIZE`](Self::DEFAULT_BATCH_SIZE) | large enough that a big backlog is not dominated by round trips, small enough to hold row locks briefly |
/// | [`first_run_jitter`](Self::first_run_jitter) | `true` | - | instances restarted together do not clean in lock-step |
/// | [`pause_between_batches`](Self::pause_between_batches) | 0 s | [`DEFAULT_PAUSE_BETWEEN_BATCHES`](Self::DEFAULT_PAUSE_BETWEEN_BATCHES) | batches skip locked rows and are short; raise it to leave more room to live traffic |
/// | [`retry_delay`](Self::retry_delay) | 1 s | [`DEFAULT_RETRY_DELAY`](Self::DEFAULT_RETRY_DELAY) | first retry after a failed pass; doubles, capped at the interval |
///
/// ```
/// use std::time::Duration;
/// use par_store::CleanupOptions;
///
/// let options = CleanupOptions::new()
///     .interval(Duration::from_secs(30))
///     .batch_size(500)
///     .first_run_jitter(false);
/// ```
#[derive(Clone, Debug)]
#[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
pub struct CleanupOptions {
    interval: Duration,
    batch_size: u32,
    first_run_jitter: bool,
    pause_between_batches: Duration,
    retry_delay: Duration,
}

impl Default for CleanupOptions {
    fn default() -> Self {
        CleanupOptions {
            interval: Self::DEFAULT_INTERVAL,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            first_run_jitter: true,
            pause_between_batches: Self::DEFAULT_PAUSE_BETWEEN_BATCHES,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
        }
    }
}

impl CleanupOptions {
    /// Rows deleted per statement unless configured otherwise.
    ///
    /// Chosen from the cleanup benchmark (`BENCHMARKS.md`): large enough that a pass over a big
    /// backlog is not dominated by round trips, small enough that each statement holds its row
    /// locks for a few milliseconds only.
    pub const DEFAULT_BATCH_SIZE: u32 = 1_000;

    /// Time between cleanup passes unless configured otherwise: 60 s.
    ///
    /// PAR lifetimes are short (60 s in Keycloak, 600 s in Duende IdentityServer) and the table
    /// churns constantly, so expired rows are reclaimed every minute rather than every hour
    /// (Duende's default for its broader grant store). A pass that finds nothing costs one
    /// index probe.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

    /// First retry delay after a failed pass; it doubles with each consecutive failure and never
    /// exceeds the interval.
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

    /// Pause between two batches of one pass unless configured otherwise: none.
    pub const DEFAULT_PAUSE_BETWEEN_BATCHES: Duration = Duration::ZERO;

    /// The defaults (see the table above).
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn new() -> Self {
        Self::default()
    }

    /// Time between the end of one pass and the start of the next (default 60 s).
    /// A zero interval is treated as one millisecond.
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(1));
        self
    }

    /// Rows deleted per statement (default 1,000; 0 is treated as 1).
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn batch_size(mut self, rows: u32) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Whether the first pass waits a random delay within the interval (default `true`).
    /// Off, the first pass starts at once.
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn first_run_jitter(mut self, on: bool) -> Self {
        self.first_run_jitter = on;
        self
    }

    /// Pause between two batches of one pass (default none).
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn pause_between_batches(mut self, pause: Duration) -> Self {
        self.pause_between_batches = pause;
        self
    }

    /// First retry delay after a failed pass (default 1 s). It doubles with each consecutive
    /// failure and is capped at the interval.
    #[must_use = "options do nothing until they are passed to CleanupJob::spawn"]
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay.max(Duration::from_millis(1));
        self
    }

    fn first_delay(&self) -> Duration {
        if self.first_run_jitter {
            self.interval.mul_f64(random_fraction())
        } else {
            Duration::ZERO
        }
    }

    fn delay_after(&self, consecutive_failures: u32) -> Duration {
        if consecutive_failures == 0 {
            return self.interval;
        }
        let factor = 2u32.saturating_pow(consecutive_failures.saturating_sub(1).min(20));
        self.retry_delay.saturating_mul(factor).min(self.interval)
    }
}

/// A uniform fraction in [0, 1) from the OS random source (0 if it is unavailable: the job
/// then simply starts at once).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    // 53 random bits, the precision of an f64 mantissa.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Cumulative figures of a [`CleanupJob`], for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupStats {
    /// Passes finished, failed or not.
    pub passes: u64,
    /// Passes that ended with an error.
    pub failed_passes: u64,
    /// Expired requests removed, in total, counted after each batch (also during a pass).
    pub rows_removed: u64,
    /// Delete statements that succeeded, in total, counted like `rows_removed`.
    pub batches: u64,
    /// The error of the latest failed pass, as text.
    pub last_error: Option<String>,
    /// When the latest pass finished.
    pub last_pass_at: Option<DateTime<Utc>>,
}

/// A background task that removes expired requests, pass after pass, until it is shut down
/// or dropped.
///
/// It never exits on its own and never panics: a failed pass is logged at warn and retried
/// with a bounded back-off. Safe to run on every server instance at once.
///
/// ```no_run
/// use par_store::{CleanupJob, CleanupOptions, PostgresStore};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:5432/postgres").await?;
/// let cleanup = CleanupJob::spawn(store.clone(), CleanupOptions::new());
/// // ... serve requests with `store` ...
/// cleanup.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping the job stops it, so a job that is not kept does not clean. The compiler says so
/// (`#[must_use]`); `let _ = CleanupJob::spawn(...)` drops it at once all the same.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use par_store::{CleanupJob, CleanupOptions, MemoryStore};
/// CleanupJob::spawn(MemoryStore::new(), CleanupOptions::new()); // error: dropped at once
/// # }
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use par_store::{CleanupJob, CleanupOptions, MemoryStore};
/// let cleanup = CleanupJob::spawn(MemoryStore::new(), CleanupOptions::new());
/// cleanup.shutdown().await;
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping a CleanupJob stops the cleaning: keep it while the server runs, and call shutdown() when it stops"]
pub struct CleanupJob {
    id: uuid::Uuid,
    stop: watch::Sender<bool>,
    stats: Arc<Mutex<CleanupStats>>,
    task: Option<JoinHandle<()>>,
}

impl CleanupJob {
    /// Starts the job on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Like `tokio::spawn`, when called outside a tokio runtime.
    pub fn spawn<S>(store: S, options: CleanupOptions) -> CleanupJob
    where
        S: ExpiredRequestCleaner + 'static,
    {
        let id = uuid::Uuid::new_v4();
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Mutex::new(CleanupStats::default()));
        let span = tracing::info_span!("par_store.cleanup", job_id = %id);
        let task =
            tokio::spawn(run_job(store, options, stop_rx, Arc::clone(&stats)).instrument(span));
        CleanupJob {
            id,
            stop,
            stats,
            task: Some(task),
        }
    }

    /// A random identifier of this job, also recorded as `job_id` in its `tracing` span.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// The job's cumulative figures so far.
    pub fn stats(&self) -> CleanupStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the job at the next batch boundary and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(job_id = %self.id, error = %err, "par-store cleanup task ended abnormally");
            }
        }
    }
}

impl Drop for CleanupJob {
    fn drop(&mut self) {
        // The task sees the signal at its next batch boundary or at once while it sleeps,
        // and ends by itself.
        self.stop.send_replace(true);
    }
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Sleeps for `delay` unless the stop signal comes first; true when stopping. A dropped
/// sender counts as a stop.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        // Ok: the stop flag was raised; Err: the job handle is gone. Both mean stop.
        _ = stop.wait_for(|stop| *stop) => true,
    };
    stopped || stop_requested(stop)
}

async fn run_job<S: ExpiredRequestCleaner>(
    store: S,
    options: CleanupOptions,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Mutex<CleanupStats>>,
) {
    let mut delay = options.first_delay();
    let mut consecutive_failures = 0u32;
    loop {
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
        let started = Instant::now();
        let report = run_pass(
            &store,
            options.batch_size,
            options.pause_between_batches,
            Some(JobContext {
                stop: &mut stop,
                stats: &stats,
            }),
        )
        .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        {
            let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
            // rows_removed and batches were counted batch by batch.
            stats.passes += 1;
            stats.last_pass_at = Some(Utc::now());
            if let Some(err) = &report.error {
                stats.failed_passes += 1;
                stats.last_error = Some(err.to_string());
            }
        }
        match &report.error {
            None => {
                consecutive_failures = 0;
                if report.rows > 0 {
                    tracing::info!(
                        rows = report.rows,
                        batches = report.batches,
                        duration_ms,
                        "par-store cleanup pass removed expired requests"
                    );
                } else {
                    tracing::debug!(
                        rows = 0,
                        batches = report.batches,
                        duration_ms,
                        "par-store cleanup pass found nothing to remove"
                    );
                }
            }
            Some(err) => {
                consecutive_failures = consecutive_failures.saturating_add(1);
                tracing::warn!(
                    rows = report.rows,
                    batches = report.batches,
                    duration_ms,
                    consecutive_failures,
                    error = %err,
                    "par-store cleanup pass failed; retrying later"
                );
            }
        }
        delay = options.delay_after(consecutive_failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_by_the_interval() {
        let options = CleanupOptions::new()
            .interval(Duration::from_secs(10))
            .retry_delay(Duration::from_secs(1));
        let delays: Vec<u64> = (0..7).map(|k| options.delay_after(k).as_secs()).collect();
        assert_eq!(delays, vec![10, 1, 2, 4, 8, 10, 10]);
        assert_eq!(options.delay_after(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_the_interval() {
        let options = CleanupOptions::new().interval(Duration::from_secs(5));
        for _ in 0..100 {
            assert!(options.first_delay() < Duration::from_secs(5));
        }
        assert_eq!(
            options.first_run_jitter(false).first_delay(),
            Duration::ZERO
        );
    }
}
