//! The archive library through its public API only, the way the download pipeline and the FUSE
//! layer use it: feed a GNU tar + gzip archive in download-sized pieces, save the index to a WAL
//! database, reopen it on its own connection, walk the tree and read every file from several
//! threads, comparing with the source files.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lazycas::archive::{
    ArchiveIndex, ArchiveReader, DirEntry, IndexBuilder, MemberId, MemberKind, SpanCache,
};
use lazycas::digest::Digest;
use lazycas::store::BytesBlob;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

/// Every entry of `dir`, in pages of 5.
fn list(index: &ArchiveIndex, dir: MemberId) -> Vec<DirEntry> {
    let mut out: Vec<DirEntry> = Vec::new();
    loop {
        let offset = out.last().map_or(0, |e| e.offset);
        let page = index.readdir(dir, offset, 5).expect("readdir");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Walks the index and the source tree together; returns (path, member id, size) of each file.
fn collect(
    index: &ArchiveIndex,
    dir: MemberId,
    src: &Path,
    files: &mut Vec<(String, MemberId, u64)>,
) {
    for e in list(index, dir) {
        let name = String::from_utf8(e.name.clone()).expect("utf-8 names in this test");
        let path = src.join(&name);
        match e.member.kind {
            MemberKind::Dir => collect(index, e.member.id, &path, files),
            MemberKind::File => {
                files.push((path.display().to_string(), e.member.id, e.member.size))
            }
            MemberKind::Symlink => {
                let target = fs::read_link(&path).expect("source symlink");
                assert_eq!(
                    index.readlink(e.member.id).expect("readlink"),
                    target.as_os_str().as_encoded_bytes()
                );
            }
            other => panic!("unexpected {other:?} at {}", path.display()),
        }
    }
}

#[test]
fn index_save_reopen_and_read_in_parallel() {
    assert_send_sync::<ArchiveIndex>();
    assert_send_sync::<ArchiveReader>();
    assert_send_sync::<SpanCache>();
    assert_send::<IndexBuilder>();
    assert_send::<lazycas::archive::BuiltIndex>();

    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    fs::create_dir_all(src.join("docs/nested")).expect("mkdir");
    let mut big = Vec::new();
    for i in 0..400_000u32 {
        writeln!(big, "line {i}: {}", i.wrapping_mul(2_654_435_761)).expect("write");
    }
    fs::write(src.join("big.log"), &big).expect("write");
    for i in 0..200 {
        fs::write(
            src.join(format!("docs/note{i:03}.txt")),
            format!("note {i}\n").repeat(i + 1),
        )
        .expect("write");
    }
    fs::write(src.join("docs/nested/empty"), b"").expect("write");
    std::os::unix::fs::symlink("../big.log", src.join("docs/link")).expect("symlink");
    let archive = work.path().join("a.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .expect("GNU tar");
    assert!(st.success());

    // Index in irregular, download-like pieces.
    let bytes = fs::read(&archive).expect("read archive");
    let digest = Digest::of(&bytes);
    let mut builder = IndexBuilder::with_checkpoint_spacing(256 * 1024);
    let mut at = 0usize;
    let mut step = 1usize;
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        builder.feed(&bytes[at..end]).expect("feed");
        at = end;
        step = step * 7 % 65_521 + 1;
    }
    let built = builder.finish().expect("finish");
    assert!(built.is_gzip());
    assert!(built.checkpoint_count() > 1);

    let db = work.path().join("lazycas.db");
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.pragma_update(None, "journal_mode", "wal")
        .expect("wal");
    ArchiveIndex::init_schema(&conn).expect("schema");
    ArchiveIndex::save(&conn, &digest, built).expect("save");
    assert!(ArchiveIndex::exists(&conn, &digest).expect("exists"));

    let index = Arc::new(ArchiveIndex::open(&db, &digest).expect("open"));
    let reader = Arc::new(ArchiveReader::new(
        index.clone(),
        Arc::new(BytesBlob::new(bytes)),
        Arc::new(SpanCache::new(4 << 20)),
    ));
    let mut files = Vec::new();
    collect(&index, index.root(), &src, &mut files);
    assert_eq!(files.len(), 202);

    let chunks: Vec<Vec<(String, MemberId, u64)>> = files.chunks(60).map(<[_]>::to_vec).collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|part| {
            let reader = reader.clone();
            std::thread::spawn(move || {
                for (path, id, size) in part {
                    let mut got = Vec::new();
                    while (got.len() as u64) < size {
                        let piece = reader.read(id, got.len() as u64, 128 * 1024).expect("read");
                        assert!(!piece.is_empty());
                        got.extend(piece);
                    }
                    assert!(got == fs::read(&path).expect("source"), "{path}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("reader thread");
    }

    assert_eq!(ArchiveIndex::delete(&conn, &digest).expect("delete"), 206);
    assert!(!ArchiveIndex::exists(&conn, &digest).expect("exists"));
}
