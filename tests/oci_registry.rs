//! The `oci` format layer against real parts: Debian's docker-registry (open, and behind token
//! auth with a loopback token server), images built with umoci and pushed with skopeo, and
//! `umoci unpack` as the reference rootfs.
//!
//! Registry requests are made with `curl` here; the bytes and headers it gets are fed to
//! `lazycas::oci` (reference, manifest, auth) and the layer blobs to the whiteout merge (through
//! the `tar` crate and through the archive index), which must agree with `umoci unpack`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::oci_images::{
    assert_same_tree, build_rich_image, walk_rootfs, FsEntry, OciLayout, Push,
};
use common::process::{require_program, run};
use common::registry::Registry;
use common::sha256_hex;
use common::token_server::{LoopbackTokenServer, TokenPolicy, TOKEN_SERVICE};
use lazycas::archive::{
    ArchiveIndex, ArchiveReader, IndexBuilder, MemberId, MemberKind, SpanCache,
};
use lazycas::digest::Digest;
use lazycas::oci::auth::{pull_scope, Challenge, TokenCache, TokenResponse};
use lazycas::oci::manifest::{
    parse_manifest, Compression, LayerFormat, ManifestError, ManifestMediaType, ParsedManifest,
    Platform, MANIFEST_ACCEPT,
};
use lazycas::oci::reference::ImageReference;
use lazycas::oci::whiteout::{merge_layers, LayerListing, MergedTree, NodeId};
use lazycas::store::BytesBlob;

/// What one HTTP exchange returned.
struct Response {
    status: u16,
    headers: HashMap<String, Vec<String>>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// `curl` GET with extra headers.
fn curl(url: &str, headers: &[String]) -> Response {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let mut cmd = Command::new(require_program("curl", "curl"));
    cmd.args(["-s", "-g", "--max-time", "30", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    cmd.arg(url);
    run(cmd, Duration::from_secs(60)).assert_success();
    let head = std::fs::read_to_string(&head).expect("headers");
    // With redirects there may be several header blocks: keep the last.
    let last = head.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            map.entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    Response {
        status,
        headers: map,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn accept() -> String {
    format!("Accept: {MANIFEST_ACCEPT}")
}

/// The manifest URL of a reference (plain http: the registry is loopback).
fn manifest_url(r: &ImageReference) -> String {
    format!(
        "http://{}/v2/{}/manifests/{}",
        r.api_host(),
        r.repository(),
        r.manifest_reference()
    )
}

/// GETs and parses the manifest `r` names, verifying against `Docker-Content-Digest` (and the
/// reference's own digest when it has one).
fn fetch_manifest(r: &ImageReference, extra: &[String]) -> ParsedManifest {
    let mut headers = vec![accept()];
    headers.extend_from_slice(extra);
    let resp = curl(&manifest_url(r), &headers);
    assert_eq!(
        resp.status,
        200,
        "{}: {}",
        r,
        String::from_utf8_lossy(&resp.body)
    );
    let content_type = resp
        .header("content-type")
        .expect("content-type")
        .to_string();
    let served = Digest::parse(resp.header("docker-content-digest").expect("digest header"))
        .expect("digest header parses");
    let expected = r.digest().copied().unwrap_or(served);
    let m = parse_manifest(&content_type, &resp.body, Some(&expected))
        .unwrap_or_else(|e| panic!("{r}: {e}"));
    assert_eq!(m.digest, served);
    m
}

fn layout_layer_digests(layout: &OciLayout, tag: &str) -> Vec<String> {
    layout.manifest(tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

#[test]
fn plain_registry_manifests_parse_and_verify() {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    let reg = Registry::start();
    layout.push(
        "rich",
        &format!("{}/test/rich:v1", reg.host()),
        &Push::default(),
    );
    let docker = Push {
        format: Some("v2s2"),
        ..Push::default()
    };
    layout.push(
        "rich",
        &format!("{}/team/sub/docker:v1", reg.host()),
        &docker,
    );

    let tags = curl(&format!("{}/v2/test/rich/tags/list", reg.base_url()), &[]);
    assert_eq!(tags.status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags.body).expect("tags json");
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // OCI manifest, by tag then by digest.
    let r = ImageReference::parse(&format!("docker://{}/test/rich:v1", reg.host())).unwrap();
    assert_eq!(r.api_host(), reg.host());
    let m = fetch_manifest(&r, &[]);
    assert_eq!(m.media_type, ManifestMediaType::OciManifest);
    assert_eq!(
        m.digest.to_string(),
        layout.digest("rich"),
        "skopeo kept the manifest"
    );
    let image = m.image().unwrap();
    let layers = image.rootfs_layers().unwrap();
    let digests: Vec<String> = layers.iter().map(|l| l.blob.digest.to_string()).collect();
    assert_eq!(digests, layout_layer_digests(&layout, "rich"));
    assert_eq!(
        image.config.digest.to_string(),
        layout.manifest("rich")["config"]["digest"]
            .as_str()
            .unwrap()
    );
    for l in layers {
        assert_eq!(
            l.format,
            LayerFormat::Tar {
                compression: Compression::Gzip,
                distributable: true
            }
        );
        assert!(l.urls.is_empty());
        let blob = curl(
            &format!("{}/v2/test/rich/blobs/{}", reg.base_url(), l.blob.digest),
            &[],
        );
        assert_eq!(blob.status, 200);
        assert_eq!(blob.body.len() as u64, l.blob.size);
        assert_eq!(Digest::of(&blob.body), l.blob.digest);
    }
    let pinned = r.with_digest(m.digest);
    let by_digest = fetch_manifest(&pinned, &[]);
    assert_eq!(by_digest.digest, m.digest);
    let path_ref = ImageReference::from_mount_path(&pinned.mount_path()).unwrap();
    assert_eq!(path_ref, pinned);

    // The same bytes against another digest are refused.
    let resp = curl(&manifest_url(&r), &[accept()]);
    let wrong = Digest::of(b"not this manifest");
    let ct = resp.header("content-type").unwrap();
    match parse_manifest(ct, &resp.body, Some(&wrong)) {
        Err(ManifestError::DigestMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wrong, m.digest));
        }
        other => panic!("{other:?}"),
    }

    // Docker schema 2, in a repository with several path components.
    let r = ImageReference::parse(&format!("docker://{}/team/sub/docker:v1", reg.host())).unwrap();
    assert_eq!(r.repository(), "team/sub/docker");
    let m = fetch_manifest(&r, &[]);
    assert_eq!(m.media_type, ManifestMediaType::DockerManifest);
    let image = m.image().unwrap();
    assert_eq!(image.layers.len(), 4);
    assert!(image.layers.iter().all(|l| l.format
        == LayerFormat::Tar {
            compression: Compression::Gzip,
            distributable: true
        }));
    assert_eq!(
        image.config.media_type,
        "application/vnd.docker.container.image.v1+json"
    );

    // A missing tag is a 404, not something to parse.
    let missing =
        ImageReference::parse(&format!("docker://{}/test/rich:nope", reg.host())).unwrap();
    assert_eq!(curl(&manifest_url(&missing), &[accept()]).status, 404);
}

#[test]
fn zstd_layers_are_recognised() {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    // A registry of its own: skopeo reuses a gzip copy already in the registry otherwise.
    let reg = Registry::start();
    let zstd = Push {
        compress_format: Some("zstd"),
        ..Push::default()
    };
    layout.push("rich", &format!("{}/test/zstd:v1", reg.host()), &zstd);
    let r = ImageReference::parse(&format!("docker://{}/test/zstd:v1", reg.host())).unwrap();
    let m = fetch_manifest(&r, &[]);
    let layers = m.image().unwrap().rootfs_layers().unwrap();
    assert_eq!(layers.len(), 4);
    for l in layers {
        assert_eq!(
            l.format,
            LayerFormat::Tar {
                compression: Compression::Zstd,
                distributable: true
            },
            "{}",
            l.blob.media_type
        );
        let blob = curl(
            &format!("{}/v2/test/zstd/blobs/{}", reg.base_url(), l.blob.digest),
            &[],
        );
        assert_eq!(&blob.body[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
        assert_eq!(Digest::of(&blob.body), l.blob.digest);
    }
}

#[test]
fn multi_platform_index_selects_platforms() {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    layout.retag_for_platform("rich", "rich-arm64", "linux", "arm64");
    layout.retag_for_platform("rich", "rich-armv7", "linux", "arm");
    let index_digest = layout.add_index(
        "multi",
        &[
            ("rich-armv7", "linux", "arm", Some("v7")),
            ("rich-arm64", "linux", "arm64", Some("v8")),
            ("rich", "linux", "amd64", None),
        ],
    );
    let reg = Registry::start();
    let all = Push {
        all: true,
        ..Push::default()
    };
    layout.push("multi", &format!("{}/test/multi:v1", reg.host()), &all);
    let list = Push {
        all: true,
        format: Some("v2s2"),
        ..Push::default()
    };
    layout.push("multi", &format!("{}/test/list:v1", reg.host()), &list);

    let r = ImageReference::parse(&format!("docker://{}/test/multi:v1", reg.host())).unwrap();
    let index = fetch_manifest(&r, &[]);
    assert_eq!(index.media_type, ManifestMediaType::OciIndex);
    assert_eq!(index.digest.to_string(), index_digest);
    assert_eq!(index.index().unwrap().len(), 3);
    assert!(index.image().is_err());
    let pick = |m: &ParsedManifest, p: &str| {
        m.select_platform(&Platform::parse(p).unwrap())
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .digest
    };
    assert_eq!(
        pick(&index, "linux/amd64").to_string(),
        layout.digest("rich")
    );
    assert_eq!(
        pick(&index, "linux/arm64").to_string(),
        layout.digest("rich-arm64")
    );
    assert_eq!(
        pick(&index, "linux/arm").to_string(),
        layout.digest("rich-armv7")
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        index
            .select_platform(&Platform::host())
            .unwrap()
            .digest
            .to_string(),
        layout.digest("rich")
    );
    let err = index
        .select_platform(&Platform::parse("linux/riscv64").unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("linux/riscv64"), "{err}");

    // The Docker manifest list: skopeo converted every manifest, so follow the selection.
    let r = ImageReference::parse(&format!("docker://{}/test/list:v1", reg.host())).unwrap();
    let list = fetch_manifest(&r, &[]);
    assert_eq!(list.media_type, ManifestMediaType::DockerManifestList);
    let arm64 = pick(&list, "linux/arm64/v8");
    let m = fetch_manifest(&r.with_digest(arm64), &[]);
    assert_eq!(m.media_type, ManifestMediaType::DockerManifest);
    let config = &m.image().unwrap().config;
    let blob = curl(
        &format!("{}/v2/test/list/blobs/{}", reg.base_url(), config.digest),
        &[],
    );
    assert_eq!(Digest::of(&blob.body), config.digest);
    let config: serde_json::Value = serde_json::from_slice(&blob.body).unwrap();
    assert_eq!(config["architecture"], "arm64");
}

/// A registry behind token auth holding the rich image at `repo_tag`, pushed with credentials.
fn token_registry_with_rich_image(repo_tag: &str) -> (LoopbackTokenServer, Registry) {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    let tokens = LoopbackTokenServer::start(TokenPolicy::default());
    let reg = Registry::start_with_token_auth(&tokens);
    let creds = Push {
        creds: Some(("pusher", "secret")),
        ..Push::default()
    };
    layout.push("rich", &format!("{}/{repo_tag}", reg.host()), &creds);
    (tokens, reg)
}

#[test]
fn token_auth_challenge_token_and_cache() {
    let (tokens, reg) = token_registry_with_rich_image("test/private:v1");
    assert!(
        tokens.requests().iter().any(|t| t.authenticated
            && t.scopes
                .iter()
                .any(|s| s.contains("test/private") && s.contains("push"))),
        "skopeo authenticated for push: {:?}",
        tokens.requests()
    );

    // Anonymous: 401 with a Bearer challenge naming realm, service and scope.
    let r = ImageReference::parse(&format!("docker://{}/test/private:v1", reg.host())).unwrap();
    let denied = curl(&manifest_url(&r), &[accept()]);
    assert_eq!(denied.status, 401);
    let challenge = Challenge::preferred(denied.all("www-authenticate")).unwrap();
    let Challenge::Bearer(bearer) = challenge else {
        panic!("not a Bearer challenge: {challenge:?}");
    };
    assert_eq!(bearer.realm.as_str(), tokens.realm());
    assert_eq!(bearer.service.as_deref(), Some(TOKEN_SERVICE));
    let scope = pull_scope(r.repository());
    assert_eq!(bearer.scope.as_deref(), Some(scope.as_str()));

    // The token request, built from the challenge.
    let before = SystemTime::now();
    let token_resp = curl(bearer.token_url(&[], None).as_str(), &[]);
    assert_eq!(token_resp.status, 200);
    let token = TokenResponse::parse(&token_resp.body).unwrap();
    assert_eq!(token.expires_in, Duration::from_secs(300));
    let issued = token.issued_at.expect("issued_at");
    let skew = issued
        .duration_since(before)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(5), "issued_at {issued:?}");
    let last = tokens.requests().pop().expect("a token request");
    assert_eq!(last.scopes, std::slice::from_ref(&scope));
    assert_eq!(last.service.as_deref(), Some(TOKEN_SERVICE));
    assert!(!last.authenticated);

    // Cached and reused; the manifest then parses and verifies.
    let cache = TokenCache::new();
    let now = Instant::now();
    cache.insert(reg.host().as_str(), &scope, &token, now, SystemTime::now());
    let cached = cache.get(&reg.host(), &scope, now).expect("cached token");
    let auth = format!("Authorization: Bearer {cached}");
    let m = fetch_manifest(&r, std::slice::from_ref(&auth));
    assert_eq!(m.media_type, ManifestMediaType::OciManifest);
    assert_eq!(m.image().unwrap().layers.len(), 4);
    assert!(cache
        .get(&reg.host(), &scope, now + Duration::from_secs(295))
        .is_none());

    // A pull token does not open another repository.
    let other = curl(
        &format!("{}/v2/test/other/manifests/v1", reg.base_url()),
        &[accept(), auth.clone()],
    );
    assert_eq!(other.status, 401);
    let challenge = Challenge::preferred(other.all("www-authenticate")).unwrap();
    assert!(
        matches!(&challenge, Challenge::Bearer(b) if b.scope.as_deref() == Some("repository:test/other:pull")),
        "{challenge:?}"
    );

    // A forged token is refused and the challenge says so.
    let forged = curl(
        &manifest_url(&r),
        &[accept(), "Authorization: Bearer e30.e30.AAAA".to_string()],
    );
    assert_eq!(forged.status, 401);
    let challenge = Challenge::preferred(forged.all("www-authenticate")).unwrap();
    assert!(
        matches!(&challenge, Challenge::Bearer(b) if b.error.as_deref() == Some("invalid_token")),
        "{challenge:?}"
    );
}

// ---- flattening against umoci unpack --------------------------------------------------------

/// What a layer's tar says about one member.
#[derive(Clone)]
struct TarMember {
    entry: FsEntry,
}

/// Lists a gzip layer with the `tar` crate into a `LayerListing` plus member metadata.
fn list_layer(path: &Path) -> (LayerListing, HashMap<MemberId, TarMember>) {
    let file = std::fs::File::open(path).expect("layer blob");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut listing = LayerListing::new();
    let mut members = HashMap::new();
    for (i, entry) in archive.entries().expect("entries").enumerate() {
        let mut entry = entry.expect("tar entry");
        let path = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let id = MemberId(i as u64 + 2);
        let kind = match header.entry_type() {
            tar::EntryType::Directory => MemberKind::Dir,
            tar::EntryType::Symlink => MemberKind::Symlink,
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().expect("link target").into_owned();
                listing.link(&path, &target);
                continue;
            }
            _ => MemberKind::File,
        };
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
        let target = entry
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        let size = match kind {
            MemberKind::Dir => 0,
            MemberKind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
            _ => data.len() as u64,
        };
        let fs_entry = FsEntry {
            kind: match kind {
                MemberKind::Dir => 'd',
                MemberKind::Symlink => 'l',
                _ => 'f',
            },
            mode: header.mode().expect("mode") & 0o7777,
            uid: header.uid().expect("uid") as u32,
            gid: header.gid().expect("gid") as u32,
            size,
            target: if kind == MemberKind::Symlink {
                target
            } else {
                None
            },
            sha256: (kind == MemberKind::File).then(|| sha256_hex(&data)),
            mtime: header.mtime().expect("mtime") as i64,
        };
        listing.insert(&path, kind, id);
        members.insert(id, TarMember { entry: fs_entry });
    }
    (listing, members)
}

/// The merged tree as `path -> (entry, nlink)`, with `describe` giving each node's entry.
fn flatten(
    tree: &MergedTree,
    mut describe: impl FnMut(NodeId) -> FsEntry,
) -> BTreeMap<String, (FsEntry, u64)> {
    tree.iter()
        .skip(1)
        .map(|(id, node)| {
            let path = String::from_utf8_lossy(&tree.path(id)).into_owned();
            (path, (describe(id), u64::from(node.nlink)))
        })
        .collect()
}

#[test]
fn whiteout_merge_matches_umoci_unpack() {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    let bundle = layout.unpack("rich", "reference");
    let reference = walk_rootfs(&bundle.join("rootfs"));
    // The rich image's rules are all visible in the reference.
    for (path, kind) in [
        ("opq/new", 'f'),
        ("opq/later", 'f'),
        ("lnk", 'l'),
        ("lnk2", 'f'),
        ("fod", 'f'),
        ("dof/inner", 'f'),
        ("d/sub", 'f'),
        ("etc/hard", 'f'),
        ("hl/one", 'f'),
    ] {
        assert_eq!(reference[path].0.kind, kind, "{path} in the umoci rootfs");
    }
    for gone in [
        "gone",
        "del.txt",
        "opq/old1",
        "opq/sub",
        "fod/inner",
        "hl/two",
        "empty",
    ] {
        assert!(!reference.contains_key(gone), "{gone} in the umoci rootfs");
    }
    assert_eq!(reference["etc/a"].1, 2, "etc/a and etc/hard are one inode");

    // Through the tar crate.
    let layers: Vec<(LayerListing, HashMap<MemberId, TarMember>)> = layout
        .layer_paths("rich")
        .iter()
        .map(|p| list_layer(p))
        .collect();
    assert_eq!(layers.len(), 4);
    let Ok(tree) = merge_layers(layers.iter().map(|(l, _)| l));
    let got = flatten(&tree, |id| {
        let origin = tree.node(id).unwrap().origin;
        match layers[origin.layer].1.get(&origin.member) {
            Some(m) => m.entry.clone(),
            None => panic!(
                "{} comes from an implied directory",
                String::from_utf8_lossy(&tree.path(id))
            ),
        }
    });
    assert_same_tree(
        "tar-crate merge",
        &with_file_nlink(&got),
        &with_file_nlink(&reference),
    );

    // Through the archive index, reading every file's bytes with the archive reader.
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("lazycas.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    ArchiveIndex::init_schema(&conn).unwrap();
    let mut indexes = Vec::new();
    for path in layout.layer_paths("rich") {
        let bytes = std::fs::read(&path).unwrap();
        let digest = Digest::of(&bytes);
        let mut builder = IndexBuilder::new();
        builder.feed(&bytes).unwrap();
        ArchiveIndex::save(&conn, &digest, builder.finish().unwrap()).unwrap();
        let index = Arc::new(ArchiveIndex::open(&db, &digest).unwrap());
        let reader = ArchiveReader::new(
            index.clone(),
            Arc::new(BytesBlob::new(bytes)),
            Arc::new(SpanCache::new(1 << 20)),
        );
        indexes.push((index, reader));
    }
    let tree = merge_layers(indexes.iter().map(|(i, _)| i.clone())).expect("merge indexes");
    let got = flatten(&tree, |id| {
        let origin = tree.node(id).unwrap().origin;
        let (index, reader) = &indexes[origin.layer];
        let m = index.member(origin.member).expect("member");
        let kind = match m.kind {
            MemberKind::Dir => 'd',
            MemberKind::Symlink => 'l',
            MemberKind::File => 'f',
            _ => 'p',
        };
        FsEntry {
            kind,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            target: (m.kind == MemberKind::Symlink).then(|| {
                String::from_utf8_lossy(&index.readlink(m.id).expect("readlink")).into_owned()
            }),
            sha256: (m.kind == MemberKind::File).then(|| {
                let mut data = Vec::new();
                while (data.len() as u64) < m.size {
                    let piece = reader
                        .read(m.id, data.len() as u64, 64 * 1024)
                        .expect("read");
                    assert!(!piece.is_empty(), "short read");
                    data.extend_from_slice(&piece);
                }
                sha256_hex(&data)
            }),
            mtime: m.mtime,
        }
    });
    // The archive index records which directories a layer only implies (layer 4 lists etc/a
    // but not etc/), so such a directory keeps the attributes of the layer below, mtime
    // included, as umoci's extraction does.
    assert_same_tree(
        "archive-index merge",
        &with_file_nlink(&got),
        &with_file_nlink(&reference),
    );
    let root = tree.node(NodeId::ROOT).unwrap();
    assert_eq!(root.origin.layer, 3);
}

/// Keeps the link count of non-directories only (a directory's count follows from the tree).
fn with_file_nlink(m: &BTreeMap<String, (FsEntry, u64)>) -> BTreeMap<String, (FsEntry, u64)> {
    m.iter()
        .map(|(p, (e, n))| (p.clone(), (e.clone(), if e.kind == 'd' { 0 } else { *n })))
        .collect()
}

#[test]
fn tampered_storage_is_caught_and_restart_keeps_content() {
    let layout = OciLayout::new();
    build_rich_image(&layout, "rich");
    let mut reg = Registry::start();
    layout.push(
        "rich",
        &format!("{}/test/rich:v1", reg.host()),
        &Push::default(),
    );
    let r = ImageReference::parse(&format!("docker://{}/test/rich:v1", reg.host())).unwrap();
    let m = fetch_manifest(&r, &[]);

    // Stopped, the registry refuses connections; started again on its port, it serves the same.
    let port = reg.port();
    reg.stop();
    assert!(!common::process::port_open(port));
    reg.start_again();
    assert_eq!(reg.port(), port);
    assert_eq!(fetch_manifest(&r, &[]).digest, m.digest);

    // A layer changed in the registry's storage is served as is: only the digest check sees it.
    let layer = m.image().unwrap().layers[0].blob.clone();
    let path = reg.blob_path(&layer.digest.hex());
    let mut bytes = std::fs::read(&path).expect("stored layer");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("tamper layer");
    let served = curl(
        &format!("{}/v2/test/rich/blobs/{}", reg.base_url(), layer.digest),
        &[],
    );
    assert_eq!(served.status, 200);
    assert_eq!(served.body, bytes);
    assert_ne!(Digest::of(&served.body), layer.digest);

    // The same for the manifest: the registry still announces the old digest.
    let path = reg.blob_path(&m.digest.hex());
    let original = std::fs::read(&path).expect("stored manifest");
    let tampered =
        String::from_utf8(original.clone())
            .unwrap()
            .replacen("\"size\":", "\"size\": ", 1);
    assert_ne!(tampered.as_bytes(), &original[..]);
    std::fs::write(&path, &tampered).expect("tamper manifest");
    let resp = curl(&manifest_url(&r), &[accept()]);
    assert_eq!(resp.status, 200);
    let announced = Digest::parse(resp.header("docker-content-digest").unwrap()).unwrap();
    assert_eq!(announced, m.digest);
    let err = parse_manifest(
        resp.header("content-type").unwrap(),
        &resp.body,
        Some(&announced),
    )
    .unwrap_err();
    assert!(
        matches!(err, ManifestError::DigestMismatch { expected, .. } if expected == m.digest),
        "{err}"
    );
}

#[test]
fn expired_token_is_refused_and_renewed() {
    let (tokens, reg) = token_registry_with_rich_image("test/short:v1");
    let r = ImageReference::parse(&format!("docker://{}/test/short:v1", reg.host())).unwrap();
    let scope = pull_scope(r.repository());
    let get_token = |challenge_source: &Response| {
        let Ok(Challenge::Bearer(b)) =
            Challenge::preferred(challenge_source.all("www-authenticate"))
        else {
            panic!("no Bearer challenge");
        };
        let resp = curl(b.token_url(&[], None).as_str(), &[]);
        (b, TokenResponse::parse(&resp.body).expect("token response"))
    };

    // Tokens issued from now on die about 5 s after issue (the registry's leeway is 60 s).
    tokens.set_exp_offset(Some(-55));
    let first = curl(&manifest_url(&r), &[accept()]);
    assert_eq!(first.status, 401);
    let (_, token) = get_token(&first);
    let bearer = format!("Authorization: Bearer {}", token.token);
    let m = fetch_manifest(&r, std::slice::from_ref(&bearer));
    assert_eq!(m.image().unwrap().layers.len(), 4);

    // Mid-use, the registry starts answering 401 with a fresh challenge.
    let mut stale = None;
    let expired = common::wait_until(Duration::from_secs(30), || {
        let resp = curl(&manifest_url(&r), &[accept(), bearer.clone()]);
        let done = resp.status == 401;
        stale = Some(resp);
        done
    });
    assert!(expired, "the registry kept accepting an expired token");
    let stale = stale.expect("a response");
    tokens.set_exp_offset(None);
    let (challenge, renewed) = get_token(&stale);
    assert_eq!(challenge.scope.as_deref(), Some(scope.as_str()));
    assert_ne!(renewed.token, token.token);

    // The cache hands out the renewed token, not the invalidated one.
    let cache = TokenCache::new();
    let now = Instant::now();
    cache.insert(&reg.host(), &scope, &token, now, SystemTime::now());
    cache.invalidate(&reg.host(), &scope);
    assert!(cache.get(&reg.host(), &scope, now).is_none());
    cache.insert(&reg.host(), &scope, &renewed, now, SystemTime::now());
    let cached = cache.get(&reg.host(), &scope, now).expect("renewed token");
    let bearer = format!("Authorization: Bearer {cached}");
    assert_eq!(fetch_manifest(&r, &[bearer]).digest, m.digest);
}
