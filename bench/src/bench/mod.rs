//! The benchmark run: machine facts, then (g) TCP, (a) raw data channel, (b)+(d) one
//! peershare transfer, (e) join → first byte, (f) fan-out; then one markdown table.

pub mod breakdown;
pub mod browser;
pub mod child;
pub mod files;
pub mod limit;
pub mod product;
pub mod programs;
pub mod raw;
pub mod refs;
pub mod signaling;
pub mod sys;
pub mod tcp;
pub mod wan;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use peershare::rtc::RtcSettings;
use peershare::signaling::{ServerConfig, SignalingServer};
use rand::{RngCore, SeedableRng};

const MIB: u64 = 1024 * 1024;

/// Transport overrides, applied to the raw pair and to every peer process alike.
#[derive(Debug, Clone, Default, Args)]
pub struct Tune {
    /// Kernel buffer size for every UDP socket, bytes (default: the product's).
    #[arg(long)]
    pub socket_buffer: Option<usize>,
    /// Data-channel send-buffer limit, bytes (default: the product's).
    #[arg(long)]
    pub send_buffer: Option<usize>,
    /// SCTP receive window, bytes (default: the product's).
    #[arg(long)]
    pub sctp_window: Option<u32>,
    /// Cap on the SCTP receive window and the send-buffer limit of loopback-only
    /// connections, bytes; 0 = no cap (default: the product's, 1 MiB).
    #[arg(long)]
    pub loopback_window: Option<u32>,
    /// SCTP packet size budget, bytes (default: the product's: 8192 on loopback).
    #[arg(long)]
    pub sctp_mtu: Option<u32>,
    /// ICE check interval while connecting, ms; 0 = the stack's default (200 ms).
    #[arg(long)]
    pub ice_check_ms: Option<u64>,
    /// Cap on the driver's sleeps during connection setup, ms; 0 = no cap.
    #[arg(long)]
    pub setup_poll_ms: Option<u64>,
    /// Hide UDP GSO from the stack: one datagram per send syscall (and, on loopback,
    /// nothing for GRO to coalesce on receive).
    #[arg(long)]
    pub no_udp_offload: bool,
    /// Tokio worker threads of every peer process (default: the product's, one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: Option<u64>,
    /// `--limit-rate` of every peer process, bytes per second (default: none).
    #[arg(long)]
    pub limit_rate: Option<u64>,
}

impl Tune {
    /// The product's settings with these overrides, bound to 127.0.0.1.
    pub fn settings(&self) -> RtcSettings {
        let mut s = RtcSettings {
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..RtcSettings::default()
        };
        if let Some(v) = self.socket_buffer {
            s.socket_buffer_bytes = v;
        }
        if let Some(v) = self.send_buffer {
            s.send_buffer_limit = v;
        }
        if let Some(v) = self.sctp_window {
            s.sctp_receive_window = v;
        }
        if let Some(v) = self.loopback_window {
            s.loopback_window = (v > 0).then_some(v);
        }
        if let Some(v) = self.sctp_mtu {
            s.sctp_mtu = Some(v);
        }
        if let Some(ms) = self.ice_check_ms {
            s.ice_check_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(ms) = self.setup_poll_ms {
            s.setup_poll_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        s.udp_offload = !self.no_udp_offload;
        s
    }

    /// The same overrides as command-line arguments for a peer process.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(x) = self.socket_buffer {
            v.extend(["--socket-buffer".to_string(), x.to_string()]);
        }
        if let Some(x) = self.send_buffer {
            v.extend(["--send-buffer".to_string(), x.to_string()]);
        }
        if let Some(x) = self.sctp_window {
            v.extend(["--sctp-window".to_string(), x.to_string()]);
        }
        if let Some(x) = self.loopback_window {
            v.extend(["--loopback-window".to_string(), x.to_string()]);
        }
        if let Some(x) = self.sctp_mtu {
            v.extend(["--sctp-mtu".to_string(), x.to_string()]);
        }
        if let Some(x) = self.ice_check_ms {
            v.extend(["--ice-check-ms".to_string(), x.to_string()]);
        }
        if let Some(x) = self.setup_poll_ms {
            v.extend(["--setup-poll-ms".to_string(), x.to_string()]);
        }
        if self.no_udp_offload {
            v.push("--no-udp-offload".to_string());
        }
        if let Some(x) = self.workers {
            v.extend(["--workers".to_string(), x.to_string()]);
        }
        if let Some(x) = self.limit_rate {
            v.extend(["--limit-rate".to_string(), x.to_string()]);
        }
        v
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// MiB moved by (a), (b), (f) per recipient and (g).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub size: u64,
    /// Recipients of the fan-out measurement (f).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=31))]
    pub recipients: u64,
    /// Fresh pairs measured for join → first byte (e); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub latency_runs: u64,
    /// Directory for the test files (default: a fresh directory under $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure where the gap between (a) and (b) goes, layer by layer.
    #[arg(long)]
    pub breakdown: bool,
    /// Also measure the raw channel with several channels on one association and with
    /// several associations, all in this process like (a').
    #[arg(long)]
    pub parallel: bool,
    /// Rounds of (a), (b) and (f), each round running the three back to back; the median
    /// run of (a) and (b) and the median of the per-round ratios (c) and (f) are reported
    /// (every run is listed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub repeat: u64,
    /// Also move a file of this many MiB (e.g. 4096) from one sender to one recipient
    /// and report both peers' peak RSS as row (d+): the memory target is set for 4 GiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rss_size: Option<u64>,
    /// Measure only how closely `--limit-rate` holds the asked rate (the limiter alone
    /// and capped transfers next to an uncapped one), ~1 min.
    #[arg(long)]
    pub rate_limits: bool,
    /// Measure only peershare next to the reference tools (sendme, magic-wormhole) in
    /// DIR, default $PEERSHARE_REFS or ~/.cache/peershare-refs (installed by
    /// tools/install_refs.sh): CLI to CLI, disk to disk, interleaved rounds; a tool not
    /// found there is skipped.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub refs: Option<Option<PathBuf>>,
    /// Rounds of `--refs` (round-robin over the tools).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub refs_rounds: u64,
    /// File sizes of `--refs`, MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [256u64, 1024])]
    pub refs_sizes: Vec<u64>,
    /// With `--refs`: also compare over a 1500-byte-MTU veth pair between two network
    /// namespaces (192.0.2.1/24 and 192.0.2.2/24; needs root), the LAN case.
    #[arg(long)]
    pub lan: bool,
    #[command(flatten)]
    pub tune: Tune,
}

fn write_random_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // On disk before anything is measured: gigabytes of dirty pages left behind would
    // make the kernel throttle the recipient's writes (balance_dirty_pages) and skew (b).
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn drops_since(before: Option<u64>) -> String {
    let mut drops = Drops::default();
    drops.add(before);
    drops.to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// The `p`-th percentile of `v` (nearest rank: the smallest value with at least `p` % of
/// the values at or below it); NaN when empty.
fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Index of the median of `values` (the upper one for an even count); 0 when empty.
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get(order.len() / 2).copied().unwrap_or(0)
}

/// UDP receive-buffer drops summed over several measured runs.
#[derive(Default)]
struct Drops(Option<u64>);

impl Drops {
    /// Add the drops since `before` (a reading taken just before the run).
    fn add(&mut self, before: Option<u64>) {
        let delta = match (before, sys::udp_rcvbuf_errors()) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        self.0 = match (self.0, delta) {
            (Some(sum), Some(d)) => Some(sum + d),
            (None, d) => d,
            (Some(_), None) => None,
        };
    }
}

impl std::fmt::Display for Drops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("?"),
        }
    }
}

/// `v` as a comma-separated list, each with `decimals` decimals.
fn list(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |m| format!("{m:.1} MiB"))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// (associations, channels per association) measured by `--parallel`.
const PARALLEL_LAYOUTS: [(usize, usize); 6] = [(1, 1), (1, 2), (1, 4), (2, 1), (4, 1), (2, 2)];

fn phase(name: &str) {
    eprintln!("[peershare-bench] {name} …");
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let settings = args.tune.settings();
    let bytes = args.size * MIB;
    let machine = sys::Machine::probe(settings.socket_buffer_bytes);
    let load_before = sys::load_average();
    let work = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let tmp = work.path().to_path_buf();

    if args.rate_limits {
        let server = SignalingServer::bind(ServerConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            ..ServerConfig::default()
        })
        .await
        .context("binding the signaling server")?;
        let rows = limit::run(&server.url(), &tmp, &args.tune).await?;
        println!("\n| what | asked MiB/s | got MiB/s | got / asked |\n|---|---|---|---|");
        for row in rows {
            println!("{row}");
        }
        for fact in machine.describe() {
            println!("- {fact}");
        }
        return Ok(());
    }

    if let Some(dir) = args.refs.clone() {
        let dir = dir.unwrap_or_else(refs::default_dir);
        let (sizes, rounds, lan) = (args.refs_sizes.clone(), args.refs_rounds, args.lan);
        let report = tokio::task::spawn_blocking(move || {
            let report = refs::run(&dir, &sizes, rounds, lan, &tmp);
            drop(work);
            report
        })
        .await??;
        print!("{report}");
        for fact in machine.describe() {
            println!("- {fact}");
        }
        println!(
            "- 1-min load average: {load_before} at the start, {} at the end",
            sys::load_average()
        );
        std::io::stdout().flush()?;
        return Ok(());
    }

    phase("(g) TCP loopback");
    let tcp = tcp::run(bytes)?;

    phase("(a') raw data channel, both ends in this process");
    let before = sys::udp_rcvbuf_errors();
    let raw = raw::run(&settings, bytes).await?;
    let raw1_drops = drops_since(before);

    let mut parallel = Vec::new();
    if args.parallel {
        for (associations, channels) in PARALLEL_LAYOUTS {
            phase(&format!(
                "parallel: {associations} association(s) × {channels} channel(s)"
            ));
            let before = sys::udp_rcvbuf_errors();
            let r = raw::run_parallel(&settings, bytes, associations, channels).await?;
            parallel.push((associations, channels, r.mib_per_s, drops_since(before)));
        }
    }

    phase("writing and hashing the test file");
    let src = tmp.join("source.bin");
    write_random_file(&src, bytes)?;
    let src_hash = product::hash(src.clone()).await?;
    let small = tmp.join("small.bin");
    write_random_file(&small, 4 * MIB)?;

    let mut layers = Vec::new();
    if args.breakdown {
        phase("breakdown: channel adapter");
        layers.push((
            "(a') + the product's channel adapter (RtcChannel on both ends), no file I/O",
            breakdown::adapter(&settings, bytes).await?,
        ));
        phase("breakdown: transfer engine on tmpfs");
        let shm = Path::new("/dev/shm");
        let ram = if shm.is_dir() {
            tempfile::tempdir_in(shm)?
        } else {
            tempfile::tempdir()?
        };
        let ram_src = ram.path().join("source.bin");
        std::fs::copy(&src, &ram_src)?;
        layers.push((
            "+ transfer engine file → file in RAM (tmpfs): read-ahead, BLAKE3, write-behind",
            breakdown::engine(&settings, &ram_src, ram.path()).await?,
        ));
        drop(ram);
        phase("breakdown: transfer engine on disk");
        layers.push((
            "+ the same with source and destination on disk (fsync at the end)",
            breakdown::engine(&settings, &src, &tmp).await?,
        ));
    }

    let server = SignalingServer::bind(ServerConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        ..ServerConfig::default()
    })
    .await
    .context("binding the signaling server")?;
    let url = server.url();

    // (a), (b) and (f) run in rounds, one of each per round, so that the ratios b/a and
    // (f)/(b) compare runs made seconds apart. On a shared machine, load changes between
    // phases a minute apart would otherwise move the ratios more than any tuning does.
    let r = args.recipients as usize;
    let mut raws = Vec::new();
    let mut ones = Vec::new();
    let mut fans = Vec::new();
    let mut raw_drops = Drops::default();
    let mut one_drops = Drops::default();
    for round in 1..=args.repeat {
        phase(&format!(
            "round {round}/{}: (a) raw data channel, one process per end",
            args.repeat
        ));
        let before = sys::udp_rcvbuf_errors();
        raws.push(raw::run_two_process(&args.tune, bytes).await?);
        raw_drops.add(before);
        phase(&format!(
            "round {round}/{}: (b)+(d) peershare transfer, one recipient",
            args.repeat
        ));
        let before = sys::udp_rcvbuf_errors();
        ones.push(product::fan_out(&url, &src, &src_hash, 1, &tmp, &args.tune).await?);
        one_drops.add(before);
        phase(&format!(
            "round {round}/{}: (f) one sender → {r} recipients",
            args.repeat
        ));
        fans.push(product::fan_out(&url, &src, &src_hash, r, &tmp, &args.tune).await?);
    }
    let raw_all: Vec<f64> = raws.iter().map(|x| x.mib_per_s).collect();
    let b_all: Vec<f64> = ones
        .iter()
        .map(|x| args.size as f64 / x.deliveries[0].secs)
        .collect();
    let ratios: Vec<f64> = b_all.iter().zip(&raw_all).map(|(b, a)| b / a).collect();
    let fan_ratios: Vec<f64> = fans
        .iter()
        .zip(&ones)
        .map(|(f, o)| f.wall_secs / o.wall_secs)
        .collect();
    // Peak RSS over all runs; throughput of the median run.
    let sender_peak = ones
        .iter()
        .filter_map(|r| r.sender_rss_mib)
        .reduce(f64::max);
    let recipient_peak = ones
        .iter()
        .filter_map(|r| r.recipient_rss_mib[0])
        .reduce(f64::max);
    let fan_sender_peak = fans
        .iter()
        .filter_map(|f| f.sender_rss_mib)
        .reduce(f64::max);
    let max_recipient_rss = fans
        .iter()
        .flat_map(|f| f.recipient_rss_mib.iter().flatten().copied())
        .reduce(f64::max);
    let raw2 = &raws[median_index(&raw_all)];
    let one = &ones[median_index(&b_all)];
    let b_secs = one.deliveries[0].secs;
    let b = args.size as f64 / b_secs;
    let ratio = median(ratios.clone());
    let fan_round = median_index(&fan_ratios);
    let fan_ratio = fan_ratios[fan_round];
    let (fan, fan_one) = (&fans[fan_round], &ones[fan_round]);

    let big = match args.rss_size {
        Some(mib_big) => {
            phase(&format!("(d+) peak RSS with a {mib_big} MiB file"));
            let big_src = tmp.join("big.bin");
            write_random_file(&big_src, mib_big * MIB)?;
            let big_hash = product::hash(big_src.clone()).await?;
            let run = product::fan_out(&url, &big_src, &big_hash, 1, &tmp, &args.tune).await?;
            std::fs::remove_file(&big_src)?;
            Some((mib_big, run))
        }
        None => None,
    };

    phase("(e) join → first byte, fresh pairs");
    let mut lat = Vec::new();
    for run in 1..=args.latency_runs {
        let l = product::first_byte(&url, &small, &tmp, &args.tune).await?;
        eprintln!(
            "[peershare-bench] (e) run {run}: connected {:.0} ms, offer {:.0} ms, first byte {:.0} ms",
            l.connected_ms, l.available_ms, l.started_ms
        );
        lat.push(l);
    }
    server.shutdown().await;

    let started_all: Vec<f64> = lat.iter().map(|l| l.started_ms).collect();
    let started = median(started_all.clone());
    let started_p95 = percentile(started_all.clone(), 95.0);
    let started_max = started_all.iter().copied().fold(f64::NAN, f64::max);
    let first_progress = median(lat.iter().map(|l| l.first_progress_ms).collect());
    let connected = median(lat.iter().map(|l| l.connected_ms).collect());
    let available = median(lat.iter().map(|l| l.available_ms).collect());
    let s = &raw.setup;

    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "## peershare-bench: {} MiB, {} recipients",
        args.size, args.recipients
    ));
    line(String::new());
    for fact in machine.describe() {
        line(format!("- {fact}"));
    }
    line(format!(
        "- 1-min load average: {load_before} at the start, {} at the end (other work skews the figures)",
        sys::load_average()
    ));
    line(format!(
        "- transport: socket buffer {} B, SCTP MTU {}, send-buffer limit {} B ({}), SCTP receive window {} B ({} on loopback-only connections), {} KiB messages in (a), {} KiB chunks in (b), {}, ICE check interval {}, setup poll {} for the first {} s, UDP GSO {}, bound to 127.0.0.1",
        settings.socket_buffer_bytes,
        settings.sctp_mtu.map_or_else(
            || format!(
                "auto ({} B with {} B socket buffers: loopback, no relay)",
                peershare::rtc::LOOPBACK_SCTP_MTU,
                peershare::rtc::LOOPBACK_SOCKET_BUFFER_BYTES
            ),
            |m| format!("{m} B")
        ),
        settings.send_buffer_limit,
        settings.send_buffer_window_min.map_or_else(
            || "fixed".into(),
            |m| format!("following the SCTP window, at least {m} B")
        ),
        settings.sctp_receive_window,
        settings
            .loopback_window
            .map_or_else(|| "no cap".into(), |w| format!("both at most {w} B")),
        raw::MESSAGE / 1024,
        peershare::transfer::CHUNK_SIZE / 1024,
        args.tune.workers.map_or_else(
            || format!(
                "{} tokio worker threads per process (one per core)",
                machine.cores
            ),
            |w| format!("{w} tokio worker threads per process"),
        ),
        settings.ice_check_interval.map_or_else(
            || "default (200 ms)".into(),
            |d| format!("{} ms", d.as_millis())
        ),
        settings
            .setup_poll_interval
            .map_or_else(|| "off".into(), |d| format!("{} ms", d.as_millis())),
        peershare::rtc::runtime::SETUP_WINDOW.as_secs(),
        if settings.udp_offload { "on" } else { "off" },
    ));
    line(String::new());
    line("| row | measure | result | detail |".into());
    line("|---|---|---|---|".into());
    line(format!(
        "| (a) | raw data channel: build_peer_connection in each of two processes (the layout of (b)), 1 ordered reliable channel, 64 KiB messages, no file I/O | {:.1} MiB/s | median of {} runs ({}); {} MiB in {:.2} s, sender's first message → receiver's last byte; UDP rcvbuf drops {raw_drops} (all runs); peak RSS sender {}, receiver {} |",
        raw2.mib_per_s,
        raw_all.len(),
        list(&raw_all, 0),
        args.size,
        raw2.secs,
        mib(raw2.sender_rss_mib),
        mib(raw2.receiver_rss_mib),
    ));
    line(format!(
        "| (a') | the same pair with both ends in one process (one runtime) | {:.1} MiB/s | {} MiB in {:.2} s; UDP rcvbuf drops {raw1_drops}; b/a' {:.2}; setup {:.0} ms (built {:.0}, SDP {:.0}, connected {:.0}, channel open {:.0}) |",
        raw.mib_per_s,
        args.size,
        raw.secs,
        b / raw.mib_per_s,
        s.open_ms,
        s.built_ms,
        s.sdp_ms,
        s.connected_ms,
        s.open_ms
    ));
    line(format!(
        "| (b) | peershare file → file via signaling, BLAKE3 verified | {b:.1} MiB/s | median of {} runs ({}); {} MiB, download request → DownloadCompleted {b_secs:.2} s; UDP rcvbuf drops {one_drops} (all runs) |",
        b_all.len(),
        list(&b_all, 0),
        args.size
    ));
    line(format!(
        "| (c) | ratio b/a | {ratio:.2} | median of the rounds' ratios ({}); each round runs (a), (b) and (f) back to back |",
        list(&ratios, 2)
    ));
    line(format!(
        "| (d) | peak RSS, sending peer | {} | VmHWM of the sender process, {} MiB file, highest of the (b) runs |",
        mib(sender_peak),
        args.size
    ));
    line(format!(
        "| (d) | peak RSS, receiving peer | {} | VmHWM of the recipient process, highest of the (b) runs |",
        mib(recipient_peak)
    ));
    if let Some((mib_big, run)) = &big {
        line(format!(
            "| (d+) | peak RSS with a {mib_big} MiB file, sender / recipient | {} / {} | one recipient, {:.1} MiB/s |",
            mib(run.sender_rss_mib),
            mib(run.recipient_rss_mib[0]),
            *mib_big as f64 / run.deliveries[0].secs
        ));
    }
    line(format!(
        "| (e) | join → first byte, fresh pair | {started:.0} ms | median of {} runs to DownloadStarted (job channel open), p95 {started_p95:.0} ms, max {started_max:.0} ms; connected {connected:.0} ms, offer {available:.0} ms, first progress (1 MiB) {first_progress:.0} ms (medians); every run: {} |",
        lat.len(),
        list(&started_all, 0)
    ));
    line(format!(
        "| (f) | 1 → {r} recipients, wall / one recipient | {fan_ratio:.2}× | median of the rounds' ratios ({}), each against the round's (b) run; median round: {r} × {} MiB in {:.2} s ({:.1} MiB/s total) vs one in {:.2} s; peak RSS sender {}, recipients ≤ {} (all rounds) |",
        list(&fan_ratios, 2),
        args.size,
        fan.wall_secs,
        (r as f64 * args.size as f64) / fan.wall_secs,
        fan_one.wall_secs,
        mib(fan_sender_peak),
        mib(max_recipient_rss)
    ));
    line(format!(
        "| (g) | plain TCP loopback (64 KiB writes) | {tcp:.0} MiB/s | physical reference |"
    ));
    if !layers.is_empty() {
        line(String::new());
        line("Where (a') → (b) goes, one layer at a time (same size, both ends in this process like (a')):".into());
        line(String::new());
        line("| layer | MiB/s | of (a') |".into());
        line("|---|---|---|".into());
        line(format!(
            "| (a') raw data channel, one process | {:.1} | 1.00 |",
            raw.mib_per_s
        ));
        for (label, v) in &layers {
            line(format!("| {label} | {v:.1} | {:.2} |", v / raw.mib_per_s));
        }
        line(format!(
            "| (a) raw data channel, one process per end | {:.1} | {:.2} |",
            raw2.mib_per_s,
            raw2.mib_per_s / raw.mib_per_s
        ));
        line(format!(
            "| (b) + signaling, control protocol, one process per peer | {b:.1} | {:.2} |",
            b / raw.mib_per_s
        ));
    }
    if !parallel.is_empty() {
        line(String::new());
        line(format!(
            "Several channels or associations in parallel, raw, {} MiB in total split evenly, 64 KiB messages, both ends in this process like (a'), run one after the other:",
            args.size
        ));
        line(String::new());
        line("| associations | channels each | MiB/s | of (a') | UDP rcvbuf drops |".into());
        line("|---|---|---|---|---|".into());
        for (associations, channels, v, drops) in &parallel {
            line(format!(
                "| {associations} | {channels} | {v:.1} | {:.2} | {drops} |",
                v / raw.mib_per_s
            ));
        }
    }
    line(String::new());
    line("Targets (as measured in this run):".into());
    line(String::new());
    line(format!(
        "- b/a ≥ 0.9 (for 1 GiB): {ratio:.2} at {} MiB: {}",
        args.size,
        verdict(ratio >= 0.9)
    ));
    let (rss_run, rss_mib) = match &big {
        Some((mib_big, run)) => (run, *mib_big),
        None => (one, args.size),
    };
    let rss_max = match &big {
        Some(_) => rss_run
            .sender_rss_mib
            .into_iter()
            .chain(rss_run.recipient_rss_mib.iter().copied().flatten())
            .fold(0.0f64, f64::max),
        None => sender_peak
            .into_iter()
            .chain(recipient_peak)
            .fold(0.0f64, f64::max),
    };
    line(format!(
        "- peak RSS ≤ 64 MiB per peer (for 4 GiB): {rss_max:.1} MiB at {rss_mib} MiB: {}",
        verdict(rss_max > 0.0 && rss_max <= 64.0)
    ));
    line(format!(
        "- join → first byte ≤ 300 ms: {started:.0} ms: {}",
        verdict(started <= 300.0)
    ));
    line(format!(
        "- join → first byte p95 ≤ 100 ms (over 30 fresh pairs): {started_p95:.0} ms over {}: {}",
        lat.len(),
        if lat.len() >= 30 {
            verdict(started_p95 <= 100.0)
        } else {
            "n/a (run with --latency-runs 30)"
        }
    ));
    line(format!(
        "- 1 → 4 recipients ≤ 4.5× one: {fan_ratio:.2}× with {r}: {}",
        if r == 4 {
            verdict(fan_ratio <= 4.5)
        } else {
            "n/a (run with --recipients 4)"
        }
    ));
    print!("{out}");
    std::io::stdout().flush()?;
    drop(work);
    Ok(())
}
