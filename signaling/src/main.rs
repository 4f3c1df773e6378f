//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM. Same options
//! and the same run/shutdown path as `peershare signal` (`peershare_signaling::cli`).

use anyhow::Result;
use clap::{Parser, ValueEnum};
use peershare_signaling::cli::{ServerArgs, raise_fd_limit, serve};
use tracing_subscriber::EnvFilter;

/// WebSocket signaling server for peershare.
#[derive(Debug, Parser)]
#[command(name = "peershare-signaling", version, about)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Log lines on stderr: `text` for people, `json` (one object per line, with the
    /// connection's span: `peer`, then `session` and `client_id` once joined) for a log
    /// pipeline.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    serve(&args.server).await
}
