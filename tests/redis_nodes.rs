//! Real peers on two signaling nodes that share sessions through a real `redis-server`
//! (docs/PROTOCOL.md, "Several nodes"): a file crosses between members joined through
//! different nodes, and a node stopped mid-transfer costs nothing: its member rejoins
//! through the other node under the same ID and the file arrives whole; Redis stopped
//! mid-transfer costs nothing either (peer connections need no signaling).

mod common;
#[path = "../signaling/tests/support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::*;
use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::{Event, Save, Share};
use redis_server::{Redis, wait_ready};

/// The sender's rate: the 8 MiB file takes about two seconds, so it is in progress when
/// the test stops the sender's node.
const RATE: u64 = 4 * 1024 * 1024;
const SIZE: usize = 8 * 1024 * 1024;

async fn node(redis: &Redis) -> SignalingServer {
    let server = server_with(ServerConfig {
        redis: Some(redis.url()),
        ..ServerConfig::default()
    })
    .await;
    wait_ready(server.local_addr(), true).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_sender_node_stopped_mid_transfer_rejoins_other_node_file_identical() {
    init_tracing();
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (src, data) = random_file(tmp.path(), "big.bin", SIZE, 77);

    // The sender joins through node 1 (node 2 as its fallback), the recipient through
    // node 2.
    let mut cfg = config(&n1, None, "sender", tmp.path());
    cfg.fallback_servers = vec![n2.url()];
    cfg.rate_limit = Some(RATE);
    cfg.signaling_retry_window = Duration::from_secs(30);
    let (sender, mut s_rec) = join_with(cfg).await;
    let sender_id = sender.client_id().to_string();
    let cfg = config(&n2, Some(sender.session()), "recipient", &out);
    let (recipient, mut r_rec) = join_with(cfg).await;

    let upload = sender.send_files(&[src], Share::Broadcast).await.unwrap()[0];
    let file_id = r_rec.offer().await;
    let download = recipient
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    r_rec
        .until("progress", |e| matches!(e, Event::DownloadProgress { .. }))
        .await;

    // Node 1 drains: the sender is told to go, rejoins through node 2 with its resume
    // token and keeps its ID.
    n1.shutdown().await;
    match s_rec
        .until("back", |e| matches!(e, Event::SignalingReconnected { .. }))
        .await
    {
        Event::SignalingReconnected {
            client_id, resumed, ..
        } => {
            assert_eq!(client_id, sender_id);
            assert!(resumed);
        }
        _ => unreachable!(),
    }

    let path = r_rec.saved().await;
    assert_eq!(path, out.join("big.bin"));
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    let completed =
        |e: &Event| matches!(e, Event::UploadCompleted { job_id, .. } if *job_id == upload);
    // The upload may have completed before the sender was back on signaling.
    if !s_rec.seen.iter().any(completed) {
        s_rec.until("upload end", completed).await;
    }
    // The recipient never saw the sender leave; the download ended once, completed.
    assert!(
        !r_rec
            .seen
            .iter()
            .any(|e| matches!(e, Event::PeerLeft { peer } if *peer == sender_id)),
        "{:#?}",
        r_rec.seen
    );
    let ends = ends_of(&r_rec.seen, download);
    assert_eq!(ends, 1, "{:#?}", r_rec.seen);
    recipient.leave().await;
    sender.leave().await;
    n2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_redis_stopped_mid_transfer_file_completes_identical() {
    init_tracing();
    let mut redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (src, data) = random_file(tmp.path(), "big.bin", SIZE, 78);
    let mut cfg = config(&n1, None, "sender", tmp.path());
    cfg.rate_limit = Some(RATE);
    let (sender, mut s_rec) = join_with(cfg).await;
    let sender_id = sender.client_id().to_string();
    let cfg = config(&n2, Some(sender.session()), "recipient", &out);
    let (recipient, mut r_rec) = join_with(cfg).await;

    let upload = sender.send_files(&[src], Share::Broadcast).await.unwrap()[0];
    let file_id = r_rec.offer().await;
    let download = recipient
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    r_rec
        .until("progress", |e| matches!(e, Event::DownloadProgress { .. }))
        .await;

    // Redis goes away mid-transfer: both nodes stop taking joins, the transfer goes on.
    redis.stop();
    wait_ready(n1.local_addr(), false).await;
    wait_ready(n2.local_addr(), false).await;
    let path = r_rec.saved().await;
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    let completed =
        |e: &Event| matches!(e, Event::UploadCompleted { job_id, .. } if *job_id == upload);
    if !s_rec.seen.iter().any(completed) {
        s_rec.until("upload end", completed).await;
    }
    assert_eq!(ends_of(&r_rec.seen, download), 1, "{:#?}", r_rec.seen);
    assert!(
        !r_rec
            .seen
            .iter()
            .any(|e| matches!(e, Event::PeerLeft { peer } if *peer == sender_id)),
        "{:#?}",
        r_rec.seen
    );
    recipient.leave().await;
    sender.leave().await;
    n1.shutdown().await;
    n2.shutdown().await;
}
