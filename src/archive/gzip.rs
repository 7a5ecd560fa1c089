//! gzip framing (RFC 1952): member headers and trailers, parsed over byte slices.
//!
//! Deflate data is not handled here (see `inflate`); this file only finds where a member's
//! deflate stream starts and what its trailer claims. Both the push-style index scan and the
//! pull-style read path use it.

/// The two magic bytes every gzip member starts with.
pub(crate) const MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Size of the CRC-32 + ISIZE trailer.
pub(crate) const TRAILER_LEN: usize = 8;
/// A header longer than this (huge FNAME/FCOMMENT/FEXTRA) is treated as corrupt.
pub(crate) const MAX_HEADER: usize = 1 << 20;
/// How many header bytes the scanner and the decoder hand `parse_header` at a time.
pub(crate) const HEADER_CHUNK: usize = 4096;

const FTEXT_FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

/// Outcome of looking for a complete member header at the start of a buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HeaderParse {
    /// More bytes are needed.
    Incomplete,
    /// The header is complete and this many bytes long; deflate data follows.
    Complete(usize),
}

/// Why bytes are not a gzip member header.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum HeaderError {
    /// The first bytes are not `1f 8b`.
    NotGzip,
    /// Magic present but the header is unusable (method, flags, length).
    Corrupt(String),
}

/// Parses a member header at the start of `buf`.
pub(crate) fn parse_header(buf: &[u8]) -> Result<HeaderParse, HeaderError> {
    let magic_len = buf.len().min(2);
    if buf[..magic_len] != MAGIC[..magic_len] {
        return Err(HeaderError::NotGzip);
    }
    if buf.len() < 10 {
        return Ok(HeaderParse::Incomplete);
    }
    if buf[2] != 8 {
        return Err(HeaderError::Corrupt(format!(
            "compression method {} (only deflate, 8, exists)",
            buf[2]
        )));
    }
    let flags = buf[3];
    if flags & RESERVED != 0 {
        return Err(HeaderError::Corrupt(format!(
            "reserved header flags set ({flags:#04x})"
        )));
    }
    let parsed = header_len(buf, flags);
    if parsed == HeaderParse::Incomplete && buf.len() > MAX_HEADER {
        return Err(HeaderError::Corrupt(format!(
            "header longer than {MAX_HEADER} bytes"
        )));
    }
    Ok(parsed)
}

/// Length of the header with these flags, if `buf` holds all of it.
fn header_len(buf: &[u8], flags: u8) -> HeaderParse {
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let Some(xlen) = buf.get(pos..pos + 2) else {
            return HeaderParse::Incomplete;
        };
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(rest) = buf.get(pos..) else {
                return HeaderParse::Incomplete;
            };
            match rest.iter().position(|&b| b == 0) {
                Some(nul) => pos += nul + 1,
                None => return HeaderParse::Incomplete,
            }
        }
    }
    if flags & FTEXT_FHCRC != 0 {
        pos += 2;
    }
    if pos <= buf.len() {
        HeaderParse::Complete(pos)
    } else {
        HeaderParse::Incomplete
    }
}

/// A member trailer: CRC-32 and length (mod 2^32) of the member's decompressed data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Trailer {
    /// CRC-32 of the decompressed data.
    pub crc32: u32,
    /// Decompressed length modulo 2^32.
    pub isize: u32,
}

impl Trailer {
    /// Decodes the 8 little-endian trailer bytes.
    pub(crate) fn parse(bytes: &[u8; TRAILER_LEN]) -> Trailer {
        Trailer {
            crc32: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            isize: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

    #[test]
    fn minimal_header() {
        assert_eq!(parse_header(&PLAIN), Ok(HeaderParse::Complete(10)));
        assert_eq!(parse_header(&PLAIN[..5]), Ok(HeaderParse::Incomplete));
        assert_eq!(parse_header(&PLAIN[..1]), Ok(HeaderParse::Incomplete));
    }

    #[test]
    fn optional_fields() {
        let mut h = PLAIN.to_vec();
        h[3] = FEXTRA | FNAME | FCOMMENT | FTEXT_FHCRC;
        h.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        h.extend_from_slice(b"name.tar\0");
        let before_comment = h.len();
        h.extend_from_slice(b"comment\0");
        h.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(parse_header(&h), Ok(HeaderParse::Complete(h.len())));
        assert_eq!(
            parse_header(&h[..before_comment + 3]),
            Ok(HeaderParse::Incomplete)
        );
        assert_eq!(parse_header(&h[..h.len() - 1]), Ok(HeaderParse::Incomplete));
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse_header(b"PK\x03\x04"), Err(HeaderError::NotGzip));
        let mut h = PLAIN;
        h[2] = 7;
        assert!(matches!(parse_header(&h), Err(HeaderError::Corrupt(_))));
        let mut h = PLAIN;
        h[3] = 0x20;
        assert!(matches!(parse_header(&h), Err(HeaderError::Corrupt(_))));
    }

    #[test]
    fn endless_name_is_capped() {
        let mut h = PLAIN.to_vec();
        h[3] = FNAME;
        h.resize(MAX_HEADER + 10, b'a');
        assert!(matches!(parse_header(&h), Err(HeaderError::Corrupt(_))));
    }

    #[test]
    fn trailer_fields() {
        let t = Trailer::parse(&[1, 0, 0, 0, 0x10, 0, 0, 0]);
        assert_eq!(
            t,
            Trailer {
                crc32: 1,
                isize: 16
            }
        );
    }
}
