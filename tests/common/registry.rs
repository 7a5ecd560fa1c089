//! `Registry`: Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1 port, with a
//! throwaway storage directory and config, stopped by its PID on drop.
//!
//! Two flavours: `Registry::start()` (anonymous read and write) and
//! `Registry::start_with_token_auth(&LoopbackTokenServer)` (`auth: token` with the token server's
//! realm, service, issuer and certificate). Both accept manifests whose non-distributable layers
//! name http(s) `urls`. Blobs live under `storage_dir()`, so tests can
//! tamper with them. `stop` / `start_again` keep the port, for registry-down tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::origin::http_get;
use super::process::{free_port, require_program, wait_until, Proc};
use super::token_server::{LoopbackTokenServer, TOKEN_ISSUER, TOKEN_SERVICE};

/// A running (or stopped) registry.
pub struct Registry {
    proc: Option<Proc>,
    port: u16,
    auth: Option<TokenAuth>,
    dir: PathBuf,
    // Last field: the process is stopped before its files go.
    _tmp: TempDir,
}

/// The `auth: token` settings.
#[derive(Clone)]
struct TokenAuth {
    realm: String,
    cert: PathBuf,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Registry::launch_new(None)
    }

    /// A registry that wants Bearer tokens from `tokens`.
    pub fn start_with_token_auth(tokens: &LoopbackTokenServer) -> Registry {
        Registry::launch_new(Some(TokenAuth {
            realm: tokens.realm(),
            cert: tokens.cert_path().to_path_buf(),
        }))
    }

    fn launch_new(auth: Option<TokenAuth>) -> Registry {
        let tmp = tempfile::Builder::new()
            .prefix("lazycas-registry-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("storage")).expect("storage dir");
        if let Some(a) = &auth {
            // Copied so the registry's files outlive nothing it does not own.
            std::fs::copy(&a.cert, dir.join("rootcert.pem")).expect("copy cert");
        }
        let mut r = Registry {
            proc: None,
            port: 0,
            auth,
            dir,
            _tmp: tmp,
        };
        r.launch();
        r
    }

    /// `127.0.0.1:PORT`, as references and skopeo want it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The storage root (`docker/registry/v2/blobs/sha256/…` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Where the blob `hex` is stored.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Stops the registry (SIGTERM to its PID); the port is kept for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(super::process::GRACE);
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "registry already running");
        self.launch();
    }

    fn launch(&mut self) {
        let program = require_program("docker-registry", "docker-registry");
        let fixed_port = self.port != 0;
        for attempt in 0.. {
            let port = if fixed_port { self.port } else { free_port() };
            let config = self.dir.join("config.yml");
            std::fs::write(&config, self.config(port)).expect("write registry config");
            let mut cmd = Command::new(&program);
            cmd.arg("serve").arg(&config);
            let mut proc = Proc::spawn("docker-registry", cmd, &self.dir.join("registry.log"));
            // /v2/ answers 200 (open) or 401 (token auth) once it serves.
            let want = if self.auth.is_some() { 401 } else { 200 };
            let up = wait_until(Duration::from_secs(15), || {
                !proc.is_running() || http_get(port, "/v2/").is_some_and(|(s, _)| s == want)
            });
            if up && proc.is_running() {
                self.port = port;
                self.proc = Some(proc);
                return;
            }
            let (status, _) = proc.terminate(Duration::from_secs(2));
            let log = self.log();
            if fixed_port || !log.contains("address already in use") || attempt >= 5 {
                panic!("docker-registry did not start on 127.0.0.1:{port} ({status}):\n{log}");
            }
        }
    }

    fn config(&self, port: u16) -> String {
        let auth = match &self.auth {
            None => String::new(),
            Some(a) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                a.realm,
                self.dir.join("rootcert.pem").display()
            ),
        };
        format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: lazycas-test-secret\nvalidation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n{auth}",
            self.storage_dir().display()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
