//! Per-connection token bucket (pure logic; the caller passes the current time).
//!
//! Every incoming frame costs one token. The bucket holds at most `burst` tokens and refills
//! at `rate` tokens per second. A frame that finds the bucket empty is rejected. A run of
//! rejections (a "strike" streak) that reaches [`MAX_STRIKES`] means sustained abuse and the
//! caller disconnects the client. The streak ends when the client backs off far enough that
//! an accepted frame leaves at least one whole token in the bucket; accepting a frame from an
//! empty bucket that just refilled a single token does not end it, so a client that keeps
//! flooding cannot reset its streak with the trickle of frames the refill lets through.

use std::time::Instant;

/// Rejections in one streak after which the client is disconnected.
pub const MAX_STRIKES: u32 = 100;

/// What to do with one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process the frame.
    Allow,
    /// Drop the frame and tell the client (`7004`).
    Reject,
    /// Drop the frame and close the connection: sustained abuse.
    Disconnect,
}

/// A token bucket with a strike counter.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
}

impl TokenBucket {
    /// A full bucket. `burst == 0` is treated as 1; `rate == 0` means no refill.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: now,
            strikes: 0,
        }
    }

    /// Account for one frame arriving at `now`. A `now` earlier than the previous call is
    /// treated as no time passing.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if now > self.last {
            self.last = now;
        }
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            if self.tokens >= 1.0 {
                self.strikes = 0;
            }
            Verdict::Allow
        } else {
            self.strikes = self.strikes.saturating_add(1);
            if self.strikes >= MAX_STRIKES {
                Verdict::Disconnect
            } else {
                Verdict::Reject
            }
        }
    }

    /// Rejections in the current streak.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_full_burst_is_allowed_then_rejected() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert_eq!(b.check(t0), Verdict::Allow);
        }
        assert_eq!(b.check(t0), Verdict::Reject);
        assert_eq!(b.strikes(), 1);
    }

    #[test]
    fn bucket_refills_at_configured_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            b.check(t0);
        }
        assert_eq!(b.check(t0), Verdict::Reject);
        // 100 ms at 10/s = one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.check(t1), Verdict::Allow);
        assert_eq!(b.check(t1), Verdict::Reject);
        // 250 ms more = 2.5 tokens: two frames.
        let t2 = t1 + Duration::from_millis(250);
        assert_eq!(b.check(t2), Verdict::Allow);
        assert_eq!(b.check(t2), Verdict::Allow);
        assert_eq!(b.check(t2), Verdict::Reject);
    }

    #[test]
    fn bucket_refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 3, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.check(later), Verdict::Allow);
        }
        assert_eq!(b.check(later), Verdict::Reject);
    }

    #[test]
    fn bucket_sustained_abuse_disconnects_after_max_strikes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 1, t0);
        assert_eq!(b.check(t0), Verdict::Allow);
        for _ in 1..MAX_STRIKES {
            assert_eq!(b.check(t0), Verdict::Reject);
        }
        assert_eq!(b.check(t0), Verdict::Disconnect);
    }

    #[test]
    fn bucket_trickle_of_refills_does_not_reset_strikes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1, t0);
        assert_eq!(b.check(t0), Verdict::Allow);
        let mut now = t0;
        let mut disconnected = false;
        // Flood: 10 frames per refilled token.
        for i in 0..1000 {
            if i % 10 == 0 {
                now += Duration::from_millis(10);
            }
            if b.check(now) == Verdict::Disconnect {
                disconnected = true;
                break;
            }
        }
        assert!(disconnected);
    }

    #[test]
    fn bucket_backing_off_resets_strikes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 4, t0);
        for _ in 0..4 {
            b.check(t0);
        }
        for _ in 0..50 {
            assert_eq!(b.check(t0), Verdict::Reject);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.check(t1), Verdict::Allow);
        assert_eq!(b.strikes(), 0);
        for _ in 0..3 {
            assert_eq!(b.check(t1), Verdict::Allow);
        }
        for _ in 1..MAX_STRIKES {
            assert_eq!(b.check(t1), Verdict::Reject);
        }
        assert_eq!(b.check(t1), Verdict::Disconnect);
    }

    #[test]
    fn bucket_zero_burst_and_rate_do_not_panic() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert_eq!(b.check(t0), Verdict::Allow);
        assert_eq!(b.check(t0 + Duration::from_secs(10)), Verdict::Reject);
    }

    #[test]
    fn bucket_time_going_backwards_is_ignored() {
        let t1 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(10, 1, t1);
        assert_eq!(b.check(t1), Verdict::Allow);
        let earlier = t1 - Duration::from_millis(500);
        assert_eq!(b.check(earlier), Verdict::Reject);
        assert_eq!(b.check(t1 + Duration::from_millis(100)), Verdict::Allow);
    }
}
