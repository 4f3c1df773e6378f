//! The `peershare` command line: `send`, `recv`, `signal` and `partials`.

mod cli;

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

/// Examples ending each subcommand's `--help`: two or three command lines, each
/// optionally followed by `# what it does` (a unit test parses every one).
const SEND_EXAMPLES: &str = "\
Examples:
  peershare send report.pdf photos.zip    # prints the `peershare recv TICKET` line to pass on
  peershare send --code teamshare-amber-koala --keep notes.txt    # a chosen code; serve until Ctrl-C
  peershare send --code teamshare-amber-koala --join --to alice slides.pdf    # only to the member named alice";
const RECV_EXAMPLES: &str = "\
Examples:
  peershare recv 7-orbit-canvas-tiger@192.168.1.20:40213    # the line `peershare send` printed
  peershare recv --yes --out Downloads 7-orbit-canvas-tiger    # default server; accept every file
  peershare recv --json --yes 7-orbit-canvas-tiger@wss://signal.example.org    # for scripts";
const SIGNAL_EXAMPLES: &str = "\
Examples:
  peershare signal --listen 0.0.0.0:8787    # clients pass --server ws://THIS-HOST:8787
  peershare signal --listen 0.0.0.0:443 --tls-cert fullchain.pem --tls-key privkey.pem
  peershare signal --turn-url 'turn:turn.example.org:3478?transport=udp' --turn-secret SECRET";
const PARTIALS_EXAMPLES: &str = "\
Examples:
  peershare partials    # partial downloads in the current directory
  peershare partials --out Downloads --remove    # delete every one of them
  peershare partials --out Downloads --remove 3f2a9c1e    # delete one, by the start of its job ID";

#[derive(Subcommand, Debug)]
enum Command {
    /// Share files; prints the `peershare recv TICKET` line to give to the recipient.
    #[command(
        after_help = SEND_EXAMPLES,
        mut_arg("bind", |a| a.help(
            "Restrict the embedded signaling server and ICE host candidates to this local \
             address")),
        mut_arg("max_size", |a| a.help(
            "Refuse to share a file larger than this, in bytes (suffixes K, M, G, T: 10M, \
             1.5G) [default: 1T]")),
        mut_arg("turn_listen", |a| a.help(
            "UDP address of the embedded relay [default: the signaling IP, an ephemeral \
             port]")),
    )]
    Send(SendArgs),
    /// Receive the files shared under a ticket.
    #[command(
        after_help = RECV_EXAMPLES,
        mut_arg("bind", |a| a.help("Use only this local address for ICE host candidates")),
        mut_arg("max_size", |a| a.help(
            "Decline files larger than this, in bytes (suffixes K, M, G, T: 10M, 1.5G); the \
             sender is told (1185) [default: 1T]")),
    )]
    Recv(RecvArgs),
    /// Run a signaling server.
    #[command(
        after_help = SIGNAL_EXAMPLES,
        mut_arg("turn_listen", |a| a.help(
            "UDP address of the embedded TURN/STUN relay [default: the signaling IP, port \
             3478; an ephemeral port when the signaling port is 0]")),
    )]
    Signal(SignalArgs),
    /// List or remove the partial downloads `peershare recv` left in a directory.
    #[command(after_help = PARTIALS_EXAMPLES)]
    Partials(PartialsArgs),
}

/// Options of the peer, shared by `send` and `recv` (`--bind` and `--max-size` get
/// their help text per subcommand, in [`Command`]).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Print one JSON object per line on stdout instead of progress bars.
    #[arg(long)]
    json: bool,
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    #[arg(long, value_name = "BYTES", value_parser = cli::parse_bytes)]
    max_size: Option<u64>,
    /// Use only TURN relay candidates (never a direct path).
    #[arg(long, conflicts_with = "direct_only")]
    relay_only: bool,
    /// Never use a TURN relay.
    #[arg(long)]
    direct_only: bool,
    /// At most this many bytes per second, all files together (suffixes K, M, G, T: 10M,
    /// 1.5G).
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = cli::parse_bytes)]
    limit_rate: Option<u64>,
    /// Trust this CA certificate (PEM) for wss:// signaling servers, in addition to the
    /// system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// After losing the signaling server, keep trying to rejoin the session for this many
    /// seconds (transfers carry on meanwhile); 0 gives up at once.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    signaling_retry_secs: u64,
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
        config.signaling_retry_window = std::time::Duration::from_secs(self.signaling_retry_secs);
        if let Some(max) = self.max_size {
            config.max_file_size = max;
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Signaling server (`ws://HOST:PORT`, `wss://…`). Repeat it (or separate URLs with
    /// commas) for more servers of one deployment, tried in order: all go in the ticket.
    /// Default: `PEERSHARE_SERVER` or the config file's `server`; without either an
    /// embedded server is started.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    server: Vec<String>,
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
    /// Words in a generated code's secret, 2 to 16 (11 bits each).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(2..=16), conflicts_with = "code")]
    words: u8,
    /// Share only with this member: its client ID or its display name, as `recv` prints
    /// them (repeatable; a name several members have means all of them). Everyone by
    /// default. A --to that matches no member 10 s after the share starts is an error
    /// (6013).
    #[arg(long = "to", value_name = "CLIENT_OR_NAME")]
    to: Vec<String>,
    /// Keep serving after the first recipient has everything, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Also print the ticket's page URL (for a browser) as a QR code on stderr, to scan
    /// with a phone (Unicode half blocks, light on dark).
    #[arg(long)]
    qr: bool,
    #[command(flatten)]
    peer: PeerArgs,
    /// Follow symbolic links inside shared directories (they are skipped, with a note,
    /// by default; a directory reached twice is skipped).
    #[arg(long)]
    follow_symlinks: bool,
    /// Share this text instead of files (at most 64 KiB): `recv` prints it.
    #[arg(long, value_name = "TEXT", conflicts_with = "files")]
    text: Option<String>,
    /// The name to offer standard input (`-`, default `stdin`) or the --text (default
    /// `text.txt`) under.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Files and directories to share (a directory is shared as a tree); `-` is standard
    /// input, read to its end before anything is offered.
    #[arg(required_unless_present = "text", value_name = "PATH")]
    files: Vec<PathBuf>,
    #[command(
        flatten,
        next_help_heading = "Embedded server's TURN relay (ignored with --server)"
    )]
    turn: cli::signal::TurnArgs,
}

#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Directory to save into (created if missing); a partial download of an offered
    /// file there is resumed.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Accept every file without asking (and resume partial downloads).
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
    /// Log lines on stderr: `text` for people, `json` (one object per line, with the
    /// connection's span: `peer`, then `session` and `client_id` once joined) for a log
    /// pipeline. Given, it turns the logs on (`PEERSHARE_LOG`, default `info`), as
    /// `peershare-signaling` has them.
    #[arg(long, value_enum)]
    log_format: Option<peershare::signaling::cli::LogFormat>,
}

#[derive(clap::Args, Debug)]
pub struct PartialsArgs {
    /// The download directory to look in (`recv`'s --out).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Delete the partial downloads listed (their hidden `.peershare-JOB.*` files) and
    /// say what was removed. Not while a `recv` is downloading into DIR.
    #[arg(long)]
    remove: bool,
    /// Print one JSON object per line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these partial downloads: a job ID, or its start (at least 4 characters) when
    /// no other job starts the same way.
    #[arg(value_name = "JOB")]
    jobs: Vec<String>,
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
    let log_format = match &cli.command {
        Command::Signal(a) => a.log_format,
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERSHARE_LOG");
    match (filter, log_format) {
        (Ok(filter), format) => peershare::signaling::cli::init_logs(
            filter,
            format.unwrap_or(peershare::signaling::cli::LogFormat::Text),
        ),
        (Err(_), Some(format)) => {
            peershare::signaling::cli::init_logs(tracing_subscriber::EnvFilter::new("info"), format)
        }
        (Err(_), None) => {}
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
        Command::Partials(a) => a.json,
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
                    Command::Partials(args) => cli::partials::run(&args, &mut out),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    const SUBCOMMANDS: [&str; 4] = ["send", "recv", "signal", "partials"];

    /// The words of a command line as a POSIX shell splits it (with single quotes; a
    /// word starting with `#` starts a comment).
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    word.get_or_insert_default();
                }
                c if c.is_whitespace() && !quoted => words.extend(word.take()),
                '#' if !quoted && word.is_none() => break,
                c => word.get_or_insert_default().push(c),
            }
        }
        assert!(!quoted, "unbalanced quote in {line:?}");
        words.extend(word);
        words
    }

    /// `peershare SUB --help`, as the binary prints it.
    fn help(sub: &str) -> String {
        match Cli::command().try_get_matches_from(["peershare", sub, "--help"]) {
            Ok(_) => panic!("--help of {sub} parsed as a command"),
            Err(e) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
                e.render().to_string()
            }
        }
    }

    /// The lines of the `Examples:` section that ends a help text.
    fn examples(help: &str) -> Vec<&str> {
        let (_, section) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("no Examples section: {help}"));
        section.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    #[test]
    fn help_examples_of_every_subcommand_parse_as_that_subcommand() {
        for sub in SUBCOMMANDS {
            let help = help(sub);
            let lines = examples(&help);
            assert!((2..=3).contains(&lines.len()), "{sub}: {lines:#?}");
            for line in lines {
                let argv = words(line);
                assert_eq!(argv[..2], ["peershare", sub], "{line:?}");
                let matches = Cli::command()
                    .try_get_matches_from(&argv)
                    .unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"));
                assert_eq!(matches.subcommand_name(), Some(sub), "{line:?}");
                Cli::from_arg_matches(&matches)
                    .unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"));
            }
        }
    }

    #[test]
    fn words_split_like_a_shell_with_single_quotes_and_comments() {
        assert_eq!(
            words("peershare signal --turn-url 'turn:a:1?x=y z' --n ''   # the relay"),
            [
                "peershare",
                "signal",
                "--turn-url",
                "turn:a:1?x=y z",
                "--n",
                ""
            ]
        );
        assert_eq!(words("a#b c"), ["a#b", "c"]);
    }

    #[test]
    fn max_size_and_limit_rate_take_the_same_suffixes() {
        for sub in ["send", "recv"] {
            let mut argv = vec![
                "peershare",
                sub,
                "--max-size",
                "1.5G",
                "--limit-rate",
                "10MB",
            ];
            argv.push(if sub == "send" {
                "f.bin"
            } else {
                "1-a-b@127.0.0.1:9"
            });
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let peer = match &cli.command {
                Command::Send(a) => &a.peer,
                Command::Recv(a) => &a.peer,
                _ => unreachable!("parsed as {sub}"),
            };
            assert_eq!(peer.max_size, Some(3 << 29));
            assert_eq!(peer.limit_rate, Some(10 << 20));
        }
        for bad in ["10X", "1.5", "0", "lots"] {
            let e = Cli::try_parse_from(["peershare", "recv", "--max-size", bad, "x@h:1"])
                .expect_err(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--max-size"), "{e}");
        }
    }
}
