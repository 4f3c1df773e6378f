//! `peershare-signaling`: the WebSocket signaling server of peershare, and the signaling
//! wire types shared with every client.
//!
//! Clients join a session (by code, optionally password-protected), learn their client ID,
//! the peers present and the ICE servers to use, get presence events, and exchange WebRTC
//! offers, answers and ICE candidates addressed to one peer. The server relays those
//! opaque payloads; it never sees file contents. It enforces a frame size limit, a
//! per-connection rate limit, a peers-per-session limit and an idle timeout, and answers
//! every refused frame with a coded `error` frame. The wire format is documented in
//! `docs/PROTOCOL.md` ("Signaling").
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use peershare_signaling::{ServerConfig, SignalingServer};
//! let server = SignalingServer::bind(ServerConfig::default()).await?;
//! println!("{}", server.url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`protocol`]: wire types (`ClientMessage`, `ServerMessage`, …), error codes, limits
//!   shared with clients.
//! - `config`: [`ServerConfig`] and its defaults.
//! - `server`: [`SignalingServer`]: the accept loop, connection tasks, draining and
//!   graceful shutdown.
//! - `connection`: one task per connection: handshake, parsing, limits, the client's state
//!   machine; its outbound queue is bounded.
//! - `web`: the browser page (`signaling/web/`, compiled in), `/healthz`, `/readyz` and
//!   `/metrics`, served over HTTP on the same port to requests that are not a WebSocket
//!   upgrade.
//! - `cluster`: sessions shared by several nodes through Redis (`--redis`): the Lua
//!   scripts, the node channel's messages (`wire`), one node's view of its sessions
//!   (`state`, pure logic), the tasks that write to and read from Redis.
//! - `registry`: sessions and their members; join rules, presence events, relay, dropping
//!   slow consumers. One lock, never held across an `.await`.
//! - `ratelimit`: the per-connection token bucket (pure logic, time passed in).
//! - `backoff`: the delay before answering joins after failed ones, per connection and
//!   per client address (pure logic, time passed in).
//! - [`turn`]: TURN REST credentials, and the embedded TURN/STUN relay started with the
//!   server when [`TurnMode::Embedded`] is configured.
//! - [`turn_policy`]: the embedded relay's peer-address policy (deny list, `--turn-allow-peer`
//!   CIDRs) and allocation quotas; pure logic.
//! - `ids`: random session codes and client IDs.
//! - `resume`: resume tokens (`welcome.resume_token`, `join.resume`); pure logic.
//! - [`relay_plane`]: the embedded relay's sockets: batched reads and writes, in-memory
//!   hand-over between allocations.
//! - [`tls`]: TLS termination (`wss://`): [`ServerTls`] (certificate and key from PEM
//!   files, rustls with the ring provider) and the accepted connection's stream.
//! - `error`: `Rejection`, a refused frame's code and message (becomes an `error` frame).
//! - `metrics`: the Prometheus metrics served at `/metrics` (counters on the hot path are
//!   atomics; gauges are read at each scrape).

mod backoff;
pub mod cli;
mod cluster;
mod config;
mod connection;
/// Fuzzing entry point (fuzz/fuzz_targets/signaling_frame.rs); not a stable API.
#[doc(hidden)]
pub use connection::parse_client_frame;
mod error;
mod ids;
mod metrics;
pub mod protocol;
mod ratelimit;
mod registry;
pub mod relay_plane;
mod resume;
mod server;
pub mod tls;
pub mod turn;
pub mod turn_policy;
mod web;

pub use config::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_PEERS_PER_SESSION,
    DEFAULT_RATE_BURST, DEFAULT_RATE_PER_SEC, ServerConfig,
};
pub use protocol::{
    ClientId, ClientMessage, IceServer, MAX_NAME_LEN, PROTOCOL_VERSION, PeerInfo, ServerMessage,
    SignalData,
};
pub use server::SignalingServer;
pub use tls::ServerTls;
pub use turn::{DEFAULT_CREDENTIAL_LIFETIME, DEFAULT_TURN_PORT, TurnConfig, TurnMode};
