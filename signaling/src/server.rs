//! The listening server: accept loop, connection limits, connection tasks, draining and
//! graceful shutdown.
//!
//! A server goes through three [`Phase`]s: serving; draining ([`SignalingServer::drain`]:
//! `/readyz` answers `503`, WebSocket upgrades are answered `503`, every WebSocket client
//! is sent `7012` with a reconnection hint and a Close 1012, page requests, `/healthz`,
//! `/readyz` and `/metrics` are still served); stopping (the listener is closed, the
//! connections left are ended).
//!
//! Every accepted connection takes a slot of [`ConnLimits`] for as long as its task runs:
//! at most `max_connections` in all and `max_connections_per_ip` per IPv4 address or
//! IPv6 /64. A connection over either cap is answered with a fixed `503` (one
//! non-blocking write) and closed at once, before any task or buffer is allocated for it.
//! With TLS the answer needs a TLS handshake first: it is sent by a task, bounded by the
//! upgrade deadline, and at most [`MAX_TLS_REFUSALS`] of them run at once (a connection
//! over a cap beyond those is closed without an answer).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::connection::{self, Shared, wait_phase};
use crate::metrics::Refusal;
use crate::registry::Registry;
use crate::turn::{EmbeddedRelay, TurnIssuer, TurnMode, random_secret};

/// How long [`SignalingServer::shutdown`] and dropping the server wait for connection
/// tasks to finish before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where a server is in its life; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting connections and joins.
    Serving,
    /// Telling clients to reconnect elsewhere; still answering HTTP requests.
    Draining,
    /// The listener is closed; connections left are ended.
    Stopping,
}
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The whole answer to a connection over a cap.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Connection: close\r\nContent-Length: 0\r\nRetry-After: 10\r\n\r\n";
/// Most connections over a cap answered over TLS at once (each needs a TLS handshake and
/// a task); beyond them such connections are closed without an answer.
pub(crate) const MAX_TLS_REFUSALS: usize = 64;
/// Most bytes of a refused TLS client's request read (and dropped) before the answer.
const MAX_REFUSED_REQUEST: usize = 8 * 1024;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverCap {
    Total,
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only keys with a nonzero count; at most `max_total` entries.
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection caps and the connections currently held.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_ip: usize,
}

/// One held connection slot; given back when dropped (also when its task is aborted).
#[derive(Debug)]
pub(crate) struct ConnSlot {
    limits: Arc<ConnLimits>,
    key: IpAddr,
}

/// The per-IP key of a peer address: the IPv4 address (also when IPv4-mapped), or the
/// /64 prefix of an IPv6 address, which one subscriber usually gets whole.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            counts: Mutex::new(Counts::default()),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Plain counter updates: never inconsistent, even after a panic elsewhere.
        crate::relay_plane::lock(&self.counts)
    }

    /// Take a slot for a connection from `ip`, unless a cap is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, OverCap> {
        let key = ip_key(ip);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(OverCap::Total);
        }
        let per_ip = counts.per_ip.entry(key).or_insert(0);
        if *per_ip >= self.max_per_ip {
            return Err(OverCap::PerIp);
        }
        *per_ip += 1;
        counts.total += 1;
        Ok(ConnSlot {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Connections held now (for tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.total, counts.per_ip.len())
    }

    /// Connections held now, all clients together (for `/metrics`).
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

impl ConnSlot {
    /// The client's key under the per-IP cap: its IPv4 address or IPv6 /64.
    pub fn key(&self) -> IpAddr {
        self.key
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.key);
            }
        }
    }
}

/// A running signaling server.
///
/// Dropping it starts a shutdown without waiting for it; [`SignalingServer::shutdown`]
/// waits for the connections to be closed.
#[derive(Debug)]
pub struct SignalingServer {
    local_addr: SocketAddr,
    phase_tx: watch::Sender<Phase>,
    /// `true` while draining and no connection is left.
    idle_rx: watch::Receiver<bool>,
    accept_task: Option<JoinHandle<usize>>,
    /// The embedded TURN relay, when configured.
    relay: Option<Arc<EmbeddedRelay>>,
    /// Connections are TLS (`wss://`).
    tls: bool,
}

impl SignalingServer {
    /// Bind `config.listen`, start the embedded TURN relay if `config.turn` asks for it,
    /// spawn the accept loop on the current tokio runtime, and return.
    pub async fn bind(config: ServerConfig) -> std::io::Result<SignalingServer> {
        let listener = listen(config.listen, config.backlog)?;
        Self::serve(listener, config).await
    }

    async fn serve(
        listener: TcpListener,
        config: ServerConfig,
    ) -> std::io::Result<SignalingServer> {
        let local_addr = listener.local_addr()?;
        let lifetime = config.turn.credential_lifetime;
        let registry = Arc::new(Registry::new(
            config.effective_max_peers(),
            config.max_queued_bytes,
        ));
        let cluster = match &config.redis {
            Some(url) => Some(
                Cluster::start(url, config.effective_max_peers(), registry.budget())
                    .await
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let members: crate::turn::MemberCheck = match &cluster {
            Some(c) => {
                let cluster = Arc::downgrade(c);
                Arc::new(move |client: &str| cluster.upgrade().is_some_and(|c| c.is_member(client)))
            }
            None => {
                let registry = Arc::downgrade(&registry);
                Arc::new(move |client: &str| {
                    registry.upgrade().is_some_and(|r| r.is_member(client))
                })
            }
        };
        let (relay, issuer) = match &config.turn.mode {
            TurnMode::Disabled => (None, None),
            TurnMode::External { urls, secret } => (
                None,
                Some(TurnIssuer::external(urls, secret.clone(), lifetime)),
            ),
            TurnMode::Embedded {
                listen,
                public_ip,
                secret,
            } => {
                let secret = secret.clone().unwrap_or_else(random_secret);
                let relay =
                    EmbeddedRelay::start(*listen, *public_ip, &secret, &config.turn, members)
                        .await
                        .map_err(|e| {
                            std::io::Error::new(e.kind(), format!("TURN relay on {listen}: {e}"))
                        })?;
                let issuer = TurnIssuer::embedded(relay.advertised(), secret, lifetime);
                (Some(Arc::new(relay)), Some(issuer))
            }
        };
        let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
        let (idle_tx, idle_rx) = watch::channel(false);
        let limits = ConnLimits::new(config.max_connections, config.max_connections_per_ip);
        let tls = config.tls.is_some();
        let shared = Arc::new(Shared::new(
            config,
            issuer,
            registry,
            cluster,
            Arc::clone(&limits),
            relay.clone(),
            phase_rx.clone(),
        ));
        let span = tracing::info_span!("signaling", addr = %local_addr);
        let accept_task =
            tokio::spawn(accept_loop(listener, shared, limits, phase_rx, idle_tx).instrument(span));
        tracing::info!(addr = %local_addr, "signaling server listening");
        Ok(SignalingServer {
            local_addr,
            phase_tx,
            idle_rx,
            accept_task: Some(accept_task),
            relay,
            tls,
        })
    }

    /// The address of the embedded TURN/STUN relay as advertised to clients, if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|r| r.advertised())
    }

    /// The bound address (with the actual port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to: `ws://IP:PORT`, or `wss://IP:PORT` with TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.local_addr)
    }

    /// `wss` with TLS, else `ws`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "wss" } else { "ws" }
    }

    /// Start draining, and return at once: `/readyz` answers `503` from now on, a
    /// WebSocket upgrade is answered `503`, and every WebSocket client gets the frames
    /// already queued for it, then error `7012` with `retry_after_ms` and a Close frame
    /// (1012, service restart). Page requests, `/healthz` and `/metrics` are still
    /// answered until [`SignalingServer::shutdown_within`] closes the listener.
    /// Idempotent.
    pub fn drain(&self) {
        let started = self.phase_tx.send_if_modified(|phase| {
            let was = *phase;
            *phase = was.max(Phase::Draining);
            was == Phase::Serving
        });
        if started {
            tracing::info!("draining");
        }
    }

    /// Whether the server drains (or stops).
    pub fn is_draining(&self) -> bool {
        *self.phase_tx.borrow() >= Phase::Draining
    }

    /// Drain (if not already draining), wait until no connection is left or `deadline`
    /// has passed, then close the listener, end the connections left and stop the
    /// embedded TURN relay (closing its allocations). Returns how many connections were
    /// still open at the deadline and ended.
    pub async fn shutdown_within(mut self, deadline: Duration) -> usize {
        self.drain();
        let mut idle = self.idle_rx.clone();
        let _ = tokio::time::timeout(deadline, idle.wait_for(|idle| *idle)).await;
        self.stop().await
    }

    /// Stop accepting, send every client error `7012` and a Close frame (1012), wait
    /// (about 2 s at most) for the connections to end, then stop the embedded TURN relay
    /// (closing its allocations).
    pub async fn shutdown(self) {
        let _ = self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    /// Close the listener, end the connections left (at once after a drain, else after
    /// up to [`SHUTDOWN_GRACE`]) and stop the relay. Returns how many were aborted.
    async fn stop(&mut self) -> usize {
        self.phase_tx.send_replace(Phase::Stopping);
        let mut aborted = 0;
        if let Some(task) = self.accept_task.take() {
            let bound = SHUTDOWN_GRACE + Duration::from_millis(500);
            if let Ok(Ok(n)) = tokio::time::timeout(bound, task).await {
                aborted = n;
            }
        }
        if let Some(relay) = self.relay.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, relay.close()).await;
        }
        aborted
    }
}

impl Drop for SignalingServer {
    fn drop(&mut self) {
        self.phase_tx.send_replace(Phase::Stopping);
        if let Some(relay) = self.relay.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move { relay.close().await });
        }
    }
}

/// A listening socket on `addr` with a queue of `backlog` connections (as tokio's `bind`:
/// `SO_REUSEADDR`, non-blocking).
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    mut phase: watch::Receiver<Phase>,
    idle: watch::Sender<bool>,
) -> usize {
    let mut tasks = JoinSet::new();
    let refusals = Arc::new(Semaphore::new(MAX_TLS_REFUSALS));
    let mut drained = false;
    loop {
        if drained {
            idle.send_if_modified(|was| std::mem::replace(was, tasks.is_empty()) != *was);
        }
        tokio::select! {
            biased;
            () = wait_phase(&mut phase, if drained { Phase::Stopping } else { Phase::Draining }) => {
                if *phase.borrow() >= Phase::Stopping {
                    break;
                }
                drained = true;
                tracing::info!(connections = tasks.len(), "draining");
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match limits.try_acquire(peer.ip()) {
                        Ok(slot) => slot,
                        Err(cap) => {
                            shared.metrics.refused(match cap {
                                OverCap::Total => Refusal::Total,
                                OverCap::PerIp => Refusal::PerIp,
                            });
                            match &shared.tls {
                                None => refuse(stream, peer, cap),
                                Some(acceptor) => match Arc::clone(&refusals).try_acquire_owned() {
                                    Ok(permit) => {
                                        tasks.spawn(refuse_tls(
                                            stream,
                                            acceptor.clone(),
                                            shared.config.handshake_timeout,
                                            permit,
                                            phase.clone(),
                                        ));
                                        tracing::debug!(%peer, ?cap, "connection over the cap refused");
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, ?cap, "connection over the cap closed");
                                    }
                                },
                            }
                            continue;
                        }
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    let span = tracing::info_span!(
                        "conn",
                        %peer,
                        client_id = tracing::field::Empty,
                        session = tracing::field::Empty,
                    );
                    tasks.spawn(
                        connection::run(stream, slot, Arc::clone(&shared), phase.clone())
                            .instrument(span),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(connections = tasks.len(), "stopping");
    // After a drain the connections left had their chance (until the drain deadline);
    // otherwise (the server handle dropped) they get a short grace to say goodbye.
    let grace = if drained {
        Duration::ZERO
    } else {
        SHUTDOWN_GRACE
    };
    let ended =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    let mut aborted = 0;
    if ended.is_err() {
        aborted = tasks.len();
        tracing::warn!(
            remaining = aborted,
            "aborting connections that did not close in time"
        );
        tasks.shutdown().await;
    }
    idle.send_replace(true);
    tracing::info!("stopped");
    aborted
}

/// Answer a connection over a cap with `503` if the socket takes it at once, and close it.
/// Never waits and allocates nothing per connection.
fn refuse(stream: TcpStream, peer: SocketAddr, cap: OverCap) {
    tracing::debug!(%peer, ?cap, "connection over the cap refused");
    // Discard what already arrived of the request (bounded), so that closing sends a FIN
    // rather than a reset that could destroy the answer before the client reads it.
    let mut scratch = [0u8; 2048];
    for _ in 0..4 {
        match stream.try_read(&mut scratch) {
            Ok(1..) => {}
            _ => break,
        }
    }
    // A fresh socket's send buffer is empty: this writes all of it, or fails at once.
    let _ = stream.try_write(REFUSED_RESPONSE);
    drop(stream);
}

/// Answer a TLS connection over a cap with `503` over TLS, and close it: the TLS
/// handshake, reading the request (up to its end, bounded) and the answer together take at
/// most `deadline`. Holds `_permit` (of the [`MAX_TLS_REFUSALS`]) while it runs.
async fn refuse_tls(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    deadline: Duration,
    _permit: OwnedSemaphorePermit,
    mut phase: watch::Receiver<Phase>,
) {
    let answer = async {
        let mut tls = acceptor.accept(stream).await?;
        // Read the request before answering, so that closing sends a FIN rather than a
        // reset that could destroy the answer before the client reads it.
        let mut request = Vec::new();
        let mut buf = [0u8; 2048];
        while request.len() < MAX_REFUSED_REQUEST {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let from = request.len().saturating_sub(3);
            request.extend_from_slice(&buf[..n]);
            if request[from..].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        tls.write_all(REFUSED_RESPONSE).await?;
        // close_notify, then FIN.
        tls.shutdown().await
    };
    tokio::select! {
        biased;
        () = wait_phase(&mut phase, Phase::Stopping) => {}
        r = tokio::time::timeout(deadline, answer) => {
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "refusal over TLS failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_cap_refuses_then_frees_on_drop() {
        let limits = ConnLimits::new(2, 10);
        let a = limits.try_acquire("10.0.0.1".parse().unwrap()).unwrap();
        let _b = limits.try_acquire("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            limits.try_acquire("10.0.0.3".parse().unwrap()).unwrap_err(),
            OverCap::Total
        );
        drop(a);
        assert!(limits.try_acquire("10.0.0.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn limits_per_ip_cap_refuses_that_ip_only_and_forgets_idle_ips() {
        let limits = ConnLimits::new(100, 2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let slots: Vec<_> = (0..2).map(|_| limits.try_acquire(ip).unwrap()).collect();
        assert_eq!(limits.try_acquire(ip).unwrap_err(), OverCap::PerIp);
        // The IPv4-mapped form is the same client.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(limits.try_acquire(mapped).unwrap_err(), OverCap::PerIp);
        let other = limits.try_acquire("192.0.2.8".parse().unwrap()).unwrap();
        assert_eq!(limits.held(), (3, 2));
        drop(slots);
        drop(other);
        assert_eq!(limits.held(), (0, 0));
    }

    #[test]
    fn limits_per_ip_cap_counts_an_ipv6_slash_64_as_one_client() {
        let limits = ConnLimits::new(100, 1);
        let _a = limits
            .try_acquire("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert_eq!(
            limits
                .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            OverCap::PerIp
        );
        assert!(
            limits
                .try_acquire("2001:db8:1:3::1".parse().unwrap())
                .is_ok()
        );
    }
}
