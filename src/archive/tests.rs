//! End-to-end tests of the archive layer: archives made by GNU tar, pigz and the `tar` crate are
//! indexed push-style, stored in SQLite, reopened, and compared entry by entry and byte by byte
//! with what `tar -xf` extracts; plus random-access reads, readdir paging and hostile inputs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rusqlite::Connection;
use tempfile::TempDir;

use super::regions::{RegionStore, RegionWriter};
use super::*;
use crate::digest::Digest;
use crate::store::BytesBlob;

/// An indexed archive, its database and a reader.
struct Indexed {
    _db_dir: TempDir,
    db: PathBuf,
    digest: Digest,
    index: Arc<ArchiveIndex>,
    reader: ArchiveReader,
    cache: Arc<SpanCache>,
}

fn build(bytes: &[u8], spacing: u64, chunk: usize) -> Result<BuiltIndex, ArchiveError> {
    let mut b = IndexBuilder::with_checkpoint_spacing(spacing);
    for c in bytes.chunks(chunk.max(1)) {
        b.feed(c)?;
    }
    b.finish()
}

fn index_file(path: &Path, spacing: u64, cache: u64) -> Indexed {
    let bytes = fs::read(path).unwrap();
    let built = build(&bytes, spacing, 100_003).unwrap();
    store(path, &bytes, built, cache)
}

fn store(path: &Path, bytes: &[u8], built: BuiltIndex, cache: u64) -> Indexed {
    let digest = Digest::of(bytes);
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("lazycas.db");
    let conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    ArchiveIndex::init_schema(&conn).unwrap();
    ArchiveIndex::save(&conn, &digest, built).unwrap();
    let index = Arc::new(ArchiveIndex::open(&db, &digest).unwrap());
    let cache = Arc::new(SpanCache::new(cache));
    let reader = ArchiveReader::new(
        index.clone(),
        Arc::new(BytesBlob::new(fs::read(path).unwrap())),
        cache.clone(),
    );
    Indexed {
        _db_dir: db_dir,
        db,
        digest,
        index,
        reader,
        cache,
    }
}

fn run(dir: &Path, cmd: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd} failed");
}

/// Deterministic bytes; `compressible` mixes in runs so deflate emits many block types.
fn pseudo_random(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if compressible && x.is_multiple_of(5) {
            let run = (x >> 8) as usize % 200;
            out.extend(std::iter::repeat_n(b"abcdefgh"[(x >> 3) as usize % 8], run));
        } else {
            out.push((x >> 24) as u8);
        }
    }
    out.truncate(len);
    out
}

fn set_mtime(path: &Path, spec: &str) {
    let st = Command::new("touch")
        .args(["-h", "-d", spec])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A source tree with every kind of thing tar can hold.
fn make_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::create_dir_all(p("dir/sub/deeper")).unwrap();
    fs::create_dir_all(p("empty-dir")).unwrap();
    fs::write(p("empty"), b"").unwrap();
    fs::write(p("small.txt"), b"hello tar\n").unwrap();
    fs::write(p("dir/random.bin"), pseudo_random(1 << 20, 7, false)).unwrap();
    fs::write(p("dir/sub/text.bin"), pseudo_random(3 << 20, 9, true)).unwrap();
    fs::write(p("dir/sub/deeper/exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        p("dir/sub/deeper/exec.sh"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(p("empty-dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("sub/text.bin", p("dir/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p("abs-link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", p("dir/dangling")).unwrap();
    fs::hard_link(p("small.txt"), p("dir/hard1")).unwrap();
    fs::hard_link(p("small.txt"), p("dir/sub/hard2")).unwrap();
    fs::write(p("ünïcødé-名前-😀.txt"), "unicode\n").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"latin1-caf\xe9")), b"bytes\n").unwrap();
    fs::write(p(&"n".repeat(255)), b"255\n").unwrap();
    let long_dir = format!("{}/{}", "a".repeat(120), "b".repeat(120));
    fs::create_dir_all(p(&long_dir)).unwrap();
    fs::write(p(&format!("{long_dir}/{}", "c".repeat(100))), b"deep\n").unwrap();
    super::tar::tests::write_sparse(
        &p("sparse.img"),
        (8 << 20) + 100,
        &[(4096, b"middle"), (6 << 20, &[1u8; 10000])],
    );
    let fifo = std::ffi::CString::new(p("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let dev = std::ffi::CString::new(p("null-dev").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; fails harmlessly when not root.
    unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    run(
        root,
        "chown -h 1234:5678 small.txt abs-link 2>/dev/null || true",
    );
    for (i, entry) in walk_paths(root).iter().enumerate() {
        set_mtime(
            entry,
            &format!("@{}.{:09}", 1_600_000_000 + i as i64 * 1000, i * 1_234_567),
        );
    }
}

fn walk_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    // Children before parents, so setting a file's mtime does not disturb its directory's.
    out.reverse();
    out
}

/// Every entry of a directory, fetched in pages of `page`.
fn list_all(index: &ArchiveIndex, dir: MemberId, page: usize) -> Vec<DirEntry> {
    let mut out: Vec<DirEntry> = Vec::new();
    loop {
        let offset = out.last().map_or(0, |e| e.offset);
        let batch = index.readdir(dir, offset, page).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn read_all(reader: &ArchiveReader, id: MemberId, size: u64, chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let got = reader.read(id, out.len() as u64, chunk).unwrap();
        assert!(!got.is_empty(), "short read at {}", out.len());
        out.extend(got);
    }
    assert!(reader.read(id, size, chunk).unwrap().is_empty());
    out
}

/// Compares the index under `dir` with the extracted tree at `path`.
fn compare(ix: &Indexed, dir: MemberId, path: &Path, inodes: &mut HashMap<MemberId, u64>) {
    let entries = list_all(&ix.index, dir, 7);
    let mut on_disk: Vec<Vec<u8>> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    on_disk.sort();
    let names: Vec<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, on_disk, "names in {}", path.display());
    for e in entries {
        let p = path.join(OsStr::from_bytes(&e.name));
        let md = fs::symlink_metadata(&p).unwrap();
        let m = &e.member;
        let what = p.display().to_string();
        assert_eq!(
            ix.index.lookup(dir, &e.name).unwrap().as_ref(),
            Some(m),
            "{what}"
        );
        assert_eq!(ix.index.member(m.id).unwrap(), *m, "{what}");
        // GNU tar restores modes and owners as the archive says only when run as root.
        if is_root() {
            assert_eq!(m.mode, md.mode() & 0o7777, "mode of {what}");
            assert_eq!((m.uid, m.gid), (md.uid(), md.gid()), "owner of {what}");
        }
        assert_eq!(
            (m.mtime, m.mtime_nanos as i64),
            (md.mtime(), md.mtime_nsec()),
            "mtime of {what}"
        );
        assert_eq!(m.nlink as u64, md.nlink(), "nlink of {what}");
        let ft = md.file_type();
        match m.kind {
            MemberKind::Dir => {
                assert!(ft.is_dir(), "{what}");
                compare(ix, m.id, &p, inodes);
            }
            MemberKind::File => {
                assert!(ft.is_file(), "{what}");
                assert_eq!(m.size, md.len(), "size of {what}");
                let data = read_all(&ix.reader, m.id, m.size, 128 * 1024);
                assert!(data == fs::read(&p).unwrap(), "content of {what}");
            }
            MemberKind::Symlink => {
                assert!(ft.is_symlink(), "{what}");
                let target = fs::read_link(&p).unwrap();
                assert_eq!(
                    ix.index.readlink(m.id).unwrap(),
                    target.as_os_str().as_bytes()
                );
                assert_eq!(m.size, md.len(), "{what}");
            }
            MemberKind::Fifo => assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft)),
            MemberKind::CharDevice => {
                assert!(std::os::unix::fs::FileTypeExt::is_char_device(&ft));
                assert_eq!(m.rdev, md.rdev());
            }
            MemberKind::BlockDevice => {
                assert!(std::os::unix::fs::FileTypeExt::is_block_device(&ft));
                assert_eq!(m.rdev, md.rdev());
            }
        }
        if m.kind != MemberKind::Dir {
            let ino = *inodes.entry(m.id).or_insert(md.ino());
            assert_eq!(ino, md.ino(), "hard link identity of {what}");
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Extracts `archive` with GNU tar; returns the directory and whether tar reported success.
fn gnu_extract(archive: &Path) -> (TempDir, bool) {
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(out.path())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    (out, st.success())
}

/// Extracts `archive` with GNU tar and compares it with its index.
fn check_against_gnu_tar(archive: &Path, spacing: u64) -> Indexed {
    let ix = index_file(archive, spacing, 8 << 20);
    let (out, clean) = gnu_extract(archive);
    assert!(clean, "GNU tar could not extract {}", archive.display());
    compare(&ix, ix.index.root(), out.path(), &mut HashMap::new());
    ix
}

#[test]
fn gnu_pax_ustar_formats_match_gnu_tar_extraction() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    for (name, flags) in [
        ("gnu.tar.gz", "--format=gnu -S -z"),
        ("pax.tar.gz", "--format=pax -S -z"),
        ("pax.tar", "--format=pax"),
        ("gnu.tar", "--format=gnu -S"),
    ] {
        run(work.path(), &format!("tar {flags} -cf {name} -C src ."));
        let ix = check_against_gnu_tar(&work.path().join(name), 256 * 1024);
        assert_eq!(ix.index.root(), MemberId::ROOT);
    }
}

#[test]
fn ustar_and_pigz_archives_match() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big.bin"), pseudo_random(4 << 20, 3, true)).unwrap();
    fs::write(src.join("d/small"), b"x").unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("d/link")).unwrap();
    run(work.path(), "tar --format=ustar -cf ustar.tar -C src .");
    check_against_gnu_tar(&work.path().join("ustar.tar"), 1 << 20);
    run(work.path(), "pigz -c ustar.tar > pigz.tar.gz");
    check_against_gnu_tar(&work.path().join("pigz.tar.gz"), 256 * 1024);
    run(work.path(), "pigz -i -b 128 -c ustar.tar > pigz-i.tar.gz");
    check_against_gnu_tar(&work.path().join("pigz-i.tar.gz"), 256 * 1024);
}

#[test]
fn multi_member_gzip_and_concatenated_archives() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("f{i}")), pseudo_random(50_000, i, true)).unwrap();
    }
    run(work.path(), "tar -cf one.tar -C src .");
    // One tar stream cut into pieces, each its own gzip member.
    run(
        work.path(),
        "split -b 300000 one.tar part. && for p in part.*; do gzip -c $p; done > split.tar.gz",
    );
    let ix = check_against_gnu_tar(&work.path().join("split.tar.gz"), 64 * 1024);
    assert_eq!(list_all(&ix.index, MemberId::ROOT, 1000).len(), 40);
    // Two whole archives concatenated: GNU tar stops at the first end-of-archive block.
    fs::create_dir_all(work.path().join("src2")).unwrap();
    fs::write(work.path().join("src2/other"), b"second archive").unwrap();
    run(
        work.path(),
        "tar -czf a.tgz -C src . && tar -czf b.tgz -C src2 . && cat a.tgz b.tgz > cat.tar.gz",
    );
    let ix = check_against_gnu_tar(&work.path().join("cat.tar.gz"), 64 * 1024);
    assert!(ix.index.lookup(MemberId::ROOT, b"other").unwrap().is_none());
}

#[test]
fn conflicting_entries_resolve_as_gnu_tar_extracts_them() {
    use ::tar::EntryType as T;
    let mut b = ::tar::Builder::new(Vec::new());
    let entries: &[(&str, T, &[u8])] = &[
        ("d/", T::Directory, b""),
        ("d/x", T::Regular, b"in d"),
        ("d", T::Regular, b"file over non-empty dir: skipped"),
        ("a", T::Regular, b"first a"),
        ("b", T::Link, b"a"),
        ("a", T::Regular, b"second a, b keeps the first"),
        ("c", T::Link, b"a"),
        ("s", T::Symlink, b"/tmp"),
        ("s/x", T::Regular, b"never through the link"),
        ("e/", T::Directory, b""),
        ("e", T::Regular, b"replaces the empty dir"),
        ("f", T::Regular, b"replaced by a dir"),
        ("f/", T::Directory, b""),
        ("f/y", T::Regular, b"y"),
        ("../evil", T::Regular, b"skipped"),
        ("/abs/", T::Directory, b""),
        ("/abs/g", T::Regular, b"rooted"),
        ("h", T::Link, b"missing"),
        ("./i/", T::Directory, b""),
        ("./i/j", T::Regular, b"normalised"),
    ];
    for (i, (name, kind, data)) in entries.iter().enumerate() {
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == T::Directory { 0o750 } else { 0o640 });
        h.set_mtime(1_700_000_000 + i as u64);
        let name_field = &mut h.as_old_mut().name;
        name_field[..name.len()].copy_from_slice(name.as_bytes());
        if matches!(kind, T::Link | T::Symlink) {
            h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
    }
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("conflicts.tar");
    fs::write(&path, b.into_inner().unwrap()).unwrap();
    let ix = index_file(&path, 1 << 20, 1 << 20);
    let (out, clean) = gnu_extract(&path);
    assert!(!clean, "GNU tar should have reported the skipped entries");
    compare(&ix, ix.index.root(), out.path(), &mut HashMap::new());
    let b = ix.index.lookup(MemberId::ROOT, b"b").unwrap().unwrap();
    assert_eq!(ix.reader.read(b.id, 0, 100).unwrap(), b"first a");
}

#[test]
fn random_and_concurrent_reads_match_straight_decompression() {
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(10 << 20, 11, true);
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "member.bin", &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&tar).unwrap();
    let gz = enc.finish().unwrap();
    let path = work.path().join("r.tar.gz");
    fs::write(&path, &gz).unwrap();
    let built = build(&gz, 256 * 1024, 65_536).unwrap();
    assert!(
        built.checkpoint_count() > 8,
        "{} checkpoints",
        built.checkpoint_count()
    );
    assert!(
        built.checkpoints.iter().any(|c| c.bits != 0),
        "no mid-byte checkpoint"
    );
    // Every checkpoint resumes to exactly the bytes a straight decompression gives there.
    let file = BytesBlob::new(fs::read(&path).unwrap());
    for cp in &built.checkpoints {
        let mut dec = super::decoder::StreamDecoder::resume(&file, cp).unwrap();
        let span = dec.next_span_until(&file, u64::MAX).unwrap().unwrap();
        let at = cp.uoff as usize;
        assert!(
            span.data == tar[at..at + span.data.len()],
            "checkpoint at {at}"
        );
    }
    let ix = store(&path, &gz, built, 1 << 20);
    let id = ix
        .index
        .lookup(MemberId::ROOT, b"member.bin")
        .unwrap()
        .unwrap()
        .id;
    let ix = Arc::new(ix);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ix = ix.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..60 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = x % (data.len() as u64 + 1000);
                    let len = (x >> 40) as u32 % 300_000;
                    let got = ix.reader.read(id, off, len).unwrap();
                    let s = (off as usize).min(data.len());
                    let e = (off as usize + len as usize).min(data.len());
                    assert!(got == data[s..e], "read {off}+{len}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sequential_reads_continue_one_decoder() {
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(6 << 20, 5, true);
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    b.append_data(&mut h, "seq", &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&tar).unwrap();
    let path = work.path().join("s.tar.gz");
    fs::write(&path, enc.finish().unwrap()).unwrap();
    // A cache far smaller than the member: every read must decode.
    let ix = index_file(&path, 256 * 1024, 512 * 1024);
    let id = ix.index.lookup(MemberId::ROOT, b"seq").unwrap().unwrap().id;
    let got = read_all(&ix.reader, id, data.len() as u64, 128 * 1024);
    assert!(got == data);
    assert!(
        ix.reader.checkpoint_resumes() <= 2,
        "{} resumes",
        ix.reader.checkpoint_resumes()
    );
}

#[test]
fn a_read_from_a_checkpoint_stops_at_its_end_and_the_next_read_continues() {
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(3 << 20, 9, true);
    let path = work.path().join("r.tar.gz");
    one_member_tar_gz(&path, "r", &data);
    // A 1 MiB cache: too small for read-ahead jobs, which would fill it behind our back.
    let ix = index_file(&path, 1 << 20, 1 << 20);
    let id = ix.index.lookup(MemberId::ROOT, b"r").unwrap().unwrap().id;
    let cache = ix.cache.clone();
    // The member's data starts at stream offset 512: [1000, 5000) is inside the first slot.
    assert_eq!(ix.reader.read(id, 1000, 4000).unwrap(), data[1000..5000]);
    assert_eq!(ix.reader.checkpoint_resumes(), 1);
    assert_eq!(
        cache.resident_bytes(),
        512 + 5000,
        "decoded past the read's end"
    );
    // The next read continues that decoder (no new resume) to the end of the slot, and the
    // slot is held whole: a read before the first one is a cache hit.
    assert_eq!(ix.reader.read(id, 5000, 4000).unwrap(), data[5000..9000]);
    assert_eq!(ix.reader.checkpoint_resumes(), 1);
    assert_eq!(cache.resident_bytes(), 256 * 1024);
    assert_eq!(ix.reader.read(id, 0, 1000).unwrap(), data[..1000]);
    assert_eq!(ix.reader.checkpoint_resumes(), 1);
    assert!(read_all(&ix.reader, id, data.len() as u64, 100_000) == data);
}

#[test]
fn read_ahead_does_not_decode_past_the_member_being_read() {
    use super::decoder::SPAN_SIZE;
    use super::span_cache::SpanKey;
    let work = tempfile::tempdir().unwrap();
    let first = pseudo_random(6 << 20, 21, true);
    let second = pseudo_random(12 << 20, 22, true);
    let path = work.path().join("two.tar.gz");
    members_tar_gz(&path, &[("first", &first), ("second", &second)]);
    // Checkpoints every MiB, a 16 MiB cache: read-ahead jobs of 4 MiB.
    let ix = index_file(&path, 1 << 20, 16 << 20);
    let id = ix
        .index
        .lookup(MemberId::ROOT, b"first")
        .unwrap()
        .unwrap()
        .id;
    let mut got = Vec::new();
    while got.len() < first.len() {
        let chunk = ix.reader.read(id, got.len() as u64, 128 * 1024).unwrap();
        got.extend(chunk);
        while ix.reader.read_ahead_running() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert!(got == first);
    assert!(ix.reader.read_ahead_jobs() > 0);
    // The first member's data ends after its 512-byte header; the second's header follows.
    let member_end = 512 + first.len() as u64;
    let bound = member_end + 2 * super::read_ahead::MEMBER_REACH + SPAN_SIZE;
    for slot in bound / SPAN_SIZE..(member_end + second.len() as u64) / SPAN_SIZE + 1 {
        let key = SpanKey {
            archive: ix.digest,
            slot,
        };
        assert!(
            ix.cache.get(&key).is_none(),
            "slot {slot} (from {}) decoded; the member ends at {member_end}",
            slot * SPAN_SIZE
        );
    }
}

/// A tar.gz of one member `name` holding `data`.
fn one_member_tar_gz(path: &Path, name: &str, data: &[u8]) {
    members_tar_gz(path, &[(name, data)]);
}

/// A tar.gz of regular files (name, data), in that order.
fn members_tar_gz(path: &Path, members: &[(&str, &[u8])]) {
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = ::tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&tar).unwrap();
    fs::write(path, enc.finish().unwrap()).unwrap();
}

#[test]
fn read_ahead_regions_give_identical_bytes() {
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(24 << 20, 11, true);
    let path = work.path().join("big.tar.gz");
    one_member_tar_gz(&path, "big", &data);
    // Checkpoints every MiB, an 8 MiB cache: jobs of 2 MiB from each checkpoint ahead.
    let ix = index_file(&path, 1 << 20, 8 << 20);
    let id = ix.index.lookup(MemberId::ROOT, b"big").unwrap().unwrap().id;
    // Waiting for each job after each read: the reader arrives at regions the jobs decoded.
    let mut got = Vec::new();
    while got.len() < data.len() {
        let chunk = ix.reader.read(id, got.len() as u64, 128 * 1024).unwrap();
        assert!(!chunk.is_empty(), "short read at {}", got.len());
        got.extend(chunk);
        while ix.reader.read_ahead_running() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert!(got == data, "bytes differ");
    let mut checkpoints = 0;
    let mut at = 0;
    while let Some(next) = ix.index.checkpoint_after(at).unwrap() {
        checkpoints += 1;
        at = next;
    }
    assert!(checkpoints >= 8, "{checkpoints} checkpoints");
    // A job from every checkpoint after the first.
    let jobs = ix.reader.read_ahead_jobs();
    assert_eq!(jobs, checkpoints, "read-ahead jobs");
    // The reader itself never started from a checkpoint after the first: it read what the jobs
    // decoded and continued the decoders they left.
    assert_eq!(ix.reader.checkpoint_resumes(), 1);

    // Without waiting (the job and the reader race), and with random reads in between.
    let ix = index_file(&path, 1 << 20, 8 << 20);
    assert!(read_all(&ix.reader, id, data.len() as u64, 128 * 1024) == data);
    let mid = ix.reader.read(id, 5_000_000, 4096).unwrap();
    assert_eq!(mid, data[5_000_000..5_004_096]);
    assert!(read_all(&ix.reader, id, data.len() as u64, 96 * 1024) == data);
    assert!(ix.reader.read_ahead_jobs() > 0);
}

#[test]
fn index_is_identical_whatever_the_feed_chunking() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    run(work.path(), "tar --format=pax -czf t.tgz -C src .");
    let bytes = fs::read(work.path().join("t.tgz")).unwrap();
    let a = build(&bytes, 128 * 1024, 1).unwrap();
    let b = build(&bytes, 128 * 1024, 1 << 22).unwrap();
    assert_eq!(a.checkpoints.len(), b.checkpoints.len());
    for (x, y) in a.checkpoints.iter().zip(&b.checkpoints) {
        assert_eq!((x.uoff, x.cbyte, x.bits), (y.uoff, y.cbyte, y.bits));
        let wx = x
            .window
            .as_deref()
            .map(|w| super::checkpoint::unpack_window(w).unwrap());
        let wy = y
            .window
            .as_deref()
            .map(|w| super::checkpoint::unpack_window(w).unwrap());
        assert!(wx == wy, "window at {}", x.uoff);
    }
    assert_eq!(a.checkpoints, b.checkpoints);
    let ea: Vec<_> = a
        .tree
        .entries()
        .map(|(p, n, m)| (p, n.to_vec(), m))
        .collect();
    let eb: Vec<_> = b
        .tree
        .entries()
        .map(|(p, n, m)| (p, n.to_vec(), m))
        .collect();
    assert_eq!(ea, eb);
}

#[test]
fn xattrs_from_pax_headers() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    run(
        &src,
        "setfattr -n user.color -v blue f && setfattr -n user.bin -v 0x00ff01 f",
    );
    run(work.path(), "tar --format=pax --xattrs -czf x.tgz -C src .");
    let ix = index_file(&work.path().join("x.tgz"), 1 << 20, 1 << 20);
    let f = ix.index.lookup(MemberId::ROOT, b"f").unwrap().unwrap();
    assert_eq!(
        ix.index.xattrs(f.id).unwrap(),
        vec![
            (b"user.bin".to_vec(), vec![0, 0xff, 1]),
            (b"user.color".to_vec(), b"blue".to_vec())
        ]
    );
    assert!(ix.index.xattrs(MemberId::ROOT).unwrap().is_empty());
}

#[test]
fn readdir_pages_are_stable_in_a_20000_entry_directory() {
    let work = tempfile::tempdir().unwrap();
    let mut b = ::tar::Builder::new(Vec::new());
    for i in 0..20_000u32 {
        let mut h = ::tar::Header::new_gnu();
        let body = format!("file {i}\n");
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("many/f{i:05}"), body.as_bytes())
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let path = work.path().join("many.tar");
    fs::write(&path, &tar).unwrap();
    let ix = index_file(&path, 1 << 22, 1 << 20);
    let many = ix.index.lookup(MemberId::ROOT, b"many").unwrap().unwrap();
    assert_eq!(many.nlink, 2);
    let all = list_all(&ix.index, many.id, 100);
    assert_eq!(all.len(), 20_000);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    assert_eq!(all[12_345].name, b"f12345");
    // Resuming at any offset (without the cursor cache: a fresh handle) gives the same entries.
    let fresh = ArchiveIndex::open(&ix.db, &ix.digest).unwrap();
    let page = fresh.readdir(many.id, 12_345, 3).unwrap();
    assert_eq!(page, all[12_345..12_348].to_vec());
    let f = ix.index.lookup(many.id, b"f00042").unwrap().unwrap();
    assert_eq!(ix.reader.read(f.id, 0, 100).unwrap(), b"file 42\n");
    assert!(ix.index.readdir(f.id, 0, 10).is_err());
    assert!(ix.index.readdir_kinds(f.id, 0, 10).is_err());
    // The id-and-kind listing gives the same entries in the same pages.
    let mut names = Vec::new();
    loop {
        let offset = names.last().map_or(0, |e: &DirName| e.offset);
        let batch = fresh.readdir_kinds(many.id, offset, 256).unwrap();
        if batch.is_empty() {
            break;
        }
        names.extend(batch);
    }
    assert_eq!(names.len(), all.len());
    for (n, e) in names.iter().zip(&all) {
        assert_eq!(
            (&n.name, n.id, n.kind, n.offset),
            (&e.name, e.member.id, e.member.kind, e.offset)
        );
    }
    let size = fs::metadata(&ix.db).unwrap().len()
        + fs::metadata(ix.db.with_extension("db-wal")).map_or(0, |m| m.len());
    assert!(size < 3 << 20, "index of 20,000 files takes {size} bytes");
}

#[test]
fn save_exists_open_delete() {
    let work = tempfile::tempdir().unwrap();
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_ustar();
    h.set_size(3);
    b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let path = work.path().join("x.tar");
    fs::write(&path, &tar).unwrap();
    let ix = store(&path, &tar, build(&tar, 1 << 20, 512).unwrap(), 1 << 20);
    let conn = Connection::open(&ix.db).unwrap();
    assert!(ArchiveIndex::exists(&conn, &ix.digest).unwrap());
    // Saving the same content again keeps the first index.
    ArchiveIndex::save(&conn, &ix.digest, build(&tar, 1 << 20, 7).unwrap()).unwrap();
    let other = Digest::of(b"other");
    assert!(!ArchiveIndex::exists(&conn, &other).unwrap());
    assert!(matches!(
        ArchiveIndex::open(&ix.db, &other),
        Err(ArchiveError::NotIndexed(_))
    ));
    assert_eq!(ArchiveIndex::delete(&conn, &ix.digest).unwrap(), 2);
    assert!(!ArchiveIndex::exists(&conn, &ix.digest).unwrap());
    assert_eq!(ArchiveIndex::delete(&conn, &ix.digest).unwrap(), 0);
    for table in [
        "archive_members",
        "archive_entries",
        "archive_checkpoints",
        "archive_xattrs",
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[test]
fn implied_directories_are_marked_until_an_entry_lists_them() {
    let work = tempfile::tempdir().unwrap();
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("a/b/f", ::tar::EntryType::Regular),
        ("c/", ::tar::EntryType::Directory),
        ("c/g", ::tar::EntryType::Regular),
        ("a/b/", ::tar::EntryType::Directory),
    ] {
        let mut h = ::tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o700);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let path = work.path().join("implied.tar");
    fs::write(&path, &tar).unwrap();
    let ix = store(&path, &tar, build(&tar, 1 << 20, 512).unwrap(), 1 << 20);
    let root = ix.index.root();
    let member = |parent, name: &str| ix.index.lookup(parent, name.as_bytes()).unwrap().unwrap();
    let a = member(root, "a");
    assert!(a.implied, "a/ has no entry of its own");
    let ab = member(a.id, "b");
    assert!(!ab.implied, "a/b/ is listed, after its child");
    assert_eq!(ab.mode, 0o700);
    assert!(!member(root, "c").implied);
    assert!(!member(ab.id, "f").implied);
}

#[test]
fn an_index_table_from_before_the_implied_column_gets_it() {
    let work = tempfile::tempdir().unwrap();
    let conn = Connection::open(work.path().join("old.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE archive_members (
             aid INTEGER NOT NULL, id INTEGER NOT NULL, kind INTEGER NOT NULL,
             mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
             size INTEGER NOT NULL, mtime INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
             nlink INTEGER NOT NULL, rdev INTEGER NOT NULL, data INTEGER NOT NULL,
             target BLOB, sparse BLOB, PRIMARY KEY (aid, id)) WITHOUT ROWID;
         INSERT INTO archive_members VALUES (1, 1, 1, 493, 0, 0, 0, 0, 0, 2, 0, 0, NULL, NULL);",
    )
    .unwrap();
    ArchiveIndex::init_schema(&conn).unwrap();
    ArchiveIndex::init_schema(&conn).unwrap();
    let implied: i64 = conn
        .query_row("SELECT implied FROM archive_members", [], |r| r.get(0))
        .unwrap();
    assert_eq!(implied, 0, "old rows count as listed");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn small_tar() -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    for i in 0..50 {
        let mut h = ::tar::Header::new_gnu();
        let body = pseudo_random(3000, i, true);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, format!("f{i}"), &body[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_gzip_is_rejected() {
    let gz = gzip(&small_tar());
    let n = gz.len();
    let mut bad_crc = gz.clone();
    bad_crc[n - 6] ^= 0x40;
    assert!(matches!(
        build(&bad_crc, 1 << 20, 4096),
        Err(ArchiveError::Trailer { .. })
    ));
    assert!(matches!(
        build(&gz[..n / 2], 1 << 20, 4096),
        Err(ArchiveError::Truncated { .. })
    ));
    let mut corrupt = gz.clone();
    for b in &mut corrupt[n / 3..n / 3 + 50] {
        *b = !*b;
    }
    assert!(build(&corrupt, 1 << 20, 4096).is_err());
    assert!(matches!(
        build(b"PK\x03\x04 zip file, not tar", 1 << 20, 4096),
        Err(ArchiveError::NotAnArchive(_))
    ));
    assert!(matches!(
        build(
            &gzip(b"just some text, not a tar stream at all"),
            1 << 20,
            4096
        ),
        Err(ArchiveError::NotAnArchive(_))
    ));
}

#[test]
fn hostile_headers_are_bounded() {
    // A 1 GiB GNU long name: refused from its header, nothing buffered.
    let mut h = ::tar::Header::new_gnu();
    h.set_entry_type(::tar::EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend(vec![b'a'; 1 << 16]);
    let start = std::time::Instant::now();
    let err = build(&gzip(&tar), 1 << 20, 4096).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("GNU long name"), "{err}");
    assert!(start.elapsed().as_secs() < 5);
    // A member claiming 10^12 bytes: the entries before it survive, it is dropped.
    let mut tar = small_tar();
    tar.truncate(tar.len() - 1024);
    let mut h = ::tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(1_000_000_000_000);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend(vec![0u8; 100_000]);
    let built = build(&gzip(&tar), 1 << 20, 4096).unwrap();
    assert_eq!(built.member_count(), 51);
    // Hard-link cycles and links to nothing resolve to nothing; symlink cycles are kept verbatim.
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, kind, target) in [
        ("a", ::tar::EntryType::Link, "b"),
        ("b", ::tar::EntryType::Link, "a"),
        ("s1", ::tar::EntryType::Symlink, "s2"),
        ("s2", ::tar::EntryType::Symlink, "s1"),
        ("self", ::tar::EntryType::Symlink, "self"),
    ] {
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("cyc.tar");
    fs::write(&path, &tar).unwrap();
    let ix = index_file(&path, 1 << 20, 1 << 20);
    let names: Vec<_> = list_all(&ix.index, MemberId::ROOT, 10)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![b"s1".to_vec(), b"s2".to_vec(), b"self".to_vec()]
    );
    let s = ix.index.lookup(MemberId::ROOT, b"self").unwrap().unwrap();
    assert_eq!(ix.index.readlink(s.id).unwrap(), b"self");
    assert!(matches!(
        ix.reader.read(s.id, 0, 10),
        Err(ArchiveError::WrongKind { .. })
    ));
    assert!(matches!(
        ix.index.member(MemberId(999)),
        Err(ArchiveError::NoSuchMember(_))
    ));
}

#[test]
fn random_garbage_never_panics() {
    let tar = small_tar();
    let gz = gzip(&tar);
    let mut x = 0x1234_5678u64;
    for round in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut input = if round % 2 == 0 {
            tar.clone()
        } else {
            gz.clone()
        };
        let flips = 1 + x as usize % 8;
        for i in 0..flips {
            let at = (x.rotate_left(i as u32 * 7) as usize) % input.len();
            input[at] ^= (x >> (i * 8)) as u8 | 1;
        }
        if round % 3 == 0 {
            input.truncate((x >> 20) as usize % input.len());
        }
        let _ = build(&input, 64 * 1024, 1 + (x >> 30) as usize % 9000);
    }
}

/// A region store in a temp dir, counting what it is asked.
#[derive(Default)]
struct DirRegions {
    dir: Option<TempDir>,
    kept: parking_lot::Mutex<HashMap<u64, PathBuf>>,
    paths: parking_lot::Mutex<HashMap<Digest, PathBuf>>,
    writers: std::sync::atomic::AtomicUsize,
    commits: std::sync::atomic::AtomicUsize,
    opens: std::sync::atomic::AtomicUsize,
}

struct DirRegionWriter {
    store: Arc<DirRegions>,
    start: u64,
    file: tempfile::NamedTempFile,
}

impl RegionStore for Arc<DirRegions> {
    fn kept_regions(&self, _: &Digest) -> Vec<(u64, Digest)> {
        let kept = self.kept.lock().clone();
        kept.into_iter()
            .filter_map(|(start, path)| {
                let d = Digest::of(&fs::read(&path).ok()?);
                self.paths.lock().insert(d, path);
                Some((start, d))
            })
            .collect()
    }

    fn open(&self, copy: &Digest) -> Option<Arc<dyn crate::store::BlobRead>> {
        let path = self.paths.lock().get(copy).cloned()?;
        self.opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Arc::new(BytesBlob::new(fs::read(path).ok()?)))
    }

    fn writer(&self, _: &Digest, start: u64, _len: u64) -> Option<Box<dyn RegionWriter>> {
        self.writers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = self.dir.as_ref()?.path();
        Some(Box::new(DirRegionWriter {
            store: self.clone(),
            start,
            file: tempfile::NamedTempFile::new_in(dir).ok()?,
        }))
    }
}

impl RegionWriter for DirRegionWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self.file.as_file(), data, offset)
    }

    fn reader(&self) -> std::io::Result<fs::File> {
        self.file.as_file().try_clone()
    }

    fn commit(self: Box<Self>) -> Result<Digest, String> {
        let path = self.file.path().with_extension("kept");
        self.file.persist(&path).map_err(|e| e.to_string())?;
        let d = Digest::of(&fs::read(&path).map_err(|e| e.to_string())?);
        self.store.kept.lock().insert(self.start, path.clone());
        self.store.paths.lock().insert(d, path);
        self.store
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(d)
    }
}

#[test]
fn small_members_are_read_from_their_decoded_region() {
    // Small members, 1 MiB spacing: the first read in a region fills it (no decoder of the
    // reader's own), the others read the copy; a region gone from the store is filled again.
    let mut b = ::tar::Builder::new(Vec::new());
    let mut bodies = Vec::new();
    for i in 0..1500u64 {
        let mut h = ::tar::Header::new_gnu();
        let body = pseudo_random(2000 + (i as usize * 37) % 9000, i, true);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, format!("f{i:04}"), &body[..])
            .unwrap();
        bodies.push(body);
    }
    let tar = b.into_inner().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("small.tar.gz");
    fs::write(&path, gzip(&tar)).unwrap();
    let ix = index_file(&path, 1 << 20, 1 << 20);
    let store = Arc::new(DirRegions {
        dir: Some(tempfile::tempdir().unwrap()),
        ..DirRegions::default()
    });
    let reader = ArchiveReader::new(
        ix.index.clone(),
        Arc::new(BytesBlob::new(fs::read(&path).unwrap())),
        Arc::new(SpanCache::new(1 << 20)),
    )
    .with_regions(Arc::new(store.clone()));
    let starts: Vec<u64> = ix
        .index
        .checkpoint_positions()
        .unwrap()
        .into_iter()
        .map(|(uoff, _)| uoff)
        .collect();
    assert!(starts.len() >= 4, "several regions: {starts:?}");
    let read = |i: usize| {
        let m = ix
            .index
            .lookup(MemberId::ROOT, format!("f{i:04}").as_bytes())
            .unwrap()
            .unwrap();
        reader.read(m.id, 0, m.size as u32).unwrap()
    };
    let wait_kept = |n: usize| {
        for _ in 0..500 {
            if store.kept.lock().len() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no region kept");
    };
    let region_of = |i: usize| {
        let m = ix
            .index
            .lookup(MemberId::ROOT, format!("f{i:04}").as_bytes())
            .unwrap()
            .unwrap();
        let first = ix.index.layout(m.id).unwrap().data_offset;
        let last = first + m.size.max(1) - 1;
        let region = |at: u64| starts[starts.partition_point(|&s| s <= at) - 1];
        // Members across a region boundary count as in neither.
        (region(first) == region(last)).then(|| region(first))
    };
    // The first read decodes from the region's checkpoint itself (one resume), then hands
    // over: the fill keeps the region, and the members around are read from that copy.
    assert_eq!(read(700), bodies[700]);
    assert_eq!(reader.checkpoint_resumes(), 1);
    wait_kept(1);
    let neighbours: Vec<usize> = (650..750)
        .filter(|&i| region_of(i).is_some() && region_of(i) == region_of(700))
        .collect();
    assert!(neighbours.len() > 50, "{} neighbours", neighbours.len());
    for &i in &neighbours {
        assert_eq!(read(i), bodies[i], "member {i}");
    }
    assert_eq!(
        reader.checkpoint_resumes(),
        1,
        "no neighbour decoded for itself"
    );
    assert!(store.opens.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let writers = store.writers.load(std::sync::atomic::Ordering::SeqCst);
    // The copies leave the store: the next read in a region claims it again.
    store.kept.lock().clear();
    for path in store.paths.lock().drain().map(|(_, p)| p) {
        fs::remove_file(path).unwrap();
    }
    // Far apart (a read close after the last one is a sequential reader's, which decodes),
    // each after the fills started before it are done (a read finding every fill slot taken
    // decodes for itself, keeping nothing).
    let far = [1400, 100, 1100, 400, 800, 0, 1499];
    for i in far {
        assert_eq!(read(i), bodies[i], "member {i}");
        let started = store.writers.load(std::sync::atomic::Ordering::SeqCst);
        wait_kept(started - writers);
    }
    assert!(store.writers.load(std::sync::atomic::Ordering::SeqCst) > writers);
    let resumes = reader.checkpoint_resumes();
    for i in far {
        assert_eq!(read(i), bodies[i], "member {i} again");
    }
    assert_eq!(
        reader.checkpoint_resumes(),
        resumes,
        "read again from the rebuilt copies"
    );
}

#[test]
fn warm_up_runs_the_read_path() {
    warm_up().unwrap();
}
