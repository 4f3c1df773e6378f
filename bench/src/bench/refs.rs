//! `--refs [DIR]`: peershare next to sendme and magic-wormhole, disk to disk, in one
//! interleaved run (docs/PERFORMANCE.md, "Compared with other tools").
//!
//! Every tool runs as its own command-line program, sender first; the clock runs from the
//! start of the receiving program to its exit (connection setup, transfer, the tool's own
//! verification and its final write included), and the received file is then checked
//! against the source's BLAKE3. Rounds are round-robin: round 1 runs each tool once, then
//! round 2, and so on, so that load coming and going on a shared machine hits every tool
//! alike. Peak RSS per side is each process's `ru_maxrss` from `wait4`.
//!
//! - peershare (the binary next to this one) and sendme (crates.io): driven as
//!   `programs.rs` says (`peershare send --embedded --direct-only …`, `sendme send FILE
//!   --relay disabled …`).
//! - magic-wormhole (PyPI) with its own mailbox server and transit relay
//!   (magic-wormhole-mailbox-server, magic-wormhole-transit-relay) run here on IP:
//!   `wormhole --relay-url ws://IP:P/v1 --transit-helper tcp:IP:Q send --code C FILE` and
//!   `… receive --accept-file --output-file F C`.
//!
//! `tools/install_refs.sh DIR` installs sendme and magic-wormhole into DIR (default
//! `~/.cache/peershare-refs`); a tool that is missing there is skipped with a line saying
//! so. With `--lan` the same comparison also runs between two network namespaces joined
//! by a veth pair (192.0.2.1/24 ↔ 192.0.2.2/24, MTU 1500; root only): sender (and the
//! servers) in one, recipient in the other.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::programs::{self, Net, Proc, TOOL_TIMEOUT, Transfer, file_name};
use super::{MIB, list, median, write_random_file};

/// Where the reference tools are installed by default.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERSHARE_REFS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/peershare-refs")
}

/// The tools compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Peershare,
    Sendme,
    Wormhole,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Peershare => "peershare",
            Tool::Sendme => "sendme",
            Tool::Wormhole => "magic-wormhole",
        }
    }
}

/// The programs found.
struct Programs {
    peershare: PathBuf,
    sendme: Option<PathBuf>,
    /// `wormhole` and `twist` (the servers) of the same venv.
    wormhole: Option<(PathBuf, PathBuf)>,
}

/// Two namespaces joined by a veth pair, removed on drop.
struct LanPair {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip(8)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl LanPair {
    fn create() -> anyhow::Result<Self> {
        let id = std::process::id() % 100_000;
        let pair = Self {
            a: format!("psref-a-{id}"),
            b: format!("psref-b-{id}"),
        };
        let (va, vb) = (format!("psra{id}"), format!("psrb{id}"));
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &pair.a])?;
        ip(&["link", "set", &vb, "netns", &pair.b])?;
        for (ns, dev, addr) in [
            (&pair.a, &va, "192.0.2.1/24"),
            (&pair.b, &vb, "192.0.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "mtu", "1500", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    fn net(&self) -> Net {
        Net {
            label: "LAN: veth between two namespaces, MTU 1500",
            send_ns: Some(self.a.clone()),
            send_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            recv_ns: Some(self.b.clone()),
            recv_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        }
    }
}

impl Drop for LanPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// One transfer of one tool.
struct Run {
    mib_per_s: f64,
    sender_rss: f64,
    recipient_rss: f64,
}

/// The file `name` under `dir` must hash to `want`; removes it.
fn verify(dir: &Path, name: &str, want: &str) -> anyhow::Result<()> {
    let got = dir.join(name);
    let hash = peershare::transfer::hash_file(&got)
        .with_context(|| format!("hashing the received {}", got.display()))?;
    anyhow::ensure!(
        hash.to_hex().as_str() == want,
        "{} differs from the source",
        got.display()
    );
    std::fs::remove_file(&got)?;
    Ok(())
}

fn result(size_mib: u64, t: Transfer) -> Run {
    Run {
        mib_per_s: size_mib as f64 / t.secs,
        sender_rss: t.sender_rss_mib,
        recipient_rss: t.recipient_rss_mib,
    }
}

fn run_peershare(
    p: &Programs,
    net: &Net,
    src: &Path,
    hash: &str,
    size_mib: u64,
    work: &Path,
) -> anyhow::Result<Run> {
    let out = work.join("out-peershare");
    let t = programs::peershare(&p.peershare, net, src, &out, work, TOOL_TIMEOUT)?;
    verify(&out, &file_name(src), hash)?;
    Ok(result(size_mib, t))
}

fn run_sendme(
    sendme: &Path,
    net: &Net,
    src: &Path,
    hash: &str,
    size_mib: u64,
    work: &Path,
) -> anyhow::Result<Run> {
    let send_dir = work.join("sendme-send");
    let recv_dir = work.join("sendme-recv");
    let t = programs::sendme(sendme, net, src, &send_dir, &recv_dir)?;
    verify(&recv_dir, &file_name(src), hash)?;
    let _ = std::fs::remove_dir_all(&send_dir);
    let _ = std::fs::remove_dir_all(&recv_dir);
    Ok(result(size_mib, t))
}

/// The local mailbox server and transit relay of a wormhole comparison.
struct WormholeServers {
    procs: Vec<Proc>,
    relay_url: String,
    transit: String,
}

impl WormholeServers {
    fn start(twist: &Path, net: &Net, work: &Path) -> anyhow::Result<Self> {
        let dir = work.join("wormhole-servers");
        std::fs::create_dir_all(&dir)?;
        let ip = net.send_ip;
        let (mailbox_port, transit_port) = (free_port(), free_port());
        let mut procs = Vec::new();
        let mut mailbox = Net::command(&net.send_ns, twist);
        mailbox
            .arg("wormhole-mailbox")
            .arg(format!("--port=tcp:{mailbox_port}:interface={ip}"));
        procs.push(Proc::spawn(mailbox, &dir)?);
        let mut transit = Net::command(&net.send_ns, twist);
        transit
            .arg("transitrelay")
            .arg(format!("--port=tcp:{transit_port}:interface={ip}"));
        procs.push(Proc::spawn(transit, &dir)?);
        let servers = Self {
            procs,
            relay_url: format!("ws://{ip}:{mailbox_port}/v1"),
            transit: format!("tcp:{ip}:{transit_port}"),
        };
        for port in [mailbox_port, transit_port] {
            wait_listening(net, SocketAddr::new(ip, port))?;
        }
        Ok(servers)
    }
}

impl Drop for WormholeServers {
    fn drop(&mut self) {
        for p in self.procs.drain(..) {
            p.signal(libc::SIGTERM);
            p.reap(Duration::from_secs(5));
        }
    }
}

/// A port that was free a moment ago (the servers bind it themselves).
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// Wait until `addr` accepts TCP connections (from inside the sender's namespace).
fn wait_listening(net: &Net, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let up = match &net.send_ns {
            None => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port()))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        };
        if up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("wormhole server on {addr} did not come up")
}

#[allow(clippy::too_many_arguments)]
fn run_wormhole(
    wormhole: &Path,
    servers: &WormholeServers,
    net: &Net,
    src: &Path,
    hash: &str,
    size_mib: u64,
    work: &Path,
    code: &str,
) -> anyhow::Result<Run> {
    let out = work.join("out-wormhole");
    std::fs::create_dir_all(&out)?;
    let common = |c: &mut Command| {
        c.args(["--relay-url", &servers.relay_url])
            .args(["--transit-helper", &servers.transit]);
    };
    let mut send = Net::command(&net.send_ns, wormhole);
    common(&mut send);
    send.args(["send", "--hide-progress", "--no-qr", "--code", code])
        .arg(src);
    let sender = Proc::spawn(send, work)?;
    sender.wait_line("wormhole code", |l| {
        l.contains("ormhole code is").then_some(())
    })?;
    let mut recv = Net::command(&net.recv_ns, wormhole);
    common(&mut recv);
    let name = file_name(src);
    recv.args([
        "receive",
        "--accept-file",
        "--hide-progress",
        "--output-file",
    ])
    .arg(out.join(&name))
    .arg(code);
    let start = Instant::now();
    let recipient = Proc::spawn(recv, work)?;
    let r = recipient.reap(TOOL_TIMEOUT);
    let s = sender.reap(Duration::from_secs(30));
    anyhow::ensure!(r.ok, "wormhole receive failed");
    verify(&out, &name, hash)?;
    Ok(result(size_mib, Transfer::timed(start, &r, &s)))
}

/// What the run measured, per (path, size, tool).
type Results = BTreeMap<(usize, u64, Tool), Vec<Run>>;

/// Run the comparison; returns the markdown it prints.
pub fn run(
    dir: &Path,
    sizes: &[u64],
    rounds: u64,
    lan: bool,
    work: &Path,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let peershare = exe.with_file_name("peershare");
    let sendme = dir.join("bin/sendme");
    let wormhole = dir.join("venv/bin/wormhole");
    let twist = dir.join("venv/bin/twist");
    let programs = Programs {
        peershare: peershare.clone(),
        sendme: sendme.is_file().then_some(sendme.clone()),
        wormhole: (wormhole.is_file() && twist.is_file()).then_some((wormhole.clone(), twist)),
    };
    line(format!("## peershare-bench --refs {}", dir.display()));
    line(String::new());
    let mut skipped = Vec::new();
    if !peershare.is_file() {
        skipped.push(format!(
            "peershare: {} not found (cargo build --release -p peershare)",
            peershare.display()
        ));
    }
    if programs.sendme.is_none() {
        skipped.push(format!(
            "sendme: {} not found (tools/install_refs.sh {})",
            sendme.display(),
            dir.display()
        ));
    }
    if programs.wormhole.is_none() {
        skipped.push(format!(
            "magic-wormhole: {} or its servers not found (tools/install_refs.sh {})",
            wormhole.display(),
            dir.display()
        ));
    }
    for s in &skipped {
        line(format!("- skipped: {s}"));
    }
    if !peershare.is_file() || (programs.sendme.is_none() && programs.wormhole.is_none()) {
        line("- reference rows skipped: nothing to compare".into());
        return Ok(out);
    }
    let mut tools = vec![Tool::Peershare];
    if programs.sendme.is_some() {
        tools.push(Tool::Sendme);
    }
    if programs.wormhole.is_some() {
        tools.push(Tool::Wormhole);
    }

    let lan_pair = if lan {
        super::phase("--lan: two network namespaces joined by a veth pair");
        Some(LanPair::create().context("creating the namespaces for --lan (needs root)")?)
    } else {
        None
    };
    let mut nets = vec![Net::loopback()];
    if let Some(pair) = &lan_pair {
        nets.push(pair.net());
    }

    let mut results: Results = BTreeMap::new();
    let mut failures = Vec::new();
    for &size in sizes {
        super::phase(&format!("refs: writing and hashing a {size} MiB file"));
        let src = work.join(format!("refs-{size}.bin"));
        write_random_file(&src, size * MIB)?;
        let hash = peershare::transfer::hash_file(&src)?.to_hex().to_string();
        for (n, net) in nets.iter().enumerate() {
            let servers = match &programs.wormhole {
                Some((_, twist)) => Some(WormholeServers::start(twist, net, work)?),
                None => None,
            };
            for round in 1..=rounds {
                for &tool in &tools {
                    super::phase(&format!(
                        "refs {}: {size} MiB, round {round}/{rounds}, {}",
                        net.label,
                        tool.name()
                    ));
                    let run = match tool {
                        Tool::Peershare => run_peershare(&programs, net, &src, &hash, size, work),
                        Tool::Sendme => match &programs.sendme {
                            Some(s) => run_sendme(s, net, &src, &hash, size, work),
                            None => continue,
                        },
                        Tool::Wormhole => match (&programs.wormhole, &servers) {
                            (Some((w, _)), Some(servers)) => {
                                let code = format!("{}-peershare-bench", 100 + round);
                                run_wormhole(w, servers, net, &src, &hash, size, work, &code)
                            }
                            _ => continue,
                        },
                    };
                    match run {
                        Ok(r) => results.entry((n, size, tool)).or_default().push(r),
                        Err(e) => {
                            eprintln!("[peershare-bench] {} failed: {e:#}", tool.name());
                            failures.push(format!(
                                "{}, {size} MiB, round {round}, {}: {e:#}",
                                net.label,
                                tool.name()
                            ));
                        }
                    }
                }
            }
        }
        std::fs::remove_file(&src)?;
    }
    drop(lan_pair);

    line(format!(
        "- {rounds} rounds, round-robin over the tools; disk to disk; clock: the receiving program's start to its exit; every received file BLAKE3-checked against the source; peak RSS: ru_maxrss of each process (wait4)"
    ));
    line(String::new());
    line("| path | size | tool | MiB/s (median) | every run | peak RSS sender | peak RSS recipient |".into());
    line("|---|---|---|---|---|---|---|".into());
    for ((n, size, tool), runs) in &results {
        let rates: Vec<f64> = runs.iter().map(|r| r.mib_per_s).collect();
        let max = |f: fn(&Run) -> f64| runs.iter().map(f).fold(f64::NAN, f64::max);
        line(format!(
            "| {} | {size} MiB | {} | {:.1} | {} | {:.1} MiB | {:.1} MiB |",
            nets[*n].label,
            tool.name(),
            median(rates.clone()),
            list(&rates, 0),
            max(|r| r.sender_rss),
            max(|r| r.recipient_rss),
        ));
    }
    line(String::new());
    line("| path | size | peershare / sendme | peershare / magic-wormhole |".into());
    line("|---|---|---|---|".into());
    let rate = |n: usize, size: u64, tool: Tool| {
        results
            .get(&(n, size, tool))
            .map(|runs| median(runs.iter().map(|r| r.mib_per_s).collect()))
    };
    let ratio = |n: usize, size: u64, other: Tool| match (
        rate(n, size, Tool::Peershare),
        rate(n, size, other),
    ) {
        (Some(p), Some(o)) => Some(p / o),
        _ => None,
    };
    let show = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"));
    for (n, net) in nets.iter().enumerate() {
        for &size in sizes {
            line(format!(
                "| {} | {size} MiB | {} | {} |",
                net.label,
                show(ratio(n, size, Tool::Sendme)),
                show(ratio(n, size, Tool::Wormhole))
            ));
        }
    }
    line(String::new());
    line("Target (loopback): peershare ≥ 1.2× sendme at 256 MiB and 1 GiB:".into());
    for &size in sizes.iter().filter(|s| [256, 1024].contains(*s)) {
        let r = ratio(0, size, Tool::Sendme);
        line(format!(
            "- {size} MiB: {}: {}",
            show(r),
            r.map_or("n/a (sendme not measured)", |r| super::verdict(r >= 1.2))
        ));
    }
    for f in &failures {
        line(format!("- FAILED: {f}"));
    }
    Ok(out)
}
