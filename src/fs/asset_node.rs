//! A node that shows one asset ([`AssetNodes`]): a file-kind asset as a 0444 file holding its
//! blob, an archive-kind asset as the root of its archive tree (members belong to
//! [`ArchiveTree`]), an image-kind asset (`docker://…`) as `docker/`'s image directory for its
//! reference (resolution, tag TTL, the private-image gate and the members all belong to
//! [`Docker`]). Catalog entries and set members are both such nodes; their namespaces find the
//! asset for a key and hand the rest to these functions, so the two behave alike.

use std::sync::Arc;
use std::time::SystemTime;

use super::archive_tree::ArchiveTree;
use super::blob_file;
use super::docker::Docker;
use super::namespace::{
    Attr, DirEntry, Entry, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait, Xattrs,
};
use crate::archive::MemberId;
use crate::config::{AssetConfig, AssetKind};
use crate::content::{Content, OpenArchive};
use crate::oci::reference::ImageReference;
use crate::source::Location;

/// What showing an asset needs: content to make it local, the tree its archives' members
/// belong to, `docker/` for its images.
pub struct AssetNodes {
    content: Arc<Content>,
    tree: Arc<ArchiveTree>,
    docker: Arc<Docker>,
}

/// The reference of image asset `a`.
fn image_reference(a: &AssetConfig) -> Option<&ImageReference> {
    match &a.location {
        Location::Image(reference) => Some(reference),
        _ => None,
    }
}

impl AssetNodes {
    /// Assets made local through `content`; archive members are nodes of `tree`, images are
    /// `docker`'s image directories.
    pub fn new(content: Arc<Content>, tree: Arc<ArchiveTree>, docker: Arc<Docker>) -> AssetNodes {
        AssetNodes {
            content,
            tree,
            docker,
        }
    }

    /// `docker/`'s image directory for image asset `a`, with its reference.
    fn image_dir<'a>(&self, a: &'a AssetConfig) -> Option<(&'a ImageReference, NodeRef)> {
        image_reference(a).map(|r| (r, self.docker.image_of(r)))
    }

    /// The open archive of archive asset `a`, if it is open.
    fn opened(&self, a: &AssetConfig) -> Result<Option<Arc<OpenArchive>>, NsError> {
        Ok(self
            .content
            .resolved_digest(&a.source())?
            .and_then(|d| self.content.archives().get(&d)))
    }

    /// The open archive of `a`, which [`AssetNodes::prepare`] made ready.
    fn archive(&self, a: &AssetConfig) -> Result<Arc<OpenArchive>, NsError> {
        if a.kind != AssetKind::Archive {
            return Err(NsError::NotDir);
        }
        self.opened(a)?.ok_or(NsError::NotFound)
    }

    /// What must happen before `a` answers a request needing `need`.
    pub fn prepare(&self, a: &AssetConfig, need: Need) -> Option<Wait> {
        if let Some((_, dir)) = self.image_dir(a) {
            return self.docker.prepare(&dir.key, need);
        }
        match (a.kind, need) {
            (AssetKind::Archive, Need::Children) if !matches!(self.opened(a), Ok(Some(_))) => {
                let (content, src) = (self.content.clone(), a.source());
                Some(Box::pin(async move {
                    content.archives().open(&content, &src).await?;
                    Ok(())
                }))
            }
            (AssetKind::File, Need::Open) => blob_file::prepare_open(&self.content, &a.source()),
            _ => None,
        }
    }

    /// Attributes of `a`; `mtime` is used where the asset itself has none to show (a file, an
    /// archive not open yet: placeholder attributes the kernel is told to drop once it opens).
    pub fn attr(&self, a: &AssetConfig, mtime: SystemTime) -> Result<(Attr, Ttl), NsError> {
        if let Some((reference, dir)) = self.image_dir(a) {
            let (attr, ttl) = self.docker.getattr(&dir.key)?;
            return Ok((self.docker.gated(reference, attr), ttl));
        }
        match a.kind {
            AssetKind::Archive | AssetKind::Image => match self.opened(a)? {
                Some(open) => Ok((ArchiveTree::attr_in(&open, MemberId::ROOT)?, Ttl::Catalog)),
                None => Ok((Attr::dir(mtime), Ttl::Catalog)),
            },
            AssetKind::File => {
                let size = self.content.known_size(&a.source())?;
                let ttl = if size.is_some() {
                    Ttl::Catalog
                } else {
                    Ttl::Unsettled
                };
                Ok((Attr::file(size.unwrap_or(0), mtime), ttl))
            }
        }
    }

    /// `lookup(name)` in the root of archive asset `a` (or image asset `a`'s directory).
    pub fn lookup(&self, a: &AssetConfig, name: &[u8]) -> Result<Entry, NsError> {
        if let Some((_, dir)) = self.image_dir(a) {
            return self.docker.lookup(&dir.key, name);
        }
        let open = self.archive(a)?;
        self.tree.lookup_in(&open, MemberId::ROOT, name)
    }

    /// `readdir` of the root of archive asset `a` (or image asset `a`'s directory).
    pub fn readdir(
        &self,
        a: &AssetConfig,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        if let Some((_, dir)) = self.image_dir(a) {
            return self.docker.readdir(&dir.key, after, add);
        }
        let open = self.archive(a)?;
        self.tree.readdir_in(&open, MemberId::ROOT, after, add)
    }

    /// Opens file asset `a` (after [`AssetNodes::prepare`]).
    pub fn open(&self, a: &AssetConfig) -> Result<Box<dyn OpenFile>, NsError> {
        if a.kind != AssetKind::File {
            return Err(NsError::IsDir);
        }
        blob_file::open(&self.content, &a.source())
    }

    /// `user.lazycas.digest` (pinned, or what the location resolved to), `.source` and
    /// `.cached` (bytes held / size, chunks counted for a partly present image).
    pub fn xattrs(&self, a: &AssetConfig) -> Result<Xattrs, NsError> {
        if let Some((_, dir)) = self.image_dir(a) {
            return self.docker.xattrs(&dir.key);
        }
        let src = a.source();
        let digest = self.content.resolved_digest(&src)?;
        let held = self.content.local(&src)?;
        let partly = self.content.chunked_resident(&src);
        let cached = match (held, partly, a.size) {
            (Some(info), _, _) => format!("{}/{}", info.size, info.size),
            (None, Some((held, size)), _) => format!("{held}/{size}"),
            (None, None, Some(s)) => format!("0/{s}"),
            (None, None, None) => "0/unknown".to_string(),
        };
        let mut v = Vec::with_capacity(3);
        if let Some(d) = a.sha256.or(digest) {
            v.push((b"user.lazycas.digest".to_vec(), d.to_string().into_bytes()));
        }
        v.push((
            b"user.lazycas.source".to_vec(),
            src.location.describe().into_bytes(),
        ));
        v.push((b"user.lazycas.cached".to_vec(), cached.into_bytes()));
        Ok(v)
    }
}
