//! Command-line pieces shared by the `peershare-signaling` binary and `peershare signal`
//! / `peershare send` (its embedded server): the TURN relay options and address helpers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::{
    DEFAULT_CREDENTIAL_LIFETIME, DEFAULT_TURN_PORT, SignalingServer, TurnConfig, TurnMode,
};

/// The address other machines on the LAN most likely reach us at: the source address
/// of the default route. A UDP `connect` only consults the routing table; it sends
/// nothing. Falls back to loopback on a machine without a route.
pub fn lan_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            // 192.0.2.1 is TEST-NET-1 (documentation); no packet is sent.
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The relay's default port for a signaling server listening on `listen`: 3478, or an
/// ephemeral one when the signaling port is ephemeral.
pub fn default_turn_port(listen: SocketAddr) -> u16 {
    if listen.port() == 0 {
        0
    } else {
        DEFAULT_TURN_PORT
    }
}

/// TURN relay options shared by `signal` and `send` (for its embedded server).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TurnArgs {
    /// UDP address of the embedded TURN/STUN relay [default: the signaling IP, port 3478
    /// for `signal` (ephemeral when the signaling port is 0), an ephemeral port for `send`].
    #[arg(long, value_name = "HOST:PORT")]
    turn_listen: Option<SocketAddr>,
    /// Address the relay advertises to clients [default: the listening IP, or the LAN IP
    /// when it listens on 0.0.0.0].
    #[arg(long, value_name = "IP")]
    turn_public_ip: Option<IpAddr>,
    /// Run no TURN relay and hand out no STUN/TURN servers.
    #[arg(long, conflicts_with_all = ["turn_listen", "turn_public_ip", "turn_url", "turn_secret"])]
    no_turn: bool,
    /// Use this external TURN server (coturn with use-auth-secret) instead of the embedded
    /// relay, e.g. `turn:relay.example.org:3478?transport=udp`; repeatable. Needs
    /// --turn-secret.
    #[arg(long, value_name = "URL", requires = "turn_secret", conflicts_with_all = ["turn_listen", "turn_public_ip"])]
    turn_url: Vec<String>,
    /// Shared secret for the TURN credentials: coturn's static-auth-secret with --turn-url;
    /// otherwise the embedded relay's [default: random per run].
    #[arg(long, value_name = "SECRET")]
    turn_secret: Option<String>,
    /// Lifetime of the TURN credentials handed to each client, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CREDENTIAL_LIFETIME.as_secs())]
    turn_ttl: u64,
}

impl TurnArgs {
    /// The TURN configuration for a signaling server listening on `signaling_ip`; the
    /// embedded relay listens on `default_port` unless `--turn-listen` says otherwise.
    pub fn config(&self, signaling_ip: IpAddr, default_port: u16) -> TurnConfig {
        let mode = if self.no_turn {
            TurnMode::Disabled
        } else if !self.turn_url.is_empty() {
            TurnMode::External {
                urls: self.turn_url.clone(),
                secret: self.turn_secret.clone().unwrap_or_default(),
            }
        } else {
            let listen = self
                .turn_listen
                .unwrap_or_else(|| SocketAddr::new(signaling_ip, default_port));
            let public_ip = self
                .turn_public_ip
                .or_else(|| listen.ip().is_unspecified().then(lan_ip));
            TurnMode::Embedded {
                listen,
                public_ip,
                secret: self.turn_secret.clone(),
            }
        };
        TurnConfig {
            mode,
            credential_lifetime: Duration::from_secs(self.turn_ttl.max(1)),
        }
    }
}

/// One line describing the relay a server hands out, for stderr.
pub fn describe_turn(server: &SignalingServer, turn: &TurnConfig) -> String {
    match (&turn.mode, server.turn_addr()) {
        (TurnMode::Embedded { .. }, Some(addr)) => {
            format!("TURN/STUN relay on udp {addr}")
        }
        (TurnMode::External { urls, .. }, _) => format!("external TURN {}", urls.join(" ")),
        _ => "no TURN relay".to_string(),
    }
}
