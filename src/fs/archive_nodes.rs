//! The kernel's view of archive members: attribute conversion, lookup, readdir, read and
//! xattrs answered from an [`OpenArchive`]. Only translation; the format lives in `archive`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileType, Generation, INodeNo, ReplyData, ReplyDirectory, ReplyEntry,
};

use super::{Inner, Node, IMMUTABLE_TTL};
use crate::archive::{ArchiveError, Member, MemberId, MemberKind};
use crate::archives::OpenArchive;

/// Logs a format-layer failure with the archive named and returns EIO.
pub(super) fn errno(a: &OpenArchive, e: &ArchiveError) -> Errno {
    tracing::error!(archive = %a.source, "{}: {e}", a.digest.short());
    Errno::EIO
}

fn file_type(kind: MemberKind) -> FileType {
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
pub(super) fn member_attr(ino: u64, m: &Member) -> FileAttr {
    let mtime = if m.mtime >= 0 {
        UNIX_EPOCH + Duration::new(m.mtime as u64, m.mtime_nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.mtime.unsigned_abs())
            + Duration::from_nanos(m.mtime_nanos as u64)
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size,
        blocks: m.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(m.kind),
        perm: (m.mode & 0o7777) as u16,
        nlink: m.nlink,
        uid: m.uid,
        gid: m.gid,
        rdev: m.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The inode of member `id` (the archive root is not a member node of its own).
fn member_ino(inner: &Inner, a: &OpenArchive, id: MemberId) -> u64 {
    inner.inodes.ino(Node::Member(a.digest, id))
}

/// `lookup(dir, name)` inside an archive.
pub(super) fn lookup(
    inner: &Arc<Inner>,
    a: &Arc<OpenArchive>,
    dir: MemberId,
    name: &[u8],
    reply: ReplyEntry,
) {
    match a.index.lookup(dir, name) {
        Ok(Some(m)) => {
            let attr = member_attr(member_ino(inner, a, m.id), &m);
            reply.entry(&IMMUTABLE_TTL, &attr, Generation(0));
        }
        Ok(None) => reply.error(Errno::ENOENT),
        Err(e) => reply.error(errno(a, &e)),
    }
}

/// `readdir(dir)`: kernel offsets 0 and 1 are `.` and `..`; archive cookies follow, shifted by 2.
pub(super) fn readdir(
    inner: &Arc<Inner>,
    a: &Arc<OpenArchive>,
    dir: MemberId,
    dir_ino: u64,
    offset: u64,
    mut reply: ReplyDirectory,
) {
    if offset == 0 && reply.add(INodeNo(dir_ino), 1, FileType::Directory, ".") {
        return reply.ok();
    }
    if offset <= 1 && reply.add(INodeNo(1), 2, FileType::Directory, "..") {
        return reply.ok();
    }
    let mut cookie = offset.saturating_sub(2);
    loop {
        let batch = match a.index.readdir(dir, cookie, 256) {
            Ok(b) => b,
            Err(e) => return reply.error(errno(a, &e)),
        };
        if batch.is_empty() {
            break;
        }
        for entry in batch {
            let ino = member_ino(inner, a, entry.member.id);
            let kind = file_type(entry.member.kind);
            if reply.add(
                INodeNo(ino),
                entry.offset + 2,
                kind,
                OsStr::from_bytes(&entry.name),
            ) {
                return reply.ok();
            }
            cookie = entry.offset;
        }
    }
    reply.ok();
}

/// `read` of a member.
pub(super) fn read(a: &Arc<OpenArchive>, id: MemberId, offset: u64, size: u32, reply: ReplyData) {
    match a.reader.read(id, offset, size) {
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(a, &e)),
    }
}

/// The archive's own xattrs of a member (`SCHILY.xattr.*`) plus `user.lazycas.*`.
pub(super) fn xattrs(a: &OpenArchive, id: MemberId) -> Vec<(Vec<u8>, Vec<u8>)> {
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
            format!("{}/{}", a.size, a.size).into_bytes(),
        ),
    ];
    match a.index.xattrs(id) {
        Ok(x) => v.extend(x),
        Err(e) => {
            errno(a, &e);
        }
    }
    v
}
