//! The listening server: accept loop, connection tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::connection::{self, Shared, wait_shutdown};
use crate::turn::{EmbeddedRelay, TurnIssuer, TurnMode, random_secret};

/// How long shutdown waits for connection tasks to finish before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A running signaling server.
///
/// Dropping it starts a shutdown without waiting for it; [`SignalingServer::shutdown`]
/// waits for the connections to be closed.
#[derive(Debug)]
pub struct SignalingServer {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
    /// The embedded TURN relay, when configured.
    relay: Option<Arc<EmbeddedRelay>>,
}

impl SignalingServer {
    /// Bind `config.listen`, start the embedded TURN relay if `config.turn` asks for it,
    /// spawn the accept loop on the current tokio runtime, and return.
    pub async fn bind(config: ServerConfig) -> std::io::Result<SignalingServer> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let lifetime = config.turn.credential_lifetime;
        let (relay, issuer) = match &config.turn.mode {
            TurnMode::Disabled => (None, None),
            TurnMode::External { urls, secret } => (
                None,
                Some(TurnIssuer::external(urls, secret.clone(), lifetime)),
            ),
            TurnMode::Embedded {
                listen,
                public_ip,
                secret,
            } => {
                let secret = secret.clone().unwrap_or_else(random_secret);
                let relay = EmbeddedRelay::start(*listen, *public_ip, &secret)
                    .await
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("TURN relay on {listen}: {e}"))
                    })?;
                let issuer = TurnIssuer::embedded(relay.advertised(), secret, lifetime);
                (Some(Arc::new(relay)), Some(issuer))
            }
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, issuer));
        let span = tracing::info_span!("signaling", addr = %local_addr);
        let accept_task = tokio::spawn(accept_loop(listener, shared, shutdown_rx).instrument(span));
        tracing::info!(addr = %local_addr, "signaling server listening");
        Ok(SignalingServer {
            local_addr,
            shutdown_tx,
            accept_task: Some(accept_task),
            relay,
        })
    }

    /// The address of the embedded TURN/STUN relay as advertised to clients, if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|r| r.advertised())
    }

    /// The bound address (with the actual port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to: `ws://IP:PORT`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Stop accepting, send every client error `7012` and a Close frame, wait (about 2 s
    /// at most) for the connections to end, then stop the embedded TURN relay (closing its
    /// allocations).
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(task) = self.accept_task.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(500), task).await;
        }
        if let Some(relay) = self.relay.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, relay.close()).await;
        }
    }
}

impl Drop for SignalingServer {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(relay) = self.relay.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move { relay.close().await });
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = wait_shutdown(&mut shutdown) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    let span = tracing::info_span!(
                        "conn",
                        %peer,
                        client_id = tracing::field::Empty,
                        session = tracing::field::Empty,
                    );
                    tasks.spawn(
                        connection::run(stream, Arc::clone(&shared), shutdown.clone())
                            .instrument(span),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(connections = tasks.len(), "shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "aborting connections that did not close in time"
        );
        tasks.shutdown().await;
    }
    tracing::info!("stopped");
}
