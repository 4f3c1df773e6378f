//! The `peershare` command line: `send`, `recv` and `signal`.

mod cli;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fast, verified, peer-to-peer file transfer over WebRTC.
#[derive(Parser, Debug)]
#[command(name = "peershare", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Share files; prints the `peershare recv TICKET` line to give to the recipient.
    Send(SendArgs),
    /// Receive the files shared under a ticket.
    Recv(RecvArgs),
    /// Run a signaling server.
    Signal(SignalArgs),
}

/// Options of the peer, shared by `send` and `recv`.
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Print one JSON object per line on stdout instead of progress bars.
    #[arg(long)]
    json: bool,
    /// Restrict the servers (`send`'s embedded one) and ICE host candidates to this local
    /// address.
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    /// Largest file to send or accept, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Use only TURN relay candidates (never a direct path).
    #[arg(long, conflicts_with = "direct_only")]
    relay_only: bool,
    /// Never use a TURN relay.
    #[arg(long)]
    direct_only: bool,
    /// At most this many bytes per second, all files together (suffixes K, M, G).
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = cli::parse_bytes)]
    limit_rate: Option<u64>,
    /// Trust this CA certificate (PEM) for wss:// signaling servers, in addition to the
    /// system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl PeerArgs {
    /// Apply these options to a peer configuration.
    fn apply(&self, config: &mut peershare::PeerConfig) {
        config.name = cli::host_name();
        config.rtc.bind = self.bind;
        config.rtc.relay_only = self.relay_only;
        config.rtc.direct_only = self.direct_only;
        config.rate_limit = self.limit_rate;
        config.ca_file = self.ca.clone();
        if let Some(max) = self.max_size {
            config.max_file_size = max;
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Signaling server (`ws://HOST:PORT`, `wss://…`). Default: `PEERSHARE_SERVER` or the
    /// config file's `server`; without either an embedded server is started.
    #[arg(long)]
    server: Option<String>,
    /// Start an embedded server even if a default server is configured.
    #[arg(long, conflicts_with = "server")]
    embedded: bool,
    /// The code to use, `ROUTE-SECRET` (default: a server-chosen number and fresh
    /// words, e.g. 7-orbit-canvas-tiger). The route (8 to 64 characters from
    /// [A-Za-z0-9_]) names a session to create; if it exists already, `send` refuses
    /// (7015) instead of joining it: someone else may have taken it. See --join.
    #[arg(long, alias = "session", value_name = "CODE")]
    code: Option<String>,
    /// Share into the existing session of --code instead of creating it.
    #[arg(long, requires = "code")]
    join: bool,
    /// Words in a generated code's secret (11 bits each).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(2..=16), conflicts_with = "code")]
    words: u8,
    /// Share only with this client ID (repeatable); everyone by default.
    #[arg(long = "to", value_name = "CLIENT")]
    to: Vec<String>,
    /// Keep serving after the first recipient has everything, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    peer: PeerArgs,
    /// TURN relay of the embedded signaling server (ignored with --server).
    #[command(flatten)]
    turn: cli::signal::TurnArgs,
    /// Follow symbolic links inside shared directories (they are skipped, with a note,
    /// by default; a directory reached twice is skipped).
    #[arg(long)]
    follow_symlinks: bool,
    /// Files and directories to share (a directory is shared as a tree).
    #[arg(required = true, value_name = "PATH")]
    /// Share this text instead of files (at most 64 KiB): `recv` prints it.
    #[arg(long, value_name = "TEXT", conflicts_with = "files")]
    text: Option<String>,
    /// The name to offer standard input (`-`, default `stdin`) or the --text (default
    /// `text.txt`) under.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Files to share; `-` is standard input, read to its end before anything is offered.
    #[arg(required_unless_present = "text", value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Directory to save into (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Accept every file without asking.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Write the one file received to standard output (after its BLAKE3 verification)
    /// instead of saving it; messages stay on stderr.
    #[arg(long, conflicts_with_all = ["json", "overwrite", "out"])]
    stdout: bool,
    /// Replace an existing file of the same name (atomically, once verified) instead of
    /// saving under a numbered name.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    peer: PeerArgs,
    /// The ticket printed by `peershare send`.
    ticket: String,
}

/// The options of `peershare-signaling`, exactly.
#[derive(clap::Args, Debug)]
pub struct SignalArgs {
    #[command(flatten)]
    server: peershare::signaling::cli::ServerArgs,
}

fn main() -> ExitCode {
    peershare::limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error is fatal too: with --json it is also a JSON line.
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                let message = e.kind().to_string();
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "error",
                        "code": peershare::codes::INVALID_ARGUMENT,
                        "message": message,
                        "exit": cli::Exit::Usage as u8,
                    })
                );
            }
            e.exit()
        }
    };
    // Logs only when asked for: the console is for the command's own lines.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PEERSHARE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    // Servers (`signal`, `send`'s embedded one) hold a descriptor per connection: do not
    // stay at the usual soft limit of 1,024.
    if let Err(e) = peershare::signaling::cli::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open file limit");
    }
    let json = match &cli.command {
        Command::Send(a) => a.peer.json,
        Command::Recv(a) => a.peer.json,
        Command::Signal(_) => false,
    };
    let mut out = cli::output::Output::new(json);
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let result = runtime.block_on(async {
                match cli.command {
                    Command::Send(args) => cli::send::run(args, &mut out).await,
                    Command::Recv(args) => cli::recv::run(args, &mut out).await,
                    Command::Signal(args) => cli::signal::run(args).await.map_err(Into::into),
                }
            });
            // Do not wait for background tasks (connections closing) to wind down.
            runtime.shutdown_background();
            result
        }
        Err(e) => Err(cli::Fatal::new(
            cli::Exit::TransferFailed,
            peershare::codes::INVALID_ARGUMENT,
            format!("cannot start the async runtime: {e}"),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            out.clear();
            if out.is_json() {
                out.json_line(&serde_json::json!({
                    "event": "error",
                    "code": fatal.code,
                    "message": fatal.message,
                    "exit": fatal.exit as u8,
                }));
            }
            eprintln!("{}", fatal.line());
            ExitCode::from(fatal.exit as u8)
        }
    }
}
