//! gzip checkpoints: places in the compressed blob where decoding can resume without starting
//! from the beginning (zran's access points).
//!
//! A checkpoint is either the start of a gzip member (decoding restarts at its header, no state
//! needed) or a deflate block boundary inside a member, which needs the bit position and the
//! 32 KiB of output before it (the sliding window). Windows are stored raw-deflated: they are
//! most of the index's size and usually compress 2-4x.

use std::io::Write;

/// The deflate sliding window: the most output a back-reference can reach.
pub(crate) const WINDOW_SIZE: usize = 32 * 1024;

/// One resume point.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Checkpoint {
    /// Offset in the uncompressed (tar) stream of the next byte decoded from here.
    pub uoff: u64,
    /// Compressed bytes before this point: the member header's offset for a member start, else
    /// zlib's `total_in` (the next whole byte to feed).
    pub cbyte: u64,
    /// Bits of the byte at `cbyte - 1` that still belong to the next block (0..=7).
    pub bits: u8,
    /// The deflated window, or `None` for a member start.
    pub window: Option<Vec<u8>>,
}

impl Checkpoint {
    /// A checkpoint at a gzip member header.
    pub(crate) fn member_start(uoff: u64, header_offset: u64) -> Checkpoint {
        Checkpoint {
            uoff,
            cbyte: header_offset,
            bits: 0,
            window: None,
        }
    }
}

/// Deflates a window for storage.
pub(crate) fn pack_window(window: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(window.len() / 2),
        flate2::Compression::best(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(window);
    enc.finish().unwrap_or_default()
}

/// Inflates a stored window; `None` if it is corrupt or larger than a window can be.
pub(crate) fn unpack_window(packed: &[u8]) -> Option<Vec<u8>> {
    let mut dec = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(WINDOW_SIZE);
    let status = dec
        .decompress_vec(packed, &mut out, flate2::FlushDecompress::Finish)
        .ok()?;
    // A full Vec with the stream unfinished means the packed data claims more than a window.
    if status != flate2::Status::StreamEnd || dec.total_in() != packed.len() as u64 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_round_trip() {
        let w: Vec<u8> = (0..WINDOW_SIZE).map(|i| (i % 97) as u8).collect();
        let packed = pack_window(&w);
        assert!(packed.len() < w.len());
        assert_eq!(unpack_window(&packed).unwrap(), w);
        assert_eq!(unpack_window(&pack_window(b"")).unwrap(), b"");
    }

    #[test]
    fn oversized_or_corrupt_window_is_rejected() {
        let big = vec![0u8; WINDOW_SIZE + 1];
        assert!(unpack_window(&pack_window(&big)).is_none());
        assert!(unpack_window(&[0xff, 0xff, 0xff]).is_none());
    }
}
