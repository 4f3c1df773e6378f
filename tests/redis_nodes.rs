//! Real peers on two signaling nodes that share sessions through a real `redis-server`
//! (docs/PROTOCOL.md, "Several nodes"): a file crosses between members joined through
//! different nodes, and a node stopped mid-transfer costs nothing: its member rejoins
//! through the other node under the same ID and the file arrives whole; Redis stopped
//! mid-transfer costs nothing either (peer connections need no signaling).

mod common;
#[path = "../signaling/tests/support/redis_server.rs"]
mod redis_server;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::{Event, JobId, Peer, PeerConfig};
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

/// A file on its way from a sender joined through `n1` to a recipient joined through
/// `n2`, bytes already flowing.
struct CrossNode {
    sender: Peer,
    s_rec: Recorder,
    sender_id: String,
    recipient: Peer,
    r_rec: Recorder,
    data: Vec<u8>,
    upload: JobId,
    download: JobId,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

impl CrossNode {
    /// `sender_cfg` adds to the sender's configuration (rate-limited to [`RATE`]).
    async fn start(
        n1: &SignalingServer,
        n2: &SignalingServer,
        seed: u64,
        sender_cfg: impl FnOnce(&mut PeerConfig),
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let (src, data) = random_file(tmp.path(), "big.bin", SIZE, seed);
        let mut cfg = config(n1, None, "sender", tmp.path());
        cfg.rate_limit = Some(RATE);
        sender_cfg(&mut cfg);
        let (sender, s_rec) = join_with(cfg).await;
        let sender_id = sender.client_id().to_string();
        let cfg = config(n2, Some(sender.session()), "recipient", &out);
        let (recipient, mut r_rec) = join_with(cfg).await;
        let (upload, download) = r_rec
            .transfer_under_way(&sender, src, &recipient, &out)
            .await;
        CrossNode {
            sender,
            s_rec,
            sender_id,
            recipient,
            r_rec,
            data,
            upload,
            download,
            out,
            _tmp: tmp,
        }
    }

    /// The file arrives identical under its name, the upload completes, the download
    /// ended once, the recipient never saw the sender leave; both leave.
    async fn finish(mut self) {
        let path = self.r_rec.saved().await;
        assert_eq!(path, self.out.join("big.bin"));
        assert!(std::fs::read(&path).unwrap() == self.data, "bytes differ");
        let upload = self.upload;
        // The upload may have completed before the sender was back on signaling.
        self.s_rec
            .seen_or_until(
                "upload end",
                |e| matches!(e, Event::UploadCompleted { job_id, .. } if *job_id == upload),
            )
            .await;
        let sender_id = &self.sender_id;
        assert!(
            !self
                .r_rec
                .seen
                .iter()
                .any(|e| matches!(e, Event::PeerLeft { peer } if peer == sender_id)),
            "{:#?}",
            self.r_rec.seen
        );
        let ends = ends_of(&self.r_rec.seen, self.download);
        assert_eq!(ends, 1, "{:#?}", self.r_rec.seen);
        self.recipient.leave().await;
        self.sender.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_sender_node_stopped_mid_transfer_rejoins_other_node_file_identical() {
    init_tracing();
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    // The sender joins through node 1 (node 2 as its fallback), the recipient through
    // node 2.
    let n2_url = n2.url();
    let mut t = CrossNode::start(&n1, &n2, 77, |cfg| {
        cfg.fallback_servers = vec![n2_url];
        cfg.signaling_retry_window = Duration::from_secs(30);
    })
    .await;

    // Node 1 drains: the sender is told to go, rejoins through node 2 with its resume
    // token and keeps its ID.
    n1.shutdown().await;
    match t
        .s_rec
        .until("back", |e| matches!(e, Event::SignalingReconnected { .. }))
        .await
    {
        Event::SignalingReconnected {
            client_id, resumed, ..
        } => {
            assert_eq!(client_id, t.sender_id);
            assert!(resumed);
        }
        _ => unreachable!(),
    }
    t.finish().await;
    n2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_redis_stopped_mid_transfer_file_completes_identical() {
    init_tracing();
    let mut redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let t = CrossNode::start(&n1, &n2, 78, |_| {}).await;

    // Redis goes away mid-transfer: both nodes stop taking joins, the transfer goes on.
    redis.stop();
    wait_ready(n1.local_addr(), false).await;
    wait_ready(n2.local_addr(), false).await;
    t.finish().await;
    n1.shutdown().await;
    n2.shutdown().await;
}
