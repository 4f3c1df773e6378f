//! What the CLI shows: JSON lines on stdout (`--json`), or progress bars and short
//! messages on stderr.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peershare::Event;

pub struct Output {
    json: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let target = if json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            json,
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print one JSON object as a line on stdout.
    pub fn json_line(&self, value: &serde_json::Value) {
        println!("{value}");
    }

    /// A message for people (stderr, above the bars); nothing in JSON mode.
    pub fn note(&self, text: &str) {
        if !self.json {
            let _ = self.multi.println(text);
        }
    }

    fn bar(&mut self, key: String, size: u64, label: String) -> &ProgressBar {
        let multi = &self.multi;
        self.bars.entry(key).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(label);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        })
    }

    fn finish_bar(&mut self, key: &str, message: String) {
        if let Some(bar) = self.bars.remove(key) {
            bar.finish_with_message(message);
        }
    }

    /// Show one event.
    pub fn event(&mut self, event: &Event) {
        if self.json {
            if let Ok(value) = serde_json::to_value(event) {
                self.json_line(&value);
            }
            return;
        }
        match event {
            Event::Connection { peer, path, .. } => {
                let how = match path {
                    Some(peershare::rtc::path::PathKind::Relay) => "relayed through TURN",
                    Some(peershare::rtc::path::PathKind::Direct) => "direct",
                    None => "path unknown",
                };
                self.note(&format!("connected to {peer} ({how})"))
            }
            Event::UploadProgress {
                job_id,
                peer,
                bytes,
                size,
                ..
            } => {
                let label = format!("→ {peer}");
                self.bar(format!("{job_id}/{peer}"), *size, label)
                    .set_position(*bytes);
            }
            Event::RecipientOutcome {
                job_id,
                peer,
                outcome,
                ..
            } => {
                self.finish_bar(&format!("{job_id}/{peer}"), format!("{peer}: {outcome:?}"));
            }
            Event::UploadCompleted { name, .. } => self.note(&format!("{name}: delivered")),
            Event::UploadFailed {
                name,
                code,
                message,
                ..
            } => self.note(&format!("{name}: error {code}: {message}")),
            Event::DownloadStarted {
                job_id,
                name,
                size,
                offset,
                ..
            } => {
                let bar = self.bar(job_id.to_string(), *size, name.clone());
                bar.set_position(*offset);
                bar.reset_eta();
            }
            Event::DownloadProgress {
                job_id,
                name,
                bytes,
                size,
                ..
            } => {
                self.bar(job_id.to_string(), *size, name.clone())
                    .set_position(*bytes);
            }
            Event::DownloadCompleted {
                job_id, path, name, ..
            } => {
                let shown = path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| name.clone());
                self.finish_bar(&job_id.to_string(), format!("{name} ✓"));
                self.note(&format!("saved {shown} (BLAKE3 verified)"));
            }
            Event::DownloadFailed {
                job_id,
                name,
                code,
                message,
                ..
            } => {
                if let Some(id) = job_id {
                    self.finish_bar(&id.to_string(), format!("{name} ✗"));
                }
                self.note(&format!("{name}: error {code}: {message}"));
            }
            Event::Error { code, message, .. } => self.note(&format!("error {code}: {message}")),
            _ => {}
        }
    }

    /// Remove all bars from the terminal.
    pub fn clear(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
