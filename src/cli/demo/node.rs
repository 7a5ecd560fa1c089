//! The demo's daemon: `lazycas mount` run as a child of the demo (the current executable), with
//! its log in a file and its readiness taken from the sd_notify protocol exactly as systemd
//! would (a datagram socket passed as `NOTIFY_SOCKET`, waiting for `READY=1`).
//!
//! Stopped by its own PID: SIGTERM (the daemon unmounts and exits), SIGKILL after a grace
//! period, then a lazy unmount if a mount is still there, also when the demo fails half-way.

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long the daemon may take to mount.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to unmount and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running `lazycas mount`.
pub struct DemoDaemon {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl DemoDaemon {
    /// Starts `exe mount MOUNTPOINT --config CONFIG`, logging to `log`, and returns once it has
    /// sent READY=1, with the time that took.
    pub fn start(
        exe: &Path,
        config: &Path,
        mountpoint: &Path,
        log: &Path,
        notify: &Path,
    ) -> anyhow::Result<(DemoDaemon, Duration)> {
        let socket =
            UnixDatagram::bind(notify).with_context(|| format!("binding {}", notify.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("mount")
            .arg(mountpoint)
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", notify)
            .env("LAZYCAS_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("LAZYCAS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {} mount", exe.display()))?;
        let mut daemon = DemoDaemon {
            child: Some(child),
            mountpoint: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
        };
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buf) {
                if is_ready(&buf[..n]) {
                    return Ok((daemon, started.elapsed()));
                }
            }
            if let Some(status) = daemon.try_status() {
                bail!(
                    "lazycas mount exited ({status}) before it was ready:\n{}",
                    daemon.log_tail(20)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "lazycas mount was not ready after {READY_TIMEOUT:?}:\n{}",
                    daemon.log_tail(20)
                );
            }
        }
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait for a clean exit; returns how it exited and whether the mount is gone.
    pub fn stop(&mut self) -> anyhow::Result<(ExitStatus, Duration)> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon is not running");
        };
        let started = Instant::now();
        signal(&child, libc::SIGTERM);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() > STOP_GRACE {
                signal(&child, libc::SIGKILL);
                let s = child.wait()?;
                detach(&self.mountpoint);
                bail!("lazycas mount ignored SIGTERM for {STOP_GRACE:?}; killed ({s})");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if is_mounted(&self.mountpoint) {
            detach(&self.mountpoint);
            bail!(
                "lazycas mount exited ({status}) but left {} mounted",
                self.mountpoint.display()
            );
        }
        Ok((status, started.elapsed()))
    }
}

impl Drop for DemoDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
            }
        }
        if is_mounted(&self.mountpoint) {
            detach(&self.mountpoint);
        }
    }
}

/// Whether an sd_notify datagram says READY=1.
fn is_ready(datagram: &[u8]) -> bool {
    datagram
        .split(|b| *b == b'\n')
        .any(|line| line == b"READY=1")
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet (we hold it).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// True if `mountpoint` appears in /proc/self/mounts.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounted_in(&table, mountpoint)
}

fn mounted_in(table: &str, mountpoint: &Path) -> bool {
    let want = mountpoint.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|field| unescape_octal(field) == want)
}

/// /proc/mounts writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazy unmount: umount2(MNT_DETACH) as root, `fusermount3 -uz` otherwise.
fn detach(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_datagrams() {
        assert!(is_ready(b"READY=1\nSTATUS=serving"));
        assert!(is_ready(b"STATUS=x\nREADY=1"));
        assert!(!is_ready(b"RELOADING=1"));
        assert!(!is_ready(b"NOTREADY=1"));
    }

    #[test]
    fn mount_table_lookup_unescapes() {
        let table = "proc /proc proc rw 0 0\nlazycas /tmp/a\\040b fuse.lazycas ro 0 0\n";
        assert!(mounted_in(table, Path::new("/tmp/a b")));
        assert!(!mounted_in(table, Path::new("/tmp/a")));
        assert_eq!(unescape_octal("x\\134y\\01"), "x\\y\\01");
    }
}
