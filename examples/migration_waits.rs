//! What the store's traffic waits during each migration from 0.2's schema to 0.3.0's and back
//! (docs/upgrading.md, "What each migration does to the traffic").
//!
//! On a fresh database of its own (created and dropped at `DATABASE_URL`'s server), it
//! applies migrations 1-3 (0.2's schema) with `PostgresStore::migrator().run_to(3, ..)`,
//! inserts 100,000 live requests with 600-byte parameters, then applies 4, 5, 6 and 7 one at
//! a time with `run_to(v, ..)`, and reverts them one at a time with `undo(.., v - 1)`, while
//! [`CLIENTS`] tasks run 0.2's statements in a loop (bench/lifecycle-0.2.sql: store, read
//! with expiry, `DELETE ... RETURNING`, each on a fresh key; through sqlx directly, since
//! main's own statements need 0007). For each migration it prints its duration and, of the
//! operations that overlapped it, the count, the p99 and max latency, and how many took
//! longer than 100 ms. Exits non-zero if any operation or migration failed; timings are
//! figures, never pass/fail.
//!
//! ```text
//! DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!     cargo run --example migration_waits
//! ```

use par_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use par_store::sqlx::{Connection, Executor, PgConnection, PgPool};
use par_store::PostgresStore;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Live requests in the table when the migrations run.
const LIVE_ROWS: i64 = 100_000;
/// Concurrent clients running 0.2's statements.
const CLIENTS: usize = 4;
/// Quiet time before the first migration (the baseline) and between two migrations.
const PAUSE: Duration = Duration::from_secs(1);
/// An operation waiting longer than this is counted.
const SLOW: Duration = Duration::from_millis(100);
const DATABASE: &str = "par_store_migration_waits";

// 0.2's statements (src/sql.rs at 0.2.0, as in bench/lifecycle-0.2.sql).
const INSERT_0_2: &str = "WITH inserted AS (INSERT INTO pushed_authorization_requests \
    (reference_value_hash, expires_at, parameters, client_id) \
    SELECT $1, $2, $3, $4 WHERE $2 > now() \
    ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1) \
    SELECT EXISTS (SELECT FROM inserted) AS inserted, $2 > now() AS live";
const SELECT_LIVE_0_2: &str = "SELECT expires_at, parameters, client_id \
    FROM pushed_authorization_requests WHERE reference_value_hash = $1 AND expires_at > now()";
const CONSUME_0_2: &str = "DELETE FROM pushed_authorization_requests \
    WHERE reference_value_hash = $1 \
    RETURNING expires_at, parameters, expires_at > now() AS live, client_id";
const SEED: &str = "INSERT INTO pushed_authorization_requests \
    (reference_value_hash, expires_at, parameters) \
    SELECT 'seed-' || g, now() + interval '1 hour', repeat('p', 600) \
    FROM generate_series(1, 100000) AS g";

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// One operation: when it started and ended, relative to the run's start.
#[derive(Clone, Copy)]
struct Op {
    start: Duration,
    end: Duration,
}

struct Window {
    what: String,
    start: Duration,
    end: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let _ = dotenvy::dotenv();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let server = PgConnectOptions::from_str(&url)?;
    let mut admin = PgConnection::connect_with(&server).await?;
    admin
        .execute("DROP DATABASE IF EXISTS par_store_migration_waits WITH (FORCE)")
        .await?;
    admin
        .execute("CREATE DATABASE par_store_migration_waits")
        .await?;
    let options = server.clone().database(DATABASE);
    let outcome = measure(&options).await;
    admin
        .execute("DROP DATABASE IF EXISTS par_store_migration_waits WITH (FORCE)")
        .await?;
    admin.close().await?;
    outcome
}

async fn measure(options: &PgConnectOptions) -> Result<(), Failure> {
    let migrator = PostgresStore::migrator();
    let mut conn = PgConnection::connect_with(options).await?;
    migrator.run_to(3, &mut conn).await?;
    let seeded = Instant::now();
    conn.execute(SEED).await?;
    conn.execute("VACUUM ANALYZE pushed_authorization_requests")
        .await?;
    println!(
        "0.2's schema (migrations 1-3) with {LIVE_ROWS} live requests of 600 bytes \
         (inserted in {:.2} s); {CLIENTS} clients running 0.2's store / read / consume",
        seeded.elapsed().as_secs_f64()
    );

    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .min_connections(CLIENTS as u32)
        .connect_with(options.clone())
        .await?;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(client_loop(
                pool.clone(),
                client,
                t0,
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&first_failure),
            ))
        })
        .collect();

    let mut windows = Vec::new();
    let baseline_start = t0.elapsed();
    tokio::time::sleep(PAUSE * 2).await;
    windows.push(Window {
        what: "no migration (baseline)".to_owned(),
        start: baseline_start,
        end: t0.elapsed(),
    });
    let mut migration_failure = None;
    let steps = [4, 5, 6, 7]
        .into_iter()
        .map(|v| (true, v))
        .chain([7, 6, 5, 4].into_iter().map(|v| (false, v)));
    for (up, version) in steps {
        let name = migrator
            .iter()
            .find(|m| m.version == version)
            .map(|m| m.description.to_string())
            .unwrap_or_default();
        let start = t0.elapsed();
        let done = if up {
            migrator.run_to(version, &mut conn).await
        } else {
            migrator.undo(&mut conn, version - 1).await
        };
        let end = t0.elapsed();
        let what = format!("{} {version:04}_{name}", if up { "up  " } else { "down" });
        if let Err(err) = done {
            migration_failure = Some(format!("{what}: {err}"));
            break;
        }
        windows.push(Window { what, start, end });
        tokio::time::sleep(PAUSE).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut ops = Vec::new();
    for client in clients {
        ops.extend(client.await?);
    }
    let left: i64 =
        par_store::sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    pool.close().await;

    println!(
        "| migration | duration | operations during it | p99 | max | waited > {} ms |",
        SLOW.as_millis()
    );
    println!("|---|---|---|---|---|---|");
    for window in &windows {
        // Every operation that was in flight at some point of the migration.
        let mut during: Vec<Duration> = ops
            .iter()
            .filter(|op| op.start < window.end && op.end > window.start)
            .map(|op| op.end - op.start)
            .collect();
        during.sort();
        let p99 = during
            .get((during.len().saturating_sub(1) as f64 * 0.99) as usize)
            .copied()
            .unwrap_or_default();
        let max = during.last().copied().unwrap_or_default();
        let slow = during.iter().filter(|d| **d > SLOW).count();
        println!(
            "| {} | {:.0} ms | {} | {:.1} ms | {:.1} ms | {} |",
            window.what,
            (window.end - window.start).as_secs_f64() * 1e3,
            during.len(),
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            slow
        );
    }
    let failed = failures.load(Ordering::SeqCst);
    println!(
        "{} operations in {:.1} s, {failed} failed; {left} rows left (the {LIVE_ROWS} seeded \
         ones are kept through every migration and revert)",
        ops.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(failure) = migration_failure {
        return Err(format!("a migration failed: {failure}").into());
    }
    if failed > 0 {
        let first = first_failure
            .lock()
            .map(|f| f.clone().unwrap_or_default())
            .unwrap_or_default();
        return Err(format!("{failed} operations failed, the first: {first}").into());
    }
    if left != LIVE_ROWS {
        return Err(format!("{left} rows left, {LIVE_ROWS} expected").into());
    }
    Ok(())
}

/// 0.2's lifecycle on fresh keys until `stop`: each statement is one timed operation.
async fn client_loop(
    pool: PgPool,
    client: usize,
    t0: Instant,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    first_failure: Arc<Mutex<Option<String>>>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let parameters = "p".repeat(600);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("client-{client}-{n}");
        let expires_at = par_store::chrono::Utc::now() + par_store::chrono::Duration::seconds(600);
        for statement in 0..3 {
            let start = t0.elapsed();
            let outcome = match statement {
                0 => par_store::sqlx::query_as::<_, (bool, bool)>(INSERT_0_2)
                    .bind(&key)
                    .bind(expires_at)
                    .bind(&parameters)
                    .bind(None::<String>)
                    .fetch_one(&pool)
                    .await
                    .map(|(inserted, live)| inserted && live),
                1 => par_store::sqlx::query(SELECT_LIVE_0_2)
                    .bind(&key)
                    .fetch_optional(&pool)
                    .await
                    .map(|row| row.is_some()),
                _ => par_store::sqlx::query(CONSUME_0_2)
                    .bind(&key)
                    .fetch_optional(&pool)
                    .await
                    .map(|row| row.is_some()),
            };
            ops.push(Op {
                start,
                end: t0.elapsed(),
            });
            let failure = match outcome {
                Ok(true) => None,
                Ok(false) => Some(format!("statement {statement} on {key}: no row")),
                Err(err) => Some(format!("statement {statement} on {key}: {err}")),
            };
            if let Some(failure) = failure {
                failures.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut first) = first_failure.lock() {
                    first.get_or_insert(failure);
                }
            }
        }
    }
    ops
}
