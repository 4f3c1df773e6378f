//! A `webrtc` runtime that gives every UDP socket the stack opens large kernel buffers.
//!
//! Measured here (docs/PERFORMANCE.md, ../shared/WEBRTC-NOTES.md): with the kernel's
//! default 208 KiB receive buffer, bursts of SCTP packets overflow it and the transfer
//! stalls in loss recovery (6–37 MiB/s on loopback); with 4 MiB it runs at 250+ MiB/s.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use peershare_signaling::relay_plane::{GsoRun, lock};
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Runtime, Transmit, default_runtime};

/// Socket buffer size requested for every UDP socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How long after its creation a runtime applies its setup poll interval.
pub const SETUP_WINDOW: Duration = Duration::from_secs(5);
/// Default setup poll interval ([`BufferedRuntime::with_setup_poll`]).
pub const SETUP_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// While relayed data flows, no driver sleep is longer than this (docs/RELAY.md).
pub const RELAY_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// The relay poll interval stays in force this long after the last relayed data packet.
pub const RELAY_ACTIVE_WINDOW: Duration = Duration::from_millis(250);
/// Relayed datagrams at least this large count as data (consent checks and keep-alives
/// through the relay are smaller and do not keep the fast polling on).
const RELAY_DATA_MIN_BYTES: usize = 256;
/// Relayed datagrams a socket holds back at most before it sends them anyway.
const RELAY_BATCH_MAX_BYTES: usize = 256 * 1024;

/// Delegates to the default (tokio) runtime and enlarges UDP socket buffers.
#[derive(Debug)]
pub struct BufferedRuntime {
    inner: Arc<dyn Runtime>,
    buffer_bytes: usize,
    /// Until this instant, no sleep is longer than the interval.
    setup_poll: Option<(Duration, Instant)>,
    /// Cap on every sleep while relayed data flows; `None` = off.
    relay_poll: Option<Duration>,
    /// When the last relayed data datagram went through one of this runtime's sockets.
    relay_activity: Arc<RelayActivity>,
    /// Whether sockets may batch sends with UDP GSO.
    udp_offload: bool,
    /// Whether sockets batch relayed (TURN ChannelData) datagrams into GSO sends, flushed
    /// when the driver goes to sleep.
    relay_batching: bool,
    /// This runtime's sockets, for that flush.
    sockets: Arc<Mutex<Vec<Weak<RelayWatchSocket>>>>,
}

impl BufferedRuntime {
    /// Wrap the default runtime; `None` if no runtime feature is compiled in.
    pub fn new(buffer_bytes: usize) -> Option<Self> {
        Some(Self {
            inner: default_runtime()?,
            buffer_bytes,
            setup_poll: None,
            relay_poll: Some(RELAY_POLL_INTERVAL),
            relay_activity: Arc::new(RelayActivity::new()),
            udp_offload: true,
            relay_batching: true,
            sockets: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// `true` (default): TURN ChannelData datagrams that the stack sends one by one are
    /// collected per driver pass and leave as UDP GSO batches when the driver goes to
    /// sleep. The `webrtc` 0.21.1 driver batches only direct writes (`flush_writes` sends
    /// TURN-relayed ones per packet); this gives relayed writes the same batching.
    /// Only valid when the driver itself sends through these sockets (not under a
    /// simulated network, whose link tasks send at their own times).
    pub fn with_relay_batching(mut self, on: bool) -> Self {
        self.relay_batching = on;
        self
    }

    /// `false`: every socket reports a single GSO segment, so the stack sends one
    /// datagram per syscall (for measurements; on by default). On loopback, GRO then
    /// has nothing to coalesce either.
    pub fn with_udp_offload(mut self, on: bool) -> Self {
        self.udp_offload = on;
        self
    }

    /// While TURN-relayed data flows through this runtime's sockets (and for
    /// [`RELAY_ACTIVE_WINDOW`] after), cap every sleep at `interval`; `None` turns that
    /// off. On by default with [`RELAY_POLL_INTERVAL`].
    ///
    /// Works around the phase order of the `webrtc` 0.21.1 driver, which leaves relayed
    /// packets (outbound ones encapsulated after the TURN clients were drained, inbound
    /// ones decapsulated after the core was read) queued until its next wake-up, often
    /// the 200 ms delayed-ACK or ≥ 1 s retransmission timer. Direct connections never
    /// pay for it. See docs/RELAY.md.
    pub fn with_relay_poll(mut self, interval: Option<Duration>) -> Self {
        self.relay_poll = interval;
        self
    }

    /// Whether relayed data went through this runtime's sockets within the last
    /// [`RELAY_ACTIVE_WINDOW`].
    pub fn relay_active(&self) -> bool {
        self.relay_activity.active(self.inner.now())
    }

    /// For `window` from now, cap every sleep at `interval`. The `webrtc` 0.21 driver
    /// flushes output that a state change produced (the DTLS ClientHello after ICE
    /// connects, the SCTP INIT after DTLS, the DCEP OPEN after SCTP) only at its next
    /// wake-up, which is up to 200 ms away; capping the sleeps during setup removes
    /// those three stalls (docs/PERFORMANCE.md).
    pub fn with_setup_poll(mut self, interval: Duration, window: Duration) -> Self {
        self.setup_poll = Some((interval, Instant::now() + window));
        self
    }
}

/// What the kernel granted for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferReport {
    pub requested: usize,
    pub recv: usize,
    pub send: usize,
    pub forced: bool,
}

impl BufferReport {
    /// Whether the kernel gave less than asked (Linux reports twice the set value).
    pub fn capped(&self) -> bool {
        self.recv < self.requested
    }
}

/// Set large receive and send buffers on `socket`: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`
/// where permitted (CAP_NET_ADMIN), else the capped `SO_RCVBUF`/`SO_SNDBUF`.
pub fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) -> BufferReport {
    let forced = peershare_signaling::turn::set_socket_buffers(socket, bytes);
    let sock = socket2::SockRef::from(socket);
    BufferReport {
        requested: bytes,
        recv: sock.recv_buffer_size().unwrap_or(0),
        send: sock.send_buffer_size().unwrap_or(0),
        forced,
    }
}

/// The [`Runtime`] methods a wrapper passes straight to its `inner` runtime: everything
/// but `wrap_udp_socket`, `sleep` and `name`, which each wrapper writes itself. Used by
/// [`BufferedRuntime`] and `netsim::SimRuntime` inside their `impl Runtime`.
macro_rules! delegate_runtime {
    () => {
        fn spawn(
            &self,
            future: ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()> + Send>>,
        ) -> Box<dyn ::webrtc::runtime::JoinHandle> {
            self.inner.spawn(future)
        }

        fn spawn_reactor(
            &self,
            reactor_pool_size: usize,
            future: ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()> + Send>>,
        ) -> Box<dyn ::webrtc::runtime::JoinHandle> {
            self.inner.spawn_reactor(reactor_pool_size, future)
        }

        fn wrap_tcp_listener(
            &self,
            listener: ::std::net::TcpListener,
        ) -> ::std::io::Result<::std::sync::Arc<dyn ::webrtc::runtime::AsyncTcpListener>> {
            self.inner.wrap_tcp_listener(listener)
        }

        fn connect_tcp<'a>(
            &'a self,
            remote_addr: ::std::net::SocketAddr,
        ) -> ::std::pin::Pin<
            Box<
                dyn ::std::future::Future<
                        Output = ::std::io::Result<
                            ::std::sync::Arc<dyn ::webrtc::runtime::AsyncTcpStream>,
                        >,
                    > + Send
                    + 'a,
            >,
        > {
            self.inner.connect_tcp(remote_addr)
        }

        fn resolve_host<'a>(
            &'a self,
            host: &'a str,
        ) -> ::std::pin::Pin<
            Box<
                dyn ::std::future::Future<Output = ::std::io::Result<Vec<::std::net::SocketAddr>>>
                    + Send
                    + 'a,
            >,
        > {
            self.inner.resolve_host(host)
        }

        fn now(&self) -> ::std::time::Instant {
            self.inner.now()
        }

        fn interval(
            &self,
            period: ::std::time::Duration,
        ) -> Box<dyn ::webrtc::runtime::AsyncInterval> {
            self.inner.interval(period)
        }

        fn block_on(
            &self,
            future: ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()> + '_>>,
        ) {
            self.inner.block_on(future)
        }

        fn yield_now(
            &self,
        ) -> ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()> + Send + 'static>> {
            self.inner.yield_now()
        }
    };
}
pub(crate) use delegate_runtime;

static CAP_WARNING: Once = Once::new();

impl Runtime for BufferedRuntime {
    delegate_runtime!();

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let report = enlarge_buffers(&socket, self.buffer_bytes);
        if report.capped() {
            CAP_WARNING.call_once(|| {
                tracing::warn!(
                    requested = report.requested,
                    granted = report.recv,
                    "UDP receive buffer capped by the kernel; throughput will suffer. Fix: \
                     sysctl -w net.core.rmem_max={} net.core.wmem_max={} (or run with CAP_NET_ADMIN)",
                    self.buffer_bytes,
                    self.buffer_bytes
                );
            });
        }
        tracing::debug!(?report, "UDP socket buffers");
        let inner = self.inner.wrap_udp_socket(socket)?;
        let batching = self.relay_batching && self.udp_offload;
        if self.relay_poll.is_none() && self.udp_offload && !batching {
            return Ok(inner);
        }
        let socket = Arc::new(RelayWatchSocket {
            inner,
            activity: Arc::clone(&self.relay_activity),
            clock: Arc::clone(&self.inner),
            offload: self.udp_offload,
            batch: batching.then(|| Mutex::new(RelayBatch::default())),
        });
        if batching {
            let mut sockets = lock(&self.sockets);
            sockets.retain(|s| s.strong_count() > 0);
            sockets.push(Arc::downgrade(&socket));
        }
        Ok(socket)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let mut duration = match self.setup_poll {
            Some((cap, until)) if Instant::now() < until => duration.min(cap),
            _ => duration,
        };
        if let Some(cap) = self.relay_poll
            && duration > cap
            && self.relay_activity.active(self.inner.now())
        {
            duration = cap;
        }
        let sleep = self.inner.sleep(duration);
        // The driver sleeps once per pass: send the relayed datagrams the pass produced.
        let held: Vec<Arc<RelayWatchSocket>> = lock(&self.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.holds_datagrams())
            .collect();
        if held.is_empty() {
            return sleep;
        }
        Box::pin(FlushThenSleep { held, sleep })
    }

    fn name(&self) -> &'static str {
        "peershare-buffered-tokio"
    }
}

/// A driver sleep that first sends what its sockets hold back.
struct FlushThenSleep {
    held: Vec<Arc<RelayWatchSocket>>,
    sleep: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
}

impl Future for FlushThenSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(socket) = self.held.last() {
            if socket.poll_flush(cx).is_pending() {
                // Woken when the socket can take more; the timer is polled after.
                return Poll::Pending;
            }
            self.held.pop();
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// The last time relayed data passed, as nanoseconds since `base` (0 = never).
#[derive(Debug)]
struct RelayActivity {
    base: Instant,
    last_nanos: AtomicU64,
}

impl RelayActivity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn mark(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    fn active(&self, now: Instant) -> bool {
        let last = self.last_nanos.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let since_base = now.saturating_duration_since(self.base);
        since_base.saturating_sub(Duration::from_nanos(last)) < RELAY_ACTIVE_WINDOW
    }
}

/// Whether a datagram is TURN ChannelData: first byte 64–79 (RFC 7983's demultiplexing
/// range for TURN channels; STUN is 0–3, DTLS 20–63, RTP 128–191), with its 4-byte header.
fn is_channel_data(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && matches!(datagram.first(), Some(64..=79))
}

/// Whether a datagram is ChannelData carrying data: larger than a consent check.
fn is_relayed_data(datagram: &[u8]) -> bool {
    datagram.len() >= RELAY_DATA_MIN_BYTES && is_channel_data(datagram)
}

/// Relayed datagrams held back for one GSO send, oldest run first.
#[derive(Debug, Default)]
struct RelayBatch {
    runs: VecDeque<GsoRun>,
    bytes: usize,
}

/// A UDP socket that notes when relayed data passes through it, batches relayed
/// datagrams into GSO sends, and can hide the kernel's GSO from the stack.
#[derive(Debug)]
struct RelayWatchSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    activity: Arc<RelayActivity>,
    clock: Arc<dyn Runtime>,
    offload: bool,
    /// `Some` when relayed datagrams are batched (see [`BufferedRuntime::with_relay_batching`]).
    batch: Option<Mutex<RelayBatch>>,
}

impl RelayWatchSocket {
    fn holds_datagrams(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| !lock(b).runs.is_empty())
    }

    /// Send every held run, in order. A run the kernel refuses is resent one datagram at
    /// a time (GSO refused) or dropped (like any lost datagram); only `Pending` (socket
    /// full) stops the flush, to be resumed when the socket is writable.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(batch) = &self.batch else {
            return Poll::Ready(());
        };
        let mut batch = lock(batch);
        while let Some(run) = batch.runs.front() {
            match self.inner.poll_send(cx, &run.transmit()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) if run.count() > 1 => {
                    tracing::debug!(error = %e, "relayed GSO send refused; resending singly");
                    let singles: Vec<GsoRun> = run.split().collect();
                    batch.runs.pop_front();
                    for single in singles.into_iter().rev() {
                        batch.runs.push_front(single);
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => tracing::debug!(error = %e, "relayed send failed"),
            }
            if let Some(sent) = batch.runs.pop_front() {
                batch.bytes = batch.bytes.saturating_sub(sent.len());
            }
        }
        batch.bytes = 0;
        Poll::Ready(())
    }

    /// Hold `transmit` back for a GSO batch if it is a single relayed datagram and the
    /// kernel can batch; `false` = send it now.
    fn try_hold(&self, transmit: &Transmit<'_>) -> bool {
        let Some(batch) = &self.batch else {
            return false;
        };
        let max_segments = self.inner.max_gso_segments();
        if transmit.segment_size.is_some()
            || transmit.ecn.is_some()
            || transmit.src_ip.is_some()
            || max_segments <= 1
            || !is_channel_data(transmit.contents)
        {
            return false;
        }
        let mut batch = lock(batch);
        if batch.bytes + transmit.contents.len() > RELAY_BATCH_MAX_BYTES {
            return false;
        }
        batch.bytes += transmit.contents.len();
        // Only the newest run may grow: runs leave in order, so appending to an older one
        // would overtake the datagrams queued after it.
        let appended = batch.runs.back_mut().is_some_and(|run| {
            run.destination() == transmit.destination
                && run.try_push(transmit.contents, max_segments)
        });
        if !appended {
            batch
                .runs
                .push_back(GsoRun::new(transmit.destination, transmit.contents));
        }
        true
    }
}

impl AsyncUdpSocket for RelayWatchSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if is_relayed_data(transmit.contents) {
            self.activity.mark(self.clock.now());
        }
        if self.try_hold(transmit) {
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        // Anything sent now goes after what is held, so the order on the wire is kept.
        if self.poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        if self.try_hold(transmit) {
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled
            && bufs
                .iter()
                .zip(meta.iter())
                .take(*n)
                .any(|(buf, m)| is_relayed_data(&buf[..m.len.min(buf.len())]))
        {
            self.activity.mark(self.clock.now());
        }
        polled
    }

    fn max_gso_segments(&self) -> usize {
        if self.offload {
            self.inner.max_gso_segments()
        } else {
            1
        }
    }

    fn max_gro_segments(&self) -> usize {
        // Always the kernel's: the stack sizes its receive buffers by this (one segment
        // means 2000-byte buffers, which truncate 8 KiB loopback datagrams).
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_data_detection_matches_channel_data_only() {
        let mut channel_data = vec![0u8; 1200];
        channel_data[0] = 0x40;
        assert!(is_relayed_data(&channel_data));
        channel_data[0] = 0x4f;
        assert!(is_relayed_data(&channel_data));
        // DTLS application data (23) and STUN (0/1) on a direct path are not relayed data.
        for first in [0u8, 1, 23, 63, 80, 128] {
            channel_data[0] = first;
            assert!(!is_relayed_data(&channel_data), "first byte {first}");
        }
        // A small ChannelData (a consent check through the relay) does not count.
        assert!(!is_relayed_data(&[0x40, 0, 0, 100]));
    }

    #[test]
    fn relay_activity_lasts_for_the_window() {
        let a = RelayActivity::new();
        let t0 = a.base + Duration::from_secs(3);
        assert!(!a.active(t0), "never marked");
        a.mark(t0);
        assert!(a.active(t0));
        assert!(a.active(t0 + RELAY_ACTIVE_WINDOW - Duration::from_millis(1)));
        assert!(!a.active(t0 + RELAY_ACTIVE_WINDOW));
    }

    #[test]
    fn enlarge_buffers_reports_granted_sizes() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = enlarge_buffers(&s, SOCKET_BUFFER_BYTES);
        // Linux doubles the value it stores; either way we got at least the default.
        assert!(r.recv >= 200 * 1024, "{r:?}");
        assert_eq!(r.capped(), r.recv < SOCKET_BUFFER_BYTES);
    }

    /// A ChannelData datagram of `len` bytes whose payload starts with `tag`.
    fn channel_data(tag: u8, len: usize) -> Vec<u8> {
        let mut d = vec![tag; len];
        d[0] = 0x40;
        d[1] = 0x00;
        d
    }

    async fn send(socket: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, contents: &[u8]) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        let n = std::future::poll_fn(|cx| socket.poll_send(cx, &transmit))
            .await
            .unwrap();
        assert_eq!(n, contents.len());
    }

    /// What `peer` has received so far, without waiting.
    fn received(peer: &std::net::UdpSocket) -> Vec<Vec<u8>> {
        peer.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = peer.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        peer.set_nonblocking(false).unwrap();
        out
    }

    /// The next `n` datagrams `peer` receives (5 s read timeout each).
    fn receive_n(peer: &std::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let len = peer.recv(&mut buf).expect("datagram within 5 s");
                buf[..len].to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn relay_batching_holds_channel_data_until_sleep_and_keeps_order() {
        let runtime = BufferedRuntime::new(SOCKET_BUFFER_BYTES).unwrap();
        let local = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = runtime.wrap_udp_socket(local).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let batching = socket.max_gso_segments() > 1;

        // Relayed data during a driver pass: held back (where the kernel can batch).
        let first: Vec<Vec<u8>> = (1..=5).map(|i| channel_data(i, 1200)).collect();
        for d in &first {
            send(&socket, to, d).await;
        }
        let short = channel_data(6, 300);
        send(&socket, to, &short).await;
        // Nothing has left when batching.
        let early = received(&peer);
        if batching {
            assert!(early.is_empty(), "held datagrams leaked: {}", early.len());
        }
        // A STUN message (not ChannelData) goes out at once, after what was held.
        let stun = vec![0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        send(&socket, to, &stun).await;
        let mut expected: Vec<Vec<u8>> = first.clone();
        expected.push(short.clone());
        expected.push(stun.clone());
        let mut got = early;
        got.extend(receive_n(&peer, expected.len() - got.len()));
        assert_eq!(got, expected);

        // More relayed data, then the driver sleeps: the sleep sends it first.
        let second: Vec<Vec<u8>> = (7..=9).map(|i| channel_data(i, 1200)).collect();
        for d in &second {
            send(&socket, to, d).await;
        }
        assert!(!batching || received(&peer).is_empty());
        runtime.sleep(Duration::from_millis(1)).await;
        assert_eq!(receive_n(&peer, second.len()), second);
    }

    #[tokio::test]
    async fn relay_batching_off_sends_channel_data_at_once() {
        let runtime = BufferedRuntime::new(SOCKET_BUFFER_BYTES)
            .unwrap()
            .with_relay_batching(false);
        let socket = runtime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let d = channel_data(1, 1200);
        send(&socket, peer.local_addr().unwrap(), &d).await;
        assert_eq!(receive_n(&peer, 1), vec![d]);
    }
}
