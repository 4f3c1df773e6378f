//! Sessions shared by several nodes through Redis (`--redis URL`).
//!
//! Redis holds every session (its password tag and event counter) and its members (each
//! with the node that holds its connection), with TTLs. Every change of a session is one
//! Lua script ([`scripts`]) that also publishes the change to the channel of each node with
//! a member in it, so a node sees a session's events in the order Redis made them. A
//! node keeps, for each session it has members in, its own members' queues and a mirror of
//! where every member is ([`state`]); relayed `signal`s go to the recipient node's channel
//! (also when that is this node: one path keeps the per sender → recipient order and
//! presence before signals). One task writes what a node sends to Redis, in order
//! (`outbox`), one reads its channel (`subscriber`), one beats its heart and removes the
//! members of nodes whose heart stopped (`heartbeat`).
//!
//! Redis unreachable: joins are refused with `7017`, frames for other members are dropped,
//! peers already connected to each other keep their WebRTC connections; the tasks retry
//! and the node is ready again once Redis answers. Redis restarted empty: each node writes
//! back its own members and sessions (scripts::RESTORE).

mod scripts;
mod state;
pub(crate) mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::error::Rejection;
use crate::ids;
use crate::protocol::{PeerInfo, codes, valid_session_code};
use crate::registry::{JoinRequest, Joined, QueueBudget, Queued, checked_name, signal_text};
use crate::resume::{KEY_LEN, ResumeKey};
use state::{Removed, State};
use wire::{NodeMsg, Record};

/// How often a node beats its heart, and checks the hearts of the nodes it shares sessions
/// with.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's heartbeat lives: its members are removed (others get `peer-left`)
/// at most this long plus one [`HEARTBEAT`] after it stopped.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// TTL of a session's keys, refreshed while a node holds members in it.
const SESSION_TTL: Duration = Duration::from_secs(120);
/// How often the session TTLs are refreshed.
const SESSION_REFRESH_TICKS: u64 = 30;
/// Redis commands that take longer fail (and count as Redis unreachable).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages waiting for the outbox task; more are dropped.
const OUTBOX_CAPACITY: usize = 65_536;
/// The most commands written to Redis in one pipeline.
const OUTBOX_BATCH: usize = 512;
/// `retry_after_ms` of a `7017`.
const RETRY_AFTER_MS: u64 = 1_000;
/// Key holding the deployment's secret (resume tokens, password tags).
const SECRET_KEY: &str = "ps:secret";
/// Key counting the sessions (sizes the server-chosen session numbers).
const COUNT_KEY: &str = "ps:nsessions";

/// What the outbox task writes to Redis, in order.
#[derive(Debug)]
enum Out {
    /// A relayed `signal` for member `to` of `session`, held by `node`.
    Signal {
        node: String,
        session: String,
        to: String,
        frame: String,
    },
    Remove {
        session: String,
        id: String,
        node: String,
        ev: Option<u64>,
    },
}

/// One node's view of the shared sessions.
pub(crate) struct Cluster {
    node: String,
    conn: ConnectionManager,
    outbox: mpsc::Sender<Out>,
    state: Mutex<State>,
    budget: Arc<QueueBudget>,
    max_peers: usize,
    secret: Mutex<Option<[u8; KEY_LEN]>>,
    /// Redis answered the last heartbeat and the channel is subscribed.
    reachable: AtomicBool,
    subscribed: AtomicBool,
    next_seq: AtomicU64,
    /// Messages for Redis dropped because the outbox was full, and because their
    /// pipeline failed (read for `/metrics`).
    dropped_full: AtomicU64,
    dropped_failed: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Cluster {
    /// Connect to Redis at `url` and start the node's tasks. Fails only on a malformed
    /// URL: an unreachable Redis is retried in the background.
    pub async fn start(
        url: &str,
        max_peers: usize,
        budget: Arc<QueueBudget>,
    ) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url}: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        // `ConnectionManager::new_lazy`: it connects (and reconnects) when first used,
        // so a node starts while Redis is down.
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("--redis {url}: {e}"))?;
        let (out_tx, out_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let node = format!("{:016x}", rand::random::<u64>());
        let cluster = Arc::new(Cluster {
            node,
            conn,
            outbox: out_tx,
            state: Mutex::new(State::default()),
            budget,
            max_peers: max_peers.max(1),
            secret: Mutex::new(None),
            reachable: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            next_seq: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_failed: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&cluster);
        tokio::spawn(outbox(weak.clone(), cluster.conn.clone(), out_rx));
        tokio::spawn(subscriber(weak.clone(), client, cluster.node.clone()));
        tokio::spawn(heartbeat(weak));
        tracing::info!(node = %cluster.node, "sessions shared through Redis");
        Ok(cluster)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why joins are refused now, if they are.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.reachable.load(Ordering::Acquire) || !self.subscribed.load(Ordering::Acquire) {
            return Some("redis unreachable");
        }
        None
    }

    /// Sessions with members on this node, and this node's joined clients.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts()
    }

    /// Messages for Redis dropped so far: (outbox full, pipeline failed).
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_full.load(Ordering::Relaxed),
            self.dropped_failed.load(Ordering::Relaxed),
        )
    }

    /// Whether `client` is joined on this node (TURN credentials of the embedded relay).
    pub fn is_member(&self, client: &str) -> bool {
        self.lock().is_member(client)
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> Rejection {
        tracing::warn!(error = %what, "redis unreachable");
        self.reachable.store(false, Ordering::Release);
        Rejection::new(
            codes::UNAVAILABLE,
            "the session store is unreachable; retry",
        )
        .with_retry_after(RETRY_AFTER_MS)
    }

    /// The deployment's secret: read from Redis, or set there by the first node.
    async fn secret(&self) -> Result<[u8; KEY_LEN], Rejection> {
        if let Some(s) = *self.secret.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(s);
        }
        let fresh: [u8; KEY_LEN] = rand::random();
        let mut conn = self.conn.clone();
        let hex: String = redis::cmd("SET")
            .arg(SECRET_KEY)
            .arg(hex(&fresh))
            .arg("NX")
            .arg("GET")
            .query_async::<Option<String>>(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?
            .unwrap_or_else(|| hex(&fresh));
        let secret = unhex(&hex).ok_or_else(|| self.unavailable("malformed ps:secret"))?;
        *self.secret.lock().unwrap_or_else(PoisonError::into_inner) = Some(secret);
        Ok(secret)
    }

    /// Join (create, resume) a session: the same rules and codes as one server's
    /// registry, decided by Redis for the whole deployment.
    pub async fn join(
        self: &Arc<Self>,
        req: JoinRequest<'_>,
        tx: mpsc::Sender<Queued>,
    ) -> Result<Joined, Rejection> {
        let name = checked_name(req.name)?;
        if self.not_ready().is_some() {
            return Err(self.unavailable("not connected"));
        }
        let secret = self.secret().await?;
        let key = ResumeKey::new(secret);
        let password = req.password.filter(|p| !p.is_empty());
        let mut conn = self.conn.clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (code, create) = match req.session {
                // `create: true` with a code that may not be created still finds an
                // existing session (`7015`), as on one server; only creating is refused
                // (the script's `7006`, answered `7013`).
                Some(code) => (
                    code.to_owned(),
                    match (req.create, valid_session_code(code)) {
                        (false, _) => Create::No,
                        (true, true) => Create::Yes,
                        (true, false) => Create::Invalid,
                    },
                ),
                None => {
                    let count: Option<i64> = redis::cmd("GET")
                        .arg(COUNT_KEY)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| self.unavailable(e))?;
                    let count = usize::try_from(count.unwrap_or(0).max(0)).unwrap_or(0);
                    (ids::session_number(count), Create::Yes)
                }
            };
            let resume = req
                .resume
                .filter(|r| key.verify(&code, &r.id, &r.token))
                .map(|r| r.id.as_str());
            let id = ids::client_id();
            let pw_tag = password.map(|p| password_tag(&secret, &code, p));
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let superseded = Arc::new(AtomicBool::new(false));
            let [meta, members] = wire::session_keys(&code);
            let asked = resume.unwrap_or(&id).to_owned();
            self.lock().pending(&code, &asked, tx.clone());
            let reply: redis::RedisResult<Vec<String>> = redis::Script::new(scripts::JOIN)
                .key(&meta)
                .key(&members)
                .key(COUNT_KEY)
                .arg(create as u8)
                .arg(u8::from(resume.is_some() && req.create))
                .arg(pw_tag.as_deref().unwrap_or(""))
                .arg(&id)
                .arg(&self.node)
                .arg(u8::from(req.relay_only))
                .arg(name)
                .arg(self.max_peers)
                .arg(SESSION_TTL.as_secs())
                .arg(resume.unwrap_or(""))
                .arg(&code)
                .invoke_async(&mut conn)
                .await;
            let ok = matches!(&reply, Ok(r) if r.first().map(String::as_str) == Some("ok"));
            if !ok {
                self.lock().unpending(&code, &asked);
            }
            let reply = reply.map_err(|e| self.unavailable(e))?;
            match reply.first().map(String::as_str) {
                Some("ok") => {}
                Some("e") => {
                    let why = reply.get(1).map(String::as_str).unwrap_or("");
                    let retry =
                        (why == "dup" || (why == "7015" && req.session.is_none())) && attempts < 16;
                    if retry {
                        continue;
                    }
                    return Err(refusal(why, req, self.max_peers));
                }
                _ => return Err(self.unavailable("unexpected reply to the join script")),
            }
            let parsed = parse_join_reply(&reply).ok_or_else(|| self.unavailable("bad reply"))?;
            let joined = self.lock().joined(state::Joining {
                session: &code,
                id: &parsed.id,
                ev: parsed.ev,
                pw_tag: parsed.pw_tag,
                members: parsed.members,
                seq,
                tx,
                superseded: Arc::clone(&superseded),
                budget: &self.budget,
            });
            self.after_delivery(joined.slow);
            return Ok(Joined {
                resume_token: key.token(&code, &parsed.id),
                session: code,
                client_id: parsed.id,
                seq,
                peers: joined.peers,
                superseded,
            });
        }
    }

    /// A member's connection ended (`seq` tells this membership from a later one with
    /// the same ID). It is removed from Redis, and everyone gets `peer-left` — but when
    /// the node drains (`keep`) it stays in Redis, for another node to take over
    /// (`join.resume`) until this node's heartbeat expires.
    pub fn leave(&self, session: &str, id: &str, seq: u64, keep: bool) -> bool {
        let Some(ev) = self.lock().leave(session, id, seq) else {
            return false;
        };
        if !keep {
            self.send(Out::Remove {
                session: session.to_owned(),
                id: id.to_owned(),
                node: self.node.clone(),
                ev: Some(ev),
            });
        }
        true
    }

    /// Relay `data` from a member to another of its session, through the recipient
    /// node's channel.
    pub fn relay(
        &self,
        session: &str,
        from: &str,
        seq: u64,
        to: &str,
        data: &str,
    ) -> Result<(), Rejection> {
        let node = self.lock().route(session, from, seq, to)?;
        self.send(Out::Signal {
            node,
            session: session.to_owned(),
            to: to.to_owned(),
            frame: signal_text(from, data),
        });
        Ok(())
    }

    fn send(&self, out: Out) {
        if self.outbox.try_send(out).is_err() {
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("outbox full: a frame for Redis was dropped");
        }
    }

    /// Members found too slow while delivering: removed like members that leave.
    fn after_delivery(&self, slow: Vec<Removed>) {
        for r in slow {
            tracing::info!(session = %r.session, client_id = %r.id, "dropped as a slow consumer");
            self.send(Out::Remove {
                session: r.session,
                id: r.id,
                node: self.node.clone(),
                ev: Some(r.ev),
            });
        }
    }

    /// A message from this node's channel.
    fn on_message(&self, text: &str) {
        let read = std::time::Instant::now();
        let Some(msgs) = NodeMsg::parse(text) else {
            tracing::warn!("malformed message on the node channel");
            return;
        };
        let slow = {
            let mut state = self.lock();
            msgs.into_iter()
                .flat_map(|msg| state.apply(&self.node, msg, &self.budget, read))
                .collect()
        };
        self.after_delivery(slow);
    }
}

/// `ARGV[1]` of the join script: whether the join may create the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// No: a missing session is `7006`.
    No = 0,
    /// Yes: an existing session is `7015` (unless resumed), a missing one is created.
    Yes = 1,
    /// Asked for with a code that may not be created: an existing session is `7015`
    /// (unless resumed), a missing one `7006` (answered `7013`).
    Invalid = 2,
}

/// The refusal a join script's error stands for.
fn refusal(why: &str, req: JoinRequest<'_>, max_peers: usize) -> Rejection {
    match why {
        "7005" => Rejection::new(
            codes::SESSION_FULL,
            format!("session is full ({max_peers} peers)"),
        ),
        "7006" if req.create => Rejection::new(
            codes::INVALID_FIELD,
            "session code must be 8 to 64 characters from [A-Za-z0-9_-]",
        ),
        "7006" => Rejection::new(codes::SESSION_NOT_FOUND, "no such session"),
        "7007" => Rejection::new(codes::UNAUTHORIZED, "wrong or missing session password"),
        "7015" => Rejection::new(
            codes::SESSION_EXISTS,
            "a session with this code exists already",
        ),
        _ => Rejection::new(codes::UNAVAILABLE, "could not allocate a client ID; retry")
            .with_retry_after(RETRY_AFTER_MS),
    }
}

/// A join script's `ok` reply.
struct JoinReply {
    id: String,
    ev: u64,
    pw_tag: String,
    members: Vec<(String, Record)>,
}

fn parse_join_reply(reply: &[String]) -> Option<JoinReply> {
    let id = reply.get(1)?.clone();
    let ev = reply.get(2)?.parse().ok()?;
    let pw_tag = reply.get(3)?.clone();
    let rest = reply.get(4..)?;
    let members = rest
        .chunks_exact(2)
        .filter_map(|pair| Some((pair[0].clone(), Record::parse(&pair[1])?)))
        .collect();
    Some(JoinReply {
        id,
        ev,
        pw_tag,
        members,
    })
}

/// The password tag kept in Redis: `HMAC-SHA256(secret, "peershare-password-v1" 0
/// session 0 password)`, hex. Compared by the join script.
fn password_tag(secret: &[u8; KEY_LEN], session: &str, password: &str) -> String {
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"peershare-password-v1\0");
    mac.update(session.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; KEY_LEN]> {
    let mut out = [0u8; KEY_LEN];
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes what the node sends to Redis, in the order it was sent, a pipeline at a time.
async fn outbox(cluster: Weak<Cluster>, mut conn: ConnectionManager, mut rx: mpsc::Receiver<Out>) {
    let mut batch = Vec::with_capacity(OUTBOX_BATCH);
    while rx.recv_many(&mut batch, OUTBOX_BATCH).await > 0 {
        let Some(node) = cluster.upgrade().map(|c| c.node.clone()) else {
            return;
        };
        let n = batch.len() as u64;
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        // Signals for the same node since the last removal go out as one `S` message per
        // node (in their order), so that a node under load sends Redis, and reads from
        // it, one message per batch rather than one per frame. A removal is a barrier:
        // what came before it is published before it.
        let mut packed = Packed::default();
        for out in batch.drain(..) {
            match out {
                Out::Signal {
                    node,
                    session,
                    to,
                    frame,
                } => packed.push(&mut pipe, node, &session, &to, &frame),
                Out::Remove {
                    session,
                    id,
                    node: of,
                    ev,
                } => {
                    packed.flush(&mut pipe);
                    let [meta, members] = wire::session_keys(&session);
                    // EVAL, not EVALSHA: a Redis restarted empty knows no scripts.
                    pipe.cmd("EVAL")
                        .arg(scripts::REMOVE)
                        .arg(3)
                        .arg(meta)
                        .arg(members)
                        .arg(COUNT_KEY)
                        .arg(&session)
                        .arg(&id)
                        .arg(&of)
                        .arg(ev.map(|e| e.to_string()).unwrap_or_default())
                        .arg(&node)
                        .ignore();
                }
            }
        }
        packed.flush(&mut pipe);
        let sent: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(e) = sent {
            if let Some(c) = cluster.upgrade() {
                c.dropped_failed.fetch_add(n, Ordering::Relaxed);
            }
            tracing::debug!(error = %e, "redis write failed; a batch was dropped");
        }
    }
}

/// `S` messages being packed, one per node, in the order of their first signal.
#[derive(Default)]
struct Packed {
    messages: Vec<(String, String)>,
}

impl Packed {
    fn push(
        &mut self,
        pipe: &mut redis::Pipeline,
        node: String,
        session: &str,
        to: &str,
        frame: &str,
    ) {
        let at = match self.messages.iter().position(|(n, _)| *n == node) {
            Some(i) => i,
            None => {
                self.messages.push((node, String::from("S\n")));
                self.messages.len() - 1
            }
        };
        wire::push_signal(&mut self.messages[at].1, session, to, frame);
        if self.messages[at].1.len() >= wire::SIGNALS_MAX_BYTES {
            let (node, text) = self.messages.remove(at);
            publish(pipe, &node, text);
        }
    }

    fn flush(&mut self, pipe: &mut redis::Pipeline) {
        for (node, text) in self.messages.drain(..) {
            publish(pipe, &node, text);
        }
    }
}

/// Add `PUBLISH ps:node:NODE text` to `pipe`, its reply ignored.
fn publish(pipe: &mut redis::Pipeline, node: &str, text: String) {
    let channel = wire::channel(node);
    // Sized once: growing each command's buffer argument by argument took a tenth of a
    // node's CPU under load.
    let mut cmd = redis::Cmd::with_capacity(3, 7 + channel.len() + text.len());
    cmd.arg("PUBLISH").arg(channel).arg(text);
    pipe.add_command(cmd).ignore();
}

/// Reads the node's channel; reconnects (and resubscribes) when the connection drops.
async fn subscriber(cluster: Weak<Cluster>, client: redis::Client, node: String) {
    let channel = wire::channel(&node);
    let mut delay = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    match cluster.upgrade() {
                        Some(c) => c.subscribed.store(true, Ordering::Release),
                        None => return,
                    }
                    let mut stream = pubsub.on_message();
                    while let Some(msg) = stream.next().await {
                        let Some(c) = cluster.upgrade() else { return };
                        match std::str::from_utf8(msg.get_payload_bytes()) {
                            Ok(text) => c.on_message(text),
                            Err(_) => tracing::warn!("non-UTF-8 message on the node channel"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "subscribe failed"),
            },
            Err(e) => tracing::debug!(error = %e, "redis pub/sub connection failed"),
        }
        match cluster.upgrade() {
            Some(c) => c.subscribed.store(false, Ordering::Release),
            None => return,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Every [`HEARTBEAT`]: mark this node alive (and notice a Redis that lost its data), and
/// remove the members of nodes whose heartbeat expired.
async fn heartbeat(cluster: Weak<Cluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    // Once this node has set its key, a beat that finds it gone means Redis lost it
    // (restarted empty, or the key expired while Redis was unreachable).
    let mut alive_before = false;
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        beats += 1;
        match c.beat(alive_before, beats).await {
            Ok(()) => {
                alive_before = true;
                c.reachable.store(true, Ordering::Release);
            }
            Err(e) => {
                if c.reachable.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "redis unreachable");
                }
            }
        }
    }
}

impl Cluster {
    async fn beat(&self, alive_before: bool, beats: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(wire::alive_key(&self.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        if previous.is_none() && alive_before {
            // Our key is gone: Redis lost its data, or it expired while Redis was
            // unreachable or this node stalled. Write back what we hold (idempotent).
            tracing::warn!("redis lost this node's state; restoring it");
            self.restore(&mut conn).await?;
        }
        let nodes = self.lock().remote_nodes(&self.node);
        if !nodes.is_empty() {
            let mut pipe = redis::pipe();
            for n in &nodes {
                pipe.cmd("EXISTS").arg(wire::alive_key(n));
            }
            let alive: Vec<bool> = pipe.query_async(&mut conn).await?;
            let dead: Vec<&String> = nodes
                .iter()
                .zip(alive)
                .filter(|(_, a)| !a)
                .map(|(n, _)| n)
                .collect();
            for n in dead {
                let gone = self.lock().members_on(n);
                for (session, id) in gone {
                    tracing::info!(%session, client_id = %id, node = %n, "member of a stopped node expired");
                    self.send(Out::Remove {
                        session,
                        id,
                        node: n.clone(),
                        ev: None,
                    });
                }
            }
        }
        if beats.is_multiple_of(SESSION_REFRESH_TICKS) {
            let sessions = self.lock().sessions();
            let mut pipe = redis::pipe();
            for s in sessions {
                for k in wire::session_keys(&s) {
                    pipe.cmd("EXPIRE")
                        .arg(k)
                        .arg(SESSION_TTL.as_secs())
                        .ignore();
                }
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    async fn restore(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let secret = *self.secret.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(secret) = secret {
            // The same secret for nodes started from now on (tokens, password tags).
            redis::cmd("SET")
                .arg(SECRET_KEY)
                .arg(hex(&secret))
                .arg("NX")
                .query_async::<()>(conn)
                .await?;
        }
        let script = redis::Script::new(scripts::RESTORE);
        let snaps = self.lock().snapshot(&self.node);
        for snap in snaps {
            let [meta, members] = wire::session_keys(&snap.session);
            let mut inv = script.key(meta);
            inv.key(members)
                .key(COUNT_KEY)
                .arg(&snap.pw_tag)
                .arg(snap.last_ev)
                .arg(SESSION_TTL.as_secs());
            for (id, rec) in &snap.members {
                inv.arg(id).arg(rec.encode());
            }
            inv.invoke_async::<i64>(conn).await?;
        }
        Ok(())
    }
}

/// The members of `peers` as `welcome.peers` lists them.
pub(crate) fn peer_info(id: &str, rec: &Record) -> PeerInfo {
    PeerInfo {
        id: id.to_owned(),
        name: rec.name.clone(),
        relay_only: rec.relay_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_tag_depends_on_secret_session_and_password() {
        let a = password_tag(&[1; KEY_LEN], "42", "pw");
        assert_eq!(a.len(), 64);
        assert_ne!(a, password_tag(&[2; KEY_LEN], "42", "pw"));
        assert_ne!(a, password_tag(&[1; KEY_LEN], "43", "pw"));
        assert_ne!(a, password_tag(&[1; KEY_LEN], "42", "pw2"));
        assert_eq!(a, password_tag(&[1; KEY_LEN], "42", "pw"));
    }

    #[test]
    fn hex_round_trips_and_refuses_other_lengths() {
        let k = [0xa5; KEY_LEN];
        assert_eq!(unhex(&hex(&k)), Some(k));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex(&"zz".repeat(KEY_LEN)), None);
    }

    #[test]
    fn parse_join_reply_reads_members_and_skips_bad_records() {
        let r = |s: &str| s.to_string();
        let reply = vec![
            r("ok"),
            r("0123456789ab"),
            r("3"),
            r(""),
            r("0123456789ab"),
            r("n1\n3\n0\nbob"),
            r("aaaaaaaaaaaa"),
            r("garbage"),
        ];
        let p = parse_join_reply(&reply).unwrap();
        assert_eq!((p.id.as_str(), p.ev), ("0123456789ab", 3));
        assert_eq!(p.members.len(), 1);
        assert!(parse_join_reply(&[r("ok")]).is_none());
    }
}
