//! `NotifySocket`: the systemd side of sd_notify, for tests. A datagram socket bound in a tempdir
//! whose path is handed to the daemon as `NOTIFY_SOCKET`; the test reads what the daemon tells
//! systemd (READY=1, STATUS=..., RELOADING=1, STOPPING=1).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bound notify socket and every message received so far.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    received: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("lazycas-notify-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("set_read_timeout");
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
            _dir: dir,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message so far, one `KEY=VALUE` line each.
    pub fn received(&self) -> &[String] {
        &self.received
    }

    /// Waits up to `timeout` for a datagram carrying the line `line` (e.g. `READY=1`), calling
    /// `on_arrival` the moment it is read (before anything else happens). Returns false on
    /// timeout. Lines received on the way are kept in `received`.
    pub fn wait_for<T>(
        &mut self,
        line: &str,
        timeout: Duration,
        mut on_arrival: impl FnMut() -> T,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            let hit = lines.iter().any(|l| l == line);
            let arrived = hit.then(&mut on_arrival);
            self.received.extend(lines);
            if arrived.is_some() {
                return arrived;
            }
        }
        None
    }
}
