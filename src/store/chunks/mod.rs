//! Chunks of partly present blobs, stored once by digest, in pack files under `chunks/packs/`.
//!
//! A chunk (a piece of an image cut by `crate::chunk`, or a small verified document such as a
//! chunk index) is kept under its own sha256, so a chunk shared by two images, or by two
//! versions of one image, is fetched and held once. Chunks are appended to the pack this process
//! writes ([`pack`]: a header naming the digest, then the bytes), a new pack every 256 MiB; the
//! digest → place table lives in memory, read back from the packs' headers at open.
//!
//! Crash rule: **hash on first use**. Nothing is fsynced (a chunk is cheap to fetch again), so
//! after a crash a record may hold torn or zero bytes; no byte of a chunk is served by a process
//! before that process has hashed the whole chunk once, and a chunk that does not hash to its
//! name is removed and counts as missing. Bytes this process wrote after verifying them count
//! as hashed.
//!
//! Chunk bytes count towards the store's quota; eviction removes the chunks fetched longest
//! ago, except those of blobs this process has open ([`ChunkStore::retain`]). Another process
//! (`lazycas gc`) may remove a chunk this process holds: every read checks, after copying the
//! bytes, that the record is still live, so a removed chunk is fetched again, never served
//! wrong.
//!
//! Not here: which chunks a blob needs (`crate::chunk::ChunkIndex`), fetching (`content`).

mod pack;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use self::pack::{Pack, Record, HEADER_LEN};
use super::StoreError;
use crate::digest::Digest;

/// Bytes after which the writer starts a new pack.
const PACK_SIZE: u64 = 256 << 20;
/// Blocks reserved at a time ahead of the writer's end.
const RESERVE_STEP: u64 = 32 << 20;

/// Where one chunk is.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// Key of its pack in [`Table::packs`] (packs opened later have larger keys).
    pack: u32,
    record: Record,
    /// This process has hashed its bytes (or wrote them from verified bytes).
    hashed: bool,
}

/// The digest → place table and the packs it points into.
#[derive(Debug, Default)]
struct Table {
    places: HashMap<Digest, Place>,
    packs: HashMap<u32, Arc<Pack>>,
    /// Live records of each pack in `places`.
    live: HashMap<u32, usize>,
    next_pack: u32,
}

/// The pack this process appends to.
#[derive(Debug)]
struct Writer {
    key: u32,
    pack: Arc<Pack>,
    end: u64,
    /// Bytes from the start of the pack whose blocks are reserved.
    reserved: u64,
}

/// The chunk packs of one store.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    table: Mutex<Table>,
    writer: Mutex<Option<Writer>>,
    /// Packs this process has created (to name the next one).
    created: AtomicU64,
    /// Bytes in live records (read at open, kept up to date since).
    bytes: AtomicU64,
    /// Bytes after which the writer starts a new pack ([`PACK_SIZE`]; smaller in tests).
    pack_size: u64,
    /// Chunks of blobs open in this process, with how many open blobs hold each.
    open: Mutex<HashMap<Digest, u32>>,
}

impl ChunkStore {
    /// The chunk packs under store root `root` (the directory is created if needed); chunk
    /// files of the layout before packs (`chunks/sha256/`) are moved into a pack.
    pub fn open(root: &Path) -> Result<ChunkStore, StoreError> {
        let dir = root.join("chunks/packs");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut table = Table::default();
        let mut bytes = 0;
        for path in pack_paths(&dir) {
            let pack = match Pack::open(&path) {
                Ok(p) => Arc::new(p),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            pack.free_reserved_if_unwritten();
            let records = pack.records().map_err(|e| StoreError::io(&path, e))?;
            let key = table.next_pack;
            table.next_pack += 1;
            let mut live = 0;
            for record in records.into_iter().filter(|r| r.live) {
                if table.places.contains_key(&record.digest) {
                    continue;
                }
                bytes += record.stored_len();
                live += 1;
                let place = Place {
                    pack: key,
                    record,
                    hashed: false,
                };
                table.places.insert(record.digest, place);
            }
            table.live.insert(key, live);
            table.packs.insert(key, pack);
        }
        let store = ChunkStore {
            dir,
            table: Mutex::new(table),
            writer: Mutex::new(None),
            created: AtomicU64::new(0),
            bytes: AtomicU64::new(bytes),
            pack_size: PACK_SIZE,
            open: Mutex::new(HashMap::new()),
        };
        store.adopt_chunk_files(&root.join("chunks/sha256"));
        Ok(store)
    }

    /// The directory of the packs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether chunk `d` is held (its bytes are hashed on first read).
    pub fn contains(&self, d: &Digest) -> bool {
        self.table.lock().places.contains_key(d)
    }

    /// Stores `bytes`, which the caller has checked hash to `d`.
    pub fn put(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.contains(d) {
            return Ok(());
        }
        let (key, pack, offset) = self.reserve(HEADER_LEN + bytes.len() as u64)?;
        pack.write_record(offset, d, bytes)
            .map_err(|e| StoreError::io(pack.path(), e))?;
        let record = Record {
            offset,
            digest: *d,
            len: bytes.len() as u64,
            live: true,
        };
        let mut table = self.table.lock();
        if table.places.contains_key(d) {
            // Stored meanwhile by another caller: ours is a spare copy.
            drop(table);
            let _ = pack.kill(&record);
            return Ok(());
        }
        let place = Place {
            pack: key,
            record,
            hashed: true,
        };
        table.places.insert(*d, place);
        *table.live.entry(key).or_insert(0) += 1;
        self.bytes.fetch_add(record.stored_len(), Ordering::Relaxed);
        Ok(())
    }

    /// The whole of chunk `d`, hashed; `None` when it is not held (or was torn, and removed).
    pub fn get(&self, d: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((place, pack)) = self.place(d) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; place.record.len as usize];
        let n = pack
            .read_data(&place.record, 0, &mut bytes)
            .map_err(|e| StoreError::io(pack.path(), e))?;
        if !place.hashed {
            if n != bytes.len() || Digest::of(&bytes) != *d {
                tracing::warn!("chunk {} does not hash to its name; removing it", d.short());
                self.remove(d);
                return Ok(None);
            }
            self.mark_hashed(d);
        }
        if !self.still_live(d, &place, &pack)? {
            return Ok(None);
        }
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
        let Some((place, pack)) = self.place(d) else {
            return Ok(None);
        };
        if !place.hashed {
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
        let n = pack
            .read_data(&place.record, offset, buf)
            .map_err(|e| StoreError::io(pack.path(), e))?;
        if !self.still_live(d, &place, &pack)? {
            return Ok(None);
        }
        Ok(Some(n))
    }

    /// Bytes held in chunk records.
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
        let mut oldest: Vec<(u32, u64, Digest)> = {
            let open = self.open.lock();
            self.table
                .lock()
                .places
                .iter()
                .filter(|(d, _)| !open.contains_key(d))
                .map(|(d, p)| (p.pack, p.record.offset, *d))
                .collect()
        };
        oldest.sort_unstable();
        let (mut removed, mut freed) = (0, 0);
        for (_, _, d) in oldest {
            if freed >= want {
                break;
            }
            if self.open.lock().contains_key(&d) {
                continue;
            }
            if let Some(len) = self.remove(&d) {
                removed += 1;
                freed += len;
            }
        }
        (removed, freed)
    }

    /// Where chunk `d` is, with its pack.
    fn place(&self, d: &Digest) -> Option<(Place, Arc<Pack>)> {
        let table = self.table.lock();
        let place = *table.places.get(d)?;
        let pack = table.packs.get(&place.pack)?.clone();
        Some((place, pack))
    }

    fn mark_hashed(&self, d: &Digest) {
        if let Some(p) = self.table.lock().places.get_mut(d) {
            p.hashed = true;
        }
    }

    /// Whether `d`'s record is still live on disk; forgets it when another process removed it.
    fn still_live(&self, d: &Digest, place: &Place, pack: &Pack) -> Result<bool, StoreError> {
        let live = pack
            .still_live(&place.record)
            .map_err(|e| StoreError::io(pack.path(), e))?;
        if !live {
            tracing::info!("chunk {} was removed by another process", d.short());
            self.forget(d, place.pack);
        }
        Ok(live)
    }

    /// Space for a record of `len` bytes in this process's pack (a new pack when it is full):
    /// its key, the pack and the offset.
    fn reserve(&self, len: u64) -> Result<(u32, Arc<Pack>, u64), StoreError> {
        let mut writer = self.writer.lock();
        if writer
            .as_ref()
            .is_none_or(|w| w.end > 0 && w.end + len > self.pack_size)
        {
            let old = writer.replace(self.new_pack()?);
            if let Some(old) = old {
                old.pack.finish_writing(old.end);
                self.delete_if_empty(old.key);
            }
        }
        let Some(w) = writer.as_mut() else {
            unreachable!("a writer was just set")
        };
        let offset = w.end;
        w.end += len;
        if w.end > w.reserved && w.reserved < self.pack_size {
            let step = (w.end - w.reserved).max(RESERVE_STEP);
            w.reserved = match w.pack.reserve(w.reserved, step) {
                true => w.reserved + step,
                false => self.pack_size,
            };
        }
        Ok((w.key, w.pack.clone(), offset))
    }

    /// Creates this process's next pack, named so that packs sort by age.
    fn new_pack(&self) -> Result<Writer, StoreError> {
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{:013}-{}-{n:04}.pack",
            super::now_millis(),
            std::process::id()
        );
        let path = self.dir.join(name);
        let pack = Arc::new(Pack::create(&path).map_err(|e| StoreError::io(&path, e))?);
        let mut table = self.table.lock();
        let key = table.next_pack;
        table.next_pack += 1;
        table.packs.insert(key, pack.clone());
        table.live.insert(key, 0);
        Ok(Writer {
            key,
            pack,
            end: 0,
            reserved: 0,
        })
    }

    /// Removes chunk `d`: marks its record dead and frees its bytes; the bytes it held.
    fn remove(&self, d: &Digest) -> Option<u64> {
        let (place, pack) = self.place(d)?;
        if let Err(e) = pack.kill(&place.record) {
            tracing::warn!(
                "could not remove chunk {} from {}: {e}",
                d.short(),
                pack.path().display()
            );
        }
        self.forget(d, place.pack)
            .then_some(place.record.stored_len())
    }

    /// Drops `d` from the table (its record in pack `key` is dead); deletes the pack once it
    /// has no live record and no writer. Whether `d` was there.
    fn forget(&self, d: &Digest, key: u32) -> bool {
        let mut table = self.table.lock();
        let Some(place) = table.places.remove(d) else {
            return false;
        };
        self.bytes
            .fetch_sub(place.record.stored_len(), Ordering::Relaxed);
        if let Some(n) = table.live.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        drop(table);
        let writing = self.writer.lock().as_ref().is_some_and(|w| w.key == key);
        if !writing {
            self.delete_if_empty(key);
        }
        true
    }

    /// Deletes pack `key` if it has no live record and nobody writes to it.
    fn delete_if_empty(&self, key: u32) {
        let mut table = self.table.lock();
        if table.live.get(&key).copied().unwrap_or(0) > 0 {
            return;
        }
        if let Some(pack) = table.packs.get(&key) {
            if pack.delete_if_unwritten() {
                table.packs.remove(&key);
                table.live.remove(&key);
            }
        }
    }

    /// Moves chunk files of the layout before packs (`chunks/sha256/<2 hex>/<hex>`) into a
    /// pack, keeping those that hash to their name, and removes the old directory.
    fn adopt_chunk_files(&self, old: &Path) {
        if !old.is_dir() {
            return;
        }
        let files = fs::read_dir(old)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|shard| fs::read_dir(shard.path()).ok())
            .flat_map(|files| files.flatten());
        let (mut kept, mut dropped) = (0, 0);
        for f in files {
            let path = f.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match (Digest::parse(name), fs::read(&path)) {
                (Ok(d), Ok(bytes)) if Digest::of(&bytes) == d && self.put(&d, &bytes).is_ok() => {
                    kept += 1
                }
                _ => dropped += 1,
            }
        }
        match fs::remove_dir_all(old) {
            Ok(()) => tracing::info!(kept, dropped, "moved chunk files into a pack"),
            Err(e) => tracing::warn!("could not remove {}: {e}", old.display()),
        }
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        if let Some(w) = self.writer.lock().take() {
            w.pack.finish_writing(w.end);
        }
    }
}

/// The pack files in `dir`, oldest first.
fn pack_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn store() -> (tempfile::TempDir, ChunkStore) {
        let dir = tempfile::tempdir().unwrap();
        let chunks = ChunkStore::open(dir.path()).unwrap();
        (dir, chunks)
    }

    /// The pack file and offset of chunk `d`'s bytes.
    fn bytes_of(chunks: &ChunkStore, d: &Digest) -> (PathBuf, u64) {
        let (place, pack) = chunks.place(d).unwrap();
        (pack.path().to_path_buf(), place.record.data_offset())
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
        assert_eq!(chunks.used_bytes(), HEADER_LEN + bytes.len() as u64);
    }

    #[test]
    fn chunks_survive_a_restart_and_are_hashed_before_use() {
        let (dir, chunks) = store();
        let pieces: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 5000]).collect();
        for p in &pieces {
            chunks.put(&Digest::of(p), p).unwrap();
        }
        drop(chunks);
        let restarted = ChunkStore::open(dir.path()).unwrap();
        for p in &pieces {
            assert_eq!(
                restarted.get(&Digest::of(p)).unwrap().as_deref(),
                Some(&p[..])
            );
        }
        assert_eq!(restarted.used_bytes(), 3 * (HEADER_LEN + 5000));
    }

    #[test]
    fn a_torn_chunk_is_never_served_after_a_restart() {
        let (dir, chunks) = store();
        let bytes = vec![7u8; 4096];
        let d = Digest::of(&bytes);
        chunks.put(&d, &bytes).unwrap();
        // A crash left the record with other bytes; a new process must hash before serving.
        let (pack, at) = bytes_of(&chunks, &d);
        drop(chunks);
        let file = fs::OpenOptions::new().write(true).open(&pack).unwrap();
        file.write_all_at(&[0u8; 100], at + 1000).unwrap();
        let restarted = ChunkStore::open(dir.path()).unwrap();
        assert!(restarted.contains(&d), "present until its first use");
        let mut buf = [0u8; 16];
        assert_eq!(restarted.read(&d, 0, &mut buf).unwrap(), None);
        assert!(!restarted.contains(&d));
        let again = ChunkStore::open(dir.path()).unwrap();
        assert!(!again.contains(&d), "the torn record stays removed");
    }

    #[test]
    fn a_chunk_removed_by_another_process_is_not_served() {
        let (dir, chunks) = store();
        let bytes = vec![9u8; 20_000];
        let d = Digest::of(&bytes);
        chunks.put(&d, &bytes).unwrap();
        let gc = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(gc.evict(u64::MAX), (1, HEADER_LEN + 20_000));
        let mut buf = [0u8; 16];
        assert_eq!(chunks.read(&d, 0, &mut buf).unwrap(), None);
        assert!(!chunks.contains(&d));
    }

    #[test]
    fn eviction_spares_retained_chunks_and_keeps_the_count() {
        let (dir, chunks) = store();
        let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        let digests: Vec<Digest> = pieces.iter().map(|p| Digest::of(p)).collect();
        for (d, p) in digests.iter().zip(&pieces) {
            chunks.put(d, p).unwrap();
        }
        let each = HEADER_LEN + 1000;
        assert_eq!(chunks.used_bytes(), 4 * each);
        assert_eq!(ChunkStore::open(dir.path()).unwrap().used_bytes(), 4 * each);
        chunks.retain(digests[..2].iter());
        assert_eq!(chunks.evict(u64::MAX), (2, 2 * each));
        assert_eq!(chunks.used_bytes(), 2 * each);
        assert!(chunks.contains(&digests[0]) && chunks.contains(&digests[1]));
        assert!(!chunks.contains(&digests[2]) && !chunks.contains(&digests[3]));
        chunks.release(digests[..2].iter());
        assert_eq!(chunks.evict(1), (1, each));
        assert!(!chunks.contains(&digests[0]), "the oldest goes first");
    }

    #[test]
    fn a_pack_is_deleted_once_its_chunks_are_gone() {
        let (dir, chunks) = store();
        let bytes = vec![3u8; 1000];
        chunks.put(&Digest::of(&bytes), &bytes).unwrap();
        drop(chunks);
        let restarted = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(pack_paths(restarted.dir()).len(), 1);
        assert_eq!(restarted.evict(u64::MAX).0, 1);
        assert!(pack_paths(restarted.dir()).is_empty());
    }

    #[test]
    fn chunk_files_of_the_old_layout_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let good = vec![5u8; 3000];
        let d = Digest::of(&good);
        let shard = dir.path().join("chunks/sha256").join(&d.hex()[..2]);
        fs::create_dir_all(&shard).unwrap();
        fs::write(shard.join(d.hex()), &good).unwrap();
        let liar = Digest::of(b"something else");
        fs::write(shard.join(liar.hex()), b"not that").unwrap();
        let chunks = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(chunks.get(&d).unwrap().as_deref(), Some(&good[..]));
        assert!(!chunks.contains(&liar));
        assert!(!dir.path().join("chunks/sha256").exists());
    }

    #[test]
    fn blocks_reserved_ahead_are_freed_when_the_writer_ends() {
        use std::os::unix::fs::MetadataExt;
        let (dir, chunks) = store();
        let bytes = vec![4u8; 10_000];
        chunks.put(&Digest::of(&bytes), &bytes).unwrap();
        let pack = pack_paths(chunks.dir()).pop().unwrap();
        let allocated = || fs::metadata(&pack).unwrap().blocks() * 512;
        assert_eq!(fs::metadata(&pack).unwrap().len(), HEADER_LEN + 10_000);
        assert!(
            allocated() >= RESERVE_STEP,
            "reserved ahead: {}",
            allocated()
        );
        drop(chunks);
        assert!(allocated() < 1 << 20, "still allocated: {}", allocated());
        let again = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(
            again.get(&Digest::of(&bytes)).unwrap().as_deref(),
            Some(&bytes[..])
        );
    }

    #[test]
    fn a_full_pack_is_followed_by_a_new_one_and_both_read_back() {
        let (dir, mut chunks) = store();
        chunks.pack_size = 3 * (HEADER_LEN + 1000);
        let pieces: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 1000]).collect();
        for p in &pieces {
            chunks.put(&Digest::of(p), p).unwrap();
        }
        assert_eq!(pack_paths(chunks.dir()).len(), 3);
        drop(chunks);
        for p in pack_paths(dir.path().join("chunks/packs").as_path()) {
            let len = fs::metadata(&p).unwrap().len();
            assert_eq!(len % (HEADER_LEN + 1000), 0, "no reserved tail left: {len}");
        }
        let again = ChunkStore::open(dir.path()).unwrap();
        for p in &pieces {
            assert_eq!(again.get(&Digest::of(p)).unwrap().as_deref(), Some(&p[..]));
        }
        assert_eq!(again.used_bytes(), 7 * (HEADER_LEN + 1000));
    }

    #[test]
    fn a_missing_chunk_reads_as_none() {
        let (_dir, chunks) = store();
        assert_eq!(chunks.get(&Digest::of(b"x")).unwrap(), None);
    }
}
