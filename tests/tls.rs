//! Peers on a `wss://` signaling server with a self-signed certificate: trusted through
//! `PeerConfig::ca_file`, a file arrives intact; without it joining fails (1180).

mod common;

use common::*;
use peershare::{Share, codes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_wss_with_ca_file_transfers_1mib_identical() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (src, data) = random_file(tmp.path(), "one.bin", 1024 * 1024, 11);
    let cert = TestCert::localhost();
    let server = tls_server(&cert).await;
    assert!(
        server.url().starts_with("wss://127.0.0.1:"),
        "{}",
        server.url()
    );

    let mut s_config = config(&server, None, "sender", tmp.path());
    s_config.ca_file = Some(cert.cert_file.clone());
    let (sender, _s_rec) = join_with(s_config).await;
    let mut r_config = config(&server, Some(sender.session()), "recipient", &out);
    r_config.ca_file = Some(cert.cert_file.clone());
    let (recipient, mut r_rec) = join_with(r_config).await;

    sender.send_files(&[src], Share::Broadcast).await.unwrap();
    let path = r_rec.receive_next(&recipient, &out).await;
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    server.shutdown().await;
}

#[tokio::test]
async fn peer_wss_without_ca_file_join_fails_with_1180_untrusted() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = TestCert::localhost();
    let server = tls_server(&cert).await;
    let err = peershare::Peer::join(config(&server, None, "a", tmp.path()))
        .await
        .err()
        .expect("joined a server whose certificate is not trusted");
    assert_eq!(err.code(), codes::NOT_CONNECTED, "{err}");
    assert!(err.to_string().contains("certificate not trusted"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn peer_unreadable_or_empty_ca_file_join_fails_with_6008() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = TestCert::localhost();
    let server = tls_server(&cert).await;
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate here\n").unwrap();
    for ca in [
        tmp.path().join("missing.pem"),
        not_pem,
        cert.key_file.clone(),
    ] {
        let mut c = config(&server, None, "a", tmp.path());
        c.ca_file = Some(ca.clone());
        let err = peershare::Peer::join(c)
            .await
            .err()
            .unwrap_or_else(|| panic!("joined with CA file {}", ca.display()));
        assert_eq!(err.code(), codes::INVALID_ARGUMENT, "{err}");
        assert!(err.to_string().contains("CA file"), "{err}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn peer_wss_url_to_plain_server_join_fails_with_1180_naming_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let mut c = config(&server, None, "a", tmp.path());
    c.server = server.url().replacen("ws://", "wss://", 1);
    let err = peershare::Peer::join(c)
        .await
        .err()
        .expect("joined a plain server over wss");
    assert_eq!(err.code(), codes::NOT_CONNECTED, "{err}");
    assert!(err.to_string().contains("TLS: "), "{err}");
    server.shutdown().await;
}
