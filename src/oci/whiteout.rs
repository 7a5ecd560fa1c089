//! Layer flattening: the merged tree of an image's layers, as the OCI image spec's
//! "Applying Changesets" defines it. Pure: it reads layer trees and builds an in-memory tree.
//!
//! Input is one [`LayerTree`] per layer, bottom first: each layer's tree *after* tar extraction
//! (what [`ArchiveIndex`] holds, which implements the trait; [`LayerListing`] builds one from a
//! list of paths for tests and tools). Each layer is applied over the tree so far, directory by
//! directory, with these rules:
//! - **Whiteouts first, whatever their position in the layer.** `.wh..wh..opq` in a directory
//!   hides every child the lower layers gave it; `.wh.<name>` removes the lower `<name>` with its
//!   whole subtree. They only act on lower layers: an entry of the same layer with the same name
//!   stays (so `.wh.d` + `d/` in one layer is a fresh `d`). Whiteout names that name nothing
//!   (`.wh.`, `.wh..`, `.wh...`) or use the reserved `.wh..wh.` prefix are ignored, and no
//!   `.wh.*` entry is ever shown.
//! - **Then the layer's entries.** A directory over a directory merges (the upper one's
//!   attributes win, the lower children stay unless whited out); anything else replaces what was
//!   there, subtree included: a file over a directory, a directory over a file or symlink.
//! - **Hard links** within a layer share a member id, so two merged names can point at the same
//!   `(layer, member)`; [`MergedNode::nlink`] counts the names left after merging.
//!
//! Output is a [`MergedTree`]: nodes numbered breadth-first in name order (the root is
//! [`NodeId::ROOT`]), each saying which layer and member it comes from ([`Origin`]), so the
//! filesystem can serve attributes and bytes from that layer's index.
//!
//! A directory a layer only implies (the parent of its entries, with no tar entry of its own,
//! which umoci writes when only a file below changed) keeps the attributes of the directory below
//! it ([`LayerEntry::listed`]). Not handled here: a lower-layer symlink on the path of an upper
//! entry is replaced, not followed (runtimes differ; the spec is silent).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::archive::{ArchiveError, ArchiveIndex, MemberId, MemberKind};

/// The whiteout prefix.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Names starting with this are reserved by the spec (aufs metadata); never shown, never acted on.
const RESERVED_PREFIX: &[u8] = b".wh..wh.";

/// One entry of a layer's directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LayerEntry {
    /// One path component.
    pub name: Vec<u8>,
    /// The member it names in that layer (hard links share one).
    pub member: MemberId,
    /// What the member is.
    pub kind: MemberKind,
    /// False for a directory the layer only implies (a parent of its entries with no tar entry
    /// of its own): it does not change the attributes of the directory below it.
    pub listed: bool,
}

/// A layer's extracted tree, as the merge reads it: directory listings by member id.
pub trait LayerTree {
    /// What reading the tree can fail with.
    type Error;
    /// The layer's root directory.
    fn root(&self) -> MemberId;
    /// The entries of directory `dir`, in any order.
    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, Self::Error>;
}

impl<T: LayerTree + ?Sized> LayerTree for &T {
    type Error = T::Error;
    fn root(&self) -> MemberId {
        (**self).root()
    }
    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, T::Error> {
        (**self).children(dir)
    }
}

impl<T: LayerTree + ?Sized> LayerTree for Arc<T> {
    type Error = T::Error;
    fn root(&self) -> MemberId {
        (**self).root()
    }
    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, T::Error> {
        (**self).children(dir)
    }
}

/// Entries read per `readdir` call when walking an archive index.
const READDIR_BATCH: usize = 1024;

impl LayerTree for ArchiveIndex {
    type Error = ArchiveError;

    fn root(&self) -> MemberId {
        ArchiveIndex::root(self)
    }

    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, ArchiveError> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let batch = self.readdir(dir, offset, READDIR_BATCH)?;
            let Some(last) = batch.last() else {
                return Ok(out);
            };
            offset = last.offset;
            out.extend(batch.into_iter().map(|e| LayerEntry {
                name: e.name,
                member: e.member.id,
                kind: e.member.kind,
                listed: !e.member.implied,
            }));
        }
    }
}

/// Where a merged node comes from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Origin {
    /// The layer's position in the manifest, 0 = bottom.
    pub layer: usize,
    /// The member in that layer's index.
    pub member: MemberId,
}

/// A node's number in a [`MergedTree`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The merged root directory.
    pub const ROOT: NodeId = NodeId(0);
}

/// One node of the merged tree.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MergedNode {
    /// Its name in its parent (empty for the root).
    pub name: Box<[u8]>,
    /// Its parent (the root is its own parent).
    pub parent: NodeId,
    /// What it is.
    pub kind: MemberKind,
    /// The layer and member it is served from (for a directory: the topmost layer having it).
    pub origin: Origin,
    /// Names left pointing at this origin (hard links), or 2 + subdirectories for a directory.
    pub nlink: u32,
    /// Children are the nodes `first_child .. first_child + child_count`, in name order.
    first_child: u32,
    child_count: u32,
}

/// The flattened tree of an image. Immutable once built.
#[derive(Clone, Debug)]
pub struct MergedTree {
    nodes: Vec<MergedNode>,
}

impl MergedTree {
    /// How many nodes (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// False: a merged tree always has its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node `id`, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&MergedNode> {
        self.nodes.get(id.0 as usize)
    }

    /// The children of directory `dir`, in name order (empty for non-directories).
    pub fn children(&self, dir: NodeId) -> impl Iterator<Item = (NodeId, &MergedNode)> + '_ {
        let range = self
            .node(dir)
            .map_or(0..0, |n| n.first_child..n.first_child + n.child_count);
        range.map(move |i| (NodeId(i), &self.nodes[i as usize]))
    }

    /// The child `name` of directory `dir`.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let n = self.node(dir)?;
        let start = n.first_child as usize;
        let siblings = &self.nodes[start..start + n.child_count as usize];
        siblings
            .binary_search_by(|c| (*c.name).cmp(name))
            .ok()
            .map(|i| NodeId((start + i) as u32))
    }

    /// The node at `path` (components separated by `/`; empty is the root).
    pub fn lookup_path(&self, path: &[u8]) -> Option<NodeId> {
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .try_fold(NodeId::ROOT, |dir, name| self.lookup(dir, name))
    }

    /// The path of `id` from the root, without a leading `/` (empty for the root).
    pub fn path(&self, id: NodeId) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != NodeId::ROOT {
            let Some(n) = self.node(cur) else { break };
            parts.push(&n.name[..]);
            cur = n.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// Every node with its id, breadth-first (the root first).
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &MergedNode)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u32), n))
    }
}

/// Merges `layers`, bottom first, into one tree. Fails only if a layer cannot be read.
pub fn merge_layers<L: LayerTree>(
    layers: impl IntoIterator<Item = L>,
) -> Result<MergedTree, L::Error> {
    let mut builder = Builder::new();
    for (position, layer) in layers.into_iter().enumerate() {
        builder.apply_layer(position, &layer)?;
    }
    Ok(builder.finish())
}

/// Index into the builder's arena.
type Slot = usize;
/// The root's slot.
const ROOT_SLOT: Slot = 0;

struct BuildNode {
    kind: MemberKind,
    origin: Origin,
    children: BTreeMap<Box<[u8]>, Slot>,
}

/// The tree while layers are applied: an arena with freed slots reused.
struct Builder {
    slots: Vec<Option<BuildNode>>,
    free: Vec<Slot>,
}

impl Builder {
    fn new() -> Builder {
        let root = BuildNode {
            kind: MemberKind::Dir,
            origin: Origin {
                layer: 0,
                member: MemberId::ROOT,
            },
            children: BTreeMap::new(),
        };
        Builder {
            slots: vec![Some(root)],
            free: Vec::new(),
        }
    }

    fn node(&mut self, slot: Slot) -> &mut BuildNode {
        // Slots on the work stack are live: only children of the directory being applied are
        // freed, and they are pushed after.
        self.slots[slot]
            .as_mut()
            .expect("live slot in the merge builder")
    }

    fn alloc(&mut self, node: BuildNode) -> Slot {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(node);
                slot
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        }
    }

    /// Frees `slot` and everything under it.
    fn free_subtree(&mut self, slot: Slot) {
        let mut stack = vec![slot];
        while let Some(s) = stack.pop() {
            if let Some(node) = self.slots[s].take() {
                stack.extend(node.children.into_values());
                self.free.push(s);
            }
        }
    }

    fn remove_child(&mut self, dir: Slot, name: &[u8]) {
        if let Some(slot) = self.node(dir).children.remove(name) {
            self.free_subtree(slot);
        }
    }

    fn apply_layer<L: LayerTree + ?Sized>(
        &mut self,
        position: usize,
        layer: &L,
    ) -> Result<(), L::Error> {
        let root = layer.root();
        self.node(ROOT_SLOT).origin = Origin {
            layer: position,
            member: root,
        };
        let mut seen = HashSet::from([root]);
        let mut stack = vec![(root, ROOT_SLOT)];
        while let Some((layer_dir, slot)) = stack.pop() {
            let entries = unique_names(layer.children(layer_dir)?);
            self.apply_whiteouts(slot, &entries);
            for entry in entries {
                if whiteout_kind(&entry.name).is_some() {
                    continue;
                }
                if let Some(child) = self.apply_entry(slot, position, &entry) {
                    // A layer tree handing back a directory twice would loop: walk it once.
                    if seen.insert(entry.member) {
                        stack.push((entry.member, child));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the whiteouts among `entries` to the lower children of `dir`.
    fn apply_whiteouts(&mut self, dir: Slot, entries: &[LayerEntry]) {
        let kinds: Vec<Whiteout> = entries
            .iter()
            .filter_map(|e| whiteout_kind(&e.name))
            .collect();
        if kinds.contains(&Whiteout::Opaque) {
            let children = std::mem::take(&mut self.node(dir).children);
            for slot in children.into_values() {
                self.free_subtree(slot);
            }
        }
        for kind in kinds {
            if let Whiteout::Remove(target) = kind {
                self.remove_child(dir, target);
            }
        }
    }

    /// Puts one (non-whiteout) entry into `dir`. Returns the slot to descend into for a
    /// directory.
    fn apply_entry(&mut self, dir: Slot, position: usize, entry: &LayerEntry) -> Option<Slot> {
        let kind = entry.kind;
        let origin = Origin {
            layer: position,
            member: entry.member,
        };
        let existing = self.node(dir).children.get(&entry.name[..]).copied();
        if kind == MemberKind::Dir {
            if let Some(slot) = existing {
                let node = self.node(slot);
                if node.kind == MemberKind::Dir {
                    if entry.listed {
                        node.origin = origin;
                    }
                    return Some(slot);
                }
            }
        }
        if let Some(slot) = existing {
            self.free_subtree(slot);
        }
        let slot = self.alloc(BuildNode {
            kind,
            origin,
            children: BTreeMap::new(),
        });
        let name = entry.name.clone().into_boxed_slice();
        self.node(dir).children.insert(name, slot);
        (kind == MemberKind::Dir).then_some(slot)
    }

    /// Numbers the live nodes breadth-first in name order, so each directory's children are
    /// one contiguous, sorted run.
    fn finish(mut self) -> MergedTree {
        let mut order: Vec<(Slot, Box<[u8]>, u32)> = vec![(ROOT_SLOT, Box::default(), 0)];
        let mut nodes: Vec<MergedNode> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let (slot, _, parent) = order[i].clone();
            let node = self.slots[slot]
                .take()
                .expect("each live slot is reached once");
            let first_child = order.len() as u32;
            let child_count = node.children.len() as u32;
            let subdirs = node
                .children
                .values()
                .filter(|&&c| {
                    self.slots[c]
                        .as_ref()
                        .is_some_and(|n| n.kind == MemberKind::Dir)
                })
                .count() as u32;
            for (name, child) in node.children {
                order.push((child, name, i as u32));
            }
            nodes.push(MergedNode {
                name: order[i].1.clone(),
                parent: NodeId(parent),
                kind: node.kind,
                origin: node.origin,
                nlink: if node.kind == MemberKind::Dir {
                    2 + subdirs
                } else {
                    1
                },
                first_child,
                child_count,
            });
            i += 1;
        }
        count_hard_links(&mut nodes);
        MergedTree { nodes }
    }
}

/// One entry per name (the last one listed wins), so a malformed listing cannot free a
/// directory the walk has yet to visit.
fn unique_names(entries: Vec<LayerEntry>) -> Vec<LayerEntry> {
    let by_name: BTreeMap<Vec<u8>, LayerEntry> =
        entries.into_iter().map(|e| (e.name.clone(), e)).collect();
    by_name.into_values().collect()
}

/// Sets `nlink` of non-directories to the number of merged names sharing their origin.
fn count_hard_links(nodes: &mut [MergedNode]) {
    let mut counts: HashMap<Origin, u32> = HashMap::new();
    for n in nodes.iter().filter(|n| n.kind != MemberKind::Dir) {
        *counts.entry(n.origin).or_default() += 1;
    }
    for n in nodes.iter_mut().filter(|n| n.kind != MemberKind::Dir) {
        n.nlink = counts.get(&n.origin).copied().unwrap_or(1);
    }
}

/// What a `.wh.` name does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide the lower children of this directory.
    Opaque,
    /// `.wh.<name>`: remove the lower `<name>`.
    Remove(&'a [u8]),
    /// A whiteout-prefixed name that acts on nothing (reserved, or naming `.`/`..`/nothing).
    Inert,
}

/// `None` for an ordinary name; else what the whiteout does.
fn whiteout_kind(name: &[u8]) -> Option<Whiteout<'_>> {
    let target = name.strip_prefix(WHITEOUT_PREFIX)?;
    if name == OPAQUE_MARKER {
        return Some(Whiteout::Opaque);
    }
    if name.starts_with(RESERVED_PREFIX) || matches!(target, b"" | b"." | b"..") {
        return Some(Whiteout::Inert);
    }
    Some(Whiteout::Remove(target))
}

/// A layer's tree built in memory from its entries in archive order, as tar extraction leaves it:
/// later entries win, missing parents are implied directories, an entry below a non-directory is
/// skipped. For tests and tools; the mount uses [`ArchiveIndex`].
#[derive(Clone, Debug)]
pub struct LayerListing {
    dirs: HashMap<MemberId, BTreeMap<Vec<u8>, ListedChild>>,
    next_implied: u64,
}

/// One name in a [`LayerListing`] directory.
#[derive(Clone, Copy, Debug)]
struct ListedChild {
    member: MemberId,
    kind: MemberKind,
    listed: bool,
}

/// Member ids given to directories a listing implies (a parent with no entry of its own).
pub const IMPLIED_DIR_IDS: u64 = 1 << 63;

impl Default for LayerListing {
    fn default() -> Self {
        LayerListing::new()
    }
}

impl LayerListing {
    /// An empty layer (its root is [`MemberId::ROOT`]).
    pub fn new() -> LayerListing {
        LayerListing {
            dirs: HashMap::from([(MemberId::ROOT, BTreeMap::new())]),
            next_implied: IMPLIED_DIR_IDS,
        }
    }

    /// Builds a layer from `(path, kind, member)` entries in archive order.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, MemberKind, MemberId)>,
    ) -> LayerListing {
        let mut listing = LayerListing::new();
        for (path, kind, member) in entries {
            listing.insert(path.as_bytes(), kind, member);
        }
        listing
    }

    /// Adds an entry at `path` (`/`-separated; `.`, empty and leading `/` ignored). Missing
    /// parents become implied directories. Skipped, as tar skips them: paths with `..`, and
    /// entries whose parent is not a directory.
    pub fn insert(&mut self, path: &[u8], kind: MemberKind, member: MemberId) {
        let Some(comps) = components(path) else {
            return;
        };
        let Some((name, parents)) = comps.split_last() else {
            return;
        };
        let mut dir = MemberId::ROOT;
        for parent in parents {
            match self.ensure_dir(dir, parent) {
                Some(d) => dir = d,
                None => return,
            }
        }
        self.put(
            dir,
            name,
            ListedChild {
                member,
                kind,
                listed: true,
            },
        );
    }

    /// Adds a hard link at `path` to what `target` names now (skipped if `target` is missing or
    /// a directory, as tar does).
    pub fn link(&mut self, path: &[u8], target: &[u8]) {
        if let Some(found) = self.find(target).filter(|c| c.kind != MemberKind::Dir) {
            self.insert(path, found.kind, found.member);
        }
    }

    fn find(&self, path: &[u8]) -> Option<ListedChild> {
        let mut cur = ListedChild {
            member: MemberId::ROOT,
            kind: MemberKind::Dir,
            listed: true,
        };
        for c in components(path)? {
            cur = *self.dirs.get(&cur.member)?.get(c)?;
        }
        Some(cur)
    }

    /// The directory `name` in `dir`, implied if missing; `None` if a non-directory is there.
    fn ensure_dir(&mut self, dir: MemberId, name: &[u8]) -> Option<MemberId> {
        match self.dirs.get(&dir).and_then(|d| d.get(name)) {
            Some(c) if c.kind == MemberKind::Dir => return Some(c.member),
            Some(_) => return None,
            None => {}
        }
        let member = MemberId(self.next_implied);
        self.next_implied += 1;
        let implied = ListedChild {
            member,
            kind: MemberKind::Dir,
            listed: false,
        };
        self.put(dir, name, implied);
        Some(member)
    }

    fn put(&mut self, dir: MemberId, name: &[u8], child: ListedChild) {
        let entries = self.dirs.entry(dir).or_default();
        let previous = entries.insert(name.to_vec(), child);
        if let Some(old) = previous.filter(|old| old.kind == MemberKind::Dir) {
            if child.kind != MemberKind::Dir {
                self.drop_dir(old.member);
            } else if old.member != child.member {
                // A directory over a directory keeps its children.
                let children = self.dirs.remove(&old.member).unwrap_or_default();
                self.dirs.insert(child.member, children);
            }
        }
        if child.kind == MemberKind::Dir {
            self.dirs.entry(child.member).or_default();
        }
    }

    fn drop_dir(&mut self, dir: MemberId) {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            if let Some(children) = self.dirs.remove(&d) {
                stack.extend(
                    children
                        .into_values()
                        .filter(|c| c.kind == MemberKind::Dir)
                        .map(|c| c.member),
                );
            }
        }
    }
}

impl LayerTree for LayerListing {
    type Error = std::convert::Infallible;

    fn root(&self) -> MemberId {
        MemberId::ROOT
    }

    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, Self::Error> {
        Ok(self
            .dirs
            .get(&dir)
            .into_iter()
            .flatten()
            .map(|(name, c)| LayerEntry {
                name: name.clone(),
                member: c.member,
                kind: c.kind,
                listed: c.listed,
            })
            .collect())
    }
}

/// Path components; `None` when one is `..`.
fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    (!comps.iter().any(|c| *c == b"..")).then_some(comps)
}

#[cfg(test)]
mod tests;
