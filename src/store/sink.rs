//! The download sink: a temp file in `tmp/`, written in order, with an optional observer that
//! sees the same bytes (the archive indexer builds its seek index in the same pass).

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

/// The sink of one download: a temp file written in order, plus an optional observer.
pub struct TempSink {
    file: File,
    written: u64,
    flushed: u64,
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
            observer,
        })
    }
}

impl BlobSink for TempSink {
    fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.written = 0;
        self.flushed = 0;
        if let Some(o) = self.observer.as_mut() {
            o.restart();
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
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
