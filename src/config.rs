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
    /// More signaling servers of the same deployment (sharing sessions, e.g. nodes on
    /// Redis), in the order they are tried after `server`: when joining, a server that
    /// cannot be reached or answers 7012 (draining) or 7017 (unavailable) passes the join
    /// on to the next; after a lost connection, the peer rejoins through them in turn.
    /// Default empty.
    pub fallback_servers: Vec<String>,
    /// How long the peer keeps trying to get back to signaling after losing its
    /// connection ([`crate::Event::SignalingLost`]), rejoining its session with the same
    /// client ID; once it has passed, [`crate::Event::Error`] 1180 says signaling is gone
    /// for good. Peer connections and transfers carry on meanwhile. Default 30 s; zero
    /// never retries (1180 at once, as soon as the connection is lost).
    pub signaling_retry_window: Duration,
    /// CA certificates (a PEM file) trusted for a `wss://` server in addition to the
    /// system's roots, e.g. the certificate of a server with a self-signed one (default
    /// `None`: the system's roots only). Unreadable or without a certificate: 6008.
    pub ca_file: Option<PathBuf>,
    /// The code of the session to join, `ROUTE-SECRET` (e.g. `7-orbit-canvas-tiger`,
    /// grammar in `docs/PROTOCOL.md`); `None` creates a new session with a
    /// server-chosen route and a fresh secret of [`PeerConfig::secret_words`] words.
    /// Only the route is sent to the signaling server.
    pub session: Option<String>,
    /// Create the session under the route of `session` (8 to 64 characters) instead of
    /// joining it; refused (7015) if it exists.
    pub create_session: bool,
    /// Words of a generated secret (11 bits each).
    pub secret_words: usize,
    /// Failed peer authentications after which the code is burnt
    /// ([`crate::Event::CodeBurnt`]): nobody new is admitted.
    pub max_auth_failures: u32,
    /// Display name shown to the other peers.
    pub name: String,
    /// Session password (required to join a session created with one).
    pub password: Option<String>,
    /// WebRTC transport settings (bind address, buffers, relay policy).
    pub rtc: RtcSettings,
    /// Where `auto_accept` downloads go.
    pub download_dir: PathBuf,
    /// Directory downloads replace an existing file of the same name, atomically and only
    /// once verified, instead of taking a numbered name (`a (1).txt`). Default `false`.
    pub overwrite: bool,
    /// Largest file this peer sends or accepts (1185 above it).
    pub max_file_size: u64,
    /// Largest file accepted into memory (1185 above it).
    pub max_memory_download: u64,
    /// Most files in one `send_files` or `send_paths` call (5092 above it).
    pub max_files_per_request: usize,
    /// Default lifetime of an offer.
    pub offer_ttl: Duration,
    /// Download every offer into `download_dir` as soon as it is available.
    pub auto_accept: bool,
    /// What the peer does in its session: [`crate::Role::SendOnly`] for a peer that only
    /// shares files (its `hello` says so; it takes none).
    pub role: crate::peer::Role,
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
            fallback_servers: Vec::new(),
            signaling_retry_window: Duration::from_secs(30),
            ca_file: None,
            session: None,
            create_session: false,
            secret_words: crate::proto::code::DEFAULT_WORDS,
            max_auth_failures: 3,
            name: "peer".into(),
            password: None,
            rtc: RtcSettings::default(),
            download_dir: PathBuf::from("."),
            overwrite: false,
            max_file_size: 1 << 40,
            max_memory_download: 256 * 1024 * 1024,
            max_files_per_request: 100_000,
            offer_ttl: Duration::from_secs(3600),
            auto_accept: false,
            role: crate::peer::Role::default(),
            rate_limit: None,
            resume_grace: Duration::from_secs(120),
            clock: Clock::system(),
        }
    }

    /// Every signaling server, in the order they are tried: `server`, then
    /// `fallback_servers` (normalized: `ws://HOST:PORT` for a bare `HOST:PORT`; a URL
    /// listed twice is tried once).
    pub fn servers(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::with_capacity(1 + self.fallback_servers.len());
        for url in std::iter::once(&self.server).chain(&self.fallback_servers) {
            let url = crate::signal_client::normalize_url(url);
            if !all.contains(&url) {
                all.push(url);
            }
        }
        all
    }
}
