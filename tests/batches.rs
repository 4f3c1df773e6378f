//! Many small files between real WebRTC peers on loopback: they travel in batches
//! (docs/PROTOCOL.md, "Batches"), and every file keeps its own job, events, verification
//! and outcome, also when the connection is cut in the middle.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use peershare::{Event, FileId, JobId, Outcome, Save, SendOptions, Share};

/// A tree of `count` files under `dir/tree`, with sizes cycling through `sizes`; returns
/// each file's relative path (as offered: `tree/dNN/fNNNN.bin`) and bytes.
fn tree(dir: &Path, count: usize, sizes: &[usize]) -> (PathBuf, HashMap<String, Vec<u8>>) {
    let root = dir.join("tree");
    let mut files = HashMap::new();
    for i in 0..count {
        let sub = root.join(format!("d{:02}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        let name = format!("f{i:04}.bin");
        let (_, data) = random_file(&sub, &name, sizes[i % sizes.len()], i as u64);
        files.insert(format!("tree/d{:02}/{name}", i % 7), data);
    }
    (root, files)
}

/// `sender` shares the tree `root`; a recipient joins and downloads each of its `count`
/// files into `out`.
async fn share_and_accept(
    server: &peershare::signaling::SignalingServer,
    sender: &peershare::Peer,
    root: PathBuf,
    count: usize,
    out: &Path,
) -> (peershare::Peer, Recorder, HashMap<FileId, JobId>) {
    let (recipient, mut rec) = join(server, Some(sender.session()), "recipient", out).await;
    sender
        .send_paths(&[root], Share::Broadcast, SendOptions::default())
        .await
        .unwrap();
    let jobs = accept_all(&recipient, &mut rec, count, out).await;
    (recipient, rec, jobs)
}

/// Download every offer of `count` files into `out`; returns the file and job of each.
async fn accept_all(
    recipient: &peershare::Peer,
    rec: &mut Recorder,
    count: usize,
    out: &Path,
) -> HashMap<FileId, JobId> {
    let mut jobs = HashMap::new();
    while jobs.len() < count {
        let file_id = rec.offer().await;
        let job = recipient
            .download(file_id, Save::ToDir(out.to_path_buf()))
            .await
            .unwrap();
        jobs.insert(file_id, job);
    }
    jobs
}

fn is_end(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. }
            | Event::DownloadFailed { .. }
            | Event::DownloadCancelled { .. }
    )
}

/// Wait until every job of `jobs` ended (counting the ends seen already); each must
/// have completed.
async fn completions(rec: &mut Recorder, jobs: &HashMap<FileId, JobId>) {
    let mut done = rec.seen.iter().filter(|e| is_end(e)).count();
    for e in rec.seen.iter().filter(|e| is_end(e)) {
        assert!(
            matches!(e, Event::DownloadCompleted { .. }),
            "a file did not arrive: {e:?}"
        );
    }
    while done < jobs.len() {
        let ev = rec.until("a download end", is_end).await;
        assert!(
            matches!(ev, Event::DownloadCompleted { .. }),
            "a file did not arrive: {ev:?}"
        );
        done += 1;
    }
}

/// Every file of `files` is under `out` with identical bytes, and nothing else but
/// directories is there (no partial file).
fn assert_identical(out: &Path, files: &HashMap<String, Vec<u8>>) {
    for (path, data) in files {
        let got = std::fs::read(out.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *data, "{path}: bytes differ");
    }
    let top: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["tree"], "left in the output directory: {top:?}");
}

/// Per job, the names of its events in order.
fn per_job(seen: &[Event]) -> HashMap<JobId, Vec<&'static str>> {
    let mut by_job: HashMap<JobId, Vec<&'static str>> = HashMap::new();
    for e in seen {
        let job = match e {
            Event::DownloadStarted { job_id, .. } | Event::DownloadCompleted { job_id, .. } => {
                *job_id
            }
            Event::DownloadFailed {
                job_id: Some(job_id),
                ..
            }
            | Event::DownloadCancelled { job_id, .. } => *job_id,
            _ => continue,
        };
        by_job.entry(job).or_default().push(e.name());
    }
    by_job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_tree_of_small_files_identical_with_one_event_sequence_each() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // 0 bytes, tiny, around a chunk, just under and at the 1 MiB batch limit, and one
    // file above it (its own request).
    let sizes = [
        0,
        1,
        4096,
        32 * 1024 + 7,
        1024 * 1024 - 1,
        1024 * 1024,
        3000,
    ];
    let (root, mut files) = tree(tmp.path(), 300, &sizes);
    let (_, big) = random_file(&root.join("d00"), "big.bin", 1024 * 1024 + 1, 99);
    files.insert("tree/d00/big.bin".into(), big);
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec, jobs) =
        share_and_accept(&server, &sender, root, files.len(), &out).await;
    completions(&mut r_rec, &jobs).await;
    assert_identical(&out, &files);
    // The tree ends once as a whole, after its last file.
    let ended = r_rec
        .until("the tree's end", |e| {
            matches!(e, Event::DownloadGroupEnded { .. })
        })
        .await;
    let n = files.len() as u32;
    assert!(
        matches!(&ended, Event::DownloadGroupEnded { label: Some(l), files, completed, failed: 0, cancelled: 0, .. }
            if l == "tree/" && *files == n && *completed == n),
        "{ended:?}"
    );
    let by_job = per_job(&r_rec.seen);
    assert_eq!(by_job.len(), files.len());
    for (job, names) in &by_job {
        assert_eq!(
            names,
            &["download-started", "download-completed"],
            "job {job}"
        );
    }
    // The sender sees every file delivered to the recipient, once.
    let me = recipient.client_id().to_string();
    let mut delivered = 0;
    while delivered < files.len() {
        s_rec
            .until("a delivery", |e| {
                matches!(e, Event::RecipientOutcome { peer, outcome: Outcome::Delivered, .. }
                    if *peer == me)
            })
            .await;
        delivered += 1;
    }
    let failed = s_rec
        .seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::RecipientOutcome {
                    outcome: Outcome::Failed { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 0);
    let ended = s_rec
        .until("the share's end", |e| {
            matches!(e, Event::UploadGroupEnded { .. })
        })
        .await;
    assert!(
        matches!(ended, Event::UploadGroupEnded { files, completed, failed: 0, cancelled: 0, .. }
            if files == n && completed == n),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_connection_cut_midway_every_file_arrives_once() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (root, files) = tree(tmp.path(), 400, &[48 * 1024, 200 * 1024, 5]);
    let server = server().await;
    let mut cfg = config(&server, None, "sender", tmp.path());
    // Slow enough that the cut finds batches in flight.
    cfg.rate_limit = Some(8 * 1024 * 1024);
    let (sender, _events) = peershare::Peer::join(cfg).await.unwrap();
    let (recipient, mut r_rec, jobs) =
        share_and_accept(&server, &sender, root, files.len(), &out).await;
    // Cut the connection once some files arrived and others are on their way.
    while r_rec.seen.iter().filter(|e| is_end(e)).count() < 20 {
        r_rec.until("a download end", is_end).await;
    }
    assert!(
        r_rec.seen.iter().filter(|e| is_end(e)).count() < jobs.len(),
        "everything arrived before the cut"
    );
    recipient
        .debug_drop_connection(&sender.client_id())
        .await
        .unwrap();
    completions(&mut r_rec, &jobs).await;
    assert_identical(&out, &files);
    for (job, names) in per_job(&r_rec.seen) {
        let ends = names.iter().filter(|n| n.starts_with("download-c")).count();
        assert_eq!(ends, 1, "job {job}: {names:?}");
        assert_eq!(names.last(), Some(&"download-completed"), "job {job}");
    }
}
