//! Blobs read chunk by chunk before they are all here: sources with a pinned chunk index.
//!
//! [`Chunked`] fetches a source's index (a small document whose digest the catalog pins),
//! checks the pin before parsing it, and keeps it (in memory, and in the chunk store under its
//! digest, so a restart does not fetch it again). [`PartialBlob`] is a `BlobRead` over the
//! index: a read finds the chunks covering it, fetches the missing ones with HTTP range
//! requests (neighbouring chunks coalesced into one request of at most `partial::RUN_MAX`
//! bytes, runs in flight in parallel, a sequential reader getting a growing readahead window
//! fetched in the background), hashes each chunk before any byte of it is used, stores it,
//! and copies the bytes out. A chunk that hashes wrong is fetched again from the next URL; if
//! no URL delivers it, the reads needing it fail (EIO for the reader) while every other chunk
//! keeps serving. A server that answers a range request with the whole file (200) is
//! streamed to the end and every verified chunk kept. Concurrent readers of one chunk share
//! one fetch (each fetching caller claims its chunks in a table kept here).
//!
//! Once every chunk is present the blob is assembled into an ordinary store blob, checked
//! against the whole file's sha256 and committed; the next open then finds it complete (and
//! the kernel can read it with passthrough). The chunks stay, so a new version of the image
//! fetches only the chunks it does not share.
//!
//! Files: this one holds [`Chunked`] (indexes, the claims table, assembling the complete blob);
//! `partial` the reader; `span_chunks` the cutting and checking of arriving bytes.
//!
//! Not here: HTTP (`fetch`), the chunk packs and their crash rule (`store::ChunkStore`), the
//! index format (`chunk`).

mod claims;
mod fill;
mod partial;
mod readahead;
mod recent;
mod span_chunks;
mod versions;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::{ContentError, SingleFlight};
use crate::chunk::ChunkIndex;
use crate::digest::{Digest, Hasher};
use crate::fetch::Fetcher;
use crate::source::{Fill, IndexPin, Source};
use crate::store::{BlobInfo, BlobRead, Store, StoreError};

use claims::ClaimTable;
use fill::Priority;
pub use partial::PartialBlob;
use recent::RecentChunks;
use versions::Versions;

/// Bytes of `src`'s chunks `store` holds, with its size, when `src` has a pinned index the
/// chunk store keeps (what `lazycas ls` and `status` show for partly present blobs).
pub fn resident_in_store(store: &Store, src: &Source) -> Option<(u64, u64)> {
    Some(held_bytes(store, &stored_index(store, src)?))
}

/// `src`'s pinned index, if the chunk store keeps it (checked against the pin, parsed).
fn stored_index(store: &Store, src: &Source) -> Option<ChunkIndex> {
    let pin = src.index.as_ref()?;
    let bytes = store.chunks().get(&pin.digest).ok()??;
    let index = ChunkIndex::parse(&bytes, &pin.digest).ok()?;
    src.expected
        .is_none_or(|d| d == index.file_digest())
        .then_some(index)
}

/// Bytes of `index`'s chunks `store` holds, with the file's size.
fn held_bytes(store: &Store, index: &ChunkIndex) -> (u64, u64) {
    let chunks = store.chunks();
    let held = (0..index.chunks().len())
        .filter(|&i| chunks.contains(&index.chunks()[i].digest))
        .filter_map(|i| index.chunk_range(i))
        .map(|r| r.len())
        .sum();
    (held, index.size())
}

/// Bytes of the chunks verified last kept in memory (twice the largest readahead window).
const RECENT_BUDGET: usize = 64 << 20;

/// Chunk indexes and chunk fetches of one process.
pub struct Chunked {
    store: Arc<Store>,
    indexes: Mutex<HashMap<Digest, Arc<ChunkIndex>>>,
    index_flights: SingleFlight<Digest, Result<Arc<ChunkIndex>, Arc<ContentError>>>,
    claims: ClaimTable,
    versions: Versions,
    priority: Priority,
    recent: RecentChunks,
    /// `fill` for sources whose asset does not say.
    fill_default: Mutex<Fill>,
    /// Blobs being filled in the background.
    filling: Mutex<HashSet<Digest>>,
    runtime: OnceLock<Handle>,
    assembling: Mutex<HashSet<Digest>>,
}

impl Chunked {
    /// Chunked reads over `store`'s chunk directory.
    pub fn new(store: Arc<Store>) -> Chunked {
        Chunked {
            store,
            indexes: Mutex::new(HashMap::new()),
            index_flights: SingleFlight::default(),
            claims: ClaimTable::default(),
            versions: Versions::default(),
            priority: Priority::default(),
            recent: RecentChunks::new(RECENT_BUDGET),
            fill_default: Mutex::new(Fill::OnDemand),
            filling: Mutex::new(HashSet::new()),
            runtime: OnceLock::new(),
            assembling: Mutex::new(HashSet::new()),
        }
    }

    /// The parsed index of `src`, when this process has it.
    pub fn loaded_index(&self, src: &Source) -> Option<Arc<ChunkIndex>> {
        let pin = src.index.as_ref()?;
        self.indexes.lock().get(&pin.digest).cloned()
    }

    /// Bytes of `src`'s chunks held, with its size, when its index is loaded here or kept in
    /// the chunk store (read from there each time, without any network: loading it for reads
    /// is `ensure_index`'s, which also prefetches the image's metadata).
    pub fn resident(&self, src: &Source) -> Option<(u64, u64)> {
        match self.loaded_index(src) {
            Some(index) => Some(held_bytes(&self.store, &index)),
            None => resident_in_store(&self.store, src),
        }
    }

    /// The index of `src` (pinned by `pin`): in memory, in the chunk store, or fetched once
    /// however many callers ask.
    pub async fn ensure_index(
        &self,
        src: &Source,
        pin: &IndexPin,
        fetcher: &Fetcher,
    ) -> Result<Arc<ChunkIndex>, Arc<ContentError>> {
        self.runtime.get_or_init(Handle::current);
        if let Some(index) = self.indexes.lock().get(&pin.digest) {
            return Ok(index.clone());
        }
        let work = async {
            let chunks = self.store.chunks();
            let bytes = match chunks.get(&pin.digest)? {
                Some(bytes) => bytes,
                None => {
                    let label = format!("{} (chunk index)", src.label);
                    let bytes = fetcher
                        .fetch_pinned_document(&label, &pin.urls, pin.digest)
                        .await?;
                    chunks.put(&pin.digest, &bytes)?;
                    bytes
                }
            };
            let index =
                ChunkIndex::parse(&bytes, &pin.digest).map_err(|e| ContentError::Index {
                    label: src.label.clone(),
                    source: e,
                })?;
            if let Some(expected) = src.expected {
                if expected != index.file_digest() {
                    return Err(ContentError::IndexForOther {
                        label: src.label.clone(),
                        expected,
                        indexed: index.file_digest(),
                    });
                }
            }
            let index = Arc::new(index);
            self.indexes.lock().insert(pin.digest, index.clone());
            Ok(index)
        };
        self.index_flights
            .run(pin.digest, async { work.await.map_err(Arc::new) })
            .await
    }

    /// A reader of `src` over its loaded `index`, fetching with `fetcher`.
    /// Chunks present are found once, here (a stat each).
    pub fn open(
        self: &Arc<Self>,
        src: &Source,
        index: Arc<ChunkIndex>,
        fetcher: Arc<Fetcher>,
    ) -> Result<Arc<PartialBlob>, ContentError> {
        let runtime = self
            .runtime
            .get()
            .cloned()
            .ok_or_else(|| ContentError::Task {
                label: src.label.clone(),
                message: "chunked read opened before its index was loaded".into(),
            })?;
        let chunks = self.store.chunks();
        let present: Vec<AtomicBool> = index
            .chunks()
            .iter()
            .map(|c| AtomicBool::new(chunks.contains(&c.digest)))
            .collect();
        let fill = src
            .index
            .as_ref()
            .and_then(|pin| pin.fill)
            .unwrap_or(*self.fill_default.lock());
        let blob = PartialBlob::new(self.clone(), src, index, fetcher, runtime, present, fill);
        Ok(blob)
    }

    /// Sets `fill` for sources whose asset does not say (the config's global setting).
    pub fn set_fill_default(&self, fill: Fill) {
        *self.fill_default.lock() = fill;
    }

    /// Starts filling `blob` in the background on `runtime`, unless a fill of it runs.
    fn start_fill(&self, blob: Arc<PartialBlob>, runtime: &Handle) {
        let digest = *blob.digest();
        if !self.filling.lock().insert(digest) {
            return;
        }
        let label = blob.label().to_string();
        runtime.spawn(async move {
            let chunked = blob.chunked().clone();
            match blob.fill_rest().await {
                0 => tracing::info!(asset = %label, "background fill done"),
                n => tracing::warn!(asset = %label, "background fill stopped: {n} chunks could not be fetched"),
            }
            chunked.filling.lock().remove(&digest);
        });
    }

    /// Puts the chunks of `index` together into a store blob, checked against the file's
    /// sha256, and records it complete.
    fn assemble(&self, index: &ChunkIndex, reference: Option<&str>) -> Result<(), StoreError> {
        let digest = index.file_digest();
        if self.store.blob(&digest)?.is_some() {
            return Ok(());
        }
        let mut tmp = self.store.temp_file()?;
        let mut hasher = Hasher::new();
        for (i, c) in index.chunks().iter().enumerate() {
            let bytes = self
                .store
                .chunks()
                .get(&c.digest)?
                .ok_or_else(|| StoreError::Io {
                    path: self.store.chunks().dir().to_path_buf(),
                    source: io::Error::other(format!("chunk {i} went away while assembling")),
                })?;
            hasher.update(&bytes);
            tmp.write_all(&bytes).map_err(|e| StoreError::Io {
                path: tmp.path().to_path_buf(),
                source: e,
            })?;
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(StoreError::Io {
                path: tmp.path().to_path_buf(),
                source: io::Error::other(format!(
                    "assembled chunks hash to {actual}, the index says {digest}"
                )),
            });
        }
        let info = BlobInfo {
            digest,
            size: index.size(),
        };
        self.store.commit(tmp, &info)?;
        if let Some(reference) = reference {
            self.store.record_reference(reference, &info)?;
        }
        Ok(())
    }
}
