//! Inode numbers for the mount's nodes. Every node is named by a [`Node`] key; numbers are
//! handed out on first lookup and stay stable for the mount's life, so the kernel's dentry and
//! page caches stay valid. Root is inode 1.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::archive::MemberId;
use crate::digest::Digest;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// The mount root.
    Root,
    /// A directory made of catalog name prefixes (`medperf/fets`).
    CatalogDir(String),
    /// A catalog entry (file, or the root of an archive's tree).
    Asset(String),
    /// `sha256/`.
    BlobDir,
    /// `sha256/<hex>`.
    Blob(Digest),
    /// A member of an archive (never the archive root, which is its [`Node::Asset`]).
    Member(Digest, MemberId),
}

/// The two-way map between inode numbers and nodes.
#[derive(Debug)]
pub struct Inodes {
    inner: RwLock<Table>,
}

#[derive(Debug)]
struct Table {
    by_node: HashMap<Node, u64>,
    nodes: Vec<Node>,
}

impl Default for Inodes {
    fn default() -> Inodes {
        let mut by_node = HashMap::new();
        by_node.insert(Node::Root, 1);
        Inodes {
            inner: RwLock::new(Table {
                by_node,
                nodes: vec![Node::Root],
            }),
        }
    }
}

impl Inodes {
    /// The node of inode `ino`.
    pub fn node(&self, ino: u64) -> Option<Node> {
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inner.read().nodes.get(idx).cloned()
    }

    /// The inode of `node`, allocating one on first use.
    pub fn ino(&self, node: Node) -> u64 {
        if let Some(ino) = self.inner.read().by_node.get(&node) {
            return *ino;
        }
        let mut t = self.inner.write();
        if let Some(ino) = t.by_node.get(&node) {
            return *ino;
        }
        t.nodes.push(node.clone());
        let ino = t.nodes.len() as u64;
        t.by_node.insert(node, ino);
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        let t = Inodes::default();
        assert_eq!(t.ino(Node::Root), 1);
        let a = t.ino(Node::Asset("x".into()));
        let b = t.ino(Node::BlobDir);
        assert_ne!(a, b);
        assert_eq!(t.ino(Node::Asset("x".into())), a);
        assert_eq!(t.node(a), Some(Node::Asset("x".into())));
        assert_eq!(t.node(0), None);
        assert_eq!(t.node(99), None);
    }
}
