//! Server configuration: limits, timeouts and the ICE servers handed out to clients.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::protocol::IceServer;
use crate::tls::ServerTls;
use crate::turn::TurnConfig;

/// Default frame size limit (64 KiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Default maximum number of peers in one session.
pub const DEFAULT_MAX_PEERS_PER_SESSION: usize = 32;
/// Default sustained rate of frames per second and connection.
pub const DEFAULT_RATE_PER_SEC: u32 = 200;
/// Default burst of frames a connection may send at once.
pub const DEFAULT_RATE_BURST: u32 = 400;
/// Default time without any frame after which a connection is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of connections the server holds at once (all clients together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default number of connections held at once from one IPv4 address (or IPv6 /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default time a new TCP connection has to complete the WebSocket upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an upgraded connection has to join a session. As long as the idle
/// timeout, so that by default a silent client is told `7010` once, at the idle timeout.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default length of the listening socket's queue of connections not yet accepted (the
/// kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Default bound of the bytes waiting in all outbound queues together (64 MiB).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Configuration of a [`SignalingServer`](crate::SignalingServer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:0`, an ephemeral loopback port).
    pub listen: SocketAddr,
    /// Largest accepted frame payload in bytes (default 64 KiB). Larger frames are answered
    /// with error `7003` and dropped; frames far above the limit also close the connection.
    pub max_frame_bytes: usize,
    /// Largest number of peers in one session (default 32); one more join gets `7005`.
    /// `0` is treated as `1`.
    pub max_peers_per_session: usize,
    /// Sustained frames per second per connection (default 200); see `rate_burst`.
    pub rate_per_sec: u32,
    /// Token bucket size (default 400). Frames beyond the bucket get `7004` and are
    /// dropped; 100 consecutive rejections close the connection. `0` is treated as `1`.
    pub rate_burst: u32,
    /// Time without any frame from the client (default 60 s) after which the server
    /// sends `7010` and closes the connection.
    pub idle_timeout: Duration,
    /// Connections held at once, all clients together (default 10,000). A connection
    /// accepted above it is answered `503` and closed at once. `0` is treated as `1`.
    pub max_connections: usize,
    /// Connections held at once from one IPv4 address or IPv6 /64 (default 64). A
    /// connection above it is answered `503` and closed at once. `0` is treated as `1`.
    pub max_connections_per_ip: usize,
    /// Time a new TCP connection has to complete the WebSocket upgrade, the TLS handshake
    /// included when `tls` is set (default 10 s); then it is closed without an answer.
    pub handshake_timeout: Duration,
    /// Time an upgraded connection has to join a session (default 10 s), counted from
    /// the upgrade; then the server sends `7010` and closes it
    /// (1000), even if the client kept sending other frames.
    pub join_timeout: Duration,
    /// Bytes waiting in all clients' outbound queues together (default 64 MiB). A client
    /// whose next frame would exceed it is dropped as a slow consumer (`7014`).
    pub max_queued_bytes: usize,
    /// Length of the listening socket's queue of connections the kernel completed and the
    /// server has not accepted yet (default 1024; the kernel caps it at
    /// `net.core.somaxconn`). A burst of connections beyond it waits for SYN retries.
    pub backlog: u32,
    /// ICE servers handed out in every `welcome` (default empty), before the STUN/TURN
    /// entries of `turn`.
    pub ice_servers: Vec<IceServer>,
    /// TURN relay whose per-client credentials go into every `welcome` (default
    /// disabled; `peershare signal` enables the embedded relay).
    pub turn: TurnConfig,
    /// TLS termination (default none: plain `ws://`). When set, every accepted
    /// connection completes a TLS handshake before the WebSocket upgrade, the answers of
    /// the connection caps (`503`) are sent over TLS, and the URL is `wss://`.
    pub tls: Option<ServerTls>,
    /// Keep sessions in Redis at this URL (`redis://HOST:PORT[/DB]`), shared with every
    /// other node started with the same URL (default none: sessions live in this
    /// process). See docs/PROTOCOL.md, "Several nodes".
    pub redis: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_peers_per_session: DEFAULT_MAX_PEERS_PER_SESSION,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            backlog: DEFAULT_BACKLOG,
            ice_servers: Vec::new(),
            turn: TurnConfig::default(),
            tls: None,
            redis: None,
        }
    }
}

impl ServerConfig {
    /// The transport-level limit given to tungstenite: a little above `max_frame_bytes`,
    /// so that moderately oversized frames are still read whole and answered with a coded
    /// `7003` while the connection stays open. Frames above this limit cannot be skipped
    /// safely; they get `7003` and the connection is closed.
    pub(crate) fn hard_frame_limit(&self) -> usize {
        self.max_frame_bytes
            .saturating_add((self.max_frame_bytes / 4).max(4096))
    }

    pub(crate) fn effective_max_peers(&self) -> usize {
        self.max_peers_per_session.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_default_matches_documented_values() {
        let c = ServerConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.max_frame_bytes, 65536);
        assert_eq!(c.max_peers_per_session, 32);
        assert_eq!((c.rate_per_sec, c.rate_burst), (200, 400));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert!(c.ice_servers.is_empty());
        assert_eq!(c.turn.mode, crate::TurnMode::Disabled);
        assert_eq!(c.turn.credential_lifetime, Duration::from_secs(10 * 60));
        assert!(c.tls.is_none());
    }

    #[test]
    fn config_default_connection_limits_match_documented_values() {
        let c = ServerConfig::default();
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_connections_per_ip, 64);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.join_timeout, Duration::from_secs(10));
        assert_eq!(c.max_queued_bytes, 64 * 1024 * 1024);
        assert_eq!(c.backlog, 1024);
    }

    #[test]
    fn config_hard_limit_is_slightly_above_soft_limit() {
        let c = ServerConfig::default();
        assert_eq!(c.hard_frame_limit(), 65536 + 16384);
        let small = ServerConfig {
            max_frame_bytes: 100,
            ..ServerConfig::default()
        };
        assert_eq!(small.hard_frame_limit(), 100 + 4096);
        let huge = ServerConfig {
            max_frame_bytes: usize::MAX,
            ..ServerConfig::default()
        };
        assert_eq!(huge.hard_frame_limit(), usize::MAX);
    }
}
