//! Configuration of a [`crate::Peer`].

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::Clock;
use crate::rtc::RtcSettings;

/// Everything a peer needs to join a session.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Signaling server URL (`ws://HOST:PORT`; a bare `HOST:PORT` works too).
    pub server: String,
    /// Session code to join; `None` creates a new session.
    pub session: Option<String>,
    /// Create the session under `session` if it does not exist yet.
    pub create_session: bool,
    /// Display name shown to the other peers.
    pub name: String,
    /// Session password (required to join a session created with one).
    pub password: Option<String>,
    /// WebRTC transport settings (bind address, buffers, relay policy).
    pub rtc: RtcSettings,
    /// Where `auto_accept` downloads go.
    pub download_dir: PathBuf,
    /// Largest file this peer sends or accepts (1185 above it).
    pub max_file_size: u64,
    /// Largest file accepted into memory (1185 above it).
    pub max_memory_download: u64,
    /// Most files in one `send_files` call (5092 above it).
    pub max_files_per_request: usize,
    /// Default lifetime of an offer.
    pub offer_ttl: Duration,
    /// Download every offer into `download_dir` as soon as it is available.
    pub auto_accept: bool,
    /// Limit on the bytes per second this peer sends and receives, all jobs together.
    pub rate_limit: Option<u64>,
    /// How long jobs wait for a peer whose connection was lost (or who left) to come
    /// back before they fail with 6003.
    pub resume_grace: Duration,
    /// The clock for offer lifetimes and grace periods (tests move it forward).
    pub clock: Clock,
}

impl PeerConfig {
    /// A configuration with defaults, for the signaling server at `server`.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            session: None,
            create_session: false,
            name: "peer".into(),
            password: None,
            rtc: RtcSettings::default(),
            download_dir: PathBuf::from("."),
            max_file_size: 1 << 40,
            max_memory_download: 256 * 1024 * 1024,
            max_files_per_request: 1000,
            offer_ttl: Duration::from_secs(3600),
            auto_accept: false,
            rate_limit: None,
            resume_grace: Duration::from_secs(120),
            clock: Clock::system(),
        }
    }
}
