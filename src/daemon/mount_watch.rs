//! Notices when our mount is taken away from outside (`fusermount3 -u`, `umount`, `umount -l`).
//!
//! A plain unmount ends the FUSE session, which the daemon sees as its session thread finishing.
//! A lazy unmount (`umount -l`) of a mount that still has open files does not: the kernel
//! detaches the mount from the tree at once but keeps the connection until the last file is
//! closed. `MountWatch` sees the detach itself: it remembers the mount's ID and device number
//! (`statx`, once, while the mount is ours) and later looks for them in `/proc/self/mountinfo`,
//! which costs no FUSE request.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where our mount sits in the mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountWatch {
    mount_id: u64,
    device: (u32, u32),
}

impl MountWatch {
    /// Identifies the mount `mountpoint` shows now (call it right after mounting).
    pub fn new(mountpoint: &Path) -> std::io::Result<MountWatch> {
        let path = CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: statx is plain data; zeroed is a valid value for it.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: path is NUL-terminated and stx is a live, writable statx.
        let rc = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
                libc::STATX_MNT_ID,
                &mut stx,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if stx.stx_mask & libc::STATX_MNT_ID == 0 {
            return Err(std::io::Error::other(
                "the kernel gives no mount IDs (Linux < 5.8)",
            ));
        }
        Ok(MountWatch {
            mount_id: stx.stx_mnt_id,
            device: (stx.stx_dev_major, stx.stx_dev_minor),
        })
    }

    /// False once the mount is gone from this mount namespace's table (unmounted or detached).
    /// True if the table cannot be read: only a positive sighting of its absence counts.
    pub fn is_attached(&self) -> bool {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(table) => self.is_listed_in(&table),
            Err(_) => true,
        }
    }

    fn is_listed_in(&self, mountinfo: &str) -> bool {
        let device = format!("{}:{}", self.device.0, self.device.1);
        let id = self.mount_id.to_string();
        mountinfo.lines().any(|line| {
            let mut fields = line.split(' ');
            fields.next() == Some(id.as_str()) && fields.nth(1) == Some(device.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
225 102 0:58 / /containers ro,nosuid,nodev,relatime shared:63 - fuse lazycas ro,user_id=0
";

    #[test]
    fn finds_its_mount_by_id_and_device() {
        let watch = MountWatch {
            mount_id: 225,
            device: (0, 58),
        };
        assert!(watch.is_listed_in(TABLE));
    }

    #[test]
    fn a_reused_id_on_another_device_is_not_ours() {
        let watch = MountWatch {
            mount_id: 225,
            device: (0, 59),
        };
        assert!(!watch.is_listed_in(TABLE));
        let other = MountWatch {
            mount_id: 226,
            device: (0, 58),
        };
        assert!(!other.is_listed_in(TABLE));
    }

    #[test]
    fn proc_is_attached() {
        let watch = MountWatch::new(Path::new("/proc")).unwrap();
        assert!(watch.is_attached());
    }
}
