//! Test helpers: a real server on 127.0.0.1:0 and a small tokio-tungstenite client that
//! waits on frames with a timeout (never sleeps), over plain TCP or TLS ([`tls`]).

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peershare_signaling::protocol::{IceServer, PeerInfo, ServerMessage};
use peershare_signaling::{ServerConfig, SignalingServer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Longest wait for any expected frame.
pub const WAIT: Duration = Duration::from_secs(5);

/// A config listening on an ephemeral loopback port.
pub fn config() -> ServerConfig {
    ServerConfig::default()
}

pub async fn start(config: ServerConfig) -> SignalingServer {
    assert!(config.listen.ip().is_loopback());
    SignalingServer::bind(config).await.expect("bind")
}

/// What a `welcome` frame said.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub session: String,
    pub client_id: String,
    pub peers: Vec<PeerInfo>,
    pub ice_servers: Vec<IceServer>,
    pub resume_token: Option<String>,
}

/// How the server ended a connection.
#[derive(Debug)]
pub enum Closed {
    /// A Close frame (with its payload, if any).
    Frame(Option<CloseFrame>),
    /// The TCP connection ended without a Close frame.
    Eof,
}

/// A WebSocket client over `S`: plain TCP by default, or TLS ([`tls::connect`]).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
}

impl Client {
    pub async fn connect(server: &SignalingServer) -> Client {
        let (ws, _) = timeout(WAIT, connect_async(server.url()))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client { ws }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over an upgraded WebSocket.
    pub fn from_ws(ws: WebSocketStream<S>) -> Self {
        Client { ws }
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_raw(Message::text(text.into())).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next text frame, parsed; WebSocket pings/pongs are skipped. Panics on close or
    /// timeout.
    pub async fn recv_within(&mut self, wait: Duration) -> ServerMessage {
        loop {
            let msg = timeout(wait, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("bad server frame {t}: {e}"));
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Send a JSON frame, reporting (not panicking on) a write error.
    pub async fn try_send_json(&mut self, value: Value) -> Result<(), String> {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next text frame, or `None` once the server closed the connection.
    pub async fn recv_or_close(&mut self) -> Option<ServerMessage> {
        loop {
            let msg = timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(t))) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|e| panic!("bad server frame {t}: {e}")),
                    );
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> ServerMessage {
        self.recv_within(WAIT).await
    }

    /// Expect an `error` frame with `code`; returns its message.
    pub async fn expect_error(&mut self, code: u16) -> String {
        match self.recv().await {
            ServerMessage::Error {
                code: c, message, ..
            } => {
                assert_eq!(c, code, "error message: {message}");
                assert!(!message.is_empty());
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expect the server to end the connection next (Close frame or EOF); answers the
    /// close handshake.
    pub async fn expect_closed(&mut self) -> Closed {
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                None => return Closed::Eof,
                Some(Err(_)) => return Closed::Eof,
                Some(Ok(Message::Close(frame))) => {
                    // Keep polling so the client sends its Close reply and sees the end.
                    while let Ok(Some(Ok(_))) = timeout(WAIT, self.ws.next()).await {}
                    return Closed::Frame(frame);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected close, got {other:?}"),
            }
        }
    }

    /// Send `ping`, expect `pong` as the very next frame: everything the server queued for
    /// this client before the ping has been received by then.
    pub async fn barrier(&mut self) {
        self.send_json(json!({"type": "ping"})).await;
        match self.recv().await {
            ServerMessage::Pong => {}
            other => panic!("expected pong, got {other:?}"),
        }
    }

    pub async fn join_frame(&mut self, frame: Value) -> ServerMessage {
        self.send_json(frame).await;
        self.recv().await
    }

    /// Join (or create, with `session: None`) and expect a welcome.
    pub async fn join(&mut self, session: Option<&str>, name: &str) -> Welcome {
        let reply = self
            .join_frame(json!({"type": "join", "version": 2, "session": session, "name": name, "password": null}))
            .await;
        expect_welcome(reply)
    }

    pub async fn signal(&mut self, to: &str, data: Value) {
        self.send_json(json!({"type": "signal", "to": to, "data": data}))
            .await;
    }

    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub fn expect_welcome(msg: ServerMessage) -> Welcome {
    match msg {
        ServerMessage::Welcome {
            session,
            client_id,
            peers,
            ice_servers,
            resume_token,
        } => Welcome {
            session,
            client_id,
            peers,
            ice_servers,
            resume_token,
        },
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// A client that created a fresh session.
pub async fn creator(server: &SignalingServer, name: &str) -> (Client, Welcome) {
    let mut c = Client::connect(server).await;
    let w = c.join(None, name).await;
    (c, w)
}

/// A client that joined `session`.
pub async fn joiner(server: &SignalingServer, session: &str, name: &str) -> (Client, Welcome) {
    let mut c = Client::connect(server).await;
    let w = c.join(Some(session), name).await;
    (c, w)
}

/// TLS for the tests: a self-signed certificate for `localhost` and 127.0.0.1 (rcgen, ring),
/// servers that present it, and clients that trust it or not.
pub mod tls {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use peershare_signaling::tls::crypto_provider;
    use peershare_signaling::{ServerConfig, ServerTls, SignalingServer};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::net::TcpStream;
    use tokio::time::timeout;
    use tokio_rustls::client::TlsStream;

    use super::{Client, WAIT};

    /// A self-signed certificate and its key.
    pub struct TestCert {
        pub cert: CertificateDer<'static>,
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl TestCert {
        /// A fresh certificate for `localhost` and 127.0.0.1.
        pub fn localhost() -> Self {
            let c = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .expect("generate certificate");
            TestCert {
                cert: c.cert.der().clone(),
                cert_pem: c.cert.pem(),
                key_pem: c.signing_key.serialize_pem(),
            }
        }

        /// The server side of this certificate.
        pub fn server_tls(&self) -> ServerTls {
            let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM");
            ServerTls::from_der(vec![self.cert.clone()], key).expect("server TLS config")
        }

        /// Write the certificate and the key as PEM files into `dir`: (cert, key).
        pub fn write_pem(&self, dir: &Path) -> (PathBuf, PathBuf) {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert, &self.cert_pem).expect("write cert");
            std::fs::write(&key, &self.key_pem).expect("write key");
            (cert, key)
        }
    }

    /// `config` serving TLS with `cert`.
    pub fn config(cert: &TestCert) -> ServerConfig {
        ServerConfig {
            tls: Some(cert.server_tls()),
            ..super::config()
        }
    }

    /// A client configuration (ring) trusting exactly `trusted`.
    pub fn client_config(trusted: &[&TestCert]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in trusted {
            roots.add(c.cert.clone()).expect("root");
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A TLS connection to `addr` (name 127.0.0.1) trusting `trusted`; the TLS error
    /// as text.
    pub async fn tls_stream(
        addr: std::net::SocketAddr,
        trusted: &[&TestCert],
    ) -> Result<TlsStream<TcpStream>, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(client_config(trusted));
        let name = ServerName::IpAddress(addr.ip().into());
        timeout(WAIT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .map_err(|e| e.to_string())
    }

    /// A WebSocket client over TLS to `server`, trusting `trusted`; the error as text.
    pub async fn connect(
        server: &SignalingServer,
        trusted: &[&TestCert],
    ) -> Result<Client<TlsStream<TcpStream>>, String> {
        let stream = tls_stream(server.local_addr(), trusted).await?;
        let (ws, _) = timeout(WAIT, tokio_tungstenite::client_async(server.url(), stream))
            .await
            .expect("upgrade timed out")
            .map_err(|e| e.to_string())?;
        Ok(Client::from_ws(ws))
    }
}
