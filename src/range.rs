//! Byte ranges: half-open `[start, end)` spans of a blob, used by the fetcher (HTTP `Range`), the
//! store (which parts of a partial blob are present) and the fs read path.

use std::fmt;

/// A half-open byte span `[start, end)`. Empty ranges are allowed; `end < start` is not
/// representable through the constructors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

impl ByteRange {
    /// `[start, end)`; `end` is clamped up to `start`.
    pub fn new(start: u64, end: u64) -> ByteRange {
        ByteRange {
            start,
            end: end.max(start),
        }
    }

    /// `len` bytes from `start` (saturating at `u64::MAX`).
    pub fn at(start: u64, len: u64) -> ByteRange {
        ByteRange::new(start, start.saturating_add(len))
    }

    /// First byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// This range cut to `[0, size)`.
    pub fn clamp_to(&self, size: u64) -> ByteRange {
        ByteRange::new(self.start.min(size), self.end.min(size))
    }

    /// The value of an HTTP `Range` header asking for exactly these bytes.
    pub fn http_header(&self) -> String {
        format!("bytes={}-{}", self.start, self.end.saturating_sub(1))
    }

    /// Splits into consecutive pieces of at most `piece` bytes (`piece` 0 is treated as 1).
    pub fn split(&self, piece: u64) -> impl Iterator<Item = ByteRange> {
        let piece = piece.max(1);
        let end = self.end;
        (self.start..end)
            .step_by(usize::try_from(piece).unwrap_or(usize::MAX))
            .map(move |s| ByteRange::new(s, s.saturating_add(piece).min(end)))
    }
}

impl fmt::Debug for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_exactly() {
        let r = ByteRange::new(10, 35);
        let parts: Vec<_> = r.split(10).collect();
        assert_eq!(
            parts,
            vec![
                ByteRange::new(10, 20),
                ByteRange::new(20, 30),
                ByteRange::new(30, 35)
            ]
        );
        assert_eq!(ByteRange::new(5, 5).split(4).count(), 0);
    }

    #[test]
    fn header_and_clamp() {
        assert_eq!(ByteRange::at(0, 100).http_header(), "bytes=0-99");
        assert_eq!(
            ByteRange::new(50, 200).clamp_to(100),
            ByteRange::new(50, 100)
        );
        assert!(ByteRange::new(9, 3).is_empty());
    }
}
