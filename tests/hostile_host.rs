//! A hostile host (issue 13): a full store disk, a store that is not writable, configs with
//! wrong types or readable credentials, catalog names with `..` or NUL, SIGKILL at each stage
//! of a download and of an index build followed by a restart, flipped bits in stored blobs and
//! chunks. Each gives a clear error or a correct read, and nothing unverified is served. The
//! rows of README's "Hostile input" table are these tests' names.

mod common;

use common::hostile::{chunk_index_of, expect_bytes, expect_errno, Scene, FAIL_DEADLINE};
use common::hostile_server::{HostileServer, Script};
use common::{
    files_under, is_root, random_bytes, require_fuse, run, sha256_hex, unique_seed, with_deadline,
    Asset, Config, Lazycas,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A tmpfs mounted by the test on a directory, unmounted on drop (after the daemon using it).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create tmpfs mount point");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(path);
        run(cmd, Duration::from_secs(10)).assert_success();
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Makes the mounted tree read-only for new opens (files already open stay writable, as a
    /// store whose directory lost its write permission): a read-only bind mount over it.
    fn bind_read_only(&self) {
        for args in [vec!["--bind"], vec!["-o", "remount,bind,ro"]] {
            let mut cmd = Command::new("mount");
            cmd.args(args).arg(&self.path).arg(&self.path);
            run(cmd, Duration::from_secs(10)).assert_success();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The bind mount (if any), then the tmpfs.
        for _ in 0..2 {
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&self.path);
            let _ = run(cmd, Duration::from_secs(10));
        }
    }
}

fn needs_root() -> Option<String> {
    (!is_root()).then(|| "mounting a tmpfs needs root".to_string())
}

/// A scene serving `name` (file kind) from `server`'s `/name`, with `body` as its pin.
fn served(server: &HostileServer, assets: &[(&str, &[u8])]) -> Config {
    let mut config = Scene::config();
    for (name, body) in assets {
        config.assets.push(Asset::file(
            name,
            &server.url(&format!("/{name}")),
            &sha256_hex(body),
        ));
    }
    config
}

#[test]
fn store_disk_full_is_eio_and_leaves_no_partial_blob() {
    require_fuse!(needs_root());
    let server = HostileServer::start();
    let big: Arc<[u8]> = random_bytes(24 << 20, unique_seed()).into();
    server.route("/big.bin", Script::Serve(big.clone()));
    let mut tmpfs = None;
    let mut scene = Scene::start_prepared(served(&server, &[("big.bin", &big)]), |node| {
        tmpfs = Some(Tmpfs::mount(&node.store, "size=12m"));
    });
    expect_errno("store disk full", &scene.path("big.bin"), libc::EIO);
    let hex = sha256_hex(&big);
    assert!(
        !scene.node.blob_path(&hex).exists(),
        "a partial blob is visible"
    );
    assert!(
        scene.node.temp_files().is_empty(),
        "temp files left: {:?}",
        scene.node.temp_files()
    );
    scene.assert_logged("disk full while downloading");
    scene.assert_healthy();
    drop(scene);
    drop(tmpfs);
}

#[test]
fn store_not_writable_is_eio_while_cached_content_serves() {
    require_fuse!(needs_root());
    let server = HostileServer::start();
    let body: Arc<[u8]> = random_bytes(1 << 20, unique_seed()).into();
    server.route("/new.bin", Script::Serve(body.clone()));
    let mut tmpfs = None;
    let mut scene = Scene::start_prepared(served(&server, &[("new.bin", &body)]), |node| {
        tmpfs = Some(Tmpfs::mount(&node.store, "size=64m"));
    });
    tmpfs.as_ref().expect("tmpfs").bind_read_only();
    expect_errno(
        "store made read-only under the daemon",
        &scene.path("new.bin"),
        libc::EIO,
    );
    scene.assert_healthy();
    drop(scene);
    drop(tmpfs);
}

#[test]
fn store_not_writable_at_start_is_a_clear_error() {
    require_fuse!(needs_root());
    let node = Lazycas::new();
    let _tmpfs = Tmpfs::mount(&node.store, "size=1m,ro");
    let mut daemon = node.spawn(&[]);
    let status = daemon
        .wait_exit(FAIL_DEADLINE)
        .expect("the daemon exits at once");
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains(&node.store.display().to_string()),
        "the error names the store:\n{log}"
    );
    eprintln!(
        "hostile case: store not writable at start: exit {status}: {}",
        log.lines().last().unwrap_or("")
    );
}

/// Runs `lazycas mount` on `node` expecting a config error (exit 2) whose message has `needle`.
fn expect_config_refused(node: &Lazycas, case: &str, needle: &str) -> String {
    let mut daemon = node.spawn(&[]);
    let status = daemon
        .wait_exit(FAIL_DEADLINE)
        .expect("the daemon exits at once");
    let log = daemon.log();
    assert_eq!(status.code(), Some(2), "{case}: {log}");
    assert!(log.contains(needle), "{case}: no {needle:?} in:\n{log}");
    eprintln!(
        "hostile case: {case}: exit 2: {}",
        log.lines().last().unwrap_or("")
    );
    log
}

#[test]
fn config_with_wrong_types_is_refused_naming_the_key() {
    require_fuse!();
    for (case, extra, key) in [
        (
            "timeout_secs as a string",
            "timeout_secs = \"ten\"\n",
            "timeout_secs",
        ),
        ("quota as a number", "quota = 5\n", "quota"),
        ("proxies as a table", "[proxies]\nx = 1\n", "line 2"),
        (
            "asset name as a number",
            "[[asset]]\nname = 3\nurl = \"http://h/x\"\n",
            "name",
        ),
    ] {
        let node = Lazycas::with_config(Config {
            timeout_secs: None,
            extra: extra.into(),
            ..Config::default()
        });
        let _ = expect_config_refused(&node, case, key);
    }
}

#[test]
fn config_with_credentials_others_can_read_is_refused() {
    require_fuse!();
    for (case, tail) in [
        (
            "registry password",
            "\n[registries.\"127.0.0.1:5000\"]\nusername = \"u\"\npassword = \"secret\"\n",
        ),
        (
            "registry token",
            "\n[registries.\"127.0.0.1:5000\"]\ntoken = \"secret\"\n",
        ),
        (
            "publisher token",
            "\n[publishers.\"127.0.0.1:1\"]\ntoken = \"secret\"\n",
        ),
    ] {
        let node = Lazycas::with_config(Config {
            tail: tail.into(),
            ..Config::default()
        });
        // A copy others can read (the harness writes its config 0600).
        let readable = node.root.join("readable.toml");
        std::fs::copy(&node.config_path, &readable).expect("copy config");
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mnt = node.mountpoint.to_str().expect("utf-8").to_string();
        let cfg = readable.to_str().expect("utf-8").to_string();
        for args in [
            vec!["mount", &mnt, "--config", &cfg],
            vec!["ls", "--config", &cfg],
        ] {
            let out = node.cli_raw(&args);
            assert_eq!(out.code(), Some(2), "{case}: {out}");
            assert!(out.stderr.contains("readable by others"), "{case}: {out}");
            assert!(
                !out.stderr.contains("secret"),
                "{case}: credential shown: {out}"
            );
            eprintln!(
                "hostile case: {case} in a 0644 config: lazycas {} exit 2: {}",
                args[0],
                out.stderr.trim()
            );
        }
        let mut daemon = node.spawn(&[]);
        daemon.wait_mounted(Duration::from_secs(30));
        daemon.stop();
    }
}

#[test]
fn catalog_names_with_dotdot_or_nul_are_refused() {
    require_fuse!();
    let hex = "0".repeat(64);
    for (case, name) in [
        ("name with ..", "a/../b"),
        ("name that is ..", ".."),
        ("name with NUL", "a\u{0}b"),
        ("name with an empty component", "a//b"),
    ] {
        let node = Lazycas::with_config(Config {
            assets: vec![Asset::file(name, "http://127.0.0.1:1/x", &hex)],
            ..Config::default()
        });
        let _ = expect_config_refused(&node, case, "name");
        if !name.contains('\0') {
            let out = node.cli(&["add", name, "http://127.0.0.1:1/x", "--sha256", &hex]);
            assert_eq!(out.code(), Some(2), "lazycas add {name:?}: {out}");
        }
    }
}

/// Kills the daemon while catalog name `name` is being read (its answer at `path` stalls), then
/// makes `honest` the answer, restarts the daemon, runs `check` and checks that no temp file of
/// the killed download is left.
fn kill_and_restart(
    scene: &mut Scene,
    server: &HostileServer,
    (path, name): (&str, &str),
    stalled: Script,
    honest: Script,
    check: impl FnOnce(&Scene),
) {
    server.route(path, stalled);
    let reader = {
        let p = scene.path(name);
        std::thread::spawn(move || {
            let _ = std::fs::read_dir(&p).map(|d| d.count());
            let _ = std::fs::read(&p);
        })
    };
    assert!(
        common::wait_until(Duration::from_secs(30), || !server
            .requests_for(path)
            .is_empty()),
        "the download of {path} started"
    );
    std::thread::sleep(Duration::from_millis(500));
    scene.daemon.kill();
    with_deadline(Duration::from_secs(30), "the reader returns", move || {
        let _ = reader.join();
    });
    server.route(path, honest);
    scene.daemon = scene.node.mount();
    check(scene);
    assert!(
        scene.node.temp_files().is_empty(),
        "temp files after restart: {:?}",
        scene.node.temp_files()
    );
}

#[test]
fn sigkill_at_each_stage_of_a_download_and_an_index_build_then_restart() {
    require_fuse!();
    let server = HostileServer::start();
    let body: Arc<[u8]> = random_bytes(6 << 20, unique_seed()).into();
    let mid: Arc<[u8]> = random_bytes(6 << 20, unique_seed()).into();
    let archive: Arc<[u8]> = {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..4 {
            let data = random_bytes(2 << 20, unique_seed());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("f{i}"), &data[..])
                .expect("tar");
        }
        common::scripted_registry::gzip(&b.into_inner().expect("tar")).into()
    };
    let mut config = served(&server, &[("before.bin", &body), ("mid.bin", &mid)]);
    let mut a = Asset::file("tree", &server.url("/tree.tar.gz"), &sha256_hex(&archive));
    a.kind = Some("archive".into());
    config.assets.push(a);
    config.timeout_secs = Some(30);
    let mut scene = Scene::start(config);
    let stages: [(&str, Script); 3] = [
        ("/before.bin", Script::StallAfterHeaders(body.clone())),
        (
            "/mid.bin",
            Script::StallMidBody {
                body: mid.clone(),
                after: 3 << 20,
            },
        ),
        (
            "/tree.tar.gz",
            Script::StallMidBody {
                body: archive.clone(),
                after: archive.len() / 2,
            },
        ),
    ];
    for (path, stalled) in stages {
        let (honest, expected) = match path {
            "/tree.tar.gz" => (Script::Serve(archive.clone()), archive.clone()),
            "/mid.bin" => (Script::Serve(mid.clone()), mid.clone()),
            _ => (Script::Serve(body.clone()), body.clone()),
        };
        let name = match path {
            "/tree.tar.gz" => "tree",
            other => other.trim_start_matches('/'),
        };
        kill_and_restart(
            &mut scene,
            &server,
            (path, name),
            stalled,
            honest,
            |scene| {
                let rel = path.trim_start_matches('/');
                let case = format!("SIGKILL while fetching {rel}, restart");
                match rel {
                    "tree.tar.gz" => {
                        let names = common::list_dir(scene.path("tree"));
                        assert_eq!(names, ["f0", "f1", "f2", "f3"]);
                        eprintln!("hostile case: {case}: archive lists after restart");
                    }
                    _ => {
                        expect_bytes(&case, &scene.path(rel), &expected);
                    }
                }
            },
        );
    }
    scene.assert_healthy();
}

#[test]
fn flipped_bit_in_a_stored_blob_is_quarantined_by_verify_and_never_served() {
    require_fuse!();
    let server = HostileServer::start();
    let body: Arc<[u8]> = random_bytes(1 << 20, unique_seed()).into();
    server.route("/flip.bin", Script::Serve(body.clone()));
    let mut scene = Scene::start(served(&server, &[("flip.bin", &body)]));
    expect_bytes("first read", &scene.path("flip.bin"), &body);
    scene.daemon.stop();
    let hex = sha256_hex(&body);
    let blob = scene.node.blob_path(&hex);
    flip_bit(&blob, 4242);
    let out = scene.node.cli(&["verify"]);
    assert_eq!(out.code(), Some(1), "verify finds the flipped bit: {out}");
    assert!(
        out.stdout.contains(&format!("quarantined sha256:{hex}")),
        "{out}"
    );
    assert!(!blob.exists(), "the corrupt blob left the store");
    eprintln!(
        "hostile case: flipped bit in a stored blob: verify exit 1: {}",
        out.stdout.lines().next().unwrap_or("")
    );
    scene.daemon = scene.node.mount();
    expect_bytes("read after quarantine", &scene.path("flip.bin"), &body);
    assert_eq!(server.requests_for("/flip.bin").len(), 2, "fetched again");
    scene.assert_healthy();
}

#[test]
fn flipped_bit_in_a_stored_chunk_is_fetched_again_never_served() {
    require_fuse!();
    let server = HostileServer::start();
    let body: Arc<[u8]> = random_bytes(2 << 20, unique_seed()).into();
    let index = chunk_index_of(&body);
    server.route("/img.sqsh", Script::Serve(body.clone()));
    server.route(
        "/img.sqsh.lazycas-index",
        Script::Serve(index.clone().into()),
    );
    let mut config = served(&server, &[("img.sqsh", &body)]);
    config.assets[0].extra = format!("index_sha256 = \"{}\"\n", sha256_hex(&index));
    let mut scene = Scene::start(config);
    let path = scene.path("img.sqsh");
    with_deadline(Duration::from_secs(60), "partial read", move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&path).expect("open");
        let mut buf = vec![0u8; 300_000];
        f.read_at(&mut buf, 0).expect("read")
    });
    scene.daemon.stop();
    // Chunks live in pack files: flip a bit every 32 KiB (the smallest chunk), so that every
    // stored chunk's bytes (or its record's header) are damaged.
    let packs = files_under(&scene.node.store.join("chunks"));
    assert!(!packs.is_empty(), "chunks were stored");
    for p in &packs {
        let len = std::fs::metadata(p).expect("stat pack").len();
        for at in (17..len).step_by(32 << 10) {
            flip_bit(p, at);
        }
    }
    scene.daemon = scene.node.mount();
    expect_bytes(
        "flipped bit in stored chunks",
        &scene.path("img.sqsh"),
        &body,
    );
    scene.assert_healthy();
}

/// Flips one bit of the file at `path` at byte `at` (modulo its length).
fn flip_bit(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read stored file");
    let i = (at % bytes.len() as u64) as usize;
    bytes[i] ^= 0x10;
    let mode = std::fs::metadata(path).expect("stat").permissions();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(path, bytes).expect("write flipped");
    std::fs::set_permissions(path, mode).expect("chmod back");
}
