//! [`SpanMap`]: which compressed bytes of an archive a member read decodes, so a reader of a
//! partly present archive can fetch (and verify) those spans in one batch before decoding.
//!
//! A read of tar stream bytes `[s, e)` decodes from the last checkpoint at or before `s` up to
//! somewhere before the first checkpoint at or after `e`; both are span starts (chunk starts of
//! the archive's index), so the answer is a run of whole spans. The decoder may still read a
//! little past it (it decodes whole cache slots and reads input in blocks); those reads fetch
//! what they need on their own, as any read of the blob does.

use super::builder::Format;
use super::published::{decode_checkpoints, decode_start, PublishedIndexError};
use super::{ArchiveError, ArchiveIndex, MemberId};
use crate::chunk::ChunkIndex;
use crate::range::ByteRange;

/// Checkpoints of one archive as (tar stream offset, first compressed byte decoding reads).
#[derive(Debug, Clone)]
pub struct SpanMap {
    format: Format,
    size: u64,
    points: Vec<(u64, u64)>,
}

impl SpanMap {
    /// The map of the seek index `payload` carried by chunk `index` (checked as
    /// `published::decode` checks it; the member table is not read).
    pub fn from_published(
        payload: &[u8],
        index: &ChunkIndex,
    ) -> Result<SpanMap, PublishedIndexError> {
        let header = decode_checkpoints(payload, index)?;
        Ok(SpanMap {
            format: header.format,
            size: index.size(),
            points: header
                .checkpoints
                .iter()
                .map(|cp| (cp.uoff, decode_start(cp)))
                .collect(),
        })
    }

    /// The blob bytes decoding tar stream bytes `stream` reads (empty for an empty range).
    pub fn compressed(&self, stream: ByteRange) -> ByteRange {
        if stream.is_empty() {
            return ByteRange::new(0, 0);
        }
        match self.format {
            Format::Tar => stream.clamp_to(self.size),
            Format::Gzip => {
                let after = self.points.partition_point(|&(u, _)| u <= stream.start());
                let start = match after.checked_sub(1).and_then(|i| self.points.get(i)) {
                    Some(&(_, c)) => c,
                    None => 0,
                };
                let next = self.points.partition_point(|&(u, _)| u < stream.end());
                let end = self.points.get(next).map_or(self.size, |&(_, c)| c);
                ByteRange::new(start, end.max(start))
            }
        }
    }

    /// The blob bytes a read of `len` bytes at `offset` of regular file `id` decodes; `None`
    /// when the read needs no stored bytes (past the end, or only holes of a sparse file).
    pub fn member_read(
        &self,
        index: &ArchiveIndex,
        id: MemberId,
        offset: u64,
        len: u32,
    ) -> Result<Option<ByteRange>, ArchiveError> {
        let layout = index.layout(id)?;
        let end = layout.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(None);
        }
        let stream = match &layout.sparse {
            None => ByteRange::new(layout.data_offset + offset, layout.data_offset + end),
            Some(chunks) => {
                let touched: Vec<ByteRange> = chunks
                    .iter()
                    .filter(|(c, _)| c.offset < end && c.offset + c.len > offset)
                    .map(|(c, phys)| {
                        let from = c.offset.max(offset) - c.offset;
                        let to = (c.offset + c.len).min(end) - c.offset;
                        ByteRange::new(phys + from, phys + to)
                    })
                    .collect();
                match (touched.first(), touched.last()) {
                    (Some(first), Some(last)) => ByteRange::new(first.start(), last.end()),
                    _ => return Ok(None),
                }
            }
        };
        Ok(Some(self.compressed(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> SpanMap {
        SpanMap {
            format: Format::Gzip,
            size: 1000,
            points: vec![(0, 0), (100, 40), (200, 80), (300, 120)],
        }
    }

    #[test]
    fn a_read_decodes_from_its_checkpoint_to_the_next_one_after_it() {
        let m = map();
        let c = |s, e| m.compressed(ByteRange::new(s, e));
        assert_eq!(c(0, 1), ByteRange::new(0, 40));
        assert_eq!(c(150, 160), ByteRange::new(40, 80));
        assert_eq!(c(100, 200), ByteRange::new(40, 80));
        assert_eq!(c(150, 250), ByteRange::new(40, 120));
        assert_eq!(c(350, 400), ByteRange::new(120, 1000));
        assert!(c(5, 5).is_empty());
    }
}
