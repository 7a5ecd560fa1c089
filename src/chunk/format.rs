//! The chunk index's binary encoding, version 1: [`ChunkIndex::to_bytes`] and the defensive
//! [`ChunkIndex::parse`].
//!
//! Every integer is little-endian; there is no padding. In order:
//!
//! | field | bytes |
//! |---|---|
//! | magic `LZYCHUNK` | 8 |
//! | version (1) | u16 |
//! | file size | u64 |
//! | file sha256 | 32 |
//! | chunker name length N, then the name (ASCII, `fastcdc-v2020` or `archive-spans-v1`) | u8 + N |
//! | chunker min, avg, max size (archive spans: 1, max, max) | 3 × u32 |
//! | chunk count C | u64 |
//! | C chunks: end offset, sha256 | C × (u64 + 32) |
//! | hint count H | u16 |
//! | H hints: kind, payload length L, payload | H × (u16 + u32 + L) |
//!
//! Hint kinds: 1 squashfs (image offset u64, the 96 raw superblock bytes), 2 SIF (end of the
//! descriptor section u64, primary partition offset u64 and size u64, its fs type i32),
//! 3 archive seek index (its own versioned layout, decoded by `crate::archive::published`).
//! A reader refuses a version it does not know; a hint kind it does not know is skipped (hints
//! only speed reads up), so new kinds need no new version. Nothing may follow the last hint.
//!
//! The index comes from the network: its sha256 is checked against the catalog's pin before a
//! byte is parsed, and every count is checked against the bytes left before anything is
//! allocated from it.

use super::chunker::{ChunkerParams, ChunkerParamsError, CHUNKER_NAME};
use super::hints::{ArchiveHint, HintError, Hints, SifHint, SquashfsHint};
use super::index::{ChunkEntry, ChunkIndex};
use super::spans::{Cutting, SPANS_NAME, SPAN_PIECE_LIMIT};
use super::squashfs::SUPERBLOCK_LEN;
use crate::digest::Digest;
use crate::range::ByteRange;

/// The first 8 bytes of every chunk index.
pub const MAGIC: &[u8; 8] = b"LZYCHUNK";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;

const CHUNK_ENTRY_LEN: usize = 8 + 32;
const HINT_SQUASHFS: u16 = 1;
const HINT_SIF: u16 = 2;
const HINT_ARCHIVE: u16 = 3;
const SQUASHFS_PAYLOAD_LEN: usize = 8 + SUPERBLOCK_LEN;
const SIF_PAYLOAD_LEN: usize = 8 + 8 + 8 + 4;

/// Why bytes are not a usable chunk index. Each variant names the rule broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkIndexError {
    /// The bytes' sha256 is not the pinned one (checked before parsing).
    #[error("chunk index sha256 mismatch: expected {expected}, got {actual}")]
    PinMismatch {
        /// The pinned digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The bytes end inside a field.
    #[error("chunk index truncated: ends inside the {field} at byte {at}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        at: usize,
    },
    /// The magic is not `LZYCHUNK`.
    #[error("not a lazycas chunk index (bad magic)")]
    Magic,
    /// A version this code does not read.
    #[error("chunk index version {0} is not supported (this lazycas reads version {VERSION})")]
    Version(u16),
    /// A chunker other than FastCDC 2020.
    #[error("chunk index uses unknown chunker {0:?}")]
    UnknownChunker(String),
    /// The chunker parameters are invalid.
    #[error("chunk index chunker parameters: {0}")]
    ChunkerParams(#[from] ChunkerParamsError),
    /// The bounds of archive spans are not `1, max, max` with `max` up to 64 MiB.
    #[error("chunk index archive span bounds {min} / {avg} / {max} are invalid (want 1 / max / max, max <= {SPAN_PIECE_LIMIT})")]
    SpanBounds {
        /// Minimum stated.
        min: u32,
        /// Average stated.
        avg: u32,
        /// Maximum stated.
        max: u32,
    },
    /// The chunk count is larger than the bytes left can hold.
    #[error("chunk index claims {count} chunks but has room for {room}")]
    ChunkCount {
        /// The count claimed.
        count: u64,
        /// How many entries the remaining bytes can hold.
        room: u64,
    },
    /// A chunk ends at or before the previous one's end.
    #[error("chunk {index} ends at {end}, not after the previous end {previous}")]
    NotIncreasing {
        /// The chunk's position.
        index: usize,
        /// Its end offset.
        end: u64,
        /// The previous chunk's end offset (0 for the first).
        previous: u64,
    },
    /// A chunk other than the last is shorter than the chunker's minimum.
    #[error("chunk {index} is {len} bytes, below the chunker minimum {min}")]
    ChunkTooSmall {
        /// The chunk's position.
        index: usize,
        /// Its length.
        len: u64,
        /// The chunker's minimum.
        min: u32,
    },
    /// A chunk is longer than the chunker's maximum.
    #[error("chunk {index} is {len} bytes, above the chunker maximum {max}")]
    ChunkTooLarge {
        /// The chunk's position.
        index: usize,
        /// Its length.
        len: u64,
        /// The chunker's maximum.
        max: u32,
    },
    /// The chunks do not cover exactly the file's size.
    #[error("chunks cover {covered} bytes but the file is {size} bytes")]
    TotalMismatch {
        /// Where the last chunk ends.
        covered: u64,
        /// The file size the index states.
        size: u64,
    },
    /// A hint's payload length is larger than the bytes left.
    #[error("hint {index} claims {len} payload bytes but {room} remain")]
    HintLength {
        /// The hint's position.
        index: usize,
        /// The length claimed.
        len: u32,
        /// Bytes left.
        room: usize,
    },
    /// A known hint kind with a payload of the wrong size.
    #[error("hint kind {kind} has a {len}-byte payload (want {want})")]
    HintPayload {
        /// The hint kind.
        kind: u16,
        /// The payload length.
        len: usize,
        /// The length the kind needs.
        want: usize,
    },
    /// The same hint kind twice.
    #[error("hint kind {0} appears twice")]
    HintRepeated(u16),
    /// A hint is malformed or points outside the file.
    #[error("chunk index hint: {0}")]
    Hint(#[from] HintError),
    /// Bytes follow the last hint.
    #[error("chunk index has {0} trailing bytes")]
    TrailingBytes(usize),
}

impl ChunkIndex {
    /// The version-1 encoding (see the module doc). Its sha256 is what `lazycas index` prints and
    /// what a catalog pins.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.chunks.len() * CHUNK_ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(self.file.as_bytes());
        let (name, sizes) = match self.chunker {
            Cutting::ContentDefined(p) => {
                (CHUNKER_NAME, [p.min_size(), p.avg_size(), p.max_size()])
            }
            Cutting::ArchiveSpans { max_size } => (SPANS_NAME, [1, max_size, max_size]),
        };
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        for v in sizes {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&c.end.to_le_bytes());
            out.extend_from_slice(c.digest.as_bytes());
        }
        let hints = encode_hints(&self.hints);
        out.extend_from_slice(&(hints.len() as u16).to_le_bytes());
        for (kind, payload) in hints {
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        out
    }

    /// Parses an index fetched from the network. Checks `bytes` against `pinned` first, then
    /// every rule in [`ChunkIndexError`].
    pub fn parse(bytes: &[u8], pinned: &Digest) -> Result<ChunkIndex, ChunkIndexError> {
        let actual = Digest::of(bytes);
        if actual != *pinned {
            return Err(ChunkIndexError::PinMismatch {
                expected: *pinned,
                actual,
            });
        }
        parse_unpinned(bytes)
    }
}

fn encode_hints(hints: &Hints) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(sq) = &hints.squashfs {
        let mut p = sq.offset.to_le_bytes().to_vec();
        p.extend_from_slice(&sq.raw_superblock);
        out.push((HINT_SQUASHFS, p));
    }
    if let Some(sif) = &hints.sif {
        let mut p = sif.header.end().to_le_bytes().to_vec();
        p.extend_from_slice(&sif.primary_partition.start().to_le_bytes());
        p.extend_from_slice(&sif.primary_partition.len().to_le_bytes());
        p.extend_from_slice(&sif.fs_type.to_le_bytes());
        out.push((HINT_SIF, p));
    }
    if let Some(archive) = &hints.archive {
        out.push((HINT_ARCHIVE, archive.0.to_vec()));
    }
    out
}

/// Untrusted bytes ended inside `field`, which started at byte `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated {
    /// The field being read.
    pub field: &'static str,
    /// Its offset.
    pub at: usize,
}

impl From<Truncated> for ChunkIndexError {
    fn from(t: Truncated) -> ChunkIndexError {
        ChunkIndexError::Truncated {
            field: t.field,
            at: t.at,
        }
    }
}

/// A reader over untrusted bytes: every read is bounds-checked and names its field. Shared
/// with the archive seek index's parser.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// Reads `bytes` from the start.
    pub(crate) fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes, at: 0 }
    }

    /// The next `len` bytes.
    pub(crate) fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(Truncated { field, at: self.at })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// The next `N` bytes.
    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(field)?[0])
    }

    /// The next little-endian u16.
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Truncated> {
        self.array(field).map(u16::from_le_bytes)
    }

    /// The next little-endian u32.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// The next little-endian u64.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// The next 32 bytes, as a sha256.
    pub(crate) fn digest(&mut self, field: &'static str) -> Result<Digest, Truncated> {
        self.array(field).map(Digest::from_sha256_bytes)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

fn parse_unpinned(bytes: &[u8]) -> Result<ChunkIndex, ChunkIndexError> {
    let mut f = Fields::new(bytes);
    if f.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(ChunkIndexError::Magic);
    }
    let version = f.u16("version")?;
    if version != VERSION {
        return Err(ChunkIndexError::Version(version));
    }
    let size = f.u64("file size")?;
    let file = f.digest("file sha256")?;
    let chunker = parse_chunker(&mut f)?;
    let chunks = parse_chunks(&mut f, &chunker, size)?;
    let hints = parse_hints(&mut f)?;
    hints.check(size)?;
    if f.remaining() != 0 {
        return Err(ChunkIndexError::TrailingBytes(f.remaining()));
    }
    Ok(ChunkIndex {
        file,
        size,
        chunker,
        chunks,
        hints,
    })
}

fn parse_chunker(f: &mut Fields<'_>) -> Result<Cutting, ChunkIndexError> {
    let name_len = f.u8("chunker name length")?;
    let name = f.take(usize::from(name_len), "chunker name")?;
    let known = [CHUNKER_NAME, SPANS_NAME].map(str::as_bytes);
    if !known.contains(&name) {
        return Err(ChunkIndexError::UnknownChunker(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    let min = f.u32("chunker min size")?;
    let avg = f.u32("chunker avg size")?;
    let max = f.u32("chunker max size")?;
    if name == SPANS_NAME.as_bytes() {
        if min != 1 || avg != max || max == 0 || max > SPAN_PIECE_LIMIT {
            return Err(ChunkIndexError::SpanBounds { min, avg, max });
        }
        return Ok(Cutting::ArchiveSpans { max_size: max });
    }
    Ok(Cutting::ContentDefined(ChunkerParams::new(min, avg, max)?))
}

fn parse_chunks(
    f: &mut Fields<'_>,
    chunker: &Cutting,
    size: u64,
) -> Result<Vec<ChunkEntry>, ChunkIndexError> {
    let count = f.u64("chunk count")?;
    let room = (f.remaining() / CHUNK_ENTRY_LEN) as u64;
    if count > room {
        return Err(ChunkIndexError::ChunkCount { count, room });
    }
    // `count <= room`, and room was derived from a slice length, so it fits in usize.
    let count = count as usize;
    let mut chunks = Vec::with_capacity(count);
    let mut previous = 0u64;
    for index in 0..count {
        let end = f.u64("chunk end")?;
        let digest = f.digest("chunk sha256")?;
        check_chunk(index, previous, end, index + 1 == count, chunker)?;
        chunks.push(ChunkEntry { end, digest });
        previous = end;
    }
    if previous != size {
        return Err(ChunkIndexError::TotalMismatch {
            covered: previous,
            size,
        });
    }
    Ok(chunks)
}

fn check_chunk(
    index: usize,
    previous: u64,
    end: u64,
    is_last: bool,
    chunker: &Cutting,
) -> Result<(), ChunkIndexError> {
    if end <= previous {
        return Err(ChunkIndexError::NotIncreasing {
            index,
            end,
            previous,
        });
    }
    let len = end - previous;
    if len > u64::from(chunker.max_size()) {
        return Err(ChunkIndexError::ChunkTooLarge {
            index,
            len,
            max: chunker.max_size(),
        });
    }
    if !is_last && len < u64::from(chunker.min_size()) {
        return Err(ChunkIndexError::ChunkTooSmall {
            index,
            len,
            min: chunker.min_size(),
        });
    }
    Ok(())
}

fn parse_hints(f: &mut Fields<'_>) -> Result<Hints, ChunkIndexError> {
    let count = f.u16("hint count")?;
    let mut hints = Hints::default();
    for index in 0..usize::from(count) {
        let kind = f.u16("hint kind")?;
        let len = f.u32("hint length")?;
        let room = f.remaining();
        let payload = usize::try_from(len)
            .ok()
            .filter(|&l| l <= room)
            .ok_or(ChunkIndexError::HintLength { index, len, room })?;
        let payload = f.take(payload, "hint payload")?;
        match kind {
            HINT_SQUASHFS => {
                if hints.squashfs.is_some() {
                    return Err(ChunkIndexError::HintRepeated(kind));
                }
                hints.squashfs = Some(parse_squashfs_hint(payload)?);
            }
            HINT_SIF => {
                if hints.sif.is_some() {
                    return Err(ChunkIndexError::HintRepeated(kind));
                }
                hints.sif = Some(parse_sif_hint(payload)?);
            }
            HINT_ARCHIVE => {
                if hints.archive.is_some() {
                    return Err(ChunkIndexError::HintRepeated(kind));
                }
                hints.archive = Some(ArchiveHint(std::sync::Arc::from(payload)));
            }
            _ => tracing::debug!("skipping chunk index hint of unknown kind {kind}"),
        }
    }
    Ok(hints)
}

fn check_payload_len(kind: u16, payload: &[u8], want: usize) -> Result<(), ChunkIndexError> {
    if payload.len() != want {
        return Err(ChunkIndexError::HintPayload {
            kind,
            len: payload.len(),
            want,
        });
    }
    Ok(())
}

fn parse_squashfs_hint(payload: &[u8]) -> Result<SquashfsHint, ChunkIndexError> {
    check_payload_len(HINT_SQUASHFS, payload, SQUASHFS_PAYLOAD_LEN)?;
    let mut f = Fields::new(payload);
    let offset = f.u64("squashfs offset")?;
    let raw = f.array::<SUPERBLOCK_LEN>("squashfs superblock")?;
    Ok(SquashfsHint::new(offset, raw)?)
}

fn parse_sif_hint(payload: &[u8]) -> Result<SifHint, ChunkIndexError> {
    check_payload_len(HINT_SIF, payload, SIF_PAYLOAD_LEN)?;
    let mut f = Fields::new(payload);
    let header_end = f.u64("SIF header end")?;
    let start = f.u64("SIF partition offset")?;
    let len = f.u64("SIF partition size")?;
    let fs_type = i32::from_le_bytes(f.array("SIF partition fs type")?);
    let end = start
        .checked_add(len)
        .ok_or(HintError::Overflow("SIF primary partition"))?;
    Ok(SifHint {
        header: ByteRange::new(0, header_end),
        primary_partition: ByteRange::new(start, end),
        fs_type,
    })
}
