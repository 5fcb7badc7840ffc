//! A scripted fake PostgreSQL server: an in-process TCP server that speaks just enough of
//! the v3 wire protocol for a `PostgresStore` to run its statements on it, and that fails a
//! chosen execution of a chosen statement in a chosen way ([`Fault`]).
//!
//! It answers the startup (AuthenticationOk, ParameterStatus, BackendKeyData,
//! ReadyForQuery), the extended protocol (Parse, Describe, Bind, Execute, Close, Sync, as
//! sqlx sends them: Parse + Describe + Sync to prepare, then Bind + Execute + Close + Sync)
//! and simple queries (`BEGIN`, `SET LOCAL ...`, `COMMIT`, `ROLLBACK` of pooler mode). Each
//! statement is recognised by its SQL ([`Kind`]) and answered with one plausible row, so that
//! the store decodes a success: a stored request, a live request found or consumed.
//!
//! The fake counts how many times each kind of statement was executed (an Execute message
//! received, whatever happened next), how many connections were opened, and every simple
//! query, so that a test asserts on what the store sent rather than on what it answered.

use par_store::sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The statements the store sends, told apart by their SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `SELECT 1` (the first connection of `connect_with`).
    Select1,
    /// `store`: `INSERT ... ON CONFLICT DO NOTHING RETURNING 1`.
    Insert,
    /// `store_or_replace`: `INSERT ... ON CONFLICT DO UPDATE`.
    Upsert,
    /// `get_by_hash`.
    SelectLive,
    /// `consume_by_hash` and the other consumes: `WITH target AS (SELECT ... FOR UPDATE) ...`.
    Consume,
    /// `delete_by_client_id`.
    DeleteByClient,
    /// A cleanup batch.
    DeleteExpired,
    /// `COMMIT` (a simple query, pooler mode); only [`Fault::EofAfterSync`] and
    /// [`Fault::FatalBeforeComplete`] apply to it.
    Commit,
    /// Anything else.
    Other,
}

impl Kind {
    fn of(sql: &str) -> Kind {
        let sql = sql.trim_start();
        if sql.starts_with("INSERT INTO pushed_authorization_requests")
            && sql.contains("DO NOTHING")
        {
            Kind::Insert
        } else if sql.starts_with("WITH locked AS (")
            && sql.contains("INSERT INTO pushed_authorization_requests")
        {
            Kind::Upsert
        } else if sql.starts_with("SELECT expires_at") {
            Kind::SelectLive
        } else if sql.starts_with("WITH taken") {
            Kind::Consume
        } else if sql.starts_with("WITH requests") && sql.contains("client_id = $1") {
            Kind::DeleteByClient
        } else if sql.starts_with("WITH requests") {
            Kind::DeleteExpired
        } else if sql.starts_with("SELECT 1") {
            Kind::Select1
        } else {
            Kind::Other
        }
    }
}

/// What the fake does to one execution of a statement instead of answering it normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An ErrorResponse at severity FATAL with this SQLSTATE in place of the statement's
    /// result (before CommandComplete), then the connection is closed.
    FatalBeforeComplete(&'static str),
    /// The whole result up to CommandComplete, then an ErrorResponse at FATAL with this
    /// SQLSTATE (no ReadyForQuery), then the connection is closed.
    FatalAfterComplete(&'static str),
    /// The whole result up to CommandComplete, then the connection is closed.
    EofAfterComplete,
    /// The messages are read through Sync, and the connection is closed without a reply:
    /// the statement ran, its answer was lost.
    EofAfterSync,
    /// An ErrorResponse at severity ERROR with this SQLSTATE in place of the result; the
    /// session goes on (ReadyForQuery at Sync), as PostgreSQL's does.
    Error(&'static str),
}

#[derive(Default)]
struct State {
    executions: HashMap<Kind, usize>,
    faults: HashMap<Kind, VecDeque<Fault>>,
    connections: usize,
    simple_queries: Vec<String>,
}

/// See the module documentation.
pub struct FakeBackend {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept_loop: JoinHandle<()>,
}

impl FakeBackend {
    /// Starts the fake on a free port of 127.0.0.1, on the current runtime.
    pub async fn start() -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake backend");
        let address = listener.local_addr().expect("fake backend address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let accept_loop = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(socket, Arc::clone(&shared)));
            }
        });
        FakeBackend {
            address,
            state,
            accept_loop,
        }
    }

    /// Connect options pointing at the fake.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.address.ip().to_string())
            .port(self.address.port())
            .username("postgres")
            .database("fake")
            .ssl_mode(PgSslMode::Disable)
    }

    /// The next execution of `kind` not yet scripted gets `fault` (faults queue up per kind).
    pub fn fail_next(&self, kind: Kind, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(kind)
            .or_default()
            .push_back(fault);
    }

    /// How many times a statement of `kind` was executed (Execute received).
    pub fn executions(&self, kind: Kind) -> usize {
        self.state
            .lock()
            .unwrap()
            .executions
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// How many connections were opened to the fake.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Every simple query received so far, in order.
    pub fn simple_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().simple_queries.clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

// Type OIDs.
const BOOL: i32 = 16;
const INT8: i32 = 20;
const INT4: i32 = 23;
const TEXT: i32 = 25;
const TIMESTAMPTZ: i32 = 1184;

/// The result columns of each statement kind.
fn columns(kind: Kind) -> &'static [(&'static str, i32)] {
    match kind {
        Kind::Select1 => &[("?column?", INT4)],
        Kind::Insert => &[("?column?", INT4)],
        Kind::SelectLive => &[
            ("expires_at", TIMESTAMPTZ),
            ("parameters", TEXT),
            ("client_id", TEXT),
        ],
        Kind::Consume => &[
            ("taken", BOOL),
            ("expires_at", TIMESTAMPTZ),
            ("parameters", TEXT),
            ("client_id", TEXT),
            ("?column?", BOOL),
            ("consumed_at", TIMESTAMPTZ),
            ("kept", BOOL),
        ],
        Kind::Upsert => &[("?column?", INT4)],
        Kind::DeleteByClient | Kind::DeleteExpired => &[("?column?", INT8)],
        Kind::Commit | Kind::Other => &[],
    }
}

/// An hour from now, in PostgreSQL's binary timestamptz.
fn an_hour_ahead() -> Vec<u8> {
    let micros =
        (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_micros() - 946_684_800_000_000;
    micros.to_be_bytes().to_vec()
}

/// The one row (binary values; `None` is NULL) and the command tag of each kind.
fn result(kind: Kind) -> (Option<Vec<Option<Vec<u8>>>>, &'static str) {
    match kind {
        Kind::Select1 => (Some(vec![Some(1i32.to_be_bytes().to_vec())]), "SELECT 1"),
        Kind::Insert => (Some(vec![Some(1i32.to_be_bytes().to_vec())]), "INSERT 0 1"),
        Kind::SelectLive => (
            Some(vec![
                Some(an_hour_ahead()),
                Some(b"scope=openid".to_vec()),
                None,
            ]),
            "SELECT 1",
        ),
        // A live request of no client, consumed by this statement.
        Kind::Consume => (
            Some(vec![
                Some(vec![1]),
                Some(an_hour_ahead()),
                Some(b"scope=openid".to_vec()),
                None,
                Some(vec![1]),
                None,
                Some(vec![0]),
            ]),
            "SELECT 1",
        ),
        Kind::Upsert => (Some(vec![Some(1i32.to_be_bytes().to_vec())]), "INSERT 0 1"),
        Kind::DeleteByClient => (Some(vec![Some(1i64.to_be_bytes().to_vec())]), "SELECT 1"),
        Kind::DeleteExpired => (Some(vec![Some(0i64.to_be_bytes().to_vec())]), "SELECT 1"),
        Kind::Commit | Kind::Other => (None, "SELECT 0"),
    }
}

fn message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn error_response(out: &mut Vec<u8>, severity: &str, code: &str) {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', "scripted by the fake backend"),
    ] {
        body.push(field);
        cstr(&mut body, value);
    }
    body.push(0);
    message(out, b'E', &body);
}

fn ready(out: &mut Vec<u8>, status: u8) {
    message(out, b'Z', &[status]);
}

fn row_description(out: &mut Vec<u8>, kind: Kind) {
    let cols = columns(kind);
    if cols.is_empty() {
        message(out, b'n', &[]);
        return;
    }
    let mut body = (i16::try_from(cols.len()).unwrap()).to_be_bytes().to_vec();
    for (name, oid) in cols {
        cstr(&mut body, name);
        body.extend_from_slice(&0i32.to_be_bytes()); // table
        body.extend_from_slice(&0i16.to_be_bytes()); // column
        body.extend_from_slice(&oid.to_be_bytes());
        let len: i16 = match *oid {
            BOOL => 1,
            INT4 => 4,
            TIMESTAMPTZ => 8,
            _ => -1,
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes()); // typmod
        body.extend_from_slice(&0i16.to_be_bytes()); // format
    }
    message(out, b'T', &body);
}

/// The result of one execution up to and including CommandComplete.
fn execution_result(out: &mut Vec<u8>, kind: Kind) {
    let (row, tag) = result(kind);
    if let Some(values) = row {
        let mut body = (i16::try_from(values.len()).unwrap())
            .to_be_bytes()
            .to_vec();
        for value in values {
            match value {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    body.extend_from_slice(&(i32::try_from(bytes.len()).unwrap()).to_be_bytes());
                    body.extend_from_slice(&bytes);
                }
            }
        }
        message(out, b'D', &body);
    }
    let mut body = Vec::new();
    cstr(&mut body, tag);
    message(out, b'C', &body);
}

fn read_cstr(body: &[u8], at: &mut usize) -> String {
    let end = body[*at..].iter().position(|&b| b == 0).unwrap() + *at;
    let text = String::from_utf8_lossy(&body[*at..end]).into_owned();
    *at = end + 1;
    text
}

/// What the connection does once it reaches the next Sync.
#[derive(PartialEq, Eq)]
enum AtSync {
    Ready,
    /// An ERROR was sent: skip to Sync, then ReadyForQuery.
    Skipping,
    /// Close at Sync, after writing what is pending.
    Close,
}

async fn serve(socket: TcpStream, state: Arc<Mutex<State>>) {
    let _ = socket.set_nodelay(true);
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    // Startup, after an optional SSLRequest.
    loop {
        let Ok(len) = read.read_i32().await else {
            return;
        };
        let mut body = vec![0u8; usize::try_from(len - 4).unwrap()];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        if body.starts_with(&80_877_103i32.to_be_bytes()) {
            if write.write_all(b"N").await.is_err() {
                return;
            }
            continue;
        }
        break;
    }
    let mut out = Vec::new();
    message(&mut out, b'R', &0i32.to_be_bytes());
    for (name, value) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, value);
        message(&mut out, b'S', &body);
    }
    let mut key = 4242i32.to_be_bytes().to_vec();
    key.extend_from_slice(&7i32.to_be_bytes());
    message(&mut out, b'K', &key);
    ready(&mut out, b'I');
    if write.write_all(&out).await.is_err() {
        return;
    }
    out.clear();

    let mut statements: HashMap<String, (Kind, Vec<i32>)> = HashMap::new();
    let mut portal = Kind::Other;
    let mut at_sync = AtSync::Ready;
    let mut in_transaction = false;
    let mut failed_transaction = false;
    loop {
        let Ok(tag) = read.read_u8().await else {
            return;
        };
        let Ok(len) = read.read_i32().await else {
            return;
        };
        let mut body = vec![0u8; usize::try_from(len - 4).unwrap()];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        if tag == b'X' {
            return;
        }
        if tag == b'S' {
            match at_sync {
                AtSync::Close => {
                    let _ = write.write_all(&out).await;
                    let _ = write.shutdown().await;
                    return;
                }
                AtSync::Ready | AtSync::Skipping => {
                    let status = match (in_transaction, failed_transaction) {
                        (false, _) => b'I',
                        (true, false) => b'T',
                        (true, true) => b'E',
                    };
                    ready(&mut out, status);
                    at_sync = AtSync::Ready;
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            continue;
        }
        if at_sync != AtSync::Ready {
            continue;
        }
        let mut at = 0;
        match tag {
            b'Q' => {
                let sql = read_cstr(&body, &mut at);
                state.lock().unwrap().simple_queries.push(sql.clone());
                for part in sql.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let word = part
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_uppercase();
                    if word == "COMMIT" {
                        let fault = {
                            let mut state = state.lock().unwrap();
                            *state.executions.entry(Kind::Commit).or_default() += 1;
                            state
                                .faults
                                .get_mut(&Kind::Commit)
                                .and_then(VecDeque::pop_front)
                        };
                        match fault {
                            None => {}
                            Some(Fault::FatalBeforeComplete(code)) => {
                                error_response(&mut out, "FATAL", code);
                                let _ = write.write_all(&out).await;
                                let _ = write.shutdown().await;
                                return;
                            }
                            Some(_) => {
                                let _ = write.shutdown().await;
                                return;
                            }
                        }
                    }
                    match word.as_str() {
                        "BEGIN" => in_transaction = true,
                        "COMMIT" | "ROLLBACK" => {
                            in_transaction = false;
                            failed_transaction = false;
                        }
                        _ => {}
                    }
                    let mut tag_body = Vec::new();
                    cstr(&mut tag_body, &word);
                    message(&mut out, b'C', &tag_body);
                }
                ready(&mut out, if in_transaction { b'T' } else { b'I' });
                if write.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            b'P' => {
                let name = read_cstr(&body, &mut at);
                let sql = read_cstr(&body, &mut at);
                let count = i16::from_be_bytes([body[at], body[at + 1]]);
                at += 2;
                let oids = (0..count)
                    .map(|i| {
                        let i = at + 4 * usize::try_from(i).unwrap();
                        i32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]])
                    })
                    .collect();
                statements.insert(name, (Kind::of(&sql), oids));
                message(&mut out, b'1', &[]);
            }
            b'D' => {
                let what = body[0];
                at = 1;
                let name = read_cstr(&body, &mut at);
                let (kind, oids) = statements
                    .get(&name)
                    .cloned()
                    .unwrap_or((Kind::Other, vec![]));
                if what == b'S' {
                    let mut params = (i16::try_from(oids.len()).unwrap()).to_be_bytes().to_vec();
                    for oid in oids {
                        params.extend_from_slice(&oid.to_be_bytes());
                    }
                    message(&mut out, b't', &params);
                }
                row_description(&mut out, kind);
            }
            b'B' => {
                let _portal = read_cstr(&body, &mut at);
                let name = read_cstr(&body, &mut at);
                portal = statements.get(&name).map_or(Kind::Other, |(kind, _)| *kind);
                message(&mut out, b'2', &[]);
            }
            b'E' => {
                let kind = portal;
                let fault = {
                    let mut state = state.lock().unwrap();
                    *state.executions.entry(kind).or_default() += 1;
                    state.faults.get_mut(&kind).and_then(VecDeque::pop_front)
                };
                match fault {
                    None => execution_result(&mut out, kind),
                    Some(Fault::FatalBeforeComplete(code)) => {
                        error_response(&mut out, "FATAL", code);
                        at_sync = AtSync::Close;
                    }
                    Some(Fault::FatalAfterComplete(code)) => {
                        execution_result(&mut out, kind);
                        error_response(&mut out, "FATAL", code);
                        at_sync = AtSync::Close;
                    }
                    Some(Fault::EofAfterComplete) => {
                        execution_result(&mut out, kind);
                        at_sync = AtSync::Close;
                    }
                    Some(Fault::EofAfterSync) => {
                        out.clear();
                        at_sync = AtSync::Close;
                    }
                    Some(Fault::Error(code)) => {
                        error_response(&mut out, "ERROR", code);
                        failed_transaction = in_transaction;
                        at_sync = AtSync::Skipping;
                    }
                }
            }
            b'C' => message(&mut out, b'3', &[]),
            _ => {}
        }
    }
}
