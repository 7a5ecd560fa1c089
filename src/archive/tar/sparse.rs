//! Sparse file maps: which byte ranges of a file are stored in the archive (the rest are holes
//! that read as zeros), in the three encodings GNU tar writes, and the compact form we store.
//!
//! - old GNU (`S` type): 24-byte octal (offset, numbytes) pairs in the header and in extension
//!   blocks;
//! - PAX 0.0 / 0.1: `GNU.sparse.offset`/`numbytes` records or one `GNU.sparse.map` list (parsed in
//!   `pax`, with [`parse_map_text`]);
//! - PAX 1.0: decimal lines at the start of the member data ([`Map1Parser`]).

use super::header::parse_unsigned;

/// More chunks than this in one file is treated as hostile.
pub(crate) const MAX_CHUNKS: usize = 1 << 20;

/// One stored range of a sparse file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SparseChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Bytes stored.
    pub len: u64,
}

/// Parses old GNU sparse entries (24 bytes each) until the first empty one.
pub(crate) fn parse_old_gnu(area: &[u8]) -> Result<Vec<SparseChunk>, String> {
    let mut chunks = Vec::new();
    for entry in area.chunks_exact(24) {
        if entry[0] == 0 {
            break;
        }
        chunks.push(SparseChunk {
            offset: parse_unsigned(&entry[..12]).map_err(|e| format!("sparse offset: {e}"))?,
            len: parse_unsigned(&entry[12..]).map_err(|e| format!("sparse numbytes: {e}"))?,
        });
    }
    Ok(chunks)
}

/// Parses a PAX 0.1 `GNU.sparse.map` value: `offset,numbytes,offset,numbytes,...`.
pub(crate) fn parse_map_text(value: &[u8]) -> Result<Vec<SparseChunk>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let numbers: Vec<u64> = value
        .split(|&b| b == b',')
        .map(super::pax::decimal)
        .collect::<Result<_, _>>()?;
    if !numbers.len().is_multiple_of(2) {
        return Err("GNU.sparse.map has an odd number of values".to_string());
    }
    if numbers.len() / 2 > MAX_CHUNKS {
        return Err("GNU.sparse.map has too many chunks".to_string());
    }
    Ok(numbers
        .chunks_exact(2)
        .map(|p| SparseChunk {
            offset: p[0],
            len: p[1],
        })
        .collect())
}

/// Incremental parser of the PAX 1.0 map: a count, then that many offset/numbytes pairs, each
/// number on its own line, padded to a block boundary.
#[derive(Default, Debug)]
pub(crate) struct Map1Parser {
    numbers: Vec<u64>,
    current: Option<u64>,
    count: Option<u64>,
}

impl Map1Parser {
    /// Feeds the next block of map text; returns true once the map is complete (the rest of the
    /// block is padding).
    pub(crate) fn feed(&mut self, block: &[u8]) -> Result<bool, String> {
        for &b in block {
            match b {
                b'0'..=b'9' => {
                    let v = self.current.unwrap_or(0);
                    let v = v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .ok_or("sparse map number out of range")?;
                    self.current = Some(v);
                }
                b'\n' => {
                    let v = self.current.take().ok_or("empty line in sparse map")?;
                    if self.end_number(v)? {
                        return Ok(true);
                    }
                }
                _ => return Err(format!("unexpected byte {b:#04x} in sparse map")),
            }
        }
        Ok(false)
    }

    /// Records one number; true when the map is complete.
    fn end_number(&mut self, v: u64) -> Result<bool, String> {
        match self.count {
            None => {
                if v > MAX_CHUNKS as u64 {
                    return Err(format!("sparse map claims {v} chunks"));
                }
                self.count = Some(v);
            }
            Some(_) => self.numbers.push(v),
        }
        Ok(self
            .count
            .is_some_and(|n| self.numbers.len() as u64 == 2 * n))
    }

    /// The chunks, once `feed` returned true.
    pub(crate) fn chunks(&self) -> Vec<SparseChunk> {
        self.numbers
            .chunks_exact(2)
            .map(|p| SparseChunk {
                offset: p[0],
                len: p[1],
            })
            .collect()
    }
}

/// Checks a map against the stored data length and the declared real size. Empty chunks are
/// dropped; chunks must be in order and not overlap; their total must fit in the stored data.
/// Returns the cleaned map and the real size (at least the end of the last chunk).
pub(crate) fn validate(
    chunks: Vec<SparseChunk>,
    realsize: u64,
    stored: u64,
) -> Result<(Vec<SparseChunk>, u64), String> {
    let chunks: Vec<SparseChunk> = chunks.into_iter().filter(|c| c.len > 0).collect();
    let mut end = 0u64;
    let mut total = 0u64;
    for c in &chunks {
        if c.offset < end {
            return Err(format!(
                "sparse chunk at {} overlaps the previous one",
                c.offset
            ));
        }
        end = c
            .offset
            .checked_add(c.len)
            .ok_or("sparse chunk out of range")?;
        total = total.checked_add(c.len).ok_or("sparse map out of range")?;
    }
    if total > stored {
        return Err(format!(
            "sparse map holds {total} bytes but the member stores {stored}"
        ));
    }
    Ok((chunks, realsize.max(end)))
}

/// Encodes a map as LEB128 varints (offset, len, offset, len, ...): the stored form.
pub(crate) fn encode(chunks: &[SparseChunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 6);
    for c in chunks {
        put_varint(&mut out, c.offset);
        put_varint(&mut out, c.len);
    }
    out
}

/// Decodes [`encode`]'s output; `None` if malformed.
pub(crate) fn decode(mut bytes: &[u8]) -> Option<Vec<SparseChunk>> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let offset = get_varint(&mut bytes)?;
        let len = get_varint(&mut bytes)?;
        chunks.push(SparseChunk { offset, len });
    }
    Some(chunks)
}

/// Appends one LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Takes one LEB128 varint from the front of `bytes`.
fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: u64, len: u64) -> SparseChunk {
        SparseChunk { offset, len }
    }

    #[test]
    fn map1_across_blocks() {
        let mut p = Map1Parser::default();
        assert!(!p.feed(b"2\n0\n10").unwrap());
        assert!(p.feed(b"0\n4096\n5\nPADDING").unwrap());
        assert_eq!(p.chunks(), vec![c(0, 100), c(4096, 5)]);
        let mut p = Map1Parser::default();
        assert!(p.feed(b"0\n").unwrap());
        assert!(p.chunks().is_empty());
    }

    #[test]
    fn map1_rejects_garbage_and_huge_counts() {
        assert!(Map1Parser::default().feed(b"1\nx\n").is_err());
        assert!(Map1Parser::default().feed(b"99999999999\n").is_err());
        assert!(Map1Parser::default().feed(b"\n").is_err());
    }

    #[test]
    fn map_text() {
        assert_eq!(
            parse_map_text(b"0,5,100,7").unwrap(),
            vec![c(0, 5), c(100, 7)]
        );
        assert!(parse_map_text(b"0,5,100").is_err());
        assert!(parse_map_text(b"0,x").is_err());
    }

    #[test]
    fn validation() {
        let (m, size) = validate(vec![c(0, 5), c(10, 0), c(100, 7)], 50, 12).unwrap();
        assert_eq!(m, vec![c(0, 5), c(100, 7)]);
        assert_eq!(size, 107);
        assert!(validate(vec![c(10, 5), c(12, 1)], 50, 6).is_err());
        assert!(validate(vec![c(0, 5)], 50, 4).is_err());
        assert!(validate(vec![c(u64::MAX, 5)], 50, 5).is_err());
    }

    #[test]
    fn varint_round_trip() {
        let m = vec![c(0, 1), c(1 << 40, 300), c(u64::MAX - 1, 1)];
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert!(decode(&[0x80]).is_none());
        assert!(decode(&[5]).is_none());
    }

    #[test]
    fn old_gnu_area() {
        let mut area = [0u8; 96];
        area[..12].copy_from_slice(b"00000000000\0");
        area[12..24].copy_from_slice(b"00000000012\0");
        area[24..36].copy_from_slice(b"00000010000\0");
        area[36..48].copy_from_slice(b"00000000001\0");
        assert_eq!(parse_old_gnu(&area).unwrap(), vec![c(0, 10), c(4096, 1)]);
    }
}
