//! Cancellation, expiry, late joiners and job-ID errors over real WebRTC on loopback.

mod common;

use std::time::Duration;

use common::*;
use peershare::{Event, JobId, Outcome, Save, SendOptions, Share, codes};

fn is_end(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. }
            | Event::DownloadFailed { .. }
            | Event::DownloadCancelled { .. }
    )
}

/// Set up a sender with one shared file and a recipient downloading it; returns once
/// `at` bytes have arrived.
async fn transfer_in_progress(
    tmp: &std::path::Path,
    server: &peershare::signaling::SignalingServer,
    at: u64,
) -> (
    peershare::Peer,
    Recorder,
    peershare::Peer,
    Recorder,
    JobId,
    JobId,
) {
    let out = tmp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (src, _) = random_file(tmp, "big.bin", 96 * 1024 * 1024, 3);
    let mut cfg = config(server, None, "sender", tmp);
    // Slow enough that the transfer is surely still running when the test acts.
    cfg.rate_limit = Some(32 * 1024 * 1024);
    let (sender, events) = peershare::Peer::join(cfg).await.unwrap();
    let s_rec = Recorder::new(events);
    let (recipient, mut r_rec) = join(server, Some(sender.session()), "recipient", &out).await;
    let up = sender.send_files(&[src], Share::Broadcast).await.unwrap()[0];
    let file_id = r_rec.offer().await;
    let down = recipient.download(file_id, Save::ToDir(out)).await.unwrap();
    r_rec
        .until(
            "progress",
            |e| matches!(e, Event::DownloadProgress { bytes, .. } if *bytes >= at),
        )
        .await;
    (sender, s_rec, recipient, r_rec, up, down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_download_mid_transfer_sender_sees_6004_and_data_stops() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, mut s_rec, recipient, mut r_rec, _up, down) =
        transfer_in_progress(tmp.path(), &server, 8 * 1024 * 1024).await;
    recipient.cancel_download(down, false).await.unwrap();
    let cancelled = r_rec
        .until("cancelled", |e| {
            matches!(e, Event::DownloadCancelled { .. })
        })
        .await;
    assert!(matches!(cancelled, Event::DownloadCancelled { job_id, .. } if job_id == down));
    let outcome = s_rec
        .until("outcome", |e| matches!(e, Event::RecipientOutcome { .. }))
        .await;
    let Event::RecipientOutcome {
        outcome,
        bytes_sent,
        ..
    } = outcome
    else {
        unreachable!()
    };
    assert_eq!(
        outcome,
        Outcome::Failed {
            code: codes::CANCELLED_BY_PEER
        }
    );
    assert!(bytes_sent < 96 * 1024 * 1024);
    // After the cancel was processed, no more data for the job: a round trip through the
    // control channel (a second job's offer and decline) happens with no progress.
    let (other, _) = random_file(tmp.path(), "small.bin", 10, 4);
    sender.send_files(&[other], Share::Broadcast).await.unwrap();
    let file_id = r_rec.offer().await;
    recipient.decline(file_id).await.unwrap();
    s_rec
        .until("declined", |e| {
            matches!(
                e,
                Event::RecipientOutcome {
                    outcome: Outcome::Declined,
                    ..
                }
            )
        })
        .await;
    let after = r_rec
        .seen
        .iter()
        .skip_while(|e| !matches!(e, Event::DownloadCancelled { .. }));
    assert!(
        !after
            .clone()
            .any(|e| matches!(e, Event::DownloadProgress { .. })),
        "data after cancel"
    );
    let progress_after = s_rec
        .seen
        .iter()
        .skip_while(|e| !matches!(e, Event::RecipientOutcome { .. }))
        .filter(|e| matches!(e, Event::UploadProgress { .. }))
        .count();
    assert_eq!(progress_after, 0);
    // The partial data is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("out")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // A second cancel of the same job: unknown job.
    assert_eq!(
        recipient
            .cancel_download(down, false)
            .await
            .unwrap_err()
            .code(),
        codes::INVALID_JOB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_upload_mid_transfer_recipient_sees_6004_and_offer_leaves() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, mut s_rec, recipient, mut r_rec, up, down) =
        transfer_in_progress(tmp.path(), &server, 8 * 1024 * 1024).await;
    sender.cancel_upload(up).await.unwrap();
    s_rec
        .until(
            "cancelled",
            |e| matches!(e, Event::UploadCancelled { job_id, .. } if *job_id == up),
        )
        .await;
    let failed = r_rec.until("failed", is_end).await;
    let Event::DownloadFailed { job_id, code, .. } = failed else {
        panic!("{failed:?}")
    };
    assert_eq!((job_id, code), (Some(down), codes::CANCELLED_BY_PEER));
    assert!(
        recipient.available_files().await.is_empty(),
        "the offer was revoked"
    );
    // The cancel is the last word: no more progress for the job afterwards (checked
    // after a control round trip).
    let (other, _) = random_file(tmp.path(), "small.bin", 10, 4);
    sender.send_files(&[other], Share::Broadcast).await.unwrap();
    r_rec
        .until("second offer", |e| {
            matches!(e, Event::DownloadAvailable { .. })
        })
        .await;
    let after = r_rec
        .seen
        .iter()
        .skip_while(|e| !matches!(e, Event::DownloadFailed { .. }));
    assert!(
        !after
            .clone()
            .any(|e| matches!(e, Event::DownloadProgress { job_id, .. } if *job_id == down))
    );
    assert_eq!(
        sender.cancel_upload(up).await.unwrap_err().code(),
        codes::INVALID_JOB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_unknown_ids_5099_completed_upload_5098_repeat_download_5101() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    assert_eq!(
        sender.cancel_upload(JobId::new()).await.unwrap_err().code(),
        codes::INVALID_JOB
    );
    assert_eq!(
        recipient
            .cancel_download(JobId::new(), false)
            .await
            .unwrap_err()
            .code(),
        codes::INVALID_JOB
    );
    assert_eq!(
        recipient
            .resume_download(JobId::new())
            .await
            .unwrap_err()
            .code(),
        codes::INVALID_JOB
    );
    let (src, _) = random_file(tmp.path(), "f.bin", 1000, 1);
    let up = sender.send_files(&[src], Share::Broadcast).await.unwrap()[0];
    let file_id = r_rec.offer().await;
    recipient.download(file_id, Save::InMemory).await.unwrap();
    r_rec.until("done", is_end).await;
    s_rec
        .until("completed", |e| matches!(e, Event::UploadCompleted { .. }))
        .await;
    assert_eq!(
        sender.cancel_upload(up).await.unwrap_err().code(),
        codes::ALREADY_COMPLETED
    );
    assert_eq!(
        recipient
            .download(file_id, Save::InMemory)
            .await
            .unwrap_err()
            .code(),
        codes::ALREADY_DOWNLOADED
    );
    // cancel_all_* with nothing running succeed.
    sender.cancel_all_uploads().await.unwrap();
    recipient.cancel_all_downloads().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_expired_leaves_available_files_and_download_gets_6001() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;
    let clock = peershare::clock::Clock::system();
    let mut cfg = config(&server, Some(sender.session()), "r", tmp.path());
    cfg.clock = clock.clone();
    let (recipient, events) = peershare::Peer::join(cfg).await.unwrap();
    let mut r_rec = Recorder::new(events);
    let (src, _) = random_file(tmp.path(), "f.bin", 1000, 1);
    sender
        .send_files_with(
            &[src],
            Share::Broadcast,
            SendOptions {
                ttl: Some(Duration::from_secs(600)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let Event::DownloadAvailable {
        file_id,
        expires_in_ms,
        ..
    } = r_rec
        .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
        .await
    else {
        unreachable!()
    };
    assert!(
        expires_in_ms <= 600_000 && expires_in_ms > 590_000,
        "{expires_in_ms}"
    );
    assert_eq!(recipient.available_files().await.len(), 1);
    clock.advance(Duration::from_secs(601));
    assert!(recipient.available_files().await.is_empty());
    assert_eq!(
        recipient
            .download(file_id, Save::InMemory)
            .await
            .unwrap_err()
            .code(),
        codes::OFFER_EXPIRED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_expired_sender_refuses_request_with_6001() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let clock = peershare::clock::Clock::system();
    let mut cfg = config(&server, None, "sender", tmp.path());
    cfg.clock = clock.clone();
    let (sender, events) = peershare::Peer::join(cfg).await.unwrap();
    let mut s_rec = Recorder::new(events);
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    wait_connected(&mut s_rec, 1).await;
    let (src, _) = random_file(tmp.path(), "f.bin", 1000, 1);
    sender
        .send_files_with(
            &[src],
            Share::Broadcast,
            SendOptions {
                ttl: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let file_id = r_rec.offer().await;
    // Only the sender's clock passed the lifetime: the sender enforces it.
    clock.advance(Duration::from_secs(61));
    recipient.download(file_id, Save::InMemory).await.unwrap();
    let end = r_rec.until("end", is_end).await;
    let Event::DownloadFailed { code, .. } = end else {
        panic!("{end:?}")
    };
    assert_eq!(code, codes::OFFER_EXPIRED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_late_joiner_receives_live_offer_and_downloads() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;
    let (src, data) = random_file(tmp.path(), "late.bin", 300_000, 8);
    sender.send_files(&[src], Share::Broadcast).await.unwrap();
    // Joins after the offer went out.
    let (late, mut l_rec) = join(&server, Some(sender.session()), "late", tmp.path()).await;
    let file_id = l_rec.offer().await;
    late.download(file_id, Save::InMemory).await.unwrap();
    let end = l_rec.until("end", is_end).await;
    let Event::DownloadCompleted {
        data: Some(bytes), ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert!(bytes[..] == data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_with_adds_a_connected_member_to_a_targeted_share_and_it_downloads() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let out = tmp.path().join("out");
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "recipient", &out).await;
    wait_connected(&mut s_rec, 1).await;
    let (src, data) = random_file(tmp.path(), "a.bin", 100_000, 5);
    let job = sender
        .send_files(&[src], Share::To(vec!["someone-else".into()]))
        .await
        .unwrap()[0];
    assert!(recipient.available_files().await.is_empty());
    sender
        .share_with(&[job], &recipient.client_id())
        .await
        .unwrap();
    let saved = r_rec.receive_next(&recipient, &out).await;
    assert!(std::fs::read(saved).unwrap() == data);
    let delivered = s_rec
        .until("outcome", |e| matches!(e, Event::RecipientOutcome { .. }))
        .await;
    assert!(
        matches!(&delivered, Event::RecipientOutcome { peer, outcome: Outcome::Delivered, .. }
            if *peer == recipient.client_id()),
        "{delivered:?}"
    );
    let err = sender
        .share_with(&[job, JobId::new()], &recipient.client_id())
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::INVALID_JOB);
    recipient.leave().await;
    sender.leave().await;
}
