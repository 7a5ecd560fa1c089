//! The mount's top directory ([`Root`], key `Top`): the directories the mount reserves
//! (`sha256/`; next `docker/`, `oras/`), each the top of its own namespace, then the catalog's
//! top-level names. Adding a namespace is one more `(name, node)` pair given to [`Root::new`].

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use fuser::FileType;

use super::catalog_names::CatalogNames;
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, NodeRef, NsError, OpenFile, Ttl, Xattrs,
};

/// The top directory.
pub struct Root {
    reserved: Vec<(&'static str, NodeRef)>,
    catalog: Arc<CatalogNames>,
    started: SystemTime,
    me: Weak<Root>,
}

impl Root {
    /// `reserved` directories first, then `catalog`'s names.
    pub fn new(reserved: Vec<(&'static str, NodeRef)>, catalog: Arc<CatalogNames>) -> Arc<Root> {
        Arc::new_cyclic(|me| Root {
            reserved,
            catalog,
            started: SystemTime::now(),
            me: me.clone(),
        })
    }

    /// The node of the mount root (inode 1).
    pub fn top(&self) -> NodeRef {
        NodeRef::of(&self.me, Key::Top)
    }
}

impl Namespace for Root {
    fn name(&self) -> &'static str {
        "root"
    }

    fn getattr(&self, _key: &Key) -> Result<(Attr, Ttl), NsError> {
        Ok((Attr::dir(self.started), Ttl::Catalog))
    }

    fn lookup(&self, _parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        if let Some((_, node)) = self.reserved.iter().find(|(n, _)| n.as_bytes() == name) {
            return Ok(Entry::of(node.clone(), node.ns.getattr(&node.key)?));
        }
        self.catalog.lookup(&Key::Top, name)
    }

    fn readdir(
        &self,
        _dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let fixed = self.reserved.len() as u64;
        let full = list_from(self.reserved.iter(), after, add, |(name, node)| {
            (name.as_bytes().to_vec(), FileType::Directory, node.clone())
        });
        if full {
            return Ok(());
        }
        // The catalog's cookies follow the reserved ones.
        self.catalog
            .readdir(&Key::Top, after.saturating_sub(fixed), &mut |mut e| {
                e.cookie += fixed;
                add(e)
            })
    }

    fn open(&self, _key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        Err(NsError::IsDir)
    }

    fn xattrs(&self, _key: &Key) -> Result<Xattrs, NsError> {
        Ok(Vec::new())
    }
}
