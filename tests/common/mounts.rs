//! The kernel's mount table and unmounting, plus the check that decides whether FUSE tests can
//! run here at all.
//!
//! Mounts are identified by their mount ID (/proc/self/mountinfo), not only by path: after a
//! SIGKILL a new daemon may mount over the stale mount of the old one, and each `Daemon` must
//! unmount its own mount only.

use super::process::{find_program, is_root, run};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Why FUSE tests cannot run on this machine, or None if they can.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some(
            "/dev/fuse is missing (load the fuse module or run the container with --device /dev/fuse)"
                .into(),
        );
    }
    if !is_root() && find_program("fusermount3").is_none() {
        return Some("not root and fusermount3 (Debian package fuse3) is not installed".into());
    }
    None
}

/// True if something is mounted on `mountpoint`.
pub fn is_mounted(mountpoint: &Path) -> bool {
    !mount_ids(mountpoint).is_empty()
}

/// The IDs of the mounts on `mountpoint`, bottom first (the last one is what the path shows).
pub fn mount_ids(mountpoint: &Path) -> Vec<u64> {
    mountinfo(mountpoint)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// The ID of the mount the path `mountpoint` shows now, if any.
pub fn top_mount_id(mountpoint: &Path) -> Option<u64> {
    mount_ids(mountpoint).last().copied()
}

/// The mountinfo line of the mount `mountpoint` shows, if mounted (for failure messages).
pub fn mount_entry(mountpoint: &Path) -> Option<String> {
    mountinfo(mountpoint).pop().map(|(_, line)| line)
}

/// (mount ID, line) of every mount on `mountpoint`, in mount order.
fn mountinfo(mountpoint: &Path) -> Vec<(u64, String)> {
    let want = mountpoint.to_string_lossy().into_owned();
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let point = f.nth(3).map(unescape_octal)?;
            (point == want).then(|| (id, l.to_string()))
        })
        .collect()
}

/// The mount table writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(octal) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if `statfs(mountpoint)` succeeds within `timeout`: a live mount answers, a stale one
/// (its daemon dead) fails with ENOTCONN. (`stat` may be answered from the kernel's attribute
/// cache just after the daemon died; `statfs` always reaches the daemon.) The call runs on its
/// own thread, which a hung daemon may keep blocked until it dies.
pub fn mount_answers(mountpoint: &Path, timeout: Duration) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (tx, rx) = std::sync::mpsc::channel();
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return false;
    };
    std::thread::spawn(move || {
        let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: c is a valid NUL-terminated path and buf is large enough for a statfs.
        let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
        let _ = tx.send(rc == 0);
    });
    rx.recv_timeout(timeout).unwrap_or(false)
}

/// Unmounts the mount `mountpoint` shows now, if it is mount `id` (or any mount, for None):
/// `fusermount3 -u`, then `umount -l` as the fallback for a busy or dead mount. Returns false if
/// that mount is still there afterwards.
pub fn unmount_top(mountpoint: &Path, id: Option<u64>) -> bool {
    let Some(top) = top_mount_id(mountpoint) else {
        return true;
    };
    if id.is_some_and(|id| id != top) {
        return !mount_ids(mountpoint).contains(&id.unwrap_or(top));
    }
    let gone = || top_mount_id(mountpoint) != Some(top);
    if let Some(fusermount) = find_program("fusermount3") {
        let mut cmd = Command::new(fusermount);
        cmd.arg("-u").arg("-q").arg(mountpoint);
        let _ = run(cmd, Duration::from_secs(10));
    }
    if !gone() {
        let mut cmd = Command::new(find_program("umount").unwrap_or_else(|| "umount".into()));
        cmd.arg("-l").arg(mountpoint);
        let _ = run(cmd, Duration::from_secs(10));
    }
    !mount_ids(mountpoint).contains(&top)
}

/// Unmounts everything mounted on `mountpoint`, top first. Returns false if something is left.
pub fn unmount(mountpoint: &Path) -> bool {
    for _ in 0..10 {
        if !is_mounted(mountpoint) {
            return true;
        }
        if !unmount_top(mountpoint, None) {
            return false;
        }
    }
    !is_mounted(mountpoint)
}
