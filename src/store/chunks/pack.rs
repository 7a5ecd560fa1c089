//! Pack files: verified chunks appended one after another, each behind a small header, so that
//! storing a chunk is a `pwrite` into an open file instead of creating a file (ext4 spent more
//! time allocating inodes and locking directories than the daemon spent on everything else).
//!
//! A record is `LZYPACK1` (8 bytes), the chunk's sha256 (32), its length (u64, little endian)
//! and then its bytes; records follow each other with no gap. A record is removed by
//! overwriting its magic with `LZYDEAD1` and punching a hole over its bytes: the file keeps its
//! size, so the offsets of the records after it stay valid. A scan stops at the first header
//! that is neither (a torn tail after a crash).
//!
//! One process appends to a pack, the one that created it, and holds a shared `flock` on it
//! while it does; a pack whose records are all dead is deleted only under an exclusive lock, so
//! never while its writer may still append.
//!
//! Not here: which chunks exist and when their bytes may be served (`super`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::store::flock;

/// Bytes of a record's header.
pub(super) const HEADER_LEN: u64 = 48;
const LIVE: &[u8; 8] = b"LZYPACK1";
const DEAD: &[u8; 8] = b"LZYDEAD1";
/// Longest record a scan believes (documents such as chunk indexes are the largest records).
const MAX_RECORD: u64 = 1 << 30;

/// One record found by [`Pack::records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// Offset of the header in the pack.
    pub offset: u64,
    pub digest: Digest,
    /// Bytes of the chunk (after the header).
    pub len: u64,
    /// Not removed.
    pub live: bool,
}

impl Record {
    /// Offset of the chunk's first byte.
    pub fn data_offset(&self) -> u64 {
        self.offset + HEADER_LEN
    }

    /// Bytes the record takes in its pack.
    pub fn stored_len(&self) -> u64 {
        HEADER_LEN + self.len
    }
}

/// An open pack file.
#[derive(Debug)]
pub(super) struct Pack {
    path: PathBuf,
    file: File,
}

impl Pack {
    /// Creates a new, empty pack at `path` (which must not exist) and takes the writer's shared
    /// lock on it.
    pub fn create(path: &Path) -> io::Result<Pack> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?;
        flock::lock_shared(&file)?;
        Ok(Pack {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens an existing pack, for writing when we may (to remove records), else read-only.
    pub fn open(path: &Path) -> io::Result<Pack> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(path)?,
            Err(e) => return Err(e),
        };
        Ok(Pack {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The pack's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record up to the end of the file or the first header that is not one.
    pub fn records(&self) -> io::Result<Vec<Record>> {
        let size = self.file.metadata()?.len();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset + HEADER_LEN <= size {
            let Some(record) = self.header_at(offset)? else {
                break;
            };
            if record.len > MAX_RECORD || record.data_offset() + record.len > size {
                break;
            }
            out.push(record);
            offset += record.stored_len();
        }
        Ok(out)
    }

    /// Writes a live record for `digest` holding `bytes` at `offset`.
    pub fn write_record(&self, offset: u64, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(LIVE);
        header[8..40].copy_from_slice(digest.as_bytes());
        header[40..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.file.write_all_at(&header, offset)?;
        self.file.write_all_at(bytes, offset + HEADER_LEN)
    }

    /// Reads bytes of `record`'s chunk from `offset` within it into `buf`; how many.
    pub fn read_data(&self, record: &Record, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = record.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < want {
            match self.file.read_at(
                &mut buf[done..want],
                record.data_offset() + offset + done as u64,
            ) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Whether `record` is still live on disk (another process may have removed it).
    pub fn still_live(&self, record: &Record) -> io::Result<bool> {
        Ok(self
            .header_at(record.offset)?
            .is_some_and(|h| h.live && h.digest == record.digest && h.len == record.len))
    }

    /// Marks `record` dead, then frees its bytes (a hole; where the file system cannot punch
    /// one, they are freed with the pack).
    pub fn kill(&self, record: &Record) -> io::Result<()> {
        self.file.write_all_at(DEAD, record.offset)?;
        let start = record.data_offset().next_multiple_of(4096);
        let end = (record.data_offset() + record.len) / 4096 * 4096;
        if end > start {
            // SAFETY: fallocate on an fd we own, with a range inside the file.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    start as libc::off_t,
                    (end - start) as libc::off_t,
                )
            };
            if rc != 0 {
                tracing::debug!(
                    "could not punch a hole in {}: {}",
                    self.path.display(),
                    io::Error::last_os_error()
                );
            }
        }
        Ok(())
    }

    /// Reserves the blocks of bytes `from..from + len` ahead of the writes (see
    /// `store::blocks`); whether it worked.
    pub fn reserve(&self, from: u64, len: u64) -> bool {
        super::super::blocks::reserve(&self.file, from, len).is_ok()
    }

    /// Ends this process's writing at `end` (past every record it placed, some of which other
    /// threads may still be writing): frees the blocks reserved beyond (a truncate does that)
    /// and drops the writer's lock.
    pub fn finish_writing(&self, end: u64) {
        let _ = self.file.set_len(end);
        flock::unlock(&self.file);
    }

    /// Frees blocks a writer that died reserved past the end, unless some process writes to
    /// the pack.
    pub fn free_reserved_if_unwritten(&self) {
        if flock::try_lock_exclusive(&self.file) {
            self.free_reserved();
            flock::unlock(&self.file);
        }
    }

    fn free_reserved(&self) {
        if let Ok(meta) = self.file.metadata() {
            let _ = self.file.set_len(meta.len());
        }
    }

    /// Deletes the pack if no process writes to it; whether it was deleted.
    pub fn delete_if_unwritten(&self) -> bool {
        if !flock::try_lock_exclusive(&self.file) {
            return false;
        }
        std::fs::remove_file(&self.path).is_ok()
    }

    /// The header at `offset`, when there is one.
    fn header_at(&self, offset: u64) -> io::Result<Option<Record>> {
        let mut header = [0u8; HEADER_LEN as usize];
        if let Err(e) = self.file.read_exact_at(&mut header, offset) {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof => Ok(None),
                _ => Err(e),
            };
        }
        let live = match &header[..8] {
            m if m == LIVE => true,
            m if m == DEAD => false,
            _ => return Ok(None),
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&header[8..40]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&header[40..]);
        Ok(Some(Record {
            offset,
            digest: Digest::from_sha256_bytes(digest),
            len: u64::from_le_bytes(len),
            live,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_a_killed_one_stays_dead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pack");
        let pack = Pack::create(&path).unwrap();
        let one = vec![1u8; 10_000];
        let two = vec![2u8; 20];
        pack.write_record(0, &Digest::of(&one), &one).unwrap();
        pack.write_record(HEADER_LEN + 10_000, &Digest::of(&two), &two)
            .unwrap();
        let records = Pack::open(&path).unwrap().records().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].digest, Digest::of(&two));
        let mut buf = [0u8; 8];
        assert_eq!(pack.read_data(&records[1], 16, &mut buf).unwrap(), 4);
        pack.kill(&records[0]).unwrap();
        assert!(!pack.still_live(&records[0]).unwrap());
        assert!(pack.still_live(&records[1]).unwrap());
        let again = pack.records().unwrap();
        assert!(!again[0].live && again[1].live);
    }

    #[test]
    fn a_torn_tail_ends_the_scan_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pack");
        let pack = Pack::create(&path).unwrap();
        let one = vec![1u8; 100];
        pack.write_record(0, &Digest::of(&one), &one).unwrap();
        // A header whose length runs past the end, then garbage.
        pack.write_record(148, &Digest::of(b"x"), &[0u8; 10])
            .unwrap();
        pack.file
            .write_all_at(&u64::MAX.to_le_bytes(), 148 + 40)
            .unwrap();
        assert_eq!(pack.records().unwrap().len(), 1);
        pack.file.write_all_at(b"garbage!", 148).unwrap();
        assert_eq!(pack.records().unwrap().len(), 1);
    }

    #[test]
    fn a_pack_being_written_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pack");
        let writer = Pack::create(&path).unwrap();
        let other = Pack::open(&path).unwrap();
        assert!(!other.delete_if_unwritten());
        writer.finish_writing(0);
        assert!(other.delete_if_unwritten());
        assert!(!path.exists());
    }
}
