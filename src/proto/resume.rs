//! Resume arithmetic: when to checkpoint a download durably, how a partial file found
//! on disk is reconciled with its stored job record, and how much of what lies past the
//! record is verified by the sender's block hashes. Pure functions, no I/O.

use crate::proto::hash::Hash;

/// Default number of written bytes between two durable checkpoints.
pub const CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;

/// Size of one block of a `hashes` answer (docs/PROTOCOL.md, "Resume"): each block's
/// BLAKE3 hash covers 1 MiB of the file, the last block of a range what is left.
pub const HASH_BLOCK: u64 = 1024 * 1024;

/// Most blocks one `hashes-request` may ask for: 128 MiB of file. An answer then holds at
/// most 128 hashes of 64 hex digits (about 8.6 KB), well within a control message.
pub const MAX_HASH_BLOCKS: u64 = 128;

/// Longest range one `hashes-request` may cover, in bytes.
pub const MAX_HASH_RANGE: u64 = HASH_BLOCK * MAX_HASH_BLOCKS;

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

/// A range of a partial file, past its durable checkpoint, whose bytes are on disk but
/// were never synced: after a crash of the process (`kill -9`) they are what was written,
/// after a power loss they may be anything. They are trusted only once their block hashes
/// match the sender's ([`verified_length`]); until then a resume starts at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// The recorded (durable) offset: where the unverified bytes start.
    pub offset: u64,
    /// How many bytes past `offset` are on disk and worth verifying (at most
    /// [`MAX_HASH_RANGE`]).
    pub length: u64,
}

impl Tail {
    /// Number of hash blocks the tail is cut into.
    pub fn blocks(&self) -> u64 {
        block_count(self.length)
    }

    /// Where block `index` starts and how long it is, or `None` past the last block.
    pub fn block(&self, index: u64) -> Option<(u64, u64)> {
        let start = index.checked_mul(HASH_BLOCK)?;
        if start >= self.length {
            return None;
        }
        let len = (self.length - start).min(HASH_BLOCK);
        Some((self.offset + start, len))
    }
}

/// The bytes of a partial file past its record (`recorded` durable bytes of a `size`-byte
/// file, `on_disk` bytes long) that may be verified instead of sent again: from the record
/// to the end of the file on disk (never past `size`), at most [`MAX_HASH_RANGE`]. `None`
/// when there is nothing past the record or the record is impossible (then
/// [`reconcile`] restarts or cuts the file as before).
pub fn unverified_tail(recorded: u64, size: u64, on_disk: u64) -> Option<Tail> {
    if recorded > size || on_disk <= recorded {
        return None;
    }
    let length = (on_disk.min(size) - recorded).min(MAX_HASH_RANGE);
    (length > 0).then_some(Tail {
        offset: recorded,
        length,
    })
}

/// Number of hash blocks of a range of `length` bytes.
pub fn block_count(length: u64) -> u64 {
    length.div_ceil(HASH_BLOCK)
}

/// Why a `hashes-request` range cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("a hash range must not be empty")]
    Empty,
    #[error("a hash range of {0} bytes exceeds the limit of {MAX_HASH_RANGE}")]
    TooLong(u64),
    #[error("the hash range {offset}+{length} ends past the file's {size} bytes")]
    PastEnd { offset: u64, length: u64, size: u64 },
}

/// Check a requested hash range against the limits alone (what a decoder can check).
pub fn check_range_length(length: u64) -> Result<(), RangeError> {
    match length {
        0 => Err(RangeError::Empty),
        n if n > MAX_HASH_RANGE => Err(RangeError::TooLong(n)),
        _ => Ok(()),
    }
}

/// Check a requested hash range against a file of `size` bytes; the range as a [`Tail`]
/// whose blocks are to be hashed.
pub fn check_range(offset: u64, length: u64, size: u64) -> Result<Tail, RangeError> {
    check_range_length(length)?;
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(Tail { offset, length }),
        _ => Err(RangeError::PastEnd {
            offset,
            length,
            size,
        }),
    }
}

/// How many bytes from `tail.offset` on are verified: the leading blocks whose hash on
/// this side (`local`, as far as it could be read) equals the sender's (`remote`). An
/// answer without exactly one hash per block verifies nothing; the first block that
/// differs (or could not be read) ends the verified part, whatever follows it.
pub fn verified_length(tail: Tail, local: &[Hash], remote: &[Hash]) -> u64 {
    if remote.len() as u64 != tail.blocks() {
        return 0;
    }
    let matching = local.iter().zip(remote).take_while(|(l, r)| l == r).count() as u64;
    (0..matching)
        .filter_map(|i| tail.block(i))
        .map(|(_, len)| len)
        .sum()
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

    const MIB: u64 = HASH_BLOCK;

    #[test]
    fn unverified_tail_spans_record_to_end_on_disk_within_size_and_limit() {
        assert_eq!(
            unverified_tail(8 * MIB, 100 * MIB, 13 * MIB + 5),
            Some(Tail {
                offset: 8 * MIB,
                length: 5 * MIB + 5
            })
        );
        // Never past the announced size, never more than one request may cover.
        assert_eq!(
            unverified_tail(10, 20, 30),
            Some(Tail {
                offset: 10,
                length: 10
            })
        );
        assert_eq!(
            unverified_tail(0, u64::MAX, u64::MAX).map(|t| t.length),
            Some(MAX_HASH_RANGE)
        );
    }

    #[test]
    fn unverified_tail_nothing_past_record_or_impossible_record_is_none() {
        assert_eq!(unverified_tail(8 * MIB, 100 * MIB, 8 * MIB), None);
        assert_eq!(unverified_tail(8 * MIB, 100 * MIB, MIB), None);
        assert_eq!(unverified_tail(200, 100, 300), None);
        assert_eq!(unverified_tail(100, 100, 300), None);
    }

    #[test]
    fn tail_blocks_are_whole_mebibytes_then_the_rest() {
        let tail = Tail {
            offset: 7,
            length: 2 * MIB + 3,
        };
        assert_eq!(tail.blocks(), 3);
        assert_eq!(tail.block(0), Some((7, MIB)));
        assert_eq!(tail.block(1), Some((7 + MIB, MIB)));
        assert_eq!(tail.block(2), Some((7 + 2 * MIB, 3)));
        assert_eq!(tail.block(3), None);
        assert_eq!(tail.block(u64::MAX), None);
        assert_eq!(block_count(MIB), 1);
        assert_eq!(block_count(MIB + 1), 2);
        assert_eq!(block_count(0), 0);
    }

    #[test]
    fn check_range_within_file_and_limit_is_accepted() {
        assert_eq!(
            check_range(5, MAX_HASH_RANGE, MAX_HASH_RANGE + 5),
            Ok(Tail {
                offset: 5,
                length: MAX_HASH_RANGE
            })
        );
        assert_eq!(
            check_range(0, 1, 1),
            Ok(Tail {
                offset: 0,
                length: 1
            })
        );
    }

    #[test]
    fn check_range_empty_too_long_past_end_or_overflowing_is_refused() {
        assert_eq!(check_range(0, 0, 10), Err(RangeError::Empty));
        assert_eq!(
            check_range(0, MAX_HASH_RANGE + 1, u64::MAX),
            Err(RangeError::TooLong(MAX_HASH_RANGE + 1))
        );
        assert!(matches!(
            check_range(5, 6, 10),
            Err(RangeError::PastEnd { .. })
        ));
        assert!(matches!(
            check_range(u64::MAX, 1, u64::MAX),
            Err(RangeError::PastEnd { .. })
        ));
    }

    fn h(n: u8) -> Hash {
        Hash([n; 32])
    }

    #[test]
    fn verified_length_counts_leading_matching_blocks_only() {
        let tail = Tail {
            offset: 8 * MIB,
            length: 3 * MIB + 10,
        };
        let remote = [h(1), h(2), h(3), h(4)];
        assert_eq!(verified_length(tail, &remote, &remote), 3 * MIB + 10);
        // The second block differs: the first is kept, the rest is sent again even
        // where it matches.
        assert_eq!(
            verified_length(tail, &[h(1), h(9), h(3), h(4)], &remote),
            MIB
        );
        assert_eq!(verified_length(tail, &[h(9), h(2), h(3), h(4)], &remote), 0);
        // Only as far as this side could read.
        assert_eq!(verified_length(tail, &[h(1), h(2)], &remote), 2 * MIB);
        assert_eq!(verified_length(tail, &[], &remote), 0);
    }

    #[test]
    fn verified_length_answer_with_wrong_block_count_verifies_nothing() {
        let tail = Tail {
            offset: 0,
            length: 2 * MIB,
        };
        let local = [h(1), h(2)];
        assert_eq!(verified_length(tail, &local, &[h(1)]), 0);
        assert_eq!(verified_length(tail, &local, &[h(1), h(2), h(3)]), 0);
    }
}
