//! [`PartialBlob`]: a [`BlobRead`] over a chunk index. A read copies present chunks from memory
//! (chunks verified last) or the chunk store; missing ones are fetched first (neighbours
//! coalesced into runs of at most [`RUN_MAX`] bytes, runs in parallel), a sequential reader's
//! readahead (`readahead`) in the background. Each caller claims the chunks it fetches
//! (`claims`), so concurrent readers of one chunk cause one fetch, and each waiter is served
//! when its chunk is stored. Range requests name the version of the file first seen
//! (`versions`); `fill = "background"` starts a fill after the first read (`fill`).

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use tokio::runtime::Handle;
use url::Url;

use super::fill::Priority;
use super::readahead::Readahead;
use super::span_chunks::{CheckedChunk, SpanChunks};
use super::Chunked;
use crate::chunk::ChunkIndex;
use crate::digest::Digest;
use crate::fetch::Fetcher;
use crate::range::ByteRange;
use crate::source::{Fill, Location, Source};
use crate::store::BlobRead;

/// The most bytes one range request asks for (a run of neighbouring missing chunks).
pub const RUN_MAX: u64 = 4 << 20;

/// A blob read through its chunk index: present chunks from the chunk store, missing ones
/// fetched on demand.
pub struct PartialBlob {
    /// Itself, for readahead fetches that outlive the read that started them.
    me: Weak<PartialBlob>,
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
    /// A sequential reader's window.
    readahead: Readahead,
    /// Whether the chunks nobody reads are fetched in the background after the first read.
    fill: Fill,
    fill_started: AtomicBool,
    /// False when the caller plans its own fetches ([`PartialBlob::stop_readahead`]).
    reads_ahead: AtomicBool,
}

impl PartialBlob {
    /// A reader of `src` over `index`; `present` says which chunks the store holds.
    pub(super) fn new(
        chunked: Arc<Chunked>,
        src: &Source,
        index: Arc<ChunkIndex>,
        fetcher: Arc<Fetcher>,
        runtime: Handle,
        present: Vec<AtomicBool>,
        fill: Fill,
    ) -> Arc<PartialBlob> {
        let count = present.iter().filter(|p| p.load(Ordering::Relaxed)).count();
        let digests = index.chunks().iter().map(|c| &c.digest);
        chunked.store.chunks().retain(digests);
        let blob = Arc::new_cyclic(|me| PartialBlob {
            me: me.clone(),
            chunked,
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
            readahead: Readahead::default(),
            fill,
            fill_started: AtomicBool::new(false),
            reads_ahead: AtomicBool::new(true),
        });
        if count == blob.present.len() {
            blob.start_assembly();
        }
        blob
    }

    /// Fetches the chunks of a squashfs image's or a SIF's metadata (superblock, tables), so
    /// a decoder's chain of dependent reads is served locally.
    pub async fn prefetch(&self) {
        let wanted: Vec<usize> = self.index.prefetch_chunks().into_iter().flatten().collect();
        self.fetch_for_reader(&wanted).await;
    }

    /// Bytes of the chunks known present (for `user.lazycas.cached`).
    pub fn resident(&self) -> u64 {
        (0..self.present.len())
            .filter(|&i| self.present[i].load(Ordering::Relaxed))
            .filter_map(|i| self.index.chunk_range(i))
            .map(|r| r.len())
            .sum()
    }

    /// Turns off the sequential readahead: for a reader that knows which chunks it will need
    /// (an archive fetches the spans a member read decodes) and must not fetch others.
    pub fn stop_readahead(&self) {
        self.reads_ahead.store(false, Ordering::Relaxed);
    }

    /// Fetches the missing chunks covering `range` in one batch (blocking the calling thread,
    /// as a read does). Failures are logged; a read needing a chunk that failed tries again.
    pub fn fetch_range(&self, range: ByteRange) {
        let wanted: Vec<usize> = self
            .index
            .chunks_covering(range)
            .filter(|&i| self.is_missing(i))
            .collect();
        if !wanted.is_empty() {
            self.runtime.block_on(self.fetch_for_reader(&wanted));
        }
    }

    /// Fetches those of `wanted` (chunk numbers, ascending) that are missing; chunks another
    /// caller is fetching are waited for instead (each until it arrives, not until the other
    /// caller's whole fetch ends). Failures are logged; the reads that needed a chunk find it
    /// missing.
    pub(super) async fn fetch_chunks(&self, wanted: &[usize]) {
        let chunks = self.chunked.store.chunks();
        let wanted: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| i < self.index.chunks().len())
            .collect();
        let digests: Vec<Digest> = wanted
            .iter()
            .map(|&i| self.index.chunks()[i].digest)
            .collect();
        let claimed = self.chunked.claims.claim(&digests, |d| chunks.contains(d));
        let mine: Vec<usize> = claimed.mine.iter().map(|&pos| wanted[pos]).collect();
        let owner = claimed.claims.owner();
        let parallel = self.fetcher.settings().parallel.max(1);
        futures_util::stream::iter(self.runs(&mine))
            .map(|run| self.fetch_run(run, owner))
            .buffer_unordered(parallel)
            .collect::<Vec<()>>()
            .await;
        drop(claimed.claims);
        if !mine.is_empty() {
            let store = &self.chunked.store;
            if let Err(e) = store.enforce_limits(&store.limits(), 0) {
                tracing::warn!(asset = %self.label, "making room after fetching chunks: {e}");
            }
        }
        for mut rx in claimed.waits {
            // An error means the fetching caller went away: the read finds the chunk missing.
            let _ = rx.wait_for(|done| *done).await;
        }
        for &i in &wanted {
            if chunks.contains(&self.index.chunks()[i].digest) {
                self.mark_present(i);
            }
        }
    }

    /// [`PartialBlob::fetch_chunks`] for a reader (a read, its readahead, an open's prefetch):
    /// background fills wait while it is in flight.
    async fn fetch_for_reader(&self, wanted: &[usize]) {
        let _foreground = self.chunked.priority.foreground();
        self.fetch_chunks(wanted).await;
    }

    /// The asset name, for log lines.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// The chunk table this blob reads through.
    pub(super) fn chunked(&self) -> &Arc<Chunked> {
        &self.chunked
    }

    /// The number of chunks of the blob.
    pub(super) fn chunk_count(&self) -> usize {
        self.index.chunks().len()
    }

    /// The foreground/background arbiter of this process.
    pub(super) fn priority(&self) -> &Priority {
        &self.chunked.priority
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
    pub(super) fn bytes_of(&self, run: Range<usize>) -> ByteRange {
        let start = self.index.chunk_range(run.start).map_or(0, |r| r.start());
        let end = self
            .index
            .chunk_range(run.end.saturating_sub(1))
            .map_or(start, |r| r.end());
        ByteRange::new(start, end)
    }

    /// One run (claimed by `owner`): from each URL in turn until every chunk of it is stored.
    async fn fetch_run(&self, run: Range<usize>, owner: u64) {
        let mut todo = Some(run);
        let mut no_cache = false;
        for url in &self.urls {
            let Some(run) = todo.clone() else {
                return;
            };
            let range = self.bytes_of(run.clone());
            let mut spans = SpanChunks::new(&self.index);
            let mut bad = 0;
            let mut keep = |c: CheckedChunk<'_>| self.keep_chunk(c, url, owner, &mut bad);
            let mut sink = |offset: u64, data: &[u8]| spans.push(offset, data, &mut keep);
            let version = self.chunked.versions.get(&self.digest, url);
            let answer = self
                .fetcher
                .fetch_span_of_version(
                    &self.label,
                    url,
                    range,
                    no_cache,
                    version.as_ref(),
                    &mut sink,
                )
                .await;
            match answer {
                Ok(reply) => {
                    if let (None, Some(v)) = (version, reply.validator) {
                        self.chunked.versions.record(&self.digest, url, v);
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
            no_cache |= bad > 0;
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

    /// Stores a verified chunk and ends `owner`'s claim on it (its waiters are served at
    /// once); logs and counts a mismatched one.
    fn keep_chunk(
        &self,
        c: CheckedChunk<'_>,
        url: &Url,
        owner: u64,
        bad: &mut usize,
    ) -> io::Result<()> {
        let store = &self.chunked.store;
        match c {
            CheckedChunk::Verified { index, bytes } => {
                let digest = self.index.chunks()[index].digest;
                store
                    .chunks()
                    .put(&digest, bytes)
                    .map_err(io::Error::other)?;
                self.chunked.recent.insert(digest, bytes);
                store.stats().chunk_fetched(url, bytes.len() as u64);
                self.mark_present(index);
                self.chunked.claims.release(owner, &digest);
            }
            CheckedChunk::Mismatch {
                index,
                range,
                expected,
                actual,
            } => {
                *bad += 1;
                store.stats().chunk_mismatch();
                tracing::error!(
                    asset = %self.label,
                    "chunk {index} (bytes {}-{}) from {url}: sha256 mismatch: expected {expected}, got {actual}",
                    range.start(),
                    range.end()
                );
            }
        }
        Ok(())
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
    pub(super) fn is_missing(&self, i: usize) -> bool {
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

    /// Starts fetching, in the background, what the readahead says should follow a read of
    /// `want` (chunks `needed`).
    fn read_ahead_of(&self, want: ByteRange, needed: &Range<usize>) {
        if !self.reads_ahead.load(Ordering::Relaxed) {
            return;
        }
        let Some(ahead) = self.readahead.after_read(want) else {
            return;
        };
        let ahead: Vec<usize> = self
            .index
            .chunks_covering(ahead)
            .filter(|i| !needed.contains(i) && self.is_missing(*i))
            .collect();
        if let (false, Some(me)) = (ahead.is_empty(), self.me.upgrade()) {
            self.runtime
                .spawn(async move { me.fetch_for_reader(&ahead).await });
        }
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
        if self.chunked.recent.read(&c.digest, from - r.start(), dst) == Some(dst.len()) {
            self.mark_present(i);
            return Ok(());
        }
        let chunks = self.chunked.store.chunks();
        let mut got = chunks
            .read(&c.digest, from - r.start(), dst)
            .map_err(io::Error::other)?;
        if got.is_none() {
            self.runtime.block_on(self.fetch_for_reader(&[i]));
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

impl Drop for PartialBlob {
    fn drop(&mut self) {
        let digests = self.index.chunks().iter().map(|c| &c.digest);
        self.chunked.store.chunks().release(digests);
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
        self.read_ahead_of(want, &needed);
        let missing: Vec<usize> = needed.clone().filter(|i| self.is_missing(*i)).collect();
        if !missing.is_empty() {
            self.runtime.block_on(self.fetch_for_reader(&missing));
        }
        if self.fill == Fill::Background && !self.fill_started.swap(true, Ordering::AcqRel) {
            if let Some(me) = self.me.upgrade() {
                self.chunked.start_fill(me, &self.runtime);
            }
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

/// The URLs chunks are fetched from: only plain HTTP locations are read chunk by chunk (a
/// library or shub image is resolved to its blob URL, and downloaded whole, by `content`).
fn location_urls(src: &Source) -> Vec<Url> {
    match &src.location {
        Location::Http { urls } => urls.clone(),
        Location::Library { .. }
        | Location::Shub { .. }
        | Location::Registry { .. }
        | Location::Image(_) => Vec::new(),
    }
}
