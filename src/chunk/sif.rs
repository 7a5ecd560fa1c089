//! The SIF (Singularity/Apptainer Image Format) container: just enough to find the primary
//! system partition, the squashfs image a SIF wraps.
//!
//! Layout (apptainer/sif `pkg/sif`, all little-endian, structs packed): a 128-byte global header
//! (launch script 32, magic `SIF_MAGIC\0` 10, version 3, arch 3, uuid 16, ctime, mtime,
//! descriptors free, descriptors total, descriptors offset, descriptors size, data offset, data
//! size: eight i64), then `descriptors total` descriptors of 585 bytes each at `descriptors
//! offset`. A descriptor: data type i32 (0x4004 = partition), used u8, id u32, group id u32,
//! linked id u32, offset i64, size i64, size with padding i64, ctime, mtime, uid, gid (i64),
//! name 128 bytes, extra 384 bytes; for a partition, extra starts with fs type i32 (1 = squashfs)
//! and partition type i32 (2 = primary system).
//!
//! Not here: signatures, other data objects, writing SIFs.

use crate::range::ByteRange;

/// The global header's size.
pub const HEADER_LEN: usize = 128;
/// One descriptor's size.
pub const DESCRIPTOR_LEN: usize = 585;

const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
const DATA_PARTITION: i32 = 0x4004;
const PART_PRIMARY_SYSTEM: i32 = 2;
/// More descriptors than any real SIF holds (siftool makes 48); bounds what a header can ask us
/// to read.
const MAX_DESCRIPTORS: u64 = 4096;

/// Why bytes are not a SIF with a primary partition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SifError {
    /// Fewer bytes than the header needs.
    #[error("SIF header truncated ({0} of 128 bytes)")]
    Truncated(usize),
    /// The magic is not `SIF_MAGIC`.
    #[error("not a SIF file (no SIF_MAGIC)")]
    Magic,
    /// The descriptor section is implausible (negative, too many, or the wrong size).
    #[error("SIF descriptor section is invalid: {0}")]
    Descriptors(String),
    /// A descriptor's offset or size is negative or overflows.
    #[error("SIF descriptor {id} has an invalid extent (offset {offset}, size {size})")]
    Extent {
        /// The descriptor's id.
        id: u32,
        /// Its offset field.
        offset: i64,
        /// Its size field.
        size: i64,
    },
    /// No used descriptor is a primary system partition.
    #[error("SIF has no primary system partition")]
    NoPrimaryPartition,
}

/// Where a SIF's descriptors are, from its global header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SifHeader {
    /// The descriptor section: `descriptors total` × 585 bytes.
    pub descriptors: ByteRange,
    /// Number of descriptor slots (used or not).
    pub descriptor_count: u64,
}

/// The primary system partition of a SIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryPartition {
    /// Its bytes in the SIF file.
    pub extent: ByteRange,
    /// Its file system type (1 = squashfs).
    pub fs_type: i32,
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    b.get(at..at + 8)?.try_into().ok().map(i64::from_le_bytes)
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4)?.try_into().ok().map(i32::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

impl SifHeader {
    /// Parses the global header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<SifHeader, SifError> {
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(SifError::Truncated(bytes.len()))?;
        if &header[32..42] != MAGIC {
            return Err(SifError::Magic);
        }
        let field = |at| i64_at(header, at).unwrap_or(-1);
        let (total, offset, size) = (field(88), field(96), field(104));
        let bad = |why: String| Err(SifError::Descriptors(why));
        let (Ok(total), Ok(offset), Ok(size)) = (
            u64::try_from(total),
            u64::try_from(offset),
            u64::try_from(size),
        ) else {
            return bad(format!(
                "negative field (total {total}, offset {offset}, size {size})"
            ));
        };
        if total > MAX_DESCRIPTORS {
            return bad(format!(
                "{total} descriptors (at most {MAX_DESCRIPTORS} are read)"
            ));
        }
        let len = total * DESCRIPTOR_LEN as u64;
        if size > len || offset < HEADER_LEN as u64 {
            return bad(format!("{total} descriptors at {offset}, size {size}"));
        }
        Ok(SifHeader {
            descriptors: ByteRange::at(offset, len),
            descriptor_count: total,
        })
    }

    /// Finds the primary system partition in the descriptor section's bytes (exactly
    /// `self.descriptors`).
    pub fn primary_partition(&self, descriptors: &[u8]) -> Result<PrimaryPartition, SifError> {
        for raw in descriptors.chunks_exact(DESCRIPTOR_LEN) {
            if let Some(partition) = primary_partition_of(raw)? {
                return Ok(partition);
            }
        }
        Err(SifError::NoPrimaryPartition)
    }
}

fn primary_partition_of(raw: &[u8]) -> Result<Option<PrimaryPartition>, SifError> {
    let used = raw.get(4).is_some_and(|&u| u != 0);
    let is_partition = i32_at(raw, 0) == Some(DATA_PARTITION);
    let is_primary = i32_at(raw, 201 + 4) == Some(PART_PRIMARY_SYSTEM);
    if !(used && is_partition && is_primary) {
        return Ok(None);
    }
    let id = u32_at(raw, 5).unwrap_or(0);
    let (offset, size) = (i64_at(raw, 17).unwrap_or(-1), i64_at(raw, 25).unwrap_or(-1));
    let extent_error = SifError::Extent { id, offset, size };
    let (Ok(start), Ok(len)) = (u64::try_from(offset), u64::try_from(size)) else {
        return Err(extent_error);
    };
    let end = start.checked_add(len).ok_or(extent_error)?;
    Ok(Some(PrimaryPartition {
        extent: ByteRange::new(start, end),
        fs_type: i32_at(raw, 201).unwrap_or(0),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SIF prefix as siftool lays it out: header, 48 descriptors at 4096, one primary squashfs
    /// partition at `partition`.
    pub(crate) fn sample_sif_prefix(partition: ByteRange) -> Vec<u8> {
        let mut out = vec![0u8; 4096 + 48 * DESCRIPTOR_LEN];
        out[32..42].copy_from_slice(MAGIC);
        out[80..88].copy_from_slice(&47i64.to_le_bytes());
        out[88..96].copy_from_slice(&48i64.to_le_bytes());
        out[96..104].copy_from_slice(&4096i64.to_le_bytes());
        out[104..112].copy_from_slice(&((48 * DESCRIPTOR_LEN) as i64).to_le_bytes());
        let d = 4096;
        out[d..d + 4].copy_from_slice(&DATA_PARTITION.to_le_bytes());
        out[d + 4] = 1;
        out[d + 5..d + 9].copy_from_slice(&1u32.to_le_bytes());
        out[d + 17..d + 25].copy_from_slice(&(partition.start() as i64).to_le_bytes());
        out[d + 25..d + 33].copy_from_slice(&(partition.len() as i64).to_le_bytes());
        out[d + 201..d + 205].copy_from_slice(&1i32.to_le_bytes());
        out[d + 205..d + 209].copy_from_slice(&PART_PRIMARY_SYSTEM.to_le_bytes());
        out
    }

    #[test]
    fn finds_the_primary_partition() {
        let bytes = sample_sif_prefix(ByteRange::at(32768, 500_000));
        let header = SifHeader::parse(&bytes).unwrap();
        assert_eq!(header.descriptors, ByteRange::at(4096, 48 * 585));
        let section = &bytes[4096..4096 + 48 * 585];
        let p = header.primary_partition(section).unwrap();
        assert_eq!(p.extent, ByteRange::at(32768, 500_000));
        assert_eq!(p.fs_type, 1);
    }

    #[test]
    fn rejects_bad_headers_and_descriptors() {
        let good = sample_sif_prefix(ByteRange::at(32768, 500_000));
        let mut no_magic = good.clone();
        no_magic[32] = b'X';
        assert_eq!(SifHeader::parse(&no_magic), Err(SifError::Magic));
        assert_eq!(
            SifHeader::parse(&good[..100]),
            Err(SifError::Truncated(100))
        );
        let mut huge = good.clone();
        huge[88..96].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(matches!(
            SifHeader::parse(&huge),
            Err(SifError::Descriptors(_))
        ));
        let mut negative = good.clone();
        negative[4096 + 17..4096 + 25].copy_from_slice(&(-5i64).to_le_bytes());
        let header = SifHeader::parse(&negative).unwrap();
        assert!(matches!(
            header.primary_partition(&negative[4096..]),
            Err(SifError::Extent { id: 1, .. })
        ));
        let mut unused = good;
        unused[4096 + 4] = 0;
        assert_eq!(
            header.primary_partition(&unused[4096..]),
            Err(SifError::NoPrimaryPartition)
        );
    }
}
