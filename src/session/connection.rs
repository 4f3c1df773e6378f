//! One task per remote peer: it owns the `RTCPeerConnection` and the control channel,
//! performs the offer/answer exchange and trickle ICE through signaling, and talks to the
//! peer task only through messages.

use std::sync::Arc;

use peershare_signaling::protocol::{CandidateInit, ClientMessage, IceServer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;
use webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

use crate::error::{Error, Result};
use crate::proto::batch::parse_batch_channel_label;
use crate::proto::control::{ControlMessage, DecodeError, parse_job_channel_label};
use crate::proto::ids::JobId;
use crate::proto::pake::{PairKey, SealKind};
use crate::rtc::path::{SelectedPath, selected_path};
use crate::rtc::{RtcChannel, RtcSettings, RtcStream, build_peer_connection};
use crate::transport::Channel;

/// Label of the control channel.
pub const CONTROL_LABEL: &str = "control";

/// What peershare peers put in signaling `data` (`docs/PROTOCOL.md`, "Signaling data of
/// peershare peers"): `pake`, a PAKE message; the offer, the answer and each ICE
/// candidate sealed with the pair's key (`sealed`), tagged with `conn`, the ID of the
/// connection attempt they belong to; `auth-failed`, the news that authentication failed;
/// and `reconnect`, a request to the offerer to replace a connection that died. A missing
/// `conn` (e.g. from a browser) means "the current connection".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum PeerSignal {
    Offer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<Uuid>,
        /// Missing is the same as not sealed with the pair's key (an authentication
        /// failure, not a malformed signal that would leave the pair waiting).
        #[serde(default)]
        sealed: String,
    },
    Answer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<Uuid>,
        /// Missing is the same as not sealed with the pair's key (an authentication
        /// failure, not a malformed signal that would leave the pair waiting).
        #[serde(default)]
        sealed: String,
    },
    Candidate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<Uuid>,
        /// Missing is the same as not sealed with the pair's key (an authentication
        /// failure, not a malformed signal that would leave the pair waiting).
        #[serde(default)]
        sealed: String,
    },
    Reconnect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<Uuid>,
    },
    /// The sender's SPAKE2 message, lowercase hex, and the largest SCTP packet it takes
    /// on a connection whose only path is loopback (missing: the stack's 1191 bytes).
    Pake {
        msg: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sctp_mtu: Option<u32>,
    },
    /// The sender refuses this pair (6011 authentication failed, 6012 code burnt).
    AuthFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
}

/// Signaling data of the remote peer for a connection, opened with the pair's key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Remote {
    Offer(String),
    Answer(String),
    Candidate(CandidateInit),
}

impl Remote {
    /// The opened plaintext of a sealed payload of `kind`; `None` if it does not parse.
    pub(crate) fn decode(kind: SealKind, plain: Vec<u8>) -> Option<Self> {
        match kind {
            SealKind::Offer => String::from_utf8(plain).ok().map(Remote::Offer),
            SealKind::Answer => String::from_utf8(plain).ok().map(Remote::Answer),
            SealKind::Candidate => serde_json::from_slice(&plain).ok().map(Remote::Candidate),
        }
    }
}

/// Commands from the peer task to a connection task.
pub(crate) enum ConnCommand {
    /// Signaling data the remote peer sent us for this connection, opened.
    Remote(Remote),
    /// The pair's key: until it is there, what we send through signaling waits.
    Key(PairKey),
    /// Send a control message (queued until the control channel is open).
    Control(ControlMessage),
    /// Open the data channel of a job (`job/<id>`) or a batch (`batch/<id>`).
    OpenJob {
        label: String,
        reply: oneshot::Sender<Result<RtcChannel>>,
    },
    /// Close the connection. With a reply channel the close is graceful: the control
    /// channel is closed first and its closing handshake awaited (bounded), so control
    /// messages sent before (a final `done`) reach the peer; then the reply is sent.
    Close(Option<oneshot::Sender<()>>),
}

/// Longest wait for a graceful close of the control channel.
const GRACEFUL_CLOSE: std::time::Duration = std::time::Duration::from_secs(3);

/// Longest a connection attempt may take from its start to an open control channel
/// (description exchange, ICE, DTLS, SCTP and the channel's own handshake). Setup takes
/// tens of milliseconds on a LAN and a few round trips on a long path (2.6 s at 200 ms);
/// ICE ends an attempt whose checks fail, but nothing else ended one whose answer or
/// handshake never came. Past this the attempt ends as failed, and the link's reconnect
/// (the offerer's backoff, the answerer's `reconnect` request) starts a new one.
const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the offerer holds an answer that lists no candidates, waiting for the
/// answerer's first trickled candidate so that both are applied together (see
/// [`Conn::hold_answer`]). The candidate normally follows the answer within a millisecond
/// on the same signaling path; the bound only matters for an answerer that sends none.
const ANSWER_CANDIDATE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Events from a connection task to the peer task.
pub(crate) enum ConnEvent {
    /// The control channel is open: offers may flow. Carries the selected path.
    ControlOpen(Option<SelectedPath>),
    Control(ControlMessage),
    ControlInvalid(DecodeError),
    /// The remote side opened the data channel of a job.
    JobChannel {
        job_id: JobId,
        channel: RtcStream,
    },
    /// The remote side opened the data channel of a batch.
    BatchChannel {
        batch_id: JobId,
        channel: RtcStream,
    },
    /// The connection failed or closed for good.
    Down(String),
}

/// Handle of a running connection task.
pub(crate) struct ConnHandle {
    pub tx: mpsc::UnboundedSender<ConnCommand>,
}

/// What the connection task needs to run.
pub(crate) struct ConnSetup {
    /// Our client ID.
    pub me: String,
    /// The pair's key, if known already (else it comes as [`ConnCommand::Key`]).
    pub key: Option<PairKey>,
    /// Our signals carry `conn` (not when answering a peer that sends none).
    pub tag_conn: bool,
    pub remote: String,
    /// ID of this connection attempt (chosen by the offerer).
    pub conn_id: Uuid,
    pub offerer: bool,
    pub settings: RtcSettings,
    pub ice_servers: Vec<IceServer>,
    pub signal_tx: mpsc::Sender<ClientMessage>,
    pub events: mpsc::UnboundedSender<(String, Uuid, ConnEvent)>,
}

enum RtcEvent {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
}

struct Handler(mpsc::UnboundedSender<RtcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(RtcEvent::Candidate(init));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(RtcEvent::State(state));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.0.send(RtcEvent::DataChannel(dc));
    }
}

/// Start the task for the connection to `setup.remote`.
pub(crate) fn spawn(setup: ConnSetup) -> ConnHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("conn", remote = %setup.remote, conn = %setup.conn_id);
    tokio::spawn(
        async move {
            let remote = setup.remote.clone();
            let conn_id = setup.conn_id;
            let events = setup.events.clone();
            let reason = match run(setup, rx).await {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::debug!(%reason, "connection task ended");
            let _ = events.send((remote, conn_id, ConnEvent::Down(reason)));
        }
        .instrument(span),
    );
    ConnHandle { tx }
}

struct Conn {
    me: String,
    key: Option<PairKey>,
    /// What waits for the key to be sealed and sent, in order.
    unsealed: Vec<(SealKind, Vec<u8>)>,
    tag_conn: bool,
    remote: String,
    conn_id: Uuid,
    pc: Arc<dyn PeerConnection>,
    /// The peer announced that it connects only through a relay.
    peer_relay_only: bool,
    signal_tx: mpsc::Sender<ClientMessage>,
    events: mpsc::UnboundedSender<(String, Uuid, ConnEvent)>,
    control: Option<Arc<RtcChannel>>,
    control_open: bool,
    queued: Vec<ControlMessage>,
    pending_candidates: Vec<RTCIceCandidateInit>,
    have_remote: bool,
    /// The answer, held until the answerer's first candidate arrives or this deadline
    /// passes (see [`Conn::hold_answer`]).
    held_answer: Option<(String, tokio::time::Instant)>,
}

enum ControlSignal {
    Open,
    Message(bytes::BytesMut),
    Closed,
}

async fn run(setup: ConnSetup, mut commands: mpsc::UnboundedReceiver<ConnCommand>) -> Result<()> {
    let (rtc_tx, mut rtc_rx) = mpsc::unbounded_channel();
    let pc = build_peer_connection(
        &setup.settings,
        &setup.ice_servers,
        Arc::new(Handler(rtc_tx)),
    )
    .await?;
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<ControlSignal>();
    let mut conn = Conn {
        me: setup.me,
        key: setup.key,
        unsealed: Vec::new(),
        tag_conn: setup.tag_conn,
        remote: setup.remote,
        conn_id: setup.conn_id,
        pc,
        peer_relay_only: setup.settings.peer_relay_only,
        signal_tx: setup.signal_tx,
        events: setup.events,
        control: None,
        control_open: false,
        queued: Vec::new(),
        pending_candidates: Vec::new(),
        have_remote: false,
        held_answer: None,
    };
    if setup.offerer {
        let dc = conn
            .pc
            .create_data_channel(CONTROL_LABEL, Some(RTCDataChannelInit::default()))
            .await
            .map_err(rtc_err)?;
        conn.attach_control(RtcChannel::spawn(dc, false), &ctl_tx);
        let offer = conn.pc.create_offer(None).await.map_err(rtc_err)?;
        conn.pc
            .set_local_description(offer.clone())
            .await
            .map_err(rtc_err)?;
        conn.send_sealed(SealKind::Offer, offer.sdp.into_bytes())
            .await;
    }
    // One timer for the whole attempt, polled only until the control channel opens.
    let setup_deadline = tokio::time::sleep(SETUP_TIMEOUT);
    tokio::pin!(setup_deadline);
    let result = loop {
        let held_until = conn.held_answer.as_ref().map(|(_, until)| *until);
        tokio::select! {
            () = &mut setup_deadline, if !conn.control_open => {
                break Err(Error::ConnectionFailed(format!(
                    "the connection did not open within {} s",
                    SETUP_TIMEOUT.as_secs()
                )));
            }
            () = async {
                match held_until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = conn.apply_held_answer().await {
                    break Err(e);
                }
            }
            cmd = commands.recv() => match cmd {
                None | Some(ConnCommand::Close(None)) => break Ok(()),
                Some(ConnCommand::Close(Some(done))) => {
                    if let Some(control) = conn.control.clone() {
                        control.flush(GRACEFUL_CLOSE).await;
                        control.close().await;
                        let _ = tokio::time::timeout(GRACEFUL_CLOSE, control.wait_closed()).await;
                    }
                    let _ = conn.pc.close().await;
                    let _ = done.send(());
                    break Ok(());
                }
                Some(cmd) => {
                    if let Err(e) = conn.on_command(cmd).await {
                        break Err(e);
                    }
                }
            },
            Some(ev) = rtc_rx.recv() => {
                if let Some(reason) = conn.on_rtc(ev, &ctl_tx).await {
                    break Err(Error::ConnectionFailed(reason));
                }
            }
            Some(sig) = ctl_rx.recv() => {
                if let Some(reason) = conn.on_control(sig).await {
                    break Err(Error::ConnectionFailed(reason));
                }
            }
        }
    };
    if result.is_err() {
        // Control messages received before the failure still count (a final `done`): a
        // failure event may have won the `select!` over them, so deliver them before the
        // `Down` that follows.
        while let Ok(sig) = ctl_rx.try_recv() {
            if let ControlSignal::Message(data) = sig {
                conn.deliver_control(&data);
            }
        }
    }
    let _ = conn.pc.close().await;
    result
}

/// Whether an SDP lists ICE candidates.
fn sdp_lists_candidates(sdp: &str) -> bool {
    sdp.lines().any(|l| l.starts_with("a=candidate:"))
}

/// `sdp` with `candidates` added as `a=candidate:` lines at the end of its media section;
/// `None` when there are none to add or the SDP has not exactly one media section (then
/// they are added one by one after it).
fn sdp_with_candidates(sdp: &str, candidates: &[RTCIceCandidateInit]) -> Option<String> {
    if candidates.is_empty() || sdp.lines().filter(|l| l.starts_with("m=")).count() != 1 {
        return None;
    }
    let mut out = sdp.trim_end_matches(['\r', '\n']).to_string();
    for c in candidates {
        let line = c.candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() || line.contains(['\r', '\n']) {
            return None;
        }
        out.push_str("\r\na=");
        if !line.starts_with("candidate:") {
            out.push_str("candidate:");
        }
        out.push_str(line);
    }
    out.push_str("\r\n");
    Some(out)
}

fn rtc_err(e: webrtc::error::Error) -> Error {
    Error::ConnectionFailed(e.to_string())
}

impl Conn {
    /// Seal and send signaling data, or keep it until the key is there.
    async fn send_sealed(&mut self, kind: SealKind, plain: Vec<u8>) {
        let Some(key) = &self.key else {
            self.unsealed.push((kind, plain));
            return;
        };
        let conn = self.tag_conn.then_some(self.conn_id);
        let sealed = key.seal(kind, &self.me, &self.remote, conn, &plain);
        let data = match kind {
            SealKind::Offer => PeerSignal::Offer { conn, sealed },
            SealKind::Answer => PeerSignal::Answer { conn, sealed },
            SealKind::Candidate => PeerSignal::Candidate { conn, sealed },
        };
        self.signal(data).await;
    }

    async fn signal(&self, data: PeerSignal) {
        match serde_json::to_value(&data) {
            Ok(value) => {
                let _ = self
                    .signal_tx
                    .send(ClientMessage::Signal {
                        to: self.remote.clone(),
                        data: value,
                    })
                    .await;
            }
            Err(e) => tracing::warn!("cannot encode signal: {e}"),
        }
    }

    fn emit(&self, event: ConnEvent) {
        let _ = self.events.send((self.remote.clone(), self.conn_id, event));
    }

    fn attach_control(
        &mut self,
        channel: RtcChannel,
        ctl_tx: &mpsc::UnboundedSender<ControlSignal>,
    ) {
        let channel = Arc::new(channel);
        self.control = Some(channel.clone());
        let tx = ctl_tx.clone();
        tokio::spawn(async move {
            if channel.wait_open().await.is_ok() {
                let _ = tx.send(ControlSignal::Open);
                while let Some((_, data)) = channel.recv_message().await {
                    if tx.send(ControlSignal::Message(data)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(ControlSignal::Closed);
        });
    }

    async fn on_command(&mut self, cmd: ConnCommand) -> Result<()> {
        match cmd {
            ConnCommand::Remote(data) => self.on_remote_signal(data).await,
            ConnCommand::Key(key) => {
                self.key = Some(key);
                for (kind, plain) in std::mem::take(&mut self.unsealed) {
                    self.send_sealed(kind, plain).await;
                }
                Ok(())
            }
            ConnCommand::Control(msg) => {
                self.send_control(msg).await;
                Ok(())
            }
            ConnCommand::OpenJob { label, reply } => {
                let result = self
                    .pc
                    .create_data_channel(&label, Some(RTCDataChannelInit::default()))
                    .await
                    .map(|dc| RtcChannel::spawn(dc, false))
                    .map_err(rtc_err);
                let _ = reply.send(result);
                Ok(())
            }
            ConnCommand::Close(_) => Ok(()),
        }
    }

    async fn send_control(&mut self, msg: ControlMessage) {
        match (&self.control, self.control_open) {
            (Some(control), true) => {
                if control.send_text(&msg.encode()).await.is_err() {
                    tracing::debug!("control channel closed while sending");
                }
            }
            _ => self.queued.push(msg),
        }
    }

    async fn on_remote_signal(&mut self, data: Remote) -> Result<()> {
        match data {
            Remote::Offer(sdp) => {
                let offer = RTCSessionDescription::offer(sdp).map_err(rtc_err)?;
                self.pc
                    .set_remote_description(offer)
                    .await
                    .map_err(rtc_err)?;
                self.remote_description_set().await;
                let answer = self.pc.create_answer(None).await.map_err(rtc_err)?;
                self.pc
                    .set_local_description(answer.clone())
                    .await
                    .map_err(rtc_err)?;
                self.send_sealed(SealKind::Answer, answer.sdp.into_bytes())
                    .await;
            }
            Remote::Answer(sdp) => {
                if !self.hold_answer(&sdp) {
                    self.apply_answer(sdp).await?;
                }
            }
            Remote::Candidate(candidate) => {
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                    username_fragment: candidate.username_fragment,
                    ..Default::default()
                };
                if self.have_remote {
                    if let Err(e) = self.pc.add_ice_candidate(init).await {
                        tracing::debug!("ignoring remote candidate: {e}");
                    }
                } else {
                    self.pending_candidates.push(init);
                    if self.held_answer.is_some() {
                        self.apply_held_answer().await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether to hold the answer `sdp` back instead of applying it now: it lists no
    /// candidates and none has arrived yet.
    ///
    /// Why: the answerer starts its connectivity checks as soon as it has the offer and a
    /// local candidate, and its first check reaches us before the candidate it comes from,
    /// which travels through signaling after the answer. Applied alone, the answer starts
    /// our ICE agent, the check makes it learn that address as a peer-reflexive candidate,
    /// and the signaled host candidate for the same address arrives a moment later as a
    /// second candidate. `rtc-ice` 0.21.1 matches every later response from that address to
    /// the first (peer-reflexive) one, so the host pair never succeeds, and a pair with a
    /// peer-reflexive end is only nominated after `prflx_acceptance_min_wait` (1 s): join →
    /// first byte took ~1.1 s in 4–8 of 30 fresh pairs on loopback (docs/PERFORMANCE.md,
    /// "Connection setup: the peer-reflexive stall"). Applying the answer together with the
    /// first candidate (inside the SDP, so that both are known before the agent starts)
    /// closes that window.
    fn hold_answer(&mut self, sdp: &str) -> bool {
        if !self.pending_candidates.is_empty() || sdp_lists_candidates(sdp) {
            return false;
        }
        let until = tokio::time::Instant::now() + ANSWER_CANDIDATE_WAIT;
        self.held_answer = Some((sdp.to_string(), until));
        true
    }

    /// Apply the held answer, if any, with the candidates that arrived meanwhile.
    async fn apply_held_answer(&mut self) -> Result<()> {
        match self.held_answer.take() {
            Some((sdp, until)) => {
                let held = ANSWER_CANDIDATE_WAIT
                    .saturating_sub(until.saturating_duration_since(tokio::time::Instant::now()));
                tracing::debug!(
                    held_ms = held.as_secs_f64() * 1000.0,
                    candidates = self.pending_candidates.len(),
                    "applying the held answer"
                );
                self.apply_answer(sdp).await
            }
            None => Ok(()),
        }
    }

    /// Apply the answer `sdp`, with the candidates received so far written into it.
    async fn apply_answer(&mut self, sdp: String) -> Result<()> {
        let sdp = match sdp_with_candidates(&sdp, &self.pending_candidates) {
            Some(merged) => {
                self.pending_candidates.clear();
                merged
            }
            None => sdp,
        };
        let answer = RTCSessionDescription::answer(sdp).map_err(rtc_err)?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(rtc_err)?;
        self.remote_description_set().await;
        Ok(())
    }

    async fn remote_description_set(&mut self) {
        self.have_remote = true;
        for init in std::mem::take(&mut self.pending_candidates) {
            if let Err(e) = self.pc.add_ice_candidate(init).await {
                tracing::debug!("ignoring remote candidate: {e}");
            }
        }
    }

    async fn on_rtc(
        &mut self,
        ev: RtcEvent,
        ctl_tx: &mpsc::UnboundedSender<ControlSignal>,
    ) -> Option<String> {
        match ev {
            RtcEvent::Candidate(init) => {
                let candidate = CandidateInit {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                match serde_json::to_vec(&candidate) {
                    Ok(plain) => self.send_sealed(SealKind::Candidate, plain).await,
                    Err(e) => tracing::warn!("cannot encode a candidate: {e}"),
                }
            }
            RtcEvent::State(state) => {
                tracing::debug!(%state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Failed => return Some("ICE failed".into()),
                    RTCPeerConnectionState::Closed => return Some("closed by peer".into()),
                    _ => {}
                }
            }
            RtcEvent::DataChannel(dc) => {
                let label = dc.label().await.unwrap_or_default();
                if label == CONTROL_LABEL && self.control.is_none() {
                    self.attach_control(RtcChannel::spawn(dc, true), ctl_tx);
                } else if let Some(job_id) = parse_job_channel_label(&label) {
                    self.emit(ConnEvent::JobChannel {
                        job_id,
                        channel: RtcStream::new(dc),
                    });
                } else if let Some(batch_id) = parse_batch_channel_label(&label) {
                    self.emit(ConnEvent::BatchChannel {
                        batch_id,
                        channel: RtcStream::new(dc),
                    });
                } else {
                    tracing::warn!(%label, "closing unexpected data channel");
                    let _ = dc.close().await;
                }
            }
        }
        None
    }

    async fn on_control(&mut self, sig: ControlSignal) -> Option<String> {
        match sig {
            ControlSignal::Open => {
                self.control_open = true;
                for msg in std::mem::take(&mut self.queued) {
                    self.send_control(msg).await;
                }
                let path = selected_path(self.pc.as_ref(), self.peer_relay_only).await;
                tracing::info!(?path, "control channel open");
                self.emit(ConnEvent::ControlOpen(path));
            }
            ControlSignal::Message(data) => self.deliver_control(&data),
            ControlSignal::Closed => return Some("control channel closed".into()),
        }
        None
    }

    /// Decode a received control message and hand it to the session task.
    fn deliver_control(&self, data: &[u8]) {
        match ControlMessage::decode(data) {
            Ok(msg) => self.emit(ConnEvent::Control(msg)),
            Err(e) => self.emit(ConnEvent::ControlInvalid(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\na=sctp-port:5000\r\n";

    fn candidate(line: &str) -> RTCIceCandidateInit {
        RTCIceCandidateInit {
            candidate: line.into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connection_setup_never_answered_ends_failed_after_the_setup_timeout() {
        // An offerer whose pair key never comes: its offer waits, nothing answers, and
        // ICE never starts, so nothing but the setup deadline ends the attempt.
        let (signal_tx, mut signal_rx) = mpsc::channel(64);
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let conn_id = Uuid::new_v4();
        let _handle = spawn(ConnSetup {
            me: "me".into(),
            key: None,
            tag_conn: true,
            remote: "peer".into(),
            conn_id,
            offerer: true,
            settings: RtcSettings {
                bind: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                ..RtcSettings::default()
            },
            ice_servers: Vec::new(),
            signal_tx,
            events,
        });
        let (remote, id, event) = tokio::time::timeout(4 * SETUP_TIMEOUT, events_rx.recv())
            .await
            .expect("the attempt ends")
            .expect("the connection's last event");
        assert_eq!((remote.as_str(), id), ("peer", conn_id));
        let ConnEvent::Down(reason) = event else {
            panic!("expected the connection to end");
        };
        assert!(reason.contains("did not open within 30 s"), "{reason}");
        assert!(signal_rx.try_recv().is_err(), "nothing unsealed was sent");
    }

    #[test]
    fn sdp_with_candidates_one_media_section_appends_candidate_lines() {
        let host = "candidate:1 1 udp 2130706431 127.0.0.1 40966 typ host";
        let merged = sdp_with_candidates(ANSWER, &[candidate(host)]).unwrap();
        assert!(merged.starts_with(ANSWER), "{merged}");
        assert!(merged.ends_with(&format!("\r\na={host}\r\n")), "{merged}");
        assert!(sdp_lists_candidates(&merged));
        assert!(!sdp_lists_candidates(ANSWER));
        // The SDP still parses, with the candidate in it.
        assert!(RTCSessionDescription::answer(merged).is_ok());
    }

    #[test]
    fn sdp_with_candidates_nothing_to_add_or_two_sections_returns_none() {
        assert_eq!(sdp_with_candidates(ANSWER, &[]), None);
        let two = format!("{ANSWER}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        let host = candidate("candidate:1 1 udp 2130706431 127.0.0.1 40966 typ host");
        assert_eq!(sdp_with_candidates(&two, std::slice::from_ref(&host)), None);
        // An end-of-candidates marker (empty) is left to add_ice_candidate.
        assert_eq!(sdp_with_candidates(ANSWER, &[candidate("")]), None);
    }
}
