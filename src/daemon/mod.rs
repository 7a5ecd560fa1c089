//! The mount's lifetime: builds the store, fetcher and filesystem, mounts, tells systemd it is
//! ready, and runs until SIGTERM/SIGINT or an external unmount. SIGHUP reloads the config file
//! and the catalog. Its once-a-second tick saves counters, picks up catalog changes other
//! processes committed, and releases idle archive spans; `lazycas add`/`rm` also ask it over
//! the [`control`] socket to refresh at once. A stale mount left by a killed daemon is cleared
//! before mounting, and the mount is taken down (lazily if busy) on the way out, so none is
//! left behind.

pub mod control;
mod fusermount;
mod mount_watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use fuser::{MountOption, SessionACL};
use parking_lot::RwLock;
use tokio::signal::unix::{signal, SignalKind};

use crate::catalog::LiveCatalog;
use crate::config::Config;
use crate::content::{Content, RegistrySettings};
use crate::fetch::{FetchSettings, Fetcher};
use crate::fs::LazyFs;
use crate::publish::directory::Subscriptions;
use crate::store::Store;
use mount_watch::MountWatch;

/// What the running daemon keeps up to date.
struct Live {
    content: Arc<Content>,
    catalog: Arc<LiveCatalog>,
    config: RwLock<Arc<Config>>,
    /// `[[directory]]` listings, started by the tick.
    directories: Arc<Subscriptions>,
}

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// The config file to reload on SIGHUP (None: built-in defaults only).
    pub config_path: Option<PathBuf>,
    /// `--store`, which wins over the file's `store` on reload too.
    pub store_override: Option<PathBuf>,
}

/// A tokio runtime sized for a daemon that mostly waits on the network.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("lazycas-io")
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Mounts and serves until told to stop.
pub fn run(req: &MountRequest, config: Config) -> anyhow::Result<()> {
    crate::heap::limit_arenas();
    let rt = runtime()?;
    let store = Arc::new(
        Store::open(&config.store)
            .with_context(|| format!("opening store {}", config.store.display()))?,
    );
    store.set_limits(limits_of(&config));
    store
        .reconcile()
        .context("reconciling the store with its database")?;
    let fetcher = Fetcher::new(FetchSettings::from_config(&config))?;
    let content = Arc::new(Content::new(store.clone(), fetcher, config.archive_cache)?);
    content.set_publishers(config.publishers.clone());
    content.set_fill_default(config.fill);
    content.set_registry_settings(RegistrySettings::from_config(&config));
    let catalog =
        Arc::new(LiveCatalog::new(&config, store.connect_db()?).context("loading the catalog")?);
    let allow_other = config.allow_other;
    let live = Live {
        content: content.clone(),
        catalog: catalog.clone(),
        config: RwLock::new(Arc::new(config)),
        directories: Arc::default(),
    };
    let notifier = Arc::new(OnceLock::new());
    let fs = LazyFs::new(content, catalog, rt.handle().clone(), notifier.clone());

    // Before the mount appears: a signal sent as soon as it is visible must find its handler.
    let signals = {
        let _in_runtime = rt.enter();
        Signals::install().context("installing signal handlers")?
    };
    clear_stale_mount(&req.mountpoint);
    let mut options = fuser::Config::default();
    options.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("lazycas".into()),
        MountOption::Subtype("lazycas".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if allow_other {
        options.acl = SessionACL::All;
    }
    options.n_threads = Some(4);
    options.clone_fd = true;
    // SAFETY: geteuid cannot fail.
    let unprivileged = unsafe { libc::geteuid() } != 0;
    let session = if unprivileged {
        let mut opts =
            "ro,nodev,nosuid,default_permissions,fsname=lazycas,subtype=lazycas".to_string();
        if allow_other {
            opts.push_str(",allow_other");
        }
        let fd = fusermount::mount(&req.mountpoint, &opts)
            .with_context(|| format!("mounting {} with fusermount3", req.mountpoint.display()))?;
        fuser::Session::from_fd(fs, fd, options.acl, options)
    } else {
        fuser::Session::new(fs, &req.mountpoint, &options)
    }
    .with_context(|| format!("mounting {}", req.mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    let bg = session.spawn().context("starting the FUSE session")?;
    tracing::info!(mountpoint = %req.mountpoint.display(), store = %store.root().display(), "mounted");
    // Listening before READY=1: a `systemctl reload` right after start must find the socket.
    let control = {
        let _in_runtime = rt.enter();
        control::ControlSocket::bind(store.root())
    };
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    let stop = rt.block_on(wait_for_stop(&bg, req, &live, control.as_ref(), signals));
    drop(control);
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Err(e) = store.flush_stats() {
        tracing::warn!("could not save counters: {e}");
    }
    let joined = match (stop, unprivileged) {
        (Stop::Unmounted, _) => {
            abandon_session(bg);
            Ok(())
        }
        (Stop::Signal, false) => bg.umount_and_join(),
        (Stop::Signal, true) => fusermount::unmount(&req.mountpoint).and_then(|()| bg.join()),
    };
    if let Err(e) = joined {
        // Busy (a reader still has files open): detach, so no stale mount remains.
        tracing::warn!("unmount of {}: {e}; detaching it", req.mountpoint.display());
        detach(&req.mountpoint);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped ({stop:?})");
    Ok(())
}

/// Why the daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM/SIGINT with the mount still ours: unmount it.
    Signal,
    /// The mount was taken away from outside (and, on a signal, only files opened before a lazy
    /// unmount still hold the session): nothing to unmount.
    Unmounted,
}

/// Ends a session whose mount the kernel already took away. Dropping or joining it would make
/// fuser unmount the mount point again (failing with EINVAL, or taking down a newer mount made
/// there since), so it is left to the process exit, which closes its descriptors.
fn abandon_session(bg: fuser::BackgroundSession) {
    std::mem::forget(bg);
}

async fn wait_for_stop(
    bg: &fuser::BackgroundSession,
    req: &MountRequest,
    live: &Live,
    control: Option<&control::ControlSocket>,
    signals: Signals,
) -> Stop {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let watch = MountWatch::new(&req.mountpoint)
        .inspect_err(|e| tracing::debug!("cannot watch for a lazy unmount from outside: {e}"))
        .ok();
    let mut detached = false;
    let on_signal = |detached: bool| {
        if detached {
            Stop::Unmounted
        } else {
            Stop::Signal
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = term.recv() => return on_signal(detached),
            _ = int.recv() => return on_signal(detached),
            _ = hup.recv() => {
                let _ = reload(req, live);
            }
            Some((request, conn)) = next_request(control) => {
                let result = match request.as_str() {
                    control::REFRESH_CATALOG => refresh_catalog(live).map(|_| ()),
                    control::RELOAD => reload(req, live),
                    other => Err(format!("unknown request {other:?}")),
                };
                conn.answer(result).await;
            }
            _ = tick.tick() => {
                if bg.guard.is_finished() {
                    return Stop::Unmounted;
                }
                if !detached && watch.is_some_and(|w| !w.is_attached()) {
                    detached = true;
                    note_detached(&req.mountpoint);
                }
                if let Err(e) = live.content.store().flush_stats() {
                    tracing::warn!("could not save counters: {e}");
                }
                if let Err(e) = refresh_catalog(live) {
                    tracing::error!("{e}");
                }
                let directories = live.config.read().directories.clone();
                live.directories.tick(&directories, &live.content);
                ticks += 1;
                if ticks.is_multiple_of(SPAN_SWEEP_TICKS) {
                    release_idle_spans(&live.content);
                }
            }
        }
    }
}

/// The signals the daemon answers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// The next control request, or never when there is no control socket.
async fn next_request(
    control: Option<&control::ControlSocket>,
) -> Option<(String, control::Request)> {
    match control {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// Picks up catalog entries another process committed; returns whether anything changed.
fn refresh_catalog(live: &Live) -> Result<bool, String> {
    let config = live.config.read().clone();
    live.catalog
        .refresh(&config)
        .map_err(|e| format!("catalog refresh failed, keeping the old one: {e}"))
}

/// A lazy unmount from outside left files open: they keep being served until closed, when the
/// kernel ends the session and the daemon exits.
fn note_detached(mountpoint: &Path) {
    tracing::info!(
        "{} was unmounted from outside; exiting once no file on it is open",
        mountpoint.display()
    );
    notify(&[sd_notify::NotifyState::Status(
        "unmounted from outside; serving files still open",
    )]);
}

/// Reloads the config file and the catalog (SIGHUP, or `reload` on the control socket); tells
/// systemd (RELOADING=1 ... READY=1, with the outcome in STATUS=) and returns the outcome. A
/// config that fails to load leaves the old one serving.
fn reload(req: &MountRequest, live: &Live) -> Result<(), String> {
    notify(&[sd_notify::NotifyState::Reloading]);
    let mut outcome = match &req.config_path {
        Some(path) => reload_config(path, req, live),
        None => Ok(()),
    };
    let config = live.config.read().clone();
    if let Err(e) = live.catalog.reload(&config) {
        tracing::error!("catalog reload failed, keeping the old one: {e}");
        outcome = outcome.and(Err(format!("catalog: {e}")));
    }
    let status = match &outcome {
        Ok(()) => "serving".to_string(),
        Err(why) => format!("serving; the last reload failed: {why}"),
    };
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    outcome
}

/// Applies the config file at `path` to the running daemon, as far as it can without a restart.
fn reload_config(path: &Path, req: &MountRequest, live: &Live) -> Result<(), String> {
    let mut c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the old config");
            return Err(e.to_string());
        }
    };
    if let Some(s) = &req.store_override {
        c.store = s.clone();
    }
    let store = live.content.store();
    if c.store != store.root() {
        tracing::warn!(
            "SIGHUP: a new store path takes a restart; keeping {}",
            store.root().display()
        );
    }
    store.set_limits(limits_of(&c));
    live.content.set_publishers(c.publishers.clone());
    live.content.set_fill_default(c.fill);
    let mut outcome = Ok(());
    live.content
        .set_registry_settings(RegistrySettings::from_config(&c));
    match Fetcher::new(FetchSettings::from_config(&c)) {
        Ok(f) => live.content.set_fetcher(f),
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the old proxies and deadlines");
            outcome = Err(format!("{e}; kept the old proxies and deadlines"));
        }
    }
    if c.allow_other != live.config.read().allow_other {
        tracing::warn!("SIGHUP: allow_other changes take a remount");
    }
    *live.config.write() = Arc::new(c);
    tracing::info!("SIGHUP: reloaded {}", path.display());
    outcome
}

/// The store limits a config asks for.
pub fn limits_of(c: &Config) -> crate::store::Limits {
    crate::store::Limits {
        quota: c.quota,
        min_free: c.min_free,
    }
}

/// Seconds between sweeps of the decoded-span cache.
const SPAN_SWEEP_TICKS: u64 = 60;
/// Decoded archive spans unused this long are released.
const SPAN_IDLE: Duration = Duration::from_secs(300);

/// Gives back the memory of archive spans nobody read lately (and the allocator's free pages).
fn release_idle_spans(content: &Content) {
    let freed = content.archives().release_idle_spans(SPAN_IDLE);
    if freed > 0 {
        tracing::debug!(bytes = freed, "released idle archive spans");
        crate::heap::trim();
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// A mountpoint whose FUSE daemon died answers ENOTCONN: detach it so we can mount again.
/// `stat` alone may be answered from the kernel's attribute cache just after the daemon died;
/// `statfs` always reaches the daemon.
fn clear_stale_mount(mountpoint: &Path) {
    let stat_dead =
        std::fs::metadata(mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    if stat_dead || statfs_errno(mountpoint) == Some(libc::ENOTCONN) {
        tracing::warn!(
            "{} is a stale mount (its daemon died); detaching it",
            mountpoint.display()
        );
        detach(mountpoint);
    }
}

/// The errno `statfs(path)` fails with, or None if it succeeds.
fn statfs_errno(path: &Path) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a valid NUL-terminated path and buf is large enough for a statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Lazy unmount (MNT_DETACH) as root, `fusermount3 -uz` otherwise.
fn detach(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::error!("could not detach {}", mountpoint.display());
    }
}
