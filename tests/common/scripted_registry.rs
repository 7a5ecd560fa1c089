//! Container images served by a `HostileServer` playing an OCI registry (insecure, no auth):
//! `publish_image` builds the config and manifest for layers given as plain tar bytes, gzips
//! them, and scripts `/v2/<repo>/manifests/<tag>`, `/manifests/<digest>` and `/blobs/<digest>`.
//! Tests then script any path differently (a manifest of an unknown type, a lying digest).

use super::content::sha256_hex;
use super::hostile_server::{HostileServer, Script};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::sync::Arc;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The TOML a config needs to use `server` as an insecure registry.
pub fn registry_config(server: &HostileServer) -> String {
    format!("\n[registries.\"{}\"]\ninsecure = true\n", server.host())
}

/// `data` as one gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Scripts `bytes` as the blob `sha256:<hex>` of `repo`; returns the digest.
pub fn publish_blob(server: &HostileServer, repo: &str, bytes: Vec<u8>) -> String {
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    server.route(
        &format!("/v2/{repo}/blobs/{digest}"),
        Script::Serve(Arc::from(bytes)),
    );
    digest
}

/// Scripts `manifest` (served with `media_type`) under `reference` and its own digest;
/// returns its digest.
pub fn publish_manifest(
    server: &HostileServer,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> String {
    let digest = format!("sha256:{}", sha256_hex(manifest));
    let script = Script::Document {
        body: Arc::from(manifest.to_vec()),
        headers: vec![
            ("Content-Type".into(), media_type.into()),
            ("Docker-Content-Digest".into(), digest.clone()),
        ],
    };
    server.route(&format!("/v2/{repo}/manifests/{reference}"), script.clone());
    server.route(&format!("/v2/{repo}/manifests/{digest}"), script);
    digest
}

/// An image of `layers` (uncompressed tars, bottom first) as `repo:tag`; returns the
/// manifest's bytes.
pub fn publish_image(server: &HostileServer, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(format!("\"sha256:{}\"", sha256_hex(tar)));
        let gz = gzip(tar);
        let size = gz.len();
        let digest = publish_blob(server, repo, gz);
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{size}}}"#
        ));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config_size = config.len();
    let config_digest = publish_blob(server, repo, config.into_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{}]}}"#,
        descriptors.join(",")
    )
    .into_bytes();
    publish_manifest(server, repo, tag, OCI_MANIFEST, &manifest);
    manifest
}
