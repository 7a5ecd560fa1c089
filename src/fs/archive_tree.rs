//! The members of open archives as nodes ([`ArchiveTree`], keys `Member(archive, id)`):
//! attributes as `tar -x` would leave them, lookup, readdir, reads, symlinks and the archive's
//! own xattrs. The archive root belongs to whoever shows the archive (a catalog entry, later
//! a set member or an image layer); that owner answers for the root by calling the `*_in`
//! functions here with the open archive. Only translation: the format lives in `archive`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::FileType;

use super::namespace::{
    Attr, DirEntry, Entry, Key, Namespace, NodeRef, NsError, OpenFile, Ttl, Xattrs,
};
use crate::archive::{ArchiveError, Member, MemberId, MemberKind};
use crate::content::{Content, OpenArchive};

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
                .readdir(dir, cookie, 256)
                .map_err(|e| tree_error(a, e))?;
            if batch.is_empty() {
                return Ok(());
            }
            for entry in batch {
                cookie = entry.offset;
                let full = add(DirEntry {
                    node: self.node(a, entry.member.id),
                    kind: file_type(entry.member.kind),
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

    /// Opens regular file `id` of `a` for reading.
    pub fn open_in(a: Arc<OpenArchive>, id: MemberId) -> Box<dyn OpenFile> {
        Box::new(MemberFile { archive: a, id })
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

/// An open regular file inside an archive.
struct MemberFile {
    archive: Arc<OpenArchive>,
    id: MemberId,
}

impl OpenFile for MemberFile {
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, NsError> {
        self.archive
            .read(self.id, offset, size)
            .map_err(|e| tree_error(&self.archive, e))
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
