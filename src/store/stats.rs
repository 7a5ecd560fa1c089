//! In-memory counters of one process (hits, misses, bytes per source, failures) and pending
//! access times, flushed to the database in batches so the read path never writes SQLite.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::digest::Digest;
use crate::fetch::Fetched;

/// Counters waiting to be flushed.
#[derive(Debug, Default)]
pub struct Stats {
    pending: Mutex<Pending>,
}

/// What [`Stats::take_pending`] hands over.
#[derive(Debug, Default)]
pub struct Pending {
    /// Counter deltas by name.
    pub counters: HashMap<String, i64>,
    /// Blobs read since the last flush, with the time of the last read (unix ms).
    pub touched: HashMap<Digest, i64>,
}

impl Pending {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.touched.is_empty()
    }
}

/// Counter values as `lazycas status` shows them.
pub type StatsSnapshot = Vec<(String, i64)>;

impl Stats {
    fn add(&self, name: &str, delta: i64) {
        *self
            .pending
            .lock()
            .counters
            .entry(name.to_string())
            .or_insert(0) += delta;
    }

    /// Content was already local.
    pub fn hit(&self) {
        self.add("hits", 1);
    }

    /// Content had to be fetched.
    pub fn miss(&self) {
        self.add("misses", 1);
    }

    /// A download succeeded.
    pub fn fetched(&self, f: &Fetched) {
        self.bytes_from(&f.url, f.size);
        self.add("fetches", 1);
    }

    /// A chunk of a partly present blob arrived from `url` and verified.
    pub fn chunk_fetched(&self, url: &url::Url, bytes: u64) {
        self.bytes_from(url, bytes);
        self.add("chunks_fetched", 1);
    }

    /// A chunk arrived with the wrong sha256.
    pub fn chunk_mismatch(&self) {
        self.add("verification_failures", 1);
    }

    fn bytes_from(&self, url: &url::Url, bytes: u64) {
        let source = match url.port_or_known_default() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("?")),
            None => url.host_str().unwrap_or("?").to_string(),
        };
        let mut p = self.pending.lock();
        *p.counters.entry("bytes_fetched".into()).or_insert(0) += bytes as i64;
        *p.counters
            .entry(format!("bytes_from:{source}"))
            .or_insert(0) += bytes as i64;
    }

    /// A download failed on every source.
    pub fn fetch_failed(&self, mismatch: bool) {
        self.add("fetch_failures", 1);
        if mismatch {
            self.add("verification_failures", 1);
        }
    }

    /// A blob was read.
    pub fn touch(&self, d: &Digest) {
        self.pending.lock().touched.insert(*d, super::now_millis());
    }

    /// Blobs were evicted.
    pub fn evicted(&self, blobs: usize, bytes: u64) {
        let mut p = self.pending.lock();
        *p.counters.entry("evictions".into()).or_insert(0) += blobs as i64;
        *p.counters.entry("evicted_bytes".into()).or_insert(0) += bytes as i64;
    }

    /// Takes what accumulated since the last call.
    pub fn take_pending(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }
}
