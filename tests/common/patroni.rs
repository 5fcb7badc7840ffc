//! A throwaway Patroni cluster for the tests, on free loopback ports: one etcd 3.4 member
//! (the DCS, through Patroni's `etcd3` client), three Patroni 3.0 nodes running PostgreSQL 15
//! (`/usr/lib/postgresql/15/bin`, data directories under a temporary directory), and HAProxy
//! 2.6 routing to the leader with Patroni's REST check (`GET /primary`, expect 200).
//!
//! Every process runs as the `postgres` user (when the tests run as root), in a process
//! group of its own, with its output in a log file beside its data. [`Patroni`]'s `Drop` stops
//! them all by PID (Patroni first, so that it restarts nothing, then each postmaster with
//! `SIGQUIT`, then HAProxy and etcd) and removes the directory, also when the test fails; a
//! watchdog shell does the same if the test process dies without unwinding.
//!
//! Timing, chosen for a test on two shared cores: `loop_wait` 1 s (a Patroni loop a second),
//! `ttl` 10 s (the leader key lives 10 s without renewal: a dead leader is replaced after 10 s
//! at most), `retry_timeout` 4 s (Patroni's rule `loop_wait + 2 x retry_timeout <= ttl`
//! holds: 1 + 8 <= 10). HAProxy checks every 500 ms, marks a node down after 2 failed checks
//! and up after 1 good one, and closes the sessions of a node it marks down
//! (`on-marked-down shutdown-sessions`, as Patroni's own HAProxy template does).
//!
//! Where Patroni, etcd, HAProxy, python3-etcd or PostgreSQL 15's binaries are missing,
//! [`missing`] says which (`.ci/install-patroni` installs them).

use par_store::sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PostgreSQL 15: the newest major version Patroni 3.0 supports.
pub const PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";
const SERVER_USER: &str = "postgres";
/// Patroni's scope (the cluster's name in the DCS).
const SCOPE: &str = "par";

fn binary(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| Path::new(dir).join(name))
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join(name)),
        )
        .find(|path| path.is_file())
}

/// The programs the cluster needs, found.
#[derive(Clone, Debug)]
pub struct Tools {
    patroni: PathBuf,
    patronictl: PathBuf,
    etcd: PathBuf,
    haproxy: PathBuf,
}

/// The tools, or why the cluster cannot be started here.
pub fn missing() -> Result<Tools, String> {
    let find = |name: &str, dirs: &[&str]| {
        binary(name, dirs).ok_or_else(|| {
            format!("skipped: {name} not installed (run .ci/install-patroni: apt-get install patroni etcd-server haproxy python3-etcd)")
        })
    };
    let tools = Tools {
        patroni: find("patroni", &["/usr/bin"])?,
        patronictl: find("patronictl", &["/usr/bin"])?,
        etcd: find("etcd", &["/usr/bin"])?,
        haproxy: find("haproxy", &["/usr/sbin"])?,
    };
    if !Path::new(PG_BINDIR).join("pg_ctl").is_file() {
        return Err(format!(
            "skipped: PostgreSQL 15's server binaries are not in {PG_BINDIR} (apt-get install postgresql-15)"
        ));
    }
    // Patroni's own interpreter (its script's `#!` line), not whichever python3 is first on
    // PATH: that one must have python3-etcd.
    let interpreter = fs::read_to_string(&tools.patroni)
        .ok()
        .and_then(|script| {
            let first = script.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            Some(first.split_whitespace().next()?.to_owned())
        })
        .unwrap_or_else(|| "/usr/bin/python3".to_owned());
    let python_etcd = Command::new(&interpreter)
        .args(["-c", "import etcd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !python_etcd {
        return Err(format!(
            "skipped: python3-etcd not installed for {interpreter} (run .ci/install-patroni)"
        ));
    }
    Ok(tools)
}

/// `Some((uid, gid))` of the server user when this process runs as root.
fn server_owner() -> Option<(u32, u32)> {
    if fs::metadata("/proc/self").map(|m| m.uid()).ok()? != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == SERVER_USER)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// One Patroni node.
struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    dir: PathBuf,
    config: PathBuf,
    patroni: Option<Child>,
}

/// Patroni's dynamic settings for a new cluster.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Patroni's `synchronous_mode`.
    pub synchronous_mode: bool,
}

/// See the module documentation.
pub struct Patroni {
    tools: Tools,
    base: PathBuf,
    owner: Option<(u32, u32)>,
    nodes: Vec<Node>,
    etcd: Option<Child>,
    haproxy: Option<Child>,
    haproxy_port: u16,
}

impl Patroni {
    /// Starts etcd, three Patroni nodes and HAProxy, and waits until there is a leader, the
    /// two others are replicas (one of them the synchronous standby in synchronous mode) and
    /// HAProxy routes to the leader.
    pub async fn start(tools: Tools, settings: Settings) -> Patroni {
        let base = std::env::temp_dir().join(format!(
            "par-store-patroni-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        fs::create_dir_all(base.join("pids")).expect("create the cluster's directory");
        let owner = server_owner();
        let port = super::cluster::free_port;
        let (etcd_client, etcd_peer, haproxy_port) = (port(), port(), port());
        let nodes = (1..=3)
            .map(|n| {
                let name = format!("n{n}");
                let dir = base.join(&name);
                fs::create_dir_all(&dir).expect("create a node's directory");
                Node {
                    config: base.join(format!("{name}.yml")),
                    name,
                    pg_port: port(),
                    rest_port: port(),
                    dir,
                    patroni: None,
                }
            })
            .collect();
        let mut cluster = Patroni {
            tools,
            base,
            owner,
            nodes,
            etcd: None,
            haproxy: None,
            haproxy_port,
        };
        cluster.watchdog();
        for node in &cluster.nodes {
            fs::write(
                &node.config,
                node_config(node, etcd_client, settings.synchronous_mode),
            )
            .expect("write a Patroni configuration");
        }
        fs::write(
            cluster.base.join("haproxy.cfg"),
            haproxy_config(haproxy_port, &cluster.nodes),
        )
        .expect("write the HAProxy configuration");
        cluster.give_to_server_user(&cluster.base.clone());

        let etcd_dir = cluster.base.join("etcd");
        let client = format!("http://127.0.0.1:{etcd_client}");
        let peer = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = cluster.spawn(
            "etcd",
            &cluster.tools.etcd.clone(),
            &[
                "--name",
                "e",
                "--data-dir",
                &etcd_dir.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("e={peer}"),
            ],
        );
        cluster.etcd = Some(etcd);
        cluster
            .wait_until(Duration::from_secs(30), "etcd answers", |c| async move {
                c.http_status(etcd_client, "/health").await == Some(200)
            })
            .await;
        // The first node bootstraps the cluster; the others clone it with pg_basebackup.
        cluster.start_node(0);
        cluster
            .wait_until(Duration::from_secs(60), "n1 leads", |c| async move {
                c.leader().await == Some(0)
            })
            .await;
        cluster.start_node(1);
        cluster.start_node(2);
        let haproxy_cfg = cluster.base.join("haproxy.cfg").display().to_string();
        let haproxy = cluster.spawn(
            "haproxy",
            &cluster.tools.haproxy.clone(),
            &["-f", &haproxy_cfg, "-db"],
        );
        cluster.haproxy = Some(haproxy);
        cluster
            .wait_healthy(settings.synchronous_mode, Duration::from_secs(90))
            .await;
        cluster
    }

    /// Writes a shell that waits for this process to end and then stops what is left.
    fn watchdog(&self) {
        let base = self.base.display();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null && [ -d '{base}' ]; do sleep 1; done; \
             [ -d '{base}' ] || exit 0; \
             for f in '{base}'/pids/*; do kill -9 $(cat \"$f\") 2>/dev/null; done; \
             for f in '{base}'/n*/data/postmaster.pid; do kill -QUIT $(head -n 1 \"$f\") 2>/dev/null; done; \
             sleep 3; rm -rf '{base}'",
            pid = std::process::id(),
        );
        super::cluster::spawn_watchdog(&script, "the Patroni cluster");
    }

    fn give_to_server_user(&self, dir: &Path) {
        let Some((uid, gid)) = self.owner else {
            return;
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .unwrap_or_else(|err| panic!("chown {}: {err}", path.display()));
            if path.is_dir() {
                for entry in fs::read_dir(&path).expect("read a directory").flatten() {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// Starts `program` as the server user, in a process group of its own, its output in
    /// `<base>/<name>.log` (appended), its PID in `<base>/pids/<name>`.
    fn spawn(&self, name: &str, program: &Path, args: &[&str]) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join(format!("{name}.log")))
            .expect("open a log file");
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.base)
            .env("HOME", &self.base)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
        fs::write(self.base.join("pids").join(name), child.id().to_string())
            .expect("write a PID file");
        child
    }

    /// Starts (or restarts) node `i`'s Patroni.
    pub fn start_node(&mut self, i: usize) {
        let config = self.nodes[i].config.display().to_string();
        let patroni = self.tools.patroni.clone();
        let child = self.spawn(&self.nodes[i].name.clone(), &patroni, &[&config]);
        self.nodes[i].patroni = Some(child);
    }

    /// The node's name (`n1`, `n2`, `n3`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The port HAProxy listens on for the leader.
    pub fn haproxy_port(&self) -> u16 {
        self.haproxy_port
    }

    /// The PostgreSQL ports of the three nodes.
    pub fn pg_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.pg_port).collect()
    }

    /// Direct connect options for node `i` (user and database `postgres`, no TLS).
    pub fn node_options(&self, i: usize) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.nodes[i].pg_port)
            .username("postgres")
            .database("postgres")
            .ssl_mode(PgSslMode::Disable)
    }

    /// The status code of `GET path` on a local HTTP port (Patroni's REST API, etcd's),
    /// `None` when nothing answers within 2 s.
    pub async fn http_status(&self, port: u16, path: &str) -> Option<u16> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut head = vec![0u8; 12];
            stream.read_exact(&mut head).await.ok()?;
            String::from_utf8_lossy(&head[9..12]).parse().ok()
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
    }

    async fn nodes_answering(&self, path: &str) -> Vec<usize> {
        let mut found = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.http_status(node.rest_port, path).await == Some(200) {
                found.push(i);
            }
        }
        found
    }

    /// The node whose REST API says it is the primary (`GET /primary` 200), when exactly one
    /// does.
    pub async fn leader(&self) -> Option<usize> {
        match self.nodes_answering("/primary").await[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The synchronous standby (`GET /sync` 200), when exactly one node is.
    pub async fn sync_standby(&self) -> Option<usize> {
        match self.nodes_answering("/sync").await[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The running replicas (`GET /replica` 200).
    pub async fn replicas(&self) -> Vec<usize> {
        self.nodes_answering("/replica").await
    }

    /// Polls `check` every 200 ms until it holds; panics after `limit` with the logs.
    pub async fn wait_until<'a, F, Fut>(&'a self, limit: Duration, what: &str, check: F)
    where
        F: Fn(&'a Patroni) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check(self).await {
            if started.elapsed() > limit {
                panic!(
                    "Patroni cluster: not within {limit:?}: {what}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until there is one leader, the other running nodes are replicas streaming from
    /// it (one of them the synchronous standby when `synchronous`), and a session through
    /// HAProxy lands on the leader's port.
    pub async fn wait_healthy(&self, synchronous: bool, limit: Duration) -> usize {
        let replicas = self.running().len() - 1;
        self.wait_until(limit, "a leader and streaming replicas", |c| async move {
            let Some(leader) = c.leader().await else {
                return false;
            };
            c.replicas().await.len() == replicas
                && (!synchronous || c.sync_standby().await.is_some_and(|s| s != leader))
                && c.streaming_to(leader).await == Some(replicas)
                && c.haproxy_leads_to(leader).await
        })
        .await;
        self.leader().await.expect("a leader")
    }

    /// How many replicas stream from node `i` (`pg_stat_replication`, state `streaming`), or
    /// `None` if it does not answer. Patroni's `GET /replica` answers 200 for a running
    /// replica that has not yet connected to a new leader (after a switchover, say); a
    /// replica that is not streaming when the leader dies lags behind the leader's last
    /// position Patroni recorded, and Patroni then refuses to promote it.
    async fn streaming_to(&self, i: usize) -> Option<usize> {
        use par_store::sqlx::{Connection, PgConnection};
        let probe = async {
            let mut conn = PgConnection::connect_with(&self.node_options(i))
                .await
                .ok()?;
            let streaming: i64 = par_store::sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .fetch_one(&mut conn)
            .await
            .ok()?;
            let _ = conn.close().await;
            usize::try_from(streaming).ok()
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .ok()
            .flatten()
    }

    /// Whether a session through HAProxy is on node `i`'s server.
    async fn haproxy_leads_to(&self, i: usize) -> bool {
        use par_store::sqlx::{Connection, PgConnection};
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.haproxy_port)
            .username("postgres")
            .database("postgres")
            .ssl_mode(PgSslMode::Disable);
        let probe = async {
            let mut conn = PgConnection::connect_with(&options).await.ok()?;
            let port: i32 = par_store::sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            let _ = conn.close().await;
            Some(port)
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .ok()
            .flatten()
            == Some(i32::from(self.nodes[i].pg_port))
    }

    /// A planned switchover from `leader` to `candidate` with `patronictl switchover
    /// --force`; returns once patronictl reports it done (panics if it does not within 60 s).
    ///
    /// Patroni refuses a switchover (503, "Switchover failed") when the candidate is not
    /// healthy enough at that moment, e.g. a replica more than `maximum_lag_on_failover`
    /// behind under load in asynchronous mode: nothing changed, so the command is tried
    /// again, as an operator would, while `leader` is still the leader.
    pub async fn switchover(&self, leader: usize, candidate: usize) {
        let started = Instant::now();
        loop {
            let mut command = tokio::process::Command::new(&self.tools.patronictl);
            command
                .arg("-c")
                .arg(&self.nodes[leader].config)
                .args(["switchover", "--leader", &self.nodes[leader].name])
                .args(["--candidate", &self.nodes[candidate].name, "--force", SCOPE])
                .env("HOME", &self.base)
                .kill_on_drop(true);
            let output = tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .expect("patronictl switchover within 60 s")
                .expect("run patronictl");
            let stdout = String::from_utf8_lossy(&output.stdout);
            if output.status.success() && stdout.contains("Successfully switched over") {
                return;
            }
            let refused = stdout.contains("Switchover failed")
                && self.leader().await == Some(leader)
                && started.elapsed() < Duration::from_secs(60);
            assert!(
                refused,
                "patronictl switchover failed: {stdout}\n{}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.logs_tail()
            );
            eprintln!("patroni: switchover refused, trying again in 1 s: {stdout}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The PID of node `i`'s postmaster, from its `postmaster.pid`.
    fn postmaster_pid(&self, i: usize) -> Option<u32> {
        let file = self.nodes[i].dir.join("data/postmaster.pid");
        fs::read_to_string(file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops (`SIGSTOP`) the WAL receivers of every running node but `leader`: the replicas
    /// fall behind while the leader goes on writing. Returns their PIDs for
    /// [`resume_receivers`](Self::resume_receivers).
    pub fn pause_receivers(&self, leader: usize) -> Vec<u32> {
        let receivers: Vec<u32> = self
            .running()
            .into_iter()
            .filter(|i| *i != leader)
            .filter_map(|i| self.postmaster_pid(i))
            .flat_map(children_of)
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("walreceiver"))
            })
            .collect();
        kill("-STOP", &receivers);
        receivers
    }

    /// Lets the WAL receivers [`pause_receivers`](Self::pause_receivers) stopped go on.
    pub fn resume_receivers(&self, receivers: &[u32]) {
        kill("-CONT", receivers);
    }

    /// How far (bytes) the least advanced replica's flushed WAL is behind node `leader`'s
    /// current position, from `pg_stat_replication`; `None` if the leader does not answer.
    pub async fn replica_lag(&self, leader: usize) -> Option<i64> {
        use par_store::sqlx::{Connection, PgConnection};
        let probe = async {
            let mut conn = PgConnection::connect_with(&self.node_options(leader))
                .await
                .ok()?;
            let lag: Option<i64> = par_store::sqlx::query_scalar(
                "SELECT min(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn))::int8 \
                 FROM pg_stat_replication",
            )
            .fetch_one(&mut conn)
            .await
            .ok()?;
            let _ = conn.close().await;
            lag
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .ok()
            .flatten()
    }

    /// A crash of node `i`: `SIGKILL` to its Patroni, its postmaster and the postmaster's
    /// children, all in one `kill`.
    pub fn kill_node(&mut self, i: usize) {
        let mut pids = Vec::new();
        if let Some(child) = &self.nodes[i].patroni {
            pids.push(child.id());
        }
        if let Some(postmaster) = self.postmaster_pid(i) {
            pids.push(postmaster);
            pids.extend(children_of(postmaster));
        }
        kill("-KILL", &pids);
        if let Some(mut child) = self.nodes[i].patroni.take() {
            let _ = child.wait();
        }
    }

    /// Whether node `i`'s Patroni log holds `text`.
    pub fn log_contains(&self, i: usize, text: &str) -> bool {
        self.log_count(i, text) > 0
    }

    /// How many times node `i`'s Patroni log holds `text`.
    pub fn log_count(&self, i: usize, text: &str) -> usize {
        fs::read_to_string(self.base.join(format!("{}.log", self.nodes[i].name)))
            .map_or(0, |log| log.matches(text).count())
    }

    /// The nodes whose Patroni runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].patroni.is_some())
            .collect()
    }

    /// The last lines of every log, for a failure message.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<PathBuf> = fs::read_dir(&self.base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "--- {} (last 15 lines)", log.display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

/// The PIDs whose parent is `parent` (from `/proc`).
fn children_of(parent: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn kill(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie (our own child not yet reaped) counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // Patroni first, so that nothing restarts a server; then each postmaster (SIGQUIT:
        // immediate shutdown, which takes its children along).
        let patronis: Vec<u32> = self
            .nodes
            .iter()
            .filter_map(|node| node.patroni.as_ref().map(Child::id))
            .collect();
        kill("-KILL", &patronis);
        for node in &mut self.nodes {
            if let Some(mut child) = node.patroni.take() {
                let _ = child.wait();
            }
        }
        let postmasters: Vec<u32> = (0..self.nodes.len())
            .filter_map(|i| self.postmaster_pid(i))
            .filter(|pid| alive(*pid))
            .collect();
        kill("-QUIT", &postmasters);
        let started = Instant::now();
        while postmasters.iter().any(|pid| alive(*pid))
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in postmasters.iter().filter(|pid| alive(**pid)) {
            let mut pids = children_of(*pid);
            pids.push(*pid);
            kill("-KILL", &pids);
        }
        for child in [self.haproxy.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn node_config(node: &Node, etcd_port: u16, synchronous_mode: bool) -> String {
    format!(
        "scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    synchronous_mode: {synchronous_mode}
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
  initdb:
    - encoding: UTF8
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {dir}/data
  bin_dir: {PG_BINDIR}
  pgpass: {dir}/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  parameters:
    unix_socket_directories: '{dir}'
tags: {{}}
",
        name = node.name,
        rest = node.rest_port,
        pg = node.pg_port,
        dir = node.dir.display(),
    )
}

fn haproxy_config(port: u16, nodes: &[Node]) -> String {
    let mut servers = String::new();
    for node in nodes {
        let _ = writeln!(
            servers,
            "    server {} 127.0.0.1:{} check port {}",
            node.name, node.pg_port, node.rest_port
        );
    }
    format!(
        "global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}"
    )
}
