//! Upload job state machine: who may fetch the file, and per-recipient outcomes.
//! Pure: time comes in as milliseconds on the caller's monotonic clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::codes;

/// Client ID as assigned by the signaling server.
pub type ClientId = String;

/// Who a file is shared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every participant, including those who join while the offer is alive.
    Broadcast,
    /// Only these client IDs.
    Only(BTreeSet<ClientId>),
}

impl Audience {
    /// Whether `peer` is an intended recipient.
    pub fn includes(&self, peer: &str) -> bool {
        match self {
            Audience::Broadcast => true,
            Audience::Only(set) => set.contains(peer),
        }
    }

    /// Whether `peer` is named by a targeted audience.
    pub fn names(&self, peer: &str) -> bool {
        matches!(self, Audience::Only(set) if set.contains(peer))
    }

    /// Make `peer` an intended recipient (a broadcast includes everyone already).
    pub fn add(&mut self, peer: &str) {
        if let Audience::Only(set) = self {
            set.insert(peer.to_string());
        }
    }
}

/// What became of the file at one recipient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The recipient holds a verified copy.
    Delivered,
    /// The recipient declined the offer.
    Declined,
    /// Delivery to this recipient failed with `code`.
    Failed { code: u16 },
}

/// `delivered`, `declined` or `failed CODE`.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::Declined => f.write_str("declined"),
            Outcome::Failed { code } => write!(f, "failed {code}"),
        }
    }
}

/// What the upload job as a whole became, once every recipient is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Completed(BTreeMap<ClientId, Outcome>),
    /// Every recipient failed; carries the code of the last failure.
    Failed(BTreeMap<ClientId, Outcome>, u16),
}

/// What recording one recipient's outcome did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing: the peer never got the offer, or its outcome is final already.
    Ignored,
    /// A new outcome; with the job's completion if it resolved the last recipient.
    New(Option<Completion>),
}

/// State of one upload job.
#[derive(Debug, Clone)]
pub struct UploadState {
    audience: Audience,
    size: u64,
    expires_at_ms: u64,
    offered: BTreeMap<ClientId, Option<Outcome>>,
    acked: BTreeMap<ClientId, u64>,
    /// Members a targeted share names, which the job waits for even before the offer
    /// reaches them ([`UploadState::awaits`]).
    awaited: BTreeSet<ClientId>,
    /// The lifetime ended and [`UploadState::expire`] resolved who it left unreached.
    expired: bool,
    finished: bool,
}

impl UploadState {
    /// A job for a file of `size` bytes, alive until `expires_at_ms`.
    pub fn new(audience: Audience, size: u64, expires_at_ms: u64) -> Self {
        Self {
            audience,
            size,
            expires_at_ms,
            offered: BTreeMap::new(),
            acked: BTreeMap::new(),
            awaited: BTreeSet::new(),
            expired: false,
            finished: false,
        }
    }

    /// The intended audience.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// Make `peer` an intended recipient from now on.
    pub fn add_recipient(&mut self, peer: &str) {
        self.audience.add(peer);
    }

    /// `peer`, named by this targeted share, is a member of the session: the job is not
    /// resolved until it has an outcome, even if the offer has not reached it yet (a
    /// client ID that is no member may join later, and is waited for once offered). Does
    /// nothing for a peer the audience does not name, or one already offered.
    pub fn awaits(&mut self, peer: &str) {
        if self.audience.names(peer) && !self.offered.contains_key(peer) {
            self.awaited.insert(peer.to_string());
        }
    }

    /// Whether the offer is still alive at `now_ms`.
    pub fn is_alive(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Remaining lifetime at `now_ms`.
    pub fn ttl_ms(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms)
    }

    /// Whether the offer should go to `peer` now (intended, not yet offered, alive).
    pub fn should_offer(&self, peer: &str, now_ms: u64) -> bool {
        self.audience.includes(peer) && !self.offered.contains_key(peer) && self.is_alive(now_ms)
    }

    /// Record that the offer went to `peer`.
    pub fn mark_offered(&mut self, peer: &str) {
        self.offered.entry(peer.to_string()).or_insert(None);
    }

    /// Check a request from `peer`: `Err(code)` if it must be refused. `started`: the
    /// request resumes a job that began while the offer was alive, which may finish after
    /// the offer's lifetime (the lifetime bounds when downloads start, not how long they
    /// take).
    pub fn authorize(
        &self,
        peer: &str,
        offset: u64,
        now_ms: u64,
        started: bool,
    ) -> Result<(), u16> {
        if !self.audience.includes(peer) {
            return Err(codes::NOT_PERMITTED);
        }
        if !started && !self.is_alive(now_ms) {
            return Err(codes::OFFER_EXPIRED);
        }
        if offset > self.size {
            return Err(codes::PROTOCOL_VIOLATION);
        }
        if matches!(self.offered.get(peer), Some(Some(Outcome::Delivered))) {
            return Err(codes::ALREADY_DOWNLOADED);
        }
        Ok(())
    }

    /// Record acknowledged bytes; returns the new value if it advanced and is plausible.
    pub fn on_progress(&mut self, peer: &str, received: u64) -> Option<u64> {
        if received > self.size || !self.offered.contains_key(peer) {
            return None;
        }
        let slot = self.acked.entry(peer.to_string()).or_insert(0);
        if received > *slot {
            *slot = received;
            Some(received)
        } else {
            None
        }
    }

    /// Record the outcome at `peer`. Only a recipient the offer went to has an outcome,
    /// and a final one is not replaced (a verified copy stays delivered; a declined
    /// offer stays declined); a failed delivery can still become delivered (a recipient
    /// that resumed after its failure was reported). Once every recipient is resolved,
    /// the job's completion comes with the outcome that resolved the last one (once).
    pub fn on_outcome(&mut self, peer: &str, outcome: Outcome) -> Recorded {
        let Some(slot) = self.offered.get_mut(peer) else {
            return Recorded::Ignored;
        };
        match (&slot, &outcome) {
            (None, _) | (Some(Outcome::Failed { .. }), Outcome::Delivered) => {
                *slot = Some(outcome);
            }
            _ => return Recorded::Ignored,
        }
        Recorded::New(self.completion())
    }

    /// The recipient left for good: its pending delivery failed (6003), and so did the
    /// file for an awaited member ([`UploadState::awaits`]) that the offer never reached.
    pub fn on_peer_gone(&mut self, peer: &str) -> Recorded {
        self.on_peer_unreachable(peer, codes::PEER_GONE)
    }

    /// The recipient can never be reached again (it left for good: 6003; it was refused:
    /// 6011, 6012): its pending delivery failed with `code`, and so did the file for an
    /// awaited member that the offer never reached.
    pub fn on_peer_unreachable(&mut self, peer: &str, code: u16) -> Recorded {
        if !self.is_pending(peer) && !self.awaits_unoffered(peer) {
            return Recorded::Ignored;
        }
        self.mark_offered(peer);
        self.on_outcome(peer, Outcome::Failed { code })
    }

    /// Whether `peer` is awaited and the offer has not reached it yet.
    fn awaits_unoffered(&self, peer: &str) -> bool {
        self.awaited.contains(peer) && !self.offered.contains_key(peer)
    }

    /// The offer's lifetime is over at `now_ms` (else, and once the job is finished, this
    /// does nothing): nobody can start fetching the file any more. Every recipient, offered
    /// or awaited, that has no outcome and no delivery under way (`delivering`) never will: they are
    /// returned, marked offered, for their outcome (`failed` 6001) to be recorded. A job
    /// that reached nobody can then finish with [`UploadState::settle`].
    pub fn expire(&mut self, now_ms: u64, delivering: impl Fn(&str) -> bool) -> Vec<ClientId> {
        if self.finished || self.is_alive(now_ms) {
            return Vec::new();
        }
        self.expired = true;
        let mut unreached: Vec<ClientId> = self
            .offered
            .iter()
            .filter(|(peer, outcome)| outcome.is_none() && !delivering(peer))
            .map(|(peer, _)| peer.clone())
            .collect();
        unreached.extend(
            self.awaited
                .iter()
                .filter(|p| !self.offered.contains_key(*p))
                .cloned(),
        );
        unreached.sort();
        for peer in &unreached {
            self.mark_offered(peer);
        }
        unreached
    }

    /// The completion if every recipient is resolved and it was not reported yet: after
    /// [`UploadState::expire`], the `Failed` 6001 of a job whose offer reached nobody.
    pub fn settle(&mut self) -> Option<Completion> {
        self.completion()
    }

    /// Whether `peer` got the offer and has no outcome yet.
    pub fn is_pending(&self, peer: &str) -> bool {
        matches!(self.offered.get(peer), Some(None))
    }

    /// The peers the offer went to.
    pub fn offered_peers(&self) -> Vec<ClientId> {
        self.offered.keys().cloned().collect()
    }

    /// `peer` is no recipient after all: a member that only sends, or a client ID whose
    /// job a restarted recipient took over. Its pending entry is dropped and a targeted
    /// share stops waiting for it; a final outcome stays. Returns the completion if that
    /// resolved the job.
    pub fn forget(&mut self, peer: &str) -> Option<Completion> {
        if !matches!(self.offered.get(peer), Some(Some(_))) {
            self.offered.remove(peer);
            self.acked.remove(peer);
            self.awaited.remove(peer);
            if let Audience::Only(set) = &mut self.audience {
                set.remove(peer);
            }
        }
        self.completion()
    }

    /// Whether completion was already reported.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Every recipient is resolved: each the offer reached, and each awaited member
    /// (until the lifetime ends, [`UploadState::expire`]). A job no recipient was reached
    /// by is resolved only by its expiry, as `Failed` 6001.
    fn completion(&mut self) -> Option<Completion> {
        let unreached = self.awaited.iter().any(|p| !self.offered.contains_key(p));
        if self.finished
            || unreached
            || (self.offered.is_empty() && !self.expired)
            || self.offered.values().any(Option::is_none)
        {
            return None;
        }
        self.finished = true;
        let outcomes: BTreeMap<ClientId, Outcome> = self
            .offered
            .iter()
            .filter_map(|(k, v)| v.clone().map(|o| (k.clone(), o)))
            .collect();
        if outcomes.is_empty() {
            return Some(Completion::Failed(outcomes, codes::OFFER_EXPIRED));
        }
        let last_failure = outcomes.values().rev().find_map(|o| match o {
            Outcome::Failed { code } => Some(*code),
            _ => None,
        });
        let all_failed = outcomes
            .values()
            .all(|o| matches!(o, Outcome::Failed { .. }));
        match (all_failed, last_failure) {
            (true, Some(code)) => Some(Completion::Failed(outcomes, code)),
            _ => Some(Completion::Completed(outcomes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn only(ids: &[&str]) -> Audience {
        Audience::Only(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn upload_targeted_request_from_outsider_is_not_permitted() {
        let s = UploadState::new(only(&["a"]), 10, 1000);
        assert_eq!(s.authorize("a", 0, 0, false), Ok(()));
        assert_eq!(s.authorize("b", 0, 0, false), Err(codes::NOT_PERMITTED));
    }

    #[test]
    fn upload_recipient_added_later_is_offered_and_permitted() {
        let mut s = UploadState::new(only(&["a"]), 10, 1000);
        assert!(!s.should_offer("b", 0));
        s.add_recipient("b");
        assert!(s.should_offer("b", 0));
        assert_eq!(s.authorize("b", 0, 0, false), Ok(()));
        assert_eq!(s.authorize("c", 0, 0, false), Err(codes::NOT_PERMITTED));
        let mut all = UploadState::new(Audience::Broadcast, 10, 1000);
        all.add_recipient("b");
        assert_eq!(all.audience(), &Audience::Broadcast);
    }

    #[test]
    fn upload_request_after_expiry_is_expired() {
        let s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(s.authorize("a", 0, 1000, false), Err(codes::OFFER_EXPIRED));
        assert!(!s.should_offer("a", 1000));
    }

    #[test]
    fn upload_request_beyond_size_is_protocol_violation() {
        let s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(
            s.authorize("a", 11, 0, false),
            Err(codes::PROTOCOL_VIOLATION)
        );
    }

    #[test]
    fn upload_completes_when_all_offered_resolved() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("a");
        s.mark_offered("b");
        assert_eq!(s.on_outcome("a", Outcome::Delivered), Recorded::New(None));
        let Recorded::New(Some(done)) = s.on_outcome("b", Outcome::Declined) else {
            panic!("expected completion")
        };
        let Completion::Completed(map) = done else {
            panic!("expected completion")
        };
        assert_eq!(map["a"], Outcome::Delivered);
        assert_eq!(map["b"], Outcome::Declined);
        // reported once
        assert_eq!(s.on_outcome("b", Outcome::Declined), Recorded::Ignored);
    }

    #[test]
    fn upload_all_recipients_failed_is_failure() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("a");
        let Recorded::New(Some(done)) = s.on_peer_gone("a") else {
            panic!("expected completion")
        };
        assert!(matches!(done, Completion::Failed(_, codes::PEER_GONE)));
    }

    #[test]
    fn upload_progress_ignores_regressions_and_overclaims() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("a");
        assert_eq!(s.on_progress("a", 4), Some(4));
        assert_eq!(s.on_progress("a", 3), None);
        assert_eq!(s.on_progress("a", 11), None);
        assert_eq!(s.on_progress("zz", 5), None);
    }

    #[test]
    fn upload_forget_takes_entry_out_of_completion() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("old");
        s.mark_offered("new");
        assert!(s.is_pending("old"));
        assert_eq!(s.forget("old"), None);
        let Recorded::New(Some(done)) = s.on_outcome("new", Outcome::Delivered) else {
            panic!("expected completion")
        };
        let Completion::Completed(map) = done else {
            panic!("expected completion")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["new"]);
    }

    #[test]
    fn upload_delivered_then_request_again_is_already_downloaded() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("a");
        s.mark_offered("b");
        s.on_outcome("a", Outcome::Delivered);
        assert_eq!(
            s.authorize("a", 0, 0, false),
            Err(codes::ALREADY_DOWNLOADED)
        );
    }

    #[test]
    fn upload_outcome_of_peer_never_offered_is_ignored() {
        let mut s = UploadState::new(only(&["a"]), 10, 1000);
        s.mark_offered("a");
        assert_eq!(s.on_outcome("b", Outcome::Declined), Recorded::Ignored);
        // Neither intended nor offered: no outcome when it leaves.
        assert_eq!(s.on_peer_gone("b"), Recorded::Ignored);
        assert!(s.is_pending("a"));
    }

    #[test]
    fn upload_failed_recipient_that_resumes_is_delivered_once() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("a");
        assert!(matches!(
            s.on_outcome("a", Outcome::Failed { code: 1183 }),
            Recorded::New(Some(Completion::Failed(_, 1183)))
        ));
        assert_eq!(s.on_outcome("a", Outcome::Delivered), Recorded::New(None));
        assert_eq!(
            s.on_outcome("a", Outcome::Failed { code: 5100 }),
            Recorded::Ignored
        );
        assert_eq!(s.on_outcome("a", Outcome::Declined), Recorded::Ignored);
    }

    #[test]
    fn upload_expired_offer_still_lets_a_started_job_resume() {
        let s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(s.authorize("a", 4, 1000, false), Err(codes::OFFER_EXPIRED));
        assert_eq!(s.authorize("a", 4, 1000, true), Ok(()));
        assert_eq!(
            s.authorize("a", 11, 1000, true),
            Err(codes::PROTOCOL_VIOLATION)
        );
    }

    #[test]
    fn upload_targeted_waits_for_every_named_member_not_only_the_offered() {
        let mut s = UploadState::new(only(&["a", "b"]), 10, 1000);
        s.awaits("a");
        s.awaits("b");
        s.mark_offered("a");
        assert_eq!(s.on_outcome("a", Outcome::Delivered), Recorded::New(None));
        assert!(!s.is_finished(), "b was never reached");
        s.mark_offered("b");
        let Recorded::New(Some(Completion::Completed(map))) = s.on_outcome("b", Outcome::Declined)
        else {
            panic!("expected completion")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn upload_targeted_recipient_gone_before_the_offer_fails_6003() {
        let mut s = UploadState::new(only(&["a", "b"]), 10, 1000);
        s.awaits("a");
        s.awaits("b");
        s.mark_offered("a");
        assert_eq!(s.on_outcome("a", Outcome::Delivered), Recorded::New(None));
        let Recorded::New(Some(Completion::Completed(map))) = s.on_peer_gone("b") else {
            panic!("expected completion")
        };
        assert_eq!(
            map["b"],
            Outcome::Failed {
                code: codes::PEER_GONE
            }
        );
        assert_eq!(s.on_peer_gone("b"), Recorded::Ignored);
    }

    #[test]
    fn upload_expiry_fails_the_unreached_and_spares_running_deliveries() {
        let mut s = UploadState::new(only(&["a", "b", "c", "d"]), 10, 1000);
        for member in ["a", "b", "c"] {
            s.awaits(member);
        }
        // d is no member: it is not waited for, and gets no outcome.
        s.mark_offered("a");
        s.mark_offered("b");
        assert_eq!(
            s.expire(999, |_| false),
            Vec::<ClientId>::new(),
            "still alive"
        );
        // a is being sent the file; b got the offer and never asked; c was never reached.
        assert_eq!(s.expire(1000, |p| p == "a"), ["b", "c"]);
        let expired = Outcome::Failed {
            code: codes::OFFER_EXPIRED,
        };
        assert_eq!(s.on_outcome("b", expired.clone()), Recorded::New(None));
        assert_eq!(s.on_outcome("c", expired.clone()), Recorded::New(None));
        assert_eq!(s.expire(2000, |p| p == "a"), Vec::<ClientId>::new());
        let Recorded::New(Some(Completion::Completed(map))) = s.on_outcome("a", Outcome::Delivered)
        else {
            panic!("expected completion")
        };
        assert_eq!(map["c"], expired);
        assert_eq!(
            s.expire(3000, |_| false),
            Vec::<ClientId>::new(),
            "finished"
        );
    }

    #[test]
    fn upload_targeted_id_of_no_member_is_not_waited_for_until_offered() {
        // `--to` values that are names, or IDs of members not (yet) in the session.
        let mut s = UploadState::new(only(&["a", "later", "a-name"]), 10, 1000);
        s.awaits("a");
        s.awaits("zz");
        s.mark_offered("a");
        let Recorded::New(Some(Completion::Completed(map))) = s.on_outcome("a", Outcome::Delivered)
        else {
            panic!("expected completion")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.on_peer_gone("a-name"), Recorded::Ignored);
        // One that joins later is offered the file and gets its outcome.
        assert!(s.should_offer("later", 0));
        s.mark_offered("later");
        assert_eq!(
            s.on_outcome("later", Outcome::Declined),
            Recorded::New(None)
        );
    }

    #[test]
    fn upload_expiry_of_offer_that_reached_nobody_fails_6001() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(s.settle(), None, "alive: a recipient may still join");
        assert_eq!(s.expire(1000, |_| false), Vec::<ClientId>::new());
        let Some(Completion::Failed(map, codes::OFFER_EXPIRED)) = s.settle() else {
            panic!("expected failure 6001")
        };
        assert!(map.is_empty());
        assert_eq!(s.settle(), None, "reported once");
    }

    #[test]
    fn upload_forget_named_recipient_stops_waiting_for_it() {
        let mut s = UploadState::new(only(&["a", "fellow"]), 10, 1000);
        s.awaits("a");
        s.awaits("fellow");
        s.mark_offered("a");
        assert_eq!(s.on_outcome("a", Outcome::Declined), Recorded::New(None));
        let Some(Completion::Completed(map)) = s.forget("fellow") else {
            panic!("expected completion")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            s.authorize("fellow", 0, 0, false),
            Err(codes::NOT_PERMITTED)
        );
    }

    const PEERS: [&str; 4] = ["a", "b", "c", "d"];

    #[derive(Debug, Clone)]
    enum Op {
        Offer(usize),
        Outcome(usize, Outcome),
        Gone(usize),
        Forget(usize),
        /// The lifetime ends; the peers whose bit is set have a delivery under way.
        Expire(u8),
    }

    fn audience() -> impl Strategy<Value = Audience> {
        prop_oneof![
            Just(Audience::Broadcast),
            prop::sample::subsequence(PEERS.to_vec(), 1..=PEERS.len()).prop_map(|ids| only(&ids)),
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Delivered),
            Just(Outcome::Declined),
            prop::sample::select(vec![1183u16, 5100, 6003, 6004])
                .prop_map(|code| Outcome::Failed { code }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let peer = 0..PEERS.len();
        prop_oneof![
            4 => peer.clone().prop_map(Op::Offer),
            4 => (peer.clone(), outcome()).prop_map(|(p, o)| Op::Outcome(p, o)),
            2 => peer.clone().prop_map(Op::Gone),
            2 => peer.prop_map(Op::Forget),
            1 => any::<u8>().prop_map(Op::Expire),
        ]
    }

    /// Whether `new` is recorded over the current outcome (`None`: pending).
    fn replaces(current: &Option<Outcome>, new: &Outcome) -> bool {
        matches!(
            (current, new),
            (None, _) | (Some(Outcome::Failed { .. }), Outcome::Delivered)
        )
    }

    /// The model of one job: who the share is for, and what the offered map must hold
    /// (peer -> outcome, `None`: pending).
    struct Model {
        audience: Audience,
        /// Named members the job waits for before the offer reaches them.
        awaited: BTreeSet<ClientId>,
        offered: BTreeMap<ClientId, Option<Outcome>>,
        expired: bool,
    }

    impl Model {
        /// Records `outcome` for `peer` as the job must; the job's answer must agree.
        fn outcome(
            &mut self,
            peer: &str,
            outcome: Outcome,
            recorded: Recorded,
        ) -> Result<Option<Completion>, TestCaseError> {
            match self.offered.get_mut(peer) {
                Some(slot) if replaces(slot, &outcome) => {
                    *slot = Some(outcome);
                    let Recorded::New(completion) = recorded else {
                        return Err(TestCaseError::fail(format!("{peer}: not recorded")));
                    };
                    Ok(completion)
                }
                // Never offered (or forgotten), or final already.
                _ => {
                    prop_assert_eq!(recorded, Recorded::Ignored);
                    Ok(None)
                }
            }
        }

        /// Awaited and never reached.
        fn unreached(&self, peer: &str) -> bool {
            self.awaited.contains(peer) && !self.offered.contains_key(peer)
        }

        /// Every recipient is resolved: the job must have completed.
        fn resolved(&self) -> bool {
            self.offered.values().all(Option::is_some)
                && PEERS.iter().all(|p| !self.unreached(p))
                && (self.expired || !self.offered.is_empty())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the order of offers, outcomes, departures, takeovers and the expiry, an
        /// upload job reports its completion at most once, exactly once as soon as every
        /// recipient is resolved (each offered one, each that a targeted share names, and
        /// one at least unless the offer expired), and a `Failed` one only when every
        /// recipient failed (6001 when the offer expired having reached nobody); outcomes
        /// of peers without the offer are ignored, and a delivery is never replaced.
        #[test]
        fn upload_random_outcome_sequences_complete_once(
            audience in audience(),
            members in any::<u8>(),
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let mut s = UploadState::new(audience.clone(), 10, 1000);
            // The peers in `members` are in the session: those the share names are awaited.
            let mut awaited = BTreeSet::new();
            for (i, peer) in PEERS.iter().enumerate() {
                if members & (1 << i) == 0 {
                    continue;
                }
                s.awaits(peer);
                if audience.names(peer) {
                    awaited.insert(peer.to_string());
                }
            }
            let mut model = Model { audience, awaited, offered: BTreeMap::new(), expired: false };
            let mut now = 0;
            let mut completions = 0;
            for op in ops {
                let completion = match op {
                    Op::Offer(p) => {
                        let peer = PEERS[p];
                        if s.should_offer(peer, now) {
                            s.mark_offered(peer);
                            model.offered.insert(peer.into(), None);
                        }
                        if now == 0 {
                            prop_assert_eq!(
                                model.offered.contains_key(peer),
                                model.audience.includes(peer)
                            );
                        }
                        None
                    }
                    Op::Outcome(p, outcome) => {
                        let peer = PEERS[p];
                        let recorded = s.on_outcome(peer, outcome.clone());
                        model.outcome(peer, outcome, recorded)?
                    }
                    Op::Gone(p) => {
                        let peer = PEERS[p];
                        let recorded = s.on_peer_gone(peer);
                        if model.unreached(peer) {
                            model.offered.insert(peer.into(), None);
                        }
                        let gone = Outcome::Failed { code: codes::PEER_GONE };
                        match model.offered.get(peer) {
                            Some(None) => model.outcome(peer, gone, recorded)?,
                            _ => {
                                prop_assert_eq!(recorded, Recorded::Ignored);
                                None
                            }
                        }
                    }
                    Op::Forget(p) => {
                        let peer = PEERS[p];
                        if !matches!(model.offered.get(peer), Some(Some(_))) {
                            model.offered.remove(peer);
                            model.awaited.remove(peer);
                            if let Audience::Only(set) = &mut model.audience {
                                set.remove(peer);
                            }
                        }
                        s.forget(peer)
                    }
                    Op::Expire(mask) => {
                        now = 1000;
                        let delivering = |peer: &str| {
                            PEERS.iter().position(|p| *p == peer).is_some_and(|i| mask & (1 << i) != 0)
                        };
                        let unreached = s.expire(now, delivering);
                        let mut expected: Vec<ClientId> = Vec::new();
                        if completions == 0 {
                            model.expired = true;
                            expected = PEERS
                                .iter()
                                .filter(|p| {
                                    model.unreached(p)
                                        || (matches!(model.offered.get(**p), Some(None))
                                            && !delivering(p))
                                })
                                .map(|p| p.to_string())
                                .collect();
                        }
                        prop_assert_eq!(&unreached, &expected);
                        let mut completion = None;
                        for peer in unreached {
                            model.offered.insert(peer.clone(), None);
                            let expired = Outcome::Failed { code: codes::OFFER_EXPIRED };
                            let recorded = s.on_outcome(&peer, expired.clone());
                            completion = completion.or(model.outcome(&peer, expired, recorded)?);
                        }
                        completion.or(s.settle())
                    }
                };
                if let Some(completion) = completion {
                    completions += 1;
                    prop_assert_eq!(completions, 1, "completion reported again");
                    prop_assert!(model.resolved(), "completion before every recipient is resolved");
                    let resolved: BTreeMap<ClientId, Outcome> = model
                        .offered
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().expect("resolved")))
                        .collect();
                    let all_failed = resolved
                        .values()
                        .all(|o| matches!(o, Outcome::Failed { .. }));
                    match completion {
                        Completion::Completed(map) => {
                            prop_assert!(!all_failed);
                            prop_assert_eq!(map, resolved);
                        }
                        Completion::Failed(map, code) if map.is_empty() => {
                            prop_assert!(model.expired);
                            prop_assert_eq!(code, codes::OFFER_EXPIRED);
                            prop_assert_eq!(map, resolved);
                        }
                        Completion::Failed(map, code) => {
                            prop_assert!(all_failed);
                            let failed = Outcome::Failed { code };
                            prop_assert!(map.values().any(|o| *o == failed), "code of no failure");
                            prop_assert_eq!(map, resolved);
                        }
                    }
                }
                prop_assert_eq!(s.is_finished(), completions == 1);
                if model.resolved() {
                    prop_assert_eq!(completions, 1, "every recipient resolved, no completion");
                }
                for (peer, outcome) in &model.offered {
                    prop_assert_eq!(s.is_pending(peer), outcome.is_none());
                    // A delivery stays: the peer may not fetch the file again.
                    if *outcome == Some(Outcome::Delivered) {
                        prop_assert_eq!(
                            s.authorize(peer, 0, 0, false),
                            Err(codes::ALREADY_DOWNLOADED)
                        );
                    }
                }
                prop_assert_eq!(
                    s.offered_peers(),
                    model.offered.keys().cloned().collect::<Vec<_>>()
                );
            }
        }
    }
}
