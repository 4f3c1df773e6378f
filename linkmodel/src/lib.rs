//! The sans-IO link model: given a datagram's length and the current instant, decide
//! whether it is lost, dropped by a full queue, or delivered, and when.
//!
//! Nothing here touches a socket or a clock; the caller passes `now` in and acts on the
//! [`Verdict`]. Randomness comes from an injected RNG, so the same seed always yields
//! the same sequence of decisions for the same sequence of inputs.
//!
//! Two users apply the very same model: peershare's in-process network simulator
//! (`peershare::rtc::netsim`, which re-exports this crate as `netsim::link`), one [`Link`]
//! per simulated socket; and the WAN emulator `peershare-wanem` (`wanem/`), one [`Link`]
//! per direction of the emulated path between two network namespaces.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How datagrams are lost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// No random loss.
    #[default]
    None,
    /// Each datagram is lost independently with probability `p` (Bernoulli).
    Random {
        /// Loss probability per datagram, 0.0–1.0.
        p: f64,
    },
    /// Gilbert–Elliott two-state Markov chain. In state Good a datagram is lost with
    /// probability `loss_good`, in state Bad with `loss_bad`; after each datagram the chain
    /// moves Good→Bad with probability `good_to_bad` and Bad→Good with `bad_to_good`.
    ///
    /// The chain is in Bad a fraction `good_to_bad / (good_to_bad + bad_to_good)` of the
    /// time, and a stay in Bad lasts `1 / bad_to_good` datagrams on average.
    GilbertElliott {
        /// P(Good → Bad) per datagram.
        good_to_bad: f64,
        /// P(Bad → Good) per datagram.
        bad_to_good: f64,
        /// Loss probability in Good.
        loss_good: f64,
        /// Loss probability in Bad.
        loss_bad: f64,
    },
}

impl Loss {
    /// Independent loss with probability `p`.
    pub fn random(p: f64) -> Self {
        Loss::Random { p }
    }

    /// Bursty loss (the simple Gilbert model: nothing lost in Good, everything in Bad)
    /// with an average loss fraction `mean_loss` (< 1) in bursts of `mean_burst` (≥ 1)
    /// datagrams on average.
    pub fn bursty(mean_loss: f64, mean_burst: f64) -> Self {
        let bad_to_good = 1.0 / mean_burst.max(1.0);
        let mean_loss = mean_loss.clamp(0.0, 0.999);
        Loss::GilbertElliott {
            good_to_bad: (bad_to_good * mean_loss / (1.0 - mean_loss)).min(1.0),
            bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// The long-run fraction of datagrams this loss model drops.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Random { p } => p,
            Loss::GilbertElliott {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let total = good_to_bad + bad_to_good;
                if total <= 0.0 {
                    return loss_good;
                }
                let bad = good_to_bad / total;
                (1.0 - bad) * loss_good + bad * loss_bad
            }
        }
    }
}

/// One direction of a link: applied by every simulated socket to what it sends, or by the
/// emulator to one direction of its path. With the same configuration both ways, the
/// round-trip time is twice `delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Random or bursty loss.
    pub loss: Loss,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each datagram's delay is `delay` ± up to `jitter` (uniform), never below zero.
    /// Jitter alone never reorders: a datagram is never delivered before the previous one
    /// (unless that one was picked for reordering).
    pub jitter: Duration,
    /// Probability that a datagram is held back by an extra `reorder_delay`, so that
    /// later datagrams overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Bottleneck rate in bytes per second; `None` = unlimited. Datagrams are serialised
    /// at this rate (a FIFO queue in front of the link) before the propagation delay.
    pub rate: Option<u64>,
    /// Bytes the bottleneck queue holds; a datagram that does not fit is dropped
    /// (drop-tail). Only used with a `rate`.
    pub queue_bytes: usize,
}

impl Default for LinkConfig {
    /// A perfect link: no loss, no delay, no rate limit.
    fn default() -> Self {
        Self {
            loss: Loss::None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            rate: None,
            queue_bytes: 1024 * 1024,
        }
    }
}

impl LinkConfig {
    /// A perfect link (same as `default()`).
    pub fn perfect() -> Self {
        Self::default()
    }

    /// A WAN-like link: `rtt / 2` one-way delay with ±`rtt / 20` jitter and random
    /// loss `p`.
    pub fn wan(rtt: Duration, p: f64) -> Self {
        Self::default()
            .with_delay(rtt / 2, rtt / 20)
            .with_loss(Loss::random(p))
    }

    /// Set the loss model.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Set the one-way delay and its jitter.
    pub fn with_delay(mut self, delay: Duration, jitter: Duration) -> Self {
        self.delay = delay;
        self.jitter = jitter;
        self
    }

    /// Hold back a fraction `p` of the datagrams by `extra`.
    pub fn with_reorder(mut self, p: f64, extra: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = extra;
        self
    }

    /// Limit the link to `bytes_per_sec` with a drop-tail queue of `queue_bytes`.
    pub fn with_rate(mut self, bytes_per_sec: u64, queue_bytes: usize) -> Self {
        self.rate = Some(bytes_per_sec.max(1));
        self.queue_bytes = queue_bytes;
        self
    }
}

/// Why the link dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Random or bursty loss.
    Loss,
    /// The bottleneck queue was full.
    Overflow,
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It never arrives.
    Drop(DropReason),
    /// Hand it to the real socket at `at` (at once if `at <= now`).
    Deliver {
        /// When to send it.
        at: Instant,
        /// Whether it was picked for reordering (held back by the extra delay).
        reordered: bool,
    },
}

/// The state of one direction of a link: the RNG, the Gilbert–Elliott state and the
/// queue. One per simulated socket, or one per direction of the emulator.
#[derive(Debug, Clone)]
pub struct Link<R = StdRng> {
    rng: R,
    bad: bool,
    /// When the bottleneck has finished serialising everything accepted so far.
    busy_until: Option<Instant>,
    /// Delivery time of the last in-order datagram (jitter never reorders).
    last_at: Option<Instant>,
}

impl Link<StdRng> {
    /// A link whose decisions are fixed by `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(StdRng::seed_from_u64(seed))
    }
}

impl<R: Rng> Link<R> {
    /// A link drawing from `rng`.
    pub fn with_rng(rng: R) -> Self {
        Self {
            rng,
            bad: false,
            busy_until: None,
            last_at: None,
        }
    }

    /// Whether the Gilbert–Elliott chain is in its Bad state.
    pub fn in_bad_state(&self) -> bool {
        self.bad
    }

    /// Decide the fate of a datagram of `len` bytes offered at `now`.
    pub fn decide(&mut self, cfg: &LinkConfig, now: Instant, len: usize) -> Verdict {
        if self.lose(&cfg.loss) {
            return Verdict::Drop(DropReason::Loss);
        }
        let mut at = now;
        if let Some(rate) = cfg.rate {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let backlog = start.duration_since(now).as_secs_f64() * rate as f64;
            if backlog + len as f64 > cfg.queue_bytes as f64 {
                return Verdict::Drop(DropReason::Overflow);
            }
            let done = start + Duration::from_secs_f64(len as f64 / rate as f64);
            self.busy_until = Some(done);
            at = done;
        }
        at += self.one_way_delay(cfg);
        if let Some(last) = self.last_at {
            at = at.max(last);
        }
        let reordered = cfg.reorder > 0.0 && self.rng.random::<f64>() < cfg.reorder;
        if reordered {
            // Later datagrams are not held behind this one.
            return Verdict::Deliver {
                at: at + cfg.reorder_delay,
                reordered: true,
            };
        }
        self.last_at = Some(at);
        Verdict::Deliver {
            at,
            reordered: false,
        }
    }

    fn one_way_delay(&mut self, cfg: &LinkConfig) -> Duration {
        if cfg.jitter.is_zero() {
            return cfg.delay;
        }
        let j = cfg.jitter.as_secs_f64();
        let d = cfg.delay.as_secs_f64() + self.rng.random_range(-j..=j);
        Duration::from_secs_f64(d.max(0.0))
    }

    /// Draw the loss decision for one datagram (and step the Gilbert–Elliott chain).
    pub fn lose(&mut self, loss: &Loss) -> bool {
        match *loss {
            Loss::None => false,
            Loss::Random { p } => self.rng.random::<f64>() < p,
            Loss::GilbertElliott {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let p = if self.bad { loss_bad } else { loss_good };
                let lost = self.rng.random::<f64>() < p;
                let flip = if self.bad { bad_to_good } else { good_to_bad };
                if self.rng.random::<f64>() < flip {
                    self.bad = !self.bad;
                }
                lost
            }
        }
    }
}

/// Derive a socket's seed from the model's seed and the socket's local port
/// (SplitMix64 finaliser), so that sockets of one model draw independent streams.
pub fn socket_seed(model_seed: u64, port: u16) -> u64 {
    let mut z = model_seed ^ (u64::from(port)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, cfg: &LinkConfig, n: usize) -> Vec<Verdict> {
        let mut link = Link::seeded(seed);
        let t0 = Instant::now();
        (0..n)
            .map(|i| link.decide(cfg, t0 + Duration::from_micros(i as u64 * 100), 1200))
            .collect()
    }

    fn lossy_wan() -> LinkConfig {
        LinkConfig::wan(Duration::from_millis(40), 0.05)
            .with_reorder(0.01, Duration::from_millis(5))
    }

    #[test]
    fn link_same_seed_same_decisions() {
        let cfg = lossy_wan();
        let t0 = Instant::now();
        let mut a = Link::seeded(42);
        let mut b = Link::seeded(42);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            assert_eq!(a.decide(&cfg, now, 1200), b.decide(&cfg, now, 1200));
        }
        let bursty = LinkConfig::default().with_loss(Loss::bursty(0.05, 4.0));
        let a: Vec<bool> = run(7, &bursty, 5000)
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        let b: Vec<bool> = run(7, &bursty, 5000)
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn link_different_seed_different_decisions() {
        let cfg = LinkConfig::default().with_loss(Loss::random(0.5));
        assert_ne!(run(1, &cfg, 256), run(2, &cfg, 256));
        assert_ne!(socket_seed(1, 5000), socket_seed(1, 5001));
        assert_ne!(socket_seed(1, 5000), socket_seed(2, 5000));
    }

    #[test]
    fn link_random_loss_fraction_near_p() {
        for p in [0.01, 0.05, 0.3] {
            let cfg = LinkConfig::default().with_loss(Loss::random(p));
            let n = 200_000;
            let lost = run(3, &cfg, n)
                .iter()
                .filter(|v| **v == Verdict::Drop(DropReason::Loss))
                .count();
            let frac = lost as f64 / n as f64;
            // 5 standard deviations of a binomial proportion.
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
            assert!((frac - p).abs() < tol, "p={p} frac={frac} tol={tol}");
        }
    }

    #[test]
    fn link_no_loss_never_drops_and_zero_delay_is_immediate() {
        let cfg = LinkConfig::perfect();
        let mut link = Link::seeded(9);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(
                link.decide(&cfg, now, 1500),
                Verdict::Deliver {
                    at: now,
                    reordered: false
                }
            );
        }
    }

    /// Lengths of the runs of consecutive losses.
    fn bursts(drops: &[bool]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut run = 0;
        for &d in drops {
            if d {
                run += 1;
            } else if run > 0 {
                out.push(run);
                run = 0;
            }
        }
        out
    }

    #[test]
    fn link_gilbert_elliott_mean_loss_and_burst_length() {
        let (mean_loss, mean_burst) = (0.05, 4.0);
        let loss = Loss::bursty(mean_loss, mean_burst);
        assert!((loss.mean_loss() - mean_loss).abs() < 1e-12);
        let cfg = LinkConfig::default().with_loss(loss);
        let n = 400_000;
        let drops: Vec<bool> = run(11, &cfg, n)
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        let frac = drops.iter().filter(|d| **d).count() as f64 / n as f64;
        assert!((frac - mean_loss).abs() < 0.005, "loss fraction {frac}");
        let b = bursts(&drops);
        let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
        assert!((mean - mean_burst).abs() < 0.25, "mean burst {mean}");
        // Geometric: P(burst ≥ 2) = 1 − 1/mean_burst = 0.75.
        let ge2 = b.iter().filter(|l| **l >= 2).count() as f64 / b.len() as f64;
        assert!((ge2 - 0.75).abs() < 0.03, "P(burst>=2) {ge2}");
        // Random loss at the same rate has bursts of ~1/(1-p) ≈ 1.05.
        let random = LinkConfig::default().with_loss(Loss::random(mean_loss));
        let rd: Vec<bool> = run(11, &random, n)
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        let rb = bursts(&rd);
        let rmean = rb.iter().sum::<usize>() as f64 / rb.len() as f64;
        assert!(rmean < 1.1, "random mean burst {rmean}");
    }

    #[test]
    fn link_gilbert_elliott_partial_loss_states() {
        let loss = Loss::GilbertElliott {
            good_to_bad: 0.01,
            bad_to_good: 0.1,
            loss_good: 0.001,
            loss_bad: 0.5,
        };
        let expected = (10.0 / 11.0) * 0.001 + (1.0 / 11.0) * 0.5;
        assert!((loss.mean_loss() - expected).abs() < 1e-12);
        let cfg = LinkConfig::default().with_loss(loss);
        let n = 400_000;
        let lost = run(5, &cfg, n)
            .iter()
            .filter(|v| matches!(v, Verdict::Drop(_)))
            .count();
        let frac = lost as f64 / n as f64;
        assert!((frac - expected).abs() < 0.006, "{frac} vs {expected}");
    }

    #[test]
    fn link_delay_and_jitter_stay_in_bounds_and_in_order() {
        let cfg =
            LinkConfig::default().with_delay(Duration::from_millis(20), Duration::from_millis(3));
        let mut link = Link::seeded(1);
        let t0 = Instant::now();
        let mut last = t0;
        let mut distinct = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            let Verdict::Deliver { at, reordered } = link.decide(&cfg, now, 1000) else {
                panic!("dropped on a lossless link")
            };
            assert!(!reordered);
            assert!(at >= last, "jitter reordered");
            last = at;
            let d = at - now;
            assert!(d >= Duration::from_millis(17), "{d:?}");
            // In-order clamping can push a datagram past its own jitter window only up to
            // the previous one's delivery, which is ≤ 23 ms after its own send.
            assert!(d <= Duration::from_millis(23), "{d:?}");
            distinct.insert(d.as_micros());
        }
        assert!(distinct.len() > 100, "jitter has no spread");
    }

    #[test]
    fn link_reorder_fraction_and_overtaking() {
        let cfg = LinkConfig::default()
            .with_delay(Duration::from_millis(10), Duration::ZERO)
            .with_reorder(0.1, Duration::from_millis(5));
        let mut link = Link::seeded(2);
        let t0 = Instant::now();
        let n = 100_000u64;
        let mut reordered = 0;
        let mut deliveries = Vec::new();
        for i in 0..n {
            let now = t0 + Duration::from_micros(i * 100);
            let Verdict::Deliver { at, reordered: r } = link.decide(&cfg, now, 1000) else {
                panic!()
            };
            if r {
                reordered += 1;
                assert_eq!(at - now, Duration::from_millis(15));
            } else {
                assert_eq!(at - now, Duration::from_millis(10));
            }
            deliveries.push(at);
        }
        let frac = reordered as f64 / n as f64;
        assert!((frac - 0.1).abs() < 0.005, "{frac}");
        // Some datagram is delivered after one sent later than it.
        assert!(deliveries.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn link_rate_limit_serialises_and_drops_on_full_queue() {
        // 1 MB/s, 10 kB queue: a 1000-byte datagram takes 1 ms.
        let cfg = LinkConfig::default().with_rate(1_000_000, 10_000);
        let mut link = Link::seeded(0);
        let now = Instant::now();
        let mut verdicts = Vec::new();
        for _ in 0..15 {
            verdicts.push(link.decide(&cfg, now, 1000));
        }
        for (i, v) in verdicts.iter().take(10).enumerate() {
            assert_eq!(
                *v,
                Verdict::Deliver {
                    at: now + Duration::from_millis(i as u64 + 1),
                    reordered: false
                }
            );
        }
        assert!(
            verdicts[10..]
                .iter()
                .all(|v| *v == Verdict::Drop(DropReason::Overflow))
        );
        // Once the queue has drained, datagrams go through again at the link rate.
        let later = now + Duration::from_millis(10);
        assert_eq!(
            link.decide(&cfg, later, 1000),
            Verdict::Deliver {
                at: later + Duration::from_millis(1),
                reordered: false
            }
        );
    }
}
