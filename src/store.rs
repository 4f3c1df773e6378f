//! Durable download jobs: a small JSON record next to each partial file, written
//! atomically (temporary file, fsync, rename, fsync of the directory) and only after the
//! data it describes was synced, so after a crash the recorded offset never exceeds the
//! bytes really on disk.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::proto::ids::{FileId, JobId};

/// Record format version.
pub const RECORD_VERSION: u32 = 1;
const PREFIX: &str = ".peershare-";
/// The suffix of a record being written (renamed over the record once synced).
const TMP_SUFFIX: &str = ".json.tmp";
/// Largest record file read (a real one is a few hundred bytes); longer is unreadable.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// One persisted download job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub version: u32,
    pub job_id: JobId,
    /// File ID of the offer the job was started from (a restarted sender offers the same
    /// content under a new ID).
    pub file_id: FileId,
    /// The offered name (untrusted; sanitized when published).
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the whole file, hex.
    pub hash: String,
    /// Display name and client ID of the sender when the job started.
    pub sender_name: String,
    pub sender_id: String,
    /// Bytes durably written (synced) to the partial file.
    pub offset: u64,
}

/// Name of the partial data file of a job.
pub fn partial_name(job_id: &JobId) -> String {
    format!("{PREFIX}{job_id}.part")
}

/// Name of the record file of a job.
pub fn record_name(job_id: &JobId) -> String {
    format!("{PREFIX}{job_id}.json")
}

/// The persisted jobs of one output directory.
#[derive(Debug, Clone)]
pub struct JobStore {
    dir: PathBuf,
}

impl JobStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partial_path(&self, job_id: &JobId) -> PathBuf {
        self.dir.join(partial_name(job_id))
    }

    pub fn record_path(&self, job_id: &JobId) -> PathBuf {
        self.dir.join(record_name(job_id))
    }

    /// Write `record` atomically and durably.
    pub fn save(&self, record: &JobRecord) -> Result<()> {
        let path = self.record_path(&record.job_id);
        let tmp = self.temp_path(&record.job_id);
        let body = serde_json::to_vec(record)
            .map_err(|e| Error::SaveFailed(format!("encoding job record: {e}")))?;
        let io = |e: std::io::Error| Error::SaveFailed(format!("{}: {e}", path.display()));
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The temporary file a record is written to before it is renamed into place.
    pub fn temp_path(&self, job_id: &JobId) -> PathBuf {
        self.dir.join(format!("{PREFIX}{job_id}{TMP_SUFFIX}"))
    }

    /// Load one job.
    pub fn load(&self, job_id: &JobId) -> Option<JobRecord> {
        let mut body = Vec::new();
        File::open(self.record_path(job_id))
            .ok()?
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut body)
            .ok()?;
        if body.len() as u64 > MAX_RECORD_BYTES {
            return None;
        }
        serde_json::from_slice::<JobRecord>(&body)
            .ok()
            .filter(|r| r.version == RECORD_VERSION && r.job_id == *job_id)
    }

    /// Every job that has any file in the directory, complete or not: a partial file
    /// and its record, or an orphan (a partial file without a record, a record without
    /// its partial file or that cannot be read, a stray temporary record), by job ID.
    /// Files whose name is not exactly a job's are not ours and are left out.
    pub fn scan(&self) -> std::io::Result<Vec<JobFiles>> {
        let mut jobs: std::collections::BTreeMap<JobId, JobFiles> = Default::default();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((id, kind)) = parse_file_name(&name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let job = jobs.entry(id).or_insert_with(|| JobFiles {
                job_id: id,
                record: RecordFile::Missing,
                part: None,
                temp: false,
                modified: None,
            });
            match kind {
                FileKind::Part => job.part = Some(meta.len()),
                FileKind::Record => job.record = RecordFile::Unreadable,
                FileKind::Temp => job.temp = true,
            }
            if let Ok(t) = meta.modified() {
                job.modified = Some(job.modified.map_or(t, |m| m.max(t)));
            }
        }
        let mut jobs: Vec<JobFiles> = jobs.into_values().collect();
        for job in &mut jobs {
            if job.record == RecordFile::Unreadable
                && let Some(record) = self.load(&job.job_id)
            {
                job.record = RecordFile::Found(record);
            }
        }
        Ok(jobs)
    }

    /// Remove every file of a job (partial data, record, temporary record); the paths
    /// removed, or the first failure (a file that is not there is no failure).
    pub fn remove_files(&self, job_id: &JobId) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for path in [
            self.partial_path(job_id),
            self.record_path(job_id),
            self.temp_path(job_id),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Remove the temporary records (`.peershare-JOB.json.tmp`) a crash in the middle of
    /// [`JobStore::save`] left, except those of `running` jobs (whose checkpoint may be
    /// writing one now). The record itself is never touched: the rename that replaces it
    /// is atomic, so it holds the last complete version. Returns the paths removed.
    pub fn remove_stray_temps(&self, running: &[JobId]) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((id, FileKind::Temp)) = parse_file_name(&name) else {
                continue;
            };
            if running.contains(&id) {
                continue;
            }
            removed.extend(remove_temp(&entry));
        }
        removed
    }

    /// In one pass over the directory, what a download starting there needs: the
    /// readable records of jobs not in `running` (partial downloads of earlier runs),
    /// sorted by name, after the stray temporary records of jobs not in `running` are
    /// removed. Records of running jobs are not read.
    pub fn scan_for_resume(&self, running: &HashSet<JobId>) -> Vec<JobRecord> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((id, kind)) = parse_file_name(&name) else {
                continue;
            };
            if running.contains(&id) {
                continue;
            }
            match kind {
                FileKind::Temp => {
                    remove_temp(&entry);
                }
                FileKind::Record => jobs.extend(self.load(&id)),
                FileKind::Part => {}
            }
        }
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        jobs
    }

    /// Every readable job record in the directory (unreadable ones are skipped).
    pub fn list(&self) -> Vec<JobRecord> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut jobs: Vec<JobRecord> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_prefix(PREFIX)?.strip_suffix(".json")?;
                self.load(&id.parse().ok()?)
            })
            .collect();
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        jobs
    }

    /// Remove a job's record and partial data.
    pub fn remove(&self, job_id: &JobId) {
        let _ = fs::remove_file(self.partial_path(job_id));
        let _ = fs::remove_file(self.record_path(job_id));
    }

    /// Remove only the record (after the partial file was published).
    pub fn remove_record(&self, job_id: &JobId) {
        let _ = fs::remove_file(self.record_path(job_id));
    }
}

/// What a download directory holds for one job ID ([`JobStore::scan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFiles {
    pub job_id: JobId,
    /// The record `.peershare-JOB.json`.
    pub record: RecordFile,
    /// The length of the partial file `.peershare-JOB.part`, if there is one.
    pub part: Option<u64>,
    /// Whether a temporary record `.peershare-JOB.json.tmp` is there.
    pub temp: bool,
    /// The newest modification time of these files.
    pub modified: Option<SystemTime>,
}

impl JobFiles {
    /// Whether both the partial file and a readable record are there (a job that a
    /// `recv` can resume); anything else is an orphan.
    pub fn is_complete(&self) -> bool {
        self.part.is_some() && matches!(self.record, RecordFile::Found(_))
    }
}

/// The state of a job's record file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFile {
    Found(JobRecord),
    /// There, but not a record of this job in this format (or too long).
    Unreadable,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Part,
    Record,
    Temp,
}

/// The job and kind of one of our file names; `None` for any other name (also for a
/// job ID not written the way [`JobId`]'s `Display` writes it).
/// Remove a stray temporary record; its path if it was removed.
fn remove_temp(entry: &fs::DirEntry) -> Option<PathBuf> {
    let path = entry.path();
    if entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(&path).is_ok() {
        tracing::info!(path = %path.display(), "removed a stray temporary job record");
        return Some(path);
    }
    None
}

fn parse_file_name(name: &str) -> Option<(JobId, FileKind)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (id, kind) = if let Some(id) = rest.strip_suffix(TMP_SUFFIX) {
        (id, FileKind::Temp)
    } else if let Some(id) = rest.strip_suffix(".json") {
        (id, FileKind::Record)
    } else {
        (rest.strip_suffix(".part")?, FileKind::Part)
    };
    let job_id: JobId = id.parse().ok()?;
    (job_id.to_string() == id).then_some((job_id, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64) -> JobRecord {
        JobRecord {
            version: RECORD_VERSION,
            job_id: JobId::new(),
            file_id: FileId::new(),
            name: "a.bin".into(),
            size: 100,
            hash: "0".repeat(64),
            sender_name: "s".into(),
            sender_id: "c1".into(),
            offset,
        }
    }

    #[test]
    fn store_save_load_list_remove_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let r = record(42);
        store.save(&r).unwrap();
        assert_eq!(store.load(&r.job_id), Some(r.clone()));
        let mut r2 = r.clone();
        r2.offset = 50;
        store.save(&r2).unwrap();
        assert_eq!(store.list(), vec![r2.clone()]);
        store.remove(&r.job_id);
        assert!(store.list().is_empty());
    }

    #[test]
    fn store_ignores_garbage_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        std::fs::write(dir.path().join(".peershare-nonsense.json"), b"{").unwrap();
        let id = JobId::new();
        std::fs::write(dir.path().join(record_name(&id)), b"{\"version\":1}").unwrap();
        assert!(store.list().is_empty());
    }

    #[test]
    fn store_scan_reports_complete_jobs_and_every_kind_of_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let full = record(42);
        store.save(&full).unwrap();
        std::fs::write(store.partial_path(&full.job_id), [0u8; 50]).unwrap();
        let no_part = record(7);
        store.save(&no_part).unwrap();
        let (only_part, garbage, only_temp) = (JobId::new(), JobId::new(), JobId::new());
        std::fs::write(store.partial_path(&only_part), [0u8; 9]).unwrap();
        std::fs::write(store.record_path(&garbage), b"{").unwrap();
        std::fs::write(store.temp_path(&only_temp), b"{").unwrap();
        // Not ours: other names, a job ID in another spelling, a directory.
        let braced = format!("{{{}}}", JobId::new());
        for name in [
            "a.txt",
            ".peershare-x.part",
            &format!(".peershare-{braced}.part"),
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(store.partial_path(&JobId::new())).unwrap();

        let jobs = store.scan().unwrap();
        let find = |id: &JobId| jobs.iter().find(|j| j.job_id == *id).unwrap();
        assert_eq!(jobs.len(), 5, "{jobs:#?}");
        assert_eq!(find(&full.job_id).record, RecordFile::Found(full.clone()));
        assert_eq!(find(&full.job_id).part, Some(50));
        assert!(find(&full.job_id).is_complete());
        assert_eq!(find(&no_part.job_id).part, None);
        assert!(!find(&no_part.job_id).is_complete());
        assert_eq!(find(&only_part).record, RecordFile::Missing);
        assert_eq!(find(&only_part).part, Some(9));
        assert_eq!(find(&garbage).record, RecordFile::Unreadable);
        assert!(find(&only_temp).temp);
        assert!(jobs.iter().all(|j| j.modified.is_some()));
    }

    #[test]
    fn store_remove_files_deletes_part_record_and_temp_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let r = record(1);
        store.save(&r).unwrap();
        std::fs::write(store.partial_path(&r.job_id), b"x").unwrap();
        std::fs::write(store.temp_path(&r.job_id), b"{").unwrap();
        let removed = store.remove_files(&r.job_id).unwrap();
        assert_eq!(
            removed,
            [
                store.partial_path(&r.job_id),
                store.record_path(&r.job_id),
                store.temp_path(&r.job_id)
            ]
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(
            store.remove_files(&r.job_id).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn store_remove_stray_temps_spares_running_jobs_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let (stray, running) = (record(5), record(6));
        for r in [&stray, &running] {
            store.save(r).unwrap();
            std::fs::write(store.temp_path(&r.job_id), b"{\"half").unwrap();
        }
        let removed = store.remove_stray_temps(&[running.job_id]);
        assert_eq!(removed, [store.temp_path(&stray.job_id)]);
        assert!(store.temp_path(&running.job_id).exists());
        // The records themselves are kept and still load.
        assert_eq!(store.load(&stray.job_id), Some(stray));
        assert_eq!(store.load(&running.job_id), Some(running));
    }

    #[test]
    fn store_load_oversized_record_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let r = record(3);
        let mut body = serde_json::to_vec(&r).unwrap();
        body.extend(std::iter::repeat_n(b' ', MAX_RECORD_BYTES as usize));
        std::fs::write(store.record_path(&r.job_id), body).unwrap();
        assert_eq!(store.load(&r.job_id), None);
    }
}
