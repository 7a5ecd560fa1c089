//! Acceptance tests for issue 12, references: weak pins (md5, sha1) on plain URLs,
//! `library://` and `shub://` references, each resolved, verified and served by the real daemon
//! through a real FUSE mount.
//!
//! The library and the Singularity Registry Server are loopback servers written in this test
//! from their public API descriptions (`common::publishers`); the library's 303 goes to a second
//! loopback host that serves ranges and rejects any `Authorization` header. Plain files come from
//! a real nginx.

mod common;

use common::lazycas::tail;
use common::publishers::{BlobHost, LibraryServer, Published, ShubServer};
use common::*;
use md5::Digest as _;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

/// An asset with raw TOML pin lines instead of a sha256.
fn weak_asset(name: &str, url: &str, pin_lines: &str) -> Asset {
    Asset {
        sha256: None,
        extra: pin_lines.to_string(),
        ..Asset::file(name, url, "")
    }
}

fn node_with(assets: Vec<Asset>, extra: &str, tail: &str) -> Lazycas {
    Lazycas::with_config(Config {
        fetch_chunk_size: Some("64K".into()),
        fetch_parallel: Some(4),
        extra: extra.to_string(),
        tail: tail.to_string(),
        assets,
        ..Config::default()
    })
}

fn assert_refused(d: &Daemon, rel: &str) {
    match read(d.path(rel)) {
        Ok(b) => panic!("{rel}: read {} bytes, expected a refusal", b.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{rel}: {e}"),
    }
}

#[test]
fn weak_pins_verify_the_whole_file_then_its_sha256_pins_the_name() {
    require_fuse!();
    let nginx = Nginx::start();
    let blob = nginx.put_random("casa/casa-run-5.3.sif", 3 * MIB / 2);
    let bytes = std::fs::read(nginx.docroot().join(&blob.rel)).expect("read blob");
    let url = nginx.url_of(&blob);
    let other = nginx.put_random("other.sif", 4096);
    let other_url = nginx.url_of(&other);
    let node = node_with(
        vec![
            weak_asset(
                "weak/md5.sif",
                &url,
                &format!("md5 = \"{}\"\n", md5_hex(&bytes)),
            ),
            weak_asset(
                "weak/sha1-fragment.sif",
                &format!("{url}#sha1={}", sha1_hex(&bytes)),
                "",
            ),
            weak_asset(
                "weak/bad-md5.sif",
                &other_url,
                &format!("md5 = \"{}\"\n", md5_hex(b"x")),
            ),
            weak_asset(
                "weak/bad-sha1.sif",
                &other_url,
                &format!("sha1 = \"{}\"\n", sha1_hex(b"x")),
            ),
            Asset::file("weak/bad-sha256.sif", &other_url, &sha256_hex(b"x")),
        ],
        "",
        "",
    );
    node.cli(&[
        "add",
        "weak/cli-md5.sif",
        &url,
        "--md5",
        &md5_hex(&bytes).to_uppercase(),
    ])
    .assert_success();
    let refused_add = node.cli_raw(&["add", "weak/cli-bad.sif", &url, "--md5", "12ab"]);
    assert_eq!(
        refused_add.code(),
        Some(2),
        "a malformed --md5 was accepted"
    );
    let mut d = node.mount();
    assert_reads(d.path("weak/md5.sif"), &bytes);
    assert_reads(d.path("weak/cli-md5.sif"), &bytes);
    assert_reads(d.path("weak/sha1-fragment.sif"), &bytes);
    for bad in [
        "weak/bad-md5.sif",
        "weak/bad-sha1.sif",
        "weak/bad-sha256.sif",
    ] {
        assert_refused(&d, bad);
    }
    let log = d.log();
    assert!(log.contains("md5 is a weak pin"), "{}", tail(&log, 40));
    assert!(log.contains("sha1 is a weak pin"), "{}", tail(&log, 40));
    assert!(log.contains("md5 mismatch") && log.contains("sha1 mismatch"));
    // The verified download's sha256 is what the entry shows from now on.
    let digest = xattr::get_string(&d.path("weak/md5.sif"), "user.lazycas.digest").expect("xattr");
    assert_eq!(digest.trim(), format!("sha256:{}", sha256_hex(&bytes)));
    d.stop();

    // The blob leaves the store and the publisher replaces the file at the same URL: the next
    // download is checked against the recorded sha256 first, and refused.
    node.cli(&["gc", "--to", "0"]).assert_success();
    assert!(node.stored_blobs().is_empty(), "gc left blobs");
    let changed = random_bytes(bytes.len(), unique_seed());
    std::fs::write(nginx.docroot().join(&blob.rel), &changed).expect("replace blob");
    let d = node.mount();
    assert_refused(&d, "weak/md5.sif");
    let log = d.log();
    assert!(
        log.contains("sha256 mismatch") && log.contains(&sha256_hex(&bytes)),
        "the recorded sha256 did not refuse the changed file: {}",
        tail(&log, 40)
    );
}

#[test]
fn library_reference_resolves_follows_the_redirect_without_the_token_and_serves_ranges() {
    require_fuse!();
    let blobs = BlobHost::start();
    let library = LibraryServer::start("s3cret-token");
    let image = random_bytes(MIB + 12345, unique_seed());
    let digest = sha256_hex(&image);
    blobs.put("app", image.clone());
    blobs.put("tampered", random_bytes(4096, unique_seed()));
    library.publish(Published {
        reference: "ent/coll/app:1.0".into(),
        stated_hash: format!("sha256.{digest}"),
        size: image.len() as u64,
        blob_url: blobs.url("app"),
    });
    library.publish(Published {
        reference: format!("ent/coll/app:sha256.{digest}"),
        stated_hash: format!("sha256.{digest}"),
        size: image.len() as u64,
        blob_url: blobs.url("app"),
    });
    // The library states a hash its blob does not have.
    library.publish(Published {
        reference: "ent/coll/tampered:1.0".into(),
        stated_hash: format!("sha256.{digest}"),
        size: 4096,
        blob_url: blobs.url("tampered"),
    });
    let host = library.server.host();
    let node = node_with(
        vec![
            weak_asset("lib/app.sif", "library://ent/coll/app:1.0", ""),
            weak_asset("lib/tampered.sif", "library://ent/coll/tampered:1.0", ""),
        ],
        &format!("library_host = \"{host}\"\nlibrary_arch = \"amd64\"\n"),
        &format!("\n[publishers.\"{host}\"]\ninsecure = true\ntoken = \"s3cret-token\"\n"),
    );
    node.cli(&[
        "add",
        "lib/pinned.sif",
        &format!("library://{host}/ent/coll/app:sha256.{digest}"),
    ])
    .assert_success();
    let d = node.mount();
    assert_reads(d.path("lib/app.sif"), &image);
    assert_reads(d.path("lib/pinned.sif"), &image);
    assert_refused(&d, "lib/tampered.sif");

    let api = library.server.requests();
    assert!(
        api.iter()
            .any(|r| r.path() == "/v1/images/ent/coll/app:1.0" && r.query().contains("arch=amd64")),
        "no image lookup: {api:?}"
    );
    assert!(api
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer s3cret-token")));
    assert!(api.iter().any(|r| r.path().starts_with("/v1/imagefile/")));
    assert_eq!(
        blobs.authorized_requests(),
        0,
        "the token reached the blob host"
    );
    assert!(
        blobs.range_requests() > 2,
        "the blob host saw {} range requests",
        blobs.range_requests()
    );
    assert!(
        d.log().contains("sha256 mismatch"),
        "{}",
        tail(&d.log(), 30)
    );
}

#[test]
fn shub_reference_pins_by_sha256_or_weakly_by_md5() {
    require_fuse!();
    let blobs = BlobHost::start();
    let shub = ShubServer::start();
    let a = random_bytes(300_000, unique_seed());
    let b = random_bytes(200_000, unique_seed());
    blobs.put("a", a.clone());
    blobs.put("b", b.clone());
    shub.publish(Published {
        reference: "coll/a:v1".into(),
        stated_hash: md5_hex(&a),
        size: a.len() as u64,
        blob_url: blobs.url("a"),
    });
    shub.publish(Published {
        reference: "coll/b:v1".into(),
        stated_hash: format!("sha256.{}", sha256_hex(&b)),
        size: b.len() as u64,
        blob_url: blobs.url("b"),
    });
    shub.publish(Published {
        reference: "coll/bad:v1".into(),
        stated_hash: md5_hex(b"not these bytes"),
        size: a.len() as u64,
        blob_url: blobs.url("a"),
    });
    let host = shub.server.host();
    let node = node_with(
        vec![
            weak_asset("shub/a.sif", &format!("shub://{host}/coll/a:v1"), ""),
            weak_asset("shub/b.sif", &format!("shub://{host}/coll/b:v1"), ""),
            weak_asset("shub/bad.sif", &format!("shub://{host}/coll/bad:v1"), ""),
            weak_asset(
                "shub/missing.sif",
                &format!("shub://{host}/coll/none:v1"),
                "",
            ),
        ],
        "",
        &format!("\n[publishers.\"{host}\"]\ninsecure = true\n"),
    );
    let d = node.mount();
    assert_reads(d.path("shub/a.sif"), &a);
    assert_reads(d.path("shub/b.sif"), &b);
    assert_refused(&d, "shub/bad.sif");
    assert_refused(&d, "shub/missing.sif");
    let log = d.log();
    assert!(log.contains("md5 is a weak pin"), "{}", tail(&log, 30));
    assert!(log.contains("md5 mismatch"), "{}", tail(&log, 30));
    let digest = xattr::get_string(&d.path("shub/a.sif"), "user.lazycas.digest").expect("xattr");
    assert_eq!(digest.trim(), format!("sha256:{}", sha256_hex(&a)));
    // Served once, then from the store: the registry is not asked again for a held image.
    let lookups = shub.server.requests().len();
    assert_reads(d.path("shub/a.sif"), &a);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(shub.server.requests().len(), lookups);
}
