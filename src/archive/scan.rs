//! Push-style gzip decoding for the index build: the compressed bytes arrive once, in order; the
//! decompressed bytes go to a sink (the tar parser) and checkpoints are recorded on the way.
//!
//! This is zran's algorithm turned inside out: inflate with `Z_BLOCK` so it returns at every
//! deflate block boundary, and at a boundary at least `spacing` bytes after the previous
//! checkpoint record (uncompressed offset, compressed offset + bits, window). The window is read
//! back from inflate (`inflateGetDictionary`) only when a checkpoint is taken.
//!
//! Checkpoints are spacing apart and no denser: their windows are most of the index, and a
//! fresh read of a small member does not need one next to it. The first read in the stretch
//! between two checkpoints decodes it whole into the store (`regions`) and the other members
//! there are read from that copy. Every member's CRC-32 and ISIZE are checked; multi-member
//! streams (concatenated gzip files) are followed; bytes after the last member that do not start
//! a new member are ignored with a warning, as gzip does.

use super::checkpoint::{Checkpoint, WINDOW_SIZE};
use super::gzip::{self, HeaderError, HeaderParse, Trailer, HEADER_CHUNK, TRAILER_LEN};
use super::inflate::{RawInflate, AT_BLOCK_END, IN_LAST_BLOCK};
use super::window_worker::WindowWorker;
use super::ArchiveError;

/// Member starts closer than this to the previous checkpoint get none (many tiny members).
const MIN_MEMBER_CHECKPOINT_GAP: u64 = 64 * 1024;
/// Output buffer size.
const OUT_CHUNK: usize = 64 * 1024;

/// Where in the gzip framing the next input byte belongs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// A member header (or, after the first member, possibly the end of the stream).
    Header,
    /// Deflate data of the current member.
    Deflate,
    /// The 8-byte trailer of the current member.
    Trailer,
    /// After the last member: ignored.
    Trailing,
}

/// Receives decompressed bytes; returns whether it still wants checkpoints (false once the tar
/// stream has ended and no later byte can be read by a member).
pub(crate) trait Sink {
    /// Takes the next decompressed bytes, in order.
    fn write(&mut self, data: &[u8]) -> Result<bool, ArchiveError>;
}

/// The push-style gzip walker.
pub(crate) struct GzipScanner {
    state: State,
    inflate: RawInflate,
    out: Box<[u8]>,
    member_out: u64,
    member_crc: flate2::Crc,
    member_start: u64,
    members: u64,
    header_buf: Vec<u8>,
    trailer_buf: Vec<u8>,
    cpos: u64,
    uoff: u64,
    spacing: u64,
    want_checkpoints: bool,
    checkpoints: Vec<Checkpoint>,
    /// Probes and packs the windows (on another thread).
    windows: WindowWorker,
    /// Compressed bytes are passed to `windows` while the output is before this offset (the
    /// first window's worth after the last checkpoint, all its probe decodes).
    probe_until: u64,
    /// Those bytes, not yet passed.
    probe_input: Vec<u8>,
    /// The last compressed byte given to inflate (a mid-byte checkpoint needs its high bits).
    last_in: u8,
    warned_trailing: bool,
}

impl GzipScanner {
    /// A scanner at the start of a gzip stream, checkpointing about every `spacing` output bytes.
    pub(crate) fn new(spacing: u64) -> Result<GzipScanner, ArchiveError> {
        let inflate = RawInflate::new().map_err(|what| ArchiveError::Gzip { offset: 0, what })?;
        Ok(GzipScanner {
            state: State::Header,
            inflate,
            out: vec![0u8; OUT_CHUNK].into_boxed_slice(),
            member_out: 0,
            member_crc: flate2::Crc::new(),
            member_start: 0,
            members: 0,
            header_buf: Vec::new(),
            trailer_buf: Vec::with_capacity(TRAILER_LEN),
            cpos: 0,
            uoff: 0,
            spacing: spacing.max(1),
            want_checkpoints: true,
            checkpoints: Vec::new(),
            windows: WindowWorker::start(),
            probe_until: 0,
            probe_input: Vec::new(),
            last_in: 0,
            warned_trailing: false,
        })
    }

    /// Feeds the next compressed bytes.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn Sink,
    ) -> Result<(), ArchiveError> {
        while !input.is_empty() {
            let before = self.state;
            let used = match self.state {
                State::Header => self.header(input)?,
                State::Deflate => self.deflate(input, sink)?,
                State::Trailer => self.trailer(input)?,
                State::Trailing => self.trailing(input),
            };
            if used == 0 && self.state == before {
                return Err(ArchiveError::Gzip {
                    offset: self.cpos,
                    what: "inflate made no progress".to_string(),
                });
            }
            input = &input[used..];
        }
        Ok(())
    }

    /// Ends the stream; returns the checkpoints and the decompressed length.
    pub(crate) fn finish(mut self) -> Result<(Vec<Checkpoint>, u64), ArchiveError> {
        self.pass_probe_input();
        let offset = self.cpos;
        let packed = self
            .windows
            .finish()
            .map_err(|what| ArchiveError::Gzip { offset, what })?;
        for (at, window) in packed {
            if let Some(cp) = self.checkpoints.get_mut(at) {
                cp.window = Some(window);
            }
        }
        let what = match self.state {
            State::Deflate => Some("inside deflate data"),
            State::Trailer => Some("inside a member trailer"),
            State::Header if self.members == 0 => Some("inside the first member header"),
            State::Header if self.header_buf.starts_with(&gzip::MAGIC) => {
                Some("inside a member header")
            }
            State::Header | State::Trailing => None,
        };
        match what {
            Some(what) => Err(ArchiveError::Truncated {
                offset: self.cpos,
                what,
            }),
            None => Ok((self.checkpoints, self.uoff)),
        }
    }

    /// Consumes header bytes; returns how many of `input` were used.
    fn header(&mut self, input: &[u8]) -> Result<usize, ArchiveError> {
        if self.header_buf.is_empty() {
            self.member_start = self.cpos;
        }
        let old = self.header_buf.len();
        let take = input.len().min(HEADER_CHUNK);
        self.header_buf.extend_from_slice(&input[..take]);
        match gzip::parse_header(&self.header_buf) {
            Ok(HeaderParse::Complete(len)) => {
                let used = len - old;
                self.cpos += used as u64;
                self.header_buf.clear();
                self.start_member()?;
                Ok(used)
            }
            Ok(HeaderParse::Incomplete) => {
                self.cpos += take as u64;
                Ok(take)
            }
            Err(HeaderError::NotGzip) if self.members > 0 => {
                self.header_buf.clear();
                self.state = State::Trailing;
                Ok(0)
            }
            Err(HeaderError::NotGzip) => Err(ArchiveError::Gzip {
                offset: self.member_start,
                what: "missing gzip magic".to_string(),
            }),
            Err(HeaderError::Corrupt(what)) => Err(ArchiveError::Gzip {
                offset: self.member_start,
                what,
            }),
        }
    }

    /// Prepares for the deflate data of a new member and records its checkpoint.
    fn start_member(&mut self) -> Result<(), ArchiveError> {
        if self.members > 0 {
            self.inflate.reset().map_err(|what| ArchiveError::Gzip {
                offset: self.cpos,
                what,
            })?;
        }
        self.members += 1;
        self.member_out = 0;
        self.member_crc.reset();
        self.state = State::Deflate;
        let gap_ok = match self.checkpoints.last() {
            None => true,
            Some(last) => self.uoff - last.uoff >= MIN_MEMBER_CHECKPOINT_GAP,
        };
        if self.want_checkpoints && gap_ok {
            self.checkpoints
                .push(Checkpoint::member_start(self.uoff, self.member_start));
        }
        Ok(())
    }

    /// Inflates as much of `input` as possible; returns how many bytes were used.
    fn deflate(&mut self, input: &[u8], sink: &mut dyn Sink) -> Result<usize, ArchiveError> {
        let mut used = 0usize;
        loop {
            let step = self
                .inflate
                .inflate_block(&input[used..], &mut self.out)
                .map_err(|what| ArchiveError::Gzip {
                    offset: self.cpos,
                    what,
                })?;
            if step.consumed > 0 {
                let consumed = &input[used..used + step.consumed];
                self.last_in = consumed[consumed.len() - 1];
                if self.uoff < self.probe_until {
                    self.probe_input.extend_from_slice(consumed);
                }
            }
            used += step.consumed;
            self.cpos += step.consumed as u64;
            if step.produced > 0 {
                let produced = &self.out[..step.produced];
                self.member_crc.update(produced);
                self.want_checkpoints &= sink.write(produced)?;
                self.member_out += step.produced as u64;
                self.uoff += step.produced as u64;
            }
            if step.stream_end {
                self.state = State::Trailer;
                self.pass_probe_input();
                return Ok(used);
            }
            self.maybe_checkpoint(step.data_type)?;
            if step.consumed == 0 && step.produced == 0 {
                self.pass_probe_input();
                return Ok(used);
            }
        }
    }

    /// Records a checkpoint if inflate stopped at a block boundary far enough from the last one.
    fn maybe_checkpoint(&mut self, data_type: i32) -> Result<(), ArchiveError> {
        let at_boundary = data_type & AT_BLOCK_END != 0 && data_type & IN_LAST_BLOCK == 0;
        if !at_boundary || !self.want_checkpoints || self.member_out == 0 {
            return Ok(());
        }
        let wanted = match self.checkpoints.last() {
            None => true,
            Some(last) => self.uoff - last.uoff >= self.spacing,
        };
        if !wanted {
            return Ok(());
        }
        let window = self
            .inflate
            .dictionary()
            .map_err(|what| ArchiveError::Gzip {
                offset: self.cpos,
                what,
            })?;
        let bits = (data_type & 7) as u8;
        let prime = (bits > 0).then(|| (bits, self.last_in >> (8 - bits)));
        self.pass_probe_input();
        self.windows.probe(self.checkpoints.len(), window, prime);
        self.probe_until = self.uoff + WINDOW_SIZE as u64;
        // The window is filled in by `finish`, with what the worker packed.
        self.checkpoints.push(Checkpoint {
            uoff: self.uoff,
            cbyte: self.cpos,
            bits,
            window: Some(Vec::new()),
        });
        Ok(())
    }

    /// Passes the compressed bytes gathered for the window probes to the worker.
    fn pass_probe_input(&mut self) {
        if !self.probe_input.is_empty() {
            self.windows.input(std::mem::take(&mut self.probe_input));
        }
    }

    /// Consumes trailer bytes and checks them when complete.
    fn trailer(&mut self, input: &[u8]) -> Result<usize, ArchiveError> {
        let take = input.len().min(TRAILER_LEN - self.trailer_buf.len());
        self.trailer_buf.extend_from_slice(&input[..take]);
        self.cpos += take as u64;
        if self.trailer_buf.len() == TRAILER_LEN {
            let mut bytes = [0u8; TRAILER_LEN];
            bytes.copy_from_slice(&self.trailer_buf);
            self.trailer_buf.clear();
            self.check_trailer(Trailer::parse(&bytes))?;
            self.state = State::Header;
        }
        Ok(take)
    }

    /// Compares a trailer with the member's computed CRC-32 and length.
    fn check_trailer(&self, trailer: Trailer) -> Result<(), ArchiveError> {
        let crc = self.member_crc.sum();
        if trailer.crc32 != crc {
            return Err(ArchiveError::Trailer {
                member_offset: self.member_start,
                field: "crc32",
                expected: trailer.crc32,
                actual: crc,
            });
        }
        let isize = self.member_out as u32;
        if trailer.isize != isize {
            return Err(ArchiveError::Trailer {
                member_offset: self.member_start,
                field: "isize",
                expected: trailer.isize,
                actual: isize,
            });
        }
        Ok(())
    }

    /// Skips bytes after the last member, warning once if they are not zero padding.
    fn trailing(&mut self, input: &[u8]) -> usize {
        if !self.warned_trailing && input.iter().any(|&b| b != 0) {
            self.warned_trailing = true;
            tracing::warn!(
                offset = self.cpos,
                "gzip: trailing garbage after the last member ignored"
            );
        }
        self.cpos += input.len() as u64;
        input.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Collect(Vec<u8>);
    impl Sink for Collect {
        fn write(&mut self, data: &[u8]) -> Result<bool, ArchiveError> {
            self.0.extend_from_slice(data);
            Ok(true)
        }
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn scan(
        gz: &[u8],
        chunk: usize,
        spacing: u64,
    ) -> Result<(Vec<u8>, Vec<Checkpoint>), ArchiveError> {
        let mut s = GzipScanner::new(spacing)?;
        let mut sink = Collect(Vec::new());
        for c in gz.chunks(chunk) {
            s.feed(c, &mut sink)?;
        }
        let (cps, len) = s.finish()?;
        assert_eq!(len, sink.0.len() as u64);
        Ok((sink.0, cps))
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 12345u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    (x % 7) as u8 + b'a'
                } else {
                    b"tar data "[i % 9]
                }
            })
            .collect()
    }

    #[test]
    fn decodes_and_checkpoints_in_any_chunking() {
        let data = sample(3_000_000);
        let gz = gzip(&data);
        for chunk in [7usize, 4096, 1 << 20] {
            let (out, cps) = scan(&gz, chunk, 256 * 1024).unwrap();
            assert_eq!(out, data);
            assert!(cps.len() > 5, "{} checkpoints", cps.len());
            assert_eq!(cps[0], Checkpoint::member_start(0, 0));
            assert!(cps.windows(2).all(|w| w[0].uoff < w[1].uoff));
        }
        let small = sample(100_000);
        assert_eq!(scan(&gzip(&small), 1, 4096).unwrap().0, small);
    }

    /// Resumes raw inflate at `cp` and decodes `n` bytes.
    fn decode_from(gz: &[u8], cp: &Checkpoint, n: usize) -> Vec<u8> {
        let window = super::super::checkpoint::unpack_window(cp.window.as_ref().unwrap()).unwrap();
        let mut inf = RawInflate::new().unwrap();
        if cp.bits > 0 {
            let byte = gz[cp.cbyte as usize - 1];
            inf.prime(cp.bits, byte >> (8 - cp.bits)).unwrap();
        }
        inf.set_dictionary(&window).unwrap();
        let mut out = Vec::new();
        let mut input = &gz[cp.cbyte as usize..];
        while out.len() < n {
            let step = inf.inflate_append(input, &mut out, n).unwrap();
            input = &input[step.consumed..];
            if step.stream_end {
                break;
            }
        }
        out
    }

    #[test]
    fn windows_are_stored_sparse_and_still_resume_exactly() {
        // Text that references its past, with runs of noise that nothing references.
        let mut data = Vec::new();
        let mut x = 99u64;
        while data.len() < 2_000_000 {
            data.extend_from_slice(&sample(20_000));
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
        }
        let gz = gzip(&data);
        let (_, cps) = scan(&gz, 3000, 100_000).unwrap();
        let mut zeroed = 0;
        let mut windows = 0;
        for cp in cps.iter().filter(|c| c.window.is_some()) {
            let u = cp.uoff as usize;
            let window =
                super::super::checkpoint::unpack_window(cp.window.as_ref().unwrap()).unwrap();
            let truth = &data[u - window.len()..u];
            assert_eq!(window.len(), 32 * 1024);
            for (w, t) in window.iter().zip(truth) {
                assert!(
                    *w == *t || *w == 0,
                    "a stored window byte is neither the real one nor 0"
                );
            }
            zeroed += window.iter().zip(truth).filter(|(w, t)| w != t).count();
            windows += 1;
            let n = (data.len() - u).min(100_000);
            assert_eq!(decode_from(&gz, cp, n), &data[u..u + n], "resume at {u}");
        }
        assert!(windows >= 10, "{windows} windows");
        // Most of each window is never referenced (the noise, and much of the text).
        assert!(
            zeroed > windows * 8 * 1024,
            "only {zeroed} bytes zeroed in {windows} windows"
        );
    }

    #[test]
    fn multi_member_streams_are_followed() {
        let a = sample(100_000);
        let b = sample(200_000);
        let mut gz = gzip(&a);
        let second = gz.len() as u64;
        gz.extend(gzip(&b));
        gz.extend(gzip(b""));
        let (out, cps) = scan(&gz, 1000, 1 << 30).unwrap();
        assert_eq!(out, [a.clone(), b].concat());
        assert!(cps.contains(&Checkpoint::member_start(a.len() as u64, second)));
    }

    #[test]
    fn trailing_zeros_and_garbage_are_ignored() {
        let data = sample(5000);
        let mut gz = gzip(&data);
        gz.extend([0u8; 1024]);
        assert_eq!(scan(&gz, 100, 1 << 20).unwrap().0, data);
        gz.extend(b"garbage");
        assert_eq!(scan(&gz, 100, 1 << 20).unwrap().0, data);
    }

    #[test]
    fn bad_crc_and_isize_are_errors() {
        let data = sample(5000);
        let gz = gzip(&data);
        let n = gz.len();
        let mut bad = gz.clone();
        bad[n - 8] ^= 1;
        let err = scan(&bad, 512, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Trailer { field: "crc32", .. }),
            "{err}"
        );
        let mut bad = gz.clone();
        bad[n - 1] ^= 1;
        let err = scan(&bad, 512, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Trailer { field: "isize", .. }),
            "{err}"
        );
    }

    #[test]
    fn truncation_is_an_error() {
        let data = sample(50_000);
        let gz = gzip(&data);
        for cut in [3, 10, gz.len() / 2, gz.len() - 4] {
            let err = scan(&gz[..cut], 512, 1 << 20).unwrap_err();
            assert!(
                matches!(err, ArchiveError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn corrupt_deflate_is_an_error() {
        let data = sample(50_000);
        let mut gz = gzip(&data);
        for b in &mut gz[20..60] {
            *b = 0xff;
        }
        assert!(scan(&gz, 512, 1 << 20).is_err());
    }
}
