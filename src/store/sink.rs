//! The download sink: a temp file in `tmp/`, written in order, with an optional observer that
//! sees the same bytes (the archive indexer builds its seek index in the same pass).
//!
//! When the server announced the size, the file's blocks are reserved ahead of the writes
//! (`store::blocks`), a step at a time and never past the announced size: a server that lies
//! about the size reserves at most one step more than it sent, and a blob written in full holds
//! no blocks past its end.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use crate::fetch::BlobSink;

/// Sees a blob's bytes in order while it downloads.
pub trait ByteObserver: Send + 'static {
    /// The download starts over from byte 0 (another source is tried).
    fn restart(&mut self);
    /// The next bytes.
    fn observe(&mut self, data: &[u8]);
}

/// Starts writeback of what was written every this many bytes, so the final fsync is short.
const WRITEBACK_STEP: u64 = 16 << 20;

/// Blocks reserved at a time ahead of the writes.
const RESERVE_STEP: u64 = 64 << 20;

/// The sink of one download: a temp file written in order, plus an optional observer.
pub struct TempSink {
    file: File,
    written: u64,
    flushed: u64,
    /// The size the server announced for this attempt (0: unknown, or reserving failed).
    announced: u64,
    /// Bytes from the start of the file whose blocks are reserved.
    reserved: u64,
    observer: Option<Box<dyn ByteObserver>>,
}

impl TempSink {
    /// Writes into (a clone of the handle of) `tmp`.
    pub fn new(
        tmp: &tempfile::NamedTempFile,
        observer: Option<Box<dyn ByteObserver>>,
    ) -> io::Result<TempSink> {
        Ok(TempSink {
            file: tmp.as_file().try_clone()?,
            written: 0,
            flushed: 0,
            announced: 0,
            reserved: 0,
            observer,
        })
    }
}

impl TempSink {
    /// Reserves the blocks the next `len` bytes go to (a step ahead, up to the announced
    /// size). Best effort: when the file system cannot (no `fallocate`, disk full) it stops
    /// trying, and the write itself reports what matters.
    fn reserve_for(&mut self, len: u64) {
        let end = self.written.saturating_add(len);
        if end <= self.reserved || self.reserved >= self.announced {
            return;
        }
        let upto = end.saturating_add(RESERVE_STEP).min(self.announced);
        match super::blocks::reserve(&self.file, self.reserved, upto - self.reserved) {
            Ok(()) => self.reserved = upto,
            Err(e) => {
                tracing::debug!("not reserving download blocks: {e}");
                self.announced = 0;
            }
        }
    }
}

impl BlobSink for TempSink {
    fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.written = 0;
        self.flushed = 0;
        self.announced = 0;
        self.reserved = 0;
        if let Some(o) = self.observer.as_mut() {
            o.restart();
        }
        Ok(())
    }

    fn expect_size(&mut self, size: u64) {
        self.announced = size;
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.reserve_for(data.len() as u64);
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        if let Some(o) = self.observer.as_mut() {
            o.observe(data);
        }
        if self.written - self.flushed >= WRITEBACK_STEP {
            // SAFETY: plain syscall on an fd we own; asks the kernel to start writeback of the
            // range now (it does not wait), so the fsync at commit has little left to do.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed as i64,
                    (self.written - self.flushed) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.written;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Bytes of disk the file holds.
    fn allocated(tmp: &tempfile::NamedTempFile) -> u64 {
        tmp.as_file().metadata().unwrap().blocks() * 512
    }

    /// Whether the file system under the temp dir reserves blocks with `fallocate`.
    fn can_reserve() -> bool {
        let probe = tempfile::NamedTempFile::new().unwrap();
        crate::store::blocks::reserve(probe.as_file(), 0, 1 << 20).is_ok()
            && allocated(&probe) >= 1 << 20
    }

    #[test]
    fn reserves_ahead_but_never_past_the_announced_size() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut sink = TempSink::new(&tmp, None).unwrap();
        let blob: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        sink.restart().unwrap();
        sink.expect_size(blob.len() as u64);
        let (head, tail) = blob.split_at(1 << 20);
        sink.write(head).unwrap();
        assert_eq!(tmp.as_file().metadata().unwrap().len(), 1 << 20);
        if can_reserve() {
            assert!(allocated(&tmp) >= blob.len() as u64, "reserved ahead");
        }
        sink.write(tail).unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), blob);
        assert!(allocated(&tmp) <= (blob.len() as u64).next_multiple_of(1 << 16));
    }

    #[test]
    fn a_lying_size_reserves_one_step_and_restart_frees_it() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut sink = TempSink::new(&tmp, None).unwrap();
        sink.restart().unwrap();
        sink.expect_size(1 << 40);
        sink.write(&[7u8; 1024]).unwrap();
        assert_eq!(tmp.as_file().metadata().unwrap().len(), 1024);
        let held = allocated(&tmp);
        assert!(held <= 1024 + RESERVE_STEP + (1 << 16), "held {held}");
        if can_reserve() {
            assert!(held >= RESERVE_STEP, "held {held}");
        }
        sink.restart().unwrap();
        assert_eq!(allocated(&tmp), 0);
        sink.write(b"again").unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), b"again");
    }
}
