//! Our shared files: offers, serving requests (with resume offsets), per-recipient
//! outcomes, and cancelling uploads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;

use super::connection::ConnCommand;
use super::{PreparedFile, Report, Serving, Session, ShareTree, SharedFile};
use crate::error::{Error, Result, codes};
use crate::events::Event;
use crate::proto::control::{ControlMessage, OfferGroup};
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::resume::{Tail, check_range};
use crate::proto::upload::{Audience, Completion, Outcome, Recorded, UploadState};
use crate::rtc::RtcChannel;
use crate::transfer;

/// Longest wait for a job's data channel to open (its DCEP handshake, one round trip
/// plus retransmissions). Beyond it the connection is replaced (see
/// `Session::on_job_channel_stuck`); a netsim run once sat 120 s with the channel never
/// opening while the connection stayed up (docs/PERFORMANCE.md, "Lossy paths").
pub(super) const JOB_CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits on the recipient jobs a sender serves, so that no recipient (nor all of them
/// together) can make it open data channels, spawn tasks or fill buffers without end.
///
/// A recipient has at most one job per file: a `request` with a new job ID for a file
/// the same peer is being sent is refused with 6010; one for a file whose job has no
/// stream running (lost channel, suspended) replaces that job. Beyond that:
/// - *jobs* (a data channel and a task each): a request beyond `jobs_per_peer` jobs of
///   that peer or `jobs_total` jobs in all is refused with 6010;
/// - *streams*: of the jobs served, at most `streams_per_peer` per peer and
///   `streams_total` in all read the file and fill their channel at once; the others wait
///   with their channel open (a recipient that asks for many files gets them a few at a
///   time, and one that does not read holds no more than its streams).
///
/// The blocking reads of all streams together are bounded by `transfer::ReadPermits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServeBounds {
    pub jobs_per_peer: usize,
    pub jobs_total: usize,
    pub streams_per_peer: usize,
    pub streams_total: usize,
}

/// The bounds a session serves with. Jobs per peer allow every job a recipient requests
/// at a time (`downloads::MAX_ACTIVE_PER_SENDER`; an older recipient that requests a
/// whole share at once gets the first 1024 files, and 6010 beyond).
pub(super) const SERVE_BOUNDS: ServeBounds = ServeBounds {
    jobs_per_peer: 1024,
    jobs_total: 4096,
    streams_per_peer: 8,
    streams_total: 64,
};

impl ServeBounds {
    /// Whether one more job may be served to a peer that has `peer_jobs` jobs while
    /// `total_jobs` are served in all (jobs the request replaces not counted). Pure.
    pub fn admit(&self, peer_jobs: usize, total_jobs: usize) -> Result<()> {
        if peer_jobs >= self.jobs_per_peer {
            return Err(Error::TooManyJobs(format!(
                "this sender already serves {peer_jobs} jobs to you (at most {})",
                self.jobs_per_peer
            )));
        }
        if total_jobs >= self.jobs_total {
            return Err(Error::TooManyJobs(format!(
                "this sender already serves {total_jobs} jobs (at most {})",
                self.jobs_total
            )));
        }
        Ok(())
    }
}

/// `hashes-request`s of one recipient waiting or being answered; more are refused with
/// 6010. A recipient asks once per job it resumes after a restart, and has at most
/// `jobs_per_peer` jobs.
pub(super) const MAX_HASH_REQUESTS_PER_PEER: usize = SERVE_BOUNDS.jobs_per_peer;
/// `hashes-request`s of one recipient hashed at once. Each reads its range block by block
/// under the shared read permits (`transfer::ReadPermits`), so however many a recipient
/// sends, the streams of others wait behind at most this many of its blocks.
pub(super) const HASHERS_PER_PEER: usize = 2;

/// The streaming slots of [`ServeBounds`]: one semaphore per recipient and one for all.
/// An upload task takes its peer's slot, then a global one, once its channel is open, and
/// gives them back when it has sent the last byte. Besides, per recipient, the slots of
/// its `hashes-request`s ([`HASHERS_PER_PEER`]).
pub(super) struct StreamSlots {
    per_peer: usize,
    total: Arc<Semaphore>,
    peers: HashMap<String, Arc<Semaphore>>,
    hashers: HashMap<String, Arc<Semaphore>>,
}

impl StreamSlots {
    pub fn new(bounds: ServeBounds) -> Self {
        Self {
            per_peer: bounds.streams_per_peer.max(1),
            total: Arc::new(Semaphore::new(bounds.streams_total.max(1))),
            peers: HashMap::new(),
            hashers: HashMap::new(),
        }
    }

    /// The hashing slots of `peer`.
    fn hashers_for(&mut self, peer: &str) -> Arc<Semaphore> {
        self.hashers
            .entry(peer.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(HASHERS_PER_PEER)))
            .clone()
    }

    /// The slots of `peer` and the global ones.
    pub(super) fn for_peer(&mut self, peer: &str) -> (Arc<Semaphore>, Arc<Semaphore>) {
        let per_peer = self.per_peer;
        let mine = self
            .peers
            .entry(peer.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_peer)))
            .clone();
        (mine, self.total.clone())
    }

    /// Forget a recipient that is gone for good.
    fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
        self.hashers.remove(peer);
    }
}

#[cfg(test)]
impl Session {
    /// Recipients that have streaming slots.
    pub(super) fn stream_slots_peers(&self) -> usize {
        self.stream_slots.peers.len()
    }
}

impl Session {
    pub(super) fn share_files(
        &mut self,
        files: Vec<PreparedFile>,
        tree: ShareTree,
        audience: Audience,
        ttl: Duration,
    ) -> Vec<JobId> {
        let group_id = uuid::Uuid::new_v4();
        let count = files.len() as u32;
        let bytes = files.iter().map(|f| f.identity.size).sum();
        let expires = self.now_ms().saturating_add(ttl.as_millis() as u64);
        self.register_tree(group_id, tree.dirs);
        // The group's empty directories go before its offers to peers already talking.
        let talking: Vec<String> = self
            .links
            .iter()
            .filter(|(id, l)| l.control_open && audience.includes(id))
            .map(|(id, _)| id.clone())
            .collect();
        for peer in talking {
            self.send_group_dirs(&peer, group_id);
        }
        let mut ids = Vec::with_capacity(files.len());
        for (index, f) in files.into_iter().enumerate() {
            let job_id = JobId::new();
            let file_id = FileId::new();
            let mut shared = SharedFile {
                job_id,
                group: OfferGroup {
                    id: group_id,
                    count,
                    index: index as u32,
                    label: tree.label.clone(),
                    bytes: Some(bytes),
                },
                path: f.path,
                name: f.name,
                tree_path: f.tree_path,
                executable: f.executable,
                identity: f.identity,
                hash: f.hash,
                text: f.text,
                state: UploadState::new(audience.clone(), f.identity.size, expires),
                informed: Default::default(),
            };
            // The members the share names are waited for (not the names of no one).
            if let Audience::Only(named) = &audience {
                for peer in named.iter().filter(|p| self.links.contains_key(*p)) {
                    shared.state.awaits(peer);
                }
            }
            tracing::info!(%job_id, %file_id, name = %shared.name, size = shared.identity.size, "sharing file");
            self.emit(Event::UploadStarted {
                job_id,
                file_id,
                name: shared.name.clone(),
                size: shared.identity.size,
                path: shared.tree_path.clone(),
            });
            self.upload_groups
                .add("", group_id, count, tree.label.as_deref(), file_id);
            self.shares.insert(file_id, shared);
            let ready: Vec<String> = self
                .links
                .iter()
                .filter(|(_, l)| l.control_open)
                .map(|(id, _)| id.clone())
                .collect();
            for peer in ready {
                self.offer_to(&file_id, &peer);
            }
            ids.push(job_id);
        }
        if let Audience::Only(named) = &audience {
            for peer in named {
                self.fail_if_refused(peer);
            }
        }
        ids
    }

    /// Add `peer` to the audience of the upload jobs `jobs` (targeted shares; a
    /// broadcast reaches it anyway) and offer them to it now if its connection is up,
    /// else when it is. 5099 if one of the jobs is not ours (then nothing changes).
    pub(super) fn share_with(&mut self, jobs: &[JobId], peer: &str) -> Result<()> {
        let mut files: Vec<(u32, FileId)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let found = self
                .shares
                .iter()
                .find(|(_, s)| s.job_id == *job)
                .map(|(id, s)| (s.group.index, *id));
            files.push(found.ok_or_else(|| Error::InvalidJob(job.to_string()))?);
        }
        let member = self.links.contains_key(peer);
        for (_, file_id) in &files {
            if let Some(shared) = self.shares.get_mut(file_id) {
                shared.state.add_recipient(peer);
                if member {
                    shared.state.awaits(peer);
                }
            }
        }
        if self.links.get(peer).is_some_and(|l| l.control_open) {
            files.sort();
            for (_, file_id) in files {
                self.offer_to(&file_id, peer);
            }
        }
        self.fail_if_refused(peer);
        Ok(())
    }

    /// A share named `peer`, a client refused for good: it will never reach it, so its
    /// outcome is recorded now (the refusal's code) instead of when the offer expires.
    fn fail_if_refused(&mut self, peer: &str) {
        if let Some(code) = self.links.get(peer).and_then(|l| l.auth.refusal()) {
            self.recipient_unreachable(peer, code);
        }
    }

    /// Offer every live share `peer` should get (on a new connection).
    pub(super) fn offer_all_to(&mut self, peer: &str) {
        let mut files: Vec<(u32, FileId)> = self
            .shares
            .iter()
            .map(|(id, s)| (s.group.index, *id))
            .collect();
        files.sort();
        for (_, file_id) in files {
            self.offer_to(&file_id, peer);
        }
    }

    /// Send the offer of `file_id` to `peer` if it should get it. A member that only
    /// sends gets it once, for its information, without becoming a recipient.
    fn offer_to(&mut self, file_id: &FileId, peer: &str) {
        let now = self.now_ms();
        let send_only = self.links.get(peer).is_some_and(|l| l.send_only);
        let Some(shared) = self.shares.get_mut(file_id) else {
            return;
        };
        if !shared.state.should_offer(peer, now) {
            return;
        }
        let mut completion = None;
        if send_only {
            // For its information: a targeted share that names it does not wait for it.
            completion = shared.state.forget(peer);
            if !shared.informed.insert(peer.to_string()) {
                self.emit_completion(file_id, completion);
                return;
            }
        } else {
            shared.state.mark_offered(peer);
        }
        let msg = ControlMessage::Offer {
            file_id: *file_id,
            name: shared.name.clone(),
            size: shared.identity.size,
            hash: shared.hash.to_hex(),
            ttl_ms: shared.state.ttl_ms(now),
            group: Some(shared.group.clone()),
            path: shared.tree_path.clone(),
            executable: shared.executable,
            text: shared.text,
        };
        self.send_control(peer, msg);
        self.emit_completion(file_id, completion);
    }

    pub(super) fn on_request(&mut self, peer: &str, job_id: JobId, file_id: FileId, offset: u64) {
        let now = self.now_ms();
        let refuse = |code: u16, message: String| ControlMessage::Error {
            job_id: Some(job_id),
            file_id: Some(file_id),
            code,
            message,
        };
        let started = self.started(job_id, file_id);
        if let Some((code, message)) = self.refusal(peer, file_id, offset, now, started) {
            tracing::warn!(%peer, %file_id, code, "refusing request");
            self.send_control(peer, refuse(code, message));
            return;
        }
        if self.links.get(peer).is_none_or(|l| l.conn.is_none()) {
            return;
        }
        // One job per file and recipient. A new job ID for a file this peer is being
        // sent is refused (a repeated request must not add a second stream, and aborting
        // the running one for each repeat would make the connection open and close a
        // data channel per request); one whose job has no stream running (its channel was
        // lost, or it was suspended) replaces that job.
        let replaced = match self.replaceable_jobs(peer, file_id, job_id) {
            Ok(replaced) => replaced,
            Err(e) => {
                tracing::debug!(%peer, %job_id, %file_id, "refusing request: {e}");
                self.send_control(peer, refuse(e.code(), e.to_string()));
                return;
            }
        };
        let except: Vec<JobId> = replaced.iter().copied().chain([job_id]).collect();
        let (peer_jobs, total_jobs) = self.jobs_served(peer, &except);
        if let Err(e) = self.serve_bounds.admit(peer_jobs, total_jobs) {
            tracing::warn!(%peer, %job_id, %file_id, "refusing request: {e}");
            self.send_control(peer, refuse(e.code(), e.to_string()));
            return;
        }
        // A job resumed by a restarted recipient (new client ID) takes over its old
        // pending entry; if that entry was the last unresolved one, the upload is complete.
        let previous = self
            .serving
            .get(&job_id)
            .map(|s| (s.peer.clone(), s.file_id));
        let sent = self.take_over(job_id, replaced);
        if let Some((old_peer, old_file)) = &previous
            && (old_peer != peer || *old_file != file_id)
            && let Some(old_share) = self.shares.get_mut(old_file)
        {
            let completion = old_share.state.forget(old_peer);
            self.emit_completion(old_file, completion);
        }
        let shared = &self.shares[&file_id];
        let path = shared.path.clone();
        let identity = shared.identity;
        let upload_job = shared.job_id;
        let limit = self.limit.clone();
        let task_sent = sent.clone();
        let span =
            tracing::info_span!("upload", job = %upload_job, download_job = %job_id, %peer, offset);
        let Some(task) = self.spawn_stream(
            peer,
            crate::proto::control::job_channel_label(&job_id),
            span,
            move |channel| {
                Box::pin(async move {
                    transfer::send_file(
                        &*channel,
                        &path,
                        offset,
                        identity,
                        &task_sent,
                        limit.as_deref(),
                    )
                    .await
                })
            },
            move |result| Report::UploadStreamDone { job_id, result },
            Report::JobChannelStuck { job_id },
        ) else {
            return;
        };
        self.serving.insert(
            job_id,
            Serving {
                file_id,
                peer: peer.to_string(),
                task: Some(task),
                batch: None,
                sent,
            },
        );
    }

    /// Spawn the task of one stream to `peer` (a job's or a batch's): the connection is
    /// asked for a data channel labelled `label`, and the task waits for it and for
    /// streaming slots ([`stream_slots`]), fills the channel with `fill` while its open
    /// is confirmed ([`while_opening`]), gives the slots back, waits until the recipient
    /// closes the channel (once it has every byte; closing it from this side earlier
    /// could discard data still in flight), and reports `done` with how it ended, or
    /// `stuck` if the channel did not open in time.
    /// `None` if there is no connection to `peer`.
    pub(super) fn spawn_stream<T: Send + 'static>(
        &mut self,
        peer: &str,
        label: String,
        span: tracing::Span,
        fill: impl FnOnce(Arc<RtcChannel>) -> StreamFill<T> + Send + 'static,
        done: impl FnOnce(Result<T>) -> Report + Send + 'static,
        stuck: Report,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let conn = self.links.get(peer).and_then(|l| l.conn.as_ref())?;
        let (reply_tx, reply) = oneshot::channel();
        let _ = conn.handle.tx.send(ConnCommand::OpenJob {
            label,
            reply: reply_tx,
        });
        let reports = self.report_tx.clone();
        let (peer_slots, all_slots) = self.stream_slots.for_peer(peer);
        Some(tokio::spawn(
            async move {
                let result = async {
                    let channel = Arc::new(
                        reply
                            .await
                            .map_err(|_| Error::UploadFailed("connection closed".into()))??,
                    );
                    let stream = async {
                        let slots = stream_slots(peer_slots, all_slots).await?;
                        Ok((fill(channel.clone()).await?, slots))
                    };
                    let Some((filled, slots)) = while_opening(&channel, stream).await? else {
                        return Ok(None);
                    };
                    drop(slots);
                    channel.wait_closed().await;
                    Ok(Some(filled))
                }
                .await;
                let _ = reports.send(match result.transpose() {
                    Some(result) => done(result),
                    None => stuck,
                });
            }
            .instrument(span),
        ))
    }

    /// Make room for the new stream of job `job_id`: the jobs it `replaced` (the
    /// recipient's other jobs for the same file, none streaming, see
    /// [`Session::replaceable_jobs`]) and the job's own earlier entry are dropped, their
    /// tasks stopped. Returns the job's byte counter: its own if it was served already
    /// (a resume), else a new one that carries what the replaced jobs sent.
    pub(super) fn take_over(&mut self, job_id: JobId, replaced: Vec<JobId>) -> Arc<AtomicU64> {
        let mut carried = 0;
        for old in replaced {
            if let Some(s) = self.remove_serving(&old) {
                tracing::info!(peer = %s.peer, file_id = %s.file_id, old_job = %old, new_job = %job_id, "a new request replaces the job");
                if let Some(t) = s.task {
                    t.abort();
                }
                carried += s.sent.load(Ordering::Relaxed);
            }
        }
        match self.remove_serving(&job_id) {
            Some(own) => {
                if let Some(t) = own.task {
                    t.abort();
                }
                own.sent
            }
            None => Arc::new(AtomicU64::new(carried)),
        }
    }

    /// Why a `request` (or `hashes-request`, or a job of a `batch-request`) of `peer`
    /// for `file_id` from `offset` is refused, if it is: the file is not shared (1181) or
    /// was cancelled (6004), or `peer` may not have it now (5091, 6001, 5101, 6005).
    /// `started`: the request continues a job already served (the offer's lifetime
    /// passing does not refuse it).
    pub(super) fn refusal(
        &self,
        peer: &str,
        file_id: FileId,
        offset: u64,
        now: u64,
        started: bool,
    ) -> Option<(u16, String)> {
        if self.revoked.contains(&file_id) {
            return Some((
                codes::CANCELLED_BY_PEER,
                "the sender cancelled this upload".into(),
            ));
        }
        let Some(shared) = self.shares.get(&file_id) else {
            return Some((
                codes::FILE_NOT_AVAILABLE,
                format!("file {file_id} is not shared"),
            ));
        };
        if self.links.get(peer).is_some_and(|l| l.send_only) {
            return Some((
                codes::NOT_PERMITTED,
                "you said you only send (`send-only`): you are no recipient".into(),
            ));
        }
        shared
            .state
            .authorize(peer, offset, now, started)
            .err()
            .map(|code| (code, refusal_message(code, offset)))
    }

    /// Whether job `job_id` of `file_id` started being served (it may be suspended): it
    /// began while the offer was alive, and may resume after the offer's lifetime.
    fn started(&self, job_id: JobId, file_id: FileId) -> bool {
        self.serving
            .get(&job_id)
            .is_some_and(|s| s.file_id == file_id)
    }

    /// The other jobs of `peer` for `file_id` that a new job `job_id` replaces; 6010 if
    /// one of them is streaming (one job per file and recipient).
    pub(super) fn replaceable_jobs(
        &self,
        peer: &str,
        file_id: FileId,
        job_id: JobId,
    ) -> Result<Vec<JobId>> {
        let same_file: Vec<(JobId, bool)> = self
            .serving
            .iter()
            .filter(|(id, s)| **id != job_id && s.peer == peer && s.file_id == file_id)
            .map(|(id, s)| (*id, self.streams(s)))
            .collect();
        if let Some((running, _)) = same_file.iter().find(|(_, running)| *running) {
            return Err(Error::TooManyJobs(format!(
                "this file is already being sent to you as job {running}"
            )));
        }
        Ok(same_file.into_iter().map(|(id, _)| id).collect())
    }

    /// Whether a served job has a stream running: its own task, or its batch's.
    pub(super) fn streams(&self, s: &Serving) -> bool {
        s.task.as_ref().is_some_and(|t| !t.is_finished())
            || s.batch.is_some_and(|b| {
                self.sending_batches
                    .get(&b)
                    .is_some_and(|batch| !batch.task.is_finished())
            })
    }

    /// The jobs served to `peer` and to everyone, as the bounds count them (a batch is
    /// one job), leaving out the jobs `except`.
    pub(super) fn jobs_served(&self, peer: &str, except: &[JobId]) -> (usize, usize) {
        let (mut mine, mut all) = (0, 0);
        let singles = self
            .serving
            .iter()
            .filter(|(id, s)| s.batch.is_none() && !except.contains(id))
            .map(|(_, s)| s.peer.as_str());
        let batches = self.sending_batches.values().map(|b| b.peer.as_str());
        for p in singles.chain(batches) {
            all += 1;
            mine += usize::from(p == peer);
        }
        (mine, all)
    }

    /// A recipient resuming job `job_id` after a restart asks for the block hashes of a
    /// range of the file (the bytes it holds past its checkpoint). Checked like a
    /// `request` (audience, lifetime, a live offer); the range must lie within the file.
    /// The hashes are computed off the session task and sent by `on_hashes_ready`.
    pub(super) fn on_hashes_request(
        &mut self,
        peer: &str,
        job_id: JobId,
        file_id: FileId,
        offset: u64,
        length: u64,
    ) {
        let now = self.now_ms();
        let refuse = |code: u16, message: String| ControlMessage::Error {
            job_id: Some(job_id),
            file_id: Some(file_id),
            code,
            message,
        };
        let started = self.started(job_id, file_id);
        if let Some((code, message)) = self.refusal(peer, file_id, offset, now, started) {
            tracing::warn!(%peer, %file_id, code, "refusing hashes-request");
            self.send_control(peer, refuse(code, message));
            return;
        }
        let Some(shared) = self.shares.get(&file_id) else {
            return;
        };
        let range = match check_range(offset, length, shared.identity.size) {
            Ok(range) => range,
            Err(e) => {
                let e = Error::Protocol(e.to_string());
                self.send_control(peer, refuse(e.code(), e.to_string()));
                return;
            }
        };
        let pending = self.hash_requests.get(peer).copied().unwrap_or(0);
        if pending >= MAX_HASH_REQUESTS_PER_PEER {
            let e = Error::TooManyJobs(format!(
                "{pending} hash requests of yours are being answered (at most {MAX_HASH_REQUESTS_PER_PEER})"
            ));
            self.send_control(peer, refuse(e.code(), e.to_string()));
            return;
        }
        let (path, identity) = (shared.path.clone(), shared.identity);
        *self.hash_requests.entry(peer.to_string()).or_insert(0) += 1;
        let hashers = self.stream_slots.hashers_for(peer);
        let reports = self.report_tx.clone();
        let peer = peer.to_string();
        let span = tracing::debug_span!("hashes", download_job = %job_id, %peer, offset, length);
        tokio::spawn(
            async move {
                let result = match hashers.acquire_owned().await {
                    Ok(_slot) => {
                        transfer::hash_blocks(
                            &path,
                            identity,
                            range,
                            transfer::ReadPermits::global(),
                        )
                        .await
                    }
                    Err(_) => Err(Error::UploadFailed("no hashing slot".into())),
                };
                let _ = reports.send(Report::HashesReady {
                    peer,
                    job_id,
                    file_id,
                    range,
                    result,
                });
            }
            .instrument(span),
        );
    }

    /// The block hashes a recipient asked for are ready (or could not be computed): send
    /// them, or the error (e.g. 5100 when the file changed since it was offered).
    pub(super) fn on_hashes_ready(
        &mut self,
        peer: &str,
        job_id: JobId,
        file_id: FileId,
        range: Tail,
        result: Result<Vec<Hash>>,
    ) {
        if let Some(n) = self.hash_requests.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.hash_requests.remove(peer);
            }
        }
        let msg = match result {
            Ok(hashes) => ControlMessage::Hashes {
                job_id,
                file_id,
                offset: range.offset,
                length: range.length,
                hashes: hashes.iter().map(Hash::to_hex).collect(),
            },
            Err(e) => {
                tracing::warn!(%peer, %job_id, "cannot hash the requested range: {e}");
                ControlMessage::Error {
                    job_id: Some(job_id),
                    file_id: Some(file_id),
                    code: e.code(),
                    message: e.to_string(),
                }
            }
        };
        self.send_control(peer, msg);
    }

    pub(super) fn on_recipient_progress(&mut self, peer: &str, job_id: JobId, received: u64) {
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
                name: shared.name.clone(),
                peer: peer.to_string(),
                bytes,
                size: shared.identity.size,
            };
            self.emit(ev);
        }
    }

    pub(super) fn on_recipient_done(
        &mut self,
        peer: &str,
        job_id: JobId,
        ok: bool,
        code: Option<u16>,
    ) {
        let Some(s) = self.serving.get(&job_id).filter(|s| s.peer == peer) else {
            return;
        };
        let outcome = if ok {
            Outcome::Delivered
        } else {
            Outcome::Failed {
                code: code.unwrap_or(codes::DOWNLOAD_FAILED),
            }
        };
        let file_id = s.file_id;
        self.finish_serving(job_id, file_id, peer, outcome);
    }

    /// The recipient declined the offer; with `have`, because it holds an identical copy
    /// already: that is a delivery, with nothing sent.
    pub(super) fn on_recipient_decline(&mut self, peer: &str, file_id: FileId, have: bool) {
        let outcome = if have {
            Outcome::Delivered
        } else {
            Outcome::Declined
        };
        self.record_outcome(&file_id, peer, outcome, 0);
    }

    /// A recipient refused an offer before any job existed (too large, cannot write):
    /// an `error` with our `file_id` and no job. Returns whether it was about one of our
    /// shares.
    pub(super) fn on_recipient_refusal(
        &mut self,
        peer: &str,
        file_id: FileId,
        code: u16,
        message: &str,
    ) -> bool {
        if !self.shares.contains_key(&file_id) {
            return false;
        }
        tracing::info!(%peer, %file_id, code, "recipient refused the offer: {message}");
        self.record_outcome(&file_id, peer, Outcome::Failed { code }, 0);
        true
    }

    /// The recipient cancelled its download job `job_id`.
    pub(super) fn on_recipient_cancel(
        &mut self,
        peer: &str,
        job_id: JobId,
        code: Option<u16>,
    ) -> bool {
        let Some(s) = self.serving.get(&job_id).filter(|s| s.peer == peer) else {
            return false;
        };
        let file_id = s.file_id;
        tracing::info!(%peer, %job_id, "recipient cancelled");
        self.finish_serving(
            job_id,
            file_id,
            peer,
            Outcome::Failed {
                code: code.unwrap_or(codes::CANCELLED_BY_PEER),
            },
        );
        true
    }

    /// Stop serving `job_id` and record the recipient's outcome.
    pub(super) fn finish_serving(
        &mut self,
        job_id: JobId,
        file_id: FileId,
        peer: &str,
        outcome: Outcome,
    ) {
        let Some(s) = self.remove_serving(&job_id) else {
            return;
        };
        if let Some(t) = s.task {
            t.abort();
        }
        let bytes_sent = s.sent.load(Ordering::Relaxed);
        self.record_outcome(&file_id, peer, outcome, bytes_sent);
    }

    /// Record `peer`'s outcome of `file_id` and report it, with the upload's completion
    /// if it resolved the last recipient. An outcome from a peer the offer never went to,
    /// or one that is final already, is not reported.
    fn record_outcome(&mut self, file_id: &FileId, peer: &str, outcome: Outcome, bytes_sent: u64) {
        let Some(shared) = self.shares.get_mut(file_id) else {
            return;
        };
        let recorded = shared.state.on_outcome(peer, outcome.clone());
        self.emit_recorded(file_id, peer, outcome, bytes_sent, recorded);
    }

    /// The events of an outcome as the upload job `recorded` it: `recipient-outcome`, and
    /// the job's completion if it was the last one.
    fn emit_recorded(
        &mut self,
        file_id: &FileId,
        peer: &str,
        outcome: Outcome,
        bytes_sent: u64,
        recorded: Recorded,
    ) {
        let Some(shared) = self.shares.get(file_id) else {
            return;
        };
        let (job_id, name, size) = (shared.job_id, shared.name.clone(), shared.identity.size);
        let Recorded::New(completion) = recorded else {
            tracing::debug!(%peer, %file_id, ?outcome, "outcome not recorded");
            return;
        };
        self.emit(Event::RecipientOutcome {
            job_id,
            file_id: *file_id,
            name,
            size,
            peer: peer.to_string(),
            outcome,
            bytes_sent,
        });
        self.emit_completion(file_id, completion);
    }

    fn emit_completion(&mut self, file_id: &FileId, completion: Option<Completion>) {
        let Some(shared) = self.shares.get(file_id) else {
            return;
        };
        let (job_id, name, size) = (shared.job_id, shared.name.clone(), shared.identity.size);
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
                message: "no recipient could receive the file".into(),
            }),
            None => {}
        }
    }

    /// `peer` only sends (its `hello` listed `send-only`): it is no recipient of our shares.
    /// An offer that went to it before its `hello` arrived is taken off its recipients
    /// without an outcome (as if it had gone for its information only), a targeted share
    /// that named it stops waiting for it, and an upload whose other recipients are all
    /// resolved completes now.
    pub(super) fn not_a_recipient(&mut self, peer: &str) {
        let mut files: Vec<(u32, FileId)> = self
            .shares
            .iter()
            .filter(|(_, s)| s.state.is_pending(peer) || s.state.audience().names(peer))
            .map(|(id, s)| (s.group.index, *id))
            .collect();
        files.sort();
        for (_, file_id) in files {
            let Some(shared) = self.shares.get_mut(&file_id) else {
                continue;
            };
            tracing::debug!(%peer, %file_id, "the peer only sends: not a recipient");
            shared.informed.insert(peer.to_string());
            let completion = shared.state.forget(peer);
            self.emit_completion(&file_id, completion);
        }
    }

    /// Whether an upload outcome from `peer` is still to come: a delivery it runs, or an
    /// offer it has not answered.
    pub(super) fn awaits_outcome_from(&self, peer: &str) -> bool {
        self.serving.values().any(|s| s.peer == peer)
            || self.shares.values().any(|s| s.state.is_pending(peer))
    }

    /// A departed recipient did not come back: its pending deliveries fail (6003).
    pub(super) fn recipient_gone(&mut self, peer: &str) {
        self.recipient_unreachable(peer, codes::PEER_GONE);
    }

    /// `peer` will never take a delivery from us again (it left for good: 6003; it was
    /// refused: 6011 authentication failed, 6012 code burnt): its deliveries under way,
    /// the offers it has not answered and the targeted shares that name it fail with
    /// `code`.
    pub(super) fn recipient_unreachable(&mut self, peer: &str, code: u16) {
        let jobs: Vec<(JobId, FileId)> = self
            .serving
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, s)| (*id, s.file_id))
            .collect();
        for (job_id, file_id) in jobs {
            self.finish_serving(job_id, file_id, peer, Outcome::Failed { code });
        }
        // Offers it never answered, and targeted shares that never reached it.
        let mut files: Vec<(u32, FileId)> = self
            .shares
            .iter()
            .map(|(id, s)| (s.group.index, *id))
            .collect();
        files.sort();
        for (_, file_id) in files {
            let Some(shared) = self.shares.get_mut(&file_id) else {
                continue;
            };
            let recorded = shared.state.on_peer_unreachable(peer, code);
            let outcome = Outcome::Failed { code };
            self.emit_recorded(&file_id, peer, outcome, 0, recorded);
        }
        self.stream_slots.forget(peer);
    }

    /// Uploads whose offer lifetime ended: the recipients it never will reach fail with
    /// 6001 (a delivery under way, or suspended and resumable, goes on), and an upload
    /// that reached nobody fails with 6001. Every upload job ends.
    pub(super) fn expire_shares(&mut self) {
        let now = self.now_ms();
        let mut files: Vec<(u32, FileId)> = self
            .shares
            .iter()
            .filter(|(_, s)| !s.state.is_finished() && !s.state.is_alive(now))
            .map(|(id, s)| (s.group.index, *id))
            .collect();
        if files.is_empty() {
            return;
        }
        files.sort();
        let served: HashSet<(FileId, String)> = self
            .serving
            .values()
            .map(|s| (s.file_id, s.peer.clone()))
            .collect();
        for (_, file_id) in files {
            let Some(shared) = self.shares.get_mut(&file_id) else {
                continue;
            };
            let delivering = |peer: &str| served.contains(&(file_id, peer.to_string()));
            let unreached = shared.state.expire(now, delivering);
            for peer in unreached {
                tracing::info!(%peer, %file_id, "the offer expired before this recipient fetched the file");
                let outcome = Outcome::Failed {
                    code: codes::OFFER_EXPIRED,
                };
                self.record_outcome(&file_id, &peer, outcome, 0);
            }
            if let Some(shared) = self.shares.get_mut(&file_id) {
                let completion = shared.state.settle();
                self.emit_completion(&file_id, completion);
            }
        }
    }

    /// The job's data channel did not open within [`JOB_CHANNEL_OPEN_TIMEOUT`] although the
    /// connection is up (`webrtc` 0.21 has no DCEP timeout for channels created after the
    /// association is up): replace the connection like a failed one, and the recipient
    /// resumes over the new one.
    pub(super) fn on_job_channel_stuck(&mut self, job_id: JobId) {
        let Some(s) = self.serving.get_mut(&job_id) else {
            return;
        };
        s.task = None;
        let peer = s.peer.clone();
        tracing::warn!(
            %job_id, %peer,
            "the job's data channel did not open within {} s; replacing the connection",
            JOB_CHANNEL_OPEN_TIMEOUT.as_secs()
        );
        self.drop_connection(&peer);
    }

    pub(super) fn on_upload_stream_done(&mut self, job_id: JobId, result: Result<u64>) {
        let Err(e) = result else {
            return; // finished sending; the recipient's `done` decides the outcome
        };
        let Some(s) = self.serving.get_mut(&job_id) else {
            return;
        };
        s.task = None;
        let (peer, file_id) = (s.peer.clone(), s.file_id);
        if e.code() == codes::UPLOAD_FAILED {
            // The data channel went away (lost connection, or the recipient stopped):
            // the recipient decides what follows (a resume, a cancel, or a `done`).
            tracing::debug!(%job_id, "upload stream ended early: {e}");
            return;
        }
        tracing::warn!(%job_id, "upload stream failed: {e}");
        self.send_control(
            &peer,
            ControlMessage::Error {
                job_id: Some(job_id),
                file_id: Some(file_id),
                code: e.code(),
                message: e.to_string(),
            },
        );
        self.finish_serving(job_id, file_id, &peer, Outcome::Failed { code: e.code() });
    }

    pub(super) fn cancel_upload(&mut self, job_id: JobId) -> Result<()> {
        let Some((&file_id, shared)) = self.shares.iter().find(|(_, s)| s.job_id == job_id) else {
            return Err(Error::InvalidJob(job_id.to_string()));
        };
        if shared.state.is_finished() {
            return Err(Error::AlreadyCompleted(job_id.to_string()));
        }
        let (name, size) = (shared.name.clone(), shared.identity.size);
        let mut offered: Vec<String> = shared.state.offered_peers();
        offered.extend(shared.informed.iter().cloned());
        let serving: Vec<(JobId, String)> = self
            .serving
            .iter()
            .filter(|(_, s)| s.file_id == file_id)
            .map(|(id, s)| (*id, s.peer.clone()))
            .collect();
        for (dl_job, peer) in serving {
            // The cancel goes out before the data channel closes.
            self.send_control(
                &peer,
                ControlMessage::Cancel {
                    job_id: dl_job,
                    code: Some(codes::CANCELLED_BY_PEER),
                },
            );
            if let Some(s) = self.remove_serving(&dl_job)
                && let Some(t) = s.task
            {
                t.abort();
            }
        }
        for peer in offered {
            self.send_control(&peer, ControlMessage::Revoke { file_id });
        }
        self.shares.remove(&file_id);
        self.revoked.insert(file_id);
        tracing::info!(%job_id, "upload cancelled");
        self.emit(Event::UploadCancelled {
            job_id,
            file_id,
            name,
            size,
        });
        Ok(())
    }
}

/// The streaming slots a stream fills its channel in: one of its peer's (`peer_slots`)
/// and one of all (`all_slots`).
async fn stream_slots(
    peer_slots: Arc<Semaphore>,
    all_slots: Arc<Semaphore>,
) -> Result<StreamPermits> {
    async {
        let mine = peer_slots.acquire_owned().await.ok()?;
        let all = all_slots.acquire_owned().await.ok()?;
        Some((mine, all))
    }
    .await
    .ok_or_else(|| Error::UploadFailed("no streaming slot".into()))
}

/// Run `work` (waiting for streaming slots, then filling `channel`) while waiting, at
/// most [`JOB_CHANNEL_OPEN_TIMEOUT`], for `channel` to open: its bytes go out right after
/// the channel's `DATA_CHANNEL_OPEN`, without waiting a round trip for the peer's
/// `DATA_CHANNEL_ACK` (RFC 8832 §6, [`RtcChannel`]), but a channel that does not open is
/// still given up on. `Ok(None)` when it did not open in time: not an outcome of the
/// upload, the connection is the problem.
async fn while_opening<T>(
    channel: &RtcChannel,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<Option<T>> {
    let open = tokio::time::timeout(JOB_CHANNEL_OPEN_TIMEOUT, channel.wait_open());
    tokio::pin!(open, work);
    let (mut done, mut opened) = (None, false);
    while done.is_none() || !opened {
        tokio::select! {
            result = &mut work, if done.is_none() => done = Some(result?),
            result = &mut open, if !opened => match result {
                Ok(Ok(())) => opened = true,
                Ok(Err(_)) => return Err(Error::UploadFailed("data channel did not open".into())),
                Err(_) => return Ok(None),
            },
        }
    }
    Ok(done)
}

/// What fills a stream's channel (see [`Session::spawn_stream`]).
pub(super) type StreamFill<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>;

/// A stream's slots: one of its peer's and one of all (see [`StreamSlots`]).
pub(super) type StreamPermits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// What a refused `request` or `hashes-request` says, by the code `authorize` gave.
fn refusal_message(code: u16, offset: u64) -> String {
    match code {
        codes::NOT_PERMITTED => "you are not a recipient of this file".to_string(),
        codes::OFFER_EXPIRED => "the offer expired".to_string(),
        codes::ALREADY_DOWNLOADED => "you already downloaded this file".to_string(),
        _ => format!("invalid request (offset {offset})"),
    }
}
