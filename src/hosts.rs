//! Where the store's own pool connects: the database URL read the way libpq reads it (one
//! host or a list of them, `target_session_attrs`), checked for what this build can serve
//! (its scheme, TLS), and the servers of a host list tried in order until one fits.
//!
//! sqlx 0.9 reads one host only (`h1:5432,h2:5433` is "invalid port number") and ignores
//! `target_session_attrs`: the host list is taken apart here, and sqlx is given one
//! single-host URL, whose settings (user, password, database, TLS) every host then shares.
//!
//! [`pool`](crate::pool) opens connections through [`Targets::open`]; this module uses
//! neither `pool` nor `execution`.

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};
use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::error::{DriverErrorKind, InvalidDatabaseUrl};
use crate::sql::SESSION_STATE;

/// Which servers of a host list the store's own pool keeps connections to: libpq's
/// `target_session_attrs`, given in the URL (`?target_session_attrs=read-write`) or with
/// [`PostgresStoreOptions::target_session_attrs`](crate::PostgresStoreOptions::target_session_attrs).
///
/// Hosts are tried in the order given; a new connection is kept only where the server fits,
/// else closed and the next host tried. Checked once per new connection (one round trip,
/// none for [`Any`](Self::Any)) and again whenever an idle connection is pinged before use.
///
/// | value | URL spelling | keeps a connection when |
/// |---|---|---|
/// | [`Any`](Self::Any) (default) | `any` | always (the first host that answers) |
/// | [`ReadWrite`](Self::ReadWrite) | `read-write` | `SHOW transaction_read_only` is `off` |
/// | [`ReadOnly`](Self::ReadOnly) | `read-only` | `SHOW transaction_read_only` is `on` |
/// | [`Primary`](Self::Primary) | `primary` | the server is not in recovery (`pg_is_in_recovery()` false) |
/// | [`Standby`](Self::Standby) | `standby` | the server is in recovery |
/// | [`PreferStandby`](Self::PreferStandby) | `prefer-standby` | in recovery; if no host is, any host |
///
/// The store writes: use `ReadWrite` (or `Primary`) with a list of the cluster's servers so
/// that it follows the primary through a failover. The read-only values are there for
/// libpq's spelling; a store on a standby fails every write with
/// [`StoreError::Unavailable`](crate::StoreError::Unavailable).
///
/// ```
/// use par_store::{PostgresStoreOptions, TargetSessionAttrs};
///
/// let options = PostgresStoreOptions::new()
///     .hosts([("10.0.0.1", 5432), ("10.0.0.2", 5432)])
///     .target_session_attrs(TargetSessionAttrs::ReadWrite);
/// # drop(options);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// Any server that accepts the connection.
    #[default]
    Any,
    /// A server whose sessions are not read-only (libpq's `read-write`).
    ReadWrite,
    /// A server whose sessions are read-only (libpq's `read-only`).
    ReadOnly,
    /// A server not in recovery (libpq's `primary`).
    Primary,
    /// A server in recovery, a standby (libpq's `standby`).
    Standby,
    /// A standby if any host is one, else any server (libpq's `prefer-standby`).
    PreferStandby,
}

impl TargetSessionAttrs {
    /// libpq's spelling of the value, as in a URL's `target_session_attrs`.
    ///
    /// ```
    /// assert_eq!(par_store::TargetSessionAttrs::ReadWrite.as_str(), "read-write");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    const ALL: [TargetSessionAttrs; 6] = [
        TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly,
        TargetSessionAttrs::Primary,
        TargetSessionAttrs::Standby,
        TargetSessionAttrs::PreferStandby,
    ];

    fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|attrs| attrs.as_str() == value)
    }

    /// Whether a server in `state` fits (`PreferStandby`: in its first pass).
    fn fits(self, state: SessionState) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !state.read_only,
            TargetSessionAttrs::ReadOnly => state.read_only,
            TargetSessionAttrs::Primary => !state.in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => state.in_recovery,
        }
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a server says about a session: read-only, in recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SessionState {
    read_only: bool,
    in_recovery: bool,
}

/// Reads a session's [`SessionState`] ([`SESSION_STATE`]), unnamed.
async fn session_state(conn: &mut PgConnection) -> Result<SessionState, sqlx::Error> {
    let (read_only, in_recovery): (bool, bool) = sqlx::query_as(SESSION_STATE)
        .persistent(false)
        .fetch_one(conn)
        .await?;
    Ok(SessionState {
        read_only,
        in_recovery,
    })
}

/// A database URL taken apart: sqlx's options for its first host, the other hosts, and
/// `target_session_attrs`.
#[derive(Debug)]
pub(crate) struct ParsedUrl {
    /// Everything but the host list; the host and port are the first host's.
    pub(crate) options: PgConnectOptions,
    /// Every host of a list, in order; empty for a single-host URL (`options` says where).
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) target_session_attrs: Option<TargetSessionAttrs>,
}

/// The schemes libpq accepts.
const SCHEMES: [&str; 2] = ["postgres", "postgresql"];

fn invalid(reason: impl Into<String>) -> InvalidDatabaseUrl {
    InvalidDatabaseUrl::new(reason.into())
}

/// Reads `url` as libpq does: `postgres[ql]://[user[:password]@][host[:port][,...]][/db][?...]`.
/// Never repeats the URL (it may hold a password) in an error; a scheme it refuses is named
/// when it is a well-formed scheme.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, InvalidDatabaseUrl> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            "not a URL of the form postgres://user@host:port/database",
        ));
    };
    if !SCHEMES
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known))
    {
        let well_formed = !scheme.is_empty()
            && scheme.len() <= 32
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        let named = if well_formed {
            format!("the scheme is `{scheme}`")
        } else {
            "the scheme is not one".to_owned()
        };
        return Err(invalid(format!(
            "{named}: par-store connects to PostgreSQL only, with a postgres:// or \
             postgresql:// URL"
        )));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_list) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let (query, fragment) = match query.map(|query| query.split_once('#')) {
        Some(Some((query, fragment))) => (Some(query), Some(fragment)),
        Some(None) => (query, None),
        None => (None, None),
    };

    // `target_session_attrs` and `load_balance_hosts` are read here, and not given to sqlx
    // (which would log them as unknown); the others go to sqlx as they are.
    let mut target_session_attrs = None;
    let mut kept = Vec::new();
    let mut host_parameter = false;
    let mut port_parameter = None;
    for pair in query.into_iter().flat_map(|query| query.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => {
                target_session_attrs = Some(TargetSessionAttrs::parse(value).ok_or_else(|| {
                    let known: Vec<&str> =
                        TargetSessionAttrs::ALL.iter().map(|a| a.as_str()).collect();
                    invalid(format!(
                        "target_session_attrs must be one of {}",
                        known.join(", ")
                    ))
                })?);
            }
            "load_balance_hosts" if value == "disable" => {}
            "load_balance_hosts" => {
                return Err(invalid(
                    "load_balance_hosts: only `disable` is supported (hosts are tried in order)",
                ))
            }
            _ => {
                if key == "host" || key == "hostaddr" {
                    host_parameter = true;
                }
                if key == "port" {
                    port_parameter = Some(value);
                }
                kept.push(pair);
            }
        }
    }

    let rebuild = |host: &str| {
        let mut single = format!("{scheme}://{userinfo}{host}{path}");
        if !kept.is_empty() {
            let _ = write!(single, "?{}", kept.join("&"));
        }
        if let Some(fragment) = fragment {
            let _ = write!(single, "#{fragment}");
        }
        single
    };

    if !host_list.contains(',') {
        let options = InvalidDatabaseUrl::parse(&rebuild(host_list))?;
        return Ok(ParsedUrl {
            options,
            hosts: Vec::new(),
            target_session_attrs,
        });
    }

    if host_parameter {
        return Err(invalid(
            "a host list and a host (or hostaddr) parameter: give the hosts in one place",
        ));
    }
    if port_parameter.is_some_and(|ports| ports.contains(',') || ports.contains("%2C")) {
        return Err(invalid(
            "a list of ports in the port parameter is not supported: give each host its port \
             (host1:5432,host2:5433)",
        ));
    }
    let entries = host_list
        .split(',')
        .map(host_and_port)
        .collect::<Result<Vec<_>, _>>()?;
    // sqlx reads everything but the hosts from a URL with the first host and no port: its
    // port is then the `port` parameter's, else the default (PGPORT, else 5432).
    let (first_host, _) = &entries[0];
    let first = if first_host.contains(':') {
        format!("[{first_host}]")
    } else {
        first_host.clone()
    };
    let options = InvalidDatabaseUrl::parse(&rebuild(&first))?;
    let default_port = options.get_port();
    let hosts = entries
        .into_iter()
        .map(|(host, port)| {
            // libpq: a port parameter applies to every host.
            let port = match port_parameter {
                Some(_) => default_port,
                None => port.unwrap_or(default_port),
            };
            (host, port)
        })
        .collect();
    Ok(ParsedUrl {
        options,
        hosts,
        target_session_attrs,
    })
}

/// One entry of a host list: `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_and_port(entry: &str) -> Result<(String, Option<u16>), InvalidDatabaseUrl> {
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(invalid("an IPv6 address in the host list lacks its `]`"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(invalid("unexpected text after an IPv6 address")),
            },
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("an empty host in the host list"));
    }
    if host.starts_with('/') || host.to_ascii_uppercase().starts_with("%2F") {
        return Err(invalid(
            "a Unix-domain socket in a host list is not supported",
        ));
    }
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| invalid("invalid port number in the host list"))?,
        ),
    };
    Ok((host.to_owned(), port))
}

/// Whether options asking for TLS can be served by a build in which TLS is `tls_available`:
/// `sslmode=require`, `verify-ca` and `verify-full` need it (`prefer`, sqlx's default, and
/// `allow` go without). Refused with the fix named: sqlx alone says only "built without
/// TLS support", at every connection attempt, as an outage.
pub(crate) fn check_tls(
    options: &PgConnectOptions,
    tls_available: bool,
) -> Result<(), InvalidDatabaseUrl> {
    let mode = match options.get_ssl_mode() {
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => return Ok(()),
    };
    if tls_available {
        return Ok(());
    }
    Err(invalid(format!(
        "sslmode={mode} asks for TLS, and this build has no TLS: enable par-store's `rustls` \
         cargo feature (par-store = {{ version = \"...\", features = [\"rustls\"] }})"
    )))
}

/// Whether this build of sqlx can speak TLS: par-store's `rustls` feature, or a TLS feature
/// of sqlx enabled by the application itself (cargo unifies them).
pub(crate) fn tls_available() -> bool {
    sqlx_core::net::tls::available()
}

/// Every server the store's own pool may connect to, in order, and what a server must be.
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    /// One per host (at least one), each with every other setting of the store.
    hosts: Vec<PgConnectOptions>,
    attrs: TargetSessionAttrs,
}

impl Targets {
    /// `options` for each of `hosts` (for `options`' own host when `hosts` is empty).
    pub(crate) fn new(
        options: PgConnectOptions,
        hosts: &[(String, u16)],
        attrs: TargetSessionAttrs,
    ) -> Targets {
        let hosts = if hosts.is_empty() {
            vec![options]
        } else {
            hosts
                .iter()
                .map(|(host, port)| options.clone().host(host).port(*port))
                .collect()
        };
        Targets { hosts, attrs }
    }

    /// The first host's options (its user, database, TLS: every host's).
    pub(crate) fn first(&self) -> &PgConnectOptions {
        &self.hosts[0]
    }

    /// The hosts, for messages: `h:5432` or `h1:5432, h2:5433`.
    pub(crate) fn addresses(&self) -> String {
        let mut text = String::new();
        for (i, options) in self.hosts.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{}:{}", options.get_host(), options.get_port());
        }
        text
    }

    pub(crate) fn is_list(&self) -> bool {
        self.hosts.len() > 1
    }

    /// The configuration this build cannot serve, found before any connection is made.
    pub(crate) fn check(&self) -> Result<(), InvalidDatabaseUrl> {
        check_tls(self.first(), tls_available())
    }

    /// Whether an open connection still fits (checked when an idle one is pinged before
    /// use): `None` when there is nothing to check (`Any`), which leaves the plain ping.
    pub(crate) async fn still_fits(
        &self,
        conn: &mut PgConnection,
    ) -> Option<Result<bool, sqlx::Error>> {
        match self.attrs {
            TargetSessionAttrs::Any => None,
            // A standby preferred and found gone: any server will do until the connection
            // is replaced.
            TargetSessionAttrs::PreferStandby => None,
            attrs => Some(session_state(conn).await.map(|state| attrs.fits(state))),
        }
    }

    /// Opens a connection to the first host, in order, that answers and fits, each attempt
    /// bounded by an equal share of `budget` (a host that swallows packets must leave time
    /// for the next). One host: its error as it is. Several: the first error when every
    /// host failed the same non-transient way (a wrong password everywhere), else an I/O
    /// error (transient: `StoreError::Unavailable`) that says what each host did.
    pub(crate) async fn open(&self, budget: Duration) -> Result<PgConnection, sqlx::Error> {
        if let Some(refused) = self.check().err() {
            return Err(sqlx::Error::Configuration(Box::new(refused)));
        }
        if !self.is_list() && self.attrs == TargetSessionAttrs::Any {
            return Box::pin(PgConnection::connect_with(self.first())).await;
        }
        let share = budget / u32::try_from(self.hosts.len()).unwrap_or(u32::MAX);
        let mut report = Vec::with_capacity(self.hosts.len());
        let mut first_error = None;
        let mut all_permanent = true;
        // PreferStandby: the first server that is no standby, kept until a standby is found.
        let mut fallback = None;
        for options in &self.hosts {
            let attempt = tokio::time::timeout(share, async {
                let mut conn = Box::pin(PgConnection::connect_with(options)).await?;
                if self.attrs == TargetSessionAttrs::Any {
                    return Ok((conn, true));
                }
                match session_state(&mut conn).await {
                    Ok(state) => Ok((conn, self.attrs.fits(state))),
                    Err(err) => Err(err),
                }
            })
            .await;
            let address = format!("{}:{}", options.get_host(), options.get_port());
            match attempt {
                Ok(Ok((conn, true))) => {
                    if let Some(fallback) = fallback.take() {
                        close(fallback).await;
                    }
                    return Ok(conn);
                }
                Ok(Ok((conn, false))) => {
                    all_permanent = false;
                    if self.attrs == TargetSessionAttrs::PreferStandby && fallback.is_none() {
                        fallback = Some(conn);
                    } else {
                        close(conn).await;
                    }
                    report.push(format!("{address}: not {}", self.attrs));
                }
                Ok(Err(err)) => {
                    all_permanent &= matches!(
                        DriverErrorKind::of(&err),
                        DriverErrorKind::Database | DriverErrorKind::InvalidDatabaseUrl
                    );
                    report.push(format!("{address}: {err}"));
                    first_error.get_or_insert(err);
                }
                Err(_) => {
                    all_permanent = false;
                    report.push(format!("{address}: no connection within {share:?}"));
                }
            }
        }
        if let Some(fallback) = fallback {
            return Ok(fallback);
        }
        match first_error {
            Some(err) if all_permanent || !self.is_list() => Err(err),
            _ => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                match self.attrs {
                    TargetSessionAttrs::Any => {
                        format!("no host accepted a connection: {}", report.join("; "))
                    }
                    attrs => format!(
                        "no server fit target_session_attrs={attrs}: {}",
                        report.join("; ")
                    ),
                },
            ))),
        }
    }
}

/// Closes a connection that is not kept, politely but without waiting long.
async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<(String, u16)> {
        parse_url(url).unwrap().hosts
    }

    fn reason(url: &str) -> String {
        parse_url(url).unwrap_err().reason().to_owned()
    }

    #[test]
    fn a_host_list_is_read_as_libpq_reads_it() {
        let parsed =
            parse_url("postgres://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write&sslmode=disable")
                .unwrap();
        assert_eq!(
            parsed.hosts,
            [("h1".to_owned(), 5432), ("h2".to_owned(), 5433)]
        );
        assert_eq!(
            parsed.target_session_attrs,
            Some(TargetSessionAttrs::ReadWrite)
        );
        assert_eq!(parsed.options.get_database(), Some("db"));
        assert_eq!(parsed.options.get_username(), "u");
        assert!(matches!(parsed.options.get_ssl_mode(), PgSslMode::Disable));
        // A host without a port gets the default; a port parameter applies to every host.
        let default = parse_url("postgres://h/db").unwrap().options.get_port();
        assert_eq!(
            hosts("postgresql://h1,h2:6000/db"),
            [("h1".to_owned(), default), ("h2".to_owned(), 6000)]
        );
        assert_eq!(
            hosts("postgres://h1:1,h2/db?port=7000"),
            [("h1".to_owned(), 7000), ("h2".to_owned(), 7000)]
        );
        assert_eq!(
            hosts("postgres://[::1]:5433,[fe80::2]/db"),
            [("::1".to_owned(), 5433), ("fe80::2".to_owned(), default)]
        );
        assert_eq!(
            hosts("POSTGRES://h1:1,h2:2"),
            [("h1".to_owned(), 1), ("h2".to_owned(), 2)]
        );
    }

    #[test]
    fn a_single_host_url_is_sqlx_s_with_target_session_attrs_taken_out() {
        let parsed =
            parse_url("postgres://u@db.example:6543/app?target_session_attrs=primary").unwrap();
        assert!(parsed.hosts.is_empty());
        assert_eq!(parsed.options.get_host(), "db.example");
        assert_eq!(parsed.options.get_port(), 6543);
        assert_eq!(
            parsed.target_session_attrs,
            Some(TargetSessionAttrs::Primary)
        );
        assert_eq!(
            parse_url("postgres://u@h/app")
                .unwrap()
                .target_session_attrs,
            None
        );
        for attrs in TargetSessionAttrs::ALL {
            let url = format!("postgres://h/app?target_session_attrs={attrs}");
            assert_eq!(parse_url(&url).unwrap().target_session_attrs, Some(attrs));
        }
    }

    #[test]
    fn what_cannot_be_served_is_refused_without_repeating_the_url() {
        assert!(reason("mysql://x@127.0.0.1/x").contains("`mysql`"));
        assert!(reason("MySQL://x@127.0.0.1/x").contains("`MySQL`"));
        assert!(reason("redis://h").contains("postgres://"));
        // Not a scheme: not repeated (it could be a user name).
        let odd = reason("us er:hunter2@h://x");
        assert!(!odd.contains("hunter2") && !odd.contains("us er"), "{odd}");
        assert!(reason("host=localhost dbname=x").contains("not a URL"));
        for (url, expected) in [
            ("postgres://u:hunter2@h1:abc,h2/db", "invalid port"),
            ("postgres://u:hunter2@h1:0,h2/db", "invalid port"),
            ("postgres://u:hunter2@h1,,h2/db", "empty host"),
            ("postgres://u:hunter2@[::1,h2/db", "`]`"),
            ("postgres://u:hunter2@h1,h2/db?host=h3", "host"),
            ("postgres://u:hunter2@h1,h2/db?port=1,2", "port"),
            ("postgres://u:hunter2@%2Ftmp,h2/db", "socket"),
            (
                "postgres://u:hunter2@h/db?target_session_attrs=writable",
                "read-write",
            ),
            (
                "postgres://u:hunter2@h/db?load_balance_hosts=random",
                "load_balance_hosts",
            ),
            ("postgres://u:hunter2@h:notaport/db", "not a PostgreSQL URL"),
        ] {
            let reason = reason(url);
            assert!(reason.contains(expected), "{url}: {reason}");
            assert!(!reason.contains("hunter2"), "{url}: {reason}");
        }
    }

    #[test]
    fn tls_is_refused_only_where_it_is_required_and_missing() {
        let options = |mode: &str| {
            parse_url(&format!("postgres://h/db?sslmode={mode}"))
                .unwrap()
                .options
        };
        for mode in ["require", "verify-ca", "verify-full"] {
            let refused = check_tls(&options(mode), false).unwrap_err();
            assert!(
                refused.reason().contains(&format!("sslmode={mode}")),
                "{refused}"
            );
            assert!(
                refused.reason().contains("`rustls` cargo feature"),
                "{refused}"
            );
            assert!(check_tls(&options(mode), true).is_ok());
        }
        for mode in ["disable", "allow", "prefer"] {
            assert!(check_tls(&options(mode), false).is_ok());
        }
        // The build's own answer is sqlx's: with par-store's `rustls` feature it has TLS.
        if cfg!(feature = "rustls") {
            assert!(tls_available());
        }
    }

    #[test]
    fn each_target_session_attrs_keeps_the_servers_libpq_keeps() {
        use TargetSessionAttrs::*;
        let primary = SessionState {
            read_only: false,
            in_recovery: false,
        };
        let read_only_primary = SessionState {
            read_only: true,
            in_recovery: false,
        };
        let standby = SessionState {
            read_only: true,
            in_recovery: true,
        };
        let fits = |attrs: TargetSessionAttrs| {
            [primary, read_only_primary, standby].map(|state| attrs.fits(state))
        };
        assert_eq!(fits(Any), [true, true, true]);
        assert_eq!(fits(ReadWrite), [true, false, false]);
        assert_eq!(fits(ReadOnly), [false, true, true]);
        assert_eq!(fits(Primary), [true, true, false]);
        assert_eq!(fits(Standby), [false, false, true]);
        assert_eq!(fits(PreferStandby), [false, false, true]);
    }

    #[test]
    fn targets_take_every_setting_but_the_address_from_the_url() {
        let parsed = parse_url("postgres://app@h1:1,h2:2/db").unwrap();
        let targets = Targets::new(parsed.options, &parsed.hosts, TargetSessionAttrs::ReadWrite);
        assert_eq!(targets.addresses(), "h1:1, h2:2");
        assert!(targets
            .hosts
            .iter()
            .all(|o| o.get_database() == Some("db") && o.get_username() == "app"));
    }
}
