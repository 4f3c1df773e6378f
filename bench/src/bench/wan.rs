//! `peershare-bench wan`: peershare next to plain TCP on emulated WAN paths.
//!
//! Two network namespaces joined by the WAN emulator (`peershare-wanem`, in this
//! process): A at 198.51.100.1, B at 198.51.100.2. For every cell of the matrix
//! RTT × random loss × bottleneck rate (queue = one BDP, rate × RTT; the same link both
//! ways, half the RTT each way), in the same run:
//! - **peershare**: the real binaries (`--peershare PATH`, default: next to this one):
//!   `peershare signal --no-turn` and `peershare send --direct-only` in A,
//!   `peershare recv --direct-only` in B; one file → file, BLAKE3 checked. Clock:
//!   recv's `download-started` → `download-completed` (setup shown apart).
//! - **TCP**: one connection A → B, CUBIC and BBR (`TCP_CONGESTION`; BBR when the
//!   kernel offers it), the same bytes. Clock: accept → last byte, at the receiver.
//!
//! Each transfer gets a fresh emulator, so its drop counters are its own. A transfer
//! still running after `--timeout` seconds of data is stopped and reported as
//! `timeout ≥ N s` with the average rate it reached. Needs root.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use peershare_wanem::netns::{self, Netns};
use peershare_wanem::spec::bdp_bytes;
use peershare_wanem::{ADDR_A, ADDR_B, Config, Emulator, LinkConfig, Loss, Stats, tcp};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{MIB, phase, sys, write_random_file};

/// Longest connection setup (spawn → first data) before a transfer counts as failed.
const SETUP_GUARD: Duration = Duration::from_secs(60);
/// Longest wait for a process to exit once its work is done.
const EXIT_GUARD: Duration = Duration::from_secs(30);
const SIGNAL_PORT: u16 = 8787;
const TCP_PORT: u16 = 5201;

#[derive(Debug, Clone, Args)]
pub struct WanArgs {
    /// Round-trip times to measure, ms (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 40, 100, 200])]
    pub rtt: Vec<u64>,
    /// Random loss in each direction, percent (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f64, 0.1, 1.0])]
    pub loss: Vec<f64>,
    /// Bottleneck rates, Mbit/s (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100u64, 1000])]
    pub rate: Vec<u64>,
    /// MiB per transfer (default: what the bottleneck moves in --seconds).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub size: Option<u64>,
    /// Seconds a transfer takes at link rate; sets the default --size per rate.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Cap per transfer: seconds of data phase before it is stopped and reported as a
    /// timeout (with the average rate it reached).
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// The peershare binary (default: `peershare` next to this binary).
    #[arg(long, value_name = "PATH")]
    pub peershare: Option<PathBuf>,
    /// TCP congestion controls to compare with (default: cubic, and bbr when the kernel
    /// offers it); `none` for peershare alone.
    #[arg(long, value_delimiter = ',')]
    pub tcp: Option<Vec<String>>,
    /// Skip the emulator's own TCP ceiling (zero delay, no loss, no rate limit).
    #[arg(long)]
    pub no_ceiling: bool,
    /// MiB of the ceiling measurement.
    #[arg(long, default_value_t = 2048)]
    pub ceiling_size: u64,
    /// One tiny cell (10 ms, no loss, 100 Mbit/s, 2 MiB) and a tiny ceiling: checks that
    /// everything runs.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for the test files and the peers' stderr logs (default: a fresh
    /// directory under $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory (the test files and the peers' stderr logs, where
    /// `PEERSHARE_LOG` sends their logs) instead of removing it at the end.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the emulator's random draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What one transfer reached.
#[derive(Debug, Clone)]
enum Outcome {
    Done {
        mib_s: f64,
        secs: f64,
        setup_ms: Option<f64>,
        drops: Stats,
    },
    Timeout {
        /// Average over the capped data phase.
        mib_s: f64,
        cap: u64,
        drops: Stats,
    },
    /// The error is listed below the table.
    Failed,
    NotAvailable,
}

impl Outcome {
    fn rate(&self) -> Option<f64> {
        match self {
            Outcome::Done { mib_s, .. } | Outcome::Timeout { mib_s, .. } => Some(*mib_s),
            _ => None,
        }
    }

    fn cell(&self) -> String {
        match self {
            Outcome::Done { mib_s, .. } => format!("{mib_s:.2}"),
            Outcome::Timeout { mib_s, cap, .. } => format!("timeout ≥ {cap} s ({mib_s:.2})"),
            Outcome::Failed => "failed".into(),
            Outcome::NotAvailable => "n/a".into(),
        }
    }

    fn drops(&self) -> String {
        match self {
            Outcome::Done { drops, .. } | Outcome::Timeout { drops, .. } => {
                let lost = drops.a_to_b.lost + drops.b_to_a.lost;
                let dev = drops.a_to_b.device_drops + drops.b_to_a.device_drops;
                let (ab, ba) = (drops.a_to_b.overflow, drops.b_to_a.overflow);
                // Queue drops of the reverse path (acknowledgements) shown apart.
                match ba {
                    0 => format!("{lost} / {ab} / {dev}"),
                    _ => format!("{lost} / {ab} + {ba} back / {dev}"),
                }
            }
            _ => "–".into(),
        }
    }
}

fn ratio(a: &Outcome, b: &Outcome) -> String {
    match (a.rate(), b.rate()) {
        (Some(x), Some(y)) if y > 0.0 => {
            let approx =
                matches!(a, Outcome::Timeout { .. }) || matches!(b, Outcome::Timeout { .. });
            format!("{}{:.2}", if approx { "~" } else { "" }, x / y)
        }
        _ => "–".into(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    rtt_ms: u64,
    loss_pct: f64,
    rate_mbit: u64,
}

impl Cell {
    fn rate_bytes(&self) -> u64 {
        self.rate_mbit * 1_000_000 / 8
    }

    fn link_mib_s(&self) -> f64 {
        self.rate_bytes() as f64 / MIB as f64
    }

    /// The link ratio no sender with peershare's start and headers can beat on this
    /// cell's loss-free path, moving `size` bytes: see [`startup_bound`].
    fn startup_bound(&self, size: u64) -> f64 {
        startup_bound(
            self.rate_bytes() as f64,
            Duration::from_millis(self.rtt_ms),
            size,
        )
    }

    fn queue_bytes(&self) -> usize {
        bdp_bytes(self.rate_bytes(), Duration::from_millis(self.rtt_ms))
    }

    fn link(&self) -> LinkConfig {
        let loss = if self.loss_pct > 0.0 {
            Loss::random(self.loss_pct / 100.0)
        } else {
            Loss::None
        };
        LinkConfig::default()
            .with_delay(Duration::from_millis(self.rtt_ms) / 2, Duration::ZERO)
            .with_loss(loss)
            .with_rate(self.rate_bytes(), self.queue_bytes())
    }
}

/// The SCTP sender's first window under BBR: ten packets of the stack's initial size
/// (`vendor/PATCH.md`, as TCP's and QUIC's initial window).
const START_WINDOW_BYTES: f64 = 11_880.0;

/// File bytes per byte on the wire with probed 1,400-byte SCTP packets: 1,372 bytes of
/// file data in a 1,465-byte IP packet (SCTP, DTLS, UDP and IPv4 headers).
const FILE_SHARE_OF_WIRE: f64 = 1372.0 / 1465.0;

/// The best link ratio (file bytes per second over the link's rate) of a sender that
/// moves `size` bytes over a loss-free path of `rate` bytes/s and round trip `rtt`,
/// starting with peershare's first window ([`START_WINDOW_BYTES`]) and doubling what it
/// sends every round trip until it fills the path (what slow start and BBR's Startup
/// do at best), with peershare's headers ([`FILE_SHARE_OF_WIRE`]). The clock runs from
/// the first file byte's arrival to the last one's. Short transfers on long paths spend
/// much of their time in those round trips: this is the ceiling of the
/// `peershare / link` column.
fn startup_bound(rate: f64, rtt: Duration, size: u64) -> f64 {
    let rate_files = rate * FILE_SHARE_OF_WIRE;
    let path_bytes = rate_files * rtt.as_secs_f64();
    let size = size as f64;
    let (mut sent, mut window, mut rounds) = (0.0, START_WINDOW_BYTES, 0.0);
    while window < path_bytes && sent + window < size {
        sent += window;
        window *= 2.0;
        rounds += 1.0;
    }
    let secs = rounds * rtt.as_secs_f64() + (size - sent) / rate_files;
    size / secs / rate
}

/// The run's fixed parts: namespaces, binary, files.
struct Lab {
    // Field order: the namespaces go after everything that runs in them.
    a: Netns,
    b: Netns,
    peershare: PathBuf,
    work: PathBuf,
    seed: u64,
    timeout: u64,
}

impl Lab {
    fn emulator(&self, link: LinkConfig) -> anyhow::Result<Emulator> {
        let mut cfg = Config::new(self.a.name(), self.b.name()).with_link(link);
        cfg.seed = self.seed;
        Emulator::start(cfg).context("starting the WAN emulator")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.work.join(format!("{name}.stderr"))
    }

    fn spawn(&self, ns: &Netns, args: &[&str], log: &str) -> anyhow::Result<Child> {
        let stderr = std::fs::File::create(self.log(log))?;
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(&self.peershare)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("PEERSHARE_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {args:?}", self.peershare.display()))
    }

    fn tail(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.log(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

async fn line_until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    match tokio::time::timeout_at(deadline.into(), lines.next_line()).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("timed out"),
    }
}

/// One peershare transfer of `file` (`size` bytes, BLAKE3 `hash`) from A to B.
async fn peershare_transfer(
    lab: &Lab,
    link: LinkConfig,
    file: &Path,
    size: u64,
    hash: &str,
) -> anyhow::Result<Outcome> {
    let emulator = lab.emulator(link)?;
    let listen = format!("{ADDR_A}:{SIGNAL_PORT}");
    let mut signal = lab.spawn(
        &lab.a,
        &["signal", "--listen", &listen, "--no-turn"],
        "signal",
    )?;
    let mut signal_lines = BufReader::new(signal.stdout.take().context("signal stdout")?).lines();
    let guard = Instant::now() + SETUP_GUARD;
    let url = loop {
        match line_until(&mut signal_lines, guard).await {
            Ok(Some(l)) if l.starts_with("ws://") => break l.trim().to_string(),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("signal printed no URL: {}", lab.tail("signal")),
        }
    };
    let file_arg = file.to_str().context("file path")?;
    let mut send = lab.spawn(
        &lab.a,
        &[
            "send",
            "--server",
            &url,
            "--json",
            "--direct-only",
            "--bind",
            &ADDR_A.to_string(),
            file_arg,
        ],
        "send",
    )?;
    let mut send_lines = BufReader::new(send.stdout.take().context("send stdout")?).lines();
    let ticket = match line_until(&mut send_lines, guard).await {
        Ok(Some(l)) => {
            let v: serde_json::Value = serde_json::from_str(&l).context("send's first line")?;
            v["ticket"].as_str().context("no ticket")?.to_string()
        }
        _ => bail!("send printed no ticket: {}", lab.tail("send")),
    };
    // Drain send's stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = send_lines.next_line().await {} });

    let out = lab.work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let out_arg = out.to_str().context("out path")?.to_string();
    let recv_start = Instant::now();
    let mut recv = lab.spawn(
        &lab.b,
        &[
            "recv",
            "--yes",
            "--json",
            "--direct-only",
            "--bind",
            &ADDR_B.to_string(),
            "--out",
            &out_arg,
            &ticket,
        ],
        "recv",
    )?;
    let mut lines = BufReader::new(recv.stdout.take().context("recv stdout")?).lines();
    let mut started: Option<Instant> = None;
    let mut progress = 0u64;
    let mut deadline = guard;
    let outcome = loop {
        let line = match line_until(&mut lines, deadline).await {
            Ok(Some(l)) => l,
            Ok(None) => bail!("recv ended early: {}", lab.tail("recv")),
            Err(_) => match started {
                Some(_) => {
                    break Outcome::Timeout {
                        mib_s: progress as f64 / MIB as f64 / lab.timeout as f64,
                        cap: lab.timeout,
                        drops: emulator.stats(),
                    };
                }
                None => bail!("no data within {SETUP_GUARD:?}: {}", lab.tail("recv")),
            },
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("download-started") => {
                let now = Instant::now();
                started = Some(now);
                deadline = now + Duration::from_secs(lab.timeout);
            }
            Some("download-progress") => progress = v["bytes"].as_u64().unwrap_or(progress),
            Some("download-completed") => {
                let t0 = started.context("completed before it started")?;
                let secs = t0.elapsed().as_secs_f64();
                break Outcome::Done {
                    mib_s: size as f64 / MIB as f64 / secs,
                    secs,
                    setup_ms: Some(t0.duration_since(recv_start).as_secs_f64() * 1e3),
                    drops: emulator.stats(),
                };
            }
            Some("download-failed") | Some("error") => {
                bail!("recv: {line}: {}", lab.tail("recv"))
            }
            _ => {}
        }
    };
    if matches!(outcome, Outcome::Done { .. }) {
        let status = tokio::time::timeout(EXIT_GUARD, recv.wait()).await;
        if !matches!(status, Ok(Ok(s)) if s.success()) {
            bail!("recv did not exit 0 ({status:?}): {}", lab.tail("recv"));
        }
        let name = file.file_name().context("file name")?;
        let got = super::product::hash(out.join(name)).await?;
        if got != hash {
            bail!("the received file's BLAKE3 differs from the source's");
        }
        let _ = tokio::time::timeout(EXIT_GUARD, send.wait()).await;
    }
    // Whatever still runs (a timeout) is killed when the children drop.
    drop((recv, send, signal));
    let _ = std::fs::remove_dir_all(&out);
    emulator.stop();
    Ok(outcome)
}

/// Wait until `listener` has a connection or `deadline` passes.
fn accept_until(listener: &TcpListener, deadline: Instant) -> anyhow::Result<std::net::TcpStream> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms.min(i32::MAX as u128) as i32) };
    if r <= 0 {
        bail!("no TCP connection arrived");
    }
    Ok(listener.accept()?.0)
}

/// One TCP transfer of `bytes` from A to B with congestion control `cc`.
fn tcp_transfer(lab: &Lab, link: LinkConfig, cc: &str, bytes: u64) -> anyhow::Result<Outcome> {
    let emulator = lab.emulator(link)?;
    let addr = SocketAddr::new(ADDR_B.into(), TCP_PORT);
    let listener = lab.b.run(|| TcpListener::bind(addr))?;
    let cap = Duration::from_secs(lab.timeout);
    let outcome = std::thread::scope(|s| -> anyhow::Result<Outcome> {
        let receiver = s.spawn(|| -> anyhow::Result<tcp::Transfer> {
            let mut conn = accept_until(&listener, Instant::now() + SETUP_GUARD)?;
            Ok(tcp::receive(
                &mut conn,
                Some(bytes),
                false,
                Some(Instant::now() + cap),
            )?)
        });
        let sent = lab
            .a
            .run(|| tcp::connect(addr, Some(cc), SETUP_GUARD))
            .and_then(|mut stream| {
                tcp::send(
                    &mut stream,
                    bytes,
                    Some(Instant::now() + cap + Duration::from_secs(5)),
                )
            });
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("TCP receiver panicked"))??;
        // A receiver that gave up at the cap closes the connection under the sender.
        if got.complete {
            sent.with_context(|| format!("TCP sender ({cc})"))?;
        }
        let drops = emulator.stats();
        Ok(if got.complete {
            Outcome::Done {
                mib_s: got.mib_per_sec(),
                secs: got.elapsed.as_secs_f64(),
                setup_ms: None,
                drops,
            }
        } else {
            Outcome::Timeout {
                mib_s: got.bytes as f64 / MIB as f64 / cap.as_secs_f64(),
                cap: lab.timeout,
                drops,
            }
        })
    })?;
    emulator.stop();
    Ok(outcome)
}

/// The emulator's own TCP ceiling: zero delay, no loss, no rate limit.
fn ceiling(lab: &Lab, mib: u64) -> anyhow::Result<String> {
    let o = tcp_transfer(lab, LinkConfig::default(), "cubic", mib * MIB)?;
    Ok(match o {
        Outcome::Done { mib_s, secs, .. } => format!(
            "{mib_s:.1} MiB/s = {:.2} Gbit/s ({mib} MiB in {secs:.2} s, TCP CUBIC, zero delay, no loss, no rate limit)",
            mib_s * MIB as f64 * 8.0 / 1e9
        ),
        other => format!("{} ({mib} MiB)", other.cell()),
    })
}

/// Congestion controls to compare with: `wanted` (`none` = no TCP transfers), or cubic
/// plus bbr when offered (after trying to load tcp_bbr).
fn congestion_controls(wanted: &Option<Vec<String>>) -> (Vec<String>, Vec<String>) {
    let mut available = tcp::available_congestion_controls();
    if !available.iter().any(|c| c == "bbr") {
        let _ = std::process::Command::new("modprobe")
            .arg("tcp_bbr")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        available = tcp::available_congestion_controls();
    }
    (wanted_controls(wanted), available)
}

/// `--tcp`'s list, or cubic and bbr without it; `none` stands for no TCP transfer.
fn wanted_controls(wanted: &Option<Vec<String>>) -> Vec<String> {
    wanted
        .clone()
        .unwrap_or_else(|| vec!["cubic".into(), "bbr".into()])
        .into_iter()
        .filter(|cc| cc != "none")
        .collect()
}

struct Row {
    cell: Cell,
    size_mib: u64,
    peershare: Outcome,
    tcp: Vec<Outcome>,
}

pub async fn run(args: WanArgs) -> anyhow::Result<()> {
    if !netns::is_root() {
        bail!("the WAN benchmark needs root (network namespaces, TUN devices)");
    }
    let peershare = super::programs::peershare_binary(args.peershare.as_deref())?;
    let version = super::programs::version(&peershare);

    let (mut rtts, mut losses, mut rates) =
        (args.rtt.clone(), args.loss.clone(), args.rate.clone());
    let (mut timeout, mut ceiling_mib, mut size) = (args.timeout, args.ceiling_size, args.size);
    if args.smoke {
        (rtts, losses, rates) = (vec![10], vec![0.0], vec![100]);
        (timeout, ceiling_mib) = (20, 16);
        size = size.or(Some(2));
    }
    let (ccs, available) = congestion_controls(&args.tcp);

    netns::remove_stale("psw");
    let pid = std::process::id();
    let mut work = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    // With --keep the peers' logs stay there for a look afterwards.
    work.disable_cleanup(args.keep);
    let lab = Lab {
        a: Netns::create(&format!("psw-{pid}-a"))?,
        b: Netns::create(&format!("psw-{pid}-b"))?,
        peershare,
        work: work.path().to_path_buf(),
        seed: args.seed,
        timeout,
    };
    let rmem = lab.a.read_sysctl("net/ipv4/tcp_rmem").unwrap_or_default();
    let wmem = lab.a.read_sysctl("net/ipv4/tcp_wmem").unwrap_or_default();
    let machine = sys::Machine::probe(peershare::rtc::RtcSettings::default().socket_buffer_bytes);
    let date = sys::utc_now();
    let load_before = sys::load_average();

    let ceiling_line = if args.no_ceiling {
        None
    } else {
        phase("emulator TCP ceiling");
        Some(tokio::task::block_in_place(|| ceiling(&lab, ceiling_mib))?)
    };

    // One source file per size, BLAKE3 computed once.
    let mut files: Vec<(u64, PathBuf, String)> = Vec::new();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &rate_mbit in &rates {
        for &rtt_ms in &rtts {
            for &loss_pct in &losses {
                let cell = Cell {
                    rtt_ms,
                    loss_pct,
                    rate_mbit,
                };
                let size_mib =
                    size.unwrap_or_else(|| (cell.rate_bytes() * args.seconds).div_ceil(MIB).max(1));
                if !files.iter().any(|(s, _, _)| *s == size_mib) {
                    phase(&format!("writing and hashing a {size_mib} MiB test file"));
                    let path = lab.work.join(format!("wan-{size_mib}.bin"));
                    write_random_file(&path, size_mib * MIB)?;
                    let hash = super::product::hash(path.clone()).await?;
                    files.push((size_mib, path, hash));
                }
                let (_, file, hash) = files
                    .iter()
                    .find(|(s, _, _)| *s == size_mib)
                    .context("test file")?;
                let tag = format!("RTT {rtt_ms} ms, loss {loss_pct} %, {rate_mbit} Mbit/s");
                phase(&format!("{tag}: peershare, {size_mib} MiB"));
                let ps =
                    match peershare_transfer(&lab, cell.link(), file, size_mib * MIB, hash).await {
                        Ok(o) => o,
                        Err(e) => {
                            failures.push(format!("{tag}, peershare: {e:#}"));
                            Outcome::Failed
                        }
                    };
                eprintln!("[peershare-bench]   peershare: {}", ps.cell());
                let mut tcp_outcomes = Vec::new();
                for cc in &ccs {
                    if !available.contains(cc) {
                        tcp_outcomes.push(Outcome::NotAvailable);
                        continue;
                    }
                    phase(&format!("{tag}: TCP {cc}"));
                    let o = match tokio::task::block_in_place(|| {
                        tcp_transfer(&lab, cell.link(), cc, size_mib * MIB)
                    }) {
                        Ok(o) => o,
                        Err(e) => {
                            failures.push(format!("{tag}, TCP {cc}: {e:#}"));
                            Outcome::Failed
                        }
                    };
                    eprintln!("[peershare-bench]   TCP {cc}: {}", o.cell());
                    tcp_outcomes.push(o);
                }
                rows.push(Row {
                    cell,
                    size_mib,
                    peershare: ps,
                    tcp: tcp_outcomes,
                });
            }
        }
    }
    let load_after = sys::load_average();

    let mut out = String::new();
    let _ = writeln!(out, "\n## WAN paths (emulator), {date}\n");
    let _ = writeln!(out, "- peershare: {} ({version})", lab.peershare.display());
    let _ = writeln!(
        out,
        "- path: two network namespaces joined by peershare-wanem (TUN, MTU 1500, TCP offload, txqueuelen 10000, forwarding threads at nice -10); the same link both ways: delay RTT/2, random loss, rate with a drop-tail queue of one BDP (rate × RTT)"
    );
    if let Some(c) = &ceiling_line {
        let _ = writeln!(out, "- emulator ceiling: {c}");
    }
    let _ = writeln!(
        out,
        "- TCP: congestion controls offered {available:?}; tcp_rmem {rmem}; tcp_wmem {wmem}"
    );
    let _ = writeln!(
        out,
        "- per transfer: data phase capped at {timeout} s; peershare clock download-started → download-completed (BLAKE3 checked), TCP clock accept → last byte"
    );
    let _ = writeln!(
        out,
        "- load average: {load_before} at the start, {load_after} at the end"
    );
    for fact in machine.describe() {
        let _ = writeln!(out, "- {fact}");
    }
    let mut header = String::from(
        "\n| RTT ms | loss % | rate Mbit/s | queue KiB | MiB | peershare MiB/s | setup ms |",
    );
    let mut rule = String::from("|---|---|---|---|---|---|---|");
    for cc in &ccs {
        let _ = write!(header, " TCP {cc} MiB/s |");
        rule.push_str("---|");
    }
    for cc in &ccs {
        let _ = write!(header, " peershare / {cc} |");
        rule.push_str("---|");
    }
    header.push_str(" peershare / link | bound / link | drops lost / queue / dev: peershare |");
    rule.push_str("---|---|---|");
    for cc in &ccs {
        let _ = write!(header, " {cc} |");
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for r in &rows {
        let c = r.cell;
        let setup = match &r.peershare {
            Outcome::Done {
                setup_ms: Some(ms), ..
            } => format!("{ms:.0}"),
            _ => "–".into(),
        };
        let mut line = format!(
            "| {} | {} | {} | {} | {} | {} | {setup} |",
            c.rtt_ms,
            c.loss_pct,
            c.rate_mbit,
            c.queue_bytes() / 1024,
            r.size_mib,
            r.peershare.cell()
        );
        for o in &r.tcp {
            let _ = write!(line, " {} |", o.cell());
        }
        for o in &r.tcp {
            let _ = write!(line, " {} |", ratio(&r.peershare, o));
        }
        let link = Outcome::Done {
            mib_s: c.link_mib_s(),
            secs: 0.0,
            setup_ms: None,
            drops: Stats::default(),
        };
        let _ = write!(
            line,
            " {} | {:.2} | {} |",
            ratio(&r.peershare, &link),
            c.startup_bound(r.size_mib * MIB),
            r.peershare.drops()
        );
        for o in &r.tcp {
            let _ = write!(line, " {} |", o.drops());
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\nMiB/s of the data phase; `timeout ≥ N s (x)`: stopped after N s of data, x = its average MiB/s; `~` ratios involve such an average. Link rate: 100 Mbit/s = 11.92 MiB/s, 1 Gbit/s = 119.2 MiB/s. Bound: the most any sender could reach on the loss-free path that starts with peershare's window (11,880 bytes), doubles it every round trip and carries 1,372 bytes of file data per 1,465-byte packet; a short transfer on a long path spends a large share of its time finding the rate. Drops: packets dropped in both directions during that transfer: lost (random loss) / queue (drop-tail overflow) / dev (the TUN devices' own drops, the emulator not reading in time: not part of the path, should be 0)."
    );
    for f in &failures {
        let _ = writeln!(out, "- FAILED {f}");
    }
    print!("{out}");
    if !failures.is_empty() {
        bail!("{} transfer(s) failed", failures.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_controls_none_or_list_or_default() {
        let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(wanted_controls(&None), ["cubic", "bbr"]);
        assert_eq!(wanted_controls(&list(&["none"])), Vec::<String>::new());
        assert_eq!(
            wanted_controls(&list(&["reno", "cubic"])),
            ["reno", "cubic"]
        );
    }

    #[test]
    fn startup_bound_zero_round_trip_is_header_share() {
        let bound = startup_bound(12.5e6, Duration::ZERO, 48 * MIB);
        assert!((bound - FILE_SHARE_OF_WIRE).abs() < 1e-9, "{bound}");
    }

    #[test]
    fn startup_bound_two_doublings_then_full_rate_counts_both_rounds() {
        // The path holds four first windows: two rounds (1 + 2 windows) before it is
        // full, then three seconds at the full rate.
        let rate_files = 4.0 * START_WINDOW_BYTES;
        let rate = rate_files / FILE_SHARE_OF_WIRE;
        let size = 3.0 * START_WINDOW_BYTES + 3.0 * rate_files;
        let bound = startup_bound(rate, Duration::from_secs(1), size as u64);
        let expected = size / 5.0 / rate;
        assert!((bound - expected).abs() < 1e-9, "{bound} vs {expected}");
        assert!((bound - 0.75 * FILE_SHARE_OF_WIRE).abs() < 1e-9);
    }

    #[test]
    fn startup_bound_wan_cells_longer_path_or_shorter_transfer_lower() {
        let cell = |rtt_ms| Cell {
            rtt_ms,
            loss_pct: 0.0,
            rate_mbit: 100,
        };
        let four_s: Vec<f64> = [10, 40, 100, 200]
            .map(|rtt| cell(rtt).startup_bound(48 * MIB))
            .to_vec();
        assert!(four_s.windows(2).all(|w| w[0] > w[1]), "{four_s:?}");
        assert!(four_s[2] < 0.85 && four_s[3] < 0.75, "{four_s:?}");
        assert!(cell(200).startup_bound(144 * MIB) > four_s[3]);
    }
}
