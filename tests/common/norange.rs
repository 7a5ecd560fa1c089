//! `NoRangeServer`: an origin that ignores `Range` and always answers 200 with the whole file,
//! as some real servers (and Python's `http.server`) do. It is a small Python script written to
//! the tempdir, so its behaviour does not depend on the Python version's `http.server` (which may
//! learn Range one day). It binds port 0 itself and reports the port through a file.

use super::origin::Origin;
use super::process::{require_program, wait_until, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const SCRIPT: &str = r#"
import http.server, os, sys, threading
root, port_file, log_file = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
log = open(log_file, "a", buffering=1)

def header(h, name):
    v = h.headers.get(name)
    return v.replace('"', '\\x22') if v else "-"

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.serve(True)

    def do_HEAD(self):
        self.serve(False)

    def serve(self, with_body):
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.realpath(os.path.join(root, rel))
        sent, status = 0, 200
        try:
            if not path.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(path):
                status = 404
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # Deliberately no Accept-Ranges and no 206: the Range header is ignored.
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                while with_body:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with lock:
                log.write('%s /%s %d %d "%s" "%s" "%s"\n' % (self.command, rel, status, sent,
                    header(self, "Range"), header(self, "Cache-Control"), header(self, "Via")))

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

/// A running no-Range HTTP origin.
pub struct NoRangeServer {
    proc: Proc,
    port: u16,
    docroot: PathBuf,
    dir: PathBuf,
    _tempdir: TempDir,
}

impl NoRangeServer {
    pub fn start() -> NoRangeServer {
        let python = require_program("python3", "python3");
        let tempdir = tempfile::Builder::new()
            .prefix("lazycas-norange-")
            .tempdir()
            .expect("tempdir");
        let dir = tempdir.path().to_path_buf();
        let docroot = dir.join("docroot");
        std::fs::create_dir_all(&docroot).expect("create docroot");
        let script = dir.join("norange.py");
        std::fs::write(&script, SCRIPT).expect("write norange.py");
        let port_file = dir.join("port");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(&docroot)
            .arg(&port_file)
            .arg(dir.join("access.log"));
        let mut proc = Proc::spawn("no-range origin", cmd, &dir.join("stderr.log"));
        let ready = wait_until(Duration::from_secs(15), || {
            port_file.exists() || !proc.is_running()
        });
        let port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        match port {
            Some(port) if ready => NoRangeServer {
                proc,
                port,
                docroot,
                dir,
                _tempdir: tempdir,
            },
            _ => panic!("no-range origin did not start:\n{}", proc.log()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own stderr (Python tracebacks), for failure messages.
    pub fn stderr(&self) -> String {
        self.proc.log()
    }
}

impl Origin for NoRangeServer {
    fn docroot(&self) -> &Path {
        &self.docroot
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn access_log_path(&self) -> PathBuf {
        self.dir.join("access.log")
    }
}
