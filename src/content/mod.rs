//! Making content local: the one place that turns a [`Source`] into verified bytes on disk.
//!
//! [`Content`] sits between the namespaces (which know names) and the two lower layers: it
//! asks the [`Store`] whether the bytes are held, and otherwise drives the [`Fetcher`] into a
//! store temp file, verifies, commits, and records what an unpinned location resolved to.
//! Concurrent requests for the same content share one piece of work ([`SingleFlight`]): blob
//! downloads here, archive opens in [`archives`]. Readers get a [`BlobRead`], never a path.
//! Container images: [`registry`] (manifests, configs, tokens, tag resolution), [`images`]
//! (layers opened and merged) and [`image_records`] (which blobs make up each image).
//!
//! Not here: HTTP (`fetch`), on-disk layout and eviction (`store`), formats (`archive`),
//! inodes and errno (`fs`).

pub mod archives;
mod chunked;
mod flight;
pub mod image_records;
pub mod images;
pub mod registry;
mod weak;

use std::sync::Arc;

use parking_lot::RwLock;

use crate::archive::ArchiveError;
use crate::chunk::ChunkIndexError;
use crate::config::Publishers;
use crate::digest::Digest;
use crate::fetch::{BlobRequest, FetchError, Fetcher};
use crate::publish::{self, PublishError, Resolved};
use crate::source::{Location, Source, WeakPin};
use crate::store::{BlobInfo, BlobRead, ByteObserver, Store, StoreError, TempSink};
use weak::{Tee, WeakHash};

pub use archives::{Archives, OpenArchive};
pub use chunked::{resident_in_store, Chunked, PartialBlob};
pub use flight::SingleFlight;
pub use images::{Images, OpenImage};
pub use registry::{Readers, RegistryError, RegistrySettings, ResolvedImage};

/// Why content could not be made local or opened. `Display` names the asset and the place.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The local store failed (disk, database).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No source delivered the right bytes.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A library or shub reference could not be resolved.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The whole download did not match the publisher's md5 or sha1.
    #[error("{algorithm} mismatch for {label} from {url}: expected {expected}, got {actual}")]
    WeakMismatch {
        /// Asset name.
        label: String,
        /// Where the bytes came from.
        url: String,
        /// `md5` or `sha1`.
        algorithm: &'static str,
        /// The publisher's checksum.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The publisher's registry states another sha256 than the one pinned.
    #[error("{label}: pinned {pinned}, but the publisher now says {stated}")]
    PinConflict {
        /// Asset name.
        label: String,
        /// The pinned digest.
        pinned: Digest,
        /// What the registry says.
        stated: Digest,
    },
    /// The archive is malformed, or its index could not be stored.
    #[error("{label}: {source}")]
    Archive {
        /// Asset name or digest.
        label: String,
        /// What the format layer said.
        source: ArchiveError,
    },
    /// The chunk index could not be used (pin mismatch, malformed).
    #[error("{label}: chunk index: {source}")]
    Index {
        /// Asset name or digest.
        label: String,
        /// What the index parser said.
        source: ChunkIndexError,
    },
    /// The chunk index describes other content than the asset pins.
    #[error("{label}: the chunk index is for {indexed}, the asset pins {expected}")]
    IndexForOther {
        /// Asset name or digest.
        label: String,
        /// The asset's pinned digest.
        expected: Digest,
        /// The whole-file digest the index carries.
        indexed: Digest,
    },
    /// A registry refused or answered something unusable.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// The error of work another caller started (single flight), shared with every waiter.
    #[error(transparent)]
    Shared(Arc<ContentError>),
    /// The background task doing the work died.
    #[error("{label}: {message}")]
    Task {
        /// Asset name or digest.
        label: String,
        /// What happened to the task.
        message: String,
    },
}

impl From<RegistryError> for ContentError {
    fn from(e: RegistryError) -> ContentError {
        ContentError::Registry(Box::new(e))
    }
}

impl ContentError {
    /// True when the bytes arrived but hashed wrong (as opposed to unreachable or local).
    pub fn is_mismatch(&self) -> bool {
        match self {
            ContentError::Fetch(e) => e.is_mismatch(),
            ContentError::Shared(e) => e.is_mismatch(),
            ContentError::WeakMismatch { .. } | ContentError::PinConflict { .. } => true,
            ContentError::Registry(e) => matches!(**e, RegistryError::DiffIdMismatch { .. }),
            _ => false,
        }
    }

    /// True when the image or tag asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            ContentError::Registry(e) => e.is_not_found(),
            ContentError::Shared(e) => e.is_not_found(),
            _ => false,
        }
    }
}

/// Reports bytes downloaded so far (progress bars).
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Content of one process: the store, the fetcher in force, and the work in flight.
pub struct Content {
    store: Arc<Store>,
    fetcher: RwLock<Arc<Fetcher>>,
    publishers: RwLock<Arc<Publishers>>,
    blobs: SingleFlight<String, Result<BlobInfo, Arc<ContentError>>>,
    archives: Archives,
    chunked: Arc<Chunked>,
    registries: registry::Registries,
    images: Images,
}

impl Content {
    /// Content over `store`, fetched with `fetcher`; `archive_cache` bounds decoded archive
    /// spans kept in memory.
    pub fn new(
        store: Arc<Store>,
        fetcher: Fetcher,
        archive_cache: u64,
    ) -> Result<Content, ContentError> {
        let archives = Archives::new(store.clone(), archive_cache)?;
        let registries = registry::Registries::new(&store)?;
        Ok(Content {
            chunked: Arc::new(Chunked::new(store.clone())),
            store,
            fetcher: RwLock::new(Arc::new(fetcher)),
            publishers: RwLock::new(Arc::new(Publishers::default())),
            blobs: SingleFlight::default(),
            archives,
            registries,
            images: Images::default(),
        })
    }

    /// The local store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Replaces the fetcher (SIGHUP: new proxies or deadlines); downloads under way finish
    /// with the old one.
    pub fn set_fetcher(&self, fetcher: Fetcher) {
        *self.fetcher.write() = Arc::new(fetcher);
    }

    /// Sets the config's global `fill` for range-lazy blobs (start, SIGHUP).
    pub fn set_fill_default(&self, fill: crate::source::Fill) {
        self.chunked.set_fill_default(fill);
    }

    /// Replaces where `library://` and `shub://` references are asked (start, SIGHUP).
    pub fn set_publishers(&self, publishers: Publishers) {
        *self.publishers.write() = Arc::new(publishers);
    }

    /// One small document (a directory listing, a sidecar) through the fetcher in force.
    pub async fn get_document(
        &self,
        req: &crate::fetch::DocumentRequest<'_>,
    ) -> Result<crate::fetch::Document, FetchError> {
        let fetcher = self.fetcher.read().clone();
        fetcher.get_document(req).await
    }

    /// Open archives.
    pub fn archives(&self) -> &Archives {
        &self.archives
    }

    /// The complete blob `d`, if the store holds it.
    pub fn held(&self, d: &Digest) -> Result<Option<BlobInfo>, ContentError> {
        Ok(self.store.blob(d)?)
    }

    /// The local blob for `src`: by its pinned digest, or by what its location resolved to
    /// before. Never fetches.
    pub fn local(&self, src: &Source) -> Result<Option<BlobInfo>, ContentError> {
        match self.resolved_digest(src)? {
            Some(d) => self.held(&d),
            None => Ok(None),
        }
    }

    /// [`Content::local`] for a reader about to use the bytes: a local blob counts as a hit.
    pub fn local_hit(&self, src: &Source) -> Result<Option<BlobInfo>, ContentError> {
        let held = self.local(src)?;
        if held.is_some() {
            self.store.stats().hit();
        }
        Ok(held)
    }

    /// The digest `src` has: pinned, or recorded when its location was first fetched.
    pub fn resolved_digest(&self, src: &Source) -> Result<Option<Digest>, ContentError> {
        if let Some(d) = src.expected {
            return Ok(Some(d));
        }
        let Some(reference) = src.reference_key() else {
            return Ok(None);
        };
        Ok(self.store.reference(&reference)?.map(|(d, _)| d))
    }

    /// The size of `src`'s content when known without fetching: held, recorded, or hinted.
    pub fn known_size(&self, src: &Source) -> Result<Option<u64>, ContentError> {
        if let Some(info) = self.local(src)? {
            return Ok(Some(info.size));
        }
        if src.expected.is_none() {
            if let Some(reference) = src.reference_key() {
                if let Some((_, Some(size))) = self.store.reference(&reference)? {
                    return Ok(Some(size));
                }
            }
        }
        if let Some(index) = self.chunked.loaded_index(src) {
            return Ok(Some(index.size()));
        }
        Ok(src.size_hint)
    }

    /// Bytes held of a partly present `src` (its chunks), with its size; `None` unless it has
    /// a pinned index loaded in this process or kept in the chunk store.
    pub fn chunked_resident(&self, src: &Source) -> Option<(u64, u64)> {
        self.chunked.resident(src)
    }

    /// Whether `src` can be opened chunk by chunk now (it has a pinned index, loaded).
    pub fn chunked_ready(&self, src: &Source) -> bool {
        self.chunked.loaded_index(src).is_some()
    }

    /// Loads `src`'s pinned chunk index (fetching it once) and prefetches the chunks an image
    /// decoder reads first (squashfs and SIF metadata). Does nothing for a source without one.
    pub async fn prepare_chunked(&self, src: &Source) -> Result<(), Arc<ContentError>> {
        let Some(pin) = &src.index else {
            return Ok(());
        };
        let fetcher = self.fetcher.read().clone();
        let index = self.chunked.ensure_index(src, pin, &fetcher).await?;
        let blob = self.chunked.open(src, index, fetcher).map_err(Arc::new)?;
        blob.prefetch().await;
        Ok(())
    }

    /// Opens `src` for chunk-by-chunk reading (after [`Content::prepare_chunked`]): reads fetch
    /// and verify the chunks they need.
    pub fn open_chunked(&self, src: &Source) -> Result<Arc<dyn BlobRead>, ContentError> {
        let index = self
            .chunked
            .loaded_index(src)
            .ok_or_else(|| ContentError::Task {
                label: src.label.clone(),
                message: "chunked read opened before its index was loaded".into(),
            })?;
        let fetcher = self.fetcher.read().clone();
        Ok(self.chunked.open(src, index, fetcher)?)
    }

    /// Opens the complete blob `d` for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<Arc<dyn BlobRead>, ContentError> {
        Ok(Arc::new(self.store.open_blob(d)?))
    }

    /// Makes the content of `src` local: returns at once when the store holds it, otherwise
    /// downloads it once however many callers ask at the same time. `observer` (the archive
    /// indexer) sees the bytes in order if this call is the one that downloads.
    pub async fn ensure_blob(
        &self,
        src: &Source,
        observer: Option<Box<dyn ByteObserver>>,
        progress: Progress<'_>,
    ) -> Result<BlobInfo, Arc<ContentError>> {
        if let Some(info) = self.local_hit(src).map_err(Arc::new)? {
            return Ok(info);
        }
        let mut observer = observer;
        self.blobs
            .run(src.flight_key(), async {
                // Someone may have finished the download between our check and the flight.
                if let Some(info) = self.local(src)? {
                    return Ok(info);
                }
                self.store.stats().miss();
                self.download(src, observer.take(), progress)
                    .await
                    .map_err(Arc::new)
            })
            .await
    }

    /// One download of `src` into the store, verified and committed. A library or shub
    /// reference is resolved first; a weak pin is checked on the whole download, and the
    /// sha256 it had is recorded and checked on every later download of the same source.
    async fn download(
        &self,
        src: &Source,
        observer: Option<Box<dyn ByteObserver>>,
        progress: Progress<'_>,
    ) -> Result<BlobInfo, ContentError> {
        let store = &self.store;
        let fetcher = self.fetcher.read().clone();
        let resolved = match &src.location {
            Location::Registry { .. } => {
                let (urls, headers) = self.blob_urls(src).await?;
                publish::Resolved {
                    urls,
                    headers,
                    sha256: None,
                    weak: None,
                    size: None,
                }
            }
            other => {
                let publishers = self.publishers.read().clone();
                publish::resolve(&fetcher, &publishers, other).await?
            }
        };
        let plan = self.plan(src, &resolved)?;
        store.enforce_limits(
            &store.limits(),
            src.size_hint.or(resolved.size).unwrap_or(0),
        )?;
        let mut request = BlobRequest {
            label: &src.label,
            urls: &resolved.urls,
            expected: plan.expected,
            headers: &resolved.headers,
        };
        let weak_hash = plan.weak.as_ref().map(WeakHash::for_pin);
        let observer = match (observer, &weak_hash) {
            (Some(o), Some(w)) => Some(Box::new(Tee(o, w.observer())) as Box<dyn ByteObserver>),
            (None, Some(w)) => Some(w.observer()),
            (o, None) => o,
        };
        let tmp = store.temp_file()?;
        let sink = TempSink::new(&tmp, observer).map_err(|e| temp_error(&tmp, e))?;
        let mut outcome = fetcher.fetch_blob(&request, Box::new(sink), progress).await;
        let renewed;
        if let (Err(FetchError::Status { status: 401, .. }), Some(repo)) =
            (&outcome, registry_repository(&src.location))
        {
            // The registry refused the token (expired mid-mount): ask how to authenticate
            // again and retry once. The indexer went with the first sink.
            tracing::info!(asset = %src.label, "registry refused the blob request; renewing its token");
            self.renew_authorization(repo).await?;
            renewed = self.registry_headers(repo).await?;
            request.headers = &renewed;
            let sink = TempSink::new(&tmp, None).map_err(|e| temp_error(&tmp, e))?;
            outcome = fetcher.fetch_blob(&request, Box::new(sink), progress).await;
        }
        if let Err(FetchError::Sink { source, .. }) = &outcome {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                // Disk full: make room once and start over; a second ENOSPC is final. The
                // observer went with the first sink, so an archive is indexed from the file.
                let used = store.used_bytes()?;
                tracing::warn!(asset = %src.label, "disk full while downloading; evicting and retrying once");
                store.evict_to(used / 2)?;
                let observer = weak_hash.as_ref().map(WeakHash::observer);
                let sink = TempSink::new(&tmp, observer).map_err(|e| temp_error(&tmp, e))?;
                outcome = fetcher.fetch_blob(&request, Box::new(sink), progress).await;
            }
        }
        let (fetched, sink) =
            outcome.inspect_err(|e| store.stats().fetch_failed(e.is_mismatch()))?;
        drop(sink);
        if let (Some(pin), Some(hash)) = (&plan.weak, &weak_hash) {
            check_weak(src, pin, &hash.hex(), fetched.url.as_str())
                .inspect_err(|_| store.stats().fetch_failed(true))?;
        }
        store.stats().fetched(&fetched);
        let info = BlobInfo {
            digest: fetched.digest,
            size: fetched.size,
        };
        store.commit(tmp, &info)?;
        if src.expected.is_none() {
            if let Some(reference) = src.reference_key() {
                match &plan.weak {
                    Some(pin) => tracing::warn!(
                        asset = %src.label,
                        "{} is a weak pin: the whole download matched it; sha256 {} now pins {reference}",
                        pin.algorithm.as_str(), info.digest
                    ),
                    None => {
                        tracing::info!(asset = %src.label, "pinned {reference} to {}", info.digest)
                    }
                }
                store.record_reference(&reference, &info)?;
            }
        }
        // Keep the new blob out of this pass: its reader is about to open it.
        store.retain_blob(&info.digest);
        let enforced = store.enforce_limits(&store.limits(), 0);
        store.release_blob(&info.digest);
        enforced?;
        Ok(info)
    }

    /// What this download must match: the pinned sha256, else the publisher's, else the one
    /// recorded when a weak pin first verified; and the weak pin, if nothing stronger.
    fn plan(&self, src: &Source, resolved: &Resolved) -> Result<Plan, ContentError> {
        if let (Some(pinned), Some(stated)) = (src.expected, resolved.sha256) {
            if pinned != stated {
                return Err(ContentError::PinConflict {
                    label: src.label.clone(),
                    pinned,
                    stated,
                });
            }
        }
        let weak = src.weak.clone().or_else(|| resolved.weak.clone());
        let recorded = match (&weak, src.reference_key()) {
            (Some(_), Some(key)) => self.store.reference(&key)?.map(|(d, _)| d),
            _ => None,
        };
        let expected = src.expected.or(resolved.sha256).or(recorded);
        Ok(Plan { expected, weak })
    }
}

/// What one download is checked against.
struct Plan {
    expected: Option<Digest>,
    weak: Option<WeakPin>,
}

fn check_weak(src: &Source, pin: &WeakPin, actual: &str, url: &str) -> Result<(), ContentError> {
    if actual == pin.hex {
        return Ok(());
    }
    let e = ContentError::WeakMismatch {
        label: src.label.clone(),
        url: url.to_string(),
        algorithm: pin.algorithm.as_str(),
        expected: pin.hex.clone(),
        actual: actual.to_string(),
    };
    tracing::error!("{e}");
    Err(e)
}

/// The repository of a registry location.
fn registry_repository(location: &Location) -> Option<registry::Repository<'_>> {
    match location {
        Location::Registry {
            registry,
            repository,
            ..
        } => Some(registry::Repository {
            registry,
            name: repository,
        }),
        Location::Http { .. }
        | Location::Library { .. }
        | Location::Shub { .. }
        | Location::Image(_) => None,
    }
}

impl Content {
    /// The URLs to fetch `src` from, with the headers to send.
    async fn blob_urls(
        &self,
        src: &Source,
    ) -> Result<(Vec<url::Url>, reqwest::header::HeaderMap), ContentError> {
        match &src.location {
            Location::Http { urls } => Ok((urls.clone(), reqwest::header::HeaderMap::new())),
            Location::Library { .. } | Location::Shub { .. } | Location::Image(_) => {
                Err(ContentError::Fetch(FetchError::NoSource {
                    label: src.label.clone(),
                }))
            }
            Location::Registry { digest, .. } => {
                let repo = registry_repository(&src.location).ok_or_else(|| {
                    ContentError::Fetch(FetchError::NoSource {
                        label: src.label.clone(),
                    })
                })?;
                let url = self.registry_url(repo, &format!("blobs/{digest}"))?;
                Ok((vec![url], self.registry_headers(repo).await?))
            }
        }
    }
}

fn temp_error(tmp: &tempfile::NamedTempFile, source: std::io::Error) -> ContentError {
    ContentError::Store(StoreError::Io {
        path: tmp.path().to_path_buf(),
        source,
    })
}
