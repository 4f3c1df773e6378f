//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peershare_signaling::cli::{TurnArgs, default_turn_port};
use peershare_signaling::{ServerConfig, SignalingServer};
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
    #[command(flatten)]
    turn: TurnArgs,
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
        turn: args.turn.config(listen.ip(), default_turn_port(listen)),
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
