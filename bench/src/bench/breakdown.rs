//! `--breakdown`: where the gap between (a) and (b) goes, one layer at a time, in the
//! bench process: the product's channel adapter, then the transfer engine file → file on
//! tmpfs (read-ahead, BLAKE3, write-behind, no disk), then the same onto the disk
//! (including the final fsync). Row (b) adds signaling, the control protocol and a
//! process per peer.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use peershare::proto::download::DownloadState;
use peershare::rtc::RtcSettings;
use peershare::store::{JobRecord, JobStore, RECORD_VERSION};
use peershare::transfer::DownloadCounters;
use peershare::transfer::{self, FileIdentity, Saved, Sink};
use peershare::transport::Channel;
use peershare::{FileId, JobId};

use super::raw::{Ends, MESSAGE, connect_pair};

const MIB: f64 = 1024.0 * 1024.0;

/// 64 KiB messages through [`peershare::rtc::RtcChannel`] on both ends, no file I/O.
pub async fn adapter(settings: &RtcSettings, bytes: u64) -> anyhow::Result<f64> {
    let pair = connect_pair(settings, true, 1).await?;
    let Some(Ends::Adapter { tx, rx }) = pair.ends.first() else {
        unreachable!("asked for adapter ends")
    };
    let template = BytesMut::from(&vec![0xa5u8; MESSAGE][..]);
    let start = Instant::now();
    let send = async {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(MESSAGE as u64) as usize;
            tx.send(BytesMut::from(&template[..n]))
                .await
                .map_err(|_| anyhow::anyhow!("adapter channel closed while sending"))?;
            left -= n as u64;
        }
        anyhow::Ok(())
    };
    let recv = async {
        let mut got = 0u64;
        while got < bytes {
            let msg = rx.recv().await.context("adapter channel closed early")?;
            got += msg.len() as u64;
        }
        anyhow::Ok(Instant::now())
    };
    let (sent, end) = tokio::join!(send, recv);
    sent?;
    let secs = end?.duration_since(start).as_secs_f64();
    pair.close().await;
    Ok(bytes as f64 / MIB / secs)
}

/// The product's transfer engine (`send_file` → `receive`, verified) over the adapter,
/// from `src` into `out_dir`.
pub async fn engine(settings: &RtcSettings, src: &Path, out_dir: &Path) -> anyhow::Result<f64> {
    let p = src.to_path_buf();
    let hash = tokio::task::spawn_blocking(move || transfer::hash_file(&p)).await??;
    let identity = FileIdentity::of(src)?;
    let pair = connect_pair(settings, true, 1).await?;
    let Some(Ends::Adapter { tx, rx }) = pair.ends.first() else {
        unreachable!("asked for adapter ends")
    };
    let state = DownloadState::new(identity.size, hash, 0, blake3::Hasher::new());
    let job_id = JobId::new();
    let record = JobRecord {
        version: RECORD_VERSION,
        job_id,
        file_id: FileId::new(),
        name: "engine.bin".into(),
        size: identity.size,
        hash: hash.to_hex(),
        sender_name: "bench".into(),
        sender_id: "bench".into(),
        offset: 0,
    };
    let sink = Sink::Dir {
        store: JobStore::new(out_dir),
        record,
        name: "engine.bin".into(),
        dirs: Vec::new(),
        executable: false,
        replace: false,
    };
    let sent_total = AtomicU64::new(0);
    let start = Instant::now();
    let recv = async {
        let counters = Arc::new(DownloadCounters::default());
        let saved = transfer::receive(rx, state, sink, counters, None, |_| {}).await;
        (saved, Instant::now())
    };
    let (sent, (saved, end)) = tokio::join!(
        transfer::send_file(tx, src, 0, identity, &sent_total, None),
        recv
    );
    sent?;
    let secs = end.duration_since(start).as_secs_f64();
    if let Saved::Path(path) = saved? {
        std::fs::remove_file(path)?;
    }
    pair.close().await;
    Ok(identity.size as f64 / MIB / secs)
}
