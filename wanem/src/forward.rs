//! The forwarding loop: read packets from one TUN device, give each to its direction's
//! [`Link`], and write it to the other device when the link says it is due.
//!
//! A thread serves one or both directions ([`crate::Threads`]). Each pass it writes
//! every packet that is due, sleeps in `ppoll` until the next one is due or a packet
//! arrives (nanosecond timeout, no per-packet sleeps), then reads what arrived, up to
//! [`READ_BURST`] packets per direction so that due packets are never starved. A packet
//! due at once with nothing held before it is written straight from the read buffer;
//! everything else waits in the direction's [`DelayLine`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peershare_linkmodel::{DropReason, Link, LinkConfig, Verdict};

/// Packets read from one device before the loop writes what is due.
pub const READ_BURST: usize = 64;
/// Bytes a direction holds in its delay line at most; beyond, packets are dropped
/// (`held_drops`). A safety net against unbounded memory: a 1 Gbit/s, 1 s delay line
/// holds 125 MB.
pub const MAX_HELD_BYTES: usize = 512 << 20;
/// Largest packet a TUN device hands over (IPv4's limit).
const MAX_PACKET: usize = 65_536;
/// Packet buffers kept for reuse per direction.
const POOL: usize = 8192;

/// What one direction did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets read from the input device.
    pub received: u64,
    /// Packets written to the output device.
    pub forwarded: u64,
    /// Bytes written to the output device.
    pub forwarded_bytes: u64,
    /// Packets lost by the loss model (random or bursty).
    pub lost: u64,
    /// Packets dropped because the bottleneck queue was full (drop-tail).
    pub overflow: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
    /// Packets dropped because the delay line held [`MAX_HELD_BYTES`].
    pub held_drops: u64,
    /// Writes to the output device that failed (the packet is gone).
    pub write_errors: u64,
}

impl DirectionStats {
    /// Every packet the emulator dropped on purpose: lost or overflowed.
    pub fn dropped(&self) -> u64 {
        self.lost + self.overflow + self.held_drops
    }

    /// The difference `self − before` (counters of one interval).
    pub fn since(&self, before: &DirectionStats) -> DirectionStats {
        DirectionStats {
            received: self.received - before.received,
            forwarded: self.forwarded - before.forwarded,
            forwarded_bytes: self.forwarded_bytes - before.forwarded_bytes,
            lost: self.lost - before.lost,
            overflow: self.overflow - before.overflow,
            reordered: self.reordered - before.reordered,
            held_drops: self.held_drops - before.held_drops,
            write_errors: self.write_errors - before.write_errors,
        }
    }
}

impl std::fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} forwarded={} forwarded_bytes={} lost={} overflow={} reordered={} \
             held_drops={} write_errors={}",
            self.received,
            self.forwarded,
            self.forwarded_bytes,
            self.lost,
            self.overflow,
            self.reordered,
            self.held_drops,
            self.write_errors
        )
    }
}

/// The live counters of one direction, written by its thread only.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
    reordered: AtomicU64,
    held_drops: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        // One writer: a load and a store, no locked instruction per packet.
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> DirectionStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received: r(&self.received),
            forwarded: r(&self.forwarded),
            forwarded_bytes: r(&self.forwarded_bytes),
            lost: r(&self.lost),
            overflow: r(&self.overflow),
            reordered: r(&self.reordered),
            held_drops: r(&self.held_drops),
            write_errors: r(&self.write_errors),
        }
    }
}

/// A packet waiting for its delivery time.
#[derive(Debug)]
struct Held {
    at: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The packets of one direction that are not due yet. In-order packets leave the link
/// with non-decreasing times ([`Link`] never lets jitter reorder), so they wait in a
/// FIFO; packets picked for reordering wait in a heap. Both release in time order, ties
/// in arrival order.
#[derive(Debug, Default)]
pub struct DelayLine {
    fifo: VecDeque<Held>,
    late: BinaryHeap<Reverse<Held>>,
    seq: u64,
    bytes: usize,
}

impl DelayLine {
    /// Hold `packet` until `at`.
    pub fn push(&mut self, at: Instant, reordered: bool, packet: Vec<u8>) {
        self.seq += 1;
        self.bytes += packet.len();
        let held = Held {
            at,
            seq: self.seq,
            packet,
        };
        if reordered {
            self.late.push(Reverse(held));
        } else {
            debug_assert!(self.fifo.back().is_none_or(|b| b.at <= at));
            self.fifo.push_back(held);
        }
    }

    /// The earliest delivery time held.
    pub fn next_due(&self) -> Option<Instant> {
        let a = self.fifo.front().map(|h| h.at);
        let b = self.late.peek().map(|h| h.0.at);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next packet due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let front = self.fifo.front().filter(|h| h.at <= now);
        let late = self.late.peek().map(|h| &h.0).filter(|h| h.at <= now);
        let from_fifo = match (front, late) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(f), Some(l)) => f <= l,
        };
        let held = if from_fifo {
            self.fifo.pop_front()?
        } else {
            self.late.pop()?.0
        };
        self.bytes -= held.packet.len();
        Some(held.packet)
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.late.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One direction: input device → link → output device.
pub struct Direction {
    input: RawFd,
    output: RawFd,
    cfg: LinkConfig,
    link: Link,
    line: DelayLine,
    pool: Vec<Vec<u8>>,
    counters: Arc<Counters>,
    open: bool,
}

impl Direction {
    /// A direction reading `input` and writing `output` (both non-blocking TUN devices
    /// that outlive the loop).
    pub fn new(
        input: RawFd,
        output: RawFd,
        cfg: LinkConfig,
        link: Link,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            input,
            output,
            cfg,
            link,
            line: DelayLine::default(),
            pool: Vec::new(),
            counters,
            open: true,
        }
    }

    fn write(&self, packet: &[u8]) {
        loop {
            // SAFETY: `packet` is a valid buffer; `output` is an open descriptor.
            let n = unsafe { libc::write(self.output, packet.as_ptr().cast(), packet.len()) };
            if n >= 0 {
                Counters::add(&self.counters.forwarded, 1);
                Counters::add(&self.counters.forwarded_bytes, packet.len() as u64);
                return;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                Counters::add(&self.counters.write_errors, 1);
                return;
            }
        }
    }

    /// Write every held packet due at `now`.
    fn flush(&mut self, now: Instant) {
        while let Some(packet) = self.line.pop_due(now) {
            self.write(&packet);
            if self.pool.len() < POOL {
                self.pool.push(packet);
            }
        }
    }

    /// Read up to [`READ_BURST`] packets and act on each.
    fn read_burst(&mut self, scratch: &mut [u8]) {
        for _ in 0..READ_BURST {
            // SAFETY: `scratch` is a valid buffer; `input` is an open descriptor.
            let n = unsafe { libc::read(self.input, scratch.as_mut_ptr().cast(), scratch.len()) };
            if n <= 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {}
                    io::ErrorKind::Interrupted => continue,
                    // The device is gone (its namespace was deleted) or broken.
                    _ => self.open = false,
                }
                return;
            }
            let len = n as usize;
            Counters::add(&self.counters.received, 1);
            let now = Instant::now();
            match self.link.decide(&self.cfg, now, len) {
                Verdict::Drop(DropReason::Loss) => Counters::add(&self.counters.lost, 1),
                Verdict::Drop(DropReason::Overflow) => Counters::add(&self.counters.overflow, 1),
                Verdict::Deliver { at, reordered } => {
                    if reordered {
                        Counters::add(&self.counters.reordered, 1);
                    }
                    if at <= now && self.line.is_empty() {
                        self.write(&scratch[..len]);
                    } else if self.line.bytes() + len > MAX_HELD_BYTES {
                        Counters::add(&self.counters.held_drops, 1);
                    } else {
                        let mut packet = self.pool.pop().unwrap_or_default();
                        packet.clear();
                        packet.extend_from_slice(&scratch[..len]);
                        self.line.push(at, reordered, packet);
                    }
                }
            }
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Forward `dirs` until `stop` (an eventfd) becomes readable or every input is gone.
pub fn run(mut dirs: Vec<Direction>, stop: RawFd) {
    let mut scratch = vec![0u8; MAX_PACKET];
    let mut fds: Vec<libc::pollfd> = dirs
        .iter()
        .map(|d| libc::pollfd {
            fd: d.input,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: stop,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let now = Instant::now();
        for d in &mut dirs {
            d.flush(now);
        }
        let next = dirs.iter().filter_map(|d| d.line.next_due()).min();
        let ts = next.map(|at| timespec(at.saturating_duration_since(Instant::now())));
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` and `ts` are valid for the call.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[dirs.len()].revents != 0 {
            return;
        }
        for (d, pfd) in dirs.iter_mut().zip(fds.iter_mut()) {
            if pfd.revents & libc::POLLIN != 0 {
                d.read_burst(&mut scratch);
            } else if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                d.open = false;
            }
            if !d.open {
                // poll ignores negative descriptors.
                pfd.fd = -1;
            }
        }
        if dirs.iter().all(|d| !d.open) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_line_releases_in_time_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut line = DelayLine::default();
        line.push(ms(10), false, vec![1]);
        line.push(ms(15), true, vec![2; 3]);
        line.push(ms(12), false, vec![3]);
        line.push(ms(12), false, vec![4]);
        assert_eq!(line.bytes(), 6);
        assert_eq!(line.next_due(), Some(ms(10)));
        assert_eq!(line.pop_due(ms(9)), None);
        assert_eq!(line.pop_due(ms(20)), Some(vec![1]));
        assert_eq!(line.pop_due(ms(20)), Some(vec![3]));
        assert_eq!(line.pop_due(ms(20)), Some(vec![4]));
        assert_eq!(line.next_due(), Some(ms(15)));
        assert_eq!(line.pop_due(ms(14)), None);
        assert_eq!(line.pop_due(ms(15)), Some(vec![2; 3]));
        assert!(line.is_empty());
        assert_eq!(line.bytes(), 0);
        assert_eq!(line.next_due(), None);
    }

    #[test]
    fn delay_line_reordered_packet_is_overtaken() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut line = DelayLine::default();
        // Packet 1 is held back to 30 ms; packets 2 and 3 (20, 21 ms) overtake it.
        line.push(ms(30), true, vec![1]);
        line.push(ms(20), false, vec![2]);
        line.push(ms(21), false, vec![3]);
        let mut order = Vec::new();
        while let Some(p) = line.pop_due(ms(100)) {
            order.push(p[0]);
        }
        assert_eq!(order, [2, 3, 1]);
    }

    #[test]
    fn delay_line_equal_times_keep_arrival_order_across_queues() {
        let t0 = Instant::now();
        let mut line = DelayLine::default();
        line.push(t0, true, vec![1]);
        line.push(t0, false, vec![2]);
        assert_eq!(line.pop_due(t0), Some(vec![1]));
        assert_eq!(line.pop_due(t0), Some(vec![2]));
    }

    #[test]
    fn direction_stats_since_and_dropped() {
        let before = DirectionStats {
            received: 10,
            lost: 1,
            overflow: 2,
            ..Default::default()
        };
        let after = DirectionStats {
            received: 25,
            lost: 3,
            overflow: 2,
            held_drops: 1,
            ..Default::default()
        };
        let d = after.since(&before);
        assert_eq!(d.received, 15);
        assert_eq!(d.lost, 2);
        assert_eq!(d.overflow, 0);
        assert_eq!(d.dropped(), 3);
        assert!(after.to_string().contains("lost=3 overflow=2"));
    }
}
