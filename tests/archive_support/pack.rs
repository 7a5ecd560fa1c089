//! Archives made the way publishers make them (GNU tar, gzip, pigz, concatenated gzip members),
//! GNU tar's own extraction (the reference every mounted tree is compared with), and the 200 MiB
//! fixture, built once and cached under cargo's target tmp dir across runs.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::source::{mixed_bytes, text_bytes, Meta, SourceTree};
use crate::common::{run, Output};

/// Upper bound for one tar, gzip or pigz run (the 200 MiB fixture included).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// The mtime most fixtures use: 2023-11-14.
pub const T0: i64 = 1_700_000_000;

/// `tar --sort=name ARGS -cf OUT -C SRC .`: the whole tree, with a `./` entry for the root.
#[track_caller]
pub fn tar_create(src: &Path, out: &Path, args: &[&str]) {
    let mut cmd = Command::new("tar");
    cmd.arg("--sort=name")
        .args(args)
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(src)
        .arg(".");
    run(cmd, TOOL_TIMEOUT).assert_success();
}

/// Runs `cmd` with stdout going to `out`, killing it (by PID) after `TOOL_TIMEOUT`.
#[track_caller]
fn run_into(mut cmd: Command, out: &Path) {
    let what = format!("{cmd:?}");
    let file = fs::File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let Some(status) = crate::common::process::wait_or_kill(&mut child, TOOL_TIMEOUT) else {
        panic!("{what} did not finish within {TOOL_TIMEOUT:?}");
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{what} failed ({status}): {err}");
}

/// `gzip -n -6 -c IN > OUT`: one gzip member.
#[track_caller]
pub fn gzip(input: &Path, out: &Path) {
    let mut cmd = Command::new("gzip");
    cmd.args(["-n", "-6", "-c"]).arg(input);
    run_into(cmd, out);
}

/// `pigz -n -p 2 [EXTRA] -c IN > OUT` (`-i` for independent blocks, `-b` for the block size).
#[track_caller]
pub fn pigz(input: &Path, out: &Path, extra: &[&str]) {
    let pigz = crate::common::process::require_program("pigz", "pigz");
    let mut cmd = Command::new(pigz);
    cmd.args(["-n", "-p", "2"]).args(extra).arg("-c").arg(input);
    run_into(cmd, out);
}

/// The tar stream at `input` cut at the byte offsets `cuts`, each piece compressed as its own
/// gzip member, the members concatenated (`cat a.gz b.gz ...`). Cuts need not fall on tar
/// block boundaries: `gzip -d` and `tar -xzf` see one stream.
pub fn gzip_members(input: &Path, out: &Path, cuts: &[u64]) {
    let data = fs::read(input).unwrap_or_else(|e| panic!("read {}: {e}", input.display()));
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c as usize).collect();
    bounds.insert(0, 0);
    bounds.push(data.len());
    let mut file = fs::File::create(out).expect("create concatenated archive");
    for w in bounds.windows(2) {
        assert!(
            w[0] <= w[1] && w[1] <= data.len(),
            "bad cuts {cuts:?} for {} bytes",
            data.len()
        );
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
        enc.write_all(&data[w[0]..w[1]]).expect("gzip");
        file.write_all(&enc.finish().expect("gzip"))
            .expect("write member");
    }
}

/// `tar -xf ARCHIVE -C DEST --numeric-owner EXTRA...` as root (GNU tar detects the compression):
/// the reference tree. `--numeric-owner` because lazycas shows numeric ids only (it does not
/// map uname/gname to local users, see `archive` module doc). Returns tar's output, for archives
/// GNU tar itself complains about.
pub fn extract(archive: &Path, dest: &Path, extra: &[&str]) -> Output {
    fs::create_dir_all(dest).expect("create extraction dir");
    let mut cmd = Command::new("tar");
    cmd.arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .arg("--numeric-owner")
        .args(extra);
    run(cmd, TOOL_TIMEOUT)
}

/// `extract`, which must succeed.
#[track_caller]
pub fn extract_ok(archive: &Path, dest: &Path, extra: &[&str]) {
    extract(archive, dest, extra).assert_success();
}

/// Size of the big member of [`big_fixture`].
pub const BIG_MEMBER: u64 = 200 << 20;

/// A GNU-format, pigz-compressed archive holding `before.txt`, `big/member.bin` (200 MiB of
/// mixed random and text data) and ten small files after it in `after/`. Built on first use in
/// this process, or reused from an earlier run (it is deterministic), under
/// `$CARGO_TARGET_TMPDIR`.
pub fn big_fixture() -> &'static Path {
    static BIG: OnceLock<PathBuf> = OnceLock::new();
    BIG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("archive-mount-fixtures");
        fs::create_dir_all(&dir).expect("create fixture cache dir");
        let path = dir.join("big-v1.tar.gz");
        if path.exists() {
            return path;
        }
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("big-build-")
            .tempdir_in(&dir)
            .expect("tempdir");
        let mut tree = SourceTree::new(&work.path().join("src"), Meta::new(0o755, T0));
        tree.file("before.txt", &text_bytes(10_000, 1), Meta::new(0o644, T0));
        tree.dir("big", Meta::new(0o755, T0 + 1));
        let pieces = (0..BIG_MEMBER / (8 << 20)).map(|i| mixed_bytes(8 << 20, 0xB16 + i * 1000));
        tree.file_from_pieces(
            "big/member.bin",
            pieces,
            Meta::new(0o640, T0 + 2).owner(1000, 1000),
        );
        tree.dir("after", Meta::new(0o755, T0 + 3));
        for i in 0..10u64 {
            let name = format!("after/small-{i}.txt");
            tree.file(
                &name,
                &text_bytes(1000 + 37 * i as usize, 50 + i),
                Meta::new(0o644, T0 + 4),
            );
        }
        let src = tree.finish();
        let tar = work.path().join("big.tar");
        tar_create(&src, &tar, &["--format=gnu"]);
        let tmp = work.path().join("big.tar.gz");
        pigz(&tar, &tmp, &[]);
        fs::rename(&tmp, &path).expect("move fixture into the cache");
        eprintln!("built {} in {:?}", path.display(), started.elapsed());
        path
    })
}

/// A fresh temporary directory for one test's archives and extractions.
pub fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lazycas-archive-test-")
        .tempdir()
        .expect("tempdir")
}
