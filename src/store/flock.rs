//! `flock` on store files, the one cross-process signal the store uses: a reader of a blob and
//! the writer of a chunk pack hold a shared lock; eviction and pack deletion act only on a file
//! they can lock exclusively without waiting.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes a shared lock, waiting for an exclusive holder to let go.
pub(super) fn lock_shared(f: &File) -> io::Result<()> {
    flock(f, libc::LOCK_SH)
}

/// Takes an exclusive lock if nobody holds any; whether it did.
pub(super) fn try_lock_exclusive(f: &File) -> bool {
    flock(f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
}

/// Drops this open file's lock.
pub(super) fn unlock(f: &File) {
    let _ = flock(f, libc::LOCK_UN);
}

/// `flock(op)`, retried when interrupted.
fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd the caller owns.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
