//! The members of open archives as nodes ([`ArchiveTree`], keys `Member(archive, id)`):
//! attributes as `tar -x` would leave them, lookup, readdir, reads, symlinks and the archive's
//! own xattrs. The archive root belongs to whoever shows the archive (a catalog entry, later
//! a set member or an image layer); that owner answers for the root by calling the `*_in`
//! functions here with the open archive. Only translation: the format lives in `archive`.
//!
//! A regular member of at least [`KEEP_DECODED_MIN`] bytes is written to the store's decoded
//! cache as it is served; once a handle has served every byte, the copy is committed (on a
//! thread of its own) and later opens read that blob, with passthrough when the kernel offers
//! it. Smaller members stay with the kernel's page cache (`FOPEN_KEEP_CACHE`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::FileType;

use super::blob_file;
use super::namespace::{
    Attr, DirEntry, Entry, Key, Namespace, NodeRef, NsError, OpenFile, Ttl, Xattrs,
};
use crate::archive::{ArchiveError, Member, MemberId, MemberKind};
use crate::content::{Content, OpenArchive};
use crate::store::DecodedWriter;

/// Members smaller than this are not kept decoded (the page cache keeps them well enough, and
/// a blob per small file would cost more in rows and fsyncs than it saves).
pub const KEEP_DECODED_MIN: u64 = 1 << 20;

/// Members of every open archive.
pub struct ArchiveTree {
    content: Arc<Content>,
    /// This namespace as a trait object, for the node refs it hands out.
    me: std::sync::Weak<ArchiveTree>,
}

impl ArchiveTree {
    /// The tree namespace over `content`'s open archives.
    pub fn new(content: Arc<Content>) -> Arc<ArchiveTree> {
        Arc::new_cyclic(|me| ArchiveTree {
            content,
            me: me.clone(),
        })
    }

    fn node(&self, a: &OpenArchive, id: MemberId) -> NodeRef {
        NodeRef::of(&self.me, Key::Member(a.digest, id))
    }

    fn open_archive(&self, key: &Key) -> Result<(Arc<OpenArchive>, MemberId), NsError> {
        match key {
            Key::Member(d, id) => Ok((
                self.content.archives().get(d).ok_or(NsError::NotFound)?,
                *id,
            )),
            _ => Err(NsError::NotFound),
        }
    }

    /// `lookup(dir, name)` inside `a`.
    pub fn lookup_in(&self, a: &OpenArchive, dir: MemberId, name: &[u8]) -> Result<Entry, NsError> {
        let m = a.index.lookup(dir, name).map_err(|e| tree_error(a, e))?;
        let m = m.ok_or(NsError::NotFound)?;
        Ok(Entry {
            node: self.node(a, m.id),
            attr: member_attr(&m),
            ttl: Ttl::Immutable,
        })
    }

    /// `readdir(dir)` inside `a`.
    pub fn readdir_in(
        &self,
        a: &OpenArchive,
        dir: MemberId,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let mut cookie = after;
        loop {
            let batch = a
                .index
                .readdir_kinds(dir, cookie, 256)
                .map_err(|e| tree_error(a, e))?;
            if batch.is_empty() {
                return Ok(());
            }
            for entry in batch {
                cookie = entry.offset;
                let full = add(DirEntry {
                    node: self.node(a, entry.id),
                    kind: file_type(entry.kind),
                    name: entry.name,
                    cookie: entry.offset,
                });
                if full {
                    return Ok(());
                }
            }
        }
    }

    /// Attributes of member `id` of `a`.
    pub fn attr_in(a: &OpenArchive, id: MemberId) -> Result<Attr, NsError> {
        let m = a.index.member(id).map_err(|e| tree_error(a, e))?;
        Ok(member_attr(&m))
    }

    /// Opens regular file `id` of `a` for reading: its decoded copy when the store holds one,
    /// else decoding from the archive.
    pub fn open_in(a: Arc<OpenArchive>, id: MemberId) -> Box<dyn OpenFile> {
        if let Some(blob) = a.decoded_member(id) {
            return blob_file::complete(blob);
        }
        Box::new(MemberFile {
            archive: a,
            id,
            keep: parking_lot::Mutex::new(Keep::Untried),
        })
    }

    /// The target of symlink `id` of `a`.
    pub fn readlink_in(a: &OpenArchive, id: MemberId) -> Result<Vec<u8>, NsError> {
        a.index.readlink(id).map_err(|e| tree_error(a, e))
    }

    /// The archive's own xattrs of a member (`SCHILY.xattr.*`) plus `user.lazycas.*`.
    pub fn xattrs_in(a: &OpenArchive, id: MemberId) -> Result<Xattrs, NsError> {
        let mut v = vec![
            (
                b"user.lazycas.digest".to_vec(),
                a.digest.to_string().into_bytes(),
            ),
            (
                b"user.lazycas.source".to_vec(),
                a.source.clone().into_bytes(),
            ),
            (
                b"user.lazycas.cached".to_vec(),
                format!("{}/{}", a.resident(), a.size).into_bytes(),
            ),
        ];
        v.extend(a.index.xattrs(id).map_err(|e| tree_error(a, e))?);
        Ok(v)
    }
}

impl Namespace for ArchiveTree {
    fn name(&self) -> &'static str {
        "archive"
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let (a, id) = self.open_archive(key)?;
        Ok((ArchiveTree::attr_in(&a, id)?, Ttl::Immutable))
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let (a, dir) = self.open_archive(parent)?;
        self.lookup_in(&a, dir, name)
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let (a, dir) = self.open_archive(dir)?;
        self.readdir_in(&a, dir, after, add)
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        let (archive, id) = self.open_archive(key)?;
        Ok(ArchiveTree::open_in(archive, id))
    }

    fn readlink(&self, key: &Key) -> Result<Vec<u8>, NsError> {
        let (a, id) = self.open_archive(key)?;
        ArchiveTree::readlink_in(&a, id)
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let (a, id) = self.open_archive(key)?;
        ArchiveTree::xattrs_in(&a, id)
    }
}

/// An open regular file inside an archive, decoded on demand.
struct MemberFile {
    archive: Arc<OpenArchive>,
    id: MemberId,
    keep: parking_lot::Mutex<Keep>,
}

/// Whether this handle writes what it serves to the decoded cache.
enum Keep {
    /// Not decided yet (decided at the first read).
    Untried,
    /// Writing; committed once every byte was served.
    Writing(DecodedWriter),
    /// Not for this handle: too small, kept already, written by another handle, or failed.
    Off,
}

impl OpenFile for MemberFile {
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, NsError> {
        let data = self
            .archive
            .read(self.id, offset, size)
            .map_err(|e| tree_error(&self.archive, e))?;
        self.keep_decoded(offset, size, &data);
        Ok(data)
    }
}

impl MemberFile {
    /// Writes `data` (served from `offset`, `asked` bytes asked for) to the decoded copy, and
    /// commits the copy in the background once it is whole. Failures only mean the member is
    /// not kept.
    fn keep_decoded(&self, offset: u64, asked: u32, data: &[u8]) {
        let mut keep = self.keep.lock();
        if let Keep::Untried = *keep {
            let end = offset + data.len() as u64;
            let ended_small = data.len() < asked as usize && end < KEEP_DECODED_MIN;
            *keep = if ended_small {
                Keep::Off
            } else {
                self.start_keeping()
            };
        }
        let Keep::Writing(writer) = &*keep else {
            return;
        };
        match writer.write_at(offset, data) {
            Ok(false) => {}
            Ok(true) => {
                if let Keep::Writing(writer) = std::mem::replace(&mut *keep, Keep::Off) {
                    self.commit_in_background(writer);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "keeping {} of {} decoded: {e}",
                    self.id,
                    self.archive.source
                );
                *keep = Keep::Off;
            }
        }
    }

    /// A writer when the member is large enough to keep.
    fn start_keeping(&self) -> Keep {
        let size = match self.archive.index.member(self.id) {
            Ok(m) if m.kind == MemberKind::File && m.size >= KEEP_DECODED_MIN => m.size,
            _ => return Keep::Off,
        };
        match self.archive.keep_decoded(self.id, size) {
            Some(w) => Keep::Writing(w),
            None => Keep::Off,
        }
    }

    /// Hashes, fsyncs and records the copy on a thread of its own (the reader does not wait).
    fn commit_in_background(&self, writer: DecodedWriter) {
        let (id, archive) = (self.id, self.archive.clone());
        let spawned = std::thread::Builder::new()
            .name("keep-decoded".into())
            .spawn(move || match writer.commit() {
                Ok(info) => {
                    archive.note_kept(id);
                    tracing::info!(
                        "kept {id} of {} decoded as {} ({} bytes)",
                        archive.source,
                        info.digest.short(),
                        info.size
                    )
                }
                Err(e) => tracing::warn!("keeping {id} of {} decoded: {e}", archive.source),
            });
        if let Err(e) = spawned {
            tracing::warn!("keeping {id} of {} decoded: {e}", self.archive.source);
        }
    }
}

fn tree_error(a: &OpenArchive, error: ArchiveError) -> NsError {
    NsError::Tree {
        source_name: a.source.clone(),
        digest: a.digest,
        error,
    }
}

/// The file type of a member kind.
pub fn file_type(kind: MemberKind) -> FileType {
    match kind {
        MemberKind::File => FileType::RegularFile,
        MemberKind::Dir => FileType::Directory,
        MemberKind::Symlink => FileType::Symlink,
        MemberKind::CharDevice => FileType::CharDevice,
        MemberKind::BlockDevice => FileType::BlockDevice,
        MemberKind::Fifo => FileType::NamedPipe,
    }
}

/// A member's attributes as `stat` shows them after extraction.
fn member_attr(m: &Member) -> Attr {
    Attr {
        kind: file_type(m.kind),
        perm: (m.mode & 0o7777) as u16,
        size: m.size,
        nlink: m.nlink,
        uid: m.uid,
        gid: m.gid,
        rdev: m.rdev as u32,
        mtime: member_mtime(m),
    }
}

fn member_mtime(m: &Member) -> SystemTime {
    if m.mtime >= 0 {
        UNIX_EPOCH + Duration::new(m.mtime as u64, m.mtime_nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.mtime.unsigned_abs())
            + Duration::from_nanos(m.mtime_nanos as u64)
    }
}
