//! A PgBouncer of the test's own, in transaction mode (or as [`Settings`] say), in front of the PostgreSQL server at
//! `DATABASE_URL`: written into a temporary directory, started on a free port on 127.0.0.1,
//! killed (and the directory removed) when dropped.
//!
//! It is the strict, ordinary setup of a transaction-mode pooler without prepared-statement
//! support: PgBouncer 1.18 as Debian ships it (`max_prepared_statements` does not exist
//! there), no `ignore_startup_parameters`, and [`PgBouncer::POOL_SIZE`] server connections
//! per database and user, so that many client connections share a few server connections.
//!
//! The binary is `$PGBOUNCER`, else `pgbouncer` on `PATH`, else `/usr/sbin/pgbouncer`; when
//! none is there the test fails saying so (`.ci/install-pgbouncer` installs Debian's
//! package). PgBouncer refuses to run as root: when the tests run as root it runs as the
//! `postgres` user, which then owns the directory.

use super::cluster::free_port;
use super::database_url;
use par_store::sqlx::postgres::PgConnectOptions;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The OS user PgBouncer runs as when the tests run as root.
const BOUNCER_USER: &str = "postgres";

/// What a test may change in PgBouncer's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
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
    /// Server connections PgBouncer opens per database and user (`default_pool_size`).
    pub const POOL_SIZE: u32 = 3;

    /// Writes the configuration, starts PgBouncer and waits until it accepts connections.
    pub async fn start() -> PgBouncer {
        PgBouncer::start_with(Settings::default()).await
    }

    /// Like [`start`](Self::start), with other [`Settings`].
    pub async fn start_with(settings: Settings) -> PgBouncer {
        let binary = binary();
        let server = PgConnectOptions::from_str(&database_url()).expect("valid DATABASE_URL");
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
                 max_client_conn = 200\n\
                 logfile = {log}\n\
                 log_connections = {log_connections}\n\
                 log_disconnections = {log_connections}\n\
                 query_timeout = {query_timeout}\n",
                pool_mode = settings.pool_mode,
                log_connections = u8::from(settings.log_connections),
                query_timeout = settings.query_timeout_secs,
                host = server.get_host(),
                server_port = server.get_port(),
                auth_file = auth_file.display(),
                pool_size = Self::POOL_SIZE,
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let mut command = Command::new(&binary);
        command
            .arg(&ini)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = bouncer_owner() {
            for path in [&dir, &auth_file, &ini] {
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

    /// The port PgBouncer listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `options` (a test database's), sent through PgBouncer instead.
    pub fn route(&self, options: &PgConnectOptions) -> PgConnectOptions {
        options.clone().host("127.0.0.1").port(self.port)
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

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBOUNCER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbouncer"))
        .find(|path| path.is_file());
    let default = Path::new("/usr/sbin/pgbouncer");
    on_path
        .or_else(|| default.is_file().then(|| default.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "this test starts a PgBouncer and needs its binary, which is not in $PGBOUNCER, \
                 on PATH or at /usr/sbin/pgbouncer: run `.ci/install-pgbouncer` (apt-get \
                 install pgbouncer) or set PGBOUNCER"
            )
        })
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
