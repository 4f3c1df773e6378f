//! Resumable jobs over real WebRTC on loopback: connections cut mid-transfer, and
//! partial downloads picked up by a new process (a new peer on the same directory).

mod common;

use common::*;
use peershare::rtc::RtcSettings;
use peershare::{Event, Outcome, Save, Share, codes};
use rand::{Rng, SeedableRng};

fn is_end(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. } | Event::DownloadFailed { .. }
    )
}

/// As a first recipient, download `src` (shared now by `sender`) into `out`, stop once
/// `at` bytes have arrived keeping the partial data (what a killed process leaves), and
/// leave. Returns the job and the file ID of the offer.
async fn leave_partial(
    server: &peershare::signaling::SignalingServer,
    sender: &peershare::Peer,
    src: &std::path::Path,
    out: &std::path::Path,
    at: u64,
) -> (peershare::JobId, peershare::FileId) {
    let (first, mut f_rec) = join(server, Some(sender.session()), "first", out).await;
    sender
        .send_files(&[src.to_path_buf()], Share::Broadcast)
        .await
        .unwrap();
    let file_id = f_rec.offer().await;
    let job = first
        .download(file_id, Save::ToDir(out.to_path_buf()))
        .await
        .unwrap();
    f_rec
        .until(
            "partial data",
            |e| matches!(e, Event::DownloadProgress { bytes, .. } if *bytes >= at),
        )
        .await;
    first.cancel_download(job, true).await.unwrap();
    // Emitted once the transfer task has recorded what it wrote.
    f_rec
        .until("cancelled", |e| {
            matches!(e, Event::DownloadCancelled { .. })
        })
        .await;
    first.leave().await;
    (job, file_id)
}

/// 20 seeded runs of a 64 MiB transfer, each cut 1–5 times at random byte positions,
/// alternately by the sender and by the recipient closing the peer connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_cut_connection_20_seeded_runs_identical_with_bounded_resend() {
    init_tracing();
    const SIZE: usize = 64 * 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "cut.bin", SIZE, 99);
    let bound = peershare::transfer::resend_bound(&RtcSettings::default());
    let server = server().await;
    let mut overheads = Vec::new();
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let cuts = rng.random_range(1..=5usize);
        let mut points: Vec<u64> = (0..cuts)
            .map(|_| rng.random_range(1..SIZE as u64 - 1))
            .collect();
        points.sort();
        let out = tmp.path().join(format!("out{seed}"));
        std::fs::create_dir(&out).unwrap();
        let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
        let (recipient, mut r_rec) = join(&server, Some(sender.session()), "recipient", &out).await;
        sender
            .send_files(std::slice::from_ref(&src), Share::Broadcast)
            .await
            .unwrap();
        let file_id = r_rec.offer().await;
        let job = recipient
            .download(file_id, Save::ToDir(out.clone()))
            .await
            .unwrap();
        let mut next = 0;
        let mut starts = Vec::new();
        let mut reconnecting = false;
        let end = loop {
            let ev = r_rec.until("transfer event", |_| true).await;
            match &ev {
                Event::DownloadStarted { job_id, offset, .. } => {
                    assert_eq!(*job_id, job, "a resumed job keeps its ID");
                    starts.push(*offset);
                }
                Event::Connection { .. } => reconnecting = false,
                Event::DownloadProgress { bytes, .. }
                    if !reconnecting && next < points.len() && *bytes >= points[next] =>
                {
                    // Alternate which side breaks the connection.
                    if (seed + next as u64).is_multiple_of(2) {
                        recipient
                            .debug_drop_connection(&sender.client_id())
                            .await
                            .unwrap();
                    } else {
                        sender
                            .debug_drop_connection(&recipient.client_id())
                            .await
                            .unwrap();
                    }
                    next += 1;
                    reconnecting = true;
                }
                e if is_end(e) => break ev,
                _ => {}
            }
        };
        let Event::DownloadCompleted {
            path: Some(path), ..
        } = end
        else {
            panic!("seed {seed}: {end:?}")
        };
        assert!(
            std::fs::read(&path).unwrap() == data,
            "seed {seed}: bytes differ"
        );
        // One download-started per attempt; a cut near the end may need no new attempt
        // (what had arrived was enough).
        assert!(
            (1..=next + 1).contains(&starts.len()),
            "seed {seed}: {starts:?} for {next} cuts"
        );
        assert_eq!(starts[0], 0);
        assert!(
            starts.windows(2).all(|w| w[1] >= w[0]),
            "seed {seed}: never back to zero: {starts:?}"
        );
        assert!(
            !r_rec
                .seen
                .iter()
                .any(|e| matches!(e, Event::DownloadFailed { .. }))
        );
        let outcome = s_rec
            .until("outcome", |e| matches!(e, Event::RecipientOutcome { .. }))
            .await;
        let Event::RecipientOutcome {
            outcome: Outcome::Delivered,
            bytes_sent,
            ..
        } = outcome
        else {
            panic!("seed {seed}: {outcome:?}")
        };
        let resent = bytes_sent - SIZE as u64;
        assert!(
            resent <= next as u64 * bound,
            "seed {seed}: {resent} bytes re-sent for {next} cuts (bound {bound} per cut)"
        );
        overheads.push((next, resent));
        recipient.leave().await;
        sender.leave().await;
    }
    let cuts: usize = overheads.iter().map(|(c, _)| c).sum();
    let resent: u64 = overheads.iter().map(|(_, r)| r).sum();
    eprintln!(
        "re-send overhead: {cuts} cuts, {resent} bytes re-sent, {:.0} KiB per cut (bound {} KiB)",
        resent as f64 / cuts as f64 / 1024.0,
        bound / 1024
    );
}

/// A partial download left by one process (cancelled with its data kept, as a killed
/// process would leave it) is continued by a new peer on the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_new_process_same_content_continues_from_stored_offset() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (src, data) = random_file(tmp.path(), "again.bin", 48 * 1024 * 1024, 5);
    let server = server().await;
    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;

    let (job, _) = leave_partial(&server, &sender, &src, &out, 16 * 1024 * 1024).await;
    assert!(
        !out.join("again.bin").exists(),
        "nothing under the final name before verification"
    );
    let stored = peershare::store::JobStore::new(&out).list();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].offset > 0);

    let (second, mut s_rec) = join(&server, Some(sender.session()), "second", &out).await;
    assert_eq!(second.resumable_jobs().len(), 1);
    let file_id = s_rec.offer().await;
    let resumed = second
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    assert_eq!(resumed, job, "the stored job is resumed under its ID");
    let started = s_rec
        .until("start", |e| matches!(e, Event::DownloadStarted { .. }))
        .await;
    let Event::DownloadStarted { offset, .. } = started else {
        unreachable!()
    };
    assert_eq!(offset, stored[0].offset);
    let path = s_rec.saved().await;
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(second.resumable_jobs().is_empty());
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "partial and record are gone"
    );
}

/// The source changed between the runs: the stale partial data is discarded with 5100
/// and the new version is downloaded from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_changed_source_reports_5100_and_restarts_cleanly() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let src = tmp.path().join("doc.bin");
    let (v1_path, _) = random_file(tmp.path(), "v1", 24 * 1024 * 1024, 1);
    std::fs::copy(&v1_path, &src).unwrap();
    let server = server().await;

    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;
    let (old_job, _) = leave_partial(&server, &sender, &src, &out, 8 * 1024 * 1024).await;
    sender.leave().await;

    // The sender restarts with another version of the file.
    let (v2_path, v2) = random_file(tmp.path(), "v2", 20 * 1024 * 1024, 2);
    std::fs::copy(&v2_path, &src).unwrap();
    let (sender2, _s2) = join(&server, None, "sender", tmp.path()).await;
    let (second, mut r_rec) = join(&server, Some(sender2.session()), "second", &out).await;
    sender2.send_files(&[src], Share::Broadcast).await.unwrap();
    let file_id = r_rec.offer().await;
    let new_job = second
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    assert_ne!(new_job, old_job);
    // Reported before any data of the new version flows.
    let failed = r_rec
        .until("5100", |e| {
            matches!(
                e,
                Event::DownloadFailed { .. } | Event::DownloadStarted { .. }
            )
        })
        .await;
    let Event::DownloadFailed { job_id, code, .. } = failed else {
        unreachable!()
    };
    assert_eq!((job_id, code), (Some(old_job), codes::POSSIBLY_CORRUPT));
    let end = r_rec.until("end", is_end).await;
    let Event::DownloadCompleted {
        job_id,
        path: Some(path),
        ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(job_id, new_job);
    let started: Vec<u64> = r_rec
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::DownloadStarted { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(started, [0], "the new version starts from zero");
    assert!(
        std::fs::read(&path).unwrap() == v2,
        "no bytes of the old version"
    );
}

/// The sender restarts (new process, new session, new file ID) with the same file: the
/// recipient's partial job is served from its stored offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_restarted_sender_same_file_serves_from_offset() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (src, data) = random_file(tmp.path(), "same.bin", 24 * 1024 * 1024, 3);
    let server = server().await;

    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;
    let (job, file_id) = leave_partial(&server, &sender, &src, &out, 8 * 1024 * 1024).await;
    sender.leave().await;
    let stored = peershare::store::JobStore::new(&out).list();
    assert_eq!(stored.len(), 1);

    let (sender2, _s2) = join(&server, None, "sender again", tmp.path()).await;
    let (second, mut r_rec) = join(&server, Some(sender2.session()), "second", &out).await;
    sender2.send_files(&[src], Share::Broadcast).await.unwrap();
    let Event::DownloadAvailable {
        file_id: new_file, ..
    } = r_rec
        .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
        .await
    else {
        unreachable!()
    };
    assert_ne!(
        new_file, file_id,
        "a restarted sender offers under a new file ID"
    );
    assert_eq!(
        second
            .download(new_file, Save::ToDir(out.clone()))
            .await
            .unwrap(),
        job
    );
    let Event::DownloadStarted { offset, .. } = r_rec
        .until("start", |e| matches!(e, Event::DownloadStarted { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(offset, stored[0].offset);
    assert!(offset > 0);
    let end = r_rec.until("end", is_end).await;
    let Event::DownloadCompleted {
        path: Some(path), ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert!(std::fs::read(&path).unwrap() == data);
}
