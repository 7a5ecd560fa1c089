//! Acceptance tests for the decoded cache (issue 11): archive members read whole are kept
//! decoded in the store, as blobs named by their sha256, and served from there.
//!
//! - Nothing is extracted until a member is read: listing and `stat` leave only the archive blob.
//! - A member read whole is then served by FUSE passthrough: the test drops the member's pages
//!   from the page cache, opens it, stops the daemon (SIGSTOP) and reads it whole. Only the
//!   kernel reading the store's file itself can answer while the daemon cannot; the daemon is
//!   continued (SIGCONT) in any case, also when the read fails or the test panics.
//! - Under the quota the decoded copies are evicted least-recently-used like any blob, and the
//!   next whole read decodes from the archive again (byte-identical) and keeps the member again.
//!   (The test drops the member's pages from the page cache first: a read the kernel answers
//!   from its cache needs no copy.)
//!
//! - Small members are read through decoded regions (the stream between two checkpoints, decoded
//!   once into the store): the first read keeps its region, `gc` evicts it like any blob, and the
//!   next read decodes it again, byte-identical, and keeps it again.
//!
//! The waits for a copy to be kept watch the daemon's log ("kept #N of ... decoded", "kept
//! region at ... decoded as HEX"): the copy is hashed, fsynced and committed on a thread of its
//! own after the last byte was served.

#[path = "archive_support/mod.rs"]
mod archive_support;
mod common;

use archive_support::pack::{pigz, tar_create, T0};
use archive_support::serve::Served;
use archive_support::source::{Meta, SourceTree};
use common::lazycas::tail;
use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// How long a kept copy may take to appear (hash + fsync + commit of a few MiB), or a read to
/// finish while the daemon is stopped.
const SETTLE: Duration = Duration::from_secs(60);

/// Size of each of the two large members.
const MEMBER: usize = 8 << 20;

/// An archive of two large random members and a small text file, pigz-compressed.
struct Fixture {
    _work: TempDir,
    archive: PathBuf,
    a: Vec<u8>,
    b: Vec<u8>,
}

fn fixture() -> Fixture {
    let work = tempfile::Builder::new()
        .prefix("lazycas-decoded-test-")
        .tempdir()
        .expect("tempdir");
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    let (a, b) = (random_bytes(MEMBER, 1101), random_bytes(MEMBER, 1102));
    t.file("data/a.bin", &a, Meta::new(0o644, T0));
    t.file("data/b.bin", &b, Meta::new(0o644, T0));
    t.file(
        "small.txt",
        b"small members stay in the page cache\n",
        Meta::new(0o644, T0),
    );
    let src = t.finish();
    let tar = work.path().join("two.tar");
    tar_create(&src, &tar, &["--format=gnu"]);
    let archive = work.path().join("two.tar.gz");
    pigz(&tar, &archive, &[]);
    Fixture {
        _work: work,
        archive,
        a,
        b,
    }
}

/// Blob files of the node's store, by name (their sha256).
fn stored_blob_names(node: &Lazycas) -> Vec<String> {
    let mut names: Vec<String> = node
        .stored_blobs()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// Lines of the daemon log saying a member was kept decoded.
fn kept(daemon: &Daemon) -> usize {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("kept #") && l.contains(" decoded as "))
        .count()
}

/// The digests of the regions the daemon log says were kept, in order.
fn kept_regions(daemon: &Daemon) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("kept region at "))
        .filter_map(|l| l.split(" decoded as ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Waits until the log reports `n` regions kept, and returns their digests.
#[track_caller]
fn wait_regions(daemon: &Daemon, n: usize) -> Vec<String> {
    assert!(
        wait_until(SETTLE, || kept_regions(daemon).len() >= n),
        "{n} regions kept expected; log:\n{}",
        tail(&daemon.log(), 40)
    );
    kept_regions(daemon)
}

/// Waits until the log reports `n` members kept decoded.
#[track_caller]
fn wait_kept(daemon: &Daemon, n: usize) {
    assert!(
        wait_until(SETTLE, || kept(daemon) >= n),
        "{n} members kept decoded expected; log:\n{}",
        tail(&daemon.log(), 40)
    );
}

/// Reads `path` whole and compares it with `want`.
#[track_caller]
fn assert_reads_whole(path: &Path, want: &[u8], what: &str) {
    let got = with_deadline(SETTLE, what, {
        let path = path.to_path_buf();
        move || fs::read(path)
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_same_bytes(&got, want, what);
}

/// Drops `path`'s pages from the kernel's page cache (`FOPEN_KEEP_CACHE` keeps them between
/// opens), so the next read reaches the daemon or the kept copy.
#[track_caller]
fn drop_cached_pages(path: &Path) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: posix_fadvise on an fd we own.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", path.display());
}

/// Continues a stopped daemon when dropped (also on panic).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) to our own child daemon's PID.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGCONT);
        }
    }
}

#[test]
fn member_read_whole_is_then_served_by_passthrough() {
    require_fuse!();
    let f = fixture();
    let served = Served::start(&[("two", &f.archive)]);
    let archive_hex = served.archive("two").sha256.clone();
    let root = served.path("two");
    let a_path = root.join("data/a.bin");
    assert_eq!(list_dir(root.join("data")), vec!["a.bin", "b.bin"]);
    assert_eq!(fs::metadata(&a_path).expect("stat").len(), MEMBER as u64);
    assert_eq!(
        stored_blob_names(&served.node),
        vec![archive_hex.clone()],
        "nothing is extracted until a member is read"
    );

    assert_reads_whole(
        &a_path,
        &f.a,
        "a.bin, first read (decoded from the archive)",
    );
    assert_reads_whole(
        &root.join("small.txt"),
        b"small members stay in the page cache\n",
        "small.txt",
    );
    wait_kept(&served.daemon, 1);
    let regions = wait_regions(&served.daemon, 1);
    let a_hex = sha256_hex(&f.a);
    let mut want = vec![archive_hex, a_hex.clone()];
    want.extend(regions);
    want.sort();
    assert_eq!(
        stored_blob_names(&served.node),
        want,
        "the member read whole is kept, under its own sha256; the small one is not (its \
         region is)"
    );
    assert_eq!(kept(&served.daemon), 1, "one member kept");
    assert_eq!(
        sha256_file(&served.node.blob_path(&a_hex)),
        a_hex,
        "the kept copy holds the member's bytes"
    );

    if !served.daemon.log().contains("passthrough=true") {
        eprintln!(
            "SKIP passthrough check: the kernel refused FUSE passthrough:\n{}",
            tail(&served.daemon.log(), 20)
        );
        return;
    }
    // Without the member's pages in the page cache, a read that reached the daemon would have
    // to be answered by it.
    drop_cached_pages(&a_path);
    let file = fs::File::open(&a_path).expect("open a.bin again");
    let pid = served.daemon.pid();
    let resume = Continue(pid);
    // SAFETY: a plain kill(2) to our own child daemon's PID.
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) },
        0,
        "SIGSTOP"
    );
    // The file is handed back, not closed: closing sends FLUSH, which the stopped daemon would
    // answer only once continued.
    let (file, got) = with_deadline(
        SETTLE,
        "reading a.bin while the daemon is stopped",
        move || {
            let mut buf = vec![0u8; MEMBER];
            let read = file.read_exact_at(&mut buf, 0).map(|_| buf);
            (file, read)
        },
    );
    drop(resume);
    drop(file);
    let got = got.expect("read a.bin while the daemon is stopped");
    assert_same_bytes(&got, &f.a, "a.bin through passthrough");
}

#[test]
fn decoded_copies_are_evicted_under_quota_and_rebuilt_on_the_next_read() {
    require_fuse!();
    let f = fixture();
    let archive_size = fs::metadata(&f.archive).expect("stat archive").len();
    // Room for the archive and one decoded member: keeping the second evicts the first (the
    // archive itself is open, so never evicted). Eviction brings the store to 90% of the quota
    // minus the incoming copy, so the quota is at least (archive + member) / 0.9.
    let quota = (archive_size + MEMBER as u64) * 10 / 9 + (256 << 10);
    assert!(
        quota < archive_size + 2 * MEMBER as u64,
        "quota fits one copy only"
    );
    let config = Config {
        quota: Some(quota.to_string()),
        ..Config::default()
    };
    let served = Served::start_with(&[("two", &f.archive)], config);
    let archive_hex = served.archive("two").sha256.clone();
    let (a_hex, b_hex) = (sha256_hex(&f.a), sha256_hex(&f.b));
    let root = served.path("two");
    let (a_path, b_path) = (root.join("data/a.bin"), root.join("data/b.bin"));
    let with = |member: &str| {
        let mut v = vec![archive_hex.clone(), member.to_string()];
        v.sort();
        v
    };

    assert_reads_whole(&a_path, &f.a, "a.bin, first read");
    wait_kept(&served.daemon, 1);
    assert_eq!(stored_blob_names(&served.node), with(&a_hex), "a.bin kept");

    assert_reads_whole(&b_path, &f.b, "b.bin, first read");
    wait_kept(&served.daemon, 2);
    assert_eq!(
        stored_blob_names(&served.node),
        with(&b_hex),
        "keeping b.bin evicted a.bin's copy under the quota"
    );

    drop_cached_pages(&a_path);
    assert_reads_whole(&a_path, &f.a, "a.bin after its copy was evicted");
    wait_kept(&served.daemon, 3);
    assert_eq!(
        stored_blob_names(&served.node),
        with(&a_hex),
        "a.bin rebuilt on the next read, b.bin's copy evicted in turn"
    );
    assert_reads_whole(&a_path, &f.a, "a.bin from its rebuilt copy");
    drop_cached_pages(&b_path);
    assert_reads_whole(&b_path, &f.b, "b.bin after its copy was evicted");
    let log = served.daemon.log();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
}

#[test]
fn small_members_are_read_from_regions_evicted_by_gc_and_rebuilt() {
    require_fuse!();
    let work = tempfile::Builder::new()
        .prefix("lazycas-regions-test-")
        .tempdir()
        .expect("tempdir");
    let mut t = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
    // 3,000 files of 4 KiB to 6 KiB: about 15 MiB of tar, several regions of 4 MiB.
    let bodies: Vec<Vec<u8>> = (0..3000u64)
        .map(|i| random_bytes(4096 + (i as usize * 61) % 2048, 5000 + i))
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        t.file(format!("s/f{i:04}"), body, Meta::new(0o644, T0));
    }
    let src = t.finish();
    let tar = work.path().join("small.tar");
    tar_create(&src, &tar, &["--format=gnu"]);
    let archive = work.path().join("small.tar.gz");
    pigz(&tar, &archive, &[]);
    let served = Served::start(&[("small", &archive)]);
    let root = served.path("small");
    let path = |i: usize| root.join(format!("s/f{i:04}"));

    assert_reads_whole(&path(1500), &bodies[1500], "f1500, first read");
    let first = wait_regions(&served.daemon, 1);
    assert!(
        served.node.blob_path(&first[0]).exists(),
        "the region is a blob of the store"
    );
    for (i, body) in bodies.iter().enumerate().take(1510).skip(1490) {
        assert_reads_whole(&path(i), body, "a neighbour of f1500");
    }

    served.node.cli(&["gc", "--to", "0"]).assert_success();
    assert!(
        !served.node.blob_path(&first[0]).exists(),
        "gc evicted the region (no reader holds it between reads)"
    );
    let before = kept_regions(&served.daemon).len();
    // f1509: in the region, read from the copy before, and past what the first read decoded
    // itself (the daemon's small span cache may still hold that much).
    drop_cached_pages(&path(1509));
    assert_reads_whole(
        &path(1509),
        &bodies[1509],
        "f1509 after its region was evicted",
    );
    let again = wait_regions(&served.daemon, before + 1);
    assert_eq!(
        again.last(),
        Some(&first[0]),
        "the region decoded again is the same bytes"
    );
    for i in (0..3000).step_by(149) {
        drop_cached_pages(&path(i));
        assert_reads_whole(&path(i), &bodies[i], "a member anywhere");
    }
    let log = served.daemon.log();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
}
