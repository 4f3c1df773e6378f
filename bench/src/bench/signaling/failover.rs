//! The failover phase of the two-node benchmark: node B is killed (SIGKILL) under load,
//! and every member it held gets back into its session through node A as a peershare
//! peer does (`peershare::proto::rejoin::Schedule`: the lost server first, the next one
//! at once, then jittered doubling rounds; `join.resume` with the member's token).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use peershare::proto::rejoin::{Attempt, Failure, Schedule};

use super::measure::{Samples, quantiles};
use super::traffic::{Member, Refused, Ws, connect, join, member_active};

/// How long a member tries to get back, as `PeerConfig::signaling_retry_window`.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// What the members of the killed node went through.
#[derive(Default)]
pub(super) struct Rejoins {
    /// Seconds from the kill to the `welcome` of each member back in its session.
    pub back_after: Vec<f64>,
    /// Seconds from the kill to each member's noticing its connection ended.
    pub noticed_after: Vec<f64>,
    /// Members whose `welcome` had another ID or session (their session is lost to them).
    pub other_identity: u64,
    /// Members that gave up (their schedule ended, or a join was refused for good).
    pub gave_up: u64,
    /// Join attempts made, and those refused by code (0: not connected).
    pub attempts: u64,
    pub refused: BTreeMap<u16, u64>,
    /// The first few errors of attempts that did not reach a live server.
    pub examples: Vec<String>,
}

impl Rejoins {
    /// (p50, p99, max) seconds from the kill to being back.
    pub fn summary(&self) -> (f64, f64, f64) {
        quantiles(&mut self.back_after.clone())
    }

    /// (p50, p99, max) seconds from the kill to noticing it.
    pub fn noticed(&self) -> (f64, f64, f64) {
        quantiles(&mut self.noticed_after.clone())
    }

    /// Members back within `secs` of the kill.
    pub fn within(&self, secs: f64) -> usize {
        self.back_after.iter().filter(|s| **s <= secs).count()
    }

    pub fn refusals(&self) -> String {
        let list: Vec<String> = self
            .refused
            .iter()
            .map(|(code, n)| match code {
                0 => format!("{n}× not connected"),
                c => format!("{n}× {c}"),
            })
            .collect();
        list.join(", ")
    }
}

/// The context every member of the killed node shares.
pub(super) struct Shared {
    /// Node URLs in the order a member tries them (its own node first).
    pub urls: Rc<[String]>,
    pub interval: Duration,
    pub stop_at: tokio::time::Instant,
    pub origin: Instant,
    /// When node B is killed.
    pub kill_at: Instant,
    pub sdp: Rc<str>,
    pub samples: Rc<RefCell<Samples>>,
    pub rejoins: Rc<RefCell<Rejoins>>,
}

/// A member of node `node` (index in `urls`) answering setups until `stop_at`; when its
/// connection ends it gets back into its session and goes on. Whether it is in its
/// session at the end.
pub(super) async fn member_resilient(m: Member, node: usize, shared: Rc<Shared>) -> bool {
    let mut node = node;
    let mut m = m;
    loop {
        m = member_active(
            m,
            None,
            shared.interval,
            shared.stop_at,
            shared.origin,
            Rc::clone(&shared.sdp),
            Rc::clone(&shared.samples),
        )
        .await;
        if !m.lost || tokio::time::Instant::now() >= shared.stop_at {
            return !m.lost;
        }
        // The dead connection's descriptor goes before a new one is opened: 9,500 of each
        // at once would pass the generator's descriptor limit.
        let Member {
            ws,
            session,
            id,
            token,
            partner,
            slot,
            lost: _,
        } = m;
        drop(ws);
        let Some((ws, new_token, n)) = rejoin(&session, &id, &token, slot, node, &shared).await
        else {
            return false;
        };
        node = n;
        m = Member {
            ws,
            session,
            id,
            token: new_token,
            partner,
            slot,
            lost: false,
        };
    }
}

/// Get member `id` (of `session`, resume token `token`, source address `slot`) back
/// into its session after its connection to node `node` ended: its new connection and
/// token and the node it is on, or `None` if it gave up.
async fn rejoin(
    session: &str,
    id: &str,
    token: &str,
    slot: usize,
    node: usize,
    shared: &Shared,
) -> Option<(Ws, String, usize)> {
    let lost_at = Instant::now();
    shared
        .rejoins
        .borrow_mut()
        .noticed_after
        .push(shared.kill_at.elapsed().as_secs_f64().max(0.0));
    let mut schedule = Schedule::new(shared.urls.len(), node, RETRY_WINDOW);
    let mut next = schedule.first(None);
    while let Some(Attempt { server, delay }) = next {
        tokio::time::sleep(delay).await;
        shared.rejoins.borrow_mut().attempts += 1;
        let attempt = async {
            let mut ws = connect(&shared.urls[server], slot).await?;
            let welcome = join(&mut ws, Some(session), Some((id, token))).await?;
            anyhow::Ok((ws, welcome))
        };
        let (failure, hint) = match attempt.await {
            Ok((ws, welcome)) => {
                let mut r = shared.rejoins.borrow_mut();
                if welcome.id == id && welcome.session == session {
                    r.back_after
                        .push(shared.kill_at.elapsed().as_secs_f64().max(0.0));
                } else {
                    r.other_identity += 1;
                }
                return Some((ws, welcome.token, server));
            }
            Err(e) => {
                let (code, hint) = e
                    .downcast_ref::<Refused>()
                    .map_or((0, None), |r| (r.code, r.retry_after_ms));
                let mut r = shared.rejoins.borrow_mut();
                *r.refused.entry(code).or_default() += 1;
                if code == 0 && server != node && r.examples.len() < 3 {
                    r.examples.push(format!("{e:#}"));
                }
                let failure = if code == 0 {
                    Failure::Retry
                } else {
                    Failure::of(code)
                };
                (failure, hint.map(Duration::from_millis))
            }
        };
        next = schedule.after(failure, lost_at.elapsed(), hint, rand::random::<f64>());
    }
    shared.rejoins.borrow_mut().gave_up += 1;
    None
}
