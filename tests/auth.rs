//! Peer authentication end to end over real WebRTC on loopback: only peers that know the
//! code's secret see offers or bytes, whatever the signaling server does.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::fake_signal::{FakeSignal, Tamper};
use common::*;
use peershare::{Event, Peer, PeerConfig, Save, Share, codes};
use serde_json::{Value, json};

/// A peer config for `url` (any signaling server) bound to 127.0.0.1.
fn config_at(url: &str, session: Option<&str>, name: &str, dir: &std::path::Path) -> PeerConfig {
    let mut c = PeerConfig::new(url);
    c.session = session.map(str::to_string);
    c.name = name.to_string();
    c.download_dir = dir.to_path_buf();
    c.rtc.bind = Some(LOCALHOST);
    c
}

async fn join_at(
    url: &str,
    session: Option<&str>,
    name: &str,
    dir: &std::path::Path,
) -> (Peer, Recorder) {
    let (peer, events) = Peer::join(config_at(url, session, name, dir))
        .await
        .expect("join");
    (peer, Recorder::new(events))
}

/// The code with the same route and another secret.
fn wrong_code(code: &str) -> String {
    let (route, _) = code.split_once('-').expect("ROUTE-SECRET");
    format!("{route}-wrong-guess-words")
}

fn auth_failed(e: &Event, who: &str, want: u16) -> bool {
    matches!(e, Event::PeerAuthFailed { peer, code, .. } if peer == who && *code == want)
}

/// Wait until each side reports the other refused with `code`.
async fn refused_both_ways(a: &mut Recorder, a_id: &str, b: &mut Recorder, b_id: &str, code: u16) {
    a.until(&format!("{a_id} refuses {b_id}"), |e| {
        auth_failed(e, b_id, code)
    })
    .await;
    b.until(&format!("{b_id} refuses {a_id}"), |e| {
        auth_failed(e, a_id, code)
    })
    .await;
}

/// Nothing about files reached `rec`, and no connection was made.
fn saw_nothing(rec: &Recorder) {
    for e in &rec.seen {
        assert!(
            !matches!(
                e,
                Event::DownloadAvailable { .. }
                    | Event::DownloadStarted { .. }
                    | Event::Connection { .. }
                    | Event::PeerJoined { .. }
                    | Event::UploadProgress { .. }
                    | Event::RecipientOutcome { .. }
            ),
            "{e:?}"
        );
    }
}

/// Share one file from a fresh sender on `url`.
async fn sender_with_file(url: &str, dir: &std::path::Path) -> (Peer, Recorder, Vec<u8>) {
    let (src, data) = random_file(dir, "f.bin", 256 * 1024, 5);
    let (sender, rec) = join_at(url, None, "sender", dir).await;
    sender
        .send_files(std::slice::from_ref(&src), Share::Broadcast)
        .await
        .expect("share");
    (sender, rec, data)
}

/// A legitimate recipient gets the file; returns its bytes.
async fn receive(url: &str, code: &str, out: &std::path::Path) -> Vec<u8> {
    let (r, mut rec) = join_at(url, Some(code), "legit", out).await;
    let file_id = rec.offer().await;
    r.download(file_id, Save::ToDir(out.to_path_buf()))
        .await
        .expect("download");
    let path = rec.saved().await;
    r.leave().await;
    std::fs::read(path).expect("read download")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_wrong_secret_fails_on_both_sides_and_nothing_flows() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, mut s_rec, _) = sender_with_file(&server.url(), tmp.path()).await;
    let (guesser, mut g_rec) = join_at(
        &server.url(),
        Some(&wrong_code(sender.session())),
        "guesser",
        tmp.path(),
    )
    .await;
    let gid = guesser.client_id().to_string();
    let sid = sender.client_id().to_string();
    refused_both_ways(&mut s_rec, &sid, &mut g_rec, &gid, codes::PEER_AUTH_FAILED).await;
    // The pair is refused for good: a legitimate recipient still gets the file (so the
    // sender's events up to then are complete), and the guesser saw nothing.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    receive(&server.url(), sender.session(), &out).await;
    saw_nothing(&g_rec);
    assert!(
        !s_rec.seen.iter().any(|e| matches!(e,
            Event::PeerJoined { peer, .. } | Event::RecipientOutcome { peer, .. } if *peer == gid)),
        "{:#?}",
        s_rec.seen
    );
    assert!(guesser.peers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_three_failures_burn_the_code_and_refuse_even_the_right_secret() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let (sender, mut s_rec, _) = sender_with_file(&server.url(), tmp.path()).await;
    let mut guessers = Vec::new();
    for i in 0..3 {
        let (g, _) = join_at(
            &server.url(),
            Some(&wrong_code(sender.session())),
            &format!("g{i}"),
            tmp.path(),
        )
        .await;
        let gid = g.client_id().to_string();
        s_rec
            .until("auth failure", |e| {
                auth_failed(e, &gid, codes::PEER_AUTH_FAILED)
            })
            .await;
        guessers.push(g);
    }
    s_rec
        .until("code burnt", |e| {
            matches!(e, Event::CodeBurnt { failures: 3 })
        })
        .await;
    // Now even the right secret gets nothing: the sender no longer runs the PAKE.
    let (late, mut l_rec) =
        join_at(&server.url(), Some(sender.session()), "late", tmp.path()).await;
    let sid = sender.client_id().to_string();
    let lid = late.client_id().to_string();
    refused_both_ways(&mut l_rec, &lid, &mut s_rec, &sid, codes::CODE_BURNT).await;
    saw_nothing(&l_rec);
    assert_eq!(
        s_rec
            .seen
            .iter()
            .filter(|e| matches!(e, Event::CodeBurnt { .. }))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_recorded_signaling_gives_an_eavesdropper_nothing() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(None).await;
    let (sender, mut s_rec, data) = sender_with_file(&fake.url(), tmp.path()).await;
    let code = sender.session().to_string();
    let (route, secret) = code.split_once('-').unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    assert_eq!(receive(&fake.url(), &code, &out).await, data);

    // The server saw the route, and not one word of the secret or an SDP.
    let frames = fake.frames();
    assert!(frames.iter().any(|f| f.contains(&format!("\"{route}\""))));
    // The secret in any spelling of its words (a single word alone is no evidence: a
    // word such as "kind" may be a protocol key or a run of base64 by chance).
    let words: Vec<&str> = secret.split('-').collect();
    for spelling in [words.join("-"), words.join(" "), words.concat()] {
        assert!(
            !frames.iter().any(|f| f.contains(&spelling)),
            "{spelling} leaked"
        );
    }
    assert!(
        !frames
            .iter()
            .any(|f| f.contains("a=fingerprint") || f.contains("typ host"))
    );

    // An eavesdropper that knows every frame: it joins with the route and replays to the
    // sender everything the legitimate recipient sent it (PAKE message, sealed answer
    // and candidates), then tries the route with a made-up secret.
    let sid = sender.client_id().to_string();
    let replay: Vec<Value> = frames
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter(|v| v["type"] == "signal" && v["to"] == sid.as_str())
        .map(|v| v["data"].clone())
        .collect();
    assert!(!replay.is_empty());
    let (mut ws, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(
        json!({"type": "join", "version": 2, "session": route, "name": "eve"}).to_string(),
    ))
    .await
    .unwrap();
    let welcome: Value = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "welcome" {
                break v;
            }
        }
    };
    let eve = welcome["client_id"].as_str().unwrap().to_string();
    // Replayed data of another pair and connection opens to nothing (or is dropped as
    // stale); a final offer of its own (no connection ID, so never stale) makes the
    // sender decide, after everything replayed (signals between two clients keep order).
    let own = json!({"kind": "offer", "sealed": STANDARD.encode([0u8; 64])});
    for data in replay.iter().chain([&own]) {
        ws.send(Message::text(
            json!({"type": "signal", "to": sid, "data": data}).to_string(),
        ))
        .await
        .unwrap();
    }
    s_rec
        .until("the eavesdropper is refused", |e| {
            auth_failed(e, &eve, codes::PEER_AUTH_FAILED)
        })
        .await;
    assert!(
        !s_rec
            .seen
            .iter()
            .any(|e| matches!(e, Event::PeerJoined { peer, .. } if *peer == eve)),
        "{:#?}",
        s_rec.seen
    );
    // The sender never put a description or a candidate in clear into a signal (to the
    // eavesdropper at most its PAKE message, a sealed offer and the refusal).
    for v in fake
        .frames()
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter(|v| v["type"] == "signal" && v["from"] == sid.as_str())
    {
        assert!(
            v["data"].get("sdp").is_none() && v["data"].get("candidate").is_none(),
            "{v}"
        );
    }
    drop(ws);

    // A peer with the route and a made-up secret fares no better.
    let (guess, mut g_rec) =
        join_at(&fake.url(), Some(&wrong_code(&code)), "guess", tmp.path()).await;
    let gid = guess.client_id().to_string();
    refused_both_ways(&mut s_rec, &sid, &mut g_rec, &gid, codes::PEER_AUTH_FAILED).await;
    saw_nothing(&g_rec);
}

/// Flip one bit of the ciphertext of every sealed description (a server that swaps the
/// DTLS fingerprint in it), or replace it by a description in clear.
fn mitm(clear: bool) -> Tamper {
    Box::new(move |_from, _to, data: &mut Value| {
        let kind = data["kind"].as_str().unwrap_or_default().to_string();
        if kind != "offer" && kind != "answer" {
            return;
        }
        if clear {
            *data = json!({"kind": kind, "sdp": "v=0\r\na=fingerprint:sha-256 00:11\r\n", "conn": data["conn"]});
            return;
        }
        if let Some(sealed) = data["sealed"].as_str()
            && let Ok(mut raw) = STANDARD.decode(sealed)
        {
            let i = raw.len() / 2;
            raw[i] ^= 0x01;
            data["sealed"] = Value::String(STANDARD.encode(raw));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_server_swapping_descriptions_is_detected_on_both_sides() {
    init_tracing();
    for clear in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeSignal::start(Some(mitm(clear))).await;
        let (sender, mut s_rec, _) = sender_with_file(&fake.url(), tmp.path()).await;
        let (r, mut r_rec) = join_at(&fake.url(), Some(sender.session()), "r", tmp.path()).await;
        let (sid, rid) = (sender.client_id().to_string(), r.client_id().to_string());
        refused_both_ways(&mut s_rec, &sid, &mut r_rec, &rid, codes::PEER_AUTH_FAILED).await;
        saw_nothing(&r_rec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_server_lying_about_client_ids_delivers_nothing_to_the_impostor() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(None).await;
    let (src, _) = random_file(tmp.path(), "only-for-victim.bin", 64 * 1024, 8);
    let (sender, mut s_rec) = join_at(&fake.url(), None, "sender", tmp.path()).await;
    let victim = "0000000000ff";
    sender
        .send_files(std::slice::from_ref(&src), Share::To(vec![victim.into()]))
        .await
        .unwrap();
    // The server gives an impostor, who does not know the secret, the victim's ID.
    fake.force_next_id(victim);
    let (impostor, mut i_rec) = join_at(
        &fake.url(),
        Some(&wrong_code(sender.session())),
        "victim",
        tmp.path(),
    )
    .await;
    assert_eq!(impostor.client_id(), victim);
    let sid = sender.client_id().to_string();
    refused_both_ways(
        &mut i_rec,
        victim,
        &mut s_rec,
        &sid,
        codes::PEER_AUTH_FAILED,
    )
    .await;
    // Give a stray offer every chance to arrive: a second, legitimate member connects and
    // is offered nothing (the file is for the victim only) while the impostor got nothing.
    let (other, mut o_rec) =
        join_at(&fake.url(), Some(sender.session()), "other", tmp.path()).await;
    o_rec
        .until("other authenticated", |e| {
            matches!(e, Event::Connection { .. })
        })
        .await;
    saw_nothing(&i_rec);
    assert!(
        !o_rec
            .seen
            .iter()
            .any(|e| matches!(e, Event::DownloadAvailable { .. }))
    );
    other.leave().await;
}
