//! The flattened root filesystems of open images as nodes ([`ImageTree`], keys
//! `Member(manifest digest, merged node id)`): each merged node is served from the layer archive
//! and member it comes from ([`crate::oci::whiteout::Origin`]), through [`ArchiveTree`]'s
//! `*_in` functions, with the link count the merge computed. The image's root (`rootfs/`)
//! belongs to whoever shows the image (`docker/`), which answers for it with the functions here.

use std::sync::{Arc, Weak};

use super::archive_tree::{file_type, ArchiveTree};
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, NodeRef, NsError, OpenFile, Ttl, Xattrs,
};
use crate::archive::MemberId;
use crate::content::{Content, OpenArchive, OpenImage};
use crate::oci::whiteout::{MergedNode, NodeId};

/// Nodes of every open image.
pub struct ImageTree {
    content: Arc<Content>,
    me: Weak<ImageTree>,
}

impl ImageTree {
    /// The namespace over `content`'s open images.
    pub fn new(content: Arc<Content>) -> Arc<ImageTree> {
        Arc::new_cyclic(|me| ImageTree {
            content,
            me: me.clone(),
        })
    }

    fn node(&self, image: &OpenImage, id: NodeId) -> NodeRef {
        NodeRef::of(
            &self.me,
            Key::Member(image.digest, MemberId(u64::from(id.0))),
        )
    }

    fn open_image(&self, key: &Key) -> Result<(Arc<OpenImage>, NodeId), NsError> {
        match key {
            Key::Member(d, id) => {
                let image = self.content.images().get(d).ok_or(NsError::NotFound)?;
                let id = u32::try_from(id.0).map_err(|_| NsError::NotFound)?;
                Ok((image, NodeId(id)))
            }
            _ => Err(NsError::NotFound),
        }
    }

    /// `lookup(dir, name)` inside `image`.
    pub fn lookup_in(&self, image: &OpenImage, dir: NodeId, name: &[u8]) -> Result<Entry, NsError> {
        let dir_node = merged(image, dir)?;
        if file_type(dir_node.kind) != fuser::FileType::Directory {
            return Err(NsError::NotDir);
        }
        let id = image.tree.lookup(dir, name).ok_or(NsError::NotFound)?;
        Ok(Entry {
            node: self.node(image, id),
            attr: ImageTree::attr_in(image, id)?,
            ttl: Ttl::Immutable,
        })
    }

    /// `readdir(dir)` inside `image`.
    pub fn readdir_in(
        &self,
        image: &OpenImage,
        dir: NodeId,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        list_from(image.tree.children(dir), after, add, |(id, n)| {
            (n.name.to_vec(), file_type(n.kind), self.node(image, id))
        });
        Ok(())
    }

    /// Attributes of node `id` of `image`: its member's, with the merged link count.
    pub fn attr_in(image: &OpenImage, id: NodeId) -> Result<Attr, NsError> {
        let (n, layer) = origin(image, id)?;
        let attr = ArchiveTree::attr_in(layer, n.origin.member)?;
        Ok(Attr {
            nlink: n.nlink,
            ..attr
        })
    }

    /// The member's xattrs (and the layer's `user.lazycas.*`) of node `id` of `image`.
    pub fn xattrs_in(image: &OpenImage, id: NodeId) -> Result<Xattrs, NsError> {
        let (n, layer) = origin(image, id)?;
        ArchiveTree::xattrs_in(layer, n.origin.member)
    }
}

fn merged(image: &OpenImage, id: NodeId) -> Result<&MergedNode, NsError> {
    image.tree.node(id).ok_or(NsError::NotFound)
}

/// The merged node `id` and the layer archive it is served from.
fn origin(image: &OpenImage, id: NodeId) -> Result<(&MergedNode, &Arc<OpenArchive>), NsError> {
    let n = merged(image, id)?;
    let layer = image.layers.get(n.origin.layer).ok_or(NsError::NotFound)?;
    Ok((n, layer))
}

impl Namespace for ImageTree {
    fn name(&self) -> &'static str {
        "image"
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let (image, id) = self.open_image(key)?;
        Ok((ImageTree::attr_in(&image, id)?, Ttl::Immutable))
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let (image, dir) = self.open_image(parent)?;
        self.lookup_in(&image, dir, name)
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let (image, dir) = self.open_image(dir)?;
        self.readdir_in(&image, dir, after, add)
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        let (image, id) = self.open_image(key)?;
        let (n, layer) = origin(&image, id)?;
        if file_type(n.kind) == fuser::FileType::Directory {
            return Err(NsError::IsDir);
        }
        Ok(ArchiveTree::open_in(layer.clone(), n.origin.member))
    }

    fn readlink(&self, key: &Key) -> Result<Vec<u8>, NsError> {
        let (image, id) = self.open_image(key)?;
        let (n, layer) = origin(&image, id)?;
        if file_type(n.kind) != fuser::FileType::Symlink {
            return Err(NsError::NotSymlink);
        }
        ArchiveTree::readlink_in(layer, n.origin.member)
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let (image, id) = self.open_image(key)?;
        ImageTree::xattrs_in(&image, id)
    }
}
