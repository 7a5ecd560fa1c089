//! The seek index as a publisher ships it: [`encode`] turns a [`BuiltIndex`] into the bytes
//! `lazycas index` puts in an archive's chunk index (hint kind 3), and [`decode`] turns them back
//! into a [`BuiltIndex`] a node saves with `ArchiveIndex::save` — so an archive with a pinned
//! index is browsable before a byte of it is fetched.
//!
//! Layout, version 1 (little-endian, no padding):
//!
//! | field | bytes |
//! |---|---|
//! | version (1) | u16 |
//! | format: 0 tar, 1 gzip | u8 |
//! | tar stream length | u64 |
//! | checkpoint count C | u64 |
//! | C × uncompressed offset, compressed offset, bits, window length W (`u32::MAX`: a gzip member start, no window), W bytes of deflated window | u64 + u64 + u8 + u32 + W |
//! | member count M (member `i` is id `i`, 1 = the root directory) | u64 |
//! | M × kind, mode, uid, gid, mtime, mtime nanoseconds, implied, xattr count X, X × (name length, name, value length, value), then by kind: file: size, data offset, sparse map length S (`u32::MAX`: not sparse), S bytes; symlink: target length, target; device: rdev | u8 + 4 × u32 + i64 + u32 + u8 + u32 + … |
//! | entry count E, sorted by (parent, name) | u64 |
//! | E × parent id, member id, name length N, name | u64 + u64 + u32 + N |
//!
//! Kinds: 0 file, 1 directory, 2 symlink, 3 char device, 4 block device, 5 fifo.
//!
//! [`decode`] runs after the whole index's sha256 matched its pin, and still trusts nothing:
//! counts are checked against the bytes left before anything is allocated, checkpoints must
//! increase in both offsets and start a chunk of the index (so a span read can be verified
//! before it is decoded), member data must lie in the tar stream, and the entries must form a
//! tree (a directory has one name, and a larger id than its parent, so there are no cycles).

use std::collections::HashMap;

use super::builder::{BuiltIndex, Format};
use super::checkpoint::Checkpoint;
use super::tar::{decode_sparse, encode_sparse, SparseChunk};
use super::tree::{Attrs, Content, FinishedTree, Node};
use super::MemberKind;
use crate::chunk::format::{Fields, Truncated};
use crate::chunk::ChunkIndex;

/// The layout version this code writes and reads.
pub const VERSION: u16 = 1;
/// No stored window: a checkpoint at a gzip member's header.
const NO_WINDOW: u32 = u32::MAX;
/// Not a sparse file.
const NOT_SPARSE: u32 = u32::MAX;
/// The largest deflated window accepted (a 32 KiB window deflates to a little more at worst).
const WINDOW_MAX: usize = 64 * 1024;
/// The fewest bytes a checkpoint, a member and an entry take (for count checks).
const CHECKPOINT_MIN: usize = 8 + 8 + 1 + 4;
const MEMBER_MIN: usize = 1 + 4 * 4 + 8 + 4 + 1 + 4;
const ENTRY_MIN: usize = 8 + 8 + 4;

/// Why a shipped seek index is unusable. Each variant names the rule broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishedIndexError {
    /// The bytes end inside a field.
    #[error("archive seek index truncated: ends inside the {field} at byte {at}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        at: usize,
    },
    /// A layout version this code does not read.
    #[error(
        "archive seek index version {0} is not supported (this lazycas reads version {VERSION})"
    )]
    Version(u16),
    /// A format code other than tar or gzip.
    #[error("archive seek index names unknown format {0}")]
    Format(u8),
    /// A count larger than the bytes left can hold.
    #[error("archive seek index claims {count} {what} but has room for {room}")]
    Count {
        /// What is counted.
        what: &'static str,
        /// The count claimed.
        count: u64,
        /// How many the remaining bytes can hold.
        room: u64,
    },
    /// A checkpoint breaks a rule.
    #[error("archive seek index checkpoint {index}: {what}")]
    Checkpoint {
        /// Its position.
        index: usize,
        /// The rule broken.
        what: String,
    },
    /// A member breaks a rule.
    #[error("archive seek index member {id}: {what}")]
    Member {
        /// Its id.
        id: u64,
        /// The rule broken.
        what: String,
    },
    /// A directory entry breaks a rule.
    #[error("archive seek index entry {index}: {what}")]
    Entry {
        /// Its position.
        index: usize,
        /// The rule broken.
        what: String,
    },
    /// The index has no seek index at all.
    #[error(
        "the chunk index carries no archive seek index (index the .tar.gz with `lazycas index`)"
    )]
    Missing,
    /// Bytes follow the last entry.
    #[error("archive seek index has {0} trailing bytes")]
    TrailingBytes(usize),
}

impl From<Truncated> for PublishedIndexError {
    fn from(t: Truncated) -> PublishedIndexError {
        PublishedIndexError::Truncated {
            field: t.field,
            at: t.at,
        }
    }
}

/// Where decoding can start in the blob: one offset per checkpoint (its first compressed byte,
/// counting the partly used byte before a mid-byte checkpoint), or every `piece` bytes of a
/// plain tar. `lazycas index` cuts the archive's chunks there.
pub fn span_starts(built: &BuiltIndex, size: u64, piece: u64) -> Vec<u64> {
    match built.format {
        Format::Gzip => shipped_checkpoints(built).map(decode_start).collect(),
        Format::Tar => (1..)
            .map(|k| k * piece.max(1))
            .take_while(|&o| o < size)
            .collect(),
    }
}

/// The checkpoints shipped: the first of those at one tar offset (empty gzip members give
/// several), as `ArchiveIndex::save` keeps them.
fn shipped_checkpoints(built: &BuiltIndex) -> impl Iterator<Item = &Checkpoint> {
    let mut last: Option<u64> = None;
    built.checkpoints.iter().filter(move |cp| {
        let new = last.is_none_or(|l| cp.uoff > l);
        if new {
            last = Some(cp.uoff);
        }
        new
    })
}

/// The first blob byte decoding from `cp` reads.
pub(crate) fn decode_start(cp: &Checkpoint) -> u64 {
    match (&cp.window, cp.bits) {
        (Some(_), 1..) => cp.cbyte.saturating_sub(1),
        _ => cp.cbyte,
    }
}

/// The version-1 bytes of `built` (see the module doc).
pub fn encode(built: &BuiltIndex) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(built.format.code() as u8);
    out.extend_from_slice(&built.stream_len.to_le_bytes());
    let checkpoints: Vec<&Checkpoint> = shipped_checkpoints(built).collect();
    out.extend_from_slice(&(checkpoints.len() as u64).to_le_bytes());
    for cp in checkpoints {
        out.extend_from_slice(&cp.uoff.to_le_bytes());
        out.extend_from_slice(&cp.cbyte.to_le_bytes());
        out.push(cp.bits);
        match &cp.window {
            None => out.extend_from_slice(&NO_WINDOW.to_le_bytes()),
            Some(w) => put_bytes(&mut out, w),
        }
    }
    out.extend_from_slice(&(built.tree.len() as u64).to_le_bytes());
    for row in built.tree.members() {
        encode_member(&mut out, row.node);
    }
    let entries: Vec<(u64, &[u8], u64)> = built.tree.entries().collect();
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (parent, name, member) in entries {
        out.extend_from_slice(&parent.to_le_bytes());
        out.extend_from_slice(&member.to_le_bytes());
        put_bytes(&mut out, name);
    }
    out
}

/// Appends a u32 length and the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_member(out: &mut Vec<u8>, node: &Node) {
    let a = node.attrs;
    out.push(node.kind().code() as u8);
    for v in [a.mode, a.uid, a.gid] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&a.mtime.to_le_bytes());
    out.extend_from_slice(&a.mtime_nanos.to_le_bytes());
    out.push(u8::from(a.implied));
    out.extend_from_slice(&(node.xattrs.len() as u32).to_le_bytes());
    for (name, value) in &node.xattrs {
        put_bytes(out, name);
        put_bytes(out, value);
    }
    match &node.content {
        Content::File {
            size,
            data_offset,
            sparse,
        } => {
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&data_offset.to_le_bytes());
            match sparse {
                None => out.extend_from_slice(&NOT_SPARSE.to_le_bytes()),
                Some(chunks) => put_bytes(out, &encode_sparse(chunks)),
            }
        }
        Content::Symlink(target) => put_bytes(out, target),
        Content::Special { rdev, .. } => out.extend_from_slice(&rdev.to_le_bytes()),
        Content::Dir(_) | Content::Free => {}
    }
}

/// The header and checkpoints of a shipped seek index, checked against the chunk `index` that
/// carries it.
pub(crate) struct Header {
    pub format: Format,
    pub stream_len: u64,
    pub checkpoints: Vec<Checkpoint>,
}

/// Reads the header and checkpoints from `f`.
fn decode_header(f: &mut Fields<'_>, index: &ChunkIndex) -> Result<Header, PublishedIndexError> {
    let version = f.u16("version")?;
    if version != VERSION {
        return Err(PublishedIndexError::Version(version));
    }
    let code = f.u8("format")?;
    let format = Format::from_code(i64::from(code)).ok_or(PublishedIndexError::Format(code))?;
    let stream_len = f.u64("tar stream length")?;
    let count = counted(f, "checkpoints", CHECKPOINT_MIN)?;
    let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(count);
    for i in 0..count {
        let cp = decode_checkpoint(f, i)?;
        check_checkpoint(i, &cp, checkpoints.last(), stream_len, index)?;
        checkpoints.push(cp);
    }
    let bad_start = match format {
        Format::Gzip => checkpoints.first().is_none_or(|cp| cp.uoff != 0),
        Format::Tar => !checkpoints.is_empty(),
    };
    if bad_start {
        return Err(PublishedIndexError::Checkpoint {
            index: 0,
            what: "a gzip archive needs a first checkpoint at offset 0, a tar archive none".into(),
        });
    }
    Ok(Header {
        format,
        stream_len,
        checkpoints,
    })
}

/// Reads a count and checks the bytes left can hold that many records of `min_len` bytes.
fn counted(
    f: &mut Fields<'_>,
    what: &'static str,
    min_len: usize,
) -> Result<usize, PublishedIndexError> {
    let count = f.u64(what)?;
    let room = (f.remaining() / min_len) as u64;
    if count > room {
        return Err(PublishedIndexError::Count { what, count, room });
    }
    // `count <= room`, derived from a slice length: it fits in usize.
    Ok(count as usize)
}

fn decode_checkpoint(f: &mut Fields<'_>, index: usize) -> Result<Checkpoint, PublishedIndexError> {
    let uoff = f.u64("checkpoint offset")?;
    let cbyte = f.u64("checkpoint compressed offset")?;
    let bits = f.u8("checkpoint bits")?;
    let window = match f.u32("checkpoint window length")? {
        NO_WINDOW => None,
        len => {
            let len = len as usize;
            if len > WINDOW_MAX {
                return Err(PublishedIndexError::Checkpoint {
                    index,
                    what: format!("window of {len} bytes (at most {WINDOW_MAX})"),
                });
            }
            Some(f.take(len, "checkpoint window")?.to_vec())
        }
    };
    Ok(Checkpoint {
        uoff,
        cbyte,
        bits,
        window,
    })
}

fn check_checkpoint(
    index: usize,
    cp: &Checkpoint,
    previous: Option<&Checkpoint>,
    stream_len: u64,
    chunks: &ChunkIndex,
) -> Result<(), PublishedIndexError> {
    let fail = |what: String| Err(PublishedIndexError::Checkpoint { index, what });
    if cp.bits > 7 || (cp.window.is_none() && cp.bits != 0) {
        return fail(format!("{} bits", cp.bits));
    }
    if cp.bits > 0 && cp.cbyte == 0 {
        return fail("a mid-byte checkpoint at compressed offset 0".into());
    }
    if let Some(p) = previous {
        if cp.uoff <= p.uoff || cp.cbyte <= p.cbyte {
            return fail(format!(
                "offsets {} / {} do not increase from {} / {}",
                cp.uoff, cp.cbyte, p.uoff, p.cbyte
            ));
        }
    }
    if cp.uoff > stream_len || cp.cbyte >= chunks.size() {
        return fail(format!(
            "offsets {} / {} past the tar stream ({stream_len}) or the archive ({})",
            cp.uoff,
            cp.cbyte,
            chunks.size()
        ));
    }
    let start = decode_start(cp);
    if !chunks.is_chunk_start(start) {
        return fail(format!(
            "decoding starts at compressed offset {start}, not at a chunk start"
        ));
    }
    Ok(())
}

/// The checkpoints of a shipped seek index (its member table not read), checked as
/// [`decode`] checks them.
pub(crate) fn decode_checkpoints(
    payload: &[u8],
    index: &ChunkIndex,
) -> Result<Header, PublishedIndexError> {
    decode_header(&mut Fields::new(payload), index)
}

/// Decodes a shipped seek index carried by chunk `index`, checking every rule in
/// [`PublishedIndexError`].
pub fn decode(payload: &[u8], index: &ChunkIndex) -> Result<BuiltIndex, PublishedIndexError> {
    let mut f = Fields::new(payload);
    let header = decode_header(&mut f, index)?;
    let count = counted(&mut f, "members", MEMBER_MIN)?;
    if count == 0 {
        return Err(PublishedIndexError::Member {
            id: 1,
            what: "missing: the root directory must be member 1".into(),
        });
    }
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let id = i as u64 + 1;
        let node = decode_member(&mut f, id, header.stream_len)?;
        if id == 1 && node.kind() != MemberKind::Dir {
            return Err(PublishedIndexError::Member {
                id,
                what: "the root is not a directory".into(),
            });
        }
        nodes.push(node);
    }
    link_entries(&mut f, &mut nodes)?;
    if f.remaining() != 0 {
        return Err(PublishedIndexError::TrailingBytes(f.remaining()));
    }
    Ok(BuiltIndex {
        format: header.format,
        stream_len: header.stream_len,
        tree: FinishedTree::numbered(nodes),
        checkpoints: header.checkpoints,
    })
}

/// Reads a u32 length and that many bytes (no more than the bytes left).
fn get_bytes(f: &mut Fields<'_>, field: &'static str) -> Result<Vec<u8>, PublishedIndexError> {
    let len = f.u32(field)? as usize;
    Ok(f.take(len, field)?.to_vec())
}

fn decode_member(
    f: &mut Fields<'_>,
    id: u64,
    stream_len: u64,
) -> Result<Node, PublishedIndexError> {
    let fail = |what: String| PublishedIndexError::Member { id, what };
    let code = f.u8("member kind")?;
    let kind = MemberKind::from_code(i64::from(code))
        .ok_or_else(|| fail(format!("unknown kind {code}")))?;
    let attrs = Attrs {
        mode: f.u32("member mode")? & 0o7777,
        uid: f.u32("member uid")?,
        gid: f.u32("member gid")?,
        mtime: i64::from_le_bytes(f.array("member mtime")?),
        mtime_nanos: f.u32("member mtime nanoseconds")?.min(999_999_999),
        implied: f.u8("member implied flag")? != 0,
    };
    let xattr_count = f.u32("member xattr count")? as usize;
    if xattr_count > f.remaining() / 8 {
        return Err(fail(format!("{xattr_count} xattrs do not fit")));
    }
    let mut xattrs = Vec::with_capacity(xattr_count);
    for _ in 0..xattr_count {
        xattrs.push((get_bytes(f, "xattr name")?, get_bytes(f, "xattr value")?));
    }
    let content = match kind {
        MemberKind::File => decode_file(f, stream_len).map_err(|e| match e {
            FileError::Fields(t) => t.into(),
            FileError::Rule(what) => fail(what),
        })?,
        MemberKind::Dir => Content::Dir(HashMap::new()),
        MemberKind::Symlink => Content::Symlink(get_bytes(f, "symlink target")?),
        MemberKind::CharDevice | MemberKind::BlockDevice => Content::Special {
            kind,
            rdev: f.u64("device number")?,
        },
        MemberKind::Fifo => Content::Special { kind, rdev: 0 },
    };
    Ok(Node::restored(attrs, content, xattrs))
}

/// A file member's layout could not be read, or breaks a rule.
enum FileError {
    Fields(Truncated),
    Rule(String),
}

impl From<Truncated> for FileError {
    fn from(t: Truncated) -> FileError {
        FileError::Fields(t)
    }
}

/// A file's size, data offset and sparse map; its stored bytes must lie in the tar stream.
fn decode_file(f: &mut Fields<'_>, stream_len: u64) -> Result<Content, FileError> {
    let size = f.u64("file size")?;
    let data_offset = f.u64("file data offset")?;
    let sparse = match f.u32("sparse map length")? {
        NOT_SPARSE => None,
        len => {
            let bytes = f.take(len as usize, "sparse map")?;
            Some(decode_sparse(bytes).ok_or_else(|| FileError::Rule("bad sparse map".into()))?)
        }
    };
    let stored = match &sparse {
        None => Some(size),
        Some(chunks) => stored_len(chunks, size),
    };
    let end = stored.and_then(|s| data_offset.checked_add(s));
    if end.is_none_or(|end| end > stream_len) {
        return Err(FileError::Rule(format!(
            "data at {data_offset} ({size} bytes) runs past the tar stream ({stream_len} bytes)"
        )));
    }
    Ok(Content::File {
        size,
        data_offset,
        sparse,
    })
}

/// Bytes a sparse map stores, if its chunks are ordered and within the file.
fn stored_len(chunks: &[SparseChunk], size: u64) -> Option<u64> {
    let mut total = 0u64;
    let mut at = 0u64;
    for c in chunks {
        let end = c.offset.checked_add(c.len)?;
        if c.offset < at || end > size {
            return None;
        }
        at = end;
        total = total.checked_add(c.len)?;
    }
    Some(total)
}

/// Reads the entries and puts each name in its directory, checking they form a tree.
fn link_entries(f: &mut Fields<'_>, nodes: &mut [Node]) -> Result<(), PublishedIndexError> {
    let count = counted(f, "entries", ENTRY_MIN)?;
    let mut named_dirs = vec![false; nodes.len()];
    let mut previous: Option<(u64, Vec<u8>)> = None;
    for index in 0..count {
        let parent = f.u64("entry parent")?;
        let member = f.u64("entry member")?;
        let name = get_bytes(f, "entry name")?;
        let fail = |what: String| Err(PublishedIndexError::Entry { index, what });
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return fail(format!("bad name {:?}", String::from_utf8_lossy(&name)));
        }
        let key = (parent, name);
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return fail("entries are not sorted by (parent, name) without repeats".into());
        }
        let (parent, name) = key;
        let (Some(p), Some(m)) = (slot(parent, nodes.len()), slot(member, nodes.len())) else {
            return fail(format!("member {member} or parent {parent} does not exist"));
        };
        if m == 0 {
            return fail("names the root".into());
        }
        if nodes[m].kind() == MemberKind::Dir {
            if member <= parent || std::mem::replace(&mut named_dirs[m], true) {
                return fail(format!("directory {member} would not form a tree"));
            }
        } else {
            nodes[m].add_link();
        }
        let Content::Dir(children) = &mut nodes[p].content else {
            return fail(format!("parent {parent} is not a directory"));
        };
        children.insert(name.clone().into_boxed_slice(), m);
        previous = Some((parent, name));
    }
    Ok(())
}

/// The arena index of member `id` among `len` members.
fn slot(id: u64, len: usize) -> Option<usize> {
    let i = usize::try_from(id.checked_sub(1)?).ok()?;
    (i < len).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::IndexBuilder;
    use crate::cli::demo::samples::pseudo_random;

    /// A tar.gz with a few kinds of members and enough data for several checkpoints.
    fn sample_archive() -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        };
        add("dir/a.txt", b"hello");
        add("dir/sub/big.bin", &pseudo_random(600_000, 3));
        add("z.txt", b"last");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        tar.append_link(&mut h, "dir/link", "a.txt").unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    fn built(archive: &[u8]) -> BuiltIndex {
        let mut b = IndexBuilder::with_checkpoint_spacing(64 * 1024);
        b.feed(archive).unwrap();
        b.finish().unwrap()
    }

    fn chunk_index(archive: &[u8], built: &BuiltIndex) -> ChunkIndex {
        let starts = span_starts(built, archive.len() as u64, 4 << 20);
        ChunkIndex::build_at(archive, archive.len() as u64, &starts, encode(built)).unwrap()
    }

    #[test]
    fn round_trips_members_entries_and_checkpoints() {
        let archive = sample_archive();
        let original = built(&archive);
        assert!(original.checkpoints.len() > 3);
        let index = chunk_index(&archive, &original);
        let decoded = decode(&encode(&original), &index).unwrap();
        assert_eq!(decoded.checkpoints, original.checkpoints);
        assert_eq!(decoded.stream_len, original.stream_len);
        assert_eq!(encode(&decoded), encode(&original));
        let nlinks = |b: &BuiltIndex| b.tree.members().map(|m| m.nlink).collect::<Vec<_>>();
        assert_eq!(nlinks(&decoded), nlinks(&original));
    }

    #[test]
    fn a_plain_tar_is_cut_in_pieces_and_round_trips() {
        let gz = sample_archive();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let b = built(&raw);
        assert!(!b.is_gzip() && b.checkpoints.is_empty());
        let starts = span_starts(&b, raw.len() as u64, 100_000);
        assert_eq!(starts[..3], [100_000, 200_000, 300_000]);
        let index = ChunkIndex::build_at(&raw[..], raw.len() as u64, &starts, encode(&b)).unwrap();
        assert_eq!(encode(&decode(&encode(&b), &index).unwrap()), encode(&b));
    }

    #[test]
    fn checkpoints_at_one_offset_ship_once() {
        let archive = sample_archive();
        let mut b = built(&archive);
        let first = b.checkpoints[0].clone();
        b.checkpoints.insert(
            1,
            Checkpoint {
                cbyte: first.cbyte + 1,
                ..first
            },
        );
        let index = chunk_index(&archive, &b);
        let decoded = decode(&encode(&b), &index).unwrap();
        assert_eq!(decoded.checkpoints.len(), b.checkpoints.len() - 1);
    }

    #[test]
    fn every_checkpoint_starts_a_chunk() {
        let archive = sample_archive();
        let b = built(&archive);
        let index = chunk_index(&archive, &b);
        for cp in &b.checkpoints {
            assert!(index.is_chunk_start(decode_start(cp)));
        }
    }

    #[test]
    fn refuses_checkpoints_off_the_chunk_starts() {
        let archive = sample_archive();
        let b = built(&archive);
        let whole = ChunkIndex::build_at(&archive[..], archive.len() as u64, &[], Vec::new());
        let err = decode(&encode(&b), &whole.unwrap()).unwrap_err();
        assert!(
            matches!(err, PublishedIndexError::Checkpoint { index: 1, .. }),
            "{err}"
        );
    }

    /// Where checkpoint `i` starts in an encoded seek index.
    fn checkpoint_at(bytes: &[u8], i: usize) -> usize {
        let mut at = 2 + 1 + 8 + 8;
        for _ in 0..i {
            let w = u32::from_le_bytes(bytes[at + 17..at + 21].try_into().unwrap());
            at += 21 + if w == NO_WINDOW { 0 } else { w as usize };
        }
        at
    }

    #[test]
    fn refuses_offsets_that_do_not_increase() {
        let archive = sample_archive();
        let b = built(&archive);
        let index = chunk_index(&archive, &b);
        let mut bytes = encode(&b);
        let (one, two) = (checkpoint_at(&bytes, 1), checkpoint_at(&bytes, 2));
        let first_uoff = bytes[one..one + 8].to_vec();
        bytes[two..two + 8].copy_from_slice(&first_uoff);
        let err = decode(&bytes, &index).unwrap_err();
        assert!(
            matches!(err, PublishedIndexError::Checkpoint { index: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_member_data_past_the_stream() {
        let archive = sample_archive();
        let mut b = built(&archive);
        let index = chunk_index(&archive, &b);
        b.stream_len = 1000;
        let err = decode(&encode(&b), &index).unwrap_err();
        assert!(
            matches!(
                err,
                PublishedIndexError::Member { .. } | PublishedIndexError::Checkpoint { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_truncation_and_trailing_bytes() {
        let archive = sample_archive();
        let b = built(&archive);
        let index = chunk_index(&archive, &b);
        let bytes = encode(&b);
        for cut in (0..bytes.len()).step_by(7) {
            assert!(decode(&bytes[..cut], &index).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode(&long, &index).unwrap_err(),
            PublishedIndexError::TrailingBytes(1)
        );
    }

    /// Random damage never panics, and what is accepted is still a tree of the right size.
    #[test]
    fn damaged_payloads_never_panic() {
        let archive = sample_archive();
        let b = built(&archive);
        let index = chunk_index(&archive, &b);
        let good = encode(&b);
        let noise = pseudo_random(2000 * 3 * 8, 41);
        for round in 0..2000 {
            let r = |k: usize| {
                u64::from_le_bytes(noise[(round * 3 + k) * 8..][..8].try_into().unwrap()) as usize
            };
            let mut bytes = good.clone();
            bytes[r(0) % good.len()] ^= (r(1) % 255 + 1) as u8;
            if let Ok(d) = decode(&bytes, &index) {
                assert_eq!(d.tree.len(), b.tree.len());
            }
        }
    }
}
