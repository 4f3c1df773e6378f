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
    /// Members that said they only send: other senders, never recipients.
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

    /// `--to` named `peer` (by client ID or display name): it is a recipient, and `send`
    /// waits for it whenever it was found.
    pub fn add_recipient(&mut self, peer: &str) {
        if let Some(audience) = &mut self.audience {
            audience.insert(peer.to_string());
        }
        if let Some(r) = self.recipient(peer) {
            r.waited = true;
        }
    }

    /// A member joined (or was there when we joined), with its display name.
    pub fn joined(&mut self, peer: &str, name: &str) {
        if let Some(r) = self.recipient(peer) {
            r.name = super::output::shown(name);
        }
    }

    /// `peer` said it only sends (its `hello` listed `send-only`): it is another `send`
    /// in the session, not a recipient.
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

/// `send --to`: the members the share is for. Each value matches a member by client ID,
/// or by display name as it is shown (escaped by `output::shown`, compared exactly); a
/// name several members have matches all of them. Once a value matched a client ID it
/// matches no display name any more.
#[derive(Debug, Default)]
pub struct Targets {
    /// The values as given, without repeats.
    wanted: Vec<Wanted>,
}

#[derive(Debug)]
struct Wanted {
    value: String,
    /// The client IDs of the members it matched.
    ids: Vec<String>,
    /// It matched a client ID (unique: no other member can match it).
    by_id: bool,
}

impl Targets {
    pub fn new(values: &[String]) -> Self {
        let mut wanted: Vec<Wanted> = Vec::new();
        for v in values {
            if !wanted.iter().any(|w| w.value == *v) {
                wanted.push(Wanted {
                    value: v.clone(),
                    ids: Vec::new(),
                    by_id: false,
                });
            }
        }
        Self { wanted }
    }

    /// A member, `peer` with display name `name` (as the network gave it): the values it
    /// matches that it had not matched before, each with the number of members that
    /// value matches now. Empty if it is not (newly) a recipient.
    pub fn member(&mut self, peer: &str, name: &str) -> Vec<(String, usize)> {
        let shown_name = super::output::shown(name);
        let mut new = Vec::new();
        for w in &mut self.wanted {
            let by_id = w.value == peer;
            // A value that is a member's client ID names that member only (not another
            // member that took it as its display name).
            let by_name = !w.by_id && !name.is_empty() && w.value == shown_name;
            let matches = by_id || by_name;
            if matches && !w.ids.iter().any(|id| id == peer) {
                w.ids.push(peer.to_string());
                w.by_id |= by_id;
                new.push((w.value.clone(), w.ids.len()));
            }
        }
        new
    }

    /// The values that matched no member so far.
    pub fn unmatched(&self) -> Vec<&str> {
        self.wanted
            .iter()
            .filter(|w| w.ids.is_empty())
            .map(|w| w.value.as_str())
            .collect()
    }

    /// Whether some value matched a member.
    pub fn any_matched(&self) -> bool {
        self.wanted.iter().any(|w| !w.ids.is_empty())
    }

    /// Whether no other member can match any more: every value matched a client ID. (A
    /// display name may still be taken by members that join later.)
    pub fn settled(&self) -> bool {
        self.wanted.iter().all(|w| w.by_id)
    }

    /// The failure for the values that matched nobody within `grace` (6013), if any.
    pub fn not_found(&self, grace: std::time::Duration) -> Option<Fatal> {
        let unmatched = self.unmatched();
        if unmatched.is_empty() {
            return None;
        }
        let values: Vec<String> = unmatched
            .iter()
            .map(|v| format!("--to {}", super::output::shown(v)))
            .collect();
        let outcome = if self.any_matched() {
            "the files went only to the members the other --to options named"
        } else {
            "nothing was sent"
        };
        let error = peershare::Error::RecipientNotFound(format!(
            "{}: no member of the session has this client ID or display name ({} s after \
             the share started); {outcome}",
            values.join(", "),
            grace.as_secs()
        ));
        Some(Fatal::from_error(&error))
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

    /// Whether `file_id` was offered before.
    pub fn knows(&self, file_id: FileId) -> bool {
        self.files.contains_key(&file_id)
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
    fn targets_match_client_id_or_shown_name_and_a_shared_name_matches_all() {
        let mut t = Targets::new(&[
            "c1".into(),
            "alice".into(),
            "b\\u{1b}ob".into(),
            "c1".into(),
        ]);
        assert_eq!(t.unmatched(), ["c1", "alice", "b\\u{1b}ob"]);
        assert!(!t.any_matched());
        assert_eq!(t.member("c1", "carol"), [("c1".to_string(), 1)]);
        // Seen again (listed, then its join event): nothing new.
        assert!(t.member("c1", "carol").is_empty());
        assert_eq!(t.member("c2", "alice"), [("alice".to_string(), 1)]);
        assert_eq!(t.member("c3", "alice"), [("alice".to_string(), 2)]);
        // Names compare as shown: escaped control characters, exactly (no case folding,
        // no trimming).
        assert_eq!(t.member("c4", "b\u{1b}ob"), [("b\\u{1b}ob".to_string(), 1)]);
        assert!(t.member("c5", "Alice").is_empty());
        assert!(t.member("c6", "alice ").is_empty());
        // An empty name matches nothing by name.
        assert!(Targets::new(&["".into()]).member("c7", "").is_empty());
        assert!(t.unmatched().is_empty());
        assert!(t.not_found(std::time::Duration::from_secs(10)).is_none());
        // A name may match more members later; a client ID only the one.
        assert!(!t.settled());
        let mut ids = Targets::new(&["c1".into(), "c2".into()]);
        ids.member("c1", "alice");
        assert!(!ids.settled());
        // A member named after another's client ID is not that member.
        assert_eq!(ids.member("c2", "c1"), [("c2".to_string(), 1)]);
        assert!(ids.settled());
    }

    #[test]
    fn targets_not_found_is_6013_exit_1_naming_the_values() {
        let grace = std::time::Duration::from_secs(10);
        let mut t = Targets::new(&["bob".into(), "c9\u{1b}".into()]);
        let f = t.not_found(grace).unwrap();
        assert_eq!((f.exit, f.code), (Exit::TransferFailed, 6013));
        assert!(
            f.message.contains("--to bob, --to c9\\u{1b}: no member"),
            "{}",
            f.message
        );
        assert!(f.message.ends_with("nothing was sent"), "{}", f.message);
        t.member("c1", "bob");
        let f = t.not_found(grace).unwrap();
        assert!(
            f.message.starts_with("no such recipient: --to c9"),
            "{}",
            f.message
        );
        assert!(f.message.contains("went only to"), "{}", f.message);
    }

    #[test]
    fn send_rule_recipient_named_by_to_after_cut_off_is_waited_for() {
        let (ids, map) = jobs(1);
        let mut r = SendRule::new(map, Some(["a".to_string()].into()));
        r.add_recipient("a");
        r.joined("a", "");
        r.outcome("a", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
        // Matched by name after the first recipient had everything.
        r.add_recipient("b");
        r.joined("b", "bob");
        assert!(r.verdict().is_none());
        r.outcome("b", ids[0], Outcome::Delivered);
        assert!(matches!(r.verdict(), Some(Ok(()))));
        // Not named: not a recipient.
        r.joined("c", "carol");
        r.outcome("c", ids[0], Outcome::Failed { code: 1185 });
        assert!(matches!(r.verdict(), Some(Ok(()))));
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
