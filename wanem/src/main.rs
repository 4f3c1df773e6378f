//! `peershare-wanem`: the WAN emulator between two network namespaces, and a TCP sender
//! and receiver to measure a path.
//!
//! ```text
//! ip netns add lab-a; ip netns add lab-b
//! peershare-wanem --ns-a lab-a --ns-b lab-b --delay 20ms --loss 0.1% --rate 100mbit --queue bdp
//! ip netns exec lab-b peershare-wanem tcp-recv --listen 198.51.100.2:5201
//! ip netns exec lab-a peershare-wanem tcp-send --connect 198.51.100.2:5201 --bytes 256m --cc bbr
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use peershare_wanem::spec::{self, DirectionSpec, PathSpec};
use peershare_wanem::{Config, Emulator, Endpoint, Threads, tcp};

/// A WAN emulator between two network namespaces (TUN devices, user-space forwarding).
/// Every path flag takes one value for both directions or `A2B/B2A` (e.g. `--delay
/// 20ms/5ms`).
#[derive(Debug, Parser)]
#[command(name = "peershare-wanem", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Accept TCP connections and report what each one moved.
    TcpRecv(RecvArgs),
    /// Send bytes over TCP with a chosen congestion control.
    TcpSend(SendArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Namespace of end A (`ip netns` name or an absolute path).
    #[arg(long, value_name = "NS")]
    ns_a: Option<String>,
    /// Namespace of end B.
    #[arg(long, value_name = "NS")]
    ns_b: Option<String>,
    /// TUN device name in A.
    #[arg(long, default_value = peershare_wanem::DEVICE)]
    dev_a: String,
    /// TUN device name in B.
    #[arg(long, default_value = peershare_wanem::DEVICE)]
    dev_b: String,
    /// Address of end A (B's point-to-point peer).
    #[arg(long, default_value_t = peershare_wanem::ADDR_A)]
    addr_a: Ipv4Addr,
    /// Address of end B.
    #[arg(long, default_value_t = peershare_wanem::ADDR_B)]
    addr_b: Ipv4Addr,
    /// MTU of both devices.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: u32,
    /// Transmit queue of both devices, packets (a TUN device drops what does not fit).
    #[arg(long, default_value_t = 10_000)]
    txqueuelen: u32,
    /// One-way delay (`20ms`).
    #[arg(long, default_value = "0")]
    delay: String,
    /// ± uniform jitter around the delay (never reorders).
    #[arg(long, default_value = "0")]
    jitter: String,
    /// Loss: a fraction (`0.01`) or a percentage (`1%`).
    #[arg(long, default_value = "0")]
    loss: String,
    /// Mean loss burst in packets; above 1 the loss is Gilbert–Elliott bursty.
    #[arg(long, default_value = "1")]
    burst: String,
    /// Fraction of packets held back by --reorder-delay so later ones overtake them.
    #[arg(long, default_value = "0")]
    reorder: String,
    /// Extra delay of a reordered packet.
    #[arg(long, default_value = "5ms")]
    reorder_delay: String,
    /// Bottleneck rate (`100mbit`, `1gbit`) or `none`.
    #[arg(long, default_value = "none")]
    rate: String,
    /// Bottleneck queue: bytes (`256k`) or `bdp` (rate × round-trip delay, at least 16
    /// full-size packets). Only with --rate.
    #[arg(long, default_value = "bdp")]
    queue: String,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One forwarding thread per direction, or one for both.
    #[arg(long, value_enum, default_value_t = ThreadsArg::PerDirection)]
    threads: ThreadsArg,
    /// No offload: one packet per MSS through the devices, no vnet header (slower; the
    /// link's decisions are per packet either way).
    #[arg(long)]
    no_offload: bool,
    /// Do not stop at end of input on stdin (stdin is watched only when it is a
    /// terminal, a pipe or a socket).
    #[arg(long)]
    no_stdin: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ThreadsArg {
    PerDirection,
    Shared,
}

#[derive(Debug, Args)]
struct RecvArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Connections to serve before exiting (0 = until killed).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Check every byte against the sender's pattern.
    #[arg(long)]
    verify: bool,
    /// Give up on a connection after this long (`30s`); report what arrived.
    #[arg(long, value_parser = spec::parse_duration)]
    timeout: Option<Duration>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Receiver address.
    #[arg(long, value_name = "ADDR:PORT")]
    connect: SocketAddr,
    /// Bytes to send (`256m`, `1g`).
    #[arg(long, default_value = "256m", value_parser = spec::parse_size)]
    bytes: u64,
    /// Congestion control (`cubic`, `bbr`, …; default: the system's).
    #[arg(long)]
    cc: Option<String>,
    /// Give up after this long (`30s`); report what was written.
    #[arg(long, value_parser = spec::parse_duration)]
    timeout: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::TcpRecv(a)) => tcp_recv(a),
        Some(Cmd::TcpSend(a)) => tcp_send(a),
        None => run(cli.run),
    }
}

fn path_spec(a: &RunArgs) -> anyhow::Result<PathSpec> {
    let e = anyhow::Error::msg;
    let (delay_ab, delay_ba) = spec::per_direction(&a.delay, spec::parse_duration).map_err(e)?;
    let (jit_ab, jit_ba) = spec::per_direction(&a.jitter, spec::parse_duration).map_err(e)?;
    let (loss_ab, loss_ba) = spec::per_direction(&a.loss, spec::parse_probability).map_err(e)?;
    let parse_burst = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|b| *b >= 1.0)
            .ok_or_else(|| format!("{s:?}: a mean burst is a number ≥ 1"))
    };
    let (burst_ab, burst_ba) = spec::per_direction(&a.burst, parse_burst).map_err(e)?;
    let (re_ab, re_ba) = spec::per_direction(&a.reorder, spec::parse_probability).map_err(e)?;
    let (red_ab, red_ba) =
        spec::per_direction(&a.reorder_delay, spec::parse_duration).map_err(e)?;
    let (rate_ab, rate_ba) = spec::per_direction(&a.rate, spec::parse_rate).map_err(e)?;
    let (q_ab, q_ba) = spec::per_direction(&a.queue, spec::parse_queue).map_err(e)?;
    Ok(PathSpec {
        a_to_b: DirectionSpec {
            delay: delay_ab,
            jitter: jit_ab,
            loss: loss_ab,
            burst: burst_ab,
            reorder: re_ab,
            reorder_delay: red_ab,
            rate: rate_ab,
            queue: q_ab,
        },
        b_to_a: DirectionSpec {
            delay: delay_ba,
            jitter: jit_ba,
            loss: loss_ba,
            burst: burst_ba,
            reorder: re_ba,
            reorder_delay: red_ba,
            rate: rate_ba,
            queue: q_ba,
        },
    })
}

/// SIGINT and SIGTERM, blocked in every thread and taken with sigtimedwait.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Whether stdin is something whose end means "stop": a terminal, a pipe or a socket
/// (not /dev/null or a file, as for a command started in the background).
fn watch_stdin() -> bool {
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: isatty and fstat on our stdin with a valid out-pointer.
    unsafe {
        if libc::isatty(fd) == 1 {
            return true;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return false;
        }
        matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let (Some(ns_a), Some(ns_b)) = (a.ns_a.clone(), a.ns_b.clone()) else {
        bail!("--ns-a and --ns-b are required (or a subcommand: tcp-recv, tcp-send)");
    };
    let path = path_spec(&a)?;
    let (a_to_b, b_to_a) = path.link_configs();
    let config = Config {
        a: Endpoint {
            netns: ns_a,
            device: a.dev_a.clone(),
            addr: a.addr_a,
        },
        b: Endpoint {
            netns: ns_b,
            device: a.dev_b.clone(),
            addr: a.addr_b,
        },
        mtu: a.mtu,
        txqueuelen: a.txqueuelen,
        a_to_b,
        b_to_a,
        seed: a.seed,
        threads: match a.threads {
            ThreadsArg::PerDirection => Threads::PerDirection,
            ThreadsArg::Shared => Threads::Shared,
        },
        offload: !a.no_offload,
        nice: Some(-10),
    };

    let signals = stop_signals();
    // Blocked before any thread exists, so every thread inherits the mask and the
    // signals wait for sigtimedwait below.
    // SAFETY: valid set pointer; no old mask wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    if !a.no_stdin && watch_stdin() {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
            // SAFETY: plain syscall; wakes the main thread's sigtimedwait.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        });
    }

    let emulator = Emulator::start(config.clone()).context("starting the emulator")?;
    eprintln!(
        "a->b: {}\nb->a: {}",
        spec::describe(&config.a_to_b),
        spec::describe(&config.b_to_a)
    );
    println!(
        "ready a={}/{}/{} b={}/{}/{}",
        config.a.netns,
        config.a.device,
        config.a.addr,
        config.b.netns,
        config.b.device,
        config.b.addr
    );
    loop {
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout pointers; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&signals, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            break;
        }
        if !emulator.is_running() {
            eprintln!("the TUN devices are gone (a namespace was deleted?); exiting");
            break;
        }
    }
    let stats = emulator.stop();
    println!("a->b {}", stats.a_to_b);
    println!("b->a {}", stats.b_to_a);
    Ok(())
}

fn tcp_recv(a: RecvArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(a.listen).with_context(|| format!("bind {}", a.listen))?;
    println!("listening {}", listener.local_addr()?);
    let mut served = 0;
    while a.count == 0 || served < a.count {
        let (mut conn, peer) = listener.accept()?;
        let deadline = a.timeout.map(|t| Instant::now() + t);
        let t = tcp::receive(&mut conn, None, a.verify, deadline)?;
        println!(
            "received {} bytes from {peer} in {:.3} s: {:.1} MiB/s ({:.3} Gbit/s){}{}",
            t.bytes,
            t.elapsed.as_secs_f64(),
            t.mib_per_sec(),
            t.gbit_per_sec(),
            if a.verify { ", verified" } else { "" },
            if t.complete { "" } else { ", TIMEOUT" },
        );
        served += 1;
    }
    Ok(())
}

fn tcp_send(a: SendArgs) -> anyhow::Result<()> {
    let mut s = tcp::connect(a.connect, a.cc.as_deref(), Duration::from_secs(10))
        .with_context(|| format!("connect {}", a.connect))?;
    let cc = tcp::congestion(&s).unwrap_or_else(|_| "?".into());
    let deadline = a.timeout.map(|t| Instant::now() + t);
    let t = tcp::send(&mut s, a.bytes, deadline)?;
    println!(
        "sent {} bytes to {} in {:.3} s: {:.1} MiB/s ({:.3} Gbit/s), congestion control {cc}{}",
        t.bytes,
        a.connect,
        t.elapsed.as_secs_f64(),
        t.mib_per_sec(),
        t.gbit_per_sec(),
        if t.complete { "" } else { ", TIMEOUT" },
    );
    Ok(())
}
