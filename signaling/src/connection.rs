//! One task per connection: handshake (or one answer of the browser page, `web`), then
//! for a WebSocket frame parsing, limits, and the client's state machine (not joined →
//! joined → gone).
//!
//! The task owns the socket. Frames for this client produced by other connections (presence
//! events, relayed signals) arrive through a bounded queue held by the registry; replies to
//! the client's own frames are written directly. Every refusal is an `error` frame on this
//! connection only.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::error::Rejection;
use crate::metrics::{Metrics, Refusal, Snapshot};
use crate::protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage, codes};
use crate::ratelimit::{TokenBucket, Verdict};
use crate::registry::{JoinRequest, Joined, Outbound, Queued, Registry, encode};
use crate::server::{ConnLimits, ConnSlot, Phase};
use crate::tls::ServerStream;
use crate::turn::{EmbeddedRelay, TurnIssuer};
use crate::web::{self, Prefixed, Response};

/// Capacity of each client's outbound queue (frames from other connections).
pub const OUTBOUND_QUEUE: usize = 256;
/// Most frames of the outbound queue written with one flush.
const WRITE_BATCH_FRAMES: usize = 32;
/// A batch takes no more frames once it holds this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Longest time one write to a client may take before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's Close reply after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Initial read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;
/// Longest `type` echoed back in a 7002 error message.
const MAX_ECHOED_TYPE: usize = 64;
/// The `retry_after_ms` of a `7012` is drawn per client from `0..DRAIN_RETRY_SPREAD_MS`,
/// so that the clients of a draining server do not all reconnect in the same instant.
pub const DRAIN_RETRY_SPREAD_MS: u64 = 5_000;

/// State shared by the accept loop and every connection task.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub registry: Arc<Registry>,
    /// With `--redis`: the sessions shared by the nodes, used instead of `registry`.
    pub cluster: Option<Arc<Cluster>>,
    /// Failed joins per client address (see `backoff`).
    pub join_backoff: std::sync::Mutex<crate::backoff::JoinBackoff>,
    /// Issues the STUN/TURN entries with per-client credentials; `None` without a relay.
    pub turn: Option<TurnIssuer>,
    /// Wraps every accepted connection in TLS before the upgrade; `None` for plain `ws://`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The connection caps and the connections held (read for `/metrics`).
    pub limits: Arc<ConnLimits>,
    /// The embedded TURN relay, if it runs (read for `/metrics`).
    pub relay: Option<Arc<EmbeddedRelay>>,
    /// The server's phase (read for `/readyz`).
    pub phase: watch::Receiver<Phase>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(
        config: ServerConfig,
        turn: Option<TurnIssuer>,
        registry: Arc<Registry>,
        cluster: Option<Arc<Cluster>>,
        limits: Arc<ConnLimits>,
        relay: Option<Arc<EmbeddedRelay>>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        Shared {
            tls: config.tls.as_ref().map(crate::tls::ServerTls::acceptor),
            config,
            registry,
            cluster,
            join_backoff: std::sync::Mutex::default(),
            turn,
            limits,
            relay,
            phase,
            metrics: Metrics::new(),
        }
    }

    /// Why the server does not accept joins now, or `None` when it does: what `/readyz`
    /// tells a load balancer (`503` with this reason, else `200`).
    ///
    /// A node whose sessions live in Redis is not ready while Redis is unreachable.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining() {
            return Some("draining");
        }
        self.cluster.as_ref().and_then(|c| c.not_ready())
    }

    /// Join a session: in this server's registry, or in Redis with `--redis`.
    async fn join_session(
        &self,
        req: JoinRequest<'_>,
        tx: mpsc::Sender<Queued>,
    ) -> Result<Joined, Rejection> {
        match &self.cluster {
            Some(c) => c.join(req, tx).await,
            None => self.registry.join(req, tx),
        }
    }

    /// Relay a `signal` (see [`Registry::relay`]).
    fn relay(
        &self,
        m: &Membership,
        to: &str,
        data: &str,
        received: std::time::Instant,
    ) -> Result<(), Rejection> {
        match &self.cluster {
            Some(c) => c.relay(&m.session, &m.client_id, m.seq, to, data),
            None => self
                .registry
                .relay(&m.session, &m.client_id, m.seq, to, data, received),
        }
    }

    /// Sessions and joined clients (for `/metrics`).
    fn counts(&self) -> (usize, usize) {
        match &self.cluster {
            Some(c) => c.counts(),
            None => self.registry.counts(),
        }
    }

    /// Whether the server drains (or stops): upgrades are then answered `503`.
    pub fn draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Draining
    }

    /// The answer to `/readyz`.
    fn readiness(&self) -> Response {
        match self.not_ready() {
            None => Response::text(200, "ready\n"),
            Some("draining") => Response::text(503, "draining\n"),
            Some(_) => Response::text(503, "not ready\n"),
        }
    }

    /// The answer to `/metrics`.
    fn metrics_text(&self) -> String {
        let (sessions, clients) = self.counts();
        self.metrics.render(Snapshot {
            connections: self.limits.total(),
            clients,
            sessions,
            turn: self.relay.as_ref().map(|r| r.stats()),
            redis_dropped: self.cluster.as_ref().map_or((0, 0), |c| c.dropped()),
        })
    }

    /// The welcome's ICE servers for `client_id`: the configured ones, then the relay's.
    fn ice_servers_for(&self, client_id: &str) -> Vec<crate::protocol::IceServer> {
        let mut servers = self.config.ice_servers.clone();
        if let Some(turn) = &self.turn {
            servers.extend(turn.ice_servers(client_id));
        }
        servers
    }
}

/// Resolves once the server has reached `phase` (or the server handle is gone).
pub(crate) async fn wait_phase(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|now| *now >= phase).await;
}

/// A session membership; leaving the session when dropped, so that it also happens when the
/// task is aborted.
struct Membership {
    shared: Arc<Shared>,
    session: String,
    client_id: String,
    seq: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let left = match &self.shared.cluster {
            Some(c) => c.leave(
                &self.session,
                &self.client_id,
                self.seq,
                self.shared.draining(),
            ),
            None => self
                .shared
                .registry
                .leave(&self.session, &self.client_id, self.seq),
        };
        if left {
            tracing::info!("left session");
        }
    }
}

/// What the read loop does after handling one frame.
enum Flow {
    Continue,
    Stop,
}

/// A `signal` frame with its `data` as the client sent it.
#[derive(Debug, serde::Deserialize)]
struct SignalFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    to: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// A well-formed `signal` frame, parsed without building its `data`; `None` for any other
/// frame (a `signal` with a field missing or ill-typed, a key given twice, invalid JSON,
/// not an object, another type), which [`parse_client_frame`] then parses: a `signal`
/// among them (one that gives `type`, `to` or `data` twice) is refused with
/// [`unrelayable_signal`], never relayed, so that `data` is always relayed as sent.
fn parse_signal(text: &str) -> Option<SignalFrame<'_>> {
    // serde also reads a struct from a JSON array (`["signal", "ID", {}]`); a frame is
    // an object.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return None;
    }
    serde_json::from_str::<SignalFrame<'_>>(text)
        .ok()
        .filter(|f| f.kind == "signal")
}

/// The refusal (`7001`) of a `signal` frame that [`parse_client_frame`] accepts but
/// [`parse_signal`] does not: a key given twice, of which a JSON value keeps the last.
fn unrelayable_signal(text: &str) -> Rejection {
    let why = serde_json::from_str::<SignalFrame<'_>>(text)
        .err()
        .map_or_else(|| "a key is given twice".to_owned(), |e| e.to_string());
    Rejection::new(
        codes::MALFORMED_FRAME,
        format!("malformed signal frame: {why}"),
    )
}

/// Parse one text frame into a client message, telling malformed frames (7001) from
/// well-formed ones of an unknown type (7002).
pub fn parse_client_frame(text: &str) -> Result<ClientMessage, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::new(codes::MALFORMED_FRAME, format!("invalid JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(Rejection::new(
            codes::MALFORMED_FRAME,
            "frame must be a JSON object with a string field \"type\"",
        ));
    };
    if !matches!(kind, "join" | "signal" | "leave" | "ping") {
        let shown: String = kind.chars().take(MAX_ECHOED_TYPE).collect();
        return Err(Rejection::new(
            codes::UNKNOWN_TYPE,
            format!("unknown frame type {shown:?}"),
        ));
    }
    let kind = kind.to_owned();
    serde_json::from_value(value).map_err(|e| {
        Rejection::new(
            codes::MALFORMED_FRAME,
            format!("malformed {kind} frame: {e}"),
        )
    })
}

/// Serve one accepted TCP connection until it closes or the server shuts down. `slot`
/// is its place under the connection caps, given back when this returns.
pub(crate) async fn run(
    stream: TcpStream,
    slot: ConnSlot,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    // Failed joins are counted under the client's key of the connection caps (its IPv4
    // address or IPv6 /64), so a prober cannot escape them by changing addresses there.
    let peer_ip = slot.key();
    let limit = shared.config.hard_frame_limit();
    let ws_config = WebSocketConfig::default()
        // Signaling frames are small; tungstenite allocates this per connection up front
        // (default 128 KiB) and grows it for larger frames.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    // The TLS handshake, if any, counts toward the upgrade deadline.
    // While draining, page requests (`/readyz`, `/metrics` …) are still answered;
    // an upgrade is answered `503`.
    let handshake = timeout(
        shared.config.handshake_timeout,
        upgrade(stream, &shared, ws_config),
    );
    let ws = tokio::select! {
        biased;
        () = wait_phase(&mut phase, Phase::Stopping) => return,
        r = handshake => match r {
            Ok(Some(ws)) => ws,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!("handshake timed out");
                return;
            }
        },
    };
    tracing::debug!("connected");
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let mut conn = Connection {
        bucket: TokenBucket::new(
            shared.config.rate_per_sec,
            shared.config.rate_burst,
            Instant::now().into_std(),
        ),
        shared,
        ws,
        tx: Some(tx),
        rx,
        membership: None,
        desynced: false,
        peer_ip,
        failed_joins: 0,
        superseded: None,
    };
    conn.serve(&mut phase).await;
    tracing::debug!("disconnected");
}

/// The TLS handshake (with `tls`), then the request head: a WebSocket upgrade goes on
/// to the WebSocket handshake, any other request is answered (the page, `web`) and
/// closed. `None` (logged) if the TLS or WebSocket handshake fails or after a page
/// request.
async fn upgrade(
    stream: TcpStream,
    shared: &Shared,
    ws_config: WebSocketConfig,
) -> Option<WebSocketStream<Prefixed<ServerStream>>> {
    let mut stream = match &shared.tls {
        None => ServerStream::Plain(stream),
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => ServerStream::Tls(Box::new(tls)),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return None;
            }
        },
    };
    let head = match web::read_head(&mut stream).await {
        Ok(Some((head, web::Route::Upgrade))) if !shared.draining() => head,
        Ok(Some((_, route))) => {
            let response = match route {
                web::Route::Answer(response) => response,
                web::Route::Ready { head_only } => shared.readiness().for_head(head_only),
                web::Route::Metrics { head_only } => Response::generated(
                    crate::metrics::CONTENT_TYPE,
                    shared.metrics_text(),
                    head_only,
                ),
                web::Route::Upgrade => {
                    shared.metrics.refused(Refusal::Draining);
                    Response::text(503, "draining\n")
                }
            };
            tracing::debug!(status = response.status, "page request answered");
            if let Err(e) = web::answer(&mut stream, &response).await {
                tracing::debug!(error = %e, "page answer failed");
            }
            return None;
        }
        Ok(None) => {
            tracing::debug!("closed before the end of the request head");
            return None;
        }
        Err(e) => {
            tracing::debug!(error = %e, "reading the request head failed");
            return None;
        }
    };
    // The WebSocket handshake reads the request head again.
    let stream = Prefixed::new(head, stream);
    match tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)).await {
        Ok(ws) => Some(ws),
        Err(e) => {
            tracing::debug!(error = %e, "websocket handshake failed");
            None
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    ws: WebSocketStream<Prefixed<ServerStream>>,
    bucket: TokenBucket,
    /// Our queue's sender until it is handed to the registry on join.
    tx: Option<mpsc::Sender<Queued>>,
    rx: mpsc::Receiver<Queued>,
    membership: Option<Membership>,
    /// A frame was refused mid-read: the byte stream no longer parses as frames.
    desynced: bool,
    /// The client's address, for the per-address join back-off.
    peer_ip: IpAddr,
    /// Failed joins on this connection.
    failed_joins: u32,
    /// Set by the registry once another connection resumed our membership.
    superseded: Option<Arc<AtomicBool>>,
}

fn lock_backoff(shared: &Shared) -> std::sync::MutexGuard<'_, crate::backoff::JoinBackoff> {
    // Plain counters: a panic elsewhere cannot leave them inconsistent.
    crate::relay_plane::lock(&shared.join_backoff)
}

fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Connection {
    async fn serve(&mut self, phase: &mut watch::Receiver<Phase>) {
        let idle = self.shared.config.idle_timeout;
        let mut deadline = deadline_after(idle);
        let join_timeout = self.shared.config.join_timeout;
        let join_deadline = deadline_after(join_timeout);
        // TURN credentials are renewed at half their lifetime while the client is joined.
        let renew_every =
            self.shared.turn.as_ref().map(|_| {
                (self.shared.config.turn.credential_lifetime / 2).max(Duration::from_secs(1))
            });
        let mut renew_at: Option<Instant> = None;
        loop {
            let joined = self.membership.is_some();
            if joined && renew_at.is_none() {
                renew_at = renew_every.map(deadline_after);
            }
            tokio::select! {
                biased;
                () = wait_phase(phase, Phase::Draining) => {
                    // What other members sent this client before the drain (a relayed
                    // signal, a peer-left) goes out first.
                    while let Ok(queued) = self.rx.try_recv() {
                        if self.send_queued(queued).await.is_err() {
                            return;
                        }
                    }
                    let retry_after = rand::random_range(0..DRAIN_RETRY_SPREAD_MS);
                    tracing::debug!(retry_after_ms = retry_after, "told to reconnect");
                    self.close_with(
                        Some(
                            Rejection::new(codes::SHUTTING_DOWN, "server is shutting down; reconnect")
                                .with_retry_after(retry_after),
                        ),
                        CloseCode::Restart,
                        "server restarting",
                    )
                    .await;
                    return;
                }
                () = sleep_until(deadline) => {
                    tracing::debug!("idle timeout");
                    self.close_with(
                        Some(Rejection::new(
                            codes::IDLE_TIMEOUT,
                            format!("no frame for {} s", idle.as_secs_f64()),
                        )),
                        CloseCode::Normal,
                        "idle timeout",
                    )
                    .await;
                    return;
                }
                () = sleep_until(join_deadline), if !joined => {
                    tracing::debug!("join timeout");
                    self.close_with(
                        Some(Rejection::new(
                            codes::IDLE_TIMEOUT,
                            format!("no join within {} s", join_timeout.as_secs_f64()),
                        )),
                        CloseCode::Normal,
                        "join timeout",
                    )
                    .await;
                    return;
                }
                () = sleep_until(renew_at.unwrap_or(deadline)), if joined && renew_at.is_some() => {
                    renew_at = renew_every.map(deadline_after);
                    let Some(m) = &self.membership else { continue };
                    let ice_servers = self.shared.ice_servers_for(&m.client_id);
                    if let Flow::Stop = self.reply(&ServerMessage::IceServers { ice_servers }).await {
                        return;
                    }
                }
                out = self.rx.recv(), if joined => match out {
                    Some(queued) => {
                        if self.send_queued(queued).await.is_err() {
                            return;
                        }
                    }
                    None if self.superseded.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) => {
                        tracing::info!("membership resumed on another connection");
                        self.membership = None;
                        self.close_with(
                            Some(Rejection::new(
                                codes::SUPERSEDED,
                                "another connection resumed this membership",
                            )),
                            CloseCode::Normal,
                            "superseded",
                        )
                        .await;
                        return;
                    }
                    None => {
                        // The registry dropped us: our queue overflowed.
                        tracing::info!("dropped as a slow consumer");
                        self.membership = None;
                        self.close_with(
                            Some(Rejection::new(
                                codes::SLOW_CONSUMER,
                                "outbound queue overflowed; removed from the session",
                            )),
                            CloseCode::Policy,
                            "slow consumer",
                        )
                        .await;
                        return;
                    }
                },
                incoming = self.ws.next() => match incoming {
                    None => return,
                    Some(Err(e)) => {
                        self.on_read_error(e).await;
                        return;
                    }
                    Some(Ok(msg)) => {
                        deadline = deadline_after(idle);
                        if let Flow::Stop = self.on_message(msg).await {
                            return;
                        }
                    }
                },
            }
        }
    }

    async fn on_read_error(&mut self, e: WsError) {
        match e {
            WsError::Capacity(e) => {
                tracing::debug!(error = %e, "frame above the hard limit");
                self.desynced = true;
                self.close_with(Some(self.too_large()), CloseCode::Size, "frame too large")
                    .await;
            }
            WsError::Utf8(_) => {
                self.close_with(
                    Some(Rejection::new(
                        codes::MALFORMED_FRAME,
                        "text frame is not valid UTF-8",
                    )),
                    CloseCode::Invalid,
                    "invalid UTF-8",
                )
                .await;
            }
            WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
                | ProtocolError::ReceivedAfterClosing
                | ProtocolError::SendAfterClosing,
            ) => {}
            WsError::Protocol(e) => {
                // A reserved opcode or reserved bits, an unmasked frame, a broken
                // fragment sequence, a bad control frame, …: RFC 6455 wants the
                // connection failed; say why with close code 1002.
                tracing::debug!(error = %e, "websocket protocol violation");
                self.desynced = true;
                let reason = protocol_close_reason(&e);
                self.close_with(None, CloseCode::Protocol, reason).await;
            }
            e => tracing::debug!(error = %e, "read error"),
        }
    }

    fn too_large(&self) -> Rejection {
        Rejection::new(
            codes::FRAME_TOO_LARGE,
            format!("frame exceeds {} bytes", self.shared.config.max_frame_bytes),
        )
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        let received = std::time::Instant::now();
        if let Message::Close(_) = msg {
            // tungstenite queued the Close reply; flush it.
            let _ = timeout(WRITE_TIMEOUT, self.ws.flush()).await;
            return Flow::Stop;
        }
        match self.bucket.check(Instant::now().into_std()) {
            Verdict::Allow => {}
            Verdict::Reject => {
                return self
                    .reply_error(Rejection::new(
                        codes::RATE_LIMITED,
                        "rate limit exceeded; frame dropped",
                    ))
                    .await;
            }
            Verdict::Disconnect => {
                tracing::info!(
                    strikes = self.bucket.strikes(),
                    "disconnected for sustained rate limit abuse"
                );
                self.close_with(
                    Some(Rejection::new(
                        codes::RATE_LIMITED,
                        "rate limit exceeded repeatedly; closing",
                    )),
                    CloseCode::Policy,
                    "rate limit",
                )
                .await;
                return Flow::Stop;
            }
        }
        let max = self.shared.config.max_frame_bytes;
        if let Message::Text(_) | Message::Binary(_) = msg {
            self.shared.metrics.frame_received();
        }
        match msg {
            Message::Text(text) if text.len() > max => self.reply_error(self.too_large()).await,
            Message::Binary(bin) if bin.len() > max => self.reply_error(self.too_large()).await,
            Message::Text(text) => {
                // The hot path: a well-formed `signal`, its `data` kept as text.
                if let Some(signal) = parse_signal(text.as_str()) {
                    return self
                        .on_signal(&signal.to, signal.data.get(), received)
                        .await;
                }
                match parse_client_frame(text.as_str()) {
                    Ok(m) => self.on_client_message(m, text.as_str()).await,
                    Err(rej) => self.reply_error(rej).await,
                }
            }
            Message::Binary(_) => {
                self.reply_error(Rejection::new(
                    codes::MALFORMED_FRAME,
                    "binary frames are not supported; send JSON text frames",
                ))
                .await
            }
            // Pings are answered by tungstenite; pongs only count as activity.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {
                Flow::Continue
            }
        }
    }

    /// A frame other than a `signal` the fast path took; `text` is the frame as received.
    async fn on_client_message(&mut self, msg: ClientMessage, text: &str) -> Flow {
        match msg {
            ClientMessage::Ping => self.reply(&ServerMessage::Pong).await,
            ClientMessage::Join { .. } if self.membership.is_some() => {
                self.shared.metrics.join_refused(codes::BAD_STATE);
                self.reply_error(Rejection::new(codes::BAD_STATE, "already joined a session"))
                    .await
            }
            ClientMessage::Join {
                version,
                session,
                name,
                password,
                create,
                relay_only,
                resume,
            } => {
                if version != PROTOCOL_VERSION {
                    self.shared.metrics.join_refused(codes::UNSUPPORTED_VERSION);
                    return self
                        .reply_error(Rejection::new(
                            codes::UNSUPPORTED_VERSION,
                            format!(
                                "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
                            ),
                        ))
                        .await;
                }
                let req = JoinRequest {
                    session: session.as_deref(),
                    create,
                    name: &name,
                    password: password.as_deref(),
                    relay_only,
                    resume: resume.as_ref(),
                };
                self.join(req).await
            }
            // Only frames the fast path (`parse_signal`) did not take: with a key given
            // twice. Their `data` could not be relayed as sent.
            ClientMessage::Signal { .. } => self.reply_error(unrelayable_signal(text)).await,
            ClientMessage::Leave => {
                if self.membership.is_none() {
                    return self.reply_error(not_joined()).await;
                }
                self.membership = None;
                self.close_with(None, CloseCode::Normal, "left").await;
                Flow::Stop
            }
        }
    }

    /// Relay `data` (the JSON text of `signal.data`, relayed byte for byte) to `to`.
    async fn on_signal(&mut self, to: &str, data: &str, received: std::time::Instant) -> Flow {
        let Some(m) = &self.membership else {
            return self.reply_error(not_joined()).await;
        };
        if !data.trim_start().starts_with('{') {
            return self
                .reply_error(Rejection::new(
                    codes::MALFORMED_FRAME,
                    "signal data must be a JSON object",
                ))
                .await;
        }
        match self.shared.relay(m, to, data, received) {
            Ok(()) => {
                self.shared.metrics.signal_relayed();
                Flow::Continue
            }
            Err(rej) => self.reply_error(rej).await,
        }
    }

    async fn join(&mut self, req: JoinRequest<'_>) -> Flow {
        let Some(tx) = self.tx.clone() else {
            return self.reply_error(not_joined()).await;
        };
        // After failed joins, answers come slower (per connection and per address), so
        // session codes and passwords cannot be probed at the rate limit.
        let delay = {
            let by_ip = lock_backoff(&self.shared).delay(self.peer_ip, Instant::now().into_std());
            by_ip.max(crate::backoff::delay_after(self.failed_joins))
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let joined = match self.shared.join_session(req, tx).await {
            Ok(j) => j,
            Err(rej) => {
                self.shared.metrics.join_refused(rej.code);
                if matches!(
                    rej.code,
                    codes::SESSION_NOT_FOUND | codes::UNAUTHORIZED | codes::SESSION_EXISTS
                ) {
                    self.failed_joins = self.failed_joins.saturating_add(1);
                    lock_backoff(&self.shared).failed(self.peer_ip, Instant::now().into_std());
                }
                return self.reply_error(rej).await;
            }
        };
        // Only the registry may hold our sender now, so that dropping us closes the queue.
        self.tx = None;
        self.shared.metrics.joined();
        let span = tracing::Span::current();
        span.record("client_id", joined.client_id.as_str());
        span.record("session", joined.session.as_str());
        tracing::info!(peers = joined.peers.len(), "joined session");
        self.membership = Some(Membership {
            shared: Arc::clone(&self.shared),
            session: joined.session.clone(),
            client_id: joined.client_id.clone(),
            seq: joined.seq,
        });
        self.superseded = Some(joined.superseded);
        // Written before the queue is polled again, so `welcome` precedes any presence
        // event or signal that other members produce from now on.
        let ice_servers = self.shared.ice_servers_for(&joined.client_id);
        self.reply(&ServerMessage::Welcome {
            session: joined.session,
            client_id: joined.client_id,
            peers: joined.peers,
            ice_servers,
            resume_token: Some(joined.resume_token),
        })
        .await
    }

    async fn reply(&mut self, msg: &ServerMessage) -> Flow {
        match self.send_frame(encode(msg)).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    async fn reply_error(&mut self, rej: Rejection) -> Flow {
        tracing::debug!(code = rej.code, message = %rej.message, "refused frame");
        self.shared.metrics.rejected(rej.code);
        self.reply(&rej.to_message()).await
    }

    /// Write a frame another connection queued for this client, with the frames queued
    /// behind it (at most [`WRITE_BATCH_FRAMES`] and about [`WRITE_BATCH_BYTES`]) in one
    /// flush: a burst (an offer and its candidates) costs one write instead of one per
    /// frame. A relayed `signal`'s latency is measured once it is written. The frames keep
    /// their bytes charged to the server's budget until then.
    async fn send_queued(&mut self, first: Queued) -> Result<(), ()> {
        let mut rest: Vec<Queued> = Vec::new();
        let written = timeout(WRITE_TIMEOUT, async {
            self.ws.feed(Message::Text(first.frame().clone())).await?;
            let mut bytes = first.frame().len();
            while rest.len() + 1 < WRITE_BATCH_FRAMES && bytes < WRITE_BATCH_BYTES {
                let Ok(next) = self.rx.try_recv() else { break };
                bytes += next.frame().len();
                self.ws.feed(Message::Text(next.frame().clone())).await?;
                rest.push(next);
            }
            self.ws.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                return Err(());
            }
            Err(_) => {
                tracing::info!("write timed out; dropping client");
                return Err(());
            }
        }
        for queued in std::iter::once(&first).chain(&rest) {
            if let Some(received) = queued.received() {
                self.shared.metrics.relay_latency(received.elapsed());
            }
        }
        Ok(())
    }

    async fn send_frame(&mut self, frame: Outbound) -> Result<(), ()> {
        match timeout(WRITE_TIMEOUT, self.ws.send(Message::Text(frame))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                Err(())
            }
            Err(_) => {
                tracing::info!("write timed out; dropping client");
                Err(())
            }
        }
    }

    /// Optionally send an error frame, then a Close frame, and wait (bounded) for the
    /// client's Close reply.
    async fn close_with(&mut self, error: Option<Rejection>, code: CloseCode, reason: &str) {
        if let Some(rej) = error {
            self.shared.metrics.rejected(rej.code);
            if self.send_frame(encode(&rej.to_message())).await.is_err() {
                return;
            }
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if !matches!(
            timeout(WRITE_TIMEOUT, self.ws.close(Some(frame))).await,
            Ok(Ok(()))
        ) {
            return;
        }
        if self.desynced {
            // The frame stream cannot be parsed any more. Drain raw bytes instead, so that
            // the socket is not dropped with unread data (which would reset the connection
            // and could destroy the error and Close frames before the client reads them).
            let stream = self.ws.get_mut();
            let _ = stream.shutdown().await;
            let mut buf = vec![0u8; 16 * 1024];
            let _ = timeout(CLOSE_GRACE, async {
                while let Ok(1..) = stream.read(&mut buf).await {}
            })
            .await;
            return;
        }
        let _ = timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The Close reason (at most 123 bytes) for a protocol violation.
fn protocol_close_reason(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::UnmaskedFrameFromClient => "unmasked client frame",
        ProtocolError::UnknownDataFrameType(_)
        | ProtocolError::UnknownControlFrameType(_)
        | ProtocolError::InvalidOpcode(_) => "reserved opcode",
        ProtocolError::NonZeroReservedBits => "reserved bits set",
        _ => "protocol error",
    }
}

fn not_joined() -> Rejection {
    Rejection::new(codes::BAD_STATE, "join a session first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_invalid_json_is_malformed() {
        for raw in ["", "{", "not json", "{\"type\":\"ping\"", "\u{0}"] {
            assert_eq!(
                parse_client_frame(raw).unwrap_err().code,
                codes::MALFORMED_FRAME,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn parse_missing_or_non_string_type_is_malformed() {
        for raw in [
            "{}",
            "[]",
            "42",
            "null",
            r#"{"type":7}"#,
            r#"{"kind":"ping"}"#,
        ] {
            assert_eq!(
                parse_client_frame(raw).unwrap_err().code,
                codes::MALFORMED_FRAME,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn parse_unknown_type_is_unknown_type() {
        let e = parse_client_frame(r#"{"type":"subscribe","topic":"x"}"#).unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_TYPE);
        assert!(e.message.contains("subscribe"));
        let long = format!(r#"{{"type":"{}"}}"#, "y".repeat(10_000));
        let e = parse_client_frame(&long).unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_TYPE);
        assert!(e.message.len() < 200);
    }

    #[test]
    fn parse_known_type_with_missing_fields_is_malformed() {
        for raw in [
            r#"{"type":"signal","data":{}}"#,
            r#"{"type":"join","version":1,"session":null}"#,
            r#"{"type":"join","version":"1","session":null,"name":"a"}"#,
        ] {
            assert_eq!(
                parse_client_frame(raw).unwrap_err().code,
                codes::MALFORMED_FRAME,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn parse_signal_takes_well_formed_signals_only() {
        let f = parse_signal(r#"{"type":"signal","to":"a\u0062c","data":{"k": [1, 2]},"x":0}"#)
            .expect("a signal");
        assert_eq!((&*f.to, f.data.get()), ("abc", r#"{"k": [1, 2]}"#));
        for other in [
            r#"{"type":"ping"}"#,
            r#"{"type":"join","to":"a","data":{}}"#,
            r#"{"type":"signal","data":{}}"#,
            r#"{"type":"signal","to":7,"data":{}}"#,
            r#"{"type":"signal","to":"a","to":"b","data":{}}"#,
            r#"{"type":"signal","to":"a","data":{}} x"#,
            r#"{"type":"signal","to":"a","data":{"#,
            r#"["signal","a",{}]"#,
            r#" ["signal","a",{}]"#,
        ] {
            assert!(parse_signal(other).is_none(), "{other}");
        }
        assert!(parse_signal(" \r\n\t{\"type\":\"signal\",\"to\":\"a\",\"data\":{}}").is_some());
        // Escapes are checked for form only: a lone surrogate (valid JSON) is relayed.
        assert!(parse_signal(r#"{"type":"signal","to":"a","data":{"s":"\ud800"}}"#).is_some());
        assert!(parse_signal(r#"{"type":"signal","to":"a","data":{"s":"\x"}}"#).is_none());
        // Not an object: taken, and refused by the connection with 7001.
        assert_eq!(
            parse_signal(r#"{"type":"signal","to":"a","data":[1]}"#)
                .map(|f| f.data.get().to_string()),
            Some("[1]".to_string())
        );
    }

    #[test]
    fn unrelayable_signal_key_given_twice_is_7001_naming_the_key() {
        for (raw, key) in [
            (
                r#"{"type":"signal","to":"a","data":{"x":1},"data":{"x":2}}"#,
                "data",
            ),
            (r#"{"type":"signal","to":"a","to":"b","data":{}}"#, "to"),
            (
                r#"{"type":"ping","type":"signal","to":"a","data":{}}"#,
                "type",
            ),
        ] {
            // A JSON value keeps the last key: a signal, which the fast path refused.
            assert!(matches!(
                parse_client_frame(raw),
                Ok(ClientMessage::Signal { .. })
            ));
            assert!(parse_signal(raw).is_none(), "{raw}");
            let rej = unrelayable_signal(raw);
            assert_eq!(rej.code, codes::MALFORMED_FRAME);
            assert!(
                rej.message.contains(&format!("duplicate field `{key}`")),
                "{}",
                rej.message
            );
        }
    }

    #[test]
    fn parse_valid_frames_ignore_unknown_fields() {
        assert_eq!(
            parse_client_frame(r#"{"type":"ping","extra":true}"#).unwrap(),
            ClientMessage::Ping
        );
        assert!(matches!(
            parse_client_frame(r#"{"type":"signal","to":"abc","data":{"kind":"offer","sdp":""}}"#)
                .unwrap(),
            ClientMessage::Signal { .. }
        ));
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Whatever a client sends as a text frame: no panic; a refusal is 7001 or 7002;
        /// what is accepted survives a serde round trip unchanged.
        #[test]
        fn parse_client_frame_random_frames_round_trip_or_refuse_with_7001_7002(
            ty in proptest::sample::select(vec!["join", "signal", "leave", "ping", "bogus"]),
            fields in proptest::collection::vec((
                proptest::sample::select(vec![
                    "version", "session", "name", "password", "create", "relay_only", "to",
                    "data",
                ]),
                proptest::prop_oneof![
                    proptest::prelude::any::<u32>().prop_map(|n| serde_json::json!(n)),
                    proptest::prelude::any::<bool>().prop_map(|b| serde_json::json!(b)),
                    ".{0,16}".prop_map(|s| serde_json::json!(s)),
                    proptest::strategy::Just(serde_json::Value::Null),
                    proptest::prelude::any::<f64>().prop_map(|f| serde_json::json!({"x": f})),
                ],
            ), 0..8),
            raw in proptest::option::of(".{0,48}"),
        ) {
            let text = match raw {
                Some(raw) => raw,
                None => {
                    let mut obj = serde_json::Map::new();
                    obj.insert("type".into(), serde_json::json!(ty));
                    for (k, v) in fields {
                        obj.insert(k.into(), v);
                    }
                    Value::Object(obj).to_string()
                }
            };
            match parse_client_frame(&text) {
                Ok(msg) => {
                    let again: ClientMessage = serde_json::from_str(
                        &serde_json::to_string(&msg).expect("serializes"),
                    )
                    .expect("parses back");
                    prop_assert_eq!(again, msg);
                }
                Err(rej) => prop_assert!(
                    [codes::MALFORMED_FRAME, codes::UNKNOWN_TYPE].contains(&rej.code),
                    "{}", rej.code
                ),
            }
        }
    }
}
