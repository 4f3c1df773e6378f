//! When `send` and `recv` are done, and how they exit: the completion rules of the
//! README, as plain state fed with events (no I/O, no clock).

use std::collections::{HashMap, HashSet};

use peershare::{FileId, JobId, Outcome, codes};

use super::{Exit, Fatal};

/// `send` without `--keep`: done once some recipient has resolved every file (the
/// cut-off) and every recipient that joined before the cut-off has resolved every file
/// or left the session. Recipients that join after the cut-off are not waited for.
#[derive(Debug)]
pub struct SendRule {
    /// Our upload jobs, with their file names.
    jobs: HashMap<JobId, String>,
    /// `--to`: the only members that are recipients.
    audience: Option<HashSet<String>>,
    recipients: HashMap<String, Recipient>,
    /// Members that offered files to us: other senders, never recipients.
    senders: HashSet<String>,
    cut_off: bool,
    /// The code is burnt: no recipient can join any more.
    burnt: Option<u32>,
}

#[derive(Debug, Default)]
struct Recipient {
    /// Display name (safe to show).
    name: String,
    outcomes: HashMap<JobId, Outcome>,
    left: bool,
    /// Joined before the cut-off: `send` waits for it.
    waited: bool,
}

impl SendRule {
    pub fn new(jobs: HashMap<JobId, String>, audience: Option<HashSet<String>>) -> Self {
        Self {
            jobs,
            audience,
            recipients: HashMap::new(),
            senders: HashSet::new(),
            cut_off: false,
            burnt: None,
        }
    }

    fn recipient(&mut self, peer: &str) -> Option<&mut Recipient> {
        if self.audience.as_ref().is_some_and(|a| !a.contains(peer)) || self.senders.contains(peer)
        {
            return None;
        }
        let waited = !self.cut_off;
        Some(
            self.recipients
                .entry(peer.to_string())
                .or_insert_with(|| Recipient {
                    waited,
                    ..Recipient::default()
                }),
        )
    }

    /// A member joined (or was there when we joined), with its display name.
    pub fn joined(&mut self, peer: &str, name: &str) {
        if let Some(r) = self.recipient(peer) {
            r.name = super::output::shown(name);
        }
    }

    /// `peer` offered us a file: it is another `send` in the session, not a recipient
    /// (its offers come before anything it says about ours, on the same ordered channel).
    pub fn fellow_sender(&mut self, peer: &str) {
        self.senders.insert(peer.to_string());
        self.recipients.remove(peer);
    }

    /// A member left the session.
    pub fn left(&mut self, peer: &str) {
        if let Some(r) = self.recipients.get_mut(peer) {
            r.left = true;
        }
    }

    /// `peer`'s outcome of upload `job`.
    pub fn outcome(&mut self, peer: &str, job: JobId, outcome: Outcome) {
        if !self.jobs.contains_key(&job) {
            return;
        }
        let total = self.jobs.len();
        let Some(r) = self.recipient(peer) else {
            return;
        };
        r.outcomes.insert(job, outcome);
        if r.outcomes.len() == total {
            self.cut_off = true;
        }
    }

    /// Too many clients failed to authenticate (`failures`): nobody new can join, so
    /// `send` ends once the recipients it has are served (an error if none got
    /// everything).
    pub fn burnt(&mut self, failures: u32) {
        self.burnt = Some(failures);
    }

    /// `Some` once `send` is done, with how it ends.
    pub fn verdict(&self) -> Option<Result<(), Fatal>> {
        let total = self.jobs.len();
        let waiting = self
            .recipients
            .values()
            .any(|r| r.waited && !r.left && r.outcomes.len() < total);
        if waiting {
            return None;
        }
        if self.cut_off {
            return Some(self.result(|r| r.waited));
        }
        let failures = self.burnt?;
        Some(Err(Fatal::new(
            Exit::AuthFailed,
            codes::CODE_BURNT,
            format!(
                "{failures} failed attempts to authenticate (wrong codes, or someone \
                 guessing): the code is burnt and nothing was sent; run send again for a \
                 new code"
            ),
        )))
    }

    /// How `send --keep` ends when it is stopped: a failure if any recipient failed.
    pub fn on_stop(&self) -> Result<(), Fatal> {
        match self.first_failure(|_| true) {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    fn first_failure(&self, counted: impl Fn(&Recipient) -> bool) -> Option<Fatal> {
        let mut failures = Vec::new();
        for (peer, r) in self.recipients.iter().filter(|(_, r)| counted(r)) {
            for (job, o) in &r.outcomes {
                if let Outcome::Failed { code } = o {
                    let who = match r.name.as_str() {
                        "" => peer.clone(),
                        name => format!("{name} ({peer})"),
                    };
                    failures.push((*code, self.jobs[job].clone(), who));
                }
            }
        }
        failures.sort();
        let (code, name, peer) = failures.first()?.clone();
        let more = match failures.len() {
            1 => String::new(),
            n => format!(" (and {} more deliveries)", n - 1),
        };
        Some(Fatal::new(
            Exit::TransferFailed,
            code,
            format!("{name} was not delivered to {peer}{more}"),
        ))
    }

    fn result(&self, counted: impl Fn(&Recipient) -> bool + Copy) -> Result<(), Fatal> {
        if let Some(f) = self.first_failure(counted) {
            return Err(f);
        }
        let mut undelivered: Vec<&String> = self
            .jobs
            .iter()
            .filter(|(job, _)| {
                !self
                    .recipients
                    .values()
                    .filter(|r| counted(r))
                    .any(|r| matches!(r.outcomes.get(job), Some(Outcome::Delivered)))
            })
            .map(|(_, name)| name)
            .collect();
        undelivered.sort();
        match undelivered.first() {
            None => Ok(()),
            Some(name) => Err(Fatal::new(
                Exit::Declined,
                codes::DECLINED,
                format!("{name} was declined by every recipient"),
            )),
        }
    }
}

/// `recv`: done once every group of files offered to it (per sender and group; an offer
/// without a group is a group of one) is resolved: downloaded and verified, declined, or
/// failed. Fails if any accepted file failed.
#[derive(Debug, Default)]
pub struct RecvRule {
    /// Per (sender, group): files expected and files resolved.
    groups: HashMap<(String, uuid::Uuid), Group>,
    /// The group of every offered file.
    files: HashMap<FileId, (String, uuid::Uuid)>,
    /// Whether an offer came without a group (then more may follow one by one).
    ungrouped: bool,
    failures: Vec<Fatal>,
}

#[derive(Debug)]
struct Group {
    count: u32,
    resolved: HashSet<FileId>,
}

impl RecvRule {
    /// A file was offered. Returns false for an offer seen before.
    pub fn offered(
        &mut self,
        file_id: FileId,
        sender: &str,
        group: Option<peershare::proto::control::OfferGroup>,
    ) -> bool {
        if self.files.contains_key(&file_id) {
            return false;
        }
        let (id, count) = match group {
            Some(g) => (g.id, g.count.max(1)),
            None => {
                self.ungrouped = true;
                (file_id.0, 1)
            }
        };
        let key = (sender.to_string(), id);
        self.files.insert(file_id, key.clone());
        self.groups.entry(key).or_insert(Group {
            count,
            resolved: HashSet::new(),
        });
        true
    }

    /// An offered file is resolved: `None` for success (or declined), else its failure.
    pub fn resolved(&mut self, file_id: FileId, failure: Option<Fatal>) {
        let Some(key) = self.files.get(&file_id) else {
            return;
        };
        if let Some(g) = self.groups.get_mut(key)
            && g.resolved.insert(file_id)
            && let Some(f) = failure
        {
            self.failures.push(f);
        }
    }

    /// Whether any file was offered.
    pub fn has_offers(&self) -> bool {
        !self.files.is_empty()
    }

    /// Whether offers without a group were seen (more may follow: wait a moment before
    /// calling it done).
    pub fn saw_ungrouped(&self) -> bool {
        self.ungrouped
    }

    /// Whether every offered group is resolved.
    pub fn finished(&self) -> bool {
        !self.groups.is_empty()
            && self
                .groups
                .values()
                .all(|g| g.resolved.len() as u64 >= u64::from(g.count))
    }

    /// How `recv` ends now.
    pub fn result(&mut self) -> Result<(), Fatal> {
        match self.failures.len() {
            0 => Ok(()),
            1 => Err(self.failures.remove(0)),
            n => {
                let mut first = self.failures.remove(0);
                first.message = format!("{} (and {} more files)", first.message, n - 1);
                Err(first)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(n: usize) -> (Vec<JobId>, HashMap<JobId, String>) {
        let ids: Vec<JobId> = (0..n).map(|_| JobId::new()).collect();
        let map = ids
            .iter()
            .enumerate()
            .map(|(i, j)| (*j, format!("f{i}")))
            .collect();
        (ids, map)
    }

    #[test]
    fn send_rule_one_recipient_all_delivered_succeeds() {
        let (ids, map) = jobs(2);
        let mut r = SendRule::new(map, None);
        r.joined("a", "");
        r.outcome("a", ids[0], Outcome::Delivered);
        assert!(r.verdict().is_none());
        r.outcome("a", ids[1], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_decliner_does_not_end_while_other_recipient_downloads() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("decliner", "");
        r.joined("real", "");
        r.outcome("decliner", ids[0], Outcome::Declined);
        assert!(
            r.verdict().is_none(),
            "the real recipient is still downloading"
        );
        r.outcome("real", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_recipient_joined_before_cut_off_is_waited_for() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("first", "");
        r.joined("second", "");
        r.outcome("first", ids[0], Outcome::Delivered);
        assert!(r.verdict().is_none());
        r.joined("late", ""); // after the cut-off: not waited for
        r.outcome("second", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_burnt_code_without_recipients_fails_with_code_burnt() {
        let (_, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        assert!(r.verdict().is_none());
        r.burnt(3);
        let f = r.verdict().expect("done").unwrap_err();
        assert_eq!((f.exit, f.code), (Exit::AuthFailed, codes::CODE_BURNT));
    }

    #[test]
    fn send_rule_burnt_code_waits_for_authenticated_recipient() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("a", "");
        r.burnt(3);
        assert!(r.verdict().is_none(), "a is still downloading");
        r.outcome("a", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_recipient_that_left_is_not_waited_for() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("a", "");
        r.joined("b", "");
        r.outcome("a", ids[0], Outcome::Delivered);
        r.left("b");
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_failure_of_any_waited_recipient_fails_with_its_code() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("a", "");
        r.joined("b", "");
        r.outcome("a", ids[0], Outcome::Delivered);
        r.outcome("b", ids[0], Outcome::Failed { code: 1185 });
        let Some(Err(f)) = r.verdict() else {
            panic!("expected a failure")
        };
        assert_eq!((f.exit, f.code), (Exit::TransferFailed, 1185));
    }

    #[test]
    fn send_rule_all_declined_exits_declined() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("a", "");
        r.outcome("a", ids[0], Outcome::Declined);
        let Some(Err(f)) = r.verdict() else {
            panic!("expected declined")
        };
        assert_eq!((f.exit, f.code), (Exit::Declined, codes::DECLINED));
    }

    #[test]
    fn send_rule_non_audience_outcomes_are_ignored() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, Some(["a".to_string()].into()));
        r.joined("outsider", "");
        r.outcome("outsider", ids[0], Outcome::Declined);
        assert!(r.verdict().is_none());
        r.outcome("a", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_fellow_sender_is_not_a_recipient() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        r.joined("other-sender", "");
        r.joined("real", "");
        r.fellow_sender("other-sender");
        r.outcome("other-sender", ids[0], Outcome::Declined);
        assert!(
            r.verdict().is_none(),
            "a fellow sender's decline is no cut-off"
        );
        r.outcome("real", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
    }

    #[test]
    fn send_rule_keep_stop_after_failure_fails() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, None);
        assert!(r.on_stop().is_ok());
        r.outcome("a", ids[0], Outcome::Failed { code: 5100 });
        assert_eq!(r.on_stop().map_err(|f| f.code).unwrap_err(), 5100);
    }

    fn group(count: u32) -> Option<peershare::proto::control::OfferGroup> {
        Some(peershare::proto::control::OfferGroup {
            id: uuid::Uuid::new_v4(),
            count,
            index: 0,
            label: None,
            bytes: None,
        })
    }

    #[test]
    fn recv_rule_waits_for_every_group_of_every_sender() {
        let mut r = RecvRule::default();
        let (a, b, c) = (FileId::new(), FileId::new(), FileId::new());
        let g1 = group(2);
        assert!(r.offered(a, "s1", g1.clone()));
        assert!(!r.offered(a, "s1", g1.clone()));
        r.offered(c, "s2", group(1));
        r.resolved(a, None);
        r.resolved(c, None);
        assert!(
            !r.finished(),
            "the second file of s1's group is still to come"
        );
        r.offered(b, "s1", g1);
        r.resolved(b, None);
        assert!(r.finished());
        assert!(r.result().is_ok());
    }

    #[test]
    fn recv_rule_failure_in_one_group_waits_for_the_others_then_fails() {
        let mut r = RecvRule::default();
        let (a, b) = (FileId::new(), FileId::new());
        r.offered(a, "s1", group(1));
        r.offered(b, "s2", group(1));
        r.resolved(a, Some(Fatal::new(Exit::TransferFailed, 5100, "corrupt")));
        assert!(!r.finished());
        r.resolved(b, None);
        assert!(r.finished());
        assert_eq!(r.result().map_err(|f| f.code).unwrap_err(), 5100);
    }

    #[test]
    fn recv_rule_ungrouped_offers_are_flagged() {
        let mut r = RecvRule::default();
        let a = FileId::new();
        r.offered(a, "s", None);
        assert!(r.saw_ungrouped());
        r.resolved(a, None);
        assert!(r.finished());
    }
}
