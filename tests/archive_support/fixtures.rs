//! The generated source trees of the archive suite. Each is built so that GNU tar's extraction
//! and lazycas agree by design (see the `archive` module doc for the deliberate differences):
//! every directory is archived (so no directory is implied), the archive root is a `./` entry,
//! and no entry is written through a symlink.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::pack::T0;
use super::source::{mixed_bytes, text_bytes, Meta, SourceTree};
use crate::common::random_bytes;

/// What the archive format can record, which decides what a rich tree holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    /// GNU: long names and link targets (`L`/`K`), base-256 ids and times, raw byte names.
    Gnu,
    /// PAX: long names, big ids and times as records, nanosecond mtimes, `SCHILY.xattr.*`.
    Pax,
    /// POSIX ustar: names split over the prefix field (up to 255 bytes), targets up to 100
    /// bytes, ids up to 2097151, times below 8^11.
    Ustar,
}

fn f(mode: u32, dt: i64) -> Meta {
    Meta::new(mode, T0 + dt)
}

/// Nodes every dialect records: nested directories, sizes around the 512-byte block, modes with
/// setuid/setgid/sticky, owners, times (with nanoseconds in the source, which only PAX keeps),
/// symlinks (relative, dangling, absolute, to a directory), hard links, a fifo and devices,
/// deep paths and UTF-8 names; then what `dialect` adds.
pub fn rich_tree(root: &Path, dialect: Dialect) -> PathBuf {
    // The root's own attributes come from the `./` entry.
    let mut t = SourceTree::new(root, f(0o750, 0).owner(1000, 100));
    t.dir("docs", f(0o750, 10).owner(1000, 1000));
    t.file(
        "docs/readme.txt",
        &text_bytes(3000, 1),
        f(0o644, 1).owner(1000, 1000),
    );
    t.file("docs/empty", b"", f(0o600, 2));
    t.dir("sizes", f(0o755, 20));
    for (i, n) in [1usize, 511, 512, 513, 10_240, (1 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        t.file(
            format!("sizes/s-{n}"),
            &mixed_bytes(n, 100 + i as u64),
            f(0o644, 3),
        );
    }
    t.dir("modes", f(0o755, 30));
    for mode in [
        0o400, 0o444, 0o640, 0o700, 0o777, 0o000, 0o4755, 0o2755, 0o6755, 0o1755,
    ] {
        t.file(
            format!("modes/m{mode:04o}"),
            format!("{mode:o}\n").as_bytes(),
            f(mode, 4),
        );
    }
    t.dir("sticky", f(0o1777, 31));
    t.dir("setgid-dir", f(0o2775, 32).owner(0, 100));
    t.file("setgid-dir/inside", b"inside\n", f(0o664, 5).owner(0, 100));
    t.dir("private", f(0o700, 33));
    t.file("private/secret", b"secret\n", f(0o600, 5));
    t.dir("ro-dir", f(0o555, 34));
    t.file("ro-dir/file", b"ro\n", f(0o444, 5));
    t.dir("owners", f(0o755, 40));
    t.file("owners/u1234", b"u\n", f(0o644, 6).owner(1234, 5678));
    t.file("owners/nobody", b"n\n", f(0o644, 6).owner(65534, 65534));
    t.dir("times", f(0o755, 50));
    t.file("times/epoch1", b"1\n", Meta::new(0o644, 1));
    t.file("times/y2038", b"2038\n", Meta::new(0o644, 2_147_483_648));
    t.file("times/y2100", b"2100\n", Meta::new(0o644, 4_102_444_800));
    t.dir("nanos", f(0o755, 51).nanos(500_000_000));
    t.file("nanos/n1", b"n1\n", f(0o644, 7).nanos(123_456_789));
    t.file("nanos/n2", b"n2\n", f(0o644, 7).nanos(1));
    t.file("nanos/n3", b"n3\n", f(0o644, 7).nanos(999_999_999));
    t.symlink("nanos/sym", "n1", f(0, 7).nanos(42));
    t.dir("links", f(0o755, 60));
    t.symlink("links/rel", "../docs/readme.txt", f(0, 8));
    t.symlink("links/dangling", "no/such/file", f(0, 8));
    t.symlink("links/abs", "/etc/hostname", f(0, 8).owner(7, 8));
    t.symlink("links/todir", "../docs", f(0, 8));
    t.symlink("links/dot", ".", f(0, 8));
    t.dir("hard", f(0o755, 70));
    t.file("hard/a", &text_bytes(2000, 2), f(0o640, 9));
    t.hardlink("hard/b", "hard/a");
    t.hardlink("docs/also-a", "hard/a");
    t.dir("special", f(0o755, 80));
    t.fifo("special/fifo.special", f(0o644, 10));
    t.char_device("special/null.special", 1, 3, f(0o666, 10));
    t.block_device("special/loop.special", 7, 200, f(0o660, 10).owner(0, 6));
    // A minor number past 255 uses the high bits of the device number.
    t.block_device(
        "special/nvme.special",
        259,
        70_000,
        f(0o660, 10).owner(0, 6),
    );
    t.dir("deep", f(0o755, 90));
    let mut deep = String::from("deep");
    for (i, d) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        deep = format!("{deep}/{d}");
        t.dir(&deep, f(0o755, 91 + i as i64));
    }
    t.file("deep/a/b/c/d/e/f/g/h/leaf.txt", b"leaf\n", f(0o644, 11));
    t.dir("unicode", f(0o755, 100));
    t.file("unicode/naïve café.txt", "café\n".as_bytes(), f(0o644, 12));
    t.dir("unicode/日本語", f(0o755, 101));
    t.file(
        "unicode/日本語/ファイル.txt",
        "ファイル\n".as_bytes(),
        f(0o644, 12),
    );
    match dialect {
        Dialect::Gnu | Dialect::Pax => long_and_big(&mut t),
        Dialect::Ustar => ustar_limits(&mut t),
    }
    match dialect {
        Dialect::Gnu | Dialect::Ustar => {
            t.dir("bytes", f(0o755, 110));
            t.file(
                OsStr::from_bytes(b"bytes/caf\xe9"),
                b"latin-1 name\n",
                f(0o644, 13),
            );
            t.file(
                OsStr::from_bytes(b"bytes/\xff\xfe\x80"),
                b"not utf-8\n",
                f(0o644, 13),
            );
            t.symlink(
                "bytes/latin-1-target",
                OsStr::from_bytes(b"caf\xe9"),
                f(0, 13),
            );
        }
        Dialect::Pax => {
            t.file(
                OsStr::from_bytes(b"caf\xe9-pax"),
                b"latin-1 name in PAX\n",
                f(0o644, 13),
            );
            t.xattr("docs", "user.on_a_dir", b"dir value");
            t.xattr("docs/readme.txt", "user.lazycas_test", b"hello");
            t.xattr("hard/a", "user.other", b"value with spaces");
        }
    }
    t.finish()
}

/// GNU and PAX: names and link targets past 100 bytes, ids past 7 octal digits, a time past
/// 8^11 seconds.
fn long_and_big(t: &mut SourceTree) {
    let long_name = "n".repeat(150);
    t.dir("long", f(0o755, 120));
    t.file(format!("long/{long_name}"), b"long name\n", f(0o644, 14));
    let mut chain = String::from("long");
    for i in 0..4 {
        chain = format!("{chain}/{}{i}", "d".repeat(60));
        t.dir(&chain, f(0o755, 121 + i));
    }
    t.file(
        format!("{chain}/file.txt"),
        b"deep long path\n",
        f(0o644, 14),
    );
    t.symlink("long/symlink", "t".repeat(150), f(0, 14));
    t.hardlink(
        format!("long/hard-{long_name}"),
        format!("long/{long_name}"),
    );
    // Names around the 100-byte name field ("./" counts): 99, 100 and 101 bytes.
    for len in [97, 98, 99] {
        t.file("e".repeat(len), format!("{len}\n").as_bytes(), f(0o644, 14));
    }
    t.symlink("long/target-1000", "z/".repeat(500), f(0, 14));
    t.file(
        "owners/bigid",
        b"big\n",
        f(0o644, 15).owner(3_000_000, 4_000_000),
    );
    t.file("times/y2300", b"2300\n", Meta::new(0o644, 10_413_792_000));
}

/// ustar: paths split over prefix and name, a 100-byte name, a 100-byte link target.
fn ustar_limits(t: &mut SourceTree) {
    // "./pfx/ppp0/ppp1/ppp2" (131 bytes) + "/" + a 99-byte name = 231 bytes: too long for the
    // name field, so GNU tar splits it into prefix (131) and name (99).
    let mut chain = String::from("pfx");
    t.dir(&chain, f(0o755, 130));
    for i in 0..3 {
        chain = format!("{chain}/{}{i}", "p".repeat(40));
        t.dir(&chain, f(0o755, 131 + i));
    }
    t.file(
        format!("{chain}/{}", "q".repeat(99)),
        b"prefix field\n",
        f(0o644, 16),
    );
    // "./" + 98 bytes: exactly the 100-byte name field.
    t.file("x".repeat(98), b"hundred\n", f(0o644, 16));
    t.symlink("pfx/target100", "y".repeat(100), f(0, 16));
    // A long (prefix-split) name linking to a 99-byte target ("./" + 97; it sorts first, so it
    // is the one archived with data; GNU tar refuses a 100-byte hard-link target in ustar).
    t.file("a".repeat(97), b"link target\n", f(0o644, 16));
    t.hardlink(format!("{chain}/hard"), "a".repeat(97));
}

/// Sparse files: holes before, between and after data, an all-hole file, a map with more
/// chunks than an old GNU header and its extension blocks hold, odd offsets and sizes; and a
/// plain file after them (so member offsets after a sparse map are checked).
pub fn sparse_tree(root: &Path) -> PathBuf {
    let mut t = SourceTree::new(root, f(0o755, 0));
    t.dir("sparse", f(0o755, 1));
    let chunk = |len: usize, seed: u64| random_bytes(len, seed);
    t.sparse(
        "sparse/holes-64m",
        64 << 20,
        &[
            (0, chunk(4096, 1)),
            ((1 << 20) + 123, chunk(10_000, 2)),
            (10 << 20, chunk(100 << 10, 3)),
            ((64 << 20) - 1, chunk(1, 4)),
        ],
        f(0o644, 2),
    );
    t.sparse(
        "sparse/tail-hole",
        32 << 20,
        &[(0, chunk(70 << 10, 5))],
        f(0o600, 3),
    );
    t.sparse("sparse/all-hole", 16 << 20, &[], f(0o644, 4));
    let many: Vec<(u64, Vec<u8>)> = (0..100)
        .map(|i| (i * (64 << 10), chunk(512, 10 + i)))
        .collect();
    t.sparse("sparse/many-chunks", 8 << 20, &many, f(0o644, 5));
    t.sparse(
        "sparse/lead-hole",
        5 << 20,
        &[((5 << 20) - 8192, chunk(8192, 6))],
        f(0o644, 6),
    );
    t.sparse(
        "sparse/unaligned",
        (3 << 20) + 5,
        &[
            (777, chunk(1000, 7)),
            ((2 << 20) + 4097, chunk(1000, 8)),
            ((3 << 20) + 4, chunk(1, 9)),
        ],
        f(0o755, 7),
    );
    t.file("plain.txt", &text_bytes(5000, 11), f(0o644, 8));
    t.finish()
}

/// Hard links (one file with four names across directories, empty and setuid files with
/// links) and symlinks (relative to files and directories, dangling relative and absolute,
/// absolute, `..`-heavy, to themselves, loops, chains, long and UTF-8 targets).
pub fn links_tree(root: &Path) -> PathBuf {
    let mut t = SourceTree::new(root, f(0o755, 0));
    t.dir("files", f(0o755, 1));
    t.file(
        "files/data.bin",
        &mixed_bytes(300_000, 20),
        f(0o644, 2).owner(10, 20),
    );
    t.hardlink("files/data-link1", "files/data.bin");
    t.dir("other", f(0o755, 3));
    t.hardlink("other/data-link2", "files/data.bin");
    t.dir("other/deeper", f(0o700, 4));
    t.hardlink("other/deeper/data-link3", "files/data.bin");
    t.file("files/single", b"single\n", f(0o644, 5));
    t.file("files/empty", b"", f(0o644, 5));
    t.hardlink("files/empty-link", "files/empty");
    t.file("files/suid", b"#!/bin/sh\n", f(0o4755, 6));
    t.hardlink("files/suid-link", "files/suid");
    t.dir("sym", f(0o755, 7));
    let links: &[(&str, String)] = &[
        ("rel-file", "../files/data.bin".into()),
        ("rel-dir", "../files".into()),
        ("dangling", "../nowhere".into()),
        ("dangling-abs", "/nonexistent/lazycas/target".into()),
        ("abs", "/etc/hostname".into()),
        ("abs-dir", "/usr".into()),
        ("dotdot", "../../../../../etc/passwd".into()),
        ("self", "self".into()),
        ("loop-a", "loop-b".into()),
        ("loop-b", "loop-a".into()),
        ("chain1", "chain2".into()),
        ("chain2", "../files/single".into()),
        ("long", format!("{}end", "x/".repeat(70))),
        ("very-long", format!("{}end", "y/".repeat(1000))),
        ("unicode", "日本語/ファイル".into()),
        ("dot", ".".into()),
        ("spaces", "a b  c".into()),
    ];
    for (i, (name, target)) in links.iter().enumerate() {
        t.symlink(
            format!("sym/{name}"),
            target,
            f(0, 8 + i as i64).owner(i as u32, 0),
        );
    }
    // A hard link to a symlink links the symlink itself (link(2) does not follow it).
    t.hardlink("sym/hard-to-symlink", "sym/rel-file");
    t.finish()
}

/// Names at the limits: 255 bytes of ASCII, of 3-byte and 2-byte characters and of emoji, a
/// 255-byte directory holding a 255-byte name, NFC and NFD spellings side by side, scripts,
/// punctuation; a symlink and a hard link with 255-byte names.
pub fn names_tree(root: &Path) -> PathBuf {
    let mut t = SourceTree::new(root, f(0o755, 0));
    let a255 = "a".repeat(255);
    let kanji = "語".repeat(85);
    let accents = format!("{}x", "é".repeat(127));
    let crabs = format!("{}abc", "🦀".repeat(63));
    for (i, name) in [&a255, &kanji, &accents, &crabs].into_iter().enumerate() {
        assert_eq!(name.len(), 255, "{name}");
        t.file(name, name.as_bytes(), f(0o644, 1 + i as i64));
    }
    let d255 = format!("d{}", "b".repeat(254));
    t.dir(&d255, f(0o755, 10));
    t.file(
        format!("{d255}/{}", "c".repeat(255)),
        b"deep 255\n",
        f(0o644, 11),
    );
    t.file("cafe\u{301}", b"nfd\n", f(0o644, 12));
    t.file("caf\u{e9}", b"nfc\n", f(0o644, 12));
    t.dir("名前", f(0o755, 13));
    t.file("名前/ファイル.txt", b"jp\n", f(0o644, 14));
    let odd = [
        "Ελληνικά.txt",
        "עברית.txt",
        "quote\"name",
        "back\\slash",
        "-dash",
        "*star?",
        "sp ace",
        "[x]",
        "new\nline",
        "tab\tname",
        " lead",
        "trail ",
    ];
    for name in odd {
        t.file(name, name.as_bytes(), f(0o644, 15));
    }
    t.symlink(format!("s{}", "l".repeat(254)), &kanji, f(0, 16));
    t.hardlink(format!("h{}", "k".repeat(254)), &a255);
    t.finish()
}

/// `n` small files (0..2047 bytes of text): half in one flat directory, half in directories of
/// 1000.
pub fn many_files_tree(root: &Path, n: usize) -> PathBuf {
    let mut t = SourceTree::new(root, f(0o755, 0));
    t.dir("flat", f(0o755, 1));
    for d in 0..n / 2 / 1000 {
        t.dir(format!("tree/d{d:02}"), f(0o755, 2));
    }
    t.dir("tree", f(0o755, 3));
    for i in 0..n {
        let name = if i < n / 2 {
            format!("flat/f{i:05}")
        } else {
            let j = i - n / 2;
            format!("tree/d{:02}/f{:04}", j / 1000, j % 1000)
        };
        t.file(name, &text_bytes(i % 2048, i as u64), f(0o644, 4));
    }
    t.finish()
}
