//! Library errors with stable numeric codes (ARCHITECTURE.md §5; the table is in the README, "Error codes").

use thiserror::Error;

/// Stable numeric codes. Existing numbers never change; new ones are added.
pub mod codes {
    /// Not connected to a session (room disconnected).
    pub const NOT_CONNECTED: u16 = 1180;
    /// File download not available (unknown or revoked file).
    pub const FILE_NOT_AVAILABLE: u16 = 1181;
    /// Failed to upload file (send side I/O or transport failure).
    pub const UPLOAD_FAILED: u16 = 1182;
    /// Failed to download file (receive side transport failure).
    pub const DOWNLOAD_FAILED: u16 = 1183;
    /// File size exceeds the maximum allowed size.
    pub const FILE_TOO_LARGE: u16 = 1185;
    /// Storage access denied (cannot read the source or write the destination).
    pub const STORAGE_ACCESS_DENIED: u16 = 5089;
    /// Failed to save file (disk full, rename failed …).
    pub const SAVE_FAILED: u16 = 5090;
    /// File sharing not available in this context (not an intended recipient).
    pub const NOT_PERMITTED: u16 = 5091;
    /// Too many files in one request.
    pub const TOO_MANY_FILES: u16 = 5092;
    /// Cannot cancel an upload that already completed.
    pub const ALREADY_COMPLETED: u16 = 5098;
    /// Invalid upload/download job ID.
    pub const INVALID_JOB: u16 = 5099;
    /// Possibly corrupt file (hash mismatch; source changed since the offer).
    pub const POSSIBLY_CORRUPT: u16 = 5100;
    /// File already downloaded.
    pub const ALREADY_DOWNLOADED: u16 = 5101;
    /// The offer expired (its TTL passed): the REST seed's 410 "upload expired".
    pub const OFFER_EXPIRED: u16 = 6001;
    /// The recipient declined the offer.
    pub const DECLINED: u16 = 6002;
    /// The other peer left the session or its connection was lost for good.
    pub const PEER_GONE: u16 = 6003;
    /// The other side cancelled the transfer.
    pub const CANCELLED_BY_PEER: u16 = 6004;
    /// The peer sent a malformed or unexpected protocol message.
    pub const PROTOCOL_VIOLATION: u16 = 6005;
    /// The peer speaks an unsupported protocol version.
    pub const UNSUPPORTED_VERSION: u16 = 6006;
    /// The peer connection could not be established.
    pub const CONNECTION_FAILED: u16 = 6007;
    /// Invalid configuration or argument given by the caller.
    pub const INVALID_ARGUMENT: u16 = 6008;
    /// The job was cancelled on this side.
    pub const CANCELLED: u16 = 6009;
    /// A sender refused a `request`: it already serves too many jobs to this peer or in
    /// total.
    pub const TOO_MANY_JOBS: u16 = 6010;
    /// Peer authentication failed: the other side does not know the code's secret, or
    /// someone between the peers altered the connection setup.
    pub const PEER_AUTH_FAILED: u16 = 6011;
    /// Too many failed authentications: the code is burnt and admits nobody new.
    pub const CODE_BURNT: u16 = 6012;
    /// No member of the session is the recipient asked for (by client ID or display
    /// name), within the time given for it to appear.
    pub const RECIPIENT_NOT_FOUND: u16 = 6013;
}

/// Errors of the peershare library. Every variant has a stable [`Error::code`].
#[derive(Debug, Error)]
pub enum Error {
    #[error("not connected to a session: {0}")]
    NotConnected(String),
    #[error("file {0} is not available for download")]
    FileNotAvailable(String),
    #[error("upload failed: {0}")]
    UploadFailed(String),
    #[error("download failed: {0}")]
    DownloadFailed(String),
    #[error("file {name} is {size} bytes, above the maximum of {max} bytes")]
    FileTooLarge { name: String, size: u64, max: u64 },
    #[error("storage access denied: {0}")]
    StorageAccessDenied(String),
    #[error("failed to save file: {0}")]
    SaveFailed(String),
    #[error("file sharing not available in this context: {0}")]
    NotPermitted(String),
    #[error("too many files in one request: {count} (maximum {max})")]
    TooManyFiles { count: usize, max: usize },
    #[error("upload {0} already completed")]
    AlreadyCompleted(String),
    #[error("unknown job ID {0}")]
    InvalidJob(String),
    #[error("possibly corrupt file: {0}")]
    PossiblyCorrupt(String),
    #[error("file {0} was already downloaded")]
    AlreadyDownloaded(String),
    #[error("offer for file {0} expired")]
    OfferExpired(String),
    #[error("declined by the recipient")]
    Declined,
    #[error("peer {0} is gone")]
    PeerGone(String),
    #[error("cancelled by the other side")]
    CancelledByPeer,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    #[error("connection failed: {0}")]
    ConnectionFailed(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cancelled")]
    CancelledLocally,
    #[error("too many jobs: {0}")]
    TooManyJobs(String),
    #[error("peer authentication failed: {0}")]
    PeerAuthFailed(String),
    #[error("the code is burnt after {0} failed authentications")]
    CodeBurnt(u32),
    #[error("no such recipient: {0}")]
    RecipientNotFound(String),
    /// An error reported by the other side or by the signaling server, with its code.
    #[error("{message}")]
    Remote { code: u16, message: String },
}

impl Error {
    /// The stable numeric code of this error.
    pub fn code(&self) -> u16 {
        use codes::*;
        match self {
            Error::NotConnected(_) => NOT_CONNECTED,
            Error::FileNotAvailable(_) => FILE_NOT_AVAILABLE,
            Error::UploadFailed(_) => UPLOAD_FAILED,
            Error::DownloadFailed(_) => DOWNLOAD_FAILED,
            Error::FileTooLarge { .. } => FILE_TOO_LARGE,
            Error::StorageAccessDenied(_) => STORAGE_ACCESS_DENIED,
            Error::SaveFailed(_) => SAVE_FAILED,
            Error::NotPermitted(_) => NOT_PERMITTED,
            Error::TooManyFiles { .. } => TOO_MANY_FILES,
            Error::AlreadyCompleted(_) => ALREADY_COMPLETED,
            Error::InvalidJob(_) => INVALID_JOB,
            Error::PossiblyCorrupt(_) => POSSIBLY_CORRUPT,
            Error::AlreadyDownloaded(_) => ALREADY_DOWNLOADED,
            Error::OfferExpired(_) => OFFER_EXPIRED,
            Error::Declined => DECLINED,
            Error::PeerGone(_) => PEER_GONE,
            Error::CancelledByPeer => CANCELLED_BY_PEER,
            Error::Protocol(_) => PROTOCOL_VIOLATION,
            Error::UnsupportedVersion(_) => UNSUPPORTED_VERSION,
            Error::ConnectionFailed(_) => CONNECTION_FAILED,
            Error::InvalidArgument(_) => INVALID_ARGUMENT,
            Error::CancelledLocally => CANCELLED,
            Error::TooManyJobs(_) => TOO_MANY_JOBS,
            Error::PeerAuthFailed(_) => PEER_AUTH_FAILED,
            Error::CodeBurnt(_) => CODE_BURNT,
            Error::RecipientNotFound(_) => RECIPIENT_NOT_FOUND,
            Error::Remote { code, .. } => *code,
        }
    }

    /// Whether this failure to start a download refuses the offer for good ([`crate::Peer::download`]: the file is too
    /// large, the destination cannot be written, the offer is malformed): the sender is
    /// told, the offer is gone, and a `download-failed` event (without a job ID) reports
    /// it and ends the file for its share's tally. Other failures to start (an expired or
    /// unknown offer, a file being downloaded already …) change nothing.
    pub fn refuses_offer(&self) -> bool {
        use codes::*;
        matches!(
            self.code(),
            FILE_TOO_LARGE | STORAGE_ACCESS_DENIED | SAVE_FAILED | PROTOCOL_VIOLATION
        )
    }

    /// Rebuild an error from a code and message received from the other side.
    pub fn from_remote(code: u16, message: impl Into<String>) -> Self {
        Error::Remote {
            code,
            message: message.into(),
        }
    }
}

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
