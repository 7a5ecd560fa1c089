//! Extraction semantics: turns the sequence of tar entries into the tree `tar -xf` (GNU tar, as
//! root, default options) leaves on disk. The rules are listed in the module doc of `archive`.
//!
//! The tree is an inode graph: nodes are members, directory maps are the names. A later entry
//! re-points a name at a new node (as `unlink` + create does), so hard links made earlier keep
//! the old node. Nodes no name reaches any more are freed at once, so memory follows the live
//! tree, not the number of entries. Ids are assigned at the end, breadth-first from the root in
//! name order, so they are dense and stable for a given archive.

use std::collections::HashMap;

use super::tar::{EntryKind, SparseChunk, TarEntry};
use super::MemberKind;

/// Index of a node in the arena.
type NodeIdx = usize;
/// The root directory's arena index.
const ROOT: NodeIdx = 0;
/// Mode of directories the archive implies but does not contain (0777 & ~022).
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Ownership, permissions and time of a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Attrs {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nanos: u32,
    /// True for a directory the archive needs but does not list (until an entry lists it).
    pub implied: bool,
}

impl Attrs {
    /// The attributes an entry records.
    fn of(e: &TarEntry) -> Attrs {
        Attrs {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            mtime_nanos: e.mtime_nanos,
            implied: false,
        }
    }

    /// A directory the archive needs but does not list.
    fn implied(mtime: i64) -> Attrs {
        Attrs {
            mode: IMPLIED_DIR_MODE,
            uid: 0,
            gid: 0,
            mtime,
            mtime_nanos: 0,
            implied: true,
        }
    }
}

/// What a node holds.
#[derive(Debug)]
pub(crate) enum Content {
    /// A directory: name → node.
    Dir(HashMap<Box<[u8]>, NodeIdx>),
    /// A regular file whose data is at `data_offset` in the tar stream.
    File {
        /// Real size.
        size: u64,
        /// First data byte in the tar stream.
        data_offset: u64,
        /// Stored chunks for sparse files.
        sparse: Option<Vec<SparseChunk>>,
    },
    /// A symbolic link.
    Symlink(Vec<u8>),
    /// A device or fifo.
    Special {
        /// Char/block device or fifo.
        kind: MemberKind,
        /// Device number.
        rdev: u64,
    },
    /// A freed arena slot.
    Free,
}

/// One member being built.
#[derive(Debug)]
pub(crate) struct Node {
    /// Attributes.
    pub attrs: Attrs,
    /// Content.
    pub content: Content,
    /// Extended attributes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many names point here.
    links: u32,
}

impl Node {
    /// A node restored from a stored index, not named yet (see [`Node::add_link`]).
    pub(crate) fn restored(
        attrs: Attrs,
        content: Content,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Node {
        Node {
            attrs,
            content,
            xattrs,
            links: 0,
        }
    }

    /// Counts one more name pointing here.
    pub(crate) fn add_link(&mut self) {
        self.links = self.links.saturating_add(1);
    }

    /// The member kind of this node.
    pub(crate) fn kind(&self) -> MemberKind {
        match &self.content {
            Content::Dir(_) | Content::Free => MemberKind::Dir,
            Content::File { .. } => MemberKind::File,
            Content::Symlink(_) => MemberKind::Symlink,
            Content::Special { kind, .. } => *kind,
        }
    }

    /// True for a directory with at least one entry.
    fn is_nonempty_dir(&self) -> bool {
        matches!(&self.content, Content::Dir(c) if !c.is_empty())
    }

    /// True for a directory.
    fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }
}

/// The tree under construction.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    free: Vec<NodeIdx>,
    root_mtime_set: bool,
    warned_absolute: bool,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

/// Splits a member name into components: leading `/`, empty and `.` components go; `None` if a
/// component is `..` (GNU tar refuses such members).
pub(crate) fn member_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        None
    } else {
        Some(comps)
    }
}

/// Components of a hard-link target: everything up to its last `..` is cut (GNU tar's
/// `safer_name_suffix`), then as [`member_components`].
pub(crate) fn link_components(link: &[u8]) -> Vec<&[u8]> {
    let comps: Vec<&[u8]> = link
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let start = comps.iter().rposition(|c| *c == b"..").map_or(0, |i| i + 1);
    comps[start..].to_vec()
}

impl Tree {
    /// A tree holding only the root directory.
    pub(crate) fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                attrs: Attrs::implied(0),
                content: Content::Dir(HashMap::new()),
                xattrs: Vec::new(),
                links: 1,
            }],
            free: Vec::new(),
            root_mtime_set: false,
            warned_absolute: false,
        }
    }

    /// Applies one entry, as extraction would.
    pub(crate) fn apply(&mut self, e: TarEntry) {
        if !self.root_mtime_set {
            self.root_mtime_set = true;
            self.nodes[ROOT].attrs.mtime = e.mtime;
        }
        if e.path.starts_with(b"/") && !self.warned_absolute {
            self.warned_absolute = true;
            tracing::info!("tar: removing leading '/' from member names");
        }
        let path = e.path.clone();
        let Some(comps) = member_components(&path) else {
            skip(&e, "member name contains '..'");
            return;
        };
        let Some((name, parents)) = comps.split_last() else {
            self.apply_root(e);
            return;
        };
        let Some(parent) = self.make_parents(parents, e.mtime) else {
            skip(&e, "Cannot open: Not a directory");
            return;
        };
        let existing = self.child(parent, name);
        match e.kind {
            EntryKind::Dir => self.apply_dir(parent, name, existing, e),
            EntryKind::HardLink => self.apply_link(parent, name, existing, &e),
            _ => {
                if existing.is_some_and(|i| self.nodes[i].is_nonempty_dir()) {
                    skip(&e, "Cannot open: File exists");
                    return;
                }
                let node = self.alloc(node_of(e));
                self.link(parent, name, node);
            }
        }
    }

    /// An entry that names the root itself (`./`, `/`).
    fn apply_root(&mut self, e: TarEntry) {
        if e.kind != EntryKind::Dir {
            skip(&e, "Cannot open: Is a directory");
            return;
        }
        let root = &mut self.nodes[ROOT];
        root.attrs = Attrs::of(&e);
        root.xattrs = e.xattrs;
    }

    /// A directory entry: updates an existing directory, else replaces what is there.
    fn apply_dir(&mut self, parent: NodeIdx, name: &[u8], existing: Option<NodeIdx>, e: TarEntry) {
        match existing {
            Some(i) if self.nodes[i].is_dir() => {
                self.nodes[i].attrs = Attrs::of(&e);
                self.nodes[i].xattrs = e.xattrs;
            }
            _ => {
                let node = self.alloc(node_of(e));
                self.link(parent, name, node);
            }
        }
    }

    /// A hard link: names the node its target names now.
    fn apply_link(
        &mut self,
        parent: NodeIdx,
        name: &[u8],
        existing: Option<NodeIdx>,
        e: &TarEntry,
    ) {
        let Some(target) = self.resolve(&link_components(&e.link)) else {
            skip(e, "Cannot hard link: No such file or directory");
            return;
        };
        if self.nodes[target].is_dir() {
            skip(
                e,
                "Cannot hard link to a directory: Operation not permitted",
            );
            return;
        }
        if existing == Some(target) {
            return;
        }
        if existing.is_some_and(|i| self.nodes[i].is_nonempty_dir()) {
            skip(e, "Cannot hard link: File exists");
            return;
        }
        self.link(parent, name, target);
    }

    /// Walks `parents` from the root, creating missing directories; `None` if a component is not
    /// a directory (never follows symlinks).
    fn make_parents(&mut self, parents: &[&[u8]], mtime: i64) -> Option<NodeIdx> {
        let mut cur = ROOT;
        for comp in parents {
            cur = match self.child(cur, comp) {
                Some(i) if self.nodes[i].is_dir() => i,
                Some(_) => return None,
                None => {
                    let dir = self.alloc(Node {
                        attrs: Attrs::implied(mtime),
                        content: Content::Dir(HashMap::new()),
                        xattrs: Vec::new(),
                        links: 0,
                    });
                    self.link(cur, comp, dir);
                    dir
                }
            };
        }
        Some(cur)
    }

    /// The node a path names now, without creating or following anything.
    fn resolve(&self, comps: &[&[u8]]) -> Option<NodeIdx> {
        let mut cur = ROOT;
        for comp in comps {
            cur = self.child(cur, comp)?;
        }
        Some(cur)
    }

    /// The node `name` in directory `dir`.
    fn child(&self, dir: NodeIdx, name: &[u8]) -> Option<NodeIdx> {
        match &self.nodes[dir].content {
            Content::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// Stores a node (reusing a freed slot).
    fn alloc(&mut self, node: Node) -> NodeIdx {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Points `dir/name` at `node`, releasing what it pointed at before.
    fn link(&mut self, dir: NodeIdx, name: &[u8], node: NodeIdx) {
        self.nodes[node].links += 1;
        let old = match &mut self.nodes[dir].content {
            Content::Dir(children) => children.insert(name.into(), node),
            _ => None,
        };
        if let Some(old) = old.filter(|&o| o != node) {
            self.release(old);
        }
    }

    /// Drops one name of `node`; frees it (and, for directories, what only it reached) when it
    /// has none left. Iterative: archives can nest deeper than the stack.
    fn release(&mut self, node: NodeIdx) {
        let mut stack = vec![node];
        while let Some(i) = stack.pop() {
            let n = &mut self.nodes[i];
            n.links = n.links.saturating_sub(1);
            if n.links > 0 {
                continue;
            }
            if let Content::Dir(children) = std::mem::replace(&mut n.content, Content::Free) {
                stack.extend(children.into_values());
            }
            n.xattrs = Vec::new();
            self.free.push(i);
        }
    }

    /// Numbers the reachable nodes: breadth-first from the root, names in byte order.
    pub(crate) fn finish(self) -> FinishedTree {
        let mut ids = vec![0u64; self.nodes.len()];
        let mut order = vec![ROOT];
        ids[ROOT] = 1;
        let mut next = 0usize;
        while next < order.len() {
            let dir = order[next];
            next += 1;
            for (_, child) in sorted_children(&self.nodes[dir]) {
                if ids[child] == 0 {
                    order.push(child);
                    ids[child] = order.len() as u64;
                }
            }
        }
        FinishedTree {
            nodes: self.nodes,
            ids,
            order,
        }
    }
}

/// A directory's entries in name order (empty for non-directories).
fn sorted_children(node: &Node) -> Vec<(&[u8], NodeIdx)> {
    let Content::Dir(children) = &node.content else {
        return Vec::new();
    };
    let mut v: Vec<(&[u8], NodeIdx)> = children.iter().map(|(k, &v)| (&k[..], v)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// The node an entry (not a hard link, not the root) creates.
fn node_of(e: TarEntry) -> Node {
    let mut attrs = Attrs::of(&e);
    if e.kind == EntryKind::Symlink {
        // Linux symlinks have no mode of their own; lstat shows 0777 whatever the archive says.
        attrs.mode = 0o777;
    }
    let content = match e.kind {
        EntryKind::Dir => Content::Dir(HashMap::new()),
        EntryKind::Symlink => Content::Symlink(e.link),
        EntryKind::CharDevice | EntryKind::BlockDevice => Content::Special {
            kind: if e.kind == EntryKind::CharDevice {
                MemberKind::CharDevice
            } else {
                MemberKind::BlockDevice
            },
            rdev: libc::makedev(e.devmajor, e.devminor),
        },
        EntryKind::Fifo => Content::Special {
            kind: MemberKind::Fifo,
            rdev: 0,
        },
        EntryKind::File | EntryKind::HardLink => Content::File {
            size: e.size,
            data_offset: e.data_offset,
            sparse: e.sparse,
        },
    };
    Node {
        attrs,
        content,
        xattrs: e.xattrs,
        links: 0,
    }
}

/// Logs an entry extraction would fail on.
fn skip(e: &TarEntry, why: &str) {
    tracing::warn!(
        offset = e.header_offset,
        "tar: {:?}: {why}; entry skipped",
        e.display_name()
    );
}

/// The numbered tree, ready to be stored.
#[derive(Debug)]
pub(crate) struct FinishedTree {
    nodes: Vec<Node>,
    ids: Vec<u64>,
    order: Vec<NodeIdx>,
}

/// One member as it is stored.
pub(crate) struct MemberRow<'a> {
    /// Its id.
    pub id: u64,
    /// The node.
    pub node: &'a Node,
    /// Its link count.
    pub nlink: u32,
}

impl FinishedTree {
    /// A tree whose members are already numbered: `nodes[i]` is member `i + 1` (the root first),
    /// directories naming their children by arena index. The caller checks it is a tree.
    pub(crate) fn numbered(nodes: Vec<Node>) -> FinishedTree {
        let n = nodes.len();
        FinishedTree {
            nodes,
            ids: (1..=n as u64).collect(),
            order: (0..n).collect(),
        }
    }

    /// Number of members (including the root).
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The members in id order.
    pub(crate) fn members(&self) -> impl Iterator<Item = MemberRow<'_>> + '_ {
        self.order.iter().enumerate().map(|(i, &idx)| {
            let node = &self.nodes[idx];
            let nlink = match &node.content {
                Content::Dir(children) => {
                    let subdirs = children
                        .values()
                        .filter(|&&c| self.nodes[c].is_dir())
                        .count();
                    u32::try_from(subdirs + 2).unwrap_or(u32::MAX)
                }
                _ => node.links,
            };
            MemberRow {
                id: i as u64 + 1,
                node,
                nlink,
            }
        })
    }

    /// Every directory entry as (parent id, name, member id), sorted by (parent, name).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, &[u8], u64)> + '_ {
        self.order.iter().enumerate().flat_map(move |(i, &idx)| {
            sorted_children(&self.nodes[idx])
                .into_iter()
                .map(move |(name, child)| (i as u64 + 1, name, self.ids[child]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, link: &str) -> TarEntry {
        TarEntry {
            header_offset: 0,
            path: path.as_bytes().to_vec(),
            link: link.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 1000,
            mtime_nanos: 0,
            size: 0,
            data_offset: 0,
            sparse: None,
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
        }
    }

    fn file(path: &str, data_offset: u64) -> TarEntry {
        let mut e = entry(path, EntryKind::File, "");
        e.data_offset = data_offset;
        e.size = 1;
        e
    }

    /// `find`-like listing: path, kind, nlink, plus data offset or link target.
    fn listing(entries: Vec<TarEntry>) -> Vec<String> {
        let mut t = Tree::new();
        for e in entries {
            t.apply(e);
        }
        let f = t.finish();
        let rows: Vec<_> = f
            .members()
            .map(|m| (m.id, m.node.kind(), m.nlink, describe(m.node)))
            .collect();
        let mut paths = vec![(1u64, String::new())];
        let mut out = Vec::new();
        let mut i = 0;
        while i < paths.len() {
            let (dir, prefix) = paths[i].clone();
            for (parent, name, child) in f.entries() {
                if parent != dir {
                    continue;
                }
                let p = format!("{prefix}/{}", String::from_utf8_lossy(name));
                let (_, kind, nlink, what) = &rows[child as usize - 1];
                out.push(format!("{p} {kind:?} {nlink} {what}"));
                if *kind == MemberKind::Dir {
                    paths.push((child, p));
                }
            }
            i += 1;
        }
        out.sort();
        out
    }

    fn describe(n: &Node) -> String {
        match &n.content {
            Content::File { data_offset, .. } => format!("@{data_offset}"),
            Content::Symlink(t) => format!("->{}", String::from_utf8_lossy(t)),
            _ => String::new(),
        }
    }

    #[test]
    fn name_normalisation() {
        assert_eq!(
            member_components(b"/a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(member_components(b"a/../b").is_none());
        assert!(member_components(b"../x").is_none());
        assert!(member_components(b"./").unwrap().is_empty());
        assert_eq!(link_components(b"../a"), vec![&b"a"[..]]);
        assert_eq!(link_components(b"/x/../y/./z"), vec![&b"y"[..], b"z"]);
    }

    #[test]
    fn paths_with_dotdot_are_skipped_absolute_are_rooted() {
        let l = listing(vec![
            file("../evil", 1),
            file("a/../b", 2),
            file("/abs/f", 3),
            file("./c/./d", 4),
            file("e//f", 5),
        ]);
        assert_eq!(
            l,
            vec![
                "/abs Dir 2 ",
                "/abs/f File 1 @3",
                "/c Dir 2 ",
                "/c/d File 1 @4",
                "/e Dir 2 ",
                "/e/f File 1 @5",
            ]
        );
    }

    #[test]
    fn later_entry_wins_and_hard_links_keep_old_content() {
        let l = listing(vec![
            file("a", 1),
            entry("b", EntryKind::HardLink, "a"),
            file("a", 2),
            entry("c", EntryKind::HardLink, "a"),
            entry("a", EntryKind::HardLink, "a"),
        ]);
        assert_eq!(l, vec!["/a File 2 @2", "/b File 1 @1", "/c File 2 @2"]);
    }

    #[test]
    fn hard_link_rules() {
        let l = listing(vec![
            entry("missing", EntryKind::HardLink, "nowhere"),
            entry("d", EntryKind::Dir, ""),
            entry("todir", EntryKind::HardLink, "d"),
            entry("s", EntryKind::Symlink, "nowhere"),
            entry("tosym", EntryKind::HardLink, "s"),
            file("x", 7),
            entry("y", EntryKind::HardLink, "../x"),
            entry("z", EntryKind::HardLink, "/x"),
            entry("cyc1", EntryKind::HardLink, "cyc2"),
            entry("cyc2", EntryKind::HardLink, "cyc1"),
        ]);
        assert_eq!(
            l,
            vec![
                "/d Dir 2 ",
                "/s Symlink 2 ->nowhere",
                "/tosym Symlink 2 ->nowhere",
                "/x File 3 @7",
                "/y File 3 @7",
                "/z File 3 @7",
            ]
        );
    }

    #[test]
    fn replacement_rules_match_gnu_tar() {
        // Non-empty directory survives a file; empty one is replaced.
        let l = listing(vec![
            entry("d", EntryKind::Dir, ""),
            file("d/x", 1),
            file("d", 2),
            entry("e", EntryKind::Dir, ""),
            file("e", 3),
            file("f", 4),
            entry("f", EntryKind::Dir, ""),
            file("f/y", 5),
            entry("g", EntryKind::Dir, ""),
            file("g/x", 6),
            entry("g", EntryKind::Symlink, "zz"),
            file("h", 8),
            entry("h", EntryKind::Symlink, "zz"),
            entry("t", EntryKind::Dir, ""),
            entry("i", EntryKind::Symlink, "t"),
            entry("i", EntryKind::Dir, ""),
            file("i/q", 9),
        ]);
        assert_eq!(
            l,
            vec![
                "/d Dir 2 ",
                "/d/x File 1 @1",
                "/e File 1 @3",
                "/f Dir 2 ",
                "/f/y File 1 @5",
                "/g Dir 2 ",
                "/g/x File 1 @6",
                "/h Symlink 1 ->zz",
                "/i Dir 2 ",
                "/i/q File 1 @9",
                "/t Dir 2 ",
            ]
        );
    }

    #[test]
    fn symlinks_and_files_are_never_walked_through() {
        let l = listing(vec![
            entry("dir", EntryKind::Symlink, "/tmp"),
            file("dir/x", 1),
            entry("real", EntryKind::Dir, ""),
            entry("rel", EntryKind::Symlink, "real"),
            file("rel/x", 2),
            file("f", 3),
            file("f/y", 4),
        ]);
        assert_eq!(
            l,
            vec![
                "/dir Symlink 1 ->/tmp",
                "/f File 1 @3",
                "/real Dir 2 ",
                "/rel Symlink 1 ->real"
            ]
        );
    }

    #[test]
    fn implied_parents_and_dir_attrs() {
        let mut t = Tree::new();
        let mut deep = file("a/b/c", 1);
        deep.mtime = 5000;
        t.apply(deep);
        let mut d = entry("a", EntryKind::Dir, "");
        d.mode = 0o700;
        d.mtime = 42;
        t.apply(d);
        let mut root = entry("./", EntryKind::Dir, "");
        root.mode = 0o750;
        t.apply(root);
        let f = t.finish();
        let m: Vec<_> = f.members().collect();
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].node.attrs.mode, m[0].nlink), (0o750, 3));
        assert_eq!((m[1].node.attrs.mode, m[1].node.attrs.mtime), (0o700, 42));
        assert_eq!(m[2].node.attrs, Attrs::implied(5000));
        assert_eq!(m[3].node.kind(), MemberKind::File);
    }

    #[test]
    fn overwritten_members_are_freed() {
        let mut t = Tree::new();
        for round in 0..1000u64 {
            t.apply(file("a", round));
            t.apply(entry("empty", EntryKind::Dir, ""));
            t.apply(entry("empty", EntryKind::Symlink, "x"));
        }
        assert!(t.nodes.len() < 10, "{} nodes", t.nodes.len());
        let f = t.finish();
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut t = Tree::new();
        let deep = "d/".repeat(30_000) + "f";
        t.apply(file(&deep, 1));
        let f = t.finish();
        assert_eq!(f.len(), 30_002);
        assert_eq!(f.entries().count(), 30_001);
    }
}
