//! Inode numbers for the mount's nodes, with the kernel's lookup counts.
//!
//! Every successful lookup reply adds one to a node's count; `forget` takes them away, and a
//! node whose count reaches zero is dropped, so walking a 200,000-member archive again and
//! again does not grow the table. Numbers are never reused (a forgotten node that is looked up
//! again gets a new one), so the kernel never confuses an old node with a new one. Nodes that
//! readdir named but the kernel never looked up have a count of zero; they are swept in bulk
//! once they are many. Root is inode 1 and is never forgotten.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use parking_lot::RwLock;

use super::namespace::NodeRef;

/// Zero-count nodes (named by readdir only) kept before a sweep.
const UNLOOKED_LIMIT: usize = 65_536;
/// Nodes dropped between two heap trims: after the kernel forgets a large tree, the memory
/// goes back to the kernel instead of staying in the allocator's free lists.
const TRIM_EVERY: u64 = 16_384;

/// The two-way map between inode numbers and nodes.
pub struct Inodes {
    inner: RwLock<Table>,
}

struct Slot {
    node: NodeRef,
    lookups: u64,
    /// The sweep round it was named in (a sweep spares the current round).
    round: u64,
}

struct Table {
    by_node: HashMap<NodeRef, u64, RandomState>,
    slots: HashMap<u64, Slot, RandomState>,
    next: u64,
    unlooked: usize,
    round: u64,
    /// Nodes dropped since the last heap trim.
    dropped: u64,
}

impl Inodes {
    /// A table whose inode 1 is `root`.
    pub fn new(root: NodeRef) -> Inodes {
        let mut by_node = HashMap::default();
        by_node.insert(root.clone(), 1);
        let mut slots = HashMap::default();
        slots.insert(
            1,
            Slot {
                node: root,
                lookups: 1,
                round: 0,
            },
        );
        Inodes {
            inner: RwLock::new(Table {
                by_node,
                slots,
                next: 2,
                unlooked: 0,
                round: 0,
                dropped: 0,
            }),
        }
    }

    /// The node of inode `ino`.
    pub fn node(&self, ino: u64) -> Option<NodeRef> {
        self.inner.read().slots.get(&ino).map(|s| s.node.clone())
    }

    /// The inode of `node` for a lookup reply: allocated if new, its count raised by one.
    pub fn lookup(&self, node: NodeRef) -> u64 {
        let mut t = self.inner.write();
        let ino = t.ino_of(node);
        let slot = t.slots.get_mut(&ino).expect("ino_of returns a live slot");
        slot.lookups += 1;
        if slot.lookups == 1 {
            t.unlooked -= 1;
        }
        ino
    }

    /// The inode of `node` for a readdir entry: allocated if new, its count unchanged.
    pub fn peek(&self, node: NodeRef) -> u64 {
        if let Some(ino) = self.inner.read().by_node.get(&node) {
            return *ino;
        }
        let mut t = self.inner.write();
        if t.unlooked >= UNLOOKED_LIMIT {
            t.sweep();
        }
        t.ino_of(node)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == 1 {
            return;
        }
        let mut t = self.inner.write();
        let Some(slot) = t.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            if let Some(slot) = t.slots.remove(&ino) {
                t.by_node.remove(&slot.node);
            }
            t.dropped += 1;
            if t.dropped >= TRIM_EVERY {
                t.dropped = 0;
                if t.slots.len() < t.slots.capacity() / 4 {
                    t.slots.shrink_to_fit();
                    t.by_node.shrink_to_fit();
                }
                drop(t);
                crate::heap::trim();
            }
        }
    }

    /// How many nodes the table holds (root included).
    pub fn len(&self) -> usize {
        self.inner.read().slots.len()
    }

    /// True if only the root is left.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

impl Table {
    /// The inode of `node`, allocating one (count zero) if new.
    fn ino_of(&mut self, node: NodeRef) -> u64 {
        if let Some(ino) = self.by_node.get(&node) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_node.insert(node.clone(), ino);
        self.slots.insert(
            ino,
            Slot {
                node,
                lookups: 0,
                round: self.round,
            },
        );
        self.unlooked += 1;
        ino
    }

    /// Drops zero-count nodes named before this round, and starts a new round.
    fn sweep(&mut self) {
        let round = self.round;
        let stale: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.lookups == 0 && s.round < round)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in stale {
            if let Some(slot) = self.slots.remove(&ino) {
                self.by_node.remove(&slot.node);
                self.unlooked -= 1;
            }
        }
        self.round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::namespace::{Attr, Entry, Key, Namespace, NsError, OpenFile, Ttl, Xattrs};
    use std::sync::Arc;

    struct Empty;
    impl Namespace for Empty {
        fn name(&self) -> &'static str {
            "empty"
        }
        fn getattr(&self, _: &Key) -> Result<(Attr, Ttl), NsError> {
            Err(NsError::NotFound)
        }
        fn lookup(&self, _: &Key, _: &[u8]) -> Result<Entry, NsError> {
            Err(NsError::NotFound)
        }
        fn readdir(
            &self,
            _: &Key,
            _: u64,
            _: &mut dyn FnMut(crate::fs::namespace::DirEntry) -> bool,
        ) -> Result<(), NsError> {
            Ok(())
        }
        fn open(&self, _: &Key) -> Result<Box<dyn OpenFile>, NsError> {
            Err(NsError::IsDir)
        }
        fn xattrs(&self, _: &Key) -> Result<Xattrs, NsError> {
            Ok(Vec::new())
        }
    }

    fn node(ns: &Arc<dyn Namespace>, p: &str) -> NodeRef {
        NodeRef::new(ns, Key::Path(p.into()))
    }

    #[test]
    fn forgotten_nodes_leave_and_are_never_renumbered_alike() {
        let ns: Arc<dyn Namespace> = Arc::new(Empty);
        let t = Inodes::new(NodeRef::new(&ns, Key::Top));
        let a = t.lookup(node(&ns, "a"));
        assert_eq!(t.lookup(node(&ns, "a")), a);
        assert_eq!(t.node(a), Some(node(&ns, "a")));
        t.forget(a, 1);
        assert_eq!(t.node(a), Some(node(&ns, "a")), "one lookup is left");
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        assert!(t.is_empty());
        let again = t.lookup(node(&ns, "a"));
        assert_ne!(again, a);
        t.forget(1, 99);
        assert!(t.node(1).is_some(), "root stays");
    }

    #[test]
    fn readdir_only_nodes_are_swept_in_bulk() {
        let ns: Arc<dyn Namespace> = Arc::new(Empty);
        let t = Inodes::new(NodeRef::new(&ns, Key::Top));
        let kept = t.lookup(node(&ns, "kept"));
        for i in 0..(3 * UNLOOKED_LIMIT) {
            t.peek(node(&ns, &format!("f{i}")));
        }
        assert!(t.len() <= 2 * UNLOOKED_LIMIT + 2, "{} nodes", t.len());
        assert_eq!(t.node(kept), Some(node(&ns, "kept")));
        let p = t.peek(node(&ns, "x"));
        assert_eq!(
            t.lookup(node(&ns, "x")),
            p,
            "a peeked node keeps its number"
        );
    }
}
