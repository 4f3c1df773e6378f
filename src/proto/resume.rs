//! Resume arithmetic: when to checkpoint a download durably, and how a partial file found
//! on disk is reconciled with its stored job record. Pure functions, no I/O.

/// Default number of written bytes between two durable checkpoints.
pub const CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;

/// Decides when the writer must make its progress durable (fsync the data, then persist
/// the offset). The stored offset therefore never exceeds what is really on disk.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    interval: u64,
    last_durable: u64,
}

impl CheckpointPolicy {
    /// A policy for a job whose durable offset is `durable`.
    pub fn new(durable: u64, interval: u64) -> Self {
        Self {
            interval: interval.max(1),
            last_durable: durable,
        }
    }

    /// Whether a checkpoint is due with `written` bytes written (not yet synced).
    pub fn due(&self, written: u64, complete: bool) -> bool {
        written > self.last_durable && (complete || written - self.last_durable >= self.interval)
    }

    /// Record that a checkpoint covering `written` bytes was taken or requested; the next
    /// one is due an interval later. (The writer hands checkpoints to a thread that syncs
    /// and then stores the record, so durability itself is reported there, not here.)
    pub fn checkpointed(&mut self, written: u64) {
        self.last_durable = self.last_durable.max(written);
    }

    /// The durable offset.
    pub fn durable(&self) -> u64 {
        self.last_durable
    }
}

/// What to do with a partial file before resuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Resume from `offset`; cut the file to that length first if it is longer (bytes
    /// after the last checkpoint are not trusted after a crash).
    ResumeAt { offset: u64, truncate: bool },
    /// The partial file is shorter than the record says or the record is impossible:
    /// start over from zero.
    Restart,
}

/// Reconcile a stored record (`recorded` durable bytes of a `size`-byte file) with the
/// partial file's actual length on disk.
pub fn reconcile(recorded: u64, size: u64, on_disk: u64) -> Reconcile {
    if recorded > size || on_disk < recorded {
        return Reconcile::Restart;
    }
    Reconcile::ResumeAt {
        offset: recorded,
        truncate: on_disk > recorded,
    }
}

/// Whether an offer matches a stored job: the same content (size and hash) means the
/// partial bytes belong to this very file; the same name with another hash means the
/// source changed and the partial data must be discarded (5100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferMatch {
    SameContent,
    ChangedContent,
    Unrelated,
}

/// Compare an offer (`name`, `size`, `hash`) with a stored job.
pub fn match_offer(job: (&str, u64, &str), offer: (&str, u64, &str)) -> OfferMatch {
    let (job_name, job_size, job_hash) = job;
    let (name, size, hash) = offer;
    if job_size == size && job_hash.eq_ignore_ascii_case(hash) {
        OfferMatch::SameContent
    } else if job_name == name {
        OfferMatch::ChangedContent
    } else {
        OfferMatch::Unrelated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_due_every_interval_and_at_completion() {
        let mut p = CheckpointPolicy::new(0, 10);
        assert!(!p.due(9, false));
        assert!(p.due(10, false));
        p.checkpointed(10);
        assert!(!p.due(10, true));
        assert!(p.due(12, true));
        assert_eq!(p.durable(), 10);
    }

    #[test]
    fn checkpoint_never_goes_backwards() {
        let mut p = CheckpointPolicy::new(50, 10);
        p.checkpointed(40);
        assert_eq!(p.durable(), 50);
    }

    #[test]
    fn reconcile_longer_file_is_truncated_to_record() {
        assert_eq!(
            reconcile(100, 1000, 150),
            Reconcile::ResumeAt {
                offset: 100,
                truncate: true
            }
        );
        assert_eq!(
            reconcile(100, 1000, 100),
            Reconcile::ResumeAt {
                offset: 100,
                truncate: false
            }
        );
    }

    #[test]
    fn reconcile_shorter_file_or_impossible_record_restarts() {
        assert_eq!(reconcile(100, 1000, 99), Reconcile::Restart);
        assert_eq!(reconcile(2000, 1000, 3000), Reconcile::Restart);
    }

    #[test]
    fn match_offer_distinguishes_same_changed_unrelated() {
        let job = ("a.txt", 10, "ab");
        assert_eq!(
            match_offer(job, ("other", 10, "AB")),
            OfferMatch::SameContent
        );
        assert_eq!(
            match_offer(job, ("a.txt", 10, "cd")),
            OfferMatch::ChangedContent
        );
        assert_eq!(match_offer(job, ("b.txt", 10, "cd")), OfferMatch::Unrelated);
    }
}
