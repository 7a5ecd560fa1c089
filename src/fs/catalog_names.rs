//! Catalog names as nodes ([`CatalogNames`], keys `Path(name)`): name prefixes are
//! directories, file-kind entries are 0444 files holding their blob, archive-kind entries are
//! the root directory of the archive's tree (its members belong to [`ArchiveTree`]), image-kind
//! entries (`docker://…`) are `docker/`'s directory of their image ([`Docker`]).
//!
//! Listing and stat fetch nothing. Opening a file entry, or looking inside an archive entry,
//! first makes the content local ([`Namespace::prepare`]). Until an archive is open its entry
//! shows placeholder attributes (0555, the time it was added); the dispatcher tells the kernel
//! to drop them once the archive opens. Asset sets are directories of [`Sets`]: their names
//! here hand out the set's top node.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::FileType;

use super::archive_tree::ArchiveTree;
use super::asset_node::AssetNodes;
use super::docker::Docker;
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait,
    Xattrs,
};
use super::sets::Sets;
use crate::catalog::{self, Asset, LiveCatalog};
use crate::config::AssetKind;
use crate::content::Content;

/// The catalog's names.
pub struct CatalogNames {
    catalog: Arc<LiveCatalog>,
    assets: AssetNodes,
    sets: Arc<Sets>,
    /// When the mount started: the time of entries from the config file.
    started: SystemTime,
    me: Weak<CatalogNames>,
}

impl CatalogNames {
    /// The namespace of `catalog`'s names; archive members are nodes of `tree`, images are
    /// shown by `docker`, sets are directories of `sets`.
    pub fn new(
        catalog: Arc<LiveCatalog>,
        content: Arc<Content>,
        tree: Arc<ArchiveTree>,
        docker: Arc<Docker>,
        sets: Arc<Sets>,
    ) -> Arc<CatalogNames> {
        Arc::new_cyclic(|me| CatalogNames {
            catalog,
            assets: AssetNodes::new(content, tree, docker),
            sets,
            started: SystemTime::now(),
            me: me.clone(),
        })
    }

    /// The node of catalog path `path`.
    pub fn node(&self, path: &str) -> NodeRef {
        NodeRef::of(&self.me, Key::Path(path.into()))
    }

    fn entry(&self, key: &Key) -> Result<catalog::Entry, NsError> {
        let path = match key {
            Key::Top => "",
            Key::Path(p) => p,
            _ => return Err(NsError::NotFound),
        };
        self.catalog.current().entry(path).ok_or(NsError::NotFound)
    }

    fn asset(&self, key: &Key) -> Result<Arc<Asset>, NsError> {
        match self.entry(key)? {
            catalog::Entry::Asset(a) => Ok(a),
            catalog::Entry::Dir | catalog::Entry::Set(_) => Err(NsError::IsDir),
        }
    }

    fn mtime(&self, a: &Asset) -> SystemTime {
        match a.added_at {
            0 => self.started,
            t => UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
        }
    }
}

fn full_path(dir: &Key, name: &str) -> String {
    match dir {
        Key::Path(p) if !p.is_empty() => format!("{p}/{name}"),
        _ => name.to_string(),
    }
}

fn kind_of(entry: &catalog::Entry) -> FileType {
    match entry {
        catalog::Entry::Dir | catalog::Entry::Set(_) => FileType::Directory,
        catalog::Entry::Asset(a) => match a.config.kind {
            AssetKind::Archive | AssetKind::Image => FileType::Directory,
            AssetKind::File => FileType::RegularFile,
        },
    }
}

impl Namespace for CatalogNames {
    fn name(&self) -> &'static str {
        "catalog"
    }

    fn prepare(&self, key: &Key, need: Need) -> Option<Wait> {
        let a = self.asset(key).ok()?;
        self.assets.prepare(&a.config, need)
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        match self.entry(key)? {
            catalog::Entry::Dir => Ok((Attr::dir(self.started), Ttl::Catalog)),
            catalog::Entry::Asset(a) => self.assets.attr(&a.config, self.mtime(&a)),
            catalog::Entry::Set(s) => self.sets.getattr(&self.sets.top_of(&s.name).key),
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        match self.entry(parent)? {
            catalog::Entry::Asset(a) => self.assets.lookup(&a.config, name),
            catalog::Entry::Set(s) => self.sets.lookup(&self.sets.top_of(&s.name).key, name),
            catalog::Entry::Dir => {
                let name = std::str::from_utf8(name).map_err(|_| NsError::NotFound)?;
                let path = full_path(parent, name);
                let node = match self.catalog.current().entry(&path) {
                    Some(catalog::Entry::Set(s)) => self.sets.top_of(&s.name),
                    _ => self.node(&path),
                };
                Ok(Entry::of(node.clone(), node.ns.getattr(&node.key)?))
            }
        }
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let path = match self.entry(dir)? {
            catalog::Entry::Asset(a) => return self.assets.readdir(&a.config, after, add),
            catalog::Entry::Set(s) => {
                return self
                    .sets
                    .readdir(&self.sets.top_of(&s.name).key, after, add)
            }
            catalog::Entry::Dir => match dir {
                Key::Path(p) => p.to_string(),
                _ => String::new(),
            },
        };
        let children = self.catalog.current().children(&path);
        list_from(children, after, add, |(name, entry)| {
            let node = match &entry {
                catalog::Entry::Set(s) => self.sets.top_of(&s.name),
                _ => self.node(&full_path(dir, &name)),
            };
            (name.into_bytes(), kind_of(&entry), node)
        });
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        self.assets.open(&self.asset(key)?.config)
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        match self.entry(key)? {
            catalog::Entry::Asset(a) => self.assets.xattrs(&a.config),
            catalog::Entry::Dir | catalog::Entry::Set(_) => Ok(Vec::new()),
        }
    }
}
