//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM. Same options
//! and the same run/shutdown path as `peershare signal` (`peershare_signaling::cli`).

use anyhow::Result;
use clap::Parser;
use peershare_signaling::cli::{ServerArgs, raise_fd_limit, serve};
use tracing_subscriber::EnvFilter;

/// WebSocket signaling server for peershare.
#[derive(Debug, Parser)]
#[command(name = "peershare-signaling", version, about)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
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
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    serve(&args.server).await
}
