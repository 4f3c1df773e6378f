//! Several peers that only send in one session (`peershare send` and `send --join`), over
//! real WebRTC on loopback: a sender is never a recipient of another's share.

mod common;

use std::collections::BTreeMap;

use common::*;
use peershare::peer::Role;
use peershare::{Event, Outcome, Peer, Save, Share, codes};

/// Join as a peer that only sends, as `peershare send` does.
async fn join_sending(mut config: peershare::PeerConfig) -> (Peer, Recorder) {
    config.role = Role::SendOnly;
    let (peer, events) = Peer::join(config).await.expect("join");
    (peer, Recorder::new(events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_only_two_senders_one_recipient_completes_with_the_recipient_alone() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server().await;
    let (a_src, _) = random_file(tmp.path(), "a.txt", 1000, 1);
    let (b_src, _) = random_file(tmp.path(), "b.txt", 2000, 2);

    // Sender A creates the session and shares; sender B joins it and shares too.
    let (a, mut a_rec) = join_sending(config(&server, None, "sender-a", tmp.path())).await;
    let a_job = a.send_files(&[a_src], Share::Broadcast).await.unwrap()[0];
    let (b, mut b_rec) =
        join_sending(config(&server, Some(a.session()), "sender-b", tmp.path())).await;
    b.send_files(&[b_src], Share::Broadcast).await.unwrap();
    let b_id = b.client_id();

    // Each learns what the other shares; neither answers (B's decline would be one on
    // behalf of a user who was never asked).
    let b_offer = a_rec.offer().await;
    let a_offer = b_rec.offer().await;
    // Their `hello`s said so before their offers came.
    assert!(a.only_sends(&b_id).await);
    assert!(b.only_sends(&a.client_id()).await);
    let refused = b.decline(a_offer).await.map_err(|e| e.code());
    assert_eq!(refused, Err(codes::NOT_PERMITTED));
    let refused = a
        .download(b_offer, Save::InMemory)
        .await
        .map_err(|e| e.code());
    assert_eq!(refused, Err(codes::NOT_PERMITTED));

    // Only now does a recipient arrive: it takes both shares.
    let (r, mut r_rec) = join(&server, Some(a.session()), "recipient", &out).await;
    let r_id = r.client_id();
    for _ in 0..2 {
        let file_id = r_rec.offer().await;
        r.download(file_id, Save::ToDir(out.clone())).await.unwrap();
    }
    let completed = |seen: &[Event]| {
        seen.iter()
            .filter(|e| matches!(e, Event::DownloadCompleted { .. }))
            .count()
    };
    while completed(&r_rec.seen) < 2 {
        r_rec.saved().await;
    }
    a_rec
        .until("A's share ends", |e| {
            matches!(e, Event::UploadGroupEnded { .. })
        })
        .await;

    let seen: Vec<&Event> = a_rec.seen.iter().filter(|e| !e.is_progress()).collect();
    let names: Vec<&str> = seen.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "upload-started",
            "peer-joined",
            "connection",
            "file-upload-started",
            "download-available",
            "peer-joined",
            "connection",
            "recipient-outcome",
            "upload-completed",
            "upload-group-ended",
        ],
        "{seen:#?}"
    );
    let peer_of = |e: &Event| match e {
        Event::PeerJoined { peer, .. } | Event::Connection { peer, .. } => Some(peer.clone()),
        Event::FileUploadStarted { sender, .. } | Event::DownloadAvailable { sender, .. } => {
            Some(sender.clone())
        }
        Event::RecipientOutcome { peer, .. } => Some(peer.clone()),
        _ => None,
    };
    let peers: Vec<Option<String>> = seen.iter().map(|e| peer_of(e)).collect();
    let (b_id, r_id) = (Some(b_id), Some(r_id.clone()));
    assert_eq!(
        peers,
        [
            None,
            b_id.clone(),
            b_id.clone(),
            b_id.clone(),
            b_id,
            r_id.clone(),
            r_id.clone(),
            r_id,
            None,
            None
        ]
    );
    assert!(
        matches!(seen[7], Event::RecipientOutcome {
            job_id,
            outcome: Outcome::Delivered,
            bytes_sent: 1000,
            ..
        } if *job_id == a_job),
        "{:?}",
        seen[7]
    );
    let Event::UploadCompleted {
        job_id, outcomes, ..
    } = seen[8]
    else {
        unreachable!()
    };
    assert_eq!(*job_id, a_job);
    assert!(!a.only_sends(&r.client_id()).await);
    assert_eq!(
        *outcomes,
        BTreeMap::from([(r.client_id(), Outcome::Delivered)])
    );
    assert!(
        matches!(
            seen[9],
            Event::UploadGroupEnded {
                files: 1,
                completed: 1,
                failed: 0,
                cancelled: 0,
                ..
            }
        ),
        "{:?}",
        seen[9]
    );
    r.leave().await;
    b.leave().await;
    a.leave().await;
}
