//! `sha256/` ([`Digests`], keys `Top` and `Digest(d)`): every blob the store holds or a catalog
//! entry pins, as a 0444 file named by its hex digest. Opening one that is only pinned fetches
//! it from the entry's location.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use fuser::FileType;

use super::blob_file;
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait,
    Xattrs,
};
use crate::catalog::LiveCatalog;
use crate::content::Content;
use crate::digest::Digest;

/// The `sha256/` directory.
pub struct Digests {
    catalog: Arc<LiveCatalog>,
    content: Arc<Content>,
    started: SystemTime,
    me: Weak<Digests>,
}

impl Digests {
    /// `sha256/` over `content`'s store and `catalog`'s pins.
    pub fn new(catalog: Arc<LiveCatalog>, content: Arc<Content>) -> Arc<Digests> {
        Arc::new_cyclic(|me| Digests {
            catalog,
            content,
            started: SystemTime::now(),
            me: me.clone(),
        })
    }

    /// The node of the directory itself.
    pub fn top(&self) -> NodeRef {
        self.node(Key::Top)
    }

    fn node(&self, key: Key) -> NodeRef {
        NodeRef::of(&self.me, key)
    }

    fn digest(key: &Key) -> Result<&Digest, NsError> {
        match key {
            Key::Digest(d) => Ok(d),
            Key::Top => Err(NsError::IsDir),
            _ => Err(NsError::NotFound),
        }
    }

    /// Whether `d` is shown: held, or pinned by the catalog.
    fn shown(&self, d: &Digest) -> Result<bool, NsError> {
        Ok(self.content.held(d)?.is_some() || self.catalog.current().by_digest(d).is_some())
    }
}

impl Namespace for Digests {
    fn name(&self) -> &'static str {
        "sha256"
    }

    fn prepare(&self, key: &Key, need: Need) -> Option<Wait> {
        match (key, need) {
            (Key::Digest(d), Need::Open) => {
                blob_file::prepare_open(&self.content, &self.catalog.current().source_of(d))
            }
            _ => None,
        }
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let d = match key {
            Key::Top => return Ok((Attr::dir(self.started), Ttl::Catalog)),
            other => Digests::digest(other)?,
        };
        let readers = self.content.blob_readers(d);
        match self.content.held(d)? {
            Some(info) => Ok((
                Attr::file(info.size, self.started).readable_by(readers),
                Ttl::Immutable,
            )),
            None => Ok((
                Attr::file(0, self.started).readable_by(readers),
                Ttl::Unsettled,
            )),
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        if *parent != Key::Top {
            return Err(NsError::NotDir);
        }
        let name = std::str::from_utf8(name).map_err(|_| NsError::NotFound)?;
        let d = Digest::parse(name).map_err(|_| NsError::NotFound)?;
        if name.len() != 64 || d.hex() != name || !self.shown(&d)? {
            return Err(NsError::NotFound);
        }
        let node = self.node(Key::Digest(d));
        Ok(Entry::of(node.clone(), self.getattr(&node.key)?))
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        if *dir != Key::Top {
            return Err(NsError::NotDir);
        }
        let mut digests: Vec<Digest> = self
            .content
            .store()
            .blobs()
            .map_err(|e| NsError::from(crate::content::ContentError::Store(e)))?
            .into_iter()
            .map(|b| b.digest)
            .collect();
        digests.extend(self.catalog.current().pinned_digests());
        digests.sort();
        digests.dedup();
        list_from(digests, after, add, |d| {
            let name = d.hex().into_bytes();
            (name, FileType::RegularFile, self.node(Key::Digest(d)))
        });
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        let d = Digests::digest(key)?;
        blob_file::open(&self.content, &self.catalog.current().source_of(d))
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let d = match key {
            Key::Top => return Ok(Vec::new()),
            other => Digests::digest(other)?,
        };
        let catalog = self.catalog.current();
        let source = catalog
            .by_digest(d)
            .map(|a| a.config.location.describe())
            .unwrap_or_else(|| "store".to_string());
        let cached = match self.content.held(d)? {
            Some(info) => format!("{}/{}", info.size, info.size),
            None => match self.content.chunked_resident(&catalog.source_of(d)) {
                Some((held, size)) => format!("{held}/{size}"),
                None => "0/unknown".to_string(),
            },
        };
        Ok(vec![
            (b"user.lazycas.digest".to_vec(), d.to_string().into_bytes()),
            (b"user.lazycas.source".to_vec(), source.into_bytes()),
            (b"user.lazycas.cached".to_vec(), cached.into_bytes()),
        ])
    }
}
