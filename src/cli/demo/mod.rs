//! `lazycas demo`: a newcomer's one-command tour, offline. It starts a loopback origin serving
//! generated sample assets ([`samples`], [`origin`]), writes a temporary config and store, runs
//! the real daemon on a temporary mount point ([`node`]), and walks through what lazycas does,
//! printing what each step cost the origin: listing fetches nothing; the first read of an image
//! fetches it once, verifies it, and serves it; its `user.lazycas.*` xattrs; a second read costs
//! the origin nothing; an archive shows as a directory tree without being extracted; a copy whose
//! bytes do not match the pinned digest is refused. Then it unmounts, stops the origin and
//! removes every temporary file.
//!
//! The user's own config is not used: the demo needs none and must not touch a real store.

mod node;
mod origin;
pub(crate) mod samples;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::config::{format_size, Config};
use crate::digest::Digest;
use node::DemoDaemon;
use origin::{Origin, Served};
use samples::{Sample, Samples};

/// Deadline for any one operation on the mount (a daemon bug must not hang the demo).
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the demo. `_config` is ignored: the demo writes and uses a temporary config of its own.
pub fn run(_config: &Config) -> anyhow::Result<()> {
    preflight()?;
    let exe = std::env::current_exe().context("finding the lazycas executable")?;
    let work = tempfile::Builder::new()
        .prefix("lazycas-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut tour = Tour::new(work.path(), exe)?;
    let outcome = tour.walk();
    let stopped = tour.finish();
    let mountpoint = tour.mountpoint.clone();
    drop(tour);
    if node::is_mounted(&mountpoint) {
        // Never delete through a live mount: leave the directory for the user to inspect.
        let kept = work.keep();
        eprintln!(
            "lazycas demo: {} is still mounted; left {} in place",
            mountpoint.display(),
            kept.display()
        );
    } else {
        work.close()
            .context("removing the demo's temporary directory")?;
        if outcome.is_ok() && stopped.is_ok() {
            println!("   temporary directory removed.");
        }
    }
    outcome?;
    stopped?;
    println!();
    println!(
        "That is lazycas. On a real node: systemd/lazycas.service mounts /containers with the"
    );
    println!("assets of /etc/lazycas/lazycas.toml (see systemd/lazycas.toml).");
    Ok(())
}

/// FUSE must be usable: /dev/fuse, and fusermount3 when not root.
fn preflight() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("the demo mounts a FUSE file system, but /dev/fuse is missing (load the fuse module, or give the container --device /dev/fuse)");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let has_fusermount = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").exists()))
        .unwrap_or(false);
    if !root && !has_fusermount {
        bail!("the demo mounts a FUSE file system: run it as root, or install fusermount3 (Debian package fuse3)");
    }
    Ok(())
}

/// The demo's state: origin, daemon and the paths it works in.
struct Tour {
    samples: Samples,
    origin: Origin,
    daemon: Option<DemoDaemon>,
    exe: PathBuf,
    config_path: PathBuf,
    store: PathBuf,
    mountpoint: PathBuf,
    root: PathBuf,
}

impl Tour {
    fn new(root: &Path, exe: PathBuf) -> anyhow::Result<Tour> {
        let samples = Samples::generate().context("generating the sample assets")?;
        let files: HashMap<String, std::sync::Arc<[u8]>> = samples
            .all()
            .iter()
            .map(|s| (s.url_path.to_string(), s.bytes.clone()))
            .collect();
        let origin = Origin::start(files).context("starting the loopback origin")?;
        let mountpoint = root.join("mnt");
        std::fs::create_dir(&mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        let store = root.join("store");
        let config_path = root.join("lazycas.toml");
        std::fs::write(&config_path, samples.config_toml(&store, &origin.url("")))
            .with_context(|| format!("writing {}", config_path.display()))?;
        Ok(Tour {
            samples,
            origin,
            daemon: None,
            exe,
            config_path,
            store,
            mountpoint,
            root: root.to_path_buf(),
        })
    }

    fn walk(&mut self) -> anyhow::Result<()> {
        println!("lazycas demo: a loopback origin, a temporary store and a real FUSE mount; nothing leaves this machine.");
        println!("   working in {} (removed at the end)", self.root.display());
        self.show_origin();
        self.mount()?;
        self.list_catalog()?;
        let image = self.samples.image.clone();
        self.first_read(&image)?;
        self.show_xattrs(&image)?;
        self.second_read(&image)?;
        self.browse_archive();
        self.refuse_tampered()?;
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    fn show_origin(&self) {
        heading(1, "The origin");
        println!(
            "   {} serves {} assets; the catalog pins each one's sha256:",
            self.origin.url(""),
            self.samples.all().len()
        );
        for s in self.samples.all() {
            let note = if Digest::of(&s.bytes) == s.pinned {
                ""
            } else {
                "  (its bytes do NOT match this pin)"
            };
            println!(
                "     {:<32} {:<8} {:>7}  {}{note}",
                s.name,
                s.kind.as_str(),
                format_size(s.bytes.len() as u64),
                s.pinned.short()
            );
        }
    }

    fn mount(&mut self) -> anyhow::Result<()> {
        heading(2, "Mount");
        let (daemon, took) = DemoDaemon::start(
            &self.exe,
            &self.config_path,
            &self.mountpoint,
            &self.root.join("daemon.log"),
            &self.root.join("notify.sock"),
        )?;
        println!(
            "   lazycas mount {} --config {}",
            self.mountpoint.display(),
            self.config_path.display()
        );
        println!(
            "   pid {}; sent READY=1 (sd_notify, as systemd sees it) after {} ms",
            daemon.pid().unwrap_or(0),
            took.as_millis()
        );
        self.daemon = Some(daemon);
        let served = self.origin.served();
        if served.requests != 0 {
            bail!(
                "mounting made {} request(s) to the origin; it must fetch nothing",
                served.requests
            );
        }
        println!("   origin so far: 0 requests (mounting fetches nothing)");
        Ok(())
    }

    fn list_catalog(&self) -> anyhow::Result<()> {
        heading(3, "List the catalog: nothing is fetched");
        let archives: Vec<PathBuf> = self
            .samples
            .all()
            .iter()
            .filter(|s| s.kind == crate::config::AssetKind::Archive)
            .map(|s| self.path(s.name))
            .collect();
        let root = self.mountpoint.clone();
        let lines = within("listing the mount", move || catalog_lines(&root, &archives))??;
        for l in lines {
            println!("   {l}");
        }
        let served = self.origin.served();
        println!(
            "   origin so far: {}, {} bytes",
            requests(served.requests),
            served.bytes
        );
        if served.requests != 0 {
            bail!(
                "listing the catalog made {} request(s) to the origin; it must fetch nothing",
                served.requests
            );
        }
        Ok(())
    }

    fn first_read(&self, image: &Sample) -> anyhow::Result<()> {
        heading(
            4,
            &format!(
                "First read of {}: fetched once, verified, then served",
                image.name
            ),
        );
        let before = self.origin.served();
        let (bytes, took) = timed_read(self.path(image.name))?;
        let got = Digest::of(&bytes);
        let cost = self.origin.served().since(before);
        println!(
            "   read {} in {} ms",
            format_size(bytes.len() as u64),
            took.as_millis()
        );
        println!("   sha256 of what was read: {got}");
        if got != image.pinned {
            bail!(
                "{} read back as {got}, but its pinned digest is {}",
                image.name,
                image.pinned
            );
        }
        println!("   = the pinned digest: every byte served was verified first");
        println!(
            "   origin: {}, {}{}",
            requests(cost.requests),
            format_size(cost.bytes),
            if cost.requests > 1 {
                " (1 MiB range requests, in parallel)"
            } else {
                ""
            }
        );
        if let Some(line) = self.log_line(&["fetched", image.name]) {
            println!("   daemon log: {line}");
        }
        Ok(())
    }

    fn show_xattrs(&self, image: &Sample) -> anyhow::Result<()> {
        heading(5, "Extended attributes");
        let path = self.path(image.name);
        for name in [
            "user.lazycas.digest",
            "user.lazycas.source",
            "user.lazycas.cached",
        ] {
            let p = path.clone();
            let value = within("reading an xattr", move || get_xattr(&p, name))?;
            match value {
                Ok(v) => println!("   {name} = {v}"),
                Err(e) => println!("   {name}: {e}"),
            }
        }
        Ok(())
    }

    fn second_read(&self, image: &Sample) -> anyhow::Result<()> {
        heading(6, "Read it again: the origin is not asked");
        let before = self.origin.served();
        let (bytes, took) = timed_read(self.path(image.name))?;
        let cost = self.origin.served().since(before);
        if Digest::of(&bytes) != image.pinned {
            bail!("the second read of {} returned different bytes", image.name);
        }
        println!(
            "   read {} in {} ms; origin: +{}, +{} bytes",
            format_size(bytes.len() as u64),
            took.as_millis(),
            requests(cost.requests),
            cost.bytes
        );
        if cost != Served::default() {
            bail!(
                "the second read cost the origin {} request(s); it must be served from the store",
                cost.requests
            );
        }
        let hex = image.pinned.hex();
        let blob = self.store.join("blobs/sha256").join(&hex[..2]).join(&hex);
        if let Ok(meta) = std::fs::metadata(&blob) {
            println!(
                "   served from the store: {} ({}, mode {:o})",
                blob.strip_prefix(&self.root).unwrap_or(&blob).display(),
                format_size(meta.len()),
                meta.permissions().mode() & 0o777
            );
        }
        Ok(())
    }

    /// The archive step never fails the demo: it reports what the mount answered.
    fn browse_archive(&self) {
        let archive = &self.samples.archive;
        heading(
            7,
            &format!(
                "The archive {} as a directory (read without extracting)",
                archive.name
            ),
        );
        let before = self.origin.served();
        let dir = self.path(archive.name);
        let tree = within("listing the archive", move || tree_lines(&dir)).and_then(|r| r);
        match tree {
            Ok(lines) if !lines.is_empty() => {
                for l in lines {
                    println!("   {l}");
                }
            }
            Ok(_) => {
                println!("   (the mount shows the archive as an empty directory: this build does not browse archives yet)");
                return;
            }
            Err(e) => {
                println!("   (the archive could not be listed: {e:#})");
                return;
            }
        }
        let readme = &self.samples.readme;
        match timed_read(self.path(&format!("{}/{}", archive.name, readme.path))) {
            Ok((bytes, took)) if bytes == readme.bytes => {
                let first = String::from_utf8_lossy(&bytes)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                println!(
                    "   {}: {first:?} ({} bytes, {} ms, same as in the archive)",
                    readme.path,
                    bytes.len(),
                    took.as_millis()
                );
            }
            Ok((bytes, _)) => println!(
                "   {}: read {} bytes that differ from the archive's member",
                readme.path,
                bytes.len()
            ),
            Err(e) => println!("   {}: {e:#}", readme.path),
        }
        let cost = self.origin.served().since(before);
        println!(
            "   origin: {}, {} (the .tar.gz, downloaded, verified and indexed once)",
            requests(cost.requests),
            format_size(cost.bytes)
        );
    }

    fn refuse_tampered(&self) -> anyhow::Result<()> {
        let bad = &self.samples.tampered;
        heading(
            8,
            &format!(
                "A copy that does not match its pin is refused: {}",
                bad.name
            ),
        );
        let started = Instant::now();
        match timed_read(self.path(bad.name)) {
            Ok(_) => bail!(
                "{} was served although its bytes do not match the pinned digest",
                bad.name
            ),
            Err(e) => println!(
                "   read failed after {} ms: {e:#}",
                started.elapsed().as_millis()
            ),
        }
        if let Some(line) = self.log_line(&["mismatch", bad.name]) {
            println!("   daemon log: {line}");
        }
        let served = Digest::of(&bad.bytes);
        let stored = [bad.pinned, served].iter().any(|d| {
            self.store
                .join("blobs/sha256")
                .join(&d.hex()[..2])
                .join(d.hex())
                .exists()
        });
        if stored {
            bail!("the tampered download was stored");
        }
        println!("   nothing of it was stored; a reader never sees unverified bytes");
        Ok(())
    }

    /// Stops the daemon (it unmounts) and the origin.
    fn finish(&mut self) -> anyhow::Result<()> {
        heading(9, "Clean up");
        let total = self.origin.served();
        let stopped = match self.daemon.as_mut() {
            Some(d) => d.stop().map(|(status, took)| {
                println!(
                    "   SIGTERM: the daemon unmounted and exited ({status}) in {} ms",
                    took.as_millis()
                );
            }),
            None => Ok(()),
        };
        self.origin.stop();
        println!(
            "   origin stopped; it served {}, {} in all",
            requests(total.requests),
            format_size(total.bytes)
        );
        stopped
    }

    /// The first daemon log line containing every needle, without its timestamp.
    fn log_line(&self, needles: &[&str]) -> Option<String> {
        let log = self.daemon.as_ref()?.log();
        log.lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(|l| strip_timestamp(l).to_string())
    }
}

/// `1 request`, `4 requests`.
fn requests(n: u64) -> String {
    if n == 1 {
        "1 request".to_string()
    } else {
        format!("{n} requests")
    }
}

fn heading(n: u32, title: &str) {
    println!();
    println!("{n}. {title}");
}

/// A tracing line without its leading timestamp (`2026-…Z  INFO msg` → `INFO msg`).
fn strip_timestamp(line: &str) -> &str {
    for level in [" INFO ", " WARN ", " ERROR ", " DEBUG "] {
        if let Some(i) = line.find(level) {
            return line[i..].trim();
        }
    }
    line.trim()
}

/// Runs `f` on its own thread, failing after [`STEP_DEADLINE`].
fn within<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STEP_DEADLINE)
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {STEP_DEADLINE:?}"))
}

/// Reads a whole file through the mount, with a deadline; returns the bytes and the time taken.
fn timed_read(path: PathBuf) -> anyhow::Result<(Vec<u8>, Duration)> {
    let shown = path.display().to_string();
    let started = Instant::now();
    let bytes = within(&format!("reading {shown}"), move || std::fs::read(&path))?
        .with_context(|| format!("reading {shown}"))?;
    Ok((bytes, started.elapsed()))
}

/// `ls -l`-style lines for the catalog part of the mount, not descending into archives or
/// `sha256/` (both list content, not names).
fn catalog_lines(root: &Path, archives: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries.iter().rev() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let is_archive = archives.contains(&path);
            let note = if is_archive {
                "   (an archive: its tree appears on first look inside)"
            } else {
                ""
            };
            out.push((rel.clone(), listing_line(&meta, &rel, note)));
            if meta.is_dir() && !is_archive && rel != "sha256" {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

/// One `ls -l`-style line: mode, size (blank for directories), name, `/` for directories, then
/// `suffix` (a symlink target or a note).
fn listing_line(meta: &std::fs::Metadata, rel: &str, suffix: &str) -> String {
    let size = if meta.is_dir() {
        String::new()
    } else {
        format_size(meta.len())
    };
    let slash = if meta.is_dir() { "/" } else { "" };
    format!("{} {size:>7}  {rel}{slash}{suffix}", mode_string(meta))
}

/// `ls -lR`-style lines of a directory tree (at most 50), with symlink targets.
fn tree_lines(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("listing {}", d.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", d.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            let target = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .map(|t| format!(" -> {}", t.display()))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            out.push((rel.clone(), listing_line(&meta, &rel, &target)));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out.into_iter().take(50).map(|(_, l)| l).collect())
}

/// `drwxr-xr-x` for a file's type and permission bits.
fn mode_string(meta: &std::fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        '-'
    };
    let mode = meta.permissions().mode();
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// An extended attribute's value as text.
fn get_xattr(path: &Path, name: &str) -> std::io::Result<String> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let p = CString::new(path.as_os_str().as_bytes()).map_err(invalid)?;
    let n = CString::new(name).map_err(invalid)?;
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stripped() {
        assert_eq!(
            strip_timestamp("2026-11-21T13:25:08.123Z  INFO fetched sha256:abc asset=x"),
            "INFO fetched sha256:abc asset=x"
        );
        assert_eq!(strip_timestamp("plain"), "plain");
    }

    #[test]
    fn modes_print_like_ls() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert_eq!(mode_string(&std::fs::metadata(&f).unwrap()), "-r--r--r--");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            mode_string(&std::fs::metadata(dir.path()).unwrap()),
            "drwxr-xr-x"
        );
    }

    #[test]
    fn catalog_listing_skips_archives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/arch/inner")).unwrap();
        std::fs::write(dir.path().join("a/file"), b"123").unwrap();
        let lines = catalog_lines(dir.path(), &[dir.path().join("a/arch")]).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with(" a/"), "{lines:?}");
        assert!(
            lines[1].contains("a/arch/") && lines[1].contains("archive"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with("a/file"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("inner")));
    }

    #[test]
    fn tree_lines_show_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/x"), b"1").unwrap();
        std::os::unix::fs::symlink("d/x", dir.path().join("l")).unwrap();
        let lines = tree_lines(dir.path()).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[2].starts_with('l') && lines[2].ends_with("l -> d/x"),
            "{lines:?}"
        );
    }
}
