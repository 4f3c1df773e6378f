//! Download job state machine: offset bookkeeping, bounds, hashing and verification.
//! Pure: fed with chunks, it says where to write them and when to acknowledge.

use crate::proto::hash::Hash;

/// Default distance between two progress acknowledgements, in bytes.
pub const DEFAULT_ACK_INTERVAL: u64 = 1024 * 1024;

/// What the driver must do with one received chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkStep {
    /// File offset at which the chunk's bytes go.
    pub write_at: u64,
    /// Bytes received so far after this chunk.
    pub received: u64,
    /// Send a progress acknowledgement after this chunk has been written.
    pub ack_due: bool,
    /// This chunk completed the file: verify with [`DownloadState::verify`].
    pub complete: bool,
}

/// A peer sent something a correct sender never sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("received {got} bytes past the announced size of {size}")]
    Overflow { size: u64, got: u64 },
    #[error("received a chunk after the file was complete")]
    AfterComplete,
    #[error("received an empty chunk")]
    Empty,
}

/// Outcome of the whole-file check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Mismatch { expected: Hash, actual: Hash },
}

impl Verdict {
    /// The verdict on a file whose digest is `actual` where the offer said `expected`.
    pub fn of(expected: Hash, actual: Hash) -> Self {
        if actual == expected {
            Verdict::Verified
        } else {
            Verdict::Mismatch { expected, actual }
        }
    }
}

/// State of one download job.
#[derive(Debug, Clone)]
pub struct DownloadState {
    size: u64,
    expected: Hash,
    received: u64,
    last_ack: u64,
    ack_interval: u64,
    /// `None` once the driver took the hashing over (see [`DownloadState::detach_hasher`]).
    hasher: Option<blake3::Hasher>,
}

impl DownloadState {
    /// A job for a file of `size` bytes expected to hash to `expected`, starting at byte
    /// `offset` with `hasher` already fed the first `offset` bytes.
    pub fn new(size: u64, expected: Hash, offset: u64, hasher: blake3::Hasher) -> Self {
        let offset = offset.min(size);
        Self {
            size,
            expected,
            received: offset,
            last_ack: offset,
            ack_interval: DEFAULT_ACK_INTERVAL,
            hasher: Some(hasher),
        }
    }

    /// Change the acknowledgement interval (at least one byte).
    pub fn with_ack_interval(mut self, interval: u64) -> Self {
        self.ack_interval = interval.max(1);
        self
    }

    /// Bytes received so far (the resume offset).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The announced file size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.size
    }

    /// Account for one chunk.
    pub fn on_chunk(&mut self, chunk: &[u8]) -> Result<ChunkStep, ChunkError> {
        if self.is_complete() {
            return Err(ChunkError::AfterComplete);
        }
        if chunk.is_empty() {
            return Err(ChunkError::Empty);
        }
        let len = chunk.len() as u64;
        let end = self
            .received
            .checked_add(len)
            .filter(|end| *end <= self.size)
            .ok_or(ChunkError::Overflow {
                size: self.size,
                got: self.received.saturating_add(len),
            })?;
        let write_at = self.received;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(chunk);
        }
        self.received = end;
        let complete = self.is_complete();
        let ack_due = complete || end - self.last_ack >= self.ack_interval;
        if ack_due {
            self.last_ack = end;
        }
        Ok(ChunkStep {
            write_at,
            received: end,
            ack_due,
            complete,
        })
    }

    /// Hand the hashing to the driver (e.g. a writer thread that hashes what it writes,
    /// off the receive path); check the result with [`DownloadState::verify_digest`].
    pub fn detach_hasher(&mut self) -> Option<blake3::Hasher> {
        self.hasher.take()
    }

    /// Compare the hash of everything received with the offer's.
    pub fn verify(&self) -> Verdict {
        let actual = self
            .hasher
            .as_ref()
            .map(|h| Hash(*h.finalize().as_bytes()))
            .unwrap_or(Hash([0; 32]));
        self.verify_digest(actual)
    }

    /// Compare a digest computed by the driver with the offer's.
    pub fn verify_digest(&self, actual: Hash) -> Verdict {
        Verdict::of(self.expected, actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_for(data: &[u8]) -> DownloadState {
        DownloadState::new(data.len() as u64, Hash::of(data), 0, blake3::Hasher::new())
            .with_ack_interval(4)
    }

    #[test]
    fn download_chunks_in_order_verify() {
        let data = b"hello world!";
        let mut s = state_for(data);
        let a = s.on_chunk(&data[..5]).unwrap();
        assert_eq!(
            (a.write_at, a.received, a.ack_due, a.complete),
            (0, 5, true, false)
        );
        let b = s.on_chunk(&data[5..7]).unwrap();
        assert_eq!((b.write_at, b.ack_due), (5, false));
        let c = s.on_chunk(&data[7..]).unwrap();
        assert!(c.complete && c.ack_due);
        assert_eq!(s.verify(), Verdict::Verified);
    }

    #[test]
    fn download_overflow_is_refused_without_state_change() {
        let data = b"abc";
        let mut s = state_for(data);
        assert_eq!(
            s.on_chunk(b"abcd"),
            Err(ChunkError::Overflow { size: 3, got: 4 })
        );
        assert_eq!(s.received(), 0);
    }

    #[test]
    fn download_chunk_after_complete_is_refused() {
        let mut s = state_for(b"ab");
        s.on_chunk(b"ab").unwrap();
        assert_eq!(s.on_chunk(b"c"), Err(ChunkError::AfterComplete));
    }

    #[test]
    fn download_empty_chunk_is_refused() {
        let mut s = state_for(b"ab");
        assert_eq!(s.on_chunk(b""), Err(ChunkError::Empty));
    }

    #[test]
    fn download_wrong_bytes_mismatch() {
        let mut s = state_for(b"abcd");
        s.on_chunk(b"abce").unwrap();
        assert!(matches!(s.verify(), Verdict::Mismatch { .. }));
    }

    #[test]
    fn download_resumed_with_prefix_hasher_verifies() {
        let data = b"0123456789";
        let mut prefix = blake3::Hasher::new();
        prefix.update(&data[..6]);
        let mut s = DownloadState::new(10, Hash::of(data), 6, prefix);
        let step = s.on_chunk(&data[6..]).unwrap();
        assert_eq!(step.write_at, 6);
        assert_eq!(s.verify(), Verdict::Verified);
    }

    #[test]
    fn download_detached_hasher_verifies_via_digest() {
        let data = b"detached";
        let mut s = state_for(data);
        let mut hasher = s.detach_hasher().unwrap();
        s.on_chunk(data).unwrap();
        hasher.update(data);
        assert_eq!(
            s.verify_digest(Hash(*hasher.finalize().as_bytes())),
            Verdict::Verified
        );
        assert!(matches!(
            s.verify_digest(Hash([1; 32])),
            Verdict::Mismatch { .. }
        ));
    }

    #[test]
    fn download_empty_file_is_complete_at_once() {
        let s = DownloadState::new(0, Hash::of(b""), 0, blake3::Hasher::new());
        assert!(s.is_complete());
        assert_eq!(s.verify(), Verdict::Verified);
    }

    proptest::proptest! {
        /// Whatever chunks a sender sends (any sizes, too many bytes, garbage after the
        /// end), the job reaches exactly one end: complete with a verdict that says
        /// `Verified` only for the offered bytes, or a refused chunk that left its state
        /// unchanged. Acknowledgements never go backwards and the last one is at the end.
        #[test]
        fn download_random_chunk_sequences_end_once(
            size in 0u64..4096,
            chunks in proptest::collection::vec(0usize..1500, 0..12),
            corrupt in proptest::option::of(0usize..4096),
            interval in 1u64..2048,
        ) {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let mut s = DownloadState::new(size, Hash::of(&data), 0, blake3::Hasher::new())
                .with_ack_interval(interval);
            let mut sent = data.clone();
            // Bytes a sender may put on the wire: the file, maybe changed, then extra.
            if let Some(i) = corrupt.filter(|i| (*i as u64) < size) {
                sent[i] ^= 0x5a;
            }
            sent.extend_from_slice(b"trailing bytes past the announced size");
            let (mut pos, mut last_ack, mut ended) = (0usize, 0u64, s.is_complete());
            for len in chunks {
                let chunk = &sent[pos.min(sent.len())..(pos + len).min(sent.len())];
                let before = s.received();
                match s.on_chunk(chunk) {
                    Ok(step) => {
                        proptest::prop_assert!(!ended, "a chunk was taken after the end");
                        proptest::prop_assert_eq!(step.write_at, before);
                        proptest::prop_assert_eq!(step.received, before + chunk.len() as u64);
                        if step.ack_due {
                            proptest::prop_assert!(step.received > last_ack);
                            last_ack = step.received;
                        }
                        pos += chunk.len();
                        if step.complete {
                            proptest::prop_assert!(step.ack_due);
                            ended = true;
                        }
                    }
                    Err(_) => proptest::prop_assert_eq!(s.received(), before),
                }
                proptest::prop_assert!(s.received() <= size);
            }
            if s.is_complete() {
                let intact = sent[..size as usize] == data[..];
                proptest::prop_assert_eq!(s.verify() == Verdict::Verified, intact);
            }
        }
    }
}
