//! `peershare signal`: a standalone signaling server.

use std::net::SocketAddr;

use anyhow::Context;
use peershare::signaling::{ServerConfig, SignalingServer};

use crate::SignalArgs;

pub async fn run(args: SignalArgs) -> anyhow::Result<()> {
    let listen = match args.bind {
        Some(ip) => SocketAddr::new(ip, args.listen.port()),
        None => args.listen,
    };
    let server = SignalingServer::bind(ServerConfig {
        listen,
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
    eprintln!("signaling server listening on {addr}; pass --server ws://{shown} to clients. Ctrl-C stops it.");
    tokio::signal::ctrl_c().await.ok();
    server.shutdown().await;
    Ok(())
}
