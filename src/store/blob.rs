//! Reading a blob's bytes: the one trait every format reads through ([`BlobRead`]), and its
//! implementation for a complete, verified blob file ([`CompleteBlob`]).
//!
//! A partly present blob (chunk by chunk) implements the same trait, so the archive decoder
//! and the fs read path never ask which kind they hold. A `CompleteBlob` counts as open for
//! as long as it lives (an open blob is never evicted): dropping it releases it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::digest::Digest;

use super::Store;

/// Random access to one blob's verified bytes.
pub trait BlobRead: Send + Sync {
    /// The blob's digest.
    fn digest(&self) -> &Digest;

    /// Its size in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the blob (0 at or
    /// past it). May wait for bytes that are not local yet; never returns unverified bytes.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The local file holding every byte, when there is one (the kernel can then serve reads
    /// itself: FUSE passthrough).
    fn complete_file(&self) -> Option<&File> {
        None
    }

    /// Says that `[offset, offset + len)` will be read soon: a local file is asked of the disk
    /// now (`POSIX_FADV_WILLNEED`, which does not wait). A hint: nothing fails.
    fn prefetch(&self, offset: u64, len: u64) {
        if let Some(file) = self.complete_file() {
            let offset = offset.min(i64::MAX as u64) as libc::off_t;
            let len = len.min(i64::MAX as u64) as libc::off_t;
            // SAFETY: posix_fadvise on a descriptor `file` keeps open; it only advises.
            unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(file),
                    offset,
                    len,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the blob ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(offset + done as u64, &mut buf[done..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: ends at {} before offset {}",
                            self.digest().short(),
                            self.size(),
                            offset + buf.len() as u64
                        ),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A complete, verified blob file in the store, open for reading.
pub struct CompleteBlob {
    file: File,
    digest: Digest,
    size: u64,
    store: Arc<Store>,
}

impl std::fmt::Debug for CompleteBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleteBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

impl CompleteBlob {
    pub(super) fn new(file: File, digest: Digest, size: u64, store: Arc<Store>) -> CompleteBlob {
        CompleteBlob {
            file,
            digest,
            size,
            store,
        }
    }
}

impl BlobRead for CompleteBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let want = buf
            .len()
            .min((self.size - offset).min(usize::MAX as u64) as usize);
        loop {
            match self.file.read_at(&mut buf[..want], offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn complete_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

impl Drop for CompleteBlob {
    fn drop(&mut self) {
        self.store.release_blob(&self.digest);
    }
}

/// A blob held in memory (tests and small documents).
#[derive(Debug, Clone)]
pub struct BytesBlob {
    digest: Digest,
    bytes: Arc<[u8]>,
}

impl BytesBlob {
    /// Wraps `bytes`, computing their digest.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> BytesBlob {
        let bytes = bytes.into();
        BytesBlob {
            digest: Digest::of(&bytes),
            bytes,
        }
    }
}

impl BlobRead for BytesBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(rest) = self.bytes.get(start..) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_blob_reads_like_a_file() {
        let b = BytesBlob::new(b"hello world".to_vec());
        let mut buf = [0u8; 5];
        assert_eq!(b.read_at(6, &mut buf).unwrap(), 5);
        assert_eq!(&buf, b"world");
        assert_eq!(b.read_at(11, &mut buf).unwrap(), 0);
        assert_eq!(b.read_at(u64::MAX, &mut buf).unwrap(), 0);
        let err = b.read_exact_at(8, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
