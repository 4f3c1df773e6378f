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

/// Relayed datagrams a socket holds back at most before it sends them anyway.
const RELAY_BATCH_MAX_BYTES: usize = 256 * 1024;

/// Delegates to the default (tokio) runtime and enlarges UDP socket buffers.
#[derive(Debug)]
pub struct BufferedRuntime {
    inner: Arc<dyn Runtime>,
    buffer_bytes: usize,
    /// Until this instant, no sleep is longer than the interval.
    setup_poll: Option<(Duration, Instant)>,
    /// Whether sockets may batch sends with UDP GSO.
    udp_offload: bool,
    /// Whether sockets batch relayed (TURN ChannelData) datagrams into GSO sends, flushed
    /// when the driver goes to sleep.
    relay_batching: bool,
    /// This runtime's sockets, for that flush.
    sockets: Arc<Mutex<Vec<Weak<BatchingSocket>>>>,
}

impl BufferedRuntime {
    /// Wrap the default runtime; `None` if no runtime feature is compiled in.
    pub fn new(buffer_bytes: usize) -> Option<Self> {
        Some(Self {
            inner: default_runtime()?,
            buffer_bytes,
            setup_poll: None,
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

    /// For `window` from now, cap every sleep at `interval`. Each wake-up runs the
    /// stack's timeout handling, which is when the DTLS client's ClientHello, made as ICE
    /// selects a pair, leaves; on the stack's own deadlines that is up to 200 ms later
    /// (docs/PERFORMANCE.md, "Connection setup: the setup poll").
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
        if self.udp_offload && !batching {
            return Ok(inner);
        }
        let socket = Arc::new(BatchingSocket {
            inner,
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
        let duration = match self.setup_poll {
            Some((cap, until)) if Instant::now() < until => duration.min(cap),
            _ => duration,
        };
        let sleep = self.inner.sleep(duration);
        // The driver sleeps once per pass: send the relayed datagrams the pass produced.
        let held: Vec<Arc<BatchingSocket>> = lock(&self.sockets)
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
    held: Vec<Arc<BatchingSocket>>,
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

/// Whether a datagram is TURN ChannelData: first byte 64–79 (RFC 7983's demultiplexing
/// range for TURN channels; STUN is 0–3, DTLS 20–63, RTP 128–191), with its 4-byte header.
fn is_channel_data(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && matches!(datagram.first(), Some(64..=79))
}

/// Relayed datagrams held back for one GSO send, oldest run first.
#[derive(Debug, Default)]
struct RelayBatch {
    runs: VecDeque<GsoRun>,
    bytes: usize,
}

/// A UDP socket that batches relayed datagrams into GSO sends, and can hide the kernel's
/// GSO from the stack.
#[derive(Debug)]
struct BatchingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    offload: bool,
    /// `Some` when relayed datagrams are batched (see [`BufferedRuntime::with_relay_batching`]).
    batch: Option<Mutex<RelayBatch>>,
}

impl BatchingSocket {
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

impl AsyncUdpSocket for BatchingSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
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
        self.inner.poll_recv(cx, bufs, meta)
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
