//! `peershare signal`: a standalone signaling server (with an embedded TURN relay by
//! default).

use std::net::SocketAddr;

use anyhow::Context;
pub use peershare::signaling::cli::TurnArgs;
use peershare::signaling::cli::{default_turn_port, describe_turn};
use peershare::signaling::{ServerConfig, SignalingServer};

use crate::SignalArgs;

pub async fn run(args: SignalArgs) -> anyhow::Result<()> {
    let listen = match args.bind {
        Some(ip) => SocketAddr::new(ip, args.listen.port()),
        None => args.listen,
    };
    // An ephemeral signaling port asks for an ephemeral relay port too.
    let turn = args.turn.config(listen.ip(), default_turn_port(listen));
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
