//! Messages of the peer control channel (JSON text, one message per data-channel message).
//! See docs/PROTOCOL.md, "Peer control channel".

use serde::{Deserialize, Serialize};

use super::ids::{FileId, JobId};
use super::resume::{block_count, check_range_length};

/// Version of the control protocol spoken by this build.
pub const CONTROL_VERSION: u32 = 1;
/// Largest control message accepted, in bytes. Anything bigger is refused before parsing.
pub const MAX_CONTROL_MESSAGE: usize = 16 * 1024;
/// Longest file name accepted in an offer, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Largest text a `text` offer may carry, in bytes (`peershare send --text`). A text
/// offer above it is refused by the recipient with 1185, like a file above its limit.
pub const MAX_TEXT_BYTES: u64 = 64 * 1024;
/// Feature announced in `hello`: this peer answers `hashes-request` with `hashes`, so a
/// recipient may verify the bytes it holds past its checkpoint instead of having them
/// sent again (docs/PROTOCOL.md, "Resume").
pub const FEATURE_BLOCK_HASHES: &str = "block-hashes";

/// Feature announced in `hello`: this peer takes `dirs` messages (the empty directories
/// of a shared tree). Offers carry `path` and `executable` whatever the feature.
pub const FEATURE_TREE: &str = "tree";
/// Feature announced in `hello`: this peer answers `batch-request` (many small files on
/// one data channel, see docs/PROTOCOL.md, "Batches").
pub const FEATURE_BATCH: &str = "batch";
/// Longest relative path accepted in an offer or a `dirs` message, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most components of a relative path.
pub const MAX_PATH_DEPTH: usize = 64;
/// Longest group label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// The features this build announces in its `hello`.
pub fn features() -> Vec<String> {
    vec![
        FEATURE_BLOCK_HASHES.to_string(),
        FEATURE_TREE.to_string(),
        FEATURE_BATCH.to_string(),
    ]
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ControlMessage {
    /// First message on a fresh control channel, in both directions.
    Hello {
        version: u32,
        name: String,
        /// Optional protocol features the sender of the `hello` supports (unknown ones are
        /// ignored; absent means none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// A file is available to the receiver of this message.
    Offer {
        file_id: FileId,
        name: String,
        size: u64,
        /// BLAKE3 of the whole file, 64 lowercase hex digits.
        hash: String,
        /// Remaining lifetime of the offer in milliseconds, counted from sending.
        ttl_ms: u64,
        /// The files shared together in one request, so a recipient knows how many to
        /// expect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<OfferGroup>,
        /// Where the file sits in the shared tree: a relative path with `/` separators
        /// whose last component is the file (`photos/2024/a.jpg`). Absent for a file
        /// shared on its own. Untrusted: the recipient sanitizes every component.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// The file is executable on the sender (a recipient that can sets the bit).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
        /// The file is a short UTF-8 text (at most [`MAX_TEXT_BYTES`]) for the recipient
        /// to show rather than save. Absent means `false`; a peer that does not know the
        /// field sees an ordinary file.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        text: bool,
    },
    /// The empty directories of group `group`, as relative paths (only to peers that
    /// announced [`FEATURE_TREE`]; several messages when they do not fit in one).
    Dirs {
        group: uuid::Uuid,
        paths: Vec<String>,
    },
    /// The file is no longer available.
    Revoke { file_id: FileId },
    /// Send file `file_id` from byte `offset` on a new data channel labelled `job/<job_id>`.
    Request {
        job_id: JobId,
        file_id: FileId,
        offset: u64,
    },
    /// Send the files of `jobs` (each from its start, each at most
    /// [`MAX_BATCH_FILE`](super::batch::MAX_BATCH_FILE) bytes) one after the other on one
    /// new data channel labelled `batch/<batch_id>` (only to peers that announced
    /// [`FEATURE_BATCH`]).
    BatchRequest {
        batch_id: JobId,
        jobs: Vec<BatchJob>,
    },
    /// The recipient does not want the file; with `have`, because it already holds an
    /// identical copy (same size and BLAKE3), which the sender counts as delivered.
    Decline {
        file_id: FileId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        have: bool,
    },
    /// Send the BLAKE3 hashes of `length` bytes of file `file_id` from byte `offset`, one
    /// per 1 MiB block: the recipient of job `job_id` verifies what it holds past its
    /// checkpoint before it resumes (only to peers that announced
    /// [`FEATURE_BLOCK_HASHES`]).
    HashesRequest {
        job_id: JobId,
        file_id: FileId,
        offset: u64,
        length: u64,
    },
    /// The answer to a `hashes-request`: the hashes of its range, one per block, in order,
    /// each 64 hex digits.
    Hashes {
        job_id: JobId,
        file_id: FileId,
        offset: u64,
        length: u64,
        hashes: Vec<String>,
    },
    /// The recipient durably holds `received` bytes of the job.
    Progress { job_id: JobId, received: u64 },
    /// The recipient finished the job: `ok` means the hash matched and the file is saved.
    Done {
        job_id: JobId,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
    /// Either side stops the job.
    Cancel {
        job_id: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
    /// A coded error, about a job or file where one is named.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<JobId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<FileId>,
        code: u16,
        message: String,
    },
}

/// One job of a `batch-request`: the recipient's job ID for one offered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchJob {
    pub job_id: JobId,
    pub file_id: FileId,
}

/// Position of an offer among the files shared together in one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfferGroup {
    pub id: uuid::Uuid,
    /// Number of files in the group.
    pub count: u32,
    /// Index of this file in the group, from 0.
    pub index: u32,
    /// What the share is called, for one question about the whole group
    /// (`photos/`, `photos/ and 2 more`). Untrusted: escape it when shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Total size of the group's files, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("control message of {0} bytes exceeds the limit of {MAX_CONTROL_MESSAGE}")]
    TooLarge(usize),
    #[error("control message is not UTF-8 JSON text")]
    NotText,
    #[error("unknown control message type {0:?}")]
    UnknownType(String),
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error("invalid field: {0}")]
    Invalid(String),
}

impl ControlMessage {
    /// Encode as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these plain data types cannot fail; fall back to an error message
        // rather than panicking if it ever did.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":6005,"message":"encode failed: {e}"}}"#)
        })
    }

    /// Decode and validate one message received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<ControlMessage, DecodeError> {
        if bytes.len() > MAX_CONTROL_MESSAGE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotText)?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let ty = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| DecodeError::Malformed("missing \"type\"".into()))?;
        if !KNOWN_TYPES.contains(&ty) {
            return Err(DecodeError::UnknownType(ty.chars().take(64).collect()));
        }
        let msg: ControlMessage =
            serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ControlMessage::Hello { name, .. } if name.len() > MAX_NAME_BYTES => {
                Err(DecodeError::Invalid("hello name too long".into()))
            }
            ControlMessage::Offer {
                name,
                hash,
                group,
                path,
                ..
            } => {
                if let Some(g) = group {
                    if g.count == 0 || g.index >= g.count {
                        return Err(DecodeError::Invalid(
                            "offer group index out of range".into(),
                        ));
                    }
                    if g.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL_BYTES) {
                        return Err(DecodeError::Invalid("group label too long".into()));
                    }
                }
                if name.len() > MAX_NAME_BYTES {
                    return Err(DecodeError::Invalid("file name too long".into()));
                }
                if let Some(path) = path {
                    valid_path(path)?;
                }
                if !is_hex_hash(hash) {
                    return Err(DecodeError::Invalid("hash is not 64 hex digits".into()));
                }
                Ok(())
            }
            ControlMessage::Error { message, .. } if message.len() > MAX_CONTROL_MESSAGE / 2 => {
                Err(DecodeError::Invalid("error message too long".into()))
            }
            ControlMessage::BatchRequest { batch_id, jobs } => {
                if jobs.is_empty() || jobs.len() > super::batch::MAX_BATCH_JOBS {
                    return Err(DecodeError::Invalid(format!(
                        "a batch holds 1 to {} jobs, not {}",
                        super::batch::MAX_BATCH_JOBS,
                        jobs.len()
                    )));
                }
                let mut seen = std::collections::HashSet::with_capacity(jobs.len() + 1);
                seen.insert(*batch_id);
                let mut files = std::collections::HashSet::with_capacity(jobs.len());
                if !jobs
                    .iter()
                    .all(|j| seen.insert(j.job_id) && files.insert(j.file_id))
                {
                    return Err(DecodeError::Invalid(
                        "a batch names a job or a file twice".into(),
                    ));
                }
                Ok(())
            }
            ControlMessage::Dirs { paths, .. } => paths.iter().try_for_each(|p| valid_path(p)),
            ControlMessage::HashesRequest { offset, length, .. } => valid_range(*offset, *length),
            ControlMessage::Hashes {
                offset,
                length,
                hashes,
                ..
            } => {
                valid_range(*offset, *length)?;
                if hashes.len() as u64 != block_count(*length) {
                    return Err(DecodeError::Invalid(format!(
                        "{} hashes for {} blocks",
                        hashes.len(),
                        block_count(*length)
                    )));
                }
                if !hashes.iter().all(|h| is_hex_hash(h)) {
                    return Err(DecodeError::Invalid("hash is not 64 hex digits".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A relative path of a shared tree: bounded in length and depth (its components are
/// sanitized where it is used).
fn valid_path(path: &str) -> Result<(), DecodeError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(DecodeError::Invalid("path too long".into()));
    }
    if path.split(['/', '\\']).count() > MAX_PATH_DEPTH {
        return Err(DecodeError::Invalid("path too deep".into()));
    }
    Ok(())
}

const KNOWN_TYPES: &[&str] = &[
    "hello",
    "offer",
    "dirs",
    "revoke",
    "request",
    "batch-request",
    "decline",
    "hashes-request",
    "hashes",
    "progress",
    "done",
    "cancel",
    "error",
];

/// A BLAKE3 digest as the wire carries it: 64 hex digits.
fn is_hex_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A hash range: not empty, at most `MAX_HASH_BLOCKS` blocks, not past the largest offset.
fn valid_range(offset: u64, length: u64) -> Result<(), DecodeError> {
    check_range_length(length).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if offset.checked_add(length).is_none() {
        return Err(DecodeError::Invalid(
            "hash range past the largest offset".into(),
        ));
    }
    Ok(())
}

/// Label of the data channel that carries job `job_id`.
pub fn job_channel_label(job_id: &JobId) -> String {
    format!("job/{job_id}")
}

/// The job ID in a data channel label, if it is a job channel.
pub fn parse_job_channel_label(label: &str) -> Option<JobId> {
    label.strip_prefix("job/").and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::resume::MAX_HASH_BLOCKS;

    fn offer() -> ControlMessage {
        ControlMessage::Offer {
            file_id: FileId::new(),
            name: "a.txt".into(),
            size: 10,
            hash: "ab".repeat(32),
            ttl_ms: 1000,
            group: Some(OfferGroup {
                id: uuid::Uuid::new_v4(),
                count: 2,
                index: 1,
                label: None,
                bytes: None,
            }),
            path: None,
            executable: false,
            text: false,
        }
    }

    #[test]
    fn decode_roundtrip_every_type_succeeds() {
        let job_id = JobId::new();
        let file_id = FileId::new();
        let all = vec![
            ControlMessage::Hello {
                version: 1,
                name: "x".into(),
                features: features(),
            },
            ControlMessage::Hello {
                version: 1,
                name: "old".into(),
                features: Vec::new(),
            },
            offer(),
            ControlMessage::Revoke { file_id },
            ControlMessage::Request {
                job_id,
                file_id,
                offset: 5,
            },
            ControlMessage::BatchRequest {
                batch_id: JobId::new(),
                jobs: vec![
                    BatchJob { job_id, file_id },
                    BatchJob {
                        job_id: JobId::new(),
                        file_id: FileId::new(),
                    },
                ],
            },
            ControlMessage::Decline {
                file_id,
                have: false,
            },
            ControlMessage::Decline {
                file_id,
                have: true,
            },
            ControlMessage::Offer {
                file_id,
                name: "text.txt".into(),
                size: 5,
                hash: "cd".repeat(32),
                ttl_ms: 1000,
                group: None,
                path: None,
                executable: false,
                text: true,
            },
            ControlMessage::Offer {
                file_id,
                name: "run.sh".into(),
                size: 5,
                hash: "cd".repeat(32),
                ttl_ms: 1000,
                group: Some(OfferGroup {
                    id: uuid::Uuid::nil(),
                    count: 2,
                    index: 1,
                    label: Some("photos/".into()),
                    bytes: Some(10),
                }),
                path: Some("photos/bin/run.sh".into()),
                executable: true,
                text: false,
            },
            ControlMessage::Dirs {
                group: uuid::Uuid::nil(),
                paths: vec!["photos/empty".into(), "photos/a/b".into()],
            },
            ControlMessage::HashesRequest {
                job_id,
                file_id,
                offset: 8 << 20,
                length: (2 << 20) + 1,
            },
            ControlMessage::Hashes {
                job_id,
                file_id,
                offset: 8 << 20,
                length: (2 << 20) + 1,
                hashes: vec!["ab".repeat(32), "cd".repeat(32), "ef".repeat(32)],
            },
            ControlMessage::Progress {
                job_id,
                received: 9,
            },
            ControlMessage::Done {
                job_id,
                ok: false,
                code: Some(5100),
            },
            ControlMessage::Cancel { job_id, code: None },
            ControlMessage::Error {
                job_id: None,
                file_id: Some(file_id),
                code: 5091,
                message: "no".into(),
            },
        ];
        for m in all {
            assert_eq!(ControlMessage::decode(m.encode().as_bytes()), Ok(m));
        }
    }

    fn batch(n: usize) -> ControlMessage {
        ControlMessage::BatchRequest {
            batch_id: JobId::new(),
            jobs: (0..n)
                .map(|_| BatchJob {
                    job_id: JobId::new(),
                    file_id: FileId::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn decode_batch_request_largest_fits_and_bad_ones_are_invalid() {
        use crate::proto::batch::MAX_BATCH_JOBS;
        let largest = batch(MAX_BATCH_JOBS).encode();
        assert!(largest.len() <= MAX_CONTROL_MESSAGE, "{}", largest.len());
        assert!(ControlMessage::decode(largest.as_bytes()).is_ok());
        for bad in [batch(0), batch(MAX_BATCH_JOBS + 1)] {
            assert!(matches!(
                ControlMessage::decode(bad.encode().as_bytes()),
                Err(DecodeError::Invalid(_))
            ));
        }
        let ControlMessage::BatchRequest { batch_id, mut jobs } = batch(2) else {
            unreachable!()
        };
        let twice_file = ControlMessage::BatchRequest {
            batch_id,
            jobs: vec![
                jobs[0],
                BatchJob {
                    job_id: jobs[1].job_id,
                    file_id: jobs[0].file_id,
                },
            ],
        };
        jobs[1].job_id = batch_id;
        let batch_id_as_job = ControlMessage::BatchRequest { batch_id, jobs };
        for bad in [twice_file, batch_id_as_job] {
            assert!(matches!(
                ControlMessage::decode(bad.encode().as_bytes()),
                Err(DecodeError::Invalid(_))
            ));
        }
    }

    #[test]
    fn decode_truncated_message_is_malformed() {
        let text = offer().encode();
        for cut in [1, text.len() / 2, text.len() - 1] {
            assert!(matches!(
                ControlMessage::decode(&text.as_bytes()[..cut]),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn decode_oversized_message_is_refused_before_parsing() {
        let big = vec![b' '; MAX_CONTROL_MESSAGE + 1];
        assert_eq!(
            ControlMessage::decode(&big),
            Err(DecodeError::TooLarge(MAX_CONTROL_MESSAGE + 1))
        );
    }

    #[test]
    fn decode_unknown_type_is_reported_as_unknown() {
        assert_eq!(
            ControlMessage::decode(br#"{"type":"launch-missiles"}"#),
            Err(DecodeError::UnknownType("launch-missiles".into()))
        );
    }

    #[test]
    fn decode_non_utf8_is_not_text() {
        assert_eq!(
            ControlMessage::decode(&[0xff, 0xfe, 0x00]),
            Err(DecodeError::NotText)
        );
    }

    #[test]
    fn decode_bad_fields_are_refused() {
        // negative size, bad job id, bad hash, missing type, unknown extra field
        let cases: &[&[u8]] = &[
            br#"{"type":"offer","file_id":"00000000-0000-0000-0000-000000000001","name":"a","size":-1,"hash":"00","ttl_ms":1}"#,
            br#"{"type":"request","job_id":"nope","file_id":"00000000-0000-0000-0000-000000000001","offset":0}"#,
            br#"{"type":"offer","file_id":"00000000-0000-0000-0000-000000000001","name":"a","size":1,"hash":"zz","ttl_ms":1}"#,
            br#"{"file_id":"x"}"#,
            br#"[1,2,3]"#,
            br#"{"type":"offer","file_id":"00000000-0000-0000-0000-000000000001","name":"a","size":1,"hash":"0000000000000000000000000000000000000000000000000000000000000000","ttl_ms":1,"group":{"id":"00000000-0000-0000-0000-000000000001","count":2,"index":2}}"#,
        ];
        for c in cases {
            assert!(
                ControlMessage::decode(c).is_err(),
                "accepted {}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn decode_hello_without_features_has_none() {
        let m = ControlMessage::decode(br#"{"type":"hello","version":1,"name":"old"}"#).unwrap();
        assert_eq!(
            m,
            ControlMessage::Hello {
                version: 1,
                name: "old".into(),
                features: Vec::new()
            }
        );
    }

    #[test]
    fn decode_hash_ranges_out_of_bounds_or_miscounted_are_invalid() {
        let job_id = JobId::new();
        let file_id = FileId::new();
        let request = |offset, length| ControlMessage::HashesRequest {
            job_id,
            file_id,
            offset,
            length,
        };
        let hashes = |length, n: usize, digit: &str| ControlMessage::Hashes {
            job_id,
            file_id,
            offset: 0,
            length,
            hashes: vec![digit.repeat(64); n],
        };
        let max = crate::proto::resume::MAX_HASH_RANGE;
        for bad in [
            request(0, 0),
            request(0, max + 1),
            request(u64::MAX, 1),
            hashes(1 << 20, 2, "a"),
            hashes((1 << 20) + 1, 1, "a"),
            hashes(1 << 20, 1, "g"),
            hashes(0, 0, "a"),
        ] {
            assert!(
                matches!(
                    ControlMessage::decode(bad.encode().as_bytes()),
                    Err(DecodeError::Invalid(_))
                ),
                "accepted {bad:?}"
            );
        }
        // The largest answer fits a control message.
        let largest = hashes(max, MAX_HASH_BLOCKS as usize, "f");
        assert!(largest.encode().len() < MAX_CONTROL_MESSAGE);
        assert_eq!(
            ControlMessage::decode(largest.encode().as_bytes()),
            Ok(largest)
        );
    }

    #[test]
    fn decode_overlong_name_is_invalid() {
        let m = ControlMessage::Offer {
            file_id: FileId::new(),
            name: "n".repeat(MAX_NAME_BYTES + 1),
            size: 1,
            hash: "0".repeat(64),
            ttl_ms: 1,
            group: None,
            path: None,
            executable: false,
            text: false,
        };
        assert!(matches!(
            ControlMessage::decode(m.encode().as_bytes()),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn decode_unknown_fields_are_ignored_for_compatibility() {
        let m = ControlMessage::decode(
            br#"{"type":"decline","file_id":"00000000-0000-0000-0000-000000000001","future":1}"#,
        )
        .unwrap();
        assert!(matches!(m, ControlMessage::Decline { .. }));
    }

    #[test]
    fn decode_offer_and_decline_without_new_fields_default_to_false() {
        let offer = ControlMessage::decode(
            br#"{"type":"offer","file_id":"00000000-0000-0000-0000-000000000001","name":"a","size":1,"hash":"0000000000000000000000000000000000000000000000000000000000000000","ttl_ms":1}"#,
        )
        .unwrap();
        assert!(matches!(offer, ControlMessage::Offer { text: false, .. }));
        let decline = ControlMessage::decode(
            br#"{"type":"decline","file_id":"00000000-0000-0000-0000-000000000001"}"#,
        )
        .unwrap();
        assert!(matches!(
            decline,
            ControlMessage::Decline { have: false, .. }
        ));
        // Absent when false, so older peers see exactly what they always saw.
        let plain = ControlMessage::Decline {
            file_id: FileId::new(),
            have: false,
        };
        assert!(!plain.encode().contains("have"));
        let have = ControlMessage::Decline {
            file_id: FileId::new(),
            have: true,
        };
        assert!(have.encode().contains(r#""have":true"#));
    }

    #[test]
    fn job_label_roundtrip_and_rejects_foreign_labels() {
        let id = JobId::new();
        assert_eq!(parse_job_channel_label(&job_channel_label(&id)), Some(id));
        assert_eq!(parse_job_channel_label("control"), None);
        assert_eq!(parse_job_channel_label("job/not-a-uuid"), None);
    }

    /// JSON values of the kinds control messages carry, and some they must refuse.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::json;
        prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(|b| json!(b)),
            ".{0,24}".prop_map(|s| json!(s)),
            any::<u128>().prop_map(|n| json!(uuid::Uuid::from_u128(n).to_string())),
            "[0-9a-fA-F]{63,65}".prop_map(|s| json!(s)),
            Just(serde_json::Value::Null),
            (any::<u128>(), any::<u32>(), any::<u32>()).prop_map(|(id, count, index)| json!({
                "id": uuid::Uuid::from_u128(id).to_string(), "count": count % 4, "index": index % 4
            })),
            (0u64..4 << 20).prop_map(|n| json!(n)),
            proptest::collection::vec("[0-9a-fA-F]{63,65}", 0..4).prop_map(|v| json!(v)),
            proptest::collection::vec("[a-z-]{0,16}", 0..3).prop_map(|v| json!(v)),
        ]
    }

    proptest::proptest! {
        /// Whatever a peer sends: no panic; what is accepted is valid and re-encodes to
        /// the same message, canonically; the size limit holds.
        #[test]
        fn control_decode_random_messages_round_trip_or_refuse(
            ty in proptest::sample::select(vec![
                "hello", "offer", "revoke", "request", "decline", "hashes-request", "hashes",
                "progress", "done", "cancel", "error", "bogus",
            ]),
            fields in proptest::collection::vec((
                proptest::sample::select(vec![
                    "version", "name", "file_id", "size", "hash", "ttl_ms", "group", "job_id",
                    "offset", "received", "ok", "code", "message", "length", "hashes",
                    "features", "text", "have",
                ]),
                json_value(),
            ), 0..10),
            raw in proptest::option::of(".{0,64}"),
        ) {
            let text = match raw {
                Some(raw) => raw,
                None => {
                    let mut obj = serde_json::Map::new();
                    obj.insert("type".into(), serde_json::json!(ty));
                    for (k, v) in fields {
                        obj.insert(k.into(), v);
                    }
                    serde_json::Value::Object(obj).to_string()
                }
            };
            match ControlMessage::decode(text.as_bytes()) {
                Ok(msg) => {
                    proptest::prop_assert!(msg.validate().is_ok());
                    let encoded = msg.encode();
                    let again = ControlMessage::decode(encoded.as_bytes());
                    proptest::prop_assert_eq!(again.as_ref(), Ok(&msg));
                    proptest::prop_assert_eq!(again.map(|m| m.encode()), Ok(encoded));
                }
                Err(DecodeError::TooLarge(n)) => proptest::prop_assert!(n > MAX_CONTROL_MESSAGE),
                Err(_) => {}
            }
        }
    }
}
