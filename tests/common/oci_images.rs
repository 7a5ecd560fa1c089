//! Test images: built with `umoci` into an OCI layout, pushed with `skopeo copy`, and unpacked
//! with `umoci unpack` as the reference for what a flattened rootfs must hold.
//!
//! `OciLayout` wraps one layout directory (a tempdir). `build_rich_image` makes an image whose
//! layers exercise every flattening rule: file and directory deletions (whiteouts umoci writes),
//! an opaque directory with its marker *after* its siblings and a hard-link pair (a layer
//! written by hand with the `tar` crate and added with `umoci raw add-layer`), a symlink
//! replaced by another symlink and by a file, a file over a directory and the reverse, hard
//! links, modes and owners. `push` runs `skopeo copy` to a loopback registry (gzip or zstd, OCI
//! or Docker schema 2, one image or a whole index). `walk_rootfs` lists a directory tree with
//! what `stat` and `readlink` say, for comparisons.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::content::{random_bytes, sha256_file, sha256_hex};
use super::process::{require_program, run, Output};

/// How long one umoci or skopeo command may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// An OCI image layout on disk.
pub struct OciLayout {
    path: PathBuf,
    _dir: TempDir,
}

/// One `skopeo copy` to a registry.
#[derive(Clone, Debug, Default)]
pub struct Push<'a> {
    /// `--dest-compress-format` (`zstd`, `gzip`).
    pub compress_format: Option<&'a str>,
    /// `--format` (`oci`, `v2s2`).
    pub format: Option<&'a str>,
    /// `--all`: copy a whole index.
    pub all: bool,
    /// `--dest-creds user:password`.
    pub creds: Option<(&'a str, &'a str)>,
}

/// Runs `umoci` with `args`, panicking with its output on failure.
pub fn umoci(args: &[&str]) -> Output {
    let mut cmd = Command::new(require_program("umoci", "umoci"));
    cmd.args(args);
    let out = run(cmd, TOOL_TIMEOUT);
    out.assert_success();
    out
}

/// `--rootless` unless we are root (then owners are kept as the layers say).
fn rootless_flag() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } != 0).then_some("--rootless")
}

impl OciLayout {
    /// `umoci init` in a fresh tempdir.
    pub fn new() -> OciLayout {
        let dir = tempfile::Builder::new()
            .prefix("lazycas-oci-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("layout");
        umoci(&["init", "--layout", path.to_str().expect("utf-8 path")]);
        OciLayout { path, _dir: dir }
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DIR:TAG`, as umoci's `--image` wants it.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.path.display())
    }

    /// A scratch directory next to the layout.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.path.parent().expect("layout parent").join(name);
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    /// `index.json`'s descriptor for `tag`.
    pub fn descriptor(&self, tag: &str) -> serde_json::Value {
        let index: serde_json::Value = read_json(&self.path.join("index.json"));
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.path.display()))
    }

    /// The digest (`sha256:…`) `tag` points at.
    pub fn digest(&self, tag: &str) -> String {
        self.descriptor(tag)["digest"]
            .as_str()
            .expect("digest string")
            .to_string()
    }

    /// The path of blob `digest` (`sha256:…`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.path.join("blobs/sha256").join(hex)
    }

    /// The manifest `tag` points at (an image manifest).
    pub fn manifest(&self, tag: &str) -> serde_json::Value {
        read_json(&self.blob_path(&self.digest(tag)))
    }

    /// The layer blobs of image `tag`, bottom first.
    pub fn layer_paths(&self, tag: &str) -> Vec<PathBuf> {
        self.manifest(tag)["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| self.blob_path(l["digest"].as_str().expect("layer digest")))
            .collect()
    }

    /// `umoci unpack` of `tag` into a fresh bundle; returns the bundle (rootfs is `rootfs/`).
    pub fn unpack(&self, tag: &str, bundle_name: &str) -> PathBuf {
        let bundle = self.scratch(bundle_name);
        let image = self.image(tag);
        let bundle_s = bundle.to_str().expect("utf-8 path");
        let mut args = vec!["unpack"];
        args.extend(rootless_flag());
        args.extend(["--image", &image, bundle_s]);
        umoci(&args);
        bundle
    }

    /// `umoci repack --refresh-bundle` of `bundle` into `tag` (one new layer).
    pub fn repack(&self, tag: &str, bundle: &Path) {
        let image = self.image(tag);
        umoci(&[
            "repack",
            "--refresh-bundle",
            "--image",
            &image,
            bundle.to_str().expect("utf-8 path"),
        ]);
    }

    /// Appends an uncompressed tar as a new layer of `tag`, verbatim.
    pub fn add_raw_layer(&self, tag: &str, tar: &Path) {
        let image = self.image(tag);
        umoci(&[
            "raw",
            "add-layer",
            "--image",
            &image,
            tar.to_str().expect("utf-8 path"),
        ]);
    }

    /// Tags a copy of `from` as `to` with another platform in its config.
    pub fn retag_for_platform(&self, from: &str, to: &str, os: &str, arch: &str) {
        let image = self.image(from);
        umoci(&[
            "config",
            "--image",
            &image,
            "--tag",
            to,
            "--os",
            os,
            "--architecture",
            arch,
        ]);
    }

    /// Writes an OCI index over the manifests of `entries` (tag, os, architecture, variant)
    /// and tags it `tag`. Returns its digest.
    pub fn add_index(&self, tag: &str, entries: &[(&str, &str, &str, Option<&str>)]) -> String {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(t, os, arch, variant)| {
                let d = self.descriptor(t);
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": d["mediaType"],
                    "digest": d["digest"],
                    "size": d["size"],
                    "platform": platform,
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).expect("serialise index");
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        std::fs::write(self.blob_path(&digest), &bytes).expect("write index blob");
        let top_path = self.path.join("index.json");
        let mut top: serde_json::Value = read_json(&top_path);
        top["manifests"]
            .as_array_mut()
            .expect("manifests")
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest,
                "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(&top_path, serde_json::to_vec(&top).expect("json")).expect("index.json");
        digest
    }

    /// `skopeo copy oci:DIR:TAG docker://DEST` (DEST is `host:port/repo:tag`).
    pub fn push(&self, tag: &str, dest: &str, push: &Push) -> Output {
        let mut cmd = Command::new(require_program("skopeo", "skopeo"));
        cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if push.all {
            cmd.arg("--all");
        }
        if let Some(f) = push.format {
            cmd.args(["--format", f]);
        }
        if let Some(c) = push.compress_format {
            cmd.args(["--dest-compress-format", c]);
        }
        if let Some((u, p)) = push.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", self.path.display()));
        cmd.arg(format!("docker://{dest}"));
        let out = run(cmd, TOOL_TIMEOUT);
        out.assert_success();
        out
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Builds the image `tag` in `layout`: four layers, every flattening rule (see the module doc).
pub fn build_rich_image(layout: &OciLayout, tag: &str) {
    umoci(&["new", "--image", &layout.image(tag)]);

    // Layer 1: the base.
    let bundle = layout.unpack(tag, "bundle-1");
    let r = bundle.join("rootfs");
    write(&r, "etc/hostname", b"base\n");
    write(&r, "etc/a", b"alpha\n");
    write(&r, "d/sub/x", b"x\n");
    write(&r, "gone/deep/y", b"y\n");
    write(&r, "del.txt", b"deleted later\n");
    write(&r, "fod/inner/f", b"in a directory that becomes a file\n");
    write(&r, "dof", b"a file that becomes a directory\n");
    write(&r, "opq/old1", b"hidden by the opaque marker\n");
    write(&r, "opq/sub/old3", b"also hidden\n");
    write(&r, "hl/one", b"hard-linked in layer 3\n");
    write(&r, "data/big", &random_bytes(300 * 1024, 9));
    write(&r, "bin/tool", b"#!/bin/sh\necho tool\n");
    set_mode(&r.join("bin/tool"), 0o755);
    write(&r, "secret", b"owner only\n");
    set_mode(&r.join("secret"), 0o600);
    chown_if_root(&r.join("secret"), 1000, 1000);
    symlink("etc/a", &r.join("lnk"));
    symlink("etc/hostname", &r.join("lnk2"));
    std::fs::create_dir_all(r.join("empty")).expect("mkdir empty");
    // An old date on everything, so a later layer's dates differ from the base's.
    backdate(&r, 1_000_000_000);
    layout.repack(tag, &bundle);

    // Layer 2: deletions and replacements, as umoci's diff writes them.
    std::fs::remove_dir_all(r.join("gone")).expect("rm gone");
    std::fs::remove_file(r.join("del.txt")).expect("rm del.txt");
    std::fs::remove_file(r.join("lnk")).expect("rm lnk");
    symlink("d/sub", &r.join("lnk"));
    std::fs::remove_file(r.join("lnk2")).expect("rm lnk2");
    write(&r, "lnk2", b"a file where a symlink was\n");
    std::fs::remove_dir_all(r.join("fod")).expect("rm fod");
    write(&r, "fod", b"a file where a directory was\n");
    std::fs::remove_file(r.join("dof")).expect("rm dof");
    write(&r, "dof/inner", b"a directory where a file was\n");
    std::fs::remove_dir_all(r.join("d/sub")).expect("rm d/sub");
    write(&r, "d/sub", b"d/sub is a file now\n");
    write(&r, "etc/hostname", b"changed\n");
    std::fs::hard_link(r.join("etc/a"), r.join("etc/hard")).expect("hard link");
    layout.repack(tag, &bundle);

    // Layer 3: written by hand, as other builders write them.
    let tar = layout.scratch("layer-3.tar");
    write_opaque_layer(&tar);
    layout.add_raw_layer(tag, &tar);

    // Layer 4: more changes over the hand-made layer.
    let bundle = layout.unpack(tag, "bundle-4");
    let r = bundle.join("rootfs");
    write(&r, "opq/later", b"added after the opaque layer\n");
    std::fs::remove_file(r.join("hl/two")).expect("rm hl/two");
    set_mode(&r.join("etc/a"), 0o640);
    layout.repack(tag, &bundle);
}

/// A tar with `opq/`, `opq/new`, `opq/.wh..wh..opq` (marker after its sibling), a whiteout of
/// `empty`, and `hl/two` hard-linked to a new `hl/one`.
fn write_opaque_layer(path: &Path) {
    let file = std::fs::File::create(path).expect("create layer tar");
    let mut b = tar::Builder::new(file);
    let dir = |b: &mut tar::Builder<std::fs::File>, name: &str| {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, name, std::io::empty())
            .expect("dir entry");
    };
    let file_entry = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8], mode| {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, name, data).expect("file entry");
    };
    dir(&mut b, "opq/");
    let survivor = b"only this survives the opaque marker\n";
    file_entry(&mut b, "opq/new", survivor, 0o644);
    file_entry(&mut b, "opq/.wh..wh..opq", b"", 0o000);
    file_entry(&mut b, ".wh.empty", b"", 0o000);
    dir(&mut b, "hl/");
    file_entry(&mut b, "hl/one", b"hard-linked pair\n", 0o644);
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "hl/two", "hl/one")
        .expect("link entry");
    b.into_inner().expect("finish tar");
}

/// A GNU header owned by root with a fixed mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir -p");
    }
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// `touch -h -d @secs` on `root` and everything below it.
fn backdate(root: &Path, secs: i64) {
    let mut cmd = Command::new("find");
    cmd.arg(root)
        .args(["-exec", "touch", "-h", "-d"])
        .arg(format!("@{secs}"))
        .args(["{}", "+"]);
    run(cmd, TOOL_TIMEOUT).assert_success();
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn chown_if_root(p: &Path, uid: u32, gid: u32) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    }
}

/// What a tree node is, as compared between a flattened image and `umoci unpack`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FsEntry {
    /// `d`, `f`, `l`, `c`, `b`, `p`.
    pub kind: char,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size for files and symlinks, 0 for directories.
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
    /// sha256 of a regular file's bytes.
    pub sha256: Option<String>,
    /// Modification time, seconds.
    pub mtime: i64,
}

/// Every path below `root` (relative, without `./`) with what `lstat` and `readlink` say.
pub fn walk_rootfs(root: &Path) -> BTreeMap<String, (FsEntry, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries {
            let e = e.expect("dir entry");
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'p'
            };
            let entry = FsEntry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.size() },
                target: ft.is_symlink().then(|| {
                    std::fs::read_link(&p)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned()
                }),
                sha256: ft.is_file().then(|| sha256_file(&p)),
                mtime: m.mtime(),
            };
            if ft.is_dir() {
                stack.push(p.clone());
            }
            out.insert(rel, (entry, m.nlink()));
        }
    }
    out
}

/// A rootfs listing: path → (entry, file link count), as `walk_rootfs` gives it.
pub type Listing = std::collections::BTreeMap<String, (FsEntry, u64)>;

/// Asserts two listings are equal, reporting every missing, extra and different path.
#[track_caller]
pub fn assert_same_tree(what: &str, got: &Listing, want: &Listing) {
    let mut diffs = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => diffs.push(format!("missing {path}: {w:?}")),
            Some(g) if g != w => diffs.push(format!("{path}: got {g:?}, want {w:?}")),
            Some(_) => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("extra {path}: {:?}", got[path]));
    }
    assert!(
        diffs.is_empty(),
        "{what} differs from umoci unpack:\n{}",
        diffs.join("\n")
    );
}
