//! Load generator for the benchmarks in `BENCHMARKS.md`; `bench/run.sh` drives it.
//!
//! ```text
//! cargo run --release -p par-store-demo --example loadgen -- <command> [options]
//!
//! commands
//!   migrate      apply the store's migrations
//!   lifecycle    full PAR lifecycles: store, get_by_hash, consume_by_hash of a fresh request
//!   load         insert --rows live requests with hashes base64(sha256("scale-<i>")), in SQL
//!   get-only     get_by_hash of random requests among the --rows loaded by `load`
//!   cleanup      rows/s of a cleanup pass over --rows expired requests, per --batch-sizes,
//!                and lifecycle latency with and without the pass running
//!   worker-failure  for --seconds, --clients loops of store, get_by_hash and two racing
//!                consumes of a fresh request through the store, tallying every error by
//!                kind; then checks every acknowledged store in the table (lost? consumed
//!                twice?) (bench/citus-worker-failure.sh stops a Citus worker meanwhile)
//!
//! options (defaults in brackets)
//!   --url URL            [$DATABASE_URL or postgres://postgres:postgres@127.0.0.1:5432/postgres]
//!   --mode M             store | markers-off | pooler | protected | shared | pool | conn | lite
//!                                                                                     [store]
//!                          store:     PostgresStore with its own pool (PostgresStoreOptions)
//!                          markers-off: the same with consumed_markers(false)
//!                          pooler:    the same in pooler mode (pooler_mode(true)), for
//!                                     a transaction-mode pooler without prepared statements
//!                          protected: ProtectedStore over that PostgresStore
//!                          shared:    PostgresStore::new on a sqlx PgPool
//!                          pool:      that sqlx PgPool and the same SQL, without the store layer
//!                          conn:      one sqlx PgConnection per client, no pool, same SQL
//!                          lite:      a minimal pool in this file (no ping on release)
//!   --clients N          concurrent clients                                           [4]
//!   --connections C      connections in the pool (more clients than C wait their turn) [N]
//!   --seconds T          measured duration                                            [10]
//!   --count K            stop after K lifecycles in total instead (for strace -c)
//!   --rate R             at most R lifecycles/s in total (paced per client)           [unpaced]
//!   --param-bytes B      size of the request parameters                               [600]
//!   --abandon-pct P      P% of requests are stored and never read (they expire)       [0]
//!   --ttl S              lifetime of abandoned requests, seconds                      [60]
//!   --cleanup-job        run a CleanupJob beside the traffic
//!   --cleanup-interval S its interval                                                 [60]
//!   --batch-size B       its batch size                                               [1000]
//!   --report-every S     print one JSON line every S seconds (throughput, table size)
//!   --rows R             load / get-only / cleanup: number of rows                    [1000]
//!   --batch-sizes LIST   cleanup: comma-separated batch sizes                         [100,1000,10000]
//!   --citus              migrate: then distribute the table (distribute_on_citus)
//! ```
//!
//! Every command prints one JSON line on stdout (latencies in microseconds) for the script;
//! `--report-every` adds one line per interval before it.

use chrono::Utc;
use hdrhistogram::Histogram;
use par_store::sqlx::postgres::{PgConnectOptions, PgPool};
use par_store::sqlx::{self, Connection, PgConnection};
use par_store::{
    protect::{KeyRing, ProtectionKey},
    CleanupJob, CleanupOptions, PostgresStore, PostgresStoreOptions, ProtectedStore,
    PushedAuthorizationRequest, PushedAuthorizationRequestStore,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// Lifecycles completed by every run of this process, for the interval reports.
static COMPLETED: AtomicU64 = AtomicU64::new(0);

// The oauth-as example server's Prometheus recorder, which `main` installs.
#[cfg(feature = "metrics")]
#[path = "shared/prometheus.rs"]
mod prometheus;

// The store's own statements, for the `pool`, `conn` and `lite` modes, which measure what
// sqlx costs without the store layer (bench/lifecycle.sql holds the same for pgbench).
#[path = "../../src/sql.rs"]
#[allow(dead_code)] // the batch delete is not used here
mod sql;
use sql::{CONSUME, INSERT, SELECT_LIVE};

type Row = (chrono::DateTime<Utc>, String);
type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------
// Arguments

struct Args {
    command: String,
    values: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, BoxError> {
        let mut raw = std::env::args().skip(1);
        let command = raw
            .next()
            .ok_or("usage: loadgen <command> [--option value]...")?;
        let mut values = HashMap::new();
        let mut pending: Option<String> = None;
        for arg in raw {
            if let Some(name) = arg.strip_prefix("--") {
                if let Some(flag) = pending.replace(name.to_owned()) {
                    values.insert(flag, "true".to_owned());
                }
            } else if let Some(name) = pending.take() {
                values.insert(name, arg);
            } else {
                return Err(format!("unexpected argument {arg:?}").into());
            }
        }
        if let Some(flag) = pending {
            values.insert(flag, "true".to_owned());
        }
        Ok(Args { command, values })
    }

    fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, BoxError> {
        match self.values.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name}: cannot parse {text:?}").into()),
        }
    }

    fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, BoxError> {
        self.values
            .get(name)
            .map(|text| {
                text.parse()
                    .map_err(|_| BoxError::from(format!("--{name}: cannot parse {text:?}")))
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn url(&self) -> String {
        self.values.get("url").cloned().unwrap_or_else(|| {
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
        })
    }
}

// ---------------------------------------------------------------------------------------
// Keys and parameters

/// splitmix64: a cheap generator for keys, so the client spends no time on real randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A fresh 44-character key shaped like `ReferenceValue::hash` (Base64 of 32 bytes).
    fn hash_like_key(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        base64_standard(&bytes)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The hash of the i-th row written by `load`: base64(sha256("scale-<i>")), as in its SQL.
fn scale_hash(i: u64) -> String {
    base64_standard(&Sha256::digest(format!("scale-{i}").as_bytes()))
}

/// Form-encoded authorization request parameters of exactly `len` bytes.
fn parameters(len: usize) -> String {
    let base = "client_id=s6BhdRkqt3&response_type=code&scope=openid%20profile%20email\
                &redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&state=af0ifjsldkj\
                &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
                &code_challenge_method=S256&nonce=n-0S6_WzA2Mj&";
    base.chars().cycle().take(len).collect()
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("OS random source");
    u64::from_le_bytes(bytes)
}

// ---------------------------------------------------------------------------------------
// The system under test

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Store,
    MarkersOff,
    Pooler,
    Protected,
    Pool,
    Shared,
    Conn,
    Lite,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "store" => Ok(Mode::Store),
            "markers-off" => Ok(Mode::MarkersOff),
            "pooler" => Ok(Mode::Pooler),
            "protected" => Ok(Mode::Protected),
            "pool" => Ok(Mode::Pool),
            "shared" => Ok(Mode::Shared),
            "conn" => Ok(Mode::Conn),
            "lite" => Ok(Mode::Lite),
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Store => "store",
            Mode::MarkersOff => "markers-off",
            Mode::Pooler => "pooler",
            Mode::Protected => "protected",
            Mode::Pool => "pool",
            Mode::Shared => "shared",
            Mode::Conn => "conn",
            Mode::Lite => "lite",
        }
    }
}

/// What the clients share: a store behind the trait (as a server holds it), or the bare pool.
#[derive(Clone)]
enum Target {
    Store(Arc<dyn PushedAuthorizationRequestStore>),
    Pool(PgPool),
    /// One connection per client, opened by the client.
    Conn(Box<PgConnectOptions>),
    Lite(Arc<LitePool>),
}

/// One client's handle on the target.
enum Client {
    Store(Arc<dyn PushedAuthorizationRequestStore>),
    Pool(PgPool),
    Conn(PgConnection),
    Lite(Arc<LitePool>),
}

/// A minimal pool for the `lite` mode: connections are handed back as they are, without
/// sqlx's ping on release, and dropped when a statement fails. It sketches what a pool
/// owned by the store could cost; it is no part of the store.
struct LitePool {
    idle: std::sync::Mutex<Vec<PgConnection>>,
    permits: tokio::sync::Semaphore,
    options: PgConnectOptions,
}

impl LitePool {
    async fn new(options: PgConnectOptions, size: u32) -> Result<LitePool, BoxError> {
        let conns =
            futures::future::try_join_all((0..size).map(|_| PgConnection::connect_with(&options)))
                .await?;
        Ok(LitePool {
            idle: std::sync::Mutex::new(conns),
            permits: tokio::sync::Semaphore::new(usize::try_from(size)?),
            options,
        })
    }

    async fn acquire(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, PgConnection), BoxError> {
        let permit = self.permits.acquire().await?;
        let idle = self.idle.lock().expect("lite pool lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => PgConnection::connect_with(&self.options).await?,
        };
        Ok((permit, conn))
    }

    fn release(&self, conn: PgConnection) {
        self.idle.lock().expect("lite pool lock").push(conn);
    }
}

impl Client {
    async fn open(target: &Target) -> Result<Client, BoxError> {
        Ok(match target {
            Target::Store(store) => Client::Store(Arc::clone(store)),
            Target::Pool(pool) => Client::Pool(pool.clone()),
            Target::Conn(options) => Client::Conn(PgConnection::connect_with(options).await?),
            Target::Lite(pool) => Client::Lite(Arc::clone(pool)),
        })
    }

    async fn store(&mut self, request: &PushedAuthorizationRequest) -> Result<(), BoxError> {
        if let Client::Store(store) = self {
            return Ok(store.store(request).await?);
        }
        // One row when inserted; none for a duplicate; an error (23502) when already expired
        // by the database's clock.
        let inserted = self
            .fetch_row(
                sqlx::query_as::<_, (i32,)>(INSERT)
                    .bind(&request.reference_value_hash)
                    .bind(request.expires_at)
                    .bind(&request.parameters)
                    .bind(&request.client_id),
            )
            .await?;
        if inserted.is_none() {
            return Err("duplicate key".into());
        }
        Ok(())
    }

    async fn get(&mut self, hash: &str) -> Result<bool, BoxError> {
        if let Client::Store(store) = self {
            return Ok(store.get_by_hash(hash).await?.is_some());
        }
        let row = self
            .fetch_row(sqlx::query_as::<_, Row>(SELECT_LIVE).bind(hash))
            .await?;
        Ok(row.is_some())
    }

    async fn consume(&mut self, hash: &str) -> Result<bool, BoxError> {
        if let Client::Store(store) = self {
            return Ok(store.consume_by_hash(hash).await?.is_some());
        }
        // The store's CONSUME with the store's own binds for `consume_by_hash`: any client,
        // markers on, not reopenable, no session. It returns a row only for a request it took
        // (the store reads LOOK_UP only when it took nothing, which a lifecycle never meets).
        type Consumed = (
            bool,
            chrono::DateTime<Utc>,
            Option<String>,
            Option<String>,
            bool,
            Option<chrono::DateTime<Utc>>,
            bool,
        );
        let row = self
            .fetch_row(
                sqlx::query_as::<_, Consumed>(CONSUME)
                    .bind(hash)
                    .bind(None::<&str>)
                    .bind(true)
                    .bind(false)
                    .bind(None::<&str>),
            )
            .await?;
        // Taken now, and live when taken.
        Ok(row.is_some_and(|row| row.0 && row.4))
    }

    /// Runs one of the store's statements without the store (`pool`, `conn`, `lite`). The
    /// callers build the query only after the `store` mode has returned, so that mode pays
    /// for no query of its own.
    async fn fetch_row<'q, O>(
        &mut self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> Result<Option<O>, BoxError>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        Ok(match self {
            Client::Store(_) => return Err("the store runs its own statements".into()),
            Client::Pool(pool) => query.fetch_optional(&*pool).await?,
            Client::Conn(conn) => query.fetch_optional(&mut *conn).await?,
            Client::Lite(pool) => {
                let (_permit, mut conn) = pool.acquire().await?;
                let row = query.fetch_optional(&mut conn).await?;
                pool.release(conn);
                row
            }
        })
    }
}

struct Setup {
    target: Target,
    /// The plain store, for CleanupJob and monitoring.
    store: PostgresStore,
}

/// The connect options of `url` with the per-connection settings a store with the default
/// options sends: the statement timeout as a startup parameter.
fn with_store_settings(url: &str) -> Result<PgConnectOptions, BoxError> {
    let timeout = par_store::PostgresStoreOptions::DEFAULT_STATEMENT_TIMEOUT.as_millis();
    Ok(PgConnectOptions::from_str(url)?.options([("statement_timeout", timeout)]))
}

async fn setup(url: &str, mode: Mode, connections: u32) -> Result<Setup, BoxError> {
    let options = PostgresStoreOptions::new()
        .max_connections(connections)
        .pooler_mode(mode == Mode::Pooler)
        .consumed_markers(mode != Mode::MarkersOff);
    // The `shared` and `pool` modes: a sqlx pool with the same limits and no ping before use.
    let sqlx_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .connect_lazy_with(with_store_settings(url)?);
    let store = match mode {
        Mode::Shared | Mode::Pool => PostgresStore::new(sqlx_pool.clone()),
        _ => options.connect(url).await?,
    };
    // Open every connection now, so that connecting is not measured (the `conn` and `lite`
    // modes open their own, and use the store only for the cleanup job).
    if matches!(
        mode,
        Mode::Store | Mode::MarkersOff | Mode::Pooler | Mode::Protected | Mode::Shared | Mode::Pool
    ) {
        futures::future::try_join_all((0..connections).map(|_| store.get_by_hash("warm-up")))
            .await?;
    }
    let target = match mode {
        Mode::Shared => Target::Store(Arc::new(store.clone())),
        Mode::Store | Mode::MarkersOff | Mode::Pooler => Target::Store(Arc::new(store.clone())),
        Mode::Protected => {
            let keys = KeyRing::new(ProtectionKey::new("bench", [7u8; 32])?);
            Target::Store(Arc::new(ProtectedStore::new(store.clone(), keys)))
        }
        Mode::Pool => Target::Pool(sqlx_pool),
        Mode::Conn => Target::Conn(Box::new(with_store_settings(url)?)),
        Mode::Lite => Target::Lite(Arc::new(
            LitePool::new(with_store_settings(url)?, connections).await?,
        )),
    };
    Ok(Setup { target, store })
}

// ---------------------------------------------------------------------------------------
// Measuring

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Latencies {
    store: Histogram<u64>,
    get: Histogram<u64>,
    consume: Histogram<u64>,
    lifecycle: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            store: histogram(),
            get: histogram(),
            consume: histogram(),
            lifecycle: histogram(),
        }
    }

    fn add(&mut self, other: &Latencies) {
        for (mine, theirs) in [
            (&mut self.store, &other.store),
            (&mut self.get, &other.get),
            (&mut self.consume, &other.consume),
            (&mut self.lifecycle, &other.lifecycle),
        ] {
            mine.add(theirs).expect("same histogram bounds");
        }
    }

    fn to_json(&self) -> Value {
        let mut ops = serde_json::Map::new();
        for (name, h) in [
            ("store", &self.store),
            ("get", &self.get),
            ("consume", &self.consume),
            ("lifecycle", &self.lifecycle),
        ] {
            if !h.is_empty() {
                ops.insert(name.to_owned(), summary(h));
            }
        }
        Value::Object(ops)
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "n": h.len(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// What the clients of one run share.
struct Shared {
    stop: AtomicBool,
    /// Lifecycles (or get-only lookups) completed, for the interval reports and --count.
    done: AtomicU64,
    errors: AtomicU64,
    count_limit: Option<u64>,
}

#[derive(Clone)]
struct Workload {
    kind: WorkloadKind,
    param_bytes: usize,
    abandon_pct: u64,
    ttl: chrono::Duration,
    /// Seconds between two lifecycles of one client, when paced.
    pace: Option<Duration>,
}

#[derive(Clone, Copy)]
enum WorkloadKind {
    Lifecycle,
    /// get_by_hash among rows 1..=n written by `load`.
    GetOnly(u64),
}

async fn client_loop(
    target: Target,
    workload: Workload,
    shared: Arc<Shared>,
    seed: u64,
) -> Result<Latencies, BoxError> {
    let mut client = Client::open(&target).await?;
    let mut rng = Rng(seed);
    let mut latencies = Latencies::new();
    let params = parameters(workload.param_bytes);
    let mut next_start = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(pace) = workload.pace {
            let now = Instant::now();
            if next_start > now {
                tokio::time::sleep_until(next_start.into()).await;
            }
            next_start = next_start.max(now - pace) + pace;
        }
        let ok = match workload.kind {
            WorkloadKind::Lifecycle => {
                one_lifecycle(&mut client, &workload, &mut rng, &params, &mut latencies).await
            }
            WorkloadKind::GetOnly(rows) => {
                let hash = scale_hash(1 + rng.below(rows));
                let started = Instant::now();
                let found = client.get(&hash).await;
                latencies.get.saturating_record(micros(started.elapsed()));
                matches!(found, Ok(true))
            }
        };
        if !ok {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        COMPLETED.fetch_add(1, Ordering::Relaxed);
        let done = shared.done.fetch_add(1, Ordering::Relaxed) + 1;
        if shared.count_limit.is_some_and(|limit| done >= limit) {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}

/// store, get_by_hash, consume_by_hash of one fresh request; false on any surprise.
async fn one_lifecycle(
    client: &mut Client,
    workload: &Workload,
    rng: &mut Rng,
    params: &str,
    latencies: &mut Latencies,
) -> bool {
    let abandon = workload.abandon_pct > 0 && rng.below(100) < workload.abandon_pct;
    let lifetime = if abandon {
        workload.ttl
    } else {
        chrono::Duration::seconds(600)
    };
    let request =
        PushedAuthorizationRequest::new(rng.hash_like_key(), Utc::now() + lifetime, params);
    let started = Instant::now();
    let stored = client.store(&request).await;
    let after_store = Instant::now();
    latencies
        .store
        .saturating_record(micros(after_store - started));
    if stored.is_err() {
        return false;
    }
    if abandon {
        return true;
    }
    let found = client.get(&request.reference_value_hash).await;
    let after_get = Instant::now();
    latencies
        .get
        .saturating_record(micros(after_get - after_store));
    let consumed = client.consume(&request.reference_value_hash).await;
    let after_consume = Instant::now();
    latencies
        .consume
        .saturating_record(micros(after_consume - after_get));
    latencies
        .lifecycle
        .saturating_record(micros(after_consume - started));
    matches!(found, Ok(true)) && matches!(consumed, Ok(true))
}

struct RunResult {
    latencies: Latencies,
    completed: u64,
    errors: u64,
    elapsed: Duration,
}

/// Runs `clients` client loops until `until` resolves (or --count is reached).
async fn run_clients<F: std::future::Future<Output = ()>>(
    target: &Target,
    workload: &Workload,
    clients: u32,
    count_limit: Option<u64>,
    until: F,
) -> Result<RunResult, BoxError> {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        count_limit,
    });
    let base_seed = seed();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client_loop(
                target.clone(),
                workload.clone(),
                Arc::clone(&shared),
                base_seed ^ (u64::from(i) << 48),
            ))
        })
        .collect();
    let stopper = {
        let shared = Arc::clone(&shared);
        async move {
            until.await;
            shared.stop.store(true, Ordering::Relaxed);
        }
    };
    let (results, ()) = tokio::join!(futures::future::join_all(tasks), async {
        tokio::select! {
            () = stopper => {}
            () = wait_for_stop(&shared) => {}
        }
    });
    let elapsed = started.elapsed();
    let mut latencies = Latencies::new();
    for result in results {
        latencies.add(&result??);
    }
    Ok(RunResult {
        latencies,
        completed: shared.done.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed,
    })
}

async fn wait_for_stop(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Commands

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse()?;
    // Built with the demo's feature `metrics` (its default), par-store's metrics go to the
    // Prometheus recorder of the oauth-as example server, as in a server that exports them:
    // what BENCHMARKS.md's cost of the feature measures (build with --no-default-features
    // for the run without).
    #[cfg(feature = "metrics")]
    {
        let handle = prometheus::install_recorder()?;
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            handle.run_upkeep();
        });
    }
    match args.command.as_str() {
        "migrate" => {
            let store = PostgresStore::connect(&args.url()).await?;
            store.migrate().await?;
            // --citus: on a Citus coordinator, distribute the table as a user would.
            let distributed = match args.flag("citus") {
                true => Some(store.distribute_on_citus().await?),
                false => None,
            };
            println!(
                "{}",
                json!({"cmd": "migrate", "ok": true, "distributed_now": distributed})
            );
        }
        "lifecycle" => lifecycle(&args).await?,
        "get-only" => get_only(&args).await?,
        "load" => load(&args).await?,
        "cleanup" => cleanup(&args).await?,
        "worker-failure" => worker_failure(&args).await?,
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}

fn workload(args: &Args, kind: WorkloadKind, clients: u32) -> Result<Workload, BoxError> {
    let pace = args
        .opt::<f64>("rate")?
        .map(|rate| Duration::from_secs_f64(f64::from(clients) / rate.max(0.001)));
    Ok(Workload {
        kind,
        param_bytes: args.get("param-bytes", 600)?,
        abandon_pct: args.get("abandon-pct", 0)?,
        ttl: chrono::Duration::seconds(args.get("ttl", 60)?),
        pace,
    })
}

async fn lifecycle(args: &Args) -> Result<(), BoxError> {
    let mode: Mode = args.get("mode", Mode::Store)?;
    let clients: u32 = args.get("clients", 4)?;
    let seconds: f64 = args.get("seconds", 10.0)?;
    let count: Option<u64> = args.opt("count")?;
    let url = args.url();
    let connections: u32 = args.get("connections", clients)?;
    let Setup { target, store } = setup(&url, mode, connections).await?;
    let workload = workload(args, WorkloadKind::Lifecycle, clients)?;

    let job = args.flag("cleanup-job").then(|| {
        CleanupJob::spawn(
            store.clone(),
            CleanupOptions::new()
                .interval(Duration::from_secs_f64(
                    args.get("cleanup-interval", 60.0).unwrap_or(60.0),
                ))
                .batch_size(args.get("batch-size", 1000).unwrap_or(1000)),
        )
    });
    let job = job.map(Arc::new);

    // Interval reports (soak): throughput and the table's size, from a connection of its own.
    let report_every: Option<f64> = args.opt("report-every")?;
    let monitor = match report_every {
        Some(every) => {
            let mut conn = PgConnection::connect(&url).await?;
            let job = job.clone();
            Some(tokio::spawn(async move {
                let started = Instant::now();
                let mut interval = tokio::time::interval(Duration::from_secs_f64(every.max(0.1)));
                interval.tick().await;
                let mut last = (0u64, 0u64, 0f64);
                loop {
                    interval.tick().await;
                    let line = match report(&mut conn, started, job.as_deref(), &mut last).await {
                        Ok(line) => line,
                        Err(err) => json!({"report_error": err.to_string()}),
                    };
                    println!("{line}");
                }
            }))
        }
        None => None,
    };

    let deadline = Duration::from_secs_f64(seconds);
    let result = run_clients(&target, &workload, clients, count, async {
        if count.is_some() {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(deadline).await
        }
    })
    .await?;
    if let Some(task) = monitor {
        task.abort();
    }
    let cleanup_stats = match job {
        Some(job) => {
            let stats = job.stats();
            if let Ok(job) = Arc::try_unwrap(job) {
                job.shutdown().await;
            }
            json!({"passes": stats.passes, "failed_passes": stats.failed_passes,
                   "rows_removed": stats.rows_removed, "batches": stats.batches})
        }
        None => Value::Null,
    };
    let secs = result.elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "cmd": "lifecycle",
            "mode": mode.name(),
            "clients": clients,
            "connections": connections,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "lifecycles": result.completed,
            "per_s": (result.completed as f64 / secs * 10.0).round() / 10.0,
            "errors": result.errors,
            "abandon_pct": workload.abandon_pct,
            "ops": result.latencies.to_json(),
            "cleanup": cleanup_stats,
        })
    );
    store.close().await;
    Ok(())
}

/// One interval report: lifecycles in the interval, the table's total size and its tuple
/// counts, and what the cleanup job did so far.
async fn report(
    conn: &mut PgConnection,
    started: Instant,
    job: Option<&CleanupJob>,
    last: &mut (u64, u64, f64),
) -> Result<Value, BoxError> {
    let (size, live, dead, autovacuums, xact_commit): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('pushed_authorization_requests'), \
                n_live_tup, n_dead_tup, autovacuum_count, \
                (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) \
         FROM pg_stat_user_tables WHERE relname = 'pushed_authorization_requests'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (ins, _): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_ins, n_tup_del FROM pg_stat_user_tables \
         WHERE relname = 'pushed_authorization_requests'",
    )
    .fetch_one(&mut *conn)
    .await?;
    // Inserted rows = stored requests = lifecycles (+ abandoned ones), from the server's view.
    let ins = u64::try_from(ins).unwrap_or(0);
    let t = started.elapsed().as_secs_f64();
    let completed = COMPLETED.load(Ordering::Relaxed);
    let interval = (t - last.2).max(0.001);
    let stored_per_s = ins.saturating_sub(last.0) as f64 / interval;
    let per_s = completed.saturating_sub(last.1) as f64 / interval;
    *last = (ins, completed, t);
    let stats = job.map(|job| job.stats());
    Ok(json!({
        "t": t.round(),
        "lifecycles_per_s": per_s.round(),
        "stored_per_s": stored_per_s.round(),
        "table_bytes": size,
        "n_live_tup": live,
        "n_dead_tup": dead,
        "autovacuum_count": autovacuums,
        "xact_commit": xact_commit,
        "cleanup_rows": stats.as_ref().map(|s| s.rows_removed),
        "cleanup_passes": stats.as_ref().map(|s| s.passes),
    }))
}

async fn get_only(args: &Args) -> Result<(), BoxError> {
    let mode: Mode = args.get("mode", Mode::Store)?;
    let clients: u32 = args.get("clients", 4)?;
    let seconds: f64 = args.get("seconds", 10.0)?;
    let rows: u64 = args.get("rows", 1000)?;
    let connections: u32 = args.get("connections", clients)?;
    let Setup { target, store } = setup(&args.url(), mode, connections).await?;
    let workload = workload(args, WorkloadKind::GetOnly(rows), clients)?;
    let result = run_clients(&target, &workload, clients, None, async {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await
    })
    .await?;
    let secs = result.elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "cmd": "get-only",
            "mode": mode.name(),
            "clients": clients,
            "connections": connections,
            "rows": rows,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "lookups": result.completed,
            "per_s": (result.completed as f64 / secs * 10.0).round() / 10.0,
            "errors": result.errors,
            "ops": result.latencies.to_json(),
        })
    );
    store.close().await;
    Ok(())
}

/// Inserts rows `from..=to` (hash base64(sha256('scale-<i>')), live for a day), in chunks.
async fn load(args: &Args) -> Result<(), BoxError> {
    let rows: i64 = args.get("rows", 1000)?;
    let chunk: i64 = args.get("chunk", 1_000_000)?;
    let param_bytes: usize = args.get("param-bytes", 600)?;
    let mut conn = PgConnection::connect(&args.url()).await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
        .fetch_one(&mut conn)
        .await?;
    let started = Instant::now();
    let mut from = existing + 1;
    while from <= rows {
        let to = (from + chunk - 1).min(rows);
        sqlx::query(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             SELECT encode(sha256(convert_to('scale-' || i, 'UTF8')), 'base64'), \
                    now() + interval '1 day', $3 \
             FROM generate_series($1::bigint, $2::bigint) AS i",
        )
        .bind(from)
        .bind(to)
        .bind(parameters(param_bytes))
        .execute(&mut conn)
        .await?;
        eprintln!(
            "loaded rows {from}..={to} ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    sqlx::raw_sql("VACUUM ANALYZE pushed_authorization_requests")
        .execute(&mut conn)
        .await?;
    let (count, size): (i64, i64) = sqlx::query_as(
        "SELECT count(*), pg_total_relation_size('pushed_authorization_requests') \
         FROM pushed_authorization_requests",
    )
    .fetch_one(&mut conn)
    .await?;
    println!(
        "{}",
        json!({"cmd": "load", "rows": count, "table_bytes": size,
               "seconds": started.elapsed().as_secs_f64().round()})
    );
    Ok(())
}

/// For each batch size: 1. `--rows` expired requests are inserted (and vacuumed, as old rows
/// would be); 2. lifecycle traffic runs for `--seconds` without cleanup; 3. the same traffic
/// runs while one CleanupJob pass deletes the expired rows. Reports rows/s of the pass and
/// the traffic's latencies in both phases.
async fn cleanup(args: &Args) -> Result<(), BoxError> {
    let url = args.url();
    let rows: i64 = args.get("rows", 1_000_000)?;
    let clients: u32 = args.get("clients", 4)?;
    let seconds: f64 = args.get("seconds", 10.0)?;
    let mode: Mode = args.get("mode", Mode::Store)?;
    let batch_sizes: Vec<u32> = args
        .get("batch-sizes", "100,1000,10000".to_owned())?
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let connections: u32 = args.get("connections", clients)?;
    let Setup { target, store } = setup(&url, mode, connections).await?;
    let workload = workload(args, WorkloadKind::Lifecycle, clients)?;
    let mut admin = PgConnection::connect(&url).await?;
    let mut results = Vec::new();
    for batch_size in batch_sizes {
        sqlx::raw_sql("TRUNCATE pushed_authorization_requests")
            .execute(&mut admin)
            .await?;
        let loaded = Instant::now();
        sqlx::query(
            "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
             SELECT encode(sha256(convert_to('expired-' || i, 'UTF8')), 'base64'), \
                    now() - interval '1 hour' + i * interval '1 millisecond', $2 \
             FROM generate_series(1, $1::bigint) AS i",
        )
        .bind(rows)
        .bind(parameters(600))
        .execute(&mut admin)
        .await?;
        for statement in ["VACUUM ANALYZE pushed_authorization_requests", "CHECKPOINT"] {
            sqlx::raw_sql(statement).execute(&mut admin).await?;
        }
        eprintln!(
            "batch {batch_size}: {rows} expired rows loaded in {:.0} s",
            loaded.elapsed().as_secs_f64()
        );

        let without = run_clients(&target, &workload, clients, None, async {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await
        })
        .await?;

        let job = CleanupJob::spawn(
            store.clone(),
            CleanupOptions::new()
                .batch_size(batch_size)
                .first_run_jitter(false)
                .interval(Duration::from_secs(3600)),
        );
        let pass_started = Instant::now();
        let mut pass_time = Duration::ZERO;
        let with = run_clients(&target, &workload, clients, None, async {
            while job.stats().passes == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            pass_time = pass_started.elapsed();
        })
        .await?;
        let stats = job.stats();
        job.shutdown().await;
        let secs = pass_time.as_secs_f64();
        let line = json!({
            "cmd": "cleanup",
            "batch_size": batch_size,
            "rows_removed": stats.rows_removed,
            "batches": stats.batches,
            "failed_passes": stats.failed_passes,
            "pass_seconds": (secs * 1000.0).round() / 1000.0,
            "rows_per_s": (stats.rows_removed as f64 / secs).round(),
            "ms_per_batch": (secs * 1000.0 / stats.batches.max(1) as f64 * 100.0).round() / 100.0,
            "clients": clients,
            "connections": connections,
            "without": {"per_s": (without.completed as f64 / without.elapsed.as_secs_f64()).round(),
                        "errors": without.errors, "ops": without.latencies.to_json()},
            "with": {"per_s": (with.completed as f64 / with.elapsed.as_secs_f64()).round(),
                     "errors": with.errors, "ops": with.latencies.to_json()},
        });
        println!("{line}");
        results.push(line);
    }
    store.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// worker-failure: what requests in flight see while a node fails, and what survives it

/// What one worker-failure client saw.
#[derive(Default)]
struct FaultTally {
    /// Requests whose `store` returned `Ok`: each must be in the table afterwards.
    acked: Vec<String>,
    /// Requests whose `store` failed: stored or not, the caller cannot tell.
    store_failed: Vec<String>,
    /// One entry per `Consumption::Consumed`: a request handed out twice shows up twice.
    handed_out: Vec<String>,
    /// "operation: error" -> (count, first, last) in Unix seconds.
    errors: HashMap<String, (u64, f64, f64)>,
    /// Lifecycles without any error, per second since the start.
    clean_per_second: Vec<u64>,
    /// Lifecycles with an error, per second since the start.
    failed_per_second: Vec<u64>,
}

impl FaultTally {
    fn error(&mut self, operation: &str, what: impl std::fmt::Display) {
        // Citus's messages name the node first and the cause last: keep the cause.
        let what = what.to_string();
        let what = match what.split_once("failed with the following error: ") {
            Some((_, cause)) => format!("a worker's connection failed: {cause}"),
            None => what,
        };
        let mut kind = format!("{operation}: {what}");
        if let Some((cut, _)) = kind.char_indices().nth(200) {
            kind.truncate(cut);
        }
        let now = unix_seconds();
        let entry = self.errors.entry(kind).or_insert((0, now, now));
        entry.0 += 1;
        entry.2 = now;
    }

    fn count_second(&mut self, second: usize, clean: bool) {
        for series in [&mut self.clean_per_second, &mut self.failed_per_second] {
            if series.len() <= second {
                series.resize(second + 1, 0);
            }
        }
        match clean {
            true => self.clean_per_second[second] += 1,
            false => self.failed_per_second[second] += 1,
        }
    }

    fn merge(&mut self, other: FaultTally) {
        self.acked.extend(other.acked);
        self.store_failed.extend(other.store_failed);
        self.handed_out.extend(other.handed_out);
        for (kind, (count, first, last)) in other.errors {
            let entry = self.errors.entry(kind).or_insert((0, first, last));
            if entry.0 > 0 {
                entry.1 = entry.1.min(first);
                entry.2 = entry.2.max(last);
            }
            entry.0 += count;
        }
        for (mine, theirs) in [
            (&mut self.clean_per_second, other.clean_per_second),
            (&mut self.failed_per_second, other.failed_per_second),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (slot, value) in mine.iter_mut().zip(theirs) {
                *slot += value;
            }
        }
    }
}

fn unix_seconds() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

/// One client: store, get_by_hash, and two consumes racing for the request, until `stop`.
async fn fault_client(
    store: PostgresStore,
    stop: Arc<AtomicBool>,
    started: Instant,
    seed: u64,
) -> FaultTally {
    let mut rng = Rng(seed);
    let mut tally = FaultTally::default();
    let params = parameters(600);
    while !stop.load(Ordering::Relaxed) {
        let request = PushedAuthorizationRequest::new(
            rng.hash_like_key(),
            Utc::now() + chrono::Duration::seconds(600),
            params.as_str(),
        );
        let hash = request.reference_value_hash.clone();
        let mut clean = true;
        match store.store(&request).await {
            Ok(()) => tally.acked.push(hash.clone()),
            Err(err) => {
                tally.error("store", &err);
                tally.store_failed.push(hash.clone());
                clean = false;
            }
        }
        if clean {
            match store.get_by_hash(&hash).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tally.error("get_by_hash", "an acknowledged request was not found");
                    clean = false;
                }
                Err(err) => {
                    tally.error("get_by_hash", &err);
                    clean = false;
                }
            }
            // The request is bound to no client: any client consumes it.
            let (first, second) = tokio::join!(
                store.consume_for_client(&hash, "loadgen"),
                store.consume_for_client(&hash, "loadgen")
            );
            let mut winners = 0;
            for outcome in [first, second] {
                match outcome {
                    Ok(par_store::Consumption::Consumed(_)) => {
                        winners += 1;
                        tally.handed_out.push(hash.clone());
                    }
                    Ok(par_store::Consumption::AlreadyConsumed { .. }) => {}
                    Ok(other) => {
                        tally.error("consume", format!("unexpected {other:?}"));
                        clean = false;
                    }
                    Err(err) => {
                        tally.error("consume", &err);
                        clean = false;
                    }
                }
            }
            if winners != 1 {
                clean = false;
            }
        }
        let second = usize::try_from(started.elapsed().as_secs()).unwrap_or(usize::MAX);
        tally.count_second(second, clean);
    }
    tally
}

/// The rows of `hashes` now in the table: hash -> consumed (a consumed marker).
/// Retries for up to a minute while a node is still coming back.
async fn rows_of(url: &str, hashes: &[String]) -> Result<HashMap<String, bool>, BoxError> {
    const ROWS: &str = "SELECT reference_value_hash::text, false \
         FROM pushed_authorization_requests WHERE reference_value_hash = ANY($1) \
         UNION ALL \
         SELECT reference_value_hash::text, true \
         FROM pushed_authorization_request_markers WHERE reference_value_hash = ANY($1)";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
            let mut found = HashMap::with_capacity(hashes.len());
            for chunk in hashes.chunks(5000) {
                let rows: Vec<(String, bool)> = sqlx::query_as(ROWS)
                    .bind(chunk)
                    .fetch_all(&mut conn)
                    .await?;
                found.extend(rows);
            }
            let _ = conn.close().await;
            Ok::<_, BoxError>(found)
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(err) if Instant::now() < deadline => {
                eprintln!("loadgen: reading the table back failed ({err}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn worker_failure(args: &Args) -> Result<(), BoxError> {
    let clients: u32 = args.get("clients", 8)?;
    let seconds: f64 = args.get("seconds", 40.0)?;
    let url = args.url();
    let store = PostgresStoreOptions::new()
        .max_connections(clients)
        .connect(&url)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let started_unix = unix_seconds();
    let base_seed = seed();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(fault_client(
                store.clone(),
                Arc::clone(&stop),
                started,
                base_seed ^ (u64::from(i) << 48),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = FaultTally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Every request whose store was acknowledged must be in the table: consumed (a marker)
    // when a consume handed it out, live otherwise (then it is consumed now, once).
    let mut asked = tally.acked.clone();
    asked.extend(tally.store_failed.iter().cloned());
    let found = rows_of(&url, &asked).await?;
    let mut handed: HashMap<&str, u64> = HashMap::new();
    for hash in &tally.handed_out {
        *handed.entry(hash.as_str()).or_default() += 1;
    }
    let (mut lost, mut consumed_unanswered, mut consumed_now, mut unreadable) = (0u64, 0, 0, 0);
    let mut lost_examples = Vec::new();
    for hash in &tally.acked {
        let times = handed.get(hash.as_str()).copied().unwrap_or(0);
        match found.get(hash) {
            None => {
                lost += 1;
                if lost_examples.len() < 5 {
                    lost_examples.push(hash.clone());
                }
            }
            // Consumed by a consume whose caller got an error: burned, never handed out.
            Some(true) if times == 0 => consumed_unanswered += 1,
            Some(true) => {}
            Some(false) => match store.consume_for_client(hash, "loadgen").await {
                Ok(par_store::Consumption::Consumed(_)) if times == 0 => consumed_now += 1,
                Ok(par_store::Consumption::Consumed(_)) => {
                    // Handed out before and again now: a second hand-out.
                    *handed.entry(hash.as_str()).or_default() += 1;
                }
                Ok(_) | Err(_) => unreadable += 1,
            },
        }
    }
    let consumed_twice = handed.values().filter(|&&times| times > 1).count();
    let stored_despite_error = tally
        .store_failed
        .iter()
        .filter(|hash| found.contains_key(*hash))
        .count();
    let mut errors: Vec<_> = tally.errors.into_iter().collect();
    errors.sort_by_key(|error| std::cmp::Reverse(error.1 .0));
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(kind, (count, first, last))| {
            json!({"kind": kind, "count": count, "first_unix": first, "last_unix": last})
        })
        .collect();
    store.close().await;
    println!(
        "{}",
        json!({
            "cmd": "worker-failure",
            "clients": clients,
            "started_unix": started_unix,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "acked_stores": tally.acked.len(),
            "failed_stores": tally.store_failed.len(),
            "stored_despite_error": stored_despite_error,
            "handed_out": tally.handed_out.len(),
            "lost_acked_stores": lost,
            "lost_examples": lost_examples,
            "consumed_twice": consumed_twice,
            "consumed_without_answer": consumed_unanswered,
            "consumed_at_check": consumed_now,
            "unreadable_at_check": unreadable,
            "errors": errors,
            "clean_per_second": tally.clean_per_second,
            "failed_per_second": tally.failed_per_second,
        })
    );
    Ok(())
}
