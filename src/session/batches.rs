//! Batches (docs/PROTOCOL.md, "Batches"): many small files of one sender on one data
//! channel. The sender streams the jobs of a `batch-request`; the recipient gathers its
//! queued small files into batches (`Session::start_queued`), reads their channel and
//! ends each file's job on its own.

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::downloads::{MAX_FRUITLESS_ATTEMPTS, REQUEST_ANSWER_TIMEOUT};
use super::{Phase, Report, Serving, Session};
use crate::error::{Error, Result, codes};
use crate::events::Event;
use crate::peer::Save;
use crate::proto::batch::{MAX_BATCH_FILE, batch_channel_label};
use crate::proto::control::{BatchJob, ControlMessage};
use crate::proto::ids::JobId;
use crate::proto::names::saved_place;
use crate::proto::upload::Outcome;
use crate::rtc::RtcStream;
use crate::store::JobStore;
use crate::transfer::batch::{BatchEnd, Incoming, Outgoing, receive_batch, send_batch};
use crate::transfer::{self, Place};
use crate::transport::Channel;

/// Batches one recipient may have served at once (each holds a data channel and up to
/// `MAX_BATCH_JOBS` jobs); one more is refused with 6010. Twice what a peershare
/// recipient asks for (`MAX_ACTIVE_PER_SENDER` requests, batches included, per sender):
/// a batch counts here until every job of it has its outcome, or, with none left to
/// serve, until its channel closes, which can come a moment after the recipient has
/// moved on to its next batch.
pub(super) const MAX_BATCHES_PER_PEER: usize = 2 * super::downloads::MAX_ACTIVE_PER_SENDER;

/// Files up to this size go in batches (a sender takes up to `MAX_BATCH_FILE`). Above
/// it a file's own channel costs little next to its bytes, and its own `fdatasync` less
/// than a `syncfs` that waits for every other batch's data too: 1,000 files of 1 MiB
/// went at 0.72× the single-file rate in batches, 0.83× one channel each
/// (docs/PERFORMANCE.md, "Many small files").
pub(super) const BATCHED_FILE: u64 = 256 * 1024;

/// A batch being streamed to a recipient.
pub(super) struct SendingBatch {
    pub peer: String,
    pub task: JoinHandle<()>,
    /// Its jobs still served (entries of `Session::serving`); at 0 the batch is over.
    pub pending: usize,
}

/// A batch of ours: requested, or running once its channel is open.
pub(super) struct ReceivingBatch {
    pub sender: String,
    /// Its jobs, in the order requested (the order of the channel), with their offered
    /// sizes (a job that ends before its bytes come still has them announced).
    pub jobs: Vec<(JobId, u64)>,
    pub since: Instant,
    pub task: Option<JoinHandle<()>>,
}

impl Session {
    /// Whether download `job_id` goes in a batch: a small file from its start into a
    /// directory, from a sender that takes `batch-request`.
    pub(super) fn batchable(&self, job_id: JobId) -> bool {
        let Some(d) = self.downloads.get(&job_id) else {
            return false;
        };
        matches!(d.save, Save::ToDir(_))
            && d.durable.is_some()
            && d.size <= BATCHED_FILE
            && d.tail.is_none()
            && d.counters
                .written
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            && self.links.get(&d.sender).is_some_and(|l| l.batch)
    }

    /// Whether download `job_id` still waits in batch `batch_id` (requested or running).
    fn in_batch(&self, job_id: JobId, batch_id: JobId) -> bool {
        self.downloads
            .get(&job_id)
            .is_some_and(|d| matches!(d.phase, Phase::Batched { batch } if batch == batch_id))
    }

    /// Recipient: ask `sender` for the files of `jobs` on one channel.
    pub(super) fn request_batch(&mut self, sender: &str, jobs: Vec<JobId>) {
        let batch_id = JobId::new();
        let mut wire = Vec::with_capacity(jobs.len());
        let mut sized = Vec::with_capacity(jobs.len());
        for job_id in jobs {
            if let Some(d) = self.downloads.get_mut(&job_id) {
                d.phase = Phase::Batched { batch: batch_id };
                wire.push(BatchJob {
                    job_id,
                    file_id: d.file_id,
                });
                sized.push((job_id, d.size));
            }
        }
        if wire.is_empty() {
            return;
        }
        tracing::info!(%batch_id, %sender, files = wire.len(), "requesting a batch");
        self.receiving_batches.insert(
            batch_id,
            ReceivingBatch {
                sender: sender.to_string(),
                jobs: sized,
                since: self.config.clock.now(),
                task: None,
            },
        );
        self.send_control(
            sender,
            ControlMessage::BatchRequest {
                batch_id,
                jobs: wire,
            },
        );
    }

    /// Recipient: the sender opened the channel of one of our batches.
    pub(super) fn on_batch_channel(&mut self, peer: &str, batch_id: JobId, channel: RtcStream) {
        let Some(batch) = self.receiving_batches.get(&batch_id) else {
            tracing::warn!(%peer, %batch_id, "data channel for an unknown batch");
            return;
        };
        if batch.sender != peer || batch.task.is_some() {
            tracing::warn!(%peer, %batch_id, "unexpected batch channel");
            return;
        }
        let mut store = None;
        let mut incoming = Vec::with_capacity(batch.jobs.len());
        let mut started = Vec::new();
        for &(job_id, offered) in &batch.jobs {
            let live = self
                .downloads
                .get(&job_id)
                .filter(|d| d.ending.is_none() && self.in_batch(job_id, batch_id));
            let (size, hash, place, counters) = match live {
                Some(d) => {
                    if store.is_none() {
                        store = d.durable.as_ref().map(|(s, _)| s.clone());
                    }
                    let (dirs, name) = saved_place(d.path.as_deref(), &d.name);
                    let place = Place {
                        name,
                        dirs,
                        executable: d.executable,
                        replace: self.config.overwrite,
                    };
                    started.push(Event::DownloadStarted {
                        job_id,
                        file_id: d.file_id,
                        name: d.name.clone(),
                        size: d.size,
                        offset: 0,
                    });
                    (d.size, d.hash, Some(place), d.counters.clone())
                }
                // Ended before its bytes came: they are read and dropped.
                None => (
                    offered,
                    crate::proto::hash::Hash::of(b""),
                    None,
                    Default::default(),
                ),
            };
            incoming.push(Incoming {
                job_id,
                size,
                hash,
                place,
                counters,
            });
        }
        let store = store.unwrap_or_else(|| JobStore::new(&self.config.download_dir));
        for ev in started {
            self.emit(ev);
        }
        let limit = self.limit.clone();
        let reports = self.report_tx.clone();
        let files = reports.clone();
        let span = tracing::info_span!("batch", batch = %batch_id, %peer);
        let task = tokio::spawn(
            async move {
                let end = receive_batch(&channel, store, incoming, limit, move |job_id, result| {
                    let _ = files.send(Report::BatchFileDone { job_id, result });
                })
                .await;
                channel.close().await;
                let _ = reports.send(Report::BatchDone { batch_id, end });
            }
            .instrument(span),
        );
        if let Some(batch) = self.receiving_batches.get_mut(&batch_id) {
            batch.task = Some(task);
        }
    }

    /// Recipient: one file of a batch ended.
    pub(super) fn on_batch_file_done(&mut self, job_id: JobId, result: Result<transfer::Saved>) {
        let in_batch = self
            .downloads
            .get(&job_id)
            .is_some_and(|d| matches!(d.phase, Phase::Batched { .. }));
        if in_batch {
            self.end_download(job_id, result);
        }
    }

    /// Recipient: a batch's channel ended. Its jobs without an outcome try again (after
    /// a transport failure, as a job whose channel closed) or fail (the sender broke the
    /// batch protocol).
    pub(super) fn on_batch_done(&mut self, batch_id: JobId, end: BatchEnd) {
        let Some(batch) = self.receiving_batches.remove(&batch_id) else {
            return;
        };
        if let Err(e) = &end.result {
            tracing::info!(%batch_id, code = e.code(), unfinished = end.unfinished.len(), "batch ended: {e}");
        }
        for (job_id, _) in batch.jobs {
            if !self.in_batch(job_id, batch_id) {
                continue;
            }
            let e = match &end.result {
                Err(e)
                    if e.code() == codes::DOWNLOAD_FAILED && end.unfinished.contains(&job_id) =>
                {
                    // Cut off (a lost connection): ask again, in a new batch, unless it
                    // is being cancelled or has run out of attempts.
                    let e = Error::DownloadFailed(e.to_string());
                    if let Some(d) = self.downloads.get_mut(&job_id)
                        && d.ending.is_none()
                    {
                        d.fruitless += 1;
                        if d.fruitless <= MAX_FRUITLESS_ATTEMPTS {
                            d.phase = Phase::Queued;
                            self.request(job_id);
                        } else {
                            self.fail_download(job_id, e);
                        }
                        continue;
                    }
                    e
                }
                Err(e) => Error::from_remote(e.code(), e.to_string()),
                Ok(()) => Error::Protocol("the batch ended without this file".into()),
            };
            self.end_download(job_id, Err(e));
        }
        self.start_queued();
    }

    /// Recipient: the sender refused batch `batch_id` as a whole (an `error` naming it):
    /// its jobs fail with that code. Whether `batch_id` was one of ours.
    pub(super) fn on_batch_refused(
        &mut self,
        peer: &str,
        batch_id: JobId,
        code: u16,
        message: &str,
    ) -> bool {
        let ours = self
            .receiving_batches
            .get(&batch_id)
            .is_some_and(|b| b.sender == peer && b.task.is_none());
        let Some(batch) = ours
            .then(|| self.receiving_batches.remove(&batch_id))
            .flatten()
        else {
            return false;
        };
        tracing::warn!(%peer, %batch_id, code, "the sender refused the batch: {message}");
        for (job_id, _) in batch.jobs {
            if self.in_batch(job_id, batch_id) {
                self.fail_download(job_id, Error::from_remote(code, message));
            }
        }
        self.start_queued();
        true
    }

    /// Recipient: a job of batch `batch_id` ended before the batch's channel opened (the
    /// sender refused it with an `error`, or it was cancelled). A batch left without a
    /// job waiting is dropped: it holds a request slot, and its sender will not open a
    /// channel for it if it refused every job.
    pub(super) fn batch_job_left(&mut self, batch_id: JobId) {
        let Some(batch) = self.receiving_batches.get(&batch_id) else {
            return;
        };
        if batch.task.is_some() {
            return;
        }
        let waiting = batch
            .jobs
            .iter()
            .any(|(job_id, _)| self.in_batch(*job_id, batch_id));
        if !waiting {
            self.receiving_batches.remove(&batch_id);
            self.start_queued();
        }
    }

    /// Recipient: batches requested that got no channel in time are asked for again (as
    /// part of new batches), like unanswered requests.
    pub(super) fn expire_unanswered_batches(&mut self, now: Instant) {
        let stale: Vec<JobId> = self
            .receiving_batches
            .iter()
            .filter(|(_, b)| {
                b.task.is_none() && now.duration_since(b.since) >= REQUEST_ANSWER_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect();
        for batch_id in stale {
            tracing::info!(%batch_id, "no data channel for the batch");
            let Some(batch) = self.receiving_batches.remove(&batch_id) else {
                continue;
            };
            for (job_id, _) in batch.jobs {
                if self.in_batch(job_id, batch_id) {
                    let e = Error::DownloadFailed(
                        "the sender did not start sending in repeated attempts".into(),
                    );
                    self.retry_fruitless(job_id, e, true);
                }
            }
        }
    }

    /// Recipient: the connection to `peer` is gone; its batches that have no channel
    /// yet are dropped and their jobs wait for the connection (running ones end when
    /// their channel closes).
    pub(super) fn suspend_requested_batches(&mut self, peer: &str) {
        let now = self.config.clock.now();
        let requested: Vec<JobId> = self
            .receiving_batches
            .iter()
            .filter(|(_, b)| b.sender == peer && b.task.is_none())
            .map(|(id, _)| *id)
            .collect();
        for batch_id in requested {
            let Some(batch) = self.receiving_batches.remove(&batch_id) else {
                continue;
            };
            for (job_id, _) in batch.jobs {
                if self.in_batch(job_id, batch_id)
                    && let Some(d) = self.downloads.get_mut(&job_id)
                {
                    d.phase = Phase::Suspended { since: now };
                }
            }
        }
    }

    /// Sender: serve a `batch-request`. The batch as a whole is refused (an `error`
    /// naming `batch_id`, 6010) beyond the bounds; each job is checked like a `request`
    /// from offset 0, and one that is refused is announced as a `skip` on the channel.
    pub(super) fn on_batch_request(&mut self, peer: &str, batch_id: JobId, jobs: Vec<BatchJob>) {
        if self.links.get(peer).is_none_or(|l| l.conn.is_none()) {
            return;
        }
        let refuse = |message: String| ControlMessage::Error {
            job_id: Some(batch_id),
            file_id: None,
            code: codes::TOO_MANY_JOBS,
            message,
        };
        let peer_batches = self
            .sending_batches
            .values()
            .filter(|b| b.peer == peer)
            .count();
        if self.sending_batches.contains_key(&batch_id) || peer_batches >= MAX_BATCHES_PER_PEER {
            let msg = format!(
                "this sender already serves {peer_batches} batches to you (at most {MAX_BATCHES_PER_PEER}), or this batch"
            );
            self.send_control(peer, refuse(msg));
            return;
        }
        let (peer_jobs, total_jobs) = self.jobs_served(peer, &[]);
        if let Err(e) = self.serve_bounds.admit(peer_jobs, total_jobs) {
            tracing::warn!(%peer, %batch_id, "refusing batch: {e}");
            self.send_control(peer, refuse(e.to_string()));
            return;
        }
        let now = self.now_ms();
        let mut outgoing = Vec::with_capacity(jobs.len());
        let mut pending = 0;
        for BatchJob { job_id, file_id } in jobs {
            let skip = |error: Error| Outgoing::Skip {
                job_id,
                file_id,
                error,
            };
            if let Some((code, message)) = self.refusal(peer, file_id, 0, now, false) {
                outgoing.push(skip(Error::from_remote(code, message)));
                continue;
            }
            let Some(shared) = self.shares.get(&file_id) else {
                continue;
            };
            let (path, identity) = (shared.path.clone(), shared.identity);
            if identity.size > MAX_BATCH_FILE {
                outgoing.push(skip(Error::Protocol(format!(
                    "a batch carries files of at most {MAX_BATCH_FILE} bytes"
                ))));
                continue;
            }
            // One job per file and recipient, as for `request`.
            let replaced = match self.replaceable_jobs(peer, file_id, job_id) {
                Ok(replaced) => replaced,
                Err(e) => {
                    outgoing.push(skip(e));
                    continue;
                }
            };
            let sent = self.take_over(job_id, replaced);
            self.serving.insert(
                job_id,
                Serving {
                    file_id,
                    peer: peer.to_string(),
                    task: None,
                    batch: Some(batch_id),
                    sent: sent.clone(),
                },
            );
            pending += 1;
            outgoing.push(Outgoing::File {
                job_id,
                path,
                identity,
                sent,
            });
        }
        if pending == 0 {
            // Nothing to send: no channel, each job refused as a `request` would be.
            for job in outgoing {
                if let Outgoing::Skip {
                    job_id,
                    file_id,
                    error,
                } = job
                {
                    self.send_control(
                        peer,
                        ControlMessage::Error {
                            job_id: Some(job_id),
                            file_id: Some(file_id),
                            code: error.code(),
                            message: error.to_string(),
                        },
                    );
                }
            }
            return;
        }
        let limit = self.limit.clone();
        let span = tracing::info_span!("upload-batch", batch = %batch_id, %peer);
        // The recipient closes the channel after the `end` frame.
        let Some(task) = self.spawn_stream(
            peer,
            batch_channel_label(&batch_id),
            span,
            move |channel| {
                Box::pin(async move {
                    send_batch(
                        &*channel,
                        outgoing,
                        limit.as_deref(),
                        transfer::ReadPermits::global(),
                    )
                    .await
                })
            },
            move |result| Report::BatchStreamDone { batch_id, result },
            Report::BatchChannelStuck { batch_id },
        ) else {
            return;
        };
        self.sending_batches.insert(
            batch_id,
            SendingBatch {
                peer: peer.to_string(),
                task,
                pending,
            },
        );
    }

    /// Remove served job `job_id`. A batch whose last job it was is over for the bounds
    /// (the recipient has sent every outcome, so it read the batch to its end, or
    /// cancelled what was left): it stops counting, and its task is stopped.
    pub(super) fn remove_serving(&mut self, job_id: &JobId) -> Option<Serving> {
        let s = self.serving.remove(job_id)?;
        if let Some(batch_id) = s.batch
            && let Some(batch) = self.sending_batches.get_mut(&batch_id)
        {
            batch.pending = batch.pending.saturating_sub(1);
            if batch.pending == 0
                && let Some(batch) = self.sending_batches.remove(&batch_id)
            {
                batch.task.abort();
            }
        }
        Some(s)
    }

    /// Sender: a batch was streamed (or its channel closed). A file that could not be
    /// read whole and unchanged was announced as skipped: that recipient's outcome for
    /// it is `failed` with the code. The others wait for the recipient's `done`.
    pub(super) fn on_batch_stream_done(
        &mut self,
        batch_id: JobId,
        result: Result<Vec<(JobId, Error)>>,
    ) {
        let Some(batch) = self.sending_batches.remove(&batch_id) else {
            return;
        };
        let unreadable = match result {
            Ok(unreadable) => unreadable,
            Err(e) => {
                tracing::debug!(%batch_id, "batch stream ended early: {e}");
                return;
            }
        };
        for (job_id, e) in unreadable {
            if let Some(s) = self.serving.get(&job_id).filter(|s| s.peer == batch.peer) {
                let file_id = s.file_id;
                tracing::warn!(%job_id, "a file of the batch could not be sent: {e}");
                self.finish_serving(
                    job_id,
                    file_id,
                    &batch.peer,
                    Outcome::Failed { code: e.code() },
                );
            }
        }
    }

    /// Sender: a batch's channel did not open in time; replace the connection (as for a
    /// job's channel).
    pub(super) fn on_batch_channel_stuck(&mut self, batch_id: JobId) {
        if let Some(batch) = self.sending_batches.remove(&batch_id) {
            tracing::warn!(%batch_id, peer = %batch.peer, "the batch's data channel did not open; replacing the connection");
            self.drop_connection(&batch.peer);
        }
    }

    /// Sender: stop the batches streaming to `peer` (its connection is gone); their
    /// jobs stay, without a stream, for the recipient to ask again.
    pub(super) fn stop_batches_to(&mut self, peer: &str) {
        self.sending_batches.retain(|_, b| {
            let keep = b.peer != peer;
            if !keep {
                b.task.abort();
            }
            keep
        });
    }

    /// Both sides: stop every batch task (the session ends).
    pub(super) fn abort_batches(&mut self) {
        for (_, b) in self.sending_batches.drain() {
            b.task.abort();
        }
        for (_, b) in self.receiving_batches.drain() {
            if let Some(t) = b.task {
                t.abort();
            }
        }
    }
}
