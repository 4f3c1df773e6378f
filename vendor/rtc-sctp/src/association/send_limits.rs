//! Where a sender's time goes: what held new DATA back, measured in time (after Linux
//! TCP's "chrono" statistics: busy, receive-window limited, send-buffer limited).
//!
//! Each pass that takes new DATA for sending ends for one reason: the pacer, the
//! congestion window, the peer's receive window, or nothing left to send. That reason
//! holds until the next pass, so the time between two passes is charged to it. Every
//! [`REPORT_INTERVAL`] the shares are reported (a `trace` line of the association), which
//! tells a transfer below its path's rate whether the path, the peer or the application
//! was the limit.

use std::time::{Duration, Instant};

/// How often the shares are reported.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a pass stopped taking new DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendLimit {
    /// The pacer holds the next chunk back.
    Pacer,
    /// The congestion window is full.
    Cwnd,
    /// The peer's receive window is full.
    Rwnd,
    /// Nothing is queued to send (the application is the limit).
    NoData,
}

impl SendLimit {
    const ALL: [SendLimit; 4] = [Self::Pacer, Self::Cwnd, Self::Rwnd, Self::NoData];

    fn index(self) -> usize {
        match self {
            Self::Pacer => 0,
            Self::Cwnd => 1,
            Self::Rwnd => 2,
            Self::NoData => 3,
        }
    }
}

/// Time charged to each [`SendLimit`] over one report interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SendLimitReport {
    /// Length of the interval.
    pub(crate) span: Duration,
    /// Time per limit, in the order of [`SendLimit::ALL`].
    pub(crate) limited: [Duration; 4],
}

impl SendLimitReport {
    /// The share of the interval that `limit` held new DATA back (0 for an empty span).
    pub(crate) fn share(&self, limit: SendLimit) -> f64 {
        if self.span.is_zero() {
            return 0.0;
        }
        self.limited[limit.index()].as_secs_f64() / self.span.as_secs_f64()
    }
}

impl std::fmt::Display for SendLimitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over {:?}:", self.span)?;
        for limit in SendLimit::ALL {
            write!(f, " {:?} {:.1}%", limit, 100.0 * self.share(limit))?;
        }
        Ok(())
    }
}

/// The running account (sans-IO: the caller passes the time).
#[derive(Debug, Default)]
pub(crate) struct SendLimits {
    /// The reason the last pass stopped, and when.
    last: Option<(SendLimit, Instant)>,
    interval_start: Option<Instant>,
    limited: [Duration; 4],
}

impl SendLimits {
    /// A pass ended at `now` because of `limit`. Returns the report of the interval that
    /// ended, once per [`REPORT_INTERVAL`].
    pub(crate) fn record(&mut self, now: Instant, limit: SendLimit) -> Option<SendLimitReport> {
        if let Some((previous, since)) = self.last {
            self.limited[previous.index()] += now.saturating_duration_since(since);
        }
        self.last = Some((limit, now));
        let start = *self.interval_start.get_or_insert(now);
        let span = now.saturating_duration_since(start);
        if span < REPORT_INTERVAL {
            return None;
        }
        let report = SendLimitReport {
            span,
            limited: self.limited,
        };
        self.interval_start = Some(now);
        self.limited = [Duration::ZERO; 4];
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_limits_time_between_passes_charged_to_the_earlier_reason() {
        let t0 = Instant::now();
        let mut limits = SendLimits::default();
        assert_eq!(limits.record(t0, SendLimit::Pacer), None);
        assert_eq!(
            limits.record(t0 + Duration::from_millis(250), SendLimit::Rwnd),
            None
        );
        assert_eq!(
            limits.record(t0 + Duration::from_millis(1000), SendLimit::NoData),
            Some(SendLimitReport {
                span: Duration::from_millis(1000),
                limited: [
                    Duration::from_millis(250),
                    Duration::ZERO,
                    Duration::from_millis(750),
                    Duration::ZERO
                ],
            })
        );
        // The next interval starts where the last one ended, with its reason carried on.
        let report = limits
            .record(t0 + Duration::from_millis(2000), SendLimit::Cwnd)
            .unwrap_or_else(|| panic!("a second report"));
        assert_eq!(report.share(SendLimit::NoData), 1.0);
        assert_eq!(report.share(SendLimit::Cwnd), 0.0);
    }

    #[test]
    fn send_limit_report_empty_span_shares_are_zero() {
        let report = SendLimitReport {
            span: Duration::ZERO,
            limited: [Duration::ZERO; 4],
        };
        assert_eq!(report.share(SendLimit::Pacer), 0.0);
        assert_eq!(
            report.to_string(),
            "over 0ns: Pacer 0.0% Cwnd 0.0% Rwnd 0.0% NoData 0.0%"
        );
    }
}
