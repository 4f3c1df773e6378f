//! Writing a download's partial file, with direct I/O where the filesystem allows it.
//!
//! Buffered writes copy every received byte into the page cache (allocating, charging
//! and later writing back each page); on a recipient that shares its cores with the
//! network stack that copy was the largest single cost of a transfer (a fifth of the
//! recipient's CPU in a profile, docs/PERFORMANCE.md). With `O_DIRECT` the data goes
//! from one aligned staging buffer straight to the device, and a multi-gigabyte download
//! no longer evicts the rest of the page cache.
//!
//! Direct I/O needs the memory, the file offset and the length aligned to the logical
//! block size. The writer stages data in a 1 MiB aligned buffer and writes whole
//! buffers; the unaligned tail at the end goes through a second, buffered handle. A
//! filesystem that refuses `O_DIRECT` (at open or at the first write) gets buffered
//! writes, as does a resume from an unaligned offset.
//!
//! Holes: a whole aligned block of zeros (4 KiB at a multiple of 4 KiB in the file) is
//! not written but skipped, and the file's length set past it, so the filesystem leaves
//! a hole where it supports them (ext4, XFS, Btrfs, tmpfs …) instead of allocating
//! blocks of zeros: a sparse file arrives sparse. A hole reads back as zeros, so the
//! file holds exactly the received bytes; the BLAKE3 verification hashes the received
//! bytes as before. Only blocks this writer is the first to fill are skipped (at or past
//! the file's length when it was opened): a block that may hold older bytes is written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment for direct I/O: covers 512-byte and 4 KiB logical blocks.
const ALIGN: usize = 4096;
/// Size of the aligned staging buffer (one direct write).
const STAGE: usize = 1024 * 1024;

/// Sequential writer of a partial file from a start offset.
pub struct PartialWriter {
    file: File,
    path: PathBuf,
    /// `Some` while writing with `O_DIRECT`: backing memory and the aligned start in it.
    stage: Option<Stage>,
    /// Bytes that are in the file (excluding staged ones), holes included.
    flushed: u64,
    /// Blocks wholly at or past this offset were never written before: zeros there may
    /// be left as holes.
    fresh_from: u64,
    /// The file's length as this writer made it.
    len: u64,
}

struct Stage {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Stage {
    fn new() -> Self {
        let mem = vec![0u8; STAGE + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { mem, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl PartialWriter {
    /// Open `path` for writing at `start` (truncating it when `start` is 0), with direct
    /// I/O if `direct` and the filesystem and offset allow it.
    pub fn open(path: &Path, start: u64, direct: bool) -> io::Result<Self> {
        let open = |flags: i32| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(start == 0)
                .custom_flags(flags)
                .open(path)
        };
        let aligned = start.is_multiple_of(ALIGN as u64);
        let (file, stage) = match direct && aligned {
            true => match open(libc::O_DIRECT) {
                Ok(f) => (f, Some(Stage::new())),
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => (open(0)?, None),
                Err(e) => return Err(e),
            },
            false => (open(0)?, None),
        };
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            stage,
            flushed: start,
            fresh_from: start.max(len),
            len,
        })
    }

    /// Whether writes currently bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.stage.is_some()
    }

    /// Bytes that are in the file; what a checkpoint may make durable.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// A second handle to the file, for syncing it from another thread.
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Append `data`.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(stage) = self.stage.as_mut() else {
                self.put(data, self.flushed)?;
                self.flushed += data.len() as u64;
                return Ok(());
            };
            let room = STAGE - stage.len;
            let n = room.min(data.len());
            let at = stage.start + stage.len;
            stage.mem[at..at + n].copy_from_slice(&data[..n]);
            stage.len += n;
            data = &data[n..];
            if stage.len == STAGE {
                self.write_direct(STAGE)?;
            }
        }
        Ok(())
    }

    /// Write the first `len` staged bytes (a whole number of blocks) directly and keep
    /// the rest staged; if the filesystem refuses (some accept `O_DIRECT` at open and
    /// not at write), everything staged goes buffered from now on.
    fn write_direct(&mut self, len: usize) -> io::Result<()> {
        let Some(stage) = self.stage.as_mut() else {
            return Ok(());
        };
        let from = stage.start;
        // The stage is taken out while it is written (`put` needs the writer too).
        let staged = std::mem::take(&mut stage.mem);
        let written = self.put(&staged[from..from + len], self.flushed);
        let Some(stage) = self.stage.as_mut() else {
            return Ok(());
        };
        stage.mem = staged;
        match written {
            Ok(()) => {
                self.flushed += len as u64;
                stage.mem.copy_within(from + len..from + stage.len, from);
                stage.len -= len;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.fall_back_to_buffered(),
            Err(e) => Err(e),
        }
    }

    /// Reopen without `O_DIRECT` at the flushed offset and write what is staged.
    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        tracing::debug!(path = %self.path.display(), "direct I/O refused; buffered writes");
        self.file = OpenOptions::new().write(true).open(&self.path)?;
        if let Some(stage) = self.stage.take() {
            self.put(stage.filled(), self.flushed)?;
            self.flushed += stage.len as u64;
        }
        Ok(())
    }

    /// Write `data` at `at`, leaving whole aligned blocks of zeros that nothing was
    /// written to before as holes (see the module documentation), and make the file at
    /// least `at + data.len()` long. Direct I/O keeps its alignment: `data` and `at` are
    /// aligned there, and so is every run written.
    fn put(&mut self, data: &[u8], at: u64) -> io::Result<()> {
        let end = at + data.len() as u64;
        // Start of the run not written yet, and the end of what was written.
        let mut run = 0usize;
        let mut written_to = at;
        let mut i = 0usize;
        while i < data.len() {
            let pos = at + i as u64;
            let n = (ALIGN - (pos % ALIGN as u64) as usize).min(data.len() - i);
            if n == ALIGN && pos >= self.fresh_from && is_zero(&data[i..i + n]) {
                if run < i {
                    self.file.write_all_at(&data[run..i], at + run as u64)?;
                    written_to = pos;
                }
                run = i + n;
            }
            i += n;
        }
        if run < data.len() {
            self.file.write_all_at(&data[run..], at + run as u64)?;
            written_to = end;
        }
        self.len = self.len.max(written_to);
        if end > self.len {
            // A hole at the end: the length covers it.
            self.file.set_len(end)?;
            self.len = end;
        }
        Ok(())
    }

    /// Write everything still staged: whole blocks directly, the unaligned tail through
    /// a buffered handle. Afterwards every byte given to [`write`](Self::write) is in the
    /// file.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(stage) = self.stage.as_ref() else {
            return Ok(());
        };
        let whole = stage.len / ALIGN * ALIGN;
        if whole > 0 {
            self.write_direct(whole)?;
        }
        // Still direct (else the fallback wrote everything): the unaligned tail.
        let Some(stage) = self.stage.as_mut() else {
            return Ok(());
        };
        if stage.len > 0 {
            // Less than a block: never a hole.
            let buffered = OpenOptions::new().write(true).open(&self.path)?;
            buffered.write_all_at(stage.filled(), self.flushed)?;
            self.flushed += stage.len as u64;
            self.len = self.len.max(self.flushed);
            stage.len = 0;
        }
        Ok(())
    }

    /// `fsync` the file.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Whether `block` holds only zero bytes (ORs 64 bytes at a time, which vectorizes).
fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn partial_writer_unaligned_sizes_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for (direct, n) in [(true, 3 * STAGE + 12345), (true, 100), (false, 777_777)] {
            let path = dir.path().join(format!("f-{direct}-{n}"));
            let src = data(n);
            let mut w = PartialWriter::open(&path, 0, direct).unwrap();
            for piece in src.chunks(32 * 1024 + 7) {
                w.write(piece).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(w.flushed(), n as u64);
            w.sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), src, "direct={direct} n={n}");
        }
    }

    #[test]
    fn partial_writer_resume_from_offset_keeps_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let src = data(2 * STAGE + 999);
        std::fs::write(&path, &src[..STAGE]).unwrap();
        // Aligned offset (direct), then an unaligned one (buffered).
        let mut w = PartialWriter::open(&path, STAGE as u64, true).unwrap();
        w.write(&src[STAGE..STAGE + 5000]).unwrap();
        w.finish().unwrap();
        drop(w);
        let at = STAGE + 5000;
        let mut w = PartialWriter::open(&path, at as u64, true).unwrap();
        assert!(!w.is_direct());
        w.write(&src[at..]).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), src);
    }

    #[test]
    fn partial_writer_flushed_counts_only_written_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = PartialWriter::open(&path, 0, true).unwrap();
        w.write(&data(STAGE / 2)).unwrap();
        if w.is_direct() {
            assert_eq!(w.flushed(), 0);
        }
        w.write(&data(STAGE)).unwrap();
        if w.is_direct() {
            assert_eq!(w.flushed(), STAGE as u64);
        }
        w.finish().unwrap();
        assert_eq!(w.flushed(), (STAGE + STAGE / 2) as u64);
    }

    /// Allocated bytes of `path` (`st_blocks` counts 512-byte units).
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn partial_writer_zero_runs_become_holes_and_read_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let hole = 8 * STAGE;
        for direct in [true, false] {
            let path = dir.path().join(format!("sparse-{direct}"));
            // Data, a long run of zeros, data, zeros up to an unaligned end.
            let mut src = data(5000);
            src.resize(5000 + hole, 0);
            src.extend(data(3 * ALIGN + 17));
            src.resize(src.len() + 2 * STAGE + 123, 0);
            let mut w = PartialWriter::open(&path, 0, direct).unwrap();
            for piece in src.chunks(32 * 1024) {
                w.write(piece).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(w.flushed(), src.len() as u64);
            w.sync_all().unwrap();
            drop(w);
            assert_eq!(std::fs::read(&path).unwrap(), src, "direct={direct}");
            // Filesystems without holes allocate everything: only assert where a hole
            // can be made (ext4, XFS, Btrfs, tmpfs do).
            let probe = dir.path().join(format!("probe-{direct}"));
            let f = std::fs::File::create(&probe).unwrap();
            f.set_len(hole as u64).unwrap();
            if allocated(&probe) < hole as u64 / 2 {
                assert!(
                    allocated(&path) < (src.len() - hole) as u64,
                    "direct={direct}: {} bytes allocated for {} bytes with a {hole}-byte hole",
                    allocated(&path),
                    src.len()
                );
            } else {
                eprintln!("note: this filesystem makes no holes; allocation not checked");
            }
        }
    }

    #[test]
    fn partial_writer_zeros_over_older_bytes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // A partial file that holds 2 stages of older bytes; the writer resumes inside
        // them (as after a verified tail) and receives zeros there.
        std::fs::write(&path, data(2 * STAGE)).unwrap();
        let mut w = PartialWriter::open(&path, STAGE as u64, true).unwrap();
        w.write(&vec![0u8; 2 * STAGE]).unwrap();
        w.finish().unwrap();
        drop(w);
        let mut want = data(STAGE);
        want.resize(3 * STAGE, 0);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn is_zero_finds_any_set_byte() {
        assert!(is_zero(&[0u8; ALIGN]));
        for at in [0, 63, 64, ALIGN - 1] {
            let mut b = [0u8; ALIGN];
            b[at] = 1;
            assert!(!is_zero(&b), "{at}");
        }
    }
}
