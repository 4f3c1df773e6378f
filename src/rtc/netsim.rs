//! An in-process, seeded network simulator under the WebRTC stack.
//!
//! [`NetworkModel`] is a shared handle. Put it in [`RtcSettings::network`] (on every peer
//! that should sit behind the simulated network) and `build_peer_connection` wraps the
//! connection's `webrtc` runtime in a [`SimRuntime`]: every UDP socket the stack opens
//! (host candidates, and through them STUN and TURN traffic) becomes a [`SimSocket`]
//! whose outgoing datagrams pass through the model before they reach the real socket on
//! 127.0.0.1.
//!
//! # What it models
//!
//! Per datagram, in this order, on the sending side:
//! 1. **Path switch and filter** — [`NetworkModel::cut`] / [`restore`] /
//!    [`set_blocked`] drop everything; [`NetworkModel::set_filter`] drops what a
//!    predicate on `(source, destination)` rejects, e.g. [`NetworkModel::only_via`]
//!    lets only traffic to or from a relay through. The same checks are applied to
//!    *received* datagrams too, so a model on just one peer still blocks both
//!    directions of that peer's paths.
//! 2. **Loss** — independent (Bernoulli) or bursty (Gilbert–Elliott), see [`Loss`].
//! 3. **Bottleneck rate** (optional) — a FIFO serialising at `rate` bytes/s with a
//!    drop-tail queue of `queue_bytes`.
//! 4. **Delay and jitter** — a one-way delay ± uniform jitter. Jitter never reorders.
//! 5. **Reordering** — a fraction of datagrams is held back by an extra delay so later
//!    ones overtake it.
//!
//! Delayed datagrams wait in a per-socket timer queue (a tokio task, `tokio::time`) and
//! are then sent on the real socket; the kernel here has no netem, so all of this is
//! user space. `poll_send` reports success at once for datagrams that are held or
//! dropped, exactly as a real lossy network would. Wrapped sockets report
//! `max_gso_segments() == 1` (and split a GSO buffer themselves if handed one), so every
//! datagram gets its own decision.
//!
//! Every socket has its own [`Link`] (RNG, Gilbert–Elliott state, queue), seeded from
//! the model's seed and the socket's local port ([`link::socket_seed`]). The link model
//! is sans-IO and fully deterministic: the same seed and the same sequence of
//! `(instant, length)` inputs give the same decisions. A whole WebRTC transfer is *not*
//! reproducible bit for bit, though: ports are ephemeral and the stack's timing (hence
//! which datagrams are offered when) varies from run to run.
//!
//! [`NetworkModel::stats`] returns counters (sent, lost, blocked, overflowed, delayed,
//! reordered) so that tests can check that the model really acted.
//!
//! # What it does not model
//!
//! - NAT: addresses and ports are never rewritten (use the network-namespace tests).
//! - A shared bottleneck: each socket is its own link, so two connections do not compete
//!   for one queue, and the two directions of a connection are independent.
//! - MTU limits, fragmentation, corruption, duplication, ICMP errors.
//! - Traffic that does not go through the `webrtc` runtime: the signaling WebSocket
//!   (TCP), and the sockets of a TURN server running in the same process.
//! - Virtual time: delays are real (tokio) time, so a 20 ms delay takes 20 ms. Timer
//!   resolution is tokio's, 1 ms.
//! - Backpressure: the real socket is never allowed to push back on the stack, and a
//!   delayed datagram is queued without limit unless a `rate` with a queue is set.
//!
//! # Use in tests
//!
//! ```no_run
//! # use std::time::Duration;
//! # use peershare::rtc::netsim::{LinkConfig, Loss, NetworkModel};
//! # fn f(mut config: peershare::PeerConfig, relay: std::net::SocketAddr) {
//! let net = NetworkModel::new(1, LinkConfig::wan(Duration::from_millis(40), 0.01));
//! config.rtc.network = Some(net.clone()); // same handle on both peers
//! // Force the relay: only datagrams to or from the TURN server's address pass.
//! net.only_via([relay]);
//! // Kill every path mid-transfer and bring it back.
//! net.cut();
//! net.restore();
//! assert!(net.stats().lost > 0);
//! # }
//! ```
//!
//! [`RtcSettings::network`]: crate::rtc::RtcSettings::network
//! [`restore`]: NetworkModel::restore
//! [`set_blocked`]: NetworkModel::set_blocked

/// The sans-IO link model, the crate `peershare-linkmodel` (shared with the WAN emulator,
/// `wanem/`).
pub use peershare_linkmodel as link;

pub use link::{DropReason, Link, LinkConfig, Loss, Verdict};

use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, EcnCodepoint, RecvMeta, Runtime, Transmit};

/// A predicate on `(source, destination)`; `true` lets the datagram through.
pub type Filter = Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// Counters of what the model did, summed over all its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams offered by the stack to a simulated socket.
    pub offered: u64,
    /// Datagrams handed to a real socket (at once or after a delay).
    pub sent: u64,
    /// Bytes handed to a real socket.
    pub sent_bytes: u64,
    /// Datagrams lost by the loss model.
    pub lost: u64,
    /// Outgoing datagrams dropped by the filter or a cut path.
    pub blocked: u64,
    /// Incoming datagrams dropped by the filter or a cut path.
    pub blocked_in: u64,
    /// Datagrams dropped because the bottleneck queue was full.
    pub overflowed: u64,
    /// Datagrams held in a timer queue before being sent.
    pub delayed: u64,
    /// Datagrams picked for reordering (held back by the extra delay).
    pub reordered: u64,
    /// Real sends that failed (the datagram is gone, as on a real network).
    pub send_errors: u64,
}

impl NetStats {
    /// Every datagram that did not make it: lost, blocked either way, or overflowed.
    pub fn dropped(&self) -> u64 {
        self.lost + self.blocked + self.blocked_in + self.overflowed
    }
}

#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    lost: AtomicU64,
    blocked: AtomicU64,
    blocked_in: AtomicU64,
    overflowed: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
    send_errors: AtomicU64,
}

struct Shared {
    seed: u64,
    link: RwLock<LinkConfig>,
    blocked: AtomicBool,
    filter: RwLock<Option<Filter>>,
    counters: Counters,
    sockets: AtomicUsize,
    /// Tasks in [`NetworkModel::wait_until`]; counters notify only while there are some.
    waiters: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn bump(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// A simulated network: link configuration, filter, path switch and counters, shared by
/// every socket wrapped with it. Cloning gives another handle to the same network.
#[derive(Clone)]
pub struct NetworkModel {
    shared: Arc<Shared>,
}

impl fmt::Debug for NetworkModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkModel")
            .field("seed", &self.shared.seed)
            .field("link", &self.link())
            .field("blocked", &self.is_blocked())
            .field(
                "filtered",
                &self
                    .shared
                    .filter
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some(),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

impl NetworkModel {
    /// A network whose every socket applies `link` to what it sends, with random
    /// decisions derived from `seed`.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                seed,
                link: RwLock::new(link),
                blocked: AtomicBool::new(false),
                filter: RwLock::new(None),
                counters: Counters::default(),
                sockets: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                changed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The seed the sockets' RNGs derive from.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The current link configuration.
    pub fn link(&self) -> LinkConfig {
        *self.shared.link.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the link configuration; applies to datagrams sent from now on.
    pub fn set_link(&self, link: LinkConfig) {
        *self.shared.link.write().unwrap_or_else(|e| e.into_inner()) = link;
    }

    /// Drop every datagram (`true`) or let them through again (`false`).
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.blocked.store(blocked, Ordering::SeqCst);
    }

    /// The path dies: every datagram in either direction is dropped until [`restore`].
    ///
    /// [`restore`]: Self::restore
    pub fn cut(&self) {
        self.set_blocked(true);
    }

    /// The path comes back after [`cut`](Self::cut).
    pub fn restore(&self) {
        self.set_blocked(false);
    }

    /// Whether the path is cut.
    pub fn is_blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::SeqCst)
    }

    /// Let only datagrams for which `allow(source, destination)` is true through (both
    /// when sending and when receiving). Replaces any previous filter.
    pub fn set_filter(
        &self,
        allow: impl Fn(SocketAddr, SocketAddr) -> bool + Send + Sync + 'static,
    ) {
        *self
            .shared
            .filter
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(allow));
    }

    /// Remove the filter.
    pub fn clear_filter(&self) {
        *self
            .shared
            .filter
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Block direct peer-to-peer UDP: only datagrams whose source or destination is one
    /// of `relays` (exact address and port, e.g. a TURN server's listening address) pass.
    /// Peers then connect through relay candidates, or not at all.
    pub fn only_via(&self, relays: impl IntoIterator<Item = SocketAddr>) {
        let relays: Vec<SocketAddr> = relays.into_iter().collect();
        self.set_filter(move |src, dst| relays.contains(&src) || relays.contains(&dst));
    }

    /// Block UDP to and from `ips` only (e.g. the other peer's host address on a LAN).
    pub fn block_ips(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let ips: Vec<IpAddr> = ips.into_iter().collect();
        self.set_filter(move |src, dst| !ips.contains(&src.ip()) && !ips.contains(&dst.ip()));
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetStats {
        let c = &self.shared.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            offered: r(&c.offered),
            sent: r(&c.sent),
            sent_bytes: r(&c.sent_bytes),
            lost: r(&c.lost),
            blocked: r(&c.blocked),
            blocked_in: r(&c.blocked_in),
            overflowed: r(&c.overflowed),
            delayed: r(&c.delayed),
            reordered: r(&c.reordered),
            send_errors: r(&c.send_errors),
        }
    }

    /// Wait until the counters satisfy `pred` (woken on every counter change, no
    /// polling); returns the snapshot that did. E.g. `net.wait_until(|s| s.blocked >= 100)`
    /// after [`cut`](Self::cut), to restore only once the outage has really hit traffic.
    pub async fn wait_until(&self, pred: impl Fn(&NetStats) -> bool) -> NetStats {
        let shared = &self.shared;
        shared.waiters.fetch_add(1, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&shared.waiters);
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let stats = self.stats();
            if pred(&stats) {
                return stats;
            }
            notified.await;
        }
    }

    /// How many sockets have been wrapped with this model.
    pub fn sockets(&self) -> usize {
        self.shared.sockets.load(Ordering::Relaxed)
    }

    /// A runtime that delegates to `inner` and simulates this network on its UDP sockets.
    pub fn runtime(&self, inner: Arc<dyn Runtime>) -> SimRuntime {
        SimRuntime {
            inner,
            model: self.clone(),
        }
    }

    /// Whether the path switch and the filter let a datagram from `src` to `dst` pass.
    pub fn admits(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        if self.is_blocked() {
            return false;
        }
        match &*self.shared.filter.read().unwrap_or_else(|e| e.into_inner()) {
            Some(allow) => allow(src, dst),
            None => true,
        }
    }

    /// Wrap an already wrapped socket bound to `local`. Must be called inside a tokio
    /// runtime: it spawns the socket's delivery task there.
    pub fn wrap_socket(
        &self,
        inner: Arc<dyn AsyncUdpSocket>,
        local: SocketAddr,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("netsim needs a tokio runtime: {e}")))?;
        self.shared.sockets.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        handle.spawn(deliver(inner.clone(), rx, held.clone(), self.clone()));
        Ok(Arc::new(SimSocket {
            inner,
            local,
            model: self.clone(),
            link: Mutex::new(Link::seeded(link::socket_seed(self.seed(), local.port()))),
            tx,
            held,
            seq: AtomicU64::new(0),
        }))
    }
}

/// A datagram waiting in a socket's timer queue.
#[derive(Debug)]
struct Held {
    at: tokio::time::Instant,
    /// Tie-breaker: equal deadlines leave in the order they were queued.
    seq: u64,
    dst: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so that `BinaryHeap` pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A socket's delivery task: holds delayed datagrams until their time, then sends them
/// on the real socket. Ends when the socket is dropped and its queue has drained.
async fn deliver(
    socket: Arc<dyn AsyncUdpSocket>,
    mut rx: mpsc::UnboundedReceiver<Held>,
    held: Arc<AtomicUsize>,
    model: NetworkModel,
) {
    let mut queue: BinaryHeap<Held> = BinaryHeap::new();
    let mut open = true;
    loop {
        let next = queue.peek().map(|h| h.at);
        if !open && next.is_none() {
            return;
        }
        tokio::select! {
            biased;
            msg = rx.recv(), if open => match msg {
                Some(h) => queue.push(h),
                None => open = false,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {
                let now = tokio::time::Instant::now();
                while queue.peek().is_some_and(|h| h.at <= now) {
                    let h = queue.pop().expect("peeked");
                    let transmit = Transmit {
                        destination: h.dst,
                        ecn: h.ecn,
                        contents: &h.data,
                        segment_size: None,
                        src_ip: h.src_ip,
                    };
                    let result = std::future::poll_fn(|cx| socket.poll_send(cx, &transmit)).await;
                    model.count_send(&result, h.data.len());
                    held.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

impl NetworkModel {
    fn count_send(&self, result: &io::Result<usize>, len: usize) {
        let c = &self.shared.counters;
        match result {
            Ok(_) => {
                // Bytes first, so that a waiter woken by `sent` sees them.
                c.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.shared.bump(&c.sent);
            }
            Err(e) => {
                self.shared.bump(&c.send_errors);
                tracing::debug!("netsim: send failed: {e}");
            }
        }
    }
}

/// A UDP socket behind the simulated network (see the [module docs](self)).
pub struct SimSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    model: NetworkModel,
    link: Mutex<Link>,
    tx: mpsc::UnboundedSender<Held>,
    /// Datagrams queued for (or being sent by) the delivery task. While it is non-zero,
    /// new datagrams queue behind them and the socket is polled by the task only.
    held: Arc<AtomicUsize>,
    seq: AtomicU64,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("local", &self.local)
            .field("inner", &self.inner)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}

impl SimSocket {
    /// Run one datagram through the model and send, hold or drop it.
    fn offer(
        &self,
        dst: SocketAddr,
        ecn: Option<EcnCodepoint>,
        src_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        let shared = &self.model.shared;
        let c = &shared.counters;
        shared.bump(&c.offered);
        if !self.model.admits(self.local, dst) {
            shared.bump(&c.blocked);
            return;
        }
        let cfg = self.model.link();
        let now = tokio::time::Instant::now();
        let verdict = self.link.lock().unwrap_or_else(|e| e.into_inner()).decide(
            &cfg,
            now.into_std(),
            data.len(),
        );
        let (at, reordered) = match verdict {
            Verdict::Drop(DropReason::Loss) => return shared.bump(&c.lost),
            Verdict::Drop(DropReason::Overflow) => return shared.bump(&c.overflowed),
            Verdict::Deliver { at, reordered } => (tokio::time::Instant::from_std(at), reordered),
        };
        if reordered {
            shared.bump(&c.reordered);
        }
        if at <= now && self.held.load(Ordering::Acquire) == 0 {
            // Fast path: nothing queued ahead, no delay. Poll with a no-op waker: the
            // stack must not wait on the real socket (it was told the datagram is sent),
            // and if the socket is full the delivery task takes over below.
            let transmit = Transmit {
                destination: dst,
                ecn,
                contents: data,
                segment_size: None,
                src_ip,
            };
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(result) = self.inner.poll_send(&mut cx, &transmit) {
                self.model.count_send(&result, data.len());
                return;
            }
        } else if at > now {
            shared.bump(&c.delayed);
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        let held = Held {
            at,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            dst,
            ecn,
            src_ip,
            data: data.to_vec(),
        };
        if self.tx.send(held).is_err() {
            // The delivery task is gone (its runtime shut down): the datagram is lost.
            self.held.fetch_sub(1, Ordering::AcqRel);
            shared.bump(&c.send_errors);
        }
    }
}

impl AsyncUdpSocket for SimSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let contents = transmit.contents;
        match transmit.segment_size {
            Some(seg) if seg > 0 && contents.len() > seg => {
                for chunk in contents.chunks(seg) {
                    self.offer(transmit.destination, transmit.ecn, transmit.src_ip, chunk);
                }
            }
            _ => self.offer(
                transmit.destination,
                transmit.ecn,
                transmit.src_ip,
                contents,
            ),
        }
        Poll::Ready(Ok(contents.len()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            // Compact the messages the path switch and filter let in to the front.
            let mut kept = 0;
            for i in 0..n {
                if self.model.admits(meta[i].addr, self.local) {
                    if kept != i {
                        let len = meta[i].len;
                        let (head, tail) = bufs.split_at_mut(i);
                        head[kept][..len].copy_from_slice(&tail[0][..len]);
                        meta[kept] = meta[i];
                    }
                    kept += 1;
                } else {
                    self.model
                        .shared
                        .bump(&self.model.shared.counters.blocked_in);
                }
            }
            if kept > 0 || n == 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was filtered: read again (or register the waker).
        }
    }

    fn max_gso_segments(&self) -> usize {
        1
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// A `webrtc` runtime that delegates everything to `inner` and wraps each UDP socket in
/// a [`SimSocket`] of its [`NetworkModel`].
#[derive(Debug)]
pub struct SimRuntime {
    inner: Arc<dyn Runtime>,
    model: NetworkModel,
}

impl SimRuntime {
    /// The network this runtime simulates.
    pub fn model(&self) -> &NetworkModel {
        &self.model
    }
}

impl Runtime for SimRuntime {
    crate::rtc::runtime::delegate_runtime!();

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        let inner = self.inner.wrap_udp_socket(socket)?;
        self.model.wrap_socket(inner, local)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn name(&self) -> &'static str {
        "peershare-netsim"
    }
}

#[cfg(test)]
mod tests;
