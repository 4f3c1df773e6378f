//! The forwarding loop: read packets from one TUN device, give each to its direction's
//! [`Link`], and write it to the other device when the link says it is due.
//!
//! A thread serves one or both directions ([`crate::Threads`]). Each pass it writes
//! every packet that is due, sleeps in `ppoll` until the next one is due or a packet
//! arrives (nanosecond timeout, no per-packet sleeps), then reads what arrived, up to
//! [`READ_BURST`] packets per direction so that due packets are never starved. A packet
//! due at once with nothing held before it is written straight from the read buffer;
//! everything else waits in the direction's [`DelayLine`].
//!
//! With offload ([`crate::gso`]) a read may bring a TCP super-packet; the link still
//! decides per segment, and the delivered segments leave in as few packets as the link's
//! timing allows.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peershare_linkmodel::{DropReason, Link, LinkConfig, Verdict};

use crate::gso::{self, TcpSuper, VNET_HDR_LEN, VnetHdr};

/// Packets read from one device before the loop writes what is due.
pub const READ_BURST: usize = 128;
/// Bytes a direction holds in its delay line at most; beyond, packets are dropped
/// (`held_drops`). A safety net against unbounded memory: a 1 Gbit/s, 1 s delay line
/// holds 125 MB.
pub const MAX_HELD_BYTES: usize = 512 << 20;
/// Largest read from a TUN device: an IPv4 packet's limit and the vnet header.
const MAX_PACKET: usize = 65_536 + VNET_HDR_LEN;
/// Packet buffers kept for reuse per direction.
const POOL: usize = 8192;

/// What one direction did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets read from the input device (a TCP super-packet counts as its segments).
    pub received: u64,
    /// Packets delivered to the output device (as many segments as they carry).
    pub forwarded: u64,
    /// Bytes delivered to the output device, as on the wire (IP packets, every
    /// segment with its headers).
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
    /// Packets the input device dropped because its queue (`txqueuelen`) was full: the
    /// emulator did not read them in time. Not a link decision; nonzero means the
    /// emulator was short of CPU. Filled in by [`crate::Emulator::stats`].
    pub device_drops: u64,
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
            device_drops: self.device_drops - before.device_drops,
        }
    }
}

impl std::fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} forwarded={} forwarded_bytes={} lost={} overflow={} reordered={} \
             held_drops={} write_errors={} device_drops={}",
            self.received,
            self.forwarded,
            self.forwarded_bytes,
            self.lost,
            self.overflow,
            self.reordered,
            self.held_drops,
            self.write_errors,
            self.device_drops
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
            device_drops: 0,
        }
    }
}

/// What one write to the output device delivers.
#[derive(Debug, PartialEq, Eq)]
pub struct Out {
    /// The bytes to write (with the vnet header when offload is on).
    pub packet: Vec<u8>,
    /// Wire packets it stands for.
    pub segments: u32,
    /// Their bytes on the wire.
    pub wire_bytes: u32,
}

impl Out {
    /// A plain packet that is its own wire packet.
    pub fn plain(packet: Vec<u8>) -> Self {
        let wire_bytes = packet.len() as u32;
        Self {
            packet,
            segments: 1,
            wire_bytes,
        }
    }
}

/// A packet waiting for its delivery time.
#[derive(Debug)]
struct Held {
    at: Instant,
    seq: u64,
    out: Out,
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
    /// Hold `out` until `at`.
    pub fn push(&mut self, at: Instant, reordered: bool, out: Out) {
        self.seq += 1;
        self.bytes += out.packet.len();
        let held = Held {
            at,
            seq: self.seq,
            out,
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
    pub fn pop_due(&mut self, now: Instant) -> Option<Out> {
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
        self.bytes -= held.out.packet.len();
        Some(held.out)
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
    /// Packets carry a vnet header (offload on).
    vnet: bool,
}

impl Direction {
    /// A direction reading `input` and writing `output` (both non-blocking TUN devices
    /// that outlive the loop; `vnet`: both with a vnet header, [`crate::gso`]).
    pub fn new(
        input: RawFd,
        output: RawFd,
        cfg: LinkConfig,
        link: Link,
        counters: Arc<Counters>,
        vnet: bool,
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
            vnet,
        }
    }

    fn write(&self, packet: &[u8], segments: u32, wire_bytes: u32) {
        loop {
            // SAFETY: `packet` is a valid buffer; `output` is an open descriptor.
            let n = unsafe { libc::write(self.output, packet.as_ptr().cast(), packet.len()) };
            if n >= 0 {
                Counters::add(&self.counters.forwarded, u64::from(segments));
                Counters::add(&self.counters.forwarded_bytes, u64::from(wire_bytes));
                return;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                Counters::add(&self.counters.write_errors, u64::from(segments));
                return;
            }
        }
    }

    /// Write every held packet due at `now`.
    fn flush(&mut self, now: Instant) {
        while let Some(out) = self.line.pop_due(now) {
            self.write(&out.packet, out.segments, out.wire_bytes);
            if self.pool.len() < POOL {
                self.pool.push(out.packet);
            }
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Write `packet` now if it is due and nothing is held before it, else hold it.
    fn deliver(
        &mut self,
        now: Instant,
        at: Instant,
        reordered: bool,
        packet: &[u8],
        segments: u32,
        wire_bytes: u32,
    ) {
        if at <= now && self.line.is_empty() {
            self.write(packet, segments, wire_bytes);
        } else if self.line.bytes() + packet.len() > MAX_HELD_BYTES {
            Counters::add(&self.counters.held_drops, u64::from(segments));
        } else {
            let mut b = self.buffer();
            b.extend_from_slice(packet);
            self.line.push(
                at,
                reordered,
                Out {
                    packet: b,
                    segments,
                    wire_bytes,
                },
            );
        }
    }

    /// Count a drop.
    fn dropped(&self, why: DropReason, segments: u64) {
        match why {
            DropReason::Loss => Counters::add(&self.counters.lost, segments),
            DropReason::Overflow => Counters::add(&self.counters.overflow, segments),
        }
    }

    /// One packet that is one wire packet of `wire` bytes.
    fn single(&mut self, now: Instant, packet: &[u8], wire: usize) {
        Counters::add(&self.counters.received, 1);
        match self.link.decide(&self.cfg, now, wire) {
            Verdict::Drop(why) => self.dropped(why, 1),
            Verdict::Deliver { at, reordered } => {
                if reordered {
                    Counters::add(&self.counters.reordered, 1);
                }
                self.deliver(now, at, reordered, packet, 1, wire as u32);
            }
        }
    }

    /// Segments `first..end` of a super-packet (`buf` = vnet header + `pkt`), due at `at`.
    #[allow(clippy::too_many_arguments)]
    fn piece(
        &mut self,
        now: Instant,
        buf: &[u8],
        hdr: &VnetHdr,
        lay: &TcpSuper,
        (first, end): (usize, usize),
        at: Instant,
        reordered: bool,
    ) {
        let segments = (end - first) as u32;
        let wire = (end - first) * lay.headers() + lay.payload_of(first, end);
        if first == 0 && end == lay.segments() {
            self.deliver(now, at, reordered, buf, segments, wire as u32);
            return;
        }
        let mut b = self.buffer();
        gso::build_run(hdr, &buf[VNET_HDR_LEN..], lay, first, end, &mut b);
        if at <= now && self.line.is_empty() {
            self.write(&b, segments, wire as u32);
        } else if self.line.bytes() + b.len() > MAX_HELD_BYTES {
            Counters::add(&self.counters.held_drops, u64::from(segments));
        } else {
            let out = Out {
                packet: b,
                segments,
                wire_bytes: wire as u32,
            };
            self.line.push(at, reordered, out);
            return;
        }
        if self.pool.len() < POOL {
            self.pool.push(b);
        }
    }

    /// A TCP super-packet: the link decides per segment; consecutive delivered segments
    /// due within [`gso::COALESCE`] of each other leave together.
    fn segmented(&mut self, now: Instant, buf: &[u8], hdr: &VnetHdr, lay: &TcpSuper) {
        let n = lay.segments();
        Counters::add(&self.counters.received, n as u64);
        // The run being gathered: first segment, its time, the latest time.
        let mut run: Option<(usize, Instant, Instant)> = None;
        for i in 0..n {
            let verdict = self.link.decide(&self.cfg, now, lay.wire_len(i));
            let extends = match (verdict, run) {
                (
                    Verdict::Deliver {
                        at,
                        reordered: false,
                    },
                    Some((_, start, _)),
                ) => at <= start + gso::COALESCE,
                _ => false,
            };
            if extends {
                if let (Some(r), Verdict::Deliver { at, .. }) = (run.as_mut(), verdict) {
                    r.2 = at;
                }
                continue;
            }
            if let Some((first, _, last)) = run.take() {
                self.piece(now, buf, hdr, lay, (first, i), last, false);
            }
            match verdict {
                Verdict::Drop(why) => self.dropped(why, 1),
                Verdict::Deliver {
                    at,
                    reordered: true,
                } => {
                    Counters::add(&self.counters.reordered, 1);
                    self.piece(now, buf, hdr, lay, (i, i + 1), at, true);
                }
                Verdict::Deliver { at, .. } => run = Some((i, at, at)),
            }
        }
        if let Some((first, _, last)) = run {
            self.piece(now, buf, hdr, lay, (first, n), last, false);
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
            let buf = &scratch[..n as usize];
            let now = Instant::now();
            if !self.vnet {
                self.single(now, buf, buf.len());
                continue;
            }
            let Some(hdr) = VnetHdr::parse(buf) else {
                continue;
            };
            let pkt = &buf[VNET_HDR_LEN..];
            match TcpSuper::parse(&hdr, pkt) {
                Some(lay) => self.segmented(now, buf, &hdr, &lay),
                None => self.single(now, buf, pkt.len()),
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
        line.push(ms(10), false, Out::plain(vec![1]));
        line.push(ms(15), true, Out::plain(vec![2; 3]));
        line.push(ms(12), false, Out::plain(vec![3]));
        line.push(ms(12), false, Out::plain(vec![4]));
        assert_eq!(line.bytes(), 6);
        assert_eq!(line.next_due(), Some(ms(10)));
        assert_eq!(line.pop_due(ms(9)), None);
        assert_eq!(line.pop_due(ms(20)), Some(Out::plain(vec![1])));
        assert_eq!(line.pop_due(ms(20)), Some(Out::plain(vec![3])));
        assert_eq!(line.pop_due(ms(20)), Some(Out::plain(vec![4])));
        assert_eq!(line.next_due(), Some(ms(15)));
        assert_eq!(line.pop_due(ms(14)), None);
        assert_eq!(line.pop_due(ms(15)), Some(Out::plain(vec![2; 3])));
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
        line.push(ms(30), true, Out::plain(vec![1]));
        line.push(ms(20), false, Out::plain(vec![2]));
        line.push(ms(21), false, Out::plain(vec![3]));
        let mut order = Vec::new();
        while let Some(p) = line.pop_due(ms(100)) {
            order.push(p.packet[0]);
        }
        assert_eq!(order, [2, 3, 1]);
    }

    #[test]
    fn delay_line_equal_times_keep_arrival_order_across_queues() {
        let t0 = Instant::now();
        let mut line = DelayLine::default();
        line.push(t0, true, Out::plain(vec![1]));
        line.push(t0, false, Out::plain(vec![2]));
        assert_eq!(line.pop_due(t0), Some(Out::plain(vec![1])));
        assert_eq!(line.pop_due(t0), Some(Out::plain(vec![2])));
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
