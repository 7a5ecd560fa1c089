//! Hostile archives and layers (issue 13): each is served by nginx as an archive asset (or by a
//! scripted registry as an image layer) next to a good asset, and must give its documented safe
//! view or EIO for the entry, with the daemon up, the good asset still reading and the daemon's
//! peak RSS under 300 MiB. The rows of README's "Hostile input" table are these tests' names.
//!
//! The cases GNU tar can also be asked about (traversal names, link cycles, entries behind a
//! symlinked directory) are compared with GNU tar's extraction (`archive_support::compare`); the
//! malformed ones (truncated gzip, bad CRC, huge size and long-name claims, garbage) are listed
//! twice under a time bound by `assert_hostile`. Both end with `assert_still_serving`.

#[path = "archive_support/mod.rs"]
mod archive_support;
mod common;

use archive_support::compare::{assert_same_tree, WALK_TIMEOUT};
use archive_support::pack::{extract, workdir, T0};
use archive_support::raw::{self, gzip_bytes, write_tgz, Header, RawTar, REGULAR, SYMLINK};
use archive_support::serve::{assert_log_clean, Served};
use archive_support::source::mixed_bytes;
use common::hostile::{expect_bytes, expect_errno, timed, Scene, FAIL_DEADLINE};
use common::hostile_server::HostileServer;
use common::lazycas::tail;
use common::scripted_registry::{publish_image, registry_config};
use common::xattr::assert_errno;
use common::{
    assert_same_bytes, list_dir_within, random_bytes, read, require_fuse, Asset, Config, Nginx,
    Origin,
};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A scene whose catalog names each `(name, tar.gz bytes)` as an archive served by an nginx of
/// their own (returned second, so it outlives the scene's daemon).
fn archives_scene(cases: &[(&str, Vec<u8>)]) -> (Scene, Nginx) {
    let mut config = Scene::config();
    let origin = Nginx::start();
    for (name, bytes) in cases {
        let blob = origin.put(&format!("{name}.tar.gz"), bytes.clone());
        let mut asset = Asset::file(name, &origin.url_of(&blob), &blob.sha256);
        asset.kind = Some("archive".into());
        config.assets.push(asset);
    }
    (Scene::start(config), origin)
}

/// Lists `name` in the scene within the hang guard, printing the time.
fn list(scene: &Scene, case: &str, rel: &str) -> std::io::Result<Vec<String>> {
    let p = scene.path(rel);
    let (r, took) = timed(case, FAIL_DEADLINE, move || {
        list_dir_within(&p, FAIL_DEADLINE)
    });
    eprintln!(
        "hostile case: {case}: ls {rel}: {} in {} ms",
        match &r {
            Ok(names) => format!("{} names", names.len()),
            Err(e) => e.to_string(),
        },
        took.as_millis()
    );
    r
}

#[test]
fn symlink_chains_and_loops_stay_links() {
    require_fuse!();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("target", b"the end", 0o644, T0);
    // A chain of 30 links reads through; one of 60 is longer than the kernel follows.
    for (prefix, len) in [("a", 30), ("b", 60)] {
        for i in 0..len {
            let next = match i + 1 == len {
                true => "target".to_string(),
                false => format!("{prefix}{}", i + 1),
            };
            t.symlink(&format!("{prefix}{i}"), &next, T0);
        }
    }
    t.symlink("loop-a", "loop-b", T0)
        .symlink("loop-b", "loop-a", T0)
        .symlink("self", "self", T0)
        .symlink("dotdot", "../../../../etc", T0);
    let (mut scene, _origin) = archives_scene(&[("links", gzip_bytes(&t.finish()))]);
    let names = list(&scene, "symlink chains", "links").expect("list links");
    assert_eq!(names.len(), 95, "{names:?}");
    expect_bytes("chain of 30 symlinks", &scene.path("links/a0"), b"the end");
    expect_errno("chain of 60 symlinks", &scene.path("links/b0"), libc::ELOOP);
    expect_errno("symlink loop", &scene.path("links/loop-a"), libc::ELOOP);
    expect_errno("self symlink", &scene.path("links/self"), libc::ELOOP);
    assert_eq!(
        fs::read_link(scene.path("links/dotdot")).expect("readlink"),
        std::path::Path::new("../../../../etc"),
        "a link is shown as recorded, never resolved by the daemon"
    );
    scene.assert_healthy();
}

#[test]
fn garbage_after_the_last_member_is_ignored() {
    require_fuse!();
    let content = random_bytes(200_000, 77);
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("f.bin", &content, 0o644, T0);
    let mut bytes = gzip_bytes(&t.finish());
    bytes.extend_from_slice(&random_bytes(100_000, 78));
    let (mut scene, _origin) = archives_scene(&[("trailing", bytes)]);
    match list(&scene, "garbage after the last gzip member", "trailing") {
        Ok(names) => {
            assert_eq!(names, ["f.bin"]);
            expect_bytes(
                "garbage after the last gzip member",
                &scene.path("trailing/f.bin"),
                &content,
            );
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    scene.assert_healthy();
}

/// A tar.gz holding one file of `len` zero bytes, written in a stream (never held whole).
fn zeros_bomb(len: u64) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).header(&Header {
        size: len,
        mtime: T0,
        ..Header::new(b"zeros", REGULAR)
    });
    enc.write_all(&t.unterminated()).expect("gzip");
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..n]).expect("gzip");
        left -= n as u64;
    }
    // Padding to 512 and the end-of-archive blocks are zeros too.
    let pad = (512 - len % 512) % 512;
    enc.write_all(&vec![0u8; pad as usize + 1024])
        .expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn zeros_bomb_of_2_gib_reads_zeros_with_bounded_memory() {
    require_fuse!();
    let len = 2u64 << 30;
    let bomb = zeros_bomb(len);
    eprintln!(
        "hostile case: zeros bomb: {} GiB of zeros in {} KiB of tar.gz",
        len >> 30,
        bomb.len() >> 10
    );
    let (mut scene, _origin) = archives_scene(&[("bomb", bomb)]);
    let names = list(&scene, "2 GiB zeros bomb", "bomb").expect("list bomb");
    assert_eq!(names, ["zeros"]);
    let path = scene.path("bomb/zeros");
    assert_eq!(fs::metadata(&path).expect("stat").len(), len);
    let (chunks, took) = timed("2 GiB zeros bomb", FAIL_DEADLINE, move || {
        let f = fs::File::open(&path).expect("open zeros");
        [0, len / 2 + 12345, len - 4096]
            .into_iter()
            .map(|at| {
                let mut buf = vec![0xffu8; 4096];
                let n = f.read_at(&mut buf, at).expect("read zeros");
                buf.truncate(n);
                buf
            })
            .collect::<Vec<_>>()
    });
    for c in chunks {
        assert_eq!(c.len(), 4096);
        assert!(c.iter().all(|&b| b == 0), "not zeros");
    }
    eprintln!(
        "hostile case: 2 GiB zeros bomb: reads at start, middle, end in {} ms",
        took.as_millis()
    );
    scene.assert_healthy();
}

/// A tar.gz of `dirs` directories holding `per_dir` empty files each, streamed.
fn many_empty_files(dirs: usize, per_dir: usize) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0);
    enc.write_all(&t.unterminated()).expect("gzip");
    for d in 0..dirs {
        let mut t = RawTar::new();
        t.dir(&format!("d{d:04}/"), 0o755, T0);
        for f in 0..per_dir {
            t.header(&Header {
                mtime: T0,
                ..Header::new(format!("d{d:04}/f{f:04}").as_bytes(), REGULAR)
            });
        }
        enc.write_all(&t.unterminated()).expect("gzip");
    }
    enc.write_all(&[0u8; 1024]).expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn million_empty_files_list_with_bounded_memory() {
    require_fuse!();
    let bytes = many_empty_files(1000, 1000);
    eprintln!(
        "hostile case: a million empty files: {} MiB of tar.gz",
        bytes.len() >> 20
    );
    let (mut scene, _origin) = archives_scene(&[("million", bytes)]);
    let top = list(&scene, "a million empty files", "million").expect("list million");
    assert_eq!(top.len(), 1000);
    let one = list(&scene, "a million empty files", "million/d0999").expect("list d0999");
    assert_eq!(one.len(), 1000);
    assert_eq!(one.last().map(String::as_str), Some("f0999"));
    expect_bytes(
        "a million empty files",
        &scene.path("million/d0500/f0500"),
        b"",
    );
    scene.assert_healthy();
}

#[test]
fn overflowing_sparse_maps_skip_the_entry() {
    require_fuse!();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("ok.txt", b"ok", 0o644, T0);
    // PAX 0.1 sparse maps: a region past u64::MAX, a region past the real size, a count no
    // archive can hold.
    let cases: [(&str, &[(&str, &str)]); 3] = [
        (
            "wraps",
            &[
                ("GNU.sparse.size", "4096"),
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.map", "18446744073709551000,1000"),
            ],
        ),
        (
            "beyond",
            &[
                ("GNU.sparse.size", "4096"),
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.map", "0,10,9000,10"),
            ],
        ),
        (
            "count",
            &[
                ("GNU.sparse.size", "4096"),
                ("GNU.sparse.numblocks", "9223372036854775807"),
                ("GNU.sparse.map", "0,10"),
            ],
        ),
    ];
    for (name, records) in cases {
        let mut all: Vec<(&str, &str)> = records.to_vec();
        all.push(("GNU.sparse.name", name));
        t.pax(&all);
        t.header(&Header {
            size: 512,
            mtime: T0,
            ..Header::new(format!("GNUSparseFile.0/{name}").as_bytes(), REGULAR)
        });
        t.data(&[7u8; 512]);
    }
    t.file("after.txt", b"after", 0o644, T0);
    let (mut scene, _origin) = archives_scene(&[("sparse", gzip_bytes(&t.finish()))]);
    match list(&scene, "overflowing sparse maps", "sparse") {
        Ok(names) => {
            eprintln!("hostile case: overflowing sparse maps: listed {names:?}");
            for bad in ["wraps"] {
                if names.iter().any(|n| n == bad) {
                    // Listed: its read must fail, never return made-up bytes.
                    expect_errno(
                        "overflowing sparse map",
                        &scene.path(&format!("sparse/{bad}")),
                        libc::EIO,
                    );
                }
            }
            // A count the map does not have: the map's one region is what the file holds.
            if names.iter().any(|n| n == "count") {
                let mut want = vec![0u8; 4096];
                want[..10].fill(7);
                match std::fs::read(scene.path("sparse/count")) {
                    Ok(got) => assert_eq!(got, want, "count larger than the map"),
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
                }
            }
            // A region past the stated size: GNU tar writes it there, so the file ends with it.
            if names.iter().any(|n| n == "beyond") {
                let p = scene.path("sparse/beyond");
                let mut want = vec![0u8; 9010];
                want[..10].fill(7);
                want[9000..].fill(7);
                match std::fs::read(&p) {
                    Ok(got) => assert_eq!(got, want, "region past the stated size"),
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
                }
            }
            expect_bytes(
                "overflowing sparse maps",
                &scene.path("sparse/ok.txt"),
                b"ok",
            );
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    scene.assert_healthy();
}

/// An image `repo:1` of `layers` on a scripted registry, and a scene that can read it.
fn image_scene(layers: &[Vec<u8>]) -> (HostileServer, Scene, String) {
    let server = HostileServer::start();
    publish_image(&server, "hostile/img", "1", layers);
    let scene = Scene::start(Config {
        tail: registry_config(&server),
        ..Scene::config()
    });
    let rootfs = format!("docker/{}/hostile/img:1/rootfs", server.host());
    (server, scene, rootfs)
}

fn base_layer() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .dir("etc/", 0o755, T0)
        .file("etc/keep", b"keep", 0o644, T0)
        .dir("sub/", 0o755, T0)
        .file("sub/keep", b"sub", 0o644, T0);
    t.finish()
}

#[test]
fn whiteouts_naming_dotdot_or_the_layer_root_are_ignored() {
    require_fuse!();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .file(".wh...", b"", 0o644, T0)
        .file(".wh..", b"", 0o644, T0)
        .file(".wh.", b"", 0o644, T0)
        .file("sub/.wh...", b"", 0o644, T0)
        .file("sub/.wh..", b"", 0o644, T0)
        .file("sub/.wh.", b"", 0o644, T0)
        .file("./.wh..wh.evil", b"", 0o644, T0)
        .file("new", b"new", 0o644, T0);
    let (_server, mut scene, rootfs) = image_scene(&[base_layer(), t.finish()]);
    let names = list(&scene, "whiteouts naming .. or the root", &rootfs).expect("list rootfs");
    assert_eq!(names, ["etc", "new", "sub"]);
    assert_eq!(
        list(
            &scene,
            "whiteouts naming .. or the root",
            &format!("{rootfs}/sub")
        )
        .expect("sub"),
        ["keep"]
    );
    expect_bytes(
        "whiteouts naming .. or the root",
        &scene.path(&format!("{rootfs}/etc/keep")),
        b"keep",
    );
    scene.assert_healthy();
}

#[test]
fn layer_replacing_the_root_with_a_symlink_keeps_the_root_a_directory() {
    require_fuse!();
    let mut t = RawTar::new();
    t.header(&Header {
        mode: 0o777,
        mtime: T0,
        link: b"/etc".to_vec(),
        ..Header::new(b"./", SYMLINK)
    });
    t.header(&Header {
        mode: 0o777,
        mtime: T0,
        link: b"/".to_vec(),
        ..Header::new(b".", SYMLINK)
    });
    t.file("added", b"added", 0o644, T0);
    let (_server, mut scene, rootfs) = image_scene(&[base_layer(), t.finish()]);
    let meta = fs::symlink_metadata(scene.path(&rootfs)).expect("stat rootfs");
    assert!(meta.is_dir(), "rootfs is {:?}", meta.file_type());
    let names = list(&scene, "layer replacing / with a symlink", &rootfs).expect("list");
    assert!(names.contains(&"etc".to_string()), "{names:?}");
    expect_bytes(
        "layer replacing / with a symlink",
        &scene.path(&format!("{rootfs}/etc/keep")),
        b"keep",
    );
    scene.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// Archives also extracted by GNU tar, or listed twice under a time bound: EIO, a log line for the
// entry, or GNU tar's view; bounded time and memory; the daemon keeps serving a good archive

/// How long `ls` of a hostile archive may take to answer (download + failed index included).
const LS_BOUND: Duration = Duration::from_secs(30);

/// Peak memory a daemon may reach on a hostile archive: far below the sizes the headers claim.
const HOSTILE_PEAK_RSS: u64 = 256 << 20;

/// A small good archive served next to each hostile one.
fn good_archive(dir: &Path) -> (PathBuf, Vec<u8>) {
    let content = random_bytes(100_000, 4242);
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("good.bin", &content, 0o644, T0);
    (write_tgz(dir, "good.tar.gz", &t), content)
}

/// What listing a hostile archive may give.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// The whole archive fails with EIO.
    Eio,
    /// EIO, or a listing without the named entries and a log line naming each.
    EioOrSkipped(&'static [&'static str]),
}

/// Serves `cases` (catalog name, file name, bytes) next to a good archive, lists each hostile
/// archive twice within `LS_BOUND` checking `verdict`, then checks the daemon: still running,
/// no panic, peak memory bounded, and the good archive still reads.
fn assert_hostile(cases: &[(&str, &str, Vec<u8>, Verdict)]) {
    let work = workdir();
    let (good, good_bytes) = good_archive(work.path());
    let mut files = Vec::new();
    for (name, file, bytes, _) in cases {
        let p = work.path().join(file);
        fs::write(&p, bytes).expect("write hostile archive");
        files.push((*name, p));
    }
    let mut all: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    all.push(("good", &good));
    let mut served = Served::start(&all);
    for (name, _, _, verdict) in cases {
        for attempt in 0..2 {
            let started = Instant::now();
            let r = list_dir_within(served.path(name), LS_BOUND);
            let took = started.elapsed();
            eprintln!("{name} (attempt {attempt}): {r:?} after {took:?}");
            assert!(took <= LS_BOUND, "{name}: ls took {took:?}");
            match (verdict, r) {
                (_, Err(e)) if e.raw_os_error() == Some(libc::EIO) => {}
                (Verdict::EioOrSkipped(skipped), Ok(names)) => {
                    let log = served.daemon.log();
                    for s in *skipped {
                        assert!(
                            !names.iter().any(|n| n == s),
                            "{name}: {s} is listed: {names:?}"
                        );
                        assert!(
                            log.lines().any(|l| l.contains(s)
                                && l.contains(name)
                                && (l.contains("WARN") || l.contains("ERROR"))),
                            "{name}: no warning naming {s} and the archive in the daemon log:\n{}",
                            tail(&log, 40)
                        );
                    }
                    // What is listed reads, or fails cleanly.
                    for n in names {
                        let p = served.path(name).join(&n);
                        if p.is_file() {
                            let _ = read(&p);
                        }
                    }
                }
                (v, r) => panic!("{name}: expected {v:?}, got {r:?}"),
            }
        }
    }
    let log = served.daemon.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    eprintln!("daemon warnings and errors:\n{}", complaints.join("\n"));
    for (name, _, _, verdict) in cases {
        if let Verdict::Eio = verdict {
            assert!(
                complaints
                    .iter()
                    .any(|l| l.contains("ERROR") && l.contains(name)),
                "no error line names the failing archive {name}:\n{}",
                complaints.join("\n")
            );
        }
    }
    assert_still_serving(&mut served, &good_bytes);
}

/// The frame every archive case here ends with: the daemon is still running and did not
/// panic, `good` (from [`good_archive`], served next to the cases) still reads back
/// byte-identical, and its peak RSS stayed under `HOSTILE_PEAK_RSS`.
#[track_caller]
fn assert_still_serving(served: &mut Served, good_bytes: &[u8]) {
    let log = served.daemon.log();
    assert!(
        served.daemon.is_running(),
        "the daemon died:\n{}",
        tail(&log, 80)
    );
    assert_log_clean(&served.daemon);
    let good_path = served.path("good").join("good.bin");
    assert_same_bytes(
        &read(&good_path).expect("read the good archive"),
        good_bytes,
        "good.bin after hostile archives",
    );
    let peak = served.daemon.peak_rss();
    eprintln!("daemon peak RSS: {} MiB", peak >> 20);
    assert!(
        peak <= HOSTILE_PEAK_RSS,
        "daemon peak RSS {} MiB",
        peak >> 20
    );
}

/// A valid gzipped tar of a few MiB (several checkpoints' worth).
fn valid_tgz() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0);
    for i in 0..5u64 {
        t.file(
            &format!("f{i}.bin"),
            &mixed_bytes(1_500_000, 900 + i),
            0o644,
            T0,
        );
    }
    gzip_bytes(&t.finish())
}

#[test]
fn hostile_truncated_gzip_gives_eio() {
    require_fuse!();
    let whole = valid_tgz();
    let cut = whole[..whole.len() * 2 / 3].to_vec();
    let no_trailer = whole[..whole.len() - 4].to_vec();
    assert_hostile(&[
        ("truncated", "truncated.tar.gz", cut, Verdict::Eio),
        ("no-trailer", "no-trailer.tar.gz", no_trailer, Verdict::Eio),
    ]);
}

#[test]
fn hostile_bad_crc_and_corrupt_deflate_give_eio() {
    require_fuse!();
    let mut bad_crc = valid_tgz();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let mut bad_size = valid_tgz();
    bad_size[n - 2] ^= 0x01;
    let mut corrupt = valid_tgz();
    for i in (n / 2..n / 2 + 64).step_by(7) {
        corrupt[i] ^= 0x5a;
    }
    assert_hostile(&[
        ("bad-crc", "bad-crc.tar.gz", bad_crc, Verdict::Eio),
        ("bad-isize", "bad-isize.tar.gz", bad_size, Verdict::Eio),
        ("corrupt", "corrupt.tgz", corrupt, Verdict::Eio),
    ]);
}

#[test]
fn hostile_size_claim_of_a_terabyte_is_contained() {
    require_fuse!();
    let huge = 1_000_000_000_000u64;
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("ok.txt", b"ok", 0o644, T0);
    t.header(&Header {
        size: huge,
        mtime: T0,
        ..Header::new(b"huge.bin", raw::REGULAR)
    });
    t.data(&random_bytes(64 << 10, 1));
    let gnu = gzip_bytes(&t.unterminated());
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("ok.txt", b"ok", 0o644, T0);
    t.pax(&[("size", &huge.to_string())]);
    t.header(&Header {
        mtime: T0,
        ..Header::new(b"pax-huge.bin", raw::REGULAR)
    });
    t.data(&random_bytes(64 << 10, 2));
    let pax = gzip_bytes(&t.finish());
    assert_hostile(&[
        (
            "huge-size",
            "huge-size.tar.gz",
            gnu,
            Verdict::EioOrSkipped(&["huge.bin"]),
        ),
        (
            "pax-huge-size",
            "pax-huge-size.tar.gz",
            pax,
            Verdict::EioOrSkipped(&["pax-huge.bin"]),
        ),
    ]);
}

#[test]
fn hostile_gigabyte_long_name_claim_is_contained() {
    require_fuse!();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("ok.txt", b"ok", 0o644, T0);
    t.header(&Header {
        size: 1 << 30,
        ..Header::new(b"././@LongLink", raw::GNU_LONGNAME)
    });
    t.data(&vec![b'a'; 64 << 10]);
    let gnu = gzip_bytes(&t.unterminated());
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0).file("ok.txt", b"ok", 0o644, T0);
    t.header(&Header {
        size: 1 << 30,
        ..Header::new(b"./PaxHeaders/huge", raw::PAX)
    });
    t.data(format!("1073741824 path={}\n", "p".repeat(60_000)).as_bytes());
    let pax = gzip_bytes(&t.unterminated());
    assert_hostile(&[
        (
            "long-name",
            "long-name.tar.gz",
            gnu,
            Verdict::EioOrSkipped(&[]),
        ),
        (
            "pax-long-header",
            "pax-long-header.tar.gz",
            pax,
            Verdict::EioOrSkipped(&[]),
        ),
    ]);
}

#[test]
fn hostile_link_cycles_and_missing_targets_match_gnu_tar() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .file("good.txt", b"good", 0o644, T0)
        .hardlink("a", "b", T0)
        .hardlink("b", "a", T0)
        .hardlink("self", "self", T0)
        .hardlink("missing-link", "no/such/target", T0)
        .dir("dir/", 0o755, T0)
        .hardlink("link-to-dir", "dir", T0)
        .symlink("s1", "s2", T0)
        .symlink("s2", "s1", T0)
        .hardlink("good-link", "good.txt", T0);
    let a = write_tgz(work.path(), "cycles.tar.gz", &t);
    let (good, good_bytes) = good_archive(work.path());
    let mut served = Served::start(&[("cycles", &a), ("good", &good)]);
    let dest = work.path().join("extracted");
    let out = extract(&a, &dest, &[]);
    assert_eq!(out.code(), Some(2), "GNU tar refuses the bad links: {out}");
    list_dir_within(served.path("cycles"), LS_BOUND).expect("list cycles");
    assert_same_tree(&served.path("cycles"), &dest);
    let m = served.path("cycles");
    assert_errno(read(m.join("s1")), libc::ELOOP, "reading a symlink cycle");
    assert_eq!(
        fs::symlink_metadata(m.join("good-link"))
            .expect("stat")
            .nlink(),
        2
    );
    let log = served.daemon.log();
    // Each refused link gets a warning naming it (quoted, as the log writes names).
    for name in ["a", "b", "self", "missing-link", "link-to-dir"] {
        let quoted = format!("\"{name}\"");
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&quoted)),
            "no warning names {quoted}:\n{}",
            tail(&log, 40)
        );
    }
    assert_still_serving(&mut served, &good_bytes);
}

#[test]
fn hostile_random_garbage_gives_eio() {
    require_fuse!();
    let garbage = random_bytes(1 << 20, 666);
    let mut gzip_magic = random_bytes(1 << 20, 667);
    gzip_magic[..4].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x00]);
    // Garbage named .tar has no gzip layer to fail: it must give EIO or an empty tree, never a
    // panic or a hang (checked by `assert_hostile`).
    assert_hostile(&[
        ("garbage", "garbage.tar.gz", garbage.clone(), Verdict::Eio),
        ("gzip-magic", "gzip-magic.tgz", gzip_magic, Verdict::Eio),
        (
            "garbage-tar",
            "garbage.tar",
            garbage,
            Verdict::EioOrSkipped(&[]),
        ),
    ]);
}

#[test]
fn dotdot_and_absolute_names_stay_inside_the_root() {
    require_fuse!();
    let work = workdir();
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .dir("/abs/", 0o750, T0 + 1)
        .file("/abs/f", b"absolute", 0o644, T0 + 1)
        .file("../evil", b"evil", 0o644, T0 + 2)
        .dir("ok/", 0o755, T0 + 3)
        .file("ok/fine", b"fine", 0o644, T0 + 3)
        .file("ok/../../evil2", b"evil2", 0o644, T0 + 4)
        .hardlink("ok/hl-dotdot", "../ok/fine", T0 + 5)
        .hardlink("ok/hl-abs", "/ok/fine", T0 + 5)
        .dir("/double/", 0o755, T0 + 6)
        .dir("//double//slash/", 0o755, T0 + 6)
        .file("//double//slash//name", b"n", 0o644, T0 + 6);
    let a = write_tgz(work.path(), "names.tar.gz", &t);
    let (good, good_bytes) = good_archive(work.path());
    let mut served = Served::start(&[("escape", &a), ("good", &good)]);
    // GNU tar (without -P) strips `/` and refuses `..` members: it exits 2, having said so.
    let outer = work.path().join("outer");
    let dest = outer.join("inner");
    let out = extract(&a, &dest, &[]);
    assert_eq!(
        out.code(),
        Some(2),
        "GNU tar's verdict on the archive: {out}"
    );
    assert!(out.stderr.contains("Member name contains '..'"), "{out}");
    let outside: Vec<_> = fs::read_dir(&outer)
        .expect("ls outer")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("inner")],
        "GNU tar wrote outside its root"
    );
    assert_same_tree(&served.path("escape"), &dest);
    let m = served.path("escape");
    assert_eq!(read(m.join("abs/f")).expect("read abs/f"), b"absolute");
    assert_eq!(
        read(m.join("double/slash/name")).expect("read double/slash/name"),
        b"n"
    );
    let names = list_dir_within(&m, WALK_TIMEOUT).expect("list root");
    assert_eq!(
        names,
        ["abs", "double", "ok"],
        "root of the mounted archive"
    );
    assert_eq!(
        list_dir_within(m.join("ok"), WALK_TIMEOUT).expect("list ok"),
        ["fine", "hl-abs", "hl-dotdot"]
    );
    let ino = |p: &str| fs::symlink_metadata(m.join(p)).expect("stat").ino();
    assert_eq!(ino("ok/hl-dotdot"), ino("ok/fine"));
    assert_eq!(ino("ok/hl-abs"), ino("ok/fine"));
    assert_still_serving(&mut served, &good_bytes);
}

#[test]
fn entry_after_a_symlinked_dir_is_not_reached_through_the_link() {
    require_fuse!();
    let work = workdir();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    let outside_s = outside.to_str().expect("utf-8 tempdir");
    // Links GNU tar also refuses to write through (absolute or `..` targets: it extracts them
    // as placeholders until the end), and a plain file used as a directory.
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .symlink("escape", outside_s, T0 + 1)
        .file("escape/x", b"escaped", 0o644, T0 + 2)
        .symlink("up", "../../outside", T0 + 3)
        .file("up/z", b"escaped too", 0o644, T0 + 4)
        .file("plain", b"plain", 0o644, T0 + 5)
        .file("plain/x", b"under a file", 0o644, T0 + 6);
    let absolute = write_tgz(work.path(), "absolute.tar.gz", &t);
    // A relative in-archive link: GNU tar would write `rel/y` into `real/y`; lazycas
    // deliberately does not (archive module doc), so this one is checked on its own.
    let mut t = RawTar::new();
    t.dir("./", 0o755, T0)
        .dir("real/", 0o755, T0 + 1)
        .file("real/own", b"own", 0o644, T0 + 1)
        .symlink("rel", "real", T0 + 2)
        .file("rel/y", b"through the link", 0o644, T0 + 3)
        .dir("rel/sub/", 0o755, T0 + 4);
    let relative = write_tgz(work.path(), "relative.tar.gz", &t);
    let (good, good_bytes) = good_archive(work.path());
    let mut served = Served::start(&[
        ("links/absolute", &absolute),
        ("links/relative", &relative),
        ("good", &good),
    ]);

    let dest = work.path().join("extracted");
    let out = extract(&absolute, &dest, &[]);
    assert_eq!(
        out.code(),
        Some(2),
        "GNU tar refuses escape/x, up/z and plain/x: {out}"
    );
    assert_same_tree(&served.path("links/absolute"), &dest);
    let m = served.path("links/absolute");
    assert_errno(
        fs::symlink_metadata(m.join("escape/x")),
        libc::ENOENT,
        "escape/x through the link",
    );
    assert_errno(
        fs::symlink_metadata(m.join("plain/x")),
        libc::ENOTDIR,
        "plain/x",
    );

    let m = served.path("links/relative");
    assert_eq!(
        list_dir_within(&m, WALK_TIMEOUT).expect("list"),
        ["real", "rel"]
    );
    assert_eq!(
        list_dir_within(m.join("real"), WALK_TIMEOUT).expect("list real"),
        ["own"]
    );
    assert_eq!(
        fs::read_link(m.join("rel")).expect("readlink rel"),
        Path::new("real")
    );
    assert_errno(
        fs::symlink_metadata(m.join("rel/y")),
        libc::ENOENT,
        "rel/y through the link",
    );
    assert_errno(
        fs::symlink_metadata(m.join("rel/sub")),
        libc::ENOENT,
        "rel/sub through the link",
    );
    let left: Vec<_> = fs::read_dir(&outside)
        .expect("ls outside")
        .flatten()
        .collect();
    assert!(left.is_empty(), "something was written outside: {left:?}");
    assert_still_serving(&mut served, &good_bytes);
}
