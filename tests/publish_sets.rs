//! Acceptance tests for issue 12, asset sets: a MedPerf-style set (real YAML files, a real
//! `additional_files.tar.gz`, a SIF made with `siftool`) served from a real nginx, mounted by
//! the real daemon, each member verified against its own pin; the set directories have exactly
//! their layout's entries; and a `runc` container bind-mounts the set's `additional_files/`
//! read-only at `/mlcube_io/additional_files` and reads through it.

mod common;

use common::images::{make_tree, mksquashfs, sif_around};
use common::lazycas::tail;
use common::process::require_program;
use common::*;
use md5::Digest as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MANIFEST: &[u8] = b"name: fets\nplatform:\n  accelerator_count: 0\ntasks:\n  infer:\n    parameters:\n      inputs: {data_path: data/, parameters_file: parameters.yaml}\n";
const PARAMETERS: &[u8] = b"threshold: 0.5\nmodel: weights/model.bin\n";
const SECRET: &str = "additional file read through the set\n";

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

/// `additional_files.tar.gz` with `models/hello.txt` and a larger random `weights/model.bin`.
fn additional_files_tarball() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, path, data).expect("tar append");
    };
    add("models/hello.txt", SECRET.as_bytes());
    add("weights/model.bin", &random_bytes(300_000, unique_seed()));
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .expect("finish tarball")
}

/// A small SIF (a squashfs of a few real files) made with `siftool`.
fn sif_image(dir: &Path) -> Vec<u8> {
    require_program("siftool", "siftool");
    require_program("mksquashfs", "squashfs-tools");
    let tree = dir.join("tree");
    make_tree(&tree, 200_000, 100_000, unique_seed());
    let squash = dir.join("img.squashfs");
    mksquashfs(&tree, &squash);
    let sif = dir.join("fets.sif");
    sif_around(&squash, &sif);
    std::fs::read(&sif).expect("read sif")
}

struct Published {
    nginx: Nginx,
    tarball: Vec<u8>,
    sif: Vec<u8>,
}

fn publish(work: &Path) -> Published {
    let nginx = Nginx::start();
    let tarball = additional_files_tarball();
    let sif = sif_image(work);
    nginx.put("fets/container_config.yaml", MANIFEST.to_vec());
    nginx.put("fets/mlcube.yaml", MANIFEST.to_vec());
    nginx.put("fets/parameters.yaml", PARAMETERS.to_vec());
    nginx.put("fets/additional_files.tar.gz", tarball.clone());
    nginx.put("fets/fets.sif", sif.clone());
    Published {
        nginx,
        tarball,
        sif,
    }
}

fn container_set_toml(p: &Published) -> String {
    let u = |rel: &str| p.nginx.url(rel);
    format!(
        r#"
[[set]]
name = "medperf/fets"
layout = "container"
manifest = {{ url = "{}", sha256 = "{}" }}
parameters = {{ url = "{}", sha1 = "{}" }}
additional_files = {{ url = "{}", sha256 = "{}" }}
image = {{ url = "{}", md5 = "{}" }}
"#,
        u("fets/container_config.yaml"),
        sha256_hex(MANIFEST),
        u("fets/parameters.yaml"),
        sha1_hex(PARAMETERS),
        u("fets/additional_files.tar.gz"),
        sha256_hex(&p.tarball),
        u("fets/fets.sif"),
        md5_hex(&p.sif),
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn sets_show_exactly_their_layout_and_verify_each_member() {
    require_fuse!();
    let work = tempfile::tempdir().expect("tempdir");
    let p = publish(work.path());
    let node = Lazycas::with_config(Config {
        tail: container_set_toml(&p),
        ..Config::default()
    });
    // The same cube as MedPerf shows it, imported as an mlcube set; its parameters hash is the
    // older sha1 kind, its image a tarball URL.
    let record = serde_json::json!({
        "id": 37, "name": "fets", "state": "OPERATION", "is_valid": true,
        "git_mlcube_url": p.nginx.url("fets/mlcube.yaml"),
        "mlcube_hash": sha256_hex(MANIFEST),
        "git_parameters_url": p.nginx.url("fets/parameters.yaml"),
        "parameters_hash": sha1_hex(PARAMETERS),
        "additional_files_tarball_url": p.nginx.url("fets/additional_files.tar.gz"),
        "additional_files_tarball_hash": sha256_hex(&p.tarball),
        "image_tarball_url": p.nginx.url("fets/fets.sif"),
        "image_tarball_hash": sha256_hex(&p.sif),
        "image_hash": "", "metadata": {}, "user_metadata": {}
    });
    let record_path = work.path().join("cube.json");
    std::fs::write(&record_path, record.to_string()).expect("write record");
    node.cli(&[
        "import",
        "medperf",
        record_path.to_str().expect("utf-8 path"),
        "--name",
        "mlcubes/fets",
    ])
    .assert_success();
    // A record whose additional files are pinned to other bytes.
    let mut bad = record.clone();
    bad["additional_files_tarball_hash"] = serde_json::json!(sha256_hex(b"other"));
    bad["image_tarball_url"] = serde_json::json!("");
    std::fs::write(&record_path, bad.to_string()).expect("write record");
    node.cli(&[
        "import",
        "medperf",
        record_path.to_str().expect("utf-8 path"),
        "--name",
        "mlcubes/tampered",
    ])
    .assert_success();

    let d = node.mount();
    assert_eq!(list_dir(d.path("medperf")), ["fets"]);
    assert_eq!(
        sorted(list_dir(d.path("medperf/fets"))),
        [
            "additional_files",
            "container_config.yaml",
            "fets.sif",
            "parameters.yaml"
        ]
    );
    assert_eq!(
        sorted(list_dir(d.path("mlcubes/fets"))),
        ["mlcube.yaml", "workspace"]
    );
    assert_eq!(
        sorted(list_dir(d.path("mlcubes/fets/workspace"))),
        [".image", "additional_files", "parameters.yaml"]
    );
    assert_eq!(
        list_dir(d.path("mlcubes/fets/workspace/.image")),
        ["fets.sif"]
    );
    assert_eq!(
        sorted(list_dir(d.path("mlcubes/tampered/workspace"))),
        ["additional_files", "parameters.yaml"]
    );

    assert_reads(d.path("medperf/fets/container_config.yaml"), MANIFEST);
    assert_reads(d.path("medperf/fets/parameters.yaml"), PARAMETERS);
    assert_reads(d.path("medperf/fets/fets.sif"), &p.sif);
    assert_reads(
        d.path("medperf/fets/additional_files/models/hello.txt"),
        SECRET,
    );
    assert_eq!(
        sorted(list_dir(d.path("medperf/fets/additional_files"))),
        ["models", "weights"]
    );
    assert_reads(d.path("mlcubes/fets/mlcube.yaml"), MANIFEST);
    assert_reads(d.path("mlcubes/fets/workspace/.image/fets.sif"), &p.sif);
    assert_reads(
        d.path("mlcubes/fets/workspace/additional_files/models/hello.txt"),
        SECRET,
    );
    let refused = list_dir_within(
        d.path("mlcubes/tampered/workspace/additional_files"),
        Duration::from_secs(30),
    );
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EIO),
        "a tarball with the wrong sha256 was listed: {refused:?}"
    );
    let log = d.log();
    assert!(log.contains("sha1 is a weak pin") && log.contains("md5 is a weak pin"));
    assert!(log.contains("sha256 mismatch"), "{}", tail(&log, 30));

    // Removing the imported set removes its directory from the live mount.
    node.cli(&["rm", "mlcubes/tampered"]).assert_success();
    assert_eq!(list_dir(d.path("mlcubes")), ["fets"]);
}

/// A root for runc without busybox: `/bin/sh` (dash) and `/bin/cat` with the libraries `ldd`
/// names.
fn minimal_rootfs(root: &Path) {
    for dir in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir rootfs");
    }
    for (from, to) in [("/bin/dash", "bin/sh"), ("/bin/cat", "bin/cat")] {
        std::fs::copy(from, root.join(to)).unwrap_or_else(|e| panic!("copy {from}: {e}"));
        let out = Command::new("ldd").arg(from).output().expect("ldd");
        for lib in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("lib dir")).expect("mkdir lib dir");
            std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

#[test]
fn runc_reads_the_sets_additional_files_through_a_read_only_bind_mount() {
    require_fuse!(if is_root() {
        None
    } else {
        Some("runc needs root".to_string())
    });
    let runc = require_program("runc", "runc");
    let work = tempfile::tempdir().expect("tempdir");
    let p = publish(work.path());
    let node = Lazycas::with_config(Config {
        tail: container_set_toml(&p),
        ..Config::default()
    });
    let d = node.mount();
    let bundle = work.path().join("bundle");
    minimal_rootfs(&bundle.join("rootfs"));
    let spec = Command::new(&runc)
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc spec");
    assert!(spec.success(), "runc spec failed");
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read config.json"))
            .expect("parse config.json");
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "cat /mlcube_io/additional_files/models/hello.txt; \
         if echo x > /mlcube_io/additional_files/new 2>/dev/null; then echo WRITABLE; else echo READ-ONLY; fi"
    ]);
    let source = d.path("medperf/fets/additional_files");
    config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/mlcube_io/additional_files",
            "type": "bind",
            "source": source.to_str().expect("utf-8 path"),
            "options": ["rbind", "ro"]
        }));
    std::fs::write(&config_path, config.to_string()).expect("write config.json");
    let state = work.path().join("runc-state");
    let id = format!("lazycas-set-{}", std::process::id());
    let mut cmd = Command::new(&runc);
    cmd.arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    let out = run(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "runc run failed: {}\n{}",
        out.stderr,
        tail(&d.log(), 30)
    );
    let stdout = out.stdout.clone();
    assert_eq!(
        stdout,
        format!("{SECRET}READ-ONLY\n"),
        "container said {stdout:?}"
    );
}
