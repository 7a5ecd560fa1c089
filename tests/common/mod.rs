//! The one shared harness for lazycas's integration tests: real processes, real FUSE.
//!
//! What it starts, each a value whose `Drop` stops exactly the process it started, by PID
//! (SIGTERM, a grace period, then SIGKILL), and unmounts what it mounted, also when a test panics:
//! - `Nginx`: the origin, on a free 127.0.0.1 port, with Range and a parseable access log.
//! - `NoRangeServer`: an origin that ignores `Range`.
//! - `DeadOrigin`: accepts connections and never answers; `closed_port_url`: refuses them.
//! - `Squid`: a site proxy.
//! - `Registry`: Debian's docker-registry, open or behind `auth: token` with a
//!   `LoopbackTokenServer`; `images` builds test images with umoci and pushes them with skopeo.
//! - `Lazycas` (a node: store, config, mount point) and `Daemon` (its running `lazycas mount`).
//!
//! Everything lives in per-test tempdirs and ephemeral ports, so tests run in parallel.
//! Reading and listing through a mount with a deadline, and comparing bytes, are in `reads`.
//!
//! Tests that need FUSE start with `require_fuse!()` (or `require_fuse!(why_not)` when they need
//! more than FUSE, such as root), which skips them (with a message) where they cannot run,
//! unless `LAZYCAS_TESTS_REQUIRE_FUSE=1` (set by `.ci/run` and the `bench/` scripts that run
//! tests) makes that a failure. It is the only way a FUSE test may decline to run.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod content;
pub mod dead;
pub mod hostile;
pub mod hostile_server;
pub mod images;
pub mod lazycas;
pub mod mounts;
pub mod nginx;
pub mod norange;
pub mod nspawn;
pub mod oci_images;
pub mod origin;
pub mod process;
pub mod publishers;
pub mod reads;
pub mod registry;
pub mod scripted_registry;
pub mod squid;
pub mod token_server;
pub mod xattr;

pub use content::{random_bytes, sha256_file, sha256_hex, unique_seed, Blob};
pub use dead::{closed_port_url, DeadOrigin};
pub use lazycas::{files_under, Asset, Config, Daemon, Lazycas};
pub use mounts::{fuse_unavailable, is_mounted, unmount};
pub use nginx::Nginx;
pub use norange::NoRangeServer;
pub use origin::{AccessLog, Origin, Request};
pub use process::{is_root, run, wait_until, with_deadline, Output};
pub use reads::{
    assert_reads, assert_same_bytes, list_dir, list_dir_within, read, read_within, READ_DEADLINE,
};
pub use squid::Squid;

/// The variable that turns a FUSE test that cannot run from a skip into a failure.
pub const REQUIRE_FUSE_VAR: &str = "LAZYCAS_TESTS_REQUIRE_FUSE";

/// Decides for `require_fuse!`: None if the test can run; else, with `LAZYCAS_TESTS_REQUIRE_FUSE=1`,
/// panics with `reason`; else returns `reason` for the test to print and return.
#[track_caller]
pub fn fuse_test_blocked(reason: Option<String>) -> Option<String> {
    let reason = reason?;
    if std::env::var_os(REQUIRE_FUSE_VAR).is_some_and(|v| v == "1") {
        panic!("FUSE tests required ({REQUIRE_FUSE_VAR}=1) but this one cannot run: {reason}");
    }
    Some(reason)
}

/// Returns from the test, after printing `SKIPPED: <why>`, where it cannot run: FUSE is
/// unavailable, or (`require_fuse!(why_not)`) the test's own precondition `why_not`, an
/// `Option<String>` evaluated only where FUSE is available, says why not. With
/// `LAZYCAS_TESTS_REQUIRE_FUSE=1` it panics instead, so CI (and a bench run) cannot pass by
/// skipping.
macro_rules! require_fuse {
    () => {
        $crate::common::require_fuse!(::std::option::Option::<String>::None)
    };
    ($why_not:expr) => {
        if let Some(reason) = $crate::common::fuse_test_blocked(
            $crate::common::fuse_unavailable().or_else(|| $why_not),
        ) {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}
pub(crate) use require_fuse;
