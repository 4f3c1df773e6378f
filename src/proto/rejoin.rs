//! Getting back to signaling, sans IO: which failed join means "try another server" and
//! which ends the attempt, where and when the next attempt goes after a lost connection,
//! and how the members a new `welcome` lists compare with those known before
//! (docs/PROTOCOL.md, "Client behaviour on a lost connection"). Inputs are error codes,
//! elapsed times and a random number; nothing here sleeps or connects.

use std::collections::HashSet;
use std::time::Duration;

use peershare_signaling::protocol::PeerInfo;
use peershare_signaling::protocol::codes::{SHUTTING_DOWN, UNAVAILABLE};

use crate::error::codes::NOT_CONNECTED;

/// The wait before the second round of attempts; it doubles every round.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two rounds.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The wait before attempt `attempt` (0-based) of a doubling backoff: none before the
/// first, `first` before the second, twice as long each time after, at most `cap`.
pub fn doubling(attempt: u32, first: Duration, cap: Duration) -> Duration {
    match attempt {
        0 => Duration::ZERO,
        n => first.saturating_mul(1 << (n - 1).min(20)).min(cap),
    }
}

/// `delay` jittered: uniformly between half of it and all of it, with `unit` a random
/// number in `[0, 1)` (clamped), so that clients cut off together spread out.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    delay / 2 + delay.div_f64(2.0).mul_f64(unit)
}

/// What a failed join says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server was not reached (refused, reset, timed out, TLS failed, the connection
    /// closed before a `welcome`: code 1180), or it cannot take joins now (7012 draining,
    /// 7017 unavailable): another server, or the same one later, may do.
    Retry,
    /// A server answered with a refusal another attempt would not change (7006 session
    /// not found, 7007 wrong password, 7005 full, an unusable CA file …).
    Refused,
}

impl Failure {
    /// The failure an error code stands for.
    pub fn of(code: u16) -> Self {
        match code {
            NOT_CONNECTED | SHUTTING_DOWN | UNAVAILABLE => Failure::Retry,
            _ => Failure::Refused,
        }
    }
}

/// One attempt to join: the index of its server in the list, and how long to wait first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub server: usize,
    pub delay: Duration,
}

/// Where and when the attempts to rejoin after a lost signaling connection go. The
/// servers are tried in turn, starting with the one the connection was lost to: the
/// first attempt at once (or after the `retry_after_ms` of a draining server), every
/// other server of the same round right after the previous one failed, and each new
/// round after a jittered doubling wait (0.25 s, 0.5 s, 1 s, 2 s, 4 s, then 5 s).
/// Nothing is attempted once `window` has passed since the loss.
#[derive(Debug, Clone)]
pub struct Schedule {
    servers: usize,
    first: usize,
    /// Attempts made so far.
    made: u32,
    window: Duration,
}

impl Schedule {
    /// Rejoining through `servers` servers (at least one), the connection having been
    /// lost to server `current`, for at most `window` (zero: never).
    pub fn new(servers: usize, current: usize, window: Duration) -> Self {
        let servers = servers.max(1);
        Self {
            servers,
            first: current % servers,
            made: 0,
            window,
        }
    }

    /// The first attempt, `hint` after the loss (a draining server's `retry_after_ms`)
    /// or at once; `None` if the window is zero or the hint reaches past it.
    pub fn first(&mut self, hint: Option<Duration>) -> Option<Attempt> {
        let delay = hint.unwrap_or(Duration::ZERO);
        self.attempt(Duration::ZERO, delay)
    }

    /// The attempt after one that failed with `failure`, `elapsed` after the loss (when
    /// that attempt ended), with `hint` from the server if it gave one and `unit` a
    /// random number in `[0, 1)` for the jitter; `None`: give up.
    pub fn after(
        &mut self,
        failure: Failure,
        elapsed: Duration,
        hint: Option<Duration>,
        unit: f64,
    ) -> Option<Attempt> {
        if failure == Failure::Refused {
            return None;
        }
        let delay = match hint {
            Some(hint) => hint,
            // Another server of the same round goes at once.
            None if !(self.made as usize).is_multiple_of(self.servers) => Duration::ZERO,
            None => {
                let round = self.made / self.servers as u32;
                jittered(doubling(round, FIRST_DELAY, MAX_DELAY), unit)
            }
        };
        self.attempt(elapsed, delay)
    }

    fn attempt(&mut self, elapsed: Duration, delay: Duration) -> Option<Attempt> {
        if elapsed.saturating_add(delay) >= self.window {
            return None;
        }
        let server = (self.first + self.made as usize) % self.servers;
        self.made = self.made.saturating_add(1);
        Some(Attempt { server, delay })
    }
}

/// How the members of a new `welcome` differ from those known before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Known members the `welcome` does not list: they left meanwhile (sorted).
    pub left: Vec<String>,
    /// Members the `welcome` lists that were not known, in its order.
    pub joined: Vec<PeerInfo>,
}

/// Compare the members known before a lost connection (`known`) with those of the
/// `welcome` that ended it (`present`); `me` is never a member of our own session.
pub fn reconcile<'a>(
    known: impl IntoIterator<Item = &'a str>,
    me: &str,
    present: Vec<PeerInfo>,
) -> Presence {
    let now: HashSet<&str> = present.iter().map(|p| p.id.as_str()).collect();
    let known: HashSet<&str> = known.into_iter().collect();
    let mut left: Vec<String> = known
        .iter()
        .filter(|id| !now.contains(*id))
        .map(|id| id.to_string())
        .collect();
    left.sort();
    let mut seen = HashSet::new();
    let joined = present
        .into_iter()
        .filter(|p| p.id != me && !known.contains(p.id.as_str()) && seen.insert(p.id.clone()))
        .collect();
    Presence { left, joined }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn member(id: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            name: format!("name of {id}"),
            relay_only: false,
        }
    }

    #[test]
    fn doubling_zero_first_then_doubles_up_to_the_cap() {
        let delays: Vec<Duration> = (0..9)
            .map(|n| doubling(n, FIRST_DELAY, MAX_DELAY))
            .collect();
        assert_eq!(
            delays,
            [0, 250, 500, 1000, 2000, 4000, 5000, 5000, 5000].map(|ms| ms * MS)
        );
        assert_eq!(doubling(u32::MAX, FIRST_DELAY, MAX_DELAY), MAX_DELAY);
    }

    #[test]
    fn jittered_stays_between_half_and_all_of_the_delay() {
        assert_eq!(jittered(S, 0.0), S / 2);
        assert_eq!(jittered(S, 0.5), 750 * MS);
        assert_eq!(jittered(S, 1.0), S);
        assert_eq!(jittered(S, 7.0), S);
        assert_eq!(jittered(S, -1.0), S / 2);
        assert_eq!(jittered(S, f64::NAN), S / 2);
        assert_eq!(jittered(Duration::ZERO, 0.9), Duration::ZERO);
    }

    #[test]
    fn failure_of_unreachable_draining_unavailable_retries_others_refuse() {
        for code in [1180, 7012, 7017] {
            assert_eq!(Failure::of(code), Failure::Retry, "{code}");
        }
        for code in [7005, 7006, 7007, 7011, 7013, 7015, 6008] {
            assert_eq!(Failure::of(code), Failure::Refused, "{code}");
        }
    }

    /// The delays of a schedule over one server whose attempts all fail at once, with
    /// the jitter at its top (`unit` 1.0).
    fn delays(servers: usize, current: usize, window: Duration) -> Vec<(usize, Duration)> {
        let mut schedule = Schedule::new(servers, current, window);
        let mut out = Vec::new();
        let mut next = schedule.first(None);
        let mut elapsed = Duration::ZERO;
        while let Some(a) = next {
            elapsed += a.delay;
            out.push((a.server, a.delay));
            next = schedule.after(Failure::Retry, elapsed, None, 1.0);
        }
        out
    }

    #[test]
    fn schedule_one_server_backs_off_to_five_seconds_and_stops_at_the_window() {
        let got = delays(1, 0, 30 * S);
        let ms: Vec<u64> = got.iter().map(|(_, d)| d.as_millis() as u64).collect();
        // 0 + 0.25 + 0.5 + 1 + 2 + 4 = 7.75 s, then 5 s steps while below 30 s.
        assert_eq!(ms, [0, 250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000]);
        assert!(got.iter().all(|(server, _)| *server == 0));
    }

    #[test]
    fn schedule_two_servers_start_with_the_lost_one_and_alternate_per_round() {
        let got = delays(2, 1, 2 * S);
        assert_eq!(
            got,
            [
                (1, Duration::ZERO),
                (0, Duration::ZERO),
                (1, 250 * MS),
                (0, Duration::ZERO),
                (1, 500 * MS),
                (0, Duration::ZERO),
                (1, S),
                (0, Duration::ZERO),
            ]
        );
    }

    #[test]
    fn schedule_first_attempt_waits_for_the_draining_servers_hint() {
        let mut schedule = Schedule::new(1, 0, 30 * S);
        assert_eq!(
            schedule.first(Some(2315 * MS)),
            Some(Attempt {
                server: 0,
                delay: 2315 * MS
            })
        );
        // A hint on a failed attempt (7017 with retry_after_ms) replaces the backoff.
        assert_eq!(
            schedule.after(Failure::Retry, 3 * S, Some(1200 * MS), 0.0),
            Some(Attempt {
                server: 0,
                delay: 1200 * MS
            })
        );
    }

    #[test]
    fn schedule_zero_window_or_refusal_or_hint_past_the_window_gives_up() {
        assert_eq!(Schedule::new(1, 0, Duration::ZERO).first(None), None);
        assert_eq!(Schedule::new(1, 0, S).first(Some(S)), None);
        let mut schedule = Schedule::new(2, 0, 30 * S);
        assert!(schedule.first(None).is_some());
        assert_eq!(schedule.after(Failure::Refused, MS, None, 0.5), None);
        let mut schedule = Schedule::new(1, 0, 30 * S);
        assert!(schedule.first(None).is_some());
        assert_eq!(schedule.after(Failure::Retry, 30 * S, None, 0.0), None);
    }

    #[test]
    fn reconcile_lists_the_departed_and_the_new_not_the_kept_nor_me() {
        let presence = reconcile(
            ["bbb", "aaa", "ccc"],
            "me",
            vec![member("ccc"), member("ddd"), member("me"), member("ddd")],
        );
        assert_eq!(
            presence,
            Presence {
                left: vec!["aaa".into(), "bbb".into()],
                joined: vec![member("ddd")],
            }
        );
        assert_eq!(reconcile([], "me", vec![]), Presence::default());
    }
}
