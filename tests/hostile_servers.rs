//! Hostile servers (issue 13): origins that stall, lie about lengths, ignore or garble `Range`,
//! loop or leave on redirects, fail first, or fail TLS. Each case gives a correct read or an
//! `EIO` in bounded time (the scene's deadline is 3 s), the daemon stays up, a good asset keeps
//! serving and the peak RSS stays bounded. The rows of README's "Hostile input" table are these
//! tests' names.

mod common;

use common::hostile::{chunk_index_of, expect_bytes, expect_errno, Scene};
use common::hostile_server::{HostileServer, Script};
use common::{random_bytes, require_fuse, sha256_hex, unique_seed, Asset, Config};
use std::sync::Arc;

/// 3 MiB and a bit: four 1 MiB range requests.
const BODY_LEN: usize = (3 << 20) + 1234;

fn body() -> Arc<[u8]> {
    random_bytes(BODY_LEN, unique_seed()).into()
}

/// A scene serving `name` from `url`, pinned to `body`.
fn scene_with(name: &str, url: &str, body: &[u8]) -> Scene {
    Scene::start(Config {
        assets: vec![Asset::file(name, url, &sha256_hex(body))],
        ..Scene::config()
    })
}

/// One scripted path on a fresh server, mounted as `hostile.bin`.
fn scripted(script: impl FnOnce(Arc<[u8]>) -> Script) -> (HostileServer, Scene, Arc<[u8]>) {
    let server = HostileServer::start();
    let body = body();
    server.route("/blob", script(body.clone()));
    let scene = scene_with("hostile.bin", &server.url("/blob"), &body);
    (server, scene, body)
}

#[test]
fn stall_after_headers_is_eio() {
    require_fuse!();
    let (_server, mut scene, _) = scripted(Script::StallAfterHeaders);
    expect_errno("stall after headers", &scene.path("hostile.bin"), libc::EIO);
    scene.assert_healthy();
}

#[test]
fn stall_mid_body_is_eio() {
    require_fuse!();
    let (_server, mut scene, _) = scripted(|body| Script::StallMidBody {
        body,
        after: 100_000,
    });
    expect_errno("stall mid-body", &scene.path("hostile.bin"), libc::EIO);
    scene.assert_healthy();
}

#[test]
fn fewer_bytes_than_content_length_is_eio() {
    require_fuse!();
    let (_server, mut scene, _) = scripted(|body| Script::ShortBody { body, sent: 4096 });
    expect_errno(
        "fewer bytes than Content-Length",
        &scene.path("hostile.bin"),
        libc::EIO,
    );
    scene.assert_healthy();
}

#[test]
fn more_bytes_than_content_length_reads_correctly() {
    require_fuse!();
    let (_server, mut scene, body) = scripted(|body| Script::LongBody {
        body,
        extra: 70_000,
    });
    expect_bytes(
        "more bytes than Content-Length",
        &scene.path("hostile.bin"),
        &body,
    );
    scene.assert_healthy();
}

#[test]
fn whole_body_to_a_range_request_reads_correctly() {
    require_fuse!();
    let (server, mut scene, body) = scripted(Script::IgnoreRange);
    expect_bytes(
        "200 with the whole body to a range request",
        &scene.path("hostile.bin"),
        &body,
    );
    assert_eq!(
        server.requests_for("/blob").len(),
        1,
        "one 200 answer is the whole download"
    );
    scene.assert_healthy();
}

/// A server whose range answers lie as `script` says: the read is correct, its last request a
/// plain GET.
fn assert_plain_get_rescues(case: &str, script: impl FnOnce(Arc<[u8]>) -> Script) {
    let (server, mut scene, body) = scripted(script);
    expect_bytes(case, &scene.path("hostile.bin"), &body);
    let seen = server.requests_for("/blob");
    assert!(
        seen.last().is_some_and(|s| s.range.is_none()),
        "the last request is a plain GET: {seen:?}"
    );
    scene.assert_healthy();
}

#[test]
fn wrong_bytes_for_a_range_fall_back_to_one_plain_get() {
    require_fuse!();
    assert_plain_get_rescues("206 with the bytes of another offset", |body| {
        Script::ShiftedRange { body, shift: 1 }
    });
}

#[test]
fn wrong_content_range_falls_back_to_one_plain_get() {
    require_fuse!();
    assert_plain_get_rescues("206 with a wrong Content-Range", Script::WrongContentRange);
}

#[test]
fn lying_ranges_and_a_lying_whole_body_are_eio() {
    require_fuse!();
    // Ranges and the plain GET both answer bytes that do not verify.
    let server = HostileServer::start();
    let body = body();
    let mut wrong = body.to_vec();
    wrong[BODY_LEN / 2] ^= 1;
    server.route("/blob", Script::Serve(wrong.into()));
    let mut scene = scene_with("hostile.bin", &server.url("/blob"), &body);
    expect_errno(
        "ranges and plain GET with wrong bytes",
        &scene.path("hostile.bin"),
        libc::EIO,
    );
    let seen = server.requests_for("/blob");
    assert!(
        seen.iter().any(|s| s.range.is_none()),
        "a plain GET was tried: {seen:?}"
    );
    assert!(
        seen.len() < 20,
        "bounded number of requests: {}",
        seen.len()
    );
    scene.assert_healthy();
}

#[test]
fn redirect_loop_is_eio() {
    require_fuse!();
    let server = HostileServer::start();
    server.route("/a", Script::Redirect(server.url("/b")));
    server.route("/b", Script::Redirect(server.url("/a")));
    let mut scene = scene_with("hostile.bin", &server.url("/a"), &body());
    expect_errno("redirect loop", &scene.path("hostile.bin"), libc::EIO);
    assert!(
        server.requests().len() < 100,
        "bounded redirects: {}",
        server.requests().len()
    );
    scene.assert_healthy();
}

#[test]
fn redirect_to_another_host_forwards_no_authorization() {
    require_fuse!();
    // A library (bearer token configured for its host) whose image file redirects to a blob
    // host: the token must reach the library and never the blob host.
    let library = HostileServer::start();
    let blobs = HostileServer::start();
    let body = body();
    let answer = format!(
        r#"{{"data": {{"hash": "sha256.{}", "size": {BODY_LEN}}}}}"#,
        sha256_hex(&body)
    );
    for path in ["ent/coll/app:1.0", "ent/coll/app%3A1.0"] {
        library.route(
            &format!("/v1/images/{path}"),
            Script::json("application/json", answer.clone()),
        );
        library.route(
            &format!("/v1/imagefile/{path}"),
            Script::Redirect(format!("http://localhost:{}/blob", blobs.port())),
        );
    }
    blobs.route("/blob", Script::Serve(body.clone()));
    let host = library.host();
    let mut scene = Scene::start(Config {
        extra: format!("library_host = \"{host}\"\nlibrary_arch = \"amd64\"\n"),
        assets: vec![Asset {
            sha256: None,
            ..Asset::file("lib/app.sif", "library://ent/coll/app:1.0", "")
        }],
        tail: format!("\n[publishers.\"{host}\"]\ninsecure = true\ntoken = \"s3cret\"\n"),
        ..Scene::config()
    });
    expect_bytes(
        "redirect to another host",
        &scene.path("lib/app.sif"),
        &body,
    );
    let to_library = library.requests();
    assert!(
        to_library
            .iter()
            .any(|s| s.authorization.as_deref() == Some("Bearer s3cret")),
        "the library got the token: {to_library:?}"
    );
    let to_blobs = blobs.requests();
    assert!(!to_blobs.is_empty(), "the redirect was followed");
    assert!(
        to_blobs.iter().all(|s| s.authorization.is_none()),
        "Authorization forwarded to another host: {to_blobs:?}"
    );
    scene.assert_healthy();
}

#[test]
fn errors_500_then_success_reads_correctly() {
    require_fuse!();
    let (server, mut scene, body) = scripted(|body| Script::FailFirst {
        fails: 2,
        status: 500,
        then: Box::new(Script::Serve(body)),
    });
    expect_bytes("500, 500, then success", &scene.path("hostile.bin"), &body);
    assert!(server.requests_for("/blob").len() >= 3);
    scene.assert_healthy();
}

#[test]
fn errors_500_forever_are_eio() {
    require_fuse!();
    let (server, mut scene, _) = scripted(|_| Script::Status(500));
    expect_errno("500 forever", &scene.path("hostile.bin"), libc::EIO);
    assert!(
        server.requests_for("/blob").len() < 20,
        "bounded retries: {}",
        server.requests_for("/blob").len()
    );
    scene.assert_healthy();
}

#[test]
fn failed_tls_handshake_is_eio() {
    require_fuse!();
    let server = HostileServer::start();
    let url = format!("https://127.0.0.1:{}/blob", server.port());
    let mut scene = scene_with("hostile.bin", &url, &body());
    expect_errno("TLS handshake fails", &scene.path("hostile.bin"), libc::EIO);
    scene.assert_healthy();
}

#[test]
fn lying_ranges_for_a_chunked_image_are_eio_never_wrong_bytes() {
    require_fuse!();
    // A range-lazy image (pinned chunk index): every chunk from a lying range fails its own
    // digest, so the read fails; no byte of another offset is served.
    let server = HostileServer::start();
    let body = body();
    let index = chunk_index_of(&body);
    server.route(
        "/img.sqsh",
        Script::ShiftedRange {
            body: body.clone(),
            shift: 4096,
        },
    );
    server.route(
        "/img.sqsh.lazycas-index",
        Script::Serve(index.clone().into()),
    );
    let mut asset = Asset::file("img.sqsh", &server.url("/img.sqsh"), &sha256_hex(&body));
    asset.extra = format!("index_sha256 = \"{}\"\n", sha256_hex(&index));
    let mut scene = Scene::start(Config {
        assets: vec![asset],
        ..Scene::config()
    });
    expect_errno(
        "ranges of another offset for a chunked image",
        &scene.path("img.sqsh"),
        libc::EIO,
    );
    scene.assert_logged("sha256 mismatch");
    scene.assert_healthy();
}
