//! Asset sets as directories ([`Sets`], keys `Path("<set>\0<path in the set>")`): each set is
//! laid out by its layout (`crate::sets::Layout`): file members are 0444 files holding their
//! blob, the additional-files archive is the root of its archive tree (members belong to
//! [`ArchiveTree`]), a `docker://` image is its root filesystem, answered by `docker/`'s
//! `rootfs/` node for that reference (members belong to the image tree), a member the set holds
//! inline is a 0444 file of those bytes, and the directories between (`workspace/`,
//! `workspace/.image/`) are made up. The catalog's names hand out a
//! set's top node ([`Sets::top_of`]).
//!
//! Listing and stat fetch nothing; opening a file member or looking inside the archive or image
//! member first makes that member local ([`Namespace::prepare`]), verified against its own pin
//! (an image's: the manifest digest in its reference, and its image ID).

use std::collections::BTreeMap;
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
use crate::catalog::{self, LiveCatalog};
use crate::content::{Content, ContentError};
use crate::sets::{ImageMember, InlineFile, MemberContent, SetConfig, SetMember};

/// Separates the set's name from the path inside it in a key (names never hold NUL).
const SEPARATOR: char = '\0';

/// The namespace of every set's directory.
pub struct Sets {
    catalog: Arc<LiveCatalog>,
    assets: AssetNodes,
    docker: Arc<Docker>,
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
    /// Sets of `catalog`; archive members are nodes of `tree`, images are shown by `docker`.
    pub fn new(
        catalog: Arc<LiveCatalog>,
        content: Arc<Content>,
        tree: Arc<ArchiveTree>,
        docker: Arc<Docker>,
    ) -> Arc<Sets> {
        Arc::new_cyclic(|me| Sets {
            catalog,
            assets: AssetNodes::new(content, tree, docker.clone()),
            docker,
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

    /// `docker/`'s `rootfs/` node for image member `image` of `set`, once what the reference
    /// resolved to (if it has been) carries the image ID the member pins.
    fn image_rootfs(&self, set: &SetConfig, image: &ImageMember) -> Result<NodeRef, NsError> {
        if let (Some(pinned), Some(resolved)) =
            (image.image_id, self.docker.last_resolved(&image.reference))
        {
            if resolved.config.digest != pinned {
                return Err(ContentError::PinConflict {
                    label: format!("{} (image ID of {})", set.name, image.reference),
                    pinned,
                    stated: resolved.config.digest,
                }
                .into());
            }
        }
        Ok(self.docker.rootfs_of(&image.reference))
    }

    /// Resolves image member `image` and checks its image ID before any layer is fetched, then
    /// opens the image as `docker/` does for its `rootfs/`.
    fn prepare_image(&self, set: &SetConfig, image: &ImageMember, need: Need) -> Option<Wait> {
        let rootfs = self.docker.rootfs_of(&image.reference);
        if image.image_id.is_none() {
            return self.docker.prepare(&rootfs.key, need);
        }
        let resolve = self
            .docker
            .prepare(&self.docker.image_of(&image.reference).key, Need::Children);
        let me = self.me.upgrade()?;
        let (set, image) = (set.clone(), image.clone());
        Some(Box::pin(async move {
            if let Some(resolve) = resolve {
                resolve.await?;
            }
            me.image_rootfs(&set, &image)?;
            match me.docker.prepare(&rootfs.key, need) {
                Some(open) => open.await,
                None => Ok(()),
            }
        }))
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
            None => out.insert(rest.to_string(), m.content.is_dir()),
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
        match &m.content {
            MemberContent::Asset(a) => self.assets.prepare(a, need),
            MemberContent::Image(i) => self.prepare_image(&set, i, need),
            MemberContent::Inline(_) => None,
        }
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let (set, rel) = self.locate(key)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Dir => Ok((Attr::dir(self.mtime(&set)), Ttl::Catalog)),
            SetNode::Member(m) => match &m.content {
                MemberContent::Asset(a) => self.assets.attr(a, self.mtime(&set)),
                MemberContent::Image(i) => {
                    let rootfs = self.image_rootfs(&set, i)?;
                    let (attr, ttl) = self.docker.getattr(&rootfs.key)?;
                    Ok((self.docker.gated(&i.reference, attr), ttl))
                }
                MemberContent::Inline(f) => Ok((
                    Attr::file(f.bytes.len() as u64, self.mtime(&set)),
                    Ttl::Catalog,
                )),
            },
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let (set, rel) = self.locate(parent)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(m) => match &m.content {
                MemberContent::Asset(a) => self.assets.lookup(a, name),
                MemberContent::Image(i) => {
                    let rootfs = self.image_rootfs(&set, i)?;
                    self.docker.lookup(&rootfs.key, name)
                }
                MemberContent::Inline(_) => Err(NsError::NotDir),
            },
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
            return match &m.content {
                MemberContent::Asset(a) => self.assets.readdir(a, after, add),
                MemberContent::Image(i) => {
                    let rootfs = self.image_rootfs(&set, i)?;
                    self.docker.readdir(&rootfs.key, after, add)
                }
                MemberContent::Inline(_) => Err(NsError::NotDir),
            };
        }
        let children = children_of(&set, &rel);
        list_from(children, after, add, |(name, is_dir)| {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            let node = self.node(&set.name, &join(&rel, &name));
            (name.into_bytes(), kind, node)
        });
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        let (set, rel) = self.locate(key)?;
        match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(SetMember {
                content: MemberContent::Asset(a),
                ..
            }) => self.assets.open(a),
            SetNode::Member(SetMember {
                content: MemberContent::Inline(f),
                ..
            }) => Ok(Box::new(InlineReader(f.clone()))),
            SetNode::Member(_) | SetNode::Dir => Err(NsError::IsDir),
        }
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let (set, rel) = self.locate(key)?;
        let m = match node_at(&set, &rel).ok_or(NsError::NotFound)? {
            SetNode::Member(m) => m,
            SetNode::Dir => return Ok(Vec::new()),
        };
        match &m.content {
            MemberContent::Asset(a) => self.assets.xattrs(a),
            MemberContent::Image(i) => {
                let rootfs = self.image_rootfs(&set, i)?;
                self.docker.xattrs(&rootfs.key)
            }
            MemberContent::Inline(f) => {
                let size = f.bytes.len();
                Ok(vec![
                    (
                        b"user.lazycas.digest".to_vec(),
                        f.digest.to_string().into_bytes(),
                    ),
                    (b"user.lazycas.source".to_vec(), b"inline".to_vec()),
                    (
                        b"user.lazycas.cached".to_vec(),
                        format!("{size}/{size}").into_bytes(),
                    ),
                ])
            }
        }
    }
}

/// An open inline member: its bytes are in memory.
struct InlineReader(InlineFile);

impl OpenFile for InlineReader {
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, NsError> {
        let bytes = &self.0.bytes;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}
