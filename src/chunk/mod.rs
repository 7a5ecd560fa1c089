//! Chunk indexes: how a large image is fetched chunk by chunk, each chunk verified, and how a new
//! version of an image shares most of its chunks with the previous one.
//!
//! The publisher runs `lazycas index FILE`, which cuts the file into content-defined chunks
//! ([`chunker`], FastCDC) and writes a [`ChunkIndex`]: the whole file's sha256 and size, the
//! chunker's parameters, each chunk's end offset and sha256, and format [`hints`] (squashfs
//! metadata tail, SIF primary partition). A node fetches the index, checks it against the digest
//! its catalog pins and parses it defensively ([`ChunkIndex::parse`], [`format`]); reads then ask
//! [`ChunkIndex::chunks_covering`] which chunks to fetch and verify.
//!
//! Not here: fetching chunks, storing them, serving reads (the read path builds on this).

pub mod chunker;
pub mod format;
pub mod hints;
pub mod index;
pub mod sif;
pub mod spans;
pub mod squashfs;

pub use chunker::{ChunkerParams, ChunkerParamsError};
pub use format::ChunkIndexError;
pub use hints::{ArchiveHint, Hints, SifHint, SquashfsHint};
pub use index::{ChunkEntry, ChunkIndex};
pub use spans::Cutting;

#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Cursor;

    use super::*;
    use crate::digest::Digest;
    use crate::range::ByteRange;

    use crate::cli::demo::samples::pseudo_random;

    fn small_params() -> ChunkerParams {
        ChunkerParams::new(4096, 16384, 65536).unwrap()
    }

    fn index_of(data: &[u8]) -> ChunkIndex {
        ChunkIndex::build(Cursor::new(data), small_params()).unwrap()
    }

    /// Parses bytes pinned to their own digest, so only the structural rules are exercised.
    fn reparse(bytes: &[u8]) -> Result<ChunkIndex, ChunkIndexError> {
        ChunkIndex::parse(bytes, &Digest::of(bytes))
    }

    /// A SIF of ~1 MiB wrapping a (synthetic) squashfs superblock, so both hints are found.
    fn sif_like_file() -> Vec<u8> {
        let partition = ByteRange::at(32768, 1 << 20);
        let mut file = sif::tests::sample_sif_prefix(partition);
        file.resize(partition.end() as usize, 0);
        let body = pseudo_random(file.len() - 32768 - 96, 7);
        file[32768..32768 + 96].copy_from_slice(&squashfs::tests::sample_superblock());
        file[32768 + 96..].copy_from_slice(&body);
        file
    }

    #[test]
    fn builds_consistent_chunks_and_the_whole_digest() {
        let data = pseudo_random(2 * 1024 * 1024 + 5, 3);
        let index = index_of(&data);
        assert_eq!(index.size(), data.len() as u64);
        assert_eq!(index.file_digest(), Digest::of(&data));
        for i in 0..index.chunks().len() {
            let r = index.chunk_range(i).unwrap();
            let bytes = &data[r.start() as usize..r.end() as usize];
            assert_eq!(Digest::of(bytes), index.chunks()[i].digest);
        }
        assert_eq!(index.chunks().last().unwrap().end, data.len() as u64);
    }

    #[test]
    fn round_trips_with_hints() {
        let file = sif_like_file();
        let index = index_of(&file);
        assert!(index.hints().sif.is_some() && index.hints().squashfs.is_some());
        let bytes = index.to_bytes();
        assert_eq!(ChunkIndex::parse(&bytes, &Digest::of(&bytes)), Ok(index));
    }

    #[test]
    fn round_trips_an_empty_file() {
        let index = index_of(b"");
        assert!(index.chunks().is_empty());
        assert_eq!(reparse(&index.to_bytes()), Ok(index));
    }

    #[test]
    fn a_pin_mismatch_is_refused_before_parsing() {
        let garbage = b"not an index at all".to_vec();
        let pin = Digest::of(b"something else");
        assert_eq!(
            ChunkIndex::parse(&garbage, &pin),
            Err(ChunkIndexError::PinMismatch {
                expected: pin,
                actual: Digest::of(&garbage)
            })
        );
        let good = index_of(&pseudo_random(100_000, 5)).to_bytes();
        assert!(matches!(
            ChunkIndex::parse(&good, &pin),
            Err(ChunkIndexError::PinMismatch { .. })
        ));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = index_of(b"hello").to_bytes();
        bytes[0] = b'X';
        assert_eq!(reparse(&bytes), Err(ChunkIndexError::Magic));
    }

    #[test]
    fn rejects_unknown_version() {
        let mut bytes = index_of(b"hello").to_bytes();
        bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(reparse(&bytes), Err(ChunkIndexError::Version(2)));
    }

    #[test]
    fn rejects_truncation_anywhere() {
        let bytes = index_of(&sif_like_file()).to_bytes();
        for cut in 0..bytes.len() {
            let err = reparse(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ChunkIndexError::Truncated { .. }
                        | ChunkIndexError::ChunkCount { .. }
                        | ChunkIndexError::HintLength { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn rejects_unknown_chunker() {
        let mut bytes = index_of(b"hello").to_bytes();
        let name_at = 8 + 2 + 8 + 32 + 1;
        bytes[name_at] = b'X';
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::UnknownChunker(_))
        ));
    }

    #[test]
    fn rejects_invalid_chunker_parameters() {
        let mut bytes = index_of(b"hello").to_bytes();
        let min_at = 8 + 2 + 8 + 32 + 1 + chunker::CHUNKER_NAME.len();
        bytes[min_at..min_at + 4].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::ChunkerParams(_))
        ));
    }

    #[test]
    fn a_huge_chunk_count_is_refused_without_allocating() {
        let mut bytes = index_of(b"hello").to_bytes();
        let count_at = 8 + 2 + 8 + 32 + 1 + chunker::CHUNKER_NAME.len() + 12;
        bytes[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::ChunkCount {
                count: u64::MAX,
                ..
            })
        ));
    }

    /// An index over `data` whose chunk list is replaced by `ends` (digests are irrelevant to
    /// the structural rules).
    fn with_ends(data: &[u8], ends: &[u64]) -> Vec<u8> {
        let mut index = index_of(data);
        index.chunks = ends
            .iter()
            .map(|&end| ChunkEntry {
                end,
                digest: Digest::of(b""),
            })
            .collect();
        index.to_bytes()
    }

    #[test]
    fn rejects_offsets_that_do_not_increase() {
        let data = pseudo_random(100_000, 9);
        let bytes = with_ends(&data, &[20_000, 20_000, 100_000]);
        assert_eq!(
            reparse(&bytes),
            Err(ChunkIndexError::NotIncreasing {
                index: 1,
                end: 20_000,
                previous: 20_000
            })
        );
    }

    #[test]
    fn rejects_a_chunk_below_the_minimum() {
        let data = pseudo_random(100_000, 11);
        let bytes = with_ends(&data, &[20_000, 21_000, 80_000, 100_000]);
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::ChunkTooSmall {
                index: 1,
                len: 1000,
                min: 4096
            })
        ));
    }

    #[test]
    fn the_last_chunk_may_be_short() {
        let data = pseudo_random(100_000, 11);
        assert!(reparse(&with_ends(&data, &[50_000, 99_000, 100_000])).is_ok());
    }

    #[test]
    fn rejects_a_chunk_above_the_maximum() {
        let data = pseudo_random(100_000, 13);
        let bytes = with_ends(&data, &[30_000, 100_000]);
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::ChunkTooLarge {
                index: 1,
                len: 70_000,
                max: 65536
            })
        ));
    }

    #[test]
    fn rejects_chunks_not_covering_the_size() {
        let data = pseudo_random(100_000, 15);
        let bytes = with_ends(&data, &[40_000, 90_000]);
        assert_eq!(
            reparse(&bytes),
            Err(ChunkIndexError::TotalMismatch {
                covered: 90_000,
                size: 100_000
            })
        );
    }

    /// The offset of the hint section (its count) in an encoded index.
    fn hints_at(index: &ChunkIndex) -> usize {
        8 + 2 + 8 + 32 + 1 + chunker::CHUNKER_NAME.len() + 12 + 8 + index.chunks().len() * 40
    }

    #[test]
    fn rejects_a_hint_longer_than_the_bytes_left() {
        let index = index_of(&sif_like_file());
        let mut bytes = index.to_bytes();
        let len_at = hints_at(&index) + 2 + 2;
        bytes[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            reparse(&bytes),
            Err(ChunkIndexError::HintLength {
                index: 0,
                len: u32::MAX,
                ..
            })
        ));
    }

    /// An encoded index over `data` with its hint section replaced by `hints` (kind, payload).
    fn with_hints(data: &[u8], hints: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut index = index_of(data);
        index.hints = Hints::default();
        let mut bytes = index.to_bytes();
        let at = hints_at(&index);
        bytes.truncate(at);
        bytes.extend_from_slice(&(hints.len() as u16).to_le_bytes());
        for (kind, payload) in hints {
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    fn squashfs_payload(offset: u64, superblock: &[u8]) -> Vec<u8> {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(superblock);
        p
    }

    #[test]
    fn rejects_a_hint_payload_of_the_wrong_size() {
        let bytes = with_hints(b"hello", &[(1, vec![0; 10])]);
        assert_eq!(
            reparse(&bytes),
            Err(ChunkIndexError::HintPayload {
                kind: 1,
                len: 10,
                want: 104
            })
        );
    }

    #[test]
    fn rejects_a_repeated_hint() {
        let data = sif_like_file();
        let sq = squashfs_payload(32768, &squashfs::tests::sample_superblock());
        let bytes = with_hints(&data, &[(1, sq.clone()), (1, sq)]);
        assert_eq!(reparse(&bytes), Err(ChunkIndexError::HintRepeated(1)));
    }

    #[test]
    fn rejects_a_hint_outside_the_file() {
        let data = sif_like_file();
        let sq = squashfs_payload(1 << 20, &squashfs::tests::sample_superblock());
        assert!(matches!(
            reparse(&with_hints(&data, &[(1, sq)])),
            Err(ChunkIndexError::Hint(hints::HintError::OutsideFile { .. }))
        ));
        let mut sif = 100u64.to_le_bytes().to_vec();
        sif.extend_from_slice(&u64::MAX.to_le_bytes());
        sif.extend_from_slice(&10u64.to_le_bytes());
        sif.extend_from_slice(&1i32.to_le_bytes());
        assert!(matches!(
            reparse(&with_hints(&data, &[(2, sif)])),
            Err(ChunkIndexError::Hint(hints::HintError::Overflow(_)))
        ));
    }

    #[test]
    fn rejects_a_hint_with_a_bad_superblock() {
        let data = sif_like_file();
        let sq = squashfs_payload(32768, &[0u8; 96]);
        assert!(matches!(
            reparse(&with_hints(&data, &[(1, sq)])),
            Err(ChunkIndexError::Hint(hints::HintError::Superblock(_)))
        ));
    }

    #[test]
    fn skips_unknown_hint_kinds() {
        let data = pseudo_random(50_000, 17);
        let parsed = reparse(&with_hints(&data, &[(77, vec![1, 2, 3])])).unwrap();
        assert_eq!(parsed.hints(), &Hints::default());
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = index_of(b"hello").to_bytes();
        bytes.extend_from_slice(b"xx");
        assert_eq!(reparse(&bytes), Err(ChunkIndexError::TrailingBytes(2)));
    }

    #[test]
    fn finds_the_chunks_covering_a_range() {
        let data = pseudo_random(100_000, 19);
        let bytes = with_ends(&data, &[10_000, 30_000, 60_000, 100_000]);
        let index = reparse(&bytes).unwrap();
        let covering = |s, e| index.chunks_covering(ByteRange::new(s, e));
        assert_eq!(covering(0, 1), 0..1);
        assert_eq!(covering(9_999, 10_000), 0..1);
        assert_eq!(covering(9_999, 10_001), 0..2);
        assert_eq!(covering(10_000, 30_000), 1..2);
        assert_eq!(covering(5_000, 70_000), 0..4);
        assert_eq!(covering(99_999, 500_000), 3..4);
        assert_eq!(covering(100_000, 100_010), 4..4);
        assert_eq!(covering(20_000, 20_000), 1..1);
    }

    #[test]
    fn a_sif_prefetches_its_start_and_its_tail_in_two_runs() {
        let index = index_of(&sif_like_file());
        let runs = index.prefetch_chunks();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].start, 0);
        assert_eq!(runs[1].end, index.chunks().len());
        let tail = index.hints().squashfs.unwrap().metadata_tail();
        assert_eq!(runs[1], index.chunks_covering(tail));
        assert!(index_of(&pseudo_random(300_000, 27))
            .prefetch_chunks()
            .is_empty());
    }

    #[test]
    fn boundaries_survive_an_insertion() {
        let original = pseudo_random(8 * 1024 * 1024, 21);
        let mut edited = original.clone();
        let insertion = pseudo_random(1000, 23);
        edited.splice(3_000_000..3_000_000, insertion);
        let (a, b) = (index_of(&original), index_of(&edited));
        let old: HashSet<Digest> = a.chunks().iter().map(|c| c.digest).collect();
        let shared: u64 = (0..b.chunks().len())
            .filter(|&i| old.contains(&b.chunks()[i].digest))
            .map(|i| b.chunk_range(i).unwrap().len())
            .sum();
        let share = shared as f64 / edited.len() as f64;
        assert!(share > 0.97, "only {:.1}% of bytes shared", share * 100.0);
    }

    /// Random damage to a valid index (flipped bytes, cuts, insertions), each re-pinned so the
    /// parser sees it: parsing never panics, and whatever it accepts keeps the invariants.
    #[test]
    fn damaged_indexes_never_panic_and_accepted_ones_are_consistent() {
        let good = index_of(&sif_like_file()).to_bytes();
        let noise = pseudo_random(3 * 4000 + 8, 25);
        for round in 0..4000 {
            let r = |k: usize| {
                u64::from_le_bytes(noise[round * 3..][..8].try_into().unwrap())
                    .rotate_left(k as u32 * 21) as usize
            };
            let mut bytes = good.clone();
            match r(0) % 3 {
                0 => bytes[r(1) % good.len()] ^= (r(2) % 255 + 1) as u8,
                1 => bytes.truncate(r(1) % good.len()),
                _ => bytes.insert(r(1) % good.len(), r(2) as u8),
            }
            let Ok(index) = reparse(&bytes) else {
                continue;
            };
            let mut previous = 0;
            for c in index.chunks() {
                assert!(c.end > previous);
                previous = c.end;
            }
            assert_eq!(previous, index.size());
            assert!(index.hints().check(index.size()).is_ok());
        }
    }
}
