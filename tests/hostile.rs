//! A recipient that misbehaves on purpose must not exhaust the sender, over real WebRTC
//! on loopback. The test process hosts every peer, so its thread count and RSS bound the
//! sender's.

mod common;

use std::time::Duration;

use common::*;
use peershare::proto::control::ControlMessage;
use peershare::{Event, FileId, JobId, Outcome, Save, Share, codes};

const SIZE: usize = 16 * 1024 * 1024;
const FLOOD: usize = 1000;

/// A field of `/proc/self/status` (`Threads`, or `VmRSS` in KiB).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The most threads and RSS seen.
#[derive(Default)]
struct Peak {
    threads: u64,
    rss_kib: u64,
}

impl Peak {
    fn sample(&mut self) {
        self.threads = self.threads.max(status("Threads"));
        self.rss_kib = self.rss_kib.max(status("VmRSS"));
    }
}

/// A last request of `hostile` for a file that does not exist: its refusal comes back
/// once `sender` has handled everything sent before it (one ordered control channel).
async fn sentinel(hostile: &peershare::Peer, sender: &peershare::Peer, h_rec: &mut Recorder) {
    let unknown = ControlMessage::Request {
        job_id: JobId::new(),
        file_id: FileId::new(),
        offset: 0,
    };
    hostile
        .debug_send_control(&sender.client_id(), unknown)
        .await
        .unwrap();
    h_rec
        .until(
            "the sentinel's refusal",
            |e| matches!(e, Event::Error { code, .. } if *code == codes::FILE_NOT_AVAILABLE),
        )
        .await;
}

/// The hostile peer got no error but 6010 (refused as too many) and 1181 (the sentinel).
fn assert_only_refusals(h_rec: &Recorder) {
    let other: Vec<&Event> = h_rec
        .seen
        .iter()
        .filter(|e| {
            matches!(e, Event::Error { code, .. }
                if *code != codes::TOO_MANY_JOBS && *code != codes::FILE_NOT_AVAILABLE)
        })
        .collect();
    assert!(other.is_empty(), "{other:#?}");
}

fn is_end(e: &Event) -> bool {
    matches!(
        e,
        Event::DownloadCompleted { .. }
            | Event::DownloadFailed { .. }
            | Event::DownloadCancelled { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_flood_bounded_and_legit_recipient_served() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let server = server().await;
    let (src, data) = random_file(tmp.path(), "big.bin", SIZE, 21);
    let mut cfg = config(&server, None, "sender", tmp.path());
    // A departed recipient's jobs are dropped for good soon after it leaves.
    cfg.resume_grace = Duration::from_secs(2);
    let (sender, events) = peershare::Peer::join(cfg).await.unwrap();
    let mut s_rec = Recorder::new(events);
    let (hostile, mut h_rec) = join(&server, Some(sender.session()), "hostile", tmp.path()).await;
    let (legit, mut l_rec) = join(&server, Some(sender.session()), "legit", &out).await;
    wait_connected(&mut s_rec, 2).await;
    sender
        .send_files(std::slice::from_ref(&src), Share::Broadcast)
        .await
        .unwrap();
    let file_id = h_rec.offer().await;
    assert_eq!(l_rec.offer().await, file_id);
    let threads_before = status("Threads");
    let rss_before = status("VmRSS");
    let mut peak = Peak::default();

    // The hostile peer asks for the same file again and again, each time as a new job.
    for _ in 0..FLOOD {
        let request = ControlMessage::Request {
            job_id: JobId::new(),
            file_id,
            offset: 0,
        };
        hostile
            .debug_send_control(&sender.client_id(), request)
            .await
            .unwrap();
    }
    sentinel(&hostile, &sender, &mut h_rec).await;
    peak.sample();
    // One job per recipient and file: the flood left one job, not a thousand, and the
    // repeats were refused with a coded error (a repeat may replace the first job only if
    // that one's stream had already ended).
    let serving = sender.debug_serving_count().await;
    assert!(serving <= 1, "{serving} jobs served after the flood");
    let refused = h_rec
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Error { code, .. } if *code == codes::TOO_MANY_JOBS))
        .count();
    eprintln!("{refused} of {FLOOD} repeated requests refused with 6010");
    assert!(
        refused >= FLOOD - 8,
        "only {refused} of {FLOOD} requests refused"
    );
    assert_only_refusals(&h_rec);

    // A legitimate recipient alongside still gets the file.
    let job = legit
        .download(file_id, Save::ToDir(out.clone()))
        .await
        .unwrap();
    let end = loop {
        let ev = l_rec.until("download event", |_| true).await;
        if matches!(ev, Event::DownloadProgress { .. }) {
            peak.sample();
            let serving = sender.debug_serving_count().await;
            assert!(
                serving <= 2,
                "{serving} jobs served while one legit job runs"
            );
        }
        if is_end(&ev) {
            break ev;
        }
    };
    peak.sample();
    let Event::DownloadCompleted {
        job_id,
        path: Some(path),
        ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(job_id, job);
    assert!(std::fs::read(&path).unwrap() == data, "identical bytes");
    let legit_id = legit.client_id().to_string();
    s_rec
        .until("the legit delivery", |e| {
            matches!(e, Event::RecipientOutcome { peer, outcome: Outcome::Delivered, .. }
                if *peer == legit_id)
        })
        .await;

    let threads_grew = peak.threads.saturating_sub(threads_before);
    let rss_grew_mib = peak.rss_kib.saturating_sub(rss_before) / 1024;
    eprintln!(
        "threads {threads_before} -> peak {} (+{threads_grew}); RSS {} MiB -> peak {} MiB (+{rss_grew_mib} MiB)",
        peak.threads,
        rss_before / 1024,
        peak.rss_kib / 1024
    );
    assert!(threads_grew < 40, "threads grew by {threads_grew}");
    assert!(rss_grew_mib < 100, "RSS grew by {rss_grew_mib} MiB");

    // The hostile peer leaves: once its grace period is over (6003), or once its job
    // ended otherwise, nothing of it is served.
    let hostile_id = hostile.client_id().to_string();
    hostile.leave().await;
    let hostile_outcome =
        |e: &Event| matches!(e, Event::RecipientOutcome { peer, .. } if *peer == hostile_id);
    if !s_rec.seen.iter().any(hostile_outcome) {
        let outcome = s_rec
            .until("the hostile peer's outcome", hostile_outcome)
            .await;
        assert!(
            matches!(&outcome, Event::RecipientOutcome { outcome: Outcome::Failed { code }, .. }
                if *code == codes::PEER_GONE),
            "{outcome:?}"
        );
    }
    assert_eq!(sender.debug_serving_count().await, 0);
    legit.leave().await;
    sender.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batch_request_flood_bounded_and_legit_recipient_served() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let server = server().await;
    let root = tmp.path().join("small");
    std::fs::create_dir(&root).unwrap();
    let mut files = Vec::new();
    for i in 0..128 {
        files.push(random_file(
            &root,
            &format!("f{i:03}"),
            2048,
            100 + i as u64,
        ));
    }
    let (sender, events) = peershare::Peer::join(config(&server, None, "sender", tmp.path()))
        .await
        .unwrap();
    let mut s_rec = Recorder::new(events);
    let (hostile, mut h_rec) = join(&server, Some(sender.session()), "hostile", tmp.path()).await;
    let (legit, mut l_rec) = join(&server, Some(sender.session()), "legit", &out).await;
    wait_connected(&mut s_rec, 2).await;
    sender
        .send_paths(
            std::slice::from_ref(&root),
            Share::Broadcast,
            peershare::SendOptions::default(),
        )
        .await
        .unwrap();
    let mut offered = Vec::new();
    while offered.len() < files.len() {
        offered.push(h_rec.offer().await);
    }

    // The hostile peer asks for every file again and again, each time as a new batch of
    // new jobs, and never reads a batch channel.
    const BATCHES: usize = 300;
    for _ in 0..BATCHES {
        let jobs = offered
            .iter()
            .map(|&file_id| peershare::proto::control::BatchJob {
                job_id: JobId::new(),
                file_id,
            })
            .collect();
        let request = ControlMessage::BatchRequest {
            batch_id: JobId::new(),
            jobs,
        };
        hostile
            .debug_send_control(&sender.client_id(), request)
            .await
            .unwrap();
    }
    sentinel(&hostile, &sender, &mut h_rec).await;
    // A file is served to one peer as one job however many batches name it: the first
    // batch streams, and every later one is refused job by job with 6010, without a
    // channel.
    let refused = h_rec
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Error { code, .. } if *code == codes::TOO_MANY_JOBS))
        .count();
    assert_eq!(refused, (BATCHES - 1) * files.len());
    assert_only_refusals(&h_rec);
    let serving = sender.debug_serving_count().await;
    assert!(
        serving <= files.len(),
        "{serving} jobs served after the flood"
    );

    // A legitimate recipient alongside gets every file, identical.
    let mut jobs = Vec::new();
    while jobs.len() < files.len() {
        let file_id = l_rec.offer().await;
        jobs.push(
            legit
                .download(file_id, Save::ToDir(out.clone()))
                .await
                .unwrap(),
        );
    }
    let mut ended = l_rec.seen.iter().filter(|e| is_end(e)).count();
    while ended < files.len() {
        l_rec.until("a download end", is_end).await;
        ended += 1;
    }
    let failed: Vec<&Event> = l_rec
        .seen
        .iter()
        .filter(|e| is_end(e) && !matches!(e, Event::DownloadCompleted { .. }))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for (path, data) in &files {
        let got = std::fs::read(out.join("small").join(path.file_name().unwrap())).unwrap();
        assert!(got == *data, "{}: bytes differ", path.display());
    }
    hostile.leave().await;
    legit.leave().await;
    sender.leave().await;
}
