//! Unprivileged mounting through the setuid `fusermount3` helper: it opens `/dev/fuse`, mounts,
//! and passes the descriptor back over a socket (`_FUSE_COMMFD`, SCM_RIGHTS), which is what
//! libfuse does. Used when the daemon is not root, so it works even where `/dev/fuse` is not
//! world-openable; `fusermount3 -u` takes the mount down again.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Mounts `mountpoint` with `options` (the `-o` string) and returns the `/dev/fuse` descriptor.
pub fn mount(mountpoint: &Path, options: &str) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", their_fd.to_string());
    // SAFETY: between fork and exec we only clear FD_CLOEXEC on a descriptor we own.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(their_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(their_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running fusermount3: {e}")))?;
    drop(theirs);
    let received = receive_fd(&ours);
    let output = child.wait_with_output()?;
    match received {
        Ok(fd) => Ok(fd),
        Err(_) => Err(io::Error::other(format!(
            "fusermount3 failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// `fusermount3 -u`, then `-uz` (lazy) if the mount is busy.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    for flags in ["-u", "-uz"] {
        let status = Command::new("fusermount3")
            .arg(flags)
            .arg(mountpoint)
            .status()?;
        if status.success() {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "fusermount3 could not unmount {}",
        mountpoint.display()
    )))
}

fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor of control data, aligned as cmsg requires.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all pointers below point into live local buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg on a socket we own with a valid msghdr.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n <= 0 {
        return Err(io::Error::other("fusermount3 sent no descriptor"));
    }
    // SAFETY: walking the control buffer the kernel filled, with the libc cmsg macros.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("fusermount3 sent no descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
