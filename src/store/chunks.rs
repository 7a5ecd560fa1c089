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
//! Chunk bytes count towards the store's quota; eviction removes the chunks fetched longest
//! ago, except those of blobs this process has open ([`ChunkStore::retain`]). A chunk removed
//! under another process's reader is fetched again by it, never served wrong.
//!
//! Not here: which chunks a blob needs (`crate::chunk::ChunkIndex`), fetching (`content`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

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
    /// Bytes in chunk files (scanned at open, kept up to date since).
    bytes: AtomicU64,
    /// Chunks of blobs open in this process, with how many open blobs hold each.
    open: Mutex<HashMap<Digest, u32>>,
}

impl ChunkStore {
    /// The chunk directory under store root `root` (created if needed); temp files go to
    /// `root/tmp`, which the store cleans at start.
    pub fn open(root: &Path) -> Result<ChunkStore, StoreError> {
        let dir = root.join("chunks/sha256");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let bytes = chunk_files(&dir).iter().map(|(_, len, _)| len).sum();
        Ok(ChunkStore {
            dir,
            tmp: root.join("tmp"),
            hashed: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(bytes),
            open: Mutex::new(HashMap::new()),
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
        let replaced = fs::metadata(&dest).map_or(0, |m| m.len());
        tmp.persist(&dest)
            .map_err(|e| StoreError::io(&dest, e.error))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(replaced, Ordering::Relaxed);
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
            self.remove(d);
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
        self.bytes.load(Ordering::Relaxed)
    }

    /// Keeps `chunks` from eviction until [`ChunkStore::release`] (a blob over them is open).
    pub fn retain<'a>(&self, chunks: impl Iterator<Item = &'a Digest>) {
        let mut open = self.open.lock();
        for d in chunks {
            *open.entry(*d).or_insert(0) += 1;
        }
    }

    /// Ends one [`ChunkStore::retain`] of `chunks`.
    pub fn release<'a>(&self, chunks: impl Iterator<Item = &'a Digest>) {
        let mut open = self.open.lock();
        for d in chunks {
            if let Some(n) = open.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    open.remove(d);
                }
            }
        }
    }

    /// Removes the chunks fetched longest ago, except retained ones, until `want` bytes are
    /// freed (or none is left to remove); returns how many chunks and bytes went.
    pub fn evict(&self, want: u64) -> (usize, u64) {
        let mut files = chunk_files(&self.dir);
        files.sort_by_key(|(_, _, mtime)| *mtime);
        let (mut removed, mut freed) = (0, 0);
        for (path, len, _) in files {
            if freed >= want {
                break;
            }
            let Some(d) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Digest::parse(n).ok())
            else {
                continue;
            };
            if self.open.lock().contains_key(&d) {
                continue;
            }
            if self.remove(&d) {
                removed += 1;
                freed += len;
            }
        }
        (removed, freed)
    }

    /// Removes chunk `d`'s file; whether there was one.
    fn remove(&self, d: &Digest) -> bool {
        self.hashed.lock().remove(d);
        let path = self.path(d);
        let len = fs::metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }
}

/// Every chunk file under `dir`: its path, size and modification time (when it was fetched).
fn chunk_files(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(shards) = fs::read_dir(dir) else {
        return Vec::new();
    };
    shards
        .flatten()
        .filter_map(|s| fs::read_dir(s.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|f| {
            let meta = f.metadata().ok()?;
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((f.path(), meta.len(), mtime))
        })
        .collect()
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
    fn eviction_spares_retained_chunks_and_keeps_the_count() {
        let (dir, chunks) = store();
        let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        let digests: Vec<Digest> = pieces.iter().map(|p| Digest::of(p)).collect();
        for (d, p) in digests.iter().zip(&pieces) {
            chunks.put(d, p).unwrap();
        }
        assert_eq!(chunks.used_bytes(), 4000);
        assert_eq!(ChunkStore::open(dir.path()).unwrap().used_bytes(), 4000);
        chunks.retain(digests[..2].iter());
        assert_eq!(chunks.evict(u64::MAX), (2, 2000));
        assert_eq!(chunks.used_bytes(), 2000);
        assert!(chunks.contains(&digests[0]) && chunks.contains(&digests[1]));
        assert!(!chunks.contains(&digests[2]) && !chunks.contains(&digests[3]));
        chunks.release(digests[..2].iter());
        assert_eq!(chunks.evict(1), (1, 1000));
    }

    #[test]
    fn a_missing_chunk_reads_as_none() {
        let (_dir, chunks) = store();
        assert_eq!(chunks.get(&Digest::of(b"x")).unwrap(), None);
    }
}
