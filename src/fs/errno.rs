//! The one place lower-layer errors become errno values for the kernel, and where failures
//! that reach a reader as EIO are logged with what the lower layer said (naming the asset, the
//! URL or the archive), so the log explains every EIO.

use fuser::Errno;

use super::namespace::NsError;
use crate::content::ContentError;
use crate::store::StoreError;

/// The errno a reader sees for `e`; logs it when it hides a failure (EIO).
pub fn of(e: &NsError) -> Errno {
    let errno = match e {
        NsError::NotFound => Errno::ENOENT,
        NsError::NotDir => Errno::ENOTDIR,
        NsError::IsDir => Errno::EISDIR,
        NsError::NotSymlink => Errno::EINVAL,
        NsError::Content(c) => of_content(c),
        NsError::Tree { .. } | NsError::Catalog(_) => Errno::EIO,
    };
    if errno == Errno::EIO {
        tracing::error!("{e}");
    }
    errno
}

/// Anything that means "the bytes could not be had, verified" is EIO: a reader must never
/// mistake it for an empty or missing file.
fn of_content(e: &ContentError) -> Errno {
    match e {
        ContentError::Store(s) => of_store(s),
        ContentError::Shared(inner) => of_content(inner),
        ContentError::Registry(r) if r.is_not_found() => Errno::ENOENT,
        ContentError::Registry(_)
        | ContentError::Fetch(_)
        | ContentError::Publish(_)
        | ContentError::WeakMismatch { .. }
        | ContentError::PinConflict { .. }
        | ContentError::Archive { .. }
        | ContentError::Task { .. }
        | ContentError::Index { .. }
        | ContentError::IndexForOther { .. } => Errno::EIO,
    }
}

fn of_store(e: &StoreError) -> Errno {
    match e {
        StoreError::Io { source, .. } => match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC => Errno::EIO,
            Some(code) => Errno::from_i32(code),
            None => Errno::EIO,
        },
        StoreError::Missing(_) => Errno::ENOENT,
        StoreError::Db(_) | StoreError::Derived { .. } => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shared_errors_keep_their_kind() {
        let missing = ContentError::Store(StoreError::Missing(crate::digest::Digest::of(b"x")));
        let shared = NsError::Content(Arc::new(ContentError::Shared(Arc::new(missing))));
        assert_eq!(of(&shared), Errno::ENOENT);
        assert_eq!(of(&NsError::NotDir), Errno::ENOTDIR);
    }
}
