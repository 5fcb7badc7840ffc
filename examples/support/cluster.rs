//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a
//! free port on 127.0.0.1 with trust authentication, stoppable (`-m immediate`, i.e. a crash)
//! and startable again; dropping it stops the server and removes the directory.
//!
//! Shared by the quickstart (`examples/quickstart.rs`) and the tests (`tests/common/mod.rs`,
//! which include this file with `#[path]`): both fall back on [`start_until_process_exit`]
//! when nothing answers at `DATABASE_URL`.
//!
//! The server binaries are found in `$PG_BINDIR`, else the newest
//! `/usr/lib/postgresql/<version>/bin`, else through `pg_config --bindir`, else on `PATH`.
//! A failing server command panics with its output and the server log.
//!
//! A cluster can also be a streaming standby of another ([`TempCluster::standby_of`], a base
//! backup or a cold copy), promoted to a primary with [`TempCluster::promote`].
//!
//! PostgreSQL refuses to run as root. When this runs as root, every server command runs
//! as the `postgres` user through `runuser`, and the cluster's files belong to that user.

use par_store::sqlx::postgres::PgConnectOptions;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The OS user that owns the cluster when the tests run as root.
const SERVER_USER: &str = "postgres";

/// See the module documentation.
pub struct TempCluster {
    base: PathBuf,
    data: PathBuf,
    sockets: PathBuf,
    log: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// `Some((uid, gid))` of the server user when running as root.
    owner: Option<(u32, u32)>,
    running: AtomicBool,
}

impl TempCluster {
    /// A new cluster, initialised and started.
    pub async fn start_new() -> TempCluster {
        let cluster = TempCluster::init().await;
        cluster.start().await;
        cluster
    }

    /// A new cluster, initialised (trust authentication, UTF8) but not started: add files
    /// and configuration, then [`start`](Self::start) it.
    pub async fn init() -> TempCluster {
        let cluster = TempCluster::empty();
        cluster
            .run_ok(
                "initdb",
                &[
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "--auth=trust".as_ref(),
                    "--encoding=UTF8".as_ref(),
                    "--locale=C".as_ref(),
                    "--no-sync".as_ref(),
                ],
            )
            .await;
        // Small and quiet: these clusters hold a few hundred rows.
        cluster.append_config(
            "shared_buffers = 16MB\n\
             max_connections = 40\n\
             logging_collector = off\n\
             log_min_messages = warning\n",
        );
        cluster
    }

    /// A streaming standby of `primary` (which must be running), not started, replicating
    /// over `primary_address` (host and port; the primary's own address, or a proxy in front
    /// of it) with `application_name` (the name `synchronous_standby_names` refers to). The
    /// primary's configuration comes along.
    ///
    /// With `pg_basebackup` beside the server: a base backup taken with `pg_basebackup -R`,
    /// which also writes `primary_conninfo` and `standby.signal`. Without it (the server
    /// builds `.ci/pg-matrix` fetches have none): a cold copy, see
    /// [`copy_as_standby`](Self::copy_as_standby).
    pub async fn standby_of(
        primary: &TempCluster,
        primary_address: SocketAddr,
        application_name: &str,
    ) -> TempCluster {
        let cluster = TempCluster::empty();
        let conninfo = format!(
            "host={} port={} user=postgres application_name={application_name}",
            primary_address.ip(),
            primary_address.port()
        );
        if !cluster.bindir.join("pg_basebackup").is_file() {
            cluster.copy_as_standby(primary, &conninfo).await;
            return cluster;
        }
        cluster
            .run_ok(
                "pg_basebackup",
                &[
                    "-d".as_ref(),
                    conninfo.as_ref(),
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-R".as_ref(),
                    "-X".as_ref(),
                    "stream".as_ref(),
                    "-c".as_ref(),
                    "fast".as_ref(),
                    "--no-sync".as_ref(),
                ],
            )
            .await;
        cluster
    }

    /// Makes this (empty) cluster a standby of `primary` without `pg_basebackup`: `primary`
    /// is stopped cleanly (`pg_ctl stop -m fast` ends with a shutdown checkpoint, so its data
    /// directory is consistent at rest), copied, and started again; the copy gets what
    /// `pg_basebackup -R` writes, `standby.signal` and `primary_conninfo`. The standby starts
    /// from the shutdown checkpoint in its copied WAL and streams the rest.
    async fn copy_as_standby(&self, primary: &TempCluster, conninfo: &str) {
        primary.stop_fast().await;
        // `cp -a` keeps the server user as owner when this runs as root.
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&primary.data)
            .arg(&self.data)
            .status()
            .expect("run cp");
        assert!(
            copied.success(),
            "copying the primary's data directory failed"
        );
        for stale in ["postmaster.pid", "postmaster.opts"] {
            let _ = fs::remove_file(self.data.join(stale));
        }
        let signal = self.data.join("standby.signal");
        fs::write(&signal, "").expect("write standby.signal");
        self.give_to_server_user(&signal);
        let mut auto_conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.auto.conf"))
            .expect("open postgresql.auto.conf");
        std::io::Write::write_all(
            &mut auto_conf,
            format!("primary_conninfo = '{conninfo}'\n").as_bytes(),
        )
        .expect("write primary_conninfo");
        primary.start().await;
    }

    /// Directories and a port for a new cluster, with nothing in the data directory yet.
    fn empty() -> TempCluster {
        let bindir = server_bindir();
        let owner = server_owner();
        let base = std::env::temp_dir().join(format!(
            "par-store-cluster-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let data = base.join("data");
        let sockets = base.join("sockets");
        for dir in [&base, &sockets] {
            fs::create_dir_all(dir).expect("create the cluster's temporary directory");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        }
        let cluster = TempCluster {
            log: base.join("server.log"),
            base,
            data,
            sockets,
            bindir,
            port: free_port(),
            owner,
            running: AtomicBool::new(false),
        };
        cluster.give_to_server_user(&cluster.base);
        cluster.give_to_server_user(&cluster.sockets);
        cluster
    }

    /// The cluster's temporary directory, owned by the server user (the place for
    /// certificates and keys).
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// The TCP port the server listens on (on 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Appends lines to `postgresql.conf`; they apply at the next start.
    pub fn append_config(&self, lines: &str) {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(file, "\n{lines}").expect("write postgresql.conf");
    }

    /// Replaces `pg_hba.conf` (client authentication); applies at the next start.
    pub fn write_hba(&self, contents: &str) {
        // The file exists and keeps its owner and mode.
        fs::write(self.data.join("pg_hba.conf"), contents).expect("write pg_hba.conf");
    }

    /// Writes a file into the cluster's directory, owned by the server user, with `mode`.
    pub fn write_file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.base.join(name);
        fs::write(&path, contents).expect("write a file into the cluster directory");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self.give_to_server_user(&path);
        path
    }

    /// Starts the server (after [`init`](Self::init) or a stop) and waits until it accepts
    /// connections; crash recovery after an immediate stop included.
    pub async fn start(&self) {
        let server_options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.sockets.display()
        );
        self.run_ok(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                server_options.as_ref(),
            ],
        )
        .await;
        self.running.store(true, Ordering::SeqCst);
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`): every server process
    /// quits at once without a checkpoint, as in a crash; the next start runs crash recovery.
    pub async fn stop_immediate(&self) {
        self.stop("immediate").await;
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): sessions are ended and a shutdown
    /// checkpoint written.
    pub async fn stop_fast(&self) {
        self.stop("fast").await;
    }

    /// `pg_ctl stop -m <mode>`, waiting until the server is gone.
    async fn stop(&self, mode: &str) {
        self.run_ok(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
            ],
        )
        .await;
        self.running.store(false, Ordering::SeqCst);
    }

    /// Promotes a standby to a primary (`pg_ctl promote`) and waits until it accepts writes.
    pub async fn promote(&self) {
        self.run_ok(
            "pg_ctl",
            &[
                "promote".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
            ],
        )
        .await;
    }

    /// The server's TCP address (127.0.0.1 and [`port`](Self::port)).
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Connect options for the `postgres` database as the `postgres` superuser over TCP.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|err| format!("(no server log: {err})"))
    }

    /// Runs `program` as the server user and panics, with its output and the server log,
    /// unless it succeeds.
    async fn run_ok(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let output = self.run(program, args).await;
        let command = args.first().map(|arg| arg.to_string_lossy());
        assert!(
            output.status.success(),
            "{program} {} failed ({}):\n{}{}\n--- server log ---\n{}",
            command.unwrap_or_default(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
    }

    /// Keeps the server running for the rest of this process (for a cluster held in a
    /// `static`, which is never dropped) and returns its connect options and directory. A
    /// watchdog shell waits for this process to exit, however it exits (Ctrl-C and panics
    /// included), then stops the server and removes the directory.
    pub fn keep_until_process_exit(self) -> (PgConnectOptions, PathBuf) {
        let as_server_user = match self.owner {
            Some(_) => format!("runuser -u {SERVER_USER} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_server_user}'{pg_ctl}' stop -D '{data}' -m immediate -w; rm -rf '{base}'",
            pid = std::process::id(),
            pg_ctl = self.bindir.join("pg_ctl").display(),
            data = self.data.display(),
            base = self.base.display(),
        );
        spawn_watchdog(&script, "the cluster");
        let kept = (self.connect_options(), self.base.clone());
        std::mem::forget(self);
        kept
    }

    async fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let binary = self.bindir.join(program);
        let mut command = match self.owner {
            Some(_) => {
                let mut command = tokio::process::Command::new("runuser");
                command.arg("-u").arg(SERVER_USER).arg("--").arg(&binary);
                command
            }
            None => tokio::process::Command::new(&binary),
        };
        command
            .args(args)
            .current_dir(&self.base)
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(120), command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => panic!("could not run {}: {err}", binary.display()),
            Err(_) => panic!("{} did not finish within 120 s", binary.display()),
        }
    }

    fn give_to_server_user(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|err| panic!("chown {} to {SERVER_USER}: {err}", path.display()));
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let binary = self.bindir.join("pg_ctl");
            let mut command = match self.owner {
                Some(_) => {
                    let mut command = Command::new("runuser");
                    command.args(["-u", SERVER_USER, "--"]).arg(&binary);
                    command
                }
                None => Command::new(&binary),
            };
            let _ = command
                .arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w"])
                .current_dir(&self.base)
                .output();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Where initdb and pg_ctl are; panics with instructions when they are nowhere.
pub fn server_bindir() -> PathBuf {
    find_server_bindir().unwrap_or_else(|| {
        panic!(
            "this starts its own PostgreSQL cluster and needs the server binaries (initdb, \
             pg_ctl), which were not found in $PG_BINDIR, /usr/lib/postgresql/*/bin, `pg_config \
             --bindir` or PATH. Install the PostgreSQL server package (`.ci/run` does: apt-get \
             install postgresql) or set PG_BINDIR."
        )
    })
}

/// Where initdb and pg_ctl are, if anywhere.
pub fn find_server_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "PG_BINDIR={} holds no initdb and pg_ctl",
            dir.display()
        );
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_tools(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_tools(dir))
}

/// `Some((uid, gid))` of the server user when this process runs as root (the server refuses
/// root), `None` otherwise.
fn server_owner() -> Option<(u32, u32)> {
    let running_as = fs::metadata("/proc/self")
        .map(|meta| meta.uid())
        .expect("read /proc/self");
    if running_as != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == SERVER_USER)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    });
    Some(ids.unwrap_or_else(|| {
        panic!(
            "the tests run as root and PostgreSQL refuses root, but there is no `{SERVER_USER}` \
             user to run it as: install the PostgreSQL server package or run as another user"
        )
    }))
}

/// Starts `script` in a detached shell (no standard streams, a process group of its own, so
/// that a signal to the test's group spares it), as a watchdog that outlives this process:
/// `script` waits for this process to exit, however it exits (Ctrl-C and panics included),
/// then stops and removes what the test started. `what` names it in the panic when the shell
/// cannot be started.
#[allow(clippy::zombie_processes)] // the watchdog outlives this process by design
pub fn spawn_watchdog(script: &str, what: &str) {
    use std::os::unix::process::CommandExt as _;
    use std::process::Stdio;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("start {what}'s watchdog: {err}"));
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

/// Why [`start_until_process_exit`] started no cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStarted {
    /// No PostgreSQL server binaries (initdb, pg_ctl) are installed where
    /// [`find_server_bindir`] looks.
    NoServerBinaries,
    /// They are, but the cluster did not start (the panic message above says why).
    Failed,
}

/// A new throwaway cluster that runs until this process exits, then is stopped and removed
/// (see [`TempCluster::keep_until_process_exit`]): its connect options (user `postgres`,
/// database `postgres`, no password) and directory. Callable from inside a tokio runtime:
/// it starts the cluster on a thread and runtime of its own.
pub fn start_until_process_exit() -> Result<(PgConnectOptions, PathBuf), NotStarted> {
    find_server_bindir().ok_or(NotStarted::NoServerBinaries)?;
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(TempCluster::start_new())
            .keep_until_process_exit()
    })
    .join()
    .map_err(|_| NotStarted::Failed)
}

/// Whether anything accepts TCP connections at `host:port` within 3 s.
pub fn answers(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(3)).is_ok()
        })
}
