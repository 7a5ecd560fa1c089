//! Asset sets as directories ([`Sets`], keys `Path("<set>\0<path in the set>")`): each set is
//! laid out by its layout (`crate::sets::Layout`): file members are 0444 files holding their
//! blob, the additional-files archive is the root of its archive tree (members belong to
//! [`ArchiveTree`]), and the directories between (`workspace/`, `workspace/.image/`) are made
//! up. The catalog's names hand out a set's top node ([`Sets::top_of`]).
//!
//! Listing and stat fetch nothing; opening a file member or looking inside the archive member
//! first makes that member local ([`Namespace::prepare`]), verified against its own pin.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::FileType;

use super::archive_tree::ArchiveTree;
use super::asset_node::AssetNodes;
use super::namespace::{
    Attr, DirEntry, Entry, Key, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait, Xattrs,
};
use crate::catalog::{self, LiveCatalog};
use crate::config::AssetKind;
use crate::content::Content;
use crate::sets::{SetConfig, SetMember};

/// Separates the set's name from the path inside it in a key (names never hold NUL).
const SEPARATOR: char = '\0';

/// The namespace of every set's directory.
pub struct Sets {
    catalog: Arc<LiveCatalog>,
    assets: AssetNodes,
    started: SystemTime,
    me: Weak<Sets>,
}

/// What a path inside a set is.
enum SetNode<'a> {
    /// A directory of the layout.
    Dir,
    /// A member.
    Member(&'a SetMember),
}

impl Sets {
    /// Sets of `catalog`; archive members are nodes of `tree`.
    pub fn new(
        catalog: Arc<LiveCatalog>,
        content: Arc<Content>,
        tree: Arc<ArchiveTree>,
    ) -> Arc<Sets> {
        Arc::new_cyclic(|me| Sets {
            catalog,
            assets: AssetNodes::new(content, tree),
            started: SystemTime::now(),
            me: me.clone(),
        })
    }

    /// The top directory of set `name`.
    pub fn top_of(&self, name: &str) -> NodeRef {
        self.node(name, "")
    }

    fn node(&self, set: &str, rel: &str) -> NodeRef {
        NodeRef::of(&self.me, Key::Path(format!("{set}{SEPARATOR}{rel}").into()))
    }

    /// The set and the path inside it that `key` names.
    fn locate(&self, key: &Key) -> Result<(Arc<SetConfig>, String), NsError> {
        let Key::Path(p) = key else {
            return Err(NsError::NotFound);
        };
        let (name, rel) = p.split_once(SEPARATOR).ok_or(NsError::NotFound)?;
        match self.catalog.current().entry(name) {
            Some(catalog::Entry::Set(set)) => Ok((set, rel.to_string())),
            _ => Err(NsError::NotFound),
        }
    }

    fn mtime(&self, set: &SetConfig) -> SystemTime {
        match set.added_at {
            0 => self.started,
            t => UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
        }
    }
}

/// What `rel` is in `set`'s layout.
fn node_at<'a>(set: &'a SetConfig, rel: &str) -> Option<SetNode<'a>> {
    if rel.is_empty() {
        return Some(SetNode::Dir);
    }
    if let Some(m) = set.members.iter().find(|m| m.path == rel) {
        return Some(SetNode::Member(m));
    }
    let prefix = format!("{rel}/");
    set.members
        .iter()
        .any(|m| m.path.starts_with(&prefix))
        .then_some(SetNode::Dir)
}

/// The entries of directory `rel` of `set`'s layout: name → (is a directory).
fn children_of(set: &SetConfig, rel: &str) -> BTreeMap<String, bool> {
    let prefix = if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    };
    let mut out = BTreeMap::new();
    for m in &set.members {
        let Some(rest) = m.path.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((dir, _)) => out.insert(dir.to_string(), true),
            None => out.insert(rest.to_string(), m.asset.kind == AssetKind::Archive),
        };
    }
    out
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

impl Namespace for Sets {
    fn name(&self) -> &'static str {
        "sets"
    }

    fn prepare(&self, key: &Key, need: Need) -> Option<Wait> {
        let (set, rel) = self.locate(key).ok()?;
        let Some(SetNode::Member(m)) = node_at(&set, &rel) else {
            return None;
        };
        self.assets.prepare(&m.asset, need)
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let (set, rel) = self.locate(key)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Dir => Ok((Attr::dir(self.mtime(&set)), Ttl::Catalog)),
            SetNode::Member(m) => self.assets.attr(&m.asset, self.mtime(&set)),
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let (set, rel) = self.locate(parent)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(m) => self.assets.lookup(&m.asset, name),
            SetNode::Dir => {
                let name = std::str::from_utf8(name).map_err(|_| NsError::NotFound)?;
                let child = join(&rel, name);
                if name.contains('/') || node_at(&set, &child).is_none() {
                    return Err(NsError::NotFound);
                }
                let node = self.node(&set.name, &child);
                Ok(Entry::of(node.clone(), self.getattr(&node.key)?))
            }
        }
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let (set, rel) = self.locate(dir)?;
        if let SetNode::Member(m) = node_at(&set, &rel).ok_or(NsError::NotFound)? {
            return self.assets.readdir(&m.asset, after, add);
        }
        let children = children_of(&set, &rel);
        for (i, (name, is_dir)) in children.into_iter().enumerate().skip(after as usize) {
            let full = add(DirEntry {
                node: self.node(&set.name, &join(&rel, &name)),
                kind: if is_dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                },
                name: name.into_bytes(),
                cookie: i as u64 + 1,
            });
            if full {
                break;
            }
        }
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        let (set, rel) = self.locate(key)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(m) => self.assets.open(&m.asset),
            SetNode::Dir => Err(NsError::IsDir),
        }
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let (set, rel) = self.locate(key)?;
        let m = match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(m) => m,
            SetNode::Dir => return Ok(Vec::new()),
        };
        self.assets.xattrs(&m.asset)
    }
}
