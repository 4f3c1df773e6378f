//! A model-based congestion controller for the data sender, after BBR
//! (draft-cardwell-iccrg-bbr-congestion-control-00, version 1 of the algorithm).
//!
//! RFC 9260's controller (§7.2) is loss-based and Reno-like: it halves the window per
//! loss event, grows it by one MTU per round trip, and sends a whole window as a burst.
//! On a long path with a shallow bottleneck queue the bursts overflow the queue, and
//! on a path with random loss the window never grows back. This controller instead
//! estimates the bottleneck bandwidth (the highest delivery rate in the last ten round
//! trips) and the round-trip propagation time (the lowest RTT in the last ten seconds),
//! paces new DATA at about that bandwidth, and keeps about two bandwidth-delay products
//! in flight. Loss does not change the model; lost DATA is simply retransmitted.
//!
//! It is sender-side only: the peer sees ordinary SCTP, so any conforming receiver works.
//! Everything here is pure arithmetic on the instants and byte counts the association
//! passes in.

use std::time::{Duration, Instant};

/// Which congestion controller the association's data sender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// RFC 9260 §7.2: slow start, congestion avoidance, halving on loss; no pacing.
    #[default]
    Rfc9260,
    /// Bandwidth and round-trip estimation with pacing (BBR version 1).
    Bbr,
}

/// Startup's gain, 2/ln(2): the pacing rate doubles every round trip.
const HIGH_GAIN: f64 = 2.885;
/// Startup's and Drain's window gain: two bandwidth-delay products, what a path with a
/// one-BDP queue holds (BBR version 2; version 1's 2.885 overflows such a queue).
const STARTUP_CWND_GAIN: f64 = 2.0;
/// ProbeBW's pacing-gain cycle: probe above the estimate, drain the queue it made,
/// then cruise.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Round trips over which the bandwidth estimate is the maximum.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long an RTT minimum stays valid before ProbeRTT measures it again.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long ProbeRTT keeps the window small.
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// A sample at most this fraction above the RTT minimum confirms it (renews its ten
/// seconds without lowering or raising it): the queue was nearly empty when it was
/// taken, so there is nothing for ProbeRTT to drain or measure. QUICHE's BBR calls an
/// RTT within an eighth of the minimum "similar" (`kSimilarMinRttThreshold`).
const SIMILAR_RTT_FRACTION: u32 = 8;
/// ProbeRTT's window: half a bandwidth-delay product, which empties the bottleneck queue
/// while still moving half the rate (BBR version 2's `probe_rtt_cwnd_gain`; version 1's
/// four packets all but stop a long fast path for the probe's duration).
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
/// Startup ends when three round trips in a row raise the bandwidth by less than this.
const FULL_BW_GROWTH: f64 = 1.25;
const FULL_BW_ROUNDS: u32 = 3;
/// Startup also ends after a round trip that lost more than this share of what it
/// delivered (with at least `STARTUP_LOSS_PACKETS` packets lost): the queue in front of
/// the bottleneck has overflowed, and going on would only lose more (as BBR version 2
/// does).
const STARTUP_LOSS_RATE: f64 = 0.02;
const STARTUP_LOSS_PACKETS: u64 = 8;
/// The window never goes below this many packets.
const MIN_CWND_PACKETS: u32 = 4;
/// Burst credit of the pacer after an idle moment (what a timer's granularity costs).
const PACING_QUANTUM: Duration = Duration::from_millis(1);
/// Largest send quantum (what the pacer releases in one burst) counted in the window.
const MAX_SEND_QUANTUM: f64 = 64.0 * 1024.0;
/// Round trips per half of the ack-aggregation filter (the estimate is the maximum over
/// the last 5–10 round trips).
const EXTRA_ACKED_WINDOW_ROUNDS: u32 = 5;
/// The ack-aggregation allowance never exceeds what the path delivers in this time.
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// What the sender remembers about the connection when it transmits a DATA chunk, so
/// that its acknowledgement yields a delivery-rate sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SendSnapshot {
    /// Bytes delivered (acknowledged) on the association when the chunk was sent.
    pub(crate) delivered: u64,
    /// When `delivered` last changed, as of the send.
    pub(crate) delivered_time: Option<Instant>,
    /// Send time of the most recently acknowledged chunk, as of the send.
    pub(crate) first_sent_time: Option<Instant>,
    /// The sender had nothing more to send at the time.
    pub(crate) app_limited: bool,
}

/// The controller's state.
#[derive(Debug, Clone)]
pub(crate) struct Bbr {
    mtu: u32,
    initial_cwnd: u32,
    mode: Mode,
    pacing_gain: f64,
    cwnd_gain: f64,
    /// (round, delivery rate in bytes/s) samples; the estimate is their maximum.
    bw_samples: Vec<(u64, f64)>,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    /// Delivered-byte mark until which samples are application-limited (0 = none).
    app_limited_until: u64,
    round: u64,
    next_round_delivered: u64,
    full_bw: f64,
    full_bw_rounds: u32,
    filled_pipe: bool,
    cycle_index: usize,
    cycle_stamp: Option<Instant>,
    probe_rtt_done: Option<Instant>,
    /// A round trip has passed since ProbeRTT's window was reached.
    probe_rtt_round_done: bool,
    /// The lowest RTT sample since ProbeRTT began: the new minimum when it ends.
    probe_rtt_min: Option<Duration>,
    /// The sender starts again after it ran out of data and everything was delivered:
    /// no queue of its own is left, so until the next acknowledgement an expired
    /// minimum takes the next sample without ProbeRTT (Linux BBR's `idle_restart`).
    idle_restart: bool,
    prior_cwnd: u32,
    /// Bytes found lost, and bytes delivered, since the current round trip began.
    round_lost: u64,
    round_start_delivered: u64,
    cwnd: u32,
    /// Earliest time the pacer lets the next DATA chunk go.
    pace_next: Option<Instant>,
    /// Ack aggregation: bytes acknowledged beyond what the bandwidth estimate explains,
    /// maximum per half of the filter window, and the half in use.
    extra_acked: [u64; 2],
    extra_acked_half: usize,
    extra_acked_rounds: u32,
    /// Start of the current aggregation epoch and the bytes acknowledged since.
    ack_epoch_start: Option<Instant>,
    ack_epoch_acked: u64,
}

impl Bbr {
    pub(crate) fn new(mtu: u32, initial_cwnd: u32) -> Self {
        Self {
            mtu,
            initial_cwnd,
            mode: Mode::Startup,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: STARTUP_CWND_GAIN,
            bw_samples: Vec::new(),
            min_rtt: None,
            min_rtt_stamp: None,
            delivered: 0,
            delivered_time: None,
            first_sent_time: None,
            app_limited_until: 0,
            round: 0,
            next_round_delivered: 0,
            full_bw: 0.0,
            full_bw_rounds: 0,
            filled_pipe: false,
            cycle_index: 0,
            cycle_stamp: None,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            probe_rtt_min: None,
            idle_restart: false,
            prior_cwnd: initial_cwnd,
            round_lost: 0,
            round_start_delivered: 0,
            cwnd: initial_cwnd,
            pace_next: None,
            extra_acked: [0; 2],
            extra_acked_half: 0,
            extra_acked_rounds: 0,
            ack_epoch_start: None,
            ack_epoch_acked: 0,
        }
    }

    /// The packet size changed (path MTU discovery).
    pub(crate) fn set_mtu(&mut self, mtu: u32) {
        self.mtu = mtu;
    }

    /// The congestion window in bytes.
    pub(crate) fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// The path's minimum round trip, once measured.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The bottleneck bandwidth estimate in bytes per second (0 before any sample).
    pub(crate) fn btl_bw(&self) -> f64 {
        self.bw_samples.iter().map(|s| s.1).fold(0.0, f64::max)
    }

    fn bdp(&self) -> Option<f64> {
        let bw = self.btl_bw();
        let rtt = self.min_rtt?;
        (bw > 0.0).then_some(bw * rtt.as_secs_f64())
    }

    /// The model's rate times the gain; in Startup at least the gain times a window per
    /// round trip (the BBR draft's initial pacing rate, kept as the window grows).
    /// Without that floor, samples taken while the association carried only a few small
    /// messages (a request before a file) set a rate of a few KB/s, and Startup would
    /// need many round trips just to climb back to the initial window.
    fn pacing_rate(&self) -> Option<f64> {
        let model = self.btl_bw() * self.pacing_gain;
        let floor = match self.min_rtt {
            Some(rtt) if !self.filled_pipe && !rtt.is_zero() => {
                HIGH_GAIN * f64::from(self.cwnd) / rtt.as_secs_f64()
            }
            _ => 0.0,
        };
        let rate = model.max(floor);
        (rate > 0.0).then_some(rate)
    }

    /// Called for every DATA chunk (new or retransmitted) as it is sent, with the
    /// bytes in flight before it. Returns the snapshot to keep with the chunk.
    pub(crate) fn on_send(&mut self, now: Instant, inflight: usize, len: usize) -> SendSnapshot {
        if inflight == 0 {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
            if self.app_limited_until > 0 {
                self.idle_restart = true;
            }
        }
        if let Some(rate) = self.pacing_rate() {
            let credit = now.checked_sub(PACING_QUANTUM).unwrap_or(now);
            let base = self.pace_next.map_or(credit, |t| t.max(credit));
            self.pace_next = Some(base + Duration::from_secs_f64(len as f64 / rate));
        }
        SendSnapshot {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited: self.app_limited_until > 0,
        }
    }

    /// When the pacer would allow the next chunk if `queued` more bytes went out first,
    /// if it would hold that chunk back at `now`.
    pub(crate) fn pacing_wait_after(&self, now: Instant, queued: usize) -> Option<Instant> {
        let rate = self.pacing_rate()?;
        let credit = now.checked_sub(PACING_QUANTUM).unwrap_or(now);
        let base = self.pace_next.map_or(credit, |t| t.max(credit));
        let next = base + Duration::from_secs_f64(queued as f64 / rate);
        (next > now).then_some(next)
    }

    /// A controller that already measured `rate` bytes/s (tests of the pacer's users).
    #[cfg(test)]
    pub(crate) fn measured_for_test(mtu: u32, rate: f64) -> Self {
        let mut bbr = Self::new(mtu, 10 * mtu);
        bbr.bw_samples.push((0, rate));
        bbr
    }

    /// A controller that already measured the path's minimum round trip (tests of the
    /// windows sized by it).
    #[cfg(test)]
    pub(crate) fn with_min_rtt_for_test(mut self, rtt: Duration) -> Self {
        self.min_rtt = Some(rtt);
        self
    }

    /// When the pacer next allows new DATA, if it holds it back at `now`.
    pub(crate) fn pacing_wait(&self, now: Instant) -> Option<Instant> {
        self.pace_next.filter(|t| *t > now)
    }

    /// The sender ran out of data to send while the window had room: samples until
    /// everything now in flight is delivered say nothing about the path's capacity.
    pub(crate) fn on_app_limited(&mut self, inflight: usize) {
        self.app_limited_until = (self.delivered + inflight as u64).max(1);
    }

    /// Called once per SACK that newly acknowledged `acked` bytes. `sample` is the
    /// snapshot and last send time of the most recently sent chunk among those newly
    /// acknowledged; `rtt` a round-trip sample if one was taken (Karn's rule applies);
    /// `inflight` the bytes still outstanding.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        acked: u64,
        sample: Option<(SendSnapshot, Instant)>,
        rtt: Option<Duration>,
        inflight: usize,
    ) {
        if acked == 0 {
            return;
        }
        self.delivered += acked;
        self.delivered_time = Some(now);
        if self.app_limited_until > 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        if let Some(rtt) = rtt {
            self.update_min_rtt(now, rtt);
        }
        let mut round_start = false;
        if let Some((snap, sent_at)) = sample {
            if snap.delivered >= self.next_round_delivered {
                self.next_round_delivered = self.delivered;
                self.round += 1;
                round_start = true;
            }
            self.update_bw(now, &snap, sent_at);
            self.first_sent_time = Some(sent_at);
        }
        if round_start && !self.filled_pipe {
            self.check_full_pipe();
            let delivered = self.delivered - self.round_start_delivered;
            if self.round_lost >= STARTUP_LOSS_PACKETS * u64::from(self.mtu)
                && self.round_lost as f64 > STARTUP_LOSS_RATE * delivered as f64
            {
                self.filled_pipe = true;
            }
        }
        if round_start {
            self.round_lost = 0;
            self.round_start_delivered = self.delivered;
        }
        self.update_ack_aggregation(now, acked, round_start);
        self.update_mode(now, inflight, round_start);
        self.update_cwnd(acked);
        self.idle_restart = false;
        if round_start {
            log::trace!(
                "bbr round {}: {:?} bw {:.0} B/s min_rtt {:?} cwnd {} inflight {} delivered {} pacing_gain {:.2}",
                self.round,
                self.mode,
                self.btl_bw(),
                self.min_rtt,
                self.cwnd,
                inflight,
                self.delivered,
                self.pacing_gain
            );
        }
    }

    /// Whether the RTT minimum is older than [`MIN_RTT_WINDOW`].
    fn min_rtt_expired(&self, now: Instant) -> bool {
        self.min_rtt_stamp
            .is_some_and(|t| now.duration_since(t) > MIN_RTT_WINDOW)
    }

    /// A lower sample is the new minimum at once, and one within an eighth above it
    /// confirms it. An expired minimum is measured again by ProbeRTT, with the queue
    /// drained, once the pipe is full: a sample taken with a full window in flight
    /// includes the queue that window built, and taken as the minimum it would raise the
    /// window, which raises the queue (the window would ratchet up every ten seconds).
    /// Before that, and on a restart from idle, the newest sample replaces it.
    ///
    /// Samples equal to the minimum are rare on a real path (a few microseconds of
    /// jitter), so without the confirmation a sender that keeps the queue near empty
    /// still spends half its window for 200 ms and a round trip every ten seconds: 2–3 %
    /// of a 1 Gbit/s transfer at 100–200 ms.
    fn update_min_rtt(&mut self, now: Instant, rtt: Duration) {
        if self.mode == Mode::ProbeRtt {
            self.probe_rtt_min = Some(self.probe_rtt_min.map_or(rtt, |m| m.min(rtt)));
        }
        let expired = (!self.filled_pipe || self.idle_restart) && self.min_rtt_expired(now);
        if self.min_rtt.is_none_or(|m| rtt <= m) || expired {
            self.min_rtt = Some(rtt);
            self.min_rtt_stamp = Some(now);
        } else if self
            .min_rtt
            .is_some_and(|m| rtt <= m + m / SIMILAR_RTT_FRACTION)
        {
            self.min_rtt_stamp = Some(now);
        }
    }

    fn update_bw(&mut self, now: Instant, snap: &SendSnapshot, sent_at: Instant) {
        let (Some(delivered_time), Some(first_sent)) = (snap.delivered_time, snap.first_sent_time)
        else {
            return;
        };
        let send_elapsed = sent_at.saturating_duration_since(first_sent);
        let ack_elapsed = now.saturating_duration_since(delivered_time);
        let interval = send_elapsed.max(ack_elapsed);
        if interval.is_zero() || self.min_rtt.is_some_and(|m| interval < m) {
            return;
        }
        let bw = (self.delivered - snap.delivered) as f64 / interval.as_secs_f64();
        if snap.app_limited && bw < self.btl_bw() {
            return;
        }
        let oldest = self.round.saturating_sub(BW_WINDOW_ROUNDS);
        self.bw_samples.retain(|s| s.0 > oldest && s.1 > bw);
        self.bw_samples.push((self.round, bw));
    }

    /// Acknowledgements that arrive in bursts (a receiver that processes packets in
    /// batches, delayed SACKs, a busy CPU) leave the sender idle between them unless the
    /// window covers what each burst releases: measure how far acknowledgements run
    /// ahead of the bandwidth estimate (Linux BBR's `extra_acked`).
    fn update_ack_aggregation(&mut self, now: Instant, acked: u64, round_start: bool) {
        if round_start {
            self.extra_acked_rounds += 1;
            if self.extra_acked_rounds >= EXTRA_ACKED_WINDOW_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_half ^= 1;
                self.extra_acked[self.extra_acked_half] = 0;
            }
        }
        let start = *self.ack_epoch_start.get_or_insert(now);
        let mut expected = self.btl_bw() * now.saturating_duration_since(start).as_secs_f64();
        if self.ack_epoch_acked as f64 <= expected {
            // Acknowledgements are at or behind the estimated rate: a new epoch.
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = Some(now);
            expected = 0.0;
        }
        self.ack_epoch_acked = self.ack_epoch_acked.saturating_add(acked);
        let extra = (self.ack_epoch_acked as f64 - expected).min(f64::from(self.cwnd));
        let half = &mut self.extra_acked[self.extra_acked_half];
        *half = (*half).max(extra as u64);
    }

    /// Window allowance for ack aggregation, once the pipe is known to be full.
    fn aggregation_allowance(&self) -> f64 {
        if !self.filled_pipe {
            return 0.0;
        }
        let extra = self.extra_acked[0].max(self.extra_acked[1]) as f64;
        extra.min(self.btl_bw() * EXTRA_ACKED_MAX.as_secs_f64())
    }

    /// What the pacer releases in one burst: its credit at the estimated bandwidth, at
    /// least two packets, at most [`MAX_SEND_QUANTUM`]. The window holds three of them
    /// beyond the model's products, so that on a path whose round trip is shorter than
    /// the time between the driver's wake-ups (a LAN) the bursts in flight do not leave
    /// the window short (Linux BBR's quantization budget).
    fn send_quantum(&self) -> f64 {
        let mtu = f64::from(self.mtu);
        let at_rate = self.btl_bw() * PACING_QUANTUM.as_secs_f64();
        at_rate.min(MAX_SEND_QUANTUM).max(2.0 * mtu)
    }

    fn check_full_pipe(&mut self) {
        if self.app_limited_until > 0 {
            return;
        }
        let bw = self.btl_bw();
        if bw >= self.full_bw * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        if self.full_bw_rounds >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn update_mode(&mut self, now: Instant, inflight: usize, round_start: bool) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = 1.0 / HIGH_GAIN;
            self.cwnd_gain = STARTUP_CWND_GAIN;
        }
        if self.mode == Mode::Drain && self.bdp().is_none_or(|bdp| inflight as f64 <= bdp) {
            self.enter_probe_bw(now);
        }
        if self.mode == Mode::ProbeBw {
            self.advance_cycle(now, inflight);
        }
        self.check_probe_rtt(now, inflight, round_start);
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = 2.0;
        // Start anywhere but the draining phase (which follows a probe).
        self.cycle_index = if self.round.is_multiple_of(2) { 2 } else { 0 };
        self.pacing_gain = CYCLE[self.cycle_index];
        self.cycle_stamp = Some(now);
    }

    fn advance_cycle(&mut self, now: Instant, inflight: usize) {
        let Some(min_rtt) = self.min_rtt else {
            return;
        };
        let elapsed = self
            .cycle_stamp
            .is_none_or(|t| now.duration_since(t) > min_rtt);
        let bdp = self.bdp().unwrap_or(0.0);
        let next = match self.pacing_gain {
            // Probing: stay until the probe has put 1.25 BDP in flight (or a round trip).
            g if g > 1.0 => elapsed && inflight as f64 >= bdp * g,
            // Draining: leave as soon as the queue the probe built is gone.
            g if g < 1.0 => elapsed || inflight as f64 <= bdp,
            _ => elapsed,
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
            self.pacing_gain = CYCLE[self.cycle_index];
            self.cycle_stamp = Some(now);
        }
    }

    fn check_probe_rtt(&mut self, now: Instant, inflight: usize, round_start: bool) {
        if self.mode != Mode::ProbeRtt
            && self.filled_pipe
            && !self.idle_restart
            && self.min_rtt_expired(now)
        {
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = 1.0;
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
            self.probe_rtt_done = None;
            self.probe_rtt_min = None;
        }
        if self.mode != Mode::ProbeRtt {
            return;
        }
        // The window holds for PROBE_RTT_DURATION and at least one round trip, counted
        // from when what is in flight has come down to it (as Linux BBR does).
        if self.probe_rtt_done.is_none() && inflight as u32 <= self.probe_rtt_cwnd() {
            self.probe_rtt_done = Some(now + PROBE_RTT_DURATION);
            self.probe_rtt_round_done = false;
            self.next_round_delivered = self.delivered;
        } else if self.probe_rtt_done.is_some() && round_start {
            self.probe_rtt_round_done = true;
        }
        if let Some(done) = self.probe_rtt_done
            && now >= done
            && self.probe_rtt_round_done
        {
            // What the drained path showed is the minimum now, also when it is higher
            // than the expired one (the path changed).
            if let Some(rtt) = self.probe_rtt_min.take() {
                self.min_rtt = Some(rtt);
            }
            self.min_rtt_stamp = Some(now);
            self.cwnd = self.cwnd.max(self.prior_cwnd);
            self.enter_probe_bw(now);
        }
    }

    /// ProbeRTT's window: [`PROBE_RTT_CWND_GAIN`] times the bandwidth-delay product, at
    /// least the window's floor.
    fn probe_rtt_cwnd(&self) -> u32 {
        let floor = self.mtu * MIN_CWND_PACKETS;
        let half = self.bdp().map_or(0.0, |bdp| bdp * PROBE_RTT_CWND_GAIN);
        floor.max(half.min(f64::from(u32::MAX)) as u32)
    }

    fn update_cwnd(&mut self, acked: u64) {
        let floor = self.mtu * MIN_CWND_PACKETS;
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
            return;
        }
        let acked = u32::try_from(acked).unwrap_or(u32::MAX);
        let target = self.bdp().map(|bdp| {
            let t = bdp * self.cwnd_gain + self.aggregation_allowance() + 3.0 * self.send_quantum();
            t.min(f64::from(u32::MAX)) as u32
        });
        self.cwnd = match target {
            Some(target) if self.filled_pipe => self.cwnd.saturating_add(acked).min(target),
            Some(target) if self.cwnd < target => self.cwnd.saturating_add(acked),
            None => self.cwnd.saturating_add(acked),
            _ => self.cwnd,
        }
        .max(floor)
        .max(if self.filled_pipe {
            0
        } else {
            self.initial_cwnd
        });
    }

    /// DATA of `bytes` was found lost (gap reports or RACK).
    pub(crate) fn on_lost(&mut self, bytes: usize) {
        self.round_lost += bytes as u64;
    }

    /// The retransmission timer expired: everything in flight is presumed lost. Keep the
    /// model; restart from a small window that the next acknowledgements regrow.
    pub(crate) fn on_rto(&mut self) {
        self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        self.cwnd = self.mtu * MIN_CWND_PACKETS;
        self.pace_next = None;
    }

    /// After a timeout, the window the model allowed before it (restored once the
    /// retransmissions are acknowledged).
    pub(crate) fn on_recovered(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        self.prior_cwnd = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u32 = 1200;

    /// Feed a steady flow at `rate` bytes/s over `rtt` for `rounds` round trips, one
    /// acknowledgement per `MTU` bytes, and return the controller.
    fn steady(rate: f64, rtt: Duration, rounds: u32) -> Bbr {
        let mut bbr = Bbr::new(MTU, 4 * MTU);
        let start = Instant::now();
        let per_packet = Duration::from_secs_f64(f64::from(MTU) / rate);
        let packets = (rate * rtt.as_secs_f64() / f64::from(MTU)).ceil() as u32;
        let mut sent = Vec::new();
        let mut t = start;
        for _ in 0..packets {
            sent.push((bbr.on_send(t, 1, MTU as usize), t));
            t += per_packet;
        }
        for _ in 0..rounds * packets {
            let (snap, at) = sent.remove(0);
            let now = at + rtt;
            bbr.on_ack(
                now,
                u64::from(MTU),
                Some((snap, at)),
                Some(rtt),
                packets as usize,
            );
            sent.push((bbr.on_send(now, packets as usize, MTU as usize), now));
        }
        bbr
    }

    /// A sender limited only by its window on a path of `rate` bytes/s whose receiver
    /// acknowledges in bursts: once every `ack_interval`, everything that arrived `rtt`
    /// or more before. Returns the controller and the rate achieved over the second half
    /// of `duration`.
    fn bursty_acks(
        rate: f64,
        rtt: Duration,
        ack_interval: Duration,
        duration: Duration,
    ) -> (Bbr, f64) {
        let mut bbr = Bbr::new(MTU, 10 * MTU);
        let start = Instant::now();
        let end = start + duration;
        let half = start + duration / 2;
        let per_packet = Duration::from_secs_f64(f64::from(MTU) / rate);
        let mut outstanding = std::collections::VecDeque::new();
        let mut inflight = 0usize;
        let mut t = start;
        let mut next_ack = start + ack_interval;
        let mut delivered_after_half = 0u64;
        while next_ack < end {
            if inflight + MTU as usize <= bbr.cwnd() as usize && t < next_ack {
                outstanding.push_back((bbr.on_send(t, inflight, MTU as usize), t));
                inflight += MTU as usize;
                t += per_packet;
                continue;
            }
            let mut acked = 0u64;
            let mut newest = None;
            while let Some(&(snap, sent)) = outstanding.front() {
                if sent + rtt > next_ack {
                    break;
                }
                outstanding.pop_front();
                acked += u64::from(MTU);
                newest = Some((snap, sent));
            }
            inflight -= acked as usize;
            if next_ack >= half {
                delivered_after_half += acked;
            }
            let rtt_sample = newest.map(|(_, sent)| next_ack - sent);
            bbr.on_ack(next_ack, acked, newest, rtt_sample, inflight);
            t = t.max(next_ack);
            next_ack += ack_interval;
        }
        let achieved = delivered_after_half as f64 / (duration / 2).as_secs_f64();
        (bbr, achieved)
    }

    /// A sender of one packet per millisecond (well within ProbeRTT's window) on a path
    /// of `rtt`, from `start` for `ms` milliseconds; `each` sees the controller after
    /// every acknowledgement.
    fn one_packet_per_ms(
        bbr: &mut Bbr,
        start: Instant,
        rtt: Duration,
        ms: u32,
        mut each: impl FnMut(&Bbr, Instant),
    ) {
        let mut outstanding = std::collections::VecDeque::new();
        let mut now = start;
        for _ in 0..ms {
            now += Duration::from_millis(1);
            while let Some(&(snap, sent)) = outstanding.front() {
                if sent + rtt > now {
                    break;
                }
                outstanding.pop_front();
                let inflight = outstanding.len() * MTU as usize;
                bbr.on_ack(now, u64::from(MTU), Some((snap, sent)), Some(rtt), inflight);
                each(bbr, now);
            }
            let inflight = outstanding.len() * MTU as usize;
            outstanding.push_back((bbr.on_send(now, inflight, MTU as usize), now));
        }
    }

    /// A controller in ProbeBW on a 12.5 MB/s path of `rtt`, and an instant just after
    /// its RTT minimum expired.
    fn expiring(rtt: Duration) -> (Bbr, Instant) {
        let bbr = steady(12.5e6, rtt, 30);
        let now = bbr.min_rtt_stamp.expect("a minimum") + MIN_RTT_WINDOW;
        (bbr, now + Duration::from_millis(1))
    }

    #[test]
    fn bbr_lan_acks_every_millisecond_window_keeps_link_busy() {
        // A LAN: 100 µs round trip, but the receiver's acknowledgements come once per
        // millisecond (its driver's wake-ups). Two BDPs (20 KB) would let the sender
        // move a fifth of the link; the send quanta in the window keep it busy.
        let rate = 100e6;
        let (bbr, achieved) = bursty_acks(
            rate,
            Duration::from_micros(100),
            Duration::from_millis(1),
            Duration::from_millis(400),
        );
        assert!(
            achieved > 0.9 * rate,
            "achieved {achieved} of {rate}, cwnd {}",
            bbr.cwnd()
        );
    }

    #[test]
    fn bbr_aggregated_acks_window_grows_by_the_burst() {
        // Acknowledgements every 40 ms on a 5 ms path (a Wi-Fi hop aggregating them):
        // each burst releases 40 ms of data, far more than two BDPs and the send quanta
        // (~160 KB). The ack-aggregation allowance must cover it.
        let rate = 12.5e6;
        let (bbr, achieved) = bursty_acks(
            rate,
            Duration::from_millis(5),
            Duration::from_millis(40),
            Duration::from_secs(8),
        );
        assert!(
            achieved > 0.8 * rate,
            "achieved {achieved} of {rate}, cwnd {}",
            bbr.cwnd()
        );
        assert!(bbr.cwnd() as f64 <= 2.0 * rate * 0.005 + rate * 0.1 + 3.0 * 64.0 * 1024.0);
    }

    #[test]
    fn bbr_steady_flow_estimates_rate_and_two_bdp_window() {
        let rate = 12.5e6; // 100 Mbit/s
        let rtt = Duration::from_millis(40);
        let bbr = steady(rate, rtt, 30);
        let bw = bbr.btl_bw();
        assert!((bw / rate - 1.0).abs() < 0.05, "bw {bw}");
        assert_eq!(bbr.min_rtt, Some(rtt));
        let bdp = rate * rtt.as_secs_f64();
        let cwnd = f64::from(bbr.cwnd());
        assert!(
            cwnd > 1.8 * bdp && cwnd < 2.2 * bdp,
            "cwnd {cwnd} bdp {bdp}"
        );
        assert_eq!(bbr.mode, Mode::ProbeBw);
    }

    #[test]
    fn bbr_startup_window_stays_within_two_bdp() {
        // A one-BDP queue and the pipe hold two BDPs: Startup, which still doubles its
        // pacing rate each round, must not keep more than that in flight.
        let rate = 12.5e6;
        let rtt = Duration::from_millis(40);
        let bbr = steady(rate, rtt, 3);
        assert_eq!(bbr.mode, Mode::Startup);
        let bdp = rate * rtt.as_secs_f64();
        let cwnd = f64::from(bbr.cwnd());
        assert!(cwnd > 1.9 * bdp, "cwnd {cwnd} bdp {bdp}");
        // Plus three send quanta (1 ms each at the estimated rate, which the last
        // round's samples put up to a packet per round trip above the true rate).
        let quanta = 3.0 * bbr.btl_bw() * PACING_QUANTUM.as_secs_f64();
        assert!(
            cwnd <= 2.0 * bdp + quanta + f64::from(2 * MTU),
            "cwnd {cwnd} bdp {bdp} bw {}",
            bbr.btl_bw()
        );
    }

    #[test]
    fn bbr_startup_after_small_messages_paces_a_window_within_a_round_trip() {
        // A few small messages first (a request before a file): their samples say a
        // few hundred bytes per second. Startup must still send its window within a
        // round trip, not at the gain times those samples.
        let mut bbr = Bbr::new(MTU, 10 * MTU);
        let rtt = Duration::from_millis(200);
        let mut now = Instant::now();
        for _ in 0..3 {
            let snap = bbr.on_send(now, 0, 100);
            bbr.on_app_limited(100);
            now += rtt;
            bbr.on_ack(now, 100, Some((snap, now - rtt)), Some(rtt), 0);
        }
        assert_eq!(bbr.mode, Mode::Startup);
        assert!(bbr.btl_bw() < 1000.0, "bw {}", bbr.btl_bw());
        let start = now;
        for i in 0..10 {
            if let Some(wait) = bbr.pacing_wait(now) {
                now = wait;
            }
            bbr.on_send(now, i * MTU as usize, MTU as usize);
        }
        let took = now - start;
        assert!(took < rtt / 2, "ten packets took {took:?}");
    }

    #[test]
    fn bbr_startup_heavy_loss_in_a_round_ends_startup() {
        let mut bbr = Bbr::new(MTU, 4 * MTU);
        let start = Instant::now();
        let rtt = Duration::from_millis(40);
        let snap = bbr.on_send(start, 0, MTU as usize);
        // A round trip that delivered 100 packets and lost 10 (10 %: above 2 % and 8).
        bbr.on_lost(10 * MTU as usize);
        bbr.on_ack(
            start + rtt,
            100 * u64::from(MTU),
            Some((snap, start)),
            Some(rtt),
            0,
        );
        assert!(bbr.filled_pipe);
        assert_ne!(bbr.mode, Mode::Startup);
    }

    #[test]
    fn bbr_startup_random_loss_below_threshold_keeps_startup() {
        let mut bbr = Bbr::new(MTU, 4 * MTU);
        let start = Instant::now();
        let rtt = Duration::from_millis(40);
        let mut delivered = 100;
        for round in 0..3u32 {
            let sent_at = start + rtt * round;
            let snap = bbr.on_send(sent_at, 0, MTU as usize);
            bbr.on_lost(MTU as usize); // 1 % of the round
            bbr.on_ack(
                sent_at + rtt,
                delivered * u64::from(MTU),
                Some((snap, sent_at)),
                Some(rtt),
                0,
            );
            delivered *= 2;
        }
        assert_eq!(bbr.mode, Mode::Startup);
    }

    #[test]
    fn bbr_min_rtt_expired_queued_sample_probes_rtt_instead_of_raising_window() {
        let rtt = Duration::from_millis(40);
        let (mut bbr, now) = expiring(rtt);
        let before = bbr.cwnd();
        let bdp = 12.5e6 * rtt.as_secs_f64();
        // Ten seconds on, the first sample comes from behind a queue (five times the
        // path's RTT). It must not become the minimum: ProbeRTT measures it again.
        bbr.on_ack(now, u64::from(MTU), None, Some(5 * rtt), before as usize);
        assert_eq!(bbr.mode, Mode::ProbeRtt);
        assert_eq!(bbr.min_rtt, Some(rtt));
        let probe_cwnd = f64::from(bbr.cwnd());
        assert!(
            probe_cwnd <= 0.5 * bdp * 1.05 && probe_cwnd >= 0.5 * bdp * 0.95,
            "ProbeRTT window {probe_cwnd}, bdp {bdp}"
        );
        // The path has meanwhile become 2 ms longer.
        let longer = rtt + Duration::from_millis(2);
        one_packet_per_ms(&mut bbr, now, longer, 400, |_, _| {});
        assert_eq!(bbr.mode, Mode::ProbeBw);
        assert_eq!(bbr.min_rtt, Some(longer), "the drained path's RTT");
        assert!(
            bbr.cwnd() >= before,
            "window {} before {before}",
            bbr.cwnd()
        );
    }

    #[test]
    fn bbr_min_rtt_expired_similar_sample_confirms_minimum_without_probe_rtt() {
        // Ten seconds on, a sample an eighth above the minimum (the queue nearly empty):
        // the minimum stays and holds ten seconds more, and no ProbeRTT runs.
        let rtt = Duration::from_millis(200);
        let (mut bbr, now) = expiring(rtt);
        let cwnd = bbr.cwnd();
        bbr.on_ack(
            now,
            u64::from(MTU),
            None,
            Some(rtt + rtt / 8),
            cwnd as usize,
        );
        assert_eq!(bbr.mode, Mode::ProbeBw);
        assert_eq!(bbr.min_rtt, Some(rtt));
        assert_eq!(bbr.min_rtt_stamp, Some(now));
        assert_eq!(bbr.cwnd(), cwnd);
        // Just above that, the queue is the sample's: ProbeRTT measures again.
        let (mut bbr, now) = expiring(rtt);
        let above = rtt + rtt / 8 + Duration::from_millis(1);
        bbr.on_ack(now, u64::from(MTU), None, Some(above), cwnd as usize);
        assert_eq!(bbr.mode, Mode::ProbeRtt);
        assert_eq!(bbr.min_rtt, Some(rtt));
    }

    #[test]
    fn bbr_probe_rtt_holds_its_duration_or_one_round_trip_then_ends() {
        // From the moment what is in flight is down to ProbeRTT's window: 200 ms on a
        // path shorter than that, one round trip on a longer one; not up to a round
        // trip more, waiting for a round that began before.
        for path in [150, 300] {
            let rtt = Duration::from_millis(path);
            let (mut bbr, now) = expiring(rtt);
            let queued = 2 * rtt;
            bbr.on_ack(now, u64::from(MTU), None, Some(queued), bbr.cwnd() as usize);
            assert_eq!(bbr.mode, Mode::ProbeRtt);
            let (mut drained, mut ended) = (None, None);
            one_packet_per_ms(&mut bbr, now, rtt, 1000, |bbr, t| {
                if drained.is_none() && bbr.probe_rtt_done.is_some() {
                    drained = Some(t);
                }
                if ended.is_none() && bbr.mode != Mode::ProbeRtt {
                    ended = Some(t);
                }
            });
            let (Some(drained), Some(ended)) = (drained, ended) else {
                panic!("ProbeRTT on a {path} ms path did not run its course");
            };
            let expected = PROBE_RTT_DURATION.max(rtt);
            let took = ended - drained;
            assert!(
                took >= expected && took <= expected + Duration::from_millis(2),
                "{path} ms path: ProbeRTT held {took:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn bbr_restart_after_idle_expired_minimum_takes_sample_without_probe_rtt() {
        // The sender ran out of data and everything was delivered; eleven seconds
        // later it sends again. Nothing of its own is queued, so the first sample is the
        // path's: it becomes the minimum, and the transfer does not start in ProbeRTT.
        let rtt = Duration::from_millis(40);
        let (mut bbr, now) = expiring(rtt);
        bbr.on_app_limited(0);
        let longer = rtt + Duration::from_millis(5);
        let snap = bbr.on_send(now, 0, MTU as usize);
        bbr.on_ack(
            now + longer,
            u64::from(MTU),
            Some((snap, now)),
            Some(longer),
            0,
        );
        assert_eq!(bbr.mode, Mode::ProbeBw);
        assert_eq!(bbr.min_rtt, Some(longer));
        // Only that acknowledgement: a minimum that expires later is probed again.
        let later = now + longer + MIN_RTT_WINDOW + Duration::from_millis(1);
        let queued = 2 * longer;
        bbr.on_ack(
            later,
            u64::from(MTU),
            None,
            Some(queued),
            100 * MTU as usize,
        );
        assert_eq!(bbr.mode, Mode::ProbeRtt);
        assert_eq!(bbr.min_rtt, Some(longer));
    }

    #[test]
    fn bbr_long_flow_probe_rtt_every_ten_seconds_keeps_rate() {
        // Twenty-four seconds on a 10 ms path: ProbeRTT runs twice in the measured
        // second half, at half a BDP for 200 ms and a round trip.
        let rate = 12.5e6;
        let (bbr, achieved) = bursty_acks(
            rate,
            Duration::from_millis(10),
            Duration::from_millis(1),
            Duration::from_secs(24),
        );
        assert!(
            achieved > 0.95 * rate,
            "achieved {achieved} of {rate}, cwnd {}",
            bbr.cwnd()
        );
    }

    #[test]
    fn bbr_rto_shrinks_window_recovery_restores_it() {
        let mut bbr = steady(12.5e6, Duration::from_millis(40), 30);
        let before = bbr.cwnd();
        bbr.on_rto();
        assert_eq!(bbr.cwnd(), MIN_CWND_PACKETS * MTU);
        bbr.on_recovered();
        assert_eq!(bbr.cwnd(), before);
    }

    #[test]
    fn bbr_pacer_wait_after_queued_bytes_charges_them_at_the_pacing_rate() {
        let rate = 1e6;
        let bbr = Bbr::measured_for_test(MTU, rate);
        let now = Instant::now() + Duration::from_secs(100);
        let pacing = rate * HIGH_GAIN;
        // Within the burst credit nothing waits; beyond it, the wait is what the queued
        // bytes take at the pacing rate, less the credit.
        let credit = (pacing * PACING_QUANTUM.as_secs_f64()) as usize;
        assert_eq!(bbr.pacing_wait_after(now, 0), None);
        assert_eq!(bbr.pacing_wait_after(now, credit / 2), None);
        let queued = 100 * MTU as usize;
        let wait = bbr.pacing_wait_after(now, queued).expect("held back");
        let expected = now - PACING_QUANTUM + Duration::from_secs_f64(queued as f64 / pacing);
        assert!(
            wait.max(expected) - wait.min(expected) < Duration::from_micros(1),
            "{wait:?} vs {expected:?}"
        );
        // Without a rate (no sample yet) nothing is paced.
        assert_eq!(Bbr::new(MTU, 4 * MTU).pacing_wait_after(now, queued), None);
    }

    #[test]
    fn bbr_pacer_spaces_sends_at_gain_times_bandwidth() {
        let mut bbr = steady(12.5e6, Duration::from_millis(40), 30);
        let now = Instant::now() + Duration::from_secs(100);
        bbr.pace_next = None;
        // The first chunk uses the burst credit; the pacer then holds the next ones.
        let mut t = now;
        let mut sends = 0;
        while bbr.pacing_wait(now).is_none() && sends < 10_000 {
            bbr.on_send(t, 1, MTU as usize);
            sends += 1;
        }
        let credit = bbr.pacing_rate().unwrap_or(0.0) * PACING_QUANTUM.as_secs_f64();
        assert!(
            f64::from(sends * MTU) <= credit + 2.0 * f64::from(MTU),
            "{sends} sends in one instant, credit {credit}"
        );
        t += Duration::from_secs(1);
        assert!(bbr.pacing_wait(t).is_none());
    }
}
