//! The public [`Peer`] handle. It sends commands to the session task
//! (`crate::session`), which owns all state and emits [`Event`]s.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peershare_signaling::protocol::PeerInfo;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::config::PeerConfig;
use crate::error::{Error, Result};
use crate::events::{Event, FileInfo};
use crate::proto::code::{Code, MAX_ROUTE_LEN, MIN_CHOSEN_ROUTE_LEN};
use crate::proto::control::MAX_TEXT_BYTES;
use crate::proto::ids::{FileId, JobId};
use crate::proto::upload::Audience;
use crate::session::{Command, PreparedFile, Session, ShareTree};
use crate::signal_client::{self, JoinRequest};
use crate::store::JobRecord;
use crate::transfer::walk::{self, Skipped, WalkOptions, WalkedFile};
use crate::transfer::{self, FileIdentity};

/// Who receives shared files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Everyone in the session, including peers who join while the offer is alive.
    Broadcast,
    /// Only these client IDs. The upload waits for each that is a member of the session
    /// (an outcome: delivered, declined, or failed, e.g. 6003 when it left for good);
    /// an ID of no member is offered the file if it joins while the offer is alive.
    To(Vec<String>),
}

/// What a peer does in its session. Every member it connects to learns it from the
/// peer's `hello` (docs/PROTOCOL.md, "Peers that only send").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Shares files and receives what the others share (the default).
    #[default]
    SendAndReceive,
    /// Only shares files, as `peershare send` does. The other members never count it as a
    /// recipient of their shares: it gets no [`Event::RecipientOutcome`] of theirs and
    /// their uploads do not wait for it. Their offers still reach it
    /// ([`Event::DownloadAvailable`]: who shares what), but it answers none of them:
    /// [`Peer::download`], [`Peer::decline`], [`Peer::decline_identical`] and
    /// [`Peer::resume_download`] fail with 5091 (and so does [`Peer::skip_if_identical`]
    /// when it finds an identical copy), and `auto_accept` is ignored.
    SendOnly,
}

/// Where a download goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// Into this directory, under the sanitized offered name (never overwriting). The
    /// directory is created, with its parents, if it does not exist (5089 if it cannot
    /// be). The job is durable there: it survives network loss and process restarts.
    ToDir(PathBuf),
    /// Into memory; the bytes arrive in [`Event::DownloadCompleted`]. An interrupted
    /// in-memory download starts over.
    InMemory,
}

/// Options of one `send_files` or `send_paths` call.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Offer lifetime; the configured default when `None`. It bounds when downloads
    /// start, not how long they take: a download that started may resume after it. When
    /// it ends, every recipient that never fetched the file gets its outcome (failed
    /// 6001), so the upload ends.
    pub ttl: Option<Duration>,
    /// Names to offer the files under instead of their own, one per path
    /// (`send_files` only).
    pub names: Option<Vec<String>>,
    /// `send_paths`: follow symbolic links inside directories (a directory reached
    /// twice is skipped, so a cycle ends).
    pub follow_symlinks: bool,
    /// Offer the files as texts for the recipient to show rather than save
    /// (`peershare send --text`): each at most
    /// [`crate::proto::control::MAX_TEXT_BYTES`] (else 1185).
    /// Recipients that do not know texts see ordinary files.
    pub text: bool,
}

/// What [`Peer::send_paths`] shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPaths {
    /// One upload job per file, with the name it is offered under (its place in the
    /// tree, or its own name for a file named on its own).
    pub files: Vec<(JobId, String)>,
    /// Directories with no file below them, recreated by recipients.
    pub dirs: Vec<String>,
    /// What was not shared, and why.
    pub skipped: Vec<Skipped>,
}

/// The stream of events of a peer.
///
/// Events that arise together (a recipient's outcome and the upload's completion, say)
/// are delivered together: once one of them was received, the others are ready for
/// [`Events::try_recv`].
pub struct Events {
    rx: mpsc::UnboundedReceiver<Vec<Event>>,
    ready: VecDeque<Event>,
}

impl Events {
    /// The next event; `None` once the peer has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        while self.ready.is_empty() {
            self.ready.extend(self.rx.recv().await?);
        }
        self.ready.pop_front()
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Event> {
        while self.ready.is_empty() {
            self.ready.extend(self.rx.try_recv().ok()?);
        }
        self.ready.pop_front()
    }
}

/// A member of a session that shares and receives files.
pub struct Peer {
    cmd: mpsc::UnboundedSender<Command>,
    client_id: watch::Receiver<String>,
    send_only_members: watch::Receiver<BTreeSet<String>>,
    session: String,
    joined_server: String,
    config: Arc<PeerConfig>,
}

impl Peer {
    /// Join the session described by `config`, through the first of its signaling
    /// servers ([`PeerConfig::servers`]) that can be reached and takes joins. If the
    /// signaling connection is lost later, the peer rejoins by itself
    /// ([`Event::SignalingLost`]).
    pub async fn join(config: PeerConfig) -> Result<(Peer, Events)> {
        let given = config
            .session
            .as_deref()
            .map(str::parse::<Code>)
            .transpose()?;
        if config.create_session {
            let Some(code) = &given else {
                return Err(Error::InvalidArgument(
                    "create_session needs a code in `session`".into(),
                ));
            };
            if code.route().len() < MIN_CHOSEN_ROUTE_LEN {
                return Err(Error::InvalidArgument(format!(
                    "a chosen code's route (the part before the first '-') must be \
                     {MIN_CHOSEN_ROUTE_LEN} to {MAX_ROUTE_LEN} characters from [A-Za-z0-9_]"
                )));
            }
        }
        let joined = signal_client::connect_any(
            &config.servers(),
            JoinRequest {
                session: given.as_ref().map(|c| c.route().to_string()),
                create: config.create_session,
                name: config.name.clone(),
                password: config.password.clone(),
                relay_only: config.rtc.relay_only,
                ca_file: config.ca_file.clone(),
                resume: None,
            },
        )
        .await?;
        let code = match given {
            Some(code) if code.route() == joined.session => code,
            Some(_) => {
                return Err(Error::Protocol(
                    "the signaling server put us in another session".into(),
                ));
            }
            None => Code::generate(&joined.session, config.secret_words, &mut rand::rng())
                .map_err(|e| Error::Protocol(format!("server-chosen session code: {e}")))?,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let span = tracing::info_span!("peer", id = %joined.client_id, session = %joined.session);
        let session_code = code.to_string();
        let joined_server = joined.server.clone();
        let session = Session::new(config.clone(), joined, code, ev_tx);
        let peer = Peer {
            cmd: cmd_tx,
            client_id: session.client_id_watch(),
            send_only_members: session.send_only_watch(),
            session: session_code,
            joined_server,
            config,
        };
        tokio::spawn(session.run(cmd_rx).instrument(span));
        Ok((
            peer,
            Events {
                rx: ev_rx,
                ready: VecDeque::new(),
            },
        ))
    }

    /// Our client ID in the session. It stays the same for the life of the peer unless
    /// a rejoin after a lost signaling connection could not get it back: then
    /// [`Event::SignalingReconnected`] carries the new one (`resumed: false`), and this
    /// returns it from then on.
    pub fn client_id(&self) -> String {
        self.client_id.borrow().clone()
    }

    /// The session's code, `ROUTE-SECRET`: what others join with
    /// ([`PeerConfig::session`]). Its secret is never sent to the signaling server.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The signaling server that took the join (normalized URL), the first of
    /// [`PeerConfig::servers`] that could be reached. A rejoin after a lost connection
    /// may go through another one: [`Event::SignalingReconnected`] names it.
    pub fn joined_server(&self) -> &str {
        &self.joined_server
    }

    /// Whether the member `peer` (a client ID) said it only sends ([`Role::SendOnly`], as
    /// `peershare send` does): it is no recipient of our shares. Known from its `hello`,
    /// which comes before anything else it says, so by its first
    /// [`Event::DownloadAvailable`]; `false` before that and for a member that is gone.
    pub async fn only_sends(&self, peer: &str) -> bool {
        self.send_only_members.borrow().contains(peer)
    }

    /// The client IDs of the members that said they only send, as a watch that changes
    /// when one's `hello` arrives or one leaves: how an application that waits for its
    /// recipients learns that a member it waits for is none (a `send` that shares with
    /// others only offers it nothing).
    pub fn send_only_members(&self) -> watch::Receiver<BTreeSet<String>> {
        self.send_only_members.clone()
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

    /// [`Peer::send_files`] with options (offer lifetime, names).
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
        if let Some(names) = &options.names
            && names.len() != paths.len()
        {
            return Err(Error::InvalidArgument(format!(
                "{} names for {} files",
                names.len(),
                paths.len()
            )));
        }
        let files: Vec<WalkedFile> = paths
            .iter()
            .map(|path| WalkedFile {
                path: path.clone(),
                tree_path: None,
                executable: false,
            })
            .collect();
        self.share_walked(files, ShareTree::default(), share, &options)
            .await
    }

    /// Share files and whole directory trees with everyone or with chosen client IDs:
    /// one upload job per regular file, all in one group (one question for a
    /// recipient). A file inside a directory is offered with its place in the tree
    /// (`photos/2024/a.jpg`); directories with no file below them are sent to
    /// recipients that recreate trees; the executable bit travels. Symbolic links inside
    /// directories are skipped unless [`SendOptions::follow_symlinks`], and special files
    /// always: both are listed in [`SharedPaths::skipped`]. At most
    /// [`PeerConfig::max_files_per_request`] files (5092); every file is checked and
    /// hashed before anything is offered.
    pub async fn send_paths(
        &self,
        paths: &[PathBuf],
        share: Share,
        options: SendOptions,
    ) -> Result<SharedPaths> {
        if paths.is_empty() {
            return Err(Error::InvalidArgument("no files to send".into()));
        }
        if options.names.is_some() {
            return Err(Error::InvalidArgument(
                "send_paths takes no names: files keep theirs".into(),
            ));
        }
        let walk_options = WalkOptions {
            follow_symlinks: options.follow_symlinks,
            max_files: self.config.max_files_per_request,
        };
        let list = paths.to_vec();
        let walked = tokio::task::spawn_blocking(move || walk::walk(&list, walk_options))
            .await
            .map_err(|e| Error::UploadFailed(format!("walking task: {e}")))??;
        let shown: Vec<String> = walked
            .files
            .iter()
            .map(|f| {
                f.tree_path
                    .clone()
                    .unwrap_or_else(|| walk::display_name(&f.path))
            })
            .collect();
        let tree = ShareTree {
            label: walked.label.clone(),
            dirs: walked.dirs.clone(),
        };
        let jobs = self
            .share_walked(walked.files, tree, share, &options)
            .await?;
        Ok(SharedPaths {
            files: jobs.into_iter().zip(shown).collect(),
            dirs: walked.dirs,
            skipped: walked.skipped,
        })
    }

    /// Check, hash and offer walked files as one group.
    async fn share_walked(
        &self,
        walked: Vec<WalkedFile>,
        tree: ShareTree,
        share: Share,
        options: &SendOptions,
    ) -> Result<Vec<JobId>> {
        let audience = match share {
            Share::Broadcast => Audience::Broadcast,
            Share::To(ids) if ids.is_empty() => {
                return Err(Error::InvalidArgument("empty recipient list".into()));
            }
            Share::To(ids) => Audience::Only(ids.into_iter().collect()),
        };
        let mut files = Vec::with_capacity(walked.len());
        for (i, f) in walked.into_iter().enumerate() {
            let identity = FileIdentity::of(&f.path)?;
            let name = match (&options.names, &f.tree_path) {
                (Some(names), _) => names[i].clone(),
                (None, Some(tree_path)) => tree_path
                    .rsplit('/')
                    .next()
                    .unwrap_or(tree_path)
                    .to_string(),
                (None, None) => walk::display_name(&f.path),
            };
            let max = if options.text {
                self.config.max_file_size.min(MAX_TEXT_BYTES)
            } else {
                self.config.max_file_size
            };
            if identity.size > max {
                return Err(Error::FileTooLarge {
                    name,
                    size: identity.size,
                    max,
                });
            }
            let p = f.path.clone();
            let hash = tokio::task::spawn_blocking(move || transfer::hash_file(&p))
                .await
                .map_err(|e| Error::UploadFailed(format!("hashing task: {e}")))??;
            files.push(PreparedFile {
                path: f.path,
                name,
                tree_path: f.tree_path,
                executable: f.executable,
                identity,
                hash,
                text: options.text,
            });
        }
        let ttl = options.ttl.unwrap_or(self.config.offer_ttl);
        self.ask(|reply| Command::Share {
            files,
            tree,
            audience,
            ttl,
            reply,
        })
        .await
    }

    /// Add the member `peer` (a client ID) to the recipients of targeted upload jobs
    /// (from [`Share::To`]): they are offered to it as to the others, now if its
    /// connection is up, else once it is. A broadcast reaches it anyway. 5099 if a job is
    /// not one of our uploads (then nothing changes).
    pub async fn share_with(&self, jobs: &[JobId], peer: &str) -> Result<()> {
        self.ask(|reply| Command::ShareWith {
            jobs: jobs.to_vec(),
            peer: peer.to_string(),
            reply,
        })
        .await?
    }

    /// Files currently offered to us (expired and downloaded ones are left out).
    pub async fn available_files(&self) -> Vec<FileInfo> {
        self.ask(Command::Available).await.unwrap_or_default()
    }

    /// Download an offered file. Returns the download job ID; the outcome arrives as
    /// events. Into a directory that holds a partial download of the same content (same
    /// size and BLAKE3) the old job is resumed from its durable offset and its ID is
    /// returned; a partial download of a file with the same name but other content is
    /// discarded with a `download-failed` 5100 for the old job, and the file starts over.
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
        self.ask(|reply| Command::Decline { file_id, reply })
            .await?
    }

    /// Skip an offered file that `target` already holds: if `target` is a regular file
    /// of the offered size whose BLAKE3 is the offered hash (it is hashed only when the
    /// size matches), the offer is declined telling the sender that this side has an
    /// identical copy (the sender counts it as delivered, with nothing sent),
    /// [`Event::DownloadSkipped`] follows, and the answer is `true`. Otherwise nothing
    /// happens and the answer is `false`: download it as usual. `target` is where the
    /// file would be saved, e.g. the download directory joined with
    /// [`sanitize_file_name`](crate::proto::names::sanitize_file_name) of its name.
    /// When `target` is a regular file: 1181 if the file is not (or no longer) offered,
    /// 5089 if `target` has the right size but cannot be read.
    pub async fn skip_if_identical(&self, file_id: FileId, target: &Path) -> Result<bool> {
        // Nearly always there is no file of that name, or not one of a size that could
        // match: one `stat` answers without asking the session or a blocking thread.
        let size = match std::fs::metadata(target) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => return Ok(false),
        };
        let info = self
            .ask(|reply| Command::Offered(file_id, reply))
            .await?
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        if info.size != size {
            return Ok(false);
        }
        let hash: crate::proto::hash::Hash = info
            .hash
            .parse()
            .map_err(|_| Error::Protocol("offer carried an invalid hash".into()))?;
        let path = target.to_path_buf();
        let same = tokio::task::spawn_blocking(move || {
            transfer::is_identical_copy(&path, info.size, &hash)
        })
        .await
        .map_err(|e| Error::DownloadFailed(format!("hashing task: {e}")))??;
        if same {
            self.decline_identical(file_id, target.to_path_buf())
                .await?;
        }
        Ok(same)
    }

    /// Decline an offered file because `path` holds an identical copy (the caller checked
    /// it, e.g. with [`transfer::is_identical_copy`]): the sender is told (`decline` with
    /// `have`) and counts it as delivered; [`Event::DownloadSkipped`] follows.
    pub async fn decline_identical(&self, file_id: FileId, path: PathBuf) -> Result<()> {
        self.ask(|reply| Command::DeclineIdentical {
            file_id,
            path,
            reply,
        })
        .await?
    }

    /// Durable download jobs found in the configured download directory (partial files
    /// left by an interrupted run).
    pub fn resumable_jobs(&self) -> Vec<JobRecord> {
        crate::store::JobStore::new(&self.config.download_dir).list()
    }

    /// Resume a durable job of the download directory from its stored offset, from any
    /// peer that currently offers the same content. 1181 if nobody offers it (yet), 5099
    /// for an unknown job.
    pub async fn resume_download(&self, job_id: JobId) -> Result<JobId> {
        self.ask(|reply| Command::Resume { job_id, reply }).await?
    }

    /// Stop an upload job: its recipients get a coded cancel (6004) and the offer is
    /// withdrawn. 5099 for an unknown job, 5098 if it already completed.
    pub async fn cancel_upload(&self, job_id: JobId) -> Result<()> {
        self.ask(|reply| Command::CancelUpload { job_id, reply })
            .await?
    }

    /// Cancel every upload job that is still running.
    pub async fn cancel_all_uploads(&self) -> Result<()> {
        self.ask(Command::CancelAllUploads).await
    }

    /// Stop a download job; the sender gets a coded cancel (6004). Its partial data is
    /// removed unless `keep_partial` (then it can be resumed later). 5099 for an unknown
    /// job.
    pub async fn cancel_download(&self, job_id: JobId, keep_partial: bool) -> Result<()> {
        self.ask(|reply| Command::CancelDownload {
            job_id,
            keep_partial,
            reply,
        })
        .await?
    }

    /// Cancel every running download (partial data removed).
    pub async fn cancel_all_downloads(&self) -> Result<()> {
        self.ask(Command::CancelAllDownloads).await
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

    /// Close the peer-to-peer connection to `peer` abruptly, as a network failure would.
    /// For fault-injection tests; the connection is re-established and jobs resume.
    #[doc(hidden)]
    pub async fn debug_drop_connection(&self, peer: &str) -> Result<()> {
        self.ask(|reply| Command::DropConnection {
            peer: peer.to_string(),
            reply,
        })
        .await
    }

    /// Send a raw control message to `peer`, as a hostile or buggy client would. For
    /// tests of the other side's enforcement; nothing of ours changes (a `request` sent
    /// this way starts no download here).
    #[doc(hidden)]
    pub async fn debug_send_control(
        &self,
        peer: &str,
        msg: crate::proto::control::ControlMessage,
    ) -> Result<()> {
        self.ask(|reply| Command::SendControl {
            peer: peer.to_string(),
            msg,
            reply,
        })
        .await
    }

    /// How many recipient jobs this peer is serving (one per recipient and file being
    /// sent or waiting for a resume). For tests of the sender's bounds and cleanup.
    #[doc(hidden)]
    pub async fn debug_serving_count(&self) -> usize {
        self.ask(Command::ServingCount).await.unwrap_or_default()
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
