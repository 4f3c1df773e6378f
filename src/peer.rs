//! The public [`Peer`] handle and the peer task that owns all session state.
//!
//! The handle sends commands over a channel; one task (the "peer task") owns the
//! signaling session, the connection handles, the offers and the jobs, and emits
//! [`Event`]s. Connection tasks and transfer tasks report back to it by message.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::{ClientMessage, PeerInfo, ServerMessage, SignalData};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::PeerConfig;
use crate::connection::{self, ConnCommand, ConnEvent, ConnHandle, ConnSetup};
use crate::error::{Error, Result, codes};
use crate::events::{Event, FileInfo};
use crate::proto::control::{CONTROL_VERSION, ControlMessage, OfferGroup};
use crate::proto::download::DownloadState;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::names::sanitize_file_name;
use crate::proto::upload::{Audience, Completion, Outcome, UploadState};
use crate::rtc::RtcChannel;
use crate::signal_client::{self, JoinRequest};
use crate::transfer::{self, FileIdentity, Saved, Sink};
use crate::transport::Channel;

/// Who receives shared files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Everyone in the session, including peers who join while the offer is alive.
    Broadcast,
    /// Only these client IDs.
    To(Vec<String>),
}

/// Where a download goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// Into this directory, under the sanitized offered name (never overwriting).
    ToDir(PathBuf),
    /// Into memory; the bytes arrive in [`Event::DownloadCompleted`].
    InMemory,
}

/// Options of one `send_files` call.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Offer lifetime; the configured default when `None`.
    pub ttl: Option<Duration>,
    /// Names to offer the files under instead of their own, one per path.
    pub names: Option<Vec<String>>,
}

/// The stream of events of a peer.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the peer has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// A member of a session that shares and receives files.
pub struct Peer {
    cmd: mpsc::UnboundedSender<Command>,
    client_id: String,
    session: String,
    config: Arc<PeerConfig>,
}

enum Command {
    Share {
        files: Vec<PreparedFile>,
        audience: Audience,
        ttl: Duration,
        reply: oneshot::Sender<Vec<JobId>>,
    },
    Available(oneshot::Sender<Vec<FileInfo>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Download {
        file_id: FileId,
        save: Save,
        reply: oneshot::Sender<Result<JobId>>,
    },
    Decline {
        file_id: FileId,
        reply: oneshot::Sender<Result<()>>,
    },
    Forge {
        sender: String,
        file_id: FileId,
        reply: oneshot::Sender<Result<JobId>>,
    },
    Leave(oneshot::Sender<()>),
}

struct PreparedFile {
    path: PathBuf,
    name: String,
    identity: FileIdentity,
    hash: Hash,
}

impl Peer {
    /// Join the session described by `config`.
    pub async fn join(config: PeerConfig) -> Result<(Peer, Events)> {
        let joined = signal_client::connect(
            &config.server,
            JoinRequest {
                session: config.session.clone(),
                create: config.create_session,
                name: config.name.clone(),
                password: config.password.clone(),
            },
        )
        .await?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let peer = Peer {
            cmd: cmd_tx,
            client_id: joined.client_id.clone(),
            session: joined.session.clone(),
            config: config.clone(),
        };
        let span = tracing::info_span!("peer", id = %joined.client_id, session = %joined.session);
        let actor = Actor::new(config, joined, ev_tx);
        tokio::spawn(actor.run(cmd_rx).instrument(span));
        Ok((peer, Events { rx: ev_rx }))
    }

    /// Our client ID in the session.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The session code.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The other members of the session.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// Share files with everyone or with chosen client IDs: one upload job per file.
    /// Every file is checked (readable: else 5089; within the size limit: else 1185) and
    /// hashed before anything is offered.
    pub async fn send_files(&self, paths: &[PathBuf], share: Share) -> Result<Vec<JobId>> {
        self.send_files_with(paths, share, SendOptions::default())
            .await
    }

    /// [`Peer::send_files`] with options (offer lifetime).
    pub async fn send_files_with(
        &self,
        paths: &[PathBuf],
        share: Share,
        options: SendOptions,
    ) -> Result<Vec<JobId>> {
        if paths.is_empty() {
            return Err(Error::InvalidArgument("no files to send".into()));
        }
        if paths.len() > self.config.max_files_per_request {
            return Err(Error::TooManyFiles {
                count: paths.len(),
                max: self.config.max_files_per_request,
            });
        }
        let audience = match share {
            Share::Broadcast => Audience::Broadcast,
            Share::To(ids) if ids.is_empty() => {
                return Err(Error::InvalidArgument("empty recipient list".into()));
            }
            Share::To(ids) => Audience::Only(ids.into_iter().collect()),
        };
        if let Some(names) = &options.names
            && names.len() != paths.len()
        {
            return Err(Error::InvalidArgument(format!(
                "{} names for {} files",
                names.len(),
                paths.len()
            )));
        }
        let mut files = Vec::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            let identity = FileIdentity::of(path)?;
            let name = match &options.names {
                Some(names) => names[i].clone(),
                None => display_name(path),
            };
            if identity.size > self.config.max_file_size {
                return Err(Error::FileTooLarge {
                    name,
                    size: identity.size,
                    max: self.config.max_file_size,
                });
            }
            let p = path.clone();
            let hash = tokio::task::spawn_blocking(move || transfer::hash_file(&p))
                .await
                .map_err(|e| Error::UploadFailed(format!("hashing task: {e}")))??;
            files.push(PreparedFile {
                path: path.clone(),
                name,
                identity,
                hash,
            });
        }
        let ttl = options.ttl.unwrap_or(self.config.offer_ttl);
        self.ask(|reply| Command::Share {
            files,
            audience,
            ttl,
            reply,
        })
        .await
    }

    /// Files currently offered to us (expired offers are left out).
    pub async fn available_files(&self) -> Vec<FileInfo> {
        self.ask(Command::Available).await.unwrap_or_default()
    }

    /// Download an offered file. Returns the download job ID; the outcome arrives as
    /// events.
    pub async fn download(&self, file_id: FileId, save: Save) -> Result<JobId> {
        self.ask(|reply| Command::Download {
            file_id,
            save,
            reply,
        })
        .await?
    }

    /// Decline an offered file; the sender sees the outcome.
    pub async fn decline(&self, file_id: FileId) -> Result<()> {
        self.ask(|reply| Command::Decline { file_id, reply }).await?
    }

    /// Ask `sender` for a file that was never offered to us, as a misbehaving client
    /// would. For tests of the sender's enforcement; the answer arrives as
    /// [`Event::DownloadFailed`].
    #[doc(hidden)]
    pub async fn forge_request(&self, sender: &str, file_id: FileId) -> Result<JobId> {
        self.ask(|reply| Command::Forge {
            sender: sender.to_string(),
            file_id,
            reply,
        })
        .await?
    }

    /// Leave the session and close every connection.
    pub async fn leave(self) {
        let _ = self.ask(Command::Leave).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .map_err(|_| Error::NotConnected("the peer has shut down".into()))?;
        rx.await
            .map_err(|_| Error::NotConnected("the peer has shut down".into()))
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

// ───────────────────────────── the peer task ─────────────────────────────

struct RemotePeer {
    name: String,
    conn: ConnHandle,
    control_open: bool,
}

struct SharedFile {
    job_id: JobId,
    group: OfferGroup,
    path: PathBuf,
    name: String,
    identity: FileIdentity,
    hash: Hash,
    state: UploadState,
}

/// One recipient being served: keyed by the recipient's download job ID.
struct Serving {
    file_id: FileId,
    peer: String,
    task: JoinHandle<()>,
}

struct Offered {
    info: FileInfo,
    expires_at: Instant,
}

struct Download {
    file_id: FileId,
    sender: String,
    name: String,
    size: u64,
    hash: Hash,
    save: Save,
    task: Option<JoinHandle<()>>,
}

enum Report {
    DownloadProgress { job_id: JobId, received: u64 },
    DownloadDone { job_id: JobId, result: Result<Saved> },
    UploadStreamDone { job_id: JobId, result: Result<u64> },
}

struct Actor {
    config: Arc<PeerConfig>,
    me: String,
    ice_servers: Vec<peershare_signaling::protocol::IceServer>,
    signal_tx: mpsc::Sender<ClientMessage>,
    signal_rx: mpsc::Receiver<ServerMessage>,
    events: mpsc::UnboundedSender<Event>,
    peers: HashMap<String, RemotePeer>,
    conn_tx: mpsc::UnboundedSender<(String, ConnEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(String, ConnEvent)>,
    report_tx: mpsc::UnboundedSender<Report>,
    report_rx: mpsc::UnboundedReceiver<Report>,
    shares: HashMap<FileId, SharedFile>,
    serving: HashMap<JobId, Serving>,
    offered: HashMap<FileId, Offered>,
    downloads: HashMap<JobId, Download>,
    downloaded: HashSet<FileId>,
    epoch: Instant,
}

impl Actor {
    fn new(
        config: Arc<PeerConfig>,
        joined: signal_client::SignalingSession,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let mut actor = Actor {
            config,
            me: joined.client_id,
            ice_servers: joined.ice_servers,
            signal_tx: joined.tx,
            signal_rx: joined.rx,
            events,
            peers: HashMap::new(),
            conn_tx,
            conn_rx,
            report_tx,
            report_rx,
            shares: HashMap::new(),
            serving: HashMap::new(),
            offered: HashMap::new(),
            downloads: HashMap::new(),
            downloaded: HashSet::new(),
            epoch: Instant::now(),
        };
        for p in joined.peers {
            actor.add_peer(p);
        }
        actor
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Leave(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                msg = self.signal_rx.recv() => match msg {
                    Some(msg) => self.on_signaling(msg),
                    None => {
                        self.emit(Event::Error {
                            peer: None,
                            code: codes::NOT_CONNECTED,
                            message: "lost the connection to the signaling server".into(),
                        });
                        // Existing peer connections keep working; new peers cannot join.
                        self.signal_rx = mpsc::channel(1).1;
                    }
                },
                Some((peer, ev)) = self.conn_rx.recv() => self.on_conn_event(peer, ev),
                Some(report) = self.report_rx.recv() => self.on_report(report),
            }
        }
    }

    async fn shutdown(&mut self) {
        for (_, s) in self.serving.drain() {
            s.task.abort();
        }
        for (_, d) in self.downloads.drain() {
            if let Some(t) = d.task {
                t.abort();
            }
        }
        // Close every connection gracefully (final control messages reach the peers)
        // before telling the signaling server we left.
        let mut closing = Vec::new();
        for (_, p) in self.peers.drain() {
            let (tx, rx) = oneshot::channel();
            if p.conn.tx.send(ConnCommand::Close(Some(tx))).is_ok() {
                closing.push(rx);
            }
        }
        for rx in closing {
            let _ = rx.await;
        }
        let _ = self.signal_tx.send(ClientMessage::Leave).await;
    }

    // ── commands ──

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Share {
                files,
                audience,
                ttl,
                reply,
            } => {
                let group_id = uuid::Uuid::new_v4();
                let count = files.len() as u32;
                let ids = files
                    .into_iter()
                    .enumerate()
                    .map(|(index, f)| {
                        let group = OfferGroup {
                            id: group_id,
                            count,
                            index: index as u32,
                        };
                        self.share(f, audience.clone(), ttl, group)
                    })
                    .collect();
                let _ = reply.send(ids);
            }
            Command::Available(reply) => {
                let now = Instant::now();
                let list = self
                    .offered
                    .values()
                    .filter(|o| o.expires_at > now && !self.downloaded.contains(&o.info.file_id))
                    .map(|o| FileInfo {
                        expires_in_ms: (o.expires_at - now).as_millis() as u64,
                        ..o.info.clone()
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Peers(reply) => {
                let list = self
                    .peers
                    .iter()
                    .map(|(id, p)| PeerInfo {
                        id: id.clone(),
                        name: p.name.clone(),
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
            Command::Forge {
                sender,
                file_id,
                reply,
            } => {
                self.offered.insert(
                    file_id,
                    Offered {
                        info: FileInfo {
                            file_id,
                            name: "forged".into(),
                            size: 1,
                            hash: Hash::of(b"").to_hex(),
                            sender,
                            expires_in_ms: 60_000,
                            group: None,
                        },
                        expires_at: Instant::now() + Duration::from_secs(60),
                    },
                );
                let _ = reply.send(self.start_download(file_id, Save::InMemory));
            }
            Command::Leave(_) => {}
        }
    }

    fn share(
        &mut self,
        f: PreparedFile,
        audience: Audience,
        ttl: Duration,
        group: OfferGroup,
    ) -> JobId {
        let job_id = JobId::new();
        let file_id = FileId::new();
        let expires = self.now_ms().saturating_add(ttl.as_millis() as u64);
        let shared = SharedFile {
            job_id,
            group,
            path: f.path,
            name: f.name,
            identity: f.identity,
            hash: f.hash,
            state: UploadState::new(audience, f.identity.size, expires),
        };
        tracing::info!(%job_id, %file_id, name = %shared.name, size = shared.identity.size, "sharing file");
        self.emit(Event::UploadStarted {
            job_id,
            file_id,
            name: shared.name.clone(),
            size: shared.identity.size,
        });
        self.shares.insert(file_id, shared);
        let ready: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.control_open)
            .map(|(id, _)| id.clone())
            .collect();
        for peer in ready {
            self.offer_to(&file_id, &peer);
        }
        job_id
    }

    /// Send the offer of `file_id` to `peer` if it should get it.
    fn offer_to(&mut self, file_id: &FileId, peer: &str) {
        let now = self.now_ms();
        let Some(shared) = self.shares.get_mut(file_id) else {
            return;
        };
        if !shared.state.should_offer(peer, now) {
            return;
        }
        shared.state.mark_offered(peer);
        let msg = ControlMessage::Offer {
            file_id: *file_id,
            name: shared.name.clone(),
            size: shared.identity.size,
            hash: shared.hash.to_hex(),
            ttl_ms: shared.state.ttl_ms(now),
            group: Some(shared.group),
        };
        self.send_control(peer, msg);
    }

    fn send_control(&self, peer: &str, msg: ControlMessage) {
        if let Some(p) = self.peers.get(peer) {
            let _ = p.conn.tx.send(ConnCommand::Control(msg));
        }
    }

    fn start_download(&mut self, file_id: FileId, save: Save) -> Result<JobId> {
        if self.downloaded.contains(&file_id)
            || self.downloads.values().any(|d| d.file_id == file_id)
        {
            return Err(Error::AlreadyDownloaded(file_id.to_string()));
        }
        let offer = self
            .offered
            .get(&file_id)
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        if offer.expires_at <= Instant::now() {
            return Err(Error::OfferExpired(file_id.to_string()));
        }
        let info = &offer.info;
        let limit = match save {
            Save::InMemory => self.config.max_memory_download.min(self.config.max_file_size),
            Save::ToDir(_) => self.config.max_file_size,
        };
        if info.size > limit {
            return Err(Error::FileTooLarge {
                name: info.name.clone(),
                size: info.size,
                max: limit,
            });
        }
        if let Save::ToDir(dir) = &save {
            check_writable_dir(dir)?;
        }
        let hash: Hash = info
            .hash
            .parse()
            .map_err(|_| Error::Protocol("offer carried an invalid hash".into()))?;
        if !self.peers.contains_key(&info.sender) {
            return Err(Error::PeerGone(info.sender.clone()));
        }
        let job_id = JobId::new();
        self.downloads.insert(
            job_id,
            Download {
                file_id,
                sender: info.sender.clone(),
                name: info.name.clone(),
                size: info.size,
                hash,
                save,
                task: None,
            },
        );
        let sender = info.sender.clone();
        tracing::info!(%job_id, %file_id, "requesting download");
        self.send_control(
            &sender,
            ControlMessage::Request {
                job_id,
                file_id,
                offset: 0,
            },
        );
        Ok(job_id)
    }

    fn decline(&mut self, file_id: FileId) -> Result<()> {
        let offer = self
            .offered
            .remove(&file_id)
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        self.send_control(&offer.info.sender, ControlMessage::Decline { file_id });
        Ok(())
    }

    // ── signaling ──

    fn add_peer(&mut self, info: PeerInfo) {
        if info.id == self.me || self.peers.contains_key(&info.id) {
            return;
        }
        let conn = connection::spawn(ConnSetup {
            remote: info.id.clone(),
            // Deterministic: the smaller client ID makes the offer, so there is no glare.
            offerer: self.me < info.id,
            settings: self.config.rtc.clone(),
            ice_servers: self.ice_servers.clone(),
            signal_tx: self.signal_tx.clone(),
            events: self.conn_tx.clone(),
        });
        self.peers.insert(
            info.id,
            RemotePeer {
                name: info.name,
                conn,
                control_open: false,
            },
        );
    }

    fn on_signaling(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::PeerJoined { peer } => {
                self.emit(Event::PeerJoined {
                    peer: peer.id.clone(),
                    name: peer.name.clone(),
                });
                self.add_peer(peer);
            }
            ServerMessage::PeerLeft { id } => {
                self.emit(Event::PeerLeft { peer: id.clone() });
                self.peer_gone(&id);
            }
            ServerMessage::Signal { from, data } => {
                let Some(p) = self.peers.get(&from) else {
                    tracing::debug!(%from, "signal from unknown client");
                    return;
                };
                match serde_json::from_value::<SignalData>(data) {
                    Ok(data) => {
                        let _ = p.conn.tx.send(ConnCommand::RemoteSignal(data));
                    }
                    Err(e) => tracing::warn!(%from, "ignoring malformed signal: {e}"),
                }
            }
            ServerMessage::Error { code, message } => {
                self.emit(Event::Error {
                    peer: None,
                    code,
                    message,
                });
            }
            ServerMessage::Welcome { .. } | ServerMessage::Pong => {}
        }
    }

    fn peer_gone(&mut self, peer: &str) {
        let Some(p) = self.peers.remove(peer) else {
            return;
        };
        let _ = p.conn.tx.send(ConnCommand::Close(None));
        // Uploads to it.
        let serving: Vec<JobId> = self
            .serving
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in serving {
            if let Some(s) = self.serving.remove(&id) {
                s.task.abort();
            }
        }
        let files: Vec<FileId> = self.shares.keys().copied().collect();
        for file_id in files {
            if let Some(shared) = self.shares.get_mut(&file_id) {
                let outcome_known = shared.state.on_peer_gone(peer);
                self.emit_completion(&file_id, peer, outcome_known, true);
            }
        }
        // Downloads from it.
        let jobs: Vec<JobId> = self
            .downloads
            .iter()
            .filter(|(_, d)| d.sender == peer)
            .map(|(id, _)| *id)
            .collect();
        for job_id in jobs {
            self.fail_download(
                job_id,
                Error::PeerGone(peer.to_string()),
                false,
            );
        }
        self.offered.retain(|_, o| o.info.sender != peer);
    }

    /// Emit the outcome event of `peer` (if `changed`) and the completion, if any.
    fn emit_completion(
        &mut self,
        file_id: &FileId,
        peer: &str,
        completion: Option<Completion>,
        peer_failed: bool,
    ) {
        let Some(shared) = self.shares.get(file_id) else {
            return;
        };
        let (job_id, name, size) = (shared.job_id, shared.name.clone(), shared.identity.size);
        if peer_failed && completion.is_none() {
            return;
        }
        match completion {
            Some(Completion::Completed(outcomes)) => self.emit(Event::UploadCompleted {
                job_id,
                file_id: *file_id,
                name,
                size,
                outcomes: outcomes.into_iter().collect(),
            }),
            Some(Completion::Failed(_, code)) => self.emit(Event::UploadFailed {
                job_id: Some(job_id),
                file_id: Some(*file_id),
                name,
                size,
                code,
                message: format!("no recipient could receive the file (last: {peer})"),
            }),
            None => {}
        }
    }

    // ── connection events ──

    fn on_conn_event(&mut self, peer: String, ev: ConnEvent) {
        match ev {
            ConnEvent::ControlOpen(path) => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                p.control_open = true;
                self.emit(Event::Connection {
                    peer: peer.clone(),
                    path: path.as_ref().map(|p| p.kind),
                    local: path.as_ref().map(|p| p.local.clone()),
                    remote: path.map(|p| p.remote),
                });
                self.send_control(
                    &peer,
                    ControlMessage::Hello {
                        version: CONTROL_VERSION,
                        name: self.config.name.clone(),
                    },
                );
                let files: Vec<FileId> = self.shares.keys().copied().collect();
                for file_id in files {
                    self.offer_to(&file_id, &peer);
                }
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
            ConnEvent::JobChannel { job_id, channel } => self.on_job_channel(&peer, job_id, channel),
            ConnEvent::Down(reason) => {
                if self.peers.contains_key(&peer) {
                    tracing::info!(%peer, %reason, "connection down");
                    self.emit(Event::Error {
                        peer: Some(peer.clone()),
                        code: codes::PEER_GONE,
                        message: format!("connection lost: {reason}"),
                    });
                    self.peer_gone(&peer);
                }
            }
        }
    }

    fn on_control(&mut self, peer: &str, msg: ControlMessage) {
        match msg {
            ControlMessage::Hello { version, .. } => {
                if version != CONTROL_VERSION {
                    self.send_control(
                        peer,
                        ControlMessage::Error {
                            job_id: None,
                            file_id: None,
                            code: codes::UNSUPPORTED_VERSION,
                            message: format!("control protocol {version} is not supported"),
                        },
                    );
                }
            }
            ControlMessage::Offer {
                file_id,
                name,
                size,
                hash,
                ttl_ms,
                group,
            } => {
                if self.offered.contains_key(&file_id) || self.downloaded.contains(&file_id) {
                    return;
                }
                let info = FileInfo {
                    file_id,
                    name: name.clone(),
                    size,
                    hash: hash.clone(),
                    sender: peer.to_string(),
                    expires_in_ms: ttl_ms,
                    group,
                };
                self.offered.insert(
                    file_id,
                    Offered {
                        info: info.clone(),
                        expires_at: Instant::now() + Duration::from_millis(ttl_ms),
                    },
                );
                self.emit(Event::FileUploadStarted {
                    file_id,
                    name: name.clone(),
                    size,
                    sender: peer.to_string(),
                });
                self.emit(Event::DownloadAvailable {
                    file_id,
                    name,
                    size,
                    hash,
                    sender: peer.to_string(),
                    expires_in_ms: ttl_ms,
                    group,
                });
                if self.config.auto_accept {
                    let dir = self.config.download_dir.clone();
                    if let Err(e) = self.start_download(file_id, Save::ToDir(dir)) {
                        self.emit(Event::DownloadFailed {
                            job_id: None,
                            file_id,
                            name: info.name,
                            size,
                            code: e.code(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            ControlMessage::Revoke { file_id } => {
                self.offered
                    .retain(|id, o| !(*id == file_id && o.info.sender == peer));
            }
            ControlMessage::Request {
                job_id,
                file_id,
                offset,
            } => self.on_request(peer, job_id, file_id, offset),
            ControlMessage::Decline { file_id } => {
                if let Some(shared) = self.shares.get_mut(&file_id) {
                    let job_id = shared.job_id;
                    let completion = shared.state.on_outcome(peer, Outcome::Declined);
                    self.emit(Event::RecipientOutcome {
                        job_id,
                        file_id,
                        peer: peer.to_string(),
                        outcome: Outcome::Declined,
                    });
                    self.emit_completion(&file_id, peer, completion, false);
                }
            }
            ControlMessage::Progress { job_id, received } => {
                let Some(s) = self.serving.get(&job_id).filter(|s| s.peer == peer) else {
                    return;
                };
                let file_id = s.file_id;
                if let Some(shared) = self.shares.get_mut(&file_id)
                    && let Some(bytes) = shared.state.on_progress(peer, received)
                {
                    let ev = Event::UploadProgress {
                        job_id: shared.job_id,
                        file_id,
                        peer: peer.to_string(),
                        bytes,
                        size: shared.identity.size,
                    };
                    self.emit(ev);
                }
            }
            ControlMessage::Done { job_id, ok, code } => {
                let Some(s) = self.serving.remove(&job_id) else {
                    return;
                };
                if s.peer != peer {
                    self.serving.insert(job_id, s);
                    return;
                }
                s.task.abort();
                let outcome = if ok {
                    Outcome::Delivered
                } else {
                    Outcome::Failed {
                        code: code.unwrap_or(codes::DOWNLOAD_FAILED),
                    }
                };
                if let Some(shared) = self.shares.get_mut(&s.file_id) {
                    let up_job = shared.job_id;
                    let completion = shared.state.on_outcome(peer, outcome.clone());
                    self.emit(Event::RecipientOutcome {
                        job_id: up_job,
                        file_id: s.file_id,
                        peer: peer.to_string(),
                        outcome,
                    });
                    self.emit_completion(&s.file_id, peer, completion, false);
                }
            }
            ControlMessage::Cancel { job_id, code } => {
                if let Some(s) = self.serving.remove(&job_id) {
                    s.task.abort();
                } else if self.downloads.get(&job_id).is_some_and(|d| d.sender == peer) {
                    self.fail_download(
                        job_id,
                        Error::from_remote(
                            code.unwrap_or(codes::CANCELLED_BY_PEER),
                            "cancelled by the sender",
                        ),
                        false,
                    );
                }
            }
            ControlMessage::Error {
                job_id,
                file_id,
                code,
                message,
            } => {
                let job = job_id.filter(|j| self.downloads.get(j).is_some_and(|d| d.sender == peer));
                match job {
                    Some(job_id) => {
                        self.fail_download(job_id, Error::from_remote(code, message), false)
                    }
                    None => {
                        tracing::warn!(%peer, ?file_id, code, %message, "peer reported an error");
                        self.emit(Event::Error {
                            peer: Some(peer.to_string()),
                            code,
                            message,
                        });
                    }
                }
            }
        }
    }

    fn on_request(&mut self, peer: &str, job_id: JobId, file_id: FileId, offset: u64) {
        let now = self.now_ms();
        let refuse = |code: u16, message: String| ControlMessage::Error {
            job_id: Some(job_id),
            file_id: Some(file_id),
            code,
            message,
        };
        let Some(shared) = self.shares.get(&file_id) else {
            self.send_control(peer, refuse(codes::FILE_NOT_AVAILABLE, format!("file {file_id} is not shared")));
            return;
        };
        if let Err(code) = shared.state.authorize(peer, offset, now) {
            tracing::warn!(%peer, %file_id, code, "refusing request");
            let message = match code {
                codes::NOT_PERMITTED => "you are not a recipient of this file".to_string(),
                codes::OFFER_EXPIRED => "the offer expired".to_string(),
                codes::ALREADY_DOWNLOADED => "you already downloaded this file".to_string(),
                _ => format!("invalid request (offset {offset})"),
            };
            self.send_control(peer, refuse(code, message));
            return;
        }
        if self.serving.contains_key(&job_id) {
            self.send_control(peer, refuse(codes::INVALID_JOB, "job already running".into()));
            return;
        }
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let _ = p.conn.tx.send(ConnCommand::OpenJob {
            job_id,
            reply: reply_tx,
        });
        let path = shared.path.clone();
        let identity = shared.identity;
        let reports = self.report_tx.clone();
        let span = tracing::info_span!("upload", job = %shared.job_id, download_job = %job_id, %peer);
        let task = tokio::spawn(
            async move {
                let result = async {
                    let channel = reply_rx
                        .await
                        .map_err(|_| Error::UploadFailed("connection closed".into()))??;
                    channel
                        .wait_open()
                        .await
                        .map_err(|_| Error::UploadFailed("data channel did not open".into()))?;
                    let sent = transfer::send_file(&channel, &path, offset, identity).await?;
                    // The recipient closes the channel once it has every byte; closing
                    // it from this side earlier could discard data still in flight.
                    channel.wait_closed().await;
                    Ok(sent)
                }
                .await;
                let _ = reports.send(Report::UploadStreamDone { job_id, result });
            }
            .instrument(span),
        );
        self.serving.insert(
            job_id,
            Serving {
                file_id,
                peer: peer.to_string(),
                task,
            },
        );
    }

    fn on_job_channel(&mut self, peer: &str, job_id: JobId, channel: RtcChannel) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            tracing::warn!(%peer, %job_id, "data channel for an unknown job");
            return;
        };
        if d.sender != peer || d.task.is_some() {
            tracing::warn!(%peer, %job_id, "unexpected data channel");
            return;
        }
        let offset = 0;
        let state = DownloadState::new(d.size, d.hash, offset, blake3::Hasher::new());
        let sink = match &d.save {
            Save::ToDir(dir) => Sink::Dir {
                dir: dir.clone(),
                name: sanitize_file_name(&d.name),
            },
            Save::InMemory => Sink::Memory,
        };
        let reports = self.report_tx.clone();
        let span = tracing::info_span!("download", job = %job_id, %peer);
        d.task = Some(tokio::spawn(
            async move {
                let progress = reports.clone();
                let result = transfer::receive(&channel, state, sink, job_id, move |received| {
                    let _ = progress.send(Report::DownloadProgress { job_id, received });
                })
                .await;
                channel.close().await;
                let _ = reports.send(Report::DownloadDone { job_id, result });
            }
            .instrument(span),
        ));
        let ev = Event::DownloadStarted {
            job_id,
            file_id: d.file_id,
            name: d.name.clone(),
            size: d.size,
            offset,
        };
        self.emit(ev);
    }

    // ── transfer reports ──

    fn on_report(&mut self, report: Report) {
        match report {
            Report::DownloadProgress { job_id, received } => {
                let Some(d) = self.downloads.get(&job_id) else {
                    return;
                };
                let ev = Event::DownloadProgress {
                    job_id,
                    file_id: d.file_id,
                    name: d.name.clone(),
                    bytes: received,
                    size: d.size,
                };
                let sender = d.sender.clone();
                self.emit(ev);
                self.send_control(&sender, ControlMessage::Progress { job_id, received });
            }
            Report::DownloadDone { job_id, result } => match result {
                Ok(saved) => {
                    let Some(d) = self.downloads.remove(&job_id) else {
                        return;
                    };
                    self.downloaded.insert(d.file_id);
                    self.offered.remove(&d.file_id);
                    self.send_control(
                        &d.sender,
                        ControlMessage::Done {
                            job_id,
                            ok: true,
                            code: None,
                        },
                    );
                    let (path, data) = match saved {
                        Saved::Path(p) => (Some(p), None),
                        Saved::Memory(b) => (None, Some(b)),
                    };
                    tracing::info!(%job_id, ?path, "download completed and verified");
                    self.emit(Event::DownloadCompleted {
                        job_id,
                        file_id: d.file_id,
                        name: d.name,
                        size: d.size,
                        path,
                        data,
                    });
                }
                Err(e) => self.fail_download(job_id, e, true),
            },
            Report::UploadStreamDone { job_id, result } => {
                if let Err(e) = result {
                    let Some(s) = self.serving.remove(&job_id) else {
                        return;
                    };
                    tracing::warn!(%job_id, "upload stream failed: {e}");
                    self.send_control(
                        &s.peer,
                        ControlMessage::Error {
                            job_id: Some(job_id),
                            file_id: Some(s.file_id),
                            code: e.code(),
                            message: e.to_string(),
                        },
                    );
                    if let Some(shared) = self.shares.get_mut(&s.file_id) {
                        let up_job = shared.job_id;
                        let outcome = Outcome::Failed { code: e.code() };
                        let completion = shared.state.on_outcome(&s.peer, outcome.clone());
                        self.emit(Event::RecipientOutcome {
                            job_id: up_job,
                            file_id: s.file_id,
                            peer: s.peer.clone(),
                            outcome,
                        });
                        self.emit_completion(&s.file_id, &s.peer, completion, false);
                    }
                }
            }
        }
    }

    fn fail_download(&mut self, job_id: JobId, e: Error, tell_sender: bool) {
        let Some(d) = self.downloads.remove(&job_id) else {
            return;
        };
        if let Some(t) = d.task {
            t.abort();
        }
        if let Save::ToDir(dir) = &d.save {
            let _ = std::fs::remove_file(dir.join(transfer::partial_name(&job_id)));
        }
        tracing::warn!(%job_id, code = e.code(), "download failed: {e}");
        if tell_sender {
            self.send_control(
                &d.sender,
                ControlMessage::Done {
                    job_id,
                    ok: false,
                    code: Some(e.code()),
                },
            );
        }
        self.emit(Event::DownloadFailed {
            job_id: Some(job_id),
            file_id: d.file_id,
            name: d.name,
            size: d.size,
            code: e.code(),
            message: e.to_string(),
        });
    }
}

fn check_writable_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| transfer::storage_error(dir, &e))?;
    if !meta.is_dir() {
        return Err(Error::StorageAccessDenied(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().readonly() {
        return Err(Error::StorageAccessDenied(format!(
            "{} is read-only",
            dir.display()
        )));
    }
    Ok(())
}
