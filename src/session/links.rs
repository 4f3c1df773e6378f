//! Links to the other peers: presence from signaling, one connection task per peer,
//! routing of signaling data to the right connection attempt, and replacing dead
//! connections (the offerer reconnects with backoff; the answerer asks it to).

use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage};
use tokio::time::Instant;
use uuid::Uuid;

use super::connection::{self, ConnCommand, ConnEvent, ConnHandle, ConnSetup, PeerSignal, Remote};
use super::{Phase, Session};
use crate::error::codes;
use crate::events::Event;
use crate::proto::control::{CONTROL_VERSION, ControlMessage, features};
use crate::proto::pake::{AuthError, Handshake, PairKey, SealKind};
use crate::proto::rejoin::doubling;
use crate::rtc::RtcSettings;

/// A live connection attempt.
pub(crate) struct Conn {
    pub id: Uuid,
    pub handle: ConnHandle,
}

impl Conn {
    /// Tell its task to end at once, as a failure would (no graceful close).
    pub(crate) fn close(&self) {
        let _ = self.handle.tx.send(ConnCommand::Close(None));
    }
}

/// Where the authentication of a peer stands (see `crate::proto::pake`).
pub(crate) enum Auth {
    /// Our PAKE message went out; the peer's has not arrived.
    Waiting(Handshake),
    /// The PAKE gave a key. `verified` once a session description of the peer carried a
    /// valid MAC: the peer knows the secret and its DTLS fingerprint is authentic.
    Keyed { key: PairKey, verified: bool },
    /// Failed for good: no connection is made with this client. `code` says why (6011
    /// authentication failed, 6012 code burnt).
    Failed { code: u16 },
}

impl Auth {
    pub(crate) fn verified(&self) -> bool {
        matches!(self, Auth::Keyed { verified: true, .. })
    }

    /// The code this client was refused with, if it was.
    pub(crate) fn refusal(&self) -> Option<u16> {
        match self {
            Auth::Failed { code } => Some(*code),
            _ => None,
        }
    }

    fn key(&self) -> Option<&PairKey> {
        match self {
            Auth::Keyed { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Another client of the session (a member once `auth` is verified).
pub(crate) struct Link {
    pub auth: Auth,
    pub name: String,
    /// The peer announced at join that it uses only relay candidates.
    pub relay_only: bool,
    /// The peer's PAKE message announced that it takes SCTP packets of
    /// [`crate::rtc::LOOPBACK_SCTP_MTU`] bytes.
    pub large_packets: bool,
    pub conn: Option<Conn>,
    pub control_open: bool,
    /// Offerer only: when to try a new connection.
    pub retry_at: Option<Instant>,
    pub attempts: u32,
    /// Control messages waiting for the control channel (sent in order once it opens).
    pub outbox: Vec<ControlMessage>,
    /// The peer's `hello` announced `block-hashes`: it answers `hashes-request`.
    pub block_hashes: bool,
    /// The peer's `hello` announced `tree`: it takes `dirs` messages.
    pub tree: bool,
    /// The peer's `hello` announced `batch`: it answers `batch-request`.
    pub batch: bool,
    /// The peer's `hello` announced `send-only`: it only shares files, and is no
    /// recipient of ours (see `Session::not_a_recipient`).
    pub send_only: bool,
}

/// The `hello` feature of a peer that only sends (docs/PROTOCOL.md, "Peers that only
/// send").
pub(crate) const FEATURE_SEND_ONLY: &str = "send-only";

/// The pair key of an authenticated member that left (see `Session::left_keys`).
pub(crate) struct LeftKey {
    key: PairKey,
    large_packets: bool,
    since: Instant,
}

/// The connection of a peer that left the session, kept open until it ends by itself so
/// that the control messages the peer sent before leaving are still processed.
pub(crate) struct Draining {
    pub conn: Conn,
    /// When it is closed at the latest.
    pub until: Instant,
    /// The peer was authenticated: its `PeerLeft` event follows the end of the draining,
    /// after the outcomes it sent before leaving.
    pub announce: bool,
}

/// Most other clients of a session we keep track of (the signaling server's default
/// limit is 32 members per session).
const MAX_MEMBERS: usize = 1024;

/// Most control messages kept for a peer while its connection is down.
const OUTBOX_LIMIT: usize = 4096;

/// Longest time the connection of a peer that left is read from after its `peer-left`. A
/// peer that leaves gracefully had every control message acknowledged and closed its
/// control channel before it told the signaling server, so the connection normally ends
/// at once; this bounds the wait for one that vanished without closing.
pub(super) const LEAVE_DRAIN: Duration = Duration::from_secs(5);

/// Delay before reconnect attempt `n` (0-based): at once, then 0.5, 1, 2, 4 s, … 5 s.
fn backoff(attempt: u32) -> Duration {
    doubling(attempt, Duration::from_millis(500), Duration::from_secs(5))
}

impl Session {
    /// The features our `hello` lists: the protocol's, and `send-only` if that is our role.
    pub(super) fn hello_features(&self) -> Vec<String> {
        let mut all = features();
        if self.send_only() {
            all.push(FEATURE_SEND_ONLY.to_string());
        }
        all
    }

    /// Whether we make the offers to `peer` (the smaller client ID does; no glare).
    pub(super) fn offerer_for(&self, peer: &str) -> bool {
        self.me.as_str() < peer
    }

    pub(super) fn add_peer(&mut self, info: PeerInfo) {
        if info.id == self.me || self.links.contains_key(&info.id) {
            return;
        }
        // The signaling server announces the members; a hostile one could announce
        // without end.
        if self.links.len() >= MAX_MEMBERS {
            tracing::warn!(peer = %info.id, "too many members announced; ignoring one more");
            return;
        }
        self.departed.remove(&info.id);
        // Back under the same ID before its old connection was drained: that one ends
        // (and its departure is announced) before the new member appears.
        self.end_draining(&info.id);
        // A member that left within the grace period and comes back under its client ID
        // rejoined after losing signaling (the server gives an ID back only to the
        // client it was issued to): our pair key still stands, and its next session
        // description proves it knows it. Every other pair runs the PAKE first; a burnt
        // code admits nobody new.
        let grace = self.config.resume_grace;
        let now = self.config.clock.now();
        let kept = self
            .left_keys
            .remove(&info.id)
            .filter(|k| now.duration_since(k.since) < grace);
        let large_packets = kept.as_ref().is_some_and(|k| k.large_packets);
        let restored = kept.is_some();
        let auth = if let Some(kept) = kept {
            Auth::Keyed {
                key: kept.key,
                verified: false,
            }
        } else if self.burnt {
            Auth::Failed {
                code: codes::CODE_BURNT,
            }
        } else {
            let (handshake, msg) =
                Handshake::start(self.code.secret(), self.code.route(), &self.me, &info.id);
            self.send_signal(
                &info.id,
                &PeerSignal::Pake {
                    msg: hex::encode(msg),
                    // rtc-sctp reads packets of up to 8192 bytes whatever its own MTU.
                    sctp_mtu: Some(crate::rtc::LOOPBACK_SCTP_MTU),
                },
            );
            Auth::Waiting(handshake)
        };
        let failed = matches!(auth, Auth::Failed { .. });
        let link = Link {
            auth,
            name: info.name,
            relay_only: info.relay_only,
            large_packets,
            conn: None,
            control_open: false,
            retry_at: None,
            attempts: 0,
            outbox: Vec::new(),
            block_hashes: false,
            batch: false,
            tree: false,
            send_only: false,
        };
        self.links.insert(info.id.clone(), link);
        self.set_send_only(&info.id, false);
        if failed {
            self.refuse_peer(
                &info.id,
                codes::CODE_BURNT,
                "the code is burnt".into(),
                true,
            );
        }
        if restored && self.offerer_for(&info.id) {
            tracing::info!(peer = %info.id, "a member is back under its client ID; reconnecting");
            let conn = self.spawn_conn(&info.id, Uuid::new_v4(), true, true);
            if let Some(link) = self.links.get_mut(&info.id) {
                link.conn = Some(conn);
            }
        }
        // The offerer builds its connection once the peer's PAKE message is in
        // (`on_pake`): it says which SCTP packets the peer takes.
    }

    /// Send signaling data to `peer` (dropped if the signaling queue is full, as a lost
    /// frame would be).
    pub(super) fn send_signal(&self, peer: &str, data: &PeerSignal) {
        if let Ok(data) = serde_json::to_value(data) {
            let _ = self.signal_tx.try_send(ClientMessage::Signal {
                to: peer.to_string(),
                data,
            });
        }
    }

    /// The transport settings for a connection to `peer`: ours, plus what it announced
    /// when it joined.
    pub(super) fn conn_settings(&self, peer: &str) -> RtcSettings {
        RtcSettings {
            peer_relay_only: self.links.get(peer).is_some_and(|l| l.relay_only),
            peer_large_packets: self.links.get(peer).is_some_and(|l| l.large_packets),
            ..self.config.rtc.clone()
        }
    }

    /// Start a connection task. `tag_conn`: our signals carry the attempt's ID (always,
    /// unless answering a peer that sends none).
    fn spawn_conn(&self, peer: &str, id: Uuid, offerer: bool, tag_conn: bool) -> Conn {
        let handle = connection::spawn(ConnSetup {
            tag_conn,
            me: self.me.clone(),
            key: self.links.get(peer).and_then(|l| l.auth.key().cloned()),
            remote: peer.to_string(),
            conn_id: id,
            offerer,
            settings: self.conn_settings(peer),
            ice_servers: self.ice_servers.clone(),
            signal_tx: self.signal_tx.clone(),
            events: self.conn_tx.clone(),
        });
        Conn { id, handle }
    }

    /// Send a control message to `peer`, or keep it until its control channel is open.
    pub(super) fn send_control(&mut self, peer: &str, msg: ControlMessage) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        match (&link.conn, link.control_open) {
            (Some(conn), true) => {
                let _ = conn.handle.tx.send(ConnCommand::Control(msg));
            }
            _ if link.outbox.len() < OUTBOX_LIMIT => link.outbox.push(msg),
            _ => tracing::warn!(%peer, "control outbox full; dropping a message"),
        }
    }

    /// Whether the control channel to `peer` is up.
    pub(super) fn is_connected(&self, peer: &str) -> bool {
        self.links.get(peer).is_some_and(|l| l.control_open)
    }

    pub(super) fn on_signaling(&mut self, msg: ServerMessage) {
        match msg {
            // A client is announced as joined once it authenticates.
            ServerMessage::PeerJoined { peer } => self.add_peer(peer),
            ServerMessage::PeerLeft { id } => self.peer_left(&id),
            ServerMessage::Signal { from, data } => {
                let kind = data.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
                match serde_json::from_value(data) {
                    Ok(signal) => self.on_peer_signal(&from, signal),
                    Err(e) => self.on_malformed_signal(&from, kind.as_deref(), &e.to_string()),
                }
            }
            ServerMessage::Error {
                code,
                message,
                retry_after_ms,
            } => self.on_server_error(code, message, retry_after_ms),
            // Renewed TURN credentials: new connections use them.
            ServerMessage::IceServers { ice_servers } => self.ice_servers = ice_servers,
            ServerMessage::Welcome { .. } | ServerMessage::Pong => {}
        }
    }

    /// Signaling data of a known `kind` whose fields do not parse is treated as that kind
    /// at its worst (docs/PROTOCOL.md, "Flow", rule 4): a malformed PAKE message fails a
    /// pair still waiting for one (a later one is ignored, as any second one); a malformed
    /// offer or answer fails the pair, as one that does not open; a malformed candidate
    /// fails a pair not yet authenticated and is dropped after. Other kinds are ignored.
    fn on_malformed_signal(&mut self, from: &str, kind: Option<&str>, why: &str) {
        let Some(link) = self.links.get(from) else {
            tracing::debug!(%from, "malformed signal from a client that is not in the session");
            return;
        };
        let fails = match kind {
            Some("pake") => matches!(link.auth, Auth::Waiting(_)),
            Some("offer" | "answer") => !matches!(link.auth, Auth::Failed { .. }),
            Some("candidate") => !matches!(link.auth, Auth::Failed { .. }) && !link.auth.verified(),
            _ => false,
        };
        if !fails {
            tracing::debug!(%from, ?kind, "ignoring malformed signal: {why}");
            return;
        }
        tracing::warn!(%from, ?kind, "malformed signaling data: {why}");
        let message = format!("its {} message is malformed", kind.unwrap_or("signaling"));
        self.refuse_peer(from, codes::PEER_AUTH_FAILED, message, true);
    }

    fn on_peer_signal(&mut self, from: &str, signal: PeerSignal) {
        let offerer = self.offerer_for(from);
        let Some(link) = self.links.get(from) else {
            tracing::debug!(%from, "signal from a client that is not in the session");
            return;
        };
        if matches!(link.auth, Auth::Failed { .. }) {
            tracing::debug!(%from, "ignoring a signal of a client that failed to authenticate");
            return;
        }
        let current = link.conn.as_ref().map(|c| c.id);
        let (kind, conn, sealed) = match signal {
            PeerSignal::Pake { msg, sctp_mtu } => return self.on_pake(from, &msg, sctp_mtu),
            PeerSignal::AuthFailed { code } => return self.on_auth_failed_signal(from, code),
            PeerSignal::Reconnect { conn: asked } => {
                // The answerer lost the connection `asked`; replace it now if it is ours.
                if offerer && current.is_some() && (asked.is_none() || asked == current) {
                    self.connection_lost(from, "the peer lost the connection".into());
                }
                return;
            }
            PeerSignal::Offer { conn, sealed } => (SealKind::Offer, conn, sealed),
            PeerSignal::Answer { conn, sealed } => (SealKind::Answer, conn, sealed),
            PeerSignal::Candidate { conn, sealed } => (SealKind::Candidate, conn, sealed),
        };
        // An offer for a connection we do not have starts a new attempt (it replaces ours).
        let new_attempt = kind == SealKind::Offer
            && !offerer
            && match conn {
                Some(id) => current != Some(id),
                None => current.is_none(),
            };
        if !new_attempt && conn.is_some() && conn != current {
            tracing::debug!(%from, ?conn, "dropping signal of a stale connection");
            return;
        }
        let opened = match link.auth.key() {
            Some(key) => key.open(kind, from, &self.me, conn, &sealed),
            None => Err(AuthError::BadSeal),
        };
        let plain = match opened {
            Ok(plain) => plain,
            // Anyone on the signaling path can inject data: once the peer has proven
            // itself, a stray candidate is dropped, not held against it.
            Err(e) if kind == SealKind::Candidate && link.auth.verified() => {
                tracing::debug!(%from, "dropping a candidate that does not open: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(%from, ?kind, "signaling data not authenticated: {e}");
                let message = "its connection setup is not sealed with the code's secret: \
                               a different code, or someone altered the setup"
                    .to_string();
                self.refuse_peer(from, codes::PEER_AUTH_FAILED, message, true);
                return;
            }
        };
        let Some(remote) = Remote::decode(kind, plain) else {
            tracing::warn!(%from, ?kind, "dropping sealed signaling data that does not parse");
            return;
        };
        if kind != SealKind::Candidate {
            self.peer_verified(from);
        }
        if new_attempt {
            self.replace_conn_by_peer(from, conn, remote);
        } else if let Some(c) = self.links.get(from).and_then(|l| l.conn.as_ref()) {
            let _ = c.handle.tx.send(ConnCommand::Remote(remote));
        }
    }

    /// Answerer: the offerer started the connection attempt `conn` (a browser sends none).
    /// If ours was up, the offerer saw it die before we did: it is lost all the same.
    fn replace_conn_by_peer(&mut self, from: &str, conn: Option<Uuid>, offer: Remote) {
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        let was_open = link.control_open;
        if let Some(old) = link.conn.take() {
            old.close();
        }
        link.control_open = false;
        if was_open {
            tracing::info!(%from, "connection replaced by the peer; jobs are kept for resume");
            self.emit(Event::ConnectionLost {
                peer: from.to_string(),
                reason: "the peer replaced the connection".into(),
            });
            self.suspend_peer(from);
        }
        let new = self.spawn_conn(
            from,
            conn.unwrap_or_else(Uuid::new_v4),
            false,
            conn.is_some(),
        );
        let _ = new.handle.tx.send(ConnCommand::Remote(offer));
        if let Some(link) = self.links.get_mut(from) {
            link.conn = Some(new);
        }
    }

    /// The peer says it refuses this pair. That news is not authenticated, so it can only
    /// end a pair that is not verified yet.
    fn on_auth_failed_signal(&mut self, from: &str, code: Option<u16>) {
        if self.links.get(from).is_none_or(|l| l.auth.verified()) {
            return;
        }
        let (code, message) = match code {
            Some(codes::CODE_BURNT) => (
                codes::CODE_BURNT,
                "the peer's code is burnt: it admits nobody new",
            ),
            _ => (
                codes::PEER_AUTH_FAILED,
                "the peer could not authenticate us: a different code, or someone altered \
                 the connection setup",
            ),
        };
        self.refuse_peer(from, code, message.to_string(), false);
    }

    /// The peer's PAKE message: finish the exchange; the offerer's connection may now
    /// send its offer.
    fn on_pake(&mut self, from: &str, msg: &str, sctp_mtu: Option<u32>) {
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        match link.auth {
            Auth::Waiting(_) => {}
            Auth::Keyed { verified: true, .. } => {
                return self.pair_started_over(from, msg, sctp_mtu);
            }
            _ => {
                tracing::debug!(%from, "ignoring a second PAKE message");
                return;
            }
        }
        let Auth::Waiting(handshake) = std::mem::replace(
            &mut link.auth,
            Auth::Failed {
                code: codes::PEER_AUTH_FAILED,
            },
        ) else {
            return;
        };
        let finished = hex::decode(msg)
            .map_err(|_| crate::proto::pake::AuthError::BadMessage("not hex".into()))
            .and_then(|m| handshake.finish(&m));
        match finished {
            Ok(key) => {
                if let Some(conn) = &link.conn {
                    let _ = conn.handle.tx.send(ConnCommand::Key(key.clone()));
                }
                link.auth = Auth::Keyed {
                    key,
                    verified: false,
                };
                link.large_packets = sctp_mtu.is_some_and(|m| m >= crate::rtc::LOOPBACK_SCTP_MTU);
                let unconnected = link.conn.is_none();
                if unconnected && self.offerer_for(from) {
                    let conn = self.spawn_conn(from, Uuid::new_v4(), true, true);
                    if let Some(link) = self.links.get_mut(from) {
                        link.conn = Some(conn);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%from, "PAKE failed: {e}");
                self.refuse_peer(from, codes::PEER_AUTH_FAILED, e.to_string(), true);
            }
        }
    }

    /// An authenticated member sent a new PAKE message: it met us anew (it saw us leave
    /// and come back under our client ID, after we lost signaling, without keeping our
    /// pair's key, as a browser page does). The pair starts over: the member is handled
    /// as having left and joined again, and our PAKE message answers its. Only a verified
    /// pair starts over, once per authentication, so two peers cannot keep each other
    /// restarting.
    fn pair_started_over(&mut self, from: &str, msg: &str, sctp_mtu: Option<u32>) {
        let Some(link) = self.links.get(from) else {
            return;
        };
        tracing::info!(peer = %from, "the peer authenticates anew; starting the pair over");
        let info = PeerInfo {
            id: from.to_string(),
            name: link.name.clone(),
            relay_only: link.relay_only,
        };
        self.peer_left(from);
        self.left_keys.remove(from);
        self.add_peer(info);
        self.on_pake(from, msg, sctp_mtu);
    }

    /// A session description of `peer` carried a valid MAC: it is a member now.
    fn peer_verified(&mut self, peer: &str) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        if let Auth::Keyed { verified, .. } = &mut link.auth
            && !*verified
        {
            *verified = true;
            tracing::info!(%peer, "peer authenticated");
            let name = link.name.clone();
            self.emit(Event::PeerJoined {
                peer: peer.to_string(),
                name,
            });
        }
    }

    /// `peer` failed to authenticate (or our burnt code admits it no more): no connection
    /// with it, ever. `counted` failures burn the code after
    /// [`crate::PeerConfig::max_auth_failures`]; `tell` sends the peer an `auth-failed`.
    fn refuse_peer(&mut self, peer: &str, code: u16, message: String, tell: bool) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let was_verified = link.auth.verified();
        link.auth = Auth::Failed { code };
        link.retry_at = None;
        link.outbox.clear();
        link.control_open = false;
        if let Some(conn) = link.conn.take() {
            conn.close();
        }
        let name = link.name.clone();
        if tell {
            self.send_signal(peer, &PeerSignal::AuthFailed { code: Some(code) });
        }
        if was_verified {
            self.emit(Event::PeerLeft {
                peer: peer.to_string(),
            });
            self.suspend_peer(peer);
        }
        let authenticating = self
            .links
            .values()
            .filter(|l| !l.auth.verified() && !matches!(l.auth, Auth::Failed { .. }))
            .count();
        self.emit(Event::PeerAuthFailed {
            peer: peer.to_string(),
            name,
            code,
            message,
            authenticating,
        });
        // Refused for good: what we share with it can never reach it, so a share that
        // names it does not wait for it until the offer expires.
        self.recipient_unreachable(peer, code);
        if code != codes::PEER_AUTH_FAILED || self.burnt {
            return;
        }
        self.auth_failures = self.auth_failures.saturating_add(1);
        if self.auth_failures < self.config.max_auth_failures {
            return;
        }
        self.burnt = true;
        tracing::warn!(failures = self.auth_failures, "the code is burnt");
        self.emit(Event::CodeBurnt {
            failures: self.auth_failures,
        });
        let unverified: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| !l.auth.verified() && !matches!(l.auth, Auth::Failed { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for other in unverified {
            self.refuse_peer(&other, codes::CODE_BURNT, "the code is burnt".into(), true);
        }
    }

    pub(super) fn on_conn_event(&mut self, peer: String, conn_id: Uuid, ev: ConnEvent) {
        let current = self
            .links
            .get(&peer)
            .and_then(|l| l.conn.as_ref())
            .map(|c| c.id);
        if current != Some(conn_id) {
            if self
                .draining
                .get(&peer)
                .is_some_and(|d| d.conn.id == conn_id)
            {
                self.on_draining_event(&peer, ev);
            } else {
                tracing::debug!(%peer, %conn_id, "event of a stale connection");
            }
            return;
        }
        // Descriptions are passed on only once authenticated, so an unverified pair
        // cannot have a working connection; refuse anything over one all the same.
        if !matches!(ev, ConnEvent::Down(_))
            && !self.links.get(&peer).is_some_and(|l| l.auth.verified())
        {
            tracing::error!(%peer, "data from a connection that is not authenticated");
            self.drop_connection(&peer);
            return;
        }
        match ev {
            ConnEvent::ControlOpen(path) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.control_open = true;
                    link.attempts = 0;
                    link.retry_at = None;
                }
                self.emit(Event::Connection {
                    peer: peer.clone(),
                    path: path.as_ref().map(|p| p.kind),
                    local: path.as_ref().map(|p| p.local.clone()),
                    remote: path.map(|p| p.remote),
                });
                let hello = ControlMessage::Hello {
                    version: CONTROL_VERSION,
                    name: self.config.name.clone(),
                    features: self.hello_features(),
                };
                let queued = self
                    .links
                    .get_mut(&peer)
                    .map(|l| std::mem::take(&mut l.outbox))
                    .unwrap_or_default();
                for msg in std::iter::once(hello).chain(queued) {
                    self.send_control(&peer, msg);
                }
                self.resend_outcomes_to(&peer);
                self.offer_all_to(&peer);
                self.resume_from(&peer);
            }
            ConnEvent::Control(msg) => self.on_control(&peer, msg),
            ConnEvent::ControlInvalid(e) => {
                tracing::warn!(%peer, "invalid control message: {e}");
                self.send_control(
                    &peer,
                    ControlMessage::Error {
                        job_id: None,
                        file_id: None,
                        code: codes::PROTOCOL_VIOLATION,
                        message: e.to_string(),
                    },
                );
                self.emit(Event::Error {
                    peer: Some(peer),
                    code: codes::PROTOCOL_VIOLATION,
                    message: e.to_string(),
                });
            }
            ConnEvent::JobChannel { job_id, channel } => {
                self.on_job_channel(&peer, job_id, channel)
            }
            ConnEvent::BatchChannel { batch_id, channel } => {
                self.on_batch_channel(&peer, batch_id, channel)
            }
            ConnEvent::Down(reason) => self.connection_lost(&peer, reason),
        }
    }

    /// The current connection to `peer` died while it is still in the session: keep its
    /// jobs, and replace the connection.
    pub(super) fn connection_lost(&mut self, peer: &str, reason: String) {
        let offerer = self.offerer_for(peer);
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let old = link.conn.take().map(|c| {
            c.close();
            c.id
        });
        let was_open = link.control_open;
        link.control_open = false;
        if offerer {
            link.retry_at = Some(self.config.clock.now() + backoff(link.attempts));
            link.attempts = link.attempts.saturating_add(1);
        }
        tracing::info!(%peer, %reason, "connection lost; jobs are kept for resume");
        if was_open {
            self.emit(Event::ConnectionLost {
                peer: peer.to_string(),
                reason,
            });
        }
        if !offerer {
            self.send_signal(peer, &PeerSignal::Reconnect { conn: old });
        }
        self.suspend_peer(peer);
    }

    /// Stop the data flow to and from `peer`; jobs wait for a new connection.
    fn suspend_peer(&mut self, peer: &str) {
        for s in self.serving.values_mut().filter(|s| s.peer == peer) {
            if let Some(t) = s.task.take() {
                t.abort();
            }
        }
        self.stop_batches_to(peer);
        // A running download is left alone: it drains what already reached this side
        // (so less is sent again), then ends with a transport error and is suspended.
        let now = self.config.clock.now();
        for d in self.downloads.values_mut().filter(|d| d.sender == peer) {
            if matches!(
                d.phase,
                Phase::Queued | Phase::Requested { .. } | Phase::Verifying { .. }
            ) {
                d.phase = Phase::Suspended { since: now };
            }
        }
        self.suspend_requested_batches(peer);
    }

    /// Offerer side: start new connections whose backoff has elapsed (not while
    /// signaling is down: their setup could not reach the peer).
    pub(super) fn retry_connections(&mut self, now: Instant) {
        if !self.signaling_up() {
            return;
        }
        let due: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.conn.is_none()
                    && l.retry_at.is_some_and(|t| t <= now)
                    && !matches!(l.auth, Auth::Failed { .. })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer in due {
            tracing::info!(%peer, "reconnecting");
            let conn = self.spawn_conn(&peer, Uuid::new_v4(), true, true);
            if let Some(link) = self.links.get_mut(&peer) {
                link.conn = Some(conn);
                link.retry_at = None;
            }
        }
    }

    /// `peer` left the session: its jobs wait for the grace period (a restarted peer comes
    /// back under another client ID and resumes them by content).
    ///
    /// Its connection is closed at once unless an upload outcome from it is pending.
    /// `peer-left` comes from the signaling server, the peer's control messages come over
    /// the peer connection: two paths with no order between them. A recipient that
    /// finishes a download sends its final `done`, closes the connection and then leaves,
    /// yet its `peer-left` can overtake the `done` still on its way through our connection
    /// task; closing the connection here would lose the outcome and leave the upload
    /// waiting for the grace period. So that connection is read until it ends (the leaving
    /// peer closed it), for at most `LEAVE_DRAIN`. In every other case closing at once
    /// matters: a download from a sender that vanished is suspended right away, ready for
    /// a restarted sender to take over, instead of waiting for the connection to time out.
    ///
    /// The `PeerLeft` event (authenticated peers only) waits for the draining to end, so
    /// it follows the outcomes the peer sent before it left: an application that stops
    /// waiting for a recipient once it left does not miss its last `done`.
    pub(super) fn peer_left(&mut self, peer: &str) {
        let Some(link) = self.links.remove(peer) else {
            return;
        };
        self.set_send_only(peer, false);
        let announce = link.auth.verified();
        if let Auth::Keyed {
            key,
            verified: true,
        } = &link.auth
            && self.left_keys.len() < MAX_MEMBERS
        {
            self.left_keys.insert(
                peer.to_string(),
                LeftKey {
                    key: key.clone(),
                    large_packets: link.large_packets,
                    since: self.config.clock.now(),
                },
            );
        }
        let mut drained = false;
        if let Some(conn) = link.conn {
            if link.control_open && self.awaits_outcome_from(peer) {
                let until = self.config.clock.now() + LEAVE_DRAIN;
                let previous = self.draining.insert(
                    peer.to_string(),
                    Draining {
                        conn,
                        until,
                        announce,
                    },
                );
                if let Some(old) = previous {
                    old.conn.close();
                }
                drained = true;
            } else {
                conn.close();
            }
        }
        if announce && !drained {
            self.emit(Event::PeerLeft {
                peer: peer.to_string(),
            });
        }
        self.suspend_peer(peer);
        self.member_left();
        self.offered.retain(|_, o| o.info.sender != peer);
        self.forget_trees_of(peer);
        self.departed
            .insert(peer.to_string(), self.config.clock.now());
    }

    /// An event of the connection of a peer that left: the control messages it sent before
    /// leaving still count (outcomes, declines, cancels); nothing new starts with it. Once
    /// no outcome from it is pending any more, the connection is closed.
    fn on_draining_event(&mut self, peer: &str, ev: ConnEvent) {
        match ev {
            ConnEvent::Control(
                ControlMessage::Hello { .. }
                | ControlMessage::Offer { .. }
                | ControlMessage::Request { .. }
                | ControlMessage::HashesRequest { .. },
            ) => {
                tracing::debug!(%peer, "ignoring a late offer or request of a peer that left");
            }
            ConnEvent::Control(msg) => {
                self.on_control(peer, msg);
                if !self.awaits_outcome_from(peer) {
                    self.end_draining(peer);
                }
            }
            ConnEvent::Down(reason) => {
                tracing::debug!(%peer, %reason, "connection of a peer that left ended");
                self.end_draining(peer);
            }
            ConnEvent::ControlOpen(_)
            | ConnEvent::ControlInvalid(_)
            | ConnEvent::JobChannel { .. }
            | ConnEvent::BatchChannel { .. } => {}
        }
    }

    /// Stop reading the connection of a peer that left: close it, and announce that the
    /// peer left.
    fn end_draining(&mut self, peer: &str) {
        if let Some(d) = self.draining.remove(peer) {
            d.conn.close();
            if d.announce {
                self.emit(Event::PeerLeft {
                    peer: peer.to_string(),
                });
            }
        }
    }

    /// Close the connections of departed peers that did not end within `LEAVE_DRAIN`.
    pub(super) fn expire_draining(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .draining
            .iter()
            .filter(|(_, d)| d.until <= now)
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in expired {
            tracing::debug!(%peer, "closing the connection of a peer that left");
            self.end_draining(&peer);
        }
    }

    /// Test hook: treat `peer` as authenticated (the session tests open stand-in
    /// connections without a PAKE).
    #[cfg(any(test, feature = "fuzz-harness"))]
    pub(crate) fn authenticate_for_test(&mut self, peer: &str) {
        if let Some(link) = self.links.get_mut(peer) {
            link.auth = Auth::Keyed {
                key: PairKey::from_shared(b"test"),
                verified: true,
            };
        }
    }

    /// Kill the connection to `peer` as a network failure would: reconnection and resume
    /// follow. Used when a connection is up but useless (a job channel that never opens),
    /// and as a test hook.
    pub(super) fn drop_connection(&mut self, peer: &str) {
        if let Some(conn) = self.links.get(peer).and_then(|l| l.conn.as_ref()) {
            conn.close();
        }
    }

    /// Peers that left and did not come back within the grace period: their pending
    /// upload outcomes fail.
    pub(super) fn expire_departed(&mut self, now: Instant) {
        let grace = self.config.resume_grace;
        self.left_keys
            .retain(|_, k| now.duration_since(k.since) < grace);
        let gone: Vec<String> = self
            .departed
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in gone {
            self.departed.remove(&peer);
            self.recipient_gone(&peer);
            self.download_groups.forget(&peer);
        }
    }
}
