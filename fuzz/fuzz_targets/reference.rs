//! Reference parsing: `docker://`, `oras://` (`ImageReference`), mount paths under `docker/`,
//! and the catalog's `library://`, `shub://` and URL references (`publish::parse_reference`).
//! A reference that parses prints and parses back to itself.
#![no_main]

use lazycas::oci::reference::ImageReference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ImageReference::parse(s) {
        let path = r.mount_path();
        let again = ImageReference::from_mount_path(&path)
            .unwrap_or_else(|e| panic!("{s:?}: its mount path {path:?} does not parse: {e}"));
        assert_eq!(again.mount_path(), path);
        let _ = r.manifest_reference();
        let _ = r.api_host();
    }
    let _ = ImageReference::parse_docker_name(s);
    let _ = ImageReference::from_mount_path(s);
    let _ = lazycas::publish::parse_reference(s);
});
