//! Bytes and metadata on local disk: the content-addressed blob store.
//!
//! Layout: `blobs/sha256/<2 hex>/<hex>` holds complete, verified blobs only; `chunks/` holds
//! the chunks of partly present blobs ([`ChunkStore`], hashed on first use); `tmp/` holds
//! downloads in progress (named after the writing process, so a restart removes the leftovers of
//! dead processes only); `lazycas.db` is SQLite (see [`db`]). A blob is downloaded into a temp
//! file, verified while it arrives, fsynced, renamed to its digest name, and only then recorded
//! as complete: a crash at any point leaves nothing or a complete blob. Archive members read
//! whole are kept decoded as blobs too ([`DecodedWriter`]), in the quota like the rest.
//!
//! It knows nothing of HTTP or formats: `content` drives downloads into its temp files
//! ([`Store::temp_file`], [`TempSink`]) and commits them ([`Store::commit`]); readers open
//! blobs through [`Store::open_blob`] and read them through the [`BlobRead`] trait.

mod blob;
mod blocks;
mod chunks;
pub mod db;
mod decoded;
mod evict;
mod flock;
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

use crate::digest::Digest;

pub use blob::{BlobRead, BytesBlob, CompleteBlob};
pub use chunks::ChunkStore;
pub use db::BlobRow;
pub use decoded::{DecodedWriter, MemberKey, RegionKey};
pub use evict::{free_bytes, EvictReport, Limits};
pub use sink::{ByteObserver, TempSink};
pub use stats::{Stats, StatsSnapshot};
pub use verify::{ReconcileReport, VerifyReport};

/// Why a [`ForgetHook`] failed.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Removes what an upper layer derived from a blob (an archive index) when the blob goes.
pub type ForgetHook = Box<dyn Fn(&Connection, &Digest) -> Result<(), HookError> + Send + Sync>;

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
    /// Removing what an upper layer derived from a blob failed.
    #[error("removing what was derived from {digest}: {source}")]
    Derived {
        /// The blob being forgotten.
        digest: Digest,
        /// What the upper layer said.
        source: HookError,
    },
    /// The blob is not in the store.
    #[error("{0} is not in the store")]
    Missing(Digest),
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

/// The local content-addressed store.
pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
    open_blobs: Mutex<HashMap<Digest, u32>>,
    stats: Stats,
    limits: parking_lot::RwLock<Limits>,
    forget_hooks: parking_lot::RwLock<Vec<ForgetHook>>,
    chunks: ChunkStore,
    writing: decoded::Writing,
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
            open_blobs: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            limits: parking_lot::RwLock::new(Limits::default()),
            forget_hooks: parking_lot::RwLock::new(Vec::new()),
            chunks: ChunkStore::open(root)?,
            writing: decoded::Writing::default(),
        };
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// Chunks of partly present blobs, by digest.
    pub fn chunks(&self) -> &ChunkStore {
        &self.chunks
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

    /// Opens a complete blob for reading. It counts as open (never evicted, by this process
    /// or another) until the returned value is dropped.
    pub fn open_blob(self: &Arc<Self>, d: &Digest) -> Result<CompleteBlob, StoreError> {
        let path = self.blob_path(d);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(*d),
            _ => StoreError::io(&path, e),
        })?;
        flock::lock_shared(&file).map_err(|e| StoreError::io(&path, e))?;
        let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        self.retain_blob(d);
        self.stats.touch(d);
        Ok(CompleteBlob::new(file, *d, size, self.clone()))
    }

    /// Counts `d` as open (kept from eviction) until [`Store::release_blob`].
    pub fn retain_blob(&self, d: &Digest) {
        *self.open_blobs.lock().entry(*d).or_insert(0) += 1;
    }

    /// Ends one [`Store::retain_blob`].
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

    /// What `reference` (a URL or tag) resolved to before, with the size then seen.
    pub fn reference(&self, reference: &str) -> Result<Option<(Digest, Option<u64>)>, StoreError> {
        self.with_db(|c| db::reference(c, reference))
    }

    /// What `reference` (an image tag) resolved to before, and when (unix seconds).
    pub fn reference_resolved_at(
        &self,
        reference: &str,
    ) -> Result<Option<(Digest, i64)>, StoreError> {
        self.with_db(|c| db::reference_resolved_at(c, reference))
    }

    /// Remembers that `reference` resolved to `info` (pins an unpinned URL).
    pub fn record_reference(&self, reference: &str, info: &BlobInfo) -> Result<(), StoreError> {
        self.with_db(|c| db::set_reference(c, reference, &info.digest, Some(info.size), now_secs()))
    }

    /// A new temp file under `tmp/`, named after this process.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&dir, e))
    }

    /// fsync, rename into place, fsync the directory, then record the blob as complete.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, info: &BlobInfo) -> Result<(), StoreError> {
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
    decoded::init_schema(&conn)?;
    Ok(conn)
}
