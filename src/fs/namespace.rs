//! The trait every part of the mount implements ([`Namespace`]), and the values that cross it.
//!
//! A node of the mount is a [`NodeRef`]: the namespace that owns it plus a [`Key`] meaningful
//! to that namespace. The kernel-facing dispatcher (`fs/mod.rs`) hands out inode numbers for
//! node refs and sends each request to the owning namespace; a namespace answers with plain
//! values ([`Attr`], [`Entry`], [`DirEntry`], an [`OpenFile`]) or an [`NsError`], never with
//! fuser replies. A namespace may need to fetch before it can answer ([`Namespace::prepare`]):
//! the dispatcher runs that wait off the FUSE threads and asks again once it is done.
//! A namespace may hand out nodes owned by another (the catalog's archive entries hold members
//! of the archive tree), which is how namespaces compose without knowing each other's insides.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use fuser::FileType;

use crate::archive::{ArchiveError, MemberId};
use crate::catalog::CatalogError;
use crate::content::{ContentError, Readers};
use crate::digest::Digest;
use crate::store::BlobRead;

/// What identifies a node inside its namespace. Shapes, not meanings: each namespace decides
/// what its paths or digests stand for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The namespace's own top directory.
    Top,
    /// A `/`-separated path inside the namespace.
    Path(Arc<str>),
    /// A node named by a content digest.
    Digest(Digest),
    /// A member of the tree (archive, image) with this digest.
    Member(Digest, MemberId),
}

/// A node of the mount: the namespace that answers for it, and its key there.
#[derive(Clone)]
pub struct NodeRef {
    /// The owner.
    pub ns: Arc<dyn Namespace>,
    /// The node inside it.
    pub key: Key,
}

impl NodeRef {
    /// `key` in the namespace `me` points to: each namespace keeps a `Weak` of itself (made
    /// with `Arc::new_cyclic`) to hand out its own nodes.
    pub fn of<N: Namespace>(me: &Weak<N>, key: Key) -> NodeRef {
        let ns: Arc<dyn Namespace> = me.upgrade().expect("a namespace outlives its calls");
        NodeRef { ns, key }
    }

    /// `key` in `ns`.
    pub fn new(ns: &Arc<dyn Namespace>, key: Key) -> NodeRef {
        NodeRef {
            ns: ns.clone(),
            key,
        }
    }

    fn ns_id(&self) -> *const () {
        Arc::as_ptr(&self.ns) as *const ()
    }
}

impl PartialEq for NodeRef {
    fn eq(&self, other: &NodeRef) -> bool {
        self.ns_id() == other.ns_id() && self.key == other.key
    }
}

impl Eq for NodeRef {}

impl Hash for NodeRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ns_id().hash(state);
        self.key.hash(state);
    }
}

impl std::fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:?}", self.ns.name(), self.key)
    }
}

/// A node's attributes, without its inode number (the dispatcher adds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// File, directory, symlink, device or fifo.
    pub kind: FileType,
    /// Permission bits (and setuid/setgid/sticky).
    pub perm: u16,
    /// Size in bytes.
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of device nodes.
    pub rdev: u32,
    /// Modification (and change, access) time.
    pub mtime: SystemTime,
}

/// The daemon's own uid and gid: the owner of the nodes it makes up (catalog, `sha256/`).
fn daemon_owner() -> (u32, u32) {
    static OWNER: OnceLock<(u32, u32)> = OnceLock::new();
    // SAFETY: getuid/getgid cannot fail.
    *OWNER.get_or_init(|| unsafe { (libc::getuid(), libc::getgid()) })
}

impl Attr {
    /// A read-only directory the daemon makes up (0555).
    pub fn dir(mtime: SystemTime) -> Attr {
        let (uid, gid) = daemon_owner();
        Attr {
            kind: FileType::Directory,
            perm: 0o555,
            size: 0,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
            mtime,
        }
    }

    /// These attributes with the permissions `readers` allows: the owner's bits only, or the
    /// owner's and the group's with the group set (private registry content).
    pub fn readable_by(self, readers: Readers) -> Attr {
        match readers {
            Readers::Everyone => self,
            Readers::Owner => Attr {
                perm: self.perm & 0o700,
                ..self
            },
            Readers::Group(gid) => Attr {
                perm: self.perm & 0o750,
                gid,
                ..self
            },
        }
    }

    /// A read-only file the daemon makes up (0444).
    pub fn file(size: u64, mtime: SystemTime) -> Attr {
        Attr {
            kind: FileType::RegularFile,
            perm: 0o444,
            size,
            nlink: 1,
            ..Attr::dir(mtime)
        }
    }
}

/// How long the kernel may keep what a namespace answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Content-addressed: never changes.
    Immutable,
    /// A name that `lazycas add`/`rm` or a reload can change.
    Catalog,
    /// Not known yet (a size that a fetch will tell): ask again every time.
    Unsettled,
}

impl Ttl {
    /// The timeout for the kernel.
    pub fn duration(self) -> Duration {
        match self {
            Ttl::Immutable => Duration::from_secs(3600),
            Ttl::Catalog => Duration::from_secs(1),
            Ttl::Unsettled => Duration::ZERO,
        }
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The child.
    pub node: NodeRef,
    /// Its attributes.
    pub attr: Attr,
    /// How long they hold.
    pub ttl: Ttl,
}

impl Entry {
    /// `node` with the attributes its namespace's `getattr` gave.
    pub fn of(node: NodeRef, (attr, ttl): (Attr, Ttl)) -> Entry {
        Entry { node, attr, ttl }
    }
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Its name.
    pub name: Vec<u8>,
    /// The node it names.
    pub node: NodeRef,
    /// Its type.
    pub kind: FileType,
    /// Where to resume after this entry (non-zero, increasing within a listing).
    pub cookie: u64,
}

/// Lists `items` into `add`, from the one after cookie `after` (cookies number the items from
/// 1), making each listed item an entry (name, type, node) with `entry`; stops when `add` says
/// the kernel's buffer is full, and returns whether it did.
pub fn list_from<T>(
    items: impl IntoIterator<Item = T>,
    after: u64,
    add: &mut dyn FnMut(DirEntry) -> bool,
    mut entry: impl FnMut(T) -> (Vec<u8>, FileType, NodeRef),
) -> bool {
    let skip = usize::try_from(after).unwrap_or(usize::MAX);
    for (i, item) in items.into_iter().enumerate().skip(skip) {
        let (name, kind, node) = entry(item);
        let cookie = i as u64 + 1;
        if add(DirEntry {
            name,
            node,
            kind,
            cookie,
        }) {
            return true;
        }
    }
    false
}

/// What a request needs ready before it can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Look up or list inside the node (an archive must be open).
    Children,
    /// Open the node (a file's bytes must be readable).
    Open,
}

/// Work a namespace needs done (a download, an index build) before it can answer.
pub type Wait = Pin<Box<dyn Future<Output = Result<(), NsError>> + Send>>;

/// An open regular file.
pub trait OpenFile: Send + Sync {
    /// Up to `size` bytes from `offset` (fewer only at the end of the file).
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, NsError>;

    /// The whole blob behind this file, when the file is exactly one blob (the dispatcher can
    /// then let the kernel read its local file directly).
    fn blob(&self) -> Option<&Arc<dyn BlobRead>> {
        None
    }
}

/// Extended attributes: each name with its value.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a namespace could not answer. `fs/errno.rs` turns it into an errno, in one place.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// No such name.
    #[error("no such entry")]
    NotFound,
    /// A lookup or listing inside a non-directory.
    #[error("not a directory")]
    NotDir,
    /// An open or read of a directory.
    #[error("is a directory")]
    IsDir,
    /// A readlink of a non-symlink.
    #[error("not a symlink")]
    NotSymlink,
    /// Making the content local failed.
    #[error(transparent)]
    Content(#[from] Arc<ContentError>),
    /// The archive (or image) format layer failed.
    #[error("{source_name} ({digest}): {error}")]
    Tree {
        /// Where the tree came from.
        source_name: String,
        /// Its digest.
        digest: Digest,
        /// What the format layer said.
        error: ArchiveError,
    },
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<ContentError> for NsError {
    fn from(e: ContentError) -> NsError {
        NsError::Content(Arc::new(e))
    }
}

/// One part of the mount: answers the kernel's questions about the nodes it owns.
pub trait Namespace: Send + Sync + 'static {
    /// A short name for log lines.
    fn name(&self) -> &'static str;

    /// What must happen before `key` can answer a request that needs `need`; `None` when it
    /// can answer now. Called on a FUSE thread: must not block on the network itself.
    fn prepare(&self, _key: &Key, _need: Need) -> Option<Wait> {
        None
    }

    /// Attributes of `key`.
    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError>;

    /// The child `name` of directory `parent`.
    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError>;

    /// Entries of directory `dir` after cookie `after` (0: from the start), without `.` and
    /// `..`, handed to `add` until it returns true (the reply is full).
    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError>;

    /// Opens regular file `key` for reading.
    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError>;

    /// The target of symlink `key`.
    fn readlink(&self, _key: &Key) -> Result<Vec<u8>, NsError> {
        Err(NsError::NotSymlink)
    }

    /// Extended attributes of `key`, names with their values.
    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError>;
}
