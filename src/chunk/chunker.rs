//! Content-defined chunking: where a file is cut into chunks, and the bounds a chunk index is
//! checked against.
//!
//! Boundaries come from FastCDC (the `fastcdc` crate's 2020 variant, normalization level 1,
//! gear seed 0), so they follow the content: inserting bytes in the middle of an image moves only
//! the cuts near the insertion, and a rebuilt squashfs shares most chunks with its previous
//! version. The file is streamed through a buffer of `max_size` bytes, never read whole.
//!
//! Not here: hashing or the index layout (see [`super::ChunkIndex`]).

use std::io::Read;

use fastcdc::v2020::StreamCDC;

/// Why chunker parameters are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkerParamsError {
    /// A size lies outside what FastCDC 2020 supports.
    #[error("chunker {what} size {value} is outside {low}..={high}")]
    OutOfRange {
        /// `min`, `avg` or `max`.
        what: &'static str,
        /// The size given.
        value: u32,
        /// The smallest allowed.
        low: u32,
        /// The largest allowed.
        high: u32,
    },
    /// FastCDC requires even sizes.
    #[error("chunker {what} size {value} is odd (FastCDC needs even sizes)")]
    Odd {
        /// `min`, `avg` or `max`.
        what: &'static str,
        /// The size given.
        value: u32,
    },
    /// The sizes are not ordered `min <= avg <= max`.
    #[error("chunker sizes must satisfy min <= avg <= max (got {min} / {avg} / {max})")]
    Unordered {
        /// Minimum chunk size.
        min: u32,
        /// Average chunk size.
        avg: u32,
        /// Maximum chunk size.
        max: u32,
    },
}

/// The chunker's size parameters, validated: every value of this type can drive FastCDC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
}

/// The name recorded in an index for the one chunker that exists.
pub const CHUNKER_NAME: &str = "fastcdc-v2020";

impl Default for ChunkerParams {
    /// 32 KiB / 128 KiB / 512 KiB: large enough that per-chunk overhead (a digest, a request
    /// slot) stays small, small enough that a 4 KiB read fetches little beyond itself.
    fn default() -> ChunkerParams {
        ChunkerParams {
            min_size: 32 * 1024,
            avg_size: 128 * 1024,
            max_size: 512 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the sizes against FastCDC 2020's limits (min 64 B..1 MiB, avg 256 B..4 MiB,
    /// max 1 KiB..16 MiB, all even, ordered).
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self, ChunkerParamsError> {
        check_size(
            "min",
            min_size,
            fastcdc::v2020::MINIMUM_MIN,
            fastcdc::v2020::MINIMUM_MAX,
        )?;
        check_size(
            "avg",
            avg_size,
            fastcdc::v2020::AVERAGE_MIN,
            fastcdc::v2020::AVERAGE_MAX,
        )?;
        check_size(
            "max",
            max_size,
            fastcdc::v2020::MAXIMUM_MIN,
            fastcdc::v2020::MAXIMUM_MAX,
        )?;
        if !(min_size <= avg_size && avg_size <= max_size) {
            return Err(ChunkerParamsError::Unordered {
                min: min_size,
                avg: avg_size,
                max: max_size,
            });
        }
        Ok(ChunkerParams {
            min_size,
            avg_size,
            max_size,
        })
    }

    /// The smallest chunk (only the last chunk of a file may be shorter).
    pub fn min_size(&self) -> u32 {
        self.min_size
    }

    /// The size FastCDC aims for.
    pub fn avg_size(&self) -> u32 {
        self.avg_size
    }

    /// The largest chunk.
    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    /// Cuts `reader` into content-defined chunks, streaming: yields each chunk's bytes in order.
    pub fn chunks<R: Read>(&self, reader: R) -> Chunks<R> {
        Chunks {
            inner: StreamCDC::new(
                reader,
                self.min_size as usize,
                self.avg_size as usize,
                self.max_size as usize,
            ),
        }
    }
}

fn check_size(
    what: &'static str,
    value: u32,
    low: usize,
    high: usize,
) -> Result<(), ChunkerParamsError> {
    let (low, high) = (to_u32(low), to_u32(high));
    if !(low..=high).contains(&value) {
        return Err(ChunkerParamsError::OutOfRange {
            what,
            value,
            low,
            high,
        });
    }
    if !value.is_multiple_of(2) {
        return Err(ChunkerParamsError::Odd { what, value });
    }
    Ok(())
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The chunks of a stream, in order (see [`ChunkerParams::chunks`]).
pub struct Chunks<R: Read> {
    inner: StreamCDC<R>,
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|r| r.map(|c| c.data).map_err(std::io::Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let d = ChunkerParams::default();
        assert_eq!(
            ChunkerParams::new(d.min_size(), d.avg_size(), d.max_size()),
            Ok(d)
        );
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(matches!(
            ChunkerParams::new(32, 1024, 4096),
            Err(ChunkerParamsError::OutOfRange { what: "min", .. })
        ));
        assert!(matches!(
            ChunkerParams::new(4097, 8192, 16384),
            Err(ChunkerParamsError::Odd { what: "min", .. })
        ));
        assert!(matches!(
            ChunkerParams::new(8192, 4096, 16384),
            Err(ChunkerParamsError::Unordered { .. })
        ));
        assert!(matches!(
            ChunkerParams::new(4096, 8192, 32 * 1024 * 1024),
            Err(ChunkerParamsError::OutOfRange { what: "max", .. })
        ));
    }

    #[test]
    fn chunks_concatenate_to_the_input_within_bounds() {
        let data = crate::cli::demo::samples::pseudo_random(3 * 1024 * 1024 + 17, 7);
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let chunks: Vec<Vec<u8>> = params.chunks(&data[..]).map(|c| c.unwrap()).collect();
        assert!(chunks.len() > 10);
        let (last, rest) = chunks.split_last().unwrap();
        for c in rest {
            assert!(
                (4096..=65536).contains(&c.len()),
                "chunk of {} bytes",
                c.len()
            );
        }
        assert!(last.len() <= 65536);
        assert_eq!(chunks.concat(), data);
    }
}
