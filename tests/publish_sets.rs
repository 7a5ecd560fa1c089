//! Acceptance tests for issue 12, asset sets: a MedPerf-style set (real YAML files, a real
//! `additional_files.tar.gz`, a SIF made with `siftool`) served from a real nginx, mounted by
//! the real daemon, each member verified against its own pin; the set directories have exactly
//! their layout's entries; and a `runc` container bind-mounts the set's `additional_files/`
//! read-only at `/mlcube_io/additional_files` and reads through it. Sets whose image is a
//! `docker://` image pushed (umoci, skopeo) to a real docker-registry show its root filesystem
//! at the layout's image position, pinned by the image ID, and `runc` runs with that directory
//! as its root; `lazycas ls` and `status --json` list the sets and what of them is present.

mod common;

use common::images::{make_tree, mksquashfs, sif_around};
use common::lazycas::tail;
use common::oci_images::{assert_same_tree, umoci, walk_rootfs, Listing, OciLayout, Push};
use common::process::require_program;
use common::registry::Registry;
use common::token_server::{LoopbackTokenServer, TokenPolicy};
use common::*;
use md5::Digest as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

/// Runs `script` with `/bin/sh -c` in a runc container whose read-only root is `root` and
/// which bind-mounts `additional_files` read-only at `/mlcube_io/additional_files`; returns its
/// output (the daemon's log tail on failure).
fn runc_run(
    runc: &Path,
    bundle: &Path,
    root: &Path,
    additional_files: &Path,
    script: &str,
) -> Output {
    std::fs::create_dir_all(bundle).expect("mkdir bundle");
    let spec = Command::new(runc)
        .arg("spec")
        .current_dir(bundle)
        .status()
        .expect("runc spec");
    assert!(spec.success(), "runc spec failed");
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read config.json"))
            .expect("parse config.json");
    assert_eq!(
        config["root"]["readonly"], true,
        "runc spec's root is read-only"
    );
    config["root"]["path"] = serde_json::json!(root.to_str().expect("utf-8 path"));
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
    config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/mlcube_io/additional_files",
            "type": "bind",
            "source": additional_files.to_str().expect("utf-8 path"),
            "options": ["rbind", "ro"]
        }));
    std::fs::write(&config_path, config.to_string()).expect("write config.json");
    let state = bundle.join("runc-state");
    let id = format!(
        "lazycas-set-{}-{}",
        std::process::id(),
        bundle.file_name().and_then(|n| n.to_str()).unwrap_or("b")
    );
    let mut cmd = Command::new(runc);
    cmd.arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&id);
    let out = run(cmd, Duration::from_secs(120));
    let mut cleanup = Command::new(runc);
    cleanup
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id]);
    let _ = run(cleanup, Duration::from_secs(30));
    out
}

const READ_BOTH: &str = "cat /hello.txt /mlcube_io/additional_files/models/hello.txt; \
     if echo x > /mlcube_io/additional_files/new 2>/dev/null; then echo WRITABLE; else echo READ-ONLY; fi";
const IMAGE_HELLO: &str = "hello from the set's image\n";

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
    let reg = Registry::start();
    let image = push_image(&reg);
    let node = Lazycas::with_config(Config {
        tail: format!(
            "{}{}",
            container_set_toml(&p),
            docker_sets_toml(&p, &reg, &image)
        ),
        ..Config::default()
    });
    let d = node.mount();

    // A root made here with the first set's members bound in, then the second set's
    // docker:// image as the container's root with its own additional files bound in.
    let bundle = work.path().join("bundle");
    let root = bundle.join("rootfs");
    minimal_rootfs(&root);
    std::fs::write(root.join("hello.txt"), IMAGE_HELLO).expect("write hello.txt");
    for (bundle, root, additional_files) in [
        (
            bundle.clone(),
            root,
            d.path("medperf/fets/additional_files"),
        ),
        (
            work.path().join("bundle-oci"),
            d.path("medperf/fets-oci/fets"),
            d.path("medperf/fets-oci/additional_files"),
        ),
    ] {
        let out = runc_run(&runc, &bundle, &root, &additional_files, READ_BOTH);
        assert!(
            out.success(),
            "runc run with root {} failed: {}\n{}",
            root.display(),
            out.stderr,
            tail(&d.log(), 30)
        );
        assert_eq!(out.stdout, format!("{IMAGE_HELLO}{SECRET}READ-ONLY\n"));
    }
}

/// An image pushed to a registry, as the sets name it.
struct PushedImage {
    layout: OciLayout,
    /// `docker://<registry>/test/fets:v1`.
    reference: String,
    /// The config's digest (`sha256:…`): the image ID `docker inspect` and MedPerf give.
    image_id: String,
}

/// `test/fets:v1`: a root with `/bin/sh`, `/bin/cat`, `/hello.txt` and the mount point
/// `/mlcube_io/additional_files/`, built with umoci and pushed to `reg` with skopeo.
fn push_image(reg: &Registry) -> PushedImage {
    push_image_with(reg, &Push::default())
}

/// [`push_image`], pushed as `push` says.
fn push_image_with(reg: &Registry, push: &Push) -> PushedImage {
    let layout = OciLayout::new();
    umoci(&["new", "--image", &layout.image("fets")]);
    let bundle = layout.unpack("fets", "bundle-fets");
    let root = bundle.join("rootfs");
    minimal_rootfs(&root);
    std::fs::write(root.join("hello.txt"), IMAGE_HELLO).expect("write hello.txt");
    // A read-only root cannot have mount points made in it: the image carries its own.
    std::fs::create_dir_all(root.join("mlcube_io/additional_files")).expect("mkdir mount point");
    layout.repack("fets", &bundle);
    let dest = format!("{}/test/fets:v1", reg.host());
    layout.push("fets", &dest, push);
    let image_id = layout.manifest("fets")["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    PushedImage {
        layout,
        reference: format!("docker://{dest}"),
        image_id,
    }
}

/// Sets whose image is `image`: a MedPerf container pinned by the image ID, an MLCube by tag
/// only, and one pinned to another image ID; plus the registry's settings.
fn docker_sets_toml(p: &Published, reg: &Registry, image: &PushedImage) -> String {
    let u = |rel: &str| p.nginx.url(rel);
    format!(
        r#"
[[set]]
name = "medperf/fets-oci"
layout = "container"
manifest = {{ url = "{config}", sha256 = "{config_sha}" }}
additional_files = {{ url = "{tarball}", sha256 = "{tarball_sha}" }}
image = {{ url = "{image}", sha256 = "{id}" }}

[[set]]
name = "mlcubes/fets-oci"
layout = "mlcube"
manifest = {{ url = "{mlcube}", sha256 = "{config_sha}" }}
image = {{ url = "{image}" }}

[[set]]
name = "medperf/wrong-id"
layout = "container"
image = {{ url = "{image}", sha256 = "{other}" }}

[registries."{host}"]
insecure = true
"#,
        config = u("fets/container_config.yaml"),
        mlcube = u("fets/mlcube.yaml"),
        config_sha = sha256_hex(MANIFEST),
        tarball = u("fets/additional_files.tar.gz"),
        tarball_sha = sha256_hex(&p.tarball),
        image = image.reference,
        id = image.image_id,
        other = sha256_hex(b"another image's config"),
        host = reg.host(),
    )
}

/// A node whose config holds [`docker_sets_toml`]'s sets, and what they come from, running.
struct DockerSets {
    p: Published,
    reg: Registry,
    image: PushedImage,
    node: Lazycas,
}

fn docker_sets(work: &Path) -> DockerSets {
    let p = publish(work);
    let reg = Registry::start();
    let image = push_image(&reg);
    let node = Lazycas::with_config(Config {
        tail: docker_sets_toml(&p, &reg, &image),
        ..Config::default()
    });
    DockerSets {
        p,
        reg,
        image,
        node,
    }
}

/// `walk_rootfs` bounded by a deadline.
fn walk(root: PathBuf) -> Listing {
    with_deadline(READ_DEADLINE, "walking a mounted rootfs", move || {
        walk_rootfs(&root)
    })
}

#[test]
fn docker_image_members_show_the_images_rootfs_and_ls_lists_the_sets() {
    require_fuse!();
    let work = tempfile::tempdir().expect("tempdir");
    let DockerSets {
        p,
        reg,
        image,
        node,
    } = docker_sets(work.path());
    let host = reg.host();

    // A MedPerf record of today's shape: the container config inline, its image a registry
    // image, image_hash the image ID, no parameters.
    let record = serde_json::json!({
        "id": 41, "name": "seg", "is_valid": true, "state": "OPERATION",
        "container_config": {"container_type": "DockerImage",
                             "image": format!("{host}/test/fets:v1"), "tasks": {"infer": {}}},
        "parameters_config": null,
        "image_hash": {format!("{host}/test/fets:v1"): image.image_id.trim_start_matches("sha256:")},
        "additional_files_tarball_url": p.nginx.url("fets/additional_files.tar.gz"),
        "additional_files_tarball_hash": sha256_hex(&p.tarball),
        "metadata": {}, "user_metadata": {}
    });
    let record_path = work.path().join("seg.json");
    std::fs::write(&record_path, record.to_string()).expect("write record");
    let imported = node.cli(&[
        "import",
        "medperf",
        record_path.to_str().expect("utf-8 path"),
        "--name",
        "imported/seg",
    ]);
    imported.assert_success();
    assert!(imported.stdout.contains("fets"), "{}", imported.stdout);

    // Before anything is read: ls names each member, its reference and pins; nothing is held
    // and the tag is unresolved.
    let ls = node.cli(&["ls"]);
    ls.assert_success();
    let line_of = |out: &str, set_heading: &str, member: &str| -> String {
        let mut lines = out
            .lines()
            .skip_while(|l| !l.starts_with(set_heading))
            .skip(1);
        lines
            .find(|l| l.trim_start().starts_with(member))
            .unwrap_or_else(|| panic!("no {member} under {set_heading} in\n{out}"))
            .to_string()
    };
    let fets_line = line_of(
        &ls.stdout,
        "medperf/fets-oci/ (set, layout container)",
        "fets/",
    );
    assert!(
        fets_line.contains("unresolved")
            && fets_line.contains(&image.reference)
            && fets_line.contains(&format!("image-id {}", image.image_id)),
        "{fets_line}"
    );
    let config_line = line_of(&ls.stdout, "medperf/fets-oci/", "container_config.yaml");
    assert!(config_line.contains("missing"), "{config_line}");

    let d = node.mount();
    assert_eq!(
        sorted(list_dir(d.path("medperf"))),
        ["fets-oci", "wrong-id"]
    );
    assert_eq!(
        sorted(list_dir(d.path("medperf/fets-oci"))),
        ["additional_files", "container_config.yaml", "fets"]
    );
    assert_eq!(list_dir(d.path("mlcubes/fets-oci/workspace")), [".image"]);
    assert_eq!(
        list_dir(d.path("mlcubes/fets-oci/workspace/.image")),
        ["fets"]
    );
    assert_eq!(
        sorted(list_dir(d.path("imported/seg"))),
        ["additional_files", "container_config.yaml", "fets"]
    );
    // The record's inline container config is the set's container_config.yaml (JSON, which
    // MedPerf's YAML reader takes as it is).
    let config: serde_json::Value = serde_json::from_slice(
        &read(d.path("imported/seg/container_config.yaml")).expect("read container_config.yaml"),
    )
    .expect("container_config.yaml is JSON");
    assert_eq!(config, record["container_config"]);
    let layers: Vec<String> = image.layout.manifest("fets")["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    let held = node.stored_digests();
    assert!(
        layers.iter().all(|l| !held.contains(l)),
        "a layer was fetched by listing the sets"
    );

    // An image ID pin the registry's image does not have: refused once the tag is resolved,
    // before any layer is fetched, and the log says why.
    let refused = list_dir_within(d.path("medperf/wrong-id/fets"), Duration::from_secs(30));
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EIO),
        "an image with another image ID was listed: {refused:?}"
    );
    assert!(d.log().contains("image ID of"), "{}", tail(&d.log(), 20));
    let held = node.stored_digests();
    assert!(
        layers.iter().all(|l| !held.contains(l)),
        "a layer was fetched for an image whose image ID is wrong"
    );

    // The image position is the image's root filesystem: the same tree docker/ shows (which
    // tests/oci_mount.rs checks against umoci unpack), the same bytes.
    let in_set = d.path("medperf/fets-oci/fets");
    assert_reads(in_set.join("hello.txt"), IMAGE_HELLO);
    let want = walk(d.path(&format!("docker/{host}/test/fets:v1/rootfs")));
    assert!(want.contains_key("bin/cat") && want.contains_key("hello.txt"));
    assert_same_tree("the set's image", &walk(in_set.clone()), &want);
    assert_same_tree(
        "the mlcube's .image",
        &walk(d.path("mlcubes/fets-oci/workspace/.image/fets")),
        &want,
    );
    assert_same_tree(
        "the imported set's image",
        &walk(d.path("imported/seg/fets")),
        &want,
    );
    assert_eq!(
        xattr::get_string(&in_set, "user.lazycas.digest").expect("digest xattr"),
        image.layout.digest("fets")
    );
    let held = node.stored_digests();
    assert!(layers.iter().all(|l| held.contains(l)), "layers not stored");
    assert_reads(d.path("medperf/fets-oci/container_config.yaml"), MANIFEST);
    assert_reads(
        d.path("medperf/fets-oci/additional_files/models/hello.txt"),
        SECRET,
    );

    // ls and status now say every member of the read set is present.
    let ls = node.cli(&["ls"]);
    ls.assert_success();
    for member in ["container_config.yaml", "additional_files/", "fets/"] {
        let line = line_of(
            &ls.stdout,
            "medperf/fets-oci/ (set, layout container)",
            member,
        );
        assert!(line.contains("present"), "{line}");
    }
    let status = node.cli(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let sets = doc["sets"].as_array().expect("sets in status");
    assert_eq!(sets.len(), 4, "{sets:?}");
    let set = sets
        .iter()
        .find(|s| s["name"] == "medperf/fets-oci")
        .expect("medperf/fets-oci in status");
    let members = set["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["present"] == true), "{members:?}");
    let wrong = sets
        .iter()
        .find(|s| s["name"] == "medperf/wrong-id")
        .expect("wrong-id");
    assert_eq!(
        wrong["members"][0]["present"], true,
        "the image itself is held"
    );

    // A set of the config file is removed there, not with rm.
    let rm = node.cli(&["rm", "medperf/fets-oci"]);
    assert_eq!(rm.code(), Some(2), "{}", rm.stderr);
    assert!(rm.stderr.contains("config file"), "{}", rm.stderr);

    // Mount stopped, nothing pulled: the sets naming the image keep its layers from gc.
    drop(d);
    node.cli(&["gc", "--to", "0"]).assert_success();
    let held = node.stored_digests();
    assert!(
        layers.iter().all(|l| held.contains(l)),
        "gc collected layers of an image sets name"
    );
}

#[test]
fn an_image_member_from_a_registry_with_credentials_is_private_like_its_image_directory() {
    require_fuse!();
    let tokens = LoopbackTokenServer::start(TokenPolicy::default());
    let reg = Registry::start_with_token_auth(&tokens);
    let image = push_image_with(
        &reg,
        &Push {
            creds: Some(("pusher", "secret")),
            ..Push::default()
        },
    );
    let host = reg.host();
    let node = Lazycas::with_config(Config {
        tail: format!(
            "\n[[set]]\nname = \"private/fets\"\nlayout = \"container\"\n\
             image = {{ url = \"{}\" }}\n\n[registries.\"{host}\"]\ninsecure = true\n\
             username = \"pusher\"\npassword = \"secret\"\n",
            image.reference
        ),
        ..Config::default()
    });
    let d = node.mount();
    let member = d.path("private/fets/fets");
    assert_reads(member.join("hello.txt"), IMAGE_HELLO);
    let gate = std::fs::metadata(d.path(&format!("docker/{host}/test/fets:v1")))
        .expect("stat the image directory");
    let shown = std::fs::metadata(&member).expect("stat the set's image");
    assert_eq!(gate.permissions().mode() & 0o777, 0o500);
    assert_eq!(
        shown.permissions().mode() & 0o077,
        0,
        "the set's image of a private registry is open to others: {:o}",
        shown.permissions().mode()
    );
    assert_eq!(shown.uid(), gate.uid(), "owned by the daemon's user");
}

#[test]
fn pull_fetches_and_pins_every_member_of_a_set() {
    let work = tempfile::tempdir().expect("tempdir");
    // The registry and nginx stay up as long as `sets` lives.
    let sets = docker_sets(work.path());
    let node = &sets.node;
    let pulled = node.cli(&["pull", "medperf/fets-oci"]);
    pulled.assert_success();
    assert!(
        pulled
            .stdout
            .contains("medperf/fets-oci pulled (3 members)"),
        "{}",
        pulled.stdout
    );
    let ls = node.cli(&["ls"]);
    ls.assert_success();
    let members: Vec<&str> = ls
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("medperf/fets-oci/"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(members.len(), 3, "{}", ls.stdout);
    assert!(
        members.iter().all(|l| l.contains(" present ")),
        "{members:?}"
    );
    let status = node.cli(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let held: u64 = node
        .stored_blobs()
        .iter()
        .map(|b| std::fs::metadata(b).expect("stat blob").len())
        .sum();
    assert_eq!(doc["pinned_bytes"], held, "every blob pulled is pinned");
    // A member that cannot be had stops the pull, named.
    let failed = node.cli(&["pull", "medperf/wrong-id"]);
    assert_eq!(failed.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("medperf/wrong-id/fets") && failed.stderr.contains("image ID"),
        "{}",
        failed.stderr
    );
}
