//! The one place lower-layer errors become errno values for the kernel.

use fuser::Errno;

use crate::store::StoreError;

/// The errno a reader sees for a store (or fetch) failure. Anything that means "the bytes
/// could not be had, verified" is EIO: a reader must never mistake it for an empty file.
pub fn of_store(e: &StoreError) -> Errno {
    match e {
        StoreError::Io { source, .. } => match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC => Errno::EIO,
            Some(code) => Errno::from_i32(code),
            None => Errno::EIO,
        },
        StoreError::Missing(_) => Errno::ENOENT,
        StoreError::Db(_) | StoreError::Fetch(_) | StoreError::Full(_) => Errno::EIO,
    }
}
