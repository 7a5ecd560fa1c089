//! Issue 14: the shipped unit (`systemd/lazycas.service`) under a real systemd, the way a new
//! user runs it: a minimal Debian root (debootstrap minbase: no procps, so no `/bin/kill`)
//! booted with `systemd-nspawn`, the binary under test at /usr/local/bin/lazycas, the unit in
//! /etc/systemd/system, `systemctl enable --now lazycas`.
//!
//! Checked: the unit is active with a `STATUS=` text and /containers mounted; `systemctl reload`
//! succeeds and a newly added `[[asset]]` shows; a config that does not parse makes the reload
//! fail and the old config keeps serving; after a SIGKILL of the daemon systemd restarts it,
//! /containers answers and is mounted once; an unmount from outside (`umount -l`, also while a
//! file is open, and `fusermount3 -u`) ends the daemon cleanly; `systemctl stop` unmounts; the
//! journal holds the daemon's lines.
//!
//! The container shares the host's network, so the daemon inside fetches from an nginx the test
//! starts on 127.0.0.1. The root is built once (about 100 MB downloaded) and cached under the
//! target directory; see `common::nspawn`.

mod common;

use common::lazycas::lazycas_bin;
use common::nspawn::{self, Bind, Container};
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
/// Where the unit mounts, inside the container.
const MOUNTPOINT: &str = "/containers";
/// The config file the unit names, inside the container.
const CONFIG: &str = "/etc/lazycas/lazycas.toml";
/// How long systemd gets to bring the unit to a new state.
const UNIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A booted container with the unit installed, and the host directories bound into it.
struct Node {
    container: Container,
    /// The host side of /etc/lazycas.
    etc: TempDir,
    /// The host side of /var/cache/lazycas (the store).
    _cache: TempDir,
}

impl Node {
    /// Boots `root` with lazycas installed and `config` as its config file.
    fn boot(root: &Path, config: &Config) -> Node {
        let etc = tempfile::tempdir().expect("tempdir for /etc/lazycas");
        let cache = tempfile::tempdir().expect("tempdir for /var/cache/lazycas");
        let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/lazycas.service");
        let binds = [
            Bind::ro(&lazycas_bin(), "/usr/local/bin/lazycas"),
            Bind::ro(&unit, "/etc/systemd/system/lazycas.service"),
            Bind::rw(etc.path(), "/etc/lazycas"),
            Bind::rw(cache.path(), "/var/cache/lazycas"),
        ];
        let node = Node {
            container: Container::boot(root, &binds),
            etc,
            _cache: cache,
        };
        node.write_config(&config.to_toml(Path::new("/var/cache/lazycas")));
        node
    }

    /// Replaces the config file (mode 0600, as the unit's comments ask).
    fn write_config(&self, text: &str) {
        let path = self.etc.path().join("lazycas.toml");
        fs::write(&path, text).expect("write the config");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the config");
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        self.container.run(&all)
    }

    /// One property of the unit (`systemctl show -p NAME --value`).
    fn property(&self, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", "lazycas"])
            .assert_success()
            .stdout
            .trim()
            .to_string()
    }

    /// The unit's journal, message text only.
    fn journal(&self) -> String {
        self.container
            .run(&["journalctl", "--no-pager", "-o", "cat", "-u", "lazycas"])
            .stdout
    }

    /// Waits until `ActiveState` is `state`; panics with the journal otherwise.
    #[track_caller]
    fn wait_state(&self, state: &str) {
        let mut last = String::new();
        if !wait_until(UNIT_TIMEOUT, || {
            last = self.property("ActiveState");
            last == state
        }) {
            panic!(
                "lazycas.service did not become {state} within {UNIT_TIMEOUT:?} (it is {last})\n{}",
                self.journal()
            );
        }
    }

    /// Starts the unit and waits until it is active with its mount in place.
    fn start(&self) {
        let out = self.systemctl(&["start", "lazycas"]);
        assert!(out.success(), "systemctl start: {out}\n{}", self.journal());
        self.wait_state("active");
        assert_eq!(
            self.mounts(),
            1,
            "{MOUNTPOINT} is not mounted once after start"
        );
    }

    /// How many mounts sit on /containers.
    fn mounts(&self) -> usize {
        self.container.mounts_on(MOUNTPOINT)
    }

    /// The host path of `/containers/<name>`.
    fn asset_path(&self, name: &str) -> PathBuf {
        self.container.path(&format!("{MOUNTPOINT}/{name}"))
    }

    /// Reads `/containers/<name>` (from the host, through the container's mounts) and checks it
    /// is `blob`.
    #[track_caller]
    fn assert_serves(&self, name: &str, blob: &Blob) {
        let path = self.asset_path(name);
        let what = format!("reading {MOUNTPOINT}/{name}");
        let read = with_deadline(Duration::from_secs(60), &what, move || fs::read(&path));
        match read {
            Ok(bytes) => assert!(
                bytes.len() == blob.bytes.len() && sha256_hex(&bytes) == blob.sha256,
                "{MOUNTPOINT}/{name}: {} bytes that do not hash to {}",
                bytes.len(),
                blob.sha256
            ),
            Err(e) => panic!("{what}: {e}\n{}", self.journal()),
        }
    }

    /// Checks the journal has no trace of a second unmount attempt after an outside unmount.
    #[track_caller]
    /// Starts the unit, opens `asset` on the mount, unmounts lazily from outside and waits
    /// until the daemon says it noticed; returns the open file.
    fn start_and_detach_holding(&self, asset: &str) -> fs::File {
        self.start();
        let held = fs::File::open(self.asset_path(asset)).expect("open a file on the mount");
        self.container
            .run(&["umount", "-l", MOUNTPOINT])
            .assert_success();
        assert!(
            wait_until(UNIT_TIMEOUT, || self
                .property("StatusText")
                .contains("unmounted from outside")),
            "the daemon did not notice the lazy unmount: STATUS={}\n{}",
            self.property("StatusText"),
            self.journal()
        );
        held
    }

    fn assert_no_unmount_errors(&self) {
        let journal = self.journal();
        for bad in ["could not detach", "Unmount failed", "detaching it"] {
            assert!(
                !journal.contains(bad),
                "the journal has `{bad}`:\n{journal}"
            );
        }
    }
}

fn config_with(assets: Vec<Asset>) -> Config {
    Config {
        assets,
        ..Config::default()
    }
}

fn asset_of(nginx: &Nginx, name: &str, blob: &Blob) -> Asset {
    Asset::file(name, &nginx.url_of(blob), &blob.sha256)
}

/// Start, status, reload (a new asset; then a broken config), journal, stop.
#[test]
fn unit_starts_reloads_and_stops_under_systemd() {
    let Some(root) = nspawn::root_or_skip() else {
        return;
    };
    let nginx = Nginx::start();
    let first = nginx.put_random("sd/first.bin", MIB);
    let second = nginx.put_random("sd/second.bin", 2 * MIB);
    let mut config = config_with(vec![asset_of(&nginx, "sd/first", &first)]);
    let node = Node::boot(&root, &config);
    assert!(
        !node.container.path("/bin/kill").exists()
            && !node.container.path("/usr/bin/kill").exists(),
        "the root has a kill binary: it is not the minimal root this test is about"
    );

    let out = node.systemctl(&["enable", "--now", "lazycas"]);
    assert!(
        out.success(),
        "systemctl enable --now: {out}\n{}",
        node.journal()
    );
    node.wait_state("active");
    let status = node.property("StatusText");
    assert!(!status.is_empty(), "no STATUS= text: {}", node.journal());
    println!("STATUS={status}");
    assert_eq!(node.mounts(), 1, "{MOUNTPOINT} is not mounted once");
    node.assert_serves("sd/first", &first);
    let main_pid = node.property("MainPID");

    config.assets.push(asset_of(&nginx, "sd/second", &second));
    node.write_config(&config.to_toml(Path::new("/var/cache/lazycas")));
    assert!(
        !node.asset_path("sd/second").exists(),
        "sd/second showed before the reload"
    );
    let out = node.systemctl(&["reload", "lazycas"]);
    assert!(out.success(), "systemctl reload: {out}\n{}", node.journal());
    // `systemctl reload` returns once ExecReload has, which waits for the daemon's
    // acknowledgment: the new asset must be there now, not eventually.
    assert!(
        node.asset_path("sd/second").exists(),
        "sd/second is not there when `systemctl reload` returns\n{}",
        node.journal()
    );
    node.assert_serves("sd/second", &second);

    node.write_config("this is = not [valid toml\n");
    let out = node.systemctl(&["reload", "lazycas"]);
    assert!(
        !out.success(),
        "a reload with a config that does not parse succeeded: {out}"
    );
    node.wait_state("active");
    assert_eq!(
        node.property("MainPID"),
        main_pid,
        "the failed reload restarted the daemon"
    );
    let journal = node.journal();
    assert!(
        journal.contains(&format!("config {CONFIG}: line 1")) && journal.contains("not reloading"),
        "the journal lacks the parse error of the refused reload:\n{journal}"
    );
    node.assert_serves("sd/first", &first);
    node.assert_serves("sd/second", &second);
    node.write_config(&config.to_toml(Path::new("/var/cache/lazycas")));

    let journal = node.journal();
    for line in [
        "mounted mountpoint=/containers store=/var/cache/lazycas",
        &format!("SIGHUP: reloaded {CONFIG}"),
        &format!("reloaded {CONFIG}"),
    ] {
        assert!(
            journal.contains(line),
            "the journal lacks `{line}`:\n{journal}"
        );
    }

    let out = node.systemctl(&["stop", "lazycas"]);
    assert!(out.success(), "systemctl stop: {out}\n{}", node.journal());
    assert_eq!(node.property("ActiveState"), "inactive");
    assert_eq!(node.mounts(), 0, "{MOUNTPOINT} is still mounted after stop");
    assert!(
        node.journal().contains("stopped (Signal)"),
        "no clean stop in the journal:\n{}",
        node.journal()
    );
}

/// SIGKILL of the daemon: systemd restarts it, with one working mount. An unmount from outside
/// (`umount -l`, `umount -l` with a file open, `fusermount3 -u`) ends the daemon cleanly.
#[test]
fn systemd_restarts_a_killed_daemon_and_an_outside_unmount_ends_it() {
    let Some(root) = nspawn::root_or_skip() else {
        return;
    };
    let nginx = Nginx::start();
    let blob = nginx.put_random("sd/kill.bin", MIB);
    let node = Node::boot(
        &root,
        &config_with(vec![asset_of(&nginx, "sd/kill", &blob)]),
    );
    node.start();
    node.assert_serves("sd/kill", &blob);

    let killed = node.property("MainPID");
    let out = node.systemctl(&["kill", "--kill-whom=main", "--signal=SIGKILL", "lazycas"]);
    assert!(out.success(), "systemctl kill: {out}");
    let restarted = wait_until(UNIT_TIMEOUT, || {
        let pid = node.property("MainPID");
        pid != killed && pid != "0" && node.property("ActiveState") == "active"
    });
    assert!(
        restarted,
        "systemd did not restart the killed daemon within {UNIT_TIMEOUT:?}\n{}",
        node.journal()
    );
    assert_eq!(node.property("NRestarts"), "1");
    assert_eq!(
        node.mounts(),
        1,
        "{MOUNTPOINT} is not mounted exactly once after the restart"
    );
    node.assert_serves("sd/kill", &blob);

    let out = node.container.run(&["umount", "-l", MOUNTPOINT]);
    out.assert_success();
    node.wait_state("inactive");
    assert_eq!(node.mounts(), 0);
    node.assert_no_unmount_errors();

    let held = node.start_and_detach_holding("sd/kill");
    assert_eq!(
        node.property("ActiveState"),
        "active",
        "the daemon stopped while a file was still open"
    );
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut again).expect("read the file kept open");
    assert_eq!(sha256_hex(&again), blob.sha256);
    drop(held);
    node.wait_state("inactive");
    node.assert_no_unmount_errors();

    // Stopped while detached but busy: nothing is left to unmount, and no attempt is made.
    let held = node.start_and_detach_holding("sd/kill");
    let asked = Instant::now();
    let out = node.systemctl(&["stop", "lazycas"]);
    assert!(out.success(), "systemctl stop: {out}\n{}", node.journal());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopping a daemon whose mount was detached took {:?}",
        asked.elapsed()
    );
    assert_eq!(node.property("Result"), "success");
    node.assert_no_unmount_errors();
    drop(held);

    node.start();
    node.container
        .run(&["fusermount3", "-u", MOUNTPOINT])
        .assert_success();
    node.wait_state("inactive");
    assert_eq!(node.mounts(), 0);
    node.assert_no_unmount_errors();
    assert_eq!(
        node.property("Result"),
        "success",
        "an outside unmount is a clean exit"
    );
}
