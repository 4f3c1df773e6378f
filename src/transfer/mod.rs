//! The transfer engine: streams a file into a [`Channel`] and a channel into a file or
//! memory, driven by the sans-IO [`DownloadState`]. File reads run ahead and writes run
//! behind on blocking threads, so disk I/O overlaps the network.

pub mod batch;
mod checkpoint;
mod partial;
pub mod walk;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::codes;
use crate::proto::download::{ChunkError, DownloadState, Verdict};
use crate::proto::hash::Hash;
use crate::proto::ids::JobId;
use crate::proto::names::numbered_name;
use crate::proto::resume::{
    CHECKPOINT_BYTES, CheckpointPolicy, HASH_BLOCK, Reconcile, Tail, reconcile, verified_length,
};
use crate::store::{JobRecord, JobStore};
use crate::transport::Channel;
use checkpoint::Checkpointer;
use partial::PartialWriter;

/// Size of one data message (the SCTP max message size both sides advertise is larger).
///
/// `webrtc` 0.21 bounds a lagging receiver's backlog by *message count* (256 in the
/// core's pipeline, 256 in the channel's event queue, up to 256 retained by the driver),
/// so the chunk size sets the recipient's worst-case memory: 32 KiB keeps it at about
/// 24 MiB, where 64 KiB reached 60–64 MiB peak RSS on a 4 GiB transfer whose disk fell
/// behind. 32 KiB moved files as fast as 64 KiB; 16 KiB cost about 15 %
/// (docs/PERFORMANCE.md, "Chunk size").
pub const CHUNK_SIZE: usize = 32 * 1024;
/// Chunks written behind the network.
const PIPELINE_DEPTH: usize = 16;
/// The sender reads the file in blocks of this size and cuts them into chunks without
/// copying: one read syscall and one reader-thread wake-up per block instead of per
/// chunk (the wake-ups were a fifth of the sender's CPU in a profile).
const READ_BLOCK: usize = 256 * 1024;
/// Blocks read ahead of the network (1 MiB with the above).
const READ_AHEAD_BLOCKS: usize = 4;

/// Messages beyond the two windows that a cut can make a sender send twice: one over
/// the send-buffer limit (`send` waits only once the limit is exceeded) and a few that
/// the recipient's `webrtc` pipeline has taken out of SCTP's window but not yet delivered
/// when the cut lands.
const RESEND_SLACK_MESSAGES: u64 = 8;

/// The most bytes a cut connection makes a sender send twice for one job, for a
/// recipient that keeps up: one backpressure window (what may be in the network between
/// the two ends: the sender's send-buffer limit plus the receiver's SCTP window) plus
/// `RESEND_SLACK_MESSAGES` chunks. Everything that reached the recipient's process is
/// drained and written before it resumes. (A recipient whose disk is behind also loses
/// what `webrtc` queued for it outside the window: up to 768 messages.)
pub fn resend_bound(settings: &crate::rtc::RtcSettings) -> u64 {
    settings.send_buffer_limit as u64
        + u64::from(settings.sctp_receive_window)
        + RESEND_SLACK_MESSAGES * CHUNK_SIZE as u64
}

/// What identifies the version of a source file that was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl FileIdentity {
    /// Read the identity of the file at `path`.
    pub fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| storage_error(path, &e))?;
        if !meta.is_file() {
            return Err(Error::StorageAccessDenied(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(Self {
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Map an I/O error on `path` to the coded error users see.
pub fn storage_error(path: &Path, e: &std::io::Error) -> Error {
    Error::StorageAccessDenied(format!("{}: {e}", path.display()))
}

/// Hash a whole file with BLAKE3 (blocking; call from a blocking thread).
pub fn hash_file(path: &Path) -> Result<crate::proto::hash::Hash> {
    let mut file = File::open(path).map_err(|e| storage_error(path, &e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| storage_error(path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::proto::hash::Hash(*hasher.finalize().as_bytes()))
}

/// Blocking file reads of uploads that may run at once in the whole process: the
/// read-ahead of every served job together uses at most this many blocking threads.
pub const READ_THREADS: usize = 8;

/// A cap on the blocking threads the read-ahead of uploads uses. Each job reads its file
/// one block at a time, and a block read holds one permit only while it runs (never while
/// the job waits for the network), so however many jobs are served, at most the permits'
/// count of threads read at once, and a stalled job holds neither a thread nor a permit.
/// The read-ahead depth of one job is unchanged (4 blocks of 256 KiB).
#[derive(Clone)]
pub struct ReadPermits(Arc<tokio::sync::Semaphore>);

impl ReadPermits {
    /// At most `threads` (at least 1) block reads at once.
    pub fn new(threads: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(threads.max(1))))
    }

    /// The process-wide permits every [`send_file`] uses ([`READ_THREADS`]).
    pub fn global() -> &'static ReadPermits {
        static GLOBAL: std::sync::LazyLock<ReadPermits> =
            std::sync::LazyLock::new(|| ReadPermits::new(READ_THREADS));
        &GLOBAL
    }

    /// Permits not taken right now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Stream `path` from `offset` to its end into `channel`. The file must still have the
/// identity it had when it was offered (else 5100). Returns the bytes sent. File reads
/// share the process-wide [`ReadPermits::global`].
pub async fn send_file<C: Channel + ?Sized>(
    channel: &C,
    path: &Path,
    offset: u64,
    identity: FileIdentity,
    sent_total: &AtomicU64,
    limit: Option<&RateLimit>,
) -> Result<u64> {
    send_file_with(
        channel,
        path,
        offset,
        identity,
        sent_total,
        limit,
        ReadPermits::global(),
    )
    .await
}

/// [`send_file`] with its block reads bounded by `reads`.
pub async fn send_file_with<C: Channel + ?Sized>(
    channel: &C,
    path: &Path,
    offset: u64,
    identity: FileIdentity,
    sent_total: &AtomicU64,
    limit: Option<&RateLimit>,
    reads: &ReadPermits,
) -> Result<u64> {
    let now = FileIdentity::of(path)?;
    if now != identity {
        return Err(Error::PossiblyCorrupt(format!(
            "{} changed since it was offered",
            path.display()
        )));
    }
    let mut file = File::open(path).map_err(|e| storage_error(path, &e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| storage_error(path, &e))?;
    let remaining = identity.size.saturating_sub(offset);
    let (tx, mut rx) = mpsc::channel::<Result<BytesMut>>(READ_AHEAD_BLOCKS);
    let reader_path = path.to_path_buf();
    let permits = reads.0.clone();
    // An async task that reads one block per blocking call: it waits for room in the
    // channel and for a permit without holding a thread.
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut file = Some(file);
        let mut left = remaining;
        while left > 0 {
            let want = left.min(READ_BLOCK as u64);
            let Some(f) = file.take() else { return };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let path = reader_path.clone();
            let read = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let res = read_block(&f, want, &path);
                (f, res)
            })
            .await;
            let res = match read {
                Ok((f, res)) => {
                    file = Some(f);
                    res
                }
                Err(e) => Err(Error::UploadFailed(format!("file reader: {e}"))),
            };
            let failed = res.is_err();
            if tx.send(res).await.is_err() || failed {
                return;
            }
            left -= want;
        }
    }));
    let mut sent = 0u64;
    while let Some(block) = rx.recv().await {
        let mut block = block?;
        while !block.is_empty() {
            let chunk = block.split_to(block.len().min(CHUNK_SIZE));
            let len = chunk.len() as u64;
            if let Some(limit) = limit {
                limit.take(len).await;
            }
            // Counted before the send: the recipient can have the chunk (and report the
            // file done) before this task runs again after `send` returns.
            sent_total.fetch_add(len, Ordering::Relaxed);
            channel
                .send(chunk)
                .await
                .map_err(|_| Error::UploadFailed("data channel closed".into()))?;
            sent += len;
        }
    }
    drop(rx);
    drop(reader);
    if sent != remaining {
        return Err(Error::UploadFailed(format!(
            "sent {sent} of {remaining} bytes"
        )));
    }
    Ok(sent)
}

/// The BLAKE3 hash of every block of `range` of the source file at `path` (what a
/// `hashes` answer carries). The file must still have the identity it had when it was
/// offered (else 5100); each block is read and hashed on a blocking thread under one of
/// `reads`' permits, like the blocks of a stream, so hash requests share the same bounded
/// readers as uploads.
pub async fn hash_blocks(
    path: &Path,
    identity: FileIdentity,
    range: Tail,
    reads: &ReadPermits,
) -> Result<Vec<Hash>> {
    if FileIdentity::of(path)? != identity {
        return Err(Error::PossiblyCorrupt(format!(
            "{} changed since it was offered",
            path.display()
        )));
    }
    let file = Arc::new(File::open(path).map_err(|e| storage_error(path, &e))?);
    let mut hashes = Vec::with_capacity(range.blocks() as usize);
    for index in 0..range.blocks() {
        let Some((start, len)) = range.block(index) else {
            break;
        };
        let permit = reads
            .0
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::UploadFailed("file readers closed".into()))?;
        let (file, path) = (file.clone(), path.to_path_buf());
        let hash = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_block(&file, start, len).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    Error::PossiblyCorrupt(format!("{} shrank while being hashed", path.display()))
                }
                _ => storage_error(&path, &e),
            })
        })
        .await
        .map_err(|e| Error::UploadFailed(format!("file reader: {e}")))??;
        hashes.push(hash);
    }
    Ok(hashes)
}

/// How many bytes of `tail` in the partial file at `path` match the sender's block
/// hashes `remote` (blocking): its blocks are hashed in order until one differs or cannot
/// be read whole (see [`verified_length`]).
pub fn verify_tail(path: &Path, tail: Tail, remote: &[Hash]) -> u64 {
    if remote.len() as u64 != tail.blocks() {
        return 0;
    }
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let mut local = Vec::with_capacity(remote.len());
    for (index, theirs) in (0..tail.blocks()).zip(remote) {
        let Some((start, len)) = tail.block(index) else {
            break;
        };
        match hash_block(&file, start, len) {
            Ok(ours) if ours == *theirs => local.push(ours),
            _ => break,
        }
    }
    verified_length(tail, &local, remote)
}

/// BLAKE3 of `len` (at most [`HASH_BLOCK`]) bytes of `file` from `start` (blocking).
fn hash_block(file: &File, start: u64, len: u64) -> std::io::Result<Hash> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len.min(HASH_BLOCK) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(Hash::of(&buf))
}

/// Read the next `want` bytes of `file` (blocking).
fn read_block(file: &File, want: u64, path: &Path) -> Result<BytesMut> {
    // `read_to_end` fills spare capacity without zeroing it first.
    let mut buf = Vec::with_capacity(want as usize);
    match file.take(want).read_to_end(&mut buf) {
        // A `Vec` converts to a unique `Bytes` and on to `BytesMut` without a copy (the
        // fallback copy never runs: nothing else holds the buffer).
        Ok(n) if n as u64 == want => Ok(Bytes::from(buf)
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]))),
        Ok(_) => Err(Error::PossiblyCorrupt(format!(
            "{} shrank while being sent",
            path.display()
        ))),
        Err(e) => Err(storage_error(path, &e)),
    }
}

/// Aborts a task when dropped (an upload that ends early stops its reader).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A byte-rate limit shared by every transfer of a peer (`--limit-rate`).
///
/// A debt clock: every `take` moves the time at which the bytes taken so far are paid for
/// (`paid_until`) by their cost at the rate. A caller waits only when that time is more than
/// [`RATE_WAIT_MIN`] ahead of now, so at high rates chunks pass without a timer wake-up
/// each (a 32 KiB chunk costs 30 µs at 1 GiB/s, far below the timer's 1 ms grain). A
/// wait that overshoots is carried over: the next bytes are paid from `paid_until`, not
/// from now, as long as that lies at most [`RATE_CREDIT_MAX`] in the past (the longest
/// burst after a stall or an idle period).
pub struct RateLimit {
    bytes_per_sec: u64,
    paid_until: std::sync::Mutex<tokio::time::Instant>,
}

/// A caller is made to wait only when it is this far ahead of its rate.
pub const RATE_WAIT_MIN: std::time::Duration = std::time::Duration::from_millis(4);
/// Most credit carried over from oversleeping or idling.
pub const RATE_CREDIT_MAX: std::time::Duration = std::time::Duration::from_millis(50);

impl RateLimit {
    /// At most `bytes_per_sec` bytes per second (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            paid_until: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Take `bytes`; waits first while the bytes taken before are not paid for yet.
    pub async fn take(&self, bytes: u64) {
        let until = {
            // The guarded value is a plain instant: a panic elsewhere cannot leave it
            // half-written, so a poisoned lock is still usable.
            let mut paid = peershare_signaling::relay_plane::lock(&self.paid_until);
            let now = tokio::time::Instant::now();
            let start = (*paid).max(now - RATE_CREDIT_MAX);
            let cost = std::time::Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            *paid = start + cost;
            start
        };
        if until > tokio::time::Instant::now() + RATE_WAIT_MIN {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Where a download goes.
/// Files of at most this size are downloaded without a job record (see
/// `receive_to_file`): a restart downloads them again from the start.
pub const UNRECORDED_BYTES: u64 = 1024 * 1024;

/// One per download attempt, moved once into its task: the size of the `Dir` variant
/// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Sink {
    /// Into the job store's directory: data in the job's partial file, progress
    /// checkpointed in its record, published under `name` (already sanitized) or a
    /// numbered variant once verified.
    Dir {
        store: JobStore,
        record: JobRecord,
        name: String,
        /// Directories (sanitized components) between the store's directory and the
        /// file: its place in a shared tree; empty for a file shared on its own.
        dirs: Vec<String>,
        /// Set the executable bits once published.
        executable: bool,
        /// The verified file replaces an existing file of that name (an atomic rename)
        /// instead of taking a numbered name; a directory of that name is never replaced
        /// (the file then takes a numbered name).
        replace: bool,
    },
    /// Into memory.
    Memory,
}

impl Sink {
    /// The durable job of a directory sink.
    pub fn dir_job(&self) -> Option<(&JobStore, &JobRecord)> {
        match self {
            Sink::Dir { store, record, .. } => Some((store, record)),
            Sink::Memory => None,
        }
    }
}

/// Where a completed download went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Path(PathBuf),
    Memory(Bytes),
}

/// Name of the partial file of job `job_id` inside the output directory.
pub fn partial_name(job_id: &JobId) -> String {
    crate::store::partial_name(job_id)
}

/// Live counters of a running download, shared with the peer task, and its stop
/// switch.
#[derive(Debug, Default)]
pub struct DownloadCounters {
    /// Bytes written to the partial file (or buffered in memory) so far.
    pub written: AtomicU64,
    /// Bytes durably checkpointed.
    pub durable: AtomicU64,
    stop: tokio::sync::Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl DownloadCounters {
    /// Stop the download: the receiver stops reading, the writer flushes and records
    /// what it wrote, and `receive` returns [`Error::CancelledLocally`] with the partial
    /// data kept (the caller decides whether to remove it once `receive` has returned).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    /// Whether [`DownloadCounters::stop`] was called (a file of a batch checks it before
    /// it is published).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Prepare the partial file of `record` for resuming at `offset`: cut it to that
/// length and hash the bytes already there. Returns the state to continue with.
/// Blocking; call from a blocking thread.
pub fn prepare_resume(store: &JobStore, record: &JobRecord, offset: u64) -> Result<DownloadState> {
    let expected: Hash = record
        .hash
        .parse()
        .map_err(|_| Error::Protocol("job record carries an invalid hash".into()))?;
    let path = store.partial_path(&record.job_id);
    let mut hasher = blake3::Hasher::new();
    let offset = match std::fs::metadata(&path) {
        Ok(meta) => match reconcile(offset, record.size, meta.len()) {
            Reconcile::ResumeAt { offset, truncate } => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .read(true)
                    .open(&path)
                    .map_err(|e| storage_error(&path, &e))?;
                if truncate {
                    file.set_len(offset).map_err(|e| save_error(&path, &e))?;
                }
                let mut reader = std::io::BufReader::with_capacity(1 << 20, file).take(offset);
                std::io::copy(&mut reader, &mut hasher).map_err(|e| storage_error(&path, &e))?;
                offset
            }
            Reconcile::Restart => 0,
        },
        Err(_) => 0,
    };
    if offset == 0 {
        hasher = blake3::Hasher::new();
    }
    Ok(DownloadState::new(record.size, expected, offset, hasher))
}

/// Receive a download from `channel` into `sink`, verifying it. `on_progress` is called
/// with the received byte count whenever an acknowledgement is due. On a transport
/// failure the partial data stays for a resume; on a verification failure or a protocol
/// violation it is removed.
pub async fn receive<C: Channel + ?Sized>(
    channel: &C,
    mut state: DownloadState,
    sink: Sink,
    counters: Arc<DownloadCounters>,
    limit: Option<Arc<RateLimit>>,
    mut on_progress: impl FnMut(u64) + Send,
) -> Result<Saved> {
    match sink {
        Sink::Memory => {
            let mut buf = Vec::with_capacity(state.size().min(64 * 1024 * 1024) as usize);
            while !state.is_complete() {
                let chunk = next_chunk(channel, &counters).await?;
                let step = state.on_chunk(&chunk).map_err(chunk_error)?;
                if let Some(limit) = &limit {
                    limit.take(chunk.len() as u64).await;
                }
                buf.extend_from_slice(&chunk);
                counters.written.store(step.received, Ordering::Release);
                if step.ack_due {
                    on_progress(step.received);
                }
            }
            verify(&state)?;
            Ok(Saved::Memory(Bytes::from(buf)))
        }
        Sink::Dir {
            store,
            record,
            name,
            dirs,
            executable,
            replace,
        } => {
            let temp = store.partial_path(&record.job_id);
            let job_id = record.job_id;
            let result = receive_to_file(
                channel,
                &mut state,
                &store,
                record,
                &counters,
                limit.as_deref(),
                &mut on_progress,
            )
            .await;
            let place = Place {
                name,
                dirs,
                executable,
                replace,
            };
            let result = match result {
                Ok(digest) => {
                    verify_digest(&state, digest).and_then(|_| place.publish(&temp, store.dir()))
                }
                Err(e) => Err(e),
            };
            match &result {
                Ok(_) => store.remove_record(&job_id),
                Err(e) if discards_partial(e) => store.remove(&job_id),
                Err(_) => {}
            }
            result.map(Saved::Path)
        }
    }
}

/// Whether a failure makes the partial data worthless.
pub fn discards_partial(e: &Error) -> bool {
    matches!(
        e.code(),
        codes::POSSIBLY_CORRUPT | codes::PROTOCOL_VIOLATION
    )
}

async fn receive_to_file<C: Channel + ?Sized>(
    channel: &C,
    state: &mut DownloadState,
    store: &JobStore,
    mut record: JobRecord,
    counters: &Arc<DownloadCounters>,
    limit: Option<&RateLimit>,
    on_progress: &mut (impl FnMut(u64) + Send),
) -> Result<Hash> {
    let temp = store.partial_path(&record.job_id);
    let start = state.received();
    let mut out = PartialWriter::open(&temp, start, true).map_err(|e| storage_error(&temp, &e))?;
    tracing::debug!(
        direct_io = out.is_direct(),
        start,
        "writing {}",
        temp.display()
    );
    counters.written.store(start, Ordering::Release);
    // A small file gets no job record: after a restart it downloads again from the
    // start (at most `UNRECORDED_BYTES`), which costs less than the syncs of a record for
    // each of thousands of files in a tree. Its data is still synced before it is
    // published.
    let recorded = record.size > UNRECORDED_BYTES;
    if recorded && (start == 0 || record.offset != start) {
        // The record must exist (and not claim more than is on disk) before any data.
        // It never moves forward here: bytes before `start` that were written but not
        // synced (kept from an earlier attempt in this process, or verified against the
        // sender's block hashes after a restart) become durable with the next checkpoint.
        record.offset = start.min(record.offset);
        store.save(&record)?;
    }
    counters.durable.store(record.offset, Ordering::Release);
    // The writer thread hashes what it writes, off the receive path.
    let mut hasher = state.detach_hasher().unwrap_or_default();
    let (tx, mut rx) = mpsc::channel::<BytesMut>(PIPELINE_DEPTH);
    let writer_store = store.clone();
    let writer_counters = counters.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Hash> {
        let mut policy = CheckpointPolicy::new(start, CHECKPOINT_BYTES);
        let mut written = start;
        // Checkpoints (data first, then the record that describes it) run on their own
        // thread, so a sync never stalls the writer.
        let durable = writer_counters.clone();
        let checkpoints = Checkpointer::spawn(
            out.handle().map_err(|e| save_error(&temp, &e))?,
            temp.clone(),
            writer_store.clone(),
            record,
            move |offset| durable.durable.store(offset, Ordering::Release),
        )?;
        while let Some(chunk) = rx.blocking_recv() {
            out.write(&chunk).map_err(|e| save_error(&temp, &e))?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            // Only what reached the file may be checkpointed (direct I/O stages up to
            // 1 MiB).
            let flushed = out.flushed();
            writer_counters.written.store(flushed, Ordering::Release);
            if policy.due(flushed, false) {
                // Requested here; the checkpoint thread makes it durable and raises
                // `counters.durable` when it is.
                checkpoints.request(flushed)?;
                policy.checkpointed(flushed);
            }
        }
        // Whatever ended the stream, what was written is made durable and recorded, so
        // a resume (in this process or the next) starts right after it.
        out.finish().map_err(|e| save_error(&temp, &e))?;
        writer_counters.written.store(written, Ordering::Release);
        let mut record = checkpoints.finish()?;
        out.sync_all().map_err(|e| save_error(&temp, &e))?;
        if recorded && record.offset != written {
            record.offset = written;
            writer_store.save(&record)?;
        }
        writer_counters.durable.store(written, Ordering::Release);
        Ok(Hash(*hasher.finalize().as_bytes()))
    });
    let mut failure = None;
    while !state.is_complete() {
        let chunk = match next_chunk(channel, counters).await {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let step = match state.on_chunk(&chunk) {
            Ok(s) => s,
            Err(e) => {
                failure = Some(chunk_error(e));
                break;
            }
        };
        if let Some(limit) = limit {
            limit.take(chunk.len() as u64).await;
        }
        if tx.send(chunk).await.is_err() {
            break; // the writer failed; its error is reported below
        }
        if step.ack_due {
            on_progress(step.received);
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::SaveFailed(format!("writer task: {e}")))?;
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

async fn next_chunk<C: Channel + ?Sized>(
    channel: &C,
    counters: &DownloadCounters,
) -> Result<BytesMut> {
    tokio::select! {
        chunk = channel.recv_binary() => match chunk {
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(e)) => Err(Error::Protocol(format!("{e} (job channels carry file bytes)"))),
            None => Err(Error::DownloadFailed(
                "data channel closed before the file was complete".into(),
            )),
        },
        _ = counters.stop.notified() => Err(Error::CancelledLocally),
    }
}

fn chunk_error(e: ChunkError) -> Error {
    Error::Protocol(e.to_string())
}

fn save_error(path: &Path, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => storage_error(path, e),
        _ => Error::SaveFailed(format!("{}: {e}", path.display())),
    }
}

fn verify(state: &DownloadState) -> Result<()> {
    verdict(state.verify())
}

fn verify_digest(state: &DownloadState, digest: Hash) -> Result<()> {
    verdict(state.verify_digest(digest))
}

fn verdict(v: Verdict) -> Result<()> {
    match v {
        Verdict::Verified => Ok(()),
        Verdict::Mismatch { expected, actual } => Err(Error::PossiblyCorrupt(format!(
            "BLAKE3 {actual} does not match the offered {expected}"
        ))),
    }
}

/// Where a verified file goes below a download directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Its name (already sanitized); a taken name gets a number unless `replace`.
    pub name: String,
    /// Directories (sanitized components) between the download directory and the file:
    /// its place in a shared tree; empty for a file shared on its own.
    pub dirs: Vec<String>,
    /// Set the executable bits once published.
    pub executable: bool,
    /// Replace an existing file of that name (an atomic rename) instead of taking a
    /// numbered name; a directory of that name is never replaced.
    pub replace: bool,
}

impl Place {
    /// Move the verified file `temp` to this place below `base` (creating the tree's
    /// directories); returns where it went.
    pub fn publish(&self, temp: &Path, base: &Path) -> Result<PathBuf> {
        let dir = tree_dir(base, &self.dirs)?;
        self.publish_in(temp, &dir)
    }

    /// [`Place::publish`] into `dir`, the tree's directory of this place that the caller
    /// made with [`tree_dir`].
    pub fn publish_in(&self, temp: &Path, dir: &Path) -> Result<PathBuf> {
        let saved = if self.replace {
            publish_replacing(temp, dir, &self.name)?
        } else {
            publish(temp, dir, &self.name)?
        };
        if self.executable {
            set_executable(&saved);
        }
        Ok(saved)
    }
}

/// The directory `dirs` (sanitized components) below `base`, created where missing.
/// Every component must be a real directory: one that exists as a file or a symbolic
/// link is refused (5089), so a tree never lands outside `base` through a link.
pub fn tree_dir(base: &Path, dirs: &[String]) -> Result<PathBuf> {
    let mut dir = base.to_path_buf();
    for part in dirs {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(save_error(&dir, &e)),
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::StorageAccessDenied(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )));
            }
            Err(e) => return Err(save_error(&dir, &e)),
        }
    }
    Ok(dir)
}

/// Give a saved file the executable bits where it is readable (as `chmod +x` under a
/// umask that hides nothing more); best effort: a file system without modes keeps it.
pub fn set_executable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode();
            let with_x = mode | ((mode & 0o444) >> 2);
            if with_x != mode {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(with_x));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Move a verified partial file to its final name without ever replacing an existing
/// file: a hard link fails if the name is taken, and then the next number is tried.
pub fn publish(temp: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = dir.join(numbered_name(name, n));
        match std::fs::hard_link(temp, &candidate) {
            Ok(()) => {
                let _ = std::fs::remove_file(temp);
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                // File systems without hard links: check-then-rename.
                if candidate.exists() {
                    continue;
                }
                std::fs::rename(temp, &candidate).map_err(|e| save_error(&candidate, &e))?;
                return Ok(candidate);
            }
        }
    }
    Err(Error::SaveFailed(format!(
        "no free name for {name} in {}",
        dir.display()
    )))
}

/// Move a verified partial file to `dir/name`, atomically replacing a file (or symbolic
/// link) of that name: readers see the old file or the new one, never a mix. A
/// directory of that name is left alone and the file takes a numbered name instead.
pub fn publish_replacing(temp: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let target = dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => publish(temp, dir, name),
        _ => {
            std::fs::rename(temp, &target).map_err(|e| save_error(&target, &e))?;
            Ok(target)
        }
    }
}

/// Whether `target` is a regular file with exactly `size` bytes and BLAKE3 `hash`: a
/// copy of an offered file that need not be downloaded. The file is hashed only when
/// its size matches. A missing target, or anything but a regular file (a directory, a
/// device; a symbolic link is followed), is not a copy. Blocking; call from a blocking
/// thread. Errors only when a file of the right size cannot be read (5089).
pub fn is_identical_copy(target: &Path, size: u64, hash: &Hash) -> Result<bool> {
    let meta = match std::fs::metadata(target) {
        Ok(meta) => meta,
        Err(_) => return Ok(false),
    };
    if !meta.is_file() || meta.len() != size {
        return Ok(false);
    }
    Ok(hash_file(target)? == *hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hash::Hash;
    use crate::transport::memory_pair;

    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; n];
        rng.fill(&mut v[..]);
        v
    }

    fn record(dir: &Path, data: &[u8]) -> (JobStore, JobRecord) {
        let record = JobRecord {
            version: crate::store::RECORD_VERSION,
            job_id: JobId::new(),
            file_id: crate::proto::ids::FileId::new(),
            name: "f.bin".into(),
            size: data.len() as u64,
            hash: Hash::of(data).to_hex(),
            sender_name: "s".into(),
            sender_id: "c".into(),
            offset: 0,
        };
        (JobStore::new(dir), record)
    }

    fn dir_sink(store: &JobStore, record: &JobRecord) -> Sink {
        Sink::Dir {
            store: store.clone(),
            record: record.clone(),
            name: "f.bin".into(),
            dirs: Vec::new(),
            executable: false,
            replace: false,
        }
    }

    #[tokio::test]
    async fn transfer_file_to_file_over_memory_channel_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(CHUNK_SIZE * 5 + 123, 1);
        let src = dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let identity = FileIdentity::of(&src).unwrap();
        let (a, b) = memory_pair(4);
        let (store, rec) = record(&out, &data);
        let state =
            DownloadState::new(data.len() as u64, Hash::of(&data), 0, blake3::Hasher::new());
        let mut acks = Vec::new();
        let sent = AtomicU64::new(0);
        let counters = Arc::new(DownloadCounters::default());
        let (sent_res, saved) = tokio::join!(
            send_file(&a, &src, 0, identity, &sent, None),
            receive(
                &b,
                state,
                dir_sink(&store, &rec),
                counters.clone(),
                None,
                |n| acks.push(n)
            ),
        );
        assert_eq!(sent_res.unwrap(), data.len() as u64);
        assert_eq!(sent.load(Ordering::Relaxed), data.len() as u64);
        let Saved::Path(p) = saved.unwrap() else {
            panic!("not a path")
        };
        assert_eq!(p, out.join("f.bin"));
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(acks.last().copied(), Some(data.len() as u64));
        assert_eq!(counters.durable.load(Ordering::Relaxed), data.len() as u64);
        // Neither the partial file nor the record is left behind.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn transfer_cut_then_resumed_from_written_offset_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(CHUNK_SIZE * 9 + 7, 9);
        let src = dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let (store, rec) = record(&out, &data);
        // First attempt: the sender delivers 3 chunks, then the channel dies.
        let (a, b) = memory_pair(16);
        for c in data.chunks(CHUNK_SIZE).take(3) {
            a.send(BytesMut::from(c)).await.unwrap();
        }
        a.close().await;
        let counters = Arc::new(DownloadCounters::default());
        let state =
            DownloadState::new(data.len() as u64, Hash::of(&data), 0, blake3::Hasher::new());
        let err = receive(
            &b,
            state,
            dir_sink(&store, &rec),
            counters.clone(),
            None,
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), codes::DOWNLOAD_FAILED);
        let written = counters.written.load(Ordering::Relaxed);
        assert_eq!(written, 3 * CHUNK_SIZE as u64);
        assert!(
            store.partial_path(&rec.job_id).exists(),
            "partial data must be kept"
        );
        // Second attempt resumes from what was written.
        let state = tokio::task::spawn_blocking({
            let (store, rec) = (store.clone(), rec.clone());
            move || prepare_resume(&store, &rec, written)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(state.received(), written);
        let (a, b) = memory_pair(4);
        let sent = AtomicU64::new(0);
        let identity = FileIdentity::of(&src).unwrap();
        let (sent_res, saved) = tokio::join!(
            send_file(&a, &src, written, identity, &sent, None),
            receive(&b, state, dir_sink(&store, &rec), counters, None, |_| {}),
        );
        assert_eq!(sent_res.unwrap(), data.len() as u64 - written);
        let Saved::Path(p) = saved.unwrap() else {
            panic!("not a path")
        };
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }

    #[test]
    fn prepare_resume_truncates_bytes_past_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(1000, 4);
        let (store, mut rec) = record(dir.path(), &data);
        rec.offset = 400;
        // 600 bytes on disk but only 400 recorded as durable; the tail is garbage.
        let mut on_disk = data[..400].to_vec();
        on_disk.extend_from_slice(&[0xAA; 200]);
        std::fs::write(store.partial_path(&rec.job_id), &on_disk).unwrap();
        let state = prepare_resume(&store, &rec, rec.offset).unwrap();
        assert_eq!(state.received(), 400);
        assert_eq!(
            std::fs::metadata(store.partial_path(&rec.job_id))
                .unwrap()
                .len(),
            400
        );
        let mut state = state;
        state.on_chunk(&data[400..]).unwrap();
        assert_eq!(state.verify(), Verdict::Verified);
    }

    #[tokio::test]
    async fn verify_tail_sender_hashes_match_until_the_first_changed_block() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes((3 * HASH_BLOCK + 500) as usize, 12);
        let src = dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let tail = Tail {
            offset: 300,
            length: 3 * HASH_BLOCK + 200,
        };
        let identity = FileIdentity::of(&src).unwrap();
        let remote = hash_blocks(&src, identity, tail, &ReadPermits::new(1))
            .await
            .unwrap();
        assert_eq!(remote.len(), 4);
        let partial = dir.path().join("partial");
        std::fs::write(&partial, &data).unwrap();
        assert_eq!(verify_tail(&partial, tail, &remote), tail.length);
        // A changed byte in the third block: the first two are verified.
        let mut changed = data.clone();
        changed[(300 + 2 * HASH_BLOCK + 9) as usize] ^= 1;
        std::fs::write(&partial, &changed).unwrap();
        assert_eq!(verify_tail(&partial, tail, &remote), 2 * HASH_BLOCK);
        // A partial file that ends inside the last block: that block is not verified.
        std::fs::write(&partial, &data[..data.len() - 1]).unwrap();
        assert_eq!(verify_tail(&partial, tail, &remote), 3 * HASH_BLOCK);
        // No file, or a wrong number of hashes: nothing.
        assert_eq!(verify_tail(&dir.path().join("none"), tail, &remote), 0);
        assert_eq!(verify_tail(&partial, tail, &remote[..3]), 0);
    }

    #[tokio::test]
    async fn hash_blocks_changed_source_is_possibly_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, random_bytes(4000, 13)).unwrap();
        let identity = FileIdentity::of(&src).unwrap();
        std::fs::write(&src, b"short").unwrap();
        let tail = Tail {
            offset: 0,
            length: 4000,
        };
        let err = hash_blocks(&src, identity, tail, &ReadPermits::new(1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), codes::POSSIBLY_CORRUPT);
    }

    #[test]
    fn prepare_resume_short_file_restarts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(1000, 5);
        let (store, mut rec) = record(dir.path(), &data);
        rec.offset = 500;
        std::fs::write(store.partial_path(&rec.job_id), &data[..100]).unwrap();
        let state = prepare_resume(&store, &rec, rec.offset).unwrap();
        assert_eq!(state.received(), 0);
    }

    #[tokio::test]
    async fn transfer_corrupted_stream_is_possibly_corrupt_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(1000, 2);
        let (store, rec) = record(dir.path(), &data);
        let (a, b) = memory_pair(4);
        let state = DownloadState::new(1000, Hash::of(&data), 0, blake3::Hasher::new());
        let mut bad = data.clone();
        bad[10] ^= 1;
        a.send(BytesMut::from(&bad[..])).await.unwrap();
        let counters = Arc::new(DownloadCounters::default());
        let err = receive(&b, state, dir_sink(&store, &rec), counters, None, |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), crate::error::codes::POSSIBLY_CORRUPT);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn transfer_oversend_is_protocol_violation() {
        let (a, b) = memory_pair(4);
        let state = DownloadState::new(4, Hash::of(b"abcd"), 0, blake3::Hasher::new());
        a.send(BytesMut::from(&b"abcde"[..])).await.unwrap();
        let err = receive(&b, state, Sink::Memory, Default::default(), None, |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), crate::error::codes::PROTOCOL_VIOLATION);
    }

    #[tokio::test]
    async fn transfer_channel_closed_midway_is_download_failed() {
        let (a, b) = memory_pair(4);
        let state = DownloadState::new(8, Hash::of(b"abcdefgh"), 0, blake3::Hasher::new());
        a.send(BytesMut::from(&b"abcd"[..])).await.unwrap();
        a.close().await;
        let err = receive(&b, state, Sink::Memory, Default::default(), None, |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), crate::error::codes::DOWNLOAD_FAILED);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_paces_bytes_by_virtual_clock() {
        let limit = RateLimit::new(1000);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limit.take(500).await;
        }
        // 2500 bytes at 1000 B/s: the fifth take starts at 2.0 s.
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_high_rate_holds_rate_without_per_chunk_waits() {
        // 1 GiB/s in 32 KiB chunks: 32 MiB take 31.25 ms, within the wait threshold.
        let limit = RateLimit::new(1 << 30);
        let start = tokio::time::Instant::now();
        for _ in 0..1024 {
            limit.take(32 * 1024).await;
        }
        let elapsed = start.elapsed();
        let ideal = std::time::Duration::from_micros(31_250);
        // The timer's grain is 1 ms; the old limiter slept once per chunk (over 1 s).
        let grain = std::time::Duration::from_millis(1);
        assert!(
            elapsed + RATE_WAIT_MIN + grain >= ideal && elapsed <= ideal + grain,
            "32 MiB at 1 GiB/s took {elapsed:?} of virtual time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_oversleep_is_carried_over() {
        let limit = RateLimit::new(1000);
        limit.take(100).await; // paid until 0.1 s
        limit.take(100).await; // waited until 0.1 s; paid until 0.2 s
        // The caller comes back 30 ms late (a timer overshoot, a slow write): those
        // 30 ms are credit, so 30 more bytes pass before it is ahead again.
        tokio::time::advance(std::time::Duration::from_millis(130)).await;
        let before = tokio::time::Instant::now();
        limit.take(130).await; // starts at 0.2 s (in the past): no wait; paid until 0.33 s
        assert_eq!(tokio::time::Instant::now(), before);
        let start = tokio::time::Instant::now();
        limit.take(1).await; // waits until 0.33 s, not 0.36 s
        assert_eq!(start.elapsed(), std::time::Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_idle_credit_is_bounded() {
        let limit = RateLimit::new(1000);
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        let start = tokio::time::Instant::now();
        limit.take(1000).await; // 50 ms of credit: paid until now + 0.95 s
        limit.take(1).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_millis(950));
    }

    #[tokio::test]
    async fn transfer_changed_source_is_possibly_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        std::fs::write(&src, b"one").unwrap();
        let identity = FileIdentity::of(&src).unwrap();
        std::fs::write(&src, b"three").unwrap();
        let (a, _b) = memory_pair(4);
        let err = send_file(&a, &src, 0, identity, &AtomicU64::new(0), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), crate::error::codes::POSSIBLY_CORRUPT);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn send_file_with_one_read_permit_serves_concurrent_transfers_identically() {
        let dir = tempfile::tempdir().unwrap();
        let permits = ReadPermits::new(1);
        let data: Vec<Vec<u8>> = (0..3)
            .map(|i| random_bytes(READ_BLOCK * 3 + 1000 * i, 30 + i as u64))
            .collect();
        let transfers = data.iter().enumerate().map(|(i, d)| {
            let src = dir.path().join(format!("src{i}.bin"));
            std::fs::write(&src, d).unwrap();
            let permits = permits.clone();
            let state = DownloadState::new(d.len() as u64, Hash::of(d), 0, blake3::Hasher::new());
            async move {
                let identity = FileIdentity::of(&src).unwrap();
                let (a, b) = memory_pair(4);
                let sent = AtomicU64::new(0);
                let (sent_res, saved) = tokio::join!(
                    send_file_with(&a, &src, 0, identity, &sent, None, &permits),
                    receive(&b, state, Sink::Memory, Default::default(), None, |_| {}),
                );
                (sent_res.unwrap(), saved.unwrap())
            }
        });
        let results = futures_util::future::join_all(transfers).await;
        for ((n, saved), d) in results.into_iter().zip(&data) {
            assert_eq!(n, d.len() as u64);
            assert_eq!(saved, Saved::Memory(Bytes::from(d.clone())));
        }
        // Every block read gave its permit back.
        assert_eq!(permits.available(), 1);
    }

    #[test]
    fn publish_replacing_existing_file_is_replaced_and_directory_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        let temp = dir.path().join("t.part");
        std::fs::write(&temp, b"new").unwrap();
        let p = publish_replacing(&temp, dir.path(), "a.txt").unwrap();
        assert_eq!(p, dir.path().join("a.txt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!temp.exists());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(&temp, b"file").unwrap();
        let p = publish_replacing(&temp, dir.path(), "d").unwrap();
        assert_eq!(p, dir.path().join("d (1)"));
        assert!(dir.path().join("d").is_dir());
    }

    #[test]
    fn is_identical_copy_matches_only_same_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, b"hello").unwrap();
        let hash = Hash::of(b"hello");
        assert!(is_identical_copy(&path, 5, &hash).unwrap());
        assert!(!is_identical_copy(&path, 5, &Hash::of(b"hellp")).unwrap());
        assert!(!is_identical_copy(&path, 6, &hash).unwrap());
        assert!(!is_identical_copy(&dir.path().join("none"), 5, &hash).unwrap());
        assert!(!is_identical_copy(dir.path(), 5, &hash).unwrap());
    }

    #[test]
    fn publish_existing_name_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        let temp = dir.path().join("t.part");
        std::fs::write(&temp, b"new").unwrap();
        let p = publish(&temp, dir.path(), "a.txt").unwrap();
        assert_eq!(p, dir.path().join("a (1).txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!temp.exists());
    }
}
