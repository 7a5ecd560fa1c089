//! Acceptance tests for issue 2: URL assets mounted, fetched lazily on first read, verified,
//! stored once, served read-only.
//!
//! Every test mounts for real (root, /dev/fuse) and serves assets from a real nginx on 127.0.0.1
//! (or the no-Range and dead origins), counting what the origin served from its access log. The
//! harness in `tests/common/` stops what it starts by PID and unmounts, also on failure.

mod common;

use common::*;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The deadline test's `timeout_secs`.
const DEAD_ORIGIN_TIMEOUT_SECS: u64 = 2;

/// How long a read from a dead origin may take before failing with EIO: `timeout_secs` plus a
/// margin of `timeout_secs + 5 s`. The margin allows one retry of the stalled attempt (the
/// fetcher retries resets and short bodies with backoff), a connect deadline, and scheduling
/// slack on a loaded 2-core CI machine; it does not allow retrying without bound, and it is far
/// below what a client stuck without a deadline would show. This is a correctness deadline
/// (bounded failure), not a speed measurement.
fn dead_origin_bound(timeout_secs: u64) -> Duration {
    Duration::from_secs(timeout_secs) * 2 + Duration::from_secs(5)
}

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Small helpers for this file.

/// A node whose config holds `assets`, with small fetch chunks so multi-chunk paths are exercised
/// by test-sized blobs.
fn node(assets: Vec<Asset>) -> Lazycas {
    Lazycas::with_config(Config {
        fetch_chunk_size: Some("1M".into()),
        fetch_parallel: Some(4),
        assets,
        ..Config::default()
    })
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
}

/// `user.lazycas.cached` ("RESIDENT/SIZE") parsed as (bytes resident, size); the size may be
/// unknown (any non-number) before the first fetch when the catalog does not give it.
fn cached_xattr(path: &Path) -> (u64, Option<u64>) {
    let v = xattr::get_string(path, "user.lazycas.cached")
        .unwrap_or_else(|e| panic!("getxattr user.lazycas.cached on {}: {e}", path.display()));
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let parsed = compact
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok())));
    parsed.unwrap_or_else(|| panic!("user.lazycas.cached is {v:?}, expected \"RESIDENT/SIZE\""))
}

#[track_caller]
fn assert_no_requests(origin: &impl Origin, when: &str) {
    let log = origin.log();
    assert!(log.is_empty(), "{when} made requests to the origin:\n{log}");
}

#[track_caller]
fn assert_store_empty(node: &Lazycas, when: &str) {
    let blobs = node.stored_blobs();
    assert!(blobs.is_empty(), "{when} stored blobs: {blobs:?}");
}

/// Asserts that `io_result` is EIO and came within `bound`.
#[track_caller]
fn assert_eio_within<T: std::fmt::Debug>(
    result: io::Result<T>,
    elapsed: Duration,
    bound: Duration,
    what: &str,
) {
    eprintln!(
        "{what}: {:?} after {elapsed:?} (allowed {bound:?})",
        result.as_ref().map(|_| ())
    );
    xattr::assert_errno(result, libc::EIO, what);
    assert!(
        elapsed <= bound,
        "{what}: failed after {elapsed:?}, allowed {bound:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Laziness

/// Mounting and `ls -lR` (lookups, getattr, readdir, the xattr probes `ls` makes) fetch nothing:
/// the origin sees no request at all and the store holds no blob.
#[test]
fn mount_and_ls_lr_fetch_nothing() {
    require_fuse!();
    let origin = Nginx::start();
    let plain = origin.put_random("plain.bin", 2 * MIB + 3);
    let nested = origin.put_random("deep/nested.bin", 100_000);
    let tagged = origin.put_random("app-1.0.sif", 300_000);
    let lazycas = node(vec![
        Asset::file("plain.bin", &origin.url_of(&plain), &plain.sha256),
        Asset::file(
            "dir/sub/nested.bin",
            &origin.url_of(&nested),
            &nested.sha256,
        ),
        Asset::file(
            "images/app:1.0.sif",
            &origin.url_of(&tagged),
            &tagged.sha256,
        ),
    ]);
    let mnt = lazycas.mount();
    assert_no_requests(&origin, "mounting");

    let mut ls = Command::new("ls");
    ls.arg("-lR").arg("--color=never").arg(&mnt.mountpoint);
    let out = run(ls, READ_DEADLINE);
    out.assert_success();
    for name in ["plain.bin", "nested.bin", "app:1.0.sif", "sha256"] {
        assert!(
            out.stdout.contains(name),
            "`ls -lR` does not show {name}:\n{}",
            out.stdout
        );
    }
    // A second walk by hand: stat every catalog path.
    for p in [
        "plain.bin",
        "dir",
        "dir/sub",
        "dir/sub/nested.bin",
        "images",
        "images/app:1.0.sif",
    ] {
        fs::symlink_metadata(mnt.path(p)).unwrap_or_else(|e| panic!("stat {p}: {e}"));
    }
    assert_no_requests(&origin, "`ls -lR` of the mount");
    assert_store_empty(&lazycas, "`ls -lR` of the mount");
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A read returns exactly the origin's bytes: whole-file reads and positioned reads at chunk
/// boundaries, in the middle and at the end, for a blob spanning several fetch chunks.
#[test]
fn read_returns_the_origin_bytes() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("data/blob.bin", 5 * MIB + 123);
    let lazycas = node(vec![Asset::file(
        "data/blob.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    assert_reads(mnt.path("data/blob.bin"), &blob.bytes);

    let path = mnt.path("data/blob.bin");
    let expected = blob.bytes.clone();
    with_deadline(READ_DEADLINE, "positioned reads", move || {
        let f = fs::File::open(&path).expect("open");
        let len = expected.len() as u64;
        let mib = MIB as u64;
        for (offset, n) in [
            (0, 1),
            (mib - 1, 2),
            (mib, 4096),
            (3 * mib + 7, 200_000),
            (len - 10, 10),
            (len - 10, 100),
        ] {
            let mut buf = vec![0u8; n];
            let got = f.read_at(&mut buf, offset).expect("pread");
            let want = &expected[offset as usize..(offset as usize + n).min(expected.len())];
            assert_same_bytes(&buf[..got], want, &format!("pread({offset}, {n})"));
        }
        let mut buf = [0u8; 16];
        assert_eq!(
            f.read_at(&mut buf, len).expect("pread at EOF"),
            0,
            "read at EOF returns 0 bytes"
        );
    });
    let meta = fs::metadata(mnt.path("data/blob.bin")).expect("stat");
    assert_eq!(meta.len(), blob.len(), "st_size after the read");
    assert_eq!(
        lazycas.stored_blobs(),
        vec![lazycas.blob_path(&blob.sha256)],
        "one blob stored under its digest"
    );
    assert_eq!(
        sha256_file(&lazycas.blob_path(&blob.sha256)),
        blob.sha256,
        "the stored blob is the verified content"
    );
}

/// Edge sizes: an empty file (a Range request on it gets 416), one byte, and one byte past a
/// fetch chunk.
#[test]
fn empty_and_tiny_assets_read_correctly() {
    require_fuse!();
    let origin = Nginx::start();
    let blobs = [
        origin.put("empty", Vec::new()),
        origin.put_random("one", 1),
        origin.put_random("chunk-plus-one", MIB + 1),
    ];
    let lazycas = node(
        blobs
            .iter()
            .map(|b| Asset::file(&b.rel, &origin.url_of(b), &b.sha256))
            .collect(),
    );
    let mnt = lazycas.mount();
    for b in &blobs {
        assert_reads(mnt.path(&b.rel), &b.bytes);
        assert_eq!(
            fs::metadata(mnt.path(&b.rel)).expect("stat").len(),
            b.len(),
            "st_size of {}",
            b.rel
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// A wrong sha256 is refused: the read fails with EIO, nothing is stored (no blob, no temp file
/// left), the log names the asset, the URL, the expected and the actual digest, and a second
/// read fails the same way.
#[test]
fn wrong_sha256_is_refused() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("tampered.bin", 3 * MIB);
    let pinned = sha256_hex(b"what the publisher pinned");
    let url = origin.url_of(&blob);
    let lazycas = node(vec![Asset::file("tampered.bin", &url, &pinned)]);
    let mnt = lazycas.mount();

    xattr::assert_errno(
        read(mnt.path("tampered.bin")),
        libc::EIO,
        "reading an asset whose sha256 mismatches",
    );
    assert_store_empty(&lazycas, "a sha256 mismatch");
    let temps = lazycas.temp_files();
    assert!(
        temps.is_empty(),
        "a sha256 mismatch left temp files: {temps:?}"
    );
    for needle in [
        "tampered.bin",
        url.as_str(),
        pinned.as_str(),
        blob.sha256.as_str(),
    ] {
        assert!(
            mnt.wait_for_log(needle, Duration::from_secs(5)),
            "the mismatch log line does not name {needle:?} (asset, URL, expected and actual digest); log:\n{}",
            mnt.log()
        );
    }

    xattr::assert_errno(
        read(mnt.path("tampered.bin")),
        libc::EIO,
        "reading the mismatching asset again",
    );
    assert_store_empty(&lazycas, "a second sha256 mismatch");
}

/// A mismatch from the first source discards its bytes and the mirror is tried next, with
/// `Cache-Control: no-cache` (so a proxy cannot hand back the same bad bytes).
#[test]
fn mismatch_falls_back_to_the_mirror() {
    require_fuse!();
    let origin = Nginx::start();
    let good = origin.put_random("mirror/good.bin", 2 * MIB);
    let bad = origin.put_random("primary/bad.bin", 2 * MIB);
    let lazycas = node(vec![Asset::file(
        "asset.bin",
        &origin.url_of(&bad),
        &good.sha256,
    )
    .mirror(&origin.url_of(&good))]);
    let mnt = lazycas.mount();

    assert_reads(mnt.path("asset.bin"), &good.bytes);
    let log = origin.log();
    assert!(
        log.count(&bad.uri()) >= 1,
        "the primary URL was not tried first:\n{log}"
    );
    assert!(
        log.count(&good.uri()) >= 1,
        "the mirror was not tried:\n{log}"
    );
    let retried_fresh = log
        .for_uri(&good.uri())
        .iter()
        .all(|r| r.cache_control.as_deref() == Some("no-cache"));
    assert!(
        retried_fresh,
        "after a mismatch the next source must be asked with Cache-Control: no-cache:\n{log}"
    );
    assert_eq!(
        lazycas.stored_blobs(),
        vec![lazycas.blob_path(&good.sha256)],
        "only the verified blob is stored"
    );
}

// ---------------------------------------------------------------------------------------------
// Storing once, downloading once

/// Two names (two URLs) with one digest: one stored blob and one download.
#[test]
fn two_names_one_digest_store_one_blob() {
    require_fuse!();
    let origin = Nginx::start();
    let first = origin.put_random("a/blob.bin", 3 * MIB + 5);
    let second = origin.put("b/same-bytes.bin", first.bytes.clone());
    let lazycas = node(vec![
        Asset::file("first", &origin.url_of(&first), &first.sha256),
        Asset::file("other/second", &origin.url_of(&second), &second.sha256),
    ]);
    let mnt = lazycas.mount();

    assert_reads(mnt.path("first"), &first.bytes);
    assert_reads(mnt.path("other/second"), &first.bytes);
    assert_eq!(
        lazycas.stored_blobs(),
        vec![lazycas.blob_path(&first.sha256)],
        "one stored blob for one digest"
    );
    let log = origin.log();
    assert_eq!(
        log.total_bytes(),
        first.len(),
        "one download for two names with one digest:\n{log}"
    );
}

/// Eight concurrent readers of a missing blob cause one download (single flight): the origin
/// serves exactly the blob's size in body bytes, and every reader gets the right bytes.
#[test]
fn eight_concurrent_readers_cause_one_download() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("shared.bin", 16 * MIB + 1);
    let lazycas = node(vec![Asset::file(
        "shared.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    let paths = vec![mnt.path("shared.bin"); 8];
    let results = concurrent_reads(paths);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(bytes) => assert_same_bytes(bytes, &blob.bytes, &format!("reader {i}")),
            Err(e) => panic!("reader {i} failed: {e}"),
        }
    }
    let log = origin.log();
    assert_eq!(
        log.bytes_served(&blob.uri()),
        blob.len(),
        "8 concurrent readers must cause one download:\n{log}"
    );
    assert_eq!(lazycas.stored_blobs().len(), 1);
}

/// Single flight is per content, not per name: 4 readers of each of two names with one digest,
/// all at once, still cost one download.
#[test]
fn concurrent_readers_of_two_names_with_one_digest_cause_one_download() {
    require_fuse!();
    let origin = Nginx::start();
    let a = origin.put_random("x/a.bin", 8 * MIB);
    let b = origin.put("y/b.bin", a.bytes.clone());
    let lazycas = node(vec![
        Asset::file("a", &origin.url_of(&a), &a.sha256),
        Asset::file("b", &origin.url_of(&b), &b.sha256),
    ]);
    let mnt = lazycas.mount();

    let paths = [mnt.path("a"), mnt.path("b")]
        .into_iter()
        .cycle()
        .take(8)
        .collect();
    for (i, r) in concurrent_reads(paths).iter().enumerate() {
        match r {
            Ok(bytes) => assert_same_bytes(bytes, &a.bytes, &format!("reader {i}")),
            Err(e) => panic!("reader {i} failed: {e}"),
        }
    }
    let log = origin.log();
    assert_eq!(
        log.total_bytes(),
        a.len(),
        "concurrent readers of one digest under two names:\n{log}"
    );
    assert_eq!(lazycas.stored_blobs().len(), 1);
}

/// Opens and reads every path on its own thread, all released at once.
fn concurrent_reads(paths: Vec<PathBuf>) -> Vec<io::Result<Vec<u8>>> {
    with_deadline(READ_DEADLINE, "concurrent readers", move || {
        let barrier = Arc::new(Barrier::new(paths.len()));
        let handles: Vec<_> = paths
            .into_iter()
            .map(|p| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut f = fs::File::open(&p)?;
                    let mut buf = Vec::new();
                    f.read_to_end(&mut buf)?;
                    Ok(buf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    })
}

/// A large blob is fetched as parallel Range requests of `fetch_chunk_size`, together exactly
/// one copy of the blob.
#[test]
fn large_blob_is_fetched_in_range_requests() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("big.bin", 8 * MIB);
    let lazycas = node(vec![Asset::file(
        "big.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    assert_reads(mnt.path("big.bin"), &blob.bytes);
    let log = origin.log();
    let ranged = log
        .for_uri(&blob.uri())
        .iter()
        .filter(|r| r.status == 206 && r.range.is_some())
        .count();
    assert!(
        ranged >= 8,
        "8 MiB with fetch_chunk_size = 1M should take >= 8 range requests, saw {ranged}:\n{log}"
    );
    assert_eq!(
        log.bytes_served(&blob.uri()),
        blob.len(),
        "the ranges add up to one copy:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failing origins

/// A dead origin (connections accepted, never answered) fails the read with EIO within
/// `dead_origin_bound(timeout_secs)`; so does a refused connection. The daemon keeps serving.
#[test]
fn dead_origin_fails_the_read_within_the_deadline() {
    require_fuse!();
    let dead = DeadOrigin::start();
    let origin = Nginx::start();
    let alive = origin.put_random("alive.bin", 100_000);
    let sha = sha256_hex(b"never served");
    let lazycas = Lazycas::with_config(Config {
        timeout_secs: Some(DEAD_ORIGIN_TIMEOUT_SECS),
        assets: vec![
            Asset::file("stalled.bin", &dead.url("stalled.bin"), &sha),
            Asset::file(
                "refused.bin",
                &closed_port_url("refused.bin"),
                &sha256_hex(b"refused"),
            ),
            Asset::file("alive.bin", &origin.url_of(&alive), &alive.sha256),
        ],
        ..Config::default()
    });
    let mut mnt = lazycas.mount();
    let bound = dead_origin_bound(DEAD_ORIGIN_TIMEOUT_SECS);

    let start = Instant::now();
    let result = read(mnt.path("stalled.bin"));
    assert_eio_within(
        result,
        start.elapsed(),
        bound,
        "reading from an origin that never answers",
    );
    assert!(
        dead.connections() >= 1,
        "the daemon never connected to the dead origin"
    );

    let start = Instant::now();
    let result = read(mnt.path("refused.bin"));
    assert_eio_within(
        result,
        start.elapsed(),
        bound,
        "reading from a refused port",
    );

    assert!(
        mnt.is_running(),
        "the daemon died after a dead origin:\n{}",
        mnt.log()
    );
    assert_reads(mnt.path("alive.bin"), &alive.bytes);
    assert_store_empty_of(&lazycas, &sha);
}

fn assert_store_empty_of(node: &Lazycas, hex: &str) {
    assert!(
        !node.blob_path(hex).exists(),
        "a blob was stored for content never served"
    );
}

/// An origin that ignores Range (answers 200 with the whole file) still works.
#[test]
fn no_range_origin_works() {
    require_fuse!();
    let origin = NoRangeServer::start();
    let blob = origin.put_random("norange.bin", 4 * MIB + 9);
    let lazycas = node(vec![Asset::file(
        "norange.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    match read(mnt.path("norange.bin")) {
        Ok(got) => assert_same_bytes(&got, &blob.bytes, "no-Range origin"),
        Err(e) => panic!(
            "read from a no-Range origin failed: {e}\norigin log:\n{}\norigin stderr:\n{}",
            origin.log(),
            origin.stderr()
        ),
    }
    assert_eq!(
        lazycas.stored_blobs(),
        vec![lazycas.blob_path(&blob.sha256)]
    );
}

// ---------------------------------------------------------------------------------------------
// The catalog at run time

/// `lazycas add` on a running mount shows up at once (no restart, no wait), `lazycas ls` lists it,
/// and `lazycas rm` takes it away again.
#[test]
fn add_on_a_running_mount_shows_up_at_once() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("later.bin", 1_500_000);
    let lazycas = node(Vec::new());
    let mnt = lazycas.mount();

    xattr::assert_errno(
        fs::metadata(mnt.path("added/later.bin")),
        libc::ENOENT,
        "stat before add",
    );
    lazycas
        .cli(&[
            "add",
            "added/later.bin",
            &origin.url_of(&blob),
            "--sha256",
            &blob.sha256,
        ])
        .assert_success();

    assert!(
        list_dir(&mnt.mountpoint).contains(&"added".to_string()),
        "the added name is not listed at once"
    );
    assert_eq!(list_dir(mnt.path("added")), vec!["later.bin".to_string()]);
    assert_eq!(mode_of(&mnt.path("added/later.bin")) & 0o7777, 0o444);
    assert_reads(mnt.path("added/later.bin"), &blob.bytes);
    let ls = lazycas.cli(&["ls"]);
    ls.assert_success();
    assert!(
        ls.stdout.contains("added/later.bin"),
        "`lazycas ls` does not list the added entry:\n{ls}"
    );

    lazycas.cli(&["rm", "added/later.bin"]).assert_success();
    assert!(
        !list_dir(&mnt.mountpoint).contains(&"added".to_string()),
        "the removed name is still listed"
    );
    // The kernel may keep a positive dentry for its entry timeout; allow that much.
    let gone = wait_until(Duration::from_secs(2), || {
        fs::metadata(mnt.path("added/later.bin")).is_err()
    });
    assert!(gone, "the removed name still resolves after 2 s");
    let ls = lazycas.cli(&["ls"]);
    ls.assert_success();
    assert!(
        !ls.stdout.contains("added/later.bin"),
        "`lazycas ls` still lists the removed entry:\n{ls}"
    );
}

/// A restarted daemon serves what it cached with the origin stopped; uncached content fails with
/// EIO in bounded time instead of hanging.
#[test]
fn restarted_daemon_serves_its_cache_with_the_origin_stopped() {
    require_fuse!();
    let mut origin = Nginx::start();
    let cached = origin.put_random("cached.bin", 3 * MIB + 1);
    let uncached = origin.put_random("uncached.bin", 200_000);
    let lazycas = Lazycas::with_config(Config {
        timeout_secs: Some(3),
        assets: vec![
            Asset::file("cached.bin", &origin.url_of(&cached), &cached.sha256),
            Asset::file("uncached.bin", &origin.url_of(&uncached), &uncached.sha256),
        ],
        ..Config::default()
    });

    let mut first = lazycas.mount();
    assert_reads(first.path("cached.bin"), &cached.bytes);
    first.stop();
    origin.stop();

    let second = lazycas.mount();
    assert_reads(second.path("cached.bin"), &cached.bytes);
    assert_reads(
        second.path(&format!("sha256/{}", cached.sha256)),
        &cached.bytes,
    );
    let start = Instant::now();
    let result = read(second.path("uncached.bin"));
    assert_eio_within(
        result,
        start.elapsed(),
        dead_origin_bound(3),
        "reading uncached content with the origin down",
    );
}

/// `lazycas pull NAME` prefetches into the store (one download), and `lazycas status` runs.
#[test]
fn pull_prefetches_into_the_store() {
    let origin = Nginx::start();
    let blob = origin.put_random("pulled.bin", 2 * MIB);
    let lazycas = node(vec![Asset::file(
        "pulled.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);

    lazycas.cli(&["pull", "pulled.bin"]).assert_success();
    assert_eq!(
        lazycas.stored_blobs(),
        vec![lazycas.blob_path(&blob.sha256)]
    );
    assert_eq!(sha256_file(&lazycas.blob_path(&blob.sha256)), blob.sha256);
    assert_eq!(origin.log().bytes_served(&blob.uri()), blob.len());
    lazycas.cli(&["status"]).assert_success();
}

// ---------------------------------------------------------------------------------------------
// What the mount looks like

/// Every catalog file carries `user.lazycas.digest`, `user.lazycas.source` and
/// `user.lazycas.cached` (resident/size: 0 before the read, all of it after); reading the
/// xattrs fetches nothing.
#[test]
fn xattrs_describe_each_asset() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("x.bin", MIB + 77);
    let url = origin.url_of(&blob);
    let lazycas = node(vec![Asset::file("dir/x.bin", &url, &blob.sha256)]);
    let mnt = lazycas.mount();
    let file = mnt.path("dir/x.bin");

    xattr::assert_lists(
        &file,
        &[
            "user.lazycas.digest",
            "user.lazycas.source",
            "user.lazycas.cached",
        ],
    );
    let digest = xattr::get_string(&file, "user.lazycas.digest").expect("getxattr digest");
    assert!(
        digest == blob.sha256 || digest == format!("sha256:{}", blob.sha256),
        "user.lazycas.digest is {digest:?}, expected the pinned sha256 {}",
        blob.sha256
    );
    assert_eq!(
        xattr::get_string(&file, "user.lazycas.source").expect("getxattr source"),
        url
    );
    assert_eq!(
        cached_xattr(&file).0,
        0,
        "nothing is resident before the first read"
    );
    assert_no_requests(&origin, "reading xattrs");

    assert_reads(file.clone(), &blob.bytes);
    assert_eq!(
        cached_xattr(&file),
        (blob.len(), Some(blob.len())),
        "all of the blob is resident after the read"
    );
}

/// Writes of every kind fail with EROFS.
#[test]
fn writes_fail_with_erofs() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("ro.bin", 10_000);
    let lazycas = node(vec![Asset::file(
        "dir/ro.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();
    let file = mnt.path("dir/ro.bin");
    let erofs = |r: io::Result<()>, what: &str| xattr::assert_errno(r, libc::EROFS, what);

    erofs(
        fs::OpenOptions::new().write(true).open(&file).map(drop),
        "open for writing",
    );
    erofs(
        fs::OpenOptions::new().append(true).open(&file).map(drop),
        "open for appending",
    );
    erofs(
        fs::File::create(mnt.path("dir/new.bin")).map(drop),
        "create a file",
    );
    erofs(fs::create_dir(mnt.path("newdir")), "mkdir");
    erofs(fs::remove_file(&file), "unlink");
    erofs(fs::remove_dir(mnt.path("dir")), "rmdir");
    erofs(fs::rename(&file, mnt.path("dir/renamed.bin")), "rename");
    erofs(
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)),
        "chmod",
    );
    erofs(
        std::os::unix::fs::symlink("ro.bin", mnt.path("dir/link")),
        "symlink",
    );
    erofs(xattr::set(&file, "user.test", b"x"), "setxattr");
    erofs(
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .map(drop),
        "truncate",
    );
    // Reading still works afterwards.
    assert_reads(file, &blob.bytes);
}

/// Catalog files are 0444 regular files, directories (the root, name prefixes, `sha256/`) 0555.
#[test]
fn modes_are_0444_for_files_and_0555_for_dirs() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("m.bin", 4096);
    let lazycas = node(vec![Asset::file(
        "a/b/m.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    for dir in ["", "a", "a/b", "sha256"] {
        let p = mnt.path(dir);
        assert!(
            fs::metadata(&p).expect("stat").is_dir(),
            "{dir:?} is not a directory"
        );
        assert_eq!(mode_of(&p) & 0o7777, 0o555, "mode of directory {dir:?}");
    }
    for file in ["a/b/m.bin".to_string(), format!("sha256/{}", blob.sha256)] {
        let p = mnt.path(&file);
        assert!(
            fs::metadata(&p).expect("stat").is_file(),
            "{file} is not a regular file"
        );
        assert_eq!(mode_of(&p) & 0o7777, 0o444, "mode of {file}");
    }
    assert_no_requests(&origin, "stat of files and directories");
}

/// `sha256/<hex>` lists every pinned digest before any fetch, and after the read serves the blob
/// from the store without another download.
#[test]
fn sha256_dir_shows_the_blob() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("s.bin", 2 * MIB + 1);
    let lazycas = node(vec![Asset::file(
        "s.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mnt = lazycas.mount();

    assert!(
        list_dir(mnt.path("sha256")).contains(&blob.sha256),
        "sha256/ does not list the pinned digest"
    );
    assert_no_requests(&origin, "listing sha256/");
    assert_reads(mnt.path("s.bin"), &blob.bytes);
    assert!(list_dir(mnt.path("sha256")).contains(&blob.sha256));
    let by_digest = mnt.path(&format!("sha256/{}", blob.sha256));
    assert_reads(by_digest.clone(), &blob.bytes);
    assert_eq!(fs::metadata(&by_digest).expect("stat").len(), blob.len());
    assert_eq!(
        origin.log().total_bytes(),
        blob.len(),
        "sha256/<hex> is served from the store"
    );
}

// ---------------------------------------------------------------------------------------------
// Lifetime

/// SIGTERM unmounts cleanly: exit status 0, no mount left, mount point usable.
#[test]
fn sigterm_unmounts_cleanly() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("t.bin", 300_000);
    let lazycas = node(vec![Asset::file(
        "t.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mut mnt = lazycas.mount();
    assert_reads(mnt.path("t.bin"), &blob.bytes);
    mnt.stop();
    assert!(
        list_dir(&lazycas.mountpoint).is_empty(),
        "the mount point is not the empty directory again"
    );
}

/// SIGINT does the same.
#[test]
fn sigint_unmounts_cleanly() {
    require_fuse!();
    let lazycas = node(Vec::new());
    let mut mnt = lazycas.mount();
    mnt.stop_with(libc::SIGINT);
}

/// SIGTERM while a reader holds a file open still leaves no stale mount (a service stop while a
/// job runs); the reader gets errors, not a hang.
#[test]
fn sigterm_with_an_open_file_leaves_no_stale_mount() {
    require_fuse!();
    let origin = Nginx::start();
    let blob = origin.put_random("held.bin", 300_000);
    let lazycas = node(vec![Asset::file(
        "held.bin",
        &origin.url_of(&blob),
        &blob.sha256,
    )]);
    let mut mnt = lazycas.mount();
    let held = fs::File::open(mnt.path("held.bin")).expect("open");
    let mut first = [0u8; 10];
    held.read_at(&mut first, 0).expect("read while mounted");
    mnt.stop();
    let mut buf = [0u8; 10];
    let _ = with_deadline(
        Duration::from_secs(10),
        "read from a file of a stopped mount",
        move || held.read_at(&mut buf, 0),
    );
}

// ---------------------------------------------------------------------------------------------
// Config errors

/// An unknown key or a bad value is a usage error: exit code 2, an error naming the key, and no
/// mount.
#[test]
fn config_errors_exit_2_naming_the_key() {
    let mut lazycas = Lazycas::new();
    for (extra, key) in [
        ("bogus_key = 1\n", "bogus_key"),
        ("timeout_secs = \"soon\"\n", "timeout_secs"),
    ] {
        lazycas.config.timeout_secs = None;
        lazycas.config.extra = extra.into();
        lazycas.write_config();
        let out = lazycas.cli(&["ls"]);
        out.assert_code(2);
        assert!(
            out.stderr.contains(key),
            "the error does not name {key}:\n{out}"
        );

        let mut daemon = lazycas.spawn(&[]);
        let status = daemon.wait_exit(Duration::from_secs(20));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "`lazycas mount` with a bad config:\n{}",
            daemon.log()
        );
        assert!(
            daemon.log().contains(key),
            "`lazycas mount` does not name {key}:\n{}",
            daemon.log()
        );
        assert!(
            !is_mounted(&lazycas.mountpoint),
            "mounted despite a bad config"
        );
    }
}
