//! The daemon's control socket, `<store>/lazycas.sock`: the one way other lazycas commands talk
//! to a running mount. One request per connection, one line each way, answered `ok` once done
//! or `error: <why>`:
//! - `refresh-catalog` (`lazycas add`, `rm`): the mount shows the change before they return
//!   ("at once", with no polling in the read path). Without a listening daemon the client does
//!   nothing: the daemon's tick also notices database changes within a second.
//! - `reload` (`lazycas reload`, the unit's `ExecReload=`): the daemon reloads its config file
//!   and catalog as on SIGHUP and answers with the outcome, so `systemctl reload` succeeds only
//!   once it has reloaded, and fails with the reason when it could not.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The request that makes the daemon reload its catalog from the database.
pub const REFRESH_CATALOG: &str = "refresh-catalog";
/// The request that makes the daemon reload its config file and catalog.
pub const RELOAD: &str = "reload";

/// Why a request could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens on the store's socket.
    #[error("no running mount listens on {0}")]
    NoDaemon(PathBuf),
    /// The daemon listening is not the process the caller named.
    #[error("{path} is served by process {actual}, not {expected}")]
    OtherProcess {
        /// The socket.
        path: PathBuf,
        /// The process the caller named.
        expected: u32,
        /// The process listening.
        actual: u32,
    },
    /// Talking to it failed (or it did not answer in time).
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// It answered that it could not do it.
    #[error("{0}")]
    Refused(String),
}

/// Where the socket of the daemon serving `store` lives.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join("lazycas.sock")
}

/// Asks the daemon serving `store`, if any, to refresh its catalog now, and waits (bounded)
/// for it to have done so. Returns whether a daemon confirmed.
pub fn refresh_catalog(store: &Path) -> Result<bool, ControlError> {
    match ask(store, REFRESH_CATALOG, None, Duration::from_secs(10)) {
        Ok(()) => Ok(true),
        Err(ControlError::NoDaemon(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `request` to the daemon serving `store` and waits up to `timeout` for its answer.
/// With `pid`, the listening process must be that one (checked with `SO_PEERCRED`).
pub fn ask(
    store: &Path,
    request: &str,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<(), ControlError> {
    let path = socket_path(store);
    let stream = UnixStream::connect(&path).map_err(|_| ControlError::NoDaemon(path.clone()))?;
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    if let Some(expected) = pid {
        let actual = peer_pid(&stream).map_err(io)?;
        if actual != expected {
            return Err(ControlError::OtherProcess {
                path,
                expected,
                actual,
            });
        }
    }
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    match line.trim_end() {
        "ok" => Ok(()),
        "" => Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        ))),
        other => Err(ControlError::Refused(
            other.strip_prefix("error: ").unwrap_or(other).to_string(),
        )),
    }
}

/// The process at the other end of a Unix socket.
fn peer_pid(stream: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.pid as u32)
}

/// A bound control socket; removes its file when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket for `store`, replacing a stale one (its daemon died). `None`, with a
    /// warning, when another live daemon serves the same store or binding fails.
    pub fn bind(store: &Path) -> Option<ControlSocket> {
        let path = socket_path(store);
        if UnixStream::connect(&path).is_ok() {
            tracing::warn!(
                "{} is served by another daemon; `lazycas add` will reach this mount within a second",
                path.display()
            );
            return None;
        }
        let _ = std::fs::remove_file(&path);
        match UnixListener::bind(&path) {
            Ok(listener) => Some(ControlSocket { listener, path }),
            Err(e) => {
                tracing::warn!("control socket {}: {e}", path.display());
                None
            }
        }
    }

    /// Waits for the next request; returns its text and the connection to answer on.
    pub async fn next(&self) -> Option<(String, Request)> {
        let (stream, _) = match self.listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("control socket: {e}");
                return None;
            }
        };
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
        match read {
            Ok(Ok(_)) => Some((line.trim_end().to_string(), Request(reader.into_inner()))),
            _ => None,
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connection waiting for its answer.
pub struct Request(tokio::net::UnixStream);

impl Request {
    /// Sends `ok`, or `error: <why>`.
    pub async fn answer(mut self, result: Result<(), String>) {
        let line = match result {
            Ok(()) => "ok\n".to_string(),
            Err(why) => format!("error: {why}\n"),
        };
        let _ = self.0.write_all(line.as_bytes()).await;
    }
}
