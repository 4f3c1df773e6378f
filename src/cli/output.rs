//! What the CLI shows. Three modes:
//! - `--json`: one JSON object per line on stdout, nothing else there;
//! - a terminal on stderr: progress bars that fit the terminal's width, and short lines
//!   above them;
//! - no terminal on stderr (a log file, CI, systemd): the same short lines, plain, with
//!   no bars and no escape sequences.
//!
//! Everything that came from the network (file names, display names, messages) is shown
//! through [`shown`], so a peer cannot put control characters on the user's terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peershare::proto::names::is_invisible_format;
use peershare::{Event, Outcome};

use super::human_bytes;

/// Text from a peer or a server, safe to print: control characters (escape sequences,
/// carriage returns, newlines) and the invisible format and bidi characters that can
/// make a name read as another (U+202E turns `invoice\u{202e}fdp.exe` into
/// "invoiceexe.pdf") are shown escaped, e.g. `\u{1b}`, `\u{202e}`.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A text from a peer (`send --text`) for a terminal: like [`shown`], but newlines and
/// tabs stay as they are.
pub fn shown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Terminal,
    Plain,
}

/// One progress bar, with what this run moved through it (for its rate and ETA).
struct Bar {
    bar: ProgressBar,
    /// Position when this run started it (a resumed download starts at its offset).
    from: u64,
    since: Instant,
}

pub struct Output {
    mode: Mode,
    multi: MultiProgress,
    bars: HashMap<String, Bar>,
    /// Display names of the other peers, by client ID (already made safe to show).
    names: HashMap<String, String>,
    /// Names of our uploads, by job ID.
    uploads: HashMap<peershare::JobId, String>,
    /// Offsets downloads started from in this run, by job ID (the first start counts).
    download_from: HashMap<peershare::JobId, u64>,
    started: Instant,
    files: u64,
    bytes: u64,
}

/// Width of the name column of a bar.
const LABEL: usize = 24;

impl Output {
    pub fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        let target = match mode {
            Mode::Terminal => ProgressDrawTarget::stderr(),
            Mode::Json | Mode::Plain => ProgressDrawTarget::hidden(),
        };
        Self::with_target(mode, target)
    }

    fn with_target(mode: Mode, target: ProgressDrawTarget) -> Self {
        Self {
            mode,
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            names: HashMap::new(),
            uploads: HashMap::new(),
            download_from: HashMap::new(),
            started: Instant::now(),
            files: 0,
            bytes: 0,
        }
    }

    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// Print one JSON object as a line on stdout.
    pub fn json_line(&self, value: &serde_json::Value) {
        println!("{value}");
    }

    /// A line for people on stderr (above the bars on a terminal); nothing in JSON mode.
    pub fn note(&self, text: &str) {
        match self.mode {
            Mode::Json => {}
            Mode::Terminal => {
                let _ = self.multi.println(text);
            }
            Mode::Plain => eprintln!("{text}"),
        }
    }

    /// Remember the display name of `peer`.
    pub fn name_peer(&mut self, peer: &str, name: &str) {
        let name = if name.is_empty() { peer } else { name };
        self.names.insert(peer.to_string(), shown(name));
    }

    /// How a peer is shown: its display name, or its client ID.
    pub fn peer_name(&self, peer: &str) -> String {
        self.names.get(peer).cloned().unwrap_or_else(|| shown(peer))
    }

    fn bar(&mut self, key: String, size: u64, label: String, from: u64) -> &mut Bar {
        let multi = &self.multi;
        self.bars.entry(key).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(size));
            // Fits 80 columns: 24 + 1 + bar + 1 + 11 + 1 + 11 + 1 + 18 characters, the bar
            // taking what the terminal has left.
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:24!} {wide_bar} {bytes:>11}/{total_bytes:<11} {msg:18!}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(truncate(&label, LABEL));
            bar.set_position(from);
            bar.enable_steady_tick(Duration::from_millis(200));
            Bar {
                bar,
                from,
                since: Instant::now(),
            }
        })
    }

    /// Move a bar; its rate and ETA count only what moved in this run.
    fn advance(&mut self, key: String, size: u64, label: String, position: u64) {
        let b = self.bar(key, size, label, position);
        b.bar.set_position(position);
        let secs = b.since.elapsed().as_secs_f64();
        let moved = position.saturating_sub(b.from);
        if secs > 0.0 && moved > 0 {
            let rate = moved as f64 / secs;
            let eta = Duration::from_secs_f64(size.saturating_sub(position) as f64 / rate);
            b.bar
                .set_message(format!("{}/s {}", human_bytes(rate as u64), clock(eta)));
        }
    }

    /// End a bar with its final state (done, declined, failed CODE, left …).
    fn end_bar(&mut self, key: &str, state: &str) -> bool {
        match self.bars.remove(key) {
            Some(b) => {
                b.bar.finish_with_message(state.to_string());
                true
            }
            None => false,
        }
    }

    /// Show one event.
    pub fn event(&mut self, event: &Event) {
        self.event_with(event, None);
    }

    /// Show one event; with `--json`, with one more field (`key`: `value`) when `extra`
    /// is given (what the command knows about the event beyond the library).
    pub fn event_with(&mut self, event: &Event, extra: Option<(&str, serde_json::Value)>) {
        // In every mode: `recv --json` without `--yes` still asks by name.
        if let Event::PeerJoined { peer, name } = event {
            self.name_peer(peer, name);
        }
        if self.mode == Mode::Json {
            if let Ok(mut value) = serde_json::to_value(event) {
                if let (Some((key, extra)), Some(fields)) = (extra, value.as_object_mut()) {
                    fields.insert(key.to_string(), extra);
                }
                self.json_line(&value);
            }
            return;
        }
        match event {
            Event::PeerJoined { .. } => {}
            Event::PeerLeft { peer } => {
                let who = self.peer_name(peer);
                let suffix = format!("/{peer}");
                let keys: Vec<String> = self
                    .bars
                    .keys()
                    .filter(|k| k.ends_with(&suffix))
                    .cloned()
                    .collect();
                for key in keys {
                    self.end_bar(&key, "recipient left");
                }
                self.note(&format!("{who} left the session"));
            }
            Event::Connection { peer, path, .. } => {
                let how = match path {
                    Some(peershare::rtc::path::PathKind::Relay) => "relayed through TURN",
                    Some(peershare::rtc::path::PathKind::Direct) => "direct",
                    None => "path unknown",
                };
                self.note(&format!("connected to {} ({how})", self.peer_name(peer)));
            }
            Event::ConnectionLost { peer, .. } => self.note(&format!(
                "connection to {} lost; its transfers resume when it is back",
                self.peer_name(peer)
            )),
            Event::SignalingLost { reason } => self.note(&format!(
                "lost the signaling server ({}); rejoining, transfers carry on",
                shown(reason)
            )),
            Event::SignalingReconnected {
                client_id,
                server,
                resumed,
            } => self.note(&if *resumed {
                format!("back on the signaling server {}", shown(server))
            } else {
                format!(
                    "back on the signaling server {} under a new client ID {}",
                    shown(server),
                    shown(client_id)
                )
            }),
            Event::UploadStarted { job_id, name, .. } => {
                self.uploads.insert(*job_id, shown(name));
            }
            Event::UploadProgress {
                job_id,
                peer,
                bytes,
                size,
                ..
            } => {
                let label = pair_label(&self.upload_name(job_id), &self.peer_name(peer));
                self.advance(format!("{job_id}/{peer}"), *size, label, *bytes);
            }
            Event::RecipientOutcome {
                job_id,
                peer,
                outcome,
                bytes_sent,
                ..
            } => {
                let state = match outcome {
                    Outcome::Delivered => {
                        self.files += 1;
                        self.bytes += bytes_sent;
                        "done".to_string()
                    }
                    Outcome::Declined => "declined".to_string(),
                    Outcome::Failed { code } => format!("failed {code}"),
                };
                let shown_bar = self.end_bar(&format!("{job_id}/{peer}"), &state);
                if !shown_bar || self.mode == Mode::Plain {
                    self.note(&format!(
                        "{} → {}: {state}",
                        self.upload_name(job_id),
                        self.peer_name(peer)
                    ));
                }
            }
            Event::UploadCompleted { name, outcomes, .. } => {
                let count = |f: fn(&Outcome) -> bool| outcomes.values().filter(|o| f(o)).count();
                let delivered = count(|o| matches!(o, Outcome::Delivered));
                let declined = count(|o| matches!(o, Outcome::Declined));
                let failed = count(|o| matches!(o, Outcome::Failed { .. }));
                let mut parts = vec![format!("delivered to {delivered}")];
                if declined > 0 {
                    parts.push(format!("declined by {declined}"));
                }
                if failed > 0 {
                    parts.push(format!("failed for {failed}"));
                }
                self.note(&format!("{}: {}", shown(name), parts.join(", ")));
            }
            // Said by the recipients' outcome lines and the closing line.
            Event::UploadFailed { .. } => {}
            Event::DownloadStarted {
                job_id,
                name,
                size,
                offset,
                ..
            } => {
                let first = *self.download_from.entry(*job_id).or_insert(*offset);
                if *offset > 0 && first == *offset {
                    self.note(&format!(
                        "resuming {} from {}",
                        shown(name),
                        human_bytes(*offset)
                    ));
                }
                // A restart after a lost connection starts a fresh rate and ETA.
                self.bars.remove(&job_id.to_string());
                self.bar(job_id.to_string(), *size, shown(name), *offset);
            }
            Event::DownloadProgress {
                job_id,
                name,
                bytes,
                size,
                ..
            } => self.advance(job_id.to_string(), *size, shown(name), *bytes),
            Event::DownloadCompleted {
                job_id,
                path,
                name,
                size,
                ..
            } => {
                let from = self.download_from.get(job_id).copied().unwrap_or(0);
                self.files += 1;
                self.bytes += size.saturating_sub(from);
                self.end_bar(&job_id.to_string(), "done");
                match path {
                    Some(p) => self.note(&format!(
                        "saved {} (BLAKE3 verified)",
                        shown(&p.display().to_string())
                    )),
                    None => self.note(&format!("received {} (BLAKE3 verified)", shown(name))),
                }
            }
            Event::DownloadFailed {
                job_id,
                name,
                code,
                message,
                ..
            } => {
                if let Some(id) = job_id {
                    self.end_bar(&id.to_string(), &format!("failed {code}"));
                }
                self.note(&format!(
                    "{}: error {code}: {}",
                    shown(name),
                    shown(message)
                ));
            }
            Event::DownloadSkipped { name, path, .. } => self.note(&format!(
                "already have {} ({}, same size and BLAKE3): not downloaded",
                shown(name),
                shown(&path.display().to_string())
            )),
            Event::DownloadCancelled { job_id, name, .. } => {
                self.end_bar(&job_id.to_string(), "cancelled");
                self.note(&format!("{}: cancelled", shown(name)));
            }
            Event::Error { code, message, .. } => {
                self.note(&format!("error {code}: {}", shown(message)))
            }
            Event::PeerAuthFailed {
                peer,
                name,
                code,
                message,
                ..
            } => self.note(&format!(
                "{} ({peer}) did not authenticate: error {code}: {}",
                shown(name),
                shown(message)
            )),
            Event::CodeBurnt { failures } => self.note(&format!(
                "{failures} failed attempts to authenticate: the code is burnt, nobody new \
                 can join with it"
            )),
            Event::DownloadGroupEnded {
                label,
                sender,
                files,
                completed,
                failed,
                cancelled,
                ..
            } if *files > 1 => {
                let what = match label {
                    Some(label) => format!("{} ({files} files)", shown(label)),
                    None => format!("{files} files"),
                };
                let mut parts = vec![format!("{completed} received")];
                if *failed > 0 {
                    parts.push(format!("{failed} failed"));
                }
                if *cancelled > 0 {
                    parts.push(format!("{cancelled} cancelled or declined"));
                }
                self.note(&format!(
                    "{what} from {}: {}",
                    self.peer_name(sender),
                    parts.join(", ")
                ));
            }
            // A single file's share says nothing its own lines did not; a sender's
            // shares end in the closing line.
            Event::DownloadGroupEnded { .. }
            | Event::UploadGroupEnded { .. }
            | Event::FileUploadStarted { .. }
            | Event::DownloadAvailable { .. }
            | Event::UploadCancelled { .. } => {}
        }
    }

    fn upload_name(&self, job_id: &peershare::JobId) -> String {
        self.uploads
            .get(job_id)
            .cloned()
            .unwrap_or_else(|| job_id.to_string())
    }

    /// The closing line: files and bytes this run moved, its time and average rate.
    pub fn summary(&self, verb: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        };
        self.note(&format!(
            "{verb} {} file{}, {} in {:.1} s ({}/s)",
            self.files,
            if self.files == 1 { "" } else { "s" },
            human_bytes(self.bytes),
            secs,
            human_bytes(rate as u64)
        ));
    }

    /// Remove all bars from the terminal.
    pub fn clear(&mut self) {
        for (_, b) in self.bars.drain() {
            b.bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// `m:ss` or `h:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `FILE → RECIPIENT` in at most [`LABEL`] columns: both stay recognisable (the
/// recipient keeps up to 8 columns, the file the rest).
fn pair_label(file: &str, peer: &str) -> String {
    let arrow = " → ";
    let room = LABEL - arrow.chars().count();
    let (f, p) = (file.chars().count(), peer.chars().count());
    if f + p <= room {
        return format!("{file}{arrow}{peer}");
    }
    let peer_cols = p.min(8).max(room.saturating_sub(f));
    let file_cols = room - peer_cols.min(room);
    format!(
        "{}{arrow}{}",
        truncate(file, file_cols),
        truncate(peer, peer_cols)
    )
}

/// At most `max` characters, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_control_characters_are_escaped() {
        assert_eq!(shown("a\u{1b}[31mb\r\n"), "a\\u{1b}[31mb\\r\\n");
        assert_eq!(shown("photo é.jpg"), "photo é.jpg");
        assert_eq!(shown("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(shown("a\u{2066}b\u{200b}c"), "a\\u{2066}b\\u{200b}c");
    }

    #[test]
    fn shown_text_keeps_newlines_and_tabs_and_escapes_the_rest() {
        assert_eq!(shown_text("a\tb\nc\u{1b}[2J\r"), "a\tb\nc\\u{1b}[2J\\r");
        assert_eq!(shown_text("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn truncate_long_label_ends_with_ellipsis() {
        assert_eq!(truncate("short", 24), "short");
        let cut = truncate(&"x".repeat(40), 24);
        assert_eq!(cut.chars().count(), 24);
        assert!(cut.ends_with('…'));
    }

    /// An 80-column terminal that records what is drawn.
    #[derive(Debug, Default, Clone)]
    struct Screen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Screen {
        fn record(&self, s: &str) -> std::io::Result<()> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend(s.split('\n').map(str::to_string));
            }
            Ok(())
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.record(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.record(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_bars_fit_80_columns_name_file_and_recipient_and_end_with_state() {
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let mut out = Output::with_target(Mode::Terminal, target);
        let (job_id, file_id) = (peershare::JobId::new(), peershare::FileId::new());
        let size = 3 << 30;
        out.event(&Event::PeerJoined {
            peer: "c0ffee000001".into(),
            name: "a-very-long-display-name-of-the-recipient-laptop".into(),
        });
        out.event(&Event::UploadStarted {
            job_id,
            file_id,
            name: "quarterly-report-final-version-2.pdf".into(),
            size,
            path: None,
        });
        for bytes in [1 << 20, 1 << 30, 2 << 30] {
            out.event(&Event::UploadProgress {
                job_id,
                file_id,
                name: "quarterly-report-final-version-2.pdf".into(),
                peer: "c0ffee000001".into(),
                bytes,
                size,
            });
        }
        out.event(&Event::RecipientOutcome {
            job_id,
            file_id,
            name: "quarterly-report-final-version-2.pdf".into(),
            size,
            peer: "c0ffee000001".into(),
            outcome: Outcome::Delivered,
            bytes_sent: size,
        });
        let lines = screen.0.lock().map(|l| l.clone()).unwrap_or_default();
        let bars: Vec<&String> = lines.iter().filter(|l| l.contains(" → ")).collect();
        assert!(!bars.is_empty(), "{lines:#?}");
        for line in &bars {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line:?}",
                line.chars().count()
            );
            assert!(line.starts_with("quarterly-re… → a-very-…"), "{line:?}");
        }
        assert!(
            bars.last().is_some_and(|l| l.trim_end().ends_with("done")),
            "{bars:#?}"
        );
    }

    #[test]
    fn pair_label_keeps_both_names_within_label_width() {
        assert_eq!(pair_label("a.txt", "bob"), "a.txt → bob");
        let l = pair_label("quarterly-report-final-version-2.pdf", "a-very-long-name");
        assert_eq!(l, "quarterly-re… → a-very-…");
        assert_eq!(l.chars().count(), LABEL);
        let l = pair_label("x.bin", "a-very-long-display-name");
        assert_eq!(l, "x.bin → a-very-long-dis…");
        assert_eq!(l.chars().count(), LABEL);
    }

    #[test]
    fn clock_formats_minutes_and_hours() {
        assert_eq!(clock(Duration::from_secs(42)), "0:42");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
