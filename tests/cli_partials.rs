//! `peershare partials` on directories holding partial downloads, orphans and other
//! files, and what `recv` does with the partial downloads of its `--out`: the real
//! binary (on 127.0.0.1 where a transfer is needed).

mod common;

use std::path::Path;
use std::time::Duration;

use common::cli::*;
use peershare::JobId;
use peershare::store::JobStore;
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);
const MIB: usize = 1024 * 1024;

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// One row of the table `partials` prints.
fn row(job: &JobId, size: &str, on_disk: &str, done: &str, age: &str, name: &str) -> String {
    format!("{job:<36}  {size:>10}  {on_disk:>10}  {done:>5}  {age:>6}  {name}")
}

fn header() -> String {
    format!(
        "{:<36}  {:>10}  {:>10}  {:>5}  {:>6}  NAME",
        "JOB", "SIZE", "ON DISK", "DONE", "AGE"
    )
}

/// A directory with two partial downloads (one with a hostile name), the three kinds of
/// orphan, a stray temporary record, and files that are not ours. The jobs sorted by ID
/// (the order `partials` lists them in), with their expected rows.
struct Planted {
    dir: tempfile::TempDir,
    movie: JobId,
    rows: Vec<(JobId, String)>,
    others: [&'static str; 3],
}

fn planted() -> Planted {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = JobStore::new(d);
    let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let movie = plant_partial(d, "movie.bin", &data, 1000, 2 * HOUR + HOUR / 2);
    let hostile_name = "\u{1b}[31mred\u{202e}fdp.exe";
    let hostile = plant_partial(d, hostile_name, &data[..100], 50, 3 * 24 * HOUR + HOUR);
    // A record whose partial file is gone.
    let gone = plant_partial(d, "gone.bin", &data, 10, 5 * 60 * Duration::from_secs(1));
    std::fs::remove_file(store.partial_path(&gone)).unwrap();
    // A partial file without a record, and one with an unreadable record.
    let (lone, garbled, temp) = (JobId::new(), JobId::new(), JobId::new());
    std::fs::write(store.partial_path(&lone), [7u8; 77]).unwrap();
    age_file(&store.partial_path(&lone), HOUR + HOUR / 2);
    std::fs::write(store.partial_path(&garbled), [7u8; 5]).unwrap();
    std::fs::write(store.record_path(&garbled), b"{\"version\":").unwrap();
    for p in [store.partial_path(&garbled), store.record_path(&garbled)] {
        age_file(&p, Duration::from_secs(45));
    }
    // Only the temporary record a crash left.
    std::fs::write(store.temp_path(&temp), b"{").unwrap();
    age_file(&store.temp_path(&temp), 26 * HOUR);
    let others = ["movie.bin", ".hidden", ".peershare-notes.txt"];
    for name in others {
        std::fs::write(d.join(name), b"mine").unwrap();
    }
    let mut rows = vec![
        (
            movie,
            row(
                &movie,
                &bytes(3000),
                &bytes(1000),
                "33 %",
                "2 h",
                "movie.bin",
            ),
        ),
        (
            hostile,
            row(
                &hostile,
                &bytes(100),
                &bytes(50),
                "50 %",
                "3 d",
                "\\u{1b}[31mred\\u{202e}fdp.exe",
            ),
        ),
        (
            gone,
            row(
                &gone,
                &bytes(3000),
                "-",
                "-",
                "5 min",
                "gone.bin (orphan: no partial file)",
            ),
        ),
        (
            lone,
            row(&lone, "-", &bytes(77), "-", "1 h", "(orphan: no record)"),
        ),
        (
            garbled,
            row(
                &garbled,
                "-",
                &bytes(5),
                "-",
                "45 s",
                "(orphan: unreadable record)",
            ),
        ),
        (
            temp,
            row(
                &temp,
                "-",
                "-",
                "-",
                "1 d",
                "(orphan: only a temporary record)",
            ),
        ),
    ];
    rows.sort_by_key(|(id, _)| *id);
    Planted {
        dir,
        movie,
        rows,
        others,
    }
}

fn partials(dir: &Path, extra: &[&str]) -> tokio::process::Child {
    let mut cmd = peershare(&["partials", "--out"]);
    cmd.arg(dir).args(extra);
    cmd.spawn().unwrap()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn partials_lists_jobs_and_orphans_with_size_on_disk_percent_age_and_escaped_names() {
    let p = planted();
    let (code, stdout, stderr) = finish(partials(p.dir.path(), &[])).await;
    assert_eq!(code, 0, "{stderr}");
    let mut expected = vec![header()];
    expected.extend(p.rows.iter().map(|(_, r)| r.clone()));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{202e}'));
    assert_eq!(stderr, "");
    // Listing changes nothing.
    assert_eq!(listing(p.dir.path()).len(), 9 + p.others.len());
}

#[tokio::test]
async fn partials_json_is_one_object_per_job_and_job_arguments_select() {
    let p = planted();
    let (code, stdout, stderr) = finish(partials(p.dir.path(), &["--json"])).await;
    assert_eq!(code, 0, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), p.rows.len(), "{stdout}");
    let movie = lines
        .iter()
        .find(|l| l["job_id"] == p.movie.to_string())
        .unwrap();
    let age = movie["age_secs"].as_u64().unwrap();
    assert!((2 * 3600 + 1800..3 * 3600).contains(&age), "{movie}");
    assert_eq!(
        *movie,
        json!({
            "event": "partial", "job_id": p.movie.to_string(), "name": "movie.bin",
            "size": 3000, "on_disk": 1000, "percent": 33, "age_secs": age,
            "orphan": null, "stray_temp": false,
        })
    );
    let orphans: Vec<&Value> = lines.iter().map(|l| &l["orphan"]).collect();
    for kind in [
        "no-partial-file",
        "no-record",
        "unreadable-record",
        "temporary-record-only",
    ] {
        assert_eq!(orphans.iter().filter(|o| **o == kind).count(), 1, "{kind}");
    }
    // A job ID given: only that job (its first 8 characters, in upper case, work too).
    let prefix = p.movie.to_string()[..8].to_uppercase();
    let (code, stdout, _) = finish(partials(p.dir.path(), &[&prefix])).await;
    assert_eq!(code, 0);
    let movie_row = &p.rows.iter().find(|(id, _)| *id == p.movie).unwrap().1;
    assert_eq!(stdout.lines().collect::<Vec<_>>(), [&header(), movie_row]);
}

#[tokio::test]
async fn partials_remove_by_job_prefix_deletes_only_that_job_and_says_what() {
    let p = planted();
    let prefix = &p.movie.to_string()[..8];
    let before = listing(p.dir.path());
    let (code, stdout, stderr) = finish(partials(p.dir.path(), &["--remove", prefix])).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "removed movie.bin (job {}, {} on disk)",
                p.movie,
                bytes(1000)
            ),
            format!("removed 1 partial download from {}", p.dir.path().display()),
        ]
    );
    let gone = [
        format!(".peershare-{}.json", p.movie),
        format!(".peershare-{}.part", p.movie),
    ];
    let expected: Vec<String> = before.into_iter().filter(|n| !gone.contains(n)).collect();
    assert_eq!(listing(p.dir.path()), expected);
}

#[tokio::test]
async fn partials_remove_all_deletes_jobs_orphans_and_temps_and_nothing_else() {
    let p = planted();
    let (code, stdout, stderr) = finish(partials(p.dir.path(), &["--remove", "--json"])).await;
    assert_eq!(code, 0, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), p.rows.len());
    assert!(lines.iter().all(|l| l["event"] == "removed"), "{stdout}");
    let movie = lines
        .iter()
        .find(|l| l["job_id"] == p.movie.to_string())
        .unwrap();
    let d = p.dir.path();
    assert_eq!(
        movie["files"],
        json!([
            d.join(format!(".peershare-{}.part", p.movie)),
            d.join(format!(".peershare-{}.json", p.movie)),
        ])
    );
    let mut others: Vec<String> = p.others.iter().map(|s| s.to_string()).collect();
    others.sort();
    assert_eq!(listing(d), others);
    let (code, stdout, _) = finish(partials(d, &[])).await;
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("no partial downloads in {}\n", d.display()));
    let (code, stdout, _) = finish(partials(d, &["--remove"])).await;
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("no partial downloads in {}\n", d.display()));
}

#[tokio::test]
async fn partials_unknown_job_missing_dir_or_short_prefix_exits_2_with_code() {
    let p = planted();
    let d = p.dir.path();
    let before = listing(d);
    let (code, stdout, stderr) = finish(partials(d, &["--remove", "not-a-job"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error 5099: unknown job ID not-a-job: no partial download in {} has it\n",
            d.display()
        )
    );
    assert_eq!(stdout, "");
    assert_eq!(listing(d), before, "nothing removed");
    let (code, _, stderr) = finish(partials(d, &["--remove", "abc"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("error 6008: abc is too short"),
        "{stderr}"
    );
    let missing = d.join("nope");
    let (code, stdout, stderr) = finish(partials(&missing, &["--json"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error 5089: storage access denied: {}: ",
            missing.display()
        )),
        "{stderr}"
    );
    let last = json_lines(&stdout).pop().unwrap();
    assert_eq!(
        (
            last["event"].clone(),
            last["code"].clone(),
            last["exit"].clone()
        ),
        (json!("error"), json!(5089), json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_partial_download_announced_in_json_resumed_and_stray_temps_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let data = write_random(&src, 3 * MIB, 21);
    let out = tmp.path().join("out");
    let job = plant_partial(&out, "big.bin", &data, MIB, HOUR);
    // Temporary records a crash left: of this job, and of one that is gone.
    let store = JobStore::new(&out);
    std::fs::write(store.temp_path(&job), b"{\"version\":1,").unwrap();
    std::fs::write(store.temp_path(&JobId::new()), b"{").unwrap();

    let mut s = JsonRun::spawn({
        let mut c = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
        c.arg(&src);
        c
    });
    let ticket = s.ticket().await;
    let mut r = JsonRun::spawn({
        let mut c = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json", "--out"]);
        c.arg(&out).arg(&ticket);
        c
    });
    let joined = r.until("joined", |e| e["event"] == "joined").await;
    assert!(joined["client_id"].is_string(), "{joined}");
    let available = r
        .until("the offer", |e| e["event"] == "download-available")
        .await;
    assert_eq!(
        available["resume"],
        json!({"job_id": job.to_string(), "offset": MIB, "percent": 33})
    );
    let (code, events, stderr) = r.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(events[0]["event"], "joined", "the first line");
    let started = events
        .iter()
        .find(|e| e["event"] == "download-started")
        .unwrap();
    assert_eq!(started["job_id"], job.to_string());
    assert_eq!(started["offset"], MIB);
    assert!(std::fs::read(out.join("big.bin")).unwrap() == data);
    // Nothing else is left: no partial file, record or temporary record.
    assert_eq!(listing(&out), ["big.bin"]);
    let (code, _, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn partials_remove_failure_exits_1_with_5089_and_removes_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = [1u8; 300];
    let movie = plant_partial(d, "movie.bin", &data, 100, HOUR);
    // A job whose temporary record is a directory: unlink fails, even for root.
    let stuck = JobId::new();
    let store = JobStore::new(d);
    std::fs::write(store.partial_path(&stuck), b"x").unwrap();
    std::fs::create_dir(store.temp_path(&stuck)).unwrap();
    let (code, stdout, stderr) = finish(partials(d, &["--remove"])).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("removed movie.bin (job {movie}, {} on disk)", bytes(100)),
            format!("removed 1 partial download from {}", d.display()),
        ]
    );
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "error 5089: storage access denied: cannot remove the files of job {stuck} in \
                 {}: Is a directory (os error 21)",
                d.display()
            ),
            format!(
                "error 5089: storage access denied: could not remove 1 of 2 partial \
                 downloads in {} (each named above)",
                d.display()
            ),
        ]
    );
    assert_eq!(listing(d), [format!(".peershare-{stuck}.json.tmp")]);
}
