//! A PgBouncer of the test's own, in transaction mode (or as [`Settings`] say), in front of the tests' PostgreSQL
//! server (`DATABASE_URL`'s, or the throwaway cluster that replaces it; see
//! `server_options`): written into a temporary directory, started on a free port on 127.0.0.1,
//! killed (and the directory removed) when dropped, or, for one shared by a whole test binary
//! ([`PgBouncer::shared`]), once that binary has exited.
//!
//! Two flavours ([`Flavor`]):
//! - [`Flavor::Stock`] is the strict, ordinary setup of a transaction-mode pooler without
//!   prepared-statement support: PgBouncer 1.18 as Debian ships it (`max_prepared_statements`
//!   does not exist there; a newer binary gets `max_prepared_statements = 0`), no
//!   `ignore_startup_parameters`. The binary is `$PGBOUNCER`, else `pgbouncer` on `PATH`, else
//!   `/usr/sbin/pgbouncer` (`.ci/install-pgbouncer` installs Debian's package).
//! - [`Flavor::Prepared`] is what most production users run: PgBouncer 1.25.2 with
//!   `max_prepared_statements = 100` and `ignore_startup_parameters =
//!   extra_float_digits,options`. The binary is `$PGBOUNCER_1_25`, else
//!   `$PAR_STORE_PGBOUNCER_PREFIX/bin/pgbouncer`, else
//!   `~/.cache/par-store/pgbouncer-1.25.2/bin/pgbouncer` (`.ci/build-pgbouncer` builds it
//!   there from `../shared/pgbouncer/`); it must be 1.21 or newer.
//!
//! Either way a pool holds a few server connections per database and user
//! (`default_pool_size`), so that many client connections share them. A test that needs a
//! flavour asks [`Flavor::require`] first: when the binary is missing it is skipped outside CI
//! and fails under `CI=true`.
//!
//! PgBouncer refuses to run as root: when the tests run as root it runs as the `postgres`
//! user, which then owns the directory, from a copy of the binary in that directory (the
//! built one sits under root's home, which `postgres` cannot enter).

use super::cluster::free_port;
use super::{database_url, require_optional, server_options};
use par_store::sqlx::postgres::PgConnectOptions;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The OS user PgBouncer runs as when the tests run as root.
const BOUNCER_USER: &str = "postgres";

/// The PgBouncer that `.ci/build-pgbouncer` builds.
pub const PREPARED_VERSION: &str = "1.25.2";

/// Which PgBouncer, set up how: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// No prepared statements in transaction mode, no `ignore_startup_parameters`.
    Stock,
    /// PgBouncer 1.21+ (1.25.2) with `max_prepared_statements = 100` and
    /// `ignore_startup_parameters = extra_float_digits,options`.
    Prepared,
}

impl Flavor {
    /// The binary, or why there is none (and how to get one).
    pub fn find(self) -> Result<PathBuf, String> {
        match self {
            Flavor::Stock => match std::env::var_os("PGBOUNCER") {
                Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
                Some(path) => Err(format!(
                    "needs PgBouncer, and PGBOUNCER={} is no file: run `.ci/install-pgbouncer` \
                     (apt-get install pgbouncer) or fix PGBOUNCER",
                    Path::new(&path).display()
                )),
                None => stock_binary().ok_or_else(|| {
                    "needs PgBouncer, which is not in $PGBOUNCER, on PATH or at \
                     /usr/sbin/pgbouncer: run `.ci/install-pgbouncer` (apt-get install \
                     pgbouncer) or set PGBOUNCER"
                        .to_owned()
                }),
            },
            Flavor::Prepared => {
                let (binary, named_by) = prepared_binary();
                if !binary.is_file() {
                    return Err(format!(
                        "needs PgBouncer {PREPARED_VERSION} (prepared statements in transaction \
                         mode), not found at {} ({named_by}): run `.ci/build-pgbouncer`",
                        binary.display()
                    ));
                }
                match version(&binary) {
                    Some(found) if found >= (1, 21) => Ok(binary),
                    found => Err(format!(
                        "needs PgBouncer 1.21 or newer (prepared statements in transaction \
                         mode); {} ({named_by}) is {found:?}: run `.ci/build-pgbouncer`",
                        binary.display()
                    )),
                }
            }
        }
    }

    /// The binary, or `None` when the test is to be skipped (see
    /// [`require_optional`](super::require_optional): a line says so outside CI; under
    /// `CI=true` the test fails instead). `test` names the test in that line.
    pub fn require(self, test: &str) -> Option<PathBuf> {
        require_optional(self.find(), test)
    }
}

/// What a test may change in PgBouncer's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Which binary and prepared-statement setup.
    pub flavor: Flavor,
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// `pool_mode`: "transaction" (default) or "session".
    pub pool_mode: &'static str,
    /// `query_timeout` in seconds (0, the default: none). PgBouncer answers a query that
    /// runs longer with its own `FATAL 08P01 query timeout` and closes both connections.
    pub query_timeout_secs: u32,
    /// `log_connections` and `log_disconnections` (default off): every server connection
    /// PgBouncer opens is then logged ("new connection to server").
    pub log_connections: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flavor: Flavor::Stock,
            pool_size: PgBouncer::POOL_SIZE,
            pool_mode: "transaction",
            query_timeout_secs: 0,
            log_connections: false,
        }
    }
}

/// See the module documentation.
pub struct PgBouncer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Server connections PgBouncer opens per database and user (`default_pool_size`) in
    /// [`start`](Self::start)'s setup.
    pub const POOL_SIZE: u32 = 3;

    /// The [`Flavor::Stock`] setup with [`POOL_SIZE`](Self::POOL_SIZE): writes the
    /// configuration, starts PgBouncer and waits until it accepts connections. Fails when
    /// the binary is missing (ask [`Flavor::require`] first).
    pub async fn start() -> PgBouncer {
        PgBouncer::start_with(Settings::default()).await
    }

    /// Starts a PgBouncer as `settings` say. Fails when the binary is missing (ask
    /// [`Flavor::require`] first).
    pub async fn start_with(settings: Settings) -> PgBouncer {
        let (flavor, pool_size) = (settings.flavor, settings.pool_size);
        let binary = flavor.find().unwrap_or_else(|missing| panic!("{missing}"));
        // The tests' server: DATABASE_URL's, or the throwaway cluster used in its place.
        let server = server_options();
        let dir = std::env::temp_dir().join(format!(
            "par-store-pgbouncer-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        fs::create_dir_all(&dir).expect("create PgBouncer's temporary directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        let port = free_port();
        // Toward clients, `trust`: any client naming a user of the auth file is let in. Toward
        // the server, PgBouncer logs in with that user and the password the file gives it
        // (DATABASE_URL's), in case the server asks for one.
        let auth_file = dir.join("userlist.txt");
        fs::write(
            &auth_file,
            format!(
                "\"{}\" \"{}\"\n",
                server.get_username(),
                password_of(&database_url())
            ),
        )
        .expect("write the auth file");
        let flavor_settings = match flavor {
            // A binary with prepared-statement support is made to run without it.
            Flavor::Stock if version(&binary).is_some_and(|found| found >= (1, 21)) => {
                "max_prepared_statements = 0\n"
            }
            Flavor::Stock => "",
            Flavor::Prepared => {
                "max_prepared_statements = 100\n\
                 ignore_startup_parameters = extra_float_digits,options\n"
            }
        };
        let ini = dir.join("pgbouncer.ini");
        fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={server_port}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {auth_file}\n\
                 pool_mode = {pool_mode}\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 400\n\
                 logfile = {log}\n\
                 log_connections = {log_connections}\n\
                 log_disconnections = {log_connections}\n\
                 query_timeout = {query_timeout}\n\
                 {flavor_settings}",
                pool_mode = settings.pool_mode,
                log_connections = u8::from(settings.log_connections),
                query_timeout = settings.query_timeout_secs,
                host = server.get_host(),
                server_port = server.get_port(),
                auth_file = auth_file.display(),
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let owner = bouncer_owner();
        let binary = match owner {
            Some(_) => {
                let copy = dir.join("pgbouncer");
                fs::copy(&binary, &copy).unwrap_or_else(|err| {
                    panic!("copy {} into {}: {err}", binary.display(), dir.display())
                });
                copy
            }
            None => binary,
        };
        let mut command = Command::new(&binary);
        command
            .arg(&ini)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            for path in [&dir, &auth_file, &ini, &binary] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|err| {
                    panic!("chown {} to {BOUNCER_USER}: {err}", path.display())
                });
            }
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", binary.display()));
        let mut bouncer = PgBouncer {
            child: Some(child),
            dir,
            port,
        };
        bouncer.wait_until_listening().await;
        bouncer
    }

    /// One PgBouncer of `flavor` (10 server connections per database and user) shared by
    /// every test of this binary that asks, started on first use and stopped (its directory
    /// removed) by a watchdog once the binary has exited. Returns its port. Fails when the
    /// binary is missing (ask [`Flavor::require`] first).
    pub fn shared(flavor: Flavor) -> u16 {
        static STOCK: OnceLock<u16> = OnceLock::new();
        static PREPARED: OnceLock<u16> = OnceLock::new();
        let cell = match flavor {
            Flavor::Stock => &STOCK,
            Flavor::Prepared => &PREPARED,
        };
        *cell.get_or_init(|| {
            // On a thread and runtime of its own: this may be called inside any test's runtime.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(PgBouncer::start_with(Settings {
                        flavor,
                        pool_size: 10,
                        ..Settings::default()
                    }))
                    .keep_until_process_exit()
            })
            .join()
            .unwrap_or_else(|_| panic!("starting a shared {flavor:?} PgBouncer failed"))
        })
    }

    /// Leaves PgBouncer running until this process has exited, then a watchdog kills it and
    /// removes its directory. Returns its port.
    fn keep_until_process_exit(mut self) -> u16 {
        let child = self.child.take().expect("a running PgBouncer");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill {bouncer}; sleep 1; \
             kill -9 {bouncer} 2>/dev/null; rm -rf '{dir}'",
            pid = std::process::id(),
            bouncer = child.id(),
            dir = self.dir.display(),
        );
        super::cluster::spawn_watchdog(&script, "PgBouncer");
        let port = self.port;
        std::mem::forget(child);
        std::mem::forget(self);
        port
    }

    /// The port PgBouncer listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `options` (a test database's), sent through PgBouncer instead.
    pub fn route(&self, options: &PgConnectOptions) -> PgConnectOptions {
        route(self.port, options)
    }

    /// PgBouncer's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log"))
            .unwrap_or_else(|err| format!("(no PgBouncer log: {err})"))
    }

    /// Kills PgBouncer; its server connections end with it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("PgBouncer exited at start ({status}):\n{}", self.log());
                }
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "PgBouncer did not listen on port {} within 10 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `options` (a test database's), sent through the PgBouncer listening on `port`.
pub fn route(port: u16, options: &PgConnectOptions) -> PgConnectOptions {
    options.clone().host("127.0.0.1").port(port)
}

/// `pgbouncer` on `PATH`, else `/usr/sbin/pgbouncer`.
fn stock_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbouncer"))
        .find(|path| path.is_file());
    let default = Path::new("/usr/sbin/pgbouncer");
    on_path.or_else(|| default.is_file().then(|| default.to_owned()))
}

/// Where the 1.25.2 binary should be, and what named that place.
fn prepared_binary() -> (PathBuf, &'static str) {
    if let Some(path) = std::env::var_os("PGBOUNCER_1_25") {
        return (PathBuf::from(path), "$PGBOUNCER_1_25");
    }
    if let Some(prefix) = std::env::var_os("PAR_STORE_PGBOUNCER_PREFIX") {
        return (
            Path::new(&prefix).join("bin/pgbouncer"),
            "$PAR_STORE_PGBOUNCER_PREFIX",
        );
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    (
        Path::new(&home).join(format!(
            ".cache/par-store/pgbouncer-{PREPARED_VERSION}/bin/pgbouncer"
        )),
        "the default place",
    )
}

/// `(major, minor)` from `pgbouncer --version` ("PgBouncer 1.25.2"), if it runs.
fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = text.lines().next()?.strip_prefix("PgBouncer ")?;
    let mut parts = number.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The password in a `postgres://user:password@host/...` URL (not percent-decoded), or "".
fn password_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map_or("", |(_, password)| password)
}

/// `Some((uid, gid))` of the user PgBouncer runs as when this process runs as root.
fn bouncer_owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let output = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return None;
    }
    let ids = id(&["-u", BOUNCER_USER]).zip(id(&["-g", BOUNCER_USER]));
    Some(ids.unwrap_or_else(|| {
        panic!(
            "the tests run as root and PgBouncer refuses root, but there is no \
             `{BOUNCER_USER}` user to run it as"
        )
    }))
}
