//! Raw deflate (no zlib/gzip wrapper) through the zlib C API of `libz-rs-sys`: decoding, and the
//! one-shot encoding of checkpoint windows ([`deflate_raw`]; zlib-rs encodes them in about half
//! the time miniz_oxide, flate2's default backend, takes at the same level and size).
//!
//! This is the only file of the archive layer with `unsafe`: it owns one `z_stream`, keeps it at a
//! fixed heap address (zlib checks `state->strm == strm`), points it at caller slices only for the
//! duration of one call, and frees it on drop. Everything above sees a safe [`RawInflate`].

use std::ffi::{c_int, CStr};

use libz_rs_sys as z;

use super::checkpoint::WINDOW_SIZE;

/// Bit set in `data_type` when inflate stopped right after an end-of-block code.
pub(crate) const AT_BLOCK_END: i32 = 128;
/// Bit set in `data_type` while (or right after) decoding the final block of the stream.
pub(crate) const IN_LAST_BLOCK: i32 = 64;

/// What one inflate call did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// The deflate stream ended (its final block is complete).
    pub stream_end: bool,
    /// zlib's `data_type`: unused bits in the last consumed byte (`& 7`) plus the flags above.
    pub data_type: i32,
}

/// A raw-deflate decoder (windowBits -15).
pub(crate) struct RawInflate {
    strm: Box<z::z_stream>,
}

// SAFETY: the z_stream and the state it points to are owned exclusively by this value and have no
// thread affinity; they are only touched through `&mut self`.
unsafe impl Send for RawInflate {}

impl RawInflate {
    /// A decoder positioned at the start of a raw deflate stream.
    pub(crate) fn new() -> Result<RawInflate, String> {
        let mut strm = Box::<z::z_stream>::default();
        let stream_size = std::mem::size_of::<z::z_stream>() as c_int;
        // SAFETY: `strm` is a valid, zeroed z_stream at a stable heap address.
        let ret = unsafe { z::inflateInit2_(&mut *strm, -15, z::zlibVersion(), stream_size) };
        if ret != z::Z_OK {
            return Err(format!("inflateInit2 failed ({ret})"));
        }
        Ok(RawInflate { strm })
    }

    /// Starts over at the beginning of a new raw deflate stream (next gzip member).
    pub(crate) fn reset(&mut self) -> Result<(), String> {
        // SAFETY: the stream was initialised in `new`.
        let ret = unsafe { z::inflateReset(&mut *self.strm) };
        self.check(ret, "inflateReset")
    }

    /// Feeds the `bits` low bits of `value` before any input byte (resuming mid-byte).
    pub(crate) fn prime(&mut self, bits: u8, value: u8) -> Result<(), String> {
        // SAFETY: the stream was initialised in `new`.
        let ret = unsafe { z::inflatePrime(&mut *self.strm, i32::from(bits), i32::from(value)) };
        self.check(ret, "inflatePrime")
    }

    /// Restores the sliding window (the up to 32 KiB of output that preceded the resume point).
    pub(crate) fn set_dictionary(&mut self, window: &[u8]) -> Result<(), String> {
        let len = u32::try_from(window.len()).map_err(|_| "window too large".to_string())?;
        // SAFETY: the pointer/length pair describes `window`, which outlives the call.
        let ret = unsafe { z::inflateSetDictionary(&mut *self.strm, window.as_ptr(), len) };
        self.check(ret, "inflateSetDictionary")
    }

    /// The sliding window inflate keeps: the last up-to-32 KiB of output, oldest first. (The
    /// unused part of an output buffer is not a substitute: zlib-rs may scribble in it.)
    pub(crate) fn dictionary(&self) -> Result<Vec<u8>, String> {
        let mut dict = vec![0u8; WINDOW_SIZE];
        let mut len: u32 = 0;
        // SAFETY: `dict` has room for a full window, which zlib documents as always enough.
        let ret = unsafe { z::inflateGetDictionary(&*self.strm, dict.as_mut_ptr(), &mut len) };
        self.check(ret, "inflateGetDictionary")?;
        dict.truncate(len as usize);
        Ok(dict)
    }

    /// Decodes into `out`, stopping at the end of each deflate block (`Z_BLOCK`).
    pub(crate) fn inflate_block(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, String> {
        // SAFETY: `out` is a valid writable region of `out.len()` bytes.
        unsafe { self.run(input, out.as_mut_ptr(), out.len(), z::Z_BLOCK) }
    }

    /// Decodes, appending to `out` until it holds `limit` bytes at most.
    pub(crate) fn inflate_append(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<Step, String> {
        let len = out.len();
        let room = limit.saturating_sub(len);
        out.reserve(room);
        // SAFETY: `reserve` made `room` bytes after `len` writable; zlib writes at most `room`
        // bytes there and reports how many, and only those become part of the vector.
        let step = unsafe { self.run(input, out.as_mut_ptr().add(len), room, z::Z_NO_FLUSH)? };
        // SAFETY: `produced <= room` bytes after `len` were initialised by inflate.
        unsafe { out.set_len(len + step.produced) };
        Ok(step)
    }

    /// One `inflate` call over `input` into `out_len` bytes at `out`.
    ///
    /// # Safety
    /// `out` must be valid for writes of `out_len` bytes.
    unsafe fn run(
        &mut self,
        input: &[u8],
        out: *mut u8,
        out_len: usize,
        flush: c_int,
    ) -> Result<Step, String> {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = out_len.min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = out;
        self.strm.avail_out = avail_out;
        // SAFETY: next_in/next_out describe live buffers (caller contract for `out`).
        let ret = unsafe { z::inflate(&mut *self.strm, flush) };
        let step = Step {
            consumed: (avail_in - self.strm.avail_in) as usize,
            produced: (avail_out - self.strm.avail_out) as usize,
            stream_end: ret == z::Z_STREAM_END,
            data_type: self.strm.data_type,
        };
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        match ret {
            z::Z_OK | z::Z_STREAM_END | z::Z_BUF_ERROR => Ok(step),
            z::Z_NEED_DICT => Err("deflate stream asks for a preset dictionary".to_string()),
            _ => Err(self.message(ret)),
        }
    }

    /// Turns a non-OK return code into an error naming the call.
    fn check(&self, ret: c_int, call: &str) -> Result<(), String> {
        if ret == z::Z_OK {
            Ok(())
        } else {
            Err(format!("{call}: {}", self.message(ret)))
        }
    }

    /// zlib's message for the last error, or the bare code.
    fn message(&self, ret: c_int) -> String {
        if self.strm.msg.is_null() {
            return format!("inflate error {ret}");
        }
        // SAFETY: zlib sets `msg` to a static NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(self.strm.msg) };
        msg.to_string_lossy().into_owned()
    }
}

impl Drop for RawInflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised in `new` and is ended exactly once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

/// `data` deflated at zlib `level` (0..=9), raw (windowBits -15).
pub(crate) fn deflate_raw(data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let avail_in = u32::try_from(data.len()).map_err(|_| "input too large".to_string())?;
    let mut strm = Box::<z::z_stream>::default();
    let stream_size = std::mem::size_of::<z::z_stream>() as c_int;
    // SAFETY: `strm` is a valid, zeroed z_stream at a stable heap address.
    let ret = unsafe {
        z::deflateInit2_(
            &mut *strm,
            level,
            z::Z_DEFLATED,
            -15,
            8,
            z::Z_DEFAULT_STRATEGY,
            z::zlibVersion(),
            stream_size,
        )
    };
    if ret != z::Z_OK {
        return Err(format!("deflateInit2 failed ({ret})"));
    }
    // SAFETY: the stream was initialised above.
    let bound = unsafe { z::deflateBound(&mut *strm, avail_in.into()) } as usize;
    let mut out = vec![0u8; bound];
    strm.next_in = data.as_ptr();
    strm.avail_in = avail_in;
    strm.next_out = out.as_mut_ptr();
    strm.avail_out = u32::try_from(bound).map_err(|_| "output too large".to_string())?;
    // SAFETY: next_in/next_out describe `data` and `out`, both alive for the call; deflateBound
    // room lets one Z_FINISH call complete.
    let ret = unsafe { z::deflate(&mut *strm, z::Z_FINISH) };
    let written = bound - strm.avail_out as usize;
    strm.next_in = std::ptr::null();
    strm.next_out = std::ptr::null_mut();
    // SAFETY: initialised above, ended exactly once.
    unsafe { z::deflateEnd(&mut *strm) };
    if ret != z::Z_STREAM_END {
        return Err(format!("deflate did not finish ({ret})"));
    }
    out.truncate(written);
    // The bound is about the input's size, often 8x what a sparse window packs to: an index
    // holds thousands of these until it is saved.
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn round_trips_through_append() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let comp = deflate_raw(&data);
        let mut inf = RawInflate::new().unwrap();
        let mut out = Vec::new();
        let mut input = &comp[..];
        loop {
            let step = inf
                .inflate_append(input, &mut out, data.len() + 10)
                .unwrap();
            input = &input[step.consumed..];
            if step.stream_end {
                break;
            }
            assert!(step.consumed + step.produced > 0);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn deflate_raw_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 97) as u8).collect();
        for level in [1, 6, 9] {
            let packed = super::deflate_raw(&data, level).unwrap();
            assert!(packed.len() < data.len() / 4);
            // Not the deflate bound's room: an index keeps thousands of packed windows.
            assert!(
                packed.capacity() < 2 * packed.len() + 64,
                "{}",
                packed.capacity()
            );
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&packed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
        assert!(!super::deflate_raw(b"", 6).unwrap().is_empty());
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut inf = RawInflate::new().unwrap();
        let mut out = vec![0u8; 1024];
        let garbage = [0xffu8; 64];
        assert!(inf.inflate_block(&garbage, &mut out).is_err());
    }
}
