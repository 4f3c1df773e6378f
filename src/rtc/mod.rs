//! The WebRTC adapter: builds tuned `webrtc` peer connections and adapts data channels to
//! the [`crate::transport::Channel`] seam.

mod channel;
pub mod runtime;

pub use channel::RtcChannel;

use std::net::IpAddr;
use std::sync::Arc;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCIceTransportPolicy, SettingEngineBuilder,
};

use crate::error::{Error, Result};
use peershare_signaling::protocol::IceServer;

/// Transport settings for every peer connection, tuned by measurement
/// (docs/PERFORMANCE.md).
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local address for the ICE host candidates; `None` = every interface.
    pub bind: Option<IpAddr>,
    /// Kernel buffer size for every UDP socket.
    pub socket_buffer_bytes: usize,
    /// Bytes a data channel may have outstanding before `send` waits (backpressure).
    pub send_buffer_limit: usize,
    /// SCTP receive window.
    pub sctp_receive_window: u32,
    /// Use only TURN relay candidates.
    pub relay_only: bool,
}

impl Default for RtcSettings {
    fn default() -> Self {
        Self {
            bind: None,
            socket_buffer_bytes: runtime::SOCKET_BUFFER_BYTES,
            send_buffer_limit: 4 * 1024 * 1024,
            sctp_receive_window: 4 * 1024 * 1024,
            relay_only: false,
        }
    }
}

/// Build one peer connection with the project's transport settings.
pub async fn build_peer_connection(
    settings: &RtcSettings,
    ice_servers: &[IceServer],
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>> {
    let runtime = runtime::BufferedRuntime::new(settings.socket_buffer_bytes)
        .ok_or_else(|| Error::ConnectionFailed("no async runtime compiled in".into()))?;
    let setting_engine = SettingEngineBuilder::new()
        // mDNS needs a multicast route, which namespaces and some hosts lack.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        // Advertise 256 KiB so browsers may send large messages; we send 64 KiB.
        .with_sctp_max_message_size(SctpMaxMessageSize::Unbounded)
        .with_sctp_max_receive_buffer_size(settings.sctp_receive_window)
        .build();
    let ice: Vec<RTCIceServer> = ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
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
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config.build())
        .with_setting_engine(setting_engine)
        .with_runtime(Arc::new(runtime))
        .with_handler(handler)
        .with_udp_addrs(vec![bind])
        .with_data_channel_send_buffer_limit(settings.send_buffer_limit)
        .build()
        .await
        .map_err(|e| Error::ConnectionFailed(format!("building peer connection: {e}")))?;
    Ok(Arc::new(pc))
}
