//! `Squid`: a stock Debian squid on 127.0.0.1 as the site HTTP proxy, for the proxy tests.
//!
//! Runs in the foreground (`squid -N`) with its own config, disk cache, logs and pid file in a
//! tempdir; as root those dirs are owned by `proxy` (squid's effective user). DNS is pointed at
//! 127.0.0.1 so nothing leaves the machine. Stopped by its PID; can be started again on the same
//! port (failover tests). Its access log uses the `lazycas` format below, parsed by `log()`.

use super::process::{free_port, is_root, require_program, run, wait_until, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// Squid access log line: `%rm %ru %>Hs %<st %Ss "%{Range}>h"`, i.e. method, URL, status sent to
/// the client, bytes sent to the client, squid's result code (TCP_HIT, TCP_MISS, ...), and the
/// client's Range header.
const LOGFORMAT: &str = r#"logformat lazycas %rm %ru %>Hs %<st %Ss "%{Range}>h""#;

/// A running (or stopped) squid.
pub struct Squid {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
    extra: String,
    cache_mb: u32,
    _tempdir: TempDir,
}

/// One request squid logged.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub bytes: u64,
    /// `TCP_HIT`, `TCP_MISS`, `TCP_MEM_HIT`, ...
    pub result: String,
    pub range: Option<String>,
}

impl Squid {
    /// Starts squid with a 512 MiB disk cache and no extra settings.
    pub fn start() -> Squid {
        Squid::start_with("", 512)
    }

    /// Starts squid with `extra` appended to its config (e.g. the settings shipped in
    /// `systemd/squid-lazycas.conf`) and a disk cache of `cache_mb` MiB.
    pub fn start_with(extra: &str, cache_mb: u32) -> Squid {
        let tempdir = tempfile::Builder::new()
            .prefix("lazycas-squid-")
            .tempdir()
            .expect("tempdir");
        let dir = tempdir.path().to_path_buf();
        // squid drops to `proxy` when started as root; it must reach its dirs.
        set_mode(&dir, 0o755);
        for d in ["cache", "logs", "run"] {
            std::fs::create_dir_all(dir.join(d)).expect("create squid dirs");
            if is_root() {
                chown_proxy(&dir.join(d));
            }
        }
        let mut s = Squid {
            proc: None,
            port: 0,
            dir,
            extra: extra.into(),
            cache_mb,
            _tempdir: tempdir,
        };
        s.init_cache();
        s.launch();
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, for a `proxies = [...]` entry.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops squid (SIGTERM to its PID); the port is kept for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(15));
        }
    }

    /// Starts squid again on its old port, keeping its cache.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "squid is already running");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// squid's cache.log, for failure messages.
    pub fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/cache.log")).unwrap_or_default()
    }

    /// The requests squid has logged (waits until its log stops growing).
    pub fn log(&self) -> Vec<ProxyRequest> {
        let text = super::origin::settled_text(&self.dir.join("logs/access.log"));
        // Lines with method `-` are the harness's own readiness probes (connect, then close).
        text.lines()
            .filter_map(parse_line)
            .filter(|r| r.method != "-")
            .collect()
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("squid.conf")
    }

    fn write_config(&self, port: u16) {
        let d = self.dir.display();
        let user = if is_root() {
            "cache_effective_user proxy\ncache_effective_group proxy\n"
        } else {
            ""
        };
        let conf = format!(
            r#"http_port 127.0.0.1:{port}
{user}pid_filename {d}/run/squid.pid
{extra}
cache_dir ufs {d}/cache {mb} 16 256
coredump_dir {d}/cache
cache_mem 256 MB
maximum_object_size 2 GB
maximum_object_size_in_memory 64 MB
cache_log {d}/logs/cache.log
{LOGFORMAT}
access_log stdio:{d}/logs/access.log lazycas
cache_store_log none
netdb_filename none
dns_nameservers 127.0.0.1
visible_hostname lazycas-test-squid
http_access allow all
icp_port 0
htcp_port 0
pinger_enable off
shutdown_lifetime 1 seconds
refresh_pattern . 0 20% 4320
"#,
            mb = self.cache_mb,
            extra = self.extra,
        );
        std::fs::write(self.conf_path(), conf).expect("write squid.conf");
    }

    fn init_cache(&mut self) {
        self.write_config(free_port());
        let squid = require_program("squid", "squid");
        let mut cmd = Command::new(squid);
        cmd.arg("-N").arg("-z").arg("-f").arg(self.conf_path());
        let out = run(cmd, Duration::from_secs(60));
        assert!(
            out.success(),
            "squid -z failed: {out}\n{}",
            self.cache_log()
        );
    }

    fn launch(&mut self) {
        let squid = require_program("squid", "squid");
        let fixed_port = self.port != 0;
        for attempt in 0.. {
            let port = if fixed_port { self.port } else { free_port() };
            self.write_config(port);
            let log_before = self.cache_log().len();
            let mut cmd = Command::new(&squid);
            cmd.arg("-N").arg("-f").arg(self.conf_path());
            let mut proc = Proc::spawn("squid", cmd, &self.dir.join("stderr.log"));
            let accepting = "Accepting HTTP Socket connections at conn";
            let ready = |p: &mut Proc, s: &Squid| {
                let log = s.cache_log();
                let fresh = log.get(log_before..).unwrap_or("");
                p.is_running()
                    && fresh.contains(accepting)
                    && fresh.contains(&format!("127.0.0.1:{port}"))
            };
            if wait_until(Duration::from_secs(30), || {
                ready(&mut proc, self) || !proc.is_running()
            }) && proc.is_running()
                && wait_until(Duration::from_secs(5), || super::process::port_open(port))
            {
                self.port = port;
                self.proc = Some(proc);
                return;
            }
            let (status, _) = proc.terminate(Duration::from_secs(5));
            let errors = format!("{}\n{}", proc.log(), self.cache_log());
            if fixed_port || !errors.contains("Address already in use") || attempt >= 5 {
                panic!("squid did not start on 127.0.0.1:{port} (exit {status}):\n{errors}");
            }
        }
    }
}

fn parse_line(line: &str) -> Option<ProxyRequest> {
    let mut f = line.splitn(6, ' ');
    let method = f.next()?.to_string();
    let url = f.next()?.to_string();
    let status = f.next()?.parse().ok()?;
    let bytes = f.next()?.parse().ok()?;
    let result = f.next()?.to_string();
    let range = f
        .next()
        .map(|r| r.trim_matches('"').to_string())
        .filter(|r| !r.is_empty() && r != "-");
    Some(ProxyRequest {
        method,
        url,
        status,
        bytes,
        result,
        range,
    })
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown_proxy(p: &Path) {
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg("proxy:proxy").arg(p);
    run(cmd, Duration::from_secs(10)).assert_success();
}
