//! Offers to us and our download jobs: requesting, receiving, resuming after a lost
//! connection or a restart, verification outcomes, cancelling.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::Download;
use super::{Ending, Offered, Phase, Report, Session};
use crate::error::{Error, Result, codes};
use crate::events::{Event, FileInfo};
use crate::peer::Save;
use crate::proto::batch::{MAX_BATCH_BYTES, MAX_BATCH_JOBS};
use crate::proto::control::{ControlMessage, MAX_TEXT_BYTES};
use crate::proto::download::DownloadState;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::proto::names::saved_place;
use crate::proto::resume::{OfferMatch, Tail, match_offer, unverified_tail};
use crate::rtc::RtcStream;
use crate::store::{JobRecord, JobStore, RECORD_VERSION};
use crate::transfer::{self, DownloadCounters, Saved, Sink, UNRECORDED_BYTES};
use crate::transport::Channel;

/// Attempts in a row that may end without new bytes before a job fails.
pub(super) const MAX_FRUITLESS_ATTEMPTS: u32 = 5;
/// How long a request may go unanswered (no data channel) on a live connection before it
/// is sent again. Above the sender's own job-channel open timeout (20 s), after which it
/// replaces a connection whose channels do not open.
pub(super) const REQUEST_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most offers kept from one peer (a flood of offers must not exhaust memory).
const MAX_OFFERS_PER_PEER: usize = 100_000;
/// The longest offer lifetime kept (100 years): a longer `ttl_ms` counts as this.
const MAX_OFFER_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Jobs of one sender requested at a time; the others wait (`Phase::Queued`) and go as
/// these end. Well below what a sender serves one peer (`SERVE_BOUNDS.jobs_per_peer`).
pub(super) const MAX_ACTIVE_PER_SENDER: usize = 64;

impl Session {
    pub(super) fn available_files(&self) -> Vec<FileInfo> {
        let mut list: Vec<FileInfo> = self
            .offered
            .values()
            .filter_map(|o| self.still_offered(o))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// One file offered to us, if it still is (not expired, not downloaded).
    pub(super) fn offered_file(&self, file_id: FileId) -> Option<FileInfo> {
        self.offered
            .get(&file_id)
            .and_then(|o| self.still_offered(o))
    }

    fn still_offered(&self, o: &super::Offered) -> Option<FileInfo> {
        let now = self.config.clock.now();
        (o.expires_at > now && !self.downloaded.contains(&o.info.file_id)).then(|| FileInfo {
            expires_in_ms: (o.expires_at - now).as_millis() as u64,
            ..o.info.clone()
        })
    }

    pub(super) fn on_offer(&mut self, peer: &str, mut info: FileInfo) {
        // A peer may send any lifetime; none is kept past a century.
        info.expires_in_ms = info.expires_in_ms.min(MAX_OFFER_TTL_MS);
        let ttl_ms = info.expires_in_ms;
        let file_id = info.file_id;
        if self.offered.contains_key(&file_id) || self.downloaded.contains(&file_id) {
            return;
        }
        // Counted only near the limit: a count per offer would be quadratic in a tree.
        let from_peer = if self.offered.len() >= MAX_OFFERS_PER_PEER {
            self.offered
                .values()
                .filter(|o| o.info.sender == peer)
                .count()
        } else {
            0
        };
        if from_peer >= MAX_OFFERS_PER_PEER {
            tracing::warn!(%peer, "too many offers from one peer; ignoring more");
            self.send_control(
                peer,
                ControlMessage::Error {
                    job_id: None,
                    file_id: Some(file_id),
                    code: codes::TOO_MANY_FILES,
                    message: format!("at most {MAX_OFFERS_PER_PEER} offers are kept per peer"),
                },
            );
            return;
        }
        self.offered.insert(
            file_id,
            Offered {
                info: info.clone(),
                expires_at: self.config.clock.now() + Duration::from_millis(ttl_ms),
            },
        );
        self.emit(Event::FileUploadStarted {
            file_id,
            name: info.name.clone(),
            size: info.size,
            sender: peer.to_string(),
        });
        self.emit(Event::DownloadAvailable {
            file_id,
            name: info.name.clone(),
            size: info.size,
            hash: info.hash.clone(),
            sender: peer.to_string(),
            expires_in_ms: ttl_ms,
            group: info.group.clone(),
            path: info.path.clone(),
            text: info.text,
        });
        // A suspended job of a sender that left may continue from this peer if it
        // offers the same content (a restarted sender).
        let adopt = self
            .downloads
            .iter()
            .find(|(_, d)| {
                matches!(d.phase, Phase::Suspended { .. })
                    && !self.links.contains_key(&d.sender)
                    && d.size == info.size
                    && d.hash.to_hex().eq_ignore_ascii_case(&info.hash)
            })
            .map(|(id, _)| *id);
        if let Some(job_id) = adopt {
            if let Some(d) = self.downloads.get_mut(&job_id) {
                tracing::info!(%job_id, %peer, "resuming from a peer that offers the same content");
                d.sender = peer.to_string();
                d.file_id = file_id;
            }
            self.request(job_id);
            return;
        }
        if self.config.auto_accept && !self.send_only() {
            let dir = self.config.download_dir.clone();
            if let Err(e) = self.start_download(file_id, Save::ToDir(dir))
                && !e.refuses_offer()
            {
                self.emit(Event::DownloadFailed {
                    job_id: None,
                    file_id,
                    name: info.name,
                    size: info.size,
                    code: e.code(),
                    message: e.to_string(),
                });
            }
        }
    }

    pub(super) fn on_revoke(&mut self, peer: &str, file_id: FileId) {
        let Some(offer) = self.offered.get(&file_id).filter(|o| o.info.sender == peer) else {
            return;
        };
        let group = offer.info.group.clone();
        self.offered.remove(&file_id);
        // Withdrawn before we had it: the end of that file for its share's tally (a
        // download of it running gets the sender's `cancel` and ends on its own).
        if group.is_some() && !self.downloads.values().any(|d| d.file_id == file_id) {
            self.end_offered_file(file_id, crate::proto::group::FileEnd::Failed);
        }
    }

    /// An offer to us ended without a download event (declined, withdrawn): it counts for
    /// the tally of its share, which may end with it.
    fn end_offered_file(&mut self, file_id: FileId, end: crate::proto::group::FileEnd) {
        if let Some(ended) = self.download_groups.end(file_id, end) {
            self.emit(super::group_event(false, ended));
        }
    }

    /// Start downloading an offered file. If this side cannot take it (too large, the
    /// destination not writable, a malformed offer), the sender is told: an `error` with
    /// the file ID and the code, which it records as this recipient's outcome; and here
    /// the file ends with `download-failed` (no job), which its share's tally counts.
    pub(super) fn start_download(&mut self, file_id: FileId, save: Save) -> Result<JobId> {
        self.refuse_if_send_only()?;
        let result = self.try_start_download(file_id, save);
        if let Err(e) = &result
            && e.refuses_offer()
            && let Some(offer) = self.offered.remove(&file_id)
        {
            self.send_control(
                &offer.info.sender,
                ControlMessage::Error {
                    job_id: None,
                    file_id: Some(file_id),
                    code: e.code(),
                    message: e.to_string(),
                },
            );
            self.emit(Event::DownloadFailed {
                job_id: None,
                file_id,
                name: offer.info.name,
                size: offer.info.size,
                code: e.code(),
                message: e.to_string(),
            });
        }
        result
    }

    fn try_start_download(&mut self, file_id: FileId, save: Save) -> Result<JobId> {
        // Paths in events are absolute, whatever the caller passed.
        let save = match save {
            Save::ToDir(dir) => Save::ToDir(std::path::absolute(&dir).unwrap_or(dir)),
            other => other,
        };
        if self.downloaded.contains(&file_id)
            || self.downloads.values().any(|d| d.file_id == file_id)
        {
            return Err(Error::AlreadyDownloaded(file_id.to_string()));
        }
        let offer = self
            .offered
            .get(&file_id)
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        if offer.expires_at <= self.config.clock.now() {
            return Err(Error::OfferExpired(file_id.to_string()));
        }
        let info = offer.info.clone();
        let mut limit = match save {
            Save::InMemory => self
                .config
                .max_memory_download
                .min(self.config.max_file_size),
            Save::ToDir(_) => self.config.max_file_size,
        };
        if info.text {
            limit = limit.min(MAX_TEXT_BYTES);
        }
        if info.size > limit {
            return Err(Error::FileTooLarge {
                name: info.name.clone(),
                size: info.size,
                max: limit,
            });
        }
        let hash: Hash = info
            .hash
            .parse()
            .map_err(|_| Error::Protocol("offer carried an invalid hash".into()))?;
        if !self.links.contains_key(&info.sender) {
            return Err(Error::PeerGone(info.sender.clone()));
        }
        let durable = match &save {
            Save::ToDir(dir) => {
                ensure_writable_dir(dir)?;
                Some(self.durable_job_for(JobStore::new(dir), &info)?)
            }
            Save::InMemory => None,
        };
        let job_id = durable
            .as_ref()
            .map(|(_, r)| r.job_id)
            .unwrap_or_else(JobId::new);
        let offset = durable.as_ref().map_or(0, |(_, r)| r.offset);
        // A partial file longer than its record holds bytes written but never synced (a
        // killed process leaves them; a power loss may leave garbage): verified against
        // the sender's block hashes before they are trusted.
        let tail = durable.as_ref().and_then(|(store, r)| {
            let on_disk = std::fs::metadata(store.partial_path(&r.job_id)).ok()?.len();
            unverified_tail(r.offset, r.size, on_disk)
        });
        let counters = Arc::new(DownloadCounters::default());
        counters.written.store(offset, Ordering::Release);
        self.downloads.insert(
            job_id,
            Download {
                file_id,
                sender: info.sender.clone(),
                name: info.name.clone(),
                path: info.path.clone(),
                executable: info.executable,
                size: info.size,
                hash,
                save,
                durable,
                counters,
                tail,
                // `request` below sends it, or queues it behind the sender's other jobs.
                phase: Phase::Queued,
                fruitless: 0,
                ending: None,
            },
        );
        tracing::info!(%job_id, %file_id, offset, "requesting download");
        if let (
            Some(group),
            Some(Download {
                save: Save::ToDir(dir),
                ..
            }),
        ) = (&info.group, self.downloads.get(&job_id))
        {
            let dir = dir.clone();
            self.tree_target(&info.sender, group.id, dir);
        }
        self.request(job_id);
        Ok(job_id)
    }

    /// The durable job for `info` in `store`: a stored job of the same content is
    /// resumed; one of the same name with other content is discarded (5100). Temporary
    /// records a crash left in the directory are removed first (not those of our running
    /// jobs, whose checkpoints may be writing them).
    fn durable_job_for(
        &mut self,
        store: JobStore,
        info: &FileInfo,
    ) -> Result<(JobStore, JobRecord)> {
        // One pass over the directory; records of running jobs are not read (a tree of
        // thousands of files starts thousands of jobs at once). A small file never has a
        // record (`UNRECORDED_BYTES`), so there is nothing to look for.
        let running: HashSet<JobId> = if info.size > UNRECORDED_BYTES {
            self.downloads.keys().copied().collect()
        } else {
            HashSet::new()
        };
        let stored = if info.size > UNRECORDED_BYTES {
            store.scan_for_resume(&running)
        } else {
            Vec::new()
        };
        for record in stored {
            let stored = (record.name.as_str(), record.size, record.hash.as_str());
            match match_offer(stored, (record_key(info), info.size, &info.hash)) {
                OfferMatch::SameContent => {
                    tracing::info!(job_id = %record.job_id, offset = record.offset, "found a partial download of this file");
                    let mut record = record;
                    record.file_id = info.file_id;
                    record.sender_id = info.sender.clone();
                    return Ok((store, record));
                }
                OfferMatch::ChangedContent => {
                    store.remove(&record.job_id);
                    self.emit(Event::DownloadFailed {
                        job_id: Some(record.job_id),
                        file_id: record.file_id,
                        name: record.name.clone(),
                        size: record.size,
                        code: codes::POSSIBLY_CORRUPT,
                        message: "the source changed since the partial download; starting over"
                            .into(),
                    });
                }
                OfferMatch::Unrelated => {}
            }
        }
        let sender_name = self
            .links
            .get(&info.sender)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        let record = JobRecord {
            version: RECORD_VERSION,
            job_id: JobId::new(),
            file_id: info.file_id,
            name: record_key(info).to_string(),
            size: info.size,
            hash: info.hash.clone(),
            sender_name,
            sender_id: info.sender.clone(),
            offset: 0,
        };
        Ok((store, record))
    }

    /// A peer that only sends takes no file and answers no offer: the senders do not count
    /// it as a recipient (docs/PROTOCOL.md, "Peers that only send").
    fn refuse_if_send_only(&self) -> Result<()> {
        if self.send_only() {
            return Err(Error::NotPermitted(
                "this peer only sends (Role::SendOnly): it takes no files and answers no \
                 offers"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Resume a stored job of the download directory from any peer offering its content.
    pub(super) fn resume_stored(&mut self, job_id: JobId) -> Result<JobId> {
        if self.downloads.contains_key(&job_id) {
            return Ok(job_id);
        }
        let store = JobStore::new(&self.config.download_dir);
        let record = store
            .load(&job_id)
            .ok_or_else(|| Error::InvalidJob(job_id.to_string()))?;
        let offer = self
            .offered
            .values()
            .find(|o| o.info.size == record.size && o.info.hash.eq_ignore_ascii_case(&record.hash))
            .ok_or_else(|| {
                Error::FileNotAvailable(format!(
                    "{}: no peer in the session offers this file now",
                    record.name
                ))
            })?;
        let file_id = offer.info.file_id;
        self.start_download(file_id, Save::ToDir(self.config.download_dir.clone()))
    }

    /// Send the request of `job_id` from its current offset (if the sender is connected;
    /// otherwise it goes out when the connection is back). A job with an unverified tail
    /// asks the sender for its block hashes first, if the sender supports them; otherwise
    /// the tail is not trusted and the request starts at the checkpoint.
    pub(super) fn request(&mut self, job_id: JobId) {
        self.request_gated(job_id, true);
    }

    /// [`Session::request`]; `gate`: queue the job if its sender has no request slot free
    /// (the caller may know there is one).
    fn request_gated(&mut self, job_id: JobId, gate: bool) {
        let connected = self
            .downloads
            .get(&job_id)
            .is_some_and(|d| self.is_connected(&d.sender));
        let verifiable = self.downloads.get(&job_id).is_some_and(|d| {
            self.links
                .get(&d.sender)
                .is_some_and(|link| link.block_hashes)
        });
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        let offset = match (&d.save, &d.durable) {
            (Save::ToDir(_), Some(_)) => d.counters.written.load(Ordering::Acquire),
            _ => 0,
        };
        let (sender, file_id) = (d.sender.clone(), d.file_id);
        if !connected {
            if !matches!(d.phase, Phase::Suspended { .. }) {
                d.phase = Phase::Suspended {
                    since: self.config.clock.now(),
                };
            }
            return;
        }
        let was_active = is_active(&d.phase);
        // A small file goes in a batch: queued, and `start_queued` (at the end of this
        // turn of the session loop, or now if `gate` is off) gathers the batch.
        if gate && !was_active && self.batchable(job_id) {
            if let Some(d) = self.downloads.get_mut(&job_id) {
                d.phase = Phase::Queued;
            }
            self.queued.push_back(job_id);
            self.batches_due = true;
            return;
        }
        if gate && !was_active && self.active_from(&sender) >= MAX_ACTIVE_PER_SENDER {
            if let Some(d) = self.downloads.get_mut(&job_id) {
                d.phase = Phase::Queued;
            }
            self.queued.push_back(job_id);
            return;
        }
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        if let Some(tail) = d.tail {
            if verifiable {
                d.phase = Phase::Verifying {
                    tail,
                    since: self.config.clock.now(),
                    checking: false,
                };
                self.send_control(
                    &sender,
                    ControlMessage::HashesRequest {
                        job_id,
                        file_id,
                        offset: tail.offset,
                        length: tail.length,
                    },
                );
                return;
            }
            tracing::info!(%job_id, checkpoint = tail.offset, "the sender cannot verify the bytes past the checkpoint; resuming from it");
            d.tail = None;
        }
        d.phase = Phase::Requested {
            offset,
            since: self.config.clock.now(),
        };
        self.send_control(
            &sender,
            ControlMessage::Request {
                job_id,
                file_id,
                offset,
            },
        );
    }

    /// Jobs of `sender` requested or running (a batch counts as one).
    fn active_from(&self, sender: &str) -> usize {
        self.downloads
            .values()
            .filter(|d| d.sender == sender && is_active(&d.phase))
            .count()
            + self
                .receiving_batches
                .values()
                .filter(|b| b.sender == sender)
                .count()
    }

    /// Request queued jobs while their senders have room for them, oldest first. Small
    /// files of one sender and download directory are gathered into batches (one request
    /// slot each) of at most `MAX_BATCH_JOBS` files and `MAX_BATCH_BYTES` bytes.
    ///
    /// A sender with a batch in flight gets only full batches; the rest wait for the next
    /// full one or for the end of that batch. So files requested one by one still travel
    /// in large batches, and a sender is never left idle while files wait.
    pub(super) fn start_queued(&mut self) {
        self.batches_due = false;
        if self.queued.is_empty() {
            return;
        }
        let mut in_flight: HashMap<&str, usize> = HashMap::new();
        for b in self.receiving_batches.values() {
            *in_flight.entry(b.sender.as_str()).or_default() += 1;
        }
        // Called at every turn of the session loop that queued a small file: nothing to
        // do (and no pass over every job) while each sender of a queued job has a batch
        // in flight and no full batch is waiting, or has no request slot left.
        let few = self.queued.len() < MAX_BATCH_JOBS;
        let nothing = self.queued.iter().all(|job_id| {
            self.downloads.get(job_id).is_some_and(|d| {
                let n = in_flight.get(d.sender.as_str()).copied().unwrap_or(0);
                n >= MAX_ACTIVE_PER_SENDER || (n > 0 && few && self.batchable(*job_id))
            })
        });
        if nothing {
            return;
        }
        let in_flight: HashSet<String> = in_flight.into_keys().map(str::to_string).collect();
        // Request slots in use, per sender, in one pass.
        let mut used: HashMap<String, usize> = HashMap::new();
        for d in self.downloads.values().filter(|d| is_active(&d.phase)) {
            *used.entry(d.sender.clone()).or_default() += 1;
        }
        for b in self.receiving_batches.values() {
            *used.entry(b.sender.clone()).or_default() += 1;
        }
        // The batch being gathered per sender and directory, with its bytes.
        let mut forming: HashMap<(String, PathBuf), (Vec<JobId>, u64)> = HashMap::new();
        let mut waiting = std::collections::VecDeque::new();
        while let Some(job_id) = self.queued.pop_front() {
            // Jobs that ended, or left the queue another way, are dropped from it.
            let Some(d) = self
                .downloads
                .get(&job_id)
                .filter(|d| matches!(d.phase, Phase::Queued))
            else {
                continue;
            };
            let (sender, size) = (d.sender.clone(), d.size);
            // A small file joins the batch being gathered for its sender and directory
            // while that has room; a full batch goes out.
            let key = match &d.save {
                Save::ToDir(dir) if self.batchable(job_id) => Some((sender.clone(), dir.clone())),
                _ => None,
            };
            if let Some(key) = &key
                && let Some((jobs, bytes)) = forming.get_mut(key)
            {
                if jobs.len() < MAX_BATCH_JOBS && *bytes + size <= MAX_BATCH_BYTES {
                    jobs.push(job_id);
                    *bytes += size;
                    continue;
                }
                if let Some((jobs, _)) = forming.remove(key) {
                    self.request_batch(&sender, jobs);
                }
            }
            // A new request (a batch, or a file of its own) takes one of its sender's
            // slots.
            let slots = used.entry(sender).or_default();
            if *slots >= MAX_ACTIVE_PER_SENDER {
                waiting.push_back(job_id);
                continue;
            }
            *slots += 1;
            match key {
                Some(key) => {
                    forming.insert(key, (vec![job_id], size));
                }
                None => self.request_gated(job_id, false),
            }
        }
        for ((sender, _), (jobs, bytes)) in forming {
            let full = jobs.len() >= MAX_BATCH_JOBS || bytes >= MAX_BATCH_BYTES / 2;
            if full || !in_flight.contains(&sender) {
                self.request_batch(&sender, jobs);
            } else {
                waiting.extend(jobs);
            }
        }
        self.queued = waiting;
    }

    /// The sender's block hashes for the tail of `job_id`: compare them with the bytes on
    /// disk (on a blocking thread); the outcome comes back as `Report::TailChecked`. An
    /// answer that does not fit the question is not trusted: the job resumes from its
    /// checkpoint.
    pub(super) fn on_hashes(
        &mut self,
        peer: &str,
        job_id: JobId,
        file_id: FileId,
        offset: u64,
        length: u64,
        hashes: &[String],
    ) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        let Phase::Verifying {
            tail,
            since,
            checking: false,
        } = d.phase
        else {
            tracing::debug!(%peer, %job_id, "block hashes for a job that is not verifying");
            return;
        };
        if d.sender != peer {
            tracing::warn!(%peer, %job_id, "block hashes from the wrong peer");
            return;
        }
        let remote: Option<Vec<Hash>> = hashes.iter().map(|h| h.parse().ok()).collect();
        let path = d
            .durable
            .as_ref()
            .map(|(store, _)| store.partial_path(&job_id));
        let (Some(remote), Some(path)) = (remote, path) else {
            self.verify_fallback(job_id, "unusable block hashes");
            return;
        };
        if d.file_id != file_id || (tail.offset, tail.length) != (offset, length) {
            self.verify_fallback(job_id, "block hashes of another range");
            return;
        }
        d.phase = Phase::Verifying {
            tail,
            since,
            checking: true,
        };
        let reports = self.report_tx.clone();
        tokio::spawn(async move {
            let verified =
                tokio::task::spawn_blocking(move || transfer::verify_tail(&path, tail, &remote))
                    .await
                    .unwrap_or(0);
            let _ = reports.send(Report::TailChecked {
                job_id,
                tail,
                verified,
            });
        });
    }

    /// The tail of `job_id` was compared with the sender's block hashes: the job resumes
    /// after the bytes that matched (now, or when the sender is connected again).
    pub(super) fn on_tail_checked(&mut self, job_id: JobId, tail: Tail, verified: u64) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        if d.tail != Some(tail) {
            return;
        }
        d.tail = None;
        let offset = tail.offset + verified.min(tail.length);
        d.counters.written.store(offset, Ordering::Release);
        tracing::info!(
            %job_id,
            checkpoint = tail.offset,
            on_disk = tail.offset + tail.length,
            verified,
            "bytes past the checkpoint checked against the sender's block hashes"
        );
        if matches!(d.phase, Phase::Verifying { .. }) {
            self.request(job_id);
        }
    }

    /// Give up verifying the tail of `job_id`: it is not trusted, and the job resumes
    /// from its checkpoint.
    fn verify_fallback(&mut self, job_id: JobId, why: &str) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        if d.tail.take().is_none() {
            return;
        }
        tracing::info!(%job_id, "{why}; resuming from the checkpoint");
        if matches!(d.phase, Phase::Verifying { .. }) {
            self.request(job_id);
        }
    }

    /// The connection to `peer` is (back) up: re-request its suspended jobs.
    pub(super) fn resume_from(&mut self, peer: &str) {
        let jobs: Vec<JobId> = self
            .downloads
            .iter()
            .filter(|(_, d)| d.sender == peer && matches!(d.phase, Phase::Suspended { .. }))
            .map(|(id, _)| *id)
            .collect();
        for job_id in jobs {
            tracing::info!(%job_id, %peer, "resuming download");
            self.request(job_id);
        }
    }

    /// Tell the sender how a job ended, and remember it for a resend on reconnection.
    fn report_outcome(&mut self, sender: &str, done: ControlMessage) {
        if let ControlMessage::Done { job_id, .. } = &done {
            self.outcomes
                .insert(*job_id, (sender.to_string(), done.clone()));
        }
        self.send_control(sender, done);
    }

    /// Send again every job outcome reported to `peer` (idempotent on its side).
    pub(super) fn resend_outcomes_to(&mut self, peer: &str) {
        let msgs: Vec<ControlMessage> = self
            .outcomes
            .values()
            .filter(|(sender, _)| sender == peer)
            .map(|(_, m)| m.clone())
            .collect();
        for msg in msgs {
            self.send_control(peer, msg);
        }
    }

    pub(super) fn decline(&mut self, file_id: FileId) -> Result<()> {
        self.refuse_if_send_only()?;
        let offer = self
            .offered
            .remove(&file_id)
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        self.send_control(
            &offer.info.sender,
            ControlMessage::Decline {
                file_id,
                have: false,
            },
        );
        self.end_offered_file(file_id, crate::proto::group::FileEnd::Cancelled);
        Ok(())
    }

    /// Decline an offer because `path` already holds an identical copy (the caller
    /// checked it, e.g. with `transfer::is_identical_copy`): the sender is told with
    /// `have`, and counts this recipient as delivered; nothing is downloaded.
    pub(super) fn decline_identical(&mut self, file_id: FileId, path: PathBuf) -> Result<()> {
        self.refuse_if_send_only()?;
        if self.downloads.values().any(|d| d.file_id == file_id) {
            return Err(Error::AlreadyDownloaded(file_id.to_string()));
        }
        let offer = self
            .offered
            .remove(&file_id)
            .ok_or_else(|| Error::FileNotAvailable(file_id.to_string()))?;
        let info = offer.info;
        self.downloaded.insert(file_id);
        self.send_control(
            &info.sender,
            ControlMessage::Decline {
                file_id,
                have: true,
            },
        );
        let path = std::path::absolute(&path).unwrap_or(path);
        tracing::info!(%file_id, path = %path.display(), "already holding an identical copy");
        self.emit(Event::DownloadSkipped {
            file_id,
            name: info.name,
            size: info.size,
            sender: info.sender,
            path,
        });
        Ok(())
    }

    pub(super) fn forge_request(&mut self, sender: String, file_id: FileId) -> Result<JobId> {
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
                    path: None,
                    executable: false,
                    text: false,
                },
                expires_at: self.config.clock.now() + Duration::from_secs(60),
            },
        );
        self.start_download(file_id, Save::InMemory)
    }

    pub(super) fn on_job_channel(&mut self, peer: &str, job_id: JobId, channel: RtcStream) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            tracing::warn!(%peer, %job_id, "data channel for an unknown job");
            return;
        };
        let Phase::Requested { offset, .. } = d.phase else {
            tracing::warn!(%peer, %job_id, "unexpected data channel");
            return;
        };
        if d.sender != peer {
            tracing::warn!(%peer, %job_id, "data channel from the wrong peer");
            return;
        }
        let sink = match (&d.save, &d.durable) {
            (Save::ToDir(_), Some((store, record))) => {
                let (dirs, name) = saved_place(d.path.as_deref(), &d.name);
                Sink::Dir {
                    store: store.clone(),
                    record: record.clone(),
                    name,
                    dirs,
                    executable: d.executable,
                    replace: self.config.overwrite,
                }
            }
            _ => Sink::Memory,
        };
        let (size, hash) = (d.size, d.hash);
        let counters = d.counters.clone();
        let limit = self.limit.clone();
        let reports = self.report_tx.clone();
        let span = tracing::info_span!("download", job = %job_id, %peer, offset);
        let task = tokio::spawn(
            async move {
                let state = match sink.dir_job() {
                    Some((store, record)) if offset > 0 => {
                        let (store, record) = (store.clone(), record.clone());
                        tokio::task::spawn_blocking(move || {
                            transfer::prepare_resume(&store, &record, offset)
                        })
                        .await
                        .unwrap_or_else(|e| Err(Error::SaveFailed(format!("resume task: {e}"))))
                    }
                    _ => Ok(DownloadState::new(size, hash, 0, blake3::Hasher::new())),
                };
                let result = match state {
                    Ok(state) if state.received() != offset => Err(Error::SaveFailed(format!(
                        "partial file holds {} bytes, expected {offset}",
                        state.received()
                    ))),
                    Ok(state) => {
                        let progress = reports.clone();
                        transfer::receive(&channel, state, sink, counters, limit, move |received| {
                            let _ = progress.send(Report::DownloadProgress { job_id, received });
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                channel.close().await;
                let _ = reports.send(Report::DownloadDone { job_id, result });
            }
            .instrument(span),
        );
        d.phase = Phase::Running { task };
        let ev = Event::DownloadStarted {
            job_id,
            file_id: d.file_id,
            name: d.name.clone(),
            size: d.size,
            offset,
        };
        self.emit(ev);
    }

    pub(super) fn on_download_progress(&mut self, job_id: JobId, received: u64) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        d.fruitless = 0;
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

    pub(super) fn on_download_done(&mut self, job_id: JobId, result: Result<Saved>) {
        self.end_download(job_id, result);
        // A request slot of its sender may be free now.
        self.start_queued();
    }

    pub(super) fn end_download(&mut self, job_id: JobId, result: Result<Saved>) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        // The transfer task has ended: whatever follows (a failure, a retry) must not
        // wait for it again.
        d.phase = Phase::Ended;
        let ending = d.ending.take();
        if let Some((ending, discard)) = ending
            && result.is_err()
        {
            self.finish_ending(job_id, ending, discard);
            return;
        }
        match result {
            Ok(saved) => {
                let Some(d) = self.downloads.remove(&job_id) else {
                    return;
                };
                self.downloaded.insert(d.file_id);
                self.offered.remove(&d.file_id);
                self.report_outcome(
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
            Err(e) if e.code() == codes::DOWNLOAD_FAILED => {
                // The data channel went away before the end: a transport failure.
                self.retry_fruitless(job_id, e, false);
            }
            Err(e) => self.fail_download(job_id, e),
        }
    }

    /// Requests the sender did not answer with a data channel in time (on a connection
    /// that is up) are sent again, and fail (1183) after repeated attempts: a sender that
    /// ignores requests cannot hold a download forever.
    pub(super) fn expire_unanswered_requests(&mut self, now: Instant) {
        let unverified: Vec<JobId> = self
            .downloads
            .iter()
            .filter(|(_, d)| {
                matches!(d.phase, Phase::Verifying { since, checking: false, .. }
                    if now.duration_since(since) >= REQUEST_ANSWER_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        for job_id in unverified {
            self.verify_fallback(job_id, "no block hashes in time");
        }
        let stale: Vec<JobId> = self
            .downloads
            .iter()
            .filter(|(_, d)| {
                matches!(d.phase, Phase::Requested { since, .. }
                    if now.duration_since(since) >= REQUEST_ANSWER_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        self.expire_unanswered_batches(now);
        for job_id in stale {
            tracing::info!(%job_id, "no data channel for the request");
            let e = Error::DownloadFailed(format!(
                "the sender did not start sending in {} attempts",
                MAX_FRUITLESS_ATTEMPTS + 1
            ));
            self.retry_fruitless(job_id, e, true);
        }
    }

    /// One more attempt of `job_id` brought no new bytes: ask again (now, or when the
    /// connection is back), or, once the attempts have run out, end the job with `e`,
    /// keeping its partial data for a later run if `keep_partial`.
    pub(super) fn retry_fruitless(&mut self, job_id: JobId, e: Error, keep_partial: bool) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        d.fruitless += 1;
        if d.fruitless <= MAX_FRUITLESS_ATTEMPTS {
            self.request(job_id);
        } else if keep_partial {
            self.fail_download_keep(job_id, e);
        } else {
            self.fail_download(job_id, e);
        }
    }

    /// Suspended downloads whose sender did not come back within the grace period fail.
    pub(super) fn expire_suspended_downloads(&mut self, now: Instant) {
        let grace = self.config.resume_grace;
        let expired: Vec<JobId> = self
            .downloads
            .iter()
            .filter(|(_, d)| {
                matches!(d.phase, Phase::Suspended { since } if now.duration_since(since) >= grace)
            })
            .map(|(id, _)| *id)
            .collect();
        for job_id in expired {
            let sender = self.downloads[&job_id].sender.clone();
            // The partial data stays: a later run can resume it.
            self.fail_download_keep(
                job_id,
                Error::PeerGone(format!("{sender} did not come back within {grace:?}")),
            );
        }
    }

    pub(super) fn on_sender_cancel(&mut self, peer: &str, job_id: JobId, code: Option<u16>) {
        if self
            .downloads
            .get(&job_id)
            .is_some_and(|d| d.sender == peer)
        {
            self.fail_download(
                job_id,
                Error::from_remote(
                    code.unwrap_or(codes::CANCELLED_BY_PEER),
                    "cancelled by the sender",
                ),
            );
        }
    }

    pub(super) fn on_sender_error(
        &mut self,
        peer: &str,
        job_id: Option<JobId>,
        code: u16,
        message: String,
    ) {
        if let Some(batch_id) = job_id
            && self.on_batch_refused(peer, batch_id, code, &message)
        {
            return;
        }
        let ours = job_id.filter(|j| self.downloads.get(j).is_some_and(|d| d.sender == peer));
        match ours {
            // The sender could not answer a `hashes-request` (the file changed, is no
            // longer offered …): the request from the checkpoint gets its own answer.
            Some(job_id) if self.downloads.get(&job_id).is_some_and(awaits_hashes) => {
                self.verify_fallback(job_id, &format!("error {code} instead of block hashes"));
            }
            Some(job_id) => self.fail_download(job_id, Error::from_remote(code, message)),
            None => {
                // A peer that does not know `hashes-request` answers it with 6005 and no
                // IDs (it should not have been asked: it announced no `block-hashes`).
                if code == codes::PROTOCOL_VIOLATION && job_id.is_none() {
                    let waiting: Vec<JobId> = self
                        .downloads
                        .iter()
                        .filter(|(_, d)| d.sender == peer && awaits_hashes(d))
                        .map(|(j, _)| *j)
                        .collect();
                    for job_id in waiting {
                        self.verify_fallback(job_id, "error 6005 instead of block hashes");
                    }
                }
                tracing::warn!(%peer, code, %message, "peer reported an error");
                self.emit(Event::Error {
                    peer: Some(peer.to_string()),
                    code,
                    message,
                });
            }
        }
    }

    pub(super) fn cancel_download(&mut self, job_id: JobId, keep_partial: bool) -> Result<()> {
        match self.downloads.get(&job_id) {
            Some(d) if d.ending.is_none() => {
                let sender = d.sender.clone();
                self.send_control(
                    &sender,
                    ControlMessage::Cancel {
                        job_id,
                        code: Some(codes::CANCELLED_BY_PEER),
                    },
                );
                tracing::info!(%job_id, keep_partial, "cancelling download");
                self.end_job(job_id, Ending::Cancelled, !keep_partial);
                Ok(())
            }
            _ => Err(Error::InvalidJob(job_id.to_string())),
        }
    }

    /// The job failed for good: its partial data is removed.
    pub(super) fn fail_download(&mut self, job_id: JobId, e: Error) {
        self.end_job(job_id, Ending::Failed(e), true);
    }

    /// The job failed, but its partial data stays for a later run to resume.
    fn fail_download_keep(&mut self, job_id: JobId, e: Error) {
        self.end_job(job_id, Ending::Failed(e), false);
    }

    /// Stop a job. A running transfer task is told to stop (it records what it wrote);
    /// the cleanup and the event follow once it has finished, whatever made it end, so no
    /// late write can recreate removed data.
    fn end_job(&mut self, job_id: JobId, ending: Ending, discard: bool) {
        let Some(d) = self.downloads.get_mut(&job_id) else {
            return;
        };
        if d.ending.is_some() {
            return;
        }
        let running = match d.phase {
            Phase::Running { .. } => true,
            Phase::Batched { batch } => self
                .receiving_batches
                .get(&batch)
                .is_some_and(|b| b.task.is_some()),
            _ => false,
        };
        if running {
            d.counters.stop();
            d.ending = Some((ending, discard));
            return;
        }
        self.finish_ending(job_id, ending, discard);
    }

    /// Remove the partial data if `discard`, and emit the final event of a stopped job.
    pub(super) fn finish_ending(&mut self, job_id: JobId, ending: Ending, discard: bool) {
        let Some(d) = self.downloads.remove(&job_id) else {
            return;
        };
        if let Phase::Batched { batch } = d.phase {
            self.batch_job_left(batch);
        }
        if !matches!(d.phase, Phase::Queued) {
            self.start_queued();
        }
        if discard && let Some((store, _)) = &d.durable {
            store.remove(&job_id);
        }
        match ending {
            Ending::Cancelled => {
                tracing::info!(%job_id, "download cancelled");
                self.emit(Event::DownloadCancelled {
                    job_id,
                    file_id: d.file_id,
                    name: d.name,
                    size: d.size,
                });
            }
            Ending::Failed(e) => {
                tracing::warn!(%job_id, code = e.code(), "download failed: {e}");
                self.report_outcome(
                    &d.sender,
                    ControlMessage::Done {
                        job_id,
                        ok: false,
                        code: Some(e.code()),
                    },
                );
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
    }
}

/// Whether the job waits for the sender's answer to its `hashes-request`.
fn awaits_hashes(d: &Download) -> bool {
    matches!(
        d.phase,
        Phase::Verifying {
            checking: false,
            ..
        }
    )
}

/// `dir` exists (it is created, with its parents, if missing), is a directory and is
/// not read-only.
fn ensure_writable_dir(dir: &std::path::Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| transfer::storage_error(dir, &e))?;
    }
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

/// What a stored job is matched by: an offer's place in its tree, else its name (two
/// files of one tree may share a name in different directories).
fn record_key(info: &FileInfo) -> &str {
    info.path.as_deref().unwrap_or(&info.name)
}

/// A job that holds one of its sender's request slots.
fn is_active(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::Verifying { .. } | Phase::Requested { .. } | Phase::Running { .. } | Phase::Ended
    )
}
