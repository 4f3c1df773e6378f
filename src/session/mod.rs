//! The session task: one task per [`crate::Peer`] that owns the signaling session, the
//! links to the other peers, the shared files, and every upload and download job. The
//! `Peer` handle, the connection tasks and the transfer tasks talk to it only by message.
//!
//! - `links`: presence, connections, signaling routing and reconnection;
//! - `signaling`: a lost signaling connection, rejoining, and what changes once back;
//! - `uploads`: our shared files, offers, serving requests, upload outcomes;
//! - `downloads`: offers to us, download jobs, resume, verification outcomes;
//! - `batches`: many small files on one data channel, on both sides.

mod batches;
#[cfg(test)]
mod block_hashes_tests;
pub(crate) mod connection;
mod control;
mod downloads;
#[cfg(any(test, feature = "fuzz-harness"))]
pub(crate) mod job_props;
mod links;
mod signaling;
#[cfg(test)]
mod tests;
mod tree;
mod uploads;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, IceServer, PeerInfo, ServerMessage};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::PeerConfig;
use crate::error::Result;
use crate::events::{Event, FileInfo};
use crate::proto::code::Code;
use crate::proto::control::OfferGroup;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::resume::Tail;
use crate::proto::upload::{Audience, UploadState};
use crate::signal_client::SignalingSession;
use crate::store::{JobRecord, JobStore};
use crate::transfer::{DownloadCounters, FileIdentity, RateLimit, Saved};
use connection::{ConnCommand, ConnEvent};

pub(crate) use links::{Draining, LeftKey, Link};
use signaling::{Upstream, recv_signal};

/// The code of the sessions of the unit tests and the fuzz harness.
#[cfg(any(test, feature = "fuzz-harness"))]
pub(crate) fn test_code() -> Code {
    Code::new("session", "test-secret").unwrap_or_else(|e| unreachable!("a valid code: {e}"))
}

/// How long a signaling server's 7008 (a `signal` to a client that is not in the session)
/// waits for the `peer-left` that explains it before it is reported (see
/// `Session::on_unknown_recipient`).
const UNKNOWN_RECIPIENT_WAIT: Duration = Duration::from_secs(5);

/// Most 7008s held at once waiting for their explanation; more are only logged.
const MAX_HELD_UNKNOWN_RECIPIENTS: usize = 16;

/// Longest wait for the signaling client to write what was queued before `leave`.
const LEAVE_FLUSH: Duration = Duration::from_secs(2);

/// Longest wait for the connections to close gracefully when leaving. Each bounds its
/// own flush and close (3 s each); this bounds the whole, for a connection task that is
/// busy inside the WebRTC stack and does not read its close command: leaving never
/// hangs.
const LEAVE_CLOSE: Duration = Duration::from_secs(8);

/// How often timers (reconnects, grace periods) are checked.
const TICK: Duration = Duration::from_millis(100);

/// Commands from the [`crate::Peer`] handle.
pub(crate) enum Command {
    Share {
        files: Vec<PreparedFile>,
        tree: ShareTree,
        audience: Audience,
        ttl: Duration,
        reply: oneshot::Sender<Vec<JobId>>,
    },
    ShareWith {
        jobs: Vec<JobId>,
        peer: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Available(oneshot::Sender<Vec<FileInfo>>),
    /// One file offered to us, if it still is.
    Offered(FileId, oneshot::Sender<Option<FileInfo>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Whether a member's `hello` said it only sends.
    Download {
        file_id: FileId,
        save: crate::peer::Save,
        reply: oneshot::Sender<Result<JobId>>,
    },
    Decline {
        file_id: FileId,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Decline an offer because `path` holds an identical copy.
    DeclineIdentical {
        file_id: FileId,
        path: PathBuf,
        reply: oneshot::Sender<Result<()>>,
    },
    Resume {
        job_id: JobId,
        reply: oneshot::Sender<Result<JobId>>,
    },
    CancelUpload {
        job_id: JobId,
        reply: oneshot::Sender<Result<()>>,
    },
    CancelAllUploads(oneshot::Sender<()>),
    CancelDownload {
        job_id: JobId,
        keep_partial: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    CancelAllDownloads(oneshot::Sender<()>),
    Forge {
        sender: String,
        file_id: FileId,
        reply: oneshot::Sender<Result<JobId>>,
    },
    DropConnection {
        peer: String,
        reply: oneshot::Sender<()>,
    },
    /// Test hook: send a raw control message to `peer`, as a hostile client would.
    SendControl {
        peer: String,
        msg: crate::proto::control::ControlMessage,
        reply: oneshot::Sender<()>,
    },
    /// Test hook: how many recipient jobs are being served (entries of `serving`).
    ServingCount(oneshot::Sender<usize>),
    Leave(oneshot::Sender<()>),
}

/// A file checked and hashed by the handle, ready to be offered.
pub(crate) struct PreparedFile {
    pub path: PathBuf,
    pub name: String,
    /// Its place in a shared tree (`photos/2024/a.jpg`); `None` for a file on its own.
    pub tree_path: Option<String>,
    pub executable: bool,
    pub identity: FileIdentity,
    pub hash: Hash,
    /// Offered as a text (`ControlMessage::Offer::text`).
    pub text: bool,
}

/// What a share is called and the empty directories of its trees.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShareTree {
    pub label: Option<String>,
    pub dirs: Vec<String>,
}

/// One of our shared files (an upload job).
struct SharedFile {
    job_id: JobId,
    group: OfferGroup,
    path: PathBuf,
    name: String,
    tree_path: Option<String>,
    executable: bool,
    identity: FileIdentity,
    hash: Hash,
    text: bool,
    state: UploadState,
    /// Members that only send (`Link::send_only`) whom the offer went to: for their
    /// information, never recipients (no outcome, not waited for).
    informed: HashSet<String>,
}

/// One recipient's download job being served: keyed by the recipient's job ID.
struct Serving {
    file_id: FileId,
    peer: String,
    /// The attempt currently streaming, if any.
    task: Option<JoinHandle<()>>,
    /// The batch this job is part of (whose task streams it), if it is.
    batch: Option<JobId>,
    /// Bytes sent for this job over all attempts.
    sent: Arc<AtomicU64>,
}

/// A file offered to us.
struct Offered {
    info: FileInfo,
    expires_at: Instant,
}

enum Phase {
    /// A job loaded from its record holds bytes past its checkpoint (`tail`): a
    /// `hashes-request` for them went out at `since`, and the request for data follows
    /// once the sender's block hashes have been compared with them (`checking` while the
    /// comparison runs).
    Verifying {
        tail: Tail,
        since: Instant,
        checking: bool,
    },
    /// Waiting for one of the sender's other jobs to end: at most
    /// `downloads::MAX_ACTIVE_PER_SENDER` jobs of one sender are requested at a time.
    Queued,
    /// The request went out at `since`; waiting for the sender's data channel.
    Requested { offset: u64, since: Instant },
    /// Data is flowing.
    Running { task: JoinHandle<()> },
    /// Part of batch `batch` of its sender: requested, or running once the batch's
    /// channel is open (`Session::receiving_batches`).
    Batched { batch: JobId },
    /// The connection to the sender is gone; waiting for it to come back.
    Suspended { since: Instant },
    /// The transfer task has ended and its report is being handled (a retry, a failure
    /// or the completion follows in the same step).
    Ended,
}

/// One of our download jobs.
struct Download {
    file_id: FileId,
    sender: String,
    name: String,
    /// Its place in a shared tree, as offered (sanitized when saved).
    path: Option<String>,
    executable: bool,
    size: u64,
    hash: Hash,
    save: crate::peer::Save,
    /// The durable job (directory downloads).
    durable: Option<(JobStore, JobRecord)>,
    counters: Arc<DownloadCounters>,
    /// The bytes of the partial file past its checkpoint, found when the job was loaded
    /// from its record: verified against the sender's block hashes before the first
    /// request if the sender supports it, else not trusted. Cleared once decided.
    tail: Option<Tail>,
    phase: Phase,
    /// Consecutive attempts that ended without new bytes (to stop retry loops).
    fruitless: u32,
    /// Set when the job is being stopped, with whether its partial data is to go: the
    /// cleanup and the event follow once its transfer task has finished, so no write can
    /// follow them.
    ending: Option<(Ending, bool)>,
}

enum Ending {
    Cancelled,
    Failed(crate::error::Error),
}

/// Reports from transfer tasks.
enum Report {
    DownloadProgress {
        job_id: JobId,
        received: u64,
    },
    DownloadDone {
        job_id: JobId,
        result: Result<Saved>,
    },
    UploadStreamDone {
        job_id: JobId,
        result: Result<u64>,
    },
    /// A job's data channel did not open in time on a connection that is up.
    JobChannelStuck {
        job_id: JobId,
    },
    /// Sender side: a batch was streamed (with the jobs skipped because of their file),
    /// or its channel closed.
    BatchStreamDone {
        batch_id: JobId,
        result: Result<Vec<(JobId, crate::error::Error)>>,
    },
    /// Sender side: a batch's data channel did not open in time.
    BatchChannelStuck {
        batch_id: JobId,
    },
    /// Recipient side: one file of a batch ended (published, or failed alone).
    BatchFileDone {
        job_id: JobId,
        result: Result<Saved>,
    },
    /// Recipient side: a batch's channel ended.
    BatchDone {
        batch_id: JobId,
        end: crate::transfer::batch::BatchEnd,
    },
    /// Recipient side: the tail of a restarted job was compared with the sender's block
    /// hashes; `verified` bytes from `tail.offset` on match.
    TailChecked {
        job_id: JobId,
        tail: Tail,
        verified: u64,
    },
    /// Sender side: the block hashes a recipient asked for, computed.
    HashesReady {
        peer: String,
        job_id: JobId,
        file_id: FileId,
        range: Tail,
        result: Result<Vec<Hash>>,
    },
}

/// The event of a share that ended: one of ours (`upload`) or one offered to us.
fn group_event(upload: bool, ended: crate::proto::group::GroupEnded) -> Event {
    if upload {
        Event::UploadGroupEnded {
            group_id: ended.id,
            label: ended.label,
            files: ended.files,
            completed: ended.completed,
            failed: ended.failed,
            cancelled: ended.cancelled,
        }
    } else {
        Event::DownloadGroupEnded {
            group_id: ended.id,
            label: ended.label,
            sender: ended.sender,
            files: ended.files,
            completed: ended.completed,
            failed: ended.failed,
            cancelled: ended.cancelled,
        }
    }
}

pub(crate) struct Session {
    config: Arc<PeerConfig>,
    me: String,
    /// The session's code: its route and the secret every pair's PAKE is keyed with.
    code: Code,
    /// Clients that failed to authenticate so far.
    auth_failures: u32,
    /// The code admits nobody new (too many failures).
    burnt: bool,
    ice_servers: Vec<IceServer>,
    signal_tx: mpsc::Sender<ClientMessage>,
    /// `None` while signaling is lost.
    signal_rx: Option<mpsc::Receiver<ServerMessage>>,
    /// The signaling client's writer (awaited when leaving).
    signal_pump: Option<JoinHandle<()>>,
    /// Every signaling server in the order they are tried, and the one we joined through.
    servers: Vec<String>,
    server: usize,
    /// What a rejoin carries to keep our client ID (`welcome.resume_token`).
    resume_token: Option<String>,
    /// Where the signaling connection stands (up, rejoining, gone).
    upstream: Upstream,
    /// The wait a draining server asked for before rejoining (`retry_after_ms`).
    retry_hint: Option<Duration>,
    /// Why the server is ending the connection (the `error` frame before its close).
    closing: Option<String>,
    /// Another connection took our membership over (7016): no rejoining.
    superseded: bool,
    /// The server's 7008s (a `signal` to a client not in the session) not explained yet
    /// by a member leaving, with when each came: reported once `UNKNOWN_RECIPIENT_WAIT`
    /// has passed without a `peer-left`.
    unknown_recipients: Vec<(Instant, String)>,
    /// Results of the rejoining task.
    rejoined_tx: mpsc::UnboundedSender<Result<SignalingSession>>,
    rejoined_rx: mpsc::UnboundedReceiver<Result<SignalingSession>>,
    /// Our client ID, for the `Peer` handle (it changes if a rejoin could not keep it).
    client_id: watch::Sender<String>,
    /// The members whose `hello` said they only send, for the `Peer` handle.
    send_only_members: watch::Sender<BTreeSet<String>>,
    /// The pair keys of authenticated members that left, kept for the grace period: one
    /// that comes back under the same client ID (its signaling connection was lost, and
    /// it rejoined) is authenticated by that key instead of a new PAKE.
    left_keys: HashMap<String, LeftKey>,
    events: mpsc::UnboundedSender<Vec<Event>>,
    /// Events of the current step, delivered together at its end so that a consumer
    /// sees e.g. a recipient's outcome and the upload's completion as one batch.
    pending: Vec<Event>,
    links: HashMap<String, Link>,
    /// Jobs waiting for a request slot of their sender, oldest first (entries whose job
    /// is no longer `Phase::Queued` are dropped when met).
    queued: std::collections::VecDeque<JobId>,
    /// Small files were queued for a batch this turn (see `Session::start_queued`).
    batches_due: bool,
    /// The empty directories of the groups we share, by group.
    shared_trees: HashMap<uuid::Uuid, Vec<String>>,
    /// The empty directories of the groups offered to us, by sender and group.
    received_trees: tree::ReceivedTrees,
    /// Connections of peers that left, read until they end (see `Session::peer_left`).
    draining: HashMap<String, Draining>,
    /// Peers that left while uploads to them were pending, and when.
    departed: HashMap<String, Instant>,
    conn_tx: mpsc::UnboundedSender<(String, uuid::Uuid, ConnEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(String, uuid::Uuid, ConnEvent)>,
    report_tx: mpsc::UnboundedSender<Report>,
    report_rx: mpsc::UnboundedReceiver<Report>,
    shares: HashMap<FileId, SharedFile>,
    /// Files whose upload was cancelled: late requests get 6004.
    revoked: HashSet<FileId>,
    serving: HashMap<JobId, Serving>,
    /// Sender side: the batches being streamed, by batch ID.
    sending_batches: HashMap<JobId, batches::SendingBatch>,
    /// Recipient side: the batches requested or running, by batch ID.
    receiving_batches: HashMap<JobId, batches::ReceivingBatch>,
    /// The shares (offer groups) of ours, and those offered to us, until they end.
    upload_groups: crate::proto::group::Groups,
    download_groups: crate::proto::group::Groups,
    /// Limits on the jobs served (see `uploads::ServeBounds`).
    serve_bounds: uploads::ServeBounds,
    /// Streaming slots of the jobs served, per recipient and in total.
    stream_slots: uploads::StreamSlots,
    /// `hashes-request`s being answered, per recipient.
    hash_requests: HashMap<String, usize>,
    offered: HashMap<FileId, Offered>,
    downloads: HashMap<JobId, Download>,
    downloaded: HashSet<FileId>,
    /// Final `done` of each finished download, per sender: sent again on every new
    /// connection, since one sent as a connection died may have been lost.
    outcomes: HashMap<JobId, (String, crate::proto::control::ControlMessage)>,
    limit: Option<Arc<RateLimit>>,
    epoch: Instant,
}

impl Session {
    pub(crate) fn new(
        config: Arc<PeerConfig>,
        joined: SignalingSession,
        code: Code,
        events: mpsc::UnboundedSender<Vec<Event>>,
    ) -> Self {
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let (rejoined_tx, rejoined_rx) = mpsc::unbounded_channel();
        let limit = config.rate_limit.map(|r| Arc::new(RateLimit::new(r)));
        let epoch = config.clock.now();
        let servers = config.servers();
        let server = servers
            .iter()
            .position(|s| *s == joined.server)
            .unwrap_or(0);
        let mut session = Session {
            config,
            client_id: watch::Sender::new(joined.client_id.clone()),
            send_only_members: watch::Sender::new(BTreeSet::new()),
            me: joined.client_id,
            code,
            auth_failures: 0,
            burnt: false,
            ice_servers: joined.ice_servers,
            signal_tx: joined.tx,
            signal_rx: Some(joined.rx),
            signal_pump: joined.pump,
            servers,
            server,
            resume_token: joined.resume_token,
            upstream: Upstream::Up,
            retry_hint: None,
            closing: None,
            superseded: false,
            unknown_recipients: Vec::new(),
            rejoined_tx,
            rejoined_rx,
            left_keys: HashMap::new(),
            events,
            pending: Vec::new(),
            links: HashMap::new(),
            draining: HashMap::new(),
            queued: std::collections::VecDeque::new(),
            batches_due: false,
            shared_trees: HashMap::new(),
            received_trees: HashMap::new(),
            departed: HashMap::new(),
            conn_tx,
            conn_rx,
            report_tx,
            report_rx,
            shares: HashMap::new(),
            revoked: HashSet::new(),
            serving: HashMap::new(),
            sending_batches: HashMap::new(),
            receiving_batches: HashMap::new(),
            upload_groups: Default::default(),
            download_groups: Default::default(),
            serve_bounds: uploads::SERVE_BOUNDS,
            stream_slots: uploads::StreamSlots::new(uploads::SERVE_BOUNDS),
            hash_requests: HashMap::new(),
            offered: HashMap::new(),
            downloads: HashMap::new(),
            downloaded: HashSet::new(),
            outcomes: HashMap::new(),
            limit,
            epoch,
        };
        for p in joined.peers {
            session.add_peer(p);
        }
        session
    }

    /// Whether this peer only sends ([`crate::peer::Role::SendOnly`]).
    fn send_only(&self) -> bool {
        self.config.role == crate::peer::Role::SendOnly
    }

    /// Our client ID as it changes, for the `Peer` handle.
    pub(crate) fn client_id_watch(&self) -> watch::Receiver<String> {
        self.client_id.subscribe()
    }

    /// The members that said they only send, as they change, for the `Peer` handle.
    pub(crate) fn send_only_watch(&self) -> watch::Receiver<BTreeSet<String>> {
        self.send_only_members.subscribe()
    }

    /// Whether `peer`'s link says it only sends, and the watch of such members with it.
    fn set_send_only(&mut self, peer: &str, send_only: bool) {
        if let Some(link) = self.links.get_mut(peer) {
            link.send_only = send_only;
        }
        let listed = send_only && self.links.contains_key(peer);
        self.send_only_members
            .send_if_modified(|members| match listed {
                true => members.insert(peer.to_string()),
                false => members.remove(peer),
            });
    }

    /// Milliseconds on the session's monotonic clock (the sans-IO core's "now").
    fn now_ms(&self) -> u64 {
        (self.config.clock.now() - self.epoch).as_millis() as u64
    }

    fn emit(&mut self, event: Event) {
        let group = self.group_end(&event);
        self.pending.push(event);
        if let Some(group) = group {
            self.pending.push(group);
        }
    }

    /// The end of a share as a whole, if `event` ends its last file (the groups of our
    /// shares and of the offers to us are tallied apart: a peer chooses its IDs).
    fn group_end(&mut self, event: &Event) -> Option<Event> {
        use crate::proto::group::FileEnd;
        let (upload, file_id, end) = match event {
            Event::DownloadAvailable {
                file_id,
                sender,
                group: Some(g),
                ..
            } => {
                let label = g.label.as_deref();
                self.download_groups
                    .add(sender, g.id, g.count, label, *file_id);
                return None;
            }
            Event::DownloadCompleted { file_id, .. } | Event::DownloadSkipped { file_id, .. } => {
                (false, file_id, FileEnd::Completed)
            }
            Event::DownloadFailed { file_id, .. } => (false, file_id, FileEnd::Failed),
            Event::DownloadCancelled { file_id, .. } => (false, file_id, FileEnd::Cancelled),
            Event::UploadCompleted { file_id, .. } => (true, file_id, FileEnd::Completed),
            Event::UploadFailed {
                file_id: Some(file_id),
                ..
            } => (true, file_id, FileEnd::Failed),
            Event::UploadCancelled { file_id, .. } => (true, file_id, FileEnd::Cancelled),
            _ => return None,
        };
        let groups = if upload {
            &mut self.upload_groups
        } else {
            &mut self.download_groups
        };
        let ended = groups.end(*file_id, end)?;
        Some(group_event(upload, ended))
    }

    /// Deliver the events of the step that just ended.
    fn flush_events(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.events.send(std::mem::take(&mut self.pending));
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Leave(reply)) => {
                        self.shutdown().await;
                        self.flush_events();
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        self.flush_events();
                        return;
                    }
                },
                msg = recv_signal(&mut self.signal_rx) => match msg {
                    Some(msg) => self.on_signaling(msg),
                    None => self.signaling_lost(),
                },
                Some(rejoined) = self.rejoined_rx.recv() => self.on_rejoined(rejoined),
                Some((peer, conn, ev)) = self.conn_rx.recv() => self.on_conn_event(peer, conn, ev),
                Some(report) = self.report_rx.recv() => self.on_report(report),
                _ = tick.tick() => self.on_tick(),
            }
            if self.batches_due {
                self.start_queued();
            }
            self.flush_events();
        }
    }

    fn on_tick(&mut self) {
        let now = self.config.clock.now();
        self.retry_connections(now);
        self.expire_suspended_downloads(now);
        self.expire_unanswered_requests(now);
        self.expire_departed(now);
        self.expire_draining(now);
        self.expire_unknown_recipients(now);
        self.expire_shares();
        self.start_queued();
    }

    async fn shutdown(&mut self) {
        self.stop_rejoining();
        for (_, message) in self.unknown_recipients.drain(..) {
            tracing::debug!(%message, "leaving with an unexplained 7008: not reported");
        }
        for (_, s) in self.serving.drain() {
            if let Some(t) = s.task {
                t.abort();
            }
        }
        for (_, d) in self.downloads.drain() {
            if let Phase::Running { task } = d.phase {
                task.abort();
            }
        }
        self.abort_batches();
        // Close every connection gracefully (final control messages reach the peers)
        // before telling the signaling server we left.
        let mut closing = Vec::new();
        for (_, link) in self.links.drain() {
            if let Some(conn) = link.conn {
                let (tx, rx) = oneshot::channel();
                if conn.handle.tx.send(ConnCommand::Close(Some(tx))).is_ok() {
                    closing.push(rx);
                }
            }
        }
        let closed = futures_util::future::join_all(closing);
        if tokio::time::timeout(LEAVE_CLOSE, closed).await.is_err() {
            tracing::warn!("a connection did not close in time; leaving without it");
        }
        for (_, d) in self.draining.drain() {
            d.conn.close();
        }
        let _ = self.signal_tx.send(ClientMessage::Leave).await;
        // Everything queued before the `leave` (an `auth-failed`, a `reconnect`) reaches
        // the server before the peer is gone; bounded, for a server that stopped reading.
        if let Some(pump) = self.signal_pump.take() {
            let _ = tokio::time::timeout(LEAVE_FLUSH, pump).await;
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Share {
                files,
                tree,
                audience,
                ttl,
                reply,
            } => {
                let ids = self.share_files(files, tree, audience, ttl);
                let _ = reply.send(ids);
            }
            Command::ShareWith { jobs, peer, reply } => {
                let _ = reply.send(self.share_with(&jobs, &peer));
            }
            Command::Available(reply) => {
                let _ = reply.send(self.available_files());
            }
            Command::Offered(file_id, reply) => {
                let _ = reply.send(self.offered_file(file_id));
            }
            Command::Peers(reply) => {
                let list = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.auth.verified())
                    .map(|(id, l)| PeerInfo {
                        id: id.clone(),
                        name: l.name.clone(),
                        relay_only: l.relay_only,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Download {
                file_id,
                save,
                reply,
            } => {
                let _ = reply.send(self.start_download(file_id, save));
            }
            Command::Decline { file_id, reply } => {
                let _ = reply.send(self.decline(file_id));
            }
            Command::DeclineIdentical {
                file_id,
                path,
                reply,
            } => {
                let _ = reply.send(self.decline_identical(file_id, path));
            }
            Command::Resume { job_id, reply } => {
                let _ = reply.send(self.resume_stored(job_id));
            }
            Command::CancelUpload { job_id, reply } => {
                let _ = reply.send(self.cancel_upload(job_id));
            }
            Command::CancelAllUploads(reply) => {
                let jobs: Vec<JobId> = self
                    .shares
                    .values()
                    .filter(|s| !s.state.is_finished())
                    .map(|s| s.job_id)
                    .collect();
                for job_id in jobs {
                    let _ = self.cancel_upload(job_id);
                }
                let _ = reply.send(());
            }
            Command::CancelDownload {
                job_id,
                keep_partial,
                reply,
            } => {
                let _ = reply.send(self.cancel_download(job_id, keep_partial));
            }
            Command::CancelAllDownloads(reply) => {
                let jobs: Vec<JobId> = self.downloads.keys().copied().collect();
                for job_id in jobs {
                    let _ = self.cancel_download(job_id, false);
                }
                let _ = reply.send(());
            }
            Command::Forge {
                sender,
                file_id,
                reply,
            } => {
                let _ = reply.send(self.forge_request(sender, file_id));
            }
            Command::DropConnection { peer, reply } => {
                self.drop_connection(&peer);
                let _ = reply.send(());
            }
            Command::SendControl { peer, msg, reply } => {
                self.send_control(&peer, msg);
                let _ = reply.send(());
            }
            Command::ServingCount(reply) => {
                let _ = reply.send(self.serving.len());
            }
            Command::Leave(_) => {}
        }
    }
}
