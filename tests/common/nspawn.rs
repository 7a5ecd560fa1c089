//! `Container`: a minimal Debian root booted under its own systemd with `systemd-nspawn`, to run
//! the shipped unit the way a user would.
//!
//! The root (`debootstrap --variant=minbase --include=systemd,systemd-sysv,fuse3,dbus bookworm`)
//! is built once and cached at `<target dir>/nspawn-root`: debootstrap writes into a
//! `nspawn-root.partial-<pid>` directory beside it, under a lock file, and only a complete build
//! is renamed into place, so a half-built root is never used. Each container boots that root
//! with `--volatile=overlay` (every write lands in a tmpfs and vanishes at shutdown), so the
//! cached root stays as debootstrap left it.
//!
//! `--register=no` leaves no machined to talk to (`systemd-run -M` and `machinectl shell` need
//! one), so commands run inside through `nsenter` into every namespace of the container's init.
//! Paths inside are reachable from the host as `/proc/<init>/root/...`, which sees the
//! container's mounts.
//!
//! Dropping a `Container` stops it by PID, also when the test panics: SIGTERM to systemd-nspawn
//! (a clean poweroff of the container), SIGKILL after a grace period, then SIGKILL to the
//! container's init through a pidfd (its PID namespace, and with it every mount of the
//! container, goes away with it).

use super::process::{find_program, run, wait_until, Output, Proc};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Debian release the root is built from.
pub const SUITE: &str = "bookworm";
/// The packages debootstrap adds to minbase: an init, FUSE's tools and the system bus.
pub const INCLUDE: &str = "systemd,systemd-sysv,fuse3,dbus";
/// The mirror debootstrap downloads from.
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// How long debootstrap may take (it downloads about 100 MB).
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a container gets to finish booting.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a command run inside may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a container gets to power off after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// PATH for commands run inside (the test's own PATH names host directories).
const INSIDE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cached root, once built (or why it could not be), for this test process.
static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The root for a test, or None (after saying why) where containers cannot run here. With
/// `LAZYCAS_TESTS_REQUIRE_FUSE=1` it panics instead, so CI cannot pass by skipping.
pub fn root_or_skip() -> Option<PathBuf> {
    let reason = match unavailable() {
        Some(reason) => reason,
        None => match debian_root() {
            Ok(root) => return Some(root),
            Err(reason) => reason,
        },
    };
    if std::env::var_os("LAZYCAS_TESTS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
        panic!("systemd-nspawn tests required but cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

/// Why containers cannot run on this machine, or None if they can (before building the root).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("systemd-nspawn and debootstrap need root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    for (program, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ] {
        if find_program(program).is_none() {
            return Some(format!(
                "`{program}` not found; install the Debian package `{package}` (see .ci/run)"
            ));
        }
    }
    None
}

/// The target directory cargo builds into (the root is cached there).
fn target_dir() -> PathBuf {
    if let Some(bin) = option_env!("CARGO_BIN_EXE_lazycas") {
        if let Some(dir) = Path::new(bin).parent().and_then(Path::parent) {
            return dir.to_path_buf();
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The cached root, built now if it is not there yet.
pub fn debian_root() -> Result<PathBuf, String> {
    ROOT.get_or_init(|| build_root_once(&target_dir())).clone()
}

fn build_root_once(target: &Path) -> Result<PathBuf, String> {
    let root = target.join("nspawn-root");
    std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    // Other test processes may build at the same moment; one builds, the others wait.
    let _lock = FileLock::exclusive(&target.join("nspawn-root.lock"))?;
    if root.is_dir() {
        return Ok(root);
    }
    remove_stale_partials(target)?;
    let partial = target.join(format!("nspawn-root.partial-{}", std::process::id()));
    let log = target.join("nspawn-root.debootstrap.log");
    eprintln!(
        "building the nspawn root {} with debootstrap (once; log in {})",
        root.display(),
        log.display()
    );
    let started = Instant::now();
    let mut cmd = Command::new(find_program("debootstrap").ok_or("no debootstrap")?);
    cmd.arg("--variant=minbase")
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(&partial)
        .arg(MIRROR);
    let out = run(cmd, DEBOOTSTRAP_TIMEOUT);
    let _ = std::fs::write(&log, format!("{}\n{}", out.stdout, out.stderr));
    if !out.success() {
        let _ = remove_unmounted_tree(&partial);
        return Err(format!(
            "debootstrap failed (no network to {MIRROR}?): {}",
            super::lazycas::tail(&format!("{}{}", out.stdout, out.stderr), 5)
        ));
    }
    std::fs::rename(&partial, &root)
        .map_err(|e| format!("renaming {} into place: {e}", partial.display()))?;
    eprintln!(
        "built the nspawn root in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// Removes what a crashed build left behind (the lock is held: nobody else is building).
fn remove_stale_partials(target: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(target).map_err(|e| format!("listing {}: {e}", target.display()))?;
    for entry in entries.filter_map(Result::ok) {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("nspawn-root.partial-")
        {
            remove_unmounted_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Deletes `dir`, unless something is still mounted under it: debootstrap mounts /proc (and,
/// in some containers, binds /dev) into its target, and deleting through such a mount would
/// delete the host's files.
fn remove_unmounted_tree(dir: &Path) -> Result<(), String> {
    let prefix = format!("{}/", dir.display());
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(line) = table.lines().find(|l| {
        l.split(' ').nth(4).is_some_and(|point| {
            point.starts_with(&prefix) || point == prefix.trim_end_matches('/')
        })
    }) {
        return Err(format!(
            "{} still has a mount inside ({line}); unmount it and delete the directory",
            dir.display()
        ));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

/// An exclusive `flock` on a file, released on drop.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn exclusive(path: &Path) -> Result<FileLock, String> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("locking {}: {e}", path.display()));
        }
        Ok(FileLock { _file: file })
    }
}

/// A host path the container sees at `inside`.
#[derive(Debug, Clone)]
pub struct Bind {
    pub host: PathBuf,
    pub inside: String,
    pub read_only: bool,
}

impl Bind {
    /// A read-only bind mount.
    pub fn ro(host: &Path, inside: &str) -> Bind {
        Bind {
            host: host.to_path_buf(),
            inside: inside.into(),
            read_only: true,
        }
    }

    /// A writable bind mount.
    pub fn rw(host: &Path, inside: &str) -> Bind {
        Bind {
            host: host.to_path_buf(),
            inside: inside.into(),
            read_only: false,
        }
    }

    fn to_arg(&self) -> String {
        let flag = if self.read_only {
            "--bind-ro"
        } else {
            "--bind"
        };
        format!("{flag}={}:{}", self.host.display(), self.inside)
    }
}

/// One container at a time: with `--keep-unit` every container's systemd takes the test
/// process's own cgroup as its root, and two booting side by side trample each other's
/// subtree (units then fail with status=219/CGROUP).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A booted container.
pub struct Container {
    // Released after `drop` has stopped the container: the next one boots only then.
    _turn: std::sync::MutexGuard<'static, ()>,
    name: String,
    nspawn: Proc,
    init_pid: u32,
    init: OwnedFd,
    _logs: TempDir,
}

/// Containers booted by this process so far (for unique machine names).
static BOOTED: AtomicU32 = AtomicU32::new(0);

impl Container {
    /// Boots `root` with `binds` and waits until its systemd has finished starting up.
    pub fn boot(root: &Path, binds: &[Bind]) -> Container {
        // A test that panicked while holding the turn poisons it; the next may still boot.
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let nspawn = find_program("systemd-nspawn").expect("systemd-nspawn (systemd-container)");
        let name = format!(
            "lazycas-test-{}-{}",
            std::process::id(),
            BOOTED.fetch_add(1, Ordering::Relaxed)
        );
        let logs = tempfile::Builder::new()
            .prefix("lazycas-nspawn-")
            .tempdir()
            .expect("tempdir for the console log");
        let mut cmd = Command::new(nspawn);
        cmd.arg("--directory")
            .arg(root)
            .arg(format!("--machine={name}"))
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--console=read-only",
                "--bind=/dev/fuse",
                "--capability=CAP_SYS_ADMIN",
            ])
            .args(binds.iter().map(Bind::to_arg))
            .env("SYSTEMD_COLORS", "0");
        let mut proc = Proc::spawn("systemd-nspawn", cmd, &logs.path().join("console.log"));
        let init_pid = wait_for_init(&mut proc);
        let init = pidfd_open(init_pid).unwrap_or_else(|e| {
            panic!(
                "pidfd_open({init_pid}): {e}\nconsole:\n{}",
                super::lazycas::tail(&proc.log(), 40)
            )
        });
        let container = Container {
            _turn: turn,
            name,
            nspawn: proc,
            init_pid,
            init,
            _logs: logs,
        };
        container.wait_booted();
        container
    }

    /// The container's init as a host PID.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// The host path of `inside` (an absolute path in the container), through the container's
    /// mounts.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            self.init_pid,
            inside.trim_start_matches('/')
        ))
    }

    /// Runs `args` inside the container, as root, to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(find_program("nsenter").expect("nsenter (util-linux)"));
        cmd.arg(format!("--target={}", self.init_pid))
            .args(["--all", "--root", "--wd", "--"])
            .args(args)
            .env_clear()
            .env("PATH", INSIDE_PATH)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "");
        run(cmd, COMMAND_TIMEOUT)
    }

    /// What the container's console showed so far (boot and shutdown messages).
    pub fn console(&self) -> String {
        self.nspawn.log()
    }

    /// How many mounts sit on `inside` in the container.
    pub fn mounts_on(&self, inside: &str) -> usize {
        let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.init_pid))
            .unwrap_or_else(|e| panic!("reading the container's mount table: {e}"));
        table
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(inside))
            .count()
    }

    /// Waits until `systemctl is-system-running` says the boot is over.
    fn wait_booted(&self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.run(&["systemctl", "is-system-running"]);
            last = out.stdout.trim().to_string();
            match last.as_str() {
                "running" => return,
                "degraded" => {
                    // Some unit of the root failed; what the tests check does not depend on it.
                    let failed = self.run(&["systemctl", "--failed", "--no-legend"]);
                    eprintln!("container {} booted degraded: {}", self.name, failed.stdout);
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        panic!(
            "container {} did not finish booting within {BOOT_TIMEOUT:?} (last state {last:?})\nconsole:\n{}",
            self.name,
            self.console()
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let (_, killed) = self.nspawn.terminate(SHUTDOWN_GRACE);
        if killed {
            eprintln!(
                "container {} did not power off within {SHUTDOWN_GRACE:?}; killed it",
                self.name
            );
        }
        // systemd-nspawn normally takes its init down with it; make sure, by pidfd (never a
        // recycled PID). Killing a PID namespace's init kills everything in it.
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.init.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        if !exits_within(&self.init, Duration::from_secs(10)) {
            eprintln!(
                "container {}: its init {} is still there",
                self.name, self.init_pid
            );
        }
        // systemd-nspawn leaves this empty directory behind; rmdir removes only an empty one.
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
        if std::thread::panicking() {
            eprintln!(
                "--- console of container {} ---\n{}",
                self.name,
                super::lazycas::tail(&self.nspawn.log(), 60)
            );
        }
    }
}

/// The container's init: the child of systemd-nspawn that lives in another PID namespace, once it
/// runs systemd. Not before: until that exec it may not have switched to the container's root,
/// and a `systemctl` run in its namespaces would talk to the host's systemd.
fn wait_for_init(nspawn: &mut Proc) -> u32 {
    let pid = nspawn.pid();
    let mut init = None;
    let found = wait_until(BOOT_TIMEOUT, || {
        if !nspawn.is_running() {
            return true;
        }
        init = children_of(pid)
            .into_iter()
            .find(|&c| in_other_pid_namespace(c) && runs_systemd(c));
        init.is_some()
    });
    match init {
        Some(init) if found => init,
        _ => panic!(
            "systemd-nspawn started no container init{}\nconsole:\n{}",
            if nspawn.is_running() {
                format!(" within {BOOT_TIMEOUT:?}")
            } else {
                " (it exited)".into()
            },
            nspawn.log()
        ),
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn runs_systemd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "systemd")
}

fn in_other_pid_namespace(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/pid");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
    matches!((ours, theirs), (Ok(a), Ok(b)) if a != b)
}

/// Waits up to `timeout` for the process behind `pidfd` to exit (a pidfd polls readable then).
fn exits_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll on one pollfd that lives on our stack.
    unsafe { libc::poll(&mut pfd, 1, millis) == 1 }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor pidfd_open just returned and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
