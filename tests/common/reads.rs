//! Reading and listing through a mount, each bounded by a deadline so a daemon bug fails the
//! test instead of blocking it, and comparing what came back without printing megabytes. Every
//! test file uses these; none writes its own.

use super::content::sha256_hex;
use super::process::with_deadline;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Upper bound for any single read or listing through the mount that is expected to succeed
/// (a fetch from a loopback origin, or an archive's download and index, included). A hang
/// guard, not a speed measurement.
pub const READ_DEADLINE: Duration = Duration::from_secs(120);

/// Reads a whole file through the mount, failing the test if it blocks for `READ_DEADLINE`.
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    read_within(path, READ_DEADLINE)
}

/// Reads a whole file through the mount, failing the test if it blocks for `deadline`.
#[track_caller]
pub fn read_within(path: impl AsRef<Path>, deadline: Duration) -> io::Result<Vec<u8>> {
    let path = path.as_ref().to_path_buf();
    let what = format!("reading {}", path.display());
    with_deadline(deadline, &what, move || fs::read(&path))
}

/// Reads a file that must read back as `expected` (bytes, or a `Blob`).
#[track_caller]
pub fn assert_reads(path: impl AsRef<Path>, expected: impl AsRef<[u8]>) {
    let path = path.as_ref();
    match read(path) {
        Ok(got) => assert_same_bytes(&got, expected.as_ref(), &path.display().to_string()),
        Err(e) => panic!("reading {} failed: {e}", path.display()),
    }
}

/// Compares byte strings; on a mismatch says the sizes, the hashes and the first difference.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    if got == expected {
        return;
    }
    let first_diff = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "{what}: got {} bytes (sha256 {}), expected {} bytes (sha256 {}); first difference at {first_diff}",
        got.len(),
        sha256_hex(got),
        expected.len(),
        sha256_hex(expected),
    );
}

/// Sorted names in a directory of the mount, failing the test if listing fails or blocks for
/// `READ_DEADLINE`.
#[track_caller]
pub fn list_dir(path: impl AsRef<Path>) -> Vec<String> {
    let path = path.as_ref();
    list_dir_within(path, READ_DEADLINE)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
}

/// Sorted names in a directory of the mount, failing the test if listing blocks for `deadline`.
#[track_caller]
pub fn list_dir_within(path: impl AsRef<Path>, deadline: Duration) -> io::Result<Vec<String>> {
    let path = path.as_ref().to_path_buf();
    let what = format!("listing {}", path.display());
    with_deadline(deadline, &what, move || {
        let mut names = fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<String>>>()?;
        names.sort();
        Ok(names)
    })
}
