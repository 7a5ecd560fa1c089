//! Real container images for tests: a tree of real files (copied from the system's Python
//! standard library, /usr/share/doc, then /usr/lib/x86_64-linux-gnu and /usr/share, up to a
//! byte budget) plus random bytes, packed with `mksquashfs`, and wrapped in a SIF with `siftool`
//! as its primary system partition.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::content::random_bytes;
use super::process::{require_program, run};

/// How long mksquashfs / siftool may take on a loaded machine.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// Directories of real files the trees are filled from, in order of preference.
fn real_file_sources() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python3."))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.push(PathBuf::from("/usr/share/doc"));
    // For trees of a few hundred MiB (the range-lazy tests' image).
    out.push(PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    out.push(PathBuf::from("/usr/share"));
    out
}

/// Copies regular files under `src` into `dest` (same relative paths), in sorted order, until
/// `budget` bytes were copied; returns the bytes copied. Unreadable files are skipped.
pub fn copy_real_files(src: &Path, dest: &Path, budget: u64) -> u64 {
    let mut copied = 0;
    copy_tree(src, dest, budget, &mut copied);
    copied
}

fn copy_tree(src: &Path, dest: &Path, budget: u64, copied: &mut u64) {
    let Ok(entries) = std::fs::read_dir(src) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if *copied >= budget {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let Some(name) = path.file_name() else {
            continue;
        };
        let target = dest.join(name);
        if meta.is_dir() && name != "__pycache__" {
            copy_tree(&path, &target, budget, copied);
        } else if meta.is_file() {
            std::fs::create_dir_all(dest).expect("create tree dir");
            if let Ok(n) = std::fs::copy(&path, &target) {
                *copied += n;
            }
        }
    }
}

/// Fills `dest` with `real` bytes of real files (from several system directories) and one
/// `random.bin` of `random` pseudo-random bytes from `seed`.
pub fn make_tree(dest: &Path, real: u64, random: usize, seed: u64) {
    let mut copied = 0;
    for src in real_file_sources() {
        let name = src
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('/', "_");
        copied += copy_real_files(&src, &dest.join(name), real - copied);
        if copied >= real {
            break;
        }
    }
    assert!(
        copied >= real / 2,
        "found only {copied} bytes of real files to build a test image from"
    );
    std::fs::create_dir_all(dest).expect("tree dir");
    std::fs::write(dest.join("random.bin"), random_bytes(random, seed)).expect("random.bin");
}

/// Packs `tree` into the squashfs image `out` (gzip, 128 KiB blocks, mksquashfs's defaults).
pub fn mksquashfs(tree: &Path, out: &Path) {
    let tool = require_program("mksquashfs", "squashfs-tools");
    let mut cmd = Command::new(tool);
    cmd.arg(tree)
        .arg(out)
        .args(["-noappend", "-no-progress", "-quiet", "-processors", "2"]);
    run(cmd, TOOL_TIMEOUT).assert_success();
}

/// Wraps the squashfs image `squashfs` in a new SIF `out` as its primary system partition.
pub fn sif_around(squashfs: &Path, out: &Path) {
    let tool = require_program("siftool", "siftool");
    let mut new = Command::new(&tool);
    new.arg("new").arg(out);
    run(new, TOOL_TIMEOUT).assert_success();
    let mut add = Command::new(&tool);
    // datatype 4 = partition, parttype 2 = primary system, partfs 1 = squashfs, partarch 2 = amd64.
    add.arg("add").arg(out).arg(squashfs).args([
        "--datatype",
        "4",
        "--parttype",
        "2",
        "--partfs",
        "1",
        "--partarch",
        "2",
    ]);
    run(add, TOOL_TIMEOUT).assert_success();
}
