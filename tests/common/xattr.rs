//! Extended attributes and errno checks on paths, through libc (no dependency on `getfattr`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `p` as a C string, for libc calls on paths.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// The value of extended attribute `name` on `path` (not following a final symlink).
pub fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C strings and a buffer of the given length.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() > (1 << 24) {
            return Err(e);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// `get` as a UTF-8 string.
pub fn get_string(path: &Path, name: &str) -> io::Result<String> {
    get(path, name).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The names of the extended attributes on `path`.
pub fn list(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C string and a buffer of the given length.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() > (1 << 24) {
            return Err(e);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// Asserts that listxattr on `path` names every one of `names` (and maybe more).
#[track_caller]
pub fn assert_lists(path: &Path, names: &[&str]) {
    let listed = list(path).expect("listxattr");
    for n in names {
        assert!(
            listed.iter().any(|x| x == n),
            "listxattr lacks {n}: {listed:?}"
        );
    }
}

/// Sets extended attribute `name` on `path`.
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Panics unless `result` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(result: io::Result<T>, errno: i32, what: &str) {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => {}
        Err(e) => panic!("{what}: expected {}, got error {e}", errno_name(errno)),
        Ok(v) => panic!(
            "{what}: expected {}, but it succeeded ({v:?})",
            errno_name(errno)
        ),
    }
}

fn errno_name(errno: i32) -> String {
    let known = [
        (libc::EIO, "EIO"),
        (libc::EROFS, "EROFS"),
        (libc::ENOENT, "ENOENT"),
        (libc::EACCES, "EACCES"),
        (libc::EPERM, "EPERM"),
        (libc::ENOTSUP, "ENOTSUP"),
        (libc::ENODATA, "ENODATA"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("errno {errno}"))
}
