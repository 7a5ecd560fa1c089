//! Chunks of partly present blobs, stored once by digest: `chunks/sha256/<2 hex>/<hex>`.
//!
//! A chunk (a piece of an image cut by `crate::chunk`, or a small verified document such as a
//! chunk index) is kept under its own sha256, so a chunk shared by two images, or by two
//! versions of one image, is fetched and held once.
//!
//! Crash rule: **hash on first use**. A chunk is written to a temp file and renamed to its
//! digest name (no fsync: a chunk is cheap to fetch again). After a crash a name may therefore
//! hold torn or empty bytes, so no byte of a chunk file is served by a process before that
//! process has hashed the whole file once; a file that does not hash to its name is removed and
//! counts as missing. Bytes this process wrote after verifying them count as hashed.
//!
//! Not here: which chunks a blob needs (`crate::chunk::ChunkIndex`), fetching (`content`).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::StoreError;
use crate::digest::Digest;

/// The chunk directory of one store.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    tmp: PathBuf,
    /// Chunks whose file this process has hashed (or written from verified bytes).
    hashed: Mutex<HashSet<Digest>>,
}

impl ChunkStore {
    /// The chunk directory under store root `root` (created if needed); temp files go to
    /// `root/tmp`, which the store cleans at start.
    pub fn open(root: &Path) -> Result<ChunkStore, StoreError> {
        let dir = root.join("chunks/sha256");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(ChunkStore {
            dir,
            tmp: root.join("tmp"),
            hashed: Mutex::new(HashSet::new()),
        })
    }

    /// Where chunk `d` lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether a file for `d` exists (its bytes are hashed on first read).
    pub fn contains(&self, d: &Digest) -> bool {
        self.hashed.lock().contains(d) || self.path(d).exists()
    }

    /// Stores `bytes`, which the caller has checked hash to `d`.
    pub fn put(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.hashed.lock().contains(d) {
            return Ok(());
        }
        let dest = self.path(d);
        let dir = dest.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{}-chunk-", std::process::id()))
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io(&self.tmp, e))?;
        tmp.write_all(bytes)
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io(&dest, e.error))?;
        self.hashed.lock().insert(*d);
        Ok(())
    }

    /// The whole of chunk `d`, hashed; `None` when it is not held (or was torn, and removed).
    pub fn get(&self, d: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(d);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.hashed.lock().remove(d);
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if Digest::of(&bytes) != *d {
            tracing::warn!("chunk {} does not hash to its name; removing it", d.short());
            self.hashed.lock().remove(d);
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        self.hashed.lock().insert(*d);
        Ok(Some(bytes))
    }

    /// Copies bytes of chunk `d` from `offset` (within the chunk) into `buf`; `None` when the
    /// chunk is not held. The first read of a chunk in this process hashes all of it.
    pub fn read(
        &self,
        d: &Digest,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<usize>, StoreError> {
        if !self.hashed.lock().contains(d) {
            let Some(bytes) = self.get(d)? else {
                return Ok(None);
            };
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let n = (bytes.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            return Ok(Some(n));
        }
        let path = self.path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.hashed.lock().remove(d);
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(Some(done))
    }

    /// Bytes held in chunk files.
    pub fn used_bytes(&self) -> u64 {
        let Ok(shards) = fs::read_dir(&self.dir) else {
            return 0;
        };
        shards
            .flatten()
            .filter_map(|s| fs::read_dir(s.path()).ok())
            .flat_map(|files| files.flatten())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ChunkStore) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let chunks = ChunkStore::open(dir.path()).unwrap();
        (dir, chunks)
    }

    #[test]
    fn a_stored_chunk_reads_back_in_slices() {
        let (_dir, chunks) = store();
        let bytes = b"hello chunk world".to_vec();
        let d = Digest::of(&bytes);
        assert!(!chunks.contains(&d));
        chunks.put(&d, &bytes).unwrap();
        assert!(chunks.contains(&d));
        let mut buf = [0u8; 5];
        assert_eq!(chunks.read(&d, 6, &mut buf).unwrap(), Some(5));
        assert_eq!(&buf, b"chunk");
        assert_eq!(chunks.read(&d, 15, &mut buf).unwrap(), Some(2));
        assert_eq!(chunks.used_bytes(), bytes.len() as u64);
    }

    #[test]
    fn a_torn_chunk_is_never_served_after_a_restart() {
        let (dir, chunks) = store();
        let bytes = vec![7u8; 4096];
        let d = Digest::of(&bytes);
        chunks.put(&d, &bytes).unwrap();
        // A crash left the name with other bytes; a new process must hash before serving.
        fs::write(chunks.path(&d), vec![0u8; 4096]).unwrap();
        let restarted = ChunkStore::open(dir.path()).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(restarted.read(&d, 0, &mut buf).unwrap(), None);
        assert!(!restarted.path(&d).exists());
        assert!(!restarted.contains(&d));
    }

    #[test]
    fn a_missing_chunk_reads_as_none() {
        let (_dir, chunks) = store();
        assert_eq!(chunks.get(&Digest::of(b"x")).unwrap(), None);
    }
}
