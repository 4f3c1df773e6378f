//! WebSocket protocol violations (RFC 6455) from a hand-written client: the server fails
//! the connection with a Close frame carrying 1002 (protocol error).

mod common;

use common::{config, start};
use peershare_signaling::SignalingServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A raw TCP connection that completed the WebSocket upgrade.
async fn upgraded(server: &SignalingServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.local_addr()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let byte = timeout(common::WAIT, tcp.read_u8())
            .await
            .expect("no upgrade response")
            .expect("read");
        response.push(byte);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    tcp
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = timeout(common::WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("the server did not close the connection");
    got
}

/// The close code of `bytes`, which must be exactly one unmasked Close frame.
fn close_code(bytes: &[u8]) -> u16 {
    assert!(bytes.len() >= 4, "no Close frame: {bytes:?}");
    assert_eq!(bytes[0], 0x88, "not a final Close frame: {bytes:?}");
    let len = usize::from(bytes[1]);
    assert!((2..126).contains(&len), "{bytes:?}");
    assert_eq!(bytes.len(), 2 + len, "more than one frame: {bytes:?}");
    u16::from_be_bytes([bytes[2], bytes[3]])
}

#[tokio::test]
async fn protocol_reserved_opcode_frame_closed_with_1002() {
    let server = start(config()).await;
    let mut tcp = upgraded(&server).await;
    // FIN, opcode 0x3 (reserved data frame), masked, empty payload.
    tcp.write_all(&[0x83, 0x80, 1, 2, 3, 4])
        .await
        .expect("write");
    let got = read_until_closed(&mut tcp).await;
    assert_eq!(close_code(&got), 1002);
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_unmasked_client_text_frame_closed_with_1002() {
    let server = start(config()).await;
    let mut tcp = upgraded(&server).await;
    // FIN, text, NOT masked, payload "hi".
    tcp.write_all(&[0x81, 0x02, b'h', b'i'])
        .await
        .expect("write");
    let got = read_until_closed(&mut tcp).await;
    assert_eq!(close_code(&got), 1002);
    server.shutdown().await;
}
