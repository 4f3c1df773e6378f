//! The embedded relay's data plane: the sockets the `turn` server reads and writes.
//!
//! The `turn` 0.17 server handles every relayed datagram with one syscall per hop: a
//! `recvfrom` on its listener, a `sendto` from the sender's relay socket to the recipient's
//! relay socket, a `recvfrom` there and a `sendto` back out of the listener — four per
//! datagram, about a third of the relayed CPU in a profile (docs/RELAY.md). The server takes
//! its sockets as [`Conn`] trait objects, so this module replaces them without touching the
//! protocol logic:
//!
//! - [`ListenerConn`]: the listening socket. Reads use `recvmmsg` with UDP GRO (one syscall
//!   for up to 32 buffers of coalesced datagrams, split here into the server's one datagram
//!   per `recv_from`). Writes are queued in a [`SendBatcher`] and leave as UDP GSO batches:
//!   consecutive equal-sized datagrams to one client in one `sendmsg`.
//! - [`RelayConn`]: an allocation's relay socket. A datagram for another allocation of this
//!   same relay (both peers relayed through it, e.g. two `relay_only` peers) is
//!   handed over in memory, with the sender's relay address as its source, exactly what the
//!   kernel would have reported; anything else goes through the real socket.
//!
//! The plane also enforces the relay's [`PeerPolicy`] on every datagram a relay socket
//! sends or receives through the kernel (the in-memory hand-over is always allowed), counts
//! allocations against its [`AllocationQuota`], and lets a [`ListenerGate`] look at every
//! datagram the listener reads before the TURN server does (`turn` uses it to answer 401,
//! 403 and 486).
//!
//! Batches are flushed whenever a task that produced output is about to wait for input
//! (the listener's read loop, or an allocation's read loop), and whenever more than
//! [`FLUSH_BYTES`] are queued, so batching never holds a datagram back while the relay is
//! idle.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use webrtc_util::Conn;

use crate::turn_policy::{AllocationQuota, PeerDenied, PeerPolicy, QuotaExceeded};

/// Largest payload of one GSO batch (the kernel refuses more than one UDP datagram's worth).
pub const MAX_BATCH_BYTES: usize = 65_535;
/// Most segments in one GSO batch (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_BATCH_SEGMENTS: usize = 64;
/// Queued output beyond which the producing task flushes at once.
pub const FLUSH_BYTES: usize = 256 * 1024;
/// Receive buffers per `recvmmsg`.
const RECV_BUFFERS: usize = quinn_udp::BATCH_SIZE;
/// Size of each receive buffer: room for a full GRO batch.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// Receive buffers a relay keeps for reuse when no socket needs them: two listener reads'
/// worth (4 MiB). Busy sockets hold theirs only while datagrams they read are queued.
const SPARE_RECV_BUFFERS: usize = 2 * RECV_BUFFERS;
/// Datagrams an allocation may have waiting from other allocations before new ones are
/// dropped (what a full socket buffer would do).
/// 8 Ki datagrams of ~1.2 KB (about 10 MB) hold two 4 MiB SCTP windows.
pub const INBOX_DATAGRAMS: usize = 8 * 1024;

/// Lock `m`, also after a panic elsewhere poisoned it: the relay's and the peers' socket
/// locks, the server's connection counts and join back-off table guard plain data, which
/// stays valid. Shared with `peershare::rtc::runtime`.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Consecutive datagrams to one destination that can leave in one GSO `sendmsg`: all of
/// `segment` bytes, except that the last may be shorter (which closes the run). Also used
/// by the peers' sockets to batch their relayed datagrams.
#[derive(Debug)]
pub struct GsoRun {
    destination: SocketAddr,
    segment: usize,
    count: usize,
    closed: bool,
    bytes: Vec<u8>,
}

impl GsoRun {
    pub fn new(destination: SocketAddr, datagram: &[u8]) -> GsoRun {
        GsoRun {
            destination,
            segment: datagram.len(),
            count: 1,
            // An empty datagram cannot be a GSO segment.
            closed: datagram.is_empty(),
            bytes: datagram.to_vec(),
        }
    }

    /// Append `datagram` if the GSO rules allow it (at most `max_segments` segments and
    /// [`MAX_BATCH_BYTES`] in all).
    pub fn try_push(&mut self, datagram: &[u8], max_segments: usize) -> bool {
        if self.closed
            || datagram.is_empty()
            || datagram.len() > self.segment
            || self.count >= max_segments.min(MAX_BATCH_SEGMENTS)
            || self.bytes.len() + datagram.len() > MAX_BATCH_BYTES
        {
            return false;
        }
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.segment;
        true
    }

    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// Datagrams in the run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Payload bytes in the run.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The run as one transmit: GSO when it holds more than one datagram.
    pub fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.destination,
            ecn: None,
            contents: &self.bytes,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        }
    }

    /// The datagrams of this run, in order, each as its own run (to resend them singly
    /// when the kernel refuses GSO).
    pub fn split(&self) -> impl Iterator<Item = GsoRun> + '_ {
        self.bytes
            .chunks(self.segment.max(1))
            .map(|d| GsoRun::new(self.destination, d))
    }
}

/// Output of one UDP socket, queued as GSO runs until the next flush.
#[derive(Debug)]
pub struct SendBatcher {
    socket: Arc<UdpSocket>,
    state: UdpSocketState,
    pending: Mutex<Pending>,
    /// Serialises flushes, so runs leave in the order they were queued.
    flushing: tokio::sync::Mutex<()>,
    sent_batches: AtomicU64,
    sent_datagrams: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    runs: Vec<GsoRun>,
    bytes: usize,
}

impl SendBatcher {
    fn new(socket: Arc<UdpSocket>) -> io::Result<SendBatcher> {
        let state = UdpSocketState::new(UdpSockRef::from(&*socket))?;
        Ok(SendBatcher {
            socket,
            state,
            pending: Mutex::new(Pending::default()),
            flushing: tokio::sync::Mutex::new(()),
            sent_batches: AtomicU64::new(0),
            sent_datagrams: AtomicU64::new(0),
        })
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_BATCH_SEGMENTS)
    }

    /// Queue `datagram` for `destination`. Returns whether the batcher held nothing
    /// before (it must then be flushed by someone) and whether so much is queued that the
    /// caller should flush now.
    fn push(&self, datagram: &[u8], destination: SocketAddr) -> (bool, bool) {
        let max_segments = self.max_segments();
        let mut pending = lock(&self.pending);
        let was_empty = pending.runs.is_empty();
        pending.bytes += datagram.len();
        // Append to this destination's latest run (later runs go elsewhere, so the order
        // per destination is kept); otherwise start a new run.
        let appended = pending
            .runs
            .iter_mut()
            .rev()
            .find(|r| r.destination == destination)
            .is_some_and(|r| r.try_push(datagram, max_segments));
        if !appended {
            pending.runs.push(GsoRun::new(destination, datagram));
        }
        (was_empty, pending.bytes >= FLUSH_BYTES)
    }

    /// Send everything queued so far.
    pub async fn flush(&self) {
        let _serial = self.flushing.lock().await;
        let runs = {
            let mut pending = lock(&self.pending);
            pending.bytes = 0;
            std::mem::take(&mut pending.runs)
        };
        for run in &runs {
            self.send_run(run).await;
        }
    }

    async fn send_run(&self, run: &GsoRun) {
        match self.send(&run.transmit()).await {
            Ok(()) => {
                self.sent_batches.fetch_add(1, Ordering::Relaxed);
                self.sent_datagrams
                    .fetch_add(run.count as u64, Ordering::Relaxed);
            }
            // quinn-udp turns GSO off for the socket when the kernel refuses it; send this
            // run one datagram at a time.
            Err(e) if run.count > 1 => {
                tracing::debug!(error = %e, to = %run.destination, "GSO send failed; resending singly");
                for single in run.split() {
                    if let Err(e) = self.send(&single.transmit()).await {
                        tracing::debug!(error = %e, to = %run.destination, "relay send failed");
                    }
                }
            }
            // UDP: a datagram the kernel refuses is lost, as it would be on the wire.
            Err(e) => tracing::debug!(error = %e, to = %run.destination, "relay send failed"),
        }
    }

    async fn send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&*self.socket), transmit)
            })
            .await
    }

    /// GSO batches and datagrams sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent_batches.load(Ordering::Relaxed),
            self.sent_datagrams.load(Ordering::Relaxed),
        )
    }
}

/// One relay: its relay sockets by advertised address (for the in-memory hand-over), the
/// sockets that hold unsent output, its peer-address policy and allocation quota.
#[derive(Debug)]
pub struct RelayPlane {
    /// Read for every relayed datagram, written when an allocation starts or ends.
    relays: RwLock<HashMap<SocketAddr, Weak<RelayConn>>>,
    /// Batchers that queued output since the last [`RelayPlane::flush`].
    dirty: Mutex<Vec<Arc<SendBatcher>>>,
    /// Receive buffers not in use. A socket takes buffers when it is readable and gives
    /// them back once it has handed out what they held, so an idle allocation holds none.
    spare_buffers: Mutex<Vec<Vec<u8>>>,
    /// Which peers the relay sockets may exchange datagrams with.
    policy: PeerPolicy,
    /// Live allocations per user and in all.
    quota: Mutex<AllocationQuota>,
    /// Datagrams dropped because the policy refused their peer.
    denied: AtomicU64,
    /// Payload bytes the relay sockets sent toward peers (or handed to another allocation).
    bytes_to_peers: AtomicU64,
    /// Payload bytes the relay sockets received from peers (or from another allocation).
    bytes_from_peers: AtomicU64,
}

impl Default for RelayPlane {
    /// The default deny list and quotas.
    fn default() -> Self {
        RelayPlane::new(PeerPolicy::default(), AllocationQuota::default())
    }
}

impl RelayPlane {
    pub fn new(policy: PeerPolicy, quota: AllocationQuota) -> RelayPlane {
        RelayPlane {
            relays: RwLock::default(),
            dirty: Mutex::default(),
            spare_buffers: Mutex::default(),
            policy,
            quota: Mutex::new(quota),
            denied: AtomicU64::new(0),
            bytes_to_peers: AtomicU64::new(0),
            bytes_from_peers: AtomicU64::new(0),
        }
    }

    /// May this relay exchange datagrams with `peer`? The relayed address of a live
    /// allocation of this relay always may (the in-memory hand-over).
    pub fn peer_allowed(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        let live = read(&self.relays)
            .get(&peer)
            .is_some_and(|w| w.strong_count() > 0);
        self.policy.check(peer, live)
    }

    /// Would one more allocation of `user` fit the quota?
    pub fn quota_check(&self, user: &str) -> Result<(), QuotaExceeded> {
        lock(&self.quota).check(user)
    }

    /// Live allocations of `user`, and in all.
    pub fn allocations(&self, user: &str) -> (usize, usize) {
        let quota = lock(&self.quota);
        (quota.held_by(user), quota.total())
    }

    /// Live allocations in all.
    pub fn total_allocations(&self) -> usize {
        lock(&self.quota).total()
    }

    /// Payload bytes relayed so far: (sent toward peers, received from peers) by the
    /// allocations' relay sockets.
    pub fn relayed_bytes(&self) -> (u64, u64) {
        (
            self.bytes_to_peers.load(Ordering::Relaxed),
            self.bytes_from_peers.load(Ordering::Relaxed),
        )
    }

    /// Datagrams dropped so far because the policy refused their peer.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    fn count_to_peers(&self, len: usize) {
        self.bytes_to_peers.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn count_from_peers(&self, len: usize) {
        self.bytes_from_peers
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn count_denied(&self, peer: SocketAddr, why: PeerDenied, direction: &str) {
        let denied = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
        if denied.is_power_of_two() {
            tracing::debug!(%peer, %why, direction, denied, "relay datagram refused by the peer policy");
        }
    }

    /// `n` receive buffers, from the spares where there are some.
    fn take_buffers(&self, n: usize) -> Vec<Vec<u8>> {
        let mut taken = {
            let mut spare = lock(&self.spare_buffers);
            let keep = spare.len().saturating_sub(n);
            spare.split_off(keep)
        };
        taken.resize_with(n, || vec![0; RECV_BUFFER_BYTES]);
        taken
    }

    /// Give receive buffers back; beyond [`SPARE_RECV_BUFFERS`] they are freed.
    fn give_back(&self, buffers: &mut Vec<Vec<u8>>) {
        let mut spare = lock(&self.spare_buffers);
        let room = SPARE_RECV_BUFFERS.saturating_sub(spare.len());
        spare.extend(buffers.drain(..).take(room));
    }

    /// Receive buffers kept for reuse right now (tests).
    pub fn spare_recv_buffers(&self) -> usize {
        lock(&self.spare_buffers).len()
    }

    fn relay(&self, addr: &SocketAddr) -> Option<Arc<RelayConn>> {
        read(&self.relays).get(addr).and_then(Weak::upgrade)
    }

    fn insert(&self, conn: &Arc<RelayConn>) {
        write(&self.relays).insert(conn.advertised, Arc::downgrade(conn));
    }

    /// Forget `addr` if it still names the socket at `ptr`.
    fn remove(&self, addr: &SocketAddr, ptr: *const RelayConn) {
        let mut relays = write(&self.relays);
        if relays.get(addr).is_some_and(|w| w.as_ptr() == ptr) {
            relays.remove(addr);
        }
    }

    /// Relay sockets currently registered.
    pub fn len(&self) -> usize {
        read(&self.relays).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Send the output every socket of this relay holds. Called by every task of the relay
    /// before it waits for input: what one task queued on any socket never waits for that
    /// socket's own task.
    pub async fn flush(&self) {
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        for batcher in dirty {
            batcher.flush().await;
        }
    }
}

/// One received datagram inside a [`BatchedSocket`]'s receive buffers.
#[derive(Debug, Clone, Copy)]
struct Received {
    buffer: usize,
    offset: usize,
    len: usize,
    from: SocketAddr,
}

#[derive(Debug, Default)]
struct RecvState {
    buffers: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    queue: VecDeque<Received>,
    /// Buffers to take for the next read ([`next_recv_batch`]).
    batch: usize,
}

/// Buffers for the next `recvmmsg` after one that filled `used` of the `had` it was given:
/// twice as many after a read that filled them all, else twice what it used, between one
/// and `max`. A busy socket is back at `max` within a few reads; one that sees a datagram
/// now and then (a relay nobody relays through, answering STUN) takes one buffer instead
/// of a whole batch, whose pages its allocator would otherwise keep resident.
fn next_recv_batch(used: usize, had: usize, max: usize) -> usize {
    used.min(had).saturating_mul(2).clamp(1, max.max(1))
}

/// A UDP socket of the relay: reads with `recvmmsg` and GRO, handed out one datagram at a
/// time; writes queued as GSO runs until the relay flushes.
#[derive(Debug)]
struct BatchedSocket {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    recv: tokio::sync::Mutex<RecvState>,
    /// Receive buffers per `recvmmsg`, taken from the relay's spares when the socket is
    /// readable and given back once their datagrams are handed out.
    recv_buffers: usize,
    batcher: Arc<SendBatcher>,
    plane: Arc<RelayPlane>,
}

impl BatchedSocket {
    fn new(socket: UdpSocket, recv_buffers: usize, plane: &Arc<RelayPlane>) -> io::Result<Self> {
        let socket = Arc::new(socket);
        let local = socket.local_addr()?;
        let recv_buffers = recv_buffers.clamp(1, RECV_BUFFERS);
        // The batcher's socket state (GRO, GSO and cmsg setup) serves reads too.
        let batcher = Arc::new(SendBatcher::new(Arc::clone(&socket))?);
        Ok(BatchedSocket {
            socket,
            local,
            recv: tokio::sync::Mutex::new(RecvState {
                meta: vec![RecvMeta::default(); recv_buffers],
                batch: 1,
                ..RecvState::default()
            }),
            recv_buffers,
            batcher,
            plane: Arc::clone(plane),
        })
    }

    /// The next datagram: from what the last batched read brought in, else from a new one.
    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut guard = self.recv.lock().await;
        let state = &mut *guard;
        loop {
            if let Some(d) = state.queue.pop_front() {
                let n = d.len.min(buf.len());
                let src = &state.buffers[d.buffer][d.offset..d.offset + n];
                buf[..n].copy_from_slice(src);
                if state.queue.is_empty() {
                    self.plane.give_back(&mut state.buffers);
                }
                return Ok((n, d.from));
            }
            // Wait without buffers; take them only for the read itself.
            self.socket.readable().await?;
            if state.buffers.is_empty() {
                state.buffers = self.plane.take_buffers(state.batch);
            }
            let RecvState {
                buffers,
                meta,
                queue,
                batch,
            } = &mut *state;
            // The read and the queueing happen in one poll after the wait, so a cancelled
            // receive (the relay's tasks select on a close signal) loses nothing.
            let read = self.socket.try_io(Interest::READABLE, || {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                self.batcher
                    .state
                    .recv(UdpSockRef::from(&*self.socket), &mut slices, meta)
            });
            let count = match read {
                Ok(count) => {
                    *batch = next_recv_batch(count, buffers.len(), self.recv_buffers);
                    count
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Spurious readiness: give the buffers back before waiting again.
                    self.plane.give_back(buffers);
                    continue;
                }
                Err(e) => {
                    self.plane.give_back(buffers);
                    return Err(e);
                }
            };
            for (buffer, m) in meta.iter().enumerate().take(count) {
                let stride = m.stride.max(1);
                let mut offset = 0;
                // A zero-length datagram still counts as one.
                loop {
                    let len = stride.min(m.len - offset);
                    queue.push_back(Received {
                        buffer,
                        offset,
                        len,
                        from: m.addr,
                    });
                    offset += len;
                    if offset >= m.len {
                        break;
                    }
                }
            }
        }
    }

    /// Before a read that may wait: unless a received datagram is already queued, send
    /// what every socket of this relay holds, so nothing this relay produced waits with us.
    async fn flush_if_idle(&self) {
        if !self.recv.try_lock().is_ok_and(|s| !s.queue.is_empty()) {
            self.plane.flush().await;
        }
    }

    /// Queue `buf` for `target`; it leaves at the relay's next flush.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) {
        let (was_empty, full) = self.batcher.push(buf, target);
        if was_empty {
            lock(&self.plane.dirty).push(Arc::clone(&self.batcher));
        }
        if full {
            self.batcher.flush().await;
        }
    }
}

/// `impl Conn` for an unconnected relay socket (`connect`/`send` refused, no remote
/// address) with a [`BatchedSocket`] in `io`. Its own logic lives in three inherent
/// methods: `receive` (one datagram), `send_datagram` and `shut` (on close).
macro_rules! unconnected_conn {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl Conn for $ty {
            async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
                Err(io::Error::from(io::ErrorKind::Unsupported).into())
            }

            async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
                Ok(self.receive(buf).await?.0)
            }

            async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
                Ok(self.receive(buf).await?)
            }

            async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
                Err(io::Error::from(io::ErrorKind::NotConnected).into())
            }

            async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
                self.send_datagram(buf, target).await;
                Ok(buf.len())
            }

            fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
                Ok(self.io.local)
            }

            fn remote_addr(&self) -> Option<SocketAddr> {
                None
            }

            async fn close(&self) -> webrtc_util::Result<()> {
                self.shut().await;
                Ok(())
            }

            fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
                self
            }
        }
    };
}

/// What a [`ListenerGate`] decides about one datagram read by the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// Hand it to the TURN server unchanged.
    Pass,
    /// Drop it silently.
    Drop,
    /// Hand the TURN server this datagram instead.
    Replace(Vec<u8>),
    /// Send this answer back to the sender and drop the datagram.
    Answer(Vec<u8>),
}

/// Looks at every datagram the listener reads before the TURN server sees it. Called from
/// the server's single read loop: the server has finished with one datagram before the
/// gate sees the next.
pub trait ListenerGate: Send + Sync + std::fmt::Debug {
    fn inspect(&self, datagram: &[u8], from: SocketAddr) -> GateVerdict;
}

/// The relay's listening socket.
#[derive(Debug)]
pub struct ListenerConn {
    io: BatchedSocket,
    gate: Option<Arc<dyn ListenerGate>>,
}

impl ListenerConn {
    /// Wrap a bound, non-blocking socket serving `plane`.
    pub fn new(socket: UdpSocket, plane: &Arc<RelayPlane>) -> io::Result<ListenerConn> {
        Ok(ListenerConn {
            io: BatchedSocket::new(socket, RECV_BUFFERS, plane)?,
            gate: None,
        })
    }

    /// Let `gate` inspect every datagram before the TURN server reads it.
    pub fn with_gate(mut self, gate: Arc<dyn ListenerGate>) -> ListenerConn {
        self.gate = Some(gate);
        self
    }

    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            self.io.flush_if_idle().await;
            let (n, from) = self.io.receive(buf).await?;
            let Some(gate) = &self.gate else {
                return Ok((n, from));
            };
            match gate.inspect(&buf[..n], from) {
                GateVerdict::Pass => return Ok((n, from)),
                GateVerdict::Drop => {}
                GateVerdict::Replace(datagram) => {
                    let n = datagram.len().min(buf.len());
                    buf[..n].copy_from_slice(&datagram[..n]);
                    return Ok((n, from));
                }
                GateVerdict::Answer(answer) => self.io.send_to(&answer, from).await,
            }
        }
    }

    async fn send_datagram(&self, buf: &[u8], target: SocketAddr) {
        self.io.send_to(buf, target).await;
    }

    async fn shut(&self) {
        self.io.plane.flush().await;
    }
}

unconnected_conn!(ListenerConn);

/// Datagrams handed over by other allocations, and emptied buffers kept for reuse (the
/// buffers move between the relay's threads; recycling them keeps the allocator's
/// cross-thread frees, and its lock, off the per-datagram path).
#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    spare: Vec<Vec<u8>>,
}

/// Emptied buffers an inbox keeps for reuse.
const SPARE_BUFFERS: usize = 256;
/// Receive buffers of an allocation's relay socket (the listener has [`RECV_BUFFERS`]):
/// 4 × 64 KiB, taken from the relay's spares for a read and given back once the datagrams
/// are handed out, so an idle allocation holds none (allocations that only talk to other
/// allocations of this relay never read from the kernel at all).
const RELAY_RECV_BUFFERS: usize = 4;

/// An allocation's relay socket: datagrams between allocations of the same relay move in
/// memory; everything else uses the bound socket, with batched reads and writes, and only
/// with peers the relay's [`PeerPolicy`] allows.
#[derive(Debug)]
pub struct RelayConn {
    io: BatchedSocket,
    /// The relayed address clients were told (and peers send to).
    advertised: SocketAddr,
    inbox: Mutex<Inbox>,
    arrived: Notify,
    dropped: AtomicU64,
    /// The user whose quota this allocation counts against.
    owner: String,
    /// Set once the allocation left the plane and gave its quota back.
    released: AtomicBool,
}

/// Why a relay socket could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error("relay socket: {0}")]
    Io(#[from] io::Error),
}

impl RegisterError {
    /// STUN error code for the client: 486 over quota, 508 otherwise.
    pub fn code(&self) -> u16 {
        match self {
            RegisterError::Quota(q) => q.code(),
            RegisterError::Io(_) => 508,
        }
    }
}

impl RelayConn {
    /// Register a relay socket bound on `socket` and advertised as `advertised`, counted
    /// against `owner`'s allocation quota until it is closed or dropped.
    pub fn register(
        socket: UdpSocket,
        advertised: SocketAddr,
        plane: &Arc<RelayPlane>,
        owner: &str,
    ) -> Result<Arc<RelayConn>, RegisterError> {
        let io = BatchedSocket::new(socket, RELAY_RECV_BUFFERS, plane)?;
        lock(&plane.quota).acquire(owner)?;
        let conn = Arc::new(RelayConn {
            io,
            advertised,
            inbox: Mutex::new(Inbox::default()),
            arrived: Notify::new(),
            dropped: AtomicU64::new(0),
            owner: owner.to_string(),
            released: AtomicBool::new(false),
        });
        plane.insert(&conn);
        Ok(conn)
    }

    /// Leave the plane and give the quota back (once).
    fn release(&self) {
        let plane = &self.io.plane;
        plane.remove(&self.advertised, self as *const RelayConn);
        if !self.released.swap(true, Ordering::AcqRel) {
            lock(&plane.quota).release(&self.owner);
        }
    }

    fn deliver(&self, datagram: &[u8], from: SocketAddr) {
        {
            let mut inbox = lock(&self.inbox);
            if inbox.queue.len() >= INBOX_DATAGRAMS {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::debug!(relay = %self.advertised, dropped, "relay inbox full; datagram dropped");
                }
                return;
            }
            let mut buffer = inbox.spare.pop().unwrap_or_default();
            buffer.clear();
            buffer.extend_from_slice(datagram);
            inbox.queue.push_back((buffer, from));
        }
        self.arrived.notify_one();
    }

    /// Datagrams dropped because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for RelayConn {
    fn drop(&mut self) {
        self.release();
    }
}

impl RelayConn {
    /// The next datagram: handed over by another allocation, or read from the socket.
    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            {
                let mut inbox = lock(&self.inbox);
                if let Some((datagram, from)) = inbox.queue.pop_front() {
                    let n = datagram.len().min(buf.len());
                    buf[..n].copy_from_slice(&datagram[..n]);
                    self.io.plane.count_from_peers(n);
                    if inbox.spare.len() < SPARE_BUFFERS {
                        inbox.spare.push(datagram);
                    }
                    return Ok((n, from));
                }
            }
            self.io.flush_if_idle().await;
            tokio::select! {
                // `notify_one` keeps a permit when nobody waits, so a hand-over between
                // the empty check and here is not missed.
                _ = self.arrived.notified() => {}
                received = self.io.receive(buf) => {
                    let (n, from) = received?;
                    // From the kernel: only from peers the policy allows.
                    match self.io.plane.peer_allowed(from) {
                        Ok(()) => {
                            self.io.plane.count_from_peers(n);
                            return Ok((n, from));
                        }
                        Err(why) => self.io.plane.count_denied(from, why, "in"),
                    }
                }
            }
        }
    }

    /// To another allocation of this relay in memory, else through the socket if the
    /// policy allows `target` (a refused datagram is dropped, as a firewall would).
    async fn send_datagram(&self, buf: &[u8], target: SocketAddr) {
        let plane = &self.io.plane;
        if let Some(peer) = plane.relay(&target) {
            plane.count_to_peers(buf.len());
            peer.deliver(buf, self.advertised);
        } else if let Err(why) = plane.policy.check(target, false) {
            plane.count_denied(target, why, "out");
        } else {
            plane.count_to_peers(buf.len());
            self.io.send_to(buf, target).await;
        }
    }

    async fn shut(&self) {
        self.release();
    }
}

unconnected_conn!(RelayConn);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bound() -> UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        UdpSocket::from_std(s).unwrap()
    }

    /// A plane whose policy allows 127.0.0.1, where the tests' sockets live.
    fn loopback_plane() -> Arc<RelayPlane> {
        let allow = vec!["127.0.0.1/32".parse().unwrap()];
        Arc::new(RelayPlane::new(
            PeerPolicy::new(allow),
            AllocationQuota::default(),
        ))
    }

    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    async fn recv_n(socket: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while out.len() < n {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("datagram within 5 s")
                .unwrap();
            out.push(buf[..len].to_vec());
        }
        out
    }

    #[tokio::test]
    async fn listener_batched_sends_arrive_in_order_and_intact() {
        let plane = loopback_plane();
        let listener = ListenerConn::new(bound(), &plane).unwrap();
        let (a, b) = (bound(), bound());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Interleaved destinations, runs broken by shorter and longer datagrams.
        let sizes = [1200; 40]
            .into_iter()
            .chain([700, 1200, 1300])
            .chain([1200; 70])
            .chain([100; 5])
            .collect::<Vec<_>>();
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        for (i, &len) in sizes.iter().enumerate() {
            let d = datagram(i, len);
            let (dest, log) = if i % 3 == 0 {
                (a_addr, &mut to_a)
            } else {
                (b_addr, &mut to_b)
            };
            assert_eq!(listener.send_to(&d, dest).await.unwrap(), len);
            log.push(d);
        }
        // Nothing leaves before the relay flushes.
        assert_eq!(listener.io.batcher.sent(), (0, 0));
        plane.flush().await;
        assert_eq!(recv_n(&a, to_a.len()).await, to_a);
        assert_eq!(recv_n(&b, to_b.len()).await, to_b);
        let (batches, datagrams) = listener.io.batcher.sent();
        assert_eq!(datagrams, sizes.len() as u64);
        if listener.io.batcher.max_segments() > 1 {
            assert!(batches < datagrams / 4, "{batches} batches for {datagrams}");
        }
    }

    #[tokio::test]
    async fn listener_gso_batch_is_read_as_single_datagrams() {
        let plane = loopback_plane();
        let listener = ListenerConn::new(bound(), &plane).unwrap();
        let to = listener.local_addr().unwrap();
        let client = bound();
        let client_addr = client.local_addr().unwrap();
        let state = UdpSocketState::new(UdpSockRef::from(&client)).unwrap();
        let sent: Vec<Vec<u8>> = (0..10)
            .map(|i| datagram(i, 1000))
            .chain([datagram(10, 500)])
            .collect();
        let contents = sent.concat();
        let gso = state.max_gso_segments() > 1;
        let transmits: Vec<Transmit<'_>> = if gso {
            vec![Transmit {
                destination: to,
                ecn: None,
                contents: &contents,
                segment_size: Some(1000),
                src_ip: None,
            }]
        } else {
            sent.iter()
                .map(|d| Transmit {
                    destination: to,
                    ecn: None,
                    contents: d,
                    segment_size: None,
                    src_ip: None,
                })
                .collect()
        };
        for t in &transmits {
            client
                .async_io(Interest::WRITABLE, || {
                    state.try_send(UdpSockRef::from(&client), t)
                })
                .await
                .unwrap();
        }
        let mut buf = [0u8; 1500];
        for expected in &sent {
            let (n, from) = listener.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, client_addr);
            assert_eq!(&buf[..n], &expected[..]);
        }
    }

    fn relay(plane: &Arc<RelayPlane>) -> Arc<RelayConn> {
        let socket = bound();
        let advertised = socket.local_addr().unwrap();
        RelayConn::register(socket, advertised, plane, "test").unwrap()
    }

    #[tokio::test]
    async fn relay_conn_denied_peer_is_dropped_both_ways_but_hand_over_works() {
        // Loopback is refused except 127.0.0.2 (allowed) and live relays of this plane.
        let plane = Arc::new(RelayPlane::new(
            PeerPolicy::new(vec!["127.0.0.2/32".parse().unwrap()]),
            AllocationQuota::default(),
        ));
        let (a, b) = (relay(&plane), relay(&plane));
        let outside = bound();
        let friend = {
            let s = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
            s.set_nonblocking(true).unwrap();
            UdpSocket::from_std(s).unwrap()
        };
        a.send_to(b"refused", outside.local_addr().unwrap())
            .await
            .unwrap();
        a.send_to(b"to friend", friend.local_addr().unwrap())
            .await
            .unwrap();
        a.send_to(b"to b", b.advertised).await.unwrap();
        plane.flush().await;
        assert_eq!(plane.denied(), 1);
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"to b"[..], a.advertised));
        assert_eq!(recv_n(&friend, 1).await, vec![b"to friend".to_vec()]);
        // Inbound from a refused source is dropped; an allowed one behind it arrives.
        outside.send_to(b"sneak in", b.advertised).await.unwrap();
        friend.send_to(b"hello", b.advertised).await.unwrap();
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"hello"[..], friend.local_addr().unwrap())
        );
        assert_eq!(plane.denied(), 2);
        // Nothing ever left towards the refused peer.
        let mut probe = [0u8; 64];
        assert!(outside.try_recv_from(&mut probe).is_err());
    }

    #[tokio::test]
    async fn relay_conn_quota_is_counted_and_released_on_close_or_drop() {
        let plane = Arc::new(RelayPlane::new(
            PeerPolicy::default(),
            AllocationQuota::new(2, 3),
        ));
        let a = RelayConn::register(bound(), "127.0.0.1:1".parse().unwrap(), &plane, "u").unwrap();
        let b = RelayConn::register(bound(), "127.0.0.1:2".parse().unwrap(), &plane, "u").unwrap();
        let err =
            RelayConn::register(bound(), "127.0.0.1:3".parse().unwrap(), &plane, "u").unwrap_err();
        assert_eq!(err.code(), 486);
        assert_eq!(plane.quota_check("u"), Err(QuotaExceeded::User(2)));
        let c = RelayConn::register(bound(), "127.0.0.1:4".parse().unwrap(), &plane, "v").unwrap();
        assert_eq!(plane.quota_check("w"), Err(QuotaExceeded::Global(3)));
        // Closing gives the slot back once, also when the socket is dropped afterwards.
        a.close().await.unwrap();
        a.close().await.unwrap();
        drop(a);
        assert_eq!(plane.allocations("u"), (1, 2));
        drop(b);
        drop(c);
        assert_eq!(plane.allocations("u"), (0, 0));
        assert!(plane.is_empty());
    }

    #[tokio::test]
    async fn relay_conn_receive_buffers_return_to_plane_once_handed_out() {
        let plane = loopback_plane();
        let (a, b) = (relay(&plane), relay(&plane));
        let outside = bound();
        let sent: Vec<Vec<u8>> = (0..3).map(|i| datagram(i, 1200)).collect();
        for d in &sent {
            outside.send_to(d, a.local_addr().unwrap()).await.unwrap();
        }
        let mut buf = [0u8; 1500];
        for expected in &sent {
            let (n, _) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &expected[..]);
        }
        // Everything read was handed out: the socket holds no buffers, the relay keeps them.
        assert!(a.io.recv.lock().await.buffers.is_empty());
        let spare = plane.spare_recv_buffers();
        assert!((1..=RELAY_RECV_BUFFERS).contains(&spare), "{spare}");
        // The next socket to read (one buffer for its first read) takes one of those
        // instead of allocating its own.
        outside
            .send_to(b"to b", b.local_addr().unwrap())
            .await
            .unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"to b");
        assert!(b.io.recv.lock().await.buffers.is_empty());
        assert_eq!(plane.spare_recv_buffers(), spare);
    }

    #[tokio::test]
    async fn relay_conn_first_read_takes_one_buffer_not_a_batch() {
        let plane = loopback_plane();
        let a = relay(&plane);
        let outside = bound();
        outside
            .send_to(b"stun", a.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"stun");
        assert_eq!(plane.spare_recv_buffers(), 1);
    }

    #[test]
    fn next_recv_batch_doubles_when_full_and_follows_use_otherwise() {
        // From one buffer to the maximum in five full reads.
        let mut batch = 1;
        let mut seen = vec![batch];
        while batch < 32 {
            batch = next_recv_batch(batch, batch, 32);
            seen.push(batch);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32]);
        assert_eq!(next_recv_batch(32, 32, 32), 32);
        // A read that used fewer sets the next to twice what it used.
        assert_eq!(next_recv_batch(5, 32, 32), 10);
        assert_eq!(next_recv_batch(1, 32, 32), 2);
        // Nothing read (spurious readiness), a zero maximum: still one.
        assert_eq!(next_recv_batch(0, 4, 32), 1);
        assert_eq!(next_recv_batch(3, 4, 0), 1);
        // Never above the maximum, also from a larger earlier batch.
        assert_eq!(next_recv_batch(4, 4, 3), 3);
    }

    #[tokio::test]
    async fn relay_conn_to_same_relay_moves_in_memory_with_relay_source() {
        let table = loopback_plane();
        let (a, b) = (relay(&table), relay(&table));
        let outside = bound();
        a.send_to(b"to b", b.advertised).await.unwrap();
        a.send_to(b"outside", outside.local_addr().unwrap())
            .await
            .unwrap();
        table.flush().await;
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"to b"[..], a.advertised));
        // Not a relay socket of ours: through the kernel, from the bound socket.
        let (n, from) = outside.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"outside"[..], a.local_addr().unwrap())
        );
        // And the outside can still reach a relay socket.
        outside.send_to(b"in", b.advertised).await.unwrap();
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"in"[..], outside.local_addr().unwrap())
        );
    }

    #[tokio::test]
    async fn relay_conn_full_inbox_drops_new_datagrams() {
        let table = loopback_plane();
        let (a, b) = (relay(&table), relay(&table));
        for i in 0..INBOX_DATAGRAMS + 5 {
            a.send_to(&(i as u32).to_be_bytes(), b.advertised)
                .await
                .unwrap();
        }
        assert_eq!(b.dropped(), 5);
        let mut buf = [0u8; 4];
        for i in 0..INBOX_DATAGRAMS {
            let (n, _) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!(u32::from_be_bytes(buf), i as u32, "n={n}");
        }
    }

    #[tokio::test]
    async fn relay_table_forgets_closed_and_dropped_sockets() {
        let table = loopback_plane();
        let (a, b) = (relay(&table), relay(&table));
        assert_eq!(table.len(), 2);
        a.close().await.unwrap();
        assert_eq!(table.len(), 1);
        drop(b);
        assert!(table.is_empty());
        // With the peer gone, a send goes to the socket (and nowhere) instead of failing.
        let c = relay(&table);
        let gone = a.advertised;
        drop(a);
        assert_eq!(c.send_to(b"x", gone).await.unwrap(), 1);
    }
}
