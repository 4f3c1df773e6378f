//! The emulator between two real network namespaces: TCP through a delayed, lossy path
//! arrives byte for byte, the round trip is at least the configured delay, and the
//! binary starts, prints its ready line and exits cleanly. Needs root (namespaces, TUN
//! devices); without it every test says why and returns. Each test makes its own
//! namespaces (`wanem-t-PID-…`) and deletes them, also when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peershare_wanem::netns::{self, Netns};
use peershare_wanem::{ADDR_B, Config, Emulator, LinkConfig, Loss, tcp};
use rand::{RngCore, SeedableRng};

/// Hang guard for one transfer (not a performance assertion).
const GUARD: Duration = Duration::from_secs(120);

/// Write past the test harness's capture, so the line shows in CI logs.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Two fresh namespaces for `tag`, or `None` (after saying why) without root.
fn lab(tag: &str) -> Option<(Netns, Netns)> {
    if !netns::is_root() {
        note(&format!(
            "SKIPPED wanem {tag}: needs root for network namespaces and TUN devices; \
             run `cargo test -p peershare-wanem` as root (CI does)"
        ));
        return None;
    }
    netns::remove_stale("wanem-t");
    let name = |side: &str| format!("wanem-t-{}-{tag}-{side}", std::process::id());
    let a = Netns::create(&name("a")).expect("create namespace a");
    let b = Netns::create(&name("b")).expect("create namespace b");
    Some((a, b))
}

/// TCP through 15 ms each way and 1 % loss both ways: every byte arrives, the handshake
/// takes at least the round trip, and the loss model acted.
fn tcp_through_delay_and_loss(tag: &str, offload: bool) {
    let Some((a, b)) = lab(tag) else { return };
    let one_way = Duration::from_millis(15);
    let link = LinkConfig::default()
        .with_delay(one_way, Duration::from_millis(1))
        .with_loss(Loss::random(0.01));
    let mut config = Config::new(a.name(), b.name()).with_link(link);
    config.offload = offload;
    let emulator = Emulator::start(config).unwrap();

    let addr = SocketAddr::new(ADDR_B.into(), 5201);
    let listener = b.run(|| TcpListener::bind(addr)).unwrap();
    let mut data = vec![0u8; 4 * 1024 * 1024 + 123];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);

    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(GUARD)).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    let connect_start = Instant::now();
    let mut stream = a
        .run(|| tcp::connect(addr, None, Duration::from_secs(10)))
        .unwrap();
    let connect_rtt = connect_start.elapsed();
    stream.set_write_timeout(Some(GUARD)).unwrap();
    stream.write_all(&data).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let got = receiver.join().unwrap();
    let stats = emulator.stop();
    note(&format!(
        "wanem {tag}: connect {connect_rtt:.2?}; a->b {}; b->a {}",
        stats.a_to_b, stats.b_to_a
    ));

    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes differ");
    // The handshake crosses the path twice: SYN (A → B), SYN-ACK (B → A).
    let min_rtt = 2 * (one_way - Duration::from_millis(1));
    assert!(
        connect_rtt >= min_rtt,
        "connect took {connect_rtt:?}, less than the configured round trip {min_rtt:?}"
    );
    // ~2900 full-size packets at 1 % loss: none lost would be a broken loss model.
    assert!(stats.a_to_b.lost > 0, "{}", stats.a_to_b);
    assert!(stats.a_to_b.forwarded > 2800, "{}", stats.a_to_b);
    // What was still on its way when the emulator stopped is neither.
    for d in [stats.a_to_b, stats.b_to_a] {
        assert!(d.received >= d.forwarded + d.lost, "{d}");
    }
    assert_eq!(stats.a_to_b.write_errors, 0);
    assert_eq!(stats.b_to_a.write_errors, 0);
}

#[test]
fn emulator_delay_and_loss_tcp_arrives_identical_and_rtt_at_least_delay() {
    tcp_through_delay_and_loss("tcp", true);
}

#[test]
fn emulator_no_offload_delay_and_loss_tcp_arrives_identical() {
    tcp_through_delay_and_loss("plain", false);
}

#[test]
fn emulator_rate_limit_small_queue_overflows() {
    let Some((a, b)) = lab("rate") else { return };
    // 10 Mbit/s with a 16-packet queue: a TCP stream must overflow it.
    let link = LinkConfig::default().with_rate(1_250_000, 24_000);
    let emulator = Emulator::start(Config::new(a.name(), b.name()).with_link(link)).unwrap();
    let addr = SocketAddr::new(ADDR_B.into(), 5202);
    let listener = b.run(|| TcpListener::bind(addr)).unwrap();
    let size = 2 * 1024 * 1024;
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        tcp::receive(&mut conn, None, true, Some(Instant::now() + GUARD)).unwrap()
    });
    let mut stream = a
        .run(|| tcp::connect(addr, Some("cubic"), Duration::from_secs(10)))
        .unwrap();
    tcp::send(&mut stream, size, Some(Instant::now() + GUARD)).unwrap();
    let got = receiver.join().unwrap();
    let stats = emulator.stop();
    note(&format!(
        "wanem rate: {:.2} MiB/s; a->b {}",
        got.mib_per_sec(),
        stats.a_to_b
    ));
    assert!(got.complete);
    assert_eq!(got.bytes, size);
    assert!(stats.a_to_b.overflow > 0, "{}", stats.a_to_b);
    assert_eq!(stats.a_to_b.lost, 0);
}

#[test]
fn emulator_stop_removes_devices() {
    let Some((a, b)) = lab("stop") else { return };
    let emulator = Emulator::start(Config::new(a.name(), b.name())).unwrap();
    assert!(emulator.is_running());
    a.ip("link show dev wanem0").unwrap();
    drop(emulator);
    assert!(a.ip("link show dev wanem0").is_err());
    assert!(b.ip("link show dev wanem0").is_err());
}

/// A process started by another thread at the moment the emulator stops holds copies of
/// its descriptors; the devices still go. The child here holds them until its pipe closes.
#[test]
fn emulator_drop_while_a_child_holds_its_descriptors_removes_devices() {
    let Some((a, b)) = lab("held") else { return };
    let emulator = Emulator::start(Config::new(a.name(), b.name())).unwrap();
    let mut pipe = [0; 2];
    // SAFETY: plain syscall filling a two-element array.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: the child calls only async-signal-safe functions (close, read, _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: plain syscalls on descriptors this process owns.
        unsafe {
            libc::close(pipe[1]);
            libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    assert!(pid > 0);
    // SAFETY: closes our copy of the read end.
    unsafe { libc::close(pipe[0]) };
    drop(emulator);
    let gone = (
        a.ip("link show dev wanem0").is_err(),
        b.ip("link show dev wanem0").is_err(),
    );
    // SAFETY: closing the write end lets the child's read return; then reap it.
    unsafe {
        libc::close(pipe[1]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert_eq!(gone, (true, true));
}

/// Start the binary between the lab's namespaces; returns it after its ready line.
fn start_binary(
    a: &Netns,
    b: &Netns,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-wanem"))
        .args([
            "--ns-a",
            a.name(),
            "--ns-b",
            b.name(),
            "--delay",
            "5ms",
            "--loss",
            "0.1%",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("ready a="), "first line {line:?}");
    assert!(
        line.contains("198.51.100.1") && line.contains("198.51.100.2"),
        "{line}"
    );
    a.ip("link show dev wanem0").unwrap();
    (child, out)
}

fn rest_and_status(
    mut child: std::process::Child,
    mut out: BufReader<std::process::ChildStdout>,
) -> (String, std::process::ExitStatus) {
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    (rest, child.wait().unwrap())
}

#[test]
fn binary_stdin_eof_exits_with_counters() {
    let Some((a, b)) = lab("eof") else { return };
    let (mut child, out) = start_binary(&a, &b);
    drop(child.stdin.take());
    let (rest, status) = rest_and_status(child, out);
    assert!(status.success(), "{status}");
    assert!(rest.contains("a->b received="), "{rest}");
    assert!(rest.contains("b->a received="), "{rest}");
    assert!(
        rest.contains("lost=") && rest.contains("overflow="),
        "{rest}"
    );
    assert!(a.ip("link show dev wanem0").is_err(), "device left behind");
}

#[test]
fn binary_sigterm_exits_with_counters() {
    let Some((a, b)) = lab("term") else { return };
    let (child, out) = start_binary(&a, &b);
    // SAFETY: plain syscall on the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let (rest, status) = rest_and_status(child, out);
    assert!(status.success(), "{status}");
    assert!(rest.contains("a->b received="), "{rest}");
    assert!(b.ip("link show dev wanem0").is_err(), "device left behind");
}
