//! `peershare signal`: a standalone signaling server (with an embedded TURN relay by
//! default). The options and the run/shutdown path are those of `peershare-signaling`
//! (`peershare::signaling::cli`): SIGINT and SIGTERM both drain the clients (`7012`,
//! close 1012) and exit 0.

pub use peershare::signaling::cli::TurnArgs;

use crate::SignalArgs;

pub async fn run(args: SignalArgs) -> anyhow::Result<()> {
    peershare::signaling::cli::serve(&args.server).await
}
