//! [`SpanChunks`]: cuts a span of a file, arriving in pieces of any size, into the chunks of its
//! index and checks each against its sha256 before handing it on. A span must start at a chunk
//! boundary (a range request for a run of chunks, or a whole-file answer from offset 0); bytes
//! past the last chunk are ignored.

use std::io;

use crate::chunk::ChunkIndex;
use crate::digest::Digest;
use crate::range::ByteRange;

/// What [`SpanChunks::push`] says about each complete chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckedChunk<'a> {
    /// Chunk `index` (covering `range` of the file) hashed right: its bytes.
    Verified {
        /// Chunk number.
        index: usize,
        /// Its bytes.
        bytes: &'a [u8],
    },
    /// Chunk `index` hashed to `actual` instead of `expected`.
    Mismatch {
        /// Chunk number.
        index: usize,
        /// Where it lies in the file.
        range: ByteRange,
        /// What the index says.
        expected: Digest,
        /// What arrived.
        actual: Digest,
    },
}

/// The chunk being filled from one span.
pub struct SpanChunks<'a> {
    index: &'a ChunkIndex,
    /// The chunk being filled (set by the first bytes).
    chunk: Option<usize>,
    /// The file offset of the next byte.
    pos: u64,
    buf: Vec<u8>,
}

impl<'a> SpanChunks<'a> {
    /// Cuts spans of the file `index` describes.
    pub fn new(index: &'a ChunkIndex) -> SpanChunks<'a> {
        SpanChunks {
            index,
            chunk: None,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// The next bytes of the span, at file offset `offset`; `on_chunk` sees each chunk they
    /// complete. Fails if the span does not start at a chunk boundary or has a gap.
    pub fn push(
        &mut self,
        offset: u64,
        mut data: &[u8],
        on_chunk: &mut dyn FnMut(CheckedChunk<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.chunk.is_none() {
            let first = self.index.chunks_covering(ByteRange::at(offset, 1)).start;
            if self.index.chunk_range(first).map(|r| r.start()) != Some(offset) {
                return Err(io::Error::other(format!(
                    "span starts at {offset}, not at a chunk boundary"
                )));
            }
            self.chunk = Some(first);
            self.pos = offset;
        }
        if offset != self.pos {
            return Err(io::Error::other(format!(
                "span bytes at {offset}, expected {}",
                self.pos
            )));
        }
        while !data.is_empty() {
            let Some(chunk) = self.chunk else {
                return Ok(());
            };
            let (Some(entry), Some(range)) = (
                self.index.chunks().get(chunk),
                self.index.chunk_range(chunk),
            ) else {
                // Past the last chunk (a longer file than indexed): nothing to keep.
                return Ok(());
            };
            let take = ((range.end() - self.pos) as usize).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.pos == range.end() {
                let actual = Digest::of(&self.buf);
                let checked = if actual == entry.digest {
                    CheckedChunk::Verified {
                        index: chunk,
                        bytes: &self.buf,
                    }
                } else {
                    CheckedChunk::Mismatch {
                        index: chunk,
                        range,
                        expected: entry.digest,
                        actual,
                    }
                };
                on_chunk(checked)?;
                self.buf.clear();
                self.chunk = Some(chunk + 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::cli::demo::samples::pseudo_random;

    fn index_of(data: &[u8]) -> ChunkIndex {
        let params = ChunkerParams::new(4096, 16384, 65536).expect("params");
        ChunkIndex::build(Cursor::new(data), params).expect("index")
    }

    /// Pushes `data[start..]` in pieces of `piece` bytes; returns (verified, mismatched) chunk
    /// numbers.
    fn cut(
        index: &ChunkIndex,
        data: &[u8],
        start: usize,
        piece: usize,
    ) -> (Vec<usize>, Vec<usize>) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let mut spans = SpanChunks::new(index);
        for (n, p) in data[start..].chunks(piece).enumerate() {
            let offset = (start + n * piece) as u64;
            spans
                .push(offset, p, &mut |c| {
                    match c {
                        CheckedChunk::Verified { index: i, bytes } => {
                            let r = index.chunk_range(i).expect("range");
                            assert_eq!(bytes, &data[r.start() as usize..r.end() as usize]);
                            good.push(i);
                        }
                        CheckedChunk::Mismatch { index: i, .. } => bad.push(i),
                    }
                    Ok(())
                })
                .expect("push");
        }
        (good, bad)
    }

    #[test]
    fn every_chunk_of_a_whole_file_verifies_whatever_the_piece_size() {
        let data = pseudo_random(300_000, 21);
        let index = index_of(&data);
        for piece in [1000, 4096, 65536, 1 << 20] {
            let (good, bad) = cut(&index, &data, 0, piece);
            assert_eq!(good, (0..index.chunks().len()).collect::<Vec<_>>());
            assert!(bad.is_empty());
        }
    }

    #[test]
    fn a_flipped_byte_fails_its_chunk_only() {
        let data = pseudo_random(300_000, 22);
        let index = index_of(&data);
        let victim = index.chunks().len() / 2;
        let r = index.chunk_range(victim).expect("range");
        let mut altered = data.clone();
        altered[(r.start() + 7) as usize] ^= 1;
        let (good, bad) = cut(&index, &altered, 0, 5000);
        assert_eq!(bad, [victim]);
        assert_eq!(good.len(), index.chunks().len() - 1);
        assert!(!good.contains(&victim));
    }

    #[test]
    fn a_span_starts_at_a_chunk_boundary() {
        let data = pseudo_random(200_000, 23);
        let index = index_of(&data);
        let second = index.chunk_range(1).expect("range");
        let (good, _) = cut(&index, &data, second.start() as usize, 3000);
        assert_eq!(good.first(), Some(&1));
        let mut spans = SpanChunks::new(&index);
        let err = spans.push(second.start() + 1, &data[..10], &mut |_| Ok(()));
        assert!(err.is_err());
    }

    #[test]
    fn a_gap_in_the_span_is_refused() {
        let data = pseudo_random(100_000, 24);
        let index = index_of(&data);
        let mut spans = SpanChunks::new(&index);
        spans
            .push(0, &data[..100], &mut |_| Ok(()))
            .expect("first piece");
        assert!(spans.push(200, &data[200..300], &mut |_| Ok(())).is_err());
    }
}
