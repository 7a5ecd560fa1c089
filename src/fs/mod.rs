//! The kernel's view: a read-only fuser `Filesystem` that translates FUSE requests into catalog,
//! store and archive calls. It never speaks HTTP and never parses formats.
//!
//! Layout (SPEC "Mount layout"): catalog names as files and directories, `sha256/<hex>` for every
//! held or pinned blob. Opening a file-kind asset makes its blob local (downloaded, verified) —
//! on a tokio task, so no FUSE thread waits on the network — and then hands the kernel the blob
//! file for passthrough (kernel 6.9+), or serves reads from it when the kernel refuses that.
//! Immutable nodes get long attribute timeouts and `FOPEN_KEEP_CACHE`, so the page cache
//! survives between opens; catalog nodes get one-second timeouts, so `lazycas add`/`rm` show.

mod archive_nodes;
mod errno;
mod inode;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::{Mutex, RwLock};

use crate::archive::MemberId;
use crate::archives::{Archives, OpenArchive};
use crate::catalog::{Asset, Catalog, Entry};
use crate::config::{AssetKind, Config};
use crate::digest::Digest;
use crate::fetch::{BlobSource, Fetcher};
use crate::store::{db, Store};

pub use inode::{Inodes, Node};

/// Attribute timeout of content-addressed nodes (they never change).
const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// Attribute timeout of catalog nodes (`add`/`rm` show within this).
const CATALOG_TTL: Duration = Duration::from_secs(1);

/// Everything the filesystem reads from; shared with the daemon.
pub struct Context {
    /// The local store.
    pub store: Arc<Store>,
    /// The HTTP side (rebuilt on SIGHUP, so proxies and deadlines can change).
    pub fetcher: RwLock<Arc<Fetcher>>,
    /// Open archive indexes and readers.
    pub archives: Arc<Archives>,
    /// Where download tasks run.
    pub runtime: tokio::runtime::Handle,
    /// The config in force (replaced on SIGHUP).
    pub config: RwLock<Arc<Config>>,
}

/// One open file.
enum Handle {
    /// A whole blob (file-kind asset or `sha256/<hex>`).
    Blob {
        digest: Digest,
        file: Arc<File>,
        /// Keeps the kernel's backing file registered while this handle is open.
        _backing: Option<Arc<BackingId>>,
    },
    /// A regular file inside an archive.
    Member {
        archive: Arc<OpenArchive>,
        id: MemberId,
    },
}

/// The FUSE filesystem.
pub struct LazyFs {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Context>,
    inodes: Inodes,
    catalog: RwLock<Arc<Catalog>>,
    catalog_conn: Mutex<rusqlite::Connection>,
    catalog_version: AtomicU64,
    handles: Mutex<HashMap<u64, Handle>>,
    backing: Mutex<HashMap<Digest, Weak<BackingId>>>,
    passthrough: AtomicBool,
    next_fh: AtomicU64,
    started: SystemTime,
    uid: u32,
    gid: u32,
}

impl LazyFs {
    /// A filesystem over `ctx`; loads the catalog now.
    pub fn new(ctx: Arc<Context>) -> Result<LazyFs, crate::store::StoreError> {
        let conn = ctx.store.connect_db()?;
        let config = ctx.config.read().clone();
        let catalog = Catalog::load(&config, &conn).map_err(|e| match e {
            crate::catalog::CatalogError::Db(e) => crate::store::StoreError::Db(e),
            other => crate::store::StoreError::Full(other.to_string()),
        })?;
        let version = data_version(&conn);
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(LazyFs {
            inner: Arc::new(Inner {
                ctx,
                inodes: Inodes::default(),
                catalog: RwLock::new(Arc::new(catalog)),
                catalog_conn: Mutex::new(conn),
                catalog_version: AtomicU64::new(version),
                handles: Mutex::new(HashMap::new()),
                backing: Mutex::new(HashMap::new()),
                passthrough: AtomicBool::new(false),
                next_fh: AtomicU64::new(1),
                started: SystemTime::now(),
                uid,
                gid,
            }),
        })
    }

    /// A handle the daemon keeps to reload the catalog after SIGHUP.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

/// Reloads the catalog of a live mount.
#[derive(Clone)]
pub struct Reloader {
    inner: Weak<Inner>,
}

impl Reloader {
    /// Re-reads config entries and added entries now.
    pub fn reload(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.reload_catalog();
        }
    }
}

fn data_version(conn: &rusqlite::Connection) -> u64 {
    conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
        .unwrap_or(0)
}

impl Inner {
    /// The current catalog, reloaded first if another process changed the database.
    fn catalog(&self) -> Arc<Catalog> {
        let version = data_version(&self.catalog_conn.lock());
        if version != self.catalog_version.swap(version, Ordering::AcqRel) {
            self.reload_catalog();
        }
        self.catalog.read().clone()
    }

    fn reload_catalog(&self) {
        let config = self.ctx.config.read().clone();
        let loaded = Catalog::load(&config, &self.catalog_conn.lock());
        match loaded {
            Ok(c) => *self.catalog.write() = Arc::new(c),
            Err(e) => tracing::error!("catalog reload failed, keeping the old one: {e}"),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> Result<(FileAttr, Duration), Errno> {
        match node {
            Node::Root | Node::BlobDir => Ok((self.dir_attr(ino, self.started), CATALOG_TTL)),
            Node::CatalogDir(path) => match self.catalog().entry(path) {
                Some(Entry::Dir) => Ok((self.dir_attr(ino, self.started), CATALOG_TTL)),
                _ => Err(Errno::ENOENT),
            },
            Node::Asset(name) => match self.catalog().entry(name) {
                Some(Entry::Asset(a)) => self.asset_attr(ino, &a),
                _ => Err(Errno::ENOENT),
            },
            Node::Blob(d) => {
                let size = self.known_size(d, None);
                let ttl = if size.is_some() {
                    IMMUTABLE_TTL
                } else {
                    Duration::ZERO
                };
                Ok((self.file_attr(ino, size.unwrap_or(0), self.started), ttl))
            }
            Node::Member(d, id) => {
                let a = self.ctx.archives.get(d).ok_or(Errno::ENOENT)?;
                let m = a
                    .index
                    .member(*id)
                    .map_err(|e| archive_nodes::errno(&a, &e))?;
                Ok((archive_nodes::member_attr(ino, &m), IMMUTABLE_TTL))
            }
        }
    }

    fn asset_attr(&self, ino: u64, a: &Asset) -> Result<(FileAttr, Duration), Errno> {
        let mtime = UNIX_EPOCH + Duration::from_secs(a.added_at.max(0) as u64);
        let mtime = if a.added_at == 0 { self.started } else { mtime };
        match a.config.kind {
            AssetKind::Archive => match a.digest().and_then(|d| self.ctx.archives.get(&d)) {
                Some(open) => {
                    let root = open
                        .index
                        .member(MemberId::ROOT)
                        .map_err(|e| archive_nodes::errno(&open, &e))?;
                    Ok((archive_nodes::member_attr(ino, &root), CATALOG_TTL))
                }
                None => Ok((self.dir_attr(ino, mtime), CATALOG_TTL)),
            },
            AssetKind::File => {
                let size = a.digest().and_then(|d| self.known_size(&d, Some(a)));
                let size = size.or_else(|| self.resolved_size(a));
                let ttl = if size.is_some() {
                    CATALOG_TTL
                } else {
                    Duration::ZERO
                };
                Ok((self.file_attr(ino, size.unwrap_or(0), mtime), ttl))
            }
        }
    }

    /// The size of `d` if the store holds it or the catalog says it.
    fn known_size(&self, d: &Digest, asset: Option<&Asset>) -> Option<u64> {
        if let Ok(Some(info)) = self.ctx.store.blob(d) {
            return Some(info.size);
        }
        asset.and_then(|a| a.config.size)
    }

    /// The size an unpinned URL resolved to before.
    fn resolved_size(&self, a: &Asset) -> Option<u64> {
        let url = a.config.url.as_str().to_string();
        let (d, size) = self
            .ctx
            .store
            .with_db(|c| db::reference(c, &url))
            .ok()
            .flatten()?;
        self.known_size(&d, None).or(size)
    }

    fn dir_attr(&self, ino: u64, mtime: SystemTime) -> FileAttr {
        self.base_attr(ino, FileType::Directory, 0o555, 0, 2, mtime)
    }

    fn file_attr(&self, ino: u64, size: u64, mtime: SystemTime) -> FileAttr {
        self.base_attr(ino, FileType::RegularFile, 0o444, size, 1, mtime)
    }

    fn base_attr(
        &self,
        ino: u64,
        kind: FileType,
        perm: u16,
        size: u64,
        nlink: u32,
        mtime: SystemTime,
    ) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The node named `name` inside `parent`.
    fn child(&self, parent: &Node, name: &[u8]) -> Result<Node, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
        match parent {
            Node::Root if name == "sha256" => Ok(Node::BlobDir),
            Node::Root => self.catalog_child(name),
            Node::CatalogDir(path) => self.catalog_child(&format!("{path}/{name}")),
            Node::BlobDir => {
                let d = Digest::parse(name).map_err(|_| Errno::ENOENT)?;
                if name.len() != 64 || d.hex() != name {
                    return Err(Errno::ENOENT);
                }
                let held = matches!(self.ctx.store.blob(&d), Ok(Some(_)));
                if held || self.catalog().by_digest(&d).is_some() {
                    Ok(Node::Blob(d))
                } else {
                    Err(Errno::ENOENT)
                }
            }
            Node::Asset(_) | Node::Blob(_) | Node::Member(..) => Err(Errno::ENOTDIR),
        }
    }

    fn catalog_child(&self, path: &str) -> Result<Node, Errno> {
        match self.catalog().entry(path) {
            Some(Entry::Dir) => Ok(Node::CatalogDir(path.to_string())),
            Some(Entry::Asset(_)) => Ok(Node::Asset(path.to_string())),
            None => Err(Errno::ENOENT),
        }
    }

    /// `(name, node, type)` of every entry of directory `node`, without `.` and `..`.
    fn list(&self, node: &Node) -> Result<Vec<(Vec<u8>, Node, FileType)>, Errno> {
        let catalog_entries = |path: &str| {
            let base = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            self.catalog()
                .children(path)
                .into_iter()
                .map(|(name, entry)| {
                    let full = format!("{base}{name}");
                    let (node, kind) = match entry {
                        Entry::Dir => (Node::CatalogDir(full), FileType::Directory),
                        Entry::Asset(a) => (Node::Asset(full), asset_file_type(&a)),
                    };
                    (name.into_bytes(), node, kind)
                })
                .collect::<Vec<_>>()
        };
        match node {
            Node::Root => {
                let mut v = vec![(b"sha256".to_vec(), Node::BlobDir, FileType::Directory)];
                v.extend(catalog_entries(""));
                Ok(v)
            }
            Node::CatalogDir(path) => Ok(catalog_entries(path)),
            Node::BlobDir => {
                let mut digests: Vec<Digest> = self
                    .ctx
                    .store
                    .blobs()
                    .map_err(|e| errno::of_store(&e))?
                    .into_iter()
                    .map(|b| b.digest)
                    .collect();
                digests.extend(self.catalog().pinned_digests());
                digests.sort();
                digests.dedup();
                Ok(digests
                    .into_iter()
                    .map(|d| (d.hex().into_bytes(), Node::Blob(d), FileType::RegularFile))
                    .collect())
            }
            Node::Asset(name) => match self.catalog().entry(name) {
                Some(Entry::Asset(_)) => Ok(Vec::new()),
                _ => Err(Errno::ENOENT),
            },
            Node::Blob(_) => Err(Errno::ENOTDIR),
            Node::Member(..) => Err(Errno::ENOTDIR),
        }
    }

    /// Where the bytes of a file node come from.
    fn file_source(&self, node: &Node) -> Result<BlobSource, Errno> {
        let catalog = self.catalog();
        match node {
            Node::Asset(name) => match catalog.entry(name) {
                Some(Entry::Asset(a)) if a.config.kind == AssetKind::File => Ok(a.source()),
                Some(Entry::Asset(_)) => Err(Errno::EISDIR),
                _ => Err(Errno::ENOENT),
            },
            Node::Blob(d) => Ok(match catalog.by_digest(d) {
                Some(a) => a.source(),
                None => BlobSource {
                    label: d.to_string(),
                    urls: Vec::new(),
                    expected: Some(*d),
                    size_hint: None,
                },
            }),
            Node::Root | Node::CatalogDir(_) | Node::BlobDir => Err(Errno::EISDIR),
            Node::Member(..) => Err(Errno::ENOENT),
        }
    }

    /// Registers `file` with the kernel for passthrough (one backing id per blob while open).
    fn backing_for(
        &self,
        reply: &ReplyOpen,
        digest: &Digest,
        file: &File,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let mut map = self.backing.lock();
        if let Some(id) = map.get(digest).and_then(Weak::upgrade) {
            return Some(id);
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                map.insert(*digest, Arc::downgrade(&id));
                map.retain(|_, w| w.strong_count() > 0);
                Some(id)
            }
            Err(e) => {
                tracing::warn!(
                    "kernel refused FUSE passthrough ({e}); serving reads in userspace from now on"
                );
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Finishes an open once the blob is local.
    fn complete_open(&self, digest: Digest, reply: ReplyOpen) {
        let file = match self.ctx.store.open_blob(&digest) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                tracing::error!("open {digest}: {e}");
                return reply.error(errno::of_store(&e));
            }
        };
        let backing = self.backing_for(&reply, &digest, &file);
        let fh = self.add_handle(Handle::Blob {
            digest,
            file,
            _backing: backing.clone(),
        });
        match backing {
            Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    /// What an archive-backed directory needs before it can answer.
    fn archive_need(&self, node: &Node) -> Need {
        match node {
            Node::Asset(name) => match self.catalog().entry(name) {
                Some(Entry::Asset(a)) if a.config.kind == AssetKind::Archive => {
                    match a.digest().and_then(|d| self.ctx.archives.get(&d)) {
                        Some(open) => Need::Ready(open, MemberId::ROOT),
                        None => Need::Fetch(a.source()),
                    }
                }
                _ => Need::NotArchive,
            },
            Node::Member(d, id) => match self.ctx.archives.get(d) {
                Some(open) => Need::Ready(open, *id),
                None => Need::Gone,
            },
            _ => Need::NotArchive,
        }
    }

    /// Runs `answer` with the open archive, fetching and indexing it first (on a task) if
    /// needed; `fail` gets the errno otherwise.
    fn with_archive<R: Send + 'static>(
        self: &Arc<Self>,
        need: Need,
        reply: R,
        answer: impl FnOnce(&Arc<Self>, Arc<OpenArchive>, MemberId, R) + Send + 'static,
        fail: impl FnOnce(R, Errno) + Send + 'static,
    ) {
        match need {
            Need::Ready(open, id) => answer(self, open, id, reply),
            Need::Gone => fail(reply, Errno::ENOENT),
            Need::NotArchive => fail(reply, Errno::ENOTDIR),
            Need::Fetch(src) => {
                let inner = self.clone();
                self.ctx.runtime.spawn(async move {
                    let fetcher = inner.ctx.fetcher.read().clone();
                    match inner.ctx.archives.open(&fetcher, &src).await {
                        Ok(open) => {
                            let inner2 = inner.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                answer(&inner2, open, MemberId::ROOT, reply)
                            })
                            .await;
                        }
                        Err(e) => {
                            tracing::error!("archive {}: {e}", src.label);
                            fail(reply, Errno::EIO);
                        }
                    }
                });
            }
        }
    }

    fn xattrs(&self, node: &Node) -> Vec<(Vec<u8>, Vec<u8>)> {
        if let Node::Member(d, id) = node {
            return match self.ctx.archives.get(d) {
                Some(open) => archive_nodes::xattrs(&open, *id),
                None => Vec::new(),
            };
        }
        let (digest, source, size) = match node {
            Node::Asset(name) => match self.catalog().entry(name) {
                Some(Entry::Asset(a)) => (a.digest(), a.config.url.to_string(), a.config.size),
                _ => return Vec::new(),
            },
            Node::Blob(d) => {
                let source = self
                    .catalog()
                    .by_digest(d)
                    .map(|a| a.config.url.to_string())
                    .unwrap_or_else(|| "store".to_string());
                (Some(*d), source, None)
            }
            _ => return Vec::new(),
        };
        let held = digest.and_then(|d| self.ctx.store.blob(&d).ok().flatten());
        let cached = match (held, size) {
            (Some(info), _) => format!("{}/{}", info.size, info.size),
            (None, Some(s)) => format!("0/{s}"),
            (None, None) => "0/unknown".to_string(),
        };
        let mut v = vec![
            (b"user.lazycas.source".to_vec(), source.into_bytes()),
            (b"user.lazycas.cached".to_vec(), cached.into_bytes()),
        ];
        if let Some(d) = digest {
            v.insert(
                0,
                (b"user.lazycas.digest".to_vec(), d.to_string().into_bytes()),
            );
        }
        v
    }
}

/// Whether a directory node is inside an archive, and whether that archive is open yet.
enum Need {
    /// Not an archive directory.
    NotArchive,
    /// Open: answer now.
    Ready(Arc<OpenArchive>, MemberId),
    /// An archive asset not opened yet: fetch and index first.
    Fetch(BlobSource),
    /// A member of an archive this mount no longer has open.
    Gone,
}

fn asset_file_type(a: &Asset) -> FileType {
    match a.config.kind {
        AssetKind::Archive => FileType::Directory,
        AssetKind::File => FileType::RegularFile,
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.inner.passthrough.store(ok, Ordering::Relaxed);
        tracing::info!(passthrough = ok, "FUSE session started");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = &self.inner;
        let Some(parent_node) = inner.inodes.node(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        match inner.archive_need(&parent_node) {
            Need::NotArchive => {}
            need => {
                let name = name.as_bytes().to_vec();
                return inner.with_archive(
                    need,
                    reply,
                    move |inner, open, dir, reply| {
                        archive_nodes::lookup(inner, &open, dir, &name, reply)
                    },
                    |reply, e| reply.error(e),
                );
            }
        }
        let result = inner.child(&parent_node, name.as_bytes()).and_then(|node| {
            let ino = inner.inodes.ino(node.clone());
            inner.attr(ino, &node)
        });
        match result {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = &self.inner;
        match inner
            .inodes
            .node(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|n| inner.attr(ino.0, &n))
        {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = &self.inner;
        let Some(node) = inner.inodes.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match inner.archive_need(&node) {
            Need::NotArchive => {}
            need => {
                let parent_ino = ino.0;
                return inner.with_archive(
                    need,
                    reply,
                    move |inner, open, dir, reply| {
                        archive_nodes::readdir(inner, &open, dir, parent_ino, offset, reply)
                    },
                    |reply, e| reply.error(e),
                );
            }
        }
        let entries = match inner.list(&node) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (b".".to_vec(), ino.0, FileType::Directory),
            (b"..".to_vec(), 1, FileType::Directory),
        ];
        let all = dots.into_iter().chain(
            entries
                .into_iter()
                .map(|(name, node, kind)| (name, inner.inodes.ino(node), kind)),
        );
        for (i, (name, child, kind)) in all.enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(&name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(node) = self.inner.inodes.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Node::Member(d, id) = node {
            let Some(archive) = self.inner.ctx.archives.get(&d) else {
                return reply.error(Errno::ENOENT);
            };
            let fh = self.inner.add_handle(Handle::Member { archive, id });
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
        }
        let src = match self.inner.file_source(&node) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        if let Some(d) = src.expected {
            if matches!(self.inner.ctx.store.blob(&d), Ok(Some(_))) {
                self.inner.ctx.store.stats().hit();
                return self.inner.complete_open(d, reply);
            }
        }
        let inner = self.inner.clone();
        self.inner.ctx.runtime.spawn(async move {
            let ctx = &inner.ctx;
            let fetcher = ctx.fetcher.read().clone();
            match ctx.store.ensure_blob(&fetcher, &src, None, &|_| {}).await {
                Ok(info) => {
                    let inner2 = inner.clone();
                    // Opening and registering the backing file touch the disk: off the runtime.
                    let _ = tokio::task::spawn_blocking(move || {
                        inner2.complete_open(info.digest, reply)
                    })
                    .await;
                }
                Err(e) => {
                    tracing::error!("open failed: {e}");
                    reply.error(errno::of_store(&e));
                }
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.inner.handles.lock().get(&fh.0) {
            Some(Handle::Blob { file, .. }) => file.clone(),
            Some(Handle::Member { archive, id }) => {
                let (archive, id) = (archive.clone(), *id);
                return archive_nodes::read(&archive, id, offset, size, reply);
            }
            None => return reply.error(Errno::EBADF),
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(Errno::from(e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(Handle::Blob { digest, .. }) = self.inner.handles.lock().remove(&fh.0) {
            self.inner.ctx.store.release_blob(&digest);
        }
        reply.ok();
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.inodes.node(ino.0) {
            Some(Node::Member(d, id)) => match self.inner.ctx.archives.get(&d) {
                Some(open) => match open.index.readlink(id) {
                    Ok(target) => reply.data(&target),
                    Err(e) => reply.error(archive_nodes::errno(&open, &e)),
                },
                None => reply.error(Errno::ENOENT),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.inner.inodes.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self
            .inner
            .xattrs(&node)
            .into_iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
        {
            Some((_, v)) => reply_xattr(reply, size, &v),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.inner.inodes.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for (k, _) in self.inner.xattrs(&node) {
            names.extend_from_slice(&k);
            names.push(0);
        }
        reply_xattr(reply, size, &names);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used: u64 = self
            .inner
            .ctx
            .store
            .blobs()
            .map(|b| b.iter().map(|r| r.size).sum())
            .unwrap_or(0);
        let blocks = used.div_ceil(4096);
        reply.statfs(blocks, 0, 0, 0, 0, 4096, 255, 4096);
    }
}
