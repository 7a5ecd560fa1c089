//! Hints: what a chunk index says about the file's format, so the read side can prefetch the
//! bytes a mount will need first (squashfs superblock and metadata tail; a SIF's header,
//! descriptors and primary partition) in one or two requests instead of a chain of round trips.
//!
//! Hints are detected when the index is built ([`Hints::detect`]) and checked against the file's
//! size when it is parsed ([`Hints::check`]); detection keeps only hints that pass that check, so
//! every index we write parses. A hint only speeds reads up: the chunk digests still verify
//! every byte.

use std::io::{Read, Seek, SeekFrom};

use super::sif::SifHeader;
use super::squashfs::{Superblock, SuperblockError, SUPERBLOCK_LEN};
use crate::range::ByteRange;

/// Why a hint in an index is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HintError {
    /// The embedded squashfs superblock does not parse.
    #[error("squashfs hint: {0}")]
    Superblock(#[from] SuperblockError),
    /// A hinted byte range runs past the end of the file.
    #[error("{what} {range:?} lies outside the file ({size} bytes)")]
    OutsideFile {
        /// Which hinted range.
        what: &'static str,
        /// The range.
        range: ByteRange,
        /// The file's size.
        size: u64,
    },
    /// A hinted range's end overflows u64.
    #[error("{0} overflows")]
    Overflow(&'static str),
}

/// A squashfs image inside the file: at offset 0 for a bare image, or a SIF's primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquashfsHint {
    /// Where the image (its superblock) starts in the file.
    pub offset: u64,
    /// The superblock's raw bytes, kept so an index re-encodes them exactly.
    pub raw_superblock: [u8; SUPERBLOCK_LEN],
    /// The superblock, parsed.
    pub superblock: Superblock,
}

impl SquashfsHint {
    /// Parses `raw_superblock` as the superblock of an image at `offset`.
    pub fn new(offset: u64, raw_superblock: [u8; SUPERBLOCK_LEN]) -> Result<Self, HintError> {
        let superblock = Superblock::parse(&raw_superblock)?;
        Ok(SquashfsHint {
            offset,
            raw_superblock,
            superblock,
        })
    }

    /// The superblock's bytes in the file.
    pub fn superblock_range(&self) -> ByteRange {
        ByteRange::at(self.offset, SUPERBLOCK_LEN as u64)
    }

    /// The metadata tail's bytes in the file (see [`Superblock::metadata_tail`]).
    pub fn metadata_tail(&self) -> ByteRange {
        let tail = self.superblock.metadata_tail();
        ByteRange::new(
            self.offset.saturating_add(tail.start()),
            self.offset.saturating_add(tail.end()),
        )
    }

    fn image(&self) -> Result<ByteRange, HintError> {
        let end = self
            .offset
            .checked_add(self.superblock.bytes_used)
            .ok_or(HintError::Overflow("squashfs image"))?;
        Ok(ByteRange::new(self.offset, end))
    }
}

/// A SIF container's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SifHint {
    /// The global header and the descriptor section: `[0, end of descriptors)`.
    pub header: ByteRange,
    /// The primary system partition.
    pub primary_partition: ByteRange,
    /// The partition's file system type (1 = squashfs).
    pub fs_type: i32,
}

/// A `.tar` or `.tar.gz` archive's seek index (gzip checkpoints and member table), as the
/// publisher's `lazycas index` encoded it. Kept as bytes here: `crate::archive` decodes and
/// checks it (against this index's chunks) when the archive is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHint(pub std::sync::Arc<[u8]>);

/// Every hint an index holds; each kind at most once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// A squashfs image (bare, or a SIF's primary partition).
    pub squashfs: Option<SquashfsHint>,
    /// A SIF container.
    pub sif: Option<SifHint>,
    /// An archive's seek index.
    pub archive: Option<ArchiveHint>,
}

fn within(what: &'static str, range: ByteRange, size: u64) -> Result<(), HintError> {
    if range.end() > size {
        return Err(HintError::OutsideFile { what, range, size });
    }
    Ok(())
}

impl Hints {
    /// Checks every hinted range lies within a file of `size` bytes.
    pub fn check(&self, size: u64) -> Result<(), HintError> {
        if let Some(sq) = &self.squashfs {
            within("squashfs image", sq.image()?, size)?;
        }
        if let Some(sif) = &self.sif {
            within("SIF header", sif.header, size)?;
            within("SIF primary partition", sif.primary_partition, size)?;
        }
        Ok(())
    }

    /// The byte ranges a mount reads first, in file order: the SIF header and descriptors, the
    /// squashfs superblock and its metadata tail. Empty when the index has no hints.
    pub fn prefetch_ranges(&self) -> Vec<ByteRange> {
        let mut out: Vec<ByteRange> = Vec::new();
        if let Some(sif) = &self.sif {
            out.push(sif.header);
        }
        if let Some(sq) = &self.squashfs {
            out.push(sq.superblock_range());
            out.push(sq.metadata_tail());
        }
        out.sort();
        out
    }

    /// Looks at the start of `file` (of `size` bytes) for a squashfs image or a SIF and returns
    /// what it finds. A file of neither format has no hints; only I/O errors are errors.
    pub fn detect<R: Read + Seek>(file: &mut R, size: u64) -> std::io::Result<Hints> {
        let mut hints = Hints::default();
        let start = read_at(file, 0, SUPERBLOCK_LEN.max(super::sif::HEADER_LEN), size)?;
        if let Some(sq) = squashfs_at(file, 0, size)? {
            hints.squashfs = Some(sq);
        } else if let Ok(header) = SifHeader::parse(&start) {
            hints.sif = sif_layout(file, &header, size)?;
            if let Some(sif) = &hints.sif {
                hints.squashfs =
                    squashfs_at(file, sif.primary_partition.start(), size)?.filter(|sq| {
                        sq.image()
                            .is_ok_and(|img| img.end() <= sif.primary_partition.end())
                    });
            }
        }
        if hints.check(size).is_err() {
            return Ok(Hints::default());
        }
        Ok(hints)
    }
}

fn squashfs_at<R: Read + Seek>(
    file: &mut R,
    offset: u64,
    size: u64,
) -> std::io::Result<Option<SquashfsHint>> {
    let bytes = read_at(file, offset, SUPERBLOCK_LEN, size)?;
    let Ok(raw) = <[u8; SUPERBLOCK_LEN]>::try_from(bytes.as_slice()) else {
        return Ok(None);
    };
    let hint = SquashfsHint::new(offset, raw).ok();
    Ok(hint.filter(|h| h.image().is_ok_and(|img| img.end() <= size)))
}

fn sif_layout<R: Read + Seek>(
    file: &mut R,
    header: &SifHeader,
    size: u64,
) -> std::io::Result<Option<SifHint>> {
    let section = header.descriptors;
    if section.end() > size {
        return Ok(None);
    }
    let len = usize::try_from(section.len()).unwrap_or(usize::MAX);
    let descriptors = read_at(file, section.start(), len, size)?;
    match header.primary_partition(&descriptors) {
        Ok(p) => Ok(Some(SifHint {
            header: ByteRange::new(0, section.end()),
            primary_partition: p.extent,
            fs_type: p.fs_type,
        })),
        Err(e) => {
            tracing::warn!("SIF file: {e}; indexing it without SIF hints");
            Ok(None)
        }
    }
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at<R: Read + Seek>(
    file: &mut R,
    offset: u64,
    len: usize,
    size: u64,
) -> std::io::Result<Vec<u8>> {
    let available = size.saturating_sub(offset).min(len as u64);
    let mut out = vec![0u8; available as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::sif::tests::sample_sif_prefix;
    use crate::chunk::squashfs::tests::sample_superblock;
    use std::io::Cursor;

    #[test]
    fn detects_a_bare_squashfs() {
        let mut image = vec![0u8; 1 << 20];
        image[..SUPERBLOCK_LEN].copy_from_slice(&sample_superblock());
        let hints = Hints::detect(&mut Cursor::new(&image), image.len() as u64).unwrap();
        let sq = hints.squashfs.unwrap();
        assert_eq!(sq.offset, 0);
        assert_eq!(sq.metadata_tail(), ByteRange::new(921_600, 1 << 20));
        assert_eq!(hints.sif, None);
    }

    #[test]
    fn detects_a_sif_and_its_squashfs() {
        let partition = ByteRange::at(32768, 1 << 20);
        let mut file = sample_sif_prefix(partition);
        file.resize(partition.end() as usize, 0);
        file[32768..32768 + SUPERBLOCK_LEN].copy_from_slice(&sample_superblock());
        let hints = Hints::detect(&mut Cursor::new(&file), file.len() as u64).unwrap();
        let sif = hints.sif.unwrap();
        assert_eq!(sif.primary_partition, partition);
        assert_eq!(sif.header, ByteRange::new(0, 4096 + 48 * 585));
        let sq = hints.squashfs.unwrap();
        assert_eq!(sq.offset, 32768);
        assert_eq!(
            sq.metadata_tail(),
            ByteRange::new(32768 + 921_600, 32768 + (1 << 20))
        );
    }

    #[test]
    fn a_truncated_image_has_no_hints() {
        let mut image = vec![0u8; 1000];
        image[..SUPERBLOCK_LEN].copy_from_slice(&sample_superblock());
        let hints = Hints::detect(&mut Cursor::new(&image), image.len() as u64).unwrap();
        assert_eq!(hints, Hints::default());
        let plain = b"just some text".to_vec();
        let hints = Hints::detect(&mut Cursor::new(&plain), plain.len() as u64).unwrap();
        assert_eq!(hints, Hints::default());
    }
}
