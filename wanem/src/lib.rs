//! # peershare-wanem
//!
//! A WAN emulator on the real kernel path, for kernels without `tc netem`: a user-space
//! forwarder between two network namespaces. It opens one TUN device inside each
//! namespace (created there, so nothing appears anywhere else), gives them a
//! point-to-point address pair (198.51.100.1 in A, 198.51.100.2 in B by default), and
//! forwards IPv4 packets A → B and B → A, each direction through its own
//! [`peershare_linkmodel::Link`]: the very model of peershare's in-process simulator
//! (one-way delay, jitter, random or Gilbert–Elliott bursty loss, reordering, a
//! bottleneck rate with a drop-tail queue). Everything between the namespaces — TCP,
//! UDP, WebRTC, ICMP — crosses the real kernel stacks on both ends.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use peershare_wanem::{Config, Emulator, LinkConfig, Loss};
//!
//! // Two namespaces made with `ip netns add` (or peershare_wanem::netns::Netns).
//! let mut cfg = Config::new("lab-a", "lab-b");
//! let link = LinkConfig::default()
//!     .with_delay(Duration::from_millis(20), Duration::ZERO)
//!     .with_loss(Loss::random(0.001))
//!     .with_rate(12_500_000, 500_000); // 100 Mbit/s, a 40 ms BDP of queue
//! cfg.a_to_b = link;
//! cfg.b_to_a = link;
//! let emulator = Emulator::start(cfg)?; // 198.51.100.1 (lab-a) ↔ 198.51.100.2 (lab-b)
//! // … traffic between the namespaces …
//! let stats = emulator.stop(); // or drop it: the TUN devices vanish with it
//! println!("a->b {}", stats.a_to_b);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`spec`]: the command line's units and per-direction values → [`LinkConfig`] (pure).
//! - [`tun`]: TUN devices created and configured inside a namespace (ioctl; `ip link del`
//!   only for a device a copy of its descriptor kept alive).
//! - [`forward`]: the forwarding loop, its delay line and counters.
//! - [`gso`]: TCP super-packets through the link, cut per the link's per-segment verdicts.
//! - [`netns`]: entering, creating and deleting namespaces (tests and the benchmark).
//! - [`tcp`]: a TCP sender and receiver with a chosen congestion control
//!   (`TCP_CONGESTION`), the reference the WAN benchmark compares peershare with.
//! - `main.rs`: the `peershare-wanem` binary.
//!
//! # Throughput
//! One thread per direction by default ([`Threads`]); each pass it writes what is due,
//! sleeps in `ppoll` until the next packet is due or one arrives, and reads up to
//! [`forward::READ_BURST`] packets. A packet due at once is written straight from the
//! read buffer. The measured ceiling is in `docs/PERFORMANCE.md` ("WAN paths").

pub mod forward;
pub mod gso;
pub mod netns;
pub mod spec;
pub mod tcp;
pub mod tun;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use forward::DirectionStats;
pub use peershare_linkmodel::{Link, LinkConfig, Loss};

use forward::{Counters, Direction};

/// One end of the emulated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Network namespace (a name under /run/netns, or an absolute path).
    pub netns: String,
    /// TUN device name inside it.
    pub device: String,
    /// The address of this end (the other end's is its point-to-point peer).
    pub addr: Ipv4Addr,
}

/// How the two directions share threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// One thread per direction.
    #[default]
    PerDirection,
    /// One thread for both directions.
    Shared,
}

/// What [`Emulator::start`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// End A.
    pub a: Endpoint,
    /// End B.
    pub b: Endpoint,
    /// MTU of both devices.
    pub mtu: u32,
    /// Transmit queue length of both devices, packets: what a sending stack can hand
    /// over while the emulator is not scheduled. Deep (10000) by default, as a NIC's
    /// ring and qdisc together, because a TUN device drops what does not fit instead of
    /// pushing back.
    pub txqueuelen: u32,
    /// The A → B direction.
    pub a_to_b: LinkConfig,
    /// The B → A direction.
    pub b_to_a: LinkConfig,
    /// Seed of both directions' random draws (each direction derives its own stream).
    pub seed: u64,
    /// Thread layout.
    pub threads: Threads,
    /// Nice value of the forwarding threads (`None`: inherit). A link does not wait for
    /// CPU, so by default they run at -10, ahead of the endpoints they carry traffic for.
    pub nice: Option<i32>,
    /// TCP segmentation and checksum offload through the devices ([`gso`]): the sending
    /// stack hands over 64 KiB super-packets, the link still decides per segment.
    pub offload: bool,
}

/// The default address of end A.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The default address of end B.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The default device name in both namespaces.
pub const DEVICE: &str = "wanem0";

impl Config {
    /// Namespaces `ns_a` and `ns_b`, devices `wanem0`, [`ADDR_A`] ↔ [`ADDR_B`], MTU 1500,
    /// perfect links both ways.
    pub fn new(ns_a: &str, ns_b: &str) -> Self {
        Self {
            a: Endpoint {
                netns: ns_a.to_string(),
                device: DEVICE.to_string(),
                addr: ADDR_A,
            },
            b: Endpoint {
                netns: ns_b.to_string(),
                device: DEVICE.to_string(),
                addr: ADDR_B,
            },
            mtu: 1500,
            txqueuelen: 10_000,
            a_to_b: LinkConfig::default(),
            b_to_a: LinkConfig::default(),
            seed: 1,
            threads: Threads::default(),
            nice: Some(-10),
            offload: true,
        }
    }

    /// The same link both ways.
    pub fn with_link(mut self, link: LinkConfig) -> Self {
        self.a_to_b = link;
        self.b_to_a = link;
        self
    }
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// A → B.
    pub a_to_b: DirectionStats,
    /// B → A.
    pub b_to_a: DirectionStats,
}

impl Stats {
    /// The difference `self − before` in both directions.
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            a_to_b: self.a_to_b.since(&before.a_to_b),
            b_to_a: self.b_to_a.since(&before.b_to_a),
        }
    }
}

/// A running emulator. Dropping it (or [`Emulator::stop`]) stops the threads and removes
/// the TUN devices and their addresses.
pub struct Emulator {
    config: Config,
    stop: OwnedFd,
    threads: Vec<JoinHandle<()>>,
    counters: [Arc<Counters>; 2],
    // Closed after the threads have ended; `None` once the devices are removed.
    tuns: Option<[OwnedFd; 2]>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Emulator {
    /// Create both devices, configure them and start forwarding. Needs root (or
    /// CAP_NET_ADMIN and CAP_SYS_ADMIN for `setns`) and both namespaces.
    pub fn start(config: Config) -> io::Result<Emulator> {
        let spec = |this: &Endpoint, other: &Endpoint| tun::TunSpec {
            netns: this.netns.clone(),
            device: this.device.clone(),
            local: this.addr,
            peer: other.addr,
            mtu: config.mtu,
            txqueuelen: config.txqueuelen,
            offload: config.offload,
        };
        let tun_a = tun::create(&spec(&config.a, &config.b))?;
        let tun_b = tun::create(&spec(&config.b, &config.a))?;
        // SAFETY: plain syscall.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `stop` is a fresh descriptor owned by nothing else.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let a_to_b = Direction::new(
            tun_a.as_raw_fd(),
            tun_b.as_raw_fd(),
            config.a_to_b,
            Link::seeded(peershare_linkmodel::socket_seed(config.seed, 0)),
            counters[0].clone(),
            config.offload,
        );
        let b_to_a = Direction::new(
            tun_b.as_raw_fd(),
            tun_a.as_raw_fd(),
            config.b_to_a,
            Link::seeded(peershare_linkmodel::socket_seed(config.seed, 1)),
            counters[1].clone(),
            config.offload,
        );
        let stop_fd = stop.as_raw_fd();
        let nice = config.nice;
        let spawn = |name: &str, dirs: Vec<Direction>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    if let Some(n) = nice {
                        // SAFETY: plain syscalls on this thread (who = its tid). A failure
                        // (no privilege) leaves the inherited priority.
                        unsafe {
                            let tid = libc::gettid() as libc::id_t;
                            libc::setpriority(libc::PRIO_PROCESS, tid, n);
                        }
                    }
                    forward::run(dirs, stop_fd)
                })
        };
        let threads = match config.threads {
            Threads::PerDirection => vec![
                spawn("wanem a->b", vec![a_to_b])?,
                spawn("wanem b->a", vec![b_to_a])?,
            ],
            Threads::Shared => vec![spawn("wanem", vec![a_to_b, b_to_a])?],
        };
        Ok(Emulator {
            config,
            stop,
            threads,
            counters,
            tuns: Some([tun_a, tun_b]),
        })
    }

    /// What it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters so far, with the devices' own drops (read inside the namespaces).
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            a_to_b: self.counters[0].snapshot(),
            b_to_a: self.counters[1].snapshot(),
        };
        stats.a_to_b.device_drops = device_tx_drops(&self.config.a).unwrap_or(0);
        stats.b_to_a.device_drops = device_tx_drops(&self.config.b).unwrap_or(0);
        stats
    }

    /// Whether the forwarding threads still run (they end when the devices vanish, e.g.
    /// because a namespace was deleted).
    pub fn is_running(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }

    /// Stop forwarding, remove the devices, and return the final counters.
    pub fn stop(mut self) -> Stats {
        self.stop_threads();
        // Before the devices go: their transmit drops are part of the counters.
        let stats = self.stats();
        self.remove_devices();
        stats
    }

    fn shutdown(&mut self) {
        self.stop_threads();
        self.remove_devices();
    }

    fn stop_threads(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Close the devices' descriptors, which removes a TUN device that is not persistent,
    /// then remove by name what is left: a process that another thread of this program
    /// was starting at that moment holds copies of the descriptors until it runs its
    /// program (they are close-on-exec), and the device lives as long as one copy does.
    fn remove_devices(&mut self) {
        if self.tuns.take().is_none() {
            return;
        }
        for end in [&self.config.a, &self.config.b] {
            // An error means the namespace is gone (and the device with it) or `ip` cannot
            // run; a drop has no one to report it to.
            let _ = tun::remove(&end.netns, &end.device);
        }
    }
}

/// The transmit drops of `end`'s device, from `/proc/thread-self/net/dev` read on a
/// thread inside its namespace.
fn device_tx_drops(end: &Endpoint) -> io::Result<u64> {
    let dev = netns::run_in(&end.netns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })?;
    parse_tx_drops(&dev, &end.device)
        .ok_or_else(|| io::Error::other(format!("{} not in /proc/net/dev", end.device)))
}

/// The `tx drop` column of `device` in a `/proc/net/dev` text.
fn parse_tx_drops(text: &str, device: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != device {
            return None;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast, tx: bytes packets
        // errs drop …
        rest.split_whitespace().nth(11)?.parse().ok()
    })
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tx_drops_reads_the_device_row() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
wanem0:  240811    2415    0    0    0     0          0         0 92178537   75599    0  239    0     0       0          0
";
        assert_eq!(parse_tx_drops(text, "wanem0"), Some(239));
        assert_eq!(parse_tx_drops(text, "lo"), Some(0));
        assert_eq!(parse_tx_drops(text, "eth9"), None);
    }
}
