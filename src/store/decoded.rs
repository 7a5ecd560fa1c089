//! The decoded cache: archive members and regions kept decoded on disk, as ordinary blobs.
//!
//! A member a reader has read whole is worth keeping decoded: the next open is then a complete
//! local file, which the kernel serves itself (FUSE passthrough) from its page cache, and the
//! daemon holds none of it in memory. A region (the tar stream between two checkpoints of a
//! gzip archive) is kept for the small members in it: once one of them was read, the others
//! are a `pread` away instead of a decode from the checkpoint.
//!
//! The bytes are what the read path decoded from the verified archive ([`DecodedWriter`]),
//! named by their own sha256 (so content shared by two archives is stored once) and committed
//! like a download (fsync, rename, `blobs` row). They count in the quota and are evicted
//! least-recently-used like any blob; eviction also forgets the `decoded_members` or
//! `decoded_regions` row, and the next read rebuilds them.
//!
//! Not here: what a member or a region is or how it is decoded (`archive`), when a handle writes
//! one (`fs::archive_tree`, `archive::regions`).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::{BlobInfo, Store, StoreError};
use crate::digest::{Digest, Hasher};

/// One member of one archive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MemberKey {
    /// The archive's digest.
    pub archive: Digest,
    /// The member's number in that archive's index.
    pub member: u64,
}

/// One region of one archive's tar stream: from the checkpoint at `start` to the next one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RegionKey {
    /// The archive's digest.
    pub archive: Digest,
    /// Stream offset of the region's first byte (a checkpoint's).
    pub start: u64,
}

/// What a decoded copy is of.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Target {
    Member(MemberKey),
    Region(RegionKey),
}

/// Creates the mapping tables if missing. Idempotent.
pub(super) fn init_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS decoded_members (
             archive TEXT NOT NULL,               -- the archive blob's digest
             member  INTEGER NOT NULL,            -- archive::MemberId
             digest  TEXT NOT NULL,               -- the decoded bytes, a blob of `blobs`
             PRIMARY KEY (archive, member)
         );
         CREATE INDEX IF NOT EXISTS decoded_members_digest ON decoded_members(digest);
         CREATE TABLE IF NOT EXISTS decoded_regions (
             archive TEXT NOT NULL,               -- the archive blob's digest
             start   INTEGER NOT NULL,            -- stream offset of the region's checkpoint
             digest  TEXT NOT NULL,               -- the decoded bytes, a blob of `blobs`
             PRIMARY KEY (archive, start)
         );
         CREATE INDEX IF NOT EXISTS decoded_regions_digest ON decoded_regions(digest);",
    )
}

/// Forgets every mapping to or from blob `d` (it is being removed).
pub(super) fn forget(conn: &Connection, d: &Digest) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM decoded_members WHERE digest = ?1 OR archive = ?1",
        [d.hex()],
    )?;
    conn.execute(
        "DELETE FROM decoded_regions WHERE digest = ?1 OR archive = ?1",
        [d.hex()],
    )?;
    Ok(())
}

/// Copies being written now (one writer per member or region per process), and a lock that
/// lets one copy be hashed and fsynced at a time (a `tar` of a mount completes many at once).
#[derive(Default)]
pub(super) struct Writing {
    targets: Mutex<HashSet<Target>>,
    committing: Mutex<()>,
}

impl Store {
    /// The decoded copy of `key`, if the store holds one.
    pub fn decoded_member(&self, key: &MemberKey) -> Result<Option<BlobInfo>, StoreError> {
        let hex: Option<String> = self.with_db(|c| {
            c.query_row(
                "SELECT digest FROM decoded_members WHERE archive = ?1 AND member = ?2",
                params![key.archive.hex(), key.member as i64],
                |r| r.get(0),
            )
            .optional()
        })?;
        let Some(d) = hex.and_then(|h| Digest::parse(&h).ok()) else {
            return Ok(None);
        };
        self.blob(&d)
    }

    /// Members of `archive` with a decoded copy recorded (some may have been evicted since).
    pub fn decoded_members_of(&self, archive: &Digest) -> Result<Vec<u64>, StoreError> {
        self.with_db(|c| {
            let mut st = c.prepare("SELECT member FROM decoded_members WHERE archive = ?1")?;
            let rows = st.query_map([archive.hex()], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|m| m as u64)).collect()
        })
    }

    /// The regions of `archive` with a decoded copy recorded: (stream offset, the copy's digest;
    /// some may have been evicted since).
    pub fn decoded_regions_of(&self, archive: &Digest) -> Result<Vec<(u64, Digest)>, StoreError> {
        let rows: Vec<(i64, String)> = self.with_db(|c| {
            let mut st =
                c.prepare("SELECT start, digest FROM decoded_regions WHERE archive = ?1")?;
            let rows = st.query_map([archive.hex()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(start, hex)| Some((start as u64, Digest::parse(&hex).ok()?)))
            .collect())
    }

    /// A writer for the decoded bytes of member `key` (`size` bytes), unless another handle of
    /// this process is writing them already.
    pub fn decoded_writer(
        self: &Arc<Self>,
        key: MemberKey,
        size: u64,
    ) -> Result<Option<DecodedWriter>, StoreError> {
        self.writer_for(Target::Member(key), size)
    }

    /// A writer for the decoded bytes of region `key` (`size` bytes), unless another reader of
    /// this process is writing them already.
    pub fn decoded_region_writer(
        self: &Arc<Self>,
        key: RegionKey,
        size: u64,
    ) -> Result<Option<DecodedWriter>, StoreError> {
        self.writer_for(Target::Region(key), size)
    }

    fn writer_for(
        self: &Arc<Self>,
        key: Target,
        size: u64,
    ) -> Result<Option<DecodedWriter>, StoreError> {
        if !self.writing.targets.lock().insert(key) {
            return Ok(None);
        }
        let claim = Claim {
            store: self.clone(),
            key,
        };
        let tmp = self.temp_file()?;
        // Pages never written (holes of sparse members) read as zeros.
        tmp.as_file()
            .set_len(size)
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        Ok(Some(DecodedWriter {
            claim,
            size,
            tmp,
            covered: Mutex::new(Coverage::default()),
        }))
    }
}

/// Releases a writer slot when its writer goes (committed or dropped).
struct Claim {
    store: Arc<Store>,
    key: Target,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.store.writing.targets.lock().remove(&self.key);
    }
}

/// Decoded bytes of one member or region on their way into the store, written at any offset
/// in any order (FUSE reads arrive from several threads).
pub struct DecodedWriter {
    claim: Claim,
    size: u64,
    tmp: tempfile::NamedTempFile,
    covered: Mutex<Coverage>,
}

impl DecodedWriter {
    /// Writes `data` at `offset`; true once every byte of the member has been written.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<bool> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "decoded bytes [{offset}, {end}) past the member's {}",
                    self.size
                ),
            ));
        }
        write_leaving_holes(self.tmp.as_file(), data, offset)?;
        let mut covered = self.covered.lock();
        covered.add(offset, end);
        Ok(covered.total == self.size)
    }

    /// A second handle on the bytes being written, for reading them back while they are; it
    /// stays valid once they are committed (the file is renamed, not copied).
    pub fn reader(&self) -> io::Result<std::fs::File> {
        self.tmp.as_file().try_clone()
    }

    /// Hashes the written bytes (read back: the page cache still holds them), makes room
    /// under the quota, commits them as a blob and records which member or region they are. One commit
    /// runs at a time per store; others wait.
    pub fn commit(self) -> Result<BlobInfo, StoreError> {
        let _one_at_a_time = self.claim.store.writing.committing.lock();
        let path = self.tmp.path().to_path_buf();
        if self.covered.lock().total != self.size {
            return Err(StoreError::Io {
                path,
                source: io::Error::other("decoded member not written whole"),
            });
        }
        let digest = hash_file(self.tmp.as_file(), self.size)
            .map_err(|source| StoreError::Io { path, source })?;
        let info = BlobInfo {
            digest,
            size: self.size,
        };
        let store = &self.claim.store;
        if store.blob(&digest)?.is_none() {
            store.enforce_limits(&store.limits(), self.size)?;
            store.commit(self.tmp, &info)?;
        }
        store.with_db(|c| match self.claim.key {
            Target::Member(key) => c.execute(
                "INSERT OR REPLACE INTO decoded_members(archive, member, digest) VALUES (?1, ?2, ?3)",
                params![key.archive.hex(), key.member as i64, digest.hex()],
            ),
            Target::Region(key) => c.execute(
                "INSERT OR REPLACE INTO decoded_regions(archive, start, digest) VALUES (?1, ?2, ?3)",
                params![key.archive.hex(), key.start as i64, digest.hex()],
            ),
        })?;
        Ok(info)
    }
}

/// Page size for hole detection.
const PAGE: u64 = 4096;

/// Writes `data` at `offset`, skipping whole pages of zeros (the holes of sparse members stay
/// holes on disk; the file is new, so skipped pages read as zeros).
fn write_leaving_holes(file: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run: Option<usize> = None;
    let mut at = 0usize;
    while at < data.len() {
        let page_end = ((offset + at as u64) / PAGE + 1) * PAGE;
        let next = data.len().min((page_end - offset) as usize);
        let zero = data[at..next].iter().all(|&b| b == 0);
        match (zero, run) {
            (true, Some(start)) => {
                file.write_all_at(&data[start..at], offset + start as u64)?;
                run = None;
            }
            (false, None) => run = Some(at),
            _ => {}
        }
        at = next;
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// sha256 of the first `size` bytes of `file`.
fn hash_file(file: &std::fs::File, size: u64) -> io::Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        let want = buf.len().min((size - offset) as usize);
        file.read_exact_at(&mut buf[..want], offset)?;
        hasher.update(&buf[..want]);
        offset += want as u64;
    }
    Ok(hasher.finish())
}

/// Which byte ranges have been written: disjoint, merged intervals and their total length.
#[derive(Default, Debug)]
struct Coverage {
    /// start → end of each interval.
    runs: BTreeMap<u64, u64>,
    total: u64,
}

impl Coverage {
    /// Adds `[start, end)`, merging with what it touches or overlaps.
    fn add(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.runs.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.runs.remove(&s);
                self.total -= e - s;
            }
        }
        while let Some((&s, &e)) = self.runs.range(start..=end).next() {
            end = end.max(e);
            self.runs.remove(&s);
            self.total -= e - s;
        }
        self.runs.insert(start, end);
        self.total += end - start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_merges_out_of_order_and_overlapping_writes() {
        let mut c = Coverage::default();
        c.add(100, 200);
        c.add(300, 400);
        assert_eq!(c.total, 200);
        c.add(150, 320);
        assert_eq!((c.total, c.runs.len()), (300, 1));
        c.add(0, 100);
        c.add(400, 400);
        assert_eq!((c.total, c.runs.len()), (400, 1));
        c.add(50, 60);
        assert_eq!(c.total, 400);
    }

    #[test]
    fn zero_pages_are_left_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut data = vec![0u8; 5 * PAGE as usize];
        data[10] = 1;
        data[3 * PAGE as usize + 5] = 2;
        file.set_len(data.len() as u64).unwrap();
        write_leaving_holes(&file, &data[..100], 0).unwrap();
        write_leaving_holes(&file, &data[100..], 100).unwrap();
        let back = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(back, data);
        use std::os::unix::fs::MetadataExt;
        assert!(file.metadata().unwrap().blocks() * 512 <= 2 * PAGE);
    }

    #[test]
    fn a_member_written_whole_is_kept_and_forgotten_with_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let key = MemberKey {
            archive: Digest::of(b"archive"),
            member: 7,
        };
        let w = store.decoded_writer(key, 10).unwrap().unwrap();
        assert!(
            store.decoded_writer(key, 10).unwrap().is_none(),
            "one writer"
        );
        assert!(!w.write_at(5, b"world").unwrap());
        assert!(w.write_at(11, b"x").is_err());
        assert!(w.write_at(0, b"hello").unwrap());
        let info = w.commit().unwrap();
        assert_eq!(info.digest, Digest::of(b"helloworld"));
        assert_eq!(store.decoded_member(&key).unwrap(), Some(info));
        assert_eq!(store.decoded_members_of(&key.archive).unwrap(), vec![7]);
        assert_eq!(
            std::fs::read(store.blob_path(&info.digest)).unwrap(),
            b"helloworld"
        );
        assert!(
            store.decoded_writer(key, 10).unwrap().is_some(),
            "slot released"
        );
        let report = store.evict_to(0).unwrap();
        assert_eq!(report.removed, vec![(info.digest, 10)]);
        assert_eq!(store.decoded_member(&key).unwrap(), None);
    }

    #[test]
    fn a_region_is_readable_while_written_and_after_commit_then_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let key = RegionKey {
            archive: Digest::of(b"archive"),
            start: 4 << 20,
        };
        let w = store.decoded_region_writer(key, 8).unwrap().unwrap();
        assert!(store.decoded_region_writer(key, 8).unwrap().is_none());
        let member = MemberKey {
            archive: key.archive,
            member: key.start,
        };
        assert!(
            store.decoded_writer(member, 8).unwrap().is_some(),
            "a member and a region with the same number are different copies"
        );
        let back = w.reader().unwrap();
        w.write_at(0, b"abcd").unwrap();
        let mut buf = [0u8; 4];
        back.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcd");
        assert!(w.write_at(4, b"efgh").unwrap());
        let info = w.commit().unwrap();
        assert_eq!(
            store.decoded_regions_of(&key.archive).unwrap(),
            vec![(key.start, info.digest)]
        );
        back.read_exact_at(&mut buf, 4).unwrap();
        assert_eq!(&buf, b"efgh", "the reader outlives the commit");
        assert_eq!(store.decoded_member(&member).unwrap(), None);
        store.evict_to(0).unwrap();
        assert!(store.decoded_regions_of(&key.archive).unwrap().is_empty());
    }
}
