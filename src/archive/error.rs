//! The archive layer's error type. Every variant names the entry, offset or member at fault, so
//! a log line alone tells which byte of which archive was wrong; the fs layer maps them all to EIO.

use std::io;

use super::MemberId;
use crate::digest::Digest;

/// Why an archive could not be indexed, queried or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The bytes are neither gzip nor tar (or use an unsupported compression).
    #[error("not a tar or tar.gz archive: {0}")]
    NotAnArchive(String),
    /// The gzip framing or the deflate data inside it is corrupt.
    #[error("corrupt gzip data at compressed offset {offset}: {what}")]
    Gzip {
        /// Compressed byte offset where the problem was seen.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// A gzip member's CRC-32 or ISIZE trailer does not match the data it holds.
    #[error(
        "gzip member starting at compressed offset {member_offset}: {field} mismatch \
         (trailer says {expected:#010x}, data gives {actual:#010x})"
    )]
    Trailer {
        /// Compressed offset of the member's header.
        member_offset: u64,
        /// `"crc32"` or `"isize"`.
        field: &'static str,
        /// The value recorded in the trailer.
        expected: u32,
        /// The value computed from the decompressed data.
        actual: u32,
    },
    /// The compressed stream ends inside a gzip member.
    #[error("truncated gzip stream: ends {what} (compressed offset {offset})")]
    Truncated {
        /// Compressed length seen.
        offset: u64,
        /// Where in the member it ended.
        what: &'static str,
    },
    /// A tar header that cannot be used and cannot be skipped.
    #[error("tar entry {entry:?} (header at offset {offset}): {what}")]
    Tar {
        /// The entry's name as far as it is known (lossy UTF-8).
        entry: String,
        /// Offset of its header in the uncompressed tar stream.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// A name, link target, extended header or sparse map larger than its cap.
    #[error("tar header at offset {offset}: {what} of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        /// Offset of the header in the uncompressed tar stream.
        offset: u64,
        /// Which field.
        what: &'static str,
        /// The size the archive claims.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// The database holds no index for this archive.
    #[error("no archive index for {0}")]
    NotIndexed(Digest),
    /// The member id does not exist in this archive's index.
    #[error("archive member {0} not found")]
    NoSuchMember(MemberId),
    /// The member exists but is of another kind than the call needs.
    #[error("archive member {id} is not a {expected}")]
    WrongKind {
        /// The member asked for.
        id: MemberId,
        /// The kind the call needs (`"symlink"`, `"regular file"`).
        expected: &'static str,
    },
    /// SQLite failed.
    #[error("archive index database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The stored index contradicts itself or the blob (a bug, or a foreign writer).
    #[error("archive index for {digest} is inconsistent: {what}")]
    CorruptIndex {
        /// The archive.
        digest: Digest,
        /// What contradicts what.
        what: String,
    },
    /// Reading the archive blob failed.
    #[error("reading archive blob at offset {offset}: {source}")]
    Io {
        /// Byte offset in the blob.
        offset: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing or reading a decoded region's copy failed.
    #[error("decoded region at stream offset {start}: {source}")]
    Region {
        /// Stream offset of the region.
        start: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A seek index shipped with the archive (`lazycas index`) is unusable.
    #[error(transparent)]
    Published(#[from] super::PublishedIndexError),
    /// `feed` or `finish` called after an earlier `feed` failed.
    #[error("index builder already failed: {0}")]
    Poisoned(String),
}
