//! `peershare partials`: the partial downloads `recv` left in a directory (the hidden
//! `.peershare-JOB.part` / `.peershare-JOB.json` pairs of `peershare::store`), listed or
//! removed. Orphans (a partial file without its record, a record without its partial
//! file or that cannot be read, a temporary record left by a crash) are listed and
//! removed like the rest.
//!
//! The listing and what was removed go to stdout (a table, or one JSON object per line
//! with `--json`); failures are the usual `error CODE: message` on stderr.

use std::path::Path;
use std::time::{Duration, SystemTime};

use peershare::Error;
use peershare::codes;
use peershare::store::{JobFiles, JobStore, RecordFile};

use super::output::{Output, shown};
use super::{Exit, Fatal, human_bytes};
use crate::PartialsArgs;

/// Shortest start of a job ID that selects a job (an exact ID always does).
const MIN_PREFIX: usize = 4;

pub fn run(args: &PartialsArgs, out: &mut Output) -> Result<(), Fatal> {
    let store = JobStore::new(&args.out);
    let all = store.scan().map_err(|e| {
        Fatal::new(
            Exit::Usage,
            codes::STORAGE_ACCESS_DENIED,
            Error::StorageAccessDenied(format!("{}: {e}", args.out.display())).to_string(),
        )
    })?;
    let jobs = select(&all, &args.jobs, &args.out)?;
    let now = SystemTime::now();
    if !args.remove {
        list(&jobs, now, &args.out, out);
        return Ok(());
    }
    let mut failed = 0;
    let mut removed = 0;
    for job in &jobs {
        let row = Row::of(job, now);
        match store.remove_files(&job.job_id) {
            Ok(paths) => {
                removed += 1;
                if out.is_json() {
                    let files: Vec<String> =
                        paths.iter().map(|p| p.display().to_string()).collect();
                    out.json_line(&serde_json::json!({
                        "event": "removed",
                        "job_id": job.job_id,
                        "name": row.name,
                        "on_disk": row.on_disk,
                        "files": files,
                    }));
                } else {
                    println!(
                        "removed {} (job {}, {} on disk)",
                        row.label(),
                        job.job_id,
                        row.on_disk.map_or_else(|| "nothing".into(), human_bytes)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                let error = Error::StorageAccessDenied(format!(
                    "cannot remove the files of job {} in {}: {e}",
                    job.job_id,
                    args.out.display()
                ));
                eprintln!("{}", Fatal::from_error(&error).line());
            }
        }
    }
    if !out.is_json() {
        match removed {
            0 if failed == 0 => println!("no partial downloads in {}", shown_path(&args.out)),
            0 => {}
            n => println!(
                "removed {n} partial download{} from {}",
                if n == 1 { "" } else { "s" },
                shown_path(&args.out)
            ),
        }
    }
    if failed == 0 {
        return Ok(());
    }
    Err(Fatal::new(
        Exit::TransferFailed,
        codes::STORAGE_ACCESS_DENIED,
        Error::StorageAccessDenied(format!(
            "could not remove {failed} of {} partial downloads in {} (each named above)",
            jobs.len(),
            args.out.display()
        ))
        .to_string(),
    ))
}

/// The jobs the `JOB` arguments name (every job without any): each an exact job ID or
/// the start of exactly one.
fn select<'a>(
    all: &'a [JobFiles],
    wanted: &[String],
    dir: &Path,
) -> Result<Vec<&'a JobFiles>, Fatal> {
    if wanted.is_empty() {
        return Ok(all.iter().collect());
    }
    let mut chosen: Vec<&JobFiles> = Vec::new();
    for given in wanted {
        let key = given.trim().to_ascii_lowercase();
        let exact: Vec<&JobFiles> = all.iter().filter(|j| j.job_id.to_string() == key).collect();
        let hits: Vec<&JobFiles> = if !exact.is_empty() {
            exact
        } else if key.chars().count() < MIN_PREFIX {
            return Err(Fatal::new(
                Exit::Usage,
                codes::INVALID_ARGUMENT,
                format!(
                    "{} is too short to name a job: give its ID, or at least {MIN_PREFIX} of \
                     its first characters",
                    shown(given)
                ),
            ));
        } else {
            all.iter()
                .filter(|j| j.job_id.to_string().starts_with(&key))
                .collect()
        };
        match hits.as_slice() {
            [] => {
                return Err(Fatal::new(
                    Exit::Usage,
                    codes::INVALID_JOB,
                    Error::InvalidJob(format!(
                        "{}: no partial download in {} has it",
                        shown(given),
                        shown_path(dir)
                    ))
                    .to_string(),
                ));
            }
            [one] => {
                if !chosen.iter().any(|c| c.job_id == one.job_id) {
                    chosen.push(one);
                }
            }
            several => {
                let ids: Vec<String> = several.iter().map(|j| j.job_id.to_string()).collect();
                return Err(Fatal::new(
                    Exit::Usage,
                    codes::INVALID_ARGUMENT,
                    format!(
                        "{} starts several job IDs ({}): give more of it",
                        shown(given),
                        ids.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(chosen)
}

/// What is shown of one job.
struct Row {
    /// The offered name from the record (untrusted: escaped when shown as text).
    name: Option<String>,
    size: Option<u64>,
    /// Bytes durably on disk: the record's checkpoint (at most the partial file's
    /// length); for a partial file without a record, its length.
    on_disk: Option<u64>,
    percent: Option<u64>,
    age: Option<Duration>,
    /// Why this is not a resumable partial download, if it is not.
    orphan: Option<&'static str>,
    temp: bool,
}

impl Row {
    fn of(job: &JobFiles, now: SystemTime) -> Self {
        let record = match &job.record {
            RecordFile::Found(r) => Some(r),
            _ => None,
        };
        let on_disk = match (record, job.part) {
            (Some(r), Some(len)) => Some(r.offset.min(len)),
            (None, Some(len)) => Some(len),
            (_, None) => None,
        };
        let percent = match (record, on_disk) {
            (Some(r), Some(d)) if r.size > 0 => Some(percent(d, r.size)),
            _ => None,
        };
        let orphan = match (&job.record, job.part) {
            (RecordFile::Found(_), Some(_)) => None,
            (RecordFile::Found(_), None) => Some("no-partial-file"),
            (RecordFile::Unreadable, _) => Some("unreadable-record"),
            (RecordFile::Missing, Some(_)) => Some("no-record"),
            (RecordFile::Missing, None) => Some("temporary-record-only"),
        };
        Self {
            name: record.map(|r| r.name.clone()),
            size: record.map(|r| r.size),
            on_disk,
            percent,
            age: job
                .modified
                .map(|m| now.duration_since(m).unwrap_or_default()),
            orphan,
            temp: job.temp,
        }
    }

    /// The name column: the escaped name, and what is wrong with an orphan.
    fn label(&self) -> String {
        let mut label = self.name.as_deref().map(shown).unwrap_or_default();
        let why = match self.orphan {
            Some("no-partial-file") => Some("orphan: no partial file"),
            Some("unreadable-record") => Some("orphan: unreadable record"),
            Some("no-record") => Some("orphan: no record"),
            Some(_) => Some("orphan: only a temporary record"),
            None if self.temp => Some("and a stray temporary record"),
            None => None,
        };
        if let Some(why) = why {
            if !label.is_empty() {
                label.push(' ');
            }
            label.push_str(&format!("({why})"));
        }
        label
    }
}

fn list(jobs: &[&JobFiles], now: SystemTime, dir: &Path, out: &Output) {
    if out.is_json() {
        for job in jobs {
            let row = Row::of(job, now);
            out.json_line(&serde_json::json!({
                "event": "partial",
                "job_id": job.job_id,
                "name": row.name,
                "size": row.size,
                "on_disk": row.on_disk,
                "percent": row.percent,
                "age_secs": row.age.map(|a| a.as_secs()),
                "orphan": row.orphan,
                "stray_temp": row.temp,
            }));
        }
        return;
    }
    if jobs.is_empty() {
        println!("no partial downloads in {}", shown_path(dir));
        return;
    }
    println!(
        "{:<36}  {:>10}  {:>10}  {:>5}  {:>6}  NAME",
        "JOB", "SIZE", "ON DISK", "DONE", "AGE"
    );
    for job in jobs {
        let row = Row::of(job, now);
        let dash = || "-".to_string();
        println!(
            "{:<36}  {:>10}  {:>10}  {:>5}  {:>6}  {}",
            job.job_id,
            row.size.map_or_else(dash, human_bytes),
            row.on_disk.map_or_else(dash, human_bytes),
            row.percent.map_or_else(dash, |p| format!("{p} %")),
            row.age.map_or_else(dash, age),
            row.label()
        );
    }
}

/// `part` of `whole` in whole percent, rounded down (99 % until the last byte is there).
pub fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 100;
    }
    (u128::from(part.min(whole)) * 100 / u128::from(whole)) as u64
}

/// `45 s`, `12 min`, `3 h`, `2 d` (rounded down).
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

fn shown_path(p: &Path) -> String {
    shown(&p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peershare::store::{JobRecord, RECORD_VERSION};
    use peershare::{FileId, JobId};

    fn job(record: RecordFile, part: Option<u64>) -> JobFiles {
        JobFiles {
            job_id: JobId::new(),
            record,
            part,
            temp: false,
            modified: Some(SystemTime::UNIX_EPOCH),
        }
    }

    fn record(name: &str, size: u64, offset: u64) -> RecordFile {
        RecordFile::Found(JobRecord {
            version: RECORD_VERSION,
            job_id: JobId::new(),
            file_id: FileId::new(),
            name: name.into(),
            size,
            hash: "00".repeat(32),
            sender_name: "s".into(),
            sender_id: "c1".into(),
            offset,
        })
    }

    #[test]
    fn percent_rounds_down_and_caps_at_100() {
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(2, 3), 66);
        assert_eq!(percent(u64::MAX - 1, u64::MAX), 99);
        assert_eq!(percent(10, 10), 100);
        assert_eq!(percent(20, 10), 100);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn age_uses_the_largest_whole_unit() {
        assert_eq!(age(Duration::from_secs(45)), "45 s");
        assert_eq!(age(Duration::from_secs(60 * 12 + 59)), "12 min");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 1)), "3 h");
        assert_eq!(age(Duration::from_secs(2 * 86400 + 7)), "2 d");
    }

    #[test]
    fn row_on_disk_is_the_checkpoint_within_the_partial_file_and_orphans_say_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(90);
        let r = Row::of(&job(record("a.bin", 300, 100), Some(150)), now);
        assert_eq!(
            (r.size, r.on_disk, r.percent),
            (Some(300), Some(100), Some(33))
        );
        assert_eq!(r.age, Some(Duration::from_secs(90)));
        assert_eq!(r.label(), "a.bin");
        // A partial file shorter than its record claims: only what is there counts.
        let r = Row::of(&job(record("a.bin", 300, 100), Some(30)), now);
        assert_eq!((r.on_disk, r.percent), (Some(30), Some(10)));
        let r = Row::of(&job(record("b\u{1b}[2J.bin", 300, 100), None), now);
        assert_eq!((r.on_disk, r.percent), (None, None));
        assert_eq!(r.label(), "b\\u{1b}[2J.bin (orphan: no partial file)");
        let r = Row::of(&job(RecordFile::Missing, Some(77)), now);
        assert_eq!(
            (r.size, r.on_disk, r.orphan),
            (None, Some(77), Some("no-record"))
        );
        assert_eq!(r.label(), "(orphan: no record)");
        let r = Row::of(&job(RecordFile::Unreadable, Some(1)), now);
        assert_eq!(r.label(), "(orphan: unreadable record)");
        let mut only_temp = job(RecordFile::Missing, None);
        only_temp.temp = true;
        assert_eq!(
            Row::of(&only_temp, now).label(),
            "(orphan: only a temporary record)"
        );
    }

    #[test]
    fn select_takes_exact_ids_and_unique_prefixes_and_refuses_the_rest() {
        let jobs: Vec<JobFiles> = (0..3).map(|_| job(RecordFile::Missing, Some(1))).collect();
        let dir = Path::new("/d");
        let id = |i: usize| jobs[i].job_id.to_string();
        let picked = select(&jobs, &[id(1).to_uppercase(), id(1)], dir).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].job_id, jobs[1].job_id);
        // A unique prefix: the shortest start that only job 2 has (UUIDs are random).
        let prefix = (MIN_PREFIX..=36)
            .map(|n| id(2)[..n].to_string())
            .find(|p| {
                jobs.iter()
                    .filter(|j| j.job_id.to_string().starts_with(p))
                    .count()
                    == 1
            })
            .unwrap();
        assert_eq!(
            select(&jobs, &[prefix], dir).unwrap()[0].job_id,
            jobs[2].job_id
        );
        assert_eq!(select(&jobs, &[], dir).unwrap().len(), 3);
        let err = select(&jobs, &[id(0)[..3].to_string()], dir).unwrap_err();
        assert_eq!((err.exit, err.code), (Exit::Usage, codes::INVALID_ARGUMENT));
        // Two jobs that start the same way.
        let mut twins = vec![
            job(RecordFile::Missing, Some(1)),
            job(RecordFile::Missing, None),
        ];
        twins[0].job_id = "aaaa0000-0000-4000-8000-000000000001".parse().unwrap();
        twins[1].job_id = "aaaa0000-0000-4000-8000-000000000002".parse().unwrap();
        let err = select(&twins, &["aaaa".into()], dir).unwrap_err();
        assert_eq!((err.exit, err.code), (Exit::Usage, codes::INVALID_ARGUMENT));
        assert!(err.message.contains("several"), "{}", err.message);
        let err = select(&twins, &["aaab".into()], dir).unwrap_err();
        assert_eq!((err.exit, err.code), (Exit::Usage, codes::INVALID_JOB));
    }
}
