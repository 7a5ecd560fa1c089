//! Child processes the tests start, stopped by their own PID and nothing else.
//!
//! `Proc` owns one `std::process::Child`. Dropping it sends SIGTERM to that PID, waits, and sends
//! SIGKILL if the process is still there after the grace period. A PID is only signalled while it
//! is unreaped (running or a zombie), so it can never belong to someone else. Also here: running a
//! command to completion with a deadline, and picking a free loopback port.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

/// A running child process with its stderr captured to a file.
pub struct Proc {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            stderr_path: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `sig` to this process's PID if it has not been reaped yet.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) with the PID of our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status and whether SIGKILL
    /// was needed.
    pub fn terminate(&mut self, grace: Duration) -> (ExitStatus, bool) {
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return (s, false);
        }
        self.signal(libc::SIGKILL);
        let s = self.child.wait().expect("waitpid after SIGKILL");
        self.status = Some(s);
        (s, true)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        let s = self.child.wait().expect("waitpid after SIGKILL");
        self.status = Some(s);
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            let (_, killed) = self.terminate(GRACE);
            if killed {
                eprintln!(
                    "harness: {} (pid {}) ignored SIGTERM, killed",
                    self.name,
                    self.pid()
                );
            }
        }
    }
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Output {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics with the whole output unless the command exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code(), Some(code), "unexpected exit code: {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killing it (by PID) and panicking after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir for command output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let Some(status) = wait_or_kill(&mut child, timeout) else {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        panic!("{command} did not finish within {timeout:?}; stderr:\n{stderr}");
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Output {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        command,
    }
}

/// Waits for `child` up to `timeout`; past it, kills it (by its PID) and returns `None`.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("waitpid") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port that was free a moment ago. Servers that cannot bind port 0 themselves use
/// this and retry with another port if they lose the race.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds an executable by name in `PATH` and the sbin directories (which a test's `PATH` may
/// lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A memory figure of process `pid` from /proc/PID/status (`field` such as `VmRSS` or
/// `VmHWM`), in bytes; None if the process or the field is gone.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// True if this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Like `find_program`, but panics naming the Debian package to install.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` not found; install the Debian package `{package}` (see .ci/run)")
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `f` on its own thread and panics if it takes longer than `timeout`. For operations on a
/// FUSE mount that a daemon bug could leave blocked forever: the panic drops the test's
/// `Daemon`, whose exit aborts the blocked request.
#[track_caller]
pub fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {timeout:?} (blocked on the mount?)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("sender dropped without sending"),
        },
    }
}
