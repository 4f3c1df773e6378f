//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peershare_signaling::{
    DEFAULT_CREDENTIAL_LIFETIME, DEFAULT_TURN_PORT, ServerConfig, SignalingServer, TurnConfig,
    TurnMode,
};
use tracing_subscriber::EnvFilter;

/// WebSocket signaling server for peershare.
#[derive(Debug, Parser)]
#[command(name = "peershare-signaling", version, about)]
struct Args {
    /// Address to listen on (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8787")]
    listen: String,
    /// Maximum number of peers in one session.
    #[arg(long, value_name = "N", default_value_t = peershare_signaling::DEFAULT_MAX_PEERS_PER_SESSION)]
    max_peers: usize,
    /// Close connections that send no frame for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = peershare_signaling::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_secs: u64,
    /// UDP address of the embedded TURN/STUN relay [default: the --listen IP, port 3478;
    /// ephemeral when the --listen port is 0].
    #[arg(long, value_name = "HOST:PORT")]
    turn_listen: Option<SocketAddr>,
    /// Address the relay advertises [default: the listening IP, or the LAN IP on 0.0.0.0].
    #[arg(long, value_name = "IP")]
    turn_public_ip: Option<IpAddr>,
    /// Run no TURN relay and hand out no STUN/TURN servers.
    #[arg(long, conflicts_with_all = ["turn_listen", "turn_public_ip", "turn_url", "turn_secret"])]
    no_turn: bool,
    /// External TURN server (coturn with use-auth-secret) instead of the embedded relay,
    /// e.g. `turn:relay.example.org:3478?transport=udp`; repeatable. Needs --turn-secret.
    #[arg(long, value_name = "URL", requires = "turn_secret", conflicts_with_all = ["turn_listen", "turn_public_ip"])]
    turn_url: Vec<String>,
    /// Shared secret: coturn's static-auth-secret with --turn-url, else the embedded
    /// relay's [default: random per run].
    #[arg(long, value_name = "SECRET")]
    turn_secret: Option<String>,
    /// Lifetime of the TURN credentials handed to each client, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CREDENTIAL_LIFETIME.as_secs())]
    turn_ttl: u64,
}

impl Args {
    fn turn(&self, listen: SocketAddr) -> TurnConfig {
        let mode = if self.no_turn {
            TurnMode::Disabled
        } else if !self.turn_url.is_empty() {
            TurnMode::External {
                urls: self.turn_url.clone(),
                secret: self.turn_secret.clone().unwrap_or_default(),
            }
        } else {
            let port = if listen.port() == 0 {
                0
            } else {
                DEFAULT_TURN_PORT
            };
            let turn_listen = self
                .turn_listen
                .unwrap_or_else(|| SocketAddr::new(listen.ip(), port));
            TurnMode::Embedded {
                listen: turn_listen,
                public_ip: self
                    .turn_public_ip
                    .or_else(|| turn_listen.ip().is_unspecified().then(lan_ip)),
                secret: self.turn_secret.clone(),
            }
        };
        TurnConfig {
            mode,
            credential_lifetime: Duration::from_secs(self.turn_ttl.max(1)),
        }
    }
}

/// The source address of the default route (a UDP `connect` sends nothing); loopback
/// when there is none.
fn lan_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            // 192.0.2.1 is TEST-NET-1 (documentation); no packet is sent.
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let listen = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| format!("cannot resolve --listen {}", args.listen))?
        .next()
        .with_context(|| format!("--listen {} resolves to no address", args.listen))?;
    let config = ServerConfig {
        listen,
        max_peers_per_session: args.max_peers,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        turn: args.turn(listen),
        ..ServerConfig::default()
    };
    // Install the signal handlers before announcing the URL, so that a SIGTERM sent as soon
    // as the URL is seen already means "shut down gracefully".
    let signals = Signals::install()?;
    let server = SignalingServer::bind(config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", server.url()).context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")?;
    drop(stdout);
    if let Some(turn) = server.turn_addr() {
        tracing::info!(%turn, "embedded TURN/STUN relay running");
    }

    signals.wait().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> Result<Self> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn wait(mut self) -> Result<()> {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        Ok(())
    }

    #[cfg(not(unix))]
    async fn wait(self) -> Result<()> {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}
