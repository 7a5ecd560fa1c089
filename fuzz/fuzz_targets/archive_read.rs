//! The gzip index reader: an archive that indexes is saved to SQLite, then every member is
//! listed and read through `ArchiveReader` (checkpoints, window restore, span cache), as the
//! mount does. Reads may fail with an error; they must not panic or return more than asked.
#![no_main]

use lazycas::archive::{ArchiveIndex, ArchiveReader, IndexBuilder, MemberId, SpanCache};
use lazycas::digest::Digest;
use lazycas::store::BytesBlob;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let mut builder = IndexBuilder::with_checkpoint_spacing(1024);
    if builder.feed(data).is_err() {
        return;
    }
    let Ok(built) = builder.finish() else {
        return;
    };
    // The index database on tmpfs where there is one: SQLite's fsyncs are most of the time.
    let shm = std::path::Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .expect("tempdir");
    let db = dir.path().join("fuzz.db");
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    ArchiveIndex::init_schema(&conn).expect("schema");
    let digest = Digest::of(data);
    if ArchiveIndex::save(&conn, &digest, built).is_err() {
        return;
    }
    let Ok(index) = ArchiveIndex::open(&db, &digest) else {
        return;
    };
    let index = Arc::new(index);
    let reader = ArchiveReader::new(
        index.clone(),
        Arc::new(BytesBlob::new(data.to_vec())),
        Arc::new(SpanCache::new(1 << 20)),
    );
    let mut dirs: Vec<MemberId> = vec![index.root()];
    let mut visited = 0;
    while let Some(d) = dirs.pop() {
        let Ok(entries) = index.readdir(d, 0, 1000) else {
            continue;
        };
        for e in entries {
            visited += 1;
            if visited > 2000 {
                return;
            }
            let _ = index.xattrs(e.member.id);
            let _ = index.readlink(e.member.id);
            match e.member.kind {
                lazycas::archive::MemberKind::Dir => dirs.push(e.member.id),
                _ => {
                    let len = e.member.size.min(1 << 16) as u32;
                    if let Ok(bytes) = reader.read(e.member.id, 0, len) {
                        assert!(bytes.len() <= len as usize, "read returned more than asked");
                    }
                }
            }
        }
    }
});
