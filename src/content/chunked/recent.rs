//! [`RecentChunks`]: the chunks verified last, kept in memory (up to a byte budget, oldest
//! dropped first), so a reader waiting for a chunk that just arrived is served from the bytes
//! that were hashed, without reading back the pack it was written to. A sequential reader's
//! readahead lands here shortly before the reads that need it.
//!
//! Not here: the chunk packs (`store::ChunkStore`), which stay the reference.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::digest::Digest;

/// Verified chunk bytes, newest last, at most `budget` bytes in all.
pub struct RecentChunks {
    budget: usize,
    inner: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    bytes: usize,
    order: VecDeque<Digest>,
    chunks: HashMap<Digest, Arc<[u8]>>,
}

impl RecentChunks {
    /// An empty cache holding at most `budget` bytes.
    pub fn new(budget: usize) -> RecentChunks {
        RecentChunks {
            budget,
            inner: Mutex::new(Recent::default()),
        }
    }

    /// Keeps `bytes`, which hash to `d`, dropping the oldest chunks over the budget.
    pub fn insert(&self, d: Digest, bytes: &[u8]) {
        if bytes.len() > self.budget {
            return;
        }
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let mut r = self.inner.lock();
        if r.chunks.contains_key(&d) {
            return;
        }
        r.bytes += bytes.len();
        r.order.push_back(d);
        r.chunks.insert(d, bytes);
        while r.bytes > self.budget {
            let Some(old) = r.order.pop_front() else {
                break;
            };
            if let Some(b) = r.chunks.remove(&old) {
                r.bytes -= b.len();
            }
        }
    }

    /// Copies bytes of chunk `d` from `offset` into `buf`; `None` when it is not kept here.
    pub fn read(&self, d: &Digest, offset: u64, buf: &mut [u8]) -> Option<usize> {
        let bytes = self.inner.lock().chunks.get(d).cloned()?;
        let start = usize::try_from(offset).ok()?.min(bytes.len());
        let n = (bytes.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_chunks_go_first_over_the_budget() {
        let recent = RecentChunks::new(10);
        let (a, b, c) = (vec![1u8; 4], vec![2u8; 4], vec![3u8; 4]);
        let (da, db, dc) = (Digest::of(&a), Digest::of(&b), Digest::of(&c));
        recent.insert(da, &a);
        recent.insert(db, &b);
        let mut buf = [0u8; 3];
        assert_eq!(recent.read(&da, 1, &mut buf), Some(3));
        assert_eq!(buf, [1, 1, 1]);
        recent.insert(dc, &c);
        assert_eq!(recent.read(&da, 0, &mut buf), None);
        assert_eq!(recent.read(&db, 2, &mut buf), Some(2));
        assert_eq!(recent.read(&dc, 0, &mut buf), Some(3));
    }
}
