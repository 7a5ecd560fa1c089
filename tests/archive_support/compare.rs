//! The mounted tree against GNU tar's extraction of the same archive.
//!
//! Two checks, both with deadlines so a hung mount fails the test instead of blocking it:
//! - `diff -r --no-dereference`: every name on both sides, file bytes, symlink targets. Special
//!   files are named `*.special` in fixtures and excluded (diff reports two fifos as different
//!   and would open device nodes); the listing covers them.
//! - a `find -printf` listing of every node: name, type, mode (with setuid/setgid/sticky), size,
//!   link target, mtime (`%T@`: seconds and nanoseconds, so PAX fractions count), uid, gid and,
//!   the link count (for directories only where the extraction's file system counts
//!   subdirectories, as ext4, xfs and tmpfs do). Directory sizes (file-system specific; the mount
//!   shows 0) are left out. Listings are written with `-fprintf` and compared
//!   as bytes, so non-UTF-8 names are compared exactly.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{run, with_deadline};

/// Upper bound for `diff -r` or `find` over one mounted archive (the 200 MiB one included).
pub const WALK_TIMEOUT: Duration = Duration::from_secs(600);

// NUL-terminated records: names may hold newlines.
const NON_DIR_FORMAT: &str = "%P\\t%y\\t%m\\t%s\\t%l\\t%T@\\t%U\\t%G\\t%n\\0";
const DIR_FORMAT: &str = "%P\\t%y\\t%m\\t%T@\\t%U\\t%G\\0";
/// Directories with their link count, where the extraction's file system counts
/// subdirectories the classic way (2 + subdirectories, as the mount does; btrfs says 1).
const DIR_FORMAT_NLINK: &str = "%P\\t%y\\t%m\\t%T@\\t%U\\t%G\\t%n\\0";

/// Opens the archive behind `mounted` (by listing it). The daemon tells the kernel to drop the
/// root's placeholder attributes before the listing returns, so `stat` of the root shows the
/// archive's `./` entry at once.
pub fn open_archive_root(mounted: &Path) {
    let p = mounted.to_path_buf();
    let what = format!("listing {}", p.display());
    with_deadline(WALK_TIMEOUT, &what, move || {
        fs::read_dir(&p)
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
    });
}

/// Asserts that `mounted` shows exactly what GNU tar extracted to `extracted`; returns the
/// number of nodes compared.
#[track_caller]
pub fn assert_same_tree(mounted: &Path, extracted: &Path) -> usize {
    open_archive_root(mounted);
    assert_diff_clean(mounted, extracted);
    let work = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    let dir_format = if counts_subdirs(extracted) {
        DIR_FORMAT_NLINK
    } else {
        DIR_FORMAT
    };
    for (kind, format) in [("! -type d", NON_DIR_FORMAT), ("-type d", dir_format)] {
        let got = listing(mounted, kind, format, &work.path().join("mounted"));
        let want = listing(extracted, kind, format, &work.path().join("extracted"));
        assert_same_lines(&got, &want, mounted, extracted);
        n += want.len();
    }
    assert_same_devices(mounted, extracted);
    n
}

/// Whether a directory next to `dir` with one subdirectory has 3 links.
fn counts_subdirs(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(dir);
    let probe = tempfile::tempdir_in(parent).expect("probe dir");
    fs::create_dir(probe.path().join("sub")).expect("mkdir probe/sub");
    fs::metadata(probe.path())
        .map(|m| m.nlink() == 3)
        .unwrap_or(false)
}

#[track_caller]
fn assert_diff_clean(mounted: &Path, extracted: &Path) {
    let mut cmd = Command::new("diff");
    cmd.args(["-r", "--no-dereference", "-x", "*.special"])
        .arg(mounted)
        .arg(extracted);
    let out = run(cmd, WALK_TIMEOUT);
    assert!(
        out.success(),
        "mounted tree {} differs from GNU tar's extraction {}:\n{}{}",
        mounted.display(),
        extracted.display(),
        head(&out.stdout, 60),
        out.stderr
    );
}

/// Sorted lines of `find DIR <kind> -fprintf FILE FORMAT`.
fn listing(dir: &Path, kind: &str, format: &str, file: &Path) -> Vec<Vec<u8>> {
    let mut cmd = Command::new("find");
    cmd.arg(dir)
        .args(kind.split(' '))
        .arg("-fprintf")
        .arg(file)
        .arg(format);
    run(cmd, WALK_TIMEOUT).assert_success();
    let bytes = fs::read(file).expect("read listing");
    let mut lines: Vec<Vec<u8>> = bytes
        .split(|&b| b == 0)
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    lines.sort();
    lines
}

#[track_caller]
fn assert_same_lines(got: &[Vec<u8>], want: &[Vec<u8>], mounted: &Path, extracted: &Path) {
    if got == want {
        return;
    }
    let g: BTreeSet<&Vec<u8>> = got.iter().collect();
    let w: BTreeSet<&Vec<u8>> = want.iter().collect();
    let show = |set: Vec<&&Vec<u8>>| {
        set.iter()
            .take(40)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "listing of {} ({} lines) differs from GNU tar's extraction {} ({} lines)\n\
         (name, type, mode, [size, link target,] mtime, uid, gid[, nlink])\n\
         --- only on the mount ---\n{}\n--- only in the extraction ---\n{}",
        mounted.display(),
        got.len(),
        extracted.display(),
        want.len(),
        show(g.difference(&w).collect()),
        show(w.difference(&g).collect()),
    );
}

/// Device numbers of the device nodes (find cannot print them).
#[track_caller]
fn assert_same_devices(mounted: &Path, extracted: &Path) {
    let mut stack = vec![extracted.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir extraction").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
                continue;
            }
            use std::os::unix::fs::FileTypeExt;
            if !(ft.is_char_device() || ft.is_block_device()) {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(extracted)
                .expect("under extraction")
                .to_path_buf();
            let want = e.metadata().expect("stat").rdev();
            let got = fs::symlink_metadata(mounted.join(&rel))
                .unwrap_or_else(|err| panic!("stat {} on the mount: {err}", rel.display()))
                .rdev();
            assert_eq!(got, want, "device number of {}", rel.display());
        }
    }
}

/// The first `n` lines of `text`.
pub fn head(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}
