//! Hostile archives and layers (issue 13): each is served by nginx as an archive asset (or by a
//! scripted registry as an image layer) next to a good asset, and must give its documented safe
//! view or EIO for the entry, with the daemon up and its peak RSS under 300 MiB. The rows of
//! README's "Hostile input" table are these tests' names; the cases GNU tar comparisons already
//! cover (traversal names, link cycles, truncated gzip, bad CRC, huge size claims, long-name
//! claims, entries behind a symlinked directory) are in `archive_mount.rs` and named there.

#[path = "archive_support/mod.rs"]
mod archive_support;
mod common;

use archive_support::pack::T0;
use archive_support::raw::{gzip_bytes, Header, RawTar, REGULAR, SYMLINK};
use common::hostile::{expect_bytes, expect_errno, timed, Scene, FAIL_DEADLINE};
use common::hostile_server::HostileServer;
use common::scripted_registry::{publish_image, registry_config};
use common::{list_dir_within, random_bytes, require_fuse, Asset, Config, Nginx, Origin};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;

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
