//! Harness for the archive acceptance tests (`tests/archive_mount.rs`, issue 3) and the hostile
//! archives (`tests/hostile_archives.rs`, issue 13), on top of the shared one in `tests/common/`:
//!
//! - [`fixtures`]: the generated trees of the suite (GNU, PAX, ustar, sparse, links, names,
//!   20,000 files).
//! - [`source`]: source trees with exact attributes (modes, owners, mtimes with nanoseconds,
//!   symlinks, hard links, sparse files, fifos, devices), and test content.
//! - [`pack`]: GNU tar, gzip and pigz invocations that turn a tree into an archive, GNU tar's own
//!   extraction (the reference), and the 200 MiB fixture, built once and cached.
//! - [`raw`]: hand-written tar streams, for what GNU tar will not write (hostile headers, `..`
//!   and absolute names, entries behind symlinks).
//! - [`compare`]: the mounted tree against GNU tar's extraction: `diff -r --no-dereference` plus
//!   a `find -printf` listing.
//! - [`serve`]: archives put in an nginx docroot, a lazycas node whose catalog names them, mounted.
#![allow(dead_code)]

pub mod compare;
pub mod fixtures;
pub mod pack;
pub mod raw;
pub mod serve;
pub mod source;
