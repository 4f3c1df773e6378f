//! What the signaling benchmark measures in a phase: relay latencies seen by the
//! generator, the servers' own latency histograms, CPU and run-queue time of every
//! process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use super::procs::{http_get, own_cpu, process_cpu, run_queue_wait};

/// Latencies in microseconds, and what else the generator saw; summarized at the end.
#[derive(Default)]
pub(super) struct Samples {
    /// Frames sent after `warmup_until`.
    micros: Vec<u32>,
    /// Frames sent before `warmup_until` (µs since the origin): the first round touches
    /// every connection's buffers for the first time.
    warmup: Vec<u32>,
    warmup_until: u64,
    /// Frames sent before this (µs since the origin) are not counted: a previous phase's
    /// frames still in flight.
    counted_from: u64,
    pub errors: u64,
    /// Error frames by code.
    pub codes: BTreeMap<u16, u64>,
    /// Connections the server closed.
    pub lost: u64,
    /// `peer-left` frames received.
    pub left: u64,
    pub received: u64,
}

impl Samples {
    fn percentile(sorted: &[u32], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
    }

    /// Samples of a phase that starts at `start` (µs since the origin), its frames sent
    /// before `warmup_until` counted apart.
    pub fn new(start: u64, warmup_until: u64) -> Self {
        Samples {
            warmup_until,
            counted_from: start,
            ..Samples::default()
        }
    }

    /// A relayed frame sent at `t`, received `latency` µs later.
    pub fn add(&mut self, t: u64, latency: u32) {
        if t < self.counted_from {
            return;
        }
        if t < self.warmup_until {
            self.warmup.push(latency);
        } else {
            self.micros.push(latency);
        }
        self.received += 1;
    }

    /// An error frame with `code`.
    pub fn error(&mut self, code: u16) {
        self.errors += 1;
        *self.codes.entry(code).or_default() += 1;
    }

    /// p99 and max of the warm-up frames, in milliseconds.
    fn warmup_summary(&mut self) -> (f64, f64) {
        self.warmup.sort_unstable();
        let max = self
            .warmup
            .last()
            .map_or(f64::NAN, |m| f64::from(*m) / 1000.0);
        (Self::percentile(&self.warmup, 0.99), max)
    }

    /// (p50, p99, max) in milliseconds, after the warm-up.
    fn summary(&mut self) -> (f64, f64, f64) {
        self.micros.sort_unstable();
        let max = self
            .micros
            .last()
            .map_or(f64::NAN, |m| f64::from(*m) / 1000.0);
        (
            Self::percentile(&self.micros, 0.5),
            Self::percentile(&self.micros, 0.99),
            max,
        )
    }
}

/// p50, p99 and max of `values` (any unit), NaN when empty.
pub(super) fn quantiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_unstable_by(f64::total_cmp);
    let at = |p: f64| {
        if values.is_empty() {
            return f64::NAN;
        }
        values[(((values.len() - 1) as f64) * p).round() as usize]
    };
    (
        at(0.5),
        at(0.99),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

/// CPU use of one process over a phase.
pub(super) struct Usage {
    pub name: &'static str,
    /// One core = 1; NaN when the process could not be read at the end (killed).
    pub cpu: f64,
    /// Share of the phase its threads waited for a CPU (other load on its core).
    pub wait: f64,
}

/// One load phase's figures.
pub(super) struct Phase {
    pub secs: f64,
    pub frames: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Every server process, then the generator.
    pub usage: Vec<Usage>,
    /// Bucket bounds (ms) of the servers' own p50 and p99 (their `/metrics` histograms,
    /// summed).
    pub server_p50: f64,
    pub server_p99: f64,
    pub warmup_p99: f64,
    pub warmup_max: f64,
    pub errors: u64,
    pub left: u64,
    pub codes: String,
}

/// A process's readings at the start of a phase.
struct Start {
    name: &'static str,
    pid: Option<u32>,
    cpu: f64,
    wait: f64,
}

impl Start {
    fn of(name: &'static str, pid: Option<u32>) -> Start {
        let (cpu, wait) = match pid {
            Some(p) => (
                process_cpu(p).unwrap_or(f64::NAN),
                run_queue_wait(&p.to_string()),
            ),
            None => (own_cpu(), run_queue_wait("self")),
        };
        Start {
            name,
            pid,
            cpu,
            wait,
        }
    }

    fn usage(&self, secs: f64) -> Usage {
        let (cpu, wait) = match self.pid {
            Some(p) => match process_cpu(p) {
                Ok(cpu) => (cpu, run_queue_wait(&p.to_string())),
                Err(_) => (f64::NAN, f64::NAN),
            },
            None => (own_cpu(), run_queue_wait("self")),
        };
        Usage {
            name: self.name,
            cpu: (cpu - self.cpu) / secs,
            wait: (wait - self.wait) / secs,
        }
    }
}

/// CPU and run-queue readings of every process at the start of a phase.
pub(super) struct Meter {
    start: Instant,
    procs: Vec<Start>,
}

impl Meter {
    /// Readings of the server processes `(name, pid)` and of the generator.
    pub fn start(servers: &[(&'static str, u32)]) -> Meter {
        let mut procs: Vec<Start> = servers
            .iter()
            .map(|(name, pid)| Start::of(name, Some(*pid)))
            .collect();
        procs.push(Start::of("generator", None));
        Meter {
            start: Instant::now(),
            procs,
        }
    }

    /// CPU use since the start, every server then the generator.
    pub fn usage(&self) -> Vec<Usage> {
        let secs = self.start.elapsed().as_secs_f64();
        self.procs.iter().map(|p| p.usage(secs)).collect()
    }

    pub fn phase(&self, samples: &RefCell<Samples>) -> Phase {
        let secs = self.start.elapsed().as_secs_f64();
        let mut s = samples.borrow_mut();
        let (p50, p99, max) = s.summary();
        let (warmup_p99, warmup_max) = s.warmup_summary();
        let mut codes = s
            .codes
            .iter()
            .map(|(c, n)| format!("{n}× {c}"))
            .collect::<Vec<_>>();
        if s.lost > 0 {
            codes.push(format!("{} connections closed by the server", s.lost));
        }
        Phase {
            server_p50: f64::NAN,
            server_p99: f64::NAN,
            warmup_p99,
            warmup_max,
            codes: codes.join(", "),
            secs,
            frames: s.received,
            p50,
            p99,
            max,
            usage: self.usage(),
            errors: s.errors,
            left: s.left,
        }
    }
}

/// The servers' relay latency histograms from their `/metrics`, summed: (upper bound in
/// seconds, cumulative count) per bucket. Servers that do not answer count nothing.
pub(super) async fn server_histogram(urls: &[String]) -> Vec<(f64, f64)> {
    let prefix = "peershare_signaling_relay_latency_seconds_bucket{le=\"";
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for url in urls {
        let Ok((200, text)) = http_get(url, "/metrics").await else {
            continue;
        };
        let buckets = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse::<f64>().ok()?))
            });
        for (le, n) in buckets {
            match sum.iter_mut().find(|(b, _)| *b == le) {
                Some((_, total)) => *total += n,
                None => sum.push((le, n)),
            }
        }
    }
    sum
}

/// The upper bound (ms) of the bucket holding the `p` quantile of what the servers
/// measured between two scrapes.
pub(super) fn server_quantile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, n)| *n);
    deltas
        .iter()
        .find(|(_, n)| *n >= total * p)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}
