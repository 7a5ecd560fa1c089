//! The kernel's view: a read-only fuser `Filesystem` that only translates. Each request goes to
//! the [`Namespace`] owning the inode ([`NodeRef`]); answers become fuser replies, errors
//! become errno in one place ([`errno`]). It never speaks HTTP, builds no source and runs no
//! SQL: the namespaces ask `content` and `catalog` for what they need.
//!
//! When a namespace must fetch before it can answer (opening a file whose blob is not local,
//! listing an archive not indexed yet), the wait runs on the tokio runtime, never on a FUSE
//! thread, and the answer follows on a blocking thread; first the kernel is told to drop the
//! node's cached attributes, which may have changed (an archive root's mode and owner).
//!
//! The namespaces: [`root`] (top directory), [`catalog_names`] (catalog entries),
//! [`digests`] (`sha256/`), [`archive_tree`] (archive members), [`sets`] (asset sets),
//! [`docker`] (`docker/`, images by reference), [`image_tree`] (members of images' merged root
//! filesystems) and [`oras`] (`oras/`, SIF artifacts by reference). Open files live in
//! [`handles`], inode numbers and the kernel's lookup counts in [`inode`].

pub mod archive_tree;
mod asset_node;
mod blob_file;
pub mod catalog_names;
pub mod digests;
pub mod docker;
mod errno;
mod handles;
pub mod image_tree;
pub mod inode;
pub mod namespace;
pub mod oras;
mod resolutions;
pub mod root;
pub mod sets;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::catalog::LiveCatalog;
use crate::content::Content;
use handles::Handles;
use inode::Inodes;
use namespace::{Attr, Need, NodeRef, NsError};

pub use namespace::Namespace;

/// The FUSE filesystem.
pub struct LazyFs {
    inner: Arc<Dispatch>,
}

struct Dispatch {
    inodes: Inodes,
    handles: Handles,
    content: Arc<Content>,
    runtime: tokio::runtime::Handle,
    notifier: Arc<OnceLock<Notifier>>,
}

impl LazyFs {
    /// The mount's namespaces over `content` and `catalog`; waits run on `runtime`.
    /// `notifier` is filled in once the session exists (it tells the kernel about changed
    /// attributes).
    pub fn new(
        content: Arc<Content>,
        catalog: Arc<LiveCatalog>,
        runtime: tokio::runtime::Handle,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> LazyFs {
        let tree = archive_tree::ArchiveTree::new(content.clone());
        let digests = digests::Digests::new(catalog.clone(), content.clone());
        let docker =
            docker::Docker::new(content.clone(), image_tree::ImageTree::new(content.clone()));
        let sets = sets::Sets::new(
            catalog.clone(),
            content.clone(),
            tree.clone(),
            docker.clone(),
        );
        let names =
            catalog_names::CatalogNames::new(catalog, content.clone(), tree, docker.clone(), sets);
        let root = root::Root::new(
            vec![
                ("sha256", digests.top()),
                ("docker", docker.top()),
                ("oras", oras::Oras::new(content.clone()).top()),
            ],
            names,
        );
        LazyFs {
            inner: Arc::new(Dispatch {
                inodes: Inodes::new(root.top()),
                handles: Handles::default(),
                content,
                runtime,
                notifier,
            }),
        }
    }
}

/// fuser replies that can carry an error.
trait ErrorReply: Send + 'static {
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    )*};
}
error_reply!(ReplyEntry, ReplyDirectory, ReplyOpen);

impl Dispatch {
    fn node(&self, ino: INodeNo) -> Result<NodeRef, NsError> {
        self.inodes.node(ino.0).ok_or(NsError::NotFound)
    }

    /// Runs `answer` for `node` once what `need` requires is ready: at once when it is,
    /// otherwise after the namespace's wait has run on the runtime.
    fn when_ready<R: ErrorReply>(
        self: &Arc<Self>,
        ino: INodeNo,
        node: NodeRef,
        need: Need,
        reply: R,
        answer: impl FnOnce(&Dispatch, &NodeRef, R) + Send + 'static,
    ) {
        let Some(wait) = node.ns.prepare(&node.key, need) else {
            return answer(self, &node, reply);
        };
        let me = self.clone();
        self.runtime.spawn(async move {
            if let Err(e) = wait.await {
                return reply.fail(errno::of(&e));
            }
            // Before the answer: once the caller sees it, a stat must not find the attributes
            // cached from before the wait (an archive root's placeholder).
            me.attributes_changed(ino);
            // The answer reads local disk and SQLite: off the runtime's workers.
            let answered = tokio::task::spawn_blocking(move || answer(&me, &node, reply)).await;
            if let Err(e) = answered {
                tracing::error!("answering a request after a fetch failed: {e}");
            }
        });
    }

    /// Tells the kernel to ask again for `ino`'s attributes.
    fn attributes_changed(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(ino, -1, 0) {
                tracing::debug!("attribute invalidation of inode {}: {e}", ino.0);
            }
        }
    }
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: a.kind,
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
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
        self.inner.handles.set_passthrough(ok);
        tracing::info!(passthrough = ok, "FUSE session started");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let node = match self.inner.node(parent) {
            Ok(n) => n,
            Err(e) => return reply.error(errno::of(&e)),
        };
        let name = name.as_bytes().to_vec();
        self.inner.when_ready(
            parent,
            node,
            Need::Children,
            reply,
            move |d, node, reply| match node.ns.lookup(&node.key, &name) {
                Ok(e) => {
                    let ino = d.inodes.lookup(e.node);
                    reply.entry(&e.ttl.duration(), &file_attr(ino, &e.attr), Generation(0));
                }
                Err(e) => reply.error(errno::of(&e)),
            },
        );
    }

    /// Also serves `batch_forget`, which fuser splits into one `forget` per node.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let answer = self.inner.node(ino).and_then(|n| n.ns.getattr(&n.key));
        match answer {
            Ok((attr, ttl)) => reply.attr(&ttl.duration(), &file_attr(ino.0, &attr)),
            Err(e) => reply.error(errno::of(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let node = match self.inner.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(errno::of(&e)),
        };
        self.inner.when_ready(
            ino,
            node,
            Need::Children,
            reply,
            move |d, node, mut reply| {
                // Kernel offsets 1 and 2 are `.` and `..`; the namespace's cookies follow.
                if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
                    return reply.ok();
                }
                if offset <= 1 && reply.add(INodeNo(1), 2, FileType::Directory, "..") {
                    return reply.ok();
                }
                let listed = node
                    .ns
                    .readdir(&node.key, offset.saturating_sub(2), &mut |e| {
                        let child = d.inodes.peek(e.node);
                        reply.add(
                            INodeNo(child),
                            e.cookie + 2,
                            e.kind,
                            OsStr::from_bytes(&e.name),
                        )
                    });
                match listed {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno::of(&e)),
                }
            },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let node = match self.inner.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(errno::of(&e)),
        };
        self.inner.when_ready(
            ino,
            node,
            Need::Open,
            reply,
            move |d, node, reply| match node.ns.open(&node.key) {
                Ok(file) => d.handles.open(ino.0, file, reply),
                Err(e) => reply.error(errno::of(&e)),
            },
        );
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
        let Some(file) = self.inner.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match file.read(offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno::of(&e)),
        }
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
        self.inner.handles.release(fh.0);
        reply.ok();
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.node(ino).and_then(|n| n.ns.readlink(&n.key)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno::of(&e)),
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

    /// No node takes ioctls: ENOTTY, as a regular file on disk answers (`isatty` on every
    /// Python `open()` asks; fuser's default logs a warning per call).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.inner.node(ino).and_then(|n| n.ns.xattrs(&n.key)) {
            Ok(all) => match all
                .into_iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
            {
                Some((_, v)) => reply_xattr(reply, size, &v),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(errno::of(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.inner.node(ino).and_then(|n| n.ns.xattrs(&n.key)) {
            Ok(all) => {
                let mut names = Vec::new();
                for (k, _) in all {
                    names.extend_from_slice(&k);
                    names.push(0);
                }
                reply_xattr(reply, size, &names);
            }
            Err(e) => reply.error(errno::of(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used = match self.inner.content.store().used_bytes() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("statfs: {e}");
                0
            }
        };
        reply.statfs(used.div_ceil(4096), 0, 0, 0, 0, 4096, 255, 4096);
    }
}
