//! Acceptance tests for issue 12, web directories with sidecars: a real nginx autoindex page
//! (and an Apache-format page saved as a fixture, served as the directory's index) lists
//! images; each image with a casa-distro sidecar (`<image>.json` with `md5` and `size`) is a
//! catalog entry under the directory's name, weakly pinned by that md5; an image without a
//! checksum is skipped with a log line; the daemon lists again every `refresh_secs`, picking
//! up a new image and dropping a removed one.

mod common;

use common::lazycas::tail;
use common::*;
use md5::Digest as _;
use std::time::Duration;

const REFRESH_SECS: u64 = 2;

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

/// Publishes `name` in `dir` with a casa-distro sidecar stating `md5` (its own when `None`).
fn publish(nginx: &Nginx, dir: &str, name: &str, len: usize, md5: Option<&str>) -> Vec<u8> {
    let bytes = random_bytes(len, unique_seed());
    let sum = md5.map_or_else(|| md5_hex(&bytes), str::to_string);
    let sidecar = serde_json::json!({
        "image": name,
        "md5": sum,
        "size": bytes.len(),
        "name": name.trim_end_matches(".sif"),
        "type": "run",
        "system": "ubuntu-22.04",
        "distro": "brainvisa",
        "version": "5.3.0"
    });
    nginx.put(
        &format!("{dir}/{name}.json"),
        sidecar.to_string().into_bytes(),
    );
    nginx.put(&format!("{dir}/{name}"), bytes.clone());
    bytes
}

fn listing(d: &Daemon, dir: &str) -> Vec<String> {
    let mut v = list_dir_within(d.path(dir), Duration::from_secs(10)).unwrap_or_default();
    v.sort();
    v
}

fn wait_for_listing(d: &Daemon, dir: &str, want: &[&str], within: Duration) {
    let ok = wait_until(within, || listing(d, dir) == want);
    assert!(
        ok,
        "{dir} shows {:?}, expected {want:?}\n{}",
        listing(d, dir),
        tail(&d.log(), 30)
    );
}

#[test]
fn a_directory_subscription_follows_the_autoindex_page() {
    require_fuse!();
    let nginx = Nginx::start_with(
        "location /casa/ { autoindex on; }\nlocation /apache/ { index index.html; }",
    );
    let run = publish(&nginx, "casa", "casa-run-5.3.sif", 200_000, None);
    publish(
        &nginx,
        "casa",
        "casa-dev-5.3.sif",
        50_000,
        Some(&md5_hex(b"other")),
    );
    nginx.put(
        "casa/casa-nochecksum.sif",
        random_bytes(1000, unique_seed()),
    );
    nginx.put("casa/notes.txt", b"not an image".to_vec());
    // The Apache page lists casa-dev-5.3.sif (with sidecar), a README, a subdirectory and
    // sorting links.
    let apache_page = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/apache_autoindex.html"),
    )
    .expect("read apache fixture");
    nginx.put("apache/index.html", apache_page);
    let dev = publish(&nginx, "apache", "casa-dev-5.3.sif", 160_000, None);
    nginx.put("apache/README.txt", b"readme".to_vec());

    let node = Lazycas::with_config(Config {
        tail: format!(
            "\n[[directory]]\nurl = \"{}\"\nname = \"casa\"\nrefresh_secs = {REFRESH_SECS}\n\
             \n[[directory]]\nurl = \"{}\"\nname = \"mirror/apache/\"\nrefresh_secs = 3600\n",
            nginx.url("casa/"),
            nginx.url("apache/"),
        ),
        ..Config::default()
    });
    let d = node.mount();
    let settle = Duration::from_secs(REFRESH_SECS * 3 + 10);
    wait_for_listing(
        &d,
        "casa",
        &["casa-dev-5.3.sif", "casa-run-5.3.sif"],
        settle,
    );
    wait_for_listing(&d, "mirror/apache", &["casa-dev-5.3.sif"], settle);
    assert_reads(d.path("casa/casa-run-5.3.sif"), &run);
    assert_reads(d.path("mirror/apache/casa-dev-5.3.sif"), &dev);
    match read(d.path("casa/casa-dev-5.3.sif")) {
        Ok(b) => panic!(
            "an image whose sidecar md5 is wrong was served ({} bytes)",
            b.len()
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
    }
    let log = d.log();
    assert!(
        log.contains("casa-nochecksum.sif: no checksum"),
        "{}",
        tail(&log, 30)
    );
    assert!(log.contains("md5 mismatch") && log.contains("md5 is a weak pin"));

    // A new image appears after a refresh; a removed one goes.
    let new = publish(&nginx, "casa", "casa-run-5.4.sif", 30_000, None);
    for gone in ["casa/casa-dev-5.3.sif", "casa/casa-dev-5.3.sif.json"] {
        std::fs::remove_file(nginx.docroot().join(gone)).expect("remove published file");
    }
    wait_for_listing(
        &d,
        "casa",
        &["casa-run-5.3.sif", "casa-run-5.4.sif"],
        settle,
    );
    assert_reads(d.path("casa/casa-run-5.4.sif"), &new);
}

#[test]
fn allow_unpinned_keeps_images_without_a_checksum() {
    require_fuse!();
    let nginx = Nginx::start_with("location /casa/ { autoindex on; }");
    let bare = random_bytes(5000, unique_seed());
    nginx.put("casa/bare.sif", bare.clone());
    let node = Lazycas::with_config(Config {
        tail: format!(
            "\n[[directory]]\nurl = \"{}\"\nname = \"casa\"\nrefresh_secs = 60\nallow_unpinned = true\n",
            nginx.url("casa/"),
        ),
        ..Config::default()
    });
    let d = node.mount();
    wait_for_listing(&d, "casa", &["bare.sif"], Duration::from_secs(15));
    assert_reads(d.path("casa/bare.sif"), &bare);
}
