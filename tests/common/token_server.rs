//! `LoopbackTokenServer`: a small token endpoint on 127.0.0.1, written by us from distribution's
//! public token-authentication spec, for a `docker-registry` started with `auth: token`.
//!
//! It answers `GET /token?service=…&scope=…[&account=…]` with
//! `{"token", "access_token", "expires_in", "issued_at"}`; the token is a JWT signed RS256 with a
//! throwaway key whose self-signed certificate travels in the `x5c` header and is the registry's
//! `rootcertbundle` (both made with the `openssl` CLI). Scopes are granted as asked when the
//! request carries the configured Basic credentials; otherwise only `pull` is granted (or
//! nothing, with `anonymous_pull = false`). Every request is recorded for assertions. It runs on
//! a thread of the test process, stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tempfile::TempDir;

use super::process::{require_program, run};

/// The `service` the registry and the tokens name.
pub const TOKEN_SERVICE: &str = "lazycas-test-registry";
/// The `iss` of the tokens.
pub const TOKEN_ISSUER: &str = "lazycas-test-token-issuer";

/// How the token server behaves.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// Lifetime announced and put in `exp`.
    pub expires_in: u64,
    /// Credentials that get every action asked for.
    pub credentials: Option<(String, String)>,
    /// Whether requests without those credentials get `pull`.
    pub anonymous_pull: bool,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            expires_in: 300,
            credentials: Some(("pusher".into(), "secret".into())),
            anonymous_pull: true,
        }
    }
}

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The `service` parameter.
    pub service: Option<String>,
    /// Every `scope` parameter.
    pub scopes: Vec<String>,
    /// The `account` parameter.
    pub account: Option<String>,
    /// Whether the Basic credentials matched.
    pub authenticated: bool,
}

/// A running loopback token endpoint.
pub struct LoopbackTokenServer {
    signer: Arc<Signer>,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    cert: PathBuf,
    _dir: TempDir,
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
    policy: TokenPolicy,
    /// `exp` of tokens issued from now on, relative to issue; `NO_EXP_OVERRIDE` for
    /// `expires_in`.
    exp_override: AtomicI64,
}

impl LoopbackTokenServer {
    /// Makes a key and certificate and starts serving on a free port.
    pub fn start(policy: TokenPolicy) -> LoopbackTokenServer {
        let openssl = require_program("openssl", "openssl");
        let dir = tempfile::Builder::new()
            .prefix("lazycas-token-")
            .tempdir()
            .expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let mut req = Command::new(&openssl);
        req.args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=lazycas-test-token-issuer"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        run(req, Duration::from_secs(60)).assert_success();
        let der = dir.path().join("cert.der");
        let mut conv = Command::new(&openssl);
        conv.args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .arg("-out")
            .arg(&der);
        run(conv, Duration::from_secs(30)).assert_success();
        let der = std::fs::read(&der).expect("read cert.der");
        let signer = Arc::new(Signer {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
            policy,
            exp_override: AtomicI64::new(NO_EXP_OVERRIDE),
        });

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            let signer = signer.clone();
            std::thread::spawn(move || serve(listener, &stop, &requests, &signer))
        };
        LoopbackTokenServer {
            signer,
            port,
            stop,
            thread: Some(thread),
            requests,
            cert,
            _dir: dir,
        }
    }

    /// The realm URL the registry announces.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The PEM certificate the registry trusts (`rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Sets the `exp` claim of the tokens issued from now on to issue time + `secs` (may be
    /// negative; the response's `expires_in` is unchanged), or back to `expires_in` with `None`.
    /// docker-registry 2.8 accepts a token until 60 s after its `exp`, so -55 makes tokens die
    /// about 5 s after issue.
    pub fn set_exp_offset(&self, secs: Option<i64>) {
        let v = secs.unwrap_or(NO_EXP_OVERRIDE);
        self.signer.exp_override.store(v, Ordering::SeqCst);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for LoopbackTokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    stop: &AtomicBool,
    requests: &Mutex<Vec<TokenRequest>>,
    signer: &Signer,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = answer(stream, requests, signer) {
                    eprintln!("token server: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => eprintln!("token server: accept: {e}"),
        }
    }
}

fn answer(
    stream: TcpStream,
    requests: &Mutex<Vec<TokenRequest>>,
    signer: &Signer,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://127.0.0.1{target}"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if url.path() != "/token" {
        return respond(stream, 404, "{}");
    }
    let mut req = TokenRequest {
        service: None,
        scopes: Vec::new(),
        account: None,
        authenticated: false,
    };
    for (k, v) in url.query_pairs() {
        match &*k {
            "service" => req.service = Some(v.into_owned()),
            "scope" => req.scopes.push(v.into_owned()),
            "account" => req.account = Some(v.into_owned()),
            _ => {}
        }
    }
    req.authenticated = signer.policy.credentials.as_ref().is_some_and(|(u, p)| {
        let want = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        authorization.as_deref() == Some(&format!("Basic {want}"))
    });
    if authorization.is_some() && !req.authenticated {
        requests.lock().expect("requests lock").push(req);
        return respond(stream, 401, r#"{"details":"bad credentials"}"#);
    }
    let body = signer.token_response(&req).map_err(std::io::Error::other)?;
    requests.lock().expect("requests lock").push(req);
    respond(stream, 200, &body)
}

fn respond(mut stream: TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// `Signer::exp_override` when tokens use `expires_in`.
const NO_EXP_OVERRIDE: i64 = i64::MIN;

impl Signer {
    fn exp_claim(&self, now: u64) -> i64 {
        let now = now as i64;
        match self.exp_override.load(Ordering::SeqCst) {
            NO_EXP_OVERRIDE => now + self.policy.expires_in as i64,
            offset => now + offset,
        }
    }

    fn token_response(&self, req: &TokenRequest) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let access: Vec<serde_json::Value> = req
            .scopes
            .iter()
            .filter_map(|s| self.grant(s, req.authenticated))
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": req.account.clone().unwrap_or_default(),
            "aud": req.service.clone().unwrap_or_default(),
            "exp": self.exp_claim(now),
            "nbf": now.saturating_sub(5),
            "iat": now,
            "jti": format!("{now}-{}", super::content::unique_seed()),
            "access": access,
        });
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]});
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = self.sign(signing_input.as_bytes())?;
        let jwt = format!(
            "{signing_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
        );
        Ok(serde_json::json!({
            "token": jwt,
            "access_token": jwt,
            "expires_in": self.policy.expires_in,
            "issued_at": rfc3339(now),
        })
        .to_string())
    }

    /// `repository:name:a,b` → the access entry this policy grants.
    fn grant(&self, scope: &str, authenticated: bool) -> Option<serde_json::Value> {
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| authenticated || (*a == "pull" && self.policy.anonymous_pull))
            .collect();
        Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("openssl: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("openssl stdin")?
            .write_all(input)
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(out.stdout)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(super::rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }
}
