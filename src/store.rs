//! Durable download jobs: a small JSON record next to each partial file, written
//! atomically (temporary file, fsync, rename, fsync of the directory) and only after the
//! data it describes was synced, so after a crash the recorded offset never exceeds the
//! bytes really on disk.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::proto::ids::{FileId, JobId};

/// Record format version.
pub const RECORD_VERSION: u32 = 1;
const PREFIX: &str = ".peershare-";

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
        let tmp = self
            .dir
            .join(format!("{}.tmp", record_name(&record.job_id)));
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

    /// Load one job.
    pub fn load(&self, job_id: &JobId) -> Option<JobRecord> {
        let body = fs::read(self.record_path(job_id)).ok()?;
        serde_json::from_slice::<JobRecord>(&body)
            .ok()
            .filter(|r| r.version == RECORD_VERSION && r.job_id == *job_id)
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
}
