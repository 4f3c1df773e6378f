//! The session's side of its signaling connection: the error frames that end it, what a
//! lost connection does (peer connections carry on; a task rejoins), and what changes
//! once the task hands a new connection back: presence reconciled with the `welcome`,
//! TURN credentials, the resume token, and our client ID if the server gave a new one
//! (docs/PROTOCOL.md, "Client behaviour on a lost connection").

use std::time::Duration;

use peershare_signaling::protocol::Resume;
use peershare_signaling::protocol::codes::{
    IDLE_TIMEOUT, SHUTTING_DOWN, SLOW_CONSUMER, SUPERSEDED, UNAVAILABLE, UNKNOWN_RECIPIENT,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::connection::PeerSignal;
use super::links::Auth;
use super::{MAX_HELD_UNKNOWN_RECIPIENTS, Session, UNKNOWN_RECIPIENT_WAIT};
use crate::error::{Result, codes};
use crate::events::Event;
use crate::proto::rejoin::reconcile;
use crate::signal_client::{self, JoinRequest, SignalingSession};

/// Where the connection to signaling stands.
pub(crate) enum Upstream {
    /// Joined.
    Up,
    /// Lost; this task is rejoining and hands its result back through
    /// `Session::rejoined_rx`.
    Rejoining(JoinHandle<()>),
    /// Lost for good: the task gave up, a server refused us, or another connection took
    /// the membership over.
    Gone,
}

impl Session {
    /// Whether signaling is up (signals reach the other members).
    pub(super) fn signaling_up(&self) -> bool {
        matches!(self.upstream, Upstream::Up)
    }

    /// An `error` frame from the signaling server. Those that end the connection (a
    /// drain, another connection taking the membership over, an idle or slow client)
    /// explain the loss that follows; a 7008 is most likely a member that left (see
    /// [`Session::on_unknown_recipient`]); the others are reported as they come.
    pub(super) fn on_server_error(
        &mut self,
        code: u16,
        message: String,
        retry_after_ms: Option<u64>,
    ) {
        match code {
            SHUTTING_DOWN | UNAVAILABLE => {
                self.retry_hint = retry_after_ms.map(Duration::from_millis);
            }
            SUPERSEDED => self.superseded = true,
            IDLE_TIMEOUT | SLOW_CONSUMER => {}
            UNKNOWN_RECIPIENT => return self.on_unknown_recipient(message),
            _ => {
                self.emit(Event::Error {
                    peer: None,
                    code,
                    message,
                });
                return;
            }
        }
        self.closing = Some(format!("error {code}: {message}"));
    }

    /// The server's 7008: a `signal` of ours went to a client that is not in the session.
    /// We signal only members the server announced, so this is a member leaving while
    /// something was on its way to it (a `reconnect` after its connection closed, a
    /// candidate): a race, not a failure. The member's jobs end as those of any member
    /// that left (a pending delivery fails with 6003 once the grace period is over). The
    /// server writes the error at once, and the `peer-left` it queued before may follow
    /// it: a 7008 within [`UNKNOWN_RECIPIENT_WAIT`] of a member leaving, before or after,
    /// is only logged. One that no departure explains (the server and we disagree about
    /// who is a member) is reported as an `error` once that wait is over.
    fn on_unknown_recipient(&mut self, message: String) {
        let now = self.config.clock.now();
        let left_lately = !self.draining.is_empty()
            || self
                .departed
                .values()
                .any(|since| now.duration_since(*since) < UNKNOWN_RECIPIENT_WAIT);
        if left_lately {
            tracing::debug!(%message, "7008: a signal crossed the departure of a member");
            return;
        }
        if self.unknown_recipients.len() >= MAX_HELD_UNKNOWN_RECIPIENTS {
            tracing::debug!(%message, "7008: too many held already; not reported");
            return;
        }
        self.unknown_recipients.push((now, message));
    }

    /// A member left: the 7008s held so far were signals crossing its departure.
    pub(super) fn member_left(&mut self) {
        for (_, message) in self.unknown_recipients.drain(..) {
            tracing::debug!(%message, "7008: a signal crossed the departure of a member");
        }
    }

    /// Report the 7008s that no departure explained within [`UNKNOWN_RECIPIENT_WAIT`].
    pub(super) fn expire_unknown_recipients(&mut self, now: Instant) {
        let due = self
            .unknown_recipients
            .iter()
            .take_while(|(at, _)| now.duration_since(*at) >= UNKNOWN_RECIPIENT_WAIT)
            .count();
        let expired: Vec<(Instant, String)> = self.unknown_recipients.drain(..due).collect();
        for (_, message) in expired {
            tracing::warn!(%message, "7008 with no member leaving");
            self.emit(Event::Error {
                peer: None,
                code: UNKNOWN_RECIPIENT,
                message,
            });
        }
    }

    /// The signaling connection is gone. Peer connections and their jobs carry on; a task
    /// rejoins the session (unless the window is zero or another connection took the
    /// membership over: then signaling is gone for good).
    pub(super) fn signaling_lost(&mut self) {
        self.signal_rx = None;
        if let Some(pump) = self.signal_pump.take() {
            pump.abort();
        }
        let reason = self
            .closing
            .take()
            .unwrap_or_else(|| "the signaling server closed the connection".into());
        let window = self.config.signaling_retry_window;
        if self.superseded {
            self.signaling_gone(format!(
                "another connection took this membership over ({reason}); not rejoining"
            ));
            return;
        }
        if window.is_zero() {
            self.signaling_gone(format!(
                "lost the connection to the signaling server ({reason})"
            ));
            return;
        }
        tracing::info!(%reason, "lost the signaling server; rejoining");
        self.emit(Event::SignalingLost { reason });
        let join = self.rejoin_request();
        let servers = self.servers.clone();
        let (current, hint) = (self.server, self.retry_hint.take());
        let done = self.rejoined_tx.clone();
        let task = tokio::spawn(
            async move {
                let result = signal_client::rejoin(&servers, current, join, window, hint).await;
                let _ = done.send(result);
            }
            .in_current_span(),
        );
        self.upstream = Upstream::Rejoining(task);
    }

    /// The join that gets our membership back: the same session, name, password and
    /// relay policy, with our client ID and the last resume token.
    fn rejoin_request(&self) -> JoinRequest {
        JoinRequest {
            session: Some(self.code.route().to_string()),
            create: false,
            name: self.config.name.clone(),
            password: self.config.password.clone(),
            relay_only: self.config.rtc.relay_only,
            ca_file: self.config.ca_file.clone(),
            resume: self.resume_token.clone().map(|token| Resume {
                id: self.me.clone(),
                token,
            }),
        }
    }

    /// Signaling is gone for good: said once, with 1180.
    fn signaling_gone(&mut self, message: String) {
        tracing::warn!(%message, "signaling is gone");
        self.upstream = Upstream::Gone;
        self.emit(Event::Error {
            peer: None,
            code: codes::NOT_CONNECTED,
            message,
        });
    }

    /// The rejoining task's result.
    pub(super) fn on_rejoined(&mut self, result: Result<SignalingSession>) {
        let joined = match result {
            Ok(joined) => joined,
            Err(e) => {
                self.signaling_gone(format!("gave up rejoining the signaling server: {e}"));
                return;
            }
        };
        self.upstream = Upstream::Up;
        self.superseded = false;
        self.closing = None;
        self.signal_tx = joined.tx;
        self.signal_rx = Some(joined.rx);
        self.signal_pump = joined.pump;
        if let Some(i) = self.servers.iter().position(|s| *s == joined.server) {
            self.server = i;
        }
        self.resume_token = joined.resume_token;
        self.ice_servers = joined.ice_servers;
        let resumed = joined.client_id == self.me;
        tracing::info!(server = %joined.server, resumed, "back in the session");
        self.emit(Event::SignalingReconnected {
            client_id: joined.client_id.clone(),
            server: joined.server,
            resumed,
        });
        if resumed {
            let presence = reconcile(
                self.links.keys().map(String::as_str),
                &self.me,
                joined.peers,
            );
            for peer in presence.left {
                self.peer_left(&peer);
            }
            // The members kept; those met below start their connections afresh anyway.
            self.restart_pending_connections();
            for info in presence.joined {
                self.add_peer(info);
            }
        } else {
            // Every pair was authenticated under the old ID: the members are met anew.
            let mut known: Vec<String> = self.links.keys().cloned().collect();
            known.sort();
            for peer in known {
                self.peer_left(&peer);
            }
            self.left_keys.clear();
            self.me = joined.client_id;
            self.client_id.send_replace(self.me.clone());
            for info in joined.peers {
                self.add_peer(info);
            }
        }
    }

    /// Connections that were being set up while signaling was down lost their signals:
    /// start them over now, at once.
    fn restart_pending_connections(&mut self) {
        let now = self.config.clock.now();
        let pending: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| !l.control_open && matches!(l.auth, Auth::Keyed { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for peer in pending {
            let offerer = self.offerer_for(&peer);
            let Some(link) = self.links.get_mut(&peer) else {
                continue;
            };
            link.attempts = 0;
            if link.conn.is_some() {
                self.connection_lost(&peer, "rebuilt once signaling was back".into());
            } else if offerer {
                link.retry_at = Some(now);
            } else {
                self.send_signal(&peer, &PeerSignal::Reconnect { conn: None });
            }
        }
    }

    /// Stop rejoining (the peer is leaving).
    pub(super) fn stop_rejoining(&mut self) {
        if let Upstream::Rejoining(task) = std::mem::replace(&mut self.upstream, Upstream::Gone) {
            task.abort();
        }
    }
}

/// The next frame of the signaling connection; never while there is none.
pub(super) async fn recv_signal(
    rx: &mut Option<tokio::sync::mpsc::Receiver<peershare_signaling::protocol::ServerMessage>>,
) -> Option<peershare_signaling::protocol::ServerMessage> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
