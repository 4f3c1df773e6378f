//! The server's Prometheus metrics, served at `/metrics` (`web`) in the Prometheus text
//! format (version 0.0.4), encoded by `prometheus-client`.
//!
//! Counting on the hot path is a relaxed atomic add per event (and, for a relayed
//! `signal`, two clock reads and one histogram add): no lock, no allocation. What other
//! structures already hold (connections, joined clients, sessions, TURN allocations and
//! relayed bytes) is read once per scrape ([`Snapshot`]) rather than counted twice.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The first and last signaling error code (`protocol::codes`).
const FIRST_CODE: u16 = 7001;
const LAST_CODE: u16 = 7017;
const CODE_LABELS: [&str; (LAST_CODE - FIRST_CODE + 1) as usize] = [
    "7001", "7002", "7003", "7004", "7005", "7006", "7007", "7008", "7009", "7010", "7011", "7012",
    "7013", "7014", "7015", "7016", "7017",
];

/// Upper bounds (seconds) of the relay latency histogram's buckets.
const LATENCY_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Counters under one label whose values are fixed in advance (`code="7001"` …), so that
/// counting is an index and an atomic add, never a map lookup.
#[derive(Debug)]
pub(crate) struct LabeledCounters {
    label: &'static str,
    values: &'static [&'static str],
    counts: Vec<Counter>,
}

impl LabeledCounters {
    fn new(label: &'static str, values: &'static [&'static str]) -> Self {
        LabeledCounters {
            label,
            values,
            counts: values.iter().map(|_| Counter::default()).collect(),
        }
    }

    fn inc(&self, index: usize) {
        if let Some(c) = self.counts.get(index) {
            c.inc();
        }
    }

    /// Count one for a signaling error code; codes outside 7001–7017 are not counted.
    fn inc_code(&self, code: u16) {
        if (FIRST_CODE..=LAST_CODE).contains(&code) {
            self.inc(usize::from(code - FIRST_CODE));
        }
    }

    #[cfg(test)]
    fn get(&self, index: usize) -> u64 {
        self.counts.get(index).map_or(0, Counter::get)
    }
}

impl EncodeMetric for LabeledCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, count) in self.values.iter().zip(&self.counts) {
            let labels = [(self.label, *value)];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count.get(), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A histogram of durations with fixed buckets, lock-free: one atomic add for the bucket,
/// one for the count, one for the sum (nanoseconds). (`prometheus-client`'s own histogram
/// takes a mutex per observation.)
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    /// Per bucket of [`LATENCY_BOUNDS`], then one for larger values (not cumulative).
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    fn new() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let index = LATENCY_BOUNDS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        if let Some(b) = self.buckets.get(index) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let over = self.buckets[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, over));
        // The count read after the buckets, as their sum: a scrape during an observation
        // never shows a count below the +Inf bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Why a connection was refused before its task started, or its upgrade while draining.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// Over `max_connections`.
    Total = 0,
    /// Over `max_connections_per_ip`.
    PerIp = 1,
    /// A WebSocket upgrade while the server drains.
    Draining = 2,
}

/// What other structures hold, read at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub connections: usize,
    pub clients: usize,
    pub sessions: usize,
    /// The embedded TURN relay's numbers, when it runs.
    pub turn: Option<TurnSnapshot>,
    /// Messages for Redis dropped (`--redis`): the outbox full, a pipeline failed.
    pub redis_dropped: (u64, u64),
}

/// The embedded TURN relay's numbers at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TurnSnapshot {
    pub allocations: usize,
    /// Bytes its relay sockets sent toward peers (or handed to another allocation).
    pub bytes_to_peers: u64,
    /// Bytes its relay sockets received from peers (or from another allocation).
    pub bytes_from_peers: u64,
}

/// Every metric of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: Gauge,
    clients: Gauge,
    sessions: Gauge,
    turn_allocations: Gauge,
    turn_bytes: std::sync::Arc<LabeledCounters>,
    redis_dropped: std::sync::Arc<LabeledCounters>,
    connections_refused: std::sync::Arc<LabeledCounters>,
    joins: Counter,
    joins_refused: std::sync::Arc<LabeledCounters>,
    frames_received: Counter,
    signals_relayed: Counter,
    rejected: std::sync::Arc<LabeledCounters>,
    relay_latency: std::sync::Arc<LatencyHistogram>,
}

/// Lets the registry hold an `Arc` of a custom metric.
#[derive(Debug)]
struct Shared<T>(std::sync::Arc<T>);

impl<T: EncodeMetric> EncodeMetric for Shared<T> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        use std::sync::Arc;
        let mut registry = Registry::with_prefix("peershare_signaling");
        let connections = Gauge::default();
        let clients = Gauge::default();
        let sessions = Gauge::default();
        let turn_allocations = Gauge::default();
        let turn_bytes = Arc::new(LabeledCounters::new(
            "direction",
            &["to_peers", "from_peers"],
        ));
        let redis_dropped = Arc::new(LabeledCounters::new(
            "reason",
            &["outbox_full", "write_failed"],
        ));
        let connections_refused = Arc::new(LabeledCounters::new(
            "reason",
            &["max_connections", "max_connections_per_ip", "draining"],
        ));
        let joins = Counter::default();
        let joins_refused = Arc::new(LabeledCounters::new("code", &CODE_LABELS));
        let frames_received = Counter::default();
        let signals_relayed = Counter::default();
        let rejected = Arc::new(LabeledCounters::new("code", &CODE_LABELS));
        let relay_latency = Arc::new(LatencyHistogram::new());
        registry.register(
            "connections",
            "TCP connections held (accepted within the caps, until they end)",
            connections.clone(),
        );
        registry.register("clients", "Clients joined to a session", clients.clone());
        registry.register(
            "sessions",
            "Sessions with at least one member",
            sessions.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503: over a connection cap, or a WebSocket upgrade while draining",
            Shared(Arc::clone(&connections_refused)),
        );
        registry.register("joins", "Successful joins", joins.clone());
        registry.register(
            "joins_refused",
            "well-formed join frames answered with an error, by error code (malformed ones count in rejected_frames_total)",
            Shared(Arc::clone(&joins_refused)),
        );
        registry.register(
            "frames_received",
            "WebSocket text and binary frames received from clients",
            frames_received.clone(),
        );
        registry.register(
            "signals_relayed",
            "signal frames queued for their recipient",
            signals_relayed.clone(),
        );
        registry.register(
            "rejected_frames",
            "error frames sent, by error code",
            Shared(Arc::clone(&rejected)),
        );
        registry.register_with_unit(
            "relay_latency",
            "Time from a signal frame read off the sender's connection (with --redis: off the \
             recipient node's Redis channel) to the relayed frame written to the recipient's \
             socket",
            Unit::Seconds,
            Shared(Arc::clone(&relay_latency)),
        );
        registry.register(
            "turn_allocations",
            "Allocations held by the embedded TURN relay",
            turn_allocations.clone(),
        );
        registry.register_with_unit(
            "turn_relayed",
            "Bytes moved by the embedded TURN relay's relay sockets",
            Unit::Bytes,
            Shared(Arc::clone(&turn_bytes)),
        );
        registry.register(
            "redis_dropped",
            "With --redis: messages for Redis (relayed signals, membership removals) dropped, \
             because the node's outbox was full or because Redis failed the pipeline",
            Shared(Arc::clone(&redis_dropped)),
        );
        Metrics {
            registry,
            redis_dropped,
            connections,
            clients,
            sessions,
            turn_allocations,
            turn_bytes,
            connections_refused,
            joins,
            joins_refused,
            frames_received,
            signals_relayed,
            rejected,
            relay_latency,
        }
    }

    pub fn refused(&self, why: Refusal) {
        self.connections_refused.inc(why as usize);
    }

    pub fn joined(&self) {
        self.joins.inc();
    }

    pub fn join_refused(&self, code: u16) {
        self.joins_refused.inc_code(code);
    }

    pub fn frame_received(&self) {
        self.frames_received.inc();
    }

    pub fn signal_relayed(&self) {
        self.signals_relayed.inc();
    }

    pub fn rejected(&self, code: u16) {
        self.rejected.inc_code(code);
    }

    pub fn relay_latency(&self, d: Duration) {
        self.relay_latency.observe(d);
    }

    /// The text of `/metrics`, with the gauges taken from `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.connections.set(gauge(snapshot.connections));
        self.clients.set(gauge(snapshot.clients));
        self.sessions.set(gauge(snapshot.sessions));
        let turn = snapshot.turn.unwrap_or_default();
        self.turn_allocations.set(gauge(turn.allocations));
        // Totals kept by the relay, copied: these counters only ever go up.
        self.turn_bytes.counts[0]
            .inner()
            .store(turn.bytes_to_peers, Ordering::Relaxed);
        self.turn_bytes.counts[1]
            .inner()
            .store(turn.bytes_from_peers, Ordering::Relaxed);
        self.redis_dropped.counts[0]
            .inner()
            .store(snapshot.redis_dropped.0, Ordering::Relaxed);
        self.redis_dropped.counts[1]
            .inner()
            .store(snapshot.redis_dropped.1, Ordering::Relaxed);
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Only a failing `fmt::Write` errs, and a String never does.
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
    }

    #[test]
    fn metrics_render_counts_and_snapshot_gauges() {
        let m = Metrics::new();
        m.joined();
        m.joined();
        m.join_refused(7006);
        m.rejected(7006);
        m.rejected(7008);
        m.rejected(9999);
        m.frame_received();
        m.signal_relayed();
        m.refused(Refusal::Draining);
        m.relay_latency(Duration::from_micros(300));
        m.relay_latency(Duration::from_secs(10));
        let text = m.render(Snapshot {
            connections: 5,
            clients: 4,
            sessions: 2,
            turn: Some(TurnSnapshot {
                allocations: 3,
                bytes_to_peers: 1000,
                bytes_from_peers: 2000,
            }),
            redis_dropped: (7, 0),
        });
        for expected in [
            "peershare_signaling_connections 5",
            "peershare_signaling_clients 4",
            "peershare_signaling_sessions 2",
            "peershare_signaling_joins_total 2",
            "peershare_signaling_joins_refused_total{code=\"7006\"} 1",
            "peershare_signaling_joins_refused_total{code=\"7001\"} 0",
            "peershare_signaling_rejected_frames_total{code=\"7008\"} 1",
            "peershare_signaling_frames_received_total 1",
            "peershare_signaling_signals_relayed_total 1",
            "peershare_signaling_connections_refused_total{reason=\"draining\"} 1",
            "peershare_signaling_relay_latency_seconds_bucket{le=\"0.0005\"} 1",
            "peershare_signaling_relay_latency_seconds_bucket{le=\"5\"} 1",
            "peershare_signaling_relay_latency_seconds_bucket{le=\"+Inf\"} 2",
            "peershare_signaling_relay_latency_seconds_count 2",
            "peershare_signaling_turn_allocations 3",
            "peershare_signaling_turn_relayed_bytes_total{direction=\"to_peers\"} 1000",
            "peershare_signaling_turn_relayed_bytes_total{direction=\"from_peers\"} 2000",
            "peershare_signaling_redis_dropped_total{reason=\"outbox_full\"} 7",
            "peershare_signaling_redis_dropped_total{reason=\"write_failed\"} 0",
        ] {
            assert_eq!(line(&text, expected), expected);
        }
        assert!(text.contains("# TYPE peershare_signaling_relay_latency_seconds histogram"));
        assert_eq!(m.relay_latency.count(), 2);
    }

    #[test]
    fn labeled_counters_ignore_codes_out_of_range() {
        let c = LabeledCounters::new("code", &CODE_LABELS);
        c.inc_code(7000);
        c.inc_code(7018);
        c.inc_code(7015);
        assert_eq!((0..CODE_LABELS.len()).map(|i| c.get(i)).sum::<u64>(), 1);
        assert_eq!(c.get(14), 1);
    }
}
