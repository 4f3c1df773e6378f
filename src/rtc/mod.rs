//! The WebRTC adapter: builds tuned `webrtc` peer connections and adapts data channels to
//! the [`crate::transport::Channel`] seam.

mod channel;
pub mod netsim;
pub mod path;
pub mod runtime;

pub use channel::{RtcChannel, RtcStream};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCIceTransportPolicy, SettingEngineBuilder,
};

use crate::error::{Error, Result};
use peershare_signaling::protocol::IceServer;
/// The SCTP congestion controllers (`RtcSettings::congestion_control`).
pub use rtc_sctp::CongestionControl;

/// Transport settings for every peer connection, tuned by measurement
/// (docs/PERFORMANCE.md).
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local address for the ICE host candidates; `None` = every interface.
    pub bind: Option<IpAddr>,
    /// Kernel buffer size for every UDP socket.
    pub socket_buffer_bytes: usize,
    /// The most bytes a data channel may have outstanding before `send` waits
    /// (backpressure). Within it the limit follows the association when
    /// [`send_buffer_window_min`](Self::send_buffer_window_min) is set. The data in
    /// flight fits in it, so it must exceed the path's bandwidth-delay product: 64 MiB
    /// holds a full 32 MiB receive window in flight and as much again queued (1 Gbit/s at
    /// 200 ms is 25 MB). Connections whose only possible path is loopback use at most
    /// [`loopback_window`](Self::loopback_window).
    pub send_buffer_limit: usize,
    /// `Some(min)` (default [`SEND_BUFFER_WINDOW_MIN`]): the send-buffer limit is what the
    /// SCTP association has in flight plus one more window (the smaller of its congestion
    /// window and the peer's receive window; half of it on a path whose round trip is
    /// under 5 ms), at least `min` and at most
    /// [`send_buffer_limit`](Self::send_buffer_limit). A sender then holds what the path
    /// needs, and little when the recipient reads slowly. `None` = the fixed limit.
    pub send_buffer_window_min: Option<usize>,
    /// SCTP receive window (sized like `send_buffer_limit`; at most
    /// [`loopback_window`](Self::loopback_window) on loopback-only connections). With
    /// [`sctp_receive_window_initial`](Self::sctp_receive_window_initial) it is the most
    /// the window grows to.
    pub sctp_receive_window: u32,
    /// `Some(initial)` (default [`SCTP_RECEIVE_WINDOW_INITIAL`]): the SCTP receive window
    /// starts at `initial` bytes and grows, once per round trip, to twice what flowed in
    /// the last one (what arrived, or what this peer read while it is the limit), up to
    /// [`sctp_receive_window`](Self::sctp_receive_window) (Linux TCP's receive-buffer
    /// autotuning; the round trip is measured with SCTP HEARTBEATs). A recipient whose
    /// disk is slower than the path then holds about twice its rate times the round trip,
    /// not the whole window. `None` = the whole window from the start.
    pub sctp_receive_window_initial: Option<u32>,
    /// The SCTP data sender's congestion controller (default: BBR, `docs/DECISIONS.md`).
    pub congestion_control: CongestionControl,
    /// SCTP's minimum retransmission timeout (default [`SCTP_RTO_MIN`]).
    pub sctp_rto_min: Duration,
    /// On a connection whose only possible path is loopback host to host (the case where
    /// [`sctp_mtu`](Self::sctp_mtu) `None` means [`LOOPBACK_SCTP_MTU`]), the SCTP receive
    /// window and the send-buffer limit are at most this many bytes (default
    /// [`LOOPBACK_WINDOW_BYTES`]): the round trip there is a fraction of a millisecond,
    /// so a small window moves as fast, and it bounds what each peer holds in memory
    /// (docs/PERFORMANCE.md, "Memory"). `None` = the two values above everywhere.
    pub loopback_window: Option<u32>,
    /// SCTP packet size budget. `None` = [`LOOPBACK_SCTP_MTU`] when bound to a loopback
    /// address with no TURN relay in reach (the path can only be loopback host to host)
    /// and the peer takes such packets (`peer_large_packets`); else the stack's 1191
    /// bytes, which fits any path including TURN over IPv6, raised to
    /// [`PROBED_SCTP_MTU`] once a probe shows that the path carries it, when the peer
    /// takes large packets. `Some` fixes the size (no probing).
    pub sctp_mtu: Option<u32>,
    /// The remote peer takes SCTP packets of [`LOOPBACK_SCTP_MTU`] bytes. The session
    /// sets it per connection from the peer's PAKE message (`docs/PROTOCOL.md`); a peer
    /// that does not say so gets the stack's 1191-byte packets on any path.
    pub peer_large_packets: bool,
    /// Use only TURN relay candidates.
    pub relay_only: bool,
    /// Never use a TURN relay (TURN servers handed out by signaling are ignored).
    pub direct_only: bool,
    /// Set per connection by the session: the remote peer announced at join that it uses
    /// only relay candidates, so every candidate pair has a relay end and waiting for a
    /// direct one is pointless (see [`build_peer_connection`]).
    pub peer_relay_only: bool,
    /// ICE consent: silence after which a connection counts as disconnected, the further
    /// time after which it has failed (and is replaced), and the keep-alive period.
    pub ice_timeouts: IceTimeouts,
    /// ICE connectivity-check interval while connecting; `None` = the stack's 200 ms.
    pub ice_check_interval: Option<Duration>,
    /// During a connection's first seconds, wake its driver at least this often (default
    /// 5 ms); `None` = only at protocol deadlines: the DTLS ClientHello then waits for
    /// one, and setup takes ~200 ms more (docs/PERFORMANCE.md).
    pub setup_poll_interval: Option<Duration>,
    /// Let the stack batch sends with UDP GSO where the kernel supports it (default;
    /// receives are batched by GRO). `false` makes every socket report one GSO segment,
    /// for measuring what the batching gives (docs/PERFORMANCE.md).
    pub udp_offload: bool,
    /// Batch TURN-relayed datagrams into UDP GSO sends (default), as the stack does for
    /// direct ones; `false` sends them one per syscall (docs/RELAY.md). Never applied
    /// under a simulated [`network`](Self::network).
    pub relay_batching: bool,
    /// Simulated network under every UDP socket (tests): loss, delay, filters, cuts;
    /// `None` = the real network only. See [`netsim`].
    pub network: Option<netsim::NetworkModel>,
}

impl Default for RtcSettings {
    fn default() -> Self {
        Self {
            bind: None,
            socket_buffer_bytes: runtime::SOCKET_BUFFER_BYTES,
            send_buffer_limit: 64 * 1024 * 1024,
            send_buffer_window_min: Some(SEND_BUFFER_WINDOW_MIN),
            sctp_receive_window: 32 * 1024 * 1024,
            sctp_receive_window_initial: Some(SCTP_RECEIVE_WINDOW_INITIAL),
            congestion_control: CongestionControl::Bbr,
            sctp_rto_min: SCTP_RTO_MIN,
            loopback_window: Some(LOOPBACK_WINDOW_BYTES),
            sctp_mtu: None,
            peer_large_packets: true,
            relay_only: false,
            direct_only: false,
            peer_relay_only: false,
            ice_timeouts: IceTimeouts::default(),
            ice_check_interval: None,
            // Measured: join → first byte 207 ms → 13 ms on loopback, no throughput
            // change (docs/PERFORMANCE.md).
            setup_poll_interval: Some(runtime::SETUP_POLL_INTERVAL),
            udp_offload: true,
            relay_batching: true,
            network: None,
        }
    }
}

/// SCTP's minimum retransmission timeout: RFC 9260 suggests 1 s, which turns every
/// timeout on a path of a few tens of milliseconds into a second of silence. The
/// timeout stays SRTT + 4 RTTVAR above this floor. 200 ms is Linux TCP's floor.
pub const SCTP_RTO_MIN: Duration = Duration::from_millis(200);

/// The least a data channel's send buffer follows the association down to
/// ([`RtcSettings::send_buffer_window_min`]): a few milliseconds of data at loopback
/// speed (2.5 ms at 400 MiB/s) while the window is still small or closed.
pub const SEND_BUFFER_WINDOW_MIN: usize = 1024 * 1024;

/// Where the SCTP receive window starts ([`RtcSettings::sctp_receive_window_initial`]):
/// one round trip of data at 100 Mbit/s and 160 ms, at 1 Gbit/s and 16 ms; by the time
/// a sender's congestion window reaches it, the window has the round trips it needs to
/// grow (docs/PERFORMANCE.md, "Receive window").
pub const SCTP_RECEIVE_WINDOW_INITIAL: u32 = 2 * 1024 * 1024;

/// SCTP packet size used on loopback-bound connections: fewer, larger packets cut the
/// per-packet cost (AES-GCM, CRC32c, syscalls) that limits throughput there
/// (docs/PERFORMANCE.md: +40 % file to file).
pub const LOOPBACK_SCTP_MTU: u32 = 8192;
/// SCTP packet size probed for on every other connection to a peer that takes large
/// packets: a packet of this size, with DTLS (37 bytes), TURN ChannelData (4), UDP (8)
/// and IPv6 (40) headers, is 1,489 bytes, so any path with a 1,500-byte MTU carries it,
/// relayed or not. The association sends a HEARTBEAT padded to it once it is up and uses
/// it only when the peer's HEARTBEAT ACK comes back (RFC 8899); until then, and when
/// it does not, the stack's 1191 bytes.
pub const PROBED_SCTP_MTU: u32 = 1400;
/// Socket buffers used with [`LOOPBACK_SCTP_MTU`]: the kernel charges each 8 KiB
/// datagram about twice its size, so 4 MiB buffers drop packets under a 4 MiB window.
pub const LOOPBACK_SOCKET_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// SCTP receive window and send-buffer limit on loopback-only connections
/// ([`RtcSettings::loopback_window`]).
pub const LOOPBACK_WINDOW_BYTES: u32 = 1024 * 1024;

/// How long a connection to a relay-only peer waits before it nominates a relayed pair,
/// instead of the stack's 2 s (docs/RELAY.md).
pub const PEER_RELAY_ONLY_RELAY_WAIT: Duration = Duration::from_millis(500);

/// ICE liveness timers (see [`RtcSettings::ice_timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimeouts {
    pub disconnected: Duration,
    pub failed: Duration,
    pub keepalive: Duration,
}

impl Default for IceTimeouts {
    /// 3 s + 5 s: a dead path is replaced after about 8 s instead of the stack's 30 s,
    /// while a 1 s keep-alive stays cheap.
    fn default() -> Self {
        Self {
            disconnected: Duration::from_secs(3),
            failed: Duration::from_secs(5),
            keepalive: Duration::from_secs(1),
        }
    }
}

/// Build one peer connection with the project's transport settings.
pub async fn build_peer_connection(
    settings: &RtcSettings,
    ice_servers: &[IceServer],
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>> {
    // Large SCTP packets only where every possible path is loopback host to host: a TURN
    // relay (the embedded one truncates datagrams at 1500 bytes) must never be in the
    // path, and a simulated network stands for a real one, whatever it runs over.
    let relay_possible = !settings.direct_only
        && ice_servers
            .iter()
            .flat_map(|s| &s.urls)
            .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
    // The only possible path is loopback host to host.
    let loopback_path = !relay_possible
        && settings.network.is_none()
        && settings.bind.is_some_and(|ip| ip.is_loopback());
    let loopback_mtu = loopback_path && settings.sctp_mtu.is_none() && settings.peer_large_packets;
    // Loopback only: a small window and send buffer bound each peer's memory at no cost
    // in speed (the round trip is a fraction of a millisecond).
    let (sctp_window, send_buffer_limit) = match settings.loopback_window {
        Some(cap) if loopback_path => (
            settings.sctp_receive_window.min(cap),
            settings.send_buffer_limit.min(cap as usize),
        ),
        _ => (settings.sctp_receive_window, settings.send_buffer_limit),
    };
    let socket_buffer = if loopback_mtu {
        settings
            .socket_buffer_bytes
            .max(LOOPBACK_SOCKET_BUFFER_BYTES)
    } else {
        settings.socket_buffer_bytes
    };
    let mut runtime = runtime::BufferedRuntime::new(socket_buffer)
        .ok_or_else(|| Error::ConnectionFailed("no async runtime compiled in".into()))?;
    if let Some(interval) = settings.setup_poll_interval {
        runtime = runtime.with_setup_poll(interval, runtime::SETUP_WINDOW);
    }
    runtime = runtime
        .with_udp_offload(settings.udp_offload)
        .with_relay_batching(settings.relay_batching && settings.network.is_none());
    let mut setting_engine = SettingEngineBuilder::new()
        // mDNS needs a multicast route, which namespaces and some hosts lack.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        // Advertise 256 KiB so browsers may send large messages; we send 32 KiB.
        .with_sctp_max_message_size(SctpMaxMessageSize::Unbounded)
        .with_sctp_max_receive_buffer_size(sctp_window)
        .with_sctp_congestion_control(settings.congestion_control)
        .with_sctp_rto_min(settings.sctp_rto_min)
        .with_ice_timeouts(
            Some(settings.ice_timeouts.disconnected),
            Some(settings.ice_timeouts.failed),
            Some(settings.ice_timeouts.keepalive),
        );
    // The stack waits 2 s before it nominates a pair with a relay end, to give direct pairs
    // a chance (docs/RELAY.md, "Relayed connection setup").
    let relay_wait = if settings.relay_only {
        // We have only relay candidates: there is nothing better to wait for. Only the
        // controlling agent (the offerer) nominates.
        Some(Duration::ZERO)
    } else if settings.peer_relay_only {
        // Every pair has the peer's relay end, but ours may be direct (one allocation) or
        // relayed too (two, slower): wait briefly so the better one has answered.
        Some(PEER_RELAY_ONLY_RELAY_WAIT)
    } else {
        None
    };
    if let Some(wait) = relay_wait {
        setting_engine = setting_engine.with_relay_acceptance_min_wait(Some(wait));
    }
    if let Some(interval) = settings.ice_check_interval {
        // Keep the stack's 1.4 s of attempts per candidate pair (7 × 200 ms).
        let attempts = (1400 / interval.as_millis().max(1)).clamp(7, 1000) as u16;
        setting_engine =
            setting_engine.with_ice_connection_attempts(Some(interval), Some(attempts));
    }
    let mtu = settings
        .sctp_mtu
        .or(loopback_mtu.then_some(LOOPBACK_SCTP_MTU));
    match mtu {
        Some(mtu) => setting_engine = setting_engine.with_sctp_mtu(mtu),
        None if settings.peer_large_packets => {
            setting_engine = setting_engine.with_sctp_mtu_probe(PROBED_SCTP_MTU);
        }
        None => {}
    }
    if let Some(initial) = settings
        .sctp_receive_window_initial
        .filter(|&initial| initial < sctp_window)
    {
        setting_engine = setting_engine.with_sctp_receive_window_autotune(initial);
    }
    let setting_engine = setting_engine.build();
    let ice: Vec<RTCIceServer> = ice_servers
        .iter()
        .filter_map(|s| {
            if !settings.direct_only {
                return Some(s.clone());
            }
            let urls: Vec<String> = s
                .urls
                .iter()
                .filter(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
                .cloned()
                .collect();
            (!urls.is_empty()).then(|| IceServer { urls, ..s.clone() })
        })
        .map(|s| RTCIceServer {
            urls: s.urls,
            username: s.username.unwrap_or_default(),
            credential: s.credential.unwrap_or_default(),
        })
        .collect();
    let mut config = RTCConfigurationBuilder::new().with_ice_servers(ice);
    if settings.relay_only {
        config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    let bind = match settings.bind {
        Some(ip) => std::net::SocketAddr::new(ip, 0).to_string(),
        None => "0.0.0.0:0".to_string(),
    };
    let mut builder = PeerConnectionBuilder::new();
    if let Some(min) = settings.send_buffer_window_min {
        builder = builder.with_data_channel_send_buffer_window(min);
    }
    let pc = builder
        .with_configuration(config.build())
        .with_setting_engine(setting_engine)
        .with_runtime(match &settings.network {
            Some(net) => Arc::new(net.runtime(Arc::new(runtime))),
            None => Arc::new(runtime),
        })
        .with_handler(handler)
        .with_udp_addrs(vec![bind])
        .with_data_channel_send_buffer_limit(send_buffer_limit)
        .build()
        .await
        .map_err(|e| Error::ConnectionFailed(format!("building peer connection: {e}")))?;
    Ok(Arc::new(pc))
}
