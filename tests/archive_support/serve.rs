//! Archives published on a loopback nginx and mounted by a lazycas node whose catalog names them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{sha256_file, Asset, Config, Daemon, Lazycas, Nginx, Origin};

/// One archive file to publish under a catalog name.
pub struct Published {
    /// Catalog name (the directory under the mount point).
    pub name: String,
    /// The archive on local disk.
    pub file: PathBuf,
    /// Path of the copy in the docroot, relative to it (`/`-less), as nginx logs it.
    pub rel: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

/// Copies (hard-links when it can) `file` into `origin`'s docroot as `rel` and describes it.
pub fn publish(origin: &Nginx, name: &str, rel: &str, file: &Path) -> Published {
    let dest = origin.docroot().join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).expect("create docroot subdirectory");
    }
    if fs::hard_link(file, &dest).is_err() {
        fs::copy(file, &dest).unwrap_or_else(|e| panic!("copy {} to docroot: {e}", file.display()));
    }
    Published {
        name: name.to_string(),
        file: file.to_path_buf(),
        rel: rel.to_string(),
        url: origin.url(rel),
        sha256: sha256_file(file),
        size: fs::metadata(file).expect("stat archive").len(),
    }
}

impl Published {
    /// The catalog entry: `kind` is left to inference when the URL ends in `.tar.gz`, `.tgz` or
    /// `.tar` (so inference is exercised), else `kind = "archive"`.
    pub fn asset(&self) -> Asset {
        let inferred = [".tar.gz", ".tgz", ".tar"]
            .iter()
            .any(|s| self.url.ends_with(s));
        let mut a = Asset::file(&self.name, &self.url, &self.sha256);
        a.kind = if inferred {
            None
        } else {
            Some("archive".into())
        };
        a
    }
}

/// An nginx origin, the archives it serves, and a mounted lazycas node naming them.
pub struct Served {
    // Field order is drop order: the daemon (and its mount) goes before the node and the origin.
    pub daemon: Daemon,
    pub node: Lazycas,
    pub archives: Vec<Published>,
    pub origin: Nginx,
}

impl Served {
    /// Publishes `archives` (catalog name, local file) as `<i>/<file name>` and mounts.
    pub fn start(archives: &[(&str, &Path)]) -> Served {
        Served::start_with(archives, Config::default())
    }

    /// `start` with `config` (its assets are replaced by the archives').
    pub fn start_with(archives: &[(&str, &Path)], config: Config) -> Served {
        let origin = Nginx::start();
        let published: Vec<Published> = archives
            .iter()
            .enumerate()
            .map(|(i, (name, file))| {
                let base = file
                    .file_name()
                    .expect("archive file name")
                    .to_string_lossy();
                publish(&origin, name, &format!("{i}/{base}"), file)
            })
            .collect();
        let node = Lazycas::with_config(Config {
            assets: published.iter().map(Published::asset).collect(),
            ..config
        });
        let daemon = node.mount();
        Served {
            daemon,
            node,
            archives: published,
            origin,
        }
    }

    /// `mountpoint/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.daemon.path(name)
    }

    /// The published archive with catalog name `name`.
    pub fn archive(&self, name: &str) -> &Published {
        self.archives
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no archive named {name}"))
    }
}

/// The daemon did not panic.
#[track_caller]
pub fn assert_log_clean(daemon: &Daemon) {
    let log = daemon.log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked:\n{}",
        crate::common::lazycas::tail(&log, 80)
    );
}
