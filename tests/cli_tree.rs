//! Folders: `peershare send DIR` shares a whole tree; `recv` recreates it under `--out`
//! with sanitized components, empty directories and executable bits, and nothing of it
//! escapes the output directory. Real binaries on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::cli::*;
use serde_json::Value;

fn send(extra: &[&str], paths: &[&Path]) -> JsonRun {
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.args(extra).args(paths);
    JsonRun::spawn(cmd)
}

fn recv(out: &Path, ticket: &str) -> JsonRun {
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json"]);
    cmd.arg("--out").arg(out).arg(ticket);
    JsonRun::spawn(cmd)
}

/// Every regular file and directory below `root`, relative, with its content (`None`
/// for a directory) and whether it is executable; symbolic links show as `"link"`.
fn layout(root: &Path) -> BTreeMap<String, (Option<Vec<u8>>, bool)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, (Some(b"link".to_vec()), false));
            } else if meta.is_dir() {
                out.insert(rel, (None, false));
                stack.push(path);
            } else if !meta.is_file() {
                out.insert(rel, (Some(b"special".to_vec()), false));
            } else {
                let exec = meta.permissions().mode() & 0o100 != 0;
                out.insert(rel, (Some(std::fs::read(&path).unwrap()), exec));
            }
        }
    }
    out
}

/// A tree with nested directories, unicode and hostile names, an empty directory, a
/// symbolic link, a 0-byte file, an executable and a FIFO.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty/inner")).unwrap();
    std::fs::create_dir_all(root.join("ünïcødé dir")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n").unwrap();
    write_random(&root.join("nested/deeper/big.bin"), 3 << 20, 1);
    std::fs::write(root.join("nested/zero.bin"), b"").unwrap();
    std::fs::write(root.join("ünïcødé dir/naïve ☕.txt"), "café\n").unwrap();
    std::fs::write(root.join("nested/-rf"), b"dash\n").unwrap();
    std::fs::write(root.join("nested/evil\u{202e}gpj.exe"), b"bidi\n").unwrap();
    std::fs::write(root.join(".hidden"), b"dot\n").unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-to-passwd")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_dir_recv_tree_identical_layout_modes_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("photos");
    make_tree(&src);
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let (code, revents, rerr) = recv(&out, &ticket).finish().await;
    assert_eq!(code, 0, "{rerr}");
    let (code, sevents, serr) = s.finish().await;
    assert_eq!(code, 0, "{serr}");

    // What arrives: every regular file with its content and mode, every directory (the
    // empty ones too), under sanitized names; no link, no FIFO.
    let mut expected = layout(&src);
    expected.remove("link-to-passwd");
    expected.remove("fifo");
    let renamed = [
        (".hidden", "hidden"),
        ("nested/-rf", "nested/_-rf"),
        ("nested/evil\u{202e}gpj.exe", "nested/evil_gpj.exe"),
    ];
    for (from, to) in renamed {
        let v = expected.remove(from).unwrap();
        expected.insert(to.into(), v);
    }
    assert_eq!(layout(&out.join("photos")), expected);
    // Only the tree in --out: no partial or record file left over.
    let top: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["photos"]);

    // The ticket comes first, the skip notes after it.
    assert_eq!(sevents[0]["event"], "ticket", "{sevents:#?}");
    // The sender said what it skipped, and why.
    let skipped: Vec<(String, String)> = events(&sevents, "skipped")
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap_or("?");
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (
                name.into_owned(),
                e["reason"].as_str().unwrap_or("?").into(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("fifo".into(), "not a regular file or directory".into()),
            (
                "link-to-passwd".into(),
                "symbolic link, not followed".into()
            )
        ]
    );

    // Each file: available (with its place in the tree and the group), started,
    // completed, in that order; one group of 8 files.
    let files = 8;
    let mut per_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &revents {
        let Some(id) = e["file_id"].as_str() else {
            continue;
        };
        let name = e["event"].as_str().unwrap_or("?");
        if !name.ends_with("-progress") {
            per_file.entry(id.into()).or_default().push(name.into());
        }
    }
    assert_eq!(per_file.len(), files, "{revents:#?}");
    for seq in per_file.values() {
        assert_eq!(
            seq,
            &[
                "file-upload-started",
                "download-available",
                "download-started",
                "download-completed"
            ],
            "{revents:#?}"
        );
    }
    let available = events(&revents, "download-available");
    let paths: Vec<&str> = available
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"photos/nested/deeper/big.bin"), "{paths:?}");
    assert!(
        available
            .iter()
            .all(|e| e["group"]["count"] == files && e["group"]["label"] == "photos/")
    );
    let saved: Vec<&str> = events(&revents, "download-completed")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        saved
            .iter()
            .all(|p| Path::new(p).starts_with(out.join("photos"))),
        "{saved:?}"
    );

    // The tree ends once, as a whole, after its last file.
    let ended = events(&revents, "download-group-ended");
    assert_eq!(ended.len(), 1, "{revents:#?}");
    assert_eq!(
        revents.last().map(|e| e["event"].clone()),
        Some("download-group-ended".into())
    );
    assert_eq!(
        (
            &ended[0]["label"],
            &ended[0]["files"],
            &ended[0]["completed"],
            &ended[0]["failed"],
            &ended[0]["cancelled"]
        ),
        (
            &"photos/".into(),
            &files.into(),
            &files.into(),
            &0.into(),
            &0.into()
        )
    );
    assert_eq!(ended[0]["group_id"], available[0]["group"]["id"]);

    // The sender: one upload per file, each delivered, and the share's end.
    let delivered: Vec<&Value> = events(&sevents, "recipient-outcome");
    assert_eq!(delivered.len(), files);
    assert!(delivered.iter().all(|e| e["outcome"] == "delivered"));
    let shared = events(&sevents, "upload-group-ended");
    assert_eq!(shared.len(), 1, "{sevents:#?}");
    assert_eq!(
        (&shared[0]["files"], &shared[0]["completed"]),
        (&files.into(), &files.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_dir_twice_recv_keeps_both_numbered_nothing_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("docs");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), b"first\n").unwrap();
    let out = tmp.path().join("out");
    // The recipient already holds a different file where the tree puts one.
    std::fs::create_dir_all(out.join("docs/sub")).unwrap();
    std::fs::write(out.join("docs/sub/a.txt"), b"mine\n").unwrap();
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let (code, _, rerr) = recv(&out, &ticket).finish().await;
    assert_eq!(code, 0, "{rerr}");
    assert_eq!(s.finish().await.0, 0);
    assert_eq!(
        std::fs::read(out.join("docs/sub/a.txt")).unwrap(),
        b"mine\n"
    );
    assert_eq!(
        std::fs::read(out.join("docs/sub/a (1).txt")).unwrap(),
        b"first\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_tree_through_symlink_in_out_dir_refused_5089() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("docs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"payload\n").unwrap();
    let out = tmp.path().join("out");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // Where the tree's root would go is a link out of --out.
    std::os::unix::fs::symlink(&elsewhere, out.join("docs")).unwrap();
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let (code, revents, rerr) = recv(&out, &ticket).finish().await;
    assert_eq!(code, 1, "{rerr}");
    let failed = events(&revents, "download-failed");
    assert_eq!(failed.len(), 1, "{revents:#?}");
    assert_eq!(failed[0]["code"], 5089);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(s.finish().await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_killed_mid_tree_restarted_completes_verified_files_not_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("set");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..6u64 {
        let dir = if i % 2 == 0 {
            src.clone()
        } else {
            src.join("sub")
        };
        write_random(&dir.join(format!("f{i}.bin")), 3 << 20, i);
    }
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;

    // A slow recipient, killed once two files are saved.
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json"]);
    cmd.args(["--limit-rate", "4M", "--out"])
        .arg(&out)
        .arg(&ticket);
    let mut first = JsonRun::spawn(cmd);
    first
        .until("a first saved file", |e| e["event"] == "download-completed")
        .await;
    first
        .until("a second saved file", |e| {
            e["event"] == "download-completed"
        })
        .await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    let (_, before, _) = first.finish().await;
    let saved_before: Vec<String> = events(&before, "download-completed")
        .iter()
        .filter_map(|e| e["path"].as_str().map(String::from))
        .collect();
    assert!(saved_before.len() >= 2);

    // The same command again: what is saved is not downloaded again, the rest arrives.
    let (code, after, stderr) = recv(&out, &ticket).finish().await;
    assert_eq!(code, 0, "{stderr}");
    let skipped: Vec<String> = events(&after, "download-skipped")
        .iter()
        .filter_map(|e| e["path"].as_str().map(String::from))
        .collect();
    for path in &saved_before {
        assert!(
            skipped.contains(path),
            "{path} downloaded again: {after:#?}"
        );
    }
    let downloaded = events(&after, "download-completed").len();
    assert_eq!(skipped.len() + downloaded, 6, "{after:#?}");
    // Copies already there count as completed for the share.
    let ended = events(&after, "download-group-ended");
    assert_eq!(ended.len(), 1, "{after:#?}");
    assert_eq!(
        (&ended[0]["files"], &ended[0]["completed"]),
        (&6.into(), &6.into())
    );
    assert_eq!(layout(&out.join("set")), layout(&src));
    assert_eq!(s.finish().await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tree_file_changed_mid_share_fails_alone_5100_rest_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pair");
    std::fs::create_dir_all(&src).unwrap();
    let keep = write_random(&src.join("a-kept.bin"), 1 << 20, 1);
    write_random(&src.join("b-changed.bin"), 24 << 20, 2);
    let out = tmp.path().join("out");
    let mut s = send(&["--limit-rate", "8M"], &[&src]);
    let ticket = s.ticket().await;
    let mut r = recv(&out, &ticket);
    r.until("the changing file under way", |e| {
        e["event"] == "download-progress" && e["name"] == "b-changed.bin"
    })
    .await;
    // The sender's copy changes while it is being sent: same size, new bytes near the
    // end, not read yet at 8 MiB/s.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("b-changed.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tampered", 23 << 20).unwrap();
    drop(f);
    let (code, revents, rerr) = r.finish().await;
    assert_eq!(code, 1, "{rerr}");
    let failed = events(&revents, "download-failed");
    assert_eq!(failed.len(), 1, "{revents:#?}");
    assert_eq!(failed[0]["name"], "b-changed.bin");
    assert_eq!(failed[0]["code"], 5100);
    assert_eq!(std::fs::read(out.join("pair/a-kept.bin")).unwrap(), keep);
    assert!(!out.join("pair/b-changed.bin").exists());
    let ended = events(&revents, "download-group-ended");
    assert_eq!(ended.len(), 1, "{revents:#?}");
    assert_eq!(
        (
            &ended[0]["files"],
            &ended[0]["completed"],
            &ended[0]["failed"]
        ),
        (&2.into(), &1.into(), &1.into())
    );
    let (code, sevents, _) = s.finish().await;
    assert_eq!(code, 1);
    let outcomes: Vec<(String, u64)> = events(&sevents, "recipient-outcome")
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or("?").to_string(),
                e["code"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(outcomes.contains(&("delivered".into(), 0)), "{outcomes:?}");
    assert!(outcomes.contains(&("failed".into(), 5100)), "{outcomes:?}");
}
