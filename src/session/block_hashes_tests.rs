//! Resuming a restarted download whose partial file holds bytes past its checkpoint:
//! the recipient asks the sender for block hashes (`hashes-request`), trusts only what
//! matches, and falls back to the checkpoint whenever the sender cannot tell (an old
//! peer, an error, no answer). Driven step by step as in `tests.rs`, with stand-in
//! connections and the injected clock; the files are real.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::connection::{ConnCommand, ConnEvent, ConnHandle};
use super::links::Conn;
use super::{Session, test_code};
use crate::clock::Clock;
use crate::config::PeerConfig;
use crate::error::codes;
use crate::peer::Save;
use crate::proto::batch::MAX_BATCH_FILE;
use crate::proto::control::{
    BatchJob, ControlMessage, FEATURE_BLOCK_HASHES, FEATURE_TREE, features,
};
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::resume::HASH_BLOCK;
use crate::signal_client::SignalingSession;
use crate::store::{JobRecord, JobStore, RECORD_VERSION};
use crate::transfer::FileIdentity;

const MIB: u64 = HASH_BLOCK;
/// Our client ID is the larger one: we answer, so no connection task is spawned.
const ME: &str = "zz-me";
const PEER: &str = "aa-peer";

/// A session of ours with one other member connected through a stand-in connection.
struct Pair {
    session: Session,
    clock: Clock,
    conn_rx: mpsc::UnboundedReceiver<ConnCommand>,
    conn_id: Uuid,
    _signal_rx: mpsc::Receiver<ClientMessage>,
    _server_tx: mpsc::Sender<ServerMessage>,
}

impl Pair {
    fn new(download_dir: &Path) -> Self {
        let (signal_tx, signal_rx) = mpsc::channel(64);
        let (server_tx, server_rx) = mpsc::channel(64);
        let (ev_tx, _events) = mpsc::unbounded_channel();
        let mut config = PeerConfig::new("ws://127.0.0.1:9");
        config.download_dir = download_dir.to_path_buf();
        let clock = config.clock.clone();
        let joined = SignalingSession {
            server: "ws://127.0.0.1:9".into(),
            resume_token: None,
            session: "session".into(),
            client_id: ME.into(),
            peers: vec![PeerInfo {
                id: PEER.into(),
                name: "peer".into(),
                relay_only: false,
            }],
            ice_servers: Vec::new(),
            tx: signal_tx,
            rx: server_rx,
            pump: None,
        };
        let mut session = Session::new(Arc::new(config), joined, test_code(), ev_tx);
        let (tx, conn_rx) = mpsc::unbounded_channel();
        let conn_id = Uuid::new_v4();
        session.authenticate_for_test(PEER);
        session
            .links
            .get_mut(PEER)
            .expect("the peer is a member")
            .conn = Some(Conn {
            id: conn_id,
            handle: ConnHandle { tx },
        });
        session.on_conn_event(PEER.into(), conn_id, ConnEvent::ControlOpen(None));
        let mut pair = Pair {
            session,
            clock,
            conn_rx,
            conn_id,
            _signal_rx: signal_rx,
            _server_tx: server_tx,
        };
        pair.sent();
        pair
    }

    /// The peer's connection delivers `msg`.
    fn control(&mut self, msg: ControlMessage) {
        self.session
            .on_conn_event(PEER.into(), self.conn_id, ConnEvent::Control(msg));
        self.session.flush_events();
    }

    /// Control messages we sent to the peer since the last call.
    fn sent(&mut self) -> Vec<ControlMessage> {
        std::iter::from_fn(|| self.conn_rx.try_recv().ok())
            .filter_map(|c| match c {
                ConnCommand::Control(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Wait for the next report of a task the session spawned, and handle it.
    async fn next_report(&mut self) {
        let report = tokio::time::timeout(Duration::from_secs(30), self.session.report_rx.recv())
            .await
            .expect("a report")
            .expect("the report channel is open");
        self.session.on_report(report);
        self.session.flush_events();
    }

    fn tick(&mut self, by: Duration) {
        self.clock.advance(by);
        self.session.on_tick();
        self.session.flush_events();
    }
}

fn data(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn block_hashes(data: &[u8], offset: u64, length: u64) -> Vec<String> {
    data[offset as usize..(offset + length) as usize]
        .chunks(HASH_BLOCK as usize)
        .map(|b| Hash::of(b).to_hex())
        .collect()
}

/// A recipient restarted with a partial download of `file` in `dir`: its record says
/// `recorded` bytes are durable, and the partial file holds the first `on_disk` bytes.
/// The sender has said hello (with or without `block-hashes`) and offered the file, and
/// the download was started again. Returns the pair, the stored job and the file ID.
fn restarted(
    dir: &Path,
    file: &[u8],
    recorded: u64,
    on_disk: u64,
    sender_features: Vec<String>,
) -> (Pair, JobRecord, FileId) {
    let store = JobStore::new(dir);
    let record = JobRecord {
        version: RECORD_VERSION,
        job_id: JobId::new(),
        file_id: FileId::new(),
        name: "big.bin".into(),
        size: file.len() as u64,
        hash: Hash::of(file).to_hex(),
        sender_name: "peer".into(),
        sender_id: "an-earlier-client".into(),
        offset: recorded,
    };
    store.save(&record).expect("record stored");
    std::fs::write(
        store.partial_path(&record.job_id),
        &file[..on_disk as usize],
    )
    .expect("partial file");
    let mut pair = Pair::new(dir);
    pair.control(ControlMessage::Hello {
        version: 1,
        name: "peer".into(),
        features: sender_features,
    });
    let file_id = FileId::new();
    pair.control(ControlMessage::Offer {
        file_id,
        name: "big.bin".into(),
        size: file.len() as u64,
        hash: Hash::of(file).to_hex(),
        ttl_ms: 3_600_000,
        group: None,
        path: None,
        executable: false,
        text: false,
    });
    let job = pair
        .session
        .start_download(file_id, Save::ToDir(dir.to_path_buf()))
        .expect("the download starts");
    assert_eq!(job, record.job_id, "the stored job is resumed");
    (pair, record, file_id)
}

fn requested_offset(sent: &[ControlMessage]) -> Option<u64> {
    sent.iter().find_map(|m| match m {
        ControlMessage::Request { offset, .. } => Some(*offset),
        _ => None,
    })
}

#[tokio::test]
async fn verify_tail_matching_hashes_resumes_at_end_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 1);
    let (mut p, record, file_id) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB + 5, features());
    let sent = p.sent();
    assert_eq!(
        sent,
        [ControlMessage::HashesRequest {
            job_id: record.job_id,
            file_id,
            offset: 8 * MIB,
            length: 5 * MIB + 5,
        }],
        "the bytes past the checkpoint are checked before anything is requested"
    );
    p.control(ControlMessage::Hashes {
        job_id: record.job_id,
        file_id,
        offset: 8 * MIB,
        length: 5 * MIB + 5,
        hashes: block_hashes(&file, 8 * MIB, 5 * MIB + 5),
    });
    assert_eq!(p.sent(), [], "nothing is requested before the comparison");
    p.next_report().await;
    assert_eq!(requested_offset(&p.sent()), Some(13 * MIB + 5));
    // The record still claims only what was synced.
    let stored = JobStore::new(dir.path()).load(&record.job_id).unwrap();
    assert_eq!(stored.offset, 8 * MIB);
}

#[tokio::test]
async fn verify_tail_corrupt_block_resumes_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 2);
    let (mut p, record, file_id) = restarted(dir.path(), &file, 8 * MIB, 12 * MIB, features());
    p.sent();
    // A power loss left garbage in the third block past the checkpoint.
    let path = JobStore::new(dir.path()).partial_path(&record.job_id);
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[(10 * MIB + 77) as usize] ^= 0x40;
    std::fs::write(&path, &on_disk).unwrap();
    p.control(ControlMessage::Hashes {
        job_id: record.job_id,
        file_id,
        offset: 8 * MIB,
        length: 4 * MIB,
        hashes: block_hashes(&file, 8 * MIB, 4 * MIB),
    });
    p.next_report().await;
    assert_eq!(requested_offset(&p.sent()), Some(10 * MIB));
}

#[tokio::test]
async fn verify_tail_old_sender_without_feature_requests_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 3);
    let (mut p, _, _) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB, Vec::new());
    let sent = p.sent();
    assert_eq!(requested_offset(&sent), Some(8 * MIB));
    assert!(
        !sent
            .iter()
            .any(|m| matches!(m, ControlMessage::HashesRequest { .. })),
        "a peer that did not announce block-hashes is not asked: {sent:?}"
    );
}

#[tokio::test]
async fn verify_tail_answered_with_6005_without_ids_requests_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 4);
    let (mut p, _, _) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB, features());
    p.sent();
    // What a peer that does not know the message type answers.
    p.control(ControlMessage::Error {
        job_id: None,
        file_id: None,
        code: codes::PROTOCOL_VIOLATION,
        message: "unknown control message type \"hashes-request\"".into(),
    });
    assert_eq!(requested_offset(&p.sent()), Some(8 * MIB));
}

#[tokio::test]
async fn verify_tail_sender_error_for_the_job_requests_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 5);
    let (mut p, record, file_id) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB, features());
    p.sent();
    p.control(ControlMessage::Error {
        job_id: Some(record.job_id),
        file_id: Some(file_id),
        code: codes::POSSIBLY_CORRUPT,
        message: "changed".into(),
    });
    assert_eq!(
        requested_offset(&p.sent()),
        Some(8 * MIB),
        "the request gets its own answer; the job is not failed by the hash answer"
    );
    assert!(p.session.downloads.contains_key(&record.job_id));
}

#[tokio::test]
async fn verify_tail_unanswered_requests_from_checkpoint_after_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 6);
    let (mut p, _, _) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB, features());
    p.sent();
    p.tick(Duration::from_secs(1));
    assert_eq!(p.sent(), []);
    p.tick(super::downloads::REQUEST_ANSWER_TIMEOUT);
    assert_eq!(requested_offset(&p.sent()), Some(8 * MIB));
}

#[tokio::test]
async fn verify_tail_answer_for_another_range_requests_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 7);
    let (mut p, record, file_id) = restarted(dir.path(), &file, 8 * MIB, 13 * MIB, features());
    p.sent();
    p.control(ControlMessage::Hashes {
        job_id: record.job_id,
        file_id,
        offset: 9 * MIB,
        length: 4 * MIB,
        hashes: block_hashes(&file, 9 * MIB, 4 * MIB),
    });
    assert_eq!(requested_offset(&p.sent()), Some(8 * MIB));
}

#[tokio::test]
async fn verify_tail_connection_lost_while_verifying_asks_again_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(20 * MIB, 8);
    let (mut p, record, file_id) = restarted(dir.path(), &file, 8 * MIB, 10 * MIB, features());
    p.sent();
    p.session
        .on_conn_event(PEER.into(), p.conn_id, ConnEvent::Down("test".into()));
    let (tx, conn_rx) = mpsc::unbounded_channel();
    p.conn_rx = conn_rx;
    p.conn_id = Uuid::new_v4();
    p.session.links.get_mut(PEER).unwrap().conn = Some(Conn {
        id: p.conn_id,
        handle: ConnHandle { tx },
    });
    p.session
        .on_conn_event(PEER.into(), p.conn_id, ConnEvent::ControlOpen(None));
    let again: Vec<ControlMessage> = p
        .sent()
        .into_iter()
        .filter(|m| !matches!(m, ControlMessage::Hello { .. }))
        .collect();
    assert_eq!(
        again,
        [ControlMessage::HashesRequest {
            job_id: record.job_id,
            file_id,
            offset: 8 * MIB,
            length: 2 * MIB,
        }]
    );
}

/// Our side as the sender of `file`, shared with the peer.
fn sharing(dir: &Path, file: &[u8]) -> (Pair, FileId) {
    let path = dir.join("src.bin");
    std::fs::write(&path, file).unwrap();
    let mut p = Pair::new(dir);
    let identity = FileIdentity::of(&path).unwrap();
    super::tests::share_one(&mut p.session, path, "src.bin", Hash::of(file), identity);
    let file_id = p
        .sent()
        .iter()
        .find_map(|m| match m {
            ControlMessage::Offer { file_id, .. } => Some(*file_id),
            _ => None,
        })
        .expect("offered");
    (p, file_id)
}

#[tokio::test]
async fn hashes_request_answered_with_the_file_block_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(5 * MIB + 3, 9);
    let (mut p, file_id) = sharing(dir.path(), &file);
    let job_id = JobId::new();
    p.control(ControlMessage::HashesRequest {
        job_id,
        file_id,
        offset: MIB + 1,
        length: 4 * MIB + 2,
    });
    p.next_report().await;
    assert_eq!(
        p.sent(),
        [ControlMessage::Hashes {
            job_id,
            file_id,
            offset: MIB + 1,
            length: 4 * MIB + 2,
            hashes: block_hashes(&file, MIB + 1, 4 * MIB + 2),
        }]
    );
    assert!(p.session.hash_requests.is_empty());
}

#[tokio::test]
async fn hashes_request_past_the_end_or_unknown_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(2 * MIB, 10);
    let (mut p, file_id) = sharing(dir.path(), &file);
    let job_id = JobId::new();
    p.control(ControlMessage::HashesRequest {
        job_id,
        file_id,
        offset: MIB,
        length: MIB + 1,
    });
    let unknown = FileId::new();
    p.control(ControlMessage::HashesRequest {
        job_id,
        file_id: unknown,
        offset: 0,
        length: 1,
    });
    let codes: Vec<(Option<FileId>, u16)> = p
        .sent()
        .iter()
        .filter_map(|m| match m {
            ControlMessage::Error { file_id, code, .. } => Some((*file_id, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [
            (Some(file_id), codes::PROTOCOL_VIOLATION),
            (Some(unknown), codes::FILE_NOT_AVAILABLE)
        ]
    );
    assert!(p.session.hash_requests.is_empty());
}

#[tokio::test]
async fn hashes_request_for_changed_source_is_answered_5100() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(2 * MIB, 11);
    let (mut p, file_id) = sharing(dir.path(), &file);
    std::fs::write(dir.path().join("src.bin"), data(3 * MIB, 12)).unwrap();
    let job_id = JobId::new();
    p.control(ControlMessage::HashesRequest {
        job_id,
        file_id,
        offset: 0,
        length: MIB,
    });
    p.next_report().await;
    assert!(matches!(
        p.sent().as_slice(),
        [ControlMessage::Error { job_id: Some(j), code, .. }]
            if *j == job_id && *code == codes::POSSIBLY_CORRUPT
    ));
}

#[tokio::test]
async fn hashes_request_beyond_pending_bound_is_refused_6010() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(MIB, 13);
    let (mut p, file_id) = sharing(dir.path(), &file);
    p.session
        .hash_requests
        .insert(PEER.to_string(), super::uploads::MAX_HASH_REQUESTS_PER_PEER);
    let job_id = JobId::new();
    p.control(ControlMessage::HashesRequest {
        job_id,
        file_id,
        offset: 0,
        length: MIB,
    });
    assert!(matches!(
        p.sent().as_slice(),
        [ControlMessage::Error { job_id: Some(j), code, .. }]
            if *j == job_id && *code == codes::TOO_MANY_JOBS
    ));
}

#[tokio::test]
async fn session_download_queue_requests_64_per_sender_and_the_next_as_one_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pair = Pair::new(dir.path());
    // A sender without `batch`: every file is a request of its own.
    pair.control(ControlMessage::Hello {
        version: 1,
        name: "peer".into(),
        features: vec![FEATURE_BLOCK_HASHES.into(), FEATURE_TREE.into()],
    });
    let mut jobs = Vec::new();
    for i in 0..70u8 {
        let file_id = FileId::new();
        let content = data(10, i);
        pair.control(ControlMessage::Offer {
            file_id,
            name: format!("f{i}.bin"),
            size: 10,
            hash: Hash::of(&content).to_hex(),
            ttl_ms: 3_600_000,
            group: None,
            path: None,
            executable: false,
            text: false,
        });
        jobs.push(
            pair.session
                .start_download(file_id, Save::ToDir(dir.path().to_path_buf()))
                .expect("the download starts"),
        );
    }
    let requested = |sent: &[ControlMessage]| -> Vec<JobId> {
        sent.iter()
            .filter_map(|m| match m {
                ControlMessage::Request { job_id, .. } => Some(*job_id),
                _ => None,
            })
            .collect()
    };
    // The first 64, in order; the others wait.
    assert_eq!(requested(&pair.sent()), jobs[..64]);
    // One ends (a failure here): the oldest waiting job is requested.
    pair.session.on_download_done(
        jobs[3],
        Err(crate::error::Error::PossiblyCorrupt("test".into())),
    );
    assert_eq!(requested(&pair.sent()), [jobs[64]]);
}

#[tokio::test]
async fn session_download_small_files_from_a_batch_sender_go_in_batches_of_128() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pair = Pair::new(dir.path());
    pair.control(ControlMessage::Hello {
        version: 1,
        name: "peer".into(),
        features: features(),
    });
    let offer = |pair: &mut Pair, i: u32, size: u64| {
        let file_id = FileId::new();
        pair.control(ControlMessage::Offer {
            file_id,
            name: format!("f{i}.bin"),
            size,
            hash: Hash::of(&data(size, i as u8)).to_hex(),
            ttl_ms: 3_600_000,
            group: None,
            path: None,
            executable: false,
            text: false,
        });
        file_id
    };
    let mut small = Vec::new();
    for i in 0..300u32 {
        let file_id = offer(&mut pair, i, 10);
        let job = pair
            .session
            .start_download(file_id, Save::ToDir(dir.path().to_path_buf()))
            .expect("the download starts");
        small.push((job, file_id));
    }
    // Larger than a batch carries: a request of its own.
    let big_file = offer(&mut pair, 300, MAX_BATCH_FILE + 1);
    let big = pair
        .session
        .start_download(big_file, Save::ToDir(dir.path().to_path_buf()))
        .expect("the download starts");
    pair.session.start_queued();
    let sent = pair.sent();
    let batches: Vec<Vec<BatchJob>> = sent
        .iter()
        .filter_map(|m| match m {
            ControlMessage::BatchRequest { jobs, .. } => Some(jobs.clone()),
            _ => None,
        })
        .collect();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [128, 128, 44]);
    let in_order: Vec<(JobId, FileId)> = batches
        .concat()
        .into_iter()
        .map(|j| (j.job_id, j.file_id))
        .collect();
    assert_eq!(in_order, small);
    assert!(
        sent.iter().any(
            |m| matches!(m, ControlMessage::Request { job_id, offset: 0, .. } if *job_id == big)
        )
    );
    // Each batch holds one request slot.
    assert_eq!(pair.session.receiving_batches.len(), 3);
}

#[tokio::test]
async fn batch_request_opens_one_channel_and_serves_each_known_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(1000, 21);
    let (mut p, file_id) = sharing(dir.path(), &file);
    p.sent();
    let (batch_id, known, unknown) = (JobId::new(), JobId::new(), JobId::new());
    p.control(ControlMessage::BatchRequest {
        batch_id,
        jobs: vec![
            BatchJob {
                job_id: known,
                file_id,
            },
            BatchJob {
                job_id: unknown,
                file_id: FileId::new(),
            },
        ],
    });
    let commands: Vec<ConnCommand> = std::iter::from_fn(|| p.conn_rx.try_recv().ok()).collect();
    let labels: Vec<&str> = commands
        .iter()
        .filter_map(|c| match c {
            ConnCommand::OpenJob { label, .. } => Some(label.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(labels, [format!("batch/{batch_id}")]);
    // The unknown file is skipped on the channel, not refused on the control channel.
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, ConnCommand::Control(ControlMessage::Error { .. })))
    );
    assert_eq!(p.session.serving.len(), 1);
    assert_eq!(p.session.serving[&known].batch, Some(batch_id));
    assert_eq!(p.session.sending_batches.len(), 1);
}

#[tokio::test]
async fn batch_request_beyond_batches_per_peer_is_refused_6010() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(1000, 22);
    let (mut p, file_id) = sharing(dir.path(), &file);
    p.sent();
    for _ in 0..super::batches::MAX_BATCHES_PER_PEER {
        p.session.sending_batches.insert(
            JobId::new(),
            super::batches::SendingBatch {
                peer: PEER.into(),
                task: tokio::spawn(std::future::pending()),
                pending: 1,
            },
        );
    }
    let batch_id = JobId::new();
    p.control(ControlMessage::BatchRequest {
        batch_id,
        jobs: vec![BatchJob {
            job_id: JobId::new(),
            file_id,
        }],
    });
    assert!(matches!(
        p.sent().as_slice(),
        [ControlMessage::Error { job_id: Some(j), code, .. }]
            if *j == batch_id && *code == codes::TOO_MANY_JOBS
    ));
    assert!(p.session.serving.is_empty());
}

#[tokio::test]
async fn batch_request_of_only_refused_jobs_opens_no_channel_and_refuses_each() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _) = sharing(dir.path(), &data(100, 23));
    p.sent();
    let jobs: Vec<BatchJob> = (0..3)
        .map(|_| BatchJob {
            job_id: JobId::new(),
            file_id: FileId::new(),
        })
        .collect();
    p.control(ControlMessage::BatchRequest {
        batch_id: JobId::new(),
        jobs: jobs.clone(),
    });
    let commands: Vec<ConnCommand> = std::iter::from_fn(|| p.conn_rx.try_recv().ok()).collect();
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, ConnCommand::OpenJob { .. }))
    );
    let refusals: Vec<(Option<JobId>, Option<FileId>, u16)> = commands
        .iter()
        .filter_map(|c| match c {
            ConnCommand::Control(ControlMessage::Error {
                job_id,
                file_id,
                code,
                ..
            }) => Some((*job_id, *file_id, *code)),
            _ => None,
        })
        .collect();
    let want: Vec<(Option<JobId>, Option<FileId>, u16)> = jobs
        .iter()
        .map(|j| (Some(j.job_id), Some(j.file_id), codes::FILE_NOT_AVAILABLE))
        .collect();
    assert_eq!(refusals, want);
    assert!(p.session.sending_batches.is_empty());
}
