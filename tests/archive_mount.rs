//! Acceptance tests for issue 3: tar and tar.gz archives mounted as directories, compared with
//! what GNU tar extracts from the same archive.
//!
//! Each test builds its archive with GNU tar (or writes the tar stream by hand when GNU tar will
//! not produce it), serves it from a real nginx on 127.0.0.1, mounts it with lazycas (root,
//! /dev/fuse) and compares the mounted tree with `tar -xf` run as root into a tempdir:
//! `diff -r --no-dereference` plus a `find -printf` listing of names, types, modes, sizes, link
//! targets, mtimes (with nanoseconds), owners and link counts (`archive_support::compare`).
//!
//! The fixtures are designed so GNU tar and lazycas agree; the documented deliberate differences
//! (see the `archive` module doc: entries behind a relative symlink are not written through it,
//! implied directories take the entry's mtime instead of the extraction time) get targeted tests
//! of their own, as do the other extraction rules (later entry wins, missing parents appear).
//! Hostile archives (`..` and absolute names, entries behind a symlinked directory, link cycles,
//! malformed gzip and tar headers) are in `hostile_archives.rs`.

#[path = "archive_support/mod.rs"]
mod archive_support;
mod common;

use archive_support::compare::{assert_same_tree, open_archive_root, WALK_TIMEOUT};
use archive_support::fixtures::{self, Dialect};
use archive_support::pack::{self, extract, extract_ok, gzip, pigz, tar_create, workdir, T0};
use archive_support::raw::{self, gzip_bytes, write_tgz, Header, RawTar};
use archive_support::serve::{assert_log_clean, Served};
use archive_support::source::{mixed_bytes, Meta, SourceTree};
use common::lazycas::tail;
use common::xattr::assert_errno;
use common::*;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Builds `src` into `dir/<file>` with `tar ARGS` (see `pack::tar_create`), then `compress`.
fn archive_of(
    src: &Path,
    dir: &Path,
    file: &str,
    tar_args: &[&str],
    compress: Compress,
) -> PathBuf {
    let tar = dir.join(format!("{file}.raw.tar"));
    tar_create(src, &tar, tar_args);
    let out = dir.join(file);
    match compress {
        Compress::None => fs::rename(&tar, &out).expect("rename"),
        Compress::Gzip => gzip(&tar, &out),
        Compress::Pigz(extra) => pigz(&tar, &out, extra),
    }
    out
}

/// How `archive_of` compresses the tar stream.
#[derive(Clone, Copy)]
enum Compress {
    /// A plain `.tar`.
    None,
    /// `gzip -n -6`: one member.
    Gzip,
    /// `pigz -n -p 2` with these extra arguments.
    Pigz(&'static [&'static str]),
}

/// Serves and mounts `archives` (catalog name, file), extracts each with GNU tar and asserts the
/// mounted tree is the same. Returns the mount for further checks.
fn assert_mounts_like_gnu_tar(work: &Path, archives: &[(&str, &Path)]) -> Served {
    assert_served_like_gnu_tar(work, Served::start(archives), archives)
}

/// `assert_mounts_like_gnu_tar` on an already started mount.
fn assert_served_like_gnu_tar(work: &Path, served: Served, archives: &[(&str, &Path)]) -> Served {
    for (name, file) in archives {
        let dest = work.join(format!("extracted-{}", name.replace('/', "_")));
        extract_ok(file, &dest, &[]);
        let started = Instant::now();
        let n = assert_same_tree(&served.path(name), &dest);
        eprintln!(
            "{name}: {n} nodes identical to GNU tar's extraction ({:?})",
            started.elapsed()
        );
    }
    assert_log_clean(&served.daemon);
    served
}

/// Every regular file under the node's store with its size.
fn store_files(node: &Lazycas) -> Vec<(PathBuf, u64)> {
    files_under(&node.store)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

/// Nothing was extracted to disk: the store holds the archive blob, the database (with its WAL
/// files) and nothing else, and the database is at most `index_budget` bytes.
#[track_caller]
fn assert_store_holds_only_blob_and_index(served: &Served, name: &str, index_budget: u64) {
    assert_store_holds_blob_index_and_kept(served, name, index_budget, &[]);
}

/// Waits until no copy is being written (decoded regions are filled and committed on threads
/// of their own, after the reads they served).
#[track_caller]
fn wait_no_temp_files(node: &Lazycas) {
    assert!(
        wait_until(Duration::from_secs(60), || node.temp_files().is_empty()),
        "temp files left: {:?}",
        node.temp_files()
    );
}

/// The decoded regions the node's store records for archive `archive_hex`: (stream offset,
/// the copy's sha256 hex).
fn region_copies(node: &Lazycas, archive_hex: &str) -> Vec<(u64, String)> {
    let db = node.store.join("lazycas.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut st = conn
        .prepare("SELECT start, digest FROM decoded_regions WHERE archive = ?1 ORDER BY start")
        .expect("query decoded_regions");
    let rows = st
        .query_map([archive_hex], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .expect("decoded_regions rows");
    rows.map(|r| r.expect("decoded_regions row")).collect()
}

/// The tar stream of gzip archive `file`.
fn gunzip_file(file: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let f = fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(f), &mut out)
        .unwrap_or_else(|e| panic!("gunzip {}: {e}", file.display()));
    out
}

/// Nothing was extracted to disk but the decoded copies of members read whole (`kept`: their
/// sha256 hex) and of the regions small members were read from: the store holds the archive
/// blob, those copies (each a blob named by the sha256 of its bytes; a region's bytes are its
/// stretch of the tar stream), the database and nothing else; the database is at most
/// `index_budget` bytes.
#[track_caller]
fn assert_store_holds_blob_index_and_kept(
    served: &Served,
    name: &str,
    index_budget: u64,
    kept: &[String],
) {
    let archive = served.archive(name);
    let blob = served.node.blob_path(&archive.sha256);
    let kept_paths: Vec<PathBuf> = kept.iter().map(|h| served.node.blob_path(h)).collect();
    wait_no_temp_files(&served.node);
    let regions = region_copies(&served.node, &archive.sha256);
    let mut tar: Option<Vec<u8>> = None;
    let files = store_files(&served.node);
    let mut db_bytes = 0;
    for (p, len) in &files {
        let file_name = p.file_name().unwrap_or_default().to_string_lossy();
        let region = regions
            .iter()
            .find(|(_, hex)| served.node.blob_path(hex) == *p);
        if *p == blob {
            assert_eq!(*len, archive.size, "stored blob size");
        } else if let Some((start, hex)) = region {
            assert_eq!(
                sha256_file(p),
                *hex,
                "a region copy holds the bytes its name says"
            );
            let tar = tar.get_or_insert_with(|| gunzip_file(&archive.file));
            let start = *start as usize;
            assert!(
                fs::read(p).expect("read region copy")[..] == tar[start..start + *len as usize],
                "region copy at {start} is that stretch of the tar stream"
            );
        } else if kept_paths.contains(p) {
            let hex = p.file_name().unwrap_or_default().to_string_lossy();
            assert_eq!(
                sha256_file(p),
                hex,
                "a kept copy holds the bytes its name says"
            );
        } else if file_name.starts_with("lazycas.db") && p.parent() == Some(&served.node.store) {
            db_bytes += len;
        } else {
            panic!(
                "unexpected file in the store: {} ({len} bytes); store: {files:?}",
                p.display()
            );
        }
    }
    // Nor anywhere else the daemon could write: its node directory holds the store, config,
    // logs and mount point only, and its cache home stays empty.
    let node = &served.node;
    for e in fs::read_dir(&node.root).expect("ls node dir").flatten() {
        let p = e.path();
        let file_name = e.file_name().to_string_lossy().into_owned();
        let known = p == node.store
            || p == node.config_path
            || p == node.mountpoint
            || (file_name.starts_with("daemon-") && file_name.ends_with(".log"));
        if file_name == "xdg-cache" {
            assert!(files_under(&p).is_empty(), "files under {}", p.display());
        } else {
            assert!(known, "unexpected {} next to the store", p.display());
        }
    }
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    eprintln!(
        "store for {name}: {total} bytes = archive {} + database {db_bytes} (budget \
         {index_budget}) + {} kept decoded copies",
        archive.size,
        kept.len()
    );
    assert!(
        files.iter().any(|(p, _)| *p == blob),
        "the archive blob is not in the store: {files:?}"
    );
    for p in &kept_paths {
        assert!(
            files.iter().any(|(f, _)| f == p),
            "no kept copy {} in the store: {files:?}",
            p.display()
        );
    }
    assert!(
        db_bytes <= index_budget,
        "database is {db_bytes} bytes, more than the {index_budget}-byte budget for an index: \
         was something extracted into it?"
    );
}

/// Rows of `archive_archives` in the node's database: one per indexed archive content.
fn indexed_archives(node: &Lazycas) -> i64 {
    let conn = rusqlite::Connection::open(node.store.join("lazycas.db")).expect("open store db");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy_timeout");
    conn.query_row("SELECT COUNT(*) FROM archive_archives", [], |r| r.get(0))
        .expect("count archive_archives")
}

/// Lines of the daemon log reporting an index build.
fn index_builds(daemon: &Daemon) -> usize {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains(" indexed "))
        .count()
}

/// `fixtures::rich_tree` in `work/src`, archived by GNU tar as `work/file` with `args`.
fn rich_archive(
    work: &Path,
    dialect: Dialect,
    file: &str,
    args: &[&str],
    compress: Compress,
) -> PathBuf {
    let src = fixtures::rich_tree(&work.join("src"), dialect);
    archive_of(&src, work, file, args, compress)
}

// ---------------------------------------------------------------------------------------------
// Tar dialects and compressions, each compared with GNU tar's extraction

#[test]
fn gnu_format_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let a = rich_archive(
        work.path(),
        Dialect::Gnu,
        "gnu.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let served = assert_mounts_like_gnu_tar(work.path(), &[("dialects/gnu", &a)]);
    let m = served.path("dialects/gnu");
    // Hard links are one inode with the right count.
    let ino = |p: &str| fs::symlink_metadata(m.join(p)).expect("stat").ino();
    assert_eq!(ino("hard/a"), ino("hard/b"));
    assert_eq!(ino("hard/a"), ino("docs/also-a"));
    assert_eq!(
        fs::symlink_metadata(m.join("hard/a"))
            .expect("stat")
            .nlink(),
        3
    );
    // Members carry the archive's digest; the tree is read-only.
    let digest =
        common::xattr::get_string(&m.join("hard/a"), "user.lazycas.digest").expect("getxattr");
    assert!(
        digest.contains(&served.archive("dialects/gnu").sha256),
        "user.lazycas.digest is {digest}"
    );
    assert_errno(
        fs::write(m.join("docs/new"), b"x"),
        libc::EROFS,
        "creating a file in an archive",
    );
    assert_errno(
        fs::OpenOptions::new().write(true).open(m.join("hard/a")),
        libc::EROFS,
        "opening a member for writing",
    );
    assert_errno(
        fs::create_dir(m.join("newdir")),
        libc::EROFS,
        "mkdir in an archive",
    );
}

#[test]
fn pax_format_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let a = rich_archive(
        work.path(),
        Dialect::Pax,
        "pax.tgz",
        &["--format=pax", "--xattrs"],
        Compress::Gzip,
    );
    let served = assert_mounts_like_gnu_tar(work.path(), &[("pax", &a)]);
    let m = served.path("pax");
    let mtime = fs::symlink_metadata(m.join("nanos/n1")).expect("stat");
    assert_eq!(
        (mtime.mtime(), mtime.mtime_nsec()),
        (T0 + 7, 123_456_789),
        "PAX mtime fraction"
    );
    // SCHILY.xattr.* records are the members' extended attributes.
    let x = common::xattr::get(&m.join("docs/readme.txt"), "user.lazycas_test");
    assert_eq!(x.expect("getxattr user.lazycas_test"), b"hello");
    let x = common::xattr::get(&m.join("hard/b"), "user.other");
    assert_eq!(
        x.expect("getxattr user.other on a hard link"),
        b"value with spaces"
    );
    let x = common::xattr::get(&m.join("docs"), "user.on_a_dir");
    assert_eq!(
        x.expect("getxattr user.on_a_dir on a directory"),
        b"dir value"
    );
    common::xattr::assert_lists(
        &m.join("docs/readme.txt"),
        &[
            "user.lazycas_test",
            "user.lazycas.digest",
            "user.lazycas.source",
            "user.lazycas.cached",
        ],
    );
}

#[test]
fn ustar_format_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let a = rich_archive(
        work.path(),
        Dialect::Ustar,
        "ustar.tar.gz",
        &["--format=ustar"],
        Compress::Gzip,
    );
    let served = assert_mounts_like_gnu_tar(work.path(), &[("ustar", &a)]);
    // The 231-byte path only fits through the prefix field.
    let long = served.path("ustar").join(format!(
        "pfx/{}/{}/{}/{}",
        "p".repeat(40) + "0",
        "p".repeat(40) + "1",
        "p".repeat(40) + "2",
        "q".repeat(99)
    ));
    assert_eq!(
        read(&long).expect("read prefix-field path"),
        b"prefix field\n"
    );
}

#[test]
fn pigz_outputs_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    // Several MiB so pigz writes many blocks (128 KiB each by default, 32 KiB with -b 32).
    for i in 0..6u64 {
        t.file(
            format!("data/part-{i}.bin"),
            &mixed_bytes(1_500_000 + i as usize * 1000, i),
            Meta::new(0o644, T0),
        );
    }
    t.dir("data", Meta::new(0o755, T0 + 1));
    let rich = work.path().join("rich");
    let rich = fixtures::rich_tree(&rich, Dialect::Gnu);
    fs::rename(rich, t.root().join("rich")).expect("move rich tree in");
    let src = t.finish();
    let args = &["--format=gnu"];
    let plain = archive_of(&src, work.path(), "pigz.tar.gz", args, Compress::Pigz(&[]));
    let indep = archive_of(
        &src,
        work.path(),
        "pigz-i.tgz",
        args,
        Compress::Pigz(&["-i", "-b", "32"]),
    );
    assert_mounts_like_gnu_tar(
        work.path(),
        &[("pigz/default", &plain), ("pigz/independent", &indep)],
    );
}

#[test]
fn concatenated_gzip_members_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    for i in 0..4u64 {
        t.file(
            format!("part-{i}.bin"),
            &mixed_bytes(3_000_000, 40 + i),
            Meta::new(0o644, T0 + 1),
        );
    }
    let rich = fixtures::rich_tree(&work.path().join("rich"), Dialect::Pax);
    fs::rename(rich, t.root().join("rich")).expect("move rich tree in");
    let src = t.finish();
    let tar = work.path().join("stream.tar");
    tar_create(&src, &tar, &["--format=pax", "--xattrs"]);
    let len = fs::metadata(&tar).expect("stat").len();
    // Cuts inside a header, inside file data and at an odd offset: one tar stream in four gzip
    // members, as `cat a.tar.gz b.tar.gz ...` of a split stream gives.
    let cuts = [700, 1_234_567, len / 2 + 3, len - 1000];
    let concatenated = work.path().join("concatenated.tar.gz");
    pack::gzip_members(&tar, &concatenated, &cuts);
    // And pigz -i output concatenated with gzip output of the rest of the stream.
    let head = work.path().join("head.tar");
    let tail = work.path().join("tail.tar");
    let data = fs::read(&tar).expect("read tar");
    let mid = (len / 3) as usize + 17;
    fs::write(&head, &data[..mid]).expect("write head");
    fs::write(&tail, &data[mid..]).expect("write tail");
    let (head_gz, tail_gz) = (work.path().join("head.gz"), work.path().join("tail.gz"));
    pigz(&head, &head_gz, &["-i"]);
    gzip(&tail, &tail_gz);
    let mixed = work.path().join("pigz-then-gzip.tar.gz");
    let mut bytes = fs::read(&head_gz).expect("read");
    bytes.extend(fs::read(&tail_gz).expect("read"));
    fs::write(&mixed, bytes).expect("write");
    assert_mounts_like_gnu_tar(
        work.path(),
        &[("cat/members", &concatenated), ("cat/pigz-gzip", &mixed)],
    );
}

#[test]
fn gnu_incremental_dump_with_volume_label_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::rich_tree(&work.path().join("src"), Dialect::Gnu);
    let snar = work.path().join("snar");
    let snar_arg = format!("--listed-incremental={}", snar.display());
    // Directories become `D` (dumpdir) entries with data; a `V` volume header comes first.
    let args = ["--format=gnu", snar_arg.as_str(), "--label=backup-1"];
    let a = archive_of(
        &src,
        work.path(),
        "incremental.tar.gz",
        &args,
        Compress::Gzip,
    );
    assert_mounts_like_gnu_tar(work.path(), &[("incremental", &a)]);
}

#[test]
fn pax_global_header_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::rich_tree(&work.path().join("src"), Dialect::Pax);
    // `keyword=value` goes into a global (`g`) header that applies to every later entry.
    let args = [
        "--format=pax",
        "--pax-option=comment=made by lazycas tests,uid=4242,gid=4343",
    ];
    let a = archive_of(&src, work.path(), "global.tar.gz", &args, Compress::Gzip);
    let served = assert_mounts_like_gnu_tar(work.path(), &[("global", &a)]);
    let st = fs::symlink_metadata(served.path("global/docs/readme.txt")).expect("stat");
    assert_eq!(
        (st.uid(), st.gid()),
        (4242, 4343),
        "ids from the global header"
    );
}

#[test]
fn v7_format_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    t.dir("dir", Meta::new(0o750, T0 + 1).owner(12, 34));
    t.file(
        "dir/file",
        &mixed_bytes(70_000, 5),
        Meta::new(0o640, T0 + 2).owner(12, 34),
    );
    t.file("dir/empty", b"", Meta::new(0o600, T0 + 3));
    t.dir("dir/sub", Meta::new(0o700, T0 + 4));
    t.hardlink("dir/sub/hard", "dir/file");
    t.symlink("link", "dir/file", Meta::new(0, T0 + 5));
    let src = t.finish();
    // v7: no magic, no owner names; directories are regular-file entries named with a `/`.
    let a = archive_of(
        &src,
        work.path(),
        "v7.tar",
        &["--format=v7"],
        Compress::None,
    );
    assert_mounts_like_gnu_tar(work.path(), &[("v7", &a)]);
}

#[test]
fn uncompressed_tar_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let a = rich_archive(
        work.path(),
        Dialect::Gnu,
        "plain.tar",
        &["--format=gnu"],
        Compress::None,
    );
    assert_mounts_like_gnu_tar(work.path(), &[("plain", &a)]);
}

#[test]
fn gzip_header_fields_and_empty_members_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::rich_tree(&work.path().join("src"), Dialect::Gnu);
    let tar = work.path().join("stream.tar");
    tar_create(&src, &tar, &["--format=gnu"]);
    let data = fs::read(&tar).expect("read tar");
    let cut = data.len() / 2 + 11;
    // Member 1: FEXTRA, FNAME, FCOMMENT and FHCRC all set; member 2: empty; member 3: plain.
    let mut bytes = gzip_member_with_header_fields(&data[..cut]);
    bytes.extend(gzip_bytes(b""));
    bytes.extend(gzip_bytes(&data[cut..]));
    let a = work.path().join("fields.tar.gz");
    fs::write(&a, bytes).expect("write");
    // And `gzip` without -n, which records the file name and mtime.
    let named = work.path().join("named.tar");
    fs::copy(&tar, &named).expect("copy");
    let mut cmd = std::process::Command::new("gzip");
    cmd.arg("-f").arg(&named);
    run(cmd, pack::TOOL_TIMEOUT).assert_success();
    let named = work.path().join("named.tar.gz");
    assert_mounts_like_gnu_tar(work.path(), &[("gz/fields", &a), ("gz/named", &named)]);
}

/// One gzip member of `data` whose header carries every optional field (RFC 1952).
fn gzip_member_with_header_fields(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut h = vec![0x1f, 0x8b, 8, 0x02 | 0x04 | 0x08 | 0x10];
    h.extend_from_slice(&(T0 as u32).to_le_bytes());
    h.extend_from_slice(&[0, 3]);
    let extra = b"LZ\x04\x00abcd";
    h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    h.extend_from_slice(extra);
    h.extend_from_slice(b"original-name.tar\0");
    h.extend_from_slice(b"a comment\0");
    let crc16 = crc32(&h) as u16;
    h.extend_from_slice(&crc16.to_le_bytes());
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("deflate");
    h.extend(enc.finish().expect("deflate"));
    h.extend_from_slice(&crc32(data).to_le_bytes());
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    h
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

#[test]
fn empty_archives_are_empty_directories() {
    require_fuse!();
    let work = workdir();
    let src = SourceTree::new(&work.path().join("src"), Meta::new(0o700, T0).owner(5, 6)).finish();
    let dot_only = archive_of(
        &src,
        work.path(),
        "dot-only.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let empty_gz = work.path().join("empty-gzip.tar.gz");
    fs::write(&empty_gz, gzip_bytes(b"")).expect("write");
    let zeros = work.path().join("zeros.tar");
    fs::write(&zeros, vec![0u8; 10240]).expect("write");
    let zeros_gz = work.path().join("zeros.tgz");
    fs::write(&zeros_gz, gzip_bytes(&[0u8; 1024])).expect("write");
    let served = Served::start(&[
        ("empty/dot-only", &dot_only),
        ("empty/gzip", &empty_gz),
        ("empty/zeros", &zeros),
        ("empty/zeros-gz", &zeros_gz),
    ]);
    // Only the `./` archive records the root's attributes; the others have nothing to compare
    // but emptiness (GNU tar extracts nothing from them, successfully).
    let dest = work.path().join("extracted");
    extract_ok(&dot_only, &dest, &[]);
    assert_same_tree(&served.path("empty/dot-only"), &dest);
    for name in [
        "empty/dot-only",
        "empty/gzip",
        "empty/zeros",
        "empty/zeros-gz",
    ] {
        let file = &served.archive(name).file;
        let dest = work.path().join(format!("x-{}", name.replace('/', "_")));
        extract_ok(file, &dest, &[]);
        assert!(list_dir_within(&dest, WALK_TIMEOUT)
            .expect("list extraction")
            .is_empty());
        assert!(
            list_dir_within(served.path(name), WALK_TIMEOUT)
                .expect("list")
                .is_empty(),
            "{name} is not empty"
        );
    }
    assert_log_clean(&served.daemon);
}

#[test]
fn second_of_two_concatenated_tar_archives_is_not_shown() {
    require_fuse!();
    let work = workdir();
    let first = fixtures::links_tree(&work.path().join("first"));
    let second = fixtures::names_tree(&work.path().join("second"));
    let (a, b) = (work.path().join("a.tar"), work.path().join("b.tar"));
    tar_create(&first, &a, &["--format=gnu"]);
    tar_create(&second, &b, &["--format=gnu"]);
    // GNU tar stops at the first archive's end blocks (without --ignore-zeros), so does lazycas.
    let mut bytes = fs::read(&a).expect("read");
    bytes.extend(fs::read(&b).expect("read"));
    let cat = work.path().join("cat.tar");
    fs::write(&cat, &bytes).expect("write");
    let cat_gz = work.path().join("cat-gz.tar.gz");
    fs::write(
        &cat_gz,
        [
            gzip_bytes(&fs::read(&a).expect("read")),
            gzip_bytes(&fs::read(&b).expect("read")),
        ]
        .concat(),
    )
    .expect("write");
    assert_mounts_like_gnu_tar(work.path(), &[("two/tar", &cat), ("two/gz", &cat_gz)]);
}

#[test]
fn sparse_files_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::sparse_tree(&work.path().join("src"));
    let sparse =
        |file: &str, args: &[&str]| archive_of(&src, work.path(), file, args, Compress::Gzip);
    let gnu = sparse("gnu-sparse.tar.gz", &["--format=gnu", "--sparse"]);
    let pax00 = sparse(
        "pax-0.0.tar.gz",
        &["--format=pax", "--sparse", "--sparse-version=0.0"],
    );
    let pax01 = sparse(
        "pax-0.1.tar.gz",
        &["--format=pax", "--sparse", "--sparse-version=0.1"],
    );
    let pax10 = sparse(
        "pax-1.0.tar.gz",
        &["--format=pax", "--sparse", "--sparse-version=1.0"],
    );
    // The archives really are sparse: far smaller than the 128 MiB of apparent file sizes.
    for a in [&gnu, &pax00, &pax01, &pax10] {
        let len = fs::metadata(a).expect("stat").len();
        assert!(
            len < 2 << 20,
            "{} is {len} bytes: tar did not store holes",
            a.display()
        );
    }
    let served = assert_mounts_like_gnu_tar(
        work.path(),
        &[
            ("sparse/gnu", &gnu),
            ("sparse/pax-0.0", &pax00),
            ("sparse/pax-0.1", &pax01),
            ("sparse/pax-1.0", &pax10),
        ],
    );
    // Reads that start inside a hole and end inside data, through each map.
    let want = fs::read(src.join("sparse/holes-64m")).expect("read source");
    for name in [
        "sparse/gnu",
        "sparse/pax-0.0",
        "sparse/pax-0.1",
        "sparse/pax-1.0",
    ] {
        let f = fs::File::open(served.path(name).join("sparse/holes-64m")).expect("open");
        for (off, len) in [
            ((1 << 20) + 100, 100usize),
            ((10 << 20) - 7, 20_000),
            ((64 << 20) - 3, 3),
        ] {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off).expect("pread");
            assert_same_bytes(
                &buf,
                &want[off as usize..off as usize + len],
                &format!("{name} at {off}"),
            );
        }
    }
}

#[test]
fn sparse_file_larger_than_8_gib_matches_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let size: u64 = 9 << 30;
    let chunks = vec![
        (0, random_bytes(5000, 1)),
        (5 << 30, random_bytes(70_000, 2)),
        (size - 10, random_bytes(10, 3)),
    ];
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    t.sparse("huge.special", size, &chunks, Meta::new(0o644, T0 + 1));
    t.file(
        "after.txt",
        b"after the 9 GiB member\n",
        Meta::new(0o644, T0 + 2),
    );
    let src = t.finish();
    // Sizes past 8^11 bytes: base-256 (GNU) or a `size` record (PAX). The big file is named
    // `*.special` so `diff -r` does not read 9 GiB of zeros; its bytes are sampled below.
    let gnu = archive_of(
        &src,
        work.path(),
        "big-sparse-gnu.tar.gz",
        &["--format=gnu", "--sparse"],
        Compress::Gzip,
    );
    let pax = archive_of(
        &src,
        work.path(),
        "big-sparse-pax.tar.gz",
        &["--format=pax", "--sparse"],
        Compress::Gzip,
    );
    let served = assert_mounts_like_gnu_tar(work.path(), &[("huge/gnu", &gnu), ("huge/pax", &pax)]);
    for name in ["huge/gnu", "huge/pax"] {
        let f = fs::File::open(served.path(name).join("huge.special")).expect("open");
        assert_eq!(f.metadata().expect("stat").len(), size);
        for (off, data) in &chunks {
            let mut buf = vec![0u8; data.len() + 100];
            let start = off.saturating_sub(50);
            let n = f.read_at(&mut buf, start).expect("pread");
            let mut want = vec![0u8; buf.len()];
            want[(off - start) as usize..(off - start) as usize + data.len()].copy_from_slice(data);
            let n_want = (size - start).min(buf.len() as u64) as usize;
            assert_eq!(n, n_want, "{name}: bytes read at {start}");
            assert_same_bytes(&buf[..n], &want[..n], &format!("{name} at {start}"));
        }
    }
}

#[test]
fn hard_links_and_symlinks_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::links_tree(&work.path().join("src"));
    let gnu = archive_of(
        &src,
        work.path(),
        "links-gnu.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let pax = archive_of(
        &src,
        work.path(),
        "links-pax.tar.gz",
        &["--format=pax"],
        Compress::Gzip,
    );
    let served =
        assert_mounts_like_gnu_tar(work.path(), &[("links/gnu", &gnu), ("links/pax", &pax)]);
    for name in ["links/gnu", "links/pax"] {
        let m = served.path(name);
        let st =
            |p: &str| fs::symlink_metadata(m.join(p)).unwrap_or_else(|e| panic!("stat {p}: {e}"));
        let data = st("files/data.bin");
        assert_eq!(data.nlink(), 4, "{name}: links of files/data.bin");
        for l in [
            "files/data-link1",
            "other/data-link2",
            "other/deeper/data-link3",
        ] {
            assert_eq!(
                st(l).ino(),
                data.ino(),
                "{name}: {l} is the same inode as files/data.bin"
            );
        }
        assert_eq!(st("files/suid-link").mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::read_link(m.join("sym/dangling-abs")).expect("readlink"),
            Path::new("/nonexistent/lazycas/target")
        );
        // Reading through a relative link inside the archive reaches the member.
        let via = read(m.join("sym/rel-file")).expect("read through sym/rel-file");
        assert_same_bytes(
            &via,
            &fs::read(src.join("files/data.bin")).expect("source"),
            "sym/rel-file",
        );
        assert_errno(
            read(m.join("sym/loop-a")),
            libc::ELOOP,
            "reading through a symlink loop",
        );
    }
}

#[test]
fn unicode_and_255_byte_names_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::names_tree(&work.path().join("src"));
    let pax = archive_of(
        &src,
        work.path(),
        "names-pax.tar.gz",
        &["--format=pax"],
        Compress::Gzip,
    );
    let gnu = archive_of(
        &src,
        work.path(),
        "names-gnu.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let served =
        assert_mounts_like_gnu_tar(work.path(), &[("names/pax", &pax), ("names/gnu", &gnu)]);
    let kanji = "語".repeat(85);
    assert_eq!(
        read(served.path("names/pax").join(&kanji)).expect("read"),
        kanji.as_bytes()
    );
}

#[test]
fn twenty_thousand_small_files_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let src = fixtures::many_files_tree(&work.path().join("src"), 20_000);
    let a = archive_of(
        &src,
        work.path(),
        "many.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let served = assert_mounts_like_gnu_tar(work.path(), &[("many", &a)]);
    let flat = list_dir_within(served.path("many/flat"), WALK_TIMEOUT).expect("list flat");
    assert_eq!(flat.len(), 10_000, "entries of the 10,000-file directory");
    // A member table of 20,000 entries, not an extraction: well under 256 bytes per member
    // (small members are not kept decoded one by one; the regions they were read from are,
    // and each is checked against its stretch of the tar stream).
    assert_store_holds_only_blob_and_index(&served, "many", 20_000 * 256);
    assert_peak_rss_small(&served.daemon, "reading 20,000 files");
}

/// Peak memory the daemon may reach while archives are read with the default config: its span
/// cache is a few MiB, and decoded data lives on disk and in the page cache, not in the daemon.
const READ_PEAK_RSS: u64 = 128 << 20;

/// The daemon's peak RSS so far is under [`READ_PEAK_RSS`].
#[track_caller]
fn assert_peak_rss_small(daemon: &Daemon, what: &str) {
    let peak = daemon.peak_rss();
    eprintln!("daemon peak RSS after {what}: {} MiB", peak >> 20);
    assert!(
        peak < READ_PEAK_RSS,
        "daemon peak RSS {} MiB after {what}",
        peak >> 20
    );
}

/// Waits until the daemon's log reports `n` members kept decoded (hashed, fsynced and committed
/// on a thread of their own after the last byte was served).
#[track_caller]
fn wait_kept(daemon: &Daemon, n: usize) {
    let kept = || {
        daemon
            .log()
            .lines()
            .filter(|l| l.contains("kept #") && l.contains(" decoded as "))
            .count()
    };
    assert!(
        wait_until(WALK_TIMEOUT, || kept() >= n),
        "{n} members kept decoded expected; log:\n{}",
        tail(&daemon.log(), 40)
    );
}

#[test]
fn member_of_200_mib_matches_gnu_tar_and_is_kept_decoded_only_once_read() {
    require_fuse!();
    let work = workdir();
    let big = pack::big_fixture();
    // Small download chunks and the default span cache (a few MiB), so the memory bound below
    // is tight: a daemon that held a member, the archive or its decoded stream in memory would
    // exceed it.
    let config = Config {
        fetch_chunk_size: Some("1M".into()),
        fetch_parallel: Some(4),
        ..Config::default()
    };
    let archives = [("data/big", big)];
    let served = Served::start_with(&archives, config);
    let m = served.path("data/big");
    assert_eq!(
        fs::metadata(m.join("big/member.bin")).expect("stat").len(),
        pack::BIG_MEMBER
    );
    // Browsing extracts nothing. The index is checkpoints (a 32 KiB window, stored
    // compressed, about every 4 MiB of output: at most ~2 MiB here) and a few member rows.
    assert_store_holds_only_blob_and_index(&served, "data/big", 4 << 20);
    let served = assert_served_like_gnu_tar(work.path(), served, &archives);
    // Memory does not follow the member or archive size: download buffers are bounded by
    // (2 x fetch_parallel + 1) x fetch_chunk_size (9 MiB here), decoded spans by the default
    // `archive_cache`; the rest is SQLite, inflate state, buffers and threads.
    assert_peak_rss_small(&served.daemon, "reading the 200 MiB member");
    // The member read whole is then kept decoded in the store, as a blob of its own sha256
    // (the small files are not, their regions are); the decoded cache is evicted like any blob.
    wait_kept(&served.daemon, 1);
    let member = sha256_file(&work.path().join("extracted-data_big/big/member.bin"));
    assert_store_holds_blob_index_and_kept(&served, "data/big", 4 << 20, &[member]);
    served.node.cli(&["gc", "--to", "0"]).assert_success();
    assert_store_holds_only_blob_and_index(&served, "data/big", 4 << 20);
}

// ---------------------------------------------------------------------------------------------
// Extraction rules (archive module doc), with hand-written tar streams

#[test]
fn later_entry_of_the_same_path_wins() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .dir("x/", 0o755, T0)
        .file("x/file", b"A", 0o644, T0 + 1)
        .hardlink("x/hl", "x/file", T0 + 1)
        .file("x/file", b"BB", 0o600, T0 + 2)
        .file("x/f2d", b"file first", 0o644, T0 + 3)
        .dir("x/f2d/", 0o700, T0 + 3)
        .dir("x/d2f/", 0o755, T0 + 4)
        .file("x/d2f", b"now a file", 0o644, T0 + 4)
        .dir("x/dir2/", 0o700, T0 + 5)
        .dir("x/dir2/", 0o750, T0 + 6)
        .symlink("x/sym", "a", T0 + 7)
        .file("x/sym", b"C", 0o644, T0 + 7)
        .file("x/file2sym", b"D", 0o644, T0 + 8)
        .symlink("x/file2sym", "file", T0 + 8)
        // The root's own entry again, spelled `.`: its attributes win too.
        .dir(".", 0o711, T0 + 50);
    let a = write_tgz(work.path(), "later.tar.gz", &t);
    let served = assert_mounts_like_gnu_tar(work.path(), &[("later", &a)]);
    let m = served.path("later/x");
    let st = |p: &str| fs::symlink_metadata(m.join(p)).unwrap_or_else(|e| panic!("stat {p}: {e}"));
    assert_eq!(read(m.join("file")).expect("read"), b"BB");
    assert_eq!((st("file").mode() & 0o7777, st("file").nlink()), (0o600, 1));
    // The hard link made before the replacement keeps the old content, as unlink + create does.
    assert_eq!(read(m.join("hl")).expect("read"), b"A");
    assert!(st("f2d").is_dir() && st("d2f").is_file());
    assert_eq!(
        (st("dir2").mode() & 0o7777, st("dir2").mtime()),
        (0o750, T0 + 6)
    );
    assert!(st("sym").is_file() && st("file2sym").file_type().is_symlink());
    let root = fs::symlink_metadata(served.path("later")).expect("stat root");
    assert_eq!(
        (root.mode() & 0o7777, root.mtime()),
        (0o711, T0 + 50),
        "root from the last `.` entry"
    );
}

#[test]
fn unusual_type_flags_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0);
    // Pre-POSIX regular files (NUL type flag), contiguous files (`7`), and a type flag nobody
    // defines, which GNU tar extracts as a regular file.
    for (name, kind) in [
        ("old-regular", 0u8),
        ("contiguous", b'7'),
        ("unknown-z", b'Z'),
    ] {
        let data = format!("{name} data\n");
        let h = Header {
            size: data.len() as u64,
            mtime: T0 + 1,
            ..Header::new(name.as_bytes(), kind)
        };
        t.header(&h).data(data.as_bytes());
    }
    // A pre-POSIX directory: a regular-file entry whose name ends in `/`.
    t.header(&Header {
        mode: 0o750,
        mtime: T0 + 2,
        ..Header::new(b"old-dir/", 0)
    });
    t.file("old-dir/inside", b"inside\n", 0o644, T0 + 3);
    t.file("after.txt", b"after\n", 0o644, T0 + 4);
    let a = write_tgz(work.path(), "types.tar.gz", &t);
    let served = Served::start(&[("types", &a)]);
    let dest = work.path().join("extracted");
    let out = extract(&a, &dest, &[]);
    eprintln!("GNU tar on unusual type flags: {out}");
    assert_same_tree(&served.path("types"), &dest);
    assert_log_clean(&served.daemon);
}

#[test]
fn raw_pax_records_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0);
    t.pax_global(&[
        ("comment", "global"),
        ("mtime", "1600000000.25"),
        ("uid", "777"),
    ]);
    t.file("global-defaults", b"global\n", 0o644, T0);
    // Short and over-long fractions, big ids, a path and a link target longer than the header
    // fields, a size record overriding the header's, xattrs with odd values.
    t.pax(&[("mtime", "1700000000.5")])
        .file("half-second", b"a\n", 0o644, T0);
    t.pax(&[("mtime", "1700000000.1234567891234")])
        .file("long-fraction", b"b\n", 0o644, T0);
    t.pax(&[("uid", "123456789"), ("gid", "987654321")])
        .file("big-ids", b"c\n", 0o644, T0);
    let long_path = format!("{}/{}", "p".repeat(120), "名".repeat(50));
    t.dir(&"p".repeat(99), 0o755, T0);
    t.pax(&[("path", &format!("{}/", "p".repeat(120)))])
        .dir("ignored-dir-name/", 0o755, T0);
    t.pax(&[("path", &long_path)])
        .file("ignored-name", b"d\n", 0o644, T0);
    t.pax(&[("linkpath", &"l".repeat(300))])
        .symlink("long-target", "ignored", T0);
    t.pax(&[("size", "5")]);
    t.header(&Header {
        mode: 0o644,
        mtime: T0,
        size: 0,
        ..Header::new(b"size-record", raw::REGULAR)
    })
    .data(b"12345");
    t.pax(&[
        ("SCHILY.xattr.user.empty", ""),
        ("SCHILY.xattr.user.eq", "a=b=c"),
        ("SCHILY.xattr.user.utf8", "é"),
    ])
    .file("xattrs", b"e\n", 0o644, T0);
    t.file("after.txt", b"after\n", 0o644, T0 + 1);
    let a = write_tgz(work.path(), "pax-records.tar.gz", &t);
    let served = Served::start(&[("records", &a)]);
    let dest = work.path().join("extracted");
    extract_ok(&a, &dest, &["--xattrs", "--xattrs-include=*"]);
    assert_same_tree(&served.path("records"), &dest);
    let m = served.path("records");
    for (name, value) in [
        ("user.empty", &b""[..]),
        ("user.eq", b"a=b=c"),
        ("user.utf8", "é".as_bytes()),
    ] {
        let got = common::xattr::get(&m.join("xattrs"), name);
        assert_eq!(
            got.unwrap_or_else(|e| panic!("getxattr {name}: {e}")),
            value,
            "{name}"
        );
    }
    assert_log_clean(&served.daemon);
}

#[test]
fn missing_parent_directories_appear() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.file("a/b/c.txt", b"c", 0o640, T0 + 9)
        .file("a/d.txt", b"d", 0o644, T0 + 10);
    let a = write_tgz(work.path(), "implied.tar.gz", &t);
    let served = Served::start(&[("implied", &a)]);
    let dest = work.path().join("extracted");
    extract_ok(&a, &dest, &[]);
    // GNU tar gives implied directories the extraction time; lazycas the entry's mtime (a
    // documented difference), so only names and bytes are compared with GNU tar here.
    open_archive_root(&served.path("implied"));
    let mut diff = std::process::Command::new("diff");
    diff.args(["-r", "--no-dereference"])
        .arg(served.path("implied"))
        .arg(&dest);
    run(diff, WALK_TIMEOUT).assert_success();
    for (dir, mtime) in [("a", T0 + 9), ("a/b", T0 + 9)] {
        let st = fs::symlink_metadata(served.path("implied").join(dir)).expect("stat");
        assert!(st.is_dir(), "{dir} is a directory");
        assert_eq!(
            (st.mode() & 0o7777, st.uid(), st.gid(), st.mtime()),
            (0o755, 0, 0, mtime),
            "{dir}"
        );
    }
}

#[test]
fn pre_epoch_mtimes_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    t.file("y1960", b"1960\n", Meta::new(0o644, -315_619_200));
    t.file("y1969", b"1969\n", Meta::new(0o644, -1));
    t.file(
        "fraction",
        b"frac\n",
        Meta::new(0o644, -100).nanos(250_000_000),
    );
    let src = t.finish();
    let gnu = archive_of(
        &src,
        work.path(),
        "neg-gnu.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let pax = archive_of(
        &src,
        work.path(),
        "neg-pax.tar.gz",
        &["--format=pax"],
        Compress::Gzip,
    );
    assert_mounts_like_gnu_tar(work.path(), &[("neg/gnu", &gnu), ("neg/pax", &pax)]);
}

// ---------------------------------------------------------------------------------------------
// Reading, indexing once, decoded copies only of what was read whole

#[test]
fn member_reads_twice_and_concurrently_give_the_same_bytes() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    let big = mixed_bytes(24 << 20, 77);
    let mid = random_bytes(3 << 20, 78);
    t.file("data/big.bin", &big, Meta::new(0o644, T0));
    t.file("data/mid.bin", &mid, Meta::new(0o644, T0));
    for i in 0..200u64 {
        t.file(
            format!("small/{i}.txt"),
            &archive_support::source::text_bytes(700, i),
            Meta::new(0o644, T0),
        );
    }
    let src = t.finish();
    let a = archive_of(
        &src,
        work.path(),
        "reads.tar.gz",
        &["--format=gnu"],
        Compress::Pigz(&["-b", "64"]),
    );
    let served = Served::start(&[("reads", &a)]);
    let m = served.path("reads");
    let (big_path, mid_path) = (m.join("data/big.bin"), m.join("data/mid.bin"));
    for round in 0..2 {
        assert_same_bytes(
            &read(&big_path).expect("read big"),
            &big,
            &format!("big.bin, read {round}"),
        );
    }
    let want = Arc::new((big, mid));
    let mut threads = Vec::new();
    for th in 0..8u64 {
        let (want, big_path, mid_path) = (want.clone(), big_path.clone(), mid_path.clone());
        threads.push(std::thread::spawn(move || {
            if th % 4 == 0 {
                let got = fs::read(&big_path).expect("concurrent whole read");
                return got == want.0;
            }
            let pick = random_bytes(16 * 60, 1000 + th);
            let files = [
                (fs::File::open(&big_path).expect("open"), &want.0),
                (fs::File::open(&mid_path).expect("open"), &want.1),
            ];
            for i in 0..60 {
                let r = u64::from_le_bytes(pick[i * 16..i * 16 + 8].try_into().unwrap());
                let l = u64::from_le_bytes(pick[i * 16 + 8..i * 16 + 16].try_into().unwrap());
                let (file, data) = &files[i % 2];
                let off = (r % data.len() as u64) as usize;
                let len = ((l % 300_000) as usize + 1).min(data.len() - off);
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, off as u64)
                    .expect("concurrent pread");
                if buf != data[off..off + len] {
                    return false;
                }
            }
            true
        }));
    }
    let results: Vec<bool> = with_deadline(WALK_TIMEOUT, "concurrent readers", move || {
        threads
            .into_iter()
            .map(|t| t.join().expect("reader thread"))
            .collect()
    });
    assert!(
        results.iter().all(|ok| *ok),
        "a concurrent reader got wrong bytes: {results:?}"
    );
    for i in [0u64, 99, 199] {
        let want = fs::read(src.join(format!("small/{i}.txt"))).expect("source");
        assert_eq!(
            read(m.join(format!("small/{i}.txt"))).expect("read small"),
            want
        );
    }
    assert_log_clean(&served.daemon);
}

#[test]
fn members_can_be_executed_and_memory_mapped() {
    require_fuse!();
    let work = workdir();
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    let elf = fs::read("/bin/true").expect("read /bin/true");
    t.file("bin/true", &elf, Meta::new(0o755, T0));
    t.file(
        "bin/hello.sh",
        b"#!/bin/sh\necho hello from the archive\n",
        Meta::new(0o755, T0),
    );
    let data = mixed_bytes(6 << 20, 99);
    t.file("data/mapped.bin", &data, Meta::new(0o644, T0));
    let src = t.finish();
    let a = archive_of(
        &src,
        work.path(),
        "exec.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let served = Served::start(&[("exec", &a)]);
    let m = served.path("exec");
    let out = run(std::process::Command::new(m.join("bin/true")), WALK_TIMEOUT);
    assert!(out.success(), "executing an ELF member: {out}");
    let out = run(
        std::process::Command::new(m.join("bin/hello.sh")),
        WALK_TIMEOUT,
    );
    assert_eq!(
        out.stdout, "hello from the archive\n",
        "executing a script member: {out}"
    );
    // mmap (MAP_SHARED, read-only), as loaders and databases do.
    let path = m.join("data/mapped.bin");
    let mapped = with_deadline(WALK_TIMEOUT, "mmap of a member", move || {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(&path).expect("open");
        let len = f.metadata().expect("stat").len() as usize;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, copied out
        // and unmapped before the file is closed.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
            let copy = std::slice::from_raw_parts(p as *const u8, len).to_vec();
            libc::munmap(p, len);
            copy
        }
    });
    assert_same_bytes(&mapped, &data, "mmap of data/mapped.bin");
    assert_log_clean(&served.daemon);
}

#[test]
fn index_is_built_once_per_content_and_serves_from_cache_after_restart_offline() {
    require_fuse!();
    let work = workdir();
    let a = rich_archive(
        work.path(),
        Dialect::Gnu,
        "shared.tar.gz",
        &["--format=gnu"],
        Compress::Gzip,
    );
    let mut origin = Nginx::start();
    let first = archive_support::serve::publish(&origin, "first/tree", "one/shared.tar.gz", &a);
    let mut second_asset = first.asset();
    second_asset.name = "second/tree".into();
    // The same content at another URL, under a third name.
    let third = archive_support::serve::publish(&origin, "third/tree", "two/copy.tar.gz", &a);
    let node = Lazycas::with_config(Config {
        assets: vec![first.asset(), second_asset, third.asset()],
        ..Config::default()
    });
    let dest = work.path().join("extracted");
    extract_ok(&a, &dest, &[]);
    {
        let mut daemon = node.mount();
        // All names at once: one download, one index.
        let paths = [
            daemon.path("first/tree"),
            daemon.path("second/tree"),
            daemon.path("third/tree"),
        ];
        let listers: Vec<_> = paths
            .iter()
            .cloned()
            .map(|p| std::thread::spawn(move || list_dir_within(&p, WALK_TIMEOUT)))
            .collect();
        for l in listers {
            l.join().expect("lister").expect("list archive root");
        }
        for p in &paths {
            assert_same_tree(p, &dest);
        }
        assert_eq!(
            index_builds(&daemon),
            1,
            "index builds logged:\n{}",
            tail(&daemon.log(), 60)
        );
        assert_eq!(
            indexed_archives(&node),
            1,
            "archive indexes in the database"
        );
        let log = origin.log();
        let served = log.bytes_served(&first.rel) + log.bytes_served(&third.rel);
        assert_eq!(
            served, first.size,
            "bytes served for one archive under two URLs:\n{log}"
        );
        assert_blobs_are_archive_and_kept_members(&node, &first.sha256, &dest);
        assert_log_clean(&daemon);
        daemon.stop();
    }
    origin.stop();
    let daemon = node.mount();
    for name in ["second/tree", "first/tree", "third/tree"] {
        assert_same_tree(&daemon.path(name), &dest);
    }
    assert_eq!(
        index_builds(&daemon),
        0,
        "the restarted daemon rebuilt the index:\n{}",
        tail(&daemon.log(), 60)
    );
    assert_eq!(indexed_archives(&node), 1);
    assert_log_clean(&daemon);
}

/// The store holds the archive blob once; every other blob is the decoded copy of a member read
/// whole (named by the sha256 of a file GNU tar extracted to `extracted`) or of a region small
/// members were read from.
#[track_caller]
fn assert_blobs_are_archive_and_kept_members(node: &Lazycas, archive: &str, extracted: &Path) {
    let members: std::collections::HashSet<String> = files_under(extracted)
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .map(|p| sha256_file(p))
        .collect();
    wait_no_temp_files(node);
    let regions: Vec<String> = region_copies(node, archive)
        .into_iter()
        .map(|(_, hex)| hex)
        .collect();
    let blobs = node.stored_blobs();
    let names: Vec<String> = blobs
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == archive).count(),
        1,
        "the archive is stored once: {blobs:?}"
    );
    for n in names.iter().filter(|n| *n != archive) {
        assert!(
            members.contains(n) || regions.contains(n),
            "blob {n} is neither the archive nor a member's or region's decoded copy"
        );
    }
}
