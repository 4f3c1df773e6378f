//! `peershare-bench signaling`: a load benchmark of one signaling server
//! (docs/PERFORMANCE.md, "Signaling server").
//!
//! The server is the real `peershare-signaling` binary (next to this one unless
//! `--server-bin`), started under `taskset -c SERVER_CORE`: its own process, measured from
//! `/proc/PID/stat` (CPU) and `/proc/PID/status` (RSS). The load generator is this
//! process, pinned to `GENERATOR_CORE` with `sched_setaffinity`, on one thread (a
//! current-thread tokio runtime); its CPU time (`getrusage`) is reported next to the
//! server's, so that a generator at 100 % shows the figure is the generator's, not the
//! server's. Everything is on 127.0.0.1.
//!
//! Phases:
//! 1. connect: `--peers` WebSocket connections (`--connect-concurrency` at once);
//! 2. join burst: every first member of a pair joins (a new session), then every second
//!    member joins its partner's session, all at once: joins/s over both;
//! 3. idle: the server's RSS with every peer joined and idle, minus its RSS before the
//!    first connection, divided by the peers;
//! 4. active: each pair runs a connection setup every `--interval` seconds (first setups
//!    spread over one interval): an offer (about 3 KB of SDP), the answer (the same size)
//!    and 10 ICE candidates (about 200 bytes) each way, 22 `signal`s per setup; relay
//!    latency is the time from the generator writing a frame (the send time rides in
//!    `data.t`) to the generator reading it from the recipient's socket;
//! 5. saturation: `--saturate-pairs` pairs bounce `--saturate-window` frames each as fast
//!    as the server relays them (one in 11 SDP-sized, the rest candidate-sized, as in a
//!    setup): relayed frames/s.
//!
//! The connections come from 64 loopback source addresses (127.0.0.2 …). The server is
//! started with caps above the load (`--max-connections`, `--max-connections-per-ip`), `--max-peers 2` and long idle and join timeouts; its
//! default rate limit (200 frames/s per connection) stays in force: no phase comes near
//! it per connection.

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

/// Options of `peershare-bench signaling`.
#[derive(Debug, Clone, Args)]
pub struct SignalingArgs {
    /// Joined peers, in sessions of 2.
    #[arg(long, default_value_t = 5_000)]
    pub peers: usize,
    /// Seconds between two connection setups of one pair in the active phase.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds of the active phase.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Pairs that bounce frames in the saturation phase (0: no saturation phase).
    #[arg(long, default_value_t = 2_000)]
    pub saturate_pairs: usize,
    /// Frames in flight per pair in the saturation phase.
    #[arg(long, default_value_t = 16)]
    pub saturate_window: usize,
    /// Seconds of the saturation phase.
    #[arg(long, default_value_t = 10)]
    pub saturate_secs: u64,
    /// The server binary [default: peershare-signaling next to this binary].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// One more argument for the server, e.g. `--server-arg=--backlog=4096`; repeatable.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The core the server runs on (taskset).
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// The core the generator runs on.
    #[arg(long, default_value_t = 1)]
    pub generator_core: usize,
    /// Connections being opened at once in the connect phase.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
}

/// A running server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU seconds (user + system) of process `pid`, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), which ends with ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 here.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

/// Resident set size of process `pid`, in KiB.
fn process_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// Seconds the threads of process `pid` (`self` for this one) spent runnable but waiting
/// for a CPU, from `/proc/PID/task/*/schedstat`: other work on the machine taking the
/// core shows here.
fn run_queue_wait(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// CPU seconds (user + system) of this process.
fn own_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Pin the calling thread (and the threads it starts later) to `core`.
fn pin_to(core: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it; sched_setaffinity
    // reads it for the duration of the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

fn start_server(args: &SignalingArgs, connections: usize) -> anyhow::Result<Server> {
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the bench binary")?
            .join("peershare-signaling"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p peershare-signaling) or pass --server-bin",
            bin.display()
        );
    }
    let cap = connections.to_string();
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(args.server_core.to_string())
        .arg(&bin)
        .args(["--listen", "127.0.0.1:0", "--no-turn", "--max-peers", "2"])
        .args(["--max-connections", &cap, "--max-connections-per-ip", &cap])
        .args(["--idle-timeout-secs", "3600", "--join-timeout-secs", "3600"])
        .args(&args.server_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting the server under taskset")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server's URL")?;
    let url = line.trim().to_string();
    if !url.starts_with("ws://") {
        let _ = child.kill();
        bail!("the server printed no URL: {url:?}");
    }
    Ok(Server { child, url })
}

/// The server's relay latency histogram from its `/metrics`: (upper bound in seconds,
/// cumulative count) per bucket.
async fn server_histogram(url: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://");
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let prefix = "peershare_signaling_relay_latency_seconds_bucket{le=\"";
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect())
}

/// The upper bound (ms) of the bucket holding the `p` quantile of what the server
/// measured between two scrapes.
fn server_quantile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, n)| *n);
    deltas
        .iter()
        .find(|(_, n)| *n >= total * p)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// Latencies in microseconds; summarized at the end.
#[derive(Default)]
struct Samples {
    /// Frames sent after `warmup_until`.
    micros: Vec<u32>,
    /// Frames sent before `warmup_until` (µs since the origin): the first round touches
    /// every connection's buffers for the first time.
    warmup: Vec<u32>,
    warmup_until: u64,
    errors: u64,
    /// Error frames by code.
    codes: std::collections::BTreeMap<u16, u64>,
    /// Connections the server closed.
    lost: u64,
    received: u64,
}

impl Samples {
    fn percentile(sorted: &[u32], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
    }

    fn new(warmup_until: u64) -> Self {
        Samples {
            warmup_until,
            ..Samples::default()
        }
    }

    /// p99 and max of the warm-up frames, in milliseconds.
    fn warmup_summary(&mut self) -> (f64, f64) {
        self.warmup.sort_unstable();
        let max = self
            .warmup
            .last()
            .map_or(f64::NAN, |m| f64::from(*m) / 1000.0);
        (Self::percentile(&self.warmup, 0.99), max)
    }

    /// (p50, p99, max) in milliseconds, after the warm-up.
    fn summary(&mut self) -> (f64, f64, f64) {
        self.micros.sort_unstable();
        let max = self
            .micros
            .last()
            .map_or(f64::NAN, |m| f64::from(*m) / 1000.0);
        (
            Self::percentile(&self.micros, 0.5),
            Self::percentile(&self.micros, 0.99),
            max,
        )
    }
}

/// About 3 KB of SDP as it travels in JSON (`\r\n` escaped).
fn sdp() -> String {
    let mut s = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0\\r\\na=msid-semantic: WMS\\r\\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\n\
         a=ice-ufrag:abcd\\r\\na=ice-pwd:aaaabbbbccccddddeeeeffff\\r\\na=ice-options:trickle\\r\\n",
    );
    while s.len() < 2_900 {
        s.push_str(
            "a=fingerprint:sha-256 4F:1D:2A:0B:6E:33:91:C4:AA:57:12:9E:3B:7D:44:0C:E1:F0:88:21:\
             6A:BC:D3:05:17:9F:62:48:C0:3E:75:DA\\r\\n",
        );
    }
    s.push_str("a=setup:actpass\\r\\na=mid:0\\r\\na=sctp-port:5000\\r\\n");
    s
}

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 203.0.113.7 53122 typ srflx \
raddr 192.168.1.20 rport 53122 generation 0 ufrag abcd network-cost 999";

/// What a pair member sends: the frame text for `to`, stamped `t` (µs since the start).
fn frame(to: &str, kind: Kind, t: u64, sdp: &str) -> String {
    match kind {
        Kind::Offer | Kind::Answer => {
            let k = if kind == Kind::Offer {
                "offer"
            } else {
                "answer"
            };
            format!(
                r#"{{"type":"signal","to":"{to}","data":{{"kind":"{k}","t":{t},"sdp":"{sdp}"}}}}"#
            )
        }
        Kind::Candidate => format!(
            r#"{{"type":"signal","to":"{to}","data":{{"kind":"candidate","t":{t},"candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}}}}}"#
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Answer,
    Candidate,
}

/// The stamp and kind of a relayed `signal` frame; `None` for any other frame.
fn parse_signal(text: &str) -> Option<(u64, Kind)> {
    if !text.starts_with(r#"{"type":"signal""#) {
        return None;
    }
    let at = text.find(r#""t":"#)? + 4;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    let t = text[at..at + digits].parse().ok()?;
    let kind = if text.contains(r#""kind":"offer""#) {
        Kind::Offer
    } else if text.contains(r#""kind":"answer""#) {
        Kind::Answer
    } else {
        Kind::Candidate
    };
    Some((t, kind))
}

/// A joined client: its socket and ID, and its partner's ID.
struct Member {
    ws: Ws,
    id: String,
    partner: String,
    /// The server closed the connection (it is left out of the saturation phase).
    lost: bool,
}

/// Source addresses the connections are spread over (127.0.0.2 …): with all of them on
/// one address, the kernel's search for a free ephemeral port (`__inet_hash_connect`)
/// grows with every connection and took most of the generator's time at 19,000.
const SOURCE_ADDRESSES: u32 = 64;

/// Connect from loopback source address number `i % SOURCE_ADDRESSES`, its port chosen
/// at `connect` (`IP_BIND_ADDRESS_NO_PORT`).
async fn connect(url: &str, i: usize) -> anyhow::Result<Ws> {
    use std::os::fd::AsRawFd;
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` (a c_int, its size given) during the call; the fd is
    // the socket's own.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let source = std::net::Ipv4Addr::from(0x7f00_0002 + (i as u32 % SOURCE_ADDRESSES));
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    // Small read buffers, as the server's: tungstenite's default is 128 KiB per connection.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    Ok(ws)
}

/// Send a join, return the welcome's session and client ID.
/// The string value of `"key":"…"` in `text` (no escapes: session codes and client IDs
/// have none).
fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = text[at..].find('"')?;
    Some(&text[at..at + len])
}

/// Send a join, return the welcome's session and client ID. (Substring look-ups rather
/// than a JSON parse: the generator's work per join stays below the server's.)
async fn join(ws: &mut Ws, session: Option<&str>) -> anyhow::Result<(String, String)> {
    let frame = match session {
        None => r#"{"type":"join","version":2,"session":null,"name":"bench"}"#.to_string(),
        Some(s) => format!(r#"{{"type":"join","version":2,"session":"{s}","name":"bench"}}"#),
    };
    ws.send(Message::text(frame)).await?;
    loop {
        if let Message::Text(t) = ws.next().await.context("closed before welcome")?? {
            let t = t.as_str();
            if t.starts_with(r#"{"type":"welcome""#) {
                let s = string_field(t, "session").context("session")?;
                let id = string_field(t, "client_id").context("client_id")?;
                return Ok((s.to_string(), id.to_string()));
            }
            if t.starts_with(r#"{"type":"error""#) {
                bail!("join refused: {t}");
            }
        }
    }
}

/// The figures of one run.
struct Report {
    peers: usize,
    connect_secs: f64,
    join_secs: f64,
    /// Server and generator CPU during the connect and join phases.
    connect_cpu: (f64, f64),
    join_cpu: (f64, f64),
    rss_before_kib: u64,
    rss_idle_kib: u64,
    active: Phase,
    saturation: Option<Phase>,
    errors: u64,
}

/// One load phase's figures.
struct Phase {
    secs: f64,
    frames: u64,
    p50: f64,
    p99: f64,
    max: f64,
    server_cpu: f64,
    generator_cpu: f64,
    /// Share of the phase the server's and the generator's threads waited for a CPU.
    server_wait: f64,
    generator_wait: f64,
    /// Bucket bounds (ms) of the server's own p50 and p99 (its `/metrics` histogram).
    server_p50: f64,
    server_p99: f64,
    warmup_p99: f64,
    warmup_max: f64,
    errors: u64,
    codes: String,
}

/// CPU and run-queue readings at the start of a phase.
struct Meter {
    pid: u32,
    start: Instant,
    server_cpu: f64,
    generator_cpu: f64,
    server_wait: f64,
    generator_wait: f64,
}

impl Meter {
    fn start(pid: u32) -> anyhow::Result<Meter> {
        Ok(Meter {
            pid,
            start: Instant::now(),
            server_cpu: process_cpu(pid)?,
            generator_cpu: own_cpu(),
            server_wait: run_queue_wait(&pid.to_string()),
            generator_wait: run_queue_wait("self"),
        })
    }

    /// Server and generator CPU since the start, one core = 1.
    fn cpu(&self) -> anyhow::Result<(f64, f64)> {
        let secs = self.start.elapsed().as_secs_f64();
        Ok((
            (process_cpu(self.pid)? - self.server_cpu) / secs,
            (own_cpu() - self.generator_cpu) / secs,
        ))
    }

    fn phase(&self, samples: &RefCell<Samples>) -> anyhow::Result<Phase> {
        let secs = self.start.elapsed().as_secs_f64();
        let mut s = samples.borrow_mut();
        let (p50, p99, max) = s.summary();
        let (warmup_p99, warmup_max) = s.warmup_summary();
        let mut codes = s
            .codes
            .iter()
            .map(|(c, n)| format!("{n}× {c}"))
            .collect::<Vec<_>>();
        if s.lost > 0 {
            codes.push(format!("{} connections closed by the server", s.lost));
        }
        let codes = codes.join(", ");
        Ok(Phase {
            server_p50: f64::NAN,
            server_p99: f64::NAN,
            warmup_p99,
            warmup_max,
            codes,
            secs,
            frames: s.received,
            p50,
            p99,
            max,
            server_cpu: (process_cpu(self.pid)? - self.server_cpu) / secs,
            generator_cpu: (own_cpu() - self.generator_cpu) / secs,
            server_wait: (run_queue_wait(&self.pid.to_string()) - self.server_wait) / secs,
            generator_wait: (run_queue_wait("self") - self.generator_wait) / secs,
            errors: s.errors,
        })
    }
}

/// Run the benchmark and print its table.
pub fn run(args: SignalingArgs) -> anyhow::Result<()> {
    if args.peers < 2 || !args.peers.is_multiple_of(2) {
        bail!("--peers must be an even number of at least 2");
    }
    if args.saturate_pairs * 2 > args.peers {
        bail!("--saturate-pairs must be at most --peers / 2");
    }
    match peershare::signaling::cli::raise_fd_limit() {
        Ok(limit) if (limit as usize) < args.peers + 64 => {
            bail!("the open file limit ({limit}) is below --peers + 64")
        }
        Ok(_) => {}
        Err(e) => bail!("cannot raise the open file limit: {e}"),
    }
    pin_to(args.generator_core)?;
    let server = start_server(&args, args.peers + 64)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, drive(&args, &server))?;
    print_report(&args, &report);
    Ok(())
}

async fn drive(args: &SignalingArgs, server: &Server) -> anyhow::Result<Report> {
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = process_rss_kib(pid)?;
    let url = server.url.clone();
    eprintln!("server {url} (pid {pid}); connecting {} peers", args.peers);

    // 1. Connect.
    let meter = Meter::start(pid)?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.peers);
    for i in 0..args.peers {
        let gate = Arc::clone(&gate);
        let url = url.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire_owned().await;
            connect(&url, i).await
        }));
    }
    let mut sockets = Vec::with_capacity(args.peers);
    for t in tasks {
        sockets.push(t.await??);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connect_cpu = meter.cpu()?;
    eprintln!("connected in {connect_secs:.2} s; joining");

    // 2. Join burst: first members, then second members.
    let meter = Meter::start(pid)?;
    let started = Instant::now();
    let mut firsts = Vec::new();
    let mut seconds = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            firsts.push(ws);
        } else {
            seconds.push(ws);
        }
    }
    let created: Vec<_> = firsts
        .into_iter()
        .map(|mut ws| {
            tokio::task::spawn_local(async move {
                let (session, id) = join(&mut ws, None).await?;
                anyhow::Ok((ws, session, id))
            })
        })
        .collect();
    let mut first_members = Vec::with_capacity(created.len());
    for t in created {
        first_members.push(t.await??);
    }
    let joined: Vec<_> = seconds
        .into_iter()
        .zip(first_members.iter().map(|(_, s, _)| s.clone()))
        .map(|(mut ws, session)| {
            tokio::task::spawn_local(async move {
                let (_, id) = join(&mut ws, Some(&session)).await?;
                anyhow::Ok((ws, id))
            })
        })
        .collect();
    let mut second_members = Vec::with_capacity(joined.len());
    for t in joined {
        second_members.push(t.await??);
    }
    let join_secs = started.elapsed().as_secs_f64();
    let join_cpu = meter.cpu()?;
    eprintln!("joined in {join_secs:.2} s");
    let mut pairs: Vec<(Member, Member)> = first_members
        .into_iter()
        .zip(second_members)
        .map(|((ws_a, _, id_a), (ws_b, id_b))| {
            (
                Member {
                    ws: ws_a,
                    id: id_a.clone(),
                    partner: id_b.clone(),
                    lost: false,
                },
                Member {
                    ws: ws_b,
                    id: id_b,
                    partner: id_a,
                    lost: false,
                },
            )
        })
        .collect();

    // 3. Idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = process_rss_kib(pid)?;

    // 4. Active.
    let origin = Instant::now();
    let sdp: Rc<str> = sdp().into();
    let interval = Duration::from_secs_f64(args.interval);
    // The first round of setups is the warm-up.
    let warmup = (origin.elapsed() + interval).as_micros() as u64;
    let samples = Rc::new(RefCell::new(Samples::new(warmup)));
    let duration = Duration::from_secs(args.duration);
    let meter = Meter::start(pid)?;
    let hist0 = server_histogram(&url).await.unwrap_or_default();
    let stop_at = tokio::time::Instant::now() + duration;
    let n_pairs = pairs.len();
    let mut handles = Vec::with_capacity(pairs.len() * 2);
    for (i, (a, b)) in pairs.drain(..).enumerate() {
        // First setups spread evenly over one interval.
        let first = interval.mul_f64(i as f64 / n_pairs as f64);
        handles.push(tokio::task::spawn_local(member_active(
            a,
            Some(first),
            interval,
            stop_at,
            origin,
            Rc::clone(&sdp),
            Rc::clone(&samples),
        )));
        handles.push(tokio::task::spawn_local(member_active(
            b,
            None,
            interval,
            stop_at,
            origin,
            Rc::clone(&sdp),
            Rc::clone(&samples),
        )));
    }
    let mut members = Vec::with_capacity(handles.len());
    for h in handles {
        members.push(h.await??);
    }
    let mut active = meter.phase(&samples)?;
    let hist1 = server_histogram(&url).await.unwrap_or_default();
    active.server_p50 = server_quantile(&hist0, &hist1, 0.5);
    active.server_p99 = server_quantile(&hist0, &hist1, 0.99);
    eprintln!(
        "active: {} frames in {:.1} s, p99 {:.2} ms",
        active.frames, active.secs, active.p99
    );

    // 5. Saturation.
    let saturation = if args.saturate_pairs > 0 {
        let mut members = members.into_iter();
        let mut handles = Vec::new();
        // The first second is the warm-up.
        let warmup = (origin.elapsed() + Duration::from_secs(1)).as_micros() as u64;
        let samples = Rc::new(RefCell::new(Samples::new(warmup)));
        let stop_at = tokio::time::Instant::now() + Duration::from_secs(args.saturate_secs);
        let meter = Meter::start(pid)?;
        let hist0 = server_histogram(&url).await.unwrap_or_default();
        for _ in 0..args.saturate_pairs {
            let (Some(a), Some(b)) = (members.next(), members.next()) else {
                break;
            };
            if a.lost || b.lost {
                continue;
            }
            for (m, starts) in [(a, true), (b, false)] {
                handles.push(tokio::task::spawn_local(member_bounce(
                    m,
                    if starts { args.saturate_window } else { 0 },
                    stop_at,
                    origin,
                    Rc::clone(&sdp),
                    Rc::clone(&samples),
                )));
            }
        }
        let mut kept = Vec::with_capacity(handles.len());
        for h in handles {
            kept.push(h.await??);
        }
        let mut phase = meter.phase(&samples)?;
        let hist1 = server_histogram(&url).await.unwrap_or_default();
        phase.server_p50 = server_quantile(&hist0, &hist1, 0.5);
        phase.server_p99 = server_quantile(&hist0, &hist1, 0.99);
        drop(kept);
        Some(phase)
    } else {
        None
    };
    let errors = active.errors + saturation.as_ref().map_or(0, |s| s.errors);
    Ok(Report {
        peers: args.peers,
        connect_secs,
        join_secs,
        connect_cpu,
        join_cpu,
        rss_before_kib,
        rss_idle_kib,
        active,
        saturation,
        errors,
    })
}

/// Record one received frame.
fn record(samples: &RefCell<Samples>, origin: Instant, text: &str) -> Option<Kind> {
    let mut s = samples.borrow_mut();
    match parse_signal(text) {
        Some((t, kind)) => {
            let now = origin.elapsed().as_micros() as u64;
            let latency = u32::try_from(now.saturating_sub(t)).unwrap_or(u32::MAX);
            if t < s.warmup_until {
                s.warmup.push(latency);
            } else {
                s.micros.push(latency);
            }
            s.received += 1;
            Some(kind)
        }
        None => {
            if text.starts_with(r#"{"type":"error""#) {
                s.errors += 1;
                let code = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["code"].as_u64())
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0);
                *s.codes.entry(code).or_default() += 1;
            }
            None
        }
    }
}

/// One member in the active phase: the first member of a pair starts a setup at
/// `first`, then every `interval`; the second answers offers. Both send 10 candidates per
/// setup. Returns the member for the saturation phase.
async fn member_active(
    mut m: Member,
    first: Option<Duration>,
    interval: Duration,
    stop_at: tokio::time::Instant,
    origin: Instant,
    sdp: Rc<str>,
    samples: Rc<RefCell<Samples>>,
) -> anyhow::Result<Member> {
    let mut next = first.map(|f| tokio::time::Instant::now() + f);
    loop {
        let tick = next.unwrap_or(stop_at).min(stop_at);
        tokio::select! {
            () = tokio::time::sleep_until(tick) => {
                if tokio::time::Instant::now() >= stop_at {
                    return Ok(m);
                }
                if let Some(n) = next.as_mut() {
                    *n += interval;
                    let t = origin.elapsed().as_micros() as u64;
                    m.ws.feed(Message::text(frame(&m.partner, Kind::Offer, t, &sdp))).await?;
                    send_candidates(&mut m, origin, &sdp).await?;
                }
            }
            msg = m.ws.next() => {
                let Some(Ok(msg)) = msg else {
                    return Ok(lose(m, &samples));
                };
                if let Message::Close(_) = msg {
                    return Ok(lose(m, &samples));
                }
                if let Message::Text(text) = msg
                    && record(&samples, origin, text.as_str()) == Some(Kind::Offer)
                {
                    let t = origin.elapsed().as_micros() as u64;
                    m.ws.feed(Message::text(frame(&m.partner, Kind::Answer, t, &sdp))).await?;
                    send_candidates(&mut m, origin, &sdp).await?;
                }
            }
        }
    }
}

/// Count a connection the server closed (or reset).
fn lose(mut m: Member, samples: &RefCell<Samples>) -> Member {
    let mut s = samples.borrow_mut();
    s.errors += 1;
    s.lost += 1;
    m.lost = true;
    m
}

async fn send_candidates(m: &mut Member, origin: Instant, sdp: &str) -> anyhow::Result<()> {
    for _ in 0..10 {
        let t = origin.elapsed().as_micros() as u64;
        m.ws.feed(Message::text(frame(&m.partner, Kind::Candidate, t, sdp)))
            .await?;
    }
    m.ws.flush().await?;
    Ok(())
}

/// One member in the saturation phase: sends `window` frames, then returns every frame it
/// receives to its partner, until `stop_at`.
async fn member_bounce(
    mut m: Member,
    window: usize,
    stop_at: tokio::time::Instant,
    origin: Instant,
    sdp: Rc<str>,
    samples: Rc<RefCell<Samples>>,
) -> anyhow::Result<Member> {
    let kind_of = |i: usize| {
        if i.is_multiple_of(11) {
            Kind::Offer
        } else {
            Kind::Candidate
        }
    };
    for i in 0..window {
        let t = origin.elapsed().as_micros() as u64;
        m.ws.feed(Message::text(frame(&m.partner, kind_of(i), t, &sdp)))
            .await?;
    }
    m.ws.flush().await?;
    let _ = &m.id;
    loop {
        tokio::select! {
            // The connection stays open until every member has stopped (closing it
            // would turn the partner's frames in flight into 7008s).
            () = tokio::time::sleep_until(stop_at) => return Ok(m),
            msg = m.ws.next() => {
                let Some(msg) = msg else {
                    return Ok(lose(m, &samples));
                };
                // This frame and every one already here: each goes back (the same size:
                // an offer stays SDP-sized), with one flush for all.
                let mut msg = Some(msg?);
                while let Some(current) = msg.take() {
                    if let Message::Text(text) = current
                        && let Some(kind) = record(&samples, origin, text.as_str())
                    {
                        let kind = if kind == Kind::Candidate { Kind::Candidate } else { Kind::Offer };
                        let t = origin.elapsed().as_micros() as u64;
                        m.ws.feed(Message::text(frame(&m.partner, kind, t, &sdp))).await?;
                    }
                    if let Some(Some(next)) = m.ws.next().now_or_never() {
                        msg = Some(next?);
                    }
                }
                m.ws.flush().await?;
            }
        }
    }
}

fn print_report(args: &SignalingArgs, r: &Report) {
    println!();
    println!(
        "## signaling: {} peers ({} pairs), setup every {} s, {} s active; server on core {}, generator on core {}",
        r.peers,
        r.peers / 2,
        args.interval,
        args.duration,
        args.server_core,
        args.generator_core
    );
    println!();
    println!(
        "{}; load average at the end {}; server {}",
        super::sys::utc_now(),
        super::sys::load_average(),
        args.server_bin
            .as_deref()
            .map_or("peershare-signaling (next to this binary)".into(), |p| p
                .display()
                .to_string()),
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| connects/s (TCP + upgrade, {} at once) | {:.0} |",
        args.connect_concurrency,
        r.peers as f64 / r.connect_secs
    );
    println!(
        "| connect phase: server CPU / generator CPU | {:.0} % / {:.0} % |",
        r.connect_cpu.0 * 100.0,
        r.connect_cpu.1 * 100.0
    );
    println!(
        "| joins/s (burst of {}) | {:.0} |",
        r.peers,
        r.peers as f64 / r.join_secs
    );
    println!(
        "| join burst: server CPU / generator CPU | {:.0} % / {:.0} % |",
        r.join_cpu.0 * 100.0,
        r.join_cpu.1 * 100.0
    );
    let per_peer = (r.rss_idle_kib.saturating_sub(r.rss_before_kib)) as f64 / r.peers as f64;
    println!(
        "| server RSS: before / {} idle joined peers | {:.1} MiB / {:.1} MiB |",
        r.peers,
        r.rss_before_kib as f64 / 1024.0,
        r.rss_idle_kib as f64 / 1024.0
    );
    println!("| RSS per idle joined peer | {per_peer:.1} KiB |");
    let phase = |name: &str, p: &Phase| {
        println!(
            "| {name}: relayed frames/s | {:.0} |",
            p.frames as f64 / p.secs
        );
        println!(
            "| {name}: relay latency p50 / p99 / max | {:.2} / {:.2} / {:.1} ms |",
            p.p50, p.p99, p.max
        );
        let bound = |ms: f64| {
            if ms.is_finite() {
                format!("≤ {ms}")
            } else {
                "> 5000".to_string()
            }
        };
        println!(
            "| {name}: server's own relay latency (read → written, /metrics buckets) p50 / p99 | {} / {} ms |",
            bound(p.server_p50),
            bound(p.server_p99)
        );
        println!(
            "| {name}: warm-up ({}) relay latency p99 / max | {:.2} / {:.1} ms |",
            if name == "active" {
                "first round of setups"
            } else {
                "first second"
            },
            p.warmup_p99,
            p.warmup_max
        );
        if !p.codes.is_empty() {
            println!(
                "| {name}: error frames by code, lost connections | {} |",
                p.codes
            );
        }
        println!(
            "| {name}: server CPU / generator CPU (one core = 100 %) | {:.0} % / {:.0} % |",
            p.server_cpu * 100.0,
            p.generator_cpu * 100.0
        );
        println!(
            "| {name}: server / generator waited for a CPU (other load) | {:.0} % / {:.0} % |",
            p.server_wait * 100.0,
            p.generator_wait * 100.0
        );
    };
    phase("active", &r.active);
    if let Some(s) = &r.saturation {
        phase(
            &format!(
                "saturation ({} pairs × {} in flight)",
                args.saturate_pairs, args.saturate_window
            ),
            s,
        );
    }
    println!("| errors (error frames, lost connections) | {} |", r.errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_signal_reads_stamp_and_kind_in_any_key_order() {
        let sdp = sdp();
        let sent = frame("abc", Kind::Offer, 123_456, &sdp);
        // As relayed byte for byte ...
        let relayed = sent.replacen(r#""to":"abc""#, r#""from":"xyz""#, 1);
        assert_eq!(parse_signal(&relayed), Some((123_456, Kind::Offer)));
        // ... and as a server that re-serializes `data` sends it (its keys sorted).
        let v: serde_json::Value = serde_json::from_str(&relayed).unwrap();
        let reserialized = format!(r#"{{"type":"signal","from":"xyz","data":{}}}"#, v["data"]);
        assert!(reserialized.ends_with(r#""t":123456}}"#), "{reserialized}");
        assert_eq!(parse_signal(&reserialized), Some((123_456, Kind::Offer)));
        let c = frame("abc", Kind::Candidate, 7, &sdp);
        assert_eq!(parse_signal(&c), Some((7, Kind::Candidate)));
        assert_eq!(parse_signal(r#"{"type":"pong"}"#), None);
        assert!((2_900..3_300).contains(&sdp.len()), "{}", sdp.len());
        assert!((200..330).contains(&c.len()), "{}", c.len());
    }
}
