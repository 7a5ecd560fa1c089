//! [`StreamDecoder`]: pull-style decoding of a gzip blob's tar stream from a checkpoint onward,
//! one span at a time. The read path keeps idle decoders so a sequential reader continues where
//! the last read stopped instead of going back to a checkpoint.
//!
//! The blob was verified (sha256) and fully scanned (CRCs) when the index was built, so trailers
//! are skipped unchecked here; the end of the last member, a missing header or trailing garbage
//! simply end the stream.

use super::checkpoint::{pack_window, unpack_window, Checkpoint, WINDOW_SIZE};
use super::gzip::{self, HeaderParse, HEADER_CHUNK, TRAILER_LEN};
use super::inflate::RawInflate;
use super::span_cache::Span;
use super::ArchiveError;
use crate::store::{BlobRead, BytesBlob};

/// Size of the aligned slots decoded data is cut into (and cached by).
pub(crate) const SPAN_SIZE: u64 = 256 * 1024;
/// Compressed bytes read from the blob at a time.
const INPUT_CHUNK: usize = 64 * 1024;

/// Where the decoder is in the gzip framing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// At a member header (or the end of the stream).
    Header,
    /// Inside a member's deflate data.
    Deflate,
    /// The tar stream has ended.
    Done,
}

/// Runs the read path's inflate code once on a small synthetic stream (a window packed and
/// unpacked, a dictionary set, a gzip member decoded through a [`StreamDecoder`]), so its pages
/// are in memory before the first read after a start. Otherwise that read pages the code in
/// from disk: about a millisecond, measured with the page cache dropped.
pub fn warm_up() -> Result<(), ArchiveError> {
    let err = |what: String| ArchiveError::Gzip { offset: 0, what };
    let text: Vec<u8> = (0..2 * WINDOW_SIZE)
        .map(|i| b"lazycas warm-up of the read path "[i % 33])
        .collect();
    let window = unpack_window(&pack_window(&text[..WINDOW_SIZE]))
        .ok_or_else(|| err("warm-up window did not unpack".into()))?;
    RawInflate::new()
        .and_then(|mut inflate| inflate.set_dictionary(&window))
        .map_err(err)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut gz, &text).map_err(|e| err(e.to_string()))?;
    let blob = BytesBlob::new(gz.finish().map_err(|e| err(e.to_string()))?);
    let mut dec = StreamDecoder::resume(&blob, &Checkpoint::member_start(0, 0))?;
    let mut decoded = 0;
    while let Some(span) = dec.next_span_until(&blob, u64::MAX)? {
        decoded += span.data.len();
    }
    if decoded != text.len() {
        return Err(err(format!(
            "warm-up decoded {decoded} of {} bytes",
            text.len()
        )));
    }
    Ok(())
}

/// A decoder positioned somewhere in an archive's tar stream.
pub(crate) struct StreamDecoder {
    inflate: RawInflate,
    buf: Vec<u8>,
    buf_pos: usize,
    file_pos: u64,
    pos: u64,
    state: State,
}

impl StreamDecoder {
    /// A decoder resuming at `cp`.
    pub(crate) fn resume(
        blob: &dyn BlobRead,
        cp: &Checkpoint,
    ) -> Result<StreamDecoder, ArchiveError> {
        let gz_err = |what: String| ArchiveError::Gzip {
            offset: cp.cbyte,
            what,
        };
        let mut inflate = RawInflate::new().map_err(gz_err)?;
        let state = match &cp.window {
            None => State::Header,
            Some(packed) => {
                let window = unpack_window(packed)
                    .ok_or_else(|| gz_err("stored checkpoint window is corrupt".to_string()))?;
                if cp.bits > 0 {
                    let at = cp
                        .cbyte
                        .checked_sub(1)
                        .ok_or_else(|| gz_err("checkpoint bit offset before the blob".into()))?;
                    let byte = read_byte(blob, at)?;
                    inflate
                        .prime(cp.bits, byte >> (8 - cp.bits))
                        .map_err(gz_err)?;
                }
                inflate.set_dictionary(&window).map_err(gz_err)?;
                State::Deflate
            }
        };
        Ok(StreamDecoder {
            inflate,
            buf: Vec::new(),
            buf_pos: 0,
            file_pos: cp.cbyte,
            pos: cp.uoff,
            state,
        })
    }

    /// Stream offset of the next byte this decoder produces.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// True once the stream has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes up to the end of the current slot or to stream offset `limit`, whichever comes
    /// first (at least one byte: a limit at or before the position is ignored); `None` at the
    /// end of the stream.
    pub(crate) fn next_span_until(
        &mut self,
        blob: &dyn BlobRead,
        limit: u64,
    ) -> Result<Option<Span>, ArchiveError> {
        let start = self.pos;
        let slot_left = SPAN_SIZE - start % SPAN_SIZE;
        let want = match limit.checked_sub(start) {
            Some(left) if left > 0 => slot_left.min(left),
            _ => slot_left,
        } as usize;
        let mut data = Vec::with_capacity(want);
        let mut stalls = 0;
        while data.len() < want && self.state != State::Done {
            let before = (data.len(), self.compressed_pos(), self.state);
            match self.state {
                State::Header => self.next_member(blob)?,
                State::Deflate => self.inflate_some(blob, &mut data, want)?,
                State::Done => {}
            }
            if (data.len(), self.compressed_pos(), self.state) == before {
                stalls += 1;
                if stalls > 1 {
                    return Err(ArchiveError::Gzip {
                        offset: self.compressed_pos(),
                        what: "inflate made no progress".to_string(),
                    });
                }
            } else {
                stalls = 0;
            }
        }
        self.pos += data.len() as u64;
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Span { start, data }))
    }

    /// Blob offset of the next compressed byte not yet given to inflate.
    fn compressed_pos(&self) -> u64 {
        self.file_pos - (self.buf.len() - self.buf_pos) as u64
    }

    /// One inflate call (reading more input first if needed).
    fn inflate_some(
        &mut self,
        blob: &dyn BlobRead,
        data: &mut Vec<u8>,
        want: usize,
    ) -> Result<(), ArchiveError> {
        if self.buf_pos == self.buf.len() {
            self.refill(blob)?;
        }
        let step = self
            .inflate
            .inflate_append(&self.buf[self.buf_pos..], data, want)
            .map_err(|what| ArchiveError::Gzip {
                offset: self.compressed_pos(),
                what,
            })?;
        self.buf_pos += step.consumed;
        if step.stream_end {
            // Skip the trailer; the next member (if any) starts after it.
            let next = self.compressed_pos() + TRAILER_LEN as u64;
            self.buf.clear();
            self.buf_pos = 0;
            self.file_pos = next;
            self.state = State::Header;
        }
        Ok(())
    }

    /// Reads the next chunk of compressed input.
    fn refill(&mut self, blob: &dyn BlobRead) -> Result<(), ArchiveError> {
        self.buf.resize(INPUT_CHUNK, 0);
        let n = read_some(blob, self.file_pos, &mut self.buf)?;
        self.buf.truncate(n);
        self.buf_pos = 0;
        self.file_pos += n as u64;
        if n == 0 {
            return Err(ArchiveError::Truncated {
                offset: self.file_pos,
                what: "inside deflate data while reading",
            });
        }
        Ok(())
    }

    /// Parses the next member header; ends the stream if there is none.
    fn next_member(&mut self, blob: &dyn BlobRead) -> Result<(), ArchiveError> {
        let at = self.compressed_pos();
        let mut header = Vec::new();
        loop {
            let old = header.len();
            header.resize(old + HEADER_CHUNK, 0);
            let n = read_some(blob, at + old as u64, &mut header[old..])?;
            header.truncate(old + n);
            match gzip::parse_header(&header) {
                Ok(HeaderParse::Complete(len)) => {
                    self.inflate
                        .reset()
                        .map_err(|what| ArchiveError::Gzip { offset: at, what })?;
                    self.buf.clear();
                    self.buf_pos = 0;
                    self.file_pos = at + len as u64;
                    self.state = State::Deflate;
                    return Ok(());
                }
                Ok(HeaderParse::Incomplete) if n > 0 => continue,
                _ => {
                    self.state = State::Done;
                    return Ok(());
                }
            }
        }
    }
}

/// Reads as many bytes as the blob has at `offset`, up to `buf.len()` (0 at the end).
fn read_some(blob: &dyn BlobRead, offset: u64, buf: &mut [u8]) -> Result<usize, ArchiveError> {
    let mut done = 0;
    while done < buf.len() {
        match blob.read_at(offset + done as u64, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(ArchiveError::Io { offset, source }),
        }
    }
    Ok(done)
}

/// The byte at `offset`.
fn read_byte(blob: &dyn BlobRead, offset: u64) -> Result<u8, ArchiveError> {
    let mut b = [0u8; 1];
    if read_some(blob, offset, &mut b)? != 1 {
        return Err(ArchiveError::Truncated {
            offset,
            what: "before a checkpoint",
        });
    }
    Ok(b[0])
}

/// Reads exactly `buf.len()` bytes at `offset` (plain tar member data).
pub(crate) fn read_exact(
    blob: &dyn BlobRead,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ArchiveError> {
    if read_some(blob, offset, buf)? != buf.len() {
        return Err(ArchiveError::Io {
            offset,
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok(())
}
