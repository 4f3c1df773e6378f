//! Back-off after failed joins (pure logic; the caller passes the current time).
//!
//! A failed `join` (no such session 7006, wrong password 7007, session exists 7015) tells
//! a prober something. The first [`FREE_FAILURES`] failures cost nothing (typos): the
//! joins that make them are answered at once. After [`FREE_FAILURES`] failures the answer
//! to the next join waits [`FIRST_DELAY`], and each further failure doubles the wait, up
//! to [`MAX_DELAY`] (after 3 failures 250 ms, after 4 500 ms, after 5 1 s, …, after 9 or
//! more 10 s). Failures are counted per connection and per client address (one table
//! for the server, bounded to [`MAX_TRACKED`] addresses); an address's count is forgotten
//! [`FORGET_AFTER`] after its last failure. A successful join does not reset the address's
//! count (a prober would interleave one), only the connection's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures that cost no delay: joins are answered at once until this many have failed.
pub const FREE_FAILURES: u32 = 3;
/// Delay of the answer to the join after the last free failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// An address's failures are forgotten this long after its last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// The delay before answering a join after `failures` failed ones: none below
/// [`FREE_FAILURES`], then [`FIRST_DELAY`] doubled once per failure beyond it, at most
/// [`MAX_DELAY`].
pub fn delay_after(failures: u32) -> Duration {
    let Some(doublings) = failures.checked_sub(FREE_FAILURES) else {
        return Duration::ZERO;
    };
    FIRST_DELAY
        .saturating_mul(1 << doublings.min(16))
        .min(MAX_DELAY)
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Failed joins per client address.
#[derive(Debug, Default)]
pub struct JoinBackoff {
    by_ip: HashMap<IpAddr, Record>,
}

impl JoinBackoff {
    /// The delay before answering a join from `ip` at `now`.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        self.by_ip
            .get(&ip)
            .filter(|r| now.saturating_duration_since(r.last) < FORGET_AFTER)
            .map_or(Duration::ZERO, |r| delay_after(r.failures))
    }

    /// A join from `ip` failed at `now`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.by_ip.len() >= MAX_TRACKED && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
            if self.by_ip.len() >= MAX_TRACKED {
                // Still full: forget the quietest half rather than grow.
                let mut lasts: Vec<Instant> = self.by_ip.values().map(|r| r.last).collect();
                lasts.sort();
                let cut = lasts[lasts.len() / 2];
                self.by_ip.retain(|_, r| r.last > cut);
            }
        }
        let record = self.by_ip.entry(ip).or_insert(Record {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(record.last) >= FORGET_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_delay_free_then_doubling_then_capped() {
        let d: Vec<u64> = (0..12).map(|n| delay_after(n).as_millis() as u64).collect();
        // After three failures the next answer waits 250 ms.
        assert_eq!(
            d,
            [
                0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000
            ]
        );
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn backoff_per_address_counts_and_forgets() {
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut j = JoinBackoff::default();
        for _ in 0..5 {
            j.failed(a, t0);
        }
        assert_eq!(j.delay(a, t0), Duration::from_millis(1000));
        assert_eq!(j.delay(b, t0), Duration::ZERO);
        assert_eq!(j.delay(a, t0 + FORGET_AFTER), Duration::ZERO);
        j.failed(a, t0 + FORGET_AFTER);
        assert_eq!(
            j.delay(a, t0 + FORGET_AFTER),
            Duration::ZERO,
            "counting starts over"
        );
    }

    #[test]
    fn backoff_table_is_bounded() {
        let t0 = Instant::now();
        let mut j = JoinBackoff::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            j.failed(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(j.tracked() <= MAX_TRACKED);
    }
}
