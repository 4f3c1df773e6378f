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

    /// Check a request from `peer`: `Err(code)` if it must be refused.
    pub fn authorize(&self, peer: &str, offset: u64, now_ms: u64) -> Result<(), u16> {
        if !self.audience.includes(peer) {
            return Err(codes::NOT_PERMITTED);
        }
        if !self.is_alive(now_ms) {
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

    /// The recipient left: its pending delivery failed.
    pub fn on_peer_gone(&mut self, peer: &str) -> Recorded {
        if !self.is_pending(peer) {
            return Recorded::Ignored;
        }
        self.on_outcome(
            peer,
            Outcome::Failed {
                code: codes::PEER_GONE,
            },
        )
    }

    /// Whether `peer` got the offer and has no outcome yet.
    pub fn is_pending(&self, peer: &str) -> bool {
        matches!(self.offered.get(peer), Some(None))
    }

    /// The peers the offer went to.
    pub fn offered_peers(&self) -> Vec<ClientId> {
        self.offered.keys().cloned().collect()
    }

    /// Drop `peer`'s pending entry: its job was taken over by another client ID (a
    /// restarted recipient resuming). Returns the completion if that resolved the job.
    pub fn forget_pending(&mut self, peer: &str) -> Option<Completion> {
        if self.is_pending(peer) {
            self.offered.remove(peer);
            self.acked.remove(peer);
        }
        self.completion()
    }

    /// Whether completion was already reported.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn completion(&mut self) -> Option<Completion> {
        if self.finished || self.offered.is_empty() || self.offered.values().any(Option::is_none) {
            return None;
        }
        self.finished = true;
        let outcomes: BTreeMap<ClientId, Outcome> = self
            .offered
            .iter()
            .filter_map(|(k, v)| v.clone().map(|o| (k.clone(), o)))
            .collect();
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
        assert_eq!(s.authorize("a", 0, 0), Ok(()));
        assert_eq!(s.authorize("b", 0, 0), Err(codes::NOT_PERMITTED));
    }

    #[test]
    fn upload_recipient_added_later_is_offered_and_permitted() {
        let mut s = UploadState::new(only(&["a"]), 10, 1000);
        assert!(!s.should_offer("b", 0));
        s.add_recipient("b");
        assert!(s.should_offer("b", 0));
        assert_eq!(s.authorize("b", 0, 0), Ok(()));
        assert_eq!(s.authorize("c", 0, 0), Err(codes::NOT_PERMITTED));
        let mut all = UploadState::new(Audience::Broadcast, 10, 1000);
        all.add_recipient("b");
        assert_eq!(all.audience(), &Audience::Broadcast);
    }

    #[test]
    fn upload_request_after_expiry_is_expired() {
        let s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(s.authorize("a", 0, 1000), Err(codes::OFFER_EXPIRED));
        assert!(!s.should_offer("a", 1000));
    }

    #[test]
    fn upload_request_beyond_size_is_protocol_violation() {
        let s = UploadState::new(Audience::Broadcast, 10, 1000);
        assert_eq!(s.authorize("a", 11, 0), Err(codes::PROTOCOL_VIOLATION));
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
    fn upload_forget_pending_takes_entry_out_of_completion() {
        let mut s = UploadState::new(Audience::Broadcast, 10, 1000);
        s.mark_offered("old");
        s.mark_offered("new");
        assert!(s.is_pending("old"));
        assert_eq!(s.forget_pending("old"), None);
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
        assert_eq!(s.authorize("a", 0, 0), Err(codes::ALREADY_DOWNLOADED));
    }

    #[test]
    fn upload_outcome_of_peer_never_offered_is_ignored() {
        let mut s = UploadState::new(only(&["a"]), 10, 1000);
        s.mark_offered("a");
        assert_eq!(s.on_outcome("b", Outcome::Declined), Recorded::Ignored);
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

    const PEERS: [&str; 4] = ["a", "b", "c", "d"];

    #[derive(Debug, Clone)]
    enum Op {
        Offer(usize),
        Outcome(usize, Outcome),
        Gone(usize),
        Forget(usize),
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
            peer.clone().prop_map(Op::Offer),
            (peer.clone(), outcome()).prop_map(|(p, o)| Op::Outcome(p, o)),
            peer.clone().prop_map(Op::Gone),
            peer.prop_map(Op::Forget),
        ]
    }

    /// Whether `new` is recorded over the current outcome (`None`: pending).
    fn replaces(current: &Option<Outcome>, new: &Outcome) -> bool {
        matches!(
            (current, new),
            (None, _) | (Some(Outcome::Failed { .. }), Outcome::Delivered)
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the order of offers, outcomes, departures and takeovers, an upload job
        /// reports its completion at most once, exactly once as soon as every offered
        /// recipient is resolved, and a `Failed` one only when every recipient failed;
        /// outcomes of peers without the offer are ignored, and a delivery is never replaced.
        #[test]
        fn upload_random_outcome_sequences_complete_once(
            audience in audience(),
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let mut s = UploadState::new(audience.clone(), 10, 1000);
            // What the offered map must hold: peer -> outcome (`None`: pending).
            let mut model: BTreeMap<ClientId, Option<Outcome>> = BTreeMap::new();
            let mut completions = 0;
            for op in ops {
                let completion = match op {
                    Op::Offer(p) => {
                        let peer = PEERS[p];
                        if s.should_offer(peer, 0) {
                            s.mark_offered(peer);
                            model.insert(peer.into(), None);
                        }
                        prop_assert_eq!(model.contains_key(peer), audience.includes(peer));
                        None
                    }
                    Op::Outcome(p, outcome) => {
                        let peer = PEERS[p];
                        let recorded = s.on_outcome(peer, outcome.clone());
                        match model.get_mut(peer) {
                            Some(slot) if replaces(slot, &outcome) => {
                                *slot = Some(outcome);
                                let Recorded::New(completion) = recorded else {
                                    return Err(TestCaseError::fail(format!("{peer}: not recorded")));
                                };
                                completion
                            }
                            // Never offered (or taken over), or final already.
                            _ => {
                                prop_assert_eq!(recorded, Recorded::Ignored);
                                None
                            }
                        }
                    }
                    Op::Gone(p) => {
                        let peer = PEERS[p];
                        let recorded = s.on_peer_gone(peer);
                        match model.get_mut(peer) {
                            Some(slot @ None) => {
                                *slot = Some(Outcome::Failed { code: codes::PEER_GONE });
                                let Recorded::New(completion) = recorded else {
                                    return Err(TestCaseError::fail(format!("{peer}: not recorded")));
                                };
                                completion
                            }
                            _ => {
                                prop_assert_eq!(recorded, Recorded::Ignored);
                                None
                            }
                        }
                    }
                    Op::Forget(p) => {
                        let peer = PEERS[p];
                        if matches!(model.get(peer), Some(None)) {
                            model.remove(peer);
                        }
                        s.forget_pending(peer)
                    }
                };
                if let Some(completion) = completion {
                    completions += 1;
                    prop_assert_eq!(completions, 1, "completion reported again");
                    let resolved: BTreeMap<ClientId, Outcome> = model
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
                        Completion::Failed(map, code) => {
                            prop_assert!(all_failed);
                            let failed = Outcome::Failed { code };
                            prop_assert!(map.values().any(|o| *o == failed), "code of no failure");
                            prop_assert_eq!(map, resolved);
                        }
                    }
                }
                prop_assert_eq!(s.is_finished(), completions == 1);
                if !model.is_empty() && model.values().all(Option::is_some) {
                    prop_assert_eq!(completions, 1, "every recipient resolved, no completion");
                }
                for (peer, outcome) in &model {
                    prop_assert_eq!(s.is_pending(peer), outcome.is_none());
                    // A delivery stays: the peer may not fetch the file again.
                    if *outcome == Some(Outcome::Delivered) {
                        prop_assert_eq!(
                            s.authorize(peer, 0, 0),
                            Err(codes::ALREADY_DOWNLOADED)
                        );
                    }
                }
                prop_assert_eq!(
                    s.offered_peers(),
                    model.keys().cloned().collect::<Vec<_>>()
                );
            }
        }
    }
}
