//! Batches in the engine (docs/PROTOCOL.md, "Batches"): a sender streams many small files
//! into one channel, each announced by a frame; a recipient reads them with the sans-IO
//! [`BatchReader`], verifies each, makes a group of them durable with one sync and then
//! publishes them one by one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::{
    AbortOnDrop, CHUNK_SIZE, DownloadCounters, FileIdentity, Place, READ_BLOCK, RateLimit,
    ReadPermits, Saved, read_block, save_error, storage_error, verdict,
};
use crate::error::{Error, Result};
use crate::proto::batch::{BatchFrame, BatchReader, BatchStep, MAX_SKIP_MESSAGE};
use crate::proto::download::Verdict;
use crate::proto::hash::Hash;
use crate::proto::ids::{FileId, JobId};
use crate::store::JobStore;
use crate::transport::Channel;

/// Verified files of a batch made durable with one sync, at most this many …
const SYNC_FILES: usize = 64;
/// … or this many bytes.
const SYNC_BYTES: u64 = 8 * 1024 * 1024;

/// One job of a batch on the sender: a file to send, or a refusal to announce.
pub enum Outgoing {
    File {
        job_id: JobId,
        path: PathBuf,
        identity: FileIdentity,
        /// Bytes of this job handed to the channel.
        sent: Arc<AtomicU64>,
    },
    /// Refused (`file_id`: the file it named, for an `error` when no channel opens).
    Skip {
        job_id: JobId,
        file_id: FileId,
        error: Error,
    },
}

impl Outgoing {
    fn job_id(&self) -> JobId {
        match self {
            Outgoing::File { job_id, .. } | Outgoing::Skip { job_id, .. } => *job_id,
        }
    }
}

/// Stream the jobs of a batch into `channel`, in order: each file as a `file` frame and
/// its bytes, each refusal (and each file that cannot be read whole and unchanged) as a
/// `skip` frame; then `end`. Files are read ahead, several small ones per blocking read
/// under one of `reads`' permits. Returns the jobs that were skipped because of their
/// file (not the refusals given), with why; `Err` when the channel closed.
pub async fn send_batch<C: Channel + ?Sized>(
    channel: &C,
    jobs: Vec<Outgoing>,
    limit: Option<&RateLimit>,
    reads: &ReadPermits,
) -> Result<Vec<(JobId, Error)>> {
    // One group waits while the next is read: at most about 3 × 1 MiB per batch.
    let (tx, mut rx) = mpsc::channel::<Vec<(Outgoing, Result<BytesMut>)>>(1);
    let permits = reads.0.clone();
    let reader = AbortOnDrop(tokio::spawn(async move {
        for group in read_groups(jobs) {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let read = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                group
                    .into_iter()
                    .map(|job| {
                        let data = match &job {
                            Outgoing::File { path, identity, .. } => read_whole(path, *identity),
                            Outgoing::Skip { .. } => Ok(BytesMut::new()),
                        };
                        (job, data)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(read) = read else { return };
            if tx.send(read).await.is_err() {
                return;
            }
        }
    }));
    let closed = |_| Error::UploadFailed("data channel closed".into());
    let mut unreadable = Vec::new();
    while let Some(group) = rx.recv().await {
        for (job, data) in group {
            let job_id = job.job_id();
            let (sent, mut data) = match (job, data) {
                (Outgoing::File { sent, .. }, Ok(data)) => (sent, data),
                (Outgoing::File { .. }, Err(error)) => {
                    channel
                        .send_text(&skip_frame(job_id, &error))
                        .await
                        .map_err(closed)?;
                    unreadable.push((job_id, error));
                    continue;
                }
                (Outgoing::Skip { error, .. }, _) => {
                    channel
                        .send_text(&skip_frame(job_id, &error))
                        .await
                        .map_err(closed)?;
                    continue;
                }
            };
            let size = data.len() as u64;
            channel
                .send_text(&BatchFrame::File { job_id, size }.encode())
                .await
                .map_err(closed)?;
            while !data.is_empty() {
                let chunk = data.split_to(data.len().min(CHUNK_SIZE));
                let len = chunk.len() as u64;
                if let Some(limit) = limit {
                    limit.take(len).await;
                }
                sent.fetch_add(len, Ordering::Relaxed);
                channel.send(chunk).await.map_err(closed)?;
            }
        }
    }
    drop(reader);
    channel
        .send_text(&BatchFrame::End.encode())
        .await
        .map_err(closed)?;
    Ok(unreadable)
}

/// The jobs in groups read by one blocking call each: consecutive files up to
/// `READ_BLOCK` bytes together (a larger file alone).
fn read_groups(jobs: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut groups: Vec<Vec<Outgoing>> = Vec::new();
    let mut bytes = 0u64;
    for job in jobs {
        let size = match &job {
            Outgoing::File { identity, .. } => identity.size,
            Outgoing::Skip { .. } => 0,
        };
        match groups.last_mut() {
            Some(group) if bytes + size <= READ_BLOCK as u64 => {
                bytes += size;
                group.push(job);
            }
            _ => {
                bytes = size;
                groups.push(vec![job]);
            }
        }
    }
    groups
}

/// The whole file at `path`, which must have `identity` before and after the read.
fn read_whole(path: &Path, identity: FileIdentity) -> Result<BytesMut> {
    let changed =
        || Error::PossiblyCorrupt(format!("{} changed since it was offered", path.display()));
    if FileIdentity::of(path)? != identity {
        return Err(changed());
    }
    let file = File::open(path).map_err(|e| storage_error(path, &e))?;
    let data = read_block(&file, identity.size, path)?;
    let meta = file.metadata().map_err(|e| storage_error(path, &e))?;
    if meta.len() != identity.size || meta.modified().ok() != identity.modified {
        return Err(changed());
    }
    Ok(data)
}

/// The `skip` frame that tells the recipient why job `job_id` is not sent.
fn skip_frame(job_id: JobId, error: &Error) -> String {
    let mut message = error.to_string();
    if message.len() > MAX_SKIP_MESSAGE {
        let mut end = MAX_SKIP_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    BatchFrame::Skip {
        job_id,
        code: error.code(),
        message,
    }
    .encode()
}

/// One job of a batch on the recipient.
pub struct Incoming {
    pub job_id: JobId,
    /// The offered size and hash.
    pub size: u64,
    pub hash: Hash,
    /// Where the verified file goes; `None`: the job ended already (its bytes are read
    /// and dropped).
    pub place: Option<Place>,
    /// Stopping them (a cancel) keeps the file from being published.
    pub counters: Arc<DownloadCounters>,
}

/// How a batch channel ended.
#[derive(Debug)]
pub struct BatchEnd {
    /// `Ok` after the sender's `end`; a transport failure (the channel closed early,
    /// 1183-class `DownloadFailed`) or a protocol violation (6005) otherwise.
    pub result: Result<()>,
    /// The jobs whose file was neither published, failed nor skipped.
    pub unfinished: Vec<JobId>,
}

/// What a piece other than data counts for in a bunch: a bunch goes to the writer at
/// `READ_BLOCK` bytes, or at 64 files of no size.
const BUNCH_PIECE_COST: usize = READ_BLOCK / 128;

/// What the reading side hands the writer thread.
enum Piece {
    Start(JobId),
    Data(BytesMut),
    Finish,
    Skipped(JobId, Error),
}

/// Receive a batch from `channel` into `store`'s directory. Each file's bytes go to its
/// partial file as they come; a file whose BLAKE3 matches the offer waits for the next
/// sync (after `SYNC_FILES` files or `SYNC_BYTES` bytes, and at the end), which makes the
/// whole group durable at once (`syncfs` on Linux); then each is published and reported
/// through `on_file`, with its outcome. A mismatch, a skip or a write failure is reported
/// for that file alone; the rest of the batch goes on.
pub async fn receive_batch<C: Channel + ?Sized>(
    channel: &C,
    store: JobStore,
    jobs: Vec<Incoming>,
    limit: Option<Arc<RateLimit>>,
    on_file: impl FnMut(JobId, Result<Saved>) + Send + 'static,
) -> BatchEnd {
    let mut reader = BatchReader::new(jobs.iter().map(|j| (j.job_id, j.size)));
    // Two bunches wait for the writer: about 768 KiB per batch at most.
    let (tx, rx) = mpsc::channel::<Vec<Piece>>(2);
    // Pieces go to the writer in bunches (a wake-up of its thread per piece would cost
    // more than writing a small file).
    let mut bunch: Vec<Piece> = Vec::new();
    let mut bunch_bytes = 0usize;
    let writer = tokio::task::spawn_blocking(move || write_batch(rx, store, jobs, on_file));
    let result = async {
        loop {
            let Some((text, data)) = channel.recv_message().await else {
                return Err(Error::DownloadFailed(
                    "data channel closed before the batch was complete".into(),
                ));
            };
            let step = if text {
                reader.on_text(&data)
            } else {
                reader.on_bytes(data.len())
            }
            .map_err(|e| Error::Protocol(e.to_string()))?;
            let pieces: Vec<Piece> = match step {
                BatchStep::Start { job_id, size: 0 } => vec![Piece::Start(job_id), Piece::Finish],
                BatchStep::Start { job_id, .. } => vec![Piece::Start(job_id)],
                BatchStep::Bytes { complete, .. } => {
                    if let Some(limit) = &limit {
                        limit.take(data.len() as u64).await;
                    }
                    let mut p = vec![Piece::Data(data)];
                    if complete {
                        p.push(Piece::Finish);
                    }
                    p
                }
                BatchStep::Skipped {
                    job_id,
                    code,
                    message,
                } => vec![Piece::Skipped(job_id, Error::from_remote(code, message))],
                BatchStep::End => return Ok(()),
            };
            for piece in pieces {
                match &piece {
                    Piece::Data(d) => bunch_bytes += d.len(),
                    _ => bunch_bytes += BUNCH_PIECE_COST,
                }
                bunch.push(piece);
            }
            if bunch_bytes >= READ_BLOCK {
                if tx.send(std::mem::take(&mut bunch)).await.is_err() {
                    return Err(Error::SaveFailed("the batch writer stopped".into()));
                }
                bunch_bytes = 0;
            }
        }
    }
    .await;
    // What was read reaches the writer however the channel ended.
    if !bunch.is_empty() {
        let _ = tx.send(bunch).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::SaveFailed(format!("batch writer: {e}")));
    let mut unfinished = reader.unfinished();
    let result = match written {
        Ok(()) => result,
        Err(e) => {
            // The writer died: nothing it held was reported.
            unfinished = Vec::new();
            Err(e)
        }
    };
    BatchEnd { result, unfinished }
}

/// The file being written.
struct Open {
    job_id: JobId,
    file: Option<File>,
    temp: PathBuf,
    hasher: blake3::Hasher,
    error: Option<Error>,
}

/// A verified file waiting for the next sync.
struct Ready {
    job_id: JobId,
    temp: PathBuf,
    size: u64,
}

/// The writer thread of a batch: see [`receive_batch`].
fn write_batch(
    mut rx: mpsc::Receiver<Vec<Piece>>,
    store: JobStore,
    jobs: Vec<Incoming>,
    mut on_file: impl FnMut(JobId, Result<Saved>),
) {
    let mut jobs: HashMap<JobId, Incoming> = jobs.into_iter().map(|j| (j.job_id, j)).collect();
    let mut open: Option<Open> = None;
    let mut ready: Vec<Ready> = Vec::new();
    let mut ready_bytes = 0u64;
    let mut dirs = HashMap::new();
    while let Some(bunch) = rx.blocking_recv() {
        for piece in bunch {
            match piece {
                Piece::Start(job_id) => {
                    let temp = store.partial_path(&job_id);
                    let wanted = jobs
                        .get(&job_id)
                        .is_some_and(|j| j.place.is_some() && !j.counters.is_stopped());
                    let (file, error) = if wanted {
                        match File::create(&temp) {
                            Ok(f) => (Some(f), None),
                            Err(e) => (None, Some(save_error(&temp, &e))),
                        }
                    } else {
                        (None, None)
                    };
                    open = Some(Open {
                        job_id,
                        file,
                        temp,
                        hasher: blake3::Hasher::new(),
                        error,
                    });
                }
                Piece::Data(data) => {
                    if let Some(o) = open.as_mut() {
                        o.hasher.update(&data);
                        if let Some(f) = o.file.as_mut()
                            && let Err(e) = std::io::Write::write_all(f, &data)
                        {
                            o.error = Some(save_error(&o.temp, &e));
                            o.file = None;
                        }
                    }
                }
                Piece::Finish => {
                    let Some(o) = open.take() else { continue };
                    let Some(job) = jobs.get(&o.job_id) else {
                        continue;
                    };
                    if job.place.is_none() {
                        continue; // ended already: nothing to report
                    }
                    let verdict = match (o.error, o.file) {
                        (Some(e), _) => Err(e),
                        (None, None) => Err(Error::CancelledLocally),
                        (None, Some(file)) => {
                            drop(file);
                            let actual = Hash(*o.hasher.finalize().as_bytes());
                            verdict(Verdict::of(job.hash, actual))
                        }
                    };
                    match verdict {
                        Ok(()) => {
                            ready_bytes += job.size;
                            ready.push(Ready {
                                job_id: o.job_id,
                                temp: o.temp,
                                size: job.size,
                            });
                            if ready.len() >= SYNC_FILES || ready_bytes >= SYNC_BYTES {
                                publish_ready(
                                    &store,
                                    &mut jobs,
                                    &mut ready,
                                    &mut dirs,
                                    &mut on_file,
                                );
                                ready_bytes = 0;
                            }
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&o.temp);
                            jobs.remove(&o.job_id);
                            on_file(o.job_id, Err(e));
                        }
                    }
                }
                Piece::Skipped(job_id, e) => {
                    if jobs.remove(&job_id).is_some_and(|j| j.place.is_some()) {
                        on_file(job_id, Err(e));
                    }
                }
            }
        }
    }
    // A file cut off in the middle is not kept (a batch starts its files over).
    if let Some(o) = open.take()
        && o.file.is_some()
    {
        let _ = std::fs::remove_file(&o.temp);
    }
    publish_ready(&store, &mut jobs, &mut ready, &mut dirs, &mut on_file);
}

/// Make the verified files durable (one sync for all), then publish and report each.
/// `dirs` holds the tree directories this batch made already (each is made, and
/// checked to be a real directory, once per batch).
fn publish_ready(
    store: &JobStore,
    jobs: &mut HashMap<JobId, Incoming>,
    ready: &mut Vec<Ready>,
    dirs: &mut HashMap<Vec<String>, PathBuf>,
    on_file: &mut impl FnMut(JobId, Result<Saved>),
) {
    if ready.is_empty() {
        return;
    }
    let synced = sync_files(store.dir(), ready);
    for r in ready.drain(..) {
        let Some(job) = jobs.remove(&r.job_id) else {
            continue;
        };
        let result = match (&synced, &job.place) {
            (Err(e), _) => Err(save_error(&r.temp, e)),
            _ if job.counters.is_stopped() => Err(Error::CancelledLocally),
            (Ok(()), Some(place)) => match dirs.get(&place.dirs) {
                Some(dir) => place.publish_in(&r.temp, dir),
                None => super::tree_dir(store.dir(), &place.dirs).and_then(|dir| {
                    let saved = place.publish_in(&r.temp, &dir);
                    dirs.insert(place.dirs.clone(), dir);
                    saved
                }),
            },
            (Ok(()), None) => Err(Error::CancelledLocally),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&r.temp);
        } else {
            job.counters.written.store(r.size, Ordering::Release);
            job.counters.durable.store(r.size, Ordering::Release);
        }
        on_file(r.job_id, result.map(Saved::Path));
    }
}

/// Make the data of `files` (all in `dir`'s file system) durable: one `syncfs` on Linux
/// (one flush for the whole group instead of one per file), else one `fdatasync` each.
fn sync_files(dir: &Path, files: &[Ready]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(d) = File::open(dir) {
            // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
            if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
                return Ok(());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
    for f in files {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f.temp)?
            .sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;
    use crate::transport::memory_pair;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        src: PathBuf,
        out: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        Fixture {
            _dir: dir,
            src,
            out,
        }
    }

    fn outgoing(src: &Path, name: &str, data: &[u8]) -> (Outgoing, JobId) {
        let path = src.join(name);
        std::fs::write(&path, data).unwrap();
        let job_id = JobId::new();
        let job = Outgoing::File {
            job_id,
            identity: FileIdentity::of(&path).unwrap(),
            path,
            sent: Arc::new(AtomicU64::new(0)),
        };
        (job, job_id)
    }

    fn incoming(job_id: JobId, data: &[u8], dirs: &[&str], name: &str) -> Incoming {
        Incoming {
            job_id,
            size: data.len() as u64,
            hash: Hash::of(data),
            place: Some(Place {
                name: name.into(),
                dirs: dirs.iter().map(|d| d.to_string()).collect(),
                executable: false,
                replace: false,
            }),
            counters: Arc::new(DownloadCounters::default()),
        }
    }

    type Outcomes = Arc<std::sync::Mutex<Vec<(JobId, Result<Saved>)>>>;

    async fn run(
        out: &Path,
        send: Vec<Outgoing>,
        recv: Vec<Incoming>,
    ) -> (Result<Vec<(JobId, Error)>>, BatchEnd, Outcomes) {
        let (a, b) = memory_pair(8);
        let outcomes: Outcomes = Default::default();
        let log = outcomes.clone();
        let store = JobStore::new(out);
        let permits = ReadPermits::new(2);
        let (sent, end) = tokio::join!(
            send_batch(&a, send, None, &permits),
            receive_batch(&b, store, recv, None, move |job, r| {
                log.lock().unwrap().push((job, r))
            })
        );
        (sent, end, outcomes)
    }

    /// What a hand-written sender puts on the channel.
    enum Raw {
        File(JobId, u64),
        Bytes(Vec<u8>),
        End,
        Close,
    }

    /// `receive_batch` of `recv` into `out` against a sender that writes `script`.
    async fn scripted(
        out: &Path,
        recv: Vec<Incoming>,
        script: Vec<Raw>,
    ) -> (BatchEnd, Vec<(JobId, Result<Saved>)>) {
        let (a, b) = memory_pair(8);
        let outcomes: Outcomes = Default::default();
        let log = outcomes.clone();
        let sender = async {
            for raw in script {
                let sent = match raw {
                    Raw::File(job_id, size) => {
                        a.send_text(&BatchFrame::File { job_id, size }.encode())
                            .await
                    }
                    Raw::Bytes(data) => a.send(BytesMut::from(&data[..])).await,
                    Raw::End => a.send_text(&BatchFrame::End.encode()).await,
                    Raw::Close => {
                        a.close().await;
                        Ok(())
                    }
                };
                sent.unwrap();
            }
        };
        let store = JobStore::new(out);
        let (_, end) = tokio::join!(
            sender,
            receive_batch(&b, store, recv, None, move |j, r| log
                .lock()
                .unwrap()
                .push((j, r)))
        );
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        (end, outcomes)
    }

    #[tokio::test]
    async fn batch_files_empty_and_skipped_arrive_verified_in_order() {
        let f = fixture();
        let big = bytes(300 * 1024, 1);
        let small = bytes(10, 2);
        let (j1, id1) = outgoing(&f.src, "big.bin", &big);
        let (j2, id2) = outgoing(&f.src, "empty", b"");
        let id3 = JobId::new();
        let j3 = Outgoing::Skip {
            job_id: id3,
            file_id: FileId::new(),
            error: Error::OfferExpired("gone".into()),
        };
        let (j4, id4) = outgoing(&f.src, "small.txt", &small);
        let recv = vec![
            incoming(id1, &big, &["tree", "d"], "big.bin"),
            incoming(id2, b"", &["tree"], "empty"),
            incoming(id3, b"xyz", &[], "never"),
            incoming(id4, &small, &[], "small.txt"),
        ];
        let (sent, end, outcomes) = run(&f.out, vec![j1, j2, j3, j4], recv).await;
        assert!(sent.unwrap().is_empty());
        assert!(end.result.is_ok(), "{:?}", end.result);
        assert!(end.unfinished.is_empty());
        let outcomes = outcomes.lock().unwrap();
        let order: Vec<JobId> = outcomes.iter().map(|(j, _)| *j).collect();
        // The skip is reported at once; verified files after the sync, in order.
        assert_eq!(order, vec![id3, id1, id2, id4]);
        assert_eq!(
            outcomes[0].1.as_ref().unwrap_err().code(),
            codes::OFFER_EXPIRED
        );
        assert_eq!(std::fs::read(f.out.join("tree/d/big.bin")).unwrap(), big);
        assert_eq!(std::fs::read(f.out.join("tree/empty")).unwrap(), b"");
        assert_eq!(std::fs::read(f.out.join("small.txt")).unwrap(), small);
        assert!(!f.out.join("never").exists());
        // No partial file is left behind.
        let left: Vec<_> = std::fs::read_dir(&f.out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".peershare"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn batch_changed_source_is_skipped_alone_with_5100() {
        let f = fixture();
        let a = bytes(5000, 3);
        let b = bytes(6000, 4);
        let (j1, id1) = outgoing(&f.src, "a", &a);
        let (j2, id2) = outgoing(&f.src, "b", &b);
        std::fs::write(f.src.join("a"), bytes(5001, 9)).unwrap();
        let recv = vec![incoming(id1, &a, &[], "a"), incoming(id2, &b, &[], "b")];
        let (sent, end, outcomes) = run(&f.out, vec![j1, j2], recv).await;
        let unreadable = sent.unwrap();
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].0, id1);
        assert_eq!(unreadable[0].1.code(), codes::POSSIBLY_CORRUPT);
        assert!(end.result.is_ok());
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes[0].0, id1);
        assert_eq!(
            outcomes[0].1.as_ref().unwrap_err().code(),
            codes::POSSIBLY_CORRUPT
        );
        assert_eq!(outcomes[1].0, id2);
        assert!(outcomes[1].1.is_ok());
        assert!(!f.out.join("a").exists());
        assert_eq!(std::fs::read(f.out.join("b")).unwrap(), b);
    }

    #[tokio::test]
    async fn batch_lying_sender_fails_the_file_with_5100_and_keeps_the_rest() {
        let f = fixture();
        let good = bytes(100, 5);
        let (id1, id2) = (JobId::new(), JobId::new());
        let recv = vec![
            incoming(id1, &good, &[], "lied"),
            incoming(id2, &good, &[], "good"),
        ];
        let script = vec![
            Raw::File(id1, 100),
            Raw::Bytes(bytes(100, 6)),
            Raw::File(id2, 100),
            Raw::Bytes(good.clone()),
            Raw::End,
        ];
        let (end, outcomes) = scripted(&f.out, recv, script).await;
        assert!(end.result.is_ok());
        assert_eq!(
            outcomes[0].1.as_ref().unwrap_err().code(),
            codes::POSSIBLY_CORRUPT
        );
        assert!(!f.out.join("lied").exists());
        assert_eq!(std::fs::read(f.out.join("good")).unwrap(), good);
    }

    #[tokio::test]
    async fn batch_cut_mid_file_reports_the_rest_unfinished_and_keeps_no_partial() {
        let f = fixture();
        let one = bytes(50, 7);
        let (id1, id2, id3) = (JobId::new(), JobId::new(), JobId::new());
        let recv = vec![
            incoming(id1, &one, &[], "one"),
            incoming(id2, &one, &[], "two"),
            incoming(id3, &one, &[], "three"),
        ];
        let script = vec![
            Raw::File(id1, 50),
            Raw::Bytes(one.clone()),
            Raw::File(id2, 50),
            Raw::Bytes(one[..20].to_vec()),
            Raw::Close,
        ];
        let (end, outcomes) = scripted(&f.out, recv, script).await;
        assert_eq!(
            end.result.as_ref().unwrap_err().code(),
            codes::DOWNLOAD_FAILED
        );
        assert_eq!(end.unfinished, vec![id2, id3]);
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].1.is_ok());
        assert_eq!(std::fs::read(f.out.join("one")).unwrap(), one);
        assert!(!JobStore::new(&f.out).partial_path(&id2).exists());
    }

    #[tokio::test]
    async fn batch_sender_announcing_another_size_is_6005_for_the_rest() {
        let f = fixture();
        let data = bytes(10, 9);
        let (id1, id2) = (JobId::new(), JobId::new());
        let recv = vec![
            incoming(id1, &data, &[], "one"),
            incoming(id2, &data, &[], "two"),
        ];
        let script = vec![
            Raw::File(id1, 10),
            Raw::Bytes(data.clone()),
            Raw::File(id2, 11),
        ];
        let (end, outcomes) = scripted(&f.out, recv, script).await;
        assert_eq!(
            end.result.as_ref().unwrap_err().code(),
            codes::PROTOCOL_VIOLATION
        );
        assert_eq!(end.unfinished, vec![id2]);
        // What was verified before the violation is kept.
        assert_eq!(outcomes.len(), 1);
        assert_eq!(std::fs::read(f.out.join("one")).unwrap(), data);
        assert!(!f.out.join("two").exists());
    }

    #[tokio::test]
    async fn batch_cancelled_file_is_not_published() {
        let f = fixture();
        let data = bytes(64, 8);
        let (j1, id1) = outgoing(&f.src, "x", &data);
        let (j2, id2) = outgoing(&f.src, "y", &data);
        let recv = vec![
            incoming(id1, &data, &[], "x"),
            incoming(id2, &data, &[], "y"),
        ];
        recv[0].counters.stop();
        let (_, end, outcomes) = run(&f.out, vec![j1, j2], recv).await;
        assert!(end.result.is_ok());
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes[0].1.as_ref().unwrap_err().code(), codes::CANCELLED);
        assert!(!f.out.join("x").exists());
        assert_eq!(std::fs::read(f.out.join("y")).unwrap(), data);
    }
}
