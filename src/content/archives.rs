//! Archive assets made ready to browse: the archive blob local and verified, its seek index
//! built (in the same pass as the download when this process downloads it) and saved under the
//! archive's digest, and an [`OpenArchive`] (index + reader) kept for the mount's life.
//!
//! Concurrent first lookups of one archive share one download and one index build (single
//! flight). An index is built once per content: a second name, a remount or a restart with the
//! same digest finds it in SQLite. It never speaks HTTP ([`Content`] drives the fetcher) and
//! never parses tar (the `archive` module). An archive with a pinned index is opened from the
//! index instead, and read span by span (`spans`).
//!
//! An open archive also answers for its decoded members: a member read whole is kept in the
//! store's decoded cache ([`crate::store::DecodedWriter`]) and later opens read that blob.

mod spans;

pub use spans::ArchiveSpans;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Content, ContentError, SingleFlight};
use crate::archive::{
    ArchiveError, ArchiveIndex, ArchiveReader, IndexBuilder, MemberId, RegionStore, RegionWriter,
    SpanCache,
};
use crate::digest::Digest;
use crate::source::Source;
use crate::store::{BlobRead, ByteObserver, DecodedWriter, MemberKey, RegionKey, Store};

/// An archive whose index and blob are open.
pub struct OpenArchive {
    /// The archive's digest.
    pub digest: Digest,
    /// Where it came from (for `user.lazycas.source`).
    pub source: String,
    /// Its size in bytes.
    pub size: u64,
    /// The member table.
    pub index: Arc<ArchiveIndex>,
    /// The member read path.
    pub reader: ArchiveReader,
    /// The spans still to fetch, for an archive opened from its published index.
    pub spans: Option<spans::ArchiveSpans>,
    /// Where decoded members are kept.
    store: Arc<Store>,
    /// Members with a decoded copy recorded, so opening any other member asks SQLite nothing.
    kept: Mutex<HashSet<MemberId>>,
}

impl OpenArchive {
    /// Up to `len` bytes of regular file `id` from `offset`; an archive read span by span
    /// first fetches the spans the read decodes, in one batch.
    pub fn read(&self, id: MemberId, offset: u64, len: u32) -> Result<Vec<u8>, ArchiveError> {
        if let Some(spans) = &self.spans {
            spans.fetch_for_read(&self.index, id, offset, len)?;
        }
        self.reader.read(id, offset, len)
    }

    /// Bytes of the archive held locally (all of them unless it is read span by span).
    pub fn resident(&self) -> u64 {
        self.spans.as_ref().map_or(self.size, |s| s.resident())
    }

    /// The decoded copy of member `id`, open, if the store holds one. A store error is logged
    /// and answered as "none": the member is then decoded from the archive again.
    pub fn decoded_member(&self, id: MemberId) -> Option<Arc<dyn BlobRead>> {
        if !self.kept.lock().contains(&id) {
            return None;
        }
        let key = self.member_key(id);
        let opened = self.store.decoded_member(&key).and_then(|held| match held {
            Some(info) => self.store.open_blob(&info.digest).map(Some),
            None => Ok(None),
        });
        match opened {
            Ok(blob) => blob.map(|b| {
                self.store.stats().hit();
                Arc::new(b) as Arc<dyn BlobRead>
            }),
            Err(e) => {
                tracing::warn!("decoded copy of {id} of {}: {e}", self.source);
                None
            }
        }
    }

    /// A writer keeping member `id` (`size` bytes) decoded, unless one is already at work (or
    /// the store cannot make a temp file: logged, and the member is simply not kept).
    pub fn keep_decoded(&self, id: MemberId, size: u64) -> Option<DecodedWriter> {
        match self.store.decoded_writer(self.member_key(id), size) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("keeping {id} of {} decoded: {e}", self.source);
                None
            }
        }
    }

    /// Records that member `id` now has a decoded copy (its writer committed).
    pub fn note_kept(&self, id: MemberId) {
        self.kept.lock().insert(id);
    }

    fn member_key(&self, id: MemberId) -> MemberKey {
        MemberKey {
            archive: self.digest,
            member: id.0,
        }
    }
}

/// Open archives of one process.
pub struct Archives {
    store: Arc<Store>,
    cache: Arc<SpanCache>,
    open: Mutex<HashMap<Digest, Arc<OpenArchive>>>,
    flights: SingleFlight<String, Result<Arc<OpenArchive>, Arc<ContentError>>>,
}

impl Archives {
    /// The members of archive `digest` that have a decoded copy in the store.
    fn kept_members(&self, digest: &Digest) -> Result<HashSet<MemberId>, ContentError> {
        Ok(self
            .store
            .decoded_members_of(digest)?
            .into_iter()
            .map(MemberId)
            .collect())
    }

    /// Prepares the archive tables and registers index removal with blob eviction.
    pub fn new(store: Arc<Store>, cache_bytes: u64) -> Result<Archives, ContentError> {
        let conn = store.connect_db()?;
        ArchiveIndex::init_schema(&conn).map_err(|source| ContentError::Archive {
            label: "archive index tables".into(),
            source,
        })?;
        store.on_forget(Box::new(|conn, d| {
            ArchiveIndex::delete(conn, d)
                .map(|_| ())
                .map_err(|e| Box::new(e) as crate::store::HookError)
        }));
        // The first read after a start should not wait for the inflate code to be paged in.
        if let Err(e) = crate::archive::warm_up() {
            tracing::warn!("archive read path warm-up: {e}");
        }
        Ok(Archives {
            store,
            cache: Arc::new(SpanCache::new(cache_bytes)),
            open: Mutex::new(HashMap::new()),
            flights: SingleFlight::default(),
        })
    }

    /// Releases decoded spans no reader used for `idle`; returns the bytes released.
    pub fn release_idle_spans(&self, idle: std::time::Duration) -> u64 {
        self.cache.release_idle(idle)
    }

    /// The archive if it is already open (never fetches).
    pub fn get(&self, d: &Digest) -> Option<Arc<OpenArchive>> {
        self.open.lock().get(d).cloned()
    }

    /// Opens the archive `src` names: downloads (through `content`) and indexes it if
    /// needed, once however many callers ask at the same time.
    pub async fn open(
        &self,
        content: &Content,
        src: &Source,
    ) -> Result<Arc<OpenArchive>, Arc<ContentError>> {
        if let Some(a) = src.expected.and_then(|d| self.get(&d)) {
            return Ok(a);
        }
        self.flights
            .run(src.flight_key(), async {
                self.open_uncached(content, src).await.map_err(Arc::new)
            })
            .await
    }

    async fn open_uncached(
        &self,
        content: &Content,
        src: &Source,
    ) -> Result<Arc<OpenArchive>, ContentError> {
        if let Some(pin) = &src.index {
            if content.local(src)?.is_none() {
                return self.open_from_index(content, src, pin).await;
            }
        }
        let label = src.label.clone();
        // Warnings about single entries ("skipping a member named ../x") name the archive.
        let span = tracing::warn_span!("archive", name = %label);
        let observer = IndexingObserver {
            slot: Arc::default(),
            span: span.clone(),
        };
        let built = observer.slot.clone();
        let info = content
            .ensure_blob(src, Some(Box::new(observer)), &|_| {})
            .await
            .map_err(ContentError::Shared)?;
        if let Some(a) = self.get(&info.digest) {
            return Ok(a);
        }
        let store = self.store.clone();
        let label2 = label.clone();
        let blob: Arc<dyn BlobRead> = Arc::new(self.store.open_blob(&info.digest)?);
        let blob2 = blob.clone();
        let index = tokio::task::spawn_blocking(move || -> Result<ArchiveIndex, ContentError> {
            let _in_archive = span.enter();
            let err = |source| ContentError::Archive {
                label: label2.clone(),
                source,
            };
            let conn = store.connect_db()?;
            if !ArchiveIndex::exists(&conn, &info.digest).map_err(err)? {
                let started = std::time::Instant::now();
                let built = match built.lock().take() {
                    Some(b) if b.seen == info.size && b.error.is_none() => b.builder.finish(),
                    Some(IndexState { error: Some(e), .. }) => Err(e),
                    // Someone else downloaded it, or it was already local: one pass over the file.
                    _ => index_blob(blob2.as_ref()),
                }
                .map_err(err)?;
                ArchiveIndex::save(&conn, &info.digest, built).map_err(err)?;
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "indexed {}",
                    info.digest.short()
                );
            }
            ArchiveIndex::open(&store.db_path(), &info.digest).map_err(err)
        })
        .await
        .map_err(|e| ContentError::Task {
            label: label.clone(),
            message: format!("indexing task failed: {e}"),
        })??;
        let index = Arc::new(index);
        let kept = self.kept_members(&info.digest)?;
        let opened = Arc::new(OpenArchive {
            digest: info.digest,
            source: src.location.describe(),
            size: info.size,
            reader: ArchiveReader::new(index.clone(), blob, self.cache.clone())
                .with_regions(Arc::new(StoreRegions(self.store.clone()))),
            index,
            spans: None,
            store: self.store.clone(),
            kept: Mutex::new(kept),
        });
        Ok(self
            .open
            .lock()
            .entry(info.digest)
            .or_insert(opened)
            .clone())
    }
}

/// The store's decoded cache as the archive reader's region store.
struct StoreRegions(Arc<Store>);

impl RegionStore for StoreRegions {
    fn kept_regions(&self, archive: &Digest) -> Vec<(u64, Digest)> {
        self.0.decoded_regions_of(archive).unwrap_or_else(|e| {
            tracing::warn!("decoded regions of {}: {e}", archive.short());
            Vec::new()
        })
    }

    fn open(&self, copy: &Digest) -> Option<Arc<dyn BlobRead>> {
        match self.0.open_blob(copy) {
            Ok(c) => Some(Arc::new(c)),
            Err(crate::store::StoreError::Missing(_)) => None,
            Err(e) => {
                tracing::warn!("decoded region {}: {e}", copy.short());
                None
            }
        }
    }

    fn writer(&self, archive: &Digest, start: u64, len: u64) -> Option<Box<dyn RegionWriter>> {
        let key = RegionKey {
            archive: *archive,
            start,
        };
        match self.0.decoded_region_writer(key, len) {
            Ok(w) => {
                w.map(|writer| Box::new(StoreRegionWriter { key, writer }) as Box<dyn RegionWriter>)
            }
            Err(e) => {
                tracing::warn!(
                    "keeping region at {start} of {} decoded: {e}",
                    archive.short()
                );
                None
            }
        }
    }
}

/// A region's copy on its way into the store's decoded cache.
struct StoreRegionWriter {
    key: RegionKey,
    writer: DecodedWriter,
}

impl RegionWriter for StoreRegionWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.writer.write_at(offset, data).map(|_| ())
    }

    fn reader(&self) -> std::io::Result<std::fs::File> {
        self.writer.reader()
    }

    fn commit(self: Box<Self>) -> Result<Digest, String> {
        let key = self.key;
        let info = self.writer.commit().map_err(|e| e.to_string())?;
        tracing::info!(
            "kept region at {} of {} decoded as {} ({} bytes)",
            key.start,
            key.archive.short(),
            info.digest.hex(),
            info.size
        );
        Ok(info.digest)
    }
}

/// Builds an index by reading a local blob once.
fn index_blob(blob: &dyn BlobRead) -> Result<crate::archive::BuiltIndex, ArchiveError> {
    let mut builder = IndexBuilder::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = blob
            .read_at(offset, &mut buf)
            .map_err(|source| ArchiveError::Io { offset, source })?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        builder.feed(&buf[..n])?;
    }
    builder.finish()
}
struct IndexState {
    builder: IndexBuilder,
    seen: u64,
    error: Option<ArchiveError>,
}

/// Feeds the download into an [`IndexBuilder`] as it arrives; the result waits in `slot`.
struct IndexingObserver {
    slot: Arc<Mutex<Option<IndexState>>>,
    /// The archive's span, entered while its bytes are parsed.
    span: tracing::Span,
}

impl ByteObserver for IndexingObserver {
    fn restart(&mut self) {
        *self.slot.lock() = Some(IndexState {
            builder: IndexBuilder::new(),
            seen: 0,
            error: None,
        });
    }

    fn observe(&mut self, data: &[u8]) {
        let _in_archive = self.span.enter();
        let mut slot = self.slot.lock();
        let Some(state) = slot.as_mut() else {
            return;
        };
        state.seen += data.len() as u64;
        if state.error.is_none() {
            if let Err(e) = state.builder.feed(data) {
                state.error = Some(e);
            }
        }
    }
}
