//! WebSocket client of the signaling server: joins a session, then pumps frames between
//! the socket and two channels owned by the peer task.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peershare_signaling::protocol::{
    ClientMessage, IceServer, PROTOCOL_VERSION, PeerInfo, ServerMessage,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{Error, Result};

/// How long joining may take before it counts as unreachable.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive period (the server's idle timeout is longer).
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// What to join.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub session: Option<String>,
    pub create: bool,
    pub name: String,
    pub password: Option<String>,
    /// We use only TURN relay candidates (told to the other members, see
    /// [`PeerInfo::relay_only`]).
    pub relay_only: bool,
}

/// A joined session.
#[derive(Debug)]
pub struct SignalingSession {
    pub session: String,
    pub client_id: String,
    pub peers: Vec<PeerInfo>,
    pub ice_servers: Vec<IceServer>,
    /// Frames to send.
    pub tx: mpsc::Sender<ClientMessage>,
    /// Frames received after the welcome; closed when the socket is gone.
    pub rx: mpsc::Receiver<ServerMessage>,
}

/// Normalize a server address: `ws://h:p`, `wss://…`, `http(s)://…` or a bare `h:p`.
pub fn normalize_url(server: &str) -> String {
    let s = server.trim();
    if let Some(rest) = s.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = s.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if s.starts_with("ws://") || s.starts_with("wss://") {
        s.to_string()
    } else {
        format!("ws://{s}")
    }
}

/// Whether `text` is a JSON object whose `type` is a string this client does not know.
fn is_unknown_frame_type(text: &str) -> bool {
    const KNOWN: &[&str] = &[
        "welcome",
        "peer-joined",
        "peer-left",
        "signal",
        "error",
        "pong",
        "ice-servers",
    ];
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        v.get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| !KNOWN.contains(&t))
    })
}

/// Connect to `url` and join.
pub async fn connect(url: &str, join: JoinRequest) -> Result<SignalingSession> {
    let url = normalize_url(url);
    tokio::time::timeout(JOIN_TIMEOUT, connect_inner(&url, join))
        .await
        .map_err(|_| {
            Error::NotConnected(format!("signaling server {url} did not answer in time"))
        })?
}

async fn connect_inner(url: &str, join: JoinRequest) -> Result<SignalingSession> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| Error::NotConnected(format!("cannot reach signaling server {url}: {e}")))?;
    let frame = ClientMessage::Join {
        version: PROTOCOL_VERSION,
        session: join.session,
        name: join.name,
        password: join.password,
        create: join.create,
        relay_only: join.relay_only,
    };
    send_frame(&mut ws, &frame).await?;
    let welcome = loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| Error::NotConnected("signaling server closed the connection".into()))?
            .map_err(|e| Error::NotConnected(format!("signaling: {e}")))?;
        let Message::Text(text) = msg else { continue };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Error { code, message }) => {
                return Err(Error::from_remote(code, message));
            }
            Ok(w @ ServerMessage::Welcome { .. }) => break w,
            Ok(_) => continue,
            // A frame type of a newer server: ignored, as docs/PROTOCOL.md asks.
            Err(_) if is_unknown_frame_type(&text) => continue,
            Err(e) => return Err(Error::NotConnected(format!("bad frame from server: {e}"))),
        }
    };
    let ServerMessage::Welcome {
        session,
        client_id,
        peers,
        ice_servers,
    } = welcome
    else {
        return Err(Error::NotConnected("no welcome".into()));
    };
    let (out_tx, out_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    tokio::spawn(pump(ws, out_rx, in_tx));
    Ok(SignalingSession {
        session,
        client_id,
        peers,
        ice_servers,
        tx: out_tx,
        rx: in_rx,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_frame(ws: &mut Ws, frame: &ClientMessage) -> Result<()> {
    let text = serde_json::to_string(frame)
        .map_err(|e| Error::InvalidArgument(format!("encoding frame: {e}")))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| Error::NotConnected(format!("signaling send: {e}")))
}

async fn pump(
    mut ws: Ws,
    mut out_rx: mpsc::Receiver<ClientMessage>,
    in_tx: mpsc::Sender<ServerMessage>,
) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(frame) => {
                    let leaving = matches!(frame, ClientMessage::Leave);
                    if send_frame(&mut ws, &frame).await.is_err() || leaving {
                        break;
                    }
                }
                None => {
                    let _ = send_frame(&mut ws, &ClientMessage::Leave).await;
                    break;
                }
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(msg) => {
                        if in_tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("ignoring unparsable signaling frame: {e}"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if send_frame(&mut ws, &ClientMessage::Ping).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_url_accepts_bare_and_http_forms() {
        assert_eq!(normalize_url("127.0.0.1:9"), "ws://127.0.0.1:9");
        assert_eq!(normalize_url("ws://h:1"), "ws://h:1");
        assert_eq!(normalize_url("https://h"), "wss://h");
    }

    #[test]
    fn unknown_frame_type_is_recognised_and_malformed_known_is_not() {
        assert!(is_unknown_frame_type(
            r#"{"type":"turn-credentials","ice_servers":[]}"#
        ));
        assert!(!is_unknown_frame_type(r#"{"type":"welcome"}"#));
        assert!(!is_unknown_frame_type("not json"));
        assert!(!is_unknown_frame_type(r#"{"kind":"x"}"#));
    }
}
