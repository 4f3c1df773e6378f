//! The transfer engine: streams a file into a [`Channel`] and a channel into a file or
//! memory, driven by the sans-IO [`DownloadState`]. File reads run ahead and writes run
//! behind on blocking threads, so disk I/O overlaps the network.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::proto::download::{ChunkError, DownloadState, Verdict};
use crate::proto::ids::JobId;
use crate::proto::names::numbered_name;
use crate::transport::Channel;

/// Size of one data message (the SCTP max message size both sides advertise is larger).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks read ahead of the network, and written behind it.
const PIPELINE_DEPTH: usize = 16;

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

/// Stream `path` from `offset` to its end into `channel`. The file must still have the
/// identity it had when it was offered (else 5100). Returns the bytes sent.
pub async fn send_file<C: Channel + ?Sized>(
    channel: &C,
    path: &Path,
    offset: u64,
    identity: FileIdentity,
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
    let (tx, mut rx) = mpsc::channel::<Result<BytesMut>>(PIPELINE_DEPTH);
    let reader_path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut left = remaining;
        while left > 0 {
            let want = left.min(CHUNK_SIZE as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let res = file
                .read_exact(&mut buf)
                .map(|_| buf)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Error::PossiblyCorrupt(format!(
                        "{} shrank while being sent",
                        reader_path.display()
                    )),
                    _ => storage_error(&reader_path, &e),
                });
            let failed = res.is_err();
            if tx.blocking_send(res).is_err() || failed {
                return;
            }
            left -= want as u64;
        }
    });
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        let len = chunk.len() as u64;
        channel
            .send(chunk)
            .await
            .map_err(|_| Error::UploadFailed("data channel closed".into()))?;
        sent += len;
    }
    drop(rx);
    let _ = reader.await;
    if sent != remaining {
        return Err(Error::UploadFailed(format!(
            "sent {sent} of {remaining} bytes"
        )));
    }
    Ok(sent)
}

/// Where a download goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Into `dir`, under `name` (already sanitized) or a numbered variant if taken.
    Dir { dir: PathBuf, name: String },
    /// Into memory.
    Memory,
}

/// Where a completed download went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Path(PathBuf),
    Memory(Bytes),
}

/// Name of the partial file of job `job_id` inside the output directory.
pub fn partial_name(job_id: &JobId) -> String {
    format!(".peershare-{job_id}.part")
}

/// Receive a whole download from `channel` into `sink`, verifying it. `on_progress` is
/// called with the received byte count whenever an acknowledgement is due.
pub async fn receive<C: Channel + ?Sized>(
    channel: &C,
    mut state: DownloadState,
    sink: Sink,
    job_id: JobId,
    mut on_progress: impl FnMut(u64) + Send,
) -> Result<Saved> {
    match sink {
        Sink::Memory => {
            let mut buf = Vec::with_capacity(state.size().min(64 * 1024 * 1024) as usize);
            while !state.is_complete() {
                let chunk = next_chunk(channel).await?;
                let step = state.on_chunk(&chunk).map_err(chunk_error)?;
                buf.extend_from_slice(&chunk);
                if step.ack_due {
                    on_progress(step.received);
                }
            }
            verify(&state)?;
            Ok(Saved::Memory(Bytes::from(buf)))
        }
        Sink::Dir { dir, name } => {
            let temp = dir.join(partial_name(&job_id));
            let result = receive_to_file(channel, &mut state, &temp, &mut on_progress).await;
            let result = match result {
                Ok(()) => verify(&state).and_then(|_| publish(&temp, &dir, &name)),
                Err(e) => Err(e),
            };
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result.map(Saved::Path)
        }
    }
}

async fn receive_to_file<C: Channel + ?Sized>(
    channel: &C,
    state: &mut DownloadState,
    temp: &Path,
    on_progress: &mut (impl FnMut(u64) + Send),
) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(state.received() == 0)
        .open(temp)
        .map_err(|e| storage_error(temp, &e))?;
    file.seek(SeekFrom::Start(state.received()))
        .map_err(|e| storage_error(temp, &e))?;
    let (tx, mut rx) = mpsc::channel::<BytesMut>(PIPELINE_DEPTH);
    let temp_path = temp.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)
                .map_err(|e| save_error(&temp_path, &e))?;
        }
        file.sync_all().map_err(|e| save_error(&temp_path, &e))
    });
    let mut failure = None;
    while !state.is_complete() {
        let chunk = match next_chunk(channel).await {
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

async fn next_chunk<C: Channel + ?Sized>(channel: &C) -> Result<BytesMut> {
    channel
        .recv()
        .await
        .ok_or_else(|| Error::DownloadFailed("data channel closed before the file was complete".into()))
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
    match state.verify() {
        Verdict::Verified => Ok(()),
        Verdict::Mismatch { expected, actual } => Err(Error::PossiblyCorrupt(format!(
            "BLAKE3 {actual} does not match the offered {expected}"
        ))),
    }
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
        let state = DownloadState::new(data.len() as u64, Hash::of(&data), 0, blake3::Hasher::new());
        let job = JobId::new();
        let mut acks = Vec::new();
        let (sent, saved) = tokio::join!(
            send_file(&a, &src, 0, identity),
            receive(&b, state, Sink::Dir { dir: out.clone(), name: "f.bin".into() }, job, |n| acks.push(n)),
        );
        assert_eq!(sent.unwrap(), data.len() as u64);
        let Saved::Path(p) = saved.unwrap() else { panic!("not a path") };
        assert_eq!(p, out.join("f.bin"));
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(acks.last().copied(), Some(data.len() as u64));
        assert!(!out.join(partial_name(&job)).exists());
    }

    #[tokio::test]
    async fn transfer_corrupted_stream_is_possibly_corrupt_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(1000, 2);
        let (a, b) = memory_pair(4);
        let state = DownloadState::new(1000, Hash::of(&data), 0, blake3::Hasher::new());
        let mut bad = data.clone();
        bad[10] ^= 1;
        a.send(BytesMut::from(&bad[..])).await.unwrap();
        let err = receive(&b, state, Sink::Dir { dir: dir.path().into(), name: "x".into() }, JobId::new(), |_| {})
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
        let err = receive(&b, state, Sink::Memory, JobId::new(), |_| {}).await.unwrap_err();
        assert_eq!(err.code(), crate::error::codes::PROTOCOL_VIOLATION);
    }

    #[tokio::test]
    async fn transfer_channel_closed_midway_is_download_failed() {
        let (a, b) = memory_pair(4);
        let state = DownloadState::new(8, Hash::of(b"abcdefgh"), 0, blake3::Hasher::new());
        a.send(BytesMut::from(&b"abcd"[..])).await.unwrap();
        a.close().await;
        let err = receive(&b, state, Sink::Memory, JobId::new(), |_| {}).await.unwrap_err();
        assert_eq!(err.code(), crate::error::codes::DOWNLOAD_FAILED);
    }

    #[tokio::test]
    async fn transfer_changed_source_is_possibly_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        std::fs::write(&src, b"one").unwrap();
        let identity = FileIdentity::of(&src).unwrap();
        std::fs::write(&src, b"three").unwrap();
        let (a, _b) = memory_pair(4);
        let err = send_file(&a, &src, 0, identity).await.unwrap_err();
        assert_eq!(err.code(), crate::error::codes::POSSIBLY_CORRUPT);
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
