//! Decoded regions: the tar stream between two checkpoints of a gzip archive, decoded once and
//! kept on disk (the store's decoded cache), so the small members in it are read without
//! decoding.
//!
//! Checkpoints are few (one per few MiB: their windows are most of the index), so a fresh read
//! of a small member decodes from the checkpoint before it, up to a few MiB. Its neighbours
//! would pay the same again. Instead, the first random read that decodes from a region's
//! checkpoint *claims* the region: it decodes for itself as far as it needs (on the FUSE thread,
//! nothing in its way) and then hands its decoder and what it decoded to a *fill*, a thread
//! that writes those bytes and decodes the rest of the region into a decoded copy in the store
//! ([`RegionStore::writer`]). A sequential reader (`tar`) claims nothing: decoders and
//! decode-ahead serve it, and copies of all it reads would only be written. Reads of the region while the fill runs wait until it has passed
//! their last byte and read the copy being written; every later one reads the committed copy,
//! from the kernel's page cache. The daemon holds none of it in memory: the kernel gives the
//! pages back under pressure, and the copies are counted in the quota and evicted
//! least-recently-used like any blob (a read of an evicted region claims it again).
//!
//! Large members are not read through regions (they are kept decoded whole, as members), and
//! neither are archives read before they are all here (a fill would fetch what nobody asked for).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

use super::decoder::StreamDecoder;
use super::span_cache::Span;
use super::{ArchiveError, ArchiveIndex};
use crate::digest::Digest;
use crate::store::BlobRead;

/// Members smaller than this are read through regions.
pub(crate) const REGION_MEMBER_MAX: u64 = 1 << 20;
/// Regions longer than this are not filled (a gzip stream with no block boundary for that
/// long: the read decodes for itself).
const REGION_MAX: u64 = 64 << 20;
/// Compressed bytes read ahead for a claiming read (the first few hundred KiB of output).
const PREFETCH: u64 = 256 << 10;
/// Fills running at once per archive; a read that finds no free slot decodes for itself.
const MAX_FILLS: usize = 3;

/// Where decoded regions are kept (the store's decoded cache, behind `content`).
pub trait RegionStore: Send + Sync {
    /// The kept copies of regions of `archive`: (stream offset, the copy's digest).
    fn kept_regions(&self, archive: &Digest) -> Vec<(u64, Digest)>;

    /// Opens kept copy `copy` (`None`: evicted since). Held only for one read, so eviction
    /// can take it between reads.
    fn open(&self, copy: &Digest) -> Option<Arc<dyn BlobRead>>;

    /// A writer for the `len` bytes of the region of `archive` at stream offset `start`, unless
    /// one is at work already (or the store cannot make one: the implementation logs why).
    fn writer(&self, archive: &Digest, start: u64, len: u64) -> Option<Box<dyn RegionWriter>>;
}

/// A region's decoded bytes on their way into the store.
pub trait RegionWriter: Send {
    /// Writes `data` at `offset` (from the region's start).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// A handle reading back what was written; it stays valid after [`RegionWriter::commit`].
    fn reader(&self) -> io::Result<File>;

    /// Keeps the bytes (all `len` of them were written); returns the copy's digest.
    fn commit(self: Box<Self>) -> Result<Digest, String>;
}

/// What this process knows of one region.
enum Region {
    /// The store has this copy (or had it: eviction is noticed when it fails to open).
    Kept(Digest),
    /// Being decoded by a fill.
    Filling(Arc<Fill>),
    /// No copy, none being made.
    Absent,
    /// A fill failed: reads decode for themselves from now on.
    Failed,
}

/// A fill in progress, shared by its thread and the reads waiting on it.
struct Fill {
    /// Stream offsets of the region.
    start: u64,
    /// Reads what the fill wrote (set by the fill before its first progress).
    file: OnceLock<File>,
    progress: Mutex<Progress>,
    moved: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Stream offset decoded and written up to.
    upto: u64,
    /// The fill stopped before the region's end.
    failed: bool,
}

/// The decoded regions of one archive.
pub(crate) struct Regions {
    store: Arc<dyn RegionStore>,
    archive: Digest,
    /// Checkpoint positions (stream offset: a region's start; compressed offset), loaded at
    /// open (or on first use, if that failed).
    starts: OnceLock<Vec<(u64, u64)>>,
    regions: Arc<Mutex<HashMap<u64, Region>>>,
    fills: Arc<AtomicUsize>,
}

impl Regions {
    /// Regions of the archive `index` describes, kept in `store`. What the first read needs is
    /// loaded now (the region bounds, the copies kept), so that read asks SQLite nothing more
    /// than where its checkpoint is; a region not kept now is absent until this process fills
    /// it.
    pub(crate) fn new(store: Arc<dyn RegionStore>, index: &ArchiveIndex) -> Regions {
        let archive = *index.digest();
        let starts = OnceLock::new();
        match index.checkpoint_positions() {
            Ok(s) => {
                let _ = starts.set(s);
            }
            Err(e) => tracing::warn!("region bounds of {}: {e}", archive.short()),
        }
        let kept = store
            .kept_regions(&archive)
            .into_iter()
            .map(|(start, copy)| (start, Region::Kept(copy)))
            .collect();
        Regions {
            store,
            archive,
            starts,
            regions: Arc::new(Mutex::new(kept)),
            fills: Arc::default(),
        }
    }

    /// The region holding stream offset `pos`: `[start, end)`, and the compressed offset of
    /// its checkpoint.
    fn bounds(&self, index: &ArchiveIndex, pos: u64) -> Result<(u64, u64, u64), ArchiveError> {
        let starts = match self.starts.get() {
            Some(s) => s,
            None => {
                let loaded = index.checkpoint_positions()?;
                self.starts.get_or_init(|| loaded)
            }
        };
        let at = starts.partition_point(|&(s, _)| s <= pos);
        let (start, cbyte) = at
            .checked_sub(1)
            .map(|i| starts[i])
            .ok_or_else(|| index.corrupt(format!("no checkpoint at or before {pos}")))?;
        let end = starts.get(at).map_or(index.stream_len(), |&(s, _)| s);
        Ok((start, end, cbyte))
    }

    /// Appends `[pos, end)` of the tar stream to `out`, or as much of it as the region holding
    /// `pos` has, from the region's kept copy or its fill (waiting for the fill to pass the
    /// bytes): [`RegionRead::Served`]. When the region has neither and `may_fill`, the caller
    /// gets it claimed ([`RegionRead::Claimed`]): it decodes from the region's start and hands
    /// over to a fill ([`RegionClaim::hand_over`]). Else [`RegionRead::Decode`]: the caller
    /// decodes for itself.
    pub(crate) fn read(
        &self,
        index: &Arc<ArchiveIndex>,
        blob: &Arc<dyn BlobRead>,
        pos: u64,
        end: u64,
        may_fill: bool,
        out: &mut Vec<u8>,
    ) -> Result<RegionRead, ArchiveError> {
        let (start, region_end, cbyte) = self.bounds(index, pos)?;
        let upto = end.min(region_end);
        if let Some(copy) = self.kept(start) {
            return self.copy_from(copy.as_ref(), start, pos, upto, out);
        }
        let fill = {
            let mut regions = self.regions.lock();
            match regions.get(&start) {
                Some(Region::Filling(f)) => f.clone(),
                Some(Region::Failed) => return Ok(RegionRead::Decode),
                Some(Region::Kept(_)) | Some(Region::Absent) | None => {
                    if !may_fill || region_end - start > REGION_MAX {
                        return Ok(RegionRead::Decode);
                    }
                    return Ok(match self.claim(index, blob, start, region_end) {
                        Some((claim, fill)) => {
                            // The claiming read decodes from the checkpoint: its compressed
                            // bytes are asked of the disk now, while the checkpoint's window
                            // is read from SQLite.
                            blob.prefetch(cbyte.saturating_sub(1), PREFETCH);
                            regions.insert(start, Region::Filling(fill));
                            RegionRead::Claimed(Box::new(claim))
                        }
                        None => RegionRead::Decode,
                    });
                }
            }
        };
        if !fill.wait_for(upto) {
            return Ok(RegionRead::Decode);
        }
        let file = fill
            .file
            .get()
            .ok_or_else(|| index.corrupt(format!("region {start}: progress without a copy")))?;
        let mut buf = vec![0u8; (upto - pos) as usize];
        file.read_exact_at(&mut buf, pos - fill.start)
            .map_err(|source| ArchiveError::Region { start, source })?;
        out.extend_from_slice(&buf);
        Ok(RegionRead::Served)
    }

    /// The copy of region `start`, opened, if one is kept. A copy evicted since it was last
    /// read makes the region absent.
    fn kept(&self, start: u64) -> Option<Arc<dyn BlobRead>> {
        let digest = match self.regions.lock().get(&start) {
            Some(Region::Kept(d)) => *d,
            _ => return None,
        };
        match self.store.open(&digest) {
            Some(copy) => Some(copy),
            None => {
                let mut regions = self.regions.lock();
                if matches!(regions.get(&start), Some(Region::Kept(d)) if *d == digest) {
                    regions.insert(start, Region::Absent);
                }
                None
            }
        }
    }

    /// Copies `[pos, upto)` from a kept copy of the region starting at `start`.
    fn copy_from(
        &self,
        copy: &dyn BlobRead,
        start: u64,
        pos: u64,
        upto: u64,
        out: &mut Vec<u8>,
    ) -> Result<RegionRead, ArchiveError> {
        let at = out.len();
        out.resize(at + (upto - pos) as usize, 0);
        match copy.read_exact_at(pos - start, &mut out[at..]) {
            Ok(()) => Ok(RegionRead::Served),
            Err(e) => {
                // A copy shorter than its region, or unreadable: forget it, decode instead.
                tracing::warn!("decoded region at {start} of {}: {e}", self.archive.short());
                out.truncate(at);
                self.regions.lock().insert(start, Region::Failed);
                Ok(RegionRead::Decode)
            }
        }
    }

    /// Claims region `[start, end)` for a fill, if a fill slot is free (the fill asks the store
    /// for a writer, after the claiming read was answered).
    fn claim(
        &self,
        index: &Arc<ArchiveIndex>,
        blob: &Arc<dyn BlobRead>,
        start: u64,
        end: u64,
    ) -> Option<(RegionClaim, Arc<Fill>)> {
        if self.fills.fetch_add(1, Ordering::AcqRel) >= MAX_FILLS {
            self.fills.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let slot = FillSlot(self.fills.clone());
        let fill = Arc::new(Fill {
            start,
            file: OnceLock::new(),
            progress: Mutex::new(Progress {
                upto: start,
                failed: false,
            }),
            moved: Condvar::new(),
        });
        let claim = RegionClaim {
            start,
            end,
            job: Some(FillJob {
                _ends: EndsFill(fill.clone()),
                fill: fill.clone(),
                end,
                index: index.clone(),
                blob: blob.clone(),
                store: self.store.clone(),
                regions: self.regions.clone(),
                archive: self.archive,
                decoder: None,
                spans: Vec::new(),
                _slot: slot,
            }),
        };
        Some((claim, fill))
    }
}

/// What [`Regions::read`] did.
pub(crate) enum RegionRead {
    /// The bytes were appended.
    Served,
    /// The caller decodes for itself.
    Decode,
    /// The caller decodes from the region's start and hands over.
    Claimed(Box<RegionClaim>),
}

/// A region claimed by a read: it decodes from the region's start (the checkpoint at
/// [`RegionClaim::start`]) and hands its decoder and spans to the fill. Dropped without being
/// handed over, the region is given up (reads waiting on it decode for themselves) and may be
/// claimed again.
pub(crate) struct RegionClaim {
    /// Always `Some` until handed over.
    job: Option<FillJob>,
    start: u64,
    end: u64,
}

impl RegionClaim {
    /// Stream offset of the region's start.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Stream offset of the region's end.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Hands `decoder` (started at the region's start) and the spans it produced, in order,
    /// to a fill thread that writes them and decodes the rest of the region.
    pub(crate) fn hand_over(mut self, decoder: StreamDecoder, spans: Vec<Arc<Span>>) {
        let start = self.start;
        let Some(mut job) = self.job.take() else {
            return;
        };
        job.decoder = Some(decoder);
        job.spans = spans;
        let archive = job.archive;
        let spawned = std::thread::Builder::new()
            .name("region-fill".into())
            .spawn(move || job.run(&archive));
        if let Err(e) = spawned {
            tracing::warn!("decoded region at {start}: no thread: {e}");
        }
    }
}

/// One running fill's claim on a slot, released when the fill thread ends.
struct FillSlot(Arc<AtomicUsize>);

impl Drop for FillSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Fill {
    /// Waits until the fill has passed `upto` (true) or stopped short of it (false).
    fn wait_for(&self, upto: u64) -> bool {
        let mut p = self.progress.lock();
        while p.upto < upto && !p.failed {
            self.moved.wait(&mut p);
        }
        p.upto >= upto
    }

    fn advance(&self, upto: u64) {
        self.progress.lock().upto = upto;
        self.moved.notify_all();
    }

    fn fail(&self) {
        self.progress.lock().failed = true;
        self.moved.notify_all();
    }
}

/// Tells the reads waiting on a fill that it will not go further, however its thread ends
/// (after a complete decode this changes nothing: they wait only for bytes before its end).
struct EndsFill(Arc<Fill>);

impl Drop for EndsFill {
    fn drop(&mut self) {
        self.0.fail();
    }
}

/// What a fill thread needs.
struct FillJob {
    _ends: EndsFill,
    fill: Arc<Fill>,
    end: u64,
    index: Arc<ArchiveIndex>,
    blob: Arc<dyn BlobRead>,
    store: Arc<dyn RegionStore>,
    /// Where the fill's outcome is recorded.
    regions: Arc<Mutex<HashMap<u64, Region>>>,
    archive: Digest,
    /// The claiming read's decoder and the spans it produced from the region's start.
    decoder: Option<StreamDecoder>,
    spans: Vec<Arc<Span>>,
    _slot: FillSlot,
}

impl Drop for RegionClaim {
    fn drop(&mut self) {
        // Not handed over: give the region up so a later read can claim it (the job's
        // `EndsFill` tells the reads waiting on it to decode for themselves).
        if let Some(job) = self.job.take() {
            let mut regions = job.regions.lock();
            let ours = matches!(
                regions.get(&self.start),
                Some(Region::Filling(f)) if Arc::ptr_eq(f, &job.fill)
            );
            if ours {
                regions.insert(self.start, Region::Absent);
            }
        }
    }
}

impl FillJob {
    fn run(mut self, archive: &Digest) {
        let start = self.fill.start;
        let Some(mut writer) = self.store.writer(archive, start, self.end - start) else {
            self.regions.lock().insert(start, Region::Failed);
            return;
        };
        let decoded = writer
            .reader()
            .map_err(|source| ArchiveError::Region { start, source })
            .and_then(|file| {
                let _ = self.fill.file.set(file);
                self.decode(writer.as_mut())
            });
        // Waiting reads are answered (or told to decode for themselves) before the commit.
        match &decoded {
            Ok(()) => {}
            Err(e) => {
                self.fill.fail();
                tracing::warn!("decoding region at {start} of {}: {e}", archive.short());
            }
        }
        let next = match decoded.map(|()| writer.commit()) {
            Ok(Ok(copy)) => Region::Kept(copy),
            Ok(Err(e)) => {
                tracing::warn!("keeping region at {start} of {}: {e}", archive.short());
                Region::Failed
            }
            Err(_) => Region::Failed,
        };
        self.regions.lock().insert(start, next);
    }

    /// Writes the claiming read's spans, then decodes the rest of the region with its decoder
    /// into the writer, telling waiting reads.
    fn decode(&mut self, writer: &mut dyn RegionWriter) -> Result<(), ArchiveError> {
        let start = self.fill.start;
        let mut dec = match self.decoder.take() {
            Some(d) => d,
            None => {
                return Err(self
                    .index
                    .corrupt(format!("region {start} filled without a decoder")))
            }
        };
        let mut at = start;
        for span in std::mem::take(&mut self.spans) {
            if span.start != at {
                return Err(self.index.corrupt(format!(
                    "region {start}: span at {} where {at} was expected",
                    span.start
                )));
            }
            at = self.keep(writer, &span)?;
        }
        if dec.position() != at {
            return Err(self.index.corrupt(format!(
                "region {start}: decoder at {} after spans ending at {at}",
                dec.position()
            )));
        }
        while dec.position() < self.end {
            let span = dec
                .next_span_until(self.blob.as_ref(), self.end)?
                .ok_or_else(|| {
                    self.index.corrupt(format!(
                        "tar stream ends inside region {start}..{}",
                        self.end
                    ))
                })?;
            self.keep(writer, &span)?;
        }
        Ok(())
    }

    /// Writes the part of `span` inside the region and tells waiting reads; returns the stream
    /// offset written up to.
    fn keep(&self, writer: &mut dyn RegionWriter, span: &Span) -> Result<u64, ArchiveError> {
        let start = self.fill.start;
        let take = (span.data.len() as u64).min(self.end - span.start) as usize;
        writer
            .write_at(span.start - start, &span.data[..take])
            .map_err(|source| ArchiveError::Region { start, source })?;
        let upto = span.start + take as u64;
        self.fill.advance(upto);
        Ok(upto)
    }
}
