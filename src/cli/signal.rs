//! `peershare signal`: a standalone signaling server (with an embedded TURN relay by
//! default).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use peershare::signaling::{
    DEFAULT_CREDENTIAL_LIFETIME, DEFAULT_TURN_PORT, ServerConfig, SignalingServer, TurnConfig,
    TurnMode,
};

use crate::SignalArgs;

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
                .or_else(|| listen.ip().is_unspecified().then(super::lan_ip));
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

pub async fn run(args: SignalArgs) -> anyhow::Result<()> {
    let listen = match args.bind {
        Some(ip) => SocketAddr::new(ip, args.listen.port()),
        None => args.listen,
    };
    // An ephemeral signaling port asks for an ephemeral relay port too.
    let turn_port = if listen.port() == 0 {
        0
    } else {
        DEFAULT_TURN_PORT
    };
    let turn = args.turn.config(listen.ip(), turn_port);
    let server = SignalingServer::bind(ServerConfig {
        listen,
        turn: turn.clone(),
        ..ServerConfig::default()
    })
    .await
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr();
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(super::lan_ip(), addr.port())
    } else {
        addr
    };
    println!("ws://{shown}");
    eprintln!(
        "signaling server listening on {addr} ({}); pass --server ws://{shown} to clients. Ctrl-C stops it.",
        describe_turn(&server, &turn)
    );
    tokio::signal::ctrl_c().await.ok();
    server.shutdown().await;
    Ok(())
}
