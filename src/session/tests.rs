//! The session task's handling of connection and signaling events, driven step by step
//! with a stand-in for the connection task (no WebRTC, no signaling server): the order in
//! which the two independent paths deliver is chosen by the test.

use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::connection::{ConnCommand, ConnEvent, ConnHandle};
use super::links::{Conn, LEAVE_DRAIN};
use super::{PreparedFile, Session, test_code};
use crate::clock::Clock;
use crate::config::PeerConfig;
use crate::error::codes;
use crate::events::Event;
use crate::proto::control::ControlMessage;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::upload::{Audience, Outcome};
use crate::signal_client::SignalingSession;
use crate::transfer::FileIdentity;

/// Our client ID. The larger one answers, so joining spawns no connection task.
const ME: &str = "zz-sender";
const RECIPIENT: &str = "aa-recipient";

/// A sender session with one shared file, whose recipient is connected (through a
/// stand-in connection) and has requested the file.
/// Share the file at `path` with everyone, as `name`: its upload job.
pub(super) fn share_one(
    session: &mut Session,
    path: std::path::PathBuf,
    name: &str,
    hash: Hash,
    identity: FileIdentity,
) -> JobId {
    let jobs = session.share_files(
        vec![PreparedFile {
            identity,
            path,
            name: name.into(),
            hash,
            tree_path: None,
            executable: false,
            text: false,
        }],
        super::ShareTree::default(),
        Audience::Broadcast,
        Duration::from_secs(3600),
    );
    jobs[0]
}

struct Sender {
    session: Session,
    clock: Clock,
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    /// What the session told the stand-in connection task.
    conn_rx: mpsc::UnboundedReceiver<ConnCommand>,
    conn_id: Uuid,
    /// What the session sent to the signaling server.
    signal_rx: mpsc::Receiver<ClientMessage>,
    _server_tx: mpsc::Sender<ServerMessage>,
    upload_job: JobId,
    file_id: FileId,
    download_job: JobId,
}

impl Sender {
    /// A sender sharing a 5-byte file that does not exist (the tests never read it).
    fn new() -> Self {
        Self::sharing("/nonexistent/peershare-test.bin".into())
    }

    /// A sender sharing the 5-byte file at `path` ("hello"), with its identity if it
    /// exists.
    fn sharing(path: std::path::PathBuf) -> Self {
        let (signal_tx, signal_rx) = mpsc::channel(64);
        let (server_tx, server_rx) = mpsc::channel(64);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let config = PeerConfig::new("ws://127.0.0.1:9");
        let clock = config.clock.clone();
        let joined = SignalingSession {
            server: "ws://127.0.0.1:9".into(),
            resume_token: None,
            session: "session".into(),
            client_id: ME.into(),
            peers: vec![PeerInfo {
                id: RECIPIENT.into(),
                name: "recipient".into(),
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
        session.authenticate_for_test(RECIPIENT);
        session
            .links
            .get_mut(RECIPIENT)
            .expect("the recipient is a member")
            .conn = Some(Conn {
            id: conn_id,
            handle: ConnHandle { tx },
        });
        session.on_conn_event(RECIPIENT.into(), conn_id, ConnEvent::ControlOpen(None));
        let identity = FileIdentity::of(&path).unwrap_or(FileIdentity {
            size: 5,
            modified: None,
        });
        let upload_job = share_one(&mut session, path, "file.bin", Hash::of(b"hello"), identity);
        // The PAKE message to the recipient (the test stands in for its connection).
        let mut signal_rx = signal_rx;
        assert!(
            matches!(signal_rx.try_recv(), Ok(ClientMessage::Signal { data, .. }) if data["kind"] == "pake")
        );
        let mut sender = Sender {
            session,
            clock,
            events,
            conn_rx,
            conn_id,
            signal_rx,
            _server_tx: server_tx,
            upload_job,
            file_id: FileId::new(),
            download_job: JobId::new(),
        };
        sender.file_id = sender
            .commands()
            .iter()
            .find_map(|c| match c {
                ConnCommand::Control(ControlMessage::Offer { file_id, .. }) => Some(*file_id),
                _ => None,
            })
            .expect("the file was offered to the recipient");
        sender.control(ControlMessage::Request {
            job_id: sender.download_job,
            file_id: sender.file_id,
            offset: 0,
        });
        assert!(
            sender
                .commands()
                .iter()
                .any(|c| matches!(c, ConnCommand::OpenJob { .. })),
            "the request is served"
        );
        sender.take_events();
        sender
    }

    /// The recipient's connection delivers a control message.
    fn control(&mut self, msg: ControlMessage) {
        self.conn_event(ConnEvent::Control(msg));
    }

    fn conn_event(&mut self, ev: ConnEvent) {
        self.session
            .on_conn_event(RECIPIENT.into(), self.conn_id, ev);
        self.session.flush_events();
    }

    /// The signaling server reports that the recipient left.
    fn peer_left(&mut self) {
        self.session.on_signaling(ServerMessage::PeerLeft {
            id: RECIPIENT.into(),
        });
        self.session.flush_events();
    }

    fn done(&mut self) {
        self.control(ControlMessage::Done {
            job_id: self.download_job,
            ok: true,
            code: None,
        });
    }

    fn tick(&mut self) {
        self.session.on_tick();
        self.session.flush_events();
    }

    /// Commands sent to the connection task since the last call.
    fn commands(&mut self) -> Vec<ConnCommand> {
        std::iter::from_fn(|| self.conn_rx.try_recv().ok()).collect()
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.try_recv().ok())
            .flatten()
            .collect()
    }

    fn delivered(&self) -> Event {
        Event::RecipientOutcome {
            job_id: self.upload_job,
            file_id: self.file_id,
            name: "file.bin".into(),
            size: 5,
            peer: RECIPIENT.into(),
            outcome: Outcome::Delivered,
            bytes_sent: 0,
        }
    }
}

fn closes(commands: &[ConnCommand]) -> bool {
    commands.iter().any(|c| matches!(c, ConnCommand::Close(_)))
}

#[tokio::test]
async fn session_done_overtaken_by_peer_left_still_delivers_outcome() {
    let mut s = Sender::new();
    // The recipient sent `done`, closed its connection and left; the signaling server's
    // `peer-left` reaches the session before the `done` from the connection task.
    s.peer_left();
    let on_leave = s.commands();
    // Its departure is announced after what it sent before leaving.
    assert_eq!(s.take_events(), []);
    s.done();
    let events = s.take_events();
    let position = |wanted: &dyn Fn(&Event) -> bool| events.iter().position(wanted);
    let delivered = position(&|e| *e == s.delivered()).expect("the outcome");
    let completed = position(
        &|e| matches!(e, Event::UploadCompleted { job_id, .. } if *job_id == s.upload_job),
    )
    .expect("the upload completes");
    let left = position(&|e| matches!(e, Event::PeerLeft { peer } if peer == RECIPIENT))
        .expect("the departure");
    assert!(delivered < left && completed < left, "{events:#?}");
    assert!(
        !closes(&on_leave),
        "the connection of the departed peer is read while an outcome is pending"
    );
    // Nothing more is awaited from it: now its connection goes.
    assert!(closes(&s.commands()));
    assert!(s.session.draining.is_empty());
    // Its end is no loss: no event, no reconnect request.
    s.conn_event(ConnEvent::Down("control channel closed".into()));
    assert_eq!(s.take_events(), []);
    assert!(s.signal_rx.try_recv().is_err(), "no reconnect request");
}

#[tokio::test]
async fn session_departed_peer_connection_ending_stops_draining() {
    let mut s = Sender::new();
    s.peer_left();
    assert_eq!(s.take_events(), []);
    s.conn_event(ConnEvent::Down("control channel closed".into()));
    assert!(s.session.draining.is_empty());
    assert_eq!(
        s.take_events(),
        [Event::PeerLeft {
            peer: RECIPIENT.into()
        }]
    );
    assert!(s.signal_rx.try_recv().is_err(), "no reconnect request");
}

#[tokio::test]
async fn session_departed_peer_connection_silent_closed_after_leave_drain() {
    let mut s = Sender::new();
    s.peer_left();
    s.tick();
    assert!(!closes(&s.commands()));
    assert_eq!(s.take_events(), []);
    s.clock.advance(LEAVE_DRAIN);
    s.tick();
    assert!(closes(&s.commands()), "closed once the drain limit passed");
    assert!(s.session.draining.is_empty());
    assert!(
        s.take_events().contains(&Event::PeerLeft {
            peer: RECIPIENT.into()
        }),
        "announced once the drain limit passed"
    );
    // Whatever that connection delivers now is stale.
    s.done();
    assert_eq!(s.take_events(), []);
}

#[tokio::test]
async fn session_request_from_departed_peer_not_served() {
    let mut s = Sender::new();
    s.peer_left();
    s.take_events();
    s.control(ControlMessage::Request {
        job_id: JobId::new(),
        file_id: s.file_id,
        offset: 0,
    });
    assert!(
        !s.commands()
            .iter()
            .any(|c| matches!(c, ConnCommand::OpenJob { .. })),
        "nothing new starts with a peer that left"
    );
    assert_eq!(s.take_events(), []);
}

#[tokio::test]
async fn session_peer_left_with_no_pending_outcome_closes_connection_at_once() {
    let mut s = Sender::new();
    s.done();
    assert!(s.take_events().contains(&s.delivered()));
    // Nothing more to hear from the recipient: its connection goes with it (a download
    // from a peer that vanished is suspended at once).
    s.peer_left();
    assert!(closes(&s.commands()));
    assert!(s.session.draining.is_empty());
}

#[tokio::test]
async fn session_relay_only_peer_connections_skip_relay_wait() {
    let (signal_tx, _signal_rx) = mpsc::channel(64);
    let (_server_tx, server_rx) = mpsc::channel(64);
    let (ev_tx, _events) = mpsc::unbounded_channel();
    let peer = |id: &str, relay_only| PeerInfo {
        id: id.into(),
        name: id.into(),
        relay_only,
    };
    // We are the larger ID, so we answer both and no connection task is spawned here.
    let joined = SignalingSession {
        server: "ws://127.0.0.1:9".into(),
        resume_token: None,
        session: "session".into(),
        client_id: ME.into(),
        peers: vec![peer("aa-relayed", true)],
        ice_servers: Vec::new(),
        tx: signal_tx,
        rx: server_rx,
        pump: None,
    };
    let mut session = Session::new(
        Arc::new(PeerConfig::new("ws://127.0.0.1:9")),
        joined,
        test_code(),
        ev_tx,
    );
    session.add_peer(peer("ab-direct", false));
    assert!(session.conn_settings("aa-relayed").peer_relay_only);
    assert!(!session.conn_settings("ab-direct").peer_relay_only);
    // What the peer list reports is what the peers announced.
    let mut listed: Vec<(String, bool)> = session
        .links
        .iter()
        .map(|(id, l)| (id.clone(), l.relay_only))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("aa-relayed".to_string(), true),
            ("ab-direct".to_string(), false)
        ]
    );
}

/// A peer connection's handler that has nothing to report.
struct Quiet;

#[async_trait::async_trait]
impl webrtc::peer_connection::PeerConnectionEventHandler for Quiet {}

#[tokio::test(start_paused = true)]
async fn session_job_channel_never_opening_replaces_connection() {
    // A readable file: the upload starts filling the channel before it opens (RFC 8832
    // §6), and its first send waits for the open.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("file.bin");
    std::fs::write(&path, b"hello").expect("the shared file");
    let mut s = Sender::sharing(path);
    // A real data channel that can never open: its peer connection has no remote.
    let settings = crate::rtc::RtcSettings {
        bind: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        ..Default::default()
    };
    let pc = crate::rtc::build_peer_connection(&settings, &[], Arc::new(Quiet))
        .await
        .expect("a peer connection on loopback");
    let dc = pc
        .create_data_channel("stuck", None)
        .await
        .expect("a data channel");
    // The recipient asks again (a resume); the job's channel never opens.
    s.control(ControlMessage::Request {
        job_id: s.download_job,
        file_id: s.file_id,
        offset: 0,
    });
    let reply = s
        .commands()
        .into_iter()
        .find_map(|c| match c {
            ConnCommand::OpenJob { reply, .. } => Some(reply),
            _ => None,
        })
        .expect("the request is served");
    assert!(
        reply
            .send(Ok(crate::rtc::RtcChannel::spawn(dc, false)))
            .is_ok()
    );
    // Virtual time runs on to the open timeout; the upload task reports it. (The first
    // request's task, whose channel reply was dropped, may report before.)
    let started = tokio::time::Instant::now();
    let wait = async {
        loop {
            let report = s.session.report_rx.recv().await.expect("a report");
            if let super::Report::JobChannelStuck { job_id } = &report {
                assert_eq!(*job_id, s.download_job);
                break report;
            }
            s.session.on_report(report);
        }
    };
    let report = tokio::time::timeout(3 * super::uploads::JOB_CHANNEL_OPEN_TIMEOUT, wait)
        .await
        .expect("a stuck job channel is given up on");
    assert!(started.elapsed() >= super::uploads::JOB_CHANNEL_OPEN_TIMEOUT);
    s.session.on_report(report);
    // The connection is replaced like a failed one: the recipient resumes over the new one.
    assert!(closes(&s.commands()), "the connection is closed");
    let _ = pc.close().await;
}

impl Sender {
    /// Share `n` more files with everyone; their file IDs, in order.
    fn share_more(&mut self, n: usize) -> Vec<FileId> {
        let files = (0..n)
            .map(|i| PreparedFile {
                path: format!("/nonexistent/peershare-test-{i}.bin").into(),
                name: format!("file-{i}.bin"),
                identity: FileIdentity {
                    size: 5,
                    modified: None,
                },
                hash: Hash::of(b"hello"),
                tree_path: None,
                executable: false,
                text: false,
            })
            .collect();
        self.session.share_files(
            files,
            super::ShareTree::default(),
            Audience::Broadcast,
            Duration::from_secs(3600),
        );
        self.session.flush_events();
        self.take_events();
        self.commands()
            .iter()
            .filter_map(|c| match c {
                ConnCommand::Control(ControlMessage::Offer { file_id, .. }) => Some(*file_id),
                _ => None,
            })
            .collect()
    }

    fn request(&mut self, job_id: JobId, file_id: FileId) {
        self.control(ControlMessage::Request {
            job_id,
            file_id,
            offset: 0,
        });
    }
}

/// Jobs whose data channel the session asked for.
fn opened(commands: &[ConnCommand]) -> Vec<JobId> {
    commands
        .iter()
        .filter_map(|c| match c {
            ConnCommand::OpenJob { label, .. } => {
                crate::proto::control::parse_job_channel_label(label)
            }
            _ => None,
        })
        .collect()
}

/// `(job, code)` of the coded errors sent to the recipient.
fn errors(commands: &[ConnCommand]) -> Vec<(Option<JobId>, u16)> {
    commands
        .iter()
        .filter_map(|c| match c {
            ConnCommand::Control(ControlMessage::Error { job_id, code, .. }) => {
                Some((*job_id, *code))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn serve_bounds_admit_refuses_at_peer_or_total_bound_with_6010() {
    let b = super::uploads::ServeBounds {
        jobs_per_peer: 2,
        jobs_total: 3,
        streams_per_peer: 1,
        streams_total: 1,
    };
    assert!(b.admit(0, 0).is_ok());
    assert!(b.admit(1, 2).is_ok());
    for (peer_jobs, total_jobs) in [(2, 2), (0, 3), (5, 9)] {
        let e = b.admit(peer_jobs, total_jobs).unwrap_err();
        assert_eq!(
            e.code(),
            crate::codes::TOO_MANY_JOBS,
            "{peer_jobs} {total_jobs}"
        );
    }
    // The defaults bound streams well below jobs, and serve every job a recipient
    // requests at a time.
    let d = super::uploads::SERVE_BOUNDS;
    assert!(d.streams_per_peer <= d.streams_total && d.streams_total <= d.jobs_total);
    assert!(d.jobs_per_peer >= super::downloads::MAX_ACTIVE_PER_SENDER);
}

impl Sender {
    /// Make the served job `job` stream for ever (a stand-in task); its abort handle.
    fn streaming(&mut self, job: JobId) -> tokio::task::AbortHandle {
        let stream = tokio::spawn(std::future::pending::<()>());
        let handle = stream.abort_handle();
        let served = self.session.serving.get_mut(&job).expect("served");
        if let Some(t) = served.task.replace(stream) {
            t.abort();
        }
        handle
    }
}

#[tokio::test]
async fn session_request_flood_same_file_refused_6010_one_job_served() {
    let mut s = Sender::new();
    let stream = s.streaming(s.download_job);
    let flood: Vec<JobId> = (0..1000).map(|_| JobId::new()).collect();
    for job in &flood {
        s.request(*job, s.file_id);
    }
    let commands = s.commands();
    // No new data channel, no stream aborted: each repeat is refused.
    assert_eq!(opened(&commands), []);
    let refused: Vec<(Option<JobId>, u16)> = flood
        .iter()
        .map(|j| (Some(*j), crate::codes::TOO_MANY_JOBS))
        .collect();
    assert_eq!(errors(&commands), refused);
    assert_eq!(s.session.serving.len(), 1);
    assert!(s.session.serving.contains_key(&s.download_job));
    assert!(!stream.is_finished());
    assert_eq!(s.take_events(), []);
}

#[tokio::test]
async fn session_request_same_file_new_job_replaces_idle_job() {
    let mut s = Sender::new();
    // The job's channel was lost: no stream runs for it.
    if let Some(t) = s
        .session
        .serving
        .get_mut(&s.download_job)
        .and_then(|j| j.task.take())
    {
        t.abort();
    }
    let new_job = JobId::new();
    s.request(new_job, s.file_id);
    let commands = s.commands();
    assert_eq!(errors(&commands), []);
    assert_eq!(opened(&commands), [new_job]);
    assert!(!s.session.serving.contains_key(&s.download_job));
    assert!(s.session.serving.contains_key(&new_job));
    // The recipient's `done` for the new job resolves it.
    s.control(ControlMessage::Done {
        job_id: new_job,
        ok: true,
        code: None,
    });
    assert!(s.session.serving.is_empty());
    assert!(s.take_events().iter().any(|e| matches!(
        e,
        Event::RecipientOutcome {
            outcome: Outcome::Delivered,
            ..
        }
    )));
}

#[tokio::test]
async fn session_request_same_job_again_replaces_running_stream() {
    let mut s = Sender::new();
    let stream = s.streaming(s.download_job);
    // The recipient asks again for its job (a resume): the old stream goes.
    s.request(s.download_job, s.file_id);
    assert_eq!(opened(&s.commands()), [s.download_job]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !stream.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the replaced stream ends");
    assert_eq!(s.session.serving.len(), 1);
}

#[tokio::test]
async fn session_request_beyond_peer_job_bound_refused_6010_repeat_still_served() {
    let mut s = Sender::new();
    s.session.serve_bounds = super::uploads::ServeBounds {
        jobs_per_peer: 3,
        jobs_total: 100,
        streams_per_peer: 1,
        streams_total: 1,
    };
    let files = s.share_more(4);
    let jobs: Vec<JobId> = files.iter().map(|_| JobId::new()).collect();
    for (job, file) in jobs.iter().zip(&files) {
        s.request(*job, *file);
    }
    let commands = s.commands();
    // The first job plus two more fill the bound; the other two are refused.
    assert_eq!(opened(&commands), jobs[..2]);
    assert_eq!(
        errors(&commands),
        [
            (Some(jobs[2]), crate::codes::TOO_MANY_JOBS),
            (Some(jobs[3]), crate::codes::TOO_MANY_JOBS)
        ]
    );
    assert_eq!(s.session.serving.len(), 3);
    // A job it already has, asked again (a resume), and a new job for a file whose job
    // has no stream (its channel was lost), replace a job: not refused.
    if let Some(t) = s
        .session
        .serving
        .get_mut(&jobs[1])
        .and_then(|j| j.task.take())
    {
        t.abort();
    }
    s.request(jobs[0], files[0]);
    let renewed = JobId::new();
    s.request(renewed, files[1]);
    let commands = s.commands();
    assert_eq!(errors(&commands), []);
    assert_eq!(opened(&commands), [jobs[0], renewed]);
    assert_eq!(s.session.serving.len(), 3);
    // Once a job ends, the next request fits.
    s.done();
    s.request(jobs[2], files[2]);
    assert_eq!(opened(&s.commands()), [jobs[2]]);
}

#[tokio::test]
async fn session_request_beyond_total_job_bound_refused_6010() {
    let mut s = Sender::new();
    s.session.serve_bounds = super::uploads::ServeBounds {
        jobs_per_peer: 100,
        jobs_total: 1,
        streams_per_peer: 1,
        streams_total: 1,
    };
    let files = s.share_more(1);
    let job = JobId::new();
    s.request(job, files[0]);
    let commands = s.commands();
    assert_eq!(opened(&commands), []);
    assert_eq!(
        errors(&commands),
        [(Some(job), crate::codes::TOO_MANY_JOBS)]
    );
    assert_eq!(s.take_events(), [], "a refusal is no outcome");
}

#[tokio::test]
async fn session_recipient_gone_for_good_releases_served_jobs() {
    let mut s = Sender::new();
    let files = s.share_more(3);
    for file in &files {
        s.request(JobId::new(), *file);
    }
    assert_eq!(s.session.serving.len(), 4);
    assert!(s.session.stream_slots_peers() > 0);
    s.peer_left();
    // Leaving stops every stream at once; the jobs wait for a restarted recipient.
    assert!(s.session.serving.values().all(|j| j.task.is_none()));
    s.clock.advance(s.session.config.resume_grace);
    s.tick();
    assert!(s.session.serving.is_empty());
    assert_eq!(s.session.stream_slots_peers(), 0);
    let failed = s
        .take_events()
        .iter()
        .filter(|e| {
            matches!(e, Event::RecipientOutcome { outcome: Outcome::Failed { code }, .. }
                if *code == crate::codes::PEER_GONE)
        })
        .count();
    assert_eq!(failed, 4);
}

#[tokio::test]
async fn session_renewed_ice_servers_replace_the_welcome_ones() {
    let mut s = Sender::new();
    let renewed = vec![peershare_signaling::protocol::IceServer {
        urls: vec!["turn:192.0.2.7:3478?transport=udp".into()],
        username: Some("2000000000:zz-sender".into()),
        credential: Some("fresh".into()),
    }];
    s.session.on_signaling(ServerMessage::IceServers {
        ice_servers: renewed.clone(),
    });
    // New connections are built with these.
    assert_eq!(s.session.ice_servers, renewed);
}

/// A session of ours ([`ME`], so we answer every peer below) with no members yet, for the
/// authentication of joiners.
struct Auth {
    session: Session,
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    signal_rx: mpsc::Receiver<ClientMessage>,
    _server_tx: mpsc::Sender<ServerMessage>,
}

/// A client that knows `secret` (the test code's is `test-secret`) and its pair key with
/// us once the PAKE messages are exchanged.
struct Joiner {
    id: &'static str,
    handshake: Option<crate::proto::pake::Handshake>,
    key: Option<crate::proto::pake::PairKey>,
}

impl Auth {
    fn new(max_auth_failures: u32) -> Self {
        let mut config = PeerConfig::new("ws://127.0.0.1:9");
        config.max_auth_failures = max_auth_failures;
        Self::with(config, &[])
    }

    /// A session of ours with `config`, joined with the members `peers`, authenticated
    /// (their PAKE messages are taken off the signaling queue).
    fn with(config: PeerConfig, peers: &[&str]) -> Self {
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (joined, signal_rx, server_tx) = joined_as(ME, peers);
        let mut auth = Auth {
            session: Session::new(Arc::new(config), joined, test_code(), ev_tx),
            events,
            signal_rx,
            _server_tx: server_tx,
        };
        for id in peers {
            auth.session.authenticate_for_test(id);
        }
        let mut met: Vec<&str> = peers.to_vec();
        met.sort();
        assert_eq!(auth.pakes_sent(), met, "a PAKE message to each member");
        auth
    }

    /// `id` joins the session knowing `secret`; returns it after our PAKE message reached it.
    fn join(&mut self, id: &'static str, secret: &str) -> Joiner {
        let (handshake, msg) = crate::proto::pake::Handshake::start(secret, "session", id, ME);
        self.session.on_signaling(ServerMessage::PeerJoined {
            peer: PeerInfo {
                id: id.into(),
                name: id.into(),
                relay_only: false,
            },
        });
        let mut joiner = Joiner {
            id,
            handshake: Some(handshake),
            key: None,
        };
        if let Some(ours) = self
            .signals_to(id)
            .into_iter()
            .find(|d| d["kind"] == "pake")
        {
            let ours = hex::decode(ours["msg"].as_str().unwrap()).unwrap();
            joiner.key = joiner.handshake.take().map(|h| h.finish(&ours).unwrap());
        }
        self.signal(
            id,
            serde_json::json!({"kind": "pake", "msg": hex::encode(msg)}),
        );
        joiner
    }

    /// `id` joins knowing `secret` and sends its offer, sealed with its key.
    fn join_and_offer(
        &mut self,
        id: &'static str,
        secret: &str,
    ) -> (Joiner, crate::proto::pake::PairKey) {
        let j = self.join(id, secret);
        let key = j.key.clone().expect("keyed");
        self.sealed(&j, "offer", b"v=0\r\n", &key);
        (j, key)
    }

    fn signal(&mut self, from: &str, data: serde_json::Value) {
        self.session.on_signaling(ServerMessage::Signal {
            from: from.into(),
            data,
        });
        self.session.flush_events();
    }

    /// `joiner` sends a sealed `kind` (offer, candidate …) with `plain`, sealed with `key`.
    fn sealed(
        &mut self,
        joiner: &Joiner,
        kind: &str,
        plain: &[u8],
        key: &crate::proto::pake::PairKey,
    ) {
        use crate::proto::pake::SealKind;
        let seal_kind = match kind {
            "offer" => SealKind::Offer,
            "answer" => SealKind::Answer,
            _ => SealKind::Candidate,
        };
        let sealed = key.seal(seal_kind, joiner.id, ME, None, plain);
        self.signal(
            joiner.id,
            serde_json::json!({"kind": kind, "sealed": sealed}),
        );
    }

    /// Signal data we sent to `to` since the last call.
    fn signals_to(&mut self, to: &str) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| self.signal_rx.try_recv().ok())
            .filter_map(|m| match m {
                ClientMessage::Signal { to: t, data } if t == to => Some(data),
                _ => None,
            })
            .collect()
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.session.flush_events();
        std::iter::from_fn(|| self.events.try_recv().ok())
            .flatten()
            .collect()
    }
}

fn auth_failed(peer: &str, code: u16) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::PeerAuthFailed { peer: p, code: c, .. } if p == peer && *c == code)
}

#[tokio::test]
async fn session_auth_offer_sealed_with_wrong_secret_refuses_the_pair_once() {
    let mut a = Auth::new(3);
    let (j, key) = a.join_and_offer("aa-guesser", "wrong-guess");
    let events = a.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(auth_failed("aa-guesser", codes::PEER_AUTH_FAILED)(
        &events[0]
    ));
    // Nobody else is authenticating.
    assert!(matches!(
        events[0],
        Event::PeerAuthFailed {
            authenticating: 0,
            ..
        }
    ));
    assert_eq!(
        a.signals_to("aa-guesser"),
        [serde_json::json!({"kind": "auth-failed", "code": codes::PEER_AUTH_FAILED})]
    );
    assert!(a.session.links["aa-guesser"].conn.is_none());
    // Anything more from it is ignored: no second failure, no answer.
    a.sealed(&j, "offer", b"v=0\r\n", &key);
    a.signal(
        "aa-guesser",
        serde_json::json!({"kind": "pake", "msg": "00"}),
    );
    assert_eq!(a.take_events(), []);
    assert!(a.signals_to("aa-guesser").is_empty());
    assert_eq!(a.session.auth_failures, 1);
}

#[tokio::test]
async fn session_auth_malformed_pake_or_offer_fails_the_pair_6011() {
    let mut a = Auth::new(3);
    // A PAKE message without `msg`, from a client whose PAKE is awaited.
    a.session.on_signaling(ServerMessage::PeerJoined {
        peer: PeerInfo {
            id: "aa-nomsg".into(),
            name: "aa-nomsg".into(),
            relay_only: false,
        },
    });
    a.take_events();
    a.signal("aa-nomsg", serde_json::json!({"kind": "pake"}));
    let events = a.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(auth_failed("aa-nomsg", codes::PEER_AUTH_FAILED)(&events[0]));
    assert!(
        a.signals_to("aa-nomsg")
            .contains(&serde_json::json!({"kind": "auth-failed", "code": codes::PEER_AUTH_FAILED}))
    );
    // A keyed client whose offer has no string `sealed`.
    let j = a.join("ab-badoffer", "test-secret");
    a.signal(j.id, serde_json::json!({"kind": "offer", "sealed": 5}));
    let events = a.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(auth_failed("ab-badoffer", codes::PEER_AUTH_FAILED)(
        &events[0]
    ));
    assert_eq!(a.session.auth_failures, 2);
}

#[tokio::test]
async fn session_auth_malformed_candidate_or_unknown_kind_cannot_end_an_authenticated_pair() {
    let mut a = Auth::new(3);
    let (j, _) = a.join_and_offer("aa-friend", "test-secret");
    a.take_events();
    a.signal(j.id, serde_json::json!({"kind": "candidate", "sealed": []}));
    a.signal(j.id, serde_json::json!({"kind": "pake"}));
    a.signal(j.id, serde_json::json!({"kind": "future-kind", "x": 1}));
    assert_eq!(a.take_events(), []);
    assert!(a.session.links["aa-friend"].auth.verified());
    assert_eq!(a.session.auth_failures, 0);
}

#[tokio::test]
async fn session_auth_right_secret_joins_and_stray_data_cannot_end_it() {
    let mut a = Auth::new(3);
    let (j, _) = a.join_and_offer("aa-friend", "test-secret");
    assert_eq!(
        a.take_events(),
        [Event::PeerJoined {
            peer: "aa-friend".into(),
            name: "aa-friend".into()
        }]
    );
    assert!(a.session.links["aa-friend"].conn.is_some());
    // Injected by someone on the signaling path: a candidate under another key, and an
    // unauthenticated refusal. Neither ends an authenticated pair.
    let other = crate::proto::pake::PairKey::from_shared(b"not the pair's");
    a.sealed(&j, "candidate", b"{}", &other);
    a.signal(
        "aa-friend",
        serde_json::json!({"kind": "auth-failed", "code": 6011}),
    );
    assert_eq!(a.take_events(), []);
    assert!(a.session.links["aa-friend"].auth.verified());
    assert_eq!(a.session.auth_failures, 0);
}

#[tokio::test]
async fn session_auth_third_failure_burns_the_code_and_newcomers_get_6012() {
    let mut a = Auth::new(3);
    // One pair is keyed but not yet authenticated when the code burns: it is refused too.
    let pending = a.join("ab-pending", "test-secret");
    for id in ["aa-g1", "aa-g2", "aa-g3"] {
        a.join_and_offer(id, "wrong-guess");
    }
    let events = a.take_events();
    // While the pending pair is still authenticating, each failure says so.
    let first = events
        .iter()
        .find(|e| auth_failed("aa-g1", codes::PEER_AUTH_FAILED)(e))
        .expect("g1 refused");
    assert!(matches!(
        first,
        Event::PeerAuthFailed {
            authenticating: 1,
            ..
        }
    ));
    let burnt: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::CodeBurnt { .. }))
        .collect();
    assert_eq!(burnt, [&Event::CodeBurnt { failures: 3 }]);
    assert!(
        events
            .iter()
            .any(auth_failed("ab-pending", codes::CODE_BURNT))
    );
    assert!(
        a.signals_to("ab-pending")
            .contains(&serde_json::json!({"kind": "auth-failed", "code": codes::CODE_BURNT}))
    );
    // A newcomer gets no PAKE message from us, only the refusal.
    a.session.on_signaling(ServerMessage::PeerJoined {
        peer: PeerInfo {
            id: "aa-late".into(),
            name: "late".into(),
            relay_only: false,
        },
    });
    assert!(
        a.take_events()
            .iter()
            .any(auth_failed("aa-late", codes::CODE_BURNT))
    );
    assert_eq!(
        a.signals_to("aa-late"),
        [serde_json::json!({"kind": "auth-failed", "code": codes::CODE_BURNT})]
    );
    // The pending peer's late offer is ignored; the count stays.
    let key = pending.key.clone().expect("keyed");
    a.sealed(&pending, "offer", b"v=0\r\n", &key);
    assert_eq!(a.take_events(), []);
    assert_eq!(a.session.auth_failures, 3);
}

#[tokio::test(start_paused = true)]
async fn session_pake_without_sctp_mtu_uses_safe_packets_with_it_large_ones() {
    let mut auth = Auth::new(3);
    // Our PAKE message announces what we take.
    let j = auth.join("aa-joiner", "test-secret");
    auth.session.add_peer(PeerInfo {
        id: "ab-silent".into(),
        name: "ab-silent".into(),
        relay_only: false,
    });
    let ours = auth.signals_to("ab-silent");
    let pake = ours.iter().find(|d| d["kind"] == "pake").expect("our pake");
    assert_eq!(pake["sctp_mtu"], crate::rtc::LOOPBACK_SCTP_MTU);
    // A peer whose PAKE message does not mention packet sizes (another implementation).
    let (_, msg) = crate::proto::pake::Handshake::start("test-secret", "session", "ab-silent", ME);
    auth.signal(
        "ab-silent",
        serde_json::json!({"kind": "pake", "msg": hex::encode(msg)}),
    );
    assert!(!auth.session.conn_settings("ab-silent").peer_large_packets);
    // `join` sent a PAKE message without the field too.
    assert!(!auth.session.conn_settings(j.id).peer_large_packets);
    // A peer that announces them.
    let (_, msg) = crate::proto::pake::Handshake::start("test-secret", "session", "ac-large", ME);
    auth.session.add_peer(PeerInfo {
        id: "ac-large".into(),
        name: "ac-large".into(),
        relay_only: false,
    });
    auth.signal(
        "ac-large",
        serde_json::json!({"kind": "pake", "msg": hex::encode(msg), "sctp_mtu": 8192}),
    );
    assert!(auth.session.conn_settings("ac-large").peer_large_packets);
}

/// A welcome for `client_id` with the members `peers`, on new channels: the session's
/// ends, what it sends to the server, and the server's end.
fn joined_as(
    client_id: &str,
    peers: &[&str],
) -> (
    SignalingSession,
    mpsc::Receiver<ClientMessage>,
    mpsc::Sender<ServerMessage>,
) {
    let (signal_tx, signal_rx) = mpsc::channel(64);
    let (server_tx, server_rx) = mpsc::channel(64);
    let joined = SignalingSession {
        server: "ws://127.0.0.1:9".into(),
        resume_token: Some(format!("token-of-{client_id}")),
        session: "session".into(),
        client_id: client_id.into(),
        peers: peers.iter().map(|id| member(id)).collect(),
        ice_servers: Vec::new(),
        tx: signal_tx,
        rx: server_rx,
        pump: None,
    };
    (joined, signal_rx, server_tx)
}

impl Auth {
    /// The rejoining task hands over a welcome for `client_id` with `peers`; the test's
    /// ends of the new connection replace the old ones.
    fn rejoined(&mut self, client_id: &str, peers: &[&str]) {
        let (mut joined, signal_rx, server_tx) = joined_as(client_id, peers);
        joined.resume_token = Some("token-of-the-rejoin".into());
        self.signal_rx = signal_rx;
        self._server_tx = server_tx;
        self.session.on_rejoined(Ok(joined));
    }

    fn signaling(&mut self, msg: ServerMessage) {
        self.session.on_signaling(msg);
    }

    /// The server sends `error` `code`.
    fn server_error(&mut self, code: u16, message: &str, retry_after_ms: Option<u64>) {
        self.signaling(ServerMessage::Error {
            code,
            message: message.into(),
            retry_after_ms,
        });
    }

    /// The members a PAKE message went to since the last call, sorted.
    fn pakes_sent(&mut self) -> Vec<String> {
        let mut to: Vec<String> = std::iter::from_fn(|| self.signal_rx.try_recv().ok())
            .filter_map(|m| match m {
                ClientMessage::Signal { to, data } if data["kind"] == "pake" => Some(to),
                _ => None,
            })
            .collect();
        to.sort();
        to
    }
}

fn member(id: &str) -> PeerInfo {
    PeerInfo {
        id: id.into(),
        name: format!("name of {id}"),
        relay_only: false,
    }
}

fn reconnected(client_id: &str, resumed: bool) -> Event {
    Event::SignalingReconnected {
        client_id: client_id.into(),
        server: "ws://127.0.0.1:9".into(),
        resumed,
    }
}

fn left(peer: &str) -> Event {
    Event::PeerLeft { peer: peer.into() }
}

#[tokio::test]
async fn session_rejoin_same_id_reconciles_presence_with_the_welcome() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-gone", "ab-kept"]);
    m.rejoined(ME, &["ab-kept", "ac-new"]);
    assert_eq!(
        m.take_events(),
        [reconnected(ME, true), left("aa-gone")],
        "the member that left meanwhile is gone; the one still there stays as it was"
    );
    // Only the new member is met (a PAKE, on the new connection).
    assert_eq!(m.pakes_sent(), ["ac-new"]);
    assert!(
        m.session
            .links
            .get("ab-kept")
            .is_some_and(|l| l.auth.verified())
    );
    assert_eq!(
        m.session.resume_token.as_deref(),
        Some("token-of-the-rejoin")
    );
    assert_eq!(*m.session.client_id_watch().borrow(), ME);
}

#[tokio::test]
async fn session_rejoin_same_id_starts_over_connections_whose_setup_was_cut() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-setup", "ab-up"]);
    // Stand-in connections: one still being set up, one whose control channel is open.
    let mut conns = Vec::new();
    for peer in ["aa-setup", "ab-up"] {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = Uuid::new_v4();
        m.session.links.get_mut(peer).expect("member").conn = Some(Conn {
            id,
            handle: ConnHandle { tx },
        });
        conns.push((rx, id));
    }
    m.session
        .on_conn_event("ab-up".into(), conns[1].1, ConnEvent::ControlOpen(None));
    m.take_events();
    m.rejoined(ME, &["aa-setup", "ab-up"]);
    assert_eq!(m.take_events(), [reconnected(ME, true)]);
    // The cut setup is closed and (we answer) the offerer is asked for a new one, through
    // the new connection; the open one is left alone.
    assert!(closes(&drain_commands(&mut conns[0].0)));
    assert_eq!(
        m.signals_to("aa-setup"),
        [serde_json::json!({"kind": "reconnect", "conn": conns[0].1})]
    );
    assert!(!closes(&drain_commands(&mut conns[1].0)));
    assert!(m.session.is_connected("ab-up"));
}

fn drain_commands(rx: &mut mpsc::UnboundedReceiver<ConnCommand>) -> Vec<ConnCommand> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn session_rejoin_new_id_meets_every_member_anew() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-one", "ab-two"]);
    let ids = m.session.client_id_watch();
    m.rejoined("zz-new-id", &["aa-one", "ab-two"]);
    assert_eq!(
        m.take_events(),
        [
            reconnected("zz-new-id", false),
            left("aa-one"),
            left("ab-two")
        ]
    );
    assert_eq!(*ids.borrow(), "zz-new-id");
    // Every member is authenticated again, under the new ID (no key of the old one).
    assert_eq!(m.pakes_sent(), ["aa-one", "ab-two"]);
    assert!(m.session.links.values().all(|l| !l.auth.verified()));
}

#[tokio::test]
async fn session_member_back_under_its_id_within_grace_keeps_the_pair_key() {
    let config = PeerConfig::new("ws://127.0.0.1:9");
    let clock = config.clock.clone();
    let grace = config.resume_grace;
    let mut m = Auth::with(config, &["aa-back", "ab-late"]);
    m.signaling(ServerMessage::PeerLeft {
        id: "aa-back".into(),
    });
    m.signaling(ServerMessage::PeerLeft {
        id: "ab-late".into(),
    });
    assert_eq!(m.take_events(), [left("aa-back"), left("ab-late")]);
    m.signaling(ServerMessage::PeerJoined {
        peer: member("aa-back"),
    });
    // No new PAKE: its next session description must open with the pair's key, which
    // makes it a member again (`peer-joined` then).
    assert!(m.pakes_sent().is_empty());
    assert!(matches!(
        m.session.links.get("aa-back").map(|l| &l.auth),
        Some(super::links::Auth::Keyed {
            verified: false,
            ..
        })
    ));
    assert!(m.take_events().is_empty());
    // Past the grace period the key is forgotten: a member back under that ID is met anew.
    clock.advance(grace);
    m.session.on_tick();
    m.signaling(ServerMessage::PeerJoined {
        peer: member("ab-late"),
    });
    assert_eq!(m.pakes_sent(), ["ab-late"]);
}

#[tokio::test]
async fn session_signaling_lost_with_zero_window_reports_1180_once() {
    let mut config = PeerConfig::new("ws://127.0.0.1:9");
    config.signaling_retry_window = Duration::ZERO;
    let mut m = Auth::with(config, &["aa-peer"]);
    m.session.signaling_lost();
    let events = m.take_events();
    assert!(
        matches!(&events[..], [Event::Error { peer: None, code, .. }] if *code == codes::NOT_CONNECTED),
        "{events:?}"
    );
    assert!(!m.session.signaling_up());
    // The member and its link stay: peer connections carry on without signaling.
    assert!(
        m.session
            .links
            .get("aa-peer")
            .is_some_and(|l| l.auth.verified())
    );
}

#[tokio::test(start_paused = true)]
async fn session_draining_server_7012_is_the_reason_of_the_loss_not_an_error() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-peer"]);
    m.server_error(7012, "server is shutting down; reconnect", Some(2315));
    assert!(m.take_events().is_empty());
    assert_eq!(m.session.retry_hint, Some(Duration::from_millis(2315)));
    m.session.signaling_lost();
    assert_eq!(
        m.take_events(),
        [Event::SignalingLost {
            reason: "error 7012: server is shutting down; reconnect".into()
        }]
    );
    // The hint went to the rejoining task, which waits that long before its first try.
    assert_eq!(m.session.retry_hint, None);
    assert!(!m.session.signaling_up());
    m.session.stop_rejoining();
}

#[tokio::test]
async fn session_superseded_7016_gives_up_at_once_with_1180() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-peer"]);
    m.server_error(7016, "another connection resumed this membership", None);
    m.session.signaling_lost();
    let events = m.take_events();
    assert!(
        matches!(&events[..], [Event::Error { code, message, .. }]
            if *code == codes::NOT_CONNECTED && message.contains("7016")),
        "{events:?}"
    );
}

#[tokio::test]
async fn session_other_server_errors_are_still_reported() {
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-peer"]);
    m.server_error(7004, "rate limited", None);
    assert_eq!(
        m.take_events(),
        [Event::Error {
            peer: None,
            code: 7004,
            message: "rate limited".into()
        }]
    );
}

const NO_CLIENT: &str = "no client \"aa-gone\" in this session";

#[tokio::test]
async fn session_7008_after_member_left_is_only_logged() {
    let config = PeerConfig::new("ws://127.0.0.1:9");
    let clock = config.clock.clone();
    let mut m = Auth::with(config, &["aa-gone", "ab-kept"]);
    m.signaling(ServerMessage::PeerLeft {
        id: "aa-gone".into(),
    });
    assert_eq!(m.take_events(), [left("aa-gone")]);
    // A `reconnect` or candidate of ours crossed its departure.
    m.server_error(7008, NO_CLIENT, None);
    assert_eq!(m.take_events(), []);
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT);
    m.session.on_tick();
    assert_eq!(m.take_events(), []);
    assert!(m.session.signaling_up());
}

#[tokio::test]
async fn session_7008_overtaking_peer_left_is_only_logged() {
    let config = PeerConfig::new("ws://127.0.0.1:9");
    let clock = config.clock.clone();
    let mut m = Auth::with(config, &["aa-gone", "ab-kept"]);
    // The server writes its refusal at once; the `peer-left` it queued before follows.
    m.server_error(7008, NO_CLIENT, None);
    assert_eq!(m.take_events(), []);
    m.signaling(ServerMessage::PeerLeft {
        id: "aa-gone".into(),
    });
    assert_eq!(m.take_events(), [left("aa-gone")]);
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT);
    m.session.on_tick();
    assert_eq!(m.take_events(), []);
}

#[tokio::test]
async fn session_7008_no_member_leaving_is_reported_after_the_wait() {
    let config = PeerConfig::new("ws://127.0.0.1:9");
    let clock = config.clock.clone();
    let mut m = Auth::with(config, &["aa-peer"]);
    let reported = Event::Error {
        peer: None,
        code: 7008,
        message: NO_CLIENT.into(),
    };
    m.server_error(7008, NO_CLIENT, None);
    m.session.on_tick();
    assert_eq!(m.take_events(), [], "held while a departure may explain it");
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT - Duration::from_millis(1));
    m.session.on_tick();
    assert_eq!(m.take_events(), []);
    clock.advance(Duration::from_millis(1));
    m.session.on_tick();
    assert_eq!(m.take_events(), std::slice::from_ref(&reported));
    // Reported once.
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT);
    m.session.on_tick();
    assert_eq!(m.take_events(), []);
    // A departure long past explains nothing either.
    m.signaling(ServerMessage::PeerLeft {
        id: "aa-peer".into(),
    });
    assert_eq!(m.take_events(), [left("aa-peer")]);
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT);
    m.server_error(7008, NO_CLIENT, None);
    clock.advance(super::UNKNOWN_RECIPIENT_WAIT);
    m.session.on_tick();
    assert_eq!(m.take_events(), std::slice::from_ref(&reported));
}

#[tokio::test]
async fn session_verified_member_starting_pake_over_is_authenticated_again() {
    use crate::proto::pake::Handshake;
    let mut m = Auth::with(PeerConfig::new("ws://127.0.0.1:9"), &["aa-peer"]);
    // The member met us anew (it saw us leave and come back under our ID).
    let (handshake, msg) = Handshake::start("test-secret", "session", "aa-peer", ME);
    m.signal(
        "aa-peer",
        serde_json::json!({"kind": "pake", "msg": hex::encode(msg)}),
    );
    assert_eq!(m.take_events(), [left("aa-peer")]);
    let ours = m
        .signals_to("aa-peer")
        .into_iter()
        .find(|d| d["kind"] == "pake")
        .expect("our PAKE message answers");
    let key = handshake
        .finish(&hex::decode(ours["msg"].as_str().unwrap()).unwrap())
        .unwrap();
    // Another PAKE message while the new pair is not verified yet changes nothing.
    let (_, again) = Handshake::start("test-secret", "session", "aa-peer", ME);
    m.signal(
        "aa-peer",
        serde_json::json!({"kind": "pake", "msg": hex::encode(again)}),
    );
    assert!(m.signals_to("aa-peer").is_empty());
    assert_eq!(m.take_events(), []);
    let joiner = Joiner {
        id: "aa-peer",
        handshake: None,
        key: Some(key.clone()),
    };
    m.sealed(&joiner, "offer", b"v=0\r\n", &key);
    assert_eq!(
        m.take_events(),
        [Event::PeerJoined {
            peer: "aa-peer".into(),
            name: "name of aa-peer".into()
        }]
    );
}

/// Our session ([`ME`]) sharing with two connected members (stand-in connections): one
/// that only sends, `aa-fellow`, and a recipient, `ab-recipient`.
struct Fellows {
    session: Session,
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    conns: Vec<(&'static str, Uuid, mpsc::UnboundedReceiver<ConnCommand>)>,
    _signal_rx: mpsc::Receiver<ClientMessage>,
    _server_tx: mpsc::Sender<ServerMessage>,
}

const FELLOW: &str = "aa-fellow";
const REAL: &str = "ab-recipient";

impl Fellows {
    /// `REAL` declines `file_id`: the share of `job` completes with it alone.
    fn real_declines(&mut self, job: JobId, file_id: FileId) {
        self.declines(REAL, file_id);
        declined_by_real_only(job, file_id, &self.take_events());
    }

    /// `peer` declines `file_id`.
    fn declines(&mut self, peer: &'static str, file_id: FileId) {
        self.control(
            peer,
            ControlMessage::Decline {
                file_id,
                have: false,
            },
        );
    }

    /// `peer` fails to authenticate: a PAKE message without `msg` (refused with 6011).
    fn fails_auth(&mut self, peer: &str) {
        self.session.on_signaling(ServerMessage::Signal {
            from: peer.into(),
            data: serde_json::json!({"kind": "pake"}),
        });
    }

    fn new() -> Self {
        Self::with(&[FELLOW, REAL], &[FELLOW, REAL])
    }

    /// Our session with `members`, connected to those of them in `connected`.
    fn with(members: &[&'static str], connected: &[&'static str]) -> Self {
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (joined, signal_rx, server_tx) = joined_as(ME, members);
        let mut session = Session::new(
            Arc::new(PeerConfig::new("ws://127.0.0.1:9")),
            joined,
            test_code(),
            ev_tx,
        );
        let mut conns = Vec::new();
        for &id in connected {
            session.authenticate_for_test(id);
            let (tx, rx) = mpsc::unbounded_channel();
            let conn_id = Uuid::new_v4();
            session.links.get_mut(id).expect("a member").conn = Some(Conn {
                id: conn_id,
                handle: ConnHandle { tx },
            });
            session.on_conn_event(id.into(), conn_id, ConnEvent::ControlOpen(None));
            conns.push((id, conn_id, rx));
        }
        let mut fellows = Fellows {
            session,
            events,
            conns,
            _signal_rx: signal_rx,
            _server_tx: server_tx,
        };
        fellows.take_events();
        for id in connected {
            fellows.sent_to(id);
        }
        fellows
    }

    /// Share one 5-byte file with `audience` only: its upload job.
    fn share_only(&mut self, audience: &[&str]) -> JobId {
        let jobs = self.session.share_files(
            vec![PreparedFile {
                identity: FileIdentity {
                    size: 5,
                    modified: None,
                },
                path: "/nonexistent/peershare-test.bin".into(),
                name: "a.txt".into(),
                hash: Hash::of(b"hello"),
                tree_path: None,
                executable: false,
                text: false,
            }],
            super::ShareTree::default(),
            Audience::Only(audience.iter().map(|p| p.to_string()).collect()),
            Duration::from_secs(3600),
        );
        jobs[0]
    }

    /// The session's clock moves `by` forward and its timer fires.
    fn later(&mut self, by: Duration) {
        self.session.config.clock.advance(by);
        self.session.on_tick();
    }

    /// Share one 5-byte file with everyone: its upload job.
    fn share(&mut self) -> JobId {
        let identity = FileIdentity {
            size: 5,
            modified: None,
        };
        let path = "/nonexistent/peershare-test.bin".into();
        share_one(
            &mut self.session,
            path,
            "a.txt",
            Hash::of(b"hello"),
            identity,
        )
    }

    /// `peer`'s connection delivers `msg`.
    fn control(&mut self, peer: &'static str, msg: ControlMessage) {
        let conn_id = self
            .conns
            .iter()
            .find(|(id, ..)| *id == peer)
            .map(|(_, c, _)| *c)
            .expect("a connected member");
        self.session
            .on_conn_event(peer.into(), conn_id, ConnEvent::Control(msg));
    }

    fn hello(&mut self, peer: &'static str, send_only: bool) {
        let mut features = crate::proto::control::features();
        if send_only {
            features.push(super::links::FEATURE_SEND_ONLY.into());
        }
        self.control(
            peer,
            ControlMessage::Hello {
                version: crate::proto::control::CONTROL_VERSION,
                name: peer.into(),
                features,
            },
        );
    }

    /// The control messages sent to `peer` since the last call.
    fn sent_to(&mut self, peer: &str) -> Vec<ControlMessage> {
        let (_, _, rx) = self
            .conns
            .iter_mut()
            .find(|(id, ..)| *id == peer)
            .expect("a connected member");
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|c| match c {
                ConnCommand::Control(msg) => Some(msg),
                _ => None,
            })
            .collect()
    }

    fn offered_file(&mut self, peer: &str) -> Option<FileId> {
        self.sent_to(peer).into_iter().find_map(|m| match m {
            ControlMessage::Offer { file_id, .. } => Some(file_id),
            _ => None,
        })
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.session.flush_events();
        std::iter::from_fn(|| self.events.try_recv().ok())
            .flatten()
            .collect()
    }
}

/// The events of a one-file share whose only recipient, `REAL`, declined it.
fn declined_by_real_only(job_id: JobId, file_id: FileId, events: &[Event]) {
    let [
        Event::RecipientOutcome {
            job_id: j1,
            file_id: f1,
            peer,
            outcome: Outcome::Declined,
            bytes_sent: 0,
            ..
        },
        Event::UploadCompleted {
            job_id: j2,
            file_id: f2,
            outcomes,
            ..
        },
        Event::UploadGroupEnded {
            files: 1,
            completed: 1,
            failed: 0,
            cancelled: 0,
            ..
        },
    ] = events
    else {
        panic!("{events:#?}");
    };
    assert_eq!((*j1, *f1, peer.as_str()), (job_id, file_id, REAL));
    assert_eq!((*j2, *f2), (job_id, file_id));
    assert_eq!(
        outcomes.iter().collect::<Vec<_>>(),
        [(&REAL.to_string(), &Outcome::Declined)]
    );
}

#[tokio::test]
async fn session_send_only_hello_after_offer_takes_member_off_recipients() {
    let mut f = Fellows::new();
    let job = f.share();
    assert!(
        matches!(&f.take_events()[..], [Event::UploadStarted { job_id, .. }] if *job_id == job)
    );
    // The offer went to both before either `hello` came in.
    let file_id = f
        .offered_file(FELLOW)
        .expect("offered to the fellow sender");
    assert_eq!(f.offered_file(REAL), Some(file_id));
    f.hello(FELLOW, true);
    f.hello(REAL, false);
    // Whatever the fellow says about our file, it is no recipient.
    f.declines(FELLOW, file_id);
    assert_eq!(
        f.take_events(),
        [],
        "no outcome, no completion from a fellow sender"
    );
    let job_id = JobId::new();
    f.control(
        FELLOW,
        ControlMessage::Request {
            job_id,
            file_id,
            offset: 0,
        },
    );
    assert!(
        matches!(&f.sent_to(FELLOW)[..], [ControlMessage::Error { job_id: Some(j), code, .. }]
            if *j == job_id && *code == codes::NOT_PERMITTED),
        "a request of a fellow sender is refused"
    );
    assert!(!f.session.awaits_outcome_from(FELLOW));
    // The upload waits for the real recipient, and completes with it alone.
    f.real_declines(job, file_id);
}

#[tokio::test]
async fn session_send_only_member_gets_each_offer_once_and_is_never_waited_for() {
    let mut f = Fellows::new();
    f.hello(FELLOW, true);
    f.hello(REAL, false);
    let job = f.share();
    f.take_events();
    // For its information: it learns what we share.
    let file_id = f
        .offered_file(FELLOW)
        .expect("offered to the fellow sender");
    assert_eq!(f.offered_file(REAL), Some(file_id));
    // A new connection to it offers nothing again.
    f.session.offer_all_to(FELLOW);
    assert_eq!(f.sent_to(FELLOW), []);
    f.real_declines(job, file_id);
}

#[tokio::test]
async fn session_send_only_role_lists_feature_and_answers_no_offer() {
    let (ev_tx, mut events) = mpsc::unbounded_channel();
    let (joined, _signal_rx, _server_tx) = joined_as(ME, &[FELLOW]);
    let mut config = PeerConfig::new("ws://127.0.0.1:9");
    config.role = crate::peer::Role::SendOnly;
    let mut session = Session::new(Arc::new(config), joined, test_code(), ev_tx);
    session.authenticate_for_test(FELLOW);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = Uuid::new_v4();
    session.links.get_mut(FELLOW).expect("a member").conn = Some(Conn {
        id: conn_id,
        handle: ConnHandle { tx },
    });
    session.on_conn_event(FELLOW.into(), conn_id, ConnEvent::ControlOpen(None));
    let hello = std::iter::from_fn(|| rx.try_recv().ok()).find_map(|c| match c {
        ConnCommand::Control(ControlMessage::Hello { features, .. }) => Some(features),
        _ => None,
    });
    let mut expected = crate::proto::control::features();
    expected.push("send-only".into());
    assert_eq!(hello, Some(expected));
    // The other's offer is reported (who shares what) and left unanswered.
    let file_id = FileId::new();
    session.on_conn_event(
        FELLOW.into(),
        conn_id,
        ConnEvent::Control(ControlMessage::Offer {
            file_id,
            name: "b.txt".into(),
            size: 5,
            hash: Hash::of(b"hello").to_hex(),
            ttl_ms: 60_000,
            group: None,
            path: None,
            executable: false,
            text: false,
        }),
    );
    session.flush_events();
    let names: Vec<&str> = std::iter::from_fn(|| events.try_recv().ok())
        .flatten()
        .map(|e| e.name())
        .collect();
    assert_eq!(
        names,
        ["connection", "file-upload-started", "download-available"]
    );
    for result in [
        session.start_download(file_id, crate::peer::Save::InMemory),
        session.decline(file_id).map(|()| JobId::new()),
        session
            .decline_identical(file_id, "/nonexistent".into())
            .map(|()| JobId::new()),
    ] {
        assert_eq!(
            result.map_err(|e| e.code()).err(),
            Some(codes::NOT_PERMITTED)
        );
    }
    assert!(
        std::iter::from_fn(|| rx.try_recv().ok()).all(|c| !matches!(c, ConnCommand::Control(_))),
        "nothing answers the offer"
    );
    assert!(session.downloads.is_empty());
}

#[tokio::test]
async fn session_7008_for_recipient_that_left_ends_its_delivery_with_6003_not_an_error() {
    let mut s = Sender::new();
    // The recipient's connection closed as it left: as the answerer we ask it to
    // reconnect, and the server, which has removed it already, refuses that signal.
    s.conn_event(ConnEvent::Down("control channel closed".into()));
    assert!(matches!(
        s.signal_rx.try_recv(),
        Ok(ClientMessage::Signal { to, data }) if to == RECIPIENT && data["kind"] == "reconnect"
    ));
    s.session.on_signaling(ServerMessage::Error {
        code: 7008,
        message: format!("no client {RECIPIENT:?} in this session"),
        retry_after_ms: None,
    });
    s.peer_left();
    let lost = Event::ConnectionLost {
        peer: RECIPIENT.into(),
        reason: "control channel closed".into(),
    };
    assert_eq!(s.take_events(), [lost, left(RECIPIENT)]);
    // Its delivery ends in its own terminal state once the grace period is over.
    s.clock.advance(s.session.config.resume_grace);
    s.tick();
    let failed = Outcome::Failed {
        code: codes::PEER_GONE,
    };
    let events = s.take_events();
    assert!(
        matches!(&events[..], [
            Event::RecipientOutcome { peer, outcome, .. },
            Event::UploadFailed { code: codes::PEER_GONE, .. },
            Event::UploadGroupEnded { files: 1, completed: 0, failed: 1, cancelled: 0, .. },
        ] if peer == RECIPIENT && *outcome == failed),
        "{events:#?}"
    );
}

/// How a one-file upload ends: completed with these outcomes, or failed with this code.
enum End<'a> {
    Completed(&'a [(&'a str, Outcome)]),
    Failed(u16),
}

/// The events that end a one-file upload `job`: the `recipient-outcome`s `outcomes` (in
/// this order), then `upload-completed` or `upload-failed` as `end` says, then the end of
/// the share.
fn ends_with(events: &[Event], job: JobId, outcomes: &[(&str, Outcome)], end: End) {
    let (ends, tail) = events.split_at(outcomes.len());
    for (event, (who, expected)) in ends.iter().zip(outcomes) {
        assert!(
            matches!(event, Event::RecipientOutcome { job_id, peer, outcome, bytes_sent: 0, .. }
                if *job_id == job && peer == who && outcome == expected),
            "{events:#?}"
        );
    }
    match (tail, end) {
        (
            [
                Event::UploadCompleted {
                    job_id,
                    outcomes: o,
                    ..
                },
                Event::UploadGroupEnded {
                    files: 1,
                    completed: 1,
                    failed: 0,
                    ..
                },
            ],
            End::Completed(all),
        ) => {
            assert_eq!(*job_id, job);
            let expected: Vec<(String, Outcome)> = all
                .iter()
                .map(|(p, o)| (p.to_string(), o.clone()))
                .collect();
            let mut got: Vec<(String, Outcome)> =
                o.iter().map(|(p, o)| (p.clone(), o.clone())).collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            let mut expected = expected;
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, expected);
        }
        (
            [
                Event::UploadFailed {
                    job_id: Some(job_id),
                    code,
                    ..
                },
                Event::UploadGroupEnded {
                    files: 1,
                    completed: 0,
                    failed: 1,
                    ..
                },
            ],
            End::Failed(failed),
        ) => assert_eq!((*job_id, *code), (job, failed)),
        _ => panic!("{events:#?}"),
    }
}

const GONE: &str = "ac-gone";

#[tokio::test]
async fn session_targeted_recipient_gone_before_the_offer_fails_6003_and_the_upload_ends() {
    // GONE is named but never connected: the offer reaches REAL only.
    let mut f = Fellows::with(&[REAL, GONE], &[REAL]);
    let job = f.share_only(&[REAL, GONE]);
    f.take_events();
    let file_id = f.offered_file(REAL).expect("offered to REAL");
    f.declines(REAL, file_id);
    let events = f.take_events();
    assert!(
        matches!(&events[..], [Event::RecipientOutcome { peer, outcome: Outcome::Declined, .. }] if peer == REAL),
        "the upload waits for GONE: {events:#?}"
    );
    f.session
        .on_signaling(ServerMessage::PeerLeft { id: GONE.into() });
    f.later(f.session.config.resume_grace);
    let gone = Outcome::Failed {
        code: codes::PEER_GONE,
    };
    let all = [(REAL, Outcome::Declined), (GONE, gone.clone())];
    ends_with(&f.take_events(), job, &[(GONE, gone)], End::Completed(&all));
}

#[tokio::test]
async fn session_targeted_recipient_refused_fails_6011_and_the_upload_ends() {
    // GONE is named, stays in the session and fails to authenticate (a PAKE message
    // without `msg`): refused for good, so the share does not wait for it.
    let mut f = Fellows::with(&[REAL, GONE], &[REAL]);
    let job = f.share_only(&[REAL, GONE]);
    f.take_events();
    let file_id = f.offered_file(REAL).expect("offered to REAL");
    f.declines(REAL, file_id);
    f.take_events();
    f.fails_auth(GONE);
    let events = f.take_events();
    assert!(
        events
            .first()
            .is_some_and(auth_failed(GONE, codes::PEER_AUTH_FAILED)),
        "{events:#?}"
    );
    let refused = Outcome::Failed {
        code: codes::PEER_AUTH_FAILED,
    };
    let all = [(REAL, Outcome::Declined), (GONE, refused.clone())];
    ends_with(&events[1..], job, &[(GONE, refused)], End::Completed(&all));
    // Its leaving later records nothing more.
    f.session
        .on_signaling(ServerMessage::PeerLeft { id: GONE.into() });
    f.later(f.session.config.resume_grace);
    assert_eq!(f.take_events(), [], "one outcome per recipient");
}

#[tokio::test]
async fn session_share_naming_a_refused_client_fails_it_6011_at_once() {
    let mut f = Fellows::with(&[REAL, GONE], &[REAL]);
    f.fails_auth(GONE);
    let events = f.take_events();
    assert!(
        matches!(&events[..], [e] if auth_failed(GONE, codes::PEER_AUTH_FAILED)(e)),
        "{events:#?}"
    );
    let job = f.share_only(&[REAL, GONE]);
    let refused = Outcome::Failed {
        code: codes::PEER_AUTH_FAILED,
    };
    let events = f.take_events();
    assert!(
        matches!(&events[..], [
            Event::UploadStarted { .. },
            Event::RecipientOutcome { peer, outcome, .. },
        ] if peer == GONE && *outcome == refused),
        "{events:#?}"
    );
    let file_id = f.offered_file(REAL).expect("offered to REAL");
    f.declines(REAL, file_id);
    let all = [(REAL, Outcome::Declined), (GONE, refused)];
    ends_with(
        &f.take_events(),
        job,
        &[(REAL, Outcome::Declined)],
        End::Completed(&all),
    );
}

#[tokio::test]
async fn session_offer_expiry_fails_unreached_recipients_6001_and_ends_the_upload() {
    let mut f = Fellows::with(&[REAL, GONE], &[REAL]);
    let job = f.share_only(&[REAL, GONE]);
    f.take_events();
    f.later(Duration::from_secs(3599));
    assert_eq!(f.take_events(), [], "alive for an hour");
    f.later(Duration::from_secs(1));
    let expired = Outcome::Failed {
        code: codes::OFFER_EXPIRED,
    };
    // REAL got the offer and never asked; GONE was never reached.
    let outcomes = [(REAL, expired.clone()), (GONE, expired)];
    ends_with(
        &f.take_events(),
        job,
        &outcomes,
        End::Failed(codes::OFFER_EXPIRED),
    );
    f.later(Duration::from_secs(3600));
    assert_eq!(f.take_events(), [], "one terminal event");
}

#[tokio::test]
async fn session_offer_expiry_with_nobody_in_the_session_fails_the_upload_6001() {
    let mut f = Fellows::with(&[], &[]);
    let job = f.share();
    assert!(matches!(
        &f.take_events()[..],
        [Event::UploadStarted { .. }]
    ));
    f.later(Duration::from_secs(3600));
    ends_with(
        &f.take_events(),
        job,
        &[],
        End::Failed(codes::OFFER_EXPIRED),
    );
}

#[tokio::test]
async fn session_expired_offer_serves_a_started_job_and_refuses_new_ones_6001() {
    let mut s = Sender::new();
    s.clock.advance(Duration::from_secs(7200));
    s.tick();
    assert_eq!(s.take_events(), [], "a delivery under way goes on");
    // The recipient's connection came back: it resumes its job.
    s.control(ControlMessage::Request {
        job_id: s.download_job,
        file_id: s.file_id,
        offset: 2,
    });
    let commands = s.commands();
    assert_eq!(errors(&commands), []);
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, ConnCommand::OpenJob { .. })),
        "the resume is served"
    );
    // A job that never started is refused.
    let late = JobId::new();
    s.control(ControlMessage::Request {
        job_id: late,
        file_id: s.file_id,
        offset: 0,
    });
    assert_eq!(errors(&s.commands()), [(Some(late), codes::OFFER_EXPIRED)]);
    s.done();
    let delivered = s.delivered();
    let events = s.take_events();
    assert_eq!(events.first(), Some(&delivered), "{events:#?}");
    assert!(
        matches!(events[1], Event::UploadCompleted { .. }),
        "{events:#?}"
    );
}

#[tokio::test]
async fn session_offer_with_ttl_beyond_a_century_is_kept_a_century() {
    let mut f = Fellows::new();
    f.hello(FELLOW, false);
    let file_id = FileId::new();
    f.control(
        FELLOW,
        ControlMessage::Offer {
            file_id,
            name: "b.txt".into(),
            size: 5,
            hash: Hash::of(b"hello").to_hex(),
            ttl_ms: u64::MAX,
            group: None,
            path: None,
            executable: false,
            text: false,
        },
    );
    let century = 100 * 365 * 24 * 3600 * 1000;
    assert!(f.take_events().iter().any(|e| matches!(e,
            Event::DownloadAvailable { expires_in_ms, .. } if *expires_in_ms == century)),);
    f.later(Duration::from_secs(365 * 24 * 3600));
    let files = f.session.available_files();
    assert_eq!(files.len(), 1);
    assert!(files[0].expires_in_ms < century);
}

#[tokio::test]
async fn session_send_only_members_watch_follows_hellos_and_departures() {
    let mut f = Fellows::new();
    let watch = f.session.send_only_watch();
    assert!(watch.borrow().is_empty());
    f.hello(FELLOW, true);
    f.hello(REAL, false);
    assert_eq!(
        watch.borrow().iter().collect::<Vec<_>>(),
        [&FELLOW.to_string()]
    );
    // A named send-only member is no recipient a targeted share waits for.
    let job = f.share_only(&[FELLOW, REAL]);
    f.take_events();
    let file_id = f.offered_file(REAL).expect("offered to REAL");
    f.real_declines(job, file_id);
    f.session
        .on_signaling(ServerMessage::PeerLeft { id: FELLOW.into() });
    assert!(watch.borrow().is_empty());
}

#[tokio::test(start_paused = true)]
async fn session_leave_with_a_connection_that_never_closes_still_leaves() {
    let mut s = Sender::new();
    // The stand-in connection task never answers its close command (a task busy inside
    // the WebRTC stack): leaving waits a bounded time, then tells the server anyway.
    tokio::time::timeout(Duration::from_secs(60), s.session.shutdown())
        .await
        .expect("leaving does not hang");
    let close = s.commands();
    assert!(closes(&close), "the connection was asked to close");
    let mut left = false;
    while let Ok(msg) = s.signal_rx.try_recv() {
        left |= matches!(msg, ClientMessage::Leave);
    }
    assert!(left, "the server is told the peer left");
}
