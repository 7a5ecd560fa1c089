//! gzip checkpoints: places in the compressed blob where decoding can resume without starting
//! from the beginning (zran's access points).
//!
//! A checkpoint is either the start of a gzip member (decoding restarts at its header, no state
//! needed) or a deflate block boundary inside a member, which needs the bit position and the
//! 32 KiB of output before it (the sliding window). Windows are most of the index's size, so they
//! are stored sparse and raw-deflated: a [`WindowProbe`] finds which window bytes the data after
//! the checkpoint actually copies, the others are stored as zeros (rapidgzip's "sparse windows";
//! on a mixed 1 GiB tar about 15% of window bytes are referenced, and the windows shrink 4x).

use std::io::Write;

use super::inflate::{deflate_raw, RawInflate};

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

/// Finds the bytes of a checkpoint's window that decoding from the checkpoint ever reads.
///
/// Only the first 32 KiB of output after a checkpoint can reach back into its window (a deflate
/// distance is at most 32 KiB). Whether an output byte is a literal or a copy, and of which
/// window byte, depends only on the bit stream, never on the window's contents: every output
/// byte is a fixed literal or a (possibly chained) copy of one fixed window byte. So that output
/// is decoded three times, with synthetic windows holding each position's low byte, its
/// complement, and its high byte: where the first two disagree the byte came from the window,
/// and the first and third name the position. Positions no output byte came from are stored as
/// zeros; decoding from the checkpoint with that window gives exactly the same bytes.
///
/// The probe is fed the compressed bytes after the checkpoint as the scan consumes them and is
/// done after 32 KiB of output (or the end of the deflate stream). Anything unexpected (a probe
/// fails, disagrees with itself, never finishes) keeps the whole window: correct, just larger.
pub(crate) struct WindowProbe {
    window: Vec<u8>,
    probes: Vec<Probe>,
    failed: bool,
}

/// One of the three synthetic-window decoders.
struct Probe {
    inflate: RawInflate,
    out: Vec<u8>,
    done: bool,
}

impl WindowProbe {
    /// A probe of `window` for the deflate data that follows it; `prime` is (bits, value) when
    /// the checkpoint is mid-byte, as for [`RawInflate::prime`].
    pub(crate) fn new(window: Vec<u8>, prime: Option<(u8, u8)>) -> WindowProbe {
        let len = window.len();
        let low: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let inverse: Vec<u8> = low.iter().map(|b| !b).collect();
        let high: Vec<u8> = (0..len).map(|i| (i >> 8) as u8).collect();
        let mut probes = Vec::with_capacity(3);
        let mut failed = false;
        for synthetic in [low, inverse, high] {
            match Probe::new(&synthetic, prime) {
                Ok(p) => probes.push(p),
                Err(_) => failed = true,
            }
        }
        WindowProbe {
            window,
            probes,
            failed,
        }
    }

    /// Feeds the next compressed bytes of the deflate stream.
    pub(crate) fn feed(&mut self, input: &[u8]) {
        if self.failed {
            return;
        }
        for p in &mut self.probes {
            if p.feed(input).is_err() {
                self.failed = true;
                return;
            }
        }
    }

    /// True once the probe knows the answer (or gave up); feeding it more changes nothing.
    pub(crate) fn is_done(&self) -> bool {
        self.failed || self.probes.iter().all(|p| p.done)
    }

    /// The window to store, deflated: sparse when the probe finished cleanly, else whole.
    pub(crate) fn finish(self) -> Vec<u8> {
        match self.used() {
            Some(used) => {
                let sparse: Vec<u8> = self
                    .window
                    .iter()
                    .zip(&used)
                    .map(|(&b, &u)| if u { b } else { 0 })
                    .collect();
                pack_window(&sparse)
            }
            None => pack_window(&self.window),
        }
    }

    /// Which window positions the output copied, or `None` if the probes cannot tell.
    fn used(&self) -> Option<Vec<bool>> {
        if self.failed || self.probes.len() != 3 || !self.is_done() {
            return None;
        }
        let (low, inverse, high) = (
            &self.probes[0].out,
            &self.probes[1].out,
            &self.probes[2].out,
        );
        if low.len() != inverse.len() || low.len() != high.len() {
            return None;
        }
        let mut used = vec![false; self.window.len()];
        for j in 0..low.len() {
            if low[j] == inverse[j] {
                continue; // a literal, or copied from a literal
            }
            if low[j] != !inverse[j] {
                return None;
            }
            let at = usize::from(low[j]) | usize::from(high[j]) << 8;
            *used.get_mut(at)? = true;
        }
        Some(used)
    }
}

impl Probe {
    /// A decoder resuming with `window` (and the checkpoint's partial byte).
    fn new(window: &[u8], prime: Option<(u8, u8)>) -> Result<Probe, String> {
        let mut inflate = RawInflate::new()?;
        if let Some((bits, value)) = prime {
            inflate.prime(bits, value)?;
        }
        inflate.set_dictionary(window)?;
        Ok(Probe {
            inflate,
            out: Vec::with_capacity(WINDOW_SIZE),
            done: false,
        })
    }

    /// Decodes `input` until the first window's worth of output is there or the stream ends.
    fn feed(&mut self, mut input: &[u8]) -> Result<(), String> {
        while !self.done && !input.is_empty() {
            let step = self
                .inflate
                .inflate_append(input, &mut self.out, WINDOW_SIZE)?;
            input = &input[step.consumed..];
            if step.stream_end || self.out.len() >= WINDOW_SIZE {
                self.done = true;
            } else if step.consumed == 0 && step.produced == 0 {
                return Err("probe made no progress".to_string());
            }
        }
        Ok(())
    }
}

/// zlib level of stored windows. On the bench archive's sparse windows level 6 is 0.2% larger
/// than 9 and takes a third of the time.
const PACK_LEVEL: i32 = 6;

/// Deflates a window for storage.
pub(crate) fn pack_window(window: &[u8]) -> Vec<u8> {
    // zlib-rs only fails to deflate a buffer it cannot allocate for; flate2 cannot fail here.
    deflate_raw(window, PACK_LEVEL).unwrap_or_else(|_| {
        let mut enc = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(window.len() / 2),
            flate2::Compression::new(PACK_LEVEL as u32),
        );
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(window);
        enc.finish().unwrap_or_default()
    })
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
