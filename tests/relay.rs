//! Transfers forced through a TURN relay on 127.0.0.1: the signaling server's embedded
//! relay, and a real coturn (`turnserver`) started by the test with `use-auth-secret`.
//!
//! `relay_throughput_direct_vs_relayed_report` (ignored) is the measuring harness of
//! docs/RELAY.md:
//! `cargo test --release --test relay -- --ignored --nocapture relay_throughput`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peershare::rtc::path::PathKind;
use peershare::signaling::{ServerConfig, SignalingServer, TurnConfig, TurnMode};
use peershare::{Event, Outcome, Peer, PeerConfig, Save, Share};

const COTURN_SECRET: &str = "peershare-test-secret";

async fn embedded_relay_server() -> SignalingServer {
    SignalingServer::bind(ServerConfig {
        listen: (LOCALHOST, 0).into(),
        turn: TurnConfig {
            mode: TurnMode::embedded((LOCALHOST, 0).into()),
            // The peers' host candidates are on 127.0.0.1, which the relay refuses by
            // default (only the hand-over between its own allocations needs no entry).
            allow_peers: vec!["127.0.0.1/32".parse().unwrap()],
            ..TurnConfig::default()
        },
        ..ServerConfig::default()
    })
    .await
    .expect("bind signaling server with embedded relay")
}

async fn external_relay_server(coturn: &Coturn) -> SignalingServer {
    SignalingServer::bind(ServerConfig {
        listen: (LOCALHOST, 0).into(),
        turn: TurnConfig {
            mode: TurnMode::External {
                urls: vec![format!("turn:{}?transport=udp", coturn.addr)],
                secret: COTURN_SECRET.into(),
            },
            ..TurnConfig::default()
        },
        ..ServerConfig::default()
    })
    .await
    .expect("bind signaling server for coturn")
}

/// What a transfer of the harness varies.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    /// Relay-only ICE policy on the sender (else the default policy, which prefers
    /// direct).
    sender_relay_only: bool,
    /// Relay-only ICE policy on the recipient. Only one side relay-only gives a path with
    /// one relay allocation (relay to host); both give two (relay to relay).
    recipient_relay_only: bool,
    /// GSO batching of relayed datagrams (`RtcSettings::relay_batching`).
    relay_batching: bool,
}

impl Knobs {
    const DIRECT: Knobs = Knobs {
        sender_relay_only: false,
        recipient_relay_only: false,
        relay_batching: true,
    };
    const RELAYED: Knobs = Knobs {
        sender_relay_only: true,
        recipient_relay_only: true,
        ..Knobs::DIRECT
    };
    /// One relayed side: the path has one allocation, which is what ICE picked between
    /// two symmetric NATs in tests/netns.rs (relay to peer-reflexive).
    const SENDER_RELAYED: Knobs = Knobs {
        recipient_relay_only: false,
        ..Knobs::RELAYED
    };
    const RECIPIENT_RELAYED: Knobs = Knobs {
        sender_relay_only: false,
        ..Knobs::RELAYED
    };

    fn relayed(&self) -> bool {
        self.sender_relay_only || self.recipient_relay_only
    }
}

/// Peer settings: bound to 127.0.0.1, relay-only or the default policy.
fn peer_config(
    server: &SignalingServer,
    session: Option<&str>,
    name: &str,
    dir: &Path,
    relay_only: bool,
    knobs: Knobs,
) -> PeerConfig {
    let mut c = config(server, session, name, dir);
    c.rtc.relay_only = relay_only;
    c.rtc.relay_batching = knobs.relay_batching;
    // Measuring knob of the harness (docs/RELAY.md): the SCTP receive window in bytes.
    if let Some(w) = std::env::var("PEERSHARE_RELAY_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.rtc.sctp_receive_window = w;
    }
    c
}

/// The connection event's path, waiting for it if not seen yet.
async fn connection_path(rec: &mut Recorder) -> Option<PathKind> {
    let seen = rec.seen.iter().find_map(|e| match e {
        Event::Connection { path, .. } => Some(*path),
        _ => None,
    });
    if let Some(path) = seen {
        return path;
    }
    match rec
        .until("connection", |e| matches!(e, Event::Connection { .. }))
        .await
    {
        Event::Connection { path, .. } => path,
        _ => unreachable!(),
    }
}

struct TransferResult {
    sender_path: Option<PathKind>,
    recipient_path: Option<PathKind>,
    /// From the download request to the completed file.
    elapsed: Duration,
    /// Process CPU time (user + system) over the same span.
    cpu: Duration,
}

/// Share `src` from one peer to another through `server` and check the copy.
async fn transfer(
    server: &SignalingServer,
    src: &Path,
    data: &[u8],
    knobs: Knobs,
) -> TransferResult {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (sender, events) = Peer::join(peer_config(
        server,
        None,
        "sender",
        tmp.path(),
        knobs.sender_relay_only,
        knobs,
    ))
    .await
    .expect("sender joins");
    let mut s_rec = Recorder::new(events);
    let (recipient, events) = Peer::join(peer_config(
        server,
        Some(sender.session()),
        "recipient",
        &out,
        knobs.recipient_relay_only,
        knobs,
    ))
    .await
    .expect("recipient joins");
    let mut r_rec = Recorder::new(events);

    let jobs = sender
        .send_files(&[src.to_path_buf()], Share::Broadcast)
        .await
        .unwrap();
    let file_id = r_rec.offer().await;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    recipient
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    let path = r_rec.saved().await;
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(cpu0));
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    let completed = s_rec
        .until("upload completed", |e| {
            matches!(e, Event::UploadCompleted { .. })
        })
        .await;
    let Event::UploadCompleted {
        job_id, outcomes, ..
    } = completed
    else {
        unreachable!()
    };
    assert_eq!(job_id, jobs[0]);
    assert_eq!(
        outcomes.get(&recipient.client_id()),
        Some(&Outcome::Delivered)
    );
    let result = TransferResult {
        sender_path: connection_path(&mut s_rec).await,
        recipient_path: connection_path(&mut r_rec).await,
        elapsed,
        cpu,
    };
    recipient.leave().await;
    sender.leave().await;
    result
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A coturn `turnserver` in the foreground on 127.0.0.1, killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn turnserver_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A STUN binding request (RFC 5389): type 0x0001, length 0, magic cookie, transaction ID.
fn stun_binding_request() -> [u8; 20] {
    let mut req = [0u8; 20];
    req[..2].copy_from_slice(&1u16.to_be_bytes());
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    req[8..].copy_from_slice(b"peershare-tx");
    req
}

/// Start coturn with TURN REST auth (`use-auth-secret`) and wait until it answers a STUN
/// binding request. `None` when `turnserver` is not installed.
fn start_coturn() -> Option<Coturn> {
    let binary = turnserver_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let relay_min = 40000 + (port % 20000);
    let mut child = Command::new(binary)
        .args([
            "-n",
            "--use-auth-secret",
            &format!("--static-auth-secret={COTURN_SECRET}"),
            "--realm=peershare",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={relay_min}"),
            &format!("--max-port={}", relay_min + 200),
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-tcp-relay",
            "--no-cli",
            "--no-multicast-peers",
            "--log-file=stdout",
            "--simple-log",
            &format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let addr = SocketAddr::from((LOCALHOST, port));
    // Readiness: coturn answers a binding request once its listener is up.
    let probe = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 512];
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("turnserver exited early: {status}");
        }
        assert!(Instant::now() < deadline, "turnserver did not come up");
        probe.send_to(&stun_binding_request(), addr).unwrap();
        if let Ok((n, _)) = probe.recv_from(&mut buf)
            && n >= 20
            && buf[..2] == [0x01, 0x01]
        {
            break;
        }
    }
    Some(Coturn {
        child,
        addr,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_embedded_transfer_is_identical_and_reports_relay_path() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "relayed.bin", 4 * 1024 * 1024 + 3, 11);
    let server = embedded_relay_server().await;
    let r = transfer(&server, &src, &data, Knobs::RELAYED).await;
    assert_eq!(r.sender_path, Some(PathKind::Relay));
    assert_eq!(r.recipient_path, Some(PathKind::Relay));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_coturn_transfer_is_identical_and_reports_relay_path() {
    init_tracing();
    let Some(coturn) = start_coturn() else {
        eprintln!("SKIPPED: `turnserver` (Debian package coturn) is not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "coturn.bin", 4 * 1024 * 1024 + 5, 12);
    let server = external_relay_server(&coturn).await;
    let r = transfer(&server, &src, &data, Knobs::RELAYED).await;
    assert_eq!(r.sender_path, Some(PathKind::Relay));
    assert_eq!(r.recipient_path, Some(PathKind::Relay));
    server.shutdown().await;
}

/// One side relay-only, the other on the default policy: the path has one allocation,
/// and both sides must call it relayed. The default side's end of the pair is often
/// peer-reflexive (the relay-only peer's checks arrive before its relay candidate), and
/// was then reported as direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_one_side_relay_only_both_sides_report_relay_path() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "one-allocation.bin", 1024 * 1024 + 7, 14);
    let server = embedded_relay_server().await;
    for knobs in [Knobs::SENDER_RELAYED, Knobs::RECIPIENT_RELAYED] {
        let r = transfer(&server, &src, &data, knobs).await;
        assert_eq!(r.sender_path, Some(PathKind::Relay), "{knobs:?}");
        assert_eq!(r.recipient_path, Some(PathKind::Relay), "{knobs:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_available_default_policy_prefers_direct_path() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "direct.bin", 1024 * 1024, 13);
    let server = embedded_relay_server().await;
    let r = transfer(&server, &src, &data, Knobs::DIRECT).await;
    assert_eq!(r.sender_path, Some(PathKind::Direct));
    assert_eq!(r.recipient_path, Some(PathKind::Direct));
    server.shutdown().await;
}

/// Direct, embedded relay and coturn in one run, each case repeated and the repeats
/// interleaved (machine noise then hits every case alike); the report gives medians.
/// `PEERSHARE_RELAY_BENCH_MIB` (default 128), `PEERSHARE_RELAY_BENCH_REPEAT` (default 3),
/// `PEERSHARE_RELAY_BENCH_CASES="direct;coturn"` picks cases by name (the default is
/// direct, embedded relay and coturn; the "… no batching" variants are opt-in).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement harness; run with --release --ignored --nocapture"]
async fn relay_throughput_direct_vs_relayed_report() {
    init_tracing();
    let env_num = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = env_num("PEERSHARE_RELAY_BENCH_MIB", 128);
    let repeat = env_num("PEERSHARE_RELAY_BENCH_REPEAT", 3).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "bench.bin", mib * 1024 * 1024, 99);
    let embedded = embedded_relay_server().await;
    eprintln!("embedded relay on {:?}", embedded.turn_addr());
    let coturn = start_coturn();
    let external = match &coturn {
        Some(c) => Some(external_relay_server(c).await),
        None => None,
    };
    let no_batching = Knobs {
        relay_batching: false,
        ..Knobs::RELAYED
    };
    let mut cases: Vec<(&str, &SignalingServer, Knobs, bool)> = vec![
        ("direct", &embedded, Knobs::DIRECT, true),
        ("embedded relay", &embedded, Knobs::RELAYED, true),
        (
            "embedded, sender relayed",
            &embedded,
            Knobs::SENDER_RELAYED,
            true,
        ),
        (
            "embedded, recipient relayed",
            &embedded,
            Knobs::RECIPIENT_RELAYED,
            true,
        ),
        ("embedded relay, no batching", &embedded, no_batching, false),
    ];
    if let Some(ext) = &external {
        cases.push(("coturn", ext, Knobs::RELAYED, true));
        cases.push(("coturn, sender relayed", ext, Knobs::SENDER_RELAYED, true));
        cases.push((
            "coturn, recipient relayed",
            ext,
            Knobs::RECIPIENT_RELAYED,
            true,
        ));
        cases.push(("coturn, no batching", ext, no_batching, false));
    }
    let only = std::env::var("PEERSHARE_RELAY_BENCH_CASES").ok();
    cases.retain(|(name, _, _, default)| match &only {
        Some(only) => only.split(';').any(|c| c == *name),
        None => *default,
    });
    let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for round in 0..repeat {
        for (i, (name, server, knobs, _)) in cases.iter().enumerate() {
            eprintln!("running: {name} ({}/{repeat})", round + 1);
            let r = transfer(server, &src, &data, *knobs).await;
            let expected = if knobs.relayed() {
                PathKind::Relay
            } else {
                PathKind::Direct
            };
            assert_eq!(r.recipient_path, Some(expected), "{name}");
            let secs = r.elapsed.as_secs_f64();
            let cpu_per_100 = r.cpu.as_secs_f64() * 100.0 / mib as f64;
            eprintln!("{name}: {:.1} MiB/s", mib as f64 / secs);
            rates[i].push((mib as f64 / secs, cpu_per_100));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let direct = cases
        .iter()
        .position(|c| c.0 == "direct")
        .map(|i| median(&rates[i].iter().map(|r| r.0).collect::<Vec<_>>()));
    let mut rows = Vec::new();
    for (i, (name, ..)) in cases.iter().enumerate() {
        let mibs: Vec<f64> = rates[i].iter().map(|r| r.0).collect();
        let cpus: Vec<f64> = rates[i].iter().map(|r| r.1).collect();
        let m = median(&mibs);
        let ratio = direct.map_or(String::new(), |d| format!("{:.2}x direct", m / d));
        let runs: Vec<String> = mibs.iter().map(|r| format!("{r:.1}")).collect();
        rows.push(format!(
            "{name:<32} {m:>8.1} MiB/s  {ratio:<12}  CPU {:.2} s per 100 MiB  runs: {}",
            median(&cpus),
            runs.join(", ")
        ));
    }
    if coturn.is_none() {
        rows.push("coturn: SKIPPED (turnserver not installed)".into());
    }
    eprintln!(
        "\n{mib} MiB, 127.0.0.1, medians of {repeat} interleaved runs:\n{}",
        rows.join("\n")
    );
    embedded.shutdown().await;
    if let Some(ext) = external {
        ext.shutdown().await;
    }
}
