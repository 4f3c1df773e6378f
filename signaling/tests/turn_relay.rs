//! The embedded TURN relay, exercised with the `turn` crate's client and with raw TURN
//! messages over 127.0.0.1: the credentials from a welcome allocate; forged and expired
//! ones get 401; the relay forwards datagrams and answers STUN binding requests; it refuses
//! internal peers (403) unless allowed, bounds allocations per user (486), and hands over
//! between its own allocations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use peershare_signaling::turn::{TURN_REALM, turn_credentials};
use peershare_signaling::{
    ClientMessage, IceServer, ServerConfig, ServerMessage, SignalingServer, TurnConfig, TurnMode,
};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-secret";

async fn server_with_relay(secret: Option<&str>) -> SignalingServer {
    server_with_relay_config(secret, TurnConfig::default()).await
}

/// A server whose embedded relay on 127.0.0.1 uses `turn`'s policy and quota settings.
async fn server_with_relay_config(secret: Option<&str>, turn: TurnConfig) -> SignalingServer {
    SignalingServer::bind(ServerConfig {
        listen: (LOCALHOST, 0).into(),
        turn: TurnConfig {
            mode: TurnMode::Embedded {
                listen: (LOCALHOST, 0).into(),
                public_ip: None,
                secret: secret.map(str::to_string),
            },
            ..turn
        },
        ..ServerConfig::default()
    })
    .await
    .expect("bind signaling server with relay")
}

/// Relay settings that let peers on 127.0.0.1 (the tests' sockets) be relayed to.
fn allow_loopback() -> TurnConfig {
    TurnConfig {
        allow_peers: vec!["127.0.0.1/32".parse().unwrap()],
        ..TurnConfig::default()
    }
}

/// Join a fresh session and return the welcome's ICE servers.
async fn welcome_ice_servers(server: &SignalingServer) -> (String, Vec<IceServer>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    let join = ClientMessage::Join {
        version: peershare_signaling::PROTOCOL_VERSION,
        session: None,
        name: "t".into(),
        password: None,
        create: false,
        relay_only: false,
        resume: None,
    };
    ws.send(Message::text(serde_json::to_string(&join).unwrap()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("welcome in time")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(text) = frame
            && let ServerMessage::Welcome {
                client_id,
                ice_servers,
                ..
            } = serde_json::from_str(&text).unwrap()
        {
            return (client_id, ice_servers);
        }
    }
}

async fn turn_client(relay: SocketAddr, username: &str, password: &str) -> Client {
    let conn = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let client = Client::new(ClientConfig {
        stun_serv_addr: relay.to_string(),
        turn_serv_addr: relay.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        realm: TURN_REALM.to_string(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("TURN client");
    client.listen().await.expect("client listen");
    client
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn welcome_with_embedded_relay_lists_stun_and_turn_with_client_credentials() {
    let server = server_with_relay(None).await;
    let relay = server.turn_addr().expect("relay running");
    assert_eq!(relay.ip(), LOCALHOST);
    let (client_id, ice) = welcome_ice_servers(&server).await;
    assert_eq!(ice.len(), 2, "{ice:?}");
    assert_eq!(ice[0].urls, vec![format!("stun:{relay}")]);
    assert_eq!(ice[1].urls, vec![format!("turn:{relay}?transport=udp")]);
    let username = ice[1].username.clone().unwrap();
    let (expiry, client) = username.split_once(':').unwrap();
    assert_eq!(client, client_id);
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (unix_now() + 9 * 60..=unix_now() + 10 * 60).contains(&expiry),
        "10 min default lifetime"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn welcome_without_turn_has_no_ice_servers() {
    let server = SignalingServer::bind(ServerConfig::default())
        .await
        .unwrap();
    assert_eq!(server.turn_addr(), None);
    let (_, ice) = welcome_ice_servers(&server).await;
    assert!(ice.is_empty(), "{ice:?}");
    server.shutdown().await;
}

/// A server handing out credentials for an external relay (192.0.2.7) valid `lifetime`.
async fn external_relay_server(lifetime: Duration) -> SignalingServer {
    SignalingServer::bind(ServerConfig {
        turn: TurnConfig {
            mode: TurnMode::External {
                urls: vec!["turn:192.0.2.7:3478?transport=udp".into()],
                secret: SECRET.into(),
            },
            credential_lifetime: lifetime,
            ..TurnConfig::default()
        },
        ..ServerConfig::default()
    })
    .await
    .expect("bind")
}

#[tokio::test]
async fn welcome_with_external_relay_hands_out_its_urls_and_credentials() {
    let server = external_relay_server(Duration::from_secs(600)).await;
    assert_eq!(
        server.turn_addr(),
        None,
        "no embedded relay in external mode"
    );
    let (client_id, ice) = welcome_ice_servers(&server).await;
    assert_eq!(ice[0].urls, vec!["stun:192.0.2.7:3478".to_string()]);
    assert_eq!(
        ice[1].urls,
        vec!["turn:192.0.2.7:3478?transport=udp".to_string()]
    );
    let username = ice[1].username.clone().unwrap();
    let (expiry, client) = username.split_once(':').unwrap();
    assert_eq!(client, client_id);
    assert!(expiry.parse::<u64>().unwrap() <= unix_now() + 600);
    assert_eq!(
        ice[1].credential.as_deref(),
        Some(peershare_signaling::turn::turn_password(SECRET, &username).as_str())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn joined_member_gets_renewed_credentials_every_half_lifetime() {
    // Renewed every 30 s: before the 60 s idle timeout of a silent client.
    let server = external_relay_server(Duration::from_secs(60)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    let join = ClientMessage::Join {
        version: peershare_signaling::PROTOCOL_VERSION,
        session: None,
        name: "t".into(),
        password: None,
        create: false,
        relay_only: false,
        resume: None,
    };
    ws.send(Message::text(serde_json::to_string(&join).unwrap()))
        .await
        .unwrap();
    let mut next = async || -> ServerMessage {
        let frame = tokio::time::timeout(Duration::from_secs(1000), ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("frame");
        serde_json::from_str(frame.to_text().expect("text")).expect("server frame")
    };
    let ServerMessage::Welcome { client_id, .. } = next().await else {
        panic!("expected welcome")
    };
    // Virtual time: the renewal at half the lifetime comes at once.
    tokio::time::pause();
    let renewed = loop {
        match next().await {
            ServerMessage::IceServers { ice_servers } => break ice_servers,
            ServerMessage::Error { code, message, .. } => panic!("error {code}: {message}"),
            _ => {}
        }
    };
    let username = renewed[1].username.clone().expect("TURN username");
    assert_eq!(
        username.split_once(':').map(|(_, c)| c),
        Some(client_id.as_str())
    );
    assert_eq!(
        renewed[1].credential.as_deref(),
        Some(peershare_signaling::turn::turn_password(SECRET, &username).as_str())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_welcome_credentials_allocate_and_relay_datagrams() {
    let server = server_with_relay_config(None, allow_loopback()).await;
    let relay = server.turn_addr().unwrap();
    let (_, ice) = welcome_ice_servers(&server).await;
    let turn = &ice[1];
    let client = turn_client(
        relay,
        turn.username.as_deref().unwrap(),
        turn.credential.as_deref().unwrap(),
    )
    .await;
    let relay_conn = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("allocation in time")
        .expect("valid credentials allocate");
    let relayed = relay_conn.local_addr().unwrap();
    assert_eq!(relayed.ip(), LOCALHOST);
    assert_ne!(relayed.port(), relay.port());

    // The relay answers STUN binding requests.
    let mapped = tokio::time::timeout(WAIT, client.send_binding_request())
        .await
        .expect("binding answer in time")
        .expect("binding request answered");
    assert_eq!(mapped.ip(), LOCALHOST);

    // A datagram sent through the allocation arrives from the relayed address.
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    relay_conn
        .send_to(b"through the relay", peer_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("relayed datagram in time")
        .unwrap();
    assert_eq!(&buf[..n], b"through the relay");
    assert_eq!(from, relayed);
    // And back: the peer answers the relayed address.
    peer.send_to(b"reply", relayed).await.unwrap();
    let (n, from) = tokio::time::timeout(WAIT, relay_conn.recv_from(&mut buf))
        .await
        .expect("reply through the relay in time")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"reply"[..], peer_addr));

    // /metrics counts the allocation and the payload bytes each way.
    let metrics = get_metrics(&server).await;
    for line in [
        "peershare_signaling_turn_allocations 1",
        "peershare_signaling_turn_relayed_bytes_total{direction=\"to_peers\"} 17",
        "peershare_signaling_turn_relayed_bytes_total{direction=\"from_peers\"} 5",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    client.close().await.unwrap();
    server.shutdown().await;
}

/// The body of `GET /metrics`.
async fn get_metrics(server: &SignalingServer) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    raw.split_once("\r\n\r\n").expect("head end").1.to_string()
}

#[tokio::test]
async fn embedded_relay_forged_password_is_refused() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let forged = turn_credentials("not-the-secret", "abcdef012345", unix_now() + 3600);
    let client = turn_client(relay, &forged.username, &forged.password).await;
    let result = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("answer in time");
    assert!(result.is_err(), "forged credentials must not allocate");
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_expired_username_is_refused() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    // Correctly signed, but expired a minute ago.
    let expired = turn_credentials(SECRET, "abcdef012345", unix_now() - 60);
    let client = turn_client(relay, &expired.username, &expired.password).await;
    let result = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("answer in time");
    assert!(result.is_err(), "expired credentials must not allocate");
    client.close().await.unwrap();

    // The same secret with a future expiry allocates: the refusal was the expiry.
    let valid = turn_credentials(SECRET, "abcdef012345", unix_now() + 60);
    let client = turn_client(relay, &valid.username, &valid.password).await;
    tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("answer in time")
        .expect("valid credentials allocate");
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_shutdown_closes_the_listener() {
    let server = server_with_relay(None).await;
    let relay = server.turn_addr().unwrap();
    server.shutdown().await;
    // The port is free again once the relay is stopped.
    let rebound = std::net::UdpSocket::bind(relay);
    assert!(rebound.is_ok(), "relay port still bound: {rebound:?}");
}

// ---------------------------------------------------------------------------------------
// Raw TURN messages: exact error codes, and no client library retrying behind our back.

use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA,
    METHOD_REFRESH, METHOD_SEND, Message as StunMessage, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;

/// One TURN client socket speaking raw messages to the relay.
struct RawTurn {
    sock: UdpSocket,
    relay: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

fn error_code(m: &StunMessage) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|()| e.code.0)
}

fn text(m: &StunMessage, attr: stun::attributes::AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, attr).ok().map(|t| t.text)
}

impl RawTurn {
    async fn new(relay: SocketAddr, username: &str, password: &str) -> RawTurn {
        RawTurn {
            sock: UdpSocket::bind((LOCALHOST, 0)).await.unwrap(),
            relay,
            username: username.to_string(),
            password: password.to_string(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    /// Send `m` and return the response with its transaction ID (other datagrams, such as
    /// Data indications, are skipped).
    async fn transact(&self, m: &StunMessage) -> StunMessage {
        self.sock.send_to(&m.raw, self.relay).await.unwrap();
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
                .await
                .expect("TURN response in time")
                .unwrap();
            let mut r = StunMessage::new();
            r.raw = buf[..n].to_vec();
            if r.decode().is_ok() && r.transaction_id == m.transaction_id {
                return r;
            }
        }
    }

    fn build(
        method: Method,
        class: stun::message::MessageClass,
        attrs: Vec<Box<dyn Setter>>,
    ) -> StunMessage {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(method, class)),
        ];
        setters.extend(attrs);
        let mut m = StunMessage::new();
        m.build(&setters).unwrap();
        m
    }

    /// An authenticated request with the current nonce.
    async fn request(&self, method: Method, mut attrs: Vec<Box<dyn Setter>>) -> StunMessage {
        attrs.push(Box::new(TextAttribute::new(
            ATTR_USERNAME,
            self.username.clone(),
        )));
        attrs.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
        attrs.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
        attrs.push(Box::new(MessageIntegrity::new_long_term_integrity(
            self.username.clone(),
            self.realm.clone(),
            self.password.clone(),
        )));
        self.transact(&Self::build(method, CLASS_REQUEST, attrs))
            .await
    }

    /// The unauthenticated first Allocate: must be answered 401 with a nonce and realm.
    async fn fetch_nonce(&mut self) {
        let first = Self::build(
            METHOD_ALLOCATE,
            CLASS_REQUEST,
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })],
        );
        let r = self.transact(&first).await;
        assert_eq!(error_code(&r), Some(401), "unauthenticated Allocate");
        self.nonce = text(&r, ATTR_NONCE).expect("401 carries a NONCE");
        self.realm = text(&r, ATTR_REALM).expect("401 carries a REALM");
    }

    /// Allocate: the relayed address, or the error code.
    async fn allocate(&mut self) -> Result<SocketAddr, u16> {
        self.fetch_nonce().await;
        let r = self
            .request(
                METHOD_ALLOCATE,
                vec![Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                })],
            )
            .await;
        if r.typ.class == CLASS_SUCCESS_RESPONSE {
            let mut relayed = RelayedAddress::default();
            relayed.get_from(&r).unwrap();
            Ok(SocketAddr::new(relayed.ip, relayed.port))
        } else {
            Err(error_code(&r).unwrap_or(0))
        }
    }

    async fn create_permission(&self, peer: SocketAddr) -> Result<(), u16> {
        let r = self
            .request(
                METHOD_CREATE_PERMISSION,
                vec![Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                })],
            )
            .await;
        match r.typ.class {
            CLASS_SUCCESS_RESPONSE => Ok(()),
            _ => Err(error_code(&r).unwrap_or(0)),
        }
    }

    async fn channel_bind(&self, channel: u16, peer: SocketAddr) -> Result<(), u16> {
        let r = self
            .request(
                METHOD_CHANNEL_BIND,
                vec![
                    Box::new(ChannelNumber(channel)),
                    Box::new(PeerAddress {
                        ip: peer.ip(),
                        port: peer.port(),
                    }),
                ],
            )
            .await;
        match r.typ.class {
            CLASS_SUCCESS_RESPONSE => Ok(()),
            _ => Err(error_code(&r).unwrap_or(0)),
        }
    }

    async fn refresh(&self, lifetime: Duration) -> Result<(), u16> {
        let r = self
            .request(METHOD_REFRESH, vec![Box::new(Lifetime(lifetime))])
            .await;
        match r.typ.class {
            CLASS_SUCCESS_RESPONSE => Ok(()),
            _ => Err(error_code(&r).unwrap_or(0)),
        }
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let m = Self::build(
            METHOD_SEND,
            CLASS_INDICATION,
            vec![
                Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }),
                Box::new(Data(data.to_vec())),
            ],
        );
        self.sock.send_to(&m.raw, self.relay).await.unwrap();
    }

    async fn send_channel_data(&self, channel: u16, data: &[u8]) {
        let mut raw = channel.to_be_bytes().to_vec();
        raw.extend_from_slice(&(data.len() as u16).to_be_bytes());
        raw.extend_from_slice(data);
        self.sock.send_to(&raw, self.relay).await.unwrap();
    }

    /// A round trip through the relay's single request loop: everything sent before it
    /// has been handled (and anything it relayed has been sent) when this returns.
    async fn sync(&self) {
        let r = self
            .transact(&Self::build(METHOD_BINDING, CLASS_REQUEST, Vec::new()))
            .await;
        assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    }

    /// The next Data indication (peer, payload) or ChannelData (channel as port 0).
    async fn next_data(&self) -> (SocketAddr, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
                .await
                .expect("relayed data in time")
                .unwrap();
            if n >= 4 && buf[0] & 0xC0 == 0x40 {
                let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
                let channel = u16::from_be_bytes([buf[0], buf[1]]);
                return (
                    SocketAddr::new(IpAddr::from([0, 0, 0, 0]), channel),
                    buf[4..4 + len].to_vec(),
                );
            }
            let mut m = StunMessage::new();
            m.raw = buf[..n].to_vec();
            if m.decode().is_ok() && m.typ == MessageType::new(METHOD_DATA, CLASS_INDICATION) {
                let mut peer = PeerAddress::default();
                peer.get_from(&m).unwrap();
                let mut data = Data::default();
                data.get_from(&m).unwrap();
                return (SocketAddr::new(peer.ip, peer.port), data.0);
            }
        }
    }
}

/// Valid credentials for `client` on a relay with [`SECRET`].
fn creds(client: &str) -> peershare_signaling::turn::TurnCredentials {
    turn_credentials(SECRET, client, unix_now() + 600)
}

async fn allocated(relay: SocketAddr, client: &str) -> (RawTurn, SocketAddr) {
    let c = creds(client);
    let mut t = RawTurn::new(relay, &c.username, &c.password).await;
    let relayed = t.allocate().await.expect("allocation");
    (t, relayed)
}

#[tokio::test]
async fn embedded_relay_permission_to_internal_address_is_refused_with_403() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let (client, _) = allocated(relay, "abcdef012345").await;
    let service = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let service_addr = service.local_addr().unwrap();
    for peer in [
        service_addr,
        "10.0.0.1:53".parse().unwrap(),
        "169.254.169.254:80".parse().unwrap(),
        "0.0.0.0:9".parse().unwrap(),
        "[::ffff:127.0.0.1]:9".parse().unwrap(),
        SocketAddr::new(relay.ip(), relay.port()),
    ] {
        // IPv6 forms of a refused IPv4 peer on an IPv4 relay: 403 or 443, never granted.
        let result = client.create_permission(peer).await;
        assert!(
            matches!(result, Err(403) | Err(443)),
            "permission for {peer}: {result:?}"
        );
        if peer.is_ipv4() {
            assert_eq!(result, Err(403), "permission for {peer}");
        }
    }
    assert_eq!(client.channel_bind(0x4000, service_addr).await, Err(403));
    // Nothing reaches the service, through a Send indication or a channel.
    client
        .send_indication(service_addr, b"to a local service")
        .await;
    client.send_channel_data(0x4000, b"through a channel").await;
    client.sync().await;
    let mut buf = [0u8; 64];
    assert!(
        service.try_recv_from(&mut buf).is_err(),
        "a datagram was relayed to 127.0.0.1"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_allowed_loopback_peer_is_granted_and_relays() {
    let server = server_with_relay_config(Some(SECRET), allow_loopback()).await;
    let relay = server.turn_addr().unwrap();
    let (client, relayed) = allocated(relay, "abcdef012345").await;
    let service = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let service_addr = service.local_addr().unwrap();
    assert_eq!(client.create_permission(service_addr).await, Ok(()));
    client.send_indication(service_addr, b"allowed").await;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(WAIT, service.recv_from(&mut buf))
        .await
        .expect("relayed datagram in time")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"allowed"[..], relayed));
    service.send_to(b"reply", relayed).await.unwrap();
    assert_eq!(client.next_data().await, (service_addr, b"reply".to_vec()));
    // Still refused: what the allow list does not cover, and the relay's own listener.
    assert_eq!(
        client
            .create_permission("10.0.0.1:53".parse().unwrap())
            .await,
        Err(403)
    );
    assert_eq!(client.channel_bind(0x4001, relay).await, Err(403));
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_eleventh_allocation_of_one_user_gets_486() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(allocated(relay, "abcdef012345").await.0);
    }
    let c = creds("abcdef012345");
    let mut eleventh = RawTurn::new(relay, &c.username, &c.password).await;
    assert_eq!(eleventh.allocate().await, Err(486));
    // Renewed credentials of the same client count against the same quota.
    let renewed = turn_credentials(SECRET, "abcdef012345", unix_now() + 900);
    let mut again = RawTurn::new(relay, &renewed.username, &renewed.password).await;
    assert_eq!(again.allocate().await, Err(486));
    // Another client is not affected.
    allocated(relay, "other-client").await;
    // A released allocation frees its slot.
    assert_eq!(held[0].refresh(Duration::ZERO).await, Ok(()));
    assert!(eleventh.allocate().await.is_ok(), "slot freed by refresh 0");
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_bad_credentials_get_401_with_fresh_nonce() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let forged = turn_credentials("not-the-secret", "abcdef012345", unix_now() + 600);
    let expired = turn_credentials(SECRET, "abcdef012345", unix_now() - 60);
    let malformed_name = "no-expiry-here";
    let malformed = peershare_signaling::turn::TurnCredentials {
        username: malformed_name.into(),
        password: peershare_signaling::turn::turn_password(SECRET, malformed_name),
    };
    for (what, c) in [
        ("bad HMAC", forged),
        ("expired", expired),
        ("malformed", malformed),
    ] {
        let mut t = RawTurn::new(relay, &c.username, &c.password).await;
        t.fetch_nonce().await;
        let first_nonce = t.nonce.clone();
        let r = t
            .request(
                METHOD_ALLOCATE,
                vec![Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                })],
            )
            .await;
        assert_eq!(r.typ.class, CLASS_ERROR_RESPONSE, "{what}");
        assert_eq!(error_code(&r), Some(401), "{what}");
        let nonce = text(&r, ATTR_NONCE).expect("401 carries a NONCE");
        assert_ne!(nonce, first_nonce, "{what}: a fresh nonce");
        assert_eq!(text(&r, ATTR_REALM).as_deref(), Some(TURN_REALM), "{what}");
    }
    // The correct credential still allocates.
    allocated(relay, "abcdef012345").await;
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_hand_over_between_allocations_works_without_allow_list() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let (a, a_relayed) = allocated(relay, "aaaaaaaaaaaa").await;
    let (b, b_relayed) = allocated(relay, "bbbbbbbbbbbb").await;
    // Both relayed addresses are 127.0.0.1: refused as peers, except as live allocations.
    assert_eq!(a_relayed.ip(), LOCALHOST);
    assert_eq!(a.create_permission(b_relayed).await, Ok(()));
    assert_eq!(b.create_permission(a_relayed).await, Ok(()));
    a.send_indication(b_relayed, b"a to b").await;
    assert_eq!(b.next_data().await, (a_relayed, b"a to b".to_vec()));
    assert_eq!(b.channel_bind(0x4000, a_relayed).await, Ok(()));
    b.send_channel_data(0x4000, b"b to a").await;
    assert_eq!(a.next_data().await, (b_relayed, b"b to a".to_vec()));
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_permission_for_live_relay_does_not_open_its_ip() {
    // 127.0.0.2 is allowed; 127.0.0.1 (the relay's IP) only as a live allocation.
    let server = server_with_relay_config(
        Some(SECRET),
        TurnConfig {
            allow_peers: vec!["127.0.0.2/32".parse().unwrap()],
            ..TurnConfig::default()
        },
    )
    .await;
    let relay = server.turn_addr().unwrap();
    let (a, a_relayed) = allocated(relay, "aaaaaaaaaaaa").await;
    let (_b, b_relayed) = allocated(relay, "bbbbbbbbbbbb").await;
    // TURN permissions are per IP: this one covers all of 127.0.0.1 inside the server.
    assert_eq!(a.create_permission(b_relayed).await, Ok(()));
    let friend = UdpSocket::bind(("127.0.0.2", 0)).await.unwrap();
    let friend_addr = friend.local_addr().unwrap();
    assert_eq!(a.create_permission(friend_addr).await, Ok(()));
    let service = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let service_addr = service.local_addr().unwrap();
    // Out: a Send indication to another port of 127.0.0.1 is dropped.
    a.send_indication(service_addr, b"to a local service").await;
    a.sync().await;
    let mut buf = [0u8; 64];
    assert!(service.try_recv_from(&mut buf).is_err());
    // In: the local service's datagram is dropped, the allowed one behind it arrives.
    service
        .send_to(b"from a local service", a_relayed)
        .await
        .unwrap();
    friend.send_to(b"from 127.0.0.2", a_relayed).await.unwrap();
    assert_eq!(
        a.next_data().await,
        (friend_addr, b"from 127.0.0.2".to_vec())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_permissions_per_allocation_capped_with_508() {
    let server = server_with_relay(Some(SECRET)).await;
    let relay = server.turn_addr().unwrap();
    let (client, _) = allocated(relay, "abcdef0123ab").await;
    // TEST-NET addresses: allowed by the policy, so only the cap can refuse them.
    let peer = |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)), 9);
    const { assert!(turn::allocation::MAX_PERMISSIONS < 254) };
    for i in 1..=turn::allocation::MAX_PERMISSIONS {
        assert_eq!(
            client.create_permission(peer(i)).await,
            Ok(()),
            "permission {i}"
        );
    }
    let over = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 9);
    assert_eq!(client.create_permission(over).await, Err(508));
    // A channel to a new peer would need one more permission: refused too.
    assert!(client.channel_bind(0x4000, over).await.is_err());
    // Refreshing an existing permission still works.
    assert_eq!(client.create_permission(peer(1)).await, Ok(()));
    server.shutdown().await;
}
