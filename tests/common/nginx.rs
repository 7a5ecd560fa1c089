//! `Nginx`: a real nginx on 127.0.0.1 serving a docroot, with Range support (nginx's default)
//! and an access log in the `lazycas` format (see `origin`).
//!
//! It runs as one foreground process (`daemon off; master_process off;`) with its own prefix,
//! pid file and temp dirs inside a tempdir, so stopping it is a signal to one PID and nothing is
//! left behind. It can be stopped and started again on the same port, for origin-down tests.

use super::origin::{http_get, Origin};
use super::process::{free_port, require_program, wait_until, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// A running (or stopped) nginx origin.
pub struct Nginx {
    proc: Option<Proc>,
    port: u16,
    docroot: PathBuf,
    prefix: PathBuf,
    /// Raw text added inside `server { }` (e.g. extra `location` blocks or headers).
    server_extra: String,
    // Last field: dropped after `proc`, so the server is gone before its files are.
    _dir: TempDir,
}

impl Nginx {
    /// Starts nginx on a free port with an empty docroot.
    pub fn start() -> Nginx {
        Nginx::start_with("")
    }

    /// Starts nginx with `server_extra` added inside its `server { }` block.
    pub fn start_with(server_extra: &str) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("lazycas-nginx-")
            .tempdir()
            .expect("tempdir");
        let docroot = dir.path().join("docroot");
        let prefix = dir.path().join("prefix");
        for d in [&docroot, &prefix.join("logs"), &prefix.join("tmp")] {
            std::fs::create_dir_all(d).expect("create nginx dirs");
        }
        let mut n = Nginx {
            proc: None,
            port: 0,
            docroot,
            prefix,
            server_extra: server_extra.to_string(),
            _dir: dir,
        };
        n.launch();
        n
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops nginx (SIGTERM to its PID). The port is kept for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(super::process::GRACE);
        }
    }

    /// Starts nginx again on the port it had, after `stop`.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "nginx is already running");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// The nginx error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        let nginx = require_program("nginx", "nginx");
        let fixed_port = self.port != 0;
        let token = format!("lazycas-harness-{}", super::content::unique_seed());
        for attempt in 0.. {
            let port = if fixed_port { self.port } else { free_port() };
            let conf = self.prefix.join("nginx.conf");
            std::fs::write(&conf, self.config(port, &token)).expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p").arg(&self.prefix).arg("-c").arg(&conf);
            cmd.arg("-e").arg(self.prefix.join("logs/error.log"));
            let log = self.prefix.join("logs/stderr.log");
            let mut proc = Proc::spawn("nginx", cmd, &log);
            // Ready once our own nginx (not whoever else may hold the port) answers the token.
            let ours = |p: &mut Proc| {
                p.is_running()
                    && http_get(port, "/__lazycas_harness")
                        .is_some_and(|(_, body)| body == token.as_bytes())
            };
            if wait_until(Duration::from_secs(10), || {
                ours(&mut proc) || !proc.is_running()
            }) && proc.is_running()
            {
                self.port = port;
                self.proc = Some(proc);
                return;
            }
            let (status, _) = proc.terminate(Duration::from_secs(2));
            let errors = format!("{}{}", proc.log(), self.error_log());
            let lost_race = errors.contains("Address already in use");
            if fixed_port || !lost_race || attempt >= 5 {
                panic!("nginx did not start on 127.0.0.1:{port} (exit {status}):\n{errors}");
            }
        }
    }

    fn config(&self, port: u16, token: &str) -> String {
        let p = self.prefix.display();
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format lazycas '$request_method $uri $status $body_bytes_sent "$http_range" "$http_cache_control" "$http_via"';
    access_log {p}/logs/access.log lazycas;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        location = /__lazycas_harness {{
            access_log off;
            return 200 "{token}";
        }}
        {extra}
    }}
}}
"#,
            root = self.docroot.display(),
            extra = self.server_extra,
        )
    }
}

impl Origin for Nginx {
    fn docroot(&self) -> &Path {
        &self.docroot
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn access_log_path(&self) -> PathBuf {
        self.prefix.join("logs/access.log")
    }
}
