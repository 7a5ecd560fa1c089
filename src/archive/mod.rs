//! Archives as directories: a seek index for `.tar` and `.tar.gz` blobs, and the member read path.
//!
//! This module is the format layer between `fs` (which asks "what is in this directory, give me
//! bytes 4096.. of that file") and `store` (which holds the verified blob). It never fetches and
//! never knows about inodes or errno. Its API is three types:
//!
//! - [`IndexBuilder`] sees the archive bytes once, in download order, and builds a
//!   [`BuiltIndex`]: zran-style gzip checkpoints plus the member tree tar extraction would produce.
//! - [`ArchiveIndex`] stores that in SQLite (tables prefixed `archive_`, keyed by the archive's
//!   [`Digest`](crate::digest::Digest)) and answers `lookup`, `readdir`, `readlink`, `xattrs`.
//! - [`ArchiveReader`] serves member bytes, decompressing only from the nearest checkpoint, with
//!   decoded spans in a shared, byte-bounded [`SpanCache`].
//!
//! # Layout
//! `gzip` (header/trailer framing), `inflate` (raw deflate through zlib-rs; the only `unsafe`),
//! `checkpoint` (window storage), `scan` (push-style gzip walk that records checkpoints),
//! `window_worker` (probes and packs the checkpoint windows on a second thread),
//! `tar` (push-style tar parser: ustar, GNU, PAX, sparse), `tree` (GNU tar extraction semantics),
//! `builder`, `index` (SQLite), `decoder` + `span_cache` + `reader` (the read path), `regions`
//! (the stream between two checkpoints decoded once into the store, for small members);
//! `published` (the seek index as `lazycas index` ships it) and `span_map` (which compressed
//! spans a member read needs, for archives read before they are all here).
//!
//! # Raw inflate: libz-rs-sys
//! Checkpoints need what flate2 hides: `Z_BLOCK` (stop at deflate block boundaries and report the
//! bit position in `data_type`), `inflatePrime` (resume mid-byte) and `inflateSetDictionary`
//! (restore the 32 KiB window). We use `libz-rs-sys`, the zlib C API over `zlib-rs`: it has all
//! three with zlib's exact semantics (so zran's algorithm ports line for line), it is pure Rust
//! (no C toolchain, no system zlib, symbols not exported so it cannot clash with another zlib),
//! and `zlib-rs` is already in the build through flate2. `libz-ng-sys` needs cmake and a C build;
//! miniz_oxide's block API has no equivalent of `inflatePrime`.
//!
//! # Extraction semantics (what the tree shows)
//! The tree is what `tar -xzf` run as root with default options leaves on disk:
//! - **Names.** Leading `/` is stripped, `.` and empty components are dropped; a member whose name
//!   has a `..` component is skipped with a warning (GNU: "Member name contains '..'"). Hard-link
//!   targets are cut after their last `..` component and lose their leading `/` (GNU: "Removing
//!   leading `../' from hard link targets"). A regular-file entry whose name ends in `/` is a
//!   directory. Names are bytes; non-UTF-8 survives.
//! - **Later entries win.** A non-directory replaces whatever non-directory or *empty* directory
//!   was at its path; it never replaces a non-empty directory (skipped: "File exists"). A
//!   directory entry over an existing directory only updates its attributes; over a non-directory
//!   it replaces it.
//! - **Missing parents** appear as directories: mode 0755, uid/gid 0, mtime of the entry that
//!   needed them. The root takes the mtime of the first entry unless the archive has a `./` entry.
//! - **Symlinks** are stored verbatim and never followed: an entry `dir/x` whose parent `dir` is a
//!   symlink (or a file) is skipped with a warning. GNU tar does the same for symlinks whose target
//!   is absolute or has `..` (it extracts them as placeholder files); for a relative in-archive
//!   target GNU tar would write through the link — we deliberately do not.
//! - **Hard links** resolve at the point they occur, to whatever the target path holds then: they
//!   share that [`MemberId`] and `nlink` counts the links. A later entry replacing the target gets
//!   a new member; earlier links keep the old content (as `unlink` + create does on disk). Links to
//!   missing targets or directories are skipped with a warning; a link to a symlink links the
//!   symlink. Cycles cannot form.
//! - **Directories** take attributes from their own (last) entry when there is one; `nlink` is
//!   2 + subdirectories. Symlinks report the target length as size and mode 0777 (Linux
//!   symlinks have no mode of their own).
//! - **End of archive** is the first zero block (GNU stops there, so of two concatenated tar
//!   archives only the first shows). Missing zero blocks are fine. A bad header checksum after the
//!   first header skips block by block to the next valid header ("Skipping to next header"). An
//!   entry whose data is cut short by the end of the stream is dropped with a warning.
//! - **PAX** `x` headers apply to the next entry; `g` headers set defaults for mtime, uid, gid,
//!   uname, gname and `SCHILY.xattr.*` (not path, linkpath, size or sparse keys). `SCHILY.xattr.*`
//!   become [`ArchiveIndex::xattrs`]. uname/gname are not stored: ids are shown numerically.
//! - **Sparse** files (old GNU `S`, PAX 0.0/0.1/1.0) have their real size; holes read as zeros.
//!
//! Malformed gzip (bad CRC/ISIZE, truncation, corrupt deflate) fails the whole index: no byte of
//! such an archive can be trusted. Names over 64 KiB and extended headers over 8 MiB are errors;
//! a sparse map over 1 Mi chunks is an error (old GNU) or skips its entry (PAX), so hostile
//! headers cannot exhaust memory. The tree itself grows with the number of live entries.

mod builder;
mod checkpoint;
mod decoder;
mod error;
mod gzip;
mod index;
mod inflate;
pub mod published;
mod read_ahead;
mod reader;
mod regions;
mod scan;
mod span_cache;
mod span_map;
mod tar;
mod tree;
mod window_worker;

use std::fmt;

pub use builder::{BuiltIndex, IndexBuilder};
pub use decoder::warm_up;
pub use error::ArchiveError;
pub use index::ArchiveIndex;
pub use published::PublishedIndexError;
pub use reader::ArchiveReader;
pub use regions::{RegionStore, RegionWriter};
pub use span_cache::{SpanCache, DEFAULT_SPAN_CACHE_BYTES};
pub use span_map::SpanMap;

/// A member's number inside one archive index. Stable for a given archive content; hard links
/// share one. The root directory is [`MemberId::ROOT`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MemberId(pub u64);

impl MemberId {
    /// The archive's root directory.
    pub const ROOT: MemberId = MemberId(1);
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a member is. Hard links are not a kind: they resolve to the member they link to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemberKind {
    /// A regular file (possibly sparse).
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is [`ArchiveIndex::readlink`].
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

impl MemberKind {
    /// The stable number stored in the index.
    fn code(self) -> i64 {
        match self {
            MemberKind::File => 0,
            MemberKind::Dir => 1,
            MemberKind::Symlink => 2,
            MemberKind::CharDevice => 3,
            MemberKind::BlockDevice => 4,
            MemberKind::Fifo => 5,
        }
    }

    /// The inverse of [`MemberKind::code`].
    fn from_code(code: i64) -> Option<MemberKind> {
        Some(match code {
            0 => MemberKind::File,
            1 => MemberKind::Dir,
            2 => MemberKind::Symlink,
            3 => MemberKind::CharDevice,
            4 => MemberKind::BlockDevice,
            5 => MemberKind::Fifo,
            _ => return None,
        })
    }
}

/// One member's attributes, as the archive records them (what `stat` shows after extraction).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// Its id; hard links share it.
    pub id: MemberId,
    /// File, directory, symlink, device or fifo.
    pub kind: MemberKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask), without the type bits.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Bytes a read returns: the real size for sparse files, the target length for symlinks,
    /// 0 for directories and devices.
    pub size: u64,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds part of the modification time (PAX fractions), `0..1e9`.
    pub mtime_nanos: u32,
    /// Link count: names linking this member, or 2 + subdirectories for a directory.
    pub nlink: u32,
    /// Device number (Linux `makedev(major, minor)`) for devices, else 0.
    pub rdev: u64,
    /// A directory the archive needs (a parent of its entries) but has no entry for: its
    /// attributes are what `tar -x` gives such a directory, not recorded ones.
    pub implied: bool,
}

/// One extended attribute: (name, value), both bytes.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// One directory entry, as [`ArchiveIndex::readdir`] returns it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntry {
    /// The entry's name (one path component, bytes).
    pub name: Vec<u8>,
    /// The member it names, with attributes (enough for FUSE `readdirplus`).
    pub member: Member,
    /// The cookie to pass as `offset` to continue after this entry.
    pub offset: u64,
}

/// One directory entry with only the member's id and kind, as
/// [`ArchiveIndex::readdir_kinds`] returns it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirName {
    /// The entry's name (one path component, bytes).
    pub name: Vec<u8>,
    /// The member it names.
    pub id: MemberId,
    /// The member's kind.
    pub kind: MemberKind,
    /// The cookie to pass as `offset` to continue after this entry.
    pub offset: u64,
}

#[cfg(test)]
mod tests;
