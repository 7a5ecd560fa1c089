//! The daemon's control socket, `<store>/lazycas.sock`: how `lazycas add` and `rm` make a
//! running mount show their change before they return ("at once", with no polling in the read
//! path). One request per connection, one line each way: `refresh-catalog` is answered `ok`
//! once the mount serves the new catalog, or `error: <why>`.
//!
//! Without a listening daemon (none running, or another user's), the client does nothing:
//! the daemon's tick also notices database changes within a second.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The request that makes the daemon reload its catalog from the database.
pub const REFRESH_CATALOG: &str = "refresh-catalog";

/// Where the socket of the daemon serving `store` lives.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join("lazycas.sock")
}

/// Asks the daemon serving `store`, if any, to refresh its catalog now, and waits (bounded)
/// for it to have done so. Returns whether a daemon confirmed.
pub fn refresh_catalog(store: &Path) -> Result<bool, String> {
    let path = socket_path(store);
    let Ok(stream) = UnixStream::connect(&path) else {
        return Ok(false);
    };
    let timeout = Some(Duration::from_secs(10));
    let talk = || -> std::io::Result<String> {
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        (&stream).write_all(format!("{REFRESH_CATALOG}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        Ok(line)
    };
    match talk() {
        Ok(line) if line.trim_end() == "ok" => Ok(true),
        Ok(line) => Err(format!("the running mount answered {:?}", line.trim_end())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
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
