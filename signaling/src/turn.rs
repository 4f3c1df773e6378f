//! TURN relay support: REST-style credentials handed out in the `welcome`, and the
//! embedded relay (the `turn` crate of webrtc-rs) that checks them.
//!
//! Credentials follow the "TURN REST API" convention that coturn implements as
//! `use-auth-secret` / `static-auth-secret`:
//! - username `EXPIRY:CLIENT_ID`, `EXPIRY` in unix seconds;
//! - password `base64(HMAC-SHA1(secret, username))`.
//!
//! The embedded relay accepts exactly those, with a custom [`AuthHandler`] (the crate's
//! stock `LongTermAuthHandler` parses the whole username as a timestamp), and gives its
//! listening and relay sockets 16 MiB kernel buffers (the crate binds relay sockets with the
//! kernel's 208 KiB default, which overflows under a data-channel transfer).
//!
//! It is not an open relay: a [`RelayGate`] looks at every request before the `turn`
//! server does and
//! - answers a request with a bad credential (malformed or expired username, wrong
//!   HMAC) with 401 Unauthorized and a fresh NONCE and REALM, as RFC 8656 wants for the
//!   long-term mechanism (the `turn` crate would answer 400): it hands the server the
//!   request without its MESSAGE-INTEGRITY, which the server answers exactly so;
//! - answers CreatePermission and ChannelBind for a peer the [`PeerPolicy`] refuses with
//!   403 Forbidden, and drops Send indications to such peers (`turn_policy` has the deny
//!   list; `--turn-allow-peer` CIDRs override it); the relay sockets apply the same policy
//!   to every datagram they send or receive through the kernel;
//! - answers an Allocate beyond the quota (10 per user, 1000 in all by default) with 486
//!   Allocation Quota Reached. An allocation's slot is freed when it ends (expiry, Refresh
//!   with lifetime 0, shutdown).
//!
//! Credentials live 10 minutes by default. An allocation outlives the credential that made
//! it: it keeps relaying until its own lifetime ends, but every Refresh, CreatePermission
//! and ChannelBind needs a credential that is valid at that moment (the client gets renewed
//! ones through signaling), else it is answered 401.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND, Message, MessageType,
};
use stun::textattrs::TextAttribute;
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::protocol::IceServer;
use crate::relay_plane::{GateVerdict, ListenerConn, ListenerGate, RelayConn, RelayPlane, lock};
use crate::turn_policy::{AllocationQuota, PeerPolicy};
pub use crate::turn_policy::{DEFAULT_ALLOCATIONS_PER_USER, DEFAULT_MAX_ALLOCATIONS, IpNet};

/// Realm of the embedded relay (any realm works with coturn's `use-auth-secret`).
pub const TURN_REALM: &str = "peershare";
/// Default lifetime of issued TURN credentials: 10 minutes. Running allocations outlive
/// it; refreshes need a currently valid credential.
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Kernel buffer size requested for the embedded relay's sockets: 16 MiB, because a relay
/// socket must absorb a whole 4 MiB SCTP window of bursts (kernel accounting roughly
/// doubles each datagram) while the relay task waits for a CPU (docs/RELAY.md).
pub const RELAY_SOCKET_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Conventional TURN port.
pub const DEFAULT_TURN_PORT: u16 = 3478;

type HmacSha1 = Hmac<Sha1>;

/// Which TURN relay, if any, the signaling server hands out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TurnMode {
    /// No STUN/TURN entries are added to the welcome (the library default).
    #[default]
    Disabled,
    /// Run a TURN (and STUN) server in-process, started and stopped with the signaling
    /// server.
    Embedded {
        /// UDP address to listen on (port 0 = ephemeral). Relay sockets are bound on the
        /// same IP.
        listen: SocketAddr,
        /// Address advertised to clients (in the welcome URLs and as the relayed
        /// address). `None` = the listening IP, or 127.0.0.1 when that is unspecified.
        public_ip: Option<IpAddr>,
        /// Shared secret for the credentials; `None` = random per server.
        secret: Option<String>,
    },
    /// Hand out credentials for an external relay (coturn with `use-auth-secret`).
    External {
        /// `turn:HOST:PORT[?transport=udp]` URLs; a `stun:HOST:PORT` entry is derived from
        /// each `turn:` URL.
        urls: Vec<String>,
        /// coturn's `static-auth-secret`.
        secret: String,
    },
}

impl TurnMode {
    /// Embedded relay on `listen` with a random secret, advertising the listening IP.
    pub fn embedded(listen: SocketAddr) -> Self {
        TurnMode::Embedded {
            listen,
            public_ip: None,
            secret: None,
        }
    }
}

/// TURN settings of a [`ServerConfig`](crate::ServerConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    pub mode: TurnMode,
    /// How long issued credentials stay valid (default 10 min). The embedded relay answers
    /// new allocations, refreshes, permissions and channel binds with an expired username
    /// with 401; running allocations keep relaying until their own lifetime ends.
    pub credential_lifetime: Duration,
    /// Peer networks the embedded relay may relay to even though the default deny list
    /// (loopback, private, link-local, …; see `turn_policy`) or the relay's own address
    /// covers them (default none). `--turn-allow-peer`.
    pub allow_peers: Vec<IpNet>,
    /// Most allocations one client may hold on the embedded relay (default 10); one more
    /// is answered 486.
    pub max_allocations_per_user: usize,
    /// Most allocations the embedded relay holds in all (default 1000).
    pub max_allocations: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            mode: TurnMode::Disabled,
            credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
            allow_peers: Vec::new(),
            max_allocations_per_user: DEFAULT_ALLOCATIONS_PER_USER,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
        }
    }
}

/// One set of TURN REST credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Credentials for `client_id` that expire at `expiry_unix` (seconds).
pub fn turn_credentials(secret: &str, client_id: &str, expiry_unix: u64) -> TurnCredentials {
    let username = format!("{expiry_unix}:{client_id}");
    let password = turn_password(secret, &username);
    TurnCredentials { username, password }
}

/// Split a username `EXPIRY:CLIENT` into its expiry (unix seconds) and client part.
/// `None` when it does not have that shape (no colon, non-numeric expiry, empty client).
pub fn parse_turn_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, client) = username.split_once(':')?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) || client.is_empty() {
        return None;
    }
    Some((expiry.parse().ok()?, client))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random shared secret (32 bytes, base64).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    BASE64.encode(bytes)
}

/// Hands out ICE server entries with fresh credentials (one per welcome).
#[derive(Debug, Clone)]
pub(crate) struct TurnIssuer {
    stun_urls: Vec<String>,
    turn_urls: Vec<String>,
    secret: String,
    lifetime: Duration,
}

impl TurnIssuer {
    pub fn new(
        stun_urls: Vec<String>,
        turn_urls: Vec<String>,
        secret: String,
        lifetime: Duration,
    ) -> Self {
        TurnIssuer {
            stun_urls,
            turn_urls,
            secret,
            lifetime,
        }
    }

    /// For an external relay: its `turn:` URLs, and a `stun:` URL for each.
    pub fn external(urls: &[String], secret: String, lifetime: Duration) -> Self {
        let stun_urls = urls.iter().filter_map(|u| stun_url_for(u)).collect();
        TurnIssuer::new(stun_urls, urls.to_vec(), secret, lifetime)
    }

    /// For the embedded relay reachable at `addr`.
    pub fn embedded(addr: SocketAddr, secret: String, lifetime: Duration) -> Self {
        TurnIssuer::new(
            vec![format!("stun:{addr}")],
            vec![format!("turn:{addr}?transport=udp")],
            secret,
            lifetime,
        )
    }

    /// The STUN entry and the TURN entry with credentials for `client_id`.
    pub fn ice_servers(&self, client_id: &str) -> Vec<IceServer> {
        let expiry = unix_now().saturating_add(self.lifetime.as_secs());
        let creds = turn_credentials(&self.secret, client_id, expiry);
        let mut out = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            out.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(creds.username),
                credential: Some(creds.password),
            });
        }
        out
    }
}

/// `turn:HOST:PORT?transport=udp` → `stun:HOST:PORT`; `None` for other schemes.
fn stun_url_for(url: &str) -> Option<String> {
    let rest = url.strip_prefix("turn:")?;
    let host_port = rest.split('?').next().unwrap_or(rest);
    (!host_port.is_empty()).then(|| format!("stun:{host_port}"))
}

/// Whether a client ID is a member of some session right now (the signaling server's
/// registry, for the embedded relay in the same process).
pub type MemberCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The embedded relay's authentication: accepts `EXPIRY:CLIENT` usernames that have not
/// expired, or whose client is still a joined member (its credentials are renewed by
/// its membership: a relayed connection outlives the credential's lifetime while its
/// owner stays in the session), and returns the long-term key for the password
/// HMAC(secret, username). A forged password then fails the message-integrity check.
#[derive(Clone)]
pub struct RestAuthHandler {
    secret: String,
    members: Option<MemberCheck>,
}

impl std::fmt::Debug for RestAuthHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuthHandler").finish_non_exhaustive()
    }
}

impl RestAuthHandler {
    pub fn new(secret: impl Into<String>) -> Self {
        RestAuthHandler {
            secret: secret.into(),
            members: None,
        }
    }

    /// Expired credentials of clients that `members` says are joined stay valid.
    pub fn with_members(mut self, members: MemberCheck) -> Self {
        self.members = Some(members);
        self
    }

    /// The long-term key for `username`, or why it is refused, at time `now_unix`.
    pub fn key_at(&self, username: &str, realm: &str, now_unix: u64) -> Result<Vec<u8>, String> {
        let (expiry, client) = parse_turn_username(username)
            .ok_or_else(|| format!("malformed TURN username {username:?}"))?;
        let joined = || self.members.as_ref().is_some_and(|m| m(client));
        if expiry < now_unix && !joined() {
            return Err(format!(
                "expired TURN username {username:?} of a client that is not in a session"
            ));
        }
        let password = turn_password(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

impl AuthHandler for RestAuthHandler {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.key_at(username, realm, unix_now()).map_err(|e| {
            tracing::debug!(%src_addr, "TURN auth refused: {e}");
            turn::Error::Other(e)
        })
    }
}

/// STUN's magic cookie (RFC 5389), the XOR key of XOR-PEER-ADDRESS.
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The embedded relay's gate (see the module documentation): 401 for bad credentials,
/// 403 for refused peers, 486 over quota, before the `turn` server sees a request.
#[derive(Debug)]
pub struct RelayGate {
    auth: RestAuthHandler,
    plane: Arc<RelayPlane>,
    /// The user of the Allocate request the server is handling right now (the server
    /// handles one datagram at a time); the relay address generator takes it to count the
    /// new allocation against that user's quota.
    allocating: std::sync::Mutex<Option<String>>,
}

impl RelayGate {
    pub fn new(auth: RestAuthHandler, plane: Arc<RelayPlane>) -> RelayGate {
        RelayGate {
            auth,
            plane,
            allocating: std::sync::Mutex::new(None),
        }
    }

    /// The user of the Allocate being handled, once.
    fn take_allocating(&self) -> Option<String> {
        lock(&self.allocating).take()
    }

    /// The verdict on `datagram` from `from` at time `now_unix`.
    pub fn inspect_at(&self, datagram: &[u8], from: SocketAddr, now_unix: u64) -> GateVerdict {
        *lock(&self.allocating) = None;
        // STUN messages start with two zero bits; ChannelData (0b01) only reaches peers
        // the policy allowed when the channel was bound.
        if datagram.first().is_none_or(|b| b & 0xC0 != 0) {
            return GateVerdict::Pass;
        }
        let mut m = Message::new();
        m.raw = datagram.to_vec();
        if m.decode().is_err() {
            return GateVerdict::Pass;
        }
        let method = m.typ.method;
        if m.typ.class == CLASS_INDICATION {
            if method == METHOD_SEND
                && let Some(peers) = peer_addresses(&m)
                && let Some((peer, why)) = self.first_denied(&peers)
            {
                tracing::debug!(%from, %peer, %why, "TURN Send indication refused");
                return GateVerdict::Drop;
            }
            return GateVerdict::Pass;
        }
        let authenticated = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        // Without MESSAGE-INTEGRITY the server answers 401 with a nonce; without USERNAME,
        // REALM or NONCE it answers 400, as RFC 8489 says.
        if m.typ.class != CLASS_REQUEST
            || !authenticated.contains(&method)
            || !m.contains(ATTR_MESSAGE_INTEGRITY)
            || !m.contains(ATTR_NONCE)
        {
            return GateVerdict::Pass;
        }
        let (Ok(username), Ok(realm)) = (
            TextAttribute::get_from_as(&m, ATTR_USERNAME),
            TextAttribute::get_from_as(&m, ATTR_REALM),
        ) else {
            return GateVerdict::Pass;
        };
        let key = match self.auth.key_at(&username.text, &realm.text, now_unix) {
            Ok(key) => key,
            Err(e) => {
                tracing::debug!(%from, "TURN request unauthorized: {e}");
                return GateVerdict::Replace(without_attributes(datagram));
            }
        };
        if MessageIntegrity(key.clone()).check(&mut m.clone()).is_err() {
            tracing::debug!(%from, "TURN request unauthorized: wrong MESSAGE-INTEGRITY");
            return GateVerdict::Replace(without_attributes(datagram));
        }
        if method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND {
            if let Some(peers) = peer_addresses(&m)
                && let Some((peer, why)) = self.first_denied(&peers)
            {
                tracing::debug!(%from, %peer, %why, "TURN permission refused");
                return error_answer(&m, why.code(), "Forbidden", key);
            }
        } else if method == METHOD_ALLOCATE {
            let user = parse_turn_username(&username.text).map_or("", |(_, client)| client);
            if let Err(why) = self.plane.quota_check(user) {
                tracing::debug!(%from, user, %why, "TURN allocation refused");
                return error_answer(&m, why.code(), "Allocation Quota Reached", key);
            }
            *lock(&self.allocating) = Some(user.to_string());
        }
        GateVerdict::Pass
    }

    fn first_denied(
        &self,
        peers: &[SocketAddr],
    ) -> Option<(SocketAddr, crate::turn_policy::PeerDenied)> {
        peers
            .iter()
            .find_map(|&peer| self.plane.peer_allowed(peer).err().map(|why| (peer, why)))
    }
}

impl ListenerGate for RelayGate {
    fn inspect(&self, datagram: &[u8], from: SocketAddr) -> GateVerdict {
        self.inspect_at(datagram, from, unix_now())
    }
}

/// Every XOR-PEER-ADDRESS of `m`; `None` when one is malformed (the server refuses it).
fn peer_addresses(m: &Message) -> Option<Vec<SocketAddr>> {
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| xor_address(&a.value, &m.transaction_id.0))
        .collect()
}

/// Decode an XOR-encoded address attribute value (RFC 8489 §14.2).
fn xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value.get(2)?, value.get(3)?].map(|b| *b))
        ^ (MAGIC_COOKIE >> 16) as u16;
    let key: Vec<u8> = cookie.iter().chain(transaction_id).copied().collect();
    let ip = match (value.get(1)?, value.get(4..)?) {
        (1, raw) if raw.len() == 4 => {
            let mut b = [0u8; 4];
            for (i, out) in b.iter_mut().enumerate() {
                *out = raw[i] ^ key[i];
            }
            IpAddr::from(b)
        }
        (2, raw) if raw.len() == 16 => {
            let mut b = [0u8; 16];
            for (i, out) in b.iter_mut().enumerate() {
                *out = raw[i] ^ key[i];
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `datagram` (a decoded STUN request) with its attributes removed: same type and
/// transaction, no MESSAGE-INTEGRITY, so the server answers 401 with a fresh nonce.
fn without_attributes(datagram: &[u8]) -> Vec<u8> {
    let mut out = datagram[..20.min(datagram.len())].to_vec();
    if let Some(length) = out.get_mut(2..4) {
        length.copy_from_slice(&[0, 0]);
    }
    out
}

/// An error response to `m` with `code`, signed with the request's key.
fn error_answer(m: &Message, code: u16, reason: &str, key: Vec<u8>) -> GateVerdict {
    let mut out = Message::new();
    let built = out.build(&[
        Box::new(m.transaction_id),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason.as_bytes().to_vec(),
        }),
        Box::new(MessageIntegrity(key)),
    ]);
    match built {
        Ok(()) => GateVerdict::Answer(out.raw),
        Err(e) => {
            tracing::debug!(error = %e, "building a TURN error response");
            GateVerdict::Drop
        }
    }
}

/// Set `bytes` kernel buffers on `socket`: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` where
/// permitted (CAP_NET_ADMIN), else `SO_RCVBUF`/`SO_SNDBUF` (capped by `net.core.*mem_max`).
/// Returns the granted receive buffer size.
pub fn enlarge_socket_buffers(socket: &UdpSocket, bytes: usize) -> usize {
    set_socket_buffers(socket, bytes);
    socket2::SockRef::from(socket)
        .recv_buffer_size()
        .unwrap_or(0)
}

/// Set `bytes` receive and send buffers as [`enlarge_socket_buffers`] does; returns
/// whether the receive buffer was forced past `net.core.rmem_max`. Shared with the
/// peer library's sockets.
pub fn set_socket_buffers(socket: &UdpSocket, bytes: usize) -> bool {
    let sock = socket2::SockRef::from(socket);
    let forced = set_force(socket, libc::SO_RCVBUFFORCE, bytes);
    if !forced {
        let _ = sock.set_recv_buffer_size(bytes);
    }
    if !set_force(socket, libc::SO_SNDBUFFORCE, bytes) {
        let _ = sock.set_send_buffer_size(bytes);
    }
    forced
}

fn set_force(socket: &UdpSocket, option: libc::c_int, bytes: usize) -> bool {
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

/// Bind a UDP socket with large buffers and hand it to tokio.
fn bind_buffered(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    let granted = enlarge_socket_buffers(&socket, RELAY_SOCKET_BUFFER_BYTES);
    if granted < RELAY_SOCKET_BUFFER_BYTES {
        tracing::debug!(
            granted,
            "TURN socket buffer capped by net.core.rmem_max; relayed throughput will suffer"
        );
    }
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Binds each allocation's relay socket on the listening IP with 16 MiB buffers and reports
/// it under the advertised IP.
/// The sockets are [`RelayConn`]s of the relay's [`RelayPlane`]: traffic between two
/// allocations of this relay stays in memory, the rest is read and written in batches.
struct BufferedRelayGenerator {
    bind_ip: IpAddr,
    relay_ip: IpAddr,
    plane: Arc<RelayPlane>,
    /// Says whose Allocate is being served (for the quota).
    gate: Arc<RelayGate>,
}

#[async_trait::async_trait]
impl RelayAddressGenerator for BufferedRelayGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let ip = match (self.bind_ip, use_ipv4) {
            (IpAddr::V4(_), false) | (IpAddr::V6(_), true) => {
                return Err(turn::Error::Other(
                    "requested address family not served by this relay".into(),
                ));
            }
            (ip, _) => ip,
        };
        let socket = bind_buffered(SocketAddr::new(ip, requested_port))
            .map_err(|e| turn::Error::Other(format!("binding relay socket: {e}")))?;
        let mut relay_addr = socket
            .local_addr()
            .map_err(|e| turn::Error::Other(format!("relay socket address: {e}")))?;
        relay_addr.set_ip(self.relay_ip);
        // Every Allocate that reaches the server passed the gate, which named its user.
        let owner = self.gate.take_allocating().unwrap_or_default();
        let conn = RelayConn::register(socket, relay_addr, &self.plane, &owner)
            .map_err(|e| turn::Error::Other(format!("relay socket: {e}")))?;
        tracing::debug!(%relay_addr, owner, "TURN relay socket allocated");
        Ok((conn, relay_addr))
    }
}

/// The running embedded relay.
pub(crate) struct EmbeddedRelay {
    server: turn::server::Server,
    /// The address clients are told to use.
    advertised: SocketAddr,
    /// Its relay sockets (allocation count and relayed bytes for `/metrics`).
    plane: Arc<RelayPlane>,
}

impl std::fmt::Debug for EmbeddedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRelay")
            .field("advertised", &self.advertised)
            .finish_non_exhaustive()
    }
}

impl EmbeddedRelay {
    /// Bind `listen` and start serving; `public_ip` (or the listening IP, or loopback when
    /// that is unspecified) is the address clients are told to use. `turn` gives the
    /// peer-address allow list and the quotas; `members` tells which clients are joined
    /// (their expired credentials stay valid).
    pub async fn start(
        listen: SocketAddr,
        public_ip: Option<IpAddr>,
        secret: &str,
        turn: &TurnConfig,
        members: MemberCheck,
    ) -> std::io::Result<EmbeddedRelay> {
        let auth = RestAuthHandler::new(secret).with_members(members);
        let socket = bind_buffered(listen)?;
        let bound = socket.local_addr()?;
        let advertised_ip = public_ip.unwrap_or(if bound.ip().is_unspecified() {
            match bound.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            }
        } else {
            bound.ip()
        });
        let advertised = SocketAddr::new(advertised_ip, bound.port());
        let policy = PeerPolicy::new(turn.allow_peers.clone())
            .with_relay([bound.ip(), advertised_ip], bound.port());
        let quota = AllocationQuota::new(turn.max_allocations_per_user, turn.max_allocations);
        let plane = Arc::new(RelayPlane::new(policy, quota));
        let gate = Arc::new(RelayGate::new(auth.clone(), Arc::clone(&plane)));
        let listener = ListenerConn::new(socket, &plane)?.with_gate(gate.clone());
        let server = turn::server::Server::new(turn::server::config::ServerConfig {
            conn_configs: vec![turn::server::config::ConnConfig {
                relay_addr_generator: Box::new(BufferedRelayGenerator {
                    bind_ip: bound.ip(),
                    relay_ip: advertised_ip,
                    plane: Arc::clone(&plane),
                    gate,
                }),
                conn: Arc::new(listener),
            }],
            realm: TURN_REALM.to_string(),
            auth_handler: Arc::new(auth),
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await
        .map_err(|e| std::io::Error::other(format!("starting the TURN server: {e}")))?;
        tracing::info!(listen = %bound, %advertised, "TURN relay listening");
        Ok(EmbeddedRelay {
            server,
            advertised,
            plane,
        })
    }

    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Allocations and relayed bytes now (for `/metrics`).
    pub fn stats(&self) -> crate::metrics::TurnSnapshot {
        let (bytes_to_peers, bytes_from_peers) = self.plane.relayed_bytes();
        crate::metrics::TurnSnapshot {
            allocations: self.plane.total_allocations(),
            bytes_to_peers,
            bytes_from_peers,
        }
    }

    /// Stop serving: closes the listener and every allocation's relay socket.
    pub async fn close(&self) {
        if let Err(e) = self.server.close().await {
            tracing::debug!(error = %e, "closing the TURN server");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_have_expiry_client_username_and_hmac_password() {
        let c = turn_credentials("s3cret", "0123456789ab", 1_700_000_000);
        assert_eq!(c.username, "1700000000:0123456789ab");
        // Reference value: `printf %s 1700000000:0123456789ab |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64`.
        assert_eq!(c.password, "L3zJkIbMl9zv+BcvzwnfRtzxc3Y=");
        assert_eq!(c.password, turn_password("s3cret", &c.username));
        assert_ne!(c.password, turn_password("other", &c.username));
    }

    #[test]
    fn turn_password_matches_rfc2202_hmac_sha1_vector() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = BASE64.encode([
            0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
            0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79,
        ]);
        assert_eq!(
            turn_password("Jefe", "what do ya want for nothing?"),
            expected
        );
    }

    #[test]
    fn parse_turn_username_accepts_expiry_client_only() {
        assert_eq!(parse_turn_username("123:abc"), Some((123, "abc")));
        assert_eq!(parse_turn_username("123:a:b"), Some((123, "a:b")));
        assert_eq!(parse_turn_username("123"), None);
        assert_eq!(parse_turn_username("123:"), None);
        assert_eq!(parse_turn_username(":abc"), None);
        assert_eq!(parse_turn_username("-5:abc"), None);
        assert_eq!(parse_turn_username("+5:abc"), None);
        assert_eq!(parse_turn_username("12x:abc"), None);
        assert_eq!(parse_turn_username("99999999999999999999999:abc"), None);
    }

    #[test]
    fn rest_auth_valid_username_returns_key_of_hmac_password() {
        let auth = RestAuthHandler::new("s3cret");
        let creds = turn_credentials("s3cret", "client1", 2_000);
        let key = auth.key_at(&creds.username, TURN_REALM, 1_000).unwrap();
        assert_eq!(
            key,
            generate_auth_key(&creds.username, TURN_REALM, &creds.password)
        );
    }

    #[test]
    fn rest_auth_forged_password_yields_different_key() {
        let auth = RestAuthHandler::new("s3cret");
        let forged = turn_credentials("guessed", "client1", 2_000);
        let key = auth.key_at(&forged.username, TURN_REALM, 1_000).unwrap();
        // The TURN server checks the request's MESSAGE-INTEGRITY with this key; a password
        // derived from another secret gives another key, so the request is refused.
        assert_ne!(
            key,
            generate_auth_key(&forged.username, TURN_REALM, &forged.password)
        );
    }

    #[test]
    fn rest_auth_expired_or_malformed_username_is_refused() {
        let auth = RestAuthHandler::new("s3cret");
        let creds = turn_credentials("s3cret", "client1", 1_000);
        assert!(auth.key_at(&creds.username, TURN_REALM, 1_000).is_ok());
        let err = auth.key_at(&creds.username, TURN_REALM, 1_001).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        // The stock handler's format (bare timestamp) is not accepted.
        let err = auth.key_at("999999999999", TURN_REALM, 1_000).unwrap_err();
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn turn_nonce_table_of_the_patched_crate_stays_bounded() {
        use turn::server::request::{MAX_NONCES, bound_nonces};
        let t0 = tokio::time::Instant::now();
        let mut nonces = std::collections::HashMap::new();
        for i in 0..(MAX_NONCES + 1000) {
            let now = t0 + Duration::from_millis(i as u64);
            bound_nonces(&mut nonces, now);
            nonces.insert(format!("n{i}"), now);
        }
        assert!(nonces.len() <= MAX_NONCES);
        assert!(
            nonces.contains_key(&format!("n{}", MAX_NONCES + 999)),
            "the newest stays"
        );
    }

    #[test]
    fn rest_auth_expired_username_of_joined_member_stays_valid() {
        let joined: MemberCheck = Arc::new(|client: &str| client == "member");
        let auth = RestAuthHandler::new("s3cret").with_members(joined);
        let now = 2_000_000_000;
        // Expired, still joined: renewed by its membership.
        assert!(auth.key_at("1999999999:member", TURN_REALM, now).is_ok());
        // Expired, not (or no longer) joined: refused.
        let err = auth.key_at("1999999999:gone", TURN_REALM, now).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        // Not expired: valid whoever holds it, for its short lifetime.
        assert!(auth.key_at("2000000600:gone", TURN_REALM, now).is_ok());
    }

    #[test]
    fn turn_issuer_embedded_hands_out_stun_and_turn_with_credentials() {
        let issuer = TurnIssuer::embedded(
            "127.0.0.1:3478".parse().unwrap(),
            "s3cret".into(),
            Duration::from_secs(3600),
        );
        let before = unix_now();
        let servers = issuer.ice_servers("abc123");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, vec!["stun:127.0.0.1:3478".to_string()]);
        assert_eq!(servers[0].username, None);
        assert_eq!(
            servers[1].urls,
            vec!["turn:127.0.0.1:3478?transport=udp".to_string()]
        );
        let username = servers[1].username.clone().unwrap();
        let (expiry, client) = parse_turn_username(&username).unwrap();
        assert_eq!(client, "abc123");
        assert!((before + 3600..=unix_now() + 3600).contains(&expiry));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(turn_password("s3cret", &username).as_str())
        );
    }

    #[test]
    fn turn_issuer_external_derives_stun_urls() {
        let issuer = TurnIssuer::external(
            &[
                "turn:relay.example:3478?transport=udp".to_string(),
                "turns:relay.example:5349".to_string(),
            ],
            "x".into(),
            DEFAULT_CREDENTIAL_LIFETIME,
        );
        let servers = issuer.ice_servers("c");
        assert_eq!(servers[0].urls, vec!["stun:relay.example:3478".to_string()]);
        assert_eq!(servers[1].urls.len(), 2);
    }
}
