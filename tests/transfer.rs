//! Real WebRTC peers on loopback with an in-process signaling server.

mod common;

use common::*;
use peershare::{Event, Outcome, Save, SendOptions, Share, codes};

fn is_completed(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. } | Event::DownloadFailed { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_one_to_one_64mib_is_identical_with_exact_events() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (src, data) = random_file(tmp.path(), "big.bin", 64 * 1024 * 1024, 7);
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "recipient", &out).await;

    let jobs = sender.send_files(&[src], Share::Broadcast).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let Event::DownloadAvailable {
        file_id,
        name,
        size,
        sender: from,
        ..
    } = r_rec
        .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), size, from.as_str()),
        ("big.bin", data.len() as u64, sender.client_id().as_str())
    );
    let download_job = recipient
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    let done = r_rec.until("download end", is_completed).await;
    let Event::DownloadCompleted {
        job_id,
        path: Some(path),
        ..
    } = done
    else {
        panic!("download failed: {done:?}")
    };
    assert_eq!(job_id, download_job);
    assert_eq!(path, out.join("big.bin"));
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    // Nothing else (no partial file) is left in the output directory.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    let completed = s_rec
        .until("upload completed", |e| {
            matches!(e, Event::UploadCompleted { .. })
        })
        .await;
    let Event::UploadCompleted {
        job_id, outcomes, ..
    } = completed
    else {
        unreachable!()
    };
    assert_eq!(job_id, jobs[0]);
    assert_eq!(
        outcomes.get(&recipient.client_id()),
        Some(&Outcome::Delivered)
    );

    assert_eq!(
        r_rec.names(),
        [
            "file-upload-started",
            "download-available",
            "download-started",
            "download-completed"
        ]
    );
    assert_eq!(
        s_rec.names(),
        ["upload-started", "recipient-outcome", "upload-completed"]
    );
    let started = r_rec
        .seen
        .iter()
        .find(|e| matches!(e, Event::DownloadStarted { .. }))
        .unwrap();
    assert!(matches!(started, Event::DownloadStarted { offset: 0, .. }));
    // Progress was reported on both sides and ends at the full size.
    let last_up = s_rec.seen.iter().rev().find_map(|e| match e {
        Event::UploadProgress { bytes, .. } => Some(*bytes),
        _ => None,
    });
    assert_eq!(last_up, Some(data.len() as u64));
    let last_down = r_rec.seen.iter().rev().find_map(|e| match e {
        Event::DownloadProgress { bytes, .. } => Some(*bytes),
        _ => None,
    });
    assert_eq!(last_down, Some(data.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_broadcast_to_three_recipients_all_identical() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "bcast.bin", 4 * 1024 * 1024 + 17, 3);
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let mut recipients = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("r{i}"));
        std::fs::create_dir(&dir).unwrap();
        let (peer, rec) = join(&server, Some(sender.session()), &format!("r{i}"), &dir).await;
        recipients.push((peer, rec, dir));
    }
    wait_connected(&mut s_rec, 3).await;
    sender.send_files(&[src], Share::Broadcast).await.unwrap();
    for (peer, rec, dir) in &mut recipients {
        let file_id = rec.offer().await;
        peer.download(file_id, Save::ToDir(dir.clone()))
            .await
            .unwrap();
    }
    for (_, rec, dir) in &mut recipients {
        let done = rec.until("download end", is_completed).await;
        assert!(matches!(done, Event::DownloadCompleted { .. }), "{done:?}");
        assert!(std::fs::read(dir.join("bcast.bin")).unwrap() == data);
    }
    let Event::UploadCompleted { outcomes, .. } = s_rec
        .until("upload completed", |e| {
            matches!(e, Event::UploadCompleted { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.values().all(|o| *o == Outcome::Delivered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_targeted_other_peer_sees_no_offer_and_forged_request_gets_5091() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "secret.bin", 300_000, 5);
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (chosen, mut c_rec) = join(&server, Some(sender.session()), "chosen", tmp.path()).await;
    let (other, mut o_rec) = join(&server, Some(sender.session()), "other", tmp.path()).await;
    wait_connected(&mut s_rec, 2).await;
    wait_connected(&mut o_rec, 2).await;

    sender
        .send_files(&[src], Share::To(vec![chosen.client_id().to_string()]))
        .await
        .unwrap();
    let file_id = c_rec.offer().await;
    let job = chosen.download(file_id, Save::InMemory).await.unwrap();
    let done = c_rec.until("download end", is_completed).await;
    let Event::DownloadCompleted {
        job_id,
        data: Some(bytes),
        ..
    } = done
    else {
        panic!("{done:?}")
    };
    assert_eq!(job_id, job);
    assert!(bytes[..] == data[..]);
    let _ = s_rec
        .until("upload completed", |e| {
            matches!(e, Event::UploadCompleted { .. })
        })
        .await;

    // The other peer was never offered the file (the offer went out before the
    // completion above, on the same ordered path, so it would have arrived by now) …
    assert!(other.available_files().await.is_empty());
    assert_eq!(
        other
            .download(file_id, Save::InMemory)
            .await
            .unwrap_err()
            .code(),
        codes::FILE_NOT_AVAILABLE
    );
    // … and a forged request for the guessed file ID is refused by the sender.
    let forged = other
        .forge_request(&sender.client_id(), file_id)
        .await
        .unwrap();
    let failed = o_rec.until("forged request answer", is_completed).await;
    let Event::DownloadFailed { job_id, code, .. } = failed else {
        panic!("{failed:?}")
    };
    assert_eq!((job_id, code), (Some(forged), codes::NOT_PERMITTED));
    assert!(!o_rec.seen.iter().any(|e| matches!(
        e,
        Event::DownloadAvailable { .. } | Event::DownloadStarted { .. }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_into_memory_returns_identical_bytes() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "mem.bin", 2 * 1024 * 1024 + 3, 11);
    let server = server().await;
    let (sender, _s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    sender.send_files(&[src], Share::Broadcast).await.unwrap();
    let file_id = r_rec.offer().await;
    recipient.download(file_id, Save::InMemory).await.unwrap();
    let done = r_rec.until("download end", is_completed).await;
    let Event::DownloadCompleted {
        path: None,
        data: Some(bytes),
        ..
    } = done
    else {
        panic!("{done:?}")
    };
    assert!(bytes[..] == data[..]);
    // A second download of the same file is refused.
    assert_eq!(
        recipient
            .download(file_id, Save::InMemory)
            .await
            .unwrap_err()
            .code(),
        codes::ALREADY_DOWNLOADED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_into_missing_directory_creates_it_and_a_file_in_the_way_is_5089() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = random_file(tmp.path(), "d.bin", 64 * 1024, 12);
    let (src2, _) = random_file(tmp.path(), "e.bin", 1024, 13);
    let server = server().await;
    let (sender, _s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    sender
        .send_files(&[src, src2], Share::Broadcast)
        .await
        .unwrap();
    let (first, second) = (r_rec.offer().await, r_rec.offer().await);
    let out = tmp.path().join("not").join("there yet");
    recipient
        .download(first, Save::ToDir(out.clone()))
        .await
        .unwrap();
    let path = r_rec.saved().await;
    assert_eq!(path.parent(), Some(out.as_path()));
    assert!(std::fs::read(&path).unwrap() == data);
    // A file where the directory should be cannot become one.
    let blocked = tmp.path().join("d.bin").join("sub");
    let e = recipient
        .download(second, Save::ToDir(blocked))
        .await
        .unwrap_err();
    assert_eq!(e.code(), codes::STORAGE_ACCESS_DENIED, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_sender_sees_declined_outcome() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = random_file(tmp.path(), "unwanted.bin", 1000, 1);
    let server = server().await;
    let (sender, mut s_rec) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    let jobs = sender.send_files(&[src], Share::Broadcast).await.unwrap();
    let file_id = r_rec.offer().await;
    recipient.decline(file_id).await.unwrap();
    assert!(recipient.available_files().await.is_empty());
    // Declined, the share (of one file) has ended here.
    let ended = r_rec
        .until("the share's end", |e| {
            matches!(e, Event::DownloadGroupEnded { .. })
        })
        .await;
    assert!(
        matches!(
            ended,
            Event::DownloadGroupEnded {
                files: 1,
                completed: 0,
                failed: 0,
                cancelled: 1,
                ..
            }
        ),
        "{ended:?}"
    );
    let Event::UploadCompleted {
        job_id, outcomes, ..
    } = s_rec
        .until("upload completed", |e| {
            matches!(e, Event::UploadCompleted { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(job_id, jobs[0]);
    assert_eq!(
        outcomes.get(&recipient.client_id()),
        Some(&Outcome::Declined)
    );
    s_rec
        .until("the share's end", |e| {
            matches!(e, Event::UploadGroupEnded { .. })
        })
        .await;
    assert_eq!(
        s_rec.names(),
        [
            "upload-started",
            "recipient-outcome",
            "upload-completed",
            "upload-group-ended"
        ]
    );
    assert!(s_rec.seen.iter().any(|e| matches!(
        e,
        Event::RecipientOutcome {
            outcome: Outcome::Declined,
            ..
        }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_files_too_large_or_unreadable_fail_before_any_offer() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = random_file(tmp.path(), "big.bin", 10_000, 1);
    let server = server().await;
    let mut cfg = config(&server, None, "sender", tmp.path());
    cfg.max_file_size = 9_999;
    let (sender, events) = peershare::Peer::join(cfg).await.unwrap();
    let mut s_rec = Recorder::new(events);
    let (_recipient, mut r_rec) = join(&server, Some(sender.session()), "r", tmp.path()).await;
    wait_connected(&mut s_rec, 1).await;

    let err = sender
        .send_files(std::slice::from_ref(&src), Share::Broadcast)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::FILE_TOO_LARGE);
    let missing = tmp.path().join("does-not-exist");
    let err = sender
        .send_files(&[missing], Share::Broadcast)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::STORAGE_ACCESS_DENIED);
    // A directory is not a readable file either.
    let err = sender
        .send_files(&[tmp.path().to_path_buf()], Share::Broadcast)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::STORAGE_ACCESS_DENIED);
    // Nothing was offered, so a later small share is the first offer the recipient sees.
    let (small, _) = random_file(tmp.path(), "small.bin", 10, 2);
    sender.send_files(&[small], Share::Broadcast).await.unwrap();
    let first = r_rec
        .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
        .await;
    let Event::DownloadAvailable { name, .. } = first else {
        unreachable!()
    };
    assert_eq!(name, "small.bin");
    assert!(
        !s_rec
            .seen
            .iter()
            .any(|e| matches!(e, Event::UploadStarted { name, .. } if name == "big.bin"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_hostile_names_land_inside_output_dir() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let hostile = ["../x", "/etc/passwd", "a/b", "..", ""];
    let mut paths = Vec::new();
    for (i, _) in hostile.iter().enumerate() {
        paths.push(random_file(tmp.path(), &format!("src{i}"), 100 + i, i as u64).0);
    }
    let server = server().await;
    let (sender, _s) = join(&server, None, "sender", tmp.path()).await;
    let (recipient, mut r_rec) = join(&server, Some(sender.session()), "r", &out).await;
    sender
        .send_files_with(
            &paths,
            Share::Broadcast,
            SendOptions {
                names: Some(hostile.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut file_ids = Vec::new();
    while file_ids.len() < hostile.len() {
        if let Event::DownloadAvailable { file_id, .. } = r_rec
            .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
            .await
        {
            file_ids.push(file_id);
        }
    }
    for id in file_ids {
        recipient
            .download(id, Save::ToDir(out.clone()))
            .await
            .unwrap();
    }
    let mut saved = Vec::new();
    while saved.len() < hostile.len() {
        let done = r_rec.until("download end", is_completed).await;
        let Event::DownloadCompleted { path: Some(p), .. } = done else {
            panic!("{done:?}")
        };
        saved.push(p);
    }
    let canonical_out = out.canonicalize().unwrap();
    for p in &saved {
        let c = p.canonicalize().unwrap();
        assert_eq!(c.parent(), Some(canonical_out.as_path()), "{p:?} escaped");
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5);
    for want in ["x", "passwd", "b", "download", "download (1)"] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    assert!(!tmp.path().join("x").exists());
}
