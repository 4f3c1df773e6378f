//! The session task's handling of connection and signaling events, driven step by step
//! with a stand-in for the connection task (no WebRTC, no signaling server): the order in
//! which the two independent paths deliver is chosen by the test.

use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::links::{Conn, LEAVE_DRAIN};
use super::{PreparedFile, Session};
use crate::clock::Clock;
use crate::config::PeerConfig;
use crate::connection::{ConnCommand, ConnEvent, ConnHandle};
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
    fn new() -> Self {
        let (signal_tx, signal_rx) = mpsc::channel(64);
        let (server_tx, server_rx) = mpsc::channel(64);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let config = PeerConfig::new("ws://127.0.0.1:9");
        let clock = config.clock.clone();
        let joined = SignalingSession {
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
        };
        let mut session = Session::new(Arc::new(config), joined, ev_tx);
        let (tx, conn_rx) = mpsc::unbounded_channel();
        let conn_id = Uuid::new_v4();
        session
            .links
            .get_mut(RECIPIENT)
            .expect("the recipient is a member")
            .conn = Some(Conn {
            id: conn_id,
            handle: ConnHandle { tx },
        });
        session.on_conn_event(RECIPIENT.into(), conn_id, ConnEvent::ControlOpen(None));
        let upload_jobs = session.share_files(
            vec![PreparedFile {
                path: "/nonexistent/peershare-test.bin".into(),
                name: "file.bin".into(),
                identity: FileIdentity {
                    size: 5,
                    modified: None,
                },
                hash: Hash::of(b"hello"),
            }],
            Audience::Broadcast,
            Duration::from_secs(3600),
        );
        let mut sender = Sender {
            session,
            clock,
            events,
            conn_rx,
            conn_id,
            signal_rx,
            _server_tx: server_tx,
            upload_job: upload_jobs[0],
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
    assert_eq!(
        s.take_events(),
        [Event::PeerLeft {
            peer: RECIPIENT.into()
        }]
    );
    s.done();
    let events = s.take_events();
    assert!(events.contains(&s.delivered()), "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::UploadCompleted { job_id, .. } if *job_id == s.upload_job)),
        "{events:#?}"
    );
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
    s.take_events();
    s.conn_event(ConnEvent::Down("control channel closed".into()));
    assert!(s.session.draining.is_empty());
    assert_eq!(s.take_events(), []);
    assert!(s.signal_rx.try_recv().is_err(), "no reconnect request");
}

#[tokio::test]
async fn session_departed_peer_connection_silent_closed_after_leave_drain() {
    let mut s = Sender::new();
    s.peer_left();
    s.tick();
    assert!(!closes(&s.commands()));
    s.clock.advance(LEAVE_DRAIN);
    s.tick();
    assert!(closes(&s.commands()), "closed once the drain limit passed");
    assert!(s.session.draining.is_empty());
    // Whatever that connection delivers now is stale.
    s.take_events();
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
        session: "session".into(),
        client_id: ME.into(),
        peers: vec![peer("aa-relayed", true)],
        ice_servers: Vec::new(),
        tx: signal_tx,
        rx: server_rx,
    };
    let mut session = Session::new(Arc::new(PeerConfig::new("ws://127.0.0.1:9")), joined, ev_tx);
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
    let mut s = Sender::new();
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
