//! Batches: many small files of one sender on one data channel (docs/PROTOCOL.md,
//! "Batches"). The frames that announce each file on a batch channel, and the recipient's
//! reading of such a channel: which job the next bytes belong to, and whether the sender
//! keeps to the batch it was asked for. Sans-IO: bytes and frames in, steps out.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::control::{DecodeError, MAX_CONTROL_MESSAGE};
use super::ids::JobId;

/// Most jobs in one `batch-request`.
pub const MAX_BATCH_JOBS: usize = 128;
/// Largest file a batch may carry; larger files go one job per channel.
pub const MAX_BATCH_FILE: u64 = 1024 * 1024;
/// Most bytes a peershare recipient asks for in one batch (its own choice: a sender
/// does not count them).
pub const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Longest `message` of a `skip` frame, in bytes.
pub const MAX_SKIP_MESSAGE: usize = 1024;

/// A text message of a batch channel: what the binary messages that follow are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum BatchFrame {
    /// The next `size` bytes of binary messages are the whole file of job `job_id`.
    File { job_id: JobId, size: u64 },
    /// The sender does not send job `job_id`, for the reason `code` says.
    Skip {
        job_id: JobId,
        code: u16,
        message: String,
    },
    /// Every job of the batch was sent or skipped.
    End,
}

impl BatchFrame {
    /// Encode as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"end"}"#.to_string())
    }

    /// Decode one frame received from a sender.
    pub fn decode(bytes: &[u8]) -> Result<BatchFrame, DecodeError> {
        if bytes.len() > MAX_CONTROL_MESSAGE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotText)?;
        let frame: BatchFrame =
            serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if let BatchFrame::Skip { message, .. } = &frame
            && message.len() > MAX_SKIP_MESSAGE
        {
            return Err(DecodeError::Invalid("skip message too long".into()));
        }
        Ok(frame)
    }
}

/// How a sender broke the batch protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch frame: {0}")]
    Frame(#[from] DecodeError),
    #[error("batch frame for job {got}, expected {expected}")]
    WrongJob { got: JobId, expected: String },
    #[error("batch frame announces {got} bytes for job {job_id}, offered {offered}")]
    WrongSize {
        job_id: JobId,
        got: u64,
        offered: u64,
    },
    #[error("a text frame in the middle of job {0}'s bytes")]
    FrameInFile(JobId),
    #[error("file bytes outside of any file of the batch")]
    StrayBytes,
    #[error("{got} bytes where job {job_id} has {left} left")]
    TooManyBytes { job_id: JobId, got: u64, left: u64 },
    #[error("the batch ended with {0} jobs neither sent nor skipped")]
    EndedEarly(usize),
    #[error("a message after the end of the batch")]
    AfterEnd,
}

/// What a message of a batch channel means to the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStep {
    /// The bytes of job `job_id` start (none follow when `size` is 0).
    Start { job_id: JobId, size: u64 },
    /// Bytes of the current file; `complete` once they are its last.
    Bytes { job_id: JobId, complete: bool },
    /// The sender skipped job `job_id`.
    Skipped {
        job_id: JobId,
        code: u16,
        message: String,
    },
    /// The batch is over: every job was sent or skipped.
    End,
}

/// The recipient's reading of one batch channel: every job it asked for, in the order
/// asked, is either announced by a `file` frame and followed by exactly its offered size
/// in bytes, or named by a `skip` frame; then `end`.
#[derive(Debug, Clone)]
pub struct BatchReader {
    expected: VecDeque<(JobId, u64)>,
    current: Option<(JobId, u64)>,
    ended: bool,
}

impl BatchReader {
    /// A reader for the jobs of a batch request, in its order, with their offered sizes.
    pub fn new(jobs: impl IntoIterator<Item = (JobId, u64)>) -> Self {
        Self {
            expected: jobs.into_iter().collect(),
            current: None,
            ended: false,
        }
    }

    /// A text message (a frame).
    pub fn on_text(&mut self, text: &[u8]) -> Result<BatchStep, BatchError> {
        if self.ended {
            return Err(BatchError::AfterEnd);
        }
        if let Some((job_id, _)) = self.current {
            return Err(BatchError::FrameInFile(job_id));
        }
        match BatchFrame::decode(text)? {
            BatchFrame::File { job_id, size } => {
                let offered = self.next(job_id)?;
                if size != offered {
                    return Err(BatchError::WrongSize {
                        job_id,
                        got: size,
                        offered,
                    });
                }
                self.expected.pop_front();
                if size > 0 {
                    self.current = Some((job_id, size));
                }
                Ok(BatchStep::Start { job_id, size })
            }
            BatchFrame::Skip {
                job_id,
                code,
                message,
            } => {
                self.next(job_id)?;
                self.expected.pop_front();
                Ok(BatchStep::Skipped {
                    job_id,
                    code,
                    message,
                })
            }
            BatchFrame::End => {
                if !self.expected.is_empty() {
                    return Err(BatchError::EndedEarly(self.expected.len()));
                }
                self.ended = true;
                Ok(BatchStep::End)
            }
        }
    }

    /// A binary message of `len` bytes.
    pub fn on_bytes(&mut self, len: usize) -> Result<BatchStep, BatchError> {
        if self.ended {
            return Err(BatchError::AfterEnd);
        }
        let Some((job_id, left)) = self.current else {
            return Err(BatchError::StrayBytes);
        };
        let len = len as u64;
        if len > left {
            return Err(BatchError::TooManyBytes {
                job_id,
                got: len,
                left,
            });
        }
        let left = left - len;
        self.current = (left > 0).then_some((job_id, left));
        Ok(BatchStep::Bytes {
            job_id,
            complete: left == 0,
        })
    }

    /// Whether the `end` frame came.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The jobs not finished: the one whose bytes are arriving and those not reached.
    pub fn unfinished(&self) -> Vec<JobId> {
        self.current
            .iter()
            .map(|(id, _)| *id)
            .chain(self.expected.iter().map(|(id, _)| *id))
            .collect()
    }

    /// The offered size of `job_id` if it is the next job (it stays next).
    fn next(&self, job_id: JobId) -> Result<u64, BatchError> {
        match self.expected.front() {
            Some((next, size)) if *next == job_id => Ok(*size),
            next => Err(BatchError::WrongJob {
                got: job_id,
                expected: next.map_or_else(|| "none".to_string(), |(id, _)| id.to_string()),
            }),
        }
    }
}

/// Label of the data channel that carries batch `batch_id`.
pub fn batch_channel_label(batch_id: &JobId) -> String {
    format!("batch/{batch_id}")
}

/// The batch ID in a data channel label, if it is a batch channel.
pub fn parse_batch_channel_label(label: &str) -> Option<JobId> {
    label.strip_prefix("batch/").and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: BatchFrame) -> Vec<u8> {
        f.encode().into_bytes()
    }

    fn jobs(sizes: &[u64]) -> Vec<(JobId, u64)> {
        sizes.iter().map(|s| (JobId::new(), *s)).collect()
    }

    #[test]
    fn batch_reader_files_and_skips_in_order_end_cleanly() {
        let list = jobs(&[5, 0, 3]);
        let mut r = BatchReader::new(list.clone());
        let (a, b, c) = (list[0].0, list[1].0, list[2].0);
        assert_eq!(
            r.on_text(&frame(BatchFrame::File { job_id: a, size: 5 })),
            Ok(BatchStep::Start { job_id: a, size: 5 })
        );
        assert_eq!(
            r.on_bytes(2),
            Ok(BatchStep::Bytes {
                job_id: a,
                complete: false
            })
        );
        assert_eq!(r.unfinished(), vec![a, b, c]);
        assert_eq!(
            r.on_bytes(3),
            Ok(BatchStep::Bytes {
                job_id: a,
                complete: true
            })
        );
        assert_eq!(
            r.on_text(&frame(BatchFrame::File { job_id: b, size: 0 })),
            Ok(BatchStep::Start { job_id: b, size: 0 })
        );
        let skip = BatchFrame::Skip {
            job_id: c,
            code: 5100,
            message: "changed".into(),
        };
        assert_eq!(
            r.on_text(&frame(skip)),
            Ok(BatchStep::Skipped {
                job_id: c,
                code: 5100,
                message: "changed".into()
            })
        );
        assert!(!r.is_ended());
        assert_eq!(r.on_text(&frame(BatchFrame::End)), Ok(BatchStep::End));
        assert!(r.is_ended());
        assert!(r.unfinished().is_empty());
        assert_eq!(r.on_bytes(1), Err(BatchError::AfterEnd));
    }

    #[test]
    fn batch_reader_sender_out_of_order_or_wrong_size_is_refused() {
        let list = jobs(&[4, 4]);
        let mut r = BatchReader::new(list.clone());
        let second = frame(BatchFrame::File {
            job_id: list[1].0,
            size: 4,
        });
        assert!(matches!(
            r.on_text(&second),
            Err(BatchError::WrongJob { .. })
        ));
        let mut r = BatchReader::new(list.clone());
        let wrong = frame(BatchFrame::File {
            job_id: list[0].0,
            size: 5,
        });
        assert!(matches!(
            r.on_text(&wrong),
            Err(BatchError::WrongSize { got: 5, .. })
        ));
        assert_eq!(r.unfinished(), vec![list[0].0, list[1].0]);
        let mut r = BatchReader::new(list.clone());
        let stranger = frame(BatchFrame::File {
            job_id: JobId::new(),
            size: 4,
        });
        assert!(matches!(
            r.on_text(&stranger),
            Err(BatchError::WrongJob { .. })
        ));
    }

    #[test]
    fn batch_reader_bytes_past_a_file_or_outside_one_are_refused() {
        let list = jobs(&[4]);
        let mut r = BatchReader::new(list.clone());
        assert_eq!(r.on_bytes(1), Err(BatchError::StrayBytes));
        r.on_text(&frame(BatchFrame::File {
            job_id: list[0].0,
            size: 4,
        }))
        .unwrap();
        assert!(matches!(
            r.on_bytes(5),
            Err(BatchError::TooManyBytes {
                got: 5,
                left: 4,
                ..
            })
        ));
        r.on_bytes(3).unwrap();
        assert_eq!(
            r.on_text(&frame(BatchFrame::End)),
            Err(BatchError::FrameInFile(list[0].0))
        );
    }

    #[test]
    fn batch_reader_early_end_names_what_is_missing() {
        let list = jobs(&[1, 1]);
        let mut r = BatchReader::new(list.clone());
        assert_eq!(
            r.on_text(&frame(BatchFrame::End)),
            Err(BatchError::EndedEarly(2))
        );
        assert_eq!(r.unfinished(), vec![list[0].0, list[1].0]);
    }

    #[test]
    fn batch_frame_garbage_or_oversized_is_a_frame_error() {
        let mut r = BatchReader::new(jobs(&[1]));
        assert!(matches!(r.on_text(b"{"), Err(BatchError::Frame(_))));
        assert!(matches!(
            r.on_text(br#"{"type":"file"}"#),
            Err(BatchError::Frame(_))
        ));
        let big = vec![b' '; MAX_CONTROL_MESSAGE + 1];
        assert!(matches!(
            r.on_text(&big),
            Err(BatchError::Frame(DecodeError::TooLarge(_)))
        ));
        let long = frame(BatchFrame::Skip {
            job_id: JobId::new(),
            code: 1,
            message: "x".repeat(MAX_SKIP_MESSAGE + 1),
        });
        assert!(matches!(
            r.on_text(&long),
            Err(BatchError::Frame(DecodeError::Invalid(_)))
        ));
    }

    #[test]
    fn batch_label_roundtrip_and_rejects_job_labels() {
        let id = JobId::new();
        assert_eq!(
            parse_batch_channel_label(&batch_channel_label(&id)),
            Some(id)
        );
        assert_eq!(parse_batch_channel_label(&format!("job/{id}")), None);
        assert_eq!(parse_batch_channel_label("batch/nope"), None);
    }
}
