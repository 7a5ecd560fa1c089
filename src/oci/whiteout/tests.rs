//! Tests of layer flattening: each rule on its own, the orderings that trip implementations, and
//! a differential test against a path-based model of the spec on random layers.

use std::collections::BTreeMap;

use super::*;

use MemberKind::{Dir, File, Symlink};

/// A layer from `"kind:path"` specs (`d:` dir, `f:` file, `l:` symlink, `h:path=target` hard
/// link), members numbered from 2 in order.
fn layer(specs: &[&str]) -> LayerListing {
    let mut l = LayerListing::new();
    for (i, spec) in specs.iter().enumerate() {
        let (kind, path) = spec.split_once(':').expect("kind:path");
        let id = MemberId(i as u64 + 2);
        match kind {
            "d" => l.insert(path.as_bytes(), Dir, id),
            "f" => l.insert(path.as_bytes(), File, id),
            "l" => l.insert(path.as_bytes(), Symlink, id),
            "h" => {
                let (p, target) = path.split_once('=').expect("h:path=target");
                l.link(p.as_bytes(), target.as_bytes());
            }
            other => panic!("bad kind {other}"),
        }
    }
    l
}

fn merge(layers: &[&[&str]]) -> MergedTree {
    let listings: Vec<LayerListing> = layers.iter().map(|l| layer(l)).collect();
    let Ok(tree) = merge_layers(&listings);
    tree
}

/// `path kind@layer` for every node but the root, in path order.
fn listing(tree: &MergedTree) -> Vec<String> {
    let mut out: Vec<String> = tree
        .iter()
        .skip(1)
        .map(|(id, n)| {
            let kind = match n.kind {
                Dir => "d",
                File => "f",
                Symlink => "l",
                _ => "?",
            };
            format!(
                "{} {kind}@{}",
                String::from_utf8_lossy(&tree.path(id)),
                n.origin.layer
            )
        })
        .collect();
    out.sort();
    out
}

fn assert_listing(layers: &[&[&str]], want: &[&str]) {
    let tree = merge(layers);
    assert_eq!(listing(&tree), want, "layers: {layers:?}");
}

#[test]
fn one_layer_is_its_own_tree() {
    assert_listing(
        &[&["d:etc", "f:etc/passwd", "l:bin", "d:usr/lib", "f:usr/lib/x"]],
        &[
            "bin l@0",
            "etc d@0",
            "etc/passwd f@0",
            "usr d@0",
            "usr/lib d@0",
            "usr/lib/x f@0",
        ],
    );
}

#[test]
fn whiteout_removes_a_lower_file() {
    assert_listing(
        &[&["d:etc", "f:etc/a", "f:etc/b"], &["d:etc", "f:etc/.wh.a"]],
        &["etc d@1", "etc/b f@0"],
    );
}

#[test]
fn whiteout_removes_a_lower_directory_and_everything_below() {
    assert_listing(
        &[
            &["d:a/b/c", "f:a/b/c/deep", "f:a/keep"],
            &["d:a", "f:a/.wh.b"],
            &["d:a", "f:a/new"],
        ],
        &["a d@2", "a/keep f@0", "a/new f@2"],
    );
}

#[test]
fn whiteout_of_nothing_is_harmless_and_hidden() {
    assert_listing(
        &[&["f:x"], &["f:.wh.missing", "d:d", "f:d/.wh.also-missing"]],
        &["d d@1", "x f@0"],
    );
}

#[test]
fn whiteout_in_the_bottom_layer_is_just_hidden() {
    assert_listing(&[&["f:.wh.x", "f:x"]], &["x f@0"]);
}

#[test]
fn whiteout_only_acts_on_lower_layers() {
    // The same layer deletes the lower `a` and adds its own: the new one stays.
    assert_listing(&[&["f:a"], &["f:.wh.a", "f:a"]], &["a f@1"]);
    // Whatever the order inside the layer.
    assert_listing(&[&["f:a"], &["f:a", "f:.wh.a"]], &["a f@1"]);
}

#[test]
fn whiteout_then_same_directory_makes_it_fresh() {
    assert_listing(
        &[
            &["d:d", "f:d/old", "d:d/sub", "f:d/sub/x"],
            &["f:.wh.d", "d:d", "f:d/new"],
        ],
        &["d d@1", "d/new f@1"],
    );
}

#[test]
fn opaque_directory_hides_lower_children_only() {
    let want = [
        "d d@1",
        "d/mine f@1",
        "d/sub d@1",
        "d/sub/y f@1",
        "other f@0",
    ];
    // The marker first, last, or between siblings in the layer: same result.
    for upper in [
        &["d:d", "f:d/.wh..wh..opq", "f:d/mine", "f:d/sub/y"][..],
        &["d:d", "f:d/mine", "f:d/sub/y", "f:d/.wh..wh..opq"][..],
        &["d:d", "f:d/mine", "f:d/.wh..wh..opq", "f:d/sub/y"][..],
    ] {
        assert_listing(
            &[
                &["d:d", "f:d/old", "d:d/sub", "f:d/sub/x", "f:other"],
                upper,
            ],
            &want,
        );
    }
}

#[test]
fn opaque_does_not_hide_the_same_layer_or_later_layers() {
    assert_listing(
        &[&["f:d/a"], &["f:d/.wh..wh..opq", "f:d/b"], &["f:d/c"]],
        &["d d@0", "d/b f@1", "d/c f@2"],
    );
}

#[test]
fn opaque_at_the_root() {
    assert_listing(
        &[&["f:a", "d:b", "f:b/c"], &["f:.wh..wh..opq", "f:z"]],
        &["z f@1"],
    );
}

#[test]
fn opaque_and_whiteout_in_one_directory() {
    assert_listing(
        &[
            &["f:d/a"],
            &["f:d/.wh..wh..opq", "f:d/b", "f:d/c"],
            &["f:d/.wh.b"],
        ],
        &["d d@0", "d/c f@1"],
    );
}

#[test]
fn file_replaces_directory_and_its_subtree() {
    assert_listing(
        &[&["d:p", "d:p/q", "f:p/q/r", "f:s"], &["f:p"]],
        &["p f@1", "s f@0"],
    );
}

#[test]
fn directory_replaces_file_and_symlink() {
    assert_listing(
        &[&["f:a", "l:b"], &["d:a", "f:a/x", "d:b", "f:b/y"]],
        &["a d@1", "a/x f@1", "b d@1", "b/y f@1"],
    );
}

#[test]
fn symlink_replaces_directory_and_file_replaces_symlink() {
    assert_listing(
        &[&["d:lib", "f:lib/libc.so", "l:sh"], &["l:lib", "f:sh"]],
        &["lib l@1", "sh f@1"],
    );
    // A symlink replaced by a symlink.
    assert_listing(&[&["l:x"], &["l:x"]], &["x l@1"]);
}

#[test]
fn directory_over_directory_merges_and_takes_the_upper_origin() {
    let tree = merge(&[&["d:d", "f:d/a"], &["d:d", "f:d/b"]]);
    assert_eq!(listing(&tree), ["d d@1", "d/a f@0", "d/b f@1"]);
    let d = tree.lookup_path(b"d").unwrap();
    let node = tree.node(d).unwrap();
    assert_eq!(node.origin.layer, 1);
    assert_eq!(node.origin.member, MemberId(2));
    assert_eq!(node.nlink, 2);
    assert_eq!(tree.node(NodeId::ROOT).unwrap().origin.layer, 1);
}

#[test]
fn implied_directories_keep_the_lower_attributes() {
    // Layer 1 changes etc/a without listing etc/ (as umoci writes it): etc stays layer 0's.
    let tree = merge(&[&["d:etc", "f:etc/a", "d:new"], &["f:etc/a", "f:new/x/y"]]);
    assert_eq!(
        listing(&tree),
        [
            "etc d@0",
            "etc/a f@1",
            "new d@0",
            "new/x d@1",
            "new/x/y f@1"
        ]
    );
    // Listed later in the same layer: then it is the layer's own.
    assert_listing(
        &[&["d:etc"], &["f:etc/a", "d:etc"]],
        &["etc d@1", "etc/a f@1"],
    );
}

#[test]
fn entries_below_a_file_of_the_same_layer_are_skipped() {
    // umoci writes `d/sub` (a file replacing a directory) followed by `d/sub/.wh.x`.
    assert_listing(
        &[
            &["d:d", "d:d/sub", "f:d/sub/x", "f:d/sub/y"],
            &["d:d", "f:d/sub", "f:d/sub/.wh.x", "f:d/sub/z"],
        ],
        &["d d@1", "d/sub f@1"],
    );
}

#[test]
fn replaced_then_whited_out_then_recreated() {
    assert_listing(
        &[&["d:x", "f:x/1"], &["f:x"], &["f:.wh.x"], &["d:x", "f:x/2"]],
        &["x d@3", "x/2 f@3"],
    );
}

#[test]
fn whiteout_below_a_replaced_directory_does_nothing() {
    // Layer 1 replaces `d` (a file in layer 0) with a directory: its whiteout finds nothing
    // lower to remove, and layer 0's `d` is gone anyway.
    assert_listing(
        &[&["f:d", "f:e"], &["d:d", "f:d/.wh.e", "f:d/k"]],
        &["d d@1", "d/k f@1", "e f@0"],
    );
}

#[test]
fn whiteouts_that_name_nothing_or_escape_are_ignored() {
    assert_listing(
        &[
            &["f:a", "d:d", "f:d/x"],
            &[
                "f:.wh.",
                "f:.wh..",
                "f:.wh...",
                "f:d/.wh...",
                "f:d/.wh..",
                "f:.wh..wh.plnk",
                "f:.wh..wh.aufs",
                "d:.wh..wh.orph",
                "f:.wh..wh.orph/x",
            ],
        ],
        &["a f@0", "d d@0", "d/x f@0"],
    );
    // A listing never holds `..` itself: such paths are skipped, as tar does.
    assert_listing(&[&["f:a"], &["f:../a", "f:d/../../a"]], &["a f@0"]);
}

#[test]
fn whiteout_names_are_case_and_byte_exact() {
    assert_listing(
        &[&["f:a", "f:A"], &["f:.WH.a", "f:.wh.A"]],
        &[".WH.a f@1", "a f@0"],
    );
}

#[test]
fn hard_links_share_an_origin_and_count_names() {
    let tree = merge(&[&["f:a", "h:b=a", "d:d", "h:d/c=a", "f:x"]]);
    let origin = |p: &[u8]| tree.node(tree.lookup_path(p).unwrap()).unwrap().origin;
    assert_eq!(origin(b"a"), origin(b"b"));
    assert_eq!(origin(b"a"), origin(b"d/c"));
    let nlink =
        |tree: &MergedTree, p: &[u8]| tree.node(tree.lookup_path(p).unwrap()).unwrap().nlink;
    assert_eq!(nlink(&tree, b"a"), 3);
    assert_eq!(nlink(&tree, b"x"), 1);

    let tree = merge(&[
        &["f:a", "h:b=a", "d:d", "h:d/c=a"],
        &["f:.wh.b", "f:d/.wh.c"],
    ]);
    assert_eq!(nlink(&tree, b"a"), 1);
    // A hard link in an upper layer to an upper file; the lower name is separate.
    let tree = merge(&[&["f:a"], &["f:b", "h:c=b"]]);
    assert_eq!(nlink(&tree, b"a"), 1);
    assert_eq!(nlink(&tree, b"c"), 2);
    assert_eq!(origin_layer(&tree, b"c"), 1);
}

fn origin_layer(tree: &MergedTree, path: &[u8]) -> usize {
    tree.node(tree.lookup_path(path).unwrap())
        .unwrap()
        .origin
        .layer
}

#[test]
fn tree_navigation() {
    let tree = merge(&[&["d:b", "f:b/z", "f:b/a", "f:a", "d:c/d"]]);
    assert_eq!(tree.len(), 7);
    assert!(!tree.is_empty());
    let names: Vec<&[u8]> = tree
        .children(NodeId::ROOT)
        .map(|(_, n)| &n.name[..])
        .collect();
    assert_eq!(names, [&b"a"[..], b"b", b"c"]);
    let b = tree.lookup(NodeId::ROOT, b"b").unwrap();
    let names: Vec<&[u8]> = tree.children(b).map(|(_, n)| &n.name[..]).collect();
    assert_eq!(names, [&b"a"[..], b"z"]);
    assert_eq!(tree.lookup(b, b"missing"), None);
    let z = tree.lookup_path(b"/b/z").unwrap();
    assert_eq!(tree.path(z), b"b/z");
    assert_eq!(tree.node(z).unwrap().parent, b);
    assert_eq!(tree.lookup(z, b"x"), None);
    assert_eq!(tree.children(z).count(), 0);
    assert_eq!(tree.lookup_path(b""), Some(NodeId::ROOT));
    assert_eq!(tree.path(NodeId::ROOT), b"");
    assert_eq!(tree.node(NodeId::ROOT).unwrap().nlink, 4);
    assert!(tree.node(NodeId(99)).is_none());
    // Breadth-first: parents before children, ids dense.
    for (id, n) in tree.iter().skip(1) {
        assert!(n.parent < id);
    }
}

#[test]
fn no_layers_is_an_empty_root() {
    let Ok(tree) = merge_layers(Vec::<LayerListing>::new());
    assert_eq!(tree.len(), 1);
    assert_eq!(tree.node(NodeId::ROOT).unwrap().kind, Dir);
}

/// A layer tree whose directory contains itself: the merge must not loop.
struct Cyclic;

impl LayerTree for Cyclic {
    type Error = ();
    fn root(&self) -> MemberId {
        MemberId::ROOT
    }
    fn children(&self, _dir: MemberId) -> Result<Vec<LayerEntry>, ()> {
        Ok(vec![LayerEntry {
            name: b"loop".to_vec(),
            member: MemberId::ROOT,
            kind: Dir,
            listed: true,
        }])
    }
}

/// A layer listing one name twice, first as a directory then as a file.
struct Duplicated;

impl LayerTree for Duplicated {
    type Error = ();
    fn root(&self) -> MemberId {
        MemberId::ROOT
    }
    fn children(&self, dir: MemberId) -> Result<Vec<LayerEntry>, ()> {
        let entry = |member, kind| LayerEntry {
            name: b"x".to_vec(),
            member: MemberId(member),
            kind,
            listed: true,
        };
        Ok(match dir.0 {
            1 => vec![entry(2, Dir), entry(3, File)],
            _ => vec![entry(4, File)],
        })
    }
}

#[test]
fn duplicate_names_in_a_listing_keep_the_last() {
    let tree = merge_layers([Duplicated]).unwrap();
    assert_eq!(listing(&tree), ["x f@0"]);
}

#[test]
fn cyclic_layer_trees_terminate() {
    let tree = merge_layers([Cyclic]).unwrap();
    assert_eq!(tree.len(), 2);
}

/// A layer whose listing fails: the error comes back.
struct Broken;

impl LayerTree for Broken {
    type Error = &'static str;
    fn root(&self) -> MemberId {
        MemberId::ROOT
    }
    fn children(&self, _dir: MemberId) -> Result<Vec<LayerEntry>, &'static str> {
        Err("disk on fire")
    }
}

#[test]
fn layer_errors_propagate() {
    assert_eq!(merge_layers([Broken]).unwrap_err(), "disk on fire");
}

#[test]
fn listing_later_entries_win() {
    let l = layer(&["d:a", "f:a/x", "f:a", "d:b", "f:b/y", "d:b", "l:c", "f:c"]);
    let Ok(tree) = merge_layers([&l]);
    assert_eq!(listing(&tree), ["a f@0", "b d@0", "b/y f@0", "c f@0"]);
}

// ---- differential test against a path-based model ------------------------------------------

/// The spec, written as directly as possible over full paths.
fn model(layers: &[Vec<(String, MemberKind)>]) -> Vec<String> {
    let mut tree: BTreeMap<String, (MemberKind, usize)> = BTreeMap::new();
    let remove_under = |tree: &mut BTreeMap<String, (MemberKind, usize)>, path: &str| {
        tree.remove(path);
        let prefix = format!("{path}/");
        tree.retain(|k, _| !k.starts_with(&prefix));
    };
    for (n, entries) in layers.iter().enumerate() {
        // The layer as extraction leaves it (later entries win), then its whiteouts, then its
        // entries.
        let mut extracted: BTreeMap<String, MemberKind> = BTreeMap::new();
        let mut listed: BTreeMap<String, bool> = BTreeMap::new();
        'entries: for (path, kind) in entries {
            let comps: Vec<&str> = path.split('/').collect();
            for i in 1..comps.len() {
                let parent = comps[..i].join("/");
                match extracted.get(&parent) {
                    Some(Dir) => {}
                    Some(_) => continue 'entries,
                    None => {
                        extracted.insert(parent.clone(), Dir);
                        listed.insert(parent, false);
                    }
                }
            }
            if !(*kind == Dir && extracted.get(path) == Some(&Dir)) {
                remove_under_kinds(&mut extracted, path);
            }
            extracted.insert(path.clone(), *kind);
            listed.insert(path.clone(), true);
        }
        for path in extracted.keys() {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let lower_dir_ok = dir.is_empty() || tree.get(dir).is_some_and(|(k, _)| *k == Dir);
            if !lower_dir_ok {
                continue;
            }
            let join = |name: &str| {
                if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                }
            };
            if name == ".wh..wh..opq" {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                tree.retain(|k, _| !k.starts_with(&prefix) || k.len() == prefix.len() - 1);
            } else if let Some(target) = name.strip_prefix(".wh.") {
                if !target.starts_with(".wh.") && !target.is_empty() {
                    remove_under(&mut tree, &join(target));
                }
            }
        }
        for (path, kind) in &extracted {
            let name = path.rsplit('/').next().unwrap_or(path);
            if name.starts_with(".wh.") || under_whiteout_name(path) {
                continue;
            }
            if *kind == Dir && tree.get(path).is_some_and(|(k, _)| *k == Dir) {
                if listed[path] {
                    tree.insert(path.clone(), (Dir, n));
                }
            } else {
                remove_under(&mut tree, path);
                tree.insert(path.clone(), (*kind, n));
            }
        }
    }
    tree.into_iter()
        .map(|(p, (k, l))| {
            let k = match k {
                Dir => "d",
                File => "f",
                Symlink => "l",
                _ => "?",
            };
            format!("{p} {k}@{l}")
        })
        .collect()
}

/// Entries under a directory named like a whiteout are not shown (the directory is not).
fn under_whiteout_name(path: &str) -> bool {
    let comps: Vec<&str> = path.split('/').collect();
    comps[..comps.len() - 1]
        .iter()
        .any(|c| c.starts_with(".wh."))
}

fn remove_under_kinds(m: &mut BTreeMap<String, MemberKind>, path: &str) {
    m.remove(path);
    let prefix = format!("{path}/");
    m.retain(|k, _| !k.starts_with(&prefix));
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn random_layer(rng: &mut Rng) -> Vec<(String, MemberKind)> {
    const NAMES: [&str; 7] = ["a", "b", "c", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh.c"];
    let mut out = Vec::new();
    for _ in 0..rng.below(8) {
        let depth = 1 + rng.below(3);
        let mut comps: Vec<&str> = (0..depth).map(|_| NAMES[rng.below(3)]).collect();
        if rng.below(3) == 0 {
            // Whiteouts are leaves.
            comps[depth - 1] = NAMES[3 + rng.below(4)];
            out.push((comps.join("/"), File));
            continue;
        }
        let kind = [Dir, File, Symlink][rng.below(3)];
        out.push((comps.join("/"), kind));
    }
    out
}

#[test]
fn differential_against_path_model() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for case in 0..4000 {
        let layers: Vec<Vec<(String, MemberKind)>> = (0..1 + rng.below(4))
            .map(|_| random_layer(&mut rng))
            .collect();
        let listings: Vec<LayerListing> = layers
            .iter()
            .map(|entries| {
                let mut l = LayerListing::new();
                for (i, (path, kind)) in entries.iter().enumerate() {
                    l.insert(path.as_bytes(), *kind, MemberId(i as u64 + 2));
                }
                l
            })
            .collect();
        let Ok(tree) = merge_layers(&listings);
        assert_eq!(listing(&tree), model(&layers), "case {case}: {layers:?}");
        assert_tree_invariants(&tree);
    }
}

/// Every node is found again by its parent and name and by its path; children are sorted;
/// only directories have children; link counts are at least 1.
fn assert_tree_invariants(tree: &MergedTree) {
    for (id, node) in tree.iter() {
        let names: Vec<&[u8]> = tree.children(id).map(|(_, c)| &c.name[..]).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "unsorted children");
        assert!(node.kind == Dir || names.is_empty());
        assert!(node.nlink >= 1);
        assert_eq!(tree.lookup_path(&tree.path(id)), Some(id));
        if id != NodeId::ROOT {
            assert_eq!(tree.lookup(node.parent, &node.name), Some(id));
            assert!(!node.name.starts_with(b".wh."), "a whiteout is shown");
        }
    }
}
