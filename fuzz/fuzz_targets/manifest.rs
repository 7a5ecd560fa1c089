//! Manifest and index parsing: `parse_manifest` under each content type a registry may send
//! (the first byte picks it), then what the mount asks of the result.
#![no_main]

use lazycas::oci::manifest::{parse_manifest, Platform};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 7] = [
    "",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "text/html; charset=utf-8",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(pick) % TYPES.len()];
    let Ok(parsed) = parse_manifest(content_type, bytes, None) else {
        return;
    };
    let _ = parsed.select_platform(&Platform::host());
    let _ = parsed.index();
    if let Ok(image) = parsed.image() {
        let _ = image.rootfs_layers();
        let _ = image.sif_layer();
    }
});
