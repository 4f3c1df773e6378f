//! The browser peer: the page the signaling server serves, in headless Chromium, in one
//! session with the real `peershare` binaries on 127.0.0.1. Files cross byte-identical in
//! both directions, between browsers, and to several recipients at once; a wrong code and
//! a sender whose bytes do not match its offer are caught by the page; a page whose
//! signaling node drains rejoins through another node under its client ID.

mod common;
#[path = "../signaling/tests/support/redis_server.rs"]
mod redis_server;

use std::path::Path;

use common::cli::*;
use peershare_chromium::{Chrome, Page};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn send(paths: &[&Path], extra: &[&str]) -> JsonRun {
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.args(extra).args(paths);
    JsonRun::spawn(cmd)
}

fn recv(out: &Path, ticket: &str) -> JsonRun {
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json"]);
    cmd.arg("--out").arg(out).arg(ticket);
    JsonRun::spawn(cmd)
}

/// `peershare signal` on 127.0.0.1: the server's `ws://` URL and the process.
async fn signal() -> (String, LineRun) {
    let mut run = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = run.next_line().await;
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    (url, run)
}

/// Accept every offered file in the page, wait until each is verified, save each, and
/// return the saved bytes by name. `shots`: screenshot names for the offer and the
/// verified file (see `Page::screenshot`).
async fn accept_and_save(page: &Page, names: &[&str]) -> Vec<Vec<u8>> {
    accept_and_save_shown(page, names, None).await
}

async fn accept_and_save_shown(
    page: &Page,
    names: &[&str],
    shots: Option<(&str, &str)>,
) -> Vec<Vec<u8>> {
    page.wait(
        "an offer",
        &format!(
            "return document.querySelectorAll('#downloads li[data-state=available] button.accept').length >= {}",
            names.len()
        ),
    )
    .await;
    if let Some((offer, _)) = shots {
        page.eval("document.getElementById('receive').scrollIntoView(); return true;")
            .await;
        page.screenshot(offer).await;
    }
    for _ in names {
        page.click("#downloads li[data-state=available] button.accept")
            .await;
    }
    page.wait(
        "verified downloads",
        &format!(
            "return document.querySelectorAll('#downloads li[data-state=completed] a.save').length >= {}",
            names.len()
        ),
    )
    .await;
    if let Some((_, verified)) = shots {
        page.screenshot(verified).await;
    }
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        page.eval(&format!(
            "document.querySelectorAll('#downloads li[data-state=completed] a.save')[{i}].click(); return true;"
        ))
        .await;
        out.push(page.downloaded(name).await);
    }
    out
}

/// The page's file events (without presence and connection events).
async fn page_names(page: &Page) -> Vec<String> {
    page.event_names()
        .await
        .into_iter()
        .filter(|n| {
            ["download-", "upload-", "file-upload-", "recipient-"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect()
}

/// The recipients' outcomes a sender reported (`recipient-outcome`), with their codes.
fn outcomes(events: &[Value]) -> Vec<(String, Option<u64>)> {
    events
        .iter()
        .filter(|e| e["event"] == "recipient-outcome")
        .map(|o| {
            (
                o["outcome"].as_str().unwrap_or("?").to_string(),
                o["code"].as_u64(),
            )
        })
        .collect()
}

fn delivered(n: usize) -> Vec<(String, Option<u64>)> {
    vec![("delivered".to_string(), None); n]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_receives_64_mib_from_native_send_verified_and_saved() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("movie.bin");
    let data = write_random(&src, 64 * MIB, 1);
    let mut sender = send(&[&src], &[]);
    let ticket = sender.until("ticket", |e| e["event"] == "ticket").await;
    let url = ticket["page"].as_str().expect("page URL").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/#"),
        "{url}"
    );

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    page.goto(&url).await;
    let saved = accept_and_save(&page, &["movie.bin"]).await;
    assert!(saved[0] == data, "the saved file differs from the sent one");
    assert_eq!(
        page_names(&page).await,
        [
            "file-upload-started",
            "download-available",
            "download-started",
            "download-completed"
        ]
    );

    let (status, events, stderr) = sender.finish().await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(outcomes(&events), delivered(1), "{events:#?}");
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sends_64_mib_to_native_recv_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("from-browser.bin");
    let data = write_random(&src, 64 * MIB, 2);
    let (ws, _server) = signal().await;
    let http = ws.replacen("ws://", "http://", 1);

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    let code = page.create_session(&format!("{http}/")).await;
    page.choose_files(&[&src]).await;
    page.wait(
        "upload-started",
        "return window.peershare.events.some(e => e.event === 'upload-started');",
    )
    .await;

    let out = tempfile::tempdir().unwrap();
    let host = ws.trim_start_matches("ws://").trim_end_matches('/');
    let receiver = recv(out.path(), &format!("{code}@{host}"));
    let (status, events, stderr) = receiver.finish().await;
    assert_eq!(status, 0, "{stderr}\n{events:#?}");
    assert_eq!(
        names(&events),
        [
            "joined",
            "file-upload-started",
            "download-available",
            "download-started",
            "download-completed",
            "download-group-ended"
        ]
    );
    assert!(std::fs::read(out.path().join("from-browser.bin")).unwrap() == data);
    page.wait(
        "delivered",
        "return document.querySelector('#uploads .outcome[data-state=delivered]') !== null;",
    )
    .await;
    assert_eq!(
        page_names(&page).await,
        ["upload-started", "recipient-outcome", "upload-completed"]
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_to_browser_file_crosses_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("b2b.bin");
    let data = write_random(&src, 8 * MIB + 123, 3);
    let (ws, _server) = signal().await;
    let http = ws.replacen("ws://", "http://", 1);

    let chrome = Chrome::start().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = chrome.page(d1.path()).await;
    a.goto(&format!("{http}/")).await;
    a.screenshot("start").await;
    a.click("#create-button").await;
    let code = a
        .wait(
            "a code",
            "return window.peershare && window.peershare.code;",
        )
        .await;
    let b = chrome.page(d2.path()).await;
    // The second browser has a phone's screen.
    b.resize(390, 844).await;
    b.goto(&format!("{http}/#{}", code.as_str().unwrap())).await;
    a.wait(
        "the other page",
        "return document.querySelector('#members li[data-state=connected]') !== null;",
    )
    .await;
    a.screenshot("session").await;
    a.choose_files(&[&src]).await;
    let saved =
        accept_and_save_shown(&b, &["b2b.bin"], Some(("phone-offer", "phone-verified"))).await;
    assert!(saved[0] == data);
    a.wait(
        "delivered",
        "return document.querySelector('#uploads .outcome[data-state=delivered]') !== null;",
    )
    .await;
    a.screenshot("sent").await;
    assert_eq!(
        page_names(&a).await,
        ["upload-started", "recipient-outcome", "upload-completed"]
    );
    assert_eq!(
        page_names(&b).await,
        [
            "file-upload-started",
            "download-available",
            "download-started",
            "download-completed"
        ]
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_broadcast_native_send_to_two_browsers_and_native_recv_all_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("all.bin");
    let data = write_random(&src, 4 * MIB + 7, 4);
    let mut sender = send(&[&src], &[]);
    let ticket = sender.until("ticket", |e| e["event"] == "ticket").await;
    let url = ticket["page"].as_str().unwrap().to_string();
    let cli_ticket = ticket["ticket"].as_str().unwrap().to_string();

    let chrome = Chrome::start().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p1 = chrome.page(d1.path()).await;
    let p2 = chrome.page(d2.path()).await;
    p1.goto(&url).await;
    p2.goto(&url).await;
    // Both pages hold the offer before the native recipient joins: `send` waits only for
    // recipients that joined before the first one got everything, and a fast `recv`
    // could otherwise get there before the sender has met a page.
    for p in [&p1, &p2] {
        p.wait(
            "an offer",
            "return window.peershare.events.some(e => e.event === 'download-available');",
        )
        .await;
    }
    let out = tempfile::tempdir().unwrap();
    let receiver = recv(out.path(), &cli_ticket);
    let (s1, s2) = tokio::join!(
        accept_and_save(&p1, &["all.bin"]),
        accept_and_save(&p2, &["all.bin"])
    );
    assert!(s1[0] == data && s2[0] == data);
    let (status, _, stderr) = receiver.finish().await;
    assert_eq!(status, 0, "{stderr}");
    assert!(std::fs::read(out.path().join("all.bin")).unwrap() == data);
    let (status, events, stderr) = sender.finish().await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(outcomes(&events), delivered(3), "{events:#?}");
    p1.close().await;
    p2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_wrong_code_shows_6011_and_lists_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("secret.bin");
    write_random(&src, 1000, 5);
    let mut sender = send(&[&src], &[]);
    let ticket = sender.until("ticket", |e| e["event"] == "ticket").await;
    let url = ticket["page"].as_str().unwrap().to_string();
    let (base, code) = url.split_once('#').unwrap();
    let route = code.split('-').next().unwrap();
    let wrong = format!("{base}#{route}-wrong-words-here");

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    page.goto(&wrong).await;
    let shown = page
        .wait(
            "the authentication error",
            "const e = document.getElementById('error'); return !e.hidden && e.dataset.code;",
        )
        .await;
    assert_eq!(shown, "6011");
    page.screenshot("wrong-code").await;
    assert_eq!(
        page.eval("return document.querySelectorAll('#downloads li').length;")
            .await,
        0
    );
    let events = page.events().await;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "peer-auth-failed" && e["code"] == 6011),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["event"] == "download-available"));
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sender_bytes_not_matching_offer_fail_5100_nothing_saved() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("liar.bin");
    write_random(&src, 2 * MIB, 6);
    let mut sender = send(&[&src], &[]);
    let ticket = sender.until("ticket", |e| e["event"] == "ticket").await;
    let url = ticket["page"].as_str().unwrap().to_string();
    sender
        .until("upload-started", |e| e["event"] == "upload-started")
        .await;
    // The sender now lies: the file's bytes change behind its back, with the size and
    // modification time it was offered with, so it streams bytes its offer's hash does
    // not cover.
    let meta = std::fs::metadata(&src).unwrap();
    write_random(&src, 2 * MIB, 7);
    let f = std::fs::File::options().write(true).open(&src).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    drop(f);

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    page.goto(&url).await;
    page.wait(
        "an offer",
        "return document.querySelector('#downloads li[data-state=available] button.accept');",
    )
    .await;
    page.click("#downloads li[data-state=available] button.accept")
        .await;
    let code = page
        .wait(
            "the failure",
            "const li = document.querySelector('#downloads li[data-state=failed]'); return li && li.dataset.code;",
        )
        .await;
    assert_eq!(code, "5100");
    assert_eq!(
        page.eval("return document.querySelectorAll('a.save').length;")
            .await,
        0
    );
    assert_eq!(
        page_names(&page).await,
        [
            "file-upload-started",
            "download-available",
            "download-started",
            "download-failed"
        ]
    );
    let (_, events, _) = sender.finish().await;
    assert_eq!(
        outcomes(&events),
        [("failed".to_string(), Some(5100))],
        "{events:#?}"
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sender_native_recv_killed_and_restarted_resumes_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("resume.bin");
    let data = write_random(&src, 48 * MIB, 8);
    let (ws, _server) = signal().await;
    let http = ws.replacen("ws://", "http://", 1);
    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    page.goto(&format!("{http}/")).await;
    page.click("#create-button").await;
    let code = page
        .wait(
            "a code",
            "return window.peershare && window.peershare.code;",
        )
        .await;
    page.choose_files(&[&src]).await;
    page.wait(
        "upload-started",
        "return window.peershare.events.some(e => e.event === 'upload-started');",
    )
    .await;
    let host = ws.trim_start_matches("ws://").trim_end_matches('/');
    let ticket = format!("{}@{host}", code.as_str().unwrap());
    let out = tempfile::tempdir().unwrap();
    let slow = |ticket: &str| {
        let mut cmd = peershare(&[
            "recv",
            "--bind",
            "127.0.0.1",
            "--yes",
            "--json",
            "--limit-rate",
            "8M",
        ]);
        cmd.arg("--out").arg(out.path()).arg(ticket);
        JsonRun::spawn(cmd)
    };

    // The first recv dies (SIGKILL) with at least one 8 MiB checkpoint on disk.
    let mut first = slow(&ticket);
    first
        .until("20 MiB", |e| {
            e["event"] == "download-progress" && e["bytes"].as_u64() >= Some(20 * MIB as u64)
        })
        .await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    let (status, _, _) = first.finish().await;
    assert_ne!(status, 0);

    // The second finds the partial download, and the page serves it from there.
    let (status, seen, stderr) = slow(&ticket).finish().await;
    assert_eq!(status, 0, "{stderr}");
    let offset = events(&seen, "download-started")[0]["offset"]
        .as_u64()
        .unwrap();
    // Past the last checkpoint (16 MiB): the bytes beyond it were verified with the
    // block hashes the page computed (`hashes-request`). (What was durable at the kill
    // may lag the 20 MiB received by a write batch.)
    assert!(offset > 16 * MIB as u64, "resumed from {offset}: {seen:#?}");
    assert!(std::fs::read(out.path().join("resume.bin")).unwrap() == data);
    page.wait(
        "delivered",
        "return document.querySelector('#uploads .outcome[data-state=delivered]') !== null;",
    )
    .await;
    assert_eq!(
        page_names(&page).await,
        ["upload-started", "recipient-outcome", "upload-completed"]
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_accepts_one_declines_other_sender_records_both() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep.txt");
    let skip = dir.path().join("skip.txt");
    std::fs::write(&keep, b"wanted\n").unwrap();
    std::fs::write(&skip, b"not wanted\n").unwrap();
    let mut sender = send(&[&keep, &skip], &[]);
    let ticket = sender.until("ticket", |e| e["event"] == "ticket").await;
    let url = ticket["page"].as_str().unwrap().to_string();

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    page.goto(&url).await;
    page.wait(
        "two offers",
        "return document.querySelectorAll('#downloads li[data-state=available]').length === 2;",
    )
    .await;
    // The page lists files by name; decline skip.txt, accept keep.txt.
    let pick = |name: &str, button: &str| {
        format!(
            "const li = [...document.querySelectorAll('#downloads li')].find(l => l.querySelector('.name').textContent === '{name}'); li.querySelector('button.{button}').click(); return true;"
        )
    };
    page.eval(&pick("skip.txt", "decline")).await;
    page.eval(&pick("keep.txt", "accept")).await;
    page.wait(
        "the verified file",
        "return document.querySelector('#downloads li[data-state=completed] a.save');",
    )
    .await;
    page.click("#downloads li[data-state=completed] a.save")
        .await;
    assert_eq!(page.downloaded("keep.txt").await, b"wanted\n");
    // A file every recipient declined makes `send` exit 4 (6002).
    let (status, events, stderr) = sender.finish().await;
    assert_eq!(status, 4, "{stderr}");
    let mut got = outcomes(&events);
    got.sort();
    assert_eq!(
        got,
        [
            ("declined".to_string(), None),
            ("delivered".to_string(), None)
        ]
    );
    let names = page_names(&page).await;
    assert_eq!(
        names.iter().filter(|n| *n == "download-cancelled").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "download-completed").count(),
        1,
        "{names:?}"
    );
    page.close().await;
}

/// A TCP forwarder on 127.0.0.1 standing for a load balancer: each connection goes to the
/// address `target` holds when it arrives.
async fn balancer(
    target: tokio::sync::watch::Receiver<std::net::SocketAddr>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = *target.borrow();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_node_drains_page_rejoins_other_node_same_id_and_shares() {
    use peershare::signaling::ServerConfig;
    let redis = redis_server::Redis::start();
    let node = || async {
        let server = common::server_with(ServerConfig {
            redis: Some(redis.url()),
            ..ServerConfig::default()
        })
        .await;
        redis_server::wait_ready(server.local_addr(), true).await;
        server
    };
    let (a, b) = (node().await, node().await);
    let (to, target) = tokio::sync::watch::channel(a.local_addr());
    let lb = balancer(target).await;

    let chrome = Chrome::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let page = chrome.page(downloads.path()).await;
    let code = page.create_session(&format!("http://{lb}/")).await;
    let id = page.eval("return window.peershare.clientId;").await;

    // Node A drains (7012, close 1012); the balancer sends new connections to node B.
    to.send(b.local_addr()).unwrap();
    a.shutdown().await;
    let back = page
        .wait(
            "signaling-reconnected",
            "return window.peershare.events.find(e => e.event === 'signaling-reconnected') ?? null;",
        )
        .await;
    assert_eq!(back["resumed"], true, "{back}");
    assert_eq!(back["client_id"], id, "{back}");

    // Signaling works through node B: a recipient joining now meets the page.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("after-drain.bin");
    let data = write_random(&src, 2 * MIB + 5, 9);
    page.choose_files(&[&src]).await;
    let out = tempfile::tempdir().unwrap();
    let receiver = recv(out.path(), &format!("{code}@{lb}"));
    let (status, events, stderr) = receiver.finish().await;
    assert_eq!(status, 0, "{stderr}\n{events:#?}");
    assert!(std::fs::read(out.path().join("after-drain.bin")).unwrap() == data);
    let seen: Vec<String> = page
        .event_names()
        .await
        .into_iter()
        .filter(|n| n.starts_with("signaling-") || n == "error" || n == "joined")
        .collect();
    assert_eq!(seen, ["joined", "signaling-lost", "signaling-reconnected"]);
    page.close().await;
    b.shutdown().await;
}
