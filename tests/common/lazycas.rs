//! `Lazycas`: one lazycas "node" (a tempdir holding its store, config file and mount point) and
//! `Daemon`: a running `lazycas mount` on it.
//!
//! `Lazycas::mount()` writes the config, starts the binary and returns once the mount is in the
//! mount table (or panics with the daemon's stderr if it exits first). Dropping a `Daemon` sends
//! SIGTERM to its PID, SIGKILL after a grace period, and unmounts its mount if the daemon left it
//! (`fusermount3 -u`, then `umount -l`), also when the test panics; a panicking test also gets
//! the daemon's stderr printed. Stale mounts of killed daemons are unmounted when the node and all
//! its daemons are dropped, before the tempdir is removed. `Lazycas::cli()` runs subcommands
//! against the same config and store. Several `Lazycas` values in one test are several
//! independent nodes (own store, config, mount point).

use super::mounts::{mount_answers, mount_entry, mount_ids, top_mount_id, unmount, unmount_top};
use super::process::{run, status_bytes, wait_until, Output, Proc, GRACE};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// How long a daemon gets to make its mount appear.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a CLI subcommand may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// The lazycas binary under test: `$LAZYCAS_BIN` if set, else the one cargo built for this test.
pub fn lazycas_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LAZYCAS_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_lazycas") {
        Some(p) => PathBuf::from(p),
        None => panic!("no lazycas binary: set LAZYCAS_BIN"),
    }
}

/// One `[[asset]]` entry.
#[derive(Debug, Clone)]
pub struct Asset {
    pub name: String,
    pub url: String,
    pub sha256: Option<String>,
    pub kind: Option<String>,
    pub mirrors: Vec<String>,
    /// `size`, a lazycas extension: the blob's size when the publisher knows it.
    pub size: Option<u64>,
    /// Raw TOML lines added to the entry.
    pub extra: String,
}

impl Asset {
    /// A file-kind asset pinned to `sha256`.
    pub fn file(name: &str, url: &str, sha256: &str) -> Asset {
        Asset {
            name: name.into(),
            url: url.into(),
            sha256: Some(sha256.into()),
            kind: Some("file".into()),
            mirrors: Vec::new(),
            size: None,
            extra: String::new(),
        }
    }

    pub fn mirror(mut self, url: &str) -> Asset {
        self.mirrors.push(url.into());
        self
    }

    fn to_toml(&self) -> String {
        let mut s = format!(
            "\n[[asset]]\nname = {}\nurl = {}\n",
            toml_str(&self.name),
            toml_str(&self.url)
        );
        if let Some(h) = &self.sha256 {
            s += &format!("sha256 = {}\n", toml_str(h));
        }
        if let Some(k) = &self.kind {
            s += &format!("kind = {}\n", toml_str(k));
        }
        if !self.mirrors.is_empty() {
            s += &format!("mirrors = {}\n", toml_list(&self.mirrors));
        }
        if let Some(n) = self.size {
            s += &format!("size = {n}\n");
        }
        s += &self.extra;
        s
    }
}

/// The config file's contents, minus `store`, which is always the node's own store.
#[derive(Debug, Clone)]
pub struct Config {
    pub timeout_secs: Option<u64>,
    pub fetch_chunk_size: Option<String>,
    pub fetch_parallel: Option<u32>,
    pub proxies: Option<Vec<String>>,
    pub quota: Option<String>,
    pub min_free: Option<String>,
    /// Raw top-level TOML lines (before any table).
    pub extra: String,
    pub assets: Vec<Asset>,
    /// Raw TOML appended after the assets (e.g. `[registries."127.0.0.1:5000"]`).
    pub tail: String,
}

impl Default for Config {
    /// Test defaults: a short network deadline so a failing fetch fails the test quickly.
    fn default() -> Config {
        Config {
            timeout_secs: Some(10),
            fetch_chunk_size: None,
            fetch_parallel: None,
            proxies: None,
            quota: None,
            min_free: None,
            extra: String::new(),
            assets: Vec::new(),
            tail: String::new(),
        }
    }
}

impl Config {
    pub fn to_toml(&self, store: &Path) -> String {
        let mut s = format!("store = {}\n", toml_str(&store.to_string_lossy()));
        if let Some(t) = self.timeout_secs {
            s += &format!("timeout_secs = {t}\n");
        }
        if let Some(c) = &self.fetch_chunk_size {
            s += &format!("fetch_chunk_size = {}\n", toml_str(c));
        }
        if let Some(p) = self.fetch_parallel {
            s += &format!("fetch_parallel = {p}\n");
        }
        if let Some(p) = &self.proxies {
            s += &format!("proxies = {}\n", toml_list(p));
        }
        if let Some(q) = &self.quota {
            s += &format!("quota = {}\n", toml_str(q));
        }
        if let Some(m) = &self.min_free {
            s += &format!("min_free = {}\n", toml_str(m));
        }
        s += &self.extra;
        for a in &self.assets {
            s += &a.to_toml();
        }
        s += &self.tail;
        s
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            c if c.is_control() => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| toml_str(i))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One lazycas node: store, config file and mount point in a tempdir of its own.
pub struct Lazycas {
    pub config: Config,
    /// The tempdir holding everything below.
    pub root: PathBuf,
    pub store: PathBuf,
    pub config_path: PathBuf,
    pub mountpoint: PathBuf,
    runs: AtomicU32,
    dir: Arc<NodeDir>,
}

/// The node's tempdir, shared by the node and its daemons and dropped after all of them: it
/// unmounts whatever is still mounted on the mount point (say, the stale mount of a killed
/// daemon) before the directory is removed, so removal never walks into a mount.
struct NodeDir {
    mountpoint: PathBuf,
    _dir: TempDir,
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        if !unmount(&self.mountpoint) {
            eprintln!("harness: could not unmount {}", self.mountpoint.display());
        }
    }
}

impl Lazycas {
    /// A node with the test default config and no assets.
    pub fn new() -> Lazycas {
        Lazycas::with_config(Config::default())
    }

    /// A node with `config` (written to its config file at once).
    pub fn with_config(config: Config) -> Lazycas {
        let dir = tempfile::Builder::new()
            .prefix("lazycas-node-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let mountpoint = root.join("mnt");
        std::fs::create_dir(&mountpoint).expect("create mount point");
        let node = Lazycas {
            config,
            store: root.join("store"),
            config_path: root.join("lazycas.toml"),
            mountpoint: mountpoint.clone(),
            root,
            runs: AtomicU32::new(0),
            dir: Arc::new(NodeDir {
                mountpoint: mountpoint.clone(),
                _dir: dir,
            }),
        };
        node.write_config();
        node
    }

    /// Writes `self.config` to the config file (call after changing it).
    /// Mode 0600, as a config holding credentials must be (lazycas refuses one others can read).
    pub fn write_config(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&self.config_path, self.config.to_toml(&self.store)).expect("write config");
        std::fs::set_permissions(&self.config_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod config");
    }

    /// Adds an asset to the config file (a running daemon sees it only after a reload).
    pub fn add_asset(&mut self, asset: Asset) {
        self.config.assets.push(asset);
        self.write_config();
    }

    /// Starts `lazycas mount` and waits for the mount to appear.
    #[track_caller]
    pub fn mount(&self) -> Daemon {
        let mut d = self.spawn(&[]);
        d.wait_mounted(MOUNT_TIMEOUT);
        d
    }

    /// Starts `lazycas mount` with extra environment variables, without waiting for the mount.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Daemon {
        self.write_config();
        let n = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let log = self.root.join(format!("daemon-{n}.log"));
        let mut cmd = self.command();
        cmd.arg("mount")
            .arg(&self.mountpoint)
            .arg("--config")
            .arg(&self.config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mounted_before = top_mount_id(&self.mountpoint);
        let proc = Proc::spawn("lazycas mount", cmd, &log);
        Daemon {
            proc,
            mountpoint: self.mountpoint.clone(),
            mounted_before,
            mount_id: None,
            _dir: self.dir.clone(),
        }
    }

    /// Runs `lazycas ARGS... --config CONFIG` (the store comes from the config) to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).arg("--config").arg(&self.config_path);
        run(cmd, CLI_TIMEOUT)
    }

    /// Runs `lazycas ARGS...` with nothing added.
    pub fn cli_raw(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, CLI_TIMEOUT)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(lazycas_bin());
        cmd.current_dir(&self.root);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,lazycas=debug");
        }
        cmd.env("RUST_BACKTRACE", "1");
        // Plain logs: tests search them and print them on failure.
        cmd.env("NO_COLOR", "1");
        // Keep a developer's own cache out of reach whatever the config says.
        cmd.env("XDG_CACHE_HOME", self.root.join("xdg-cache"));
        cmd
    }

    /// Where the store keeps the complete blob with digest `hex`.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.store.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// Every regular file under `store/blobs`.
    pub fn stored_blobs(&self) -> Vec<PathBuf> {
        files_under(&self.store.join("blobs"))
    }

    /// The hex digests of the blobs in the store.
    pub fn stored_digests(&self) -> Vec<String> {
        self.stored_blobs()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    /// Every regular file under `store/tmp` (downloads in progress or left behind).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        files_under(&self.store.join("tmp"))
    }
}

impl Default for Lazycas {
    fn default() -> Lazycas {
        Lazycas::new()
    }
}

/// Regular files under `dir`, recursively (empty if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A running `lazycas mount`.
pub struct Daemon {
    proc: Proc,
    pub mountpoint: PathBuf,
    /// What the mount point showed when the daemon started (a stale mount, or nothing).
    mounted_before: Option<u64>,
    /// The ID of the mount this daemon made, once seen.
    mount_id: Option<u64>,
    _dir: Arc<NodeDir>,
}

impl Daemon {
    /// `mountpoint/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The daemon's resident memory now (VmRSS), in bytes; 0 once it is gone.
    pub fn rss(&self) -> u64 {
        status_bytes(self.pid(), "VmRSS").unwrap_or(0)
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes; 0 once it is gone.
    pub fn peak_rss(&self) -> u64 {
        status_bytes(self.pid(), "VmHWM").unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The daemon's stderr (its logs) so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Waits up to `timeout` for `needle` to appear in the daemon's log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits for the daemon's mount to appear in the mount table; panics with the daemon's stderr
    /// if the daemon exits first or the time runs out. A mount already on the mount point (the
    /// stale mount of a killed daemon) does not count: the new one must appear on top.
    #[track_caller]
    pub fn wait_mounted(&mut self, timeout: Duration) {
        let fresh = |d: &Daemon| {
            let top = top_mount_id(&d.mountpoint)?;
            // Mount IDs are reused: after the daemon detached a stale mount, its own mount may
            // get the same ID. A dead stale mount fails stat with ENOTCONN; ours answers.
            let new = d.mounted_before.is_none_or(|before| top != before)
                || mount_answers(&d.mountpoint, Duration::from_secs(1));
            new.then_some(top)
        };
        let ok = wait_until(timeout, || fresh(self).is_some() || !self.proc.is_running());
        if ok && self.proc.is_running() {
            self.mount_id = fresh(self);
        }
        if self.mount_id.is_some() {
            return;
        }
        match self.proc.try_status() {
            Some(s) => panic!(
                "lazycas mount exited ({s}) before mounting; stderr:\n{}",
                self.log()
            ),
            None => panic!(
                "{} not mounted after {timeout:?}; stderr:\n{}",
                self.mountpoint.display(),
                self.log()
            ),
        }
    }

    /// Sends `sig` to the daemon's PID.
    pub fn signal(&mut self, sig: libc::c_int) {
        self.proc.signal(sig);
    }

    /// SIGTERM, then asserts a clean exit (status 0 within the grace period) and that the mount is
    /// gone and the mount point usable (no "Transport endpoint is not connected").
    #[track_caller]
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }

    /// `stop` with another signal (SIGINT).
    #[track_caller]
    pub fn stop_with(&mut self, sig: libc::c_int) {
        self.proc.signal(sig);
        let status = self.proc.wait_timeout(GRACE);
        self.assert_clean_exit(status);
    }

    #[track_caller]
    fn assert_clean_exit(&mut self, status: Option<ExitStatus>) {
        let Some(status) = status else {
            panic!(
                "lazycas did not exit within {GRACE:?} of the signal; stderr:\n{}",
                self.log()
            );
        };
        assert!(
            status.success(),
            "lazycas exited with {status} on SIGTERM/SIGINT; stderr:\n{}",
            self.log()
        );
        let ours = self
            .mount_id
            .is_some_and(|id| mount_ids(&self.mountpoint).contains(&id));
        if let Some(entry) = mount_entry(&self.mountpoint).filter(|_| ours) {
            panic!(
                "stale mount left behind after lazycas exited: {entry}\nstderr:\n{}",
                self.log()
            );
        }
        if let Err(e) = std::fs::read_dir(&self.mountpoint) {
            panic!(
                "mount point unusable after lazycas exited: {e}\nstderr:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL, as a crash. The mount is left behind (as after a real crash); the harness unmounts
    /// it when the node (`Lazycas`) and all its daemons are dropped.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.kill()
    }

    /// Waits for the daemon to exit on its own (e.g. after an external unmount).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- lazycas daemon (pid {}) log {} ----\n{}\n---- end of daemon log ----",
                self.proc.pid(),
                self.proc.log_path().display(),
                tail(&self.log(), 300)
            );
        }
        // Unmount only a mount this daemon held until now: once it is dead, its mount may have
        // been detached and its ID reused by another daemon's mount. Whatever is left goes when
        // the node's directory does (see `NodeDir`).
        let owner = self.proc.is_running();
        if owner {
            self.proc.terminate(GRACE);
        }
        if let Some(id) = self.mount_id.filter(|_| owner) {
            if !unmount_top(&self.mountpoint, Some(id)) {
                eprintln!(
                    "harness: could not unmount {} yet",
                    self.mountpoint.display()
                );
            }
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
