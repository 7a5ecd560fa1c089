//! Archives read span by span (issue 10, archives): a `.tar.gz` of real files plus random bytes,
//! indexed with `lazycas index` (chunks cut at its gzip checkpoints, the seek index inside),
//! served by nginx and pinned in the catalog by sha256 and index_sha256. The archive's tree is
//! listed before any archive byte is fetched; one member read fetches exactly the span it lies
//! in (nginx access log); a full walk matches GNU tar's extraction; a span corrupted at the
//! origin fails the members in it (EIO) while the others serve; a lying index is refused with
//! an error naming the rule it breaks.

#[path = "archive_support/mod.rs"]
mod archive_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use archive_support::compare::assert_same_tree;
use common::images::make_tree;
use common::lazycas::{lazycas_bin, CLI_TIMEOUT};
use common::{list_dir_within, read_within, require_fuse, run, Asset, Lazycas, Nginx, Origin};
use lazycas::archive::SpanMap;
use lazycas::chunk::ChunkIndex;
use lazycas::digest::Digest;
use lazycas::range::ByteRange;

/// How long a read through the mount may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// A member counts as "inside one span" when this much of the tar stream after it still
/// decodes from the same span (the decoder reads ahead a little past what a read needs).
const SPAN_MARGIN: u64 = 2 << 20;

/// The test archive, built once per test binary.
struct Archive {
    _dir: tempfile::TempDir,
    /// GNU tar's extraction of the archive.
    extracted: PathBuf,
    file: PathBuf,
    index_file: PathBuf,
    index_digest: Digest,
    index: ChunkIndex,
    map: SpanMap,
    sha256: String,
    /// Regular members: (path, data offset in the tar stream, size).
    members: Vec<(String, u64, u64)>,
}

fn archive() -> &'static Archive {
    static ARCHIVE: OnceLock<Archive> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lazycas-archive-spans-")
            .tempdir()
            .expect("tempdir");
        let tree = dir.path().join("tree");
        make_tree(&tree, 20 << 20, 6 << 20, 1011);
        let file = dir.path().join("a.tar.gz");
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(&tree).arg("-czf").arg(&file).arg(".");
        run(tar, CLI_TIMEOUT).assert_success();
        let extracted = dir.path().join("extracted");
        std::fs::create_dir_all(&extracted).expect("extraction dir");
        let mut untar = Command::new("tar");
        untar.arg("-C").arg(&extracted).arg("-xpzf").arg(&file);
        run(untar, CLI_TIMEOUT).assert_success();

        let mut cmd = Command::new(lazycas_bin());
        cmd.arg("index").arg(&file);
        let out = run(cmd, CLI_TIMEOUT);
        out.assert_success();
        let index_digest = Digest::parse(out.stdout.trim()).expect("printed index digest");
        let index_file = dir.path().join("a.tar.gz.lazycas-index");
        let bytes = std::fs::read(&index_file).expect("read index");
        let index = ChunkIndex::parse(&bytes, &index_digest).expect("index parses");
        let payload = index.hints().archive.clone().expect("archive seek index");
        let map = SpanMap::from_published(&payload.0, &index).expect("seek index parses");
        Archive {
            _dir: dir,
            extracted,
            members: regular_members(&file),
            sha256: common::sha256_file(&file),
            file,
            index_file,
            index_digest,
            index,
            map,
        }
    })
}

/// Every regular member of a tar.gz with its data offset and size, read with the `tar` crate.
fn regular_members(file: &Path) -> Vec<(String, u64, u64)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).expect("open archive"));
    let mut tar = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in tar.entries().expect("tar entries") {
        let e = e.expect("tar entry");
        if e.header().entry_type().is_file() {
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let path = path.trim_start_matches("./").to_string();
            out.push((
                path,
                e.raw_file_position(),
                e.header().size().expect("size"),
            ));
        }
    }
    out
}

impl Archive {
    /// The span (chunk number) a small member lies well inside of, for members in `wanted`
    /// spans; (member path, span).
    fn members_inside_spans(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (path, offset, size) in &self.members {
            if *size == 0 || *size > 64 * 1024 {
                continue;
            }
            let read = self.map.compressed(ByteRange::at(*offset, *size));
            let ahead = self
                .map
                .compressed(ByteRange::at(*offset, *size + SPAN_MARGIN));
            let chunks = self.index.chunks_covering(read);
            if ahead == read && chunks.len() == 1 && ahead.end() < self.index.size() {
                out.push((path.clone(), chunks.start));
            }
        }
        out
    }

    /// A small member well inside one span after the first (decoding starts at a deflate
    /// block boundary, mid-byte, with a window), and that span.
    fn member_inside_a_span(&self) -> (String, usize) {
        assert!(
            self.index.chunks().len() >= 4,
            "the test archive has only {} spans",
            self.index.chunks().len()
        );
        let later: Vec<(String, usize)> = self
            .members_inside_spans()
            .into_iter()
            .filter(|(_, span)| *span > 0)
            .collect();
        later
            .get(later.len() / 2)
            .cloned()
            .expect("a small member well inside a span")
    }
}

/// An nginx origin serving the archive (its bytes altered by `alter`) at `/arc/a.tar.gz` and
/// `index` at `/arc/a.tar.gz.lazycas-index`.
fn origin(a: &Archive, index: Vec<u8>, alter: impl FnOnce(&mut Vec<u8>)) -> Nginx {
    let nginx = Nginx::start();
    let mut bytes = std::fs::read(&a.file).expect("read archive");
    alter(&mut bytes);
    nginx.put("arc/a.tar.gz", bytes);
    nginx.put("arc/a.tar.gz.lazycas-index", index);
    nginx
}

/// A node whose catalog has the archive as `arc`, with the index pinned to `index_pin`.
fn node_for(a: &Archive, nginx: &Nginx, index_pin: &Digest) -> Lazycas {
    let mut node = Lazycas::new();
    let mut asset = Asset::file("arc", &nginx.url("arc/a.tar.gz"), &a.sha256);
    asset.kind = Some("archive".into());
    asset.extra = format!("index_sha256 = \"{}\"\n", index_pin.hex());
    node.add_asset(asset);
    node
}

fn published_index(a: &Archive) -> Vec<u8> {
    std::fs::read(&a.index_file).expect("read index")
}

/// The archive's requests in the access log, as the byte ranges they asked for.
fn archive_ranges(nginx: &Nginx) -> Vec<ByteRange> {
    nginx
        .log()
        .for_uri("/arc/a.tar.gz")
        .iter()
        .map(|r| {
            let range = r.range.as_deref().expect("a range request");
            let (s, e) = range
                .trim_start_matches("bytes=")
                .split_once('-')
                .expect("bytes=S-E");
            let end: u64 = e.parse::<u64>().expect("range end") + 1;
            ByteRange::new(s.parse().expect("range start"), end)
        })
        .collect()
}

/// The archive served as published, and a mounted node pinning it.
fn published_setup(a: &Archive) -> (Nginx, Lazycas, common::Daemon) {
    let nginx = origin(a, published_index(a), |_| {});
    let node = node_for(a, &nginx, &a.index_digest);
    let daemon = node.mount();
    (nginx, node, daemon)
}

#[test]
fn the_tree_lists_before_any_archive_byte_is_fetched() {
    require_fuse!();
    let a = archive();
    let (nginx, _node, daemon) = published_setup(a);
    let root = daemon.path("arc");
    let mut listed = list_dir_within(&root, DEADLINE).expect("list the archive");
    listed.sort();
    let mut want: Vec<String> = std::fs::read_dir(&a.extracted)
        .expect("read extraction")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(listed, want);
    let (member, _) = a.member_inside_a_span();
    let meta = std::fs::metadata(root.join(&member)).expect("stat a member");
    let on_disk = std::fs::metadata(a.extracted.join(&member)).expect("stat extracted");
    assert_eq!(meta.len(), on_disk.len());
    let log = nginx.log();
    assert_eq!(
        log.count("/arc/a.tar.gz"),
        0,
        "archive bytes were fetched:\n{log}"
    );
    assert_eq!(log.count("/arc/a.tar.gz.lazycas-index"), 1, "{log}");
}

#[test]
fn one_member_read_fetches_only_its_span_and_a_walk_matches_gnu_tar() {
    require_fuse!();
    let a = archive();
    let (nginx, node, daemon) = published_setup(a);
    let root = daemon.path("arc");
    let (member, span) = a.member_inside_a_span();
    let got = read_within(root.join(&member), DEADLINE).expect("read one member");
    let want = std::fs::read(a.extracted.join(&member)).expect("read extracted member");
    assert!(got == want, "{member} differs from GNU tar's extraction");

    let span_range = a.index.chunk_range(span).expect("span range");
    let ranges = archive_ranges(&nginx);
    let fetched: u64 = nginx.log().bytes_served("/arc/a.tar.gz");
    eprintln!(
        "one member ({member}, {} bytes): {} range requests, {fetched} of {} archive bytes \
         ({:.1}%), span {span} of {} is {span_range:?}",
        want.len(),
        ranges.len(),
        a.index.size(),
        fetched as f64 * 100.0 / a.index.size() as f64,
        a.index.chunks().len()
    );
    assert!(!ranges.is_empty(), "no range request for the member");
    for r in &ranges {
        assert!(
            r.start() >= span_range.start() && r.end() <= span_range.end(),
            "request {r:?} outside the member's span {span_range:?}"
        );
    }
    assert_eq!(
        fetched,
        span_range.len(),
        "the span was fetched more than once"
    );
    assert!(fetched * 4 < a.index.size(), "fetched {fetched} bytes");

    // Every member, through the mount, is what GNU tar extracts (and every span is fetched).
    let nodes = assert_same_tree(&root, &a.extracted);
    eprintln!("{nodes} nodes compared with GNU tar's extraction");
    let blob = node.blob_path(&a.sha256);
    assert!(
        common::wait_until(Duration::from_secs(30), || blob.exists()),
        "every span present, but the complete blob {} never appeared",
        blob.display()
    );
    assert_eq!(common::sha256_file(&blob), a.sha256);
}

#[test]
fn a_member_across_spans_fetches_the_spans_it_decodes() {
    require_fuse!();
    let a = archive();
    let (path, offset, size) = a
        .members
        .iter()
        .max_by_key(|(_, _, size)| *size)
        .cloned()
        .expect("a member");
    let decoded = a.map.compressed(ByteRange::at(offset, size));
    let spans = a.index.chunks_covering(decoded);
    assert!(spans.len() >= 2, "{path} lies in {} span(s)", spans.len());
    // The decoder may touch the span after the last one it needs (it decodes whole cache
    // slots): allow that one, no other.
    let allowed_end = a
        .index
        .chunk_range(spans.end)
        .map_or(a.index.size(), |r| r.end());
    let (nginx, _node, daemon) = published_setup(a);
    let got = read_within(daemon.path("arc").join(&path), DEADLINE).expect("read the member");
    let want = std::fs::read(a.extracted.join(&path)).expect("read extracted member");
    assert!(got == want, "{path} differs from GNU tar's extraction");
    let ranges = archive_ranges(&nginx);
    let fetched = nginx.log().bytes_served("/arc/a.tar.gz");
    eprintln!(
        "{path} ({size} bytes, spans {spans:?}, {decoded:?}): {} requests, {fetched} bytes",
        ranges.len()
    );
    for r in &ranges {
        assert!(
            r.start() >= decoded.start() && r.end() <= allowed_end,
            "request {r:?} outside the member's spans {decoded:?} (+ one)"
        );
    }
    assert!(fetched >= decoded.len(), "fetched {fetched} of {decoded:?}");
    assert!(
        fetched <= allowed_end - decoded.start(),
        "a span was fetched twice: {fetched} bytes"
    );
}

#[test]
fn a_restart_keeps_the_index_and_the_spans_already_fetched() {
    require_fuse!();
    let a = archive();
    let (nginx, node, mut daemon) = published_setup(a);
    let (member, _) = a.member_inside_a_span();
    let want = std::fs::read(a.extracted.join(&member)).expect("read extracted member");
    let got = read_within(daemon.path("arc").join(&member), DEADLINE).expect("first read");
    assert!(got == want, "{member} differs");
    let before = nginx.log().requests.len();
    daemon.stop();
    drop(daemon);
    let daemon = node.mount();
    let again = read_within(daemon.path("arc").join(&member), DEADLINE).expect("read again");
    assert!(again == want, "{member} differs after the restart");
    let log = nginx.log();
    assert_eq!(
        log.requests.len(),
        before,
        "the restarted daemon fetched again:\n{log}"
    );
}

#[test]
fn a_corrupt_span_fails_only_the_members_in_it() {
    require_fuse!();
    let a = archive();
    let inside = a.members_inside_spans();
    let (victim, bad) = a.member_inside_a_span();
    let (healthy, good) = inside
        .iter()
        .find(|(_, s)| s.abs_diff(bad) > 1)
        .cloned()
        .expect("a member in another span");
    let bad_range = a.index.chunk_range(bad).expect("bad span");
    let nginx = origin(a, published_index(a), |bytes| {
        let at = (bad_range.start() + bad_range.len() / 2) as usize;
        bytes[at] ^= 0x5a;
    });
    let node = node_for(a, &nginx, &a.index_digest);
    let daemon = node.mount();
    let root = daemon.path("arc");
    let err = read_within(root.join(&victim), DEADLINE).expect_err("read in the corrupt span");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}: {err}");
    let got = read_within(root.join(&healthy), DEADLINE).expect("read in a good span");
    let want = std::fs::read(a.extracted.join(&healthy)).expect("read extracted");
    assert!(got == want, "{healthy} (span {good}) differs");
    let again = read_within(root.join(&victim), DEADLINE).expect_err("second read, bad span");
    assert_eq!(again.raw_os_error(), Some(libc::EIO));
    assert!(
        daemon.log().contains("sha256 mismatch"),
        "the daemon log names the mismatch"
    );
}

/// Lists the archive through a node pinning `pin` to the index `served`; expects EIO and a
/// daemon log line containing `why`.
fn refused(a: &Archive, served: Vec<u8>, pin: &Digest, why: &str) {
    let nginx = origin(a, served, |_| {});
    let node = node_for(a, &nginx, pin);
    let daemon = node.mount();
    let err = list_dir_within(daemon.path("arc"), DEADLINE).expect_err("a lying index lists");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        daemon.wait_for_log(why, Duration::from_secs(10)),
        "the daemon log does not say {why:?}:\n{}",
        common::lazycas::tail(&daemon.log(), 20)
    );
    assert_eq!(
        nginx.log().count("/arc/a.tar.gz"),
        0,
        "archive bytes fetched"
    );
}

/// The offset of chunk `i`'s end in an encoded index of archive spans.
fn chunk_end_at(i: usize) -> usize {
    8 + 2 + 8 + 32 + 1 + "archive-spans-v1".len() + 12 + 8 + i * 40
}

#[test]
fn a_lying_index_is_refused_with_the_rule_it_breaks() {
    require_fuse!();
    let a = archive();
    let good = published_index(a);
    // Another index than the pinned one.
    let mut other = good.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    refused(
        a,
        other,
        &a.index_digest,
        "sha256 mismatch for arc (chunk index)",
    );

    // Pinned, but its span offsets do not increase.
    let mut flat = good.clone();
    let first_end = flat[chunk_end_at(0)..chunk_end_at(0) + 8].to_vec();
    flat[chunk_end_at(1)..chunk_end_at(1) + 8].copy_from_slice(&first_end);
    let pin = Digest::of(&flat);
    refused(a, flat, &pin, "not after the previous end");

    // Pinned, but a span start no longer where a checkpoint starts decoding.
    let mut moved = good;
    let at = chunk_end_at(1);
    let end = u64::from_le_bytes(moved[at..at + 8].try_into().expect("8 bytes"));
    moved[at..at + 8].copy_from_slice(&(end + 1).to_le_bytes());
    let pin = Digest::of(&moved);
    refused(a, moved, &pin, "not at a chunk start");
}
