//! `peershare-signaling`: run the signaling server until Ctrl-C or SIGTERM. Same options
//! and the same run/shutdown path as `peershare signal` (`peershare_signaling::cli`).

use anyhow::Result;
use clap::Parser;
use peershare_signaling::cli::{LogFormat, ServerArgs, init_logs, raise_fd_limit, serve};
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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    init_logs(filter, args.log_format);
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    serve(&args.server).await
}
