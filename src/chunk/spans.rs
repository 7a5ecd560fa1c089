//! How a file was cut into chunks ([`Cutting`]), and the second way to cut one: at the places an
//! archive's seek index can start decoding ([`ChunkIndex::build_at`]).
//!
//! A `.tar.gz` gains nothing from content-defined chunks (compressed bytes do not repeat between
//! versions), and its reads do not start anywhere: decoding resumes at a gzip checkpoint. So
//! `lazycas index` cuts an archive at every checkpoint's first compressed byte (its *span*
//! starts), which lets a member read fetch and verify exactly the spans it decodes. A span
//! longer than [`SPAN_PIECE_MAX`] is cut further so no chunk is unbounded (one deflate block can
//! be huge); only cuts at checkpoints matter to the read side. The seek index itself travels in
//! the index as a hint (`hints::ArchiveHint`), read by `crate::archive`.

use std::io::Read;
use std::sync::Arc;

use super::chunker::ChunkerParams;
use super::hints::{ArchiveHint, Hints};
use super::index::{ChunkEntry, ChunkIndex};
use crate::digest::{Digest, Hasher};

/// The longest chunk an archive's spans are cut into (a span between two checkpoints is longer
/// only when one deflate block is; then it is cut into pieces of this size).
pub const SPAN_PIECE_MAX: u32 = 8 << 20;
/// The longest chunk an index of archive spans may declare.
pub const SPAN_PIECE_LIMIT: u32 = 64 << 20;
/// The name an index records for chunks cut at an archive's span starts.
pub const SPANS_NAME: &str = "archive-spans-v1";

/// How a file was cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutting {
    /// Content-defined chunks (FastCDC 2020) within these bounds.
    ContentDefined(ChunkerParams),
    /// Cut at the span starts of an archive's seek index (and every `max_size` bytes within a
    /// longer span); chunks may be as short as one byte.
    ArchiveSpans {
        /// The longest chunk.
        max_size: u32,
    },
}

impl Cutting {
    /// The shortest chunk (other than the last) this cutting makes.
    pub fn min_size(&self) -> u32 {
        match self {
            Cutting::ContentDefined(p) => p.min_size(),
            Cutting::ArchiveSpans { .. } => 1,
        }
    }

    /// The longest chunk this cutting makes.
    pub fn max_size(&self) -> u32 {
        match self {
            Cutting::ContentDefined(p) => p.max_size(),
            Cutting::ArchiveSpans { max_size } => *max_size,
        }
    }
}

impl ChunkIndex {
    /// Cuts `reader` (of `size` bytes) at `cuts` (offsets inside the file, ascending; others
    /// are ignored) and every [`SPAN_PIECE_MAX`] bytes between them, hashing each chunk and the
    /// whole file, streaming. `seek_index` is the archive's seek index, carried as a hint.
    pub fn build_at<R: Read>(
        mut reader: R,
        size: u64,
        cuts: &[u64],
        seek_index: Vec<u8>,
    ) -> std::io::Result<ChunkIndex> {
        let ends = chunk_ends(size, cuts);
        let mut whole = Hasher::new();
        let mut chunks = Vec::with_capacity(ends.len());
        let mut buf = Vec::new();
        let mut start = 0u64;
        for end in ends {
            buf.resize((end - start) as usize, 0);
            reader.read_exact(&mut buf)?;
            whole.update(&buf);
            chunks.push(ChunkEntry {
                end,
                digest: Digest::of(&buf),
            });
            start = end;
        }
        let mut probe = [0u8; 1];
        if reader.read(&mut probe)? != 0 {
            return Err(std::io::Error::other(
                "the file grew while it was indexed".to_string(),
            ));
        }
        Ok(ChunkIndex {
            file: whole.finish(),
            size,
            chunker: Cutting::ArchiveSpans {
                max_size: SPAN_PIECE_MAX,
            },
            chunks,
            hints: Hints {
                archive: Some(ArchiveHint(Arc::from(seek_index))),
                ..Hints::default()
            },
        })
    }

    /// True when a chunk starts at `offset` (0 always counts; the file's end does not).
    pub fn is_chunk_start(&self, offset: u64) -> bool {
        offset == 0
            || self
                .chunks
                .binary_search_by(|c| c.end.cmp(&offset))
                .is_ok_and(|i| i + 1 < self.chunks.len())
    }
}

/// The chunk ends for a file of `size` bytes cut at `cuts` and every [`SPAN_PIECE_MAX`] bytes.
fn chunk_ends(size: u64, cuts: &[u64]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut start = 0u64;
    let stops = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < size)
        .chain(std::iter::once(size));
    for stop in stops {
        if stop <= start {
            continue;
        }
        while stop - start > u64::from(SPAN_PIECE_MAX) {
            start += u64::from(SPAN_PIECE_MAX);
            ends.push(start);
        }
        ends.push(stop);
        start = stop;
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::demo::samples::pseudo_random;

    #[test]
    fn cuts_at_the_given_offsets_and_splits_long_spans() {
        let size = u64::from(SPAN_PIECE_MAX) * 2 + 100;
        let ends = chunk_ends(size, &[0, 10, 10, 50, size, size + 5]);
        let max = u64::from(SPAN_PIECE_MAX);
        assert_eq!(ends, vec![10, 50, 50 + max, 50 + 2 * max, size]);
        assert!(chunk_ends(0, &[0]).is_empty());
    }

    #[test]
    fn builds_an_index_whose_chunks_start_at_the_cuts() {
        let data = pseudo_random(300_000, 31);
        let index =
            ChunkIndex::build_at(&data[..], data.len() as u64, &[1000, 200_000], vec![7]).unwrap();
        assert_eq!(index.file_digest(), Digest::of(&data));
        assert_eq!(index.chunks().len(), 3);
        assert!(index.is_chunk_start(0) && index.is_chunk_start(1000));
        assert!(index.is_chunk_start(200_000) && !index.is_chunk_start(300_000));
        assert!(!index.is_chunk_start(999));
        let c = index.chunk_range(1).unwrap();
        assert_eq!(
            index.chunks()[1].digest,
            Digest::of(&data[c.start() as usize..c.end() as usize])
        );
        let bytes = index.to_bytes();
        assert_eq!(ChunkIndex::parse(&bytes, &Digest::of(&bytes)), Ok(index));
    }

    #[test]
    fn a_file_shorter_than_stated_is_an_error() {
        let data = pseudo_random(1000, 32);
        assert!(ChunkIndex::build_at(&data[..], 2000, &[], Vec::new()).is_err());
        assert!(ChunkIndex::build_at(&data[..], 500, &[], Vec::new()).is_err());
    }
}
