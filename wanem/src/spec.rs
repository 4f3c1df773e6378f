//! The emulated path as the command line describes it: units (`20ms`, `100mbit`, `1%`,
//! `256k`, `bdp`), a value per direction (`20ms` for both, `20ms/5ms` for A→B / B→A), and
//! the [`LinkConfig`] of each direction. Pure: nothing here touches the system.

use std::time::Duration;

use peershare_linkmodel::{LinkConfig, Loss};

/// The smallest queue `bdp` gives: 16 full-size packets, so that a path with a tiny
/// bandwidth-delay product still absorbs a burst.
pub const MIN_BDP_QUEUE: usize = 16 * 1500;

/// A duration: a number with `ns`, `us`, `ms`, `s` or `m`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (ms, s, us, ns, m)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a number before the unit"))?;
    let secs = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("{s:?}: unknown duration unit {unit:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// A rate in bytes per second from `N[k|m|g]bit` (decimal, as `tc`); `none` = unlimited.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let lower = s.trim().to_ascii_lowercase();
    if lower == "none" || lower == "0" {
        return Ok(None);
    }
    let (num, mult) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix("bit") {
        (n, 1.0)
    } else {
        return Err(format!(
            "{s:?}: a rate is N followed by bit, kbit, mbit or gbit (e.g. 100mbit), or none"
        ));
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a number before the unit"))?;
    let bytes = value * mult / 8.0;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{s:?}: a rate must be at least 8bit"));
    }
    Ok(Some(bytes.round() as u64))
}

/// A probability: a fraction (`0.01`) or a percentage (`1%`).
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let p = match s.strip_suffix('%') {
        Some(pct) => {
            pct.trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?}: not a percentage"))?
                / 100.0
        }
        None => s
            .parse::<f64>()
            .map_err(|_| format!("{s:?}: not a probability"))?,
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s:?}: a probability lies in 0–1 (0–100 %)"));
    }
    Ok(p)
}

/// A byte count: a number with an optional `k`, `m` or `g` (powers of 1024, as `tc`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 65536, 256k, 4m)"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{s:?}: not a size"));
    }
    Ok((value * mult as f64).round() as u64)
}

/// How many bytes the bottleneck queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// A fixed number of bytes.
    Bytes(usize),
    /// One bandwidth-delay product: the direction's rate × the path's round-trip time
    /// (at least [`MIN_BDP_QUEUE`]).
    Bdp,
}

/// `bdp` or a byte count.
pub fn parse_queue(s: &str) -> Result<Queue, String> {
    if s.trim().eq_ignore_ascii_case("bdp") {
        return Ok(Queue::Bdp);
    }
    let bytes = parse_size(s)?;
    usize::try_from(bytes)
        .map(Queue::Bytes)
        .map_err(|_| format!("{s:?}: too large"))
}

/// One bandwidth-delay product in bytes, at least [`MIN_BDP_QUEUE`].
pub fn bdp_bytes(rate_bytes_per_sec: u64, rtt: Duration) -> usize {
    let bdp = rate_bytes_per_sec as f64 * rtt.as_secs_f64();
    (bdp.round() as usize).max(MIN_BDP_QUEUE)
}

/// `V` (both directions) or `A2B/B2A`, each part parsed by `parse`.
pub fn per_direction<T: Clone>(
    s: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    match s.split_once('/') {
        Some((ab, ba)) => Ok((parse(ab)?, parse(ba)?)),
        None => {
            let v = parse(s)?;
            Ok((v.clone(), v))
        }
    }
}

/// One direction of the path, in the command line's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectionSpec {
    /// One-way delay.
    pub delay: Duration,
    /// ± uniform jitter around `delay`.
    pub jitter: Duration,
    /// Long-run loss fraction.
    pub loss: f64,
    /// Mean loss burst in packets; above 1 the loss is Gilbert–Elliott bursty.
    pub burst: f64,
    /// Fraction of packets held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Bottleneck rate, bytes per second; `None` = unlimited.
    pub rate: Option<u64>,
    /// Bottleneck queue.
    pub queue: Queue,
}

impl Default for DirectionSpec {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: 1.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            rate: None,
            queue: Queue::Bdp,
        }
    }
}

impl DirectionSpec {
    /// The loss model: none, independent, or Gilbert–Elliott bursts of `burst` packets.
    pub fn loss_model(&self) -> Loss {
        if self.loss <= 0.0 {
            Loss::None
        } else if self.burst > 1.0 {
            Loss::bursty(self.loss, self.burst)
        } else {
            Loss::random(self.loss)
        }
    }

    /// This direction's link configuration on a path whose round-trip time is `rtt`
    /// (what `bdp` refers to).
    pub fn link_config(&self, rtt: Duration) -> LinkConfig {
        let mut cfg = LinkConfig::default()
            .with_delay(self.delay, self.jitter)
            .with_loss(self.loss_model())
            .with_reorder(self.reorder, self.reorder_delay);
        if let Some(rate) = self.rate {
            let queue = match self.queue {
                Queue::Bytes(b) => b,
                Queue::Bdp => bdp_bytes(rate, rtt),
            };
            cfg = cfg.with_rate(rate, queue);
        }
        cfg
    }
}

/// Both directions of the path.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathSpec {
    /// A → B.
    pub a_to_b: DirectionSpec,
    /// B → A.
    pub b_to_a: DirectionSpec,
}

impl PathSpec {
    /// The same description both ways.
    pub fn symmetric(d: DirectionSpec) -> Self {
        Self {
            a_to_b: d,
            b_to_a: d,
        }
    }

    /// The base round-trip time: both one-way delays.
    pub fn rtt(&self) -> Duration {
        self.a_to_b.delay + self.b_to_a.delay
    }

    /// The link configurations (A → B, B → A).
    pub fn link_configs(&self) -> (LinkConfig, LinkConfig) {
        let rtt = self.rtt();
        (self.a_to_b.link_config(rtt), self.b_to_a.link_config(rtt))
    }
}

/// A one-line description of a link configuration, for the ready line and logs.
pub fn describe(cfg: &LinkConfig) -> String {
    let mut parts = vec![format!("delay {:?}", cfg.delay)];
    if !cfg.jitter.is_zero() {
        parts.push(format!("jitter ±{:?}", cfg.jitter));
    }
    match cfg.loss {
        Loss::None => parts.push("loss 0".into()),
        Loss::Random { p } => parts.push(format!("loss {p}")),
        l @ Loss::GilbertElliott { bad_to_good, .. } => parts.push(format!(
            "loss {:.4} in bursts of {:.1}",
            l.mean_loss(),
            1.0 / bad_to_good
        )),
    }
    if cfg.reorder > 0.0 {
        parts.push(format!(
            "reorder {} by {:?}",
            cfg.reorder, cfg.reorder_delay
        ));
    }
    match cfg.rate {
        Some(rate) => parts.push(format!(
            "rate {} bit/s queue {} B",
            rate * 8,
            cfg.queue_bytes
        )),
        None => parts.push("rate unlimited".into()),
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_units_and_errors() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("20 parsecs").is_err());
    }

    #[test]
    fn parse_rate_bit_units_to_bytes() {
        assert_eq!(parse_rate("100mbit"), Ok(Some(12_500_000)));
        assert_eq!(parse_rate("1Gbit"), Ok(Some(125_000_000)));
        assert_eq!(parse_rate("64kbit"), Ok(Some(8_000)));
        assert_eq!(parse_rate("2.5gbit"), Ok(Some(312_500_000)));
        assert_eq!(parse_rate("none"), Ok(None));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("100mbps").is_err());
        assert!(parse_rate("1bit").is_err());
    }

    #[test]
    fn parse_probability_fraction_and_percent() {
        assert_eq!(parse_probability("0.01"), Ok(0.01));
        assert_eq!(parse_probability("1%"), Ok(0.01));
        assert_eq!(parse_probability("0"), Ok(0.0));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-1%").is_err());
    }

    #[test]
    fn parse_queue_bytes_suffixes_and_bdp() {
        assert_eq!(parse_queue("65536"), Ok(Queue::Bytes(65536)));
        assert_eq!(parse_queue("256k"), Ok(Queue::Bytes(256 * 1024)));
        assert_eq!(parse_queue("4M"), Ok(Queue::Bytes(4 << 20)));
        assert_eq!(parse_queue("bdp"), Ok(Queue::Bdp));
        assert!(parse_queue("lots").is_err());
    }

    #[test]
    fn per_direction_one_value_or_two() {
        assert_eq!(
            per_direction("20ms", parse_duration),
            Ok((Duration::from_millis(20), Duration::from_millis(20)))
        );
        assert_eq!(
            per_direction("20ms/5ms", parse_duration),
            Ok((Duration::from_millis(20), Duration::from_millis(5)))
        );
        assert!(per_direction("20ms/x", parse_duration).is_err());
    }

    #[test]
    fn link_config_bdp_queue_is_rate_times_rtt() {
        let d = DirectionSpec {
            delay: Duration::from_millis(20),
            rate: Some(12_500_000),
            ..DirectionSpec::default()
        };
        let path = PathSpec::symmetric(d);
        assert_eq!(path.rtt(), Duration::from_millis(40));
        let (ab, ba) = path.link_configs();
        // 100 Mbit/s × 40 ms = 500 kB.
        assert_eq!(ab.queue_bytes, 500_000);
        assert_eq!(ab, ba);
        assert_eq!(ab.rate, Some(12_500_000));
        assert_eq!(ab.delay, Duration::from_millis(20));
        // A tiny BDP still holds a burst.
        assert_eq!(bdp_bytes(1_000, Duration::from_millis(1)), MIN_BDP_QUEUE);
    }

    #[test]
    fn loss_model_none_random_or_bursty() {
        let mut d = DirectionSpec::default();
        assert_eq!(d.loss_model(), Loss::None);
        d.loss = 0.01;
        assert_eq!(d.loss_model(), Loss::random(0.01));
        d.burst = 4.0;
        let l = d.loss_model();
        assert!(matches!(l, Loss::GilbertElliott { .. }));
        assert!((l.mean_loss() - 0.01).abs() < 1e-12);
        assert!(describe(&d.link_config(Duration::ZERO)).contains("bursts of 4.0"));
    }

    #[test]
    fn link_config_no_rate_means_unlimited() {
        let cfg = DirectionSpec::default().link_config(Duration::from_millis(10));
        assert_eq!(cfg.rate, None);
        assert!(describe(&cfg).contains("rate unlimited"));
    }
}
