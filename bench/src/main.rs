//! `peershare-bench`: measures the data-channel ceiling, a real peershare transfer, their
//! ratio, peak RSS per peer, join → first byte, fan-out and plain TCP in one run, and
//! prints a markdown table (docs/PERFORMANCE.md). All traffic stays on 127.0.0.1.
//!
//! ```text
//! cargo build --release -p peershare-bench
//! target/release/peershare-bench                  # defaults: 512 MiB, 4 recipients
//! target/release/peershare-bench --size 1024 --recipients 4
//! ```

mod bench;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "peershare-bench",
    about = "Throughput, memory and latency benchmark of peershare on loopback"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    bench: bench::BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Internal: one peer of a measurement, driven by the parent over stdin/stdout.
    #[command(hide = true)]
    Peer(bench::child::PeerArgs),
    /// Internal: one end of the raw data-channel pair (a), driven by the parent.
    #[command(hide = true)]
    RawPeer(bench::raw::RawPeerArgs),
    /// peershare next to TCP CUBIC and BBR on emulated WAN paths (root; bench/src/bench/wan.rs).
    Wan(bench::wan::WanArgs),
    /// Many small files: a tree of 10,000 × 4 KiB and one of 1,000 × 1 MiB next to one
    /// file of the same size and sendme, disk to disk (bench/src/bench/files.rs).
    Files(bench::files::FilesArgs),
    /// The `peershare` binary and the browser page in headless Chromium, both ways
    /// (bench/src/bench/browser.rs).
    Browser(bench::browser::BrowserArgs),
    /// Load on one signaling server (`peershare-signaling` under taskset): joins/s, relay
    /// latency under N active peers, relayed frames/s at saturation, RSS per idle peer
    /// (bench/src/bench/signaling/).
    Signaling(bench::signaling::SignalingArgs),
}

/// Log filter unless RUST_LOG is set: our warnings, but not the WebRTC stack's routine
/// connection-setup chatter.
const QUIET: &str = "warn,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error";

fn main() -> anyhow::Result<()> {
    // As the product's binary does, so that the peer processes measure what it uses.
    peershare::limit_malloc_arenas();
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| QUIET.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let workers = match &cli.cmd {
        Some(Cmd::Peer(a)) => a.tune.workers,
        Some(Cmd::RawPeer(a)) => a.tune.workers,
        Some(Cmd::Wan(_) | Cmd::Files(_) | Cmd::Browser(_) | Cmd::Signaling(_)) => None,
        None => cli.bench.tune.workers,
    };
    if let Some(Cmd::Signaling(args)) = cli.cmd {
        // Its own single-threaded runtime, pinned to the generator's core.
        return bench::signaling::run(args);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(usize::try_from(n)?);
    }
    let runtime = builder.enable_all().build()?;
    match cli.cmd {
        Some(Cmd::Peer(args)) => runtime.block_on(bench::child::run(args)),
        Some(Cmd::RawPeer(args)) => runtime.block_on(bench::raw::run_peer(args)),
        Some(Cmd::Wan(args)) => runtime.block_on(bench::wan::run(args)),
        Some(Cmd::Browser(args)) => runtime.block_on(bench::browser::run(args)),
        // Child processes and blocking file work only: no runtime needed.
        Some(Cmd::Files(args)) => bench::files::run(args),
        Some(Cmd::Signaling(_)) => Ok(()),
        None => runtime.block_on(bench::run(cli.bench)),
    }
}
