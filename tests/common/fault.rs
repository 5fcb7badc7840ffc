//! A TCP proxy between the pool and PostgreSQL that a test can cut and restore, to inject
//! network faults without touching the server.
//!
//! - [`FaultProxy::cut`] closes every proxied connection at once (both sides see the socket
//!   close, as when a NAT entry, a load balancer or the server's host goes away) and from then
//!   on accepts new connections only to close them immediately: a client's connection attempt
//!   fails during the startup handshake.
//! - [`FaultProxy::stall`] keeps every connection open but stops moving bytes, as a network
//!   that swallows packets does: what is sent during a stall arrives when it ends.
//! - [`FaultProxy::hold_replies`] lets the client's messages through but holds the server's
//!   replies, and [`FaultProxy::sever`] then closes the connections with the replies unsent:
//!   a statement commits and its answer is lost.
//! - [`FaultProxy::restore`] ends a cut or a stall: bytes and new connections flow again.
//! - [`FaultProxy::redirect`] sends new connections to another server from then on, as a
//!   virtual IP or a load balancer does when a standby is promoted after a failover.
//!
//! The listening socket stays bound throughout, so the address never changes.

use par_store::sqlx::postgres::PgConnectOptions;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, Default)]
struct Link {
    /// New connections are closed as soon as they are accepted.
    cut: bool,
    /// Incremented by every cut: a proxied connection ends when it sees a newer epoch.
    epoch: u64,
    /// Bytes are held, not forwarded.
    stalled: bool,
    /// Bytes from the server to the client are held, not forwarded; the other way flows.
    replies_held: bool,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    refused: AtomicU64,
    severed: AtomicU64,
}

/// Counts of what the proxy did, for the test's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Connections forwarded to the server.
    pub forwarded: u64,
    /// Connections accepted during a cut and closed at once.
    pub refused: u64,
    /// Open connections closed by a cut.
    pub severed: u64,
}

/// See the module documentation.
pub struct FaultProxy {
    address: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    counters: Arc<Counters>,
    upstream: Arc<Mutex<SocketAddr>>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of `upstream`, on the current
    /// tokio runtime.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy on 127.0.0.1");
        let address = listener.local_addr().expect("proxy address");
        let link = Arc::new(watch::channel(Link::default()).0);
        let counters = Arc::new(Counters::default());
        let upstream = Arc::new(Mutex::new(upstream));
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&upstream),
            Arc::clone(&link),
            Arc::clone(&counters),
        ));
        FaultProxy {
            address,
            link,
            counters,
            upstream,
            accept_loop,
        }
    }

    /// A proxy in front of the server that `options` point at (a TCP host and port).
    pub async fn in_front_of(options: &PgConnectOptions) -> FaultProxy {
        let host = options.get_host();
        let upstream = tokio::net::lookup_host((host, options.get_port()))
            .await
            .expect("resolve the PostgreSQL host")
            .next()
            .expect("the PostgreSQL host has an address");
        FaultProxy::start(upstream).await
    }

    /// `options` redirected through this proxy.
    pub fn route(&self, options: &PgConnectOptions) -> PgConnectOptions {
        options
            .clone()
            .host(&self.address.ip().to_string())
            .port(self.address.port())
    }

    /// The proxy's own address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every proxied connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.link.send_modify(|link| {
            link.cut = true;
            link.epoch += 1;
        });
    }

    /// Stops forwarding bytes on every connection, open or new, until
    /// [`restore`](Self::restore); nothing is closed.
    pub fn stall(&self) {
        self.link.send_modify(|link| link.stalled = true);
    }

    /// Holds every reply of the server (on open and new connections) until
    /// [`sever`](Self::sever) or [`restore`](Self::restore); what clients send still reaches
    /// the server. A statement then runs and commits, and its client never hears of it.
    pub fn hold_replies(&self) {
        self.link.send_modify(|link| link.replies_held = true);
    }

    /// Closes every proxied connection (held replies are lost) and goes on accepting new
    /// ones, which flow normally.
    pub fn sever(&self) {
        self.link.send_modify(|link| {
            link.epoch += 1;
            link.replies_held = false;
        });
    }

    /// Connections accepted from now on go to `upstream`; open ones stay where they are.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("proxy upstream lock") = upstream;
    }

    /// Ends a cut or a stall.
    pub fn restore(&self) {
        self.link.send_modify(|link| {
            link.cut = false;
            link.stalled = false;
            link.replies_held = false;
        });
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> ProxyCounts {
        ProxyCounts {
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            severed: self.counters.severed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        // End every connection still open.
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<SocketAddr>>,
    link: Arc<watch::Sender<Link>>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Subscribe before looking at the state, so that a cut racing with this accept is
        // seen by the new connection's task.
        let watcher = link.subscribe();
        let now = *watcher.borrow();
        if now.cut {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let target = *upstream.lock().expect("proxy upstream lock");
        tokio::spawn(pipe(
            client,
            target,
            watcher,
            now.epoch,
            Arc::clone(&counters),
        ));
    }
}

/// Copies bytes both ways until either side closes or a cut newer than `epoch` happens;
/// then both sockets are dropped (closed).
async fn pipe(
    client: TcpStream,
    upstream: SocketAddr,
    mut watcher: watch::Receiver<Link>,
    epoch: u64,
    counters: Arc<Counters>,
) {
    let _ = client.set_nodelay(true);
    let stalls = watcher.clone();
    let severed = async {
        // An Err means the proxy is gone: sever too.
        let _ = watcher.wait_for(|link| link.epoch != epoch).await;
    };
    tokio::select! {
        _ = severed => {
            counters.severed.fetch_add(1, Ordering::Relaxed);
        }
        _ = async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                forward(client_read, server_write, stalls.clone(), epoch, false),
                forward(server_read, client_write, stalls, epoch, true),
            );
        } => {}
    }
}

/// Copies one direction until its reader closes; bytes read during a stall (or, for
/// `replies`, while replies are held) are written when it ends. Closing the reader shuts the
/// writer down, so the other side sees the end too.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
    epoch: u64,
    replies: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        // A cut or sever while bytes are held drops them: never written after it.
        match link
            .wait_for(|link| {
                let held = link.stalled || (replies && link.replies_held);
                link.epoch != epoch || !held
            })
            .await
        {
            Ok(link) if link.epoch == epoch => {}
            _ => break,
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
