//! Through a real PgBouncer in transaction mode (tests/common/pgbouncer.rs: Debian's 1.18,
//! no prepared-statement support, no `ignore_startup_parameters`, 3 server connections shared
//! by the store's 8 client connections).
//!
//! What they show:
//! - pooler mode (`PostgresStoreOptions::pooler_mode(true)`) connects without any
//!   startup parameter PgBouncer refuses, and concurrent lifecycles through it give 0 wrong
//!   results, 0 errors, 0 panics and 0 rows deleted by a read;
//! - its `statement_timeout` survives the pooler: a statement stuck on a row lock is cancelled
//!   by the server after the configured time, and the setting does not leak to other clients
//!   of the same server connections;
//! - the fault is real: the default mode (named prepared statements) is refused at connect,
//!   and once let in (without the refused parameters) it gives wrong results and errors.
//!
//! Each test prints its figures with the prefix `pgbouncer:` (`--nocapture` to see them).

mod common;

use chrono::Utc;
use common::pgbouncer::{Flavor, PgBouncer};
use common::{hash, TestDb};
use futures::FutureExt;
use par_store::sqlx::postgres::PgConnectOptions;
use par_store::sqlx::{self, Connection, Executor, Row};
use par_store::{
    PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore, StoreError,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The load tests share two cores with the server and PgBouncer: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TASKS: u32 = 16;
const STORE_CONNECTIONS: u32 = 8;
const RUN_FOR: Duration = Duration::from_secs(4);
/// Requests stored first and only ever read during the run.
const SENTINELS: u32 = 40;
const FIRST_SENTINEL: u32 = 3_000_000_000;
/// Marks the server connections PgBouncer opened for the store (PgBouncer passes the
/// client's `application_name` on), so the test can count them.
const APPLICATION_NAME: &str = "par-store-through-pgbouncer";

/// Distinct parameters per request, of varied length, so that a row read under another
/// request's hash is noticed.
fn request(n: u32) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(
        hash(n),
        Utc::now() + chrono::Duration::seconds(3_600),
        format!(
            "client_id=client-{}&response_type=code&state={n}&redirect_uri=https%3A%2F%2Frp.example%2Fcb%2F{n}&pad={}",
            n % 97,
            "x".repeat((n % 500) as usize)
        ),
    )
}

/// What a run saw.
#[derive(Default, Debug)]
struct Figures {
    lifecycles: u64,
    operations: u64,
    errors: u64,
    wrong: u64,
    panics: u64,
    /// `consume_by_hash` calls that returned a request (each deleted a row).
    consumed: u64,
    /// Error messages (cut short) and how often each came.
    error_kinds: BTreeMap<String, u64>,
}

impl Figures {
    /// Runs one operation, counting it, its error or its panic; `None` unless it answered.
    async fn observe<T>(
        &mut self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        self.operations += 1;
        match AssertUnwindSafe(operation).catch_unwind().await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(StoreError::Duplicate)) => {
                // Every hash is stored once: a duplicate is a wrong answer.
                self.wrong += 1;
                None
            }
            Ok(Err(err)) => {
                self.errors += 1;
                self.note(err.to_string());
                None
            }
            Err(panic) => {
                self.panics += 1;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                self.note(format!("panic: {message}"));
                None
            }
        }
    }

    /// Counts a message by its kind: cut short, numbers (statement names) left out.
    fn note(&mut self, message: String) {
        let mut kind = String::new();
        for c in message.chars().take(110) {
            match (c.is_ascii_digit(), kind.ends_with('#')) {
                (true, true) => {}
                (true, false) => kind.push('#'),
                (false, _) => kind.push(c),
            }
        }
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    /// Counts a wrong answer when an operation answered something else than `expected`.
    fn expect(
        &mut self,
        answer: Option<Option<PushedAuthorizationRequest>>,
        expected: Option<&PushedAuthorizationRequest>,
    ) {
        if let Some(answer) = answer {
            if answer.as_ref() != expected {
                self.wrong += 1;
            }
        }
    }

    fn add(&mut self, other: Figures) {
        self.lifecycles += other.lifecycles;
        self.operations += other.operations;
        self.errors += other.errors;
        self.wrong += other.wrong;
        self.panics += other.panics;
        self.consumed += other.consumed;
        for (message, count) in other.error_kinds {
            *self.error_kinds.entry(message).or_default() += count;
        }
    }
}

/// One request's life, with a read of a sentinel in the middle.
async fn lifecycle(
    store: &PostgresStore,
    n: u32,
    sentinel: &PushedAuthorizationRequest,
    f: &mut Figures,
) {
    let request = request(n);
    let hash = request.reference_value_hash.as_str();
    f.lifecycles += 1;
    if f.observe(store.store(&request)).await.is_none() {
        return;
    }
    let got = f.observe(store.get_by_hash(hash)).await;
    f.expect(got, Some(&request));
    let got = f
        .observe(store.get_by_hash(&sentinel.reference_value_hash))
        .await;
    f.expect(got, Some(sentinel));
    let got = f.observe(store.get_by_hash(hash)).await;
    f.expect(got, Some(&request));
    let consumed = f.observe(store.consume_by_hash(hash)).await;
    f.consumed += u64::from(matches!(consumed, Some(Some(_))));
    f.expect(consumed, Some(&request));
    let again = f.observe(store.consume_by_hash(hash)).await;
    f.consumed += u64::from(matches!(again, Some(Some(_))));
    f.expect(again, None);
    let gone = f.observe(store.get_by_hash(hash)).await;
    f.expect(gone, None);
}

/// What the database says after a run, read over a direct connection.
#[derive(Debug)]
struct Aftermath {
    sentinels_left: i64,
    rows: i64,
    deleted: i64,
    inserted: i64,
}

/// Stores the sentinels, runs `TASKS` tasks of lifecycles for `RUN_FOR` on `store`, and
/// gathers their figures; also the most server connections seen in use by the store.
async fn run_lifecycles(db: &TestDb, store: &PostgresStore) -> (Figures, i64) {
    let sentinels: Arc<Vec<PushedAuthorizationRequest>> = Arc::new(
        (0..SENTINELS)
            .map(|k| request(FIRST_SENTINEL + k))
            .collect(),
    );
    let direct = PostgresStore::new(db.pool.clone());
    for sentinel in sentinels.iter() {
        direct
            .store(sentinel)
            .await
            .expect("store a sentinel directly");
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let sentinels = Arc::clone(&sentinels);
            tokio::spawn(async move {
                let mut figures = Figures::default();
                let mut i = 0;
                while started.elapsed() < RUN_FOR {
                    let n = task * 1_000_000 + i;
                    let sentinel = &sentinels[((task + i) % SENTINELS) as usize];
                    lifecycle(&store, n, sentinel, &mut figures).await;
                    i += 1;
                }
                figures
            })
        })
        .collect();
    // Meanwhile, how many server connections serve the store.
    let mut most_servers = 0;
    while started.elapsed() < RUN_FOR {
        most_servers = most_servers.max(server_connections(db).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut figures = Figures::default();
    for task in tasks {
        match task.await {
            Ok(task_figures) => figures.add(task_figures),
            Err(_) => figures.panics += 1,
        }
    }
    (figures, most_servers)
}

/// Backends of the test database opened by PgBouncer for the store.
async fn server_connections(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    )
    .bind(&db.name)
    .bind(APPLICATION_NAME)
    .fetch_one(&db.pool)
    .await
    .expect("count server connections")
}

/// Stops PgBouncer, waits for its server connections to end (a backend reports its table
/// statistics as it exits), then reads the table's state directly.
async fn aftermath(db: &TestDb, bouncer: &mut PgBouncer) -> Aftermath {
    bouncer.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server_connections(db).await > 0 {
        assert!(
            Instant::now() < deadline,
            "PgBouncer's server connections did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sentinels_left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE reference_value_hash = ANY($1)",
    )
    .bind(
        (0..SENTINELS)
            .map(|k| hash(FIRST_SENTINEL + k))
            .collect::<Vec<_>>(),
    )
    .fetch_one(&db.pool)
    .await
    .expect("count sentinels");
    // Consumed: every consume deletes the request's row (and may move it into the markers
    // table); nothing else deletes here.
    let (deleted, inserted): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_del, n_tup_ins \
         FROM pg_stat_user_tables WHERE relname = 'pushed_authorization_requests'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("read table statistics");
    Aftermath {
        sentinels_left,
        // Consumed markers left out: they stay until expires_at.
        rows: db.unconsumed_row_count().await,
        deleted,
        inserted,
    }
}

fn print_figures(mode: &str, figures: &Figures, most_servers: i64, after: &Aftermath) {
    println!(
        "pgbouncer: {mode}: {TASKS} tasks for {RUN_FOR:?}, {STORE_CONNECTIONS} store connections over \
         at most {most_servers} server connections (pool size {}): {} lifecycles, {} operations, \
         {} errors, {} wrong results, {} panics, {} consumes returned a request; afterwards \
         {}/{SENTINELS} sentinels left, {} rows, {} consumed (marked or deleted; {} by something else than a consume), \
         n_tup_ins {}",
        PgBouncer::POOL_SIZE,
        figures.lifecycles,
        figures.operations,
        figures.errors,
        figures.wrong,
        figures.panics,
        figures.consumed,
        after.sentinels_left,
        after.rows,
        after.deleted,
        after.deleted - figures.consumed as i64,
        after.inserted,
    );
    let mut kinds: Vec<_> = figures.error_kinds.iter().collect();
    kinds.sort_by_key(|(_, count)| std::cmp::Reverse(**count));
    for (message, count) in kinds.into_iter().take(8) {
        println!("pgbouncer: {mode}: {count} x {message}");
    }
}

/// sqlx's own panics (its decoder indexing a row of another statement's shape) are counted
/// by the tests; a report with a backtrace for each would bury the figures.
fn quiet_sqlx_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_sqlx = info
                .location()
                .is_some_and(|location| location.file().contains("/sqlx-"));
            if !in_sqlx {
                previous(info);
            }
        }));
    });
}

/// Connects a store with `options` to `connect` (through `bouncer`), runs the lifecycles,
/// stops PgBouncer and prints what happened.
async fn load_through(
    mode: &str,
    db: &TestDb,
    bouncer: &mut PgBouncer,
    options: PostgresStoreOptions,
    connect: PgConnectOptions,
) -> (Figures, i64, Aftermath) {
    let store = options.connect_with(connect).await.unwrap_or_else(|err| {
        panic!(
            "{mode} connects through PgBouncer: {err}\n{}",
            bouncer.log()
        )
    });
    let (figures, most_servers) = run_lifecycles(db, &store).await;
    store.close().await;
    let after = aftermath(db, bouncer).await;
    print_figures(mode, &figures, most_servers, &after);
    (figures, most_servers, after)
}

/// One test at a time: a fresh database and a PgBouncer in front of it; `None` when the test
/// is skipped for want of a PgBouncer binary (see `Flavor::require`).
async fn set_up(test: &str) -> Option<(tokio::sync::MutexGuard<'static, ()>, TestDb, PgBouncer)> {
    Flavor::Stock.require(test)?;
    let serial = SERIAL.lock().await;
    quiet_sqlx_panics();
    Some((serial, TestDb::new().await, PgBouncer::start().await))
}

/// Pooler mode, as a user behind PgBouncer sets it up.
fn pooler_mode() -> PostgresStoreOptions {
    PostgresStoreOptions::new()
        .pooler_mode(true)
        .max_connections(STORE_CONNECTIONS)
        .operation_timeout(Some(Duration::from_secs(5)))
}

fn through(bouncer: &PgBouncer, db: &TestDb) -> PgConnectOptions {
    bouncer
        .route(&db.options)
        .application_name(APPLICATION_NAME)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooler_mode_through_pgbouncer_gives_only_right_answers() {
    let Some((_serial, db, mut bouncer)) =
        set_up("pgbouncer::pooler_mode_through_pgbouncer_gives_only_right_answers").await
    else {
        return;
    };
    // No `ignore_startup_parameters`: connecting at all shows that pooler mode sends no
    // startup parameter PgBouncer refuses.
    let connect = through(&bouncer, &db);
    let (figures, most_servers, after) =
        load_through("pooler mode", &db, &mut bouncer, pooler_mode(), connect).await;

    assert!(
        most_servers >= 1 && most_servers <= i64::from(PgBouncer::POOL_SIZE),
        "the store's {STORE_CONNECTIONS} connections must share PgBouncer's {} server connections, saw {most_servers}",
        PgBouncer::POOL_SIZE
    );
    assert!(
        figures.lifecycles >= 50,
        "too few lifecycles to mean anything: {figures:?}"
    );
    assert_eq!(figures.panics, 0, "no panics: {:?}", figures.error_kinds);
    assert_eq!(figures.wrong, 0, "no wrong results");
    assert_eq!(figures.errors, 0, "no errors: {:?}", figures.error_kinds);
    assert_eq!(
        figures.consumed, figures.lifecycles,
        "each request consumed exactly once"
    );
    assert_eq!(
        after.sentinels_left,
        i64::from(SENTINELS),
        "a read deleted a sentinel"
    );
    assert_eq!(
        after.rows,
        i64::from(SENTINELS),
        "only the sentinels remain"
    );
    assert_eq!(
        after.deleted, figures.consumed as i64,
        "every consumed row was consumed by a consume that returned it"
    );
    assert_eq!(
        after.inserted,
        figures.lifecycles as i64 + i64::from(SENTINELS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooler_mode_statement_timeout_survives_pgbouncer() {
    const STATEMENT_TIMEOUT: Duration = Duration::from_millis(200);
    let Some((_serial, db, bouncer)) =
        set_up("pgbouncer::pooler_mode_statement_timeout_survives_pgbouncer").await
    else {
        return;
    };
    let store = pooler_mode()
        .statement_timeout(Some(STATEMENT_TIMEOUT))
        .connect_with(through(&bouncer, &db))
        .await
        .expect("pooler mode connects through PgBouncer");
    let request = request(7);
    let hash = request.reference_value_hash.as_str();
    store.store(&request).await.expect("store");

    // A direct transaction holds the row's lock; the store's consume must wait for it.
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_one(&mut *holder)
    .await
    .expect("lock the row");
    let started = Instant::now();
    let blocked = store.consume_by_hash(hash).await;
    let elapsed = started.elapsed();
    let outcome = match &blocked {
        Ok(answer) => format!("{answer:?}"),
        Err(err) => format!("error: {err}"),
    };
    println!(
        "pgbouncer: statement_timeout {STATEMENT_TIMEOUT:?}: the blocked consume ended after {elapsed:?}, {outcome}"
    );
    let err = blocked.expect_err("the consume waits on the lock and is cancelled");
    assert!(
        matches!(err, StoreError::Timeout { .. }),
        "a Timeout, got {err:?}"
    );
    assert!(
        err.to_string().contains("statement timeout"),
        "the server's statement timeout cancelled it (not the store's operation timeout): {err}"
    );
    assert!(
        elapsed >= STATEMENT_TIMEOUT - Duration::from_millis(20)
            && elapsed < Duration::from_secs(2),
        "cancelled after about {STATEMENT_TIMEOUT:?}, took {elapsed:?}"
    );
    holder.rollback().await.expect("release the lock");
    // The cancelled consume took nothing.
    assert_eq!(
        store.get_by_hash(hash).await.expect("get"),
        Some(request.clone())
    );
    assert_eq!(
        store.consume_by_hash(hash).await.expect("consume"),
        Some(request)
    );

    // `SET LOCAL` ended with each transaction: other clients of the same server connections
    // (all of them, held at once) see the server's default.
    let plain = bouncer.route(&db.options).extra_float_digits(None);
    let mut clients = Vec::new();
    for _ in 0..PgBouncer::POOL_SIZE {
        let mut conn = sqlx::PgConnection::connect_with(&plain)
            .await
            .expect("a plain client through PgBouncer");
        conn.execute(sqlx::raw_sql("BEGIN")).await.expect("begin");
        let row = conn
            .fetch_one(sqlx::raw_sql("SHOW statement_timeout"))
            .await
            .expect("show statement_timeout");
        let setting: String = row.try_get(0).expect("a text setting");
        assert_eq!(
            setting, "0",
            "statement_timeout leaked to another client of the pooler"
        );
        clients.push(conn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_mode_through_pgbouncer_is_refused_and_corrupts_data() {
    let Some((_serial, db, mut bouncer)) =
        set_up("pgbouncer::default_mode_through_pgbouncer_is_refused_and_corrupts_data").await
    else {
        return;
    };
    let default_mode = PostgresStoreOptions::new()
        .max_connections(STORE_CONNECTIONS)
        .operation_timeout(Some(Duration::from_secs(2)));

    // As it is, the default mode cannot even connect: PgBouncer refuses its startup
    // parameters (`extra_float_digits`, and `options` for the statement timeout).
    let refused = default_mode
        .connect_with(through(&bouncer, &db))
        .await
        .expect_err("PgBouncer refuses the default mode's startup parameters");
    println!("pgbouncer: default mode as it is: {refused}");
    assert!(
        refused
            .to_string()
            .contains("unsupported startup parameter"),
        "refused for its startup parameters, got: {refused}"
    );

    // Without those parameters it gets in, and its named statements land on other server
    // connections.
    let connect = through(&bouncer, &db).extra_float_digits(None);
    let options = default_mode.statement_timeout(None);
    let (figures, _, _) = load_through("default mode", &db, &mut bouncer, options, connect).await;
    assert!(
        figures.wrong + figures.errors + figures.panics > 0,
        "named statements through a transaction-mode pooler must go wrong, or this file tests nothing: {figures:?}"
    );
}

/// A frontend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstring(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}

/// Reads backend messages up to and including ReadyForQuery; returns their types and bodies.
async fn until_ready(stream: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut messages = Vec::new();
    loop {
        let kind = stream.read_u8().await.expect("read a message type");
        let len = stream.read_u32().await.expect("read a message length") as usize;
        let mut body = vec![0; len - 4];
        stream
            .read_exact(&mut body)
            .await
            .expect("read a message body");
        messages.push((kind, body));
        if kind == b'Z' {
            return messages;
        }
    }
}

/// A raw protocol connection through `bouncer` (trust authentication), ready for queries.
async fn raw_client(bouncer: &PgBouncer, db: &TestDb) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bouncer.port()))
        .await
        .expect("connect to PgBouncer");
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for part in ["user", db.options.get_username(), "database", &db.name, ""] {
        body.extend(cstring(part));
    }
    let mut startup = (body.len() as u32 + 4).to_be_bytes().to_vec();
    startup.extend(body);
    stream.write_all(&startup).await.expect("send the startup");
    until_ready(&mut stream).await;
    stream
}

/// Parse of the unnamed statement (one text parameter), then Sync: what sqlx 0.9 sends for
/// an unnamed statement (`persistent(false)`) before it sends Bind and Execute.
async fn parse_then_sync(stream: &mut tokio::net::TcpStream, sql: &str) {
    use tokio::io::AsyncWriteExt;
    let mut body = cstring("");
    body.extend(cstring(sql));
    body.extend(1u16.to_be_bytes());
    body.extend(25u32.to_be_bytes()); // text
    let mut flight = message(b'P', &body);
    flight.extend(message(b'S', &[]));
    stream.write_all(&flight).await.expect("send Parse");
    let replies = until_ready(stream).await;
    assert_eq!(replies.first().map(|m| m.0), Some(b'1'), "ParseComplete");
}

/// Bind of the unnamed statement with one text parameter, Execute, Sync; returns the text
/// of the first column of the first row.
async fn bind_execute(stream: &mut tokio::net::TcpStream, parameter: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut body = cstring("");
    body.extend(cstring(""));
    body.extend(0u16.to_be_bytes());
    body.extend(1u16.to_be_bytes());
    body.extend((parameter.len() as u32).to_be_bytes());
    body.extend(parameter.as_bytes());
    body.extend(0u16.to_be_bytes());
    let mut flight = message(b'B', &body);
    let mut execute = cstring("");
    execute.extend(0u32.to_be_bytes());
    flight.extend(message(b'E', &execute));
    flight.extend(message(b'S', &[]));
    stream
        .write_all(&flight)
        .await
        .expect("send Bind and Execute");
    let replies = until_ready(stream).await;
    let (_, row) = replies
        .iter()
        .find(|m| m.0 == b'D')
        .unwrap_or_else(|| panic!("no row: {replies:?}"));
    // DataRow: column count (2 bytes), then the first column's length (4) and bytes.
    String::from_utf8_lossy(&row[6..]).into_owned()
}

/// Why pooler mode keeps each statement inside `BEGIN ... COMMIT` (docs/postgresql.md):
/// sqlx 0.9 sends an unnamed statement in two flights, Parse + Describe + Sync, then Bind +
/// Execute + Sync. At the first ReadyForQuery a transaction-mode PgBouncer 1.18 gives the
/// server connection back to its pool, so the Bind can land where another client has parsed
/// *its* unnamed statement in between, and runs that statement with the first client's
/// parameters. Shown here with one server connection, so that the interleaving is certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_statement_outside_a_transaction_can_run_another_clients_statement() {
    let test = "an_unnamed_statement_outside_a_transaction_can_run_another_clients_statement";
    if Flavor::Stock.require(test).is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start_with(common::pgbouncer::Settings {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let mut a = raw_client(&bouncer, &db).await;
    let mut b = raw_client(&bouncer, &db).await;
    parse_then_sync(&mut a, "SELECT 'statement of A: ' || $1").await;
    parse_then_sync(&mut b, "SELECT 'statement of B: ' || $1").await;
    let answer = bind_execute(&mut a, "parameters of A").await;
    println!("pgbouncer: A's Bind after B's Parse ran {answer:?}");
    assert_eq!(answer, "statement of B: parameters of A");
}
