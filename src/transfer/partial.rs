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

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    /// Bytes that are in the file (excluding staged ones).
    flushed: u64,
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
        let (mut file, stage) = match direct && aligned {
            true => match open(libc::O_DIRECT) {
                Ok(f) => (f, Some(Stage::new())),
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => (open(0)?, None),
                Err(e) => return Err(e),
            },
            false => (open(0)?, None),
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            stage,
            flushed: start,
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
                self.file.write_all(data)?;
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
        match self.file.write_all(&stage.mem[from..from + len]) {
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
        let mut file = OpenOptions::new().write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(self.flushed))?;
        let stage = self.stage.take();
        self.file = file;
        if let Some(stage) = stage {
            self.file.write_all(stage.filled())?;
            self.flushed += stage.len as u64;
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
            let mut buffered = OpenOptions::new().write(true).open(&self.path)?;
            buffered.seek(SeekFrom::Start(self.flushed))?;
            buffered.write_all(stage.filled())?;
            self.flushed += stage.len as u64;
            stage.len = 0;
        }
        Ok(())
    }

    /// `fsync` the file.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
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
}
