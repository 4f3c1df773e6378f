//! The hidden `peer` subcommand: one peershare peer per process, so that each peer's peak
//! RSS can be read from /proc. It reports to the parent with one line per fact on stdout
//! (`key value…`) and takes `go` / `quit` lines on stdin.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use peershare::{Event, Peer, PeerConfig, Save, Share};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use super::Tune;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Send,
    Recv,
}

#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    /// Signaling server URL.
    #[arg(long)]
    pub server: String,
    /// Sender: the file to share with everyone in the session.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Recipient: the session to join.
    #[arg(long)]
    pub session: Option<String>,
    /// Recipient: where the download goes.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Recipient: print `ready` when the offer arrives and wait for `go` before
    /// requesting it.
    #[arg(long)]
    pub wait_go: bool,
    #[command(flatten)]
    pub tune: Tune,
}

fn ms(t0: Instant) -> String {
    format!("{:.1}", t0.elapsed().as_secs_f64() * 1000.0)
}

/// Wait for `want` on stdin; false on EOF or `quit`.
async fn wait_line(stdin: &mut Lines<BufReader<Stdin>>, want: &str) -> bool {
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "quit" => return false,
            l if l == want => return true,
            _ => {}
        }
    }
    false
}

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut config = PeerConfig::new(&args.server);
    config.rtc = args.tune.settings();
    config.rate_limit = args.tune.limit_rate;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    match args.role {
        Role::Send => {
            let file = args.file.context("--file is required for --role send")?;
            config.name = "bench-sender".into();
            let (peer, mut events) = Peer::join(config).await?;
            println!("session {}", peer.session());
            peer.send_files(&[file], Share::Broadcast).await?;
            println!("shared {}", ms(t0));
            loop {
                tokio::select! {
                    line = stdin.next_line() => match line {
                        Ok(Some(l)) if l.trim() != "quit" => {}
                        _ => break,
                    },
                    ev = events.recv() => match ev {
                        Some(Event::UploadFailed { message, .. }) => println!("failed {message}"),
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), peer.leave()).await;
        }
        Role::Recv => {
            let session = args
                .session
                .context("--session is required for --role recv")?;
            let out = args.out.context("--out is required for --role recv")?;
            config.session = Some(session);
            config.name = "bench-recipient".into();
            config.download_dir = out.clone();
            let (peer, mut events) = Peer::join(config).await?;
            println!("joined {}", ms(t0));
            let mut requested: Option<Instant> = None;
            let mut first_progress = true;
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Connection { .. } => println!("connected {}", ms(t0)),
                    Event::DownloadAvailable { file_id, .. } if requested.is_none() => {
                        println!("available {}", ms(t0));
                        if args.wait_go {
                            println!("ready");
                            if !wait_line(&mut stdin, "go").await {
                                break;
                            }
                        }
                        requested = Some(Instant::now());
                        peer.download(file_id, Save::ToDir(out.clone())).await?;
                        println!("requested {}", ms(t0));
                    }
                    Event::DownloadStarted { .. } => println!("started {}", ms(t0)),
                    Event::DownloadProgress { bytes, .. } if first_progress => {
                        first_progress = false;
                        println!("first_progress {} {bytes}", ms(t0));
                    }
                    Event::DownloadCompleted { path, .. } => {
                        let secs = requested.map_or(0.0, |r| r.elapsed().as_secs_f64());
                        let path = path.map_or_else(String::new, |p| p.display().to_string());
                        println!("done {secs:.6} {path}");
                        wait_line(&mut stdin, "\u{0}").await;
                        break;
                    }
                    Event::DownloadFailed { message, .. } => {
                        println!("failed {}", message.replace('\n', " "));
                        wait_line(&mut stdin, "\u{0}").await;
                        break;
                    }
                    _ => {}
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), peer.leave()).await;
        }
    }
    Ok(())
}
