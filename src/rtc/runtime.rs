//! A `webrtc` runtime that gives every UDP socket the stack opens large kernel buffers.
//!
//! Measured here (docs/PERFORMANCE.md, ../shared/WEBRTC-NOTES.md): with the kernel's
//! default 208 KiB receive buffer, bursts of SCTP packets overflow it and the transfer
//! stalls in loss recovery (6–37 MiB/s on loopback); with 4 MiB it runs at 250+ MiB/s.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Once;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    default_runtime,
};

/// Socket buffer size requested for every UDP socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How long after its creation a runtime applies its setup poll interval.
pub const SETUP_WINDOW: Duration = Duration::from_secs(5);

/// Delegates to the default (tokio) runtime and enlarges UDP socket buffers.
#[derive(Debug)]
pub struct BufferedRuntime {
    inner: Arc<dyn Runtime>,
    buffer_bytes: usize,
    /// Until this instant, no sleep is longer than the interval.
    setup_poll: Option<(Duration, Instant)>,
}

impl BufferedRuntime {
    /// Wrap the default runtime; `None` if no runtime feature is compiled in.
    pub fn new(buffer_bytes: usize) -> Option<Self> {
        Some(Self {
            inner: default_runtime()?,
            buffer_bytes,
            setup_poll: None,
        })
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
    let sock = socket2::SockRef::from(socket);
    let forced_recv = set_force(socket, libc::SO_RCVBUFFORCE, bytes);
    let forced_send = set_force(socket, libc::SO_SNDBUFFORCE, bytes);
    if !forced_recv {
        let _ = sock.set_recv_buffer_size(bytes);
    }
    if !forced_send {
        let _ = sock.set_send_buffer_size(bytes);
    }
    BufferReport {
        requested: bytes,
        recv: sock.recv_buffer_size().unwrap_or(0),
        send: sock.send_buffer_size().unwrap_or(0),
        forced: forced_recv,
    }
}

fn set_force(socket: &std::net::UdpSocket, option: libc::c_int, bytes: usize) -> bool {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

static CAP_WARNING: Once = Once::new();

impl Runtime for BufferedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

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
        self.inner.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let duration = match self.setup_poll {
            Some((cap, until)) if Instant::now() < until => duration.min(cap),
            _ => duration,
        };
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "peershare-buffered-tokio"
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
}
