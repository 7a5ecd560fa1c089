//! Hostile registries and indexes (issue 13): a registry played by a `HostileServer` that sends
//! manifests of unknown types, huge or deeply nested ones, digests that do not match, a token
//! endpoint that fails or answers garbage; chunk indexes that lie (pinned, so only their
//! content is hostile); library and shub APIs answering nonsense. Each gives a clear error (EIO
//! or ENOENT for the node) in bounded time, the daemon stays up, a good asset keeps serving and
//! the peak RSS stays bounded. The rows of README's "Hostile input" table are these tests' names.

mod common;

use common::hostile::{chunk_index_of, expect_errno, Scene};
use common::hostile_server::{HostileServer, Script};
use common::scripted_registry::{
    publish_image, publish_manifest, registry_config, OCI_INDEX, OCI_MANIFEST,
};
use common::{random_bytes, require_fuse, sha256_hex, Asset, Config};
use std::sync::Arc;

const REPO: &str = "hostile/img";

/// A scene using `server` as an insecure registry; returns the image's directory for `tag`.
fn registry_scene(server: &HostileServer) -> Scene {
    Scene::start(Config {
        tail: registry_config(server),
        ..Scene::config()
    })
}

fn image_dir(server: &HostileServer, tag: &str) -> String {
    format!("docker/{}/{REPO}:{tag}", server.host())
}

/// A one-layer image's tar.
fn small_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello", &b"hello"[..]).expect("tar");
    b.into_inner().expect("tar")
}

/// Reads `<image>/manifest.json` expecting `errno`.
fn expect_manifest_error(scene: &Scene, case: &str, dir: &str, errno: i32) {
    expect_errno(case, &scene.path(&format!("{dir}/manifest.json")), errno);
}

#[test]
fn manifest_of_an_unknown_media_type_is_refused() {
    require_fuse!();
    let server = HostileServer::start();
    let manifest = publish_image(&server, REPO, "real", &[small_layer()]);
    publish_manifest(
        &server,
        REPO,
        "1",
        "application/vnd.example.unknown+json",
        &String::from_utf8_lossy(&manifest)
            .replace(OCI_MANIFEST, "application/vnd.example.unknown+json")
            .into_bytes(),
    );
    let mut scene = registry_scene(&server);
    expect_manifest_error(
        &scene,
        "manifest of an unknown media type",
        &image_dir(&server, "1"),
        libc::EIO,
    );
    scene.assert_logged("unsupported manifest media type");
    scene.assert_healthy();
}

#[test]
fn huge_manifest_is_refused() {
    require_fuse!();
    let server = HostileServer::start();
    let manifest = publish_image(&server, REPO, "real", &[small_layer()]);
    // Valid JSON, 5 MiB of annotation: larger than the 4 MiB any manifest may be.
    let text = String::from_utf8_lossy(&manifest).replacen(
        "{",
        &format!(r#"{{"annotations":{{"x":"{}"}},"#, "x".repeat(5 << 20)),
        1,
    );
    publish_manifest(&server, REPO, "1", OCI_MANIFEST, text.as_bytes());
    let mut scene = registry_scene(&server);
    expect_manifest_error(&scene, "huge manifest", &image_dir(&server, "1"), libc::EIO);
    scene.assert_logged("is larger than the 4194304 accepted");
    scene.assert_healthy();
}

#[test]
fn deeply_nested_indexes_are_refused() {
    require_fuse!();
    let server = HostileServer::start();
    let mut inner = publish_image(&server, REPO, "real", &[small_layer()]);
    let mut inner_type = OCI_MANIFEST;
    for level in 0..64 {
        let digest = format!("sha256:{}", sha256_hex(&inner));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{inner_type}","digest":"{digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            inner.len()
        );
        publish_manifest(
            &server,
            REPO,
            &format!("level{level}"),
            OCI_INDEX,
            index.as_bytes(),
        );
        inner = index.into_bytes();
        inner_type = OCI_INDEX;
    }
    publish_manifest(&server, REPO, "1", OCI_INDEX, &inner);
    let mut scene = registry_scene(&server);
    expect_errno(
        "64 nested indexes",
        &scene.path(&format!("{}/rootfs", image_dir(&server, "1"))),
        libc::EIO,
    );
    scene.assert_logged(
        "expected an image manifest, got a application/vnd.oci.image.index.v1+json manifest",
    );
    assert!(
        server.requests().len() < 200,
        "bounded requests: {}",
        server.requests().len()
    );
    scene.assert_healthy();
}

#[test]
fn manifest_digest_that_does_not_match_is_refused() {
    require_fuse!();
    let server = HostileServer::start();
    let manifest = publish_image(&server, REPO, "real", &[small_layer()]);
    // The tag's answer claims another digest than its bytes have.
    server.route(
        &format!("/v2/{REPO}/manifests/1"),
        Script::Document {
            body: Arc::from(manifest.clone()),
            headers: vec![
                ("Content-Type".into(), OCI_MANIFEST.into()),
                (
                    "Docker-Content-Digest".into(),
                    format!("sha256:{}", sha256_hex(b"something else")),
                ),
            ],
        },
    );
    // A digest reference whose bytes are another manifest's.
    let wrong = format!("sha256:{}", sha256_hex(b"not this manifest"));
    server.route(
        &format!("/v2/{REPO}/manifests/{wrong}"),
        Script::json(OCI_MANIFEST, manifest),
    );
    let mut scene = registry_scene(&server);
    expect_manifest_error(
        &scene,
        "tag answer with another Docker-Content-Digest",
        &image_dir(&server, "1"),
        libc::EIO,
    );
    expect_manifest_error(
        &scene,
        "digest reference answered with other bytes",
        &format!("docker/{}/{REPO}@{wrong}", server.host()),
        libc::EIO,
    );
    scene.assert_logged("sha256 mismatch for manifest");
    scene.assert_healthy();
}

#[test]
fn layer_digest_that_does_not_match_is_eio() {
    require_fuse!();
    let server = HostileServer::start();
    let manifest = publish_image(&server, REPO, "1", &[small_layer()]);
    let text = String::from_utf8_lossy(&manifest).into_owned();
    let layer = text
        .split("tar+gzip\",\"digest\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("layer digest in the manifest")
        .to_string();
    server.route(
        &format!("/v2/{REPO}/blobs/{layer}"),
        Script::Serve(Arc::from(random_bytes(4096, 9))),
    );
    let mut scene = registry_scene(&server);
    expect_errno(
        "layer bytes that do not match the digest",
        &scene.path(&format!("{}/rootfs/hello", image_dir(&server, "1"))),
        libc::EIO,
    );
    scene.assert_logged("mismatch");
    scene.assert_healthy();
}

/// A registry whose manifests answer 401 with a Bearer challenge pointing at `/token`,
/// scripted as `token`.
fn token_scene(token: Script) -> (HostileServer, Scene) {
    let server = HostileServer::start();
    let challenge = format!(
        r#"Bearer realm="{}",service="hostile",scope="repository:{REPO}:pull""#,
        server.url("/token")
    );
    server.route(
        &format!("/v2/{REPO}/manifests/1"),
        Script::Challenge(challenge),
    );
    server.route("/token", token);
    let scene = registry_scene(&server);
    (server, scene)
}

#[test]
fn token_endpoint_that_fails_is_eio() {
    require_fuse!();
    let (server, mut scene) = token_scene(Script::Status(500));
    expect_manifest_error(
        &scene,
        "token endpoint answers 500",
        &image_dir(&server, "1"),
        libc::EIO,
    );
    scene.assert_logged("/token");
    scene.assert_healthy();
}

#[test]
fn token_endpoint_answering_garbage_is_eio() {
    require_fuse!();
    let (server, mut scene) = token_scene(Script::json("application/json", "<html>{not json"));
    expect_manifest_error(
        &scene,
        "token endpoint answers garbage",
        &image_dir(&server, "1"),
        libc::EIO,
    );
    scene.assert_logged("malformed token response");
    scene.assert_healthy();
}

/// Offset of the first chunk entry in a version-1 chunk index with the `fastcdc-v2020` chunker.
const FIRST_ENTRY: usize = 51 + 13 + 12 + 8;
const ENTRY_LEN: usize = 40;

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn write_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn chunk_indexes_that_lie_are_eio() {
    require_fuse!();
    let server = HostileServer::start();
    let image = random_bytes(2 << 20, 31);
    let index = chunk_index_of(&image);
    let count = read_u64(&index, FIRST_ENTRY - 8) as usize;
    assert!(count >= 3, "a few chunks: {count}");
    let entry = |i: usize| FIRST_ENTRY + i * ENTRY_LEN;
    let mut overlapping = index.clone();
    let first_end = read_u64(&index, entry(0));
    write_u64(&mut overlapping, entry(1), first_end - 1);
    let mut beyond = index.clone();
    write_u64(&mut beyond, entry(count - 1), image.len() as u64 + 4096);
    let mut total = index.clone();
    write_u64(&mut total, 10, image.len() as u64 - 1);
    let sha = sha256_hex(&image);
    let mut config = Scene::config();
    for (name, lie) in [
        ("overlapping", overlapping),
        ("beyond", beyond),
        ("total", total),
    ] {
        server.route(
            &format!("/{name}.sqsh"),
            Script::Serve(image.clone().into()),
        );
        server.route(
            &format!("/{name}.sqsh.lazycas-index"),
            Script::Serve(lie.clone().into()),
        );
        let mut asset = Asset::file(name, &server.url(&format!("/{name}.sqsh")), &sha);
        asset.extra = format!("index_sha256 = \"{}\"\n", sha256_hex(&lie));
        config.assets.push(asset);
    }
    let mut scene = Scene::start(config);
    for (name, case) in [
        ("overlapping", "chunk index with overlapping chunks"),
        ("beyond", "chunk index with a chunk beyond the file"),
        ("total", "chunk index whose total does not add up"),
    ] {
        expect_errno(case, &scene.path(name), libc::EIO);
    }
    scene.assert_logged("not after the previous end");
    scene.assert_logged("but the file is");
    scene.assert_healthy();
}

#[test]
fn library_and_shub_answering_nonsense_are_eio() {
    require_fuse!();
    let server = HostileServer::start();
    let host = server.host();
    let answers = [
        ("garbage", "<html>not json"),
        ("nodata", r#"{"data": null}"#),
        (
            "badhash",
            r#"{"data": {"hash": "md5.zzzz", "size": 5}, "image": "ftp://h/x", "version": "z"}"#,
        ),
        (
            "deep",
            &format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
    ];
    let mut config = Scene::config();
    config.extra = format!("library_host = \"{host}\"\nlibrary_arch = \"amd64\"\n");
    config.tail = format!("\n[publishers.\"{host}\"]\ninsecure = true\n");
    for (name, answer) in &answers {
        for path in [format!("coll/{name}:1"), format!("coll/{name}%3A1")] {
            server.route(
                &format!("/v1/images/ent/{path}"),
                Script::json("application/json", answer.to_string()),
            );
            server.route(
                &format!("/api/container/{path}"),
                Script::json("application/json", answer.to_string()),
            );
        }
        for scheme in ["library", "shub"] {
            let reference = match scheme {
                "library" => format!("library://ent/coll/{name}:1"),
                _ => format!("shub://{host}/coll/{name}:1"),
            };
            config.assets.push(Asset {
                sha256: None,
                ..Asset::file(&format!("{scheme}/{name}.sif"), &reference, "")
            });
        }
    }
    let mut scene = Scene::start(config);
    for (name, _) in &answers {
        for scheme in ["library", "shub"] {
            expect_errno(
                &format!("{scheme} API answering {name}"),
                &scene.path(&format!("{scheme}/{name}.sif")),
                libc::EIO,
            );
        }
    }
    scene.assert_logged("image answer is not the library's JSON");
    scene.assert_logged("answer is not the registry's JSON");
    scene.assert_logged("is not sha256.<hex>");
    scene.assert_logged("is not an http(s) URL");
    scene.assert_healthy();
}
