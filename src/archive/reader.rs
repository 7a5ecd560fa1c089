//! [`ArchiveReader`]: member bytes on demand.
//!
//! Plain tar members are `pread`s of the blob. For gzip, the tar stream is cut into aligned
//! spans; a read takes the spans it needs from the shared [`SpanCache`] and decodes the missing
//! ones with a [`StreamDecoder`]: an idle one already positioned at or shortly before the read
//! (a sequential reader continues its decoder), else a new one from the nearest checkpoint at or
//! before the read. Every span a decoder passes is cached, so neighbours of what was read are
//! served without decoding again. A decoder started at a checkpoint for a read stops at the
//! read's end (a random read of a small member decodes half as much on average); one continued
//! by the next read decodes whole slots, and the cache joins the two pieces of a slot. Memory:
//! the cache bound, plus a few idle decoders (about 100 KiB each) and a small layout cache per
//! reader; nothing grows with the archive.
//!
//! Reads of small members go through [`Regions`] first when the reader has a region store. A
//! random read that would start a decoder at a checkpoint claims the region: it decodes for
//! itself, then hands its decoder to a fill that keeps the whole region in the store. Reads of
//! a region being filled wait for the fill; later reads of the region's members read the copy.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::builder::Format;
use super::checkpoint::Checkpoint;
use super::decoder::{read_exact, StreamDecoder, SPAN_SIZE};
use super::index::DataLayout;
use super::read_ahead::{IdleDecoders, ReadAhead};
use super::regions::{RegionClaim, RegionRead, RegionStore, Regions, REGION_MEMBER_MAX};
use super::span_cache::{Span, SpanKey};
use super::{ArchiveError, ArchiveIndex, MemberId, SpanCache};
use crate::store::BlobRead;

/// Idle decoders kept per reader (one per concurrent sequential stream, roughly).
const MAX_IDLE_DECODERS: usize = 4;
/// A decoder this close before a read continues even if a checkpoint is nearer.
const CONTINUE_LIMIT: u64 = 1 << 20;
/// File layouts remembered per reader.
const LAYOUT_CACHE: usize = 1024;

/// Reads members of one archive. Thread-safe; share it across FUSE threads.
pub struct ArchiveReader {
    index: Arc<ArchiveIndex>,
    blob: Arc<dyn BlobRead>,
    cache: Arc<SpanCache>,
    layouts: Mutex<LruCache<MemberId, Arc<DataLayout>>>,
    decoders: IdleDecoders,
    ahead: ReadAhead,
    regions: Option<Regions>,
    resumes: AtomicU64,
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("index", &self.index)
            .finish()
    }
}

impl ArchiveReader {
    /// A reader of the archive `index` describes, whose verified bytes are `blob`.
    pub fn new(
        index: Arc<ArchiveIndex>,
        blob: Arc<dyn BlobRead>,
        cache: Arc<SpanCache>,
    ) -> ArchiveReader {
        let layouts = NonZeroUsize::new(LAYOUT_CACHE).unwrap_or(NonZeroUsize::MIN);
        let decoders: IdleDecoders = Arc::default();
        let ahead = ReadAhead::new(
            index.clone(),
            blob.clone(),
            cache.clone(),
            decoders.clone(),
            MAX_IDLE_DECODERS,
        );
        ArchiveReader {
            index,
            blob,
            cache,
            layouts: Mutex::new(LruCache::new(layouts)),
            decoders,
            ahead,
            regions: None,
            resumes: AtomicU64::new(0),
        }
    }

    /// Keeps decoded regions in `store` for the small members' reads (only for an archive
    /// whose blob is all local: a fill decodes past the read).
    pub fn with_regions(mut self, store: Arc<dyn RegionStore>) -> ArchiveReader {
        self.regions = Some(Regions::new(store, &self.index));
        self
    }

    /// The index this reader serves.
    pub fn index(&self) -> &Arc<ArchiveIndex> {
        &self.index
    }

    /// How many times a decoder was started from a checkpoint (the expensive path).
    pub fn checkpoint_resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    /// How many read-ahead jobs were started (each decodes from a checkpoint ahead of a
    /// sequential reader on another thread).
    pub fn read_ahead_jobs(&self) -> u64 {
        self.ahead.jobs()
    }

    /// True while a read-ahead job is decoding.
    pub fn read_ahead_running(&self) -> bool {
        self.ahead.is_running()
    }

    /// Up to `len` bytes of regular file `id` from `offset` (fewer at the end of the file; none
    /// past it). Holes of sparse files read as zeros. The result is allocated whole, so callers
    /// bound `len` (FUSE reads are at most a few hundred KiB).
    pub fn read(&self, id: MemberId, offset: u64, len: u32) -> Result<Vec<u8>, ArchiveError> {
        let layout = self.layout(id)?;
        if offset >= layout.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = layout.size.min(offset.saturating_add(u64::from(len)));
        let small = layout.size < REGION_MEMBER_MAX;
        match &layout.sparse {
            None => self.read_stream(
                layout.data_offset + offset,
                (end - offset) as usize,
                layout.data_offset + layout.size,
                small,
            ),
            Some(chunks) => self.read_sparse(chunks, offset, end, small),
        }
    }

    /// The (cached) data layout of `id`.
    fn layout(&self, id: MemberId) -> Result<Arc<DataLayout>, ArchiveError> {
        if let Some(l) = self.layouts.lock().get(&id) {
            return Ok(l.clone());
        }
        let layout = Arc::new(self.index.layout(id)?);
        self.layouts.lock().put(id, layout.clone());
        Ok(layout)
    }

    /// Assembles `[offset, end)` of a sparse file from its stored chunks and zeros.
    fn read_sparse(
        &self,
        chunks: &[(super::tar::SparseChunk, u64)],
        offset: u64,
        end: u64,
        small: bool,
    ) -> Result<Vec<u8>, ArchiveError> {
        let mut out = vec![0u8; (end - offset) as usize];
        // Where the member's stored data ends in the stream (after its last chunk).
        let data_end = chunks.last().map_or(0, |(c, phys)| phys + c.len);
        let first = chunks.partition_point(|(c, _)| c.offset + c.len <= offset);
        for (c, phys) in &chunks[first..] {
            if c.offset >= end {
                break;
            }
            let from = c.offset.max(offset);
            let to = (c.offset + c.len).min(end);
            let bytes = self.read_stream(
                phys + (from - c.offset),
                (to - from) as usize,
                data_end,
                small,
            )?;
            let at = (from - offset) as usize;
            out[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(out)
    }

    /// `len` bytes of the tar stream from `start`, for a member whose data ends at `member_end`
    /// (`small`: read through regions).
    fn read_stream(
        &self,
        start: u64,
        len: usize,
        member_end: u64,
        small: bool,
    ) -> Result<Vec<u8>, ArchiveError> {
        let end = start.saturating_add(len as u64);
        if end > self.index.stream_len() {
            return Err(self.index.corrupt(format!(
                "member data [{start}, {end}) past the end of the tar stream"
            )));
        }
        match self.index.format() {
            Format::Tar => {
                let mut buf = vec![0u8; len];
                read_exact(self.blob.as_ref(), start, &mut buf)?;
                Ok(buf)
            }
            Format::Gzip => self.read_gzip(start, end, member_end, small),
        }
    }

    /// `[start, end)` of a gzip archive's tar stream, from cached spans, decoded regions (when
    /// `small`) and decoders.
    fn read_gzip(
        &self,
        start: u64,
        end: u64,
        member_end: u64,
        small: bool,
    ) -> Result<Vec<u8>, ArchiveError> {
        let regions = self.regions.as_ref().filter(|_| small);
        let sequential = regions.is_some() && self.ahead.continues_stream(start);
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut pos = start;
        let mut held: Option<StreamDecoder> = None;
        // `fresh`: the held decoder was chosen for this position and has not been overtaken by
        // cache hits, so it needs no re-check.
        let mut fresh = false;
        // `resumed`: the held decoder started at a checkpoint for this read (a random access),
        // so it stops at the read's end instead of finishing the slot: nothing says the bytes
        // after are wanted, and a small member's read decodes half as much on average. A
        // decoder continued from an earlier read (a sequential reader) decodes whole slots.
        let mut resumed = false;
        // A region this read claimed: its decoder started at the region's start, and every
        // span it produced goes to the region's fill afterwards.
        let mut claim: Option<RegionClaim> = None;
        let mut claimed_spans: Vec<Arc<Span>> = Vec::new();
        while pos < end {
            if claim.is_none() {
                if let Some(span) = self.cached(pos) {
                    copy_span(&span, &mut pos, end, &mut out);
                    fresh = false;
                    continue;
                }
            }
            // A region kept or being filled serves without a decoder of our own. A random read
            // with no decoder to continue claims the region: it decodes from the region's start
            // as far as it needs, then a fill decodes the rest into the store. A sequential
            // reader (`tar`, `cp -r`) is served best by decoders and decode-ahead, and a copy of
            // all it reads would only be written, never read.
            if let (Some(regions), None) = (regions, &claim) {
                let continuing = match &held {
                    Some(d) => fresh || self.worth_continuing(d, pos)?,
                    None => sequential || self.has_idle_near(pos),
                };
                let before = out.len();
                match regions.read(&self.index, &self.blob, pos, end, !continuing, &mut out)? {
                    RegionRead::Served => {
                        pos += (out.len() - before) as u64;
                        fresh = false;
                        continue;
                    }
                    RegionRead::Decode => {}
                    RegionRead::Claimed(c) => {
                        let cp = self.index.checkpoint_before(pos)?;
                        if cp.uoff == c.start() {
                            if let Some(d) = held.take() {
                                self.park(d);
                            }
                            held = Some(self.resume(&cp)?);
                            resumed = true;
                            fresh = true;
                            claim = Some(*c);
                        }
                    }
                }
            }
            let mut dec = match held.take() {
                Some(d) if fresh || self.worth_continuing(&d, pos)? => d,
                other => {
                    if let Some(d) = other {
                        self.park(d);
                    }
                    let (d, from_checkpoint) = self.decoder_for(pos)?;
                    resumed = from_checkpoint;
                    d
                }
            };
            fresh = true;
            let limit = if resumed { end } else { u64::MAX };
            // A decoding error leaves the decoder unusable: it is dropped with `dec`.
            let span = dec
                .next_span_until(self.blob.as_ref(), limit)?
                .ok_or_else(|| {
                    self.index
                        .corrupt(format!("tar stream ends before offset {pos} while reading"))
                })?;
            let span = Arc::new(span);
            self.cache.insert(self.key(span.start), span.clone());
            if claim.is_some() {
                claimed_spans.push(span.clone());
            }
            if span.contains(pos) {
                copy_span(&span, &mut pos, end, &mut out);
            }
            held = Some(dec);
        }
        if let Some(c) = claim {
            // The fill takes the decoder if it is still inside the region; else the region is
            // given up (a later read claims it again).
            match held.take() {
                Some(d) if d.position() <= c.end() => c.hand_over(d, claimed_spans),
                other => held = other,
            }
        }
        if let Some(d) = held {
            self.park(d);
        }
        self.ahead.after_read(start, end, member_end);
        Ok(out)
    }

    /// The cached span holding `pos`, if any.
    fn cached(&self, pos: u64) -> Option<Arc<Span>> {
        self.cache.get(&self.key(pos)).filter(|s| s.contains(pos))
    }

    /// The cache key of the slot holding stream offset `pos`.
    fn key(&self, pos: u64) -> SpanKey {
        SpanKey {
            archive: *self.index.digest(),
            slot: pos / SPAN_SIZE,
        }
    }

    /// True if decoding on from `d` to `pos` is no worse than starting at a checkpoint.
    fn worth_continuing(&self, d: &StreamDecoder, pos: u64) -> Result<bool, ArchiveError> {
        let at = d.position();
        if at > pos {
            return Ok(false);
        }
        if pos - at <= CONTINUE_LIMIT {
            return Ok(true);
        }
        Ok(self.index.checkpoint_before(pos)?.uoff <= at)
    }

    /// True if an idle decoder can continue to `pos` without going back to a checkpoint.
    fn has_idle_near(&self, pos: u64) -> bool {
        self.decoders
            .lock()
            .iter()
            .any(|d| d.position() <= pos && pos - d.position() <= CONTINUE_LIMIT)
    }

    /// A decoder positioned at or before `pos`: the best idle one, else one from a checkpoint
    /// (then the flag is true).
    fn decoder_for(&self, pos: u64) -> Result<(StreamDecoder, bool), ArchiveError> {
        let candidate = {
            let mut idle = self.decoders.lock();
            let best = idle
                .iter()
                .enumerate()
                .filter(|(_, d)| d.position() <= pos)
                .max_by_key(|(_, d)| d.position())
                .map(|(i, _)| i);
            best.map(|i| idle.remove(i))
        };
        if let Some(d) = candidate {
            if pos - d.position() <= CONTINUE_LIMIT {
                return Ok((d, false));
            }
            let cp = self.index.checkpoint_before(pos)?;
            if cp.uoff <= d.position() {
                return Ok((d, false));
            }
            self.park(d);
            return Ok((self.resume(&cp)?, true));
        }
        let cp = self.index.checkpoint_before(pos)?;
        Ok((self.resume(&cp)?, true))
    }

    /// A new decoder at a checkpoint.
    fn resume(&self, cp: &Checkpoint) -> Result<StreamDecoder, ArchiveError> {
        self.resumes.fetch_add(1, Ordering::Relaxed);
        StreamDecoder::resume(self.blob.as_ref(), cp)
    }

    /// Keeps a decoder for later reads (dropping the least recently parked beyond the limit).
    fn park(&self, d: StreamDecoder) {
        if d.is_done() {
            return;
        }
        let mut idle = self.decoders.lock();
        idle.push(d);
        if idle.len() > MAX_IDLE_DECODERS {
            idle.remove(0);
        }
    }
}

/// Copies the part of `span` from `*pos` up to `end` into `out` and advances `*pos`.
fn copy_span(span: &Span, pos: &mut u64, end: u64, out: &mut Vec<u8>) {
    let from = (*pos - span.start) as usize;
    let to = (end.min(span.end()) - span.start) as usize;
    out.extend_from_slice(&span.data[from..to]);
    *pos = span.start + to as u64;
}
