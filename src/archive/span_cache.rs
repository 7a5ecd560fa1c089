//! [`SpanCache`]: decoded pieces of gzip archives' tar streams, shared by all readers, bounded in
//! bytes, least recently used out first.
//!
//! A span is the decoded bytes of one aligned `SPAN_SIZE` slot of an archive's tar stream. A span
//! decoded from a checkpoint inside its slot starts late (`start` above the slot start); a later
//! full decode of the slot replaces it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::digest::Digest;

/// Default capacity: 8 MiB of decoded data.
pub const DEFAULT_SPAN_CACHE_BYTES: u64 = 8 << 20;

/// Which slot of which archive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct SpanKey {
    /// The archive.
    pub archive: Digest,
    /// Slot number: stream offset / `SPAN_SIZE`.
    pub slot: u64,
}

/// Decoded bytes of (part of) one slot.
#[derive(Debug)]
pub(crate) struct Span {
    /// Stream offset of `data[0]`.
    pub start: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Span {
    /// One past the stream offset of the last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// True when `[start, end)` includes `pos`.
    pub(crate) fn contains(&self, pos: u64) -> bool {
        self.start <= pos && pos < self.end()
    }
}

/// A cached span and when it was last used.
struct Entry {
    span: Arc<Span>,
    used: Instant,
}

/// The LRU and its byte count.
struct Inner {
    lru: LruCache<SpanKey, Entry>,
    bytes: u64,
}

/// A byte-bounded LRU of decoded spans, shared by every [`ArchiveReader`] of a mount.
///
/// [`ArchiveReader`]: super::ArchiveReader
pub struct SpanCache {
    inner: Mutex<Inner>,
    capacity: u64,
}

impl Default for SpanCache {
    fn default() -> Self {
        SpanCache::new(DEFAULT_SPAN_CACHE_BYTES)
    }
}

impl SpanCache {
    /// A cache holding at most `capacity_bytes` of decoded data.
    pub fn new(capacity_bytes: u64) -> SpanCache {
        SpanCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
        }
    }

    /// The configured bound, in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of decoded data held now.
    pub fn resident_bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// The span cached for `key`, marked as recently used.
    pub(crate) fn get(&self, key: &SpanKey) -> Option<Arc<Span>> {
        let mut inner = self.inner.lock();
        let entry = inner.lru.get_mut(key)?;
        entry.used = Instant::now();
        Some(entry.span.clone())
    }

    /// Drops the spans not used for `idle` or longer (the least recently used come first, so
    /// this stops at the first recent one); returns the bytes released. The daemon calls it
    /// periodically so a mount that stopped reading archives gives the memory back.
    pub fn release_idle(&self, idle: Duration) -> u64 {
        let Some(cutoff) = Instant::now().checked_sub(idle) else {
            return 0;
        };
        let mut inner = self.inner.lock();
        let mut freed = 0;
        while let Some((_, entry)) = inner.lru.peek_lru() {
            if entry.used > cutoff {
                break;
            }
            if let Some((_, old)) = inner.lru.pop_lru() {
                freed += old.span.data.len() as u64;
            }
        }
        inner.bytes -= freed;
        freed
    }

    /// Caches `span` under `key` unless a span covering at least as much is already there; a
    /// cached span that `span` continues (or that continues `span`) is joined with it, so a slot
    /// decoded in two pieces (a read that stopped at its end, then the next) is held whole.
    /// Evicts least recently used spans to stay within the bound.
    pub(crate) fn insert(&self, key: SpanKey, span: Arc<Span>) {
        let mut inner = self.inner.lock();
        let used = Instant::now();
        let mut span = span;
        if let Some(old) = inner.lru.get_mut(&key) {
            if old.span.start <= span.start && old.span.end() >= span.end() {
                old.used = used;
                return;
            }
            if let Some(joined) = join(&old.span, &span) {
                span = Arc::new(joined);
            }
        }
        let len = span.data.len() as u64;
        if len > self.capacity {
            return;
        }
        if let Some(old) = inner.lru.put(key, Entry { span, used }) {
            inner.bytes -= old.span.data.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.span.data.len() as u64,
                None => break,
            }
        }
    }
}

/// `a` and `b` as one span when one ends where the other starts (or overlaps it), else `None`.
fn join(a: &Span, b: &Span) -> Option<Span> {
    let (first, second) = if a.start <= b.start { (a, b) } else { (b, a) };
    if second.start > first.end() || second.end() <= first.end() {
        return None;
    }
    let mut data = Vec::with_capacity((second.end() - first.start) as usize);
    data.extend_from_slice(&first.data);
    data.extend_from_slice(&second.data[(first.end() - second.start) as usize..]);
    Some(Span {
        start: first.start,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u64) -> SpanKey {
        SpanKey {
            archive: Digest::of(b"a"),
            slot,
        }
    }

    fn span(start: u64, len: usize) -> Arc<Span> {
        Arc::new(Span {
            start,
            data: vec![1; len],
        })
    }

    #[test]
    fn bounded_in_bytes_lru_order() {
        let c = SpanCache::new(300);
        c.insert(key(0), span(0, 100));
        c.insert(key(1), span(100, 100));
        c.insert(key(2), span(200, 100));
        assert!(c.get(&key(0)).is_some());
        c.insert(key(3), span(300, 100));
        assert_eq!(c.resident_bytes(), 300);
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(0)).is_some());
        c.insert(key(9), span(0, 1000));
        assert!(c.get(&key(9)).is_none());
    }

    #[test]
    fn idle_spans_are_released_recent_ones_kept() {
        let c = SpanCache::new(1000);
        c.insert(key(0), span(0, 100));
        c.insert(key(1), span(100, 100));
        std::thread::sleep(Duration::from_millis(400));
        c.insert(key(2), span(200, 100));
        assert!(c.get(&key(0)).is_some());
        assert_eq!(c.release_idle(Duration::from_millis(200)), 100);
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(0)).is_some() && c.get(&key(2)).is_some());
        assert_eq!(c.resident_bytes(), 200);
        assert_eq!(c.release_idle(Duration::from_secs(3600)), 0);
        assert_eq!(c.release_idle(Duration::ZERO), 200);
        assert_eq!(c.resident_bytes(), 0);
    }

    #[test]
    fn adjacent_pieces_of_a_slot_are_joined() {
        let c = SpanCache::new(1000);
        let piece = |start: u64, len: usize| {
            Arc::new(Span {
                start,
                data: (start..start + len as u64).map(|i| i as u8).collect(),
            })
        };
        c.insert(key(0), piece(40, 20));
        c.insert(key(0), piece(60, 40));
        let s = c.get(&key(0)).unwrap();
        assert_eq!((s.start, s.end()), (40, 100));
        assert_eq!(s.data, piece(40, 60).data);
        // A piece before it that overlaps, and one with a gap (replaces, as before).
        c.insert(key(0), piece(10, 35));
        let s = c.get(&key(0)).unwrap();
        assert_eq!((s.start, s.end()), (10, 100));
        assert_eq!(s.data, piece(10, 90).data);
        assert_eq!(c.resident_bytes(), 90);
        c.insert(key(1), piece(0, 10));
        c.insert(key(1), piece(20, 10));
        assert_eq!(c.get(&key(1)).unwrap().start, 20);
        assert_eq!(c.resident_bytes(), 100);
    }

    #[test]
    fn fuller_span_replaces_partial_not_the_reverse() {
        let c = SpanCache::new(1000);
        c.insert(key(0), span(50, 50));
        c.insert(key(0), span(0, 100));
        assert_eq!(c.get(&key(0)).unwrap().start, 0);
        c.insert(key(0), span(50, 50));
        assert_eq!(c.get(&key(0)).unwrap().start, 0);
        assert_eq!(c.resident_bytes(), 100);
    }
}
