//! Blobs read chunk by chunk before they are all here: sources with a pinned chunk index.
//!
//! [`Chunked`] fetches a source's index (a small document whose digest the catalog pins),
//! checks the pin before parsing it, and keeps it (in memory, and in the chunk store under its
//! digest, so a restart does not fetch it again). [`PartialBlob`] is a [`BlobRead`] over the
//! index: a read finds the chunks covering it, fetches the missing ones with HTTP range
//! requests (neighbouring chunks coalesced into one request of at most [`RUN_MAX`] bytes, runs
//! in flight in parallel, a sequential reader getting a growing readahead window fetched in the
//! background), hashes each
//! chunk before any byte of it is used, stores it, and copies the bytes out. A chunk that
//! hashes wrong is fetched again from the next URL; if no URL delivers it, the reads needing it
//! fail (EIO for the reader) while every other chunk keeps serving. A server that answers a
//! range request with the whole file (200) is streamed to the end and every verified chunk
//! kept. Concurrent readers of one chunk share one fetch ([`Claims`]).
//!
//! Once every chunk is present the blob is assembled into an ordinary store blob, checked
//! against the whole file's sha256 and committed; the next open then finds it complete (and
//! the kernel can read it with passthrough). The chunks stay, so a new version of the image
//! fetches only the chunks it does not share.
//!
//! Not here: HTTP (`fetch`), the chunk files and their crash rule (`store::ChunkStore`), the
//! index format (`chunk`).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;
use url::Url;

use super::{ContentError, SingleFlight};
use crate::chunk::ChunkIndex;
use crate::digest::{Digest, Hasher};
use crate::fetch::Fetcher;
use crate::range::ByteRange;
use crate::source::{IndexPin, Location, Source};
use crate::store::{BlobInfo, BlobRead, Store, StoreError};

/// The most bytes one range request asks for (a run of neighbouring missing chunks).
pub const RUN_MAX: u64 = 4 << 20;

/// The readahead window a sequential reader starts with, and the most it grows to.
const READAHEAD_MIN: u64 = 512 << 10;
const READAHEAD_MAX: u64 = 4 << 20;

/// Chunk indexes and chunk fetches of one process.
pub struct Chunked {
    store: Arc<Store>,
    indexes: Mutex<HashMap<Digest, Arc<ChunkIndex>>>,
    index_flights: SingleFlight<Digest, Result<Arc<ChunkIndex>, Arc<ContentError>>>,
    claims: Mutex<HashMap<Digest, watch::Receiver<bool>>>,
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
            claims: Mutex::new(HashMap::new()),
            runtime: OnceLock::new(),
            assembling: Mutex::new(HashSet::new()),
        }
    }

    /// The parsed index of `src`, when this process has it.
    pub fn loaded_index(&self, src: &Source) -> Option<Arc<ChunkIndex>> {
        let pin = src.index.as_ref()?;
        self.indexes.lock().get(&pin.digest).cloned()
    }

    /// Bytes of `src`'s chunks held, with its size, when its index is loaded.
    pub fn resident(&self, src: &Source) -> Option<(u64, u64)> {
        let index = self.loaded_index(src)?;
        let chunks = self.store.chunks();
        let held = (0..index.chunks().len())
            .filter(|&i| chunks.contains(&index.chunks()[i].digest))
            .filter_map(|i| index.chunk_range(i))
            .map(|r| r.len())
            .sum();
        Some((held, index.size()))
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
                        .fetch_document(&label, &pin.urls, pin.digest)
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
        let count = present.iter().filter(|p| p.load(Ordering::Relaxed)).count();
        let blob = Arc::new_cyclic(|me| PartialBlob {
            me: me.clone(),
            chunked: self.clone(),
            digest: index.file_digest(),
            index,
            label: src.label.clone(),
            urls: location_urls(src),
            reference: src
                .expected
                .is_none()
                .then(|| src.location.reference())
                .flatten(),
            fetcher,
            runtime,
            present,
            present_count: AtomicUsize::new(count),
            readahead: Mutex::new((u64::MAX, 0)),
        });
        if count == blob.present.len() {
            blob.start_assembly();
        }
        Ok(blob)
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
                    path: self.store.chunks().path(&c.digest),
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

/// A blob read through its chunk index: present chunks from the chunk store, missing ones
/// fetched on demand.
pub struct PartialBlob {
    /// Itself, for readahead fetches that outlive the read that started them.
    me: std::sync::Weak<PartialBlob>,
    chunked: Arc<Chunked>,
    index: Arc<ChunkIndex>,
    digest: Digest,
    label: String,
    urls: Vec<Url>,
    reference: Option<String>,
    fetcher: Arc<Fetcher>,
    runtime: Handle,
    present: Vec<AtomicBool>,
    present_count: AtomicUsize,
    /// Where the last read ended, and the readahead window then.
    readahead: Mutex<(u64, u64)>,
}

impl PartialBlob {
    /// Fetches the chunks of a squashfs image's or a SIF's metadata (superblock, tables), so
    /// a decoder's chain of dependent reads is served locally.
    pub async fn prefetch(&self) {
        let wanted: Vec<usize> = self.index.prefetch_chunks().into_iter().flatten().collect();
        self.fetch_chunks(&wanted).await;
    }

    /// Fetches those of `wanted` (chunk numbers, ascending) that are missing; chunks another
    /// caller is fetching are waited for instead. Failures are logged; the reads that needed
    /// a chunk find it missing.
    async fn fetch_chunks(&self, wanted: &[usize]) {
        let chunks = self.chunked.store.chunks();
        let mut claims = Claims {
            chunked: &self.chunked,
            senders: Vec::new(),
        };
        let mut mine = Vec::new();
        let mut waits = Vec::new();
        {
            let mut held = self.chunked.claims.lock();
            for &i in wanted {
                let Some(c) = self.index.chunks().get(i) else {
                    continue;
                };
                if chunks.contains(&c.digest) {
                    continue;
                }
                if let Some(rx) = held.get(&c.digest) {
                    waits.push(rx.clone());
                    continue;
                }
                let (tx, rx) = watch::channel(false);
                held.insert(c.digest, rx);
                claims.senders.push((c.digest, tx));
                mine.push(i);
            }
        }
        let parallel = self.fetcher.settings().parallel.max(1);
        futures_util::stream::iter(self.runs(&mine))
            .map(|run| self.fetch_run(run))
            .buffer_unordered(parallel)
            .collect::<Vec<()>>()
            .await;
        drop(claims);
        for mut rx in waits {
            // An error means the fetching caller went away: the read finds the chunk missing.
            let _ = rx.wait_for(|done| *done).await;
        }
        for &i in wanted {
            if let Some(c) = self.index.chunks().get(i) {
                if chunks.contains(&c.digest) {
                    self.mark_present(i);
                }
            }
        }
    }

    /// `chunks` (ascending) as runs of neighbours, each at most [`RUN_MAX`] bytes (or one
    /// chunk).
    fn runs(&self, chunks: &[usize]) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for &i in chunks {
            if let Some(last) = runs.last_mut() {
                if last.end == i && self.bytes_of(last.start..i + 1).len() <= RUN_MAX {
                    last.end = i + 1;
                    continue;
                }
            }
            runs.push(i..i + 1);
        }
        runs
    }

    /// The file bytes of chunks `run` (non-empty, in range).
    fn bytes_of(&self, run: Range<usize>) -> ByteRange {
        let start = self.index.chunk_range(run.start).map_or(0, |r| r.start());
        let end = self
            .index
            .chunk_range(run.end.saturating_sub(1))
            .map_or(start, |r| r.end());
        ByteRange::new(start, end)
    }

    /// One run: from each URL in turn until every chunk of it is stored.
    async fn fetch_run(&self, run: Range<usize>) {
        let mut todo = Some(run);
        let mut no_cache = false;
        for url in &self.urls {
            let Some(run) = todo.clone() else {
                return;
            };
            let range = self.bytes_of(run.clone());
            let mut assembler = Assembler {
                blob: self,
                url,
                chunk: None,
                pos: 0,
                buf: Vec::new(),
                bad: 0,
            };
            let mut sink = |offset: u64, data: &[u8]| assembler.push(offset, data);
            let answer = self
                .fetcher
                .fetch_span(&self.label, url, range, no_cache, &mut sink)
                .await;
            if let Err(e) = answer {
                tracing::warn!("{e}");
            }
            no_cache |= assembler.bad > 0;
            todo = self.still_missing(run);
        }
        if let Some(run) = todo {
            let range = self.bytes_of(run.clone());
            tracing::error!(
                asset = %self.label,
                "chunks {run:?} (bytes {}-{}) could not be fetched and verified from any source",
                range.start(),
                range.end()
            );
        }
    }

    /// The part of `run` from its first to its last chunk not stored; `None` when all are.
    fn still_missing(&self, run: Range<usize>) -> Option<Range<usize>> {
        let chunks = self.chunked.store.chunks();
        let missing = |i: &usize| {
            self.index
                .chunks()
                .get(*i)
                .is_some_and(|c| !chunks.contains(&c.digest))
        };
        let first = run.clone().find(missing)?;
        let last = run.rev().find(missing)?;
        Some(first..last + 1)
    }

    /// Whether chunk `i` must be fetched.
    fn is_missing(&self, i: usize) -> bool {
        let present = self
            .present
            .get(i)
            .is_some_and(|p| p.load(Ordering::Acquire));
        !present
            && self
                .index
                .chunks()
                .get(i)
                .is_some_and(|c| !self.chunked.store.chunks().contains(&c.digest))
    }

    fn mark_present(&self, i: usize) {
        let Some(flag) = self.present.get(i) else {
            return;
        };
        if !flag.swap(true, Ordering::AcqRel)
            && self.present_count.fetch_add(1, Ordering::AcqRel) + 1 == self.present.len()
        {
            self.start_assembly();
        }
    }

    /// Every chunk is here: make the blob an ordinary complete one, in the background.
    fn start_assembly(&self) {
        if !self.chunked.assembling.lock().insert(self.digest) {
            return;
        }
        let (chunked, index) = (self.chunked.clone(), self.index.clone());
        let (label, reference) = (self.label.clone(), self.reference.clone());
        self.runtime.spawn_blocking(move || {
            match chunked.assemble(&index, reference.as_deref()) {
                Ok(()) => tracing::info!(asset = %label, "every chunk present: now a complete blob {}", index.file_digest().short()),
                Err(e) => tracing::error!(asset = %label, "assembling the complete blob failed: {e}"),
            }
            chunked.assembling.lock().remove(&index.file_digest());
        });
    }

    /// Where the readahead for a read of `want` should end: past it by a window that doubles
    /// while reads continue each other, and none for a read elsewhere.
    fn fetch_end(&self, want: ByteRange) -> u64 {
        let mut ra = self.readahead.lock();
        let (last_end, window) = *ra;
        let window = if want.start() == last_end {
            (window * 2).clamp(READAHEAD_MIN, READAHEAD_MAX)
        } else {
            0
        };
        *ra = (want.end(), window);
        want.end().saturating_add(window)
    }

    /// Copies chunk `i`'s part of `want` into `buf` (which holds `want`); fetches the chunk
    /// once more if it is missing (or was torn).
    fn copy_chunk(&self, i: usize, want: ByteRange, buf: &mut [u8]) -> io::Result<()> {
        let (Some(c), Some(r)) = (self.index.chunks().get(i), self.index.chunk_range(i)) else {
            return Err(io::Error::other("chunk number out of range"));
        };
        let from = want.start().max(r.start());
        let to = want.end().min(r.end());
        let dst = &mut buf[(from - want.start()) as usize..(to - want.start()) as usize];
        let chunks = self.chunked.store.chunks();
        let mut got = chunks
            .read(&c.digest, from - r.start(), dst)
            .map_err(io::Error::other)?;
        if got.is_none() {
            self.runtime.block_on(self.fetch_chunks(&[i]));
            got = chunks
                .read(&c.digest, from - r.start(), dst)
                .map_err(io::Error::other)?;
        }
        match got {
            Some(n) if n == dst.len() => {
                self.mark_present(i);
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "{}: chunk {i} (bytes {}-{}) could not be fetched and verified",
                self.label,
                r.start(),
                r.end()
            ))),
        }
    }
}

impl BlobRead for PartialBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.index.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = ByteRange::at(offset, buf.len() as u64).clamp_to(self.index.size());
        if want.is_empty() {
            return Ok(0);
        }
        let needed = self.index.chunks_covering(want);
        let ahead = ByteRange::new(want.end(), self.fetch_end(want));
        let ahead: Vec<usize> = self
            .index
            .chunks_covering(ahead)
            .filter(|i| !needed.contains(i) && self.is_missing(*i))
            .collect();
        if !ahead.is_empty() {
            if let Some(me) = self.me.upgrade() {
                self.runtime
                    .spawn(async move { me.fetch_chunks(&ahead).await });
            }
        }
        let missing: Vec<usize> = needed.clone().filter(|i| self.is_missing(*i)).collect();
        if !missing.is_empty() {
            self.runtime.block_on(self.fetch_chunks(&missing));
        }
        let mut filled = 0u64;
        for i in needed {
            if let Err(e) = self.copy_chunk(i, want, buf) {
                if filled > 0 {
                    // Hand over what precedes the bad chunk; the next read gets the error.
                    return Ok(filled as usize);
                }
                return Err(e);
            }
            filled = self
                .index
                .chunk_range(i)
                .map_or(0, |r| r.end())
                .min(want.end())
                - want.start();
        }
        Ok(want.len() as usize)
    }
}

fn location_urls(src: &Source) -> Vec<Url> {
    let Location::Http { urls } = &src.location;
    urls.clone()
}

/// Chunks this caller is fetching; released (waiters woken) when dropped, even if the fetch
/// was abandoned half-way.
struct Claims<'a> {
    chunked: &'a Chunked,
    senders: Vec<(Digest, watch::Sender<bool>)>,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        let mut held = self.chunked.claims.lock();
        for (d, tx) in self.senders.drain(..) {
            held.remove(&d);
            let _ = tx.send(true);
        }
    }
}

/// Cuts a span's bytes into chunks as they arrive, verifies each and stores the good ones.
struct Assembler<'a> {
    blob: &'a PartialBlob,
    url: &'a Url,
    /// The chunk being filled (set by the first bytes).
    chunk: Option<usize>,
    /// The file offset of the next byte.
    pos: u64,
    buf: Vec<u8>,
    /// Chunks that hashed wrong.
    bad: usize,
}

impl Assembler<'_> {
    fn push(&mut self, offset: u64, mut data: &[u8]) -> io::Result<()> {
        let index = &self.blob.index;
        let chunk = match self.chunk {
            Some(c) => c,
            None => {
                let first = index.chunks_covering(ByteRange::at(offset, 1)).start;
                if index.chunk_range(first).map(|r| r.start()) != Some(offset) {
                    return Err(io::Error::other(format!(
                        "span starts at {offset}, not at a chunk boundary"
                    )));
                }
                self.pos = offset;
                first
            }
        };
        self.chunk = Some(chunk);
        if offset != self.pos {
            return Err(io::Error::other(format!(
                "span bytes at {offset}, expected {}",
                self.pos
            )));
        }
        while !data.is_empty() {
            let Some(chunk) = self.chunk else {
                return Ok(());
            };
            let Some(r) = index.chunk_range(chunk) else {
                // Past the last chunk (a longer file than indexed): nothing to keep.
                return Ok(());
            };
            let take = ((r.end() - self.pos) as usize).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.pos == r.end() {
                self.finish_chunk(chunk, r)?;
                self.chunk = Some(chunk + 1);
            }
        }
        Ok(())
    }

    fn finish_chunk(&mut self, i: usize, r: ByteRange) -> io::Result<()> {
        let expected = self.blob.index.chunks()[i].digest;
        let actual = Digest::of(&self.buf);
        if actual == expected {
            let store = &self.blob.chunked.store;
            store
                .chunks()
                .put(&expected, &self.buf)
                .map_err(io::Error::other)?;
            store.stats().chunk_fetched(self.url, self.buf.len() as u64);
            self.blob.mark_present(i);
        } else {
            self.bad += 1;
            self.blob.chunked.store.stats().chunk_mismatch();
            tracing::error!(
                asset = %self.blob.label,
                "chunk {i} (bytes {}-{}) from {}: sha256 mismatch: expected {expected}, got {actual}",
                r.start(),
                r.end(),
                self.url
            );
        }
        self.buf.clear();
        Ok(())
    }
}
