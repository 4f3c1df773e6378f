//! Properties of the session task's job handling, driven step by step as in `tests.rs`
//! (stand-in connections and transfer tasks, the injected clock), whatever the order of
//! transfer reports, control messages, cancels, connection losses, departures and ticks:
//!
//! - every download job ends (leaves `downloads`) with exactly one terminal event
//!   (`DownloadCompleted`, `DownloadFailed` or `DownloadCancelled`); the `done` it reports
//!   to the sender says `ok` exactly when it completed, and a job cancelled here reports
//!   none; a job never waits for a transfer task that has already reported;
//! - an upload job emits at most one terminal event (`UploadCompleted` or
//!   `UploadFailed`), exactly one once its state is finished, and only after the
//!   recipient outcomes it carries; recipient outcomes come only from peers the offer
//!   went to, and are final once (a failure may still become one delivery).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage};
use proptest::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::connection::{ConnCommand, ConnEvent, ConnHandle};
use super::links::{Conn, LEAVE_DRAIN};
use super::{Phase, PreparedFile, Report, Session, test_code};
use crate::clock::Clock;
use crate::config::PeerConfig;
use crate::error::{Error, codes};
use crate::events::Event;
use crate::peer::Save;
use crate::proto::control::ControlMessage;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::upload::{Audience, Outcome};
use crate::signal_client::SignalingSession;
use crate::transfer::{FileIdentity, Saved};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A session whose events are collected, joined with `peers` as members. Our client ID
/// is the larger one, so joining spawns no connection task.
struct Harness {
    session: Session,
    clock: Clock,
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    seen: Vec<Event>,
    _signal_rx: mpsc::Receiver<ClientMessage>,
    _server_tx: mpsc::Sender<ServerMessage>,
}

impl Harness {
    fn new(me: &str, peers: &[&str]) -> Self {
        let (signal_tx, signal_rx) = mpsc::channel(64);
        let (server_tx, server_rx) = mpsc::channel(64);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let config = PeerConfig::new("ws://127.0.0.1:9");
        let clock = config.clock.clone();
        let joined = SignalingSession {
            server: "ws://127.0.0.1:9".into(),
            resume_token: None,
            session: "session".into(),
            client_id: me.into(),
            peers: peers.iter().map(|p| member(p)).collect(),
            ice_servers: Vec::new(),
            tx: signal_tx,
            rx: server_rx,
            pump: None,
        };
        Harness {
            session: Session::new(Arc::new(config), joined, test_code(), ev_tx),
            clock,
            events,
            seen: Vec::new(),
            _signal_rx: signal_rx,
            _server_tx: server_tx,
        }
    }

    /// Give `peer` a stand-in connection whose commands go to `tx`, and open it.
    fn connect(&mut self, peer: &str, tx: &mpsc::UnboundedSender<ConnCommand>) -> Uuid {
        let id = Uuid::new_v4();
        self.session.authenticate_for_test(peer);
        self.session.links.get_mut(peer).expect("a member").conn = Some(Conn {
            id,
            handle: ConnHandle { tx: tx.clone() },
        });
        self.conn_event(peer, id, ConnEvent::ControlOpen(None));
        id
    }

    fn conn_event(&mut self, peer: &str, conn: Uuid, ev: ConnEvent) {
        self.session.on_conn_event(peer.into(), conn, ev);
        self.flush();
    }

    fn signaling(&mut self, msg: ServerMessage) {
        self.session.on_signaling(msg);
        self.flush();
    }

    fn report(&mut self, report: Report) {
        self.session.on_report(report);
        self.flush();
    }

    fn tick(&mut self, by: Duration) {
        self.clock.advance(by);
        self.session.on_tick();
        self.flush();
    }

    /// End the step: collect its events.
    fn flush(&mut self) {
        self.session.flush_events();
        while let Ok(batch) = self.events.try_recv() {
            self.seen.extend(batch);
        }
    }
}

fn member(id: &str) -> PeerInfo {
    PeerInfo {
        id: id.into(),
        name: id.into(),
        relay_only: false,
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ConnCommand>) -> Vec<ConnCommand> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn run(case: impl Future<Output = Result<(), TestCaseError>>) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(case)
}

// ---- Downloads -------------------------------------------------------------------

const RECIPIENT_ME: &str = "zz-recipient";
const SENDER: &str = "aa-sender";

/// How a stand-in transfer task ends.
#[derive(Debug, Clone, Copy)]
enum TaskEnd {
    Verified,
    Corrupt,
    Protocol,
    SaveFailed,
    AccessDenied,
    /// The data channel went away (1183): the job is retried.
    Transport,
}

impl TaskEnd {
    fn result(self) -> crate::error::Result<Saved> {
        Err(match self {
            TaskEnd::Verified => return Ok(Saved::Memory(bytes::Bytes::from_static(b"abc"))),
            TaskEnd::Corrupt => Error::PossiblyCorrupt("hash mismatch".into()),
            TaskEnd::Protocol => Error::Protocol("bad frame".into()),
            TaskEnd::SaveFailed => Error::SaveFailed("disk full".into()),
            TaskEnd::AccessDenied => Error::StorageAccessDenied("read-only".into()),
            TaskEnd::Transport => Error::DownloadFailed("data channel closed".into()),
        })
    }
}

/// One step; a job is named by its index (modulo the number of jobs).
#[derive(Debug, Clone)]
enum DlStep {
    /// The job's data channel opened: a (stand-in) transfer task runs.
    ChannelOpened(usize),
    /// The job's transfer task ended and reports.
    TaskDone(usize, TaskEnd),
    Progress(usize),
    SenderCancel(usize),
    SenderError(usize),
    Cancel {
        job: usize,
        keep_partial: bool,
    },
    ConnDown,
    /// A new connection to the sender opens.
    Reconnect,
    /// The resume grace period passes.
    Grace,
    /// A request stays unanswered long enough to be sent again (or to fail).
    Unanswered,
}

fn dl_step() -> impl Strategy<Value = DlStep> {
    let job = 0..3usize;
    let end = prop_oneof![
        2 => Just(TaskEnd::Verified),
        1 => Just(TaskEnd::Corrupt),
        1 => Just(TaskEnd::Protocol),
        1 => Just(TaskEnd::SaveFailed),
        1 => Just(TaskEnd::AccessDenied),
        3 => Just(TaskEnd::Transport),
    ];
    prop_oneof![
        4 => job.clone().prop_map(DlStep::ChannelOpened),
        4 => (job.clone(), end).prop_map(|(j, e)| DlStep::TaskDone(j, e)),
        1 => job.clone().prop_map(DlStep::Progress),
        1 => job.clone().prop_map(DlStep::SenderCancel),
        1 => job.clone().prop_map(DlStep::SenderError),
        1 => (job, any::<bool>()).prop_map(|(job, keep_partial)| DlStep::Cancel { job, keep_partial }),
        1 => Just(DlStep::ConnDown),
        1 => Just(DlStep::Reconnect),
        1 => Just(DlStep::Grace),
        1 => Just(DlStep::Unanswered),
    ]
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Verifying { .. } => "verifying",
        Phase::Queued => "queued",
        Phase::Requested { .. } => "requested",
        Phase::Running { .. } => "running",
        Phase::Batched { .. } => "batched",
        Phase::Suspended { .. } => "suspended",
        Phase::Ended => "ended",
    }
}

/// A recipient session downloading from one sender, with stand-in transfer tasks.
struct Recipient {
    h: Harness,
    conn_tx: mpsc::UnboundedSender<ConnCommand>,
    conn_rx: mpsc::UnboundedReceiver<ConnCommand>,
    /// The current connection to the sender.
    conn: Option<Uuid>,
    /// What the session told the sender's connections.
    sent: Vec<ControlMessage>,
    jobs: Vec<JobId>,
    /// Jobs whose stand-in transfer task runs (has not reported yet).
    live: HashSet<JobId>,
}

impl Recipient {
    fn new(files: usize) -> Self {
        let mut h = Harness::new(RECIPIENT_ME, &[SENDER]);
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let conn = h.connect(SENDER, &conn_tx);
        let mut jobs = Vec::new();
        for i in 0..files {
            let file_id = FileId::new();
            let offer = ControlMessage::Offer {
                file_id,
                name: format!("file{i}.bin"),
                size: 3,
                hash: Hash::of(b"abc").to_hex(),
                ttl_ms: 3_600_000,
                group: None,
                path: None,
                executable: false,
                text: false,
            };
            h.conn_event(SENDER, conn, ConnEvent::Control(offer));
            let job = h.session.start_download(file_id, Save::InMemory);
            jobs.push(job.expect("the download starts"));
            h.flush();
        }
        Recipient {
            h,
            conn_tx,
            conn_rx,
            conn: Some(conn),
            sent: Vec::new(),
            jobs,
            live: HashSet::new(),
        }
    }

    fn phase(&self, job: JobId) -> Option<&Phase> {
        self.h.session.downloads.get(&job).map(|d| &d.phase)
    }

    fn control(&mut self, msg: ControlMessage) {
        if let Some(conn) = self.conn {
            self.h.conn_event(SENDER, conn, ConnEvent::Control(msg));
        }
    }

    /// The job's stand-in transfer task ends with `result` and reports it (once).
    fn task_done(&mut self, job: JobId, result: crate::error::Result<Saved>) {
        if !self.live.remove(&job) {
            return;
        }
        if let Some(Phase::Running { task }) = self.phase(job) {
            task.abort();
        }
        self.h.report(Report::DownloadDone {
            job_id: job,
            result,
        });
    }

    fn step(&mut self, step: DlStep) {
        let job = |i: usize| self.jobs[i % self.jobs.len()];
        match step {
            DlStep::ChannelOpened(i) => {
                let job = job(i);
                if let Some(d) = self.h.session.downloads.get_mut(&job)
                    && matches!(d.phase, Phase::Requested { .. })
                {
                    d.phase = Phase::Running {
                        task: tokio::spawn(std::future::pending()),
                    };
                    self.live.insert(job);
                }
            }
            DlStep::TaskDone(i, end) => self.task_done(job(i), end.result()),
            DlStep::Progress(i) => {
                let job = job(i);
                if self.live.contains(&job) {
                    self.h.report(Report::DownloadProgress {
                        job_id: job,
                        received: 1,
                    });
                }
            }
            DlStep::SenderCancel(i) => self.control(ControlMessage::Cancel {
                job_id: job(i),
                code: Some(codes::CANCELLED_BY_PEER),
            }),
            DlStep::SenderError(i) => self.control(ControlMessage::Error {
                job_id: Some(job(i)),
                file_id: None,
                code: codes::FILE_NOT_AVAILABLE,
                message: "not shared".into(),
            }),
            DlStep::Cancel {
                job: i,
                keep_partial,
            } => {
                let _ = self.h.session.cancel_download(job(i), keep_partial);
                self.h.flush();
            }
            DlStep::ConnDown => {
                if let Some(conn) = self.conn.take() {
                    let down = ConnEvent::Down("connection lost".into());
                    self.h.conn_event(SENDER, conn, down);
                }
            }
            DlStep::Reconnect => {
                if self.conn.is_none() {
                    self.conn = Some(self.h.connect(SENDER, &self.conn_tx));
                }
            }
            DlStep::Grace => self.h.tick(self.h.session.config.resume_grace),
            DlStep::Unanswered => self.h.tick(super::downloads::REQUEST_ANSWER_TIMEOUT),
        }
        for c in drain(&mut self.conn_rx) {
            if let ConnCommand::Control(msg) = c {
                self.sent.push(msg);
            }
        }
    }

    /// Jobs waiting for a transfer task, and jobs with a task, are the same.
    fn check_tasks(&self) -> Result<(), TestCaseError> {
        let running: HashSet<JobId> = self
            .h
            .session
            .downloads
            .iter()
            .filter(|(_, d)| matches!(d.phase, Phase::Running { .. }))
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(&running, &self.live, "running jobs vs live transfer tasks");
        Ok(())
    }

    /// The connection to the sender goes for good: running tasks end as a stopped task
    /// does, and the grace period passes, until no job is left (or a bound is hit).
    fn quiesce(&mut self) {
        self.step(DlStep::ConnDown);
        for _ in 0..20 {
            if self.h.session.downloads.is_empty() {
                return;
            }
            for job in self.live.clone() {
                self.task_done(job, Err(Error::DownloadFailed("stopped".into())));
            }
            self.step(DlStep::Grace);
        }
    }
}

async fn download_case(files: usize, steps: Vec<DlStep>) -> Result<(), TestCaseError> {
    let mut r = Recipient::new(files);
    for step in steps {
        r.step(step);
        r.check_tasks()?;
    }
    r.quiesce();
    let left: Vec<&str> =
        r.h.session
            .downloads
            .values()
            .map(|d| phase_name(&d.phase))
            .collect();
    prop_assert!(left.is_empty(), "jobs never ended: {:?}", left);

    let mut terminal: HashMap<JobId, Vec<&str>> = HashMap::new();
    for e in &r.h.seen {
        let (job, kind) = match e {
            Event::DownloadCompleted { job_id, .. } => (job_id, "completed"),
            Event::DownloadFailed {
                job_id: Some(job_id),
                ..
            } => (job_id, "failed"),
            Event::DownloadCancelled { job_id, .. } => (job_id, "cancelled"),
            _ => continue,
        };
        terminal.entry(*job).or_default().push(kind);
    }
    prop_assert_eq!(terminal.len(), r.jobs.len(), "{:?}", terminal);
    for job in &r.jobs {
        let kinds = terminal.get(job).cloned().unwrap_or_default();
        prop_assert_eq!(kinds.len(), 1, "terminal events of {}: {:?}", job, kinds);
    }

    // Every `done` for a job: sent, queued for the next connection, or kept for a resend.
    let queued = r.h.session.links.get(SENDER).map(|l| l.outbox.clone());
    let kept = r.h.session.outcomes.values().map(|(_, m)| m.clone());
    let dones = r
        .sent
        .iter()
        .cloned()
        .chain(queued.unwrap_or_default())
        .chain(kept);
    for msg in dones {
        if let ControlMessage::Done { job_id, ok, .. } = msg {
            let kind = terminal[&job_id][0];
            prop_assert_ne!(
                kind,
                "cancelled",
                "job {} cancelled here reported done",
                job_id
            );
            prop_assert_eq!(
                ok,
                kind == "completed",
                "done of job {} that {}",
                job_id,
                kind
            );
        }
    }
    for job in &r.jobs {
        let reported = r.h.session.outcomes.contains_key(job);
        prop_assert_eq!(
            reported,
            terminal[job][0] != "cancelled",
            "outcome of {}",
            job
        );
    }
    Ok(())
}

/// A sender that never answers a request (no data channel on a live connection) is asked
/// again after each timeout, and the job fails with 1183 once the attempts run out.
#[test]
fn session_download_request_never_answered_fails_1183() -> Result<(), TestCaseError> {
    run(async {
        let mut r = Recipient::new(1);
        let attempts = super::downloads::MAX_FRUITLESS_ATTEMPTS as usize + 1;
        for _ in 0..attempts {
            r.step(DlStep::Unanswered);
        }
        prop_assert!(r.h.session.downloads.is_empty());
        let requests = r
            .sent
            .iter()
            .filter(|m| matches!(m, ControlMessage::Request { .. }))
            .count();
        // The first request, then one again after each timeout but the last.
        prop_assert_eq!(requests, attempts);
        let failed: Vec<u16> =
            r.h.seen
                .iter()
                .filter_map(|e| match e {
                    Event::DownloadFailed { code, .. } => Some(*code),
                    _ => None,
                })
                .collect();
        prop_assert_eq!(failed, vec![codes::DOWNLOAD_FAILED]);
        let done_codes: Vec<Option<u16>> = r
            .sent
            .iter()
            .filter_map(|m| match m {
                ControlMessage::Done {
                    ok: false, code, ..
                } => Some(*code),
                _ => None,
            })
            .collect();
        prop_assert_eq!(done_codes, vec![Some(codes::DOWNLOAD_FAILED)]);
        Ok(())
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_download_random_reports_end_each_job_once(
        files in 1..=3usize,
        steps in prop::collection::vec(dl_step(), 0..40),
    ) {
        run(download_case(files, steps))?;
    }
}

// ---- Uploads ---------------------------------------------------------------------

const SENDER_ME: &str = "zz-sender";
const RECIPIENT: &str = "aa-recipient";
/// A second member; in some cases not in the upload's audience.
const OUTSIDER: &str = "ab-outsider";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Recipient,
    Outsider,
}

/// One step; job IDs are indexes into a small pool shared by both peers.
#[derive(Debug, Clone)]
enum UpStep {
    Request(Who, usize),
    Progress(Who, usize, u64),
    Done(Who, usize, bool),
    Cancel(Who, usize),
    Decline(Who),
    /// An `error` about the file without a job: the peer refuses the offer.
    Refuse(Who, u16),
    Left(Who),
    /// The peer joins again (same client ID) and connects.
    Rejoin(Who),
    /// The clock advances (0: a tick, 1: the leave drain, 2: the resume grace) and ticks.
    Tick(u8),
}

fn up_step() -> impl Strategy<Value = UpStep> {
    let who = prop_oneof![Just(Who::Recipient), Just(Who::Outsider)];
    let job = 0..3usize;
    let refusal = prop::sample::select(vec![
        codes::FILE_TOO_LARGE,
        codes::STORAGE_ACCESS_DENIED,
        codes::PROTOCOL_VIOLATION,
    ]);
    prop_oneof![
        3 => (who.clone(), job.clone()).prop_map(|(w, j)| UpStep::Request(w, j)),
        1 => (who.clone(), job.clone(), 0..=6u64).prop_map(|(w, j, n)| UpStep::Progress(w, j, n)),
        3 => (who.clone(), job.clone(), any::<bool>()).prop_map(|(w, j, ok)| UpStep::Done(w, j, ok)),
        1 => (who.clone(), job).prop_map(|(w, j)| UpStep::Cancel(w, j)),
        1 => who.clone().prop_map(UpStep::Decline),
        1 => (who.clone(), refusal).prop_map(|(w, c)| UpStep::Refuse(w, c)),
        1 => who.clone().prop_map(UpStep::Left),
        1 => who.prop_map(UpStep::Rejoin),
        1 => (0..3u8).prop_map(UpStep::Tick),
    ]
}

/// A peer as seen by the sender: its stand-in connections and what they were told.
struct Peer {
    id: &'static str,
    tx: mpsc::UnboundedSender<ConnCommand>,
    rx: mpsc::UnboundedReceiver<ConnCommand>,
    /// Its latest connection (current, draining or stale: the session decides).
    conn: Uuid,
    offered: bool,
}

/// A sender session sharing one file with the recipient and maybe an outsider.
struct Uploader {
    h: Harness,
    peers: Vec<Peer>,
    upload_job: JobId,
    file_id: FileId,
    jobs: [JobId; 3],
}

impl Uploader {
    fn new(outsider: bool, audience: Audience) -> Self {
        let ids: &[&'static str] = if outsider {
            &[RECIPIENT, OUTSIDER]
        } else {
            &[RECIPIENT]
        };
        let mut h = Harness::new(SENDER_ME, ids);
        let peers = ids
            .iter()
            .map(|id| {
                let (tx, rx) = mpsc::unbounded_channel();
                let conn = h.connect(id, &tx);
                Peer {
                    id,
                    tx,
                    rx,
                    conn,
                    offered: false,
                }
            })
            .collect();
        let file = PreparedFile {
            path: "/nonexistent/peershare-test.bin".into(),
            name: "file.bin".into(),
            identity: FileIdentity {
                size: 5,
                modified: None,
            },
            hash: Hash::of(b"hello"),
            tree_path: None,
            executable: false,
            text: false,
        };
        let upload_job = h.session.share_files(
            vec![file],
            super::ShareTree::default(),
            audience,
            Duration::from_secs(3600),
        )[0];
        let file_id = *h.session.shares.keys().next().expect("the file is shared");
        h.flush();
        let mut up = Uploader {
            h,
            peers,
            upload_job,
            file_id,
            jobs: [JobId::new(), JobId::new(), JobId::new()],
        };
        up.read_commands();
        up
    }

    fn peer(&mut self, who: Who) -> &mut Peer {
        let i = usize::from(who == Who::Outsider && self.peers.len() > 1);
        &mut self.peers[i]
    }

    fn control(&mut self, who: Who, msg: ControlMessage) {
        let p = self.peer(who);
        let (id, conn) = (p.id, p.conn);
        self.h.conn_event(id, conn, ConnEvent::Control(msg));
    }

    fn read_commands(&mut self) {
        let file_id = self.file_id;
        for p in &mut self.peers {
            for c in drain(&mut p.rx) {
                if matches!(c, ConnCommand::Control(ControlMessage::Offer { file_id: f, .. }) if f == file_id)
                {
                    p.offered = true;
                }
            }
        }
    }

    fn step(&mut self, step: UpStep) {
        let file_id = self.file_id;
        match step {
            UpStep::Request(who, j) => {
                let msg = ControlMessage::Request {
                    job_id: self.jobs[j],
                    file_id,
                    offset: 0,
                };
                self.control(who, msg);
            }
            UpStep::Progress(who, j, received) => {
                let job_id = self.jobs[j];
                self.control(who, ControlMessage::Progress { job_id, received });
            }
            UpStep::Done(who, j, ok) => {
                let msg = ControlMessage::Done {
                    job_id: self.jobs[j],
                    ok,
                    code: (!ok).then_some(codes::POSSIBLY_CORRUPT),
                };
                self.control(who, msg);
            }
            UpStep::Cancel(who, j) => {
                let msg = ControlMessage::Cancel {
                    job_id: self.jobs[j],
                    code: Some(codes::CANCELLED_BY_PEER),
                };
                self.control(who, msg);
            }
            UpStep::Decline(who) => self.control(
                who,
                ControlMessage::Decline {
                    file_id,
                    have: false,
                },
            ),
            UpStep::Refuse(who, code) => {
                let msg = ControlMessage::Error {
                    job_id: None,
                    file_id: Some(file_id),
                    code,
                    message: "cannot take it".into(),
                };
                self.control(who, msg);
            }
            UpStep::Left(who) => {
                let id = self.peer(who).id;
                if self.h.session.links.contains_key(id) {
                    self.h.signaling(ServerMessage::PeerLeft { id: id.into() });
                }
            }
            UpStep::Rejoin(who) => {
                let (id, tx) = {
                    let p = self.peer(who);
                    (p.id, p.tx.clone())
                };
                if !self.h.session.links.contains_key(id) {
                    self.h
                        .signaling(ServerMessage::PeerJoined { peer: member(id) });
                    self.peer(who).conn = self.h.connect(id, &tx);
                }
            }
            UpStep::Tick(wait) => {
                let by = match wait {
                    0 => Duration::from_millis(100),
                    1 => LEAVE_DRAIN,
                    _ => self.h.session.config.resume_grace,
                };
                self.h.tick(by);
            }
        }
        self.read_commands();
    }
}

async fn upload_case(
    outsider: bool,
    only_recipient: bool,
    steps: Vec<UpStep>,
) -> Result<(), TestCaseError> {
    let audience = if only_recipient {
        Audience::Only([RECIPIENT.to_string()].into())
    } else {
        Audience::Broadcast
    };
    let mut up = Uploader::new(outsider, audience);
    for step in steps {
        up.step(step);
    }
    let job = up.upload_job;
    let offered: HashSet<&str> = up
        .peers
        .iter()
        .filter(|p| p.offered)
        .map(|p| p.id)
        .collect();
    if only_recipient {
        prop_assert!(!offered.contains(OUTSIDER), "offered outside the audience");
    }

    // Each peer's outcomes; the latest ones before the terminal event are the ones it
    // carries (it follows the outcome that resolved the job).
    let mut outcomes: HashMap<String, Vec<Outcome>> = HashMap::new();
    let mut latest: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut terminal = 0;
    for e in &up.h.seen {
        match e {
            Event::RecipientOutcome {
                job_id,
                peer,
                outcome,
                ..
            } if *job_id == job => {
                prop_assert!(
                    offered.contains(peer.as_str()),
                    "outcome of {} without offer",
                    peer
                );
                outcomes
                    .entry(peer.clone())
                    .or_default()
                    .push(outcome.clone());
                if terminal == 0 {
                    latest.insert(peer.clone(), outcome.clone());
                }
            }
            Event::UploadCompleted {
                job_id, outcomes, ..
            } if *job_id == job => {
                terminal += 1;
                prop_assert_eq!(outcomes, &latest, "completed before its outcomes");
            }
            Event::UploadFailed {
                job_id: Some(job_id),
                code,
                ..
            } if *job_id == job => {
                terminal += 1;
                let failed = Outcome::Failed { code: *code };
                prop_assert!(
                    latest.values().all(|o| matches!(o, Outcome::Failed { .. }))
                        && latest.values().any(|o| *o == failed),
                    "failed with outcomes {:?}",
                    latest
                );
            }
            _ => {}
        }
    }
    prop_assert!(terminal <= 1, "{} terminal events", terminal);
    let finished = up.h.session.shares[&up.file_id].state.is_finished();
    prop_assert_eq!(
        finished,
        terminal == 1,
        "finished upload with {} terminal events",
        terminal
    );
    for (peer, list) in &outcomes {
        let valid = matches!(
            list.as_slice(),
            [_] | [Outcome::Failed { .. }, Outcome::Delivered]
        );
        prop_assert!(valid, "outcomes of {}: {:?}", peer, list);
    }
    Ok(())
}

/// A request taking over another peer's pending job (`Session::on_request` calling
/// `UploadState::forget`) can resolve the upload's last recipient: its
/// completion is reported (the property below found it dropped once).
#[test]
fn session_upload_takeover_resolving_last_recipient_completes_once() -> Result<(), TestCaseError> {
    let steps = vec![
        UpStep::Decline(Who::Outsider),
        UpStep::Request(Who::Recipient, 0),
        UpStep::Request(Who::Outsider, 0),
    ];
    run(upload_case(true, false, steps))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..config() })]

    #[test]
    fn session_upload_random_recipient_messages_complete_once(
        outsider in any::<bool>(),
        only_recipient in any::<bool>(),
        steps in prop::collection::vec(up_step(), 0..40),
    ) {
        run(upload_case(outsider, only_recipient, steps))?;
    }
}

/// One fuzz input through the download property: the job count and the steps are drawn
/// from `data` (proptest's pass-through RNG). `Err` when a property fails.
#[cfg(feature = "fuzz-harness")]
pub fn fuzz_download(data: &[u8]) -> Result<(), String> {
    let (files, steps) = draw(data, (1..=3usize, prop::collection::vec(dl_step(), 0..40)))?;
    run(download_case(files, steps)).map_err(|e| e.to_string())
}

/// One fuzz input through the upload property (see [`fuzz_download`]).
#[cfg(feature = "fuzz-harness")]
pub fn fuzz_upload(data: &[u8]) -> Result<(), String> {
    let strategy = (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(up_step(), 0..40),
    );
    let (outsider, only_recipient, steps) = draw(data, strategy)?;
    run(upload_case(outsider, only_recipient, steps)).map_err(|e| e.to_string())
}

/// A value of `strategy` drawn with a ChaCha RNG seeded by the BLAKE3 of `data`: every
/// input is one deterministic sequence. (Proptest's pass-through RNG, which would hand
/// the bytes over as they are, loops forever in rejection sampling once they run out.)
#[cfg(feature = "fuzz-harness")]
fn draw<S: Strategy>(data: &[u8], strategy: S) -> Result<S::Value, String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let seed = blake3::hash(data);
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, seed.as_bytes());
    let mut runner = TestRunner::new_with_rng(config(), rng);
    strategy
        .new_tree(&mut runner)
        .map(|tree| tree.current())
        .map_err(|e| format!("no value: {e}"))
}
