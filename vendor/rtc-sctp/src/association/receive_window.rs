//! Receive-window autotuning, opt-in ([`TransportConfig::with_receive_window_autotune`]).
//!
//! A receive window has to hold what the peer can have in flight while the application
//! reads: a window sized for the longest fast path (1 Gbit/s at 200 ms is 25 MB) fills
//! to the brim on every path whose reader is slower than the network, and that is memory
//! the receiver holds for nothing. This follows Linux TCP's dynamic right-sizing
//! (`tcp_rcv_space_adjust`): the window starts at an initial size and, once per round
//! trip, grows to twice what arrived in the last round trip, more while that amount is
//! still growing on a path whose round trip is 5 ms or more (`SHORT_PATH`; judged on the
//! lowest answer of the last 10 s, `PATH_HORIZON`), so it keeps ahead of a sender in
//! slow start and stops at twice the rate the data flows at times the round trip. It
//! never shrinks. It grows at most twofold per round trip, and only once more than a
//! quarter of the initial window flows per round trip.
//!
//! Two departures from Linux:
//! - The measure is the new DATA that arrived (in order or not), where Linux counts what
//!   the application read, unless more than half the window waits to be read and could
//!   be read (is not held behind a gap): then the reader is the limit, the data that
//!   arrives is what the reader freed plus what the window last grew by, and what was
//!   read is the measure (counting arrivals there would grow the window by its own
//!   growth, up to the maximum). Reads alone, as in Linux, lag behind on a lossy path:
//!   after a loss is repaired the application reads at once all that arrived behind the
//!   gap. In the deterministic `sctp_wan` simulation at 1 Gbit/s with 1 % loss (10–200
//!   ms, five seeds each) a reads-only window moved 7–22 % less than a fixed 32 MiB
//!   window; without loss, as much.
//! - The round trip has to be the path's. The estimate Linux uses without timestamps,
//!   the time it takes to receive one window, is the path's round trip only while the
//!   sender is limited by the window; when the application is the slowest stage,
//!   receiving a window takes the window over the application's rate, the window grows
//!   by what it measures, and it ends at the maximum. SCTP has no timestamps, but every
//!   implementation answers a HEARTBEAT with a HEARTBEAT ACK that echoes its information
//!   (RFC 9260 §8.3), so the receiver measures the round trip itself: while DATA
//!   arrives it sends a small HEARTBEAT at most every [`PROBE_INTERVAL`] (or one round
//!   trip, if longer) and takes the lowest of the last [`RTT_SAMPLES`] answers. The
//!   answer comes back behind the DATA the peer queued, so the sample includes the
//!   queueing the DATA sees. Until the first answer, the window stays at its initial
//!   size.
//! - One late answer does not size the window. A smoothed round trip (RFC 6298's
//!   weights) moved by an eighth of every sample: on a LAN with a 3.5 ms round trip,
//!   one answer that took 290 ms (one of the peers did not run for that long on a
//!   loaded machine) made it 40 ms, the window grew to 32 MiB within a few round trips
//!   and the receiver held it when its writer fell behind. Linux skips a high sample
//!   while data waits to be read; a windowed minimum also drops a stall on the sending
//!   side, and a round trip that really grew is followed after [`RTT_SAMPLES`] answers.
//! - On a short path the lowest answer of the last 10 s ([`PATH_HORIZON`]) sizes the
//!   window. There the answers' queueing is the receiver's own: when its cores are busy
//!   it reads the answer behind the window of DATA waiting for it, so the answer takes
//!   the window over the receiver's rate (16 ms on the LAN veth, whose path is under a
//!   millisecond) for seconds at a time, and a window sized by that grows by its own
//!   queue, as Linux's estimate does. A short path's round trip that really grew is
//!   followed after the horizon.
//!
//! Pure state: the association passes in the time, the DATA it accepts and what the
//! application reads, and sends the heartbeat information this returns.
//!
//! [`TransportConfig::with_receive_window_autotune`]: crate::TransportConfig::with_receive_window_autotune

use super::SHORT_PATH;
use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, Instant};

/// Marks the heartbeat information of a round-trip probe (followed by its nonce).
const MAGIC: &[u8; 8] = b"rtcRWRTT";
/// Round-trip probes go no more often than this (or once per round trip, if longer).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// A probe not answered within this time (or four round trips, if longer) is counted
/// as lost, and the next one may go.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The round trip is the lowest of this many latest answers.
pub(crate) const RTT_SAMPLES: usize = 4;
/// Whether the path is short ([`SHORT_PATH`]) is judged on the lowest answer of this
/// long, and a short path's window is sized by it: load can delay every answer for
/// several seconds (a recipient whose cores are busy reads the answer behind the DATA
/// queued for it), which the lowest of the last four would take for the path; a path
/// that really changed is followed after this long (BBR keeps its minimum as long).
const PATH_HORIZON: Duration = Duration::from_secs(10);
/// The shortest time over which arrivals are measured: a reader slower than the path
/// frees room in bursts (a disk writer a batch at a time), the data then arrives in
/// bursts, and a burst measured over a sub-millisecond round trip looks like a rate many
/// times the real one. Over a shorter round trip, what arrives per round trip is the
/// rate over this time times the round trip.
const MIN_EPOCH: Duration = Duration::from_millis(20);

/// The window a receiver advertises, grown with what arrives.
#[derive(Debug)]
pub(crate) struct ReceiveWindow {
    /// The window now, in bytes.
    limit: u32,
    /// The most it grows to.
    max: u32,
    /// Sixteen packets: the slack Linux adds to twice the bytes per round trip.
    slack: u64,
    /// The latest answered probes' round trips (the round trip is the lowest), the next
    /// to replace at `next_sample` modulo their count.
    samples: [Option<Duration>; RTT_SAMPLES],
    next_sample: usize,
    /// The lowest answer of the last [`PATH_HORIZON`] and when it came (restarted from
    /// the lowest of the latest answers once it is older).
    shortest: Option<(Duration, Instant)>,
    /// The outstanding probe: its nonce and when it went.
    probe: Option<(u64, Instant)>,
    /// The nonce of the next probe.
    next_nonce: u64,
    /// No probe goes before this.
    next_probe: Option<Instant>,
    /// A probe is to be sent.
    probe_due: bool,
    /// The current epoch: since when, and the bytes received and read at its start.
    epoch: Option<(Instant, u64, u64)>,
    /// The most that flowed per round trip so far.
    space: u64,
    /// The window grows only once more than this flows per round trip: a quarter of the
    /// initial window.
    threshold: u64,
    /// New DATA bytes accepted since the start, in order or not.
    received: u64,
    /// Bytes the application read since the start.
    read: u64,
}

/// What a packet's arrival asks of the association.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OnPacket {
    /// The window grew: it may be worth a window update.
    pub(crate) grew: bool,
    /// A round-trip probe is due: wake the sender.
    pub(crate) probe: bool,
}

impl ReceiveWindow {
    /// A window of `initial` bytes that grows up to `max` (`initial` is at most `max`, and
    /// both are at least one packet of `mtu` bytes). `nonce` seeds the probes' nonces.
    pub(crate) fn new(initial: u32, max: u32, mtu: u32, nonce: u64) -> Self {
        let max = max.max(mtu);
        let initial = initial.clamp(mtu, max);
        Self {
            limit: initial,
            max,
            slack: 16 * u64::from(mtu),
            samples: [None; RTT_SAMPLES],
            next_sample: 0,
            shortest: None,
            probe: None,
            next_nonce: nonce,
            next_probe: None,
            probe_due: false,
            epoch: None,
            space: 0,
            threshold: u64::from(initial / 4),
            received: 0,
            read: 0,
        }
    }

    /// The window now, in bytes.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// The round trip the window is sized by, once a probe was answered: on a short
    /// path (its lowest answer of the last [`PATH_HORIZON`] is under [`SHORT_PATH`]) that
    /// lowest answer, else the lowest of the latest answers.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self.shortest {
            Some((shortest, _)) if shortest < SHORT_PATH => Some(shortest),
            _ => self.latest_rtt(),
        }
    }

    /// The lowest of the latest answers, once a probe was answered.
    fn latest_rtt(&self) -> Option<Duration> {
        self.samples.iter().flatten().min().copied()
    }

    /// The application read `bytes`.
    pub(crate) fn on_read(&mut self, bytes: usize) {
        self.read += bytes as u64;
    }

    /// New DATA of `bytes` was accepted (in order or not).
    pub(crate) fn on_received(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    /// DATA arrived at `now`: schedule a probe if one is due, and re-size once per
    /// round trip.
    ///
    /// `readable` tells, when asked, whether data the application has not yet taken is
    /// readable (not held behind a gap).
    pub(crate) fn on_data(&mut self, now: Instant, readable: impl FnOnce() -> bool) -> OnPacket {
        let mut out = OnPacket::default();
        if let Some((_, sent)) = self.probe {
            let timeout = self
                .latest_rtt()
                .map_or(PROBE_TIMEOUT, |rtt| (4 * rtt).max(PROBE_TIMEOUT));
            if now.saturating_duration_since(sent) >= timeout {
                self.probe = None;
            }
        }
        if self.probe.is_none() && !self.probe_due && self.next_probe.is_none_or(|t| now >= t) {
            self.probe_due = true;
            out.probe = true;
        }
        let Some(rtt) = self.rtt() else {
            return out;
        };
        let Some((start, received_at_start, read_at_start)) = self.epoch else {
            self.epoch = Some((now, self.received, self.read));
            return out;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < rtt.max(MIN_EPOCH) {
            return out;
        }
        self.epoch = Some((now, self.received, self.read));
        // What flowed per round trip in this epoch: what arrived, unless more than half
        // the window waits to be read and could be: then the reader is the limit, what
        // arrives is what it freed plus what the window last grew by, and what it read
        // is the measure. (Data held behind a gap is not the reader's doing.)
        let unread = self.received.saturating_sub(self.read);
        let flowed = if unread > u64::from(self.limit / 2) && readable() {
            self.read - read_at_start
        } else {
            self.received - received_at_start
        };
        let per_rtt = u64::try_from(u128::from(flowed) * rtt.as_nanos() / elapsed.as_nanos())
            .unwrap_or(u64::MAX);
        if per_rtt <= self.space {
            return out;
        }
        let space = std::mem::replace(&mut self.space, per_rtt);
        if per_rtt <= self.threshold {
            return out;
        }
        // Twice what arrived, and while that is growing, twice the growth on top (the
        // growth counted up to a doubling): a sender in slow start doubles per round trip.
        // Not on a short path (`SHORT_PATH`): an epoch then spans four round trips or
        // more, a sender's slow start is over within the first, and a rate higher than
        // in any epoch before is what load does to the path (on a LAN whose peers share
        // busy cores, a burst after a stall), not a sender doubling.
        let mut window = 2 * per_rtt + self.slack;
        if space > 0 && rtt >= SHORT_PATH {
            window += 2 * window * (per_rtt - space).min(space) / space;
        }
        // At most a doubling per round trip: a window that opens several-fold at once lets
        // a sender that was held by it burst into the path's queue. Held back, the window
        // counts as grown for what it covers, so the next round trip grows it again.
        let capped = 2 * u64::from(self.limit);
        if window > capped {
            self.space = self.space.min((capped - self.slack.min(capped)) / 2);
        }
        let window = u32::try_from(window.min(capped))
            .unwrap_or(u32::MAX)
            .min(self.max);
        if window > self.limit {
            self.limit = window;
            out.grew = true;
        }
        out
    }

    /// The heartbeat information of a probe to send at `now`, if one is due.
    pub(crate) fn poll_probe(&mut self, now: Instant) -> Option<Bytes> {
        if !self.probe_due {
            return None;
        }
        self.probe_due = false;
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.probe = Some((nonce, now));
        let mut info = BytesMut::with_capacity(MAGIC.len() + 8);
        info.put_slice(MAGIC);
        info.put_u64(nonce);
        Some(info.freeze())
    }

    /// A HEARTBEAT ACK carrying `info` arrived at `now`. Returns whether it answered the
    /// outstanding probe (it then gives a round-trip sample).
    pub(crate) fn on_heartbeat_ack(&mut self, info: &[u8], now: Instant) -> bool {
        let Some((nonce, sent)) = self.probe else {
            return false;
        };
        if info.len() != MAGIC.len() + 8
            || !info.starts_with(MAGIC)
            || info[MAGIC.len()..] != nonce.to_be_bytes()
        {
            return false;
        }
        self.probe = None;
        let sample = now.saturating_duration_since(sent);
        self.samples[self.next_sample % RTT_SAMPLES] = Some(sample);
        self.next_sample = self.next_sample.wrapping_add(1);
        let rtt = self.latest_rtt().unwrap_or(sample);
        let current = self
            .shortest
            .filter(|(_, at)| now.saturating_duration_since(*at) <= PATH_HORIZON);
        self.shortest = match current {
            Some((lowest, at)) if lowest < sample => Some((lowest, at)),
            Some(_) => Some((sample, now)),
            None => Some((rtt, now)),
        };
        self.next_probe = Some(sent + rtt.max(PROBE_INTERVAL));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u32 = 1200;
    const MIB: u32 = 1024 * 1024;

    /// Answers every probe after `rtt`.
    fn answer(w: &mut ReceiveWindow, now: Instant, rtt: Duration) {
        if let Some(info) = w.poll_probe(now) {
            assert!(w.on_heartbeat_ack(&info, now + rtt));
        }
    }

    /// A path of round trip `rtt_ms` delivers `rate` bytes per millisecond, at most what
    /// the window allows beyond what is unread, and the application reads at most
    /// `read_rate` of what is there per millisecond. Returns the window after `ms`.
    fn run(w: &mut ReceiveWindow, ms: u64, rtt_ms: u64, rate: u64, read_rate: u64) -> u32 {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(rtt_ms);
        let mut queued = 0u64;
        for i in 0..ms {
            let now = t0 + Duration::from_millis(i);
            let room = u64::from(w.limit()).saturating_sub(queued);
            let arrived = rate.min(room);
            queued += arrived;
            w.on_received(arrived as usize);
            if w.on_data(now, || true).probe {
                answer(w, now, rtt);
            }
            let taken = read_rate.min(queued);
            w.on_read(taken as usize);
            queued -= taken;
        }
        w.limit()
    }

    #[test]
    fn receive_window_slow_reader_short_path_stays_at_initial() {
        // A LAN: 1 ms round trip, 500 MB/s offered, the reader takes 200 MB/s. Twice
        // what it reads per round trip is far below the initial window: no growth.
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        assert_eq!(run(&mut w, 3000, 1, 500_000, 200_000), 2 * MIB);
        assert_eq!(w.rtt(), Some(Duration::from_millis(1)));
    }

    #[test]
    fn receive_window_bursty_reader_short_path_stays_at_initial() {
        // A LAN whose recipient's disk writer frees 768 KiB every 4 ms (about 200 MB/s)
        // with a 0.5 ms round trip, and the sender fills what was freed at once: each
        // burst is more than a quarter of the window, but per round trip about 100 KB
        // arrive.
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let rtt = Duration::from_micros(500);
        for i in 0..4000u64 {
            let now = t0 + Duration::from_micros(100 * i);
            if w.on_data(now, || true).probe {
                answer(&mut w, now, rtt);
            }
            if i % 40 == 0 {
                w.on_received(768 * 1024);
                w.on_read(768 * 1024);
            }
        }
        assert_eq!(w.limit(), 2 * MIB);
    }

    /// A path on which `rate` bytes arrive per millisecond and are read at once, except
    /// for `burst_ms` from the middle of `ms` at `burst_rate`; a probe sent in
    /// millisecond `i` is answered after `rtt_ms(i)` milliseconds.
    fn run_with_burst(
        rtt_ms: impl Fn(u64) -> u64,
        ms: u64,
        rate: u64,
        burst_ms: u64,
        burst_rate: u64,
    ) -> u32 {
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let burst = ms / 2..ms / 2 + burst_ms;
        for i in 0..ms {
            let now = t0 + Duration::from_millis(i);
            let arrived = if burst.contains(&i) { burst_rate } else { rate };
            w.on_received(arrived as usize);
            if w.on_data(now, || true).probe {
                answer(&mut w, now, Duration::from_millis(rtt_ms(i)));
            }
            w.on_read(arrived as usize);
        }
        w.limit()
    }

    #[test]
    fn receive_window_rate_burst_short_path_grows_to_twice_the_burst_only() {
        // A LAN whose round trip looks like 2 ms (the peers' cores are busy): 400 MB/s,
        // then 600 MB/s for 60 ms. Twice the burst per round trip (2.4 MB) and the slack,
        // not the growth on top that a sender in slow start gets (4 MiB: the doubling).
        let limit = run_with_burst(|_| 2, 2000, 400_000, 60, 600_000);
        let twice_the_burst = 2 * 2 * 600_000 + 16 * MTU;
        assert!(
            (2 * MIB + 1..=twice_the_burst).contains(&limit),
            "the window is {limit}"
        );
        // Over a longer round trip (20 ms), growth still counts double: more than
        // twice the burst per round trip (6 MB).
        let limit = run_with_burst(|_| 20, 4000, 100_000, 200, 150_000);
        assert!(limit > 2 * 20 * 150_000 + 16 * MTU, "the window is {limit}");
    }

    #[test]
    fn receive_window_answers_delayed_by_load_short_path_sized_by_the_shortest() {
        // A LAN at 150 MB/s whose first answer takes 1 ms and every later one 16 ms: the
        // recipient's cores are busy and each answer waits behind the window of DATA
        // queued for it (2 MiB take 14 ms at that rate). Sized by the lowest of the
        // latest answers the window would grow by its own queue (2 × 2.4 MB per round
        // trip, and again); the path is short and the window stays where it is.
        let delayed = |i| if i < 100 { 1 } else { 16 };
        assert_eq!(run_with_burst(delayed, 3000, 150_000, 0, 0), 2 * MIB);
        // Once the 1 ms answer is older than the horizon, the path is judged on the
        // latest answers again: a path whose round trip grew to 16 ms is no longer short.
        assert!(run_with_burst(delayed, 13_000, 150_000, 0, 0) > 4 * MIB);
    }

    #[test]
    fn receive_window_slow_reader_long_path_stays_near_rate_times_rtt() {
        // 100 ms round trip, the reader takes 50 MB/s: about 2 × 5 MB, not the maximum.
        let mut w = ReceiveWindow::new(2 * MIB, 64 * MIB, MTU, 1);
        let limit = run(&mut w, 5000, 100, 125_000, 50_000);
        assert!(
            (9 * MIB..=16 * MIB).contains(&limit),
            "the window is {limit}"
        );
    }

    #[test]
    fn receive_window_window_limited_sender_grows_to_the_maximum() {
        // 200 ms round trip, a sender limited by the window sends one window per round
        // trip and the reader keeps up: the window follows until the maximum.
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(200);
        for round in 0..20u32 {
            let now = t0 + rtt * round;
            if w.on_data(now, || true).probe {
                answer(&mut w, now, rtt);
            }
            w.on_received(w.limit() as usize);
            w.on_read(w.limit() as usize);
            w.on_data(now + rtt - Duration::from_millis(1), || true);
        }
        assert_eq!(w.limit(), 32 * MIB);
    }

    /// Four round trips of 40 ms in which a window-limited sender fills the window and
    /// the application reads nothing; `readable` says whether what waits could be read.
    fn unread_window(readable: bool) -> u32 {
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(40);
        assert!(w.on_data(t0, || readable).probe);
        answer(&mut w, t0, rtt);
        for round in 1..=4u32 {
            w.on_received(w.limit() as usize);
            w.on_data(t0 + rtt * round, || readable);
        }
        w.limit()
    }

    #[test]
    fn receive_window_data_behind_gap_counts_arrivals_unread_readable_counts_reads() {
        // Held behind a gap (a loss being repaired), what arrives still counts: the
        // window grows with the sender.
        assert!(unread_window(false) >= 8 * MIB);
        // Readable and not read: the reader is the limit, and it read nothing.
        assert_eq!(unread_window(true), 2 * MIB);
    }

    #[test]
    fn receive_window_unanswered_probe_no_growth_then_retried() {
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 9);
        let t0 = Instant::now();
        assert!(w.on_data(t0, || true).probe);
        let first = w.poll_probe(t0).unwrap();
        assert!(w.poll_probe(t0).is_none(), "one probe at a time");
        w.on_received(16 * MIB as usize);
        // No answer: no round trip, no growth, and no second probe before the timeout.
        assert!(!w.on_data(t0 + Duration::from_millis(500), || true).probe);
        assert_eq!(w.limit(), 2 * MIB);
        assert!(w.on_data(t0 + PROBE_TIMEOUT, || true).probe);
        let second = w.poll_probe(t0 + PROBE_TIMEOUT).unwrap();
        assert_ne!(first, second);
        // A late answer to the first probe, a plain heartbeat or a cut one is no sample.
        assert!(!w.on_heartbeat_ack(&first, t0 + PROBE_TIMEOUT));
        assert!(!w.on_heartbeat_ack(b"plain heartbeat info", t0 + PROBE_TIMEOUT));
        assert!(!w.on_heartbeat_ack(&second[..12], t0 + PROBE_TIMEOUT));
        assert_eq!(w.rtt(), None);
        assert!(w.on_heartbeat_ack(&second, t0 + PROBE_TIMEOUT + Duration::from_millis(50)));
        assert_eq!(w.rtt(), Some(Duration::from_millis(50)));
    }

    #[test]
    fn receive_window_probes_at_most_every_interval() {
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let mut probes = 0;
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            if w.on_data(now, || true).probe {
                probes += 1;
                answer(&mut w, now, Duration::from_millis(1));
            }
        }
        assert_eq!(probes, 5, "one per {PROBE_INTERVAL:?} over one second");
    }

    /// A path of round trip `base` delivers 500 MB/s and the reader keeps up; the answer
    /// to every probe in `late` comes after `late_rtt` instead. Returns the window after
    /// 3 s and the round trip then.
    fn path_with_late_answers(
        base: Duration,
        late: &[usize],
        late_rtt: Duration,
    ) -> (u32, Option<Duration>) {
        let mut w = ReceiveWindow::new(2 * MIB, 32 * MIB, MTU, 1);
        let t0 = Instant::now();
        let mut probes = 0;
        for i in 0..3000u64 {
            let now = t0 + Duration::from_millis(i);
            w.on_received(500_000);
            if w.on_data(now, || true).probe {
                let rtt = if late.contains(&probes) {
                    late_rtt
                } else {
                    base
                };
                probes += 1;
                answer(&mut w, now, rtt);
            }
            w.on_read(500_000);
        }
        (w.limit(), w.rtt())
    }

    #[test]
    fn receive_window_one_late_answer_short_path_stays_at_initial() {
        // One answer of 290 ms among 1 ms ones: with a smoothed round trip it became
        // 37 ms, and twice 500 MB/s times that is the maximum window.
        let (limit, rtt) =
            path_with_late_answers(Duration::from_millis(1), &[3], Duration::from_millis(290));
        assert_eq!(limit, 2 * MIB);
        assert_eq!(rtt, Some(Duration::from_millis(1)));
    }

    #[test]
    fn receive_window_round_trip_that_grew_followed_after_the_sample_count() {
        // A path of 10 ms; from the fourth probe on every answer takes 40 ms (the path
        // changed): after RTT_SAMPLES of them the round trip is 40 ms and the window
        // grows with it. (A short path's grown round trip is followed after the horizon:
        // `receive_window_answers_delayed_by_load_short_path_sized_by_the_shortest`.)
        let (base, grown) = (Duration::from_millis(10), Duration::from_millis(40));
        let late: Vec<usize> = (3..100).collect();
        let (limit, rtt) = path_with_late_answers(base, &late, grown);
        assert_eq!(rtt, Some(grown));
        assert!(limit >= 32 * MIB, "the window is {limit}");
        // One answer short of the count, the lowest is still the old round trip, and
        // the window stays near twice 5 MB per round trip (with what Startup added).
        let (limit, rtt) = path_with_late_answers(base, &[3, 4, 5], grown);
        assert_eq!(rtt, Some(base));
        assert!(limit < 16 * MIB, "the window is {limit}");
    }

    #[test]
    fn receive_window_initial_below_one_packet_is_one_packet() {
        let w = ReceiveWindow::new(0, 0, MTU, 1);
        assert_eq!(w.limit(), MTU);
    }

    #[test]
    fn receive_window_initial_above_maximum_is_the_maximum() {
        let mut w = ReceiveWindow::new(4 * MIB, MIB, MTU, 1);
        assert_eq!(w.limit(), MIB);
        assert_eq!(run(&mut w, 1000, 10, 1_000_000, 1_000_000), MIB);
    }
}
