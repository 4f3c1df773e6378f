//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
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
        ..ServerConfig::default()
    };
    let server = SignalingServer::bind(config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", server.url()).context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")?;
    drop(stdout);

    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}
