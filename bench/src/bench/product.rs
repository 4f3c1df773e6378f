//! (b), (d), (e), (f): peershare transfers between peers that each run in a child process
//! of the bench (the hidden `peer` subcommand), through an in-process signaling server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::Tune;
use super::sys::vm_hwm_kib;

/// Longest wait for any single line from a child.
const LINE_TIMEOUT: Duration = Duration::from_secs(600);

/// A peer running in a child process.
pub struct ChildPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
    /// Every line seen so far, as (key, rest).
    pub seen: Vec<(String, String)>,
}

impl ChildPeer {
    pub fn spawn(args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_cmd("peer", args)
    }

    /// Start the bench binary's hidden `subcommand` with `args`.
    pub fn spawn_cmd(subcommand: &str, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut child = Command::new(exe)
            .arg(subcommand)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning a peer process")?;
        let pid = child.id().context("child has no pid")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pid,
            seen: Vec::new(),
        })
    }

    /// Read lines until one starts with `key`; returns the rest of it.
    pub async fn expect(&mut self, key: &str) -> anyhow::Result<String> {
        loop {
            let line = tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line())
                .await
                .with_context(|| format!("timed out waiting for `{key}` from peer {}", self.pid))??
                .with_context(|| format!("peer {} exited before `{key}`", self.pid))?;
            let (k, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            self.seen.push((k.to_string(), rest.to_string()));
            if k == key {
                return Ok(rest.to_string());
            }
            if k == "failed" {
                bail!("peer {} failed: {rest}", self.pid);
            }
        }
    }

    /// The first number of the recorded line `key`.
    pub fn seen_ms(&self, key: &str) -> Option<f64> {
        self.seen
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
    }

    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Peak RSS so far, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        vm_hwm_kib(self.pid).map(|k| k as f64 / 1024.0)
    }

    pub async fn quit(mut self) {
        let _ = self.send("quit").await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn sender_args(server: &str, file: &Path, tune: &Tune) -> Vec<String> {
    let mut v = vec![
        "--role".into(),
        "send".into(),
        "--server".into(),
        server.into(),
        "--file".into(),
        file.display().to_string(),
    ];
    v.extend(tune.args());
    v
}

fn recipient_args(
    server: &str,
    session: &str,
    out: &Path,
    wait_go: bool,
    tune: &Tune,
) -> Vec<String> {
    let mut v = vec![
        "--role".into(),
        "recv".into(),
        "--server".into(),
        server.into(),
        "--session".into(),
        session.into(),
        "--out".into(),
        out.display().to_string(),
    ];
    if wait_go {
        v.push("--wait-go".into());
    }
    v.extend(tune.args());
    v
}

/// Start a sender sharing `file`; returns it and the session code.
async fn start_sender(
    server: &str,
    file: &Path,
    tune: &Tune,
) -> anyhow::Result<(ChildPeer, String)> {
    let mut sender = ChildPeer::spawn(&sender_args(server, file, tune))?;
    let session = sender.expect("session").await?;
    sender.expect("shared").await?;
    Ok((sender, session))
}

/// Hash a file with BLAKE3 off the async threads.
pub async fn hash(path: PathBuf) -> anyhow::Result<String> {
    let h = tokio::task::spawn_blocking(move || peershare::transfer::hash_file(&path)).await??;
    Ok(h.to_hex())
}

pub struct Delivery {
    /// Seconds from the download request to DownloadCompleted, in the recipient.
    pub secs: f64,
    pub path: PathBuf,
}

pub struct FanOut {
    /// Parent clock: from `go` to the last `done`.
    pub wall_secs: f64,
    pub deliveries: Vec<Delivery>,
    pub sender_rss_mib: Option<f64>,
    pub recipient_rss_mib: Vec<Option<f64>>,
}

/// One sender, `recipients` fresh recipients that all request at the same moment.
/// Every delivered file is verified against `src_hash` and deleted.
pub async fn fan_out(
    server: &str,
    file: &Path,
    src_hash: &str,
    recipients: usize,
    work: &Path,
    tune: &Tune,
) -> anyhow::Result<FanOut> {
    let (sender, session) = start_sender(server, file, tune).await?;
    let mut peers = Vec::with_capacity(recipients);
    for i in 0..recipients {
        let out = work.join(format!("out-{recipients}-{i}"));
        std::fs::create_dir_all(&out)?;
        peers.push(ChildPeer::spawn(&recipient_args(
            server, &session, &out, true, tune,
        ))?);
    }
    for p in &mut peers {
        p.expect("ready").await?;
    }
    let go = Instant::now();
    for p in &mut peers {
        p.send("go").await?;
    }
    let mut deliveries = Vec::with_capacity(recipients);
    for p in &mut peers {
        let done = p.expect("done").await?;
        let (secs, path) = done.split_once(' ').context("malformed done line")?;
        deliveries.push(Delivery {
            secs: secs.parse()?,
            path: PathBuf::from(path),
        });
    }
    let wall_secs = go.elapsed().as_secs_f64();
    let sender_rss_mib = sender.peak_rss_mib();
    let recipient_rss_mib = peers.iter().map(ChildPeer::peak_rss_mib).collect();
    for p in peers {
        p.quit().await;
    }
    sender.quit().await;
    for d in &deliveries {
        let got = hash(d.path.clone()).await?;
        anyhow::ensure!(
            got == src_hash,
            "{} differs from the source",
            d.path.display()
        );
        std::fs::remove_file(&d.path)?;
    }
    Ok(FanOut {
        wall_secs,
        deliveries,
        sender_rss_mib,
        recipient_rss_mib,
    })
}

/// Join → first byte of a fresh pair, in ms (recipient's clock, from before its join).
pub struct Latency {
    pub connected_ms: f64,
    pub available_ms: f64,
    pub started_ms: f64,
    pub first_progress_ms: f64,
}

/// A fresh sender and a fresh recipient that downloads as soon as the offer arrives.
pub async fn first_byte(
    server: &str,
    file: &Path,
    work: &Path,
    tune: &Tune,
) -> anyhow::Result<Latency> {
    let (sender, session) = start_sender(server, file, tune).await?;
    let out = work.join("out-latency");
    std::fs::create_dir_all(&out)?;
    let mut r = ChildPeer::spawn(&recipient_args(server, &session, &out, false, tune))?;
    let done = r.expect("done").await?;
    let lat = Latency {
        connected_ms: r.seen_ms("connected").unwrap_or(f64::NAN),
        available_ms: r.seen_ms("available").unwrap_or(f64::NAN),
        started_ms: r.seen_ms("started").unwrap_or(f64::NAN),
        first_progress_ms: r.seen_ms("first_progress").unwrap_or(f64::NAN),
    };
    r.quit().await;
    sender.quit().await;
    if let Some((_, path)) = done.split_once(' ') {
        let _ = std::fs::remove_file(path);
    }
    Ok(lat)
}
