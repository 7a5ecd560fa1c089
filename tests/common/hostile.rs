//! The frame every hostile-input test runs in (`tests/hostile_*.rs`): a mounted daemon that
//! also serves one good asset from nginx, and the checks each case ends with: the daemon is
//! still running, the good asset still reads back byte-identical, and the daemon's peak RSS
//! stayed under [`PEAK_RSS_LIMIT`].
//!
//! Outcomes are printed as `hostile case: <what>: <outcome> in <ms> ms` so a run's output is the
//! table of cases; the times are reported, never asserted (reads are bounded by deadlines).

use super::content::Blob;
use super::lazycas::{Asset, Config, Daemon, Lazycas};
use super::nginx::Nginx;
use super::origin::Origin;
use super::process::with_deadline;
use super::reads::assert_reads;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The daemon's peak resident memory must stay below this through every case.
pub const PEAK_RSS_LIMIT: u64 = 300 << 20;
/// Catalog name of the good asset every scene serves.
pub const GOOD: &str = "good.bin";
/// Hang guard for reads expected to fail: well past the scene's network deadline.
pub const FAIL_DEADLINE: Duration = Duration::from_secs(90);

/// A daemon serving the case's assets plus one good asset from nginx.
pub struct Scene {
    // Field order is drop order: the daemon (and its mount) before the node and the origin.
    pub daemon: Daemon,
    pub node: Lazycas,
    pub good: Blob,
    pub nginx: Nginx,
}

impl Scene {
    /// The scene's default config: a 3 s network deadline, 1 MiB range requests.
    pub fn config() -> Config {
        Config {
            timeout_secs: Some(3),
            fetch_chunk_size: Some("1M".into()),
            ..Config::default()
        }
    }

    /// Mounts a daemon with `config` plus the good asset, and reads the good asset once.
    pub fn start(config: Config) -> Scene {
        Scene::start_prepared(config, |_| {})
    }

    /// `start`, calling `prepare` on the node (say, to mount a small store) before mounting.
    pub fn start_prepared(mut config: Config, prepare: impl FnOnce(&Lazycas)) -> Scene {
        let nginx = Nginx::start();
        let good = nginx.put_random("good/good.bin", 300_000);
        config
            .assets
            .push(Asset::file(GOOD, &nginx.url_of(&good), &good.sha256));
        let node = Lazycas::with_config(config);
        prepare(&node);
        let daemon = node.mount();
        let scene = Scene {
            daemon,
            node,
            good,
            nginx,
        };
        assert_reads(scene.path(GOOD), &scene.good);
        scene
    }

    /// `mountpoint/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.daemon.path(rel)
    }

    /// Asserts the daemon's log has a line containing `needle` (the reason an error names).
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        let log = self.daemon.log();
        assert!(
            log.contains(needle),
            "no log line contains {needle:?}; log tail:\n{}",
            super::lazycas::tail(&log, 30)
        );
    }

    /// The end of every case: the daemon runs, the good asset reads back, peak RSS is bounded.
    #[track_caller]
    pub fn assert_healthy(&mut self) {
        assert!(
            self.daemon.is_running(),
            "the daemon died; log:\n{}",
            self.daemon.log()
        );
        // Dropped from the kernel's cache so the read reaches the daemon again.
        let _ = std::fs::metadata(self.path(GOOD));
        assert_reads(self.path(GOOD), &self.good);
        let peak = self.daemon.peak_rss();
        assert!(
            peak < PEAK_RSS_LIMIT,
            "daemon peak RSS {} MiB, limit {} MiB",
            peak >> 20,
            PEAK_RSS_LIMIT >> 20
        );
        eprintln!("hostile case: daemon peak RSS {} MiB", peak >> 20);
    }
}

/// The chunk index `lazycas index` writes for `bytes` (default chunker sizes).
pub fn chunk_index_of(bytes: &[u8]) -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("image");
    std::fs::write(&file, bytes).expect("write image");
    let mut out = file.clone().into_os_string();
    out.push(".lazycas-index");
    Lazycas::new()
        .cli(&["index", file.to_str().expect("utf-8 tempdir")])
        .assert_success();
    std::fs::read(&out).expect("read the chunk index")
}

/// Runs `f` with a hang guard of `deadline`, prints how long it took under `case`, returns its
/// result.
#[track_caller]
pub fn timed<T: Send + 'static>(
    case: &str,
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let started = Instant::now();
    let out = with_deadline(deadline, case, f);
    let took = started.elapsed();
    (out, took)
}

/// Reads `path` expecting the error `errno`, within the hang guard; prints and returns the time.
#[track_caller]
pub fn expect_errno(case: &str, path: &Path, errno: i32) -> Duration {
    let p = path.to_path_buf();
    let (result, took) = timed(case, FAIL_DEADLINE, move || std::fs::read(&p));
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => {
            eprintln!(
                "hostile case: {case}: {} in {} ms",
                errno_name(errno),
                took.as_millis()
            );
            took
        }
        Err(e) => panic!("{case}: expected {}, got {e}", errno_name(errno)),
        Ok(b) => panic!(
            "{case}: expected {}, read {} bytes",
            errno_name(errno),
            b.len()
        ),
    }
}

/// Reads `path` expecting `expected`, within the hang guard; prints and returns the time.
#[track_caller]
pub fn expect_bytes(case: &str, path: &Path, expected: &[u8]) -> Duration {
    let p = path.to_path_buf();
    let (result, took) = timed(case, FAIL_DEADLINE, move || std::fs::read(&p));
    let got: io::Result<Vec<u8>> = result;
    let got = got.unwrap_or_else(|e| panic!("{case}: read failed: {e}"));
    super::reads::assert_same_bytes(&got, expected, case);
    eprintln!(
        "hostile case: {case}: correct read in {} ms",
        took.as_millis()
    );
    took
}

/// `EIO` → "EIO", for messages.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EIO => "EIO",
        libc::ENOENT => "ENOENT",
        libc::ENOTDIR => "ENOTDIR",
        libc::ELOOP => "ELOOP",
        libc::EACCES => "EACCES",
        libc::ENOSPC => "ENOSPC",
        _ => "errno",
    }
}
