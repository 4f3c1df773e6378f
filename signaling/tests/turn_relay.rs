//! The embedded TURN relay, exercised with the `turn` crate's client over 127.0.0.1:
//! the credentials from a welcome allocate; forged and expired ones are refused; the relay
//! forwards datagrams and answers STUN binding requests.

use std::net::{Ipv4Addr, SocketAddr};
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
    SignalingServer::bind(ServerConfig {
        listen: (LOCALHOST, 0).into(),
        turn: TurnConfig {
            mode: TurnMode::Embedded {
                listen: (LOCALHOST, 0).into(),
                public_ip: None,
                secret: secret.map(str::to_string),
            },
            ..TurnConfig::default()
        },
        ..ServerConfig::default()
    })
    .await
    .expect("bind signaling server with relay")
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
    assert!(expiry > unix_now() + 11 * 3600, "12 h default lifetime");
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

#[tokio::test]
async fn welcome_with_external_relay_hands_out_its_urls_and_credentials() {
    let server = SignalingServer::bind(ServerConfig {
        turn: TurnConfig {
            mode: TurnMode::External {
                urls: vec!["turn:192.0.2.7:3478?transport=udp".into()],
                secret: SECRET.into(),
            },
            credential_lifetime: Duration::from_secs(600),
        },
        ..ServerConfig::default()
    })
    .await
    .unwrap();
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
async fn embedded_relay_welcome_credentials_allocate_and_relay_datagrams() {
    let server = server_with_relay(None).await;
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

    client.close().await.unwrap();
    server.shutdown().await;
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
