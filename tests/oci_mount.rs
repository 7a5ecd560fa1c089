//! Acceptance tests for issue 9, the mount side: `docker/<registry>/<repo>:<tag>/` resolved on
//! first access against a real docker-registry (plain, and behind token auth), images built with
//! umoci and pushed with skopeo (gzip and zstd), `umoci unpack` as the reference rootfs, and
//! `runc run` with the mounted rootfs as its read-only root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lazycas::tail;
use common::oci_images::{
    assert_same_tree, build_rich_image, umoci, walk_rootfs, Listing, OciLayout, Push,
};
use common::process::{require_program, with_deadline};
use common::registry::Registry;
use common::token_server::{LoopbackTokenServer, TokenPolicy};
use common::*;

/// A node whose config trusts `registry` over plain http, with `tag_ttl_secs`.
fn node_for(registry: &str, tag_ttl_secs: u64) -> Lazycas {
    Lazycas::with_config(Config {
        extra: format!("tag_ttl_secs = {tag_ttl_secs}\n"),
        tail: format!("\n[registries.\"{registry}\"]\ninsecure = true\n"),
        ..Config::default()
    })
}

/// `docker/<registry>/<repo_tag>` in the mount.
fn image_dir(d: &Daemon, registry: &str, repo_tag: &str) -> PathBuf {
    d.path(&format!("docker/{registry}/{repo_tag}"))
}

/// `walk_rootfs` bounded by a deadline.
fn walk(root: &Path) -> Listing {
    let root = root.to_path_buf();
    with_deadline(READ_DEADLINE, "walking a mounted rootfs", move || {
        walk_rootfs(&root)
    })
}

/// Directory link counts follow from the tree (and differ in umoci's with the filesystem):
/// keep files' link counts only.
fn comparable(m: &Listing) -> Listing {
    m.iter()
        .map(|(p, (e, n))| (p.clone(), (e.clone(), if e.kind == 'd' { 0 } else { *n })))
        .collect()
}

/// The mounted rootfs equals umoci's: types, modes, owners, sizes, link targets, mtimes (those of
/// directories an upper layer only implies included: `etc/` in the rich image), file link
/// counts and bytes.
fn assert_matches_reference(what: &str, got: &Listing, reference: &Listing) {
    assert_same_tree(what, &comparable(got), &comparable(reference));
}

/// Layer digests (`sha256:…`) of `tag` in `layout`.
fn layer_digests(layout: &OciLayout, tag: &str) -> Vec<String> {
    layout.manifest(tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// The rich image built with umoci, its `umoci unpack` listing (the reference), and a
/// registry it was pushed to as `repo_tag` with `push`; returns them with the registry's host.
fn pushed_rich_image(repo_tag: &str, push: &Push) -> (OciLayout, Listing, Registry, String) {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    let reference = walk_rootfs(&layout.unpack("rich", "reference").join("rootfs"));
    let reg = Registry::start();
    let host = reg.host();
    layout.push("rich", &format!("{host}/{repo_tag}"), push);
    (layout, reference, reg, host)
}

#[test]
fn rich_image_rootfs_matches_umoci_unpack() {
    require_fuse!();
    let (layout, reference, _reg, host) = pushed_rich_image("test/team/rich:v1", &Push::default());
    let node = node_for(&host, 300);
    let d = node.mount();
    let dir = image_dir(&d, &host, "test/team/rich:v1");

    // The manifest and the config answer before any layer is fetched.
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(4));
    let config: serde_json::Value =
        serde_json::from_slice(&read(dir.join("config.json")).expect("config.json"))
            .expect("config is JSON");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(4)
    );
    let layers = layer_digests(&layout, "rich");
    let held = node.stored_digests();
    for l in &layers {
        assert!(
            !held.contains(&l.trim_start_matches("sha256:").to_string()),
            "layer {l} fetched before rootfs/ was touched"
        );
    }
    assert_eq!(list_dir(&dir), ["config.json", "manifest.json", "rootfs"]);

    let got = walk(&dir.join("rootfs"));
    assert_matches_reference("mounted rootfs", &got, &reference);

    // Every layer is in the store once, verified; a member names the layer it comes from.
    let held = node.stored_digests();
    for l in &layers {
        assert!(
            held.contains(&l.trim_start_matches("sha256:").to_string()),
            "{l} not stored"
        );
    }
    let source = xattr::get_string(&dir.join("rootfs/opq/new"), "user.lazycas.digest")
        .expect("digest xattr");
    assert_eq!(
        source, layers[2],
        "opq/new comes from the hand-made layer 3"
    );
    let image_digest = xattr::get_string(&dir, "user.lazycas.digest").expect("image digest xattr");
    assert_eq!(image_digest, layout.digest("rich"));
    assert_eq!(list_dir(d.path("docker")), std::slice::from_ref(&host));

    // The same image by digest is the same tree.
    let by_digest = image_dir(&d, &host, &format!("test/team/rich@{image_digest}"));
    assert_same_tree(
        "rootfs by digest",
        &comparable(&walk(&by_digest.join("rootfs"))),
        &comparable(&got),
    );
    // A tag that does not exist is ENOENT, not EIO.
    let missing = read(image_dir(&d, &host, "test/team/rich:nope").join("manifest.json"));
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOENT))
    );
}

#[test]
fn zstd_layers_are_decoded_once_and_verified() {
    require_fuse!();
    let zstd = Push {
        compress_format: Some("zstd"),
        format: Some("oci"),
        ..Push::default()
    };
    let (_layout, reference, _reg, host) = pushed_rich_image("test/zrich:v1", &zstd);
    let node = node_for(&host, 300);
    let d = node.mount();
    let dir = image_dir(&d, &host, "test/zrich:v1");
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    let media_types: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert!(
        media_types.iter().all(|m| m.ends_with("+zstd")),
        "skopeo pushed {media_types:?}"
    );
    let got = walk(&dir.join("rootfs"));
    assert_matches_reference("zstd rootfs", &got, &reference);
    let log = d.log();
    assert_eq!(
        log.matches("decoded zstd layer").count(),
        4,
        "{}",
        tail(&log, 30)
    );
}

#[test]
fn a_second_image_sharing_base_layers_stores_no_second_copy() {
    require_fuse!();
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    // A second image: the rich one plus one layer.
    umoci(&["config", "--image", &layout.image("rich"), "--tag", "more"]);
    let bundle = layout.unpack("more", "bundle-more");
    std::fs::write(bundle.join("rootfs/added"), b"only in the second image\n").expect("write");
    layout.repack("more", &bundle);
    let reg = Registry::start();
    let host = reg.host();
    layout.push("rich", &format!("{host}/test/one:v1"), &Push::default());
    layout.push("more", &format!("{host}/test/two:v1"), &Push::default());

    let node = node_for(&host, 300);
    let d = node.mount();
    let one = walk(&image_dir(&d, &host, "test/one:v1").join("rootfs"));
    let after_one = node.stored_digests().len();
    let two = walk(&image_dir(&d, &host, "test/two:v1").join("rootfs"));
    assert_eq!(two.len(), one.len() + 1);
    assert_reads(
        image_dir(&d, &host, "test/two:v1").join("rootfs/added"),
        b"only in the second image\n",
    );
    // The second image added its manifest, its config and its one new layer; nothing else.
    assert_eq!(
        node.stored_digests().len(),
        after_one + 3,
        "{:?}",
        node.stored_digests()
    );
    let log = d.log();
    for l in layer_digests(&layout, "rich") {
        let short = &l["sha256:".len().."sha256:".len() + 12];
        assert!(
            log.matches(&format!("indexed {short}")).count() <= 1,
            "layer {l} indexed twice:\n{}",
            tail(&log, 40)
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_multi_platform_image_shows_the_hosts_platform_and_concurrent_first_reads_share_one_open() {
    require_fuse!();
    let layout = OciLayout::new();
    marker_image(&layout, "amd", "amd64 bytes\n");
    umoci(&[
        "config",
        "--image",
        &layout.image("amd"),
        "--tag",
        "arm",
        "--architecture",
        "arm64",
    ]);
    let bundle = layout.unpack("arm", "bundle-arm");
    std::fs::write(bundle.join("rootfs/marker"), b"arm64 bytes\n").expect("write");
    layout.repack("arm", &bundle);
    layout.add_index(
        "multi",
        &[
            ("arm", "linux", "arm64", Some("v8")),
            ("amd", "linux", "amd64", None),
        ],
    );
    let reg = Registry::start();
    let host = reg.host();
    let all = Push {
        all: true,
        ..Push::default()
    };
    layout.push("multi", &format!("{host}/test/multi:v1"), &all);
    let list = Push {
        all: true,
        format: Some("v2s2"),
        ..Push::default()
    };
    layout.push("multi", &format!("{host}/test/list:v1"), &list);
    let node = node_for(&host, 300);
    let d = node.mount();
    for repo_tag in ["test/multi:v1", "test/list:v1"] {
        let dir = image_dir(&d, &host, repo_tag);
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let marker = dir.join("rootfs/marker");
                std::thread::spawn(move || read(marker).expect("marker"))
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().expect("reader"), b"amd64 bytes\n", "{repo_tag}");
        }
        let config: serde_json::Value =
            serde_json::from_slice(&read(dir.join("config.json")).expect("config")).expect("json");
        assert_eq!(config["architecture"], "amd64", "{repo_tag}");
    }
    let log = d.log();
    let opened = log
        .lines()
        .filter(|l| l.contains(" opened docker://"))
        .count();
    assert_eq!(opened, 2, "one open per image:\n{}", tail(&log, 30));
}

/// An image of one layer with `/marker` holding `text`, tagged `tag` in `layout`.
fn marker_image(layout: &OciLayout, tag: &str, text: &str) {
    umoci(&["new", "--image", &layout.image(tag)]);
    let bundle = layout.unpack(tag, &format!("bundle-{tag}"));
    std::fs::write(bundle.join("rootfs/marker"), text).expect("write marker");
    layout.repack(tag, &bundle);
}

#[test]
fn a_moved_tag_is_seen_after_the_ttl_and_a_stopped_registry_keeps_serving() {
    require_fuse!();
    let layout = OciLayout::new();
    marker_image(&layout, "a", "first\n");
    marker_image(&layout, "b", "second\n");
    let mut reg = Registry::start();
    let host = reg.host();
    layout.push("a", &format!("{host}/test/moving:v1"), &Push::default());
    let node = node_for(&host, 2);
    let d = node.mount();
    let marker = image_dir(&d, &host, "test/moving:v1").join("rootfs/marker");
    assert_reads(&marker, b"first\n");

    layout.push("b", &format!("{host}/test/moving:v1"), &Push::default());
    let moved = wait_until(Duration::from_secs(20), || {
        read(&marker).is_ok_and(|b| b == b"second\n")
    });
    assert!(moved, "the moved tag was not seen:\n{}", tail(&d.log(), 30));

    // Registry down: after the TTL the tag cannot be asked again; the last digest serves.
    reg.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert_reads(&marker, b"second\n");
    let warned = wait_until(Duration::from_secs(10), || {
        d.log().contains("registry unreachable")
    });
    assert!(warned, "{}", tail(&d.log(), 30));
}

#[test]
fn a_tampered_layer_is_refused_with_eio_and_the_log_names_it() {
    require_fuse!();
    let layout = OciLayout::new();
    marker_image(&layout, "a", "intact\n");
    let reg = Registry::start();
    let host = reg.host();
    layout.push("a", &format!("{host}/test/tampered:v1"), &Push::default());
    let layer = layer_digests(&layout, "a").pop().expect("a layer");
    let hex = layer.trim_start_matches("sha256:");
    let path = reg.blob_path(hex);
    let mut bytes = std::fs::read(&path).expect("registry blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("tamper");

    let node = node_for(&host, 300);
    let d = node.mount();
    let dir = image_dir(&d, &host, "test/tampered:v1");
    assert!(read(dir.join("manifest.json")).is_ok());
    let err = list_dir_within(dir.join("rootfs"), READ_DEADLINE).expect_err("tampered layer");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let logged = wait_until(Duration::from_secs(5), || d.log().contains(&layer));
    assert!(
        logged,
        "the log does not name {layer}:\n{}",
        tail(&d.log(), 30)
    );
    assert!(!node.stored_digests().contains(&hex.to_string()));
}

/// A registry behind token auth (and its token server) holding a marker image (`/marker` holding
/// `text`, image `a` of the layout returned) as `repo_tag`, pushed with credentials.
fn marker_behind_tokens(text: &str, repo_tag: &str) -> (LoopbackTokenServer, Registry, OciLayout) {
    let layout = OciLayout::new();
    marker_image(&layout, "a", text);
    let tokens = LoopbackTokenServer::start(TokenPolicy::default());
    let reg = Registry::start_with_token_auth(&tokens);
    let creds = Push {
        creds: Some(("pusher", "secret")),
        ..Push::default()
    };
    layout.push("a", &format!("{}/{repo_tag}", reg.host()), &creds);
    (tokens, reg, layout)
}

#[test]
fn token_auth_registry_serves_the_image() {
    require_fuse!();
    let (tokens, reg, _layout) = marker_behind_tokens("behind a token\n", "test/private:v1");
    let host = reg.host();
    let before = tokens.requests().len();
    let node = node_for(&host, 300);
    let d = node.mount();
    assert_reads(
        image_dir(&d, &host, "test/private:v1").join("rootfs/marker"),
        b"behind a token\n",
    );
    let asked: Vec<_> = tokens.requests().into_iter().skip(before).collect();
    assert!(!asked.is_empty(), "no token was requested");
    assert!(
        asked
            .iter()
            .all(|r| r.scopes == ["repository:test/private:pull"]),
        "{asked:?}"
    );
    // One token served the manifest, the config and the layer.
    assert_eq!(asked.len(), 1, "{asked:?}");
}

#[test]
fn blob_redirects_to_storage_are_followed_without_the_registry_token() {
    require_fuse!();
    let (tokens, reg, layout) = marker_behind_tokens("from blob storage\n", "test/redirected:v1");
    // Blob storage on another port, refusing any Authorization; in front of the registry an
    // nginx that sends every blob GET there, as registries backed by S3 do.
    let storage = common::publishers::BlobHost::start();
    let manifest = layout.manifest("a");
    let config = manifest["config"]["digest"].as_str().expect("config");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    for d in [config, layer] {
        let hex = d.trim_start_matches("sha256:");
        storage.put(hex, std::fs::read(layout.blob_path(d)).expect("blob"));
    }
    let front = Nginx::start_with(&format!(
        "location ~ ^/v2/.+/blobs/sha256:([0-9a-f]+)$ {{ return 307 {}; }}\n\
         location /v2/ {{ proxy_pass {}; }}",
        storage.url("$1"),
        reg.base_url()
    ));
    let host = format!("127.0.0.1:{}", front.port());
    let node = node_for(&host, 300);
    let d = node.mount();
    assert_reads(
        image_dir(&d, &host, "test/redirected:v1").join("rootfs/marker"),
        b"from blob storage\n",
    );
    let served = storage.server.requests();
    assert!(
        served.len() >= 2,
        "config and layer came from blob storage: {served:?}"
    );
    assert_eq!(storage.authorized_requests(), 0, "{served:?}");
    assert!(
        !tokens.requests().is_empty(),
        "the registry was asked with a token"
    );
}

#[test]
fn a_token_expiring_mid_mount_is_renewed() {
    require_fuse!();
    let (tokens, reg, _layout) = marker_behind_tokens("renewed\n", "test/short:v1");
    let host = reg.host();
    let node = node_for(&host, 300);
    let d = node.mount();
    let dir = image_dir(&d, &host, "test/short:v1");
    let before = tokens.requests().len();
    // Tokens issued now die about 5 s after issue, though the response says 300 s: the
    // daemon keeps its token until the registry refuses it.
    tokens.set_exp_offset(Some(-55));
    assert!(read(dir.join("manifest.json")).is_ok());
    assert_eq!(tokens.requests().len(), before + 1);
    tokens.set_exp_offset(None);
    // Wait until the registry refuses that token (its leeway ends 60 s after `exp`).
    std::thread::sleep(Duration::from_secs(7));
    assert_reads(dir.join("rootfs/marker"), b"renewed\n");
    assert_eq!(
        tokens.requests().len(),
        before + 2,
        "{:?}",
        tokens.requests()
    );
    assert!(
        d.log().contains("renewing its token"),
        "{}",
        tail(&d.log(), 20)
    );
}

#[test]
fn pull_prefetches_every_layer_and_the_mount_needs_no_registry() {
    require_fuse!();
    let (layout, reference, mut reg, host) = pushed_rich_image("test/pulled:v1", &Push::default());
    let node = node_for(&host, 300);
    let out = node.cli(&["pull", &format!("docker://{host}/test/pulled:v1")]);
    out.assert_success();
    assert!(out.stdout.contains("4 layers"), "{}", out.stdout);
    let held = node.stored_digests();
    for l in layer_digests(&layout, "rich") {
        assert!(
            held.contains(&l.trim_start_matches("sha256:").to_string()),
            "{l} not pulled"
        );
    }
    reg.stop();
    let d = node.mount();
    let got = walk(&image_dir(&d, &host, "test/pulled:v1").join("rootfs"));
    assert_matches_reference("pulled rootfs", &got, &reference);
    assert!(!d.log().contains("fetched"), "{}", tail(&d.log(), 20));
}

/// `curl` with `args`; returns the response headers and body.
fn curl(args: &[&str], url: &str) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let mut cmd = Command::new(require_program("curl", "curl"));
    cmd.args(["-s", "-g", "--fail-with-body", "--max-time", "60", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url);
    common::run(cmd, Duration::from_secs(90)).assert_success();
    (
        std::fs::read_to_string(&head).expect("headers"),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// Uploads `file` as a blob of `repo` (POST, then PUT with the digest); returns its digest.
fn upload_blob(base: &str, repo: &str, file: &Path) -> String {
    let digest = format!("sha256:{}", sha256_file(file));
    let (head, _) = curl(&["-X", "POST"], &format!("{base}/v2/{repo}/blobs/uploads/"));
    let location = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("upload location");
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let data = format!("@{}", file.display());
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
        ],
        &format!("{location}{sep}digest={digest}"),
    );
    digest
}

/// Pushes `sif` as an oras artifact `repo:tag` (what `oras push … image.sif:application/vnd.
/// sylabs.sif.layer.v1.sif` writes): an OCI manifest whose one layer is the SIF file.
fn push_sif_artifact(base: &str, repo: &str, tag: &str, sif: &Path, work: &Path) {
    let config = work.join("config.json");
    std::fs::write(&config, b"{}").expect("config");
    let config_digest = upload_blob(base, repo, &config);
    let sif_digest = upload_blob(base, repo, sif);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.sylabs.sif.config.v1+json",
            "digest": config_digest,
            "size": 2,
        },
        "layers": [{
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "digest": sif_digest,
            "size": std::fs::metadata(sif).expect("sif").len(),
            "annotations": {"org.opencontainers.image.title": "image.sif"},
        }],
    });
    put_manifest(base, repo, tag, &manifest, work);
}

/// PUTs `manifest` (an OCI image manifest) as `repo:tag`.
fn put_manifest(base: &str, repo: &str, tag: &str, manifest: &serde_json::Value, work: &Path) {
    let path = work.join(format!("manifest-{tag}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest).expect("json")).expect("manifest");
    let data = format!("@{}", path.display());
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &data,
        ],
        &format!("{base}/v2/{repo}/manifests/{tag}"),
    );
}

#[test]
fn a_non_distributable_layer_is_fetched_from_its_urls_or_refused_naming_it() {
    require_fuse!();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = OciLayout::new();
    marker_image(&layout, "a", "from afar\n");
    let built = layout.manifest("a");
    let layer = built["layers"][0].clone();
    let layer_digest = layer["digest"].as_str().expect("layer digest").to_string();
    let reg = Registry::start();
    let host = reg.host();
    let base = reg.base_url();
    // The config goes to the registry; the layer only to a web server.
    let config_digest = upload_blob(
        &base,
        "test/foreign",
        &layout.blob_path(built["config"]["digest"].as_str().expect("config")),
    );
    let origin = Nginx::start();
    std::fs::copy(
        layout.blob_path(&layer_digest),
        origin.docroot().join("layer.tar.gz"),
    )
    .expect("copy layer");
    let foreign = |urls: Vec<String>| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": built["config"].clone(),
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer["size"],
                "urls": urls,
            }],
        })
    };
    assert_eq!(built["config"]["digest"], config_digest.as_str());
    let url = format!("{}/layer.tar.gz", origin.base_url());
    put_manifest(
        &base,
        "test/foreign",
        "urls",
        &foreign(vec![url]),
        work.path(),
    );

    let node = node_for(&host, 300);
    let d = node.mount();
    let marker = image_dir(&d, &host, "test/foreign:urls").join("rootfs/marker");
    assert_reads(&marker, b"from afar\n");
    let log = AccessLog::read_settled(&origin.access_log_path());
    assert!(log.count("/layer.tar.gz") >= 1, "{log:?}");

    // Its urls do not answer (and the registry has no such blob): refused, and the log says
    // what the layer was and where it was looked for. Another image, as that layer is held now.
    let other = OciLayout::new();
    marker_image(&other, "b", "nowhere\n");
    let b = other.manifest("b");
    let config = other.blob_path(b["config"]["digest"].as_str().expect("config"));
    upload_blob(&base, "test/nowhere", &config);
    let dead = closed_port_url("layer.tar.gz");
    let mut manifest = foreign(vec![dead.clone()]);
    manifest["config"] = b["config"].clone();
    manifest["layers"][0]["digest"] = b["layers"][0]["digest"].clone();
    manifest["layers"][0]["size"] = b["layers"][0]["size"].clone();
    put_manifest(&base, "test/nowhere", "v1", &manifest, work.path());
    let dir = image_dir(&d, &host, "test/nowhere:v1");
    let err = list_dir_within(dir.join("rootfs"), READ_DEADLINE).expect_err("no such layer");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let short = &b["layers"][0]["digest"].as_str().expect("digest")[..19];
    let named = wait_until(Duration::from_secs(5), || {
        let log = d.log();
        log.contains(&format!("non-distributable layer {short}")) && log.contains(&dead)
    });
    assert!(named, "{}", tail(&d.log(), 20));
}

#[test]
fn an_oras_sif_artifact_reads_back_byte_identical() {
    require_fuse!();
    let work = tempfile::tempdir().expect("tempdir");
    let tree = work.path().join("tree");
    common::images::make_tree(&tree, 2 << 20, 256 << 10, 7);
    let squashfs = work.path().join("image.squashfs");
    common::images::mksquashfs(&tree, &squashfs);
    let sif = work.path().join("image.sif");
    common::images::sif_around(&squashfs, &sif);
    let reg = Registry::start();
    let host = reg.host();
    push_sif_artifact(&reg.base_url(), "sif/app", "1.0", &sif, work.path());

    let node = node_for(&host, 300);
    let d = node.mount();
    let file = d.path(&format!("oras/{host}/sif/app:1.0"));
    let want = std::fs::read(&sif).expect("sif");
    assert_reads(&file, &want);
    assert_eq!(
        std::fs::metadata(&file).expect("stat").len(),
        want.len() as u64
    );
    assert_eq!(
        xattr::get_string(&file, "user.lazycas.digest").expect("xattr"),
        format!("sha256:{}", sha256_hex(&want))
    );
    assert_eq!(
        xattr::get_string(&file, "user.lazycas.source").expect("xattr"),
        format!("oras://{host}/sif/app:1.0")
    );
    assert_eq!(
        xattr::get_string(&file, "user.lazycas.cached").expect("xattr"),
        format!("{0}/{0}", want.len())
    );
    let manifest = xattr::get_string(&file, "user.lazycas.manifest").expect("xattr");
    let (_, served) = curl(
        &["-H", "Accept: application/vnd.oci.image.manifest.v1+json"],
        &format!("{}/v2/sif/app/manifests/1.0", reg.base_url()),
    );
    assert_eq!(manifest, format!("sha256:{}", sha256_hex(&served)));
    assert_eq!(list_dir(d.path(&format!("oras/{host}/sif"))), ["app:1.0"]);
    // `lazycas pull oras://…` on another node: the SIF stored and pinned, listed as oras.
    let other = node_for(&host, 300);
    let reference = format!("oras://{host}/sif/app:1.0");
    other.cli(&["pull", &reference]).assert_success();
    assert!(other.stored_digests().contains(&sha256_hex(&want)));
    let ls = other.cli(&["ls"]);
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("no row for {reference}:\n{}", ls.stdout));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((words[1], words[4]), ("oras", "pulled"), "{row}");
    // An image is not an artifact: its manifest has no SIF layer.
    let layout = OciLayout::new();
    marker_image(&layout, "a", "not a sif\n");
    layout.push("a", &format!("{host}/test/notsif:v1"), &Push::default());
    let err = read(d.path(&format!("oras/{host}/test/notsif:v1"))).expect_err("not a SIF");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}

/// `cat path` as uid/gid 65534 (nobody): its exit status and stderr.
fn cat_as_nobody(path: &Path) -> (bool, String) {
    let mut cmd = Command::new(require_program("setpriv", "util-linux"));
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "cat",
    ])
    .arg(path);
    let out = common::run(cmd, Duration::from_secs(30));
    (out.success(), out.stderr)
}

#[test]
fn a_private_image_is_not_readable_by_another_uid() {
    require_fuse!((!is_root()).then(|| "switching to another uid needs root".to_string()));
    let layout = OciLayout::new();
    marker_image(&layout, "a", "private bytes\n");
    marker_image(&layout, "b", "public bytes\n");
    let tokens = LoopbackTokenServer::start(TokenPolicy::default());
    let private = Registry::start_with_token_auth(&tokens);
    let public = Registry::start();
    let (ph, qh) = (private.host(), public.host());
    let creds = Push {
        creds: Some(("pusher", "secret")),
        ..Push::default()
    };
    layout.push("a", &format!("{ph}/test/private:v1"), &creds);
    layout.push("b", &format!("{qh}/test/public:v1"), &Push::default());
    let node = Lazycas::with_config(Config {
        extra: "allow_other = true\n".into(),
        tail: format!(
            "\n[[asset]]\nname = \"team/private\"\nurl = \"docker://{ph}/test/private:v1\"\n\
             \n[[asset]]\nname = \"team/public\"\nurl = \"docker://{qh}/test/public:v1\"\n\
             \n[registries.\"{ph}\"]\ninsecure = true\nusername = \"pusher\"\npassword = \"secret\"\n\
             \n[registries.\"{qh}\"]\ninsecure = true\n"
        ),
        ..Config::default()
    });
    // The node's directory must not be what keeps another uid out.
    std::fs::set_permissions(&node.root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = node.mount();
    let private_dir = image_dir(&d, &ph, "test/private:v1");
    let public_dir = image_dir(&d, &qh, "test/public:v1");
    assert_reads(private_dir.join("rootfs/marker"), b"private bytes\n");
    assert_reads(public_dir.join("rootfs/marker"), b"public bytes\n");
    assert!(
        tokens.requests().iter().any(|r| r.authenticated),
        "the configured credentials were not sent: {:?}",
        tokens.requests()
    );

    let (ok, err) = cat_as_nobody(&public_dir.join("rootfs/marker"));
    assert!(ok, "another uid cannot read a public image: {err}");
    let (ok, err) = cat_as_nobody(&private_dir.join("rootfs/marker"));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let mode = std::fs::metadata(&private_dir)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o500);
    // Nor through sha256/.
    let layer = layer_digests(&layout, "a").pop().expect("layer");
    let by_digest = d.path(&format!("sha256/{}", layer.trim_start_matches("sha256:")));
    assert_eq!(
        std::fs::metadata(&by_digest)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
    let (ok, err) = cat_as_nobody(&by_digest);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    // Nor through a catalog entry naming the image; a public image's entry is readable.
    let entry = d.path("team/private");
    assert_reads(entry.join("rootfs/marker"), b"private bytes\n");
    let mode = std::fs::metadata(&entry)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o500);
    let (ok, err) = cat_as_nobody(&entry.join("rootfs/marker"));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, err) = cat_as_nobody(&d.path("team/public/rootfs/marker"));
    assert!(ok, "another uid cannot read a public image's entry: {err}");
}

/// `cat` (its real path) and the files it needs to run, as `ldd` lists them.
fn cat_with_libraries() -> Vec<PathBuf> {
    let cat = std::fs::canonicalize(require_program("cat", "coreutils")).expect("cat");
    let mut cmd = Command::new(require_program("ldd", "libc-bin"));
    cmd.arg(&cat);
    let out = common::run(cmd, Duration::from_secs(30));
    out.assert_success();
    let mut files = vec![cat];
    for word in out.stdout.split_whitespace() {
        if word.starts_with('/') {
            files.push(PathBuf::from(word));
        }
    }
    files
}

#[test]
fn runc_runs_with_the_mounted_rootfs_as_its_root() {
    require_fuse!((!is_root()).then(|| "runc needs root".to_string()));
    let runc = require_program("runc", "runc");
    let layout = OciLayout::new();
    umoci(&["new", "--image", &layout.image("run")]);
    let bundle = layout.unpack("run", "bundle-run");
    let rootfs = bundle.join("rootfs");
    let files = cat_with_libraries();
    let cat = files[0].to_str().expect("utf-8").to_string();
    for f in files {
        let real = std::fs::canonicalize(&f).expect("canonicalize");
        let dest = rootfs.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&real, &dest).expect("copy");
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    std::fs::write(rootfs.join("hello.txt"), b"hello from the image\n").expect("write");
    layout.repack("run", &bundle);
    let reg = Registry::start();
    let host = reg.host();
    layout.push("run", &format!("{host}/test/run:v1"), &Push::default());

    let node = node_for(&host, 300);
    let d = node.mount();
    let mounted = image_dir(&d, &host, "test/run:v1").join("rootfs");
    assert!(list_dir(&mounted).contains(&"hello.txt".to_string()));

    let spec_dir = tempfile::tempdir().expect("tempdir");
    let mut spec = Command::new(&runc);
    spec.arg("spec").current_dir(spec_dir.path());
    common::run(spec, Duration::from_secs(30)).assert_success();
    let config_path = spec_dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config.json")).expect("json");
    config["root"]["path"] = serde_json::json!(mounted.to_str().expect("utf-8"));
    assert_eq!(
        config["root"]["readonly"], true,
        "runc spec's root is read-only"
    );
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!([cat, "/hello.txt"]);
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("write");

    let id = format!("lazycas-test-{}", std::process::id());
    let mut run = Command::new(&runc);
    run.args(["run", "--bundle"]).arg(spec_dir.path()).arg(&id);
    let out = common::run(run, Duration::from_secs(60));
    let mut cleanup = Command::new(&runc);
    cleanup.args(["delete", "--force", &id]);
    let _ = common::run(cleanup, Duration::from_secs(30));
    assert!(
        out.success(),
        "runc run failed: {}\n{}",
        out.stderr,
        tail(&d.log(), 20)
    );
    assert_eq!(out.stdout, "hello from the image\n");
}

/// The hex digests of every blob of the image at `dir` (manifest, config, layers as the
/// registry serves them, and the config's diff_ids), read through the mount.
fn image_blob_hexes(dir: &Path) -> Vec<String> {
    let manifest_bytes = read(dir.join("manifest.json")).expect("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("JSON");
    let config: serde_json::Value =
        serde_json::from_slice(&read(dir.join("config.json")).expect("config.json")).expect("JSON");
    let mut digests = vec![manifest["config"]["digest"]
        .as_str()
        .expect("config digest")];
    for l in manifest["layers"].as_array().expect("layers") {
        digests.push(l["digest"].as_str().expect("layer digest"));
    }
    for d in config["rootfs"]["diff_ids"].as_array().expect("diff_ids") {
        digests.push(d.as_str().expect("diff_id"));
    }
    let mut hexes = vec![sha256_hex(&manifest_bytes)];
    hexes.extend(
        digests
            .into_iter()
            .map(|d| d.trim_start_matches("sha256:").to_string()),
    );
    hexes
}

/// A one-layer image (`/marker` holding "intact\n") pushed to a registry of its own, and a node
/// configured for that registry.
struct MarkerImage {
    node: Lazycas,
    host: String,
    repo_tag: &'static str,
    _registry: Registry,
}

impl MarkerImage {
    /// Pushes the image as `repo_tag` (zstd layers when asked).
    fn start(repo_tag: &'static str, zstd: bool) -> MarkerImage {
        let registry = Registry::start();
        let layout = OciLayout::new();
        marker_image(&layout, "a", "intact\n");
        let push = Push {
            compress_format: zstd.then_some("zstd"),
            format: zstd.then_some("oci"),
            ..Push::default()
        };
        layout.push("a", &format!("{}/{repo_tag}", registry.host()), &push);
        MarkerImage {
            node: node_for(&registry.host(), 300),
            host: registry.host(),
            repo_tag,
            _registry: registry,
        }
    }

    /// `docker://<registry>/<repo_tag>`.
    fn reference(&self) -> String {
        format!("docker://{}/{}", self.host, self.repo_tag)
    }

    /// The image directory in `d`'s mount.
    fn dir(&self, d: &Daemon) -> PathBuf {
        image_dir(d, &self.host, self.repo_tag)
    }
}

#[test]
fn ls_and_status_show_an_image_under_its_reference() {
    require_fuse!();
    let image = MarkerImage::start("test/listed:v1", true);
    let node = &image.node;
    let d = node.mount();
    let dir = image.dir(&d);
    assert_reads(dir.join("rootfs/marker"), b"intact\n");
    let hexes = image_blob_hexes(&dir);
    let reference = image.reference();
    let manifest = format!("sha256:{}", hexes[0]);

    let ls = node.cli(&["ls"]);
    ls.assert_success();
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("no row for {reference}:\n{}", ls.stdout));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[1], "image", "{row}");
    assert_eq!(words.last(), Some(&manifest.as_str()), "{row}");
    assert_eq!(words[2], words[3], "everything is resident: {row}");

    let status = node.cli(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let images = doc["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "{doc}");
    let image = &images[0];
    assert_eq!(image["reference"], reference.as_str());
    assert_eq!(image["manifest"], manifest.as_str());
    let roles: Vec<&str> = image["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter_map(|b| b["role"].as_str())
        .collect();
    assert_eq!(roles, ["manifest", "config", "layer", "decoded"]);
    // manifest, config, the zstd layer and its decoded tar: every one stored, counted once.
    let held: u64 = hexes
        .iter()
        .map(|h| std::fs::metadata(node.blob_path(h)).expect("stored").len())
        .sum();
    assert_eq!(image["resident"], held, "{image}");
    assert_eq!(image["size"], held, "{image}");
    let text = node.cli(&["status"]);
    text.assert_success();
    assert!(
        text.stdout.contains("images:         1") && text.stdout.contains(&reference),
        "{}",
        text.stdout
    );
}

#[test]
fn gc_keeps_an_open_images_blobs_and_collects_them_once_it_is_unused() {
    require_fuse!();
    let image = MarkerImage::start("test/collected:v1", true);
    let node = &image.node;
    let mut d = node.mount();
    let dir = image.dir(&d);
    assert_reads(dir.join("rootfs/marker"), b"intact\n");
    let hexes = image_blob_hexes(&dir);
    let manifest = read(dir.join("manifest.json")).expect("manifest.json");
    let all_stored = |what: &str| {
        let held = node.stored_digests();
        for h in &hexes {
            assert!(held.contains(h), "{what}: {h} is gone; store: {held:?}");
        }
    };
    all_stored("before gc");

    // In use by the mount: compressed layer, decoded tar, manifest and config all stay.
    let gc = node.cli(&["gc", "--to", "0"]);
    gc.assert_success();
    all_stored("gc while the image is open");
    assert_reads(dir.join("manifest.json"), &manifest);
    assert_reads(dir.join("rootfs/marker"), b"intact\n");

    // Unused: collectable as usual, and the image record goes with its last blob.
    d.stop();
    let gc = node.cli(&["gc", "--to", "0"]);
    gc.assert_success();
    let held = node.stored_digests();
    for h in &hexes {
        assert!(!held.contains(h), "{h} kept after the mount stopped");
    }
    let reference = image.reference();
    assert!(
        gc.stdout.contains(&format!("forgot {reference}")),
        "{}",
        gc.stdout
    );
    let ls = node.cli(&["ls"]);
    assert!(!ls.stdout.contains(&reference), "{}", ls.stdout);
}

#[test]
fn gc_keeps_a_pulled_image_and_verify_quarantines_a_bad_layer_naming_the_image() {
    require_fuse!();
    let image = MarkerImage::start("test/kept:v1", false);
    let node = &image.node;
    let reference = image.reference();
    node.cli(&["pull", &reference]).assert_success();
    let before = node.stored_digests();
    node.cli(&["gc", "--to", "0"]).assert_success();
    assert_eq!(
        node.stored_digests(),
        before,
        "gc removed blobs of a pulled image"
    );
    let ls = node.cli(&["ls"]);
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("no row for {reference}:\n{}", ls.stdout));
    assert!(row.contains(" pulled "), "{row}");

    let verified = node.cli(&["verify"]);
    verified.assert_success();
    assert!(
        verified.stdout.contains("0 quarantined"),
        "{}",
        verified.stdout
    );

    // A layer rotted on disk: verify finds it and names the image it belonged to.
    let d = node.mount();
    let dir = image.dir(&d);
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(dir.join("manifest.json")).expect("manifest")).expect("JSON");
    drop(d);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let path = node.blob_path(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).expect("stored layer");
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).expect("rot the layer");
    let verified = node.cli(&["verify"]);
    verified.assert_code(1);
    assert!(
        verified.stdout.contains(&format!("quarantined {layer}"))
            && verified.stdout.contains(&format!("layer of {reference}")),
        "{}",
        verified.stdout
    );
    assert!(!path.exists());

    // The mount fetches the layer again.
    let d = node.mount();
    assert_reads(image.dir(&d).join("rootfs/marker"), b"intact\n");
}

#[test]
fn image_nodes_carry_digest_reference_manifest_and_cached_xattrs() {
    require_fuse!();
    let image = MarkerImage::start("test/attrs:v1", false);
    let node = &image.node;
    let d = node.mount();
    let dir = image.dir(&d);
    let manifest_bytes = read(dir.join("manifest.json")).expect("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("JSON");
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_bytes));
    let config_digest = manifest["config"]["digest"].as_str().expect("config");
    let config_size = manifest["config"]["size"].as_u64().expect("config size");
    let layer_size = manifest["layers"][0]["size"].as_u64().expect("layer size");
    let reference = image.reference();
    let attr = |p: &Path, name: &str| {
        xattr::get_string(p, &format!("user.lazycas.{name}"))
            .unwrap_or_else(|e| panic!("{name} of {}: {e}", p.display()))
    };
    let image_size = manifest_bytes.len() as u64 + config_size + layer_size;
    let names = [
        "user.lazycas.digest",
        "user.lazycas.source",
        "user.lazycas.manifest",
        "user.lazycas.cached",
    ];
    for (node_path, digest) in [
        (dir.clone(), manifest_digest.as_str()),
        (dir.join("manifest.json"), manifest_digest.as_str()),
        (dir.join("config.json"), config_digest),
    ] {
        xattr::assert_lists(&node_path, &names);
        assert_eq!(
            attr(&node_path, "digest"),
            digest,
            "{}",
            node_path.display()
        );
        assert_eq!(attr(&node_path, "source"), reference);
        assert_eq!(attr(&node_path, "manifest"), manifest_digest);
    }
    assert_eq!(
        attr(&dir.join("manifest.json"), "cached"),
        format!("{0}/{0}", manifest_bytes.len())
    );
    // Before rootfs/ is touched only the manifest and config are here.
    let documents = manifest_bytes.len() as u64 + config_size;
    assert_eq!(attr(&dir, "cached"), format!("{documents}/{image_size}"));
    assert_reads(dir.join("rootfs/marker"), b"intact\n");
    let rootfs = dir.join("rootfs");
    xattr::assert_lists(&rootfs, &names);
    assert_eq!(attr(&rootfs, "digest"), manifest_digest);
    assert_eq!(
        attr(&rootfs, "cached"),
        format!("{image_size}/{image_size}")
    );
    assert_eq!(attr(&dir, "cached"), format!("{image_size}/{image_size}"));
    // A member names the layer it comes from.
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    assert_eq!(attr(&rootfs.join("marker"), "digest"), layer);
}

/// A node for `registry` whose catalog has `[[asset]]` entry `name` for `url`.
fn node_with_image_asset(registry: &str, name: &str, url: &str) -> Lazycas {
    Lazycas::with_config(Config {
        tail: format!(
            "\n[[asset]]\nname = \"{name}\"\nurl = \"{url}\"\n\n[registries.\"{registry}\"]\ninsecure = true\n"
        ),
        ..Config::default()
    })
}

/// The `lazycas ls` row of catalog entry `name`, split into words.
fn ls_row(node: &Lazycas, name: &str) -> Vec<String> {
    let ls = node.cli(&["ls"]);
    ls.assert_success();
    ls.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", ls.stdout))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn catalog_entries_by_tag_and_by_digest_show_the_image_as_docker_does() {
    require_fuse!();
    let (_layout, reference, _reg, host) = pushed_rich_image("test/app:v1", &Push::default());
    let node = node_with_image_asset(&host, "team/app", &format!("docker://{host}/test/app:v1"));
    let d = node.mount();
    let entry = d.path("team/app");
    assert_eq!(list_dir(&entry), ["config.json", "manifest.json", "rootfs"]);
    let by_tag = walk(&entry.join("rootfs"));
    assert_matches_reference("catalog entry by tag", &by_tag, &reference);
    let docker = image_dir(&d, &host, "test/app:v1");
    assert_eq!(
        walk(&docker.join("rootfs")),
        by_tag,
        "docker/ and the entry differ"
    );
    let manifest = read(entry.join("manifest.json")).expect("manifest.json");
    assert_eq!(
        read(docker.join("manifest.json")).expect("manifest"),
        manifest
    );
    assert_eq!(
        read(entry.join("config.json")).expect("config.json"),
        read(docker.join("config.json")).expect("config.json")
    );
    let digest = format!("sha256:{}", sha256_hex(&manifest));

    // Pinned by its manifest digest, added while mounted.
    let pinned = format!("docker://{host}/test/app:v1@{digest}");
    let added = node.cli(&["add", "team/pinned", &pinned]);
    added.assert_success();
    assert!(added.stdout.contains("(image)"), "{}", added.stdout);
    let entry = d.path("team/pinned");
    assert_eq!(
        read(entry.join("manifest.json")).expect("manifest"),
        manifest
    );
    let by_digest = walk(&entry.join("rootfs"));
    assert_matches_reference("catalog entry by digest", &by_digest, &reference);
    assert_eq!(by_digest, by_tag);

    // ls and status name the manifest each resolved to.
    for name in ["team/app", "team/pinned"] {
        let row = ls_row(&node, name);
        assert_eq!(row[1], "image", "{row:?}");
        assert_eq!(row.last(), Some(&digest), "{row:?}");
    }
    let status = node.cli(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let app = doc["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .find(|a| a["name"] == "team/app")
        .unwrap_or_else(|| panic!("no team/app in {doc}"));
    assert_eq!(app["kind"], "image", "{app}");
    assert_eq!(app["digest"], digest.as_str(), "{app}");
    assert_eq!(
        app["reference"],
        format!("docker://{host}/test/app:v1").as_str()
    );
}

#[test]
fn lazycas_add_and_pull_an_image_entry_then_the_mount_needs_no_registry() {
    require_fuse!();
    let image = MarkerImage::start("test/added:v1", false);
    let node = &image.node;
    let reference = image.reference();
    let refused = node.cli(&["add", "team/added", &reference, "--kind", "file"]);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("kind"), "{refused}");
    let added = node.cli(&["add", "team/added", &reference]);
    added.assert_success();
    assert!(added.stdout.contains("(image)"), "{}", added.stdout);
    assert_eq!(
        ls_row(node, "team/added").last().map(String::as_str),
        Some("(unresolved)")
    );

    node.cli(&["pull", "team/added"]).assert_success();
    let row = ls_row(node, &reference);
    assert!(row.contains(&"pulled".to_string()), "{row:?}");
    let manifest = row.last().cloned().expect("digest");
    assert_eq!(ls_row(node, "team/added").last(), Some(&manifest));

    drop(image._registry);
    let d = node.mount();
    let entry = d.path("team/added");
    assert_reads(entry.join("rootfs/marker"), b"intact\n");
    let served = read(entry.join("manifest.json")).expect("manifest.json");
    assert_eq!(format!("sha256:{}", sha256_hex(&served)), manifest);
    assert!(!d.log().contains("fetched"), "{}", tail(&d.log(), 20));
}

#[test]
fn gc_keeps_an_image_entrys_blobs_until_it_is_removed() {
    require_fuse!();
    let image = MarkerImage::start("test/entry:v1", true);
    let node = &image.node;
    let reference = image.reference();
    node.cli(&["add", "team/entry", &reference])
        .assert_success();
    let mut d = node.mount();
    let entry = d.path("team/entry");
    assert_reads(entry.join("rootfs/marker"), b"intact\n");
    let hexes = image_blob_hexes(&entry);
    d.stop();

    // Not open, not pulled: the catalog entry alone keeps every blob.
    let gc = node.cli(&["gc", "--to", "0"]);
    gc.assert_success();
    let held = node.stored_digests();
    for h in &hexes {
        assert!(
            held.contains(h),
            "{h} collected while the catalog names the image"
        );
    }

    node.cli(&["rm", "team/entry"]).assert_success();
    let gc = node.cli(&["gc", "--to", "0"]);
    gc.assert_success();
    let held = node.stored_digests();
    for h in &hexes {
        assert!(!held.contains(h), "{h} kept after the entry was removed");
    }
    assert!(
        gc.stdout.contains(&format!("forgot {reference}")),
        "{}",
        gc.stdout
    );
}
