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

fn is_completed(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. } | Event::DownloadFailed { .. }
    )
}

async fn embedded_relay_server() -> SignalingServer {
    SignalingServer::bind(ServerConfig {
        listen: (LOCALHOST, 0).into(),
        turn: TurnConfig {
            mode: TurnMode::embedded((LOCALHOST, 0).into()),
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

/// Peer settings: bound to 127.0.0.1, relay-only or the default policy.
fn peer_config(
    server: &SignalingServer,
    session: Option<&str>,
    name: &str,
    dir: &Path,
    relay_only: bool,
    relay_poll: bool,
) -> PeerConfig {
    let mut c = config(server, session, name, dir);
    c.rtc.relay_only = relay_only;
    if !relay_poll {
        c.rtc.relay_poll_interval = None;
    }
    // Measuring knob of the harness (docs/RELAY.md): relayed datagrams sent singly.
    if std::env::var_os("PEERSHARE_RELAY_BENCH_NO_BATCH").is_some() {
        c.rtc.relay_batching = false;
    }
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
    relay_only: bool,
    relay_poll: bool,
) -> TransferResult {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (sender, events) = Peer::join(peer_config(
        server,
        None,
        "sender",
        tmp.path(),
        relay_only,
        relay_poll,
    ))
    .await
    .expect("sender joins");
    let mut s_rec = Recorder::new(events);
    let (recipient, events) = Peer::join(peer_config(
        server,
        Some(sender.session()),
        "recipient",
        &out,
        relay_only,
        relay_poll,
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
    let done = r_rec.until("download end", is_completed).await;
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(cpu0));
    let Event::DownloadCompleted {
        path: Some(path), ..
    } = done
    else {
        panic!("download failed: {done:?}")
    };
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
        outcomes.get(recipient.client_id()),
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
    let r = transfer(&server, &src, &data, true, true).await;
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
    let r = transfer(&server, &src, &data, true, true).await;
    assert_eq!(r.sender_path, Some(PathKind::Relay));
    assert_eq!(r.recipient_path, Some(PathKind::Relay));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_available_default_policy_prefers_direct_path() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "direct.bin", 1024 * 1024, 13);
    let server = embedded_relay_server().await;
    let r = transfer(&server, &src, &data, false, true).await;
    assert_eq!(r.sender_path, Some(PathKind::Direct));
    assert_eq!(r.recipient_path, Some(PathKind::Direct));
    server.shutdown().await;
}

/// Direct, embedded relay and coturn in one run, with and without the relay poll
/// workaround. Size: `PEERSHARE_RELAY_BENCH_MIB` (default 128).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement harness; run with --release --ignored --nocapture"]
async fn relay_throughput_direct_vs_relayed_report() {
    init_tracing();
    let mib: usize = std::env::var("PEERSHARE_RELAY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "bench.bin", mib * 1024 * 1024, 99);
    let embedded = embedded_relay_server().await;
    eprintln!("embedded relay on {:?}", embedded.turn_addr());
    let coturn = start_coturn();
    let external = match &coturn {
        Some(c) => Some(external_relay_server(c).await),
        None => None,
    };
    let mut rows = Vec::new();
    let mut cases: Vec<(&str, &SignalingServer, bool, bool)> = vec![
        ("direct", &embedded, false, true),
        ("direct, no relay poll", &embedded, false, false),
        ("embedded relay", &embedded, true, true),
        ("embedded relay, no relay poll", &embedded, true, false),
    ];
    if let Some(ext) = &external {
        cases.push(("coturn", ext, true, true));
        cases.push(("coturn, no relay poll", ext, true, false));
    }
    // PEERSHARE_RELAY_BENCH_CASES="direct;coturn" picks cases by name.
    let only = std::env::var("PEERSHARE_RELAY_BENCH_CASES").ok();
    for (name, server, relay_only, poll) in cases {
        if let Some(only) = &only
            && !only.split(';').any(|c| c == name)
        {
            continue;
        }
        eprintln!("running: {name}");
        let r = transfer(server, &src, &data, relay_only, poll).await;
        let expected = if relay_only {
            PathKind::Relay
        } else {
            PathKind::Direct
        };
        assert_eq!(r.recipient_path, Some(expected), "{name}");
        let secs = r.elapsed.as_secs_f64();
        eprintln!("{name}: {:.1} MiB/s", mib as f64 / secs);
        rows.push(format!(
            "{name:<32} {:>8.1} MiB/s  {:>6.2} s  CPU {:>6.2} s ({:.2} CPU-s per 100 MiB)",
            mib as f64 / secs,
            secs,
            r.cpu.as_secs_f64(),
            r.cpu.as_secs_f64() * 100.0 / mib as f64
        ));
    }
    if coturn.is_none() {
        rows.push("coturn: SKIPPED (turnserver not installed)".into());
    }
    eprintln!("\n{mib} MiB, 127.0.0.1, one run:\n{}", rows.join("\n"));
    embedded.shutdown().await;
    if let Some(ext) = external {
        ext.shutdown().await;
    }
}

/// The allocator of the product's binaries, so the harness measures what they run
/// (docs/DECISIONS.md: glibc malloc costs the relayed path ~15 % here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
