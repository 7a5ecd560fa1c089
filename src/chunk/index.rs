//! [`ChunkIndex`]: a file's content-defined chunks (end offset and sha256 of each), the whole
//! file's sha256 and size, the chunker that cut it, and format hints.
//!
//! Built by the publisher from the file ([`ChunkIndex::build`]); read by a node from the bytes of
//! an index whose digest the catalog pins ([`ChunkIndex::parse`], in [`super::format`]). The read
//! side asks which chunks cover a byte range ([`ChunkIndex::chunks_covering`]) and verifies each
//! chunk against its digest before serving a byte of it.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use super::chunker::ChunkerParams;
use super::hints::Hints;
use super::spans::Cutting;
use crate::digest::{Digest, Hasher};
use crate::range::ByteRange;

/// One chunk: where it ends in the file (it starts where the previous one ends, the first at 0)
/// and the sha256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// One past the chunk's last byte.
    pub end: u64,
    /// The sha256 of the chunk's bytes.
    pub digest: Digest,
}

/// A file's chunk index. Every value is consistent: chunk ends strictly increase, every chunk is
/// within the cutting's bounds, the chunks cover exactly `size` bytes and the hints lie within
/// the file (both constructors check this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    pub(super) file: Digest,
    pub(super) size: u64,
    pub(super) chunker: Cutting,
    pub(super) chunks: Vec<ChunkEntry>,
    pub(super) hints: Hints,
}

impl ChunkIndex {
    /// Chunks and hashes `reader` from its start, streaming (memory stays at a few chunks), and
    /// detects squashfs / SIF hints. Fails on I/O errors, or when the file's length changes
    /// while it is read.
    pub fn build<R: Read + Seek>(mut reader: R, chunker: ChunkerParams) -> std::io::Result<Self> {
        let size = reader.seek(SeekFrom::End(0))?;
        let hints = Hints::detect(&mut reader, size)?;
        reader.seek(SeekFrom::Start(0))?;
        let mut whole = Hasher::new();
        let mut chunks = Vec::new();
        let mut end = 0u64;
        for chunk in chunker.chunks(reader) {
            let chunk = chunk?;
            whole.update(&chunk);
            end += chunk.len() as u64;
            chunks.push(ChunkEntry {
                end,
                digest: Digest::of(&chunk),
            });
        }
        if end != size {
            return Err(std::io::Error::other(format!(
                "the file changed while it was indexed ({size} bytes at the start, {end} read)"
            )));
        }
        Ok(ChunkIndex {
            file: whole.finish(),
            size,
            chunker: Cutting::ContentDefined(chunker),
            chunks,
            hints,
        })
    }

    /// The sha256 of the whole file.
    pub fn file_digest(&self) -> Digest {
        self.file
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The FastCDC parameters the file was cut with (`None` for an archive cut at its spans).
    pub fn chunker(&self) -> Option<ChunkerParams> {
        match self.chunker {
            Cutting::ContentDefined(p) => Some(p),
            Cutting::ArchiveSpans { .. } => None,
        }
    }

    /// How the file was cut.
    pub fn cutting(&self) -> Cutting {
        self.chunker
    }

    /// The chunks, in file order.
    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.chunks
    }

    /// What the index knows about the file's format.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// The bytes of chunk `i` in the file, if there is such a chunk.
    pub fn chunk_range(&self, i: usize) -> Option<ByteRange> {
        let end = self.chunks.get(i)?.end;
        let start = match i {
            0 => 0,
            _ => self.chunks[i - 1].end,
        };
        Some(ByteRange::new(start, end))
    }

    /// The chunks to fetch when an image is opened, as runs of consecutive chunk indexes (each
    /// run one request): those covering [`Hints::prefetch_ranges`], touching runs merged. For a
    /// squashfs image or a SIF this is usually two runs: the start of the file and its tail.
    pub fn prefetch_chunks(&self) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for range in self.hints.prefetch_ranges() {
            let run = self.chunks_covering(range);
            if run.is_empty() {
                continue;
            }
            match runs.last_mut() {
                Some(last) if run.start <= last.end => last.end = last.end.max(run.end),
                _ => runs.push(run),
            }
        }
        runs
    }

    /// The indexes of the chunks holding any byte of `range` (cut to the file): empty for an
    /// empty range or one past the end. Binary search: O(log chunks).
    pub fn chunks_covering(&self, range: ByteRange) -> Range<usize> {
        let range = range.clamp_to(self.size);
        let first = self.chunks.partition_point(|c| c.end <= range.start());
        if range.is_empty() {
            return first..first;
        }
        let last = self.chunks.partition_point(|c| c.end < range.end());
        first..(last + 1).min(self.chunks.len())
    }
}
