//! The real `peershare` binaries in Linux network namespaces: two peers, each behind its
//! own nftables NAT router, and a signaling server with its embedded STUN/TURN relay on a
//! bridge that plays the internet. Every test builds and tears down its own namespaces.
//!
//! ```text
//!  inet:  br0 203.0.113.10/24   signaling ws://203.0.113.10:8787, STUN/TURN udp 3478
//!           │ wan-a                                   │ wan-b
//!  ra:    wan 203.0.113.21/24                  rb:  wan 203.0.113.22/24
//!         lan 192.0.2.1 (TUN)                       lan 198.51.100.1/24
//!           ⇅ peershare-wanem, 10 ms each way        │ eth0
//!  a:     eth0 192.0.2.2 (TUN, sender)         b:   198.51.100.2/24 (recipient)
//! ```
//!
//! Every path of the sender — to the signaling server, the relay and the recipient —
//! crosses a WAN emulator (`wanem/`, in this test process) on its access link: a 20 ms
//! round trip, so connection setup and transfer run with a real delay.
//!
//! Only the documentation ranges are used, the routers have no route beyond
//! 203.0.113.0/24, no interface exists on the host side, and IPv6 is disabled in every
//! namespace, so no packet leaves the lab. Needs root; without it the tests print why and
//! return (CI runs as root, so there they run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use peershare_wanem::{self as wanem, Emulator, LinkConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");
/// One-way delay of the sender's access link (the emulator between `a` and `ra`).
const ACCESS_DELAY: Duration = Duration::from_millis(10);
/// Hang guard for one process or one awaited line (not a performance assertion).
const GUARD: Duration = Duration::from_secs(120);

const SERVER_IP: &str = "203.0.113.10";
const SIGNAL_PORT: u16 = 8787;
const TURN_PORT: u16 = 3478;
const ROUTER_A_WAN: &str = "203.0.113.21";
const ROUTER_B_WAN: &str = "203.0.113.22";
/// Payload size: a few MiB, odd on purpose.
const PAYLOAD_BYTES: usize = 3 * 1024 * 1024 + 4321;

/// How the routers translate their LAN's outbound traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// `masquerade`: the source port is kept whenever possible, so one local socket gets
    /// one public mapping whatever the destination.
    EndpointIndependent,
    /// `masquerade random`: every new flow (per destination) gets a fresh random port.
    Symmetric,
}

/// One case's lab description.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Short tag for namespace names.
    tag: &'static str,
    nat: Nat,
    /// Drop UDP between the two routers' outside addresses (UDP to the relay still passes).
    block_p2p_udp: bool,
    /// The MTU of the recipient's LAN link (both ends), when not 1500.
    lan_mtu_b: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// Preconditions

/// Write straight to the process's stderr, past the test harness's output capture, so the
/// line shows in CI logs even when the test passes.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `false` (after saying why) when the test cannot run here; panics when it should be able
/// to run (root) but something it needs is missing.
fn lab_available(test: &str) -> bool {
    if !is_root() {
        note(&format!(
            "SKIPPED {test}: needs root to create network namespaces (ip netns, veth, \
             nftables); run `cargo test --test netns` as root (CI does)"
        ));
        return false;
    }
    for (tool, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        let ok = StdCommand::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "`{tool}` is missing: install {package} (.ci/run does)");
    }
    let help = StdCommand::new(BIN)
        .args(["signal", "--help"])
        .output()
        .expect("run peershare signal --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--turn-listen") && help.contains("--turn-public-ip"),
        "`peershare signal` has no --turn-listen/--turn-public-ip flags: the embedded STUN/TURN \
         relay these tests need is missing, so neither srflx candidates \
         (direct through NAT) nor a relay path can exist. `peershare signal --help`:\n{help}"
    );
    true
}

// ---------------------------------------------------------------------------------------
// Shell helpers

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`{}` exited with {}: {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Run a setup command; panic with its output if it fails.
fn run(args: &[&str]) {
    let out = StdCommand::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{}", describe(args, &out));
}

/// `ip -n NS CMD…` (CMD split at whitespace).
fn ip(ns: &str, cmd: &str) {
    let mut args = vec!["ip", "-n", ns];
    args.extend(cmd.split_whitespace());
    run(&args);
}

/// `sh -c SCRIPT` inside namespace `ns`.
fn sh_in(ns: &str, script: &str) {
    run(&["ip", "netns", "exec", ns, "sh", "-c", script]);
}

/// Run a setup command with `input` on its stdin; panic with its output if it fails.
fn run_with_stdin(args: &[&str], input: &str) {
    let mut child = StdCommand::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\ninput:\n{input}",
        describe(args, &out)
    );
}

// ---------------------------------------------------------------------------------------
// The lab

/// The namespaces of one test. Dropping it (also while unwinding from a panic) kills every
/// process left in them and deletes them, which also removes their veths and bridge.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
    /// The sender's access link; stopped before the namespaces go.
    emulator: Option<Emulator>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.emulator.take());
        for ns in self.namespaces.iter().rev() {
            if let Ok(out) = StdCommand::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<libc::pid_t>() {
                        // SAFETY: plain syscall; the pid is a process inside a namespace
                        // this test created.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = StdCommand::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// A fresh namespace with loopback up and IPv6 off (so no link-local chatter).
    fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        // A namespace left over by a killed run of the same pid would make `add` fail.
        let _ = StdCommand::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh_in(
            &ns,
            "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 \
                      /proc/sys/net/ipv6/conf/default/disable_ipv6; do \
               if [ -w \"$f\" ]; then echo 1 > \"$f\"; fi; done; \
             ip link set lo up",
        );
        ns
    }

    fn build(scenario: Scenario) -> Lab {
        remove_stale_namespaces(scenario.tag);
        let mut lab = Lab {
            prefix: format!("ps-{}-{}", scenario.tag, std::process::id()),
            namespaces: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            emulator: None,
        };
        let inet = lab.add_ns("inet");
        ip(&inet, "link add br0 type bridge");
        ip(&inet, &format!("addr add {SERVER_IP}/24 dev br0"));
        ip(&inet, "link set br0 up");

        let sides = [
            ("a", ROUTER_A_WAN, "192.0.2.1", "192.0.2.2/25", ROUTER_B_WAN),
            (
                "b",
                ROUTER_B_WAN,
                "198.51.100.1",
                "198.51.100.2/24",
                ROUTER_A_WAN,
            ),
        ];
        for (side, wan_ip, gateway, lan_net, other_wan) in sides {
            let router = lab.add_ns(&format!("r{side}"));
            let peer = lab.add_ns(side);
            let prefix_len = lan_net.split('/').nth(1).unwrap();
            // Both ends of each veth are created directly inside namespaces: nothing ever
            // appears on the host side.
            ip(
                &router,
                &format!("link add wan type veth peer name wan-{side} netns {inet}"),
            );
            ip(&inet, &format!("link set wan-{side} master br0"));
            ip(&inet, &format!("link set wan-{side} up"));
            ip(&router, &format!("addr add {wan_ip}/24 dev wan"));
            ip(&router, "link set wan up");
            if side == "a" {
                // The access link is the emulator's pair of TUN devices, point to point.
                let link = LinkConfig::default().with_delay(ACCESS_DELAY, Duration::ZERO);
                let mut config = wanem::Config::new(&peer, &router).with_link(link);
                config.a.device = "eth0".into();
                config.a.addr = lan_net.split('/').next().unwrap().parse().unwrap();
                config.b.device = "lan".into();
                config.b.addr = gateway.parse().unwrap();
                lab.emulator = Some(Emulator::start(config).expect("start the WAN emulator"));
            } else {
                ip(
                    &router,
                    &format!("link add lan type veth peer name eth0 netns {peer}"),
                );
                ip(&router, &format!("addr add {gateway}/{prefix_len} dev lan"));
                if let Some(mtu) = scenario.lan_mtu_b {
                    ip(&router, &format!("link set lan mtu {mtu}"));
                    ip(&peer, &format!("link set eth0 mtu {mtu}"));
                }
                ip(&router, "link set lan up");
                ip(&peer, &format!("addr add {lan_net} dev eth0"));
                ip(&peer, "link set eth0 up");
            }
            // The router knows only 203.0.113.0/24 and its LAN: nothing goes beyond.
            ip(&peer, &format!("route add default via {gateway}"));
            sh_in(&router, "echo 1 > /proc/sys/net/ipv4/ip_forward");
            let nft = ["ip", "netns", "exec", &router, "nft", "-f", "-"];
            run_with_stdin(&nft, &router_rules(scenario, other_wan));
        }
        lab
    }

    /// `peershare ARGS` inside namespace `ns`; stderr goes to `<dir>/<log>.stderr`.
    fn spawn(&self, ns: &str, args: &[&str], log: &str) -> Child {
        let stderr = std::fs::File::create(self.log_path(log)).unwrap();
        Command::new("ip")
            .args(["netns", "exec", ns, BIN])
            .args(args)
            .env("NO_COLOR", "1")
            // The SCTP association's path MTU probe reports its outcome at debug level.
            .env("PEERSHARE_LOG", "info,rtc_sctp::association=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start peershare {args:?} in {ns}: {e}"))
    }

    fn log_path(&self, log: &str) -> PathBuf {
        self.dir.path().join(format!("{log}.stderr"))
    }

    /// The stderr of every process so far, for failure messages: the last lines of each,
    /// with runs of the same message (timestamps aside) folded into one.
    fn logs(&self) -> String {
        let mut text = String::new();
        for log in ["signal", "send", "recv"] {
            let all = std::fs::read_to_string(self.log_path(log)).unwrap_or_default();
            let mut folded: Vec<(&str, &str, usize)> = Vec::new();
            for line in all.lines() {
                let message = without_timestamp(line);
                match folded.last_mut() {
                    Some((_, last, n)) if *last == message => *n += 1,
                    _ => folded.push((line, message, 1)),
                }
            }
            text.push_str(&format!("--- {log} stderr ---\n"));
            for (line, _, n) in &folded[folded.len().saturating_sub(40)..] {
                match n {
                    1 => text.push_str(&format!("{line}\n")),
                    n => text.push_str(&format!("{line}  (×{n})\n")),
                }
            }
        }
        text
    }
}

/// Delete the namespaces of earlier runs of this case whose test process died without
/// its `Drop` (SIGKILL, e.g. a CI timeout): `ps-TAG-PID-ROLE` with PID no longer alive.
fn remove_stale_namespaces(tag: &str) {
    let Ok(out) = StdCommand::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let prefix = format!("ps-{tag}-");
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let name = name.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = StdCommand::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A tracing line without its leading RFC 3339 timestamp.
fn without_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((first, rest))
            if first.contains('T')
                && first.contains('Z')
                && first.bytes().filter(u8::is_ascii_digit).count() >= 14 =>
        {
            rest
        }
        _ => line,
    }
}

/// The nftables ruleset of one router.
///
/// Inbound `ct state new` on the outside interface is dropped in both `input` and
/// `forward`: an unsolicited hole-punching packet that reached the router would otherwise
/// create a conntrack entry whose reply tuple clashes with the masquerade mapping of the
/// peer's own outbound flow, so the router would pick another port and break the hole.
fn router_rules(scenario: Scenario, other_wan: &str) -> String {
    let masquerade = match scenario.nat {
        Nat::EndpointIndependent => "masquerade",
        Nat::Symmetric => "masquerade random",
    };
    let block = if scenario.block_p2p_udp {
        format!(
            "oifname \"wan\" ip daddr {other_wan} meta l4proto udp drop\n    \
             iifname \"wan\" ip saddr {other_wan} meta l4proto udp drop"
        )
    } else {
        String::new()
    };
    format!(
        "table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
}}
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"wan\" ct state new drop
    {block}
  }}
}}
"
    )
}

// ---------------------------------------------------------------------------------------
// Process helpers

fn write_random(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data[..]);
    std::fs::write(path, &data).unwrap();
    data
}

async fn next_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    what: &str,
    lab: &Lab,
) -> Option<String> {
    match tokio::time::timeout(GUARD, lines.next_line()).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => panic!("reading {what}: {e}\n{}", lab.logs()),
        Err(_) => panic!("no {what} within {GUARD:?}\n{}", lab.logs()),
    }
}

/// Drain the rest of a child's stdout in the background, keeping each line with the time
/// it arrived.
fn collect(
    mut lines: Lines<BufReader<ChildStdout>>,
) -> tokio::task::JoinHandle<Vec<(Instant, String)>> {
    tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            v.push((Instant::now(), l));
        }
        v
    })
}

fn parse_json(lines: &[(Instant, String)]) -> Vec<(Instant, Value)> {
    lines
        .iter()
        .map(|(t, l)| {
            (
                *t,
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")),
            )
        })
        .collect()
}

fn connection_event<'a>(
    events: &'a [(Instant, Value)],
    side: &str,
    lab: &Lab,
) -> &'a (Instant, Value) {
    events
        .iter()
        .find(|(_, e)| e["event"] == "connection")
        .unwrap_or_else(|| panic!("no connection event from the {side}\n{}", lab.logs()))
}

async fn wait_exit(child: &mut Child, what: &str, lab: &Lab) -> std::process::ExitStatus {
    match tokio::time::timeout(GUARD, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => panic!("{what} still running after {GUARD:?}\n{}", lab.logs()),
    }
}

// ---------------------------------------------------------------------------------------
// The case

/// Send one random file from `a` to `b` through the lab; assert both sides report
/// `expected_path` and the file arrives identical.
/// The log line of a sender's SCTP association whose probe for 1400-byte packets was
/// answered (`docs/PROTOCOL.md`, "SCTP packet size").
const PROBE_ANSWERED: &str = "path MTU probe of 1400 bytes answered";

async fn transfer(
    test: &str,
    scenario: Scenario,
    expected_path: &str,
    probe_answered: Option<bool>,
) {
    if !lab_available(test) {
        return;
    }
    let lab = Lab::build(scenario);
    let inet = lab.ns("inet");

    let listen = format!("{SERVER_IP}:{SIGNAL_PORT}");
    let turn = format!("{SERVER_IP}:{TURN_PORT}");
    // No --turn-allow-peer on purpose: the peers' public (TEST-NET) addresses are not on
    // the relay's default deny list, and relayed pairs between two of its allocations use
    // the hand-over, so the lab runs the relay's peer policy as deployed.
    let mut signal = lab.spawn(
        &inet,
        &[
            "signal",
            "--listen",
            &listen,
            "--turn-listen",
            &turn,
            "--turn-public-ip",
            SERVER_IP,
        ],
        "signal",
    );
    let mut signal_lines = BufReader::new(signal.stdout.take().unwrap()).lines();
    let url = loop {
        let line = next_line(&mut signal_lines, "signaling URL", &lab)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "signal closed stdout before printing its URL\n{}",
                    lab.logs()
                )
            });
        if line.starts_with("ws://") {
            break line.trim().to_string();
        }
    };
    assert_eq!(url, format!("ws://{listen}"));
    let _signal_rest = collect(signal_lines);

    let file = lab.dir.path().join("payload.bin");
    let data = write_random(&file, PAYLOAD_BYTES, 0x5eed ^ scenario.tag.len() as u64);
    let out = lab.dir.path().join("out");

    let start = Instant::now();
    let mut send = lab.spawn(
        &lab.ns("a"),
        &["send", "--server", &url, "--json", file.to_str().unwrap()],
        "send",
    );
    let mut send_lines = BufReader::new(send.stdout.take().unwrap()).lines();
    let first = next_line(&mut send_lines, "ticket line", &lab)
        .await
        .unwrap_or_else(|| panic!("send closed stdout before the ticket\n{}", lab.logs()));
    let ticket_line: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(ticket_line["event"], "ticket", "{first}");
    let ticket = ticket_line["ticket"].as_str().unwrap().to_string();
    let send_rest = collect(send_lines);

    let recv_start = Instant::now();
    let mut recv = lab.spawn(
        &lab.ns("b"),
        &[
            "recv",
            "--yes",
            "--json",
            "--out",
            out.to_str().unwrap(),
            &ticket,
        ],
        "recv",
    );
    let recv_rest = collect(BufReader::new(recv.stdout.take().unwrap()).lines());
    let recv_status = wait_exit(&mut recv, "recv", &lab).await;
    let recv_done = recv_start.elapsed();
    assert!(
        recv_status.success(),
        "recv failed: {recv_status}\n{}",
        lab.logs()
    );
    let send_status = wait_exit(&mut send, "send", &lab).await;
    assert!(
        send_status.success(),
        "send failed: {send_status}\n{}",
        lab.logs()
    );
    let total = start.elapsed();

    let got = std::fs::read(out.join("payload.bin"))
        .unwrap_or_else(|e| panic!("no output file: {e}\n{}", lab.logs()));
    assert!(
        got == data,
        "received file differs ({} bytes vs {} sent)",
        got.len(),
        data.len()
    );

    let recv_events = parse_json(&recv_rest.await.unwrap());
    let send_events = parse_json(&send_rest.await.unwrap());
    let (recv_conn_at, recv_conn) = connection_event(&recv_events, "recipient", &lab);
    let (_, send_conn) = connection_event(&send_events, "sender", &lab);
    let completed_at = recv_events
        .iter()
        .find(|(_, e)| e["event"] == "download-completed")
        .map(|(t, _)| t.duration_since(recv_start))
        .unwrap_or_else(|| panic!("no download-completed event\n{}", lab.logs()));
    let summary = format!(
        "{test}: recipient path {} (local {}, remote {}), sender path {} (local {}, remote {}); \
         after recv start: connected {:.2?}, download completed {completed_at:.2?}, \
         recv exited {recv_done:.2?}; whole run {total:.2?}",
        recv_conn["path"],
        recv_conn["local"],
        recv_conn["remote"],
        send_conn["path"],
        send_conn["local"],
        send_conn["remote"],
        recv_conn_at.duration_since(recv_start),
    );
    note(&summary);
    let access = lab.emulator.as_ref().map(|e| e.stats()).unwrap_or_default();
    note(&format!(
        "{test}: sender's access link (emulator): uplink {}; downlink {}",
        access.a_to_b, access.b_to_a
    ));
    assert!(
        access.a_to_b.forwarded_bytes >= PAYLOAD_BYTES as u64,
        "the file did not cross the emulated access link: {}",
        access.a_to_b
    );
    for (side, conn) in [("recipient", recv_conn), ("sender", send_conn)] {
        assert!(
            conn["path"] == expected_path,
            "the {side} reported path {} where {expected_path:?} was expected \
             (null = the connection could not tell its selected candidate pair): {conn}\n{}",
            conn["path"],
            lab.logs()
        );
    }
    if let Some(answered) = probe_answered {
        let send_log = std::fs::read_to_string(lab.log_path("send")).unwrap_or_default();
        assert_eq!(
            send_log.contains(PROBE_ANSWERED),
            answered,
            "the sender's probe for 1400-byte packets: answered expected {answered}\n{}",
            lab.logs()
        );
        // The file crossed the sender's access link in packets of the size the probe
        // found: 1,465 bytes on the wire once answered, at most 1,256 before or without.
        let up = &access.a_to_b;
        let average = up.forwarded_bytes / up.forwarded.max(1);
        if answered {
            assert!(
                average > 1300,
                "average uplink packet {average} bytes: {up}"
            );
        } else {
            assert!(
                average < 1300,
                "average uplink packet {average} bytes: {up}"
            );
        }
    }
    drop(signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_endpoint_independent_nat_both_sides_connects_direct() {
    let scenario = Scenario {
        tag: "eim",
        nat: Nat::EndpointIndependent,
        block_p2p_udp: false,
        lan_mtu_b: None,
    };
    transfer(
        "netns_endpoint_independent_nat_both_sides_connects_direct",
        scenario,
        "direct",
        Some(true),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_symmetric_nat_both_sides_uses_relay() {
    let scenario = Scenario {
        tag: "sym",
        nat: Nat::Symmetric,
        block_p2p_udp: false,
        lan_mtu_b: None,
    };
    transfer(
        "netns_symmetric_nat_both_sides_uses_relay",
        scenario,
        "relay",
        // Through the relay either outcome is right: it depends on how the stack frames
        // the relayed datagrams, not on the probe.
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_udp_between_peers_blocked_uses_relay() {
    let scenario = Scenario {
        tag: "udpblk",
        nat: Nat::EndpointIndependent,
        block_p2p_udp: true,
        lan_mtu_b: None,
    };
    transfer(
        "netns_udp_between_peers_blocked_uses_relay",
        scenario,
        "relay",
        // Through the relay either outcome is right: it depends on how the stack frames
        // the relayed datagrams, not on the probe.
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_path_mtu_1300_probe_unanswered_small_packets_file_arrives_whole() {
    // The recipient's LAN carries 1300-byte IP packets: a 1400-byte SCTP probe (1,465
    // bytes on the wire) is dropped there, so the association stays at 1191 bytes.
    let scenario = Scenario {
        tag: "mtu",
        nat: Nat::EndpointIndependent,
        block_p2p_udp: false,
        lan_mtu_b: Some(1300),
    };
    transfer(
        "netns_path_mtu_1300_probe_unanswered_small_packets_file_arrives_whole",
        scenario,
        "direct",
        Some(false),
    )
    .await;
}
