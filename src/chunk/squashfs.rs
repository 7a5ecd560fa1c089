//! The squashfs 4.0 superblock: just enough of it to know where an image's metadata lives.
//!
//! mksquashfs writes file data first and every table (inodes, directories, fragments, export,
//! ids, xattrs) after it, up to `bytes_used`. squashfuse's first reads walk those tables, each
//! read depending on the last; fetching the whole "metadata tail" in one request on open turns
//! that chain of round trips into one. The superblock is 96 bytes, little-endian, at the start
//! of the image (Linux `Documentation/filesystems/squashfs.rst`, squashfs-tools `squashfs_fs.h`).
//!
//! Not here: reading inodes or directories; the daemon mounts images with squashfuse.

use crate::range::ByteRange;

/// The superblock's size on disk.
pub const SUPERBLOCK_LEN: usize = 96;

const MAGIC: u32 = 0x7371_7368; // "hsqs" little-endian
const TABLE_ABSENT: u64 = u64::MAX;

/// Why 96 bytes are not a squashfs 4.0 superblock.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SuperblockError {
    /// Fewer than 96 bytes.
    #[error("squashfs superblock truncated ({0} of 96 bytes)")]
    Truncated(usize),
    /// The magic is not `hsqs`.
    #[error("not a squashfs image (magic {0:#010x})")]
    Magic(u32),
    /// A squashfs version other than 4.0.
    #[error("squashfs version {major}.{minor} (only 4.0 is read)")]
    Version {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// The block size is not a power of two in 4 KiB..1 MiB matching `block_log`.
    #[error("squashfs block size {block_size} (block_log {block_log}) is invalid")]
    BlockSize {
        /// The `block_size` field.
        block_size: u32,
        /// The `block_log` field.
        block_log: u16,
    },
    /// A table starts inside the superblock or at or past `bytes_used`.
    #[error("squashfs {table} table start {start} is outside 96..{bytes_used}")]
    TableOutside {
        /// Which table.
        table: &'static str,
        /// Its start offset.
        start: u64,
        /// The image's `bytes_used`.
        bytes_used: u64,
    },
}

/// The fields of a squashfs 4.0 superblock that locate its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Number of inodes.
    pub inode_count: u32,
    /// Data block size in bytes.
    pub block_size: u32,
    /// Number of fragment entries.
    pub fragment_count: u32,
    /// Compressor id (1 gzip, 2 lzma, 3 lzo, 4 xz, 5 lz4, 6 zstd).
    pub compression: u16,
    /// Number of uid/gid entries.
    pub id_count: u16,
    /// Bytes of the image in use (the image may be padded past this).
    pub bytes_used: u64,
    /// Start of the id (uid/gid) lookup table.
    pub id_table_start: u64,
    /// Start of the xattr id table, if any.
    pub xattr_id_table_start: Option<u64>,
    /// Start of the inode table.
    pub inode_table_start: u64,
    /// Start of the directory table.
    pub directory_table_start: u64,
    /// Start of the fragment table, if any.
    pub fragment_table_start: Option<u64>,
    /// Start of the export (NFS) table, if any.
    pub export_table_start: Option<u64>,
}

impl Superblock {
    /// Parses the first 96 bytes of `bytes` and checks the table starts lie within the image.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let sb: &[u8; SUPERBLOCK_LEN] = bytes
            .get(..SUPERBLOCK_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(SuperblockError::Truncated(bytes.len()))?;
        let u16_at = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&sb[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(SuperblockError::Magic(magic));
        }
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            return Err(SuperblockError::Version { major, minor });
        }
        let (block_size, block_log) = (u32_at(12), u16_at(22));
        let log_ok = (12..=20).contains(&block_log) && 1u32 << block_log == block_size;
        if !log_ok {
            return Err(SuperblockError::BlockSize {
                block_size,
                block_log,
            });
        }
        let optional = |v: u64| (v != TABLE_ABSENT).then_some(v);
        let superblock = Superblock {
            inode_count: u32_at(4),
            block_size,
            fragment_count: u32_at(16),
            compression: u16_at(20),
            id_count: u16_at(26),
            bytes_used: u64_at(40),
            id_table_start: u64_at(48),
            xattr_id_table_start: optional(u64_at(56)),
            inode_table_start: u64_at(64),
            directory_table_start: u64_at(72),
            fragment_table_start: optional(u64_at(80)),
            export_table_start: optional(u64_at(88)),
        };
        superblock.check_tables()?;
        Ok(superblock)
    }

    fn tables(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("inode", Some(self.inode_table_start)),
            ("directory", Some(self.directory_table_start)),
            ("fragment", self.fragment_table_start),
            ("export", self.export_table_start),
            ("id", Some(self.id_table_start)),
            ("xattr id", self.xattr_id_table_start),
        ]
    }

    fn check_tables(&self) -> Result<(), SuperblockError> {
        for (table, start) in self.tables() {
            if let Some(start) = start {
                if start < SUPERBLOCK_LEN as u64 || start >= self.bytes_used {
                    return Err(SuperblockError::TableOutside {
                        table,
                        start,
                        bytes_used: self.bytes_used,
                    });
                }
            }
        }
        Ok(())
    }

    /// The bytes from the first table to `bytes_used`, relative to the image's start: every
    /// inode, directory, fragment, export, id and xattr table of the image.
    pub fn metadata_tail(&self) -> ByteRange {
        let first = self
            .tables()
            .iter()
            .filter_map(|(_, start)| *start)
            .min()
            .unwrap_or(self.inode_table_start);
        ByteRange::new(first, self.bytes_used)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible superblock: a 1 MiB image whose tables start at 900 KiB.
    pub(crate) fn sample_superblock() -> [u8; SUPERBLOCK_LEN] {
        let mut sb = [0u8; SUPERBLOCK_LEN];
        let mut put = |at: usize, v: &[u8]| sb[at..at + v.len()].copy_from_slice(v);
        put(0, &MAGIC.to_le_bytes());
        put(4, &42u32.to_le_bytes());
        put(12, &131072u32.to_le_bytes());
        put(16, &3u32.to_le_bytes());
        put(20, &1u16.to_le_bytes());
        put(22, &17u16.to_le_bytes());
        put(26, &1u16.to_le_bytes());
        put(28, &4u16.to_le_bytes());
        put(30, &0u16.to_le_bytes());
        put(40, &(1u64 << 20).to_le_bytes());
        put(48, &1_040_000u64.to_le_bytes());
        put(56, &u64::MAX.to_le_bytes());
        put(64, &921_600u64.to_le_bytes());
        put(72, &980_000u64.to_le_bytes());
        put(80, &1_030_000u64.to_le_bytes());
        put(88, &1_035_000u64.to_le_bytes());
        sb
    }

    #[test]
    fn parses_fields_and_tail() {
        let sb = Superblock::parse(&sample_superblock()).unwrap();
        assert_eq!(sb.inode_count, 42);
        assert_eq!(sb.block_size, 131072);
        assert_eq!(sb.xattr_id_table_start, None);
        assert_eq!(sb.fragment_table_start, Some(1_030_000));
        assert_eq!(sb.metadata_tail(), ByteRange::new(921_600, 1 << 20));
    }

    #[test]
    fn rejects_wrong_magic_version_block_size_and_tables() {
        let mut bad = sample_superblock();
        bad[0] = b'x';
        assert!(matches!(
            Superblock::parse(&bad),
            Err(SuperblockError::Magic(_))
        ));
        let mut bad = sample_superblock();
        bad[28] = 3;
        assert!(matches!(
            Superblock::parse(&bad),
            Err(SuperblockError::Version { .. })
        ));
        let mut bad = sample_superblock();
        bad[22] = 16;
        assert!(matches!(
            Superblock::parse(&bad),
            Err(SuperblockError::BlockSize { .. })
        ));
        let mut bad = sample_superblock();
        bad[64..72].copy_from_slice(&(2u64 << 20).to_le_bytes());
        assert!(matches!(
            Superblock::parse(&bad),
            Err(SuperblockError::TableOutside { table: "inode", .. })
        ));
        assert_eq!(
            Superblock::parse(&bad[..50]),
            Err(SuperblockError::Truncated(50))
        );
    }
}
