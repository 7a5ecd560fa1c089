//! Bytes and metadata on local disk: the content-addressed blob store.
//!
//! Layout: `blobs/sha256/<2 hex>/<hex>` holds complete, verified blobs only; `tmp/` holds
//! downloads in progress (named after the writing process, so a restart removes the leftovers of
//! dead processes only); `lazycas.db` is SQLite (see [`db`]). A blob is downloaded into a temp
//! file, verified while it arrives, fsynced, renamed to its digest name, and only then recorded
//! as complete: a crash at any point leaves nothing or a complete blob.
//!
//! [`Store::ensure_blob`] is the single entry for "make this content local": concurrent callers
//! for the same content share one download (single flight). It is not the place for formats
//! (`archive`) nor for HTTP (`fetch`, which it drives).

pub mod db;
mod evict;
mod sink;
mod stats;
mod verify;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::OnceCell;

use crate::digest::Digest;
use crate::fetch::{BlobSource, FetchError, Fetcher};

pub use db::BlobRow;
pub use evict::{free_bytes, EvictReport, Limits};
pub use sink::ByteObserver;
pub use stats::{Stats, StatsSnapshot};
pub use verify::{ReconcileReport, VerifyReport};

/// Removes what an upper layer derived from a blob (an archive index) when the blob goes.
pub type ForgetHook = Box<dyn Fn(&Connection, &Digest) -> rusqlite::Result<()> + Send + Sync>;

/// A store failure; `Display` names the path or asset at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("store database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The download failed on every source.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The blob is not in the store and nothing says where to get it.
    #[error("{0} is not in the store")]
    Missing(Digest),
    /// The store's disk is full even after eviction.
    #[error("store is full: {0}")]
    Full(String),
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A complete, verified blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

type Flight = Arc<OnceCell<Result<BlobInfo, Arc<StoreError>>>>;

/// The local content-addressed store.
pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
    inflight: Mutex<HashMap<String, Flight>>,
    open_blobs: Mutex<HashMap<Digest, u32>>,
    stats: Stats,
    limits: parking_lot::RwLock<Limits>,
    forget_hooks: parking_lot::RwLock<Vec<ForgetHook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// Unix milliseconds now (blob access times: second resolution would make LRU ties).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the store at `root` and removes temp files of dead processes.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in ["blobs/sha256", "tmp", "quarantine"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            db: Mutex::new(open_db(&root.join("lazycas.db"))?),
            inflight: Mutex::new(HashMap::new()),
            open_blobs: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            limits: parking_lot::RwLock::new(Limits::default()),
            forget_hooks: parking_lot::RwLock::new(Vec::new()),
        };
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("lazycas.db")
    }

    /// A new connection to the store's database, configured like the store's own.
    pub fn connect_db(&self) -> Result<Connection, StoreError> {
        open_db(&self.db_path())
    }

    /// Runs `f` on the store's connection.
    pub fn with_db<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        Ok(f(&self.db.lock())?)
    }

    /// Where a complete blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// Sets the quota and free-space floor enforced after each download.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *self.limits.read()
    }

    /// Registers cleanup of data derived from blobs, run in the transaction that forgets one.
    pub fn on_forget(&self, hook: ForgetHook) {
        self.forget_hooks.write().push(hook);
    }

    /// Counters of this process (hits, misses, bytes per source).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The complete blob, if the store holds it (recorded and its file present).
    pub fn blob(&self, d: &Digest) -> Result<Option<BlobInfo>, StoreError> {
        let Some(row) = self.with_db(|c| db::blob(c, d))? else {
            return Ok(None);
        };
        if !self.blob_path(d).exists() {
            // The file went away behind our back (manual cleanup): forget the row.
            self.with_db(|c| db::delete_blob(c, d))?;
            return Ok(None);
        }
        Ok(Some(BlobInfo {
            digest: *d,
            size: row.size,
        }))
    }

    /// Every complete blob, least recently used first.
    pub fn blobs(&self) -> Result<Vec<BlobRow>, StoreError> {
        self.with_db(db::blobs)
    }

    /// Opens a complete blob for reading, and counts it as open (an open blob is never
    /// evicted) until [`Store::release_blob`].
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(*d),
            _ => StoreError::io(&path, e),
        })?;
        evict::lock_shared(&file);
        *self.open_blobs.lock().entry(*d).or_insert(0) += 1;
        self.stats.touch(d);
        Ok(file)
    }

    /// The reader of a blob opened with [`Store::open_blob`] is done with it.
    pub fn release_blob(&self, d: &Digest) {
        let mut open = self.open_blobs.lock();
        if let Some(n) = open.get_mut(d) {
            *n -= 1;
            if *n == 0 {
                open.remove(d);
            }
        }
    }

    /// Whether some reader has the blob open.
    pub fn is_open(&self, d: &Digest) -> bool {
        self.open_blobs.lock().contains_key(d)
    }

    /// Makes the content of `src` local: returns at once when the store holds it, otherwise
    /// downloads it once however many callers ask at the same time. `observer` (used by the
    /// archive indexer) sees the bytes in order if this call is the one that downloads.
    pub async fn ensure_blob(
        &self,
        fetcher: &Fetcher,
        src: &BlobSource,
        observer: Option<Box<dyn ByteObserver>>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BlobInfo, Arc<StoreError>> {
        if let Some(info) = self.resolve_local(src).map_err(Arc::new)? {
            self.stats.hit();
            return Ok(info);
        }
        let key = match &src.expected {
            Some(d) => d.to_string(),
            None => src.urls.first().map(|u| u.to_string()).unwrap_or_default(),
        };
        let flight = self.inflight.lock().entry(key.clone()).or_default().clone();
        let mut observer = observer;
        let result = flight
            .get_or_init(|| async {
                // Someone may have finished the download between our check and the flight.
                if let Some(info) = self.resolve_local(src)? {
                    return Ok(info);
                }
                self.stats.miss();
                self.download(fetcher, src, observer.take(), progress).await
            })
            .await
            .clone();
        self.inflight.lock().remove(&key);
        result
    }

    /// The local blob for `src`: by its pinned digest, or by what its URL resolved to before.
    fn resolve_local(&self, src: &BlobSource) -> Result<Option<BlobInfo>, StoreError> {
        let digest = match src.expected {
            Some(d) => d,
            None => match src.urls.first() {
                Some(u) => match self.with_db(|c| db::reference(c, u.as_str()))? {
                    Some((d, _)) => d,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        self.blob(&digest)
    }

    async fn download(
        &self,
        fetcher: &Fetcher,
        src: &BlobSource,
        observer: Option<Box<dyn ByteObserver>>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BlobInfo, Arc<StoreError>> {
        let incoming = src.size_hint.unwrap_or(0);
        self.enforce_limits(&self.limits(), incoming)
            .map_err(Arc::new)?;
        let tmp = self.temp_file().map_err(Arc::new)?;
        let sink = sink::TempSink::new(&tmp, observer)
            .map_err(|e| Arc::new(StoreError::io(tmp.path(), e)))?;
        let mut outcome = fetcher.fetch_blob(src, Box::new(sink), progress).await;
        if let Err(FetchError::Sink { source, .. }) = &outcome {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                // Disk full: make room once and start over; a second ENOSPC is final.
                let used = self.used_bytes().map_err(Arc::new)?;
                tracing::warn!(asset = %src.label, "disk full while downloading; evicting and retrying once");
                self.evict_to(used / 2).map_err(Arc::new)?;
                let sink = sink::TempSink::new(&tmp, None)
                    .map_err(|e| Arc::new(StoreError::io(tmp.path(), e)))?;
                outcome = fetcher.fetch_blob(src, Box::new(sink), progress).await;
            }
        }
        let (fetched, sink) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                self.stats.fetch_failed(e.is_mismatch());
                return Err(Arc::new(StoreError::Fetch(e)));
            }
        };
        drop(sink);
        self.stats.fetched(&fetched);
        let info = BlobInfo {
            digest: fetched.digest,
            size: fetched.size,
        };
        self.commit(tmp, &info).map_err(Arc::new)?;
        if src.expected.is_none() {
            if let Some(url) = src.urls.first() {
                tracing::info!(asset = %src.label, "pinned unpinned {url} to {}", info.digest);
                self.with_db(|c| {
                    db::set_reference(c, url.as_str(), &info.digest, Some(info.size), now_secs())
                })
                .map_err(Arc::new)?;
            }
        }
        // Keep the new blob out of this pass: its reader is about to open it.
        *self.open_blobs.lock().entry(info.digest).or_insert(0) += 1;
        let enforced = self.enforce_limits(&self.limits(), 0);
        self.release_blob(&info.digest);
        enforced.map_err(Arc::new)?;
        Ok(info)
    }

    /// A new temp file under `tmp/`, named after this process.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&dir, e))
    }

    /// fsync, rename into place, fsync the directory, then record the blob as complete.
    fn commit(&self, tmp: tempfile::NamedTempFile, info: &BlobInfo) -> Result<(), StoreError> {
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        let dest = self.blob_path(&info.digest);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        // Blobs are immutable: read-only on disk too.
        let mut perm = tmp
            .as_file()
            .metadata()
            .map_err(|e| StoreError::io(tmp.path(), e))?
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
        fs::set_permissions(tmp.path(), perm).map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io(&dest, e.error))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&dir, e))?;
        self.with_db(|c| db::insert_complete(c, &info.digest, info.size, now_millis()))
    }

    /// Writes this process's counters and access times to the database.
    pub fn flush_stats(&self) -> Result<(), StoreError> {
        let pending = self.stats.take_pending();
        if pending.is_empty() {
            return Ok(());
        }
        let conn = self.db.lock();
        let tx = conn.unchecked_transaction()?;
        db::add_counters(&tx, pending.counters.iter().map(|(k, v)| (k.as_str(), *v)))?;
        for (d, at) in &pending.touched {
            db::touch(&tx, d, *at)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes temp files whose writing process is gone (killed mid-download).
    fn remove_stale_temp_files(&self) {
        let dir = self.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|p| p > 0 && Path::new(&format!("/proc/{p}")).exists());
            if !alive || pid == Some(std::process::id() as i32) {
                tracing::info!("removing stale temp file {}", e.path().display());
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn open_db(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    db::configure(&conn)?;
    db::init_schema(&conn)?;
    Ok(conn)
}
