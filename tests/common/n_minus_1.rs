//! The previous release of par-store, built from this repository's own history, as server
//! instances of their own beside main's: the support of the N-1 test (`tests/n_minus_1.rs`).
//!
//! [`previous_release`] builds it once (per test binary, and under a lock file across test
//! binaries): the commit named in `.ci/previous-release` is extracted from git into
//! `<target>/n-1/par-store`, the driver crate of `tests/n-1/driver` is copied beside it into
//! `<target>/n-1/driver` with main's `Cargo.lock` (so the same dependency versions resolve),
//! and cargo builds it into main's own target directory (so main's compiled dependencies
//! are reused wherever their features agree). [`OldInstance`] is one running driver process:
//! one server instance of the previous release with a pool of its own, many requests in
//! flight at once over its line protocol (`tests/n-1/driver/src/main.rs`).

use par_store::sqlx::postgres::PgConnectOptions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

/// The file that names the previous release's commit.
pub const PIN_FILE: &str = ".ci/previous-release";

/// The driver's binary name (its package name).
const DRIVER: &str = "par-store-n-1-driver";

/// What [`previous_release`] built.
#[derive(Debug)]
pub struct PreviousRelease {
    /// The full commit hash from [`PIN_FILE`].
    pub commit: String,
    /// The driver binary.
    pub driver: PathBuf,
    /// How long `cargo build` of the driver took in this process (an up-to-date build
    /// included: then it is cargo's check alone).
    pub build_time: Duration,
}

/// The repository's root (main's workspace).
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The commit named in [`PIN_FILE`]: its first line that is neither blank nor a comment.
pub fn pinned_commit() -> String {
    let path = repository().join(PIN_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let commit = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_else(|| panic!("{PIN_FILE} names no commit"))
        .to_owned();
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{PIN_FILE} must hold a full 40-character commit hash, not {commit:?}"
    );
    commit
}

/// The target directory and profile directory this test binary was built into
/// (`<target>/<profile>/deps/<test>`), so that the driver is built beside it.
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's directory");
    let profile_dir = deps.parent().expect("the profile directory");
    let target = profile_dir.parent().expect("the target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug")
        .to_owned();
    (target.to_path_buf(), profile)
}

/// The previous release's driver, built on first use (see the module docs). Panics with what
/// to do when the pinned commit is not in this clone's history or the build fails.
pub fn previous_release() -> &'static PreviousRelease {
    static BUILT: OnceLock<PreviousRelease> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> PreviousRelease {
    let commit = pinned_commit();
    let root = repository();
    let has_commit = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_commit,
        "the previous release's commit {commit} ({PIN_FILE}) is not in this clone's git \
         history: the N-1 test builds it from there. Clone with history (a shallow clone: \
         `git fetch --unshallow`), or fetch that commit"
    );

    let (target, profile) = target_and_profile();
    let work = target.join("n-1");
    std::fs::create_dir_all(&work).expect("create <target>/n-1");
    // Across test binaries (and concurrent `cargo test`s): one extraction and build at a time.
    let lock = std::fs::File::create(work.join(".lock")).expect("create <target>/n-1/.lock");
    lock.lock().expect("lock <target>/n-1/.lock");

    // The previous release's source, extracted once per commit.
    let source = work.join("par-store");
    let extracted = source.join(".commit");
    if std::fs::read_to_string(&extracted).ok().as_deref() != Some(commit.as_str()) {
        let _ = std::fs::remove_dir_all(&source);
        std::fs::create_dir_all(&source).expect("create <target>/n-1/par-store");
        let mut archive = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["archive", "--format=tar", &commit])
            .args(["Cargo.toml", "src", "migrations", "sqlx.toml", "README.md"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run git archive");
        let untar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&source)
            .stdin(archive.stdout.take().expect("git archive's output"))
            .status()
            .expect("run tar");
        let archived = archive.wait().expect("wait for git archive");
        assert!(
            archived.success() && untar.success(),
            "extracting {commit} with git archive | tar failed"
        );
        // Its own manifest names a workspace (with members this extract leaves out): the
        // previous release is built as the driver's path dependency only.
        let manifest = source.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("read the old Cargo.toml");
        let text = match text.find("\n[workspace]") {
            Some(at) => text[..at].to_owned() + "\n",
            None => text,
        };
        std::fs::write(&manifest, text).expect("write the old Cargo.toml");
        std::fs::write(&extracted, &commit).expect("write <target>/n-1/par-store/.commit");
    }

    // The driver crate beside it, written only where it changed (cargo goes by mtimes).
    let driver_dir = work.join("driver");
    let template = root.join("tests/n-1/driver");
    for file in ["Cargo.toml", "src/main.rs"] {
        let to = driver_dir.join(file);
        let text = std::fs::read(template.join(file)).expect("read the driver crate");
        if std::fs::read(&to).ok() != Some(text.clone()) {
            std::fs::create_dir_all(to.parent().expect("a directory")).expect("create dirs");
            std::fs::write(&to, text).expect("copy the driver crate");
        }
    }
    // Main's lock file, so that the previous release builds against the same versions of
    // its dependencies as main (and reuses them as built).
    std::fs::copy(root.join("Cargo.lock"), driver_dir.join("Cargo.lock")).expect("copy Cargo.lock");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_build = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .arg("build")
            .arg("--manifest-path")
            .arg(driver_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR");
        // What cargo set for this test process describes main's package, not the driver's
        // build, and build scripts watch some of it (ring's, CARGO_MANIFEST_DIR): inherited,
        // it would make main's compiled dependencies look stale and rebuild them.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&name)
            {
                command.env_remove(name);
            }
        }
        if profile == "release" {
            command.arg("--release");
        }
        if offline {
            command.arg("--offline");
        }
        command.output().expect("run cargo build for the driver")
    };
    let started = Instant::now();
    // Offline first: main's build has fetched every crate the previous release needs
    // unless its dependencies changed since; then the registry is asked.
    let mut built = cargo_build(true);
    if !built.status.success() {
        built = cargo_build(false);
    }
    let build_time = started.elapsed();
    assert!(
        built.status.success(),
        "building the previous release ({commit}) failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let driver = target.join(&profile).join(DRIVER);
    assert!(driver.is_file(), "no driver at {}", driver.display());
    super::print_once(&format!(
        "N-1: the previous release {} built in {:.1} s (cargo build of {}; about a second when up to date)",
        &commit[..7],
        build_time.as_secs_f64(),
        driver_dir.display()
    ));
    drop(lock);
    PreviousRelease {
        commit,
        driver,
        build_time,
    }
}

/// A URL for the database `name` on the tests' server, for a driver process: `DATABASE_URL`
/// with its database replaced (credentials kept), or the throwaway cluster's address.
pub fn database_url_for(name: &str) -> String {
    let server = super::server_options();
    let url = super::database_url();
    let same_server = PgConnectOptions::from_str(&url).is_ok_and(|options| {
        options.get_host() == server.get_host() && options.get_port() == server.get_port()
    });
    if !same_server {
        return format!(
            "postgres://{}@{}:{}/{name}",
            server.get_username(),
            server.get_host(),
            server.get_port()
        );
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url.as_str(), None),
    };
    let after_scheme = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |at| after_scheme + at);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// One answer of a driver: its fields (`ok`, `found <client_id> <params>`, `error <kind>
/// <message>`, ...).
pub type Answer = Vec<String>;

/// One server instance of the previous release: a driver process with a pool of its own.
/// Requests go in concurrently, each tagged with an id; a reader task hands each answer to
/// its caller. Dropping it kills the process.
pub struct OldInstance {
    pub name: String,
    child: tokio::process::Child,
    stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OldInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OldInstance")
            .field("name", &self.name)
            .finish()
    }
}

impl OldInstance {
    /// Starts a driver on `url` with a pool of `max_connections` and the store options
    /// `options` (the driver's flags: `--markers off`, `--reload-within-ms 30000`), and
    /// waits until it has connected. `Err` holds what it said instead.
    pub async fn start(
        release: &PreviousRelease,
        name: &str,
        url: &str,
        max_connections: u32,
        options: &[String],
    ) -> Result<OldInstance, String> {
        let mut child = tokio::process::Command::new(&release.driver)
            .arg(url)
            .arg(max_connections.to_string())
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("starting {}: {err}", release.driver.display()))?;
        let stdin = child.stdin.take().expect("the driver's stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("the driver's stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| format!("{name}: the driver did not start within 30 s"))?
            .map_err(|err| format!("{name}: reading the driver: {err}"))?
            .unwrap_or_default();
        if first != "ready" {
            return Err(format!(
                "{name}: the driver said {first:?} instead of ready"
            ));
        }
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>> = Arc::default();
        let reader = tokio::spawn({
            let pending = Arc::clone(&pending);
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut fields = line.split('\t').map(str::to_owned);
                    let id = fields.next().and_then(|id| id.parse::<u64>().ok());
                    let answer: Answer = fields.collect();
                    if let Some(caller) = id.and_then(|id| pending.lock().unwrap().remove(&id)) {
                        let _ = caller.send(answer);
                    }
                }
                // The process is gone: every caller still waiting gets no answer.
                pending.lock().unwrap().clear();
            }
        });
        Ok(OldInstance {
            name: name.to_owned(),
            child,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    /// Sends one request (its fields, tab-separated on the wire) and waits for its answer;
    /// a driver that exited or stopped reading answers `error driver <why>`.
    pub async fn request(&self, fields: &[&str]) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, answer);
        let line = format!("{id}\t{}\n", fields.join("\t"));
        let sent = match self.stdin.lock().await.as_mut() {
            Some(stdin) => stdin.write_all(line.as_bytes()).await.is_ok(),
            None => false,
        };
        if !sent {
            self.pending.lock().unwrap().remove(&id);
            return driver_error("its stdin is closed");
        }
        match tokio::time::timeout(Duration::from_secs(60), answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => driver_error("it exited before answering"),
            Err(_) => driver_error("no answer within 60 s"),
        }
    }

    /// Stops the instance as a server is stopped: no new requests, the ones in flight
    /// finish, then the process exits (killed if it has not within 30 s).
    pub async fn stop(mut self) {
        self.stdin.lock().await.take();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = (&mut self.reader).await;
    }
}

fn driver_error(why: &str) -> Answer {
    vec!["error".into(), "driver".into(), why.into()]
}
