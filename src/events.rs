//! Events emitted by a [`crate::Peer`], named after the file-share SDKs' events
//! (ARCHITECTURE.md §4). Serialized with `"event"` as the tag, e.g. `upload-started`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::proto::control::OfferGroup;
use crate::proto::ids::{FileId, JobId};
use crate::proto::upload::Outcome;
use crate::rtc::path::PathKind;

/// A file offered to us, as listed by [`crate::Peer::available_files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub file_id: FileId,
    /// The name as offered (untrusted; sanitized when saved).
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the file, hex.
    pub hash: String,
    /// Client ID of the sender.
    pub sender: String,
    /// Milliseconds until the offer expires, as of when the event was made.
    pub expires_in_ms: u64,
    /// The files shared together with this one.
    pub group: Option<OfferGroup>,
    /// Its place in a shared tree (`photos/2024/a.jpg`, as offered: untrusted, every
    /// component is sanitized when saved); `None` for a file shared on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The sender's copy is executable (a directory download sets the bits).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// A short text (at most [`crate::proto::control::MAX_TEXT_BYTES`]) to show rather
    /// than save (`peershare send --text`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text: bool,
}

/// Something that happened in the session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Another client of the session proved that it knows the code's secret (the PAKE
    /// and the MAC of its connection setup succeeded): from now on it is a member that
    /// files are offered to and accepted from. Clients that never authenticate are never
    /// reported as joined.
    PeerJoined { peer: String, name: String },
    /// An authenticated member left the session.
    PeerLeft { peer: String },
    /// A client failed to authenticate (`code` 6011: it does not know the secret, or
    /// someone altered the connection setup; 6012: our code is burnt and admits nobody
    /// new). Nothing is offered to it or accepted from it. `name` is what the signaling
    /// server announced (untrusted). `authenticating`: how many other clients of the
    /// session are still authenticating at this moment (0: every client known so far
    /// either is a member or failed).
    PeerAuthFailed {
        peer: String,
        name: String,
        code: u16,
        message: String,
        authenticating: usize,
    },
    /// Too many clients failed to authenticate ([`crate::PeerConfig::max_auth_failures`]):
    /// the code is burnt. Authenticated members keep their connections; nobody new is
    /// admitted. Emitted once.
    CodeBurnt { failures: u32 },
    /// The peer-to-peer connection to `peer` is up, over a `direct` or `relay` path
    /// (`local`/`remote` are the selected candidate types: host, srflx, prflx, relay).
    Connection {
        peer: String,
        path: Option<PathKind>,
        local: Option<String>,
        remote: Option<String>,
    },

    /// The connection to `peer` was lost; jobs with it are kept and resume when it is
    /// re-established.
    ConnectionLost { peer: String, reason: String },

    /// The connection to the signaling server was lost (`reason`, for people: the socket
    /// closed, the server is draining …): the peer is rejoining its session, for at most
    /// [`crate::PeerConfig::signaling_retry_window`]. Peer connections and transfers
    /// carry on meanwhile; nobody new can be met, and a peer connection that dies is
    /// rebuilt once signaling is back. Followed by `signaling-reconnected`, or by `error`
    /// 1180 when the peer gives up. Not emitted when the window is zero (then `error` 1180
    /// comes at once).
    SignalingLost { reason: String },
    /// Back in the session after `signaling-lost`, through `server`. `resumed`: under the
    /// same client ID, so the other members keep us as we were (one that saw us leave
    /// meets us again, and is authenticated again by the key of our pair). Otherwise
    /// the server gave a new `client_id` ([`crate::Peer::client_id`] returns it from now
    /// on): every member known before is treated as having left (`peer-left`, connections
    /// closed, their jobs suspended), the members present now are met anew, and
    /// downloads resume by job ID once their connections are back.
    SignalingReconnected {
        client_id: String,
        server: String,
        resumed: bool,
    },

    /// Sender: the file is open and its offer went out.
    UploadStarted {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
        /// Its place in the shared tree (`photos/2024/a.jpg`); `None` for a file shared
        /// on its own.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Sender: `peer` has acknowledged `bytes` of the file.
    UploadProgress {
        job_id: JobId,
        file_id: FileId,
        name: String,
        peer: String,
        bytes: u64,
        size: u64,
    },
    /// Sender: one recipient's outcome (delivered, declined or failed), with the bytes
    /// sent to it over all attempts (more than the size when resumes re-sent data). Also
    /// for a member of the session that a targeted share ([`crate::Share::To`]) names and
    /// that the offer never reached: failed 6003 once it left the session for good, 6011
    /// or 6012 as soon as it failed to authenticate, 6001 when the offer's lifetime ended.
    RecipientOutcome {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
        peer: String,
        #[serde(flatten)]
        outcome: Outcome,
        bytes_sent: u64,
    },
    /// Sender: every recipient is resolved (each the offer reached, and each member of the
    /// session that a targeted share names), and not all of them failed.
    UploadCompleted {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
        outcomes: BTreeMap<String, Outcome>,
    },
    /// Sender: delivery became impossible: every recipient failed (`code`: the last
    /// failure), or the offer's lifetime ended before it reached anyone (6001).
    UploadFailed {
        job_id: Option<JobId>,
        file_id: Option<FileId>,
        name: String,
        size: u64,
        code: u16,
        message: String,
    },
    /// Sender: the upload was cancelled locally.
    UploadCancelled {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
    },
    /// Sender: every file of a share (one offer group: the files of one
    /// [`crate::Peer::send_files`] or [`crate::Peer::send_paths`], e.g. a whole tree) has
    /// ended, each with `upload-completed`, `upload-failed` or `upload-cancelled`: how
    /// many ended which way. Once per share.
    UploadGroupEnded {
        group_id: uuid::Uuid,
        /// What the share is called (`photos/`), if it has a label.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        files: u32,
        completed: u32,
        failed: u32,
        cancelled: u32,
    },

    /// Recipient: a sender started sharing a file with us.
    FileUploadStarted {
        file_id: FileId,
        name: String,
        size: u64,
        sender: String,
    },
    /// Recipient: a file is ready to download.
    DownloadAvailable {
        file_id: FileId,
        name: String,
        size: u64,
        hash: String,
        sender: String,
        expires_in_ms: u64,
        /// The files shared together with this one (how many to expect).
        group: Option<OfferGroup>,
        /// Its place in a shared tree, as offered (see [`FileInfo::path`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// A short text to show rather than save (present only when `true`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        text: bool,
    },
    /// Recipient: the offer was not downloaded because `path` already holds an identical
    /// copy (same size and BLAKE3); the sender was told, and counts it as delivered.
    DownloadSkipped {
        file_id: FileId,
        name: String,
        size: u64,
        sender: String,
        path: PathBuf,
    },
    /// Recipient: data started to flow (again, after a resume) from byte `offset`.
    DownloadStarted {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
        offset: u64,
    },
    /// Recipient: `bytes` of the file received.
    DownloadProgress {
        job_id: JobId,
        file_id: FileId,
        name: String,
        bytes: u64,
        size: u64,
    },
    /// Recipient: the file is verified and saved (or held in memory).
    DownloadCompleted {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
        /// Where it was saved; `None` for in-memory downloads.
        path: Option<PathBuf>,
        /// The bytes of an in-memory download.
        #[serde(skip)]
        data: Option<bytes::Bytes>,
    },
    /// Recipient: the download failed.
    DownloadFailed {
        job_id: Option<JobId>,
        file_id: FileId,
        name: String,
        size: u64,
        code: u16,
        message: String,
    },
    /// Recipient: the download was cancelled locally.
    DownloadCancelled {
        job_id: JobId,
        file_id: FileId,
        name: String,
        size: u64,
    },
    /// Recipient: every file of a share offered to us (its `group`, e.g. a tree) has
    /// ended here: `completed` (`download-completed`, or `download-skipped`: an identical
    /// copy was there), `failed` (`download-failed`, or the offer withdrawn before we had
    /// the file), `cancelled` (`download-cancelled`, or declined). Once per share, after
    /// the last file's own event; a share with files never downloaded nor declined does
    /// not end. `label` is untrusted (escape it when shown).
    DownloadGroupEnded {
        group_id: uuid::Uuid,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        sender: String,
        files: u32,
        completed: u32,
        failed: u32,
        cancelled: u32,
    },

    /// A coded error not tied to one job: 1180 when signaling is gone for good (the
    /// peer gave up rejoining, or a server refused it), a misbehaving peer …
    Error {
        peer: Option<String>,
        code: u16,
        message: String,
    },
}

impl Event {
    /// The SDK-style name of the event (`upload-started`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Event::PeerJoined { .. } => "peer-joined",
            Event::PeerLeft { .. } => "peer-left",
            Event::PeerAuthFailed { .. } => "peer-auth-failed",
            Event::CodeBurnt { .. } => "code-burnt",
            Event::Connection { .. } => "connection",
            Event::ConnectionLost { .. } => "connection-lost",
            Event::SignalingLost { .. } => "signaling-lost",
            Event::SignalingReconnected { .. } => "signaling-reconnected",
            Event::UploadStarted { .. } => "upload-started",
            Event::UploadProgress { .. } => "upload-progress",
            Event::RecipientOutcome { .. } => "recipient-outcome",
            Event::UploadCompleted { .. } => "upload-completed",
            Event::UploadFailed { .. } => "upload-failed",
            Event::UploadCancelled { .. } => "upload-cancelled",
            Event::UploadGroupEnded { .. } => "upload-group-ended",
            Event::FileUploadStarted { .. } => "file-upload-started",
            Event::DownloadAvailable { .. } => "download-available",
            Event::DownloadSkipped { .. } => "download-skipped",
            Event::DownloadStarted { .. } => "download-started",
            Event::DownloadProgress { .. } => "download-progress",
            Event::DownloadCompleted { .. } => "download-completed",
            Event::DownloadFailed { .. } => "download-failed",
            Event::DownloadCancelled { .. } => "download-cancelled",
            Event::DownloadGroupEnded { .. } => "download-group-ended",
            Event::Error { .. } => "error",
        }
    }

    /// Whether this is a progress event (frequent, usually filtered in logs and tests).
    pub fn is_progress(&self) -> bool {
        matches!(
            self,
            Event::UploadProgress { .. } | Event::DownloadProgress { .. }
        )
    }
}
