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
//! Tests that need FUSE start with `require_fuse!()`, which skips them (with a message) where
//! /dev/fuse is missing, unless `LAZYCAS_TESTS_REQUIRE_FUSE=1` (set by `.ci/run`) makes that a
//! failure.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod content;
pub mod dead;
pub mod images;
pub mod lazycas;
pub mod mounts;
pub mod nginx;
pub mod norange;
pub mod origin;
pub mod process;
pub mod registry;
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
pub use process::{run, wait_until, with_deadline, Output};
pub use squid::Squid;

/// Returns from the test, after saying why, where FUSE tests cannot run. With
/// `LAZYCAS_TESTS_REQUIRE_FUSE=1` it panics instead, so CI cannot pass by skipping.
macro_rules! require_fuse {
    () => {
        if let Some(reason) = $crate::common::fuse_unavailable() {
            if std::env::var_os("LAZYCAS_TESTS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
                panic!("FUSE tests required but cannot run: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}
pub(crate) use require_fuse;
