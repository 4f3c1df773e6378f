//! Durable checkpoints of a download in progress, taken off the writer's path.
//!
//! A checkpoint makes the partial file durable up to an offset (`fdatasync`) and then
//! stores that offset in the job record, so a resume never trusts bytes that are not
//! on disk. Taken inline, every `fdatasync` stalled the writer for tens of
//! milliseconds while the network kept delivering: the queues in front of it filled
//! (recipient RSS up to 88 MiB) and the sender stopped (b/a 0.61 → 0.91 without the
//! stalls; docs/PERFORMANCE.md). A [`Checkpointer`] runs them on a thread of its own:
//! the writer only asks for "durable up to X" and goes on writing; requests that arrive
//! while a sync runs coalesce into one.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::store::{JobRecord, JobStore};

#[derive(Default)]
struct Shared {
    /// The highest offset asked for and not yet taken by the thread.
    wanted: Option<u64>,
    /// No more requests: the thread exits once `wanted` is served.
    closed: bool,
    /// The first failure; every later request reports it.
    failed: Option<String>,
}

type Slot = Arc<(Mutex<Shared>, Condvar)>;

/// Background checkpoints of one partial file.
pub struct Checkpointer {
    slot: Slot,
    thread: Option<JoinHandle<JobRecord>>,
}

impl Checkpointer {
    /// Start the checkpoint thread for `file` (a handle to the partial file at `path`),
    /// whose job is described by `record`. `on_durable` is told each offset that became
    /// durable and recorded.
    pub fn spawn(
        file: File,
        path: PathBuf,
        store: JobStore,
        mut record: JobRecord,
        on_durable: impl Fn(u64) + Send + 'static,
    ) -> Result<Self> {
        let slot: Slot = Arc::default();
        let thread_slot = slot.clone();
        let thread = std::thread::Builder::new()
            .name("peershare-checkpoint".into())
            .spawn(move || {
                while let Some(offset) = next_request(&thread_slot) {
                    let done = file
                        .sync_data()
                        .map_err(|e| Error::SaveFailed(format!("{}: {e}", path.display())))
                        .and_then(|()| {
                            record.offset = offset;
                            store.save(&record)
                        });
                    match done {
                        Ok(()) => on_durable(offset),
                        Err(e) => {
                            // Kept as the detail of the `SaveFailed` reported later.
                            let detail = match e {
                                Error::SaveFailed(detail) => detail,
                                other => other.to_string(),
                            };
                            lock(&thread_slot).failed = Some(detail);
                            break;
                        }
                    }
                }
                record
            })
            .map_err(|e| Error::SaveFailed(format!("checkpoint thread: {e}")))?;
        Ok(Self {
            slot,
            thread: Some(thread),
        })
    }

    /// Ask for the file to be made durable up to `offset` (everything written before
    /// this call). Returns at once; fails if an earlier checkpoint failed.
    pub fn request(&self, offset: u64) -> Result<()> {
        let (_, wake) = &*self.slot;
        let mut s = lock(&self.slot);
        if let Some(e) = &s.failed {
            return Err(Error::SaveFailed(e.clone()));
        }
        s.wanted = Some(s.wanted.map_or(offset, |w| w.max(offset)));
        wake.notify_one();
        Ok(())
    }

    /// Serve the pending request, stop the thread, and return the record as last
    /// stored (its `offset` is what is durable), or the first failure.
    pub fn finish(mut self) -> Result<JobRecord> {
        self.close();
        let record = self
            .thread
            .take()
            .ok_or_else(|| Error::SaveFailed("checkpoint thread already joined".into()))?
            .join()
            .map_err(|_| Error::SaveFailed("checkpoint thread panicked".into()))?;
        match lock(&self.slot).failed.take() {
            Some(e) => Err(Error::SaveFailed(e)),
            None => Ok(record),
        }
    }

    fn close(&self) {
        let (_, wake) = &*self.slot;
        lock(&self.slot).closed = true;
        wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Not finished (the writer failed): wait for the thread too, so that no record
        // is written after the caller has moved on (and perhaps removed the job's files).
        self.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Shared> {
    slot.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The next offset to make durable, or `None` once closed with nothing pending.
fn next_request(slot: &Slot) -> Option<u64> {
    let (_, wake) = &**slot;
    let mut s = lock(slot);
    loop {
        if let Some(offset) = s.wanted.take() {
            return Some(offset);
        }
        if s.closed {
            return None;
        }
        s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ids::{FileId, JobId};
    use crate::store::RECORD_VERSION;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn record() -> JobRecord {
        JobRecord {
            version: RECORD_VERSION,
            job_id: JobId::new(),
            file_id: FileId::new(),
            name: "a.bin".into(),
            size: 10,
            hash: "00".repeat(32),
            sender_name: "s".into(),
            sender_id: "c1".into(),
            offset: 0,
        }
    }

    /// A stored job with an empty partial file, and a checkpointer for it.
    struct Job {
        _dir: tempfile::TempDir,
        store: JobStore,
        rec: JobRecord,
        file: File,
    }

    fn job() -> Job {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let rec = record();
        let file = File::create(store.partial_path(&rec.job_id)).unwrap();
        store.save(&rec).unwrap();
        Job {
            _dir: dir,
            store,
            rec,
            file,
        }
    }

    impl Job {
        fn checkpointer(&self, on_durable: impl Fn(u64) + Send + 'static) -> Checkpointer {
            Checkpointer::spawn(
                self.file.try_clone().unwrap(),
                self.store.partial_path(&self.rec.job_id),
                self.store.clone(),
                self.rec.clone(),
                on_durable,
            )
            .unwrap()
        }

        fn stored_offset(&self) -> u64 {
            self.store.load(&self.rec.job_id).unwrap().offset
        }
    }

    #[test]
    fn checkpointer_requests_store_the_latest_offset() {
        let mut job = job();
        let durable = Arc::new(AtomicU64::new(0));
        let cp = job.checkpointer({
            let durable = durable.clone();
            move |o| durable.store(o, Ordering::Release)
        });
        job.file.write_all(b"12345").unwrap();
        cp.request(5).unwrap();
        job.file.write_all(b"67890").unwrap();
        cp.request(10).unwrap();
        let last = cp.finish().unwrap();
        assert_eq!(last.offset, 10);
        assert_eq!(durable.load(Ordering::Acquire), 10);
        assert_eq!(job.stored_offset(), 10);
    }

    #[test]
    fn checkpointer_dropped_with_a_request_pending_has_stored_it_on_return() {
        let mut job = job();
        let cp = job.checkpointer(|_| {});
        job.file.write_all(b"1234567").unwrap();
        cp.request(7).unwrap();
        drop(cp);
        // Nothing runs after the drop: the pending request was served before it returned.
        assert_eq!(job.stored_offset(), 7);
    }

    #[test]
    fn checkpointer_without_requests_finishes_with_the_record_unchanged() {
        let job = job();
        let cp = job.checkpointer(|_| {});
        assert_eq!(cp.finish().unwrap(), job.rec);
    }
}
