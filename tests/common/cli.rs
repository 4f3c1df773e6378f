//! Running the built `peershare` binary in tests: processes with piped output, JSON
//! event lines read as they come, and hang guards.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_peershare");
/// Hang guard for a whole process run (not a performance assertion).
pub const GUARD: Duration = Duration::from_secs(120);

/// `peershare ARGS…` with no standard input and piped output, and without the user's
/// defaults (`PEERSHARE_SERVER`, `PEERSHARE_CA`, the config file).
pub fn peershare(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PEERSHARE_SERVER")
        .env_remove("PEERSHARE_CA")
        .env("XDG_CONFIG_HOME", "/nonexistent/peershare-tests")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

pub fn write_random(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data[..]);
    std::fs::write(path, &data).expect("write source file");
    data
}

/// Wait for a process to end; its exit code, stdout and stderr.
pub async fn finish(child: Child) -> (i32, String, String) {
    let out = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .expect("process hung")
        .expect("process output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Event names without progress, connection and presence events.
pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .filter(|n| !n.ends_with("-progress") && n != "connection" && !n.starts_with("peer-"))
        .collect()
}

/// A `peershare … --json` process whose stdout events are read while it runs.
pub struct JsonRun {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
    stderr: tokio::task::JoinHandle<String>,
}

impl JsonRun {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn peershare");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The process ID (for signals).
    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Wait for the first event from now on that matches `pred`.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let next = tokio::time::timeout(GUARD, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.seen))
                .unwrap_or_else(|| panic!("output ended waiting for {what}; saw {:#?}", self.seen));
            self.seen.push(next.clone());
            if pred(&next) {
                return next;
            }
        }
    }

    /// The ticket of a `send --json` (its first line).
    pub async fn ticket(&mut self) -> String {
        let line = self.until("ticket", |e| e["event"] == "ticket").await;
        line["ticket"].as_str().expect("ticket string").to_string()
    }

    /// Wait for the process to end: its exit code, every event it printed, its stderr.
    pub async fn finish(mut self) -> (i32, Vec<Value>, String) {
        let waited = tokio::time::timeout(GUARD, self.child.wait()).await;
        if waited.is_err() {
            // Killed, its output ends: what it said before hanging is shown below.
            let _ = self.child.kill().await;
        }
        while let Some(v) = self.lines.recv().await {
            self.seen.push(v);
        }
        let stderr = self.stderr.await.unwrap_or_default();
        let Ok(status) = waited else {
            panic!("process hung; events {:#?}\nstderr:\n{stderr}", self.seen);
        };
        let status = status.expect("process status");
        (status.code().unwrap_or(-1), self.seen, stderr)
    }
}

/// Events named `name`.
pub fn events<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == name).collect()
}

/// A process with plain-text stdout.
pub struct LineRun {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl LineRun {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn peershare");
        let stdout = child.stdout.take().expect("piped stdout");
        LineRun {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line of stdout.
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(GUARD, self.lines.next_line())
            .await
            .expect("process hung")
            .expect("stdout")
            .expect("stdout ended")
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }
}

/// A partial download of `data` named `name` as an interrupted `recv` leaves it in
/// `dir`: its first `have` bytes in the partial file and a job record whose checkpoint
/// is `have`, both last modified `age` ago. Its job ID.
pub fn plant_partial(
    dir: &Path,
    name: &str,
    data: &[u8],
    have: usize,
    age: Duration,
) -> peershare::JobId {
    use peershare::store::{JobRecord, JobStore, RECORD_VERSION};
    std::fs::create_dir_all(dir).expect("output directory");
    let store = JobStore::new(dir);
    let record = JobRecord {
        version: RECORD_VERSION,
        job_id: peershare::JobId::new(),
        file_id: peershare::FileId::new(),
        name: name.into(),
        size: data.len() as u64,
        hash: blake3::hash(data).to_hex().to_string(),
        sender_name: "laptop".into(),
        sender_id: "c0ffee000001".into(),
        offset: have as u64,
    };
    store.save(&record).expect("job record");
    let part = store.partial_path(&record.job_id);
    std::fs::write(&part, &data[..have]).expect("partial file");
    for path in [part, store.record_path(&record.job_id)] {
        age_file(&path, age);
    }
    record.job_id
}

/// Set the modification time of `path` to `age` ago.
pub fn age_file(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - age))
        .expect("set the modification time");
}
