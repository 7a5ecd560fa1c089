//! [`ArchiveIndex`]: an archive's index in SQLite, keyed by the archive's digest.
//!
//! Tables (all `archive_*`, created by [`ArchiveIndex::init_schema`]):
//! - `archive_archives`: digest → small integer `aid`, format, tar stream length;
//! - `archive_members`: one row per member (hard links share one), `(aid, id)` key;
//! - `archive_entries`: names, keyed `(aid, parent, name)`, which is both the `lookup` index and
//!   the `readdir` order;
//! - `archive_xattrs`: `(aid, member, name)` → value;
//! - `archive_checkpoints`: gzip resume points with their deflated windows.
//!
//! Size matters (ratarmount's index is the baseline): names are stored once, as one component
//! each (no full paths); the small tables are `WITHOUT ROWID` so the key is the row; integers are
//! SQLite varints. u64 values are stored as their i64 bit pattern.
//!
//! `readdir` offsets are positions in name order, stable because an index never changes once
//! saved. Continuing a listing uses the last name returned (kept in a small cursor cache) so a
//! large directory is listed in O(n log n), not O(n²).

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::builder::{BuiltIndex, Format};
use super::checkpoint::Checkpoint;
use super::tar::{decode_sparse, encode_sparse, SparseChunk};
use super::tree::Content;
use super::{ArchiveError, DirEntry, DirName, Member, MemberId, MemberKind, Xattr};
use crate::digest::Digest;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS archive_archives (
    aid        INTEGER PRIMARY KEY,
    digest     BLOB NOT NULL UNIQUE,
    format     INTEGER NOT NULL,
    stream_len INTEGER NOT NULL,
    members    INTEGER NOT NULL,
    created    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS archive_members (
    aid      INTEGER NOT NULL,
    id       INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    mode     INTEGER NOT NULL,
    uid      INTEGER NOT NULL,
    gid      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime    INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    nlink    INTEGER NOT NULL,
    rdev     INTEGER NOT NULL,
    data     INTEGER NOT NULL,
    target   BLOB,
    sparse   BLOB,
    implied  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aid, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archive_entries (
    aid    INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    name   BLOB NOT NULL,
    member INTEGER NOT NULL,
    PRIMARY KEY (aid, parent, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archive_xattrs (
    aid    INTEGER NOT NULL,
    member INTEGER NOT NULL,
    name   BLOB NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (aid, member, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archive_checkpoints (
    aid    INTEGER NOT NULL,
    uoff   INTEGER NOT NULL,
    cbyte  INTEGER NOT NULL,
    bits   INTEGER NOT NULL,
    window BLOB,
    PRIMARY KEY (aid, uoff)
);
";

/// How much of the database file an index connection maps (SQLite `mmap_size`).
const INDEX_MMAP_BYTES: i64 = 1 << 30;

/// Member columns, in the order [`member_from_row`] reads them.
const MEMBER_COLS: &str =
    "m.id, m.kind, m.mode, m.uid, m.gid, m.size, m.mtime, m.mtime_ns, m.nlink, m.rdev, m.implied";
/// Remembered `readdir` continuations.
const CURSORS: usize = 64;

/// Where a regular file's bytes are in the tar stream.
#[derive(Debug)]
pub(crate) struct DataLayout {
    /// File size.
    pub size: u64,
    /// First data byte in the tar stream.
    pub data_offset: u64,
    /// Sparse files: chunks with the stream offset of each.
    pub sparse: Option<Vec<(SparseChunk, u64)>>,
}

/// One archive's index, opened read-only from the database. Thread-safe: queries serialise on
/// one connection (each takes microseconds).
pub struct ArchiveIndex {
    conn: Mutex<Connection>,
    aid: i64,
    digest: Digest,
    format: Format,
    stream_len: u64,
    cursors: Mutex<LruCache<(MemberId, u64), Vec<u8>>>,
}

impl std::fmt::Debug for ArchiveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveIndex")
            .field("digest", &self.digest)
            .field("format", &self.format)
            .finish()
    }
}

impl ArchiveIndex {
    /// Creates the `archive_*` tables if they do not exist.
    pub fn init_schema(conn: &Connection) -> Result<(), ArchiveError> {
        conn.execute_batch(SCHEMA)?;
        // Indexes saved before the `implied` column count every directory as listed.
        let has_implied: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('archive_members') WHERE name = 'implied'")?
            .exists([])?;
        if !has_implied {
            conn.execute_batch(
                "ALTER TABLE archive_members ADD COLUMN implied INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        Ok(())
    }

    /// Stores a built index under `archive`, in one transaction. If an index for this digest is
    /// already there (another process built the same content), it is kept and this one dropped.
    pub fn save(
        conn: &Connection,
        archive: &Digest,
        built: BuiltIndex,
    ) -> Result<(), ArchiveError> {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        if Self::aid_of(&tx, archive)?.is_some() {
            return Ok(());
        }
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT INTO archive_archives (digest, format, stream_len, members, created)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &archive.as_bytes()[..],
                built.format.code(),
                built.stream_len as i64,
                built.tree.len() as i64,
                created
            ],
        )?;
        let aid = tx.last_insert_rowid();
        save_members(&tx, aid, &built)?;
        save_entries(&tx, aid, &built)?;
        save_checkpoints(&tx, aid, &built.checkpoints)?;
        tx.commit()?;
        Ok(())
    }

    /// True if an index for `archive` is stored.
    pub fn exists(conn: &Connection, archive: &Digest) -> Result<bool, ArchiveError> {
        Ok(Self::aid_of(conn, archive)?.is_some())
    }

    /// Removes the index of `archive` (when its blob is evicted). Returns how many members it
    /// had (0 if there was no index).
    pub fn delete(conn: &Connection, archive: &Digest) -> Result<u64, ArchiveError> {
        // A savepoint nests inside the caller's transaction (Store::forget_blob runs hooks in one).
        conn.execute_batch("SAVEPOINT archive_delete")?;
        let run = || -> Result<u64, ArchiveError> {
            let Some(aid) = Self::aid_of(conn, archive)? else {
                return Ok(0);
            };
            let members = conn.execute("DELETE FROM archive_members WHERE aid = ?1", [aid])?;
            for table in [
                "archive_entries",
                "archive_xattrs",
                "archive_checkpoints",
                "archive_archives",
            ] {
                conn.execute(&format!("DELETE FROM {table} WHERE aid = ?1"), [aid])?;
            }
            Ok(members as u64)
        };
        match run() {
            Ok(n) => {
                conn.execute_batch("RELEASE archive_delete")?;
                Ok(n)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK TO archive_delete; RELEASE archive_delete");
                Err(e)
            }
        }
    }

    /// Opens the stored index of `archive` on its own connection to the database at `db_path`.
    pub fn open(db_path: &Path, archive: &Digest) -> Result<ArchiveIndex, ArchiveError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(db_path, flags)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "query_only", true)?;
        // Index pages are read through a mapping of the database file: a page once read stays
        // in this process's memory (reclaimable, as any clean file page) even when another
        // connection's write, the stats flush for one, makes SQLite drop its own page cache.
        conn.pragma_update(None, "mmap_size", INDEX_MMAP_BYTES)?;
        let row = conn
            .query_row(
                "SELECT aid, format, stream_len FROM archive_archives WHERE digest = ?1",
                [&archive.as_bytes()[..]],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((aid, format, stream_len)) = row else {
            return Err(ArchiveError::NotIndexed(*archive));
        };
        let format = Format::from_code(format).ok_or_else(|| ArchiveError::CorruptIndex {
            digest: *archive,
            what: format!("unknown format code {format}"),
        })?;
        Ok(ArchiveIndex {
            conn: Mutex::new(conn),
            aid,
            digest: *archive,
            format,
            stream_len: stream_len as u64,
            cursors: Mutex::new(LruCache::new(
                NonZeroUsize::new(CURSORS).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// The archive's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The root directory.
    pub fn root(&self) -> MemberId {
        MemberId::ROOT
    }

    /// The member named `name` in directory `parent`, if any.
    pub fn lookup(&self, parent: MemberId, name: &[u8]) -> Result<Option<Member>, ArchiveError> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM archive_entries e
             JOIN archive_members m ON m.aid = e.aid AND m.id = e.member
             WHERE e.aid = ?1 AND e.parent = ?2 AND e.name = ?3"
        );
        let conn = self.conn.lock();
        let raw = conn
            .prepare_cached(&sql)?
            .query_row(params![self.aid, parent.0 as i64, name], |r| {
                member_from_row(r, 0)
            })
            .optional()?;
        raw.map(|raw| self.member_of(raw)).transpose()
    }

    /// The member with id `id`.
    pub fn member(&self, id: MemberId) -> Result<Member, ArchiveError> {
        let sql =
            format!("SELECT {MEMBER_COLS} FROM archive_members m WHERE m.aid = ?1 AND m.id = ?2");
        let conn = self.conn.lock();
        let raw = conn
            .prepare_cached(&sql)?
            .query_row(params![self.aid, id.0 as i64], |r| member_from_row(r, 0))
            .optional()?;
        let raw = raw.ok_or(ArchiveError::NoSuchMember(id))?;
        self.member_of(raw)
    }

    /// Up to `max` entries of directory `dir` in name order, starting at position `offset`
    /// (0 for the start; else the `offset` of the last entry returned before).
    pub fn readdir(
        &self,
        dir: MemberId,
        offset: u64,
        max: usize,
    ) -> Result<Vec<DirEntry>, ArchiveError> {
        let rows = self.listing(dir, offset, max, MEMBER_COLS, |r| member_from_row(r, 1))?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, (name, raw)) in rows.into_iter().enumerate() {
            out.push(DirEntry {
                name,
                member: self.member_of(raw)?,
                offset: offset + i as u64 + 1,
            });
        }
        Ok(out)
    }

    /// [`ArchiveIndex::readdir`] with only what a directory listing shows of each member: its
    /// id and kind (a `find` reads no other column).
    pub fn readdir_kinds(
        &self,
        dir: MemberId,
        offset: u64,
        max: usize,
    ) -> Result<Vec<DirName>, ArchiveError> {
        let rows = self.listing(dir, offset, max, "m.id, m.kind", |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, (name, (id, kind))) in rows.into_iter().enumerate() {
            let kind = MemberKind::from_code(kind)
                .ok_or_else(|| self.corrupt(format!("member {id} has unknown kind {kind}")))?;
            out.push(DirName {
                name,
                id: MemberId(id as u64),
                kind,
                offset: offset + i as u64 + 1,
            });
        }
        Ok(out)
    }

    /// The rows of a directory page (name, then `cols` of the member mapped by `map`), with
    /// the continuation cursor remembered; an empty first page of a non-directory is an error.
    fn listing<T>(
        &self,
        dir: MemberId,
        offset: u64,
        max: usize,
        cols: &str,
        map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<(Vec<u8>, T)>, ArchiveError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let after = match offset {
            0 => None,
            _ => self.cursors.lock().get(&(dir, offset)).cloned(),
        };
        let rows = self.readdir_rows(dir, offset, after, max, cols, map)?;
        if rows.is_empty() && offset == 0 && self.member(dir)?.kind != MemberKind::Dir {
            return Err(ArchiveError::WrongKind {
                id: dir,
                expected: "directory",
            });
        }
        if let Some((name, _)) = rows.last() {
            self.cursors
                .lock()
                .put((dir, offset + rows.len() as u64), name.clone());
        }
        Ok(rows)
    }

    /// The raw rows of a `readdir` page: after a known name, or skipping `offset` rows.
    fn readdir_rows<T>(
        &self,
        dir: MemberId,
        offset: u64,
        after: Option<Vec<u8>>,
        max: usize,
        cols: &str,
        map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<(Vec<u8>, T)>, ArchiveError> {
        let base = format!(
            "SELECT e.name, {cols} FROM archive_entries e
             JOIN archive_members m ON m.aid = e.aid AND m.id = e.member
             WHERE e.aid = ?1 AND e.parent = ?2"
        );
        let map = |r: &Row<'_>| Ok((r.get::<_, Vec<u8>>(0)?, map(r)?));
        let conn = self.conn.lock();
        let rows = match after {
            Some(name) => {
                let sql = format!("{base} AND e.name > ?3 ORDER BY e.name LIMIT ?4");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(params![self.aid, dir.0 as i64, name, max as i64], map)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let sql = format!("{base} ORDER BY e.name LIMIT ?3 OFFSET ?4");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![self.aid, dir.0 as i64, max as i64, offset as i64],
                    map,
                )?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// A symlink's target, verbatim.
    pub fn readlink(&self, id: MemberId) -> Result<Vec<u8>, ArchiveError> {
        let conn = self.conn.lock();
        let row = conn
            .prepare_cached("SELECT kind, target FROM archive_members WHERE aid = ?1 AND id = ?2")?
            .query_row(params![self.aid, id.0 as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
            })
            .optional()?;
        match row {
            None => Err(ArchiveError::NoSuchMember(id)),
            Some((kind, Some(target))) if kind == MemberKind::Symlink.code() => Ok(target),
            Some(_) => Err(ArchiveError::WrongKind {
                id,
                expected: "symlink",
            }),
        }
    }

    /// The member's extended attributes (`SCHILY.xattr.*`), sorted by name.
    pub fn xattrs(&self, id: MemberId) -> Result<Vec<Xattr>, ArchiveError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, value FROM archive_xattrs WHERE aid = ?1 AND member = ?2 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![self.aid, id.0 as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// How the tar stream is stored in the blob.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Length of the tar stream.
    pub(crate) fn stream_len(&self) -> u64 {
        self.stream_len
    }

    /// Where a regular file's bytes are.
    pub(crate) fn layout(&self, id: MemberId) -> Result<DataLayout, ArchiveError> {
        let conn = self.conn.lock();
        let row = conn
            .prepare_cached(
                "SELECT kind, size, data, sparse FROM archive_members WHERE aid = ?1 AND id = ?2",
            )?
            .query_row(params![self.aid, id.0 as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .optional()?;
        drop(conn);
        let (kind, size, data, sparse) = row.ok_or(ArchiveError::NoSuchMember(id))?;
        if kind != MemberKind::File.code() {
            return Err(ArchiveError::WrongKind {
                id,
                expected: "regular file",
            });
        }
        let data_offset = data as u64;
        let sparse = match sparse {
            None => None,
            Some(blob) => Some(self.sparse_layout(id, &blob, data_offset)?),
        };
        Ok(DataLayout {
            size: size as u64,
            data_offset,
            sparse,
        })
    }

    /// Decodes a stored sparse map and adds each chunk's stream offset.
    fn sparse_layout(
        &self,
        id: MemberId,
        blob: &[u8],
        data_offset: u64,
    ) -> Result<Vec<(SparseChunk, u64)>, ArchiveError> {
        let chunks =
            decode_sparse(blob).ok_or_else(|| self.corrupt(format!("sparse map of {id}")))?;
        let mut phys = data_offset;
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            out.push((c, phys));
            phys = phys
                .checked_add(c.len)
                .ok_or_else(|| self.corrupt(format!("sparse map of {id}")))?;
        }
        Ok(out)
    }

    /// The checkpoint with the greatest offset at or before `uoff`.
    pub(crate) fn checkpoint_before(&self, uoff: u64) -> Result<Checkpoint, ArchiveError> {
        let conn = self.conn.lock();
        let row = conn
            .prepare_cached(
                "SELECT uoff, cbyte, bits, window FROM archive_checkpoints
                 WHERE aid = ?1 AND uoff <= ?2 ORDER BY uoff DESC LIMIT 1",
            )?
            .query_row(params![self.aid, uoff as i64], |r| {
                Ok(Checkpoint {
                    uoff: r.get::<_, i64>(0)? as u64,
                    cbyte: r.get::<_, i64>(1)? as u64,
                    bits: r.get::<_, i64>(2)?.clamp(0, 7) as u8,
                    window: r.get(3)?,
                })
            })
            .optional()?;
        row.ok_or_else(|| self.corrupt(format!("no checkpoint at or before stream offset {uoff}")))
    }

    /// Where every checkpoint is, in order: (stream offset, compressed offset). The stream
    /// offsets are the starts of the decoded regions.
    pub(crate) fn checkpoint_positions(&self) -> Result<Vec<(u64, u64)>, ArchiveError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT uoff, cbyte FROM archive_checkpoints WHERE aid = ?1 ORDER BY uoff",
        )?;
        let rows = stmt.query_map(params![self.aid], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The offset of the first checkpoint after `uoff`, if there is one.
    pub(crate) fn checkpoint_after(&self, uoff: u64) -> Result<Option<u64>, ArchiveError> {
        let conn = self.conn.lock();
        let row = conn
            .prepare_cached(
                "SELECT uoff FROM archive_checkpoints
                 WHERE aid = ?1 AND uoff > ?2 ORDER BY uoff LIMIT 1",
            )?
            .query_row(params![self.aid, uoff as i64], |r| r.get::<_, i64>(0))
            .optional()?;
        Ok(row.map(|u| u as u64))
    }

    /// An inconsistency error for this archive.
    pub(crate) fn corrupt(&self, what: String) -> ArchiveError {
        ArchiveError::CorruptIndex {
            digest: self.digest,
            what,
        }
    }

    /// Checks and converts a raw member row.
    fn member_of(&self, raw: RawMember) -> Result<Member, ArchiveError> {
        let id = MemberId(raw.id as u64);
        let kind = MemberKind::from_code(raw.kind)
            .ok_or_else(|| self.corrupt(format!("member {id} has kind code {}", raw.kind)))?;
        Ok(Member {
            id,
            kind,
            mode: raw.mode as u32 & 0o7777,
            uid: raw.uid as u32,
            gid: raw.gid as u32,
            size: raw.size as u64,
            mtime: raw.mtime,
            mtime_nanos: raw.mtime_ns.clamp(0, 999_999_999) as u32,
            nlink: raw.nlink.clamp(0, i64::from(u32::MAX)) as u32,
            rdev: raw.rdev as u64,
            implied: raw.implied != 0,
        })
    }
}

/// A member row as SQLite returns it.
struct RawMember {
    id: i64,
    kind: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    size: i64,
    mtime: i64,
    mtime_ns: i64,
    nlink: i64,
    rdev: i64,
    implied: i64,
}

/// Reads [`MEMBER_COLS`] starting at column `at`.
fn member_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<RawMember> {
    Ok(RawMember {
        id: r.get(at)?,
        kind: r.get(at + 1)?,
        mode: r.get(at + 2)?,
        uid: r.get(at + 3)?,
        gid: r.get(at + 4)?,
        size: r.get(at + 5)?,
        mtime: r.get(at + 6)?,
        mtime_ns: r.get(at + 7)?,
        nlink: r.get(at + 8)?,
        rdev: r.get(at + 9)?,
        implied: r.get(at + 10)?,
    })
}

impl ArchiveIndex {
    /// The `aid` of a stored archive.
    fn aid_of(conn: &Connection, archive: &Digest) -> Result<Option<i64>, ArchiveError> {
        Ok(conn
            .prepare_cached("SELECT aid FROM archive_archives WHERE digest = ?1")?
            .query_row([&archive.as_bytes()[..]], |r| r.get(0))
            .optional()?)
    }
}

/// Inserts every member row and its xattrs.
fn save_members(conn: &Connection, aid: i64, built: &BuiltIndex) -> Result<(), ArchiveError> {
    let mut member = conn.prepare_cached(
        "INSERT INTO archive_members
         (aid, id, kind, mode, uid, gid, size, mtime, mtime_ns, nlink, rdev, data, target, sparse,
          implied)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let mut xattr = conn.prepare_cached(
        "INSERT OR REPLACE INTO archive_xattrs (aid, member, name, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for row in built.tree.members() {
        let node = row.node;
        let (size, rdev, data, target, sparse) = match &node.content {
            Content::File {
                size,
                data_offset,
                sparse,
            } => (
                *size,
                0,
                *data_offset,
                None,
                sparse.as_deref().map(encode_sparse),
            ),
            Content::Symlink(t) => (t.len() as u64, 0, 0, Some(t.as_slice()), None),
            Content::Special { rdev, .. } => (0, *rdev, 0, None, None),
            Content::Dir(_) | Content::Free => (0, 0, 0, None, None),
        };
        let a = node.attrs;
        member.execute(params![
            aid,
            row.id as i64,
            node.kind().code(),
            a.mode,
            a.uid,
            a.gid,
            size as i64,
            a.mtime,
            a.mtime_nanos,
            row.nlink,
            rdev as i64,
            data as i64,
            target,
            sparse,
            a.implied
        ])?;
        for (name, value) in &node.xattrs {
            xattr.execute(params![aid, row.id as i64, name, value])?;
        }
    }
    Ok(())
}

/// Inserts every name.
fn save_entries(conn: &Connection, aid: i64, built: &BuiltIndex) -> Result<(), ArchiveError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO archive_entries (aid, parent, name, member) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (parent, name, member) in built.tree.entries() {
        stmt.execute(params![aid, parent as i64, name, member as i64])?;
    }
    Ok(())
}

/// Inserts the gzip checkpoints.
fn save_checkpoints(
    conn: &Connection,
    aid: i64,
    checkpoints: &[Checkpoint],
) -> Result<(), ArchiveError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO archive_checkpoints (aid, uoff, cbyte, bits, window)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for cp in checkpoints {
        stmt.execute(params![
            aid,
            cp.uoff as i64,
            cp.cbyte as i64,
            cp.bits,
            cp.window.as_deref()
        ])?;
    }
    Ok(())
}
