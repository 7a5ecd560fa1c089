//! Source trees for archive fixtures: every node created with the exact mode, owner and mtime
//! (with nanoseconds) the test wants GNU tar to record, and content generators.
//!
//! Directory attributes are applied last, deepest first ([`SourceTree::finish`]), because adding
//! an entry to a directory changes its mtime.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::random_bytes;
use crate::common::xattr::cpath;

/// The attributes a node gets.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Permission bits (ignored for symlinks).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (may be negative).
    pub mtime: i64,
    pub nanos: u32,
}

impl Meta {
    /// `mode`, owned by root, modified at `mtime` seconds.
    pub const fn new(mode: u32, mtime: i64) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime,
            nanos: 0,
        }
    }

    pub const fn owner(self, uid: u32, gid: u32) -> Meta {
        Meta { uid, gid, ..self }
    }

    pub const fn nanos(self, nanos: u32) -> Meta {
        Meta { nanos, ..self }
    }
}

/// A source tree being built under `root`.
pub struct SourceTree {
    root: PathBuf,
    dirs: Vec<(PathBuf, Meta)>,
}

impl SourceTree {
    /// Creates `root` (which must not exist) with `meta` (applied by `finish`).
    pub fn new(root: &Path, meta: Meta) -> SourceTree {
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        SourceTree {
            root: root.to_path_buf(),
            dirs: vec![(root.to_path_buf(), meta)],
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/rel`; `rel` may hold any bytes but NUL.
    pub fn path(&self, rel: impl AsRef<OsStr>) -> PathBuf {
        self.root.join(rel.as_ref())
    }

    /// The parent of `rel`, created (with default attributes) if missing.
    fn parent_of(&self, rel: &OsStr) -> PathBuf {
        let p = self.path(rel);
        let parent = p
            .parent()
            .expect("a relative path has a parent")
            .to_path_buf();
        fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        p
    }

    /// A directory (attributes applied by `finish`).
    pub fn dir(&mut self, rel: impl AsRef<OsStr>, meta: Meta) {
        let p = self.path(rel.as_ref());
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.dirs.push((p, meta));
    }

    /// A regular file holding `bytes`.
    pub fn file(&mut self, rel: impl AsRef<OsStr>, bytes: &[u8], meta: Meta) {
        let p = self.parent_of(rel.as_ref());
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        apply(&p, meta, true);
    }

    /// A regular file written piece by piece (for files too big to hold in memory at once).
    pub fn file_from_pieces(
        &mut self,
        rel: impl AsRef<OsStr>,
        pieces: impl Iterator<Item = Vec<u8>>,
        meta: Meta,
    ) {
        use std::io::Write;
        let p = self.parent_of(rel.as_ref());
        let mut f = std::io::BufWriter::new(
            fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display())),
        );
        for piece in pieces {
            f.write_all(&piece).expect("write piece");
        }
        f.flush().expect("flush");
        drop(f);
        apply(&p, meta, true);
    }

    /// A sparse file of `size` bytes with `chunks` (offset, bytes) written and holes elsewhere.
    pub fn sparse(
        &mut self,
        rel: impl AsRef<OsStr>,
        size: u64,
        chunks: &[(u64, Vec<u8>)],
        meta: Meta,
    ) {
        let p = self.parent_of(rel.as_ref());
        let f = fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.set_len(size).expect("truncate");
        for (off, bytes) in chunks {
            f.write_all_at(bytes, *off).expect("write sparse chunk");
        }
        drop(f);
        apply(&p, meta, true);
    }

    /// A symlink to `target` (its mode is always 0777; `meta.mode` is ignored).
    pub fn symlink(&mut self, rel: impl AsRef<OsStr>, target: impl AsRef<OsStr>, meta: Meta) {
        let p = self.parent_of(rel.as_ref());
        std::os::unix::fs::symlink(target.as_ref(), &p)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        apply(&p, meta, false);
    }

    /// A hard link `rel` to the existing `existing`.
    pub fn hardlink(&mut self, rel: impl AsRef<OsStr>, existing: impl AsRef<OsStr>) {
        let p = self.parent_of(rel.as_ref());
        let e = self.path(existing);
        fs::hard_link(&e, &p).unwrap_or_else(|err| panic!("link {}: {err}", p.display()));
    }

    /// A named pipe.
    pub fn fifo(&mut self, rel: impl AsRef<OsStr>, meta: Meta) {
        self.mknod(rel.as_ref(), libc::S_IFIFO, 0, meta);
    }

    /// A character device `major:minor`.
    pub fn char_device(&mut self, rel: impl AsRef<OsStr>, major: u32, minor: u32, meta: Meta) {
        self.mknod(
            rel.as_ref(),
            libc::S_IFCHR,
            libc::makedev(major, minor),
            meta,
        );
    }

    /// A block device `major:minor`.
    pub fn block_device(&mut self, rel: impl AsRef<OsStr>, major: u32, minor: u32, meta: Meta) {
        self.mknod(
            rel.as_ref(),
            libc::S_IFBLK,
            libc::makedev(major, minor),
            meta,
        );
    }

    fn mknod(&mut self, rel: &OsStr, kind: libc::mode_t, dev: libc::dev_t, meta: Meta) {
        let p = self.parent_of(rel);
        let c = cpath(&p);
        // SAFETY: a valid C string; mknod does not keep the pointer.
        let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) };
        assert_eq!(
            r,
            0,
            "mknod {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        apply(&p, meta, true);
    }

    /// Sets an extended attribute on `rel` (for `tar --xattrs`).
    pub fn xattr(&mut self, rel: impl AsRef<OsStr>, name: &str, value: &[u8]) {
        let p = self.path(rel);
        crate::common::xattr::set(&p, name, value)
            .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
    }

    /// Applies directory attributes, deepest first, and returns the root.
    pub fn finish(mut self) -> PathBuf {
        self.dirs
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, meta) in &self.dirs {
            apply(p, *meta, true);
        }
        self.root
    }
}

/// Owner, then mode (chown clears setuid bits), then times, never following a symlink;
/// `has_mode` is false for symlinks, which have no mode of their own.
fn apply(p: &Path, meta: Meta, has_mode: bool) {
    std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
    if has_mode {
        fs::set_permissions(p, fs::Permissions::from_mode(meta.mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }
    let t = libc::timespec {
        tv_sec: meta.mtime as libc::time_t,
        tv_nsec: meta.nanos as libc::c_long,
    };
    let c = cpath(p);
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// `len` bytes of text-like content (words from a small vocabulary, newlines): compresses
/// about 3:1 with gzip, like source code or logs.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "archive",
        "lazycas",
        "member",
        "index",
        "checkpoint",
        "window",
        "inflate",
        "verify",
        "digest",
        "tar",
        "gzip",
        "the",
        "of",
        "a",
        "to",
        "fn",
        "let",
        "mut",
        "struct",
        "impl",
        "return",
        "0x1f8b",
        "offset",
        "size",
        "mode",
        "uid",
        "gid",
        "mtime",
        "link",
        "{",
        "}",
        "=",
        ";",
        "//",
        "42",
        "2024",
        "node",
        "hpc",
        "container",
        "image",
        "layer",
        "blob",
    ];
    let picks = random_bytes(len / 2 + 16, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let b = picks[i % picks.len()] as usize;
        i += 1;
        out.extend_from_slice(WORDS[b % WORDS.len()].as_bytes());
        out.push(if b.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// `len` bytes alternating 64 KiB of random bytes and 64 KiB of text: a realistic gzip ratio
/// (about 0.6) without the cost of compressing pure noise.
pub fn mixed_bytes(len: usize, seed: u64) -> Vec<u8> {
    const PIECE: usize = 64 << 10;
    let mut out = Vec::with_capacity(len);
    let mut n = 0u64;
    while out.len() < len {
        let want = PIECE.min(len - out.len());
        let piece_seed = seed.wrapping_add(n);
        if n.is_multiple_of(2) {
            out.extend_from_slice(&random_bytes(want, piece_seed));
        } else {
            out.extend_from_slice(&text_bytes(want, piece_seed));
        }
        n += 1;
    }
    out
}
