//! Command-line pieces shared by the `peershare-signaling` binary and `peershare signal`
//! / `peershare send` (its embedded server): the TURN relay options and address helpers,
//! the standalone server's options ([`ServerArgs`]) and its one run/shutdown path
//! ([`serve`]), and [`raise_fd_limit`].

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{
    DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_JOIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_QUEUED_BYTES,
};
use crate::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PEERS_PER_SESSION, ServerConfig, ServerTls};

use crate::turn_policy::{
    DEFAULT_ALLOCATIONS_PER_USER, DEFAULT_MAX_ALLOCATIONS, IpNet, parse_cidr,
};
use crate::{
    DEFAULT_CREDENTIAL_LIFETIME, DEFAULT_TURN_PORT, SignalingServer, TurnConfig, TurnMode,
};

/// The address other machines on the LAN most likely reach us at: the source address
/// of the default route. A UDP `connect` only consults the routing table; it sends
/// nothing. Falls back to loopback on a machine without a route.
pub fn lan_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            // 192.0.2.1 is TEST-NET-1 (documentation); no packet is sent.
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The relay's default port for a signaling server listening on `listen`: 3478, or an
/// ephemeral one when the signaling port is ephemeral.
pub fn default_turn_port(listen: SocketAddr) -> u16 {
    if listen.port() == 0 {
        0
    } else {
        DEFAULT_TURN_PORT
    }
}

/// TURN relay options shared by `signal` and `send` (for its embedded server).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TurnArgs {
    /// UDP address of the embedded TURN/STUN relay [default: the signaling IP, port 3478
    /// for `signal` (ephemeral when the signaling port is 0), an ephemeral port for `send`].
    #[arg(long, value_name = "HOST:PORT")]
    turn_listen: Option<SocketAddr>,
    /// Address the relay advertises to clients [default: the listening IP, or the LAN IP
    /// when it listens on 0.0.0.0].
    #[arg(long, value_name = "IP")]
    turn_public_ip: Option<IpAddr>,
    /// Run no TURN relay and hand out no STUN/TURN servers.
    #[arg(long, conflicts_with_all = ["turn_listen", "turn_public_ip", "turn_url", "turn_secret", "turn_allow_peer"])]
    no_turn: bool,
    /// Use this external TURN server (coturn with use-auth-secret) instead of the embedded
    /// relay, e.g. `turn:relay.example.org:3478?transport=udp`; repeatable. Needs
    /// --turn-secret.
    #[arg(long, value_name = "URL", requires = "turn_secret", conflicts_with_all = ["turn_listen", "turn_public_ip"])]
    turn_url: Vec<String>,
    /// Shared secret for the TURN credentials: coturn's static-auth-secret with --turn-url;
    /// otherwise the embedded relay's [default: random per run].
    #[arg(long, value_name = "SECRET")]
    turn_secret: Option<String>,
    /// Lifetime of the TURN credentials handed to each client, in seconds. Running
    /// allocations outlive them; refreshes need valid ones.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CREDENTIAL_LIFETIME.as_secs())]
    turn_ttl: u64,
    /// Let the embedded relay relay to peers in this network although its default deny
    /// list (loopback, private, CGNAT, link-local, multicast, the relay's own address…)
    /// covers it, e.g. 127.0.0.1/32 for peers on this machine or 10.0.0.0/8 on a LAN;
    /// repeatable. A bare IP means that host.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, conflicts_with = "turn_url")]
    turn_allow_peer: Vec<IpNet>,
    /// Most allocations one client may hold on the embedded relay; more get 486
    /// [default: 10].
    #[arg(long, value_name = "N")]
    turn_user_quota: Option<usize>,
    /// Most allocations the embedded relay holds in all; more get 486 [default: 1000].
    #[arg(long, value_name = "N")]
    turn_total_quota: Option<usize>,
}

impl TurnArgs {
    /// The TURN configuration for a signaling server listening on `signaling_ip`; the
    /// embedded relay listens on `default_port` unless `--turn-listen` says otherwise.
    pub fn config(&self, signaling_ip: IpAddr, default_port: u16) -> TurnConfig {
        let mode = if self.no_turn {
            TurnMode::Disabled
        } else if !self.turn_url.is_empty() {
            TurnMode::External {
                urls: self.turn_url.clone(),
                secret: self.turn_secret.clone().unwrap_or_default(),
            }
        } else {
            let listen = self
                .turn_listen
                .unwrap_or_else(|| SocketAddr::new(signaling_ip, default_port));
            let public_ip = self
                .turn_public_ip
                .or_else(|| listen.ip().is_unspecified().then(lan_ip));
            TurnMode::Embedded {
                listen,
                public_ip,
                secret: self.turn_secret.clone(),
            }
        };
        TurnConfig {
            mode,
            credential_lifetime: Duration::from_secs(self.turn_ttl.max(1)),
            allow_peers: self.turn_allow_peer.clone(),
            max_allocations_per_user: self.turn_user_quota.unwrap_or(DEFAULT_ALLOCATIONS_PER_USER),
            max_allocations: self.turn_total_quota.unwrap_or(DEFAULT_MAX_ALLOCATIONS),
        }
    }
}

/// One line describing the relay a server hands out, for stderr.
pub fn describe_turn(server: &SignalingServer, turn: &TurnConfig) -> String {
    match (&turn.mode, server.turn_addr()) {
        (TurnMode::Embedded { .. }, Some(addr)) => {
            format!("TURN/STUN relay on udp {addr}")
        }
        (TurnMode::External { urls, .. }, _) => format!("external TURN {}", urls.join(" ")),
        _ => "no TURN relay".to_string(),
    }
}

/// Default of `--drain-secs`.
pub const DEFAULT_DRAIN_SECS: u64 = 10;

/// Options of a standalone signaling server: the `peershare-signaling` binary and
/// `peershare signal` take exactly these.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (a host name is resolved).
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8787")]
    listen: String,
    /// Listen on this IP instead, with the port of --listen.
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    /// Maximum number of peers in one session.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PEERS_PER_SESSION)]
    max_peers: usize,
    /// Close connections that send no frame for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_secs: u64,
    /// Connections held at once, all clients together; more are answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Connections held at once from one IP address (IPv6: one /64); more are answered
    /// 503 and closed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections_per_ip: usize,
    /// Close connections that have not completed the WebSocket upgrade after this many
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout_secs: u64,
    /// Close connections (error 7010) that have not joined a session this many seconds
    /// after the upgrade.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_JOIN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    join_timeout_secs: u64,
    /// Bytes waiting for slow clients, all clients together; a client that would exceed
    /// it is dropped (error 7014).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_QUEUED_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_queued_bytes: usize,
    /// Serve `wss://` with this certificate chain (PEM, the server's certificate first).
    /// Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Length of the queue of connections the kernel holds for the server to accept
    /// (capped by net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,
    /// On SIGTERM or Ctrl-C, wait at most this many seconds for the clients (told to
    /// reconnect elsewhere: error 7012, close 1012) to go before exiting; a second signal
    /// exits at once.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: u64,
    /// Keep sessions in Redis (redis://HOST:PORT[/DB]), shared by every node started with
    /// the same URL: members of one session may join through different nodes.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    #[command(flatten)]
    turn: TurnArgs,
}

impl ServerArgs {
    /// The server configuration these options ask for (resolving `--listen`, loading the
    /// TLS certificate and key).
    pub async fn config(&self) -> anyhow::Result<ServerConfig> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(ServerTls::from_pem_files(cert, key).context("cannot set up TLS")?)
            }
            // clap requires both or neither.
            _ => None,
        };
        let mut listen = tokio::net::lookup_host(&self.listen)
            .await
            .with_context(|| format!("cannot resolve --listen {}", self.listen))?
            .next()
            .with_context(|| format!("--listen {} resolves to no address", self.listen))?;
        if let Some(ip) = self.bind {
            listen.set_ip(ip);
        }
        Ok(ServerConfig {
            listen,
            max_peers_per_session: self.max_peers,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            join_timeout: Duration::from_secs(self.join_timeout_secs),
            max_queued_bytes: self.max_queued_bytes,
            backlog: self.backlog,
            // An ephemeral signaling port asks for an ephemeral relay port too.
            turn: self.turn.config(listen.ip(), default_turn_port(listen)),
            tls,
            redis: self.redis.clone(),
            ..ServerConfig::default()
        })
    }
}

/// The browser page of `server` at `addr`: `http://IP:PORT/`, `https://` with TLS.
fn page_url(server: &SignalingServer, addr: SocketAddr) -> String {
    let scheme = if server.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}/")
}

/// How a server writes its log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, with the connection's span (`peer`, then `session` and
    /// `client_id` once joined) under `"span"`, for a log pipeline.
    Json,
}

/// Send `tracing` output through `filter` to stderr, in `format` (colours only in text
/// on a terminal).
pub fn init_logs(filter: tracing_subscriber::EnvFilter, format: LogFormat) {
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Run a standalone signaling server until SIGINT (Ctrl-C) or SIGTERM, then drain it:
/// `/readyz` answers `503`, upgrades are answered `503`, every client gets error `7012`
/// (with `retry_after_ms`) and a Close frame (1012); once no connection is left, or after
/// `--drain-secs` (or at a second signal), the server stops and this returns `Ok` (exit
/// status 0).
///
/// Prints one line to stdout, `ws://IP:PORT` (`wss://` with TLS; the LAN address when
/// listening on all interfaces), and one human line to stderr, which also names the
/// browser page (`http://IP:PORT/`, `https://` with TLS).
pub async fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    let config = args.config().await?;
    let listen = config.listen;
    let turn = config.turn.clone();
    // Installed before the URL is announced, so that a signal sent as soon as the URL is
    // seen already means "shut down gracefully".
    let signals = Signals::install()?;
    let server = SignalingServer::bind(config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr();
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(lan_ip(), addr.port())
    } else {
        addr
    };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}://{shown}", server.scheme()).context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    eprintln!(
        "signaling server listening on {addr} ({}); pass --server {}://{shown} to clients, \
         or open {} in a browser. Ctrl-C or SIGTERM stops it.",
        describe_turn(&server, &turn),
        server.scheme(),
        page_url(&server, shown),
    );
    let mut signals = signals;
    signals.wait().await?;
    let drain = Duration::from_secs(args.drain_secs);
    tracing::info!(deadline_secs = drain.as_secs(), "draining");
    server.drain();
    let left = tokio::select! {
        left = server.shutdown_within(drain) => left,
        r = signals.wait() => {
            r?;
            tracing::info!("second signal: stopping now");
            0
        }
    };
    if left > 0 {
        tracing::warn!(
            connections = left,
            "drain deadline passed; connections ended"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> anyhow::Result<Self> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn wait(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        Ok(())
    }

    #[cfg(not(unix))]
    async fn wait(&mut self) -> anyhow::Result<()> {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

/// Largest soft limit tried when the hard limit is unlimited (Linux's default `nr_open`).
#[cfg(unix)]
const FD_LIMIT_FALLBACK: libc::rlim_t = 1 << 20;

/// Raise this process's soft limit of open files (`RLIMIT_NOFILE`) to its hard limit, so
/// that a server is not held to the usual 1,024 descriptors. Returns the soft limit now in
/// force. Call it once at start, before other threads open files.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut targets = vec![limit.rlim_max];
    if limit.rlim_max > FD_LIMIT_FALLBACK {
        // macOS (OPEN_MAX) and Linux (nr_open) refuse an unlimited soft limit.
        targets.extend([FD_LIMIT_FALLBACK, 10_240]);
    }
    let mut error = None;
    for target in targets {
        if limit.rlim_cur >= target {
            break;
        }
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
            error = None;
            break;
        }
        error = Some(std::io::Error::last_os_error());
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rlim_to_u64(limit.rlim_cur)),
    }
}

/// `rlim_t` is `u64` on most targets, narrower on a few.
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn rlim_to_u64(value: libc::rlim_t) -> u64 {
    u64::from(value)
}

/// Without `RLIMIT_NOFILE` there is nothing to raise; returns `u64::MAX`.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fd_limit_raise_sets_soft_limit_to_hard_limit() {
        let soft = raise_fd_limit().expect("raise");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_fd_limit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(rlim_to_u64(limit.rlim_cur), soft);
        assert!(limit.rlim_cur == limit.rlim_max || limit.rlim_max > FD_LIMIT_FALLBACK);
    }

    #[tokio::test]
    async fn server_args_defaults_match_server_config_defaults() {
        let cmd = Cmd::try_parse_from(["x", "--listen", "127.0.0.1:0", "--no-turn"]).unwrap();
        let c = cmd.server.config().await.unwrap();
        let d = ServerConfig::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.max_peers_per_session, d.max_peers_per_session);
        assert_eq!(c.idle_timeout, d.idle_timeout);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.max_connections_per_ip, d.max_connections_per_ip);
        assert_eq!(c.handshake_timeout, d.handshake_timeout);
        assert_eq!(c.join_timeout, d.join_timeout);
        assert_eq!(c.max_queued_bytes, d.max_queued_bytes);
        assert_eq!(c.backlog, d.backlog);
    }

    #[tokio::test]
    async fn server_args_flags_set_config_and_bind_replaces_listen_ip() {
        let cmd = Cmd::try_parse_from([
            "x",
            "--listen",
            "0.0.0.0:9000",
            "--bind",
            "127.0.0.1",
            "--max-peers",
            "3",
            "--idle-timeout-secs",
            "7",
            "--max-connections",
            "100",
            "--max-connections-per-ip",
            "5",
            "--handshake-timeout-secs",
            "2",
            "--join-timeout-secs",
            "4",
            "--max-queued-bytes",
            "1000",
            "--drain-secs",
            "3",
            "--backlog",
            "4096",
            "--no-turn",
        ])
        .unwrap();
        let c = cmd.server.config().await.unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.max_peers_per_session, 3);
        assert_eq!(c.idle_timeout, Duration::from_secs(7));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (100, 5));
        assert_eq!(c.handshake_timeout, Duration::from_secs(2));
        assert_eq!(c.join_timeout, Duration::from_secs(4));
        assert_eq!(c.max_queued_bytes, 1000);
        assert_eq!(cmd.server.drain_secs, 3);
        assert_eq!(c.backlog, 4096);
        assert!(Cmd::try_parse_from(["x", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn server_args_tls_cert_and_key_need_each_other() {
        for args in [["x", "--tls-cert", "c.pem"], ["x", "--tls-key", "k.pem"]] {
            let err = Cmd::try_parse_from(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
    }

    #[tokio::test]
    async fn server_args_tls_files_reach_the_config_or_fail_startup() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let parse = |key: &std::path::Path| {
            Cmd::try_parse_from([
                "x".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--no-turn".as_ref(),
                "--tls-cert".as_ref(),
                c.as_os_str(),
                "--tls-key".as_ref(),
                key.as_os_str(),
            ])
            .unwrap()
        };
        assert!(parse(&k).server.config().await.unwrap().tls.is_some());
        let err = parse(&tmp.path().join("missing.pem"))
            .server
            .config()
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("cannot set up TLS: key file ") && text.contains("missing.pem"),
            "{text}"
        );
    }
}

#[cfg(test)]
mod turn_args_tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        turn: TurnArgs,
    }

    fn config(args: &[&str]) -> TurnConfig {
        let cmd = Cmd::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        cmd.turn
            .config(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_TURN_PORT)
    }

    #[test]
    fn turn_args_allow_peer_and_quotas_reach_the_config() {
        let c = config(&[
            "--turn-allow-peer",
            "127.0.0.1/32",
            "--turn-allow-peer",
            "10.1.2.3/16",
            "--turn-allow-peer",
            "fd00::1",
            "--turn-user-quota",
            "3",
            "--turn-total-quota",
            "50",
        ]);
        let expected: Vec<IpNet> = ["127.0.0.1/32", "10.1.0.0/16", "fd00::1/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.allow_peers, expected);
        assert_eq!((c.max_allocations_per_user, c.max_allocations), (3, 50));
    }

    #[test]
    fn turn_args_defaults_deny_list_only_and_default_quotas_and_ttl() {
        let c = config(&[]);
        assert!(c.allow_peers.is_empty());
        assert_eq!(
            (c.max_allocations_per_user, c.max_allocations),
            (DEFAULT_ALLOCATIONS_PER_USER, DEFAULT_MAX_ALLOCATIONS)
        );
        assert_eq!(c.credential_lifetime, Duration::from_secs(600));
    }

    #[test]
    fn turn_args_bad_cidr_is_a_usage_error() {
        let err = Cmd::try_parse_from(["t", "--turn-allow-peer", "10.0.0.0/40"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
