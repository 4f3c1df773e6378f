//! The session's clock, injectable so that time-dependent rules (offer lifetimes, grace
//! periods) can be tested without waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Monotonic time as the session sees it: the runtime's clock plus an offset that only a
/// test moves forward.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<Mutex<Duration>>,
}

impl Clock {
    /// The runtime's clock (also the default).
    pub fn system() -> Self {
        Self::default()
    }

    /// Now.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Jump forward by `by` (tests).
    pub fn advance(&self, by: Duration) {
        if let Ok(mut offset) = self.offset.lock() {
            *offset += by;
        }
    }

    fn offset(&self) -> Duration {
        self.offset.lock().map(|o| *o).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn clock_advance_moves_every_clone() {
        let a = Clock::system();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_secs(3600));
        assert_eq!(a.now() - t0, Duration::from_secs(3600));
    }
}
